//! `/v1/apps` handlers: create, get, list, delete (reference §2.1), and the `app_settle`
//! fault: a new app answers 404 for a while, as Fly's eventually consistent API may
//! (reference fly-runtime.md §6).

use super::{body, render, LabState, Query, State};
use crate::error::ApiError;
use crate::model::{App, Record};
use crate::{clock, ids};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fks_bootstrap::fly;
use serde_json::json;

/// Fly's app name rule: under 63 characters of lowercase letters, digits and dashes.
fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
}

pub async fn create(State(lab): LabState, bytes: Bytes) -> Result<Response, ApiError> {
    let req: fly::CreateAppRequest = body(&bytes)?;
    let name = req
        .name
        .filter(|n| !n.is_empty())
        .or(req.app_name)
        .ok_or_else(|| {
            ApiError::bad_request("app name is required (field `name` or `app_name`)")
        })?;
    if !valid_app_name(&name) {
        return Err(ApiError::unprocessable(format!(
            "Validation failed: Name {name:?} must be under 63 characters of lowercase letters, numbers and dashes"
        )));
    }
    if let Some(net) = &req.network {
        let valid = net.starts_with(|c: char| c.is_ascii_alphabetic())
            && net.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !net.is_empty() && !valid {
            return Err(ApiError::unprocessable(format!("Validation failed: network {net:?} must start with a letter and hold letters, digits and dashes")));
        }
    }
    let mut core = lab.core();
    if core.state.app(&name).is_some() {
        return Err(
            ApiError::unprocessable("Validation failed: Name has already been taken")
                .with_code("name_taken"),
        );
    }
    let app = App {
        id: ids::app_id(&mut core.rng),
        name: name.clone(),
        org_slug: req
            .org_slug
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "personal".into()),
        network: req.network.filter(|n| !n.is_empty()),
        created_at_ms: clock::now_ms(),
    };
    core.commit(Record::App(app))?;
    crate::lock(&lab.faults).app_created(
        &name,
        lab.opts.faults.app_settle,
        std::time::Instant::now(),
    );
    let s = core.state.app(&name).expect("app was just committed");
    let out = render::app(s.app.as_ref().expect("app state holds its app"), s);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The `app_settle` answer for a request under `/v1/apps/{app}`: 404 `app not found` while
/// the app is new (not for the create itself, `POST /v1/apps`, nor for the list).
pub fn settling(lab: &crate::Lab, path: &str) -> Option<Response> {
    if lab.opts.faults.app_settle.is_zero() {
        return None;
    }
    let app = path.strip_prefix("/v1/apps/")?.split('/').next()?;
    crate::lock(&lab.faults)
        .app_settling(app, std::time::Instant::now())
        .then(|| ApiError::app_not_found().into_response())
}

pub async fn show(
    State(lab): LabState,
    Path(app): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let core = lab.core();
    let s = core.state.app(&app).ok_or_else(ApiError::app_not_found)?;
    Ok(Json(render::app(
        s.app.as_ref().expect("app state holds its app"),
        s,
    )))
}

pub async fn list(State(lab): LabState, RawQuery(q): RawQuery) -> Json<serde_json::Value> {
    let q = Query::parse(q.as_deref());
    let org = q.get("org_slug").filter(|o| !o.is_empty());
    let core = lab.core();
    let apps: Vec<_> = core
        .state
        .apps
        .values()
        .filter_map(|s| s.app.as_ref().map(|a| (a, s)))
        .filter(|(a, _)| org.is_none_or(|o| a.org_slug == o))
        .map(|(a, s)| render::app(a, s))
        .collect();
    Json(json!({ "total_apps": apps.len(), "apps": apps }))
}

pub async fn delete(
    State(lab): LabState,
    Path(app): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let force = Query::parse(q.as_deref()).flag("force");
    {
        let mut core = lab.core();
        let s = core.state.app(&app).ok_or_else(ApiError::app_not_found)?;
        let running = s
            .machines
            .values()
            .filter(|m| {
                !matches!(
                    m.state.as_str(),
                    "stopped" | "destroyed" | "created" | "failed" | "suspended"
                )
            })
            .count();
        if running > 0 && !force {
            return Err(ApiError::precondition(format!(
                "failed_precondition: app {app} has {running} running machines; stop them first or use force=true"
            )));
        }
        let ids: Vec<String> = s.machines.keys().cloned().collect();
        core.commit(Record::AppDeleted { name: app.clone() })?;
        // A forced delete takes running guests with it.
        if let Some(r) = &lab.runner {
            for id in ids {
                r.detached(&lab, &id, "destroyed");
            }
        }
    }
    {
        let mut secrets = crate::lock(&lab.secrets);
        if secrets.apps.remove(&app).is_some() {
            secrets
                .save()
                .map_err(|e| ApiError::internal(format!("writing secrets: {e}")))?;
        }
    }
    lab.notify();
    Ok(StatusCode::ACCEPTED.into_response())
}
