//! When and how long to wait before trying a Fly call again, and what to do after a create
//! whose outcome is unknown. Pure: decisions take values (status codes, attempt numbers, an
//! RNG, list results) and return values; the client does the sleeping and the calls.
//!
//! Policy (reference fly-machines-api.md §5, §8.9):
//! - idempotent calls retry 408, 429, any 5xx and transport errors;
//! - non-idempotent calls (creates, exec, lease acquire) retry only what surely did not take
//!   effect: 429 and failures to connect; lease acquire also retries 409 (someone else holds
//!   the lease, which expires);
//! - an ambiguous create (408/5xx/transport error after sending) is never replayed blindly:
//!   the client first looks for what it may have made ([`after_ambiguous_machine_create`],
//!   [`after_ambiguous_volume_create`]).
//!
//! Volumes carry no metadata, so their rule is: the caller passes the ids of the volumes that
//! existed before the create; a new volume (not in that set) with the requested name (and
//! region, when one was requested) that is not being destroyed is the one the create made. Two
//! such volumes mean two creates raced with the same name; the client then refuses to guess.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;

use super::types::{CreateVolumeRequest, Machine, MachineState, Volume};

/// The metadata key holding a create's idempotency id (`fks_launch_id=<uuid>`).
pub use crate::contract::meta::LAUNCH_ID as LAUNCH_ID_KEY;

/// How many times and how long to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Delay before the second attempt (before jitter).
    pub base_delay: Duration,
    /// Largest delay between two attempts.
    pub max_delay: Duration,
    /// No new attempt starts later than this after the first one.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 250 ms doubling to at most 8 s, within 60 s (reference §5's suggestion).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The delay after failed attempt number `attempt` (1-based): exponential, capped, with
    /// "equal jitter" (half fixed, half random) so parallel clients spread out.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = full / 2;
        let jitter_ns = rng.random_range(0..=half.as_nanos() as u64);
        half + Duration::from_nanos(jitter_ns)
    }

    /// The delay before the next attempt, or `None` when the policy is used up: `attempt`
    /// attempts were made and `elapsed` has passed since the first.
    pub fn next_delay(
        &self,
        attempt: u32,
        elapsed: Duration,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let delay = self.delay(attempt, rng);
        (elapsed + delay <= self.max_elapsed).then_some(delay)
    }
}

/// How a call may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Repeating the call does no harm (GET, PUT, DELETE, start, stop, update, metadata...).
    Idempotent,
    /// Repeating may do the thing twice (create, exec).
    NonIdempotent,
    /// Lease acquire: non-idempotent, but 409 (held by someone else) is worth waiting out.
    LeaseAcquire,
    /// The wait long-poll: 408 is its normal timeout and goes back to the wait loop.
    Wait,
}

impl RetryClass {
    /// Whether an answer with this status should be retried.
    pub fn retries_status(self, status: u16) -> bool {
        match self {
            RetryClass::Idempotent => status == 408 || status == 429 || status >= 500,
            RetryClass::NonIdempotent => status == 429,
            RetryClass::LeaseAcquire => status == 429 || status == 409,
            RetryClass::Wait => status == 429 || status >= 500,
        }
    }

    /// Whether a transport failure should be retried. `before_sending` is true when the
    /// connection could not even be made, so the server cannot have acted.
    pub fn retries_transport(self, before_sending: bool) -> bool {
        before_sending || matches!(self, RetryClass::Idempotent | RetryClass::Wait)
    }
}

/// What to do after a machine create whose outcome is unknown.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateDecision<T> {
    /// The create did happen: use this.
    Adopt(T),
    /// Nothing was made: creating again cannot duplicate.
    Recreate,
}

/// Decides from a list of the app's Machines (ideally already filtered by
/// `metadata.fks_launch_id=<launch_id>`). The metadata is checked here again because an older
/// server may ignore the filter. Destroyed Machines do not count. When several match (they
/// should not), the oldest is adopted so repeated calls agree.
pub fn after_ambiguous_machine_create(
    launch_id: &str,
    listed: Vec<Machine>,
) -> CreateDecision<Machine> {
    let mut matches: Vec<Machine> = listed
        .into_iter()
        .filter(|m| m.metadata(LAUNCH_ID_KEY) == Some(launch_id))
        .filter(|m| !matches!(m.state, MachineState::Destroyed | MachineState::Destroying))
        .collect();
    matches.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    match matches.into_iter().next() {
        Some(m) => CreateDecision::Adopt(m),
        None => CreateDecision::Recreate,
    }
}

/// What to do after a volume create whose outcome is unknown.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeDecision {
    /// The create did happen: use this volume.
    Adopt(Box<Volume>),
    /// Nothing was made.
    Recreate,
    /// Several new volumes match: refuse to guess (ids listed).
    Ambiguous(Vec<String>),
}

/// Decides from the app's volumes after an ambiguous create, by the rule in this module's doc:
/// new (id not in `before`), same name, same region if one was asked for, not being destroyed.
pub fn after_ambiguous_volume_create(
    req: &CreateVolumeRequest,
    before: &BTreeSet<String>,
    listed: Vec<Volume>,
) -> VolumeDecision {
    let mut fresh: Vec<Volume> = listed
        .into_iter()
        .filter(|v| !before.contains(&v.id))
        .filter(|v| v.name == req.name)
        .filter(|v| req.region.as_ref().is_none_or(|r| &v.region == r))
        .filter(|v| !v.state.is_being_destroyed())
        .collect();
    match fresh.len() {
        0 => VolumeDecision::Recreate,
        1 => VolumeDecision::Adopt(Box::new(fresh.remove(0))),
        _ => VolumeDecision::Ambiguous(fresh.into_iter().map(|v| v.id).collect()),
    }
}

/// A random (version 4) UUID, from the given RNG, for idempotency ids.
pub fn uuid_v4(rng: &mut impl Rng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::fly::types::{MachineConfig, VolumeState};

    fn machine(id: &str, launch: Option<&str>, state: MachineState, created: &str) -> Machine {
        let mut config = MachineConfig::default();
        if let Some(l) = launch {
            config.metadata.insert(LAUNCH_ID_KEY.into(), l.into());
        }
        Machine {
            id: id.into(),
            state,
            config: Some(config),
            created_at: Some(created.into()),
            ..Machine::default()
        }
    }

    #[test]
    fn delays_grow_exponentially_within_jitter_bounds_and_cap() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=10u32 {
            let d = policy.delay(attempt, &mut rng);
            let full = (Duration::from_millis(250) * 2u32.pow(attempt - 1)).min(policy.max_delay);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn same_seed_gives_same_delays() {
        let policy = RetryPolicy::default();
        let a: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(42);
            (1..6).map(|n| policy.delay(n, &mut rng)).collect()
        };
        let b: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(42);
            (1..6).map(|n| policy.delay(n, &mut rng)).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn retries_stop_at_attempt_count_and_deadline() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        assert!(policy.next_delay(1, Duration::ZERO, &mut rng).is_some());
        assert!(policy.next_delay(6, Duration::ZERO, &mut rng).is_none());
        assert!(policy
            .next_delay(2, Duration::from_secs(60), &mut rng)
            .is_none());
        assert!(RetryPolicy::none()
            .next_delay(1, Duration::ZERO, &mut rng)
            .is_none());
    }

    #[test]
    fn creates_retry_only_what_surely_did_not_happen() {
        let c = RetryClass::NonIdempotent;
        assert!(c.retries_status(429));
        for s in [408, 500, 502, 503, 504, 409, 422] {
            assert!(!c.retries_status(s), "{s}");
        }
        assert!(c.retries_transport(true));
        assert!(!c.retries_transport(false));
    }

    #[test]
    fn idempotent_calls_retry_429_and_5xx_and_transport() {
        let c = RetryClass::Idempotent;
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(c.retries_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!c.retries_status(s), "{s}");
        }
        assert!(c.retries_transport(false));
        assert!(!RetryClass::Wait.retries_status(408));
        assert!(RetryClass::LeaseAcquire.retries_status(409));
    }

    #[test]
    fn ambiguous_create_adopts_machine_with_launch_id() {
        let listed = vec![
            machine(
                "a",
                Some("other"),
                MachineState::Started,
                "2026-01-01T00:00:00Z",
            ),
            machine(
                "b",
                Some("L1"),
                MachineState::Created,
                "2026-01-01T00:00:05Z",
            ),
            machine("c", None, MachineState::Started, "2026-01-01T00:00:01Z"),
        ];
        match after_ambiguous_machine_create("L1", listed) {
            CreateDecision::Adopt(m) => assert_eq!(m.id, "b"),
            other => panic!("expected adopt, got {other:?}"),
        }
    }

    #[test]
    fn ambiguous_create_recreates_when_nothing_was_made() {
        let listed = vec![
            machine(
                "a",
                Some("other"),
                MachineState::Started,
                "2026-01-01T00:00:00Z",
            ),
            machine(
                "d",
                Some("L1"),
                MachineState::Destroyed,
                "2026-01-01T00:00:00Z",
            ),
        ];
        assert_eq!(
            after_ambiguous_machine_create("L1", listed),
            CreateDecision::Recreate
        );
        assert_eq!(
            after_ambiguous_machine_create("L1", vec![]),
            CreateDecision::Recreate
        );
    }

    #[test]
    fn ambiguous_create_with_two_matches_adopts_the_oldest() {
        let listed = vec![
            machine(
                "y",
                Some("L1"),
                MachineState::Started,
                "2026-01-01T00:00:09Z",
            ),
            machine(
                "x",
                Some("L1"),
                MachineState::Started,
                "2026-01-01T00:00:02Z",
            ),
        ];
        match after_ambiguous_machine_create("L1", listed) {
            CreateDecision::Adopt(m) => assert_eq!(m.id, "x"),
            other => panic!("expected adopt, got {other:?}"),
        }
    }

    fn volume(id: &str, name: &str, region: &str, state: VolumeState) -> Volume {
        Volume {
            id: id.into(),
            name: name.into(),
            region: region.into(),
            state,
            ..Volume::default()
        }
    }

    #[test]
    fn ambiguous_volume_create_adopts_only_a_new_matching_volume() {
        let req = CreateVolumeRequest {
            name: "ctrl_0".into(),
            region: Some("sjc".into()),
            ..CreateVolumeRequest::default()
        };
        let before: BTreeSet<String> = ["vol_old".to_string()].into();
        let listed = vec![
            volume("vol_old", "ctrl_0", "sjc", VolumeState::Created),
            volume("vol_other", "ctrl_1", "sjc", VolumeState::Created),
            volume("vol_gone", "ctrl_0", "sjc", VolumeState::PendingDestroy),
            volume("vol_iad", "ctrl_0", "iad", VolumeState::Created),
            volume("vol_new", "ctrl_0", "sjc", VolumeState::Creating),
        ];
        match after_ambiguous_volume_create(&req, &before, listed) {
            VolumeDecision::Adopt(v) => assert_eq!(v.id, "vol_new"),
            other => panic!("expected adopt, got {other:?}"),
        }
        assert_eq!(
            after_ambiguous_volume_create(
                &req,
                &before,
                vec![volume("vol_old", "ctrl_0", "sjc", VolumeState::Created)]
            ),
            VolumeDecision::Recreate
        );
    }

    #[test]
    fn ambiguous_volume_create_refuses_to_guess_between_two() {
        let req = CreateVolumeRequest {
            name: "data".into(),
            ..CreateVolumeRequest::default()
        };
        let listed = vec![
            volume("vol_a", "data", "sjc", VolumeState::Created),
            volume("vol_b", "data", "iad", VolumeState::Created),
        ];
        assert_eq!(
            after_ambiguous_volume_create(&req, &BTreeSet::new(), listed),
            VolumeDecision::Ambiguous(vec!["vol_a".into(), "vol_b".into()])
        );
    }

    #[test]
    fn uuid_v4_has_version_and_variant_bits() {
        let mut rng = StdRng::seed_from_u64(3);
        let u = uuid_v4(&mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(u, uuid_v4(&mut rng));
    }
}
