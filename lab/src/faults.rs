//! Fault injection: the `--faults` grammar, seeded random decisions and Fly's documented rate
//! limits (reference §5). Owns no HTTP: the API layer asks it what to do for a request.
//!
//! Grammar: clauses separated by `;`, each `kind=value`:
//! - `latency=OP:DUR,OP:DUR` delay before handling; OP is an operation name such as
//!   `machines.create` or `volumes.create` (see `api::op_name`), or `*` for every operation;
//!   DUR is `250ms` or `2s`.
//! - `rate_limits=on|off` Fly's limits: 1 req/s with bursts of 3 per action and app or machine,
//!   GET machine 5 req/s with bursts of 10; over the limit answers 429.
//! - `error_rate=P` answer a fraction P (0..=1) of `/v1` requests with a 5xx before handling.
//! - `ambiguous_create=P` a fraction P of machine and volume creates IS carried out, but answered
//!   with 408 or a 5xx (reference §5, "408 and 5xx on non-idempotent calls are ambiguous").
//! - `capacity=REGION[:ZONE],...` no capacity in a whole region or in one zone: creates there
//!   fail with `status: insufficient_capacity`.
//! - `boot_failure=P` a fraction P of machine boots end in state `failed` instead of `started`.
//! - `boot_crash=P` a fraction P of machines crash once at their first boot: the machine reaches
//!   `started`, its main process exits 1 at once (an `exit` event) and the restart policy decides
//!   (the default `on-failure` starts it again). A machine crashes at most once.
//! - `migrate=P[@DUR]` a fraction P of machines is migrated to another host once, DUR (default
//!   1s) after its first start: stop, volume fork, start with a new 6PN address (`migration`).
//! - `app_settle=DUR` Fly's API is eventually consistent (reference fly-runtime.md §6): a new
//!   app answers 404 on every call naming it for a seeded time between DUR/2 and DUR after its
//!   create (flyctl's `WaitForApp` retries 404 for up to 1 min; fly-go waits too).
//! - `secrets_lag=DUR` the secret store is eventually consistent (reference fly-runtime.md §6,
//!   "min_secrets_version"): each secrets write reaches machine boots a seeded time between
//!   DUR/2 and DUR after it is made, unless a machine create or update asks for
//!   `min_secrets_version` at or above the write's version, which makes the write current first.
//!
//! Example: `latency=machines.create:200ms,volumes.create:300ms;rate_limits=on;error_rate=0.05;ambiguous_create=0.2;capacity=sjc:09cd`.
//! Random decisions come from one generator seeded with `--seed`, drawn in request order, so a
//! sequential client sees the same faults on every run.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Errors parsing `--faults`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fault clause `{clause}` has no `=`")]
    NoEquals { clause: String },
    #[error("unknown fault kind `{kind}` (known: latency, rate_limits, error_rate, ambiguous_create, capacity, boot_failure, boot_crash, migrate, app_settle, secrets_lag)")]
    UnknownKind { kind: String },
    #[error("bad latency entry `{entry}`: want OP:DURATION such as machines.create:200ms")]
    Latency { entry: String },
    #[error("bad duration `{value}`: want a number followed by ms or s")]
    Duration { value: String },
    #[error("bad probability `{value}` for {kind}: want a number from 0 to 1")]
    Probability { kind: String, value: String },
    #[error("bad value `{value}` for rate_limits: want on or off")]
    Switch { value: String },
}

/// The parsed fault settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub latency: Vec<(String, Duration)>,
    pub rate_limits: bool,
    pub error_rate: f64,
    pub ambiguous_create: f64,
    /// `(region, None)` = the whole region, `(region, Some(zone))` = one zone.
    pub capacity: Vec<(String, Option<String>)>,
    pub boot_failure: f64,
    /// The fraction of machines whose first boot crashes once (restart policy then decides).
    pub boot_crash: f64,
    /// The fraction of machines migrated once, `migrate_after` after their first start.
    pub migrate: f64,
    /// How long after its first start a picked machine is migrated (default 1s).
    pub migrate_after: Option<Duration>,
    /// Longest time a new app stays invisible (404) after its create; zero: at once.
    pub app_settle: Duration,
    /// Longest time a secrets write takes to reach machine boots; zero: at once.
    pub secrets_lag: Duration,
}

fn duration(value: &str) -> Result<Duration, Error> {
    let bad = || Error::Duration {
        value: value.to_string(),
    };
    if let Some(ms) = value.strip_suffix("ms") {
        return ms
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| bad());
    }
    if let Some(s) = value.strip_suffix('s') {
        return s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(bad);
    }
    Err(bad())
}

fn probability(kind: &str, value: &str) -> Result<f64, Error> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=1.0).contains(p))
        .ok_or_else(|| Error::Probability {
            kind: kind.into(),
            value: value.into(),
        })
}

impl Faults {
    /// Parse a `--faults` spec (see the module docs). An empty spec means no faults.
    pub fn parse(spec: &str) -> Result<Faults, Error> {
        let mut f = Faults::default();
        for clause in spec.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            let (kind, value) = clause.split_once('=').ok_or_else(|| Error::NoEquals {
                clause: clause.into(),
            })?;
            let (kind, value) = (kind.trim(), value.trim());
            match kind {
                "latency" => {
                    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                        let (op, d) = entry.rsplit_once(':').ok_or_else(|| Error::Latency {
                            entry: entry.into(),
                        })?;
                        f.latency.push((op.trim().to_string(), duration(d.trim())?));
                    }
                }
                "rate_limits" => {
                    f.rate_limits = match value {
                        "on" | "true" | "1" => true,
                        "off" | "false" | "0" => false,
                        _ => {
                            return Err(Error::Switch {
                                value: value.into(),
                            })
                        }
                    }
                }
                "error_rate" => f.error_rate = probability(kind, value)?,
                "ambiguous_create" => f.ambiguous_create = probability(kind, value)?,
                "boot_failure" => f.boot_failure = probability(kind, value)?,
                "boot_crash" => f.boot_crash = probability(kind, value)?,
                "migrate" => {
                    let (p, after) = match value.split_once('@') {
                        Some((p, d)) => (p, Some(duration(d.trim())?)),
                        None => (value, None),
                    };
                    f.migrate = probability(kind, p)?;
                    f.migrate_after = after;
                }
                "app_settle" => f.app_settle = duration(value)?,
                "secrets_lag" => f.secrets_lag = duration(value)?,
                "capacity" => {
                    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                        match entry.split_once(':') {
                            Some((r, z)) => f.capacity.push((r.to_string(), Some(z.to_string()))),
                            None => f.capacity.push((entry.to_string(), None)),
                        }
                    }
                }
                _ => return Err(Error::UnknownKind { kind: kind.into() }),
            }
        }
        Ok(f)
    }

    /// The latency for an operation (an exact entry wins over `*`).
    pub fn latency_for(&self, op: &str) -> Option<Duration> {
        self.latency
            .iter()
            .find(|(o, _)| o == op)
            .or_else(|| self.latency.iter().find(|(o, _)| o == "*"))
            .map(|(_, d)| *d)
    }

    /// True when a zone (or its whole region) has no capacity.
    pub fn zone_full(&self, region: &str, zone: &str) -> bool {
        self.capacity
            .iter()
            .any(|(r, z)| r == region && z.as_deref().is_none_or(|z| z == zone))
    }
}

/// A token bucket (reference §5: rate per second, burst).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The mutable side of faults: the seeded generator and the rate-limit buckets.
#[derive(Debug)]
pub struct Injector {
    rng: ChaCha8Rng,
    buckets: HashMap<(String, String), Bucket>,
    /// Machines already drawn for `boot_crash` (each machine is drawn once, at its first boot).
    boot_drawn: HashSet<String>,
    /// Machines already drawn for `migrate` (each machine is drawn once, at its first start).
    migrate_drawn: HashSet<String>,
    /// New apps and when they become visible (`app_settle`).
    settling_apps: HashMap<String, Instant>,
}

/// What an ambiguous create answers instead of its real result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    Timeout,
    ServerError,
}

impl Injector {
    /// A new injector seeded with `seed`.
    pub fn new(seed: u64) -> Injector {
        Injector {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6661_756c_7473),
            buckets: HashMap::new(),
            boot_drawn: HashSet::new(),
            migrate_drawn: HashSet::new(),
            settling_apps: HashMap::new(),
        }
    }

    /// Draw a delay between `max`/2 and `max` (`app_settle`, `secrets_lag`). Draws nothing for
    /// a zero `max`, so the other faults' decisions do not shift.
    pub fn lag(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        max.mul_f64(0.5 + 0.5 * self.rng.random::<f64>())
    }

    /// A new app `name`: invisible for a drawn part of `max` from `now` (`app_settle`).
    pub fn app_created(&mut self, name: &str, max: Duration, now: Instant) {
        let lag = self.lag(max);
        if lag.is_zero() {
            self.settling_apps.remove(name);
        } else {
            self.settling_apps.insert(name.to_string(), now + lag);
        }
    }

    /// Whether app `name` is still settling at `now`, so calls naming it answer 404.
    pub fn app_settling(&mut self, name: &str, now: Instant) -> bool {
        match self.settling_apps.get(name) {
            Some(until) if now < *until => true,
            Some(_) => {
                self.settling_apps.remove(name);
                false
            }
            None => false,
        }
    }

    /// Draw: true with probability `p`. Draws nothing when `p` is 0, so turning one fault kind
    /// on does not shift the decisions of another.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p)
    }

    /// Draw whether machine `id`'s boot crashes (`boot_crash=P`): only at its first boot, so a
    /// machine crashes at most once; later boots draw nothing.
    pub fn crash_once(&mut self, p: f64, id: &str) -> bool {
        p > 0.0 && self.boot_drawn.insert(id.to_string()) && self.rng.random_bool(p)
    }

    /// Draw whether machine `id` is migrated (`migrate=P`): only at its first start, so the
    /// start after the migration itself draws nothing and a machine moves at most once.
    pub fn migrate_once(&mut self, p: f64, id: &str) -> bool {
        p > 0.0 && self.migrate_drawn.insert(id.to_string()) && self.rng.random_bool(p)
    }

    /// Draw which ambiguous answer to give.
    pub fn ambiguity(&mut self) -> Ambiguity {
        if self.rng.random_bool(0.5) {
            Ambiguity::Timeout
        } else {
            Ambiguity::ServerError
        }
    }

    /// Take a token for `(op, key)` at `rate` per second with `burst`; false = over the limit.
    pub fn take(&mut self, op: &str, key: &str, rate: f64, burst: f64, now: Instant) -> bool {
        let b = self
            .buckets
            .entry((op.to_string(), key.to_string()))
            .or_insert(Bucket {
                tokens: burst,
                last: now,
            });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let f = Faults::parse(
            "latency=machines.create:200ms,volumes.create:0.3s;rate_limits=on;error_rate=0.05;ambiguous_create=0.2;capacity=sjc:09cd,iad",
        )
        .expect("parse");
        assert_eq!(
            f.latency_for("machines.create"),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            f.latency_for("volumes.create"),
            Some(Duration::from_millis(300))
        );
        assert_eq!(f.latency_for("apps.get"), None);
        assert!(f.rate_limits);
        assert_eq!(f.error_rate, 0.05);
        assert_eq!(f.ambiguous_create, 0.2);
        assert!(f.zone_full("sjc", "09cd"));
        assert!(!f.zone_full("sjc", "1234"));
        assert!(f.zone_full("iad", "anything"));
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(matches!(
            Faults::parse("nope=1"),
            Err(Error::UnknownKind { .. })
        ));
        assert!(matches!(
            Faults::parse("error_rate=2"),
            Err(Error::Probability { .. })
        ));
        assert!(matches!(
            Faults::parse("latency=x:5m"),
            Err(Error::Duration { .. })
        ));
        assert!(matches!(
            Faults::parse("rate_limits"),
            Err(Error::NoEquals { .. })
        ));
        assert_eq!(Faults::parse("").expect("empty"), Faults::default());
    }

    #[test]
    fn bucket_allows_burst_then_refills() {
        let mut inj = Injector::new(1);
        let t0 = Instant::now();
        assert!((0..3).all(|_| inj.take("machines.create", "app", 1.0, 3.0, t0)));
        assert!(!inj.take("machines.create", "app", 1.0, 3.0, t0));
        assert!(inj.take("machines.create", "other", 1.0, 3.0, t0));
        assert!(inj.take(
            "machines.create",
            "app",
            1.0,
            3.0,
            t0 + Duration::from_secs(1)
        ));
    }

    #[test]
    fn boot_crash_happens_at_most_once_per_machine() {
        let f = Faults::parse("boot_crash=1").expect("parse");
        assert_eq!(f.boot_crash, 1.0);
        let mut inj = Injector::new(3);
        assert!(inj.crash_once(f.boot_crash, "m1"));
        assert!(!inj.crash_once(f.boot_crash, "m1"), "second boot of m1");
        assert!(inj.crash_once(f.boot_crash, "m2"));
        // Off: no draw, so other faults' decisions do not shift.
        let mut a = Injector::new(9);
        let mut b = Injector::new(9);
        assert!(!a.crash_once(0.0, "m1"));
        assert_eq!(a.chance(0.5), b.chance(0.5));
    }

    #[test]
    fn migrate_parses_with_and_without_a_delay_and_draws_once_per_machine() {
        let f = Faults::parse("migrate=1").expect("parse");
        assert_eq!((f.migrate, f.migrate_after), (1.0, None));
        let f = Faults::parse("migrate=0.5@3s").expect("parse");
        assert_eq!(f.migrate, 0.5);
        assert_eq!(f.migrate_after, Some(Duration::from_secs(3)));
        assert!(matches!(
            Faults::parse("migrate=2"),
            Err(Error::Probability { .. })
        ));
        assert!(matches!(
            Faults::parse("migrate=1@soon"),
            Err(Error::Duration { .. })
        ));
        let mut inj = Injector::new(4);
        assert!(inj.migrate_once(1.0, "m1"));
        assert!(!inj.migrate_once(1.0, "m1"), "second start of m1");
        assert!(inj.migrate_once(1.0, "m2"));
    }

    #[test]
    fn a_new_app_settles_within_the_drawn_time_and_zero_draws_nothing() {
        let f = Faults::parse("app_settle=2s;secrets_lag=400ms").expect("parse");
        assert_eq!(f.app_settle, Duration::from_secs(2));
        assert_eq!(f.secrets_lag, Duration::from_millis(400));
        let mut inj = Injector::new(4);
        let t0 = Instant::now();
        inj.app_created("a", f.app_settle, t0);
        assert!(inj.app_settling("a", t0));
        assert!(inj.app_settling("a", t0 + Duration::from_millis(999)));
        assert!(!inj.app_settling("a", t0 + Duration::from_secs(2)));
        assert!(!inj.app_settling("never-made", t0));
        let lag = inj.lag(f.secrets_lag);
        assert!(
            lag >= Duration::from_millis(200) && lag <= f.secrets_lag,
            "{lag:?}"
        );
        let (mut a, mut b) = (Injector::new(9), Injector::new(9));
        assert_eq!(a.lag(Duration::ZERO), Duration::ZERO);
        a.app_created("x", Duration::ZERO, t0);
        assert!(!a.app_settling("x", t0));
        assert_eq!(a.chance(0.5), b.chance(0.5));
    }

    #[test]
    fn same_seed_same_decisions() {
        let draw = |seed| {
            let mut i = Injector::new(seed);
            (0..64).map(|_| i.chance(0.3)).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }
}
