//! Guests mode (`--guests`, root only): turns machines into real guests (`guest::Guest`) and
//! keeps the lab's `.internal` DNS in step with the machines (ARCHITECTURE "The lab": Guests,
//! Images, DNS). `lifecycle::drive` calls [`Runner::act`] for the transitions that really do
//! something (start, stop, suspend, restart, destroy); a monitor task per guest applies the
//! restart policy when init exits on its own. All guest calls block, so they run on
//! `spawn_blocking` threads; one async lock per machine keeps its actions in order. This file
//! must not answer HTTP, and it never writes a secret value anywhere but into the guest.

use crate::guest::{self, BridgeConfig, ExecOutput, Guest, GuestFile, GuestSpec, Signal};
use crate::lifecycle::{drive, enter};
use crate::model::{Event, Machine, Record};
use crate::rootfs::{self, pull::Puller};
use crate::{clock, dns, ids, images, lock, Lab};
use base64::Engine;
use fks_bootstrap::fly::{MachineConfig, RestartPolicy};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Fly's default stop signal (reference §2.3 stop: SIGINT unless `stop_config` says otherwise).
const DEFAULT_STOP_SIGNAL: Signal = Signal::SIGINT;
/// Fly's default grace period before SIGKILL (kill_timeout 5s).
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Fly's default `restart.max_retries` for `on-failure`.
const DEFAULT_MAX_RETRIES: u32 = 10;
/// Memory reported in FLY_VM_MEMORY_MB when the config names none (Fly's shared-cpu-1x).
const DEFAULT_MEMORY_MB: u32 = 256;

/// Errors of guests mode; each names the machine, image or path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("guest runtime for machine {machine_id}")]
    Guest {
        machine_id: String,
        #[source]
        source: guest::Error,
    },
    #[error("preparing the lab network")]
    Network(#[source] guest::Error),
    #[error("starting the lab dns on {addr}")]
    Dns {
        addr: SocketAddr,
        #[source]
        source: dns::Error,
    },
    #[error("machine {machine_id}: image {image:?} cannot run: the lab has no registry to pull it from (start the lab with Debian's docker-registry installed)")]
    NoRegistry { machine_id: String, image: String },
    #[error("machine {machine_id}: pulling its image")]
    Pull {
        machine_id: String,
        #[source]
        source: Box<rootfs::Error>,
    },
    #[error("machine {machine_id}: {reason}")]
    Config { machine_id: String, reason: String },
    #[error("machine {machine_id}: {op} {path}")]
    Io {
        machine_id: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("machine {machine_id}: the lab has no free private IPv4 left on bridge {bridge}")]
    NoIpv4 { machine_id: String, bridge: String },
    #[error("machine {machine_id}: a guest task panicked")]
    Join {
        machine_id: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// A running guest and what the lab gave it.
#[derive(Clone)]
struct Slot {
    guest: Arc<Guest>,
    /// Distinguishes this guest from a later one of the same machine.
    generation: u64,
    ipv4: Ipv4Addr,
    /// Stop signal and grace period from the machine's `stop_config`.
    stop: (Signal, Duration),
    /// A monitor task waits for init's exit (set once the machine is recorded `started`).
    watched: bool,
}

/// The guests of a lab.
pub struct Runner {
    pub bridge: BridgeConfig,
    /// Absolute state dir: volumes, guest dirs and logs live below it; guests cannot see it.
    state_dir: PathBuf,
    slots: Mutex<HashMap<String, Slot>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Signal and timeout of a stop request, taken by the stop that follows.
    stops: Mutex<HashMap<String, (Signal, Duration)>>,
    /// Restarts by policy since the last start by a user.
    restarts: Mutex<HashMap<String, u32>>,
    generation: AtomicU64,
    /// What the `.internal` DNS answers from; rebuilt after every change.
    pub directory: Arc<RwLock<dns::Directory>>,
    dns: tokio::sync::Mutex<Option<dns::Handle>>,
    /// Pulls `config.image` from the lab's registry; `None` when the lab runs without one.
    pub puller: Option<Arc<Puller>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("bridge", &self.bridge)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Where a machine's guest directory and log live.
pub fn machine_dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("machines").join(id)
}

/// A machine's log file (`fks-lab logs` prints it).
pub fn log_path(state_dir: &Path, id: &str) -> PathBuf {
    machine_dir(state_dir, id).join("log")
}

/// Where a volume's data lives on the host.
pub fn volume_dir(state_dir: &Path, vol: &str) -> PathBuf {
    state_dir.join("volumes").join(vol)
}

/// `image` (`HOST/NAME[:TAG][@DIGEST]`) pinned to `digest`: `HOST/NAME@DIGEST`. A reference
/// that does not parse is returned as it is (its pull reports that).
pub fn pinned(image: &str, digest: &str) -> String {
    match image.parse::<oci_client::Reference>() {
        Ok(r) => format!("{}/{}@{digest}", r.registry(), r.repository()),
        Err(_) => image.to_string(),
    }
}

/// Does the step `from` → `to` do real work in guests mode (instead of waiting a timing)?
pub fn is_real(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("starting", "started")
            | ("stopping", "stopped")
            | ("suspending", "suspended")
            | ("restarting", "starting")
            | ("destroying", "destroyed")
    )
}

/// Parse a signal as the API spells it (`SIGTERM` or a number).
pub fn parse_signal(s: &str) -> Option<Signal> {
    s.parse::<Signal>()
        .ok()
        .or_else(|| s.parse::<i32>().ok().and_then(|n| Signal::try_from(n).ok()))
}

/// The stop signal and grace period of a machine config.
fn stop_of(config: &MachineConfig) -> (Signal, Duration) {
    let sc = config.stop_config.as_ref();
    let signal = sc
        .and_then(|s| s.signal.as_deref())
        .and_then(parse_signal)
        .unwrap_or(DEFAULT_STOP_SIGNAL);
    let timeout = sc
        .and_then(|s| s.timeout.as_ref())
        .map(|t| t.0)
        .unwrap_or(DEFAULT_STOP_TIMEOUT);
    (signal, timeout)
}

/// The main process of a config: `init.exec`, else `init.entrypoint` + `init.cmd`.
pub fn init_argv(config: &MachineConfig) -> Vec<String> {
    let Some(init) = &config.init else {
        return Vec::new();
    };
    if let Some(exec) = init.exec.as_ref().filter(|e| !e.is_empty()) {
        return exec.clone();
    }
    let mut argv = init.entrypoint.clone().unwrap_or_default();
    argv.extend(init.cmd.clone().unwrap_or_default());
    argv
}

/// Should a guest that exited with `code` restart, after `restarts` restarts by policy?
pub fn should_restart(config: &MachineConfig, code: i32, restarts: u32) -> bool {
    let r = config.restart.as_ref();
    match r.and_then(|r| r.policy.clone()) {
        Some(RestartPolicy::No) => false,
        Some(RestartPolicy::Always) => true,
        // on-failure is the default; spot-price and unknown policies behave like it.
        _ => code != 0 && restarts < r.and_then(|r| r.max_retries).unwrap_or(DEFAULT_MAX_RETRIES),
    }
}

/// Backoff before restart number `n` (1-based): 100 ms doubling, at most 5 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1u64 << n.saturating_sub(1).min(6)))
        .min(Duration::from_secs(5))
}

/// The exit code of a status: its code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// The host's SSH host keys: a guest gets empty files in their place unless the machine
/// delivers its own, so no guest ever presents the host's identity.
fn host_key_masks(delivered: &[GuestFile]) -> Vec<GuestFile> {
    let Ok(dir) = std::fs::read_dir("/etc/ssh") else {
        return Vec::new();
    };
    let mut out: Vec<GuestFile> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
        .map(|e| PathBuf::from("/etc/ssh").join(e.file_name()))
        .filter(|p| !delivered.iter().any(|f| &f.guest_path == p))
        .map(|guest_path| GuestFile {
            guest_path,
            contents: Vec::new(),
            mode: 0o600,
        })
        .collect();
    out.sort_by(|a, b| a.guest_path.cmp(&b.guest_path));
    out
}

impl Runner {
    /// A runner on `bridge` for the lab in `state_dir`.
    pub fn new(bridge: BridgeConfig, state_dir: &Path, puller: Option<Arc<Puller>>) -> Runner {
        let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        Runner {
            bridge,
            state_dir,
            slots: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            stops: Mutex::new(HashMap::new()),
            restarts: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            directory: Arc::new(RwLock::new(dns::Directory::new())),
            dns: tokio::sync::Mutex::new(None),
            puller,
        }
    }

    /// Pulls `image` for machine `machine_id` (by its pinned `digest` when the cache has it, so
    /// a start needs no registry once the create has pulled), unless it is the built-in
    /// `lab/base` (`None`). Pull and unpack do not block the async workers
    /// (`rootfs::pull` unpacks on a blocking thread).
    pub async fn image(
        &self,
        machine_id: &str,
        image: &str,
        digest: Option<&str>,
    ) -> Result<Option<rootfs::Image>, Error> {
        if image == images::BASE_IMAGE {
            return Ok(None);
        }
        let Some(puller) = &self.puller else {
            return Err(Error::NoRegistry {
                machine_id: machine_id.to_string(),
                image: image.to_string(),
            });
        };
        if let Some(hit) = digest.and_then(|d| puller.cache().lookup(d, image)) {
            return Ok(Some(hit));
        }
        // The digest the create or update resolved, so a tag that moved since runs nothing
        // else.
        let reference = match digest {
            Some(d) => pinned(image, d),
            None => image.to_string(),
        };
        let (mut pulled, _) = puller
            .pull(&reference)
            .await
            .map_err(|source| Error::Pull {
                machine_id: machine_id.to_string(),
                source: Box::new(source),
            })?;
        pulled.reference = image.to_string();
        Ok(Some(pulled))
    }

    /// Prepare the bridge, remove guests a crashed lab left, start the DNS and its sync task,
    /// and bring back the guests of machines recorded as `started`.
    pub async fn boot(lab: &Arc<Lab>, runner: &Arc<Runner>) -> Result<(), Error> {
        let (bridge, dir) = (runner.bridge.clone(), runner.state_dir.clone());
        let cleaned = tokio::task::spawn_blocking(move || {
            guest::ensure_bridge(&bridge)?;
            guest::cleanup_orphans(&dir)
        })
        .await
        .map_err(|source| Error::Join {
            machine_id: String::new(),
            source,
        })?
        .map_err(Error::Network)?;
        if !cleaned.is_empty() {
            tracing::info!(machines = ?cleaned, "removed guests a previous lab left behind");
        }
        let addr = SocketAddr::new(runner.bridge.dns6.into(), dns::PORT);
        let config = dns::Config::new(vec![addr]);
        let config = match config
            .clone()
            .with_upstreams_from(Path::new("/etc/resolv.conf"))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no upstream resolvers: names outside .internal get REFUSED");
                config
            }
        };
        runner.sync_dns(lab);
        let handle = dns::Server::start(config, runner.directory.clone())
            .await
            .map_err(|source| Error::Dns { addr, source })?;
        *runner.dns.lock().await = Some(handle);
        let (lab2, r2) = (lab.clone(), runner.clone());
        tokio::spawn(async move {
            let mut changed = lab2.changed.subscribe();
            let mut closing = lab2.closing.subscribe();
            loop {
                tokio::select! {
                    c = changed.changed() => if c.is_err() { return },
                    _ = closing.changed() => return,
                }
                r2.sync_dns(&lab2);
            }
        });
        let started: Vec<(String, String)> = {
            let core = lab.core();
            core.state
                .apps
                .values()
                .flat_map(|a| a.machines.values())
                .filter(|m| m.state == "started" && m.target.is_none())
                .map(|m| (m.app.clone(), m.id.clone()))
                .collect()
        };
        for (app, id) in started {
            let (lab, runner) = (lab.clone(), runner.clone());
            tokio::spawn(async move {
                let lock = runner.machine_lock(&id);
                let _held = lock.lock().await;
                match runner.start_guest(&lab, &id, false).await {
                    Ok(()) => runner.watch(&lab, &app, &id),
                    Err(e) => runner.record_failure(&lab, &app, &id, &e),
                }
            });
        }
        Ok(())
    }

    /// Rebuild the DNS directory from the lab's state (started machines answer AAAA).
    pub fn sync_dns(&self, lab: &Lab) {
        let dir = {
            let core = lab.core();
            let apps: Vec<String> = core
                .state
                .apps
                .iter()
                .filter(|(_, a)| a.app.is_some())
                .map(|(n, _)| n.clone())
                .collect();
            let machines: Vec<dns::Machine> = core
                .state
                .apps
                .values()
                .flat_map(|a| a.machines.values())
                .filter(|m| m.state != "destroyed")
                .filter_map(|m| {
                    Some(dns::Machine {
                        id: m.id.clone(),
                        app: m.app.clone(),
                        region: m.region.clone(),
                        private_ip: m.private_ip.parse::<Ipv6Addr>().ok()?,
                        started: m.state == "started",
                        metadata: m.config.metadata.clone(),
                        process_group: None,
                        skip_registration: m
                            .config
                            .dns
                            .as_ref()
                            .and_then(|d| d.skip_registration)
                            .unwrap_or(false),
                    })
                })
                .collect();
            dns::Directory::from_parts(apps, machines)
        };
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) = dir;
    }

    fn machine_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks).entry(id.to_string()).or_default().clone()
    }

    /// Remember the signal and timeout of a stop request for the stop that follows.
    pub fn request_stop(&self, id: &str, signal: Option<Signal>, timeout: Option<Duration>) {
        let Some(slot) = lock(&self.slots).get(id).cloned() else {
            return;
        };
        let stop = (
            signal.unwrap_or(slot.stop.0),
            timeout.unwrap_or(slot.stop.1),
        );
        lock(&self.stops).insert(id.to_string(), stop);
    }

    /// A user started (or updated) the machine: restart counting begins again.
    pub fn reset_restarts(&self, id: &str) {
        lock(&self.restarts).remove(id);
    }

    /// Does the machine have a guest whose init still runs?
    pub fn running(&self, id: &str) -> Option<Arc<Guest>> {
        let guest = lock(&self.slots).get(id).map(|s| s.guest.clone())?;
        matches!(guest.try_status(), Ok(None)).then_some(guest)
    }

    /// Send `signal` to the main process of the machine's guest; false when none runs.
    pub fn signal(&self, id: &str, signal: Signal) -> Result<bool, Error> {
        let Some(guest) = self.running(id) else {
            return Ok(false);
        };
        guest.signal(signal).map_err(|source| Error::Guest {
            machine_id: id.to_string(),
            source,
        })
    }

    /// Run `argv` in the machine's guest; `None` when it has no running guest.
    pub async fn exec(
        &self,
        id: &str,
        argv: Vec<String>,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Option<ExecOutput>, Error> {
        let Some(guest) = self.running(id) else {
            return Ok(None);
        };
        let machine_id = id.to_string();
        let out = tokio::task::spawn_blocking(move || guest.exec(&argv, stdin.as_deref(), timeout))
            .await
            .map_err(|source| Error::Join {
                machine_id: machine_id.clone(),
                source,
            })?;
        match out {
            Ok(o) => Ok(Some(o)),
            Err(guest::Error::NotRunning { .. }) => Ok(None),
            Err(source) => Err(Error::Guest { machine_id, source }),
        }
    }

    /// Carry out the step `from` → `to` of machine `id` (see [`is_real`]). `fault`: the
    /// boot-failure fault picked this start, so init exits 1 once instead of running.
    pub async fn act(
        self: &Arc<Self>,
        lab: &Arc<Lab>,
        id: &str,
        to: &str,
        fault: bool,
    ) -> Result<(), Error> {
        let mlock = self.machine_lock(id);
        let _held = mlock.lock().await;
        match to {
            "started" => self.start_guest(lab, id, fault).await,
            "destroyed" => {
                let r = self.take_and_stop(id, None).await;
                lock_remove(&self.locks, id);
                r
            }
            _ => {
                let stop = lock(&self.stops).remove(id);
                self.take_and_stop(id, stop).await
            }
        }
    }

    /// Stop (`to` = `stopped`) or destroy (`destroyed`) the machine's guest in the background,
    /// for state changes no driver carries: an update with `skip_launch`, a forced app delete.
    pub fn detached(self: &Arc<Self>, lab: &Arc<Lab>, id: &str, to: &'static str) {
        let (runner, lab, id) = (self.clone(), lab.clone(), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = runner.act(&lab, &id, to, false).await {
                tracing::warn!(machine = id, error = %chain(&e), "could not stop a guest");
            }
        });
    }

    /// Stop the machine's guest (with `stop`, or SIGKILL for a destroy when `None`) and remove
    /// its namespaces. No guest: nothing to do.
    async fn take_and_stop(&self, id: &str, stop: Option<(Signal, Duration)>) -> Result<(), Error> {
        let Some(slot) = lock(&self.slots).remove(id) else {
            return Ok(());
        };
        let machine_id = id.to_string();
        let destroy_only = stop.is_none();
        let (signal, timeout) = stop.unwrap_or(slot.stop);
        let guest = slot.guest;
        tokio::task::spawn_blocking(move || {
            if !destroy_only {
                guest.stop(signal, timeout)?;
            }
            guest.destroy()
        })
        .await
        .map_err(|source| Error::Join {
            machine_id: machine_id.clone(),
            source,
        })?
        .map_err(|source| Error::Guest { machine_id, source })
    }

    /// Build the guest of machine `id` from its current record and start it, replacing a
    /// guest of an older config. Returns once init runs.
    async fn start_guest(
        self: &Arc<Self>,
        lab: &Arc<Lab>,
        id: &str,
        fault: bool,
    ) -> Result<(), Error> {
        let old = lock(&self.slots).get(id).map(|s| s.stop);
        if let Some(old) = old {
            self.take_and_stop(id, Some(old)).await?;
        }
        let m = {
            let core = lab.core();
            core.state
                .apps
                .values()
                .find_map(|a| a.machines.get(id))
                .cloned()
        };
        let Some(m) = m else { return Ok(()) };
        let fault = fault && lock(&self.restarts).get(id).copied().unwrap_or(0) == 0;
        let image = self
            .image(id, &m.config.image, m.image_digest.as_deref())
            .await?;
        let ipv4 = self.free_ipv4(id)?;
        let spec = self.spec(lab, &m, ipv4, fault, image.as_ref())?;
        let stop = stop_of(&m.config);
        let machine_id = id.to_string();
        let guest = tokio::task::spawn_blocking(move || Guest::start(spec))
            .await
            .map_err(|source| Error::Join {
                machine_id: machine_id.clone(),
                source,
            })?
            .map_err(|source| Error::Guest {
                machine_id: machine_id.clone(),
                source,
            })?;
        let guest = Arc::new(guest);
        if *lab.closing.borrow() {
            // The lab shut down while this guest started: it must not outlive the lab.
            let g = guest.clone();
            let _ = tokio::task::spawn_blocking(move || g.destroy()).await;
            return Ok(());
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        lock(&self.slots).insert(
            id.to_string(),
            Slot {
                guest: guest.clone(),
                generation,
                ipv4,
                stop,
                watched: false,
            },
        );
        Ok(())
    }

    /// Start watching the machine's guest for an exit of its own. Called once the machine is
    /// recorded `started`, so an init that exits at once is judged by the restart policy
    /// rather than lost between the start and that record.
    pub fn watch(self: &Arc<Self>, lab: &Arc<Lab>, app: &str, id: &str) {
        let (guest, generation) = {
            let mut slots = lock(&self.slots);
            let Some(slot) = slots.get_mut(id).filter(|s| !s.watched) else {
                return;
            };
            slot.watched = true;
            (slot.guest.clone(), slot.generation)
        };
        self.monitor(
            lab.clone(),
            app.to_string(),
            id.to_string(),
            guest,
            generation,
        );
    }

    /// The lowest free host address of the bridge's IPv4 network.
    fn free_ipv4(&self, id: &str) -> Result<Ipv4Addr, Error> {
        let used: Vec<Ipv4Addr> = lock(&self.slots).values().map(|s| s.ipv4).collect();
        let gw = u32::from(self.bridge.gateway4);
        let bits = 32 - u32::from(self.bridge.prefix4.min(30));
        let net = gw & !((1u32 << bits) - 1);
        (1..(1u32 << bits) - 1)
            .map(|h| Ipv4Addr::from(net | h))
            .find(|a| *a != self.bridge.gateway4 && !used.contains(a))
            .ok_or_else(|| Error::NoIpv4 {
                machine_id: id.to_string(),
                bridge: self.bridge.name.clone(),
            })
    }

    /// The guest spec of a machine: its root (the pulled `image`, or the host view of
    /// `lab/base`), files (secrets resolved here, in memory only), env, volume, main process.
    fn spec(
        &self,
        lab: &Lab,
        m: &Machine,
        ipv4: Ipv4Addr,
        fault: bool,
        image: Option<&rootfs::Image>,
    ) -> Result<GuestSpec, Error> {
        let bad = |reason: String| Error::Config {
            machine_id: m.id.clone(),
            reason,
        };
        let private_ip: Ipv6Addr = m.private_ip.parse().map_err(|_| {
            bad(format!(
                "private_ip {:?} is not an IPv6 address",
                m.private_ip
            ))
        })?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut files = Vec::with_capacity(m.config.files.len());
        for f in &m.config.files {
            let contents = match (&f.raw_value, &f.secret_name) {
                (Some(raw), _) => b64.decode(raw.trim()).map_err(|e| {
                    bad(format!(
                        "file {}: raw_value is not base64: {e}",
                        f.guest_path
                    ))
                })?,
                (None, Some(name)) => {
                    // Only what has reached boots (the `secrets_lag` fault); a missing
                    // file secret fails the boot. What Fly does then is undocumented.
                    let value = lock(&lab.secrets)
                        .apps
                        .get(&m.app)
                        .and_then(|a| {
                            a.visible(crate::clock::now_ms())
                                .find(|(n, _)| *n == name)
                                .map(|(_, s)| s.value.clone())
                        })
                        .ok_or_else(|| {
                            bad(format!(
                                "file {}: app {} has no secret {name}",
                                f.guest_path, m.app
                            ))
                        })?;
                    b64.decode(value.trim()).map_err(|e| {
                        bad(format!(
                            "file {}: secret {name} is not base64: {e}",
                            f.guest_path
                        ))
                    })?
                }
                (None, None) => {
                    return Err(bad(format!(
                        "file {}: needs raw_value or secret_name",
                        f.guest_path
                    )))
                }
            };
            files.push(GuestFile {
                guest_path: PathBuf::from(&f.guest_path),
                contents,
                mode: f.mode.unwrap_or(0o644),
            });
        }
        // The host view shows the host's /etc/ssh: its host keys are masked. An image has its
        // own /etc.
        let mut all_files = match image {
            None => host_key_masks(&files),
            Some(_) => Vec::new(),
        };
        all_files.extend(files);
        // As on Fly: app secrets come first in env unless the machine set `skip_secrets`;
        // the machine's own env wins over them.
        let mut env: BTreeMap<String, String> = if m.skip_secrets {
            BTreeMap::new()
        } else {
            lock(&lab.secrets)
                .apps
                .get(&m.app)
                .map(|a| {
                    a.visible(crate::clock::now_ms())
                        .map(|(k, s)| (k.clone(), s.value.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        env.extend(m.config.env.clone());
        env.extend(guest::fly_runtime_env(&guest::RuntimeFacts {
            app: &m.app,
            machine_id: &m.id,
            region: &m.region,
            private_ip,
            // The reference as the machine names it, which is what was pulled (by tag or by
            // digest). Whether Fly's FLY_IMAGE_REF shows that text or the digest-pinned form
            // of a tag is not documented (reference/fly-runtime.md §1.1: "flyd sets
            // FLY_IMAGE_REF"; fly-machines-api.md §7: "image reference").
            image_ref: &m.config.image,
            machine_version: &m.instance_id,
            memory_mb: m
                .config
                .guest
                .as_ref()
                .and_then(|g| g.memory_mb)
                .unwrap_or(DEFAULT_MEMORY_MB),
            public_ip: None,
            process_group: m
                .config
                .metadata
                .get("fly_process_group")
                .map(String::as_str),
            primary_region: m.config.env.get("PRIMARY_REGION").map(String::as_str),
        }));
        let init = if fault {
            // The boot-failure fault: this start's main process exits 1 at once.
            vec!["false".to_string()]
        } else {
            match image {
                // reference/fly-runtime.md §1.1, fly-machines-api.md §2.4 `init`.
                Some(i) => i.config.argv(&m.config.init.clone().unwrap_or_default()),
                None => init_argv(&m.config),
            }
        };
        if init.is_empty() {
            return Err(bad(match image {
                Some(i) => format!(
                    "image {} has no Entrypoint or Cmd and config.init gives no exec, entrypoint or cmd",
                    i.reference
                ),
                None => format!(
                    "config.init has no exec, entrypoint or cmd: the built-in {} has no default command",
                    images::BASE_IMAGE
                ),
            }));
        }
        // Image Env under the machine's (reference/fly-runtime.md §1.1); the image's PATH
        // finds argv[0] (else the Debian default, `guest::DEFAULT_PATH`).
        let (env, guest_image, path_dirs, hidden_dirs) = match image {
            Some(i) => {
                let run_as = i.run_as().map_err(|source| Error::Pull {
                    machine_id: m.id.clone(),
                    source: Box::new(source),
                })?;
                let mut env = i.config.env_under(&env);
                env.entry("HOME".to_string()).or_insert(run_as.home);
                let working_dir = match i.config.working_dir.as_deref() {
                    Some(w) if !w.starts_with('/') => {
                        return Err(bad(format!(
                            "image {} has a relative WorkingDir {w:?}",
                            i.reference
                        )))
                    }
                    w => w.map(PathBuf::from),
                };
                let image = guest::GuestImage {
                    rootfs: i.rootfs.clone(),
                    working_dir,
                    ids: Some((run_as.uid, run_as.gid)),
                };
                (env, Some(image), Vec::new(), Vec::new())
            }
            None => (
                env,
                None,
                images::base_path_dirs(),
                vec![self.state_dir.clone()],
            ),
        };
        let volume = match m.config.mounts.first() {
            Some(mount) => {
                let host_dir = volume_dir(&self.state_dir, &mount.volume);
                std::fs::create_dir_all(&host_dir).map_err(|source| Error::Io {
                    machine_id: m.id.clone(),
                    op: "creating",
                    path: host_dir.clone(),
                    source,
                })?;
                Some(guest::VolumeMount {
                    host_dir,
                    mount_path: PathBuf::from(&mount.path),
                })
            }
            None => None,
        };
        Ok(GuestSpec {
            machine_id: m.id.clone(),
            app: m.app.clone(),
            private_ip,
            ipv4,
            bridge: self.bridge.clone(),
            volume,
            hidden_dirs,
            files: all_files,
            env,
            init,
            path_dirs,
            image: guest_image,
            root_dir: machine_dir(&self.state_dir, &m.id),
            log_path: log_path(&self.state_dir, &m.id),
        })
    }

    /// Watch a guest: when init exits on its own, record the exit and apply the restart policy.
    fn monitor(
        self: &Arc<Self>,
        lab: Arc<Lab>,
        app: String,
        id: String,
        guest: Arc<Guest>,
        generation: u64,
    ) {
        let runner = self.clone();
        tokio::spawn(async move {
            let g = guest.clone();
            let status = tokio::task::spawn_blocking(move || g.wait_exit()).await;
            let lock_ = runner.machine_lock(&id);
            let _held = lock_.lock().await;
            {
                let mut slots = lock(&runner.slots);
                if slots.get(&id).map(|s| s.generation) != Some(generation) {
                    // Stopped, replaced or destroyed on purpose: that path records it.
                    return;
                }
                slots.remove(&id);
            }
            let code = match status {
                Ok(Ok(s)) => exit_code(s),
                _ => -1,
            };
            let g = guest.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || g.destroy()).await {
                tracing::warn!(machine = id, error = %e, "could not clean up an exited guest");
            }
            let mut core = lab.core();
            let crate::Core { state, rng, .. } = &mut *core;
            let Some(m) = state.app(&app).and_then(|a| a.machines.get(&id)) else {
                return;
            };
            if m.state != "started" || m.target.is_some() {
                // A user operation is under way; it decides the next state.
                return;
            }
            let mut m = m.clone();
            let restarts = lock(&runner.restarts).get(&id).copied().unwrap_or(0);
            let restart = should_restart(&m.config, code, restarts);
            let now = clock::now_ms();
            m.push_event(Event {
                id: ids::ulid(rng, now),
                kind: "exit".into(),
                status: "stopped".into(),
                source: "flyd".into(),
                timestamp: now,
                exit_code: Some(code),
            });
            tracing::info!(machine = id, code, restart, "guest init exited");
            if restart {
                lock(&runner.restarts).insert(id.clone(), restarts + 1);
                enter(&mut m, "starting", "flyd", rng);
                m.target = Some("started".into());
            } else {
                enter(&mut m, "stopped", "flyd", rng);
                m.target = None;
            }
            if let Err(e) = core.commit(Record::Machine(Box::new(m))) {
                tracing::error!(machine = id, error = %e, "could not record a guest exit");
            }
            drop(core);
            lab.notify();
            if restart {
                let lab2 = lab.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(backoff(restarts + 1)).await;
                    drive(&lab2, &app, &id);
                });
            }
        });
    }

    /// Record that a guest could not start: the machine fails, and its log says why.
    pub fn record_failure(&self, lab: &Lab, app: &str, id: &str, e: &Error) {
        let text = format!("fks-lab: the guest could not start: {}\n", chain(e));
        tracing::warn!(machine = id, error = %text.trim(), "guest start failed");
        let path = log_path(&self.state_dir, id);
        if let Some(p) = path.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            use std::io::Write;
            let _ = f.write_all(text.as_bytes());
        }
        let mut core = lab.core();
        let crate::Core { state, rng, .. } = &mut *core;
        let Some(m) = state.app(app).and_then(|a| a.machines.get(id)) else {
            return;
        };
        let mut m = m.clone();
        enter(&mut m, "failed", "flyd", rng);
        m.target = None;
        if let Err(e) = core.commit(Record::Machine(Box::new(m))) {
            tracing::error!(machine = id, error = %e, "could not record a failed start");
        }
        drop(core);
        lab.notify();
    }

    /// Stop every guest (their machines stay `started` in the record, so the next lab start
    /// brings them back) and the DNS.
    pub async fn shutdown(&self) {
        let slots: Vec<(String, Slot)> = lock(&self.slots).drain().collect();
        let mut tasks = Vec::new();
        for (id, slot) in slots {
            tasks.push(tokio::task::spawn_blocking(move || {
                let r = slot
                    .guest
                    .stop(slot.stop.0, slot.stop.1)
                    .and_then(|_| slot.guest.destroy());
                if let Err(e) = r {
                    tracing::warn!(machine = id, error = %e, "could not stop a guest at shutdown");
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        if let Some(h) = self.dns.lock().await.take() {
            if let Err(e) = h.shutdown().await {
                tracing::warn!(error = %e, "could not stop the lab dns cleanly");
            }
        }
    }
}

fn lock_remove<T>(m: &Mutex<HashMap<String, T>>, id: &str) {
    lock(m).remove(id);
}

/// An error with its causes, `: `-separated.
pub use fks_bootstrap::errors::chain;

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v: serde_json::Value) -> MachineConfig {
        serde_json::from_value(v).expect("config")
    }

    #[test]
    fn restart_policy_follows_fly_defaults() {
        let default = config(serde_json::json!({"image": "x"}));
        assert!(should_restart(&default, 1, 0));
        assert!(!should_restart(&default, 0, 0));
        assert!(!should_restart(&default, 1, 10));
        let always = config(serde_json::json!({"image": "x", "restart": {"policy": "always"}}));
        assert!(should_restart(&always, 0, 100));
        let no = config(serde_json::json!({"image": "x", "restart": {"policy": "no"}}));
        assert!(!should_restart(&no, 1, 0));
        let two = config(
            serde_json::json!({"image": "x", "restart": {"policy": "on-failure", "max_retries": 2}}),
        );
        assert!(should_restart(&two, 3, 1));
        assert!(!should_restart(&two, 3, 2));
    }

    #[test]
    fn init_comes_from_exec_or_entrypoint_and_cmd() {
        let c = config(serde_json::json!({"image": "x", "init": {"exec": ["sleep", "1"]}}));
        assert_eq!(init_argv(&c), vec!["sleep", "1"]);
        let c = config(
            serde_json::json!({"image": "x", "init": {"entrypoint": ["/bin/a"], "cmd": ["b"]}}),
        );
        assert_eq!(init_argv(&c), vec!["/bin/a", "b"]);
        assert!(init_argv(&config(serde_json::json!({"image": "x"}))).is_empty());
    }

    #[test]
    fn stop_defaults_to_sigint_and_signals_parse_by_name_or_number() {
        let c = config(serde_json::json!({"image": "x"}));
        assert_eq!(stop_of(&c), (Signal::SIGINT, DEFAULT_STOP_TIMEOUT));
        let c = config(
            serde_json::json!({"image": "x", "stop_config": {"signal": "SIGTERM", "timeout": "2s"}}),
        );
        assert_eq!(stop_of(&c), (Signal::SIGTERM, Duration::from_secs(2)));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }

    #[test]
    fn images_are_pinned_to_the_resolved_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            pinned("127.0.0.1:5000/lab-cp:v1", &d),
            format!("127.0.0.1:5000/lab-cp@{d}")
        );
        assert_eq!(
            pinned(&format!("127.0.0.1:5000/a/b@sha256:{}", "b".repeat(64)), &d),
            format!("127.0.0.1:5000/a/b@{d}")
        );
        assert_eq!(pinned("Not A Ref", &d), "Not A Ref");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }
}
