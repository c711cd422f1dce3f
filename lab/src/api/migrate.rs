//! `POST /lab/v1/apps/{app}/machines/{id}/migrate`: the lab's trigger for a host migration
//! (Fly has no such endpoint; Fly migrates machines on its own, reference fly-runtime.md §4).
//! It needs the lab's token, as `/v1` does, because it changes a machine. It is the platform
//! acting, not a client, so it is not counted in `/lab/v1/stats`. The move itself is
//! `migration`'s; this only answers: 200 with the machine as it is now (`stopping`), 404 for
//! an unknown app or machine, 412 for a machine that is not plainly started.

use super::{render, LabState, State};
use crate::error::ApiError;
use axum::extract::Path;
use axum::Json;
use serde_json::Value;

pub async fn migrate(
    State(lab): LabState,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let m = crate::migration::begin(&lab, &app, &id, crate::migration::CAUSE_API)?;
    Ok(Json(render::json(&render::machine(&m, false))))
}
