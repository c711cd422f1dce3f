//! The command line of the stand-in binaries (`k3s-standin`, installed as `k3s` in the lab's
//! node image, and `k3s-standin-next`, the same program one Kubernetes minor later for upgrade
//! tests): `server`, `agent`, `kubectl` passthrough (also when invoked as `kubectl`),
//! `--version`. A stand-in, not k3s.
//!
//! Owns argument dispatch and exit codes. Must not run anything through a shell.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{self, Role};
use crate::log;
use crate::run;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "k3s-standin",
    about = "A test double for k3s (stand-in, NOT k3s): the slice of k3s server/agent that fks-bootstrap relies on",
    disable_version_flag = true
)]
struct Cli {
    /// Print the version (says it is a stand-in).
    #[arg(long, short = 'v')]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server (bootstrap with cluster-init, or join with server + token).
    Server {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run an agent (join with server + token).
    Agent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the real kubectl from PATH with KUBECONFIG=/etc/rancher/k3s/k3s.yaml unless set.
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Not provided by the stand-in (real k3s runs its check-config.sh).
    CheckConfig {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The first `kubectl` on PATH that is not this binary (so a `kubectl` symlink to the stand-in
/// does not exec itself).
fn find_kubectl() -> Option<PathBuf> {
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("kubectl"))
        .filter(|p| p.is_file())
        .find(|p| p.canonicalize().ok() != me)
}

fn kubectl(args: &[String]) -> ExitCode {
    let Some(path) = find_kubectl() else {
        eprintln!("k3s-standin: kubectl not found on PATH (the stand-in passes `k3s kubectl` through to a real kubectl)");
        return ExitCode::from(1);
    };
    let mut cmd = std::process::Command::new(&path);
    cmd.args(args);
    if std::env::var_os("KUBECONFIG").is_none() {
        cmd.env("KUBECONFIG", config::DEFAULT_KUBECONFIG);
    }
    let err = cmd.exec();
    eprintln!("k3s-standin: exec {}: {err}", path.display());
    ExitCode::from(1)
}

fn run_role(role: Role, args: &[String]) -> ExitCode {
    log::info(log::banner());
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let settings = match config::load(role, args, &env) {
        Ok(s) => s,
        Err(e) => {
            log::fatal(format!("Error: {e}"));
            return ExitCode::from(1);
        }
    };
    for w in &settings.warnings {
        log::warn(w);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            log::fatal(format!("starting the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match (role, settings.server.is_some()) {
            (Role::Agent, _) => run::agent(settings).await,
            (Role::Server, true) => run::joining_server(settings).await,
            (Role::Server, false) => run::bootstrap_server(settings).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::fatal(format!("Error: {e}"));
            ExitCode::from(1)
        }
    }
}

/// The binary's `main`: reports `version` (a Kubernetes version with the `+k3s-standin` tag)
/// in `--version`, its logs, `/version` and its Node objects' kubeletVersion.
pub fn main(version: &'static str) -> ExitCode {
    log::set_version(version);
    let argv: Vec<String> = std::env::args().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if invoked_as == "kubectl" {
        return kubectl(&argv[1..]);
    }
    let cli = Cli::parse();
    if cli.version {
        println!(
            "k3s-standin version {} (stand-in for k3s, not k3s)",
            log::version()
        );
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Server { args }) => run_role(Role::Server, &args),
        Some(Command::Agent { args }) => run_role(Role::Agent, &args),
        Some(Command::Kubectl { args }) => kubectl(&args),
        Some(Command::CheckConfig { .. }) => {
            eprintln!("k3s-standin: check-config is not provided by the stand-in (real k3s runs check-config.sh); use `fks-bootstrap check-kernel`");
            ExitCode::from(1)
        }
        None => {
            eprintln!(
                "k3s-standin: a stand-in for k3s, not k3s; use server, agent, kubectl or --version"
            );
            ExitCode::from(2)
        }
    }
}
