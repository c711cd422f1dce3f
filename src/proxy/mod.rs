//! The local Kubernetes API proxy (`fks-bootstrap proxy`, and `kubectl` in-process): accepts
//! TCP on a local address and forwards each connection, bytes only, to port 6443 of one
//! control-plane server over a [`Route`] (direct, or the built-in WireGuard tunnel). TLS stays
//! end to end between kubectl and k3s; k3s's serving certificate carries `127.0.0.1`
//! (reference/k3s.md §4 "tls-san / SANs"), so a kubeconfig for `https://127.0.0.1:PORT`
//! verifies against the cluster CA.
//!
//! Failover: each new connection goes to the server that answered last; a connect that fails
//! or takes longer than [`CONNECT_TIMEOUT`] marks it and the next one is tried at once
//! (`pick`). Established connections are not moved (a stopped server closes them; kubectl
//! retries). Which servers exist comes from outside ([`Proxy::set_servers`]); when every
//! known server fails, [`Proxy::wants_refresh`] is notified.
//! Must not: look into the bytes (no TLS termination), or hold the picker's lock across an
//! `.await`.

pub mod pick;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use pick::{Change, Picker, Server};

use crate::tunnel::route::Stream;
use crate::tunnel::Route;

/// The Kubernetes API port of a k3s server (reference/k3s.md; `https-listen-port`).
pub const API_PORT: u16 = 6443;
/// The local port `proxy` listens on by default, and `kubeconfig --tunnel` points at: k3s's
/// 6443 with a 1 in front, free on most machines and easy to recognise.
pub const DEFAULT_PORT: u16 = 16443;
/// How long one connect to a server may take before the next server is tried. A connect is
/// one round trip (well under a second over a WireGuard tunnel); a stopped server never
/// answers, so this bounds how long the first connection after a failure waits.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the proxy could not forward a connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No server is known (the cluster has no started server right now).
    #[error("no started Kubernetes API server is known")]
    NoServers,
    /// Every known server was tried and none answered.
    #[error("no Kubernetes API server answered: {tried}")]
    NoAnswer {
        /// `node [addr]: why` for each server tried, separated by `; `.
        tried: String,
    },
}

/// The proxy's shared state: the route, and which server to use.
pub struct Proxy {
    route: Route,
    picker: Mutex<Picker>,
    refresh: Notify,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("route", &self.route).finish()
    }
}

impl Proxy {
    /// A proxy to `servers` over `route`, with [`CONNECT_TIMEOUT`].
    pub fn new(route: Route, servers: Vec<Server>) -> Arc<Proxy> {
        Proxy::with_timeout(route, servers, CONNECT_TIMEOUT)
    }

    /// The same with another connect timeout.
    pub fn with_timeout(
        route: Route,
        servers: Vec<Server>,
        connect_timeout: Duration,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            route,
            picker: Mutex::new(Picker::new(servers)),
            refresh: Notify::new(),
            connect_timeout,
        })
    }

    /// The route in use.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Replaces the known servers (a refresh of the cluster's started servers).
    pub fn set_servers(&self, servers: Vec<Server>) {
        self.lock().set_servers(servers);
    }

    /// The servers known now.
    pub fn servers(&self) -> Vec<Server> {
        self.lock().servers().to_vec()
    }

    /// Notified when no known server answered: the caller should look the servers up again.
    pub fn wants_refresh(&self) -> &Notify {
        &self.refresh
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Picker> {
        // A panic while holding the lock leaves a picker that is still consistent (each
        // method is a few assignments), so a poisoned lock is used as is.
        self.picker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection to a server's API: the current one, else the next that answers.
    pub async fn connect(&self) -> Result<(Server, Stream), Error> {
        let order = self.lock().order(Instant::now());
        if order.is_empty() {
            self.refresh.notify_one();
            return Err(Error::NoServers);
        }
        let mut tried = Vec::new();
        for server in order {
            match self.route.dial(server.addr, self.connect_timeout).await {
                Ok(stream) => {
                    let change = self.lock().connected(&server.name);
                    match change {
                        Change::Same => {}
                        Change::First => tracing::info!(
                            "forwarding to the Kubernetes API of {} ({}) via {}",
                            server.name,
                            server.addr,
                            self.route.describe()
                        ),
                        Change::Switched { from } => tracing::warn!(
                            "{from} stopped answering: forwarding to the Kubernetes API of {} ({}) now",
                            server.name,
                            server.addr
                        ),
                    }
                    return Ok((server, stream));
                }
                Err(e) => {
                    tracing::warn!(server = %server.name, error = %e, "the Kubernetes API server did not answer; trying the next one");
                    self.lock().failed(&server.name, Instant::now());
                    tried.push(format!("{}: {e}", server.name));
                }
            }
        }
        self.refresh.notify_one();
        Err(Error::NoAnswer {
            tried: tried.join("; "),
        })
    }

    /// Accepts connections on `listener` and forwards each one until `shutdown` completes.
    /// Connections still open then are dropped with the runtime.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((conn, peer)) => {
                        let proxy = self.clone();
                        tokio::spawn(async move { proxy.forward(conn, peer).await });
                    }
                    // Out of file descriptors and the like: wait a little, keep serving.
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a local connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    async fn forward(&self, mut conn: tokio::net::TcpStream, peer: SocketAddr) {
        let _ = conn.set_nodelay(true);
        let (server, mut upstream) = match self.connect().await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(client = %peer, error = %e, "dropping the local connection");
                return;
            }
        };
        match tokio::io::copy_bidirectional(&mut conn, &mut upstream).await {
            Ok((up, down)) => {
                tracing::debug!(client = %peer, server = %server.name, up, down, "connection closed")
            }
            Err(e) => {
                tracing::debug!(client = %peer, server = %server.name, error = %e, "connection ended")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every connection with its name.
    async fn named(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let _ = c.write_all(name.as_bytes()).await;
            }
        });
        (addr, task)
    }

    async fn read_all(addr: SocketAddr) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut s = String::new();
        let _ = c.read_to_string(&mut s).await;
        s
    }

    #[tokio::test]
    async fn connections_fail_over_when_the_server_goes_away_and_stay_there() {
        let (a, task_a) = named("ctrl-0").await;
        let (b, _task_b) = named("ctrl-1").await;
        let servers = vec![
            Server {
                name: "ctrl-0".into(),
                addr: a,
                ready: true,
            },
            Server {
                name: "ctrl-1".into(),
                addr: b,
                ready: true,
            },
        ];
        let proxy = Proxy::with_timeout(Route::Direct, servers, Duration::from_millis(500));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let local = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve = tokio::spawn(proxy.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        assert_eq!(read_all(local).await, "ctrl-0");
        assert_eq!(read_all(local).await, "ctrl-0");
        // ctrl-0's API goes away: the next connection goes to ctrl-1, and so do later ones.
        task_a.abort();
        let _ = task_a.await;
        let started = std::time::Instant::now();
        assert_eq!(read_all(local).await, "ctrl-1");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(read_all(local).await, "ctrl-1");
        let _ = stop.send(());
        serve.await.expect("serve");
    }

    #[tokio::test]
    async fn no_answer_names_every_server_tried_and_asks_for_a_refresh() {
        let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = gone.local_addr().expect("addr");
        drop(gone);
        let silent: SocketAddr = "[100::1]:6443".parse().expect("addr");
        let proxy = Proxy::with_timeout(
            Route::Direct,
            vec![
                Server {
                    name: "ctrl-0".into(),
                    addr,
                    ready: true,
                },
                Server {
                    name: "ctrl-1".into(),
                    addr: silent,
                    ready: true,
                },
            ],
            Duration::from_millis(300),
        );
        let refresh = proxy.wants_refresh().notified();
        tokio::pin!(refresh);
        refresh.as_mut().enable();
        let e = proxy.connect().await.err().expect("nothing answers");
        let text = e.to_string();
        assert!(
            text.contains("ctrl-0: ") && text.contains("ctrl-1: "),
            "{text}"
        );
        assert!(text.contains("[100::1]:6443"), "{text}");
        tokio::time::timeout(Duration::from_secs(1), refresh)
            .await
            .expect("refresh asked for");
        proxy.set_servers(vec![]);
        assert!(matches!(proxy.connect().await, Err(Error::NoServers)));
    }
}
