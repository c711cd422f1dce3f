//! `fks-bootstrap kubectl CLUSTER_DIR -- ARGS`: runs the real `kubectl` against the cluster
//! with the proxy (`cli::proxy`) up in this process for its duration, on an ephemeral port of
//! 127.0.0.1, so a machine that is not on 6PN needs nothing but the Fly token.
//!
//! The credentials come the way `kubeconfig` (`-k`) gets them (k3s's kubeconfig read through
//! the Machines API exec), rewritten for `https://127.0.0.1:PORT` and written to a private
//! temporary directory (0700, the file 0600) that is removed when kubectl ends. kubectl's
//! exit status is this command's.
//! Must not: pass the arguments through a shell (they go to kubectl as an argument vector),
//! or leave the temporary kubeconfig behind.

use std::path::PathBuf;
use std::process::ExitStatus;

use super::kubeconfig::{fetch, local_server_url};
use crate::kubeconfig;

/// The program run: kubectl from PATH.
const KUBECTL: &str = "kubectl";

/// Examples shown by `kubectl --help`.
pub const AFTER_HELP: &str = "\
Examples:
  fks-bootstrap kubectl clusters/lab -- get nodes -o wide
  fks-bootstrap kubectl clusters/lab -- describe node ctrl-0

kubectl (from PATH) runs with KUBECONFIG set to a temporary kubeconfig for the in-process proxy
(see `fks-bootstrap proxy --help`); the arguments after `--` go to it unchanged, and its exit
status is this command's.";

/// Run kubectl against the cluster through an in-process proxy.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// kubectl's arguments (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Why kubectl could not be run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the cluster's credentials failed.
    #[error("reading the credentials of cluster {cluster}")]
    Credentials {
        /// Cluster name.
        cluster: String,
        /// Why.
        #[source]
        source: super::kubeconfig::Error,
    },
    /// The proxy could not start.
    #[error(transparent)]
    Proxy(#[from] super::proxy::Error),
    /// The temporary kubeconfig could not be written.
    #[error("writing the temporary kubeconfig of cluster {cluster}")]
    Kubeconfig {
        /// Cluster name.
        cluster: String,
        /// Why.
        #[source]
        source: kubeconfig::Error,
    },
    /// The temporary directory could not be made.
    #[error("creating a private temporary directory in {dir}")]
    TempDir {
        /// Where.
        dir: PathBuf,
        /// The OS's error.
        #[source]
        source: std::io::Error,
    },
    /// kubectl could not be started.
    #[error("running {KUBECTL} (is it installed and on PATH?)")]
    Spawn(#[source] std::io::Error),
    /// SIGINT or SIGTERM could not be watched.
    #[error("watching SIGINT and SIGTERM while kubectl runs")]
    Signals(#[source] std::io::Error),
}

/// Runs `kubectl`: kubectl's exit status becomes this process's.
pub fn run(args: Args) -> Result<(), super::Error> {
    let bootstrap = super::create::bootstrap_index()?;
    let config = super::load_config(&args.cluster_dir)?;
    let client = super::fly_client()?;
    let status = super::runtime()?
        .block_on(async {
            // Both need the network; neither needs the other.
            let (yaml, proxy) = tokio::join!(
                fetch(&client, &config, &args.cluster_dir, bootstrap),
                super::proxy::start(&client, &config, &args.cluster_dir)
            );
            let yaml = yaml.map_err(|source| Error::Credentials {
                cluster: config.cluster_name.clone(),
                source,
            })?;
            let proxy = proxy?;
            let listener = super::proxy::listen(0).await?;
            let port = listener
                .local_addr()
                .map_err(|source| super::proxy::Error::Listen {
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    source,
                })?
                .port();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(proxy.serve(listener, async move {
                let _ = stopped.await;
            }));
            let status = with_kubeconfig(&config.cluster_name, &yaml, port, &args.args).await;
            let _ = stop.send(());
            let _ = serving.await;
            status
        })
        .map_err(|e| super::Error::Failed(e.into()))?;
    match exit_code(status) {
        0 => Ok(()),
        code => Err(super::Error::Status(code)),
    }
}

/// Writes the temporary kubeconfig for the proxy on `port`, runs kubectl with it, removes it.
async fn with_kubeconfig(
    cluster: &str,
    k3s_yaml: &str,
    port: u16,
    argv: &[String],
) -> Result<ExitStatus, Error> {
    let parent = std::env::temp_dir();
    // tempfile makes the directory 0700 and removes it (and the file) on drop.
    let dir = tempfile::Builder::new()
        .prefix("fks-kubectl-")
        .tempdir_in(&parent)
        .map_err(|source| Error::TempDir {
            dir: parent.clone(),
            source,
        })?;
    let wrap = |source| Error::Kubeconfig {
        cluster: cluster.to_string(),
        source,
    };
    let cfg = kubeconfig::rewrite(k3s_yaml, cluster, &local_server_url(port)).map_err(wrap)?;
    let path = kubeconfig::write_private(&dir.path().join("kubeconfig"), &cfg).map_err(wrap)?;
    let status = kubectl(&path, argv).await;
    drop(dir);
    status
}

/// Runs kubectl with `KUBECONFIG=path` and waits for it. SIGINT and SIGTERM end kubectl and
/// come back here, so the temporary kubeconfig is removed whatever happens.
async fn kubectl(path: &std::path::Path, argv: &[String]) -> Result<ExitStatus, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut child = tokio::process::Command::new(KUBECTL)
        .args(argv)
        .env("KUBECONFIG", path)
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::Spawn)?;
    // Watching the signals keeps them from ending this process before the cleanup.
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    loop {
        tokio::select! {
            status = child.wait() => return status.map_err(Error::Spawn),
            // A terminal's Ctrl-C reaches kubectl too; from elsewhere, end it.
            _ = int.recv() => { let _ = child.start_kill(); }
            _ = term.recv() => { let _ = child.start_kill(); }
        }
    }
}

/// kubectl's status as an exit code: its code, or 128+N when signal N ended it.
fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(255),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 255,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_code_is_kubectls_or_128_plus_the_signal() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(1 << 8)), 1);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
