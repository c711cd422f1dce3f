//! `fks-bootstrap nodegroup remove GROUP CLUSTER_DIR [--dry-run] [--yes]`: removes a whole
//! worker node group. It goes the one way every mutating command goes: the observer reads the
//! group's app and the control plane's machines ([`observe::target`]),
//! [`plan::scale_down::remove_group`] makes the typed steps (each node cordoned, drained,
//! destroyed, its Kubernetes node and volume deleted; then the app's secrets and the app), and
//! [`run::execute_reporting`] runs them. This file holds the flags, the confirmation (destroy's)
//! and the output.
//!
//! Must not: touch the control-plane app (the plan refuses a server machine in the group's
//! app), or change anything without `--yes` or the typed cluster name.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use super::output;
use crate::observe;
use crate::plan::scale_down::{remove_group, step_line};
use crate::plan::{self, AppState, MachineRef, Ref, Target};
use crate::run;

/// Shown under `nodegroup remove --help`.
pub const AFTER_HELP: &str = "\
Removes worker node group GROUP (app <cluster>-ng-GROUP), highest index first: every node is
cordoned, then drained one at a time (kubectl drain --ignore-daemonsets --delete-emptydir-data,
run with k3s kubectl on a started server through the Machines API exec; evictions honour
PodDisruptionBudgets, and a drain a budget holds up is retried until --timeout), its machine
destroyed, its Kubernetes node and its volume deleted; then the app's secrets and the app.
The control plane is never touched. Without --yes it asks you to type the cluster name;
without a terminal, pass --yes. With --machines-only (or FKS_MACHINES_ONLY=1) no kubectl step
is run. Interrupted, running it again finishes the job (the Kubernetes nodes of machines already
destroyed are deleted too); when the group is gone it changes nothing and exits 0.";

/// Remove worker node group GROUP: drain its nodes, destroy its machines and volumes, delete
/// its app.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node group's name, e.g. 0 or web.
    pub group: String,
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// Remove without asking for the cluster name (required without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Plan no kubectl step (cordon, drain, node delete): for machines that run no k3s.
    #[arg(long)]
    pub machines_only: bool,
    /// Deadline of every wait (machine destroyed, drain), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = super::create::DEFAULT_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// Runs `nodegroup remove`: config, observe, plan, dry run or confirmation, run.
pub fn run(args: Args) -> Result<(), super::Error> {
    let usage = |e: anyhow::Error| super::Error::Usage(e);
    let failed = |e: anyhow::Error| super::Error::Failed(e);
    let config = super::load_config(&args.cluster_dir)?;
    let target = Target::node_group(&args.group).map_err(|e| usage(e.into()))?;
    let cluster = config.cluster_name.clone();
    let app = target.app(&config);
    if !args.yes && !args.dry_run && !std::io::stdin().is_terminal() {
        return Err(usage(anyhow!(
            "nodegroup remove removes app {app} for good and asks you to type the cluster name, but stdin is not a terminal: pass --yes to remove it without asking"
        )));
    }
    let k3s = !(args.machines_only || super::create::env_machines_only()?);
    let client = super::fly_client()?;
    let rt = super::runtime()?;
    let state = rt
        .block_on(observe::target(&client, &config, &target))
        .map_err(|e| failed(e.into()))?;
    let group_app = state.app_exists.then(|| AppState {
        app: app.clone(),
        machines: state.machines.clone(),
        volumes: state.volumes.clone(),
        secrets: state.secrets.clone(),
    });
    let has_nodes = state
        .machines
        .iter()
        .any(|m| !matches!(m.state, crate::fly::types::MachineState::Destroyed));
    // Without machines left, a started server is still asked (when there is one) for the
    // Nodes an interrupted removal may have left; it is needed only to drain.
    let via = match k3s.then(|| plan::phases::join_point(&config, &target, &state)) {
        None => None,
        Some(Ok(server)) => server.map(|m| MachineRef {
            app: config.cp_app(),
            id: Ref::Known(m.id.clone()),
        }),
        Some(Err(_)) if !has_nodes => None,
        Some(Err(e)) => {
            return Err(failed(anyhow!(e).context(format!(
                "draining the nodes of app {app} needs kubectl on a started server; pass --machines-only to remove the machines without draining"
            ))))
        }
    };
    // The Nodes, so those of machines an interrupted run destroyed are deleted too.
    let k8s_nodes = match &via {
        Some(_) => rt.block_on(crate::status::node_names_for_cleanup(
            &client,
            &cluster,
            &config.cp_app(),
            &state.control_plane,
            &app,
        )),
        None => None,
    };
    let removal = remove_group(&cluster, group_app.as_ref(), &via, k8s_nodes.as_deref())
        .map_err(|e| failed(e.into()))?;
    if removal.plan.is_empty() {
        return output::stdout(&format!(
            "nothing to remove: node group {} of cluster {cluster} has no app ({app})\n",
            args.group
        ));
    }
    if args.dry_run {
        return output::stdout(&format!("dry run: nothing was changed\n{}", removal.plan));
    }
    if !args.yes {
        super::destroy::confirm(
            &cluster,
            &format!("nodegroup remove {} will", args.group),
            &format!("remove node group {}", args.group),
            &removal.describe(),
        )?;
    }
    let options = run::Options {
        started_timeout: Duration::from_secs(args.timeout),
        k3s_timeout: Duration::from_secs(args.timeout),
        ..run::Options::default()
    };
    rt.block_on(execute(&client, &removal.plan, &options))
        .map_err(|e| {
            failed(anyhow!(e).context(format!(
                "removing node group {} stopped; running the same command again picks up from there",
                args.group
            )))
        })?;
    eprintln!("node group {} removed (app {app})", args.group);
    Ok(())
}

/// Runs `plan`, printing one stdout line per finished step: `done: drain the k3s node of ...`.
pub(super) async fn execute(
    client: &crate::fly::Client,
    plan: &plan::Plan,
    options: &run::Options,
) -> Result<(), run::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<run::Finished>();
    let printer = async {
        while let Some(done) = rx.recv().await {
            let step = &plan.steps[done.step.0];
            let Some(line) = step_line(&step.action, step.node.as_deref()) else {
                continue;
            };
            // Keep removing when stdout is gone (`| head`): the work matters more.
            let mut out = std::io::stdout().lock();
            if let Err(e) = writeln!(out, "done: {line}").and_then(|()| out.flush()) {
                tracing::warn!("writing to stdout: {e}");
            }
        }
    };
    let work = async {
        run::execute_reporting(client, plan, options, None, Some(tx))
            .await
            .map(|_| ())
    };
    let (result, ()) = tokio::join!(work, printer);
    result
}
