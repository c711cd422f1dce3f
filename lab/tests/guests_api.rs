//! Guests mode end to end (root only): a lab started in-process with `guests: true` turns
//! machines created over the Machines API into real guests, and these tests look at them from
//! inside (exec) and outside (`ip netns`, /proc, ssh, the state dir).
//!
//! Each lab starts its own registry (Debian's docker-registry, `fks_lab::registry`); images
//! other than the built-in `lab/base` are pushed there and pulled by the lab, as on Fly
//! (`common::images`: the lab's Debian base, small test images, the product-built node image).
//!
//! Each test has its own bridge (`fksga<N>`), app network (whose 6PN /48 the bridge routes and
//! whose `::3` is that test's DNS), IPv4 network (`172.29.<N>.0/24`) and state dir, so tests
//! run in parallel. Without root a test prints why and returns, except under `CI=true` where it
//! fails.

use fks_lab::guest::BridgeConfig;
use fks_lab::{Faults, Options, Timings};
use reqwest::Method;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::images::push_test_image;
use common::{have_root, sweep_netns};
use fks_lab::registry::Registry;

const TOKEN: &str = "guests-test-token";
/// Long enough for a first pull of the node image (a few hundred MB of debug binaries) on a
/// loaded machine.
const WAIT: Duration = Duration::from_secs(180);

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn netns_names() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pids whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<i32> {
    let want = argv.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
        })
        .collect()
}

/// A lab in guests mode with its own network and registry, and (when the test gives
/// programs) an image `test/img` in that registry: the lab's Debian base plus the programs in
/// /usr/local/bin.
struct GuestLab {
    base: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
    bridge: BridgeConfig,
    network: String,
    registry: Option<Registry>,
    /// `test/img` pinned by digest, when the test gave programs.
    image: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), fks_lab::Error>>>,
}

/// Options of a test lab on `state` with `bridge`.
fn options(state: PathBuf, bridge: BridgeConfig, faults: &str) -> Options {
    Options {
        state_dir: state,
        zones: fks_lab::parse_zones("sjc=2").expect("zones"),
        faults: Faults::parse(faults).expect("faults"),
        seed: 7,
        token: TOKEN.into(),
        timings: Timings {
            launch: Duration::from_millis(5),
            boot: Duration::from_millis(5),
            stop: Duration::from_millis(5),
            destroy: Duration::from_millis(5),
        },
        guests: true,
        bridge,
    }
}

impl GuestLab {
    async fn start(n: u8, faults: &str, programs: &[(&str, &str)]) -> GuestLab {
        let network = format!("gapi{n}");
        let prefix = fks_lab::ids::network_prefix(&network).segments();
        let at =
            |last: u16| std::net::Ipv6Addr::new(prefix[0], prefix[1], prefix[2], 0, 0, 0, 0, last);
        let bridge = BridgeConfig {
            name: format!("fksga{n}"),
            gateway6: at(1),
            prefix6: 48,
            dns6: at(3),
            gateway4: Ipv4Addr::new(172, 29, n, 1),
            prefix4: 24,
        };
        sweep_netns(&format!("{}-", bridge.name));
        fks_lab::guest::remove_bridge(&bridge.name).expect("removing a stale bridge");
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir state");
        let registry = Registry::start(&state, TOKEN).await.expect("registry");
        let image = if programs.is_empty() {
            String::new()
        } else {
            let paths: Vec<String> = programs
                .iter()
                .map(|(name, _)| format!("usr/local/bin/{name}"))
                .collect();
            let files: Vec<common::images::File<'_>> = programs
                .iter()
                .zip(&paths)
                .map(|((_, text), path)| (path.as_str(), 0o755, text.as_bytes()))
                .collect();
            push_test_image(&registry.host(), TOKEN, "test/img", &files, json!({})).await
        };
        let opts = options(state, bridge.clone(), faults);
        GuestLab::spawn(opts, dir, network, Some(registry), image).await
    }

    async fn spawn(
        opts: Options,
        dir: tempfile::TempDir,
        network: String,
        registry: Option<Registry>,
        image: String,
    ) -> GuestLab {
        let bridge = opts.bridge.clone();
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
            client: reqwest::Client::new(),
            dir,
            bridge,
            network,
            registry,
            image,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        // The server answers once the bridge, DNS and guests are up.
        let deadline = Instant::now() + WAIT;
        loop {
            let up = lab
                .client
                .get(format!("{}/lab/v1/stats", lab.base))
                .send()
                .await
                .is_ok();
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "lab did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lab
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {TOKEN}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("send");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {v}");
        v
    }

    async fn create_app(&self, app: &str) {
        self.ok(
            "/v1/apps",
            json!({"app_name": app, "org_slug": "personal", "network": self.network}),
        )
        .await;
    }

    async fn machine(&self, app: &str, id: &str) -> Value {
        let (status, v) = self
            .call(Method::GET, &format!("/v1/apps/{app}/machines/{id}"), None)
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(fks_lab::runner::log_path(&self.state_dir(), id))
            .unwrap_or_default()
    }

    async fn wait_state(&self, app: &str, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = self.machine(app, id).await;
            if m["state"] == state {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "machine {id} did not reach {state}: {m}\nlog: {}",
                self.log(id)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn exec(&self, app: &str, id: &str, argv: &[&str]) -> (u16, Value) {
        self.post(
            &format!("/v1/apps/{app}/machines/{id}/exec"),
            json!({"command": argv, "timeout": 20}),
        )
        .await
    }

    /// The contents of `path` in the guest, once a `cat` of it succeeds.
    async fn read_when_there(&self, app: &str, id: &str, path: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let (st, v) = self.exec(app, id, &["cat", path]).await;
            if st == 200 && v["exit_code"] == 0 {
                return v["stdout"].as_str().expect("stdout").to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {path}: {v}\nlog: {}",
                self.log(id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Exec that must succeed; returns stdout.
    async fn run(&self, app: &str, id: &str, argv: &[&str]) -> String {
        let (status, v) = self.exec(app, id, argv).await;
        assert_eq!(status, 200, "exec {argv:?}: {v}");
        assert_eq!(v["exit_code"], 0, "exec {argv:?}: {v}");
        v["stdout"].as_str().expect("stdout").to_string()
    }

    /// Shut the lab down (its guests stop) and hand back its directory (and its registry,
    /// which outlives a lab restart as `fks-lab serve`'s does).
    async fn shut(mut self) -> (tempfile::TempDir, BridgeConfig, String, Option<Registry>) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("lab run");
        }
        assert!(
            !netns_names().contains(&format!("{}-", self.bridge.name)),
            "guests left after shutdown: {}",
            netns_names()
        );
        let registry = self.registry.take();
        (self.dir, self.bridge, self.network, registry)
    }

    async fn stop(self) {
        let (_dir, bridge, _, _) = self.shut().await;
        fks_lab::guest::remove_bridge(&bridge.name).expect("removing the bridge");
    }
}

/// Every file under `dir` except those named `skip` holding `needle`.
fn files_containing(dir: &Path, needle: &[u8], skip: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            files_containing(&p, needle, skip, out);
        } else if ft.is_file() && e.file_name() != skip {
            let data = std::fs::read(&p).unwrap_or_default();
            if data.windows(needle.len()).any(|w| w == needle) {
                out.push(p);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn started_machine_is_a_guest_with_files_env_volume_dns_and_exec() {
    if !have_root("guests_api") {
        return;
    }
    // The built-in lab/base (the host's programs: this test looks at iproute2 inside), with a
    // program of the machine's own delivered as a file on its PATH.
    let lab = GuestLab::start(1, "", &[]).await;
    let app = "gapi-one";
    lab.create_app(app).await;
    let secret_content = b"secret-file-content-7f3a9c";
    let secret_value = b64(secret_content);
    lab.ok(
        &format!("/v1/apps/{app}/secrets/TLS_KEY"),
        json!({"value": secret_value}),
    )
    .await;
    let vol = lab
        .ok(
            &format!("/v1/apps/{app}/volumes"),
            json!({"name": "data", "region": "sjc", "size_gb": 1}),
        )
        .await;
    let vol_id = vol["id"].as_str().expect("volume id").to_string();
    let config = |greeting: &str| {
        json!({
            "image": "lab/base",
            "env": {"GREETING": greeting},
            "init": {"exec": ["sleep", "9173"]},
            "files": [
                {"guest_path": "/usr/local/bin/greet", "mode": 0o755,
                 "raw_value": b64(b"#!/bin/sh\necho \"hello from $FLY_MACHINE_ID\"\n")},
                {"guest_path": "/etc/app/plain.txt", "raw_value": b64(b"plain content\n")},
                {"guest_path": "/etc/app/secret.txt", "secret_name": "TLS_KEY", "mode": 0o600}
            ],
            "mounts": [{"volume": vol_id, "path": "/data"}]
        })
    };
    let created = Instant::now();
    let m = lab
        .ok(
            &format!("/v1/apps/{app}/machines"),
            json!({"region": "sjc", "config": config("hi")}),
        )
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    let m = lab.wait_state(app, &id, "started").await;
    let boot = created.elapsed();
    let private_ip = m["private_ip"].as_str().expect("private_ip").to_string();
    // The figure the brief asks for: create request → state started (guest's init exec'd).
    println!("create -> started (guest running): {boot:?}");
    assert!(
        !pids_running(&["sleep", "9173"]).is_empty(),
        "init is not running"
    );

    assert_eq!(lab.run(app, &id, &["uname", "-n"]).await.trim(), id);
    assert_eq!(
        lab.run(app, &id, &["printenv", "FLY_PRIVATE_IP"])
            .await
            .trim(),
        private_ip
    );
    // As on Fly, nothing in the guest says it is the lab's (the product must not need it).
    assert_eq!(
        lab.run(app, &id, &["sh", "-c", "printenv FKS_LAB || echo unset"])
            .await
            .trim(),
        "unset"
    );
    assert_eq!(
        lab.run(app, &id, &["printenv", "GREETING"]).await.trim(),
        "hi"
    );
    // As on Fly, app secrets are in env unless the machine asked for skip_secrets.
    assert_eq!(
        lab.run(app, &id, &["printenv", "TLS_KEY"]).await.trim(),
        secret_value
    );
    let eth0 = lab
        .run(app, &id, &["ip", "-6", "-o", "addr", "show", "dev", "eth0"])
        .await;
    assert!(eth0.contains(&format!("{private_ip}/")), "{eth0}");
    assert_eq!(
        lab.run(app, &id, &["greet"]).await.trim(),
        format!("hello from {id}"),
        "the machine's program is found on PATH"
    );
    assert_eq!(
        lab.run(app, &id, &["cat", "/etc/app/plain.txt"]).await,
        "plain content\n"
    );
    assert_eq!(
        lab.run(app, &id, &["cat", "/etc/app/secret.txt"])
            .await
            .as_bytes(),
        secret_content
    );
    // The lab's state dir is hidden from the guest.
    let state = lab.state_dir();
    let hidden = lab
        .run(app, &id, &["ls", "-A", &state.to_string_lossy()])
        .await;
    assert_eq!(hidden.trim(), "", "state dir visible in the guest");
    // The host's SSH host keys are not the guest's: without a delivered key they are empty.
    let host_keys: Vec<PathBuf> = std::fs::read_dir("/etc/ssh")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains("ssh_host_"))
                .collect()
        })
        .unwrap_or_default();
    for key in &host_keys {
        let seen = lab.run(app, &id, &["cat", &key.to_string_lossy()]).await;
        assert!(seen.is_empty(), "guest sees the host's {}", key.display());
    }
    // Exec answers Fly's shape with the command's exit code and stderr.
    let (status, v) = lab
        .exec(app, &id, &["sh", "-c", "echo out; echo err >&2; exit 7"])
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["exit_code"], 7);

    // .internal names resolve inside the guest through the lab DNS.
    let by_app = lab
        .run(
            app,
            &id,
            &["getent", "ahostsv6", &format!("{app}.internal")],
        )
        .await;
    assert!(by_app.contains(&private_ip), "{by_app}");
    let by_id = lab
        .run(
            app,
            &id,
            &["getent", "ahostsv6", &format!("{id}.vm.{app}.internal")],
        )
        .await;
    assert!(by_id.contains(&private_ip), "{by_id}");

    // The volume's data survives stop + start; the root filesystem does not.
    lab.run(
        app,
        &id,
        &[
            "sh",
            "-c",
            "echo kept > /data/f; echo gone > /etc/app/scratch",
        ],
    )
    .await;
    lab.ok(&format!("/v1/apps/{app}/machines/{id}/stop"), json!({}))
        .await;
    lab.wait_state(app, &id, "stopped").await;
    assert!(pids_running(&["sleep", "9173"]).is_empty());
    let (status, v) = lab.exec(app, &id, &["true"]).await;
    assert_eq!(status, 412, "exec on a stopped machine: {v}");
    lab.ok(&format!("/v1/apps/{app}/machines/{id}/start"), json!({}))
        .await;
    lab.wait_state(app, &id, "started").await;
    assert_eq!(lab.run(app, &id, &["cat", "/data/f"]).await, "kept\n");
    let (_, v) = lab.exec(app, &id, &["cat", "/etc/app/scratch"]).await;
    assert_ne!(v["exit_code"], 0, "the root filesystem is ephemeral: {v}");

    // An update replaces the guest with one of the new config; the volume stays.
    let before = lab.machine(app, &id).await["instance_id"].clone();
    lab.ok(
        &format!("/v1/apps/{app}/machines/{id}"),
        json!({"config": config("updated"), "skip_secrets": true}),
    )
    .await;
    let m = lab.wait_state(app, &id, "started").await;
    assert_ne!(m["instance_id"], before);
    assert_eq!(
        lab.run(app, &id, &["printenv", "GREETING"]).await.trim(),
        "updated"
    );
    let (_, v) = lab.exec(app, &id, &["printenv", "TLS_KEY"]).await;
    assert_ne!(
        v["exit_code"], 0,
        "skip_secrets keeps secrets out of env: {v}"
    );
    assert_eq!(
        lab.run(app, &id, &["cat", "/etc/app/secret.txt"])
            .await
            .as_bytes(),
        secret_content,
        "files still come from secrets"
    );
    assert_eq!(lab.run(app, &id, &["cat", "/data/f"]).await, "kept\n");
    assert_eq!(pids_running(&["sleep", "9173"]).len(), 1, "one guest only");

    // No state file of the lab holds the secret (secrets.json is its private store).
    let mut leaks = Vec::new();
    files_containing(&state, secret_content, "secrets.json", &mut leaks);
    files_containing(&state, secret_value.as_bytes(), "secrets.json", &mut leaks);
    assert!(leaks.is_empty(), "secret found in {leaks:?}");

    // Destroy removes the guest: no namespace, no veth on the bridge, no process.
    let (status, v) = lab
        .call(
            Method::DELETE,
            &format!("/v1/apps/{app}/machines/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    lab.wait_state(app, &id, "destroyed").await;
    assert!(!netns_names().contains(&id), "{}", netns_names());
    let links = Command::new("ip")
        .args(["-o", "link", "show", "master", &lab.bridge.name])
        .output()
        .expect("ip link");
    // The lab's WireGuard gateway (namespace `wg-<bridge>`) has its own veth on the bridge.
    let gateway = format!("link-netns wg-{}", lab.bridge.name);
    let links = String::from_utf8_lossy(&links.stdout);
    let left: Vec<&str> = links.lines().filter(|l| !l.contains(&gateway)).collect();
    assert!(left.is_empty(), "veths left: {left:?}");
    assert!(pids_running(&["sleep", "9173"]).is_empty());
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_policy_restarts_a_crashing_init_and_unknown_images_are_refused() {
    if !have_root("guests_api") {
        return;
    }
    let lab = GuestLab::start(2, "", &[("crash", "#!/bin/sh\necho crashing\nexit 3\n")]).await;
    let app = "gapi-two";
    lab.create_app(app).await;
    let (status, v) = lab
        .post(
            &format!("/v1/apps/{app}/machines"),
            json!({"config": {"image": "nope/missing", "init": {"exec": ["true"]}}}),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    let err = v["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("nope/missing") && err.contains("lab pulls only from its own registry"),
        "{v}"
    );

    let m = lab
        .ok(
            &format!("/v1/apps/{app}/machines"),
            json!({"config": {
                "image": lab.image,
                "init": {"exec": ["crash"]},
                "restart": {"policy": "on-failure", "max_retries": 2}
            }}),
        )
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    // One start and two restarts, each exiting 3: then the machine stays stopped.
    let deadline = Instant::now() + WAIT;
    let m = loop {
        let m = lab.machine(app, &id).await;
        let exits = m["events"]
            .as_array()
            .map(|e| e.iter().filter(|e| e["type"] == "exit").count())
            .unwrap_or(0);
        if exits == 3 && m["state"] == "stopped" {
            break m;
        }
        assert!(Instant::now() < deadline, "no 3 exits then stopped: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exit = m["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["type"] == "exit"))
        .expect("exit event");
    assert_eq!(exit["request"]["exit_event"]["exit_code"], 3, "{exit}");
    let log = lab.log(&id);
    assert_eq!(log.matches("crashing").count(), 3, "{log}");
    // The CLI prints the same log.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fks-lab"))
            .args(args)
            .output()
            .expect("run fks-lab")
    };
    let state = lab.state_dir();
    let state = state.to_string_lossy();
    let out = cli(&["logs", "--state-dir", &state, &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), log);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boot_failure_fault_crashes_the_first_start_and_restart_policy_recovers() {
    if !have_root("guests_api") {
        return;
    }
    let lab = GuestLab::start(3, "boot_failure=1", &[]).await;
    let app = "gapi-three";
    lab.create_app(app).await;
    let m = lab
        .ok(
            &format!("/v1/apps/{app}/machines"),
            json!({"config": {"image": "lab/base", "init": {"exec": ["sleep", "9174"]}}}),
        )
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let m = lab.machine(app, &id).await;
        let exit = m["events"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["type"] == "exit").cloned());
        if let (true, Some(exit)) = (m["state"] == "started", exit) {
            assert_eq!(exit["request"]["exit_event"]["exit_code"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "no crash then start: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lab.run(app, &id, &["uname", "-n"]).await.trim(), id);
    // The signal endpoint reaches the main process: SIGTERM ends `sleep` (exit 143), and the
    // default on-failure policy starts it again.
    lab.ok(
        &format!("/v1/apps/{app}/machines/{id}/signal"),
        json!({"signal": "SIGTERM"}),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let m = lab.machine(app, &id).await;
        let codes: Vec<Value> = m["events"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|e| e["type"] == "exit")
                    .map(|e| e["request"]["exit_event"]["exit_code"].clone())
                    .collect()
            })
            .unwrap_or_default();
        if m["state"] == "started" && codes.first() == Some(&json!(143)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no SIGTERM exit then restart: {m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lab.run(app, &id, &["uname", "-n"]).await.trim(), id);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_ssh_guest_answers_with_its_pinned_key_also_after_a_lab_restart() {
    if !have_root("guests_api") {
        return;
    }
    // The node's own SSH server (what `node init` serves), alone: `fks-bootstrap node ssh`,
    // in the node image the product builds and pushes.
    let lab = GuestLab::start(4, "", &[]).await;
    let host = lab.registry.as_ref().expect("registry").host();
    let node_image = tokio::task::spawn_blocking(move || common::push_node_image(&host, TOKEN))
        .await
        .expect("node image thread");
    let app = "gapi-four";
    lab.create_app(app).await;
    let keys_dir = lab.dir.path().join("keys");
    let keys = fks_bootstrap::ssh::ClusterKeys::open(&keys_dir, "gapi").expect("keys");
    let files: Vec<Value> = keys
        .node_files("node-1")
        .expect("node files")
        .iter()
        .map(|f| serde_json::to_value(f.to_machine_file()).expect("file json"))
        .collect();
    let m = lab
        .ok(
            &format!("/v1/apps/{app}/machines"),
            json!({"config": {
                "image": node_image,
                "init": {"exec": ["fks-bootstrap", "node", "ssh"]},
                "files": files,
                "stop_config": {"signal": "SIGTERM"}
            }}),
        )
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    let m = lab.wait_state(app, &id, "started").await;
    let ip = m["private_ip"].as_str().expect("ip").to_string();
    let host = keys.host_key("node-1").expect("host key");
    let port = fks_bootstrap::config::DEFAULT_SSH_PORT;
    let at = format!("[{ip}]:{port}");
    let known = keys_dir.join("known_hosts.test");
    std::fs::write(
        &known,
        fks_bootstrap::ssh::known_hosts_line(std::slice::from_ref(&at), host.public_key())
            .expect("known hosts line")
            + "\n",
    )
    .expect("write known_hosts");
    let user_key = keys.user_key().path().to_path_buf();
    let ssh = |known: &Path| {
        Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                &format!("UserKnownHostsFile={}", known.display()),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=5",
                "-i",
                &user_key.to_string_lossy(),
                "-p",
                &port.to_string(),
                &format!("root@{ip}"),
                "uname",
                "-n",
            ])
            .output()
            .expect("run ssh")
    };
    let ssh_until_ok = |known: PathBuf| async move {
        // The server may still be binding its port right after the start.
        let deadline = Instant::now() + WAIT;
        loop {
            let out = ssh(&known);
            if out.status.success() || Instant::now() > deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let out = ssh_until_ok(known.clone()).await;
    assert!(
        out.status.success(),
        "ssh failed: {}\nlog: {}",
        String::from_utf8_lossy(&out.stderr),
        lab.log(&id)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    // With another key pinned, the real client refuses the guest.
    let other = keys.host_key("node-2").expect("other key");
    let wrong = keys_dir.join("known_hosts.wrong");
    std::fs::write(
        &wrong,
        fks_bootstrap::ssh::known_hosts_line(std::slice::from_ref(&at), other.public_key())
            .expect("line")
            + "\n",
    )
    .expect("write");
    assert!(
        !ssh(&wrong).status.success(),
        "ssh accepted a wrong host key"
    );

    // A restart of the lab brings its started guests back.
    let (dir, bridge, network, registry) = lab.shut().await;
    assert!(!netns_names().contains(&id), "guest survived shutdown");
    let opts = options(dir.path().join("state"), bridge, "");
    let lab = GuestLab::spawn(opts, dir, network, registry, String::new()).await;
    let out = ssh_until_ok(known).await;
    assert!(
        out.status.success(),
        "ssh after lab restart: {}\nlog: {}",
        String::from_utf8_lossy(&out.stderr),
        lab.log(&id)
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulled_node_image_carries_the_standin_as_k3s_and_hosts_lists_started_machines() {
    if !have_root("guests_api") {
        return;
    }
    let lab = GuestLab::start(5, "", &[]).await;
    let state = lab.state_dir();
    let host = lab.registry.as_ref().expect("registry").host();
    let node_image = tokio::task::spawn_blocking(move || common::push_node_image(&host, TOKEN))
        .await
        .expect("node image thread");
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fks-lab"))
            .args(args)
            .output()
            .expect("run fks-lab")
    };
    let st = state.to_string_lossy().into_owned();
    let app = "gapi-five";
    lab.create_app(app).await;
    let m = lab
        .ok(
            &format!("/v1/apps/{app}/machines"),
            json!({"region": "sjc", "config": {"image": node_image, "init": {"exec": ["sleep", "9175"]}}}),
        )
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    let m = lab.wait_state(app, &id, "started").await;
    let found = lab
        .run(app, &id, &["sh", "-c", "command -v k3s; k3s --version"])
        .await;
    assert_eq!(
        found,
        "/usr/local/bin/k3s\nk3s-standin version v1.33.7+k3s-standin (stand-in for k3s, not k3s)\n"
    );
    // The host is not in the guest's view (nor the lab's state dir), and a guest's write into
    // the image's files stays in the guest: the unpacked image is shared and read-only.
    let seen = lab
        .run(
            app,
            &id,
            &[
                "sh",
                "-c",
                &format!("test -e '{st}' && echo seen || echo hidden"),
            ],
        )
        .await;
    assert_eq!(seen, "hidden\n", "the state dir is visible in the guest");
    lab.run(app, &id, &["touch", "/usr/local/bin/from-guest"])
        .await;
    let digest = m["image_ref"]["digest"].as_str().expect("image_ref.digest");
    assert_eq!(Some(digest), node_image.rsplit_once('@').map(|(_, d)| d));
    let unpacked = state
        .join("rootfs/images")
        .join(digest.trim_start_matches("sha256:"))
        .join("rootfs");
    assert!(
        unpacked.join("usr/local/bin/k3s").is_file(),
        "{}",
        unpacked.display()
    );
    assert!(!unpacked.join("usr/local/bin/from-guest").exists());

    // The host's view of .internal names, asked from this lab's DNS.
    let hosts = lab.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").expect("hosts");
    let dns = format!("[{}]:53", lab.bridge.dns6);
    let h = hosts.to_string_lossy().into_owned();
    let out = cli(&[
        "hosts",
        "--apply",
        "--hosts-file",
        &h,
        "--dns",
        &dns,
        "--bridge",
        &lab.bridge.name,
    ]);
    assert!(out.status.success(), "{out:?}");
    let ip = m["private_ip"].as_str().expect("private_ip");
    let text = std::fs::read_to_string(&hosts).expect("read hosts");
    assert!(
        text.contains(&format!("{ip} {id}.vm.{app}.internal {app}.internal\n")),
        "{text}"
    );
    let out = cli(&[
        "hosts",
        "--remove",
        "--hosts-file",
        &h,
        "--bridge",
        &lab.bridge.name,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&hosts).expect("read"),
        "127.0.0.1 localhost\n"
    );
    lab.stop().await;
}

/// Fly's eventual consistency, as the lab's seeded faults model it (reference fly-runtime.md
/// §6): a new app answers 404 for a moment (`app_settle`), and a secret write reaches machine
/// boots late (`secrets_lag`), so a machine created right after it without
/// `min_secrets_version` boots without the secret, while one that names the write's version
/// boots with it. These are the waits fks-bootstrap makes (fly::Client::create_app, run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_reach_a_boot_late_unless_the_create_names_min_secrets_version() {
    if !have_root("guests_api") {
        return;
    }
    let lab = GuestLab::start(6, "app_settle=400ms;secrets_lag=120s", &[]).await;
    let app = "gapi-six";
    lab.create_app(app).await;
    let (status, v) = lab
        .call(Method::GET, &format!("/v1/apps/{app}"), None)
        .await;
    assert_eq!(status, 404, "a new app is not found at once: {v}");
    let deadline = Instant::now() + WAIT;
    while lab
        .call(Method::GET, &format!("/v1/apps/{app}"), None)
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "the new app never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let set = lab
        .ok(
            &format!("/v1/apps/{app}/secrets/GREETING_SECRET"),
            json!({"value": "hello"}),
        )
        .await;
    let version = set["version"]
        .as_u64()
        .expect("a secrets write answers its version");
    let boot = |min: Option<u64>| {
        json!({
            "config": {"image": "lab/base", "init": {"exec": ["sleep", "9176"]}},
            "min_secrets_version": min,
        })
    };
    let path = format!("/v1/apps/{app}/machines");
    let printenv = ["sh", "-c", "printenv GREETING_SECRET || echo missing"];

    let stale = lab.ok(&path, boot(None)).await;
    let stale = stale["id"].as_str().expect("id").to_string();
    lab.wait_state(app, &stale, "started").await;
    assert_eq!(lab.run(app, &stale, &printenv).await.trim(), "missing");

    let fresh = lab.ok(&path, boot(Some(version))).await;
    let fresh = fresh["id"].as_str().expect("id").to_string();
    lab.wait_state(app, &fresh, "started").await;
    assert_eq!(lab.run(app, &fresh, &printenv).await.trim(), "hello");
    lab.stop().await;
}

/// A pulled image as Fly runs one (reference/fly-runtime.md §1.1, §2): its Entrypoint+Cmd is
/// the main process, its Env sits under the machine's env, its WorkingDir is where it starts,
/// FLY_IMAGE_REF is the reference pulled; the root filesystem is the image with a writable
/// layer that a restart throws away, while the volume keeps what was written to it. An image
/// that cannot be pulled is refused at create and update, and nothing is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulled_image_runs_entrypoint_cmd_and_env_on_a_rootfs_reset_at_every_start() {
    if !have_root("guests_api") {
        return;
    }
    let lab = GuestLab::start(7, "", &[]).await;
    let host = lab.registry.as_ref().expect("registry").host();
    let show = "#!/bin/sh\n\
        { echo \"args=$*\"; echo \"pwd=$(pwd)\"; echo \"IMG_ONLY=$IMG_ONLY\"; echo \"BOTH=$BOTH\";\n\
          echo \"FLY_IMAGE_REF=$FLY_IMAGE_REF\"; echo \"PATH=$PATH\"; echo \"HOME=$HOME\";\n\
          if test -e /rootfs-marker; then echo marker=present; else echo marker=absent; fi;\n\
        } > /data/boot.txt\n\
        exec sleep 9177\n";
    let image = push_test_image(
        &host,
        TOKEN,
        "test/show",
        &[("usr/local/bin/show", 0o755, show.as_bytes())],
        json!({
            "Entrypoint": ["/usr/local/bin/show"],
            "Cmd": ["from-cmd", "two"],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "IMG_ONLY=image", "BOTH=image"],
            "WorkingDir": "/srv/work",
        }),
    )
    .await;
    let app = "gapi-seven";
    lab.create_app(app).await;

    // Unpullable images are refused with a body that says why, and nothing is created.
    for (bad, status, says) in [
        (format!("{host}/test/missing:1"), 422, "no such manifest"),
        (format!("{host}/Not A Ref"), 400, "does not parse"),
        (
            "docker.io/library/debian:trixie".to_string(),
            422,
            "lab pulls only from its own registry",
        ),
    ] {
        let (st, v) = lab
            .post(
                &format!("/v1/apps/{app}/machines"),
                json!({"config": {"image": bad}}),
            )
            .await;
        let err = v["error"].as_str().unwrap_or_default();
        assert_eq!(st, status, "{bad}: {v}");
        assert!(
            err.starts_with("image cannot be pulled") && err.contains(says),
            "{bad}: {v}"
        );
    }
    let (st, listed) = lab
        .call(Method::GET, &format!("/v1/apps/{app}/machines"), None)
        .await;
    assert_eq!((st, listed.clone()), (200, json!([])), "{listed}");

    let vol = lab
        .ok(
            &format!("/v1/apps/{app}/volumes"),
            json!({"name": "data", "region": "sjc", "size_gb": 1}),
        )
        .await;
    let vol_id = vol["id"].as_str().expect("volume id").to_string();
    let config = json!({
        "image": image,
        "env": {"BOTH": "machine"},
        "mounts": [{"volume": vol_id, "path": "/data"}],
        "stop_config": {"signal": "SIGTERM", "timeout": "2s"}
    });
    let m = lab
        .ok(
            &format!("/v1/apps/{app}/machines"),
            json!({"region": "sjc", "config": config}),
        )
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    let m = lab.wait_state(app, &id, "started").await;
    assert_eq!(
        Some(m["image_ref"]["digest"].as_str().expect("digest")),
        image.rsplit_once('@').map(|(_, d)| d),
        "the machine pins what was pulled"
    );
    let first = lab.read_when_there(app, &id, "/data/boot.txt").await;
    assert_eq!(
        first,
        format!(
            "args=from-cmd two\npwd=/srv/work\nIMG_ONLY=image\nBOTH=machine\n\
             FLY_IMAGE_REF={image}\nPATH=/usr/local/bin:/usr/bin:/bin\nHOME=/root\nmarker=absent\n"
        )
    );
    // The main process is the image's, found by its argv on the host (no PID namespace).
    assert_eq!(pids_running(&["sleep", "9177"]).len(), 1);

    // Writes: one to the root filesystem, one to the volume.
    lab.run(
        app,
        &id,
        &[
            "sh",
            "-c",
            "echo x > /rootfs-marker; echo v > /data/vol-marker; rm /data/boot.txt",
        ],
    )
    .await;
    lab.ok(&format!("/v1/apps/{app}/machines/{id}/stop"), json!({}))
        .await;
    lab.wait_state(app, &id, "stopped").await;
    assert!(
        pids_running(&["sleep", "9177"]).is_empty(),
        "the main process is gone when stopped"
    );
    lab.ok(&format!("/v1/apps/{app}/machines/{id}/start"), json!({}))
        .await;
    lab.wait_state(app, &id, "started").await;
    let second = lab.read_when_there(app, &id, "/data/boot.txt").await;
    assert!(
        second.ends_with("marker=absent\n"),
        "a write to the rootfs survived a restart: {second}"
    );
    assert_eq!(
        lab.run(
            app,
            &id,
            &[
                "sh",
                "-c",
                "cat /data/vol-marker; test -e /rootfs-marker || echo gone"
            ]
        )
        .await,
        "v\ngone\n"
    );

    // An update to an image that cannot be pulled is refused and changes nothing.
    let (st, v) = lab
        .post(
            &format!("/v1/apps/{app}/machines/{id}"),
            json!({"config": {"image": format!("{host}/test/show:nope")}}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(lab.machine(app, &id).await["config"]["image"], image);
    lab.stop().await;
}
