//! `fks-bootstrap create CLUSTER_DIR` (k3s.sh's `-c`) and `fks-bootstrap nodegroup add GROUP
//! CLUSTER_DIR` (`-a`): load the config, observe the target's app, plan, and execute the plan
//! concurrently (ARCHITECTURE.md "How `fks-bootstrap -c` flows"). Both are converges: a re-run
//! after any failure finishes the job, a re-run of a finished job changes nothing.
//!
//! The image comes first (`image::ensure`): the config's IMAGE pinned by digest, or the
//! cluster's own image built and pushed when the registry lacks it; no machine is made when
//! that fails.
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
use tokio::sync::mpsc::UnboundedReceiver;

use super::output;
use crate::config::Config;
use crate::contract::env as vars;
use crate::image::ensure;
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
    /// Print the summary (nodes and the image pinned by digest) as JSON.
    #[arg(long)]
    pub json: bool,
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
    /// Remove a worker node group: cordon and drain its nodes, destroy its machines and
    /// volumes, delete its app (never the control plane).
    #[command(after_help = super::nodegroup_remove::AFTER_HELP)]
    Remove(super::nodegroup_remove::Args),
}

/// Add (or converge) worker node group GROUP.
#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    /// The node group's name (lowercase letters and digits), e.g. 0 or web.
    pub group: String,
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// Print the summary (nodes and the image pinned by digest) as JSON.
    #[arg(long)]
    pub json: bool,
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
    /// With -a: remove the nodes a lowered NODE_GROUP_SIZE leaves out without asking for the
    /// cluster name (required without a terminal when the plan removes nodes).
    #[arg(long)]
    pub yes: bool,
    /// Let volumes share a zone once the region's zones are used up (a zone outage then
    /// takes down more than one node).
    #[arg(long)]
    pub allow_shared_zones: bool,
    /// How many zones the region has: N, or REGION=N,... for several regions [env:
    /// FKS_REGION_ZONES]. Fly does not publish zone counts; when unknown, every volume asks
    /// for a zone of its own and a region that runs out says so.
    #[arg(long, value_name = "N|REGION=N,...", value_parser = parse_zones)]
    pub zones: Option<Zones>,
    /// Create and start the machines only: do not wait for k3s, store no join token and taint
    /// nothing, for a platform whose machines do not run the node image [env:
    /// FKS_MACHINES_ONLY=1].
    #[arg(long)]
    pub machines_only: bool,
    /// Start k3s even when the guest kernel lacks required options (sets
    /// FKS_ALLOW_MISSING_KERNEL_OPTIONS=1 on the machines); for kernels like the lab host's.
    #[arg(long)]
    pub allow_missing_kernel_options: bool,
    /// With config drift to roll out (an upgrade, a changed image or VM size): how many
    /// workers of a node group are updated (rebooted) at once, each batch back Ready before the
    /// next. Servers are always updated one at a time.
    #[arg(long, value_name = "N", default_value_t = plan::update::WORKER_BATCH, value_parser = parse_max_unavailable)]
    pub max_unavailable: usize,
    /// Deadline of every wait (machine started, k3s Ready), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Where the node image's k3s comes from when the config has no IMAGE and the cluster's
    /// image is built (the same flags as `image build`).
    #[command(flatten)]
    pub k3s: super::image::K3sFlags,
}

pub(crate) const AFTER_HELP: &str = "\
Re-running is safe: what exists is reused, nothing is created twice, and a finished cluster
makes no change. BOOTSTRAP_NODE_ID (0, 1 or 2; default 0) picks the server that starts the
cluster. FKS_REGION_ZONES (as --zones) tells how many zones the region has; with
FKS_MACHINES_ONLY=1 (as --machines-only) the run ends when the machines are started.

The node image comes first. IMAGE in the config is used as given, pinned to the digest its
registry names. Without IMAGE, the cluster's own image (base + this fks-bootstrap + k3s, as
`image build` makes it) goes to <registry>/<cluster>-cp: built, and pushed only when the
registry lacks it; the machines get it by digest. Registry settings as for `image build`:
FLY_REGISTRY_HOST, FKS_REGISTRY_PLAIN_HTTP, XDG_CACHE_HOME; the password is the Fly token.";

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

/// The environment variable of `--zones`.
pub const ZONES_ENV: &str = "FKS_REGION_ZONES";
/// The environment variable of `--machines-only`.
pub const MACHINES_ONLY_ENV: &str = "FKS_MACHINES_ONLY";

/// How many zones a region has, as `--zones` / `FKS_REGION_ZONES` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zones {
    /// `N`: the cluster's region has N zones.
    Count(u32),
    /// `sjc=3,iad=2`: per region; a region not listed is unknown.
    PerRegion(BTreeMap<String, u32>),
}

impl Zones {
    /// The zone count of `region`, when known.
    pub fn of(&self, region: &str) -> Option<usize> {
        match self {
            Zones::Count(n) => Some(*n as usize),
            Zones::PerRegion(m) => m.get(region).map(|n| *n as usize),
        }
    }
}

/// `FKS_REGION_ZONES` when set and not empty.
pub(super) fn env_zones() -> Result<Option<Zones>, super::Error> {
    match std::env::var(ZONES_ENV) {
        Ok(v) if !v.trim().is_empty() => parse_zones(&v)
            .map(Some)
            .map_err(|e| usage(anyhow!(e).context(format!("{ZONES_ENV}={v:?}")))),
        _ => Ok(None),
    }
}

/// `FKS_MACHINES_ONLY`: 1/true/yes/on or 0/false/no/off (empty or unset: off).
pub(super) fn env_machines_only() -> Result<bool, super::Error> {
    match std::env::var(MACHINES_ONLY_ENV) {
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "false" | "no" | "off" => Ok(false),
            "1" | "true" | "yes" | "on" => Ok(true),
            _ => Err(usage(anyhow!(
                "{MACHINES_ONLY_ENV}={v:?} is not a switch: use 1 or 0"
            ))),
        },
        Err(_) => Ok(false),
    }
}

/// Why a `--zones` / `FKS_REGION_ZONES` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZonesError {
    /// Not a whole number of at least 1.
    #[error("{0:?} is not a zone count: want a whole number of at least 1")]
    Count(String),
    /// An entry without `=` in a per-region list.
    #[error("{0:?}: want REGION=N, e.g. sjc=3")]
    Entry(String),
    /// Not a region code.
    #[error("{entry:?}: {region:?} is not a region code (lowercase letters, e.g. sjc)")]
    Region {
        /// The entry.
        entry: String,
        /// Its region part.
        region: String,
    },
    /// Nothing but separators.
    #[error("no zone count given: want N or REGION=N,...")]
    Empty,
}

/// Parses `--max-unavailable`: a whole number of workers, at least 1.
fn parse_max_unavailable(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{value:?} is not a worker count: want a whole number of at least 1 (workers updated at once)"
        )),
    }
}

/// Parses `N` or `REGION=N,REGION=N` (N at least 1).
pub fn parse_zones(value: &str) -> Result<Zones, ZonesError> {
    let count = |s: &str| -> Result<u32, ZonesError> {
        match s.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(ZonesError::Count(s.trim().to_string())),
        }
    };
    let value = value.trim();
    if !value.contains('=') {
        return count(value).map(Zones::Count);
    }
    let mut map = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (region, n) = entry
            .split_once('=')
            .ok_or_else(|| ZonesError::Entry(entry.to_string()))?;
        let region = region.trim();
        if region.is_empty() || !region.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(ZonesError::Region {
                entry: entry.to_string(),
                region: region.to_string(),
            });
        }
        map.insert(region.to_string(), count(n)?);
    }
    if map.is_empty() {
        return Err(ZonesError::Empty);
    }
    Ok(Zones::PerRegion(map))
}

impl Default for RunFlags {
    /// What clap gives when no flag is passed.
    fn default() -> Self {
        RunFlags {
            dry_run: false,
            yes: false,
            allow_shared_zones: false,
            zones: None,
            machines_only: false,
            allow_missing_kernel_options: false,
            max_unavailable: plan::update::WORKER_BATCH,
            timeout: DEFAULT_TIMEOUT,
            k3s: super::image::K3sFlags::default(),
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
    converge(&config, &args.cluster_dir, &target, &args.run, args.json)
}

/// `nodegroup add` / `-a`.
pub fn run_group(args: NodegroupArgs) -> Result<(), super::Error> {
    let args = match args.command {
        NodegroupCommand::Add(args) => args,
        NodegroupCommand::Remove(args) => return super::nodegroup_remove::run(args),
    };
    let config = super::load_config(&args.cluster_dir)?;
    let target = Target::node_group(&args.group).map_err(usage)?;
    converge(&config, &args.cluster_dir, &target, &args.run, args.json)
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

pub(super) fn converge(
    config: &Config,
    dir: &std::path::Path,
    target: &Target,
    flags: &RunFlags,
    json: bool,
) -> Result<(), super::Error> {
    let client = super::fly_client()?;
    let rt = super::runtime()?;
    let app = target.app(config);

    // The flags win over the environment; the environment is read here, not by clap, so a
    // shell that exported these for -c/-a can still run -l, -s and -k.
    let zones = match &flags.zones {
        Some(z) => Some(z.clone()),
        None => env_zones()?,
    }
    .and_then(|z| z.of(&config.region));
    let k3s = !(flags.machines_only || env_machines_only()?);
    if !k3s {
        eprintln!(
            "[WARN] machines only ({MACHINES_ONLY_ENV}=1 or --machines-only): machines are created and started; k3s is not waited for, no join token is stored and nothing is tainted"
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
    let mut options = plan::Options {
        zones,
        allow_shared_zones: flags.allow_shared_zones,
        k3s,
        node_files,
        extra_env,
        image: String::new(),
        max_unavailable: flags.max_unavailable,
    };

    let plan_error = |e: plan::Error| match e {
        plan::Error::InvalidGroup { .. }
        | plan::Error::InvalidBootstrapIndex { .. }
        | plan::Error::ZoneShortage { .. }
        | plan::Error::VersionSkew { .. } => usage(e),
        _ => failed(e),
    };
    let mut state = rt
        .block_on(run::observe(&client, config, target))
        .map_err(failed)?;
    // The plan's refusals (zones, group) come before the image is built; it is planned again
    // below with the image pinned.
    plan::plan(config, target, &state, &options).map_err(plan_error)?;
    let image = match (target, &config.image) {
        (Target::NodeGroup { .. }, None) => {
            match ensure::from_control_plane(&config.cluster_name, &state.control_plane)
                .map_err(failed)?
            {
                Some(image) => {
                    if flags.k3s != super::image::K3sFlags::default() {
                        eprintln!("[WARN] a node group runs its control plane's image, so the --k3s-* flags do nothing here (they choose the image with -c)");
                    }
                    eprintln!("[INFO] {image}");
                    image
                }
                None => image_step(&rt, config, flags, &client)?,
            }
        }
        _ => image_step(&rt, config, flags, &client)?,
    };
    if image.made_app {
        state = rt
            .block_on(run::observe(&client, config, target))
            .map_err(failed)?;
    }
    // A node group's Nodes, so the plan finds those an interrupted removal left behind.
    if k3s && state.app_exists && matches!(target, Target::NodeGroup { .. }) {
        state.k8s_nodes = rt.block_on(crate::status::node_names_for_cleanup(
            &client,
            &config.cluster_name,
            &config.cp_app(),
            &state.control_plane,
            &app,
        ));
    }
    options.image = image.pinned.clone();
    let plan = plan::plan(config, target, &state, &options).map_err(plan_error)?;
    if flags.dry_run {
        if json {
            let v = serde_json::json!({
                "dry_run": true,
                "image": image.to_json(),
                "plan": plan.to_string(),
            });
            return output::stdout(&output::json(&v)?);
        }
        return output::stdout(&format!("dry run: nothing was changed\n{image}\n{plan}"));
    }
    confirm_removals(config, &plan, flags.yes)?;
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
        ..run::Options::default()
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
    if json {
        return output::stdout(&output::json(&summary_json(&summary, &image))?);
    }
    output::stdout(&format!("{summary}\n{image}\n{next}\n"))
}

/// A scale-down (machines the plan destroys) asks destroy's confirmation unless `--yes`;
/// without a terminal it is refused before any change.
fn confirm_removals(config: &Config, plan: &plan::Plan, yes: bool) -> Result<(), super::Error> {
    // An update cordons and drains too, but removes nothing: only destroys ask.
    if !plan
        .steps
        .iter()
        .any(|s| matches!(s.action, plan::Action::DestroyMachine { .. }))
    {
        return Ok(());
    }
    let lines: Vec<String> = plan
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s.action,
                plan::Action::Cordon { .. }
                    | plan::Action::Drain { .. }
                    | plan::Action::DestroyMachine { .. }
                    | plan::Action::DeleteNode { .. }
                    | plan::Action::DeleteVolume { .. }
            )
        })
        .filter_map(|s| plan::scale_down::step_line(&s.action, s.node.as_deref()))
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    let mut removed: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, plan::Action::DestroyMachine { .. }))
        .filter_map(|s| s.node.as_deref())
        .collect();
    removed.dedup();
    if removed.is_empty() {
        // Only what an interrupted removal left (a Node whose machine is gone, a spare volume).
        eprintln!(
            "[INFO] app {}: finishing an interrupted removal: {}",
            plan.app,
            lines.join("; ")
        );
    } else {
        eprintln!(
            "[INFO] app {}: NODE_GROUP_SIZE={} removes {}",
            plan.app,
            config.node_group_size,
            removed.join(", ")
        );
    }
    if yes {
        return Ok(());
    }
    let cluster = &config.cluster_name;
    if !std::io::stdin().is_terminal() {
        return Err(usage(anyhow!(
            "NODE_GROUP_SIZE={} removes nodes of app {} for good ({}) and asks you to type the cluster name, but stdin is not a terminal: pass --yes to remove them without asking (nothing was changed)",
            config.node_group_size,
            plan.app,
            lines.join("; ")
        )));
    }
    super::destroy::confirm(
        cluster,
        &format!(
            "NODE_GROUP_SIZE={} shrinks app {}; this run will",
            config.node_group_size, plan.app
        ),
        "go on",
        &lines,
    )
}

/// `--json`: the app, the image pinned by digest, the nodes, the steps and the time.
fn summary_json(summary: &run::Summary, image: &ensure::Image) -> serde_json::Value {
    let nodes: Vec<_> = summary
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n.name,
                "machine": n.machine,
                "zone": n.zone,
                "private_ip": n.private_ip,
            })
        })
        .collect();
    serde_json::json!({
        "app": summary.app,
        "image": image.to_json(),
        "nodes": nodes,
        "steps": summary.steps,
        "seconds": summary.elapsed.as_secs_f64(),
    })
}

/// The image step (`image::ensure`): the config's IMAGE resolved to its digest, or the
/// cluster's own image built and pushed when the registry lacks it. Fails before any machine
/// is made.
fn image_step(
    rt: &tokio::runtime::Runtime,
    config: &Config,
    flags: &RunFlags,
    client: &crate::fly::Client,
) -> Result<ensure::Image, super::Error> {
    if config.image.is_some() && flags.k3s != super::image::K3sFlags::default() {
        eprintln!("[WARN] IMAGE is set in the config: it is used as given and nothing is built, so the --k3s-* flags do nothing");
    }
    let choice = flags.k3s.choice().map_err(|m| usage(anyhow!(m)))?;
    let inputs = ensure::Inputs {
        settings: super::image::registry_settings()?,
        request: super::image::build_request(choice)?,
        dry_run: flags.dry_run,
    };
    let image = rt
        .block_on(ensure::ensure(config, &inputs, client))
        .map_err(|e| if e.is_usage() { usage(e) } else { failed(e) })?;
    eprintln!("[INFO] {image}");
    Ok(image)
}

/// The words of a phase in the live view and the `[INFO]` lines.
fn phase_word(phase: Phase) -> &'static str {
    match phase {
        Phase::Volume => "volume",
        Phase::Machine => "machine",
        Phase::Started => "started",
        Phase::K3sReady => "k3s ready",
        Phase::Joined => "joined",
        Phase::Updated => "updated",
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
    fn max_unavailable_is_a_worker_count_of_at_least_one() {
        assert_eq!(parse_max_unavailable("1"), Ok(1));
        assert_eq!(parse_max_unavailable("10"), Ok(10));
        for bad in ["0", "-1", "x", ""] {
            assert!(parse_max_unavailable(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            parse_max_unavailable("0").expect_err("zero"),
            "\"0\" is not a worker count: want a whole number of at least 1 (workers updated at once)"
        );
        assert_eq!(
            RunFlags::default().max_unavailable,
            plan::update::WORKER_BATCH
        );
    }

    #[test]
    fn zones_are_a_count_or_a_count_per_region() {
        assert_eq!(parse_zones("3"), Ok(Zones::Count(3)));
        assert_eq!(Zones::Count(3).of("iad"), Some(3));
        let z = parse_zones("sjc=3, iad=2").expect("per region");
        assert_eq!(z.of("sjc"), Some(3));
        assert_eq!(z.of("iad"), Some(2));
        assert_eq!(z.of("ams"), None);
        for bad in ["0", "x", "sjc=0", "sjc=", "SJC=3", "=3", ","] {
            assert!(parse_zones(bad).is_err(), "{bad} accepted");
        }
        let e = parse_zones("sjc=three").expect_err("bad count");
        assert_eq!(
            e.to_string(),
            "\"three\" is not a zone count: want a whole number of at least 1"
        );
    }
}
