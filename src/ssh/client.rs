//! The SSH client: connect to one node with its pinned host key, authenticate with the cluster
//! user key, run commands, move small files. Must not accept any host key other than the pinned
//! one (no trust-on-first-use, no switch to disable it) and must not pass user text to a remote
//! shell except as single-quoted words (`quote`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::keys::{fingerprint, UserKey};
use super::{quote, Error};

/// How long the TCP connect plus key exchange may take before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes stdin to `$1` atomically with mode `$2`: a temporary file in the same directory,
/// then `mv`. A constant: the path and mode arrive as positional parameters, never as code.
const WRITE_SCRIPT: &str = r#"set -eu
umask 077
dir=$(dirname -- "$1")
tmp=$(mktemp "$dir/.fks-write.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
chmod "$2" "$tmp"
mv -f -- "$tmp" "$1"
trap - EXIT"#;

/// How a remote command ended, as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `exit-status`: the command exited with this code.
    Code(u32),
    /// `exit-signal`: the command was killed by this signal (name without `SIG`).
    Signal {
        /// e.g. "TERM", "KILL".
        name: String,
        /// Whether the process dumped core.
        core_dumped: bool,
    },
}

impl Exit {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }

    /// The exit code, if the command exited (rather than being killed).
    pub fn code(&self) -> Option<u32> {
        match self {
            Exit::Code(c) => Some(*c),
            Exit::Signal { .. } => None,
        }
    }

    /// An exit code for the local process, shell convention: 128 + signal number for a
    /// signal (unknown signals give 255).
    pub fn local_code(&self) -> i32 {
        match self {
            Exit::Code(c) => i32::try_from(*c).unwrap_or(255),
            Exit::Signal { name, .. } => signal_number(name).map_or(255, |n| 128 + n),
        }
    }
}

fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => return None,
    })
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal { name, core_dumped } => {
                write!(f, "signal {name}")?;
                if *core_dumped {
                    write!(f, " (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// The collected result of [`Client::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub exit: Exit,
}

pub(super) fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        // The other variants are the signal names themselves.
        other => format!("{other:?}"),
    }
}

/// Why the handshake was abandoned: a transport error, or the host key check.
#[derive(Debug)]
pub(super) enum HandshakeError {
    Transport(russh::Error),
    Mismatch { presented: String },
}

impl From<russh::Error> for HandshakeError {
    fn from(e: russh::Error) -> Self {
        HandshakeError::Transport(e)
    }
}

/// The russh handler: accepts exactly one host key.
pub(super) struct PinnedHost {
    expected: PublicKey,
}

impl client::Handler for PinnedHost {
    type Error = HandshakeError;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match presented {
            // Compare the key material only: comments are not part of the wire key.
            PublicKeyOrCertificate::PublicKey { key, .. }
                if key.key_data() == self.expected.key_data() =>
            {
                Ok(true)
            }
            PublicKeyOrCertificate::PublicKey { key, .. } => Err(HandshakeError::Mismatch {
                presented: fingerprint(key),
            }),
            PublicKeyOrCertificate::Certificate(cert) => Err(HandshakeError::Mismatch {
                presented: format!(
                    "a certificate for {}",
                    cert.public_key().fingerprint(HashAlg::Sha256)
                ),
            }),
        }
    }
}

/// An authenticated SSH connection to one node.
pub struct Client {
    pub(super) node: String,
    pub(super) addr: SocketAddr,
    pub(super) handle: Handle<PinnedHost>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.node)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Client {
    /// Connect to `node` at `addr`, refuse the server unless it presents `host_key` (the key
    /// fks-bootstrap generated for that node), and authenticate as `user` with `identity`.
    pub async fn connect(
        node: &str,
        addr: SocketAddr,
        user: &str,
        identity: &UserKey,
        host_key: &PublicKey,
    ) -> Result<Self, Error> {
        Self::connect_over(
            node,
            addr,
            None::<tokio::io::DuplexStream>,
            user,
            identity,
            host_key,
        )
        .await
    }

    /// [`Client::connect`] over `stream` when given (a connection through the userspace
    /// WireGuard tunnel, `crate::tunnel`) instead of a TCP connection to `addr`, which then
    /// only names the node in messages.
    pub async fn connect_over<S>(
        node: &str,
        addr: SocketAddr,
        stream: Option<S>,
        user: &str,
        identity: &UserKey,
        host_key: &PublicKey,
    ) -> Result<Self, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let config = Arc::new(client::Config {
            // Interactive sessions may sit idle for hours; keepalives detect dead peers instead.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            nodelay: true,
            ..client::Config::default()
        });
        let handler = PinnedHost {
            expected: host_key.clone(),
        };
        let connecting: std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<client::Handle<PinnedHost>, HandshakeError>>
                    + Send,
            >,
        > = match stream {
            Some(s) => Box::pin(client::connect_stream(config, s, handler)),
            None => Box::pin(client::connect(config, addr, handler)),
        };
        let mut handle = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    node: node.to_owned(),
                    addr,
                    seconds: CONNECT_TIMEOUT.as_secs(),
                })
            }
            Ok(Ok(handle)) => handle,
            Ok(Err(HandshakeError::Mismatch { presented })) => {
                return Err(Error::HostKeyMismatch {
                    node: node.to_owned(),
                    addr,
                    expected: fingerprint(host_key),
                    presented,
                })
            }
            Ok(Err(HandshakeError::Transport(source))) => {
                return Err(Error::Connect {
                    node: node.to_owned(),
                    addr,
                    source: Box::new(source),
                })
            }
        };
        let key = PrivateKeyWithHashAlg::new(Arc::new(identity.private_key().clone()), None);
        let result = handle
            .authenticate_publickey(user, key)
            .await
            .map_err(|source| Error::Session {
                node: node.to_owned(),
                addr,
                action: "authenticating",
                source: Box::new(source),
            })?;
        if !result.success() {
            return Err(Error::AuthRefused {
                node: node.to_owned(),
                addr,
                user: user.to_owned(),
                fingerprint: fingerprint(identity.public_key()),
            });
        }
        tracing::debug!(node, %addr, user, "ssh connected");
        Ok(Self {
            node: node.to_owned(),
            addr,
            handle,
        })
    }

    /// The node this client is connected to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The address this client is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn session_err(&self, action: &'static str) -> impl FnOnce(russh::Error) -> Error {
        let (node, addr) = (self.node.clone(), self.addr);
        move |source| Error::Session {
            node,
            addr,
            action,
            source: Box::new(source),
        }
    }

    pub(super) fn local_err(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        let node = self.node.clone();
        move |source| Error::LocalIo {
            node,
            action,
            source,
        }
    }

    fn command_line(&self, argv: &[&str]) -> Result<String, Error> {
        quote::quote_command(argv).map_err(|reason| Error::BadCommand {
            node: self.node.clone(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            reason,
        })
    }

    /// Run `argv` and collect its output. Stdin is closed at once.
    ///
    /// sshd runs every command through the remote user's shell (`$SHELL -c`), so the argv is
    /// sent as a line of single-quoted words ([`super::quote_command`]): each argument arrives
    /// as exactly one argument, whatever spaces, quotes, `$(...)` or `;` it holds.
    pub async fn exec(&self, argv: &[&str]) -> Result<Output, Error> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let exit = self
            .exec_streaming(argv, None, &mut stdout, &mut stderr)
            .await?;
        Ok(Output {
            stdout,
            stderr,
            exit,
        })
    }

    /// Run `argv` (quoted as for [`Client::exec`]), send `stdin` (then EOF), and stream the
    /// command's stdout and stderr into the writers as they arrive.
    pub async fn exec_streaming<O, E>(
        &self,
        argv: &[&str],
        stdin: Option<&[u8]>,
        stdout: &mut O,
        stderr: &mut E,
    ) -> Result<Exit, Error>
    where
        O: AsyncWrite + Unpin + ?Sized,
        E: AsyncWrite + Unpin + ?Sized,
    {
        let command = self.command_line(argv)?;
        tracing::debug!(node = %self.node, command, "ssh exec");
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(self.session_err("opening a session channel"))?;
        channel
            .exec(true, command.as_bytes())
            .await
            .map_err(self.session_err("sending the exec request"))?;
        if let Some(input) = stdin {
            channel
                .data_bytes(input.to_vec())
                .await
                .map_err(self.session_err("sending stdin"))?;
        }
        channel
            .eof()
            .await
            .map_err(self.session_err("closing stdin"))?;
        let mut exit = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => stdout
                    .write_all(&data)
                    .await
                    .map_err(self.local_err("writing stdout"))?,
                // Extended data type 1 is stderr (RFC 4254 section 5.2).
                ChannelMsg::ExtendedData { data, ext: 1 } => stderr
                    .write_all(&data)
                    .await
                    .map_err(self.local_err("writing stderr"))?,
                ChannelMsg::ExitStatus { exit_status } => exit = Some(Exit::Code(exit_status)),
                ChannelMsg::ExitSignal {
                    signal_name: sig,
                    core_dumped,
                    ..
                } => {
                    exit = Some(Exit::Signal {
                        name: signal_name(&sig),
                        core_dumped,
                    })
                }
                ChannelMsg::Failure => {
                    return Err(Error::Refused {
                        node: self.node.clone(),
                        addr: self.addr,
                        request: "exec",
                    })
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        stdout
            .flush()
            .await
            .map_err(self.local_err("writing stdout"))?;
        stderr
            .flush()
            .await
            .map_err(self.local_err("writing stderr"))?;
        exit.ok_or_else(|| Error::NoExitStatus {
            node: self.node.clone(),
            addr: self.addr,
            command,
        })
    }

    /// The contents of the remote file `path` (via `cat`; fine for configs and kubeconfigs).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, Error> {
        let out = self.exec(&["cat", "--", path]).await?;
        if !out.exit.success() {
            return Err(self.remote_err("reading", path, out.exit, &out.stderr));
        }
        Ok(out.stdout)
    }

    /// Replace the remote file `path` with `contents` and permission bits `mode`, atomically
    /// (temporary file in the same directory, then rename). The directory must exist.
    pub async fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), Error> {
        let mode = format!("{:o}", mode & 0o7777);
        let argv = ["sh", "-c", WRITE_SCRIPT, "fks-write", path, &mode];
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let exit = self
            .exec_streaming(&argv, Some(contents), &mut stdout, &mut stderr)
            .await?;
        if !exit.success() {
            return Err(self.remote_err("writing", path, exit, &stderr));
        }
        Ok(())
    }

    fn remote_err(&self, action: &'static str, path: &str, exit: Exit, stderr: &[u8]) -> Error {
        Error::Remote {
            node: self.node.clone(),
            action,
            path: path.to_owned(),
            exit,
            stderr: String::from_utf8_lossy(stderr).trim().to_owned(),
        }
    }

    /// Say goodbye to the server and close the connection.
    pub async fn close(self) -> Result<(), Error> {
        self.handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await
            .map_err(self.session_err("disconnecting"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_shell_convention() {
        assert!(Exit::Code(0).success());
        assert_eq!(Exit::Code(3).local_code(), 3);
        let killed = Exit::Signal {
            name: "TERM".into(),
            core_dumped: false,
        };
        assert_eq!(killed.local_code(), 143);
        assert_eq!(killed.code(), None);
        assert_eq!(killed.to_string(), "signal TERM");
    }

    #[test]
    fn signal_names_drop_the_enum_wrapping() {
        assert_eq!(signal_name(&Sig::KILL), "KILL");
        assert_eq!(signal_name(&Sig::Custom("WINCH".into())), "WINCH");
    }
}
