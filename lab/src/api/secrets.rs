//! `/v1/apps/{app}/secrets` handlers (SPEC26 Secrets_*). Values are stored but never answered:
//! lists and gets carry the name, digest and times only.

use super::{body, render, LabState, State};
use crate::error::ApiError;
use crate::secrets::{digest, Secret};
use crate::{clock, lock};
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fks_bootstrap::fly;
use serde_json::Value;

fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid secret name {name:?}: use letters, digits and underscores"
        )))
    }
}

fn app_exists(lab: &crate::Lab, app: &str) -> Result<(), ApiError> {
    lab.core()
        .state
        .app(app)
        .map(|_| ())
        .ok_or_else(ApiError::app_not_found)
}

/// A secret as answered: name, digest and times, never the value.
fn shown(name: &str, s: &Secret) -> fly::AppSecret {
    fly::AppSecret {
        name: name.to_string(),
        digest: s.digest.clone(),
        created_at: Some(clock::rfc3339_s(s.created_at_ms)),
        updated_at: Some(clock::rfc3339_s(s.updated_at_ms)),
        value: None,
    }
}

/// When a write made now reaches machine boots: at once, or after the `secrets_lag` fault's
/// seeded delay (reference fly-runtime.md §6: the store is eventually consistent).
fn visible_at(lab: &crate::Lab) -> u64 {
    let lag = lock(&lab.faults).lag(lab.opts.faults.secrets_lag);
    if lag.is_zero() {
        0
    } else {
        clock::now_ms() + u64::try_from(lag.as_millis()).unwrap_or(u64::MAX / 2)
    }
}

/// A machine create or update named `min_secrets_version`: the app's writes up to it reach
/// that machine's boot (reference fly-runtime.md §6). Called before the core lock is taken.
pub fn catch_up(lab: &crate::Lab, app: &str, min_version: Option<u64>) {
    if let Some(v) = min_version {
        if let Some(a) = lock(&lab.secrets).apps.get_mut(app) {
            a.catch_up(v);
        }
    }
}

fn save(store: &crate::secrets::Store) -> Result<(), ApiError> {
    store
        .save()
        .map_err(|e| ApiError::internal(format!("writing secrets: {e}")))
}

pub async fn list(State(lab): LabState, Path(app): Path<String>) -> Result<Json<Value>, ApiError> {
    app_exists(&lab, &app)?;
    let store = lock(&lab.secrets);
    let secrets: Vec<fly::AppSecret> = store
        .apps
        .get(&app)
        .map(|a| a.secrets.iter().map(|(n, s)| shown(n, s)).collect())
        .unwrap_or_default();
    Ok(Json(render::json(&fly::AppSecrets { secrets })))
}

/// Set several secrets; a null value unsets one.
pub async fn update(
    State(lab): LabState,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: fly::AppSecretsUpdateRequest = body(&bytes)?;
    let values = req.values;
    for k in values.keys() {
        valid_name(k)?;
    }
    app_exists(&lab, &app)?;
    let visible_at_ms = visible_at(&lab);
    let mut store = lock(&lab.secrets);
    let now = clock::now_ms();
    let a = store.apps.entry(app.clone()).or_default();
    a.version += 1;
    let version = a.version;
    for (k, v) in values {
        match v {
            Some(v) => {
                let v = v.expose().to_string();
                let created = a.secrets.get(&k).map_or(now, |s| s.created_at_ms);
                a.secrets.insert(
                    k,
                    Secret {
                        digest: digest(&v),
                        value: v,
                        created_at_ms: created,
                        updated_at_ms: now,
                        version,
                        visible_at_ms,
                    },
                );
            }
            None => {
                a.secrets.remove(&k);
            }
        }
    }
    let out = render::json(&fly::AppSecretsUpdateResponse {
        secrets: a.secrets.iter().map(|(n, s)| shown(n, s)).collect(),
        version: Some(a.version),
    });
    save(&store)?;
    Ok(Json(out))
}

pub async fn show(
    State(lab): LabState,
    Path((app, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    app_exists(&lab, &app)?;
    let store = lock(&lab.secrets);
    store
        .apps
        .get(&app)
        .and_then(|a| a.secrets.get(&name))
        .map(|s| Json(render::json(&shown(&name, s))))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("secret {name} not found")))
}

pub async fn set(
    State(lab): LabState,
    Path((app, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    valid_name(&name)?;
    let req: fly::SetAppSecretRequest = body(&bytes)?;
    let value = req.value.expose().to_string();
    if value.is_empty() {
        return Err(ApiError::bad_request("value is required"));
    }
    app_exists(&lab, &app)?;
    let visible_at_ms = visible_at(&lab);
    let mut store = lock(&lab.secrets);
    let now = clock::now_ms();
    let a = store.apps.entry(app.clone()).or_default();
    let created = a.secrets.get(&name).map_or(now, |s| s.created_at_ms);
    a.version += 1;
    let s = Secret {
        digest: digest(&value),
        value,
        created_at_ms: created,
        updated_at_ms: now,
        version: a.version,
        visible_at_ms,
    };
    let out = render::json(&fly::SetAppSecretResponse {
        name: name.clone(),
        digest: s.digest.clone(),
        created_at: Some(clock::rfc3339_s(s.created_at_ms)),
        updated_at: Some(clock::rfc3339_s(s.updated_at_ms)),
        version: Some(a.version),
    });
    a.secrets.insert(name, s);
    save(&store)?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

pub async fn delete(
    State(lab): LabState,
    Path((app, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    app_exists(&lab, &app)?;
    let mut store = lock(&lab.secrets);
    let a = store
        .apps
        .get_mut(&app)
        .filter(|a| a.secrets.contains_key(&name))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("secret {name} not found")))?;
    a.secrets.remove(&name);
    a.version += 1;
    let out = render::json(&fly::DeleteAppSecretResponse {
        version: Some(a.version),
    });
    save(&store)?;
    Ok(Json(out))
}
