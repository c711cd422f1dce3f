//! fks-lab library: the pieces of the local Fly Machines platform that the `fks-lab` binary runs.
pub mod dns;
pub mod guest;
