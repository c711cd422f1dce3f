//! Machine sub-resources: wait (reference §2.3.1), events, leases (§2.3.2) and metadata.

use super::machines::find;
use super::{body, nonce_header, render, LabState, Query, State};
use crate::error::ApiError;
use crate::lifecycle::SETTLED;
use crate::model::{Lease, Record};
use crate::{clock, ids};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT_STATES: &[&str] = &[
    "started",
    "stopped",
    "suspended",
    "destroyed",
    "failed",
    "settled",
];

/// `GET .../wait?state=&timeout=&version=`: block until the machine reaches one of the states,
/// at most `timeout` seconds (clamped to 1..60), else 408 with Fly's text.
pub async fn wait(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    let mut want = q.all("state");
    if want.is_empty() {
        want.push("started".into());
    }
    if let Some(bad) = want.iter().find(|s| !WAIT_STATES.contains(&s.as_str())) {
        return Err(ApiError::bad_request(format!(
            "invalid state {bad:?}: want one of {}",
            WAIT_STATES.join(", ")
        )));
    }
    let timeout = match q.get("timeout").filter(|t| !t.is_empty()) {
        Some(t) => t.trim_end_matches('s').parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid timeout {t:?}: want whole seconds"))
        })?,
        None => 60,
    }
    .clamp(1, 60);
    let version = q
        .get("version")
        .or_else(|| q.get("instance_id"))
        .filter(|v| !v.is_empty())
        .map(String::from);
    let mut changed = lab.changed.subscribe();
    let mut closing = lab.closing.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let have = {
            let core = lab.core();
            let m = find(&core.state, &app, &id)?;
            // An older version than the one asked about has been replaced (reference §3).
            let state = match &version {
                Some(v) if *v != m.instance_id => "replaced".to_string(),
                _ => m.state.clone(),
            };
            let reached = want
                .iter()
                .any(|w| *w == state || (w == "settled" && SETTLED.contains(&state.as_str())));
            if reached {
                let event_id = m.events.first().map(|e| e.id.clone()).unwrap_or_default();
                return Ok(Json(render::json(&fks_bootstrap::fly::WaitResponse {
                    ok: true,
                    state: Some(fks_bootstrap::fly::MachineState::from(state)),
                    version: Some(m.instance_id.clone()),
                    event_id: Some(event_id),
                })));
            }
            state
        };
        tokio::select! {
            r = changed.changed() => { if r.is_err() { break_with(&want, &have)?; } }
            _ = closing.changed() => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the lab is shutting down")),
            _ = tokio::time::sleep_until(deadline) => { break_with(&want, &have)?; }
        }
    }
}

fn break_with(want: &[String], have: &str) -> Result<(), ApiError> {
    Err(ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "deadline_exceeded: machine failed to reach desired state, {}, currently {have}",
            want.join(",")
        ),
    ))
}

/// `GET .../events?limit=N`: newest first, default 20, at most 50.
pub async fn events(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 50);
    let core = lab.core();
    let m = find(&core.state, &app, &id)?;
    Ok(Json(render::json(
        &m.events
            .iter()
            .take(limit)
            .map(render::event)
            .collect::<Vec<_>>(),
    )))
}

fn live_lease(l: &Option<Lease>) -> Option<&Lease> {
    l.as_ref().filter(|l| l.expires_at > clock::now_ms() / 1000)
}

pub async fn lease_show(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let core = lab.core();
    let m = find(&core.state, &app, &id)?;
    live_lease(&m.lease)
        .map(|l| Json(render::lease(l)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "lease not found"))
}

/// Acquire (201) or, with the current nonce in the header, refresh a lease. The TTL comes from
/// the body (docs) or the `ttl` query (fly-go), reference §8.4.
pub async fn lease_acquire(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let req: fks_bootstrap::fly::CreateLeaseRequest = body(&bytes)?;
    let q = Query::parse(q.as_deref());
    let ttl = match q.get("ttl").filter(|t| !t.is_empty()) {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid ttl {t:?}")))?,
        None => req.ttl.unwrap_or(30),
    }
    .max(1);
    let nonce = nonce_header(&headers);
    let mut guard = lab.core();
    let core = &mut *guard;
    let mut m = find(&core.state, &app, &id)?.clone();
    if m.state == "destroyed" {
        return Err(ApiError::precondition(format!(
            "failed_precondition: machine {id} is destroyed"
        )));
    }
    let now_s = clock::now_ms() / 1000;
    let lease = match live_lease(&m.lease) {
        Some(l) if nonce.as_deref() == Some(l.nonce.as_str()) => Lease {
            expires_at: now_s + ttl,
            description: req.description.unwrap_or_else(|| l.description.clone()),
            ..l.clone()
        },
        Some(l) => {
            return Err(ApiError::conflict(format!(
                "failed to acquire lease: machine {id} is leased by {} until {}",
                l.owner, l.expires_at
            )))
        }
        None => Lease {
            nonce: ids::nonce(&mut core.rng),
            expires_at: now_s + ttl,
            owner: "lab@tokens.fly.io".into(),
            description: req.description.unwrap_or_default(),
            version: m.instance_id.clone(),
        },
    };
    let out = render::lease(&lease);
    m.lease = Some(lease);
    core.commit(Record::Machine(Box::new(m)))?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Release needs the nonce of the lease (reference §2.3.2).
pub async fn lease_release(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let nonce = nonce_header(&headers)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "the fly-machine-lease-nonce header is required to release a lease",
            )
        })?;
    let mut guard = lab.core();
    let core = &mut *guard;
    let mut m = find(&core.state, &app, &id)?.clone();
    match live_lease(&m.lease) {
        None => return Err(ApiError::new(StatusCode::NOT_FOUND, "lease not found")),
        Some(l) if l.nonce != nonce => {
            return Err(ApiError::conflict(format!(
                "lease nonce mismatch for machine {id}"
            )));
        }
        Some(_) => {}
    }
    m.lease = None;
    core.commit(Record::Machine(Box::new(m)))?;
    Ok(Json(json!({ "status": "success", "data": { "ok": true } })))
}

pub async fn metadata_all(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let core = lab.core();
    Ok(Json(json!(find(&core.state, &app, &id)?.metadata())))
}

pub async fn metadata_get(
    State(lab): LabState,
    Path((app, id, key)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let core = lab.core();
    let md = find(&core.state, &app, &id)?.metadata();
    let md = md.clone();
    md.get(&key)
        .map(|v| Json(json!({ "value": v })))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("metadata key {key} not found"),
            )
        })
}

/// Change the metadata map of a machine; metadata writes keep the version (reference §8.17).
fn edit_metadata(
    lab: &crate::Lab,
    app: &str,
    id: &str,
    machine_version: Option<&str>,
    f: impl FnOnce(&mut BTreeMap<String, String>),
) -> Result<Response, ApiError> {
    let mut core = lab.core();
    let mut m = find(&core.state, app, id)?.clone();
    if machine_version.is_some_and(|v| !v.is_empty() && v != m.instance_id) {
        return Err(ApiError::precondition(format!(
            "failed_precondition: machine_version does not match the machine's version {}",
            m.instance_id
        )));
    }
    f(&mut m.config.metadata);
    core.commit(Record::Machine(Box::new(m)))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn valid_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty()
        || key.len() > 128
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ApiError::bad_request(format!(
            "invalid metadata key {key:?}"
        )));
    }
    Ok(())
}

pub async fn metadata_upsert(
    State(lab): LabState,
    Path((app, id, key)): Path<(String, String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    valid_key(&key)?;
    let req: fks_bootstrap::fly::UpsertMetadataRequest = body(&bytes)?;
    let value = req.value;
    if value.is_empty() {
        return Err(ApiError::bad_request("value is required"));
    }
    edit_metadata(&lab, &app, &id, None, |md| {
        md.insert(key, value);
    })
}

pub async fn metadata_delete(
    State(lab): LabState,
    Path((app, id, key)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    edit_metadata(&lab, &app, &id, None, |md| {
        md.remove(&key);
    })
}

fn bulk(
    lab: &crate::Lab,
    app: &str,
    id: &str,
    bytes: &[u8],
    replace: bool,
) -> Result<Response, ApiError> {
    let req: fks_bootstrap::fly::UpdateMetadataRequest = body(bytes)?;
    let changes = req.metadata;
    for k in changes.keys() {
        valid_key(k)?;
    }
    edit_metadata(lab, app, id, req.machine_version.as_deref(), |md| {
        if replace {
            md.clear();
        }
        for (k, v) in changes {
            // A null or empty value deletes the key (SPEC26).
            match v.filter(|v| !v.is_empty()) {
                Some(v) => {
                    md.insert(k, v);
                }
                None => {
                    md.remove(&k);
                }
            }
        }
    })
}

/// `PUT .../metadata`: the map becomes exactly the given keys.
pub async fn metadata_put(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    bulk(&lab, &app, &id, &bytes, true)
}

/// `PATCH .../metadata`: the given keys are set or (null/"") removed, others kept.
pub async fn metadata_patch(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    bulk(&lab, &app, &id, &bytes, false)
}
