//! The stand-in's flannel rule (issue 13): when the node's IPv4 reaches only its host, a config
//! whose flannel would carry IPv4 pods over IPv4 is refused with a message naming the rule;
//! what fks-bootstrap renders for a dual-stack cluster (wireguard Mode ipv6) is accepted.
//! Through `config::load` with temp files and an explicit environment, and once through the
//! binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use k3s_standin::config::{load, Error, Role, Settings};
use k3s_standin::flannel::{REACH_ENV, RULE};

const BIN: &str = env!("CARGO_BIN_EXE_k3s-standin");

const DUAL: &str = "node-ip: \"fdaa::1,172.19.0.2\"\ncluster-cidr: \"fd00:42::/56,10.42.0.0/16\"\nservice-cidr: \"fd00:43::/112,10.43.0.0/16\"\n";
const SIX: &str =
    "node-ip: \"fdaa::1\"\ncluster-cidr: \"fd00:42::/56\"\nservice-cidr: \"fd00:43::/112\"\n";

fn env(reach: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(REACH_ENV.to_owned(), reach.to_owned())])
}

/// Load `yaml` as `role` with the node's IPv4 `reach`; `conf` (a net-conf) is written next to
/// it and `{conf}` in `yaml` replaced by its path.
fn load_with(role: Role, yaml: &str, conf: Option<&str>, reach: &str) -> Result<Settings, Error> {
    let dir = tempfile::tempdir().unwrap();
    let conf_path = dir.path().join("flannel-net-conf.json");
    if let Some(text) = conf {
        std::fs::write(&conf_path, text).unwrap();
    }
    let yaml = yaml.replace("{conf}", &conf_path.display().to_string());
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    load(
        role,
        &["--config".into(), cfg.display().to_string()],
        &env(reach),
    )
}

fn refused(r: Result<Settings, Error>) -> String {
    let e = r.expect_err("the config must be refused").to_string();
    assert!(e.contains(&format!("rule: {RULE}")), "{e}");
    e
}

/// The net-conf fks-bootstrap renders for its seed cluster (dual-stack, wireguard-native).
fn rendered_net_conf() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clusters/fly-k3s-poc");
    let config = fks_bootstrap::config::load(&dir).expect("seed cluster loads");
    fks_bootstrap::render::flannel::net_conf(&config).expect("dual-stack wireguard-native")
}

#[test]
fn dual_stack_vxlan_and_host_gw_are_refused_when_ipv4_is_host_only() {
    for backend in ["vxlan", "host-gw"] {
        let yaml = format!("{DUAL}flannel-backend: {backend}\n");
        let e = refused(load_with(Role::Server, &yaml, None, "host-only"));
        assert!(
            e.starts_with(&format!(
                "flannel would carry IPv4 pods between nodes over this node's IPv4 172.19.0.2 (flannel-backend {backend} with a dual-stack cluster-cidr), but that IPv4 reaches only this machine's host (K3S_STANDIN_IPV4_REACH=host-only)"
            )),
            "{e}"
        );
        // The same config is fine where IPv4 is routable between machines.
        load_with(Role::Server, &yaml, None, "routable").unwrap();
    }
    // k3s's default backend is vxlan (reference/k3s.md §2).
    refused(load_with(Role::Server, DUAL, None, "host-only"));
}

#[test]
fn k3s_own_wireguard_native_net_conf_is_refused_it_runs_separate() {
    let yaml = format!("{DUAL}flannel-backend: wireguard-native\n");
    let e = refused(load_with(Role::Server, &yaml, None, "host-only"));
    assert!(e.contains("k3s's net-conf has no Mode, so separate"), "{e}");
}

#[test]
fn the_net_conf_fks_bootstrap_renders_is_accepted_on_servers_and_agents() {
    let conf = rendered_net_conf();
    let yaml = format!("{DUAL}flannel-backend: wireguard-native\nflannel-conf: \"{{conf}}\"\n");
    let s = load_with(Role::Server, &yaml, Some(&conf), "host-only").unwrap();
    assert!(s.flannel_conf.is_some());
    let agent = "server: \"https://lab-cp.internal:6443\"\ntoken: t\nnode-ip: \"fdaa::2,172.19.0.3\"\nflannel-conf: \"{conf}\"\n";
    load_with(Role::Agent, agent, Some(&conf), "host-only").unwrap();
}

#[test]
fn flannel_conf_modes_that_keep_ipv4_pods_on_ipv4_are_refused() {
    let yaml = format!("{DUAL}flannel-backend: wireguard-native\nflannel-conf: \"{{conf}}\"\n");
    for mode in ["separate", "auto", "ipv4"] {
        let conf = format!(
            "{{\"Network\":\"10.42.0.0/16\",\"EnableIPv6\":true,\"IPv6Network\":\"fd00:42::/56\",\"Backend\":{{\"Type\":\"wireguard\",\"Mode\":\"{mode}\"}}}}"
        );
        let e = refused(load_with(Role::Server, &yaml, Some(&conf), "host-only"));
        assert!(e.contains(&format!("wireguard Mode {mode}")), "{e}");
        // Agents check their own file too.
        let agent = "server: \"https://x.internal:6443\"\ntoken: t\nnode-ip: \"fdaa::2,172.19.0.3\"\nflannel-conf: \"{conf}\"\n";
        refused(load_with(Role::Agent, agent, Some(&conf), "host-only"));
    }
    // IPv4 disabled in the net-conf: no IPv4 pod traffic, nothing to refuse.
    let v6_only = "{\"EnableIPv4\":false,\"EnableIPv6\":true,\"IPv6Network\":\"fd00:42::/56\",\"Backend\":{\"Type\":\"vxlan\"}}";
    load_with(Role::Server, &yaml, Some(v6_only), "host-only").unwrap();
}

#[test]
fn mode_ipv6_with_different_listen_ports_is_refused_even_when_ipv4_is_routable() {
    let yaml = format!("{DUAL}flannel-backend: wireguard-native\nflannel-conf: \"{{conf}}\"\n");
    // ListenPortV6 left at flannel's default 51821 while the one device listens on 51820.
    let conf = "{\"Network\":\"10.42.0.0/16\",\"EnableIPv6\":true,\"IPv6Network\":\"fd00:42::/56\",\"Backend\":{\"Type\":\"wireguard\",\"Mode\":\"ipv6\"}}";
    let e = load_with(Role::Server, &yaml, Some(conf), "routable")
        .expect_err("port mismatch")
        .to_string();
    assert!(
        e.contains("wireguard Mode ipv6 listens on ListenPort 51820 but peers dial ListenPortV6 51821: set both to one port"),
        "{e}"
    );
}

#[test]
fn ipv6_only_clusters_and_backend_none_pass_with_a_host_only_ipv4() {
    for backend in ["vxlan", "host-gw", "wireguard-native"] {
        load_with(
            Role::Server,
            &format!("{SIX}flannel-backend: {backend}\n"),
            None,
            "host-only",
        )
        .unwrap();
    }
    load_with(
        Role::Server,
        &format!("{DUAL}flannel-backend: none\n"),
        None,
        "host-only",
    )
    .unwrap();
    // An agent without flannel-conf follows the server's backend, which the server checks.
    let agent = "server: \"https://x.internal:6443\"\ntoken: t\nnode-ip: \"fdaa::2,172.19.0.3\"\n";
    load_with(Role::Agent, agent, None, "host-only").unwrap();
}

#[test]
fn unreadable_or_malformed_flannel_conf_is_named() {
    let yaml = format!("{DUAL}flannel-conf: \"{{conf}}\"\n");
    let e = load_with(Role::Server, &yaml, None, "routable")
        .expect_err("missing file")
        .to_string();
    assert!(e.starts_with("reading flannel-conf "), "{e}");
    let e = load_with(Role::Server, &yaml, Some("{not json"), "routable")
        .expect_err("bad JSON")
        .to_string();
    assert!(e.contains("flannel-net-conf.json: not JSON"), "{e}");
    let e = load_with(
        Role::Server,
        &yaml,
        Some("{\"EnableIPv4\":\"yes\"}"),
        "routable",
    )
    .expect_err("bad type")
    .to_string();
    assert!(e.contains("EnableIPv4 is \"yes\", not a boolean"), "{e}");
}

#[test]
fn the_binary_refuses_an_unsafe_config_with_exit_1_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{DUAL}flannel-backend: vxlan\ndata-dir: \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["server", "--config"])
        .arg(&cfg)
        .env_remove("K3S_CONFIG_FILE")
        .env(REACH_ENV, "host-only")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("rule: {RULE}")), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is started or written"
    );
}
