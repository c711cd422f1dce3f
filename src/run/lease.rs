//! The lease an update holds on a machine (reference fly-machines-api.md §2.3.2), held the way
//! flyctl's deploy holds one: a short TTL (flyctl's `DefaultLeaseTtl` is 13 s,
//! `internal/command/deploy/machines.go`) refreshed in the background every `(ttl - 1 s) / 3`
//! while the work goes on (`StartBackgroundLeaseRefresh` in
//! `internal/machine/leasable_machine.go`), then released. A run that is killed stops
//! refreshing, so its lease lapses within one TTL instead of blocking the next run for as long
//! as the longest update could take.
//!
//! Acquiring waits out a lease someone else holds: a 409 is followed by a read of the lease
//! (owner, description, `expires_at`) and a sleep until it has expired plus [`MARGIN`], said
//! in a log line, up to a deadline. flyctl itself does not read the holder's lease; it leans on
//! fly-go's acquire backoff (§2.3.2, which in practice does not retry). A lease that another
//! live holder keeps refreshing is never taken over: after the deadline the error names it.
//!
//! Must not: log a nonce above debug level, or release a lease while a refresh of it may still
//! be in flight (the refresher is stopped and awaited first).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fly::types::Lease;
use crate::fly::{Client, Error as FlyError};

use super::Error;

/// flyctl's lease TTL for deploys (`DefaultLeaseTtl`), the default of
/// [`super::Options::lease_ttl`].
pub const DEFAULT_TTL: Duration = Duration::from_secs(13);

/// Waited past a held lease's `expires_at` before trying again: `expires_at` is in whole
/// seconds, and this host's clock and Fly's may differ a little (by how much is unknown).
pub const MARGIN: Duration = Duration::from_secs(1);

/// Fly takes the TTL in whole seconds; below 2 s a refresh could not land in time.
const MIN_TTL_SECS: u64 = 2;

/// The TTL sent to Fly, in whole seconds.
pub fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(MIN_TTL_SECS)
}

/// How often a held lease of `ttl` is refreshed: flyctl's `(ttl - 1 s) / 3`, so two refreshes
/// can fail before the lease lapses.
pub fn refresh_every(ttl: Duration) -> Duration {
    (Duration::from_secs(ttl_secs(ttl)) - Duration::from_secs(1)) / 3
}

/// How long to sleep for a lease held until `expires_at` (unix seconds) when it is `now_s`:
/// until it has expired, plus [`MARGIN`].
pub fn wait_for(expires_at: i64, now_s: i64) -> Duration {
    let left = u64::try_from(expires_at.saturating_sub(now_s)).unwrap_or(0);
    Duration::from_secs(left) + MARGIN
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A lease this run holds, refreshed in the background until [`Held::release`]. Dropping it
/// without releasing (the step was cancelled) stops the refresh; the lease then lapses.
pub struct Held {
    app: String,
    id: String,
    nonce: String,
    stop: Option<oneshot::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

/// Who holds a lease, for the log line and the error.
fn holder(l: &Lease) -> String {
    match l.description.is_empty() {
        true => l.owner.clone(),
        false => format!("{} ({})", l.owner, l.description),
    }
}

/// Takes the lease on machine `id` of `app` for node `node`, waiting out one someone else
/// holds until `wait_until`; then refreshes it in the background.
pub async fn acquire(
    client: &Client,
    node: &str,
    app: &str,
    id: &str,
    ttl: Duration,
    description: &str,
    wait_until: Instant,
) -> Result<Held, Error> {
    let started = Instant::now();
    let secs = ttl_secs(ttl);
    let what = format!("node {node}: leasing machine {id} in app {app}");
    let lease = loop {
        match client.acquire_lease(app, id, secs, Some(description)).await {
            Ok(lease) => break lease,
            Err(e) if e.status_code() == Some(409) => {
                wait_out(client, node, app, id, started, wait_until, e, &what).await?;
            }
            Err(e) => return Err(fly_error(&what)(e)),
        }
    };
    let (stop, stopped) = oneshot::channel();
    let refresher = tokio::spawn(refresh_until_stopped(
        client.clone(),
        app.to_string(),
        id.to_string(),
        lease.nonce.clone(),
        ttl,
        stopped,
    ));
    Ok(Held {
        app: app.to_string(),
        id: id.to_string(),
        nonce: lease.nonce,
        stop: Some(stop),
        refresher: Some(refresher),
    })
}

fn fly_error(what: &str) -> impl FnOnce(FlyError) -> Error + '_ {
    move |source| Error::Fly {
        what: what.to_string(),
        source: Box::new(source),
    }
}

/// After a 409 (`conflict`) from a call on machine `id` (`what`, in words), waits out the
/// lease someone else holds on it: reads it and sleeps until it has expired plus [`MARGIN`],
/// saying so, then returns for the caller to try again. The lease outliving `wait_until` is
/// [`Error::LeaseHeld`]; no lease to be found (released meanwhile) returns after a short pause,
/// or `conflict` itself once past `wait_until`. `started` is when the caller began.
#[allow(clippy::too_many_arguments)]
pub async fn wait_out(
    client: &Client,
    node: &str,
    app: &str,
    id: &str,
    started: Instant,
    wait_until: Instant,
    conflict: FlyError,
    what: &str,
) -> Result<(), Error> {
    let Some(held) = client.get_lease(app, id).await.map_err(fly_error(what))? else {
        // Released or lapsed between the two calls: try again at once, but not in a tight
        // loop should the two answers keep disagreeing.
        if Instant::now() + MARGIN > wait_until {
            return Err(fly_error(what)(conflict));
        }
        tokio::time::sleep(MARGIN).await;
        return Ok(());
    };
    let wait = wait_for(held.expires_at, unix_now());
    if Instant::now() + wait > wait_until {
        return Err(Error::LeaseHeld {
            node: node.to_string(),
            app: app.to_string(),
            machine: id.to_string(),
            holder: holder(&held),
            expires_at: held.expires_at,
            waited: started.elapsed(),
        });
    }
    tracing::info!(
        %app, %node, machine = %id,
        "machine {id} in app {app} is leased by {} until {} (unix seconds); waiting {}s for that lease to expire",
        holder(&held), held.expires_at, wait.as_secs()
    );
    tokio::time::sleep(wait).await;
    Ok(())
}

/// Refreshes the lease every [`refresh_every`] until told to stop; a refresh in flight is
/// finished first. A failed refresh is logged and tried again at the next tick (flyctl does
/// the same); a machine that is gone ends the loop.
async fn refresh_until_stopped(
    client: Client,
    app: String,
    id: String,
    nonce: String,
    ttl: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let every = refresh_every(ttl);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(every) => {}
        }
        match client.refresh_lease(&app, &id, &nonce, ttl_secs(ttl)).await {
            Ok(l) if l.nonce == nonce => {
                tracing::debug!(%app, machine = %id, expires_at = l.expires_at, "lease refreshed");
            }
            Ok(_) => {
                tracing::warn!(%app, machine = %id, "refreshing the lease on machine {id} in app {app} returned another lease: ours is lost");
                return;
            }
            Err(e) if e.is_not_found() => return,
            Err(e) => {
                tracing::warn!(%app, machine = %id, error = %crate::errors::chain(&e), "refreshing the lease on machine {id} in app {app} failed; trying again");
            }
        }
    }
}

impl Held {
    /// The nonce to send on the guarded calls.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// Stops the refresh (waiting for one in flight), then releases the lease. A failed
    /// release only logs: the lease lapses within its TTL.
    pub async fn release(mut self, client: &Client, node: &str) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.refresher.take() {
            let _ = task.await;
        }
        if let Err(e) = client.release_lease(&self.app, &self.id, &self.nonce).await {
            tracing::warn!(app = %self.app, %node, machine = %self.id, error = %crate::errors::chain(&e), "releasing the update lease failed; it expires by itself");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flyctls_ttl_is_refreshed_every_four_seconds() {
        assert_eq!(ttl_secs(DEFAULT_TTL), 13);
        assert_eq!(refresh_every(DEFAULT_TTL), Duration::from_secs(4));
    }

    #[test]
    fn a_tiny_ttl_is_raised_to_two_seconds_and_refreshed_in_time() {
        assert_eq!(ttl_secs(Duration::from_millis(300)), 2);
        let every = refresh_every(Duration::from_millis(300));
        assert!(every < Duration::from_secs(1), "{every:?}");
    }

    #[test]
    fn the_wait_runs_past_the_expiry_by_the_margin() {
        assert_eq!(wait_for(1_000_013, 1_000_000), Duration::from_secs(14));
        // Already expired (clocks apart): only the margin.
        assert_eq!(wait_for(999_990, 1_000_000), MARGIN);
    }
}
