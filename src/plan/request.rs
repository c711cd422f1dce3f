//! The Fly requests a plan sends: the volume and machine create bodies of one node, built from
//! the config (reference fly-machines-api.md §2.2, §2.4; k3s-sh-behaviour.md "Operator side").
//!
//! Pure. Must not: put a secret value into a request. The join token reaches a joining node
//! only as a machine file with `secret_name` (the platform writes it from the app secret).

use std::collections::BTreeMap;

use base64::Engine;

use crate::config::Config;
use crate::contract::path::TOKEN_FILE;
use crate::fly::types::{
    CreateMachineRequest, CreateVolumeRequest, MachineConfig, MachineFile, MachineGuest,
    MachineInit, MachineMount, MachineRestart, RestartPolicy,
};

use super::{Ref, Role, Target, META_CLUSTER, META_NODE, META_ROLE, TOKEN_SECRET};

// The names machines and operator share live in `contract`; these are their plan-side names.
pub use crate::contract::env::{
    BOOTSTRAP_MACHINE_ID as ENV_BOOTSTRAP_MACHINE_ID, BOOTSTRAP_NODE_ID as ENV_BOOTSTRAP_INDEX,
    CLUSTER as ENV_CLUSTER, NODE_NAME as ENV_NODE, REGION as ENV_REGION, ROLE as ENV_ROLE,
    ZONE as ENV_ZONE,
};
pub use crate::contract::path::{CLUSTER_CONFIG as CLUSTER_CONFIG_PATH, DATA_MOUNT};
pub use crate::contract::INIT_EXEC;

/// The volume of a node: `VOLUME_NAME` in `REGION`, `VOLUME_SIZE` GB, daily snapshots off as
/// k3s.sh had them, and a compute hint so the volume's host can also run the machine.
pub fn volume_request(config: &Config, target: &Target, unique_zone: bool) -> CreateVolumeRequest {
    let vm = match target {
        Target::ControlPlane { .. } => &config.cp_vm,
        Target::NodeGroup { .. } => &config.worker_vm,
    };
    CreateVolumeRequest {
        name: config.volume_name.clone(),
        region: Some(config.region.clone()),
        size_gb: Some(u64::from(config.volume_size_gb)),
        require_unique_zone: Some(unique_zone),
        auto_backup_enabled: Some(false),
        compute: Some(guest(vm)),
        ..CreateVolumeRequest::default()
    }
}

fn guest(vm: &crate::config::VmSpec) -> MachineGuest {
    MachineGuest {
        cpu_kind: Some(vm.cpu_kind.as_str().to_string()),
        cpus: Some(vm.cpus),
        memory_mb: Some(vm.memory_mb),
        ..MachineGuest::default()
    }
}

/// The cluster config as a machine file: every setting as `KEY=VALUE` lines (the shell
/// format the config loader reads), base64 in `raw_value` as Fly wants it.
pub fn cluster_config_file(config: &Config) -> MachineFile {
    let text: String = config
        .entries()
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    MachineFile {
        guest_path: CLUSTER_CONFIG_PATH.to_string(),
        raw_value: Some(base64::engine::general_purpose::STANDARD.encode(text)),
        mode: Some(0o644),
        ..MachineFile::default()
    }
}

/// The machine of node `name`. `volume` and `bootstrap` are filled in when known; a `Ref::Step`
/// is completed by `run` (mount id, `FKS_ZONE`, `FKS_BOOTSTRAP_MACHINE_ID`).
#[allow(clippy::too_many_arguments)]
pub fn machine_request(
    config: &Config,
    target: &Target,
    bootstrap_index: Option<u32>,
    name: &str,
    role: Role,
    volume: &Ref,
    zone: Option<&str>,
    bootstrap: Option<&Ref>,
    node_files: &[MachineFile],
) -> CreateMachineRequest {
    let vm = match target {
        Target::ControlPlane { .. } => &config.cp_vm,
        Target::NodeGroup { .. } => &config.worker_vm,
    };
    let mut env = BTreeMap::new();
    env.insert(ENV_CLUSTER.to_string(), config.cluster_name.clone());
    env.insert(ENV_NODE.to_string(), name.to_string());
    env.insert(ENV_ROLE.to_string(), role.as_str().to_string());
    env.insert(ENV_REGION.to_string(), config.region.clone());
    if let Some(zone) = zone {
        env.insert(ENV_ZONE.to_string(), zone.to_string());
    }
    if let Some(i) = bootstrap_index {
        env.insert(ENV_BOOTSTRAP_INDEX.to_string(), i.to_string());
    }
    if role == Role::Server {
        if let Some(Ref::Known(id)) = bootstrap {
            env.insert(ENV_BOOTSTRAP_MACHINE_ID.to_string(), id.clone());
        }
    }
    let mut files = vec![cluster_config_file(config)];
    files.extend(node_files.iter().cloned());
    if role != Role::BootstrapServer {
        // The platform writes the app secret into this file; the value never passes here.
        files.push(MachineFile {
            guest_path: TOKEN_FILE.to_string(),
            secret_name: Some(TOKEN_SECRET.to_string()),
            mode: Some(0o600),
            ..MachineFile::default()
        });
    }
    let mut metadata = BTreeMap::new();
    metadata.insert(META_CLUSTER.to_string(), config.cluster_name.clone());
    metadata.insert(META_NODE.to_string(), name.to_string());
    metadata.insert(META_ROLE.to_string(), role.as_str().to_string());
    let mount_volume = match volume {
        Ref::Known(id) => id.clone(),
        Ref::Step(_) => String::new(),
    };
    CreateMachineRequest {
        name: Some(name.to_string()),
        region: Some(config.region.clone()),
        config: MachineConfig {
            // Filled in by `plan` from `Options::image` (the digest `image::ensure` pinned).
            image: String::new(),
            guest: Some(guest(vm)),
            init: Some(MachineInit {
                exec: Some(INIT_EXEC.iter().map(|s| s.to_string()).collect()),
                ..MachineInit::default()
            }),
            env,
            files,
            restart: Some(MachineRestart {
                policy: Some(RestartPolicy::Always),
                ..MachineRestart::default()
            }),
            mounts: vec![MachineMount {
                volume: mount_volume,
                path: DATA_MOUNT.to_string(),
                ..MachineMount::default()
            }],
            metadata,
            ..MachineConfig::default()
        },
        // Fly adds every app secret to env unless told not to (reference
        // fly-machines-api.md §3 `env`); the join token must reach the node only as a file.
        skip_secrets: Some(true),
        ..CreateMachineRequest::default()
    }
}
