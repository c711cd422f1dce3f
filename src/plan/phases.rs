//! The create/converge plan in named phases (ARCHITECTURE.md "How `fks-bootstrap -c` flows",
//! step 3). Each phase is a function of the config, the target and the observed state (plus
//! what earlier phases decided) that either refuses with an [`Error`] or emits complete typed
//! steps:
//!
//! 1. [`desired_nodes`]: the nodes the target wants and their roles (bootstrap first);
//! 2. [`match_machines`]: the live machine of each node (duplicates, failed machines and a
//!    lost bootstrap server refused);
//! 3. [`assign_volumes`]: for each node without a machine, a spare volume to reuse or a new
//!    one, and how many new volumes may still ask for a zone of their own;
//! 4. [`join_point`]: for a node group, the started server that hands out the token and runs
//!    kubectl;
//! 5. then, building steps: the app, the node group's token, the nodes' private files as app
//!    secrets, each node's volume/machine/start steps, the bootstrap server's readiness and
//!    token, and the k3s readiness, taint and ready mark of every node not yet marked;
//! 6. existing machines whose config drifted from what a create would send now are updated
//!    ([`super::update`]): servers one at a time, workers in batches;
//! 7. for a node group, the scale-down ([`super::scale_down`]): the live nodes of index
//!    `NODE_GROUP_SIZE` or more are cordoned, drained, destroyed with their volumes.
//!
//! Pure: no tokio, no network, no clock, no randomness.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    machine_request, node_names, private_files_to_secrets, volume_request, Action, Builder, Error,
    MachineRef, NodePlan, NodeStatus, Options, Plan, Ref, Role, State, StepId, Target,
    META_CLUSTER, META_NODE, META_READY, META_ROLE, SERVERS, TOKEN_SECRET,
};
use crate::config::Config;
use crate::fly::types::{
    CreateAppRequest, Machine, MachineFile, MachineState, SecretString, Volume,
};

/// A node the target wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Its name (`ctrl-0`, `worker-ng-a-1`).
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// Phase 1: the nodes `target` wants, the bootstrap server first for the control plane, and
/// the bootstrap index (control plane only).
pub fn desired_nodes(
    config: &Config,
    target: &Target,
) -> Result<(Vec<Desired>, Option<u32>), Error> {
    match target {
        Target::ControlPlane { bootstrap_index } => {
            if *bootstrap_index >= SERVERS {
                return Err(Error::InvalidBootstrapIndex {
                    index: *bootstrap_index,
                });
            }
            let mut order: Vec<u32> = vec![*bootstrap_index];
            order.extend((0..SERVERS).filter(|i| i != bootstrap_index));
            let nodes = order
                .into_iter()
                .map(|i| Desired {
                    name: format!("ctrl-{i}"),
                    role: if i == *bootstrap_index {
                        Role::BootstrapServer
                    } else {
                        Role::Server
                    },
                })
                .collect();
            Ok((nodes, Some(*bootstrap_index)))
        }
        Target::NodeGroup { group } => {
            Target::node_group(group)?;
            let nodes = node_names(config, target)
                .into_iter()
                .map(|name| Desired {
                    name,
                    role: Role::Agent,
                })
                .collect();
            Ok((nodes, None))
        }
    }
}

/// Phase 2: the live machine of each desired node (in order). Refuses two machines for one
/// node, a failed machine, and a control plane whose bootstrap server is gone while others
/// exist (re-creating it with `cluster-init` would start a second cluster).
pub fn match_machines<'a>(
    app: &str,
    cluster: &str,
    desired: &[Desired],
    is_control_plane: bool,
    state: &'a State,
) -> Result<Vec<Option<&'a Machine>>, Error> {
    let mut existing: Vec<Option<&Machine>> = Vec::new();
    for d in desired {
        let m = super::node_machine(app, cluster, &d.name, &state.machines)?;
        if let Some(m) = m {
            if m.state == MachineState::Failed {
                return Err(Error::MachineFailed {
                    app: app.to_string(),
                    node: d.name.clone(),
                    machine: m.id.clone(),
                    state: m.state.clone(),
                });
            }
        }
        existing.push(m);
    }
    if is_control_plane && existing.first().is_some_and(Option::is_none) {
        let others: Vec<String> = desired
            .iter()
            .zip(&existing)
            .filter(|(_, m)| m.is_some())
            .map(|(d, _)| d.name.clone())
            .collect();
        if !others.is_empty() {
            return Err(Error::BootstrapGone {
                app: app.to_string(),
                node: desired[0].name.clone(),
                others,
            });
        }
    }
    Ok(existing)
}

/// What phase 3 decided about volumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Volumes<'a> {
    /// For each desired node without a machine, the spare volume it reuses (None: a new one).
    pub reuse: Vec<Option<&'a Volume>>,
    /// How many new volumes may still ask for a zone of their own.
    pub unique_left: usize,
}

/// The zone of the volume attached to `m`, if any.
fn attached_zone(state: &State, m: &Machine) -> Option<String> {
    state
        .volumes
        .iter()
        .find(|v| v.attached_machine_id.as_deref() == Some(m.id.as_str()))
        .map(|v| v.zone.clone())
}

/// Phase 3: which volume each node without a machine gets: a spare one of this app (unattached,
/// live, in the region; preferring a zone no other node uses) or a new one; refuses when the
/// region's known zones cannot hold the new volumes apart and sharing was not allowed.
pub fn assign_volumes<'a>(
    config: &Config,
    app: &str,
    existing: &[Option<&Machine>],
    state: &'a State,
    options: &Options,
) -> Result<Volumes<'a>, Error> {
    // Zones held by the volumes of existing node machines.
    let mut used_zones: Vec<String> = existing
        .iter()
        .flatten()
        .filter_map(|m| attached_zone(state, m))
        .collect();
    // Unattached volumes this app can reuse, in a deterministic order.
    let mut spare: Vec<&Volume> = state
        .volumes
        .iter()
        .filter(|v| v.name == config.volume_name && !v.state.is_being_destroyed())
        .filter(|v| v.attached_machine_id.as_deref().is_none_or(str::is_empty))
        .filter(|v| v.region == config.region)
        .collect();
    spare.sort_by(|a, b| a.id.cmp(&b.id));
    let mut reuse: Vec<Option<&Volume>> = vec![None; existing.len()];
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
        reuse[i] = Some(v);
    }
    let new_volumes = existing
        .iter()
        .zip(&reuse)
        .filter(|(m, v)| m.is_none() && v.is_none())
        .count();
    let distinct_used: BTreeSet<&String> = used_zones.iter().collect();
    let unique_left = match options.zones {
        Some(zones) => {
            let free = zones.saturating_sub(distinct_used.len());
            if new_volumes > free && !options.allow_shared_zones {
                return Err(Error::ZoneShortage {
                    app: app.to_string(),
                    region: config.region.clone(),
                    nodes: existing.len() as u32,
                    zones,
                });
            }
            free
        }
        None => usize::MAX,
    };
    Ok(Volumes { reuse, unique_left })
}

/// Phase 4: for a node group, the started server of this cluster it joins through (reads the
/// token, runs kubectl); the lowest node name keeps the choice stable. None for the control
/// plane.
pub fn join_point<'a>(
    config: &Config,
    target: &Target,
    state: &'a State,
) -> Result<Option<&'a Machine>, Error> {
    match target {
        Target::ControlPlane { .. } => Ok(None),
        Target::NodeGroup { .. } => state
            .control_plane
            .iter()
            .filter(|m| m.metadata(META_CLUSTER) == Some(config.cluster_name.as_str()))
            .filter(|m| m.metadata(META_ROLE) == Some(Role::Server.as_str()))
            .filter(|m| m.state == MachineState::Started)
            .min_by(|a, b| a.metadata(META_NODE).cmp(&b.metadata(META_NODE)))
            .map(Some)
            .ok_or_else(|| Error::NoControlPlane {
                app: config.cp_app(),
            }),
    }
}

/// The step-building phases share what earlier ones made.
struct Steps<'a> {
    config: &'a Config,
    target: &'a Target,
    options: &'a Options,
    app: String,
    b: Builder,
    /// The `CreateApp` step, when the app is made.
    app_step: Option<StepId>,
    /// The file-secrets step, when one is needed.
    secrets_step: Option<StepId>,
    /// What joining nodes wait for: the bootstrap server started (and, with k3s, Ready with
    /// its token stored as a secret).
    join_after: Vec<StepId>,
    /// Whether the join token is (or will be) stored as the app secret.
    token_ready: bool,
    /// The bootstrap server's machine (known or to be made), for joining servers' env.
    bootstrap_ref: Option<Ref>,
    /// The bootstrap server's k3s Ready step, when planned.
    bootstrap_ready: Option<StepId>,
    /// Same-name volume creates in one app run one at a time (see [`Steps::node`]).
    last_volume_create: Option<StepId>,
    /// New volumes that asked for a zone of their own so far.
    unique_used: usize,
    nodes: Vec<NodePlan>,
    statuses: Vec<NodeStatus>,
    /// Existing machines whose config drifted from what a create would send now.
    drifted: Vec<super::update::Drifted>,
    /// Existing machines a killed update left cordoned (marked `fks_cordoned`) that no
    /// longer drift.
    left_cordoned: Vec<super::update::LeftCordoned>,
}

impl Steps<'_> {
    /// Phase 5: the app, when it does not exist.
    fn app(&mut self, state: &State) {
        self.app_step = (!state.app_exists).then(|| {
            self.b.push(
                None,
                Action::CreateApp {
                    request: CreateAppRequest::new(self.app.clone(), self.config.org_name.clone()),
                },
                vec![],
            )
        });
    }

    /// Reads the token on `from` and stores it as the app secret; joining nodes wait for it.
    fn token(
        &mut self,
        node: Option<&str>,
        from: MachineRef,
        read_deps: Vec<StepId>,
        set_deps: Vec<StepId>,
    ) {
        let read = self.b.push(node, Action::ReadToken { from }, read_deps);
        let mut deps = vec![read];
        deps.extend(set_deps);
        let set = self.b.push(
            None,
            Action::SetTokenSecret {
                app: self.app.clone(),
                token: read,
            },
            deps,
        );
        self.join_after.push(set);
        self.token_ready = true;
    }

    /// Phase 6: a node group's token comes from the control plane before any agent is made.
    fn group_token(&mut self, via_cp: Option<&MachineRef>, needs_join: bool) {
        if matches!(self.target, Target::NodeGroup { .. })
            && self.options.k3s
            && !self.token_ready
            && needs_join
        {
            if let Some(via) = via_cp {
                let set_deps = self.app_step.into_iter().collect();
                self.token(None, via.clone(), vec![], set_deps);
            }
        }
    }

    /// Phase 7: the private node files (ssh host keys) of the machines to make go into app
    /// secrets first, one call for all; a secret that exists already holds the same
    /// never-regenerated key. Returns each node's files as its machine gets them.
    fn file_secrets(
        &mut self,
        desired: &[Desired],
        existing: &[Option<&Machine>],
        state: &State,
    ) -> Result<Vec<Vec<MachineFile>>, Error> {
        let mut file_secrets: BTreeMap<String, SecretString> = BTreeMap::new();
        let mut node_files: Vec<Vec<MachineFile>> = Vec::new();
        for (d, machine) in desired.iter().zip(existing) {
            let files =
                self.options
                    .node_files
                    .get(&d.name)
                    .ok_or_else(|| Error::MissingNodeFiles {
                        node: d.name.clone(),
                    })?;
            node_files.push(if machine.is_none() {
                private_files_to_secrets(&d.name, files, &mut file_secrets)
            } else {
                files.clone()
            });
        }
        file_secrets.retain(|name, _| !state.secrets.contains(name));
        self.secrets_step = (!file_secrets.is_empty()).then(|| {
            self.b.push(
                None,
                Action::SetFileSecrets {
                    app: self.app.clone(),
                    values: file_secrets,
                },
                self.app_step.into_iter().collect(),
            )
        });
        Ok(node_files)
    }

    /// Phase 8, one node: an existing machine is started if stopped and waited for; a missing
    /// one gets its volume (reused or new) and its machine, then is waited for.
    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        state: &State,
        d: &Desired,
        machine: Option<&Machine>,
        reuse: Option<&Volume>,
        unique_left: usize,
        bootstrap_index: Option<u32>,
        files: &[MachineFile],
    ) -> NodeStatus {
        let name = d.name.as_str();
        let app = self.app.clone();
        if let Some(m) = machine {
            self.nodes.push(NodePlan {
                name: name.to_string(),
                role: d.role,
                machine: Some(m.id.clone()),
                private_ip: (!m.private_ip.is_empty()).then(|| m.private_ip.clone()),
                zone: attached_zone(state, m),
            });
            let mref = MachineRef {
                app,
                id: Ref::Known(m.id.clone()),
            };
            let started = match &m.state {
                MachineState::Started => None,
                MachineState::Stopped | MachineState::Suspended => {
                    let s = self.b.push(
                        Some(name),
                        Action::StartMachine {
                            machine: mref.clone(),
                        },
                        vec![],
                    );
                    Some(self.b.push(
                        Some(name),
                        Action::WaitStarted {
                            machine: mref.clone(),
                        },
                        vec![s],
                    ))
                }
                _ => Some(self.b.push(
                    Some(name),
                    Action::WaitStarted {
                        machine: mref.clone(),
                    },
                    vec![],
                )),
            };
            self.drift(state, d, m, &mref, started, bootstrap_index, files);
            return NodeStatus {
                machine: mref,
                started,
                ready: m.metadata(META_READY) == Some("true"),
            };
        }
        let (volume, zone, vol_step) = match reuse {
            Some(v) => (Ref::Known(v.id.clone()), Some(v.zone.clone()), None),
            None => {
                let unique = self.unique_used < unique_left;
                self.unique_used += 1;
                let request = Box::new(volume_request(self.config, self.target, unique));
                let mut deps: Vec<StepId> = self.app_step.into_iter().collect();
                // Same-name volume creates in one app run one at a time, so the client can
                // tell which volume an ambiguous create made.
                deps.extend(self.last_volume_create);
                let s = self.b.push(
                    Some(name),
                    Action::CreateVolume {
                        app: app.clone(),
                        request,
                        // Known zone counts say nothing of capacity: a zone can be full, and
                        // then only sharing is left.
                        share_if_full: self.options.allow_shared_zones,
                    },
                    deps,
                );
                self.last_volume_create = Some(s);
                (Ref::Step(s), None, Some(s))
            }
        };
        self.nodes.push(NodePlan {
            name: name.to_string(),
            role: d.role,
            machine: None,
            private_ip: None,
            zone: zone.clone(),
        });
        // Joining servers name the bootstrap server; agents join the cp app's DNS name.
        let bootstrap = match d.role {
            Role::BootstrapServer | Role::Agent => None,
            Role::Server => self.bootstrap_ref.clone(),
        };
        let mut request = machine_request(
            self.config,
            self.target,
            bootstrap_index,
            name,
            d.role,
            &volume,
            zone.as_deref(),
            bootstrap.as_ref(),
            files,
        );
        request.config.image = self.options.image.clone();
        for (k, v) in &self.options.extra_env {
            request
                .config
                .env
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        let mut deps: Vec<StepId> = self.app_step.into_iter().collect();
        deps.extend(vol_step);
        deps.extend(self.secrets_step);
        if d.role != Role::BootstrapServer {
            deps.extend(self.join_after.iter().copied());
        }
        let create = self.b.push(
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
            app,
            id: Ref::Step(create),
        };
        let wait = self.b.push(
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

    /// Phase 8, an existing machine: the config a create would send now (its volume, zone and
    /// bootstrap id as they are), compared with the observed one; a difference is kept for
    /// the rollout ([`super::update::rollout`]).
    #[allow(clippy::too_many_arguments)]
    fn drift(
        &mut self,
        state: &State,
        d: &Desired,
        m: &Machine,
        mref: &MachineRef,
        started: Option<StepId>,
        bootstrap_index: Option<u32>,
        files: &[MachineFile],
    ) {
        let Some(observed) = m.config.as_ref() else {
            // Host unreachable: only `incomplete_config` is known; never rewrite from it.
            return;
        };
        let volume = observed
            .mounts
            .first()
            .map(|mt| Ref::Known(mt.volume.clone()))
            .unwrap_or(Ref::Known(String::new()));
        // Private files live in app secrets once the machine exists (see `file_secrets`).
        let mut ignored = BTreeMap::new();
        let files = private_files_to_secrets(&d.name, files, &mut ignored);
        let mut planned = machine_request(
            self.config,
            self.target,
            bootstrap_index,
            &d.name,
            d.role,
            &volume,
            attached_zone(state, m).as_deref(),
            None,
            &files,
        )
        .config;
        planned.image = self.options.image.clone();
        for (k, v) in &self.options.extra_env {
            planned.env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let config = super::update::desired_config(observed, &planned);
        let changes = super::update::changes(observed, &config);
        if changes.is_empty() && observed.metadata.contains_key(super::META_CORDONED) {
            self.left_cordoned.push(super::update::LeftCordoned {
                name: d.name.clone(),
                machine: mref.clone(),
            });
        }
        if !changes.is_empty() {
            self.drifted.push(super::update::Drifted {
                name: d.name.clone(),
                role: d.role,
                machine: mref.clone(),
                config,
                changes,
                started,
            });
        }
    }

    /// Phase 8, after the bootstrap server's machine steps: joining servers wait for it
    /// started (no k3s steps) or Ready with its token stored (k3s steps).
    fn bootstrap(&mut self, name: &str, status: &NodeStatus, needs_join: bool) {
        self.bootstrap_ref = Some(status.machine.id.clone());
        self.join_after.extend(status.started);
        if !self.options.k3s {
            return;
        }
        let via = status.machine.clone();
        if !status.ready {
            let ready = self.b.push(
                Some(name),
                Action::WaitK3sReady {
                    machine: status.machine.clone(),
                    via: via.clone(),
                },
                status.started.into_iter().collect(),
            );
            self.bootstrap_ready = Some(ready);
            self.join_after.push(ready);
            if !self.token_ready && needs_join {
                self.token(Some(name), via, vec![ready], vec![]);
            }
        } else if !self.token_ready && needs_join {
            self.token(
                Some(name),
                via,
                status.started.into_iter().collect(),
                vec![],
            );
        }
    }

    /// Phase 9: k3s readiness, taint (servers) and the ready mark for every node not yet
    /// marked, through `via` (the bootstrap server, or the node group's join point).
    fn k3s(&mut self, desired: &[Desired], via: Option<MachineRef>) {
        let Some(via) = via else { return };
        let statuses = std::mem::take(&mut self.statuses);
        for (d, status) in desired.iter().zip(&statuses) {
            if status.ready {
                continue;
            }
            let name = d.name.as_str();
            let ready = if d.role == Role::BootstrapServer {
                match self.bootstrap_ready {
                    Some(r) => r,
                    None => continue,
                }
            } else {
                let mut deps: Vec<StepId> = status.started.into_iter().collect();
                deps.extend(self.bootstrap_ready);
                self.b.push(
                    Some(name),
                    Action::WaitK3sReady {
                        machine: status.machine.clone(),
                        via: via.clone(),
                    },
                    deps,
                )
            };
            let mut last = ready;
            if d.role != Role::Agent {
                last = self.b.push(
                    Some(name),
                    Action::Taint {
                        machine: status.machine.clone(),
                        via: via.clone(),
                        fallback: Vec::new(),
                    },
                    vec![ready],
                );
            }
            self.b.push(
                Some(name),
                Action::MarkReady {
                    machine: status.machine.clone(),
                },
                vec![last],
            );
        }
        self.statuses = statuses;
    }
}

/// Build the plan for `target` from `config` and the observed `state`: the phases above, in
/// order.
pub fn plan(
    config: &Config,
    target: &Target,
    state: &State,
    options: &Options,
) -> Result<Plan, Error> {
    let app = target.app(config);
    let cluster = config.cluster_name.as_str();
    let (desired, bootstrap_index) = desired_nodes(config, target)?;
    let existing = match_machines(&app, cluster, &desired, bootstrap_index.is_some(), state)?;
    let running: Vec<(&str, &Machine)> = desired
        .iter()
        .zip(&existing)
        .filter_map(|(d, m)| m.map(|m| (d.name.as_str(), m)))
        .collect();
    super::skew::check(&app, &config.k3s_version, &running, &state.control_plane)?;
    let volumes = assign_volumes(config, &app, &existing, state, options)?;
    let via_cp: Option<MachineRef> = join_point(config, target, state)?.map(|m| MachineRef {
        app: config.cp_app(),
        id: Ref::Known(m.id.clone()),
    });
    let needs_join = existing.iter().any(Option::is_none);

    let mut s = Steps {
        config,
        target,
        options,
        app: app.clone(),
        b: Builder { steps: Vec::new() },
        app_step: None,
        secrets_step: None,
        join_after: Vec::new(),
        token_ready: state.secrets.contains(TOKEN_SECRET),
        bootstrap_ref: None,
        bootstrap_ready: None,
        last_volume_create: None,
        unique_used: 0,
        nodes: Vec::new(),
        statuses: Vec::new(),
        drifted: Vec::new(),
        left_cordoned: Vec::new(),
    };
    s.app(state);
    s.group_token(via_cp.as_ref(), needs_join);
    let node_files = s.file_secrets(&desired, &existing, state)?;
    for (i, d) in desired.iter().enumerate() {
        let status = s.node(
            state,
            d,
            existing[i],
            volumes.reuse[i],
            volumes.unique_left,
            bootstrap_index,
            &node_files[i],
        );
        if d.role == Role::BootstrapServer {
            s.bootstrap(&d.name, &status, needs_join);
        }
        s.statuses.push(status);
    }
    if options.k3s {
        let via = match target {
            Target::ControlPlane { .. } => s.statuses.first().map(|st| st.machine.clone()),
            Target::NodeGroup { .. } => via_cp.clone(),
        };
        s.k3s(&desired, via);
    }
    // Phase 10: existing machines whose config drifted, servers one at a time, workers in
    // batches, after everything above.
    let servers: Vec<MachineRef> = match target {
        Target::ControlPlane { .. } => s.statuses.iter().map(|st| st.machine.clone()).collect(),
        Target::NodeGroup { .. } => Vec::new(),
    };
    let drifted = std::mem::take(&mut s.drifted);
    let left = std::mem::take(&mut s.left_cordoned);
    let kubelet = super::skew::kubernetes_version(&config.k3s_version);
    let k3s = options.k3s.then_some(kubelet);
    super::update::rollout(
        &mut s.b,
        drifted,
        left,
        &servers,
        via_cp.as_ref(),
        k3s,
        options.max_unavailable,
    );
    // Phase 11: a lowered NODE_GROUP_SIZE removes the group's highest-index nodes; what an
    // interrupted removal left (Nodes, volumes) goes too.
    if let Target::NodeGroup { group } = target {
        let via = if options.k3s { via_cp.clone() } else { None };
        let reused: std::collections::BTreeSet<&str> = volumes
            .reuse
            .iter()
            .flatten()
            .map(|v| v.id.as_str())
            .collect();
        super::scale_down::scale_down(
            &mut s.b,
            cluster,
            group,
            config.node_group_size,
            &app,
            &state.machines,
            &state.volumes,
            &via,
            super::scale_down::Leftovers {
                k8s_nodes: state.k8s_nodes.as_deref(),
                reused: &reused,
            },
        )?;
    }

    Ok(Plan {
        cluster: cluster.to_string(),
        app,
        nodes: s.nodes,
        steps: s.b.steps,
        k3s: options.k3s,
        observed_volumes: state.volumes.iter().map(|v| v.id.clone()).collect(),
        keep_going: false,
    })
}
