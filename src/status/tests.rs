//! Tests of the pure parts of `status`: member names to nodes, merging the three views, the
//! verdicts, and the node-side answer's parsing.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::fly::types::ExecResponse;

const IMAGE: &str = "registry.fly.io/lab-cp@sha256:0123";

fn machine(id: &str, node: &str, role: &str, state: &str) -> Machine {
    serde_json::from_value(json!({
        "id": id,
        "name": node,
        "state": state,
        "config": {
            "image": IMAGE,
            "metadata": {"fks_cluster": "lab", "fks_node": node, "fks_role": role}
        }
    }))
    .expect("machine")
}

fn app(name: &str, machines: Vec<Machine>) -> AppState {
    AppState {
        app: name.into(),
        machines,
        volumes: Vec::new(),
        secrets: BTreeSet::new(),
    }
}

fn k3s_node(id: &str, app: &str, ready: Readiness) -> K3sNode {
    K3sNode {
        name: k3s::k3s_node_name(id, app),
        ready,
        version: "v1.31.4+k3s1".into(),
    }
}

fn member(id: &str, node: Option<&str>, healthy: bool) -> MemberHealth {
    MemberHealth {
        id: id.into(),
        name: node.map(|n| format!("{n}-0a1b2c3d")).unwrap_or_default(),
        peer_urls: vec!["https://[fdaa::1]:2380".into()],
        client_urls: vec!["https://[fdaa::1]:2379".into()],
        learner: false,
        leader: id == "a1",
        healthy,
        error: (!healthy).then(|| "etcd health at https://[fdaa::1]:2379: timeout".to_string()),
    }
}

/// Three started servers and a worker, all Ready, three healthy members.
fn healthy_cluster() -> (Vec<AppState>, NodesAnswer, MembersAnswer) {
    let apps = vec![
        app(
            "lab-cp",
            vec![
                machine("e1", "ctrl-0", "server", "started"),
                machine("e2", "ctrl-1", "server", "started"),
                machine("e3", "ctrl-2", "server", "started"),
            ],
        ),
        app(
            "lab-ng-web",
            vec![machine("w1", "worker-ng-web-0", "agent", "started")],
        ),
    ];
    let nodes = Ok(vec![
        k3s_node("e1", "lab-cp", Readiness::Ready),
        k3s_node("e2", "lab-cp", Readiness::Ready),
        k3s_node("e3", "lab-cp", Readiness::Ready),
        k3s_node("w1", "lab-ng-web", Readiness::Ready),
    ]);
    let members = Ok(MembersReport {
        endpoint: "https://127.0.0.1:2379".into(),
        members: vec![
            member("a1", Some("e1.vm.lab-cp.internal"), true),
            member("a2", Some("e2.vm.lab-cp.internal"), true),
            member("a3", Some("e3.vm.lab-cp.internal"), true),
        ],
    });
    (apps, nodes, members)
}

#[test]
fn member_names_lead_to_their_node() {
    assert_eq!(
        member_node("e1.vm.lab-cp.internal-0a1b2c3d"),
        Some("e1.vm.lab-cp.internal")
    );
    // Not k3s's suffix: the name is kept whole.
    assert_eq!(
        member_node("e1.vm.lab-cp.internal"),
        Some("e1.vm.lab-cp.internal")
    );
    assert_eq!(member_node("a-b-xyz"), Some("a-b-xyz"));
    assert_eq!(member_node(""), None);
}

#[test]
fn a_healthy_cluster_has_no_problems() {
    let (apps, nodes, members) = healthy_cluster();
    let r = merge("lab", &apps, &nodes, &members);
    assert!(r.healthy, "{r:#?}");
    assert_eq!(r.nodes.len(), 4);
    let servers: Vec<&Node> = r.nodes.iter().filter(|n| n.role == "server").collect();
    assert_eq!(servers.len(), 3);
    for s in &servers {
        let m = s.member.as_ref().expect("member");
        assert!(m.healthy);
        assert_eq!(s.ready, "True");
        assert_eq!(s.k3s_version, "v1.31.4+k3s1");
        assert_eq!(s.image, IMAGE);
        assert_eq!(s.state, "started");
    }
    assert_eq!(servers[0].name, "ctrl-0");
    assert!(servers[0].member.as_ref().is_some_and(|m| m.leader));
    let worker = r.nodes.iter().find(|n| n.role == "agent").expect("worker");
    assert_eq!(worker.member, None);
    assert!(worker.problems.is_empty());
    assert!(r.orphan_members.is_empty() && r.orphan_nodes.is_empty() && r.problems.is_empty());
}

#[test]
fn each_kind_of_trouble_shows_on_its_node() {
    let (mut apps, _, _) = healthy_cluster();
    // ctrl-1's machine is stopped; ctrl-2 is NotReady and its member unhealthy; the worker is
    // not registered; a member has no node; a server has no member.
    apps[0].machines[1] = machine("e2", "ctrl-1", "server", "stopped");
    apps[0]
        .machines
        .push(machine("e4", "ctrl-3", "server", "started"));
    // A machine of another cluster in the app is not this cluster's node.
    let mut foreign = machine("x9", "ctrl-9", "server", "started");
    if let Some(c) = foreign.config.as_mut() {
        c.metadata.insert("fks_cluster".into(), "other".into());
    }
    apps[0].machines.push(foreign);
    let nodes: NodesAnswer = Ok(vec![
        k3s_node("e1", "lab-cp", Readiness::Ready),
        k3s_node("e2", "lab-cp", Readiness::NotReady("Unknown".into())),
        k3s_node("e3", "lab-cp", Readiness::NotReady("False".into())),
        k3s_node("e4", "lab-cp", Readiness::Ready),
        k3s_node("gone", "lab-cp", Readiness::NotReady("Unknown".into())),
    ]);
    let members: MembersAnswer = Ok(MembersReport {
        endpoint: "https://127.0.0.1:2379".into(),
        members: vec![
            member("a1", Some("e1.vm.lab-cp.internal"), true),
            member("a2", Some("e2.vm.lab-cp.internal"), false),
            member("a3", Some("e3.vm.lab-cp.internal"), false),
            member("a5", Some("gone.vm.lab-cp.internal"), true),
            member("a6", None, false),
        ],
    });
    let r = merge("lab", &apps, &nodes, &members);
    assert!(!r.healthy);
    let by = |name: &str| r.nodes.iter().find(|n| n.name == name).expect(name);
    assert!(by("ctrl-0").problems.is_empty());
    assert_eq!(
        by("ctrl-1").problems[..2],
        [
            "machine is stopped".to_string(),
            "NotReady (Ready=Unknown)".to_string()
        ]
    );
    assert!(by("ctrl-1").problems[2].starts_with("etcd member unhealthy: etcd health at"));
    assert_eq!(by("ctrl-2").ready, "False");
    assert_eq!(by("ctrl-3").problems, ["not an etcd member"]);
    assert_eq!(by("worker-ng-web-0").ready, "NotRegistered");
    assert_eq!(
        by("worker-ng-web-0").problems,
        ["not registered in Kubernetes"]
    );
    assert!(r.nodes.iter().all(|n| n.name != "ctrl-9"));
    let orphans: Vec<&str> = r.orphan_members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(orphans, ["a5", "a6"]);
    assert_eq!(r.orphan_nodes, ["gone.vm.lab-cp.internal"]);
}

#[test]
fn unanswered_questions_make_the_cluster_unhealthy_without_blaming_nodes() {
    let (apps, _, _) = healthy_cluster();
    let r = merge(
        "lab",
        &apps,
        &Err("exec failed on every started server (e1: refused)".into()),
        &Err("no such file".into()),
    );
    assert!(!r.healthy);
    assert_eq!(r.problems.len(), 2);
    assert!(r.problems[0].contains("Kubernetes API could not be asked: exec failed"));
    assert!(r.problems[1].contains("etcd members could not be read: no such file"));
    assert!(r
        .nodes
        .iter()
        .all(|n| n.ready == "Unknown" && n.member.is_none()));
    assert!(r.nodes.iter().all(|n| n.problems.is_empty()));
}

#[test]
fn started_servers_are_asked_in_node_order() {
    let (mut apps, _, _) = healthy_cluster();
    apps[0].machines.reverse();
    apps[0].machines[0] = machine("e3", "ctrl-2", "server", "stopped");
    let v: Vec<&str> = vias("lab", &apps, "lab-cp")
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(v, ["e1", "e2"]);
}

#[test]
fn the_member_report_round_trips_and_failures_give_one_line() {
    let (_, _, members) = healthy_cluster();
    let report = members.expect("report");
    let out = ExecResponse {
        stdout: serde_json::to_string_pretty(&report).expect("json"),
        stderr: String::new(),
        exit_code: 0,
        exit_signal: None,
    };
    assert_eq!(parse_members(&out), Ok(report));
    let failed = ExecResponse {
        stdout: String::new(),
        stderr: "fks-bootstrap: node etcd members: reading /data/k3s/server/tls/etcd/server-ca.crt\nmore".into(),
        exit_code: 1,
        exit_signal: None,
    };
    assert_eq!(
        parse_members(&failed),
        Err(
            "fks-bootstrap: node etcd members: reading /data/k3s/server/tls/etcd/server-ca.crt"
                .into()
        )
    );
    let garbage = ExecResponse {
        stdout: "hello".into(),
        ..failed.clone()
    };
    assert!(parse_members(&ExecResponse {
        exit_code: 0,
        ..garbage
    })
    .is_err_and(|e| e.starts_with("node etcd members printed no member report")));
    assert_eq!(
        members_command(),
        ["fks-bootstrap", "node", "etcd", "members", "--json"]
    );
}

#[test]
fn the_json_shape_is_stable() {
    let (apps, nodes, members) = healthy_cluster();
    let r = merge("lab", &apps, &nodes, &members);
    let v = serde_json::to_value(&r).expect("json");
    let keys = |o: &serde_json::Value| -> Vec<String> {
        o.as_object().expect("object").keys().cloned().collect()
    };
    assert_eq!(
        keys(&v),
        [
            "cluster",
            "healthy",
            "nodes",
            "orphan_members",
            "orphan_nodes",
            "problems"
        ]
    );
    assert_eq!(
        keys(&v["nodes"][0]),
        [
            "app",
            "image",
            "k3s_node",
            "k3s_version",
            "machine_id",
            "member",
            "name",
            "problems",
            "ready",
            "role",
            "state"
        ]
    );
    assert_eq!(
        keys(&v["nodes"][0]["member"]),
        ["error", "healthy", "id", "leader", "learner", "name"]
    );
    assert_eq!(v["nodes"][0]["member"]["id"], "a1");
    assert_eq!(v["nodes"][3]["member"], serde_json::Value::Null);
}
