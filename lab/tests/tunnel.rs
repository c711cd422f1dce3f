//! The built-in userspace WireGuard tunnel (issue 12) end to end, as root with real guests: a
//! `lab-cp` machine serving the node's SSH (`fks-bootstrap node ssh`), the lab's WireGuard
//! gateway (kernel WireGuard or wireguard-go, set up with `wg`), and the real `fks-bootstrap`
//! run as an unprivileged user (nobody) in a network namespace whose only routes go to the
//! lab API's host address and the gateway's public address: no route to the lab bridge, no
//! 6PN, no /etc/hosts entries. From there:
//! - `-s cp -- hostname` creates a peer through GraphQL and rides the tunnel;
//! - a peer removed at the platform cannot connect and the message says to create one, and
//!   `tunnel up` does;
//! - a wrong gateway key is a clear error within seconds, not a hang;
//! - `tunnel down` removes the peer at the platform.
//!
//! Own bridge (`fkstn1`), org network (`tunnel1`) and IPv4 range (172.31.160.0/24). Without
//! root the test prints why and returns, except under `CI=true` where it fails.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fks_bootstrap::plan::{META_CLUSTER, META_NODE};
use fks_bootstrap::ssh::ClusterKeys;
use fks_lab::guest::BridgeConfig;
use fks_lab::wireguard::gateway::Layout;
use fks_lab::{Faults, Options, Timings};
use serde_json::{json, Value};

mod common;
use common::{fks_bootstrap_binary, have_root, repo_root, sweep_netns};

const TOKEN: &str = "tunnel-test-token";
/// Long enough for a first pull of the node image on a loaded machine.
const WAIT: Duration = Duration::from_secs(180);
const APP: &str = "lab-cp";
const NETWORK: &str = "tunnel1";
/// The client's namespace and the host end of its veth.
const CLIENT_NS: &str = "fkstn1c";
const CLIENT_VETH: &str = "fkstn1cv";
/// nobody: the client is not root.
const NOBODY: u32 = 65534;

fn bridge() -> BridgeConfig {
    let prefix = fks_lab::ids::network_prefix(NETWORK).segments();
    let at = |last: u16| std::net::Ipv6Addr::new(prefix[0], prefix[1], prefix[2], 0, 0, 0, 0, last);
    BridgeConfig {
        name: "fkstn1".into(),
        gateway6: at(1),
        prefix6: 48,
        dns6: at(3),
        gateway4: Ipv4Addr::new(172, 31, 160, 1),
        prefix4: 24,
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The client's namespace: a veth on the gateway's public bridge, a /32 route to the API's
/// host address and one to the gateway, nothing else.
struct ClientNs;

impl ClientNs {
    fn new(layout: &Layout) -> ClientNs {
        let _ = Command::new("ip")
            .args(["netns", "del", CLIENT_NS])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", CLIENT_VETH])
            .status();
        let h = layout.host4.octets();
        let me = Ipv4Addr::new(h[0], h[1], h[2], 3);
        ip(&["netns", "add", CLIENT_NS]);
        ip(&[
            "link",
            "add",
            CLIENT_VETH,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            CLIENT_NS,
        ]);
        ip(&[
            "link",
            "set",
            CLIENT_VETH,
            "master",
            &layout.public_bridge,
            "up",
        ]);
        for line in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &format!("{me}/32"), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec![
                "route",
                "add",
                &format!("{}/32", layout.host4),
                "dev",
                "eth0",
            ],
            vec![
                "route",
                "add",
                &format!("{}/32", layout.public4),
                "dev",
                "eth0",
            ],
        ] {
            let mut args = vec!["-n", CLIENT_NS];
            args.extend(line.iter().copied());
            ip(&args);
        }
        ClientNs
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", CLIENT_NS])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", CLIENT_VETH])
            .status();
    }
}

struct Lab {
    base_host: String,
    port: u16,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    /// The node image, pinned by digest.
    image: String,
    _registry: fks_lab::registry::Registry,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), fks_lab::Error>>>,
}

impl Lab {
    async fn start() -> Lab {
        let bridge = bridge();
        sweep_netns(&format!("{}-", bridge.name));
        fks_lab::guest::remove_bridge(&bridge.name).expect("removing a stale bridge");
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
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
        let fast = Duration::from_millis(5);
        let opts = Options {
            state_dir: state,
            zones: fks_lab::parse_zones("sjc=2").expect("zones"),
            faults: Faults::parse("").expect("faults"),
            seed: 7,
            token: TOKEN.into(),
            timings: Timings {
                launch: fast,
                boot: fast,
                stop: fast,
                destroy: fast,
            },
            guests: true,
            bridge: bridge.clone(),
        };
        // On every address: the client reaches it on the host's public-bridge address.
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(fks_lab::run(listener, opts, async move {
            let _ = rx.await;
        }));
        let lab = Lab {
            base_host: format!("http://127.0.0.1:{port}"),
            port,
            http: reqwest::Client::new(),
            dir,
            image,
            _registry: registry,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        let deadline = Instant::now() + WAIT;
        while lab
            .http
            .get(format!("{}/lab/v1/stats", lab.base_host))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "lab did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lab.post(
            "/v1/apps",
            json!({"app_name": APP, "org_slug": "personal", "network": NETWORK}),
        )
        .await;
        lab
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.base_host))
            .header("authorization", format!("Bearer {TOKEN}"))
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = res.status();
        let v: Value = res.json().await.expect("json");
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base_host))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.post("/graphql", json!({"query": query, "variables": variables}))
            .await
    }

    fn log(&self, id: &str) -> String {
        let state = self.dir.path().join("state");
        std::fs::read_to_string(fks_lab::runner::log_path(&state, id)).unwrap_or_default()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("lab run");
        }
        fks_lab::guest::remove_bridge(&bridge().name).expect("removing the bridge");
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn chown_tree(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success());
}

/// `fks-bootstrap ARGS` as nobody in the client namespace, with the lab's settings as the
/// client sees them (API and GraphQL on the host's public-bridge address).
fn client(bin: &Path, api: &str, xdg: &Path, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", CLIENT_NS, "setpriv"])
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(bin)
        .args(args)
        .current_dir(repo_root())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", xdg)
        .env("XDG_CONFIG_HOME", xdg)
        .env("FLY_API_HOSTNAME", api)
        .env("FLY_API_BASE_URL", api)
        .env("FLY_API_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("running fks-bootstrap in the client namespace");
    (out, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssh_rides_the_userspace_tunnel_from_a_namespace_without_6pn() {
    if !have_root("tunnel") {
        return;
    }
    let bin = tokio::task::spawn_blocking(fks_bootstrap_binary)
        .await
        .expect("build thread");
    let lab = Lab::start().await;
    let layout = Layout::new(&bridge());
    let api = format!("http://{}:{}", layout.host4, lab.port);

    // The node: the node's SSH server with the cluster's keys.
    let xdg = lab.dir.path().join("xdg");
    let keys = ClusterKeys::open(&xdg.join("fks-bootstrap"), "lab").expect("keys");
    let files: Vec<Value> = keys
        .node_files("ctrl-0")
        .expect("node files")
        .iter()
        .map(|f| serde_json::to_value(f.to_machine_file()).expect("file json"))
        .collect();
    let m = lab
        .post(
            &format!("/v1/apps/{APP}/machines"),
            json!({"region": "sjc", "config": {
                "image": lab.image,
                "init": {"exec": ["fks-bootstrap", "node", "ssh"]},
                "files": files,
                "metadata": {META_CLUSTER: "lab", META_NODE: "ctrl-0"},
                "stop_config": {"signal": "SIGTERM"}
            }}),
        )
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + WAIT;
    let ip: IpAddr = loop {
        let m = lab.get(&format!("/v1/apps/{APP}/machines/{id}")).await;
        if m["state"] == "started" {
            let ip: IpAddr = m["private_ip"].as_str().expect("ip").parse().expect("ip");
            let port = fks_bootstrap::config::DEFAULT_SSH_PORT;
            if tokio::net::TcpStream::connect(SocketAddr::new(ip, port))
                .await
                .is_ok()
            {
                break ip;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node did not start: {m}\n{}",
            lab.log(&id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    chown_tree(&xdg);
    let _ns = ClientNs::new(&layout);
    // The client has no route to 6PN.
    let probe = Command::new("ip")
        .args([
            "netns",
            "exec",
            CLIENT_NS,
            "ping",
            "-c1",
            "-W1",
            &ip.to_string(),
        ])
        .output()
        .expect("ping");
    assert!(!probe.status.success(), "the client namespace reaches {ip}");

    // `-s -- hostname`: a peer is made through GraphQL and SSH rides the tunnel.
    let (out, took) = client(
        &bin,
        &api,
        &xdg,
        &["-s", "cp", "clusters/lab", "--", "hostname"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        id,
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("Machines API exec"),
        "{}",
        text(&out.stderr)
    );
    eprintln!("first -s -- hostname (peer created, tunnel up, ssh): {took:?}");
    let saved = xdg.join("fks-bootstrap/wireguard/personal.json");
    let mode = std::fs::metadata(&saved)
        .expect("saved peer")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let peer: Value = serde_json::from_slice(&std::fs::read(&saved).expect("read")).expect("json");
    let private = peer["private_key"].as_str().expect("key").to_string();
    assert!(!text(&out.stderr).contains(&private) && !text(&out.stdout).contains(&private));
    let name = peer["name"].as_str().expect("name").to_string();

    // Reused: the second run makes no new peer.
    let (out, took) = client(
        &bin,
        &api,
        &xdg,
        &["-s", "cp", "clusters/lab", "--", "hostname"],
    );
    assert_eq!(
        text(&out.stdout).trim(),
        id,
        "stderr: {}",
        text(&out.stderr)
    );
    eprintln!("second -s -- hostname (peer reused): {took:?}");
    let peers = lab
        .graphql(
            "query($slug:String!){ organization(slug:$slug){ wireGuardPeers { nodes { name } } } }",
            json!({"slug": "personal"}),
        )
        .await;
    let names: Vec<&str> = peers["data"]["organization"]["wireGuardPeers"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, [name.as_str()]);

    // A wrong gateway key: a clear error within seconds, not a hang.
    let mut wrong = peer.clone();
    wrong["gateway_key"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    std::fs::write(&saved, serde_json::to_vec(&wrong).expect("json")).expect("write");
    let (out, took) = client(&bin, &api, &xdg, &["tunnel", "up", "clusters/lab"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no WireGuard handshake"),
        "{}",
        text(&out.stderr)
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    std::fs::write(&saved, serde_json::to_vec(&peer).expect("json")).expect("write");

    // Removed at the platform (as `fly wireguard remove` does): it cannot connect, and the
    // message says to create one; `tunnel up` does.
    lab.graphql(
        "mutation($input: RemoveWireGuardPeerInput!) { removeWireGuardPeer(input: $input) { organization { id } } }",
        json!({"input": {"organizationId": "lab-org-personal", "name": name}}),
    )
    .await;
    let (out, _) = client(&bin, &api, &xdg, &["-s", "cp", "clusters/lab"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("was removed") && err.contains("tunnel up"),
        "{err}"
    );
    let (out, _) = client(&bin, &api, &xdg, &["tunnel", "up", "clusters/lab"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let (out, _) = client(
        &bin,
        &api,
        &xdg,
        &["-s", "cp", "clusters/lab", "--", "hostname"],
    );
    assert_eq!(
        text(&out.stdout).trim(),
        id,
        "stderr: {}",
        text(&out.stderr)
    );

    // `tunnel down` removes it at the platform and forgets the key.
    let (out, _) = client(&bin, &api, &xdg, &["tunnel", "down", "clusters/lab"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(!saved.exists());
    let peers = lab
        .graphql(
            "query($slug:String!){ organization(slug:$slug){ wireGuardPeers { nodes { name } } } }",
            json!({"slug": "personal"}),
        )
        .await;
    assert_eq!(
        peers["data"]["organization"]["wireGuardPeers"]["nodes"],
        json!([])
    );
    drop(_ns);
    lab.stop().await;
}
