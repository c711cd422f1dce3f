//! The operator's own way into 6PN: a userspace WireGuard tunnel (issue 12), as flyctl's
//! agent does it (reference fly-runtime.md §5) and without root, a kernel interface or a
//! change to system DNS.
//!
//! - `graphql`: the peer's creation and removal through Fly's GraphQL API;
//! - `peer`: the saved peer (private key in the config dir, 0600);
//! - `device`: the engine (boringtun + smoltcp) that dials TCP through the tunnel;
//! - `dns`: `.internal` names through `<org /48>::3` inside the tunnel;
//! - `route`: direct or through the tunnel, the one decision every command makes.
//!
//! [`Tunnel::open`] reuses the saved peer while its handshake works; a failed handshake is an
//! error that says what to do, never a hang.
//! Must not: print or log the private key or the token.

pub mod device;
pub mod dns;
pub mod graphql;
pub mod peer;
pub mod route;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use device::Handle;
pub use peer::Peer;
pub use route::Route;

/// How long the first handshake with the gateway may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the tunnel could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A GraphQL call failed.
    #[error("{op}: {message}")]
    Graphql { op: String, message: String },
    /// The saved peer could not be read or written.
    #[error("the saved WireGuard peer {path}: {message}")]
    State { path: PathBuf, message: String },
    /// A key is not base64 of 32 bytes.
    #[error("{what} is not a base64 X25519 key")]
    BadKey { what: String },
    /// The gateway's name did not resolve.
    #[error("resolving the WireGuard gateway {endpoint}: {message}")]
    Endpoint { endpoint: String, message: String },
    /// The UDP socket failed.
    #[error("the UDP socket to the WireGuard gateway {endpoint}: {message}")]
    Udp {
        endpoint: SocketAddr,
        message: String,
    },
    /// No handshake; the peer still exists at Fly.
    #[error(
        "no WireGuard handshake with the gateway {endpoint} within {seconds}s (peer {peer} of \
         org {org}): the gateway's key {gateway_key} may be wrong or UDP to port 51820 is \
         blocked; remove the peer with `fks-bootstrap tunnel down CLUSTER_DIR` and connect \
         again to create a new one"
    )]
    NoHandshake {
        endpoint: SocketAddr,
        seconds: u64,
        peer: String,
        org: String,
        gateway_key: String,
    },
    /// No handshake, and the org no longer has the peer.
    #[error(
        "the WireGuard peer {peer} of org {org} was removed (the gateway at {endpoint} no longer \
         answers it): create a new one with `fks-bootstrap tunnel up CLUSTER_DIR`"
    )]
    PeerRemoved {
        peer: String,
        org: String,
        endpoint: SocketAddr,
    },
    /// An IPv4 address was asked for: 6PN is IPv6 only.
    #[error("{addr} is not a 6PN (IPv6) address")]
    NotSixPn { addr: SocketAddr },
    /// A TCP connect through the tunnel failed.
    #[error("connecting to {addr} through the WireGuard tunnel: {message}")]
    Connect { addr: SocketAddr, message: String },
    /// A name lookup through the tunnel failed.
    #[error("looking up {name} at {server} through the WireGuard tunnel: {message}")]
    Resolve {
        name: String,
        server: Ipv6Addr,
        message: String,
    },
    /// A name has no AAAA record (for `.internal`: no started machine).
    #[error("{name} has no AAAA record at {server} (no started machine of that name?)")]
    NoAddress { name: String, server: Ipv6Addr },
    /// The engine stopped.
    #[error("the WireGuard tunnel stopped")]
    Stopped,
}

/// Where the GraphQL API is: `FLY_API_BASE_URL`, else Fly's.
pub fn graphql_base() -> String {
    std::env::var("FLY_API_BASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| graphql::DEFAULT_BASE_URL.to_string())
}

/// An open tunnel into one org's 6PN.
#[derive(Clone)]
pub struct Tunnel {
    handle: Handle,
    peer: Peer,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").field("peer", &self.peer).finish()
    }
}

/// The saved peer of `org`, or a new one made through GraphQL (and saved).
pub async fn ensure_peer(
    gql: &graphql::Client,
    config_dir: &Path,
    org: &str,
) -> Result<(Peer, bool), Error> {
    if let Some(p) = peer::load(config_dir, org)? {
        return Ok((p, false));
    }
    let org_id = gql.org_id(org).await?;
    let (private, public) = peer::keypair();
    let name = peer::new_name();
    let added = gql.add_peer(&org_id, &name, &public, None).await?;
    let p = Peer::new(org, &name, private, &added)?;
    peer::save(config_dir, &p)?;
    tracing::info!(peer = %p.name, org, peerip = %p.peerip, "created a WireGuard peer");
    Ok((p, true))
}

/// Removes the saved peer of `org` at Fly and forgets it; false when none was saved.
pub async fn remove_peer(
    gql: &graphql::Client,
    config_dir: &Path,
    org: &str,
) -> Result<bool, Error> {
    let Some(p) = peer::load(config_dir, org)? else {
        return Ok(false);
    };
    let org_id = gql.org_id(org).await?;
    if gql.peer_names(org).await?.contains(&p.name) {
        gql.remove_peer(&org_id, &p.name).await?;
    }
    peer::forget(config_dir, org)?;
    Ok(true)
}

async fn endpoint(p: &Peer) -> Result<SocketAddr, Error> {
    if let Ok(ip) = p.endpoint.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, peer::GATEWAY_PORT));
    }
    tokio::net::lookup_host((p.endpoint.as_str(), peer::GATEWAY_PORT))
        .await
        .map_err(|e| Error::Endpoint {
            endpoint: p.endpoint.clone(),
            message: e.to_string(),
        })?
        .next()
        .ok_or_else(|| Error::Endpoint {
            endpoint: p.endpoint.clone(),
            message: "no address".into(),
        })
}

impl Tunnel {
    /// Opens the tunnel of `org` with its saved peer (made first when there is none) and waits
    /// for the handshake. When it fails, asks the org whether the peer still exists, to say
    /// which of the two fixes applies.
    pub async fn open(
        gql: &graphql::Client,
        config_dir: &Path,
        org: &str,
    ) -> Result<Tunnel, Error> {
        let (p, _created) = ensure_peer(gql, config_dir, org).await?;
        let endpoint = endpoint(&p).await?;
        let handle = Handle::start(device::Settings {
            private_key: p.private_key()?,
            gateway_key: peer::decode_key("the gateway's public key", &p.gateway_key)?,
            endpoint,
            peerip: p.peerip,
        })
        .await?;
        if !handle.handshake(HANDSHAKE_TIMEOUT).await {
            let gone = gql
                .peer_names(org)
                .await
                .map(|names| !names.contains(&p.name))
                .unwrap_or(false);
            return Err(if gone {
                Error::PeerRemoved {
                    peer: p.name.clone(),
                    org: org.to_string(),
                    endpoint,
                }
            } else {
                Error::NoHandshake {
                    endpoint,
                    seconds: HANDSHAKE_TIMEOUT.as_secs(),
                    peer: p.name.clone(),
                    org: org.to_string(),
                    gateway_key: p.gateway_key.clone(),
                }
            });
        }
        Ok(Tunnel { handle, peer: p })
    }

    /// The peer in use.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The AAAA addresses of `name` from the org's resolver, through the tunnel.
    pub async fn resolve(&self, name: &str) -> Result<Vec<Ipv6Addr>, Error> {
        dns::lookup(&self.handle, self.peer.dns(), name).await
    }

    /// A TCP connection to `host` (an IPv6 address or a name the org's DNS knows) and `port`.
    pub async fn connect(&self, host: &str, port: u16) -> Result<tokio::io::DuplexStream, Error> {
        let ip = match host.trim_matches(['[', ']']).parse::<Ipv6Addr>() {
            Ok(ip) => ip,
            Err(_) => *self
                .resolve(host)
                .await?
                .first()
                .ok_or_else(|| Error::NoAddress {
                    name: host.to_string(),
                    server: self.peer.dns(),
                })?,
        };
        self.handle.connect(SocketAddr::new(ip.into(), port)).await
    }
}
