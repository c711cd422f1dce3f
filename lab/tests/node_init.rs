//! `fks-bootstrap node init` as a real lab guest's init (root only): the k3s config is rendered
//! from the guest's own addresses at every boot, backed up when it changes and left alone when
//! not; the node's own SSH server answers on the 6PN address, port 2222 (Fly's SSH holds 22),
//! with the delivered host key, and reports the exit status of a command that PID 1's
//! supervisor reaped; k3s is restarted with a
//! backoff when it fails and its status becomes node init's on stop.
//!
//! The guest runs on the node image the product builds and pushes (`fks-bootstrap image build
//! --push`, k3s-standin as its k3s in /usr/local/bin), pulled and unpacked by the lab's
//! `rootfs` puller. `k3s` on the guest's PATH is `tests/fixtures/k3s-test-fixture.sh`, a test
//! fixture (not k3s, not the k3s-standin) delivered as a machine file in /usr/local/sbin, which
//! comes first on the image's PATH; it records its argv and config on the volume and keeps
//! running.
//! Each test has its own bridge (`fkst4<N>`), 6PN prefix, IPv4 network and temp dir. Without
//! root a test prints why and returns, except under `CI=true` where it fails.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fks_lab::guest::{
    fly_runtime_env, BridgeConfig, Guest, GuestFile, GuestImage, GuestSpec, RuntimeFacts, Signal,
    VolumeMount,
};

mod common;
use common::{have_root, repo_root};

const TOKEN: &str = "node-init-test-token";

/// The node image's unpacked root and its pinned reference: built and pushed once per test
/// process to a registry of its own, pulled into a cache under target/ that later runs reuse.
fn node_image() -> &'static (PathBuf, String) {
    static IMAGE: std::sync::OnceLock<(PathBuf, String)> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let state = tempfile::tempdir().expect("registry state");
            let registry = fks_lab::registry::Registry::start(state.path(), TOKEN)
                .await
                .expect("registry");
            let host = registry.host();
            let pinned = tokio::task::spawn_blocking(move || common::push_node_image(&host, TOKEN))
                .await
                .expect("node image thread");
            let cache = repo_root().join("target/lab-test-scratch/node-init-rootfs");
            std::fs::create_dir_all(&cache).expect("cache dir");
            // nextest runs each test in a process of its own, and opening the cache empties its
            // scratch space: one process at a time pulls into it.
            let lock = std::fs::File::create(cache.with_extension("lock")).expect("lock file");
            let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .expect("lock the rootfs cache");
            let puller = fks_lab::rootfs::pull::Puller::new(
                &cache,
                fks_lab::rootfs::pull::Registry::lab(registry.host(), TOKEN),
            )
            .expect("puller");
            let (image, _) = puller.pull(&pinned).await.expect("pull the node image");
            registry.stop().await;
            (image.rootfs, pinned)
        })
    })
}

const WAIT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// One test's network, image directory, volume and logs; removes its bridge when dropped.
struct Lab {
    n: u8,
    bridge: BridgeConfig,
    dir: tempfile::TempDir,
    volume: PathBuf,
}

impl Lab {
    fn new(n: u8) -> Lab {
        let bridge = BridgeConfig {
            name: format!("fkst{n}"),
            gateway6: Ipv6Addr::new(0xfdaa, 0, u16::from(n), 0, 0, 0, 0, 1),
            prefix6: 48,
            dns6: Ipv6Addr::new(0xfdaa, 0, u16::from(n), 0, 0, 0, 0, 3),
            gateway4: Ipv4Addr::new(172, 30, n, 1),
            prefix4: 24,
        };
        fks_lab::guest::remove_bridge(&bridge.name).expect("removing stale bridge");
        let dir = tempfile::tempdir().expect("temp dir");
        let volume = dir.path().join("volume");
        std::fs::create_dir_all(&volume).expect("volume dir");
        Lab {
            n,
            bridge,
            dir,
            volume,
        }
    }

    fn machine_id(&self) -> String {
        format!("n{}m1", self.n)
    }

    fn ip6(&self, k: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfdaa, 0, u16::from(self.n), 0xa7b, 0, 0, k, 2)
    }

    fn ip4(&self, k: u8) -> Ipv4Addr {
        Ipv4Addr::new(172, 30, self.n, 10 + k)
    }

    fn log_path(&self, boot: u32) -> PathBuf {
        self.dir.path().join(format!("logs/boot-{boot}.log"))
    }

    /// Machine ctrl-0 of cluster `lab` booting `node init` with address index `k`.
    fn spec(
        &self,
        boot: u32,
        k: u8,
        files: Vec<GuestFile>,
        extra_env: &[(&str, &str)],
    ) -> GuestSpec {
        let ip6 = self.ip6(u16::from(k));
        let machine_id = self.machine_id();
        let mut env: BTreeMap<String, String> = fly_runtime_env(&RuntimeFacts {
            app: "lab-cp",
            machine_id: &machine_id,
            region: "sjc",
            private_ip: ip6,
            image_ref: &node_image().1,
            machine_version: "01HEPA330HZ37A78TK080NAK1M",
            memory_mb: 2048,
            public_ip: None,
            process_group: None,
            primary_region: Some("sjc"),
        });
        env.insert("FKS_NODE_NAME".into(), "ctrl-0".into());
        env.insert("FKS_ZONE".into(), "z41a".into());
        for (k, v) in extra_env {
            env.insert((*k).into(), (*v).into());
        }
        let config = std::fs::read(repo_root().join("clusters/lab/config")).expect("lab config");
        let fixture = std::fs::read(repo_root().join("lab/tests/fixtures/k3s-test-fixture.sh"))
            .expect("k3s test fixture");
        let mut all_files = vec![
            GuestFile {
                guest_path: "/etc/fks/cluster/config".into(),
                contents: config,
                mode: 0o644,
            },
            GuestFile {
                guest_path: "/usr/local/sbin/k3s".into(),
                contents: fixture,
                mode: 0o755,
            },
        ];
        all_files.extend(files);
        GuestSpec {
            machine_id,
            app: "lab-cp".into(),
            private_ip: ip6,
            ipv4: self.ip4(k),
            bridge: self.bridge.clone(),
            volume: Some(VolumeMount {
                host_dir: self.volume.clone(),
                mount_path: "/data".into(),
            }),
            hidden_dirs: Vec::new(),
            files: all_files,
            env,
            init: vec![
                "fks-bootstrap".into(),
                "node".into(),
                "init".into(),
                // This build machine's kernel lacks some options k3s wants (no WIREGUARD, ...).
                "--allow-missing-kernel-options".into(),
            ],
            path_dirs: Vec::new(),
            image: Some(GuestImage {
                rootfs: node_image().0.clone(),
                working_dir: None,
                ids: None,
            }),
            root_dir: self.dir.path().join(format!("guests/boot-{boot}")),
            log_path: self.log_path(boot),
        }
    }

    fn fixture(&self, name: &str) -> PathBuf {
        self.volume.join("fixture").join(name)
    }

    /// Waits until the k3s fixture has been started `n` times; returns its argv of start `n`.
    fn wait_for_start(&self, n: u32, log: &Path) -> Vec<String> {
        let path = self.fixture(&format!("argv.{n}"));
        let deadline = Instant::now() + WAIT;
        while !path.is_file() {
            assert!(
                Instant::now() < deadline,
                "k3s fixture start {n} did not happen within {WAIT:?}; node init log:\n{}",
                read(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        read(&path).lines().map(str::to_string).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = fks_lab::guest::remove_bridge(&self.bridge.name);
    }
}

/// A started guest that is destroyed when the test ends, also when an assertion fails (a
/// guest left running would keep its network namespace and processes).
struct Running(Guest);

impl Running {
    fn start(spec: GuestSpec) -> Running {
        Running(Guest::start(spec).expect("start guest"))
    }
}

impl std::ops::Deref for Running {
    type Target = Guest;
    fn deref(&self) -> &Guest {
        &self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.destroy();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{}: {e}>", path.display()))
}

fn exec(g: &Guest, argv: &[&str]) -> String {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let out = g
        .exec(&argv, None, Duration::from_secs(20))
        .expect("exec in guest");
    assert_eq!(
        out.exit_code,
        0,
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The node-ip list of a rendered k3s config.
fn node_ips(config: &str) -> Vec<String> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(config).expect("config is YAML");
    doc["node-ip"]
        .as_sequence()
        .expect("node-ip is a list")
        .iter()
        .map(|v| v.as_str().expect("node-ip item is a string").to_string())
        .collect()
}

fn stop(g: &Guest) -> std::process::ExitStatus {
    let status = g.stop(Signal::SIGTERM, STOP_TIMEOUT).expect("stop guest");
    g.destroy().expect("destroy guest");
    status
}

/// A distinctive argument, so the orphan can be found among the host's processes (the lab has
/// no PID namespace).
const ORPHAN_SLEEP: &str = "100042";

/// The pid of the one process whose /proc/PID/cmdline starts with `cmdline` (NUL-separated).
fn find_process(cmdline: &str) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Vec<i32> = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.starts_with(cmdline.as_bytes()))
                    .unwrap_or(false)
            })
            .collect();
        match found[..] {
            [pid] => return pid,
            [] if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => panic!("expected one process {cmdline:?}, found {found:?}"),
        }
    }
}

/// PPid of a process, from /proc/PID/status.
fn parent_of(pid: i32) -> Option<i32> {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn ssh_keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "node-init-test",
            "-f",
        ])
        .arg(path)
        .status()
        .expect("running ssh-keygen (openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
}

#[test]
fn node_init_renders_from_own_addresses_at_every_boot_and_backs_up_changes() {
    if !have_root("node init guest tests") {
        return;
    }
    let lab = Lab::new(41);
    let keys = lab.dir.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    ssh_keygen(&keys.join("host"));
    ssh_keygen(&keys.join("user"));
    let files = vec![
        GuestFile {
            guest_path: "/etc/ssh/ssh_host_ed25519_key".into(),
            contents: std::fs::read(keys.join("host")).expect("host key"),
            mode: 0o600,
        },
        GuestFile {
            guest_path: "/root/.ssh/authorized_keys".into(),
            contents: std::fs::read(keys.join("user.pub")).expect("user key"),
            mode: 0o600,
        },
    ];

    let host_panic = read(Path::new("/proc/sys/kernel/panic"));
    // Boot 1: address index 1.
    let t = Instant::now();
    let g = Running::start(lab.spec(1, 1, files, &[]));
    let log1 = lab.log_path(1);
    let argv = lab.wait_for_start(1, &log1);
    // A figure, not an assertion: guest start + every node init step until k3s runs.
    eprintln!(
        "figure: guest start to k3s fixture running: {:?}",
        t.elapsed()
    );
    assert_eq!(argv, ["server", "--config", "/data/k3s/config.yaml"]);
    let config1 = read(&lab.fixture("config.1"));
    let ip6 = lab.ip6(1).to_string();
    // clusters/lab is IPv6-only (its vxlan would strand IPv4 pods on Fly's host-only IPv4), so
    // the guest's IPv4 stays out of node-ip.
    assert_eq!(node_ips(&config1), std::slice::from_ref(&ip6));
    // IPv6-only: k3s writes flannel's net-conf itself, so node init writes none.
    assert!(!lab.volume.join("k3s/flannel-net-conf.json").exists());
    // The 6PN address is FLY_PRIVATE_IP and really the guest's eth0 address.
    assert_eq!(exec(&g, &["printenv", "FLY_PRIVATE_IP"]).trim(), ip6);
    // Asked with the host's iproute2 in the guest's network namespace (the node image, like
    // Debian's slim base, has no `ip`).
    let ip_in_guest = |family: &str| {
        let out = Command::new("ip")
            .args(["-n", g.netns_name(), family, "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip -n");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let eth0 = ip_in_guest("-6");
    assert!(eth0.contains(&format!("inet6 {ip6}/")), "{eth0}");
    let eth0_v4 = ip_in_guest("-4");
    assert!(
        eth0_v4.contains(&format!("inet {}/", lab.ip4(1))),
        "{eth0_v4}"
    );
    assert_eq!(
        exec(&g, &["readlink", "/etc/rancher/k3s/config.yaml"]).trim(),
        "/data/k3s/config.yaml"
    );
    assert_eq!(
        exec(&g, &["cat", "/etc/machine-id"]).trim(),
        lab.machine_id()
    );
    assert_eq!(read(&lab.volume.join("k3s/config.yaml")), config1);
    let log = read(&log1);
    assert!(
        log.contains("[INFO]  k3s config: created /data/k3s/config.yaml"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "[INFO]  6PN address: {ip6} from FLY_PRIVATE_IP (agrees"
        )),
        "{log}"
    );
    assert!(
        log.contains("[WARN]  kernel: ") || log.contains("[INFO]  kernel: "),
        "{log}"
    );
    // A guest shares the host's kernel: kernel-wide sysctls are skipped, per-namespace ones set.
    assert!(
        log.contains("[INFO]  sysctl vm.overcommit_memory: skipped"),
        "{log}"
    );
    assert!(
        log.contains("[INFO]  sysctl kernel.panic: skipped"),
        "{log}"
    );
    assert!(
        log.contains("[INFO]  sysctl net.ipv6.conf.all.forwarding=1"),
        "{log}"
    );
    assert_eq!(read(Path::new("/proc/sys/kernel/panic")), host_panic);

    {
        // The node's SSH server, a task of node init, on the default SSH_PORT.
        let port = fks_bootstrap::config::DEFAULT_SSH_PORT.to_string();
        let known_hosts = keys.join("known_hosts");
        let host_pub = read(&keys.join("host.pub"));
        std::fs::write(&known_hosts, format!("[{ip6}]:{port} {host_pub}")).expect("known_hosts");
        let ssh = |command: &str| {
            Command::new("ssh")
                .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
                .args(["-o", "StrictHostKeyChecking=yes", "-o"])
                .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
                .args(["-o", "ConnectTimeout=3", "-p", &port, "-i"])
                .arg(keys.join("user"))
                .arg(format!("root@{ip6}"))
                .arg(command)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("running ssh")
        };
        let deadline = Instant::now() + WAIT;
        let out = loop {
            let out = ssh("cat /etc/machine-id");
            if out.status.success() || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            out.status.success(),
            "ssh to the node failed: {}\nnode init log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            read(&log1)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            lab.machine_id()
        );
        // node init's supervisor reaps every child; the session still gets its status.
        for _ in 0..3 {
            let out = ssh("echo done; exit 3");
            assert_eq!(
                out.status.code(),
                Some(3),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
        }
        let log = read(&log1);
        assert!(
            log.contains(&format!("[INFO]  ssh: listening on [::]:{port}")),
            "{log}"
        );
    }
    let status = stop(&g);
    // The fixture dies of the forwarded SIGTERM; node init exits with its status.
    assert_eq!(status.code(), Some(143), "log:\n{}", read(&log1));

    // Boot 2: same volume, the machine moved: a different 6PN address.
    let g = Running::start(lab.spec(2, 2, Vec::new(), &[]));
    lab.wait_for_start(2, &lab.log_path(2));
    let config2 = read(&lab.volume.join("k3s/config.yaml"));
    assert_eq!(node_ips(&config2), [lab.ip6(2).to_string()]);
    let backups: Vec<PathBuf> = std::fs::read_dir(lab.volume.join("k3s"))
        .expect("data dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(
        read(&backups[0]),
        config1,
        "the backup holds the boot-1 config"
    );
    let log = read(&lab.log_path(2));
    assert!(
        log.contains("changed; previous one kept as /data/k3s/config.yaml."),
        "{log}"
    );
    stop(&g);

    // Boot 3: same address as boot 2: the file is not touched.
    let config_path = lab.volume.join("k3s/config.yaml");
    let mtime = std::fs::metadata(&config_path)
        .expect("config")
        .modified()
        .expect("mtime");
    let g = Running::start(lab.spec(3, 2, Vec::new(), &[]));
    lab.wait_for_start(3, &lab.log_path(3));
    assert_eq!(read(&config_path), config2);
    assert_eq!(
        std::fs::metadata(&config_path)
            .expect("config")
            .modified()
            .expect("mtime"),
        mtime
    );
    let log = read(&lab.log_path(3));
    assert!(
        log.contains("[INFO]  k3s config: /data/k3s/config.yaml unchanged"),
        "{log}"
    );
    let baks = std::fs::read_dir(lab.volume.join("k3s"))
        .expect("data dir")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().ends_with(".bak"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(baks, 1, "no new backup for an unchanged config");
    stop(&g);
}

#[test]
fn node_init_restarts_a_failed_k3s_with_backoff_and_exits_with_its_status() {
    if !have_root("node init guest tests") {
        return;
    }
    let lab = Lab::new(42);
    let g = Running::start(lab.spec(
        1,
        1,
        Vec::new(),
        &[
            ("FKS_TEST_K3S_FAIL_FIRST", "1"),
            ("FKS_TEST_K3S_ORPHAN", ORPHAN_SLEEP),
        ],
    ));
    let log_path = lab.log_path(1);
    lab.wait_for_start(1, &log_path);
    let argv = lab.wait_for_start(2, &log_path);
    assert_eq!(argv, ["server", "--config", "/data/k3s/config.yaml"]);
    let log = read(&log_path);
    assert!(log.contains("exited unexpectedly after"), "{log}");
    assert!(log.contains(": exit status 3"), "{log}");
    assert!(log.contains("[INFO]  k3s will be restarted in 1s"), "{log}");
    assert!(log.contains("[INFO]  restarting k3s"), "{log}");
    // The orphan the first start left behind was adopted by node init (the subreaper) and is
    // reaped when it dies: no zombie stays.
    let orphan = find_process(&format!("sleep\0{ORPHAN_SLEEP}\0"));
    assert_eq!(
        parent_of(orphan),
        Some(g.pid()),
        "orphan {orphan} not adopted"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(orphan), Signal::SIGKILL)
        .expect("kill orphan");
    let deadline = Instant::now() + WAIT;
    while Path::new(&format!("/proc/{orphan}")).exists() {
        assert!(
            Instant::now() < deadline,
            "orphan {orphan} was not reaped: {}",
            read(Path::new(&format!("/proc/{orphan}/status")))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = stop(&g);
    assert_eq!(status.code(), Some(143), "log:\n{}", read(&log_path));
    let log = read(&log_path);
    assert!(
        log.contains("[INFO]  received SIGTERM: stopping every service"),
        "{log}"
    );
    assert!(log.contains("exiting with status 143"), "{log}");
}

/// issue 13: inside a guest, whose IPv4 reaches only the host (a /32 and one host route, as the
/// lab models Fly), the k3s-standin reads that from the guest's routing table and refuses a k3s
/// config whose flannel would carry IPv4 pods over that IPv4, naming the rule; nothing starts.
#[test]
fn standin_in_a_guest_refuses_flannel_that_carries_ipv4_pods_over_the_host_only_ipv4() {
    if !have_root("node init guest tests") {
        return;
    }
    let lab = Lab::new(43);
    let g = Running::start(lab.spec(1, 1, Vec::new(), &[]));
    lab.wait_for_start(1, &lab.log_path(1));
    let routes = exec(&g, &["cat", "/proc/net/route"]);
    let masks: Vec<&str> = routes
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(7))
        .collect();
    assert!(
        !masks.is_empty() && masks.iter().all(|m| *m == "FFFFFFFF"),
        "IPv4 host routes only:\n{routes}"
    );
    // The node image's k3s (the fixture shadows it on PATH).
    let standin = "/usr/local/bin/k3s";
    for (backend, how) in [
        (
            "vxlan",
            "flannel-backend vxlan with a dual-stack cluster-cidr",
        ),
        (
            "wireguard-native",
            "k3s's net-conf has no Mode, so separate",
        ),
    ] {
        let dir = lab.volume.join(format!("standin-{backend}"));
        std::fs::create_dir_all(&dir).expect("config dir");
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "node-ip: \"{},{}\"\ncluster-cidr: \"fd10:42::/56,10.42.0.0/16\"\nservice-cidr: \"fd10:43::/112,10.43.0.0/16\"\nflannel-backend: {backend}\ndata-dir: \"/data/standin-{backend}/data\"\n",
                lab.ip6(1),
                lab.ip4(1)
            ),
        )
        .expect("config");
        let argv: Vec<String> = [
            standin,
            "server",
            "--config",
            &format!("/data/standin-{backend}/config.yaml"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = g
            .exec(&argv, None, Duration::from_secs(20))
            .expect("exec in guest");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.exit_code, 1, "{backend}: {err}");
        for needle in [
            format!("over this node's IPv4 {} (", lab.ip4(1)),
            how.to_string(),
            "/proc/net/route holds only /32 host routes".to_string(),
            "rule: when a node's IPv4 is not routable between machines, IPv4 pod traffic must ride IPv6".to_string(),
        ] {
            assert!(err.contains(&needle), "{backend}: no {needle:?} in:\n{err}");
        }
        assert!(
            !dir.join("data").exists(),
            "{backend}: the stand-in started"
        );
    }
}
