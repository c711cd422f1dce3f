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

mod complete;
pub mod destroy;
mod display;
pub mod peer;
pub mod phases;
pub mod replace;
mod request;
pub mod scale_down;
pub mod skew;
pub mod taint;
pub mod update;

pub use complete::machine_request as complete_machine_request;
pub use phases::plan;

pub use request::{
    cluster_config_file, machine_request, volume_request, CLUSTER_CONFIG_PATH, DATA_MOUNT,
    ENV_BOOTSTRAP_INDEX, ENV_BOOTSTRAP_MACHINE_ID, ENV_CLUSTER, ENV_NODE, ENV_REGION, ENV_ROLE,
    ENV_ZONE, INIT_EXEC,
};

#[cfg(test)]
mod tests;

pub use crate::contract::meta::{
    CLUSTER as META_CLUSTER, CORDONED as META_CORDONED, NODE as META_NODE, READY as META_READY,
    ROLE as META_ROLE,
};
pub use crate::contract::secret::{file_secret_name, K3S_TOKEN as TOKEN_SECRET};
/// The number of control-plane servers (embedded etcd wants an odd count; k3s.sh used 3).
pub const SERVERS: u32 = 3;
/// The flag that lets volumes share a zone when the region has fewer zones than nodes.
pub const ALLOW_SHARED_ZONES_FLAG: &str = "--allow-shared-zones";
pub use crate::contract::path::SERVER_TOKEN as SERVER_TOKEN_PATH;
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
    /// A node group's app holds a server machine: scale-down and group removal never touch
    /// the control plane.
    #[error("refusing to remove nodes of app {app}: machine {machine} ({node}) is a server (fks_role=server); servers are never removed by a scale-down or a node group removal (nothing was changed)")]
    ServerInGroup {
        /// The node group's app.
        app: String,
        /// The machine id.
        machine: String,
        /// Its node name.
        node: String,
    },
    /// `server replace` names no server.
    #[error("{node} is not a server of the control plane: use ctrl-0, ctrl-1 or ctrl-2")]
    NotAServer {
        /// The name as given.
        node: String,
    },
    /// `server replace` found the replacement unsafe or impossible; nothing was changed.
    #[error("refusing to replace {node} in app {app}: {why} (nothing was changed)")]
    ReplaceRefused {
        /// The control-plane app.
        app: String,
        /// The server.
        node: String,
        /// Why, with what to do.
        why: String,
    },
    /// The desired k3s version is not a step the version skew policy allows from what a node
    /// runs; nothing was changed.
    #[error("refusing to move node {node} in app {app} from k3s {from} to {to}: {why} (nothing was changed)")]
    VersionSkew {
        /// The app.
        app: String,
        /// The node whose version forbids it.
        node: String,
        /// The version it runs (from its cluster config file).
        from: String,
        /// The desired `K3S_VERSION`.
        to: String,
        /// Why, with what to do.
        why: String,
    },
    /// `taint` found no server of this cluster in the control-plane app.
    #[error("app {app} has no server of cluster {cluster} (no machine with fks_cluster={cluster}): create the control plane with fks-bootstrap -c {dir}")]
    NoServer {
        /// The control-plane app.
        app: String,
        /// Cluster name.
        cluster: String,
        /// The cluster directory as the user gave it.
        dir: String,
    },
    /// `taint` found servers, but none is started, so there is no kubectl to run.
    #[error("app {app} has no started server to run kubectl on (servers: {states})")]
    NoStartedServer {
        /// The control-plane app.
        app: String,
        /// `node=state` of every server, comma separated.
        states: String,
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
    /// The Kubernetes Node names a started server listed (`k3s kubectl get nodes`), read by the
    /// commands that remove nodes so a re-run finds the Nodes an interrupted run left behind
    /// (their machines gone); `None` when not read.
    pub k8s_nodes: Option<Vec<String>>,
}

/// What exists in one app, as the observer listed it (destroyed machines and volumes on their
/// way out included: the plan decides what counts).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppState {
    /// The app name.
    pub app: String,
    /// Its machines (with config and metadata).
    pub machines: Vec<Machine>,
    /// Its volumes (empty when not read).
    pub volumes: Vec<Volume>,
    /// Its secrets' names (empty when not read, or when Fly has none for it).
    pub secrets: BTreeSet<String>,
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
    /// How many workers of a node group a config rollout updates at once (`--max-unavailable`,
    /// default [`update::WORKER_BATCH`]); 0 counts as 1. Servers are always one at a time.
    pub max_unavailable: usize,
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

/// A server machine a plan destroys, as [`Action::RemoveMembersOf`] knows its etcd members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoneServer {
    /// Its machine id (its members are named after `<id>.vm.<app>.internal`).
    pub id: String,
    /// Its 6PN address (an unnamed member's peer URL holds it); empty when unknown.
    pub private_ip: String,
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
    /// Bring an existing machine to `config` ([`update`]): acquire its lease, send the whole
    /// config with the lease's nonce, wait until the new version is `started`, release the
    /// lease (as flyctl does; reference fly-machines-api.md §2.3.2 leases, §8.6 update).
    UpdateMachine {
        /// The machine.
        machine: MachineRef,
        /// The whole new config.
        config: Box<crate::fly::types::MachineConfig>,
        /// What changes, for the output (no secret values).
        changes: Vec<update::Change>,
    },
    /// Read what the cluster last heard from a node before its machine is updated: its
    /// `bootID` and its Ready condition's `lastHeartbeatTime` (kubectl on `via`), so the wait
    /// after the update can tell a Ready posted by the new instance from one left over.
    ReadBoot {
        /// The node's machine.
        machine: MachineRef,
        /// Where to run kubectl.
        via: MachineRef,
    },
    /// Wait until the node's k3s is Ready again after an update: Ready, and a `bootID` other
    /// than the one `before` read, or a `lastHeartbeatTime` after it. A kubelet posts its
    /// status when it starts, so the new instance's first post passes; the old instance's
    /// last Ready (Kubernetes keeps a node Ready until heartbeats are missed for a grace
    /// period) does not.
    WaitK3sReadyAgain {
        /// The node's machine.
        machine: MachineRef,
        /// Where to run kubectl.
        via: MachineRef,
        /// The [`Action::ReadBoot`] step before the update.
        before: StepId,
        /// The Kubernetes version (`v1.34.1`, K3S_VERSION without its build tag) the node
        /// must report as `status.nodeInfo.kubeletVersion` (up to its `+` build tag) before
        /// it counts as updated: a rollout that changes K3S_VERSION ends when the nodes run it.
        kubelet: String,
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
    /// Taint a server `CriticalAddonsOnly=true:NoExecute` (`kubectl taint --overwrite`, so
    /// a node that has it already stays as it is).
    Taint {
        /// The server's machine.
        machine: MachineRef,
        /// Where to run kubectl.
        via: MachineRef,
        /// Other started servers to run kubectl on, in order, when the exec call on `via`
        /// (and on the ones before) fails: `fks-bootstrap taint` goes through whichever
        /// started server answers. A kubectl that ran and failed is the answer, not a reason
        /// to try another. Empty for `-c` and `server replace` (their `via` is the server
        /// they just waited for).
        fallback: Vec<MachineRef>,
    },
    /// Record in machine metadata (`fks_ready=true`) that the node is done.
    MarkReady {
        /// The machine.
        machine: MachineRef,
    },
    /// Set (`Some`) or delete (`None`) one metadata key of a machine through the metadata
    /// endpoint, which makes no new machine version (reference fly-machines-api.md, "Metadata
    /// writes through the metadata endpoints do not create a new Machine version").
    SetMetadata {
        /// The machine.
        machine: MachineRef,
        /// The key.
        key: String,
        /// The value; `None` deletes the key.
        value: Option<String>,
    },
    /// Mark a node schedulable again (`kubectl uncordon`), after its update.
    Uncordon {
        /// The node's machine.
        machine: MachineRef,
        /// Where to run kubectl: a started server.
        via: MachineRef,
    },
    /// Mark a node unschedulable (`kubectl cordon`), before its node group shrinks or before
    /// its update.
    Cordon {
        /// The node's machine (its k3s name is `<id>.vm.<app>.internal`).
        machine: MachineRef,
        /// Where to run kubectl: a started server.
        via: MachineRef,
    },
    /// Evict the node's pods (`kubectl drain --ignore-daemonsets --delete-emptydir-data`:
    /// evictions go through the Eviction API, which honours PodDisruptionBudgets).
    Drain {
        /// The node's machine.
        machine: MachineRef,
        /// Where to run kubectl.
        via: MachineRef,
    },
    /// Delete the node's Kubernetes Node object (`kubectl delete node`), after its machine.
    DeleteNode {
        /// The node's machine.
        machine: MachineRef,
        /// Where to run kubectl.
        via: MachineRef,
    },
    /// Destroy a machine (forced) and wait until it is `destroyed`.
    DestroyMachine {
        /// The machine.
        machine: MachineRef,
    },
    /// Delete a volume (its machine is gone).
    DeleteVolume {
        /// The app.
        app: String,
        /// The volume id.
        volume: String,
        /// Its name (for the output).
        name: String,
        /// Its zone (for the output).
        zone: String,
    },
    /// Remove a member from the cluster's embedded etcd through a server's own etcd API
    /// (`fks-bootstrap node etcd remove ID` run through exec on `via`); etcd's temporary
    /// refusal ("unhealthy cluster") is asked again until the run's deadline.
    RemoveMember {
        /// The member's hex id.
        id: String,
        /// Its name (for the output; empty when it never started).
        name: String,
        /// The server whose etcd is asked (a healthy voter).
        via: MachineRef,
    },
    /// Remove every etcd member that belongs to one of `machines` (destroyed by earlier
    /// steps), as `via`'s etcd lists them when the step runs: by k3s node name
    /// (`<id>.vm.<app>.internal`), or, for a member added that never started, by its peer
    /// address. A server that was still booting when its member list was read can add itself
    /// between that read and its destroy (a run killed right after creating it, replaced
    /// again); a member left that way would block every later join (etcd allows one learner,
    /// and a fourth voter with one dead needs three healthy).
    RemoveMembersOf {
        /// The app of the machines.
        app: String,
        /// The destroyed machines.
        machines: Vec<GoneServer>,
        /// The server whose etcd is asked (a healthy voter).
        via: MachineRef,
    },
    /// Wait until the node's etcd member is a healthy voting member, asking `via`'s etcd
    /// (`fks-bootstrap node etcd members --json` through exec).
    WaitMemberHealthy {
        /// The node's machine (its member is named after `<id>.vm.<app>.internal`).
        machine: MachineRef,
        /// Where to ask.
        via: MachineRef,
    },
    /// Delete an app secret.
    DeleteSecret {
        /// The app.
        app: String,
        /// The secret's name.
        name: String,
    },
    /// Delete an app (not forced: a machine that appeared since the observation makes it fail).
    DeleteApp {
        /// The app.
        app: String,
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
                | Action::UpdateMachine { .. }
                | Action::SetTokenSecret { .. }
                | Action::SetFileSecrets { .. }
                | Action::MarkReady { .. }
                | Action::SetMetadata { .. }
                | Action::DestroyMachine { .. }
                | Action::DeleteVolume { .. }
                | Action::DeleteSecret { .. }
                | Action::DeleteApp { .. }
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
    /// After a failed step, still run every step that does not depend on it (a destroy
    /// attempts every removal of a phase); otherwise the first failure cancels the run.
    pub keep_going: bool,
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

/// Whether `m` is a machine fks-bootstrap made for `cluster` that is still there: it carries
/// `fks_cluster=<cluster>` and is not destroyed. A machine without that metadata was not made
/// for this cluster and is never touched (`taint`, `kubeconfig`, `proxy`).
pub fn owned_by(m: &Machine, cluster: &str) -> bool {
    m.state != MachineState::Destroyed && m.metadata(META_CLUSTER) == Some(cluster)
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
