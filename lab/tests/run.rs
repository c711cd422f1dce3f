//! `fks_bootstrap::plan` + `run` against the in-process lab in API-only mode: a fresh control
//! plane, a converged re-run with zero mutations, an interrupted run that converges on the
//! next one, faults (rate limits, 5xx, ambiguous creates, a zone out of capacity) and a node
//! group's zone rules. The k3s steps need running guests and are not exercised here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use fks_bootstrap::config::{self, Config};
use fks_bootstrap::contract::env as node_env;
use fks_bootstrap::fly::types::{Machine, MachineFile, MachineListFilter, MachineState, Volume};
use fks_bootstrap::fly::{Client, Options as ClientOptions, RetryPolicy, Token};
use fks_bootstrap::plan::{self, Plan, State, Target, META_CLUSTER, META_NODE, META_ROLE};
use fks_bootstrap::run::{self, Phase};
use serde_json::Value;

mod common;

const TOKEN: &str = "run-test-token";
/// The image the plan gives every machine: pinned by digest, as `image::ensure` makes it (the
/// API-only lab runs nothing, so no registry has to hold it here).
const LAB_IMAGE: &str =
    "127.0.0.1:5000/lab-cp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A lab serving on a local port until dropped.
type Lab = common::ApiLab;

async fn start_lab(zones: &str, faults: &str) -> Lab {
    start_lab_seeded(zones, faults, 7).await
}

async fn start_lab_seeded(zones: &str, faults: &str, seed: u64) -> Lab {
    common::start_api_lab(zones, faults, seed, Duration::from_millis(30), TOKEN).await
}

impl Lab {
    fn client(&self, seed: u64) -> Client {
        let options = ClientOptions {
            seed: Some(seed),
            create_settle: Duration::from_millis(50),
            max_create_recoveries: 5,
            retry: RetryPolicy {
                max_attempts: 10,
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(500),
                max_elapsed: Duration::from_secs(30),
            },
            ..ClientOptions::default()
        };
        Client::new(&self.base, Token::new(TOKEN), options).expect("client")
    }

    async fn lab_get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.base))
            .await
            .expect("lab introspection")
            .json()
            .await
            .expect("json")
    }

    async fn mutations(&self) -> u64 {
        self.lab_get("/lab/v1/stats").await["mutations"]
            .as_u64()
            .expect("mutations count")
    }

    async fn zones(&self, region: &str) -> Vec<String> {
        self.lab_get("/lab/v1/zones").await[region]
            .as_array()
            .expect("region listed")
            .iter()
            .map(|z| z.as_str().expect("zone id").to_string())
            .collect()
    }
}

fn lab_config() -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clusters/lab");
    config::load(&dir).expect("clusters/lab loads")
}

/// Stand-in ssh files (the real ones come from `ssh::ClusterKeys`, tested there).
fn node_files(names: impl IntoIterator<Item = String>) -> BTreeMap<String, Vec<MachineFile>> {
    names
        .into_iter()
        .map(|n| {
            let file = MachineFile {
                guest_path: "/etc/ssh/sshd_config.d/fks-bootstrap.conf".into(),
                raw_value: Some("UGFzc3dvcmRBdXRoZW50aWNhdGlvbiBubwo=".into()),
                mode: Some(0o644),
                ..MachineFile::default()
            };
            (n, vec![file])
        })
        .collect()
}

async fn plan_with(
    client: &Client,
    config: &Config,
    target: &Target,
    zones: Option<usize>,
    share: bool,
) -> Result<Plan, plan::Error> {
    let state: State = run::observe(client, config, target).await.expect("observe");
    let options = plan::Options {
        zones,
        allow_shared_zones: share,
        k3s: false,
        node_files: node_files(plan::node_names(config, target)),
        extra_env: BTreeMap::new(),
        image: LAB_IMAGE.to_string(),
        max_unavailable: plan::update::WORKER_BATCH,
    };
    plan::plan(config, target, &state, &options)
}

async fn make_plan(
    lab: &Lab,
    client: &Client,
    config: &Config,
    target: &Target,
    share: bool,
) -> Result<Plan, plan::Error> {
    let state: State = run::observe(client, config, target).await.expect("observe");
    let options = plan::Options {
        zones: Some(lab.zones(&config.region).await.len()),
        allow_shared_zones: share,
        k3s: false,
        node_files: node_files(plan::node_names(config, target)),
        extra_env: BTreeMap::new(),
        image: LAB_IMAGE.to_string(),
        max_unavailable: plan::update::WORKER_BATCH,
    };
    plan::plan(config, target, &state, &options)
}

async fn converge(lab: &Lab, client: &Client, config: &Config, target: &Target) -> run::Summary {
    let p = make_plan(lab, client, config, target, false)
        .await
        .expect("plan");
    run::execute(client, &p, &run::Options::default(), None)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "run failed: {e}: {:?}\nplan:\n{p}",
                std::error::Error::source(&e)
            )
        })
}

async fn inventory(client: &Client, app: &str) -> (Vec<Volume>, Vec<Machine>) {
    let vols = client.list_volumes(app).await.expect("volumes");
    let ms = client
        .list_machines(app, &MachineListFilter::default())
        .await
        .expect("machines");
    let vols = vols
        .into_iter()
        .filter(|v| !v.state.is_being_destroyed())
        .collect();
    let ms = ms
        .into_iter()
        .filter(|m| m.state != MachineState::Destroyed)
        .collect();
    (vols, ms)
}

/// One machine per node, one attached volume per machine, no orphan volume.
fn assert_one_each(nodes: &[String], vols: &[Volume], ms: &[Machine]) {
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for m in ms {
        *per_node
            .entry(m.metadata(META_NODE).unwrap_or("?"))
            .or_default() += 1;
    }
    let want: BTreeMap<&str, usize> = nodes.iter().map(|n| (n.as_str(), 1)).collect();
    assert_eq!(per_node, want, "machines per node");
    assert_eq!(vols.len(), nodes.len(), "volumes: {vols:#?}");
    for v in vols {
        let owner = v.attached_machine_id.as_deref().unwrap_or("");
        assert!(
            ms.iter().any(|m| m.id == owner),
            "orphan volume {} ({owner:?})",
            v.id
        );
    }
    for m in ms {
        assert_eq!(m.state, MachineState::Started, "machine {}", m.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_control_plane_gets_an_app_three_volumes_in_distinct_zones_and_three_machines() {
    let lab = start_lab("sjc=3", "").await;
    let client = lab.client(1);
    let config = lab_config();
    let target = Target::control_plane(0).expect("target");
    let p = make_plan(&lab, &client, &config, &target, false)
        .await
        .expect("plan");
    assert_eq!(p.mutations(), 7, "{p}");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let summary = run::execute(&client, &p, &run::Options::default(), Some(tx))
        .await
        .expect("run");

    let app = client.get_app("lab-cp").await.expect("app exists");
    assert_eq!(app.name, "lab-cp");
    let (vols, ms) = inventory(&client, "lab-cp").await;
    let nodes = plan::node_names(&config, &target);
    assert_one_each(&nodes, &vols, &ms);
    let zones: BTreeSet<&str> = vols.iter().map(|v| v.zone.as_str()).collect();
    assert_eq!(zones.len(), 3, "distinct zones: {vols:#?}");
    for m in &ms {
        let c = m.config.as_ref().expect("config");
        let node = m.metadata(META_NODE).expect("node");
        assert_eq!(m.metadata(META_CLUSTER), Some("lab"));
        assert_eq!(m.metadata(META_ROLE), Some("server"));
        assert!(m.metadata("fks_launch_id").is_some_and(|id| id.len() == 36));
        // The names node init reads (one contract between plan and node).
        assert_eq!(c.env[node_env::NODE_NAME], node);
        assert_eq!(c.env["FKS_ROLE"], "server");
        let vol = vols
            .iter()
            .find(|v| v.attached_machine_id.as_deref() == Some(&m.id))
            .expect("volume");
        assert_eq!(c.env[node_env::ZONE], vol.zone);
        assert_eq!(c.image, LAB_IMAGE);
        if node != "ctrl-0" {
            let boot = ms
                .iter()
                .find(|x| x.metadata(META_NODE) == Some("ctrl-0"))
                .expect("bootstrap");
            assert_eq!(c.env[node_env::BOOTSTRAP_MACHINE_ID], boot.id);
        }
        assert!(c.env.keys().all(|k| !k.contains("TOKEN")));
    }
    // Summary and events cover every node up to Started.
    assert_eq!(summary.nodes.len(), 3);
    for n in &summary.nodes {
        assert!(
            n.machine.is_some() && n.zone.is_some() && n.private_ip.is_some(),
            "{n:?}"
        );
        assert!(n.phases.contains_key(&Phase::Started), "{n:?}");
    }
    let mut seen = BTreeSet::new();
    while let Ok(e) = rx.try_recv() {
        seen.insert((e.node, e.phase));
    }
    assert_eq!(
        seen.len(),
        9,
        "volume, machine, started for 3 nodes: {seen:?}"
    );
    println!("fresh control plane in the lab: {:?}", summary.elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_makes_zero_mutations() {
    let lab = start_lab("sjc=3", "").await;
    let client = lab.client(2);
    let config = lab_config();
    let target = Target::control_plane(0).expect("target");
    converge(&lab, &client, &config, &target).await;
    let before = lab.mutations().await;
    let p = make_plan(&lab, &client, &config, &target, false)
        .await
        .expect("plan");
    assert!(p.is_empty(), "{p}");
    let s = run::execute(&client, &p, &run::Options::default(), None)
        .await
        .expect("run");
    assert_eq!(s.steps, 0);
    assert_eq!(lab.mutations().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_run_converges_on_the_next_without_duplicates_or_orphans() {
    let config = lab_config();
    let target = Target::control_plane(0).expect("target");
    let nodes = plan::node_names(&config, &target);
    // Interrupt after each possible number of finished steps.
    for stop_after in 1..7usize {
        let lab = start_lab("sjc=3", "").await;
        let client = lab.client(3 + stop_after as u64);
        let p = make_plan(&lab, &client, &config, &target, false)
            .await
            .expect("plan");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = {
            let client = client.clone();
            let p = p.clone();
            tokio::spawn(async move {
                run::execute(&client, &p, &run::Options::default(), Some(tx)).await
            })
        };
        let mut events = 0;
        while events < stop_after {
            if rx.recv().await.is_none() {
                break;
            }
            events += 1;
        }
        task.abort();
        let _ = task.await;
        converge(&lab, &client, &config, &target).await;
        let (vols, ms) = inventory(&client, "lab-cp").await;
        assert_one_each(&nodes, &vols, &ms);
        let zones: BTreeSet<&str> = vols.iter().map(|v| v.zone.as_str()).collect();
        assert_eq!(zones.len(), 3, "stopped after {stop_after}: {vols:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_under_faults_without_duplicates() {
    let mut failed = 0;
    for seed in [7, 8, 9, 10] {
        failed += converge_under_faults(seed).await;
    }
    assert!(failed > 0, "no create met a fault in any seed");
}

async fn converge_under_faults(seed: u64) -> u64 {
    // Find the zone ids of this seed, then fill one of the four.
    let probe = start_lab_seeded("sjc=4", "", seed).await;
    let full = probe.zones("sjc").await[0].clone();
    drop(probe);
    let faults = format!("rate_limits=on;error_rate=0.1;ambiguous_create=0.3;capacity=sjc:{full}");
    let lab = start_lab_seeded("sjc=4", &faults, seed).await;
    let client = lab.client(seed);
    let config = lab_config();
    let target = Target::control_plane(1).expect("target");
    let nodes = plan::node_names(&config, &target);
    // A run may stop on a fault the client does not retry (an exhausted budget); the next run
    // picks up from what exists, as a user would.
    let mut runs = 0;
    loop {
        let p = make_plan(&lab, &client, &config, &target, false)
            .await
            .expect("plan");
        if p.is_empty() {
            break;
        }
        runs += 1;
        if let Err(e) = run::execute(&client, &p, &run::Options::default(), None).await {
            eprintln!("seed {seed}: run {runs} stopped: {e}");
        }
        assert!(runs < 6, "seed {seed}: no convergence after {runs} runs");
    }
    let (vols, ms) = inventory(&client, "lab-cp").await;
    assert_one_each(&nodes, &vols, &ms);
    let zones: BTreeSet<&str> = vols.iter().map(|v| v.zone.as_str()).collect();
    assert_eq!(zones.len(), 3);
    assert!(!zones.contains(full.as_str()), "no volume in the full zone");
    // The faults did happen: some creates were answered with an error.
    let stats = lab.lab_get("/lab/v1/stats").await;
    let failed: u64 = [
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
    .sum();
    println!(
        "seed {seed}: converged under faults in {runs} run(s); {failed} create answers were errors"
    );
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_group_refuses_a_zone_shortage_unless_sharing_is_allowed() {
    let lab = start_lab("sjc=2", "").await;
    let client = lab.client(21);
    let config = lab_config();
    let target = Target::node_group("a").expect("group");
    // The control plane needs 3 zones: with 2 it is refused before anything is made.
    let cp = Target::control_plane(0).expect("target");
    let before = lab.mutations().await;
    let e = make_plan(&lab, &client, &config, &cp, false)
        .await
        .expect_err("shortage");
    assert!(e.to_string().contains("--allow-shared-zones"), "{e}");
    assert_eq!(lab.mutations().await, before);
    let p = make_plan(&lab, &client, &config, &cp, true)
        .await
        .expect("shared cp");
    run::execute(&client, &p, &run::Options::default(), None)
        .await
        .expect("cp run");

    let e = make_plan(&lab, &client, &config, &target, false)
        .await
        .expect_err("shortage");
    assert!(e.to_string().contains("lab-ng-a"), "{e}");
    let p = make_plan(&lab, &client, &config, &target, true)
        .await
        .expect("shared");
    run::execute(&client, &p, &run::Options::default(), None)
        .await
        .expect("group run");
    let (vols, ms) = inventory(&client, "lab-ng-a").await;
    let nodes = plan::node_names(&config, &target);
    assert_one_each(&nodes, &vols, &ms);
    let zones: BTreeSet<&str> = vols.iter().map(|v| v.zone.as_str()).collect();
    assert_eq!(zones.len(), 2, "both zones used before sharing");
    for m in &ms {
        assert_eq!(m.metadata(META_ROLE), Some("agent"));
        let c = m.config.as_ref().expect("config");
        assert!(c
            .files
            .iter()
            .any(|f| f.secret_name.as_deref() == Some("K3S_TOKEN")));
    }
    let again = make_plan(&lab, &client, &config, &target, true)
        .await
        .expect("plan");
    assert!(again.is_empty(), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_that_never_starts_is_reported_with_its_node_and_state() {
    let lab = start_lab("sjc=3", "boot_failure=1").await;
    let client = lab.client(31);
    let config = lab_config();
    let target = Target::control_plane(0).expect("target");
    let p = make_plan(&lab, &client, &config, &target, false)
        .await
        .expect("plan");
    let options = run::Options {
        started_timeout: Duration::from_secs(2),
        ..run::Options::default()
    };
    let e = run::execute(&client, &p, &options, None)
        .await
        .expect_err("stuck");
    let msg = e.to_string();
    assert!(matches!(e, run::Error::Stuck { .. }), "{e:?}");
    assert!(
        msg.contains("node ctrl-0") && msg.contains("stuck in state failed"),
        "{msg}"
    );
    // No other machine was made: the joining servers wait for the bootstrap server. Their
    // volumes were made early (they do not wait) and are reused by the next run.
    let (vols, ms) = inventory(&client, "lab-cp").await;
    assert_eq!((vols.len(), ms.len()), (3, 1));
    // The next plan reports the failed machine instead of piling up more.
    let e = make_plan(&lab, &client, &config, &target, false)
        .await
        .expect_err("failed");
    assert!(
        e.to_string().contains("ctrl-0") && e.to_string().contains("failed"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_zone_count_shares_a_zone_only_when_allowed() {
    let lab = start_lab("sjc=2", "").await;
    let client = lab.client(41);
    let config = lab_config();
    let target = Target::control_plane(0).expect("target");
    let p = plan_with(&client, &config, &target, None, false)
        .await
        .expect("plan");
    let e = run::execute(&client, &p, &run::Options::default(), None)
        .await
        .expect_err("third volume has no zone of its own");
    assert!(matches!(e, run::Error::NoUniqueZone { .. }), "{e:?}");
    assert!(e.to_string().contains("--allow-shared-zones"), "{e}");
    let p = plan_with(&client, &config, &target, None, true)
        .await
        .expect("plan");
    run::execute(&client, &p, &run::Options::default(), None)
        .await
        .expect("shared run");
    let (vols, ms) = inventory(&client, "lab-cp").await;
    assert_one_each(&plan::node_names(&config, &target), &vols, &ms);
    let zones: BTreeSet<&str> = vols.iter().map(|v| v.zone.as_str()).collect();
    assert_eq!(zones.len(), 2);
}

/// An update that takes longer than its lease's TTL keeps the lease: machines boot in 5 s here
/// and the lease lives 3 s, so only the background refresh keeps it. A second client (its own
/// rate-limit buckets) reads each server's lease while the updates run: the same nonce is seen
/// over more than the TTL plus a second, with a later `expires_at`; every release then finds its
/// lease (200, not "lease not found"), and no lease is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_slower_than_its_lease_ttl_keeps_the_lease_by_refreshing_it() {
    const TTL: Duration = Duration::from_secs(3);
    let lab = common::start_api_lab("sjc=3", "", 7, Duration::from_secs(5), TOKEN).await;
    let client = lab.client(51);
    let mut config = lab_config();
    let target = Target::control_plane(0).expect("target");
    converge(&lab, &client, &config, &target).await;
    config.cp_vm.memory_mb *= 2;
    let p = make_plan(&lab, &client, &config, &target, false)
        .await
        .expect("plan");
    let updates = p
        .steps
        .iter()
        .filter(|s| matches!(s.action, plan::Action::UpdateMachine { .. }))
        .count();
    assert_eq!(updates, 3, "{p}");
    let ids: Vec<String> = inventory(&client, "lab-cp")
        .await
        .1
        .into_iter()
        .map(|m| m.id)
        .collect();

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (done, observer, ids) = (done.clone(), lab.client(52), ids.clone());
        tokio::spawn(async move {
            // (machine, nonce) -> (first seen, last seen, first expires_at, last expires_at)
            let mut seen: BTreeMap<(String, String), (Instant, Instant, i64, i64)> =
                BTreeMap::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for id in &ids {
                    if let Ok(Some(l)) = observer.get_lease("lab-cp", id).await {
                        let now = Instant::now();
                        seen.entry((id.clone(), l.nonce))
                            .and_modify(|e| {
                                e.1 = now;
                                e.3 = l.expires_at;
                            })
                            .or_insert((now, now, l.expires_at, l.expires_at));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            seen
        })
    };
    let seq = lab.lab_get("/lab/v1/events").await["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0);
    let options = run::Options {
        lease_ttl: TTL,
        ..run::Options::default()
    };
    let started = Instant::now();
    run::execute(&client, &p, &options, None)
        .await
        .expect("the update run");
    eprintln!(
        "figure: 3 server updates with 5 s boots under a 3 s lease took {:?}",
        started.elapsed()
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.await.expect("watcher");

    let held_past_ttl: Vec<_> = seen
        .iter()
        .filter(|(_, (first, last, e0, e1))| {
            last.duration_since(*first) > TTL + Duration::from_secs(1) && e1 > e0
        })
        .map(|((id, _), (first, last, ..))| (id.clone(), last.duration_since(*first)))
        .collect();
    assert!(
        !held_past_ttl.is_empty(),
        "no lease outlived its TTL: {seen:?}"
    );
    eprintln!("figure: leases held past their 3 s TTL: {held_past_ttl:?}");
    let events = lab.lab_get(&format!("/lab/v1/events?since={seq}")).await;
    let releases: Vec<u64> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| {
            e["method"] == "DELETE" && e["path"].as_str().is_some_and(|p| p.ends_with("/lease"))
        })
        .filter_map(|e| e["status"].as_u64())
        .collect();
    assert_eq!(releases, [200, 200, 200], "{events:#}");
    for id in &ids {
        assert_eq!(client.get_lease("lab-cp", id).await.expect("lease"), None);
    }
    let (_, ms) = inventory(&client, "lab-cp").await;
    for m in ms {
        let guest = m.config.and_then(|c| c.guest).expect("guest");
        assert_eq!(guest.memory_mb, Some(config.cp_vm.memory_mb), "{}", m.id);
    }
}

/// A lease someone keeps past what an update may wait for (here 60 s, the run's deadline
/// 3 s) is not taken over: the run stops with an error naming the machine, the holder and
/// the expiry, and the machine keeps its old config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_past_the_deadline_stops_the_update_naming_its_holder() {
    let lab = start_lab("sjc=3", "").await;
    let client = lab.client(61);
    let mut config = lab_config();
    let target = Target::control_plane(0).expect("target");
    converge(&lab, &client, &config, &target).await;
    let old = config.cp_vm.memory_mb;
    config.cp_vm.memory_mb *= 2;
    let (_, ms) = inventory(&client, "lab-cp").await;
    let first = ms
        .iter()
        .find(|m| m.metadata(META_NODE) == Some("ctrl-0"))
        .expect("ctrl-0")
        .id
        .clone();
    let theirs = client
        .acquire_lease("lab-cp", &first, 60, Some("someone else's deploy"))
        .await
        .expect("lease");
    let p = make_plan(&lab, &client, &config, &target, false)
        .await
        .expect("plan");
    let options = run::Options {
        started_timeout: Duration::from_secs(3),
        ..run::Options::default()
    };
    let e = run::execute(&client, &p, &options, None)
        .await
        .expect_err("leased by someone else");
    assert!(matches!(e, run::Error::LeaseHeld { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "node ctrl-0: machine {first} in app lab-cp is leased by lab@tokens.fly.io (someone else's deploy) until {}",
            theirs.expires_at
        )),
        "{msg}"
    );
    let m = client.get_machine("lab-cp", &first).await.expect("machine");
    let guest = m.config.and_then(|c| c.guest).expect("guest");
    assert_eq!(guest.memory_mb, Some(old));
    let still = client.get_lease("lab-cp", &first).await.expect("lease");
    assert_eq!(still.map(|l| l.nonce), Some(theirs.nonce));
}
