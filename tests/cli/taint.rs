//! `fks-bootstrap taint` / `-t`: both spellings parse the same way and fail the same way; usage
//! errors exit 2 before any API call. Tainting a real control plane is tested against the lab
//! (`lab/tests/e2e.rs`).

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
fn taint_without_a_cluster_dir_or_with_two_forms_exits_2() {
    for args in [
        &["-t"][..],
        &["taint"],
        &["-t", LAB, "taint", LAB],
        &["-t", LAB, "-l", "cp", LAB],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
}

#[test]
fn taint_without_a_token_exits_2_naming_the_variable() {
    let out = fks()
        .args(["-t", LAB])
        .env_remove("FLY_API_TOKEN")
        .env("FLY_API_HOSTNAME", DEAD_API)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("FLY_API_TOKEN"), "{}", stderr(&out));
}

#[test]
fn short_and_long_taint_fail_alike_on_an_unreachable_api() {
    let short = run(&["-t", LAB]);
    let long = run(&["taint", LAB]);
    assert_eq!(short.status.code(), Some(1), "{}", stderr(&short));
    assert_eq!(stderr(&short), stderr(&long));
    assert!(
        stderr(&short).contains("listing the nodes of app lab-cp"),
        "{}",
        stderr(&short)
    );
    assert!(stdout(&short).is_empty());
}
