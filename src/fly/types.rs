//! Wire types of the Fly Machines API: the JSON bodies of apps, volumes, machines, leases,
//! metadata, app secrets and errors, shared by the client and the lab server.
//!
//! Pure: serde types and small helpers only; no tokio, no network, no clock.
//!
//! Decoding is lenient on purpose (reference fly-machines-api.md §1, §8.12): unknown fields are
//! ignored, most fields are optional and accept an explicit `null`, durations are Go duration
//! strings or integer nanoseconds, and `autostop` is a bool or a string. `MachineConfig` (and
//! the structs inside it) keep fields they do not know in `extra`, because an update replaces
//! the whole config (§8.6) and must not drop what Fly added.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

pub use super::duration::GoDuration;

/// Reads an explicit `null` as the type's default (serde's `default` only covers a missing field).
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A string-valued enum with a fallback for values this code does not know yet.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this client does not know; kept verbatim.
            Unknown(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Unknown(s) => s,
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($text => $name::$variant,)*
                    _ => $name::Unknown(s),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::from(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                match v {
                    $name::Unknown(s) => s,
                    other => other.as_str().to_string(),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

open_enum! {
    /// A Machine's state (reference §3).
    MachineState {
        /// Made but never started (also the state a create returns with).
        Created => "created",
        /// Being made.
        Creating => "creating",
        /// Booting.
        Starting => "starting",
        /// Running.
        Started => "started",
        /// Shutting down.
        Stopping => "stopping",
        /// Shut down; the rootfs is reset at the next start.
        Stopped => "stopped",
        /// Being snapshotted.
        Suspending => "suspending",
        /// Snapshotted.
        Suspended => "suspended",
        /// Stop-then-start in progress.
        Restarting => "restarting",
        /// A new config version is being applied.
        Updating => "updating",
        /// A new version replaces this one.
        Replacing => "replacing",
        /// Old version after an update.
        Replaced => "replaced",
        /// Being destroyed.
        Destroying => "destroying",
        /// Gone.
        Destroyed => "destroyed",
        /// The process failed.
        Failed => "failed",
        /// The launch failed for good.
        LaunchFailed => "launch_failed",
        /// Old copy after a host move.
        Migrated => "migrated",
    }
}

impl MachineState {
    /// True for states a Machine moves out of on its own (reference §3).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MachineState::Creating
                | MachineState::Starting
                | MachineState::Stopping
                | MachineState::Suspending
                | MachineState::Restarting
                | MachineState::Updating
                | MachineState::Replacing
                | MachineState::Destroying
                | MachineState::LaunchFailed
        )
    }
}

impl Default for MachineState {
    fn default() -> Self {
        MachineState::Unknown(String::new())
    }
}

open_enum! {
    /// A volume's state (reference §2.2).
    VolumeState {
        /// Being made.
        Creating => "creating",
        /// Ready.
        Created => "created",
        /// Growing.
        Extending => "extending",
        /// Restoring from a snapshot.
        Restoring => "restoring",
        /// Fork source being exported.
        EnablingRemoteExport => "enabling_remote_export",
        /// Fork target filling (mountable).
        Hydrating => "hydrating",
        /// Recovering.
        Recovering => "recovering",
        /// Destroy requested.
        SchedulingDestroy => "scheduling_destroy",
        /// Soft-deleted for 24 h.
        PendingDestroy => "pending_destroy",
        /// Fork clean-up.
        ForkCleanup => "fork_cleanup",
        /// Waiting for the Machine to let go.
        WaitingForDetach => "waiting_for_detach",
        /// Being destroyed.
        Destroying => "destroying",
        /// Gone.
        Destroyed => "destroyed",
    }
}

impl VolumeState {
    /// True for the states fly-go's `GetVolumes` drops: the volume is on its way out and must
    /// not be reused (reference §2.2).
    pub fn is_being_destroyed(&self) -> bool {
        matches!(
            self,
            VolumeState::SchedulingDestroy
                | VolumeState::PendingDestroy
                | VolumeState::ForkCleanup
                | VolumeState::WaitingForDetach
                | VolumeState::Destroying
                | VolumeState::Destroyed
        )
    }
}

impl Default for VolumeState {
    fn default() -> Self {
        VolumeState::Unknown(String::new())
    }
}

open_enum! {
    /// `restart.policy` (reference §2.4, §8.15: the API spells it `on-failure`).
    RestartPolicy {
        /// Never restart.
        No => "no",
        /// Always restart.
        Always => "always",
        /// Restart when the process exits non-zero.
        OnFailure => "on-failure",
        /// GPU spot pricing.
        SpotPrice => "spot-price",
    }
}

/// A string that must never be printed or logged (app secret values, API tokens).
/// `Debug` and `Display` show `<redacted>`; serde reads and writes the plain string.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString(s)
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        SecretString(s.to_string())
    }
}

/// `services[].autostop`: `"off" | "stop" | "suspend"` or a bool; Fly answers with a bool for
/// off/stop (reference §2.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Autostop {
    /// `true` = stop, `false` = off.
    Bool(bool),
    /// `off`, `stop`, `suspend` or a newer mode.
    Mode(String),
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Fly's error body: `{"error": "...", "status": "name_taken", "message": "..."}` (reference §1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A machine-readable code: `unknown`, `insufficient_capacity`, `name_taken`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Preferred over `error` when present (fly-go does the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Deprecated free-form details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ErrorBody {
    /// An error body with just a text.
    pub fn new(error: impl Into<String>) -> Self {
        ErrorBody {
            error: Some(error.into()),
            ..ErrorBody::default()
        }
    }

    /// An error body with a text and a status code.
    pub fn with_status(error: impl Into<String>, status: impl Into<String>) -> Self {
        ErrorBody {
            error: Some(error.into()),
            status: Some(status.into()),
            ..ErrorBody::default()
        }
    }

    /// The text to show: `message`, else `error`, else empty.
    pub fn text(&self) -> &str {
        self.message
            .as_deref()
            .filter(|m| !m.is_empty())
            .or(self.error.as_deref())
            .unwrap_or("")
    }
}

// ---------------------------------------------------------------------------------------------
// Apps
// ---------------------------------------------------------------------------------------------

/// The organization an app belongs to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppOrganization {
    /// Display name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Slug used in `org_slug`.
    #[serde(default, deserialize_with = "null_default")]
    pub slug: String,
    /// Numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_numeric_id: Option<i64>,
}

/// An app (reference §2.1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct App {
    /// 16 lowercase alphanumerics; paths use the name, not this.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// The globally unique app name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// `pending`, `deployed`, `suspended`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Owning organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<AppOrganization>,
    /// Custom 6PN network name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_numeric_id: Option<i64>,
    /// Number of Machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_count: Option<u64>,
    /// Number of volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_count: Option<u64>,
}

/// `POST /apps`. Fly has spelled the name field `app_name` and `name`; the client sends both
/// with the same value, and [`CreateAppRequest::app_name`] reads whichever is set (§8.2).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CreateAppRequest {
    /// The app name (current spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The app name (older spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// Organization slug (`personal` works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_slug: Option<String>,
    /// Custom 6PN network; isolates the app from the org's other apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Enable `<machine>.<app>.fly.dev` subdomains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_subdomains: Option<bool>,
    /// App role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role_id: Option<String>,
}

impl CreateAppRequest {
    /// A request for `name` in `org_slug`, with both name spellings set.
    pub fn new(name: impl Into<String>, org_slug: impl Into<String>) -> Self {
        let name = name.into();
        CreateAppRequest {
            name: Some(name.clone()),
            app_name: Some(name),
            org_slug: Some(org_slug.into()),
            ..CreateAppRequest::default()
        }
    }

    /// The requested name, whichever field carries it (`name` wins).
    pub fn app_name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(self.app_name.as_deref().filter(|n| !n.is_empty()))
    }
}

/// `GET /apps?org_slug=...`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListAppsResponse {
    /// Total number of apps.
    #[serde(default, deserialize_with = "null_default")]
    pub total_apps: u64,
    /// The apps.
    #[serde(default, deserialize_with = "null_default")]
    pub apps: Vec<App>,
}

// ---------------------------------------------------------------------------------------------
// Volumes
// ---------------------------------------------------------------------------------------------

/// A volume (reference §2.2).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Volume {
    /// `vol_` + 16 lowercase alphanumerics.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Name; several volumes may share one.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Lifecycle state.
    #[serde(default, deserialize_with = "null_default")]
    pub state: VolumeState,
    /// Size in GB.
    #[serde(default, deserialize_with = "null_default")]
    pub size_gb: u64,
    /// Region code.
    #[serde(default, deserialize_with = "null_default")]
    pub region: String,
    /// The host ("zone") the volume lives on.
    #[serde(default, deserialize_with = "null_default")]
    pub zone: String,
    /// Encrypted at rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// The Machine that mounts it, if any.
    #[serde(default)]
    pub attached_machine_id: Option<String>,
    /// Usually null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_alloc_id: Option<String>,
    /// RFC3339 with milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Filesystem type (`ext4`, `raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Snapshot retention in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<u32>,
    /// Daily snapshots on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
    /// Block size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// Block count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
    /// Free blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_free: Option<u64>,
    /// Available blocks (0 until first mounted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_avail: Option<u64>,
    /// Total bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Used bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_used: Option<u64>,
    /// `ok`, `unknown`, `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_status: Option<String>,
    /// Dedicated host id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    /// `local` or `cache`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `POST /apps/{app}/volumes`. fly-go sends unset fields as `null`, which decodes as `None`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CreateVolumeRequest {
    /// Letters, digits and `_` only.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Region code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Size in GB (Fly's default 3, max 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<u64>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// Default true: a host with no other same-named volume of this app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_unique_zone: Option<bool>,
    /// Uniqueness over every volume of the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_zone_app_wide: Option<bool>,
    /// Restore from this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Fork this volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_id: Option<String>,
    /// Days, 1..=60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<u32>,
    /// Daily snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
    /// `ext4` or `raw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Machine size hint for placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<MachineGuest>,
    /// Image hint for placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_image: Option<String>,
}

/// `PUT /apps/{app}/volumes/{vol}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateVolumeRequest {
    /// Days, 1..=60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<u32>,
    /// Daily snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
}

/// `PUT /apps/{app}/volumes/{vol}/extend`: the new total size (grow only).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExtendVolumeRequest {
    /// New total size in GB.
    #[serde(default, deserialize_with = "null_default")]
    pub size_gb: u64,
}

/// Answer to an extend.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExtendVolumeResponse {
    /// The volume after the change.
    #[serde(default, deserialize_with = "null_default")]
    pub volume: Volume,
    /// Restart the Machine to see the space.
    #[serde(default, deserialize_with = "null_default")]
    pub needs_restart: bool,
}

// ---------------------------------------------------------------------------------------------
// Machine config
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Machines
// ---------------------------------------------------------------------------------------------

/// The resolved image of a Machine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageRef {
    /// Registry host.
    #[serde(default, deserialize_with = "null_default")]
    pub registry: String,
    /// Repository.
    #[serde(default, deserialize_with = "null_default")]
    pub repository: String,
    /// Tag.
    #[serde(default, deserialize_with = "null_default")]
    pub tag: String,
    /// Digest.
    #[serde(default, deserialize_with = "null_default")]
    pub digest: String,
    /// Image labels.
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
}

/// A Machine event; newest first, `timestamp` in ms since the epoch (§8.18).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineEvent {
    /// Event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `launch`, `start`, `stop`, `exit`, `update`, `destroy`, ...
    #[serde(default, rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    /// Resulting status.
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    /// `user` or `flyd`.
    #[serde(default, deserialize_with = "null_default")]
    pub source: String,
    /// Milliseconds since the epoch.
    #[serde(default, deserialize_with = "null_default")]
    pub timestamp: i64,
    /// Request details (exit code, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
}

/// A health check result on a Machine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CheckStatus {
    /// Check name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// `passing`, `warning`, `critical`.
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    /// Check output.
    #[serde(default, deserialize_with = "null_default")]
    pub output: String,
    /// Last update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A Machine (reference §2.4 "Machine object").
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Lowercase hex id; the guest's hostname.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Unique within the app; immutable.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Current state.
    #[serde(default, deserialize_with = "null_default")]
    pub state: MachineState,
    /// Region code.
    #[serde(default, deserialize_with = "null_default")]
    pub region: String,
    /// Current version (ULID); pass it to `wait`.
    #[serde(default, deserialize_with = "null_default")]
    pub instance_id: String,
    /// Same as `instance_id` on newer servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// 6PN address; changes across moves, never cache it.
    #[serde(default, deserialize_with = "null_default")]
    pub private_ip: String,
    /// The config; missing when the host is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<MachineConfig>,
    /// What is known of the config when `host_status` is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_config: Option<MachineConfig>,
    /// The resolved image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<ImageRef>,
    /// RFC3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Events, newest first.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub events: Vec<MachineEvent>,
    /// Health check results.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub checks: Vec<CheckStatus>,
    /// Lease nonce when the create/update took a lease (`lease_ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// `ok`, `unknown`, `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_status: Option<String>,
    /// Out of Fly Proxy routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordoned: Option<bool>,
}

impl Machine {
    /// The config, or the incomplete one when the host is unreachable.
    pub fn any_config(&self) -> Option<&MachineConfig> {
        self.config.as_ref().or(self.incomplete_config.as_ref())
    }

    /// A metadata value from the config.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.any_config()
            .and_then(|c| c.metadata.get(key))
            .map(String::as_str)
    }
}

/// `POST /apps/{app}/machines`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CreateMachineRequest {
    /// The config; `image` is required.
    #[serde(default, deserialize_with = "null_default")]
    pub config: MachineConfig,
    /// Machine name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Region code, priority list (`iad,dfw`), geo alias or `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Create without starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
    /// Do not register with Fly Proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_service_registration: Option<bool>,
    /// Take a lease of this many seconds at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    /// Log-structured virtual disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsvd: Option<bool>,
    /// Do not add app secrets to env.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_secrets: Option<bool>,
    /// At least this secrets version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_secrets_version: Option<u64>,
}

/// `POST /apps/{app}/machines/{id}`: the FULL config, never a patch (§8.6).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateMachineRequest {
    /// The whole new config.
    #[serde(default, deserialize_with = "null_default")]
    pub config: MachineConfig,
    /// Refuse the update unless this is still the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Do not start after the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
    /// Do not register with Fly Proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_service_registration: Option<bool>,
    /// Take a lease of this many seconds at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    /// Do not add app secrets to env.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_secrets: Option<bool>,
    /// At least this secrets version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_secrets_version: Option<u64>,
    /// Immutable; must match when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Immutable; must match when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// `POST .../stop` body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StopRequest {
    /// Signal name; Fly's default is SIGINT unless `stop_config` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Grace period (Go duration string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

/// `POST .../start` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StartResponse {
    /// State before the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<MachineState>,
    /// Moved to another host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated: Option<bool>,
    /// The new host when migrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_host: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `{"ok": true}` answers (stop, destroy, old-style wait).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OkResponse {
    /// Success flag.
    #[serde(default, deserialize_with = "null_default")]
    pub ok: bool,
}

/// `GET .../wait` answer (older servers send only `ok`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WaitResponse {
    /// Success flag.
    #[serde(default, deserialize_with = "null_default")]
    pub ok: bool,
    /// The state reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MachineState>,
    /// The version watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The event that ended the wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// `POST .../exec`. `command` is the argv; `cmd` (one string) is deprecated but still sent by
/// fly-go, so the client fills both (reference §2.3).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// argv.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub command: Vec<String>,
    /// Deprecated single-string form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Container name for multi-container Machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// `POST .../exec` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecResponse {
    /// Standard output.
    #[serde(default, deserialize_with = "null_default")]
    pub stdout: String,
    /// Standard error.
    #[serde(default, deserialize_with = "null_default")]
    pub stderr: String,
    /// Exit code.
    #[serde(default, deserialize_with = "null_default")]
    pub exit_code: i64,
    /// Signal that ended the command, if any (0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------------

/// `POST .../lease` body; fly-go sends the TTL as `?ttl=` instead, which servers also accept.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CreateLeaseRequest {
    /// Seconds the lease is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Why the lease is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A lease (reference §2.3.2). `expires_at` is in seconds (§8.18).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Lease {
    /// Send as `fly-machine-lease-nonce` on guarded calls.
    #[serde(default, deserialize_with = "null_default")]
    pub nonce: String,
    /// Unix seconds.
    #[serde(default, deserialize_with = "null_default")]
    pub expires_at: i64,
    /// Holder (email or `<uuid>@tokens.fly.io`).
    #[serde(default, deserialize_with = "null_default")]
    pub owner: String,
    /// Why it is held.
    #[serde(default, deserialize_with = "null_default")]
    pub description: String,
    /// The Machine version it was taken on.
    #[serde(default, deserialize_with = "null_default")]
    pub version: String,
}

/// The lease envelope `{status, data, message, code}` (§8.1: not a bare Lease).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// `success` when the lease is held.
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    /// The lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Lease>,
    /// Error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------

/// `GET .../metadata/{key}` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetadataValue {
    /// The value.
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
}

/// `POST .../metadata/{key}` body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpsertMetadataRequest {
    /// The new value.
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
    /// Optimistic concurrency stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// `PUT`/`PATCH .../metadata` body: a `null` or `""` value deletes the key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateMetadataRequest {
    /// Keys to set (Some) or delete (None).
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: BTreeMap<String, Option<String>>,
    /// 412 when stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_version: Option<String>,
    /// Optimistic concurrency stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// App secrets
// ---------------------------------------------------------------------------------------------

/// An app secret as listed. A list never carries values; `value` is only filled by a get with
/// `show_secrets`, and is a [`SecretString`] so it cannot be printed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppSecret {
    /// Secret name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Digest of the value.
    #[serde(default, deserialize_with = "null_default")]
    pub digest: String,
    /// RFC3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The value, only when explicitly asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<SecretString>,
}

/// `GET /apps/{app}/secrets` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppSecrets {
    /// The secrets, without values.
    #[serde(default, deserialize_with = "null_default")]
    pub secrets: Vec<AppSecret>,
}

/// `POST /apps/{app}/secrets/{name}` body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SetAppSecretRequest {
    /// The value.
    #[serde(default, deserialize_with = "null_default")]
    pub value: SecretString,
}

/// `POST /apps/{app}/secrets/{name}` answer (201). Any echoed value is not kept.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SetAppSecretResponse {
    /// Secret name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Digest of the value.
    #[serde(default, deserialize_with = "null_default")]
    pub digest: String,
    /// RFC3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The app's secrets version after the change (use as `min_secrets_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `POST /apps/{app}/secrets` body: set (Some) or unset (None) several secrets at once.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppSecretsUpdateRequest {
    /// Values by name.
    #[serde(default, deserialize_with = "null_default")]
    pub values: BTreeMap<String, Option<SecretString>>,
}

/// `POST /apps/{app}/secrets` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppSecretsUpdateResponse {
    /// The secrets after the change, without values.
    #[serde(default, deserialize_with = "null_default")]
    pub secrets: Vec<AppSecret>,
    /// The app's secrets version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `DELETE /apps/{app}/secrets/{name}` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeleteAppSecretResponse {
    /// The app's secrets version after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Query parameters
// ---------------------------------------------------------------------------------------------

/// Filters of `GET /apps/{app}/machines` (reference §2.3). Pure: turns into query pairs; the
/// client does the percent-encoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MachineListFilter {
    /// Include destroyed Machines.
    pub include_deleted: bool,
    /// Only this region.
    pub region: Option<String>,
    /// Only these states (sent comma-separated).
    pub states: Vec<MachineState>,
    /// Drop config, checks, events and nonce from the answer.
    pub summary: bool,
    /// `metadata.<key>=<value>` filters, all of which must match.
    pub metadata: BTreeMap<String, String>,
}

impl MachineListFilter {
    /// A filter on one metadata key.
    pub fn metadata(key: impl Into<String>, value: impl Into<String>) -> Self {
        let mut f = MachineListFilter::default();
        f.metadata.insert(key.into(), value.into());
        f
    }

    /// The query pairs, unencoded, in a stable order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        if self.include_deleted {
            pairs.push(("include_deleted".to_string(), "true".to_string()));
        }
        if let Some(region) = &self.region {
            pairs.push(("region".to_string(), region.clone()));
        }
        if !self.states.is_empty() {
            let states: Vec<&str> = self.states.iter().map(MachineState::as_str).collect();
            pairs.push(("state".to_string(), states.join(",")));
        }
        if self.summary {
            pairs.push(("summary".to_string(), "true".to_string()));
        }
        for (k, v) in &self.metadata {
            pairs.push((format!("metadata.{k}"), v.clone()));
        }
        pairs
    }

    /// True when `machine` passes every filter (what the server does; the lab and tests use it).
    pub fn matches(&self, machine: &Machine) -> bool {
        if !self.include_deleted && machine.state == MachineState::Destroyed {
            return false;
        }
        if let Some(region) = &self.region {
            if &machine.region != region {
                return false;
            }
        }
        if !self.states.is_empty() && !self.states.contains(&machine.state) {
            return false;
        }
        self.metadata
            .iter()
            .all(|(k, v)| machine.metadata(k) == Some(v.as_str()))
    }
}

#[cfg(test)]
#[path = "types_tests.rs"]
mod tests;
