//! Helpers shared by the lab's integration tests that drive the real `fks-bootstrap` binary
//! or need root. Each test binary uses a subset, hence the `dead_code` allowance below.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod images;
pub use images::push_tiny_image;
pub mod tunnel;

/// The workspace root (for `clusters/`, fixtures and the inner `cargo build`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ has a parent")
        .to_path_buf()
}

/// True when running as root. Tests that need root (guests are network and mount namespaces)
/// return early otherwise, saying why; under `CI=true` they fail instead, so CI never passes
/// a test that did not run.
pub fn have_root(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} needs root (guests are network and mount namespaces) and CI=true: run it as root");
    }
    eprintln!("skipping {what}: not root (guests are network and mount namespaces)");
    false
}

/// The `fks-bootstrap` binary of this workspace, built once per test binary (cargo builds
/// only this package's binaries for its tests), next to this test executable.
pub fn fks_bootstrap_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| workspace_binary("fks-bootstrap", "fks-bootstrap"))
        .clone()
}

/// The `k3s-standin` binary (the lab node image's `k3s` when real k3s is not available),
/// built once per test binary like [`fks_bootstrap_binary`].
pub fn k3s_standin_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| workspace_binary("k3s-standin", "k3s-standin"))
        .clone()
}

/// `k3s-standin-next`: the same stand-in one Kubernetes minor later
/// (`k3s_standin::log::NEXT_VERSION`), for upgrade tests.
pub fn k3s_standin_next_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| workspace_binary("k3s-standin", "k3s-standin-next"))
        .clone()
}

/// `cargo build -p PACKAGE --bin BIN` in the workspace; the binary's path in this test's
/// target directory.
fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    // The variables cargo sets for this test (CARGO_PKG_*, CARGO_MANIFEST_DIR, ...)
    // would make the inner build see another environment and rebuild every time.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR" {
            cmd.env_remove(&*key);
        }
    }
    let status = cmd
        .args(["build", "-p", package, "--bin", bin])
        .current_dir(repo_root())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building {bin} failed");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<bin>
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .join(bin);
    assert!(path.is_file(), "{} not built", path.display());
    path
}

/// The node image of `clusters/lab` built and pushed to the registry at `host` by the real
/// `fks-bootstrap image build --push` with this workspace's binaries ([`images`]).
pub fn push_node_image(host: &str, token: &str) -> String {
    images::push_node_image(host, token, &fks_bootstrap_binary(), &k3s_standin_binary())
}

/// An API-only lab running in this process on 127.0.0.1:0; stopped when dropped.
pub struct ApiLab {
    /// `http://127.0.0.1:PORT`, the value of `FLY_API_HOSTNAME`.
    pub base: String,
    /// What `fks-lab env` would print for it ([`fks_lab::client_env`]): the API address and
    /// token, `FKS_REGION_ZONES` and `FKS_MACHINES_ONLY=1`; give it to every `fks-bootstrap`.
    pub env: Vec<(&'static str, String)>,
    /// An empty directory for `XDG_CONFIG_HOME` of the binaries a test runs, so the operator's
    /// own config dir (keys, a saved WireGuard peer) is never read or changed.
    pub config_home: tempfile::TempDir,
    _state_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for ApiLab {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Start an API-only lab with a fresh state dir, the given zones, faults and seed, fast
/// transitions (10 ms launch/stop/destroy, `boot` to reach `started`) and `token`.
pub async fn start_api_lab(
    zones: &str,
    faults: &str,
    seed: u64,
    boot: std::time::Duration,
    token: &str,
) -> ApiLab {
    let fast = std::time::Duration::from_millis(10);
    let state_dir = tempfile::tempdir().expect("tempdir");
    let zones = fks_lab::parse_zones(zones).expect("zones");
    let opts = fks_lab::Options {
        state_dir: state_dir.path().to_path_buf(),
        zones: zones.clone(),
        faults: fks_lab::Faults::parse(faults).expect("faults"),
        seed,
        token: token.into(),
        guests: false,
        bridge: Default::default(),
        timings: fks_lab::Timings {
            launch: fast,
            boot,
            stop: fast,
            destroy: fast,
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fks_lab::run(listener, opts, async move {
        let _ = rx.await;
    }));
    ApiLab {
        env: fks_lab::client_env(&base, token, &zones, false),
        base,
        config_home: tempfile::tempdir().expect("tempdir"),
        _state_dir: state_dir,
        shutdown: Some(tx),
    }
}

/// Kill the processes of every network namespace named `<prefix>...` and delete it (a guest
/// test's leftovers from an earlier, interrupted run).
pub fn sweep_netns(prefix: &str) {
    for name in netns_with_prefix(prefix) {
        let pids = Command::new("ip")
            .args(["netns", "pids", &name])
            .output()
            .expect("ip netns pids");
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        let _ = Command::new("ip").args(["netns", "delete", &name]).status();
    }
}

/// The network namespaces whose names start with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The lab's registry as `fks-lab serve` runs it (Debian's docker-registry, user `x`,
/// password `token`, storage in a temp dir); stopped when dropped.
pub struct LabRegistry {
    pub registry: fks_lab::registry::Registry,
    pub dir: tempfile::TempDir,
}

impl LabRegistry {
    /// Starts it; fails the test when docker-registry or skopeo is missing.
    pub async fn start(token: &str) -> LabRegistry {
        for program in ["docker-registry", "skopeo"] {
            let found = std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
            assert!(
                found,
                "{program} is not installed: run scripts/setup.sh test"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = fks_lab::registry::Registry::start(&dir.path().join("state"), token)
            .await
            .expect("registry starts");
        LabRegistry { registry, dir }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.registry.host()
    }

    /// The product's settings for it (what `fks-lab env` prints besides the API's).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FLY_REGISTRY_HOST", self.host()),
            ("FKS_REGISTRY_PLAIN_HTTP", "1".to_string()),
        ]
    }

    /// Pushes [`push_tiny_image`] as `base/tiny:1` with `token`; returns its reference.
    pub fn push_tiny(&self, token: &str) -> String {
        let reference = format!("{}/base/tiny:1", self.host());
        push_tiny_image(&self.dir.path().join("tiny"), &reference, token, "amd64");
        reference
    }
}

/// Writes a copy of clusters/lab's config into directory `cluster` without its IMAGE line and
/// with `extra` lines appended.
pub fn lab_cluster(cluster: &Path, extra: &[String]) {
    std::fs::create_dir_all(cluster).expect("mkdir");
    let lab = std::fs::read_to_string(repo_root().join("clusters/lab/config"))
        .expect("clusters/lab/config");
    let mut text: String = lab
        .lines()
        .filter(|l| !l.starts_with("IMAGE="))
        .map(|l| format!("{l}\n"))
        .collect();
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(cluster.join("config"), text).expect("config");
}

/// The lab's registry holding a tiny image, and a copy of clusters/lab (in `dir`) whose IMAGE
/// names it: `-c`/`-a` resolve IMAGE through its registry and pin it by digest (the API-only
/// lab runs nothing, so any image will do). Returns the registry and the cluster directory.
pub async fn registry_and_cluster(dir: &Path, token: &str) -> (LabRegistry, String) {
    let registry = LabRegistry::start(token).await;
    let image = registry.push_tiny(token);
    let cluster = dir.join("cluster");
    lab_cluster(&cluster, &[format!("IMAGE={image}")]);
    let cluster = cluster.to_str().expect("utf8").to_string();
    (registry, cluster)
}

/// A copy of clusters/lab under `dir` (`dir/clusters/lab`) for a guest test: `image` as its
/// IMAGE (clusters/lab has none; its `-c` would build one), its own org (`org`: its own 6PN
/// /48) and `workers` as NODE_GROUP_SIZE.
pub fn cluster_copy(dir: &Path, image: &str, org: &str, workers: usize) -> PathBuf {
    let cluster_dir = dir.join("clusters/lab");
    std::fs::create_dir_all(&cluster_dir).expect("mkdir cluster dir");
    let config = std::fs::read_to_string(repo_root().join("clusters/lab/config"))
        .expect("clusters/lab/config");
    let config = images::with_image(&config, image);
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("NODE_GROUP_SIZE=") {
                format!("NODE_GROUP_SIZE={workers}\n")
            } else if l.starts_with("ORG_NAME=") {
                format!("ORG_NAME={org}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(config.contains(&format!("ORG_NAME={org}\n")), "{config}");
    assert!(config.contains(&format!("IMAGE={image}\n")), "{config}");
    std::fs::write(cluster_dir.join("config"), config).expect("write config");
    cluster_dir
}
