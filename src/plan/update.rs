//! Config drift of existing machines (issue 11 item 2, "Converge config drift"): the config the
//! create path would send today is compared with each live machine's observed config, field by
//! field, and a machine that differs gets a typed [`Action::UpdateMachine`] carrying its whole
//! new config (Fly's update replaces the config, there is no patch: reference
//! fly-machines-api.md §8.6) and the list of [`Change`]s the `--dry-run` prints.
//!
//! The rollout order is planned here too: servers one at a time, each cordoned, updated under a
//! lease, started again, its k3s node Ready on the new version and its etcd member a healthy
//! voter, then uncordoned, before the next; workers in batches of [`WORKER_BATCH`], each
//! drained first (evictions honour PodDisruptionBudgets) and the batch back Ready and
//! uncordoned before the next one starts. A node is marked ([`META_CORDONED`]) before it is
//! cordoned and unmarked after it is uncordoned, so a run killed in between is finished by the
//! next (a node someone else cordoned is never uncordoned).
//!
//! Pure: no I/O. Must not: put a secret value into a [`Change`] (file contents are described,
//! never shown; env never holds a secret, see [`super::Options::extra_env`]).

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine;

use super::{
    Action, Builder, MachineRef, Role, StepId, CLUSTER_CONFIG_PATH, ENV_BOOTSTRAP_MACHINE_ID,
    ENV_ZONE, META_CORDONED,
};
use crate::fly::types::{MachineConfig, MachineFile, MachineGuest, MachineInit, MachineRestart};

/// How many workers of one node group are updated at once unless `--max-unavailable` says
/// otherwise ([`super::Options::max_unavailable`]). Fly limits mutating Machines calls
/// per app (reference fly-machines-api.md, rate limits; the client's token buckets in
/// `fly::ratelimit` keep within them whatever this is); the batch bounds how much of a group's
/// capacity is rebooting at the same time.
pub const WORKER_BATCH: usize = 3;

/// Env keys the create path learns from placement (the volume's zone, the bootstrap server's
/// id when the server joined): facts of the machine's history, not config to converge.
const PLACEMENT_ENV: [&str; 2] = [ENV_ZONE, ENV_BOOTSTRAP_MACHINE_ID];

/// One field of a machine config that differs, described without secret values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The field: `image`, `env FKS_X`, `guest cpus`, `file /etc/x`, `init exec`,
    /// `metadata fks_role`, `restart policy`.
    pub field: String,
    /// The observed value (`-` when absent).
    pub old: String,
    /// The desired value (`-` when absent).
    pub new: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.field, self.old, self.new)
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A file as the diff shows it: where its content comes from, never the content.
fn describe_file(f: Option<&MachineFile>) -> String {
    match f {
        None => "-".to_string(),
        Some(f) => {
            let mode = f.mode.map_or_else(String::new, |m| format!(", mode {m:o}"));
            match (&f.secret_name, &f.raw_value) {
                (Some(s), _) => format!("from secret {s}{mode}"),
                (None, Some(raw)) => format!("inline, {} base64 chars{mode}", raw.len()),
                (None, None) => format!("empty{mode}"),
            }
        }
    }
}

/// The config `observed` should have: the planned image, env, guest size, files, init command,
/// restart policy and metadata keys, and everything else (mounts, placement env, metadata the
/// run wrote such as `fks_ready`, fields this client does not model) as observed.
pub fn desired_config(observed: &MachineConfig, planned: &MachineConfig) -> MachineConfig {
    let mut out = observed.clone();
    out.image = planned.image.clone();
    let mut env = planned.env.clone();
    for key in PLACEMENT_ENV {
        env.remove(key);
        if let Some(v) = observed.env.get(key) {
            env.insert(key.to_string(), v.clone());
        }
    }
    out.env = env;
    if let Some(pg) = &planned.guest {
        let mut g = observed.guest.clone().unwrap_or_default();
        g.cpu_kind = pg.cpu_kind.clone();
        g.cpus = pg.cpus;
        g.memory_mb = pg.memory_mb;
        out.guest = Some(g);
    }
    // Fly's GET may not echo files back (unknown: reference fly-machines-api.md does not say
    // whether `config.files` is returned). Every machine this tool makes has at least the
    // cluster config file, so an empty list means "not reported": keep it, do not rewrite.
    if !observed.files.is_empty() {
        out.files = planned
            .files
            .iter()
            .map(
                |f| match observed.files.iter().find(|o| o.guest_path == f.guest_path) {
                    Some(o) if f.guest_path == CLUSTER_CONFIG_PATH && same_for_nodes(o, f) => {
                        o.clone()
                    }
                    _ => f.clone(),
                },
            )
            .collect();
    }
    if let Some(pi) = &planned.init {
        let mut i = observed.init.clone().unwrap_or_default();
        i.exec = pi.exec.clone();
        out.init = Some(i);
    }
    if let Some(pr) = &planned.restart {
        let mut r = observed.restart.clone().unwrap_or_default();
        r.policy = pr.policy.clone();
        out.restart = Some(r);
    }
    for (k, v) in &planned.metadata {
        out.metadata.insert(k.clone(), v.clone());
    }
    out
}

/// Settings in the cluster config file that only the operator reads: a change of these alone
/// (a node group resized) does not make every node of the cluster reboot.
const OPERATOR_ONLY: [&str; 1] = ["NODE_GROUP_SIZE="];

/// Whether two cluster config files say the same to a node (lines of [`OPERATOR_ONLY`]
/// settings left out).
fn same_for_nodes(a: &MachineFile, b: &MachineFile) -> bool {
    let lines = |f: &MachineFile| -> Option<Vec<String>> {
        let raw = f.raw_value.as_ref()?;
        let text = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
        let text = String::from_utf8(text).ok()?;
        Some(
            text.lines()
                .filter(|l| !OPERATOR_ONLY.iter().any(|p| l.starts_with(p)))
                .map(str::to_string)
                .collect(),
        )
    };
    a.mode == b.mode && a.secret_name == b.secret_name && lines(a).is_some() && lines(a) == lines(b)
}

fn guest_changes(old: Option<&MachineGuest>, new: Option<&MachineGuest>, out: &mut Vec<Change>) {
    let (o, n) = (
        old.cloned().unwrap_or_default(),
        new.cloned().unwrap_or_default(),
    );
    let mut push = |field: &str, old: String, new: String| {
        if old != new {
            out.push(Change {
                field: format!("guest {field}"),
                old,
                new,
            });
        }
    };
    push("cpu_kind", opt(o.cpu_kind), opt(n.cpu_kind));
    push("cpus", opt(o.cpus), opt(n.cpus));
    push("memory_mb", opt(o.memory_mb), opt(n.memory_mb));
}

/// The fields of `new` that differ from `old`, in a fixed order (image, env, guest, files,
/// init, restart, metadata). Empty: the machine has converged.
pub fn changes(old: &MachineConfig, new: &MachineConfig) -> Vec<Change> {
    let mut out = Vec::new();
    if old.image != new.image {
        out.push(Change {
            field: "image".into(),
            old: old.image.clone(),
            new: new.image.clone(),
        });
    }
    let keys: BTreeSet<&String> = old.env.keys().chain(new.env.keys()).collect();
    for k in keys {
        let (o, n) = (old.env.get(k), new.env.get(k));
        if o != n {
            out.push(Change {
                field: format!("env {k}"),
                old: opt(o),
                new: opt(n),
            });
        }
    }
    guest_changes(old.guest.as_ref(), new.guest.as_ref(), &mut out);
    let paths: BTreeSet<&String> = old
        .files
        .iter()
        .chain(&new.files)
        .map(|f| &f.guest_path)
        .collect();
    for p in paths {
        let o = old.files.iter().find(|f| &f.guest_path == p);
        let n = new.files.iter().find(|f| &f.guest_path == p);
        let same = match (o, n) {
            (Some(a), Some(b)) => {
                a.raw_value == b.raw_value && a.secret_name == b.secret_name && a.mode == b.mode
            }
            (None, None) => true,
            _ => false,
        };
        if !same {
            let (mut od, nd) = (describe_file(o), describe_file(n));
            if od == nd {
                od = format!("{od} (other content)");
            }
            out.push(Change {
                field: format!("file {p}"),
                old: od,
                new: nd,
            });
        }
    }
    let exec = |i: Option<&MachineInit>| {
        i.and_then(|i| i.exec.as_ref())
            .map(|e| e.join(" "))
            .unwrap_or_else(|| "-".into())
    };
    if exec(old.init.as_ref()) != exec(new.init.as_ref()) {
        out.push(Change {
            field: "init exec".into(),
            old: exec(old.init.as_ref()),
            new: exec(new.init.as_ref()),
        });
    }
    let policy = |r: Option<&MachineRestart>| {
        opt(r
            .and_then(|r| r.policy.as_ref())
            .map(|p| format!("{p:?}").to_lowercase()))
    };
    if policy(old.restart.as_ref()) != policy(new.restart.as_ref()) {
        out.push(Change {
            field: "restart policy".into(),
            old: policy(old.restart.as_ref()),
            new: policy(new.restart.as_ref()),
        });
    }
    let keys: BTreeSet<&String> = old.metadata.keys().chain(new.metadata.keys()).collect();
    for k in keys {
        let (o, n) = (old.metadata.get(k), new.metadata.get(k));
        if o != n {
            out.push(Change {
                field: format!("metadata {k}"),
                old: opt(o),
                new: opt(n),
            });
        }
    }
    out
}

/// An existing machine that drifted, as the node phase found it.
#[derive(Debug, Clone)]
pub(super) struct Drifted {
    /// The node.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its machine.
    pub machine: MachineRef,
    /// The whole config to send.
    pub config: MachineConfig,
    /// What changes.
    pub changes: Vec<Change>,
    /// The step after which it is started, when it was not.
    pub started: Option<StepId>,
}

/// The steps no other step waits for: what "everything planned so far is done" means.
fn sinks(b: &Builder) -> Vec<StepId> {
    let used: BTreeSet<StepId> = b
        .steps
        .iter()
        .flat_map(|s| s.depends_on.iter().copied())
        .collect();
    b.steps
        .iter()
        .map(|s| s.id)
        .filter(|id| !used.contains(id))
        .collect()
}

/// A node fks-bootstrap cordoned for an update that was not uncordoned (its machine carries
/// [`META_CORDONED`]: the run was killed after the update), and whose config no longer drifts.
#[derive(Debug, Clone)]
pub(super) struct LeftCordoned {
    /// The node.
    pub name: String,
    /// Its machine.
    pub machine: MachineRef,
}

/// What marks, cordons and (for agents) drains a node before its update, and uncordons and
/// unmarks it after: [`META_CORDONED`] set before the cordon and carried in the updated config,
/// so a run killed anywhere in between leaves a mark the next run finishes from.
fn mark(b: &mut Builder, name: &str, machine: &MachineRef, on: bool, deps: Vec<StepId>) -> StepId {
    b.push(
        Some(name),
        Action::SetMetadata {
            machine: machine.clone(),
            key: META_CORDONED.to_string(),
            value: on.then(|| CORDONED_FOR.to_string()),
        },
        deps,
    )
}

/// The value of [`META_CORDONED`] while a node is cordoned for its update.
pub const CORDONED_FOR: &str = "update";

/// Pushes one node's update after `deps`: mark, cordon (a server; its workloads are critical
/// addons only) or drain (an agent: evictions honour PodDisruptionBudgets), read its boot,
/// update under a lease, wait Ready from the new boot on `kubelet`, [the etcd member healthy,
/// for a server], uncordon, unmark. Without `k3s` only the update. Returns the step the next
/// node waits for.
fn update_node(
    b: &mut Builder,
    d: Drifted,
    via: Option<&MachineRef>,
    k3s: Option<&str>,
    deps: Vec<StepId>,
) -> StepId {
    let name = d.name.as_str();
    let (Some(via), Some(kubelet)) = (via, k3s) else {
        return b.push(
            Some(name),
            Action::UpdateMachine {
                machine: d.machine.clone(),
                config: Box::new(d.config),
                changes: d.changes,
            },
            deps,
        );
    };
    let marked = mark(b, name, &d.machine, true, deps);
    let unschedulable = if d.role == Role::Agent {
        Action::Drain {
            machine: d.machine.clone(),
            via: via.clone(),
        }
    } else {
        Action::Cordon {
            machine: d.machine.clone(),
            via: via.clone(),
        }
    };
    let cordoned = b.push(Some(name), unschedulable, vec![marked]);
    let read = b.push(
        Some(name),
        Action::ReadBoot {
            machine: d.machine.clone(),
            via: via.clone(),
        },
        vec![cordoned],
    );
    let mut config = d.config;
    config
        .metadata
        .insert(META_CORDONED.to_string(), CORDONED_FOR.to_string());
    let update = b.push(
        Some(name),
        Action::UpdateMachine {
            machine: d.machine.clone(),
            config: Box::new(config),
            changes: d.changes,
        },
        vec![read],
    );
    let mut back = b.push(
        Some(name),
        Action::WaitK3sReadyAgain {
            machine: d.machine.clone(),
            via: via.clone(),
            before: read,
            kubelet: kubelet.to_string(),
        },
        vec![update],
    );
    if d.role != Role::Agent {
        back = b.push(
            Some(name),
            Action::WaitMemberHealthy {
                machine: d.machine.clone(),
                via: via.clone(),
            },
            vec![back],
        );
    }
    let uncordoned = b.push(
        Some(name),
        Action::Uncordon {
            machine: d.machine.clone(),
            via: via.clone(),
        },
        vec![back],
    );
    mark(b, name, &d.machine, false, vec![uncordoned])
}

/// The rollout of `drifted` (in the plan's node order: bootstrap server first), after every
/// step planned so far and after the servers that are not updated are healthy etcd voters
/// (one may still be rebooting from an interrupted run). Servers one at a time, each through [`update_node`] with kubectl on
/// another server when there is one; then agents in batches of `max_unavailable`
/// (`--max-unavailable`, default [`WORKER_BATCH`]) through `via_cp`, each batch back before
/// the next. `k3s` is the Kubernetes version every updated node must then report (`None`: no
/// k3s steps, only the updates). `left` (nodes a killed run left cordoned) are uncordoned and
/// unmarked at once.
pub(super) fn rollout(
    b: &mut Builder,
    drifted: Vec<Drifted>,
    left: Vec<LeftCordoned>,
    servers: &[MachineRef],
    via_cp: Option<&MachineRef>,
    k3s: Option<&str>,
    max_unavailable: usize,
) {
    // Another server when there is one: the rebooted one cannot answer for itself.
    let via_for = |machine: &MachineRef| -> Option<MachineRef> {
        servers
            .iter()
            .find(|s| s.id != machine.id)
            .or(via_cp)
            .or(servers.first())
            .cloned()
    };
    if k3s.is_some() {
        for l in left {
            let Some(via) = via_for(&l.machine) else {
                continue;
            };
            let name = l.name.as_str();
            let uncordoned = b.push(
                Some(name),
                Action::Uncordon {
                    machine: l.machine.clone(),
                    via,
                },
                Vec::new(),
            );
            mark(b, name, &l.machine, false, vec![uncordoned]);
        }
    }
    if drifted.is_empty() {
        return;
    }
    let mut after: Vec<StepId> = sinks(b);
    let (srv, agents): (Vec<Drifted>, Vec<Drifted>) =
        drifted.into_iter().partition(|d| d.role != Role::Agent);
    // A server that needs no update may be rebooting onto its new config all the same: a run
    // killed after updating it, before its waits. The first update waits until every such
    // server's etcd member is a healthy voter again, so that two servers are never down at
    // once (with three, that would lose etcd's quorum).
    if k3s.is_some() && !srv.is_empty() {
        let mut gates = Vec::new();
        for s in servers
            .iter()
            .filter(|s| srv.iter().all(|d| d.machine.id != s.id))
        {
            let via = servers.iter().find(|o| o.id != s.id).unwrap_or(s).clone();
            gates.push(b.push(
                None,
                Action::WaitMemberHealthy {
                    machine: s.clone(),
                    via,
                },
                after.clone(),
            ));
        }
        after.extend(gates);
    }
    for d in srv {
        let via = via_for(&d.machine);
        let mut deps = after.clone();
        deps.extend(d.started);
        after = vec![update_node(b, d, via.as_ref(), k3s, deps)];
    }
    for batch in agents.chunks(max_unavailable.max(1)) {
        let mut done = Vec::new();
        for d in batch {
            let mut deps = after.clone();
            deps.extend(d.started);
            done.push(update_node(b, d.clone(), via_cp, k3s, deps));
        }
        after = done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::types::RestartPolicy;

    fn base() -> MachineConfig {
        let mut c = MachineConfig {
            image: "r/node@sha256:aa".into(),
            guest: Some(MachineGuest {
                cpu_kind: Some("shared".into()),
                cpus: Some(2),
                memory_mb: Some(2048),
                ..MachineGuest::default()
            }),
            init: Some(MachineInit {
                exec: Some(vec!["/fks".into(), "node".into()]),
                ..MachineInit::default()
            }),
            restart: Some(MachineRestart {
                policy: Some(RestartPolicy::Always),
                ..MachineRestart::default()
            }),
            ..MachineConfig::default()
        };
        c.env.insert("FKS_NODE".into(), "ctrl-0".into());
        c.metadata.insert("fks_node".into(), "ctrl-0".into());
        c.files.push(MachineFile {
            guest_path: "/etc/fks/cluster.env".into(),
            raw_value: Some("QT0x".into()),
            mode: Some(0o644),
            ..MachineFile::default()
        });
        c
    }

    #[test]
    fn a_converged_machine_has_no_changes() {
        let observed = base();
        let mut with_history = observed.clone();
        with_history.env.insert(ENV_ZONE.into(), "z1".into());
        with_history
            .metadata
            .insert("fks_ready".into(), "true".into());
        let want = desired_config(&with_history, &observed);
        assert_eq!(changes(&with_history, &want), []);
    }

    #[test]
    fn image_env_guest_and_file_drift_are_listed_without_content() {
        let observed = base();
        let mut planned = base();
        planned.image = "r/node@sha256:bb".into();
        planned.env.insert("FKS_EXTRA".into(), "1".into());
        planned.guest.as_mut().expect("set above").memory_mb = Some(4096);
        planned.files[0].raw_value = Some("QT0y".into());
        let want = desired_config(&observed, &planned);
        let shown: Vec<String> = changes(&observed, &want)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "image: r/node@sha256:aa -> r/node@sha256:bb",
                "env FKS_EXTRA: - -> 1",
                "guest memory_mb: 2048 -> 4096",
                "file /etc/fks/cluster.env: inline, 4 base64 chars, mode 644 (other content) -> inline, 4 base64 chars, mode 644",
            ]
        );
        assert!(shown.iter().all(|s| !s.contains("QT0")));
    }

    #[test]
    fn placement_env_and_run_metadata_are_kept_not_converged() {
        let mut observed = base();
        observed.env.insert(ENV_ZONE.into(), "z2".into());
        observed
            .env
            .insert(ENV_BOOTSTRAP_MACHINE_ID.into(), "b00t".into());
        observed.metadata.insert("fks_ready".into(), "true".into());
        let mut planned = base();
        planned.image = "r/node@sha256:bb".into();
        let want = desired_config(&observed, &planned);
        assert_eq!(want.env[ENV_ZONE], "z2");
        assert_eq!(want.env[ENV_BOOTSTRAP_MACHINE_ID], "b00t");
        assert_eq!(want.metadata["fks_ready"], "true");
        assert_eq!(changes(&observed, &want).len(), 1);
    }

    #[test]
    fn a_resized_node_group_alone_does_not_rewrite_the_cluster_config_file() {
        let file = |text: &str| MachineFile {
            guest_path: CLUSTER_CONFIG_PATH.into(),
            raw_value: Some(base64::engine::general_purpose::STANDARD.encode(text)),
            mode: Some(0o644),
            ..MachineFile::default()
        };
        let mut observed = base();
        observed.files = vec![file("REGION=sjc\nNODE_GROUP_SIZE=3\n")];
        let mut planned = base();
        planned.files = vec![file("REGION=sjc\nNODE_GROUP_SIZE=2\n")];
        assert_eq!(changes(&observed, &desired_config(&observed, &planned)), []);
        planned.files = vec![file("REGION=iad\nNODE_GROUP_SIZE=2\n")];
        let c = changes(&observed, &desired_config(&observed, &planned));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, format!("file {CLUSTER_CONFIG_PATH}"));
    }

    #[test]
    fn files_the_platform_did_not_report_are_not_rewritten() {
        let mut observed = base();
        observed.files.clear();
        let want = desired_config(&observed, &base());
        assert!(want.files.is_empty());
        assert_eq!(changes(&observed, &want), []);
    }
}
