//! The fault matrix of issue 5 §5 through the real `fks-bootstrap` binary against an
//! in-process API-only lab (with `FKS_MACHINES_ONLY=1` from its env the CLI skips the k3s steps): rate limits on, 5% 5xx,
//! ambiguous creates, a zone out of capacity (with and without `--allow-shared-zones`), a
//! machine crashing once at boot, their combinations, and the tool SIGKILLed at seeded random
//! points. Each case runs `create` and `nodegroup add` (long and short forms) until they succeed
//! (bounded), then checks the invariants: converged, one machine per node, no orphan volume, no
//! duplicate app, zones distinct while they last, a re-run makes zero mutations, and `destroy
//! --yes` leaves nothing of the cluster.
//!
//! Every failure message carries the seed, the lab's zones and faults, the command history with
//! each run's stderr, and the lab's state. `FKS_FAULTS_SEED=N` replaces the base seed.
//! Must not: need root, touch the network beyond 127.0.0.1, or assert on timing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fks_bootstrap::fly::types::{Machine, MachineListFilter, MachineState, Volume};
use fks_bootstrap::fly::{Client, Options as ClientOptions, RetryPolicy, Token};
use fks_bootstrap::plan::{META_CLUSTER, META_NODE};
use rand::{Rng, SeedableRng};
use serde_json::Value;

mod common;

/// Panic with a message, the case's context (seed, lab settings, history) and the lab's state.
macro_rules! fail {
    ($case:expr, $msg:expr) => {{
        let msg = $msg;
        let state = $case.dump().await;
        panic!("{msg}\n{}\nlab state:\n{state}", $case.context())
    }};
}

const TOKEN: &str = "faults-test-token";
/// Relative to the case's home: a copy of clusters/lab whose IMAGE is in the case's registry.
const CLUSTER_DIR: &str = "clusters/lab";
const CLUSTER: &str = "lab";
const CP_APP: &str = "lab-cp";
const GROUP: &str = "0";
const GROUP_APP: &str = "lab-ng-0";
/// clusters/lab's NODE_GROUP_SIZE.
const GROUP_SIZE: usize = 3;
/// Runs of one command before a case gives up converging.
const MAX_RUNS: usize = 6;
/// The tool's per-wait deadline in these runs (generous: the lab boots in milliseconds).
const TOOL_TIMEOUT: &str = "30";

/// The base seed (`FKS_FAULTS_SEED` overrides it); each case derives its own from it.
fn base_seed() -> u64 {
    std::env::var("FKS_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d)
}

fn derive(base: u64, salt: u64) -> u64 {
    base.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt
}

/// One cell of the matrix.
#[derive(Debug, Clone)]
struct Scenario {
    /// The test that runs it (for the reproduce line).
    test: &'static str,
    /// How many zones region sjc has.
    zones: usize,
    /// The lab's `--faults`, without the capacity clause.
    faults: String,
    /// Put the first zone of sjc out of capacity.
    full_zone: bool,
    /// Pass `--allow-shared-zones`.
    share: bool,
    /// Use `-c` / `-a` instead of `create` / `nodegroup add`.
    short: bool,
    seed: u64,
    /// The lab's `starting` → `started` time.
    boot: Duration,
}

impl Scenario {
    fn new(test: &'static str, faults: &str, salt: u64) -> Scenario {
        let seed = derive(base_seed(), salt);
        Scenario {
            test,
            zones: 3,
            faults: faults.to_string(),
            full_zone: false,
            share: false,
            short: seed % 2 == 1,
            seed,
            boot: Duration::from_millis(30),
        }
    }
}

/// What one run of the binary did.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// A lab with one scenario's faults, the tool's home, an inspecting client and the history.
struct Case {
    s: Scenario,
    lab: common::ApiLab,
    client: Client,
    /// The tool's home and working directory, holding [`CLUSTER_DIR`].
    home: tempfile::TempDir,
    /// The lab's registry: `-c`/`-a` resolve the cluster's IMAGE through it.
    registry: common::LabRegistry,
    /// The zone out of capacity, if any.
    full: Option<String>,
    /// Every command run so far with its result (for failure messages).
    log: String,
    /// Lines the commands logged on stderr about an ambiguous create (all of them plain
    /// text: a pipe gets no colour escapes).
    ambiguous_logged: usize,
}

impl Case {
    async fn start(s: Scenario) -> Case {
        let mut faults = s.faults.clone();
        let mut full = None;
        if s.full_zone {
            // Zone ids are the lab's; learn them from a lab with the same seed and zones.
            let probe =
                common::start_api_lab(&format!("sjc={}", s.zones), "", s.seed, s.boot, TOKEN).await;
            let zones = lab_get(&probe.base, "/lab/v1/zones").await;
            let z = zones["sjc"][0].as_str().expect("a zone id").to_string();
            if !faults.is_empty() {
                faults.push(';');
            }
            faults.push_str(&format!("capacity=sjc:{z}"));
            full = Some(z);
        }
        let lab =
            common::start_api_lab(&format!("sjc={}", s.zones), &faults, s.seed, s.boot, TOKEN)
                .await;
        let options = ClientOptions {
            seed: Some(s.seed),
            create_settle: Duration::from_millis(50),
            retry: RetryPolicy {
                max_attempts: 20,
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(500),
                max_elapsed: Duration::from_secs(30),
            },
            ..ClientOptions::default()
        };
        let client = Client::new(&lab.base, Token::new(TOKEN), options).expect("client");
        let mut s = s;
        s.faults = faults;
        let home = tempfile::tempdir().expect("tempdir");
        let registry = common::LabRegistry::start(TOKEN).await;
        let image = registry.push_tiny(TOKEN);
        common::lab_cluster(&home.path().join(CLUSTER_DIR), &[format!("IMAGE={image}")]);
        Case {
            s,
            lab,
            client,
            home,
            registry,
            full,
            log: String::new(),
            ambiguous_logged: 0,
        }
    }

    /// Everything needed to reproduce: seed, lab settings, commands and their output.
    fn context(&self) -> String {
        format!(
            "reproduce: FKS_FAULTS_SEED={} cargo test -p fks-lab --test faults {}\n\
             case seed {} | lab zones sjc={} | faults `{}` | full zone {:?} | --allow-shared-zones {} | short forms {}\n\
             history:\n{}",
            base_seed(),
            self.s.test,
            self.s.seed,
            self.s.zones,
            self.s.faults,
            self.full,
            self.s.share,
            self.s.short,
            self.log
        )
    }

    /// The lab's apps, machines, volumes and secret names, its mutation count, and what the
    /// tool would do next (`--dry-run` of create and nodegroup add).
    async fn dump(&self) -> String {
        let mut out = String::new();
        for mut args in [self.create_args(), self.group_args()] {
            args.push("--dry-run".into());
            match self.command(&args).output().await {
                Ok(o) => {
                    let _ = writeln!(
                        out,
                        "  $ fks-bootstrap {} -> {:?}\n{}{}",
                        args.join(" "),
                        o.status.code(),
                        indent(&String::from_utf8_lossy(&o.stdout)),
                        indent(&tail(&String::from_utf8_lossy(&o.stderr), 3))
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "  dry run failed to start: {e}");
                }
            }
        }
        let stats = lab_get(&self.lab.base, "/lab/v1/stats").await;
        let _ = writeln!(out, "  mutations {}", stats["mutations"]);
        let apps = match self.client.list_apps("personal").await {
            Ok(a) => a.apps,
            Err(e) => {
                let _ = writeln!(out, "  listing apps failed: {e}");
                return out;
            }
        };
        for app in apps {
            let _ = writeln!(out, "  app {}", app.name);
            match self
                .client
                .list_machines(&app.name, &MachineListFilter::default())
                .await
            {
                Ok(ms) => {
                    for m in ms {
                        let _ = writeln!(
                            out,
                            "    machine {} state {} node {:?} cluster {:?}",
                            m.id,
                            m.state,
                            m.metadata(META_NODE),
                            m.metadata(META_CLUSTER)
                        );
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "    listing machines failed: {e}");
                }
            }
            match self.client.list_volumes(&app.name).await {
                Ok(vs) => {
                    for v in vs {
                        let _ = writeln!(
                            out,
                            "    volume {} state {:?} zone {} attached {:?}",
                            v.id, v.state, v.zone, v.attached_machine_id
                        );
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "    listing volumes failed: {e}");
                }
            }
            match self.client.list_secrets(&app.name).await {
                Ok(ss) => {
                    let names: Vec<String> = ss.into_iter().map(|s| s.name).collect();
                    let _ = writeln!(out, "    secrets {names:?}");
                }
                Err(e) => {
                    let _ = writeln!(out, "    listing secrets failed: {e}");
                }
            }
        }
        out
    }

    async fn mutations(&self) -> u64 {
        lab_get(&self.lab.base, "/lab/v1/stats").await["mutations"]
            .as_u64()
            .expect("mutations count")
    }

    /// The binary with this case's lab, token and home; stdin is not a terminal.
    fn command(&self, args: &[String]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(common::fks_bootstrap_binary());
        cmd.args(args)
            .current_dir(self.home.path())
            .envs(self.lab.env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(self.registry.env())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env_remove("RUST_LOG")
            .env_remove("BOOTSTRAP_NODE_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Run the binary to its end and record the run.
    async fn fks(&mut self, args: &[String]) -> Outcome {
        let t = Instant::now();
        let out = self
            .command(args)
            .output()
            .await
            .expect("running fks-bootstrap");
        let o = Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !o.stderr.contains('\u{1b}'),
            "colour escapes on a pipe: {:?}",
            o.stderr
        );
        self.ambiguous_logged += o
            .stderr
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains("create was ambiguous"))
            .count();
        let _ = writeln!(
            self.log,
            "  $ fks-bootstrap {} -> exit {:?} after {:?}\n{}",
            args.join(" "),
            o.code,
            t.elapsed(),
            indent(&tail(&o.stderr, 12))
        );
        o
    }

    /// `create` (or `-c`) with this case's flags.
    fn create_args(&self) -> Vec<String> {
        let mut a: Vec<String> = if self.s.short {
            vec!["-c".into(), CLUSTER_DIR.into()]
        } else {
            vec!["create".into(), CLUSTER_DIR.into()]
        };
        self.flags(&mut a);
        a
    }

    /// `nodegroup add 0` (or `-a 0`) with this case's flags.
    fn group_args(&self) -> Vec<String> {
        let mut a: Vec<String> = if self.s.short {
            vec!["-a".into(), GROUP.into(), CLUSTER_DIR.into()]
        } else {
            vec![
                "nodegroup".into(),
                "add".into(),
                GROUP.into(),
                CLUSTER_DIR.into(),
            ]
        };
        self.flags(&mut a);
        a
    }

    fn flags(&self, a: &mut Vec<String>) {
        a.extend(["--timeout".to_string(), TOOL_TIMEOUT.to_string()]);
        if self.s.share {
            a.push("--allow-shared-zones".into());
        }
    }

    /// Run `args` until it exits 0, at most [`MAX_RUNS`] times; the number of runs.
    async fn converge(&mut self, args: &[String]) -> usize {
        for run in 1..=MAX_RUNS {
            let o = self.fks(args).await;
            match o.code {
                Some(0) => return run,
                Some(1) => {}
                other => {
                    fail!(self, format!(
                        "`fks-bootstrap {}` ended with {other:?}: only 0 or 1 (failed, re-run) are expected",
                        args.join(" ")
                    ))
                }
            }
            if o.stderr.contains("panicked") {
                fail!(self, "the tool panicked");
            }
        }
        fail!(
            self,
            format!(
                "`fks-bootstrap {}` did not succeed in {MAX_RUNS} runs",
                args.join(" ")
            )
        )
    }

    /// A converged re-run: exit 0 and no mutation at all.
    async fn rerun_is_quiet(&mut self, args: &[String]) {
        let before = self.mutations().await;
        let o = self.fks(args).await;
        if o.code != Some(0) {
            fail!(
                self,
                format!("the re-run of `fks-bootstrap {}` failed", args.join(" "))
            );
        }
        let after = self.mutations().await;
        if after != before {
            fail!(
                self,
                format!(
                    "the re-run of `fks-bootstrap {}` made {} mutation(s); stdout:\n{}",
                    args.join(" "),
                    after - before,
                    o.stdout
                )
            );
        }
    }

    /// Live machines and volumes of `app` once every machine has settled in `started`.
    async fn settled(&self, app: &str) -> (Vec<Machine>, Vec<Volume>) {
        // A machine that crashes at boot does so a moment after `started` and comes back:
        // wait (bounded) until every machine is started and still is after a quiet pause.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut ms = self.machines(app).await;
        for _ in 0..20 {
            for m in &ms {
                if m.state != MachineState::Started {
                    if let Err(e) = self
                        .client
                        .wait(app, &m.id, MachineState::Started, None, deadline)
                        .await
                    {
                        fail!(
                            self,
                            format!("machine {} of {app} never settled: {e}", m.id)
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            ms = self.machines(app).await;
            if ms.iter().all(|m| m.state == MachineState::Started) {
                break;
            }
        }
        let vols = match self.client.list_volumes(app).await {
            Ok(v) => v,
            Err(e) => fail!(self, format!("listing volumes of {app}: {e}")),
        };
        let vols = vols
            .into_iter()
            .filter(|v| !v.state.is_being_destroyed())
            .collect();
        (ms, vols)
    }

    async fn machines(&self, app: &str) -> Vec<Machine> {
        match self
            .client
            .list_machines(app, &MachineListFilter::default())
            .await
        {
            Ok(ms) => ms
                .into_iter()
                .filter(|m| !matches!(m.state, MachineState::Destroyed))
                .collect(),
            Err(e) => fail!(self, format!("listing machines of {app}: {e}")),
        }
    }

    /// The invariants of a converged `app`: the app once, exactly one started machine per
    /// node of this cluster and nothing else, one volume per machine attached to it (no
    /// orphan), volumes in distinct zones while the open zones last, none in the full zone.
    async fn check(&self, app: &str, nodes: &[String]) {
        let apps = match self.client.list_apps("personal").await {
            Ok(a) => a.apps,
            Err(e) => fail!(self, format!("listing apps: {e}")),
        };
        let copies = apps.iter().filter(|a| a.name == app).count();
        if copies != 1 {
            fail!(self, format!("app {app} listed {copies} times"));
        }
        let (ms, vols) = self.settled(app).await;
        let mut per_node: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for m in &ms {
            if m.metadata(META_CLUSTER) != Some(CLUSTER) {
                fail!(
                    self,
                    format!("machine {} in {app} lacks cluster metadata", m.id)
                );
            }
            if m.state != MachineState::Started {
                fail!(
                    self,
                    format!("machine {} is {}, not started", m.id, m.state)
                );
            }
            per_node
                .entry(m.metadata(META_NODE).unwrap_or("?").to_string())
                .or_default()
                .push(&m.id);
        }
        let want: BTreeSet<&String> = nodes.iter().collect();
        let have: BTreeSet<&String> = per_node.keys().collect();
        if want != have {
            fail!(self, format!("{app}: nodes {have:?}, want {want:?}"));
        }
        if let Some((node, ids)) = per_node.iter().find(|(_, ids)| ids.len() != 1) {
            fail!(self, format!("{app}: node {node} has machines {ids:?}"));
        }
        if vols.len() != ms.len() {
            fail!(
                self,
                format!("{app}: {} volumes for {} machines", vols.len(), ms.len())
            );
        }
        for v in &vols {
            let owner = v.attached_machine_id.as_deref().unwrap_or("");
            if !ms.iter().any(|m| m.id == owner) {
                fail!(
                    self,
                    format!("{app}: orphan volume {} (attached to {owner:?})", v.id)
                );
            }
        }
        let zones: BTreeSet<&str> = vols.iter().map(|v| v.zone.as_str()).collect();
        if let Some(full) = &self.full {
            if zones.contains(full.as_str()) {
                fail!(self, format!("{app}: a volume in the full zone {full}"));
            }
        }
        let open = self.s.zones - usize::from(self.full.is_some());
        let want_distinct = nodes.len().min(open);
        if zones.len() != want_distinct {
            fail!(self, format!(
                "{app}: volumes in {} distinct zone(s) {zones:?}, want {want_distinct} ({open} open zone(s), {} nodes)",
                zones.len(),
                nodes.len()
            ));
        }
    }

    /// `destroy --yes` (re-run while it fails, bounded) leaves no app, machine, volume or
    /// secret of the cluster.
    async fn destroy_leaves_nothing(&mut self) {
        let args: Vec<String> = ["destroy", CLUSTER_DIR, "--yes"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        self.converge(&args).await;
        let apps = match self.client.list_apps("personal").await {
            Ok(a) => a.apps,
            Err(e) => fail!(self, format!("listing apps: {e}")),
        };
        if !apps.is_empty() {
            let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
            fail!(self, format!("apps left after destroy: {names:?}"));
        }
        for app in [CP_APP, GROUP_APP] {
            match self.client.get_app(app).await {
                Err(e) if e.is_not_found() => {}
                other => {
                    fail!(self, format!("app {app} after destroy: {other:?}"))
                }
            }
            // With the app gone, nothing of it may answer.
            match self.client.list_secrets(app).await {
                Err(e) if e.is_not_found() => {}
                other => {
                    fail!(self, format!("secrets of {app} after destroy: {other:?}"))
                }
            }
            match self.client.list_volumes(app).await {
                Err(e) if e.is_not_found() => {}
                Ok(v) if v.iter().all(|v| v.state.is_being_destroyed()) => {}
                other => {
                    fail!(self, format!("volumes of {app} after destroy: {other:?}"))
                }
            }
        }
    }
}

fn cp_nodes() -> Vec<String> {
    (0..3).map(|i| format!("ctrl-{i}")).collect()
}

fn group_nodes() -> Vec<String> {
    (0..GROUP_SIZE)
        .map(|i| format!("worker-ng-{GROUP}-{i}"))
        .collect()
}

async fn lab_get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .expect("lab introspection")
        .json()
        .await
        .expect("json")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}\n")).collect()
}

/// The whole cycle for one scenario: create, node group, invariants, quiet re-runs, destroy.
/// Returns the case and how many machines crashed at boot.
async fn full_cycle(s: Scenario) -> (Case, usize) {
    let mut case = Case::start(s).await;
    let create = case.create_args();
    let runs = case.converge(&create).await;
    case.check(CP_APP, &cp_nodes()).await;
    let group = case.group_args();
    let group_runs = case.converge(&group).await;
    case.check(GROUP_APP, &group_nodes()).await;
    case.check(CP_APP, &cp_nodes()).await;
    case.rerun_is_quiet(&create).await;
    case.rerun_is_quiet(&group).await;
    let crashed = crashed_machines(&case).await;
    case.destroy_leaves_nothing().await;
    let answers = fault_answers(&case).await;
    println!(
        "{}: seed {} faults `{}`: create converged in {runs} run(s), nodegroup add in {group_runs}; non-2xx answers {answers:?}; {crashed} machine(s) crashed at boot",
        case.s.test, case.s.seed, case.s.faults
    );
    (case, crashed)
}

/// How many `/v1` answers had each non-2xx status (the faults that fired).
async fn fault_answers(case: &Case) -> BTreeMap<String, u64> {
    let stats = lab_get(&case.lab.base, "/lab/v1/stats").await;
    let mut out = BTreeMap::new();
    for statuses in stats["by_route"]
        .as_object()
        .into_iter()
        .flat_map(|r| r.values())
    {
        for (status, n) in statuses.as_object().into_iter().flatten() {
            if !status.starts_with('2') {
                *out.entry(status.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    out
}

/// How many of the lab's machines recorded an `exit` (a crash at boot), over both apps.
async fn crashed_machines(case: &Case) -> usize {
    let mut n = 0;
    for app in [CP_APP, GROUP_APP] {
        for m in case.machines(app).await {
            let events = lab_get_auth(
                &case.lab.base,
                &format!("/v1/apps/{app}/machines/{}/events", m.id),
            )
            .await;
            let exits = events
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["type"] == "exit");
            n += usize::from(exits);
        }
    }
    n
}

async fn lab_get_auth(base: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("lab api")
        .json()
        .await
        .expect("json")
}

/// The lab's count of non-2xx answers to machine and volume creates (the faults did fire).
async fn failed_creates(case: &Case) -> u64 {
    let stats = lab_get(&case.lab.base, "/lab/v1/stats").await;
    [
        "POST /v1/apps/{app}/machines",
        "POST /v1/apps/{app}/volumes",
    ]
    .iter()
    .flat_map(|r| {
        stats["by_route"][r]
            .as_object()
            .cloned()
            .unwrap_or_default()
    })
    .filter(|(status, _)| !status.starts_with('2'))
    .map(|(_, n)| n.as_u64().unwrap_or(0))
    .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_on_converge_with_no_duplicate_or_orphan() {
    let mut s = Scenario::new(
        "rate_limits_on_converge_with_no_duplicate_or_orphan",
        "rate_limits=on",
        1,
    );
    s.short = false;
    full_cycle(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_5xx_converge_with_no_duplicate_or_orphan() {
    let mut s = Scenario::new(
        "five_percent_5xx_converge_with_no_duplicate_or_orphan",
        "error_rate=0.05",
        2,
    );
    s.short = true;
    let (case, _) = full_cycle(s).await;
    // Only 5xx draws in this lab, in request order: over the whole cycle (destroy included)
    // the seed's first 503 comes well within the requests made.
    if !fault_answers(&case).await.contains_key("503") {
        fail!(case, "error_rate is on but no request was answered 503");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_creates_converge_with_no_duplicate_or_orphan() {
    let s = Scenario::new(
        "ambiguous_creates_converge_with_no_duplicate_or_orphan",
        "ambiguous_create=0.4",
        3,
    );
    let (case, _) = full_cycle(s).await;
    let failed = failed_creates(&case).await;
    assert!(
        failed > 0,
        "no create was answered ambiguously\n{}",
        case.context()
    );
    // The recoveries were logged (and, checked on every call, without colour escapes).
    assert!(
        case.ambiguous_logged > 0,
        "no ambiguous create was logged\n{}",
        case.context()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_crashing_once_at_boot_converge() {
    let s = Scenario::new(
        "machines_crashing_once_at_boot_converge",
        "boot_crash=0.5",
        4,
    );
    let (case, crashed) = full_cycle(s).await;
    // Only crash draws in this lab, one per machine's first boot: the count is the seed's.
    if crashed == 0 {
        fail!(case, "boot_crash is on but no machine crashed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_faults_at_once_converge_in_a_region_with_a_full_zone() {
    let mut s = Scenario::new(
        "all_faults_at_once_converge_in_a_region_with_a_full_zone",
        "rate_limits=on;error_rate=0.05;ambiguous_create=0.2;boot_crash=0.3",
        5,
    );
    // Four zones, one full: three remain, enough for distinct zones without the flag.
    s.zones = 4;
    s.full_zone = true;
    full_cycle(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_zone_fails_naming_the_flag_then_shares_when_allowed() {
    let mut s = Scenario::new(
        "a_full_zone_fails_naming_the_flag_then_shares_when_allowed",
        "error_rate=0.05",
        6,
    );
    s.full_zone = true;
    let mut case = Case::start(s).await;
    // Three zones known, one of them full: the third own-zone volume cannot be placed.
    let o = case.fks(&case.create_args()).await;
    if o.code != Some(1) || !o.stderr.contains("--allow-shared-zones") {
        fail!(
            case,
            "without the flag, create must fail and name --allow-shared-zones"
        );
    }
    if o.stderr.contains("panicked") {
        fail!(case, "the tool panicked");
    }
    case.s.share = true;
    let create = case.create_args();
    case.converge(&create).await;
    case.check(CP_APP, &cp_nodes()).await;
    let group = case.group_args();
    case.converge(&group).await;
    case.check(GROUP_APP, &group_nodes()).await;
    case.rerun_is_quiet(&create).await;
    case.rerun_is_quiet(&group).await;
    case.destroy_leaves_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_zones_is_refused_before_anything_unless_sharing_is_allowed() {
    let mut s = Scenario::new(
        "too_few_zones_is_refused_before_anything_unless_sharing_is_allowed",
        "rate_limits=on",
        7,
    );
    s.zones = 2;
    let mut case = Case::start(s).await;
    let before = case.mutations().await;
    let o = case.fks(&case.create_args()).await;
    if o.code == Some(0) || !o.stderr.contains("--allow-shared-zones") {
        fail!(
            case,
            "with 2 zones for 3 servers, create must refuse and name --allow-shared-zones"
        );
    }
    if case.mutations().await != before {
        fail!(case, "the refused create changed something");
    }
    case.s.share = true;
    let create = case.create_args();
    case.converge(&create).await;
    case.check(CP_APP, &cp_nodes()).await;
    // The node group alike: refused before anything without the flag.
    case.s.share = false;
    let before = case.mutations().await;
    let o = case.fks(&case.group_args()).await;
    if o.code == Some(0) || !o.stderr.contains("--allow-shared-zones") {
        fail!(
            case,
            "with 2 zones for 3 workers, nodegroup add must refuse and name the flag"
        );
    }
    if case.mutations().await != before {
        fail!(case, "the refused nodegroup add changed something");
    }
    case.s.share = true;
    let group = case.group_args();
    case.converge(&group).await;
    case.check(GROUP_APP, &group_nodes()).await;
    case.rerun_is_quiet(&create).await;
    case.rerun_is_quiet(&group).await;
    case.destroy_leaves_nothing().await;
}

/// When to SIGKILL a run.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// After this long.
    After(Duration),
    /// As soon as the lab has answered this many more mutations (the tool may or may not have
    /// read the answer: the ambiguous point from its side).
    AtMutation(u64),
}

/// Run `args` and SIGKILL it at `kill`; what happened, with the mutation count when it died.
async fn kill_at(case: &mut Case, args: &[String], kill: Kill) -> String {
    let base = case.mutations().await;
    let mut child = case.command(args).spawn().expect("spawning fks-bootstrap");
    let started = Instant::now();
    let ended = match kill {
        Kill::After(delay) => tokio::time::timeout(delay, child.wait()).await.ok(),
        Kill::AtMutation(k) => {
            let mut ended = None;
            // Bounded: a run that never gets there ends by itself well within this.
            for _ in 0..6000 {
                if let Ok(Some(status)) = child.try_wait() {
                    ended = Some(Ok(status));
                    break;
                }
                if case.mutations().await >= base + k {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ended
        }
    };
    let what = match ended {
        Some(status) => format!("ended by itself first ({status:?})"),
        None => {
            child.start_kill().expect("SIGKILL");
            let _ = child.wait().await;
            "SIGKILLed".to_string()
        }
    };
    let m = case.mutations().await - base;
    let line = format!(
        "{what} at {kill:?} ({:?} after start, {m} mutation(s) made)",
        started.elapsed()
    );
    let _ = writeln!(case.log, "  $ fks-bootstrap {} -> {line}", args.join(" "));
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_converges_on_the_next_run() {
    // Rounds killed after a delay (slice r of the uninterrupted wall time: early, middle and
    // late), then rounds killed right after a seeded number of mutations.
    const TIMED: u64 = 5;
    const COUNTED: u64 = 4;
    // Creates take a while, so kills land inside calls as well as between them.
    let faults =
        "latency=machines.create:80ms,volumes.create:80ms;ambiguous_create=0.2;error_rate=0.05";
    let seed = derive(base_seed(), 8);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut s = Scenario::new(
        "killed_at_random_points_converges_on_the_next_run",
        faults,
        8,
    );
    s.seed = seed;
    let mut probe = Case::start(s.clone()).await;
    let t = Instant::now();
    let create = probe.create_args();
    probe.converge(&create).await;
    let create_time = t.elapsed();
    let t = Instant::now();
    let group = probe.group_args();
    probe.converge(&group).await;
    let group_time = t.elapsed();
    drop(probe);
    println!("uninterrupted: create {create_time:?}, nodegroup add {group_time:?}");

    let mut rounds = tokio::task::JoinSet::new();
    for round in 0..TIMED + COUNTED {
        let (k_create, k_group) = if round < TIMED {
            let lo = round as f64 / TIMED as f64;
            let hi = (round + 1) as f64 / TIMED as f64;
            (
                Kill::After(create_time.mul_f64(rng.random_range(lo..hi))),
                Kill::After(group_time.mul_f64(rng.random_range(lo..hi))),
            )
        } else {
            // An app, three volumes and three machines: seven mutations each.
            (
                Kill::AtMutation(rng.random_range(1..=7)),
                Kill::AtMutation(rng.random_range(1..=7)),
            )
        };
        let k_destroy = Kill::AtMutation(rng.random_range(1..=6));
        let mut s = s.clone();
        s.seed = derive(seed, round + 100);
        s.short = round % 2 == 1;
        rounds.spawn(async move {
            let mut case = Case::start(s).await;
            let create = case.create_args();
            let group = case.group_args();
            let at = kill_at(&mut case, &create, k_create).await;
            case.converge(&create).await;
            case.check(CP_APP, &cp_nodes()).await;
            let at_group = kill_at(&mut case, &group, k_group).await;
            case.converge(&group).await;
            case.check(GROUP_APP, &group_nodes()).await;
            case.rerun_is_quiet(&create).await;
            case.rerun_is_quiet(&group).await;
            // Kill a destroy too; the next destroy finishes the job.
            let destroy: Vec<String> = ["destroy", CLUSTER_DIR, "--yes"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let at_destroy = kill_at(&mut case, &destroy, k_destroy).await;
            case.destroy_leaves_nothing().await;
            println!(
                "round {round}: create {at}; nodegroup add {at_group}; destroy {at_destroy}; all converged on re-run"
            );
        });
    }
    while let Some(r) = rounds.join_next().await {
        if let Err(e) = r {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("a round was cancelled: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_that_never_starts_is_named_with_its_state_when_the_deadline_expires() {
    // Boot takes far longer than the deadline: the machine stays `starting`.
    let mut s = Scenario::new(
        "a_machine_that_never_starts_is_named_with_its_state_when_the_deadline_expires",
        "",
        9,
    );
    s.boot = Duration::from_secs(3600);
    let mut case = Case::start(s).await;
    let args: Vec<String> = ["create", CLUSTER_DIR, "--timeout", "2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let o = case.fks(&args).await;
    let err = o.stderr.trim_end();
    let last = err.lines().last().unwrap_or("");
    if o.code != Some(1)
        || !last.contains("node ctrl-0")
        || !last.contains("stuck in state starting")
        || !last.contains("2s")
        || err.contains("panicked")
        || err.contains("Stuck {")
    {
        fail!(case, format!(
            "want exit 1 and a last line naming node ctrl-0, its state and the deadline; got {:?}: {last}",
            o.code
        ));
    }
    println!("never starting: {last}");

    // A machine that fails at boot (lab `boot_failure=1`): named with state `failed`, and the
    // next run says so instead of making more.
    let mut s = Scenario::new(
        "a_machine_that_never_starts_is_named_with_its_state_when_the_deadline_expires",
        "boot_failure=1",
        10,
    );
    s.short = false;
    let mut case = Case::start(s).await;
    let o = case.fks(&args).await;
    let last = o.stderr.trim_end().lines().last().unwrap_or("").to_string();
    if o.code != Some(1) || !last.contains("node ctrl-0") || !last.contains("failed") {
        fail!(
            case,
            format!(
                "want exit 1 naming node ctrl-0 and state failed; got {:?}: {last}",
                o.code
            )
        );
    }
    println!("failed at boot: {last}");
    let machines = case.machines(CP_APP).await.len();
    let o = case.fks(&args).await;
    let again = o.stderr.trim_end().lines().last().unwrap_or("").to_string();
    if o.code != Some(1)
        || !again.contains("ctrl-0")
        || !again.contains("failed")
        || case.machines(CP_APP).await.len() != machines
    {
        fail!(
            case,
            format!(
                "a re-run must name the failed node and make no machine; got {:?}: {again}",
                o.code
            )
        );
    }
    println!("re-run over a failed machine: {again}");
}
