//! The userspace tunnel engine: one tokio task owns a UDP socket to the gateway, boringtun's
//! WireGuard state machine (`noise::Tunn`) and a smoltcp interface holding the peer's 6PN
//! address. IP packets go smoltcp -> encapsulate -> UDP and UDP -> decapsulate -> smoltcp;
//! each TCP connection asked for is a smoltcp socket, handed to the caller as one end of a
//! `tokio::io::DuplexStream` once established. No root, no kernel interface, no system DNS.
//!
//! Like flyctl's agent (reference fly-runtime.md §5): MTU 1420, the org /48 routed into the
//! tunnel, no keepalive.
//! Must not: block the task (everything here is non-blocking), log packet contents or keys.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::Error;

/// The tunnel's MTU (flyctl's netstack and wg-quick use 1420).
pub const MTU: usize = 1420;
/// smoltcp socket buffers: large enough for a full window over a LAN-speed tunnel.
const TCP_BUFFER: usize = 1 << 20;
/// The duplex pipe between a connection and its user.
const PIPE: usize = 256 * 1024;
/// How often boringtun's timers run (handshake retries, rekeys).
const TIMER_TICK: Duration = Duration::from_millis(250);
/// How long a TCP connect through the tunnel may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connect still unanswered after this long forces a new handshake. The likeliest cause
/// through a tunnel that worked is a lost session: another process of this operator used the
/// same peer (each `fks-bootstrap` runs its own tunnel, and the gateway keeps one endpoint and
/// one current session per peer), so the gateway now answers that process. A new handshake
/// makes this process current again; smoltcp's SYN retransmit (initial RTO about 0.7 s) then
/// goes through. A server that is really down costs one extra handshake.
const NUDGE_AFTER: Duration = Duration::from_millis(500);

/// Packets between smoltcp and the tunnel.
#[derive(Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps
    }
}

/// A request to the engine.
enum Cmd {
    Connect {
        addr: SocketAddr,
        reply: oneshot::Sender<Result<DuplexStream, Error>>,
    },
}

/// One TCP connection.
struct Conn {
    handle: SocketHandle,
    addr: SocketAddr,
    /// Until established: where the caller waits, and its end of the pipe.
    waiting: Option<(oneshot::Sender<Result<DuplexStream, Error>>, DuplexStream)>,
    deadline: tokio::time::Instant,
    /// When an unanswered connect forces a new handshake ([`NUDGE_AFTER`]), once.
    nudge_at: Option<tokio::time::Instant>,
    from_user: mpsc::Receiver<Vec<u8>>,
    pending: Option<(Vec<u8>, usize)>,
    user_done: bool,
    to_user: Option<mpsc::Sender<Vec<u8>>>,
}

/// A running tunnel: cheap to clone; the engine stops when the last clone is dropped.
#[derive(Clone)]
pub struct Handle {
    cmd: mpsc::UnboundedSender<Cmd>,
    handshake: watch::Receiver<bool>,
}

/// What the engine needs.
pub struct Settings {
    /// This peer's private key.
    pub private_key: [u8; 32],
    /// The gateway's public key.
    pub gateway_key: [u8; 32],
    /// The gateway's UDP address.
    pub endpoint: SocketAddr,
    /// This peer's 6PN address.
    pub peerip: Ipv6Addr,
}

impl Handle {
    /// Starts the engine (a spawned task) and sends the first handshake.
    pub async fn start(s: Settings) -> Result<Handle, Error> {
        let bind: SocketAddr = match s.endpoint {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let udp = UdpSocket::bind(bind).await.map_err(|e| Error::Udp {
            endpoint: s.endpoint,
            message: e.to_string(),
        })?;
        udp.connect(s.endpoint).await.map_err(|e| Error::Udp {
            endpoint: s.endpoint,
            message: e.to_string(),
        })?;
        let tunn = Tunn::new(
            x25519_dalek::StaticSecret::from(s.private_key),
            x25519_dalek::PublicKey::from(s.gateway_key),
            None,
            None,
            rand::random::<u32>() >> 8,
            None,
        );
        let mut queues = Queues::default();
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut queues,
            smoltcp::time::Instant::now(),
        );
        iface.update_ip_addrs(|addrs| {
            // The whole of fdaa::/16 (6PN) is reached through the tunnel.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(s.peerip), 16));
        });
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (hs_tx, handshake) = watch::channel(false);
        let engine = Engine {
            udp,
            endpoint: s.endpoint,
            tunn,
            iface,
            queues,
            sockets: SocketSet::new(Vec::new()),
            conns: Vec::new(),
            cmd_rx,
            notify: Arc::new(Notify::new()),
            handshake: hs_tx,
            buf: vec![0u8; 65536 + 64],
            out: vec![0u8; 65536 + 64],
        };
        tokio::spawn(engine.run());
        Ok(Handle { cmd, handshake })
    }

    /// Waits until the WireGuard handshake with the gateway completed, at most `limit`.
    pub async fn handshake(&self, limit: Duration) -> bool {
        let mut rx = self.handshake.clone();
        tokio::time::timeout(limit, rx.wait_for(|done| *done))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A TCP connection to `addr` through the tunnel.
    pub async fn connect(&self, addr: SocketAddr) -> Result<DuplexStream, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Connect { addr, reply })
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }
}

struct Engine {
    udp: UdpSocket,
    endpoint: SocketAddr,
    tunn: Tunn,
    iface: Interface,
    queues: Queues,
    sockets: SocketSet<'static>,
    conns: Vec<Conn>,
    cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    notify: Arc<Notify>,
    handshake: watch::Sender<bool>,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Engine {
    async fn run(mut self) {
        self.initiate(false).await;
        let mut tick = tokio::time::interval(TIMER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_initiation = tokio::time::Instant::now();
        loop {
            self.pump().await;
            let delay = self
                .iface
                .poll_delay(smoltcp::time::Instant::now(), &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(Duration::from_secs(1));
            let notify = self.notify.clone();
            tokio::select! {
                r = self.udp.recv(&mut self.buf) => match r {
                    Ok(n) => self.incoming(n).await,
                    Err(e) => tracing::debug!(error = %e, "tunnel udp receive"),
                },
                c = self.cmd_rx.recv() => match c {
                    Some(Cmd::Connect { addr, reply }) => self.open(addr, reply),
                    // Every handle is gone: close down.
                    None if self.conns.is_empty() => return,
                    None => {}
                },
                _ = notify.notified() => {}
                _ = tick.tick() => {
                    self.timers().await;
                    // Until the first handshake, retry it every second (boringtun waits 5 s).
                    if !*self.handshake.borrow() && last_initiation.elapsed() >= Duration::from_secs(1) {
                        last_initiation = tokio::time::Instant::now();
                        self.initiate(true).await;
                    }
                }
                _ = tokio::time::sleep(delay) => {}
            }
            if self.cmd_rx.is_closed() && self.conns.is_empty() {
                return;
            }
        }
    }

    async fn send(&self, packet: &[u8]) {
        if let Err(e) = self.udp.send(packet).await {
            tracing::debug!(error = %e, endpoint = %self.endpoint, "tunnel udp send");
        }
    }

    async fn initiate(&mut self, force: bool) {
        let mut out = std::mem::take(&mut self.out);
        if let TunnResult::WriteToNetwork(p) =
            self.tunn.format_handshake_initiation(&mut out, force)
        {
            self.send(p).await;
        }
        self.out = out;
    }

    async fn timers(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        match self.tunn.update_timers(&mut out) {
            TunnResult::WriteToNetwork(p) => self.send(p).await,
            TunnResult::Err(e) => tracing::debug!(error = ?e, "tunnel timers"),
            _ => {}
        }
        self.out = out;
    }

    /// A datagram from the gateway.
    async fn incoming(&mut self, n: usize) {
        let mut out = std::mem::take(&mut self.out);
        let buf = std::mem::take(&mut self.buf);
        let mut datagram: &[u8] = &buf[..n];
        loop {
            match self
                .tunn
                .decapsulate(Some(self.endpoint.ip()), datagram, &mut out)
            {
                TunnResult::WriteToNetwork(p) => {
                    self.send(p).await;
                    // Flush what boringtun queued during the handshake.
                    datagram = &[];
                    continue;
                }
                TunnResult::WriteToTunnelV6(p, _) => self.queues.rx.push_back(p.to_vec()),
                TunnResult::WriteToTunnelV4(p, _) => self.queues.rx.push_back(p.to_vec()),
                TunnResult::Err(e) => tracing::debug!(error = ?e, "tunnel decapsulate"),
                TunnResult::Done => {}
            }
            break;
        }
        if self.tunn.time_since_last_handshake().is_some() {
            self.handshake
                .send_if_modified(|done| !std::mem::replace(done, true));
        }
        self.buf = buf;
        self.out = out;
    }

    fn open(&mut self, addr: SocketAddr, reply: oneshot::Sender<Result<DuplexStream, Error>>) {
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        );
        sock.set_nagle_enabled(false);
        let port = 10_000 + rand::random::<u16>() % 50_000;
        let remote = match addr.ip() {
            IpAddr::V6(ip) => IpAddress::Ipv6(ip),
            IpAddr::V4(_) => {
                let _ = reply.send(Err(Error::NotSixPn { addr }));
                return;
            }
        };
        if let Err(e) = sock.connect(self.iface.context(), (remote, addr.port()), port) {
            let _ = reply.send(Err(Error::Connect {
                addr,
                message: e.to_string(),
            }));
            return;
        }
        let handle = self.sockets.add(sock);
        let (user, engine_end) = tokio::io::duplex(PIPE);
        let (mut r, mut w) = tokio::io::split(engine_end);
        let (from_tx, from_user) = mpsc::channel::<Vec<u8>>(16);
        let (to_user, mut to_rx) = mpsc::channel::<Vec<u8>>(16);
        let n1 = self.notify.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if from_tx.send(buf[..n].to_vec()).await.is_err() {
                            break;
                        }
                        n1.notify_one();
                    }
                }
            }
            drop(from_tx);
            n1.notify_one();
        });
        let n2 = self.notify.clone();
        tokio::spawn(async move {
            while let Some(chunk) = to_rx.recv().await {
                // Room in the channel again: let the engine move more.
                n2.notify_one();
                if w.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        self.conns.push(Conn {
            handle,
            addr,
            waiting: Some((reply, user)),
            deadline: tokio::time::Instant::now() + CONNECT_TIMEOUT,
            nudge_at: Some(tokio::time::Instant::now() + NUDGE_AFTER),
            from_user,
            pending: None,
            user_done: false,
            to_user: Some(to_user),
        });
    }

    /// Runs smoltcp and moves data until nothing moves, then sends what it produced.
    async fn pump(&mut self) {
        for _ in 0..64 {
            let now = smoltcp::time::Instant::now();
            self.iface.poll(now, &mut self.queues, &mut self.sockets);
            let (moved, nudge) = self.service();
            if nudge {
                tracing::debug!("a connect through the tunnel is unanswered: new handshake");
                self.initiate(true).await;
            }
            self.iface.poll(now, &mut self.queues, &mut self.sockets);
            let sent = !self.queues.tx.is_empty();
            self.flush().await;
            if !moved && !sent && self.queues.rx.is_empty() {
                break;
            }
        }
    }

    async fn flush(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        while let Some(p) = self.queues.tx.pop_front() {
            match self.tunn.encapsulate(&p, &mut out) {
                TunnResult::WriteToNetwork(d) => self.send(d).await,
                TunnResult::Err(e) => tracing::debug!(error = ?e, "tunnel encapsulate"),
                _ => {}
            }
        }
        self.out = out;
    }

    /// Moves bytes between sockets and users: whether anything moved, and whether a connect
    /// waited [`NUDGE_AFTER`] (time for a new handshake).
    fn service(&mut self) -> (bool, bool) {
        let mut moved = false;
        let mut nudge = false;
        let now = tokio::time::Instant::now();
        let mut i = 0;
        while i < self.conns.len() {
            let c = &mut self.conns[i];
            let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
            if c.waiting.is_some() {
                let state = sock.state();
                let failed = match state {
                    tcp::State::Established => None,
                    tcp::State::Closed | tcp::State::TimeWait => Some("connection refused"),
                    _ if now >= c.deadline => Some("timed out"),
                    _ => {
                        if c.nudge_at.is_some_and(|at| now >= at) {
                            c.nudge_at = None;
                            nudge = true;
                        }
                        i += 1;
                        continue;
                    }
                };
                if let Some((reply, user)) = c.waiting.take() {
                    match failed {
                        None => {
                            let _ = reply.send(Ok(user));
                        }
                        Some(why) => {
                            let _ = reply.send(Err(Error::Connect {
                                addr: c.addr,
                                message: why.to_string(),
                            }));
                            sock.abort();
                            self.sockets.remove(c.handle);
                            self.conns.swap_remove(i);
                            continue;
                        }
                    }
                }
                moved = true;
            }
            // User -> socket.
            while sock.can_send() {
                if c.pending.is_none() {
                    match c.from_user.try_recv() {
                        Ok(v) => c.pending = Some((v, 0)),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            if !c.user_done {
                                c.user_done = true;
                                sock.close();
                                moved = true;
                            }
                            break;
                        }
                    }
                }
                if let Some((v, off)) = &mut c.pending {
                    match sock.send_slice(&v[*off..]) {
                        Ok(n) if n > 0 => {
                            *off += n;
                            moved = true;
                        }
                        _ => break,
                    }
                    if *off >= v.len() {
                        c.pending = None;
                    }
                }
            }
            // Socket -> user.
            if let Some(tx) = &c.to_user {
                while sock.can_recv() {
                    let Ok(permit) = tx.try_reserve() else { break };
                    let mut chunk = vec![0u8; 64 * 1024];
                    match sock.recv_slice(&mut chunk) {
                        Ok(n) if n > 0 => {
                            chunk.truncate(n);
                            permit.send(chunk);
                            moved = true;
                        }
                        _ => break,
                    }
                }
                if !sock.may_recv() && !sock.can_recv() {
                    // The remote closed its side: end the user's reads.
                    c.to_user = None;
                    moved = true;
                }
            }
            if sock.state() == tcp::State::Closed && c.to_user.is_none() {
                self.sockets.remove(c.handle);
                self.conns.swap_remove(i);
                continue;
            }
            if sock.state() == tcp::State::Closed && c.user_done {
                c.to_user = None;
            }
            i += 1;
        }
        (moved, nudge)
    }
}
