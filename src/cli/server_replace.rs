//! `fks-bootstrap server replace ctrl-N CLUSTER_DIR [--dry-run] [--yes] [--timeout S]`: swaps a
//! control-plane server for a fresh machine and volume, also when its machine, its volume or
//! its zone is gone. It goes the one way every mutating command goes: the observer reads the
//! control-plane app ([`observe::target`]); the etcd member list with each member's health is
//! read through a started survivor (`node etcd members --json` through the Machines API exec,
//! as `status` reads it) before anything is touched; [`plan::replace::replace`] checks quorum
//! and makes the typed steps; [`run::execute_reporting`] runs them. This file holds the flags,
//! the confirmation (destroy's) and the output.
//!
//! Must not: change anything without `--yes` or the typed cluster name, or when the plan
//! refuses (quorum, no healthy survivor, no zone).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::output;
use crate::contract::{env as vars, meta};
use crate::fly::types::{Machine, MachineState};
use crate::image::ensure;
use crate::observe;
use crate::plan::replace::{replace, server_index, Replacement};
use crate::plan::{self, Target};
use crate::run;
use crate::ssh::{self, ClusterKeys};
use crate::status;

/// Shown under `server replace --help`.
pub const AFTER_HELP: &str = "\
Replaces server ctrl-N (app <cluster>-cp) with a fresh machine and volume, whatever is left of
the old one. Before anything changes, the etcd members and their health are read through a
started surviving server (fks-bootstrap node etcd members, through the Machines API exec), and
the replacement is refused, saying why, when the members left after removing ctrl-N's would
not keep a quorum (a majority of them healthy), or when no survivor has a healthy member.
Then: ctrl-N's machine is destroyed; its etcd member is removed through a survivor (etcd's own
API, fks-bootstrap node etcd remove); its old Kubernetes node and every volume no surviving
server holds are deleted; a new volume asks for a zone apart from the survivors'; the new
machine joins the surviving server (never as the cluster-init server, also when ctrl-N was the
bootstrap server) and is waited for until its Kubernetes node is Ready and its etcd member a
healthy voter; it is tainted and marked ready. Without --yes it asks you to type the cluster
name; without a terminal, pass --yes. A run that stops part-way can be run again.";

/// `server` subcommands.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    #[command(subcommand)]
    pub command: ServerCommand,
}

/// What to do with a control-plane server.
#[derive(Debug, clap::Subcommand)]
pub enum ServerCommand {
    /// Replace server ctrl-N with a fresh machine and volume that joins the survivors.
    #[command(after_help = AFTER_HELP)]
    Replace(Args),
}

/// Replace a control-plane server.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server: ctrl-0, ctrl-1 or ctrl-2.
    pub node: String,
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// Replace without asking for the cluster name (required without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print the checks and the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Let the new volume share a zone with a survivor's when no other zone is left.
    #[arg(long)]
    pub allow_shared_zones: bool,
    /// How many zones the region has: N, or REGION=N,... [env: FKS_REGION_ZONES].
    #[arg(long, value_name = "N|REGION=N,...", value_parser = super::create::parse_zones)]
    pub zones: Option<super::create::Zones>,
    /// Start k3s on the new server even when the guest kernel lacks required options (also
    /// carried over when the survivors were made with it).
    #[arg(long)]
    pub allow_missing_kernel_options: bool,
    /// Deadline of every wait (machine destroyed and started, member removal, Ready, member
    /// healthy), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = super::create::DEFAULT_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// Runs `server replace`.
pub fn run(args: ServerArgs) -> Result<(), super::Error> {
    let ServerCommand::Replace(args) = args.command;
    let usage = |e: anyhow::Error| super::Error::Usage(e);
    let failed = |e: anyhow::Error| super::Error::Failed(e);
    let config = super::load_config(&args.cluster_dir)?;
    let index = server_index(&args.node).ok_or_else(|| {
        usage(anyhow!(plan::Error::NotAServer {
            node: args.node.clone()
        }))
    })?;
    let node = format!("ctrl-{index}");
    let cluster = config.cluster_name.clone();
    let app = config.cp_app();
    if !args.yes && !args.dry_run && !std::io::stdin().is_terminal() {
        return Err(usage(anyhow!(
            "server replace destroys {node} of app {app} and asks you to type the cluster name, but stdin is not a terminal: pass --yes to replace it without asking"
        )));
    }
    let zones = match &args.zones {
        Some(z) => Some(z.clone()),
        None => super::create::env_zones()?,
    }
    .and_then(|z| z.of(&config.region));
    let client = super::fly_client()?;
    let rt = super::runtime()?;
    let started = Instant::now();
    let target = Target::ControlPlane { bootstrap_index: 0 };
    let mut state = rt
        .block_on(observe::target(&client, &config, &target))
        .map_err(|e| failed(e.into()))?;
    let survivors = survivors(&cluster, &node, &state.machines);
    // The members for the quorum check, and the Nodes so that one an interrupted replace left
    // (its machine gone, its member removed already) is deleted too.
    let (members, k8s_nodes) = rt.block_on(async {
        tokio::join!(
            read_members(&client, &app, &survivors),
            status::k8s_node_names(&client, &app, &survivors),
        )
    });
    match k8s_nodes {
        Ok(names) => state.k8s_nodes = Some(names),
        Err(why) => {
            tracing::warn!(%app, "could not list the Kubernetes nodes ({why}); Nodes that an interrupted replace left are not looked for in this run")
        }
    }
    let image = ensure::from_control_plane(
        &cluster,
        &survivors.iter().map(|m| (*m).clone()).collect::<Vec<_>>(),
    )
    .map_err(|e| failed(e.into()))?
    .map(|i| i.pinned)
    .unwrap_or_default();
    let keys_base = ssh::config_dir().map_err(|e| failed(e.into()))?;
    let keys = ClusterKeys::open(&keys_base, &cluster).map_err(|e| failed(e.into()))?;
    let files = keys.node_files(&node).map_err(|e| failed(e.into()))?;
    let mut extra_env = BTreeMap::new();
    let inherited = survivors.iter().any(|m| {
        m.any_config()
            .and_then(|c| c.env.get(vars::ALLOW_MISSING_KERNEL_OPTIONS))
            .is_some_and(|v| v == "1")
    });
    if args.allow_missing_kernel_options || inherited {
        extra_env.insert(
            vars::ALLOW_MISSING_KERNEL_OPTIONS.to_string(),
            "1".to_string(),
        );
    }
    let options = plan::Options {
        zones,
        allow_shared_zones: args.allow_shared_zones,
        k3s: true,
        node_files: [(
            node.clone(),
            files.iter().map(|f| f.to_machine_file()).collect(),
        )]
        .into(),
        extra_env,
        image,
        max_unavailable: plan::update::WORKER_BATCH,
    };
    let r = replace(&config, index, &state, &members, &options).map_err(|e| match e {
        plan::Error::NotAServer { .. } | plan::Error::ZoneShortage { .. } => usage(e.into()),
        _ => failed(e.into()),
    })?;
    if r.plan.steps.iter().any(|s| {
        matches!(&s.action, plan::Action::CreateMachine { request, .. } if request.config.image.is_empty())
    }) {
        return Err(failed(anyhow!(
            "no surviving server of app {app} names its image, so the new {node} would have none (nothing was changed)"
        )));
    }
    let checks = checks(&r);
    if args.dry_run {
        return output::stdout(&format!("dry run: nothing was changed\n{checks}{}", r.plan));
    }
    eprint!("{checks}");
    if !args.yes {
        super::destroy::confirm(
            &cluster,
            &format!("server replace {node} will"),
            &format!("replace {node}"),
            &r.describe(),
        )?;
    }
    let options = run::Options {
        started_timeout: Duration::from_secs(args.timeout),
        k3s_timeout: Duration::from_secs(args.timeout),
        ..run::Options::default()
    };
    let summary = rt.block_on(execute(&client, &r, &options)).map_err(|e| {
        failed(anyhow!(e).context(format!(
            "replacing {node} stopped; running the same command again picks up from what exists"
        )))
    })?;
    let new = summary.nodes.iter().find(|n| n.name == node);
    output::stdout(&format!(
        "{node} replaced: machine {} in zone {}, joined through {} ({}), in {:.1}s\n",
        new.and_then(|n| n.machine.as_deref()).unwrap_or("-"),
        new.and_then(|n| n.zone.as_deref()).unwrap_or("-"),
        r.via.node,
        r.via.machine,
        started.elapsed().as_secs_f64()
    ))
}

/// The started server machines of `cluster` other than `node`, by node name: the survivors
/// asked for the member list (the first whose exec answers).
fn survivors<'a>(cluster: &str, node: &str, machines: &'a [Machine]) -> Vec<&'a Machine> {
    let mut out: Vec<&Machine> = machines
        .iter()
        .filter(|m| m.state == MachineState::Started)
        .filter(|m| m.metadata(meta::CLUSTER) == Some(cluster))
        .filter(|m| m.metadata(meta::ROLE) == Some("server"))
        .filter(|m| m.metadata(meta::NODE).is_some_and(|n| n != node))
        .collect();
    out.sort_by_key(|m| m.metadata(meta::NODE).unwrap_or_default().to_string());
    out
}

/// How long the member read waits for every survivor's member to be healthy. Right after the
/// leader is lost (say, a replace that destroyed it was interrupted, and is run again at once)
/// the survivors' health reads fail ("leader changed", "no leader", or time out) until their
/// election is over (a few election timeouts), and the quorum check would refuse on that
/// passing state. A survivor that stays unhealthy costs this much before the check decides.
const ELECTION_WAIT: Duration = Duration::from_secs(30);

/// Whether the read answered and every started survivor's member is healthy (see
/// [`ELECTION_WAIT`]). The replaced server's own member does not count: it may be gone.
fn settled(members: &plan::replace::Members, survivors: &[&Machine], app: &str) -> bool {
    let Ok(report) = members else {
        return false;
    };
    survivors.iter().all(|s| {
        let node = crate::run::k3s::k3s_node_name(&s.id, app);
        report
            .members
            .iter()
            .any(|m| m.healthy && status::member_node(&m.name) == Some(node.as_str()))
    })
}

/// The members and their health through the first survivor that answers, read again (every
/// 2 s, up to [`ELECTION_WAIT`]) until every survivor's member is healthy.
async fn read_members(
    client: &crate::fly::Client,
    app: &str,
    survivors: &[&Machine],
) -> plan::replace::Members {
    let deadline = Instant::now() + ELECTION_WAIT;
    let pause = Duration::from_secs(2);
    loop {
        let members = status::ask(
            client,
            app,
            survivors,
            status::members_command(),
            status::parse_members,
        )
        .await;
        if settled(&members, survivors, app) || Instant::now() + pause > deadline {
            return members;
        }
        tracing::info!(%app, "a surviving server's etcd member is not healthy yet (an election after a lost leader?); reading the members again in 2s");
        tokio::time::sleep(pause).await;
    }
}

/// What the checks found, before the plan: the members removed, the quorum left, the survivor
/// joined and the survivors' zones.
fn checks(r: &Replacement) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{}: machine {}\n",
        r.node,
        r.old_machine.as_deref().unwrap_or("gone")
    ));
    if r.members.is_empty() {
        out.push_str("etcd members to remove: none (removed already)\n");
    }
    for (id, name) in &r.members {
        out.push_str(&format!(
            "etcd member to remove: {id} ({})\n",
            if name.is_empty() { "unnamed" } else { name }
        ));
    }
    out.push_str(&format!(
        "quorum after the removal: {} of {} voting members healthy, {} needed: ok\n",
        r.quorum.healthy, r.quorum.voters, r.quorum.needed
    ));
    out.push_str(&format!(
        "the new server joins {} (machine {}); survivors' zones: {}\n",
        r.via.node,
        r.via.machine,
        if r.survivor_zones.is_empty() {
            "unknown".to_string()
        } else {
            r.survivor_zones.join(", ")
        }
    ));
    out
}

/// Runs the plan, printing one stdout line per finished step: `done: ctrl-1: ...`.
async fn execute(
    client: &crate::fly::Client,
    r: &Replacement,
    options: &run::Options,
) -> Result<run::Summary, run::Error> {
    let lines = r.describe();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<run::Finished>();
    let printer = async {
        // The ids made so far, so a line names the new machine rather than its step.
        let mut made = std::collections::HashMap::new();
        while let Some(done) = rx.recv().await {
            if let Some(id) = done.made {
                made.insert(done.step, id);
            }
            let Some(line) = lines.get(done.step.0) else {
                continue;
            };
            let line = run::name_made(line, &made);
            // Keep going when stdout is gone (`| head`): the work matters more.
            let mut out = std::io::stdout().lock();
            if let Err(e) = writeln!(out, "done: {line}").and_then(|()| out.flush()) {
                tracing::warn!("writing to stdout: {e}");
            }
        }
    };
    let work = run::execute_reporting(client, &r.plan, options, None, Some(tx));
    let (result, ()) = tokio::join!(work, printer);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::types::MachineConfig;
    use crate::status::{MemberHealth, MembersReport};

    fn member(machine: &str, healthy: bool, error: Option<&str>) -> MemberHealth {
        MemberHealth {
            id: format!("a{machine}"),
            name: format!("{machine}.vm.lab-cp.internal-0a1b2c3d"),
            peer_urls: vec![],
            client_urls: vec![],
            learner: false,
            leader: false,
            healthy,
            error: error.map(str::to_string),
        }
    }

    fn report(members: Vec<MemberHealth>) -> plan::replace::Members {
        Ok(MembersReport {
            endpoint: "https://127.0.0.1:2379".into(),
            members,
        })
    }

    fn server(id: &str) -> Machine {
        Machine {
            id: id.into(),
            state: MachineState::Started,
            config: Some(MachineConfig::default()),
            ..Machine::default()
        }
    }

    #[test]
    fn the_read_is_settled_when_every_survivors_member_is_healthy() {
        let (m0, m2) = (server("m0"), server("m2"));
        let survivors = [&m0, &m2];
        let electing =
            "etcd health at https://[fdaa::2]:2379: 503: RANGE ERROR:etcdserver: leader changed";
        assert!(!settled(
            &report(vec![
                member("m0", true, None),
                member("m1", true, None),
                member("m2", false, Some(electing)),
            ]),
            &survivors,
            "lab-cp"
        ));
        assert!(!settled(
            &Err("etcdserver: no leader".into()),
            &survivors,
            "lab-cp"
        ));
        // The replaced server's member may be dead: it does not count.
        assert!(settled(
            &report(vec![
                member("m0", true, None),
                member("m1", false, Some("operation timed out")),
                member("m2", true, None),
            ]),
            &survivors,
            "lab-cp"
        ));
    }
}
