//! Guest runtime tests: real network, mount and UTS namespaces (root only).
//!
//! Each test uses its own bridge (`fkst<N>`), 6PN prefix (`fdaa:0:<N>::/48`), IPv4 network
//! (`172.30.<N>.0/24`), machine ids and temp dir, so tests run in parallel without sharing
//! anything. Without root a test prints why and returns, except under `CI=true` where it fails.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fks_lab::guest::{
    cleanup_orphans, fly_runtime_env, BridgeConfig, Error, Guest, GuestFile, GuestSpec,
    RuntimeFacts, Signal, VolumeMount,
};

mod common;
use common::{have_root, sweep_netns};

const EXEC_TIMEOUT: Duration = Duration::from_secs(20);

/// One test's private network and state directory; removes its bridge when dropped.
struct Lab {
    n: u8,
    bridge: BridgeConfig,
    dir: tempfile::TempDir,
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
        // Guests and a bridge left by an aborted earlier run (a panicking test never reaches
        // its destroy calls).
        sweep_netns(&format!("{}-", bridge.name));
        fks_lab::guest::remove_bridge(&bridge.name).expect("removing stale bridge");
        Lab {
            n,
            bridge,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn id(&self, k: u8) -> String {
        format!("t{}m{k}", self.n)
    }

    fn ip6(&self, k: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfdaa, 0, u16::from(self.n), 0xa7b, 0, 0, u16::from(k), 2)
    }

    fn ip4(&self, k: u8) -> Ipv4Addr {
        Ipv4Addr::new(172, 30, self.n, 10 + k)
    }

    fn spec(&self, k: u8, init: &[&str]) -> GuestSpec {
        let id = self.id(k);
        let mut env = fly_runtime_env(&RuntimeFacts {
            app: "demo-cp",
            machine_id: &id,
            region: "sjc",
            private_ip: self.ip6(k),
            image_ref: "lab/test:1",
            machine_version: "01HEPA330HZ37A78TK080NAK1M",
            memory_mb: 256,
            public_ip: None,
            process_group: None,
            primary_region: None,
        });
        env.insert("ROLE".to_string(), "server".to_string());
        GuestSpec {
            machine_id: id.clone(),
            app: "demo-cp".to_string(),
            private_ip: self.ip6(k),
            ipv4: self.ip4(k),
            bridge: self.bridge.clone(),
            volume: None,
            hidden_dirs: Vec::new(),
            files: Vec::new(),
            env,
            init: init.iter().map(|s| s.to_string()).collect(),
            path_dirs: vec![PathBuf::from("/opt/fks-image/bin")],
            image: None,
            root_dir: self.dir.path().join("guests").join(&id),
            log_path: self.dir.path().join("logs").join(format!("{id}.log")),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = fks_lab::guest::remove_bridge(&self.bridge.name);
    }
}

fn exec(g: &Guest, argv: &[&str]) -> fks_lab::guest::ExecOutput {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    g.exec(&argv, None, EXEC_TIMEOUT).expect("exec")
}

fn stdout(g: &Guest, argv: &[&str]) -> String {
    let out = exec(g, argv);
    assert_eq!(
        out.exit_code,
        0,
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn start_timed(spec: GuestSpec) -> Guest {
    let t = Instant::now();
    let id = spec.machine_id.clone();
    let g = Guest::start(spec).expect("start guest");
    eprintln!("guest {id} started in {:?}", t.elapsed());
    g
}

#[test]
fn guest_has_hostname_env_6pn_address_hosts_and_resolver() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(1);
    let spec = lab.spec(1, &["sleep", "100001"]);
    let expected_env = spec.env.clone();
    let g = start_timed(spec);

    assert_eq!(stdout(&g, &["hostname"]).trim(), lab.id(1));
    assert_eq!(
        stdout(&g, &["cat", "/proc/sys/kernel/hostname"]).trim(),
        lab.id(1)
    );
    assert_eq!(stdout(&g, &["cat", "/etc/hostname"]).trim(), lab.id(1));

    // The guest's environment is exactly the spec's plus PATH (image dirs first).
    let env_text = std::fs::read(format!("/proc/{}/environ", g.pid())).expect("init environ");
    let env: BTreeMap<String, String> = env_text
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=').expect("k=v");
            (k.to_string(), v.to_string())
        })
        .collect();
    let mut want = expected_env.clone();
    want.insert(
        "PATH".to_string(),
        format!("/opt/fks-image/bin:{}", fks_lab::guest::DEFAULT_PATH),
    );
    assert_eq!(env, want);

    let fly_ip = expected_env["FLY_PRIVATE_IP"].clone();
    assert_eq!(fly_ip, lab.ip6(1).to_string());
    let addrs = stdout(&g, &["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(&format!("{fly_ip}/112")), "{addrs}");
    let routes = stdout(&g, &["ip", "-6", "route"]);
    assert!(routes.contains("fdaa::/16 dev eth0"), "{routes}");
    let lo = stdout(&g, &["ip", "link", "show", "dev", "lo"]);
    assert!(lo.contains("UP"), "{lo}");

    let hosts = stdout(&g, &["cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("{fly_ip}\tfly-local-6pn")),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!("{fly_ip}\t{}", lab.id(1))),
        "{hosts}"
    );
    // Fly's init appends its entry to the image's file (reference/fly-runtime.md §1.2).
    assert!(
        hosts.ends_with(&format!("\n\n{fly_ip}\tfly-local-6pn\n")),
        "{hosts}"
    );
    // ... and truncates resolv.conf to `nameserver\t<ip>` lines (§1.2).
    assert_eq!(
        stdout(&g, &["cat", "/etc/resolv.conf"]),
        format!("nameserver\t{}\n", lab.bridge.dns6)
    );
    // eth0's MTU is Fly's 1420 (§1.4). (Read with ip: the guest's /sys is the host's.)
    let link = stdout(&g, &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains(" mtu 1420 "), "{link}");
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(
        !host_hosts.contains("fly-local-6pn"),
        "host /etc/hosts was changed"
    );
    // The resolver address on the bridge answers over 6PN.
    let dns = lab.bridge.dns6.to_string();
    assert_eq!(exec(&g, &["ping", "-6", "-c1", "-W2", &dns]).exit_code, 0);
    g.destroy().expect("destroy");
}

/// What Fly's init adds around the image: its own SSH server on `[6PN]:22` that lets no
/// lab key in (§1.6), and the hybrid cgroup mounts as far as this host has the hierarchies
/// (§1.3). The host's own mounts stay as they were.
#[test]
fn guest_has_fly_ssh_on_6pn_port_22_and_fly_cgroup_mounts() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(11);
    let g = start_timed(lab.spec(1, &["sleep", "100011"]));
    let ip = lab.ip6(1);

    let banner = ssh_banner(std::net::SocketAddr::from((ip, 22)));
    assert_eq!(banner, fks_lab::guest::hallpass::SERVER_ID, "{banner}");
    assert!(!banner.starts_with("SSH-2.0-fks-bootstrap"));
    // It refuses every key (real hallpass wants org-CA certificates).
    let key_dir = tempfile::tempdir().expect("tempdir");
    let keys = fks_bootstrap::ssh::ClusterKeys::open(key_dir.path(), "lab").expect("keys");
    let out = std::process::Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .arg("-i")
        .arg(keys.user_key().path())
        .args(["-p", "22", &format!("root@{ip}"), "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ssh (openssh-client)");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let host_mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let expected = fks_lab::guest::cgroups::layout(
        &fks_lab::guest::cgroups::host_hierarchies(&host_mountinfo),
        &host_mountinfo,
    );
    let mountinfo = stdout(&g, &["cat", "/proc/self/mountinfo"]);
    // The last mount at a path is the one seen there.
    let mounted = |path: &str| {
        mountinfo
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some(path))
            .map(|l| l.split(" - ").nth(1).unwrap_or("").to_string())
    };
    let root = mounted("/sys/fs/cgroup").expect("/sys/fs/cgroup mounted");
    assert!(root.starts_with("tmpfs "), "{root}");
    for (_, guest) in &expected.binds {
        let at = guest.display().to_string();
        let fs = mounted(&at).unwrap_or_else(|| panic!("{at} not mounted:\n{mountinfo}"));
        assert!(fs.starts_with("cgroup"), "{at}: {fs}");
    }
    // Only Fly's hierarchies are there: the host's others (name=systemd here) are not.
    let mut names: Vec<String> = stdout(&g, &["ls", "-1", "/sys/fs/cgroup"])
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    let mut want: Vec<String> = expected
        .binds
        .iter()
        .filter_map(|(_, g)| g.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    want.sort();
    assert_eq!(names, want);
    assert!(
        mounted("/sys/fs/cgroup/systemd").is_none(),
        "Fly has no name=systemd"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.contains("/sys/fs/cgroup"))
            .count(),
        host_mountinfo
            .lines()
            .filter(|l| l.contains("/sys/fs/cgroup"))
            .count(),
        "the host's cgroup mounts changed"
    );
    g.destroy().expect("destroy");
    // The stand-in went with the guest.
    assert!(std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from((ip, 22)),
        Duration::from_millis(500)
    )
    .is_err());
}

/// The SSH identification line a server sends first (RFC 4253 §4.2).
fn ssh_banner(addr: std::net::SocketAddr) -> String {
    use std::io::BufRead;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut line = String::new();
                std::io::BufReader::new(stream)
                    .read_line(&mut line)
                    .expect("read banner");
                return line.trim_end().to_string();
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no SSH server on {addr}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn guests_reach_each_other_over_6pn_but_not_over_ipv4() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(2);
    let a = start_timed(lab.spec(1, &["sleep", "100002"]));
    let b = start_timed(lab.spec(2, &["sleep", "100002"]));

    let b6 = lab.ip6(2).to_string();
    let a6 = lab.ip6(1).to_string();
    let ping6 = exec(&a, &["ping", "-6", "-c1", "-W2", &b6]);
    assert_eq!(
        ping6.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&ping6.stdout)
    );
    assert_eq!(exec(&b, &["ping", "-6", "-c1", "-W2", &a6]).exit_code, 0);

    // IPv4 reaches the host, never another guest.
    let gw4 = lab.bridge.gateway4.to_string();
    assert_eq!(exec(&a, &["ping", "-4", "-c1", "-W2", &gw4]).exit_code, 0);
    let b4 = lab.ip4(2).to_string();
    let ping4 = exec(&a, &["ping", "-4", "-c1", "-W1", &b4]);
    assert_ne!(ping4.exit_code, 0, "guest reached another guest over IPv4");
    let a4 = lab.ip4(1).to_string();
    assert_ne!(exec(&b, &["ping", "-4", "-c1", "-W1", &a4]).exit_code, 0);

    a.destroy().expect("destroy a");
    b.destroy().expect("destroy b");
}

#[test]
fn files_are_written_with_their_modes_only_inside_the_guest() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(3);
    let mut spec = lab.spec(1, &["sleep", "100003"]);
    let secret_dir = format!("/etc/fks-test-{}", lab.id(1));
    spec.files = vec![
        GuestFile {
            guest_path: PathBuf::from(format!("{secret_dir}/token")),
            contents: b"K10secret".to_vec(),
            mode: 0o600,
        },
        GuestFile {
            guest_path: PathBuf::from("/opt/fks-test/run.sh"),
            contents: b"#!/bin/sh\necho ran\n".to_vec(),
            mode: 0o755,
        },
        // Replacing a file the host has: the host's copy stays untouched.
        GuestFile {
            guest_path: PathBuf::from("/etc/debian_version"),
            contents: b"guest\n".to_vec(),
            mode: 0o644,
        },
    ];
    // Host directories outside /tmp (a guest has its own /tmp, so a host dir there would be
    // invisible for the wrong reason; the checkout itself may live under /tmp too): one
    // hidden, one visible.
    let target_tmp = tempfile::tempdir_in("/var/tmp").expect("host dir under /var/tmp");
    let (hidden, visible) = (
        target_tmp.path().join("hidden"),
        target_tmp.path().join("visible"),
    );
    for d in [&hidden, &visible] {
        std::fs::create_dir_all(d).expect("dir");
        std::fs::write(d.join("f"), "host").expect("file");
    }
    spec.hidden_dirs = vec![hidden.clone()];
    let host_before = std::fs::read("/etc/debian_version").ok();
    let g = start_timed(spec);
    let ls = |d: &Path| stdout(&g, &["ls", "-A", &d.to_string_lossy()]);
    assert_eq!(ls(&hidden), "");
    assert_eq!(ls(&visible), "f\n");
    let write_hidden = exec(
        &g,
        &["sh", "-c", &format!("echo x > {}/g", hidden.display())],
    );
    assert_ne!(write_hidden.exit_code, 0, "hidden dir is writable");

    let token = format!("{secret_dir}/token");
    assert_eq!(stdout(&g, &["cat", &token]), "K10secret");
    assert_eq!(stdout(&g, &["stat", "-c", "%a", &token]).trim(), "600");
    assert_eq!(
        stdout(&g, &["stat", "-c", "%a", "/opt/fks-test/run.sh"]).trim(),
        "755"
    );
    assert_eq!(stdout(&g, &["/opt/fks-test/run.sh"]), "ran\n");
    assert_eq!(stdout(&g, &["cat", "/etc/debian_version"]), "guest\n");
    // A write inside the guest does not reach the host either.
    stdout(&g, &["sh", "-c", "echo x > /etc/fks-guest-write-test"]);

    assert!(
        !Path::new(&secret_dir).exists(),
        "file leaked onto the host"
    );
    assert!(
        !Path::new("/opt/fks-test").exists(),
        "file leaked onto the host"
    );
    assert!(!Path::new("/etc/fks-guest-write-test").exists());
    assert_eq!(std::fs::read("/etc/debian_version").ok(), host_before);
    g.destroy().expect("destroy");
}

#[test]
fn volume_is_at_its_mount_path_and_survives_a_new_guest() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(4);
    let vol = lab.dir.path().join("volumes").join("vol_test");
    std::fs::create_dir_all(&vol).expect("volume dir");
    let with_volume = |k| {
        let mut spec = lab.spec(k, &["sleep", "100004"]);
        spec.volume = Some(VolumeMount {
            host_dir: vol.clone(),
            mount_path: PathBuf::from("/data"),
        });
        spec
    };
    let g = start_timed(with_volume(1));
    let mounts = stdout(&g, &["cat", "/proc/self/mountinfo"]);
    assert!(
        mounts.lines().any(|l| l.split(' ').nth(4) == Some("/data")),
        "{mounts}"
    );
    stdout(&g, &["sh", "-c", "echo persisted > /data/state"]);
    let twice = Guest::start(with_volume(1))
        .err()
        .expect("second start must fail");
    assert!(matches!(twice, Error::AlreadyRunning { .. }), "{twice:?}");
    assert_eq!(stdout(&g, &["cat", "/data/state"]), "persisted\n");
    stdout(&g, &["sh", "-c", "echo ephemeral > /var/lib/scratch"]);
    let status = g
        .stop(Signal::SIGTERM, Duration::from_secs(5))
        .expect("stop");
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
    g.destroy().expect("destroy");
    assert_eq!(
        std::fs::read_to_string(vol.join("state")).expect("on host dir"),
        "persisted\n"
    );

    let g2 = start_timed(with_volume(1));
    assert_eq!(stdout(&g2, &["cat", "/data/state"]), "persisted\n");
    // The root filesystem is ephemeral: /var/lib starts empty again.
    assert_ne!(exec(&g2, &["cat", "/var/lib/scratch"]).exit_code, 0);
    g2.destroy().expect("destroy");
}

#[test]
fn exec_returns_stdout_stderr_exit_code_and_honours_stdin_and_timeout() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(5);
    let g = start_timed(lab.spec(1, &["sleep", "100005"]));
    let out = exec(&g, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, 3);

    let cat = g
        .exec(&["cat".to_string()], Some(b"from stdin"), EXEC_TIMEOUT)
        .expect("exec cat");
    assert_eq!(cat.stdout, b"from stdin");

    let slow = g.exec(
        &["sleep".to_string(), "30".to_string()],
        None,
        Duration::from_millis(200),
    );
    assert!(matches!(slow, Err(Error::ExecTimeout { .. })), "{slow:?}");

    let missing = g.exec(&["no-such-program".to_string()], None, EXEC_TIMEOUT);
    assert!(
        matches!(missing, Err(Error::ExecSpawn { .. })),
        "{missing:?}"
    );

    g.stop(Signal::SIGKILL, Duration::from_secs(1))
        .expect("stop");
    let after = g.exec(&["true".to_string()], None, EXEC_TIMEOUT);
    assert!(matches!(after, Err(Error::NotRunning { .. })), "{after:?}");
    g.destroy().expect("destroy");
}

#[test]
fn stop_escalates_to_sigkill_when_init_ignores_the_signal_and_init_logs_to_the_log() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(6);
    let spec = lab.spec(
        1,
        &[
            "sh",
            "-c",
            "trap '' TERM; echo started; while :; do sleep 0.05; done",
        ],
    );
    let log = spec.log_path.clone();
    let g = start_timed(spec);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("started")
    {
        assert!(Instant::now() < deadline, "init never wrote to its log");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = g
        .stop(Signal::SIGTERM, Duration::from_millis(300))
        .expect("stop");
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert_eq!(g.try_status().expect("status"), Some(status));
    g.destroy().expect("destroy");

    // An init that exits on its own reports its exit code.
    let g = start_timed(lab.spec(2, &["sh", "-c", "exit 7"]));
    assert_eq!(g.wait_exit().expect("wait").code(), Some(7));
    g.destroy().expect("destroy");
}

fn running_processes_with_arg(arg: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Field 3 is the state; a zombie holds no resources.
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !zombie && cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()) {
            found.push(name);
        }
    }
    found
}

fn assert_gone(g_netns: &str, veth: &str, root_dir: &Path, marker_arg: &str) {
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(!netns.contains(g_netns), "netns left: {netns}");
    assert!(
        !Path::new("/sys/class/net").join(veth).exists(),
        "veth {veth} left"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let root = root_dir.to_string_lossy();
    assert!(
        !mounts.contains(root.as_ref()) && !mounts.contains(g_netns),
        "mount left: {mounts}"
    );
    assert_eq!(running_processes_with_arg(marker_arg), Vec::<String>::new());
    assert!(!root_dir.join("guest.state").exists());
    assert!(!root_dir.join("rootfs").exists());
}

#[test]
fn destroy_leaves_no_netns_veth_mount_or_process() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(7);
    // init leaves a background child behind; destroy must find it too.
    let g = start_timed(lab.spec(1, &["sh", "-c", "sleep 100007 & exec sleep 100007"]));
    // And so must it for a process started by exec.
    stdout(&g, &["sh", "-c", "sleep 100007 >/dev/null 2>&1 &"]);
    let (netns, veth) = (g.netns_name().to_string(), g.veth_name().to_string());
    let pid = g.pid();
    let root_dir = lab.dir.path().join("guests").join(lab.id(1));
    assert!(Path::new("/sys/class/net").join(&veth).exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while running_processes_with_arg("100007").len() < 3 {
        assert!(Instant::now() < deadline, "guest processes did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    g.destroy().expect("destroy");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "init {pid} still exists"
    );
    assert_gone(&netns, &veth, &root_dir, "100007");
    // Destroy is idempotent.
    g.destroy().expect("second destroy");
}

#[test]
fn cleanup_orphans_removes_guests_left_by_a_crashed_lab() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(8);
    let g = start_timed(lab.spec(1, &["sleep", "100008"]));
    let (netns, veth) = (g.netns_name().to_string(), g.veth_name().to_string());
    // A crashed lab never destroys its guests.
    std::mem::forget(g);
    let cleaned = cleanup_orphans(lab.dir.path()).expect("cleanup");
    assert_eq!(cleaned, vec![lab.id(1)]);
    let root_dir = lab.dir.path().join("guests").join(lab.id(1));
    assert_gone(&netns, &veth, &root_dir, "100008");
    assert_eq!(
        cleanup_orphans(lab.dir.path()).expect("cleanup"),
        Vec::<String>::new()
    );
}

#[test]
fn guests_started_in_parallel_do_not_interfere() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(9);
    let guests: Vec<Guest> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=4u8)
            .map(|k| {
                let spec = lab.spec(k, &["sleep", "100009"]);
                s.spawn(move || start_timed(spec))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("start thread"))
            .collect()
    });
    std::thread::scope(|s| {
        for (i, g) in guests.iter().enumerate() {
            let lab = &lab;
            s.spawn(move || {
                let k = i as u8 + 1;
                assert_eq!(stdout(g, &["hostname"]).trim(), lab.id(k));
                stdout(g, &["sh", "-c", "hostname > /etc/who; hostname > /tmp/who"]);
                assert_eq!(
                    stdout(g, &["cat", "/etc/who", "/tmp/who"]),
                    format!("{0}\n{0}\n", lab.id(k))
                );
                let next = lab.ip6(k % 4 + 1).to_string();
                assert_eq!(exec(g, &["ping", "-6", "-c1", "-W2", &next]).exit_code, 0);
            });
        }
    });
    for g in &guests {
        g.destroy().expect("destroy");
    }
}

#[test]
fn failed_start_removes_what_it_made() {
    if !have_root("guest") {
        return;
    }
    let lab = Lab::new(10);
    let spec = lab.spec(1, &["no-such-init-program"]);
    let root_dir = spec.root_dir.clone();
    let names = format!("{}-{}", lab.bridge.name, lab.id(1));
    let err = Guest::start(spec).err().expect("start must fail");
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(!String::from_utf8_lossy(&netns.stdout).contains(&names));
    assert!(!root_dir.join("guest.state").exists());

    // A failing namespace step is named in the guest's log.
    let mut spec = lab.spec(3, &["sleep", "1"]);
    spec.files = vec![GuestFile {
        guest_path: PathBuf::from("/etc/hostname/below-a-file"),
        contents: b"x".to_vec(),
        mode: 0o644,
    }];
    let log = spec.log_path.clone();
    let err = Guest::start(spec).err().expect("start must fail");
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(
        log.contains("writing /etc/hostname/below-a-file failed: Not a directory"),
        "{log}"
    );

    // A relative volume path and a file under /proc are refused before anything is made.
    let mut bad = lab.spec(2, &["sleep", "1"]);
    bad.files = vec![GuestFile {
        guest_path: PathBuf::from("/proc/sys/kernel/hostname"),
        contents: b"x".to_vec(),
        mode: 0o644,
    }];
    let bad_root = bad.root_dir.clone();
    let err = Guest::start(bad).err().expect("start must fail");
    assert!(matches!(err, Error::InvalidSpec { .. }), "{err:?}");
    assert!(!bad_root.exists());
}
