//! `fks-bootstrap taint CLUSTER_DIR [--dry-run]` (k3s.sh's `-t`): taints every server of the
//! control plane `CriticalAddonsOnly=true:NoExecute` with `--overwrite` (so re-running
//! changes nothing) and reports the result per node on stdout (exit 1 when any failed). It
//! goes the one way every mutating command goes: the observer reads the control-plane app's
//! machines ([`list::read`] over [`crate::observe::app`], which names the fix when the app is
//! missing), [`plan::taint`] makes one [`Action::Taint`] step per server (which machines, through
//! which started server; the refusals), and [`run::execute_each`] runs them, each `k3s
//! kubectl` through the Machines API exec on the first started server that answers. This file
//! holds the flag and the output.
//!
//! Must not: touch a machine without `fks_cluster=<cluster>` metadata (the plan leaves it
//! out), go through a local shell, or change anything but the taints (no machine, volume or
//! metadata call).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::anyhow;

use super::list::{self, NodeSet};
use super::output;
use crate::fly::Client;
use crate::observe::Reads;
use crate::plan::{self, Action, Plan, Ref, StepId, SERVER_TAINT};
use crate::run::{self, k3s};

/// Taint the control plane's servers.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// Print the plan (each server, and which servers kubectl runs on) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
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

/// Runs `taint` / `-t`: config, observe, plan, dry run or run, then the table.
pub fn run(args: Args) -> Result<(), super::Error> {
    let failed = |e: anyhow::Error| super::Error::Failed(e);
    let config = super::load_config(&args.cluster_dir)?;
    let client = super::fly_client()?;
    let rt = super::runtime()?;
    let cp = rt
        .block_on(list::read(
            &client,
            &config,
            &NodeSet::ControlPlane,
            &args.cluster_dir,
            Reads::MACHINES,
        ))
        .map_err(|e| failed(e.into()))?;
    let plan = plan::taint::taint(
        &config.cluster_name,
        &cp,
        &args.cluster_dir.display().to_string(),
    )
    .map_err(|e| failed(e.into()))?;
    if args.dry_run {
        return output::stdout(&format!("dry run: nothing was changed\n{plan}"));
    }
    let ends = rt.block_on(execute(&client, &plan)).map_err(|e| {
        failed(anyhow!(e).context(format!("tainting the servers of app {}", plan.app)))
    })?;
    let (outcomes, unreachable) = outcomes(&plan, ends);
    output::stdout(&table(&outcomes))?;
    let failures = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failures > 0 {
        let why = if unreachable.is_empty() {
            String::new()
        } else {
            format!("; exec failed on {}", unreachable.join("; "))
        };
        return Err(failed(anyhow!(
            "tainting {failures} of {} servers of app {} failed{why}",
            outcomes.len(),
            plan.app
        )));
    }
    Ok(())
}

/// Runs the plan; returns how each step ended (a failed one with its error). An error of the
/// run itself (a step task that stopped unexpectedly) is returned as such.
async fn execute(
    client: &Client,
    plan: &Plan,
) -> Result<HashMap<StepId, Result<(), run::Error>>, run::Error> {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel();
    let result =
        run::execute_each(client, plan, &run::Options::default(), done_tx, failed_tx).await;
    match result {
        Ok(_) | Err(run::Error::StepsFailed { .. }) => {}
        Err(e) => return Err(e),
    }
    let mut ends = HashMap::new();
    while let Ok(done) = done_rx.try_recv() {
        ends.insert(done.step, Ok(()));
    }
    while let Ok((id, e)) = failed_rx.try_recv() {
        ends.insert(id, Err(e));
    }
    Ok(ends)
}

/// Pure: one [`Outcome`] per taint step of `plan`, in plan order, from how each step ended; and
/// `node: why` for every server whose exec call failed, each once, in the order the plan asks
/// them (what the error line adds). A kubectl that ran and failed is reported as it was run:
/// `kubectl on ctrl-0 exited with 1: <first stderr line>`.
fn outcomes(
    plan: &Plan,
    mut ends: HashMap<StepId, Result<(), run::Error>>,
) -> (Vec<Outcome>, Vec<String>) {
    let node_of: HashMap<String, &str> = plan
        .steps
        .iter()
        .filter_map(|s| match (&s.action, &s.node) {
            (
                Action::Taint {
                    machine:
                        plan::MachineRef {
                            id: Ref::Known(id), ..
                        },
                    ..
                },
                Some(node),
            ) => Some((id.clone(), node.as_str())),
            _ => None,
        })
        .collect();
    let name = |machine: &str| node_of.get(machine).copied().unwrap_or(machine).to_string();
    let mut outcomes = Vec::new();
    let mut unreachable: Vec<(String, String)> = Vec::new();
    for step in &plan.steps {
        let Action::Taint { machine, .. } = &step.action else {
            continue;
        };
        let machine_id = machine.id.to_string();
        let result = match ends.remove(&step.id) {
            Some(Ok(())) => Ok(()),
            Some(Err(run::Error::Exec {
                machine: via,
                code,
                stderr,
                ..
            })) => Err(format!(
                "kubectl on {} exited with {code}{}{stderr}",
                name(&via),
                if stderr.is_empty() { "" } else { ": " }
            )),
            Some(Err(run::Error::NoExec { tried, .. })) => {
                for t in tried {
                    if !unreachable.iter().any(|(m, _)| *m == t.machine) {
                        unreachable.push((t.machine, t.why));
                    }
                }
                Err("no started server answers exec".to_string())
            }
            Some(Err(e)) => Err(crate::errors::chain(&e)),
            None => Err("not run".to_string()),
        };
        outcomes.push(Outcome {
            node: step.node.clone().unwrap_or_default(),
            k3s_node: k3s::k3s_node_name(&machine_id, &machine.app),
            machine_id,
            result,
        });
    }
    let unreachable = unreachable
        .into_iter()
        .map(|(m, why)| format!("{}: {why}", name(&m)))
        .collect();
    (outcomes, unreachable)
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
    use crate::plan::taint::tests::server;
    use crate::plan::AppState;

    fn three() -> Plan {
        let cp = AppState {
            app: "lab-cp".into(),
            machines: vec![
                server("m0", "ctrl-0"),
                server("m1", "ctrl-1"),
                server("m2", "ctrl-2"),
            ],
            ..AppState::default()
        };
        plan::taint::taint("lab", &cp, "clusters/lab").expect("plan")
    }

    fn tried(machines: &[&str]) -> run::Error {
        run::Error::NoExec {
            node: "n".into(),
            k3s_node: "k".into(),
            tried: machines
                .iter()
                .map(|m| run::ExecFailure {
                    machine: m.to_string(),
                    why: format!("exec on {m}: API-only"),
                })
                .collect(),
        }
    }

    #[test]
    fn outcomes_name_the_node_of_the_server_kubectl_ran_on() {
        let plan = three();
        let ends = HashMap::from([
            (StepId(0), Ok(())),
            (
                StepId(1),
                Err(run::Error::Exec {
                    node: "ctrl-1".into(),
                    machine: "m0".into(),
                    program: "k3s kubectl taint".into(),
                    code: 1,
                    stderr: "nodes \"m1.vm.lab-cp.internal\" not found".into(),
                }),
            ),
        ]);
        let (got, unreachable) = outcomes(&plan, ends);
        assert_eq!(
            got.iter().map(|o| o.result.clone()).collect::<Vec<_>>(),
            [
                Ok(()),
                Err(
                    "kubectl on ctrl-0 exited with 1: nodes \"m1.vm.lab-cp.internal\" not found"
                        .into()
                ),
                Err("not run".into()),
            ]
        );
        assert_eq!(got[1].k3s_node, "m1.vm.lab-cp.internal");
        assert_eq!(got[1].machine_id, "m1");
        assert!(unreachable.is_empty());
    }

    #[test]
    fn servers_whose_exec_failed_are_named_once_in_the_order_asked() {
        let plan = three();
        let ends = HashMap::from([
            (StepId(0), Err(tried(&["m0", "m1", "m2"]))),
            (StepId(1), Err(tried(&["m0", "m1", "m2"]))),
            (StepId(2), Err(tried(&["m0", "m1", "m2"]))),
        ]);
        let (got, unreachable) = outcomes(&plan, ends);
        assert!(got
            .iter()
            .all(|o| o.result == Err("no started server answers exec".into())));
        assert_eq!(
            unreachable,
            [
                "ctrl-0: exec on m0: API-only",
                "ctrl-1: exec on m1: API-only",
                "ctrl-2: exec on m2: API-only"
            ]
        );
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
