//! `fks-bootstrap completions SHELL`: print a completion script for SHELL on stdout.

use clap_complete::Shell;

/// Print shell completions.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: Args, cmd: &mut clap::Command) -> Result<(), super::Error> {
    let name = cmd.get_name().to_string();
    clap_complete::generate(args.shell, cmd, name, &mut std::io::stdout());
    Ok(())
}
