//! Client-side rate limiting: one token bucket per (action, app or machine), sized to Fly's
//! documented limits (reference fly-machines-api.md §5): every action 1 request/s with bursts
//! of 3, Get Machine 5/s with bursts of 10, app deletions 100 per minute.
//!
//! Must not: sleep while holding the lock; the bucket state is only touched under a
//! `std::sync::Mutex` for the few instructions a reservation takes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// An API action, the unit Fly counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `POST /apps`.
    CreateApp,
    /// `GET /apps/{app}`.
    GetApp,
    /// `GET /apps`.
    ListApps,
    /// `DELETE /apps/{app}`.
    DeleteApp,
    /// `POST /apps/{app}/volumes`.
    CreateVolume,
    /// `GET /apps/{app}/volumes`.
    ListVolumes,
    /// `GET /apps/{app}/volumes/{vol}`.
    GetVolume,
    /// `PUT /apps/{app}/volumes/{vol}`.
    UpdateVolume,
    /// `DELETE /apps/{app}/volumes/{vol}`.
    DeleteVolume,
    /// `PUT /apps/{app}/volumes/{vol}/extend`.
    ExtendVolume,
    /// `POST /apps/{app}/machines`.
    CreateMachine,
    /// `GET /apps/{app}/machines`.
    ListMachines,
    /// `GET /apps/{app}/machines/{id}`.
    GetMachine,
    /// `POST /apps/{app}/machines/{id}`.
    UpdateMachine,
    /// `POST .../start`.
    StartMachine,
    /// `POST .../stop`.
    StopMachine,
    /// `DELETE .../{id}`.
    DestroyMachine,
    /// `GET .../wait`.
    WaitMachine,
    /// `POST .../exec`.
    ExecMachine,
    /// Lease calls.
    Lease,
    /// Metadata calls.
    Metadata,
    /// App secret calls.
    Secrets,
}

/// A bucket's refill rate and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size: the largest burst.
    pub burst: f64,
}

impl Action {
    /// Fly's documented limit for this action (reference §5).
    pub fn limit(self) -> Limit {
        match self {
            Action::GetMachine => Limit {
                per_second: 5.0,
                burst: 10.0,
            },
            Action::DeleteApp => Limit {
                per_second: 100.0 / 60.0,
                burst: 100.0,
            },
            _ => Limit {
                per_second: 1.0,
                burst: 3.0,
            },
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    limit: Limit,
}

impl Bucket {
    fn new(limit: Limit, now: Instant) -> Self {
        Bucket {
            tokens: limit.burst,
            last: now,
            limit,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.per_second).min(self.limit.burst);
        self.last = now;
    }

    /// Takes one token, going into debt if none is left, and says how long the caller must
    /// wait for its token. Debt makes waiters line up in arrival order.
    fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.limit.per_second)
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.limit.burst
    }
}

/// Buckets keyed by (action, scope), where scope is the app name or machine id Fly counts by.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(Action, String), Bucket>>,
}

/// Above this many buckets, full (idle) ones are dropped; they would start full anyway.
const PRUNE_ABOVE: usize = 4096;

impl RateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        RateLimiter::default()
    }

    /// Reserves a token and returns how long to wait before sending.
    pub fn reserve(&self, action: Action, scope: &str) -> Duration {
        let now = Instant::now();
        // A poisoned lock only means another task panicked mid-update of plain numbers; the
        // numbers are still usable.
        let mut buckets = crate::sync::lock(&self.buckets);
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| !b.is_full(now));
        }
        buckets
            .entry((action, scope.to_string()))
            .or_insert_with(|| Bucket::new(action.limit(), now))
            .reserve(now)
    }

    /// Waits until a request of `action` on `scope` may be sent.
    pub async fn acquire(&self, action: Action, scope: &str) {
        let wait = self.reserve(action, scope);
        if !wait.is_zero() {
            tracing::debug!(
                ?action,
                scope,
                wait_ms = wait.as_millis() as u64,
                "rate limit: waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_of_three_then_one_per_second() {
        let limiter = RateLimiter::new();
        let waits: Vec<Duration> = (0..6)
            .map(|_| limiter.reserve(Action::CreateMachine, "demo-cp"))
            .collect();
        assert_eq!(
            waits,
            vec![
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(3),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_over_time() {
        let limiter = RateLimiter::new();
        for _ in 0..3 {
            assert_eq!(limiter.reserve(Action::StartMachine, "m1"), Duration::ZERO);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(limiter.reserve(Action::StartMachine, "m1"), Duration::ZERO);
        assert_eq!(limiter.reserve(Action::StartMachine, "m1"), Duration::ZERO);
        assert_eq!(
            limiter.reserve(Action::StartMachine, "m1"),
            Duration::from_secs(1)
        );
        // A long idle period does not build up more than the burst.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(limiter.reserve(Action::StartMachine, "m1"), Duration::ZERO);
        }
        assert!(limiter.reserve(Action::StartMachine, "m1") > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn get_machine_allows_ten_then_five_per_second() {
        let limiter = RateLimiter::new();
        for _ in 0..10 {
            assert_eq!(limiter.reserve(Action::GetMachine, "m1"), Duration::ZERO);
        }
        assert_eq!(
            limiter.reserve(Action::GetMachine, "m1"),
            Duration::from_millis(200)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_are_separate_per_action_and_scope() {
        let limiter = RateLimiter::new();
        for _ in 0..3 {
            limiter.reserve(Action::StopMachine, "m1");
        }
        assert!(limiter.reserve(Action::StopMachine, "m1") > Duration::ZERO);
        assert_eq!(limiter.reserve(Action::StopMachine, "m2"), Duration::ZERO);
        assert_eq!(limiter.reserve(Action::StartMachine, "m1"), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_sleeps_for_the_reserved_time() {
        let limiter = RateLimiter::new();
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire(Action::CreateVolume, "demo-cp").await;
        }
        // With paused time the clock moves only by the sleeps: 3 free, then 1 s each.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
