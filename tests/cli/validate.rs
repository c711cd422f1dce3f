//! `fks-bootstrap validate`: a valid config prints its resolved values (exit 0), an invalid
//! one prints every problem on stderr (exit 2), `--json` prints parseable JSON.

use std::path::Path;

use crate::util::{fks, stderr, stdout};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clusters/lab");
const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clusters/fly-k3s-poc");

fn cluster_dir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("config"), config).expect("write config");
    dir
}

fn seed_config() -> String {
    std::fs::read_to_string(Path::new(SEED).join("config")).expect("seed config")
}

#[test]
fn validate_prints_the_resolved_config_with_defaults() {
    let out = fks().args(["validate", SEED]).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("CLUSTER_NAME=fly-k3s-poc\n"), "{text}");
    assert!(
        text.contains("CLUSTER_CIDR=dead:beef:1::/56,10.1.0.0/16\n"),
        "{text}"
    );
    assert!(
        text.contains("FLANNEL_BACKEND=wireguard-native\n"),
        "default missing:\n{text}"
    );
    assert!(
        !text.contains("IMAGE=") && text.contains("# IMAGE unset: -c builds"),
        "IMAGE has no default:\n{text}"
    );
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn validate_lab_cluster_uses_vxlan_and_builds_its_image() {
    let out = fks().args(["validate", LAB]).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("FLANNEL_BACKEND=vxlan\n"), "{text}");
    assert!(
        !text.contains("\nIMAGE=") && text.contains("# IMAGE unset: -c builds"),
        "{text}"
    );
}

#[test]
fn validate_json_is_the_serialized_config() {
    let out = fks()
        .args(["validate", LAB, "--json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON");
    assert_eq!(v["cluster_name"], "lab");
    assert_eq!(v["cluster_cidr"][0], "fd10:42::/56");
    assert_eq!(v["cp_vm"]["cpu_kind"], "shared");
    assert_eq!(v["cp_vm"]["memory_mb"], 2048);
    assert_eq!(v["flannel_backend"], "vxlan");
}

#[test]
fn validate_reports_every_problem_with_exit_2() {
    let bad = seed_config()
        .replace("CLUSTER_NAME=fly-k3s-poc", "CLUSTER_NAME=Fly_K3s")
        .replace("REGION=sjc", "REGION=sjx")
        .replace("CP_VM_MEMORY=16384", "CP_VM_MEMORY=1000")
        .replace(
            "ORG_NAME=\"fly-org-slug-goes-here\"",
            "ORG_NAME=$(touch pwned)",
        );
    let dir = cluster_dir(&bad);
    let out = fks()
        .current_dir(dir.path())
        .args(["validate", "."])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("fks-bootstrap: 4 problems in ./config:\n"),
        "{err}"
    );
    for needle in [
        "./config:1: CLUSTER_NAME: ",
        "./config:5: REGION: \"sjx\" is not a Fly region (help: did you mean sjc?",
        "./config:12: CP_VM_MEMORY: ",
        "./config:14: ORG_NAME: command substitution",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(
        !dir.path().join("pwned").exists(),
        "the config was executed"
    );
}

#[test]
fn validate_of_a_dir_without_config_names_the_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = fks().arg("validate").arg(dir.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&dir.path().display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_refuses_both_config_formats() {
    let dir = cluster_dir(&seed_config());
    std::fs::write(dir.path().join("cluster.toml"), "CLUSTER_NAME = \"x\"\n").expect("write");
    let out = fks().arg("validate").arg(dir.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("both config and cluster.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_reads_cluster_toml() {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml: String = seed_config()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            format!("{k} = \"{}\"\n", v.trim_matches('"'))
        })
        .collect();
    std::fs::write(dir.path().join("cluster.toml"), toml).expect("write");
    let out = fks().arg("validate").arg(dir.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("VOLUME_SIZE=250\n"),
        "{}",
        stdout(&out)
    );
}

/// A binary file where the config should be is a configuration error (exit 2, as every other
/// bad config), naming the file and where its first non-text byte is.
#[test]
fn validate_binary_config_exits_2_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = b"CLUSTER_NAME=x\n".to_vec();
    bytes.extend_from_slice(&[
        0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0xff, 0xfe, 0x00,
    ]);
    std::fs::write(dir.path().join("config"), &bytes).expect("write");
    let out = fks().arg("validate").arg(dir.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&dir.path().join("config").display().to_string())
            && err.contains("is not UTF-8 text")
            && err.contains("line 2, byte offset 23"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// issue 13: `validate` explains why dual-stack pods cannot cross nodes on vxlan or host-gw on
/// Fly, on the FLANNEL_BACKEND line, and what to do instead; the explicit key accepts it.
#[test]
fn validate_refuses_dual_stack_vxlan_and_host_gw_naming_file_line_and_key() {
    for backend in ["vxlan", "host-gw"] {
        let text = format!("{}FLANNEL_BACKEND={backend}\n", seed_config());
        let line = text.lines().count();
        let dir = cluster_dir(&text);
        let out = fks()
            .current_dir(dir.path())
            .args(["validate", "."])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "./config:{line}: FLANNEL_BACKEND: {backend} carries IPv4 pods over the nodes' IPv4 addresses, which on Fly reach only their own host"
            )),
            "{err}"
        );
        assert!(
            err.contains("use FLANNEL_BACKEND=wireguard-native"),
            "{err}"
        );
        assert!(err.contains("IPv6-only CLUSTER_CIDR"), "{err}");

        let accepted = format!("{text}ALLOW_IPV6_ONLY_POD_TRAFFIC=true\n");
        let dir = cluster_dir(&accepted);
        let out = fks().arg("validate").arg(dir.path()).output().expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("ALLOW_IPV6_ONLY_POD_TRAFFIC=true\n"),
            "{}",
            stdout(&out)
        );
    }
}
