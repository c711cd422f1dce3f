//! Load figures for the lab: spawns `fks-lab serve` (path in argv[1], default
//! target/debug/fks-lab), creates 2,000 machines in 20 apps from 16 concurrent clients, and
//! prints creates per second, the lab's RSS and the restart (journal replay) time.
//! Run: `cargo build -p fks-lab && cargo run -p fks-lab --example load [-- PATH]`.
//! Prints figures only; it asserts nothing about speed.

use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

const TOKEN: &str = "load-token";

fn spawn(bin: &str, dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--seed",
            "1",
            "--state-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fks-lab");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("env line");
    std::mem::forget(reader);
    (
        child,
        line.trim()
            .trim_start_matches("export FLY_API_HOSTNAME=")
            .to_string(),
    )
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let bin = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/debug/fks-lab".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = spawn(&bin, dir.path());
    let client = reqwest::Client::new();
    for a in 0..20 {
        client
            .post(format!("{base}/v1/apps"))
            .bearer_auth(TOKEN)
            .json(&json!({"name": format!("app-{a}")}))
            .send()
            .await
            .expect("app");
    }
    let t = Instant::now();
    let mut tasks = vec![];
    for w in 0..16 {
        let (client, base) = (client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in (w..2000).step_by(16) {
                let body = json!({"config": {"image": "registry-1.docker.io/library/ubuntu:22.04",
                    "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
                    "env": {"ROLE": "agent"}, "metadata": {"k3s_launch_id": format!("id-{i}")}}});
                let res = client
                    .post(format!("{base}/v1/apps/app-{}/machines", i % 20))
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .expect("create");
                if res.status().is_success() {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("task");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "created {ok} machines in 20 apps in {secs:.2}s: {:.0} creates/s (16 clients)",
        ok as f64 / secs
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    println!(
        "lab RSS with {ok} machines (all started): {} MB",
        rss_kb(child.id()) / 1024
    );
    let t = Instant::now();
    let res = client
        .get(format!(
            "{base}/v1/apps/app-0/machines?metadata.k3s_launch_id=id-0"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list");
    println!(
        "filtered list of app-0: {} in {:.1} ms",
        res.status(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let t = Instant::now();
    let (mut child, base) = spawn(&bin, dir.path());
    let res = client
        .get(format!("{base}/v1/apps/app-19/machines"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list");
    let n = res
        .json::<serde_json::Value>()
        .await
        .expect("json")
        .as_array()
        .map_or(0, Vec::len);
    println!("restart after kill -9 (journal replay) until first answer: {:.0} ms; app-19 holds {n} machines", t.elapsed().as_secs_f64() * 1000.0);
    println!("lab RSS after replay: {} MB", rss_kb(child.id()) / 1024);
    child.kill().expect("kill");
    child.wait().expect("reap");
}
