//! `POST /graphql`: the slice of Fly's GraphQL API that WireGuard peers need (reference
//! fly-runtime.md §5): `organization(slug)` (its `id`, and `wireGuardPeers`),
//! `addWireGuardPeer(input)` and `removeWireGuardPeer(input)`.
//!
//! This is not a GraphQL engine: the operation is known by its root field, arguments come
//! from `variables` (as flyctl's genqlient documents send them: `$slug`, `$input`), and the
//! answer has Fly's shape: HTTP 200 with `data` and, on failure, `errors[{message, path}]`.
//! The exact wording of Fly's error messages for an unknown organization or peer is not
//! documented (unknown); the lab's say what is wrong. "You must be authenticated to view
//! this." is the message flyctl shows for a bad token.
//! Must not: print or log a peer's key.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};

use super::LabState;
use crate::Lab;

/// The lab's opaque id of the organization `slug` (Fly's ids are opaque strings).
pub fn org_id(slug: &str) -> String {
    format!("lab-org-{slug}")
}

/// The organization of a lab id, when the lab has it: `personal`, or one that owns an app or
/// a WireGuard peer (on Fly an organization outlives its apps; the lab knows one only by what
/// it holds, so the peer of an org whose last app is gone can still be removed).
fn org_slug(lab: &Lab, id: &str) -> Option<String> {
    let slug = id.strip_prefix("lab-org-")?;
    known_org(lab, slug).then(|| slug.to_string())
}

fn known_org(lab: &Lab, slug: &str) -> bool {
    if slug == "personal" || !lab.wireguard.peers(slug).is_empty() {
        return true;
    }
    lab.core()
        .state
        .apps
        .values()
        .any(|a| a.app.as_ref().is_some_and(|x| x.org_slug == slug))
}

/// The root field of a document: the first name inside the outer selection set, after an
/// optional `query`/`mutation` header with its variable definitions.
pub fn root_field(doc: &str) -> Option<&str> {
    let body = &doc[doc.find('{')? + 1..];
    let start = body.find(|c: char| c.is_ascii_alphabetic() || c == '_')?;
    let rest = &body[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn error(path: &str, message: impl Into<String>) -> Response {
    Json(json!({
        "data": { path: null },
        "errors": [{ "message": message.into(), "path": [path] }],
    }))
    .into_response()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Serves one GraphQL request.
pub async fn serve(lab: LabState, headers: HeaderMap, body: Bytes) -> Response {
    let lab = lab.0;
    let authed = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(super::presented_token)
        .is_some_and(|t| t == lab.opts.token);
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                Json(json!({"errors": [{"message": format!("invalid request body: {e}")}]})),
            )
                .into_response()
        }
    };
    let doc = field(&req, "query");
    let vars = req.get("variables").cloned().unwrap_or(Value::Null);
    let Some(root) = root_field(doc) else {
        return error("query", "the query names no field");
    };
    let root = root.to_string();
    if !authed {
        return error(&root, "You must be authenticated to view this.");
    }
    match root.as_str() {
        "organization" => organization(&lab, doc, &vars),
        "addWireGuardPeer" => add_peer(lab, &vars).await,
        "removeWireGuardPeer" => remove_peer(lab, &vars).await,
        other => error(
            other,
            format!("the lab's GraphQL has no field {other:?} (it serves organization, addWireGuardPeer, removeWireGuardPeer)"),
        ),
    }
}

fn organization(lab: &Lab, doc: &str, vars: &Value) -> Response {
    let slug = field(vars, "slug");
    if !known_org(lab, slug) {
        return error(
            "organization",
            format!("Could not find Organization with slug {slug:?}"),
        );
    }
    let mut org = json!({ "id": org_id(slug), "slug": slug });
    if doc.contains("wireGuardPeers") {
        let nodes: Vec<Value> = lab
            .wireguard
            .peers(slug)
            .into_iter()
            .map(|p| {
                json!({"id": format!("{}-{}", p.org, p.name), "name": p.name,
                       "pubkey": p.pubkey, "region": p.region, "peerip": p.peerip.to_string()})
            })
            .collect();
        org["wireGuardPeers"] = json!({ "nodes": nodes });
    }
    Json(json!({ "data": { "organization": org } })).into_response()
}

/// `^[a-zA-Z0-9\-]+$`, flyctl's rule for peer names (reference fly-runtime.md §5).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

async fn add_peer(lab: std::sync::Arc<Lab>, vars: &Value) -> Response {
    const F: &str = "addWireGuardPeer";
    let input = vars.get("input").cloned().unwrap_or(Value::Null);
    let Some(org) = org_slug(&lab, field(&input, "organizationId")) else {
        return error(
            F,
            format!(
                "Could not find Organization with id {:?}",
                field(&input, "organizationId")
            ),
        );
    };
    let name = field(&input, "name").to_string();
    if !valid_name(&name) {
        return error(
            F,
            format!("invalid peer name {name:?}: letters, digits and dashes only"),
        );
    }
    let pubkey = field(&input, "pubkey").to_string();
    let key_ok = base64::engine::general_purpose::STANDARD
        .decode(&pubkey)
        .is_ok_and(|k| k.len() == 32);
    if !key_ok {
        return error(
            F,
            "invalid pubkey: want a base64 X25519 public key (32 bytes)",
        );
    }
    let network = match field(&input, "network") {
        "" => org.clone(),
        n => n.to_string(),
    };
    let region = field(&input, "region").to_string();
    let prefix = crate::ids::network_prefix(&network);
    let lab2 = lab.clone();
    let added = tokio::task::spawn_blocking(move || {
        lab2.wireguard.add(&org, prefix, &name, &pubkey, &region)
    })
    .await;
    let peer = match added {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(F, format!("adding the peer: {e:#}")),
        Err(e) => return error(F, format!("adding the peer: {e}")),
    };
    // API-only mode has no gateway: the peer is recorded, and nothing lets it in.
    let (gw_key, endpoint) = lab
        .wireguard
        .endpoint()
        .unwrap_or_else(|| (String::new(), String::new()));
    Json(json!({ "data": { F: {
        "peerip": peer.peerip.to_string(),
        "endpointip": endpoint,
        "pubkey": gw_key,
        "network": network,
    }}}))
    .into_response()
}

async fn remove_peer(lab: std::sync::Arc<Lab>, vars: &Value) -> Response {
    const F: &str = "removeWireGuardPeer";
    let input = vars.get("input").cloned().unwrap_or(Value::Null);
    let id = field(&input, "organizationId").to_string();
    let Some(org) = org_slug(&lab, &id) else {
        return error(F, format!("Could not find Organization with id {id:?}"));
    };
    let name = field(&input, "name").to_string();
    let lab2 = lab.clone();
    let org2 = org.clone();
    let name2 = name.clone();
    let removed = tokio::task::spawn_blocking(move || lab2.wireguard.remove(&org2, &name2)).await;
    match removed {
        Ok(Ok(Some(_))) => {
            Json(json!({ "data": { F: { "organization": { "id": id } } } })).into_response()
        }
        Ok(Ok(None)) => error(
            F,
            format!("Could not find WireGuard peer {name:?} in {org}"),
        ),
        Ok(Err(e)) => error(F, format!("removing the peer: {e:#}")),
        Err(e) => error(F, format!("removing the peer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_field_skips_the_operation_header() {
        assert_eq!(
            root_field("mutation($input: AddWireGuardPeerInput!) { addWireGuardPeer(input: $input) { peerip } }"),
            Some("addWireGuardPeer")
        );
        assert_eq!(
            root_field("query($slug:String!){ organization(slug:$slug){ id } }"),
            Some("organization")
        );
        assert_eq!(root_field("{ organization { id } }"), Some("organization"));
        assert_eq!(root_field("nothing"), None);
    }

    #[test]
    fn peer_names_follow_flyctl() {
        assert!(valid_name("fks-host-1"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(""));
    }
}
