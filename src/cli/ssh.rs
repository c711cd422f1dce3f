//! `fks-bootstrap ssh cp|GROUP CLUSTER_DIR [--node NAME] [-- CMD ...]` (k3s.sh's `-s`): an
//! interactive shell on, or one command run on, a started node of the control plane or of a
//! node group, over SSH as root with the cluster user key.
//!
//! SSH needs the node's 6PN address, which only a WireGuard peer of the organization reaches
//! (reference fly-runtime.md §1.6, §5). When a quick TCP probe finds it reachable (this host
//! is on 6PN, or a kernel tunnel is up) SSH goes there directly. Otherwise it rides the
//! built-in userspace WireGuard tunnel (`crate::tunnel`, unless `FKS_TUNNEL=off`); when that
//! fails too, a command (`-- CMD`) runs through the Machines API's exec instead (reference
//! fly-machines-api.md §3 "Exec"), saying so on stderr; an interactive shell cannot, so it
//! exits 1 naming what went wrong and what to set up.
//!
//! Must not: trust a host key it did not generate (the node's pinned key from
//! `~/.config/fks-bootstrap/clusters/<cluster>` is the only one accepted, and none is ever
//! created here), change anything through the Fly API, or pass the command through a local
//! shell (the argv is quoted word by word by the ssh module for the remote shell).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::list::{self, NodeSet, Row};
use super::tunnel::NoRoute;
use crate::config::Config;
use crate::fly::Client;
use crate::ssh::{self, ClusterKeys, Exit};
use crate::tunnel::Route;

/// The user the node's SSH server lets in (keys only; `ssh::server::USER`).
const USER: &str = "root";
/// The `timeout` (seconds) of a command run through exec. Fly documents no maximum (unknown);
/// exec is for short commands, and its output arrives when the command ends.
const EXEC_TIMEOUT_SECS: u64 = 60;

/// Examples shown by `ssh --help`.
pub const AFTER_HELP: &str = "\
Examples:
  fks-bootstrap ssh cp clusters/lab                      (shell on the first control-plane node)
  fks-bootstrap -s cp clusters/lab                       (the same, k3s.sh's short form)
  fks-bootstrap ssh cp clusters/lab --node ctrl-1        (shell on ctrl-1)
  fks-bootstrap ssh web clusters/lab -- uptime           (one command on group web's first node)
  fks-bootstrap -s cp clusters/lab -- k3s kubectl get nodes

The command after `--` runs with each argument passed as one word (no local shell); the exit
code is the remote command's (128+N when it was killed by signal N). Stdin is not forwarded to
a command; without one, the shell gets a pty when stdin is a terminal.";

/// Open a shell on, or run one command on, a node.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `cp` for the control plane, or a node group's name.
    #[arg(value_name = "cp|GROUP", value_parser = list::parse_node_set)]
    pub nodes: NodeSet,
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// The node to connect to (its `fks_node` name, as `list` shows); default: the first
    /// started node by name.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// A command to run instead of an interactive shell (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Why `ssh` could not reach a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The app has no started machine.
    #[error("app {app} has no started node to connect to (see fks-bootstrap list)")]
    NoStartedNode {
        /// The app.
        app: String,
    },
    /// `--node` names no started machine of the app.
    #[error("app {app} has no started node named {node}; started nodes: {started}")]
    UnknownNode {
        /// The app.
        app: String,
        /// The name given.
        node: String,
        /// The started nodes' names, comma separated (or "none").
        started: String,
    },
    /// The node's 6PN address is missing or not an IP address.
    #[error("node {node} (machine {machine_id}) has no usable 6PN address: {address:?}")]
    BadAddress {
        /// Node name.
        node: String,
        /// Machine id.
        machine_id: String,
        /// What the API reported.
        address: String,
    },
    /// No pinned host key for the node on this machine.
    #[error(
        "the host key of node {node} is unknown to this machine (no {path}): fks-bootstrap only \
         connects to nodes whose keys it generated, and keys live in {dir}; copy that directory \
         from the machine that created the cluster"
    )]
    UnknownHostKey {
        /// Node name.
        node: String,
        /// The key file looked for.
        path: PathBuf,
        /// The cluster's key directory.
        dir: PathBuf,
    },
    /// An interactive shell was asked for, but the node's 6PN address is not reachable.
    #[error(
        "node {node}: its 6PN address {addr} is not reachable from this machine, and an \
         interactive shell needs it. Set up WireGuard to the organization's private network: \
         `fly wireguard create <org> <region> <peer-name> fks.conf`, then `sudo wg-quick up \
         ./fks.conf`; wg-quick also sets the config's DNS server (<org prefix>::3, the \
         tunnel's counterpart of fdaa::3) so .internal names resolve. Without a tunnel, one \
         command still runs through the Machines API: fks-bootstrap -s {target} -- CMD{why}"
    )]
    NoTunnel {
        /// Why the built-in tunnel did not help (empty when it is off).
        why: String,
        /// Node name.
        node: String,
        /// `[6pn]:port`.
        addr: SocketAddr,
        /// `cp` or the group and the cluster directory, as given.
        target: String,
    },
    /// Running the command through the Machines API exec failed.
    #[error("node {node}: running the command through the Machines API exec")]
    Exec {
        /// Node name.
        node: String,
        /// The API's error.
        #[source]
        source: Box<crate::fly::Error>,
    },
    /// Opening the key store or the connection failed.
    #[error(transparent)]
    Ssh(#[from] Box<ssh::Error>),
    /// Finding the app's nodes failed.
    #[error(transparent)]
    List(#[from] Box<list::Error>),
}

impl From<ssh::Error> for Error {
    fn from(e: ssh::Error) -> Self {
        Error::Ssh(Box::new(e))
    }
}

impl From<list::Error> for Error {
    fn from(e: list::Error) -> Self {
        Error::List(Box::new(e))
    }
}

/// Runs `ssh` / `-s`. A remote exit code other than 0 becomes this process's exit code.
pub fn run(args: Args) -> Result<(), super::Error> {
    let config = super::load_config(&args.cluster_dir)?;
    let client = super::fly_client()?;
    let base = ssh::config_dir().map_err(|e| super::Error::Usage(e.into()))?;
    let exit = super::runtime()?
        .block_on(session(&client, &config, &args, &base))
        .map_err(|e| super::Error::Failed(e.into()))?;
    // The remote command's exit code is the result, not an error of this program.
    match exit.local_code() {
        0 => Ok(()),
        code => Err(super::Error::Status(u8::try_from(code).unwrap_or(255))),
    }
}

/// Find the node, connect with its pinned key, run the command or the shell.
async fn session(
    client: &Client,
    config: &Config,
    args: &Args,
    base: &Path,
) -> Result<Exit, Error> {
    let rows = list::rows(client, config, &args.nodes, &args.cluster_dir).await?;
    let app = args.nodes.app(config);
    let row = pick(&app, &rows, args.node.as_deref())?;
    let addr = address(row, config.ssh_port)?;
    let mut stream = None;
    let mut why = String::new();
    let direct = match super::tunnel::route(config, &[addr]).await {
        Ok(Route::Direct) => true,
        Ok(Route::Tunnel(t)) => {
            match t.connect(&addr.ip().to_string(), addr.port()).await {
                Ok(s) => {
                    tracing::info!(node = %row.name, peer = %t.peer().name, "6PN not reachable directly: through the built-in WireGuard tunnel");
                    stream = Some(s);
                }
                Err(e) => why = format!(" (the built-in WireGuard tunnel: {e})"),
            }
            false
        }
        Err(NoRoute::Off) => false,
        Err(NoRoute::Tunnel(e)) => {
            why = format!(" (the built-in WireGuard tunnel: {e})");
            false
        }
    };
    if stream.is_none() && !direct {
        if args.command.is_empty() {
            return Err(Error::NoTunnel {
                why,
                node: row.name.clone(),
                addr,
                target: format!(
                    "{} {}",
                    match &args.nodes {
                        NodeSet::ControlPlane => "cp",
                        NodeSet::Group(g) => g.as_str(),
                    },
                    args.cluster_dir.display()
                ),
            });
        }
        eprintln!(
            "[INFO] node {}: 6PN address {addr} not reachable from here (no WireGuard tunnel?{why}); \
             running the command through the Machines API exec instead (no stdin; output \
             arrives when it ends; at most {EXEC_TIMEOUT_SECS}s)",
            row.name
        );
        return exec(client, row, &args.command).await;
    }
    let conn = connect_via(base, config, row, stream).await?;
    let exit = if args.command.is_empty() {
        conn.shell().await?
    } else {
        let argv: Vec<&str> = args.command.iter().map(String::as_str).collect();
        conn.exec_streaming(
            &argv,
            None,
            &mut tokio::io::stdout(),
            &mut tokio::io::stderr(),
        )
        .await?
    };
    // The session's result is known; a failing close changes nothing for the user.
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %e, "closing the ssh connection");
    }
    Ok(exit)
}

/// Runs `argv` on `row`'s machine through the Machines API exec and prints its output: the
/// way in without 6PN. A command killed by signal N gives 128+N, as over SSH.
async fn exec(client: &Client, row: &Row, argv: &[String]) -> Result<Exit, Error> {
    use std::io::Write;
    let req = crate::fly::types::ExecRequest {
        command: argv.to_vec(),
        timeout: Some(EXEC_TIMEOUT_SECS),
        ..Default::default()
    };
    let out = client
        .exec(&row.app, &row.machine_id, &req)
        .await
        .map_err(|e| Error::Exec {
            node: row.name.clone(),
            source: Box::new(e),
        })?;
    // Output that cannot be written (a closed pipe) changes nothing about the result.
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    let code = match out.exit_signal.filter(|s| *s > 0) {
        Some(signal) => 128 + signal,
        None => out.exit_code,
    };
    Ok(Exit::Code(u32::try_from(code).unwrap_or(255)))
}

/// Connects as root to `row`'s node on its 6PN address and the cluster's `SSH_PORT` (port 22
/// there is Fly's own SSH, reference/fly-runtime.md §1.6), accepting only the host key
/// pinned for it under `base` (the way in shared by `ssh` and `kubeconfig`).
/// Over `stream` (a connection through the built-in tunnel) when given.
pub(crate) async fn connect_via(
    base: &Path,
    config: &Config,
    row: &Row,
    stream: Option<tokio::io::DuplexStream>,
) -> Result<ssh::Client, Error> {
    let addr = address(row, config.ssh_port)?;
    let keys = keys_for(base, &config.cluster_name, &row.name)?;
    let host = keys.host_key(&row.name)?;
    Ok(ssh::Client::connect_over(
        &row.name,
        addr,
        stream,
        USER,
        keys.user_key(),
        host.public_key(),
    )
    .await?)
}

/// The started node to connect to: the one named `node`, else the first by name.
fn pick<'a>(app: &str, rows: &'a [Row], node: Option<&str>) -> Result<&'a Row, Error> {
    let started: Vec<&Row> = rows.iter().filter(|r| r.state == "started").collect();
    match node {
        None => started
            .first()
            .copied()
            .ok_or_else(|| Error::NoStartedNode {
                app: app.to_owned(),
            }),
        Some(name) => started
            .iter()
            .find(|r| r.name == name)
            .copied()
            .ok_or_else(|| Error::UnknownNode {
                app: app.to_owned(),
                node: name.to_owned(),
                started: if started.is_empty() {
                    "none".to_owned()
                } else {
                    started
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            }),
    }
}

/// `[private_ip]:port`.
fn address(row: &Row, port: u16) -> Result<SocketAddr, Error> {
    row.private_ip
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, port))
        .map_err(|_| Error::BadAddress {
            node: row.name.clone(),
            machine_id: row.machine_id.clone(),
            address: row.private_ip.clone(),
        })
}

/// The cluster's key store, only when `node`'s host key is already on disk: opening the store
/// would otherwise create a user key and `host_key` a host key no node has. The paths are
/// the layout documented in `ssh::keys`.
fn keys_for(base: &Path, cluster: &str, node: &str) -> Result<ClusterKeys, Error> {
    let paths = ClusterKeys::existing_paths(base, cluster, node)?;
    if !paths.host_key.is_file() || !paths.user_key.is_file() {
        return Err(Error::UnknownHostKey {
            node: node.to_owned(),
            path: paths.host_key,
            dir: paths.dir,
        });
    }
    Ok(ClusterKeys::open(base, cluster)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, state: &str, ip: &str) -> Row {
        Row::for_test(name, state, "server", ip, false)
    }

    #[test]
    fn pick_takes_the_first_started_node_or_the_named_one() {
        let rows = [
            row("ctrl-0", "stopped", "fdaa::1"),
            row("ctrl-1", "started", "fdaa::2"),
            row("ctrl-2", "started", "fdaa::3"),
        ];
        assert_eq!(pick("lab-cp", &rows, None).expect("first").name, "ctrl-1");
        assert_eq!(
            pick("lab-cp", &rows, Some("ctrl-2")).expect("named").name,
            "ctrl-2"
        );
        let e = pick("lab-cp", &rows, Some("ctrl-0")).expect_err("stopped");
        assert_eq!(
            e.to_string(),
            "app lab-cp has no started node named ctrl-0; started nodes: ctrl-1, ctrl-2"
        );
        assert!(matches!(
            pick("lab-cp", &rows[..1], None),
            Err(Error::NoStartedNode { .. })
        ));
    }

    #[test]
    fn address_is_the_6pn_address_and_the_configured_port() {
        let a = address(&row("ctrl-0", "started", "fdaa:0:1::2"), 2222).expect("addr");
        assert_eq!(a.to_string(), "[fdaa:0:1::2]:2222");
        assert!(address(&row("ctrl-0", "started", ""), 2222).is_err());
    }

    #[test]
    fn the_no_tunnel_error_says_what_to_set_up() {
        let e = Error::NoTunnel {
            node: "ctrl-0".into(),
            addr: "[fdaa:0:1::2]:22".parse().expect("addr"),
            target: "cp clusters/lab".into(),
            why: " (the built-in WireGuard tunnel: the WireGuard tunnel stopped)".into(),
        };
        let text = e.to_string();
        for want in [
            "fly wireguard create",
            "wg-quick up",
            "fdaa::3",
            "[fdaa:0:1::2]:22",
            "fks-bootstrap -s cp clusters/lab -- CMD (the built-in WireGuard tunnel",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }

    #[test]
    fn missing_host_key_names_the_node_and_the_key_dir_and_creates_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let e = keys_for(tmp.path(), "lab", "ctrl-0").expect_err("no key");
        let text = e.to_string();
        assert!(
            text.contains("host key of node ctrl-0 is unknown to this machine"),
            "{text}"
        );
        assert!(
            text.contains(&tmp.path().join("clusters/lab").display().to_string()),
            "{text}"
        );
        assert!(!tmp.path().join("clusters").exists(), "created key files");
        let keys = ClusterKeys::open(tmp.path(), "lab").expect("open");
        keys.host_key("ctrl-0").expect("create");
        assert!(keys_for(tmp.path(), "lab", "ctrl-0").is_ok());
    }
}
