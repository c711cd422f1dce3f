//! `fks-bootstrap check-kernel`: exit codes, the table, the `--json` shape, plain and gzip
//! input, and module-less judging, against the fixtures in tests/fixtures/kernel/.

use std::io::Write;
use std::path::PathBuf;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::util::{fks, stderr, stdout};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernel")
        .join(name)
}

const COMPLETE: &str = "complete-6.18.config";
const FIRECRACKER: &str = "firecracker-6.18.44-x86_64.config";

#[test]
fn complete_config_passes_with_exit_0_and_a_pass_summary() {
    let out = fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(fixture(COMPLETE))
        .output()
        .expect("run fks-bootstrap");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}\n{text}", stderr(&out));
    assert!(
        text.contains("PASS: every required option is satisfied"),
        "{text}"
    );
    assert!(text.contains("(Linux 6.18.0)"), "{text}");
    // Grouped by requirement set, each with its groups.
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

#[test]
fn firecracker_config_fails_with_exit_1_naming_the_missing_options() {
    let out = fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(fixture(FIRECRACKER))
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("7 required kernel option(s) not satisfied")
            && err.contains("INET_ESP")
            && err.contains("NFS_FS"),
        "{err}"
    );
    let text = stdout(&out);
    assert!(
        text.contains("kernel cannot load modules: CONFIG_MODULES is not set"),
        "{text}"
    );
    assert!(
        text.contains("FAIL: 7 required option(s) not satisfied"),
        "{text}"
    );
}

#[test]
fn json_is_an_array_of_verdicts_without_config_prefix() {
    let out = fks()
        .args(["check-kernel", "--json", "--kernel-config"])
        .arg(fixture(FIRECRACKER))
        .output()
        .expect("run fks-bootstrap");
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
    assert_eq!(
        find("k3s-check-config", "MEMCG_KMEM")["status"],
        "not_applicable"
    );
}

#[test]
fn gzip_input_is_read_like_plain_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read(fixture(COMPLETE)).expect("fixture");
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(&text).expect("gzip");
    let path = dir.path().join("config.gz");
    std::fs::write(&path, enc.finish().expect("gzip")).expect("write");
    let out = fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(&path)
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn module_built_option_fails_on_a_module_less_kernel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(fixture(COMPLETE)).expect("fixture");
    let path = dir.path().join("config");
    std::fs::write(&path, text.replace("CONFIG_IP_VS=y", "CONFIG_IP_VS=m")).expect("write");
    let out = fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(&path)
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("kernel cannot load modules: CONFIG_MODULES is not set"),
        "{text}"
    );
    assert!(text.contains("module FAIL"), "{text}");
    assert!(
        stderr(&out).contains("1 required kernel option(s) not satisfied"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreadable_or_non_config_input_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let out = fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(&missing)
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("reading kernel config"),
        "{}",
        stderr(&out)
    );
    let garbage = dir.path().join("notes.txt");
    std::fs::write(&garbage, "hello world\n").expect("write");
    let out = fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(&garbage)
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

/// A copy of clusters/lab with FLANNEL_BACKEND set to `backend`.
fn lab_cluster_with_backend(dir: &std::path::Path, backend: &str) -> PathBuf {
    let lab = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clusters/lab/config");
    let text = std::fs::read_to_string(lab).expect("clusters/lab/config");
    assert!(text.contains("FLANNEL_BACKEND=vxlan"), "lab config changed");
    let cluster = dir.join("cluster");
    std::fs::create_dir_all(&cluster).expect("mkdir");
    std::fs::write(
        cluster.join("config"),
        text.replace(
            "FLANNEL_BACKEND=vxlan",
            &format!("FLANNEL_BACKEND={backend}"),
        ),
    )
    .expect("write config");
    cluster
}

#[test]
fn cluster_backend_adds_its_kernel_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wg = lab_cluster_with_backend(dir.path(), "wireguard-native");
    let out = fks()
        .args(["check-kernel", "--json", "--kernel-config"])
        .arg(fixture(FIRECRACKER))
        .arg("--cluster")
        .arg(&wg)
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let wireguard = value
        .as_array()
        .expect("an array")
        .iter()
        .find(|e| e["set"] == "cluster" && e["option"] == "WIREGUARD")
        .expect("WIREGUARD is checked for wireguard-native");
    assert_eq!(wireguard["status"], "missing");
    assert_eq!(wireguard["required"], true);
    assert!(
        stderr(&out).contains("8 required kernel option(s)") && stderr(&out).contains("WIREGUARD"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn lab_cluster_on_complete_config_passes() {
    let lab = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clusters/lab");
    let out = fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(fixture(COMPLETE))
        .arg("--cluster")
        .arg(&lab)
        .output()
        .expect("run fks-bootstrap");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}\n{text}", stderr(&out));
    assert!(text.contains("-- flannel vxlan"), "{text}");
    assert!(!text.contains("flannel backend unknown"), "{text}");
}

#[test]
fn unusable_cluster_dir_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(fixture(COMPLETE))
        .arg("--cluster")
        .arg(dir.path())
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let bad = lab_cluster_with_backend(dir.path(), "carrier-pigeon");
    let out = fks()
        .args(["check-kernel", "--kernel-config"])
        .arg(fixture(COMPLETE))
        .arg("--cluster")
        .arg(&bad)
        .output()
        .expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("FLANNEL_BACKEND"), "{}", stderr(&out));
}
