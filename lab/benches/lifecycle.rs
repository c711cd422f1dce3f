//! Issue 5's "Done when" figure: the cluster lifecycle on the lab with real guests and
//! Fly-like latencies. For the control plane (`-c`) and node groups (`-a`) of 3, 6 and 24
//! workers it prints, in one table: the wall time, the lower bound set by the dependency chain
//! and Fly's rate limits, their ratio (target <= 1.15), the wall time of the same steps run one
//! after another (`run::Options.max_parallel = Some(1)`, measured, as k3s.sh did) and the
//! mutating API calls per node (lab `GET /lab/v1/stats` `mutations` delta / nodes; target <= 4).
//!
//! The library is driven as the CLI drives it: `run::observe`, `plan::plan` (k3s steps on,
//! zones = the count the lab is started with, as `fks-lab env` prints it, ssh files from `ssh::ClusterKeys`, env
//! `FKS_ALLOW_MISSING_KERNEL_OPTIONS=1` because this kernel lacks 7 options) and
//! `run::execute` through a `fly::Client` with its default options, so its token buckets hold
//! Fly's documented limits. The lab runs in process with guests (root), its own bridge
//! `fksbn1`, IPv4 172.31.211.0/24 and an org (`fksbenchlc`) whose 6PN /48 no other test uses;
//! the node image is built and pushed to the lab's registry by the real `fks-bootstrap image
//! build --push`, holding `fks-bootstrap` and `k3s-standin` as `k3s` (debug builds).
//!
//! Stated latencies (printed): volume create [`VOLUME_CREATE`] and machine create
//! [`MACHINE_CREATE`] are lab `latency` faults; boot is the lab's `launch` timing [`BOOT`]
//! (created -> starting; the real guest start follows, a few ms); k3s ready is
//! [`K3S_READY`], the stand-in knob `K3S_STANDIN_READY_DELAY` (machine env): each node reports
//! Ready that long after its k3s process started. Lab rate limits are on too (a 429 would show
//! in the table). The figures are kept small so the sequential 24-node case stays short: real
//! k3s takes longer to become Ready, which would only make the parallel ratios better.
//!
//! The lower bound is the finish time of an ideal run of the same plan: every step starts as
//! soon as its dependencies are done and its rate-limit bucket has a token, and takes only its
//! stated latency (every other call counts as instantaneous):
//! - duration: CreateVolume = volume create, CreateMachine = machine create, WaitStarted = boot
//!   (from its create's end); WaitK3sReady cannot end before its node's WaitStarted end + k3s
//!   ready (one Ready check exactly then); all other steps 0;
//! - buckets: one per (Fly action, app or machine) as `fly::ratelimit::Action::limit` gives
//!   (1/s, burst 3; the exec calls of Ready checks, token read and taints share the bucket of
//!   the machine they run on), taken in order of the steps' ready times;
//! - so LB = max over steps of finish(s), with finish(s) = send(s) + duration(s) and
//!   send(s) = the first time >= max(finish of its dependencies[, started + k3s ready]) at which
//!   its bucket has a token.
//!
//! For a node group the plan serialises the volume creates of one app (so an ambiguous create
//! can be told apart), hence LB ~ N x volume create + machine create + boot + k3s ready.
//!
//! Run (root): `cargo bench -p fks-lab --bench lifecycle`. Without root it prints why and exits
//! 0. It asserts nothing about speed. Every case's apps are destroyed (force) before the next;
//! at the end the lab stops and the bridge and any namespace `fksbn1-*` are removed.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fks_bootstrap::config::{self, Config};
use fks_bootstrap::fly::ratelimit::Action as Bucket;
use fks_bootstrap::fly::{self, Client, Token};
use fks_bootstrap::plan::{self, Action, MachineRef, Plan, Ref, Target};
use fks_bootstrap::run;
use fks_bootstrap::ssh::ClusterKeys;
use fks_lab::guest::BridgeConfig;
use fks_lab::{Faults, Options, Timings};
use serde_json::Value;

#[path = "../tests/common/images.rs"]
mod images;

const TOKEN: &str = "lifecycle-bench";
const BRIDGE: &str = "fksbn1";
const ORG: &str = "fksbenchlc";
const REGION_ZONES: usize = 32;
/// Stated latency of `POST /v1/apps/{app}/volumes`.
const VOLUME_CREATE: Duration = Duration::from_millis(1000);
/// Stated latency of `POST /v1/apps/{app}/machines`.
const MACHINE_CREATE: Duration = Duration::from_millis(500);
/// Stated boot time: the lab's `launch` timing (created -> starting).
const BOOT: Duration = Duration::from_millis(1000);
/// Stated time k3s takes to become Ready after it starts (`K3S_STANDIN_READY_DELAY`).
const K3S_READY: Duration = Duration::from_millis(3000);
const GROUPS: [u32; 3] = [3, 6, 24];
const DEADLINE: Duration = Duration::from_secs(300);
/// Time for a drained bucket (1/s, burst 3) to fill again; a pause before each case.
const BUCKETS_REFILL: Duration = Duration::from_secs(3);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("lifecycle: skipped, needs root (guests are network and mount namespaces)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench());
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ has a parent")
        .to_path_buf()
}

/// Builds the guest binaries (debug profile, like the lab's tests) and returns the dir.
fn build_guest_binaries() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    // The variables cargo sets for this bench would make the inner build see another
    // environment and rebuild every time.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR" {
            cmd.env_remove(&*key);
        }
    }
    let status = cmd
        .args([
            "build",
            "-p",
            "fks-bootstrap",
            "--bin",
            "fks-bootstrap",
            "-p",
            "k3s-standin",
            "--bin",
            "k3s-standin",
        ])
        .current_dir(repo_root())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the guest binaries failed");
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("debug")
}

/// Kill the processes of every network namespace named `<prefix>...` and delete it.
fn sweep_netns(prefix: &str) {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "delete", name]).status();
    }
}

/// A copy of `clusters/lab/config` with this bench's org and `NODE_GROUP_SIZE`.
fn cluster_config(root: &Path, size: u32, image: &str) -> Config {
    let text = std::fs::read_to_string(repo_root().join("clusters/lab/config"))
        .expect("clusters/lab/config");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("IMAGE=") {
                format!("IMAGE={image}\n")
            } else if l.starts_with("NODE_GROUP_SIZE=") {
                format!("NODE_GROUP_SIZE={size}\n")
            } else if l.starts_with("ORG_NAME=") {
                format!("ORG_NAME={ORG}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let dir = root.join(format!("cluster-{size}"));
    std::fs::create_dir_all(&dir).expect("config dir");
    std::fs::write(dir.join("config"), text).expect("write config");
    config::load(&dir).expect("bench config is valid")
}

struct Lab {
    base: String,
    http: reqwest::Client,
}

impl Lab {
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("lab answers")
            .json()
            .await
            .expect("json")
    }

    fn client(&self) -> Client {
        Client::new(&self.base, Token::new(TOKEN), fly::Options::default()).expect("client")
    }

    /// Force-deletes `app` and waits until it is gone.
    async fn destroy(&self, app: &str) {
        let c = self.client();
        c.delete_app(app, true).await.expect("delete app");
        let deadline = Instant::now() + DEADLINE;
        while c.get_app(app).await.is_ok() {
            assert!(Instant::now() < deadline, "app {app} never went away");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let the destroyed guests' teardown finish outside the next case's clock.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `/lab/v1/stats` counters this bench reads.
#[derive(Default, Clone, Copy)]
struct Counts {
    mutations: u64,
    execs: u64,
    throttled: u64,
}

fn counts(stats: &Value) -> Counts {
    let mut c = Counts {
        mutations: stats["mutations"].as_u64().unwrap_or(0),
        execs: stats["execs"].as_u64().unwrap_or(0),
        ..Counts::default()
    };
    if let Some(routes) = stats["by_route"].as_object() {
        for statuses in routes.values() {
            let Some(statuses) = statuses.as_object() else {
                continue;
            };
            for (status, n) in statuses {
                let n = n.as_u64().unwrap_or(0);
                if status == "429" {
                    c.throttled += n;
                }
            }
        }
    }
    c
}

struct Measured {
    wall: Duration,
    nodes: usize,
    counts: Counts,
    plan: Plan,
}

/// One CLI-like run: observe, plan, execute; wall time and lab counter deltas.
async fn converge(
    lab: &Lab,
    config: &Config,
    target: &Target,
    keys: &ClusterKeys,
    zones: usize,
    max_parallel: Option<usize>,
) -> Measured {
    let names = plan::node_names(config, target);
    // Keys are made before the clock starts; the CLI makes them once per cluster.
    let node_files = names
        .iter()
        .map(|n| {
            let files = keys
                .node_files(n)
                .expect("node files")
                .iter()
                .map(|f| f.to_machine_file())
                .collect();
            (n.clone(), files)
        })
        .collect();
    let mut extra_env = BTreeMap::new();
    extra_env.insert("FKS_ALLOW_MISSING_KERNEL_OPTIONS".into(), "1".into());
    extra_env.insert(
        "K3S_STANDIN_READY_DELAY".into(),
        K3S_READY.as_millis().to_string(),
    );
    let options = plan::Options {
        zones: Some(zones),
        allow_shared_zones: false,
        k3s: true,
        node_files,
        extra_env,
        image: config
            .image
            .clone()
            .expect("the bench's cluster config names its IMAGE"),
    };
    let run_options = run::Options {
        started_timeout: DEADLINE,
        k3s_timeout: DEADLINE,
        max_parallel,
        ..run::Options::default()
    };
    // Each case is a fresh CLI run whose client starts with full buckets; give the lab's
    // buckets (shared with the previous case, e.g. exec on the control plane) time to refill,
    // so a 429 in the table means the client itself went over a limit.
    tokio::time::sleep(BUCKETS_REFILL).await;
    let client = lab.client();
    let before = counts(&lab.get("/lab/v1/stats").await);
    let started = Instant::now();
    let state = run::observe(&client, config, target)
        .await
        .expect("observe");
    let plan = plan::plan(config, target, &state, &options).expect("plan");
    let summary = run::execute(&client, &plan, &run_options, None)
        .await
        .unwrap_or_else(|e| panic!("run of {} failed: {e}", plan.app));
    let wall = started.elapsed();
    let after = counts(&lab.get("/lab/v1/stats").await);
    Measured {
        wall,
        nodes: summary.nodes.len(),
        counts: Counts {
            mutations: after.mutations - before.mutations,
            execs: after.execs - before.execs,
            throttled: after.throttled - before.throttled,
        },
        plan,
    }
}

/// A token bucket of the ideal run (times in seconds from the run's start).
struct IdealBucket {
    tokens: f64,
    at: f64,
    rate: f64,
    burst: f64,
}

impl IdealBucket {
    /// The first time >= `t` a token is there; takes it.
    fn take(&mut self, t: f64) -> f64 {
        let now = t.max(self.at);
        self.tokens = (self.tokens + (now - self.at) * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            now
        } else {
            let send = now + (1.0 - self.tokens) / self.rate;
            self.tokens = 0.0;
            self.at = send;
            send
        }
    }
}

fn machine_key(m: &MachineRef) -> String {
    match &m.id {
        Ref::Known(id) => id.clone(),
        Ref::Step(s) => format!("made-by-{}", s.0),
    }
}

/// The finish time of the ideal run of `plan` (see the module doc), in seconds.
fn lower_bound(plan: &Plan) -> f64 {
    let secs = |d: Duration| d.as_secs_f64();
    let bucket_of = |a: &Action| -> Option<(Bucket, String)> {
        match a {
            Action::CreateApp { request } => Some((
                Bucket::CreateApp,
                request.app_name().unwrap_or_default().to_string(),
            )),
            Action::CreateVolume { app, .. } => Some((Bucket::CreateVolume, app.clone())),
            Action::CreateMachine { app, .. } => Some((Bucket::CreateMachine, app.clone())),
            Action::StartMachine { machine } => Some((Bucket::StartMachine, machine_key(machine))),
            Action::WaitStarted { .. } => None,
            Action::WaitK3sReady { via, .. } | Action::Taint { via, .. } => {
                Some((Bucket::ExecMachine, machine_key(via)))
            }
            Action::ReadToken { from } => Some((Bucket::ExecMachine, machine_key(from))),
            Action::SetTokenSecret { app, .. } | Action::SetFileSecrets { app, .. } => {
                Some((Bucket::Secrets, app.clone()))
            }
            Action::MarkReady { machine } => Some((Bucket::Metadata, machine_key(machine))),
            // Removal, replacement and update steps: the benchmark times create plans only,
            // which never hold them.
            Action::Cordon { .. }
            | Action::UpdateMachine { .. }
            | Action::ReadBoot { .. }
            | Action::WaitK3sReadyAgain { .. }
            | Action::RemoveMember { .. }
            | Action::WaitMemberHealthy { .. }
            | Action::Drain { .. }
            | Action::DeleteNode { .. }
            | Action::DestroyMachine { .. }
            | Action::DeleteVolume { .. }
            | Action::DeleteSecret { .. }
            | Action::DeleteApp { .. } => None,
        }
    };
    let mut buckets: HashMap<(Bucket, String), IdealBucket> = HashMap::new();
    let mut finish: Vec<Option<f64>> = vec![None; plan.steps.len()];
    // Machine -> when it reached `started` (for the k3s ready time).
    let mut started: HashMap<String, f64> = HashMap::new();
    loop {
        // The ready step with the earliest release time goes next, so buckets serve in order.
        let mut next: Option<(f64, usize)> = None;
        for s in &plan.steps {
            if finish[s.id.0].is_some() {
                continue;
            }
            let deps: Option<Vec<f64>> = s.depends_on.iter().map(|d| finish[d.0]).collect();
            let Some(deps) = deps else { continue };
            let mut release = deps.into_iter().fold(0.0, f64::max);
            if let Action::WaitK3sReady { machine, .. } = &s.action {
                if let Some(t) = started.get(&machine_key(machine)) {
                    release = release.max(t + secs(K3S_READY));
                }
            }
            if next.is_none_or(|(r, _)| release < r) {
                next = Some((release, s.id.0));
            }
        }
        let Some((release, i)) = next else { break };
        let step = &plan.steps[i];
        let send = match bucket_of(&step.action) {
            Some((b, scope)) => {
                let limit = b.limit();
                buckets
                    .entry((b, scope))
                    .or_insert(IdealBucket {
                        tokens: limit.burst,
                        at: 0.0,
                        rate: limit.per_second,
                        burst: limit.burst,
                    })
                    .take(release)
            }
            None => release,
        };
        let duration = match &step.action {
            Action::CreateVolume { .. } => secs(VOLUME_CREATE),
            Action::CreateMachine { .. } => secs(MACHINE_CREATE),
            Action::WaitStarted { .. } => secs(BOOT),
            _ => 0.0,
        };
        let done = send + duration;
        if let Action::WaitStarted { machine } = &step.action {
            started.insert(machine_key(machine), done);
        }
        finish[i] = Some(done);
    }
    finish.into_iter().flatten().fold(0.0, f64::max)
}

struct Row {
    case: String,
    parallel: Measured,
    sequential: Measured,
}

async fn bench() {
    let prefix = fks_lab::ids::network_prefix(ORG).segments();
    let at = |last: u16| std::net::Ipv6Addr::new(prefix[0], prefix[1], prefix[2], 0, 0, 0, 0, last);
    let bridge = BridgeConfig {
        name: BRIDGE.into(),
        gateway6: at(1),
        prefix6: 48,
        dns6: at(3),
        gateway4: Ipv4Addr::new(172, 31, 211, 1),
        prefix4: 24,
    };
    sweep_netns(&format!("{BRIDGE}-"));
    fks_lab::guest::remove_bridge(&bridge.name).expect("removing a stale bridge");
    let bin = build_guest_binaries();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir state");
    // The node image as the product builds and pushes it, in the lab's registry.
    let registry = fks_lab::registry::Registry::start(&state, TOKEN)
        .await
        .expect("registry");
    let host = registry.host();
    let image = tokio::task::spawn_blocking(move || {
        images::push_node_image(
            &host,
            TOKEN,
            &bin.join("fks-bootstrap"),
            &bin.join("k3s-standin"),
        )
    })
    .await
    .expect("node image thread");
    let cp_config = cluster_config(dir.path(), 3, &image);
    let keys = ClusterKeys::open(&dir.path().join("keys"), &cp_config.cluster_name).expect("keys");

    let faults = format!(
        "latency=volumes.create:{}ms,machines.create:{}ms;rate_limits=on",
        VOLUME_CREATE.as_millis(),
        MACHINE_CREATE.as_millis()
    );
    let timings = Timings {
        launch: BOOT,
        ..Timings::default()
    };
    let opts = Options {
        state_dir: state,
        zones: fks_lab::parse_zones(&format!("{}={REGION_ZONES}", cp_config.region))
            .expect("zones"),
        faults: Faults::parse(&faults).expect("faults"),
        seed: 11,
        token: TOKEN.into(),
        timings,
        guests: true,
        bridge: bridge.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let lab = Lab {
        base: format!("http://{}", listener.local_addr().expect("addr")),
        http: reqwest::Client::new(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fks_lab::run(listener, opts, async move {
        let _ = rx.await;
    }));
    let deadline = Instant::now() + DEADLINE;
    while lab
        .http
        .get(format!("{}/lab/v1/stats", lab.base))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "lab did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // As the CLI gets it: the zone count the lab was started with, which `fks-lab env` prints
    // as FKS_REGION_ZONES (`fks_lab::client_env`).
    let zones = REGION_ZONES;

    println!(
        "lifecycle: stated latencies: volume create {VOLUME_CREATE:?}, machine create {MACHINE_CREATE:?}, \
         boot {BOOT:?} (lab launch timing), k3s ready {K3S_READY:?} (K3S_STANDIN_READY_DELAY); \
         lab rate limits on; client buckets = Fly's documented limits; poll {:?}",
        run::Options::default().poll
    );
    let cp = Target::control_plane(0).expect("cp target");
    let mut rows = Vec::new();

    // Control plane: sequential first, destroyed, then the parallel one the groups join.
    let sequential = converge(&lab, &cp_config, &cp, &keys, zones, Some(1)).await;
    println!("  -c sequential: {:.1?}", sequential.wall);
    lab.destroy(&cp_config.cp_app()).await;
    let parallel = converge(&lab, &cp_config, &cp, &keys, zones, None).await;
    println!("  -c parallel:   {:.1?}", parallel.wall);
    rows.push(Row {
        case: "-c (control plane)".into(),
        parallel,
        sequential,
    });

    for size in GROUPS {
        let config = cluster_config(dir.path(), size, &image);
        let par_target = Target::node_group(&format!("p{size}")).expect("group");
        let parallel = converge(&lab, &config, &par_target, &keys, zones, None).await;
        println!("  -a {size} parallel:   {:.1?}", parallel.wall);
        lab.destroy(&par_target.app(&config)).await;
        let seq_target = Target::node_group(&format!("s{size}")).expect("group");
        let sequential = converge(&lab, &config, &seq_target, &keys, zones, Some(1)).await;
        println!("  -a {size} sequential: {:.1?}", sequential.wall);
        lab.destroy(&seq_target.app(&config)).await;
        rows.push(Row {
            case: format!("-a (group of {size})"),
            parallel,
            sequential,
        });
    }
    lab.destroy(&cp_config.cp_app()).await;

    println!();
    println!(
        "{:<20} {:>5} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10} {:>10} {:>5}",
        "case",
        "nodes",
        "wall s",
        "LB s",
        "wall/LB",
        "seq s",
        "wall/seq",
        "mut/node",
        "exec/node",
        "429s"
    );
    for r in &rows {
        let p = &r.parallel;
        let lb = lower_bound(&p.plan);
        let wall = p.wall.as_secs_f64();
        let nodes = p.nodes as f64;
        println!(
            "{:<20} {:>5} {:>8.2} {:>8.2} {:>8.3} {:>9.2} {:>8.3} {:>10.2} {:>10.2} {:>5}",
            r.case,
            p.nodes,
            wall,
            lb,
            wall / lb,
            r.sequential.wall.as_secs_f64(),
            wall / r.sequential.wall.as_secs_f64(),
            p.counts.mutations as f64 / nodes,
            p.counts.execs as f64 / nodes,
            p.counts.throttled + r.sequential.counts.throttled,
        );
    }
    println!(
        "targets: wall/LB <= 1.15; mutating calls per node <= 4. `mut/node` is the lab's \
         `mutations` (2xx calls that change platform state: app, volumes, machines, secrets, \
         ready marks); `exec/node` the commands run in machines (Ready checks, token read, \
         taints), which change nothing on the platform. Sequential = run::Options.max_parallel \
         = Some(1), node by node as k3s.sh, measured."
    );

    let _ = tx.send(());
    server.await.expect("lab task").expect("lab run");
    sweep_netns(&format!("{BRIDGE}-"));
    fks_lab::guest::remove_bridge(&bridge.name).expect("removing the bridge");
}
