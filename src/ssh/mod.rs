//! SSH to cluster nodes: the cluster's key material (`keys`), the files that deliver it to a
//! machine, and a russh client that only talks to servers presenting the host key pinned for
//! that node (`client`, `shell`). Owns no configuration loading and prints nothing itself: the
//! CLI decides what to show; errors name the node and address they concern.
//!
//! Trust model (ARCHITECTURE.md step 5): fks-bootstrap generates every node's host key itself
//! and delivers it as machine `files`, so the client always knows the one key a node must
//! present. There is no trust-on-first-use and no way to turn the check off.

mod client;
mod keys;
mod quote;
/// The node's SSH server (run by `node init`): Linux only, like the node (pty, process groups).
#[cfg(target_os = "linux")]
pub mod server;
mod shell;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use client::{Client, Exit, Output};
pub use keys::{
    config_dir, fingerprint, known_hosts_line, ClusterKeys, GuestFile, HostKey, UserKey,
    AUTHORIZED_KEYS_PATH, HOST_KEY_PATH, HOST_PUBLIC_KEY_PATH,
};
pub use quote::{quote_arg, quote_command};
pub use russh::keys::PublicKey;
pub use shell::{PtySize, Terminal};

/// Everything that can go wrong in this module; each variant names what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, writing or creating a key file or directory failed.
    #[error("key file {path}: {action}")]
    KeyFile {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("reading", "creating", ...).
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file exists but does not hold a usable key.
    #[error("key file {path} does not hold an unencrypted ed25519 key in OpenSSH format")]
    KeyFormat {
        /// The file.
        path: PathBuf,
        /// The decoding error, when there is one.
        #[source]
        source: Option<russh::keys::ssh_key::Error>,
    },
    /// A key file's permissions let other users read it.
    #[error("key file {path} has mode {mode:o}: other users can read it; run `chmod 600 {path}`")]
    KeyFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A node or cluster name cannot be used as a file name.
    #[error("{what} name {name:?} cannot name a key directory: use letters, digits, '.', '_' and '-', not starting with '.'")]
    BadName {
        /// "node" or "cluster".
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// Encoding a key failed (should not happen for keys this module made).
    #[error("encoding the {what} key")]
    KeyEncode {
        /// Which key.
        what: String,
        /// The encoder's error.
        #[source]
        source: russh::keys::ssh_key::Error,
    },
    /// The operating system random number generator failed.
    #[error("reading the operating system random number generator")]
    Random(#[source] rand::rand_core::OsError),
    /// No home or config directory to keep keys in.
    #[error("no config directory: set XDG_CONFIG_HOME or HOME")]
    NoConfigDir,
    /// The TCP connection or the SSH handshake failed or timed out.
    #[error("connecting to node {node} at {addr}")]
    Connect {
        /// Node name.
        node: String,
        /// Address dialled.
        addr: SocketAddr,
        /// The transport error (boxed: russh's error is large).
        #[source]
        source: Box<russh::Error>,
    },
    /// The TCP connection or the SSH handshake did not finish in time.
    #[error("connecting to node {node} at {addr}: no SSH handshake within {seconds} s; is the machine running and node init's SSH server listening?")]
    ConnectTimeout {
        /// Node name.
        node: String,
        /// Address dialled.
        addr: SocketAddr,
        /// The limit.
        seconds: u64,
    },
    /// The server's host key is not the one pinned for this node.
    #[error(
        "host key mismatch for node {node} at {addr}: expected {expected}, server presented {presented}; \
         refusing to connect: a machine recreated outside fks-bootstrap lacks its delivered \
         host key (recreate it with fks-bootstrap); otherwise something else answers at this \
         address and must not be trusted"
    )]
    HostKeyMismatch {
        /// Node name.
        node: String,
        /// Address dialled.
        addr: SocketAddr,
        /// Fingerprint (SHA256:...) of the pinned key.
        expected: String,
        /// Fingerprint (SHA256:...) of what the server presented.
        presented: String,
    },
    /// The server did not accept the cluster user key.
    #[error("node {node} at {addr} refused public key {fingerprint} for user {user}; was the machine created with this cluster's authorized_keys?")]
    AuthRefused {
        /// Node name.
        node: String,
        /// Address dialled.
        addr: SocketAddr,
        /// Remote user.
        user: String,
        /// Fingerprint of the key offered.
        fingerprint: String,
    },
    /// An SSH protocol operation on an open connection failed.
    #[error("{action} on node {node} at {addr}")]
    Session {
        /// Node name.
        node: String,
        /// Address.
        addr: SocketAddr,
        /// What was being done ("opening a channel", "authenticating", ...).
        action: &'static str,
        /// The protocol error (boxed: russh's error is large).
        #[source]
        source: Box<russh::Error>,
    },
    /// A command could not be turned into a remote command line.
    #[error("command {argv:?} cannot be sent to node {node}: {reason}")]
    BadCommand {
        /// Node name.
        node: String,
        /// The argv.
        argv: Vec<String>,
        /// Why.
        reason: &'static str,
    },
    /// The server declined a channel request (exec, shell, pty).
    #[error("node {node} at {addr} refused the {request} request")]
    Refused {
        /// Node name.
        node: String,
        /// Address.
        addr: SocketAddr,
        /// Which request.
        request: &'static str,
    },
    /// The local process got a terminating signal during an interactive session; the terminal
    /// was restored and the session closed.
    #[error("session with node {node} ended by local signal {signal}")]
    Interrupted {
        /// Node name.
        node: String,
        /// Signal name.
        signal: &'static str,
    },
    /// The channel closed before the server reported how the command ended.
    #[error("node {node} at {addr} closed the channel of `{command}` without an exit status")]
    NoExitStatus {
        /// Node name.
        node: String,
        /// Address.
        addr: SocketAddr,
        /// The remote command line.
        command: String,
    },
    /// A helper command (file transfer) ran but failed.
    #[error("{action} {path} on node {node}: remote command ended with {exit}: {stderr}")]
    Remote {
        /// Node name.
        node: String,
        /// "reading" or "writing".
        action: &'static str,
        /// Remote path.
        path: String,
        /// How it ended.
        exit: Exit,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// Local stdin/stdout or the terminal failed during `exec` or `shell`.
    #[error("{action} during the session with node {node}")]
    LocalIo {
        /// Node name.
        node: String,
        /// What was being done.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
