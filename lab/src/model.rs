//! The lab's stored records (apps, volumes, machines, leases, events) and the in-memory
//! `State` that holds them. These are the lab's own persistence records; the machine config is
//! the product's wire type `fly::MachineConfig` (its `extra` maps keep unknown fields), and
//! responses are rendered into wire types in `api::render`. Pure: no I/O, no clock.

use fks_bootstrap::fly::MachineConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An app as the lab stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    pub name: String,
    pub org_slug: String,
    /// Custom 6PN network name, if the app was created with one.
    pub network: Option<String>,
    pub created_at_ms: u64,
}

/// A volume as the lab stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub app: String,
    pub name: String,
    pub state: String,
    pub size_gb: u64,
    pub region: String,
    pub zone: String,
    pub encrypted: bool,
    pub fstype: String,
    pub snapshot_retention: u64,
    pub auto_backup_enabled: bool,
    pub attached_machine_id: Option<String>,
    pub created_at_ms: u64,
}

/// A lease on a machine (reference §2.3.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub nonce: String,
    /// Unix seconds, as Fly reports it.
    pub expires_at: u64,
    pub owner: String,
    pub description: String,
    pub version: String,
}

/// A machine event, newest first in `Machine::events` (reference §2.4).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub source: String,
    pub timestamp: u64,
    /// For `exit` events: the main process's exit code (128 + signal when killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// How many events a machine keeps: Fly's events endpoint returns at most 50.
pub const MAX_EVENTS: usize = 50;

/// A machine as the lab stores it. `config` keeps fields the lab does not know in its `extra`
/// maps, so they round-trip unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    pub app: String,
    pub name: String,
    pub state: String,
    pub region: String,
    pub zone: String,
    pub instance_id: String,
    pub private_ip: String,
    pub config: MachineConfig,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub events: Vec<Event>,
    pub lease: Option<Lease>,
    pub cordoned: bool,
    /// The state the machine is heading to; picked up again after a restart of the lab.
    pub target: Option<String>,
    /// `skip_secrets` of the last create or update: when false, the guest gets every app
    /// secret in its env, as on Fly (reference fly-machines-api.md §3 `env`).
    #[serde(default)]
    pub skip_secrets: bool,
    /// Which host of its zone the machine runs on: 0 where it was created, bumped by every
    /// migration (`migration`). The 6PN host field is derived from zone and host, so a moved
    /// machine gets a new address (reference fly-runtime.md §4).
    #[serde(default)]
    pub host: u32,
    /// A migration under way: the machine is stopping for it, and is moved once stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Migration>,
    /// In guests mode, the manifest digest `config.image` resolved to when the create or update
    /// pulled it: starts run that image from the rootfs cache, so a tag that moves or a
    /// registry that is down later cannot fail a start (reference/fly-runtime.md §2: Fly pins
    /// the digest it pulled; `image_ref.digest` in the API, fly-machines-api.md §2.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

/// A pending migration of a machine to another host (reference fly-runtime.md §4
/// "Migration": stop, fork the volume, start with the same id and a new 6PN address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// The machine version when the migration began: a user update since then (a new version)
    /// cancels the move, as the update's own start wins.
    pub instance_id: String,
    /// Who asked: `lab api` or `lab fault`, for the log.
    pub cause: String,
}

impl Machine {
    /// Record an event, newest first, keeping at most `MAX_EVENTS`.
    pub fn push_event(&mut self, event: Event) {
        self.events.insert(0, event);
        self.events.truncate(MAX_EVENTS);
    }

    /// The metadata map inside the config (`config.metadata`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.config.metadata
    }

    /// The volume id mounted by this machine, if any (`config.mounts[0].volume`).
    pub fn mounted_volume(&self) -> Option<String> {
        mounted_volume(&self.config)
    }
}

/// The volume id in `config.mounts[0].volume`.
pub fn mounted_volume(config: &MachineConfig) -> Option<String> {
    config.mounts.first().map(|m| m.volume.clone())
}

/// Everything the lab knows about one app.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppState {
    pub app: Option<App>,
    pub volumes: BTreeMap<String, Volume>,
    pub machines: BTreeMap<String, Machine>,
}

/// One journal record: a full upsert or a removal. Replaying records in order rebuilds the
/// state; replaying one twice is harmless.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Record {
    App(App),
    AppDeleted { name: String },
    Volume(Volume),
    VolumeDeleted { app: String, id: String },
    Machine(Box<Machine>),
    Boot { boots: u64 },
}

/// The whole persistent state of the lab.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub apps: BTreeMap<String, AppState>,
    /// How many times the lab has started on this state dir; mixed into the id seed so a
    /// restart with the same `--seed` never hands out an id twice.
    pub boots: u64,
}

impl State {
    /// Apply one record.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::App(app) => {
                let name = app.name.clone();
                self.apps.entry(name).or_default().app = Some(app);
            }
            Record::AppDeleted { name } => {
                self.apps.remove(&name);
            }
            Record::Volume(v) => {
                let (app, id) = (v.app.clone(), v.id.clone());
                self.apps.entry(app).or_default().volumes.insert(id, v);
            }
            Record::VolumeDeleted { app, id } => {
                if let Some(a) = self.apps.get_mut(&app) {
                    a.volumes.remove(&id);
                }
            }
            Record::Machine(m) => {
                let (app, id) = (m.app.clone(), m.id.clone());
                self.apps.entry(app).or_default().machines.insert(id, *m);
            }
            Record::Boot { boots } => self.boots = boots,
        }
    }

    /// The app's state, only if the app exists.
    pub fn app(&self, name: &str) -> Option<&AppState> {
        self.apps.get(name).filter(|a| a.app.is_some())
    }

    /// Mutable access to the app's state, only if the app exists.
    pub fn app_mut(&mut self, name: &str) -> Option<&mut AppState> {
        self.apps.get_mut(name).filter(|a| a.app.is_some())
    }
}
