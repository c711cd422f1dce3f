//! Issue 4's figure: wall time from a machine's create request to "the node's SSH answers" (a
//! TCP connect to `[6PN]:2222` that receives the `SSH-2.0-fks-bootstrap` banner; port 22 is
//! Fly's own SSH), for 1 machine and for 12 machines created concurrently (time until all
//! answer), on an in-process guests-mode lab with its own bridge (`fkssb1`, 172.31.201.0/24)
//! and the lab's default timings. Every machine runs `fks-bootstrap node ssh` (the server
//! `node init` runs) with the files `ClusterKeys::node_files` delivers, in the node image the
//! product builds and pushes to the lab's registry (pulled once at the first create: the
//! warm-up machine).
//!
//! Run (root): `cargo bench -p fks-lab --bench node_ssh_ready`. Prints the figures, their ratio
//! and the target (12 within 1.5x of 1); asserts nothing about speed. Without root it prints
//! why and exits 0. Destroys its machines, app, guests and bridge at the end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use fks_bootstrap::ssh::ClusterKeys;
use fks_lab::guest::BridgeConfig;
use fks_lab::{Faults, Options, Timings};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

#[path = "../tests/common/images.rs"]
mod images;

const TOKEN: &str = "node-ssh-ready-bench";
const APP: &str = "bench-cp";
const NETWORK: &str = "nodesshready1";
const CONCURRENT: usize = 12;
const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {TOKEN}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("send");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }
}

/// The banner the node's SSH server starts with.
const BANNER: &[u8] = b"SSH-2.0-fks-bootstrap";

/// True once the node's SSH server at `addr` sends its identification string.
async fn node_ssh_answers(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; BANNER.len()];
        stream.read_exact(&mut buf).await.ok()?;
        Some(buf == BANNER)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Create one machine for `node` and wait until its SSH answers; returns the machine id and
/// the time from the create request.
async fn create_until_ssh(api: Api, config: Value) -> (String, Duration) {
    let started = Instant::now();
    let m = api
        .ok(
            Method::POST,
            &format!("/v1/apps/{APP}/machines"),
            Some(json!({"region": "sjc", "config": config})),
        )
        .await;
    let id = m["id"].as_str().expect("machine id").to_string();
    let mut ip = m["private_ip"]
        .as_str()
        .and_then(|s| s.parse::<IpAddr>().ok());
    loop {
        if ip.is_none() {
            let (_, m) = api
                .call(Method::GET, &format!("/v1/apps/{APP}/machines/{id}"), None)
                .await;
            ip = m["private_ip"].as_str().and_then(|s| s.parse().ok());
        }
        if let Some(ip) = ip {
            let port = fks_bootstrap::config::DEFAULT_SSH_PORT;
            if node_ssh_answers(SocketAddr::new(ip, port)).await {
                return (id, started.elapsed());
            }
        }
        assert!(
            started.elapsed() < WAIT,
            "the SSH of machine {id} never answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn machine_config(image: &str, keys: &ClusterKeys, node: &str) -> Value {
    let files: Vec<Value> = keys
        .node_files(node)
        .expect("node files")
        .iter()
        .map(|f| serde_json::to_value(f.to_machine_file()).expect("file json"))
        .collect();
    json!({
        "image": image,
        "init": {"exec": ["fks-bootstrap", "node", "ssh"]},
        "files": files,
        "metadata": {"fks_cluster": "bench", "fks_node": node},
        "stop_config": {"signal": "SIGTERM"}
    })
}

/// Create `configs` concurrently; the time until all answer, and their ids.
async fn batch(api: &Api, configs: Vec<Value>) -> (Duration, Vec<String>) {
    let started = Instant::now();
    let tasks: Vec<_> = configs
        .into_iter()
        .map(|c| tokio::spawn(create_until_ssh(api.clone(), c)))
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("create task").0);
    }
    (started.elapsed(), ids)
}

async fn destroy(api: &Api, ids: &[String]) {
    for id in ids {
        api.ok(
            Method::DELETE,
            &format!("/v1/apps/{APP}/machines/{id}?force=true"),
            None,
        )
        .await;
    }
}

/// The workspace's `fks-bootstrap`, built in this bench's profile next to its executable
/// (target/<profile>/deps/<bench> -> target/<profile>/fks-bootstrap).
fn workspace_binary(package: &str, bin: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("bench binary path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("bench binary in target/<profile>/deps")
        .to_path_buf();
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", package, "--bin", bin]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = cmd.current_dir(root).status().expect("running cargo build");
    assert!(status.success(), "building {bin} failed");
    let path = profile_dir.join(bin);
    assert!(path.is_file(), "{} not built", path.display());
    path
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("node_ssh_ready: skipped, needs root (guests are network and mount namespaces)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench());
}

async fn bench() {
    let prefix = fks_lab::ids::network_prefix(NETWORK).segments();
    let at = |last: u16| std::net::Ipv6Addr::new(prefix[0], prefix[1], prefix[2], 0, 0, 0, 0, last);
    let bridge = BridgeConfig {
        name: "fkssb1".into(),
        gateway6: at(1),
        prefix6: 48,
        dns6: at(3),
        gateway4: Ipv4Addr::new(172, 31, 201, 1),
        prefix4: 24,
    };
    fks_lab::guest::remove_bridge(&bridge.name).expect("removing a stale bridge");
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
            &workspace_binary("fks-bootstrap", "fks-bootstrap"),
            &workspace_binary("k3s-standin", "k3s-standin"),
        )
    })
    .await
    .expect("node image thread");
    let keys = ClusterKeys::open(&dir.path().join("keys"), "bench").expect("keys");

    let timings = Timings::default();
    let opts = Options {
        state_dir: state,
        zones: fks_lab::parse_zones("sjc=4").expect("zones"),
        faults: Faults::parse("").expect("faults"),
        seed: 1,
        token: TOKEN.into(),
        timings,
        guests: true,
        bridge: bridge.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = Api {
        base: format!("http://{}", listener.local_addr().expect("addr")),
        http: reqwest::Client::new(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let lab = tokio::spawn(fks_lab::run(listener, opts, async move {
        let _ = rx.await;
    }));
    let deadline = Instant::now() + WAIT;
    while api
        .http
        .get(format!("{}/lab/v1/stats", api.base))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "lab did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.ok(
        Method::POST,
        "/v1/apps",
        Some(json!({"app_name": APP, "org_slug": "personal", "network": NETWORK})),
    )
    .await;

    // Keys are made before any clock starts: generating them is not part of a create.
    let warm = machine_config(&image, &keys, "warm-0");
    let one = machine_config(&image, &keys, "one-0");
    let many: Vec<Value> = (0..CONCURRENT)
        .map(|i| machine_config(&image, &keys, &format!("many-{i}")))
        .collect();

    // One unreported machine first, so page cache and first-use costs of the server are not in
    // the single-machine figure.
    let (warmup, warm_ids) = batch(&api, vec![warm]).await;
    destroy(&api, &warm_ids).await;
    let (single, one_ids) = batch(&api, vec![one]).await;
    let (all, many_ids) = batch(&api, many).await;

    println!(
        "node_ssh_ready (lab timings: launch {:?}, boot {:?}; the node's SSH server in guests)",
        timings.launch, timings.boot
    );
    println!("  warm-up, 1 machine (not counted):           {warmup:>10.3?}");
    println!("  create -> node SSH answers, 1 machine:          {single:>10.3?}");
    println!("  create -> node SSH answers, {CONCURRENT} concurrent (all): {all:>10.3?}");
    let ratio = all.as_secs_f64() / single.as_secs_f64();
    println!(
        "  ratio {ratio:.2}x   target: {CONCURRENT} within 1.5x of 1 ({})",
        if ratio <= 1.5 { "met" } else { "not met" }
    );

    destroy(&api, &one_ids).await;
    destroy(&api, &many_ids).await;
    // Machine destroys finish asynchronously: force the app delete rather than wait for them.
    api.ok(Method::DELETE, &format!("/v1/apps/{APP}?force=true"), None)
        .await;
    let _ = tx.send(());
    lab.await.expect("lab task").expect("lab run");
    fks_lab::guest::remove_bridge(&bridge.name).expect("removing the bridge");
}
