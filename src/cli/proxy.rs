//! `fks-bootstrap proxy CLUSTER_DIR [--port P]`: the cluster's Kubernetes API on
//! `127.0.0.1:P` of this machine, forwarded to port 6443 of a started server of `<cluster>-cp`
//! (failing over to another when it stops answering), directly when this host reaches 6PN and
//! through the built-in WireGuard tunnel otherwise: the same decision `ssh` makes
//! (`tunnel::route`). Also the in-process proxy of `kubectl`.
//!
//! The servers are the app's started machines with `fks_cluster=<cluster>` metadata, from the
//! Machines API (their 6PN addresses, as `list` shows them), looked up again every
//! [`REFRESH`] and whenever no known server answers.
//! stdout: the address listened on, one line; logs (which server is used) on stderr.
//! Must not: listen on anything but the loopback address, or decrypt the traffic.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::list::{self, NodeSet, Row};
use super::tunnel::NoRoute;
use crate::config::Config;
use crate::fly::Client;
use crate::proxy::{Proxy, Server, API_PORT, DEFAULT_PORT};

/// How often the servers are looked up again while the proxy runs.
pub const REFRESH: Duration = Duration::from_secs(15);
/// The least time between two lookups asked for by failures (Fly's rate limits, reference
/// fly-machines-api.md §1).
const REFRESH_MIN_GAP: Duration = Duration::from_secs(2);

/// Examples shown by `proxy --help`.
pub const AFTER_HELP: &str = "\
Examples:
  fks-bootstrap proxy clusters/lab                 (https://127.0.0.1:16443 is the cluster's API)
  fks-bootstrap proxy clusters/lab --port 0        (any free port; the address is printed)
  fks-bootstrap -k clusters/lab --tunnel           (a kubeconfig for https://127.0.0.1:16443)

Each connection goes to port 6443 of a started server of <cluster>-cp; when that server stops
answering, new connections go to another one. This host reaches the servers directly when it is
on 6PN (or a kernel WireGuard tunnel is up), else through the built-in userspace WireGuard
tunnel (FKS_TUNNEL=off turns it off). Runs until Ctrl-C or SIGTERM.";

/// Forward a local port to the cluster's Kubernetes API.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// The local port on 127.0.0.1 (0: any free port, printed on stdout).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control-plane app holds no started server of this cluster.
    #[error("app {app} has no started server of cluster {cluster} to forward to (see fks-bootstrap -l cp {dir})")]
    NoStartedServer {
        /// The control-plane app.
        app: String,
        /// Cluster name.
        cluster: String,
        /// The cluster directory as the user gave it.
        dir: String,
    },
    /// Neither 6PN nor the built-in tunnel reaches the servers.
    #[error("reaching the Kubernetes API of cluster {cluster} ({servers})")]
    Route {
        /// Cluster name.
        cluster: String,
        /// The servers probed, `name [addr]:6443`, comma separated.
        servers: String,
        /// Why.
        #[source]
        source: NoRoute,
    },
    /// The local port could not be bound.
    #[error("listening on {addr} (pass another --port, or --port 0 for any free one)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS's error.
        #[source]
        source: std::io::Error,
    },
    /// Finding the servers failed.
    #[error(transparent)]
    List(#[from] Box<list::Error>),
}

/// Runs `proxy`: until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> Result<(), super::Error> {
    let config = super::load_config(&args.cluster_dir)?;
    let client = super::fly_client()?;
    super::runtime()?
        .block_on(async {
            let proxy = start(&client, &config, &args.cluster_dir).await?;
            let listener = listen(args.port).await?;
            let addr = listener.local_addr().map_err(|source| Error::Listen {
                addr: local(args.port),
                source,
            })?;
            // The address is the result: a script reads it (with --port 0 it is not known
            // before).
            let _ = super::output::stdout(&format!("{addr}\n"));
            tracing::info!(
                "the Kubernetes API of cluster {} is on https://{addr} (Ctrl-C stops)",
                config.cluster_name
            );
            proxy.serve(listener, shutdown_signal()).await;
            tracing::info!("proxy stopped");
            Ok::<(), Error>(())
        })
        .map_err(|e| super::Error::Failed(e.into()))
}

/// `127.0.0.1:port`.
fn local(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Binds `127.0.0.1:port`.
pub(crate) async fn listen(port: u16) -> Result<tokio::net::TcpListener, Error> {
    let addr = local(port);
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Finds the cluster's started servers, decides the route (direct or tunnel) and returns the
/// proxy, with a task that keeps its servers current.
pub(crate) async fn start(
    client: &Client,
    config: &Config,
    dir: &Path,
) -> Result<Arc<Proxy>, Error> {
    let found = servers_of(client, config, dir).await?;
    if found.is_empty() {
        return Err(Error::NoStartedServer {
            app: config.cp_app(),
            cluster: config.cluster_name.clone(),
            dir: dir.display().to_string(),
        });
    }
    let probes: Vec<SocketAddr> = found.iter().map(|s| s.addr).collect();
    let route = super::tunnel::route(config, &probes)
        .await
        .map_err(|source| Error::Route {
            cluster: config.cluster_name.clone(),
            servers: found
                .iter()
                .map(|s| format!("{} {}", s.name, s.addr))
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })?;
    let proxy = Proxy::new(route, found);
    tokio::spawn(refresh(
        Arc::downgrade(&proxy),
        client.clone(),
        config.clone(),
        dir.to_path_buf(),
    ));
    Ok(proxy)
}

/// Looks the servers up every [`REFRESH`], and when the proxy asks; ends with the proxy.
async fn refresh(proxy: std::sync::Weak<Proxy>, client: Client, config: Config, dir: PathBuf) {
    loop {
        {
            let Some(p) = proxy.upgrade() else { return };
            let asked = p.wants_refresh().notified();
            tokio::select! {
                _ = asked => {}
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
        match servers_of(&client, &config, &dir).await {
            Ok(found) => {
                let Some(p) = proxy.upgrade() else { return };
                if found != p.servers() {
                    tracing::info!(
                        "started servers now: {}",
                        found
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                p.set_servers(found);
            }
            Err(e) => {
                tracing::warn!(error = %crate::errors::chain(&e), "looking up the cluster's servers")
            }
        }
        tokio::time::sleep(REFRESH_MIN_GAP).await;
    }
}

/// The started servers of `config`'s control plane.
async fn servers_of(client: &Client, config: &Config, dir: &Path) -> Result<Vec<Server>, Error> {
    let app = config.cp_app();
    let owned = list::owned_machines(client, config, &NodeSet::ControlPlane, dir)
        .await
        .map_err(Box::new)?;
    Ok(servers(&list::build_rows(&app, &owned, &[])))
}

/// Pure: the started servers among `rows` with a usable 6PN address, as proxy targets.
fn servers(rows: &[Row]) -> Vec<Server> {
    rows.iter()
        .filter(|r| r.state == "started" && (r.role.is_empty() || r.role == "server"))
        .filter_map(|r| {
            let ip = r.private_ip.parse::<IpAddr>().ok()?;
            Some(Server {
                name: r.name.clone(),
                addr: SocketAddr::new(ip, API_PORT),
                ready: r.ready,
            })
        })
        .collect()
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, state: &str, role: &str, ip: &str, ready: bool) -> Row {
        Row::for_test(name, state, role, ip, ready)
    }

    #[test]
    fn servers_are_the_started_ones_with_an_address_on_the_api_port() {
        let rows = [
            row("ctrl-0", "stopped", "server", "fdaa:0:1::2", true),
            row("ctrl-1", "started", "server", "fdaa:0:1::3", true),
            row("ctrl-2", "started", "", "fdaa:0:1::4", false),
            row("ctrl-3", "started", "server", "", true),
            row("worker-0", "started", "agent", "fdaa:0:1::5", true),
        ];
        let s = servers(&rows);
        assert_eq!(
            s,
            [
                Server {
                    name: "ctrl-1".into(),
                    addr: "[fdaa:0:1::3]:6443".parse().expect("addr"),
                    ready: true
                },
                Server {
                    name: "ctrl-2".into(),
                    addr: "[fdaa:0:1::4]:6443".parse().expect("addr"),
                    ready: false
                },
            ]
        );
    }

    #[tokio::test]
    async fn listen_binds_the_loopback_and_a_taken_port_says_what_to_do() {
        let l = listen(0).await.expect("bind");
        let addr = l.local_addr().expect("addr");
        assert!(addr.ip().is_loopback());
        let e = listen(addr.port()).await.expect_err("taken");
        assert!(e.to_string().contains("--port 0"), "{e}");
    }
}
