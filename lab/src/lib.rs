//! fks-lab: a local Fly Machines platform. This crate is a server library in the style of
//! mini-redis: `run(listener, options, shutdown)` serves the Machines API until `shutdown`
//! completes; the binary (`main.rs`) only parses flags around it.
//! State lives in `Lab` behind `std::sync::Mutex`es that are never held across an `.await`.
//! By default the lab runs in API-only mode: machine states change, nothing runs. With
//! `Options::guests` (root only) started machines are real guests (`runner`, `guest`) and the
//! `.internal` DNS answers on the bridge's resolver address.

pub mod api;
pub mod clock;
pub mod dns;
pub mod error;
pub mod faults;
pub mod guest;
pub mod hosts;
pub mod ids;
pub mod images;
pub mod journal;
pub mod lifecycle;
pub mod migration;
pub mod model;
pub mod registry;
pub mod rootfs;
pub mod runner;
pub mod secrets;
pub mod stats;
pub mod wireguard;

use model::{Record, State};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use faults::Faults;

/// Errors starting or running the lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the state in {dir}")]
    State {
        dir: PathBuf,
        #[source]
        source: journal::Error,
    },
    #[error("opening the secrets in {dir}")]
    Secrets {
        dir: PathBuf,
        #[source]
        source: secrets::Error,
    },
    #[error("opening the WireGuard peers in {dir}")]
    WireGuard {
        dir: PathBuf,
        #[source]
        source: wireguard::Error,
    },
    #[error("starting guests mode")]
    Guests(#[source] runner::Error),
    #[error("opening the image cache of guests mode")]
    Images(#[source] Box<rootfs::Error>),
    #[error(
        "guests mode needs root (network and mount namespaces): run as root or without guests"
    )]
    NotRoot,
    #[error("serving http")]
    Serve(#[source] std::io::Error),
    #[error("bad --zones entry `{entry}`: want REGION=COUNT such as sjc=3")]
    Zones { entry: String },
    #[error("bad --timings entry `{entry}`: want NAME=DURATION with NAME one of launch, boot, stop, destroy")]
    Timings { entry: String },
}

/// How long the simulated machine transitions take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// `created` → `starting` after a create.
    pub launch: Duration,
    /// `starting` → `started`.
    pub boot: Duration,
    /// `stopping` → `stopped`, `suspending` → `suspended`, `restarting` → `starting`.
    pub stop: Duration,
    /// `destroying` → `destroyed`.
    pub destroy: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            launch: Duration::from_millis(50),
            boot: Duration::from_millis(200),
            stop: Duration::from_millis(100),
            destroy: Duration::from_millis(100),
        }
    }
}

impl Timings {
    /// Parse `launch=50ms,boot=200ms,stop=100ms,destroy=100ms` (any subset; the rest default).
    pub fn parse(spec: &str) -> Result<Timings, Error> {
        let mut t = Timings::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || Error::Timings {
                entry: entry.to_string(),
            };
            let (name, value) = entry.split_once('=').ok_or_else(bad)?;
            let ms: u64 = value
                .trim()
                .strip_suffix("ms")
                .and_then(|v| v.parse().ok())
                .or_else(|| {
                    value
                        .trim()
                        .strip_suffix('s')
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| s * 1000)
                })
                .ok_or_else(bad)?;
            let d = Duration::from_millis(ms);
            match name.trim() {
                "launch" => t.launch = d,
                "boot" => t.boot = d,
                "stop" => t.stop = d,
                "destroy" => t.destroy = d,
                _ => return Err(bad()),
            }
        }
        Ok(t)
    }
}

/// Parse `sjc=3,iad=3` into regions with their zone counts.
pub fn parse_zones(spec: &str) -> Result<Vec<(String, usize)>, Error> {
    spec.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let bad = || Error::Zones {
                entry: entry.to_string(),
            };
            let (r, n) = entry.split_once('=').ok_or_else(bad)?;
            let n: usize = n.trim().parse().map_err(|_| bad())?;
            let r = r.trim();
            if n == 0 || r.len() != 3 || !r.chars().all(|c| c.is_ascii_lowercase()) {
                return Err(bad());
            }
            Ok((r.to_string(), n))
        })
        .collect()
}

/// The settings a client of this lab needs, as `(name, value)` in print order: the API
/// address and token, and what Fly does not tell a client but the lab knows of itself, given
/// as fks-bootstrap's ordinary settings, which mean the same against Fly: the GraphQL API's base
/// (`FLY_API_BASE_URL`, flyctl's name; GraphQL is `<base>/graphql`), the regions' zone
/// counts (`FKS_REGION_ZONES`) and whether machines run the node image at all
/// (`FKS_MACHINES_ONLY=1` in API-only mode, where nothing runs).
pub fn client_env(
    base: &str,
    token: &str,
    zones: &[(String, usize)],
    guests: bool,
) -> Vec<(&'static str, String)> {
    let zones = zones
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        ("FLY_API_HOSTNAME", base.to_string()),
        ("FLY_API_TOKEN", token.to_string()),
        ("FKS_REGION_ZONES", zones),
        (
            "FKS_MACHINES_ONLY",
            if guests { "0" } else { "1" }.to_string(),
        ),
        ("FLY_API_BASE_URL", base.to_string()),
    ]
}

/// The default regions when `--zones` is not given.
pub const DEFAULT_ZONES: &str = "sjc=3,iad=3,ams=3";

/// Everything the lab needs to start.
#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    /// Regions and how many zones (hosts) each has.
    pub zones: Vec<(String, usize)>,
    pub faults: Faults,
    /// Seeds ids and fault decisions.
    pub seed: u64,
    /// The API token clients must present.
    pub token: String,
    pub timings: Timings,
    /// Run started machines as real guests (root only); API-only when false.
    pub guests: bool,
    /// The lab bridge guests join; its `dns6` is where the `.internal` DNS listens.
    pub bridge: guest::BridgeConfig,
}

/// The mutable core: the state and the journal that records it, and the id generator.
#[derive(Debug)]
pub struct Core {
    pub state: State,
    journal: journal::Journal,
    pub rng: ChaCha8Rng,
}

impl Core {
    /// Apply a record and write it to the journal before the caller answers.
    pub fn commit(&mut self, record: Record) -> Result<(), error::ApiError> {
        let written = self.journal.append(&record, &self.state);
        self.state.apply(record);
        written.map_err(|e| error::ApiError::internal(format!("lab journal write failed: {e}")))
    }
}

/// The running lab, shared by all handlers.
#[derive(Debug)]
pub struct Lab {
    pub opts: Options,
    /// Regions with their zone ids, in `--zones` order.
    pub zones: Vec<(String, Vec<String>)>,
    core: Mutex<Core>,
    pub secrets: Mutex<secrets::Store>,
    pub faults: Mutex<faults::Injector>,
    pub stats: Mutex<stats::Stats>,
    /// Bumped after every state change; waiters watch it.
    pub changed: tokio::sync::watch::Sender<u64>,
    /// Set when the server shuts down, so long waits end.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// The guests, in guests mode.
    pub runner: Option<Arc<runner::Runner>>,
    /// WireGuard peers, and the gateway in guests mode.
    pub wireguard: wireguard::WireGuard,
}

impl Lab {
    /// Open the state in `opts.state_dir` and build the lab.
    pub fn open(opts: Options) -> Result<Arc<Lab>, Error> {
        let (mut state, mut journal) =
            journal::open(&opts.state_dir).map_err(|source| Error::State {
                dir: opts.state_dir.clone(),
                source,
            })?;
        let boots = state.boots + 1;
        let rec = Record::Boot { boots };
        state.apply(rec.clone());
        journal
            .append(&rec, &state)
            .map_err(|source| Error::State {
                dir: opts.state_dir.clone(),
                source,
            })?;
        let secrets = secrets::Store::open(&opts.state_dir).map_err(|source| Error::Secrets {
            dir: opts.state_dir.clone(),
            source,
        })?;
        let wireguard =
            wireguard::WireGuard::open(&opts.state_dir).map_err(|source| Error::WireGuard {
                dir: opts.state_dir.clone(),
                source,
            })?;
        let mut taken = std::collections::HashSet::new();
        let zones = opts
            .zones
            .iter()
            .map(|(r, n)| (r.clone(), ids::zone_ids(r, *n, &mut taken)))
            .collect();
        let rng = ChaCha8Rng::seed_from_u64(opts.seed ^ boots.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Guests pull `config.image` from the lab's registry: the one a lab of this state dir
        // started (`registry::Registry::start` records its port there), with the lab token as
        // the password of user `x` (reference/fly-runtime.md §3).
        let puller = match (opts.guests, registry::host(&opts.state_dir)) {
            (true, Some(host)) => Some(Arc::new(
                rootfs::pull::Puller::new(
                    &opts.state_dir,
                    rootfs::pull::Registry::lab(host, opts.token.clone()),
                )
                .map_err(|e| Error::Images(Box::new(e)))?,
            )),
            _ => None,
        };
        Ok(Arc::new(Lab {
            zones,
            core: Mutex::new(Core {
                state,
                journal,
                rng,
            }),
            secrets: Mutex::new(secrets),
            faults: Mutex::new(faults::Injector::new(opts.seed)),
            stats: Mutex::new(stats::Stats::default()),
            changed: tokio::sync::watch::channel(0).0,
            closing: tokio::sync::watch::channel(false).0,
            runner: opts.guests.then(|| {
                Arc::new(runner::Runner::new(
                    opts.bridge.clone(),
                    &opts.state_dir,
                    puller,
                ))
            }),
            wireguard,
            opts,
        }))
    }

    /// Lock the core. A poisoned lock means a handler panicked mid-change; the state itself is
    /// still consistent (records are applied whole), so keep serving.
    pub fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tell waiters that something changed.
    pub fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The zones of a region, if the lab has it.
    pub fn region_zones(&self, region: &str) -> Option<&[String]> {
        self.zones
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, z)| z.as_slice())
    }

    /// Snapshot the state and empty the journal (at shutdown).
    pub fn compact(&self) -> Result<(), journal::Error> {
        let mut core = self.core();
        let Core { state, journal, .. } = &mut *core;
        journal.compact(state)
    }
}

/// Lock helper for the small mutexes (stats, faults, secrets): poisoning is not fatal there.
pub use fks_bootstrap::sync::lock;

/// Serve the Machines API on `listener` until `shutdown` completes, then snapshot the state.
pub async fn run(
    listener: tokio::net::TcpListener,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if opts.guests && !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let lab = Lab::open(opts)?;
    if let Some(r) = &lab.runner {
        runner::Runner::boot(&lab, r).await.map_err(Error::Guests)?;
        wireguard::start_in_background(&lab).await;
    }
    lifecycle::resume(&lab);
    let app = api::router(lab.clone());
    let closing = lab.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.closing.send_replace(true);
        })
        .await
        .map_err(Error::Serve)?;
    if let Some(r) = &lab.runner {
        r.shutdown().await;
        lab.wireguard.stop_gateway();
    }
    if let Err(e) = lab.compact() {
        tracing::warn!(error = %e, "could not compact the state at shutdown; the journal still holds it");
    }
    Ok(())
}

/// Write `bytes` to `path` readable by its owner only (the lab token, the registry's htpasswd):
/// created with mode 0600, and an existing file is narrowed to 0600 before it gets the bytes
/// (the mode given at open applies only to a file it creates).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zones_and_timings() {
        assert_eq!(
            parse_zones("sjc=3, iad=2").expect("zones"),
            vec![("sjc".into(), 3), ("iad".into(), 2)]
        );
        assert!(parse_zones("sjc").is_err());
        assert!(parse_zones("sjc=0").is_err());
        let t = Timings::parse("boot=1s,stop=5ms").expect("timings");
        assert_eq!(t.boot, Duration::from_secs(1));
        assert_eq!(t.stop, Duration::from_millis(5));
        assert_eq!(t.launch, Timings::default().launch);
        assert!(Timings::parse("warp=1s").is_err());
    }
}
