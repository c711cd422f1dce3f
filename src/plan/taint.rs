//! The taint plan (`fks-bootstrap taint`, k3s.sh's `-t`): from the control-plane app as the
//! observer read it, one [`Action::Taint`] step per server of this cluster
//! (`CriticalAddonsOnly=true:NoExecute`, reference/k3s-sh-behaviour.md "Operator side"), each
//! run with `k3s kubectl` on the first started server by node name whose exec call answers
//! (the others follow in order as the step's fallback). The steps do not depend on each
//! other and the plan keeps going after a failure ([`Plan::keep_going`]): one node that
//! cannot be tainted does not stop the others.
//!
//! Pure: no tokio, no network, no clock. Must not: plan a step for, or run kubectl on, a
//! machine without `fks_cluster=<cluster>` metadata, or one marked as an agent; plan anything
//! but taints (no machine, volume or metadata change).

use super::{Action, AppState, Builder, Error, MachineRef, Plan, Ref, META_NODE, META_ROLE};
use crate::fly::types::{Machine, MachineState};

/// The node name of a machine: its `fks_node`, else its machine name.
fn node_name(m: &Machine) -> &str {
    m.metadata(META_NODE).unwrap_or(&m.name)
}

/// The servers of `cluster` among `machines`: `fks_cluster=<cluster>`, not destroyed, and not
/// marked as an agent (a machine without `fks_role` counts as a server, as k3s.sh's servers
/// had none); sorted by node name, then machine id.
pub fn servers<'a>(cluster: &str, machines: &'a [Machine]) -> Vec<&'a Machine> {
    let mut servers: Vec<&Machine> = machines
        .iter()
        .filter(|m| super::owned_by(m, cluster))
        .filter(|m| m.metadata(META_ROLE).is_none_or(|r| r == "server"))
        .collect();
    servers.sort_by(|a, b| node_name(a).cmp(node_name(b)).then(a.id.cmp(&b.id)));
    servers
}

/// Plans the taint of every server of `cluster` in `cp` (the control-plane app with its
/// machines). Refuses, naming what to do, when the app holds no server of this cluster
/// ([`Error::NoServer`]; `cluster_dir` as the user gave it goes into the fix) or none of them
/// is started ([`Error::NoStartedServer`]).
pub fn taint(cluster: &str, cp: &AppState, cluster_dir: &str) -> Result<Plan, Error> {
    let app = &cp.app;
    let servers = servers(cluster, &cp.machines);
    if servers.is_empty() {
        return Err(Error::NoServer {
            app: app.clone(),
            cluster: cluster.to_string(),
            dir: cluster_dir.to_string(),
        });
    }
    let machine = |m: &Machine| MachineRef {
        app: app.clone(),
        id: Ref::Known(m.id.clone()),
    };
    let mut vias = servers
        .iter()
        .filter(|m| m.state == MachineState::Started)
        .map(|m| machine(m));
    let Some(via) = vias.next() else {
        return Err(Error::NoStartedServer {
            app: app.clone(),
            states: servers
                .iter()
                .map(|m| format!("{}={}", node_name(m), m.state))
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let fallback: Vec<MachineRef> = vias.collect();
    let mut b = Builder { steps: Vec::new() };
    for server in &servers {
        b.push(
            Some(node_name(server)),
            Action::Taint {
                machine: machine(server),
                via: via.clone(),
                fallback: fallback.clone(),
            },
            vec![],
        );
    }
    Ok(Plan {
        cluster: cluster.to_string(),
        app: app.clone(),
        nodes: Vec::new(),
        steps: b.steps,
        k3s: true,
        observed_volumes: Default::default(),
        keep_going: true,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fly::types::MachineConfig;
    use crate::plan::META_CLUSTER;

    /// A started machine `id` named `node`, with `fks_cluster`/`fks_role` when given.
    pub(crate) fn machine(
        id: &str,
        node: &str,
        cluster: Option<&str>,
        role: Option<&str>,
    ) -> Machine {
        let mut config = MachineConfig::default();
        config.metadata.insert(META_NODE.into(), node.into());
        if let Some(c) = cluster {
            config.metadata.insert(META_CLUSTER.into(), c.into());
        }
        if let Some(r) = role {
            config.metadata.insert(META_ROLE.into(), r.into());
        }
        Machine {
            id: id.into(),
            name: format!("machine-{id}"),
            state: MachineState::Started,
            config: Some(config),
            ..Machine::default()
        }
    }

    /// A started server of cluster `lab`.
    pub(crate) fn server(id: &str, node: &str) -> Machine {
        machine(id, node, Some("lab"), Some("server"))
    }

    fn cp(machines: Vec<Machine>) -> AppState {
        AppState {
            app: "lab-cp".into(),
            machines,
            ..AppState::default()
        }
    }

    fn known(id: &str) -> MachineRef {
        MachineRef {
            app: "lab-cp".into(),
            id: Ref::Known(id.into()),
        }
    }

    /// Each step as (node, tainted machine, via, fallback).
    fn taints(plan: &Plan) -> Vec<(String, String, String, Vec<String>)> {
        plan.steps
            .iter()
            .map(|s| match &s.action {
                Action::Taint {
                    machine,
                    via,
                    fallback,
                } => (
                    s.node.clone().unwrap_or_default(),
                    machine.id.to_string(),
                    via.id.to_string(),
                    fallback.iter().map(|f| f.id.to_string()).collect(),
                ),
                other => panic!("not a taint: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn every_server_is_tainted_through_the_first_started_one_then_the_others() {
        let plan = taint(
            "lab",
            &cp(vec![
                server("c", "ctrl-2"),
                Machine {
                    state: MachineState::Stopped,
                    ..server("a", "ctrl-0")
                },
                machine("b", "ctrl-1", Some("lab"), None),
            ]),
            "clusters/lab",
        )
        .expect("plan");
        assert_eq!(
            taints(&plan),
            [
                ("ctrl-0".into(), "a".into(), "b".into(), vec!["c".into()]),
                ("ctrl-1".into(), "b".into(), "b".into(), vec!["c".into()]),
                ("ctrl-2".into(), "c".into(), "b".into(), vec!["c".into()]),
            ],
            "a stopped server is tainted too, through a started one; a machine without fks_role counts as a server"
        );
        assert!(plan.keep_going, "one failed taint must not stop the others");
        assert!(
            plan.steps.iter().all(|s| s.depends_on.is_empty()),
            "no taint waits for another"
        );
        assert_eq!(plan.mutations(), 0, "a taint changes nothing on Fly");
        assert_eq!(plan.app, "lab-cp");
        assert!(plan.k3s);
    }

    #[test]
    fn only_this_clusters_servers_are_touched_or_used() {
        let plan = taint(
            "lab",
            &cp(vec![
                server("a", "ctrl-0"),
                machine("f", "ctrl-0", None, Some("server")),
                machine("o", "ctrl-1", Some("lab2"), Some("server")),
                machine("w", "worker-1", Some("lab"), Some("agent")),
                Machine {
                    state: MachineState::Destroyed,
                    ..server("d", "ctrl-1")
                },
                server("b", "ctrl-2"),
            ]),
            "clusters/lab",
        )
        .expect("plan");
        assert_eq!(
            taints(&plan),
            [
                ("ctrl-0".into(), "a".into(), "a".into(), vec!["b".into()]),
                ("ctrl-2".into(), "b".into(), "a".into(), vec!["b".into()]),
            ],
            "no foreign, other-cluster, agent or destroyed machine is tainted or used as a way in"
        );
    }

    #[test]
    fn no_server_of_this_cluster_is_refused_with_the_fix() {
        for machines in [
            vec![],
            vec![machine("f", "ctrl-0", None, Some("server"))],
            vec![machine("w", "worker-1", Some("lab"), Some("agent"))],
        ] {
            let e = taint("lab", &cp(machines), "clusters/lab").expect_err("no server");
            assert!(matches!(e, Error::NoServer { .. }), "{e:?}");
            assert_eq!(
                e.to_string(),
                "app lab-cp has no server of cluster lab (no machine with fks_cluster=lab): create the control plane with fks-bootstrap -c clusters/lab"
            );
        }
    }

    #[test]
    fn no_started_server_is_refused_naming_each_servers_state() {
        let stopped = |id: &str, node: &str, state| Machine {
            state,
            ..server(id, node)
        };
        let e = taint(
            "lab",
            &cp(vec![
                stopped("b", "ctrl-1", MachineState::Stopped),
                stopped("a", "ctrl-0", MachineState::Starting),
            ]),
            "clusters/lab",
        )
        .expect_err("nothing started");
        assert!(matches!(e, Error::NoStartedServer { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "app lab-cp has no started server to run kubectl on (servers: ctrl-0=starting, ctrl-1=stopped)"
        );
    }

    #[test]
    fn one_started_server_has_no_fallback() {
        let plan = taint("lab", &cp(vec![server("a", "ctrl-0")]), "d").expect("plan");
        let Action::Taint { via, fallback, .. } = &plan.steps[0].action else {
            panic!("not a taint");
        };
        assert_eq!(via, &known("a"));
        assert!(fallback.is_empty());
    }

    #[test]
    fn the_dry_run_shows_each_taint_and_where_it_runs() {
        let plan = taint(
            "lab",
            &cp(vec![server("a", "ctrl-0"), server("b", "ctrl-1")]),
            "clusters/lab",
        )
        .expect("plan");
        let text = plan.to_string();
        assert!(
            text.contains(
                "[0]  ctrl-0: taint k3s node a CriticalAddonsOnly=true:NoExecute (kubectl on a, else b)"
            ) && text.contains("[1]  ctrl-1: taint k3s node b"),
            "{text}"
        );
        assert!(text.contains("2 steps, 0 changes on Fly"), "{text}");
    }
}
