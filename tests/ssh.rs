//! `ssh` against the node's own SSH server (`ssh::server`, what `node init` serves): each test
//! starts the server on 127.0.0.1 with the files `ClusterKeys::node_files` would deliver to a
//! machine, and drives `ssh::Client` and the real OpenSSH client (`ssh`, openssh-client from
//! scripts/setup.sh) against it. Needs no root: the server runs sessions as its own user.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fks_bootstrap::node::ssh::{prepare, Paths};
use fks_bootstrap::ssh::server::ChildExits;
use fks_bootstrap::ssh::{self, Client, ClusterKeys, Error, Exit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A cluster key store plus a "guest" directory holding the files delivered to a node.
struct Fixture {
    dir: tempfile::TempDir,
    keys: ClusterKeys,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = ClusterKeys::open(&dir.path().join("config"), "demo").expect("cluster keys");
        Self { dir, keys }
    }

    /// Write `node`'s delivered files under `guest/<node>/` (as the machine would get them)
    /// and return that root.
    fn deliver(&self, node: &str) -> PathBuf {
        let root = self.dir.path().join("guest").join(node);
        if root.exists() {
            return root;
        }
        for file in self.keys.node_files(node).expect("node files") {
            let path = root.join(file.guest_path.trim_start_matches('/'));
            let parent = path.parent().expect("guest paths are absolute files");
            std::fs::create_dir_all(parent).expect("guest dir");
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                .expect("chmod guest dir");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(file.mode)
                .open(&path)
                .expect("create guest file");
            std::io::Write::write_all(&mut f, &file.contents).expect("write guest file");
        }
        // The login shell comes from passwd, as on a node; bash runs a lone `-c` command with
        // exec, so a command killed by a signal is the session's process itself.
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n")
            .expect("write guest passwd");
        root
    }
}

/// The node's SSH server for one node's delivered files, on its own runtime thread (the
/// tests block on the OpenSSH client while it serves).
struct NodeSsh {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeSsh {
    fn start(fixture: &Fixture, node: &str, port: Option<u16>) -> Self {
        let root = fixture.deliver(node);
        let server = prepare(&Paths::under(&root), ChildExits::own())
            .expect("server")
            .expect("host key delivered");
        let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0))).expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    e = server.serve(listener) => panic!("server stopped: {e}"),
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
    }
}

impl Drop for NodeSsh {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connect(fixture: &Fixture, server: &NodeSsh, node: &str) -> Result<Client, Error> {
    let host = fixture.keys.host_key(node).expect("host key");
    Client::connect(
        node,
        server.addr,
        "root",
        fixture.keys.user_key(),
        host.public_key(),
    )
    .await
}

#[tokio::test]
async fn exec_returns_output_and_exit_status_with_pinned_key() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let client = connect(&fx, &server, "ctrl-1")
        .await
        .unwrap_or_else(|e| panic!("connect: {e:?}"));

    let ok = client.exec(&["true"]).await.expect("exec true");
    assert_eq!(ok.exit, Exit::Code(0));
    let out = client
        .exec(&["sh", "-c", "echo out; echo err >&2; exit 3"])
        .await
        .expect("exec sh");
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit, Exit::Code(3));
    let killed = client
        .exec(&["sh", "-c", "kill -TERM $$"])
        .await
        .expect("exec kill");
    assert_eq!(
        killed.exit,
        Exit::Signal {
            name: "TERM".into(),
            core_dumped: false
        }
    );
    client.close().await.expect("close");
}

#[tokio::test]
async fn exec_delivers_special_arguments_intact() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let client = connect(&fx, &server, "ctrl-1").await.expect("connect");
    let args = [
        "two words",
        "it's",
        "$(echo injected)",
        "`id`",
        "a; echo injected",
        "\"dq\"",
        "",
        "*",
        "back\\slash",
        "tab\there",
        "new\nline",
        "$HOME",
    ];
    let mut argv = vec!["printf", "[%s]\\n"];
    argv.extend(args);
    let out = client.exec(&argv).await.expect("exec printf");
    let expected: String = args.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    assert_eq!(out.exit, Exit::Code(0));
}

#[tokio::test]
async fn swapped_host_key_is_refused_naming_both_fingerprints() {
    let fx = Fixture::new();
    let mut server = NodeSsh::start(&fx, "ctrl-1", None);
    connect(&fx, &server, "ctrl-1")
        .await
        .expect("pinned key accepted")
        .close()
        .await
        .expect("close");
    let port = server.addr.port();
    server.stop();
    // Same address, now serving another node's host key.
    let impostor = NodeSsh::start(&fx, "ctrl-2", Some(port));
    let err = connect(&fx, &impostor, "ctrl-1")
        .await
        .expect_err("a different host key must be refused");
    let expected = ssh::fingerprint(fx.keys.host_key("ctrl-1").expect("k").public_key());
    let presented = ssh::fingerprint(fx.keys.host_key("ctrl-2").expect("k").public_key());
    assert!(
        matches!(&err, Error::HostKeyMismatch { node, expected: e, presented: p, .. }
            if node == "ctrl-1" && *e == expected && *p == presented),
        "{err:?}"
    );
    let msg = err.to_string();
    for needle in [
        "ctrl-1",
        &impostor.addr.to_string(),
        &expected,
        &presented,
        "refusing",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
}

#[tokio::test]
async fn wrong_user_key_is_refused_with_auth_error() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let other = ClusterKeys::open(&fx.dir.path().join("config"), "other").expect("other keys");
    let host = fx.keys.host_key("ctrl-1").expect("host key");
    let err = Client::connect(
        "ctrl-1",
        server.addr,
        "root",
        other.user_key(),
        host.public_key(),
    )
    .await
    .expect_err("a key not in authorized_keys must be refused");
    assert!(
        matches!(&err, Error::AuthRefused { node, user, fingerprint, .. }
            if node == "ctrl-1" && user == "root"
                && *fingerprint == ssh::fingerprint(other.user_key().public_key())),
        "{err:?}"
    );
}

/// The real OpenSSH client accepts the generated private key, authorized_keys, host key and
/// known_hosts lines, and rejects a known_hosts that pins another node's key.
#[tokio::test]
async fn openssh_client_accepts_generated_files() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let port = server.addr.port().to_string();
    let ssh_with = |known_hosts: &Path, extra: &[&str]| {
        Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(fx.keys.user_key().path())
            .args(["-p", &port])
            .args(extra)
            .args(["root@127.0.0.1", "echo", "via-openssh"])
            .stdin(Stdio::null())
            .output()
            .expect("run ssh (openssh-client)")
    };

    let line = ssh::known_hosts_line(
        &[format!("[127.0.0.1]:{port}")],
        fx.keys.host_key("ctrl-1").expect("host").public_key(),
    )
    .expect("known_hosts line");
    let by_addr = fx.dir.path().join("known_hosts.addr");
    std::fs::write(&by_addr, format!("{line}\n")).expect("write known_hosts");
    let out = ssh_with(&by_addr, &[]);
    assert!(
        out.status.success(),
        "ssh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"via-openssh\n");

    // The cluster's own known_hosts file, keyed by node name.
    let out = ssh_with(&fx.keys.known_hosts_path(), &["-o", "HostKeyAlias=ctrl-1"]);
    assert!(
        out.status.success(),
        "ssh with HostKeyAlias failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    fx.keys.host_key("ctrl-2").expect("second host key");
    let out = ssh_with(&fx.keys.known_hosts_path(), &["-o", "HostKeyAlias=ctrl-2"]);
    assert!(!out.status.success(), "ssh must refuse another node's key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn key_files_are_private_and_reloaded_not_regenerated() {
    let fx = Fixture::new();
    let host = fx.keys.host_key("ctrl-1").expect("host key");
    let base = fx.dir.path().join("config");
    let before: Vec<(PathBuf, Vec<u8>)> = [fx.keys.user_key().path(), host.path()]
        .iter()
        .map(|p| (p.to_path_buf(), std::fs::read(p).expect("read key")))
        .collect();
    for (path, _) in &before {
        let mode = std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let again = ClusterKeys::open(&base, "demo").expect("reopen");
    let host_again = again.host_key("ctrl-1").expect("host key again");
    for (path, bytes) in &before {
        assert_eq!(
            &std::fs::read(path).expect("read key"),
            bytes,
            "{}",
            path.display()
        );
    }
    // The reloaded keys still open a session against the delivered files.
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let client = Client::connect(
        "ctrl-1",
        server.addr,
        "root",
        again.user_key(),
        host_again.public_key(),
    )
    .await
    .expect("connect with reloaded keys");
    assert!(client.exec(&["true"]).await.expect("exec").exit.success());
}

#[tokio::test]
async fn shell_without_tty_runs_piped_input() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let client = connect(&fx, &server, "ctrl-1").await.expect("connect");
    let (mut tx, rx) = tokio::net::unix::pipe::pipe().expect("pipe");
    tx.write_all(b"echo hi; echo oops >&2; exit 7\n")
        .await
        .expect("write to pipe");
    drop(tx);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = client
        .shell_with(rx, &mut out, &mut err, None)
        .await
        .expect("shell");
    assert_eq!(exit, Exit::Code(7));
    assert_eq!(out, b"hi\n");
    assert_eq!(err, b"oops\n");
}

#[tokio::test]
async fn write_file_then_read_file_round_trips() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let client = connect(&fx, &server, "ctrl-1").await.expect("connect");
    // The "remote" is this machine, so the result can be checked on disk too.
    let dir = fx.dir.path().join("remote dir");
    std::fs::create_dir(&dir).expect("mkdir");
    let path = dir.join("it's $(x).yaml");
    let remote = path.to_str().expect("utf-8 path");
    let contents: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();

    client
        .write_file(remote, &contents, 0o640)
        .await
        .expect("write_file");
    assert_eq!(client.read_file(remote).await.expect("read_file"), contents);
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    // Replacing keeps it whole and leaves no temporary files behind.
    client
        .write_file(remote, b"second\n", 0o600)
        .await
        .expect("rewrite");
    assert_eq!(client.read_file(remote).await.expect("read"), b"second\n");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    let missing = dir.join("missing");
    let err = client
        .read_file(missing.to_str().expect("utf-8"))
        .await
        .expect_err("missing file");
    assert!(
        matches!(&err, Error::Remote { action: "reading", exit: Exit::Code(1), stderr, .. }
            if stderr.contains("No such file")),
        "{err:?}"
    );
}

#[tokio::test]
async fn shell_with_pty_gets_term_and_size() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let client = connect(&fx, &server, "ctrl-1").await.expect("connect");
    let (mut tx, rx) = tokio::net::unix::pipe::pipe().expect("pipe");
    tx.write_all(b"echo \"term=$TERM\"; echo \"size=$(stty size)\"; exit 5\n")
        .await
        .expect("write to pipe");
    // Keep the pipe open: closing stdin on a pty sends EOF (^D) to the shell before it runs.
    let terminal = ssh::Terminal {
        term: "vt220".into(),
        size: ssh::PtySize {
            cols: 101,
            rows: 33,
            pix_width: 0,
            pix_height: 0,
        },
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = client
        .shell_with(rx, &mut out, &mut err, Some(terminal))
        .await
        .expect("shell");
    drop(tx);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(exit, Exit::Code(5), "{out}");
    assert!(out.contains("term=vt220"), "{out}");
    assert!(out.contains("size=33 101"), "{out}");
    assert!(err.is_empty(), "a pty merges stderr into stdout");
}

/// Typed into the terminal: report TERM, wait (bounded) until the pty has the size the child
/// sets locally after the session started, report it, exit 9.
const REMOTE_INPUT: &[u8] = b"echo \"remote-term=$TERM\"; i=0; \
    while [ \"$(stty size)\" != '40 120' ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
    echo \"resized=$(stty size)\"; exit 9\n";

/// `Client::shell()` on a real terminal: the test re-runs itself as a child under `script(1)`
/// (which gives it a pty as stdin/stdout); the child connects, runs the shell and checks that
/// the terminal settings after the session equal those before it (raw mode was undone).
#[tokio::test]
async fn shell_on_a_terminal_restores_it() {
    const NAME: &str = "shell_on_a_terminal_restores_it";
    if std::env::var_os("FKS_SSH_TTY_CHILD").is_some() {
        return terminal_child().await;
    }
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let exe = std::env::current_exe().expect("test binary path");
    let inner = format!(
        "{} --exact {NAME} --nocapture --test-threads=1",
        ssh::quote_arg(exe.to_str().expect("utf-8 test path"))
    );
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("FKS_SSH_TTY_CHILD", "1")
        .env("FKS_SSH_ADDR", server.addr.to_string())
        .env("FKS_SSH_BASE", fx.dir.path().join("config"))
        .env("TERM", "vt220")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    std::io::Write::write_all(&mut stdin, REMOTE_INPUT).expect("type into the terminal");
    // Stdin stays open until the child is done: EOF on a terminal would end the shell early.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll script") {
            break status;
        }
        assert!(Instant::now() < deadline, "terminal session did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(stdin);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read output");
    assert!(status.success(), "child failed: {out}");
    assert!(out.contains("remote-term=vt220"), "{out}");
    assert!(
        out.contains("resized=40 120"),
        "window change not forwarded: {out}"
    );
    assert!(
        out.contains("child: exit status 9, terminal restored"),
        "{out}"
    );
}

async fn terminal_child() {
    let stty = || {
        let out = Command::new("stty")
            .arg("-g")
            .stdin(Stdio::inherit())
            .output()
            .expect("stty -g");
        assert!(out.status.success(), "stdin is not a terminal");
        out.stdout
    };
    let base = PathBuf::from(std::env::var_os("FKS_SSH_BASE").expect("FKS_SSH_BASE"));
    let addr: SocketAddr = std::env::var("FKS_SSH_ADDR")
        .expect("FKS_SSH_ADDR")
        .parse()
        .expect("address");
    let keys = ClusterKeys::open(&base, "demo").expect("keys");
    let host = keys.host_key("ctrl-1").expect("host key");
    let client = Client::connect("ctrl-1", addr, "root", keys.user_key(), host.public_key())
        .await
        .expect("connect");
    let before = stty();
    // Resize the local terminal once the session has put it in raw mode (so after the pty
    // request carried the initial size): the kernel sends SIGWINCH, which must be forwarded.
    std::thread::spawn(|| {
        use rustix::termios::{tcgetattr, tcsetwinsize, LocalModes, Winsize};
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let attrs = tcgetattr(std::io::stdin()).expect("tcgetattr");
            if !attrs.local_modes.contains(LocalModes::ICANON) {
                let size = Winsize {
                    ws_row: 40,
                    ws_col: 120,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                tcsetwinsize(std::io::stdin(), size).expect("resize terminal");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let exit = client.shell().await.expect("shell");
    let after = stty();
    assert_eq!(exit, Exit::Code(9));
    assert_eq!(
        String::from_utf8_lossy(&before),
        String::from_utf8_lossy(&after)
    );
    println!("child: exit status 9, terminal restored");
}

/// `ssh` (OpenSSH) with only the given known_hosts and identity, in batch mode, on the node
/// server's port: `ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<pinned> -p PORT`.
fn openssh(server: &NodeSsh, known_hosts: &Path, identity: &Path) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
    ])
    .args(["-o", "StrictHostKeyChecking=yes", "-o"])
    .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
    .arg("-i")
    .arg(identity)
    .args(["-p", &server.addr.port().to_string()]);
    cmd
}

/// A known_hosts file pinning `node`'s host key for the server's `[127.0.0.1]:port`.
fn pinned(fx: &Fixture, server: &NodeSsh, node: &str) -> PathBuf {
    let line = ssh::known_hosts_line(
        &[format!("[127.0.0.1]:{}", server.addr.port())],
        fx.keys.host_key(node).expect("host").public_key(),
    )
    .expect("known_hosts line");
    let path = fx.dir.path().join(format!("known_hosts.{node}"));
    std::fs::write(&path, format!("{line}\n")).expect("write known_hosts");
    path
}

#[tokio::test]
async fn openssh_exec_reports_the_exit_status_and_keeps_stderr_apart() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let known = pinned(&fx, &server, "ctrl-1");
    let out = openssh(&server, &known, fx.keys.user_key().path())
        .args(["root@127.0.0.1", "echo out; echo err >&2; exit 7"])
        .stdin(Stdio::null())
        .output()
        .expect("run ssh (openssh-client)");
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));

    // Stdin reaches the command and its EOF ends it.
    let mut child = openssh(&server, &known, fx.keys.user_key().path())
        .args(["root@127.0.0.1", "wc -c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ssh");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"12345")
        .expect("write stdin");
    let out = child.wait_with_output().expect("ssh output");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
}

#[tokio::test]
async fn openssh_refuses_a_server_that_is_not_the_pinned_node() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    // The file pins ctrl-2's key for this address: the server's key is not it.
    let wrong = pinned(&fx, &server, "ctrl-2");
    let out = openssh(&server, &wrong, fx.keys.user_key().path())
        .args(["root@127.0.0.1", "echo", "must-not-run"])
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("HOST IDENTIFICATION HAS CHANGED"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn openssh_with_a_key_that_is_not_authorized_is_refused() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let known = pinned(&fx, &server, "ctrl-1");
    let other = ClusterKeys::open(&fx.dir.path().join("config"), "other").expect("other keys");
    let out = openssh(&server, &known, other.user_key().path())
        .args(["root@127.0.0.1", "echo", "must-not-run"])
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
    // The authorized key but another user is refused too: only root may log in.
    let out = openssh(&server, &known, fx.keys.user_key().path())
        .args(["admin@127.0.0.1", "echo", "must-not-run"])
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    assert_eq!(out.status.code(), Some(255));
    assert!(out.stdout.is_empty());
}

/// Read from the pty until `needle` shows up (or fail with what was read).
async fn read_until(pty: &mut pty_process::Pty, seen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, pty.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            other => panic!("waiting for {needle:?}: {other:?}; read so far: {seen:?}"),
        }
    }
}

/// `ssh -tt` on a real terminal: the remote pty has the local terminal's size, follows a
/// resize (SIGWINCH → `window-change`) and the exit status comes back.
#[tokio::test]
async fn openssh_pty_session_has_the_terminal_size_and_follows_a_resize() {
    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let known = pinned(&fx, &server, "ctrl-1");
    let (mut pty, pts) = pty_process::open().expect("open a pty");
    pty.resize(pty_process::Size::new(37, 101)).expect("size");
    let command = openssh(&server, &known, fx.keys.user_key().path());
    let mut child = pty_process::Command::new(command.get_program())
        .args(command.get_args())
        .args([
            "-tt",
            "root@127.0.0.1",
            "echo \"tty=$(tty) size=$(stty size)\"; read go; echo \"size=$(stty size)\"; exit 4",
        ])
        .spawn(pts)
        .expect("run ssh on the pty");
    let mut seen = String::new();
    read_until(&mut pty, &mut seen, "size=37 101").await;
    assert!(seen.contains("tty=/dev/pts/"), "{seen}");
    pty.resize(pty_process::Size::new(50, 120)).expect("resize");
    // ssh forwards the resize when its SIGWINCH handler runs; give it a moment before the
    // line that lets the remote shell read the size again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    pty.write_all(b"go\r").await.expect("type");
    read_until(&mut pty, &mut seen, "size=50 120").await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("ssh ends")
        .expect("wait ssh");
    assert_eq!(status.code(), Some(4), "{seen}");
}

/// A `signal` channel request (RFC 4254 §6.9) reaches the running command.
#[tokio::test]
async fn a_signal_request_reaches_the_command() {
    use russh::client;
    use russh::keys::PrivateKeyWithHashAlg;

    struct AnyHost;
    impl client::Handler for AnyHost {
        type Error = russh::Error;
        async fn check_server_key(
            &mut self,
            _key: &russh::keys::PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(true)
        }
    }

    let fx = Fixture::new();
    let server = NodeSsh::start(&fx, "ctrl-1", None);
    let config = std::sync::Arc::new(client::Config::default());
    let mut handle = client::connect(config, server.addr, AnyHost)
        .await
        .expect("connect");
    let key = PrivateKeyWithHashAlg::new(
        std::sync::Arc::new(fx.keys.user_key().private_key().clone()),
        None,
    );
    assert!(handle
        .authenticate_publickey("root", key)
        .await
        .expect("auth")
        .success());
    let mut channel = handle.channel_open_session().await.expect("session");
    channel
        .exec(
            true,
            "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.05; done",
        )
        .await
        .expect("exec");
    let (mut out, mut exit) = (String::new(), None);
    let mut signalled = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, channel.wait()).await {
        match msg {
            russh::ChannelMsg::Data { data } => {
                out.push_str(&String::from_utf8_lossy(&data));
                if out.contains("ready") && !signalled {
                    signalled = true;
                    channel
                        .signal(russh::Sig::USR1)
                        .await
                        .expect("signal request");
                }
            }
            russh::ChannelMsg::ExitStatus { exit_status } => exit = Some(exit_status),
            _ => {}
        }
    }
    assert!(out.contains("got-usr1"), "{out}");
    assert_eq!(exit, Some(3), "{out}");
}
