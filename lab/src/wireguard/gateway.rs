//! The lab's WireGuard gateway: a real WireGuard interface in its own network namespace
//! `wg-<bridge>` (not `<bridge>-...`, the guests' namespaces), with one leg on the lab bridge (6PN) and one on a small "public" bridge
//! `<bridge>wg` that stands for the internet side, where peers send their UDP.
//!
//! Configured with wireguard-tools' `wg`: kernel WireGuard (`ip link add ... type wireguard`)
//! where the kernel has it, else Debian's userspace `wireguard-go` on a TUN device. Guests
//! route all of `fdaa::/16` on their link, so the gateway answers neighbour solicitations for
//! each peer's address (proxy NDP) and forwards between the bridge and the WireGuard
//! interface. Fly's DNS over WireGuard is `<org /48>::3` (reference fly-runtime.md §4); when
//! the lab's resolver is elsewhere (`fdaa::3` on the default bridge) an nftables DNAT in the
//! gateway namespace sends it there.
//!
//! Every program runs with an argv built from validated values, never through a shell.
//! Must not: touch guests' namespaces or the host's routing.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::guest::BridgeConfig;
use crate::ids::fnv1a;

/// The UDP port peers send to: flyctl dials `<endpointip>:51820` (reference fly-runtime.md §5).
pub const PORT: u16 = 51820;
/// The MTU of the WireGuard interface (wg-quick's default; flyctl's tunnel uses 1420 too).
const MTU: u32 = 1420;

/// Why the gateway could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started.
    #[error("running `{program} {args}`")]
    Spawn {
        program: String,
        args: String,
        #[source]
        source: std::io::Error,
    },
    /// A program failed.
    #[error("`{program} {args}` failed: {stderr}")]
    Failed {
        program: String,
        args: String,
        stderr: String,
    },
    /// Neither kernel WireGuard nor wireguard-go could bring the interface up.
    #[error(
        "no WireGuard for the lab gateway: the kernel has no WireGuard ({kernel}) and \
         wireguard-go did not create {iface} within 5s (is Debian's wireguard-go installed? \
         scripts/setup.sh installs it); its log: {log}"
    )]
    NoWireGuard {
        kernel: String,
        iface: String,
        log: PathBuf,
    },
    /// Reading or writing the gateway's key.
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The names and addresses of one lab's gateway, all derived from its bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Network namespace: `wg-<bridge>`.
    pub netns: String,
    /// The WireGuard interface (unique per lab: wireguard-go's control socket
    /// `/var/run/wireguard/<iface>.sock` is shared by all namespaces).
    pub iface: String,
    /// The "public" bridge in the host namespace.
    pub public_bridge: String,
    /// Host end of the veth to the lab bridge.
    pub veth6: String,
    /// Host end of the veth to the public bridge.
    pub veth4: String,
    /// The host's address on the public bridge (`/24`).
    pub host4: Ipv4Addr,
    /// The gateway's public address: the peers' `endpointip`.
    pub public4: Ipv4Addr,
    /// The gateway's 6PN address on the lab bridge.
    pub addr6: Ipv6Addr,
}

impl Layout {
    /// The layout for `bridge`. The public side is `100.64.X.0/24` (shared address space,
    /// RFC 6598: not routed on the internet, rarely used on a host) with X from the bridge
    /// name, so labs on other bridges do not collide.
    pub fn new(bridge: &BridgeConfig) -> Layout {
        let name = bridge.name.as_str();
        let short: String = name.chars().take(13).collect();
        let h = fnv1a(name.as_bytes());
        let x = (h % 250) as u8 + 1;
        let g = bridge.gateway6.segments();
        Layout {
            netns: format!("wg-{name}"),
            iface: format!("wg{}", name.chars().take(13).collect::<String>()),
            public_bridge: format!("{short}wg"),
            veth6: format!(
                "fkg{:012x}",
                fnv1a(format!("{name}/6").as_bytes()) & 0xffff_ffff_ffff
            ),
            veth4: format!(
                "fkg{:012x}",
                fnv1a(format!("{name}/4").as_bytes()) & 0xffff_ffff_ffff
            ),
            host4: Ipv4Addr::new(100, 64, x, 1),
            public4: Ipv4Addr::new(100, 64, x, 2),
            addr6: Ipv6Addr::new(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7] | 0x4),
        }
    }
}

/// A running gateway. [`Gateway::stop`] removes everything it made.
#[derive(Debug)]
pub struct Gateway {
    /// Names and addresses.
    pub layout: Layout,
    /// Its public key (base64), as `addWireGuardPeer` returns it.
    pub pubkey: String,
    /// `wireguard-go` when the kernel has no WireGuard.
    child: Mutex<Option<Child>>,
    bridge: BridgeConfig,
}

fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String, Error> {
    use std::io::Write;
    let shown = || args.join(" ");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: program.into(),
            args: shown(),
            source,
        })?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).map_err(|source| Error::Spawn {
            program: program.into(),
            args: shown(),
            source,
        })?;
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        program: program.into(),
        args: shown(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Failed {
            program: program.into(),
            args: shown(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `ip` from iproute2 (in /usr/sbin or /sbin, which a non-login PATH may lack).
fn ip_program() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("ip")
}

fn ip(args: &[&str]) -> Result<String, Error> {
    run(ip_program(), args, None)
}

/// `ip ...`, where "not there" counts as done (teardown).
fn ip_gone_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        tracing::debug!(error = %e, "teardown step");
    }
}

/// `ip netns exec NS PROGRAM ARGS`.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String, Error> {
    let mut argv = vec!["netns", "exec", ns, program];
    argv.extend_from_slice(args);
    run(ip_program(), &argv, None)
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The gateway's private key: made once with `wg genkey` and kept (0600) in the state dir, so
/// peers keep working across lab restarts.
fn private_key(dir: &Path) -> Result<String, Error> {
    let path = dir.join("gateway.key");
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => return Ok(k.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                op: "reading",
                path,
                source,
            })
        }
    }
    let key = run("wg", &["genkey"], None)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        op: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    crate::write_private(&path, format!("{key}\n").as_bytes()).map_err(|source| Error::Io {
        op: "writing",
        path: path.clone(),
        source,
    })?;
    Ok(key)
}

impl Gateway {
    /// Builds the namespace, the two legs and the WireGuard interface (replacing what a
    /// crashed lab left), listening on [`PORT`] with the key kept in `dir`.
    pub fn start(bridge: &BridgeConfig, dir: &Path) -> Result<Gateway, Error> {
        let layout = Layout::new(bridge);
        teardown(&layout);
        let key = private_key(dir)?;
        // The key goes to `wg` on stdin, never in an argv.
        let pubkey = run("wg", &["pubkey"], Some(format!("{key}\n").as_bytes()))?;
        let gw = Gateway {
            layout,
            pubkey,
            child: Mutex::new(None),
            bridge: bridge.clone(),
        };
        if let Err(e) = gw.build(dir) {
            gw.stop();
            return Err(e);
        }
        Ok(gw)
    }

    fn build(&self, dir: &Path) -> Result<(), Error> {
        let l = &self.layout;
        let ns = l.netns.as_str();
        ip(&["netns", "add", ns])?;
        // The public side: a bridge of its own; the host holds .1, the gateway .2.
        if !link_exists(&l.public_bridge) {
            ip(&["link", "add", &l.public_bridge, "type", "bridge"])?;
        }
        ip(&[
            "addr",
            "replace",
            &format!("{}/24", l.host4),
            "dev",
            &l.public_bridge,
        ])?;
        ip(&["link", "set", &l.public_bridge, "up"])?;
        for (host_end, bridge, inner) in [
            (&l.veth4, l.public_bridge.as_str(), "pub0"),
            (&l.veth6, self.bridge.name.as_str(), "eth0"),
        ] {
            ip(&[
                "link", "add", host_end, "type", "veth", "peer", "name", inner, "netns", ns,
            ])?;
            ip(&["link", "set", host_end, "master", bridge, "up"])?;
        }
        let sysctl = |k: &str| in_ns(ns, "sysctl", &["-q", "-w", &format!("{k}=1")]);
        sysctl("net.ipv6.conf.all.forwarding")?;
        sysctl("net.ipv6.conf.all.proxy_ndp")?;
        for line in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &format!("{}/24", l.public4), "dev", "pub0"],
            vec!["link", "set", "pub0", "up"],
            vec![
                "addr",
                "add",
                &format!("{}/128", l.addr6),
                "dev",
                "eth0",
                "nodad",
            ],
            vec!["link", "set", "eth0", "up"],
            vec!["-6", "route", "add", "fdaa::/16", "dev", "eth0"],
        ] {
            in_ns(ns, ip_program(), &line)?;
        }
        sysctl("net.ipv6.conf.eth0.proxy_ndp")?;
        self.create_interface(dir)?;
        let key_file = dir.join("gateway.key");
        in_ns(
            ns,
            "wg",
            &[
                "set",
                &l.iface,
                "listen-port",
                &PORT.to_string(),
                "private-key",
                &key_file.display().to_string(),
            ],
        )?;
        in_ns(
            ns,
            ip_program(),
            &["link", "set", &l.iface, "mtu", &MTU.to_string(), "up"],
        )?;
        Ok(())
    }

    /// Kernel WireGuard when `ip link add type wireguard` works, else `wireguard-go -f`.
    fn create_interface(&self, dir: &Path) -> Result<(), Error> {
        let l = &self.layout;
        let kernel = match in_ns(
            &l.netns,
            ip_program(),
            &["link", "add", &l.iface, "type", "wireguard"],
        ) {
            Ok(_) => {
                tracing::info!(iface = %l.iface, "lab wireguard gateway: kernel WireGuard");
                return Ok(());
            }
            Err(e) => e.to_string(),
        };
        let log = dir.join("wireguard-go.log");
        let out = std::fs::File::create(&log).map_err(|source| Error::Io {
            op: "creating",
            path: log.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| Error::Io {
            op: "opening",
            path: log.clone(),
            source,
        })?;
        let child = Command::new(ip_program())
            .args(["netns", "exec", &l.netns, "wireguard-go", "-f", &l.iface])
            .env("LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "wireguard-go".into(),
                args: l.iface.clone(),
                source,
            })?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        let sock = Path::new("/var/run/wireguard").join(format!("{}.sock", l.iface));
        while Instant::now() < deadline {
            if sock.exists() && in_ns(&l.netns, ip_program(), &["link", "show", &l.iface]).is_ok() {
                tracing::info!(iface = %l.iface, "lab wireguard gateway: wireguard-go (no kernel WireGuard)");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::NoWireGuard {
            kernel,
            iface: l.iface.clone(),
            log,
        })
    }

    /// Lets `pubkey` in with its `/120` and routes that prefix to it; the gateway answers
    /// neighbour solicitations for `peerip` on the bridge.
    pub fn add_peer(&self, pubkey: &str, peerip: Ipv6Addr) -> Result<(), Error> {
        let l = &self.layout;
        let net = format!("{}/120", prefix120(peerip));
        in_ns(
            &l.netns,
            "wg",
            &["set", &l.iface, "peer", pubkey, "allowed-ips", &net],
        )?;
        in_ns(
            &l.netns,
            ip_program(),
            &["-6", "route", "replace", &net, "dev", &l.iface],
        )?;
        in_ns(
            &l.netns,
            ip_program(),
            &[
                "-6",
                "neigh",
                "replace",
                "proxy",
                &peerip.to_string(),
                "dev",
                "eth0",
            ],
        )?;
        Ok(())
    }

    /// Removes the peer: its handshakes fail from now on.
    pub fn remove_peer(&self, pubkey: &str, peerip: Ipv6Addr) -> Result<(), Error> {
        let l = &self.layout;
        in_ns(&l.netns, "wg", &["set", &l.iface, "peer", pubkey, "remove"])?;
        let net = format!("{}/120", prefix120(peerip));
        let _ = in_ns(&l.netns, ip_program(), &["-6", "route", "del", &net]);
        let _ = in_ns(
            &l.netns,
            ip_program(),
            &[
                "-6",
                "neigh",
                "del",
                "proxy",
                &peerip.to_string(),
                "dev",
                "eth0",
            ],
        );
        Ok(())
    }

    /// Sends `<org /48>::3` (Fly's resolver address over WireGuard) to the lab's resolver when
    /// that is another address (nftables DNAT in the gateway's namespace).
    pub fn route_org_dns(&self, org_dns: Ipv6Addr) -> Result<(), Error> {
        if org_dns == self.bridge.dns6 {
            return Ok(());
        }
        let ns = self.layout.netns.as_str();
        let table = "fkswg";
        // Idempotent: `add` of an existing table or chain succeeds.
        in_ns(ns, "nft", &["add", "table", "ip6", table])?;
        in_ns(
            ns,
            "nft",
            &[
                "add",
                "chain",
                "ip6",
                table,
                "pre",
                "{",
                "type",
                "nat",
                "hook",
                "prerouting",
                "priority",
                "-100",
                ";",
                "}",
            ],
        )?;
        let rules = in_ns(ns, "nft", &["list", "chain", "ip6", table, "pre"])?;
        if rules.contains(&org_dns.to_string()) {
            return Ok(());
        }
        let to = self.bridge.dns6.to_string();
        for proto in ["udp", "tcp"] {
            in_ns(
                ns,
                "nft",
                &[
                    "add",
                    "rule",
                    "ip6",
                    table,
                    "pre",
                    "ip6",
                    "daddr",
                    &org_dns.to_string(),
                    proto,
                    "dport",
                    "53",
                    "dnat",
                    "to",
                    &to,
                ],
            )?;
        }
        Ok(())
    }

    /// Stops wireguard-go and removes the namespace, the veths and the public bridge.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        teardown(&self.layout);
    }
}

impl Drop for Gateway {
    /// The lab's last handle is gone: leave no wireguard-go or namespace behind.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes what a gateway of `layout` made (nothing there is fine).
fn teardown(l: &Layout) {
    if Path::new("/run/netns").join(&l.netns).exists() {
        // wireguard-go of a crashed lab still runs in the namespace: end it first.
        if let Ok(pids) = ip(&["netns", "pids", &l.netns]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        ip_gone_ok(&["netns", "delete", &l.netns]);
    }
    for link in [&l.veth4, &l.veth6, &l.public_bridge] {
        if link_exists(link) {
            ip_gone_ok(&["link", "del", link]);
        }
    }
    let sock = Path::new("/var/run/wireguard").join(format!("{}.sock", l.iface));
    let _ = std::fs::remove_file(sock);
}

/// The `/120` that holds `ip` (its last 8 bits cleared).
pub fn prefix120(ip: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(ip) & !0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_fit_interface_names_and_differ_per_bridge() {
        let a = Layout::new(&BridgeConfig::default());
        assert_eq!(a.netns, "wg-fkslab0");
        for n in [&a.iface, &a.public_bridge, &a.veth4, &a.veth6] {
            assert!(n.len() <= 15, "{n}");
        }
        assert_eq!(a.addr6, "fdaa::5".parse::<Ipv6Addr>().expect("ip"));
        let b = Layout::new(&BridgeConfig {
            name: "fkse2etun15char".into(),
            ..BridgeConfig::default()
        });
        assert_ne!(a.public4, b.public4);
        assert_ne!(a.iface, b.iface);
        assert!(b.iface.len() <= 15 && b.public_bridge.len() <= 15);
    }

    #[test]
    fn prefix120_clears_the_last_byte() {
        let ip: Ipv6Addr = "fdaa:1:2:ffff::1:2".parse().expect("ip");
        assert_eq!(prefix120(ip).to_string(), "fdaa:1:2:ffff::1:0");
    }
}
