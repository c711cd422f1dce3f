//! HTTP routing of the lab: the `/v1` Machines API behind auth, stats and fault middleware,
//! the `/lab/v1` introspection endpoints (no auth: they hold counts and paths, never
//! secrets or bodies), and the lab's own actions on machines (`/lab/v1/.../migrate`, behind
//! auth). Shared request helpers live here; handlers live in one file per resource.

mod apps;
mod graphql;
mod labinfo;
mod machine_extras;
mod machines;
mod migrate;
mod render;
mod secrets;
mod volumes;

pub use machines::find as find_machine;

use crate::error::ApiError;
use crate::faults::Ambiguity;
use crate::{clock, lock, Lab};
pub use axum::extract::State;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Instant;

/// Shared handler state.
pub type LabState = State<Arc<Lab>>;

/// Build the router for a lab.
pub fn router(lab: Arc<Lab>) -> Router {
    let m = "/v1/apps/{app}/machines/{id}";
    let v1 = Router::new()
        .route("/v1/apps", get(apps::list).post(apps::create))
        .route("/v1/apps/{app}", get(apps::show).delete(apps::delete))
        .route(
            "/v1/apps/{app}/volumes",
            get(volumes::list).post(volumes::create),
        )
        .route(
            "/v1/apps/{app}/volumes/{vol}",
            get(volumes::show)
                .put(volumes::update)
                .delete(volumes::delete),
        )
        .route("/v1/apps/{app}/volumes/{vol}/extend", put(volumes::extend))
        .route(
            "/v1/apps/{app}/machines",
            get(machines::list).post(machines::create),
        )
        .route(
            m,
            get(machines::show)
                .post(machines::update)
                .delete(machines::destroy),
        )
        .route(&format!("{m}/start"), post(machines::start))
        .route(&format!("{m}/stop"), post(machines::stop))
        .route(&format!("{m}/restart"), post(machines::restart))
        .route(&format!("{m}/suspend"), post(machines::suspend))
        .route(&format!("{m}/signal"), post(machines::signal))
        .route(&format!("{m}/cordon"), post(machines::cordon))
        .route(&format!("{m}/uncordon"), post(machines::uncordon))
        .route(&format!("{m}/exec"), post(machines::exec))
        .route(&format!("{m}/wait"), get(machine_extras::wait))
        .route(&format!("{m}/events"), get(machine_extras::events))
        .route(
            &format!("{m}/lease"),
            get(machine_extras::lease_show)
                .post(machine_extras::lease_acquire)
                .delete(machine_extras::lease_release),
        )
        .route(
            &format!("{m}/metadata"),
            get(machine_extras::metadata_all)
                .put(machine_extras::metadata_put)
                .patch(machine_extras::metadata_patch),
        )
        .route(
            &format!("{m}/metadata/{{key}}"),
            get(machine_extras::metadata_get)
                .post(machine_extras::metadata_upsert)
                .delete(machine_extras::metadata_delete),
        )
        .route(
            "/v1/apps/{app}/secrets",
            get(secrets::list).post(secrets::update),
        )
        .route(
            "/v1/apps/{app}/secrets/{name}",
            get(secrets::show)
                .post(secrets::set)
                .delete(secrets::delete),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(lab.clone(), faults))
        .layer(middleware::from_fn_with_state(lab.clone(), auth))
        .layer(middleware::from_fn_with_state(lab.clone(), count));
    // The platform's own actions on machines: behind the token, not counted as a client's.
    let lab_actions = Router::new()
        .route(
            "/lab/v1/apps/{app}/machines/{id}/migrate",
            post(migrate::migrate),
        )
        .layer(middleware::from_fn_with_state(lab.clone(), auth));
    Router::new()
        .route("/lab/v1/stats", get(labinfo::stats))
        .route("/lab/v1/events", get(labinfo::events))
        .route("/lab/v1/zones", get(labinfo::zones))
        .route("/lab/v1/info", get(labinfo::info))
        // Fly's GraphQL API (its own auth: errors in GraphQL's shape, reference §5).
        .route("/graphql", post(graphql::serve))
        .merge(lab_actions)
        .merge(v1)
        .with_state(lab)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

/// The route template of a request (`POST /v1/apps/{app}/machines`), or the raw path when no
/// route matched.
fn route_of(req: &Request) -> String {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "<unmatched>".to_string());
    format!("{} {}", req.method(), path)
}

/// The short operation name used by `--faults latency=` and the rate limiter:
/// `apps.list`, `apps.create`, `apps.get`, `apps.delete`, `machines.list`, `machines.create`,
/// `machines.get`, `machines.update`, `machines.delete`, `volumes.*` alike, and for sub-resources
/// `machines.start`, `machines.wait`, `machines.lease`, `machines.metadata` with `.get`,
/// `.put`, `.patch`, `.delete` appended for other methods than POST (GET for `wait`/`events`).
pub fn op_name(method: &Method, template: &str) -> String {
    let rest = template.strip_prefix("/v1/apps").unwrap_or(template);
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let verb = method.as_str().to_ascii_lowercase();
    match (parts.as_slice(), verb.as_str()) {
        ([], "get") => "apps.list".into(),
        ([], "post") => "apps.create".into(),
        ([_], "get") => "apps.get".into(),
        ([_], _) => format!("apps.{verb}"),
        ([_, res], "get") => format!("{res}.list"),
        ([_, res], "post") => format!("{res}.create"),
        ([_, res, _], "get") => format!("{res}.get"),
        ([_, res, _], "post" | "put") => format!("{res}.update"),
        ([_, res, _], _) => format!("{res}.{verb}"),
        ([_, res, _, sub, ..], "post") => format!("{res}.{sub}"),
        ([_, res, _, sub @ ("wait" | "events"), ..], "get") => format!("{res}.{sub}"),
        ([_, res, _, sub, ..], _) => format!("{res}.{sub}.{verb}"),
        _ => format!("other.{verb}"),
    }
}

async fn count(State(lab): LabState, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let route = route_of(&req);
    let res = next.run(req).await;
    lock(&lab.stats).record(
        &method,
        &path,
        &route,
        res.status().as_u16(),
        clock::now_ms(),
    );
    res
}

/// Parse an `Authorization` header value: `Bearer X`, `FlyV1 X` or `Bearer FlyV1 X` (reference §1).
pub fn presented_token(header: &str) -> Option<&str> {
    let h = header.trim();
    let rest = h.strip_prefix("Bearer ").map(str::trim_start).unwrap_or(h);
    let rest = rest
        .strip_prefix("FlyV1 ")
        .map(str::trim_start)
        .unwrap_or(rest);
    (rest.len() != h.len() || h.starts_with("FlyV1 ")).then_some(rest.trim())
}

async fn auth(State(lab): LabState, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(presented_token)
        .is_some_and(|t| t == lab.opts.token);
    if !ok {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Authenticate: token validation error",
        )
        .into_response();
    }
    next.run(req).await
}

/// The rate-limit key of a request: the machine id when the route has one, else the app.
fn rate_key(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    // /v1/apps/{app}/machines/{id}/...
    match parts.as_slice() {
        ["", "v1", "apps", app, "machines", id, ..] => format!("{app}/{id}"),
        ["", "v1", "apps", app, ..] => (*app).to_string(),
        _ => String::new(),
    }
}

async fn faults(State(lab): LabState, req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let op = op_name(req.method(), &template);
    let f = &lab.opts.faults;
    if let Some(d) = f.latency_for(&op) {
        tokio::time::sleep(d).await;
    }
    if f.rate_limits {
        // Fly: GET machine 5 req/s burst 10; every other action 1 req/s burst 3 (reference §5).
        let (rate, burst) = if op == "machines.get" {
            (5.0, 10.0)
        } else {
            (1.0, 3.0)
        };
        let key = rate_key(req.uri().path());
        if !lock(&lab.faults).take(&op, &key, rate, burst, Instant::now()) {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("rate limit exceeded for {op}"),
            )
            .into_response();
        }
    }
    if let Some(res) = apps::settling(&lab, req.uri().path()) {
        return res;
    }
    if lock(&lab.faults).chance(f.error_rate) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("lab fault: injected server error on {op}"),
        )
        .into_response();
    }
    let ambiguous_op = op == "machines.create" || op == "volumes.create";
    let res = next.run(req).await;
    if ambiguous_op && res.status().is_success() {
        let mut inj = lock(&lab.faults);
        if inj.chance(f.ambiguous_create) {
            // The object exists; the client is told the call failed (reference §5).
            return match inj.ambiguity() {
                Ambiguity::Timeout => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "deadline_exceeded: request timed out",
                ),
                Ambiguity::ServerError => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "lab fault: upstream failed after the create",
                ),
            }
            .into_response();
        }
    }
    res
}

/// Parse a JSON body; an empty body parses as `{}`.
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

fn unhex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (unhex(b[i + 1]), unhex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query pairs in order, percent-decoded (repeated keys kept).
#[derive(Debug, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// Parse a raw query string.
    pub fn parse(raw: Option<&str>) -> Query {
        Query(
            raw.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode(k), decode(v)),
                    None => (decode(p), String::new()),
                })
                .collect(),
        )
    }
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Every value of `key`, comma lists split.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
            })
            .collect()
    }
    /// A boolean flag (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "yes"))
    }
}

/// The lease nonce a request carries.
pub fn nonce_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("fly-machine-lease-nonce")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_fly_auth_forms() {
        assert_eq!(presented_token("Bearer abc"), Some("abc"));
        assert_eq!(presented_token("FlyV1 abc"), Some("abc"));
        assert_eq!(presented_token("Bearer FlyV1 abc"), Some("abc"));
        assert_eq!(presented_token("abc"), None);
        assert_eq!(presented_token("Basic abc"), None);
    }

    #[test]
    fn names_operations() {
        assert_eq!(
            op_name(&Method::POST, "/v1/apps/{app}/machines"),
            "machines.create"
        );
        assert_eq!(
            op_name(&Method::GET, "/v1/apps/{app}/machines/{id}"),
            "machines.get"
        );
        assert_eq!(
            op_name(&Method::GET, "/v1/apps/{app}/machines"),
            "machines.list"
        );
        assert_eq!(
            op_name(&Method::POST, "/v1/apps/{app}/machines/{id}"),
            "machines.update"
        );
        assert_eq!(
            op_name(&Method::POST, "/v1/apps/{app}/volumes"),
            "volumes.create"
        );
        assert_eq!(
            op_name(&Method::POST, "/v1/apps/{app}/machines/{id}/start"),
            "machines.start"
        );
        assert_eq!(op_name(&Method::GET, "/v1/apps"), "apps.list");
        assert_eq!(op_name(&Method::POST, "/v1/apps"), "apps.create");
        assert_eq!(op_name(&Method::GET, "/v1/apps/{app}"), "apps.get");
        assert_eq!(op_name(&Method::DELETE, "/v1/apps/{app}"), "apps.delete");
    }

    #[test]
    fn parses_queries() {
        let q = Query::parse(Some(
            "state=started&state=stopped,suspended&metadata.role=server%20x&force=true",
        ));
        assert_eq!(q.all("state"), vec!["started", "stopped", "suspended"]);
        assert_eq!(q.get("metadata.role"), Some("server x"));
        assert!(q.flag("force"));
    }
}
