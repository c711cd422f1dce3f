//! Tests of the k3s config renderer: golden files per role, every key checked against the k3s
//! flag table, IPv6-first lists, and a property test that no free-text value can change the
//! YAML's structure.
//!
//! Golden files live in `tests/golden/render/`. After an intended template change, regenerate
//! them with `UPDATE_GOLDEN=1 cargo test -p fks-bootstrap --lib render::` and review the diff.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_yaml_ng::{Mapping, Value};

use super::flags::{self, Kind};
use super::*;
use crate::config::{CpuKind, FlannelBackend, VmSpec};

/// A dual-stack cluster like `clusters/lab`.
pub(crate) fn lab_config() -> Config {
    let vm = |preset: &str, cpu_kind, cpus, memory_mb| VmSpec {
        preset: preset.into(),
        cpu_kind,
        cpus,
        memory_mb,
    };
    Config {
        source: PathBuf::from("clusters/lab/config"),
        cluster_name: "lab".into(),
        cluster_cidr: vec![
            "fd00:42::/56".parse().unwrap(),
            "10.42.0.0/16".parse().unwrap(),
        ],
        service_cidr: vec![
            "fd00:43::/112".parse().unwrap(),
            "10.43.0.0/16".parse().unwrap(),
        ],
        cluster_dns: vec!["fd00:43::a".parse().unwrap(), "10.43.0.10".parse().unwrap()],
        region: "sjc".into(),
        node_group_size: 3,
        volume_size_gb: 10,
        volume_name: "k3s_data".into(),
        cp_vm: vm("performance-2x", CpuKind::Performance, 2, 4096),
        worker_vm: vm("shared-cpu-2x", CpuKind::Shared, 2, 2048),
        k3s_version: "v1.30.4+k3s1".into(),
        org_name: "personal".into(),
        flannel_backend: FlannelBackend::WireguardNative,
        image: None,
        node_image_base: crate::config::DEFAULT_NODE_IMAGE_BASE.into(),
        allow_ipv6_only_pod_traffic: false,
        ssh_port: 2222,
    }
}

/// An IPv6-only cluster on vxlan: one range per list.
pub(crate) fn ipv6_only_config() -> Config {
    let mut c = lab_config();
    c.cluster_cidr.truncate(1);
    c.service_cidr.truncate(1);
    c.cluster_dns.truncate(1);
    c.flannel_backend = FlannelBackend::Vxlan;
    c
}

pub(crate) fn node(role: Role, name: &str, app: &str) -> Node {
    Node {
        name: name.into(),
        role,
        app: app.into(),
        machine_id: "e784079b449483".into(),
        private_ip: "fdaa:0:1:a7b:1:2:3:2".parse().unwrap(),
        ipv4: Some("172.19.0.2".parse().unwrap()),
        region: "sjc".into(),
        zone: Some("c2e1".into()),
    }
}

pub(crate) fn bootstrap_node() -> Node {
    node(Role::BootstrapServer, "ctrl-0", "lab-cp")
}

fn joining_node() -> Node {
    node(
        Role::JoiningServer {
            bootstrap_machine_id: "3d8d9e1c4e1e08".into(),
        },
        "ctrl-1",
        "lab-cp",
    )
}

pub(crate) fn agent_node() -> Node {
    node(Role::Agent, "worker-ng-a-0", "lab-ng-a")
}

/// The three roles with their golden file names.
pub(crate) fn roles() -> [(&'static str, Node); 3] {
    [
        ("server-bootstrap", bootstrap_node()),
        ("server-join", joining_node()),
        ("agent", agent_node()),
    ]
}

pub(crate) fn parse(yaml: &str) -> Mapping {
    match serde_yaml_ng::from_str::<Value>(yaml) {
        Ok(Value::Mapping(m)) => m,
        other => panic!("rendered config is not a YAML mapping: {other:?}\n{yaml}"),
    }
}

fn keys(map: &Mapping) -> Vec<String> {
    map.keys()
        .map(|k| k.as_str().expect("string key").to_owned())
        .collect()
}

pub(crate) fn str_list(map: &Mapping, key: &str) -> Vec<String> {
    map.get(key)
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("{key} is not a list"))
        .iter()
        .map(|v| v.as_str().expect("string item").to_owned())
        .collect()
}

pub(crate) fn str_of(map: &Mapping, key: &str) -> String {
    map.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{key} is not a string"))
        .to_owned()
}

const NODE_KEYS: [&str; 7] = [
    "node-name",
    "data-dir",
    "node-ip",
    "node-external-ip",
    "node-label",
    "kubelet-arg",
    "flannel-iface",
];

/// The exact key set, in order, of each role; `flannel-conf` when the cluster has a net-conf
/// of its own (dual-stack on wireguard-native).
fn expected_keys(role: &Role, flannel_conf: bool) -> Vec<&'static str> {
    let mut common = NODE_KEYS.to_vec();
    if flannel_conf {
        common.push("flannel-conf");
    }
    let server = [
        "cluster-cidr",
        "service-cidr",
        "cluster-dns",
        "flannel-backend",
        "flannel-external-ip",
        "flannel-ipv6-masq",
        "etcd-expose-metrics",
        "tls-san",
        "write-kubeconfig-mode",
    ];
    let mut keys: Vec<&str> = common;
    match role {
        Role::BootstrapServer => {
            keys.extend(server);
            keys.push("cluster-init");
        }
        Role::JoiningServer { .. } => {
            keys.extend(server);
            keys.extend(["server", "token-file"]);
        }
        Role::Agent => keys.extend(["server", "token-file"]),
    }
    keys
}

/// Compare `got` with the golden file `name` (or rewrite it under UPDATE_GOLDEN).
pub(crate) fn check_golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/render")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(got, want, "{name} differs from {}", path.display());
}

/// Dual-stack on wireguard-native (the default): every role, plus the flannel net-conf.
#[test]
fn rendered_configs_match_golden_files() {
    for (name, node) in roles() {
        check_golden(
            &format!("{name}.yaml"),
            &render(&lab_config(), &node).unwrap(),
        );
    }
}

/// IPv6-only on vxlan (clusters/lab's shape): every role, and no net-conf of ours.
#[test]
fn ipv6_only_vxlan_configs_match_golden_files() {
    assert_eq!(flannel::net_conf(&ipv6_only_config()), None);
    for (name, mut node) in roles() {
        node.ipv4 = None;
        check_golden(
            &format!("ipv6-only-vxlan/{name}.yaml"),
            &render(&ipv6_only_config(), &node).unwrap(),
        );
    }
}

#[test]
fn every_key_is_a_k3s_flag_of_the_role_with_the_right_type() {
    for config in [lab_config(), ipv6_only_config()] {
        for (name, node) in roles() {
            let map = parse(&render(&config, &node).unwrap());
            let own_conf = flannel::net_conf(&config).is_some();
            assert_eq!(keys(&map), expected_keys(&node.role, own_conf), "{name}");
            for (key, value) in &map {
                let key = key.as_str().unwrap();
                let flag =
                    flags::lookup(key).unwrap_or_else(|| panic!("{name}: {key} is not a k3s flag"));
                let allowed = if node.role.is_server() {
                    flag.scope.on_server()
                } else {
                    flag.scope.on_agent()
                };
                assert!(allowed, "{name}: {key} is a {:?} flag", flag.scope);
                let type_ok = match flag.kind {
                    Kind::Slice => value
                        .as_sequence()
                        .is_some_and(|items| items.iter().all(Value::is_string)),
                    Kind::Bool => value.is_bool(),
                    Kind::String | Kind::Duration => value.is_string(),
                    Kind::Int => value.is_i64(),
                };
                assert!(
                    type_ok,
                    "{name}: {key} should be {:?}, is {value:?}",
                    flag.kind
                );
            }
        }
    }
}

#[test]
fn every_address_list_puts_ipv6_first() {
    for (name, node) in roles() {
        let map = parse(&render(&lab_config(), &node).unwrap());
        let mut lists = vec!["node-ip", "node-external-ip"];
        if node.role.is_server() {
            lists.extend(["cluster-cidr", "service-cidr", "cluster-dns"]);
        }
        for key in lists {
            let items = str_list(&map, key);
            assert!(
                items[0].contains(':'),
                "{name}: {key} starts with {}",
                items[0]
            );
            let first_v4 = items.iter().position(|i| !i.contains(':'));
            let last_v6 = items.iter().rposition(|i| i.contains(':'));
            if let (Some(v4), Some(v6)) = (first_v4, last_v6) {
                assert!(v6 < v4, "{name}: {key} has IPv6 after IPv4: {items:?}");
            }
        }
        assert_eq!(
            str_list(&map, "node-ip"),
            ["fdaa:0:1:a7b:1:2:3:2", "172.19.0.2"],
            "{name}"
        );
        assert_eq!(str_list(&map, "node-external-ip"), ["fdaa:0:1:a7b:1:2:3:2"]);
    }
}

#[test]
fn servers_join_the_bootstrap_machine_and_agents_the_cp_app() {
    let join = parse(&render(&lab_config(), &joining_node()).unwrap());
    assert_eq!(
        str_of(&join, "server"),
        "https://3d8d9e1c4e1e08.vm.lab-cp.internal:6443"
    );
    let agent = parse(&render(&lab_config(), &agent_node()).unwrap());
    assert_eq!(str_of(&agent, "server"), "https://lab-cp.internal:6443");
    for map in [join, agent] {
        assert_eq!(str_of(&map, "token-file"), TOKEN_FILE);
        assert!(!map.contains_key("token"));
    }
    let boot = parse(&render(&lab_config(), &bootstrap_node()).unwrap());
    assert_eq!(boot.get("cluster-init"), Some(&Value::Bool(true)));
    assert_eq!(
        str_list(&boot, "tls-san"),
        ["lab-cp.internal", "e784079b449483.vm.lab-cp.internal"]
    );
    assert_eq!(str_of(&boot, "write-kubeconfig-mode"), "0600");
    assert_eq!(str_of(&boot, "flannel-backend"), "wireguard-native");
}

#[test]
fn ipv6_only_cluster_gets_only_the_6pn_address() {
    let mut n = bootstrap_node();
    n.ipv4 = None;
    let map = parse(&render(&ipv6_only_config(), &n).unwrap());
    assert_eq!(str_list(&map, "node-ip"), ["fdaa:0:1:a7b:1:2:3:2"]);
    assert_eq!(str_list(&map, "cluster-cidr"), ["fd00:42::/56"]);
    assert_eq!(str_of(&map, "flannel-backend"), "vxlan");
    // An IPv4 the machine happens to have is left out: k3s wants node-ip and cluster-cidr to be
    // the same stack (reference/k3s.md §3).
    let map = parse(&render(&ipv6_only_config(), &bootstrap_node()).unwrap());
    assert_eq!(str_list(&map, "node-ip"), ["fdaa:0:1:a7b:1:2:3:2"]);
}

#[test]
fn dual_stack_cluster_without_node_ipv4_is_an_error() {
    let mut n = agent_node();
    n.ipv4 = None;
    let err = render(&lab_config(), &n).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node worker-ng-a-0: cluster lab is dual-stack (fd00:42::/56,10.42.0.0/16) but the node has no IPv4 address"
    );
}

#[test]
fn missing_zone_drops_only_the_zone_label() {
    let mut n = agent_node();
    n.zone = None;
    let map = parse(&render(&lab_config(), &n).unwrap());
    assert_eq!(
        str_list(&map, "node-label"),
        ["topology.kubernetes.io/region=sjc"]
    );
}

#[test]
fn yaml_quote_escapes_everything_outside_printable_ascii() {
    assert_eq!(yaml_quote("plain"), "\"plain\"");
    assert_eq!(yaml_quote("a\"b\\c\nd\te"), r#""a\"b\\c\nd\te""#);
    assert_eq!(
        yaml_quote("\u{85}\u{2028}\u{7f}"),
        r#""\u0085\u2028\u007F""#
    );
    assert_eq!(yaml_quote("\u{1F600}"), r#""\U0001F600""#);
    for s in [
        "yes", "0600", "null", "~", "- a", "{a: b}", "#x", "&a *b", "'",
    ] {
        let v: Value = serde_yaml_ng::from_str(&yaml_quote(s)).unwrap();
        assert_eq!(v.as_str(), Some(s));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary text in every free-text field (machine ids, app and cluster names, region,
    /// zone) never adds, drops or reshapes a key, and reads back unchanged.
    #[test]
    fn free_text_never_changes_the_yaml_structure(
        cluster in any::<String>(),
        app in any::<String>(),
        machine_id in any::<String>(),
        bootstrap_id in any::<String>(),
        region in any::<String>(),
        zone in any::<Option<String>>(),
        image in any::<String>(),
        role in 0..3u8,
    ) {
        let mut config = lab_config();
        config.cluster_name = cluster.clone();
        config.region = region.clone();
        config.image = Some(image);
        let role = match role {
            0 => Role::BootstrapServer,
            1 => Role::JoiningServer { bootstrap_machine_id: bootstrap_id.clone() },
            _ => Role::Agent,
        };
        let mut n = node(role.clone(), "ctrl-0", &app);
        n.machine_id = machine_id.clone();
        n.region = region.clone();
        n.zone = zone.clone();
        let yaml = render(&config, &n).unwrap();
        let map = parse(&yaml);
        prop_assert_eq!(keys(&map), expected_keys(&role, true));
        let own_name = format!("{machine_id}.vm.{app}.internal");
        prop_assert_eq!(str_of(&map, "node-name"), own_name.clone());
        let mut labels = vec![format!("topology.kubernetes.io/region={region}")];
        if let Some(zone) = &zone {
            labels.push(format!("topology.kubernetes.io/zone={zone}"));
        }
        prop_assert_eq!(str_list(&map, "node-label"), labels);
        match &role {
            Role::BootstrapServer => {
                prop_assert_eq!(str_list(&map, "tls-san"), vec![format!("{app}.internal"), own_name]);
            }
            Role::JoiningServer { .. } => prop_assert_eq!(
                str_of(&map, "server"),
                format!("https://{bootstrap_id}.vm.{cluster}-cp.internal:6443")
            ),
            Role::Agent => prop_assert_eq!(
                str_of(&map, "server"),
                format!("https://{cluster}-cp.internal:6443")
            ),
        }
    }
}
