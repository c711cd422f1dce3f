//! The `fks-lab` binary: parses flags, then `serve` runs `fks_lab::run` until SIGTERM/SIGINT;
//! `env` and `stop` talk to a running lab through files in its state dir (`listen`, `token`,
//! `lab.pid`); `logs` prints a machine's log straight from the state dir (the lab need not
//! run); `hosts` keeps a marked block of the lab's
//! `.internal` names in /etc/hosts. No API logic here.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The state dir's copy of the lines `serve` printed (mode 0600: it holds the token).
const ENV_FILE: &str = "env";

#[derive(Parser)]
#[command(
    name = "fks-lab",
    version,
    about = "A local Fly Machines platform for testing fks-bootstrap"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Machines API under /v1 and print the environment a client needs.
    Serve {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:4280")]
        listen: String,
        /// Where the state, token and pid file live.
        #[arg(long)]
        state_dir: PathBuf,
        /// Regions and zone counts, e.g. sjc=3,iad=3.
        #[arg(long, default_value = fks_lab::DEFAULT_ZONES)]
        zones: String,
        /// Fault spec, e.g. `latency=machines.create:200ms;rate_limits=on;error_rate=0.05`.
        #[arg(long, default_value = "")]
        faults: String,
        /// Seed for ids and fault decisions (random when absent; printed at start).
        #[arg(long)]
        seed: Option<u64>,
        /// API token (generated and stored in the state dir when absent).
        #[arg(long, env = "FKS_LAB_TOKEN")]
        token: Option<String>,
        /// Transition times, e.g. launch=50ms,boot=200ms,stop=100ms,destroy=100ms.
        #[arg(long, default_value = "")]
        timings: String,
        /// Run started machines as real guests (needs root; without it the lab runs API-only).
        #[arg(long)]
        guests: bool,
    },
    /// Print a machine's log (its init's stdout and stderr).
    Logs {
        #[arg(long)]
        state_dir: PathBuf,
        /// The machine id.
        machine_id: String,
        /// Keep printing what is appended (until interrupted).
        #[arg(long)]
        follow: bool,
    },
    /// Keep the lab's started machines' `.internal` names in a marked block of /etc/hosts
    /// (asked from the lab's DNS), so the host resolves them; apply again after changes.
    Hosts {
        /// Write (or refresh) the block.
        #[arg(long, conflicts_with = "remove", required_unless_present = "remove")]
        apply: bool,
        /// Remove the block (nothing to do when there is none).
        #[arg(long)]
        remove: bool,
        /// The hosts file to edit.
        #[arg(long, default_value = "/etc/hosts")]
        hosts_file: PathBuf,
        /// The lab's DNS (default: the lab bridge's resolver, [fdaa::3]:53).
        #[arg(long)]
        dns: Option<std::net::SocketAddr>,
        /// The lab bridge, which names the block (default fkslab0).
        #[arg(long)]
        bridge: Option<String>,
    },
    /// Print the environment lines of a running lab again: FLY_API_HOSTNAME, FLY_API_TOKEN,
    /// FLY_API_BASE_URL (GraphQL: WireGuard peers),
    /// FKS_REGION_ZONES and FKS_MACHINES_ONLY (1 when no guests run), for `eval`.
    Env {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Stop a running lab (SIGTERM, then wait for it to exit).
    Stop {
        #[arg(long)]
        state_dir: PathBuf,
    },
}

fn hosts(
    apply: bool,
    hosts_file: &Path,
    dns: Option<std::net::SocketAddr>,
    bridge: Option<String>,
) -> Result<()> {
    let defaults = fks_lab::guest::BridgeConfig::default();
    let bridge = bridge.unwrap_or(defaults.name);
    if !apply {
        let changed = fks_lab::hosts::apply(hosts_file, &bridge, None)?;
        eprintln!(
            "fks-lab: {} the {bridge} block of {}",
            if changed { "removed" } else { "no change:" },
            hosts_file.display()
        );
        return Ok(());
    }
    let server = dns.unwrap_or(std::net::SocketAddr::new(defaults.dns6.into(), 53));
    let entries = fks_lab::hosts::lookup(server)?;
    let block = fks_lab::hosts::render_block(&entries);
    let changed = fks_lab::hosts::apply(hosts_file, &bridge, Some(&block))?;
    print!("{block}");
    eprintln!(
        "fks-lab: {} {} with {} started machine(s) from the lab dns at {server}",
        if changed { "updated" } else { "no change:" },
        hosts_file.display(),
        entries.len()
    );
    Ok(())
}

fn logs(state_dir: &Path, machine_id: &str, follow: bool) -> Result<()> {
    use std::io::{Read, Seek};
    let path = fks_lab::runner::log_path(state_dir, machine_id);
    let mut f = std::fs::File::open(&path).with_context(|| {
        format!(
            "reading the log of machine {machine_id} ({}): has it ever started as a guest?",
            path.display()
        )
    })?;
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        f.read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        out.write_all(&buf)?;
        out.flush()?;
        if !follow {
            return Ok(());
        }
        // A restart of the guest appends; a removed-and-recreated file starts over.
        let pos = f.stream_position()?;
        if std::fs::metadata(&path).is_ok_and(|m| m.len() < pos) {
            f.seek(std::io::SeekFrom::Start(0))?;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    fks_lab::write_private(path, contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn read_trim(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

fn running_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("lab.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    kill(Pid::from_raw(pid), None).ok().map(|_| pid)
}

fn token_for(dir: &Path, given: Option<String>) -> Result<String> {
    let path = dir.join("token");
    if let Some(t) = given {
        write_private(&path, &t)?;
        return Ok(t);
    }
    if path.exists() {
        return read_trim(&path);
    }
    let t: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:x}", rng.random_range(0..16u8)))
            .collect()
    };
    write_private(&path, &t)?;
    Ok(t)
}

/// The `export NAME=value` lines of [`fks_lab::client_env`] (values are plain: URLs, hex,
/// zone lists and digits, nothing a shell would expand).
fn env_lines(addr: &str, token: &str, zones: &[(String, usize)], guests: bool) -> String {
    fks_lab::client_env(&format!("http://{addr}"), token, zones, guests)
        .into_iter()
        .map(|(k, v)| format!("export {k}={v}\n"))
        .collect()
}

fn print_env(lines: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(lines.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    listen: String,
    state_dir: PathBuf,
    zones: String,
    faults: String,
    seed: Option<u64>,
    token: Option<String>,
    timings: String,
    guests: bool,
) -> Result<()> {
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    // Guests' roots are overlay mounts of paths under the state dir, and the kernel's overlay
    // options take absolute paths only (`--state-dir .lab/state` is relative).
    let state_dir = std::fs::canonicalize(&state_dir)
        .with_context(|| format!("resolving {}", state_dir.display()))?;
    if let Some(pid) = running_pid(&state_dir) {
        bail!("a lab is already running on {} (pid {pid}); stop it with `fks-lab stop --state-dir {}`", state_dir.display(), state_dir.display());
    }
    let token = token_for(&state_dir, token)?;
    let registry = start_registry(&state_dir, &token).await?;
    let seed = seed.unwrap_or_else(rand::random);
    let opts = fks_lab::Options {
        state_dir: state_dir.clone(),
        zones: fks_lab::parse_zones(&zones)?,
        faults: fks_lab::Faults::parse(&faults)?,
        seed,
        token: token.clone(),
        timings: fks_lab::Timings::parse(&timings)?,
        guests: guests && nix::unistd::geteuid().is_root(),
        bridge: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener
        .local_addr()
        .context("reading the bound address")?
        .to_string();
    std::fs::write(state_dir.join("listen"), &addr).context("writing the listen file")?;
    // `fks-lab env` prints the same lines again (written before the pid file, which tells
    // `env` that the lab runs); the file holds the token, so it is private.
    let mut lines = env_lines(&addr, &token, &opts.zones, opts.guests);
    if registry.is_some() {
        lines.push_str(&fks_lab::registry::env_lines(&state_dir).unwrap_or_default());
    }
    write_private(&state_dir.join(ENV_FILE), &lines)?;
    std::fs::write(state_dir.join("lab.pid"), std::process::id().to_string())
        .context("writing the pid file")?;
    if opts.guests {
        eprintln!(
            "fks-lab: guests mode: started machines run as guests on bridge {}, .internal DNS on [{}]:53, logs in {}/machines/<id>/log",
            opts.bridge.name,
            opts.bridge.dns6,
            state_dir.display()
        );
    } else {
        if guests {
            eprintln!("fks-lab: --guests needs root (guests are network and mount namespaces), and this process is not root: running API-only instead");
        }
        eprintln!(
            "fks-lab: API-only mode: machine states change, nothing runs (no guests, exec is refused)"
        );
    }
    eprintln!(
        "fks-lab: listening on http://{addr}, state in {}, seed {seed}",
        state_dir.display()
    );
    let mut taken = std::collections::HashSet::new();
    for (region, n) in &opts.zones {
        eprintln!(
            "fks-lab: region {region} zones {}",
            fks_lab::ids::zone_ids(region, *n, &mut taken).join(",")
        );
    }
    // A reader that closed stdout after the first line must not take the server down.
    if let Err(e) = print_env(&lines) {
        eprintln!("fks-lab: could not print the environment lines: {e:#}");
    }
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    let result = fks_lab::run(listener, opts, shutdown).await;
    if let Some(r) = registry {
        r.stop().await;
    }
    let _ = std::fs::remove_file(state_dir.join("lab.pid"));
    result.context("running the lab")
}

/// The lab's registry (lab/src/registry.rs), or `None` with a warning when Debian's
/// docker-registry is not installed (the Machines API works without it).
async fn start_registry(
    state_dir: &Path,
    token: &str,
) -> Result<Option<fks_lab::registry::Registry>> {
    if !fks_lab::registry::available() {
        eprintln!(
            "fks-lab: WARNING: no registry: {}",
            fks_lab::registry::Error::Missing
        );
        return Ok(None);
    }
    let r = fks_lab::registry::Registry::start(state_dir, token).await?;
    eprintln!(
        "fks-lab: registry on http://{} (user {}, password the token), storage in {}",
        r.host(),
        fks_lab::registry::USER,
        r.storage().display()
    );
    Ok(Some(r))
}

fn stop(state_dir: &Path) -> Result<()> {
    let Some(pid) = running_pid(state_dir) else {
        bail!("no lab is running on {}", state_dir.display());
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM).with_context(|| format!("signalling pid {pid}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Done when the process is gone, or when it removed its pid file (it does so after the
    // final snapshot; a parent that has not reaped it yet keeps a zombie that still answers).
    let pid_file = state_dir.join("lab.pid");
    while kill(Pid::from_raw(pid), None).is_ok() && pid_file.exists() {
        if Instant::now() > deadline {
            bail!("the lab (pid {pid}) did not exit within 30s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("fks-lab: stopped pid {pid}");
    Ok(())
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a redirected stderr stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            listen,
            state_dir,
            zones,
            faults,
            seed,
            token,
            timings,
            guests,
        } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(serve(
                listen, state_dir, zones, faults, seed, token, timings, guests,
            )),
            Err(e) => Err(anyhow::Error::new(e).context("starting the runtime")),
        },
        Command::Env { state_dir } => (|| {
            if running_pid(&state_dir).is_none() {
                bail!("no lab is running on {}", state_dir.display());
            }
            let path = state_dir.join(ENV_FILE);
            let lines = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            print_env(&lines)
        })(),
        Command::Stop { state_dir } => stop(&state_dir),
        Command::Hosts {
            apply,
            remove: _,
            hosts_file,
            dns,
            bridge,
        } => hosts(apply, &hosts_file, dns, bridge),
        Command::Logs {
            state_dir,
            machine_id,
            follow,
        } => logs(&state_dir, &machine_id, follow),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fks-lab: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
