//! How this machine reaches 6PN: directly (it is on 6PN, or a kernel WireGuard tunnel such as
//! `wg-quick` routes the org's /48) or through the built-in userspace tunnel. One decision for
//! every command that talks to a node (`ssh`, `proxy`, `kubectl`): a quick TCP probe of node
//! addresses; any answer means direct.
//!
//! Must not: pick the tunnel when a probe answered (a kernel tunnel always wins, issue 12), or
//! open the tunnel itself (the caller does, with its peer and token).

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Error, Tunnel};

/// How long the reachability probe of a 6PN address waits for a TCP connect: over a
/// WireGuard tunnel a connect takes a round trip of well under a second.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A byte stream to a node, whichever way it goes.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection to a node.
pub type Stream = Pin<Box<dyn Io>>;

/// The way into 6PN.
#[derive(Debug, Clone)]
pub enum Route {
    /// The host's own network reaches 6PN.
    Direct,
    /// Through the built-in userspace WireGuard tunnel.
    Tunnel(Tunnel),
}

impl Route {
    /// A TCP connection to `addr`, given up after `timeout`.
    pub async fn dial(&self, addr: SocketAddr, timeout: Duration) -> Result<Stream, Error> {
        let timed_out = || Error::Connect {
            addr,
            message: format!("no answer within {}ms", timeout.as_millis()),
        };
        match self {
            Route::Direct => {
                let s = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| Error::Connect {
                        addr,
                        message: e.to_string(),
                    })?;
                // Small API requests should not wait for Nagle.
                let _ = s.set_nodelay(true);
                Ok(Box::pin(s))
            }
            Route::Tunnel(t) => {
                let s =
                    tokio::time::timeout(timeout, t.connect(&addr.ip().to_string(), addr.port()))
                        .await
                        .map_err(|_| timed_out())??;
                Ok(Box::pin(s))
            }
        }
    }

    /// `direct` or `tunnel (peer NAME)`, for logs.
    pub fn describe(&self) -> String {
        match self {
            Route::Direct => "direct (this host reaches 6PN)".to_string(),
            Route::Tunnel(t) => format!("the built-in WireGuard tunnel (peer {})", t.peer().name),
        }
    }
}

/// Whether a TCP connect to `addr` gets an answer within [`PROBE_TIMEOUT`]: accepted, or
/// refused (the host answered, so 6PN reaches it). A timeout or an unreachable network means
/// this machine has no route to 6PN.
pub async fn reachable(addr: SocketAddr) -> bool {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Err(_) => false,
    }
}

/// Whether any of `addrs` is [`reachable`], probing them all at once (one stopped node must
/// not make a host on 6PN look like it is off it).
pub async fn any_reachable(addrs: &[SocketAddr]) -> bool {
    let mut probes = tokio::task::JoinSet::new();
    for a in addrs {
        probes.spawn(reachable(*a));
    }
    while let Some(r) = probes.join_next().await {
        if r.unwrap_or(false) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connect_counts_as_reachable_and_no_route_does_not() {
        // A port nothing listens on: the host answers with a refusal, so it is reachable.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        assert!(reachable(addr).await);
        let open = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        assert!(reachable(open.local_addr().expect("addr")).await);
        // The IPv6 discard prefix (RFC 6666) is never answered: no route, or no answer within
        // the probe's time.
        let started = std::time::Instant::now();
        let nowhere: SocketAddr = "[100::1]:22".parse().expect("addr");
        assert!(!reachable(nowhere).await);
        assert!(started.elapsed() < PROBE_TIMEOUT + Duration::from_secs(1));
        // One answer among silent addresses is enough, and the probes run at once.
        let started = std::time::Instant::now();
        assert!(any_reachable(&[nowhere, "[100::2]:22".parse().expect("addr"), addr]).await);
        assert!(!any_reachable(&[nowhere, "[100::2]:22".parse().expect("addr")]).await);
        assert!(started.elapsed() < 2 * PROBE_TIMEOUT + Duration::from_secs(1));
        assert!(!any_reachable(&[]).await);
    }

    #[tokio::test]
    async fn direct_dial_connects_and_a_silent_address_times_out_quickly() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = open.local_addr().expect("addr");
        Route::Direct
            .dial(addr, Duration::from_secs(1))
            .await
            .expect("connects");
        let started = std::time::Instant::now();
        let e = Route::Direct
            .dial(
                "[100::1]:6443".parse().expect("addr"),
                Duration::from_millis(300),
            )
            .await
            .err()
            .expect("no route");
        assert!(e.to_string().contains("[100::1]:6443"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
