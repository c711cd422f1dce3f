//! The one observer (ARCHITECTURE.md "One path for every mutating command"): reads what exists
//! of a cluster on Fly, once, for every command. `create`/`nodegroup add` read their target's
//! app ([`target`]), `destroy` every app of the cluster ([`cluster`]), `list`, `taint` and
//! `kubeconfig` one app ([`app`]). Each read is one list call per resource; what to make of the
//! answer (ownership, filters, diffs) is decided by pure code in `plan` and `cli`.
//!
//! Must not: change anything (reads only), or read a secret's value (names only).

use std::collections::BTreeSet;

use tokio::task::JoinSet;

use crate::config::Config;
use crate::fly::types::{App, MachineListFilter};
use crate::fly::{self, Client};
use crate::plan::{State, Target};

/// Why an observation failed.
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
    /// An app, its machines, volumes or secrets could not be read.
    #[error("reading the {what} of app {app}")]
    Read {
        /// `app`, `machines`, `volumes` or `secrets`.
        what: &'static str,
        /// The app.
        app: String,
        /// The API error (boxed: it is large).
        #[source]
        source: Box<fly::Error>,
    },
    /// A read task ended without an answer (it panicked or was cancelled).
    #[error("a read of cluster {cluster} stopped unexpectedly")]
    Task {
        /// The cluster.
        cluster: String,
        /// What tokio reported.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    /// Whether Fly answered 404 (an app that does not exist).
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::ListApps { source, .. } | Error::Read { source, .. } => source.is_not_found(),
            Error::Task { .. } => false,
        }
    }
}

/// What to read of an app besides its machines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// Its volumes.
    pub volumes: bool,
    /// Its secrets' names.
    pub secrets: bool,
}

impl Reads {
    /// Machines only.
    pub const MACHINES: Reads = Reads {
        volumes: false,
        secrets: false,
    };
    /// Machines and volumes.
    pub const MACHINES_VOLUMES: Reads = Reads {
        volumes: true,
        secrets: false,
    };
    /// Everything.
    pub const ALL: Reads = Reads {
        volumes: true,
        secrets: true,
    };
}

pub use crate::plan::AppState;

fn read_err(what: &'static str, app: &str) -> impl FnOnce(fly::Error) -> Error {
    let app = app.to_string();
    move |source| Error::Read {
        what,
        app,
        source: Box::new(source),
    }
}

/// Reads `app`: its machines, and its volumes and secret names as `reads` asks, one list call
/// each, concurrently. `None` when the app does not exist (its machine list answers 404).
pub async fn app(client: &Client, app: &str, reads: Reads) -> Result<Option<AppState>, Error> {
    let all = MachineListFilter::default();
    let (machines, volumes, secrets) = tokio::join!(
        client.list_machines(app, &all),
        async {
            match reads.volumes {
                true => Some(client.list_volumes(app).await),
                false => None,
            }
        },
        async {
            match reads.secrets {
                true => Some(client.list_secrets(app).await),
                false => None,
            }
        },
    );
    let machines = match machines {
        Ok(ms) => ms,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(read_err("machines", app)(e)),
    };
    let volumes = match volumes {
        None => Vec::new(),
        Some(Ok(vs)) => vs,
        Some(Err(e)) if e.is_not_found() => return Ok(None),
        Some(Err(e)) => return Err(read_err("volumes", app)(e)),
    };
    let secrets = match secrets {
        None => BTreeSet::new(),
        Some(Ok(ss)) => ss.into_iter().map(|s| s.name).collect(),
        // An app Fly knows no secrets store for.
        Some(Err(e)) if e.is_not_found() => BTreeSet::new(),
        Some(Err(e)) => return Err(read_err("secrets", app)(e)),
    };
    Ok(Some(AppState {
        app: app.to_string(),
        machines,
        volumes,
        secrets,
    }))
}

/// The apps of `org_apps` that belong to `cluster` by name: `<cluster>-cp` and
/// `<cluster>-ng-<group>` with a valid group name; sorted. Pure.
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
                    .is_some_and(|g| Target::node_group(g).is_ok())
        })
        .map(str::to_string)
        .collect();
    apps.sort();
    apps.dedup();
    apps
}

/// The apps of `org_apps` named like the app of a cluster other than `cluster`
/// (`plan::peer::cluster_of_app`), `cluster`'s own ([`cluster_apps`]) left out; sorted. Pure.
pub fn other_cluster_apps(cluster: &str, org_apps: &[App]) -> Vec<String> {
    let own = cluster_apps(cluster, org_apps);
    let mut apps: Vec<String> = org_apps
        .iter()
        .map(|a| a.name.as_str())
        .filter(|n| !own.iter().any(|o| o == n) && crate::plan::peer::cluster_of_app(n).is_some())
        .map(str::to_string)
        .collect();
    apps.sort();
    apps.dedup();
    apps
}

/// The org's apps named like another cluster's ([`other_cluster_apps`]), each with its
/// machines and secret names, read concurrently; sorted by app. What `destroy` reads to know
/// whether the cluster it removes is the org's last (`plan::peer`). An app that vanished
/// between the listing and its reads is left out.
pub async fn other_clusters(client: &Client, config: &Config) -> Result<Vec<AppState>, Error> {
    let apps = org_apps(client, config).await?;
    let reads = Reads {
        volumes: false,
        secrets: true,
    };
    read_all(
        client,
        config,
        other_cluster_apps(&config.cluster_name, &apps.apps),
        reads,
    )
    .await
}

/// The apps of the config's `ORG_NAME`.
async fn org_apps(
    client: &Client,
    config: &Config,
) -> Result<crate::fly::types::ListAppsResponse, Error> {
    client
        .list_apps(&config.org_name)
        .await
        .map_err(|source| Error::ListApps {
            org: config.org_name.clone(),
            source: Box::new(source),
        })
}

/// Reads `names` concurrently with `reads`; sorted by app, vanished apps left out.
async fn read_all(
    client: &Client,
    config: &Config,
    names: Vec<String>,
    reads: Reads,
) -> Result<Vec<AppState>, Error> {
    let mut tasks = JoinSet::new();
    for name in names {
        let client = client.clone();
        tasks.spawn(async move { app(&client, &name, reads).await });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let done = done.map_err(|source| Error::Task {
            cluster: config.cluster_name.clone(),
            source,
        })?;
        out.extend(done?);
    }
    out.sort_by(|a, b| a.app.cmp(&b.app));
    Ok(out)
}

/// Every app of the cluster in `ORG_NAME` (by name, see [`cluster_apps`]) with everything in
/// it, read concurrently; sorted by app. An app that vanished between the listing and its
/// reads is left out.
pub async fn cluster(client: &Client, config: &Config) -> Result<Vec<AppState>, Error> {
    let apps = org_apps(client, config).await?;
    read_all(
        client,
        config,
        cluster_apps(&config.cluster_name, &apps.apps),
        Reads::ALL,
    )
    .await
}

/// What exists of `target` for the plan: whether its app exists (`GET /apps/{app}`, which
/// also refuses an app of another organization with 403), its volumes, machines and secret
/// names, and for a node group the control plane's machines.
pub async fn target(client: &Client, config: &Config, target: &Target) -> Result<State, Error> {
    let app_name = target.app(config);
    let mut state = State::default();
    match client.get_app(&app_name).await {
        Ok(_) => state.app_exists = true,
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(read_err("app", &app_name)(e)),
    }
    if state.app_exists {
        if let Some(found) = app(client, &app_name, Reads::ALL).await? {
            state.volumes = found.volumes;
            state.machines = found.machines;
            state.secrets = found.secrets;
        }
    }
    if let Target::NodeGroup { .. } = target {
        if let Some(cp) = app(client, &config.cp_app(), Reads::MACHINES).await? {
            state.control_plane = cp.machines;
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> App {
        App {
            name: name.into(),
            ..App::default()
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
        assert_eq!(
            other_cluster_apps("lab", &apps),
            ["lab2-cp", "labx-ng-web"],
            "its own apps and foreign names are left out"
        );
    }
}
