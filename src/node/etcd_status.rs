//! `fks-bootstrap node etcd members`: what a server's embedded etcd says about its members,
//! asked on the server itself (the operator cannot reach port 2379 without 6PN). The member
//! list comes from the local member (`https://127.0.0.1:2379`, where k3s's own client talks);
//! each member's health (etcd's `/health`, a quorum read) and its view of the leader
//! (`/v3/maintenance/status`) from that member's own client URL, with the k3s client
//! certificate (`crate::etcd`).
//!
//! The answer is [`crate::status::MembersReport`], read by `status` on the operator side.
//! Must not: change the cluster (reads only).

use std::path::Path;
use std::time::Duration;

use crate::etcd::{self, Client, Tls};
use crate::status::{MemberHealth, MembersReport};

/// How long each etcd call may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The local member's client URL: loopback, as k3s's own etcd client uses.
pub fn local_endpoint() -> String {
    etcd::url(std::net::IpAddr::from([127, 0, 0, 1]), etcd::CLIENT_PORT)
}

/// The member list through `endpoint` (the local member: [`local_endpoint`]), then each
/// member's health through its own client URL. Fails only when the list itself cannot be read
/// (no TLS material, etcd down or without quorum); a member that does not answer is reported
/// unhealthy with the reason.
pub async fn members(k3s_data_dir: &Path, endpoint: &str) -> Result<MembersReport, etcd::Error> {
    let tls = Tls::from_k3s_data_dir(k3s_data_dir)?;
    let endpoint = endpoint.to_string();
    let local = Client::new(&endpoint, &tls, TIMEOUT)?;
    let list = local.member_list().await?;
    let checks = list.iter().map(|m| check(&tls, m));
    let members = futures_util::future::join_all(checks).await;
    Ok(MembersReport { endpoint, members })
}

async fn check(tls: &Tls, m: &etcd::Member) -> MemberHealth {
    let mut out = MemberHealth {
        id: format!("{:x}", m.id),
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
        learner: m.is_learner,
        leader: false,
        healthy: false,
        error: None,
    };
    let Some(url) = m.client_urls.first() else {
        out.error = Some("not started (no client URL published)".to_string());
        return out;
    };
    let result = async {
        let c = Client::new(url, tls, TIMEOUT)?;
        c.health().await?;
        c.status().await
    }
    .await;
    match result {
        Ok(status) => {
            out.healthy = true;
            out.leader = status.leader == m.id;
        }
        Err(e) => out.error = Some(super::chain(&e)),
    }
    out
}
