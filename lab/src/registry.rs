//! The lab's OCI registry: Debian's `docker-registry` (the CNCF distribution registry) run as a
//! child of `fks-lab serve`, on a loopback port, with HTTP Basic auth for user `x` and the lab
//! token as password, and its storage under `<state>/registry/data`. This is how Fly's
//! registry authenticates (reference/fly-runtime.md §3: Basic only, user `x`, password the
//! token); the lab has no TLS, so clients are told to speak plain HTTP to a loopback host.
//!
//! The port is chosen once and kept in `<state>/registry/port`, so image references stay valid
//! across lab restarts; the storage survives them too. The registry stops with the lab, also
//! when the lab is killed with SIGKILL (parent-death signal); one still found through
//! `<state>/registry/pid` is stopped at the next start. Must not: serve anything but loopback, or write outside
//! `<state>/registry`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The Debian package's program.
pub const PROGRAM: &str = "docker-registry";
/// The user name, as on Fly (reference/fly-runtime.md §3).
pub const USER: &str = "x";
/// How long the registry may take to answer after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// bcrypt cost of the htpasswd entry. distribution checks the password with bcrypt on every
/// request; the minimum cost keeps a push of a few blobs fast, and the file is only readable
/// by the lab's user on a loopback-only registry.
const BCRYPT_COST: u32 = 4;

/// Errors starting or stopping the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the lab's registry needs Debian's {PROGRAM} package (scripts/setup.sh installs it): not found on PATH")]
    Missing,
    #[error("registry: {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry: hashing the password")]
    Hash(#[source] bcrypt::BcryptError),
    #[error("registry: a blocking task of the start failed")]
    Join(#[source] tokio::task::JoinError),
    #[error("registry: starting {PROGRAM}")]
    Spawn(#[source] std::io::Error),
    #[error("registry: {PROGRAM} on {addr} did not become ready within {secs}s; its log {} ends with:\n{tail}", log.display())]
    NotReady {
        addr: SocketAddr,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A running registry; stopped by [`Registry::stop`] (or killed when dropped).
#[derive(Debug)]
pub struct Registry {
    child: tokio::process::Child,
    addr: SocketAddr,
    dir: PathBuf,
}

/// `<state>/registry`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("registry")
}

/// The registry's `host:port`, when a lab of this state dir has started one.
pub fn host(state_dir: &Path) -> Option<String> {
    let port = std::fs::read_to_string(dir(state_dir).join("port")).ok()?;
    let port: u16 = port.trim().parse().ok()?;
    Some(format!("127.0.0.1:{port}"))
}

/// The settings a client needs to reach the running registry of `state_dir`, as `export`
/// lines: the registry host (flyctl's `FLY_REGISTRY_HOST`) and plain HTTP for it. `None` when
/// no registry runs there (its pid file is removed when it stops).
pub fn env_lines(state_dir: &Path) -> Option<String> {
    if !dir(state_dir).join("pid").is_file() {
        return None;
    }
    let host = host(state_dir)?;
    Some(format!(
        "export FLY_REGISTRY_HOST={host}\nexport FKS_REGISTRY_PLAIN_HTTP=1\n"
    ))
}

/// Whether `docker-registry` is on PATH.
pub fn available() -> bool {
    find_program().is_some()
}

fn find_program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(PROGRAM))
        .find(|p| p.is_file())
}

/// A YAML string (JSON strings are YAML strings).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl Registry {
    /// Starts the registry of `state_dir` with `token` as the password of user `x`, and waits
    /// until it answers.
    pub async fn start(state_dir: &Path, token: &str) -> Result<Registry, Error> {
        let program = find_program().ok_or(Error::Missing)?;
        let dir = std::path::absolute(dir(state_dir)).map_err(io("resolving", state_dir))?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(io("creating", &data))?;
        // It waits (up to 5 s) for a leftover registry to go: not on an async worker.
        let leftover = dir.clone();
        let _ = tokio::task::spawn_blocking(move || stop_leftover(&leftover)).await;

        let port_file = dir.join("port");
        let port = match std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
        {
            Some(p) => p,
            None => {
                let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                    .map_err(io("finding a free port for", &dir))?;
                let p = probe
                    .local_addr()
                    .map_err(io("finding a free port for", &dir))?
                    .port();
                drop(probe);
                std::fs::write(&port_file, p.to_string()).map_err(io("writing", &port_file))?;
                p
            }
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

        let htpasswd = dir.join("htpasswd");
        // bcrypt is CPU work by design: on a blocking thread, not an async worker.
        let secret_token = token.to_string();
        let hash = tokio::task::spawn_blocking(move || bcrypt::hash(secret_token, BCRYPT_COST))
            .await
            .map_err(Error::Join)?
            .map_err(Error::Hash)?;
        write_private(&htpasswd, format!("{USER}:{hash}\n").as_bytes())?;
        let secret: String = {
            use rand::Rng;
            let mut rng = rand::rng();
            (0..32)
                .map(|_| format!("{:x}", rng.random_range(0..16u8)))
                .collect()
        };
        let config = dir.join("config.yml");
        let text = format!(
            "# Written by fks-lab at every start (lab/src/registry.rs).\n\
             version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: {secret}\n\
             auth:\n  htpasswd:\n    realm: fks-lab\n    path: {htpasswd}\n",
            data = yaml_str(&data.to_string_lossy()),
            addr = yaml_str(&addr.to_string()),
            secret = yaml_str(&secret),
            htpasswd = yaml_str(&htpasswd.to_string_lossy()),
        );
        write_private(&config, text.as_bytes())?;

        let log = dir.join("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io("opening", &log))?;
        let err = out.try_clone().map_err(io("opening", &log))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        // The registry must not outlive a lab killed with SIGKILL: the kernel sends it SIGTERM
        // when the thread that started it dies (this thread: the lab's main thread, or a
        // test's). A parent already gone before the prctl is caught by comparing pids.
        let parent = nix::unistd::getpid();
        let hook = move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                // No allocation after fork: a plain errno (the parent is gone).
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        };
        // SAFETY: the hook runs in the forked child before exec and only makes two system
        // calls (prctl, getppid), which are async-signal-safe, and allocates nothing (errors are
        // plain errno values).
        unsafe { cmd.pre_exec(hook) };
        let child = cmd.spawn().map_err(Error::Spawn)?;
        if let Some(pid) = child.id() {
            let pid_file = dir.join("pid");
            std::fs::write(&pid_file, pid.to_string()).map_err(io("writing", &pid_file))?;
        }
        let mut registry = Registry { child, addr, dir };
        registry.wait_ready(&log).await?;
        Ok(registry)
    }

    async fn wait_ready(&mut self, log: &Path) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let addr = self.addr;
            let answered = tokio::task::spawn_blocking(move || probe(addr))
                .await
                .unwrap_or(false);
            if answered {
                return Ok(());
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                let _ = self.child.start_kill();
                return Err(Error::NotReady {
                    addr: self.addr,
                    secs: READY_TIMEOUT.as_secs(),
                    log: log.to_path_buf(),
                    tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where its blobs are stored (`.../docker/registry/v2/...` below it).
    pub fn storage(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Stops it: SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
        let _ = std::fs::remove_file(self.dir.join("pid"));
    }
}

/// `GET /v2/` answered with an HTTP status line (401 without credentials).
fn probe(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.")
}

/// Stops a registry a killed lab left running: the recorded pid, if it is still this state
/// dir's `docker-registry` (its command line names our config file).
fn stop_leftover(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("pid")) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let config = dir.join("config.yml");
    let ours = String::from_utf8_lossy(&cmdline).contains(&*config.to_string_lossy())
        && String::from_utf8_lossy(&cmdline).contains(PROGRAM);
    if !ours {
        return;
    }
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while kill(pid, None).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid, Signal::SIGKILL);
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    crate::write_private(path, bytes).map_err(io("writing", path))
}
