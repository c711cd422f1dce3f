//! The guest's filesystem view: a plan of mount steps built before the fork, and the code that
//! runs it inside the child (in `pre_exec`, after `unshare(CLONE_NEWNS)`).
//!
//! [`plan`] is pure: it takes the host's top-level layout and the spec and returns steps whose
//! paths are already C strings, so [`run`] allocates nothing and calls only async-signal-safe
//! system calls (mount, mkdir, symlink, pivot_root, open, write, setuid, ...). Two roots (see
//! the module doc of `guest`):
//! - a pulled image: an overlay whose lower layer is the image's unpacked root (read-only)
//!   and whose upper and work dirs are `<root_dir>/upper/{rootfs,work}`, emptied by the runtime
//!   before every start (Fly: writes outside volumes are gone after a restart,
//!   reference/fly-runtime.md §2); /proc, /sys and /dev bound from the host; private tmpfs /run
//!   and /tmp; then, after `pivot_root`, Fly's cgroup mounts, the volume, the files, the image's
//!   WorkingDir and User;
//! - the host view (`lab/base`): a tmpfs root; host top-level directories as overlays with a
//!   private tmpfs upper layer, or recursive binds when they hold other mounts (/proc, /sys,
//!   /dev, ...); private tmpfs /run and /tmp; per-guest /var/lib and /etc/rancher; the hidden
//!   state dir; the volume; then the files.
//!
//! Nothing here may write to a host path other than the machine's own upper layer: every other
//! write happens after `pivot_root`, in the guest's view, and paths that would land in a
//! bind-mounted host tree are refused by [`plan`].

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;

use super::{Error, Result};

/// One entry of the host's `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TopEntry {
    /// A directory; `holds_mounts` when it is or contains a mount point.
    Dir { name: OsString, holds_mounts: bool },
    /// A symbolic link (e.g. `/bin -> usr/bin` on merged-/usr systems).
    Symlink { name: OsString, target: OsString },
}

/// What the guest's mount plan needs from the spec.
#[derive(Debug, Clone)]
pub(crate) struct ViewSpec<'a> {
    pub machine_id: &'a str,
    pub root_dir: &'a Path,
    pub volume: Option<(&'a Path, &'a Path)>,
    /// Host directories (existing, absolute) covered by an empty read-only tmpfs in the guest.
    pub hidden: Vec<PathBuf>,
    /// (guest path, contents, mode), platform files first, then the machine's files.
    pub files: Vec<(PathBuf, Vec<u8>, u32)>,
    /// Fly's cgroup mounts the host can give (`cgroups::layout`); `None` leaves the host's
    /// /sys/fs/cgroup as the /sys bind shows it.
    pub cgroups: Option<super::cgroups::Layout>,
    /// A pulled image's unpacked root (absolute host path): the guest's root is an overlay of
    /// it; `None` gives the host view built from `layout`.
    pub image_root: Option<&'a Path>,
    /// Where the main process starts (guest path); `/` when `None`.
    pub working_dir: Option<&'a Path>,
    /// uid and gid the main process runs as; root when `None`.
    pub ids: Option<(u32, u32)>,
}

/// One prepared system call.
#[derive(Debug)]
pub(crate) enum Op {
    MakePrivate,
    Tmpfs {
        target: CString,
        data: CString,
        readonly: bool,
    },
    Mkdir {
        path: CString,
        mode: u32,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    Bind {
        source: CString,
        target: CString,
    },
    Overlay {
        target: CString,
        data: CString,
    },
    PivotRoot {
        new_root: CString,
        put_old: CString,
    },
    Chdir {
        path: CString,
    },
    Detach {
        path: CString,
    },
    Rmdir {
        path: CString,
    },
    WriteFile {
        path: CString,
        contents: Vec<u8>,
        mode: u32,
    },
    SetHostname {
        name: OsString,
    },
    /// setgroups([gid]), setgid, setuid: last, after every mount.
    SetIds {
        uid: u32,
        gid: u32,
    },
}

/// A step and the line written to the guest's log if it fails.
#[derive(Debug)]
pub(crate) struct Step {
    pub op: Op,
    pub label: Vec<u8>,
}

/// Top-level directories that are always bound from the host (kernel filesystems).
const ALWAYS_BIND: &[&str] = &["proc", "sys", "dev"];
/// Top-level directories that get a fresh tmpfs, with its mode.
const PRIVATE_TMPFS: &[(&str, &str, u32)] =
    &[("run", "mode=0755", 0o755), ("tmp", "mode=1777", 0o1777)];

/// Reads the host's `/` and mount table.
pub(crate) fn host_layout() -> Result<Vec<TopEntry>> {
    let io = |op, path: &str| {
        let path = PathBuf::from(path);
        move |source| Error::Io { op, path, source }
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("reading", "/proc/self/mountinfo"))?;
    let mount_points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect();
    let mut entries = Vec::new();
    for entry in std::fs::read_dir("/").map_err(io("listing", "/"))? {
        let entry = entry.map_err(io("listing", "/"))?;
        let name = entry.file_name();
        let path = Path::new("/").join(&name);
        let ft = entry.file_type().map_err(io("inspecting", "/"))?;
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|source| Error::Io {
                op: "reading link",
                path: path.clone(),
                source,
            })?;
            entries.push(TopEntry::Symlink {
                name,
                target: target.into_os_string(),
            });
        } else if ft.is_dir() {
            let holds_mounts = mount_points.iter().any(|m| m.starts_with(&path));
            entries.push(TopEntry::Dir { name, holds_mounts });
        }
        // Top-level files (e.g. /.dockerenv) and sockets are not part of the guest's view.
    }
    entries.sort_by(|a, b| top_name(a).cmp(top_name(b)));
    Ok(entries)
}

fn top_name(e: &TopEntry) -> &OsStr {
    match e {
        TopEntry::Dir { name, .. } | TopEntry::Symlink { name, .. } => name,
    }
}

/// Undoes the octal escapes (`\040` for a space) of /proc/self/mountinfo.
pub(crate) fn unescape_mountinfo(s: &str) -> OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

fn cstr(machine_id: &str, p: impl AsRef<OsStr>) -> Result<CString> {
    CString::new(p.as_ref().as_bytes().to_vec()).map_err(|_| Error::InvalidSpec {
        machine_id: machine_id.to_string(),
        reason: format!("path {:?} contains a NUL byte", p.as_ref()),
    })
}

/// Checks that `p` is absolute and has no `..`, and returns its normal components.
fn guest_components<'p>(machine_id: &str, p: &'p Path) -> Result<Vec<&'p OsStr>> {
    let invalid = |reason: String| Error::InvalidSpec {
        machine_id: machine_id.to_string(),
        reason,
    };
    if !p.is_absolute() {
        return Err(invalid(format!(
            "guest path {} is not absolute",
            p.display()
        )));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => parts.push(s),
            _ => {
                return Err(invalid(format!(
                    "guest path {} contains `..` or `.`",
                    p.display()
                )))
            }
        }
    }
    if parts.is_empty() {
        return Err(invalid(
            "guest path / cannot be written or mounted over".to_string(),
        ));
    }
    Ok(parts)
}

struct Planner<'a> {
    machine_id: &'a str,
    steps: Vec<Step>,
}

impl Planner<'_> {
    fn push(&mut self, op: Op, what: String) {
        let label = format!("fks-lab guest {}: {what} failed: ", self.machine_id).into_bytes();
        self.steps.push(Step { op, label });
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> Result<()> {
        let c = cstr(self.machine_id, path)?;
        self.push(
            Op::Mkdir { path: c, mode },
            format!("mkdir {}", path.display()),
        );
        Ok(())
    }

    /// mkdir -p of a guest path's components (each EEXIST is fine).
    fn mkdir_all(&mut self, parts: &[&OsStr]) -> Result<()> {
        let mut p = PathBuf::from("/");
        for part in parts {
            p.push(part);
            self.mkdir(&p, 0o755)?;
        }
        Ok(())
    }

    fn bind(&mut self, source: &Path, target: &Path) -> Result<()> {
        let op = Op::Bind {
            source: cstr(self.machine_id, source)?,
            target: cstr(self.machine_id, target)?,
        };
        self.push(
            op,
            format!("bind {} on {}", source.display(), target.display()),
        );
        Ok(())
    }

    fn write(&mut self, path: &Path, contents: Vec<u8>, mode: u32) -> Result<()> {
        let op = Op::WriteFile {
            path: cstr(self.machine_id, path)?,
            contents,
            mode,
        };
        self.push(op, format!("writing {}", path.display()));
        Ok(())
    }
}

/// The steps that build the guest's view. `layout` is the host's `/` ([`host_layout`]).
pub(crate) fn plan(spec: &ViewSpec<'_>, layout: &[TopEntry]) -> Result<Vec<Step>> {
    let id = spec.machine_id;
    let root = spec.root_dir.join("rootfs");
    let upper = spec.root_dir.join("upper");
    for dir in [&root, &upper] {
        // Overlay options are comma- and colon-separated.
        let s = dir.as_os_str().as_bytes();
        if s.contains(&b',') || s.contains(&b':') {
            return Err(Error::InvalidSpec {
                machine_id: id.to_string(),
                reason: format!("state dir {} contains ',' or ':'", dir.display()),
            });
        }
    }
    let mut bound_from_host: Vec<&OsStr> = Vec::new();
    let mut p = Planner {
        machine_id: id,
        steps: Vec::new(),
    };
    p.push(Op::MakePrivate, "making / private".to_string());
    if let Some(image_root) = spec.image_root {
        image_view(&mut p, image_root, &root, &upper, &mut bound_from_host)?;
    } else {
        host_view(layout, &mut p, &root, &upper, &mut bound_from_host)?;
    }
    let old = root.join(".oldroot");
    p.mkdir(&old, 0o700)?;
    let op = Op::PivotRoot {
        new_root: cstr(id, &root)?,
        put_old: cstr(id, &old)?,
    };
    p.push(op, "pivot_root".to_string());
    p.push(
        Op::Chdir {
            path: cstr(id, "/")?,
        },
        "chdir /".to_string(),
    );

    // From here on paths are the guest's; host paths are reached through /.oldroot.
    let host = |h: &Path| Path::new("/.oldroot").join(h.strip_prefix("/").unwrap_or(h));
    let refuse_host_tree = |parts: &[&OsStr], what: &str, path: &Path| -> Result<()> {
        if parts
            .first()
            .is_some_and(|first| bound_from_host.contains(first))
        {
            return Err(Error::InvalidSpec {
                machine_id: id.to_string(),
                reason: format!(
                    "{what} {} is in a directory shared with the host",
                    path.display()
                ),
            });
        }
        Ok(())
    };
    if let Some(cgroups) = &spec.cgroups {
        // Fly's hybrid layout (reference/fly-runtime.md §1.3): a tmpfs, then binds of the
        // host's hierarchies (see `cgroups` for why only binds). /sys is bound from the host,
        // but this tmpfs is in the guest's private mount namespace only.
        let root = Path::new(super::cgroups::ROOT);
        if cgroups.replaces_host_mount {
            p.push(
                Op::Detach {
                    path: cstr(id, root)?,
                },
                format!("detaching the host's mounts on {}", root.display()),
            );
        }
        let op = Op::Tmpfs {
            target: cstr(id, root)?,
            data: cstr(id, "mode=0755")?,
            readonly: false,
        };
        p.push(op, format!("mounting tmpfs on {}", root.display()));
        for (host_dir, guest_dir) in &cgroups.binds {
            p.mkdir(guest_dir, 0o555)?;
            p.bind(&host(host_dir), guest_dir)?;
        }
    }
    // The host view shares the host's /var/lib and /etc: private, per-start directories there
    // (an image's overlay root is per start already).
    let host_only: &[(&str, &str)] = if spec.image_root.is_none() {
        &[("/etc/rancher", "etc-rancher"), ("/var/lib", "var-lib")]
    } else {
        &[]
    };
    for (guest, private) in host_only.iter().copied() {
        let g = Path::new(guest);
        let parts = guest_components(id, g)?;
        if parts
            .first()
            .is_some_and(|first| bound_from_host.contains(first))
        {
            // The host holds mounts under /var: bind over the existing directory only.
            p.bind(&host(&spec.root_dir.join(private)), g)?;
            continue;
        }
        p.mkdir_all(&parts)?;
        p.bind(&host(&spec.root_dir.join(private)), g)?;
    }
    for dir in spec.hidden.iter().filter(|_| spec.image_root.is_none()) {
        // The directory exists on the host; inside a private tmpfs (/tmp) it must be made.
        p.mkdir_all(&guest_components(id, dir)?)?;
        let op = Op::Tmpfs {
            target: cstr(id, dir)?,
            data: cstr(id, "mode=0755,size=4k")?,
            readonly: true,
        };
        p.push(op, format!("hiding {}", dir.display()));
    }
    if let Some((host_dir, mount_path)) = spec.volume {
        let parts = guest_components(id, mount_path)?;
        refuse_host_tree(&parts, "volume mount path", mount_path)?;
        if !host_dir.is_absolute() {
            return Err(Error::InvalidSpec {
                machine_id: id.to_string(),
                reason: format!("volume dir {} is not absolute", host_dir.display()),
            });
        }
        p.mkdir_all(&parts)?;
        p.bind(&host(host_dir), mount_path)?;
    }
    for (path, contents, mode) in &spec.files {
        let parts = guest_components(id, path)?;
        refuse_host_tree(&parts, "file", path)?;
        p.mkdir_all(&parts[..parts.len() - 1])?;
        p.write(path, contents.clone(), *mode)?;
    }
    let old = Path::new("/.oldroot");
    p.push(
        Op::Detach {
            path: cstr(id, old)?,
        },
        "detaching the host root".to_string(),
    );
    p.push(
        Op::Rmdir {
            path: cstr(id, old)?,
        },
        "removing /.oldroot".to_string(),
    );
    p.push(
        Op::SetHostname {
            name: OsString::from(id),
        },
        "sethostname".to_string(),
    );
    if let Some(dir) = spec.working_dir {
        let parts = guest_components(id, dir)?;
        p.mkdir_all(&parts)?;
        p.push(
            Op::Chdir {
                path: cstr(id, dir)?,
            },
            format!("chdir {}", dir.display()),
        );
    }
    if let Some((uid, gid)) = spec.ids.filter(|ids| *ids != (0, 0)) {
        p.push(
            Op::SetIds { uid, gid },
            format!("switching to uid {uid} gid {gid}"),
        );
    }
    Ok(p.steps)
}

/// The root of a pulled image: an overlay of its unpacked root (never written) with this
/// start's upper layer in `<root_dir>/upper` (emptied before every start by the runtime), then
/// the kernel file systems bound from the host and private tmpfs /run and /tmp.
fn image_view(
    p: &mut Planner<'_>,
    image_root: &Path,
    root: &Path,
    upper: &Path,
    bound_from_host: &mut Vec<&OsStr>,
) -> Result<()> {
    let id = p.machine_id;
    let s = image_root.as_os_str().as_bytes();
    if !image_root.is_absolute() || s.contains(&b',') || s.contains(&b':') {
        return Err(Error::InvalidSpec {
            machine_id: id.to_string(),
            reason: format!(
                "image root {} is not absolute or contains ',' or ':'",
                image_root.display()
            ),
        });
    }
    let (up, work) = (upper.join("rootfs"), upper.join("work"));
    p.mkdir(&up, 0o755)?;
    p.mkdir(&work, 0o700)?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        image_root.display(),
        up.display(),
        work.display()
    );
    let op = Op::Overlay {
        target: cstr(id, root)?,
        data: cstr(id, data)?,
    };
    p.push(
        op,
        format!(
            "mounting the image {} as the root {}",
            image_root.display(),
            root.display()
        ),
    );
    for name in ALWAYS_BIND {
        let at = root.join(name);
        p.mkdir(&at, 0o755)?;
        p.bind(&Path::new("/").join(name), &at)?;
        bound_from_host.push(OsStr::new(*name));
    }
    for (name, data, mode) in PRIVATE_TMPFS {
        let at = root.join(name);
        p.mkdir(&at, *mode)?;
        let op = Op::Tmpfs {
            target: cstr(id, &at)?,
            data: cstr(id, data)?,
            readonly: false,
        };
        p.push(op, format!("mounting tmpfs on /{name}"));
    }
    Ok(())
}

/// The host view (`lab/base`): a tmpfs root with the host's top-level directories as
/// overlays (or recursive binds for trees holding mounts).
fn host_view<'s>(
    layout: &'s [TopEntry],
    p: &mut Planner<'_>,
    root: &Path,
    upper: &Path,
    bound_from_host: &mut Vec<&'s OsStr>,
) -> Result<()> {
    let id = p.machine_id;
    for (target, data) in [(&root, "mode=0755"), (&upper, "mode=0700")] {
        let op = Op::Tmpfs {
            target: cstr(id, target)?,
            data: cstr(id, data)?,
            readonly: false,
        };
        p.push(op, format!("mounting tmpfs on {}", target.display()));
    }
    for entry in layout {
        match entry {
            TopEntry::Symlink { name, target } => {
                let link = root.join(name);
                let op = Op::Symlink {
                    target: cstr(id, target)?,
                    link: cstr(id, &link)?,
                };
                p.push(op, format!("symlink {}", link.display()));
            }
            TopEntry::Dir { name, holds_mounts } => {
                let n = name.to_string_lossy();
                let at = root.join(name);
                let host = Path::new("/").join(name);
                if let Some((_, data, mode)) = PRIVATE_TMPFS.iter().find(|(t, _, _)| *t == n) {
                    p.mkdir(&at, *mode)?;
                    let op = Op::Tmpfs {
                        target: cstr(id, &at)?,
                        data: cstr(id, data)?,
                        readonly: false,
                    };
                    p.push(op, format!("mounting tmpfs on /{n}"));
                } else if ALWAYS_BIND.contains(&n.as_ref()) || (*holds_mounts && n != "etc") {
                    // Trees with their own mounts are shared read-write with the host: refused
                    // below as places for files and volumes.
                    p.mkdir(&at, 0o755)?;
                    p.bind(&host, &at)?;
                    bound_from_host.push(name);
                } else {
                    // /etc is always an overlay, even when the host bind-mounts files into it
                    // (containers do for /etc/hosts): the guest must never write the host's /etc.
                    let up = upper.join(name);
                    p.mkdir(&at, 0o755)?;
                    p.mkdir(&up, 0o755)?;
                    p.mkdir(&up.join("upper"), 0o755)?;
                    p.mkdir(&up.join("work"), 0o755)?;
                    let data = format!(
                        "lowerdir={},upperdir={},workdir={}",
                        host.display(),
                        up.join("upper").display(),
                        up.join("work").display()
                    );
                    let op = Op::Overlay {
                        target: cstr(id, &at)?,
                        data: cstr(id, data)?,
                    };
                    p.push(
                        op,
                        format!("mounting overlay of {} on {}", host.display(), at.display()),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Runs the steps. Called in the forked child: no allocation, async-signal-safe calls only. On
/// failure the step's label and the errno text go to fd 2 (the guest's log).
pub(crate) fn run(steps: &[Step]) -> std::result::Result<(), Errno> {
    for step in steps {
        if let Err(e) = run_op(&step.op) {
            report(&step.label, e);
            return Err(e);
        }
    }
    Ok(())
}

/// Writes `label` and `e` to fd 2; errors are ignored (nothing else can be done in the child).
pub(crate) fn report(label: &[u8], e: Errno) {
    // SAFETY: fd 2 is open for the whole life of the child (std set it up before pre_exec), and
    // the borrow ends before this function returns.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
    let _ = nix::unistd::write(fd, label);
    let _ = nix::unistd::write(fd, e.desc().as_bytes());
    let _ = nix::unistd::write(fd, b"\n");
}

fn run_op(op: &Op) -> std::result::Result<(), Errno> {
    const NONE: Option<&std::ffi::CStr> = None;
    match op {
        Op::MakePrivate => nix::mount::mount(
            NONE,
            c"/",
            NONE,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            NONE,
        ),
        Op::Tmpfs {
            target,
            data,
            readonly,
        } => {
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if *readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            nix::mount::mount(
                Some(c"tmpfs"),
                target.as_c_str(),
                Some(c"tmpfs"),
                flags,
                Some(data.as_c_str()),
            )
        }
        Op::Mkdir { path, mode } => {
            match nix::unistd::mkdir(path.as_c_str(), Mode::from_bits_truncate(*mode)) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Op::Symlink { target, link } => {
            nix::unistd::symlinkat(target.as_c_str(), None, link.as_c_str())
        }
        Op::Bind { source, target } => nix::mount::mount(
            Some(source.as_c_str()),
            target.as_c_str(),
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        ),
        Op::Overlay { target, data } => nix::mount::mount(
            Some(c"overlay"),
            target.as_c_str(),
            Some(c"overlay"),
            MsFlags::empty(),
            Some(data.as_c_str()),
        ),
        Op::PivotRoot { new_root, put_old } => {
            nix::unistd::pivot_root(new_root.as_c_str(), put_old.as_c_str())
        }
        Op::Chdir { path } => nix::unistd::chdir(path.as_c_str()),
        Op::Detach { path } => nix::mount::umount2(path.as_c_str(), MntFlags::MNT_DETACH),
        Op::Rmdir { path } => {
            // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
            Errno::result(unsafe { nix::libc::rmdir(path.as_ptr()) }).map(drop)
        }
        Op::WriteFile {
            path,
            contents,
            mode,
        } => write_file(path, contents, *mode),
        Op::SetHostname { name } => nix::unistd::sethostname(name),
        Op::SetIds { uid, gid } => {
            let gid = nix::unistd::Gid::from_raw(*gid);
            nix::unistd::setgroups(&[gid])?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(*uid))
        }
    }
}

/// Replaces `path` by a new file (never following a symlink left at that name) with `mode`.
fn write_file(path: &CString, contents: &[u8], mode: u32) -> std::result::Result<(), Errno> {
    match nix::unistd::unlink(path.as_c_str()) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let mode = Mode::from_bits_truncate(mode);
    let fd = nix::fcntl::open(
        path.as_c_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )?;
    let result = (|| {
        // SAFETY: `fd` was just returned by open and is closed only after this borrow ends.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let mut rest = contents;
        while !rest.is_empty() {
            match nix::unistd::write(borrowed, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        // The umask narrowed the mode given to open.
        nix::sys::stat::fchmod(fd, mode)
    })();
    let closed = nix::unistd::close(fd);
    result.and(closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Vec<TopEntry> {
        let dir = |n: &str, m: bool| TopEntry::Dir {
            name: n.into(),
            holds_mounts: m,
        };
        vec![
            TopEntry::Symlink {
                name: "bin".into(),
                target: "usr/bin".into(),
            },
            dir("dev", true),
            dir("etc", true),
            dir("mnt", true),
            dir("proc", true),
            dir("run", true),
            dir("tmp", false),
            dir("usr", false),
            dir("var", false),
        ]
    }

    fn labels(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                let l = String::from_utf8_lossy(&s.label).into_owned();
                l.trim_start_matches("fks-lab guest m1: ")
                    .trim_end_matches(" failed: ")
                    .to_string()
            })
            .collect()
    }

    fn spec(
        files: Vec<(PathBuf, Vec<u8>, u32)>,
        volume: Option<(&'static Path, &'static Path)>,
    ) -> ViewSpec<'static> {
        ViewSpec {
            machine_id: "m1",
            root_dir: Path::new("/state/m1"),
            volume,
            hidden: vec![PathBuf::from("/state")],
            files,
            cgroups: None,
            image_root: None,
            working_dir: None,
            ids: None,
        }
    }

    #[test]
    fn etc_is_an_overlay_even_when_the_host_mounts_into_it() {
        let steps = plan(&spec(vec![], None), &layout()).expect("plan");
        let l = labels(&steps);
        assert!(l.contains(&"mounting overlay of /etc on /state/m1/rootfs/etc".to_string()));
        assert!(l.contains(&"mounting overlay of /usr on /state/m1/rootfs/usr".to_string()));
        assert!(l.contains(&"bind /mnt on /state/m1/rootfs/mnt".to_string()));
        assert!(l.contains(&"mounting tmpfs on /run".to_string()));
        assert!(l.contains(&"mounting tmpfs on /tmp".to_string()));
        assert!(l.contains(&"symlink /state/m1/rootfs/bin".to_string()));
    }

    #[test]
    fn files_and_volume_are_placed_after_pivot_root_from_the_old_root() {
        let files = vec![(PathBuf::from("/etc/ssh/key"), b"k".to_vec(), 0o600)];
        let steps = plan(
            &spec(files, Some((Path::new("/vols/v1"), Path::new("/data")))),
            &layout(),
        )
        .expect("plan");
        let l = labels(&steps);
        let pivot = l.iter().position(|s| s == "pivot_root").expect("pivot");
        let vol = l
            .iter()
            .position(|s| s == "bind /.oldroot/vols/v1 on /data")
            .expect("volume");
        let file = l
            .iter()
            .position(|s| s == "writing /etc/ssh/key")
            .expect("file");
        let detach = l
            .iter()
            .position(|s| s == "detaching the host root")
            .expect("detach");
        assert!(pivot < vol && vol < file && file < detach);
        assert!(l.contains(&"mkdir /etc/ssh".to_string()));
        assert!(l.contains(&"bind /.oldroot/state/m1/var-lib on /var/lib".to_string()));
        let hide = l.iter().position(|s| s == "hiding /state").expect("hide");
        assert!(pivot < hide && hide < vol);
    }

    #[test]
    fn an_image_root_is_an_overlay_with_a_per_start_upper_and_no_host_tree() {
        let mut image = spec(
            vec![(PathBuf::from("/etc/hosts"), b"h".to_vec(), 0o644)],
            Some((Path::new("/vols/v1"), Path::new("/data"))),
        );
        image.image_root = Some(Path::new("/state/rootfs/images/ab/rootfs"));
        image.working_dir = Some(Path::new("/srv/app"));
        image.ids = Some((1000, 1000));
        // The host's layout plays no part: its /usr and /etc are not seen.
        let steps = plan(&image, &layout()).expect("plan");
        let l = labels(&steps);
        let at = |want: &str| {
            l.iter()
                .position(|s| s == want)
                .unwrap_or_else(|| panic!("no step {want:?} in {l:#?}"))
        };
        let root =
            at("mounting the image /state/rootfs/images/ab/rootfs as the root /state/m1/rootfs");
        assert!(
            at("mkdir /state/m1/upper/rootfs") < root && at("mkdir /state/m1/upper/work") < root
        );
        let pivot = at("pivot_root");
        for bound in ["/proc", "/sys", "/dev"] {
            assert!(root < at(&format!("bind {bound} on /state/m1/rootfs{bound}")));
        }
        assert!(at("mounting tmpfs on /tmp") < pivot && at("mounting tmpfs on /run") < pivot);
        assert!(pivot < at("bind /.oldroot/vols/v1 on /data"));
        assert!(pivot < at("writing /etc/hosts"));
        let chdir = at("chdir /srv/app");
        assert!(
            at("detaching the host root") < chdir && chdir < at("switching to uid 1000 gid 1000")
        );
        assert_eq!(
            at("switching to uid 1000 gid 1000"),
            l.len() - 1,
            "ids change last"
        );
        assert!(!l.iter().any(|s| s.contains("overlay of /usr")
            || s.contains("hiding")
            || s.contains("var-lib")));
        let data = steps
            .iter()
            .find_map(|s| match &s.op {
                Op::Overlay { data, .. } => Some(data.to_string_lossy().into_owned()),
                _ => None,
            })
            .expect("overlay");
        assert_eq!(
            data,
            "lowerdir=/state/rootfs/images/ab/rootfs,upperdir=/state/m1/upper/rootfs,workdir=/state/m1/upper/work"
        );
        // Root stays root; files under a host tree are still refused.
        image.ids = Some((0, 0));
        let l = labels(&plan(&image, &[]).expect("plan"));
        assert!(!l.iter().any(|s| s.starts_with("switching")));
        image.files = vec![(PathBuf::from("/proc/x"), vec![], 0o644)];
        assert!(plan(&image, &[]).is_err());
        let mut bad = spec(vec![], None);
        bad.image_root = Some(Path::new("/state/a:b"));
        assert!(plan(&bad, &[]).is_err());
    }

    #[test]
    fn paths_in_trees_shared_with_the_host_or_relative_are_refused() {
        for bad in ["/proc/x", "/mnt/x", "relative", "/etc/../x", "/"] {
            let files = vec![(PathBuf::from(bad), vec![], 0o644)];
            assert!(
                plan(&spec(files, None), &layout()).is_err(),
                "{bad} accepted"
            );
        }
        assert!(plan(
            &spec(vec![], Some((Path::new("/v"), Path::new("/dev/v")))),
            &layout()
        )
        .is_err());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), OsString::from("/a b"));
        assert_eq!(unescape_mountinfo("/plain"), OsString::from("/plain"));
    }
}
