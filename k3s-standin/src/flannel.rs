//! The stand-in's flannel rule: when a node's IPv4 is not routable between machines (as on Fly,
//! where eth0's IPv4 reaches only the machine's host), flannel must carry IPv4 pod traffic over
//! IPv6. A config whose flannel would send IPv4 pods to the peers' IPv4 addresses would start
//! on real k3s and silently leave IPv4 pods unable to reach each other across nodes; the
//! stand-in refuses it, naming the rule (issue 13; reference/flannel-dualstack.md §1-2).
//!
//! What flannel does with each net-conf, per reference/flannel-dualstack.md §1 (which cites
//! flannel's and k3s's source):
//! - without `flannel-conf`, k3s writes the net-conf from `flannel-backend` and the
//!   cluster-cidr families: vxlan and host-gw carry each family over the same family;
//!   wireguard-native has no `Mode`, so `separate`: IPv4 pods over IPv4 too;
//! - with `flannel-conf` (a JSON file; `EnableIPv4` defaults to true, `EnableIPv6` to false,
//!   flannel `pkg/subnet/config.go` `ParseConfig`): only `Type: wireguard` with `Mode: ipv6`
//!   puts IPv4 pods on an IPv6 endpoint; `auto` falls back to IPv4 between ULA (6PN) and
//!   RFC1918 addresses; and in `ipv6` mode peers are dialled at their `ListenPortV6` while the
//!   one device listens on `ListenPort` (flannel PR #2200), so the two must be equal.
//!
//! How the stand-in learns whether the node's IPv4 is routable between machines: from the
//! IPv4 routing table of the network namespace it runs in (`/proc/net/route`). A lab guest
//! models Fly's host-only IPv4 as a /32 address with one host route to the host's gateway and
//! no other IPv4 route (lab `guest/network.rs`); "every IPv4 route is a /32 host route and
//! there is at least one" is read as host-only. A table with a default or network route is
//! routable; an empty one (no IPv4 at all) says nothing and is not enforced. The stand-in-named
//! `K3S_STANDIN_IPV4_REACH=host-only|routable` overrides the table (for tests that run the
//! stand-in outside a guest). Real k3s does none of this.
//!
//! Owns the rule and its inputs; reads `/proc/net/route` and the `flannel-conf` file only.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

/// The stand-in-named override of the routing-table reading.
pub const REACH_ENV: &str = "K3S_STANDIN_IPV4_REACH";

/// The IPv4 routing table of the current network namespace.
const PROC_NET_ROUTE: &str = "/proc/net/route";

/// flannel's wireguard default ports (flannel `wireguard.go` `RegisterNetwork`).
const DEFAULT_LISTEN_PORT: u64 = 51820;
const DEFAULT_LISTEN_PORT_V6: u64 = 51821;

/// The rule, quoted in every refusal.
pub const RULE: &str = "when a node's IPv4 is not routable between machines, IPv4 pod traffic must ride IPv6 (flannel wireguard Mode ipv6 through flannel-conf), or the cluster must be IPv6-only";

/// Errors of the flannel rule.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{REACH_ENV}={0:?}: expected host-only or routable")]
    BadReach(String),
    #[error("reading flannel-conf {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("flannel-conf {file}: {reason}")]
    BadConf { file: String, reason: String },
    #[error("flannel would carry IPv4 pods between nodes over this node's IPv4{addr} ({how}), but {why}: IPv4 pods could not reach each other across nodes; rule: {RULE} (reference/flannel-dualstack.md §2)")]
    Ipv4PodsOverHostOnlyIpv4 {
        addr: String,
        how: String,
        why: String,
    },
    #[error("flannel-conf {file}: wireguard Mode ipv6 listens on ListenPort {listen} but peers dial ListenPortV6 {v6}: set both to one port (flannel PR #2200; reference/flannel-dualstack.md §1)")]
    PortMismatch { file: String, listen: u64, v6: u64 },
}

/// Whether the node's IPv4 reaches other machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Only the machine's host: IPv4 pods must not ride it. Carries why the stand-in thinks so.
    HostOnly(String),
    /// Other machines (a default or network route, or the override).
    Routable,
    /// No IPv4 routes at all, or no routing table: the stand-in cannot tell and does not
    /// enforce the rule.
    Unknown,
}

/// Read `/proc/net/route` (the IPv4 routes of this network namespace, hex little-endian
/// columns `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`).
pub fn reach_from_routes(table: &str) -> Reach {
    let mut routes = 0;
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(mask)) = (cols.first(), cols.get(7)) else {
            continue;
        };
        if *iface == "lo" {
            continue;
        }
        routes += 1;
        let host_route = u32::from_str_radix(mask, 16).is_ok_and(|m| m == u32::MAX);
        if !host_route {
            return Reach::Routable;
        }
    }
    if routes == 0 {
        Reach::Unknown
    } else {
        Reach::HostOnly(format!(
            "that IPv4 reaches only this machine's host ({PROC_NET_ROUTE} holds only /32 host routes, no default route: Fly's private IPv4, as the lab models it)"
        ))
    }
}

/// [`REACH_ENV`] if set, else the routing table of this network namespace.
pub fn detect_reach(env: &BTreeMap<String, String>) -> Result<Reach, Error> {
    match env.get(REACH_ENV).map(String::as_str) {
        Some("host-only") => Ok(Reach::HostOnly(format!(
            "that IPv4 reaches only this machine's host ({REACH_ENV}=host-only)"
        ))),
        Some("routable") => Ok(Reach::Routable),
        Some(other) => Err(Error::BadReach(other.to_owned())),
        None => Ok(std::fs::read_to_string(PROC_NET_ROUTE)
            .map(|t| reach_from_routes(&t))
            .unwrap_or(Reach::Unknown)),
    }
}

/// What the rule needs from a resolved config.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// `true` for `k3s server`: it knows the cluster's backend and cluster-cidr.
    pub server: bool,
    /// `flannel-backend` (servers; agents get it from the server and check only their file).
    pub backend: &'a str,
    /// `flannel-conf`, when set.
    pub conf_file: Option<&'a str>,
    /// cluster-cidr (servers).
    pub cluster_cidrs: &'a [IpNet],
    /// node-ip: the IPv4 named in a refusal.
    pub node_ips: &'a [IpAddr],
}

/// The net-conf flannel would run with, reduced to what the rule needs.
#[derive(Debug, PartialEq, Eq)]
struct NetConf {
    ipv4: bool,
    kind: String,
    mode: String,
    listen_port: u64,
    listen_port_v6: u64,
}

fn read_conf(file: &str) -> Result<NetConf, Error> {
    let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
        file: file.to_owned(),
        source,
    })?;
    let bad = |reason: String| Error::BadConf {
        file: file.to_owned(),
        reason,
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let flag = |key: &str, default: bool| match v.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad(format!("{key} is {other}, not a boolean"))),
    };
    let ipv4 = flag("EnableIPv4", true)?;
    let backend = v.get("Backend").cloned().unwrap_or(Value::Null);
    let text_of = |key: &str, default: &str| match backend.get(key) {
        None => Ok(default.to_owned()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(bad(format!("Backend.{key} is {other}, not a string"))),
    };
    let port = |key: &str, default: u64| match backend.get(key) {
        None => Ok(default),
        Some(p) => p
            .as_u64()
            .filter(|p| *p <= u64::from(u16::MAX))
            .ok_or_else(|| bad(format!("Backend.{key} is {p}, not a port"))),
    };
    // No Backend means flannel's old default, udp: IPv4 over IPv4 like the rest.
    Ok(NetConf {
        ipv4,
        kind: text_of("Type", "udp")?,
        mode: text_of("Mode", "separate")?,
        listen_port: port("ListenPort", DEFAULT_LISTEN_PORT)?,
        listen_port_v6: port("ListenPortV6", DEFAULT_LISTEN_PORT_V6)?,
    })
}

/// Check `input` against the rule given the node's IPv4 `reach`.
pub fn check(input: &Input, reach: &Reach) -> Result<(), Error> {
    if input.backend == "none" {
        return Ok(());
    }
    let conf = match input.conf_file {
        Some(file) => {
            let conf = read_conf(file)?;
            if conf.kind == "wireguard"
                && conf.mode == "ipv6"
                && conf.listen_port != conf.listen_port_v6
            {
                return Err(Error::PortMismatch {
                    file: file.to_owned(),
                    listen: conf.listen_port,
                    v6: conf.listen_port_v6,
                });
            }
            conf
        }
        // The net-conf k3s writes (reference/k3s.md §3 "Generated net-conf").
        None if input.server => NetConf {
            ipv4: input
                .cluster_cidrs
                .iter()
                .any(|n| matches!(n, IpNet::V4(_))),
            kind: match input.backend {
                "wireguard-native" => "wireguard",
                // k3s's tailscale backend is a flannel extension over the tailnet.
                "tailscale" => "extension",
                other => other,
            }
            .to_owned(),
            mode: "separate".to_owned(),
            listen_port: DEFAULT_LISTEN_PORT,
            listen_port_v6: DEFAULT_LISTEN_PORT_V6,
        },
        // An agent's backend is the server's, checked there.
        None => return Ok(()),
    };
    let Reach::HostOnly(why) = reach else {
        return Ok(());
    };
    let ipv4_over_ipv6 = conf.kind == "wireguard" && conf.mode == "ipv6";
    if !conf.ipv4 || ipv4_over_ipv6 || conf.kind == "extension" {
        return Ok(());
    }
    let how = match (input.conf_file, conf.kind.as_str()) {
        (Some(file), "wireguard") => format!("flannel-conf {file}: wireguard Mode {}", conf.mode),
        (Some(file), kind) => format!("flannel-conf {file}: backend {kind}"),
        (None, "wireguard") => {
            "flannel-backend wireguard-native without flannel-conf: k3s's net-conf has no Mode, so separate".to_owned()
        }
        (None, _) => format!(
            "flannel-backend {} with a dual-stack cluster-cidr",
            input.backend
        ),
    };
    let addr = input
        .node_ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .map(|ip| format!(" {ip}"))
        .unwrap_or_default();
    Err(Error::Ipv4PodsOverHostOnlyIpv4 {
        addr,
        how,
        why: why.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lab guest's table: one host route to the gateway 172.19.0.1.
    const GUEST: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t010013AC\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
    /// A host with a default route.
    const HOST: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn only_host_routes_mean_the_ipv4_reaches_only_the_host() {
        assert!(matches!(reach_from_routes(GUEST), Reach::HostOnly(_)));
        assert_eq!(reach_from_routes(HOST), Reach::Routable);
        let header_only = GUEST.lines().next().unwrap_or_default();
        assert_eq!(reach_from_routes(header_only), Reach::Unknown);
        assert_eq!(reach_from_routes(""), Reach::Unknown);
        // A loopback route says nothing about other machines.
        let lo =
            format!("{header_only}\nlo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n");
        assert_eq!(reach_from_routes(&lo), Reach::Unknown);
    }

    #[test]
    fn the_override_wins_and_bad_values_are_named() {
        let env = |v: &str| BTreeMap::from([(REACH_ENV.to_owned(), v.to_owned())]);
        assert!(matches!(
            detect_reach(&env("host-only")),
            Ok(Reach::HostOnly(_))
        ));
        assert_eq!(detect_reach(&env("routable")).ok(), Some(Reach::Routable));
        let e = detect_reach(&env("maybe")).expect_err("bad value");
        assert_eq!(
            e.to_string(),
            "K3S_STANDIN_IPV4_REACH=\"maybe\": expected host-only or routable"
        );
    }
}
