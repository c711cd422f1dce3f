//! The Fly Machines API: wire types ([`types`], pure, shared with the lab) and a typed async
//! client ([`Client`]) for apps, volumes, machines, leases, metadata and app secrets, with
//! client-side rate limiting, safe retries and ambiguous-create recovery.
//!
//! Must not: read config files or print; callers decide what to show. Never logs the token or
//! secret values.

mod apps;
mod client;
pub mod duration;
pub mod error;
mod leases;
mod machines;
mod metadata;
pub mod ratelimit;
pub mod retry;
mod secrets;
pub mod types;
mod volumes;

pub use client::{parse_base_url, Client, Options, Token, DEFAULT_BASE_URL, LEASE_NONCE_HEADER};
pub use duration::GoDuration;
pub use error::{ApiError, Error};
pub use retry::{RetryPolicy, LAUNCH_ID_KEY};
pub use types::*;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod testserver;
