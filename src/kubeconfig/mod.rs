//! Kubeconfig files for `fks-bootstrap -k` (issue 5): a typed model that keeps every field it
//! does not know (so nothing in a user's `~/.kube/config` is lost), the pure rewrite of the
//! bootstrap node's `k3s.yaml` (`rewrite`), the pure merge into an existing file (`merge`), and
//! a small writer for private files (`file`). Reading the file over SSH is the caller's job.
//!
//! Must not: print or log credentials. `User`'s `Debug` redacts every value, and no error
//! carries file contents.

mod file;
mod merge;
mod model;
mod rewrite;

use std::path::PathBuf;

pub use file::{
    backup_name, cluster_path, merge_into, merge_path, read, write_private, MergeReport,
};
pub use merge::merge;
pub use model::{Cluster, Context, Kubeconfig, NamedCluster, NamedContext, NamedUser, User};
pub use rewrite::{cluster_server_url, parse, rewrite, K3S_ENTRY_NAME};

/// Everything that can go wrong with a kubeconfig; variants name the file or entry concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not YAML of a kubeconfig's shape.
    #[error("{origin} is not a valid kubeconfig")]
    Parse {
        /// Where the text came from: a path, or "the k3s kubeconfig".
        origin: String,
        /// The YAML error (line and column, never the contents).
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// The text parsed but is not what k3s writes (reference/k3s.md §4: one cluster, user and
    /// context, all named `default`).
    #[error("not a k3s kubeconfig: {reason}")]
    NotK3s {
        /// What differs from k3s's layout.
        reason: String,
    },
    /// A name or URL handed in by the caller cannot be used.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// "cluster name" or "server url".
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Serializing the kubeconfig failed (should not happen for a parsed one).
    #[error("serializing the kubeconfig for {path}")]
    Serialize {
        /// The file being written.
        path: PathBuf,
        /// The YAML error.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A file system operation on a kubeconfig, its backup or its directory failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done ("reading", "creating directory", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
