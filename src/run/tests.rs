//! The k3s steps of a run against a scripted Machines API (the lab runs no guests yet): Ready
//! polling through exec, the token read and stored as a secret, taints, ready marks, and a
//! k3s wait that names the node when it expires.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::testserver::{json as answer, Answer, Seen, Server};
use super::*;
use crate::fly::types::{MachineFile, VolumeState};
use crate::fly::{Options as ClientOptions, RetryPolicy, Token};
use crate::plan::{self, State, Target, META_CLUSTER, META_NODE, META_ROLE};
use crate::render::tests::lab_config;

const TOKEN_VALUE: &str = "K10fakefakefake::server:0123456789";

fn client(base: &str) -> Client {
    let options = ClientOptions {
        rate_limit: false,
        seed: Some(5),
        retry: RetryPolicy::none(),
        create_settle: Duration::from_millis(10),
        ..ClientOptions::default()
    };
    Client::new(base, Token::new("t"), options).expect("client")
}

/// The image [`k3s_plan`] pins.
const IMAGE: &str = "registry.fly.io/lab-cp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A started server as the create path made it (so the plan finds no config drift to update).
fn machine(id: &str, node: &str) -> Machine {
    let role = match node {
        "ctrl-0" => plan::Role::BootstrapServer,
        _ => plan::Role::Server,
    };
    let mut request = plan::machine_request(
        &lab_config(),
        &Target::control_plane(0).expect("target"),
        Some(0),
        node,
        role,
        &plan::Ref::Known(format!("vol_of_{id}")),
        None,
        None,
        &[],
    );
    request.config.image = IMAGE.to_string();
    debug_assert_eq!(request.config.metadata[META_CLUSTER], "lab");
    debug_assert_eq!(request.config.metadata[META_NODE], node);
    debug_assert_eq!(request.config.metadata[META_ROLE], "server");
    Machine {
        id: id.into(),
        state: MachineState::Started,
        config: Some(request.config),
        ..Machine::default()
    }
}

/// ctrl-0 and ctrl-1 exist and run; ctrl-2 has a spare volume but no machine; no token yet.
fn state() -> State {
    let vol = |id: &str, zone: &str, att: Option<&str>| Volume {
        id: id.into(),
        name: "k3s_data".into(),
        state: VolumeState::Created,
        region: "sjc".into(),
        zone: zone.into(),
        attached_machine_id: att.map(str::to_string),
        ..Volume::default()
    };
    State {
        app_exists: true,
        volumes: vec![
            vol("vol_0", "z0", Some("m0")),
            vol("vol_1", "z1", Some("m1")),
            vol("vol_2", "z2", None),
        ],
        machines: vec![machine("m0", "ctrl-0"), machine("m1", "ctrl-1")],
        secrets: BTreeSet::new(),
        control_plane: Vec::new(),
        k8s_nodes: None,
    }
}

fn k3s_plan() -> Plan {
    let files: BTreeMap<String, Vec<MachineFile>> =
        (0..3).map(|i| (format!("ctrl-{i}"), Vec::new())).collect();
    let options = plan::Options {
        zones: Some(3),
        allow_shared_zones: false,
        k3s: true,
        node_files: files,
        extra_env: BTreeMap::new(),
        image: IMAGE.to_string(),
        max_unavailable: plan::update::WORKER_BATCH,
    };
    plan::plan(
        &lab_config(),
        &Target::control_plane(0).expect("target"),
        &state(),
        &options,
    )
    .expect("plan")
}

/// A scripted API: kubectl fails (NotFound) for the first `not_ready` Ready checks, then lists
/// m0, m1 and m2 as Ready (or never, when `never` is set).
fn scripted(not_ready: usize, never: bool) -> impl FnMut(&Seen, &[Seen]) -> Answer {
    move |req: &Seen, seen: &[Seen]| {
        let path = req.path().to_string();
        let exec = |out: &str, code: i64| {
            answer(
                200,
                json!({"stdout": out, "stderr": if code == 0 { "" } else { "Error from server (NotFound): nodes not found" }, "exit_code": code}),
            )
        };
        match (req.method.as_str(), path.as_str()) {
            ("POST", p) if p.ends_with("/exec") => {
                let body = req.json();
                let cmd: Vec<String> =
                    serde_json::from_value(body["command"].clone()).expect("command");
                match cmd.first().map(String::as_str) {
                    Some("cat") => exec(&format!("{TOKEN_VALUE}\n"), 0),
                    Some("k3s") if cmd[2] == "get" => {
                        let earlier = seen
                            .iter()
                            .filter(|s| s.path().ends_with("/exec") && s.body == req.body)
                            .count();
                        if never || earlier < not_ready {
                            exec("", 1)
                        } else {
                            exec(
                                "m0.vm.lab-cp.internal\tTrue\nm1.vm.lab-cp.internal\tTrue\nm2.vm.lab-cp.internal\tTrue\n",
                                0,
                            )
                        }
                    }
                    Some("k3s") if cmd[2] == "taint" => exec("node/x tainted", 0),
                    _ => exec("", 127),
                }
            }
            ("POST", "/v1/apps/lab-cp/machines") => {
                let mut m = req.json();
                m["id"] = json!("m2");
                m["state"] = json!("created");
                answer(200, m)
            }
            ("GET", p) if p.ends_with("/wait") => {
                answer(200, json!({"ok": true, "state": "started"}))
            }
            ("GET", "/v1/apps/lab-cp/machines/m2") => answer(
                200,
                json!({"id": "m2", "state": "started", "private_ip": "fdaa::2"}),
            ),
            ("POST", p) if p.contains("/metadata/") => answer(200, json!({})),
            ("POST", "/v1/apps/lab-cp/secrets/K3S_TOKEN") => answer(
                200,
                json!({"name": "K3S_TOKEN", "digest": "d", "version": 2}),
            ),
            _ => answer(
                404,
                json!({"error": format!("unscripted {} {path}", req.method)}),
            ),
        }
    }
}

#[tokio::test]
async fn k3s_steps_wait_for_ready_store_the_token_taint_and_mark_every_server() {
    let server = Server::start(scripted(2, false)).await;
    let c = client(&server.base);
    let plan = k3s_plan();
    let options = Options {
        poll: Duration::from_millis(5),
        ..Options::default()
    };
    let events = Arc::new(Mutex::new(Vec::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let summary = execute(&c, &plan, &options, Some(tx)).await.expect("run");
    while let Ok(e) = rx.try_recv() {
        events.lock().expect("events").push((e.node, e.phase));
    }
    let seen = server.seen();
    // The token went to the secret, and only there.
    let secret_calls: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path().ends_with("/secrets/K3S_TOKEN"))
        .collect();
    assert_eq!(secret_calls.len(), 1);
    // Stored as the token file's content in base64, the form Fly writes `secret_name` files from.
    use base64::Engine;
    let stored = secret_calls[0].json()["value"]
        .as_str()
        .map(|v| base64::engine::general_purpose::STANDARD.decode(v))
        .expect("a string value")
        .expect("base64");
    assert_eq!(stored, format!("{TOKEN_VALUE}\n").into_bytes());
    let create = seen
        .iter()
        .find(|s| s.method == "POST" && s.path() == "/v1/apps/lab-cp/machines")
        .expect("ctrl-2 created");
    assert!(
        !create.body.contains("K10"),
        "no token in the machine create"
    );
    // App secrets stay out of env: Fly would add them there otherwise.
    assert_eq!(create.json()["skip_secrets"], true, "{}", create.body);
    // ctrl-2 joins only after the secret exists, mounting the spare volume in zone z2.
    let pos = |pred: &dyn Fn(&Seen) -> bool| seen.iter().position(pred).expect("call seen");
    assert!(
        pos(&|s| s.path().ends_with("/secrets/K3S_TOKEN"))
            < pos(&|s| s.path() == "/v1/apps/lab-cp/machines" && s.method == "POST")
    );
    let body = create.json();
    assert_eq!(body["config"]["mounts"][0]["volume"], "vol_2");
    assert_eq!(body["config"]["env"]["FKS_ZONE"], "z2");
    assert_eq!(body["config"]["env"]["FKS_BOOTSTRAP_MACHINE_ID"], "m0");
    // The create asks for at least the secrets version the token write made, so the machine
    // cannot boot on an older copy of the eventually consistent secret store.
    assert_eq!(body["min_secrets_version"], 2, "{}", create.body);
    assert!(body["config"]["metadata"]["fks_launch_id"]
        .as_str()
        .is_some_and(|s| s.len() == 36));
    // Every server: tainted and marked ready; the Ready checks ran on the bootstrap server.
    let taints = seen.iter().filter(|s| s.body.contains("\"taint\"")).count();
    assert_eq!(taints, 3);
    let marks = seen
        .iter()
        .filter(|s| s.path().ends_with("/metadata/fks_ready"))
        .count();
    assert_eq!(marks, 3);
    assert!(seen
        .iter()
        .filter(|s| s.path().ends_with("/exec"))
        .all(|s| s.path() == "/v1/apps/lab-cp/machines/m0/exec"));
    assert!(seen
        .iter()
        .any(|s| s.body.contains("m2.vm.lab-cp.internal")));
    let got = events.lock().expect("events").clone();
    for n in ["ctrl-0", "ctrl-1", "ctrl-2"] {
        assert!(
            got.contains(&(n.to_string(), Phase::K3sReady)),
            "{n}: {got:?}"
        );
        assert!(
            got.contains(&(n.to_string(), Phase::Joined)),
            "{n}: {got:?}"
        );
    }
    assert_eq!(summary.nodes[2].machine.as_deref(), Some("m2"));
    assert_eq!(summary.nodes[2].private_ip.as_deref(), Some("fdaa::2"));
    assert!(!format!("{summary:?}").contains("K10"));
}

#[tokio::test]
async fn a_k3s_node_that_never_gets_ready_is_named_when_the_deadline_passes() {
    let server = Server::start(scripted(0, true)).await;
    let c = client(&server.base);
    let plan = k3s_plan();
    let options = Options {
        poll: Duration::from_millis(5),
        k3s_timeout: Duration::from_millis(100),
        ..Options::default()
    };
    let e = execute(&c, &plan, &options, None)
        .await
        .expect_err("never ready");
    let msg = e.to_string();
    assert!(matches!(e, Error::K3sNotReady { .. }), "{e:?}");
    assert!(
        msg.contains("node ctrl-0") && msg.contains("m0.vm.lab-cp.internal"),
        "{msg}"
    );
    assert!(msg.contains("NotFound"), "the last answer is quoted: {msg}");
}

#[tokio::test]
async fn ready_waits_of_many_nodes_on_one_machine_share_one_check() {
    let server = Server::start(|req: &Seen, _: &[Seen]| {
        let names: String = (0..10)
            .map(|i| format!("w{i}.vm.lab-ng-a.internal\tTrue\n"))
            .collect();
        if req.path().ends_with("/exec") {
            answer(200, json!({"stdout": names, "stderr": "", "exit_code": 0}))
        } else {
            answer(404, json!({"error": "unscripted"}))
        }
    })
    .await;
    let ctx = Arc::new(Ctx {
        client: client(&server.base),
        options: Options {
            // Long enough that every wait finds the first answer fresh.
            poll: Duration::from_secs(60),
            ..Options::default()
        },
        started: Instant::now(),
        volumes: Mutex::new(BTreeSet::new()),
        ready_checks: Mutex::new(HashMap::new()),
    });
    let mut waits = JoinSet::new();
    for i in 0..10 {
        let ctx = ctx.clone();
        waits.spawn(async move {
            let wait = Action::WaitK3sReady {
                machine: MachineRef {
                    app: "lab-ng-a".into(),
                    id: Ref::Known(format!("w{i}")),
                },
                via: MachineRef {
                    app: "lab-cp".into(),
                    id: Ref::Known("m0".into()),
                },
            };
            let inputs = Inputs {
                step: StepId(i),
                outputs: HashMap::new(),
                secrets_version: None,
            };
            run_step(&ctx, &format!("worker-ng-a-{i}"), wait, inputs).await
        });
    }
    while let Some(done) = waits.join_next().await {
        assert!(matches!(done.expect("task"), Ok(Output::Done)));
    }
    let execs: Vec<Seen> = server
        .seen()
        .into_iter()
        .filter(|s| s.path().ends_with("/exec"))
        .collect();
    assert_eq!(
        execs.len(),
        1,
        "one `kubectl get nodes` answers all ten waits"
    );
    assert_eq!(execs[0].path(), "/v1/apps/lab-cp/machines/m0/exec");
}

#[test]
fn summary_text_lists_every_node() {
    let mut phases = BTreeMap::new();
    phases.insert(Phase::Started, Duration::from_millis(1500));
    let s = Summary {
        app: "lab-cp".into(),
        nodes: vec![
            NodeSummary {
                name: "ctrl-0".into(),
                machine: Some("m0".into()),
                zone: Some("z0".into()),
                private_ip: Some("fdaa::2".into()),
                phases,
            },
            NodeSummary {
                name: "ctrl-1".into(),
                ..NodeSummary::default()
            },
        ],
        steps: 4,
        elapsed: Duration::from_secs(3),
    };
    assert_eq!(
        s.to_string(),
        "app lab-cp:\n  ctrl-0               machine m0               zone z0     6pn fdaa::2                  started   1.5s joined      -\n  ctrl-1               machine -                zone -      6pn -                        started      - joined      -\n4 steps in 3.0s"
    );
}

/// Runs one removal step on a worker through `m0`, against `server`.
async fn removal_step(
    server: &Server,
    action: Action,
    k3s_timeout: Duration,
) -> Result<Output, Error> {
    let ctx = Ctx {
        client: client(&server.base),
        options: Options {
            poll: Duration::from_millis(5),
            k3s_timeout,
            ..Options::default()
        },
        started: Instant::now(),
        volumes: Mutex::new(BTreeSet::new()),
        ready_checks: Mutex::new(HashMap::new()),
    };
    let inputs = Inputs {
        step: StepId(0),
        outputs: HashMap::new(),
        secrets_version: None,
    };
    run_step(&ctx, "worker-ng-a-2", action, inputs).await
}

fn worker_and_via() -> (MachineRef, MachineRef) {
    (
        MachineRef {
            app: "lab-ng-a".into(),
            id: Ref::Known("w2".into()),
        },
        MachineRef {
            app: "lab-cp".into(),
            id: Ref::Known("m0".into()),
        },
    )
}

fn cp_ref(id: &str) -> MachineRef {
    MachineRef {
        app: "lab-cp".into(),
        id: Ref::Known(id.into()),
    }
}

/// Exec answers by machine: `m0` and the ones in `down` fail as API errors (503), the others
/// run kubectl, which fails (exit 1) for the k3s nodes of the machines in `refused`.
fn taint_api(
    down: &'static [&'static str],
    refused: &'static [&'static str],
) -> impl FnMut(&Seen, &[Seen]) -> Answer {
    move |req: &Seen, _: &[Seen]| {
        let path = req.path();
        let Some(machine) = path
            .strip_prefix("/v1/apps/lab-cp/machines/")
            .and_then(|p| p.strip_suffix("/exec"))
        else {
            return answer(404, json!({"error": "unscripted"}));
        };
        if down.contains(&machine) {
            return answer(503, json!({"error": "exec is not available here"}));
        }
        if refused
            .iter()
            .any(|m| req.body.contains(&format!("{m}.vm.lab-cp.internal")))
        {
            return answer(
                200,
                json!({"stdout": "", "stderr": "Error from server (NotFound): nodes not found\nmore", "exit_code": 1}),
            );
        }
        answer(
            200,
            json!({"stdout": "node/x tainted", "stderr": "", "exit_code": 0}),
        )
    }
}

fn exec_paths(server: &Server) -> Vec<String> {
    server
        .seen()
        .into_iter()
        .filter(|s| s.path().ends_with("/exec"))
        .map(|s| s.path().to_string())
        .collect()
}

#[tokio::test]
async fn a_taint_goes_through_the_first_server_whose_exec_answers() {
    let taint = Action::Taint {
        machine: cp_ref("m2"),
        via: cp_ref("m0"),
        fallback: vec![cp_ref("m1"), cp_ref("m2")],
    };
    let server = Server::start(taint_api(&["m0"], &[])).await;
    let out = removal_step(&server, taint.clone(), Duration::from_secs(5)).await;
    assert!(matches!(out, Ok(Output::Done)), "{out:?}");
    assert_eq!(
        exec_paths(&server),
        [
            "/v1/apps/lab-cp/machines/m0/exec",
            "/v1/apps/lab-cp/machines/m1/exec"
        ],
        "m2 is not asked once m1 ran kubectl"
    );

    // A kubectl that ran and failed is the answer: no other server is asked.
    let server = Server::start(taint_api(&["m0"], &["m2"])).await;
    let e = removal_step(&server, taint.clone(), Duration::from_secs(5))
        .await
        .expect_err("kubectl failed");
    match &e {
        Error::Exec {
            machine, stderr, ..
        } => {
            assert_eq!(machine, "m1");
            assert_eq!(stderr, "Error from server (NotFound): nodes not found");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(exec_paths(&server).len(), 2);

    // No server answers: each is named with why, in the order asked.
    let server = Server::start(taint_api(&["m0", "m1", "m2"], &[])).await;
    let e = removal_step(&server, taint, Duration::from_secs(5))
        .await
        .expect_err("nobody answers");
    let Error::NoExec {
        tried, k3s_node, ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(k3s_node, "m2.vm.lab-cp.internal");
    assert_eq!(
        tried.iter().map(|t| t.machine.as_str()).collect::<Vec<_>>(),
        ["m0", "m1", "m2"]
    );
    let text = e.to_string();
    assert!(
        text.contains("no started server answers exec")
            && text.contains("exec failed on m0: ")
            && text.contains("; m2: "),
        "{text}"
    );
}

#[tokio::test]
async fn execute_each_reports_every_step_and_a_failure_does_not_stop_the_others() {
    let server_machine = |id: &str, node: &str| Machine {
        name: node.into(),
        ..machine(id, node)
    };
    let cp = plan::AppState {
        app: "lab-cp".into(),
        machines: vec![
            server_machine("m0", "ctrl-0"),
            server_machine("m1", "ctrl-1"),
            server_machine("m2", "ctrl-2"),
        ],
        ..plan::AppState::default()
    };
    let plan = plan::taint::taint("lab", &cp, "clusters/lab").expect("plan");
    let server = Server::start(taint_api(&[], &["m1"])).await;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel();
    let result = execute_each(
        &client(&server.base),
        &plan,
        &Options::default(),
        done_tx,
        failed_tx,
    )
    .await;
    assert!(
        matches!(
            result,
            Err(Error::StepsFailed {
                failed: 1,
                steps: 3
            })
        ),
        "{result:?}"
    );
    let mut done = Vec::new();
    while let Ok(finished) = done_rx.try_recv() {
        done.push(finished.step.0);
    }
    done.sort();
    assert_eq!(done, [0, 2], "the steps after the failed one still ran");
    let (id, e) = failed_rx.try_recv().expect("one failure");
    assert_eq!(id, StepId(1));
    assert!(
        matches!(&e, Error::Exec { node, machine, .. } if node == "ctrl-1" && machine == "m0"),
        "{e:?}"
    );
    assert!(failed_rx.try_recv().is_err());
    assert_eq!(
        exec_paths(&server).len(),
        3,
        "the failed step is not started again"
    );

    // Without a receiver for the failures, the first one is the run's error.
    let e = execute(&client(&server.base), &plan, &Options::default(), None)
        .await
        .expect_err("ctrl-1 fails");
    assert!(
        matches!(&e, Error::Exec { node, .. } if node == "ctrl-1"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_drain_held_up_by_a_disruption_budget_is_called_again_until_it_passes() {
    const PDB: &str = "error when evicting pods/\"web-1\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.";
    let server = Server::start(|req: &Seen, seen: &[Seen]| {
        let drains = seen.iter().filter(|s| s.path().ends_with("/exec")).count();
        if !req.path().ends_with("/exec") {
            return answer(404, json!({"error": "unscripted"}));
        }
        if drains < 2 {
            answer(200, json!({"stdout": "", "stderr": PDB, "exit_code": 1}))
        } else {
            answer(
                200,
                json!({"stdout": "node/x drained", "stderr": "", "exit_code": 0}),
            )
        }
    })
    .await;
    let (machine, via) = worker_and_via();
    let drain = Action::Drain {
        machine: machine.clone(),
        via: via.clone(),
    };
    let out = removal_step(&server, drain.clone(), Duration::from_secs(10)).await;
    assert!(matches!(out, Ok(Output::Done)), "{out:?}");
    let execs: Vec<Seen> = server
        .seen()
        .into_iter()
        .filter(|s| s.path().ends_with("/exec"))
        .collect();
    assert_eq!(execs.len(), 3, "two refusals, then the drain that passed");
    assert_eq!(execs[0].path(), "/v1/apps/lab-cp/machines/m0/exec");
    let body = execs[0].body.clone();
    assert!(
        body.contains("w2.vm.lab-ng-a.internal") && body.contains("--ignore-daemonsets"),
        "{body}"
    );

    // A budget that never allows it: the deadline names the node and quotes kubectl.
    let stuck = Server::start(|_: &Seen, _: &[Seen]| {
        answer(200, json!({"stdout": "", "stderr": PDB, "exit_code": 1}))
    })
    .await;
    let e = removal_step(&stuck, drain, Duration::from_millis(50))
        .await
        .expect_err("held up");
    let msg = e.to_string();
    assert!(
        msg.contains("worker-ng-a-2") && msg.contains("drain"),
        "{msg}"
    );
    assert!(
        crate::errors::chain(&e).contains("disruption budget"),
        "{}",
        crate::errors::chain(&e)
    );
}

#[tokio::test]
async fn cordon_and_drain_of_an_unregistered_node_are_done_and_delete_failures_are_not() {
    let server = Server::start(|_: &Seen, _: &[Seen]| {
        answer(
            200,
            json!({"stdout": "", "stderr": "Error from server (NotFound): nodes \"w2.vm.lab-ng-a.internal\" not found", "exit_code": 1}),
        )
    })
    .await;
    let (machine, via) = worker_and_via();
    for action in [
        Action::Cordon {
            machine: machine.clone(),
            via: via.clone(),
        },
        Action::Drain {
            machine: machine.clone(),
            via: via.clone(),
        },
    ] {
        let out = removal_step(&server, action, Duration::from_secs(5)).await;
        assert!(matches!(out, Ok(Output::Done)), "{out:?}");
    }
    let e = removal_step(
        &server,
        Action::DeleteNode { machine, via },
        Duration::from_secs(5),
    )
    .await
    .expect_err("delete with --ignore-not-found failing is a real failure");
    assert!(matches!(e, Error::Exec { .. }), "{e:?}");
}

#[test]
fn finished_lines_name_what_their_steps_made() {
    let made = HashMap::from([
        (StepId(3), "m-new".to_string()),
        (StepId(2), "vol_1".to_string()),
    ]);
    assert_eq!(
        name_made(
            "ctrl-1: wait until machine <made by [3]> (volume <made by [2]>) is started, after <made by [4]>",
            &made
        ),
        "ctrl-1: wait until machine m-new (volume vol_1) is started, after <made by [4]>"
    );
}

/// The API answering 503 while etcd elects a leader (a server restarting under an update, or
/// a run killed during one): uncordon and cordon ask again until it answers; another failure
/// is final at once.
#[tokio::test]
async fn cordon_and_uncordon_ask_again_while_the_api_elects_a_leader() {
    let unavailable = json!({"stdout": "", "stderr": "Error from server (ServiceUnavailable): datastore: etcd range at https://127.0.0.1:2379: 503: etcdserver: leader changed", "exit_code": 1});
    let (machine, via) = worker_and_via();
    for action in [
        Action::Uncordon {
            machine: machine.clone(),
            via: via.clone(),
        },
        Action::Cordon {
            machine: machine.clone(),
            via: via.clone(),
        },
    ] {
        let mut calls = 0;
        let body = unavailable.clone();
        let server = Server::start(move |req: &Seen, _: &[Seen]| {
            if !req.path().ends_with("/exec") {
                return answer(404, json!({"error": "unscripted"}));
            }
            calls += 1;
            if calls < 3 {
                answer(200, body.clone())
            } else {
                answer(
                    200,
                    json!({"stdout": "node/x done", "stderr": "", "exit_code": 0}),
                )
            }
        })
        .await;
        let out = removal_step(&server, action.clone(), Duration::from_secs(5)).await;
        assert!(matches!(out, Ok(Output::Done)), "{action:?}: {out:?}");
        assert_eq!(exec_paths(&server).len(), 3, "{action:?}");
    }
    // Any other failure is the answer.
    let server = Server::start(|_: &Seen, _: &[Seen]| {
        answer(
            200,
            json!({"stdout": "", "stderr": "error: forbidden", "exit_code": 1}),
        )
    })
    .await;
    let e = removal_step(
        &server,
        Action::Uncordon { machine, via },
        Duration::from_secs(5),
    )
    .await
    .expect_err("forbidden");
    assert!(matches!(e, Error::Exec { .. }), "{e:?}");
    assert_eq!(exec_paths(&server).len(), 1);
}
