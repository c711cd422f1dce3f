//! `fks-bootstrap create CLUSTER_DIR` (k3s.sh's `-c`) and `fks-bootstrap nodegroup add GROUP
//! CLUSTER_DIR` (`-a`): load the config, observe the target's app, plan, and execute the plan
//! concurrently (ARCHITECTURE.md "How `fks-bootstrap -c` flows"). Both are converges: a re-run
//! after any failure finishes the job, a re-run of a finished job changes nothing.
//!
//! On a terminal, progress is a live per-node view (volume → machine → started → k3s ready →
//! joined); otherwise one `[INFO]` line per node and phase. The summary goes to stdout.
//!
//! Must not: print or log the join token (it only passes through `run`), or put anything
//! secret into machine env (`--allow-missing-kernel-options` adds a plain flag).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Deserialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::output;
use crate::config::Config;
use crate::fly::Client;
use crate::node::env::vars;
use crate::plan::{self, Target};
use crate::run::{self, Event, Phase};
use crate::ssh::{self, ClusterKeys};

/// The environment variable that picks the bootstrap server (k3s.sh's `BOOTSTRAP_NODE_ID`).
pub const BOOTSTRAP_NODE_ID_ENV: &str = "BOOTSTRAP_NODE_ID";

/// Create (or converge) the control plane: three servers in distinct zones.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    #[command(flatten)]
    pub run: RunFlags,
}

/// `nodegroup` subcommands.
#[derive(Debug, clap::Args)]
pub struct NodegroupArgs {
    #[command(subcommand)]
    pub command: NodegroupCommand,
}

/// What to do with a node group.
#[derive(Debug, clap::Subcommand)]
pub enum NodegroupCommand {
    /// Add (or converge) a worker node group: NODE_GROUP_SIZE agents in distinct zones (-a).
    Add(GroupArgs),
}

/// Add (or converge) worker node group GROUP.
#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    /// The node group's name (lowercase letters and digits), e.g. 0 or web.
    pub group: String,
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    #[command(flatten)]
    pub run: RunFlags,
}

/// The default deadline of every wait, in seconds.
pub const DEFAULT_TIMEOUT: u64 = 300;

/// The flags `create` and `nodegroup add` share.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Create and node group flags (with -c, -a)")]
pub struct RunFlags {
    /// Print the plan and change nothing on Fly.
    #[arg(long)]
    pub dry_run: bool,
    /// Let volumes share a zone once the region's zones are used up (a zone outage then
    /// takes down more than one node).
    #[arg(long)]
    pub allow_shared_zones: bool,
    /// How many zones the region has (fks-lab tells; real Fly does not publish it).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub zones: Option<u32>,
    /// Start k3s even when the guest kernel lacks required options (sets
    /// FKS_ALLOW_MISSING_KERNEL_OPTIONS=1 on the machines); for kernels like the lab host's.
    #[arg(long)]
    pub allow_missing_kernel_options: bool,
    /// Deadline of every wait (machine started, k3s Ready), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

pub(crate) const AFTER_HELP: &str = "\
Re-running is safe: what exists is reused, nothing is created twice, and a finished cluster
makes no change. BOOTSTRAP_NODE_ID (0, 1 or 2; default 0) picks the server that starts the
cluster. Against fks-lab the region's zone count and whether machines really run are read
from the lab (GET /lab/v1/info); without guests the run ends when machines are started.";

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `BOOTSTRAP_NODE_ID` is not a number.
    #[error("{BOOTSTRAP_NODE_ID_ENV}={value:?} is not a server index: use 0, 1 or 2")]
    BootstrapIndex {
        /// The value as set.
        value: String,
    },
}

/// What fks-lab says about itself at `GET /lab/v1/info`.
#[derive(Debug, Clone, Deserialize)]
struct LabInfo {
    lab: String,
    guests: bool,
    #[serde(default)]
    zones: BTreeMap<String, Vec<String>>,
}

impl Default for RunFlags {
    /// What clap gives when no flag is passed.
    fn default() -> Self {
        RunFlags {
            dry_run: false,
            allow_shared_zones: false,
            zones: None,
            allow_missing_kernel_options: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl RunFlags {
    /// Whether every flag has its default (short forms accept them only with -c/-a).
    pub fn is_default(&self) -> bool {
        *self == RunFlags::default()
    }
}

/// `create` / `-c`.
pub fn run(args: Args) -> Result<(), super::Error> {
    let config = super::load_config(&args.cluster_dir)?;
    let target = Target::control_plane(bootstrap_index()?).map_err(usage)?;
    converge(&config, &args.cluster_dir, &target, &args.run)
}

/// `nodegroup add` / `-a`.
pub fn run_group(args: NodegroupArgs) -> Result<(), super::Error> {
    let NodegroupCommand::Add(args) = args.command;
    let config = super::load_config(&args.cluster_dir)?;
    let target = Target::node_group(&args.group).map_err(usage)?;
    converge(&config, &args.cluster_dir, &target, &args.run)
}

fn usage(e: impl Into<anyhow::Error>) -> super::Error {
    super::Error::Usage(e.into())
}

fn failed(e: impl Into<anyhow::Error>) -> super::Error {
    super::Error::Failed(e.into())
}

/// `BOOTSTRAP_NODE_ID` from the environment, 0 when unset or empty (also read by `kubeconfig`).
pub(super) fn bootstrap_index() -> Result<u32, super::Error> {
    match std::env::var(BOOTSTRAP_NODE_ID_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| usage(Error::BootstrapIndex { value: v })),
        _ => Ok(0),
    }
}

/// Asks the API host whether it is fks-lab. Real Fly answers 404 (or not at all): `None`.
async fn lab_info(client: &Client) -> Option<LabInfo> {
    let url = client.base_url().join("lab/v1/info").ok()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let response = http.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let info: LabInfo = response.json().await.ok()?;
    (info.lab == "fks-lab").then_some(info)
}

fn converge(
    config: &Config,
    dir: &std::path::Path,
    target: &Target,
    flags: &RunFlags,
) -> Result<(), super::Error> {
    let client = super::fly_client()?;
    let rt = super::runtime()?;
    let app = target.app(config);

    let lab = rt.block_on(lab_info(&client));
    let zones = match (flags.zones, &lab) {
        (Some(n), _) => Some(n as usize),
        (None, Some(info)) => info.zones.get(&config.region).map(Vec::len),
        (None, None) => None,
    };
    let k3s = lab.as_ref().is_none_or(|info| info.guests);
    if !k3s {
        eprintln!(
            "[WARN] {} is fks-lab in API-only mode (no guests run): machines are created and started, but no k3s runs, so the k3s steps are skipped",
            client.base_url()
        );
    }

    // The ssh files every node gets: created on first use, never regenerated.
    let keys_base = ssh::config_dir().map_err(failed)?;
    let keys = ClusterKeys::open(&keys_base, &config.cluster_name).map_err(failed)?;
    let mut node_files = BTreeMap::new();
    for name in plan::node_names(config, target) {
        let files = keys.node_files(&name).map_err(failed)?;
        node_files.insert(name, files.iter().map(|f| f.to_machine_file()).collect());
    }
    let mut extra_env = BTreeMap::new();
    if flags.allow_missing_kernel_options {
        extra_env.insert(
            vars::ALLOW_MISSING_KERNEL_OPTIONS.to_string(),
            "1".to_string(),
        );
    }
    let options = plan::Options {
        zones,
        allow_shared_zones: flags.allow_shared_zones,
        k3s,
        node_files,
        extra_env,
    };

    let state = rt
        .block_on(run::observe(&client, config, target))
        .map_err(failed)?;
    let plan = plan::plan(config, target, &state, &options).map_err(|e| match e {
        plan::Error::InvalidGroup { .. }
        | plan::Error::InvalidBootstrapIndex { .. }
        | plan::Error::ZoneShortage { .. } => usage(e),
        _ => failed(e),
    })?;
    if flags.dry_run {
        return output::stdout(&format!("dry run: nothing was changed\n{plan}"));
    }
    if plan.is_empty() {
        eprintln!("[INFO] app {app}: everything exists and is ready; nothing to do");
    } else {
        eprintln!(
            "[INFO] app {app}: {} step(s), {} change(s) on Fly",
            plan.steps.len(),
            plan.mutations()
        );
    }

    let run_options = run::Options {
        started_timeout: Duration::from_secs(flags.timeout),
        k3s_timeout: Duration::from_secs(flags.timeout),
        poll: Duration::from_secs(1),
        max_parallel: None,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    let result = rt.block_on(async {
        let view = tokio::spawn(show_progress(rx, names, plan.k3s));
        let result = run::execute(&client, &plan, &run_options, Some(tx)).await;
        // The sender is dropped with `execute`; the view ends once it has drawn everything.
        let _ = view.await;
        result
    });
    let summary = result.map_err(|e| {
        failed(anyhow!(e).context(format!(
            "converging app {app} stopped; what was made is kept, and running the same command again picks up from there"
        )))
    })?;
    let next = match target {
        Target::ControlPlane { .. } => format!(
            "next: fks-bootstrap -k {d} (kubeconfig), fks-bootstrap -a 0 {d} (a node group)",
            d = dir.display()
        ),
        Target::NodeGroup { group } => {
            format!("next: fks-bootstrap -l {group} {}", dir.display())
        }
    };
    output::stdout(&format!("{summary}\n{next}\n"))
}

/// The words of a phase in the live view and the `[INFO]` lines.
fn phase_word(phase: Phase) -> &'static str {
    match phase {
        Phase::Volume => "volume",
        Phase::Machine => "machine",
        Phase::Started => "started",
        Phase::K3sReady => "k3s ready",
        Phase::Joined => "joined",
    }
}

/// Draws events until the channel closes: bars on a terminal, `[INFO]` lines otherwise.
async fn show_progress(mut rx: UnboundedReceiver<Event>, names: Vec<String>, k3s: bool) {
    let phases: Vec<Phase> = if k3s {
        vec![
            Phase::Volume,
            Phase::Machine,
            Phase::Started,
            Phase::K3sReady,
            Phase::Joined,
        ]
    } else {
        vec![Phase::Volume, Phase::Machine, Phase::Started, Phase::Joined]
    };
    if !std::io::stderr().is_terminal() {
        while let Some(e) = rx.recv().await {
            eprintln!(
                "[INFO] {:<20} {:<9} at {:.1}s",
                e.node,
                phase_word(e.phase),
                e.elapsed.as_secs_f64()
            );
        }
        return;
    }
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:<20} [{bar:5}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars: BTreeMap<String, ProgressBar> = names
        .iter()
        .map(|n| {
            let bar = multi.add(ProgressBar::new(phases.len() as u64));
            bar.set_style(style.clone());
            bar.set_prefix(n.clone());
            bar.set_message(chain(&phases, None));
            bar.enable_steady_tick(Duration::from_millis(120));
            (n.clone(), bar)
        })
        .collect();
    while let Some(e) = rx.recv().await {
        if let Some(bar) = bars.get(&e.node) {
            let pos = phases.iter().position(|p| *p == e.phase).unwrap_or(0) + 1;
            bar.set_position(pos as u64);
            let mut msg = chain(&phases, Some(e.phase));
            msg.push_str(&format!("  ({:.1}s)", e.elapsed.as_secs_f64()));
            bar.set_message(msg);
        }
    }
    for bar in bars.values() {
        bar.finish();
    }
}

/// `volume → machine → [started] → k3s ready → joined` with the reached phase bracketed.
fn chain(phases: &[Phase], reached: Option<Phase>) -> String {
    phases
        .iter()
        .map(|p| {
            if Some(*p) == reached {
                format!("[{}]", phase_word(*p))
            } else {
                phase_word(*p).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_brackets_the_reached_phase() {
        let p = [Phase::Volume, Phase::Machine, Phase::Started];
        assert_eq!(chain(&p, None), "volume → machine → started");
        assert_eq!(
            chain(&p, Some(Phase::Machine)),
            "volume → [machine] → started"
        );
    }

    #[test]
    fn lab_info_parses_the_lab_answer() {
        let info: LabInfo = serde_json::from_str(
            r#"{"lab":"fks-lab","guests":false,"zones":{"sjc":["a1b2","c3d4"]}}"#,
        )
        .expect("parses");
        assert!(!info.guests);
        assert_eq!(info.zones["sjc"].len(), 2);
    }
}
