//! `fks-bootstrap list cp|GROUP CLUSTER_DIR [--json]` (k3s.sh's `-l`): the machines of the
//! control-plane app or of one node group's app, as a table or a JSON array on stdout.
//!
//! Must not: change anything (reads only, through the one observer: one machine list and one
//! volume list per app). Also home of [`owned_machines`], the ownership filter the commands
//! acting on nodes share.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::output;
use crate::config::Config;
use crate::fly::types::{Machine, MachineState, Volume};
use crate::fly::Client;
use crate::observe::{self, Reads};
use crate::plan::{self, ENV_ZONE, META_NODE, META_READY, META_ROLE};

/// List the nodes of the control plane (cp) or of one node group.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `cp` for the control plane, or a node group's name.
    #[arg(value_name = "cp|GROUP", value_parser = parse_node_set)]
    pub nodes: NodeSet,
    /// The cluster directory holding `config` or `cluster.toml`, e.g. clusters/lab.
    pub cluster_dir: PathBuf,
    /// Print a JSON array of objects instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which app's nodes an operator command is about: k3s.sh's `cp|GROUP` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSet {
    /// `cp`: the `<cluster>-cp` app.
    ControlPlane,
    /// A node group: the `<cluster>-ng-<group>` app.
    Group(String),
}

impl NodeSet {
    /// The Fly app holding these nodes.
    pub fn app(&self, config: &Config) -> String {
        match self {
            NodeSet::ControlPlane => config.cp_app(),
            NodeSet::Group(g) => config.node_group_app(g),
        }
    }
}

/// `cp`, or a node group name with the same rules as `plan` uses to build app names.
pub fn parse_node_set(value: &str) -> Result<NodeSet, plan::Error> {
    if value == "cp" {
        return Ok(NodeSet::ControlPlane);
    }
    match plan::Target::node_group(value)? {
        plan::Target::NodeGroup { group } => Ok(NodeSet::Group(group)),
        plan::Target::ControlPlane { .. } => Ok(NodeSet::ControlPlane),
    }
}

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control-plane app does not exist.
    #[error("cluster {cluster} has no control plane yet (app {app} not found): create it with fks-bootstrap -c {dir}")]
    NoControlPlane {
        /// Cluster name.
        cluster: String,
        /// The app looked for.
        app: String,
        /// The cluster directory as the user gave it.
        dir: String,
    },
    /// The node group's app does not exist.
    #[error("cluster {cluster} has no node group {group} yet (app {app} not found): add it with fks-bootstrap -a {group} {dir}")]
    NoNodeGroup {
        /// Cluster name.
        cluster: String,
        /// Group name.
        group: String,
        /// The app looked for.
        app: String,
        /// The cluster directory as the user gave it.
        dir: String,
    },
    /// A Fly API call failed.
    #[error("listing the nodes of app {app}")]
    Api {
        /// The app being listed.
        app: String,
        /// The observer's error (names the call).
        #[source]
        source: observe::Error,
    },
}

/// One line of the listing (the JSON object has these field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The node name (`fks_node` metadata; the machine name when it has none).
    pub name: String,
    /// The Fly machine id.
    pub machine_id: String,
    /// The Fly app.
    pub app: String,
    /// Region code.
    pub region: String,
    /// The zone of the attached volume, or the machine's `FKS_ZONE`; empty when neither.
    pub zone: String,
    /// Machine state.
    pub state: String,
    /// The 6PN address (changes when a machine moves: never cache it).
    pub private_ip: String,
    /// `fks_role` metadata (`server`, `agent`); empty when missing.
    pub role: String,
    /// `fks_ready=true` metadata: k3s reported the node Ready.
    pub ready: bool,
}

impl Row {
    /// A row of app `lab-cp` in `sjc` for tests: machine id `m-<name>`, no zone.
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, state: &str, role: &str, ip: &str, ready: bool) -> Row {
        Row {
            name: name.into(),
            machine_id: format!("m-{name}"),
            app: "lab-cp".into(),
            region: "sjc".into(),
            zone: String::new(),
            state: state.into(),
            private_ip: ip.into(),
            role: role.into(),
            ready,
        }
    }
}

const HEADER: [&str; 9] = [
    "NAME",
    "MACHINE ID",
    "APP",
    "REGION",
    "ZONE",
    "STATE",
    "6PN ADDRESS",
    "ROLE",
    "READY",
];

/// Runs `list` / `-l`: config, client, the rows, then a table or JSON on stdout.
pub fn run(args: Args) -> Result<(), super::Error> {
    let config = super::load_config(&args.cluster_dir)?;
    let client = super::fly_client()?;
    let rows = super::runtime()?
        .block_on(rows(&client, &config, &args.nodes, &args.cluster_dir))
        .map_err(|e| super::Error::Failed(e.into()))?;
    let text = if args.json {
        output::json(&rows)?
    } else {
        table(&rows)
    };
    output::stdout(&text)
}

/// The rows of `nodes`' app, sorted by node name (then machine id).
pub async fn rows(
    client: &Client,
    config: &Config,
    nodes: &NodeSet,
    dir: &Path,
) -> Result<Vec<Row>, Error> {
    let found = read(client, config, nodes, dir, Reads::MACHINES_VOLUMES).await?;
    Ok(build_rows(&found.app, &found.machines, &found.volumes))
}

/// `nodes`' app through the observer; a missing app is the sentence that says how to make it.
pub(super) async fn read(
    client: &Client,
    config: &Config,
    nodes: &NodeSet,
    dir: &Path,
    reads: Reads,
) -> Result<observe::AppState, Error> {
    let app = nodes.app(config);
    match observe::app(client, &app, reads).await {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(not_found(config, nodes, &app, dir)),
        Err(source) => Err(Error::Api { app, source }),
    }
}

/// The machines of `nodes`' app that carry `fks_cluster=<cluster>` (destroyed ones left out),
/// for the read-only commands that act on a cluster's nodes (`kubeconfig`, `proxy`): a machine
/// without that metadata was not made by fks-bootstrap for this cluster and is never touched.
/// (`taint` plans instead: `plan::taint` applies the same [`plan::owned_by`].)
pub async fn owned_machines(
    client: &Client,
    config: &Config,
    nodes: &NodeSet,
    dir: &Path,
) -> Result<Vec<Machine>, Error> {
    let found = read(client, config, nodes, dir, Reads::MACHINES).await?;
    Ok(owned(&config.cluster_name, found.machines))
}

/// Pure: the machines (destroyed ones left out) that carry `fks_cluster=<cluster>`.
pub fn owned(cluster: &str, machines: Vec<Machine>) -> Vec<Machine> {
    machines
        .into_iter()
        .filter(|m| plan::owned_by(m, cluster))
        .collect()
}

/// The sentence for a missing app: how to create it.
fn not_found(config: &Config, nodes: &NodeSet, app: &str, dir: &Path) -> Error {
    match nodes {
        NodeSet::ControlPlane => Error::NoControlPlane {
            cluster: config.cluster_name.clone(),
            app: app.to_string(),
            dir: dir.display().to_string(),
        },
        NodeSet::Group(group) => Error::NoNodeGroup {
            cluster: config.cluster_name.clone(),
            group: group.clone(),
            app: app.to_string(),
            dir: dir.display().to_string(),
        },
    }
}

/// Pure: machines (destroyed ones left out) joined with their volumes.
pub fn build_rows(app: &str, machines: &[Machine], volumes: &[Volume]) -> Vec<Row> {
    let mut rows: Vec<Row> = machines
        .iter()
        .filter(|m| m.state != MachineState::Destroyed)
        .map(|m| {
            let volume_zone = volumes
                .iter()
                .find(|v| v.attached_machine_id.as_deref() == Some(m.id.as_str()))
                .map(|v| v.zone.clone())
                .filter(|z| !z.is_empty());
            let env_zone = m.any_config().and_then(|c| c.env.get(ENV_ZONE)).cloned();
            Row {
                name: m.metadata(META_NODE).unwrap_or(&m.name).to_string(),
                machine_id: m.id.clone(),
                app: app.to_string(),
                region: m.region.clone(),
                zone: volume_zone.or(env_zone).unwrap_or_default(),
                state: m.state.to_string(),
                private_ip: m.private_ip.clone(),
                role: m.metadata(META_ROLE).unwrap_or_default().to_string(),
                ready: m.metadata(META_READY) == Some("true"),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        natural_key(&a.name)
            .cmp(&natural_key(&b.name))
            .then_with(|| a.machine_id.cmp(&b.machine_id))
    });
    rows
}

/// Sorts `worker-ng-a-2` before `worker-ng-a-10`: the name without its trailing number,
/// then that number.
fn natural_key(name: &str) -> (&str, Option<u64>) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = name.split_at(name.len() - digits);
    (stem, number.parse().ok())
}

/// The text table (empty fields shown as `-`).
pub fn table(rows: &[Row]) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                dash(&r.name),
                r.machine_id.clone(),
                r.app.clone(),
                dash(&r.region),
                dash(&r.zone),
                dash(&r.state),
                dash(&r.private_ip),
                dash(&r.role),
                if r.ready { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    output::table(&HEADER, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::types::MachineConfig;

    fn machine(id: &str, node: &str, zone_env: Option<&str>, ready: bool) -> Machine {
        let mut config = MachineConfig::default();
        config.metadata.insert(META_NODE.into(), node.into());
        config.metadata.insert(META_ROLE.into(), "server".into());
        if ready {
            config.metadata.insert(META_READY.into(), "true".into());
        }
        if let Some(z) = zone_env {
            config.env.insert(ENV_ZONE.into(), z.into());
        }
        Machine {
            id: id.into(),
            name: node.into(),
            state: MachineState::Started,
            region: "sjc".into(),
            private_ip: format!("fdaa::{id}"),
            config: Some(config),
            ..Machine::default()
        }
    }

    #[test]
    fn rows_take_the_zone_from_the_volume_then_the_env_and_sort_by_node() {
        let ms = vec![
            machine("b2", "ctrl-1", Some("envzone"), false),
            machine("a1", "ctrl-0", Some("ignored"), true),
            Machine {
                state: MachineState::Destroyed,
                ..machine("c3", "ctrl-2", None, false)
            },
        ];
        let vols = vec![Volume {
            id: "vol_1".into(),
            zone: "z1".into(),
            attached_machine_id: Some("a1".into()),
            ..Volume::default()
        }];
        let rows = build_rows("lab-cp", &ms, &vols);
        assert_eq!(rows.len(), 2, "destroyed machine left out");
        assert_eq!(rows[0].name, "ctrl-0");
        assert_eq!(rows[0].zone, "z1");
        assert!(rows[0].ready);
        assert_eq!(rows[1].name, "ctrl-1");
        assert_eq!(rows[1].zone, "envzone");
        assert!(!rows[1].ready);
        assert_eq!(rows[1].role, "server");
        assert_eq!(rows[1].private_ip, "fdaa::b2");
    }

    #[test]
    fn rows_sort_node_numbers_numerically() {
        let ms: Vec<Machine> = ["worker-ng-a-10", "worker-ng-a-2", "worker-ng-a-1"]
            .iter()
            .enumerate()
            .map(|(i, n)| machine(&format!("m{i}"), n, None, false))
            .collect();
        let names: Vec<String> = build_rows("lab-ng-a", &ms, &[])
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["worker-ng-a-1", "worker-ng-a-2", "worker-ng-a-10"]);
    }

    #[test]
    fn table_has_the_contract_columns() {
        let rows = build_rows("lab-cp", &[machine("a1", "ctrl-0", None, true)], &[]);
        let t = table(&rows);
        let mut lines = t.lines();
        assert_eq!(
            lines
                .next()
                .map(|l| l.split("  ").filter(|c| !c.is_empty()).count()),
            Some(9)
        );
        let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
        assert_eq!(
            row,
            ["ctrl-0", "a1", "lab-cp", "sjc", "-", "started", "fdaa::a1", "server", "yes"]
        );
    }

    #[test]
    fn node_set_is_cp_or_a_valid_group_name() {
        assert_eq!(parse_node_set("cp").ok(), Some(NodeSet::ControlPlane));
        assert_eq!(
            parse_node_set("web1").ok(),
            Some(NodeSet::Group("web1".into()))
        );
        assert!(parse_node_set("Web").is_err());
        assert!(parse_node_set("").is_err());
        assert!(parse_node_set("a/b").is_err());
    }
}
