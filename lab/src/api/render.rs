//! Rendering of stored records as Fly's response bodies (reference §2.1–§2.4), built from the
//! product's wire types (`fks_bootstrap::fly`) where they fit. Pure: values in, values out.

use crate::clock;
use crate::model::{App, AppState, Lease, Machine, Volume};
use fks_bootstrap::fly;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Serialize a wire value (these types always serialize; `Null` would only hide a bug).
pub fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// An App object (`GET /apps/{app}`).
pub fn app(a: &App, s: &AppState) -> Value {
    let live = s
        .machines
        .values()
        .filter(|m| m.state != "destroyed")
        .count() as u64;
    let mut out = json(&fly::App {
        id: a.id.clone(),
        name: a.name.clone(),
        status: Some(if live == 0 { "pending" } else { "deployed" }.into()),
        organization: Some(fly::AppOrganization {
            name: a.org_slug.clone(),
            slug: a.org_slug.clone(),
            internal_numeric_id: None,
        }),
        network: Some(a.network.clone().unwrap_or_default()),
        internal_numeric_id: None,
        machine_count: Some(live),
        volume_count: Some(s.volumes.len() as u64),
    });
    out["created_at"] = a.created_at_ms.into();
    out
}

/// A Volume object; `summary` drops the block counts. An unattached volume has no
/// `attached_machine_id` key: Fly sends `null`, its OpenAPI document says `string`; leaving the
/// key out satisfies both readers (lab/openapi/EXCLUSIONS.md).
pub fn volume(v: &Volume, summary: bool) -> Value {
    let bytes = v.size_gb * 1024 * 1024 * 1024;
    let blocks = (!summary).then_some(bytes / 4096);
    let mut out = json(&fly::Volume {
        id: v.id.clone(),
        name: v.name.clone(),
        state: fly::VolumeState::from(v.state.as_str()),
        size_gb: v.size_gb,
        region: v.region.clone(),
        zone: v.zone.clone(),
        encrypted: Some(v.encrypted),
        attached_machine_id: v.attached_machine_id.clone(),
        attached_alloc_id: None,
        created_at: Some(clock::rfc3339_ms(v.created_at_ms)),
        fstype: Some(v.fstype.clone()),
        snapshot_retention: Some(v.snapshot_retention as u32),
        auto_backup_enabled: Some(v.auto_backup_enabled),
        block_size: blocks.map(|_| 4096),
        blocks,
        blocks_free: blocks,
        blocks_avail: blocks,
        bytes_total: (!summary).then_some(bytes),
        bytes_used: (!summary).then_some(0),
        host_status: Some("ok".into()),
        host_dedication_id: Some(String::new()),
        kind: Some("local".into()),
    });
    if let Some(obj) = out.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    out
}

/// `image_ref` derived from `config.image` (`registry/repository:tag`), with the digest the
/// lab pulled when it pulled one (guests mode), else a stand-in hash of the reference.
fn image_ref(image: &str, pulled: Option<&str>) -> fly::ImageRef {
    let (path, tag) = match image.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, t),
        _ => (image, "latest"),
    };
    let (registry, repository) = match path.split_once('/') {
        Some((r, rest)) if r.contains('.') || r.contains(':') || r == "localhost" => {
            (r, rest.to_string())
        }
        Some(_) => ("docker-hub-mirror.fly.io", path.to_string()),
        None => ("docker-hub-mirror.fly.io", format!("library/{path}")),
    };
    let digest: String = Sha256::digest(image.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fly::ImageRef {
        registry: registry.into(),
        repository,
        tag: tag.into(),
        digest: pulled
            .map(str::to_string)
            .unwrap_or_else(|| format!("sha256:{digest}")),
        labels: Default::default(),
    }
}

/// A Machine object; `summary` drops config, checks, events and nonce (SPEC26 list `summary`).
pub fn machine(m: &Machine, summary: bool) -> fly::Machine {
    fly::Machine {
        id: m.id.clone(),
        name: m.name.clone(),
        state: fly::MachineState::from(m.state.as_str()),
        region: m.region.clone(),
        instance_id: m.instance_id.clone(),
        version: None,
        private_ip: m.private_ip.clone(),
        config: (!summary).then(|| m.config.clone()),
        incomplete_config: None,
        image_ref: Some(image_ref(&m.config.image, m.image_digest.as_deref())),
        created_at: Some(clock::rfc3339_s(m.created_at_ms)),
        updated_at: Some(clock::rfc3339_s(m.updated_at_ms)),
        events: if summary {
            vec![]
        } else {
            m.events.iter().map(event).collect()
        },
        checks: vec![],
        nonce: None,
        host_status: Some("ok".into()),
        cordoned: Some(m.cordoned),
    }
}

/// A machine event as Fly reports it.
pub fn event(e: &crate::model::Event) -> fly::MachineEvent {
    fly::MachineEvent {
        id: Some(e.id.clone()),
        kind: e.kind.clone(),
        status: e.status.clone(),
        source: e.source.clone(),
        timestamp: e.timestamp as i64,
        // Fly puts the exit of the main process in `request.exit_event`.
        request: e
            .exit_code
            .map(|c| serde_json::json!({"exit_event": {"exit_code": c}})),
    }
}

/// The lease envelope (reference §2.3.2: `{status, data}`, 201 on acquire).
pub fn lease(l: &Lease) -> Value {
    json(&fly::LeaseResponse {
        status: "success".into(),
        data: Some(fly::Lease {
            nonce: l.nonce.clone(),
            expires_at: l.expires_at as i64,
            owner: l.owner.clone(),
            description: l.description.clone(),
            version: l.version.clone(),
        }),
        message: None,
        code: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ref_splits_registry_repository_tag() {
        let r = image_ref("registry-1.docker.io/library/ubuntu:22.04", None);
        assert_eq!(r.registry, "registry-1.docker.io");
        assert_eq!(r.repository, "library/ubuntu");
        assert_eq!(r.tag, "22.04");
        let r = image_ref("ubuntu", None);
        assert_eq!(r.repository, "library/ubuntu");
        assert_eq!(r.tag, "latest");
    }
}
