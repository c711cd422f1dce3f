//! The real `fks-bootstrap ssh` / `-s` binary against an in-process guests-mode lab (root
//! only): a `lab-cp` machine running the node's SSH server (`fks-bootstrap node ssh`, what
//! `node init` serves) with the cluster's delivered keys, reached over its 6PN address on
//! port 2222 with the host key pinned in a temporary `XDG_CONFIG_HOME`, while port 22 there
//! belongs to the lab's stand-in for Fly's own SSH (reference/fly-runtime.md §1.6). Asserts
//! on stdout, stderr and exit codes: the remote exit code, arguments arriving intact, a
//! swapped host key refused, unknown nodes and unknown host keys explained.
//!
//! Own bridge (`fkscs1`), app network and IPv4 range (172.31.1.0/24), so this runs in parallel
//! with the other guest tests. Without root the test prints why and returns, except under
//! `CI=true` where it fails.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fks_bootstrap::plan::{META_CLUSTER, META_NODE};
use fks_bootstrap::ssh::{fingerprint, ClusterKeys};
use fks_lab::guest::BridgeConfig;
use fks_lab::{Faults, Options, Timings};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

mod common;
use common::{fks_bootstrap_binary, have_root, repo_root, sweep_netns};

const TOKEN: &str = "cli-ssh-test-token";
/// Long enough for a first pull of the node image on a loaded machine.
const WAIT: Duration = Duration::from_secs(180);
/// `clusters/lab`'s CLUSTER_NAME and its control-plane app.
const CLUSTER: &str = "lab";
const APP: &str = "lab-cp";

/// The node's SSH port: `clusters/lab` leaves SSH_PORT at its default.
const NODE_SSH_PORT: u16 = fks_bootstrap::config::DEFAULT_SSH_PORT;

/// The SSH identification line the server at `addr` sends, once it sends one.
async fn ssh_banner(addr: SocketAddr) -> Option<String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while buf.len() < 255 {
            stream.read_exact(&mut byte).await.ok()?;
            if byte[0] == b'\n' {
                break;
            }
            buf.push(byte[0]);
        }
        Some(String::from_utf8_lossy(&buf).trim_end().to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

struct GuestLab {
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    bridge: BridgeConfig,
    /// The node image, pinned by digest.
    image: String,
    _registry: fks_lab::registry::Registry,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), fks_lab::Error>>>,
}

impl GuestLab {
    async fn start() -> GuestLab {
        let n = 1u8;
        let network = "clissh1";
        let prefix = fks_lab::ids::network_prefix(network).segments();
        let at =
            |last: u16| std::net::Ipv6Addr::new(prefix[0], prefix[1], prefix[2], 0, 0, 0, 0, last);
        let bridge = BridgeConfig {
            name: format!("fkscs{n}"),
            gateway6: at(1),
            prefix6: 48,
            dns6: at(3),
            gateway4: Ipv4Addr::new(172, 31, n, 1),
            prefix4: 24,
        };
        sweep_netns(&format!("{}-", bridge.name));
        fks_lab::guest::remove_bridge(&bridge.name).expect("removing a stale bridge");
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir state");
        // The node image the product builds and pushes; its `fks-bootstrap node ssh` serves
        // what `node init` serves, without k3s.
        let registry = fks_lab::registry::Registry::start(&state, TOKEN)
            .await
            .expect("registry");
        let host = registry.host();
        let image = tokio::task::spawn_blocking(move || common::push_node_image(&host, TOKEN))
            .await
            .expect("node image thread");
        let opts = Options {
            state_dir: state,
            zones: fks_lab::parse_zones("sjc=2").expect("zones"),
            faults: Faults::parse("").expect("faults"),
            seed: 3,
            token: TOKEN.into(),
            timings: Timings {
                launch: Duration::from_millis(5),
                boot: Duration::from_millis(5),
                stop: Duration::from_millis(5),
                destroy: Duration::from_millis(5),
            },
            guests: true,
            bridge: bridge.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(fks_lab::run(listener, opts, async move {
            let _ = rx.await;
        }));
        let lab = GuestLab {
            base,
            http: reqwest::Client::new(),
            dir,
            bridge,
            image,
            _registry: registry,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        let deadline = Instant::now() + WAIT;
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
        lab.ok(
            "/v1/apps",
            json!({"app_name": APP, "org_slug": "personal", "network": network}),
        )
        .await;
        lab
    }

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

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call(Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {v}");
        v
    }

    fn log(&self, id: &str) -> String {
        let state = self.dir.path().join("state");
        std::fs::read_to_string(fks_lab::runner::log_path(&state, id)).unwrap_or_default()
    }

    /// The machine once it is started with an instance other than `not_instance`.
    async fn wait_started(&self, id: &str, not_instance: &Value) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, m) = self
                .call(Method::GET, &format!("/v1/apps/{APP}/machines/{id}"), None)
                .await;
            assert_eq!(status, 200, "{m}");
            if m["state"] == "started" && &m["instance_id"] != not_instance {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "machine {id} did not start: {m}\nlog: {}",
                self.log(id)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the node's SSH server on the machine's 6PN address to send its banner;
    /// returns that address.
    async fn wait_node_ssh(&self, id: &str, machine: &Value) -> std::net::IpAddr {
        let ip: std::net::IpAddr = machine["private_ip"]
            .as_str()
            .expect("private_ip")
            .parse()
            .expect("ip");
        let deadline = Instant::now() + WAIT;
        loop {
            match ssh_banner(SocketAddr::new(ip, NODE_SSH_PORT)).await {
                Some(b) if b.starts_with("SSH-2.0-fks-bootstrap") => return ip,
                other => assert!(
                    Instant::now() < deadline,
                    "the node's SSH on {id} did not answer ({other:?})\nlog: {}",
                    self.log(id)
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("lab run");
        }
        fks_lab::guest::remove_bridge(&self.bridge.name).expect("removing the bridge");
    }
}

/// A machine config for node `node` of cluster `lab` serving the node's SSH with `files`.
fn node_ssh_config(image: &str, node: &str, files: &[Value]) -> Value {
    json!({
        "image": image,
        "init": {"exec": ["fks-bootstrap", "node", "ssh"]},
        "files": files,
        "metadata": {META_CLUSTER: CLUSTER, META_NODE: node},
        "stop_config": {"signal": "SIGTERM"}
    })
}

fn files_json(keys: &ClusterKeys, node: &str) -> Vec<Value> {
    keys.node_files(node)
        .expect("node files")
        .iter()
        .map(|f| serde_json::to_value(f.to_machine_file()).expect("file json"))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssh_runs_commands_on_the_pinned_node_and_refuses_a_swapped_host_key() {
    if !have_root("cli_ssh") {
        return;
    }
    let bin = tokio::task::spawn_blocking(fks_bootstrap_binary)
        .await
        .expect("build thread");
    let lab = GuestLab::start().await;
    let xdg = lab.dir.path().join("xdg");
    let keys = ClusterKeys::open(&xdg.join("fks-bootstrap"), CLUSTER).expect("keys");
    let m = lab
        .ok(
            &format!("/v1/apps/{APP}/machines"),
            json!({"region": "sjc", "config": node_ssh_config(&lab.image, "ctrl-0", &files_json(&keys, "ctrl-0"))}),
        )
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    let m = lab.wait_started(&id, &Value::Null).await;
    let ip = lab.wait_node_ssh(&id, &m).await;
    // Port 22 of the 6PN address is Fly's SSH (the lab's stand-in), not the node's.
    let fly_ssh = ssh_banner(SocketAddr::new(ip, 22)).await;
    assert_eq!(
        fly_ssh.as_deref(),
        Some(fks_lab::guest::hallpass::SERVER_ID),
        "port 22 on {ip}"
    );

    let run = |args: Vec<String>| {
        let (bin, base, xdg) = (bin.clone(), lab.base.clone(), xdg.clone());
        tokio::task::spawn_blocking(move || -> Output {
            Command::new(bin)
                .args(args)
                .current_dir(repo_root())
                .env("FLY_API_HOSTNAME", base)
                .env("FLY_API_TOKEN", TOKEN)
                .env("XDG_CONFIG_HOME", xdg)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .output()
                .expect("running fks-bootstrap")
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // One command: its stdout, exit code 0.
    let out = run(args(&["ssh", "cp", "clusters/lab", "--", "hostname"]))
        .await
        .expect("join");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nlog: {}",
        text(&out.stderr),
        lab.log(&id)
    );
    assert_eq!(text(&out.stdout).trim(), id);

    // The short form, the remote exit code, stderr streamed separately.
    let out = run(args(&[
        "-s",
        "cp",
        "clusters/lab",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]))
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));

    // A remote signal is 128 + its number.
    let out = run(args(&[
        "ssh",
        "cp",
        "clusters/lab",
        "--node",
        "ctrl-0",
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]))
    .await
    .expect("join");
    assert_eq!(
        out.status.code(),
        Some(143),
        "stderr: {}",
        text(&out.stderr)
    );

    // Each argument arrives as one word, unexpanded on either side.
    let tricky = ["a b", "$(echo no)", "x;y", "'q'", "*"];
    let mut argv = args(&["ssh", "cp", "clusters/lab", "--", "printf", "[%s]\\n"]);
    argv.extend(args(&tricky));
    let out = run(argv).await.expect("join");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let expected: String = tricky.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(text(&out.stdout), expected);

    // Without a command: a shell; stdin is not a terminal, so no pty, input sent as it is.
    let shell = {
        let (bin, base, xdg) = (bin.clone(), lab.base.clone(), xdg.clone());
        tokio::task::spawn_blocking(move || -> Output {
            use std::io::Write;
            let mut child = Command::new(bin)
                .args(["-s", "cp", "clusters/lab"])
                .current_dir(repo_root())
                .env("FLY_API_HOSTNAME", base)
                .env("FLY_API_TOKEN", TOKEN)
                .env("XDG_CONFIG_HOME", xdg)
                .env_remove("RUST_LOG")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("running fks-bootstrap");
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(b"echo \"shell on $(hostname)\"\nexit 5\n")
                .expect("write stdin");
            child.wait_with_output().expect("wait")
        })
    };
    let out = shell.await.expect("join");
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("shell on {id}\n"));

    // An unknown node: exit 1 and a sentence naming the started ones.
    let out = run(args(&[
        "ssh",
        "cp",
        "clusters/lab",
        "--node",
        "ctrl-9",
        "--",
        "true",
    ]))
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("app lab-cp has no started node named ctrl-9; started nodes: ctrl-0"),
        "{}",
        text(&out.stderr)
    );

    // A started node whose host key this machine never generated: refused, nothing created.
    let other = lab
        .ok(
            &format!("/v1/apps/{APP}/machines"),
            json!({"region": "sjc", "config": {
                "image": lab.image,
                "init": {"exec": ["sleep", "3600"]},
                "metadata": {META_CLUSTER: CLUSTER, META_NODE: "ctrl-5"}
            }}),
        )
        .await;
    let other_id = other["id"].as_str().expect("id").to_string();
    lab.wait_started(&other_id, &Value::Null).await;
    let out = run(args(&[
        "ssh",
        "cp",
        "clusters/lab",
        "--node",
        "ctrl-5",
        "--",
        "true",
    ]))
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the host key of node ctrl-5 is unknown to this machine")
            && err.contains(&keys.dir().display().to_string()),
        "{err}"
    );
    assert!(!keys.dir().join("hosts/ctrl-5").exists(), "a key was made");

    // ctrl-0 recreated with another node's host key: refused, both fingerprints named.
    let pinned = fingerprint(keys.host_key("ctrl-0").expect("key").public_key());
    let swapped = fingerprint(keys.host_key("ctrl-1").expect("key").public_key());
    let before = m["instance_id"].clone();
    lab.ok(
        &format!("/v1/apps/{APP}/machines/{id}"),
        json!({"config": node_ssh_config(&lab.image, "ctrl-0", &files_json(&keys, "ctrl-1"))}),
    )
    .await;
    let m = lab.wait_started(&id, &before).await;
    lab.wait_node_ssh(&id, &m).await;
    let out = run(args(&["ssh", "cp", "clusters/lab", "--", "hostname"]))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    assert!(out.stdout.is_empty(), "ran on a host with the wrong key");
    let err = text(&out.stderr);
    assert!(
        err.contains("host key mismatch for node ctrl-0")
            && err.contains(&pinned)
            && err.contains(&swapped),
        "{err}"
    );

    lab.stop().await;
}
