//! `fks-bootstrap upgrade CLUSTER_DIR [--k3s-version V]`: roll a new k3s version (or any config
//! drift) out to the whole cluster on the converge path: the control plane first (servers one
//! at a time, each Ready with its etcd member healthy), then every node group of the cluster
//! in name order (workers in batches). The node image for the new version is built and pushed
//! by the image step when the config has no IMAGE, as `-c` does.
//!
//! `--k3s-version` is written into the cluster directory's `config` before anything changes on
//! Fly (so a later `-c` does not roll back), and only after the version skew check passed
//! against the running servers. The refusals themselves live in `plan::skew`.
//!
//! Must not: run anything the user typed as shell code; write the config on `--dry-run`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

use super::create::{converge, RunFlags};
use crate::config::{Config, SHELL_FILE, TOML_FILE};
use crate::observe;
use crate::plan::{self, Target, META_CLUSTER, META_NODE};

/// Upgrade k3s (or converge any config change) across the cluster.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// The k3s version to move to, e.g. v1.34.1+k3s1 (written to the config's K3S_VERSION).
    /// Without it, the config's K3S_VERSION is rolled out.
    #[arg(long, value_name = "V")]
    pub k3s_version: Option<String>,
    #[command(flatten)]
    pub run: RunFlags,
}

fn usage(e: impl Into<anyhow::Error>) -> super::Error {
    super::Error::Usage(e.into())
}

fn failed(e: impl Into<anyhow::Error>) -> super::Error {
    super::Error::Failed(e.into())
}

/// Sets `K3S_VERSION=` in the shell-format `config` of `dir` (the line replaced in place, or
/// appended). A `cluster.toml` is not rewritten: the user edits it.
fn write_version(dir: &Path, version: &str) -> Result<(), super::Error> {
    let path = dir.join(SHELL_FILE);
    if !path.is_file() {
        return Err(usage(anyhow!(
            "{} uses {TOML_FILE}: set K3S_VERSION there to {version} and run `fks-bootstrap upgrade {}` without --k3s-version",
            dir.display(),
            dir.display()
        )));
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(failed)?;
    let mut found = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("K3S_VERSION=") {
            found = true;
            out.push_str(&format!("K3S_VERSION={version}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&format!("K3S_VERSION={version}\n"));
    }
    std::fs::write(&path, out)
        .with_context(|| format!("writing K3S_VERSION to {}", path.display()))
        .map_err(failed)
}

/// The node groups of the cluster (apps `<cluster>-ng-<group>`), sorted.
fn node_groups(apps: &[observe::AppState], config: &Config) -> Vec<String> {
    let prefix = format!("{}-ng-", config.cluster_name);
    apps.iter()
        .filter_map(|a| a.app.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

/// `upgrade`.
pub fn run(args: Args) -> Result<(), super::Error> {
    let mut config = super::load_config(&args.cluster_dir)?;
    let client = super::fly_client()?;
    let rt = super::runtime()?;
    let apps = rt
        .block_on(observe::cluster(&client, &config))
        .map_err(failed)?;
    let changed = match &args.k3s_version {
        Some(v) if *v != config.k3s_version => {
            if !crate::config::is_k3s_version(v) {
                return Err(usage(anyhow!(
                    "--k3s-version {v:?} is not a k3s version: want v<major>.<minor>.<patch>+k3s<N>, e.g. v1.34.1+k3s1"
                )));
            }
            config.k3s_version = v.clone();
            true
        }
        _ => false,
    };
    // The skew check against every node of the cluster before anything is written or changed.
    // Workers are not checked against the servers here: the servers move first; each node
    // group's converge checks against the servers it then observes.
    let cp_app = config.cp_app();
    for a in &apps {
        let ours: Vec<(&str, &crate::fly::types::Machine)> = a
            .machines
            .iter()
            .filter(|m| m.metadata(META_CLUSTER) == Some(config.cluster_name.as_str()))
            .filter_map(|m| m.metadata(META_NODE).map(|n| (n, m)))
            .collect();
        plan::skew::check(&a.app, &config.k3s_version, &ours, &[]).map_err(usage)?;
    }
    if changed && !args.run.dry_run {
        write_version(&args.cluster_dir, &config.k3s_version)?;
        eprintln!(
            "[INFO] K3S_VERSION={} written to {}",
            config.k3s_version,
            args.cluster_dir.join(SHELL_FILE).display()
        );
    }
    let cp = Target::control_plane(super::create::bootstrap_index()?).map_err(usage)?;
    eprintln!("[INFO] upgrade: control plane {cp_app} first, servers one at a time");
    converge(&config, &args.cluster_dir, &cp, &args.run, false)?;
    for group in node_groups(&apps, &config) {
        let target = Target::node_group(&group).map_err(usage)?;
        eprintln!(
            "[INFO] upgrade: node group {group} ({})",
            config.node_group_app(&group)
        );
        converge(&config, &args.cluster_dir, &target, &args.run, false)?;
    }
    Ok(())
}
