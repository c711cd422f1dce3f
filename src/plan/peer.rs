//! What `destroy` does with the operator's WireGuard peer of the organization (issue 12:
//! the peer is removed "on `destroy` of the last cluster of the org, if it made it"): the
//! peer fks-bootstrap made (its saved file says so) goes with the org's last cluster and stays
//! while another cluster of the org remains.
//!
//! "Another cluster" is read from the org's apps named like a cluster's app (`<c>-cp`,
//! `<c>-ng-<group>`, the only names fks-bootstrap gives apps) that hold a sign of being this
//! tool's: a live machine with `fks_cluster` metadata or a secret only fks-bootstrap writes.
//! An app fks-bootstrap did not name is never a cluster of this tool, whatever it holds.
//!
//! Pure: no tokio, no network, no file access. Must not: decide to remove a peer when any
//! doubt is left (the caller keeps the peer when it could not read the org's apps).

use std::collections::BTreeSet;
use std::fmt;

use super::{AppState, Target};
use crate::contract::{meta, secret};
use crate::fly::types::MachineState;

/// The peer step of a destroy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerStep {
    /// Remove the peer at Fly (`removeWireGuardPeer`) and forget its saved file, once the
    /// cluster is gone: it was the org's last one.
    Remove {
        /// The organization's slug.
        org: String,
        /// The peer's name.
        peer: String,
    },
    /// Keep the peer: these clusters of the org remain.
    Keep {
        /// The organization's slug.
        org: String,
        /// The peer's name.
        peer: String,
        /// The clusters that remain, sorted.
        clusters: Vec<String>,
    },
}

impl fmt::Display for PeerStep {
    /// The removal as the dry run and the confirmation list it, or why the peer stays.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerStep::Remove { org, peer } => write!(
                f,
                "WireGuard peer {peer} of org {org} (fks-bootstrap made it; no other cluster of the org remains)"
            ),
            PeerStep::Keep {
                org,
                peer,
                clusters,
            } => write!(
                f,
                "keeping WireGuard peer {peer} of org {org}: cluster(s) {} of the org remain",
                clusters.join(", ")
            ),
        }
    }
}

/// The cluster an app's name gives, when it is named like a cluster's app: `<c>` of `<c>-cp`
/// or of `<c>-ng-<group>` (a valid group name).
pub fn cluster_of_app(name: &str) -> Option<&str> {
    if let Some(c) = name.strip_suffix("-cp").filter(|c| !c.is_empty()) {
        return Some(c);
    }
    let (c, group) = name.rsplit_once("-ng-")?;
    (!c.is_empty() && Target::node_group(group).is_ok()).then_some(c)
}

/// The clusters that `apps` (read by `observe::other_clusters`) show to exist: an app with a
/// live machine carrying `fks_cluster` (named by that value) or a secret only fks-bootstrap
/// writes (named by the app's name); sorted, deduplicated.
pub fn remaining_clusters(apps: &[AppState]) -> Vec<String> {
    let mut found = BTreeSet::new();
    for a in apps {
        let tagged: Vec<&str> = a
            .machines
            .iter()
            .filter(|m| !matches!(m.state, MachineState::Destroyed | MachineState::Destroying))
            .filter_map(|m| m.metadata(meta::CLUSTER))
            .collect();
        if !tagged.is_empty() {
            found.extend(tagged.into_iter().map(str::to_string));
        } else if a.secrets.iter().any(|s| secret::is_ours(s)) {
            if let Some(c) = cluster_of_app(&a.app) {
                found.insert(c.to_string());
            }
        }
    }
    found.into_iter().collect()
}

/// The peer step when `destroy` removes `cluster` from `org`: `peer` is the name of the saved
/// peer fks-bootstrap made (None: none saved, or not made by it: nothing to do); `others` are
/// the org's other cluster-named apps as read. A remaining cluster keeps the peer.
pub fn peer_step(
    cluster: &str,
    org: &str,
    peer: Option<&str>,
    others: &[AppState],
) -> Option<PeerStep> {
    let peer = peer?.to_string();
    let org = org.to_string();
    let clusters: Vec<String> = remaining_clusters(others)
        .into_iter()
        .filter(|c| c != cluster)
        .collect();
    Some(if clusters.is_empty() {
        PeerStep::Remove { org, peer }
    } else {
        PeerStep::Keep {
            org,
            peer,
            clusters,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::types::{Machine, MachineConfig};

    fn machine(cluster: &str, state: MachineState) -> Machine {
        let mut config = MachineConfig::default();
        config.metadata.insert(meta::CLUSTER.into(), cluster.into());
        Machine {
            id: "m1".into(),
            state,
            config: Some(config),
            ..Machine::default()
        }
    }

    #[test]
    fn app_names_give_their_cluster() {
        assert_eq!(cluster_of_app("lab2-cp"), Some("lab2"));
        assert_eq!(cluster_of_app("lab2-ng-db"), Some("lab2"));
        assert_eq!(cluster_of_app("a-ng-b-cp"), Some("a-ng-b"));
        for foreign in ["website", "-cp", "x-ng-Bad", "x-ng-", "-ng-db"] {
            assert_eq!(cluster_of_app(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn the_peer_goes_with_the_orgs_last_cluster_only() {
        let other = AppState {
            app: "lab2-cp".into(),
            machines: vec![machine("lab2", MachineState::Started)],
            ..AppState::default()
        };
        assert_eq!(
            peer_step(
                "lab",
                "personal",
                Some("fks-h-1"),
                std::slice::from_ref(&other)
            ),
            Some(PeerStep::Keep {
                org: "personal".into(),
                peer: "fks-h-1".into(),
                clusters: vec!["lab2".into()],
            })
        );
        // Only destroyed machines and no secret of ours: a name match, not a cluster.
        let gone = AppState {
            machines: vec![machine("lab2", MachineState::Destroyed)],
            secrets: ["DATABASE_URL".to_string()].into(),
            ..other.clone()
        };
        let step = peer_step(
            "lab",
            "personal",
            Some("fks-h-1"),
            std::slice::from_ref(&gone),
        );
        assert_eq!(
            step,
            Some(PeerStep::Remove {
                org: "personal".into(),
                peer: "fks-h-1".into(),
            })
        );
        assert!(step
            .expect("step")
            .to_string()
            .contains("fks-h-1 of org personal"));
        // A secret only fks-bootstrap writes marks a cluster left half destroyed.
        let half = AppState {
            secrets: ["K3S_TOKEN".to_string()].into(),
            ..gone
        };
        assert!(matches!(
            peer_step("lab", "personal", Some("fks-h-1"), &[half]),
            Some(PeerStep::Keep { clusters, .. }) if clusters == ["lab2"]
        ));
        // No saved peer made by fks-bootstrap: nothing to do.
        assert_eq!(peer_step("lab", "personal", None, &[]), None);
    }
}
