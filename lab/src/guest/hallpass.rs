//! A stand-in for Fly's own SSH server in each guest. Fly's init runs hallpass on
//! `[<own 6PN>]:22` only (reference/fly-runtime.md §1.6), so on Fly port 22 of a machine's
//! 6PN address is never the image's: the node's SSH must use another port. This stand-in
//! makes the lab behave the same way, so a product that dialled port 22 fails here as on Fly.
//!
//! It is an SSH server (russh) with its own random ed25519 host key per start that refuses
//! every authentication. Real hallpass accepts OpenSSH user certificates signed by the
//! organization's SSH CA (principals `[user, "fly"]`, issued by GraphQL `issueCertificate`,
//! §1.6); the lab has no org CA, so nobody gets in. It names itself
//! [`SERVER_ID`] so tests can tell it from the node's server; hallpass's real
//! identification string is not documented.
//!
//! It runs on a thread of its own that enters the guest's network namespace (`setns`) and
//! serves on a current-thread runtime until [`Hallpass::stop`] (or drop).

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::PrivateKey;
use russh::server::Auth;
use russh::{MethodKind, MethodSet};
use tokio::sync::oneshot;

use super::{Error, Result};

/// The identification string of the stand-in.
pub const SERVER_ID: &str = "SSH-2.0-fks-lab-hallpass-standin";
/// Fly's SSH port on the 6PN address (§1.6).
pub const PORT: u16 = 22;

/// A running stand-in; stops when dropped.
pub(crate) struct Hallpass {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hallpass {
    /// Listen on `[private_ip]:22` inside the network namespace at `netns` (its file under
    /// /run/netns). Returns once the socket is bound.
    pub(crate) fn start(machine_id: &str, netns: &Path, private_ip: Ipv6Addr) -> Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let netns: PathBuf = netns.to_owned();
        let id = machine_id.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("hallpass-{id}"))
            .spawn(move || {
                let listener = match bind_in(&netns, private_ip) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    tokio::select! {
                        () = serve(listener, &id) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|source| Error::Io {
                op: "starting the hallpass stand-in thread for",
                path: PathBuf::from(machine_id),
                source,
            })?;
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("hallpass thread ended")));
        if let Err(source) = ready {
            let _ = thread.join();
            return Err(Error::Io {
                op: "listening on port 22 of the 6PN address in",
                path: PathBuf::from(format!("/run/netns of machine {machine_id}")),
                source,
            });
        }
        Ok(Hallpass {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stop serving and close the socket (it keeps the namespace alive while open).
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Hallpass {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bind `[ip]:22` after moving this (dedicated) thread into the guest's network namespace.
fn bind_in(netns: &Path, ip: Ipv6Addr) -> std::io::Result<std::net::TcpListener> {
    let ns = std::fs::File::open(netns)?;
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(std::io::Error::from)?;
    // The 6PN address was added with `nodad`, so it is usable at once.
    let listener = std::net::TcpListener::bind(SocketAddr::V6(SocketAddrV6::new(ip, PORT, 0, 0)))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn host_key() -> PrivateKey {
    let seed: [u8; 32] = rand::random();
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

async fn serve(listener: tokio::net::TcpListener, machine_id: &str) {
    let config = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard(SERVER_ID.into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![host_key()],
        auth_rejection_time: Duration::from_millis(100),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(machine_id, error = %e, "hallpass stand-in: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tracing::debug!(machine_id, %peer, "hallpass stand-in: connection");
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            if let Ok(session) = russh::server::run_stream(config, stream, RefuseAll).await {
                let _ = session.await;
            }
        });
    }
}

/// Refuses every authentication (no org CA in the lab); opens nothing.
struct RefuseAll;

impl russh::server::Handler for RefuseAll {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> std::result::Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }
}
