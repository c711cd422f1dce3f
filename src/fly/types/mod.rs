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

mod apps;
mod config;
mod machines;
mod secrets;
mod volumes;

pub use apps::*;
pub use config::*;
pub use machines::*;
pub use secrets::*;
pub use volumes::*;

#[cfg(test)]
mod tests;
