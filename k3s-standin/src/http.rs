//! The HTTPS API: TLS with optional client certificates (the admin cert), basic auth for the
//! join endpoints, the Kubernetes routes kubectl needs for nodes, and the stand-in's own
//! supervisor routes (`/v1-k3s-standin/...`) and k3s's `/db/info`. Node calls go to the
//! server's backend: etcd (shared by all servers) or, without `cluster-init`, local JSON.
//!
//! Owns routing and authentication. Must not log tokens, passwords or keys.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::log::{self, now_secs};
use crate::nodes::{Cluster, Registration};
use crate::pki::Pair;
use crate::store::Store;

/// Errors setting up the listener.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tls setup: {0}")]
    Tls(String),
}

/// Where the node state lives.
pub enum Backend {
    /// A bootstrap server without `cluster-init` (real k3s would use kine on SQLite): the
    /// node state in memory, saved as JSON (see `persist`).
    Local(Mutex<Cluster>),
    /// A server with embedded etcd: the node state in etcd, shared by every server.
    Etcd(Store),
}

/// The stand-in's answer when the datastore fails: 503 with etcd's error (the apiserver gives
/// a 5xx with the storage error, e.g. `etcdserver: request timed out`).
fn store_failed(e: &crate::store::Error) -> Resp {
    status(503, "ServiceUnavailable", &format!("datastore: {e}"))
}

/// Run a node operation on the backend; an `Err` is the response to send.
pub async fn on_nodes<F>(state: &State, mut op: F) -> Result<Value, Resp>
where
    F: FnMut(&mut Cluster) -> Result<Value, crate::nodes::Error>,
{
    let result = match &state.backend {
        Backend::Local(c) => {
            let Ok(mut c) = c.lock() else {
                return Err(status(500, "InternalError", "node store lock poisoned"));
            };
            let r = op(&mut c);
            persist(state, &mut c);
            r
        }
        Backend::Etcd(store) => match store.apply(op).await {
            Ok(r) => r,
            Err(e) => return Err(store_failed(&e)),
        },
    };
    result.map_err(|e| {
        let (code, reason) = e.code();
        status(code, reason, &e.to_string())
    })
}

/// The cluster facts a joining server must agree on (k3s's critical args, reference/k3s.md §4)
/// and the CA key it needs, sent by `/v1-k3s-standin/server-bootstrap`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bootstrap {
    /// The cluster CA certificate, PEM (the exact bytes hashed into tokens).
    pub ca_cert: String,
    /// The cluster CA key, PEM: joining servers sign their own certificates with it.
    pub ca_key: String,
    /// The password of the `node` user (agent token, else the server password).
    pub node_password: String,
    /// Critical value: cluster-cidr.
    pub cluster_cidr: Vec<String>,
    /// Critical value: service-cidr.
    pub service_cidr: Vec<String>,
    /// Critical value: cluster-dns.
    pub cluster_dns: Vec<String>,
    /// Critical value: cluster-domain.
    pub cluster_domain: String,
    /// Critical value: flannel-backend.
    pub flannel_backend: String,
    /// The etcd server CA (cert, key), PEM; absent when this server runs no embedded etcd.
    /// k3s carries its etcd CAs in its bootstrap data the same way.
    #[serde(default)]
    pub etcd_server_ca: Option<(String, String)>,
    /// The etcd peer CA (cert, key), PEM.
    #[serde(default)]
    pub etcd_peer_ca: Option<(String, String)>,
}

/// Shared server state.
pub struct State {
    /// The cluster CA (cert and key).
    pub ca: Pair,
    /// The password of the `server` user (never logged).
    pub server_password: String,
    /// What `/v1-k3s-standin/server-bootstrap` hands to joining servers.
    pub bootstrap: Bootstrap,
    /// Where node calls are answered.
    pub backend: Backend,
    /// Where the bootstrap server saves its node state after each change.
    pub persist: Option<std::path::PathBuf>,
}

/// Save the node state if it changed. A failure is logged: the API keeps working from memory.
pub fn persist(state: &State, cluster: &mut Cluster) {
    let (Some(path), Some(text)) = (&state.persist, cluster.take_snapshot()) else {
        return;
    };
    let tmp = path.with_extension("tmp");
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, text))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        log::error(format!("saving node state to {}: {e}", path.display()));
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Auth {
    /// Presented a client certificate signed by the cluster CA.
    Admin,
    /// Basic auth with a correct password for this user.
    Basic(String),
    None,
    /// Basic auth with a wrong password.
    Bad,
}

fn eq_ct(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn basic_auth(state: &State, req: &Request<Incoming>) -> Auth {
    let Some(h) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    else {
        return Auth::None;
    };
    let Some(b64) = h.strip_prefix("Basic ") else {
        return Auth::Bad;
    };
    let Some(dec) = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
    else {
        return Auth::Bad;
    };
    let Some((user, pw)) = dec.split_once(':') else {
        return Auth::Bad;
    };
    let ok = match user {
        "server" => eq_ct(pw, &state.server_password),
        // The node user takes the agent password; the server password also works for agents
        // (reference/k3s.md §4 cred/passwd).
        "node" => eq_ct(pw, &state.bootstrap.node_password) || eq_ct(pw, &state.server_password),
        _ => false,
    };
    if ok {
        Auth::Basic(user.to_owned())
    } else {
        Auth::Bad
    }
}

type Resp = Response<Full<Bytes>>;

fn json_resp(code: u16, v: &Value) -> Resp {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("static response parts are valid")
}

fn status(code: u16, reason: &str, message: &str) -> Resp {
    json_resp(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn wants_table(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(hyper::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .any(|p| p.contains("as=Table") && p.contains("g=meta.k8s.io"))
        })
}

/// The `/version` body: a k8s version whose gitVersion and platform say it is the stand-in.
pub fn version_json() -> Value {
    let mut parts = log::version().trim_start_matches('v').split(['.', '+']);
    let major = parts.next().unwrap_or("");
    let minor = parts.next().unwrap_or("");
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": log::version(),
        "gitCommit": "k3s-standin",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "none (k3s-standin is written in Rust; stand-in for k3s, not k3s)",
        "compiler": "rustc",
        "platform": format!("linux/{} (k3s-standin, not k3s)", crate::nodes::k8s_arch()),
    })
}

fn discovery_v1() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": [
            {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node",
             "verbs": ["delete", "get", "list", "patch", "update"], "shortNames": ["no"]},
            {"name": "nodes/status", "singularName": "", "namespaced": false, "kind": "Node",
             "verbs": ["get"]},
            // Always empty: the stand-in runs no workloads. Listed so `kubectl describe node`,
            // `kubectl get pods -A` and drains see an empty cluster instead of an error.
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
             "verbs": ["list"], "shortNames": ["po"]},
            {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
             "verbs": ["list"], "shortNames": ["ev"]},
        ],
    })
}

async fn handle(
    state: Arc<State>,
    tls_admin: bool,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let auth = if tls_admin {
        Auth::Admin
    } else {
        basic_auth(&state, &req)
    };
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().clone();
    let resp = match (method.clone(), path.as_str()) {
        (Method::GET, "/cacerts") => Response::builder()
            .header("Content-Type", "text/plain")
            .body(Full::new(Bytes::from(state.ca.cert_pem.clone())))
            .expect("static response parts are valid"),
        (Method::GET, "/version") => json_resp(200, &version_json()),
        (Method::GET, "/healthz" | "/readyz" | "/livez" | "/ping") => {
            Response::new(Full::new(Bytes::from("ok")))
        }
        _ if auth == Auth::Bad => status(401, "Unauthorized", "Unauthorized"),
        (Method::GET, "/v1-k3s-standin/server-bootstrap") => match auth {
            Auth::Basic(ref u) if u == "server" => json_resp(
                200,
                &serde_json::to_value(&state.bootstrap).unwrap_or_default(),
            ),
            _ => status(401, "Unauthorized", "Unauthorized"),
        },
        (Method::POST, "/v1-k3s-standin/register") => match auth {
            Auth::Basic(_) | Auth::Admin => register(&state, req).await,
            _ => status(401, "Unauthorized", "Unauthorized"),
        },
        _ if !matches!(auth, Auth::Admin) && auth != Auth::Basic("server".to_owned()) => {
            status(401, "Unauthorized", "Unauthorized")
        }
        (Method::GET, "/db/info") => db_info(&state).await,
        (Method::GET, "/api") => json_resp(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
        ),
        (Method::GET, "/api/v1") => json_resp(200, &discovery_v1()),
        (Method::GET, "/apis") => json_resp(
            200,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        ),
        _ if path == "/api/v1/nodes" || path.starts_with("/api/v1/nodes/") => {
            nodes_api(&state, req).await
        }
        (Method::GET, _) if empty_list_kind(&path).is_some() => {
            let kind = empty_list_kind(&path).expect("checked by the guard");
            json_resp(
                200,
                &json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}),
            )
        }
        _ => status(
            404,
            "NotFound",
            &format!("the server could not find the requested resource ({method} {path})"),
        ),
    };
    Ok(resp)
}

/// `/api/v1/pods`, `/api/v1/events` and their namespaced forms: always empty lists.
fn empty_list_kind(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/api/v1/")?;
    let resource = match rest.strip_prefix("namespaces/") {
        Some(ns) => ns.split_once('/').map(|(_, r)| r)?,
        None => rest,
    };
    match resource {
        "pods" => Some("PodList"),
        "events" => Some("EventList"),
        _ => None,
    }
}

async fn body_bytes(req: Request<Incoming>) -> Result<Bytes, Resp> {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| status(400, "BadRequest", &format!("reading request body: {e}")))
}

async fn register(state: &State, req: Request<Incoming>) -> Resp {
    let body = match body_bytes(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reg: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return status(400, "BadRequest", &format!("registration: {e}")),
    };
    match on_nodes(state, |c| c.register(&reg, now_secs())).await {
        Ok(node) => json_resp(200, &node),
        Err(r) => r,
    }
}

/// k3s's `/db/info`: the etcd member list, for a server about to join (k3s-io/k3s
/// pkg/etcd/etcd.go `infoHandler`). Only servers with embedded etcd have it.
async fn db_info(state: &State) -> Resp {
    let Backend::Etcd(store) = &state.backend else {
        return status(404, "NotFound", "this server runs no embedded etcd");
    };
    match store.client.member_list().await {
        Ok(members) => json_resp(200, &json!({ "members": members })),
        Err(e) => status(503, "ServiceUnavailable", &format!("etcd member list: {e}")),
    }
}

async fn nodes_api(state: &State, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let name = path.strip_prefix("/api/v1/nodes/").map(str::to_owned);
    let table = wants_table(&req);
    let method = req.method().clone();
    let ct = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match body_bytes(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = now_secs();
    let put: Option<Value> = if method == Method::PUT {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => return status(400, "BadRequest", &format!("node body: {e}")),
        }
    } else {
        None
    };
    let known = matches!(
        (&method, name.is_some()),
        (&Method::GET, _) | (&Method::PATCH | &Method::PUT | &Method::DELETE, true)
    );
    if !known {
        return status(
            405,
            "MethodNotAllowed",
            &format!("{method} is not supported on {path}"),
        );
    }
    let result = on_nodes(state, |cluster| match (&method, name.as_deref()) {
        (&Method::GET, None) if table => cluster.table(None, now),
        (&Method::GET, None) => Ok(cluster.list(now)),
        (&Method::GET, Some(n)) if table => cluster.table(Some(n), now),
        (&Method::GET, Some(n)) => cluster.get(n, now),
        (&Method::PATCH, Some(n)) => cluster.patch(n, &ct, &body, now),
        (&Method::PUT, Some(n)) => cluster.replace(n, put.clone().unwrap_or_default(), now),
        (_, Some(n)) => cluster.delete(n).map(|()| {
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                   "details": {"name": n, "kind": "nodes"}})
        }),
        (_, None) => Err(crate::nodes::Error::Invalid(format!("{method} {path}"))),
    })
    .await;
    match result {
        Ok(v) => json_resp(200, &v),
        Err(r) => r,
    }
}

/// The rustls server config: our serving cert, client certs optional but verified against the
/// cluster CA when presented, HTTP/1.1 only (kubectl falls back from h2 via ALPN).
pub fn tls_acceptor(ca: &Pair, serving: &Pair) -> Result<TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(c.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let chain = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Serve HTTPS on `listener` forever.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    loop {
        let (tcp, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                log::warn(format!("accept failed: {e}"));
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    log::warn(format!("http: TLS handshake error from {peer}: {e}"));
                    return;
                }
            };
            // A presented certificate has been verified against the cluster CA by rustls.
            let admin = tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), admin, req));
            let io = hyper_util::rt::TokioIo::new(tls);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                if !e.is_incomplete_message() {
                    log::warn(format!("http: serving {peer}: {e}"));
                }
            }
        });
    }
}
