//! The operator's WireGuard peer of one organization, kept in
//! `<config dir>/wireguard/<org>.json` (mode 0600: it holds the private key).
//!
//! Keys as flyctl makes them (reference fly-runtime.md §5): 32 random bytes, the public key is
//! X25519 of the base point, both base64. The peer name is `fks-<host>-<random>`, within
//! flyctl's `^[a-zA-Z0-9\-]+$`.
//! Must not: print or log the private key (`Debug` redacts it).

use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;

use super::Error;

/// The gateways' UDP port (flyctl dials `<endpointip>:51820`, reference fly-runtime.md §5).
pub const GATEWAY_PORT: u16 = 51820;

/// A saved peer.
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Peer {
    /// The organization's slug.
    pub org: String,
    /// The peer's name at Fly.
    pub name: String,
    /// The private key, base64.
    private_key: String,
    /// This peer's address in the org /48.
    pub peerip: Ipv6Addr,
    /// The gateway: address or host name, UDP port 51820.
    pub endpoint: String,
    /// The gateway's public key, base64.
    pub gateway_key: String,
    /// Whether fks-bootstrap made this peer (`addWireGuardPeer` in [`super::ensure_peer`]):
    /// only such a peer goes when `destroy` removes the org's last cluster. A file saved before
    /// this field existed was made that way too (nothing else writes it), hence the default.
    #[serde(default = "made_here")]
    pub made_by_fks_bootstrap: bool,
}

fn made_here() -> bool {
    true
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("org", &self.org)
            .field("name", &self.name)
            .field("private_key", &"<redacted>")
            .field("peerip", &self.peerip)
            .field("endpoint", &self.endpoint)
            .field("gateway_key", &self.gateway_key)
            .field("made_by_fks_bootstrap", &self.made_by_fks_bootstrap)
            .finish()
    }
}

/// A new key pair: (private, public), both base64.
pub fn keypair() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = x25519_dalek::StaticSecret::from(bytes);
    let public = x25519_dalek::PublicKey::from(&secret);
    let b64 = base64::engine::general_purpose::STANDARD;
    (b64.encode(secret.to_bytes()), b64.encode(public.as_bytes()))
}

/// A base64 X25519 key as 32 bytes.
pub fn decode_key(what: &str, b64: &str) -> Result<[u8; 32], Error> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| Error::BadKey {
            what: what.to_string(),
        })
}

/// A peer name for this machine: `fks-<host>-<8 hex>`, letters, digits and dashes only.
pub fn new_name() -> String {
    let host: String = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(32)
        .collect();
    let host = host.trim_matches('-');
    let tag = format!("{:08x}", rand::rng().next_u32());
    if host.is_empty() {
        format!("fks-{tag}")
    } else {
        format!("fks-{host}-{tag}")
    }
}

impl Peer {
    /// A peer from `addWireGuardPeer`'s answer and the private key sent with it.
    pub fn new(
        org: &str,
        name: &str,
        private_key: String,
        added: &super::graphql::AddedPeer,
    ) -> Result<Peer, Error> {
        let peerip = added
            .peerip
            .parse::<Ipv6Addr>()
            .map_err(|_| Error::Graphql {
                op: format!("creating WireGuard peer {name}"),
                message: format!("peerip {:?} is not an IPv6 address", added.peerip),
            })?;
        Ok(Peer {
            org: org.to_string(),
            name: name.to_string(),
            private_key,
            peerip,
            endpoint: added.endpointip.clone(),
            gateway_key: added.pubkey.clone(),
            made_by_fks_bootstrap: true,
        })
    }

    /// The private key's bytes.
    pub fn private_key(&self) -> Result<[u8; 32], Error> {
        decode_key("the saved private key", &self.private_key)
    }

    /// The org's /48 (the first 48 bits of the peer's address).
    pub fn org_prefix(&self) -> Ipv6Addr {
        let s = self.peerip.segments();
        Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0)
    }

    /// `<org /48>::3`, the org's DNS over WireGuard (reference fly-runtime.md §4).
    pub fn dns(&self) -> Ipv6Addr {
        let s = self.peerip.segments();
        Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 3)
    }
}

/// `<config dir>/wireguard/<org>.json`.
pub fn path(config_dir: &Path, org: &str) -> PathBuf {
    config_dir.join("wireguard").join(format!("{org}.json"))
}

/// The saved peer of `org`, if any.
pub fn load(config_dir: &Path, org: &str) -> Result<Option<Peer>, Error> {
    let p = path(config_dir, org);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::State {
                path: p,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::State {
            path: p,
            message: e.to_string(),
        }),
    }
}

/// Saves `peer` with mode 0600 (created so, and an existing file narrowed first).
pub fn save(config_dir: &Path, peer: &Peer) -> Result<(), Error> {
    let p = path(config_dir, &peer.org);
    let fail = |e: std::io::Error| Error::State {
        path: p.clone(),
        message: e.to_string(),
    };
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let json = serde_json::to_vec_pretty(peer).map_err(|e| Error::State {
        path: p.clone(),
        message: e.to_string(),
    })?;
    write_private(&p, &json).map_err(fail)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Forgets the saved peer of `org` (nothing saved is fine).
pub fn forget(config_dir: &Path, org: &str) -> Result<(), Error> {
    let p = path(config_dir, org);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::State {
            path: p,
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_peer_is_private_and_its_key_never_shows_in_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public) = keypair();
        assert_eq!(decode_key("k", &public).expect("public").len(), 32);
        let added = super::super::graphql::AddedPeer {
            peerip: "fdaa:1:2:ffff::1:2".into(),
            endpointip: "100.64.1.2".into(),
            pubkey: public.clone(),
        };
        let peer = Peer::new("personal", &new_name(), private.clone(), &added).expect("peer");
        assert!(!format!("{peer:?}").contains(&private));
        assert_eq!(peer.dns().to_string(), "fdaa:1:2::3");
        save(dir.path(), &peer).expect("save");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(dir.path(), "personal"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            load(dir.path(), "personal").expect("load"),
            Some(peer.clone())
        );
        // A file saved before `made_by_fks_bootstrap` existed was made by fks-bootstrap.
        let mut old: serde_json::Value = serde_json::to_value(&peer).expect("json");
        old.as_object_mut()
            .expect("object")
            .remove("made_by_fks_bootstrap");
        let old: Peer = serde_json::from_value(old).expect("old file");
        assert!(old.made_by_fks_bootstrap);
        forget(dir.path(), "personal").expect("forget");
        assert_eq!(load(dir.path(), "personal").expect("load"), None);
        assert!(new_name()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }
}
