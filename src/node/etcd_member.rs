//! Before k3s starts on a server: make its etcd member's peer URL follow the machine's 6PN
//! address when the address changed since k3s last ran (a Fly host migration; see
//! `addresses` "When the address changes" for why k3s cannot do this itself).
//!
//! [`decide`] is pure; [`follow`] does the DNS lookup and the etcd calls (`crate::etcd`) and
//! logs what it did. It never stops the boot: whatever happens, k3s is started afterwards, and
//! a member left with a stale peer URL shows in k3s's own log ("this server is a not a member
//! of the etcd cluster").

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::etcd::{self, Client, Tls};

/// The file, in the k3s data dir, that holds the 6PN address etcd last ran with as
/// `https://[addr]:2380`'s address. Written by node init, not by k3s.
pub const RECORD_FILE: &str = "fks-etcd-peer-address";

/// What to do before k3s starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No etcd member on disk yet: k3s creates it with the current address.
    Fresh,
    /// The member last ran with this address: nothing to do.
    Unchanged,
    /// The address changed (or was never recorded): check the member list through a peer and
    /// update the member's peer URL if it differs.
    Check {
        /// The address recorded at the last boot, if any.
        previous: Option<Ipv6Addr>,
    },
}

/// Pure: the step for a server whose data dir `initialized` holds an etcd member, given the
/// address recorded at the last boot and this boot's.
pub fn decide(initialized: bool, recorded: Option<Ipv6Addr>, current: Ipv6Addr) -> Decision {
    if !initialized {
        Decision::Fresh
    } else if recorded == Some(current) {
        Decision::Unchanged
    } else {
        Decision::Check { previous: recorded }
    }
}

/// What the check through the peers found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No member yet, or the address did not change.
    NothingToDo,
    /// The member already had the current peer URL.
    AlreadyRight { peer: IpAddr },
    /// The member's peer URL was updated through `peer`.
    Updated { peer: IpAddr, from: Vec<String> },
    /// A peer answered but has no member by this name: it was removed from the cluster.
    NotAMember { peer: IpAddr },
    /// No peer answered (none found, none reachable, or no quorum).
    NoPeer { tried: Vec<String> },
}

fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join(RECORD_FILE)
}

fn read_record(data_dir: &Path) -> Option<Ipv6Addr> {
    std::fs::read_to_string(record_path(data_dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn write_record(data_dir: &Path, addr: Ipv6Addr) {
    let path = record_path(data_dir);
    if let Err(e) = super::write::replace(&path, format!("{addr}\n").as_bytes(), 0o644) {
        warn!(
            "etcd: could not record the address in {}: {}",
            path.display(),
            super::chain(&e)
        );
    }
}

/// The peers' 6PN addresses from `<cp_app>.internal` (AAAA; Fly's DNS lists started machines,
/// reference fly-runtime.md), without this machine's current and previous address.
async fn peers(cp_app: &str, current: Ipv6Addr, previous: Option<Ipv6Addr>) -> Vec<IpAddr> {
    let name = format!("{cp_app}.internal:{}", etcd::CLIENT_PORT);
    let found: Vec<SocketAddr> = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::lookup_host(name.clone()),
    )
    .await
    {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            warn!("etcd: looking up {name}: {e}");
            Vec::new()
        }
        Err(_) => {
            warn!("etcd: looking up {name}: no answer in 10s");
            Vec::new()
        }
    };
    let mut out: Vec<IpAddr> = Vec::new();
    for a in found {
        let ip = a.ip();
        let own = ip == IpAddr::V6(current) || previous.is_some_and(|p| ip == IpAddr::V6(p));
        if ip.is_ipv6() && !own && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Look the member up through each peer in turn and set its peer URL to `want`.
async fn check(peers: &[IpAddr], tls: &Tls, name: &str, want: &str) -> Outcome {
    let mut tried = Vec::new();
    for &peer in peers {
        let endpoint = etcd::url(peer, etcd::CLIENT_PORT);
        let result = async {
            let c = Client::new(&endpoint, tls, Duration::from_secs(10))?;
            let members = c.member_list().await?;
            let Some(m) = etcd::by_name(&members, name) else {
                return Ok(Outcome::NotAMember { peer });
            };
            if m.peer_urls == [want] {
                return Ok(Outcome::AlreadyRight { peer });
            }
            c.member_update(m.id, &[want.to_owned()]).await?;
            Ok::<_, etcd::Error>(Outcome::Updated {
                peer,
                from: m.peer_urls.clone(),
            })
        }
        .await;
        match result {
            Ok(o) => return o,
            Err(e) => {
                warn!("etcd: {}", super::chain(&e));
                tried.push(endpoint);
            }
        }
    }
    Outcome::NoPeer { tried }
}

/// Run the step for a server with 6PN address `current` and k3s data dir `data_dir`;
/// `bootstrap` says whether this is the `cluster-init` server. Logs what it does.
pub fn follow(cp_app: &str, data_dir: &Path, current: Ipv6Addr, bootstrap: bool) -> Outcome {
    let recorded = read_record(data_dir);
    let previous = match decide(etcd::is_initialized(data_dir), recorded, current) {
        Decision::Fresh => {
            info!(
                "etcd: no member on disk yet; k3s creates it with peer URL {}",
                etcd::url(current.into(), etcd::PEER_PORT)
            );
            write_record(data_dir, current);
            return Outcome::NothingToDo;
        }
        Decision::Unchanged => {
            info!("etcd: the member last ran on {current}, this boot's address; nothing to update");
            return Outcome::NothingToDo;
        }
        Decision::Check { previous } => previous,
    };
    let want = etcd::url(current.into(), etcd::PEER_PORT);
    let name = match std::fs::read_to_string(etcd::name_file(data_dir)) {
        Ok(n) => n.trim().to_owned(),
        Err(e) => {
            warn!(
                "etcd: {}: {e}; cannot check the member's peer URL",
                etcd::name_file(data_dir).display()
            );
            return Outcome::NoPeer { tried: Vec::new() };
        }
    };
    match previous {
        Some(p) => info!("etcd: this machine's 6PN address changed from {p} to {current}; member {name} must move its peer URL to {want} before k3s starts"),
        None => info!("etcd: no address recorded for member {name}; checking that its peer URL is {want}"),
    }
    let tls = match Tls::from_k3s_data_dir(data_dir) {
        Ok(t) => t,
        Err(e) => {
            warn!("etcd: {}", super::chain(&e));
            return Outcome::NoPeer { tried: Vec::new() };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            warn!("etcd: starting an async runtime: {e}");
            return Outcome::NoPeer { tried: Vec::new() };
        }
    };
    let outcome = runtime.block_on(async {
        // A peer may itself be starting (Fly restarts machines one at a time, but the DNS
        // answer can lag); try for a minute before giving up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let found = peers(cp_app, current, previous).await;
            let o = check(&found, &tls, &name, &want).await;
            match o {
                Outcome::NoPeer { .. } if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                o => return o,
            }
        }
    });
    match &outcome {
        Outcome::AlreadyRight { peer } => {
            info!("etcd: member {name} already has peer URL {want} (checked through {peer})");
            write_record(data_dir, current);
        }
        Outcome::Updated { peer, from } => {
            info!("etcd: member {name} peer URL updated from {} to {want} through {peer}", from.join(","));
            write_record(data_dir, current);
        }
        Outcome::NotAMember { peer } if !bootstrap => {
            // k3s's guidance for a server whose member is gone: delete its db and rejoin.
            let db = data_dir.join("server").join("db");
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let aside = data_dir.join("server").join(format!("db.fks-removed-{stamp}"));
            match std::fs::rename(&db, &aside) {
                Ok(()) => info!(
                    "etcd: {peer} has no member {name} (it was removed); moved {} to {} so k3s joins again as a new member",
                    db.display(),
                    aside.display()
                ),
                Err(e) => error!("etcd: {peer} has no member {name}; moving {} aside failed: {e}", db.display()),
            }
        }
        Outcome::NotAMember { peer } => error!(
            "etcd: {peer} has no member {name}, and this is the cluster-init server: not moving its data aside (that would start a second, empty cluster); replace this server instead"
        ),
        Outcome::NoPeer { tried } => error!(
            "etcd: no peer could update member {name} (tried: {}); without quorum the remedy is `k3s server --cluster-reset` on one server, which node init does not do (not built); starting k3s, which waits for its member",
            if tried.is_empty() { "none found".to_owned() } else { tried.join(", ") }
        ),
        Outcome::NothingToDo => {}
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_member_on_disk_with_a_new_or_unknown_address_is_checked() {
        let a: Ipv6Addr = "fdaa::2".parse().unwrap();
        let b: Ipv6Addr = "fdaa::9".parse().unwrap();
        assert_eq!(decide(false, Some(a), b), Decision::Fresh);
        assert_eq!(decide(true, Some(a), a), Decision::Unchanged);
        assert_eq!(
            decide(true, Some(a), b),
            Decision::Check { previous: Some(a) }
        );
        assert_eq!(decide(true, None, b), Decision::Check { previous: None });
    }

    #[test]
    fn a_fresh_server_records_its_address_and_an_unchanged_one_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a: Ipv6Addr = "fdaa::2".parse().unwrap();
        assert_eq!(follow("c-cp", dir.path(), a, true), Outcome::NothingToDo);
        assert_eq!(read_record(dir.path()), Some(a));
        std::fs::create_dir_all(dir.path().join("server/db/etcd/member/wal")).unwrap();
        assert_eq!(follow("c-cp", dir.path(), a, true), Outcome::NothingToDo);
    }
}
