//! The lab bridge and each guest's network namespace, veth pair, addresses and routes.
//!
//! Everything is done by running iproute2's `ip` with an argv (never through a shell); this
//! file must not touch mounts or processes. Topology (reference/fly-machines-api.md §4, §7):
//! the bridge in the host namespace holds the 6PN gateway, the resolver address (`fdaa::3` in
//! the lab) and the IPv4 gateway. A guest's `eth0` holds its 6PN /112, a route to `fdaa::/16`
//! on the link (guests reach each other directly over the bridge) and its private IPv4 as a /32
//! with a single host route to the IPv4 gateway: without any other IPv4 route a guest cannot
//! address another guest's IPv4, and the host does not forward IPv4 between them.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use super::{Error, Result};

/// The lab bridge: one per lab (tests use their own names and prefixes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Interface name, at most 15 bytes, e.g. `fkslab0`.
    pub name: String,
    /// The host's 6PN address on the bridge.
    pub gateway6: Ipv6Addr,
    /// Prefix length of `gateway6`: the host routes this prefix to the bridge.
    pub prefix6: u8,
    /// The internal resolver address guests use (`fdaa::3`, §7); held by the bridge.
    pub dns6: Ipv6Addr,
    /// The host's IPv4 on the bridge: the only IPv4 address a guest can reach.
    pub gateway4: Ipv4Addr,
    /// Prefix length of the host's IPv4 network on the bridge.
    pub prefix4: u8,
}

impl Default for BridgeConfig {
    /// The lab's bridge: `fkslab0`, `fdaa::1/16`, `fdaa::3`, `172.19.0.1/16` (Fly's guests see a
    /// 172.19.x.x private IPv4).
    fn default() -> Self {
        BridgeConfig {
            name: "fkslab0".to_string(),
            gateway6: Ipv6Addr::new(0xfdaa, 0, 0, 0, 0, 0, 0, 1),
            prefix6: 16,
            dns6: Ipv6Addr::new(0xfdaa, 0, 0, 0, 0, 0, 0, 3),
            gateway4: Ipv4Addr::new(172, 19, 0, 1),
            prefix4: 16,
        }
    }
}

/// The `ip` program: iproute2 installs it in /usr/sbin or /sbin, which a non-login PATH may lack.
fn ip_program() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("ip")
}

/// Runs `ip ARGS`; "File exists" counts as success when `exists_ok`.
pub(crate) fn ip(args: &[&str], exists_ok: bool) -> Result<()> {
    let out = Command::new(ip_program())
        .args(args)
        .output()
        .map_err(|source| Error::IpSpawn {
            args: args.join(" "),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if exists_ok && stderr.contains("File exists") {
        return Ok(());
    }
    Err(Error::IpFailed {
        args: args.join(" "),
        stderr,
    })
}

/// Runs several `ip` commands (one per line, in `netns` when given) in a single `ip -batch`
/// process: starting a guest runs a dozen of them and each process costs milliseconds. Lines
/// are built from validated names and addresses only, never from free text.
pub(crate) fn ip_batch(netns: Option<&str>, lines: &[String]) -> Result<()> {
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-batch", "-"]);
    let shown = || format!("{} <<< {:?}", args.join(" "), lines);
    let mut child = Command::new(ip_program())
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::IpSpawn {
            args: shown(),
            source,
        })?;
    let mut input = lines.join("\n");
    input.push('\n');
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(input.as_bytes()))
        .unwrap_or(Ok(()));
    let out = child.wait_with_output().map_err(|source| Error::IpSpawn {
        args: shown(),
        source,
    })?;
    written.map_err(|source| Error::IpSpawn {
        args: shown(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::IpFailed {
        args: shown(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Runs `ip ARGS`, ignoring the error that says the object is already gone.
fn ip_gone_ok(args: &[&str]) -> Result<()> {
    match ip(args, false) {
        Err(Error::IpFailed { stderr, .. })
            if stderr.contains("Cannot find device")
                // The host end of a veth goes away shortly after its peer's namespace is
                // deleted: between `link_exists` and `link del` it may already be gone.
                || stderr.contains("No such device")
                || stderr.contains("No such file")
                || stderr.contains("does not exist") =>
        {
            Ok(())
        }
        other => other,
    }
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Creates the bridge if missing and (re)applies its addresses; safe to call concurrently and
/// repeatedly.
pub fn ensure_bridge(bridge: &BridgeConfig) -> Result<()> {
    let name = bridge.name.as_str();
    let name_ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(Error::InvalidBridge {
            name: name.to_string(),
            reason: "the name must be 1-15 characters of [A-Za-z0-9_-]".to_string(),
        });
    }
    if !link_exists(name) {
        // Multicast snooping off: NDP between guests must flood before any MLD report.
        ip(
            &["link", "add", name, "type", "bridge", "mcast_snooping", "0"],
            true,
        )?;
    }
    // A fixed MAC: a Linux bridge left to itself takes the lowest MAC of its ports, so it
    // changed whenever a guest's veth came or went, leaving the guests' neighbour entries for
    // the gateway and the DNS address on a MAC that was gone (see `mac`). Set only when it
    // differs: setting a MAC, even the same one, makes the kernel flush the bridge's
    // neighbour entries, and this runs at every guest start.
    let fixed = mac(&format!("bridge {name}"));
    let current = std::fs::read_to_string(
        std::path::Path::new("/sys/class/net")
            .join(name)
            .join("address"),
    )
    .unwrap_or_default();
    if current.trim() != fixed {
        ip(&["link", "set", name, "address", &fixed], true)?;
    }
    // nodad: the addresses are usable at once; nothing else on the bridge can own them.
    ip_batch(
        None,
        &[
            format!(
                "addr replace {}/{} dev {name} nodad",
                bridge.gateway6, bridge.prefix6
            ),
            format!("addr replace {}/128 dev {name} nodad", bridge.dns6),
            format!(
                "addr replace {}/{} dev {name}",
                bridge.gateway4, bridge.prefix4
            ),
            format!("link set {name} up"),
        ],
    )
}

/// Deletes the bridge (its guests must be destroyed first); a missing bridge is not an error.
pub fn remove_bridge(name: &str) -> Result<()> {
    ip_gone_ok(&["link", "del", name])
}

/// The host-side names of one guest's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetNames {
    /// Network namespace name: `<bridge>-<machine id>`.
    pub netns: String,
    /// Host end of the veth pair: `fkv` + 12 hex digits of a hash of the netns name.
    pub veth: String,
    /// The guest's eth0 MAC, the same at every boot of the machine (see [`mac`]).
    pub mac: String,
}

/// A locally administered unicast MAC (`02:…`) derived from `key`, the same every time.
///
/// Why stable: on Fly, 6PN traffic goes straight from Machine to Machine over a routed
/// WireGuard mesh (reference fly-machines-api.md §7), so a restarted Machine is reachable at its
/// address as soon as it listens. The lab's guests share a bridge instead, and a veth made anew
/// at each boot got a new random MAC: a peer (the host, another guest) could keep sending to
/// the old MAC until its neighbour entry failed (Linux NUD: a delay, then unicast probes) or
/// the guest's own traffic refreshed it, a stall Fly does not have. A MAC per machine, like a
/// VM's NIC, keeps those entries valid. (Not measured: the upgrade test's probe gap did not
/// change beyond its noise.)
pub(crate) fn mac(key: &str) -> String {
    let h = crate::ids::fnv1a(key.as_bytes()).to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        h[3], h[4], h[5], h[6], h[7]
    )
}

impl NetNames {
    pub(crate) fn new(bridge: &str, machine_id: &str) -> Self {
        let netns = format!("{bridge}-{machine_id}");
        // Interface names are limited to 15 bytes, so the veth gets a stable digest.
        let veth = format!(
            "fkv{:012x}",
            crate::ids::fnv1a(netns.as_bytes()) & 0xffff_ffff_ffff
        );
        let mac = mac(&netns);
        NetNames { netns, veth, mac }
    }

    /// Path of the namespace file `ip netns add` creates.
    pub(crate) fn netns_path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.netns)
    }
}

/// The MTU of a guest's eth0, as Fly's init sets it (reference/fly-runtime.md §1.4).
pub const GUEST_MTU: u32 = 1420;

/// Creates the guest's namespace, veth pair, addresses and routes. On failure, what was made is
/// removed again.
pub(crate) fn setup_guest(
    names: &NetNames,
    bridge: &BridgeConfig,
    private_ip: Ipv6Addr,
    ipv4: Ipv4Addr,
) -> Result<()> {
    ensure_bridge(bridge)?;
    // A namespace left by a crashed run of the same machine is replaced.
    teardown_guest(names)?;
    let result = configure(names, bridge, private_ip, ipv4);
    if result.is_err() {
        // Best effort: the configuration error is the one worth reporting.
        let _ = teardown_guest(names);
    }
    result
}

fn configure(
    names: &NetNames,
    bridge: &BridgeConfig,
    private_ip: Ipv6Addr,
    ipv4: Ipv4Addr,
) -> Result<()> {
    let (ns, veth) = (names.netns.as_str(), names.veth.as_str());
    ip_batch(
        None,
        &[
            format!("netns add {ns}"),
            format!("link add {veth} type veth peer name eth0 netns {ns}"),
            format!("link set {veth} master {} up", bridge.name),
        ],
    )?;
    let gw4 = bridge.gateway4;
    ip_batch(
        Some(ns),
        &[
            "link set lo up".to_string(),
            format!("addr add {private_ip}/112 dev eth0 nodad"),
            format!("addr add {ipv4}/32 dev eth0"),
            // Fly's init brings eth0 up with MTU 1420 (reference/fly-runtime.md §1.4, INIT 2021;
            // whether production still uses 1420 is a known unknown). It also turns rx/tx
            // checksum offload off, which needs ethtool and does not matter on a veth: not
            // modelled.
            format!("link set eth0 mtu {GUEST_MTU}"),
            format!("link set eth0 address {}", names.mac),
            "link set eth0 up".to_string(),
            // 6PN: the whole fdaa::/16 is on the link, so guests on the bridge reach each
            // other (§7).
            "route add fdaa::/16 dev eth0".to_string(),
            // IPv4 reaches only the host (§7: the private IPv4 serves Fly Proxy alone).
            format!("route add {gw4} dev eth0 scope link"),
        ],
    )
}

/// Removes the guest's namespace and veth pair; missing pieces are not an error. The guest's
/// processes must be gone first, or the namespace outlives its name.
pub(crate) fn teardown_guest(names: &NetNames) -> Result<()> {
    if names.netns_path().exists() {
        ip_gone_ok(&["netns", "del", &names.netns])?;
    }
    if link_exists(&names.veth) {
        ip_gone_ok(&["link", "del", &names.veth])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_that_are_not_interface_names_are_refused_before_running_ip() {
        for bad in ["", "sixteen-chars-xx", "br 0", "br\n0"] {
            let bridge = BridgeConfig {
                name: bad.to_string(),
                ..BridgeConfig::default()
            };
            assert!(
                matches!(ensure_bridge(&bridge), Err(Error::InvalidBridge { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn veth_name_fits_ifnamsiz_and_is_stable_per_bridge_and_machine() {
        let a = NetNames::new("fkslab0", "1857156b526dd8");
        assert_eq!(a.netns, "fkslab0-1857156b526dd8");
        assert_eq!(a.veth.len(), 15);
        assert_eq!(a, NetNames::new("fkslab0", "1857156b526dd8"));
        assert_ne!(a.veth, NetNames::new("fkslab1", "1857156b526dd8").veth);
    }

    #[test]
    fn a_guest_keeps_one_locally_administered_mac_across_boots() {
        let a = NetNames::new("fkslab0", "1857156b526dd8");
        assert_eq!(a.mac, NetNames::new("fkslab0", "1857156b526dd8").mac);
        assert_ne!(a.mac, NetNames::new("fkslab0", "1857156b526dd9").mac);
        let bytes: Vec<u8> = a
            .mac
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
            .collect();
        assert_eq!(bytes.len(), 6);
        // Locally administered (bit 1 set), unicast (bit 0 clear).
        assert_eq!(bytes[0] & 0b11, 0b10);
        assert_ne!(mac("bridge fkslab0"), a.mac);
    }
}
