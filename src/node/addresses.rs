//! The machine's own addresses, found at every boot and never cached: the 6PN address
//! (`FLY_PRIVATE_IP`, else the `fly-local-6pn` entry of /etc/hosts; reference/
//! fly-machines-api.md §7) and eth0's primary IPv4 (through getifaddrs, not command output).
//!
//! The choice between the sources is pure ([`choose_private_ip`], [`parse_hosts_6pn`]); only
//! [`eth0_ipv4`] and the caller's file read touch the system.
//!
//! # When the address changes (Fly host migration)
//!
//! Fly moves a machine to another host now and then: it stops it, forks its volume, and starts
//! it with the same machine id and a **new 6PN address** (reference fly-runtime.md §4
//! "Migration"; fly-machines-api.md "private_ip ... can change after a host migration").
//! Because the address is read here at every boot, node-ip, node-external-ip and the rendered
//! k3s config follow on their own. For an **agent** that is all: k3s keeps the node name, so
//! the kubelet's address sync writes the new InternalIP onto the existing Node object and no
//! stale node is left (kubernetes pkg/kubelet/nodestatus/setters.go `NodeAddress`; proven in
//! the lab by `e2e::migrated_server_and_worker_come_back_ready_with_new_addresses_on_guests`).
//!
//! A **server with embedded etcd** needs more, and `node init` does it before it starts k3s
//! (`etcd_member`, with the client in `crate::etcd`; proven with the k3s stand-in's real etcd
//! by `e2e::migrated_server_and_worker_come_back_ready_with_new_addresses_on_guests`):
//! - Why: etcd takes a member's advertised peer URL from `--initial-advertise-peer-urls` only
//!   at the member's first boot; later changes must go through quorum with a member update
//!   (etcd FAQ, quoted in kubernetes/kubernetes#86150). A k3s server restarted on a new address
//!   keeps its old peer URL in the member list and waits forever with "this server is a not a
//!   member of the etcd cluster. Found [NAME=https://OLD:2380], expect: NAME=NEW"
//!   (k3s-io/k3s#2732, rancher/k3k#54; k3s's `Test` in pkg/etcd/etcd.go, read at 001bb933).
//!   k3s's maintainer: "You can't change the node IP on etcd cluster members, you need to do a
//!   --cluster-reset ... or delete the node from the cluster and rejoin it with the current
//!   IP" (rancher/rke2#5651, 2024); k3s-io/k3s#5991 is still open. k3s's `Start` on existing
//!   data starts etcd with its previous options and no member update (pkg/etcd/etcd.go at
//!   001bb933); newer k3s was not read, so plan as if it does not update the peer URL.
//! 1. Notice the change (built): node init keeps the address etcd last ran with in
//!    `<data-dir>/fks-etcd-peer-address` and compares it with this boot's. Only a server whose
//!    data dir holds an etcd member (`<data-dir>/server/db/etcd/member/wal`, k3s's
//!    `IsInitialized`) goes on; with no address recorded it checks too.
//! 2. With the other servers in quorum (the usual case: Fly migrates one machine of an org
//!    network at a time, fly-runtime.md §4 step 1, so two of three servers stay up) (built):
//!    find the peers through `<cluster>-cp.internal` (AAAA, started machines only), call the
//!    etcd members API on a peer's client URL `https://[PEER]:2379` with k3s's own client
//!    certificate in `<data-dir>/server/tls/etcd/` (`client.crt`, `client.key`, trusting
//!    `server-ca.crt`; k3s-io/k3s pkg/daemons/control/server.go), look the member up by the
//!    name in `<data-dir>/server/db/etcd/name`, and set its peer URLs to `https://[NEW]:2380`
//!    (`etcdctl member update`). Then k3s starts: etcd listens on the new address and the
//!    member rejoins with its data. Peers are tried for a minute.
//!    If a peer answers but has no such member (it was removed): on a joining server, move
//!    `<data-dir>/server/db` aside so k3s joins again as a new member (built; k3s's own
//!    "delete the node and rejoin"); on the cluster-init server, refuse (that would start a
//!    second, empty cluster) and log that the server must be replaced.
//! 3. Without quorum (a single server, or a majority moved before any came back): **not
//!    built.** The remedy is k3s once with `--cluster-reset` on one server (since v1.22.3 it
//!    rewrites the member's peer URL to the current address, k3s-io/k3s#4296, PRs
//!    #4302/#4303; also in k3s's `Reset`, pkg/etcd/etcd.go at 001bb933), then normally, the
//!    other servers moving their `server/db` aside to rejoin. Node init logs this and starts
//!    k3s, which waits for its member.
//! 4. The new address is recorded once the member list holds it (not when k3s reports Ready,
//!    as first planned: the update itself is what a later boot must not repeat); when no
//!    peer could update it, nothing is recorded, so the next boot tries again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Error;

/// The /etc/hosts name Fly gives the machine's 6PN address.
pub const HOSTS_6PN_NAME: &str = "fly-local-6pn";

/// The interface whose IPv4 k3s gets as the second node-ip (reference/k3s-sh-behaviour.md).
pub const IPV4_INTERFACE: &str = "eth0";

/// Where the 6PN address came from, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Only `FLY_PRIVATE_IP` was available.
    Env,
    /// Only the hosts entry was available.
    Hosts,
    /// Both were available and agree.
    Both,
}

impl Source {
    /// How the log names it.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Env => "FLY_PRIVATE_IP",
            Source::Hosts => "the fly-local-6pn entry of /etc/hosts",
            Source::Both => "FLY_PRIVATE_IP (agrees with the fly-local-6pn entry of /etc/hosts)",
        }
    }
}

/// The address of the first `fly-local-6pn` line of a hosts file, if any. Comments and
/// malformed lines are skipped; a `fly-local-6pn` line whose address is not IPv6 is an error,
/// because silently using something else would put a wrong node-ip into k3s.
pub fn parse_hosts_6pn(text: &str) -> Result<Option<Ipv6Addr>, Error> {
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(addr) = fields.next() else { continue };
        if !fields.any(|name| name == HOSTS_6PN_NAME) {
            continue;
        }
        return match addr.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => Ok(Some(ip)),
            _ => Err(Error::Hosts6pn {
                line: i + 1,
                value: addr.to_owned(),
            }),
        };
    }
    Ok(None)
}

/// Pick the 6PN address from the environment and the hosts file: either alone, or both when
/// they agree. Neither, or a disagreement, is an error naming both values.
pub fn choose_private_ip(
    env: Option<Ipv6Addr>,
    hosts: Option<Ipv6Addr>,
) -> Result<(Ipv6Addr, Source), Error> {
    match (env, hosts) {
        (Some(e), Some(h)) if e == h => Ok((e, Source::Both)),
        (Some(e), Some(h)) => Err(Error::PrivateIpMismatch { env: e, hosts: h }),
        (Some(e), None) => Ok((e, Source::Env)),
        (None, Some(h)) => Ok((h, Source::Hosts)),
        (None, None) => Err(Error::NoPrivateIp),
    }
}

/// Whether an IPv4 address is a usable primary address (not loopback, link-local,
/// unspecified, broadcast or multicast).
pub fn is_global_ipv4(ip: Ipv4Addr) -> bool {
    !(ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast())
}

/// The first usable IPv4 address of `interface` (in the kernel's order), if any.
pub fn interface_ipv4(interface: &str) -> Result<Option<Ipv4Addr>, Error> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| Error::Ifaddrs {
        source: std::io::Error::from(e),
    })?;
    Ok(addrs
        .filter(|a| a.interface_name == interface)
        .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|v4| v4.ip())))
        .find(|ip| is_global_ipv4(*ip)))
}

/// eth0's primary IPv4.
pub fn eth0_ipv4() -> Result<Option<Ipv4Addr>, Error> {
    interface_ipv4(IPV4_INTERFACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLY_HOSTS: &str = "127.0.0.1\tlocalhost\n\
        ::1\tlocalhost ip6-localhost\n\
        # fdaa::9 fly-local-6pn (commented out)\n\
        fdaa:0:1:a7b:1:2:3:2\tfly-local-6pn\n\
        fdaa:0:1:a7b:1:2:3:2\te784079b449483\n\
        172.19.0.2\te784079b449483\n";

    #[test]
    fn hosts_6pn_entry_is_found_and_comments_are_ignored() {
        assert_eq!(
            parse_hosts_6pn(FLY_HOSTS).unwrap(),
            Some("fdaa:0:1:a7b:1:2:3:2".parse().unwrap())
        );
    }

    #[test]
    fn hosts_without_6pn_entry_give_none() {
        assert_eq!(parse_hosts_6pn("127.0.0.1 localhost\n\n").unwrap(), None);
    }

    #[test]
    fn hosts_6pn_entry_with_alias_after_other_names_is_found() {
        let text = "fdaa::5 myhost fly-local-6pn\n";
        assert_eq!(
            parse_hosts_6pn(text).unwrap(),
            Some("fdaa::5".parse().unwrap())
        );
    }

    #[test]
    fn hosts_6pn_entry_with_ipv4_is_an_error_naming_the_line() {
        let err = parse_hosts_6pn("127.0.0.1 localhost\n10.0.0.1 fly-local-6pn\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("10.0.0.1"), "{err}");
    }

    #[test]
    fn private_ip_sources_must_agree() {
        let a: Ipv6Addr = "fdaa::2".parse().unwrap();
        let b: Ipv6Addr = "fdaa::3".parse().unwrap();
        assert_eq!(
            choose_private_ip(Some(a), Some(a)).unwrap(),
            (a, Source::Both)
        );
        assert_eq!(choose_private_ip(Some(a), None).unwrap(), (a, Source::Env));
        assert_eq!(
            choose_private_ip(None, Some(b)).unwrap(),
            (b, Source::Hosts)
        );
        let err = choose_private_ip(Some(a), Some(b)).unwrap_err().to_string();
        assert!(err.contains("fdaa::2") && err.contains("fdaa::3"), "{err}");
        assert!(matches!(
            choose_private_ip(None, None),
            Err(Error::NoPrivateIp)
        ));
    }

    #[test]
    fn only_global_ipv4_addresses_are_primary() {
        assert!(is_global_ipv4(Ipv4Addr::new(172, 19, 0, 2)));
        assert!(!is_global_ipv4(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(!is_global_ipv4(Ipv4Addr::new(169, 254, 1, 1)));
        assert!(!is_global_ipv4(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn loopback_interface_has_no_primary_ipv4() {
        // `lo` exists everywhere and carries only 127.0.0.1.
        assert_eq!(interface_ipv4("lo").unwrap(), None);
    }
}
