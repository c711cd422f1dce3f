//! `/v1/apps/{app}/machines` handlers: create, get, list, update, start, stop, restart,
//! suspend, signal, cordon, uncordon, exec and destroy (reference §2.3, §3). Placement of a
//! machine (region, zone, volume attachment) lives here too.

use super::{body, nonce_header, render, LabState, Query, State};
use crate::error::ApiError;
use crate::lifecycle::{drive, enter};
use crate::model::{mounted_volume, Lease, Machine, Record};
use crate::{clock, ids, Lab};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::HeaderMap;
use axum::Json;
use fks_bootstrap::fly::{self, CreateMachineRequest, MachineConfig, UpdateMachineRequest};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// Fly's `{"ok": true}` answer.
fn ok() -> Value {
    render::json(&fly::OkResponse { ok: true })
}

/// States from which a machine may be destroyed without `force`/`kill` (reference §2.3).
const DESTROYABLE: &[&str] = &["created", "stopped", "suspended", "failed"];

fn validate_config(config: &MachineConfig) -> Result<(), ApiError> {
    if config.image.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid config.image: an image is required",
        ));
    }
    if config.mounts.len() > 1 {
        return Err(ApiError::bad_request(
            "a machine can mount at most one volume",
        ));
    }
    if let Some(m) = config.mounts.first() {
        if m.volume.is_empty() {
            return Err(ApiError::bad_request("config.mounts[0].volume is required"));
        }
        if !m.path.starts_with('/') {
            return Err(ApiError::bad_request(
                "config.mounts[0].path must be an absolute path",
            ));
        }
    }
    Ok(())
}

/// In guests mode `config.image` is checked here, at create and update: manifest, config,
/// platform and layer types (`Puller::resolve`, no layer download), so an image that cannot
/// be pulled (bad reference, unknown repository or tag, another registry than the lab's,
/// refused credentials, ...) refuses the request with the pull error's Fly-like body
/// (`rootfs::Error::api_error`) before anything is recorded. The pull of the layers then
/// starts in the background, pinned to the digest just resolved, while the answer goes out
/// at once: Fly keeps a machine `created` while it fetches the image
/// (reference/fly-runtime.md §2), and a client waits no longer than for any create. The start
/// runs that digest (from the cache, or pulling it if the background pull has not finished).
/// Returns the manifest digest to pin; `None` in API-only mode and for the built-in
/// `lab/base`.
async fn pull_image(lab: &Lab, config: &MachineConfig) -> Result<Option<String>, ApiError> {
    let Some(runner) = &lab.runner else {
        return Ok(None);
    };
    if config.image == crate::images::BASE_IMAGE {
        return Ok(None);
    }
    let Some(puller) = &runner.puller else {
        return Err(ApiError::unprocessable(format!(
            "invalid config.image: image {:?} cannot be pulled: this lab runs without a registry (install Debian's docker-registry); only the built-in {} runs without one",
            config.image,
            crate::images::BASE_IMAGE
        )));
    };
    let resolved = puller
        .resolve(&config.image)
        .await
        .map_err(|e| e.api_error())?;
    let pinned = crate::runner::pinned(&config.image, &resolved.manifest_digest);
    let background = puller.clone();
    tokio::spawn(async move {
        if let Err(e) = background.pull(&pinned).await {
            // The start pulls again and reports what fails then.
            tracing::warn!(image = %pinned, error = %crate::runner::chain(&e), "background pull failed");
        }
    });
    Ok(Some(resolved.manifest_digest))
}

fn valid_machine_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Choose region and zone for a machine without a volume: the first region of the request's
/// list (`"iad,dfw"`) with an open zone; in it the zone with the fewest live machines.
fn place(
    lab: &Lab,
    state: &crate::model::State,
    wanted: Option<&str>,
) -> Result<(String, String), ApiError> {
    let regions: Vec<String> = match wanted.filter(|r| !r.is_empty()) {
        Some(list) => list
            .split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect(),
        None => vec![lab.zones[0].0.clone()],
    };
    let mut known = false;
    for region in &regions {
        let Some(zones) = lab.region_zones(region) else {
            continue;
        };
        known = true;
        let load = |z: &str| {
            state
                .apps
                .values()
                .flat_map(|a| a.machines.values())
                .filter(|m| m.zone == z && m.state != "destroyed")
                .count()
        };
        if let Some(z) = zones
            .iter()
            .filter(|z| !lab.opts.faults.zone_full(region, z))
            .min_by_key(|z| load(z))
        {
            return Ok((region.clone(), z.clone()));
        }
    }
    if !known {
        return Err(ApiError::unprocessable(format!(
            "region {:?} is not available in this lab",
            regions.join(",")
        )));
    }
    Err(ApiError::capacity(format!(
        "insufficient resources to create a machine in {}",
        regions.join(",")
    )))
}

fn new_lease(rng: &mut impl rand::Rng, ttl: u64, version: &str) -> Lease {
    Lease {
        nonce: ids::nonce(rng),
        expires_at: clock::now_ms() / 1000 + ttl.max(1),
        owner: "lab@tokens.fly.io".into(),
        description: String::new(),
        version: version.into(),
    }
}

pub async fn create(
    State(lab): LabState,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: CreateMachineRequest = body(&bytes)?;
    validate_config(&req.config)?;
    if let Some(n) = &req.name {
        if !n.is_empty() && !valid_machine_name(n) {
            return Err(ApiError::bad_request(format!("invalid machine name {n:?}")));
        }
    }
    if lab.core().state.app(&app).is_none() {
        return Err(ApiError::app_not_found());
    }
    let image_digest = pull_image(&lab, &req.config).await?;
    super::secrets::catch_up(&lab, &app, req.min_secrets_version);
    let config = req.config;
    if let Some(n) = &req.name {
        if !n.is_empty() && !valid_machine_name(n) {
            return Err(ApiError::bad_request(format!("invalid machine name {n:?}")));
        }
    }
    let mut guard = lab.core();
    let core = &mut *guard;
    let s = core.state.app(&app).ok_or_else(ApiError::app_not_found)?;
    let a = s.app.as_ref().expect("app state holds its app");
    let network = a.network.clone().unwrap_or_else(|| a.org_slug.clone());
    let name = match req.name.filter(|n| !n.is_empty()) {
        Some(n) => {
            if s.machines
                .values()
                .any(|m| m.name == n && m.state != "destroyed")
            {
                return Err(ApiError::unprocessable(format!(
                    "a machine named {n} already exists in app {app}"
                ))
                .with_code("name_taken"));
            }
            n
        }
        None => loop {
            let n = ids::machine_name(&mut core.rng);
            if !s.machines.values().any(|m| m.name == n) {
                break n;
            }
        },
    };
    let mut volume = None;
    let (region, zone) = match mounted_volume(&config) {
        Some(vol) => {
            let v = s.volumes.get(&vol).ok_or_else(|| {
                ApiError::bad_request(format!("volume {vol} not found in app {app}"))
            })?;
            if let Some(m) = &v.attached_machine_id {
                return Err(ApiError::precondition(format!(
                    "failed_precondition: volume {vol} is already attached to machine {m}"
                )));
            }
            // A migrated machine's old volume (reference fly-runtime.md §4) is soft-deleted.
            if v.state == "pending_destroy" {
                return Err(ApiError::precondition(format!(
                    "failed_precondition: volume {vol} is pending_destroy and cannot be mounted"
                )));
            }
            if let Some(r) = req.region.as_deref().filter(|r| !r.is_empty()) {
                if !r.split(',').any(|r| r.trim() == v.region) {
                    return Err(ApiError::bad_request(format!(
                        "volume {vol} is in region {}, not {r}: create the machine in the volume's region",
                        v.region
                    )));
                }
            }
            if lab.opts.faults.zone_full(&v.region, &v.zone) {
                return Err(ApiError::capacity(format!(
                    "insufficient resources on the host of volume {vol} (zone {})",
                    v.zone
                )));
            }
            volume = Some(v.clone());
            (v.region.clone(), v.zone.clone())
        }
        None => place(&lab, &core.state, req.region.as_deref())?,
    };
    let now = clock::now_ms();
    let id = ids::machine_id(&mut core.rng);
    let instance_id = ids::ulid(&mut core.rng, now);
    let mut m = Machine {
        id: id.clone(),
        app: app.clone(),
        name,
        state: String::new(),
        region,
        private_ip: ids::private_ip(&network, &zone, &mut core.rng).to_string(),
        zone,
        instance_id: instance_id.clone(),
        config,
        created_at_ms: now,
        updated_at_ms: now,
        events: vec![],
        lease: None,
        cordoned: false,
        target: (!req.skip_launch.unwrap_or(false)).then(|| "started".to_string()),
        skip_secrets: req.skip_secrets.unwrap_or(false),
        host: 0,
        migration: None,
        image_digest,
    };
    enter(&mut m, "created", "user", &mut core.rng);
    if let Some(ttl) = req.lease_ttl.filter(|t| *t > 0) {
        m.lease = Some(new_lease(&mut core.rng, ttl, &instance_id));
    }
    let mut out = render::machine(&m, false);
    if let Some(l) = &m.lease {
        out.nonce = Some(l.nonce.clone());
    }
    if let Some(mut v) = volume {
        v.attached_machine_id = Some(id.clone());
        core.commit(Record::Volume(v))?;
    }
    core.commit(Record::Machine(Box::new(m)))?;
    drop(guard);
    lab.notify();
    drive(&lab, &app, &id);
    Ok(Json(render::json(&out)))
}

pub async fn show(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let core = lab.core();
    let m = find(&core.state, &app, &id)?;
    Ok(Json(render::json(&render::machine(m, false))))
}

/// Find a machine of an app (destroyed ones included).
pub fn find<'a>(
    state: &'a crate::model::State,
    app: &str,
    id: &str,
) -> Result<&'a Machine, ApiError> {
    state
        .app(app)
        .ok_or_else(ApiError::app_not_found)?
        .machines
        .get(id)
        .ok_or_else(ApiError::machine_not_found)
}

pub async fn list(
    State(lab): LabState,
    Path(app): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    let include_deleted = q.flag("include_deleted");
    let summary = q.flag("summary");
    let regions = q.all("region");
    let states = q.all("state");
    let meta: Vec<(&str, &str)> =
        q.0.iter()
            .filter_map(|(k, v)| k.strip_prefix("metadata.").map(|k| (k, v.as_str())))
            .collect();
    let core = lab.core();
    let s = core.state.app(&app).ok_or_else(ApiError::app_not_found)?;
    let out: Vec<Value> = s
        .machines
        .values()
        .filter(|m| include_deleted || m.state != "destroyed")
        .filter(|m| regions.is_empty() || regions.contains(&m.region))
        .filter(|m| states.is_empty() || states.contains(&m.state))
        .filter(|m| {
            meta.is_empty() || {
                let md = m.metadata();
                meta.iter().all(|(k, v)| md.get(*k).is_some_and(|x| x == v))
            }
        })
        .map(|m| render::json(&render::machine(m, summary)))
        .collect();
    Ok(Json(Value::Array(out)))
}

/// Refuse a mutation on a leased machine unless the request carries the lease's nonce
/// (reference §2.3.2: 409).
pub fn check_lease(m: &Machine, headers: &HeaderMap) -> Result<(), ApiError> {
    let now_s = clock::now_ms() / 1000;
    match &m.lease {
        Some(l) if l.expires_at > now_s && nonce_header(headers).as_deref() != Some(l.nonce.as_str()) => {
            Err(ApiError::conflict(format!(
                "machine {} is leased by {} until {}: send its nonce in the fly-machine-lease-nonce header",
                m.id, l.owner, l.expires_at
            )))
        }
        _ => Ok(()),
    }
}

/// Apply `change` to a copy of the machine, commit it, wake waiters and drive transitions.
fn mutate(
    lab: &Arc<Lab>,
    app: &str,
    id: &str,
    headers: &HeaderMap,
    change: impl FnOnce(&mut Machine, &mut rand_chacha::ChaCha8Rng) -> Result<Value, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let mut guard = lab.core();
    let core = &mut *guard;
    let mut m = find(&core.state, app, id)?.clone();
    check_lease(&m, headers)?;
    let out = change(&mut m, &mut core.rng)?;
    let drives = m.target.is_some();
    core.commit(Record::Machine(Box::new(m)))?;
    drop(guard);
    lab.notify();
    if drives {
        drive(lab, app, id);
    }
    Ok(Json(out))
}

fn refuse_destroyed(m: &Machine) -> Result<(), ApiError> {
    if matches!(m.state.as_str(), "destroyed" | "destroying") {
        return Err(ApiError::precondition(format!(
            "failed_precondition: machine {} is {}",
            m.id, m.state
        )));
    }
    Ok(())
}

pub async fn update(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: UpdateMachineRequest = body(&bytes)?;
    validate_config(&req.config)?;
    let image_digest = pull_image(&lab, &req.config).await?;
    super::secrets::catch_up(&lab, &app, req.min_secrets_version);
    if let Some(r) = &lab.runner {
        r.reset_restarts(&id);
    }
    let config = req.config;
    let skip_launch = req.skip_launch.unwrap_or(false);
    let out = mutate(&lab, &app, &id, &headers, |m, rng| {
        refuse_destroyed(m)?;
        if req
            .name
            .as_deref()
            .is_some_and(|n| !n.is_empty() && n != m.name)
        {
            return Err(ApiError::bad_request("a machine's name cannot be changed"));
        }
        if req
            .region
            .as_deref()
            .is_some_and(|r| !r.is_empty() && r != m.region)
        {
            return Err(ApiError::bad_request(
                "a machine's region cannot be changed",
            ));
        }
        if req
            .current_version
            .as_deref()
            .is_some_and(|v| !v.is_empty() && v != m.instance_id)
        {
            return Err(ApiError::precondition(format!(
                "failed_precondition: current_version does not match machine version {}",
                m.instance_id
            )));
        }
        if mounted_volume(&config) != m.mounted_volume() {
            return Err(ApiError::bad_request(
                "an update cannot change the machine's volume: destroy the machine and create a new one",
            ));
        }
        let now = clock::now_ms();
        m.config = config;
        m.image_digest = image_digest;
        m.skip_secrets = req.skip_secrets.unwrap_or(false);
        m.instance_id = ids::ulid(rng, now);
        let was_running = matches!(m.state.as_str(), "started" | "starting" | "restarting");
        enter(m, "updating", "user", rng);
        if req.skip_launch.unwrap_or(false) {
            let st = if was_running {
                "stopped"
            } else if m.events.get(1).is_some_and(|e| e.status == "created") {
                "created"
            } else {
                "stopped"
            };
            enter(m, st, "flyd", rng);
            m.target = None;
        } else {
            enter(m, "starting", "flyd", rng);
            m.target = Some("started".into());
        }
        let mut out = render::machine(m, false);
        if let Some(ttl) = req.lease_ttl.filter(|t| *t > 0) {
            let l = new_lease(rng, ttl, &m.instance_id);
            out.nonce = Some(l.nonce.clone());
            m.lease = Some(l);
        }
        Ok(render::json(&out))
    })?;
    // skip_launch leaves a running machine stopped: its guest goes too.
    if let (Some(r), true) = (&lab.runner, skip_launch) {
        r.detached(&lab, &id, "stopped");
    }
    Ok(out)
}

pub async fn start(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    if let Some(r) = &lab.runner {
        r.reset_restarts(&id);
    }
    mutate(&lab, &app, &id, &headers, |m, rng| {
        refuse_destroyed(m)?;
        let previous = m.state.clone();
        if !matches!(
            previous.as_str(),
            "created" | "stopped" | "suspended" | "failed"
        ) {
            return Err(ApiError::precondition(format!(
                "failed_precondition: machine {} is {previous}, refusing to start",
                m.id
            )));
        }
        enter(m, "starting", "user", rng);
        m.target = Some("started".into());
        Ok(render::json(&fly::StartResponse {
            previous_state: Some(fly::MachineState::from(previous)),
            migrated: Some(false),
            new_host: Some(String::new()),
            message: None,
        }))
    })
}

/// Is this a Go duration string (`30s`, `1m30s`, `500ms`) or a number?
fn valid_duration(v: &Value) -> bool {
    match v {
        Value::Number(_) | Value::Null => true,
        Value::String(s) => {
            let mut rest = s.as_str();
            if rest.is_empty() {
                return false;
            }
            while !rest.is_empty() {
                let digits = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(rest.len());
                if digits == 0 {
                    return false;
                }
                rest = &rest[digits..];
                let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
                    .iter()
                    .find(|u| rest.starts_with(*u));
                match unit {
                    Some(u) => rest = &rest[u.len()..],
                    None => return false,
                }
            }
            true
        }
        _ => false,
    }
}

/// Signal names the API accepts (SPEC26 enum) or a signal number.
fn valid_signal(s: &str) -> bool {
    const NAMES: &[&str] = &[
        "SIGABRT", "SIGALRM", "SIGFPE", "SIGHUP", "SIGILL", "SIGINT", "SIGKILL", "SIGPIPE",
        "SIGQUIT", "SIGSEGV", "SIGTERM", "SIGTRAP", "SIGUSR1", "SIGUSR2",
    ];
    NAMES.contains(&s) || s.parse::<u8>().is_ok_and(|n| (1..=64).contains(&n))
}

pub async fn stop(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    // `timeout` is a Go duration string or nanoseconds; `fly::StopRequest` refuses anything else.
    let req: fly::StopRequest = body(&bytes)?;
    if let Some(s) = req.signal.as_deref().filter(|s| !s.is_empty()) {
        if !valid_signal(s) {
            return Err(ApiError::bad_request(format!("invalid signal {s:?}")));
        }
    }
    if let Some(r) = &lab.runner {
        let signal = req
            .signal
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(crate::runner::parse_signal);
        r.request_stop(&id, signal, req.timeout.as_ref().map(|t| t.0));
    }
    mutate(&lab, &app, &id, &headers, |m, rng| {
        refuse_destroyed(m)?;
        if matches!(m.state.as_str(), "stopped" | "stopping") {
            return Ok(ok());
        }
        enter(m, "stopping", "user", rng);
        m.target = Some("stopped".into());
        Ok(ok())
    })
}

pub async fn restart(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    if let Some(s) = q.get("signal").filter(|s| !s.is_empty()) {
        if !valid_signal(s) {
            return Err(ApiError::bad_request(format!("invalid signal {s:?}")));
        }
    }
    if let Some(t) = q.get("timeout").filter(|t| !t.is_empty()) {
        if !valid_duration(&Value::String(t.to_string())) && t.parse::<u64>().is_err() {
            return Err(ApiError::bad_request(format!("invalid timeout {t:?}")));
        }
    }
    mutate(&lab, &app, &id, &headers, |m, rng| {
        refuse_destroyed(m)?;
        if m.state != "started" {
            return Err(ApiError::precondition(format!(
                "failed_precondition: machine {} is {}, only a started machine can restart",
                m.id, m.state
            )));
        }
        enter(m, "restarting", "user", rng);
        m.target = Some("started".into());
        Ok(ok())
    })
}

pub async fn suspend(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    mutate(&lab, &app, &id, &headers, |m, rng| {
        refuse_destroyed(m)?;
        if m.state != "started" {
            return Err(ApiError::precondition(format!(
                "failed_precondition: machine {} is {}, only a started machine can be suspended",
                m.id, m.state
            )));
        }
        enter(m, "suspending", "user", rng);
        m.target = Some("suspended".into());
        Ok(ok())
    })
}

#[derive(Deserialize)]
struct SignalBody {
    #[serde(default)]
    signal: Option<Value>,
}

/// A signal is validated and recorded as an event; in guests mode it also goes to the guest's
/// main process (in API-only mode no process runs).
pub async fn signal(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: SignalBody = body(&bytes)?;
    let sig = match req.signal {
        Some(Value::String(s)) if valid_signal(&s) => s,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=64).contains(&n)) => {
            n.to_string()
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid or missing signal: {other:?}"
            )))
        }
    };
    let sig_name = sig.clone();
    let out = mutate(&lab, &app, &id, &headers, |m, rng| {
        if m.state != "started" {
            return Err(ApiError::precondition(format!(
                "failed_precondition: machine {} is {}, signals go to started machines",
                m.id, m.state
            )));
        }
        let now = clock::now_ms();
        m.push_event(crate::model::Event {
            id: ids::ulid(rng, now),
            kind: "signal".into(),
            status: sig,
            source: "user".into(),
            timestamp: now,
            exit_code: None,
        });
        Ok(ok())
    })?;
    if let Some(r) = &lab.runner {
        if let Some(signal) = crate::runner::parse_signal(&sig_name) {
            r.signal(&id, signal).map_err(|e| {
                ApiError::internal(format!(
                    "signalling machine {id}: {}",
                    crate::runner::chain(&e)
                ))
            })?;
        }
    }
    Ok(out)
}

pub async fn cordon(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    mutate(&lab, &app, &id, &headers, |m, _| {
        refuse_destroyed(m)?;
        m.cordoned = true;
        Ok(ok())
    })
}

pub async fn uncordon(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    mutate(&lab, &app, &id, &headers, |m, _| {
        refuse_destroyed(m)?;
        m.cordoned = false;
        Ok(ok())
    })
}

/// Run a command in the machine's guest (reference §2.3 exec): Fly's
/// `{stdout, stderr, exit_code, exit_signal}`. 412 when no guest runs (API-only mode, or the
/// machine is not started).
pub async fn exec(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let state = {
        let core = lab.core();
        find(&core.state, &app, &id)?.state.clone()
    };
    let Some(runner) = lab.runner.clone() else {
        return Err(ApiError::precondition(format!(
            "failed_precondition: machine {id} has no guest running: the lab runs in API-only mode (states change, nothing runs), so exec is unavailable"
        )));
    };
    let req: fly::ExecRequest = body(&bytes)?;
    let argv = if !req.command.is_empty() {
        req.command.clone()
    } else {
        // `cmd` is the older single-string form: split on whitespace, never given to a shell.
        req.cmd
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    if argv.is_empty() {
        return Err(ApiError::bad_request(
            "exec needs a command: give `command` (argv) or `cmd`",
        ));
    }
    let timeout = std::time::Duration::from_secs(req.timeout.filter(|t| *t > 0).unwrap_or(30));
    let stdin = req.stdin.clone().map(String::into_bytes);
    match runner.exec(&id, argv, stdin, timeout).await {
        Ok(Some(out)) => {
            let signal = (out.exit_code > 128).then(|| i64::from(out.exit_code - 128));
            Ok(Json(render::json(&fly::ExecResponse {
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                exit_code: i64::from(out.exit_code),
                exit_signal: signal,
            })))
        }
        Ok(None) => Err(ApiError::precondition(format!(
            "failed_precondition: machine {id} has no running guest (state {state})"
        ))),
        Err(crate::runner::Error::Guest {
            source: crate::guest::Error::ExecTimeout { timeout, .. },
            ..
        }) => Err(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            format!("deadline_exceeded: command in machine {id} did not finish within {timeout:?}"),
        )),
        Err(
            e @ crate::runner::Error::Guest {
                source: crate::guest::Error::ExecSpawn { .. },
                ..
            },
        ) => Err(ApiError::bad_request(format!(
            "exec in machine {id}: {}",
            crate::runner::chain(&e)
        ))),
        Err(e) => Err(ApiError::internal(format!(
            "exec in machine {id}: {}",
            crate::runner::chain(&e)
        ))),
    }
}

pub async fn destroy(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    // Docs send `force=true`, fly-go/flyctl send `kill=true` (reference §8.3): accept both.
    let force = q.flag("force") || q.flag("kill");
    mutate(&lab, &app, &id, &headers, |m, rng| {
        if matches!(m.state.as_str(), "destroyed" | "destroying") {
            return Ok(ok());
        }
        if !force && !DESTROYABLE.contains(&m.state.as_str()) {
            return Err(ApiError::precondition(format!(
                "failed_precondition: unable to destroy machine {}, it is {}: stop it first or use force=true",
                m.id, m.state
            )));
        }
        enter(m, "destroying", "user", rng);
        m.target = Some("destroyed".into());
        Ok(ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_and_signals_validate() {
        assert!(valid_duration(&json!("30s")));
        assert!(valid_duration(&json!("1m30s")));
        assert!(valid_duration(&json!(5_000_000_000u64)));
        assert!(!valid_duration(&json!("soon")));
        assert!(!valid_duration(&json!("")));
        assert!(valid_signal("SIGTERM"));
        assert!(valid_signal("9"));
        assert!(!valid_signal("SIGNOPE"));
    }

    #[test]
    fn config_needs_an_image() {
        let cfg = |v: Value| serde_json::from_value::<MachineConfig>(v).expect("config");
        assert!(validate_config(&cfg(json!({"image": "ubuntu"}))).is_ok());
        assert!(validate_config(&cfg(json!({}))).is_err());
        assert!(validate_config(&cfg(
            json!({"image": "u", "mounts": [{"volume": "vol_a", "path": "data"}]})
        ))
        .is_err());
        assert!(validate_config(&cfg(
            json!({"image": "u", "mounts": [{"volume": "", "path": "/data"}]})
        ))
        .is_err());
    }
}
