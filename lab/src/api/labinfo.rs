//! `/lab/v1/*`: introspection for tests and benchmarks (stats, request log, zones, and
//! `info`: whether guests run). fks-bootstrap never calls these: what it needs to know about
//! the lab, `fks-lab env` prints as ordinary settings (`fks_lab::client_env`). No auth:
//! these hold counts, paths and zone ids, never bodies or secrets.

use super::{LabState, Query, State};
use crate::lock;
use axum::extract::RawQuery;
use axum::Json;
use serde_json::{json, Value};

/// `{requests, mutations, by_route: {"POST /v1/apps/{app}/machines": {"200": n}}}`.
pub async fn stats(State(lab): LabState) -> Json<Value> {
    Json(lock(&lab.stats).summary())
}

/// The request log, oldest first; `?since=SEQ` returns only newer entries.
pub async fn events(State(lab): LabState, RawQuery(q): RawQuery) -> Json<Value> {
    let since = Query::parse(q.as_deref())
        .get("since")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Json(json!({ "events": lock(&lab.stats).since(since) }))
}

/// The regions and their zone ids (to name zones in `--faults capacity=`).
pub async fn zones(State(lab): LabState) -> Json<Value> {
    let zones: serde_json::Map<String, Value> = lab
        .zones
        .iter()
        .map(|(r, z)| (r.clone(), json!(z)))
        .collect();
    Json(Value::Object(zones))
}

/// `{"lab": "fks-lab", "guests": bool, "zones": {region: [zone ids]}}`: what this lab is, for
/// tests and scripts (the product takes the same facts from `FKS_REGION_ZONES` and
/// `FKS_MACHINES_ONLY`, which `fks-lab env` prints).
pub async fn info(State(lab): LabState) -> Json<Value> {
    let zones: serde_json::Map<String, Value> = lab
        .zones
        .iter()
        .map(|(r, z)| (r.clone(), json!(z)))
        .collect();
    Json(json!({
        "lab": "fks-lab",
        "guests": lab.runner.is_some(),
        "zones": Value::Object(zones),
    }))
}
