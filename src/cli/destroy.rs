//! `fks-bootstrap destroy CLUSTER_DIR [--yes] [--dry-run]`: removes this cluster's machines,
//! volumes, secrets and apps (`<cluster>-cp` and every `<cluster>-ng-<group>` app of the
//! organization), and nothing else. It goes the one way every mutating command goes: the
//! observer reads the cluster's apps ([`observe::cluster`]), [`plan::destroy`] makes the typed
//! steps (pure; printing them is the dry run), and [`run::execute_reporting`] runs them. This
//! file holds the flags, the confirmation and the output.
//!
//! The operator's WireGuard peer of the org (issue 12) goes with the org's last cluster, when
//! fks-bootstrap made it ([`plan::peer`]): removed after the apps, shown by `--dry-run`; a
//! failure to remove it is reported and does not fail the destroy.
//!
//! Ownership: every machine of a candidate app must carry `fks_cluster=<cluster>`; one that
//! does not stops the destroy before any change. Volumes and secrets are only touched inside
//! the candidate apps. Must not: delete anything outside those apps, or anything at all
//! without `--yes` or the typed cluster name.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::anyhow;

use super::output;
use crate::fly::Client;
use crate::observe;
use crate::plan::destroy::{removal_kind, removal_line, Destroy};
use crate::plan::peer::PeerStep;
use crate::plan::{self, Action};
use crate::run;
use crate::tunnel;

/// Shown under `destroy --help`.
pub const AFTER_HELP: &str = "\
Removes, in this order: the machines of <cluster>-cp and of every <cluster>-ng-<group> app in
ORG_NAME (forced, waited for), their volumes, the apps' secrets, then the apps. A machine in
those apps without fks_cluster=<cluster> metadata makes destroy refuse before any change; an
app with no machine and no secret fks-bootstrap writes (K3S_TOKEN, FKS_*) is only a name match
and is left alone.
When no other cluster of ORG_NAME remains (no other <c>-cp or <c>-ng-<group> app holding a
machine with fks_cluster metadata or a secret fks-bootstrap writes), the WireGuard peer that
fks-bootstrap made for the org (tunnel up, -s, proxy, kubectl) is removed too, after the apps,
and its saved key forgotten; a failure there is reported but does not fail the destroy
(`tunnel down` removes it later).
Without --yes it asks you to type the cluster name; without a terminal, pass --yes.
Running it again when everything is gone changes nothing and exits 0.";

/// Remove this cluster's machines, volumes, secrets and apps.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// Destroy without asking for the cluster name (required without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print what would be removed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `destroy`: config, no-terminal check, observe, plan (ownership check included), dry
/// run or confirmation, then the run.
pub fn run(args: Args) -> Result<(), super::Error> {
    let config = super::load_config(&args.cluster_dir)?;
    let cluster = config.cluster_name.clone();
    let interactive = std::io::stdin().is_terminal();
    if !args.yes && !args.dry_run && !interactive {
        return Err(super::Error::Usage(anyhow!(
            "destroy removes cluster {cluster} for good and asks you to type its name, but stdin is not a terminal: pass --yes to destroy without asking"
        )));
    }
    let client = super::fly_client()?;
    let rt = super::runtime()?;
    let failed = |e: anyhow::Error| super::Error::Failed(e);
    let apps = rt
        .block_on(observe::cluster(&client, &config))
        .map_err(|e| failed(e.into()))?;
    let mut destroy = plan::destroy::destroy(&cluster, &apps).map_err(|e| failed(e.into()))?;
    if !destroy.plan.is_empty() {
        destroy.peer = rt.block_on(peer_step(&client, &config));
    }
    if let Some(keep @ PeerStep::Keep { .. }) = &destroy.peer {
        eprintln!("[INFO] {keep}");
    }
    for app in &destroy.unclaimed {
        eprintln!(
            "[INFO] leaving app {app} alone: it is named like an app of cluster {cluster} but has no machine and no secret fks-bootstrap writes; delete it yourself if it is yours"
        );
    }
    if destroy.plan.is_empty() {
        return output::stdout(&format!(
            "nothing to destroy: organization {} has no app of cluster {cluster}\n",
            config.org_name
        ));
    }
    let lines = destroy.describe();
    if args.dry_run {
        let text: String = lines
            .iter()
            .map(|l| format!("would remove {l}\n"))
            .collect();
        return output::stdout(&text);
    }
    if !args.yes {
        confirm(&cluster, "destroy will remove", "destroy it", &lines)?;
    }
    let counts = rt.block_on(execute(&client, &destroy));
    let counts = counts.map_err(|e| failed(e.into()))?;
    eprintln!(
        "cluster {cluster} destroyed: {} machines, {} volumes, {} secrets, {} apps",
        counts[0], counts[1], counts[2], counts[3]
    );
    if let Some(PeerStep::Remove { org, peer }) = &destroy.peer {
        remove_peer(&rt, org, peer, &args.cluster_dir);
    }
    Ok(())
}

/// What to do with the operator's WireGuard peer of the org ([`plan::peer`]): `None` when no
/// peer fks-bootstrap made is saved here, or when the org's other apps could not be read (the
/// peer is then kept, and that is said).
async fn peer_step(client: &Client, config: &crate::config::Config) -> Option<PeerStep> {
    let org = &config.org_name;
    // No config dir (no HOME): no peer can have been saved.
    let dir = super::tunnel::config_dir().ok()?;
    let saved = match tunnel::peer::load(&dir, org) {
        Ok(saved) => saved?,
        Err(e) => {
            eprintln!("[WARN] leaving the WireGuard peer of org {org} alone: {e}");
            return None;
        }
    };
    if !saved.made_by_fks_bootstrap {
        return None;
    }
    let others = match observe::other_clusters(client, config).await {
        Ok(others) => others,
        Err(e) => {
            eprintln!(
                "[WARN] keeping WireGuard peer {} of org {org}: could not tell whether another cluster of the org remains: {:#}",
                saved.name,
                anyhow::Error::new(e)
            );
            return None;
        }
    };
    plan::peer::peer_step(&config.cluster_name, org, Some(&saved.name), &others)
}

/// Removes the org's peer at Fly and forgets its saved file, after the cluster is gone. A
/// failure is reported on stderr and does not fail the destroy: the cluster is gone either
/// way, and `tunnel down` removes the peer later.
fn remove_peer(rt: &tokio::runtime::Runtime, org: &str, peer: &str, cluster_dir: &Path) {
    let removed = super::tunnel::graphql_client()
        .map_err(anyhow::Error::new)
        .and_then(|gql| {
            let dir = super::tunnel::config_dir().map_err(anyhow::Error::new)?;
            rt.block_on(tunnel::remove_peer(&gql, &dir, org))
                .map_err(anyhow::Error::new)
        });
    match removed {
        Ok(true) => {
            // The work is done; a closed stdout (`| head`) only loses the report.
            let _ = output::stdout(&format!(
                "removed WireGuard peer {peer} of org {org} (the org's last cluster is gone)\n"
            ));
        }
        Ok(false) => {}
        Err(e) => eprintln!(
            "[WARN] the cluster is destroyed, but removing WireGuard peer {peer} of org {org} failed: {e:#}; \
             the destroy still succeeded; remove the peer with `fks-bootstrap tunnel down {}`",
            cluster_dir.display()
        ),
    }
}

/// Runs the destroy plan, printing each finished removal on stdout and each phase's start on
/// stderr. Returns how many of each were removed.
async fn execute(client: &Client, destroy: &Destroy) -> Result<[usize; 4], run::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<run::Finished>();
    let plan = &destroy.plan;
    let printer = async {
        let mut counts = [0usize; 4];
        let mut phase = None;
        announce(&mut phase, 0);
        while let Some(done) = rx.recv().await {
            let step = &plan.steps[done.step.0];
            let Some(kind) = removal_kind(&step.action) else {
                continue;
            };
            announce(&mut phase, kind);
            counts[kind] += 1;
            // Keep removing when stdout is gone (`| head`): the work matters more than the
            // report, and the summary still reaches stderr.
            let mut out = std::io::stdout().lock();
            if let Err(e) = writeln!(out, "{}", done_line(&step.action, step.node.as_deref()))
                .and_then(|()| out.flush())
            {
                tracing::warn!("writing to stdout: {e}");
            }
        }
        counts
    };
    let work = async {
        let result =
            run::execute_reporting(client, plan, &run::Options::default(), None, Some(tx)).await;
        result.map(|_| ())
    };
    let (result, counts) = tokio::join!(work, printer);
    result.map(|()| counts)
}

/// Prints on stderr the header of each phase up to `kind` not yet announced (`destroying
/// machines`, ...); a phase with nothing to remove is announced too, as each phase always was.
fn announce(phase: &mut Option<usize>, kind: usize) {
    const HEADERS: [&str; 4] = [
        "destroying machines",
        "deleting volumes",
        "deleting secrets",
        "deleting apps",
    ];
    let from = phase.map_or(0, |p| p + 1);
    for header in HEADERS.iter().take(kind + 1).skip(from) {
        eprintln!("{header}");
    }
    if phase.is_none_or(|p| p < kind) {
        *phase = Some(kind);
    }
}

/// The stdout line of a finished removal: `destroyed machine ...`, `deleted volume ...`.
fn done_line(action: &Action, node: Option<&str>) -> String {
    let verb = match action {
        Action::DestroyMachine { .. } => "destroyed",
        _ => "deleted",
    };
    match removal_line(action, node) {
        Some(what) => format!("{verb} {what}"),
        None => action.to_string(),
    }
}

/// Shows the plan on stderr under `heading` and asks for the cluster name on the terminal to
/// `action` (destroy's confirmation, also used by `nodegroup remove` and a scale-down).
pub(super) fn confirm(
    cluster: &str,
    heading: &str,
    action: &str,
    plan: &[String],
) -> Result<(), super::Error> {
    confirm_with(
        cluster,
        heading,
        action,
        plan,
        &mut std::io::stdin().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// [`confirm`] over any reader and writer: the answer must be the cluster name exactly
/// (surrounding blanks ignored); anything else, end of input included, is a usage error.
fn confirm_with(
    cluster: &str,
    heading: &str,
    action: &str,
    plan: &[String],
    input: &mut impl BufRead,
    prompt_to: &mut impl Write,
) -> Result<(), super::Error> {
    let mut prompt = format!("{heading}:\n");
    for l in plan {
        prompt.push_str(&format!("  {l}\n"));
    }
    prompt.push_str(&format!("type the cluster name ({cluster}) to {action}: "));
    let io = |e: std::io::Error| {
        super::Error::Failed(anyhow::Error::new(e).context("asking for confirmation"))
    };
    prompt_to
        .write_all(prompt.as_bytes())
        .and_then(|()| prompt_to.flush())
        .map_err(io)?;
    let mut answer = String::new();
    input.read_line(&mut answer).map_err(io)?;
    if answer.trim() == cluster {
        Ok(())
    } else {
        Err(super::Error::Usage(anyhow!(
            "the answer {:?} is not the cluster name {cluster}: nothing was changed",
            answer.trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{MachineRef, Ref};

    #[test]
    fn confirmation_needs_the_exact_cluster_name() {
        const H: &str = "destroy will remove";
        const A: &str = "destroy it";
        let plan = ["app lab-cp".to_string()];
        let mut prompt = Vec::new();
        assert!(confirm_with("lab", H, A, &plan, &mut &b"lab\n"[..], &mut prompt).is_ok());
        let shown = String::from_utf8(prompt).expect("utf-8");
        assert!(
            shown.starts_with("destroy will remove:\n")
                && shown.contains("  app lab-cp\n")
                && shown.contains("(lab) to destroy it: "),
            "{shown}"
        );
        for answer in [&b"yes\n"[..], b"la\n", b"", b"LAB\n"] {
            let r = confirm_with("lab", H, A, &plan, &mut &answer[..], &mut Vec::new());
            assert!(
                matches!(r, Err(super::super::Error::Usage(_))),
                "{answer:?}"
            );
        }
        assert!(confirm_with("lab", H, A, &plan, &mut &b"  lab  \n"[..], &mut Vec::new()).is_ok());
    }

    #[test]
    fn done_lines_name_what_was_removed() {
        let machine = Action::DestroyMachine {
            machine: MachineRef {
                app: "lab-cp".into(),
                id: Ref::Known("a1".into()),
            },
        };
        assert_eq!(
            done_line(&machine, Some("ctrl-0")),
            "destroyed machine a1 (ctrl-0) in app lab-cp"
        );
        let volume = Action::DeleteVolume {
            app: "lab-cp".into(),
            volume: "vol_1".into(),
            name: "lab_data".into(),
            zone: "z1".into(),
        };
        assert_eq!(
            done_line(&volume, None),
            "deleted volume vol_1 (lab_data, zone z1) in app lab-cp"
        );
        let app = Action::DeleteApp {
            app: "lab-cp".into(),
        };
        assert_eq!(done_line(&app, None), "deleted app lab-cp");
    }
}
