//! The `--dry-run` text of a [`Plan`]: one line per step with its dependencies, the nodes with
//! what exists of them, and the number of changes. Deterministic (no ids that the plan does
//! not already hold, no times).
//!
//! Must not: print file contents (a node's files carry its ssh host key).

use std::fmt;

use super::{Action, Plan, Role, Step, DATA_MOUNT, SERVER_TAINT, SERVER_TOKEN_PATH, TOKEN_SECRET};

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cluster {}, app {}", self.cluster, self.app)?;
        writeln!(f, "nodes:")?;
        for n in &self.nodes {
            let role = match n.role {
                Role::BootstrapServer => "server (bootstrap)",
                Role::Server => "server",
                Role::Agent => "agent",
            };
            let machine = n.machine.as_deref().unwrap_or("to create");
            let zone = n.zone.as_deref().unwrap_or("new volume");
            writeln!(
                f,
                "  {:<20} {role:<19} machine {machine}, zone {zone}",
                n.name
            )?;
        }
        if self.steps.is_empty() {
            writeln!(f, "nothing to do: everything exists")?;
        } else {
            let n = self.steps.len();
            let m = self.mutations();
            writeln!(
                f,
                "{n} step{}, {m} change{} on Fly:",
                if n == 1 { "" } else { "s" },
                if m == 1 { "" } else { "s" }
            )?;
            for step in &self.steps {
                writeln!(f, "  {step}")?;
            }
        }
        if !self.k3s {
            writeln!(
                f,
                "k3s steps not planned (machines only): the plan ends when machines are started"
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<5}", self.id.to_string())?;
        if let Some(node) = &self.node {
            write!(f, "{node}: ")?;
        }
        write!(f, "{}", self.action)?;
        if !self.depends_on.is_empty() {
            let deps: Vec<String> = self.depends_on.iter().map(ToString::to_string).collect();
            write!(f, "  (after {})", deps.join(" "))?;
        }
        Ok(())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateApp { request } => write!(
                f,
                "create app {} in organization {}",
                request.app_name().unwrap_or_default(),
                request.org_slug.as_deref().unwrap_or_default()
            ),
            Action::CreateVolume {
                app,
                request,
                share_if_full,
            } => {
                let zone = match (request.require_unique_zone, share_if_full) {
                    (Some(false), _) => "zone may be shared",
                    (_, true) => "own zone, shared if none is left",
                    _ => "own zone",
                };
                write!(
                    f,
                    "create volume {} in app {app} ({}, {} GB, {zone})",
                    request.name,
                    request.region.as_deref().unwrap_or_default(),
                    request.size_gb.unwrap_or_default()
                )
            }
            Action::CreateMachine {
                app,
                request,
                volume,
                bootstrap,
            } => {
                let c = &request.config;
                let g = c.guest.as_ref();
                write!(
                    f,
                    "create machine {} in app {app} ({}, {} {} cpu, {} MB, image {}, volume {volume} at {DATA_MOUNT}",
                    request.name.as_deref().unwrap_or_default(),
                    c.metadata.get(super::META_ROLE).map(String::as_str).unwrap_or_default(),
                    g.and_then(|g| g.cpus).unwrap_or_default(),
                    g.and_then(|g| g.cpu_kind.as_deref()).unwrap_or_default(),
                    g.and_then(|g| g.memory_mb).unwrap_or_default(),
                    c.image,
                )?;
                if let Some(b) = bootstrap {
                    write!(f, ", joins {b}")?;
                }
                if c.files
                    .iter()
                    .any(|file| file.secret_name.as_deref() == Some(TOKEN_SECRET))
                {
                    write!(f, ", token from secret {TOKEN_SECRET}")?;
                }
                write!(f, ")")
            }
            Action::UpdateMachine {
                machine, changes, ..
            } => {
                write!(
                    f,
                    "update machine {} in app {} under a lease, wait until started ({} change{}",
                    machine.id,
                    machine.app,
                    changes.len(),
                    if changes.len() == 1 { "" } else { "s" }
                )?;
                for c in changes {
                    write!(f, "\n          {c}")?;
                }
                write!(f, ")")
            }
            Action::ReadBoot { machine, via } => write!(
                f,
                "read the boot id and last Ready heartbeat of k3s node {} (kubectl on {})",
                machine.id, via.id
            ),
            Action::WaitK3sReadyAgain {
                machine,
                via,
                before,
                kubelet,
            } => write!(
                f,
                "wait until k3s node {} is Ready from its new boot on Kubernetes {kubelet} (other boot id or newer heartbeat than {before}; kubectl on {})",
                machine.id, via.id
            ),
            Action::StartMachine { machine } => {
                write!(f, "start machine {} in app {}", machine.id, machine.app)
            }
            Action::WaitStarted { machine } => {
                write!(f, "wait until machine {} is started", machine.id)
            }
            Action::WaitK3sReady { machine, via } => write!(
                f,
                "wait until k3s node {} is Ready (kubectl on {})",
                machine.id, via.id
            ),
            Action::ReadToken { from } => write!(
                f,
                "read the join token {SERVER_TOKEN_PATH} on machine {} (never printed)",
                from.id
            ),
            Action::SetFileSecrets { app, values } => write!(
                f,
                "store private node files as secrets {} of app {app} (values never printed)",
                values.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            Action::SetTokenSecret { app, token } => {
                write!(
                    f,
                    "store the token from {token} as secret {TOKEN_SECRET} of app {app}"
                )
            }
            Action::Taint {
                machine,
                via,
                fallback,
            } => {
                write!(
                    f,
                    "taint k3s node {} {SERVER_TAINT} (kubectl on {}",
                    machine.id, via.id
                )?;
                if !fallback.is_empty() {
                    let others: Vec<String> = fallback.iter().map(|m| m.id.to_string()).collect();
                    write!(f, ", else {}", others.join(", "))?;
                }
                f.write_str(")")
            }
            Action::Cordon { machine, via } => write!(
                f,
                "cordon k3s node of machine {} (kubectl on {})",
                machine.id, via.id
            ),
            Action::Uncordon { machine, via } => write!(
                f,
                "uncordon k3s node of machine {} (kubectl on {})",
                machine.id, via.id
            ),
            Action::SetMetadata {
                machine,
                key,
                value: Some(value),
            } => write!(f, "set metadata {key}={value} on machine {}", machine.id),
            Action::SetMetadata {
                machine,
                key,
                value: None,
            } => write!(f, "delete metadata {key} of machine {}", machine.id),
            Action::Drain { machine, via } => write!(
                f,
                "drain k3s node of machine {} --ignore-daemonsets --delete-emptydir-data (kubectl on {})",
                machine.id, via.id
            ),
            Action::DeleteNode { machine, via } => write!(
                f,
                "delete k3s node of machine {} (kubectl on {})",
                machine.id, via.id
            ),
            Action::RemoveMember { id, name, via } => write!(
                f,
                "remove etcd member {id} ({}) through the etcd of machine {} (node etcd remove)",
                if name.is_empty() { "unnamed" } else { name },
                via.id
            ),
            Action::RemoveMembersOf { machines, via, .. } => write!(
                f,
                "remove any etcd member of destroyed machine(s) {} still listed, through the etcd of machine {} (node etcd remove)",
                machines
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                via.id
            ),
            Action::WaitMemberHealthy { machine, via } => write!(
                f,
                "wait until the etcd member of machine {} is a healthy voter (asked on {})",
                machine.id, via.id
            ),
            Action::MarkReady { machine } => {
                write!(
                    f,
                    "mark machine {} ready ({}=true)",
                    machine.id,
                    super::META_READY
                )
            }
            Action::DestroyMachine { .. }
            | Action::DeleteVolume { .. }
            | Action::DeleteSecret { .. }
            | Action::DeleteApp { .. } => {
                let what = super::destroy::removal_line(self, None).unwrap_or_default();
                write!(f, "remove {what}")
            }
        }
    }
}
