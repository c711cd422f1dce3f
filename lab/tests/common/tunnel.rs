//! What the built-in tunnel's guest tests share (`tunnel.rs`, `tunnel_kube.rs`): an in-process
//! guests-mode lab listening on every address (the client reaches it on the host's
//! public-bridge address), the client's network namespace whose only routes go to the lab
//! API's host address and the WireGuard gateway's public address, and `fks-bootstrap` run
//! there as nobody.
//!
//! Each test passes its own [`Net`] (bridge, org network, IPv4 octet, namespace names), so
//! they may run side by side.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fks_lab::guest::BridgeConfig;
use fks_lab::wireguard::gateway::Layout;
use fks_lab::{Faults, Options, Timings};
use serde_json::{json, Value};

use super::{repo_root, sweep_netns};

/// nobody: the client is not root.
pub const NOBODY: u32 = 65534;
/// Long enough for a first pull of the node image on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(180);

/// What keeps one tunnel test apart from the others.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    /// The lab bridge (guests' namespaces are `<bridge>-<machine id>`).
    pub bridge: &'static str,
    /// The org network: its own 6PN /48.
    pub network: &'static str,
    /// The third octet of the guests' 172.31.X.0/24.
    pub v4: u8,
    /// The client's namespace.
    pub client_ns: &'static str,
    /// The host end of the client's veth.
    pub client_veth: &'static str,
}

impl Net {
    /// The lab bridge's settings.
    pub fn bridge(&self) -> BridgeConfig {
        let prefix = fks_lab::ids::network_prefix(self.network).segments();
        let at =
            |last: u16| std::net::Ipv6Addr::new(prefix[0], prefix[1], prefix[2], 0, 0, 0, 0, last);
        BridgeConfig {
            name: self.bridge.into(),
            gateway6: at(1),
            prefix6: 48,
            dns6: at(3),
            gateway4: Ipv4Addr::new(172, 31, self.v4, 1),
            prefix4: 24,
        }
    }

    /// The WireGuard gateway's addresses.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.bridge())
    }
}

/// `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The client's namespace: a veth on the gateway's public bridge, a /32 route to the API's
/// host address and one to the gateway, nothing else. Removed on drop.
pub struct ClientNs {
    net: Net,
}

impl ClientNs {
    pub fn new(net: Net) -> ClientNs {
        let layout = net.layout();
        let (ns, veth) = (net.client_ns, net.client_veth);
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
        let _ = Command::new("ip").args(["link", "del", veth]).status();
        let h = layout.host4.octets();
        let me = Ipv4Addr::new(h[0], h[1], h[2], 3);
        ip(&["netns", "add", ns]);
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ip(&["link", "set", veth, "master", &layout.public_bridge, "up"]);
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
            let mut args = vec!["-n", ns];
            args.extend(line.iter().copied());
            ip(&args);
        }
        ClientNs { net }
    }

    /// `PROGRAM` as nobody in the namespace, with an empty environment but `PATH`.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.net.client_ns, "setpriv"])
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--",
            ])
            .arg(program)
            .current_dir(repo_root())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", self.net.client_ns])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", self.net.client_veth])
            .status();
    }
}

/// An in-process lab with guests, listening on every address; stopped by [`Lab::stop`], its
/// namespaces and bridge removed on drop too.
pub struct Lab {
    pub net: Net,
    /// `http://127.0.0.1:PORT`.
    pub base_host: String,
    pub port: u16,
    pub http: reqwest::Client,
    /// World-readable (0755): nobody reads the cluster directory kept here.
    pub dir: tempfile::TempDir,
    /// The node image, pinned by digest.
    pub image: String,
    pub registry: fks_lab::registry::Registry,
    pub token: &'static str,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), fks_lab::Error>>>,
}

impl Lab {
    /// Starts the lab on `net` with `zones` (e.g. `sjc=2`) and the node image pushed.
    pub async fn start(net: Net, zones: &str, token: &'static str) -> Lab {
        let bridge = net.bridge();
        sweep_netns(&format!("{}-", bridge.name));
        fks_lab::guest::remove_bridge(&bridge.name).expect("removing a stale bridge");
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir state");
        // The node image the product builds and pushes.
        let registry = fks_lab::registry::Registry::start(&state, token)
            .await
            .expect("registry");
        let host = registry.host();
        let image = tokio::task::spawn_blocking(move || super::push_node_image(&host, token))
            .await
            .expect("node image thread");
        let fast = Duration::from_millis(5);
        let opts = Options {
            state_dir: state,
            zones: fks_lab::parse_zones(zones).expect("zones"),
            faults: Faults::parse("").expect("faults"),
            seed: 7,
            token: token.into(),
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
            net,
            base_host: format!("http://127.0.0.1:{port}"),
            port,
            http: reqwest::Client::new(),
            dir,
            image,
            registry,
            token,
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
        lab
    }

    /// The API as the client namespace sees it: the host's public-bridge address.
    pub fn client_api(&self) -> String {
        format!("http://{}:{}", self.net.layout().host4, self.port)
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.base_host))
            .header("authorization", format!("Bearer {}", self.token))
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = res.status();
        let v: Value = res.json().await.expect("json");
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base_host))
            .header("authorization", format!("Bearer {}", self.token))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    }

    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.post("/graphql", json!({"query": query, "variables": variables}))
            .await
    }

    /// The guest log of machine `id`.
    pub fn log(&self, id: &str) -> String {
        let state = self.dir.path().join("state");
        std::fs::read_to_string(fks_lab::runner::log_path(&state, id)).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("lab run");
        }
        fks_lab::guest::remove_bridge(self.net.bridge).expect("removing the bridge");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
            sweep_netns(&format!("{}-", self.net.bridge));
            let _ = fks_lab::guest::remove_bridge(self.net.bridge);
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `chown -R nobody:nobody PATH`.
pub fn chown_tree(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success());
}

/// `fks-bootstrap ARGS` as nobody in the client namespace, with the lab's settings as the
/// client sees them (API and GraphQL on the host's public-bridge address), HOME and
/// XDG_CONFIG_HOME `xdg`.
pub fn client_command(ns: &ClientNs, bin: &Path, lab: &Lab, xdg: &Path, args: &[&str]) -> Command {
    let api = lab.client_api();
    let mut cmd = ns.command(bin);
    cmd.args(args)
        .env("HOME", xdg)
        .env("XDG_CONFIG_HOME", xdg)
        .env("FLY_API_HOSTNAME", &api)
        .env("FLY_API_BASE_URL", &api)
        .env("FLY_API_TOKEN", lab.token);
    cmd
}

/// [`client_command`] run to its end, and how long it took.
pub fn client(
    ns: &ClientNs,
    bin: &Path,
    lab: &Lab,
    xdg: &Path,
    args: &[&str],
) -> (Output, Duration) {
    let started = Instant::now();
    let out = client_command(ns, bin, lab, xdg, args)
        .output()
        .expect("running fks-bootstrap in the client namespace");
    (out, started.elapsed())
}
