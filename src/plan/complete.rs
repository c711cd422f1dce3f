//! What a planned step cannot know until the steps before it ran, and how it is filled in.
//! A machine create planned in the same run as its volume learns the volume's id and zone
//! from the volume step; a joining server learns the bootstrap server's machine id; every
//! create gets a fresh idempotency id and asks for at least the secrets version the writes
//! before it made. [`Action::inputs`] names the steps an action reads; [`machine_request`]
//! completes a create from their outputs. `run` calls these and adds nothing of its own.
//!
//! Pure: no tokio, no network, no clock (the idempotency id is made by the caller).

use crate::contract::meta::LAUNCH_ID as LAUNCH_ID_KEY;
use crate::fly::types::{CreateMachineRequest, Volume};

use super::{Action, Ref, Role, StepId, ENV_BOOTSTRAP_MACHINE_ID, ENV_ZONE, META_ROLE};

impl Action {
    /// The earlier steps whose outputs this action reads (a machine or volume they made, the
    /// token they read), besides the secrets writes among its dependencies.
    pub fn inputs(&self) -> Vec<StepId> {
        let step = |r: &Ref| match r {
            Ref::Step(s) => Some(*s),
            Ref::Known(_) => None,
        };
        match self {
            Action::CreateMachine {
                volume, bootstrap, ..
            } => step(volume)
                .into_iter()
                .chain(bootstrap.as_ref().and_then(step))
                .collect(),
            Action::StartMachine { machine }
            | Action::UpdateMachine { machine, .. }
            | Action::WaitStarted { machine }
            | Action::MarkReady { machine }
            | Action::SetMetadata { machine, .. }
            | Action::DestroyMachine { machine }
            | Action::ReadToken { from: machine } => step(&machine.id).into_iter().collect(),
            Action::WaitK3sReadyAgain {
                machine,
                via,
                before,
                ..
            } => step(&machine.id)
                .into_iter()
                .chain(step(&via.id))
                .chain(Some(*before))
                .collect(),
            Action::Taint {
                machine,
                via,
                fallback,
            } => step(&machine.id)
                .into_iter()
                .chain(step(&via.id))
                .chain(fallback.iter().filter_map(|f| step(&f.id)))
                .collect(),
            Action::WaitK3sReady { machine, via }
            | Action::ReadBoot { machine, via }
            | Action::Cordon { machine, via }
            | Action::Uncordon { machine, via }
            | Action::Drain { machine, via }
            | Action::DeleteNode { machine, via }
            | Action::WaitMemberHealthy { machine, via } => {
                step(&machine.id).into_iter().chain(step(&via.id)).collect()
            }
            Action::SetTokenSecret { token, .. } => vec![*token],
            Action::RemoveMember { via, .. } | Action::RemoveMembersOf { via, .. } => {
                step(&via.id).into_iter().collect()
            }
            Action::CreateApp { .. }
            | Action::CreateVolume { .. }
            | Action::SetFileSecrets { .. }
            | Action::DeleteVolume { .. }
            | Action::DeleteSecret { .. }
            | Action::DeleteApp { .. } => Vec::new(),
        }
    }
}

/// Completes a planned machine create: the volume made by an earlier step (mount and
/// `FKS_ZONE`), the bootstrap server's machine id for a joining server
/// (`FKS_BOOTSTRAP_MACHINE_ID`), the idempotency id (reference fly-machines-api.md §5), and
/// the lowest secrets version the machine must boot with.
///
/// Fly's secret store is eventually consistent: a machine made right after a secrets write
/// may boot with an older version unless it asks for at least the written one, as flyctl does
/// with the `version` of every write (reference fly-runtime.md §6; fly-machines-api.md §3
/// "min_secrets_version").
pub fn machine_request(
    mut request: CreateMachineRequest,
    made_volume: Option<&Volume>,
    bootstrap_id: Option<&str>,
    launch_id: String,
    min_secrets_version: Option<u64>,
) -> CreateMachineRequest {
    if let Some(v) = made_volume {
        if let Some(mount) = request.config.mounts.first_mut() {
            mount.volume = v.id.clone();
        }
        request
            .config
            .env
            .insert(ENV_ZONE.to_string(), v.zone.clone());
    }
    let server =
        request.config.metadata.get(META_ROLE).map(String::as_str) == Some(Role::Server.as_str());
    if let (Some(id), true) = (bootstrap_id, server) {
        request
            .config
            .env
            .insert(ENV_BOOTSTRAP_MACHINE_ID.to_string(), id.to_string());
    }
    request
        .config
        .metadata
        .insert(LAUNCH_ID_KEY.to_string(), launch_id);
    request.min_secrets_version = min_secrets_version;
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::types::{MachineConfig, MachineMount};
    use crate::plan::MachineRef;

    fn planned(role: &str) -> CreateMachineRequest {
        let mut config = MachineConfig::default();
        config
            .metadata
            .insert(META_ROLE.to_string(), role.to_string());
        config.mounts.push(MachineMount {
            path: "/data".into(),
            ..MachineMount::default()
        });
        CreateMachineRequest {
            config,
            ..CreateMachineRequest::default()
        }
    }

    #[test]
    fn a_create_learns_its_volume_bootstrap_launch_id_and_secrets_version() {
        let v = Volume {
            id: "vol_1".into(),
            zone: "z2".into(),
            ..Volume::default()
        };
        let r = machine_request(
            planned("server"),
            Some(&v),
            Some("b00t"),
            "l1".into(),
            Some(7),
        );
        assert_eq!(r.config.mounts[0].volume, "vol_1");
        assert_eq!(r.config.env[ENV_ZONE], "z2");
        assert_eq!(r.config.env[ENV_BOOTSTRAP_MACHINE_ID], "b00t");
        assert_eq!(r.config.metadata[LAUNCH_ID_KEY], "l1");
        assert_eq!(r.min_secrets_version, Some(7));
    }

    #[test]
    fn only_a_joining_server_gets_the_bootstrap_id_and_a_known_volume_stays() {
        let mut known = planned("agent");
        known.config.mounts[0].volume = "vol_k".into();
        let r = machine_request(known, None, Some("b00t"), "l2".into(), None);
        assert_eq!(r.config.mounts[0].volume, "vol_k");
        assert!(!r.config.env.contains_key(ENV_BOOTSTRAP_MACHINE_ID));
        assert!(!r.config.env.contains_key(ENV_ZONE));
        assert_eq!(r.min_secrets_version, None);
    }

    #[test]
    fn inputs_name_the_steps_an_action_reads() {
        let made = MachineRef {
            app: "a".into(),
            id: Ref::Step(StepId(3)),
        };
        let known = MachineRef {
            app: "a".into(),
            id: Ref::Known("m1".into()),
        };
        let wait = Action::WaitK3sReady {
            machine: made.clone(),
            via: known.clone(),
        };
        assert_eq!(wait.inputs(), [StepId(3)]);
        let create = Action::CreateMachine {
            app: "a".into(),
            request: Box::new(planned("server")),
            volume: Ref::Step(StepId(1)),
            bootstrap: Some(Ref::Step(StepId(2))),
        };
        assert_eq!(create.inputs(), [StepId(1), StepId(2)]);
        assert_eq!(Action::MarkReady { machine: known }.inputs(), []);
    }
}
