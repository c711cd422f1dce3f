//! The command line: clap definitions, one file per command, and the mapping of results to
//! exit codes (0 success, 1 the operation failed, 2 usage or configuration error).
//!
//! stdout carries results; progress, logs and errors go to stderr.
//!
//! Two spellings of the operator commands, k3s.sh's short flags (`-l cp clusters/lab`) and
//! subcommands (`list cp clusters/lab`), parse into the same [`Command`] value: clap reads the
//! raw [`Cli`], then [`Cli::resolve`] turns a short form into its subcommand's variant. Adding
//! a short form is one field in [`ShortForms`] and one arm in `resolve`. Only commands that
//! work are in the parser.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod check_kernel;
mod completions;
mod create;
pub mod credentials;
mod destroy;
mod image;
mod kubeconfig;
mod kubectl;
mod list;
#[cfg(target_os = "linux")]
mod node;
mod nodegroup_remove;
mod output;
mod proxy;
mod render;
mod server_replace;
mod ssh;
mod status;
mod taint;
mod tunnel;
mod upgrade;
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
    /// A child's exit status passed through as this program's own (the remote command of
    /// `ssh -- CMD`, k3s's status at the end of `node init`); nothing more is printed.
    #[error("exited with status {0}")]
    Status(u8),
}

impl Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::from(2),
            Error::Failed(_) => ExitCode::from(1),
            Error::Status(code) => ExitCode::from(*code),
        }
    }
}

const EXAMPLES: &str = "\
Examples:
  fks-bootstrap -c clusters/lab                  (same as: create clusters/lab)
  fks-bootstrap -c clusters/lab --dry-run        (the plan; nothing changes)
  fks-bootstrap -a web clusters/lab              (same as: nodegroup add web clusters/lab)
  fks-bootstrap -l cp clusters/lab               (same as: list cp clusters/lab)
  fks-bootstrap list web clusters/lab --json     (node group web, as JSON)
  fks-bootstrap -s cp clusters/lab               (same as: ssh cp clusters/lab; a shell)
  fks-bootstrap ssh cp clusters/lab -- uptime    (one command, its exit code)
  fks-bootstrap -t clusters/lab                  (same as: taint clusters/lab)
  fks-bootstrap -k clusters/lab --merge          (kubeconfig to ~/.kube/lab, merged into ~/.kube/config)
  fks-bootstrap server replace ctrl-1 clusters/lab --dry-run   (the checks and the plan)
  fks-bootstrap -k clusters/lab --tunnel         (kubeconfig for `proxy` on https://127.0.0.1:16443)
  fks-bootstrap proxy clusters/lab               (the cluster's API on 127.0.0.1:16443, any host)
  fks-bootstrap kubectl clusters/lab -- get nodes
  fks-bootstrap destroy clusters/lab --dry-run   (what destroy would remove)
  fks-bootstrap destroy clusters/lab --yes       (no typed confirmation)
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
    #[command(flatten)]
    pub short: ShortForms,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// k3s.sh's short flags; each is the same command as a subcommand (see [`Cli::resolve`]).
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "k3s.sh short forms")]
pub struct ShortForms {
    /// Same as `create CLUSTER_DIR`: create (or converge) the control plane.
    #[arg(short = 'c', value_name = "CLUSTER_DIR")]
    pub create: Option<std::path::PathBuf>,
    /// Same as `nodegroup add GROUP CLUSTER_DIR`: add (or converge) a worker node group.
    #[arg(short = 'a', num_args = 2, value_names = ["GROUP", "CLUSTER_DIR"])]
    pub add: Option<Vec<String>>,
    /// Same as `list cp|GROUP CLUSTER_DIR`: the nodes of the control plane or of a group.
    #[arg(short = 'l', num_args = 2, value_names = ["cp|GROUP", "CLUSTER_DIR"])]
    pub list: Option<Vec<String>>,
    /// With -l: print a JSON array instead of a table; with -c or -a: the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Same as `ssh cp|GROUP CLUSTER_DIR`: a shell on (or, after `--`, a command run on) a node.
    #[arg(short = 's', num_args = 2, value_names = ["cp|GROUP", "CLUSTER_DIR"])]
    pub ssh: Option<Vec<String>>,
    /// With -s: the node to connect to.
    #[arg(long = "node", id = "ssh_node", value_name = "NAME", requires = "ssh")]
    pub ssh_node: Option<String>,
    /// With -s: the command to run instead of a shell.
    #[arg(last = true, id = "ssh_command", value_name = "CMD", requires = "ssh")]
    pub ssh_command: Vec<String>,
    /// Same as `taint CLUSTER_DIR`: taint the control plane CriticalAddonsOnly=true:NoExecute.
    #[arg(short = 't', value_name = "CLUSTER_DIR")]
    pub taint: Option<std::path::PathBuf>,
    /// Same as `kubeconfig CLUSTER_DIR`: export the kubeconfig to ~/.kube/<cluster>.
    #[arg(short = 'k', value_name = "CLUSTER_DIR")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// With -k: also merge into ~/.kube/config (or $KUBECONFIG's first file), after a backup.
    #[arg(long = "merge", id = "k_merge", requires = "kubeconfig")]
    pub k_merge: bool,
    /// With -k --merge: make the cluster the current context.
    #[arg(long = "use-context", id = "k_use_context", requires = "k_merge")]
    pub k_use_context: bool,
    /// With -k: write the kubeconfig here instead of ~/.kube/<cluster>.
    #[arg(
        long = "output",
        id = "k_output",
        value_name = "PATH",
        requires = "kubeconfig"
    )]
    pub k_output: Option<std::path::PathBuf>,
    /// With -k: a kubeconfig for `fks-bootstrap proxy` on this machine (https://127.0.0.1:PORT).
    #[arg(long = "tunnel", id = "k_tunnel", requires = "kubeconfig")]
    pub k_tunnel: bool,
    /// With -k --tunnel: the proxy's port (default 16443).
    #[arg(
        long = "port",
        id = "k_port",
        value_name = "PORT",
        requires = "k_tunnel",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub k_port: Option<u16>,
    /// With -c or -a: the run's flags.
    #[command(flatten)]
    pub run: create::RunFlags,
}

impl Cli {
    /// The command to run, whichever spelling was used. A short form together with a
    /// subcommand, or neither, is a usage error (exit 2).
    pub fn resolve(self) -> Result<Command, clap::Error> {
        use clap::error::ErrorKind;
        let ShortForms {
            create: create_dir,
            add,
            run,
            list,
            json,
            ssh,
            ssh_node,
            ssh_command,
            taint,
            kubeconfig,
            k_merge,
            k_use_context,
            k_output,
            k_tunnel,
            k_port,
        } = self.short;
        let two = |flag: &str, values: Vec<String>| {
            let [target, dir]: [String; 2] = values.try_into().map_err(|_| {
                Cli::command().error(
                    ErrorKind::WrongNumberOfValues,
                    format!("{flag} takes two values: cp|GROUP CLUSTER_DIR"),
                )
            })?;
            let target = list::parse_node_set(&target).map_err(|e| {
                Cli::command().error(ErrorKind::ValueValidation, format!("{flag}: {e}"))
            })?;
            Ok::<_, clap::Error>((target, std::path::PathBuf::from(dir)))
        };
        let given = [
            create_dir.is_some(),
            add.is_some(),
            list.is_some(),
            ssh.is_some(),
            taint.is_some(),
            kubeconfig.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(
                Cli::command().error(ErrorKind::ArgumentConflict, "use one short form at a time")
            );
        }
        if create_dir.is_none() && add.is_none() && !run.is_default() {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "--dry-run, --yes, --allow-shared-zones, --zones, --machines-only, --allow-missing-kernel-options, --timeout, --k3s-source, --k3s-standin and --k3s-mirror go with -c or -a (or after create / nodegroup add)",
            ));
        }
        if json && create_dir.is_none() && add.is_none() && list.is_none() {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "--json goes with -l, -c or -a (or after a subcommand that has it)",
            ));
        }
        let short = if let Some(cluster_dir) = create_dir {
            Some(Command::Create(create::Args {
                cluster_dir,
                json,
                run,
            }))
        } else if let Some(values) = add {
            let [group, dir]: [String; 2] = values.try_into().map_err(|_| {
                Cli::command().error(
                    ErrorKind::WrongNumberOfValues,
                    "-a takes two values: GROUP CLUSTER_DIR",
                )
            })?;
            Some(Command::Nodegroup(create::NodegroupArgs {
                command: create::NodegroupCommand::Add(create::GroupArgs {
                    group,
                    cluster_dir: dir.into(),
                    json,
                    run,
                }),
            }))
        } else if let Some(values) = ssh {
            let (nodes, cluster_dir) = two("-s", values)?;
            Some(Command::Ssh(ssh::Args {
                nodes,
                cluster_dir,
                node: ssh_node,
                command: ssh_command,
            }))
        } else if let Some(values) = list {
            let (nodes, cluster_dir) = two("-l", values)?;
            Some(Command::List(list::Args {
                nodes,
                cluster_dir,
                json,
            }))
        } else if let Some(cluster_dir) = taint {
            Some(Command::Taint(taint::Args {
                cluster_dir,
                dry_run: false,
            }))
        } else {
            kubeconfig.map(|cluster_dir| {
                Command::Kubeconfig(kubeconfig::Args {
                    cluster_dir,
                    merge: k_merge,
                    use_context: k_use_context,
                    output: k_output,
                    tunnel: k_tunnel,
                    port: k_port,
                })
            })
        };
        match (short, self.command) {
            (Some(_), Some(_)) => Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "use either a short form (-c, -a, -l, -s, -t, -k) or a subcommand, not both",
            )),
            (Some(cmd), None) | (None, Some(cmd)) => Ok(cmd),
            (None, None) => Err(Cli::command().error(
                ErrorKind::MissingSubcommand,
                "no command given: pass a subcommand or a short form such as -l (see --help)",
            )),
        }
    }
}

/// What to run: the subcommands, and the value every short form resolves into.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create (or converge) the control plane: three servers in distinct zones (-c).
    #[command(after_help = create::AFTER_HELP)]
    Create(create::Args),
    /// Worker node groups: `nodegroup add GROUP CLUSTER_DIR` (-a).
    #[command(after_help = create::AFTER_HELP)]
    Nodegroup(create::NodegroupArgs),
    /// List the nodes of the control plane (cp) or of one node group (-l).
    List(list::Args),
    /// A shell on a node of the control plane (cp) or of a node group, or one command (-s).
    #[command(after_help = ssh::AFTER_HELP)]
    Ssh(ssh::Args),
    /// Taint every control-plane server CriticalAddonsOnly=true:NoExecute (-t).
    Taint(taint::Args),
    /// Per node: machine state and image, k3s version, Ready, etcd member health (exit 1 when
    /// anything is unhealthy).
    Status(status::Args),
    /// Export the cluster's kubeconfig to ~/.kube/<cluster>, optionally merged (-k).
    Kubeconfig(kubeconfig::Args),
    /// Control-plane servers: `server replace ctrl-N CLUSTER_DIR`.
    Server(server_replace::ServerArgs),
    /// Roll a k3s version (--k3s-version V, or the config's K3S_VERSION) or any config change
    /// out: servers one at a time, then each node group in batches; refuses a skipped or
    /// downgraded Kubernetes minor.
    Upgrade(upgrade::Args),
    /// Remove this cluster's machines, volumes, secrets and apps, and nothing else.
    #[command(after_help = destroy::AFTER_HELP)]
    Destroy(destroy::Args),
    /// Check a kernel config for the options k3s on Fly needs.
    CheckKernel(check_kernel::Args),
    /// Print shell completions.
    Completions(completions::Args),
    /// Check a cluster config and print the resolved values.
    Validate(validate::Args),
    /// Print the k3s config.yaml a node would get.
    Render(render::Args),
    /// Commands that run on a cluster machine (`node init` is its entrypoint).
    #[cfg(target_os = "linux")]
    Node(node::Args),
    /// The node image: `image build CLUSTER_DIR [--push]`.
    Image(image::Args),
    /// The built-in WireGuard tunnel's peer: `tunnel up|down CLUSTER_DIR`.
    #[command(after_help = tunnel::AFTER_HELP)]
    Tunnel(tunnel::Args),
    /// Forward 127.0.0.1:PORT (default 16443) to the Kubernetes API of a started server,
    /// failing over to another one; directly or through the built-in WireGuard tunnel.
    #[command(after_help = proxy::AFTER_HELP)]
    Proxy(proxy::Args),
    /// Run kubectl against the cluster with the proxy up for its duration: `kubectl
    /// CLUSTER_DIR -- ARGS`.
    #[command(after_help = kubectl::AFTER_HELP)]
    Kubectl(kubectl::Args),
}

/// Parse the process arguments, run the command and return its exit code.
pub fn main() -> ExitCode {
    let parsed = Cli::try_parse().and_then(|cli| {
        let verbose = cli.verbose;
        cli.resolve().map(|command| (verbose, command))
    });
    let (verbose, command) = match parsed {
        Ok(parsed) => parsed,
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
    init_tracing(verbose);
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                Error::Usage(inner) | Error::Failed(inner) => eprintln!("fks-bootstrap: {inner:#}"),
                Error::Status(_) => {}
            }
            e.exit_code()
        }
    }
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Create(args) => create::run(args),
        Command::Nodegroup(args) => create::run_group(args),
        Command::List(args) => list::run(args),
        Command::Ssh(args) => ssh::run(args),
        Command::Taint(args) => taint::run(args),
        Command::Status(args) => status::run(args),
        Command::Kubeconfig(args) => kubeconfig::run(args),
        Command::Server(args) => server_replace::run(args),
        Command::Upgrade(args) => upgrade::run(args),
        Command::Destroy(args) => destroy::run(args),
        Command::CheckKernel(args) => check_kernel::run(args),
        Command::Completions(args) => completions::run(args, &mut Cli::command()),
        Command::Validate(args) => validate::run(args),
        Command::Render(args) => render::run(args),
        #[cfg(target_os = "linux")]
        Command::Node(args) => node::run(args),
        Command::Image(args) => image::run(args),
        Command::Tunnel(args) => tunnel::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Kubectl(args) => kubectl::run(args),
    }
}

/// The cluster config of `dir`: an unreadable file fails (exit 1), a wrong one is a usage
/// error (exit 2), as `validate` reports them.
pub(crate) fn load_config(dir: &std::path::Path) -> Result<crate::config::Config, Error> {
    crate::config::load(dir).map_err(|e| match e {
        crate::config::Error::Read { .. } => Error::Failed(e.into()),
        _ => Error::Usage(e.into()),
    })
}

/// The Fly client for `FLY_API_HOSTNAME` with the token of [`credentials`] (the environment,
/// else flyctl's config file); a missing or malformed value is a usage error (exit 2).
pub(crate) fn fly_client() -> Result<crate::fly::Client, Error> {
    let token = credentials::token_from_env()
        .map_err(|e| Error::Usage(e.into()))?
        .map(|(token, _source)| token);
    crate::fly::Client::from_values(
        token,
        std::env::var("FLY_API_HOSTNAME").ok(),
        crate::fly::Options::default(),
    )
    .map_err(|e| Error::Usage(e.into()))
}

/// A runtime for one command's API calls (concurrent I/O needs no extra threads).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(anyhow::Error::new(e).context("starting the async runtime")))
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
        // Colours only on a terminal: a log piped to a file or a CI job stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("fks-bootstrap").chain(args.iter().copied()))
            .and_then(Cli::resolve)
    }

    /// Debug text of the resolved command: both spellings must give the same value.
    fn resolved(args: &[&str]) -> String {
        format!("{:?}", resolve(args).expect("parses"))
    }

    #[test]
    fn short_list_is_the_list_subcommand() {
        assert_eq!(
            resolved(&["-l", "cp", "clusters/lab"]),
            resolved(&["list", "cp", "clusters/lab"])
        );
        assert_eq!(
            resolved(&["-l", "web", "clusters/lab", "--json"]),
            resolved(&["list", "web", "clusters/lab", "--json"])
        );
        assert_eq!(
            resolved(&["-v", "-l", "web", "clusters/lab"]),
            resolved(&["list", "web", "clusters/lab"])
        );
    }

    #[test]
    fn short_list_needs_both_values_and_a_valid_group() {
        for args in [&["-l"][..], &["-l", "cp"], &["-l", "Bad!", "clusters/lab"]] {
            let e = resolve(args).expect_err("usage error");
            assert!(e.use_stderr(), "{args:?}: {e}");
        }
    }

    #[test]
    fn json_without_l_and_l_with_a_subcommand_are_usage_errors() {
        assert!(resolve(&["--json"]).is_err());
        assert!(resolve(&["-l", "cp", "clusters/lab", "list", "cp", "clusters/lab"]).is_err());
        assert!(resolve(&[]).is_err());
    }

    #[test]
    fn short_ssh_is_the_ssh_subcommand() {
        assert_eq!(
            resolved(&["-s", "cp", "clusters/lab"]),
            resolved(&["ssh", "cp", "clusters/lab"])
        );
        let short = resolved(&[
            "-s",
            "web",
            "clusters/lab",
            "--node",
            "w-1",
            "--",
            "sh",
            "-c",
            "echo $(id)",
        ]);
        assert_eq!(
            short,
            resolved(&[
                "ssh",
                "web",
                "clusters/lab",
                "--node",
                "w-1",
                "--",
                "sh",
                "-c",
                "echo $(id)",
            ])
        );
        assert!(
            short.contains(r#"command: ["sh", "-c", "echo $(id)"]"#),
            "{short}"
        );
        for args in [
            &["--node", "x"][..],
            &["-s", "cp"],
            &["-s", "cp", "d", "-l", "cp", "d"],
        ] {
            assert!(resolve(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn short_taint_and_kubeconfig_are_their_subcommands() {
        assert_eq!(
            resolved(&["-t", "clusters/lab"]),
            resolved(&["taint", "clusters/lab"])
        );
        assert_eq!(
            resolved(&["-k", "clusters/lab"]),
            resolved(&["kubeconfig", "clusters/lab"])
        );
        let short = resolved(&[
            "-k",
            "clusters/lab",
            "--merge",
            "--use-context",
            "--output",
            "/x",
        ]);
        assert_eq!(
            short,
            resolved(&[
                "kubeconfig",
                "clusters/lab",
                "--merge",
                "--use-context",
                "--output",
                "/x"
            ])
        );
        assert!(
            short.contains("merge: true") && short.contains("use_context: true"),
            "{short}"
        );
        for args in [
            &["-t"][..],
            &["-k"],
            &["--merge"],
            &["-k", "d", "--use-context"],
            &["kubeconfig", "d", "--use-context"],
            &["-t", "d", "-k", "d"],
            &["-t", "d", "-l", "cp", "d"],
            &["-t", "d", "taint", "d"],
        ] {
            assert!(resolve(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn json_and_the_k3s_flags_go_with_c_and_a_in_both_spellings() {
        let args = ["--json", "--k3s-source", "file", "/k", "--k3s-standin"];
        let short = resolved(&[&["-c", "d"][..], &args].concat());
        assert_eq!(short, resolved(&[&["create", "d"][..], &args].concat()));
        assert!(
            short.contains("json: true") && short.contains("k3s_standin: true"),
            "{short}"
        );
        assert_eq!(
            resolved(&[&["-a", "0", "d"][..], &args].concat()),
            resolved(&[&["nodegroup", "add", "0", "d"][..], &args].concat())
        );
        for bad in [
            &["-t", "d", "--json"][..],
            &["-t", "d", "--k3s-standin"],
            &["--k3s-source", "download"],
        ] {
            assert!(resolve(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_replace_parses_its_flags_and_needs_node_and_dir() {
        let text = resolved(&[
            "server",
            "replace",
            "ctrl-1",
            "clusters/lab",
            "--yes",
            "--dry-run",
            "--timeout",
            "240",
        ]);
        for want in [
            "node: \"ctrl-1\"",
            "yes: true",
            "dry_run: true",
            "timeout: 240",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert!(resolve(&["server", "replace", "ctrl-1"]).is_err());
        assert!(resolve(&["server", "replace", "ctrl-1", "d", "--timeout", "0"]).is_err());
    }

    #[test]
    fn destroy_parses_its_flags() {
        let text = resolved(&["destroy", "clusters/lab", "--yes", "--dry-run"]);
        assert!(
            text.contains("yes: true") && text.contains("dry_run: true"),
            "{text}"
        );
    }

    #[test]
    fn tunnel_kubeconfig_proxy_and_kubectl_parse() {
        let short = resolved(&["-k", "clusters/lab", "--tunnel", "--port", "20443"]);
        assert_eq!(
            short,
            resolved(&["kubeconfig", "clusters/lab", "--tunnel", "--port", "20443"])
        );
        assert!(
            short.contains("tunnel: true") && short.contains("port: Some(20443)"),
            "{short}"
        );
        for bad in [
            &["-k", "d", "--port", "20443"][..],
            &["kubeconfig", "d", "--port", "20443"],
            &["-k", "d", "--tunnel", "--port", "0"],
            &["--tunnel"],
        ] {
            assert!(resolve(bad).is_err(), "{bad:?}");
        }
        let proxy = resolved(&["proxy", "clusters/lab"]);
        assert!(proxy.contains("port: 16443"), "{proxy}");
        assert!(resolved(&["proxy", "d", "--port", "0"]).contains("port: 0"));
        let kubectl = resolved(&[
            "kubectl",
            "clusters/lab",
            "--",
            "get",
            "nodes",
            "-o",
            "$(id)",
        ]);
        assert!(
            kubectl.contains(r#"args: ["get", "nodes", "-o", "$(id)"]"#),
            "{kubectl}"
        );
    }
}
