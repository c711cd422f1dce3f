//! The lab's guest runtime: runs a started machine as an isolated guest on this host (root only).
//!
//! A guest is the machine's main process placed, before it executes, in
//! - its own **network namespace** (named `<bridge>-<machine id>`, visible in `ip netns list`)
//!   joined to the lab bridge by a veth pair whose guest end is `eth0`, carrying the machine's
//!   6PN address (a /112, reference/fly-machines-api.md §4) and a private IPv4 that reaches only
//!   the host (a /32 plus a host route to the bridge's IPv4 gateway, no default route, no IPv4
//!   forwarding: machines talk to each other over 6PN alone, as on Fly, §7);
//! - its own **mount namespace** whose root is, for a pulled image ([`GuestImage`]), an overlay
//!   of the image's unpacked root (read-only lower layer) and an upper layer made empty at every
//!   start under the machine's root dir, with /proc, /sys and /dev bound from the host, private
//!   tmpfs /run and /tmp, Fly's cgroup mounts, the volume and the files; or, for the built-in
//!   `lab/base` (the host's own programs, for lab tests), a fresh tmpfs: every top-level host directory is
//!   seen through an overlay with a private tmpfs upper layer (so writes, the machine's `files`,
//!   /etc/hosts, /etc/resolv.conf and /etc/hostname stay inside the guest), directories holding
//!   other mounts (/proc, /sys, /dev, ...) are bind-mounted recursively, /run and /tmp are private
//!   tmpfs, /var/lib and /etc/rancher are per-guest directories emptied at every start (the root
//!   filesystem is ephemeral, as on Fly), `hidden_dirs` (the lab's state) are masked by an empty
//!   read-only tmpfs, and the volume's host directory is bind-mounted at its mount path;
//! - its own **UTS namespace** with hostname = machine id. There is no PID namespace: the guest's
//!   processes are found (and killed) by their network namespace.
//!
//! All calls block (start waits for init's exec, stop and exec poll every 10 ms): an async
//! caller runs them on a blocking thread. Dropping a [`Guest`] does not stop it; call
//! [`Guest::destroy`], and [`cleanup_orphans`] at lab start for guests of a crashed lab.
//!
//! Links, addresses and routes are configured by running iproute2's `ip` with an argv (never a
//! shell). Namespace and mount work uses the `nix` crate inside `pre_exec` hooks, which only run
//! steps prepared before the fork (no allocation after it). This module must not know about the
//! Machines API: the lab server turns a machine into a [`GuestSpec`] and drives a [`Guest`].

pub mod cgroups;
pub mod hallpass;
mod mounts;
mod network;
mod process;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

pub use network::{ensure_bridge, remove_bridge, BridgeConfig};
pub use process::{cleanup_orphans, ExecOutput, Guest};

/// Re-exported so callers can name stop signals without depending on `nix` themselves
/// (`"SIGTERM".parse::<Signal>()` works).
pub use nix::sys::signal::Signal;

/// Errors of the guest runtime; each names the machine or the path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be turned into a guest.
    #[error("invalid guest spec for machine {machine_id}: {reason}")]
    InvalidSpec { machine_id: String, reason: String },
    /// The bridge configuration cannot be used.
    #[error("invalid lab bridge {name:?}: {reason}")]
    InvalidBridge { name: String, reason: String },
    /// An `ip` command could not be run.
    #[error("running `ip {args}`")]
    IpSpawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {stderr}")]
    IpFailed { args: String, stderr: String },
    /// A file operation on the host failed.
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The guest's init could not be started (the log names the failed namespace step).
    #[error("starting init of machine {machine_id} (see {log})")]
    Spawn {
        machine_id: String,
        log: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A signal could not be delivered.
    #[error("sending {signal} to machine {machine_id}")]
    Signal {
        machine_id: String,
        signal: Signal,
        #[source]
        source: nix::errno::Errno,
    },
    /// Waiting for a guest process failed.
    #[error("waiting for machine {machine_id}")]
    Wait {
        machine_id: String,
        #[source]
        source: std::io::Error,
    },
    /// A guest of the same machine on the same bridge is still running.
    #[error("machine {machine_id} already has a running guest (network namespace {netns})")]
    AlreadyRunning { machine_id: String, netns: String },
    /// The guest is not running, so it cannot exec.
    #[error("machine {machine_id} is not running")]
    NotRunning { machine_id: String },
    /// An exec'd command could not be started inside the guest.
    #[error("executing {argv0} in machine {machine_id}")]
    ExecSpawn {
        machine_id: String,
        argv0: String,
        #[source]
        source: std::io::Error,
    },
    /// An exec'd command did not finish in time (it was killed).
    #[error("{argv0} in machine {machine_id} did not finish within {timeout:?}")]
    ExecTimeout {
        machine_id: String,
        argv0: String,
        timeout: Duration,
    },
    /// Processes of the guest survived SIGKILL.
    #[error("processes {pids:?} of machine {machine_id} survived SIGKILL")]
    Unkillable { machine_id: String, pids: Vec<i32> },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A file the platform writes into the guest (a machine config `files` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Absolute path inside the guest.
    pub guest_path: PathBuf,
    /// Raw contents (already decoded from the API's base64).
    pub contents: Vec<u8>,
    /// Permission bits, e.g. `0o600`.
    pub mode: u32,
}

/// A host directory bind-mounted into the guest (a machine's volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The volume's directory on the host; must exist.
    pub host_dir: PathBuf,
    /// Absolute mount path inside the guest, e.g. `/data`.
    pub mount_path: PathBuf,
}

/// A pulled image a guest runs on (ARCHITECTURE "Registry and images"): its unpacked root
/// filesystem becomes the read-only lower layer of the guest's root overlay, whose upper layer
/// is new at every start (reference/fly-runtime.md §2: the rootfs is an overlay whose writable
/// layer is reset on stop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The unpacked image on the host (the rootfs cache); never written.
    pub rootfs: PathBuf,
    /// The image's `WorkingDir` (absolute; created when missing, as Docker does), else `/`.
    pub working_dir: Option<PathBuf>,
    /// uid and gid of the main process (from the image's `User`); root when `None`.
    pub ids: Option<(u32, u32)>,
}

/// Everything needed to start one guest.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Machine id: hostname, netns name suffix (`[0-9a-z]`, at most 40 characters).
    pub machine_id: String,
    /// App name, for logs.
    pub app: String,
    /// The machine's 6PN address (`fdaa::/16`); put on `eth0` as a /112.
    pub private_ip: Ipv6Addr,
    /// The machine's private IPv4 (inside the bridge's IPv4 network); reaches only the host.
    pub ipv4: Ipv4Addr,
    /// The lab bridge to join (created if missing).
    pub bridge: BridgeConfig,
    /// Volume mount, if the machine has one.
    pub volume: Option<VolumeMount>,
    /// Host directories the guest must not see (e.g. the lab's state dir, which holds other
    /// machines' volumes): covered by an empty read-only tmpfs in the guest's view. Missing
    /// directories are skipped. Everything else of the host is visible, writes staying private.
    pub hidden_dirs: Vec<PathBuf>,
    /// Machine `files`, written inside the guest after its mounts (so a file under the volume's
    /// mount path lands on the volume).
    pub files: Vec<GuestFile>,
    /// The exact environment of init (see [`fly_runtime_env`]); PATH is computed from
    /// `path_dirs` followed by this map's PATH or, without one, [`DEFAULT_PATH`].
    pub env: BTreeMap<String, String>,
    /// argv of the guest's main process; `init[0]` is looked up on the guest's PATH.
    pub init: Vec<String>,
    /// Directories the image puts first on PATH.
    pub path_dirs: Vec<PathBuf>,
    /// The pulled image the guest's root is made of; `None` gives the host view (`lab/base`:
    /// a tmpfs root showing the host's top-level directories through private overlays).
    pub image: Option<GuestImage>,
    /// Per-guest state directory (created if missing); the runtime owns `rootfs/`, `upper/`,
    /// `var-lib/`, `etc-rancher/` and `guest.state` in it.
    pub root_dir: PathBuf,
    /// Where init's stdout and stderr are appended.
    pub log_path: PathBuf,
}

/// The PATH a Debian root shell has; appended after the image's directories.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Facts about a machine from which its Fly runtime variables are built.
#[derive(Debug, Clone)]
pub struct RuntimeFacts<'a> {
    pub app: &'a str,
    pub machine_id: &'a str,
    pub region: &'a str,
    pub private_ip: Ipv6Addr,
    pub image_ref: &'a str,
    /// The config version (`instance_id`, a ULID).
    pub machine_version: &'a str,
    pub memory_mb: u32,
    pub public_ip: Option<Ipv6Addr>,
    pub process_group: Option<&'a str>,
    pub primary_region: Option<&'a str>,
}

/// The variables Fly sets in every machine (reference/fly-machines-api.md §7, "Env vars a
/// Machine gets at runtime"). The caller adds the machine's `env` and app secrets on top.
pub fn fly_runtime_env(facts: &RuntimeFacts<'_>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("FLY_APP_NAME", facts.app.to_string());
    set("FLY_MACHINE_ID", facts.machine_id.to_string());
    // §4: FLY_ALLOC_ID equals the machine id.
    set("FLY_ALLOC_ID", facts.machine_id.to_string());
    set("FLY_REGION", facts.region.to_string());
    set("FLY_PRIVATE_IP", facts.private_ip.to_string());
    set("FLY_IMAGE_REF", facts.image_ref.to_string());
    set("FLY_MACHINE_VERSION", facts.machine_version.to_string());
    set("FLY_VM_MEMORY_MB", facts.memory_mb.to_string());
    if let Some(ip) = facts.public_ip {
        set("FLY_PUBLIC_IP", ip.to_string());
    }
    if let Some(group) = facts.process_group {
        set("FLY_PROCESS_GROUP", group.to_string());
    }
    if let Some(region) = facts.primary_region {
        set("PRIMARY_REGION", region.to_string());
    }
    env
}

/// The guest's /etc/hosts: the image's file with Fly's entry appended. Fly's init appends
/// `\n[# desc\n]<ip>\t<host>\n` per entry, the documented one being `fly-local-6pn` → the
/// machine's 6PN address (reference/fly-runtime.md §1.2; appended without a description
/// here, since the description init writes is not documented).
///
/// The lab's images carry no /etc/hosts of their own, so the "image's file" is a base that
/// names localhost and the machine id (the hostname, §1.2). Whether Fly also lists the
/// hostname is not documented (known unknown); the lab keeps it so the hostname resolves.
pub fn render_hosts(machine_id: &str, private_ip: Ipv6Addr, ipv4: Ipv4Addr) -> String {
    let image = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         {private_ip}\t{machine_id}\n{ipv4}\t{machine_id}\n"
    );
    format!("{image}\n{private_ip}\tfly-local-6pn\n")
}

/// The guest's /etc/resolv.conf: truncated, then one `nameserver\t<ip>` line per server, as
/// Fly's init writes it (reference/fly-runtime.md §1.2); the server is the lab's resolver on
/// `fdaa::3`, like Fly's (§7).
pub fn render_resolv_conf(dns: Ipv6Addr) -> String {
    format!("nameserver\t{dns}\n")
}

/// The PATH of a guest: the image's directories, then `env`'s PATH or [`DEFAULT_PATH`].
pub fn guest_path_var(path_dirs: &[PathBuf], env: &BTreeMap<String, String>) -> String {
    let mut parts: Vec<String> = path_dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    parts.push(
        env.get("PATH")
            .cloned()
            .unwrap_or_else(|| DEFAULT_PATH.to_string()),
    );
    parts.join(":")
}

/// The full environment of a guest process: `env` with PATH from [`guest_path_var`].
pub(crate) fn guest_env(spec: &GuestSpec) -> BTreeMap<String, String> {
    let mut env = spec.env.clone();
    env.insert(
        "PATH".to_string(),
        guest_path_var(&spec.path_dirs, &spec.env),
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RuntimeFacts<'static> {
        RuntimeFacts {
            app: "demo-cp",
            machine_id: "1857156b526dd8",
            region: "sjc",
            private_ip: "fdaa:0:18:a7b:196:e274:9ce1:2".parse().expect("valid"),
            image_ref: "lab/k3s:1",
            machine_version: "01HEPA330HZ37A78TK080NAK1M",
            memory_mb: 2048,
            public_ip: None,
            process_group: None,
            primary_region: Some("sjc"),
        }
    }

    #[test]
    fn runtime_env_has_fly_variables_and_alloc_id_equals_machine_id() {
        let env = fly_runtime_env(&facts());
        assert_eq!(env["FLY_APP_NAME"], "demo-cp");
        assert_eq!(env["FLY_MACHINE_ID"], "1857156b526dd8");
        assert_eq!(env["FLY_ALLOC_ID"], env["FLY_MACHINE_ID"]);
        assert_eq!(env["FLY_REGION"], "sjc");
        assert_eq!(env["FLY_PRIVATE_IP"], "fdaa:0:18:a7b:196:e274:9ce1:2");
        assert_eq!(env["FLY_IMAGE_REF"], "lab/k3s:1");
        assert_eq!(env["FLY_MACHINE_VERSION"], "01HEPA330HZ37A78TK080NAK1M");
        assert_eq!(env["FLY_VM_MEMORY_MB"], "2048");
        assert_eq!(env["PRIMARY_REGION"], "sjc");
        assert!(!env.contains_key("FLY_PUBLIC_IP"));
        assert!(!env.contains_key("FLY_PROCESS_GROUP"));
    }

    #[test]
    fn hosts_names_the_6pn_address_fly_local_6pn_and_machine_id() {
        let ip: Ipv6Addr = "fdaa:0:1::2".parse().expect("valid");
        let hosts = render_hosts("abc123", ip, Ipv4Addr::new(172, 19, 0, 2));
        // Appended last, in init's format: a blank line, then `<ip>\t<host>`.
        assert!(
            hosts.ends_with("\n\nfdaa:0:1::2\tfly-local-6pn\n"),
            "{hosts}"
        );
        assert!(hosts.contains("fdaa:0:1::2\tabc123\n"));
        assert_eq!(
            render_resolv_conf("fdaa::3".parse().expect("valid")),
            "nameserver\tfdaa::3\n"
        );
    }

    #[test]
    fn path_puts_image_dirs_before_the_default_or_given_path() {
        let dirs = vec![PathBuf::from("/opt/img/bin")];
        let mut env = BTreeMap::new();
        assert_eq!(
            guest_path_var(&dirs, &env),
            format!("/opt/img/bin:{DEFAULT_PATH}")
        );
        env.insert("PATH".to_string(), "/x".to_string());
        assert_eq!(guest_path_var(&dirs, &env), "/opt/img/bin:/x");
    }
}
