//! Lease calls of [`Client`]: acquire, refresh, get, release (reference fly-machines-api.md
//! §2.3.2). A lease is an advisory lock; while it is held, mutating calls must carry its nonce.
//!
//! Must not: log nonces at more than debug level alongside anything secret (nonces are not
//! secrets, but they grant the right to change the Machine).

use reqwest::Method;

use super::client::{Call, Client};
use super::error::Error;
use super::ratelimit::Action;
use super::retry::RetryClass;
use super::types::{CreateLeaseRequest, Lease, LeaseResponse};

impl Client {
    /// Acquires a lease of `ttl_secs` seconds. A 409 (someone else holds it) is retried with
    /// backoff within the retry policy, as flyctl means to (§2.3.2).
    pub async fn acquire_lease(
        &self,
        app: &str,
        id: &str,
        ttl_secs: u64,
        description: Option<&str>,
    ) -> Result<Lease, Error> {
        let call = Call::new(
            format!("acquiring a lease on machine {id} in app {app}"),
            Method::POST,
            &["apps", app, "machines", id, "lease"],
            Action::Lease,
            id,
        )
        .class(RetryClass::LeaseAcquire)
        .json(&CreateLeaseRequest {
            ttl: Some(ttl_secs),
            description: description.map(str::to_string),
        })?;
        lease_of(&call.op, self.execute_json(&call).await?)
    }

    /// Extends a held lease: the same POST, carrying the current nonce.
    pub async fn refresh_lease(
        &self,
        app: &str,
        id: &str,
        nonce: &str,
        ttl_secs: u64,
    ) -> Result<Lease, Error> {
        let call = Call::new(
            format!("refreshing the lease on machine {id} in app {app}"),
            Method::POST,
            &["apps", app, "machines", id, "lease"],
            Action::Lease,
            id,
        )
        .class(RetryClass::Idempotent)
        .nonce(Some(nonce))
        .json(&CreateLeaseRequest {
            ttl: Some(ttl_secs),
            description: None,
        })?;
        lease_of(&call.op, self.execute_json(&call).await?)
    }

    /// The current lease, or `None` when the Machine has none (404).
    pub async fn get_lease(&self, app: &str, id: &str) -> Result<Option<Lease>, Error> {
        let call = Call::new(
            format!("getting the lease on machine {id} in app {app}"),
            Method::GET,
            &["apps", app, "machines", id, "lease"],
            Action::Lease,
            id,
        );
        match self.execute_json::<LeaseResponse>(&call).await {
            Ok(resp) => Ok(resp.data.filter(|l| !l.nonce.is_empty())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Releases a lease. "lease not found" (already expired or released) counts as done,
    /// as flyctl treats it.
    pub async fn release_lease(&self, app: &str, id: &str, nonce: &str) -> Result<(), Error> {
        let call = Call::new(
            format!("releasing the lease on machine {id} in app {app}"),
            Method::DELETE,
            &["apps", app, "machines", id, "lease"],
            Action::Lease,
            id,
        )
        .nonce(Some(nonce));
        match self.execute(&call).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e)
                if e.api()
                    .is_some_and(|a| a.body.text().contains("lease not found")) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The lease out of an envelope; an envelope without one is an error.
fn lease_of(op: &str, resp: LeaseResponse) -> Result<Lease, Error> {
    match resp.data {
        Some(lease) if !lease.nonce.is_empty() => Ok(lease),
        _ => Err(Error::NoLease {
            op: op.to_string(),
            status: resp.status,
        }),
    }
}
