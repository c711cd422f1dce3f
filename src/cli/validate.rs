//! `fks-bootstrap validate CLUSTER_DIR [--json]`: load and check a cluster config, print the
//! resolved values (defaults filled in) on stdout, or every problem on stderr with exit 2.
//!
//! Reads the one config file; touches nothing else (no Fly API, no network).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::config;

/// Check a cluster config and print the resolved values.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// Print the resolved config as JSON instead of KEY=VALUE lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<(), super::Error> {
    let cfg = config::load(&args.cluster_dir).map_err(|e| match e {
        config::Error::Read { .. } => super::Error::Failed(e.into()),
        _ => super::Error::Usage(e.into()),
    })?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&cfg)
            .context("serializing the config")
            .map_err(super::Error::Failed)?;
        json.push('\n');
        json
    } else {
        listing(&cfg)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")
        .map_err(super::Error::Failed)
}

/// `KEY=VALUE` lines in file order, with the machine sizes spelled out in comments.
fn listing(cfg: &config::Config) -> String {
    let mut out = format!("# {} (valid)\n", cfg.source.display());
    for (key, value) in cfg.entries() {
        out.push_str(&format!("{key}={value}\n"));
    }
    if cfg.image.is_none() {
        out.push_str("# IMAGE unset: -c builds the cluster's node image and pushes it to <registry>/<cluster>-cp; node groups run the image of their servers\n");
    }
    for (what, vm) in [("control plane", &cfg.cp_vm), ("workers", &cfg.worker_vm)] {
        out.push_str(&format!(
            "# {what}: {} = {} {} vCPU, {} MB\n",
            vm.preset,
            vm.cpus,
            vm.cpu_kind.as_str(),
            vm.memory_mb
        ));
    }
    out
}
