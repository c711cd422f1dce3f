//! fks-bootstrap: build and operate k3s clusters on Fly.io Machines.
//!
//! Data flows one way: flags -> [`config::Config`] (resolved once) -> observed state ->
//! plan (pure) -> run (effects). Pure modules (`config`, `kernel`, `render`, `fly::types`)
//! do no I/O beyond reading the files they are handed; effects live in `fly` and `cli`.

pub mod artifacts;
pub mod cli;
pub mod config;
pub mod contract;
pub mod errors;
pub mod etcd;
pub mod fly;
pub mod image;
pub mod kernel;
pub mod kubeconfig;
pub mod membership;
/// The machine entrypoint (`node init`): Linux only (mounts, prctl, namespaces), as Fly's
/// machines are Linux VMs. The operator CLI also builds on macOS (`scripts/check-portable.sh`).
#[cfg(target_os = "linux")]
pub mod node;
pub mod observe;
pub mod plan;
pub mod proxy;
pub mod render;
pub mod run;
pub mod ssh;
pub mod status;
pub mod sync;
pub mod tunnel;
