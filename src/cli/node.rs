//! `fks-bootstrap node init`: the entrypoint of every cluster machine. Owns the flags and the
//! mapping of the outcome to the process exit code; the work is `crate::node`.
//!
//! Once the supervisor runs, `node init` exits with k3s's status, so this command ends the
//! process itself with that code instead of going through the 0/1/2 mapping.

use std::path::PathBuf;

use anyhow::anyhow;

use super::Error;
use crate::node::{self, Options};

const AFTER_HELP: &str = "\
Inputs (set by fks-bootstrap when it creates the machine, and by Fly):
  /etc/fks/cluster/config     the cluster config (a machine file)
  FKS_NODE_NAME               ctrl-N or worker-ng-<group>-<i>
  FKS_BOOTSTRAP_NODE_ID       N of the bootstrap server (default 0)
  FKS_BOOTSTRAP_MACHINE_ID    the machine id a joining server joins
  FKS_ZONE                    the zone of the machine's volume
  FLY_MACHINE_ID FLY_APP_NAME FLY_REGION FLY_PRIVATE_IP   Fly's runtime variables
  /etc/ssh/ssh_host_ed25519_key, /root/.ssh/authorized_keys   the SSH server (on SSH_PORT,
                              default 2222) runs when the key exists

Exit status: k3s's status after a stop signal; 1 when a boot step fails; 2 when the inputs
are wrong.";

/// Commands that run on a cluster machine.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Configure this machine and run k3s (the machine's entrypoint).
    #[command(after_help = AFTER_HELP)]
    Init(InitArgs),
    /// Serve only the node's SSH server (no k3s): for a machine started with this command to
    /// repair it, and for tests of the server.
    Ssh(SshArgs),
    /// This server's embedded etcd: `node etcd members [--json]`, `node etcd remove MEMBER`.
    #[command(subcommand)]
    Etcd(EtcdCommand),
}

/// Questions to this server's embedded etcd.
#[derive(Debug, clap::Subcommand)]
pub enum EtcdCommand {
    /// The members as the local member knows them, each with its health asked of itself
    /// (exit 1 when the list cannot be read; an unhealthy member is in the answer).
    Members(MembersArgs),
    /// Remove one member through etcd's own API, asked of the local member (what
    /// `server replace` runs through exec on a healthy server). MEMBER is a hex member id, a
    /// member name or a k3s node name; this server's own member is refused; a member that is
    /// not there is reported as `removed: null` (exit 0).
    Remove(RemoveArgs),
}

/// Remove one etcd member.
#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The member: hex id (as `node etcd members` prints it), member name or k3s node name.
    pub member: String,
    /// Print the report as JSON (what `server replace` reads).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub local: LocalEtcd,
}

/// List the etcd members with their health.
#[derive(Debug, clap::Args)]
pub struct MembersArgs {
    /// Print the report as JSON (what `fks-bootstrap status` reads).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub local: LocalEtcd,
}

/// Where this server's k3s data and etcd member are (the flags `node etcd` commands share).
#[derive(Debug, clap::Args)]
pub struct LocalEtcd {
    /// Prefix of every system path.
    #[arg(long, env = "FKS_ROOT", value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The k3s data dir [default: ROOT/data/k3s].
    #[arg(long, env = "FKS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The local member's client URL [default: https://127.0.0.1:2379, where k3s's own etcd
    /// client talks].
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
}

impl LocalEtcd {
    /// The k3s data dir and the member's client URL, defaults filled in.
    fn resolve(self) -> (PathBuf, String) {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| node::under(&self.root, crate::render::DATA_DIR));
        let endpoint = self
            .endpoint
            .unwrap_or_else(node::etcd_status::local_endpoint);
        (data_dir, endpoint)
    }
}

/// Serve the node's SSH server in the foreground.
#[derive(Debug, clap::Args)]
pub struct SshArgs {
    /// The TCP port on all addresses (the cluster's SSH_PORT; Fly's SSH holds 22).
    #[arg(long, env = "FKS_SSH_PORT", default_value_t = crate::config::DEFAULT_SSH_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Prefix of the delivered key files and /etc/passwd.
    #[arg(long, env = "FKS_ROOT", value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// Configure this machine and supervise k3s, with the node's SSH server beside it.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Boot even when the running kernel lacks required options (for experiments).
    #[arg(long, env = "FKS_ALLOW_MISSING_KERNEL_OPTIONS", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub allow_missing_kernel_options: bool,
    /// Prefix of every system path (/etc, /proc, /var, /data, /run).
    #[arg(long, env = "FKS_ROOT", value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Directory of the cluster config [default: ROOT/etc/fks/cluster].
    #[arg(long, env = "FKS_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Where config.yaml and the node-password directory live [default: ROOT/data/k3s]
    /// (the rendered config's own data-dir stays /data/k3s).
    #[arg(long, env = "FKS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Configure the machine, then exit instead of starting SSH and k3s.
    #[arg(long)]
    pub no_supervise: bool,
}

pub fn run(args: Args) -> Result<(), Error> {
    match args.command {
        NodeCommand::Init(a) => init(a),
        NodeCommand::Ssh(a) => ssh(a),
        NodeCommand::Etcd(EtcdCommand::Members(a)) => etcd_members(a),
        NodeCommand::Etcd(EtcdCommand::Remove(a)) => etcd_remove(a),
    }
}

fn etcd_remove(a: RemoveArgs) -> Result<(), Error> {
    let (data_dir, endpoint) = a.local.resolve();
    let report = super::runtime()?
        .block_on(node::etcd_remove::remove(&data_dir, &endpoint, &a.member))
        .map_err(|e| Error::Failed(anyhow!("node etcd remove: {}", node::chain(&e))))?;
    if a.json {
        return super::output::stdout(&super::output::json(&report)?);
    }
    let text = match &report.removed {
        Some(m) => format!(
            "removed member {} ({}); {} member(s) left\n",
            m.id,
            if m.name.is_empty() {
                "unnamed"
            } else {
                &m.name
            },
            report.members.len()
        ),
        None => format!(
            "no member {} (removed already?); {} member(s)\n",
            report.target,
            report.members.len()
        ),
    };
    super::output::stdout(&text)
}

fn etcd_members(a: MembersArgs) -> Result<(), Error> {
    let (data_dir, endpoint) = a.local.resolve();
    let report = super::runtime()?
        .block_on(node::etcd_status::members(&data_dir, &endpoint))
        .map_err(|e| Error::Failed(anyhow!("node etcd members: {}", node::chain(&e))))?;
    let text = if a.json {
        super::output::json(&report)?
    } else {
        let rows: Vec<Vec<String>> = report
            .members
            .iter()
            .map(|m| {
                vec![
                    m.id.clone(),
                    if m.name.is_empty() {
                        "-".into()
                    } else {
                        m.name.clone()
                    },
                    m.peer_urls.join(","),
                    if m.healthy { "healthy" } else { "unhealthy" }.to_string(),
                    if m.leader { "yes" } else { "no" }.to_string(),
                    if m.learner { "yes" } else { "no" }.to_string(),
                    m.error.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        super::output::table(
            &[
                "ID",
                "NAME",
                "PEER URLS",
                "HEALTH",
                "LEADER",
                "LEARNER",
                "ERROR",
            ],
            &rows,
        )
    };
    super::output::stdout(&text)
}

fn ssh(a: SshArgs) -> Result<(), Error> {
    let paths = node::ssh::Paths::under(&a.root);
    let server = node::ssh::prepare(&paths, crate::ssh::server::ChildExits::own())
        .map_err(|e| Error::Failed(anyhow!("node ssh: {}", node::chain(&e))))?
        .ok_or_else(|| {
            Error::Usage(anyhow!(
                "node ssh: no host key at {}",
                paths.host_key.display()
            ))
        })?;
    let rt = super::runtime()?;
    let listener = rt
        .block_on(crate::ssh::server::bind(a.port))
        .map_err(|e| Error::Failed(anyhow!("node ssh: {}", node::chain(&e))))?;
    eprintln!("[INFO]  ssh: listening on [::]:{}", a.port);
    let e = rt.block_on(server.serve(listener));
    Err(Error::Failed(anyhow!("node ssh: {}", node::chain(&e))))
}

fn init(a: InitArgs) -> Result<(), Error> {
    let options = Options {
        config_dir: a
            .config_dir
            .unwrap_or_else(|| node::under(&a.root, node::CONFIG_DIR)),
        data_dir: a
            .data_dir
            .unwrap_or_else(|| node::under(&a.root, crate::render::DATA_DIR)),
        root: a.root,
        allow_missing_kernel_options: a.allow_missing_kernel_options,
        no_supervise: a.no_supervise,
    };
    match node::init(&options) {
        Ok(0) => Ok(()),
        Ok(code) => Err(super::Error::Status(code)),
        Err(e) => {
            let err = anyhow!("node init: {}", node::chain(&e));
            if e.is_configuration() {
                Err(Error::Usage(err))
            } else {
                Err(Error::Failed(err))
            }
        }
    }
}
