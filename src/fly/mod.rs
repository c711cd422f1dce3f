//! The Fly Machines API: wire types ([`types`]) shared with the lab, and (in later modules) the
//! typed client that talks to `https://api.machines.dev/v1` or the lab.
//!
//! Must not: read config files or print; callers decide what to show.

pub mod duration;
pub mod types;

pub use duration::GoDuration;
pub use types::*;
