//! `fks-bootstrap kubeconfig` / `-k`: flags parse the same in both spellings; usage errors
//! (missing dir, `--use-context` without `--merge`, no `HOME`, a bad `BOOTSTRAP_NODE_ID`) exit
//! 2 before any API call and write nothing. Exporting from a real cluster is tested against
//! the lab (`lab/tests/e2e.rs`).

use std::path::Path;
use std::process::{Command, Output};

use crate::util::{fks, stderr, stdout};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clusters/lab");
/// An address nothing listens on: a test that reached the API would fail with exit 1.
const DEAD_API: &str = "http://127.0.0.1:9";

fn cmd(home: &Path, args: &[&str]) -> Command {
    let mut c = fks();
    c.args(args)
        .env("FLY_API_HOSTNAME", DEAD_API)
        .env("FLY_API_TOKEN", "test-token")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("xdg"))
        .env_remove("KUBECONFIG")
        .env_remove("BOOTSTRAP_NODE_ID");
    c
}

fn run(home: &Path, args: &[&str]) -> Output {
    cmd(home, args).output().expect("run")
}

#[test]
fn kubeconfig_usage_errors_exit_2_and_write_nothing() {
    let home = tempfile::tempdir().expect("tempdir");
    for args in [
        &["-k"][..],
        &["kubeconfig"],
        &["-k", LAB, "--use-context"],
        &["kubeconfig", LAB, "--use-context"],
        &["--merge"],
        &["-k", LAB, "-t", LAB],
    ] {
        let out = run(home.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    assert!(!home.path().join(".kube").exists());
}

#[test]
fn kubeconfig_without_home_or_with_a_bad_bootstrap_node_exits_2() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = cmd(home.path(), &["-k", LAB])
        .env_remove("HOME")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("HOME is not set"), "{}", stderr(&out));

    for (value, says) in [
        ("7", "BOOTSTRAP_NODE_ID=7 is out of range"),
        ("x", "BOOTSTRAP_NODE_ID=\"x\" is not a server index"),
    ] {
        let out = cmd(home.path(), &["kubeconfig", LAB])
            .env("BOOTSTRAP_NODE_ID", value)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    assert!(!home.path().join(".kube").exists());
}

#[test]
fn short_and_long_kubeconfig_fail_alike_on_an_unreachable_api() {
    let home = tempfile::tempdir().expect("tempdir");
    let short = run(home.path(), &["-k", LAB, "--merge"]);
    let long = run(home.path(), &["kubeconfig", LAB, "--merge"]);
    assert_eq!(short.status.code(), Some(1), "{}", stderr(&short));
    assert_eq!(stderr(&short), stderr(&long));
    assert!(
        stderr(&short).contains("listing the nodes of app lab-cp"),
        "{}",
        stderr(&short)
    );
    assert!(stdout(&short).is_empty());
    assert!(!home.path().join(".kube").exists());
}
