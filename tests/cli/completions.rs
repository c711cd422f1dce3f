use crate::util::{fks, stderr, stdout};

#[test]
fn completions_for_bash_name_the_binary_and_its_commands() {
    let out = fks()
        .args(["completions", "bash"])
        .output()
        .expect("run fks-bootstrap");
    assert!(out.status.success(), "exit {:?}", out.status);
    let text = stdout(&out);
    assert!(
        text.contains("_fks__bootstrap()"),
        "no completion function:\n{text}"
    );
    assert!(text.contains("completions"), "subcommand missing:\n{text}");
}

#[test]
fn unknown_subcommand_is_a_usage_error_with_exit_2() {
    let out = fks().arg("frobnicate").output().expect("run fks-bootstrap");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("frobnicate"), "{}", stderr(&out));
}
