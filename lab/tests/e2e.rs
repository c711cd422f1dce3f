//! The cluster lifecycle end to end (issue 5 §5), with the real `fks-bootstrap` binary, the
//! real kubectl and an in-process guests-mode lab (root only): `create` (`-c`), node group
//! `-a 0`, `-k`, `-t`, `-l cp --json`, re-runs that make no mutation, a search for the join
//! token in everything the run leaves behind, and `destroy --yes` leaving nothing.
//!
//! The node image is built and pushed to the lab's registry by the real
//! `fks-bootstrap image build --push` (`common::push_node_image`) with k3s-standin as
//! its k3s (these machines cannot download k3s), on the lab's Debian base, and the cluster
//! config names it pinned by digest (`IMAGE=`); the lab pulls it and runs every machine on it.
//! kubectl runs in a private mount namespace
//! whose /etc/hosts maps `lab-cp.internal` to the servers' 6PN addresses from the lab API: how
//! an operator's host resolves `.internal` names on the lab without touching the host's files.
//!
//! A second guests test runs the same lifecycle with every machine crashing once at boot and
//! the tool SIGKILLed part-way through `-c` and `-a`; a third migrates a server and a worker
//! of a live cluster to other hosts (new 6PN addresses, forked volumes).
//!
//! Own bridges (`fkse2e`, `fkse2f`, `fkse2m`, `fkse2s`, `fkse2d`, `fkse2r`, `fkse2u`), org
//! networks (`e2eorg`, `e2eforg`, `e2emorg`, `e2esorg`, `e2edorg`, `e2erorg`, `e2euorg`: each its
//! own 6PN /48) and IPv4 ranges (172.31.150-154.0/24, 172.31.158.0/24 for `server replace`,
//! 172.31.156.0/24 for `upgrade`), so these run in
//! parallel with the other guest tests. Without root the
//! guest test prints why and returns, except under `CI=true` where it fails.
//! The day-2 kill test (at the end) has bridge `fkse2k`, org `e2ekorg` and 172.31.162.0/24.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fks_lab::guest::BridgeConfig;
use fks_lab::{Faults, Options, Timings};
use serde_json::Value;

mod common;
use common::{
    fks_bootstrap_binary, have_root, netns_with_prefix, push_node_image, repo_root, sweep_netns,
};

const TOKEN: &str = "e2e-test-token";
/// The bridge; guests' network namespaces are `fkse2e-<machine id>`.
const BRIDGE: &str = "fkse2e";
/// The org of the test's cluster copy: its own 6PN network, so its /48 is routed to this
/// test's bridge only.
const ORG: &str = "e2eorg";
/// `clusters/lab`'s CLUSTER_NAME, its apps and node group.
const CLUSTER: &str = "lab";
const CP_APP: &str = "lab-cp";
const GROUP: &str = "0";
const GROUP_APP: &str = "lab-ng-0";
/// Workers in the test's copy of clusters/lab (3 there): fewer guests on a small machine.
const WORKERS: usize = 2;
const WAIT: Duration = Duration::from_secs(120);

/// An in-process lab with guests; on drop it stops and removes its guests' namespaces and
/// its bridge, also when the test panics.
struct GuestLab {
    /// Its bridge (guests' namespaces are `<bridge>-<machine id>`).
    bridge: String,
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    state: PathBuf,
    /// The node image, pinned by digest (the cluster config's IMAGE).
    image: String,
    registry: fks_lab::registry::Registry,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), fks_lab::Error>>>,
}

/// What keeps one guests-mode test apart from the others running at the same time.
struct Net {
    /// The bridge name.
    bridge: &'static str,
    /// The cluster's org: its own 6PN /48, routed to this bridge only.
    org: &'static str,
    /// The third octet of the guests' 172.31.X.0/24.
    v4: u8,
}

impl Net {
    /// `<org /48>::<last>` on this bridge (`::1` the gateway, `::3` the DNS).
    fn at(&self, last: u16) -> std::net::Ipv6Addr {
        let p = fks_lab::ids::network_prefix(self.org).segments();
        std::net::Ipv6Addr::new(p[0], p[1], p[2], 0, 0, 0, 0, last)
    }

    /// The lab's DNS address, as `fdaa::3` inside Fly.
    fn dns(&self) -> std::net::Ipv6Addr {
        self.at(3)
    }
}

/// The lifecycle test's network.
const LIFECYCLE: Net = Net {
    bridge: BRIDGE,
    org: ORG,
    v4: 150,
};

impl GuestLab {
    async fn start() -> GuestLab {
        // Fly's eventual consistency on (reference fly-runtime.md §6): new apps 404 for a
        // moment and secret writes reach boots only after up to 20 s, unless a create names
        // `min_secrets_version`. The cluster comes up only because fks-bootstrap waits for its
        // apps and sends it (a joining server created without it would miss its join token
        // and ssh host key files).
        GuestLab::start_with(&LIFECYCLE, "app_settle=500ms;secrets_lag=20s").await
    }

    async fn start_with(net: &Net, faults: &str) -> GuestLab {
        let bridge = BridgeConfig {
            name: net.bridge.to_string(),
            gateway6: net.at(1),
            prefix6: 48,
            dns6: net.dns(),
            gateway4: Ipv4Addr::new(172, 31, net.v4, 1),
            prefix4: 24,
        };
        sweep_netns(&format!("{}-", net.bridge));
        fks_lab::guest::remove_bridge(net.bridge).expect("removing a stale bridge");
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir state");
        let registry = fks_lab::registry::Registry::start(&state, TOKEN)
            .await
            .expect("registry");
        let host = registry.host();
        let image = tokio::task::spawn_blocking(move || push_node_image(&host, TOKEN))
            .await
            .expect("node image thread");
        let fast = Duration::from_millis(5);
        let opts = Options {
            state_dir: state.clone(),
            zones: fks_lab::parse_zones("sjc=3").expect("zones"),
            faults: Faults::parse(faults).expect("faults"),
            seed: 5,
            token: TOKEN.into(),
            timings: Timings {
                launch: fast,
                boot: fast,
                stop: fast,
                destroy: fast,
            },
            guests: true,
            bridge,
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
            bridge: net.bridge.to_string(),
            base,
            http: reqwest::Client::new(),
            dir,
            state,
            image,
            registry,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while lab.get_raw("/lab/v1/stats").await.is_none() {
            assert!(Instant::now() < deadline, "lab did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lab
    }

    async fn get_raw(&self, path: &str) -> Option<(u16, Value)> {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .await
            .ok()?;
        let status = res.status().as_u16();
        let text = res.text().await.ok()?;
        Some((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.get_raw(path).await.expect("lab answers")
    }

    async fn mutations(&self) -> u64 {
        let (status, v) = self.get("/lab/v1/stats").await;
        assert_eq!(status, 200, "{v}");
        v["mutations"].as_u64().expect("mutations count")
    }

    /// The app's machines that are not destroyed.
    async fn machines(&self, app: &str) -> Vec<Value> {
        let (status, v) = self.get(&format!("/v1/apps/{app}/machines")).await;
        assert_eq!(status, 200, "{app}: {v}");
        v.as_array()
            .expect("machine list")
            .iter()
            .filter(|m| m["state"] != "destroyed")
            .cloned()
            .collect()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.state.join("machines")) {
            for e in entries.flatten() {
                let log = std::fs::read_to_string(e.path().join("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                out.push_str(&format!("--- {}\n", e.file_name().to_string_lossy()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("lab run");
        }
    }
}

impl Drop for GuestLab {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        sweep_netns(&format!("{}-", self.bridge));
        let _ = fks_lab::guest::remove_bridge(&self.bridge);
    }
}

/// Every command's output, kept for the token search.
#[derive(Default)]
struct Transcript {
    outputs: Vec<(String, Output)>,
}

impl Transcript {
    fn keep(&mut self, what: &str, out: &Output) {
        self.outputs.push((what.to_string(), out.clone()));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The environment every `fks-bootstrap` run gets: the lab, and temp config and home dirs.
struct Env {
    bin: PathBuf,
    base: String,
    /// The lab registry's `host:port` (what `fks-lab env` prints as `FLY_REGISTRY_HOST`).
    registry: String,
    xdg: PathBuf,
    home: PathBuf,
}

impl Env {
    /// The built binary, `lab`'s address, and `xdg/` and `home/` in the lab's directory.
    async fn new(lab: &GuestLab) -> Env {
        let env = Env {
            bin: tokio::task::spawn_blocking(fks_bootstrap_binary)
                .await
                .expect("build thread"),
            base: lab.base.clone(),
            registry: lab.registry.host(),
            xdg: lab.dir.path().join("xdg"),
            home: lab.dir.path().join("home"),
        };
        std::fs::create_dir_all(&env.xdg).expect("mkdir xdg");
        std::fs::create_dir_all(&env.home).expect("mkdir home");
        env
    }

    /// `fks-bootstrap ARGS` with this environment, stdin not a terminal.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(repo_root())
            .envs(fks_lab::client_env(
                &self.base,
                TOKEN,
                &[("sjc".to_string(), 3)],
                true,
            ))
            // `-c` resolves the config's IMAGE to its digest in the lab's registry.
            .env("FLY_REGISTRY_HOST", &self.registry)
            .env("FKS_REGISTRY_PLAIN_HTTP", "1")
            .env("XDG_CONFIG_HOME", &self.xdg)
            .env("HOME", &self.home)
            // This host is on 6PN, and the no-6PN section tests the fallback without a tunnel;
            // the built-in WireGuard tunnel has its own test (tunnel.rs).
            .env("FKS_TUNNEL", "off")
            .env_remove("KUBECONFIG")
            .env_remove("BOOTSTRAP_NODE_ID")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    async fn fks(&self, t: &mut Transcript, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("running fks-bootstrap"))
            .await
            .expect("join");
        t.keep(&format!("fks-bootstrap {}", args.join(" ")), &out);
        out
    }
}

/// Host routes that make 6PN addresses unreachable from this host (`ip -6 route replace
/// unreachable ADDR/128`), as for an operator without a WireGuard tunnel; removed on drop,
/// also when the test panics. Guests still reach each other in their own namespaces.
struct Unreachable(Vec<String>);

impl Unreachable {
    fn new(addrs: impl Iterator<Item = String>) -> Unreachable {
        let cut = Unreachable(addrs.collect());
        for a in &cut.0 {
            let status = Command::new("ip")
                .args(["-6", "route", "replace", "unreachable", &format!("{a}/128")])
                .status()
                .expect("ip route");
            assert!(status.success(), "cutting {a} off");
        }
        cut
    }
}

impl Drop for Unreachable {
    fn drop(&mut self) {
        for a in &self.0 {
            let _ = Command::new("ip")
                .args(["-6", "route", "del", "unreachable", &format!("{a}/128")])
                .status();
        }
    }
}

fn assert_ok(what: &str, out: &Output, lab: &GuestLab) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}\nstdout:\n{}\nstderr:\n{}\nguest logs:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        lab.logs()
    );
}

/// `kubectl --kubeconfig KUBECONFIG ARGS` in a private mount namespace whose /etc/hosts is
/// `hosts` (the host's own file is not touched).
async fn kubectl(t: &mut Transcript, kubeconfig: &Path, hosts: &Path, args: &[&str]) -> Output {
    kubectl_with(t, kubeconfig, &[(hosts, c"/etc/hosts")], args).await
}

/// `kubectl` resolving names through the lab's DNS, as a client inside Fly's private network
/// does: `<app>.internal` answers the app's started machines only (reference
/// fly-runtime.md, DNS row), so a server being updated drops out of the answer instead of
/// black-holing the dial. (A fixed list in /etc/hosts keeps a stopped server first; Go's
/// dialer gives the first address at least 2 s of the request's budget, `partialDeadline` in
/// net/dial.go, so a read with `--request-timeout=2s` then times out on it.)
async fn kubectl_dns(
    t: &mut Transcript,
    kubeconfig: &Path,
    names: &DnsNames,
    args: &[&str],
) -> Output {
    kubectl_with(
        t,
        kubeconfig,
        &[
            (names.hosts.as_path(), c"/etc/hosts"),
            (names.resolv.as_path(), c"/etc/resolv.conf"),
        ],
        args,
    )
    .await
}

/// A hosts file without `.internal` names and a resolv.conf naming the lab's DNS
/// (`<org prefix>::3`, as `fdaa::3` inside Fly), for [`kubectl_dns`].
struct DnsNames {
    hosts: PathBuf,
    resolv: PathBuf,
}

impl DnsNames {
    fn new(lab: &GuestLab, net: &Net) -> DnsNames {
        let dns = net.dns();
        let hosts = lab.dir.path().join("hosts-dns");
        std::fs::write(&hosts, "127.0.0.1 localhost\n::1 localhost\n").expect("write hosts");
        let resolv = lab.dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {dns}\noptions timeout:1 attempts:1\n"),
        )
        .expect("write resolv.conf");
        DnsNames { hosts, resolv }
    }
}

/// `kubectl --kubeconfig KUBECONFIG ARGS` in a private mount namespace with each `(file,
/// target)` of `binds` bind-mounted onto its target (the host's own files are not touched).
async fn kubectl_with(
    t: &mut Transcript,
    kubeconfig: &Path,
    binds: &[(&Path, &'static CStr)],
    args: &[&str],
) -> Output {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::null());
    let binds: Vec<(CString, &'static CStr)> = binds
        .iter()
        .map(|(file, target)| {
            let source =
                CString::new(file.as_os_str().as_bytes()).expect("bind source without NUL");
            (source, *target)
        })
        .collect();
    // SAFETY: the closure runs in the forked child before exec; it calls only unshare and
    // mount (async-signal-safe system calls) on C strings made before the fork, allocating
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            // Private: the binds below must not propagate back to the host's namespace.
            nix::mount::mount(
                None::<&CStr>,
                c"/",
                None::<&CStr>,
                nix::mount::MsFlags::MS_PRIVATE | nix::mount::MsFlags::MS_REC,
                None::<&CStr>,
            )?;
            for (source, target) in &binds {
                nix::mount::mount(
                    Some(source.as_c_str()),
                    *target,
                    None::<&CStr>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&CStr>,
                )?;
            }
            Ok(())
        });
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("running kubectl"))
        .await
        .expect("join");
    t.keep(&format!("kubectl {}", args.join(" ")), &out);
    out
}

/// A hosts file in the lab's directory mapping `<cp app>.internal` to the servers' 6PN
/// addresses (what the lab DNS answers), for [`kubectl`]'s private /etc/hosts.
fn hosts_file(lab: &GuestLab, servers: &[Value]) -> PathBuf {
    let hosts = lab.dir.path().join("hosts");
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for m in servers {
        text.push_str(&format!(
            "{} {CP_APP}.internal\n",
            m["private_ip"].as_str().expect("private_ip")
        ));
    }
    std::fs::write(&hosts, text).expect("write hosts");
    hosts
}

/// One Node as kubectl reports it.
#[derive(Debug)]
struct K8sNode {
    name: String,
    ready: bool,
    internal_ips: Vec<String>,
    taints: Vec<(String, String, String)>,
    /// `status.nodeInfo.kubeletVersion`.
    kubelet: String,
    /// `spec.unschedulable` (cordoned).
    unschedulable: bool,
}

fn parse_nodes(json: &str) -> Vec<K8sNode> {
    let v: Value = serde_json::from_str(json).expect("kubectl json");
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| K8sNode {
            name: n["metadata"]["name"].as_str().expect("name").to_string(),
            ready: n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            internal_ips: n["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["type"] == "InternalIP")
                .filter_map(|a| a["address"].as_str().map(str::to_string))
                .collect(),
            taints: n["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
                    (s("key"), s("value"), s("effect"))
                })
                .collect(),
            kubelet: n["status"]["nodeInfo"]["kubeletVersion"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            unschedulable: n["spec"]["unschedulable"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// NAME -> INTERNAL-IP of `kubectl get nodes -o wide` (columns found by the header's offsets;
/// OS-IMAGE may hold spaces, INTERNAL-IP never does).
fn wide_internal_ips(table: &str) -> BTreeMap<String, String> {
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    let col = header.find("INTERNAL-IP").expect("INTERNAL-IP column");
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let name = l.split_whitespace().next().expect("name").to_string();
            let ip = l
                .get(col..)
                .and_then(|rest| rest.split_whitespace().next())
                .expect("internal ip")
                .to_string();
            (name, ip)
        })
        .collect()
}

/// Every regular file under `dir`, skipping the directories `skip` names.
fn files_under(dir: &Path, skip: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if skip(&path) {
            continue;
        }
        match e.file_type() {
            Ok(ft) if ft.is_dir() => files_under(&path, skip, out),
            Ok(ft) if ft.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// The files (and the command outputs) that hold `needle`.
fn holders(needle: &str, files: &[PathBuf], t: &Transcript) -> Vec<String> {
    let mut found = Vec::new();
    for (what, out) in &t.outputs {
        if text(&out.stdout).contains(needle) {
            found.push(format!("stdout of {what}"));
        }
        if text(&out.stderr).contains(needle) {
            found.push(format!("stderr of {what}"));
        }
    }
    for f in files {
        if let Ok(bytes) = std::fs::read(f) {
            if text(&bytes).contains(needle) {
                found.push(f.display().to_string());
            }
        }
    }
    found
}

/// The lab's logs, state, journal and everything else it keeps, except the secret store (the
/// platform's side of `fly secrets`, where the token belongs), volume contents (the
/// bootstrap server's data dir holds the token file by design) and the guests' root
/// filesystems (`machines/<id>/upper`: the writable layer of a machine's rootfs, where the
/// platform writes the machine's `files`, the token file among them, as Fly writes them into
/// the machine); plus the test's HOME and XDG_CONFIG_HOME.
fn searched_files(state: &Path, env: &Env) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let volumes = state.join("volumes");
    let secrets = state.join("secrets.json");
    let machines = state.join("machines");
    files_under(
        state,
        &|p: &Path| {
            p == volumes
                || p == secrets
                || (p.file_name().is_some_and(|n| n == "upper")
                    && p.parent().and_then(Path::parent) == Some(machines.as_path()))
        },
        &mut files,
    );
    files_under(&env.xdg, &|_: &Path| false, &mut files);
    files_under(&env.home, &|_: &Path| false, &mut files);
    files
}

/// A copy of clusters/lab in the lab's directory: its own org network, fewer workers.
fn cluster_copy(lab: &GuestLab, org: &str) -> PathBuf {
    common::cluster_copy(lab.dir.path(), &lab.image, org, WORKERS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_lifecycle_on_guests_end_to_end() {
    if !have_root("e2e") {
        return;
    }
    let lab = GuestLab::start().await;
    let mut t = Transcript::default();

    let cluster_dir = cluster_copy(&lab, ORG);
    let dir = cluster_dir.to_str().expect("utf-8 path");

    let env = Env::new(&lab).await;
    let allow = "--allow-missing-kernel-options";
    // Bounded waits: a stuck node fails the test in minutes, naming the node.
    let timeout = ["--timeout", "180"];

    // Create the control plane, then node group 0.
    let started = Instant::now();
    let out = env
        .fks(&mut t, &["create", dir, allow, timeout[0], timeout[1]])
        .await;
    assert_ok("create", &out, &lab);
    eprintln!("figure: create took {:?}", started.elapsed());
    let started = Instant::now();
    let out = env
        .fks(&mut t, &["-a", GROUP, dir, allow, timeout[0], timeout[1]])
        .await;
    assert_ok("-a 0", &out, &lab);
    eprintln!(
        "figure: -a {GROUP} ({WORKERS} workers) took {:?}",
        started.elapsed()
    );

    let servers = lab.machines(CP_APP).await;
    let workers = lab.machines(GROUP_APP).await;
    assert_eq!(servers.len(), 3, "{servers:?}");
    assert_eq!(workers.len(), WORKERS, "{workers:?}");
    // k3s node name -> the machine's 6PN address.
    let six_pn: BTreeMap<String, String> = servers
        .iter()
        .map(|m| (m, CP_APP))
        .chain(workers.iter().map(|m| (m, GROUP_APP)))
        .map(|(m, app)| {
            (
                format!("{}.vm.{app}.internal", m["id"].as_str().expect("id")),
                m["private_ip"].as_str().expect("private_ip").to_string(),
            )
        })
        .collect();

    // The join token, from the bootstrap server's volume (read before anything is removed).
    let bootstrap = servers
        .iter()
        .find(|m| m["config"]["metadata"]["fks_node"] == "ctrl-0")
        .expect("ctrl-0");
    let volume = bootstrap["config"]["mounts"][0]["volume"]
        .as_str()
        .expect("ctrl-0 has a volume");
    let token_file = fks_lab::runner::volume_dir(&lab.state, volume).join("k3s/server/token");
    let join_token = std::fs::read_to_string(&token_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", token_file.display()))
        .trim()
        .to_string();
    assert!(join_token.starts_with("K10"), "not a k3s token");
    let password = join_token
        .rsplit(':')
        .next()
        .expect("token password")
        .to_string();
    assert!(
        password.len() >= 16,
        "token password too short to search for"
    );
    // The forms an app secret may hold (file content for `secret_name` is base64).
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{join_token}\n"))
    };
    let encoded_bare = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&join_token)
    };
    let needles = [&join_token, &password, &encoded, &encoded_bare];
    // The search finds the token where it belongs (it is not blind).
    assert_eq!(
        holders(
            &password,
            std::slice::from_ref(&token_file),
            &Transcript::default()
        ),
        [token_file.display().to_string()]
    );

    // Without a tunnel: the servers' 6PN addresses unreachable from this host, so no SSH.
    // -k still works (through the Machines API exec), `-s -- CMD` runs through exec and says
    // so, and an interactive -s exits 1 naming what to set up.
    let cut = Unreachable::new(
        servers
            .iter()
            .map(|m| m["private_ip"].as_str().expect("private_ip").to_string()),
    );
    for ip in &cut.0 {
        let addr = std::net::SocketAddr::new(ip.parse().expect("6pn ip"), 22);
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "{addr} still reachable"
        );
    }
    let out = env
        .fks(&mut t, &["-s", "cp", dir, "--", "uname", "-n"])
        .await;
    assert_ok("-s cp -- uname -n without 6PN", &out, &lab);
    let ctrl0 = bootstrap["id"].as_str().expect("id");
    assert_eq!(text(&out.stdout).trim(), ctrl0);
    assert!(
        text(&out.stderr).contains("through the Machines API exec"),
        "{}",
        text(&out.stderr)
    );
    let out = env.fks(&mut t, &["-s", "cp", dir]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("fly wireguard create"),
        "{}",
        text(&out.stderr)
    );

    // -k: ~/.kube/lab, 0600, its path on stdout and nothing else.
    let out = env.fks(&mut t, &["-k", dir]).await;
    assert_ok("-k", &out, &lab);
    drop(cut);
    let kubeconfig = env.home.join(".kube").join(CLUSTER);
    assert_eq!(text(&out.stdout), format!("{}\n", kubeconfig.display()));
    let mode = std::fs::metadata(&kubeconfig)
        .expect("kubeconfig")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let kc_text = std::fs::read_to_string(&kubeconfig).expect("read kubeconfig");
    assert!(
        kc_text.contains("server: https://lab-cp.internal:6443"),
        "server not rewritten"
    );

    // The host resolves lab-cp.internal through a private /etc/hosts with the servers' 6PN
    // addresses from the lab API.
    let hosts = hosts_file(&lab, &servers);

    // Every node registered and Ready (create and -a waited for it; heartbeats may lag).
    let deadline = Instant::now() + WAIT;
    let nodes = loop {
        let out = kubectl(&mut t, &kubeconfig, &hosts, &["get", "nodes", "-o", "json"]).await;
        let nodes = if out.status.success() {
            parse_nodes(&text(&out.stdout))
        } else {
            Vec::new()
        };
        if nodes.len() == 3 + WORKERS && nodes.iter().all(|n| n.ready) {
            break nodes;
        }
        assert!(
            Instant::now() < deadline,
            "nodes not all Ready: {nodes:?}\nkubectl stderr: {}\nguest logs:\n{}",
            text(&out.stderr),
            lab.logs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let names: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let expected: BTreeSet<&str> = six_pn.keys().map(String::as_str).collect();
    assert_eq!(names, expected);
    // INTERNAL-IP is the machine's 6PN address, in the JSON and in the wide table.
    for n in &nodes {
        assert_eq!(
            n.internal_ips.first(),
            six_pn.get(&n.name),
            "{}: {:?}",
            n.name,
            n.internal_ips
        );
    }
    let out = kubectl(&mut t, &kubeconfig, &hosts, &["get", "nodes", "-o", "wide"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!("kubectl get nodes -o wide:\n{}", text(&out.stdout));
    assert_eq!(wide_internal_ips(&text(&out.stdout)), six_pn);

    // The control plane is tainted; -t is idempotent (same taints, reported per node).
    let taint = (
        "CriticalAddonsOnly".to_string(),
        "true".to_string(),
        "NoExecute".to_string(),
    );
    let taints_before: BTreeMap<String, Vec<(String, String, String)>> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.taints.clone()))
        .collect();
    let out = env.fks(&mut t, &["-t", dir]).await;
    assert_ok("-t", &out, &lab);
    let report = text(&out.stdout);
    for m in &servers {
        let id = m["id"].as_str().expect("id");
        assert!(
            report
                .lines()
                .any(|l| l.contains(id) && l.contains("tainted CriticalAddonsOnly=true:NoExecute")),
            "{report}"
        );
    }
    let out = kubectl(&mut t, &kubeconfig, &hosts, &["get", "nodes", "-o", "json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    for n in parse_nodes(&text(&out.stdout)) {
        let server = n.name.ends_with(&format!(".vm.{CP_APP}.internal"));
        let has = n.taints.iter().filter(|x| **x == taint).count();
        assert_eq!(has, usize::from(server), "{}: {:?}", n.name, n.taints);
        let before = &taints_before[&n.name];
        if before.contains(&taint) || !server {
            assert_eq!(&n.taints, before, "{}: -t changed a tainted node", n.name);
        }
    }

    // --merge into an existing ~/.kube/config: backed up, the user's context kept; with
    // --use-context the cluster becomes current. kubectl reaches the cluster through it.
    let user_config = env.home.join(".kube/config");
    let mine = "apiVersion: v1\nkind: Config\nclusters:\n- name: mine\n  cluster: {server: 'https://example.invalid'}\nusers:\n- name: mine\n  user: {}\ncontexts:\n- name: mine\n  context: {cluster: mine, user: mine}\ncurrent-context: mine\n";
    std::fs::write(&user_config, mine).expect("write ~/.kube/config");
    let out = env.fks(&mut t, &["kubeconfig", dir, "--merge"]).await;
    assert_ok("kubeconfig --merge", &out, &lab);
    assert_eq!(
        text(&out.stdout),
        format!("{}\n{}\n", kubeconfig.display(), user_config.display())
    );
    let merged = std::fs::read_to_string(&user_config).expect("merged config");
    assert!(merged.contains("current-context: mine"), "context switched");
    let backups: Vec<String> = std::fs::read_dir(env.home.join(".kube"))
        .expect("ls ~/.kube")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("config.") && n.ends_with(".bak"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let backup = std::fs::read_to_string(env.home.join(".kube").join(&backups[0])).expect("backup");
    assert_eq!(backup, mine);
    let out = env
        .fks(&mut t, &["-k", dir, "--merge", "--use-context"])
        .await;
    assert_ok("-k --merge --use-context", &out, &lab);
    let merged = std::fs::read_to_string(&user_config).expect("merged config");
    assert!(
        merged.contains("current-context: lab"),
        "context not switched"
    );
    assert!(
        merged.contains("name: mine"),
        "the user's entries were lost"
    );
    let out = kubectl(
        &mut t,
        &user_config,
        &hosts,
        &["get", "nodes", "-o", "name"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3 + WORKERS);

    // Re-running -c and -a converges with zero mutations.
    let before = lab.mutations().await;
    let out = env
        .fks(&mut t, &["-c", dir, allow, timeout[0], timeout[1]])
        .await;
    assert_ok("-c again", &out, &lab);
    let out = env
        .fks(&mut t, &["-a", GROUP, dir, allow, timeout[0], timeout[1]])
        .await;
    assert_ok("-a 0 again", &out, &lab);
    assert_eq!(lab.mutations().await, before, "a re-run changed something");

    // -l cp --json agrees with the lab and with k3s.
    let out = env.fks(&mut t, &["-l", "cp", dir, "--json"]).await;
    assert_ok("-l cp --json", &out, &lab);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list json");
    assert_eq!(rows.len(), 3, "{rows:?}");
    let mut zones = BTreeSet::new();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["name"], format!("ctrl-{i}"));
        assert_eq!(r["state"], "started");
        assert_eq!(r["role"], "server");
        assert_eq!(r["ready"], true);
        let id = r["machine_id"].as_str().expect("machine_id");
        let k3s_name = format!("{id}.vm.{CP_APP}.internal");
        assert_eq!(
            six_pn.get(&k3s_name).map(String::as_str),
            r["private_ip"].as_str()
        );
        let zone = r["zone"].as_str().expect("zone");
        assert!(!zone.is_empty(), "{r}");
        zones.insert(zone.to_string());
    }
    assert_eq!(
        zones.len(),
        3,
        "control-plane zones not distinct: {zones:?}"
    );

    // The join token is nowhere: no output, no lab log/state/journal, nothing under HOME/XDG.
    for needle in needles {
        let files = searched_files(&lab.state, &env);
        assert!(
            files.iter().any(|f| f.ends_with("log")),
            "no lab logs searched"
        );
        assert!(files
            .iter()
            .any(|f| f.ends_with("journal.jsonl") || f.ends_with("state.json")));
        let found = holders(needle, &files, &t);
        assert!(found.is_empty(), "the join token leaked into: {found:?}");
    }

    // The nodes' ssh host private keys travel as app secrets too: no machine record in the
    // lab's state or journal carries one, inline or base64 (the operator's own copy under XDG
    // and each guest's /etc/ssh are where they belong).
    let records: Vec<PathBuf> = searched_files(&lab.state, &env)
        .into_iter()
        .filter(|f| f.ends_with("journal.jsonl") || f.ends_with("state.json"))
        .collect();
    assert!(!records.is_empty(), "no lab state or journal searched");
    for needle in [
        "OPENSSH PRIVATE KEY",
        // base64 of "-----BEGIN OPENSSH PRIVATE KEY", as a raw_value would start.
        "LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEUgS0VZ",
    ] {
        let found = holders(needle, &records, &t);
        assert!(
            found.is_empty(),
            "a host private key leaked into: {found:?}"
        );
    }

    // destroy leaves no app, machine, volume or secret of the cluster, and no guest netns.
    let out = env.fks(&mut t, &["destroy", dir, "--yes"]).await;
    assert_ok("destroy --yes", &out, &lab);
    for app in [CP_APP, GROUP_APP] {
        for path in [
            format!("/v1/apps/{app}"),
            format!("/v1/apps/{app}/machines"),
            format!("/v1/apps/{app}/volumes"),
            format!("/v1/apps/{app}/secrets"),
        ] {
            let (status, v) = lab.get(&path).await;
            assert_eq!(status, 404, "{path} still answers: {v}");
        }
    }
    let (status, apps) = lab.get(&format!("/v1/apps?org_slug={ORG}")).await;
    assert_eq!(status, 200, "{apps}");
    let left: Vec<&Value> = apps["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["name"].as_str().is_some_and(|n| n.starts_with("lab-")))
        .collect();
    assert!(left.is_empty(), "apps left: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let netns = netns_with_prefix(&format!("{BRIDGE}-"));
        if netns.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "guest namespaces left: {netns:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The search again, now with destroy's output and the logs of destroyed machines.
    let files = searched_files(&lab.state, &env);
    for needle in needles {
        let found = holders(needle, &files, &t);
        assert!(found.is_empty(), "the join token leaked into: {found:?}");
    }

    lab.stop().await;
}

/// Against an API-only lab (no root needed): with no control plane, `-t` and `-k` exit 1 with
/// the sentence that says how to create it, and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taint_and_kubeconfig_without_a_control_plane_exit_1_and_write_nothing() {
    let bin = tokio::task::spawn_blocking(fks_bootstrap_binary)
        .await
        .expect("build thread");
    let lab = common::start_api_lab("sjc=3", "", 3, Duration::from_millis(10), TOKEN).await;
    let home = tempfile::tempdir().expect("tempdir");
    for args in [
        &["-t", "clusters/lab"][..],
        &["taint", "clusters/lab"],
        &["-k", "clusters/lab", "--merge"],
        &["kubeconfig", "clusters/lab"],
    ] {
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .current_dir(repo_root())
            .envs(lab.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("xdg"))
            .env_remove("KUBECONFIG")
            .env_remove("BOOTSTRAP_NODE_ID")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run"))
            .await
            .expect("join");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains(
                "cluster lab has no control plane yet (app lab-cp not found): create it with fks-bootstrap -c clusters/lab"
            ),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let mut files = Vec::new();
    files_under(home.path(), &|_: &Path| false, &mut files);
    assert!(files.is_empty(), "wrote {files:?}");
}

/// Against an API-only lab (no root needed; `create` stops at "machine started"): exec is
/// unavailable there, so `-t` reports every server as failed and exits 1 (`taint --dry-run`
/// shows its plan and exits 0), and `-k` tries each started server, says why none answered,
/// exits 1 and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taint_and_kubeconfig_report_unreachable_servers_and_exit_1() {
    let bin = tokio::task::spawn_blocking(fks_bootstrap_binary)
        .await
        .expect("build thread");
    let lab = common::start_api_lab("sjc=3", "", 4, Duration::from_millis(10), TOKEN).await;
    let home = tempfile::tempdir().expect("tempdir");
    let (registry, cluster) = common::registry_and_cluster(home.path(), TOKEN).await;
    let run = |args: &[&str]| {
        let args: Vec<&str> = args
            .iter()
            .map(|a| {
                if *a == "clusters/lab" {
                    cluster.as_str()
                } else {
                    a
                }
            })
            .collect();
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .current_dir(repo_root())
            .envs(lab.env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(registry.env())
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("xdg"))
            .env_remove("KUBECONFIG")
            .env_remove("BOOTSTRAP_NODE_ID")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || cmd.output().expect("run"))
    };
    let out = run(&["-c", "clusters/lab"]).await.expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // The dry run prints one taint step per server, each through ctrl-0's machine first.
    let out = run(&["taint", "clusters/lab", "--dry-run"])
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.starts_with("dry run: nothing was changed\n")
            && (0..3).all(|i| plan.contains(&format!("ctrl-{i}: taint k3s node ")))
            && plan.contains("3 steps, 0 changes on Fly"),
        "{plan}"
    );

    let out = run(&["-t", "clusters/lab"]).await.expect("join");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    eprintln!("taint --dry-run:\n{plan}-t:\n{report}{}", text(&out.stderr));
    let lines: Vec<&str> = report.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{report}");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("ctrl-{i} ")) && line.contains("failed: "),
            "{report}"
        );
    }
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with("failed: no started server answers exec")),
        "{report}"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("tainting 3 of 3 servers of app lab-cp failed; exec failed on ctrl-0: ")
            && err.contains("; ctrl-2: ")
            && err.contains("API-only"),
        "{err}"
    );

    let out = run(&["-k", "clusters/lab", "--merge"]).await.expect("join");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("could not read /etc/rancher/k3s/k3s.yaml from any server of app lab-cp")
            && ["ctrl-0: ", "ctrl-1: ", "ctrl-2: "]
                .iter()
                .all(|n| err.contains(n)),
        "{err}"
    );
    assert!(!home.path().join(".kube").exists(), "wrote a kubeconfig");
}

/// Runs `fks-bootstrap ARGS` and SIGKILLs it as soon as the lab has counted `after` more
/// mutations. Returns false when the run ended before that.
async fn kill_after_mutations(env: &Env, lab: &GuestLab, args: &[&str], after: u64) -> bool {
    let before = lab.mutations().await;
    let mut child = tokio::process::Command::from(env.command(args))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning fks-bootstrap");
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        if lab.mutations().await >= before + after {
            child.kill().await.expect("SIGKILL");
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} neither ended nor mutated"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// With real guests, every machine crashing once at its first boot (lab fault `boot_crash=1`:
/// init exits 1, the restart policy starts it again) and the tool SIGKILLed part-way through
/// `-c` (after the token is stored, while servers join) and `-a 0`: the next runs finish the
/// job with one machine per node, no orphan volume, every k3s node Ready, and a re-run that
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashes_at_boot_and_kills_during_the_k3s_steps_converge_on_guests() {
    if !have_root("e2e faults on guests") {
        return;
    }
    const NET: Net = Net {
        bridge: "fkse2f",
        org: "e2eforg",
        v4: 151,
    };
    let lab = GuestLab::start_with(&NET, "boot_crash=1").await;
    let cluster_dir = cluster_copy(&lab, NET.org);
    let dir = cluster_dir.to_str().expect("utf-8 path");
    let env = Env::new(&lab).await;
    let mut t = Transcript::default();
    let allow = "--allow-missing-kernel-options";

    // -c: the app, the host-key secrets, three volumes, the bootstrap machine and the token
    // secret make 7 mutations; the kill lands while the other servers are being made.
    let create = ["-c", dir, allow, "--timeout", "180"];
    assert!(
        kill_after_mutations(&env, &lab, &create, 7).await,
        "-c ended before 7 mutations"
    );
    let out = env.fks(&mut t, &create).await;
    assert_ok("-c after the kill", &out, &lab);
    // -a 0: killed after the app, its secrets and a volume.
    let add = ["-a", GROUP, dir, allow, "--timeout", "180"];
    assert!(
        kill_after_mutations(&env, &lab, &add, 3).await,
        "-a ended before 3 mutations"
    );
    let out = env.fks(&mut t, &add).await;
    assert_ok("-a after the kill", &out, &lab);

    // One machine per node, every volume attached to one of them; every machine crashed once.
    for (app, n) in [(CP_APP, 3), (GROUP_APP, WORKERS)] {
        assert_one_machine_and_volume_per_node(&lab, app, n).await;
        let ms = lab.machines(app).await;
        for m in &ms {
            let crashed = m["events"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["type"] == "exit");
            assert!(crashed, "{app}: machine {} never crashed: {m}", m["id"]);
        }
    }

    // Converged: re-runs change nothing.
    let before = lab.mutations().await;
    for args in [&create[..], &add[..]] {
        let out = env.fks(&mut t, args).await;
        assert_ok("re-run", &out, &lab);
    }
    assert_eq!(lab.mutations().await, before, "a converged re-run mutated");

    // k3s agrees: every node Ready, through the exported kubeconfig.
    let out = env.fks(&mut t, &["-k", dir]).await;
    assert_ok("-k", &out, &lab);
    let kubeconfig = env.home.join(".kube").join(CLUSTER);
    let hosts = hosts_file(&lab, &lab.machines(CP_APP).await);
    let out = kubectl(&mut t, &kubeconfig, &hosts, &["get", "nodes", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let nodes = parse_nodes(&text(&out.stdout));
    assert_eq!(nodes.len(), 3 + WORKERS, "{nodes:#?}");
    assert!(nodes.iter().all(|n| n.ready), "{nodes:#?}");

    let out = env.fks(&mut t, &["destroy", dir, "--yes"]).await;
    assert_ok("destroy --yes", &out, &lab);
    lab.stop().await;
}

/// `-c` then `-a 0` (with `--yes`) on the cluster in `dir` (3 workers), then waits until
/// kubectl on the host sees its 3 servers and 3 workers Ready; returns the kubeconfig read from
/// ctrl-0 and the hosts file that resolves the servers' name.
async fn six_ready_nodes(
    env: &Env,
    t: &mut Transcript,
    lab: &GuestLab,
    dir: &str,
) -> (PathBuf, PathBuf) {
    let allow = "--allow-missing-kernel-options";
    let out = env.fks(t, &["-c", dir, allow, "--timeout", "180"]).await;
    assert_ok("-c", &out, lab);
    let add = ["-a", GROUP, dir, allow, "--timeout", "180", "--yes"];
    let out = env.fks(t, &add).await;
    assert_ok("-a 0 (3 workers)", &out, lab);
    let ctrl0 = node_machine(lab, CP_APP, "ctrl-0").await;
    let kubeconfig = exec_kubeconfig(lab, &ctrl0).await;
    let hosts = hosts_file(lab, &lab.machines(CP_APP).await);
    nodes_until(
        t,
        lab,
        &kubeconfig,
        &hosts,
        "3 servers and 3 workers Ready",
        |n| n.len() == 6 && n.iter().all(|n| n.ready),
    )
    .await;
    (kubeconfig, hosts)
}

/// A machine of `app` by its `fks_node` metadata.
async fn node_machine(lab: &GuestLab, app: &str, node: &str) -> Value {
    lab.machines(app)
        .await
        .into_iter()
        .find(|m| m["config"]["metadata"]["fks_node"] == node)
        .unwrap_or_else(|| panic!("{app} has no machine for node {node}"))
}

/// Migrate a machine through the lab endpoint and wait until it is started again with
/// another 6PN address; returns the machine as it is then.
async fn migrate(lab: &GuestLab, app: &str, before: &Value) -> Value {
    let id = before["id"].as_str().expect("id");
    let res = lab
        .http
        .post(format!(
            "{}/lab/v1/apps/{app}/machines/{id}/migrate",
            lab.base
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("migrate request");
    let status = res.status().as_u16();
    assert_eq!(status, 200, "{}", res.text().await.unwrap_or_default());
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, m) = lab.get(&format!("/v1/apps/{app}/machines/{id}")).await;
        assert_eq!(status, 200, "{m}");
        if m["state"] == "started" && m["private_ip"] != before["private_ip"] {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{app}/{id} not back after the migration: {m:#}\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /v1/apps/<cp>/machines/<id>/<action>` (stop, start), then wait for `state`.
async fn machine_action(lab: &GuestLab, m: &Value, action: &str, state: &str) {
    let id = m["id"].as_str().expect("id");
    let res = lab
        .http
        .post(format!(
            "{}/v1/apps/{CP_APP}/machines/{id}/{action}",
            lab.base
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("machine action");
    assert_eq!(res.status().as_u16(), 200, "{action} {id}");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, now) = lab.get(&format!("/v1/apps/{CP_APP}/machines/{id}")).await;
        if now["state"] == state {
            return;
        }
        assert!(Instant::now() < deadline, "{id} not {state}: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The admin kubeconfig of a server, read with the Machines API exec and rewritten for the
/// operator (`https://<cluster>-cp.internal:6443`) by the product's own `kubeconfig::rewrite`;
/// written to the lab's directory.
async fn exec_kubeconfig(lab: &GuestLab, server: &Value) -> PathBuf {
    let id = server["id"].as_str().expect("id");
    // k3s.yaml lives on the rootfs, which a restart (here: the migration) resets, so it is
    // there again only once k3s has started on the new host: ask until it is.
    let deadline = Instant::now() + WAIT;
    let v = loop {
        let res = lab
            .http
            .post(format!("{}/v1/apps/{CP_APP}/machines/{id}/exec", lab.base))
            .header("authorization", format!("Bearer {TOKEN}"))
            .json(&serde_json::json!({"command": ["cat", "/etc/rancher/k3s/k3s.yaml"]}))
            .send()
            .await
            .expect("exec request");
        assert_eq!(res.status().as_u16(), 200);
        let v: Value = res.json().await.expect("exec answer");
        if v["exit_code"] == 0 {
            break v;
        }
        assert!(Instant::now() < deadline, "no k3s.yaml on {id}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let yaml = v["stdout"].as_str().expect("stdout");
    let cfg = fks_bootstrap::kubeconfig::rewrite(
        yaml,
        CLUSTER,
        &fks_bootstrap::kubeconfig::cluster_server_url(CLUSTER),
    )
    .expect("a k3s kubeconfig");
    let path = lab.dir.path().join("kubeconfig-exec");
    std::fs::write(&path, cfg.to_yaml().expect("yaml")).expect("write kubeconfig");
    path
}

/// Issue 10 §6 and issue 11 item 5 on real guests: the bootstrap server and a
/// worker are migrated one after the other during a live cluster, as Fly does (one machine
/// of an org network at a time, reference fly-runtime.md §4). Each keeps its machine id, gets
/// a new 6PN address and a forked volume with its data, and comes back Ready in k3s as the same
/// node with the new InternalIP (no stale node); the lab DNS and `-l` follow, and `-c` / `-a`
/// re-runs find nothing to do. The servers run real etcd under the stand-in: the migrated
/// server's member has its new peer URL (node init updated it), all 3 members are healthy and
/// the node data is in etcd; then stopping 2 of 3 servers makes the API fail and starting one
/// again brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrated_server_and_worker_come_back_ready_with_new_addresses_on_guests() {
    if !have_root("migration on guests") {
        return;
    }
    const NET: Net = Net {
        bridge: "fkse2m",
        org: "e2emorg",
        v4: 152,
    };
    let lab = GuestLab::start_with(&NET, "").await;
    let cluster_dir = cluster_copy(&lab, NET.org);
    let dir = cluster_dir.to_str().expect("utf-8 path");
    let env = Env::new(&lab).await;
    let mut t = Transcript::default();
    let allow = "--allow-missing-kernel-options";
    let create = ["-c", dir, allow, "--timeout", "180"];
    let add = ["-a", GROUP, dir, allow, "--timeout", "180"];
    let out = env.fks(&mut t, &create).await;
    assert_ok("-c", &out, &lab);
    let out = env.fks(&mut t, &add).await;
    assert_ok("-a 0", &out, &lab);

    let targets = [
        (CP_APP, node_machine(&lab, CP_APP, "ctrl-0").await),
        (
            GROUP_APP,
            node_machine(&lab, GROUP_APP, &format!("worker-ng-{GROUP}-0")).await,
        ),
    ];
    let token_file =
        |vol: &str| fks_lab::runner::volume_dir(&lab.state, vol).join("k3s/server/token");
    let old_ctrl0_vol = targets[0].1["config"]["mounts"][0]["volume"]
        .as_str()
        .expect("ctrl-0 volume")
        .to_string();
    let token = std::fs::read_to_string(token_file(&old_ctrl0_vol)).expect("ctrl-0 token");
    let mut moved = Vec::new();
    for (app, before) in &targets {
        let started = Instant::now();
        let after = migrate(&lab, app, before).await;
        eprintln!(
            "figure: migrating {} took {:?} (stop, fork, start)",
            before["config"]["metadata"]["fks_node"],
            started.elapsed()
        );
        assert_eq!(after["id"], before["id"]);
        let (old_vol, new_vol) = (
            before["config"]["mounts"][0]["volume"]
                .as_str()
                .expect("vol"),
            after["config"]["mounts"][0]["volume"]
                .as_str()
                .expect("vol"),
        );
        assert_ne!(old_vol, new_vol, "{app}: the volume was not forked");
        let (_, vols) = lab.get(&format!("/v1/apps/{app}/volumes")).await;
        let state_of = |id: &str| {
            vols.as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["id"] == id)
                .map(|v| v["state"].clone())
        };
        assert_eq!(state_of(old_vol), Some(Value::from("pending_destroy")));
        assert_eq!(state_of(new_vol), Some(Value::from("created")));
        moved.push((*app, after));
    }
    // From here: how long until k3s shows both back (the API already shows them started).
    let settling = Instant::now();
    // The bootstrap server's data came along: the same join token on the fork.
    let new_ctrl0_vol = moved[0].1["config"]["mounts"][0]["volume"]
        .as_str()
        .expect("vol");
    assert_eq!(
        std::fs::read_to_string(token_file(new_ctrl0_vol)).expect("token on the fork"),
        token
    );

    // The lab DNS answers the new addresses (and no longer the old ones).
    let dns = std::net::SocketAddr::new(NET.dns().into(), 53);
    let entries = tokio::task::spawn_blocking(move || fks_lab::hosts::lookup(dns))
        .await
        .expect("join")
        .expect("lab dns");
    for ((_, before), (_, after)) in targets.iter().zip(&moved) {
        let ip: std::net::Ipv6Addr = after["private_ip"]
            .as_str()
            .expect("ip")
            .parse()
            .expect("ipv6");
        let old: std::net::Ipv6Addr = before["private_ip"]
            .as_str()
            .expect("ip")
            .parse()
            .expect("ipv6");
        assert!(
            entries.iter().any(|e| e.id == after["id"] && e.ip == ip),
            "{entries:?}"
        );
        assert!(!entries.iter().any(|e| e.ip == old), "{entries:?}");
    }

    // k3s: every node Ready, the migrated ones with their new InternalIP, no stale node. The
    // kubeconfig is read through the Machines API exec from the migrated server and rewritten
    // as `-k` does (`-k` itself goes through the node's SSH, which this test is not about).
    let kubeconfig = exec_kubeconfig(&lab, &moved[0].1).await;
    let hosts = hosts_file(&lab, &lab.machines(CP_APP).await);
    let want: BTreeMap<String, String> = moved
        .iter()
        .map(|(app, m)| {
            (
                format!("{}.vm.{app}.internal", m["id"].as_str().expect("id")),
                m["private_ip"].as_str().expect("ip").to_string(),
            )
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    let nodes = loop {
        let out = kubectl(&mut t, &kubeconfig, &hosts, &["get", "nodes", "-o", "json"]).await;
        if out.status.code() == Some(0) {
            let nodes = parse_nodes(&text(&out.stdout));
            let settled = nodes.iter().all(|n| n.ready)
                && want.iter().all(|(name, ip)| {
                    nodes
                        .iter()
                        .any(|n| &n.name == name && n.internal_ips.first() == Some(ip))
                });
            if settled {
                eprintln!(
                    "figure: k3s showed every node Ready with the new addresses {:?} after the second machine was started again",
                    settling.elapsed()
                );
                break nodes;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nodes not back with their new addresses: {}{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            lab.logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(nodes.len(), 3 + WORKERS, "a stale node is left: {nodes:#?}");

    // etcd (real, under the stand-in): node init moved the migrated server's member to its new
    // peer URL through a healthy peer before k3s started; 3 voting members, each healthy, and
    // the node data readable. Read through ctrl-1 with the k3s client certificate from its
    // volume (as `node init` does on a machine).
    let servers = lab.machines(CP_APP).await;
    let ctrl1 = servers
        .iter()
        .find(|m| m["config"]["metadata"]["fks_node"] == "ctrl-1")
        .expect("ctrl-1");
    let k3s_dir = |m: &Value| {
        fks_lab::runner::volume_dir(
            &lab.state,
            m["config"]["mounts"][0]["volume"].as_str().expect("vol"),
        )
        .join("k3s")
    };
    let tls = fks_bootstrap::etcd::Tls::from_k3s_data_dir(&k3s_dir(ctrl1)).expect("etcd tls");
    let ip = |m: &Value| -> std::net::IpAddr {
        m["private_ip"].as_str().expect("ip").parse().expect("ip")
    };
    let etcd_at = |m: &Value| {
        fks_bootstrap::etcd::Client::new(
            &fks_bootstrap::etcd::url(ip(m), fks_bootstrap::etcd::CLIENT_PORT),
            &tls,
            Duration::from_secs(15),
        )
        .expect("etcd client")
    };
    let members = etcd_at(ctrl1).member_list().await.expect("member list");
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|m| !m.is_learner), "{members:?}");
    let migrated_name =
        std::fs::read_to_string(fks_bootstrap::etcd::name_file(&k3s_dir(&moved[0].1)))
            .expect("member name on the fork");
    let member = fks_bootstrap::etcd::by_name(&members, migrated_name.trim())
        .unwrap_or_else(|| panic!("no member {migrated_name}: {members:?}"));
    assert_eq!(
        member.peer_urls,
        [fks_bootstrap::etcd::url(
            ip(&moved[0].1),
            fks_bootstrap::etcd::PEER_PORT
        )],
        "the migrated server's member did not follow its new address"
    );
    // It was node init that moved it (the stand-in, like k3s, never updates its own member).
    let logs: String = std::fs::read_dir(lab.state.join("machines"))
        .expect("machine dirs")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path().join("log")).unwrap_or_default())
        .collect();
    assert!(
        logs.contains(&format!(
            "etcd: member {} peer URL updated from",
            member.name
        )),
        "node init did not log the member update:\n{}",
        lab.logs()
    );
    eprintln!(
        "figure: etcd member {} moved from {} to {}",
        member.name, targets[0].1["private_ip"], member.peer_urls[0]
    );
    for m in &servers {
        etcd_at(m)
            .health()
            .await
            .unwrap_or_else(|e| panic!("etcd on {} unhealthy: {e}", m["id"]));
    }
    let stored = etcd_at(ctrl1)
        .range_prefix("/registry/minions/")
        .await
        .expect("node data in etcd");
    assert_eq!(stored.kvs.len(), 3 + WORKERS, "{:?}", stored.kvs);
    for (_, after) in &moved {
        let key = format!(
            "/registry/minions/{}.vm.",
            after["id"].as_str().expect("id")
        );
        let kv = stored
            .kvs
            .iter()
            .find(|kv| kv.key.starts_with(&key))
            .unwrap_or_else(|| panic!("no {key}* in etcd"));
        let text = String::from_utf8_lossy(&kv.value);
        assert!(
            text.contains(after["private_ip"].as_str().expect("ip")),
            "{text}"
        );
    }

    // -l shows the new addresses.
    for (set, (app, after)) in ["cp", GROUP].iter().zip(&moved) {
        let out = env.fks(&mut t, &["-l", set, dir, "--json"]).await;
        assert_ok("-l --json", &out, &lab);
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list json");
        let row = rows
            .iter()
            .find(|r| r["machine_id"] == after["id"])
            .unwrap_or_else(|| panic!("{app}: -l {set} lacks the migrated machine: {rows:?}"));
        assert_eq!(row["private_ip"], after["private_ip"], "{row}");
        assert_eq!(row["state"], "started");
        assert_eq!(row["ready"], true);
    }

    // Converged: re-runs after the migrations change nothing.
    let before = lab.mutations().await;
    for args in [&create[..], &add[..]] {
        let out = env.fks(&mut t, args).await;
        assert_ok("re-run after the migrations", &out, &lab);
    }
    assert_eq!(
        lab.mutations().await,
        before,
        "a re-run after the migrations mutated"
    );

    // Quorum is etcd's own: with two of three servers stopped the remaining one's API fails;
    // one started again brings it back.
    let ctrl0 = node_machine(&lab, CP_APP, "ctrl-0").await;
    let only_ctrl0 = hosts_file(&lab, std::slice::from_ref(&ctrl0));
    let get = ["get", "nodes", "--request-timeout=20s"];
    for n in ["ctrl-1", "ctrl-2"] {
        let m = node_machine(&lab, CP_APP, n).await;
        machine_action(&lab, &m, "stop", "stopped").await;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let out = kubectl(&mut t, &kubeconfig, &only_ctrl0, &get).await;
        if out.status.code() != Some(0) {
            eprintln!(
                "figure: without quorum, kubectl get nodes on ctrl-0 failed: {}",
                text(&out.stderr).trim()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the API still answers with 2 of 3 servers stopped"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ctrl1 = node_machine(&lab, CP_APP, "ctrl-1").await;
    machine_action(&lab, &ctrl1, "start", "started").await;
    let back = Instant::now();
    let deadline = back + WAIT;
    loop {
        let out = kubectl(&mut t, &kubeconfig, &only_ctrl0, &get).await;
        if out.status.code() == Some(0) {
            eprintln!(
                "figure: the API answered again {:?} after ctrl-1 was started",
                back.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the API did not come back with 2 of 3 servers: {}\n{}",
            text(&out.stderr),
            lab.logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let out = env.fks(&mut t, &["destroy", dir, "--yes"]).await;
    assert_ok("destroy --yes", &out, &lab);
    lab.stop().await;
}

/// `status` (issue 11 item 6) on a live control plane: `status --json` shows the three
/// servers started, Ready, with a k3s version and one healthy etcd member each (one of them the
/// leader) and exits 0; with ctrl-2's machine stopped it exits 1 and names the stopped machine,
/// in JSON and in the table, while the other two stay healthy members.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_ready_servers_with_healthy_members_then_a_stopped_one_on_guests() {
    if !have_root("status on guests") {
        return;
    }
    const NET: Net = Net {
        bridge: "fkse2s",
        org: "e2esorg",
        v4: 153,
    };
    let lab = GuestLab::start_with(&NET, "").await;
    let cluster_dir = cluster_copy(&lab, NET.org);
    let dir = cluster_dir.to_str().expect("utf-8 path");
    let env = Env::new(&lab).await;
    let mut t = Transcript::default();
    let create = [
        "-c",
        dir,
        "--allow-missing-kernel-options",
        "--timeout",
        "180",
    ];
    let out = env.fks(&mut t, &create).await;
    assert_ok("-c", &out, &lab);

    // -c waits for Ready; the last member may still be catching up, so poll briefly.
    let deadline = Instant::now() + WAIT;
    let started = Instant::now();
    let report = loop {
        let out = env.fks(&mut t, &["status", dir, "--json"]).await;
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json printed no JSON ({e})\nstdout:\n{}\nstderr:\n{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        if out.status.code() == Some(0) {
            break report;
        }
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            Instant::now() < deadline,
            "status never healthy: {report:#}\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    eprintln!("figure: status healthy {:?} after -c", started.elapsed());
    assert_eq!(report["healthy"], true, "{report:#}");
    let servers: Vec<&Value> = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["role"] == "server")
        .collect();
    assert_eq!(servers.len(), 3, "{report:#}");
    for s in &servers {
        assert_eq!(s["state"], "started", "{s:#}");
        assert_eq!(s["ready"], "True", "{s:#}");
        assert!(!s["k3s_version"].as_str().unwrap_or("").is_empty(), "{s:#}");
        assert!(!s["image"].as_str().unwrap_or("").is_empty(), "{s:#}");
        assert_eq!(s["member"]["healthy"], true, "{s:#}");
        let name = s["member"]["name"].as_str().expect("member name");
        assert!(
            name.starts_with(s["k3s_node"].as_str().expect("k3s node")),
            "{s:#}"
        );
    }
    let leaders = servers
        .iter()
        .filter(|s| s["member"]["leader"] == true)
        .count();
    assert_eq!(leaders, 1, "{report:#}");
    assert_eq!(report["orphan_members"], serde_json::json!([]));
    assert_eq!(report["orphan_nodes"], serde_json::json!([]));

    // Stop ctrl-2 through the Machines API (inline: this test does not lean on other tests'
    // helpers, which change with the guest image plumbing).
    let ctrl2 = node_machine(&lab, CP_APP, "ctrl-2").await;
    let id = ctrl2["id"].as_str().expect("id");
    let res = lab
        .http
        .post(format!("{}/v1/apps/{CP_APP}/machines/{id}/stop", lab.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("stop request");
    assert_eq!(res.status().as_u16(), 200, "stop {id}");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, now) = lab.get(&format!("/v1/apps/{CP_APP}/machines/{id}")).await;
        if now["state"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "{id} not stopped: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = env.fks(&mut t, &["status", dir, "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(report["healthy"], false);
    let node = |name: &str| {
        report["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {report:#}"))
            .clone()
    };
    let stopped = node("ctrl-2");
    assert_eq!(stopped["state"], "stopped", "{stopped:#}");
    assert!(
        stopped["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| p == "machine is stopped"),
        "{stopped:#}"
    );
    assert_eq!(stopped["member"]["healthy"], false, "{stopped:#}");
    for name in ["ctrl-0", "ctrl-1"] {
        let n = node(name);
        assert_eq!(n["member"]["healthy"], true, "{n:#}");
        assert_eq!(n["state"], "started", "{n:#}");
    }
    let out = env.fks(&mut t, &["status", dir]).await;
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(table.contains("machine is stopped"), "{table}");
    assert!(table.ends_with("cluster is NOT healthy\n"), "{table}");
}

/// Sets `NODE_GROUP_SIZE` in the test's cluster copy.
fn set_group_size(cluster_dir: &Path, size: usize) {
    let path = cluster_dir.join("config");
    let config: String = std::fs::read_to_string(&path)
        .expect("config")
        .lines()
        .map(|l| match l.starts_with("NODE_GROUP_SIZE=") {
            true => format!("NODE_GROUP_SIZE={size}\n"),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&path, config).expect("write config");
}

/// `kubectl get nodes` until `done` holds for the node list (or the deadline, then panic).
async fn nodes_until(
    t: &mut Transcript,
    lab: &GuestLab,
    kubeconfig: &Path,
    hosts: &Path,
    what: &str,
    done: impl Fn(&[K8sNode]) -> bool,
) -> Vec<K8sNode> {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = kubectl(t, kubeconfig, hosts, &["get", "nodes", "-o", "json"]).await;
        if out.status.code() == Some(0) {
            let nodes = parse_nodes(&text(&out.stdout));
            if done(&nodes) {
                return nodes;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {}{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            lab.logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Issue 11 item 3 on guests: a node group of 3 lowered to 2 loses worker 2 (cordoned,
/// drained, its machine destroyed, its Node deleted, its volume deleted, its guest gone),
/// raised to 3 gets it back Ready; `nodegroup remove` then leaves nothing of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_down_and_nodegroup_remove_on_guests() {
    if !have_root("scale down on guests") {
        return;
    }
    // Not 153 / fkse2s: the status helper's guest test holds those.
    const NET: Net = Net {
        bridge: "fkse2d",
        org: "e2edorg",
        v4: 154,
    };
    let lab = GuestLab::start_with(&NET, "").await;
    let cluster_dir = cluster_copy(&lab, NET.org);
    set_group_size(&cluster_dir, 3);
    let dir = cluster_dir.to_str().expect("utf-8 path");
    let env = Env::new(&lab).await;
    let mut t = Transcript::default();
    let allow = "--allow-missing-kernel-options";
    let add = ["-a", GROUP, dir, allow, "--timeout", "180", "--yes"];
    let (kubeconfig, hosts) = six_ready_nodes(&env, &mut t, &lab, dir).await;
    let doomed = node_machine(&lab, GROUP_APP, &format!("worker-ng-{GROUP}-2")).await;
    let id = doomed["id"].as_str().expect("id").to_string();
    let volume = doomed["config"]["mounts"][0]["volume"]
        .as_str()
        .expect("volume")
        .to_string();
    let k8s_name = format!("{id}.vm.{GROUP_APP}.internal");
    assert_eq!(netns_with_prefix(&format!("{}-{id}", NET.bridge)).len(), 1);

    // 3 -> 2.
    set_group_size(&cluster_dir, 2);
    let started = Instant::now();
    let out = env.fks(&mut t, &add).await;
    assert_ok("-a 0 at NODE_GROUP_SIZE=2", &out, &lab);
    eprintln!("figure: scaling 3 -> 2 took {:?}", started.elapsed());
    let nodes = nodes_until(
        &mut t,
        &lab,
        &kubeconfig,
        &hosts,
        "worker 2's Node gone",
        |n| !n.iter().any(|n| n.name == k8s_name),
    )
    .await;
    assert_eq!(nodes.len(), 5, "{nodes:#?}");
    let (status, m) = lab
        .get(&format!("/v1/apps/{GROUP_APP}/machines/{id}"))
        .await;
    assert!(status == 404 || m["state"] == "destroyed", "{status} {m}");
    let (status, v) = lab
        .get(&format!("/v1/apps/{GROUP_APP}/volumes/{volume}"))
        .await;
    assert!(
        status == 404 || v["state"] == "destroyed" || v["state"] == "pending_destroy",
        "{status} {v}"
    );
    assert!(
        netns_with_prefix(&format!("{}-{id}", NET.bridge)).is_empty(),
        "the removed worker's guest is still there"
    );
    // Converged at 2: nothing to do.
    let before = lab.mutations().await;
    let out = env.fks(&mut t, &add).await;
    assert_ok("re-run at 2", &out, &lab);
    assert_eq!(lab.mutations().await, before, "a converged re-run mutated");

    // 2 -> 3: the new worker 2 joins Ready.
    set_group_size(&cluster_dir, 3);
    let out = env.fks(&mut t, &add).await;
    assert_ok("-a 0 back at 3", &out, &lab);
    let again = node_machine(&lab, GROUP_APP, &format!("worker-ng-{GROUP}-2")).await;
    assert_ne!(again["id"], doomed["id"]);
    nodes_until(
        &mut t,
        &lab,
        &kubeconfig,
        &hosts,
        "the new worker 2 Ready",
        |n| n.len() == 6 && n.iter().all(|n| n.ready),
    )
    .await;

    // nodegroup remove: nothing of the group is left, the servers stay Ready.
    let machines = lab.machines(GROUP_APP).await;
    let (_, volumes) = lab.get(&format!("/v1/apps/{GROUP_APP}/volumes")).await;
    let out = env
        .fks(&mut t, &["nodegroup", "remove", GROUP, dir, "--yes"])
        .await;
    assert_ok("nodegroup remove", &out, &lab);
    assert_group_gone(&lab, &NET, &machines, &volumes).await;
    let nodes = nodes_until(
        &mut t,
        &lab,
        &kubeconfig,
        &hosts,
        "only servers left",
        |n| n.len() == 3,
    )
    .await;
    assert!(nodes.iter().all(|n| n.ready), "{nodes:#?}");

    let out = env.fks(&mut t, &["destroy", dir, "--yes"]).await;
    assert_ok("destroy --yes", &out, &lab);
    lab.stop().await;
}

/// `POST /v1/apps/<cp>/machines/<id>/exec` of `command` (an argument vector, no shell); the
/// answer as JSON.
async fn exec(lab: &GuestLab, machine: &str, command: &[&str]) -> Value {
    let res = lab
        .http
        .post(format!(
            "{}/v1/apps/{CP_APP}/machines/{machine}/exec",
            lab.base
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .json(&serde_json::json!({ "command": command, "timeout": 30 }))
        .send()
        .await
        .expect("exec request");
    assert_eq!(res.status().as_u16(), 200, "exec on {machine}");
    res.json().await.expect("exec answer")
}

/// `DELETE` a lab API path, expecting 200.
async fn delete(lab: &GuestLab, path: &str) {
    let res = lab
        .http
        .delete(format!("{}{path}", lab.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("delete request");
    let status = res.status().as_u16();
    assert_eq!(
        status,
        200,
        "{path}: {}",
        res.text().await.unwrap_or_default()
    );
}

/// `status --json` until `done` holds for its report (or the deadline, then panic).
async fn status_until(
    env: &Env,
    t: &mut Transcript,
    lab: &GuestLab,
    dir: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = env.fks(t, &["status", dir, "--json"]).await;
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if done(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {report:#}\n{}\n{}",
            text(&out.stderr),
            lab.logs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The zones of the volumes the control plane's live machines hold.
async fn server_zones(lab: &GuestLab) -> Vec<String> {
    let (_, volumes) = lab.get(&format!("/v1/apps/{CP_APP}/volumes")).await;
    let live: Vec<String> = lab
        .machines(CP_APP)
        .await
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    let zones: BTreeSet<String> = volumes
        .as_array()
        .expect("volumes")
        .iter()
        .filter(|v| {
            v["attached_machine_id"]
                .as_str()
                .is_some_and(|a| live.iter().any(|l| l == a))
        })
        .map(|v| v["zone"].as_str().expect("zone").to_string())
        .collect();
    assert_eq!(live.len(), 3, "{volumes:#}");
    zones.into_iter().collect()
}

/// The status report's node `name`.
fn status_node<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
}

/// Issue 11 item 4 on guests. The control plane is made with BOOTSTRAP_NODE_ID=1, so ctrl-1 is
/// the cluster-init server; a label is written to ctrl-0's Node object (the stand-in keeps Nodes
/// in its real etcd); then ctrl-1's machine AND volume are destroyed by hand through the lab API.
/// `server replace ctrl-1` (after a dry run that changes nothing) removes its member through a
/// survivor, deletes its old Node and makes a new machine and volume that joins the survivor
/// (not a second cluster: the bootstrap role follows the survivors). Then 3 members are healthy
/// voters, 3 servers Ready in 3 distinct zones, and the label written before is read through the
/// new server. A running ctrl-2 is replaced next (its machine and volume destroyed by the
/// command), with the same checks. Last, with ctrl-0 and ctrl-2 stopped, `server replace ctrl-2`
/// is refused for quorum and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_replace_after_losing_machine_and_volume_and_quorum_refusal_on_guests() {
    if !have_root("server replace on guests") {
        return;
    }
    // Not 150-154 (the other e2e tests) nor 160-161 (the tunnel tests).
    const NET: Net = Net {
        bridge: "fkse2r",
        org: "e2erorg",
        v4: 158,
    };
    let lab = GuestLab::start_with(&NET, "").await;
    let cluster_dir = cluster_copy(&lab, NET.org);
    let dir = cluster_dir.to_str().expect("utf-8 path");
    let env = Env::new(&lab).await;
    let mut t = Transcript::default();
    let create = [
        "-c",
        dir,
        "--allow-missing-kernel-options",
        "--timeout",
        "180",
    ];
    let mut cmd = env.command(&create);
    cmd.env("BOOTSTRAP_NODE_ID", "1");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("running -c"))
        .await
        .expect("join");
    t.keep("BOOTSTRAP_NODE_ID=1 fks-bootstrap -c", &out);
    assert_ok("-c with BOOTSTRAP_NODE_ID=1", &out, &lab);
    let healthy = status_until(&env, &mut t, &lab, dir, "status healthy after -c", |r| {
        r["healthy"] == true
    })
    .await;
    assert_eq!(healthy["nodes"].as_array().map(Vec::len), Some(3));

    let ctrl0 = node_machine(&lab, CP_APP, "ctrl-0").await;
    let ctrl0_id = ctrl0["id"].as_str().expect("id").to_string();
    let old = node_machine(&lab, CP_APP, "ctrl-1").await;
    assert!(
        old["config"]["env"]
            .get("FKS_BOOTSTRAP_MACHINE_ID")
            .is_none(),
        "ctrl-1 is the cluster-init server: {old:#}"
    );
    let old_id = old["id"].as_str().expect("id").to_string();
    let old_volume = old["config"]["mounts"][0]["volume"]
        .as_str()
        .expect("volume")
        .to_string();
    // Data in etcd before: a label on ctrl-0's Node (ctrl-0 is never replaced here), written
    // through ctrl-0's API.
    let ctrl0_k8s = format!("{ctrl0_id}.vm.{CP_APP}.internal");
    let label = format!("writtenbefore={old_id}");
    let v = exec(
        &lab,
        &ctrl0_id,
        &["k3s", "kubectl", "label", "node", &ctrl0_k8s, &label],
    )
    .await;
    assert_eq!(v["exit_code"], 0, "{v}");

    // ctrl-1's machine and volume are destroyed by hand.
    delete(
        &lab,
        &format!("/v1/apps/{CP_APP}/machines/{old_id}?force=true"),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, m) = lab
            .get(&format!("/v1/apps/{CP_APP}/machines/{old_id}"))
            .await;
        if status == 404 || m["state"] == "destroyed" {
            break;
        }
        assert!(Instant::now() < deadline, "{old_id} not destroyed: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    delete(&lab, &format!("/v1/apps/{CP_APP}/volumes/{old_volume}")).await;
    // The survivors elect a leader again if ctrl-1 led; until then their members do not
    // answer quorum reads and replace would (rightly) refuse.
    status_until(&env, &mut t, &lab, dir, "survivors healthy", |r| {
        ["ctrl-0", "ctrl-2"]
            .iter()
            .all(|n| status_node(r, n).is_some_and(|n| n["member"]["healthy"] == true))
    })
    .await;

    // The dry run shows the checks and the steps and changes nothing.
    let before = lab.mutations().await;
    let out = env
        .fks(&mut t, &["server", "replace", "ctrl-1", dir, "--dry-run"])
        .await;
    assert_ok("server replace --dry-run", &out, &lab);
    let plan = text(&out.stdout);
    for want in [
        "dry run: nothing was changed",
        "ctrl-1: machine gone",
        &format!("({old_id}.vm.{CP_APP}.internal-"),
        "quorum after the removal: 2 of 2 voting members healthy, 2 needed: ok",
        &format!("the new server joins ctrl-0 (machine {ctrl0_id})"),
        "remove etcd member",
        &format!("joins {ctrl0_id}"),
        "is a healthy voter",
    ] {
        assert!(plan.contains(want), "missing {want:?}:\n{plan}");
    }
    assert_eq!(lab.mutations().await, before, "the dry run mutated");

    let started = Instant::now();
    let out = env
        .fks(
            &mut t,
            &[
                "server",
                "replace",
                "ctrl-1",
                dir,
                "--yes",
                "--timeout",
                "240",
            ],
        )
        .await;
    assert_ok("server replace ctrl-1", &out, &lab);
    eprintln!(
        "figure: server replace ctrl-1 (machine and volume gone) took {:?}",
        started.elapsed()
    );
    let said = text(&out.stdout);
    assert!(said.contains("done: ctrl-1: remove etcd member"), "{said}");
    assert!(said.contains("ctrl-1 replaced: machine "), "{said}");

    let new = node_machine(&lab, CP_APP, "ctrl-1").await;
    let new_id = new["id"].as_str().expect("id").to_string();
    assert_ne!(new_id, old_id);
    // The progress lines name the new machine, not the step that made it.
    assert!(
        said.contains(&format!("machine {new_id} ")) && !said.contains("<made by"),
        "{said}"
    );
    // It joined the survivor ctrl-0: never cluster-init.
    assert_eq!(
        new["config"]["env"]["FKS_BOOTSTRAP_MACHINE_ID"],
        ctrl0_id.as_str()
    );
    assert_eq!(new["config"]["env"]["FKS_BOOTSTRAP_NODE_ID"], "0");

    let report = status_until(&env, &mut t, &lab, dir, "3 healthy servers", |r| {
        r["healthy"] == true
    })
    .await;
    let servers = report["nodes"].as_array().expect("nodes");
    assert_eq!(servers.len(), 3, "{report:#}");
    for s in servers {
        assert_eq!(s["ready"], "True", "{s:#}");
        assert_eq!(s["member"]["healthy"], true, "{s:#}");
        assert_eq!(s["member"]["learner"], false, "{s:#}");
    }
    assert_eq!(report["orphan_members"], serde_json::json!([]));
    assert_eq!(report["orphan_nodes"], serde_json::json!([]));
    // One cluster: the new server's own etcd lists all three members.
    let v = exec(
        &lab,
        &new_id,
        &["fks-bootstrap", "node", "etcd", "members", "--json"],
    )
    .await;
    assert_eq!(v["exit_code"], 0, "{v}");
    let members: Value =
        serde_json::from_str(v["stdout"].as_str().unwrap_or("")).expect("members JSON");
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(3),
        "{members:#}"
    );
    // Three distinct zones.
    let zones = server_zones(&lab).await;
    assert_eq!(zones.len(), 3, "{zones:?}");
    // The data written before, read through the new server.
    let v = exec(
        &lab,
        &new_id,
        &[
            "k3s",
            "kubectl",
            "get",
            "node",
            &ctrl0_k8s,
            "-o",
            "jsonpath={.metadata.labels.writtenbefore}",
        ],
    )
    .await;
    assert_eq!(v["exit_code"], 0, "{v}");
    assert_eq!(
        v["stdout"].as_str().map(str::trim),
        Some(old_id.as_str()),
        "{v}"
    );

    eprintln!("server replace ctrl-1 printed:\n{said}");

    // A running server, machine and volume still there, is replaced the same way: its machine
    // destroyed first, its member removed, its volume deleted.
    let old2 = node_machine(&lab, CP_APP, "ctrl-2").await;
    let old2_id = old2["id"].as_str().expect("id").to_string();
    let old2_volume = old2["config"]["mounts"][0]["volume"]
        .as_str()
        .expect("volume")
        .to_string();
    let started = Instant::now();
    let out = env
        .fks(
            &mut t,
            &[
                "server",
                "replace",
                "ctrl-2",
                dir,
                "--yes",
                "--timeout",
                "240",
            ],
        )
        .await;
    assert_ok("server replace ctrl-2 (running)", &out, &lab);
    eprintln!(
        "figure: server replace ctrl-2 (running machine and volume) took {:?}",
        started.elapsed()
    );
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!(
            "done: destroy machine {old2_id} (ctrl-2) in app {CP_APP}"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("done: delete volume {old2_volume} ")),
        "{said}"
    );
    let (status, m) = lab
        .get(&format!("/v1/apps/{CP_APP}/machines/{old2_id}"))
        .await;
    assert!(status == 404 || m["state"] == "destroyed", "{status} {m}");
    let (status, v) = lab
        .get(&format!("/v1/apps/{CP_APP}/volumes/{old2_volume}"))
        .await;
    assert!(
        status == 404 || v["state"] == "destroyed" || v["state"] == "pending_destroy",
        "{status} {v}"
    );
    let ctrl2 = node_machine(&lab, CP_APP, "ctrl-2").await;
    assert_ne!(ctrl2["id"], old2["id"]);
    let report = status_until(&env, &mut t, &lab, dir, "3 healthy servers again", |r| {
        r["healthy"] == true
    })
    .await;
    assert_eq!(
        report["nodes"].as_array().map(Vec::len),
        Some(3),
        "{report:#}"
    );
    let v = exec(
        &lab,
        ctrl2["id"].as_str().expect("id"),
        &[
            "k3s",
            "kubectl",
            "get",
            "node",
            &ctrl0_k8s,
            "-o",
            "jsonpath={.metadata.labels.writtenbefore}",
        ],
    )
    .await;
    assert_eq!(
        v["stdout"].as_str().map(str::trim),
        Some(old_id.as_str()),
        "{v}"
    );

    // Quorum refusal: ctrl-0 and ctrl-2 stopped; replacing ctrl-2 would leave ctrl-0 and
    // ctrl-1 as voters with (at most) one of them healthy.
    machine_action(&lab, &ctrl0, "stop", "stopped").await;
    machine_action(&lab, &ctrl2, "stop", "stopped").await;
    let before = lab.mutations().await;
    let out = env
        .fks(&mut t, &["server", "replace", "ctrl-2", dir, "--yes"])
        .await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing to replace ctrl-2 in app lab-cp"),
        "{err}"
    );
    assert!(err.contains("(nothing was changed)"), "{err}");
    assert_eq!(lab.mutations().await, before, "a refused replace mutated");
    eprintln!("refusal: {err}");

    let out = env.fks(&mut t, &["destroy", dir, "--yes"]).await;
    assert_ok("destroy --yes", &out, &lab);
    lab.stop().await;
}

/// Drops IMAGE from the cluster config in `cluster_dir` and names the lab's Debian base as
/// NODE_IMAGE_BASE, so that from now on `-c`/`upgrade` build the cluster's own node image (for
/// its K3S_VERSION, on that base); returns the path of `k3s-standin-next`, the stand-in of the
/// next minor to build it with.
async fn own_image_from_now_on(lab: &GuestLab, cluster_dir: &Path) -> String {
    let config_path = cluster_dir.join("config");
    let config = std::fs::read_to_string(&config_path).expect("config");
    let registry = lab.registry.host();
    let base =
        tokio::task::spawn_blocking(move || common::images::push_debian_base(&registry, TOKEN))
            .await
            .expect("base image thread");
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("IMAGE="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config_path, format!("{config}NODE_IMAGE_BASE={base}\n"))
        .expect("write config");
    let next_standin = tokio::task::spawn_blocking(common::k3s_standin_next_binary)
        .await
        .expect("build thread");
    next_standin.to_str().expect("utf-8 path").to_string()
}

/// `upgrade DIR [VERSION ARGS] --k3s-source file STANDIN --k3s-standin` with the guest tests'
/// kernel allowance, timeout and `--yes`.
fn upgrade_args<'a>(dir: &'a str, standin: &'a str, version: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["upgrade", dir];
    args.extend(version);
    args.extend([
        "--k3s-source",
        "file",
        standin,
        "--k3s-standin",
        "--allow-missing-kernel-options",
        "--timeout",
        "180",
        "--yes",
    ]);
    args
}

/// One read of the probe: when, and how many servers kubectl showed Ready (None: the API did
/// not answer).
struct Probe {
    at: Instant,
    servers_ready: Option<usize>,
    /// The nodes this read showed unschedulable (cordoned).
    cordoned: Vec<String>,
    /// kubectl's first stderr line when it got no answer.
    error: String,
}

/// Issue 11 item 2 on guests: `upgrade --k3s-version` (one minor up) on 3 servers and 3
/// workers. The cluster starts on the pinned v1.33.7 stand-in image; the config then drops
/// IMAGE, so `upgrade` builds and pushes the node image of the new K3S_VERSION itself (from
/// `k3s-standin-next`, the stand-in reporting v1.34.1) and rolls it out: servers one at a time,
/// then the workers, while a probe reads the node list every 200 ms through the servers'
/// shared name. At no answered read are fewer than 2 servers Ready; every machine runs the new
/// image and every node reports kubelet v1.34.1 at the end (through kubectl and `status`); a
/// second `upgrade` changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_rolls_servers_one_at_a_time_then_workers_on_guests() {
    if !have_root("upgrade on guests") {
        return;
    }
    const NET: Net = Net {
        bridge: "fkse2u",
        org: "e2euorg",
        v4: 156,
    };
    const NEXT: &str = "v1.34.1+k3s1";
    let lab = GuestLab::start_with(&NET, "").await;
    let cluster_dir = cluster_copy(&lab, NET.org);
    set_group_size(&cluster_dir, 3);
    let dir = cluster_dir.to_str().expect("utf-8 path");
    let env = Env::new(&lab).await;
    let mut t = Transcript::default();
    let (kubeconfig, hosts) = six_ready_nodes(&env, &mut t, &lab, dir).await;
    let mut before: BTreeMap<String, String> = BTreeMap::new();
    for app in [CP_APP, GROUP_APP] {
        for m in lab.machines(app).await {
            before.insert(
                m["id"].as_str().expect("id").to_string(),
                m["instance_id"].as_str().expect("instance_id").to_string(),
            );
        }
    }
    assert_eq!(before.len(), 6);

    // The probe: `kubectl get nodes` every 200 ms until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // It resolves the servers' shared name through the lab's DNS, as a client on Fly's
    // private network would (see `kubectl_dns`).
    let names = DnsNames::new(&lab, &NET);
    let probe = {
        let (stop, kubeconfig) = (stop.clone(), kubeconfig.clone());
        tokio::spawn(async move {
            let mut reads = Vec::new();
            let mut t = Transcript::default();
            let server_suffix = format!(".vm.{CP_APP}.internal");
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = kubectl_dns(
                    &mut t,
                    &kubeconfig,
                    &names,
                    &["get", "nodes", "-o", "json", "--request-timeout=2s"],
                )
                .await;
                t.outputs.clear();
                let nodes = (out.status.code() == Some(0)).then(|| parse_nodes(&text(&out.stdout)));
                let servers_ready = nodes.as_ref().map(|nodes| {
                    nodes
                        .iter()
                        .filter(|n| n.name.ends_with(&server_suffix) && n.ready)
                        .count()
                });
                let cordoned = nodes
                    .iter()
                    .flatten()
                    .filter(|n| n.unschedulable)
                    .map(|n| n.name.clone())
                    .collect();
                let error = text(&out.stderr).lines().next().unwrap_or("").to_string();
                reads.push(Probe {
                    at: Instant::now(),
                    servers_ready,
                    cordoned,
                    error,
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            reads
        })
    };

    let next_standin = own_image_from_now_on(&lab, &cluster_dir).await;
    // Both upgrades give the same build inputs (a re-run finds the image it built by digest).
    let upgrade = |version: &[&'static str]| upgrade_args(dir, &next_standin, version);
    let started = Instant::now();
    let out = env.fks(&mut t, &upgrade(&["--k3s-version", NEXT])).await;
    let wall = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = probe.await.expect("probe task");
    assert_ok("upgrade", &out, &lab);
    let stderr = text(&out.stderr);

    let low: Vec<usize> = reads.iter().filter_map(|r| r.servers_ready).collect();
    assert!(!low.is_empty(), "the probe never got an answer");
    assert!(
        low.iter().all(|&n| n >= 2),
        "fewer than 2 servers Ready during the upgrade: {low:?}"
    );
    let mut longest = Duration::ZERO;
    let mut last_ok = started;
    for r in &reads {
        if r.servers_ready.is_some() {
            longest = longest.max(r.at.saturating_duration_since(last_ok));
            last_ok = r.at;
        }
    }
    eprintln!(
        "figure: upgrade of 3 servers + 3 workers took {wall:?}; probe: {} reads, {} unanswered, longest gap between answers {longest:?}",
        reads.len(),
        reads.iter().filter(|r| r.servers_ready.is_none()).count()
    );
    for r in reads.iter().filter(|r| r.servers_ready.is_none()) {
        eprintln!(
            "figure:   unanswered at {:.1}s into the upgrade: {}",
            r.at.saturating_duration_since(started).as_secs_f64(),
            r.error
        );
    }
    let updated: Vec<&str> = stderr.lines().filter(|l| l.contains(" updated ")).collect();
    eprintln!("figure: per-node update finish times (each converge from its own start):");
    for l in &updated {
        eprintln!("figure:   {l}");
    }
    assert_eq!(
        updated.len(),
        6,
        "one progress line per node:
{stderr}"
    );

    // Every machine was rebooted onto a config saying NEXT, and is Ready again.
    for app in [CP_APP, GROUP_APP] {
        for v in lab.machines(app).await {
            let id = v["id"].as_str().expect("id").to_string();
            assert_ne!(
                before.get(&id).map(String::as_str),
                v["instance_id"].as_str(),
                "{app}/{id} was not updated"
            );
            let m: fks_bootstrap::fly::types::Machine =
                serde_json::from_value(v).expect("a machine");
            assert_eq!(
                fks_bootstrap::plan::skew::running_version(&m).as_deref(),
                Some(NEXT),
                "{app}/{id}"
            );
        }
    }
    // The new image, built by the upgrade and pinned by digest, on every machine.
    let mut images = BTreeSet::new();
    for app in [CP_APP, GROUP_APP] {
        for m in lab.machines(app).await {
            images.insert(m["config"]["image"].as_str().expect("image").to_string());
        }
    }
    assert_eq!(images.len(), 1, "{images:?}");
    let image = images.first().expect("one image");
    assert!(
        image.starts_with(&format!("{}/lab-cp", lab.registry.host()))
            && image.contains("@sha256:")
            && *image != lab.image,
        "{image} (before: {})",
        lab.image
    );
    // Every node ends on the new Kubernetes version, as kubectl and `status` see it.
    // k3s-standin-next's version (`k3s_standin::log::NEXT_VERSION`): NEXT's Kubernetes version.
    let want = "v1.34.1+k3s-standin";
    nodes_until(
        &mut t,
        &lab,
        &kubeconfig,
        &hosts,
        "all 6 Ready on the new version after the upgrade",
        |n| n.len() == 6 && n.iter().all(|n| n.ready && n.kubelet == want),
    )
    .await;
    // Nodes were cordoned (servers) or drained (workers) for their update, and every one is
    // schedulable again, with no cordon mark left on its machine.
    let seen: BTreeSet<&String> = reads.iter().flat_map(|r| &r.cordoned).collect();
    eprintln!("figure: nodes the probe saw cordoned during the upgrade: {seen:?}");
    assert!(!seen.is_empty(), "the probe never saw a node cordoned");
    let out = kubectl(&mut t, &kubeconfig, &hosts, &["get", "nodes", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let nodes = parse_nodes(&text(&out.stdout));
    assert!(nodes.iter().all(|n| !n.unschedulable), "{nodes:#?}");
    for app in [CP_APP, GROUP_APP] {
        for m in lab.machines(app).await {
            assert!(
                m["config"]["metadata"]["fks_cordoned"].is_null(),
                "{app}: {m}"
            );
        }
    }
    let out = env.fks(&mut t, &["status", dir, "--json"]).await;
    assert_ok("status --json", &out, &lab);
    let report: Value = serde_json::from_slice(&out.stdout).expect("status json");
    let versions: Vec<&str> = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["k3s_version"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(versions, vec![want; 6], "{report:#}");

    let before = lab.mutations().await;
    // The same build inputs (a re-run must find the image it built, by its digest).
    let out = env.fks(&mut t, &upgrade(&[])).await;
    assert_ok("upgrade again", &out, &lab);
    assert_eq!(lab.mutations().await, before, "a converged upgrade mutated");

    let out = env.fks(&mut t, &["destroy", dir, "--yes"]).await;
    assert_ok("destroy --yes", &out, &lab);
    lab.stop().await;
}

/// The seed of the day-2 kill points: `FKS_KILL_SEED` when set (to replay a failure), else
/// drawn from the clock.
fn kill_seed() -> u64 {
    match std::env::var("FKS_KILL_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FKS_KILL_SEED={s:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// Kill points from a seed: splitmix64, so a seed gives the same points on every machine.
struct KillPoints(u64);

impl KillPoints {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A kill point in `1..=max`.
    fn pick(&mut self, max: u64) -> u64 {
        1 + self.next() % max
    }
}

/// Runs `args`, SIGKILLed after a seeded number of mutations in `1..=max` (printed), then
/// runs `args` again to completion.
async fn killed_then_rerun(
    env: &Env,
    lab: &GuestLab,
    t: &mut Transcript,
    points: &mut KillPoints,
    what: &str,
    args: &[&str],
    max: u64,
) {
    let n = points.pick(max);
    eprintln!(
        "figure: kill point: {what} SIGKILLed after {n} of at least {} mutations",
        max + 1
    );
    assert!(
        kill_after_mutations(env, lab, args, n).await,
        "{what} ended before {n} mutations"
    );
    let started = Instant::now();
    let out = env.fks(t, args).await;
    assert_ok(&format!("{what} after the kill at {n}"), &out, lab);
    eprintln!(
        "figure: {what} re-run after the kill at {n} took {:?}",
        started.elapsed()
    );
    // Which way a replace killed right after creating the new server went: whether that
    // server added its etcd member before the re-run read the list or only after (the re-run
    // then removes it once the machine is destroyed, `Action::RemoveMembersOf`).
    for line in text(&out.stderr)
        .lines()
        .filter(|l| l.contains("an etcd member of a destroyed machine is still listed"))
    {
        eprintln!("figure:   the re-run said: {line}");
    }
}

/// After `nodegroup remove`: the group's app, each of its `machines` and `volumes` (as listed
/// before) answer 404, and no machine's netns is left on `net`'s bridge.
async fn assert_group_gone(lab: &GuestLab, net: &Net, machines: &[Value], volumes: &Value) {
    let (status, _) = lab.get(&format!("/v1/apps/{GROUP_APP}")).await;
    assert_eq!(status, 404, "the group's app is still there");
    for m in machines {
        let id = m["id"].as_str().expect("id");
        let (status, _) = lab
            .get(&format!("/v1/apps/{GROUP_APP}/machines/{id}"))
            .await;
        assert_eq!(status, 404, "machine {id}");
        assert!(netns_with_prefix(&format!("{}-{id}", net.bridge)).is_empty());
    }
    for v in volumes.as_array().expect("volumes") {
        let id = v["id"].as_str().expect("id");
        let (status, _) = lab.get(&format!("/v1/apps/{GROUP_APP}/volumes/{id}")).await;
        assert_eq!(status, 404, "volume {id}");
    }
}

/// 0 duplicates and 0 orphans in `app`: `n` live machines, one per `fks_node`, and exactly
/// `n` live volumes, each attached to one of them.
async fn assert_one_machine_and_volume_per_node(lab: &GuestLab, app: &str, n: usize) {
    let ms = lab.machines(app).await;
    let nodes: BTreeSet<&str> = ms
        .iter()
        .filter_map(|m| m["config"]["metadata"]["fks_node"].as_str())
        .collect();
    assert_eq!((ms.len(), nodes.len()), (n, n), "{app}: {ms:#?}");
    let ids: BTreeSet<&str> = ms.iter().filter_map(|m| m["id"].as_str()).collect();
    let (status, vols) = lab.get(&format!("/v1/apps/{app}/volumes")).await;
    assert_eq!(status, 200, "{vols}");
    let vols: Vec<&Value> = vols
        .as_array()
        .expect("volume list")
        .iter()
        .filter(|v| !matches!(v["state"].as_str(), Some("destroyed" | "pending_destroy")))
        .collect();
    assert_eq!(vols.len(), n, "{app}: orphan volumes? {vols:#?}");
    for v in vols {
        let owner = v["attached_machine_id"].as_str().unwrap_or("");
        assert!(ids.contains(owner), "{app}: volume {} orphaned", v["id"]);
    }
}

/// `status --json` healthy (every node Ready, no orphan Node or member), with the 3 servers'
/// etcd members healthy voters.
async fn assert_status_healthy(env: &Env, t: &mut Transcript, lab: &GuestLab, dir: &str) {
    let report = status_until(env, t, lab, dir, "status healthy", |r| r["healthy"] == true).await;
    let servers: Vec<&Value> = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["role"] == "server")
        .collect();
    assert_eq!(servers.len(), 3, "{report:#}");
    for s in servers {
        assert_eq!(s["member"]["healthy"], true, "{s:#}");
        assert_eq!(s["member"]["learner"], false, "{s:#}");
    }
}

/// `args` again changes nothing on the platform.
async fn assert_rerun_mutates_nothing(
    env: &Env,
    t: &mut Transcript,
    lab: &GuestLab,
    what: &str,
    args: &[&str],
) {
    let before = lab.mutations().await;
    let out = env.fks(t, args).await;
    assert_ok(what, &out, lab);
    assert_eq!(
        lab.mutations().await,
        before,
        "{what}: a converged re-run mutated"
    );
}

/// Issue 11 "Killed mid-way" on guests: on one cluster (3 servers, a node group of 3), each
/// day-2 operation is SIGKILLed once after a seeded number of mutations, then run again:
/// `upgrade` (every machine's config changes: the nodes' cluster config file carries
/// K3S_VERSION), scale down 3 -> 2, `server replace ctrl-1` of a running server, and
/// `nodegroup remove`. After each re-run: one machine per node and every volume attached to
/// one (0 duplicates, 0 orphans), every k3s node Ready through kubectl, `status` healthy with
/// 3 healthy voting members, and a further run changes nothing; after the removal nothing of
/// the group is left. The seed is printed; `FKS_KILL_SEED=<seed>` replays its kill points.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn day2_operations_killed_mid_way_converge_on_the_next_run_on_guests() {
    if !have_root("day-2 operations killed mid-way on guests") {
        return;
    }
    const NET: Net = Net {
        bridge: "fkse2k",
        org: "e2ekorg",
        v4: 162,
    };
    const NEXT: &str = "v1.34.1+k3s1";
    // Kill points: below the fewest mutations each operation makes uninterrupted, so the kill
    // lands before it ends. `upgrade`: a lease, an update and a release for each of the 6
    // machines (18; lease refreshes add more). Scale down: the machine destroy and the volume
    // delete (2). Replace of a running server: destroy, old volume delete, new volume, new
    // machine, ready mark (5). Group removal of 2 workers: 2 destroys, 2 volume deletes, the
    // app's secrets and the app (6 or more).
    const UPGRADE_KILLS: u64 = 17;
    const SCALE_DOWN_KILLS: u64 = 1;
    const REPLACE_KILLS: u64 = 4;
    const REMOVE_KILLS: u64 = 5;
    let wall = Instant::now();
    let seed = kill_seed();
    eprintln!("seed: FKS_KILL_SEED={seed}");
    let mut points = KillPoints(seed);

    let lab = GuestLab::start_with(&NET, "").await;
    let cluster_dir = cluster_copy(&lab, NET.org);
    set_group_size(&cluster_dir, 3);
    let dir = cluster_dir.to_str().expect("utf-8 path");
    let env = Env::new(&lab).await;
    let mut t = Transcript::default();
    let allow = "--allow-missing-kernel-options";
    let add = ["-a", GROUP, dir, allow, "--timeout", "180", "--yes"];
    let (kubeconfig, hosts) = six_ready_nodes(&env, &mut t, &lab, dir).await;

    // 1. upgrade: every machine updated under a lease, onto the image the upgrade builds for
    // NEXT (the nodes wait for their kubelet to report it).
    let next_standin = own_image_from_now_on(&lab, &cluster_dir).await;
    let upgrade = upgrade_args(dir, &next_standin, &["--k3s-version", NEXT]);
    killed_then_rerun(
        &env,
        &lab,
        &mut t,
        &mut points,
        "upgrade",
        &upgrade,
        UPGRADE_KILLS,
    )
    .await;
    for (app, n) in [(CP_APP, 3), (GROUP_APP, 3)] {
        assert_one_machine_and_volume_per_node(&lab, app, n).await;
        for v in lab.machines(app).await {
            let m: fks_bootstrap::fly::types::Machine =
                serde_json::from_value(v).expect("a machine");
            assert_eq!(
                fks_bootstrap::plan::skew::running_version(&m).as_deref(),
                Some(NEXT),
                "{app}/{}",
                m.id
            );
            assert_eq!(m.state.to_string(), "started", "{app}/{}", m.id);
        }
    }
    nodes_until(
        &mut t,
        &lab,
        &kubeconfig,
        &hosts,
        "all 6 Ready after the upgrade",
        |n| n.len() == 6 && n.iter().all(|n| n.ready),
    )
    .await;
    assert_status_healthy(&env, &mut t, &lab, dir).await;
    assert_rerun_mutates_nothing(&env, &mut t, &lab, "upgrade again", &upgrade).await;

    // 2. scale down 3 -> 2.
    let doomed = node_machine(&lab, GROUP_APP, &format!("worker-ng-{GROUP}-2")).await;
    let doomed_id = doomed["id"].as_str().expect("id").to_string();
    set_group_size(&cluster_dir, 2);
    killed_then_rerun(
        &env,
        &lab,
        &mut t,
        &mut points,
        "scale down 3 -> 2",
        &add,
        SCALE_DOWN_KILLS,
    )
    .await;
    assert_one_machine_and_volume_per_node(&lab, GROUP_APP, 2).await;
    let doomed_k8s = format!("{doomed_id}.vm.{GROUP_APP}.internal");
    let nodes = nodes_until(
        &mut t,
        &lab,
        &kubeconfig,
        &hosts,
        "5 nodes Ready, worker 2's gone",
        |n| n.len() == 5 && n.iter().all(|n| n.ready),
    )
    .await;
    assert!(nodes.iter().all(|n| n.name != doomed_k8s), "{nodes:#?}");
    assert!(
        netns_with_prefix(&format!("{}-{doomed_id}", NET.bridge)).is_empty(),
        "the removed worker's guest is still there"
    );
    assert_status_healthy(&env, &mut t, &lab, dir).await;
    assert_rerun_mutates_nothing(&env, &mut t, &lab, "-a 0 at 2", &add).await;

    // 3. server replace of the running ctrl-1.
    let old1 = node_machine(&lab, CP_APP, "ctrl-1").await;
    let replace = [
        "server",
        "replace",
        "ctrl-1",
        dir,
        "--yes",
        "--timeout",
        "240",
    ];
    killed_then_rerun(
        &env,
        &lab,
        &mut t,
        &mut points,
        "server replace ctrl-1",
        &replace,
        REPLACE_KILLS,
    )
    .await;
    let new1 = node_machine(&lab, CP_APP, "ctrl-1").await;
    assert_ne!(new1["id"], old1["id"]);
    assert_one_machine_and_volume_per_node(&lab, CP_APP, 3).await;
    assert_one_machine_and_volume_per_node(&lab, GROUP_APP, 2).await;
    let hosts = hosts_file(&lab, &lab.machines(CP_APP).await);
    nodes_until(
        &mut t,
        &lab,
        &kubeconfig,
        &hosts,
        "5 nodes Ready after the replace",
        |n| n.len() == 5 && n.iter().all(|n| n.ready),
    )
    .await;
    assert_status_healthy(&env, &mut t, &lab, dir).await;
    // No IMAGE since the upgrade: `-c` builds the cluster's image from the same inputs.
    let create = [
        "-c",
        dir,
        "--k3s-source",
        "file",
        next_standin.as_str(),
        "--k3s-standin",
        allow,
        "--timeout",
        "180",
    ];
    assert_rerun_mutates_nothing(&env, &mut t, &lab, "-c after the replace", &create).await;
    assert_rerun_mutates_nothing(&env, &mut t, &lab, "-a after the replace", &add).await;

    // 4. nodegroup remove.
    let machines = lab.machines(GROUP_APP).await;
    let (_, volumes) = lab.get(&format!("/v1/apps/{GROUP_APP}/volumes")).await;
    let remove = ["nodegroup", "remove", GROUP, dir, "--yes"];
    killed_then_rerun(
        &env,
        &lab,
        &mut t,
        &mut points,
        "nodegroup remove",
        &remove,
        REMOVE_KILLS,
    )
    .await;
    assert_group_gone(&lab, &NET, &machines, &volumes).await;
    assert_one_machine_and_volume_per_node(&lab, CP_APP, 3).await;
    nodes_until(
        &mut t,
        &lab,
        &kubeconfig,
        &hosts,
        "only the 3 servers left, Ready",
        |n| n.len() == 3 && n.iter().all(|n| n.ready),
    )
    .await;
    assert_status_healthy(&env, &mut t, &lab, dir).await;
    assert_rerun_mutates_nothing(&env, &mut t, &lab, "nodegroup remove again", &remove).await;

    let out = env.fks(&mut t, &["destroy", dir, "--yes"]).await;
    assert_ok("destroy --yes", &out, &lab);
    lab.stop().await;
    eprintln!(
        "figure: day-2 kill test (seed {seed}) took {:?}",
        wall.elapsed()
    );
}
