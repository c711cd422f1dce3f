//! The node's SSH server, served by `node init` itself with russh's server side (the node
//! image carries no sshd). Fly's init runs its own SSH server, hallpass, on `[<6PN>]:22`
//! (reference/fly-runtime.md §1.6: "A user sshd must use another port"), so this one listens
//! on the cluster's `SSH_PORT` (default [`crate::config::DEFAULT_SSH_PORT`], 2222).
//!
//! What it allows, and nothing else:
//! - the host key the operator pinned for this node, read from the file the platform delivers
//!   from an app secret ([`super::HOST_KEY_PATH`]);
//! - public-key authentication of [`USER`] with a key listed in the delivered
//!   authorized_keys ([`super::AUTHORIZED_KEYS_PATH`]), read at every attempt;
//! - session channels: `pty-req`, `window-change`, `shell`, `exec` (run by the user's login
//!   shell as `$SHELL -c`, as sshd does, which is what `ssh::quote` quotes for), `signal`,
//!   and `env` for `LANG` and `LC_*` only. No forwarding, no agent, no X11, no subsystems.
//!
//! The processes run as this process's user (root on a node): the server never switches
//! users. Per-channel process work is in `session`; exit statuses come through `children`.

mod children;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Sig};
use tokio::net::TcpListener;

pub use children::{ChildExit, ChildExits};
pub use session::{login_for, Login};

/// The one user that may log in; the operator connects as this user (`cli::ssh`).
pub const USER: &str = "root";
/// The identification string this server sends: `SSH-2.0-fks-bootstrap_<version>`, so a
/// client can tell it from Fly's hallpass on port 22.
pub const SERVER_ID: &str = concat!("SSH-2.0-fks-bootstrap_", env!("CARGO_PKG_VERSION"));

/// What the server could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The delivered host key cannot be used.
    #[error("loading the SSH host key {}", path.display())]
    HostKey {
        path: PathBuf,
        /// Boxed: the ssh module's error is large.
        #[source]
        source: Box<super::Error>,
    },
    /// The listening socket could not be used.
    #[error("SSH server on {addr}: {op}")]
    Listen {
        addr: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Where the server's inputs are and who reaps its children.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The host private key file (OpenSSH format, ed25519, mode 0600).
    pub host_key: PathBuf,
    /// The authorized_keys file; read at every authentication attempt.
    pub authorized_keys: PathBuf,
    /// The passwd file the login shell and home directory come from.
    pub passwd: PathBuf,
    /// Who collects the exit statuses of session processes.
    pub exits: ChildExits,
}

/// A server ready to accept connections.
pub struct Server {
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
}

struct Shared {
    authorized_keys: PathBuf,
    passwd: PathBuf,
    exits: ChildExits,
}

impl Server {
    /// Load the host key; fails when it is missing or not a private ed25519 key.
    pub fn new(settings: Settings) -> Result<Server, Error> {
        let key =
            super::keys::load_private_key(&settings.host_key).map_err(|source| Error::HostKey {
                path: settings.host_key.clone(),
                source: Box::new(source),
            })?;
        Ok(Server {
            config: Arc::new(config(key)),
            shared: Arc::new(Shared {
                authorized_keys: settings.authorized_keys,
                passwd: settings.passwd,
                exits: settings.exits,
            }),
        })
    }

    /// The public half of the host key: what clients must have pinned.
    pub fn host_public_key(&self) -> Option<&PublicKey> {
        self.config.keys.first().map(PrivateKey::public_key)
    }

    /// Accept connections until the listener fails; each connection runs as its own task.
    pub async fn serve(&self, listener: TcpListener) -> Error {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(source) if is_transient(&source) => {
                    tracing::warn!(%addr, error = %source, "ssh: accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(source) => {
                    return Error::Listen {
                        addr,
                        op: "accepting a connection",
                        source,
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let handler = Connection {
                shared: Arc::clone(&self.shared),
                peer,
                local: stream.local_addr().ok(),
                channels: HashMap::new(),
            };
            let config = Arc::clone(&self.config);
            tokio::spawn(async move {
                match russh::server::run_stream(config, stream, handler).await {
                    Ok(running) => {
                        if let Err(e) = running.await {
                            tracing::debug!(%peer, error = %e, "ssh: connection ended");
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "ssh: handshake failed"),
                }
            });
        }
    }
}

/// Errors a busy machine recovers from (out of descriptors, aborted handshakes).
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
        || matches!(e.raw_os_error(), Some(23 | 24))
}

/// Bind `[::]:port` (all addresses, so the node answers on its 6PN address) for the server.
pub async fn bind(port: u16) -> Result<TcpListener, Error> {
    let addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            op: "binding",
            source,
        })
}

fn config(key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard(SERVER_ID.into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![key],
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: 6,
        // Idle interactive shells stay open; dead peers are found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    }
}

/// The keys in an authorized_keys text. Lines with options, comments and blank lines are
/// skipped: the operator writes plain `ssh-ed25519 AAAA... comment` lines.
pub fn parse_authorized_keys(text: &str) -> Vec<PublicKey> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| PublicKey::from_openssh(l).ok())
        .collect()
}

fn is_authorized(path: &Path, user: &str, key: &PublicKey) -> bool {
    if user != USER {
        return false;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => parse_authorized_keys(&text)
            .iter()
            .any(|k| k.key_data() == key.key_data()),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ssh: cannot read authorized_keys");
            false
        }
    }
}

/// One client connection: its channels by id.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    channels: HashMap<ChannelId, session::Channel>,
}

impl Connection {
    fn start(
        &mut self,
        id: ChannelId,
        command: Option<String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let started = match self.channels.get_mut(&id) {
            Some(chan) => chan.start(session::Start {
                id,
                handle: session.handle(),
                command,
                peer: self.peer,
                local: self.local,
                passwd: &self.shared.passwd,
                exits: &self.shared.exits,
            }),
            None => false,
        };
        reply(session, id, started)
    }
}

/// Answer a channel request (russh sends the answer only when the client asked for one).
fn reply(session: &mut Session, id: ChannelId, ok: bool) -> Result<(), russh::Error> {
    if ok {
        session.channel_success(id)
    } else {
        session.channel_failure(id)
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(
            if is_authorized(&self.shared.authorized_keys, user, offer.public_key) {
                Auth::Accept
            } else {
                Auth::reject()
            },
        )
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if is_authorized(&self.shared.authorized_keys, user, key.public_key) {
            tracing::info!(peer = %self.peer, user, "ssh: accepted public key");
            Ok(Auth::Accept)
        } else {
            tracing::info!(peer = %self.peer, user, "ssh: refused public key");
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Requests arrive through this handler's methods; the channel object is not read, so
        // it is dropped (russh then discards its copies of the messages).
        self.channels
            .insert(channel.id(), session::Channel::default());
        reply.accept().await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        id: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let accepted = self
            .channels
            .get_mut(&id)
            .is_some_and(|chan| chan.request_pty(term, cols, rows));
        reply(session, id, accepted)
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let accepted = self
            .channels
            .get_mut(&id)
            .is_some_and(|chan| chan.request_env(name, value));
        reply(session, id, accepted)
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(id, None, session)
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match std::str::from_utf8(data) {
            Ok(command) => self.start(id, Some(command.to_owned()), session),
            Err(_) => session.channel_failure(id),
        }
    }

    async fn window_change_request(
        &mut self,
        id: ChannelId,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(chan) = self.channels.get_mut(&id) {
            chan.resize(cols, rows);
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        id: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(chan) = self.channels.get(&id) {
            chan.signal(&signal);
        }
        Ok(())
    }

    async fn data(
        &mut self,
        id: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(chan) = self.channels.get(&id) {
            chan.input(data);
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(chan) = self.channels.get_mut(&id) {
            chan.eof();
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the channel hangs up its process's input (and its pty), as sshd does.
        self.channels.remove(&id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@test";

    #[test]
    fn authorized_keys_skip_comments_blank_lines_and_garbage() {
        let text = format!("# comment\n\n{KEY}\nnot a key\n");
        let keys = parse_authorized_keys(&text);
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys[0].key_data(),
            PublicKey::from_openssh(KEY).expect("key").key_data()
        );
    }

    #[test]
    fn only_the_login_user_with_a_listed_key_is_authorized() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authorized_keys");
        std::fs::write(&path, format!("{KEY}\n")).expect("write");
        let key = PublicKey::from_openssh(KEY).expect("key");
        assert!(is_authorized(&path, "root", &key));
        assert!(!is_authorized(&path, "admin", &key));
        assert!(!is_authorized(&dir.path().join("missing"), "root", &key));
    }

    #[test]
    fn the_server_names_itself_so_it_is_told_apart_from_hallpass() {
        assert!(SERVER_ID.starts_with("SSH-2.0-fks-bootstrap_"));
    }
}
