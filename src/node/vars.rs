//! The environment variables `node init` reads, in one place for the docs and the messages.
//! The operator writes them into machine env, so they are built on every platform (the rest of
//! `node` is Linux only).

pub const NODE_NAME: &str = "FKS_NODE_NAME";
pub const BOOTSTRAP_NODE_ID: &str = "FKS_BOOTSTRAP_NODE_ID";
pub const BOOTSTRAP_MACHINE_ID: &str = "FKS_BOOTSTRAP_MACHINE_ID";
pub const ZONE: &str = "FKS_ZONE";
/// Set to `1` by `create --allow-missing-kernel-options`: `node init` then logs missing
/// required kernel options instead of refusing to start k3s.
pub const ALLOW_MISSING_KERNEL_OPTIONS: &str = "FKS_ALLOW_MISSING_KERNEL_OPTIONS";
pub const MACHINE_ID: &str = "FLY_MACHINE_ID";
pub const APP_NAME: &str = "FLY_APP_NAME";
pub const REGION: &str = "FLY_REGION";
pub const PRIVATE_IP: &str = "FLY_PRIVATE_IP";
