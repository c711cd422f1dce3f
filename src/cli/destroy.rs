//! `fks-bootstrap destroy CLUSTER_DIR [--yes] [--dry-run]`: removes this cluster's machines,
//! volumes, secrets and apps (`<cluster>-cp` and every `<cluster>-ng-<group>` app of the
//! organization), and nothing else.
//!
//! Ownership: every machine of a candidate app must carry `fks_cluster=<cluster>`; one that
//! does not stops the destroy before any change. Volumes and secrets are only touched inside
//! the candidate apps. Must not: delete anything outside those apps, or anything at all
//! without `--yes` or the typed cluster name.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::output;
use crate::config::Config;
use crate::fly::types::{App, Machine, MachineListFilter, MachineState, Volume};
use crate::fly::{self, Client};
use crate::plan::{self, META_CLUSTER, META_NODE};

/// Shown under `destroy --help`.
pub const AFTER_HELP: &str = "\
Removes, in this order: the machines of <cluster>-cp and of every <cluster>-ng-<group> app in
ORG_NAME (forced, waited for), their volumes, the apps' secrets, then the apps. A machine in
those apps without fks_cluster=<cluster> metadata makes destroy refuse before any change; an
app with no machine and no secret fks-bootstrap writes (K3S_TOKEN, FKS_*) is only a name match
and is left alone.
Without --yes it asks you to type the cluster name; without a terminal, pass --yes.
Running it again when everything is gone changes nothing and exits 0.";

/// How long one machine may take to reach `destroyed` after its destroy call.
const DESTROY_WAIT: Duration = Duration::from_secs(300);

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

/// Why a destroy stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The organization's apps could not be listed.
    #[error("listing the apps of organization {org}")]
    ListApps {
        /// `ORG_NAME`.
        org: String,
        /// The API error (boxed: it is large).
        #[source]
        source: Box<fly::Error>,
    },
    /// An app's machines, volumes or secrets could not be listed.
    #[error("reading the {what} of app {app}")]
    Inventory {
        /// `machines`, `volumes` or `secrets`.
        what: &'static str,
        /// The app.
        app: String,
        /// The API error (boxed: it is large).
        #[source]
        source: Box<fly::Error>,
    },
    /// A machine in one of the cluster's apps is not the cluster's.
    #[error("refusing to destroy cluster {cluster}: machine {machine} in app {app} has no fks_cluster={cluster} metadata ({found}), so it was not made by fks-bootstrap for this cluster; remove or move it yourself, then run destroy again (nothing was changed)")]
    Foreign {
        /// The cluster being destroyed.
        cluster: String,
        /// The app holding the machine.
        app: String,
        /// Its id and name: `1781e4db (ctrl-9)`.
        machine: String,
        /// What its metadata says instead.
        found: String,
    },
    /// A removal call failed.
    #[error("{what} {id} in app {app}")]
    Remove {
        /// `destroying machine`, `waiting for machine`, `deleting volume`, ...
        what: &'static str,
        /// The object's id or name.
        id: String,
        /// The app.
        app: String,
        /// The API error (boxed: it is large).
        #[source]
        source: Box<fly::Error>,
    },
    /// A removal task ended without an answer (it panicked or was cancelled).
    #[error("a removal task of cluster {cluster} stopped unexpectedly")]
    Task {
        /// The cluster.
        cluster: String,
        /// What tokio reported.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Everything of one app that destroy removes.
#[derive(Debug, Clone, Default)]
pub struct AppInventory {
    /// The app name.
    pub app: String,
    /// Its machines that are not destroyed yet.
    pub machines: Vec<Machine>,
    /// Its volumes that are not on their way out yet.
    pub volumes: Vec<Volume>,
    /// Its secrets' names.
    pub secrets: Vec<String>,
}

/// The apps of `org_apps` that belong to `cluster` by name: `<cluster>-cp` and
/// `<cluster>-ng-<group>` with a valid group name; sorted.
pub fn cluster_apps(cluster: &str, org_apps: &[App]) -> Vec<String> {
    let cp = format!("{cluster}-cp");
    let ng = format!("{cluster}-ng-");
    let mut apps: Vec<String> = org_apps
        .iter()
        .map(|a| a.name.as_str())
        .filter(|name| {
            *name == cp
                || name
                    .strip_prefix(&ng)
                    .is_some_and(|g| plan::Target::node_group(g).is_ok())
        })
        .map(str::to_string)
        .collect();
    apps.sort();
    apps.dedup();
    apps
}

/// Refuses when any machine of the inventory lacks `fks_cluster=<cluster>`.
pub fn check_ownership(cluster: &str, inventory: &[AppInventory]) -> Result<(), Error> {
    for app in inventory {
        for m in &app.machines {
            let tag = m.metadata(META_CLUSTER);
            if tag != Some(cluster) {
                return Err(Error::Foreign {
                    cluster: cluster.to_string(),
                    app: app.app.clone(),
                    machine: format!("{} ({})", m.id, m.name),
                    found: match tag {
                        Some(other) => format!("it has fks_cluster={other}"),
                        None => "it has no fks_cluster".to_string(),
                    },
                });
            }
        }
    }
    Ok(())
}

/// Whether an app shows a sign of being this tool's: a machine (already checked to carry
/// `fks_cluster=<cluster>`) or a secret only fks-bootstrap writes (`K3S_TOKEN`, `FKS_*`).
/// An app with neither is only a name match (say another team's empty `<cluster>-ng-x`) and
/// is left alone.
pub fn claimed(app: &AppInventory) -> bool {
    !app.machines.is_empty()
        || app
            .secrets
            .iter()
            .any(|s| s == plan::TOKEN_SECRET || s.starts_with("FKS_"))
}

/// What the removal will do, one line per object, in order.
pub fn describe(inventory: &[AppInventory]) -> Vec<String> {
    let mut lines = Vec::new();
    for a in inventory {
        for m in &a.machines {
            lines.push(format!(
                "machine {} ({}) in app {}",
                m.id,
                node_name(m),
                a.app
            ));
        }
    }
    for a in inventory {
        for v in &a.volumes {
            lines.push(format!(
                "volume {} ({}, zone {}) in app {}",
                v.id, v.name, v.zone, a.app
            ));
        }
    }
    for a in inventory {
        for s in &a.secrets {
            lines.push(format!("secret {s} of app {}", a.app));
        }
    }
    for a in inventory {
        lines.push(format!("app {}", a.app));
    }
    lines
}

fn node_name(m: &Machine) -> &str {
    m.metadata(META_NODE).unwrap_or(&m.name)
}

/// Runs `destroy`: config, no-terminal check, inventory, ownership check, dry run or
/// confirmation, then the removal phases.
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
    let failed = |e: Error| super::Error::Failed(e.into());
    let inventory = rt.block_on(inventory(&client, &config)).map_err(failed)?;
    check_ownership(&cluster, &inventory).map_err(failed)?;
    let (inventory, unclaimed): (Vec<AppInventory>, Vec<AppInventory>) =
        inventory.into_iter().partition(claimed);
    for a in &unclaimed {
        eprintln!(
            "[INFO] leaving app {} alone: it is named like an app of cluster {cluster} but has no machine and no secret fks-bootstrap writes; delete it yourself if it is yours",
            a.app
        );
    }
    if inventory.is_empty() {
        return output::stdout(&format!(
            "nothing to destroy: organization {} has no app of cluster {cluster}\n",
            config.org_name
        ));
    }
    let plan = describe(&inventory);
    if args.dry_run {
        let text: String = plan.iter().map(|l| format!("would remove {l}\n")).collect();
        return output::stdout(&text);
    }
    if !args.yes {
        confirm(&cluster, &plan)?;
    }
    let counts = rt.block_on(remove(&client, &cluster, inventory));
    let counts = counts.map_err(failed)?;
    eprintln!(
        "cluster {cluster} destroyed: {} machines, {} volumes, {} secrets, {} apps",
        counts[0], counts[1], counts[2], counts[3]
    );
    Ok(())
}

/// Shows the plan on stderr and asks for the cluster name on the terminal.
fn confirm(cluster: &str, plan: &[String]) -> Result<(), super::Error> {
    confirm_with(
        cluster,
        plan,
        &mut std::io::stdin().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// [`confirm`] over any reader and writer: the answer must be the cluster name exactly
/// (surrounding blanks ignored); anything else, end of input included, is a usage error.
fn confirm_with(
    cluster: &str,
    plan: &[String],
    input: &mut impl BufRead,
    prompt_to: &mut impl Write,
) -> Result<(), super::Error> {
    let mut prompt = String::from("destroy will remove:\n");
    for l in plan {
        prompt.push_str(&format!("  {l}\n"));
    }
    prompt.push_str(&format!(
        "type the cluster name ({cluster}) to destroy it: "
    ));
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
            "the answer {:?} is not the cluster name {cluster}: nothing was destroyed",
            answer.trim()
        )))
    }
}

/// Lists the cluster's apps in `ORG_NAME`, and in each its live machines, volumes and secrets.
pub async fn inventory(client: &Client, config: &Config) -> Result<Vec<AppInventory>, Error> {
    let org = &config.org_name;
    let apps = client
        .list_apps(org)
        .await
        .map_err(|source| Error::ListApps {
            org: org.clone(),
            source: Box::new(source),
        })?;
    let names = cluster_apps(&config.cluster_name, &apps.apps);
    let mut tasks = JoinSet::new();
    for app in names {
        let client = client.clone();
        tasks.spawn(async move { app_inventory(&client, app).await });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let done = done.map_err(|source| Error::Task {
            cluster: config.cluster_name.clone(),
            source,
        })?;
        if let Some(inv) = done? {
            out.push(inv);
        }
    }
    out.sort_by(|a, b| a.app.cmp(&b.app));
    Ok(out)
}

/// One app's live objects; `None` when the app vanished between the listing and now.
async fn app_inventory(client: &Client, app: String) -> Result<Option<AppInventory>, Error> {
    let all = MachineListFilter::default();
    let (machines, volumes, secrets) = tokio::join!(
        client.list_machines(&app, &all),
        client.list_volumes(&app),
        client.list_secrets(&app)
    );
    let err = |what: &'static str| {
        let app = app.clone();
        move |source| Error::Inventory {
            what,
            app,
            source: Box::new(source),
        }
    };
    if matches!(&machines, Err(e) if e.is_not_found()) {
        return Ok(None);
    }
    let mut machines = machines.map_err(err("machines"))?;
    machines.retain(|m| m.state != MachineState::Destroyed);
    machines.sort_by(|a, b| node_name(a).cmp(node_name(b)));
    let mut volumes = volumes.map_err(err("volumes"))?;
    volumes.retain(|v| !v.state.is_being_destroyed());
    volumes.sort_by(|a, b| a.id.cmp(&b.id));
    let secrets = if matches!(&secrets, Err(e) if e.is_not_found()) {
        Vec::new()
    } else {
        let mut names: Vec<String> = secrets
            .map_err(err("secrets"))?
            .into_iter()
            .map(|s| s.name)
            .collect();
        names.sort();
        names
    };
    Ok(Some(AppInventory {
        app,
        machines,
        volumes,
        secrets,
    }))
}

/// A removal to run: its stdout line once done, and the call.
type Removal = std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, Error>> + Send>>;

/// Runs `removals` concurrently (the client keeps within Fly's rate limits), printing each
/// finished one on stdout. Every removal is attempted; the first error is returned.
async fn run_all(cluster: &str, removals: Vec<Removal>) -> Result<usize, Error> {
    let mut tasks = JoinSet::new();
    for r in removals {
        tasks.spawn(r);
    }
    let mut done = 0;
    let mut first_error = None;
    while let Some(result) = tasks.join_next().await {
        let result = result.map_err(|source| Error::Task {
            cluster: cluster.to_string(),
            source,
        });
        match result.and_then(|r| r) {
            Ok(line) => {
                done += 1;
                // Keep removing when stdout is gone (`| head`): the work matters more than
                // the report, and the summary still reaches stderr.
                let mut out = std::io::stdout().lock();
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    tracing::warn!("writing to stdout: {e}");
                }
            }
            Err(e) => {
                tracing::error!("{}", chain(&e));
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// An error with its causes on one line, for the log (the first error is returned instead).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Machines (forced, then waited for until destroyed), volumes, secrets, apps; each phase
/// concurrent, the phases in order because a volume stays attached until its machine is gone
/// and an app is deleted last. Returns how many of each were removed.
async fn remove(
    client: &Client,
    cluster: &str,
    inventory: Vec<AppInventory>,
) -> Result<[usize; 4], Error> {
    let mut counts = [0; 4];
    eprintln!("destroying machines");
    let mut removals: Vec<Removal> = Vec::new();
    for a in &inventory {
        for m in &a.machines {
            let (c, app, id, node) = (
                client.clone(),
                a.app.clone(),
                m.id.clone(),
                node_name(m).to_string(),
            );
            removals.push(Box::pin(async move {
                let fail = |what: &'static str| {
                    let (id, app) = (id.clone(), app.clone());
                    move |source| Error::Remove {
                        what,
                        id,
                        app,
                        source: Box::new(source),
                    }
                };
                c.destroy_machine(&app, &id, None)
                    .await
                    .map_err(fail("destroying machine"))?;
                c.wait(
                    &app,
                    &id,
                    MachineState::Destroyed,
                    None,
                    Instant::now() + DESTROY_WAIT,
                )
                .await
                .map_err(fail("waiting for the destroy of machine"))?;
                Ok(format!("destroyed machine {id} ({node}) in app {app}"))
            }));
        }
    }
    counts[0] = run_all(cluster, removals).await?;

    eprintln!("deleting volumes");
    let mut removals: Vec<Removal> = Vec::new();
    for a in &inventory {
        for v in &a.volumes {
            let (c, app, id, desc) = (
                client.clone(),
                a.app.clone(),
                v.id.clone(),
                format!("{}, zone {}", v.name, v.zone),
            );
            removals.push(Box::pin(async move {
                c.delete_volume(&app, &id)
                    .await
                    .map_err(|source| Error::Remove {
                        what: "deleting volume",
                        id: id.clone(),
                        app: app.clone(),
                        source: Box::new(source),
                    })?;
                Ok(format!("deleted volume {id} ({desc}) in app {app}"))
            }));
        }
    }
    counts[1] = run_all(cluster, removals).await?;

    eprintln!("deleting secrets");
    let mut removals: Vec<Removal> = Vec::new();
    for a in &inventory {
        for s in &a.secrets {
            let (c, app, name) = (client.clone(), a.app.clone(), s.clone());
            removals.push(Box::pin(async move {
                c.delete_secret(&app, &name)
                    .await
                    .map_err(|source| Error::Remove {
                        what: "deleting secret",
                        id: name.clone(),
                        app: app.clone(),
                        source: Box::new(source),
                    })?;
                Ok(format!("deleted secret {name} of app {app}"))
            }));
        }
    }
    counts[2] = run_all(cluster, removals).await?;

    eprintln!("deleting apps");
    let mut removals: Vec<Removal> = Vec::new();
    for a in &inventory {
        let (c, app) = (client.clone(), a.app.clone());
        removals.push(Box::pin(async move {
            // Not forced: every machine is destroyed by now, and a machine that appeared
            // since the ownership check makes the delete fail instead of vanishing with it.
            c.delete_app(&app, false)
                .await
                .map_err(|source| Error::Remove {
                    what: "deleting app",
                    id: app.clone(),
                    app: app.clone(),
                    source: Box::new(source),
                })?;
            Ok(format!("deleted app {app}"))
        }));
    }
    counts[3] = run_all(cluster, removals).await?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::types::MachineConfig;

    fn app(name: &str) -> App {
        App {
            name: name.into(),
            ..App::default()
        }
    }

    fn machine(id: &str, cluster: Option<&str>) -> Machine {
        let mut config = MachineConfig::default();
        if let Some(c) = cluster {
            config.metadata.insert(META_CLUSTER.into(), c.into());
        }
        Machine {
            id: id.into(),
            name: format!("m-{id}"),
            config: Some(config),
            ..Machine::default()
        }
    }

    #[test]
    fn cluster_apps_match_cp_and_valid_node_groups_only() {
        let apps = [
            app("lab-cp"),
            app("lab-ng-web"),
            app("lab-ng-Web"),
            app("lab-ng-"),
            app("lab2-cp"),
            app("labx-ng-web"),
            app("lab-cpx"),
            app("other"),
            app("lab-ng-db1"),
        ];
        assert_eq!(
            cluster_apps("lab", &apps),
            ["lab-cp", "lab-ng-db1", "lab-ng-web"]
        );
    }

    #[test]
    fn an_empty_app_without_our_secrets_is_not_claimed() {
        let empty = AppInventory {
            app: "lab-ng-x".into(),
            secrets: vec!["DATABASE_URL".into()],
            ..AppInventory::default()
        };
        assert!(!claimed(&empty), "a name match alone is not ours");
        for secret in ["K3S_TOKEN", "FKS_WORKER_NG_X_0_SSH_HOST_ED25519_KEY"] {
            let ours = AppInventory {
                secrets: vec![secret.into()],
                ..empty.clone()
            };
            assert!(claimed(&ours), "{secret}");
        }
        let with_machine = AppInventory {
            machines: vec![machine("a1", Some("lab"))],
            ..empty
        };
        assert!(claimed(&with_machine));
    }

    #[test]
    fn ownership_refuses_a_machine_without_our_metadata_and_names_it() {
        let inv = vec![AppInventory {
            app: "lab-cp".into(),
            machines: vec![machine("a1", Some("lab")), machine("b2", None)],
            ..AppInventory::default()
        }];
        let err = check_ownership("lab", &inv).expect_err("foreign machine");
        let text = err.to_string();
        assert!(text.contains("b2") && text.contains("lab-cp"), "{text}");
        let other = vec![AppInventory {
            app: "lab-cp".into(),
            machines: vec![machine("c3", Some("lab2"))],
            ..AppInventory::default()
        }];
        assert!(check_ownership("lab", &other)
            .expect_err("other cluster")
            .to_string()
            .contains("fks_cluster=lab2"));
        let ours = vec![AppInventory {
            app: "lab-cp".into(),
            machines: vec![machine("a1", Some("lab"))],
            ..AppInventory::default()
        }];
        assert!(check_ownership("lab", &ours).is_ok());
    }

    #[test]
    fn confirmation_needs_the_exact_cluster_name() {
        let plan = ["app lab-cp".to_string()];
        let mut prompt = Vec::new();
        assert!(confirm_with("lab", &plan, &mut &b"lab\n"[..], &mut prompt).is_ok());
        let shown = String::from_utf8(prompt).expect("utf-8");
        assert!(
            shown.contains("  app lab-cp\n") && shown.contains("(lab)"),
            "{shown}"
        );
        for answer in [&b"yes\n"[..], b"la\n", b"", b"LAB\n"] {
            let r = confirm_with("lab", &plan, &mut &answer[..], &mut Vec::new());
            assert!(
                matches!(r, Err(super::super::Error::Usage(_))),
                "{answer:?}"
            );
        }
        assert!(confirm_with("lab", &plan, &mut &b"  lab  \n"[..], &mut Vec::new()).is_ok());
    }

    #[test]
    fn describe_orders_machines_volumes_secrets_apps() {
        let inv = vec![AppInventory {
            app: "lab-cp".into(),
            machines: vec![machine("a1", Some("lab"))],
            volumes: vec![Volume {
                id: "vol_1".into(),
                name: "lab_data".into(),
                zone: "z1".into(),
                ..Volume::default()
            }],
            secrets: vec!["K3S_TOKEN".into()],
        }];
        assert_eq!(
            describe(&inv),
            [
                "machine a1 (m-a1) in app lab-cp",
                "volume vol_1 (lab_data, zone z1) in app lab-cp",
                "secret K3S_TOKEN of app lab-cp",
                "app lab-cp",
            ]
        );
    }
}
