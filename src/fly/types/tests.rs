//! Unit tests of the wire types: decoding the reference's examples and OpenAPI-shaped objects,
//! round trips, explicit nulls and unknown fields.

use std::time::Duration;

use serde_json::json;

use super::*;

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("decodes")
}

/// A Machine shaped like the OpenAPI `Machine` schema, with fields from §2.4 and §4.
fn sample_machine() -> Value {
    json!({
        "id": "1857156b526dd8",
        "name": "aged-thunder-7371",
        "state": "started",
        "region": "sjc",
        "instance_id": "01HEPA330HZ37A78TK080NAK1M",
        "private_ip": "fdaa:0:18:a7b:196:e274:9ce1:2",
        "created_at": "2023-11-08T01:52:30Z",
        "updated_at": "2023-11-08T01:52:33Z",
        "host_status": "ok",
        "cordoned": false,
        "image_ref": {
            "registry": "registry-1.docker.io",
            "repository": "library/ubuntu",
            "tag": "latest",
            "digest": "sha256:abc",
            "labels": {}
        },
        "config": {
            "image": "registry-1.docker.io/library/ubuntu:latest",
            "guest": {"cpu_kind": "shared", "cpus": 2, "memory_mb": 2048},
            "init": {"exec": ["/usr/local/bin/fks-bootstrap", "node", "init"], "tty": false},
            "env": {"FKS_ROLE": "server"},
            "files": [{"guest_path": "/etc/ssh/authorized_keys", "raw_value": "c3NoLWVkMjU1MTk=", "mode": 384}],
            "restart": {"policy": "always", "max_retries": 3},
            "mounts": [{"volume": "vol_9vw681egy1jj5xm4", "path": "/var/lib/rancher", "name": "ctrl_0", "encrypted": true}],
            "metadata": {"fks_role": "server", "fks_launch_id": "7f6c"},
            "stop_config": {"signal": "SIGTERM", "timeout": "30s"},
            "dns": {"skip_registration": false},
            "auto_destroy": false,
            "services": [{
                "protocol": "tcp",
                "internal_port": 6443,
                "autostop": true,
                "ports": [{"port": 6443, "handlers": []}],
                "concurrency": {"type": "connections", "soft_limit": 20}
            }],
            "checks": {"k3s": {"type": "tcp", "port": 6443, "interval": "15s", "timeout": 2000000000}},
            "rootfs": {"persist": "always", "size_gb": 8}
        },
        "events": [
            {"id": "01HEPA", "type": "start", "status": "started", "source": "flyd", "timestamp": 1699408353000i64},
            {"type": "launch", "status": "created", "source": "user", "timestamp": 1699408350000i64}
        ],
        "checks": [{"name": "k3s", "status": "passing", "output": "ok", "updated_at": "2023-11-08T01:53:00Z"}],
        "containers": [],
        "some_future_field": {"x": 1}
    })
}

#[test]
fn machine_decodes_openapi_shaped_object() {
    let m: Machine = decode(sample_machine());
    assert_eq!(m.id, "1857156b526dd8");
    assert_eq!(m.state, MachineState::Started);
    assert_eq!(m.instance_id, "01HEPA330HZ37A78TK080NAK1M");
    let c = m.config.as_ref().expect("config");
    let guest = c.guest.as_ref().expect("guest");
    assert_eq!(guest.cpu_kind.as_deref(), Some("shared"));
    assert_eq!(guest.memory_mb, Some(2048));
    let init = c.init.as_ref().expect("init");
    assert_eq!(init.exec.as_ref().map(Vec::len), Some(3));
    assert_eq!(c.files[0].mode, Some(0o600));
    assert_eq!(
        c.restart.as_ref().and_then(|r| r.policy.clone()),
        Some(RestartPolicy::Always)
    );
    assert_eq!(c.mounts[0].volume, "vol_9vw681egy1jj5xm4");
    assert_eq!(c.mounts[0].extra.get("encrypted"), Some(&json!(true)));
    assert_eq!(
        c.stop_config.as_ref().and_then(|s| s.timeout),
        Some(GoDuration::from_secs(30))
    );
    assert_eq!(c.services[0].autostop, Some(Autostop::Bool(true)));
    let check = &c.checks["k3s"];
    assert_eq!(check.interval, Some(GoDuration::from_secs(15)));
    assert_eq!(check.timeout, Some(GoDuration(Duration::from_secs(2))));
    assert!(c.extra.contains_key("rootfs"));
    assert_eq!(m.events[0].kind, "start");
    assert_eq!(m.events[1].id, None);
    assert_eq!(m.checks[0].status, "passing");
    assert_eq!(m.metadata("fks_role"), Some("server"));
    assert!(
        !format!("{c:?}").contains("c3NoLWVkMjU1MTk="),
        "file content must not be printed"
    );
}

#[test]
fn machine_config_round_trips_unknown_fields() {
    let m: Machine = decode(sample_machine());
    let config = m.config.expect("config");
    let encoded = serde_json::to_value(&config).expect("encodes");
    assert_eq!(
        encoded["rootfs"],
        json!({"persist": "always", "size_gb": 8})
    );
    assert_eq!(
        encoded["services"][0]["concurrency"],
        json!({"type": "connections", "soft_limit": 20})
    );
    assert_eq!(encoded["mounts"][0]["encrypted"], json!(true));
    // Durations go back out as Go strings, even when they came in as nanoseconds.
    assert_eq!(encoded["checks"]["k3s"]["timeout"], json!("2s"));
    let again: MachineConfig = decode(encoded);
    assert_eq!(again, config);
}

#[test]
fn machine_state_keeps_unknown_values() {
    let m: Machine = decode(json!({"id": "abc", "state": "hibernating"}));
    assert_eq!(m.state, MachineState::Unknown("hibernating".to_string()));
    assert_eq!(
        serde_json::to_value(&m.state).expect("encodes"),
        json!("hibernating")
    );
    assert_eq!(
        MachineState::from("launch_failed"),
        MachineState::LaunchFailed
    );
    assert!(MachineState::Starting.is_transient());
    assert!(!MachineState::Stopped.is_transient());
}

#[test]
fn explicit_nulls_decode_as_defaults() {
    let m: Machine = decode(json!({
        "id": "abc", "name": null, "state": null, "region": null, "instance_id": null,
        "private_ip": null, "config": {
            "image": "img", "env": null, "files": null, "mounts": null, "metadata": null,
            "services": null, "checks": null, "guest": null, "init": {"exec": null}
        },
        "events": null, "checks": null, "nonce": null
    }));
    assert_eq!(m.name, "");
    assert_eq!(m.state, MachineState::default());
    let c = m.config.expect("config");
    assert!(c.env.is_empty() && c.files.is_empty() && c.mounts.is_empty());
    assert_eq!(c.init.expect("init").exec, None);
    assert!(m.events.is_empty());
}

#[test]
fn machine_without_config_reads_incomplete_config() {
    let m: Machine = decode(json!({
        "id": "abc", "state": "started", "host_status": "unreachable",
        "incomplete_config": {"image": "img", "metadata": {"role": "agent"}}
    }));
    assert!(m.config.is_none());
    assert_eq!(m.metadata("role"), Some("agent"));
}

#[test]
fn autostop_accepts_bool_and_string() {
    let s: MachineService = decode(json!({"autostop": "suspend"}));
    assert_eq!(s.autostop, Some(Autostop::Mode("suspend".to_string())));
    let s: MachineService = decode(json!({"autostop": false}));
    assert_eq!(s.autostop, Some(Autostop::Bool(false)));
}

#[test]
fn volume_decodes_reference_example() {
    let v: Volume = decode(json!({
        "id": "vol_9vw681egy1jj5xm4", "name": "data", "state": "created", "size_gb": 3,
        "region": "sjc", "zone": "09cd", "encrypted": true, "attached_machine_id": null,
        "attached_alloc_id": null, "created_at": "2023-11-08T01:52:30.123Z",
        "blocks": 0, "block_size": 0, "blocks_free": 0, "blocks_avail": 0, "fstype": "ext4",
        "snapshot_retention": 5, "auto_backup_enabled": true, "host_dedication_key": "",
        "bytes_total": 0, "bytes_used": 0, "host_status": "ok", "type": "local"
    }));
    assert_eq!(v.state, VolumeState::Created);
    assert_eq!(v.zone, "09cd");
    assert_eq!(v.attached_machine_id, None);
    assert_eq!(v.kind.as_deref(), Some("local"));
    assert!(!v.state.is_being_destroyed());
    assert!(VolumeState::from("pending_destroy").is_being_destroyed());
}

#[test]
fn extend_volume_response_decodes() {
    let r: ExtendVolumeResponse = decode(json!({
        "volume": {"id": "vol_1", "size_gb": 10, "state": "extending"},
        "needs_restart": true
    }));
    assert!(r.needs_restart);
    assert_eq!(r.volume.size_gb, 10);
    assert_eq!(r.volume.state, VolumeState::Extending);
}

#[test]
fn create_volume_request_accepts_fly_go_nulls() {
    let r: CreateVolumeRequest = decode(json!({
        "name": "ctrl_0", "region": "sjc", "size_gb": 10, "encrypted": null,
        "require_unique_zone": null, "snapshot_id": null, "compute": null, "fstype": null
    }));
    assert_eq!(r.name, "ctrl_0");
    assert_eq!(r.require_unique_zone, None);
    let encoded = serde_json::to_value(&r).expect("encodes");
    assert_eq!(
        encoded,
        json!({"name": "ctrl_0", "region": "sjc", "size_gb": 10})
    );
}

#[test]
fn create_app_request_sends_both_name_spellings() {
    let r = CreateAppRequest::new("demo-cp", "personal");
    let encoded = serde_json::to_value(&r).expect("encodes");
    assert_eq!(
        encoded,
        json!({"name": "demo-cp", "app_name": "demo-cp", "org_slug": "personal"})
    );
    let old: CreateAppRequest = decode(json!({"app_name": "old", "org_slug": "personal"}));
    assert_eq!(old.app_name(), Some("old"));
    let new: CreateAppRequest = decode(json!({"name": "new", "org_slug": "personal"}));
    assert_eq!(new.app_name(), Some("new"));
    let none: CreateAppRequest = decode(json!({"name": "", "app_name": null}));
    assert_eq!(none.app_name(), None);
}

#[test]
fn app_and_app_list_decode() {
    let list: ListAppsResponse = decode(json!({
        "total_apps": 1,
        "apps": [{"id": "jlyv9r5d56v18xrg", "name": "demo-cp", "machine_count": 3,
                  "volume_count": 3, "network": "default",
                  "organization": {"name": "Personal", "slug": "personal"}}]
    }));
    assert_eq!(list.apps[0].name, "demo-cp");
    assert_eq!(
        list.apps[0].organization.as_ref().map(|o| o.slug.as_str()),
        Some("personal")
    );
    let created: App = decode(json!({"id": "jlyv9r5d56v18xrg", "created_at": 1699408350000i64}));
    assert_eq!(created.id, "jlyv9r5d56v18xrg");
}

#[test]
fn lease_envelope_decodes_reference_example() {
    let r: LeaseResponse = decode(json!({
        "status": "success",
        "data": {"nonce": "5c35f65c9f95", "expires_at": 1699408470, "owner": "ops@example.com",
                 "description": "fks-bootstrap", "version": "01HEPA330HZ37A78TK080NAK1M"}
    }));
    let lease = r.data.expect("data");
    assert_eq!(lease.nonce, "5c35f65c9f95");
    assert_eq!(lease.expires_at, 1_699_408_470);
    let released: LeaseResponse = decode(json!({"status": "success", "data": {"ok": true}}));
    assert_eq!(released.status, "success");
}

#[test]
fn wait_and_exec_and_start_responses_decode() {
    let w: WaitResponse = decode(json!({"ok": true}));
    assert!(w.ok && w.state.is_none());
    let w: WaitResponse =
        decode(json!({"ok": true, "state": "stopped", "version": "01H", "event_id": "e1"}));
    assert_eq!(w.state, Some(MachineState::Stopped));
    let e: ExecResponse =
        decode(json!({"stdout": "hi\n", "stderr": null, "exit_code": 0, "exit_signal": 0}));
    assert_eq!(e.stdout, "hi\n");
    assert_eq!(e.stderr, "");
    let s: StartResponse =
        decode(json!({"previous_state": "stopped", "migrated": false, "new_host": ""}));
    assert_eq!(s.previous_state, Some(MachineState::Stopped));
}

#[test]
fn exec_and_stop_requests_encode_as_fly_expects() {
    let exec = ExecRequest {
        command: vec!["k3s".into(), "kubectl".into(), "get".into(), "nodes".into()],
        cmd: Some("k3s kubectl get nodes".into()),
        timeout: Some(30),
        ..ExecRequest::default()
    };
    assert_eq!(
        serde_json::to_value(&exec).expect("encodes"),
        json!({"command": ["k3s", "kubectl", "get", "nodes"], "cmd": "k3s kubectl get nodes", "timeout": 30})
    );
    let stop = StopRequest {
        signal: Some("SIGTERM".into()),
        timeout: Some(GoDuration::from_secs(90)),
    };
    assert_eq!(
        serde_json::to_value(&stop).expect("encodes"),
        json!({"signal": "SIGTERM", "timeout": "1m30s"})
    );
}

#[test]
fn error_body_prefers_message_and_keeps_status() {
    let e: ErrorBody = decode(json!({
        "error": "Validation failed: Name has already been taken", "status": "name_taken"
    }));
    assert_eq!(e.text(), "Validation failed: Name has already been taken");
    assert_eq!(e.status.as_deref(), Some("name_taken"));
    let e: ErrorBody = decode(json!({"error": "x", "message": "better", "details": {"a": 1}}));
    assert_eq!(e.text(), "better");
    let e: ErrorBody = decode(json!({}));
    assert_eq!(e.text(), "");
}

#[test]
fn secrets_never_print_their_values() {
    let s: AppSecret =
        decode(json!({"name": "K3S_TOKEN", "digest": "d1", "value": "K10abc::server:xyz"}));
    let shown = format!("{s:?}");
    assert!(!shown.contains("K10abc"), "{shown}");
    assert_eq!(
        s.value.as_ref().map(SecretString::expose),
        Some("K10abc::server:xyz")
    );
    let list: AppSecrets = decode(json!({"secrets": [{"name": "A", "digest": "d"}]}));
    assert_eq!(list.secrets[0].value, None);
    let req = SetAppSecretRequest {
        value: SecretString::new("v"),
    };
    assert_eq!(
        serde_json::to_value(&req).expect("encodes"),
        json!({"value": "v"})
    );
    let update: AppSecretsUpdateRequest = decode(json!({"values": {"A": "1", "B": null}}));
    assert_eq!(update.values["B"], None);
    let resp: SetAppSecretResponse =
        decode(json!({"name": "A", "digest": "d", "Version": 3, "version": 3, "value": "leak"}));
    assert_eq!(resp.version, Some(3));
    assert!(!format!("{resp:?}").contains("leak"));
}

#[test]
fn metadata_bodies_decode() {
    let v: MetadataValue = decode(json!({"value": "server"}));
    assert_eq!(v.value, "server");
    let all: BTreeMap<String, String> = decode(json!({"fks_role": "server"}));
    assert_eq!(all["fks_role"], "server");
    let bulk: UpdateMetadataRequest =
        decode(json!({"metadata": {"a": "1", "b": null}, "machine_version": "01H"}));
    assert_eq!(bulk.metadata["b"], None);
}

#[test]
fn list_filter_builds_query_pairs_and_matches() {
    let mut f = MachineListFilter::metadata("fks_launch_id", "a b&c");
    f.states = vec![MachineState::Started, MachineState::Stopped];
    f.region = Some("sjc".into());
    assert_eq!(
        f.query_pairs(),
        vec![
            ("region".to_string(), "sjc".to_string()),
            ("state".to_string(), "started,stopped".to_string()),
            ("metadata.fks_launch_id".to_string(), "a b&c".to_string()),
        ]
    );
    let mut m: Machine = decode(sample_machine());
    assert!(!f.matches(&m));
    m.config
        .as_mut()
        .expect("config")
        .metadata
        .insert("fks_launch_id".into(), "a b&c".into());
    assert!(f.matches(&m));
    m.state = MachineState::Destroyed;
    assert!(!MachineListFilter::default().matches(&m));
}

// ---------------------------------------------------------------------------------------------
// Samples generated from Fly's OpenAPI document (the lab keeps the copy the project uses).
// ---------------------------------------------------------------------------------------------

const OPENAPI: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/lab/openapi/fly-machines-openapi.json"
);

/// Fields the document types as plain strings but that carry Go durations.
const DURATION_FIELDS: &[&str] = &["timeout", "interval", "grace_period"];

/// A sample value for a schema: every property present, arrays and maps with one entry,
/// documented examples where given.
fn sample(spec: &Value, schema: &Value, name: &str, depth: usize) -> Value {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let key = r.trim_start_matches("#/components/schemas/");
        return sample(spec, &spec["components"]["schemas"][key], name, depth);
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        return sample(spec, &all[0], name, depth);
    }
    if let Some(example) = schema.get("example") {
        return example.clone();
    }
    if let Some(e) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return e.clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") if DURATION_FIELDS.contains(&name) => json!("10s"),
        Some("string") => json!(format!("{name}-sample")),
        Some("integer") => json!(7),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") if depth < 6 => json!([sample(spec, &schema["items"], name, depth + 1)]),
        Some("array") => json!([]),
        _ => {
            let mut obj = Map::new();
            if depth < 6 {
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (k, v) in props {
                        obj.insert(k.clone(), sample(spec, v, k, depth + 1));
                    }
                }
                if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    obj.insert("key".into(), sample(spec, extra, name, depth + 1));
                }
            }
            Value::Object(obj)
        }
    }
}

fn spec_sample(spec: &Value, schema: &str) -> Value {
    let s = &spec["components"]["schemas"][schema];
    assert!(s.is_object(), "schema {schema} is in the document");
    sample(spec, s, schema, 0)
}

fn decodes_and_round_trips<T>(spec: &Value, schema: &str)
where
    T: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let v = spec_sample(spec, schema);
    let decoded: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{schema} sample does not decode: {e}\n{v:#}"));
    let again: T = serde_json::from_value(serde_json::to_value(&decoded).expect("encodes"))
        .unwrap_or_else(|e| panic!("{schema} does not round-trip: {e}"));
    assert_eq!(decoded, again, "{schema} round trip");
}

#[test]
fn openapi_samples_decode_into_the_wire_types() {
    let text = std::fs::read_to_string(OPENAPI).expect("the lab's copy of the OpenAPI document");
    let spec: Value = serde_json::from_str(&text).expect("OpenAPI JSON");
    decodes_and_round_trips::<App>(&spec, "App");
    decodes_and_round_trips::<ListAppsResponse>(&spec, "ListAppsResponse");
    decodes_and_round_trips::<CreateAppRequest>(&spec, "CreateAppRequest");
    decodes_and_round_trips::<Volume>(&spec, "Volume");
    decodes_and_round_trips::<CreateVolumeRequest>(&spec, "CreateVolumeRequest");
    decodes_and_round_trips::<UpdateVolumeRequest>(&spec, "UpdateVolumeRequest");
    decodes_and_round_trips::<ExtendVolumeRequest>(&spec, "ExtendVolumeRequest");
    decodes_and_round_trips::<ExtendVolumeResponse>(&spec, "ExtendVolumeResponse");
    decodes_and_round_trips::<Machine>(&spec, "Machine");
    decodes_and_round_trips::<MachineConfig>(&spec, "fly.MachineConfig");
    decodes_and_round_trips::<CreateMachineRequest>(&spec, "CreateMachineRequest");
    decodes_and_round_trips::<UpdateMachineRequest>(&spec, "UpdateMachineRequest");
    decodes_and_round_trips::<StopRequest>(&spec, "StopRequest");
    decodes_and_round_trips::<ExecRequest>(&spec, "MachineExecRequest");
    decodes_and_round_trips::<ExecResponse>(&spec, "flydv1.ExecResponse");
    decodes_and_round_trips::<Lease>(&spec, "Lease");
    decodes_and_round_trips::<CreateLeaseRequest>(&spec, "CreateLeaseRequest");
    decodes_and_round_trips::<WaitResponse>(&spec, "WaitMachineResponse");
    decodes_and_round_trips::<MachineEvent>(&spec, "MachineEvent");
    decodes_and_round_trips::<AppSecret>(&spec, "AppSecret");
    decodes_and_round_trips::<AppSecrets>(&spec, "AppSecrets");
    decodes_and_round_trips::<SetAppSecretRequest>(&spec, "SetAppSecretRequest");
    decodes_and_round_trips::<SetAppSecretResponse>(&spec, "SetAppSecretResponse");
    decodes_and_round_trips::<AppSecretsUpdateRequest>(&spec, "AppSecretsUpdateRequest");
    decodes_and_round_trips::<AppSecretsUpdateResponse>(&spec, "AppSecretsUpdateResp");
    decodes_and_round_trips::<DeleteAppSecretResponse>(&spec, "DeleteAppSecretResponse");
    decodes_and_round_trips::<ErrorBody>(&spec, "ErrorResponse");
    decodes_and_round_trips::<MetadataValue>(&spec, "metadataValueResponse");
    decodes_and_round_trips::<UpsertMetadataRequest>(&spec, "upsertMetadataKeyRequest");
    decodes_and_round_trips::<UpdateMetadataRequest>(&spec, "updateMetadataRequest");
}

#[test]
fn openapi_machine_config_sample_survives_an_update_unchanged() {
    let text = std::fs::read_to_string(OPENAPI).expect("the lab's copy of the OpenAPI document");
    let spec: Value = serde_json::from_str(&text).expect("OpenAPI JSON");
    let v = spec_sample(&spec, "fly.MachineConfig");
    let config: MachineConfig = serde_json::from_value(v.clone()).expect("decodes");
    assert!(
        v.as_object().is_some_and(|o| o.len() > 15),
        "a full sample: {v:#}"
    );
    assert!(!config.extra.is_empty(), "some fields are kept as unknown");
    // Every field of the document, known to this client or not, goes back out as it came in.
    assert_eq!(serde_json::to_value(&config).expect("encodes"), v);
}
