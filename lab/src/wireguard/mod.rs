//! WireGuard peers of the lab's organizations (Fly's `addWireGuardPeer` /
//! `removeWireGuardPeer`, reference fly-runtime.md §5) and, in guests mode, the real gateway
//! that lets them in (`gateway`).
//!
//! The peer table is kept in `<state>/wireguard/peers.json` and re-applied to the gateway at
//! boot, so peers survive a lab restart. Peer addresses are `<org /48>:ffff:0:0:N:2` with a
//! `/120` each (Fly: "peer = /120 in the org /48", reference §8); the `ffff` host field keeps
//! them apart from machines' addresses.
//! Must not: hold the table's lock while running a program.

pub mod gateway;

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use gateway::Gateway;

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    /// The organization's slug.
    pub org: String,
    /// The peer's name (unique per organization).
    pub name: String,
    /// The peer's public key (base64 X25519).
    pub pubkey: String,
    /// Its address in the org's /48.
    pub peerip: Ipv6Addr,
    /// The region asked for (informational).
    pub region: String,
}

/// Why a peer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading or writing the peer table {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the peer table {path} is not valid JSON")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("configuring the gateway")]
    Gateway(#[from] gateway::Error),
}

/// The peers and, in guests mode, the gateway.
#[derive(Debug)]
pub struct WireGuard {
    path: PathBuf,
    peers: Mutex<BTreeMap<(String, String), Peer>>,
    gateway: Mutex<Option<std::sync::Arc<Gateway>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WireGuard {
    /// Opens the peer table of `state_dir` (empty when there is none yet).
    pub fn open(state_dir: &Path) -> Result<WireGuard, Error> {
        let path = state_dir.join("wireguard").join("peers.json");
        let peers: Vec<Peer> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(Error::Store { path, source }),
        };
        Ok(WireGuard {
            path,
            peers: Mutex::new(
                peers
                    .into_iter()
                    .map(|p| ((p.org.clone(), p.name.clone()), p))
                    .collect(),
            ),
            gateway: Mutex::new(None),
        })
    }

    /// Starts the gateway on `bridge` and lets the recorded peers in.
    pub fn start_gateway(&self, bridge: &crate::guest::BridgeConfig) -> Result<(), Error> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let gw = std::sync::Arc::new(Gateway::start(bridge, &dir)?);
        let peers: Vec<Peer> = lock(&self.peers).values().cloned().collect();
        for p in &peers {
            gw.add_peer(&p.pubkey, p.peerip)?;
            gw.route_org_dns(org_dns(p.peerip))?;
        }
        *lock(&self.gateway) = Some(gw);
        Ok(())
    }

    /// Stops the gateway (at lab shutdown).
    pub fn stop_gateway(&self) {
        if let Some(gw) = lock(&self.gateway).take() {
            gw.stop();
        }
    }

    /// The gateway's public key and endpoint, when it runs.
    pub fn endpoint(&self) -> Option<(String, String)> {
        lock(&self.gateway)
            .as_ref()
            .map(|g| (g.pubkey.clone(), g.layout.public4.to_string()))
    }

    /// The peers of `org`, by name.
    pub fn peers(&self, org: &str) -> Vec<Peer> {
        lock(&self.peers)
            .values()
            .filter(|p| p.org == org)
            .cloned()
            .collect()
    }

    /// Adds (or replaces: Fly replaces a peer of the same name) a peer of `org` whose /48 is
    /// `prefix`, and lets it in at the gateway.
    pub fn add(
        &self,
        org: &str,
        prefix: Ipv6Addr,
        name: &str,
        pubkey: &str,
        region: &str,
    ) -> Result<Peer, Error> {
        let (peer, old, all) = {
            let mut peers = lock(&self.peers);
            let old = peers.remove(&(org.to_string(), name.to_string()));
            let used: std::collections::BTreeSet<Ipv6Addr> = peers
                .values()
                .filter(|p| p.org == org)
                .map(|p| p.peerip)
                .collect();
            let p = prefix.segments();
            let peerip = (1u16..)
                .map(|n| Ipv6Addr::new(p[0], p[1], p[2], 0xffff, 0, 0, n, 2))
                .find(|ip| !used.contains(ip))
                .unwrap_or(Ipv6Addr::new(p[0], p[1], p[2], 0xffff, 0, 0, 0, 2));
            let peer = Peer {
                org: org.to_string(),
                name: name.to_string(),
                pubkey: pubkey.to_string(),
                peerip,
                region: region.to_string(),
            };
            peers.insert((org.to_string(), name.to_string()), peer.clone());
            (peer, old, peers.values().cloned().collect::<Vec<_>>())
        };
        self.save(&all)?;
        let gw = lock(&self.gateway).clone();
        if let Some(gw) = gw {
            if let Some(old) = old {
                gw.remove_peer(&old.pubkey, old.peerip)?;
            }
            gw.add_peer(&peer.pubkey, peer.peerip)?;
            gw.route_org_dns(org_dns(peer.peerip))?;
        }
        Ok(peer)
    }

    /// Removes the peer `name` of `org`; `None` when there is none.
    pub fn remove(&self, org: &str, name: &str) -> Result<Option<Peer>, Error> {
        let (old, all) = {
            let mut peers = lock(&self.peers);
            let old = peers.remove(&(org.to_string(), name.to_string()));
            (old, peers.values().cloned().collect::<Vec<_>>())
        };
        let Some(old) = old else { return Ok(None) };
        self.save(&all)?;
        let gw = lock(&self.gateway).clone();
        if let Some(gw) = gw {
            gw.remove_peer(&old.pubkey, old.peerip)?;
        }
        Ok(Some(old))
    }

    fn save(&self, peers: &[Peer]) -> Result<(), Error> {
        let store = |source| Error::Store {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(store)?;
        }
        let json = serde_json::to_vec_pretty(peers).map_err(|source| Error::Parse {
            path: self.path.clone(),
            source,
        })?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(store)?;
        std::fs::rename(&tmp, &self.path).map_err(store)
    }
}

/// Starts the gateway of a guests-mode lab. A gateway that cannot start (no wireguard-go, no
/// `wg`) is a warning, not a failed lab: peers are still recorded, and nothing lets them in.
pub async fn start_in_background(lab: &std::sync::Arc<crate::Lab>) {
    let lab2 = lab.clone();
    let started =
        tokio::task::spawn_blocking(move || lab2.wireguard.start_gateway(&lab2.opts.bridge)).await;
    match started {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            error = format!("{e:#}"),
            "the lab's WireGuard gateway did not start: peers are recorded but cannot connect"
        ),
        Err(e) => tracing::warn!(error = %e, "the lab's WireGuard gateway did not start"),
    }
}

/// `<org /48>::3`: Fly's DNS over WireGuard (reference fly-runtime.md §4).
pub fn org_dns(peerip: Ipv6Addr) -> Ipv6Addr {
    let s = peerip.segments();
    Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_get_distinct_addresses_in_the_org_prefix_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wg = WireGuard::open(dir.path()).expect("open");
        let prefix: Ipv6Addr = "fdaa:1:2::".parse().expect("ip");
        let a = wg.add("personal", prefix, "a", "ka", "sjc").expect("a");
        let b = wg.add("personal", prefix, "b", "kb", "sjc").expect("b");
        assert_eq!(a.peerip.to_string(), "fdaa:1:2:ffff::1:2");
        assert_eq!(b.peerip.to_string(), "fdaa:1:2:ffff::2:2");
        let again = WireGuard::open(dir.path()).expect("reopen");
        assert_eq!(again.peers("personal").len(), 2);
        assert_eq!(again.remove("personal", "a").expect("rm"), Some(a));
        assert_eq!(again.remove("personal", "a").expect("rm"), None);
        assert_eq!(org_dns(b.peerip).to_string(), "fdaa:1:2::3");
    }
}
