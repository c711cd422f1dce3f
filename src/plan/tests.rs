//! Unit tests of the plan: fresh clusters, converged ones, partial states, zones, names, the
//! token's absence from every request, and the dry-run text.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::fly::types::VolumeState;
use crate::render::tests::lab_config;

const HOST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----host-key-of-";

fn node_files(names: &[String]) -> BTreeMap<String, Vec<MachineFile>> {
    names
        .iter()
        .map(|n| {
            (
                n.clone(),
                vec![MachineFile {
                    guest_path: "/etc/ssh/ssh_host_ed25519_key".into(),
                    raw_value: Some(format!("{HOST_KEY}{n}")),
                    mode: Some(0o600),
                    ..MachineFile::default()
                }],
            )
        })
        .collect()
}

fn cp_names() -> Vec<String> {
    (0..3).map(|i| format!("ctrl-{i}")).collect()
}

fn options(names: &[String], zones: Option<usize>, k3s: bool) -> Options {
    Options {
        zones,
        allow_shared_zones: false,
        k3s,
        node_files: node_files(names),
        extra_env: BTreeMap::new(),
        image: PINNED.to_string(),
        max_unavailable: update::WORKER_BATCH,
    }
}

/// The image the plan gives every machine (as `image::ensure` pins it).
const PINNED: &str = "registry.fly.io/lab-cp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn cp() -> Target {
    Target::control_plane(0).expect("index 0")
}

/// A machine as the first run made it with [`lab_config`] and [`options`]: the create
/// path's config (bootstrap index 0, private files as secrets, the pinned image), so a plan
/// over it finds no drift.
fn machine(id: &str, node: &str, label: &str, state: MachineState) -> Machine {
    let config = lab_config();
    let (target, index, role) = match node.strip_prefix("worker-ng-") {
        Some(rest) => (
            Target::node_group(rest.rsplit_once('-').expect("worker-ng-G-i").0).expect("group"),
            None,
            Role::Agent,
        ),
        None if node == "ctrl-0" => (cp(), Some(0), Role::BootstrapServer),
        None => (cp(), Some(0), Role::Server),
    };
    let files = node_files(&[node.to_string()]);
    let files = private_files_to_secrets(node, &files[node], &mut BTreeMap::new());
    let mut request = machine_request(
        &config,
        &target,
        index,
        node,
        role,
        &Ref::Known(format!("vol_of_{id}")),
        None,
        None,
        &files,
    );
    request.config.image = PINNED.to_string();
    // The role as the test states it (a foreign or mislabelled machine keeps its label).
    request
        .config
        .metadata
        .insert(META_ROLE.to_string(), label.to_string());
    Machine {
        id: id.into(),
        name: node.into(),
        state,
        region: "sjc".into(),
        private_ip: format!("fdaa::{}", id.len()),
        config: Some(request.config),
        ..Machine::default()
    }
}

fn ready(mut m: Machine) -> Machine {
    if let Some(c) = m.config.as_mut() {
        c.metadata.insert(META_READY.into(), "true".into());
    }
    m
}

fn volume(id: &str, zone: &str, attached: Option<&str>) -> Volume {
    Volume {
        id: id.into(),
        name: "k3s_data".into(),
        state: VolumeState::Created,
        region: "sjc".into(),
        zone: zone.into(),
        size_gb: 1,
        attached_machine_id: attached.map(str::to_string),
        ..Volume::default()
    }
}

/// A control plane where everything exists and is started.
fn converged_cp(marked: bool) -> State {
    let mut machines = Vec::new();
    let mut volumes = Vec::new();
    for i in 0..3 {
        let id = format!("m{i}");
        let m = machine(&id, &format!("ctrl-{i}"), "server", MachineState::Started);
        machines.push(if marked { ready(m) } else { m });
        volumes.push(volume(&format!("vol_{i}"), &format!("z{i}"), Some(&id)));
    }
    let mut secrets = BTreeSet::new();
    secrets.insert(TOKEN_SECRET.to_string());
    // The first run stored every node's host key as a secret.
    secrets.extend((0..3).map(|i| format!("FKS_CTRL_{i}_SSH_HOST_ED25519_KEY")));
    State {
        app_exists: true,
        volumes,
        machines,
        secrets,
        control_plane: Vec::new(),
        k8s_nodes: None,
    }
}

fn kinds(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| {
            let kind = format!("{:?}", s.action);
            let kind = kind
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string();
            match &s.node {
                Some(n) => format!("{n}:{kind}"),
                None => kind,
            }
        })
        .collect()
}

fn creates(plan: &Plan) -> Vec<&CreateMachineRequest> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::CreateMachine { request, .. } => Some(request.as_ref()),
            _ => None,
        })
        .collect()
}

#[test]
fn fresh_control_plane_creates_app_volumes_and_machines_bootstrap_first() {
    let plan = plan(
        &lab_config(),
        &cp(),
        &State::default(),
        &options(&cp_names(), Some(3), false),
    )
    .expect("plan");
    assert_eq!(
        kinds(&plan),
        vec![
            "CreateApp",
            "SetFileSecrets",
            "ctrl-0:CreateVolume",
            "ctrl-0:CreateMachine",
            "ctrl-0:WaitStarted",
            "ctrl-1:CreateVolume",
            "ctrl-1:CreateMachine",
            "ctrl-1:WaitStarted",
            "ctrl-2:CreateVolume",
            "ctrl-2:CreateMachine",
            "ctrl-2:WaitStarted",
        ]
    );
    assert_eq!(plan.mutations(), 8);
    // Volume creates run one after another; joining servers wait for the bootstrap server;
    // every machine waits for the secrets holding the host keys.
    assert_eq!(plan.steps[5].depends_on, vec![StepId(0), StepId(2)]);
    assert_eq!(
        plan.steps[6].depends_on,
        vec![StepId(0), StepId(1), StepId(4), StepId(5)]
    );
    for s in &plan.steps {
        if let Action::CreateVolume { request, .. } = &s.action {
            assert_eq!(request.require_unique_zone, Some(true));
            assert_eq!(request.name, "k3s_data");
        }
    }
    let reqs = creates(&plan);
    let boot = reqs[0];
    assert_eq!(boot.name.as_deref(), Some("ctrl-0"));
    let c = &boot.config;
    assert_eq!(c.metadata[META_CLUSTER], "lab");
    assert_eq!(c.metadata[META_NODE], "ctrl-0");
    assert_eq!(c.metadata[META_ROLE], "server");
    assert_eq!(c.env[ENV_ROLE], "server");
    assert_eq!(c.env[ENV_BOOTSTRAP_INDEX], "0");
    assert_eq!(c.mounts[0].path, "/data");
    assert_eq!(
        c.init.as_ref().and_then(|i| i.exec.clone()),
        Some(vec!["fks-bootstrap".into(), "node".into(), "init".into()])
    );
    assert_eq!(
        c.restart.as_ref().and_then(|r| r.policy.clone()),
        Some(crate::fly::types::RestartPolicy::Always)
    );
    assert!(c.files.iter().any(|f| f.guest_path == CLUSTER_CONFIG_PATH));
    assert!(
        !c.files
            .iter()
            .any(|f| f.guest_path == crate::render::TOKEN_FILE),
        "the bootstrap server makes the token; it gets no token file"
    );
    let join = reqs[1];
    assert!(join
        .config
        .files
        .iter()
        .any(|f| f.guest_path == crate::render::TOKEN_FILE
            && f.secret_name.as_deref() == Some(TOKEN_SECRET)
            && f.raw_value.is_none()));
    match &plan.steps[6].action {
        Action::CreateMachine { bootstrap, .. } => {
            assert_eq!(bootstrap, &Some(Ref::Step(StepId(3))))
        }
        other => panic!("{other:?}"),
    }
    // The host private keys go into app secrets; the machine configs only name them.
    let Action::SetFileSecrets { values, .. } = &plan.steps[1].action else {
        panic!("{:?}", plan.steps[1]);
    };
    for (i, r) in reqs.iter().enumerate() {
        let name = format!("FKS_CTRL_{i}_SSH_HOST_ED25519_KEY");
        let key = r
            .config
            .files
            .iter()
            .find(|f| f.guest_path == "/etc/ssh/ssh_host_ed25519_key")
            .expect("host key file");
        assert_eq!(key.secret_name.as_deref(), Some(name.as_str()));
        assert!(key.raw_value.is_none());
        assert!(values[&name].expose().starts_with(HOST_KEY));
        let body = serde_json::to_string(r).expect("json");
        assert!(!body.contains(HOST_KEY), "a host key in a machine config");
    }
}

#[test]
fn host_key_secrets_that_exist_are_not_set_again() {
    let state = State {
        app_exists: true,
        secrets: (0..3)
            .map(|i| format!("FKS_CTRL_{i}_SSH_HOST_ED25519_KEY"))
            .collect(),
        ..State::default()
    };
    let p = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), false),
    )
    .expect("plan");
    assert!(!kinds(&p).iter().any(|k| k == "SetFileSecrets"), "{p}");
    assert_eq!(
        file_secret_name("worker-ng-web-0", "/etc/ssh/ssh_host_ed25519_key"),
        "FKS_WORKER_NG_WEB_0_SSH_HOST_ED25519_KEY"
    );
}

#[test]
fn fresh_control_plane_with_k3s_reads_the_token_before_joining_servers() {
    let plan = plan(
        &lab_config(),
        &cp(),
        &State::default(),
        &options(&cp_names(), Some(3), true),
    )
    .expect("plan");
    let k = kinds(&plan);
    let pos = |s: &str| {
        k.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} in {k:?}"))
    };
    let set = pos("SetTokenSecret");
    assert!(pos("ctrl-0:WaitK3sReady") < pos("ctrl-0:ReadToken"));
    let create1 = &plan.steps[pos("ctrl-1:CreateMachine")];
    assert!(create1.depends_on.contains(&StepId(set)), "{create1:?}");
    assert_eq!(k.iter().filter(|s| s.ends_with(":Taint")).count(), 3);
    assert_eq!(k.iter().filter(|s| s.ends_with(":MarkReady")).count(), 3);
}

#[test]
fn replan_after_everything_exists_has_zero_steps() {
    let config = lab_config();
    let state = converged_cp(false);
    let p = plan(
        &config,
        &cp(),
        &state,
        &options(&cp_names(), Some(3), false),
    )
    .expect("plan");
    assert!(p.is_empty(), "{p}");
    let state = converged_cp(true);
    let p = plan(&config, &cp(), &state, &options(&cp_names(), Some(3), true)).expect("plan");
    assert!(p.is_empty(), "{p}");
    assert_eq!(p.mutations(), 0);
}

#[test]
fn started_but_unmarked_nodes_get_only_k3s_steps() {
    let p = plan(
        &lab_config(),
        &cp(),
        &converged_cp(false),
        &options(&cp_names(), Some(3), true),
    )
    .expect("plan");
    assert!(kinds(&p)
        .iter()
        .all(|k| k.ends_with("WaitK3sReady") || k.ends_with("Taint") || k.ends_with("MarkReady")));
    assert_eq!(p.mutations(), 3);
}

#[test]
fn volume_without_machine_creates_only_the_machine() {
    let mut state = converged_cp(false);
    state.machines.retain(|m| m.id != "m2");
    state.volumes[2].attached_machine_id = None;
    let p = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), false),
    )
    .expect("plan");
    assert_eq!(
        kinds(&p),
        vec!["ctrl-2:CreateMachine", "ctrl-2:WaitStarted"]
    );
    match &p.steps[0].action {
        Action::CreateMachine {
            request,
            volume,
            bootstrap,
            ..
        } => {
            assert_eq!(volume, &Ref::Known("vol_2".into()));
            assert_eq!(request.config.mounts[0].volume, "vol_2");
            assert_eq!(request.config.env[ENV_ZONE], "z2");
            assert_eq!(bootstrap, &Some(Ref::Known("m0".into())));
            assert_eq!(request.config.env[ENV_BOOTSTRAP_MACHINE_ID], "m0");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stopped_machine_is_started_and_failed_one_is_reported() {
    let mut state = converged_cp(false);
    state.machines[1].state = MachineState::Stopped;
    let p = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), false),
    )
    .expect("plan");
    assert_eq!(kinds(&p), vec!["ctrl-1:StartMachine", "ctrl-1:WaitStarted"]);

    state.machines[1].state = MachineState::Failed;
    let e = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), false),
    )
    .expect_err("failed machine");
    assert!(matches!(e, Error::MachineFailed { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("m1") && msg.contains("ctrl-1") && msg.contains("failed"),
        "{msg}"
    );
}

#[test]
fn unattached_volume_in_a_free_zone_is_reused_before_creating() {
    let mut state = converged_cp(false);
    state.machines.retain(|m| m.id != "m2");
    state.volumes.truncate(2);
    // Two spare volumes: one in a zone ctrl-0 uses, one in a free zone.
    state.volumes.push(volume("vol_a", "z0", None));
    state.volumes.push(volume("vol_b", "z9", None));
    let p = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), false),
    )
    .expect("plan");
    assert_eq!(
        kinds(&p),
        vec!["ctrl-2:CreateMachine", "ctrl-2:WaitStarted"]
    );
    match &p.steps[0].action {
        Action::CreateMachine { volume, .. } => assert_eq!(volume, &Ref::Known("vol_b".into())),
        other => panic!("{other:?}"),
    }
    // A volume being destroyed or of another name is never reused.
    state.volumes.pop();
    state.volumes.pop();
    let mut gone = volume("vol_c", "z5", None);
    gone.state = VolumeState::PendingDestroy;
    state.volumes.push(gone);
    let mut other = volume("vol_d", "z6", None);
    other.name = "other".into();
    state.volumes.push(other);
    let p = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), false),
    )
    .expect("plan");
    assert_eq!(kinds(&p)[0], "ctrl-2:CreateVolume");
}

#[test]
fn bootstrap_index_is_honoured() {
    let t = Target::control_plane(2).expect("index 2");
    let p = plan(
        &lab_config(),
        &t,
        &State::default(),
        &options(&cp_names(), Some(3), false),
    )
    .expect("plan");
    assert_eq!(p.nodes[0].name, "ctrl-2");
    assert_eq!(p.nodes[0].role, Role::BootstrapServer);
    let reqs = creates(&p);
    assert_eq!(reqs[0].name.as_deref(), Some("ctrl-2"));
    assert_eq!(reqs[0].config.env[ENV_BOOTSTRAP_INDEX], "2");
    assert!(Target::control_plane(3).is_err());
}

#[test]
fn zone_shortage_is_refused_before_anything_and_names_the_flag() {
    let config = lab_config();
    let names: Vec<String> = (0..3).map(|i| format!("worker-ng-a-{i}")).collect();
    let state = State {
        control_plane: converged_cp(true).machines,
        ..State::default()
    };
    let t = Target::node_group("a").expect("name");
    let e = plan(&config, &t, &state, &options(&names, Some(2), false)).expect_err("shortage");
    assert!(e.to_string().contains(ALLOW_SHARED_ZONES_FLAG), "{e}");
    assert!(e.to_string().contains("2 zone(s)"), "{e}");

    let mut opts = options(&names, Some(2), false);
    opts.allow_shared_zones = true;
    let p = plan(&config, &t, &state, &opts).expect("sharing allowed");
    let unique: Vec<Option<bool>> = p
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::CreateVolume { request, .. } => Some(request.require_unique_zone),
            _ => None,
        })
        .collect();
    assert_eq!(unique, vec![Some(true), Some(true), Some(false)]);
    // Regression: the zone count says nothing of capacity, so with sharing allowed an
    // own-zone volume still falls back to sharing when its zone turns out full.
    assert!(p.steps.iter().all(|s| match &s.action {
        Action::CreateVolume { share_if_full, .. } => *share_if_full,
        _ => true,
    }));
    let p = plan(&config, &t, &state, &options(&names, Some(3), false)).expect("enough zones");
    assert!(p.steps.iter().all(|s| match &s.action {
        Action::CreateVolume { share_if_full, .. } => !*share_if_full,
        _ => true,
    }));

    // Zones unknown: every volume asks for its own; sharing happens only on failure.
    opts.zones = None;
    let p = plan(&config, &t, &state, &opts).expect("unknown zones");
    assert!(p.steps.iter().all(|s| match &s.action {
        Action::CreateVolume {
            request,
            share_if_full,
            ..
        } => request.require_unique_zone == Some(true) && *share_if_full,
        _ => true,
    }));
}

#[test]
fn node_group_names_are_validated() {
    for good in ["a", "gpu1", "abcdefgh"] {
        assert!(Target::node_group(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "A",
        "g-1",
        "g_1",
        "g 1",
        "ab/c",
        &"a".repeat(MAX_NODE_GROUP_LEN + 1),
    ] {
        let e = Target::node_group(bad).expect_err(bad);
        assert!(e.to_string().contains(bad), "{e}");
    }
}

#[test]
fn node_group_joins_the_control_plane_with_the_token_from_a_server() {
    let config = lab_config();
    let names: Vec<String> = (0..3).map(|i| format!("worker-ng-a-{i}")).collect();
    let t = Target::node_group("a").expect("name");
    let e = plan(
        &config,
        &t,
        &State::default(),
        &options(&names, Some(3), true),
    )
    .expect_err("no control plane");
    assert!(matches!(e, Error::NoControlPlane { .. }), "{e:?}");

    let state = State {
        control_plane: converged_cp(true).machines,
        ..State::default()
    };
    let p = plan(&config, &t, &state, &options(&names, Some(3), true)).expect("plan");
    assert_eq!(p.app, "lab-ng-a");
    let k = kinds(&p);
    assert_eq!(&k[..3], &["CreateApp", "ReadToken", "SetTokenSecret"]);
    match &p.steps[1].action {
        Action::ReadToken { from } => {
            assert_eq!(from.app, "lab-cp");
            assert_eq!(from.id, Ref::Known("m0".into()));
        }
        other => panic!("{other:?}"),
    }
    let reqs = creates(&p);
    assert_eq!(reqs.len(), 3);
    for r in reqs {
        assert_eq!(r.config.metadata[META_ROLE], "agent");
        assert_eq!(
            r.config.guest.as_ref().and_then(|g| g.memory_mb),
            Some(config.worker_vm.memory_mb)
        );
        assert!(!r.config.env.contains_key(ENV_BOOTSTRAP_MACHINE_ID));
    }
    assert_eq!(
        k.iter().filter(|s| s.ends_with(":Taint")).count(),
        0,
        "agents are not tainted"
    );
}

#[test]
fn duplicate_node_machines_are_refused() {
    let mut state = converged_cp(false);
    state
        .machines
        .push(machine("m9", "ctrl-1", "server", MachineState::Started));
    let e = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), false),
    )
    .expect_err("duplicate");
    assert!(e.to_string().contains("m1, m9"), "{e}");
}

#[test]
fn the_token_never_appears_in_any_request() {
    let token = "K10secretsecretsecret::server:abcdef";
    let mut state = converged_cp(true);
    state.machines.truncate(1);
    state.volumes.truncate(1);
    state.secrets.clear();
    let p = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), true),
    )
    .expect("plan");
    let mut requests = 0;
    for s in &p.steps {
        let json = match &s.action {
            Action::CreateMachine { request, .. } => serde_json::to_string(request),
            Action::CreateVolume { request, .. } => serde_json::to_string(request),
            Action::CreateApp { request } => serde_json::to_string(request),
            _ => continue,
        }
        .expect("serializes");
        requests += 1;
        assert!(!json.contains(token) && !json.contains("K10"), "{json}");
        assert!(!json.to_lowercase().contains("token\":"), "{json}");
        if let Action::CreateMachine { request, .. } = &s.action {
            assert!(request.config.env.keys().all(|k| !k.contains("TOKEN")));
            for f in &request.config.files {
                if f.guest_path == crate::render::TOKEN_FILE {
                    assert!(f.raw_value.is_none());
                    assert_eq!(f.secret_name.as_deref(), Some(TOKEN_SECRET));
                }
            }
        }
    }
    assert_eq!(requests, 4, "2 volumes and 2 machines");
    // The bootstrap server exists: its token is read and stored before the others join.
    assert!(kinds(&p).contains(&"ctrl-0:ReadToken".to_string()));
}

#[test]
fn missing_node_files_are_an_error() {
    let e = plan(
        &lab_config(),
        &cp(),
        &State::default(),
        &options(&[], Some(3), false),
    )
    .expect_err("no files");
    assert!(e.to_string().contains("ctrl-0"), "{e}");
}

#[test]
fn dry_run_text_is_stable() {
    let mut state = converged_cp(false);
    state.machines.retain(|m| m.id == "m0");
    state.volumes.truncate(1);
    state.secrets.clear();
    let p = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), true),
    )
    .expect("plan");
    let text = p.to_string();
    assert!(!text.contains(HOST_KEY), "files are never printed");
    let want = "\
cluster lab, app lab-cp
nodes:
  ctrl-0               server (bootstrap)  machine m0, zone z0
  ctrl-1               server              machine to create, zone new volume
  ctrl-2               server              machine to create, zone new volume
18 steps, 9 changes on Fly:
  [0]  store private node files as secrets FKS_CTRL_1_SSH_HOST_ED25519_KEY, FKS_CTRL_2_SSH_HOST_ED25519_KEY of app lab-cp (values never printed)
  [1]  ctrl-0: wait until k3s node m0 is Ready (kubectl on m0)
  [2]  ctrl-0: read the join token /data/k3s/server/token on machine m0 (never printed)  (after [1])
  [3]  store the token from [2] as secret K3S_TOKEN of app lab-cp  (after [2])
  [4]  ctrl-1: create volume k3s_data in app lab-cp (sjc, 10 GB, own zone)
  [5]  ctrl-1: create machine ctrl-1 in app lab-cp (server, 2 performance cpu, 4096 MB, image registry.fly.io/lab-cp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef, volume <made by [4]> at /data, joins m0, token from secret K3S_TOKEN)  (after [0] [1] [3] [4])
  [6]  ctrl-1: wait until machine <made by [5]> is started  (after [5])
  [7]  ctrl-2: create volume k3s_data in app lab-cp (sjc, 10 GB, own zone)  (after [4])
  [8]  ctrl-2: create machine ctrl-2 in app lab-cp (server, 2 performance cpu, 4096 MB, image registry.fly.io/lab-cp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef, volume <made by [7]> at /data, joins m0, token from secret K3S_TOKEN)  (after [0] [1] [3] [7])
  [9]  ctrl-2: wait until machine <made by [8]> is started  (after [8])
  [10] ctrl-0: taint k3s node m0 CriticalAddonsOnly=true:NoExecute (kubectl on m0)  (after [1])
  [11] ctrl-0: mark machine m0 ready (fks_ready=true)  (after [10])
  [12] ctrl-1: wait until k3s node <made by [5]> is Ready (kubectl on m0)  (after [1] [6])
  [13] ctrl-1: taint k3s node <made by [5]> CriticalAddonsOnly=true:NoExecute (kubectl on m0)  (after [12])
  [14] ctrl-1: mark machine <made by [5]> ready (fks_ready=true)  (after [13])
  [15] ctrl-2: wait until k3s node <made by [8]> is Ready (kubectl on m0)  (after [1] [9])
  [16] ctrl-2: taint k3s node <made by [8]> CriticalAddonsOnly=true:NoExecute (kubectl on m0)  (after [15])
  [17] ctrl-2: mark machine <made by [8]> ready (fks_ready=true)  (after [16])
";
    assert_eq!(text, want, "full text:\n{text}");
}

#[test]
fn a_lost_bootstrap_server_is_not_recreated_as_a_second_cluster() {
    let mut state = converged_cp(true);
    state.machines.retain(|m| m.id != "m0");
    state.volumes[0].attached_machine_id = None;
    let e = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), true),
    )
    .expect_err("bootstrap gone");
    let msg = e.to_string();
    assert!(
        msg.contains("ctrl-0")
            && msg.contains("ctrl-1, ctrl-2")
            && msg.contains("BOOTSTRAP_NODE_ID"),
        "{msg}"
    );
    // With an existing server as the bootstrap one, ctrl-0 is made again as a joining server
    // on its old volume.
    let t = Target::control_plane(1).expect("index 1");
    let p = plan(
        &lab_config(),
        &t,
        &state,
        &options(&cp_names(), Some(3), true),
    )
    .expect("plan");
    let reqs = creates(&p);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].name.as_deref(), Some("ctrl-0"));
    assert_eq!(reqs[0].config.env[ENV_BOOTSTRAP_MACHINE_ID], "m1");
    assert_eq!(reqs[0].config.mounts[0].volume, "vol_0");
}

#[test]
fn every_machine_made_gets_the_pinned_image_not_the_configs() {
    let mut config = lab_config();
    config.image = Some("registry.fly.io/some-app:latest".to_string());
    for (target, names) in [
        (cp(), cp_names()),
        (
            Target::node_group("0").expect("group"),
            (0..3).map(|i| format!("worker-ng-0-{i}")).collect(),
        ),
    ] {
        let state = State {
            control_plane: vec![machine("m0", "ctrl-0", "server", MachineState::Started)],
            ..State::default()
        };
        let plan = plan(&config, &target, &state, &options(&names, Some(3), false)).expect("plan");
        let images: Vec<&str> = plan
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::CreateMachine { request, .. } => Some(request.config.image.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(images, vec![PINNED; 3], "{target:?}");
    }
}

/// A node group `a` of three ready agents, with the control plane started.
fn converged_group() -> State {
    let mut machines = Vec::new();
    let mut volumes = Vec::new();
    for i in 0..3 {
        let id = format!("w{i}");
        let m = machine(
            &id,
            &format!("worker-ng-a-{i}"),
            "agent",
            MachineState::Started,
        );
        machines.push(ready(m));
        volumes.push(volume(&format!("wvol_{i}"), &format!("z{i}"), Some(&id)));
    }
    let mut secrets = BTreeSet::new();
    secrets.insert(TOKEN_SECRET.to_string());
    secrets.extend((0..3).map(|i| format!("FKS_WORKER_NG_A_{i}_SSH_HOST_ED25519_KEY")));
    State {
        app_exists: true,
        volumes,
        machines,
        secrets,
        control_plane: converged_cp(true).machines,
        k8s_nodes: None,
    }
}

#[test]
fn a_lowered_group_size_removes_the_highest_index_nodes_only() {
    let mut config = lab_config();
    config.node_group_size = 2;
    let t = Target::node_group("a").expect("name");
    let names: Vec<String> = (0..2).map(|i| format!("worker-ng-a-{i}")).collect();
    let p = plan(
        &config,
        &t,
        &converged_group(),
        &options(&names, Some(3), true),
    )
    .expect("plan");
    assert_eq!(
        kinds(&p),
        [
            "worker-ng-a-2:Cordon",
            "worker-ng-a-2:Drain",
            "worker-ng-a-2:DestroyMachine",
            "worker-ng-a-2:DeleteNode",
            "worker-ng-a-2:DeleteVolume",
        ]
    );
    for s in &p.steps {
        let (machine, via) = match &s.action {
            Action::Cordon { machine, via }
            | Action::Drain { machine, via }
            | Action::DeleteNode { machine, via } => (machine, Some(via)),
            Action::DestroyMachine { machine } => (machine, None),
            Action::DeleteVolume { volume, app, .. } => {
                assert_eq!((volume.as_str(), app.as_str()), ("wvol_2", "lab-ng-a"));
                continue;
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(machine.id, Ref::Known("w2".into()));
        if let Some(via) = via {
            assert_eq!(
                (via.app.as_str(), &via.id),
                ("lab-cp", &Ref::Known("m0".into()))
            );
        }
    }
    assert_eq!(p.nodes.len(), 2, "the removed node is not a desired node");
    assert_eq!(p.mutations(), 2);
    // Back to 3: the missing node is made again (a new volume, the old one is gone), and a
    // re-run at 2 after the removal has nothing to do.
    config.node_group_size = 3;
    let mut state = converged_group();
    state.machines.retain(|m| m.id != "w2");
    state.volumes.retain(|v| v.id != "wvol_2");
    let names: Vec<String> = (0..3).map(|i| format!("worker-ng-a-{i}")).collect();
    let p = plan(&config, &t, &state, &options(&names, Some(3), true)).expect("plan");
    let k = kinds(&p);
    assert!(
        k.contains(&"worker-ng-a-2:CreateMachine".to_string()),
        "{k:?}"
    );
    assert!(!k.iter().any(|s| s.ends_with(":Drain")), "{k:?}");
    config.node_group_size = 2;
    let names: Vec<String> = (0..2).map(|i| format!("worker-ng-a-{i}")).collect();
    let p = plan(&config, &t, &state, &options(&names, Some(3), true)).expect("plan");
    assert!(p.is_empty(), "{p}");
}

#[test]
fn the_control_plane_plan_never_scales_down() {
    let mut state = converged_cp(true);
    state.machines.push(ready(machine(
        "m7",
        "worker-ng-a-7",
        "agent",
        MachineState::Started,
    )));
    let p = plan(
        &lab_config(),
        &cp(),
        &state,
        &options(&cp_names(), Some(3), true),
    )
    .expect("plan");
    assert!(p.is_empty(), "{p}");
}

const NEXT: &str = "registry.fly.io/lab-cp@sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn step_of(p: &Plan, node: &str, kind: &str) -> StepId {
    p.steps
        .iter()
        .find(|s| {
            s.node.as_deref() == Some(node)
                && format!("{:?}", s.action).starts_with(&format!("{kind} "))
        })
        .map(|s| s.id)
        .unwrap_or_else(|| panic!("no {kind} step for {node} in\n{p}"))
}

#[test]
fn a_new_image_updates_servers_one_at_a_time_each_ready_and_healthy_before_the_next() {
    let mut o = options(&cp_names(), Some(3), true);
    o.image = NEXT.to_string();
    let p = plan(&lab_config(), &cp(), &converged_cp(true), &o).expect("plan");
    let mut want = Vec::new();
    for n in ["ctrl-0", "ctrl-1", "ctrl-2"] {
        for k in [
            "SetMetadata",
            "Cordon",
            "ReadBoot",
            "UpdateMachine",
            "WaitK3sReadyAgain",
            "WaitMemberHealthy",
            "Uncordon",
            "SetMetadata",
        ] {
            want.push(format!("{n}:{k}"));
        }
    }
    assert_eq!(kinds(&p), want);
    // Per server: mark, update, unmark.
    assert_eq!(p.mutations(), 9);
    // Each server is marked only after the previous one is healthy, uncordoned and unmarked;
    // it is cordoned before its baseline read, and its Ready wait compares with that read.
    let steps_of = |node: &str| -> Vec<&Step> {
        p.steps
            .iter()
            .filter(|s| s.node.as_deref() == Some(node))
            .collect()
    };
    for (prev, next) in [("ctrl-0", "ctrl-1"), ("ctrl-1", "ctrl-2")] {
        let prev_steps = steps_of(prev);
        let unmarked = prev_steps.last().expect("steps").id;
        let healthy = step_of(&p, prev, "WaitMemberHealthy");
        let uncordon = step_of(&p, prev, "Uncordon");
        assert_eq!(p.steps[uncordon.0].depends_on, [healthy]);
        assert_eq!(p.steps[unmarked.0].depends_on, [uncordon]);
        let marked = steps_of(next)[0].id;
        assert_eq!(p.steps[marked.0].depends_on, [unmarked]);
        let cordon = step_of(&p, next, "Cordon");
        let read = step_of(&p, next, "ReadBoot");
        let update = step_of(&p, next, "UpdateMachine");
        assert_eq!(p.steps[cordon.0].depends_on, [marked]);
        assert_eq!(p.steps[read.0].depends_on, [cordon]);
        assert_eq!(p.steps[update.0].depends_on, [read]);
        match &p.steps[step_of(&p, next, "WaitK3sReadyAgain").0].action {
            Action::WaitK3sReadyAgain { before, .. } => assert_eq!(*before, read),
            other => panic!("{other:?}"),
        }
    }
    // The new config is the old one with the new image, and the cordon mark so a run killed
    // after the update still finds it; only the image shows as a change.
    for s in &p.steps {
        if let Action::UpdateMachine {
            config, changes, ..
        } = &s.action
        {
            assert_eq!(config.image, NEXT);
            assert_eq!(
                config.metadata.get(META_CORDONED).map(String::as_str),
                Some("update")
            );
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert_eq!(changes[0].field, "image");
        }
    }
    let text = p.to_string();
    assert!(
        text.contains("set metadata fks_cordoned=update on machine m0"),
        "{text}"
    );
    assert!(
        text.contains("delete metadata fks_cordoned of machine m0"),
        "{text}"
    );
    // Waits after ctrl-0's reboot ask another server.
    match &p.steps[step_of(&p, "ctrl-0", "WaitK3sReadyAgain").0].action {
        Action::WaitK3sReadyAgain { via, .. } => assert_eq!(via.id, Ref::Known("m1".into())),
        other => panic!("{other:?}"),
    }
}

/// An upgrade killed after ctrl-0's update: ctrl-0 already runs the new config (and may still
/// be rebooting onto it). The next run updates ctrl-1 only once ctrl-0's etcd member is a
/// healthy voter again, asked of another server, so two servers are never down at once.
#[test]
fn a_rerun_waits_for_a_server_updated_before_the_kill_to_be_healthy_before_the_next() {
    let mut o = options(&cp_names(), Some(3), true);
    o.image = NEXT.to_string();
    let mut state = converged_cp(true);
    for m in state.machines.iter_mut().filter(|m| m.id == "m0") {
        m.config.as_mut().expect("config").image = NEXT.to_string();
    }
    let p = plan(&lab_config(), &cp(), &state, &o).expect("plan");
    let gate = &p.steps[0];
    match &gate.action {
        Action::WaitMemberHealthy { machine, via } => {
            assert_eq!(machine.id, Ref::Known("m0".into()));
            assert_eq!(via.id, Ref::Known("m1".into()));
        }
        other => panic!("{other:?}\n{p}"),
    }
    // ctrl-1's first step (its cordon mark) waits for the gate.
    let first = p
        .steps
        .iter()
        .find(|s| s.node.as_deref() == Some("ctrl-1"))
        .expect("ctrl-1 steps");
    assert!(matches!(first.action, Action::SetMetadata { .. }), "{p}");
    assert_eq!(first.depends_on, [gate.id]);
    // Mark, update and unmark for ctrl-1 and ctrl-2.
    assert_eq!(p.mutations(), 6);
    assert!(!kinds(&p).iter().any(|k| k.starts_with("ctrl-0:")), "{p}");
}

#[test]
fn a_bigger_worker_guest_updates_workers_in_batches_each_ready_before_the_next() {
    let mut config = lab_config();
    config.node_group_size = 4;
    config.worker_vm.memory_mb *= 2;
    let mut state = converged_group();
    state.machines.push(ready(machine(
        "w3",
        "worker-ng-a-3",
        "agent",
        MachineState::Started,
    )));
    state.volumes.push(volume("wvol_3", "z0", Some("w3")));
    state
        .secrets
        .insert("FKS_WORKER_NG_A_3_SSH_HOST_ED25519_KEY".into());
    let names: Vec<String> = (0..4).map(|i| format!("worker-ng-a-{i}")).collect();
    let t = Target::node_group("a").expect("name");
    let p = plan(&config, &t, &state, &options(&names, Some(3), true)).expect("plan");
    // Per worker: mark, update, unmark.
    assert_eq!(p.mutations(), 12, "{p}");
    // Each worker: marked, drained (not a bare cordon: its pods are evicted, honouring
    // PodDisruptionBudgets), its boot read, updated, Ready again, uncordoned, unmarked.
    let worker = |i: usize| -> Vec<String> {
        let node = format!("worker-ng-a-{i}");
        kinds(&p)
            .into_iter()
            .filter_map(|k| k.strip_prefix(&format!("{node}:")).map(str::to_string))
            .collect()
    };
    for i in 0..4 {
        assert_eq!(
            worker(i),
            [
                "SetMetadata",
                "Drain",
                "ReadBoot",
                "UpdateMachine",
                "WaitK3sReadyAgain",
                "Uncordon",
                "SetMetadata"
            ],
            "{p}"
        );
    }
    for i in 0..3 {
        let node = format!("worker-ng-a-{i}");
        let read = step_of(&p, &node, "ReadBoot");
        let update = step_of(&p, &node, "UpdateMachine");
        assert_eq!(p.steps[update.0].depends_on, [read], "{p}");
        // The first batch starts at once.
        let marked = p
            .steps
            .iter()
            .find(|s| s.node.as_deref() == Some(node.as_str()))
            .expect("steps");
        assert!(marked.depends_on.is_empty(), "{p}");
    }
    // The fourth worker waits for the whole first batch: back, uncordoned and unmarked.
    let unmarked: Vec<StepId> = (0..3)
        .map(|i| {
            p.steps
                .iter()
                .rev()
                .find(|s| s.node.as_deref() == Some(format!("worker-ng-a-{i}").as_str()))
                .expect("steps")
                .id
        })
        .collect();
    let fourth = p
        .steps
        .iter()
        .find(|s| s.node.as_deref() == Some("worker-ng-a-3"))
        .expect("steps");
    assert_eq!(fourth.depends_on, unmarked, "{p}");
    // No etcd wait for agents.
    assert!(!kinds(&p).iter().any(|k| k.ends_with("WaitMemberHealthy")));
}

#[test]
fn max_unavailable_sets_how_many_workers_update_at_once() {
    // Five converged workers whose VM size grew, machines only (the updates alone).
    let mut config = lab_config();
    config.node_group_size = 5;
    config.worker_vm.memory_mb *= 2;
    let mut state = converged_group();
    for i in 3..5 {
        let id = format!("w{i}");
        let node = format!("worker-ng-a-{i}");
        state
            .machines
            .push(ready(machine(&id, &node, "agent", MachineState::Started)));
        state
            .volumes
            .push(volume(&format!("wvol_{i}"), "z0", Some(&id)));
        state
            .secrets
            .insert(format!("FKS_WORKER_NG_A_{i}_SSH_HOST_ED25519_KEY"));
    }
    let names: Vec<String> = (0..5).map(|i| format!("worker-ng-a-{i}")).collect();
    let t = Target::node_group("a").expect("name");
    let batches = |max_unavailable: usize| -> Vec<Vec<StepId>> {
        let mut o = options(&names, Some(3), false);
        o.max_unavailable = max_unavailable;
        let p = plan(&config, &t, &state, &o).expect("plan");
        assert_eq!(p.mutations(), 5, "{p}");
        let updates: Vec<StepId> = names
            .iter()
            .map(|n| step_of(&p, n, "UpdateMachine"))
            .collect();
        updates
            .iter()
            .map(|u| p.steps[u.0].depends_on.clone())
            .collect()
    };
    let u = |i: usize| StepId(i);
    // The plan holds the five updates only, in node order: step i updates worker i.
    assert_eq!(
        batches(2),
        [
            vec![],
            vec![],
            vec![u(0), u(1)],
            vec![u(0), u(1)],
            vec![u(2), u(3)]
        ]
    );
    assert_eq!(batches(5), vec![Vec::<StepId>::new(); 5]);
    assert_eq!(
        batches(update::WORKER_BATCH),
        [
            vec![],
            vec![],
            vec![],
            vec![u(0), u(1), u(2)],
            vec![u(0), u(1), u(2)]
        ]
    );
    // 0 is taken as 1: one worker at a time.
    assert_eq!(
        batches(0),
        [vec![], vec![u(0)], vec![u(1)], vec![u(2)], vec![u(3)]]
    );
}

#[test]
fn the_dry_run_shows_each_changed_field_and_never_a_private_file() {
    let mut config = lab_config();
    let old_mem = config.cp_vm.memory_mb;
    config.cp_vm.memory_mb = old_mem * 2;
    let p = plan(
        &config,
        &cp(),
        &converged_cp(true),
        &options(&cp_names(), Some(3), true),
    )
    .expect("plan");
    let text = p.to_string();
    assert!(
        text.contains(&format!("guest memory_mb: {old_mem} -> {}", old_mem * 2)),
        "{text}"
    );
    assert!(
        text.contains(&format!("file {CLUSTER_CONFIG_PATH}: inline")),
        "{text}"
    );
    assert!(!text.contains(HOST_KEY), "{text}");
    assert_eq!(p.mutations(), 9);
}

#[test]
fn a_node_a_killed_update_left_cordoned_is_uncordoned_and_unmarked_and_no_other() {
    let mut state = converged_cp(true);
    // ctrl-1 carries the mark: a run was killed after its update, before its uncordon.
    // ctrl-2 was cordoned by someone else (no mark): left alone.
    let m1 = state
        .machines
        .iter_mut()
        .find(|m| m.id == "m1")
        .expect("m1");
    m1.config
        .as_mut()
        .expect("config")
        .metadata
        .insert(META_CORDONED.into(), "update".into());
    let p = lab_cp_plan(&state, true);
    assert_eq!(kinds(&p), ["ctrl-1:Uncordon", "ctrl-1:SetMetadata"], "{p}");
    assert_eq!(p.mutations(), 1);
    match &p.steps[0].action {
        Action::Uncordon { machine, via } => {
            assert_eq!(machine.id, Ref::Known("m1".into()));
            assert_ne!(via.id, machine.id);
        }
        other => panic!("{other:?}"),
    }
    // Machines only: nothing to uncordon with.
    assert!(lab_cp_plan(&state, false).is_empty());
}

/// The lab config's control-plane plan over `state` in 3 zones, with or
/// without k3s steps.
fn lab_cp_plan(state: &State, k3s: bool) -> Plan {
    plan(
        &lab_config(),
        &cp(),
        state,
        &options(&cp_names(), Some(3), k3s),
    )
    .expect("plan")
}

/// `v1.<minor + by>.0+k3s1` from the lab config's version.
fn minor_plus(version: &str, by: i32) -> String {
    let (major, minor) = skew::minor_of(version).expect("lab version");
    format!("v{major}.{}.0+k3s1", minor as i32 + by)
}

#[test]
fn a_k3s_version_one_minor_up_rolls_the_servers_and_two_up_or_one_down_is_refused() {
    let state = converged_cp(true);
    let mut config = lab_config();
    let from = config.k3s_version.clone();
    config.k3s_version = minor_plus(&from, 1);
    let mut o = options(&cp_names(), Some(3), true);
    o.image = NEXT.to_string();
    let p = plan(&config, &cp(), &state, &o).expect("one minor up");
    assert_eq!(p.mutations(), 9, "{p}");
    let text = p.to_string();
    assert!(
        text.contains("image: ") && text.contains(&format!("file {CLUSTER_CONFIG_PATH}")),
        "{text}"
    );
    // Each server counts as updated only once its kubelet reports the new Kubernetes version.
    let want = config
        .k3s_version
        .split('+')
        .next()
        .expect("version")
        .to_string();
    let waits: Vec<&String> = p
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::WaitK3sReadyAgain { kubelet, .. } => Some(kubelet),
            _ => None,
        })
        .collect();
    assert_eq!(waits, vec![&want; 3], "{text}");
    assert!(text.contains(&format!("on Kubernetes {want}")), "{text}");
    for (to, why) in [
        (minor_plus(&from, 2), "skips Kubernetes minor"),
        (minor_plus(&from, -1), "does not support downgrading"),
    ] {
        config.k3s_version = to.clone();
        match plan(&config, &cp(), &state, &o) {
            Err(e @ Error::VersionSkew { .. }) => assert!(e.to_string().contains(why), "{e}"),
            other => panic!("{to}: {other:?}"),
        }
    }
}
