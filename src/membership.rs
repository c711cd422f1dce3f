//! etcd membership changes, the part both sides share: the node-side command that removes a
//! member (`fks-bootstrap node etcd remove MEMBER --json`, run by the operator through the
//! Machines API exec endpoint on a healthy server, as `status` runs `node etcd members`), its
//! JSON answer, which member a `MEMBER` argument names ([`select`]), and the quorum arithmetic
//! a removal must pass ([`Quorum`]).
//!
//! etcd's rule (etcd docs, "FAQ: What is failure tolerance?" and "Runtime reconfiguration"): a
//! cluster of n voting members needs floor(n/2)+1 of them to agree; learners do not vote.
//! Removing a member changes n, so what must hold is the majority of the members left.
//!
//! Pure: no I/O. Must not: run anything through a shell (commands are argument vectors).

use serde::{Deserialize, Serialize};

use crate::etcd::Member;
use crate::fly::types::ExecResponse;
use crate::run::k3s::first_line;
use crate::status::{member_node, MemberHealth};

/// The arguments after the binary of the node-side removal, before the member.
pub const REMOVE_ARGS: [&str; 3] = ["node", "etcd", "remove"];

/// `fks-bootstrap node etcd remove MEMBER --json`: the image's own binary on the machine's
/// PATH (as for [`crate::status::members_command`]). `member` is a hex member id the operator
/// read from the member list, never user text passed to a shell.
pub fn remove_command(member: &str) -> Vec<String> {
    std::iter::once("fks-bootstrap")
        .chain(REMOVE_ARGS)
        .chain([member, "--json"])
        .map(str::to_string)
        .collect()
}

/// One member as the removal reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberName {
    /// Lowercase hex id (as etcdctl prints it).
    pub id: String,
    /// k3s's member name; empty for a member that never started.
    pub name: String,
    /// Not voting yet.
    pub learner: bool,
}

impl From<&Member> for MemberName {
    fn from(m: &Member) -> Self {
        MemberName {
            id: format!("{:x}", m.id),
            name: m.name.clone(),
            learner: m.is_learner,
        }
    }
}

/// What `node etcd remove MEMBER --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveReport {
    /// Where the call went (the local member's client URL).
    pub endpoint: String,
    /// The `MEMBER` argument.
    pub target: String,
    /// The member removed; `None` when no member matched (removed already).
    pub removed: Option<MemberName>,
    /// The members after the call.
    pub members: Vec<MemberName>,
}

/// Reads the removal's answer: its JSON on success, else its first stderr line (etcd's refusal,
/// e.g. `etcdserver: unhealthy cluster`).
pub fn parse_remove(out: &ExecResponse) -> Result<RemoveReport, String> {
    if out.exit_code != 0 {
        let why = first_line(&out.stderr);
        return Err(if why.is_empty() {
            format!("node etcd remove exited with {}", out.exit_code)
        } else {
            why
        });
    }
    serde_json::from_str(&out.stdout)
        .map_err(|e| format!("node etcd remove printed no removal report: {e}"))
}

/// Whether a failed removal is worth asking again until a deadline: etcd refuses a
/// reconfiguration while a member joined in the last few seconds is not counted active, or
/// while the change would leave fewer active members than a quorum (`--strict-reconfig-check`,
/// on by default): "etcdserver: unhealthy cluster"; and while a new leader is being elected
/// after the old one was lost the proposal times out or is dropped ("request timed out",
/// "leader changed", "no leader"). A removal that went through before its answer was lost is
/// not there when asked again, which [`select`] answers with `None`: asking again is safe.
pub fn is_retryable(why: &str) -> bool {
    [
        "unhealthy cluster",
        "timed out",
        "leader changed",
        "no leader",
    ]
    .iter()
    .any(|s| why.contains(s))
}

/// Why a `MEMBER` argument names no single member that may be removed here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// It names the member the call goes through.
    #[error("member {name} ({id}) is this server's own; remove it through another server")]
    Own {
        /// Its name.
        name: String,
        /// Its hex id.
        id: String,
    },
    /// It names more than one member.
    #[error("{target} names {} members ({}); pass the member id", names.len(), names.join(", "))]
    Ambiguous {
        /// The argument.
        target: String,
        /// The members it matched.
        names: Vec<String>,
    },
}

/// The member `target` names: its hex id, its full name (`<node>-<8 hex>`), or the k3s node
/// name it belongs to (the name without k3s's suffix). `Ok(None)` when none matches (removed
/// already, so a repeated removal is a no-op). The member with id `local` (the one the call
/// goes through) is refused.
pub fn select<'a>(
    members: &'a [Member],
    target: &str,
    local: u64,
) -> Result<Option<&'a Member>, SelectError> {
    let target = target.trim();
    let found: Vec<&Member> = members
        .iter()
        .filter(|m| {
            format!("{:x}", m.id) == target.to_ascii_lowercase()
                || (!m.name.is_empty() && m.name == target)
                || member_node(&m.name) == Some(target)
        })
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [m] if m.id == local => Err(SelectError::Own {
            name: m.name.clone(),
            id: format!("{:x}", m.id),
        }),
        [m] => Ok(Some(m)),
        more => Err(SelectError::Ambiguous {
            target: target.to_string(),
            names: more
                .iter()
                .map(|m| format!("{} ({:x})", m.name, m.id))
                .collect(),
        }),
    }
}

/// What a removal leaves: the voting members after it, how many of them are healthy, and how
/// many a quorum needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    /// Voting members left (learners do not count).
    pub voters: usize,
    /// Of those, the ones that answered a quorum read.
    pub healthy: usize,
    /// floor(voters/2)+1.
    pub needed: usize,
}

impl Quorum {
    /// The members of `members` whose id is not in `removed`, counted.
    pub fn after(members: &[MemberHealth], removed: &[&str]) -> Quorum {
        let voters: Vec<&MemberHealth> = members
            .iter()
            .filter(|m| !m.learner && !removed.contains(&m.id.as_str()))
            .collect();
        let healthy = voters.iter().filter(|m| m.healthy).count();
        Quorum {
            voters: voters.len(),
            healthy,
            needed: voters.len() / 2 + 1,
        }
    }

    /// Whether the members left keep a quorum (and there is at least one).
    pub fn holds(&self) -> bool {
        self.voters > 0 && self.healthy >= self.needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![],
            client_urls: vec![],
            is_learner: false,
        }
    }

    fn health(id: &str, healthy: bool, learner: bool) -> MemberHealth {
        MemberHealth {
            id: id.into(),
            name: format!("n{id}"),
            peer_urls: vec![],
            client_urls: vec![],
            learner,
            leader: false,
            healthy,
            error: None,
        }
    }

    #[test]
    fn a_member_is_named_by_id_full_name_or_node_and_never_the_local_one() {
        let ms = [
            member(0xa1, "m0.vm.lab-cp.internal-0a1b2c3d"),
            member(0xb2, "m1.vm.lab-cp.internal-11112222"),
            member(0xc3, ""),
        ];
        let id = |t: &str| select(&ms, t, 0xa1).map(|m| m.map(|m| m.id));
        assert_eq!(id("b2"), Ok(Some(0xb2)));
        assert_eq!(id("B2"), Ok(Some(0xb2)));
        assert_eq!(id("m1.vm.lab-cp.internal-11112222"), Ok(Some(0xb2)));
        assert_eq!(id("m1.vm.lab-cp.internal"), Ok(Some(0xb2)));
        assert_eq!(id("c3"), Ok(Some(0xc3)), "an unnamed member by id");
        assert_eq!(id("gone"), Ok(None));
        assert_eq!(id(""), Ok(None), "an empty name matches no unnamed member");
        let own = select(&ms, "a1", 0xa1).expect_err("own member");
        assert!(own.to_string().contains("this server's own"), "{own}");
        let twins = [member(1, "x-00000001"), member(2, "x-00000002")];
        let e = select(&twins, "x", 9).expect_err("two members of node x");
        assert_eq!(
            e.to_string(),
            "x names 2 members (x-00000001 (1), x-00000002 (2)); pass the member id"
        );
    }

    #[test]
    fn quorum_is_a_majority_of_the_voting_members_left() {
        let three = [
            health("1", true, false),
            health("2", true, false),
            health("3", false, false),
        ];
        // Removing the dead one leaves 2 of 2.
        let q = Quorum::after(&three, &["3"]);
        assert_eq!((q.voters, q.healthy, q.needed, q.holds()), (2, 2, 2, true));
        // Removing a healthy one leaves 1 of 2: a majority of 2 is 2.
        let q = Quorum::after(&three, &["1"]);
        assert_eq!((q.voters, q.healthy, q.needed, q.holds()), (2, 1, 2, false));
        // A learner does not vote.
        let with_learner = [
            health("1", true, false),
            health("2", false, false),
            health("4", true, true),
        ];
        let q = Quorum::after(&with_learner, &[]);
        assert_eq!((q.voters, q.healthy, q.needed), (2, 1, 2));
        assert!(!Quorum::after(&three[..1], &["1"]).holds(), "none left");
    }

    #[test]
    fn the_removal_command_is_an_argument_vector_and_refusals_are_read() {
        assert_eq!(
            remove_command("8e9e05c52164694d"),
            [
                "fks-bootstrap",
                "node",
                "etcd",
                "remove",
                "8e9e05c52164694d",
                "--json"
            ]
        );
        let refused = ExecResponse {
            stderr: "fks-bootstrap: node etcd remove: etcd member remove at https://127.0.0.1:2379: 503: etcdserver: unhealthy cluster\n".into(),
            exit_code: 1,
            ..ExecResponse::default()
        };
        let why = parse_remove(&refused).expect_err("refused");
        assert!(is_retryable(&why), "{why}");
        let report = RemoveReport {
            endpoint: "https://127.0.0.1:2379".into(),
            target: "b2".into(),
            removed: Some(MemberName {
                id: "b2".into(),
                name: "n".into(),
                learner: false,
            }),
            members: vec![],
        };
        let ok = ExecResponse {
            stdout: serde_json::to_string(&report).expect("json"),
            ..ExecResponse::default()
        };
        assert_eq!(parse_remove(&ok), Ok(report));
    }
}
