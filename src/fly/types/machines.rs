//! Machine, lease and metadata bodies and the list filter (reference fly-machines-api.md
//! §2.3). Pure serde types and helpers.

use super::*;

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
