//! The layer unpacker: applies one OCI layer (a tar stream, optionally gzip) onto a root
//! directory, with OCI whiteouts (`.wh.<name>`, opaque `.wh..wh..opq`), symlinks, hard links,
//! device nodes, modes, mtimes and (as root) ownership. It verifies the blob's digest and the
//! uncompressed `diff_id` while it reads.
//!
//! Nothing may escape the root: entry names are relative (an absolute name or a `..`
//! component is refused), and every directory an entry is written into is opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from the root's descriptor, so a symlink
//! (from this layer or a lower one) that points outside, absolute or through `..`, makes the
//! kernel refuse the resolution (EXDEV) instead of writing through it. The entry itself is
//! created with `*at` calls that never follow a final symlink (`O_NOFOLLOW`, `O_EXCL`,
//! `AT_SYMLINK_NOFOLLOW`); an existing entry is removed first, as tar does. Hard link targets
//! are resolved the same way. This is stricter than containerd, which resolves an absolute
//! symlink inside the root ("in-root"); layers written by image builders never write through a
//! symlink, so refusing is the safe choice and says so in its error.
//!
//! Why not `tar::Archive::unpack_in`: it knows no whiteouts (test `tar_crate_knows_no_whiteouts`)
//! and checks escapes by canonicalising paths before it writes, which races with any other
//! change to the tree; here the kernel enforces the boundary on every open.
//! This file does no network I/O and knows nothing of registries or caches.

use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};

/// The OCI whiteout prefix and the opaque-directory marker (OCI image-spec `layer.md`).
const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// How a layer blob is compressed (from its media type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar`
    None,
    /// `...tar+gzip` and Docker's `...rootfs.diff.tar.gzip`
    Gzip,
}

impl Compression {
    /// The compression of a layer media type, or `None` for a type the lab cannot unpack.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            _ => None,
        }
    }
}

/// Errors applying one layer. The caller adds the image and the layer digest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("entry `{path}` refused: {reason}")]
    Refused { path: String, reason: &'static str },
    #[error("entry `{path}`: {op}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("entry `{path}`: unsupported tar entry type {kind:?}")]
    Unsupported { path: String, kind: tar::EntryType },
    #[error("reading the layer's tar stream")]
    Read(#[source] io::Error),
    #[error("the layer's digest is {actual}, not {expected}")]
    Digest { expected: String, actual: String },
    #[error("the uncompressed layer's digest is {actual}, not its diff_id {expected}")]
    DiffId { expected: String, actual: String },
}

impl Error {
    /// True when the disk (or a quota) ran full while writing.
    pub fn is_no_space(&self) -> bool {
        let e = match self {
            Error::Io { source, .. } | Error::Read(source) => source,
            _ => return false,
        };
        matches!(
            e.raw_os_error(),
            Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error()
                || code == rustix::io::Errno::DQUOT.raw_os_error()
        )
    }
}

/// What one layer held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    pub whiteouts: u64,
}

/// Open `root` (a directory) for [`apply`].
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Apply a layer blob read from `blob` onto `root`, checking that the blob hashes to `digest`
/// and its uncompressed tar to `diff_id` (both `sha256:<hex>`). On an error the root may hold
/// part of the layer: callers unpack into a scratch directory they discard.
pub fn apply_blob(
    root: &OwnedFd,
    blob: impl Read,
    compression: Compression,
    digest: &str,
    diff_id: Option<&str>,
) -> Result<Stats, Error> {
    let mut packed = Hashing::new(blob);
    let stats = match compression {
        Compression::None => apply_checked(root, &mut packed, diff_id)?,
        Compression::Gzip => {
            let mut gz = flate2::read::MultiGzDecoder::new(&mut packed);
            let stats = apply_checked(root, &mut gz, diff_id)?;
            // Trailing bytes after the gzip member still belong to the blob's digest.
            io::copy(&mut gz.into_inner(), &mut io::sink()).map_err(Error::Read)?;
            stats
        }
    };
    io::copy(&mut packed, &mut io::sink()).map_err(Error::Read)?;
    let actual = packed.digest();
    if actual != digest {
        return Err(Error::Digest {
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(stats)
}

fn apply_checked(root: &OwnedFd, tar: impl Read, diff_id: Option<&str>) -> Result<Stats, Error> {
    let mut plain = Hashing::new(tar);
    let stats = apply(root, &mut plain)?;
    io::copy(&mut plain, &mut io::sink()).map_err(Error::Read)?;
    let actual = plain.digest();
    match diff_id {
        Some(expected) if expected != actual => Err(Error::DiffId {
            expected: expected.to_string(),
            actual,
        }),
        _ => Ok(stats),
    }
}

/// Apply an uncompressed layer tar stream onto `root`.
pub fn apply(root: &OwnedFd, tar: impl Read) -> Result<Stats, Error> {
    let owners = nix::unistd::geteuid().is_root();
    let mut archive = tar::Archive::new(tar);
    let mut stats = Stats::default();
    // Paths this layer wrote: an opaque whiteout hides only what lower layers put there.
    let mut written: HashSet<PathBuf> = HashSet::new();
    // Directory modes and times are set last, so a read-only directory can still be filled.
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    for entry in archive.entries().map_err(Error::Read)? {
        let mut entry = entry.map_err(Error::Read)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            continue;
        }
        let Some(rel) = relative(&raw, &shown)? else {
            continue; // the root itself (`./`)
        };
        stats.entries += 1;
        let (parent, name) = split(&rel);
        let io_err = |op: &'static str| {
            let path = shown.clone();
            move |source: io::Error| Error::Io { path, op, source }
        };
        if name.as_bytes() == OPAQUE.as_bytes() {
            stats.whiteouts += 1;
            if let Some(dir) = existing_dir(root, &parent, &shown)? {
                clear_dir(&dir, &parent, &written)
                    .map_err(io_err("clearing an opaque directory"))?;
            }
            continue;
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT.as_bytes()) {
            // `.wh..` and `.wh...` would name the directory itself or its parent: removing that
            // is outside what a whiteout may hide (and `..` at the top would leave the root).
            if matches!(hidden, b"" | b"." | b"..") {
                return Err(Error::Refused {
                    path: shown.clone(),
                    reason: "a whiteout of `.`, `..` or nothing",
                });
            }
            stats.whiteouts += 1;
            if let Some(dir) = existing_dir(root, &parent, &shown)? {
                remove_all(&dir, OsStr::from_bytes(hidden))
                    .map_err(io_err("removing a whited-out path"))?;
            }
            continue;
        }
        let meta = Meta::of(entry.header(), owners).map_err(io_err("reading the header"))?;
        let dir = make_parents(root, &parent, &shown)?;
        match kind {
            tar::EntryType::Directory => {
                if !clear(&dir, &name, true).map_err(io_err("replacing an existing entry"))? {
                    rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(0o700))
                        .map_err(|e| io_err("creating the directory")(e.into()))?;
                }
                if let Some((uid, gid)) = meta.owner {
                    rustix::fs::chownat(
                        &dir,
                        &name,
                        Some(uid),
                        Some(gid),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io_err("setting the owner")(e.into()))?;
                }
                dirs.push((rel.clone(), meta));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                clear(&dir, &name, false).map_err(io_err("replacing an existing entry"))?;
                let xattrs = xattrs(&mut entry).map_err(io_err("reading PAX headers"))?;
                let fd = rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io_err("creating the file")(e.into()))?;
                let mut file = std::fs::File::from(fd);
                stats.bytes +=
                    io::copy(&mut entry, &mut file).map_err(io_err("writing the file"))?;
                if let Some((uid, gid)) = meta.owner {
                    rustix::fs::fchown(&file, Some(uid), Some(gid))
                        .map_err(|e| io_err("setting the owner")(e.into()))?;
                }
                // After chown, which clears set-id bits.
                rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode))
                    .map_err(|e| io_err("setting the mode")(e.into()))?;
                for (key, value) in xattrs {
                    rustix::fs::fsetxattr(
                        &file,
                        key.as_os_str(),
                        &value,
                        rustix::fs::XattrFlags::empty(),
                    )
                    .map_err(|e| io_err("setting an extended attribute")(e.into()))?;
                }
                rustix::fs::futimens(&file, &meta.times())
                    .map_err(|e| io_err("setting the mtime")(e.into()))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::Refused {
                        path: shown.clone(),
                        reason: "a symlink without a target",
                    })?
                    .into_owned();
                clear(&dir, &name, false).map_err(io_err("replacing an existing entry"))?;
                // The target is data: it is never followed here, and any later write through
                // it is resolved beneath the root.
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, &name)
                    .map_err(|e| io_err("creating the symlink")(e.into()))?;
                if let Some((uid, gid)) = meta.owner {
                    rustix::fs::chownat(
                        &dir,
                        &name,
                        Some(uid),
                        Some(gid),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io_err("setting the owner")(e.into()))?;
                }
                rustix::fs::utimensat(&dir, &name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err("setting the mtime")(e.into()))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::Refused {
                        path: shown.clone(),
                        reason: "a hard link without a target",
                    })?
                    .into_owned();
                let target_shown = String::from_utf8_lossy(&target).into_owned();
                let Some(target_rel) = relative(&target, &shown)? else {
                    return Err(Error::Refused {
                        path: shown,
                        reason: "a hard link to the root directory",
                    });
                };
                let (tparent, tname) = split(&target_rel);
                let tdir = existing_dir(root, &tparent, &shown)?.ok_or_else(|| Error::Io {
                    path: shown.clone(),
                    op: "finding the hard link's target",
                    source: io::Error::new(io::ErrorKind::NotFound, target_shown.clone()),
                })?;
                if target_rel != rel {
                    clear(&dir, &name, false).map_err(io_err("replacing an existing entry"))?;
                    // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                    rustix::fs::linkat(&tdir, &tname, &dir, &name, AtFlags::empty())
                        .map_err(|e| io_err("creating the hard link")(e.into()))?;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                clear(&dir, &name, false).map_err(io_err("replacing an existing entry"))?;
                let header = entry.header();
                let (file_type, dev) = match kind {
                    tar::EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == tar::EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                rustix::fs::mknodat(&dir, &name, file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| io_err("creating the device node")(e.into()))?;
                if let Some((uid, gid)) = meta.owner {
                    rustix::fs::chownat(
                        &dir,
                        &name,
                        Some(uid),
                        Some(gid),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io_err("setting the owner")(e.into()))?;
                }
                rustix::fs::chmodat(
                    &dir,
                    &name,
                    Mode::from_raw_mode(meta.mode),
                    AtFlags::empty(),
                )
                .map_err(|e| io_err("setting the mode")(e.into()))?;
            }
            other => {
                return Err(Error::Unsupported {
                    path: shown,
                    kind: other,
                })
            }
        }
        written.insert(rel);
    }
    for (rel, meta) in dirs {
        let shown = rel.display().to_string();
        let fd = match open_beneath(
            root,
            &rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        ) {
            Ok(fd) => fd,
            // Removed again by a later entry of this layer.
            Err(e) if e == rustix::io::Errno::NOENT => continue,
            Err(e) => return Err(resolve_error(&shown, e)),
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode)).map_err(|e| Error::Io {
            path: shown.clone(),
            op: "setting the mode",
            source: e.into(),
        })?;
        rustix::fs::futimens(&fd, &meta.times()).map_err(|e| Error::Io {
            path: shown,
            op: "setting the mtime",
            source: e.into(),
        })?;
    }
    Ok(stats)
}

/// The mode, owner and mtime an entry asks for.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    owner: Option<(rustix::fs::Uid, rustix::fs::Gid)>,
    mtime: i64,
}

impl Meta {
    fn of(header: &tar::Header, owners: bool) -> io::Result<Meta> {
        let owner = if owners {
            let uid = u32::try_from(header.uid()?).map_err(io::Error::other)?;
            let gid = u32::try_from(header.gid()?).map_err(io::Error::other)?;
            Some((
                rustix::fs::Uid::from_raw(uid),
                rustix::fs::Gid::from_raw(gid),
            ))
        } else {
            None
        };
        Ok(Meta {
            mode: header.mode()? & 0o7777,
            owner,
            mtime: i64::try_from(header.mtime()?).unwrap_or(i64::MAX),
        })
    }

    fn times(&self) -> Timestamps {
        let t = Timespec {
            tv_sec: self.mtime,
            tv_nsec: 0,
        };
        Timestamps {
            last_access: t,
            last_modification: t,
        }
    }
}

/// The entry name as a relative path without `.` components; `None` for the root itself.
/// Absolute names and `..` are refused: a layer names paths inside its root only.
fn relative(raw: &[u8], shown: &str) -> Result<Option<PathBuf>, Error> {
    if raw.first() == Some(&b'/') {
        return Err(Error::Refused {
            path: shown.to_string(),
            reason: "an absolute path",
        });
    }
    let mut out = PathBuf::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(Error::Refused {
                    path: shown.to_string(),
                    reason: "a `..` component",
                })
            }
            p => out.push(OsStr::from_bytes(p)),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn split(rel: &Path) -> (PathBuf, OsString) {
    let name = rel.file_name().map(OsStr::to_os_string).unwrap_or_default();
    let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    (parent, name)
}

/// Open `rel` (relative, may be empty for the root) beneath `root`: no `..` above it, no
/// absolute symlink, no magic link (`/proc/self/...`).
fn open_beneath(root: &OwnedFd, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let path: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        root,
        path,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
}

fn resolve_error(shown: &str, e: rustix::io::Errno) -> Error {
    if e == rustix::io::Errno::XDEV || e == rustix::io::Errno::LOOP {
        Error::Refused {
            path: shown.to_string(),
            reason: "its directory resolves outside the image root (through a symlink)",
        }
    } else if e == rustix::io::Errno::NOTDIR {
        Error::Refused {
            path: shown.to_string(),
            reason: "a parent is not a directory",
        }
    } else {
        Error::Io {
            path: shown.to_string(),
            op: "opening the parent directory",
            source: e.into(),
        }
    }
}

/// The directory `parent` if it exists beneath the root (`None` when it does not).
fn existing_dir(root: &OwnedFd, parent: &Path, shown: &str) -> Result<Option<OwnedFd>, Error> {
    match open_beneath(root, parent, OFlags::PATH | OFlags::DIRECTORY) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e == rustix::io::Errno::NOENT => Ok(None),
        Err(e) => Err(resolve_error(shown, e)),
    }
}

/// The directory `parent` beneath the root, creating missing components (mode 0755, as tar
/// does for directories a layer leaves implicit).
fn make_parents(root: &OwnedFd, parent: &Path, shown: &str) -> Result<OwnedFd, Error> {
    if let Some(fd) = existing_dir(root, parent, shown)? {
        return Ok(fd);
    }
    let mut cur = open_beneath(root, Path::new(""), OFlags::PATH | OFlags::DIRECTORY)
        .map_err(|e| resolve_error(shown, e))?;
    let mut prefix = PathBuf::new();
    for comp in parent.components() {
        prefix.push(comp);
        cur = match open_beneath(root, &prefix, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if e == rustix::io::Errno::NOENT => {
                let name = comp.as_os_str();
                let io_err = |op: &'static str| {
                    move |e: rustix::io::Errno| Error::Io {
                        path: shown.to_string(),
                        op,
                        source: e.into(),
                    }
                };
                rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755))
                    .map_err(io_err("creating a parent directory"))?;
                rustix::fs::chmodat(&cur, name, Mode::from_raw_mode(0o755), AtFlags::empty())
                    .map_err(io_err("setting a parent directory's mode"))?;
                open_beneath(root, &prefix, OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(|e| resolve_error(shown, e))?
            }
            Err(e) => return Err(resolve_error(shown, e)),
        };
    }
    Ok(cur)
}

/// Make room for a new entry `name` in `dir`: remove what is there, except an existing
/// directory when `keep_dir` (tar merges a directory entry into an existing directory).
/// Returns whether a directory was kept. Never follows a symlink.
fn clear(dir: &OwnedFd, name: &OsStr, keep_dir: bool) -> io::Result<bool> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(e) if e == rustix::io::Errno::NOENT => Ok(false),
        Err(e) => Err(e.into()),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            if keep_dir {
                Ok(true)
            } else {
                remove_all(dir, name)?;
                Ok(false)
            }
        }
        Ok(_) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            Ok(false)
        }
    }
}

/// Remove `name` in `dir` and, if it is a directory, everything under it; a missing name is
/// not an error. Symlinks are removed, never followed.
fn remove_all(dir: &impl AsFd, name: &OsStr) -> io::Result<()> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(e) if e == rustix::io::Errno::NOENT => return Ok(()),
        r => r?,
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into);
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in children(&sub)? {
        remove_all(&sub, &child)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(Into::into)
}

/// Remove the children of `dir` (at `rel`) that this layer did not write (opaque whiteout).
fn clear_dir(dir: &OwnedFd, rel: &Path, written: &HashSet<PathBuf>) -> io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in children(&fd)? {
        if !written.contains(&rel.join(&child)) {
            remove_all(&fd, &child)?;
        }
    }
    Ok(())
}

fn children(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(out)
}

/// Extended attributes from PAX `SCHILY.xattr.<name>` records (how GNU tar and BuildKit carry
/// e.g. `security.capability`).
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                // Only what an image may say about its own files: `user.*` and file
                // capabilities. `trusted.*` (overlayfs's own `trusted.overlay.*` among them,
                // which the guest's overlay on this rootfs would obey) and other `security.*`
                // are the host's, never a layer's.
                if !(name.starts_with(b"user.") || name == b"security.capability") {
                    continue;
                }
                out.push((
                    OsStr::from_bytes(name).to_os_string(),
                    ext.value_bytes().to_vec(),
                ));
            }
        }
    }
    Ok(out)
}

/// A reader that hashes what passes through it (sha256).
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub use fks_bootstrap::artifacts::hex;
