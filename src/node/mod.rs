//! `fks-bootstrap node init`: the entrypoint of every machine of a cluster (ARCHITECTURE.md
//! step 5), replacing the image's run.sh (reference/k3s-sh-behaviour.md "Node side").
//!
//! Inputs (no secrets among them; the join token is the file `render::TOKEN_FILE`):
//! - the cluster config, delivered as the machine file `/etc/fks/cluster/config` (or
//!   `cluster.toml` beside it), read with `config::load`;
//! - env `FKS_NODE_NAME` (`ctrl-0`, `worker-ng-0-2`): the role and app follow from it;
//!   `FKS_BOOTSTRAP_NODE_ID` (default 0): which `ctrl-N` bootstraps the cluster;
//!   `FKS_BOOTSTRAP_MACHINE_ID`: the machine a joining server joins; `FKS_ZONE`: the volume's
//!   zone, for the zone label;
//! - Fly's runtime env: `FLY_MACHINE_ID`, `FLY_APP_NAME`, `FLY_REGION`, `FLY_PRIVATE_IP`;
//! - the machine files `/etc/ssh/ssh_host_ed25519_key` and `/root/.ssh/authorized_keys`
//!   (the SSH server runs only when the host key exists);
//! - path overrides for tests and experiments: [`Options`]; `FKS_LAB=1` when the machine is a
//!   guest of fks-lab (its kernel is the host's: kernel-wide sysctls are skipped).
//!
//! Steps, each logged as one `[INFO]`/`[WARN]`/`[ERROR]` line on stderr: kernel check, machine
//! id, addresses (at every boot, never cached), k3s config (atomic write, backup when changed,
//! untouched when not), sysctls/limits/mounts/links, then iscsid (when installed) and k3s under
//! the supervisor, with the node's SSH server (`ssh`, on the cluster's `SSH_PORT`) as a task
//! beside it.
//!
//! This module owns the machine side only: it never talks to the Fly API.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// `[INFO]  message` on stderr: the node's log lines, as the k3s install script prints them.
macro_rules! info {
    ($($t:tt)*) => { eprintln!("[INFO]  {}", format_args!($($t)*)) };
}
/// `[WARN]  message` on stderr.
macro_rules! warn {
    ($($t:tt)*) => { eprintln!("[WARN]  {}", format_args!($($t)*)) };
}
/// `[ERROR] message` on stderr.
macro_rules! error {
    ($($t:tt)*) => { eprintln!("[ERROR] {}", format_args!($($t)*)) };
}
/// Debug lines go through `tracing` (`-v` / RUST_LOG), not to the boot log.
macro_rules! debug {
    ($($t:tt)*) => { tracing::debug!($($t)*) };
}

pub mod addresses;
pub mod env;
pub mod ssh;
pub mod supervise;
pub mod system;
pub mod write;

use crate::config::{self, Config};
use crate::kernel::{self, Requirements};
use crate::render::{self, Bootstrap, Host, Node, NodeName};

pub use env::Inputs;

/// Where the platform delivers the cluster config (a machine file).
pub const CONFIG_DIR: &str = "/etc/fks/cluster";
/// The k3s config symlink k3s and operators look at.
pub const RANCHER_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
/// The k3s node-password directory, kept on the volume through a symlink.
pub const RANCHER_NODE: &str = "/etc/rancher/node";

/// open-iscsi's daemon, run in the foreground (`-f`) when the image has it.
pub const ISCSID: &str = "/usr/sbin/iscsid";

/// What `node init` can fail with before the supervisor takes over.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The environment lacks or garbles an input.
    #[error("node environment: {problems}")]
    Env { problems: String },
    /// The cluster config could not be loaded.
    #[error("loading the cluster config from {}", dir.display())]
    Config {
        dir: PathBuf,
        #[source]
        source: config::Error,
    },
    /// `FLY_APP_NAME` does not match the app the node name implies.
    #[error("node {node} belongs to app {expected} but FLY_APP_NAME is {actual}")]
    WrongApp {
        node: String,
        expected: String,
        actual: String,
    },
    /// The running kernel's config could not be read.
    #[error("reading the running kernel's config")]
    KernelRead {
        #[source]
        source: kernel::Error,
    },
    /// Required kernel options are missing.
    #[error("the kernel ({}) lacks {} required option(s): {}; pass --allow-missing-kernel-options to boot anyway", path.display(), missing.len(), missing.join(", "))]
    KernelMissing { path: PathBuf, missing: Vec<String> },
    /// A `fly-local-6pn` hosts line with an address that is not IPv6.
    #[error("/etc/hosts line {line}: fly-local-6pn is `{value}`, not an IPv6 address")]
    Hosts6pn { line: usize, value: String },
    /// The two sources of the 6PN address disagree.
    #[error("FLY_PRIVATE_IP is {env} but /etc/hosts says fly-local-6pn is {hosts}")]
    PrivateIpMismatch {
        env: std::net::Ipv6Addr,
        hosts: std::net::Ipv6Addr,
    },
    /// Neither source of the 6PN address is there.
    #[error("no 6PN address: FLY_PRIVATE_IP is unset and /etc/hosts has no fly-local-6pn entry")]
    NoPrivateIp,
    /// Listing the interfaces failed.
    #[error("listing network interfaces")]
    Ifaddrs {
        #[source]
        source: std::io::Error,
    },
    /// Rendering the k3s config failed.
    #[error("rendering the k3s config")]
    Render(#[source] render::Error),
    /// A file operation failed.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something other than a symlink (or an empty directory) is where a symlink goes.
    #[error("{} is in the way of a symlink", path.display())]
    InTheWay {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The supervisor could not be set up.
    #[error("supervisor: {op}")]
    Supervise {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the error is the machine's configuration (exit 2) rather than a failed step.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Error::Env { .. }
                | Error::Config { .. }
                | Error::WrongApp { .. }
                | Error::Render(render::Error::NodeName { .. })
                | Error::Render(render::Error::MissingBootstrapMachineId { .. })
        )
    }
}

/// Paths and switches of `node init`; the defaults are a Fly machine's.
#[derive(Debug, Clone)]
pub struct Options {
    /// The directory holding the cluster config (default [`CONFIG_DIR`], under `root`).
    pub config_dir: PathBuf,
    /// Where `config.yaml` and the node-password directory live (default
    /// [`render::DATA_DIR`], on the volume).
    pub data_dir: PathBuf,
    /// Prefix of every system path (`/etc`, `/proc`, `/var`, `/data`, `/run`); `/` on a machine.
    pub root: PathBuf,
    /// Boot on a kernel that lacks required options (a warning instead of a stop).
    pub allow_missing_kernel_options: bool,
    /// Stop after writing files and applying settings: do not start SSH or k3s.
    pub no_supervise: bool,
    /// Running as a guest of fks-lab (`FKS_LAB=1`): the kernel belongs to the host.
    pub lab: bool,
}

impl Options {
    fn sys(&self, absolute: &str) -> PathBuf {
        under(&self.root, absolute)
    }

    /// The k3s config file: `<data-dir>/config.yaml`.
    pub fn k3s_config(&self) -> PathBuf {
        self.data_dir.join("config.yaml")
    }
}

/// Run `node init` with the process environment. Returns the exit code (k3s's status after a
/// stop, or 0 with `no_supervise`).
pub fn init(options: &Options) -> Result<u8, Error> {
    let inputs = Inputs::from_lookup(|k| std::env::var(k).ok())?;
    let cluster = config::load(&options.config_dir).map_err(|source| Error::Config {
        dir: options.config_dir.clone(),
        source,
    })?;
    info!(
        "node {} of cluster {} (machine {}, region {}), config from {}",
        inputs.node_name,
        cluster.cluster_name,
        inputs.machine_id,
        inputs.region,
        cluster.source.display()
    );
    check_kernel(&cluster, options)?;
    write_machine_id(&inputs, options)?;
    let node = describe_node(&cluster, &inputs, options)?;
    write_k3s_config(&cluster, &node, options)?;
    apply_system(options);
    link_node_dir(options);
    if options.no_supervise {
        info!("--no-supervise: not starting SSH or k3s");
        return Ok(0);
    }
    let mut services = Vec::new();
    // The supervisor reaps every child, so SSH sessions get their exit statuses from it.
    let exits = crate::ssh::server::ChildExits::reaped_elsewhere();
    let mut tasks: Vec<supervise::Task> = Vec::new();
    let ssh_paths = ssh::Paths::under(&options.root);
    match ssh::prepare(&ssh_paths, exits.clone()) {
        Ok(Some(server)) => {
            info!(
                "ssh: host key {} delivered; serving on port {} (Fly's own SSH holds port 22)",
                ssh_paths.host_key.display(),
                cluster.ssh_port
            );
            tasks.push(Box::pin(ssh::serve_forever(server, cluster.ssh_port)));
        }
        Ok(None) => warn!(
            "ssh: no host key at {}; not serving SSH",
            ssh_paths.host_key.display()
        ),
        Err(e) => error!("ssh: {}; not serving SSH", chain(&e)),
    }
    // Longhorn needs iscsid (reference/k3s-sh-behaviour.md "Node side"); images without
    // open-iscsi simply do not offer it.
    let iscsid = options.sys(ISCSID);
    if iscsid.is_file() {
        services.push(supervise::Service {
            name: "iscsid".into(),
            argv: vec![iscsid.display().to_string(), "-f".into()],
            main: false,
        });
    } else {
        info!(
            "iscsid: {} not installed; not starting it (Longhorn volumes need it)",
            iscsid.display()
        );
    }
    // Joining servers and agents read the join token from this file, which the platform writes
    // from the cluster's app secret; only its presence is checked, never its content.
    let token = options.sys(render::TOKEN_FILE);
    if node.role != render::Role::BootstrapServer && !token.is_file() {
        warn!(
            "join token: {} is missing; k3s cannot join the cluster until it is delivered",
            token.display()
        );
    }
    let role = if node.role.is_server() {
        "server"
    } else {
        "agent"
    };
    services.push(supervise::Service {
        name: "k3s".into(),
        argv: vec![
            "k3s".into(),
            role.into(),
            "--config".into(),
            options.k3s_config().display().to_string(),
        ],
        main: true,
    });
    supervise::run(
        services,
        supervise::Policy::default(),
        supervise::Beside { tasks, exits },
    )
}

/// Step 1: the running kernel against the requirement sets of the cluster's flannel backend.
fn check_kernel(cluster: &Config, options: &Options) -> Result<(), Error> {
    let read = kernel::source::read_running(&options.root);
    let (kconfig, path) = match read {
        Ok(found) => found,
        Err(source) if options.allow_missing_kernel_options => {
            warn!(
                "kernel: cannot read the running kernel's config ({}); continuing because of --allow-missing-kernel-options",
                crate::node::chain(&source)
            );
            return Ok(());
        }
        Err(source) => return Err(Error::KernelRead { source }),
    };
    let report = kernel::check(
        &kconfig,
        &Requirements::builtin(Some(cluster.flannel_backend)),
    );
    let mut missing: Vec<String> = report.failures().map(|e| e.option.clone()).collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        info!(
            "kernel: {} has every required option for flannel backend {}",
            path.display(),
            cluster.flannel_backend.as_str()
        );
        return Ok(());
    }
    if options.allow_missing_kernel_options {
        warn!(
            "kernel: {} lacks {} required option(s): {}; continuing because of --allow-missing-kernel-options",
            path.display(),
            missing.len(),
            missing.join(", ")
        );
        return Ok(());
    }
    error!(
        "kernel: {} lacks {} required option(s): {}",
        path.display(),
        missing.len(),
        missing.join(", ")
    );
    Err(Error::KernelMissing { path, missing })
}

/// Step 2: /etc/machine-id from FLY_MACHINE_ID.
fn write_machine_id(inputs: &Inputs, options: &Options) -> Result<(), Error> {
    let path = options.sys("/etc/machine-id");
    let wrote = write::replace(&path, format!("{}\n", inputs.machine_id).as_bytes(), 0o444)?;
    info!(
        "machine id: {} {} {}",
        inputs.machine_id,
        if wrote { "written to" } else { "already in" },
        path.display()
    );
    Ok(())
}

/// Step 3: the addresses, read now, and the node description the renderer needs.
fn describe_node(cluster: &Config, inputs: &Inputs, options: &Options) -> Result<Node, Error> {
    let hosts_path = options.sys("/etc/hosts");
    let hosts = match std::fs::read_to_string(&hosts_path) {
        Ok(text) => addresses::parse_hosts_6pn(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(Error::Io {
                op: "reading",
                path: hosts_path,
                source,
            })
        }
    };
    let (private_ip, source) = addresses::choose_private_ip(inputs.private_ip, hosts)?;
    info!("6PN address: {private_ip} from {}", source.describe());
    let ipv4 = addresses::eth0_ipv4()?;
    match ipv4 {
        Some(v4) => info!("IPv4 address: {v4} from {}", addresses::IPV4_INTERFACE),
        None => warn!(
            "IPv4 address: {} has none; the node gets its 6PN address only",
            addresses::IPV4_INTERFACE
        ),
    }
    let name = NodeName::parse(&inputs.node_name).map_err(Error::Render)?;
    let expected_app = name.app(cluster);
    if let Some(actual) = &inputs.app_name {
        if *actual != expected_app {
            return Err(Error::WrongApp {
                node: inputs.node_name.clone(),
                expected: expected_app,
                actual: actual.clone(),
            });
        }
    }
    let bootstrap = Bootstrap {
        index: inputs.bootstrap_index,
        machine_id: inputs.bootstrap_machine_id.clone(),
    };
    let host = Host {
        machine_id: inputs.machine_id.clone(),
        private_ip,
        ipv4,
        region: inputs.region.clone(),
        zone: inputs.zone.clone(),
    };
    Node::from_name(cluster, &inputs.node_name, &bootstrap, host).map_err(Error::Render)
}

/// Step 4: render, write atomically (backup when changed), link from /etc/rancher/k3s.
fn write_k3s_config(cluster: &Config, node: &Node, options: &Options) -> Result<(), Error> {
    let text = render::render(cluster, node).map_err(Error::Render)?;
    let path = options.k3s_config();
    match write::write_if_changed(&path, text.as_bytes(), 0o600, SystemTime::now())? {
        write::Outcome::Created => info!("k3s config: created {}", path.display()),
        write::Outcome::Unchanged => info!("k3s config: {} unchanged", path.display()),
        write::Outcome::Replaced { backup } => info!(
            "k3s config: {} changed; previous one kept as {}",
            path.display(),
            backup.display()
        ),
    }
    let link = options.sys(RANCHER_CONFIG);
    write::ensure_symlink(&path, &link)?;
    info!("k3s config: {} -> {}", link.display(), path.display());
    Ok(())
}

/// Step 5: sysctls, limits, mounts. Failures are warnings naming the setting.
fn apply_system(options: &Options) {
    let owns_kernel = system::owns_kernel(&options.root, options.lab);
    if !owns_kernel {
        info!("sysctls: this machine shares its kernel with a host (own network namespace only); kernel-wide sysctls are left to the host");
    }
    for (s, outcome) in system::apply_sysctls(&options.root, system::SYSCTLS, owns_kernel) {
        match outcome {
            system::SysctlOutcome::Set => info!("sysctl {}={}", s.name, s.value),
            system::SysctlOutcome::Skipped => {
                info!(
                    "sysctl {}: skipped (kernel-wide, owned by the host)",
                    s.name
                )
            }
            system::SysctlOutcome::Failed(e) => {
                warn!("sysctl {}={} failed: {e}", s.name, s.value)
            }
        }
    }
    for (name, outcome) in system::apply_limits() {
        match outcome {
            system::LimitOutcome::Set => info!("limit {name}: raised"),
            system::LimitOutcome::Capped { soft, wanted } => warn!(
                "limit {name}: hard limit cannot be raised to {wanted}; soft limit set to the hard limit {soft}"
            ),
            system::LimitOutcome::Failed(e) => warn!("limit {name} failed: {e}"),
        }
    }
    if options.root != Path::new("/") {
        info!(
            "mounts: skipped (root is {}, not /: mounts would land on the host)",
            options.root.display()
        );
        return;
    }
    let mountinfo_path = options.sys("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(&mountinfo_path).unwrap_or_default();
    for step in system::mount_steps(&options.root) {
        match system::apply_mount(&options.root, &step, &mountinfo) {
            system::MountOutcome::Done => info!("mount: {step}"),
            system::MountOutcome::AlreadyMounted => info!("mount: {step}: already mounted"),
            system::MountOutcome::Failed(e) => warn!("mount: {step} failed: {e}"),
        }
    }
}

/// Step 5 (cont.): /etc/rancher/node -> <data-dir>/node, so the node password survives.
fn link_node_dir(options: &Options) {
    let target = options.data_dir.join("node");
    let link = options.sys(RANCHER_NODE);
    let result = std::fs::create_dir_all(&target)
        .map_err(|source| Error::Io {
            op: "creating",
            path: target.clone(),
            source,
        })
        .and_then(|()| write::ensure_symlink(&target, &link));
    match result {
        Ok(_) => info!("link: {} -> {}", link.display(), target.display()),
        Err(e) => warn!(
            "link: {} -> {} failed: {}",
            link.display(),
            target.display(),
            chain(&e)
        ),
    }
}

/// An error and its causes on one line: `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// `1.5s`, `2m`, `90ms`: a duration for log lines.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) && ms < 120_000 {
        format!("{}s", ms / 1000)
    } else if ms < 120_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000)
    }
}

/// `Path` joined below a root, for callers that build their own system paths.
pub fn under(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_secs(4)), "4s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_secs(150)), "2m30s");
    }

    #[test]
    fn system_paths_are_joined_below_the_root() {
        assert_eq!(
            under(Path::new("/tmp/r"), "/etc/machine-id"),
            Path::new("/tmp/r/etc/machine-id")
        );
        assert_eq!(
            under(Path::new("/"), RANCHER_CONFIG),
            Path::new(RANCHER_CONFIG)
        );
    }

    #[test]
    fn configuration_errors_are_told_apart_from_failed_steps() {
        assert!(Error::Env {
            problems: "x".into()
        }
        .is_configuration());
        assert!(!Error::NoPrivateIp.is_configuration());
    }
}
