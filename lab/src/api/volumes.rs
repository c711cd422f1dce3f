//! `/v1/apps/{app}/volumes` handlers and zone placement (reference §2.2): zones per region,
//! `require_unique_zone` (default true: no other volume of the same name of this app in the
//! zone), `unique_zone_app_wide` (no other volume of the app at all), capacity faults.

use super::{body, render, LabState, Query, State};
use crate::error::ApiError;
use crate::model::{AppState, Record, Volume};
use crate::{clock, ids, Lab};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::Json;
use fks_bootstrap::fly;
use serde_json::{json, Value};

/// Fly's volume size limit (reference §2.2).
const MAX_SIZE_GB: u64 = 500;

/// Count volumes per zone over all apps, to spread new ones.
fn zone_load(lab: &Lab, state: &crate::model::State, zone: &str) -> usize {
    let _ = lab;
    state
        .apps
        .values()
        .map(|a| a.volumes.values().filter(|v| v.zone == zone).count())
        .sum()
}

/// Pick the zone of `region` for a new volume of `app`, or explain why none is left.
fn place(
    lab: &Lab,
    state: &crate::model::State,
    app: &AppState,
    region: &str,
    name: &str,
    unique: bool,
    app_wide: bool,
) -> Result<String, ApiError> {
    let zones = lab.region_zones(region).ok_or_else(|| {
        ApiError::unprocessable(format!("region {region:?} is not available in this lab"))
    })?;
    let open: Vec<&String> = zones
        .iter()
        .filter(|z| !lab.opts.faults.zone_full(region, z))
        .collect();
    if open.is_empty() {
        return Err(ApiError::capacity(format!(
            "insufficient resources to create new volume in region {region}"
        )));
    }
    let fits: Vec<&String> =
        open.into_iter()
            .filter(|z| {
                !unique
                    || !app.volumes.values().any(|v| {
                        v.zone == **z && v.region == region && (app_wide || v.name == name)
                    })
            })
            .collect();
    fits.into_iter()
        .min_by_key(|z| zone_load(lab, state, z))
        .cloned()
        .ok_or_else(|| {
            ApiError::capacity(format!(
                "insufficient resources to create new volume {name} in region {region}: every zone already holds a volume {} of this app (require_unique_zone)",
                if app_wide { "".to_string() } else { format!("named {name}") }
            ))
        })
}

fn valid_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 30
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub async fn create(
    State(lab): LabState,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: fly::CreateVolumeRequest = body(&bytes)?;
    let name = req.name;
    if !valid_volume_name(&name) {
        return Err(ApiError::bad_request(format!(
            "invalid volume name {name:?}: use 1 to 30 letters, digits and underscores"
        )));
    }
    if req.snapshot_id.is_some() || req.source_volume_id.is_some() {
        return Err(ApiError::unprocessable(
            "the lab does not support restoring snapshots or forking volumes",
        ));
    }
    let size_gb = req.size_gb.unwrap_or(3);
    if size_gb == 0 || size_gb > MAX_SIZE_GB {
        return Err(ApiError::bad_request(format!(
            "size_gb must be between 1 and {MAX_SIZE_GB}, got {size_gb}"
        )));
    }
    let fstype = req.fstype.unwrap_or_else(|| "ext4".into());
    if fstype != "ext4" && fstype != "raw" {
        return Err(ApiError::bad_request(format!(
            "fstype must be ext4 or raw, got {fstype:?}"
        )));
    }
    let retention = u64::from(req.snapshot_retention.unwrap_or(5));
    if !(1..=60).contains(&retention) {
        return Err(ApiError::bad_request(format!(
            "snapshot_retention must be 1 to 60 days, got {retention}"
        )));
    }
    let mut core = lab.core();
    let s = core.state.app(&app).ok_or_else(ApiError::app_not_found)?;
    let region = req
        .region
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| lab.zones[0].0.clone());
    let zone = place(
        &lab,
        &core.state,
        s,
        &region,
        &name,
        req.require_unique_zone.unwrap_or(true),
        req.unique_zone_app_wide.unwrap_or(false),
    )?;
    let vol = Volume {
        id: ids::volume_id(&mut core.rng),
        app: app.clone(),
        name,
        state: "created".into(),
        size_gb,
        region,
        zone,
        encrypted: req.encrypted.unwrap_or(true),
        fstype,
        snapshot_retention: retention,
        auto_backup_enabled: req.auto_backup_enabled.unwrap_or(true),
        attached_machine_id: None,
        created_at_ms: clock::now_ms(),
    };
    let out = render::volume(&vol, false);
    core.commit(Record::Volume(vol))?;
    Ok(Json(out))
}

pub async fn list(
    State(lab): LabState,
    Path(app): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let summary = Query::parse(q.as_deref()).flag("summary");
    let core = lab.core();
    let s = core.state.app(&app).ok_or_else(ApiError::app_not_found)?;
    Ok(Json(Value::Array(
        s.volumes
            .values()
            .map(|v| render::volume(v, summary))
            .collect(),
    )))
}

fn find<'a>(state: &'a crate::model::State, app: &str, vol: &str) -> Result<&'a Volume, ApiError> {
    state
        .app(app)
        .ok_or_else(ApiError::app_not_found)?
        .volumes
        .get(vol)
        .ok_or_else(ApiError::volume_not_found)
}

pub async fn show(
    State(lab): LabState,
    Path((app, vol)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let core = lab.core();
    Ok(Json(render::volume(find(&core.state, &app, &vol)?, false)))
}

pub async fn update(
    State(lab): LabState,
    Path((app, vol)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: fly::UpdateVolumeRequest = body(&bytes)?;
    let mut core = lab.core();
    let mut v = find(&core.state, &app, &vol)?.clone();
    if let Some(r) = req.snapshot_retention.map(u64::from) {
        if !(1..=60).contains(&r) {
            return Err(ApiError::bad_request(format!(
                "snapshot_retention must be 1 to 60 days, got {r}"
            )));
        }
        v.snapshot_retention = r;
    }
    if let Some(b) = req.auto_backup_enabled {
        v.auto_backup_enabled = b;
    }
    let out = render::volume(&v, false);
    core.commit(Record::Volume(v))?;
    Ok(Json(out))
}

pub async fn extend(
    State(lab): LabState,
    Path((app, vol)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: fly::ExtendVolumeRequest = body(&bytes)?;
    let mut core = lab.core();
    let mut v = find(&core.state, &app, &vol)?.clone();
    let size = req.size_gb;
    if size <= v.size_gb || size > MAX_SIZE_GB {
        return Err(ApiError::bad_request(format!(
            "size_gb must be greater than the current size {} and at most {MAX_SIZE_GB}, got {size}: volumes only grow",
            v.size_gb
        )));
    }
    v.size_gb = size;
    let needs_restart = v
        .attached_machine_id
        .as_ref()
        .and_then(|m| core.state.app(&app).and_then(|a| a.machines.get(m)))
        .is_some_and(|m| m.state == "started");
    let out = json!({ "volume": render::volume(&v, false), "needs_restart": needs_restart });
    core.commit(Record::Volume(v))?;
    Ok(Json(out))
}

pub async fn delete(
    State(lab): LabState,
    Path((app, vol)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut core = lab.core();
    let mut v = find(&core.state, &app, &vol)?.clone();
    if let Some(m) = &v.attached_machine_id {
        return Err(ApiError::precondition(format!(
            "failed_precondition: volume {vol} is attached to machine {m}; destroy the machine first"
        )));
    }
    core.commit(Record::VolumeDeleted { app, id: vol })?;
    v.state = "destroyed".into();
    Ok(Json(render::volume(&v, false)))
}
