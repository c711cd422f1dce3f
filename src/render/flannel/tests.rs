//! Tests of the flannel net-conf: the golden file, when one is rendered at all, and a property
//! test that follows each pod family to the outer address flannel would send it to, for every
//! valid cluster config.
//!
//! The model of flannel in [`underlays`] is reference/flannel-dualstack.md §1 (which cites
//! flannel's and k3s's source line by line); it reads only what was rendered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use proptest::prelude::*;
use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value};

use super::*;
use crate::config::{parse_shell, Diagnostics};
use crate::render::tests::{
    agent_node, bootstrap_node, check_golden, ipv6_only_config, lab_config, node, parse, roles,
    str_list, str_of,
};
use crate::render::{render, Role, FLANNEL_IFACE};

fn json(text: &str) -> Json {
    serde_json::from_str(text).expect("net-conf is JSON")
}

#[test]
fn dual_stack_wireguard_native_net_conf_matches_the_golden_file() {
    let text = net_conf(&lab_config()).expect("dual-stack wireguard-native has a net-conf");
    check_golden("dual-stack-wireguard-native.flannel-net-conf.json", &text);
    let v = json(&text);
    assert_eq!(v["Network"], "10.42.0.0/16");
    assert_eq!(v["IPv6Network"], "fd00:42::/56");
    assert_eq!(v["EnableIPv4"], true);
    assert_eq!(v["EnableIPv6"], true);
    assert_eq!(v["Backend"]["Type"], "wireguard");
    assert_eq!(v["Backend"]["Mode"], "ipv6");
    assert_eq!(v["Backend"]["ListenPort"], 51820);
    assert_eq!(v["Backend"]["ListenPortV6"], v["Backend"]["ListenPort"]);
}

#[test]
fn only_dual_stack_wireguard_native_gets_a_net_conf_of_its_own() {
    for backend in [
        FlannelBackend::Vxlan,
        FlannelBackend::HostGw,
        FlannelBackend::None,
    ] {
        let mut c = lab_config();
        c.flannel_backend = backend;
        assert_eq!(net_conf(&c), None, "{backend:?}");
    }
    let mut six = ipv6_only_config();
    six.flannel_backend = FlannelBackend::WireguardNative;
    assert_eq!(
        net_conf(&six),
        None,
        "k3s's own carries IPv6 pods over the 6PN"
    );
}

#[test]
fn every_role_points_flannel_conf_at_the_file_node_init_writes() {
    for (name, node) in roles() {
        let map = parse(&render(&lab_config(), &node).unwrap());
        assert_eq!(str_of(&map, "flannel-conf"), FLANNEL_CONF, "{name}");
        assert_eq!(str_of(&map, "flannel-iface"), "eth0", "{name}");
        let mut n = node.clone();
        n.ipv4 = None;
        let map = parse(&render(&ipv6_only_config(), &n).unwrap());
        assert!(!map.contains_key("flannel-conf"), "{name}");
        assert_eq!(str_of(&map, "flannel-iface"), "eth0", "{name}");
    }
}

#[test]
fn the_net_conf_lives_next_to_the_k3s_config_in_the_data_dir() {
    assert_eq!(
        FLANNEL_CONF,
        format!("{}/{FLANNEL_CONF_NAME}", crate::render::DATA_DIR)
    );
}

#[test]
fn pods_get_fly_eth0_mtu_less_the_wireguard_overhead() {
    assert_eq!(POD_MTU, 1340);
}

/// The outer (underlay) address flannel sends each pod family's cross-node traffic to, or
/// `None` when that family has no flannel traffic.
#[derive(Debug, PartialEq, Eq)]
struct Underlays {
    ipv4_pods: Option<IpAddr>,
    ipv6_pods: Option<IpAddr>,
}

/// What flannel would do on a Fly machine whose eth0 holds `sixpn` and `ipv4`, given the
/// rendered server config (cluster-wide flags), this node's config and the net-conf file.
fn underlays(
    server: &Mapping,
    node: &Mapping,
    net_conf_text: Option<&str>,
    sixpn: Ipv6Addr,
    ipv4: Option<Ipv4Addr>,
) -> Underlays {
    let none = Underlays {
        ipv4_pods: None,
        ipv6_pods: None,
    };
    let backend = str_of(server, "flannel-backend");
    if backend == "none" {
        return none;
    }
    // flannel-iface=eth0: ExtAddr is eth0's IPv4, ExtV6Addr its (only global) IPv6, the 6PN
    // (k3s pkg/agent/flannel/flannel.go LookupExtInterface, §1).
    assert_eq!(str_of(node, "flannel-iface"), FLANNEL_IFACE);
    let ext_v4 = ipv4.map(IpAddr::V4);
    let ext_v6 = IpAddr::V6(sixpn);
    // flannel-external-ip + node-external-ip overwrite public-ip / public-ipv6 per family
    // (k3s setup.go setAnnotations; flannel kube.go, §1).
    let external: Vec<IpAddr> = str_list(node, "node-external-ip")
        .iter()
        .map(|s| s.parse().expect("node-external-ip is an address"))
        .collect();
    let overwrite = server.get("flannel-external-ip") == Some(&Value::Bool(true));
    let public_ip = external
        .iter()
        .find(|ip| ip.is_ipv4() && overwrite)
        .copied()
        .or(ext_v4);
    let public_ipv6 = external
        .iter()
        .find(|ip| ip.is_ipv6() && overwrite)
        .copied()
        .unwrap_or(ext_v6);
    // The net-conf: ours when flannel-conf is set, else the one k3s writes (setup.go).
    let cidrs = str_list(server, "cluster-cidr");
    let (enable_v4, enable_v6, kind, mode) = match node.get("flannel-conf") {
        Some(path) => {
            assert_eq!(path.as_str(), Some(FLANNEL_CONF));
            let v = json(net_conf_text.expect("flannel-conf points to a rendered file"));
            let v4_cidr = cidrs.iter().find(|c| !c.contains(':')).expect("v4 range");
            let v6_cidr = cidrs.iter().find(|c| c.contains(':')).expect("v6 range");
            assert_eq!(v["Network"].as_str(), Some(v4_cidr.as_str()));
            assert_eq!(v["IPv6Network"].as_str(), Some(v6_cidr.as_str()));
            let b = &v["Backend"];
            let mode = b["Mode"].as_str().unwrap_or("separate").to_string();
            if mode != "separate" {
                // One device, dialled at the peer's ListenPortV6 (flannel PR #2200, §1).
                assert_eq!(b["ListenPortV6"], b["ListenPort"], "{v}");
            }
            (
                v["EnableIPv4"].as_bool().unwrap_or(true),
                v["EnableIPv6"].as_bool().unwrap_or(false),
                b["Type"].as_str().expect("Type").to_string(),
                mode,
            )
        }
        None => {
            assert!(net_conf_text.is_none(), "a net-conf nobody points to");
            let kind = match backend.as_str() {
                "wireguard-native" => "wireguard",
                other => other,
            };
            (
                cidrs.iter().any(|c| !c.contains(':')),
                cidrs.iter().any(|c| c.contains(':')),
                kind.to_string(),
                "separate".to_string(),
            )
        }
    };
    // Which address each family rides (flannel-dualstack.md §1(a), §1(b)): vxlan and host-gw
    // carry each family over the same family; wireguard `separate` too; `auto` falls back to
    // IPv4 on Fly (ULA 6PN, RFC1918 IPv4); `ipv4` / `ipv6` put both on one endpoint.
    let v4_rides = match (kind.as_str(), mode.as_str()) {
        ("wireguard", "ipv6") => Some(public_ipv6),
        _ => public_ip,
    };
    let v6_rides = match (kind.as_str(), mode.as_str()) {
        ("wireguard", "ipv4" | "auto") => public_ip,
        _ => Some(public_ipv6),
    };
    Underlays {
        ipv4_pods: v4_rides.filter(|_| enable_v4),
        ipv6_pods: v6_rides.filter(|_| enable_v6),
    }
}

#[test]
fn the_model_sees_what_the_reference_table_says() {
    // flannel-dualstack.md §2: k3s's wireguard-native (separate) sends IPv4 pods to eth0's IPv4.
    let sixpn: Ipv6Addr = "fdaa:0:1:a7b:1:2:3:2".parse().unwrap();
    let v4: Ipv4Addr = "172.19.0.2".parse().unwrap();
    let server = parse(&render(&lab_config(), &bootstrap_node()).unwrap());
    let mut k3s_own = server.clone();
    k3s_own.remove("flannel-conf");
    assert_eq!(
        underlays(&server, &k3s_own, None, sixpn, Some(v4)).ipv4_pods,
        Some(IpAddr::V4(v4))
    );
    // Ours: both families on the 6PN.
    let text = net_conf(&lab_config());
    assert_eq!(
        underlays(&server, &server, text.as_deref(), sixpn, Some(v4)),
        Underlays {
            ipv4_pods: Some(IpAddr::V6(sixpn)),
            ipv6_pods: Some(IpAddr::V6(sixpn)),
        }
    );
}

const BACKENDS: [&str; 4] = ["vxlan", "host-gw", "wireguard-native", "none"];

/// A cluster config in the shell format with the given network shape.
fn config_text(x: u16, y: u8, dual: bool, backend: Option<usize>, allow: Option<bool>) -> String {
    let y = y % 250;
    let (mut cluster, mut service, mut dns) = (
        format!("fd42:{x:x}::/56"),
        format!("fd43:{x:x}::/112"),
        format!("fd43:{x:x}::a"),
    );
    if dual {
        cluster.push_str(&format!(",10.{y}.0.0/16"));
        service.push_str(&format!(",10.{}.0.0/16", y + 1));
        dns.push_str(&format!(",10.{}.0.10", y + 1));
    }
    let mut text = format!(
        "CLUSTER_NAME=prop\nCLUSTER_CIDR=\"{cluster}\"\nSERVICE_CIDR=\"{service}\"\nCLUSTER_DNS=\"{dns}\"\n\
         REGION=sjc\nNODE_GROUP_SIZE=3\nVOLUME_SIZE=1\nVOLUME_NAME=data\nWORKER_VM_SIZE=shared-cpu-1x\n\
         WORKER_VM_MEMORY=1024\nCP_VM_SIZE=shared-cpu-2x\nCP_VM_MEMORY=2048\nK3S_VERSION=v1.33.7+k3s1\n\
         ORG_NAME=personal\n"
    );
    if let Some(b) = backend {
        text.push_str(&format!("FLANNEL_BACKEND={}\n", BACKENDS[b]));
    }
    if let Some(a) = allow {
        text.push_str(&format!("ALLOW_IPV6_ONLY_POD_TRAFFIC={a}\n"));
    }
    text
}

fn keys_of(diags: &Diagnostics) -> Vec<String> {
    diags.iter().filter_map(|d| d.key.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// For every valid cluster config and node, IPv6 pods ride the 6PN and IPv4 pods ride the
    /// 6PN too, except where the config says in so many words (ALLOW_IPV6_ONLY_POD_TRAFFIC)
    /// that IPv4 pods stay on their node: the host-only IPv4 is never an underlay by default.
    /// And a config is refused exactly when the pod rule says so.
    #[test]
    fn rendered_flannel_never_uses_a_host_only_ipv4_as_underlay(
        x in any::<u16>(),
        y in any::<u8>(),
        dual in any::<bool>(),
        backend in proptest::option::of(0..BACKENDS.len()),
        allow in proptest::option::of(any::<bool>()),
        sixpn_low in any::<u64>(),
        v4_low in 0u32..(1 << 20),
        role in 0..3u8,
    ) {
        let text = config_text(x, y, dual, backend, allow);
        let name = backend.map_or("wireguard-native", |b| BACKENDS[b]);
        let v4_over_v4 = dual && matches!(name, "vxlan" | "host-gw");
        let allowed = allow == Some(true);
        let config = match parse_shell(&text, Path::new("clusters/prop/config")) {
            Ok(c) => c,
            Err(diags) => {
                let expected = if v4_over_v4 { "FLANNEL_BACKEND" } else { "ALLOW_IPV6_ONLY_POD_TRAFFIC" };
                prop_assert!((v4_over_v4 && !allowed) || (!v4_over_v4 && allowed), "{text}\n{diags}");
                prop_assert_eq!(keys_of(&diags), vec![expected.to_string()]);
                return Ok(());
            }
        };
        prop_assert!(v4_over_v4 == allowed, "accepted:\n{text}");
        // A Fly machine: 6PN in fdaa::/16, eth0 IPv4 in 172.16.0.0/12 (RFC1918, host-only).
        let sixpn = Ipv6Addr::from((0xfdaa_u128 << 112) | u128::from(sixpn_low));
        let v4 = Ipv4Addr::from((172u32 << 24) | (16 << 16) | v4_low);
        let role = match role {
            0 => Role::BootstrapServer,
            1 => Role::JoiningServer { bootstrap_machine_id: "3d8d9e1c4e1e08".into() },
            _ => Role::Agent,
        };
        let mut n = node(role, "ctrl-0", "prop-cp");
        n.private_ip = sixpn;
        n.ipv4 = Some(v4);
        let mut boot = bootstrap_node();
        boot.private_ip = sixpn;
        boot.ipv4 = Some(v4);
        let server = parse(&render(&config, &boot).unwrap());
        let this = parse(&render(&config, &n).unwrap());
        let conf = net_conf(&config);
        let u = underlays(&server, &this, conf.as_deref(), sixpn, Some(v4));
        if let Some(ip) = u.ipv6_pods {
            prop_assert_eq!(ip, IpAddr::V6(sixpn));
        }
        match u.ipv4_pods {
            Some(ip) if ip == IpAddr::V4(v4) => {
                prop_assert!(config.allow_ipv6_only_pod_traffic, "host-only IPv4 underlay:\n{text}");
            }
            Some(ip) => prop_assert_eq!(ip, IpAddr::V6(sixpn)),
            None => prop_assert!(!config.is_dual_stack() || name == "none"),
        }
        if config.is_dual_stack() && name == "wireguard-native" {
            prop_assert_eq!(u.ipv4_pods, Some(IpAddr::V6(sixpn)));
        }
    }
}

#[test]
fn the_agent_takes_the_server_s_external_ip_switch() {
    // flannel-external-ip is a server flag (reference/k3s.md §2); agents get it from the
    // server, so the model reads it from the server's config. The agent's own config must
    // still name the 6PN as node-external-ip.
    let agent = parse(&render(&lab_config(), &agent_node()).unwrap());
    assert!(!agent.contains_key("flannel-external-ip"));
    assert_eq!(
        str_list(&agent, "node-external-ip"),
        ["fdaa:0:1:a7b:1:2:3:2"]
    );
}
