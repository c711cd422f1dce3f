//! k3s-standin: a test double for the slice of k3s that fks-bootstrap relies on. It is not k3s
//! and says so in its logs, `--version` and the API's `/version`.
//!
//! Owns the module tree only; see each module for what it does.

pub mod cli;
pub mod config;
pub mod etcd;
pub mod flannel;
pub mod http;
pub mod join;
pub mod kubeconfig;
pub mod log;
pub mod nodes;
pub mod pki;
pub mod run;
pub mod store;
