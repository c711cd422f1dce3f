//! One session channel of the node's SSH server: the requests that shape it (`pty-req`,
//! `env`), the process it starts (the login shell, or `$SHELL -c COMMAND` for `exec`), the
//! pumps between the channel and the process, and the end: the exit status (or the signal)
//! reported, then EOF and close.
//!
//! With a pty the process is a session leader on a fresh pseudo-terminal (pty-process), its
//! size follows `window-change`. Without one it gets pipes, stderr as extended data. Signals
//! from the client go to the process group, as sshd sends them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use russh::server::Handle;
use russh::{ChannelId, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};

use super::children::Registered;
use super::{ChildExit, ChildExits};

/// The PATH a session gets when node init itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long output is still forwarded after the process exited (a background job may keep
/// the pty or a pipe open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The login user's shell and home, from the passwd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub shell: PathBuf,
    pub home: PathBuf,
}

/// `user`'s entry in a passwd text; `/bin/sh` and `/` when it has none (a slim image may not
/// list root at all).
pub fn login_for(passwd: &str, user: &str) -> Login {
    let entry = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() == 7 && fields[0] == user).then(|| (fields[5], fields[6]))
    });
    let (home, shell) = entry.unwrap_or(("/", "/bin/sh"));
    Login {
        shell: PathBuf::from(if shell.is_empty() { "/bin/sh" } else { shell }),
        home: PathBuf::from(if home.is_empty() { "/" } else { home }),
    }
}

#[derive(Debug, Clone, Copy)]
struct PtySize {
    rows: u16,
    cols: u16,
}

impl PtySize {
    /// The client's size (u32 on the wire), clamped to what a pty holds.
    fn clamped(cols: u32, rows: u32) -> PtySize {
        let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        PtySize {
            rows: clamp(rows),
            cols: clamp(cols),
        }
    }
}

fn pty_size(cols: u32, rows: u32) -> pty_process::Size {
    let size = PtySize::clamped(cols, rows);
    pty_process::Size::new(size.rows, size.cols)
}

/// Input for the process: from the client's channel data, EOF and window changes.
enum Input {
    Data(Vec<u8>),
    Eof,
    Resize(pty_process::Size),
}

/// What starting a process needs from the connection.
pub(super) struct Start<'a> {
    pub id: ChannelId,
    pub handle: Handle,
    pub command: Option<String>,
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    pub passwd: &'a Path,
    pub exits: &'a ChildExits,
}

/// A session channel: requests gathered, then the running process.
#[derive(Default)]
pub(super) struct Channel {
    pty: Option<(String, PtySize)>,
    env: BTreeMap<String, String>,
    running: Option<Running>,
}

struct Running {
    pgid: Pid,
    input: mpsc::UnboundedSender<Input>,
    readers: Vec<AbortHandle>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The channel is gone: stop forwarding output. The input task ends when `input` is
        // dropped, which closes the pty master (SIGHUP to the session) or the stdin pipe.
        for r in &self.readers {
            r.abort();
        }
    }
}

impl Channel {
    /// `pty-req`: accepted once, before the process starts.
    pub fn request_pty(&mut self, term: &str, cols: u32, rows: u32) -> bool {
        if self.running.is_some() || self.pty.is_some() {
            return false;
        }
        self.pty = Some((term.to_owned(), PtySize::clamped(cols, rows)));
        true
    }

    /// `env`: only the locale (`LANG`, `LC_*`), as Debian's sshd accepts by default.
    pub fn request_env(&mut self, name: &str, value: &str) -> bool {
        let allowed = name == "LANG" || name.starts_with("LC_");
        let plain =
            !value.contains('\0') && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if self.running.is_some() || !allowed || !plain {
            return false;
        }
        self.env.insert(name.to_owned(), value.to_owned());
        true
    }

    pub fn resize(&mut self, cols: u32, rows: u32) {
        if let Some((_, size)) = &mut self.pty {
            *size = PtySize::clamped(cols, rows);
        }
        if let Some(r) = &self.running {
            let _ = r.input.send(Input::Resize(pty_size(cols, rows)));
        }
    }

    pub fn input(&self, data: &[u8]) {
        if let Some(r) = &self.running {
            let _ = r.input.send(Input::Data(data.to_vec()));
        }
    }

    pub fn eof(&mut self) {
        if let Some(r) = &self.running {
            let _ = r.input.send(Input::Eof);
        }
    }

    pub fn signal(&self, sig: &Sig) {
        let Some(r) = &self.running else { return };
        let Some(signal) = to_signal(sig) else {
            tracing::debug!(?sig, "ssh: ignoring an unknown signal");
            return;
        };
        if let Err(e) = killpg(r.pgid, signal) {
            tracing::debug!(pgid = %r.pgid, %signal, error = %e, "ssh: forwarding a signal");
        }
    }

    /// `shell` or `exec`: start the process once. Returns whether it started.
    pub fn start(&mut self, start: Start<'_>) -> bool {
        if self.running.is_some() {
            return false;
        }
        let passwd = std::fs::read_to_string(start.passwd).unwrap_or_default();
        let login = login_for(&passwd, super::USER);
        let env = self.environment(&login, &start);
        let pty = self.pty.as_ref().map(|(_, size)| *size);
        let result = start.exits.spawn_registered(|| {
            match pty {
                Some(size) => spawn_pty(&login, start.command.as_deref(), &env, size),
                None => spawn_pipes(&login, start.command.as_deref(), &env),
            }
            .map(|spawned| {
                let pid = spawned.pid;
                (spawned, pid)
            })
        });
        match result {
            Ok((spawned, registered)) => {
                // The command line may hold what the operator typed (a password, a token), so
                // the log at info says only whether it is a command; its text is for debug.
                let kind = if start.command.is_some() {
                    "command"
                } else {
                    "shell"
                };
                tracing::info!(peer = %start.peer, pid = spawned.pid, pty = self.pty.is_some(), kind, "ssh: session started");
                tracing::debug!(
                    pid = spawned.pid,
                    command = start.command.as_deref().unwrap_or("(shell)"),
                    "ssh: session command"
                );
                self.running = Some(spawned.run(start.id, start.handle, registered));
                true
            }
            Err(e) => {
                tracing::warn!(peer = %start.peer, error = %e, shell = %login.shell.display(), "ssh: starting the session's process");
                false
            }
        }
    }

    /// sshd's environment for a session, plus the machine's `FLY_*` runtime variables
    /// (reference/fly-machines-api.md §7) and node init's PATH (the image's binaries).
    fn environment(&self, login: &Login, start: &Start<'_>) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("FLY_"))
            .collect();
        env.insert(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into()),
        );
        env.insert("HOME".into(), login.home.display().to_string());
        env.insert("USER".into(), super::USER.into());
        env.insert("LOGNAME".into(), super::USER.into());
        env.insert("SHELL".into(), login.shell.display().to_string());
        if let Some(local) = start.local {
            env.insert(
                "SSH_CONNECTION".into(),
                format!(
                    "{} {} {} {}",
                    start.peer.ip(),
                    start.peer.port(),
                    local.ip(),
                    local.port()
                ),
            );
        }
        if let Some((term, _)) = &self.pty {
            env.insert("TERM".into(), term.clone());
        }
        env.extend(self.env.clone());
        env
    }
}

fn to_signal(sig: &Sig) -> Option<Signal> {
    Some(match sig {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) => format!("SIG{name}").parse().ok()?,
    })
}

fn to_sig(signal: i32) -> Sig {
    match Signal::try_from(signal) {
        Ok(Signal::SIGABRT) => Sig::ABRT,
        Ok(Signal::SIGALRM) => Sig::ALRM,
        Ok(Signal::SIGFPE) => Sig::FPE,
        Ok(Signal::SIGHUP) => Sig::HUP,
        Ok(Signal::SIGILL) => Sig::ILL,
        Ok(Signal::SIGINT) => Sig::INT,
        Ok(Signal::SIGKILL) => Sig::KILL,
        Ok(Signal::SIGPIPE) => Sig::PIPE,
        Ok(Signal::SIGQUIT) => Sig::QUIT,
        Ok(Signal::SIGSEGV) => Sig::SEGV,
        Ok(Signal::SIGTERM) => Sig::TERM,
        Ok(Signal::SIGUSR1) => Sig::USR1,
        Ok(other) => Sig::Custom(other.as_str().trim_start_matches("SIG").to_owned()),
        Err(_) => Sig::Custom(format!("{signal}")),
    }
}

/// argv[0] and arguments: `-sh` (a login shell, as sshd starts it) or `sh -c COMMAND`.
fn shell_args(login: &Login, command: Option<&str>) -> (String, Vec<String>) {
    match command {
        Some(c) => (
            login.shell.display().to_string(),
            vec!["-c".into(), c.to_owned()],
        ),
        None => {
            let base = login
                .shell
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sh".into());
            (format!("-{base}"), Vec::new())
        }
    }
}

fn home_dir(login: &Login) -> &Path {
    if login.home.is_dir() {
        &login.home
    } else {
        Path::new("/")
    }
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A started process and its ends.
struct Spawned {
    pid: i32,
    child: tokio::process::Child,
    stdin: Option<BoxWrite>,
    /// `Some` with a pty: the master's write half, which also resizes.
    pty: Option<pty_process::OwnedWritePty>,
    stdout: BoxRead,
    stderr: Option<BoxRead>,
}

fn spawn_pty(
    login: &Login,
    command: Option<&str>,
    env: &BTreeMap<String, String>,
    size: PtySize,
) -> std::io::Result<Spawned> {
    let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
    pty.resize(pty_process::Size::new(size.rows, size.cols))
        .map_err(std::io::Error::other)?;
    let (arg0, args) = shell_args(login, command);
    let child = pty_process::Command::new(&login.shell)
        .arg0(arg0)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(home_dir(login))
        .spawn(pts)
        .map_err(std::io::Error::other)?;
    let pid = child_pid(&child)?;
    let (read, write) = pty.into_split();
    Ok(Spawned {
        pid,
        child,
        stdin: None,
        pty: Some(write),
        stdout: Box::new(read),
        stderr: None,
    })
}

fn spawn_pipes(
    login: &Login,
    command: Option<&str>,
    env: &BTreeMap<String, String>,
) -> std::io::Result<Spawned> {
    let (arg0, args) = shell_args(login, command);
    let mut cmd = tokio::process::Command::new(&login.shell);
    cmd.arg0(arg0)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(home_dir(login))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own session, as sshd does, so signals reach the whole job.
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pid = child_pid(&child)?;
    let missing = || std::io::Error::other("child pipe missing");
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let stderr = child.stderr.take().ok_or_else(missing)?;
    Ok(Spawned {
        pid,
        child,
        stdin: Some(Box::new(stdin)),
        pty: None,
        stdout: Box::new(stdout),
        stderr: Some(Box::new(stderr)),
    })
}

fn child_pid(child: &tokio::process::Child) -> std::io::Result<i32> {
    child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| std::io::Error::other("child has no pid"))
}

impl Spawned {
    /// Start the pumps and the waiter; the returned value controls the process.
    fn run(self, id: ChannelId, handle: Handle, registered: Registered) -> Running {
        let Spawned {
            pid,
            child,
            stdin,
            pty,
            stdout,
            stderr,
        } = self;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(pump_input(rx, stdin, pty));
        let out = tokio::spawn(pump_output(stdout, handle.clone(), id, None));
        let err = stderr.map(|e| tokio::spawn(pump_output(e, handle.clone(), id, Some(1))));
        let mut readers = vec![out.abort_handle()];
        readers.extend(err.as_ref().map(JoinHandle::abort_handle));
        tokio::spawn(finish(child, registered, out, err, handle, id));
        Running {
            pgid: Pid::from_raw(pid),
            input: tx,
            readers,
        }
    }
}

async fn pump_input(
    mut rx: mpsc::UnboundedReceiver<Input>,
    mut stdin: Option<BoxWrite>,
    mut pty: Option<pty_process::OwnedWritePty>,
) {
    while let Some(input) = rx.recv().await {
        match input {
            Input::Data(bytes) => {
                let written = match (&mut stdin, &mut pty) {
                    (Some(w), _) => w.write_all(&bytes).await,
                    (None, Some(p)) => p.write_all(&bytes).await,
                    (None, None) => Ok(()),
                };
                if written.is_err() {
                    // The process closed its input; later data has nowhere to go.
                    stdin = None;
                }
            }
            // EOF closes a pipe; a terminal has no EOF of its own (the shell reads ^D).
            Input::Eof => stdin = None,
            Input::Resize(size) => {
                if let Some(p) = &pty {
                    if let Err(e) = p.resize(size) {
                        tracing::debug!(error = %e, "ssh: resizing the pty");
                    }
                }
            }
        }
    }
}

/// Forward one output stream to the channel until it ends (EOF, or EIO on a pty whose
/// every slave end is closed).
async fn pump_output(mut from: BoxRead, handle: Handle, id: ChannelId, ext: Option<u32>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let data = buf[..n].to_vec();
        let sent = match ext {
            Some(code) => handle.extended_data(id, code, data).await,
            None => handle.data(id, data).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Wait for the process, let its output drain, report how it ended, close the channel.
async fn finish(
    mut child: tokio::process::Child,
    registered: Registered,
    out: JoinHandle<()>,
    err: Option<JoinHandle<()>>,
    handle: Handle,
    id: ChannelId,
) {
    let exit = match registered {
        // Another part of this process (PID 1's supervisor) reaps it. `child` is kept until
        // then so tokio does not try to reap it as an orphan first.
        Some(rx) => rx.await.ok(),
        None => child.wait().await.ok().map(|status| {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => ChildExit::Code(code),
                (None, Some(sig)) => ChildExit::Signal(sig),
                (None, None) => ChildExit::Code(255),
            }
        }),
    };
    drop(child);
    let drained = async {
        let _ = out.await;
        if let Some(err) = err {
            let _ = err.await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drained).await;
    match exit {
        Some(ChildExit::Code(code)) => {
            let _ = handle
                .exit_status_request(id, u32::try_from(code).unwrap_or(255))
                .await;
        }
        Some(ChildExit::Signal(sig)) => {
            let _ = handle
                .exit_signal_request(id, to_sig(sig), false, String::new(), String::new())
                .await;
        }
        None => tracing::warn!(?id, "ssh: the session's exit status was lost"),
    }
    let _ = handle.eof(id).await;
    let _ = handle.close(id).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_comes_from_the_passwd_entry_or_defaults() {
        let passwd = "daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\nroot:x:0:0:root:/root:/bin/bash\n";
        assert_eq!(
            login_for(passwd, "root"),
            Login {
                shell: "/bin/bash".into(),
                home: "/root".into()
            }
        );
        assert_eq!(
            login_for("", "root"),
            Login {
                shell: "/bin/sh".into(),
                home: "/".into()
            }
        );
    }

    #[test]
    fn a_shell_is_a_login_shell_and_a_command_goes_through_dash_c() {
        let login = login_for("root:x:0:0::/root:/bin/bash", "root");
        assert_eq!(shell_args(&login, None), ("-bash".into(), vec![]));
        assert_eq!(
            shell_args(&login, Some("echo hi")),
            ("/bin/bash".into(), vec!["-c".into(), "echo hi".into()])
        );
    }

    #[test]
    fn only_locale_variables_are_accepted() {
        let mut chan = Channel::default();
        assert!(chan.request_env("LANG", "C.UTF-8"));
        assert!(chan.request_env("LC_ALL", "C"));
        assert!(!chan.request_env("LD_PRELOAD", "/tmp/x.so"));
        assert!(!chan.request_env("PATH", "/tmp"));
        assert_eq!(chan.env.len(), 2);
    }

    #[test]
    fn signals_map_both_ways() {
        assert_eq!(to_signal(&Sig::TERM), Some(Signal::SIGTERM));
        assert_eq!(
            to_signal(&Sig::Custom("USR2".into())),
            Some(Signal::SIGUSR2)
        );
        assert_eq!(to_signal(&Sig::Custom("NOPE".into())), None);
        assert!(matches!(to_sig(15), Sig::TERM));
        assert!(matches!(to_sig(12), Sig::Custom(ref s) if s == "USR2"));
    }
}
