//! `fks-bootstrap destroy`: the refusals that happen before any API call (no terminal and no
//! `--yes`, a missing cluster dir) and the help text. Destroying real objects is tested
//! against the lab (`lab/tests/cli_ops.rs`).

use std::process::Stdio;

use crate::util::{fks, stderr, stdout};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clusters/lab");
/// An address nothing listens on: a test that reached the API would fail with exit 1.
const DEAD_API: &str = "http://127.0.0.1:9";

#[test]
fn destroy_without_yes_and_without_a_terminal_exits_2_before_any_call() {
    let out = fks()
        .args(["destroy", LAB])
        .env("FLY_API_HOSTNAME", DEAD_API)
        .env("FLY_API_TOKEN", "test-token")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("pass --yes") && err.contains("cluster lab"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn destroy_needs_a_cluster_dir() {
    let out = fks().args(["destroy", "--yes"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("CLUSTER_DIR"), "{}", stderr(&out));
}

#[test]
fn destroy_with_yes_and_an_unreachable_api_fails_with_exit_1() {
    let out = fks()
        .args(["destroy", LAB, "--yes"])
        .env("FLY_API_HOSTNAME", DEAD_API)
        .env("FLY_API_TOKEN", "test-token")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("listing the apps of organization personal"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn destroy_help_says_what_it_removes_and_how_it_confirms() {
    let out = fks().args(["destroy", "--help"]).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for want in ["--yes", "--dry-run", "fks_cluster", "type the cluster name"] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
}
