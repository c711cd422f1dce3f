//! Unit tests of the `server replace` plan: quorum refusals, the member of a machine that is
//! gone, the zone of the new volume, the bootstrap role following the survivors, and the dry
//! run's steps.

use std::collections::BTreeMap;

use super::*;
use crate::fly::types::{MachineConfig, MachineFile, VolumeState};
use crate::plan::{ENV_BOOTSTRAP_INDEX, ENV_BOOTSTRAP_MACHINE_ID};
use crate::render::tests::lab_config;
use crate::status::MemberHealth;

const IMAGE: &str = "registry.fly.io/lab-cp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn server(id: &str, node: &str, state: MachineState, ip: &str) -> Machine {
    let mut config = MachineConfig::default();
    config.metadata.insert(META_CLUSTER.into(), "lab".into());
    config.metadata.insert(META_NODE.into(), node.into());
    config.metadata.insert(META_ROLE.into(), "server".into());
    Machine {
        id: id.into(),
        name: node.into(),
        state,
        region: "sjc".into(),
        private_ip: ip.into(),
        config: Some(config),
        ..Machine::default()
    }
}

fn volume(id: &str, zone: &str, attached: Option<&str>) -> Volume {
    Volume {
        id: id.into(),
        name: "k3s_data".into(),
        region: "sjc".into(),
        zone: zone.into(),
        state: VolumeState::Created,
        attached_machine_id: attached.map(str::to_string),
        ..Volume::default()
    }
}

/// A member of the machine `id` of `lab-cp`, named as k3s names it.
fn member(hex: &str, machine: &str, healthy: bool) -> MemberHealth {
    MemberHealth {
        id: hex.into(),
        name: format!("{machine}.vm.lab-cp.internal-0a1b2c3d"),
        peer_urls: vec![format!("https://[fdaa::{hex}]:2380")],
        client_urls: vec![format!("https://[fdaa::{hex}]:2379")],
        learner: false,
        leader: false,
        healthy,
        error: (!healthy).then(|| "context deadline exceeded".to_string()),
    }
}

/// The control plane of three servers m0, m1, m2 in zones z0, z1, z2, each with a member.
fn cluster() -> (State, MembersReport) {
    let state = State {
        app_exists: true,
        machines: vec![
            server("m0", "ctrl-0", MachineState::Started, "fdaa::a0"),
            server("m1", "ctrl-1", MachineState::Started, "fdaa::a1"),
            server("m2", "ctrl-2", MachineState::Started, "fdaa::a2"),
        ],
        volumes: vec![
            volume("vol_0", "z0", Some("m0")),
            volume("vol_1", "z1", Some("m1")),
            volume("vol_2", "z2", Some("m2")),
        ],
        secrets: ["K3S_TOKEN".to_string()].into(),
        control_plane: vec![],
        k8s_nodes: None,
    };
    let members = MembersReport {
        endpoint: "https://127.0.0.1:2379".into(),
        members: vec![
            member("a0", "m0", true),
            member("a1", "m1", true),
            member("a2", "m2", true),
        ],
    };
    (state, members)
}

fn options(zones: Option<usize>) -> Options {
    let files = (0..3)
        .map(|i| {
            let n = format!("ctrl-{i}");
            (
                n.clone(),
                vec![MachineFile {
                    guest_path: "/etc/ssh/ssh_host_ed25519_key".into(),
                    raw_value: Some(format!("host-key-of-{n}")),
                    mode: Some(0o600),
                    ..MachineFile::default()
                }],
            )
        })
        .collect();
    Options {
        zones,
        allow_shared_zones: false,
        k3s: true,
        node_files: files,
        extra_env: BTreeMap::new(),
        image: IMAGE.into(),
        max_unavailable: crate::plan::update::WORKER_BATCH,
    }
}

/// `kind node` per step.
fn kinds(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| {
            let kind = match &s.action {
                Action::DestroyMachine { .. } => "destroy",
                Action::RemoveMember { .. } => "remove-member",
                Action::RemoveMembersOf { .. } => "sweep-members",
                Action::DeleteNode { .. } => "delete-node",
                Action::DeleteVolume { .. } => "delete-volume",
                Action::SetFileSecrets { .. } => "secrets",
                Action::CreateVolume { .. } => "volume",
                Action::CreateMachine { .. } => "machine",
                Action::WaitStarted { .. } => "started",
                Action::WaitK3sReady { .. } => "ready",
                Action::WaitMemberHealthy { .. } => "member-healthy",
                Action::Taint { .. } => "taint",
                Action::MarkReady { .. } => "mark",
                _ => "other",
            };
            format!("{kind} {}", s.node.as_deref().unwrap_or("-"))
        })
        .collect()
}

fn create_machine(plan: &Plan) -> (&crate::fly::types::CreateMachineRequest, &Option<Ref>) {
    plan.steps
        .iter()
        .find_map(|s| match &s.action {
            Action::CreateMachine {
                request, bootstrap, ..
            } => Some((request.as_ref(), bootstrap)),
            _ => None,
        })
        .expect("a machine create")
}

fn step_of(plan: &Plan, want: &str) -> StepId {
    let k = kinds(plan);
    StepId(k.iter().position(|x| x.starts_with(want)).expect(want))
}

#[test]
fn a_running_server_is_destroyed_before_its_member_goes_and_the_new_one_joins_after() {
    let (state, members) = cluster();
    let r = replace(&lab_config(), 1, &state, &Ok(members), &options(None)).expect("plan");
    assert_eq!(
        kinds(&r.plan),
        [
            "destroy ctrl-1",
            "remove-member ctrl-1",
            "sweep-members ctrl-1",
            "delete-node ctrl-1",
            "delete-volume ctrl-1",
            "secrets -",
            "volume ctrl-1",
            "machine ctrl-1",
            "started ctrl-1",
            "ready ctrl-1",
            "member-healthy ctrl-1",
            "taint ctrl-1",
            "mark ctrl-1",
        ]
    );
    let deps = |s: &str| r.plan.steps[step_of(&r.plan, s).0].depends_on.clone();
    let destroy = step_of(&r.plan, "destroy");
    assert_eq!(deps("remove-member"), [destroy]);
    // What the old machine added after the member list was read goes once it is destroyed,
    // after the removal (never two removals of one member at once).
    let removal = step_of(&r.plan, "remove-member");
    let sweep = step_of(&r.plan, "sweep-members");
    assert_eq!(deps("sweep-members"), [destroy, removal]);
    match &r.plan.steps[sweep.0].action {
        Action::RemoveMembersOf { app, machines, via } => {
            assert_eq!(app, "lab-cp");
            assert_eq!(
                machines,
                &[GoneServer {
                    id: "m1".into(),
                    private_ip: "fdaa::a1".into()
                }]
            );
            assert_eq!(via.id, Ref::Known("m0".into()));
        }
        other => panic!("{other:?}"),
    }
    // The old Node is deleted once the removals proved etcd has a leader again.
    assert_eq!(deps("delete-node"), [removal, sweep]);
    assert_eq!(deps("delete-volume"), [destroy]);
    assert_eq!(deps("volume"), [step_of(&r.plan, "delete-volume")]);
    let machine = deps("machine");
    assert!(machine.contains(&removal), "{machine:?}");
    assert!(machine.contains(&sweep), "{machine:?}");
    assert!(machine.contains(&step_of(&r.plan, "volume")), "{machine:?}");
    match &r.plan.steps[step_of(&r.plan, "remove-member").0].action {
        Action::RemoveMember { id, via, .. } => {
            assert_eq!(id, "a1");
            assert_eq!(
                via.id,
                Ref::Known("m0".into()),
                "the lowest healthy survivor"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.old_machine.as_deref(), Some("m1"));
    assert_eq!(
        (r.quorum.voters, r.quorum.healthy, r.quorum.needed),
        (2, 2, 2)
    );
    assert_eq!(r.survivor_zones, ["z0", "z2"]);
}

#[test]
fn replacing_the_bootstrap_server_joins_a_survivor_and_never_inits_a_cluster() {
    let (state, members) = cluster();
    let r = replace(&lab_config(), 0, &state, &Ok(members), &options(None)).expect("plan");
    assert_eq!(r.via.node, "ctrl-1");
    let (request, bootstrap) = create_machine(&r.plan);
    assert_eq!(*bootstrap, Some(Ref::Known("m1".into())));
    let env = &request.config.env;
    // node init renders a joining server for ctrl-0: its index is not the bootstrap index,
    // and it joins the survivor's machine.
    assert_eq!(env[ENV_BOOTSTRAP_INDEX], "1");
    assert_eq!(env[ENV_BOOTSTRAP_MACHINE_ID], "m1");
    assert_eq!(request.config.metadata[META_ROLE], "server");
    assert!(
        request
            .config
            .files
            .iter()
            .any(|f| f.secret_name.as_deref() == Some(TOKEN_SECRET)),
        "a joining server reads the join token from its secret"
    );
    assert!(
        !format!("{request:?}").contains("host-key-of"),
        "the host key goes into a secret"
    );
    assert_eq!(request.config.image, IMAGE);
    // The bootstrap role in the plan follows the survivor.
    let roles: Vec<(&str, Role)> = r
        .plan
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.role))
        .collect();
    assert_eq!(
        roles,
        [
            ("ctrl-1", Role::BootstrapServer),
            ("ctrl-2", Role::Server),
            ("ctrl-0", Role::Server)
        ]
    );
}

#[test]
fn a_server_whose_machine_and_volume_are_gone_is_found_by_its_orphan_member() {
    let (mut state, mut members) = cluster();
    state.machines.retain(|m| m.id != "m1");
    state.volumes.retain(|v| v.id != "vol_1");
    members.members[1].healthy = false;
    let r = replace(&lab_config(), 1, &state, &Ok(members), &options(Some(3))).expect("plan");
    assert_eq!(
        kinds(&r.plan),
        [
            "remove-member ctrl-1",
            "delete-node ctrl-1",
            "secrets -",
            "volume ctrl-1",
            "machine ctrl-1",
            "started ctrl-1",
            "ready ctrl-1",
            "member-healthy ctrl-1",
            "taint ctrl-1",
            "mark ctrl-1",
        ]
    );
    assert_eq!(
        r.members,
        [(
            "a1".to_string(),
            "m1.vm.lab-cp.internal-0a1b2c3d".to_string()
        )]
    );
    // The old Node object is named after the old machine, read from the member's name.
    match &r.plan.steps[1].action {
        Action::DeleteNode { machine, .. } => assert_eq!(machine.id, Ref::Known("m1".into())),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.old_machine, None);
}

/// A replace killed after its member removal but before the old Node was deleted (the old
/// machine and volume gone, the member too): nothing names the old machine any more but its
/// Node, which the next run deletes because the survivors' Nodes list it.
#[test]
fn a_replace_killed_before_deleting_the_old_node_deletes_it_on_the_next_run() {
    let (mut state, mut members) = cluster();
    state.machines.retain(|m| m.id != "m1");
    state.volumes.retain(|v| v.id != "vol_1");
    members.members.remove(1);
    state.k8s_nodes = Some(
        ["m0", "m1", "m2"]
            .iter()
            .map(|id| format!("{id}.vm.lab-cp.internal"))
            .collect(),
    );
    let r = replace(&lab_config(), 1, &state, &Ok(members), &options(Some(3))).expect("plan");
    assert!(r.members.is_empty());
    assert_eq!(kinds(&r.plan)[0], "delete-node ctrl-1");
    match &r.plan.steps[0].action {
        Action::DeleteNode { machine, .. } => assert_eq!(machine.id, Ref::Known("m1".into())),
        other => panic!("{other:?}"),
    }
    let deletes = r
        .plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::DeleteNode { .. }))
        .count();
    assert_eq!(deletes, 1, "the survivors' Nodes stay");
}

/// A replace killed right after its destroy call: ctrl-1's machine is still `destroying` and
/// holds its volume. The next run waits for that destroy before deleting the volume, and
/// deletes that machine's Node.
#[test]
fn a_destroying_old_machine_is_waited_for_before_its_volume_goes() {
    let (mut state, mut members) = cluster();
    state.machines[1].state = MachineState::Destroying;
    members.members[1].healthy = false;
    let r = replace(&lab_config(), 1, &state, &Ok(members), &options(Some(3))).expect("plan");
    assert_eq!(r.old_machine, None);
    let k = kinds(&r.plan);
    assert_eq!(k[0], "destroy ctrl-1", "{k:?}");
    let destroy = r.plan.steps[0].id;
    let vol = r
        .plan
        .steps
        .iter()
        .find(|s| matches!(&s.action, Action::DeleteVolume { volume, .. } if volume == "vol_1"))
        .expect("ctrl-1's volume deleted");
    assert_eq!(vol.depends_on, [destroy]);
    let node = r
        .plan
        .steps
        .iter()
        .find(|s| matches!(s.action, Action::DeleteNode { .. }))
        .expect("its Node deleted");
    match &node.action {
        Action::DeleteNode { machine, .. } => assert_eq!(machine.id, Ref::Known("m1".into())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_replacement_that_would_break_quorum_is_refused_saying_why() {
    let (state, mut members) = cluster();
    // ctrl-2 is down: replacing ctrl-1 would leave ctrl-0 alone of 2 voters.
    members.members[2].healthy = false;
    members.members[2].error = Some("context deadline exceeded".into());
    let e = replace(
        &lab_config(),
        1,
        &state,
        &Ok(members.clone()),
        &options(None),
    )
    .expect_err("quorum");
    let text = e.to_string();
    assert!(
        text.starts_with("refusing to replace ctrl-1 in app lab-cp: after removing its etcd member, 2 voting member(s) would remain, 1 of them healthy, but etcd needs 2 healthy (a majority)"),
        "{text}"
    );
    assert!(
        text.contains("ctrl-2 (unhealthy: context deadline exceeded)"),
        "{text}"
    );
    assert!(text.ends_with("(nothing was changed)"), "{text}");
    // Two servers down: even replacing one of the dead ones leaves 1 healthy of 2.
    members.members[1].healthy = false;
    assert!(replace(&lab_config(), 1, &state, &Ok(members), &options(None)).is_err());
    // No member list at all: refused, quorum cannot be checked.
    let e = replace(
        &lab_config(),
        1,
        &state,
        &Err("exec failed".into()),
        &options(None),
    )
    .expect_err("no list");
    assert!(e.to_string().contains("could not be read"), "{e}");
}

#[test]
fn no_healthy_started_survivor_to_act_through_is_refused() {
    let (mut state, mut members) = cluster();
    // Four voters (a stale extra member counts), ctrl-0 stopped but its member somehow
    // healthy: quorum holds but the only started survivor's member is a learner.
    state.machines[0].state = MachineState::Stopped;
    members.members[2].learner = true;
    members.members.push(member("a9", "m9", true));
    let e = replace(&lab_config(), 1, &state, &Ok(members), &options(None)).expect_err("via");
    assert!(
        e.to_string().contains("no surviving server is started"),
        "{e}"
    );
}

#[test]
fn the_new_volume_asks_for_a_zone_apart_from_the_survivors() {
    let (state, members) = cluster();
    let r = replace(
        &lab_config(),
        2,
        &state,
        &Ok(members.clone()),
        &options(Some(3)),
    )
    .expect("plan");
    let create = r
        .plan
        .steps
        .iter()
        .find_map(|s| match &s.action {
            Action::CreateVolume {
                request,
                share_if_full,
                ..
            } => Some((request.clone(), *share_if_full)),
            _ => None,
        })
        .expect("volume");
    assert_eq!(create.0.require_unique_zone, Some(true));
    assert!(!create.1);
    assert_eq!(r.survivor_zones, ["z0", "z1"]);
    // A region of 2 zones has none apart from the survivors': refused, unless sharing is
    // allowed.
    let e = replace(
        &lab_config(),
        2,
        &state,
        &Ok(members.clone()),
        &options(Some(2)),
    )
    .expect_err("no zone");
    assert!(matches!(e, Error::ZoneShortage { zones: 2, .. }), "{e}");
    let mut shared = options(Some(2));
    shared.allow_shared_zones = true;
    let r = replace(&lab_config(), 2, &state, &Ok(members), &shared).expect("shared");
    let unique = r.plan.steps.iter().find_map(|s| match &s.action {
        Action::CreateVolume { request, .. } => request.require_unique_zone,
        _ => None,
    });
    assert_eq!(unique, Some(false));
}

#[test]
fn a_spare_volume_is_deleted_not_reused_and_a_stuck_learner_goes_too() {
    let (mut state, mut members) = cluster();
    state.machines.retain(|m| m.id != "m1");
    // ctrl-1's volume left unattached when its machine went.
    state.volumes[1].attached_machine_id = None;
    members.members[1].healthy = false;
    // A learner an interrupted replacement added, on an address no live server has.
    members.members.push(MemberHealth {
        id: "b7".into(),
        name: String::new(),
        peer_urls: vec!["https://[fdaa::77]:2380".into()],
        learner: true,
        ..member("b7", "x", false)
    });
    let r = replace(&lab_config(), 1, &state, &Ok(members), &options(None)).expect("plan");
    let k = kinds(&r.plan);
    assert_eq!(
        k.iter().filter(|s| s.starts_with("remove-member")).count(),
        2,
        "{k:?}"
    );
    assert!(k.contains(&"delete-volume ctrl-1".to_string()), "{k:?}");
    let reused = r.plan.steps.iter().any(|s| {
        matches!(
            &s.action,
            Action::CreateMachine {
                volume: Ref::Known(_),
                ..
            }
        )
    });
    assert!(!reused, "the old volume holds a removed member's data");
}

#[test]
fn the_dry_run_lists_every_step_and_where_it_runs() {
    let (state, members) = cluster();
    let r = replace(&lab_config(), 0, &state, &Ok(members), &options(None)).expect("plan");
    let text = r.plan.to_string();
    for want in [
        "ctrl-1               server (bootstrap)  machine m1, zone z1",
        "ctrl-0               server              machine to create, zone new volume",
        "[0]  ctrl-0: remove machine m0 in app lab-cp",
        "[1]  ctrl-0: remove etcd member a0 (m0.vm.lab-cp.internal-0a1b2c3d) through the etcd of machine m1 (node etcd remove)  (after [0])",
        "[2]  ctrl-0: remove any etcd member of destroyed machine(s) m0 still listed, through the etcd of machine m1 (node etcd remove)  (after [0] [1])",
        "ctrl-0: create machine ctrl-0 in app lab-cp (server,",
        ", joins m1, token from secret K3S_TOKEN)",
        "ctrl-0: wait until the etcd member of machine <made by [7]> is a healthy voter (asked on m1)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let lines = r.describe();
    assert_eq!(lines[0], "destroy machine m0 (ctrl-0) in app lab-cp");
    assert_eq!(lines.len(), r.plan.steps.len());
    assert!(replace(
        &lab_config(),
        3,
        &state,
        &Err(String::new()),
        &options(None)
    )
    .is_err());
    assert_eq!(server_index("ctrl-2"), Some(2));
    assert_eq!(server_index("ctrl-3"), None);
    assert_eq!(server_index("worker-ng-a-0"), None);
}

#[test]
fn the_members_of_destroyed_machines_are_found_by_name_or_unnamed_by_peer_address() {
    let gone = [
        GoneServer {
            id: "m1".into(),
            private_ip: "fdaa::b1".into(),
        },
        GoneServer {
            id: "m3".into(),
            private_ip: String::new(),
        },
    ];
    let mut unnamed = member("b1", "x", false);
    unnamed.name = String::new();
    let mut unnamed_other = member("c9", "x", false);
    unnamed_other.name = String::new();
    let mut named_elsewhere = member("b1", "m0", true);
    named_elsewhere.id = "d0".into();
    let members = [
        member("a0", "m0", true),
        member("a1", "m1", false),
        unnamed,
        unnamed_other,
        named_elsewhere,
        member("a3", "m3", true),
    ];
    let found: Vec<&str> = members_of(&members, "lab-cp", &gone)
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    // A named member is its node's, whatever its peer address; an unnamed one (added, never
    // started) is known by its peer address only.
    assert_eq!(found, ["a1", "b1", "a3"]);
    assert!(members_of(&members, "other-cp", &gone)
        .iter()
        .all(|m| m.name.is_empty()));
}
