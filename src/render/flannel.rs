//! flannel's net-conf for a dual-stack cluster on `wireguard-native`: the JSON file k3s's
//! `flannel-conf` points to, written next to the k3s config at every boot.
//!
//! Why a file of our own (reference/flannel-dualstack.md, "FL" = flannel, "K3" = k3s sources):
//! - On Fly, machines reach each other over the 6PN (IPv6) only; eth0's IPv4 reaches only its
//!   host (reference/fly-runtime.md §7, from Fly's docs).
//! - The net-conf k3s writes for `wireguard-native` has no `Mode`, so flannel runs `separate`:
//!   IPv4 pods go to the peer's IPv4 (`172.19.x.x:51820`), which does not work on Fly; `auto`
//!   falls back to IPv4 too, because fdaa::/16 is a ULA range (flannel-dualstack.md §1(b)).
//! - `Mode: ipv6` runs one `flannel-wg` device whose peers hold both pod subnets and are
//!   dialled at `[public-ipv6]:port`, i.e. the 6PN address that `node-external-ip` and
//!   `flannel-external-ip` put into flannel's `public-ipv6` annotation (§1, §2 option 1).
//! - Since flannel PR #2200 (v0.26.6) the port dialled is the peer's `ListenPortV6` while the
//!   single device listens on `ListenPort`, so both are set to one port (§1 "Likely bug").
//! - k3s `--flannel-conf` is the supported way to pass this: `Mode` in `--flannel-backend`
//!   (`wireguard-native=Mode=ipv6`) was deprecated and removed in k3s PR #11783 (§2 option 1);
//!   with `flannel-conf` set k3s does not write its own net-conf (K3
//!   `pkg/agent/flannel/setup.go` `createFlannelConf`: `Flannel.ConfOverride` returns early).
//!
//! MTU: flannel's wireguard backend has no MTU setting (its backend options are `ListenPort`,
//! `ListenPortV6`, `PSK`, `PersistentKeepaliveInterval`, `Mode`: FL
//! `pkg/backend/wireguard/wireguard.go` `RegisterNetwork`). It sizes `flannel-wg` from the
//! external interface's MTU less 80 bytes of IPv6+UDP+WireGuard headers
//! (`wireguard_network.go` l.33-43, 74-76), so on Fly's eth0 (MTU 1420, fly-runtime.md §1.4)
//! pods get [`POD_MTU`] without anything in this file.
//!
//! Pure: values in, text out.

use ipnet::IpNet;
use serde::Serialize;

use crate::config::{Config, FlannelBackend};

/// The net-conf's file name, in k3s's data dir next to `config.yaml`.
pub const FLANNEL_CONF_NAME: &str = "flannel-net-conf.json";

/// Where `node init` writes the net-conf: `<render::DATA_DIR>/<FLANNEL_CONF_NAME>`.
pub const FLANNEL_CONF: &str = "/data/k3s/flannel-net-conf.json";

/// The one UDP port `flannel-wg` listens on and dials, for both families: k3s's and
/// flannel's default `ListenPort` (reference/k3s.md §3).
pub const WIREGUARD_PORT: u16 = 51820;

/// k3s's keepalive for `wireguard-native` (K3 `setup.go` `wireguardNativeBackend`), kept so the
/// tunnel behaves as k3s's own wireguard-native does apart from the mode. flannel reads it as
/// seconds.
pub const PERSISTENT_KEEPALIVE_SECONDS: u32 = 25;

/// eth0's MTU on a Fly machine (reference/fly-runtime.md §1.4: set by Fly's init; current
/// value marked uncertain there).
pub const FLY_ETH0_MTU: u32 = 1420;

/// What flannel's wireguard backend subtracts from the external interface's MTU: an IPv6
/// header (40), UDP (8) and WireGuard's framing (32) (reference/flannel-dualstack.md §2).
pub const WIREGUARD_OVERHEAD: u32 = 80;

/// The MTU flannel gives `flannel-wg` and the pods on Fly: 1340.
pub const POD_MTU: u32 = FLY_ETH0_MTU - WIREGUARD_OVERHEAD;

/// flannel's net-conf (FL `pkg/subnet/config.go` `Config`; field names are flannel's).
#[derive(Debug, Serialize)]
struct NetConf {
    #[serde(rename = "Network")]
    network: String,
    #[serde(rename = "EnableIPv4")]
    enable_ipv4: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPv6Network")]
    ipv6_network: String,
    #[serde(rename = "Backend")]
    backend: Backend,
}

/// The wireguard backend's options (FL `wireguard.go` `RegisterNetwork`).
#[derive(Debug, Serialize)]
struct Backend {
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "Mode")]
    mode: &'static str,
    #[serde(rename = "ListenPort")]
    listen_port: u16,
    #[serde(rename = "ListenPortV6")]
    listen_port_v6: u16,
    #[serde(rename = "PersistentKeepaliveInterval")]
    persistent_keepalive_interval: u32,
}

/// The net-conf a node of `config` needs, or `None` when k3s's own is right:
/// - dual-stack on `wireguard-native`: ours, `Mode: ipv6`, so IPv4 pods ride the 6PN;
/// - IPv6-only: k3s's own carries IPv6 pods over the node's IPv6 (the 6PN) with every backend;
/// - dual-stack on vxlan or host-gw: no mode of theirs carries IPv4 over IPv6
///   (flannel-dualstack.md §1(a)); validation allows it only with ALLOW_IPV6_ONLY_POD_TRAFFIC;
/// - `none`: no flannel.
pub fn net_conf(config: &Config) -> Option<String> {
    if config.flannel_backend != FlannelBackend::WireguardNative {
        return None;
    }
    let v4 = config.cluster_cidr.iter().find_map(|n| match n {
        IpNet::V4(n) => Some(n.to_string()),
        IpNet::V6(_) => None,
    })?;
    let v6 = config.cluster_cidr.iter().find_map(|n| match n {
        IpNet::V6(n) => Some(n.to_string()),
        IpNet::V4(_) => None,
    })?;
    let conf = NetConf {
        network: v4,
        enable_ipv4: true,
        enable_ipv6: true,
        ipv6_network: v6,
        backend: Backend {
            kind: "wireguard",
            mode: "ipv6",
            listen_port: WIREGUARD_PORT,
            listen_port_v6: WIREGUARD_PORT,
            persistent_keepalive_interval: PERSISTENT_KEEPALIVE_SECONDS,
        },
    };
    let mut text = serde_json::to_string_pretty(&conf)
        .expect("a struct of strings, bools and integers serializes");
    text.push('\n');
    Some(text)
}

#[cfg(test)]
mod tests;
