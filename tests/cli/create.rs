//! `fks-bootstrap create` / `-c` and `nodegroup add` / `-a`: the refusals that happen before
//! any API call (a bad BOOTSTRAP_NODE_ID, a bad group name, run flags without -c/-a) and the
//! help text. Runs against the lab are in `lab/tests/cli_ops.rs` and `lab/tests/faults.rs`.

use crate::util::{fks, stderr, stdout};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clusters/lab");
/// An address nothing listens on: a test that reached the API would fail with exit 1.
const DEAD_API: &str = "http://127.0.0.1:9";

fn run(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = fks();
    cmd.args(args)
        .env("FLY_API_HOSTNAME", DEAD_API)
        .env("FLY_API_TOKEN", "test-token")
        .env_remove("BOOTSTRAP_NODE_ID");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run")
}

#[test]
fn a_bootstrap_node_id_that_is_not_a_server_is_a_usage_error_naming_the_variable() {
    for value in ["x", "3", "-1"] {
        let out = run(&["-c", LAB], &[("BOOTSTRAP_NODE_ID", value)]);
        assert_eq!(out.status.code(), Some(2), "{value}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("BOOTSTRAP_NODE_ID"), "{value}: {err}");
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn a_bad_group_name_is_a_usage_error_in_both_spellings() {
    for args in [&["-a", "Web!", LAB][..], &["nodegroup", "add", "Web!", LAB]] {
        let out = run(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("Web!"), "{}", stderr(&out));
    }
}

#[test]
fn run_flags_without_c_or_a_are_a_usage_error() {
    for args in [&["--dry-run"][..], &["-l", "cp", LAB, "--zones", "3"]] {
        let out = run(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("go with -c or -a"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn bad_zone_settings_are_usage_errors_naming_the_flag_or_the_variable() {
    let out = run(&["-c", LAB, "--zones", "sjc=0"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--zones"), "{}", stderr(&out));
    let out = run(
        &["-c", LAB],
        &[
            ("FKS_REGION_ZONES", "sjc=many"),
            ("XDG_CONFIG_HOME", env!("CARGO_TARGET_TMPDIR")),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("FKS_REGION_ZONES=\"sjc=many\""),
        "{}",
        stderr(&out)
    );
    let out = run(
        &["-c", LAB],
        &[
            ("FKS_MACHINES_ONLY", "maybe"),
            ("XDG_CONFIG_HOME", env!("CARGO_TARGET_TMPDIR")),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("FKS_MACHINES_ONLY"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn create_settings_in_the_environment_do_not_bother_other_commands() {
    // A shell that exported what `-c` reads (e.g. from `fks-lab env`) still lists: the
    // variables are not flags. The dead API makes the list itself fail with exit 1.
    let out = run(
        &["-l", "cp", LAB],
        &[("FKS_REGION_ZONES", "sjc=3"), ("FKS_MACHINES_ONLY", "1")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("go with -c or -a"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn two_short_forms_at_once_are_a_usage_error() {
    let out = run(&["-c", LAB, "-a", "web", LAB], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("one short form"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_api_fails_with_exit_1_and_names_the_app() {
    let out = run(
        &["create", LAB, "--timeout", "5"],
        &[("XDG_CONFIG_HOME", env!("CARGO_TARGET_TMPDIR"))],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("lab-cp"), "{}", stderr(&out));
}

#[test]
fn help_names_the_short_forms_and_the_re_run_promise() {
    let out = fks().args(["create", "--help"]).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("--dry-run") && text.contains("BOOTSTRAP_NODE_ID"),
        "{text}"
    );
    let top = stdout(&fks().arg("--help").output().expect("run"));
    assert!(
        top.contains("-c <CLUSTER_DIR>") && top.contains("-a <GROUP> <CLUSTER_DIR>"),
        "{top}"
    );
}
