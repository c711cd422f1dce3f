//! The command line: clap definitions, one file per command, and the mapping of results to
//! exit codes (0 success, 1 the operation failed, 2 usage or configuration error).
//!
//! stdout carries results; progress, logs and errors go to stderr.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod check_kernel;
mod completions;
mod render;
mod validate;

/// What a command can end with, besides success. The variant decides the exit code; the
/// message chain is printed once by [`main`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's input (flags or cluster config) is wrong: exit 2.
    #[error(transparent)]
    Usage(anyhow::Error),
    /// The operation was attempted and failed: exit 1.
    #[error(transparent)]
    Failed(anyhow::Error),
}

impl Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::from(2),
            Error::Failed(_) => ExitCode::from(1),
        }
    }
}

const EXAMPLES: &str = "\
Examples:
  fks-bootstrap validate clusters/lab
  fks-bootstrap render clusters/lab --node ctrl-0 --private-ip fdaa:0:1:a7b:1:2:3:2 --ipv4 172.19.0.2
  fks-bootstrap check-kernel --cluster clusters/lab
  fks-bootstrap completions bash > /etc/bash_completion.d/fks-bootstrap";

/// Build and operate k3s clusters on Fly.io Machines.
#[derive(Debug, Parser)]
#[command(name = "fks-bootstrap", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// More logging on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a kernel config for the options k3s on Fly needs.
    CheckKernel(check_kernel::Args),
    /// Print shell completions.
    Completions(completions::Args),
    /// Check a cluster config and print the resolved values.
    Validate(validate::Args),
    /// Print the k3s config.yaml a node would get.
    Render(render::Args),
}

/// Parse the process arguments, run the command and return its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, usage errors to stderr with 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let inner = match &e {
                Error::Usage(inner) | Error::Failed(inner) => inner,
            };
            eprintln!("fks-bootstrap: {inner:#}");
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::CheckKernel(args) => check_kernel::run(args),
        Command::Completions(args) => completions::run(args, &mut Cli::command()),
        Command::Validate(args) => validate::run(args),
        Command::Render(args) => render::run(args),
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
