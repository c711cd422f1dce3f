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
//! - path overrides for tests and experiments: [`Options`]. Whether the machine owns its
//!   kernel (so kernel-wide sysctls are its to set) is detected here, from namespaces
//!   ([`system::owns_kernel`]), never told.
//!
//! Steps, each logged as one `[INFO]`/`[WARN]`/`[ERROR]` line on stderr: kernel check, machine
//! id, addresses (at every boot, never cached), k3s config (atomic write, backup when changed,
//! untouched when not), sysctls/limits/mounts/links, on a server the etcd member's peer URL
//! (`etcd_member`, when the address changed), then iscsid (when installed) and k3s under
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
pub mod etcd_member;
pub mod etcd_remove;
pub mod etcd_status;
pub mod ssh;
pub mod supervise;
pub mod system;
pub mod write;

use crate::config::{self, Config};
use crate::kernel::{self, Requirements};
use crate::render::{self, Bootstrap, Host, Node, NodeName};

pub use env::Inputs;

pub use crate::contract::path::CONFIG_DIR;
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
    /// Options this cluster needs are missing from the kernel (seen in `seen_in`: its config
    /// file, or run-time probes); each names what needs it.
    #[error("the kernel ({seen_in}) lacks {} option(s) this cluster needs: {}; use a kernel with them built in, or change the setting that needs them (--allow-missing-kernel-options boots anyway)", missing.len(), missing.join("; "))]
    KernelMissing {
        seen_in: String,
        missing: Vec<String>,
    },
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
}

impl Options {
    fn sys(&self, absolute: &str) -> PathBuf {
        under(&self.root, absolute)
    }

    /// The k3s config file: `<data-dir>/config.yaml`.
    pub fn k3s_config(&self) -> PathBuf {
        self.data_dir.join("config.yaml")
    }

    /// flannel's net-conf, next to the k3s config (`render::flannel::FLANNEL_CONF`).
    pub fn flannel_conf(&self) -> PathBuf {
        self.data_dir.join(render::flannel::FLANNEL_CONF_NAME)
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
    // A kernel without what this cluster needs fails fast (k3s is never started, the reason is
    // logged), but a supervising node init does not exit over it: under Fly's `restart: always`
    // an exit is a boot loop. It parks instead: SSH stays up for repair, and a stop signal ends
    // it as usual. A one-shot run (--no-supervise) exits 1.
    let parked = match check_kernel(&cluster, options) {
        Ok(()) => None,
        Err(e @ Error::KernelMissing { .. }) if !options.no_supervise => Some(e),
        Err(e) => return Err(e),
    };
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
    // A server's etcd member must have this boot's address as its peer URL before k3s starts
    // (a host migration changes it; see `addresses`).
    if node.role.is_server() && parked.is_none() {
        etcd_member::follow(
            &cluster.cp_app(),
            &options.data_dir,
            node.private_ip,
            node.role == render::Role::BootstrapServer,
        );
    }
    match &parked {
        Some(e) => error!(
            "parked: not starting k3s: {}; SSH stays up; fix the kernel (or the cluster setting named) and update the machine",
            chain(e)
        ),
        None => services.push(supervise::Service {
            name: "k3s".into(),
            argv: vec![
                "k3s".into(),
                role.into(),
                "--config".into(),
                options.k3s_config().display().to_string(),
            ],
            main: true,
        }),
    }
    supervise::run(
        services,
        supervise::Policy::default(),
        supervise::Beside { tasks, exits },
    )
}

/// Step 1: the running kernel against what this cluster needs (`kernel::Usage` of its config:
/// flannel backend, kube-proxy mode, add-ons). A missing required option is an error naming
/// what needs it (the caller parks rather than exits: see `init`); a missing recommended one is
/// a warning. A config that cannot be read is never an error (on Fly, `restart: always` would
/// make a stop a boot loop): the options that can be probed at run time are probed, and what a
/// probe proves absent is logged as an error.
fn check_kernel(cluster: &Config, options: &Options) -> Result<(), Error> {
    let requirements = Requirements::cluster(&kernel::Usage::of(cluster));
    let (kconfig, path) = match kernel::source::read_running(&options.root) {
        Ok(found) => found,
        Err(source) => {
            warn!(
                "kernel: cannot read the running kernel's config ({}); probing the running kernel instead",
                crate::node::chain(&source)
            );
            return probe_kernel(&requirements, options);
        }
    };
    let report = kernel::check(&kconfig, &requirements);
    for e in report
        .entries
        .iter()
        .filter(|e| !e.required && !e.satisfied)
    {
        warn!(
            "kernel: {} lacks recommended {} ({}: {})",
            path.display(),
            e.option,
            e.group,
            e.reason
        );
    }
    let missing: Vec<String> = report
        .failures()
        .map(|e| format!("{} (needed by {})", e.option, e.group))
        .collect();
    if missing.is_empty() {
        info!(
            "kernel: {} has every option this cluster needs (flannel backend {})",
            path.display(),
            cluster.flannel_backend.as_str()
        );
        return Ok(());
    }
    refuse(path.display().to_string(), missing, options)
}

/// Step 1 without a kernel config: probe each option of `requirements` that has a probe.
fn probe_kernel(requirements: &Requirements, options: &Options) -> Result<(), Error> {
    let mut present = 0;
    let mut absent = Vec::new();
    let mut unchecked = Vec::new();
    for req in &requirements.items {
        match kernel::probe::probe(&req.option, &options.root) {
            Some(kernel::probe::Finding::Present(how)) => {
                present += 1;
                debug!(option = %req.option, "kernel probe: present: {how}");
            }
            Some(kernel::probe::Finding::Absent(how)) if req.required => {
                absent.push(format!("{} (needed by {}; {how})", req.option, req.group));
            }
            Some(kernel::probe::Finding::Absent(how)) => {
                warn!("kernel: recommended {} is absent ({how})", req.option);
            }
            Some(kernel::probe::Finding::Unknown(why)) => {
                debug!(option = %req.option, "kernel probe: unknown: {why}");
                if req.required {
                    unchecked.push(req.option.as_str());
                }
            }
            None if req.required => unchecked.push(req.option.as_str()),
            None => {}
        }
    }
    info!("kernel: probes found {present} option(s) this cluster needs present");
    if !unchecked.is_empty() {
        warn!(
            "kernel: {} required option(s) could not be checked without the kernel config: {}",
            unchecked.len(),
            unchecked.join(", ")
        );
    }
    if !absent.is_empty() {
        // Without the kernel config the boot never stops (issue: "a kernel config that cannot
        // be read ... never causes a boot loop"): on Fly `restart: always` would restart a
        // refusing node until the operator's wait times out, while k3s itself names what it
        // lacks when it fails. So a probe that finds a required option absent is an error in
        // the log, not a refusal.
        error!(
            "kernel (run-time probes, no kernel config readable) lacks {} option(s) this cluster needs: {}; starting k3s anyway, expect it to fail on them",
            absent.len(),
            absent.join("; ")
        );
    }
    Ok(())
}

/// Stop the boot over `missing` options, or warn and go on with --allow-missing-kernel-options.
fn refuse(seen_in: String, missing: Vec<String>, options: &Options) -> Result<(), Error> {
    if options.allow_missing_kernel_options {
        warn!(
            "kernel ({seen_in}) lacks {} option(s) this cluster needs: {}; continuing because of --allow-missing-kernel-options",
            missing.len(),
            missing.join("; ")
        );
        return Ok(());
    }
    error!(
        "kernel ({seen_in}) lacks {} option(s) this cluster needs: {}",
        missing.len(),
        missing.join("; ")
    );
    Err(Error::KernelMissing { seen_in, missing })
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
    write_flannel_conf(cluster, options)
}

/// Step 4 (cont.): flannel's net-conf, when the k3s config points `flannel-conf` at it
/// (dual-stack on wireguard-native: both pod families over the 6PN), written the same way.
/// A net-conf left from an earlier cluster config is removed, so no stale file lingers.
fn write_flannel_conf(cluster: &Config, options: &Options) -> Result<(), Error> {
    let path = options.flannel_conf();
    let Some(text) = render::flannel::net_conf(cluster) else {
        match std::fs::remove_file(&path) {
            Ok(()) => info!(
                "flannel net-conf: {} removed (k3s writes its own for this cluster)",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    op: "removing",
                    path,
                    source,
                })
            }
        }
        return Ok(());
    };
    match write::write_if_changed(&path, text.as_bytes(), 0o600, SystemTime::now())? {
        write::Outcome::Created => info!("flannel net-conf: created {}", path.display()),
        write::Outcome::Unchanged => info!("flannel net-conf: {} unchanged", path.display()),
        write::Outcome::Replaced { backup } => info!(
            "flannel net-conf: {} changed; previous one kept as {}",
            path.display(),
            backup.display()
        ),
    }
    Ok(())
}

/// Step 5: sysctls, limits, mounts. Failures are warnings naming the setting.
fn apply_system(options: &Options) {
    let owns_kernel = system::owns_kernel(&options.root);
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

pub use crate::errors::chain;

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
    fn flannel_net_conf_is_written_next_to_the_k3s_config_and_removed_when_not_needed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = Options {
            config_dir: dir.path().join("etc/fks/cluster"),
            data_dir: dir.path().join("data/k3s"),
            root: dir.path().to_path_buf(),
            allow_missing_kernel_options: false,
            no_supervise: true,
        };
        std::fs::create_dir_all(&options.data_dir).expect("data dir");
        let dual = crate::render::tests::lab_config();
        write_flannel_conf(&dual, &options).expect("written");
        let path = options.flannel_conf();
        assert_eq!(path, options.data_dir.join("flannel-net-conf.json"));
        let text = std::fs::read_to_string(&path).expect("net-conf");
        assert_eq!(Some(text), render::flannel::net_conf(&dual));
        // A second boot leaves it alone (no backup appears).
        write_flannel_conf(&dual, &options).expect("unchanged");
        assert_eq!(
            std::fs::read_dir(&options.data_dir).expect("dir").count(),
            1
        );
        // IPv6-only: k3s writes its own; ours goes.
        write_flannel_conf(&crate::render::tests::ipv6_only_config(), &options).expect("removed");
        assert!(!path.exists());
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
