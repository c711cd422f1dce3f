//! Rendering of stored records as Fly's JSON response bodies (reference §2.1–§2.4).
//! Pure: values in, JSON out.

use crate::clock;
use crate::model::{App, AppState, Lease, Machine, Volume};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// An App object (`GET /apps/{app}`).
pub fn app(a: &App, s: &AppState) -> Value {
    let live = s.machines.values().filter(|m| m.state != "destroyed").count();
    json!({
        "id": a.id,
        "name": a.name,
        "status": if live == 0 { "pending" } else { "deployed" },
        "organization": { "name": a.org_slug, "slug": a.org_slug },
        "network": a.network.clone().unwrap_or_default(),
        "machine_count": live,
        "volume_count": s.volumes.len(),
        "created_at": a.created_at_ms,
    })
}

/// A Volume object; `summary` drops the block counts.
pub fn volume(v: &Volume, summary: bool) -> Value {
    let bytes = v.size_gb * 1024 * 1024 * 1024;
    let mut out = json!({
        "id": v.id,
        "name": v.name,
        "state": v.state,
        "size_gb": v.size_gb,
        "region": v.region,
        "zone": v.zone,
        "encrypted": v.encrypted,
        "attached_machine_id": v.attached_machine_id,
        "attached_alloc_id": null,
        "created_at": clock::rfc3339_ms(v.created_at_ms),
        "fstype": v.fstype,
        "snapshot_retention": v.snapshot_retention,
        "auto_backup_enabled": v.auto_backup_enabled,
        "host_dedication_id": "",
        "host_status": "ok",
        "type": "local",
    });
    if !summary {
        let blocks = bytes / 4096;
        out["block_size"] = 4096.into();
        out["blocks"] = blocks.into();
        out["blocks_free"] = blocks.into();
        out["blocks_avail"] = blocks.into();
        out["bytes_total"] = bytes.into();
        out["bytes_used"] = 0.into();
    }
    out
}

/// `image_ref` derived from `config.image` (`registry/repository:tag`).
fn image_ref(image: &str) -> Value {
    let (path, tag) = match image.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, t),
        _ => (image, "latest"),
    };
    let (registry, repository) = match path.split_once('/') {
        Some((r, rest)) if r.contains('.') || r.contains(':') || r == "localhost" => (r, rest.to_string()),
        Some(_) => ("docker-hub-mirror.fly.io", path.to_string()),
        None => ("docker-hub-mirror.fly.io", format!("library/{path}")),
    };
    let digest: String = Sha256::digest(image.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    json!({
        "registry": registry,
        "repository": repository,
        "tag": tag,
        "digest": format!("sha256:{digest}"),
        "labels": {},
    })
}

/// A Machine object; `summary` drops config, checks, events and nonce (SPEC26 list `summary`).
pub fn machine(m: &Machine, summary: bool) -> Value {
    let image = m.config.get("image").and_then(Value::as_str).unwrap_or("");
    let mut out = json!({
        "id": m.id,
        "name": m.name,
        "state": m.state,
        "region": m.region,
        "instance_id": m.instance_id,
        "private_ip": m.private_ip,
        "image_ref": image_ref(image),
        "created_at": clock::rfc3339_s(m.created_at_ms),
        "updated_at": clock::rfc3339_s(m.updated_at_ms),
        "host_status": "ok",
        "cordoned": m.cordoned,
    });
    if !summary {
        out["config"] = m.config.clone();
        out["events"] = serde_json::to_value(&m.events).unwrap_or_default();
        out["checks"] = json!([]);
    }
    out
}

/// The lease envelope (reference §2.3.2: `{status, data}`, 201 on acquire).
pub fn lease(l: &Lease) -> Value {
    json!({
        "status": "success",
        "data": {
            "nonce": l.nonce,
            "expires_at": l.expires_at,
            "owner": l.owner,
            "description": l.description,
            "version": l.version,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ref_splits_registry_repository_tag() {
        let r = image_ref("registry-1.docker.io/library/ubuntu:22.04");
        assert_eq!(r["registry"], "registry-1.docker.io");
        assert_eq!(r["repository"], "library/ubuntu");
        assert_eq!(r["tag"], "22.04");
        let r = image_ref("ubuntu");
        assert_eq!(r["repository"], "library/ubuntu");
        assert_eq!(r["tag"], "latest");
    }
}
