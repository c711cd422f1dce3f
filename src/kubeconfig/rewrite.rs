//! Parsing kubeconfig text and turning the bootstrap node's `/etc/rancher/k3s/k3s.yaml` into
//! the operator's kubeconfig for one cluster. Pure: no I/O here.
//!
//! k3s writes one cluster, one user and one context, all named `default`, with the server at
//! the loopback address: `https://127.0.0.1:6443`, or `https://[::1]:6443` when the primary
//! service CIDR is IPv6, as it is for fks clusters (reference/k3s.md §4).

use super::model::Kubeconfig;
use super::{Error, Result};

/// The name k3s gives its cluster, user and context (reference/k3s.md §4).
pub const K3S_ENTRY_NAME: &str = "default";

/// The API server address for operators: the control-plane app's `.internal` name, which every
/// server already carries in `tls-san` (ARCHITECTURE.md, issue 5).
pub fn cluster_server_url(cluster: &str) -> String {
    format!("https://{cluster}-cp.internal:6443")
}

/// Parses kubeconfig text; `origin` (a path, or a description) names it in errors. Empty text
/// is an empty kubeconfig, as kubectl treats it.
pub fn parse(text: &str, origin: &str) -> Result<Kubeconfig> {
    if text.trim().is_empty() {
        return Ok(Kubeconfig::default());
    }
    serde_yaml_ng::from_str(text).map_err(|source| Error::Parse {
        origin: origin.to_string(),
        source,
    })
}

/// Rewrites k3s's kubeconfig for cluster `cluster`: the server becomes `server`, `default`
/// becomes `cluster` in the cluster, user and context entries and in the context's references,
/// and `current-context` is `cluster`. Everything else (CA data, client certificate and key,
/// preferences) is kept.
///
/// Fails when the text is not a kubeconfig as k3s writes it: not exactly one cluster, user and
/// context named `default`, a context that points elsewhere, or a server that is not `https`.
/// Whatever host k3s wrote (`127.0.0.1`, `[::1]`, `localhost`, or a `bind-address`) is replaced.
pub fn rewrite(k3s_yaml: &str, cluster: &str, server: &str) -> Result<Kubeconfig> {
    check_cluster_name(cluster)?;
    check_server(server)?;
    let mut cfg = parse(k3s_yaml, "the k3s kubeconfig")?;
    let not_k3s = |reason: String| Error::NotK3s { reason };

    let [entry] = cfg.clusters.as_mut_slice() else {
        return Err(not_k3s(format!(
            "expected one cluster, found {}",
            cfg.clusters.len()
        )));
    };
    if entry.name != K3S_ENTRY_NAME {
        return Err(not_k3s(format!(
            "cluster is named {:?}, not \"default\"",
            entry.name
        )));
    }
    match entry.cluster.server.as_deref() {
        Some(old) if is_https(old) => {}
        Some(old) => {
            return Err(not_k3s(format!(
                "cluster server {old:?} is not an https url"
            )))
        }
        None => return Err(not_k3s("cluster has no server".to_string())),
    }
    entry.name = cluster.to_string();
    entry.cluster.server = Some(server.to_string());

    let [user] = cfg.users.as_mut_slice() else {
        return Err(not_k3s(format!(
            "expected one user, found {}",
            cfg.users.len()
        )));
    };
    if user.name != K3S_ENTRY_NAME {
        return Err(not_k3s(format!(
            "user is named {:?}, not \"default\"",
            user.name
        )));
    }
    user.name = cluster.to_string();

    let [context] = cfg.contexts.as_mut_slice() else {
        return Err(not_k3s(format!(
            "expected one context, found {}",
            cfg.contexts.len()
        )));
    };
    if context.name != K3S_ENTRY_NAME {
        return Err(not_k3s(format!(
            "context is named {:?}, not \"default\"",
            context.name
        )));
    }
    for (what, reference) in [
        ("cluster", &mut context.context.cluster),
        ("user", &mut context.context.user),
    ] {
        if reference.as_deref() != Some(K3S_ENTRY_NAME) {
            return Err(not_k3s(format!(
                "context refers to {what} {reference:?}, not \"default\""
            )));
        }
        *reference = Some(cluster.to_string());
    }
    context.name = cluster.to_string();

    match cfg.current_context.as_deref() {
        None | Some(K3S_ENTRY_NAME) => cfg.current_context = Some(cluster.to_string()),
        Some(other) => {
            return Err(not_k3s(format!(
                "current-context is {other:?}, not \"default\""
            )))
        }
    }
    Ok(cfg)
}

fn is_https(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
}

fn check_server(server: &str) -> Result<()> {
    if is_https(server) {
        return Ok(());
    }
    Err(Error::Invalid {
        what: "server url",
        value: server.to_string(),
        reason: "expected an https url with a host",
    })
}

/// Cluster names become entry names and the file name `~/.kube/<cluster>`, so they stay plain.
fn check_cluster_name(cluster: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !cluster.is_empty() && !cluster.starts_with('.') && cluster.chars().all(plain) {
        return Ok(());
    }
    Err(Error::Invalid {
        what: "cluster name",
        value: cluster.to_string(),
        reason: "use letters, digits, '-', '_' and '.', not starting with '.'",
    })
}
