//! `fks-bootstrap check-kernel`: exit codes, the table, the `--json` shape, plain and gzip
//! input, module-less judging, the profiles, and the verdicts of `--cluster` for each flannel
//! backend on the kernel configs in tests/fixtures/kernel/ (never the machine's own kernel).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::util::{fks, stderr, stdout};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernel")
        .join(name)
}

/// Synthetic: every option of the seed list and the cluster profile, built in.
const COMPLETE: &str = "complete-6.18.config";
/// Firecracker 6.18.44 guest build -fc-v669: VXLAN, AUTOFS; no WIREGUARD, IP_VS or NFS.
const FIRECRACKER: &str = "firecracker-6.18.44-x86_64.config";
/// Firecracker 6.18.44 guest build -fc-v1272 (this machine's kind): as -fc-v669, without AUTOFS.
const FIRECRACKER_NO_AUTOFS: &str = "firecracker-6.18.44-fc-v1272-x86_64.config";

/// A small cluster directory whose config uses flannel `backend`.
fn cluster_with_backend(dir: &Path, backend: &str) -> PathBuf {
    let cluster = dir.join(format!("cluster-{backend}"));
    std::fs::create_dir_all(&cluster).expect("mkdir");
    std::fs::write(
        cluster.join("config"),
        format!(
            "CLUSTER_NAME=kern\n\
             CLUSTER_CIDR=\"fd10:42::/56\"\n\
             SERVICE_CIDR=\"fd10:43::/112\"\n\
             CLUSTER_DNS=\"fd10:43::a\"\n\
             REGION=sjc\n\
             NODE_GROUP_SIZE=3\n\
             VOLUME_SIZE=1\n\
             VOLUME_NAME=data\n\
             CP_VM_SIZE=shared-cpu-2x\n\
             CP_VM_MEMORY=2048\n\
             WORKER_VM_SIZE=shared-cpu-1x\n\
             WORKER_VM_MEMORY=1024\n\
             K3S_VERSION=\"v1.33.7+k3s1\"\n\
             ORG_NAME=personal\n\
             FLANNEL_BACKEND={backend}\n"
        ),
    )
    .expect("write config");
    cluster
}

fn check(kernel: &Path, extra: &[&str]) -> Output {
    fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(kernel)
        .args(extra)
        .output()
        .expect("run fks-bootstrap")
}

fn check_cluster(kernel: &Path, cluster: &Path) -> Output {
    fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(kernel)
        .arg("--cluster")
        .arg(cluster)
        .output()
        .expect("run fks-bootstrap")
}

/// A copy of the complete fixture with `option` not set.
fn complete_without(dir: &Path, option: &str) -> PathBuf {
    let text = std::fs::read_to_string(fixture(COMPLETE)).expect("fixture");
    let line = format!("CONFIG_{option}=y\n");
    assert!(text.contains(&line), "{option} not in the fixture");
    let path = dir.join(format!("complete-without-{option}"));
    std::fs::write(
        &path,
        text.replace(&line, &format!("# CONFIG_{option} is not set\n")),
    )
    .expect("write");
    path
}

/// The verdict table of the issue: each fixture kernel, each backend, the exit code and the
/// options named as missing. Both Firecracker builds have VXLAN and lack WIREGUARD; neither
/// lacks anything else this cluster needs (IPVS, NFS and AUTOFS are not needed).
#[test]
fn cluster_verdicts_per_kernel_and_flannel_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vxlan = cluster_with_backend(dir.path(), "vxlan");
    let wireguard = cluster_with_backend(dir.path(), "wireguard-native");
    let no_vxlan = complete_without(dir.path(), "VXLAN");
    let no_wireguard = complete_without(dir.path(), "WIREGUARD");
    let cases: [(PathBuf, &Path, Option<&str>); 10] = [
        (fixture(FIRECRACKER), &vxlan, None),
        (
            fixture(FIRECRACKER),
            &wireguard,
            Some("WIREGUARD (FLANNEL_BACKEND=wireguard-native)"),
        ),
        (fixture(FIRECRACKER_NO_AUTOFS), &vxlan, None),
        (
            fixture(FIRECRACKER_NO_AUTOFS),
            &wireguard,
            Some("WIREGUARD (FLANNEL_BACKEND=wireguard-native)"),
        ),
        (fixture(COMPLETE), &vxlan, None),
        (fixture(COMPLETE), &wireguard, None),
        (
            no_vxlan.clone(),
            &vxlan,
            Some("VXLAN (FLANNEL_BACKEND=vxlan)"),
        ),
        (no_vxlan, &wireguard, None),
        (no_wireguard.clone(), &vxlan, None),
        (
            no_wireguard,
            &wireguard,
            Some("WIREGUARD (FLANNEL_BACKEND=wireguard-native)"),
        ),
    ];
    for (kernel, cluster, missing) in cases {
        let out = check_cluster(&kernel, cluster);
        let what = format!("{} with {}", kernel.display(), cluster.display());
        let err = stderr(&out);
        match missing {
            None => {
                assert_eq!(out.status.code(), Some(0), "{what}: {err}");
                assert!(stdout(&out).contains("PASS"), "{what}");
            }
            Some(missing) => {
                assert_eq!(out.status.code(), Some(1), "{what}: {err}");
                assert!(
                    err.contains(&format!(
                        "1 required kernel option(s) not satisfied in {}: {missing}",
                        kernel.display()
                    )),
                    "{what}: {err}"
                );
            }
        }
    }
}

/// clusters/lab as checked in, on a kernel like this machine's (no WIREGUARD, VXLAN built in,
/// no AUTOFS): what the quickstart runs without any override.
#[test]
fn lab_cluster_passes_on_the_firecracker_kernel_without_autofs() {
    let lab = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clusters/lab");
    let out = check_cluster(&fixture(FIRECRACKER_NO_AUTOFS), &lab);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}\n{text}", stderr(&out));
    assert!(text.contains("profile: cluster"), "{text}");
    // No row for any of them (the notes say why).
    for option in ["AUTOFS", "IP_VS", "NFS_FS", "NETFILTER_XT_MATCH_IPVS"] {
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with(option)),
            "{option}: {text}"
        );
    }
    assert!(
        text.contains("the IPVS options are not needed") && text.contains("AUTOFS is not needed"),
        "{text}"
    );
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn complete_config_passes_every_profile_with_exit_0() {
    for profile in ["cluster", "seed", "k3s-check-config", "all"] {
        let out = check(&fixture(COMPLETE), &["--profile", profile]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{profile}: {}", stderr(&out));
        assert!(
            text.contains("PASS: every required option is satisfied"),
            "{profile}: {text}"
        );
        assert!(text.contains("(Linux 6.18.0)"), "{text}");
        assert!(text.contains(&format!("profile: {profile}")), "{text}");
    }
    let out = check(&fixture(COMPLETE), &["--profile", "all"]);
    let text = stdout(&out);
    for heading in [
        "(seed)",
        "(k3s-check-config)",
        "(cluster)",
        "-- Longhorn",
        "-- Generally Necessary",
    ] {
        assert!(text.contains(heading), "no {heading}:\n{text}");
    }
}

/// The seed README's full list stays available as a report, and still fails where the seed
/// list says so: IPVS, NFS, ESP and, on this build, AUTOFS.
#[test]
fn seed_profile_reports_the_full_list_and_fails_on_firecracker() {
    let out = check(&fixture(FIRECRACKER_NO_AUTOFS), &["--profile", "seed"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for option in [
        "AUTOFS4_FS (systemd)",
        "IP_VS (k3s/iptables)",
        "NFS_FS (Longhorn)",
        "INET_ESP",
    ] {
        assert!(err.contains(option), "{option}: {err}");
    }
    assert!(
        err.contains("8 required kernel option(s) not satisfied"),
        "{err}"
    );
    let text = stdout(&out);
    assert!(
        text.contains("kernel cannot load modules: CONFIG_MODULES is not set"),
        "{text}"
    );
    assert!(
        text.contains("FAIL: 8 required option(s) not satisfied"),
        "{text}"
    );
    assert!(!text.contains("(cluster)"), "{text}");
}

#[test]
fn cluster_dir_with_a_report_profile_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vxlan = cluster_with_backend(dir.path(), "vxlan");
    let out = fks()
        .args(["check-kernel", "--profile", "seed", "--kernel-config"])
        .arg(fixture(COMPLETE))
        .arg("--cluster")
        .arg(&vxlan)
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--profile seed"), "{}", stderr(&out));
    let out = check(&fixture(COMPLETE), &["--profile", "everything"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A missing recommended option is a warning on stderr; the check still passes.
#[test]
fn missing_recommended_option_warns_and_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = complete_without(dir.path(), "CFS_BANDWIDTH");
    let vxlan = cluster_with_backend(dir.path(), "vxlan");
    let out = check_cluster(&kernel, &vxlan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: 1 recommended kernel option(s) missing")
            && stderr(&out).contains("CFS_BANDWIDTH"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("PASS"));
}

#[test]
fn json_is_an_array_of_verdicts_without_config_prefix() {
    let out = check(&fixture(FIRECRACKER), &["--json", "--profile", "all"]);
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let entries = value.as_array().expect("an array");
    assert!(!entries.is_empty());
    for e in entries {
        let option = e["option"].as_str().expect("option is a string");
        assert!(!option.starts_with("CONFIG_"), "{option}");
        assert!(e["group"].is_string(), "{e}");
        assert!(e["required"].is_boolean(), "{e}");
        let status = e["status"].as_str().expect("status is a string");
        assert!(
            ["ok", "module", "missing", "not_applicable"].contains(&status),
            "{status}"
        );
    }
    let find = |set: &str, option: &str| {
        entries
            .iter()
            .find(|e| e["set"] == set && e["option"] == option)
            .unwrap_or_else(|| panic!("no {set}/{option}"))
    };
    assert_eq!(find("seed", "AUTOFS4_FS")["status"], "ok");
    assert_eq!(find("seed", "INET_ESP")["status"], "missing");
    assert_eq!(find("cluster", "OVERLAY_FS")["status"], "ok");
    assert_eq!(
        find("k3s-check-config", "MEMCG_KMEM")["status"],
        "not_applicable"
    );
}

#[test]
fn json_for_wireguard_marks_wireguard_required_and_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wg = cluster_with_backend(dir.path(), "wireguard-native");
    let out = fks()
        .args(["check-kernel", "--json", "--kernel-config"])
        .arg(fixture(FIRECRACKER))
        .arg("--cluster")
        .arg(&wg)
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let entries = value.as_array().expect("an array");
    let wireguard = entries
        .iter()
        .find(|e| e["option"] == "WIREGUARD")
        .expect("WIREGUARD is checked for wireguard-native");
    assert_eq!(wireguard["status"], "missing");
    assert_eq!(wireguard["required"], true);
    assert_eq!(wireguard["group"], "FLANNEL_BACKEND=wireguard-native");
    assert!(entries.iter().all(|e| e["option"] != "VXLAN"));
}

#[test]
fn gzip_input_is_read_like_plain_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read(fixture(COMPLETE)).expect("fixture");
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(&text).expect("gzip");
    let path = dir.path().join("config.gz");
    std::fs::write(&path, enc.finish().expect("gzip")).expect("write");
    let out = check(&path, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn module_built_option_fails_on_a_module_less_kernel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(fixture(COMPLETE)).expect("fixture");
    let path = dir.path().join("config");
    std::fs::write(&path, text.replace("CONFIG_BRIDGE=y", "CONFIG_BRIDGE=m")).expect("write");
    let out = check(&path, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("kernel cannot load modules: CONFIG_MODULES is not set"),
        "{text}"
    );
    assert!(text.contains("module FAIL"), "{text}");
    assert!(
        stderr(&out).contains("1 required kernel option(s) not satisfied")
            && stderr(&out).contains("BRIDGE (pod networking"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreadable_or_non_config_input_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let out = check(&missing, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("reading kernel config"),
        "{}",
        stderr(&out)
    );
    let garbage = dir.path().join("notes.txt");
    std::fs::write(&garbage, "hello world\n").expect("write");
    let out = check(&garbage, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn unusable_cluster_dir_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check_cluster(&fixture(COMPLETE), dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let bad = cluster_with_backend(dir.path(), "carrier-pigeon");
    let out = check_cluster(&fixture(COMPLETE), &bad);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("FLANNEL_BACKEND"), "{}", stderr(&out));
}
