//! Issue 11's "Figures for the note", scale: creating 100 nodes (the control plane, then a
//! node group of 97 workers), upgrading those 100 nodes, and creating one node group of 500
//! workers, on the lab in API-only mode (machines change state, nothing runs: guests for 100
//! nodes are too heavy for one small host) with Fly-like latencies and the lab's rate limits
//! on. One table: wall time, the lower bound of the same plans (`shared/mod.rs`: dependency
//! chain of the plan + Fly's token buckets), their ratio (target <= 1.1 for creates, <= 1.15
//! for the upgrade), the bound Fly's rate limits alone would set (`LB Fly-only`: creates
//! without the plan's volume-create chain, the upgrade without its worker batches), mutating
//! API calls per node (lab `GET /lab/v1/stats` `mutations` delta / nodes) and the 429s the lab
//! answered.
//!
//! The library is driven as the CLI drives it with `--machines-only` (what `fks-lab env`
//! prints for an API-only lab, `FKS_MACHINES_ONLY=1`): `run::observe`, `plan::plan` with k3s
//! steps off (the plan ends when every machine is started), zones = the count the lab is
//! started with plus `--allow-shared-zones` (more nodes than zones), ssh files from
//! `ssh::ClusterKeys` (made before the clock starts), and `run::execute` through a
//! `fly::Client` with its default options, so its token buckets hold Fly's documented limits
//! (reference fly-machines-api.md §5: 1 req/s, bursts of 3, per action and app or machine).
//!
//! The upgrade is `fks-bootstrap upgrade --k3s-version` one minor up, as `cli::upgrade` runs
//! it: K3S_VERSION is set on the config (the cluster config file every node gets carries it,
//! so every machine drifts; the bench's config pins IMAGE, so no image is built and the image
//! stays), then the control plane is converged (servers one at a time), then the group (workers
//! in batches of `plan::update::WORKER_BATCH`, each after the previous batch); each update is
//! `run::update_machine`: lease, update with the nonce, wait for the new version `started`,
//! GET, release. The bench panics unless each plan is exactly one update per machine.
//!
//! Stated latencies (printed), the same as the `lifecycle` bench's: volume create
//! [`VOLUME_CREATE`] and machine create [`MACHINE_CREATE`] are lab `latency` faults; boot is
//! the lab's `launch` + `boot` timings [`LAUNCH`] + [`STARTING`]; an update until its new
//! version is started is the lab `latency` fault of the update call [`UPDATE_CALL`] + the
//! `boot` timing (the API-only lab answers an update with the machine `starting` and does not
//! model the old instance's stop). Fly publishes no latency for these calls (unknown): the
//! figures are round guesses, and the table also gives the 500-node bound for slower volume
//! creates, computed (not run).
//!
//! `NODE_GROUP_SIZE` is capped at 64 by the config's validation, so 97 and 500 workers are set
//! on the loaded `Config` past it (said in the output): the figures time the plan, the run and
//! the client at that size, which the CLI cannot be asked for today.
//!
//! Why 500 nodes take minutes: the plan serialises the volume creates of one app (so an
//! ambiguous create can be told apart, see `plan::phases`), so the bound is ~ 500 x
//! max(volume create, 1 s) + machine create + boot. At 1 s per volume create the chain costs
//! nothing over Fly's own limit (Create Volume 1/s per app), above 1 s it dominates. The
//! output says which.
//!
//! Why the upgrade takes 36 s and not 4: every update round waits for the one before (3
//! servers, then ceil(97 / 3) = 33 worker batches), so the bound is 36 x update until started;
//! Fly's buckets are per machine for update, lease, wait and GET (reference §5: "Stop/start/
//! update calls on different Machines have separate buckets"), so without the batches the
//! bound would be 3 + 1 rounds. The batch bounds how much of a group reboots at once; that
//! is what it costs.
//!
//! Figures (release build, 2-core shared host; `--profile dev` in brackets for the upgrade):
//!
//! | case | nodes | wall | LB | wall/LB | LB Fly-only | mutations/node | 429s |
//! |---|---|---|---|---|---|---|---|
//! | -c + -a 97 | 100 | 103.3 s | 103.0 s | 1.003 | 100.5 s | 2.04 | 0 |
//! | upgrade (cp, then w97) | 100 | 36.6 s (37.0 s) | 36.4 s | 1.005 (1.016) | 4.0 s | 3.00 | 0 |
//! | -a 500 | 500 | 503.0 s | 501.5 s | 1.003 | 499.5 s | 2.00 | 0 |
//!
//! The upgrade's 3 mutations per node are the lease acquire, the update and the lease release.
//!
//! Run: `cargo bench -p fks-lab --bench scale [-- CASE...]` with CASE among `100`, `upgrade`
//! (runs the 100-node create first), `500`; none: all (no root; about 12 minutes of run, 8.4
//! of them the 500-node group, 2.5 for `-- upgrade`; `--profile dev` reuses the debug build).
//! It asserts nothing about speed.

use std::time::Duration;

use fks_bootstrap::config::Config;
use fks_bootstrap::plan::{Action, Plan, Target};
use fks_bootstrap::run;
use fks_bootstrap::ssh::ClusterKeys;
use fks_lab::{Faults, Options, Timings};

mod shared;

use shared::{
    cluster_config, converge, lower_bound, without_volume_chain, without_worker_batches, Converge,
    Counts, Lab, Latencies, Measured,
};

const TOKEN: &str = "scale-bench";
const ORG: &str = "fksbenchsc";
/// Zones of the lab's region. Fly does not publish how many zones (hosts with volume
/// capacity) a region has (unknown); 32 is a guess for a large region, and the plan lets the
/// volumes past it share zones (`--allow-shared-zones`).
const REGION_ZONES: usize = 32;
/// Stated latency of `POST /v1/apps/{app}/volumes`.
const VOLUME_CREATE: Duration = Duration::from_millis(1000);
/// Stated latency of `POST /v1/apps/{app}/machines`.
const MACHINE_CREATE: Duration = Duration::from_millis(500);
/// The lab's `launch` timing (created -> starting).
const LAUNCH: Duration = Duration::from_millis(1000);
/// The lab's `boot` timing (starting -> started).
const STARTING: Duration = Duration::from_millis(10);
/// Stated latency of `POST /apps/{app}/machines/{id}` (an update), a lab `latency` fault.
/// The API-only lab answers an update with the machine already `starting` (no stop of the old
/// instance is modelled: lab/src/api/machines.rs `update` enters `updating` then `starting`
/// at once) and reaches `started` after its `boot` timing [`STARTING`]; so an update takes
/// this + [`STARTING`] from send to `started`. Fly documents that a running Machine is
/// rebooted by an update (a stop/start cycle, reference fly-machines-api.md §2.3) but
/// publishes no latency for it (unknown): 1 s is a round guess, making an update until
/// `started` as long as a create's boot here.
const UPDATE_CALL: Duration = Duration::from_millis(1000);
/// The image the plan gives every machine; pinned by digest as `image::ensure` makes it. The
/// API-only lab runs nothing, so no registry has to hold it.
const IMAGE: &str =
    "127.0.0.1:5000/lab-cp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Workers next to the 3 servers for the 100-node case.
const WORKERS_100: u32 = 97;
/// The large node group.
const WORKERS_500: u32 = 500;
/// Per machine and per run: generous, the 500-node run takes about 9 minutes.
const DEADLINE: Duration = Duration::from_secs(1800);
/// Time for a drained bucket (1/s, burst 3) to fill again; a pause before each case.
const BUCKETS_REFILL: Duration = Duration::from_secs(3);
/// hetzner-k3s's claim for 500 nodes, for comparison (issue 11).
const HETZNER_500: Duration = Duration::from_secs(11 * 60);

const LATENCIES: Latencies = Latencies {
    volume_create: VOLUME_CREATE,
    machine_create: MACHINE_CREATE,
    boot: Duration::from_millis(1010),
    k3s_ready: Duration::ZERO,
    update: UPDATE_CALL.saturating_add(STARTING),
};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench());
}

/// A table row: one or more converges counted as one case.
struct Row {
    case: String,
    runs: Vec<Measured>,
}

impl Row {
    fn nodes(&self) -> usize {
        self.runs.iter().map(|m| m.nodes).sum()
    }
    fn wall(&self) -> f64 {
        self.runs.iter().map(|m| m.wall.as_secs_f64()).sum()
    }
    /// The runs follow one another (a node group needs a started control plane), so their
    /// bounds add up.
    fn bound(&self, lat: &Latencies, f: impl Fn(&Plan) -> Plan) -> f64 {
        self.runs
            .iter()
            .map(|m| lower_bound(&f(&m.plan), lat))
            .sum()
    }
    fn counts(&self) -> Counts {
        self.runs.iter().fold(Counts::default(), |a, m| Counts {
            mutations: a.mutations + m.counts.mutations,
            execs: a.execs + m.counts.execs,
            throttled: a.throttled + m.counts.throttled,
        })
    }
}

/// `config` with `NODE_GROUP_SIZE=size` set on the loaded value. The config file caps
/// NODE_GROUP_SIZE at 64 (`config::validate`), so the CLI cannot make these groups today; the
/// bench sets the field past validation to time the plan and client at this size.
fn group_config(config: &Config, size: u32) -> Config {
    Config {
        node_group_size: size,
        ..config.clone()
    }
}

async fn run_case(lab: &Lab, config: &Config, target: &Target, keys: &ClusterKeys) -> Measured {
    let c = Converge {
        keys,
        zones: REGION_ZONES,
        allow_shared_zones: true,
        k3s: false,
        extra_env: Default::default(),
        run: run::Options {
            started_timeout: DEADLINE,
            k3s_timeout: DEADLINE,
            ..run::Options::default()
        },
        refill: BUCKETS_REFILL,
    };
    converge(lab, config, target, &c).await
}

/// The cases to run: `cargo bench -p fks-lab --bench scale -- [100] [upgrade] [500]` (none:
/// all). `upgrade` needs the 100-node create, so it runs it too.
struct Cases {
    create_100: bool,
    upgrade: bool,
    group_500: bool,
}

impl Cases {
    fn from_args() -> Cases {
        // cargo bench passes `--bench`; case names are the other arguments.
        let names: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        for n in &names {
            assert!(
                ["100", "upgrade", "500"].contains(&n.as_str()),
                "unknown scale case `{n}`: the cases are 100, upgrade, 500"
            );
        }
        let all = names.is_empty();
        let has = |n: &str| all || names.iter().any(|x| x == n);
        Cases {
            create_100: has("100") || has("upgrade"),
            upgrade: has("upgrade"),
            group_500: has("500"),
        }
    }
}

/// `v<major>.<minor + 1>.0+k3s1`: the version `fks-bootstrap upgrade --k3s-version` would be
/// given for one minor up (the skew check refuses more).
fn minor_up(version: &str) -> String {
    let (major, minor) =
        fks_bootstrap::plan::skew::minor_of(version).expect("the lab config's K3S_VERSION");
    format!("v{major}.{}.0+k3s1", minor + 1)
}

/// Panics unless `m`'s plan updates each of its `nodes` machines once and does nothing else:
/// the upgrade row must time the update of every machine, not a partial or mixed plan.
fn assert_updates_all(m: &Measured, nodes: usize) {
    let updates = m
        .plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::UpdateMachine { .. }))
        .count();
    assert_eq!(
        (updates, m.plan.steps.len(), m.nodes),
        (nodes, nodes, nodes),
        "the upgrade of {} should be one update per machine: {}",
        m.plan.app,
        m.plan
    );
}

async fn bench() {
    let cases = Cases::from_args();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir state");
    let cp_config = cluster_config(dir.path(), ORG, 3, IMAGE);
    let keys = ClusterKeys::open(&dir.path().join("keys"), &cp_config.cluster_name).expect("keys");
    let faults = format!(
        "latency=volumes.create:{}ms,machines.create:{}ms,machines.update:{}ms;rate_limits=on",
        VOLUME_CREATE.as_millis(),
        MACHINE_CREATE.as_millis(),
        UPDATE_CALL.as_millis()
    );
    let opts = Options {
        state_dir: state,
        zones: fks_lab::parse_zones(&format!("{}={REGION_ZONES}", cp_config.region))
            .expect("zones"),
        faults: Faults::parse(&faults).expect("faults"),
        seed: 11,
        token: TOKEN.into(),
        timings: Timings {
            launch: LAUNCH,
            boot: STARTING,
            ..Timings::default()
        },
        guests: false,
        bridge: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let lab = Lab {
        base: format!("http://{}", listener.local_addr().expect("addr")),
        token: TOKEN.into(),
        http: reqwest::Client::new(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fks_lab::run(listener, opts, async move {
        let _ = rx.await;
    }));
    lab.wait_up(Duration::from_secs(30)).await;

    println!(
        "scale: API-only lab, machines only (no k3s steps); stated latencies: volume create \
         {VOLUME_CREATE:?}, machine create {MACHINE_CREATE:?}, boot {:?} (lab launch {LAUNCH:?} \
         + boot {STARTING:?}), update until started {:?} (lab update call {UPDATE_CALL:?} + \
         boot {STARTING:?}); lab rate limits on; client buckets = Fly's documented limits; \
         {REGION_ZONES} zones, shared past that; NODE_GROUP_SIZE 97 and 500 set on the loaded \
         config past its 1..64 validation (the CLI refuses them today)",
        LATENCIES.boot, LATENCIES.update
    );
    let mut rows: Vec<Row> = Vec::new();
    // The config the cluster runs (K3S_VERSION moves with the upgrade).
    let mut config = cp_config.clone();
    let cp = Target::control_plane(0).expect("cp target");
    let mut upgrade = None;
    let control_plane = run_case(&lab, &config, &cp, &keys).await;
    println!("  -c (3 servers):        {:.1?}", control_plane.wall);
    if cases.create_100 {
        let g100 = Target::node_group("w97").expect("group");
        let group_100 = run_case(&lab, &group_config(&config, WORKERS_100), &g100, &keys).await;
        println!("  -a (97 workers):       {:.1?}", group_100.wall);
        rows.push(Row {
            case: "-c + -a 97 (100 nodes)".into(),
            runs: vec![control_plane, group_100],
        });
        if cases.upgrade {
            // `upgrade --k3s-version` one minor up: K3S_VERSION is in every node's cluster
            // config file, so every machine drifts (IMAGE is pinned in the bench's config, so
            // no image is built and the image does not change). The control plane first,
            // then the group, as `cli::upgrade` converges them.
            config.k3s_version = minor_up(&config.k3s_version);
            let up_cp = run_case(&lab, &config, &cp, &keys).await;
            assert_updates_all(&up_cp, 3);
            println!(
                "  upgrade {} control plane: {:.1?}",
                config.k3s_version, up_cp.wall
            );
            let up_group = run_case(&lab, &group_config(&config, WORKERS_100), &g100, &keys).await;
            assert_updates_all(&up_group, WORKERS_100 as usize);
            println!("  upgrade w97 (97 workers): {:.1?}", up_group.wall);
            upgrade = Some(rows.len());
            rows.push(Row {
                case: "upgrade (100 nodes)".into(),
                runs: vec![up_cp, up_group],
            });
        }
    }
    let mut group_500 = None;
    if cases.group_500 {
        let g500 = Target::node_group("w500").expect("group");
        let m = run_case(&lab, &group_config(&config, WORKERS_500), &g500, &keys).await;
        println!("  -a (500 workers):      {:.1?}", m.wall);
        group_500 = Some(rows.len());
        rows.push(Row {
            case: "-a 500 (one group)".into(),
            runs: vec![m],
        });
    }

    println!();
    println!(
        "{:<24} {:>5} {:>9} {:>9} {:>8} {:>11} {:>9} {:>5}",
        "case", "nodes", "wall s", "LB s", "wall/LB", "LB Fly-only", "mut/node", "429s"
    );
    for r in &rows {
        let wall = r.wall();
        let lb = r.bound(&LATENCIES, Plan::clone);
        let fly_only = r.bound(&LATENCIES, |p| {
            without_worker_batches(&without_volume_chain(p))
        });
        let c = r.counts();
        println!(
            "{:<24} {:>5} {:>9.1} {:>9.1} {:>8.3} {:>11.1} {:>9.2} {:>5}",
            r.case,
            r.nodes(),
            wall,
            lb,
            wall / lb,
            fly_only,
            c.mutations as f64 / r.nodes() as f64,
            c.throttled,
        );
    }
    println!(
        "target: wall/LB <= 1.1 for creates, <= 1.15 for the upgrade. `LB Fly-only` is the bound \
         with the plan's own pacing dropped, Fly's rate limits alone: creates without the \
         plan's serialised volume creates, the upgrade without its worker batches of {} \
         (servers still one after another). `mut/node` is the lab's `mutations` (2xx calls \
         that change platform state: app, volumes, machines, secrets, leases) per node.",
        fks_bootstrap::plan::update::WORKER_BATCH
    );

    if let Some(i) = upgrade {
        explain_upgrade(&rows[i]);
    }
    // What the 500-node bound is made of, and how it grows with slower volume creates.
    if let Some(i) = group_500 {
        explain_500(&rows[i].runs[0]);
    }

    let _ = tx.send(());
    server.await.expect("lab task").expect("lab run");
}

/// The longest chain of updates in `plan`, each waiting for the one before: servers one at a
/// time count one each, a batch of workers one.
fn update_rounds(plan: &Plan) -> usize {
    let mut depth = vec![0usize; plan.steps.len()];
    for s in &plan.steps {
        let before = s.depends_on.iter().map(|d| depth[d.0]).max().unwrap_or(0);
        let own = usize::from(matches!(s.action, Action::UpdateMachine { .. }));
        depth[s.id.0] = before + own;
    }
    depth.into_iter().max().unwrap_or(0)
}

/// What the upgrade's bound is made of, and what the worker batches cost.
fn explain_upgrade(row: &Row) {
    let rounds: Vec<usize> = row.runs.iter().map(|m| update_rounds(&m.plan)).collect();
    let unbatched: Vec<usize> = row
        .runs
        .iter()
        .map(|m| update_rounds(&without_worker_batches(&m.plan)))
        .collect();
    let total: usize = rounds.iter().sum();
    println!(
        "upgrade: each update waits for the previous round (servers {} one at a time, then \
         {} batches of <= {} workers), so LB ~ {total} x update until started ({:?}) = {:.1} s; \
         Fly's per-machine buckets alone (an update takes one Lease, Update, Wait and Get \
         token of its own machine) would allow {} rounds = {:.1} s: the batches cost {:.1} s.",
        rounds[0],
        rounds[1..].iter().sum::<usize>(),
        fks_bootstrap::plan::update::WORKER_BATCH,
        LATENCIES.update,
        total as f64 * LATENCIES.update.as_secs_f64(),
        unbatched.iter().sum::<usize>(),
        unbatched.iter().sum::<usize>() as f64 * LATENCIES.update.as_secs_f64(),
        row.bound(&LATENCIES, Plan::clone) - row.bound(&LATENCIES, without_worker_batches),
    );
}

/// What the 500-node bound is made of, and how it grows with slower volume creates.
fn explain_500(big: &Measured) {
    let chain_500 = big
        .plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::CreateVolume { .. }))
        .count();
    let wall = big.wall;
    println!(
        "500 nodes: the plan chains its {chain_500} volume creates one after another, so the bound \
         is ~ {chain_500} x max(volume create, 1 s) + machine create + boot; at {VOLUME_CREATE:?} \
         per volume create that chain costs nothing over Fly's own limit (Create Volume 1/s per \
         app), above 1 s it sets the bound:"
    );
    for v in [1000u64, 2000, 3000, 5000] {
        let lat = Latencies {
            volume_create: Duration::from_millis(v),
            ..LATENCIES
        };
        let lb = lower_bound(&big.plan, &lat);
        let free = lower_bound(&without_volume_chain(&big.plan), &lat);
        println!(
            "  volume create {:>4} ms: LB {:>6.1} s ({:>4.1} min), without the chain {:>6.1} s (computed, not run)",
            v,
            lb,
            lb / 60.0,
            free
        );
    }
    let verdict = if wall <= HETZNER_500 { "under" } else { "OVER" };
    println!(
        "500 nodes took {:.1} min here, {verdict} hetzner-k3s's claimed 11 min (theirs includes \
         installing k3s; this run is machines only). With volume creates slower than ~{:.1} s \
         the chained plan alone exceeds 11 min.",
        wall.as_secs_f64() / 60.0,
        (HETZNER_500.as_secs_f64() - 2.0) / chain_500.max(1) as f64
    );
}
