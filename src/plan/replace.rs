//! `server replace ctrl-N` (issue 11 item 4): the plan that swaps one control-plane server for a
//! fresh machine and volume, whatever is left of the old one (a running machine, a stopped or
//! failed one, a volume without its machine, or nothing at all, its zone included).
//!
//! From the observed control-plane app and the etcd member list (with each member's health)
//! read through a started survivor before anything is touched, it:
//! 1. finds ctrl-N's etcd members: the member of its live machine (by k3s node name,
//!    `<machine id>.vm.<app>.internal`), and every member that belongs to no live server
//!    machine (a server whose machine is gone; an unnamed member, one added that never
//!    started, whose peer address is no live server's);
//! 2. refuses when the voting members left would not keep a quorum (a majority of them
//!    healthy; [`Quorum`]), or when no survivor has a healthy voting member to act through;
//! 3. plans, as typed steps: destroy ctrl-N's machine; remove its members through the
//!    survivor (after the destroy, so a running old server cannot come back as a member); delete
//!    the old Kubernetes Node objects and every volume no live machine holds (ctrl-N's
//!    volume, spares); then a new volume asking for a zone of its own (the survivors' volumes
//!    hold theirs, so Fly's `require_unique_zone` lands it in a zone distinct from theirs,
//!    reference fly-machines-api.md §2.2), a new machine that **joins the survivor**, started,
//!    Ready in Kubernetes, its etcd member a healthy voter, tainted, marked ready.
//!
//! The bootstrap role follows the surviving members: the new server's `FKS_BOOTSTRAP_NODE_ID`
//! and `FKS_BOOTSTRAP_MACHINE_ID` name the survivor, so node init renders a joining server
//! (`server: https://<survivor>.vm.<app>.internal:6443`), never `cluster-init`, even when ctrl-N
//! was the bootstrap server. Re-creating the bootstrap server with `cluster-init` while others
//! exist would start a second, empty cluster: k3s.sh's `BOOTSTRAP_NODE_ID` footgun
//! (reference/k3s-sh-behaviour.md).
//!
//! Pure: no tokio, no network, no clock. Must not: touch a survivor, remove a member of a live
//! server other than ctrl-N, or plan anything when the check fails.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    machine_request, node_machine, private_files_to_secrets, volume_request, Action, Builder,
    Error, GoneServer, MachineRef, NodePlan, Options, Plan, Ref, Role, State, StepId, Target,
    META_CLUSTER, META_NODE, META_ROLE, SERVERS, TOKEN_SECRET,
};
use crate::config::Config;
use crate::fly::types::{Machine, MachineState, SecretString, Volume};
use crate::membership::Quorum;
use crate::run::k3s::{k3s_node_name, machine_of_k3s_node};
use crate::status::{member_node, MemberHealth, MembersReport};

/// What the member list said, or why no survivor could be asked.
pub type Members = Result<MembersReport, String>;

/// The server a replacement joins through and runs its kubectl and etcd calls on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    /// Its node name (`ctrl-1`).
    pub node: String,
    /// Its index N.
    pub index: u32,
    /// Its machine id.
    pub machine: String,
}

/// A planned replacement: the steps, and what the plan found, for the dry run and the
/// confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct Replacement {
    /// The node replaced (`ctrl-N`).
    pub node: String,
    /// Its live machine, if any was left.
    pub old_machine: Option<String>,
    /// The etcd members removed (hex id, name).
    pub members: Vec<(String, String)>,
    /// What the removal leaves.
    pub quorum: Quorum,
    /// The server the new one joins.
    pub via: Survivor,
    /// The zones of the survivors' volumes (the new one goes elsewhere).
    pub survivor_zones: Vec<String>,
    /// The steps.
    pub plan: Plan,
}

impl Replacement {
    /// One line per step, in plan order: what the dry run and the confirmation show.
    pub fn describe(&self) -> Vec<String> {
        self.plan
            .steps
            .iter()
            .map(|s| match (&s.action, s.node.as_deref()) {
                (
                    Action::DestroyMachine { .. }
                    | Action::DeleteVolume { .. }
                    | Action::DeleteNode { .. },
                    node,
                ) => super::scale_down::step_line(&s.action, node)
                    .unwrap_or_else(|| s.action.to_string()),
                (action, Some(node)) => format!("{node}: {action}"),
                (action, None) => action.to_string(),
            })
            .collect()
    }
}

/// `ctrl-N` → N, for N a server index.
pub fn server_index(node: &str) -> Option<u32> {
    node.strip_prefix("ctrl-")?
        .parse()
        .ok()
        .filter(|i| *i < SERVERS)
}

fn live(m: &Machine) -> bool {
    !matches!(m.state, MachineState::Destroyed | MachineState::Destroying)
}

/// The host of a member's peer URL (`https://[fdaa::2]:2380` → `fdaa::2`).
fn peer_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => rest.rsplit_once(':').map_or(rest, |(h, _)| h),
    };
    (!host.is_empty()).then_some(host)
}

/// The members of `members` that belong to one of `gone` (machines of `app`): those named
/// after a gone machine's k3s node, and unnamed ones (added, never started) whose peer URL
/// holds a gone machine's address.
pub fn members_of<'a>(
    members: &'a [MemberHealth],
    app: &str,
    gone: &[GoneServer],
) -> Vec<&'a MemberHealth> {
    let names: BTreeSet<String> = gone.iter().map(|g| k3s_node_name(&g.id, app)).collect();
    let ips: BTreeSet<&str> = gone
        .iter()
        .map(|g| g.private_ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    members
        .iter()
        .filter(|m| match member_node(&m.name) {
            Some(node) => names.contains(node),
            None => {
                m.name.is_empty()
                    && m.peer_urls
                        .iter()
                        .filter_map(|u| peer_host(u))
                        .any(|h| ips.contains(h))
            }
        })
        .collect()
}

/// Plans the replacement of server `ctrl-<index>` of `config`'s control plane. `state` is the
/// control-plane app as observed (machines, volumes, secret names); `members` the member list
/// as a started survivor read it; `options` as for `create` (`node_files` must hold the
/// replaced node's files, `image` the survivors' image).
pub fn replace(
    config: &Config,
    index: u32,
    state: &State,
    members: &Members,
    options: &Options,
) -> Result<Replacement, Error> {
    let app = config.cp_app();
    let cluster = config.cluster_name.as_str();
    let node = format!("ctrl-{index}");
    if index >= SERVERS {
        return Err(Error::NotAServer { node });
    }
    let refuse = |why: String| Error::ReplaceRefused {
        app: app.clone(),
        node: node.clone(),
        why,
    };
    if !state.app_exists {
        return Err(refuse(
            "the app does not exist; create the control plane first (fks-bootstrap -c)".into(),
        ));
    }
    if !state.secrets.contains(TOKEN_SECRET) {
        return Err(refuse(format!(
            "the app has no {TOKEN_SECRET} secret, so a new server could not join; finish the control plane first (fks-bootstrap -c)"
        )));
    }
    let old = node_machine(&app, cluster, &node, &state.machines)?;
    // Every live server of this cluster by node name (ctrl-N included when its machine is left).
    let mut servers: BTreeMap<String, &Machine> = BTreeMap::new();
    for m in state.machines.iter().filter(|m| live(m)) {
        if m.metadata(META_CLUSTER) != Some(cluster)
            || m.metadata(META_ROLE) != Some(Role::Server.as_str())
        {
            continue;
        }
        if let Some(n) = m.metadata(META_NODE) {
            node_machine(&app, cluster, n, &state.machines)?;
            servers.insert(n.to_string(), m);
        }
    }
    let members = members.as_ref().map_err(|why| {
        refuse(format!(
            "its etcd members could not be read through a started survivor ({why}), so quorum cannot be checked"
        ))
    })?;
    let k3s_of: BTreeMap<String, &str> = servers
        .iter()
        .map(|(n, m)| (k3s_node_name(&m.id, &app), n.as_str()))
        .collect();
    let ips: BTreeSet<&str> = servers
        .values()
        .filter(|m| !m.private_ip.is_empty())
        .map(|m| m.private_ip.as_str())
        .collect();
    // The node a member belongs to among the live servers, if any.
    let owner = |m: &MemberHealth| -> Option<&str> {
        match member_node(&m.name) {
            Some(k3s) => k3s_of.get(k3s).copied(),
            // An unnamed member (added, never started): known by its peer address.
            None => m
                .peer_urls
                .iter()
                .filter_map(|u| peer_host(u))
                .find_map(|h| {
                    ips.contains(h)
                        .then(|| {
                            servers
                                .iter()
                                .find(|(_, s)| s.private_ip == h)
                                .map(|(n, _)| n.as_str())
                        })
                        .flatten()
                }),
        }
    };
    let doomed: Vec<&MemberHealth> = members
        .members
        .iter()
        .filter(|m| match owner(m) {
            Some(n) => n == node,
            None => true,
        })
        .collect();
    let doomed_ids: Vec<&str> = doomed.iter().map(|m| m.id.as_str()).collect();
    let quorum = Quorum::after(&members.members, &doomed_ids);
    let health_of = |m: &MemberHealth| match (m.healthy, &m.error) {
        (true, _) => "healthy".to_string(),
        (false, Some(e)) => format!("unhealthy: {e}"),
        (false, None) => "unhealthy".to_string(),
    };
    if !quorum.holds() {
        let left: Vec<String> = members
            .members
            .iter()
            .filter(|m| !doomed_ids.contains(&m.id.as_str()))
            .map(|m| format!("{} ({})", owner(m).unwrap_or(m.name.as_str()), health_of(m)))
            .collect();
        return Err(refuse(format!(
            "after removing its etcd member, {} voting member(s) would remain, {} of them healthy, but etcd needs {} healthy (a majority) to keep quorum [{}]; bring the unhealthy servers back first",
            quorum.voters,
            quorum.healthy,
            quorum.needed,
            left.join(", ")
        )));
    }
    // The survivor to act through: started, its member a healthy voter; the lowest name.
    let via = servers
        .iter()
        .filter(|(n, m)| **n != node && m.state == MachineState::Started)
        .find(|(n, _)| {
            members
                .members
                .iter()
                .any(|m| owner(m) == Some(n.as_str()) && m.healthy && !m.learner)
        })
        .and_then(|(n, m)| {
            Some(Survivor {
                node: n.clone(),
                index: server_index(n)?,
                machine: m.id.clone(),
            })
        })
        .ok_or_else(|| {
            refuse(
                "no surviving server is started with a healthy voting etcd member to remove the old member and join the new server through".into(),
            )
        })?;
    let via_ref = MachineRef {
        app: app.clone(),
        id: Ref::Known(via.machine.clone()),
    };
    let attached_zone = |m: &Machine| {
        state
            .volumes
            .iter()
            .find(|v| v.attached_machine_id.as_deref() == Some(m.id.as_str()))
            .map(|v| v.zone.clone())
    };
    let mut survivor_zones: Vec<String> = servers
        .iter()
        .filter(|(n, _)| **n != node)
        .filter_map(|(_, m)| attached_zone(m))
        .collect();
    survivor_zones.sort();
    survivor_zones.dedup();
    let unique = match options.zones {
        Some(zones) if zones <= survivor_zones.len() => {
            if !options.allow_shared_zones {
                return Err(Error::ZoneShortage {
                    app: app.clone(),
                    region: config.region.clone(),
                    nodes: SERVERS,
                    zones,
                });
            }
            false
        }
        _ => true,
    };

    let mut b = Builder { steps: Vec::new() };
    let n = Some(node.as_str());
    let destroy = old.map(|m| {
        b.push(
            n,
            Action::DestroyMachine {
                machine: MachineRef {
                    app: app.clone(),
                    id: Ref::Known(m.id.clone()),
                },
            },
            vec![],
        )
    });
    let mut after_destroy: Vec<StepId> = destroy.into_iter().collect();
    // A destroy an interrupted replace sent and Fly has not finished: sent again and waited
    // for (see `scale_down::nodes`), so ctrl-N's volume is free to delete after it.
    let destroying: Vec<&Machine> = state
        .machines
        .iter()
        .filter(|m| m.state == MachineState::Destroying)
        .filter(|m| {
            m.metadata(META_CLUSTER) == Some(cluster) && m.metadata(META_NODE) == Some(&node)
        })
        .collect();
    for m in &destroying {
        after_destroy.push(b.push(
            n,
            Action::DestroyMachine {
                machine: MachineRef {
                    app: app.clone(),
                    id: Ref::Known(m.id.clone()),
                },
            },
            vec![],
        ));
    }
    let mut removals = Vec::new();
    for m in &doomed {
        removals.push(b.push(
            n,
            Action::RemoveMember {
                id: m.id.clone(),
                name: m.name.clone(),
                via: via_ref.clone(),
            },
            after_destroy.clone(),
        ));
    }
    // A ctrl-N machine still booting when the members were read (made by a run killed right
    // after its create) may have added itself since: once it is destroyed, whatever member it
    // left is removed too, as etcd lists them then. After the removals above, so no member is
    // removed twice at once.
    let gone: Vec<GoneServer> = old
        .into_iter()
        .chain(destroying.iter().copied())
        .map(|m| GoneServer {
            id: m.id.clone(),
            private_ip: m.private_ip.clone(),
        })
        .collect();
    if !gone.is_empty() {
        let mut deps = after_destroy.clone();
        deps.extend(removals.iter().copied());
        removals.push(b.push(
            n,
            Action::RemoveMembersOf {
                app: app.clone(),
                machines: gone,
                via: via_ref.clone(),
            },
            deps,
        ));
    }
    // The Node objects of the old machine(s): ctrl-N's, those its removed members name, and
    // any other of the app whose machine is gone (a replace killed after removing the member
    // but before deleting the Node leaves one that no member names any more).
    let mut old_ids: BTreeSet<String> = old
        .into_iter()
        .chain(destroying.iter().copied())
        .map(|m| m.id.clone())
        .collect();
    for m in &doomed {
        if let Some(id) = member_node(&m.name).and_then(|k| machine_of_k3s_node(k, &app)) {
            old_ids.insert(id.to_string());
        }
    }
    if let Some(k8s) = &state.k8s_nodes {
        old_ids.extend(super::scale_down::stale_nodes(&app, k8s, &state.machines));
    }
    let mut cleanup = removals.clone();
    if options.k3s {
        // After the removals: losing a leader means an election, and the API answers 503
        // until etcd has one again; a removal that went through proves it has.
        let after: Vec<StepId> = if removals.is_empty() {
            after_destroy.clone()
        } else {
            removals.clone()
        };
        for id in &old_ids {
            cleanup.push(b.push(
                n,
                Action::DeleteNode {
                    machine: MachineRef {
                        app: app.clone(),
                        id: Ref::Known(id.clone()),
                    },
                    via: via_ref.clone(),
                },
                after.clone(),
            ));
        }
    }
    // Every volume no surviving machine holds: ctrl-N's (attached to its old machine, or left
    // unattached when the machine went), and spares of interrupted runs. None is reused: the
    // old one holds a removed member's etcd data.
    let held: BTreeSet<&str> = servers
        .iter()
        .filter(|(name, _)| **name != node)
        .map(|(_, m)| m.id.as_str())
        .collect();
    let mut leftover: Vec<&Volume> = state
        .volumes
        .iter()
        .filter(|v| !v.state.is_being_destroyed())
        .filter(|v| {
            v.attached_machine_id
                .as_deref()
                .is_none_or(|a| a.is_empty() || !held.contains(a))
        })
        .collect();
    leftover.sort_by(|x, y| x.id.cmp(&y.id));
    let mut volume_deletes = Vec::new();
    for v in leftover {
        volume_deletes.push(b.push(
            n,
            Action::DeleteVolume {
                app: app.clone(),
                volume: v.id.clone(),
                name: v.name.clone(),
                zone: v.zone.clone(),
            },
            after_destroy.clone(),
        ));
    }
    // The node's private files as app secrets, unless there already (never regenerated).
    let files = options
        .node_files
        .get(&node)
        .ok_or_else(|| Error::MissingNodeFiles { node: node.clone() })?;
    let mut secrets: BTreeMap<String, SecretString> = BTreeMap::new();
    let files = private_files_to_secrets(&node, files, &mut secrets);
    secrets.retain(|name, _| !state.secrets.contains(name));
    let secrets_step = (!secrets.is_empty()).then(|| {
        b.push(
            None,
            Action::SetFileSecrets {
                app: app.clone(),
                values: secrets,
            },
            vec![],
        )
    });
    // The new volume goes after the old ones are deleted, so the zone they held is free again.
    let target = Target::ControlPlane {
        bootstrap_index: via.index,
    };
    let volume = b.push(
        n,
        Action::CreateVolume {
            app: app.clone(),
            request: Box::new(volume_request(config, &target, unique)),
            share_if_full: options.allow_shared_zones,
        },
        volume_deletes.clone(),
    );
    let join = Ref::Known(via.machine.clone());
    let mut request = machine_request(
        config,
        &target,
        Some(via.index),
        &node,
        Role::Server,
        &Ref::Step(volume),
        None,
        Some(&join),
        &files,
    );
    request.config.image = options.image.clone();
    for (k, v) in &options.extra_env {
        request
            .config
            .env
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    // The new member joins only once the old one is out: etcd adds it as a learner and allows
    // one learner at a time, and a member count of 4 with one dead would need 3 healthy.
    let mut deps = vec![volume];
    deps.extend(removals.iter().copied());
    deps.extend(secrets_step);
    let create = b.push(
        n,
        Action::CreateMachine {
            app: app.clone(),
            request: Box::new(request),
            volume: Ref::Step(volume),
            bootstrap: Some(join),
        },
        deps,
    );
    let made = MachineRef {
        app: app.clone(),
        id: Ref::Step(create),
    };
    let started = b.push(
        n,
        Action::WaitStarted {
            machine: made.clone(),
        },
        vec![create],
    );
    if options.k3s {
        let mut deps = vec![started];
        deps.extend(cleanup.iter().copied());
        let ready = b.push(
            n,
            Action::WaitK3sReady {
                machine: made.clone(),
                via: via_ref.clone(),
            },
            deps,
        );
        let member = b.push(
            n,
            Action::WaitMemberHealthy {
                machine: made.clone(),
                via: via_ref.clone(),
            },
            vec![ready],
        );
        let taint = b.push(
            n,
            Action::Taint {
                machine: made.clone(),
                via: via_ref.clone(),
                fallback: Vec::new(),
            },
            vec![member],
        );
        b.push(n, Action::MarkReady { machine: made }, vec![taint]);
    }

    let mut nodes: Vec<NodePlan> = servers
        .iter()
        .filter(|(name, _)| **name != node)
        .map(|(name, m)| NodePlan {
            name: name.clone(),
            role: if *name == via.node {
                Role::BootstrapServer
            } else {
                Role::Server
            },
            machine: Some(m.id.clone()),
            private_ip: (!m.private_ip.is_empty()).then(|| m.private_ip.clone()),
            zone: attached_zone(m),
        })
        .collect();
    nodes.push(NodePlan {
        name: node.clone(),
        role: Role::Server,
        machine: None,
        private_ip: None,
        zone: None,
    });
    Ok(Replacement {
        node: node.clone(),
        old_machine: old.map(|m| m.id.clone()),
        members: doomed
            .iter()
            .map(|m| (m.id.clone(), m.name.clone()))
            .collect(),
        quorum,
        via,
        survivor_zones,
        plan: Plan {
            cluster: cluster.to_string(),
            app,
            nodes,
            steps: b.steps,
            k3s: options.k3s,
            observed_volumes: state.volumes.iter().map(|v| v.id.clone()).collect(),
            keep_going: false,
        },
    })
}

#[cfg(test)]
#[path = "replace_tests.rs"]
mod tests;
