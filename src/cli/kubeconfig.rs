//! `fks-bootstrap kubeconfig CLUSTER_DIR [--merge [--use-context]] [--output PATH]` (k3s.sh's
//! `-k`): reads `/etc/rancher/k3s/k3s.yaml` from the bootstrap server through the Machines
//! API's exec (`cat`; reference fly-machines-api.md §3 "Exec"), so it needs neither SSH nor a
//! WireGuard tunnel to 6PN, only the API token; then rewrites it for the operator (server
//! `https://<cluster>-cp.internal:6443`, `default` renamed to the cluster name), writes it to
//! `~/.kube/<cluster>` with mode 0600 and, with `--merge`, merges it into `~/.kube/config` (or
//! `$KUBECONFIG`'s first file) after a backup. stdout: the paths written, one a line.
//!
//! With `--tunnel [--port P]` the server is `https://127.0.0.1:P` instead (default
//! [`DEFAULT_PORT`]), where `fks-bootstrap proxy` forwards to the cluster's API from a machine
//! that is not on 6PN; k3s's serving certificate includes 127.0.0.1 (reference/k3s.md §4
//! "tls-san / SANs"), so the cluster CA still verifies it.
//!
//! Must not: print or log any part of the kubeconfig (it holds the admin client key), switch
//! the current context of the merged file without `--use-context`, or touch a machine without
//! `fks_cluster=<cluster>` metadata.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::list::{self, NodeSet, Row};
use crate::config::Config;
use crate::errors::chain;
use crate::fly::Client;
use crate::kubeconfig::{self, Kubeconfig};
use crate::plan::{self, Target};
use crate::proxy::DEFAULT_PORT;

/// Where k3s writes its admin kubeconfig on a server (reference/k3s.md §4).
pub use crate::contract::path::K3S_KUBECONFIG as K3S_KUBECONFIG_PATH;

/// Export the cluster's kubeconfig.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// Also merge into ~/.kube/config (or the first file of $KUBECONFIG), after a backup.
    #[arg(long)]
    pub merge: bool,
    /// With --merge: make the cluster the merged file's current context.
    #[arg(long, requires = "merge")]
    pub use_context: bool,
    /// Write the cluster's kubeconfig here instead of ~/.kube/<cluster>.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Point the kubeconfig at `fks-bootstrap proxy` on this machine
    /// (https://127.0.0.1:PORT) instead of <cluster>-cp.internal, for a machine not on 6PN.
    #[arg(long)]
    pub tunnel: bool,
    /// With --tunnel: the proxy's port (default 16443, the proxy's default).
    #[arg(long, value_name = "PORT", requires = "tunnel", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
}

impl Args {
    /// The API server URL the kubeconfig gets.
    fn server(&self, cluster: &str) -> String {
        if self.tunnel {
            local_server_url(self.port.unwrap_or(DEFAULT_PORT))
        } else {
            kubeconfig::cluster_server_url(cluster)
        }
    }
}

/// `https://127.0.0.1:PORT`: the proxy on this machine.
pub(crate) fn local_server_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// Why the kubeconfig could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `BOOTSTRAP_NODE_ID` names no server.
    #[error(transparent)]
    Plan(#[from] plan::Error),
    /// Neither `--output` nor `$HOME` says where to write.
    #[error("HOME is not set: pass --output PATH")]
    NoHome,
    /// The control-plane app holds no started server of this cluster.
    #[error("app {app} has no started server of cluster {cluster} to read {K3S_KUBECONFIG_PATH} from (see fks-bootstrap -l cp {dir})")]
    NoStartedServer {
        /// The control-plane app.
        app: String,
        /// Cluster name.
        cluster: String,
        /// The cluster directory as the user gave it.
        dir: String,
    },
    /// Every started server was tried; none gave its kubeconfig.
    #[error("could not read {K3S_KUBECONFIG_PATH} from any server of app {app}: {failures}")]
    Unreadable {
        /// The control-plane app.
        app: String,
        /// `node: why` for each server tried, separated by `; `.
        failures: String,
    },
    /// The file read is not a k3s kubeconfig, or writing the result failed.
    #[error("kubeconfig of cluster {cluster}")]
    Kubeconfig {
        /// Cluster name.
        cluster: String,
        /// What went wrong (names the file; never its contents).
        #[source]
        source: kubeconfig::Error,
    },
    /// Finding the servers failed.
    #[error(transparent)]
    List(#[from] Box<list::Error>),
}

/// Why one server's kubeconfig could not be read (the next server is tried).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The exec call failed (the machine is not running, or the API refused).
    #[error(transparent)]
    Exec(#[from] crate::fly::Error),
    /// `cat` ran and failed (k3s has not written the file yet, say).
    #[error("`cat {K3S_KUBECONFIG_PATH}` exited with {code}: {stderr}")]
    Exit {
        /// Its exit code.
        code: i64,
        /// The first line of its stderr.
        stderr: String,
    },
}

/// Runs `kubeconfig` / `-k`.
pub fn run(args: Args) -> Result<(), super::Error> {
    let bootstrap = super::create::bootstrap_index()?;
    Target::control_plane(bootstrap).map_err(|e| super::Error::Usage(Error::from(e).into()))?;
    let config = super::load_config(&args.cluster_dir)?;
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    let targets = Targets::new(
        &args,
        &config.cluster_name,
        home.as_deref().map(Path::new),
        std::env::var_os("KUBECONFIG"),
    )
    .map_err(|e| super::Error::Usage(e.into()))?;
    let client = super::fly_client()?;
    let k3s_yaml = super::runtime()?
        .block_on(fetch(&client, &config, &args.cluster_dir, bootstrap))
        .map_err(|e| super::Error::Failed(e.into()))?;
    let server = args.server(&config.cluster_name);
    let written = export(
        &config.cluster_name,
        &k3s_yaml,
        &server,
        &targets,
        args.use_context,
    )
    .map_err(|e| super::Error::Failed(e.into()))?;
    super::output::stdout(&written)?;
    if args.tunnel {
        let port = args.port.unwrap_or(DEFAULT_PORT);
        eprintln!(
            "[INFO] this kubeconfig talks to {server}: keep `fks-bootstrap proxy {} --port {port}` \
             running while you use it (or run kubectl as `fks-bootstrap kubectl {} -- ARGS`)",
            args.cluster_dir.display(),
            args.cluster_dir.display()
        );
    }
    Ok(())
}

/// The files to write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Targets {
    /// The cluster's own kubeconfig.
    cluster_file: PathBuf,
    /// The file to merge into, with `--merge`.
    merge_file: Option<PathBuf>,
}

impl Targets {
    /// `--output` or `$HOME/.kube/<cluster>`; with `--merge`, `$KUBECONFIG`'s first entry or
    /// `$HOME/.kube/config`.
    fn new(
        args: &Args,
        cluster: &str,
        home: Option<&Path>,
        kubeconfig: Option<OsString>,
    ) -> Result<Self, Error> {
        let first_env = kubeconfig
            .as_deref()
            .and_then(|v| std::env::split_paths(v).find(|p| !p.as_os_str().is_empty()));
        let merge_file = if args.merge {
            Some(match first_env {
                Some(p) => p,
                None => kubeconfig::merge_path(home.ok_or(Error::NoHome)?),
            })
        } else {
            None
        };
        let cluster_file = match &args.output {
            Some(p) => p.clone(),
            None => kubeconfig::cluster_path(home.ok_or(Error::NoHome)?, cluster),
        };
        Ok(Targets {
            cluster_file,
            merge_file,
        })
    }
}

/// Reads the k3s kubeconfig from the bootstrap server, or from the other started servers in
/// name order when it is not started or cannot be read.
pub(crate) async fn fetch(
    client: &Client,
    config: &Config,
    dir: &Path,
    bootstrap: u32,
) -> Result<String, Error> {
    let app = config.cp_app();
    let owned = list::owned_machines(client, config, &NodeSet::ControlPlane, dir)
        .await
        .map_err(Box::new)?;
    let rows = list::build_rows(&app, &owned, &[]);
    let candidates = candidates(&rows, bootstrap);
    if candidates.is_empty() {
        return Err(Error::NoStartedServer {
            app,
            cluster: config.cluster_name.clone(),
            dir: dir.display().to_string(),
        });
    }
    let mut failures = Vec::new();
    for row in candidates {
        match read_k3s_yaml(client, row).await {
            Ok(text) => return Ok(text),
            Err(e) => {
                let why = chain(&e);
                tracing::warn!(node = %row.name, error = %why, "reading the kubeconfig failed; trying another server");
                failures.push(format!("{}: {why}", row.name));
            }
        }
    }
    Err(Error::Unreadable {
        app,
        failures: failures.join("; "),
    })
}

/// The started servers to try: `ctrl-<bootstrap>` first, then the others by name.
fn candidates(rows: &[Row], bootstrap: u32) -> Vec<&Row> {
    let first = format!("ctrl-{bootstrap}");
    let mut started: Vec<&Row> = rows
        .iter()
        .filter(|r| r.state == "started" && (r.role.is_empty() || r.role == "server"))
        .collect();
    // Stable: the rows are already in name order.
    started.sort_by_key(|r| r.name != first);
    started
}

/// One exec of `cat` on the server's machine. The file is small (a few KB); Fly documents no
/// size limit for exec output (unknown), and the answer is JSON text, so a kubeconfig, which is
/// UTF-8 YAML, arrives intact.
async fn read_k3s_yaml(client: &Client, row: &Row) -> Result<String, ReadError> {
    let req =
        crate::run::k3s::exec_request(vec!["cat".to_string(), K3S_KUBECONFIG_PATH.to_string()]);
    let out = client.exec(&row.app, &row.machine_id, &req).await?;
    if out.exit_code != 0 {
        return Err(ReadError::Exit {
            code: out.exit_code,
            stderr: crate::run::k3s::first_line(&out.stderr),
        });
    }
    Ok(out.stdout)
}

/// Rewrites, writes the cluster file and merges; returns the paths written, one a line. What
/// the merge did (backup, replaced entries, current context) goes to stderr.
fn export(
    cluster: &str,
    k3s_yaml: &str,
    server: &str,
    targets: &Targets,
    use_context: bool,
) -> Result<String, Error> {
    let wrap = |source| Error::Kubeconfig {
        cluster: cluster.to_string(),
        source,
    };
    let cfg: Kubeconfig = kubeconfig::rewrite(k3s_yaml, cluster, server).map_err(wrap)?;
    let mut written = vec![kubeconfig::write_private(&targets.cluster_file, &cfg).map_err(wrap)?];
    if let Some(merge_file) = &targets.merge_file {
        let report = kubeconfig::merge_into(merge_file, &cfg, use_context).map_err(wrap)?;
        if let Some(backup) = &report.backup {
            tracing::info!(
                "backed up {} to {}",
                report.path.display(),
                backup.display()
            );
        }
        tracing::info!(
            "merged cluster {cluster} into {} (replaced: {}; added: {}); current context: {}{}",
            report.path.display(),
            list_or_none(&report.replaced),
            list_or_none(&report.added),
            report.current_context.as_deref().unwrap_or("none"),
            if report.switched { " (switched)" } else { "" }
        );
        written.push(report.path);
    }
    Ok(written
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect())
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(merge: bool, output: Option<&str>) -> Args {
        Args {
            cluster_dir: PathBuf::from("clusters/lab"),
            merge,
            use_context: false,
            output: output.map(PathBuf::from),
            tunnel: false,
            port: None,
        }
    }

    fn row(name: &str, state: &str) -> Row {
        Row::for_test(name, state, "server", "fdaa::2", true)
    }

    #[test]
    fn candidates_put_the_bootstrap_server_first_then_other_started_ones() {
        let rows = [
            row("ctrl-0", "started"),
            row("ctrl-1", "stopped"),
            row("ctrl-2", "started"),
        ];
        let names = |v: Vec<&Row>| v.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(candidates(&rows, 2)), ["ctrl-2", "ctrl-0"]);
        assert_eq!(names(candidates(&rows, 1)), ["ctrl-0", "ctrl-2"]);
        assert!(candidates(&rows[1..2], 1).is_empty());
    }

    #[test]
    fn targets_default_to_home_kube_and_kubeconfigs_first_entry() {
        let home = Path::new("/home/op");
        let t = Targets::new(&args(false, None), "lab", Some(home), None).expect("targets");
        assert_eq!(t.cluster_file, Path::new("/home/op/.kube/lab"));
        assert_eq!(t.merge_file, None);

        let t = Targets::new(&args(true, None), "lab", Some(home), None).expect("targets");
        assert_eq!(
            t.merge_file.as_deref(),
            Some(Path::new("/home/op/.kube/config"))
        );

        let env = OsString::from(":/etc/k/a.yaml:/etc/k/b.yaml");
        let t = Targets::new(&args(true, Some("/tmp/x.yaml")), "lab", None, Some(env))
            .expect("targets");
        assert_eq!(t.cluster_file, Path::new("/tmp/x.yaml"));
        assert_eq!(t.merge_file.as_deref(), Some(Path::new("/etc/k/a.yaml")));

        assert!(matches!(
            Targets::new(&args(false, None), "lab", None, None),
            Err(Error::NoHome)
        ));
        assert!(matches!(
            Targets::new(&args(true, Some("/tmp/x")), "lab", None, None),
            Err(Error::NoHome)
        ));
    }

    const K3S_YAML: &str = "\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EtREFUQQ==
    server: https://[::1]:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0xJRU5ULUNFUlQ=
    client-key-data: U0VDUkVULUtFWQ==
";

    #[test]
    fn export_writes_a_private_file_and_merges_without_switching_context() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path();
        std::fs::create_dir(home.join(".kube")).expect("mkdir");
        let existing = "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts:\n- name: other\n  context: {cluster: o, user: o}\ncurrent-context: other\n";
        std::fs::write(home.join(".kube/config"), existing).expect("write");
        let t = Targets::new(&args(true, None), "lab", Some(home), None).expect("targets");
        let out =
            export("lab", K3S_YAML, "https://lab-cp.internal:6443", &t, false).expect("export");
        let lab = home.join(".kube/lab");
        let config = home.join(".kube/config");
        assert_eq!(out, format!("{}\n{}\n", lab.display(), config.display()));
        assert!(!out.contains("U0VDUkVULUtFWQ"), "secret on stdout");
        let mode = std::fs::metadata(&lab).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let written = kubeconfig::read(&lab).expect("read").expect("exists");
        assert_eq!(written.current_context.as_deref(), Some("lab"));
        assert_eq!(
            written.clusters[0].cluster.server.as_deref(),
            Some("https://lab-cp.internal:6443")
        );
        let merged = kubeconfig::read(&config).expect("read").expect("exists");
        assert_eq!(merged.current_context.as_deref(), Some("other"));
        assert!(merged.contexts.iter().any(|c| c.name == "lab"));
        let backups = std::fs::read_dir(home.join(".kube"))
            .expect("ls")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".bak"))
            })
            .count();
        assert_eq!(backups, 1);

        export("lab", K3S_YAML, "https://lab-cp.internal:6443", &t, true)
            .expect("export with use-context");
        let merged = kubeconfig::read(&config).expect("read").expect("exists");
        assert_eq!(merged.current_context.as_deref(), Some("lab"));
    }

    #[test]
    fn export_refuses_a_file_that_is_not_k3s_and_names_no_content() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = Targets::new(&args(false, None), "lab", Some(tmp.path()), None).expect("targets");
        let e = export(
            "lab",
            "clusters: [{name: x, cluster: {server: 'https://a'}}]\nusers: []\ncontexts: []\n",
            "https://lab-cp.internal:6443",
            &t,
            false,
        )
        .expect_err("not k3s");
        assert!(chain(&e).contains("not a k3s kubeconfig"), "{}", chain(&e));
        assert!(!tmp.path().join(".kube/lab").exists());
    }

    #[test]
    fn tunnel_points_the_kubeconfig_at_the_local_proxy() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut a = args(false, Some(&tmp.path().join("k").display().to_string()));
        assert_eq!(a.server("lab"), "https://lab-cp.internal:6443");
        a.tunnel = true;
        assert_eq!(a.server("lab"), "https://127.0.0.1:16443");
        a.port = Some(20443);
        assert_eq!(a.server("lab"), "https://127.0.0.1:20443");
        let t = Targets::new(&a, "lab", None, None).expect("targets");
        export("lab", K3S_YAML, &a.server("lab"), &t, false).expect("export");
        let written = kubeconfig::read(&t.cluster_file)
            .expect("read")
            .expect("exists");
        assert_eq!(
            written.clusters[0].cluster.server.as_deref(),
            Some("https://127.0.0.1:20443")
        );
    }
}
