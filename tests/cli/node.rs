//! `fks-bootstrap node init` in a temp root (`--root`, `--no-supervise`): inputs, the files it
//! writes, and what it does on a second boot. No mounts or sysctls reach the host: under a
//! root other than / mounts are skipped and sysctls go to files below the root (which do not
//! exist, so each is a warning). The supervisor runs in the lab guest tests
//! (lab/tests/node_init.rs).

use std::path::Path;
use std::process::Output;

use super::util::{fks, stderr};

/// An IPv6-only cluster, so the test does not depend on the host having an eth0 IPv4.
const CONFIG: &str = "\
CLUSTER_NAME=six
CLUSTER_CIDR=\"fd10:42::/56\"
SERVICE_CIDR=\"fd10:43::/112\"
CLUSTER_DNS=\"fd10:43::a\"
REGION=sjc
NODE_GROUP_SIZE=3
VOLUME_SIZE=1
VOLUME_NAME=data
CP_VM_SIZE=shared-cpu-2x
CP_VM_MEMORY=2048
WORKER_VM_SIZE=shared-cpu-1x
WORKER_VM_MEMORY=1024
K3S_VERSION=\"v1.33.7+k3s1\"
ORG_NAME=personal
FLANNEL_BACKEND=vxlan
";

fn hosts(ip: &str) -> String {
    format!("127.0.0.1\tlocalhost\n{ip}\tfly-local-6pn\n{ip}\t3d8d9e1b2c4f87\n")
}

fn root_with(hosts_text: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("etc/fks/cluster");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config"), CONFIG).unwrap();
    std::fs::write(root.path().join("etc/hosts"), hosts_text).unwrap();
    root
}

fn init(root: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = fks();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "node",
            "init",
            "--no-supervise",
            "--allow-missing-kernel-options",
        ])
        .arg("--root")
        .arg(root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

const FLY: &[(&str, &str)] = &[
    ("FKS_NODE_NAME", "worker-ng-a-0"),
    ("FKS_ZONE", "z1"),
    ("FLY_MACHINE_ID", "3d8d9e1b2c4f87"),
    ("FLY_APP_NAME", "six-ng-a"),
    ("FLY_REGION", "sjc"),
];

#[test]
fn node_init_without_its_environment_is_a_usage_error_naming_each_variable() {
    let root = root_with(&hosts("fdaa:0:1::2"));
    let out = init(root.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for var in ["FKS_NODE_NAME", "FLY_MACHINE_ID", "FLY_REGION"] {
        assert!(err.contains(&format!("{var} is not set")), "{err}");
    }
}

#[test]
fn node_init_writes_config_from_the_hosts_6pn_entry_links_it_and_keeps_it_when_unchanged() {
    let root = root_with(&hosts("fdaa:0:1::2"));
    let out = init(root.path(), FLY);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("[INFO]  6PN address: fdaa:0:1::2 from the fly-local-6pn entry of /etc/hosts"),
        "{err}"
    );
    assert!(err.contains("[INFO]  mounts: skipped"), "{err}");
    let config_path = root.path().join("data/k3s/config.yaml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(
        config.contains("node-ip:\n  - \"fdaa:0:1::2\"\n"),
        "{config}"
    );
    assert!(
        config.contains("3d8d9e1b2c4f87.vm.six-ng-a.internal"),
        "{config}"
    );
    assert_eq!(
        std::fs::read_link(root.path().join("etc/rancher/k3s/config.yaml")).unwrap(),
        config_path
    );
    assert_eq!(
        std::fs::read_link(root.path().join("etc/rancher/node")).unwrap(),
        root.path().join("data/k3s/node")
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/machine-id")).unwrap(),
        "3d8d9e1b2c4f87\n"
    );

    let again = init(root.path(), FLY);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("k3s config: "),
        "{}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("config.yaml unchanged"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), config);
}

#[test]
fn node_init_backs_up_the_config_when_the_6pn_address_moved() {
    let root = root_with(&hosts("fdaa:0:1::2"));
    assert_eq!(init(root.path(), FLY).status.code(), Some(0));
    std::fs::write(root.path().join("etc/hosts"), hosts("fdaa:0:9::7")).unwrap();
    let out = init(root.path(), FLY);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("changed; previous one kept as"),
        "{}",
        stderr(&out)
    );
    let data = root.path().join("data/k3s");
    let backups: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect();
    assert_eq!(backups.len(), 1);
    assert!(std::fs::read_to_string(&backups[0])
        .unwrap()
        .contains("fdaa:0:1::2"));
    let config = std::fs::read_to_string(data.join("config.yaml")).unwrap();
    assert!(config.contains("\"fdaa:0:9::7\""), "{config}");
}

#[test]
fn node_init_stops_when_fly_private_ip_and_hosts_disagree() {
    let root = root_with(&hosts("fdaa:0:1::2"));
    let mut env = FLY.to_vec();
    env.push(("FLY_PRIVATE_IP", "fdaa:0:1::3"));
    let out = init(root.path(), &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("fdaa:0:1::3") && err.contains("fdaa:0:1::2"),
        "{err}"
    );
    assert!(!root.path().join("data/k3s/config.yaml").exists());
}

#[test]
fn node_init_refuses_an_app_that_does_not_match_the_node_name() {
    let root = root_with(&hosts("fdaa:0:1::2"));
    let mut env: Vec<_> = FLY
        .iter()
        .filter(|(k, _)| *k != "FLY_APP_NAME")
        .copied()
        .collect();
    env.push(("FLY_APP_NAME", "six-cp"));
    let out = init(root.path(), &env);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("belongs to app six-ng-a but FLY_APP_NAME is six-cp"));
}

/// `node init` with the cluster config's FLANNEL_BACKEND set to `backend`, no override flag.
fn init_with_backend(root: &Path, backend: &str, allow: bool) -> Output {
    let config = root.join("etc/fks/cluster/config");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "FLANNEL_BACKEND=vxlan",
            &format!("FLANNEL_BACKEND={backend}"),
        ),
    )
    .unwrap();
    let mut cmd = fks();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["node", "init", "--no-supervise", "--root"])
        .arg(root)
        .envs(FLY.iter().copied());
    if allow {
        cmd.env("FKS_ALLOW_MISSING_KERNEL_OPTIONS", "1");
    }
    cmd.output().unwrap()
}

/// The temp root has no proc/config.gz or boot/config-*, and no /proc listings: the config
/// cannot be read and nothing can be probed, which is a warning, never a refusal (on Fly a
/// refusal under `restart: always` is a boot loop). host-gw, so no link is probed on the
/// machine's own kernel.
#[test]
fn node_init_without_a_kernel_config_warns_and_continues() {
    let root = root_with(&hosts("fdaa:0:1::2"));
    let out = init_with_backend(root.path(), "host-gw", false);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("[WARN]  kernel: cannot read the running kernel's config")
            && err.contains("probing the running kernel instead"),
        "{err}"
    );
    assert!(
        err.contains("required option(s) could not be checked without the kernel config")
            && err.contains("CGROUP_PIDS"),
        "{err}"
    );
    assert!(root.path().join("data/k3s/config.yaml").exists());
}

/// Without a kernel config, a probe that proves a required option absent is named with what
/// needs it (here /proc/cgroups under the temp root has no pids controller, which cannot be a
/// module), but the boot goes on: an unreadable config never causes a boot loop.
#[test]
fn node_init_names_a_probed_absent_option_but_never_stops_without_a_kernel_config() {
    let root = root_with(&hosts("fdaa:0:1::2"));
    let cgroups = root.path().join("proc/cgroups");
    std::fs::create_dir_all(cgroups.parent().unwrap()).unwrap();
    std::fs::write(
        &cgroups,
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nmemory\t4\t1\t1\ndevices\t5\t1\t1\nfreezer\t6\t1\t1\nhugetlb\t0\t1\t1\n",
    )
    .unwrap();
    let out = init_with_backend(root.path(), "host-gw", false);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("lacks 1 option(s) this cluster needs: CGROUP_PIDS (needed by containers"),
        "{err}"
    );
    assert!(err.contains("has no pids controller"), "{err}");
    assert!(err.contains("starting k3s anyway"), "{err}");
    assert!(root.path().join("data/k3s/config.yaml").exists());
}

/// A readable kernel config (a fixture copied to the temp root's /proc/config.gz): the
/// cluster's needs are checked and only they. The Firecracker build without AUTOFS, IPVS and
/// NFS boots a vxlan cluster and stops a wireguard-native one naming FLANNEL_BACKEND.
#[test]
fn node_init_checks_only_what_the_cluster_needs() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernel/firecracker-6.18.44-fc-v1272-x86_64.config");
    for (backend, code) in [("vxlan", 0), ("wireguard-native", 1)] {
        let root = root_with(&hosts("fdaa:0:1::2"));
        std::fs::create_dir_all(root.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(
            root.path().join("proc/sys/kernel/osrelease"),
            "6.18.44-fc-v1272\n",
        )
        .unwrap();
        // Read as plain text: gzip is detected by its magic bytes, not by the name.
        std::fs::copy(&fixture, root.path().join("proc/config.gz")).unwrap();
        let out = init_with_backend(root.path(), backend, false);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{backend}: {err}");
        if code == 0 {
            assert!(
                err.contains("has every option this cluster needs (flannel backend vxlan)"),
                "{err}"
            );
        } else {
            assert!(
                err.contains(
                    "lacks 1 option(s) this cluster needs: WIREGUARD (needed by FLANNEL_BACKEND=wireguard-native)"
                ),
                "{err}"
            );
        }
        assert!(!err.contains("AUTOFS") && !err.contains("IP_VS"), "{err}");
    }
}

/// Supervising (no --no-supervise), a kernel that lacks a required option parks node init:
/// k3s is never started and the reason is logged, but the process stays up (an exit would be a
/// boot loop under Fly's `restart: always`) until a stop signal ends it.
#[test]
fn supervising_node_init_parks_instead_of_exiting_on_a_missing_required_option() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernel/firecracker-6.18.44-fc-v1272-x86_64.config");
    let root = root_with(&hosts("fdaa:0:1::2"));
    std::fs::create_dir_all(root.path().join("proc/sys/kernel")).unwrap();
    std::fs::write(
        root.path().join("proc/sys/kernel/osrelease"),
        "6.18.44-fc-v1272\n",
    )
    .unwrap();
    std::fs::copy(&fixture, root.path().join("proc/config.gz")).unwrap();
    let config = root.path().join("etc/fks/cluster/config");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("FLANNEL_BACKEND=vxlan", "FLANNEL_BACKEND=wireguard-native"),
    )
    .unwrap();
    let log = root.path().join("init.log");
    let mut child = fks()
        .env_clear()
        // No k3s on PATH: were it started, the log would say so.
        .env("PATH", "/nonexistent")
        .args(["node", "init", "--root"])
        .arg(root.path())
        .envs(FLY.iter().copied())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let parked = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("parked: not starting k3s") {
            break text;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "node init exited instead of parking: {text}"
        );
        assert!(std::time::Instant::now() < deadline, "never parked: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        parked.contains("WIREGUARD (needed by FLANNEL_BACKEND=wireguard-native)"),
        "{parked}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "exited after parking");
    kill_term(child.id());
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        !text.contains("started k3s") && !text.contains("could not start k3s"),
        "{text}"
    );
}

fn kill_term(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
}
