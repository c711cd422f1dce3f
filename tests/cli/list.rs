//! `fks-bootstrap list` / `-l`: both spellings parse the same way and fail the same way; the
//! usage errors exit 2 before any API call. Listing a real app is tested against the lab
//! (`lab/tests/cli_ops.rs`).

use std::process::Output;

use crate::util::{fks, stderr, stdout};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clusters/lab");
/// An address nothing listens on: a test that reached the API would fail with exit 1.
const DEAD_API: &str = "http://127.0.0.1:9";

fn run(args: &[&str]) -> Output {
    fks()
        .args(args)
        .env("FLY_API_HOSTNAME", DEAD_API)
        .env("FLY_API_TOKEN", "test-token")
        .output()
        .expect("run")
}

#[test]
fn short_list_without_a_cluster_dir_exits_2() {
    for args in [&["-l"][..], &["-l", "cp"], &["list", "cp"], &["list"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
}

#[test]
fn short_and_long_forms_report_the_same_config_error() {
    let missing = tempfile::tempdir().expect("temp dir");
    let dir = missing.path().join("nowhere");
    let dir = dir.to_str().expect("utf-8 path");
    let short = run(&["-l", "cp", dir]);
    let long = run(&["list", "cp", dir]);
    assert_ne!(short.status.code(), Some(0), "{}", stderr(&short));
    assert_eq!(short.status.code(), long.status.code());
    assert_eq!(stderr(&short), stderr(&long));
    assert!(stderr(&short).contains("nowhere"), "{}", stderr(&short));
}

#[test]
fn an_invalid_group_name_is_a_usage_error_in_both_forms() {
    for args in [&["-l", "Web!", LAB][..], &["list", "Web!", LAB]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("Web!"), "{}", stderr(&out));
    }
}

#[test]
fn json_without_l_and_both_forms_at_once_exit_2() {
    let json = run(&["--json"]);
    assert_eq!(json.status.code(), Some(2), "{}", stderr(&json));
    let both = run(&["-l", "cp", LAB, "list", "cp", LAB]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    assert!(stderr(&both).contains("not both"), "{}", stderr(&both));
}

#[test]
fn list_without_a_token_exits_2_naming_the_variable() {
    let out = fks()
        .args(["-l", "cp", LAB])
        .env_remove("FLY_API_TOKEN")
        .env("FLY_API_HOSTNAME", DEAD_API)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("FLY_API_TOKEN"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_api_is_a_failure_exit_1() {
    let out = run(&["list", "cp", LAB]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("listing the nodes of app lab-cp"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_shows_the_short_forms_and_examples() {
    let out = fks().arg("--help").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("-l <cp|GROUP> <CLUSTER_DIR>"), "{text}");
    assert!(text.contains("fks-bootstrap -l cp clusters/lab"), "{text}");
    assert!(text.contains("destroy"), "{text}");
    // Every command in the parser works; the short forms of the ones that exist are listed.
    for present in [
        "\n  create",
        "\n  nodegroup",
        "\n  kubeconfig",
        "\n  taint",
        "-c <CLUSTER_DIR>",
        "-t <CLUSTER_DIR>",
        "-k <CLUSTER_DIR>",
    ] {
        assert!(text.contains(present), "{present} missing:\n{text}");
    }
}

#[test]
fn flyctls_config_file_supplies_the_token_when_the_environment_has_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.yml"),
        "access_token: fo1_from_flyctl\n",
    )
    .expect("write");
    let out = fks()
        .args(["-l", "cp", LAB])
        .env_remove("FLY_API_TOKEN")
        .env("FLY_CONFIG_DIR", dir.path())
        .env("FLY_API_HOSTNAME", DEAD_API)
        .output()
        .expect("run");
    // The token was found (no usage error); the dead API then fails the listing.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("fo1_from_flyctl"),
        "{}",
        stderr(&out)
    );
}
