//! The operator <-> machine contract: every name the operator writes into a machine (env vars,
//! file paths, metadata keys, app secret names) and `node init` reads back, defined once here.
//! Both sides import this module; the operator builds it on every platform (the rest of `node`
//! is Linux only). Changing a value here changes it on both sides at once; a node image and an
//! operator of different versions must agree on these, so change them only with a migration.
//!
//! Pure: constants and one naming function. Must not: hold a secret value.

/// Machine environment. The operator sets the `FKS_*` ones in the machine config; Fly's init
/// sets the `FLY_*` ones at boot (reference/fly-machines-api.md §7). Never a secret: env is
/// visible in the machine config.
pub mod env {
    /// The cluster name.
    pub const CLUSTER: &str = "FKS_CLUSTER";
    /// The node name (`ctrl-0`, `worker-ng-a-1`).
    pub const NODE_NAME: &str = "FKS_NODE_NAME";
    /// `server` or `agent` (the `fks_role` metadata value).
    pub const ROLE: &str = "FKS_ROLE";
    /// The region the operator asked for.
    pub const REGION: &str = "FKS_REGION";
    /// The zone of the node's volume (absent when the volume is made in the same run and its
    /// zone was not known when the machine was planned; `run` then adds it).
    pub const ZONE: &str = "FKS_ZONE";
    /// N of the bootstrap `ctrl-N` (servers only).
    pub const BOOTSTRAP_NODE_ID: &str = "FKS_BOOTSTRAP_NODE_ID";
    /// The bootstrap server's machine id (joining servers only).
    pub const BOOTSTRAP_MACHINE_ID: &str = "FKS_BOOTSTRAP_MACHINE_ID";
    /// Set to `1` by `create --allow-missing-kernel-options`: `node init` then logs missing
    /// required kernel options instead of refusing to start k3s.
    pub const ALLOW_MISSING_KERNEL_OPTIONS: &str = "FKS_ALLOW_MISSING_KERNEL_OPTIONS";
    /// Fly: the machine's id.
    pub const FLY_MACHINE_ID: &str = "FLY_MACHINE_ID";
    /// Fly: the machine's app.
    pub const FLY_APP_NAME: &str = "FLY_APP_NAME";
    /// Fly: the region the machine runs in.
    pub const FLY_REGION: &str = "FLY_REGION";
    /// Fly: the machine's 6PN address (it changes when the machine moves).
    pub const FLY_PRIVATE_IP: &str = "FLY_PRIVATE_IP";
}

/// Paths inside a machine.
pub mod path {
    /// Where every node mounts its volume.
    pub const DATA_MOUNT: &str = "/data";
    /// k3s's data dir: on the node's volume, so etcd and the token survive a machine
    /// replacement (reference/k3s-sh-behaviour.md "Node side").
    pub const DATA_DIR: &str = "/data/k3s";
    /// Where the bootstrap server's k3s keeps the join token (under [`DATA_DIR`]).
    pub const SERVER_TOKEN: &str = "/data/k3s/server/token";
    /// Where the platform delivers the cluster config (a machine file).
    pub const CONFIG_DIR: &str = "/etc/fks/cluster";
    /// The cluster config file: every setting as `KEY=VALUE` lines.
    pub const CLUSTER_CONFIG: &str = "/etc/fks/cluster/config";
    /// The file the platform writes from the join-token app secret ([`super::secret::K3S_TOKEN`]).
    /// The token never appears in the config itself or in machine env
    /// (reference/k3s-sh-behaviour.md, known defects).
    pub const TOKEN_FILE: &str = "/etc/fks/k3s-token";
    /// The kubeconfig k3s writes on a server.
    pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
    /// The node's SSH host private key (the path Debian's sshd uses).
    pub const SSH_HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";
    /// The node's SSH host public key.
    pub const SSH_HOST_PUBLIC_KEY: &str = "/etc/ssh/ssh_host_ed25519_key.pub";
    /// The only authorized_keys file the node's SSH server reads.
    pub const AUTHORIZED_KEYS: &str = "/root/.ssh/authorized_keys";
}

/// Machine metadata keys: how the operator recognises its machines.
pub mod meta {
    /// The cluster a machine belongs to. A machine without it is never touched.
    pub const CLUSTER: &str = "fks_cluster";
    /// The node name (`ctrl-0`, `worker-ng-a-1`).
    pub const NODE: &str = "fks_node";
    /// `server` or `agent`.
    pub const ROLE: &str = "fks_role";
    /// Set (`true`) once the node's k3s is Ready (and, for a server, tainted), so a re-plan
    /// skips it.
    pub const READY: &str = "fks_ready";
    /// A create's idempotency id (`fks_launch_id=<uuid>`; reference fly-machines-api.md §5).
    pub const LAUNCH_ID: &str = "fks_launch_id";
    /// Set (`update`) before fks-bootstrap cordons a node for its update and deleted once the
    /// node is uncordoned again, so a run killed in between leaves a mark the next run finds
    /// and finishes (it uncordons only nodes it marked, never a node someone else cordoned).
    pub const CORDONED: &str = "fks_cordoned";
}

/// App secrets (names only; values never pass through here).
pub mod secret {
    /// The app secret that holds the k3s join token, delivered as [`super::path::TOKEN_FILE`].
    pub const K3S_TOKEN: &str = "K3S_TOKEN";
    /// The prefix of every other secret fks-bootstrap writes (the nodes' private files).
    pub const FILE_PREFIX: &str = "FKS_";

    /// The app secret that holds a node's private file (mode 0600): `FKS_<NODE>_<FILE NAME>` in
    /// upper case with `_` for anything else, e.g. `FKS_CTRL_0_SSH_HOST_ED25519_KEY`.
    pub fn file_secret_name(node: &str, guest_path: &str) -> String {
        let file = guest_path.rsplit('/').next().unwrap_or(guest_path);
        format!("{FILE_PREFIX}{node}_{file}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// Whether `name` is a secret only fks-bootstrap writes.
    pub fn is_ours(name: &str) -> bool {
        name == K3S_TOKEN || name.starts_with(FILE_PREFIX)
    }
}

/// The machine's init: the node side of this tool.
pub const INIT_EXEC: [&str; 3] = ["fks-bootstrap", "node", "init"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_secret_names_are_upper_case_with_underscores() {
        assert_eq!(
            secret::file_secret_name("ctrl-0", path::SSH_HOST_KEY),
            "FKS_CTRL_0_SSH_HOST_ED25519_KEY"
        );
        assert!(secret::is_ours("FKS_CTRL_0_SSH_HOST_ED25519_KEY"));
        assert!(secret::is_ours(secret::K3S_TOKEN));
        assert!(!secret::is_ours("DATABASE_URL"));
    }

    #[test]
    fn paths_nest_where_the_node_expects_them() {
        assert!(path::DATA_DIR.starts_with(path::DATA_MOUNT));
        assert!(path::SERVER_TOKEN.starts_with(path::DATA_DIR));
        assert!(path::CLUSTER_CONFIG.starts_with(path::CONFIG_DIR));
    }
}
