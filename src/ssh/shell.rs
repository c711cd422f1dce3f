//! Interactive sessions: a remote shell wired to the local terminal (pty with the local TERM
//! and size, raw mode, window-size changes) or, when stdin is not a terminal, to plain pipes.
//! Must leave the local terminal as it found it on every way out: the raw-mode guard restores
//! it on drop (errors and panics), and SIGTERM/SIGHUP end the session through the same path.

use russh::ChannelMsg;
use rustix::termios::{self, OptionalActions, Termios};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use super::client::{signal_name, Client, Exit};
use super::Error;

/// A terminal size in characters and pixels (pixels are 0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    /// Columns.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
    /// Width in pixels.
    pub pix_width: u32,
    /// Height in pixels.
    pub pix_height: u32,
}

/// What to ask the server for when a pty is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    /// The TERM value for the remote side.
    pub term: String,
    /// The initial size.
    pub size: PtySize,
}

/// Used when the local TERM is unset: what OpenSSH's client falls back to as well.
const DEFAULT_TERM: &str = "vt100";

/// Puts the local terminal into raw mode and restores the saved settings when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enable() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing sensible to do if this fails (the terminal is gone); `Drop` cannot report it.
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

fn local_size() -> Option<PtySize> {
    let ws = termios::tcgetwinsize(std::io::stdout()).ok()?;
    Some(PtySize {
        cols: u32::from(ws.ws_col),
        rows: u32::from(ws.ws_row),
        pix_width: u32::from(ws.ws_xpixel),
        pix_height: u32::from(ws.ws_ypixel),
    })
}

/// Read the process's stdin on a plain thread, not a tokio blocking task: a blocked terminal
/// read would otherwise keep the runtime from shutting down after the session ends.
fn stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Forward an async reader into a channel of chunks; the channel closes at EOF.
fn reader_task<R: AsyncRead + Unpin + Send + 'static>(mut input: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = input.read(&mut buf).await {
            if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Local events an interactive session reacts to besides input.
struct Signals {
    winch: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            winch: signal(SignalKind::window_change())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

impl Client {
    /// An interactive shell on the process's own stdin/stdout/stderr; returns how the remote
    /// shell ended.
    ///
    /// When stdin and stdout are terminals: requests a pty with the local `TERM` and window
    /// size, puts the terminal in raw mode for the session (restored on every way out), and
    /// forwards window-size changes. Otherwise (pipes, files): no pty, stdin is sent as it is
    /// and closed at EOF, stderr stays separate.
    ///
    /// On a terminal this installs tokio handlers for SIGWINCH, SIGTERM and SIGHUP; tokio keeps
    /// them for the life of the process, so call this from a process that exits afterwards
    /// (`fks-bootstrap -s`). Stdin is read by a detached thread that may still be blocked in a
    /// read when this returns.
    pub async fn shell(&self) -> Result<Exit, Error> {
        let tty = termios::isatty(std::io::stdin()) && termios::isatty(std::io::stdout());
        if !tty {
            return self
                .session(
                    stdin_reader(),
                    &mut tokio::io::stdout(),
                    &mut tokio::io::stderr(),
                    None,
                    None,
                )
                .await;
        }
        let terminal = Terminal {
            term: std::env::var("TERM")
                .ok()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| DEFAULT_TERM.to_owned()),
            // A terminal that reports 0x0 (e.g. under `script` fed by a pipe) gets the default.
            size: local_size()
                .filter(|s| s.cols > 0 && s.rows > 0)
                .unwrap_or(PtySize {
                    cols: 80,
                    rows: 24,
                    pix_width: 0,
                    pix_height: 0,
                }),
        };
        let signals = Signals::new().map_err(self.local_err("installing signal handlers"))?;
        let raw = RawMode::enable().map_err(self.local_err("putting the terminal in raw mode"))?;
        let result = self
            .session(
                stdin_reader(),
                &mut tokio::io::stdout(),
                &mut tokio::io::stderr(),
                Some(terminal),
                Some(signals),
            )
            .await;
        drop(raw);
        result
    }

    /// An interactive shell on the given streams: `input` is sent until EOF, the remote output
    /// goes to `stdout`/`stderr`; `terminal` requests a pty (whose output all arrives on
    /// `stdout`). For callers that are not the process's own terminal, and for tests.
    pub async fn shell_with<R, O, E>(
        &self,
        input: R,
        stdout: &mut O,
        stderr: &mut E,
        terminal: Option<Terminal>,
    ) -> Result<Exit, Error>
    where
        R: AsyncRead + Unpin + Send + 'static,
        O: AsyncWrite + Unpin + ?Sized,
        E: AsyncWrite + Unpin + ?Sized,
    {
        self.session(reader_task(input), stdout, stderr, terminal, None)
            .await
    }

    async fn session<O, E>(
        &self,
        mut input: mpsc::Receiver<Vec<u8>>,
        stdout: &mut O,
        stderr: &mut E,
        terminal: Option<Terminal>,
        mut signals: Option<Signals>,
    ) -> Result<Exit, Error>
    where
        O: AsyncWrite + Unpin + ?Sized,
        E: AsyncWrite + Unpin + ?Sized,
    {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(self.session_err("opening a session channel"))?;
        // Replies come back in order: one for the pty request (if any), then one for the shell.
        let mut pending = Vec::new();
        if let Some(t) = &terminal {
            let s = t.size;
            channel
                .request_pty(
                    true,
                    &t.term,
                    s.cols,
                    s.rows,
                    s.pix_width,
                    s.pix_height,
                    &[],
                )
                .await
                .map_err(self.session_err("requesting a pty"))?;
            pending.push("pty");
        }
        channel
            .request_shell(true)
            .await
            .map_err(self.session_err("requesting a shell"))?;
        pending.push("shell");
        pending.reverse();

        let (mut reader, writer) = channel.split();
        let mut input_open = true;
        let mut exit = None;
        loop {
            tokio::select! {
                msg = reader.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        stdout.write_all(&data).await.map_err(self.local_err("writing stdout"))?;
                        stdout.flush().await.map_err(self.local_err("writing stdout"))?;
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        stderr.write_all(&data).await.map_err(self.local_err("writing stderr"))?;
                        stderr.flush().await.map_err(self.local_err("writing stderr"))?;
                    }
                    Some(ChannelMsg::Success) => {
                        pending.pop();
                    }
                    Some(ChannelMsg::Failure) => {
                        let request = pending.pop().unwrap_or("shell");
                        return Err(Error::Refused { node: self.node.clone(), addr: self.addr, request });
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        exit = Some(Exit::Code(exit_status));
                    }
                    Some(ChannelMsg::ExitSignal { signal_name: sig, core_dumped, .. }) => {
                        exit = Some(Exit::Signal { name: signal_name(&sig), core_dumped });
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
                chunk = input.recv(), if input_open => match chunk {
                    Some(bytes) => writer
                        .data_bytes(bytes)
                        .await
                        .map_err(self.session_err("sending input"))?,
                    None => {
                        input_open = false;
                        writer.eof().await.map_err(self.session_err("closing input"))?;
                    }
                },
                event = next_signal(&mut signals) => match event {
                    LocalSignal::Resize => {
                        if let Some(s) = local_size() {
                            writer
                                .window_change(s.cols, s.rows, s.pix_width, s.pix_height)
                                .await
                                .map_err(self.session_err("sending the window size"))?;
                        }
                    }
                    LocalSignal::Stop(signal) => {
                        // Best effort: the session is being abandoned either way.
                        let _ = writer.close().await;
                        return Err(Error::Interrupted { node: self.node.clone(), signal });
                    }
                },
            }
        }
        exit.ok_or_else(|| Error::NoExitStatus {
            node: self.node.clone(),
            addr: self.addr,
            command: "shell".into(),
        })
    }
}

enum LocalSignal {
    Resize,
    Stop(&'static str),
}

/// The next local signal of interest; pends forever when there are no handlers (no terminal).
async fn next_signal(signals: &mut Option<Signals>) -> LocalSignal {
    let Some(s) = signals else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = s.winch.recv() => LocalSignal::Resize,
        _ = s.term.recv() => LocalSignal::Stop("TERM"),
        _ = s.hup.recv() => LocalSignal::Stop("HUP"),
    }
}
