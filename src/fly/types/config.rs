//! The Machine config and the structs inside it (reference fly-machines-api.md §2.4). Pure
//! serde types; every struct keeps unknown fields in `extra` because an update replaces the
//! whole config (§8.6).

use super::*;

/// `config.guest`: the VM size (reference §2.4, §6).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineGuest {
    /// `shared` or `performance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kind: Option<String>,
    /// vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Memory in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// GPU model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_kind: Option<String>,
    /// Kernel command line additions.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub kernel_args: Vec<String>,
    /// Dedicated host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    /// Memory ceiling for ballooning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u32>,
    /// Fields this client does not model, kept for updates.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.init`: what the guest runs (reference §2.4).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineInit {
    /// Replaces every other start command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// Overrides the image ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Allocate a TTY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    /// Swap size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_size_mb: Option<u32>,
    /// Fields this client does not model, kept for updates.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.files[]`: a file written into the guest before the process starts. Exactly one of
/// `raw_value` (base64) and `secret_name` (an app secret holding base64) is set. `Debug` shows
/// only the length of `raw_value`: files may carry keys.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineFile {
    /// Absolute path in the guest.
    #[serde(default, deserialize_with = "null_default")]
    pub guest_path: String,
    /// Base64 content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_value: Option<String>,
    /// Name of an app secret whose value is the base64 content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// chmod bits as an integer (e.g. 384 = 0o600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Fields this client does not model, kept for updates.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for MachineFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineFile")
            .field("guest_path", &self.guest_path)
            .field(
                "raw_value",
                &self
                    .raw_value
                    .as_ref()
                    .map(|v| format!("<{} bytes>", v.len())),
            )
            .field("secret_name", &self.secret_name)
            .field("mode", &self.mode)
            .field("extra", &self.extra)
            .finish()
    }
}

/// `config.restart`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineRestart {
    /// Policy; none means Fly's default (on-failure, 10 tries in 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RestartPolicy>,
    /// Retries for `on-failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Fields this client does not model, kept for updates.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.mounts[]` (at most one).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineMount {
    /// `vol_...` id.
    #[serde(default, deserialize_with = "null_default")]
    pub volume: String,
    /// Mount path in the guest.
    #[serde(default, deserialize_with = "null_default")]
    pub path: String,
    /// Volume name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Fields this client does not model (auto-extend settings, ...), kept for updates.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.stop_config`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StopConfig {
    /// Signal name, e.g. `SIGTERM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Grace period before SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

/// `config.dns`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineDns {
    /// Keep this Machine out of `.internal` DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_registration: Option<bool>,
    /// Resolver addresses.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nameservers: Vec<String>,
    /// Search domains.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub searches: Vec<String>,
    /// Guest hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Fields this client does not model, kept for updates.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.services[].ports[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachinePort {
    /// Public port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Handlers (`tls`, `http`, ...).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub handlers: Vec<String>,
    /// Fields this client does not model, kept for updates.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.services[]`: Fly Proxy config; not needed for 6PN-only traffic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineService {
    /// `tcp` or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Guest port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_port: Option<u16>,
    /// Public ports.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<MachinePort>,
    /// Proxy auto-start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// Proxy auto-stop: bool or mode string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<Autostop>,
    /// Minimum running Machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<u32>,
    /// Fields this client does not model (concurrency, checks, ...), kept for updates.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.checks.<name>`: a health check.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineCheck {
    /// `tcp` or `http`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Guest port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    /// Time a check may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// Time after start before checks count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<GoDuration>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Fields this client does not model (headers, kind, tls options), kept for updates.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A Machine's config (reference §2.4). Update replaces all of it, so fields this type does
/// not model are kept in `extra` and sent back unchanged.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineConfig {
    /// Image reference (required on create).
    #[serde(default, deserialize_with = "null_default")]
    pub image: String,
    /// VM size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<MachineGuest>,
    /// Start command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<MachineInit>,
    /// Environment (app secrets are added by Fly).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// Files written into the guest.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub files: Vec<MachineFile>,
    /// Restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<MachineRestart>,
    /// Volume mounts (at most one).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mounts: Vec<MachineMount>,
    /// String metadata; filterable with `metadata.<k>=<v>` on list.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
    /// How the Machine is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_config: Option<StopConfig>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<MachineDns>,
    /// Destroy the Machine when its process exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_destroy: Option<bool>,
    /// Fly Proxy services.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services: Vec<MachineService>,
    /// Health checks by name.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub checks: BTreeMap<String, MachineCheck>,
    /// `hourly`, `daily`, `weekly`, `monthly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Deprecated size preset name; not combined with `guest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Fields this client does not model (rootfs, processes, statics, containers, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
