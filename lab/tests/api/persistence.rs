//! Persistence: a graceful restart and a `kill -9` of the spawned binary in the middle of a
//! burst of writes both keep every acknowledged app, volume, machine and secret.

use crate::util::{machine_body, Lab, TOKEN};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn restart_keeps_apps_volumes_machines_and_secrets() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let (_, v) = lab
        .post(
            "/v1/apps/app/volumes",
            json!({"name": "data", "region": "sjc"}),
        )
        .await;
    let vid = v["id"].as_str().expect("id").to_string();
    let m = lab
        .machine("app", json!({"config": {"image": "u", "mounts": [{"volume": vid, "path": "/d"}], "x_unknown": 5}}))
        .await;
    let mid = m["id"].as_str().expect("id").to_string();
    lab.wait("app", &mid, "started").await;
    lab.post("/v1/apps/app/secrets/TOKEN", json!({"value": "s3cret"}))
        .await;
    let stopped = lab
        .machine(
            "app",
            json!({"skip_launch": true, "config": {"image": "u"}}),
        )
        .await;
    let lab = lab.restart().await;
    let (s, got) = lab.get(&format!("/v1/apps/app/machines/{mid}")).await;
    assert_eq!(s, 200);
    assert_eq!(got["state"], "started");
    assert_eq!(got["config"]["x_unknown"], 5);
    assert_eq!(got["private_ip"], m["private_ip"]);
    let (_, v2) = lab.get(&format!("/v1/apps/app/volumes/{vid}")).await;
    assert_eq!(v2["attached_machine_id"], mid.as_str());
    let (_, st) = lab
        .get(&format!(
            "/v1/apps/app/machines/{}",
            stopped["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(st["state"], "created");
    let (_, secrets) = lab.get("/v1/apps/app/secrets").await;
    assert_eq!(secrets["secrets"][0]["name"], "TOKEN");
    // New ids after a restart with the same seed do not repeat old ones.
    let m2 = lab.machine("app", machine_body()).await;
    assert_ne!(m2["id"], m["id"]);
    assert_ne!(m2["id"], stopped["id"]);
}

fn spawn(dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fks-lab"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "9",
            "--token",
            TOKEN,
        ])
        .args([
            "--timings",
            "launch=5ms,boot=5ms,stop=5ms,destroy=5ms",
            "--state-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fks-lab");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).expect("read env line");
    let mut token_line = String::new();
    reader.read_line(&mut token_line).expect("read token line");
    assert_eq!(token_line.trim(), format!("export FLY_API_TOKEN={TOKEN}"));
    let host = line
        .trim()
        .strip_prefix("export FLY_API_HOSTNAME=")
        .expect("hostname line")
        .to_string();
    (child, host)
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut req = client.request(method, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.ok()?;
    let status = res.status().as_u16();
    Some((status, res.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn kill_9_during_a_burst_of_writes_keeps_every_acknowledged_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut child, host) = spawn(tmp.path());
    let client = reqwest::Client::new();
    let (s, _) = send(
        &client,
        reqwest::Method::POST,
        format!("{host}/v1/apps"),
        Some(json!({"name": "burst"})),
    )
    .await
    .expect("app");
    assert_eq!(s, 201);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = vec![];
    for w in 0..8 {
        let (client, host, acked) = (client.clone(), host.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let body = json!({"config": {"image": "u", "metadata": {"w": format!("{w}-{i}")}}});
                match send(
                    &client,
                    reqwest::Method::POST,
                    format!("{host}/v1/apps/burst/machines"),
                    Some(body),
                )
                .await
                {
                    Some((200, m)) => acked
                        .lock()
                        .expect("lock")
                        .push(m["id"].as_str().expect("id").to_string()),
                    Some(_) => {}
                    None => return,
                }
            }
        }));
    }
    while acked.lock().expect("lock").len() < 400 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    for t in tasks {
        t.await.expect("task");
    }
    let acked = acked.lock().expect("lock").clone();
    let (mut child, host) = spawn(tmp.path());
    let (s, list) = send(
        &client,
        reqwest::Method::GET,
        format!("{host}/v1/apps/burst/machines?include_deleted=true"),
        None,
    )
    .await
    .expect("list");
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert_eq!(s, 200);
    let present: std::collections::HashSet<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !present.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged machines lost: {missing:?}",
        missing.len(),
        acked.len()
    );
    println!(
        "kill -9 after {} acknowledged creates: all {} present",
        acked.len(),
        present.len()
    );
}
