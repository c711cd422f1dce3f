//! The pod-networking rule of the config: which flannel backend can carry which pod family
//! between Fly machines (reference/flannel-dualstack.md §1-2).
//!
//! On Fly, machines reach each other over the 6PN (IPv6) only; a machine's eth0 IPv4 reaches
//! only its own host (reference/fly-runtime.md §7; the reference marks the host-only part as
//! from the docs, not verified in Fly's source). vxlan and host-gw always carry IPv4 pods over
//! the nodes' IPv4 addresses (flannel-dualstack.md §1(a); host-gw routes to the peer's IPv4),
//! so with a dual-stack CLUSTER_CIDR they leave IPv4 pods unable to reach each other across
//! nodes. wireguard-native is rendered in flannel's `Mode: ipv6` (see `render::flannel`), which
//! carries both families over the 6PN. An IPv6-only CLUSTER_CIDR has no IPv4 pods, so every
//! backend is fine.
//!
//! Pure: part of `validate`, reporting through its `Checker`.

use ipnet::IpNet;

use super::{Checker, Entry, ALLOW_IPV6_ONLY_POD_TRAFFIC};
use crate::config::FlannelBackend;

/// Whether `backend` carries IPv4 pods between nodes over the nodes' IPv4 addresses when the
/// cluster has IPv4 pods. wireguard-native does not, as fks-bootstrap renders it (`Mode: ipv6`);
/// `none` leaves pod traffic to a CNI the user installs.
pub fn carries_ipv4_pods_over_ipv4(backend: FlannelBackend) -> bool {
    matches!(backend, FlannelBackend::Vxlan | FlannelBackend::HostGw)
}

impl Checker<'_> {
    /// A dual-stack CLUSTER_CIDR with vxlan or host-gw is a problem on FLANNEL_BACKEND unless
    /// `allow` (ALLOW_IPV6_ONLY_POD_TRAFFIC=true) accepts it; `allow` where it changes nothing
    /// is a problem on its own line, so a stale acceptance cannot silently cover a later change.
    pub(super) fn pod_underlay(
        &mut self,
        cluster_entry: &Entry,
        cluster_cidr: &[IpNet],
        backend_entry: Option<&Entry>,
        backend: FlannelBackend,
        allow: Option<&Entry>,
    ) {
        let dual_stack = cluster_cidr.iter().any(|n| matches!(n, IpNet::V4(_)));
        let broken_ipv4 = dual_stack && carries_ipv4_pods_over_ipv4(backend);
        match (broken_ipv4, backend_entry, allow) {
            (true, Some(be), None) => {
                let v6 = cluster_cidr
                    .iter()
                    .find(|n| matches!(n, IpNet::V6(_)))
                    .map_or_else(|| "fd00:42::/56".to_string(), ToString::to_string);
                self.problem(
                    be,
                    format!(
                        "{} carries IPv4 pods over the nodes' IPv4 addresses, which on Fly reach only their own host: with the dual-stack CLUSTER_CIDR (line {}) IPv4 pods could not reach each other across nodes",
                        backend.as_str(),
                        cluster_entry.line
                    ),
                    format!(
                        "use FLANNEL_BACKEND=wireguard-native (both families then ride the 6PN), or an IPv6-only CLUSTER_CIDR=\"{v6}\" (SERVICE_CIDR and CLUSTER_DNS IPv6-only too), or add {ALLOW_IPV6_ONLY_POD_TRAFFIC}=true to accept that only IPv6 pod traffic crosses nodes (README \"Pod networking on Fly\")"
                    ),
                );
            }
            (false, _, Some(ae)) => {
                let why = if dual_stack {
                    format!(
                        "FLANNEL_BACKEND {} carries IPv4 pods over the 6PN or leaves pods to your own CNI",
                        backend.as_str()
                    )
                } else {
                    "CLUSTER_CIDR is IPv6-only, so there is no IPv4 pod traffic".to_string()
                };
                self.problem(
                    ae,
                    format!("has no effect: {why}"),
                    format!(
                        "delete the line; {ALLOW_IPV6_ONLY_POD_TRAFFIC}=true is only for a dual-stack CLUSTER_CIDR with vxlan or host-gw"
                    ),
                );
            }
            _ => {}
        }
    }
}
