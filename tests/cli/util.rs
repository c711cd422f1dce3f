//! Helpers shared by the CLI tests.

use std::process::{Command, Output};

/// The `fks-bootstrap` binary cargo built for this test run.
/// The binary, with no Fly login of the machine's user in reach: no `FLY_ACCESS_TOKEN`, and
/// flyctl's config directory pointed at a path that does not exist, so a test's token is only
/// what it sets itself.
pub fn fks() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fks-bootstrap"));
    cmd.env_remove("FLY_ACCESS_TOKEN")
        .env("FLY_CONFIG_DIR", "/nonexistent/fks-bootstrap-tests/.fly");
    cmd
}

/// stdout of a finished command, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
