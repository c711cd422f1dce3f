//! The destroy plan (`fks-bootstrap destroy`): from what the observer found in the cluster's
//! apps, the typed steps that remove it, in four phases with dependencies: every machine
//! (destroyed and waited for), then every volume (a volume stays attached until its machine
//! is gone), then every secret, then every app. Each phase's steps run concurrently; each
//! depends on all steps of the phase before, so one failed removal stops the next phases
//! (the plan asks `run` to finish the others of its phase: [`Plan::keep_going`]).
//!
//! Pure: no tokio, no network, no clock. Must not: plan anything outside the apps it is
//! given, or anything at all when one of their machines is not this cluster's.

use super::peer::PeerStep;
use super::{Action, AppState, Builder, Error, MachineRef, Plan, Ref, StepId};
use crate::contract::{meta, secret};
use crate::fly::types::{Machine, MachineState};

/// A destroy: the plan, and the apps left alone because only their name matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Destroy {
    /// The steps (machines, volumes, secrets, apps); empty when nothing is the cluster's.
    pub plan: Plan,
    /// Apps named like the cluster's with no machine and no secret fks-bootstrap writes.
    pub unclaimed: Vec<String>,
    /// What happens to the operator's WireGuard peer of the org once the cluster is gone
    /// ([`super::peer`]); the caller sets it (it needs the saved peer and the org's other
    /// apps). `None`: no peer fks-bootstrap made is saved.
    pub peer: Option<PeerStep>,
}

impl Destroy {
    /// One line per object, in removal order: what the dry run and the confirmation show.
    /// The WireGuard peer, when it goes, comes last (it is removed after the apps).
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .plan
            .steps
            .iter()
            .filter_map(|s| removal_line(&s.action, s.node.as_deref()))
            .collect();
        if let Some(step @ PeerStep::Remove { .. }) = &self.peer {
            lines.push(step.to_string());
        }
        lines
    }

    /// How many machines, volumes, secrets and apps the plan removes.
    pub fn counts(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for s in &self.plan.steps {
            if let Some(k) = removal_kind(&s.action) {
                counts[k] += 1;
            }
        }
        counts
    }
}

/// Which of the four phases an action belongs to (machines, volumes, secrets, apps).
pub fn removal_kind(action: &Action) -> Option<usize> {
    match action {
        Action::DestroyMachine { .. } => Some(0),
        Action::DeleteVolume { .. } => Some(1),
        Action::DeleteSecret { .. } => Some(2),
        Action::DeleteApp { .. } => Some(3),
        _ => None,
    }
}

/// The object a removal step removes, in words: `machine 1781e4db (ctrl-0) in app lab-cp`.
pub fn removal_line(action: &Action, node: Option<&str>) -> Option<String> {
    Some(match action {
        Action::DestroyMachine { machine } => match node {
            Some(node) => format!("machine {} ({node}) in app {}", machine.id, machine.app),
            None => format!("machine {} in app {}", machine.id, machine.app),
        },
        Action::DeleteVolume {
            app,
            volume,
            name,
            zone,
        } => format!("volume {volume} ({name}, zone {zone}) in app {app}"),
        Action::DeleteSecret { app, name } => format!("secret {name} of app {app}"),
        Action::DeleteApp { app } => format!("app {app}"),
        _ => return None,
    })
}

/// Refuses when any machine of `apps` lacks `fks_cluster=<cluster>`.
pub fn check_ownership(cluster: &str, apps: &[AppState]) -> Result<(), Error> {
    for app in apps {
        for m in live_machines(app) {
            let tag = m.metadata(meta::CLUSTER);
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

/// Whether an app shows a sign of being this tool's: a live machine (already checked to carry
/// `fks_cluster=<cluster>`) or a secret only fks-bootstrap writes (`K3S_TOKEN`, `FKS_*`).
/// An app with neither is only a name match (say another team's empty `<cluster>-ng-x`) and
/// is left alone.
pub fn claimed(app: &AppState) -> bool {
    live_machines(app).next().is_some() || app.secrets.iter().any(|s| secret::is_ours(s))
}

fn live_machines(app: &AppState) -> impl Iterator<Item = &Machine> {
    app.machines
        .iter()
        .filter(|m| m.state != MachineState::Destroyed)
}

fn node_name(m: &Machine) -> &str {
    m.metadata(meta::NODE).unwrap_or(&m.name)
}

/// Plans the removal of `apps` (the cluster's apps as the observer read them): ownership
/// check, then the four phases. Machines sort by node name, volumes by id, secrets by name.
pub fn destroy(cluster: &str, apps: &[AppState]) -> Result<Destroy, Error> {
    check_ownership(cluster, apps)?;
    let (ours, unclaimed): (Vec<&AppState>, Vec<&AppState>) = apps.iter().partition(|a| claimed(a));
    let mut b = Builder { steps: Vec::new() };

    let mut machines: Vec<StepId> = Vec::new();
    for a in &ours {
        let mut live: Vec<&Machine> = live_machines(a).collect();
        live.sort_by(|x, y| node_name(x).cmp(node_name(y)));
        for m in live {
            machines.push(b.push(
                Some(node_name(m)),
                Action::DestroyMachine {
                    machine: MachineRef {
                        app: a.app.clone(),
                        id: Ref::Known(m.id.clone()),
                    },
                },
                vec![],
            ));
        }
    }
    let mut volumes: Vec<StepId> = Vec::new();
    for a in &ours {
        let mut live: Vec<_> = a
            .volumes
            .iter()
            .filter(|v| !v.state.is_being_destroyed())
            .collect();
        live.sort_by(|x, y| x.id.cmp(&y.id));
        for v in live {
            volumes.push(b.push(
                None,
                Action::DeleteVolume {
                    app: a.app.clone(),
                    volume: v.id.clone(),
                    name: v.name.clone(),
                    zone: v.zone.clone(),
                },
                machines.clone(),
            ));
        }
    }
    // A phase with nothing in it passes its predecessor's barrier on.
    let after_volumes = if volumes.is_empty() {
        machines
    } else {
        volumes
    };
    let mut secrets: Vec<StepId> = Vec::new();
    for a in &ours {
        for s in &a.secrets {
            secrets.push(b.push(
                None,
                Action::DeleteSecret {
                    app: a.app.clone(),
                    name: s.clone(),
                },
                after_volumes.clone(),
            ));
        }
    }
    let after_secrets = if secrets.is_empty() {
        after_volumes
    } else {
        secrets
    };
    for a in &ours {
        b.push(
            None,
            Action::DeleteApp { app: a.app.clone() },
            after_secrets.clone(),
        );
    }
    Ok(Destroy {
        plan: Plan {
            cluster: cluster.to_string(),
            app: ours
                .iter()
                .map(|a| a.app.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            nodes: Vec::new(),
            steps: b.steps,
            k3s: false,
            observed_volumes: Default::default(),
            keep_going: true,
        },
        unclaimed: unclaimed.iter().map(|a| a.app.clone()).collect(),
        peer: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::types::{MachineConfig, Volume, VolumeState};

    fn machine(id: &str, node: &str, cluster: Option<&str>) -> Machine {
        let mut config = MachineConfig::default();
        if let Some(c) = cluster {
            config.metadata.insert(meta::CLUSTER.into(), c.into());
        }
        config.metadata.insert(meta::NODE.into(), node.into());
        Machine {
            id: id.into(),
            name: format!("m-{id}"),
            state: MachineState::Started,
            config: Some(config),
            ..Machine::default()
        }
    }

    fn volume(id: &str, zone: &str) -> Volume {
        Volume {
            id: id.into(),
            name: "lab_data".into(),
            zone: zone.into(),
            ..Volume::default()
        }
    }

    fn cp() -> AppState {
        AppState {
            app: "lab-cp".into(),
            machines: vec![
                machine("b2", "ctrl-1", Some("lab")),
                machine("a1", "ctrl-0", Some("lab")),
                Machine {
                    state: MachineState::Destroyed,
                    ..machine("z9", "ctrl-2", Some("lab"))
                },
            ],
            volumes: vec![
                volume("vol_2", "z2"),
                volume("vol_1", "z1"),
                Volume {
                    state: VolumeState::PendingDestroy,
                    ..volume("vol_9", "z3")
                },
            ],
            secrets: ["K3S_TOKEN".to_string()].into(),
        }
    }

    #[test]
    fn destroy_removes_machines_then_volumes_then_secrets_then_apps() {
        let d = destroy("lab", &[cp()]).expect("plan");
        assert_eq!(
            d.describe(),
            [
                "machine a1 (ctrl-0) in app lab-cp",
                "machine b2 (ctrl-1) in app lab-cp",
                "volume vol_1 (lab_data, zone z1) in app lab-cp",
                "volume vol_2 (lab_data, zone z2) in app lab-cp",
                "secret K3S_TOKEN of app lab-cp",
                "app lab-cp",
            ],
            "destroyed machines and volumes on their way out are left out"
        );
        assert_eq!(d.counts(), [2, 2, 1, 1]);
        assert!(d.plan.keep_going);
        assert_eq!(d.plan.mutations(), 6);
        // Each phase waits for the whole phase before it, and only for it.
        let deps: Vec<Vec<usize>> = d
            .plan
            .steps
            .iter()
            .map(|s| s.depends_on.iter().map(|d| d.0).collect())
            .collect();
        assert_eq!(
            deps,
            [vec![], vec![], vec![0, 1], vec![0, 1], vec![2, 3], vec![4]]
        );
    }

    #[test]
    fn an_empty_phase_passes_its_barrier_on() {
        let app = AppState {
            volumes: Vec::new(),
            secrets: Default::default(),
            ..cp()
        };
        let d = destroy("lab", &[app]).expect("plan");
        let last = d.plan.steps.last().expect("app step");
        assert!(matches!(last.action, Action::DeleteApp { .. }));
        assert_eq!(last.depends_on, [StepId(0), StepId(1)]);
    }

    #[test]
    fn machines_of_every_app_go_before_any_volume() {
        let ng = AppState {
            app: "lab-ng-web".into(),
            machines: vec![machine("c3", "worker-ng-web-0", Some("lab"))],
            volumes: vec![volume("vol_3", "z1")],
            secrets: Default::default(),
        };
        let d = destroy("lab", &[cp(), ng]).expect("plan");
        let kinds: Vec<usize> = d
            .plan
            .steps
            .iter()
            .filter_map(|s| removal_kind(&s.action))
            .collect();
        assert_eq!(kinds, [0, 0, 0, 1, 1, 1, 2, 3, 3]);
        assert_eq!(d.plan.app, "lab-cp, lab-ng-web");
    }

    #[test]
    fn a_foreign_machine_stops_the_plan_and_is_named() {
        let mut app = cp();
        app.machines.push(machine("f1", "web", None));
        let text = destroy("lab", &[app]).expect_err("foreign").to_string();
        assert!(
            text.contains("f1") && text.contains("lab-cp") && text.contains("no fks_cluster"),
            "{text}"
        );
        let mut other = cp();
        other.machines = vec![machine("c3", "ctrl-0", Some("lab2"))];
        assert!(destroy("lab", &[other])
            .expect_err("other cluster")
            .to_string()
            .contains("fks_cluster=lab2"));
    }

    #[test]
    fn an_app_that_only_matches_by_name_is_left_alone() {
        let empty = AppState {
            app: "lab-ng-x".into(),
            secrets: ["DATABASE_URL".to_string()].into(),
            ..AppState::default()
        };
        let d = destroy("lab", std::slice::from_ref(&empty)).expect("plan");
        assert!(d.plan.is_empty());
        assert_eq!(d.unclaimed, ["lab-ng-x"]);
        for secret in ["K3S_TOKEN", "FKS_WORKER_NG_X_0_SSH_HOST_ED25519_KEY"] {
            let ours = AppState {
                secrets: [secret.to_string()].into(),
                ..empty.clone()
            };
            assert!(claimed(&ours), "{secret}");
        }
        let only_destroyed = AppState {
            machines: vec![Machine {
                state: MachineState::Destroyed,
                ..machine("d1", "worker-ng-x-0", Some("lab"))
            }],
            ..empty
        };
        assert!(!claimed(&only_destroyed));
    }

    #[test]
    fn the_dry_run_text_lists_every_removal_with_its_dependencies() {
        let d = destroy("lab", &[cp()]).expect("plan");
        let text = d.plan.to_string();
        assert!(
            text.contains("[0]  ctrl-0: remove machine a1 in app lab-cp"),
            "{text}"
        );
        assert!(text.contains("remove app lab-cp  (after [4])"), "{text}");
        assert!(text.contains("6 steps, 6 changes on Fly"), "{text}");
    }
}
