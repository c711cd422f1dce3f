//! Helpers shared by the CLI tests.

use std::process::{Command, Output};

/// The `fks-bootstrap` binary cargo built for this test run.
pub fn fks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fks-bootstrap"))
}

/// stdout of a finished command, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
