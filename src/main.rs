//! The `fks-bootstrap` binary: parse flags, run, map the result to an exit code, print one
//! error chain. Everything else lives in the library.

fn main() -> std::process::ExitCode {
    fks_bootstrap::cli::main()
}
