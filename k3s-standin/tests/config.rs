//! Config parsing and every rejection rule of the stand-in (reference/k3s.md §1, §3, §4),
//! through the library's `config::load` with temp config files and an explicit environment.

use std::collections::BTreeMap;
use std::path::Path;

use k3s_standin::config::{load, Error, Role, Settings};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// An environment that says the node's IPv4 is routable, so these tests do not depend on the
/// routing table of the machine they run on (the flannel rule has its own tests/flannel.rs).
fn env() -> BTreeMap<String, String> {
    BTreeMap::from([(
        k3s_standin::flannel::REACH_ENV.to_owned(),
        "routable".to_owned(),
    )])
}

fn server(yaml: &str) -> Result<Settings, Error> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "config.yaml", yaml);
    load(Role::Server, &["--config".into(), cfg], &env())
}

fn agent(yaml: &str) -> Result<Settings, Error> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "config.yaml", yaml);
    load(Role::Agent, &["--config".into(), cfg], &env())
}

fn err(r: Result<Settings, Error>) -> String {
    r.expect_err("the config must be refused").to_string()
}

const DUAL: &str = "node-ip: \"fdaa::1,10.0.0.1\"\ncluster-cidr: \"fd00:42::/56,10.42.0.0/16\"\nservice-cidr: \"fd00:43::/112,10.43.0.0/16\"\n";

#[test]
fn ipv6_first_dual_stack_config_resolves_in_order() {
    let s = server(&format!("{DUAL}cluster-init: true\ntls-san: [\"a.internal\", \"b,c\"]\nnode-label: [\"topology.kubernetes.io/region=iad\"]\nnode-taint: [\"CriticalAddonsOnly=true:NoExecute\"]\nwrite-kubeconfig-mode: \"0644\"\n")).unwrap();
    assert!(s.cluster_init);
    assert_eq!(s.node_ips[0].to_string(), "fdaa::1");
    assert_eq!(s.cluster_cidrs[0].to_string(), "fd00:42::/56");
    assert_eq!(
        s.cluster_dns
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["fd00:43::a", "10.43.0.10"]
    );
    assert_eq!(s.tls_sans, ["a.internal", "b", "c"]);
    assert_eq!(
        s.node_labels,
        [("topology.kubernetes.io/region".to_owned(), "iad".to_owned())]
    );
    assert_eq!(s.node_taints[0].effect, "NoExecute");
    assert_eq!(s.write_kubeconfig_mode, 0o644);
    assert_eq!(s.https_port, 6443);
}

#[test]
fn defaults_follow_the_first_node_ip_family() {
    let s = server("node-ip: \"fdaa::1\"\n").unwrap();
    assert_eq!(s.cluster_cidrs[0].to_string(), "fd00:42::/56");
    assert_eq!(s.service_cidrs[0].to_string(), "fd00:43::/112");
    assert_eq!(s.cluster_dns[0].to_string(), "fd00:43::a");
}

#[test]
fn env_config_file_wins_over_the_config_flag_and_dropins_merge() {
    let dir = tempfile::tempdir().unwrap();
    let flag_cfg = write(dir.path(), "flag.yaml", "node-name: from-flag\n");
    let env_cfg = write(
        dir.path(),
        "env.yaml",
        "node-name: from-env\nnode-label: [\"a=1\"]\ntls-san: [\"x\"]\n",
    );
    write(
        dir.path(),
        "env.yaml.d/01.yaml",
        "node-label+: [\"b=2\"]\ntls-san: [\"y\"]\n",
    );
    write(dir.path(), "env.yaml.d/02.yml", "node-label+: [\"c=3\"]\n");
    write(
        dir.path(),
        "env.yaml.d/03.txt",
        "not-a-flag: ignored because not yaml\n",
    );
    let mut e = env();
    e.insert("K3S_CONFIG_FILE".into(), env_cfg);
    let s = load(Role::Server, &["--config".into(), flag_cfg], &e).unwrap();
    assert_eq!(s.node_name, "from-env");
    let labels: Vec<&str> = s.node_labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(labels, ["a", "b", "c"]);
    assert_eq!(s.tls_sans, ["y"]);
}

#[test]
fn command_line_beats_config_file_beats_env() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.yaml", "node-name: file\n");
    let mut e = env();
    e.insert("K3S_NODE_NAME".into(), "env".into());
    let s = load(Role::Server, &["-c".into(), cfg.clone()], &e).unwrap();
    assert_eq!(s.node_name, "file");
    let s = load(
        Role::Server,
        &["-c".into(), cfg, "--node-name=cli".into()],
        &e,
    )
    .unwrap();
    assert_eq!(s.node_name, "cli");
}

#[test]
fn server_refuses_keys_that_are_not_server_flags() {
    let m = err(server("no-such-flag: 1\n"));
    assert!(
        m.starts_with("Unknown flag --no-such-flag found in config file"),
        "{m}"
    );
    let m = err(server("disable-apiserver-lb: true\n"));
    assert!(m.contains("--disable-apiserver-lb"), "{m}");
}

#[test]
fn agent_refuses_server_only_keys_like_urfave() {
    let m = err(agent(
        "server: https://[fdaa::1]:6443\ntoken: t\ncluster-cidr: 10.42.0.0/16\n",
    ));
    assert!(
        m.contains("--cluster-cidr") && m.contains("flag provided but not defined"),
        "{m}"
    );
}

#[test]
fn unknown_command_line_flag_is_not_defined() {
    let m = load(Role::Agent, &["--write-kubeconfig=/x".into()], &env())
        .unwrap_err()
        .to_string();
    assert_eq!(m, "flag provided but not defined: -write-kubeconfig");
}

#[test]
fn typed_flags_must_parse() {
    assert_eq!(
        err(server("cluster-init: maybe\n")),
        "invalid value \"maybe\" for flag -cluster-init: parse error"
    );
    assert_eq!(
        err(server("https-listen-port: abc\n")),
        "invalid value \"abc\" for flag -https-listen-port: parse error"
    );
}

#[test]
fn cluster_and_service_cidr_families_must_match_in_order() {
    let m = err(server("node-ip: \"fdaa::1,10.0.0.1\"\ncluster-cidr: \"fd00:42::/56,10.42.0.0/16\"\nservice-cidr: \"10.43.0.0/16,fd00:43::/112\"\n"));
    assert!(
        m.starts_with("cluster-cidr: [\"fd00:42::/56\", \"10.42.0.0/16\"] and service-cidr:"),
        "{m}"
    );
    assert!(
        m.ends_with("must share the same IP version (IPv4, IPv6 or dual-stack)"),
        "{m}"
    );
    let m = err(server("node-ip: \"fdaa::1,10.0.0.1\"\ncluster-cidr: \"fd00:42::/56,10.42.0.0/16\"\nservice-cidr: \"fd00:43::/112\"\n"));
    assert!(m.contains("service-cidr"), "{m}");
}

#[test]
fn node_ip_family_order_must_match_cluster_cidr() {
    let m = err(server("node-ip: \"10.0.0.1,fdaa::1\"\ncluster-cidr: \"fd00:42::/56,10.42.0.0/16\"\nservice-cidr: \"fd00:43::/112,10.43.0.0/16\"\n"));
    assert!(
        m.contains("and node-ip: [\"10.0.0.1\", \"fdaa::1\"], must share the same IP version"),
        "{m}"
    );
    let m = err(server("node-ip: \"fdaa::1\"\ncluster-cidr: \"fd00:42::/56,10.42.0.0/16\"\nservice-cidr: \"fd00:43::/112,10.43.0.0/16\"\n"));
    assert!(m.contains("node-ip"), "{m}");
}

#[test]
fn cidrs_and_ips_must_parse() {
    assert_eq!(
        err(server("cluster-cidr: \"fd00:42::/560\"\n")),
        "invalid cluster-cidr fd00:42::/560"
    );
    assert_eq!(
        err(server("service-cidr: \"10.43.0.0\"\n")),
        "invalid service-cidr 10.43.0.0"
    );
    assert_eq!(
        err(server("node-ip: \"fdaa::zz\"\n")),
        "invalid node-ip fdaa::zz"
    );
    assert_eq!(
        err(server("node-external-ip: \"1.2.3\"\n")),
        "invalid node-external-ip 1.2.3"
    );
    assert_eq!(
        err(server(&format!("{DUAL}cluster-dns: \"nope\"\n"))),
        "invalid cluster-dns address nope"
    );
    let m = err(server("node-ip: \"fdaa::1,fdaa::2\"\n"));
    assert!(m.contains("at most one entry per IP family"), "{m}");
}

#[test]
fn cluster_dns_must_be_inside_service_cidr() {
    let m = err(server(&format!("{DUAL}cluster-dns: \"fd00:44::a\"\n")));
    assert!(
        m.starts_with("cluster-dns fd00:44::a is not inside any service-cidr"),
        "{m}"
    );
    server(&format!("{DUAL}cluster-dns: \"fd00:43::a,10.43.0.10\"\n")).unwrap();
}

#[test]
fn ipv6_service_cidr_larger_than_112_is_refused() {
    let m = err(server(
        "node-ip: \"fdaa::1\"\ncluster-cidr: \"fd00:42::/56\"\nservice-cidr: \"fd00:43::/108\"\n",
    ));
    assert!(
        m.starts_with("service-cidr fd00:43::/108 is too large: the largest allowed is /112"),
        "{m}"
    );
    let m = err(server(
        "node-ip: \"10.0.0.1\"\nservice-cidr: \"10.0.0.0/8\"\n",
    ));
    assert!(m.contains("/12"), "{m}");
    server(
        "node-ip: \"fdaa::1\"\ncluster-cidr: \"fd00:42::/56\"\nservice-cidr: \"fd00:43::/120\"\n",
    )
    .unwrap();
}

#[test]
fn node_cidr_size_limit_is_sixteen_bits() {
    let base = "node-ip: \"fdaa::1\"\nservice-cidr: \"fd00:43::/112\"\n";
    let m = err(server(&format!("{base}cluster-cidr: \"fd00:42::/40\"\n")));
    assert_eq!(m, "cluster-cidr fd00:42::/40 with node CIDR mask /64: New CIDR set failed; the node CIDR size is too big");
    server(&format!("{base}cluster-cidr: \"fd00:42::/48\"\n")).unwrap();
    server(&format!("{base}cluster-cidr: \"fd00:42::/40\"\nkube-controller-manager-arg: [\"node-cidr-mask-size-ipv6=56\"]\n")).unwrap();
    let m = err(server(&format!("{base}cluster-cidr: \"fd00:42::/96\"\n")));
    assert!(m.contains("smaller than the node CIDR mask /64"), "{m}");
}

#[test]
fn flannel_backend_must_be_known() {
    assert_eq!(
        err(server("flannel-backend: wireguard\n")),
        "Cannot configure unknown flannel backend 'wireguard'"
    );
    for b in ["vxlan", "host-gw", "wireguard-native", "none"] {
        server(&format!("flannel-backend: {b}\n")).unwrap();
    }
    assert!(err(server("egress-selector-mode: all\n")).contains("egress-selector-mode"));
}

#[test]
fn server_url_must_be_https() {
    assert_eq!(
        err(agent("server: http://[fdaa::1]:6443\ntoken: t\n")),
        "only https:// URLs are supported, invalid scheme: http://[fdaa::1]:6443"
    );
}

#[test]
fn agents_need_server_and_token() {
    assert_eq!(err(agent("token: t\n")), "--server is required");
    assert_eq!(
        err(agent("server: https://[fdaa::1]:6443\n")),
        "--token is required"
    );
    let dir = tempfile::tempdir().unwrap();
    let tf = write(dir.path(), "token", "secret\n");
    let s = agent(&format!(
        "server: https://[fdaa::1]:6443\ntoken-file: {tf}\n"
    ))
    .unwrap();
    assert_eq!(s.token.as_deref(), Some("secret"));
    let m = err(agent(
        "server: https://[fdaa::1]:6443\ntoken-file: /nonexistent/token\n",
    ));
    assert!(
        m.starts_with("reading token-file /nonexistent/token"),
        "{m}"
    );
}

#[test]
fn joining_server_needs_a_token() {
    assert_eq!(
        err(server("server: https://[fdaa::1]:6443\n")),
        "token is required to join a cluster"
    );
    assert!(server("server: https://[fdaa::1]:6443\ntoken: t\nnode-ip: \"fdaa::2\"\n").is_ok());
}

#[test]
fn cluster_reset_rules() {
    assert_eq!(
        err(server("cluster-reset-restore-path: /x\n")),
        "--cluster-reset-restore-path requires --cluster-reset"
    );
    assert_eq!(
        err(server(
            "cluster-reset: true\nserver: https://a:6443\ntoken: t\n"
        )),
        "--cluster-reset cannot be used with --server"
    );
}

#[test]
fn taints_and_labels_must_be_well_formed() {
    assert!(err(server("node-taint: [\"a=b:Sometimes\"]\n"))
        .starts_with("invalid node-taint a=b:Sometimes"));
    assert!(err(server("node-label: [\"novalue\"]\n")).starts_with("invalid node-label novalue"));
}

#[test]
fn bad_kubeconfig_mode_is_a_warning_not_an_error() {
    let s = server("write-kubeconfig-mode: \"9x\"\n").unwrap();
    assert_eq!(s.write_kubeconfig_mode, 0o600);
    assert_eq!(s.warnings.len(), 1);
}
