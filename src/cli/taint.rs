//! `fks-bootstrap taint CLUSTER_DIR` (k3s.sh's `-t`): taints every server of the control
//! plane `CriticalAddonsOnly=true:NoExecute` with `--overwrite` (so re-running changes
//! nothing), running `k3s kubectl` through the Machines API exec endpoint on a started server
//! of this cluster, and reports the result per node on stdout (exit 1 when any failed).
//!
//! Must not: touch a machine without `fks_cluster=<cluster>` metadata, go through a local
//! shell, or change anything but the taints (no machine, volume or metadata call).

use std::path::PathBuf;

use super::list::{self, NodeSet};
use super::output;
use crate::config::Config;
use crate::fly::types::{Machine, MachineState};
use crate::fly::Client;
use crate::plan::{META_NODE, META_ROLE, SERVER_TAINT};
use crate::run::k3s;

/// Taint the control plane's servers.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
}

/// Why no server could be tainted at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control-plane app holds no machine of this cluster.
    #[error("app {app} has no server of cluster {cluster} (no machine with fks_cluster={cluster}): create the control plane with fks-bootstrap -c {dir}")]
    NoServers {
        /// The control-plane app.
        app: String,
        /// Cluster name.
        cluster: String,
        /// The cluster directory as the user gave it.
        dir: String,
    },
    /// None of the servers is started, so there is no kubectl to run.
    #[error("app {app} has no started server to run kubectl on (servers: {states})")]
    NoStartedServer {
        /// The control-plane app.
        app: String,
        /// `node=state` of every server, comma separated.
        states: String,
    },
    /// Finding the servers failed.
    #[error(transparent)]
    List(#[from] Box<list::Error>),
}

/// The result for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Node name (`fks_node`).
    pub node: String,
    /// Machine id.
    pub machine_id: String,
    /// The k3s node name that was tainted.
    pub k3s_node: String,
    /// `Ok` when kubectl exited 0; otherwise why not (one line).
    pub result: Result<(), String>,
}

/// Runs `taint` / `-t`.
pub fn run(args: Args) -> Result<(), super::Error> {
    let config = super::load_config(&args.cluster_dir)?;
    let client = super::fly_client()?;
    let (outcomes, unreachable) = super::runtime()?
        .block_on(taint_all(&client, &config, &args))
        .map_err(|e| super::Error::Failed(e.into()))?;
    output::stdout(&table(&outcomes))?;
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed > 0 {
        let why = if unreachable.is_empty() {
            String::new()
        } else {
            format!("; exec failed on {}", unreachable.join("; "))
        };
        return Err(super::Error::Failed(anyhow::anyhow!(
            "tainting {failed} of {} servers of app {} failed{why}",
            outcomes.len(),
            config.cp_app()
        )));
    }
    Ok(())
}

/// Taints every server of the cluster, one after another (three kubectl calls), through the
/// first started server that answers exec. Also returns `node: error` for each server whose
/// exec call failed (it is not used again).
async fn taint_all(
    client: &Client,
    config: &Config,
    args: &Args,
) -> Result<(Vec<Outcome>, Vec<String>), Error> {
    let app = config.cp_app();
    let machines = list::owned_machines(client, config, &NodeSet::ControlPlane, &args.cluster_dir)
        .await
        .map_err(Box::new)?;
    let servers = servers(machines);
    if servers.is_empty() {
        return Err(Error::NoServers {
            app,
            cluster: config.cluster_name.clone(),
            dir: args.cluster_dir.display().to_string(),
        });
    }
    let mut vias: Vec<&Machine> = servers
        .iter()
        .filter(|m| m.state == MachineState::Started)
        .collect();
    if vias.is_empty() {
        return Err(Error::NoStartedServer {
            app,
            states: servers
                .iter()
                .map(|m| format!("{}={}", node_name(m), m.state))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut outcomes = Vec::with_capacity(servers.len());
    let mut unreachable = Vec::new();
    for server in &servers {
        let k3s_node = k3s::k3s_node_name(&server.id, &app);
        let req = k3s::exec_request(k3s::taint_command(&k3s_node));
        let mut result = Err("no started server answers exec".to_string());
        // A server whose exec call fails (it is restarting, say) is dropped as a way in; a
        // kubectl that ran and failed is that node's answer.
        while let Some(via) = vias.first() {
            match client.exec(&app, &via.id, &req).await {
                Ok(out) if out.exit_code == 0 => {
                    result = Ok(());
                    break;
                }
                Ok(out) => {
                    let why = k3s::first_line(&out.stderr);
                    result = Err(format!(
                        "kubectl on {} exited with {}{}{why}",
                        node_name(via),
                        out.exit_code,
                        if why.is_empty() { "" } else { ": " }
                    ));
                    break;
                }
                Err(e) => {
                    let why = crate::errors::chain(&e);
                    tracing::debug!(machine = %via.id, error = %why, "exec failed; trying another server");
                    unreachable.push(format!("{}: {why}", node_name(via)));
                    vias.remove(0);
                }
            }
        }
        outcomes.push(Outcome {
            node: node_name(server).to_string(),
            machine_id: server.id.clone(),
            k3s_node,
            result,
        });
    }
    Ok((outcomes, unreachable))
}

/// The servers among a control-plane app's machines (a machine marked as an agent is left
/// out), sorted by node name.
fn servers(mut machines: Vec<Machine>) -> Vec<Machine> {
    machines.retain(|m| m.metadata(META_ROLE).is_none_or(|r| r == "server"));
    machines.sort_by(|a, b| node_name(a).cmp(node_name(b)).then(a.id.cmp(&b.id)));
    machines
}

fn node_name(m: &Machine) -> &str {
    m.metadata(META_NODE).unwrap_or(&m.name)
}

const HEADER: [&str; 4] = ["NAME", "MACHINE ID", "K3S NODE", "RESULT"];

/// The per-node report.
fn table(outcomes: &[Outcome]) -> String {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.node.clone(),
                o.machine_id.clone(),
                o.k3s_node.clone(),
                match &o.result {
                    Ok(()) => format!("tainted {SERVER_TAINT}"),
                    Err(why) => format!("failed: {why}"),
                },
            ]
        })
        .collect();
    output::table(&HEADER, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::types::MachineConfig;

    fn machine(id: &str, node: &str, role: Option<&str>) -> Machine {
        let mut config = MachineConfig::default();
        config.metadata.insert(META_NODE.into(), node.into());
        if let Some(r) = role {
            config.metadata.insert(META_ROLE.into(), r.into());
        }
        Machine {
            id: id.into(),
            name: format!("machine-{id}"),
            state: MachineState::Started,
            config: Some(config),
            ..Machine::default()
        }
    }

    #[test]
    fn servers_are_sorted_by_node_and_agents_left_out() {
        let got = servers(vec![
            machine("c", "ctrl-2", Some("server")),
            machine("a", "ctrl-0", None),
            machine("x", "worker-1", Some("agent")),
            machine("b", "ctrl-1", Some("server")),
        ]);
        let names: Vec<&str> = got.iter().map(node_name).collect();
        assert_eq!(names, ["ctrl-0", "ctrl-1", "ctrl-2"]);
    }

    #[test]
    fn table_reports_each_node_with_its_result() {
        let t = table(&[
            Outcome {
                node: "ctrl-0".into(),
                machine_id: "m0".into(),
                k3s_node: "m0.vm.lab-cp.internal".into(),
                result: Ok(()),
            },
            Outcome {
                node: "ctrl-1".into(),
                machine_id: "m1".into(),
                k3s_node: "m1.vm.lab-cp.internal".into(),
                result: Err("kubectl on ctrl-0 exited with 1: nodes not found".into()),
            },
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("NAME"), "{t}");
        assert!(
            lines[1].contains("m0.vm.lab-cp.internal")
                && lines[1].ends_with("tainted CriticalAddonsOnly=true:NoExecute"),
            "{t}"
        );
        assert!(
            lines[2].contains("failed: kubectl on ctrl-0 exited with 1: nodes not found"),
            "{t}"
        );
    }
}
