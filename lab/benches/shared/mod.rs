//! What the create benchmarks share (`lifecycle`, with guests; `scale`, API-only): the lab
//! they drive (`/lab/v1/stats` counters, force-destroying an app), the bench's copy of
//! `clusters/lab/config`, one CLI-like converge (observe, plan, execute, timed), and the lower
//! bound of a create or update plan ([`lower_bound`]): the finish time of an ideal run of the
//! same plan under stated latencies and Fly's token buckets.
//!
//! The lower bound model: every step starts as soon as its dependencies are done, makes its
//! calls one after another, each as soon as its rate-limit bucket has a token, and a call takes
//! only its stated latency (every other call counts as instantaneous):
//! - latency: CreateVolume = volume create, CreateMachine = machine create, WaitStarted = boot
//!   (from its create's end); UpdateMachine = lease acquire, then the update until its new
//!   version is started = update, then the wait's answer, a GET of the machine and the lease
//!   release (the calls `run::update_machine` makes); WaitK3sReady and WaitK3sReadyAgain
//!   cannot end before their node's WaitStarted or UpdateMachine end + k3s ready (one Ready
//!   check exactly then); all other steps 0;
//! - buckets: one per (Fly action, app or machine) as `fly::ratelimit::Action::limit` gives
//!   (1/s, burst 3, reference fly-machines-api.md §5; the exec calls of Ready checks, boot
//!   reads, member checks, token read and taints share the bucket of the machine they run on;
//!   an update's lease, update, wait and GET calls take the updated machine's own buckets),
//!   taken in order of the steps' ready times (a step's later calls take theirs when the step
//!   is taken: exact while no two steps share those buckets, as in an update rollout);
//! - so LB = max over steps of finish(s), with finish(s) the end of its last call and each
//!   call sent at the first time >= the end of the call before (for the first: max(finish of
//!   its dependencies[, started + k3s ready])) at which its bucket has a token.
//!
//! For a node group the plan serialises the volume creates of one app (so an ambiguous create
//! can be told apart), hence LB ~ N x max(volume create, 1 s) + machine create + boot
//! [+ k3s ready]. [`without_volume_chain`] drops that chain, for the bound Fly's rate limits
//! alone would set. An update rollout (`plan::update::rollout`) has servers one after another
//! and workers in batches of `WORKER_BATCH`, each batch after the previous one, hence LB ~
//! (servers + ceil(workers / batch)) x update; [`without_worker_batches`] drops the batches
//! (Fly's per-machine buckets never bind one update per machine, so that bound is ~ (servers
//! + 1) x update).
//!
//! Bench code: panics on a failed setup, asserts nothing about speed. Each bench uses a subset,
//! hence the `dead_code` allowance below.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use fks_bootstrap::config::{self, Config};
use fks_bootstrap::fly::ratelimit::Action as Bucket;
use fks_bootstrap::fly::{self, Client, Token};
use fks_bootstrap::plan::{self, Action, MachineRef, Plan, Ref, Role, Target};
use fks_bootstrap::run;
use fks_bootstrap::ssh::ClusterKeys;
use serde_json::Value;

/// The stated latencies an ideal run of a plan takes (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Latencies {
    /// `POST /v1/apps/{app}/volumes`.
    pub volume_create: Duration,
    /// `POST /v1/apps/{app}/machines`.
    pub machine_create: Duration,
    /// From a machine create's answer to `started`.
    pub boot: Duration,
    /// From `started` to k3s Ready (0 when no k3s steps are planned).
    pub k3s_ready: Duration,
    /// From sending `POST /apps/{app}/machines/{id}` (an update) to its new version
    /// `started` (0 for a bench that times no update).
    pub update: Duration,
}

/// The workspace root.
pub fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ has a parent")
        .to_path_buf()
}

/// A copy of `clusters/lab/config` under `root` with `org`, `NODE_GROUP_SIZE=size` and `image`.
pub fn cluster_config(root: &Path, org: &str, size: u32, image: &str) -> Config {
    let text = std::fs::read_to_string(repo_root().join("clusters/lab/config"))
        .expect("clusters/lab/config");
    // `clusters/lab/config` names no IMAGE (`-c` builds one); the bench's copy names it.
    let mut text: String = text
        .lines()
        .filter(|l| !l.starts_with("IMAGE="))
        .map(|l| {
            if l.starts_with("NODE_GROUP_SIZE=") {
                format!("NODE_GROUP_SIZE={size}\n")
            } else if l.starts_with("ORG_NAME=") {
                format!("ORG_NAME={org}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    text.push_str(&format!("IMAGE={image}\n"));
    let dir = root.join(format!("cluster-{size}"));
    std::fs::create_dir_all(&dir).expect("config dir");
    std::fs::write(dir.join("config"), text).expect("write config");
    config::load(&dir).expect("bench config is valid")
}

/// The lab a bench drives, in process.
pub struct Lab {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The API token.
    pub token: String,
    /// For the lab's introspection.
    pub http: reqwest::Client,
}

impl Lab {
    /// `GET` a lab path as JSON.
    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("lab answers")
            .json()
            .await
            .expect("json")
    }

    /// Waits until the lab answers.
    pub async fn wait_up(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        while self
            .http
            .get(format!("{}/lab/v1/stats", self.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < until, "lab did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The product's client with its default options: its token buckets hold Fly's
    /// documented limits.
    pub fn client(&self) -> Client {
        Client::new(&self.base, Token::new(&self.token), fly::Options::default()).expect("client")
    }

    /// Force-deletes `app` and waits until it is gone.
    pub async fn destroy(&self, app: &str, deadline: Duration) {
        let c = self.client();
        c.delete_app(app, true).await.expect("delete app");
        let until = Instant::now() + deadline;
        while c.get_app(app).await.is_ok() {
            assert!(Instant::now() < until, "app {app} never went away");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let the destroyed guests' teardown finish outside the next case's clock.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `/lab/v1/stats` counters the benches read.
#[derive(Default, Clone, Copy)]
pub struct Counts {
    /// 2xx calls that change platform state.
    pub mutations: u64,
    /// Commands run in machines.
    pub execs: u64,
    /// 429 answers.
    pub throttled: u64,
}

impl Counts {
    /// `self - before`.
    pub fn since(self, before: Counts) -> Counts {
        Counts {
            mutations: self.mutations - before.mutations,
            execs: self.execs - before.execs,
            throttled: self.throttled - before.throttled,
        }
    }
}

/// The counters of a `/lab/v1/stats` answer.
pub fn counts(stats: &Value) -> Counts {
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
                if status == "429" {
                    c.throttled += n.as_u64().unwrap_or(0);
                }
            }
        }
    }
    c
}

/// One timed converge.
pub struct Measured {
    /// Observe + plan + execute.
    pub wall: Duration,
    /// Nodes in the run's summary.
    pub nodes: usize,
    /// Lab counter deltas.
    pub counts: Counts,
    /// The plan that ran.
    pub plan: Plan,
}

/// What a converge plans and runs with, besides the config and target.
pub struct Converge<'a> {
    /// The cluster's ssh keys (node files are made before the clock starts, as the CLI makes
    /// them once per cluster).
    pub keys: &'a ClusterKeys,
    /// `FKS_REGION_ZONES`, as `fks-lab env` prints it.
    pub zones: usize,
    /// `--allow-shared-zones`.
    pub allow_shared_zones: bool,
    /// Plan the k3s steps (false: `--machines-only`).
    pub k3s: bool,
    /// Extra env for every machine.
    pub extra_env: BTreeMap<String, String>,
    /// The run's options.
    pub run: run::Options,
    /// Pause before the clock starts, so the lab's buckets (shared with the previous case)
    /// refill: a 429 in a table then means the client itself went over a limit.
    pub refill: Duration,
}

/// One CLI-like run: observe, plan, execute; wall time and lab counter deltas.
pub async fn converge(lab: &Lab, config: &Config, target: &Target, c: &Converge<'_>) -> Measured {
    let node_files = plan::node_names(config, target)
        .iter()
        .map(|n| {
            let files = c
                .keys
                .node_files(n)
                .expect("node files")
                .iter()
                .map(|f| f.to_machine_file())
                .collect();
            (n.clone(), files)
        })
        .collect();
    let options = plan::Options {
        zones: Some(c.zones),
        allow_shared_zones: c.allow_shared_zones,
        k3s: c.k3s,
        node_files,
        extra_env: c.extra_env.clone(),
        image: config
            .image
            .clone()
            .expect("the bench's cluster config names its IMAGE"),
        max_unavailable: plan::update::WORKER_BATCH,
    };
    tokio::time::sleep(c.refill).await;
    let client = lab.client();
    let before = counts(&lab.get("/lab/v1/stats").await);
    let started = Instant::now();
    let state = run::observe(&client, config, target)
        .await
        .expect("observe");
    let plan = plan::plan(config, target, &state, &options).expect("plan");
    let summary = run::execute(&client, &plan, &c.run, None)
        .await
        .unwrap_or_else(|e| panic!("run of {} failed: {e}", plan.app));
    let wall = started.elapsed();
    let after = counts(&lab.get("/lab/v1/stats").await);
    Measured {
        wall,
        nodes: summary.nodes.len(),
        counts: after.since(before),
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

/// One call of a step in the ideal run: the bucket it takes a token from (if any) and how long
/// after it is sent the next call (or the step's end) can follow.
type IdealCall = (Option<(Bucket, String)>, f64);

/// The calls a step makes, one after another (see the module doc).
fn calls_of(a: &Action, lat: &Latencies) -> Vec<IdealCall> {
    let secs = |d: Duration| d.as_secs_f64();
    let one = |b: Bucket, scope: String, d: f64| vec![(Some((b, scope)), d)];
    match a {
        Action::CreateApp { request } => one(
            Bucket::CreateApp,
            request.app_name().unwrap_or_default().to_string(),
            0.0,
        ),
        Action::CreateVolume { app, .. } => {
            one(Bucket::CreateVolume, app.clone(), secs(lat.volume_create))
        }
        Action::CreateMachine { app, .. } => {
            one(Bucket::CreateMachine, app.clone(), secs(lat.machine_create))
        }
        Action::StartMachine { machine } => one(Bucket::StartMachine, machine_key(machine), 0.0),
        Action::WaitStarted { .. } => vec![(None, secs(lat.boot))],
        Action::WaitK3sReady { via, .. } | Action::Taint { via, .. } => {
            one(Bucket::ExecMachine, machine_key(via), 0.0)
        }
        Action::ReadToken { from } => one(Bucket::ExecMachine, machine_key(from), 0.0),
        Action::SetTokenSecret { app, .. } | Action::SetFileSecrets { app, .. } => {
            one(Bucket::Secrets, app.clone(), 0.0)
        }
        Action::MarkReady { machine } | Action::SetMetadata { machine, .. } => {
            one(Bucket::Metadata, machine_key(machine), 0.0)
        }
        // `run::update_machine`: lease acquire, the update (with the nonce) until the new
        // version is started, the wait call's answer, a GET of the machine, lease release.
        // All buckets are the machine's own (reference fly-machines-api.md §5: "Stop/start/
        // update calls on different Machines have separate buckets").
        Action::UpdateMachine { machine, .. } => {
            let m = machine_key(machine);
            vec![
                (Some((Bucket::Lease, m.clone())), 0.0),
                (Some((Bucket::UpdateMachine, m.clone())), secs(lat.update)),
                (Some((Bucket::WaitMachine, m.clone())), 0.0),
                (Some((Bucket::GetMachine, m.clone())), 0.0),
                (Some((Bucket::Lease, m)), 0.0),
            ]
        }
        // Planned only with k3s steps: kubectl (exec) on `via`. WaitK3sReadyAgain is released
        // no earlier than the update's end + k3s ready, like WaitK3sReady.
        Action::ReadBoot { via, .. }
        | Action::Uncordon { via, .. }
        | Action::WaitK3sReadyAgain { via, .. }
        | Action::WaitMemberHealthy { via, .. } => one(Bucket::ExecMachine, machine_key(via), 0.0),
        // Removal and replacement steps: the benchmarks time create and update plans only,
        // which never hold them.
        Action::Cordon { .. }
        | Action::RemoveMember { .. }
        | Action::RemoveMembersOf { .. }
        | Action::Drain { .. }
        | Action::DeleteNode { .. }
        | Action::DestroyMachine { .. }
        | Action::DeleteVolume { .. }
        | Action::DeleteSecret { .. }
        | Action::DeleteApp { .. } => vec![(None, 0.0)],
    }
}

/// The finish time of the ideal run of `plan` under `lat` (see the module doc), in seconds.
pub fn lower_bound(plan: &Plan, lat: &Latencies) -> f64 {
    let secs = |d: Duration| d.as_secs_f64();
    let mut buckets: HashMap<(Bucket, String), IdealBucket> = HashMap::new();
    let mut finish: Vec<Option<f64>> = vec![None; plan.steps.len()];
    // Machine -> when it reached `started` (for the k3s ready time).
    let mut started: HashMap<String, f64> = HashMap::new();
    // Steps not yet finished; each round takes the one with the earliest release time.
    let mut pending: Vec<usize> = (0..plan.steps.len()).collect();
    loop {
        // The ready step with the earliest release time goes next, so buckets serve in order.
        let mut next: Option<(f64, usize, usize)> = None;
        for (slot, &i) in pending.iter().enumerate() {
            let s = &plan.steps[i];
            let deps: Option<Vec<f64>> = s.depends_on.iter().map(|d| finish[d.0]).collect();
            let Some(deps) = deps else { continue };
            let mut release = deps.into_iter().fold(0.0, f64::max);
            if let Action::WaitK3sReady { machine, .. }
            | Action::WaitK3sReadyAgain { machine, .. } = &s.action
            {
                if let Some(t) = started.get(&machine_key(machine)) {
                    release = release.max(t + secs(lat.k3s_ready));
                }
            }
            if next.is_none_or(|(r, _, _)| release < r) {
                next = Some((release, i, slot));
            }
        }
        let Some((release, i, slot)) = next else {
            break;
        };
        // `remove` keeps the scan in plan order, so ties go to the earlier step.
        pending.remove(slot);
        let step = &plan.steps[i];
        let mut t = release;
        for (bucket, after) in calls_of(&step.action, lat) {
            if let Some((b, scope)) = bucket {
                let limit = b.limit();
                t = buckets
                    .entry((b, scope))
                    .or_insert(IdealBucket {
                        tokens: limit.burst,
                        at: 0.0,
                        rate: limit.per_second,
                        burst: limit.burst,
                    })
                    .take(t);
            }
            t += after;
        }
        let done = t;
        match &step.action {
            Action::WaitStarted { machine } => {
                started.insert(machine_key(machine), done);
            }
            // An update's step ends when the new version is started.
            Action::UpdateMachine { machine, .. } => {
                started.insert(machine_key(machine), done);
            }
            _ => {}
        }
        finish[i] = Some(done);
    }
    finish.into_iter().flatten().fold(0.0, f64::max)
}

/// `plan` with its workers' updates not batched: every rollout step of an agent (ReadBoot,
/// UpdateMachine, WaitK3sReadyAgain) drops its dependencies on other agents' rollout steps,
/// keeping those on what came before the rollout and on its own node's steps. What the bound
/// would be if Fly's per-machine buckets alone paced the workers; servers stay one after
/// another (a plan of a control plane is unchanged).
pub fn without_worker_batches(plan: &Plan) -> Plan {
    let mut p = plan.clone();
    let agents: HashSet<&str> = plan
        .nodes
        .iter()
        .filter(|n| n.role == Role::Agent)
        .map(|n| n.name.as_str())
        .collect();
    let rollout = |s: &plan::Step| {
        matches!(
            s.action,
            Action::ReadBoot { .. }
                | Action::UpdateMachine { .. }
                | Action::WaitK3sReadyAgain { .. }
        )
    };
    let agent_rollout: Vec<Option<&str>> = plan
        .steps
        .iter()
        .map(|s| {
            s.node
                .as_deref()
                .filter(|n| agents.contains(n) && rollout(s))
        })
        .collect();
    for (i, s) in p.steps.iter_mut().enumerate() {
        let Some(node) = agent_rollout[i] else {
            continue;
        };
        s.depends_on
            .retain(|d| agent_rollout[d.0].is_none_or(|other| other == node));
    }
    p
}

/// `plan` without the chain that serialises its volume creates (each CreateVolume's
/// dependency on the one before): what the bound would be if Fly's rate limits alone
/// throttled the creates.
pub fn without_volume_chain(plan: &Plan) -> Plan {
    let mut p = plan.clone();
    let is_volume: Vec<bool> = p
        .steps
        .iter()
        .map(|s| matches!(s.action, Action::CreateVolume { .. }))
        .collect();
    for s in &mut p.steps {
        if matches!(s.action, Action::CreateVolume { .. }) {
            s.depends_on.retain(|d| !is_volume[d.0]);
        }
    }
    p
}
