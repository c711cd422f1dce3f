//! `fks-bootstrap render`: the config a node would get, on stdout; notes on stderr; every bad
//! flag is exit 2 with a message naming the flag.

use std::path::PathBuf;

use serde_yaml_ng::{Mapping, Value};

use crate::util::{fks, stderr, stdout};

fn cluster(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clusters")
        .join(name)
}

/// Run `fks-bootstrap render <clusters/NAME> ARGS...` from a fresh temp dir, which also shows
/// that the templates are embedded in the binary.
fn render(cluster_name: &str, args: &[&str]) -> std::process::Output {
    run(cluster_name, args, None)
}

fn run(cluster_name: &str, args: &[&str], bootstrap_node_id: Option<&str>) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = fks();
    cmd.current_dir(dir.path())
        .arg("render")
        .arg(cluster(cluster_name))
        .args(args)
        .env_remove("BOOTSTRAP_NODE_ID");
    if let Some(id) = bootstrap_node_id {
        cmd.env("BOOTSTRAP_NODE_ID", id);
    }
    cmd.output().expect("run fks-bootstrap")
}

fn yaml(out: &std::process::Output) -> Mapping {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    match serde_yaml_ng::from_str(&stdout(out)) {
        Ok(Value::Mapping(m)) => m,
        other => panic!("stdout is not a YAML mapping: {other:?}\n{}", stdout(out)),
    }
}

fn text(map: &Mapping, key: &str) -> String {
    map.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key} in {map:?}"))
        .to_owned()
}

fn list(map: &Mapping, key: &str) -> Vec<String> {
    map.get(key)
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("no list {key} in {map:?}"))
        .iter()
        .map(|v| v.as_str().expect("string item").to_owned())
        .collect()
}

const SIXPN: &str = "fdaa:0:1:a7b:1:2:3:2";

/// The flags of a fully described bootstrap server ctrl-0.
const CTRL_0: [&str; 10] = [
    "--node",
    "ctrl-0",
    "--private-ip",
    SIXPN,
    "--ipv4",
    "172.19.0.2",
    "--machine-id",
    "e784079b449483",
    "--zone",
    "c2e1",
];

#[test]
fn render_bootstrap_server_prints_a_dual_stack_ipv6_first_server_config() {
    let out = render("fly-k3s-poc", &CTRL_0);
    let map = yaml(&out);
    assert_eq!(
        text(&map, "node-name"),
        "e784079b449483.vm.fly-k3s-poc-cp.internal"
    );
    assert_eq!(list(&map, "node-ip"), [SIXPN, "172.19.0.2"]);
    assert_eq!(list(&map, "node-external-ip"), [SIXPN]);
    assert_eq!(
        list(&map, "cluster-cidr"),
        ["dead:beef:1::/56", "10.1.0.0/16"]
    );
    assert_eq!(
        list(&map, "service-cidr"),
        ["dead:beef:1:1::/112", "10.2.0.0/16"]
    );
    assert_eq!(list(&map, "cluster-dns"), ["dead:beef:1:1::10"]);
    assert_eq!(text(&map, "flannel-backend"), "wireguard-native");
    assert_eq!(
        list(&map, "node-label"),
        [
            "topology.kubernetes.io/region=sjc",
            "topology.kubernetes.io/zone=c2e1"
        ]
    );
    assert_eq!(map.get("cluster-init"), Some(&Value::Bool(true)));
    assert!(!map.contains_key("server") && !map.contains_key("token"));
    assert_eq!(stderr(&out), "", "no notes when every flag is given");
}

/// issue 13 "done when": the seed cluster's flannel carries IPv4 pods over the 6PN. The k3s
/// config points flannel at eth0, at the net-conf file, and at the 6PN as the external IP;
/// the net-conf runs wireguard in Mode ipv6 with one port (reference/flannel-dualstack.md).
#[test]
fn render_fly_k3s_poc_flannel_conf_carries_ipv4_pods_over_the_6pn() {
    let map = yaml(&render("fly-k3s-poc", &CTRL_0));
    assert_eq!(
        text(&map, "flannel-conf"),
        "/data/k3s/flannel-net-conf.json"
    );
    assert_eq!(text(&map, "flannel-iface"), "eth0");
    assert_eq!(map.get("flannel-external-ip"), Some(&Value::Bool(true)));
    assert_eq!(list(&map, "node-external-ip"), [SIXPN]);

    let mut args = CTRL_0.to_vec();
    args.push("--flannel-conf");
    let out = render("fly-k3s-poc", &args);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let conf: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("net-conf is JSON");
    assert_eq!(conf["Network"], "10.1.0.0/16");
    assert_eq!(conf["IPv6Network"], "dead:beef:1::/56");
    assert_eq!(conf["EnableIPv4"], true);
    assert_eq!(conf["EnableIPv6"], true);
    assert_eq!(conf["Backend"]["Type"], "wireguard");
    assert_eq!(conf["Backend"]["Mode"], "ipv6");
    assert_eq!(conf["Backend"]["ListenPort"], 51820);
    assert_eq!(conf["Backend"]["ListenPortV6"], 51820);
}

#[test]
fn render_flannel_conf_of_an_ipv6_only_cluster_is_a_usage_error_saying_why() {
    let mut args = CTRL_0.to_vec();
    args.push("--flannel-conf");
    let out = render("lab", &args);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains(
            "--flannel-conf: cluster lab has no flannel net-conf of its own (FLANNEL_BACKEND vxlan, CLUSTER_CIDR fd10:42::/56)"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn render_ipv6_only_lab_leaves_the_ipv4_out_and_says_so() {
    let out = render("lab", &CTRL_0);
    let map = yaml(&out);
    assert_eq!(list(&map, "node-ip"), [SIXPN]);
    assert_eq!(list(&map, "cluster-cidr"), ["fd10:42::/56"]);
    assert_eq!(list(&map, "service-cidr"), ["fd10:43::/112"]);
    assert_eq!(list(&map, "cluster-dns"), ["fd10:43::a"]);
    assert_eq!(text(&map, "flannel-backend"), "vxlan");
    assert!(!map.contains_key("flannel-conf"));
    assert!(
        stderr(&out).contains("--ipv4 172.19.0.2 left out: cluster lab is IPv6-only"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn render_joining_server_dials_the_bootstrap_machine_and_reads_the_token_file() {
    let out = render(
        "lab",
        &[
            "--node",
            "ctrl-2",
            "--private-ip",
            SIXPN,
            "--ipv4",
            "172.19.0.4",
            "--machine-id",
            "4d8911e0f30987",
            "--zone",
            "c2e1",
            "--bootstrap-id",
            "e784079b449483",
        ],
    );
    let map = yaml(&out);
    assert_eq!(
        text(&map, "server"),
        "https://e784079b449483.vm.lab-cp.internal:6443"
    );
    assert_eq!(text(&map, "token-file"), "/etc/fks/k3s-token");
    assert!(!map.contains_key("cluster-init") && !map.contains_key("token"));
}

#[test]
fn render_bootstrap_node_id_env_picks_the_bootstrap_server() {
    let out = run(
        "lab",
        &[
            "--node",
            "ctrl-1",
            "--private-ip",
            SIXPN,
            "--ipv4",
            "172.19.0.3",
        ],
        Some("1"),
    );
    let map = yaml(&out);
    assert_eq!(map.get("cluster-init"), Some(&Value::Bool(true)));
}

#[test]
fn render_worker_joins_the_cp_app_with_agent_keys_only() {
    let out = render(
        "fly-k3s-poc",
        &[
            "--node",
            "worker-ng-gpu-3",
            "--private-ip",
            SIXPN,
            "--ipv4",
            "172.19.0.9",
            "--machine-id",
            "91857e3c2d4e68",
            "--zone",
            "b3f0",
        ],
    );
    let map = yaml(&out);
    assert_eq!(
        text(&map, "node-name"),
        "91857e3c2d4e68.vm.fly-k3s-poc-ng-gpu.internal"
    );
    assert_eq!(text(&map, "server"), "https://fly-k3s-poc-cp.internal:6443");
    assert_eq!(list(&map, "node-ip"), [SIXPN, "172.19.0.9"]);
    for server_only in ["cluster-cidr", "tls-san", "flannel-backend", "cluster-init"] {
        assert!(
            !map.contains_key(server_only),
            "{server_only} in an agent config"
        );
    }
}

#[test]
fn render_without_machine_id_and_zone_says_what_it_fell_back_to() {
    let out = render(
        "lab",
        &[
            "--node",
            "worker-ng-a-0",
            "--private-ip",
            SIXPN,
            "--ipv4",
            "172.19.0.9",
        ],
    );
    let map = yaml(&out);
    assert_eq!(
        text(&map, "node-name"),
        "worker-ng-a-0.vm.lab-ng-a.internal"
    );
    assert_eq!(
        list(&map, "node-label"),
        ["topology.kubernetes.io/region=sjc"]
    );
    let err = stderr(&out);
    assert!(
        err.contains("no --machine-id: node-name falls back to worker-ng-a-0.vm.lab-ng-a.internal"),
        "{err}"
    );
    assert!(err.contains("no --zone"), "{err}");
}

#[test]
fn render_joining_server_without_bootstrap_id_is_a_usage_error() {
    let out = render(
        "lab",
        &[
            "--node",
            "ctrl-1",
            "--private-ip",
            SIXPN,
            "--ipv4",
            "172.19.0.3",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("--bootstrap-id is required: ctrl-1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn render_dual_stack_cluster_without_ipv4_is_a_usage_error() {
    let out = render("fly-k3s-poc", &["--node", "ctrl-0", "--private-ip", SIXPN]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--ipv4 is required"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn render_bad_flag_values_exit_2_naming_the_flag() {
    let cases: [(&[&str], &str); 6] = [
        (&["--node", "node-7", "--private-ip", SIXPN], "--node"),
        (&["--node", "worker-ng-a", "--private-ip", SIXPN], "--node"),
        (
            &["--node", "ctrl-0", "--private-ip", "172.19.0.2"],
            "--private-ip",
        ),
        (
            &[
                "--node",
                "ctrl-0",
                "--private-ip",
                SIXPN,
                "--ipv4",
                "fdaa::1",
            ],
            "--ipv4",
        ),
        (
            &[
                "--node",
                "ctrl-0",
                "--private-ip",
                SIXPN,
                "--ipv4",
                "172.19.0.2",
                "--zone",
                "a\nb: c",
            ],
            "--zone",
        ),
        (
            &[
                "--node",
                "ctrl-0",
                "--private-ip",
                SIXPN,
                "--ipv4",
                "172.19.0.2",
                "--machine-id",
                "x\"y",
            ],
            "--machine-id",
        ),
    ];
    for (args, flag) in cases {
        let out = render("lab", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
        assert!(stderr(&out).contains(flag), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn render_missing_cluster_dir_is_a_usage_error() {
    let out = render(
        "no-such-cluster",
        &["--node", "ctrl-0", "--private-ip", SIXPN],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no-such-cluster"), "{}", stderr(&out));
}

#[test]
fn render_help_documents_the_fallbacks() {
    let out = fks()
        .args(["render", "--help"])
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for flag in [
        "--machine-id",
        "--ipv4",
        "--zone",
        "--bootstrap-id",
        "BOOTSTRAP_NODE_ID",
        "--flannel-conf",
    ] {
        assert!(help.contains(flag), "{flag} missing from help:\n{help}");
    }
    assert!(help.contains("falls back to"), "{help}");
}
