//! The lab's resolver as a network service: UDP and TCP listeners (one port per address, both
//! protocols), per-message answering through `wire`, forwarding through `upstream`, graceful
//! shutdown.
//!
//! The [`Directory`] lock is a `std::sync::RwLock` taken only to compute one reply and never
//! held across `.await`. This module must not decide answers (that is `records.rs`).

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use super::records::Directory;
use super::upstream;
use super::wire::{self, Reply, Transport};
use super::{Error, Result};

/// The resolver address inside every Fly machine (reference fly-machines-api.md §7); the guest
/// runtime puts it on the lab bridge and in each guest's resolv.conf.
pub const RESOLVER_ADDR: Ipv6Addr = Ipv6Addr::new(0xfdaa, 0, 0, 0, 0, 0, 0, 3);
/// The DNS port.
pub const PORT: u16 = 53;

/// How long one upstream gets to answer a forwarded question.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// A TCP client idle this long between messages is disconnected (RFC 7766 §6.2.3).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Forwarded UDP questions in flight per socket; past it, SERVFAIL at once.
const MAX_UDP_FORWARDS: usize = 256;
/// Open TCP connections per listener; past it, new ones are closed at once.
const MAX_TCP_CONNECTIONS: usize = 128;
/// Tries to find a port free for both UDP and TCP when binding port 0.
const PORT_TRIES: usize = 32;

/// Where to listen and where to forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Addresses to listen on, each for UDP and TCP. Port 0 picks one port free for both.
    /// Bind concrete addresses: a UDP reply from a wildcard socket may leave from another
    /// source address than the client asked, and clients drop it.
    pub bind: Vec<SocketAddr>,
    /// Resolvers for names outside `.internal`; empty means those get REFUSED.
    pub upstreams: Vec<SocketAddr>,
    /// How long each upstream gets per question.
    pub forward_timeout: Duration,
}

impl Config {
    /// Listens on `bind`, answers `.internal` only (everything else REFUSED).
    pub fn new(bind: Vec<SocketAddr>) -> Self {
        Config {
            bind,
            upstreams: Vec::new(),
            forward_timeout: FORWARD_TIMEOUT,
        }
    }

    /// The lab's production setting: `[fdaa::3]:53`, forwarding to the host's /etc/resolv.conf.
    pub fn lab() -> Result<Self> {
        Config::new(vec![SocketAddr::new(RESOLVER_ADDR.into(), PORT)])
            .with_upstreams_from(Path::new("/etc/resolv.conf"))
    }

    /// Forwards to the nameservers of the resolv.conf at `path`, less the lab itself
    /// ([`upstream::upstreams`]).
    pub fn with_upstreams_from(mut self, path: &Path) -> Result<Self> {
        let nameservers = upstream::nameservers_from(path)?;
        self.upstreams = upstream::upstreams(&nameservers, &self.bind);
        Ok(self)
    }
}

/// The `.internal` resolver.
pub struct Server;

/// A running server: its addresses, and the way to stop it. Dropping it stops the server too,
/// without waiting.
pub struct Handle {
    addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What every listener task shares.
struct Shared {
    directory: Arc<RwLock<Directory>>,
    upstreams: Vec<SocketAddr>,
    forward_timeout: Duration,
}

impl Server {
    /// Binds every address of `config` (UDP and TCP) and starts answering from `directory`,
    /// which the API server updates on every machine state change.
    pub async fn start(config: Config, directory: Arc<RwLock<Directory>>) -> Result<Handle> {
        let shared = Arc::new(Shared {
            directory,
            upstreams: config.upstreams,
            forward_timeout: config.forward_timeout,
        });
        let mut sockets = Vec::with_capacity(config.bind.len());
        for addr in &config.bind {
            sockets.push(bind_pair(*addr).await?);
        }
        let (stop, _) = watch::channel(false);
        let mut addrs = Vec::with_capacity(sockets.len());
        let mut tasks = Vec::with_capacity(sockets.len() * 2);
        for (udp, tcp, addr) in sockets {
            debug!(%addr, upstreams = ?shared.upstreams, "dns listening on udp and tcp");
            addrs.push(addr);
            tasks.push(tokio::spawn(serve_udp(
                Arc::new(udp),
                shared.clone(),
                stop.subscribe(),
            )));
            tasks.push(tokio::spawn(serve_tcp(
                tcp,
                shared.clone(),
                stop.subscribe(),
            )));
        }
        Ok(Handle { addrs, stop, tasks })
    }
}

impl Handle {
    /// The bound addresses, in `Config::bind` order; each serves UDP and TCP on its port.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops listening, lets questions being answered finish, and waits for every task.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            task.await.map_err(Error::Task)?;
        }
        Ok(())
    }
}

/// Binds UDP and TCP on `addr`; for port 0, on one port free for both. Returns the sockets and
/// the address they share.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr)> {
    let udp_err = |source| Error::Bind {
        protocol: "udp",
        addr,
        source,
    };
    let tcp_err = |source| Error::Bind {
        protocol: "tcp",
        addr,
        source,
    };
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr).await.map_err(udp_err)?;
        let tcp = TcpListener::bind(addr).await.map_err(tcp_err)?;
        return Ok((udp, tcp, addr));
    }
    let mut last = None;
    for _ in 0..PORT_TRIES {
        let udp = UdpSocket::bind(addr).await.map_err(udp_err)?;
        let bound = udp.local_addr().map_err(udp_err)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            // Someone holds this port for TCP: try another UDP port.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(tcp_err(e)),
        }
    }
    Err(tcp_err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no port free for udp and tcp",
        )
    })))
}

/// Computes the reply to one message under the directory lock (released before returning).
fn reply_to(shared: &Shared, request: &[u8], peer: SocketAddr, transport: Transport) -> Reply {
    let directory = shared
        .directory
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    wire::respond(
        request,
        &directory,
        peer.ip(),
        transport,
        !shared.upstreams.is_empty(),
    )
}

/// Forwards `request` upstream; SERVFAIL bytes when no upstream answers.
async fn forwarded(shared: &Shared, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
    match upstream::forward(
        request,
        &shared.upstreams,
        transport,
        shared.forward_timeout,
    )
    .await
    {
        Ok(reply) => Some(reply),
        Err(e) => {
            warn!(error = %e, "dns forward failed, answering SERVFAIL");
            wire::error_reply(request, ResponseCode::ServFail)
        }
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    let mut forwards = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
            received = socket.recv_from(&mut buf) => {
                let (len, peer) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(error = %e, "dns udp receive failed");
                        continue;
                    }
                };
                let request = &buf[..len];
                match reply_to(&shared, request, peer, Transport::Udp) {
                    Reply::Send(bytes) => send_udp(&socket, &bytes, peer).await,
                    Reply::Forward if forwards.len() >= MAX_UDP_FORWARDS => {
                        if let Some(bytes) = wire::error_reply(request, ResponseCode::ServFail) {
                            send_udp(&socket, &bytes, peer).await;
                        }
                    }
                    Reply::Forward => {
                        let (socket, shared, request) =
                            (socket.clone(), shared.clone(), request.to_vec());
                        forwards.spawn(async move {
                            if let Some(bytes) = forwarded(&shared, &request, Transport::Udp).await {
                                send_udp(&socket, &bytes, peer).await;
                            }
                        });
                    }
                    Reply::Drop => {}
                }
            }
        }
    }
    forwards.shutdown().await;
}

async fn send_udp(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, peer).await {
        warn!(error = %e, %peer, "dns udp reply failed");
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() < MAX_TCP_CONNECTIONS => {
                    connections.spawn(serve_connection(stream, peer, shared.clone(), stop.clone()));
                }
                Ok((_, peer)) => warn!(%peer, "dns tcp connection limit reached, closing"),
                Err(e) => warn!(error = %e, "dns tcp accept failed"),
            }
        }
    }
    // Connections see the same stop signal and end after the message they are answering.
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let len = tokio::select! {
            _ = stop.changed() => return,
            len = tokio::time::timeout(TCP_IDLE, stream.read_u16()) => match len {
                Ok(Ok(len)) => len,
                // Idle, closed by the client, or broken: nothing left to answer.
                Ok(Err(_)) | Err(_) => return,
            },
        };
        let mut request = vec![0u8; usize::from(len)];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut request)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        let bytes = match reply_to(&shared, &request, peer, Transport::Tcp) {
            Reply::Send(bytes) => bytes,
            Reply::Forward => match forwarded(&shared, &request, Transport::Tcp).await {
                Some(bytes) => bytes,
                None => return,
            },
            Reply::Drop => return,
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            warn!(%peer, "dns tcp reply longer than 65535 bytes, closing");
            return;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        if let Err(e) = stream.write_all(&framed).await {
            debug!(error = %e, %peer, "dns tcp reply failed");
            return;
        }
    }
}
