//! Throughput and memory of the lab as fks-bootstrap's own Fly client sees it (issue 3's
//! figures): spawns the `fks-lab` binary this bench was built with (bench profile), then, with
//! faults off and client-side rate limiting off,
//! - creates 2,000 machines in 20 apps from 16 concurrent tasks (creates per second),
//! - reads machines by id from 16 concurrent tasks for a fixed count (GETs per second),
//! - reads the lab's resident memory from /proc while it holds the 2,000 machines,
//! - kills the lab with SIGKILL and times the restart until the first answer.
//!
//! Run: `cargo bench -p fks-lab --bench api`. Prints figures next to their targets; asserts
//! nothing about speed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fks_bootstrap::fly::{
    Client, CreateAppRequest, CreateMachineRequest, MachineConfig, Options, Token,
};

const TOKEN: &str = "bench-token";
const APPS: usize = 20;
const MACHINES: usize = 2_000;
const TASKS: usize = 16;
const GETS: usize = 40_000;

/// Start `fks-lab serve` on a free port; returns the child and its base URL.
fn spawn_lab(state_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fks-lab"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--seed",
            "1",
        ])
        .arg("--state-dir")
        .arg(state_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fks-lab");
    let stdout = child.stdout.take().expect("lab stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("lab prints its address first");
    let base = line
        .trim()
        .strip_prefix("export FLY_API_HOSTNAME=")
        .expect("first line is the FLY_API_HOSTNAME export")
        .to_string();
    (child, base)
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn client(base: &str) -> Arc<Client> {
    let options = Options {
        rate_limit: false,
        seed: Some(1),
        ..Options::default()
    };
    Arc::new(Client::new(base, Token::new(TOKEN), options).expect("client"))
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut lab, base) = spawn_lab(dir.path());
    let fly = client(&base);

    for a in 0..APPS {
        let req = CreateAppRequest {
            name: Some(format!("bench-{a}")),
            org_slug: Some("personal".into()),
            ..CreateAppRequest::default()
        };
        fly.create_app(&req).await.expect("create app");
    }

    // Creates: 16 tasks, machines spread round-robin over the apps.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let fly = fly.clone();
        tasks.spawn(async move {
            let mut made = Vec::new();
            for i in (t..MACHINES).step_by(TASKS) {
                let app = format!("bench-{}", i % APPS);
                let req = CreateMachineRequest {
                    config: MachineConfig {
                        image: "lab/base".into(),
                        ..MachineConfig::default()
                    },
                    region: Some("sjc".into()),
                    ..CreateMachineRequest::default()
                };
                let m = fly.create_machine(&app, req).await.expect("create machine");
                made.push((app, m.id));
            }
            made
        });
    }
    let mut machines = Vec::with_capacity(MACHINES);
    while let Some(made) = tasks.join_next().await {
        machines.extend(made.expect("create task"));
    }
    let create_secs = started.elapsed().as_secs_f64();

    // Let the machines settle to `started` before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mb(lab.id());

    // GETs: 16 tasks reading machines by id.
    let machines = Arc::new(machines);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (fly, machines) = (fly.clone(), machines.clone());
        tasks.spawn(async move {
            for i in (t..GETS).step_by(TASKS) {
                let (app, id) = &machines[i % machines.len()];
                fly.get_machine(app, id).await.expect("get machine");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("get task");
    }
    let get_secs = started.elapsed().as_secs_f64();

    lab.kill().expect("kill -9 the lab");
    lab.wait().expect("reap the lab");
    let started = Instant::now();
    let (mut lab, base) = spawn_lab(dir.path());
    let listed = client(&base)
        .list_machines("bench-0", &Default::default())
        .await
        .expect("list after restart");
    let restart_ms = started.elapsed().as_secs_f64() * 1000.0;

    println!(
        "fks-lab API benchmark (fly::Client, faults off, client rate limiting off, {TASKS} tasks)"
    );
    println!(
        "  create machine: {:>8.0} /s  ({MACHINES} in {APPS} apps in {create_secs:.2} s; target >= 1,000/s)",
        MACHINES as f64 / create_secs
    );
    println!(
        "  GET machine:    {:>8.0} /s  ({GETS} in {get_secs:.2} s; target >= 5,000/s)",
        GETS as f64 / get_secs
    );
    println!("  lab RSS with {MACHINES} machines in {APPS} apps: {rss:.1} MB (target <= 100 MB)");
    println!(
        "  restart after kill -9 until the first answer: {restart_ms:.0} ms ({} machines in bench-0)",
        listed.len()
    );
    lab.kill().expect("stop the lab");
    lab.wait().expect("reap the lab");
}
