//! `fks-bootstrap node etcd remove MEMBER`: removes one member from this server's embedded etcd
//! through etcd's own API (`/v3/cluster/member/remove`, `crate::etcd`), asked of the local
//! member (`https://127.0.0.1:2379`, where k3s's own client talks) with the k3s client
//! certificate. The operator runs it through the Machines API exec on a healthy server when it
//! replaces another server (`server replace`); it cannot reach port 2379 itself without 6PN.
//!
//! Which member `MEMBER` names is [`crate::membership::select`]: a hex id, a member name or a
//! k3s node name; the local member is refused (a server cannot remove itself here). A member
//! that is not there is not an error: a repeated removal reports `removed: null`.
//!
//! Must not: decide about quorum (the operator checked it before; etcd itself refuses a
//! removal that would leave too few active members, `--strict-reconfig-check`), or retry
//! (the caller does, on etcd's "unhealthy cluster").

use std::path::Path;
use std::time::Duration;

use crate::etcd::{self, Client, Tls};
use crate::membership::{select, MemberName, RemoveReport, SelectError};

/// How long each etcd call may take (a member remove goes through raft).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the removal did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An etcd call failed (TLS material, no answer, or etcd's refusal).
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
    /// `MEMBER` names no member that may be removed here.
    #[error("removing member {target} through {endpoint}")]
    Select {
        /// The argument.
        target: String,
        /// The local member's client URL.
        endpoint: String,
        /// Why not.
        #[source]
        source: SelectError,
    },
}

/// Removes the member `target` names, through `endpoint` (the local member), and reports the
/// member list after it.
pub async fn remove(
    k3s_data_dir: &Path,
    endpoint: &str,
    target: &str,
) -> Result<RemoveReport, Error> {
    let tls = Tls::from_k3s_data_dir(k3s_data_dir)?;
    let local = Client::new(endpoint, &tls, TIMEOUT)?;
    let own = local.status().await?.member_id;
    let members = local.member_list().await?;
    let picked = select(&members, target, own).map_err(|source| Error::Select {
        target: target.to_string(),
        endpoint: endpoint.to_string(),
        source,
    })?;
    let (removed, after) = match picked {
        Some(m) => {
            let after = local.member_remove(m.id).await?;
            (Some(MemberName::from(m)), after)
        }
        None => (None, members),
    };
    Ok(RemoveReport {
        endpoint: endpoint.to_string(),
        target: target.to_string(),
        removed,
        members: after.iter().map(MemberName::from).collect(),
    })
}
