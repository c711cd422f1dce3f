//! A cluster's health, per node: the machine (state, image) from the one observer, the
//! Kubernetes node (Ready, k3s version) from `k3s kubectl get nodes -o json` and the etcd
//! members (with their health) from `fks-bootstrap node etcd members --json`, both run through
//! the Machines API exec endpoint on a started server (the operator cannot reach 6443 or 2379
//! without 6PN). [`gather`] does the reads; [`merge`] and the verdicts are pure, so the day-2
//! operations can ask the same question before and after they act.
//!
//! Must not: change anything (reads only), run anything through a shell.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::fly::types::{Machine, MachineState};
use crate::fly::Client;
use crate::observe::{self, AppState};
use crate::plan::{META_CLUSTER, META_NODE, META_ROLE};
use crate::run::k3s::{self, K3sNode, Readiness};

/// Why the status could not be read at all (a node or member in bad shape is not an error: it
/// is in the report).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The observer failed.
    #[error("reading cluster {cluster}")]
    Observe {
        /// Cluster name.
        cluster: String,
        /// What failed.
        #[source]
        source: observe::Error,
    },
}

/// The arguments after the binary of the node-side member query.
pub const MEMBERS_ARGS: [&str; 4] = ["node", "etcd", "members", "--json"];

/// The node-side member query, run through exec: the image's own binary, found on the
/// machine's PATH as `k3s` is for the kubectl commands (the node image installs it in
/// /usr/local/bin, see `image::spec`), with [`MEMBERS_ARGS`].
pub fn members_command() -> Vec<String> {
    std::iter::once("fks-bootstrap")
        .chain(MEMBERS_ARGS)
        .map(str::to_string)
        .collect()
}

/// What `node etcd members --json` prints: the member list as the local member knows it, and
/// each member's health asked of that member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReport {
    /// Where the list was read (the local member's client URL).
    pub endpoint: String,
    /// Every member, in etcd's order.
    pub members: Vec<MemberHealth>,
}

/// One member and its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHealth {
    /// The member id, lowercase hex (as etcdctl prints it).
    pub id: String,
    /// k3s's member name, `<node-name>-<8 hex>`; empty until the member has started.
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
    /// Its client URLs; empty until it has started.
    pub client_urls: Vec<String>,
    /// A learner does not vote yet.
    pub learner: bool,
    /// The member says it is the leader.
    pub leader: bool,
    /// It answered `/health` (a quorum read) and its status.
    pub healthy: bool,
    /// Why it is not healthy.
    pub error: Option<String>,
}

/// The k3s node name a member belongs to: its name without k3s's `-<8 hex>` suffix
/// (k3s-io/k3s `pkg/etcd/etcd.go` `setName`). `None` for an unnamed (not started) member.
pub fn member_node(member_name: &str) -> Option<&str> {
    if member_name.is_empty() {
        return None;
    }
    match member_name.rsplit_once('-') {
        Some((node, suffix))
            if suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Some(node)
        }
        _ => Some(member_name),
    }
}

/// A member as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Hex id.
    pub id: String,
    /// k3s's member name (empty when not started).
    pub name: String,
    /// Healthy (answered a quorum read).
    pub healthy: bool,
    /// The leader.
    pub leader: bool,
    /// A learner (not voting yet).
    pub learner: bool,
    /// Why not healthy.
    pub error: Option<String>,
}

impl From<&MemberHealth> for Member {
    fn from(m: &MemberHealth) -> Self {
        Member {
            id: m.id.clone(),
            name: m.name.clone(),
            healthy: m.healthy,
            leader: m.leader,
            learner: m.learner,
            error: m.error.clone(),
        }
    }
}

/// One node of the cluster (one machine of its apps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// `fks_node` (the machine name when missing).
    pub name: String,
    /// The Fly app.
    pub app: String,
    /// The machine id.
    pub machine_id: String,
    /// `server` or `agent` (`fks_role`; empty when missing).
    pub role: String,
    /// The machine state (`started`, `stopped`, ...).
    pub state: String,
    /// The machine's image as configured.
    pub image: String,
    /// The k3s node name (`<machine id>.vm.<app>.internal`).
    pub k3s_node: String,
    /// The kubelet's version; empty when the node is not registered or unknown.
    pub k3s_version: String,
    /// `True`, `False`, `Unknown` (registered without answer, or the API could not be asked)
    /// or `NotRegistered`.
    pub ready: String,
    /// The server's etcd member; `null` for agents and for a server without one.
    pub member: Option<Member>,
    /// What is wrong with this node, one sentence each; empty when healthy.
    pub problems: Vec<String>,
}

/// The whole answer; the JSON of `status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The cluster name.
    pub cluster: String,
    /// Nothing is wrong.
    pub healthy: bool,
    /// Every node, by app then node name.
    pub nodes: Vec<Node>,
    /// Members whose name matches no server of the control plane.
    pub orphan_members: Vec<Member>,
    /// Kubernetes nodes that match no machine of the cluster (left behind by a machine that is
    /// gone), by name.
    pub orphan_nodes: Vec<String>,
    /// Cluster-wide problems (no started server, kubectl or the member query failed).
    pub problems: Vec<String>,
}

/// What the Kubernetes API said, or why it could not be asked.
pub type NodesAnswer = Result<Vec<K3sNode>, String>;
/// What the node-side member query said, or why it could not be run.
pub type MembersAnswer = Result<MembersReport, String>;

fn owned<'a>(
    cluster: &'a str,
    apps: &'a [AppState],
) -> impl Iterator<Item = (&'a str, &'a Machine)> {
    apps.iter().flat_map(move |a| {
        a.machines
            .iter()
            .filter(move |m| {
                m.state != MachineState::Destroyed && m.metadata(META_CLUSTER) == Some(cluster)
            })
            .map(move |m| (a.app.as_str(), m))
    })
}

/// Pure: the report from the observed apps and the two answers.
pub fn merge(
    cluster: &str,
    apps: &[AppState],
    nodes: &NodesAnswer,
    members: &MembersAnswer,
) -> Report {
    let mut problems = Vec::new();
    if let Err(why) = nodes {
        problems.push(format!("the Kubernetes API could not be asked: {why}"));
    }
    if let Err(why) = members {
        problems.push(format!("the etcd members could not be read: {why}"));
    }
    let mut k8s: BTreeMap<&str, &K3sNode> = match nodes {
        Ok(ns) => ns.iter().map(|n| (n.name.as_str(), n)).collect(),
        Err(_) => BTreeMap::new(),
    };
    let mut by_node: BTreeMap<&str, &MemberHealth> = BTreeMap::new();
    let mut unnamed: Vec<&MemberHealth> = Vec::new();
    if let Ok(report) = members {
        for m in &report.members {
            match member_node(&m.name) {
                Some(node) => {
                    by_node.insert(node, m);
                }
                None => unnamed.push(m),
            }
        }
    }
    let mut out = Vec::new();
    for (app, m) in owned(cluster, apps) {
        let k3s_node = k3s::k3s_node_name(&m.id, app);
        let role = m.metadata(META_ROLE).unwrap_or("").to_string();
        let mut node_problems = Vec::new();
        if m.state != MachineState::Started {
            node_problems.push(format!("machine is {}", m.state));
        }
        let (ready, version) = match (nodes, k8s.remove(k3s_node.as_str())) {
            (Err(_), _) => ("Unknown".to_string(), String::new()),
            (Ok(_), None) => {
                node_problems.push("not registered in Kubernetes".to_string());
                ("NotRegistered".to_string(), String::new())
            }
            (Ok(_), Some(n)) => {
                let ready = match &n.ready {
                    Readiness::Ready => "True".to_string(),
                    Readiness::NotReady(s) => {
                        node_problems.push(format!("NotReady (Ready={s})"));
                        s.clone()
                    }
                    Readiness::Unknown(why) => {
                        node_problems.push(format!("Ready unknown: {why}"));
                        "Unknown".to_string()
                    }
                };
                (ready, n.version.clone())
            }
        };
        let member = by_node.remove(k3s_node.as_str()).map(Member::from);
        if role == "server" && members.is_ok() {
            match &member {
                None => node_problems.push("not an etcd member".to_string()),
                Some(mb) if !mb.healthy => node_problems.push(format!(
                    "etcd member unhealthy: {}",
                    mb.error.as_deref().unwrap_or("no answer")
                )),
                Some(mb) if mb.learner => {
                    node_problems.push("etcd member is a learner (not voting yet)".to_string())
                }
                Some(_) => {}
            }
        }
        out.push(Node {
            name: m
                .metadata(META_NODE)
                .map(str::to_string)
                .unwrap_or_else(|| m.name.clone()),
            app: app.to_string(),
            machine_id: m.id.clone(),
            role,
            state: m.state.to_string(),
            image: m.any_config().map(|c| c.image.clone()).unwrap_or_default(),
            k3s_node,
            k3s_version: version,
            ready,
            member,
            problems: node_problems,
        });
    }
    out.sort_by(|a, b| (&a.app, &a.name, &a.machine_id).cmp(&(&b.app, &b.name, &b.machine_id)));
    let mut orphan_members: Vec<Member> = by_node.values().map(|m| Member::from(*m)).collect();
    orphan_members.extend(unnamed.into_iter().map(Member::from));
    let orphan_nodes: Vec<String> = k8s.keys().map(|n| n.to_string()).collect();
    let healthy = problems.is_empty()
        && orphan_members.is_empty()
        && orphan_nodes.is_empty()
        && out.iter().all(|n| n.problems.is_empty());
    Report {
        cluster: cluster.to_string(),
        healthy,
        nodes: out,
        orphan_members,
        orphan_nodes,
        problems,
    }
}

/// The started servers to ask, in node name order.
fn vias<'a>(cluster: &'a str, apps: &'a [AppState], cp_app: &str) -> Vec<&'a Machine> {
    let mut vias: Vec<&Machine> = owned(cluster, apps)
        .filter(|(app, m)| {
            *app == cp_app
                && m.state == MachineState::Started
                && m.metadata(META_ROLE).is_none_or(|r| r == "server")
        })
        .map(|(_, m)| m)
        .collect();
    vias.sort_by_key(|m| {
        (
            m.metadata(META_NODE).unwrap_or(&m.name).to_string(),
            m.id.clone(),
        )
    });
    vias
}

/// The started servers of `cluster` among `machines` (its control-plane app's), in node name
/// order: where the day-2 commands run their kubectl and etcd reads.
pub fn started_servers<'a>(cluster: &str, machines: &'a [Machine]) -> Vec<&'a Machine> {
    let mut out: Vec<&Machine> = machines
        .iter()
        .filter(|m| m.state == MachineState::Started)
        .filter(|m| m.metadata(META_CLUSTER) == Some(cluster))
        .filter(|m| m.metadata(META_ROLE) == Some("server"))
        .collect();
    out.sort_by_key(|m| {
        (
            m.metadata(META_NODE).unwrap_or(&m.name).to_string(),
            m.id.clone(),
        )
    });
    out
}

/// The Kubernetes Node names (`k3s kubectl get nodes`), asked of the first of `vias` that
/// answers.
pub async fn k8s_node_names(
    client: &Client,
    app: &str,
    vias: &[&Machine],
) -> Result<Vec<String>, String> {
    ask(client, app, vias, k3s::nodes_command(), k3s::parse_nodes)
        .await
        .map(|nodes| nodes.into_iter().map(|n| n.name).collect())
}

/// The Kubernetes Node names asked of the started servers of `cluster` among `cp_machines`
/// (its control plane's), for a command that removes nodes of `app` and finishes what an
/// interrupted run left; `None`, said in a warning, when no server answered.
pub async fn node_names_for_cleanup(
    client: &Client,
    cluster: &str,
    cp_app: &str,
    cp_machines: &[Machine],
    app: &str,
) -> Option<Vec<String>> {
    let vias = started_servers(cluster, cp_machines);
    match k8s_node_names(client, cp_app, &vias).await {
        Ok(names) => Some(names),
        Err(why) => {
            tracing::warn!(%app, "could not list the Kubernetes nodes ({why}); Nodes that an interrupted run left are not looked for in this run");
            None
        }
    }
}

/// Runs `command` on the first of `vias` whose exec call answers and reads its answer with
/// `parse`; an exec call that fails moves on to the next server, an answer is final.
pub async fn ask<T>(
    client: &Client,
    app: &str,
    vias: &[&Machine],
    command: Vec<String>,
    parse: impl Fn(&crate::fly::types::ExecResponse) -> Result<T, String>,
) -> Result<T, String> {
    let req = k3s::exec_request(command);
    let mut failures = Vec::new();
    for via in vias {
        match client.exec(app, &via.id, &req).await {
            Ok(out) => {
                return parse(&out).map_err(|why| format!("on {}: {why}", via.id));
            }
            Err(e) => failures.push(format!("{}: {}", via.id, crate::errors::chain(&e))),
        }
    }
    Err(match failures.is_empty() {
        true => format!("app {app} has no started server"),
        false => format!(
            "exec failed on every started server ({})",
            failures.join("; ")
        ),
    })
}

/// Reads the member query's answer: its JSON on success, else its first stderr line.
pub fn parse_members(out: &crate::fly::types::ExecResponse) -> MembersAnswer {
    if out.exit_code != 0 {
        let why = k3s::first_line(&out.stderr);
        return Err(if why.is_empty() {
            format!("node etcd members exited with {}", out.exit_code)
        } else {
            why
        });
    }
    serde_json::from_str(&out.stdout)
        .map_err(|e| format!("node etcd members printed no member report: {e}"))
}

/// Observes the cluster, asks a started server for the nodes and the members (the two calls
/// run concurrently), and merges the answers.
pub async fn gather(client: &Client, config: &Config) -> Result<Report, Error> {
    let apps = observe::cluster(client, config)
        .await
        .map_err(|source| Error::Observe {
            cluster: config.cluster_name.clone(),
            source,
        })?;
    let cp = config.cp_app();
    let vias = vias(&config.cluster_name, &apps, &cp);
    let (nodes, members) = tokio::join!(
        ask(client, &cp, &vias, k3s::nodes_command(), k3s::parse_nodes),
        ask(client, &cp, &vias, members_command(), parse_members),
    );
    Ok(merge(&config.cluster_name, &apps, &nodes, &members))
}

#[cfg(test)]
mod tests;
