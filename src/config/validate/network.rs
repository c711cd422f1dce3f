//! The network rules of the config: CLUSTER_CIDR and SERVICE_CIDR shape, size and overlap,
//! and CLUSTER_DNS placement (reference/k3s.md §3 "Dual-stack / IPv6-first rules", "Sizes").
//!
//! Pure: part of `validate`, reporting through its `Checker`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::{Checker, Entry};

/// Which list a CIDR belongs to; the size limits differ.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum CidrRole {
    Cluster,
    Service,
}

/// Fly's private network (6PN) lives in `fdaa::/16` (reference/fly-machines-api.md §4).
const FLY_6PN: &str = "fdaa::/16";

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

fn ip_family(ip: &IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// The address `offset` past the network address of `net` (k3s puts DNS at offset 10).
fn nth_address(net: &IpNet, offset: u32) -> IpAddr {
    match net {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).wrapping_add(offset))),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(
            u128::from(n.network()).wrapping_add(u128::from(offset)),
        )),
    }
}

impl Checker<'_> {
    /// Parse a CIDR list and check its shape (IPv6, or IPv6 then IPv4), host bits and size.
    /// Returns the ranges when they parse and have the right shape, so that cross-key checks
    /// can still run when only a size is wrong.
    pub(super) fn cidrs(&mut self, e: &Entry, role: CidrRole) -> Option<Vec<IpNet>> {
        let example = match role {
            CidrRole::Cluster => "\"fd00:42::/56,10.42.0.0/16\"",
            CidrRole::Service => "\"fd00:43::/112,10.43.0.0/16\"",
        };
        let mut nets = Vec::new();
        for item in e.value.split(',').map(str::trim) {
            match item.parse::<IpNet>() {
                Ok(n) => nets.push(n),
                Err(_) => {
                    let what = if item.parse::<IpAddr>().is_ok() {
                        format!("{item:?} is an address, not a range (no /prefix)")
                    } else {
                        format!("{item:?} is not a CIDR range")
                    };
                    self.problem(
                        e,
                        what,
                        format!(
                            "write one IPv6 range or an IPv6,IPv4 pair, e.g. {}={example}",
                            e.key
                        ),
                    );
                    return None;
                }
            }
        }
        let families: Vec<_> = nets.iter().map(family).collect();
        let v = &e.value;
        match families.as_slice() {
            ["IPv6"] | ["IPv6", "IPv4"] => {}
            ["IPv4", "IPv6"] => {
                self.problem(
                    e,
                    format!("{v:?} lists IPv4 first"),
                    format!("put the IPv6 range first, e.g. \"{},{}\"", nets[1], nets[0]),
                );
                return None;
            }
            ["IPv4"] => {
                let v6 = match role {
                    CidrRole::Cluster => "fd00:42::/56",
                    CidrRole::Service => "fd00:43::/112",
                };
                self.problem(
                    e,
                    format!("{v:?} lists IPv4 first"),
                    format!(
                        "the cluster is IPv6-first: put an IPv6 range first, e.g. \"{v6},{}\"",
                        nets[0]
                    ),
                );
                return None;
            }
            _ => {
                self.problem(
                    e,
                    format!("{v:?} has {} ranges ({})", nets.len(), families.join(", ")),
                    format!(
                        "write one IPv6 range or an IPv6,IPv4 pair, e.g. {}={example}",
                        e.key
                    ),
                );
                return None;
            }
        }
        for net in &nets {
            if net.trunc() != *net {
                self.problem(
                    e,
                    format!("{net} has host bits set"),
                    format!("write the network address: {}", net.trunc()),
                );
            }
            self.cidr_size(e, net, role);
            let sixpn: IpNet = FLY_6PN.parse().expect("FLY_6PN is a valid CIDR");
            if overlaps(net, &sixpn) {
                self.problem(
                    e,
                    format!("{net} overlaps Fly's private network {FLY_6PN}"),
                    format!(
                        "use a ULA range outside {FLY_6PN}, e.g. {}={example}",
                        e.key
                    ),
                );
            }
        }
        Some(nets)
    }

    /// Size limits (reference/k3s.md §3 "Sizes"): service ranges at most /112 (IPv6) and /12
    /// (IPv4); cluster ranges at most 16 bits above the node mask (/64 IPv6, /24 IPv4), and no
    /// smaller than one node's share.
    fn cidr_size(&mut self, e: &Entry, net: &IpNet, role: CidrRole) {
        let p = net.prefix_len();
        let (min, max, why) = match (role, net) {
            (CidrRole::Service, IpNet::V6(_)) => (112, 126, "Kubernetes allows an IPv6 service range of at most /112"),
            (CidrRole::Service, IpNet::V4(_)) => (12, 30, "Kubernetes allows an IPv4 service range of at most /12"),
            (CidrRole::Cluster, IpNet::V6(_)) => (48, 64, "each node gets a /64 and kube-controller-manager allows at most 16 bits more (k3s#7888)"),
            (CidrRole::Cluster, IpNet::V4(_)) => (8, 24, "each node gets a /24 and kube-controller-manager allows at most 16 bits more"),
        };
        if p < min {
            self.problem(
                e,
                format!("{net} is too large (/{p})"),
                format!("use a prefix of /{min} or longer: {why}"),
            );
        } else if p > max {
            self.problem(
                e,
                format!("{net} is too small (/{p})"),
                format!("use a prefix between /{min} and /{max}: {why}"),
            );
        }
    }

    /// NODE_GROUP_SIZE workers and the 3 servers each need a pod range of CLUSTER_CIDR: with
    /// Kubernetes' default node-cidr-mask-size (/24 per IPv4 node, /64 per IPv6 node;
    /// reference/k3s.md "Sizes": a /56 holds 256 nodes), every family must hold that many.
    /// Other node groups share the ranges too; that is not known here.
    pub(super) fn node_ranges(&mut self, ne: &Entry, workers: u32, ce: &Entry, cluster: &[IpNet]) {
        let nodes = u64::from(workers) + 3;
        // The family with the fewest node ranges (the first one on a tie) is the limit.
        let tightest = cluster
            .iter()
            .filter_map(|net| {
                let per_node: u8 = match net {
                    IpNet::V4(_) => 24,
                    IpNet::V6(_) => 64,
                };
                // A range smaller than one node's is the CIDR check's to report; the
                // controller allocates at most 2^16 node ranges (reference/k3s.md "Sizes").
                let bits = per_node.checked_sub(net.prefix_len())?;
                Some((1u64 << bits.min(16), per_node, net))
            })
            .min_by_key(|(ranges, _, _)| *ranges);
        if let Some((ranges, per_node, net)) = tightest.filter(|(r, _, _)| nodes > *r) {
            self.problem(
                ne,
                format!(
                    "{workers} workers and 3 servers need {nodes} pod ranges, but CLUSTER_CIDR {net} (line {}) holds {ranges} (one /{per_node} per node)",
                    ce.line
                ),
                format!(
                    "use at most {} workers, or a larger CLUSTER_CIDR (e.g. fd00:42::/48,10.42.0.0/15 for up to 512 nodes)",
                    ranges.saturating_sub(3)
                ),
            );
        }
    }

    /// CLUSTER_CIDR and SERVICE_CIDR: same families in the same order, no overlap.
    pub(super) fn cidr_pair(
        &mut self,
        ce: &Entry,
        cluster: &[IpNet],
        se: &Entry,
        service: &[IpNet],
    ) {
        let cf: Vec<_> = cluster.iter().map(family).collect();
        let sf: Vec<_> = service.iter().map(family).collect();
        if cf != sf {
            self.problem(
                se,
                format!(
                    "has {} but CLUSTER_CIDR (line {}) has {}",
                    sf.join(","),
                    ce.line,
                    cf.join(",")
                ),
                "k3s needs both keys to list the same families in the same order (reference/k3s.md §3): both IPv6, or both IPv6,IPv4",
            );
        }
        for c in cluster {
            for s in service {
                // A service range strictly inside the cluster range is tolerated: the node IPAM
                // controller marks the node subnets it covers as used (kube-controller-manager
                // range_allocator filterOutServiceRange), as the k8s-on-fly example config does.
                let service_inside_cluster =
                    c.prefix_len() < s.prefix_len() && c.contains(&s.network());
                if overlaps(c, s) && !service_inside_cluster {
                    self.problem(
                        se,
                        format!("{s} overlaps CLUSTER_CIDR range {c} (line {})", ce.line),
                        "pick service and cluster ranges that do not overlap, e.g. fd00:42::/56 for pods and fd00:43::/112 for services",
                    );
                }
            }
        }
    }

    pub(super) fn dns(&mut self, e: &Entry, service: Option<&[IpNet]>) -> Option<Vec<IpAddr>> {
        let mut ips = Vec::new();
        for item in e.value.split(',').map(str::trim) {
            match item.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => {
                    self.problem(
                        e,
                        format!("{item:?} is not an IP address"),
                        "write one address per SERVICE_CIDR range, IPv6 first, e.g. CLUSTER_DNS=\"fd00:43::a,10.43.0.10\"",
                    );
                    return None;
                }
            }
        }
        let v = &e.value;
        if ips.len() > 2 {
            self.problem(
                e,
                format!("{v:?} lists {} addresses", ips.len()),
                "write one address, or an IPv6,IPv4 pair",
            );
            return None;
        }
        if ips.len() == 2 && ips[0].is_ipv4() {
            self.problem(
                e,
                format!("{v:?} lists IPv4 first"),
                format!("put the IPv6 address first: \"{},{}\"", ips[1], ips[0]),
            );
            return None;
        }
        let Some(service) = service else {
            return Some(ips);
        };
        let mut ok = true;
        for (i, ip) in ips.iter().enumerate() {
            let Some(range) = service.get(i) else {
                self.problem(
                    e,
                    format!(
                        "{ip} has no matching SERVICE_CIDR range (SERVICE_CIDR lists {})",
                        service.len()
                    ),
                    "give one address per SERVICE_CIDR range, in the same order",
                );
                ok = false;
                continue;
            };
            let suggestion = nth_address(range, 10);
            if ip_family(ip) != family(range) {
                self.problem(
                    e,
                    format!("{ip} is {} but SERVICE_CIDR range {} is {range}", ip_family(ip), i + 1),
                    format!("use the same families in the same order as SERVICE_CIDR, e.g. {suggestion}"),
                );
                ok = false;
            } else if !range.contains(ip) {
                self.problem(
                    e,
                    format!("{ip} is outside SERVICE_CIDR range {range}"),
                    format!("pick an address inside {range}, e.g. {suggestion} (k3s's choice)"),
                );
                ok = false;
            } else if *ip == range.network() {
                self.problem(
                    e,
                    format!("{ip} is the network address of {range}"),
                    format!("pick another address inside {range}, e.g. {suggestion}"),
                );
                ok = false;
            } else if matches!(range, IpNet::V4(_)) && *ip == range.broadcast() {
                self.problem(
                    e,
                    format!("{ip} is the broadcast address of {range}"),
                    format!("pick another address inside {range}, e.g. {suggestion}"),
                );
                ok = false;
            }
        }
        ok.then_some(ips)
    }
}

/// Whether two ranges share any address.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}
