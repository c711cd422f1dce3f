//! `fks-bootstrap tunnel up|down CLUSTER_DIR`: the operator's WireGuard peer of the cluster's
//! org (`ORG_NAME`), and the way other commands (`ssh`, `proxy`, `kubectl`) get into 6PN when
//! this machine is not on it.
//!
//! `FKS_TUNNEL=off` turns the built-in tunnel off (then only a kernel tunnel, or the Machines
//! API exec for one command, reaches a node). `FLY_API_BASE_URL` is where GraphQL is
//! (default `https://api.fly.io`, reference fly-runtime.md §5).
//! Must not: print the private key or the token.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::Config;
use crate::tunnel::{self, graphql, route, Route, Tunnel};

/// Examples shown by `tunnel --help`.
pub const AFTER_HELP: &str = "\
Examples:
  fks-bootstrap tunnel up clusters/lab      (create the peer if needed, check its handshake)
  fks-bootstrap tunnel down clusters/lab    (remove the peer at Fly and forget its key)

The peer's private key stays in ~/.config/fks-bootstrap/wireguard/<org>.json (mode 0600). The
tunnel runs inside fks-bootstrap: no root, no network interface, no DNS change; .internal names
are looked up through <org prefix>::3 inside it.";

/// `tunnel` subcommands.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do with the peer.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the org's peer when there is none and check that its handshake works.
    Up {
        /// The cluster directory (its ORG_NAME is the org).
        cluster_dir: PathBuf,
    },
    /// Remove the org's peer at Fly and forget its key.
    Down {
        /// The cluster directory (its ORG_NAME is the org).
        cluster_dir: PathBuf,
    },
}

/// Whether the built-in tunnel may be used (`FKS_TUNNEL` is not `off`).
pub(crate) fn enabled() -> bool {
    !matches!(
        std::env::var("FKS_TUNNEL").as_deref().map(str::trim),
        Ok("off" | "0" | "false" | "no")
    )
}

/// The GraphQL client for `FLY_API_BASE_URL` and the operator's token.
pub(crate) fn graphql_client() -> Result<graphql::Client, super::Error> {
    let token = super::credentials::token_from_env()
        .map_err(|e| super::Error::Usage(e.into()))?
        .map(|(token, _)| token)
        .ok_or_else(|| {
            super::Error::Usage(anyhow::anyhow!(
                "no Fly token: set FLY_API_TOKEN (or log in with flyctl)"
            ))
        })?;
    graphql::Client::new(&tunnel::graphql_base(), crate::fly::Token::new(token))
        .map_err(|e| super::Error::Usage(e.into()))
}

/// The config directory that holds the peer.
pub(crate) fn config_dir() -> Result<PathBuf, super::Error> {
    crate::ssh::config_dir().map_err(|e| super::Error::Usage(e.into()))
}

/// Opens the tunnel into `config`'s org.
pub(crate) async fn open(config: &Config) -> Result<Tunnel, tunnel::Error> {
    let prep = |e: super::Error| tunnel::Error::Graphql {
        op: "preparing the WireGuard tunnel".into(),
        message: format!("{e:#}"),
    };
    let gql = graphql_client().map_err(prep)?;
    let dir = config_dir().map_err(prep)?;
    Tunnel::open(&gql, &dir, &config.org_name).await
}

/// Why neither way into 6PN is available.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoRoute {
    /// No probe answered and `FKS_TUNNEL=off`.
    #[error(
        "6PN is not reachable from this host and the built-in WireGuard tunnel is off \
         (FKS_TUNNEL=off)"
    )]
    Off,
    /// No probe answered and the built-in tunnel could not be opened.
    #[error("6PN is not reachable from this host, and the built-in WireGuard tunnel failed")]
    Tunnel(#[source] tunnel::Error),
}

/// The way into `config`'s 6PN for reaching `probes` (node addresses and ports): direct when
/// any of them answers a TCP probe (this host is on 6PN, or a kernel tunnel is up), else the
/// built-in userspace tunnel unless `FKS_TUNNEL=off`. The one decision `ssh`, `proxy` and
/// `kubectl` share.
pub(crate) async fn route(config: &Config, probes: &[SocketAddr]) -> Result<Route, NoRoute> {
    if route::any_reachable(probes).await {
        return Ok(Route::Direct);
    }
    if !enabled() {
        return Err(NoRoute::Off);
    }
    open(config)
        .await
        .map(Route::Tunnel)
        .map_err(NoRoute::Tunnel)
}

/// Runs `tunnel up|down`.
pub fn run(args: Args) -> Result<(), super::Error> {
    match args.command {
        Command::Up { cluster_dir } => {
            let config = super::load_config(&cluster_dir)?;
            let dir = config_dir()?;
            let org = config.org_name.clone();
            let t = super::runtime()?
                .block_on(async {
                    match open(&config).await {
                        // `up` is how a removed peer is replaced: forget it, make a new one.
                        Err(tunnel::Error::PeerRemoved { peer, .. }) => {
                            eprintln!("[INFO] WireGuard peer {peer} of org {org} was removed at Fly; creating a new one");
                            tunnel::peer::forget(&dir, &org)?;
                            open(&config).await
                        }
                        other => other,
                    }
                })
                .map_err(|e| super::Error::Failed(e.into()))?;
            let p = t.peer();
            println!(
                "WireGuard peer {} of org {}: {} via gateway {} (handshake ok)",
                p.name, p.org, p.peerip, p.endpoint
            );
            Ok(())
        }
        Command::Down { cluster_dir } => {
            let config = super::load_config(&cluster_dir)?;
            let gql = graphql_client()?;
            let dir = config_dir()?;
            let removed = super::runtime()?
                .block_on(tunnel::remove_peer(&gql, &dir, &config.org_name))
                .map_err(|e| super::Error::Failed(e.into()))?;
            if removed {
                println!("removed the WireGuard peer of org {}", config.org_name);
            } else {
                println!("no WireGuard peer of org {} saved here", config.org_name);
            }
            Ok(())
        }
    }
}
