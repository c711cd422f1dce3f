//! Scale down and group removal (issue 11 item 3): the plan phase that removes worker nodes
//! of one node group, for `-a GROUP` after `NODE_GROUP_SIZE` was lowered (the highest-index
//! nodes go) and for `nodegroup remove GROUP` (every node, then the group's secrets and app).
//!
//! Each removed node goes: cordon (all removed nodes first, so pods evicted from one do not
//! land on another), drain one node at a time (`kubectl drain` evicts through the Eviction
//! API, which honours PodDisruptionBudgets), destroy the machine, delete the Kubernetes node,
//! delete the volume. The Node object is deleted after its machine is gone, not before: an
//! agent still running can register its Node again (k3s-standin does at its next heartbeat; a
//! kubelet does when it restarts, and whether it does without a restart is not verified
//! here), which would leave a NotReady node behind. Volumes go after machines
//! (a volume stays attached until its machine is gone), the app after everything.
//!
//! A run killed part-way leaves what it had not removed yet: a Node whose machine is gone, a
//! volume whose machine is gone, a machine still `destroying`. The next run finds them from
//! what it observes (the Nodes a server lists, the app's volumes and machines) and finishes
//! the job: [`stale_nodes`] are deleted, spare volumes deleted, a `destroying` machine's
//! destroy waited for before its volume goes.
//!
//! Pure: no tokio, no network, no clock. Must not: plan anything for the control-plane app
//! or for a machine whose `fks_role` is `server`; remove a node not named
//! `worker-ng-<group>-<i>` when scaling down; act on a machine that is not this cluster's.

use std::collections::BTreeSet;

use super::destroy::{check_ownership, removal_line};
use super::{
    Action, AppState, Builder, Error, MachineRef, Plan, Ref, Role, StepId, META_CLUSTER, META_NODE,
    META_ROLE,
};
use crate::fly::types::{Machine, MachineState, Volume};

/// The k3s side of the removal is planned through this started server (kubectl runs there).
/// `None` plans machines and volumes only (`--machines-only`: no k3s runs).
pub type Via = Option<MachineRef>;

/// A node group's index from its node name: `worker-ng-web-4` in group `web` is 4.
pub fn node_index(group: &str, node: &str) -> Option<u32> {
    node.strip_prefix(&format!("worker-ng-{group}-"))?
        .parse()
        .ok()
}

fn live(m: &Machine) -> bool {
    !matches!(m.state, MachineState::Destroyed | MachineState::Destroying)
}

/// Not destroyed yet: a `destroying` machine (its destroy sent by a run that was then killed)
/// still holds its volume until it is gone.
fn present(m: &Machine) -> bool {
    m.state != MachineState::Destroyed
}

/// The machine ids of the Kubernetes Nodes of `app` among `k8s_nodes` whose machine is gone
/// (no machine of `machines` that is not destroyed has that id): what a run killed between a
/// machine's destroy and its Node's delete leaves. Sorted, without repeats.
pub fn stale_nodes(app: &str, k8s_nodes: &[String], machines: &[Machine]) -> Vec<String> {
    let present: BTreeSet<&str> = machines
        .iter()
        .filter(|m| present(m))
        .map(|m| m.id.as_str())
        .collect();
    k8s_nodes
        .iter()
        .filter_map(|n| crate::run::k3s::machine_of_k3s_node(n, app))
        .filter(|id| !present.contains(id))
        .map(str::to_string)
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect()
}

/// The volumes of the app that no machine holds any more (unattached, or attached to a
/// machine that is destroyed) and that `reused` does not name: spares of an interrupted run.
fn spare_volumes<'a>(
    volumes: &'a [Volume],
    machines: &[Machine],
    reused: &BTreeSet<&str>,
) -> Vec<&'a Volume> {
    let mut out: Vec<&Volume> = volumes
        .iter()
        .filter(|v| !v.state.is_being_destroyed() && !reused.contains(v.id.as_str()))
        .filter(|v| {
            v.attached_machine_id
                .as_deref()
                .filter(|a| !a.is_empty())
                .is_none_or(|a| !machines.iter().any(|m| m.id == a && present(m)))
        })
        .collect();
    out.sort_by(|x, y| x.id.cmp(&y.id));
    out
}

/// A [`Action::DeleteNode`] for each of `ids` (machines gone), through `via`.
fn delete_stale_nodes(b: &mut Builder, app: &str, ids: &[String], via: &MachineRef) -> Vec<StepId> {
    ids.iter()
        .map(|id| {
            b.push(
                None,
                Action::DeleteNode {
                    machine: MachineRef {
                        app: app.to_string(),
                        id: Ref::Known(id.clone()),
                    },
                    via: via.clone(),
                },
                vec![],
            )
        })
        .collect()
}

fn node_name(m: &Machine) -> &str {
    m.metadata(META_NODE).unwrap_or(&m.name)
}

/// Refuses a server machine in a node group's app: this path never touches the control plane.
fn refuse_servers(app: &str, machines: &[&Machine]) -> Result<(), Error> {
    match machines
        .iter()
        .find(|m| m.metadata(META_ROLE) == Some(Role::Server.as_str()))
    {
        Some(m) => Err(Error::ServerInGroup {
            app: app.to_string(),
            machine: m.id.clone(),
            node: node_name(m).to_string(),
        }),
        None => Ok(()),
    }
}

/// The machines of `cluster` in the group's app whose index is `keep` or more and that are not
/// destroyed (a `destroying` one included), highest index first (the ones a lowered
/// `NODE_GROUP_SIZE` removes).
pub fn surplus<'a>(
    cluster: &str,
    group: &str,
    keep: u32,
    machines: &'a [Machine],
) -> Vec<(u32, &'a Machine)> {
    let mut out: Vec<(u32, &Machine)> = machines
        .iter()
        .filter(|m| present(m) && m.metadata(META_CLUSTER) == Some(cluster))
        .filter_map(|m| node_index(group, node_name(m)).map(|i| (i, m)))
        .filter(|(i, _)| *i >= keep)
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    out
}

/// What [`nodes`] planned: the machine-destroy and volume-delete steps (the barriers the
/// group removal's later phases wait for).
#[derive(Debug, Default)]
pub struct Removed {
    /// The `DestroyMachine` steps.
    pub machines: Vec<StepId>,
    /// The `DeleteNode` and `DeleteVolume` steps.
    pub after_machines: Vec<StepId>,
}

/// Pushes the removal of `machines` (in the order given) onto `b`: cordon each (through
/// `via`), drain them one after the other, destroy each machine once drained, then delete its
/// Kubernetes node and its attached volume. `after` are the steps the first ones wait for.
/// A machine already `destroying` (an interrupted run sent its destroy) is not cordoned or
/// drained, nothing runs there any more: its destroy is sent again and waited for (the lab
/// answers a destroy of a `destroying` machine with 200; what Fly answers is not documented),
/// so its volume is free to delete.
pub(super) fn nodes(
    b: &mut Builder,
    app: &str,
    machines: &[&Machine],
    volumes: &[Volume],
    via: &Via,
    after: &[StepId],
) -> Removed {
    let mut out = Removed::default();
    let refs: Vec<MachineRef> = machines
        .iter()
        .map(|m| MachineRef {
            app: app.to_string(),
            id: Ref::Known(m.id.clone()),
        })
        .collect();
    let mut cordons = Vec::new();
    if let Some(via) = via {
        for (m, r) in machines.iter().zip(&refs).filter(|(m, _)| live(m)) {
            cordons.push(b.push(
                Some(node_name(m)),
                Action::Cordon {
                    machine: r.clone(),
                    via: via.clone(),
                },
                after.to_vec(),
            ));
        }
    }
    let mut last_drain: Option<StepId> = None;
    for (m, r) in machines.iter().zip(&refs) {
        let node = node_name(m);
        let before_destroy = match via {
            Some(via) if live(m) => {
                let mut deps = cordons.clone();
                deps.extend(last_drain);
                let drain = b.push(
                    Some(node),
                    Action::Drain {
                        machine: r.clone(),
                        via: via.clone(),
                    },
                    deps,
                );
                last_drain = Some(drain);
                vec![drain]
            }
            _ => after.to_vec(),
        };
        let destroy = b.push(
            Some(node),
            Action::DestroyMachine { machine: r.clone() },
            before_destroy,
        );
        out.machines.push(destroy);
        if let Some(via) = via {
            out.after_machines.push(b.push(
                Some(node),
                Action::DeleteNode {
                    machine: r.clone(),
                    via: via.clone(),
                },
                vec![destroy],
            ));
        }
        let mut attached: Vec<&Volume> = volumes
            .iter()
            .filter(|v| !v.state.is_being_destroyed())
            .filter(|v| v.attached_machine_id.as_deref() == Some(m.id.as_str()))
            .collect();
        attached.sort_by(|x, y| x.id.cmp(&y.id));
        for v in attached {
            out.after_machines.push(b.push(
                Some(node),
                Action::DeleteVolume {
                    app: app.to_string(),
                    volume: v.id.clone(),
                    name: v.name.clone(),
                    zone: v.zone.clone(),
                },
                vec![destroy],
            ));
        }
    }
    out
}

/// What an interrupted removal may have left, as observed, for [`scale_down`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Leftovers<'a> {
    /// The Kubernetes Node names a server listed (`None`: not read; stale Nodes are then not
    /// looked for).
    pub k8s_nodes: Option<&'a [String]>,
    /// The volumes the converge phase reuses for nodes it makes (not spares).
    pub reused: &'a BTreeSet<&'a str>,
}

/// The scale-down phase of `-a GROUP` (appended to the converge plan by [`super::plan`]):
/// removes the nodes of index `keep` (= `NODE_GROUP_SIZE`) or more that are not destroyed.
/// Their machines are checked to be this cluster's agents. What a killed run left is finished
/// too: the Nodes of machines that are gone ([`stale_nodes`]) and the volumes no machine holds
/// that the converge phase does not reuse.
#[allow(clippy::too_many_arguments)]
pub(super) fn scale_down(
    b: &mut Builder,
    cluster: &str,
    group: &str,
    keep: u32,
    app: &str,
    machines: &[Machine],
    volumes: &[Volume],
    via: &Via,
    left: Leftovers<'_>,
) -> Result<(), Error> {
    let doomed: Vec<&Machine> = surplus(cluster, group, keep, machines)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    refuse_servers(app, &doomed)?;
    nodes(b, app, &doomed, volumes, via, &[]);
    if let (Some(via), Some(k8s)) = (via, left.k8s_nodes) {
        delete_stale_nodes(b, app, &stale_nodes(app, k8s, machines), via);
    }
    for v in spare_volumes(volumes, machines, left.reused) {
        b.push(
            None,
            Action::DeleteVolume {
                app: app.to_string(),
                volume: v.id.clone(),
                name: v.name.clone(),
                zone: v.zone.clone(),
            },
            vec![],
        );
    }
    Ok(())
}

/// A node group removal: the plan and one line per removal for the dry run and the
/// confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRemoval {
    /// The steps; empty when the group's app does not exist.
    pub plan: Plan,
}

impl GroupRemoval {
    /// One line per step in plan order, in words: what the dry run and the confirmation show.
    pub fn describe(&self) -> Vec<String> {
        self.plan
            .steps
            .iter()
            .filter_map(|s| step_line(&s.action, s.node.as_deref()))
            .collect()
    }
}

/// A removal step in words: `drain the k3s node of machine c3 (worker-ng-web-0) ...`,
/// `destroy machine c3 (worker-ng-web-0) in app lab-ng-web`, `delete app lab-ng-web`.
pub fn step_line(action: &Action, node: Option<&str>) -> Option<String> {
    let of = |m: &MachineRef| match node {
        Some(node) => format!("machine {} ({node})", m.id),
        None => format!("machine {}", m.id),
    };
    Some(match action {
        Action::Cordon { machine, .. } => format!("cordon the k3s node of {}", of(machine)),
        Action::Drain { machine, .. } => format!(
            "drain the k3s node of {} (evictions honour PodDisruptionBudgets)",
            of(machine)
        ),
        Action::DeleteNode { machine, .. } => {
            format!("delete the k3s node of {}", of(machine))
        }
        Action::DestroyMachine { .. } => format!("destroy {}", removal_line(action, node)?),
        other => format!("delete {}", removal_line(other, node)?),
    })
}

/// Plans `nodegroup remove GROUP`: every node of the group's app that is not destroyed
/// (highest index first) cordoned, drained, destroyed, its node and volume deleted; the Nodes
/// among `k8s_nodes` (when read) whose machines are gone ([`stale_nodes`]: an interrupted
/// run's) deleted; then any other volume and every secret of the app; then the app.
/// `group_app` is `None` when the app does not exist.
pub fn remove_group(
    cluster: &str,
    group_app: Option<&AppState>,
    via: &Via,
    k8s_nodes: Option<&[String]>,
) -> Result<GroupRemoval, Error> {
    let mut b = Builder { steps: Vec::new() };
    let Some(app) = group_app else {
        return Ok(GroupRemoval {
            plan: empty_plan(cluster, String::new(), &b),
        });
    };
    check_ownership(cluster, std::slice::from_ref(app))?;
    let mut doomed: Vec<&Machine> = app.machines.iter().filter(|m| present(m)).collect();
    // Highest index first, as a scale-down to 0; names that are no index sort after.
    doomed.sort_by(|x, y| {
        let key = |m: &Machine| {
            let name = node_name(m);
            let index = name.rsplit('-').next().and_then(|i| i.parse::<u32>().ok());
            (std::cmp::Reverse(index), name.to_string(), m.id.clone())
        };
        key(x).cmp(&key(y))
    });
    refuse_servers(&app.app, &doomed)?;
    let removed = nodes(&mut b, &app.app, &doomed, &app.volumes, via, &[]);
    // Volumes no live machine holds (spares of an interrupted run) go with the others.
    let mut spare: Vec<&Volume> = app
        .volumes
        .iter()
        .filter(|v| !v.state.is_being_destroyed())
        .filter(|v| {
            !doomed
                .iter()
                .any(|m| v.attached_machine_id.as_deref() == Some(m.id.as_str()))
        })
        .collect();
    spare.sort_by(|x, y| x.id.cmp(&y.id));
    let mut barrier = removed.after_machines.clone();
    barrier.extend(&removed.machines);
    if let (Some(via), Some(k8s)) = (via, k8s_nodes) {
        let stale = stale_nodes(&app.app, k8s, &app.machines);
        barrier.extend(delete_stale_nodes(&mut b, &app.app, &stale, via));
    }
    for v in spare {
        barrier.push(b.push(
            None,
            Action::DeleteVolume {
                app: app.app.clone(),
                volume: v.id.clone(),
                name: v.name.clone(),
                zone: v.zone.clone(),
            },
            removed.machines.clone(),
        ));
    }
    let mut secrets = Vec::new();
    for s in &app.secrets {
        secrets.push(b.push(
            None,
            Action::DeleteSecret {
                app: app.app.clone(),
                name: s.clone(),
            },
            barrier.clone(),
        ));
    }
    barrier.extend(secrets);
    b.push(
        None,
        Action::DeleteApp {
            app: app.app.clone(),
        },
        barrier,
    );
    Ok(GroupRemoval {
        plan: empty_plan(cluster, app.app.clone(), &b),
    })
}

fn empty_plan(cluster: &str, app: String, b: &Builder) -> Plan {
    Plan {
        cluster: cluster.to_string(),
        app,
        nodes: Vec::new(),
        steps: b.steps.clone(),
        k3s: true,
        observed_volumes: Default::default(),
        keep_going: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::types::MachineConfig;

    fn machine(id: &str, node: &str, role: &str) -> Machine {
        let mut config = MachineConfig::default();
        config.metadata.insert(META_CLUSTER.into(), "lab".into());
        config.metadata.insert(META_NODE.into(), node.into());
        config.metadata.insert(META_ROLE.into(), role.into());
        Machine {
            id: id.into(),
            name: node.into(),
            state: MachineState::Started,
            config: Some(config),
            ..Machine::default()
        }
    }

    fn volume(id: &str, zone: &str, attached: Option<&str>) -> Volume {
        Volume {
            id: id.into(),
            name: "lab_data".into(),
            zone: zone.into(),
            attached_machine_id: attached.map(str::to_string),
            ..Volume::default()
        }
    }

    fn group() -> AppState {
        AppState {
            app: "lab-ng-web".into(),
            machines: vec![
                machine("m0", "worker-ng-web-0", "agent"),
                machine("m2", "worker-ng-web-2", "agent"),
                machine("m1", "worker-ng-web-1", "agent"),
                Machine {
                    state: MachineState::Destroyed,
                    ..machine("gone", "worker-ng-web-3", "agent")
                },
            ],
            volumes: vec![
                volume("vol_0", "z1", Some("m0")),
                volume("vol_1", "z2", Some("m1")),
                volume("vol_2", "z3", Some("m2")),
            ],
            secrets: ["K3S_TOKEN".to_string()].into(),
        }
    }

    /// The plan of shrinking group `web` of cluster `lab` (app `app`) to `keep` nodes.
    fn shrink(app: &AppState, keep: u32, via: &Via, leftovers: Leftovers) -> Plan {
        let mut b = Builder { steps: Vec::new() };
        scale_down(
            &mut b,
            "lab",
            "web",
            keep,
            &app.app,
            &app.machines,
            &app.volumes,
            via,
            leftovers,
        )
        .expect("plan");
        empty_plan("lab", app.app.clone(), &b)
    }

    /// Group `web` after a run killed right after destroying worker 2's machine: its volume is
    /// detached, its Node still listed with the others.
    fn killed_after_destroying_worker_2() -> (AppState, Vec<String>) {
        let mut app = group();
        app.machines.retain(|m| m.id != "m2");
        app.volumes[2].attached_machine_id = None;
        let nodes = k8s(&[
            "m0.vm.lab-ng-web.internal",
            "m1.vm.lab-ng-web.internal",
            "m2.vm.lab-ng-web.internal",
        ]);
        (app, nodes)
    }

    fn no_leftovers() -> Leftovers<'static> {
        static NONE: BTreeSet<&str> = BTreeSet::new();
        Leftovers {
            k8s_nodes: None,
            reused: &NONE,
        }
    }

    fn via() -> Via {
        Some(MachineRef {
            app: "lab-cp".into(),
            id: Ref::Known("s0".into()),
        })
    }

    fn kinds(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| {
                let kind = match &s.action {
                    Action::Cordon { .. } => "cordon",
                    Action::Drain { .. } => "drain",
                    Action::DestroyMachine { .. } => "destroy",
                    Action::DeleteNode { .. } => "delete-node",
                    Action::DeleteVolume { .. } => "volume",
                    Action::DeleteSecret { .. } => "secret",
                    Action::DeleteApp { .. } => "app",
                    _ => "other",
                };
                format!("{kind} {}", s.node.as_deref().unwrap_or("-"))
            })
            .collect()
    }

    #[test]
    fn surplus_is_the_highest_indexes_of_this_cluster_only() {
        let mut app = group();
        app.machines.push(Machine {
            config: Some(MachineConfig::default()),
            ..machine("x", "worker-ng-web-7", "agent")
        });
        app.machines
            .push(machine("o", "worker-ng-webby-5", "agent"));
        let picked: Vec<(u32, &str)> = surplus("lab", "web", 1, &app.machines)
            .into_iter()
            .map(|(i, m)| (i, m.id.as_str()))
            .collect();
        assert_eq!(picked, [(2, "m2"), (1, "m1")]);
        assert!(surplus("lab", "web", 3, &app.machines).is_empty());
        assert_eq!(node_index("web", "worker-ng-web-12"), Some(12));
        assert_eq!(node_index("web", "worker-ng-web2-1"), None);
    }

    #[test]
    fn scale_down_drains_before_destroy_and_destroys_before_node_and_volume() {
        let app = group();
        let plan = shrink(&app, 1, &via(), no_leftovers());
        assert_eq!(
            kinds(&plan),
            [
                "cordon worker-ng-web-2",
                "cordon worker-ng-web-1",
                "drain worker-ng-web-2",
                "destroy worker-ng-web-2",
                "delete-node worker-ng-web-2",
                "volume worker-ng-web-2",
                "drain worker-ng-web-1",
                "destroy worker-ng-web-1",
                "delete-node worker-ng-web-1",
                "volume worker-ng-web-1",
            ]
        );
        let deps: Vec<Vec<usize>> = plan
            .steps
            .iter()
            .map(|s| s.depends_on.iter().map(|d| d.0).collect())
            .collect();
        // Drains wait for every cordon and run one at a time; each destroy waits for its
        // drain; node and volume deletes wait for the destroy.
        assert_eq!(
            deps,
            [
                vec![],
                vec![],
                vec![0, 1],
                vec![2],
                vec![3],
                vec![3],
                vec![0, 1, 2],
                vec![6],
                vec![7],
                vec![7],
            ]
        );
        match &plan.steps[5].action {
            Action::DeleteVolume { volume, .. } => assert_eq!(volume, "vol_2"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            plan.mutations(),
            4,
            "destroys and volume deletes are on Fly"
        );
    }

    #[test]
    fn machines_only_scale_down_destroys_machines_and_volumes_without_kubectl() {
        let app = group();
        let plan = shrink(&app, 2, &None, no_leftovers());
        assert_eq!(
            kinds(&plan),
            ["destroy worker-ng-web-2", "volume worker-ng-web-2"]
        );
    }

    #[test]
    fn a_server_in_a_group_app_is_refused() {
        let mut app = group();
        app.machines
            .push(machine("s9", "worker-ng-web-5", "server"));
        let mut b = Builder { steps: Vec::new() };
        let e = scale_down(
            &mut b,
            "lab",
            "web",
            1,
            &app.app,
            &app.machines,
            &app.volumes,
            &via(),
            no_leftovers(),
        )
        .expect_err("server");
        assert!(e.to_string().contains("s9"), "{e}");
        assert!(remove_group("lab", Some(&app), &via(), None).is_err());
    }

    #[test]
    fn group_removal_removes_nodes_then_volumes_then_secrets_then_the_app() {
        let mut app = group();
        app.volumes.push(volume("vol_9", "z1", None));
        let r = remove_group("lab", Some(&app), &via(), None).expect("plan");
        let k = kinds(&r.plan);
        assert_eq!(
            k[..3],
            [
                "cordon worker-ng-web-2",
                "cordon worker-ng-web-1",
                "cordon worker-ng-web-0"
            ]
        );
        assert_eq!(
            k[k.len() - 3..],
            ["volume -", "secret -", "app -"],
            "the spare volume, the secret, then the app"
        );
        let pos = |want: &str| k.iter().position(|x| x == want).expect(want);
        for n in 0..3 {
            let node = format!("worker-ng-web-{n}");
            assert!(pos(&format!("drain {node}")) < pos(&format!("destroy {node}")));
            assert!(pos(&format!("destroy {node}")) < pos(&format!("volume {node}")));
        }
        let app_step = r.plan.steps.last().expect("app");
        let secret = &r.plan.steps[r.plan.steps.len() - 2];
        assert!(app_step.depends_on.contains(&secret.id));
        for s in &r.plan.steps {
            if matches!(
                s.action,
                Action::DestroyMachine { .. } | Action::DeleteVolume { .. }
            ) {
                assert!(secret.depends_on.contains(&s.id), "{s}");
            }
        }
        let lines = r.describe();
        assert_eq!(
            lines[0],
            "cordon the k3s node of machine m2 (worker-ng-web-2)"
        );
        assert!(lines.contains(
            &"drain the k3s node of machine m0 (worker-ng-web-0) (evictions honour PodDisruptionBudgets)"
                .to_string()
        ));
        assert!(
            lines.contains(&"destroy machine m1 (worker-ng-web-1) in app lab-ng-web".to_string())
        );
        assert!(lines
            .contains(&"delete volume vol_9 (lab_data, zone z1) in app lab-ng-web".to_string()));
        assert_eq!(
            lines.last().map(String::as_str),
            Some("delete app lab-ng-web")
        );
    }

    #[test]
    fn removing_a_missing_group_plans_nothing_and_a_foreign_machine_stops_it() {
        assert!(remove_group("lab", None, &via(), None)
            .expect("plan")
            .plan
            .is_empty());
        let mut app = group();
        app.machines[0].config = Some(MachineConfig::default());
        let e = remove_group("lab", Some(&app), &via(), None).expect_err("foreign");
        assert!(e.to_string().contains("m0"), "{e}");
    }

    #[test]
    fn the_dry_run_text_shows_the_kubectl_steps_and_where_they_run() {
        let r = remove_group("lab", Some(&group()), &via(), None).expect("plan");
        let text = r.plan.to_string();
        assert!(
            text.contains("[0]  worker-ng-web-2: cordon k3s node of machine m2 (kubectl on s0)"),
            "{text}"
        );
        assert!(
            text.contains("drain k3s node of machine m2 --ignore-daemonsets --delete-emptydir-data (kubectl on s0)"),
            "{text}"
        );
        assert!(
            text.contains("delete k3s node of machine m2 (kubectl on s0)"),
            "{text}"
        );
    }

    fn k8s(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn stale_nodes_are_this_apps_nodes_whose_machine_is_gone() {
        let app = group();
        let nodes = k8s(&[
            "m0.vm.lab-ng-web.internal",
            "m9.vm.lab-ng-web.internal",
            "gone.vm.lab-ng-web.internal",
            "m9.vm.lab-ng-web.internal",
            "s0.vm.lab-cp.internal",
            "m8.vm.lab-ng-webby.internal",
        ]);
        // `gone` is destroyed: its Node is stale too.
        assert_eq!(
            stale_nodes("lab-ng-web", &nodes, &app.machines),
            ["gone", "m9"]
        );
    }

    /// A scale-down killed after destroying worker 2's machine: the next run deletes its Node
    /// (listed, machine gone) and its volume (attached to nothing), and touches nothing else.
    #[test]
    fn a_scale_down_killed_after_the_destroy_is_finished_by_the_next_run() {
        let (mut app, nodes) = killed_after_destroying_worker_2();
        let reused = BTreeSet::new();
        let plan = shrink(
            &app,
            2,
            &via(),
            Leftovers {
                k8s_nodes: Some(&nodes),
                reused: &reused,
            },
        );
        assert_eq!(kinds(&plan), ["delete-node -", "volume -"]);
        match (&plan.steps[0].action, &plan.steps[1].action) {
            (Action::DeleteNode { machine, .. }, Action::DeleteVolume { volume, .. }) => {
                assert_eq!(machine.id, Ref::Known("m2".into()));
                assert_eq!(volume, "vol_2");
            }
            other => panic!("{other:?}"),
        }
        // Converged (the Node gone too): nothing.
        let nodes = k8s(&["m0.vm.lab-ng-web.internal", "m1.vm.lab-ng-web.internal"]);
        app.volumes.truncate(2);
        let plan = shrink(
            &app,
            2,
            &via(),
            Leftovers {
                k8s_nodes: Some(&nodes),
                reused: &reused,
            },
        );
        assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    }

    /// Killed right after the destroy call: the machine is still `destroying` and holds its
    /// volume. It is not cordoned or drained; its destroy is waited for, then its Node and
    /// volume go.
    #[test]
    fn a_destroying_surplus_machine_is_destroyed_then_its_node_and_volume_deleted() {
        let mut app = group();
        app.machines[1].state = MachineState::Destroying;
        let plan = shrink(&app, 2, &via(), no_leftovers());
        assert_eq!(
            kinds(&plan),
            [
                "destroy worker-ng-web-2",
                "delete-node worker-ng-web-2",
                "volume worker-ng-web-2"
            ]
        );
    }

    #[test]
    fn a_spare_volume_the_converge_phase_reuses_is_kept() {
        let mut app = group();
        app.volumes.push(volume("vol_9", "z1", None));
        app.volumes.push(volume("vol_8", "z2", Some("gone")));
        let reused: BTreeSet<&str> = ["vol_9"].into();
        let plan = shrink(
            &app,
            3,
            &via(),
            Leftovers {
                k8s_nodes: None,
                reused: &reused,
            },
        );
        assert_eq!(kinds(&plan), ["volume -"]);
        match &plan.steps[0].action {
            Action::DeleteVolume { volume, .. } => assert_eq!(volume, "vol_8"),
            other => panic!("{other:?}"),
        }
    }

    /// A group removal killed after destroying worker 2: its Node (machine gone) is deleted
    /// before the app goes.
    #[test]
    fn a_group_removal_deletes_the_nodes_of_machines_already_gone() {
        let (app, nodes) = killed_after_destroying_worker_2();
        let r = remove_group("lab", Some(&app), &via(), Some(&nodes)).expect("plan");
        let stale = r
            .plan
            .steps
            .iter()
            .find(|s| {
                matches!(&s.action, Action::DeleteNode { machine, .. } if machine.id == Ref::Known("m2".into()))
            })
            .expect("the stale Node deleted");
        let app_step = r.plan.steps.last().expect("app");
        assert!(matches!(app_step.action, Action::DeleteApp { .. }));
        let secret = &r.plan.steps[r.plan.steps.len() - 2];
        assert!(secret.depends_on.contains(&stale.id), "{secret}");
        assert!(r
            .describe()
            .contains(&"delete the k3s node of machine m2".to_string()));
    }
}
