//! Volume bodies (reference fly-machines-api.md §2.2). Pure serde types.

use super::*;

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
