//! The plan (ARCHITECTURE.md "How `fks-bootstrap -c` flows", step 3): from the resolved
//! [`Config`], the target (the control plane or one node group) and the observed [`State`] of
//! its Fly app, compute the desired nodes, diff them against what exists, and list the steps
//! that converge the two, with dependencies. The plan's `Display` is the `--dry-run` output.
//!
//! Pure: no tokio, no network, no clock, no randomness. The idempotency id of each machine
//! create (`fks_launch_id`) is the one value the plan cannot make: `run` adds a fresh UUID
//! just before sending (the Fly client does the same when it is missing).
//!
//! Must not: put a secret value into any request it builds (the join token reaches joining
//! nodes only as a file the platform writes from the app secret `K3S_TOKEN`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::{Config, MAX_NODE_GROUP_LEN};
use crate::fly::types::{
    CreateAppRequest, CreateMachineRequest, CreateVolumeRequest, Machine, MachineFile,
    MachineState, SecretString, Volume,
};

mod display;
mod request;

pub use request::{
    cluster_config_file, machine_request, volume_request, CLUSTER_CONFIG_PATH, DATA_MOUNT,
    ENV_BOOTSTRAP_INDEX, ENV_BOOTSTRAP_MACHINE_ID, ENV_CLUSTER, ENV_NODE, ENV_REGION, ENV_ROLE,
    ENV_ZONE, INIT_EXEC,
};

#[cfg(test)]
mod tests;

/// Machine metadata: the cluster a machine belongs to.
pub const META_CLUSTER: &str = "fks_cluster";
/// Machine metadata: the node name (`ctrl-0`, `worker-ng-a-1`).
pub const META_NODE: &str = "fks_node";
/// Machine metadata: `server` or `agent`.
pub const META_ROLE: &str = "fks_role";
/// Machine metadata set once the node's k3s is Ready (and, for a server, tainted), so a
/// re-plan skips it.
pub const META_READY: &str = "fks_ready";
/// The app secret that holds the k3s join token.
pub const TOKEN_SECRET: &str = "K3S_TOKEN";
/// The number of control-plane servers (embedded etcd wants an odd count; k3s.sh used 3).
pub const SERVERS: u32 = 3;
/// The flag that lets volumes share a zone when the region has fewer zones than nodes.
pub const ALLOW_SHARED_ZONES_FLAG: &str = "--allow-shared-zones";
/// Where the bootstrap server keeps the join token (k3s data dir `/data/k3s`).
pub const SERVER_TOKEN_PATH: &str = "/data/k3s/server/token";
/// The taint every server gets (reference/k3s-sh-behaviour.md, "Operator side").
pub const SERVER_TAINT: &str = "CriticalAddonsOnly=true:NoExecute";

/// Why no plan could be made. Nothing has been created when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node group name Fly or k3s would not accept.
    #[error("node group name `{group}` is invalid: use 1 to {MAX_NODE_GROUP_LEN} lowercase letters and digits")]
    InvalidGroup {
        /// The name as given.
        group: String,
    },
    /// `BOOTSTRAP_NODE_ID` is not one of the servers.
    #[error("BOOTSTRAP_NODE_ID={index} is out of range: use 0, 1 or 2")]
    InvalidBootstrapIndex {
        /// The index as given.
        index: u32,
    },
    /// The region has fewer zones than the nodes need and sharing was not allowed.
    #[error(
        "app {app} needs {nodes} volumes in distinct zones but region {region} has {zones} zone(s); \
         pass {ALLOW_SHARED_ZONES_FLAG} to let the extra volumes share a zone (a zone outage then takes down more than one node)"
    )]
    ZoneShortage {
        /// The app.
        app: String,
        /// The region.
        region: String,
        /// Volumes wanted.
        nodes: u32,
        /// Zones available.
        zones: usize,
    },
    /// Two live machines claim the same node.
    #[error("app {app} has {} machines for node {node} ({}); destroy the extra ones before going on", ids.len(), ids.join(", "))]
    DuplicateNode {
        /// The app.
        app: String,
        /// The node.
        node: String,
        /// The machine ids.
        ids: Vec<String>,
    },
    /// The node's machine is in a state the plan will not touch.
    #[error("machine {machine} of node {node} in app {app} is {state}; inspect it (fly machine status {machine}) and destroy it to let the next run recreate it")]
    MachineFailed {
        /// The app.
        app: String,
        /// The node.
        node: String,
        /// The machine id.
        machine: String,
        /// Its state.
        state: MachineState,
    },
    /// The bootstrap server is gone but other servers exist: making it again with
    /// `cluster-init` would start a second cluster.
    #[error(
        "app {app}: the bootstrap server {node} has no machine but {} do; creating it as the bootstrap server would start a second cluster; \
         set BOOTSTRAP_NODE_ID to one of the existing servers so {node} joins them",
        others.join(", ")
    )]
    BootstrapGone {
        /// The app.
        app: String,
        /// The bootstrap node.
        node: String,
        /// The servers that exist.
        others: Vec<String>,
    },
    /// A node group needs a running control plane to join.
    #[error("app {app} has no started server of this cluster; create the control plane first (fks-bootstrap -c)")]
    NoControlPlane {
        /// The control-plane app.
        app: String,
    },
    /// The ssh files of a node were not supplied.
    #[error(
        "no ssh files for node {node}; the caller must load them (ssh::ClusterKeys::node_files)"
    )]
    MissingNodeFiles {
        /// The node.
        node: String,
    },
}

/// What to converge: the control plane or one worker node group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `ctrl-0..2` in `<cluster>-cp`; `bootstrap_index` from `BOOTSTRAP_NODE_ID` (default 0).
    ControlPlane {
        /// Which `ctrl-N` bootstraps the cluster.
        bootstrap_index: u32,
    },
    /// `worker-ng-<group>-<i>` in `<cluster>-ng-<group>`.
    NodeGroup {
        /// The group name.
        group: String,
    },
}

impl Target {
    /// A node group target with its name validated (lowercase letters and digits, at most
    /// [`MAX_NODE_GROUP_LEN`]; the app name and the k3s node names are built from it).
    pub fn node_group(group: &str) -> Result<Target, Error> {
        let ok = !group.is_empty()
            && group.len() <= MAX_NODE_GROUP_LEN
            && group
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Target::NodeGroup {
                group: group.to_string(),
            })
        } else {
            Err(Error::InvalidGroup {
                group: group.to_string(),
            })
        }
    }

    /// The control-plane target, with `BOOTSTRAP_NODE_ID` checked.
    pub fn control_plane(bootstrap_index: u32) -> Result<Target, Error> {
        if bootstrap_index < SERVERS {
            Ok(Target::ControlPlane { bootstrap_index })
        } else {
            Err(Error::InvalidBootstrapIndex {
                index: bootstrap_index,
            })
        }
    }

    /// The Fly app of this target.
    pub fn app(&self, config: &Config) -> String {
        match self {
            Target::ControlPlane { .. } => config.cp_app(),
            Target::NodeGroup { group } => config.node_group_app(group),
        }
    }
}

/// What exists, from one list call per resource of the target's app.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// Whether the app exists.
    pub app_exists: bool,
    /// The app's volumes.
    pub volumes: Vec<Volume>,
    /// The app's machines (with their config and metadata).
    pub machines: Vec<Machine>,
    /// The names of the app's secrets (never values).
    pub secrets: BTreeSet<String>,
    /// For a node group: the machines of the control-plane app (the bootstrap server is found
    /// there by metadata). Empty for the control plane.
    pub control_plane: Vec<Machine>,
}

/// Plan settings that do not come from the config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// How many zones the region has, when known (Fly does not publish it, so the CLI takes
    /// `--zones` / `FKS_REGION_ZONES`). Unknown: every volume asks for a unique zone and a
    /// create that fails for lack of one is reported with [`ALLOW_SHARED_ZONES_FLAG`].
    pub zones: Option<usize>,
    /// Let volumes share a zone once the region's zones are used up.
    pub allow_shared_zones: bool,
    /// Plan the k3s steps (wait Ready, token, taint). Off with `--machines-only`, for a
    /// platform whose machines do not run the node image: the plan then ends at "machine
    /// started".
    pub k3s: bool,
    /// The files each node gets besides the cluster config: its ssh host key, the
    /// authorized_keys (`ssh::ClusterKeys::node_files`), by node name.
    pub node_files: BTreeMap<String, Vec<MachineFile>>,
    /// Extra environment for every machine made, e.g. `FKS_ALLOW_MISSING_KERNEL_OPTIONS=1`.
    /// Never a secret (env is visible in the machine config); the plan's own keys win.
    pub extra_env: BTreeMap<String, String>,
    /// The image every machine made gets as `config.image`: `<repo>@sha256:<digest>`, pinned
    /// by `image::ensure` (never a moving tag).
    pub image: String,
}

/// A step's index in [`Plan::steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepId(pub usize);

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.0)
    }
}

/// A value known now, or made by an earlier step of the same plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// Exists already (a volume or machine id).
    Known(String),
    /// Made by this step (a `CreateVolume` or `CreateMachine`).
    Step(StepId),
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Known(id) => f.write_str(id),
            Ref::Step(s) => write!(f, "<made by {s}>"),
        }
    }
}

/// A machine: its app and its id (known or to be made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRef {
    /// The app it lives in.
    pub app: String,
    /// Its id.
    pub id: Ref,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the app.
    CreateApp {
        /// The request.
        request: CreateAppRequest,
    },
    /// Create the node's volume.
    CreateVolume {
        /// The app.
        app: String,
        /// The request (`require_unique_zone` as planned).
        request: Box<CreateVolumeRequest>,
        /// Retry with `require_unique_zone=false` when no unique zone is left (sharing
        /// allowed: zones unknown, or a zone out of capacity).
        share_if_full: bool,
    },
    /// Create the node's machine. `run` fills in the volume id, the zone and (for a joining
    /// server) the bootstrap machine id from `volume`/`bootstrap` and adds `fks_launch_id`.
    CreateMachine {
        /// The app.
        app: String,
        /// The request, with the volume, zone and bootstrap id as far as they are known.
        request: Box<CreateMachineRequest>,
        /// The volume to mount.
        volume: Ref,
        /// The bootstrap server whose id goes into `FKS_BOOTSTRAP_MACHINE_ID`.
        bootstrap: Option<Ref>,
    },
    /// Start a stopped machine.
    StartMachine {
        /// The machine.
        machine: MachineRef,
    },
    /// Wait until the machine is `started`.
    WaitStarted {
        /// The machine.
        machine: MachineRef,
    },
    /// Wait until the node's k3s reports Ready, asking the bootstrap server's kubectl.
    WaitK3sReady {
        /// The node's machine (its k3s name is `<id>.vm.<app>.internal`).
        machine: MachineRef,
        /// Where to run kubectl: the bootstrap server.
        via: MachineRef,
    },
    /// Read the join token from the bootstrap server.
    ReadToken {
        /// The bootstrap server.
        from: MachineRef,
    },
    /// Store the nodes' private files (their ssh host keys) as app secrets in one call, so
    /// machine configs name a secret instead of carrying the key.
    SetFileSecrets {
        /// The app.
        app: String,
        /// Secret name → the file's base64 content (redacted in `Debug`).
        values: BTreeMap<String, SecretString>,
    },
    /// Store the token read by `token` as the app secret `K3S_TOKEN`.
    SetTokenSecret {
        /// The app that gets the secret.
        app: String,
        /// The `ReadToken` step.
        token: StepId,
    },
    /// Taint a server `CriticalAddonsOnly=true:NoExecute`.
    Taint {
        /// The server's machine.
        machine: MachineRef,
        /// Where to run kubectl.
        via: MachineRef,
    },
    /// Record in machine metadata (`fks_ready=true`) that the node is done.
    MarkReady {
        /// The machine.
        machine: MachineRef,
    },
}

impl Action {
    /// Whether the step changes something on Fly (what `--dry-run` counts).
    pub fn is_mutation(&self) -> bool {
        matches!(
            self,
            Action::CreateApp { .. }
                | Action::CreateVolume { .. }
                | Action::CreateMachine { .. }
                | Action::StartMachine { .. }
                | Action::SetTokenSecret { .. }
                | Action::SetFileSecrets { .. }
                | Action::MarkReady { .. }
        )
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Its index.
    pub id: StepId,
    /// The node it concerns, if any.
    pub node: Option<String>,
    /// What to do.
    pub action: Action,
    /// Steps that must be done first.
    pub depends_on: Vec<StepId>,
}

/// The k3s role of a planned node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server that starts the cluster.
    BootstrapServer,
    /// A server that joins the bootstrap server.
    Server,
    /// A worker.
    Agent,
}

impl Role {
    /// The `fks_role` metadata value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::BootstrapServer | Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

/// A desired node and what exists of it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its machine id, when it exists.
    pub machine: Option<String>,
    /// Its 6PN address as last seen, when it exists.
    pub private_ip: Option<String>,
    /// Its volume's zone, when the volume exists.
    pub zone: Option<String>,
}

/// The steps that converge a target, in a deterministic order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The cluster.
    pub cluster: String,
    /// The app.
    pub app: String,
    /// The desired nodes (bootstrap first for the control plane).
    pub nodes: Vec<NodePlan>,
    /// The steps.
    pub steps: Vec<Step>,
    /// Whether the k3s steps were planned.
    pub k3s: bool,
    /// The ids of the app's volumes when observed (the Fly client needs them to recognise
    /// the volume an ambiguous create made).
    pub observed_volumes: BTreeSet<String>,
}

impl Plan {
    /// How many steps change something on Fly.
    pub fn mutations(&self) -> usize {
        self.steps.iter().filter(|s| s.action.is_mutation()).count()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Builds steps with ids.
struct Builder {
    steps: Vec<Step>,
}

impl Builder {
    fn push(&mut self, node: Option<&str>, action: Action, depends_on: Vec<StepId>) -> StepId {
        let id = StepId(self.steps.len());
        let mut deps = depends_on;
        deps.sort();
        deps.dedup();
        self.steps.push(Step {
            id,
            node: node.map(str::to_string),
            action,
            depends_on: deps,
        });
        id
    }
}

/// What the plan knows about one node's machine after the diff.
struct NodeStatus {
    machine: MachineRef,
    /// The step after which the machine is started (None: started already).
    started: Option<StepId>,
    /// Whether the node is already marked ready.
    ready: bool,
}

/// A live machine of this cluster with this node name. More than one is an error.
fn node_machine<'a>(
    app: &str,
    cluster: &str,
    node: &str,
    machines: &'a [Machine],
) -> Result<Option<&'a Machine>, Error> {
    let mut found: Vec<&Machine> = machines
        .iter()
        .filter(|m| {
            m.metadata(META_CLUSTER) == Some(cluster) && m.metadata(META_NODE) == Some(node)
        })
        .filter(|m| !matches!(m.state, MachineState::Destroyed | MachineState::Destroying))
        .collect();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(Error::DuplicateNode {
            app: app.to_string(),
            node: node.to_string(),
            ids: found.iter().map(|m| m.id.clone()).collect(),
        }),
    }
}

/// The app secret that holds a node's private file (mode 0600): `FKS_<NODE>_<FILE NAME>` in
/// upper case with `_` for anything else, e.g. `FKS_CTRL_0_SSH_HOST_ED25519_KEY`.
pub fn file_secret_name(node: &str, guest_path: &str) -> String {
    let file = guest_path.rsplit('/').next().unwrap_or(guest_path);
    format!("FKS_{node}_{file}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Moves `files`' private ones (mode 0600 with inline content) into app secrets: each such
/// file names its secret instead, and `(name, base64 content)` goes to `secrets`.
fn private_files_to_secrets(
    node: &str,
    files: &[MachineFile],
    secrets: &mut BTreeMap<String, SecretString>,
) -> Vec<MachineFile> {
    files
        .iter()
        .map(|f| match (&f.raw_value, f.mode) {
            (Some(raw), Some(0o600)) => {
                let name = file_secret_name(node, &f.guest_path);
                secrets.insert(name.clone(), SecretString::new(raw.clone()));
                MachineFile {
                    raw_value: None,
                    secret_name: Some(name),
                    ..f.clone()
                }
            }
            _ => f.clone(),
        })
        .collect()
}

/// The names of the nodes `target` wants (`ctrl-0..2`, or `worker-ng-<group>-<i>`), for the
/// caller that loads their ssh files before planning.
pub fn node_names(config: &Config, target: &Target) -> Vec<String> {
    match target {
        Target::ControlPlane { .. } => (0..SERVERS).map(|i| format!("ctrl-{i}")).collect(),
        Target::NodeGroup { group } => (0..config.node_group_size)
            .map(|i| format!("worker-ng-{group}-{i}"))
            .collect(),
    }
}

/// Build the plan for `target` from `config` and the observed `state`.
pub fn plan(
    config: &Config,
    target: &Target,
    state: &State,
    options: &Options,
) -> Result<Plan, Error> {
    let app = target.app(config);
    let cluster = config.cluster_name.as_str();
    let (names, bootstrap_index): (Vec<(String, Role)>, Option<u32>) = match target {
        Target::ControlPlane { bootstrap_index } => {
            if *bootstrap_index >= SERVERS {
                return Err(Error::InvalidBootstrapIndex {
                    index: *bootstrap_index,
                });
            }
            let mut order: Vec<u32> = vec![*bootstrap_index];
            order.extend((0..SERVERS).filter(|i| i != bootstrap_index));
            let names = order
                .into_iter()
                .map(|i| {
                    let role = if i == *bootstrap_index {
                        Role::BootstrapServer
                    } else {
                        Role::Server
                    };
                    (format!("ctrl-{i}"), role)
                })
                .collect();
            (names, Some(*bootstrap_index))
        }
        Target::NodeGroup { group } => {
            Target::node_group(group)?;
            let names = node_names(config, target)
                .into_iter()
                .map(|name| (name, Role::Agent))
                .collect();
            (names, None)
        }
    };

    // The existing machine of every node, and the volumes it holds.
    let mut existing: Vec<Option<&Machine>> = Vec::new();
    for (name, _) in &names {
        let m = node_machine(&app, cluster, name, &state.machines)?;
        if let Some(m) = m {
            if m.state == MachineState::Failed {
                return Err(Error::MachineFailed {
                    app: app.clone(),
                    node: name.clone(),
                    machine: m.id.clone(),
                    state: m.state.clone(),
                });
            }
        }
        existing.push(m);
    }
    if bootstrap_index.is_some() && existing.first().is_some_and(Option::is_none) {
        let others: Vec<String> = names
            .iter()
            .zip(&existing)
            .filter(|(_, m)| m.is_some())
            .map(|((n, _), _)| n.clone())
            .collect();
        if !others.is_empty() {
            return Err(Error::BootstrapGone {
                app,
                node: names[0].0.clone(),
                others,
            });
        }
    }
    let live_volume = |v: &&Volume| v.name == config.volume_name && !v.state.is_being_destroyed();
    let attached_zone = |m: &Machine| -> Option<String> {
        state
            .volumes
            .iter()
            .find(|v| v.attached_machine_id.as_deref() == Some(m.id.as_str()))
            .map(|v| v.zone.clone())
    };
    // Zones held by the volumes of existing node machines.
    let mut used_zones: Vec<String> = existing
        .iter()
        .flatten()
        .filter_map(|m| attached_zone(m))
        .collect();
    // Unattached volumes this app can reuse, in a deterministic order.
    let mut spare: Vec<&Volume> = state
        .volumes
        .iter()
        .filter(live_volume)
        .filter(|v| v.attached_machine_id.as_deref().is_none_or(str::is_empty))
        .filter(|v| v.region == config.region)
        .collect();
    spare.sort_by(|a, b| a.id.cmp(&b.id));

    // Which volume each node without a machine gets: a spare one (preferring a zone no other
    // node uses) or a new one.
    let mut volume_of: Vec<Option<&Volume>> = vec![None; names.len()];
    for (i, m) in existing.iter().enumerate() {
        if m.is_some() || spare.is_empty() {
            continue;
        }
        let pick = spare
            .iter()
            .position(|v| !used_zones.contains(&v.zone))
            .unwrap_or(0);
        let v = spare.remove(pick);
        used_zones.push(v.zone.clone());
        volume_of[i] = Some(v);
    }
    let new_volumes = existing
        .iter()
        .zip(&volume_of)
        .filter(|(m, v)| m.is_none() && v.is_none())
        .count();
    let distinct_used: BTreeSet<&String> = used_zones.iter().collect();
    // How many new volumes may still ask for a zone of their own.
    let unique_left = match options.zones {
        Some(zones) => {
            let free = zones.saturating_sub(distinct_used.len());
            if new_volumes > free && !options.allow_shared_zones {
                return Err(Error::ZoneShortage {
                    app,
                    region: config.region.clone(),
                    nodes: names.len() as u32,
                    zones,
                });
            }
            free
        }
        None => usize::MAX,
    };

    // The bootstrap server (control plane: one of ours; node group: from the cp app).
    let cp_bootstrap: Option<&Machine> = match target {
        Target::ControlPlane { .. } => None,
        Target::NodeGroup { .. } => {
            // Any started server can read the token and run kubectl; the lowest node name
            // keeps the choice stable.
            let found = state
                .control_plane
                .iter()
                .filter(|m| m.metadata(META_CLUSTER) == Some(cluster))
                .filter(|m| m.metadata(META_ROLE) == Some(Role::Server.as_str()))
                .filter(|m| m.state == MachineState::Started)
                .min_by(|a, b| a.metadata(META_NODE).cmp(&b.metadata(META_NODE)));
            match found {
                Some(m) => Some(m),
                None => {
                    return Err(Error::NoControlPlane {
                        app: config.cp_app(),
                    })
                }
            }
        }
    };

    let mut b = Builder { steps: Vec::new() };
    let app_step = (!state.app_exists).then(|| {
        b.push(
            None,
            Action::CreateApp {
                request: CreateAppRequest::new(app.clone(), config.org_name.clone()),
            },
            vec![],
        )
    });
    let has_token = state.secrets.contains(TOKEN_SECRET);

    let mut nodes = Vec::new();
    let mut statuses: Vec<NodeStatus> = Vec::new();
    let mut last_volume_create: Option<StepId> = None;
    let mut unique_used = 0usize;
    // The bootstrap server's machine (known or to be made), for joining servers' env.
    let mut bootstrap_ref: Option<Ref> = None;
    // What joining nodes wait for: the bootstrap server started (and, with k3s, Ready with
    // its token stored as a secret).
    let mut join_after: Vec<StepId> = Vec::new();
    let mut token_ready = has_token;
    let mut bootstrap_ready: Option<StepId> = None;

    let via_cp: Option<MachineRef> = cp_bootstrap.map(|m| MachineRef {
        app: config.cp_app(),
        id: Ref::Known(m.id.clone()),
    });
    // For a node group: its token comes from the control plane before any agent is made.
    if matches!(target, Target::NodeGroup { .. }) && options.k3s && !has_token {
        let needs_create = existing.iter().any(Option::is_none);
        if needs_create {
            if let Some(via) = &via_cp {
                let read = b.push(None, Action::ReadToken { from: via.clone() }, vec![]);
                let mut deps = vec![read];
                deps.extend(app_step);
                let set = b.push(
                    None,
                    Action::SetTokenSecret {
                        app: app.clone(),
                        token: read,
                    },
                    deps,
                );
                join_after.push(set);
                token_ready = true;
            }
        }
    }

    // Private node files (ssh host keys) of the machines to make go into app secrets first,
    // one call for all; a secret that exists already holds the same never-regenerated key.
    let mut file_secrets: BTreeMap<String, SecretString> = BTreeMap::new();
    let mut node_files: Vec<Vec<MachineFile>> = Vec::new();
    for ((name, _), machine) in names.iter().zip(&existing) {
        let files = options
            .node_files
            .get(name)
            .ok_or_else(|| Error::MissingNodeFiles { node: name.clone() })?;
        node_files.push(if machine.is_none() {
            private_files_to_secrets(name, files, &mut file_secrets)
        } else {
            files.clone()
        });
    }
    file_secrets.retain(|name, _| !state.secrets.contains(name));
    let secrets_step = (!file_secrets.is_empty()).then(|| {
        b.push(
            None,
            Action::SetFileSecrets {
                app: app.clone(),
                values: file_secrets,
            },
            app_step.into_iter().collect(),
        )
    });

    for (i, ((name, role), machine)) in names.iter().zip(&existing).enumerate() {
        let files = &node_files[i];
        let status = match machine {
            Some(m) => {
                nodes.push(NodePlan {
                    name: name.clone(),
                    role: *role,
                    machine: Some(m.id.clone()),
                    private_ip: (!m.private_ip.is_empty()).then(|| m.private_ip.clone()),
                    zone: attached_zone(m),
                });
                let mref = MachineRef {
                    app: app.clone(),
                    id: Ref::Known(m.id.clone()),
                };
                let started = match &m.state {
                    MachineState::Started => None,
                    MachineState::Stopped | MachineState::Suspended => {
                        let s = b.push(
                            Some(name),
                            Action::StartMachine {
                                machine: mref.clone(),
                            },
                            vec![],
                        );
                        Some(b.push(
                            Some(name),
                            Action::WaitStarted {
                                machine: mref.clone(),
                            },
                            vec![s],
                        ))
                    }
                    _ => Some(b.push(
                        Some(name),
                        Action::WaitStarted {
                            machine: mref.clone(),
                        },
                        vec![],
                    )),
                };
                NodeStatus {
                    machine: mref,
                    started,
                    ready: m.metadata(META_READY) == Some("true"),
                }
            }
            None => {
                let (volume, zone, vol_step) = match volume_of[i] {
                    Some(v) => (Ref::Known(v.id.clone()), Some(v.zone.clone()), None),
                    None => {
                        let unique = unique_used < unique_left;
                        unique_used += 1;
                        let request = Box::new(volume_request(config, target, unique));
                        let mut deps: Vec<StepId> = app_step.into_iter().collect();
                        // Same-name volume creates in one app run one at a time, so the
                        // client can tell which volume an ambiguous create made.
                        deps.extend(last_volume_create);
                        let s = b.push(
                            Some(name),
                            Action::CreateVolume {
                                app: app.clone(),
                                request,
                                // Known zone counts say nothing of capacity: a zone can
                                // be full, and then only sharing is left.
                                share_if_full: options.allow_shared_zones,
                            },
                            deps,
                        );
                        last_volume_create = Some(s);
                        (Ref::Step(s), None, Some(s))
                    }
                };
                nodes.push(NodePlan {
                    name: name.clone(),
                    role: *role,
                    machine: None,
                    private_ip: None,
                    zone: zone.clone(),
                });
                // Joining servers name the bootstrap server; agents join the cp app's DNS name.
                let bootstrap = match role {
                    Role::BootstrapServer | Role::Agent => None,
                    Role::Server => bootstrap_ref.clone(),
                };
                let mut request = machine_request(
                    config,
                    target,
                    bootstrap_index,
                    name,
                    *role,
                    &volume,
                    zone.as_deref(),
                    bootstrap.as_ref(),
                    files,
                );
                request.config.image = options.image.clone();
                for (k, v) in &options.extra_env {
                    request
                        .config
                        .env
                        .entry(k.clone())
                        .or_insert_with(|| v.clone());
                }
                let mut deps: Vec<StepId> = app_step.into_iter().collect();
                deps.extend(vol_step);
                deps.extend(secrets_step);
                if *role != Role::BootstrapServer {
                    deps.extend(join_after.iter().copied());
                }
                let create = b.push(
                    Some(name),
                    Action::CreateMachine {
                        app: app.clone(),
                        request: Box::new(request),
                        volume,
                        bootstrap,
                    },
                    deps,
                );
                let mref = MachineRef {
                    app: app.clone(),
                    id: Ref::Step(create),
                };
                let wait = b.push(
                    Some(name),
                    Action::WaitStarted {
                        machine: mref.clone(),
                    },
                    vec![create],
                );
                NodeStatus {
                    machine: mref,
                    started: Some(wait),
                    ready: false,
                }
            }
        };
        if *role == Role::BootstrapServer {
            bootstrap_ref = Some(status.machine.id.clone());
            // Joining servers wait for the bootstrap server: started (no k3s steps) or Ready
            // with its token stored (k3s steps, below).
            join_after.extend(status.started);
            if options.k3s && !status.ready {
                let via = status.machine.clone();
                let deps: Vec<StepId> = status.started.into_iter().collect();
                let ready = b.push(
                    Some(name),
                    Action::WaitK3sReady {
                        machine: status.machine.clone(),
                        via: via.clone(),
                    },
                    deps,
                );
                bootstrap_ready = Some(ready);
                join_after.push(ready);
                let needs_join = existing.iter().any(Option::is_none);
                if !token_ready && needs_join {
                    let read = b.push(Some(name), Action::ReadToken { from: via }, vec![ready]);
                    let set = b.push(
                        None,
                        Action::SetTokenSecret {
                            app: app.clone(),
                            token: read,
                        },
                        vec![read],
                    );
                    join_after.push(set);
                    token_ready = true;
                }
            } else if options.k3s && !token_ready && existing.iter().any(Option::is_none) {
                let via = status.machine.clone();
                let read = b.push(
                    Some(name),
                    Action::ReadToken { from: via },
                    status.started.into_iter().collect(),
                );
                let set = b.push(
                    None,
                    Action::SetTokenSecret {
                        app: app.clone(),
                        token: read,
                    },
                    vec![read],
                );
                join_after.push(set);
                token_ready = true;
            }
        }
        statuses.push(status);
    }

    // k3s readiness, taint and the ready mark for every node not yet marked.
    if options.k3s {
        let via_of = |statuses: &[NodeStatus]| -> Option<MachineRef> {
            match target {
                Target::ControlPlane { .. } => statuses.first().map(|s| s.machine.clone()),
                Target::NodeGroup { .. } => via_cp.clone(),
            }
        };
        let via = via_of(&statuses);
        for (i, (name, role)) in names.iter().enumerate() {
            let status = &statuses[i];
            if status.ready {
                continue;
            }
            let Some(via) = via.clone() else { continue };
            let ready = if *role == Role::BootstrapServer {
                match bootstrap_ready {
                    Some(r) => r,
                    None => continue,
                }
            } else {
                let mut deps: Vec<StepId> = status.started.into_iter().collect();
                deps.extend(bootstrap_ready);
                b.push(
                    Some(name),
                    Action::WaitK3sReady {
                        machine: status.machine.clone(),
                        via: via.clone(),
                    },
                    deps,
                )
            };
            let mut last = ready;
            if *role != Role::Agent {
                last = b.push(
                    Some(name),
                    Action::Taint {
                        machine: status.machine.clone(),
                        via: via.clone(),
                    },
                    vec![ready],
                );
            }
            b.push(
                Some(name),
                Action::MarkReady {
                    machine: status.machine.clone(),
                },
                vec![last],
            );
        }
    }

    Ok(Plan {
        cluster: cluster.to_string(),
        app,
        nodes,
        steps: b.steps,
        k3s: options.k3s,
        observed_volumes: state.volumes.iter().map(|v| v.id.clone()).collect(),
    })
}
