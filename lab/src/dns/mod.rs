//! The lab's `.internal` DNS: Fly's resolver at `fdaa::3` (reference fly-machines-api.md §7,
//! §8.13), answering AAAA and TXT names for the lab's started machines with TTL 5 s and
//! forwarding other names to the host's resolvers.
//!
//! - `records`: the record set and the answering rules (pure; its module comment lists the
//!   decisions Fly leaves open: NXDOMAIN vs NODATA, TXT layouts, "nearest" order).
//! - `wire`: DNS messages in and out (pure).
//! - `upstream`: which resolvers to forward to, and forwarding.
//! - `server`: UDP and TCP listeners, graceful shutdown.
//!
//! The API server owns the machines; it keeps an `Arc<RwLock<Directory>>` shared with the
//! [`Server`] up to date on every state change. This module must not read or change the API
//! server's state itself.

mod records;
mod server;
mod upstream;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use records::{is_internal, Answer, Data, Directory, Machine, Qtype, Rcode, TTL};
pub use server::{Config, Handle, Server, PORT, RESOLVER_ADDR};
pub use upstream::{nameservers, upstreams};

/// Errors of the lab's DNS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listening socket could not be bound.
    #[error("binding dns {protocol} socket on {addr}")]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The resolv.conf naming the upstream resolvers could not be read.
    #[error("reading resolver config {path}")]
    ReadResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Talking to an upstream resolver failed.
    #[error("forwarding to upstream resolver {upstream} over {protocol}")]
    Forward {
        upstream: SocketAddr,
        protocol: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An upstream resolver did not answer in time.
    #[error("upstream resolver {upstream} did not answer within {timeout:?}")]
    ForwardTimeout {
        upstream: SocketAddr,
        timeout: Duration,
    },
    /// Forwarding was asked for with no upstream configured.
    #[error("no upstream resolver configured")]
    NoUpstream,
    /// A listener task panicked or was cancelled.
    #[error("dns listener task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Result of the DNS module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
