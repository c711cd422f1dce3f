//! A running guest: starting init inside fresh namespaces, waiting, stopping, exec, destroying,
//! and cleaning up guests a crashed lab left behind.
//!
//! This file owns processes and the per-guest state directory; the network lives in
//! `network.rs`, the filesystem view in `mounts.rs`. `pre_exec` hooks here run only steps
//! prepared before the fork. There is no PID namespace, so a guest's processes are those whose
//! network namespace is the guest's: that is how leftovers are found and killed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

use super::hallpass::Hallpass;
use super::mounts::{self, ViewSpec};
use super::network::{self, NetNames};
use super::{guest_env, render_hosts, render_resolv_conf, Error, GuestSpec, Result};

/// Name of the marker file in a guest's root dir, read by [`cleanup_orphans`].
const STATE_FILE: &str = "guest.state";
/// Directories the runtime creates in a guest's root dir (removed by destroy).
const PRIVATE_DIRS: &[&str] = &["rootfs", "upper", "var-lib", "etc-rancher"];
/// How often stop and exec look at a process that has not exited yet.
const POLL: Duration = Duration::from_millis(10);

/// The output of a command run with [`Guest::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit code, or 128 + the signal number when the command was killed by a signal.
    pub exit_code: i32,
}

struct InitState {
    child: Child,
    status: Option<ExitStatus>,
}

/// Namespace files of a guest, kept open so exec can join them.
struct NsFds {
    net: OwnedFd,
    mnt: OwnedFd,
    uts: OwnedFd,
}

/// A started guest. Methods take `&self`, so a guest can be shared between threads (one waits
/// while another stops it). Call [`Guest::destroy`] when done: dropping a guest leaves it
/// running (and [`cleanup_orphans`] finds it later).
pub struct Guest {
    machine_id: String,
    names: NetNames,
    root_dir: PathBuf,
    env: BTreeMap<String, String>,
    pid: Pid,
    /// (st_dev, st_ino) of the guest's network namespace: identifies its processes.
    netns_id: (u64, u64),
    init: Mutex<InitState>,
    ns: Mutex<Option<NsFds>>,
    /// Fly's SSH on `[6PN]:22` (the stand-in); stopped with init, as Fly's init takes it along.
    hallpass: Mutex<Option<Hallpass>>,
}

// The lab shares guests between request handlers and waiter threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Guest>();
};

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (plain fields), so go on.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn validate(spec: &GuestSpec) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidSpec {
        machine_id: spec.machine_id.clone(),
        reason: reason.to_string(),
    };
    let id_ok = !spec.machine_id.is_empty()
        && spec.machine_id.len() <= 40
        && spec
            .machine_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(invalid(
            "machine id must be 1-40 characters of [0-9a-z-] (it names the network namespace)",
        ));
    }
    if spec.init.is_empty() || spec.init[0].is_empty() {
        return Err(invalid("init is empty"));
    }
    if !spec.root_dir.is_absolute() {
        return Err(invalid("root dir is not absolute"));
    }
    if let Some(image) = &spec.image {
        if !image.rootfs.is_dir() {
            return Err(invalid(&format!(
                "image root {} is not a directory",
                image.rootfs.display()
            )));
        }
    }
    if let Some(v) = &spec.volume {
        if !v.host_dir.is_dir() {
            return Err(invalid(&format!(
                "volume dir {} does not exist",
                v.host_dir.display()
            )));
        }
    }
    Ok(())
}

/// Empties and recreates the runtime's directories in `root_dir` (the guest's root filesystem
/// is ephemeral, as on Fly; only the volume persists).
fn prepare_root_dir(root_dir: &Path) -> Result<()> {
    for d in PRIVATE_DIRS {
        let p = root_dir.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(io_err("removing", &p))?;
        }
        std::fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
    }
    Ok(())
}

fn write_state(root_dir: &Path, machine_id: &str, names: &NetNames) -> Result<()> {
    let path = root_dir.join(STATE_FILE);
    let text = format!(
        "machine_id={machine_id}\nnetns={}\nveth={}\n",
        names.netns, names.veth
    );
    std::fs::write(&path, text).map_err(io_err("writing", &path))
}

fn remove_private(root_dir: &Path) -> Result<()> {
    for d in PRIVATE_DIRS {
        let p = root_dir.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(io_err("removing", &p))?;
        }
    }
    let state = root_dir.join(STATE_FILE);
    if state.exists() {
        std::fs::remove_file(&state).map_err(io_err("removing", &state))?;
    }
    Ok(())
}

fn ns_id(path: &Path) -> Result<(u64, u64)> {
    let m = std::fs::metadata(path).map_err(io_err("inspecting", path))?;
    Ok((m.dev(), m.ino()))
}

/// Pids (other than ours) whose network namespace is `netns_id`. Zombies have no namespaces
/// left and are not listed.
fn processes_in_netns(netns_id: (u64, u64)) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| (m.dev(), m.ino()) == netns_id)
        })
        .collect()
}

/// SIGKILLs every process in the namespace until none is left (a guest may fork while being
/// killed). Gives up after a few seconds and names the survivors.
fn kill_netns_processes(machine_id: &str, netns_id: (u64, u64)) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = processes_in_netns(netns_id);
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Unkillable {
                machine_id: machine_id.to_string(),
                pids,
            });
        }
        for pid in pids {
            // ESRCH: it exited meanwhile.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(POLL);
    }
}

/// Writes a fixed message and the errno to fd 2 and passes the error on (for pre_exec hooks).
fn step(label: &'static [u8], r: nix::Result<()>) -> std::io::Result<()> {
    r.map_err(|e| {
        mounts::report(label, e);
        std::io::Error::from_raw_os_error(e as i32)
    })
}

impl Guest {
    /// Creates the guest's network, then forks init into new mount and UTS namespaces inside
    /// the guest's network namespace and builds its filesystem view before exec. Blocks until
    /// init has been exec'd (or failed to be: then everything made is removed again).
    pub fn start(spec: GuestSpec) -> Result<Guest> {
        validate(&spec)?;
        let id = spec.machine_id.clone();
        let names = NetNames::new(&spec.bridge.name, &id);
        let mut files = vec![
            (
                PathBuf::from("/etc/hosts"),
                render_hosts(&id, spec.private_ip, spec.ipv4).into_bytes(),
                0o644,
            ),
            (
                PathBuf::from("/etc/resolv.conf"),
                render_resolv_conf(spec.bridge.dns6).into_bytes(),
                0o644,
            ),
            (
                PathBuf::from("/etc/hostname"),
                format!("{id}\n").into_bytes(),
                0o644,
            ),
        ];
        files.extend(
            spec.files
                .iter()
                .map(|f| (f.guest_path.clone(), f.contents.clone(), f.mode)),
        );
        let view = ViewSpec {
            machine_id: &id,
            root_dir: &spec.root_dir,
            volume: spec
                .volume
                .as_ref()
                .map(|v| (v.host_dir.as_path(), v.mount_path.as_path())),
            hidden: spec
                .hidden_dirs
                .iter()
                .filter(|d| d.is_dir())
                .cloned()
                .collect(),
            files,
            cgroups: Some(guest_cgroups()),
            image_root: spec.image.as_ref().map(|i| i.rootfs.as_path()),
            working_dir: spec.image.as_ref().and_then(|i| i.working_dir.as_deref()),
            ids: spec.image.as_ref().and_then(|i| i.ids),
        };
        // The host's layout matters only to the host view.
        let layout = match &spec.image {
            Some(_) => Vec::new(),
            None => mounts::host_layout()?,
        };
        let steps = mounts::plan(&view, &layout)?;
        // Leftovers of a crashed run are replaced, but a live guest of the machine is not.
        if let Ok(netns_id) = ns_id(&names.netns_path()) {
            if !processes_in_netns(netns_id).is_empty() {
                return Err(Error::AlreadyRunning {
                    machine_id: id,
                    netns: names.netns,
                });
            }
        }
        // The marker comes first, so a crash from here on leaves something cleanup_orphans finds.
        let made = (|| {
            std::fs::create_dir_all(&spec.root_dir).map_err(io_err("creating", &spec.root_dir))?;
            write_state(&spec.root_dir, &id, &names)?;
            prepare_root_dir(&spec.root_dir)?;
            network::setup_guest(&names, &spec.bridge, spec.private_ip, spec.ipv4)?;
            // Fly's init serves its SSH on the 6PN address before the main process starts
            // (reference/fly-runtime.md §1.6).
            let hallpass = Hallpass::start(&id, &names.netns_path(), spec.private_ip)?;
            let guest = Self::spawn_init(&spec, &names, steps)?;
            *lock(&guest.hallpass) = Some(hallpass);
            Ok(guest)
        })();
        if made.is_err() {
            // Best effort: the first error is the one worth reporting.
            if let Ok(netns_id) = ns_id(&names.netns_path()) {
                let _ = kill_netns_processes(&id, netns_id);
            }
            let _ = network::teardown_guest(&names);
            let _ = remove_private(&spec.root_dir);
        }
        made
    }

    fn spawn_init(spec: &GuestSpec, names: &NetNames, steps: Vec<mounts::Step>) -> Result<Guest> {
        let id = spec.machine_id.clone();
        let netns_path = names.netns_path();
        let netns_id = ns_id(&netns_path)?;
        let net: OwnedFd = File::open(&netns_path)
            .map_err(io_err("opening", &netns_path))?
            .into();
        if let Some(parent) = spec.log_path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(io_err("opening", &spec.log_path))?;
        let log_err = log.try_clone().map_err(io_err("opening", &spec.log_path))?;
        let env = guest_env(spec);

        let mut cmd = Command::new(&spec.init[0]);
        cmd.args(&spec.init[1..])
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let hook = move || -> std::io::Result<()> {
            // Own session: a signal to the lab's process group does not reach guests.
            step(
                b"fks-lab guest: setsid failed: ",
                nix::unistd::setsid().map(drop),
            )?;
            step(
                b"fks-lab guest: joining the network namespace failed: ",
                nix::sched::setns(net.as_fd(), CloneFlags::CLONE_NEWNET),
            )?;
            step(
                b"fks-lab guest: unshare of mount and uts namespaces failed: ",
                nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS),
            )?;
            mounts::run(&steps).map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        };
        // SAFETY: the hook runs in the forked child before exec and only makes system calls on
        // data prepared above (C strings, buffers, an open fd): no allocation, no locks.
        unsafe { cmd.pre_exec(hook) };
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            machine_id: id.clone(),
            log: spec.log_path.clone(),
            source,
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        // init may already have exited (then exec reports NotRunning).
        let open_ns = |kind: &str| -> Option<OwnedFd> {
            File::open(format!("/proc/{pid}/ns/{kind}"))
                .ok()
                .map(OwnedFd::from)
        };
        let ns = match (File::open(&netns_path), open_ns("mnt"), open_ns("uts")) {
            (Ok(net), Some(mnt), Some(uts)) => Some(NsFds {
                net: net.into(),
                mnt,
                uts,
            }),
            _ => None,
        };
        tracing::info!(machine_id = %id, app = %spec.app, pid = pid.as_raw(), ip = %spec.private_ip, "guest started");
        Ok(Guest {
            machine_id: id,
            names: names.clone(),
            root_dir: spec.root_dir.clone(),
            env,
            pid,
            netns_id,
            init: Mutex::new(InitState {
                child,
                status: None,
            }),
            ns: Mutex::new(ns),
            hallpass: Mutex::new(None),
        })
    }

    /// The machine id.
    pub fn machine_id(&self) -> &str {
        &self.machine_id
    }

    /// Host pid of the guest's init.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Name of the guest's network namespace (as `ip netns list` shows it).
    pub fn netns_name(&self) -> &str {
        &self.names.netns
    }

    /// Name of the host end of the guest's veth pair.
    pub fn veth_name(&self) -> &str {
        &self.names.veth
    }

    fn wait_err(&self) -> impl FnOnce(std::io::Error) -> Error + '_ {
        |source| Error::Wait {
            machine_id: self.machine_id.clone(),
            source,
        }
    }

    /// init's exit status if it has exited, without blocking.
    pub fn try_status(&self) -> Result<Option<ExitStatus>> {
        let mut init = lock(&self.init);
        if init.status.is_none() {
            init.status = init.child.try_wait().map_err(self.wait_err())?;
        }
        Ok(init.status)
    }

    /// Blocks until init exits, then kills what is left of the guest (on Fly, the VM stops
    /// when its main process exits).
    pub fn wait_exit(&self) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_status()? {
                kill_netns_processes(&self.machine_id, self.netns_id)?;
                if let Some(mut hallpass) = lock(&self.hallpass).take() {
                    hallpass.stop();
                }
                return Ok(status);
            }
            // Wait without reaping, outside the lock, so stop can run meanwhile; try_status
            // reaps. ECHILD: another thread reaped it in between.
            match waitid(
                Id::Pid(self.pid),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            ) {
                Ok(_) | Err(Errno::ECHILD) | Err(Errno::EINTR) => {}
                Err(e) => return Err(self.wait_err()(std::io::Error::from(e))),
            }
        }
    }

    /// Sends `signal` to init, waits up to `timeout`, then SIGKILLs it; kills the guest's other
    /// processes and returns init's exit status.
    pub fn stop(&self, signal: Signal, timeout: Duration) -> Result<ExitStatus> {
        if self.signal_if_running(signal)? {
            let deadline = Instant::now() + timeout;
            while self.try_status()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            if self.try_status()?.is_none() {
                tracing::info!(machine_id = %self.machine_id, ?timeout, "stop timed out, sending SIGKILL");
                self.signal_if_running(Signal::SIGKILL)?;
            }
        }
        self.wait_exit()
    }

    /// Sends `signal` to init (the API's signal endpoint); false when init has already exited.
    pub fn signal(&self, signal: Signal) -> Result<bool> {
        self.signal_if_running(signal)
    }

    /// Signals init unless it has been reaped (its pid could belong to someone else then).
    fn signal_if_running(&self, signal: Signal) -> Result<bool> {
        let mut init = lock(&self.init);
        if init.status.is_none() {
            init.status = init.child.try_wait().map_err(self.wait_err())?;
        }
        if init.status.is_some() {
            return Ok(false);
        }
        match kill(self.pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(true),
            Err(source) => Err(Error::Signal {
                machine_id: self.machine_id.clone(),
                signal,
                source,
            }),
        }
    }

    /// Runs `argv` inside the guest's namespaces with the guest's environment, feeding `stdin`,
    /// and collects its output. A command still running after `timeout` is killed and reported
    /// as [`Error::ExecTimeout`].
    pub fn exec(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let argv0 = argv.first().cloned().unwrap_or_default();
        let spawn_err = |source| Error::ExecSpawn {
            machine_id: self.machine_id.clone(),
            argv0: argv0.clone(),
            source,
        };
        if argv0.is_empty() {
            return Err(spawn_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty command",
            )));
        }
        if self.try_status()?.is_some() {
            return Err(Error::NotRunning {
                machine_id: self.machine_id.clone(),
            });
        }
        let (net, mnt, uts) = {
            let ns = lock(&self.ns);
            let Some(ns) = ns.as_ref() else {
                return Err(Error::NotRunning {
                    machine_id: self.machine_id.clone(),
                });
            };
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(spawn_err);
            (dup(&ns.net)?, dup(&ns.mnt)?, dup(&ns.uts)?)
        };
        let mut cmd = Command::new(&argv0);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(&self.env)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let hook = move || -> std::io::Result<()> {
            step(
                b"fks-lab exec: joining the network namespace failed: ",
                nix::sched::setns(net.as_fd(), CloneFlags::CLONE_NEWNET),
            )?;
            step(
                b"fks-lab exec: joining the mount namespace failed: ",
                nix::sched::setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS),
            )?;
            step(
                b"fks-lab exec: joining the uts namespace failed: ",
                nix::sched::setns(uts.as_fd(), CloneFlags::CLONE_NEWUTS),
            )?;
            step(b"fks-lab exec: chdir / failed: ", nix::unistd::chdir(c"/"))
        };
        // SAFETY: the hook runs in the forked child before exec and only calls setns and chdir
        // on fds and strings prepared above: no allocation, no locks.
        unsafe { cmd.pre_exec(hook) };
        let mut child = cmd.spawn().map_err(spawn_err)?;

        if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
            let input = input.to_vec();
            // A command that does not read its stdin must not block us: write from a thread.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let stdout = reader(child.stdout.take());
        let stderr = reader(child.stderr.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(self.wait_err())? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::ExecTimeout {
                    machine_id: self.machine_id.clone(),
                    argv0,
                    timeout,
                });
            }
            std::thread::sleep(POLL);
        };
        // A daemon started by the command may keep the pipes open: take what came within 1s.
        let collect = |rx: mpsc::Receiver<Vec<u8>>| {
            rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default()
        };
        let exit_code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Ok(ExecOutput {
            stdout: collect(stdout),
            stderr: collect(stderr),
            exit_code,
        })
    }

    /// Kills every process of the guest, then removes its network namespace, veth pair, mount
    /// namespace (by closing the last references) and the runtime's directories in its root
    /// dir. Idempotent.
    pub fn destroy(&self) -> Result<()> {
        self.signal_if_running(Signal::SIGKILL)?;
        let status = self.wait_exit()?;
        tracing::info!(machine_id = %self.machine_id, ?status, "guest destroyed");
        *lock(&self.ns) = None;
        network::teardown_guest(&self.names)?;
        remove_private(&self.root_dir)
    }
}

/// Fly's cgroup layout as far as this host gives it (`cgroups`); what it cannot give is
/// logged once per lab process.
fn guest_cgroups() -> super::cgroups::Layout {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let layout = super::cgroups::layout(&super::cgroups::host_hierarchies(&mountinfo), &mountinfo);
    if !layout.not_modelled.is_empty() {
        REPORTED.call_once(|| {
            tracing::info!(
                not_modelled = ?layout.not_modelled,
                "guests get Fly's cgroup layout only in part: this host's kernel hierarchies do not allow the rest"
            );
        });
    }
    layout
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

/// Finds guests a crashed lab left under `state_dir` (by their `guest.state` marker, up to four
/// directories deep), kills their processes and removes their network namespaces, veth pairs
/// and private directories. Returns the machine ids cleaned. Call it before starting guests.
pub fn cleanup_orphans(state_dir: &Path) -> Result<Vec<String>> {
    let mut markers = Vec::new();
    find_markers(state_dir, 4, &mut markers)?;
    let mut cleaned = Vec::new();
    for marker in markers {
        let text = std::fs::read_to_string(&marker).map_err(io_err("reading", &marker))?;
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        let (Some(machine_id), Some(netns), Some(veth)) =
            (field("machine_id"), field("netns"), field("veth"))
        else {
            tracing::warn!(marker = %marker.display(), "ignoring unreadable guest marker");
            continue;
        };
        // Teardown needs the names only; the MAC follows from the netns name.
        let mac = network::mac(&netns);
        let names = NetNames { netns, veth, mac };
        if let Ok(netns_id) = ns_id(&names.netns_path()) {
            kill_netns_processes(&machine_id, netns_id)?;
        }
        network::teardown_guest(&names)?;
        let root_dir = marker.parent().unwrap_or(state_dir);
        remove_private(root_dir)?;
        tracing::info!(%machine_id, "cleaned up orphaned guest");
        cleaned.push(machine_id);
    }
    Ok(cleaned)
}

fn find_markers(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(io_err("inspecting", &path))?;
        if ft.is_file() && entry.file_name() == STATE_FILE {
            out.push(path);
        } else if ft.is_dir() && depth > 0 {
            find_markers(&path, depth - 1, out)?;
        }
    }
    Ok(())
}
