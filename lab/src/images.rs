//! The lab's image table: `config.image` names an entry whose directories go first on the
//! guest's PATH (ARCHITECTURE "Images", "k3s inside the lab"). Entries live in
//! `<state>/images.json`, written by `fks-lab image add|node` whether the lab runs or not, and
//! read again at every guest start. The built-in `lab/base` is the host's own PATH.
//!
//! Two kinds of entry: `add` records host directories as they are; `node` copies a given
//! `fks-bootstrap` and a k3s (real, optionally verified against the release's
//! `sha256sum-<arch>.txt`, or `k3s-standin` installed as `k3s`) into
//! `<state>/images/<name>/bin`, so rebuilding `target/` does not change running guests, and
//! records which k3s it carries. Guests never see the state dir, so a node image's directory is
//! shown to them through a private overlay at [`NODE_IMAGE_GUEST_BIN`] ([`View::mounts`]).
//! Nothing here may present `k3s-standin` as k3s: its kind is taken from what the binary says
//! about itself, and a stand-in given as real k3s (or the reverse) is refused.
//! This file only reads and writes the table and the image directories; it must not start
//! guests or know about the Machines API.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The built-in image: the host's own programs.
pub const BASE_IMAGE: &str = "lab/base";

/// Where a guest sees the `bin` directory of a node image (a private overlay of
/// `<state>/images/<name>/bin`; the state dir itself is hidden from guests).
pub const NODE_IMAGE_GUEST_BIN: &str = "/fks-lab-image/bin";

/// The table's file name inside the state dir.
const FILE: &str = "images.json";

/// How long `--version` of a binary being registered may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors reading or writing the image table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the image table {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the image table {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the image table {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("image {name}: {op} {path}")]
    Io {
        name: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {name}: the k3s checksum file {path}")]
    Sums {
        name: String,
        path: PathBuf,
        #[source]
        source: Box<fks_bootstrap::artifacts::Error>,
    },
}

/// One entry: the directories put first on PATH, in order, and for node images what they carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Host directories (for a node image: its `<state>/images/<name>/bin`).
    pub bins: Vec<PathBuf>,
    /// Set for images registered with [`add_node`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeImage>,
}

/// What a node image carries, as the binaries reported it when they were registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeImage {
    /// `fks-bootstrap --version`'s first line.
    pub fks_bootstrap_version: String,
    /// sha256 of the copied `fks-bootstrap`.
    pub fks_bootstrap_sha256: String,
    /// The k3s it carries.
    pub k3s: K3sInfo,
}

/// Which k3s an image carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct K3sInfo {
    /// Real k3s or the stand-in.
    pub kind: K3sKind,
    /// The version the binary reports (`v1.33.7+k3s1`, or `v1.33.7+k3s-standin`).
    pub version: String,
    /// sha256 of the copied binary.
    pub sha256: String,
    /// The checksum file that verified it (real k3s only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<PathBuf>,
}

/// Real k3s or `k3s-standin` (a test double, never to be presented as k3s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum K3sKind {
    Real,
    Standin,
}

impl K3sInfo {
    /// One line for `fks-lab image list`, e.g. `k3s: stand-in (k3s-standin v1.33.7+k3s-standin)`
    /// or `k3s: v1.33.7+k3s1 (sha256 verified by sha256sum-amd64.txt)`.
    pub fn describe(&self) -> String {
        match self.kind {
            K3sKind::Standin => format!("k3s: stand-in (k3s-standin {}), not k3s", self.version),
            K3sKind::Real => match &self.verified_by {
                Some(p) => format!("k3s: {} (sha256 verified by {})", self.version, p.display()),
                None => format!("k3s: {} (sha256 not verified)", self.version),
            },
        }
    }
}

/// Which k3s to put into a node image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K3sSource {
    /// A real k3s binary, verified against the release's checksum file when one is given.
    Real {
        path: PathBuf,
        sha256_file: Option<PathBuf>,
    },
    /// The `k3s-standin` binary (installed as `k3s`).
    Standin { path: PathBuf },
}

/// How a guest sees an image: the directories to put first on PATH (guest paths) and the host
/// directories to show at guest paths (`(host, guest)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub path_dirs: Vec<PathBuf>,
    pub mounts: Vec<(PathBuf, PathBuf)>,
}

/// The stored entries (without the built-in one).
pub fn load(state_dir: &Path) -> Result<BTreeMap<String, Image>, Error> {
    let path = state_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Parse { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(Error::Read { path, source }),
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() || name == BASE_IMAGE {
        return Err(Error::Invalid {
            name: name.to_string(),
            reason: format!("the name must be non-empty and not the built-in {BASE_IMAGE}"),
        });
    }
    Ok(())
}

fn store(state_dir: &Path, name: &str, image: Image) -> Result<(), Error> {
    let mut table = load(state_dir)?;
    table.insert(name.to_string(), image);
    let path = state_dir.join(FILE);
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(&table).map_err(|e| Error::Write {
        path: tmp.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&tmp, bytes).map_err(|source| Error::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| Error::Write { path, source })
}

/// Add or replace `name` with these directories (absolute, existing); written atomically.
pub fn add(state_dir: &Path, name: &str, bins: &[PathBuf]) -> Result<(), Error> {
    let invalid = |reason: String| Error::Invalid {
        name: name.to_string(),
        reason,
    };
    check_name(name)?;
    if bins.is_empty() {
        return Err(invalid("give at least one --bin DIR".into()));
    }
    let mut abs = Vec::with_capacity(bins.len());
    for b in bins {
        let b = std::path::absolute(b)
            .map_err(|e| invalid(format!("cannot resolve {}: {e}", b.display())))?;
        // Guests get private, empty /tmp and /run: programs there would not be found.
        if b.starts_with("/tmp") || b.starts_with("/run") {
            return Err(invalid(format!(
                "{} is under /tmp or /run, which guests see as private empty directories",
                b.display()
            )));
        }
        if !b.is_dir() {
            return Err(invalid(format!("{} is not a directory", b.display())));
        }
        abs.push(b);
    }
    store(
        state_dir,
        name,
        Image {
            bins: abs,
            node: None,
        },
    )
}

/// The directory of node image `name` under the state dir: `/` becomes `+` (which names may
/// not contain), so distinct names get distinct directories.
pub fn node_image_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("images").join(name.replace('/', "+"))
}

/// Registers node image `name`: copies `fks_bootstrap` and the k3s of `k3s` into
/// `<state>/images/<name>/bin` (as `fks-bootstrap` and `k3s`), checks what each binary says it
/// is (`--version`), verifies real k3s against its checksum file when one is given, and records
/// it all in the table. Re-registering the same binaries changes nothing on disk; changed ones
/// replace the old files by rename, so running guests keep the ones they started with.
pub fn add_node(
    state_dir: &Path,
    name: &str,
    fks_bootstrap: &Path,
    k3s: &K3sSource,
) -> Result<NodeImage, Error> {
    check_name(name)?;
    if name.contains('+') || name.contains("..") || name.starts_with('/') || name.contains('\\') {
        return Err(Error::Invalid {
            name: name.to_string(),
            reason: "a node image name may not contain `+`, `..` or `\\`, nor start with `/`"
                .into(),
        });
    }
    let invalid = |reason: String| Error::Invalid {
        name: name.to_string(),
        reason,
    };
    let state_dir = std::path::absolute(state_dir)
        .map_err(|e| invalid(format!("cannot resolve {}: {e}", state_dir.display())))?;
    let bin = node_image_dir(&state_dir, name).join("bin");
    // Overlay options are comma- and colon-separated (see guest::mounts).
    let s = bin.to_string_lossy();
    if s.contains(',') || s.contains(':') {
        return Err(invalid(format!(
            "image dir {} contains ',' or ':'",
            bin.display()
        )));
    }
    std::fs::create_dir_all(&bin).map_err(|source| Error::Io {
        name: name.to_string(),
        op: "creating",
        path: bin.clone(),
        source,
    })?;

    let (fb_sha, fb_version) = install(name, fks_bootstrap, &bin, "fks-bootstrap", |out| {
        let first = out.lines().next().unwrap_or("").trim();
        if first.starts_with("fks-bootstrap ") {
            Ok(first.to_string())
        } else {
            Err(format!(
                "`--version` says {first:?}, not `fks-bootstrap X.Y.Z`"
            ))
        }
    })?;
    let (k3s_path, given_as) = match k3s {
        K3sSource::Real { path, .. } => (path, K3sKind::Real),
        K3sSource::Standin { path } => (path, K3sKind::Standin),
    };
    let expected = match k3s {
        K3sSource::Real {
            path,
            sha256_file: Some(sums),
        } => Some(expected_k3s_hash(name, path, sums)?),
        _ => None,
    };
    let (k3s_sha, k3s_version) = install(name, k3s_path, &bin, "k3s", |out| {
        let (kind, version) = k3s_identity(out)?;
        match (given_as, kind) {
            (K3sKind::Real, K3sKind::Standin) => Err(format!(
                "it is k3s-standin ({version}), a test double, not k3s: give it with --k3s-standin"
            )),
            (K3sKind::Standin, K3sKind::Real) => Err(format!(
                "it reports itself as real k3s ({version}), not k3s-standin: give it with --k3s"
            )),
            _ => Ok(version),
        }
    })?;
    let mut verified_by = None;
    if let (Some((expected, sums)), K3sSource::Real { .. }) = (expected, k3s) {
        if expected != k3s_sha {
            return Err(invalid(format!(
                "sha256 of {} is {k3s_sha}, but {} says {expected}",
                k3s_path.display(),
                sums.display()
            )));
        }
        verified_by = Some(sums);
    }
    let node = NodeImage {
        fks_bootstrap_version: fb_version,
        fks_bootstrap_sha256: fb_sha,
        k3s: K3sInfo {
            kind: given_as,
            version: k3s_version,
            sha256: k3s_sha,
            verified_by,
        },
    };
    store(
        &state_dir,
        name,
        Image {
            bins: vec![bin],
            node: Some(node.clone()),
        },
    )?;
    Ok(node)
}

/// Reads `(kind, version)` from a k3s binary's `--version` output: real k3s prints
/// `k3s version v1.33.7+k3s1 (<commit>)`, the stand-in `k3s-standin version v1.33.7+k3s-standin
/// (stand-in for k3s, not k3s)`. Anything mentioning `k3s-standin` is the stand-in.
pub fn k3s_identity(out: &str) -> Result<(K3sKind, String), String> {
    let first = out.lines().next().unwrap_or("").trim();
    let mut words = first.split_whitespace();
    let (program, word, version) = (words.next(), words.next(), words.next());
    if out.contains("k3s-standin") {
        return match (program, word, version) {
            (Some("k3s-standin"), Some("version"), Some(v)) => Ok((K3sKind::Standin, v.to_string())),
            _ => Err(format!(
                "`--version` mentions k3s-standin but its first line {first:?} is not `k3s-standin version V`"
            )),
        };
    }
    match (program, word, version) {
        (Some("k3s"), Some("version"), Some(v)) if v.starts_with('v') => {
            Ok((K3sKind::Real, v.to_string()))
        }
        _ => Err(format!(
            "`--version` says {first:?}, not `k3s version vX.Y.Z+k3sN`"
        )),
    }
}

/// The sha256 the release's checksum file gives for the k3s binary at `path`: looked up under
/// the file's own name, else under this host's release asset name (`k3s`, `k3s-arm64`, ...),
/// matched exactly as install.sh does (reference/k3s.md §5).
fn expected_k3s_hash(name: &str, path: &Path, sums: &Path) -> Result<(String, PathBuf), Error> {
    use fks_bootstrap::artifacts as art;
    let text = std::fs::read_to_string(sums).map_err(|source| Error::Io {
        name: name.to_string(),
        op: "reading",
        path: sums.to_path_buf(),
        source,
    })?;
    let sums_err = |source| Error::Sums {
        name: name.to_string(),
        path: sums.to_path_buf(),
        source: Box::new(source),
    };
    let table = art::parse_sha256sums(&text).map_err(sums_err)?;
    let own = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let asset = art::Arch::host().map_err(sums_err)?.binary_asset();
    let hash = own
        .as_deref()
        .and_then(|n| art::expected_hash(&table, n))
        .or_else(|| art::expected_hash(&table, asset))
        .ok_or_else(|| {
            sums_err(art::Error::MissingAsset {
                asset: own.unwrap_or_else(|| asset.to_string()),
                from: sums.display().to_string(),
            })
        })?;
    Ok((hash.to_string(), sums.to_path_buf()))
}

/// Copies `src` to `<bin>/<as_name>` through a temporary file, hashing it; runs the copy's
/// `--version` (argv only, no shell) and lets `identify` judge it; then renames it into place.
/// When `<bin>/<as_name>` already has the same bytes it is left alone.
fn install(
    name: &str,
    src: &Path,
    bin: &Path,
    as_name: &str,
    identify: impl Fn(&str) -> Result<String, String>,
) -> Result<(String, String), Error> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            name: name.to_string(),
            op,
            path,
            source,
        }
    };
    let target = bin.join(as_name);
    let tmp = bin.join(format!(".{as_name}.tmp"));
    let mut input = std::fs::File::open(src).map_err(io("opening", src))?;
    if !input.metadata().map_err(io("inspecting", src))?.is_file() {
        return Err(Error::Invalid {
            name: name.to_string(),
            reason: format!("{} is not a file", src.display()),
        });
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o755)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(io("reading", src))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io("writing", &tmp))?;
    }
    out.sync_all().map_err(io("writing", &tmp))?;
    drop(out);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(io("chmod", &tmp))?;
    let sha = hex_of(&hasher.finalize());
    let judged = version_output(&tmp)
        .map_err(|e| format!("running {} --version: {e}", src.display()))
        .and_then(|out| identify(&out).map_err(|e| format!("{}: {e}", src.display())));
    let version = match judged {
        Ok(v) => v,
        Err(reason) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Invalid {
                name: name.to_string(),
                reason,
            });
        }
    };
    if sha_of(&target).as_deref() == Some(sha.as_str()) {
        let _ = std::fs::remove_file(&tmp);
    } else {
        std::fs::rename(&tmp, &target).map_err(io("renaming into", &target))?;
    }
    Ok((sha, version))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of an existing file, `None` when it cannot be read.
fn sha_of(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).ok()?;
    Some(hex_of(&hasher.finalize()))
}

/// stdout and stderr of `<path> --version`, killed after [`VERSION_TIMEOUT`].
fn version_output(path: &Path) -> Result<String, String> {
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let mut child = loop {
        let spawned = Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => break child,
            // The file was just written: a child another thread forked meanwhile may still
            // hold the write descriptor until it execs (ETXTBSY); that passes at once.
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no exit within {}s", VERSION_TIMEOUT.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("exited with {}", out.status));
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text)
}

/// How a guest of image `name` sees it, or `None` when the table has no such entry.
/// `lab/base` is the host's PATH as this process sees it; `add` images are their host
/// directories; a node image is its `bin` shown at [`NODE_IMAGE_GUEST_BIN`].
pub fn resolve(state_dir: &Path, name: &str) -> Result<Option<View>, Error> {
    if name == BASE_IMAGE {
        let host = std::env::var_os("PATH").unwrap_or_default();
        return Ok(Some(View {
            path_dirs: std::env::split_paths(&host).collect(),
            mounts: Vec::new(),
        }));
    }
    Ok(load(state_dir)?.remove(name).map(|i| match i.node {
        None => View {
            path_dirs: i.bins,
            mounts: Vec::new(),
        },
        Some(_) => {
            let guest = PathBuf::from(NODE_IMAGE_GUEST_BIN);
            View {
                path_dirs: vec![guest.clone()],
                mounts: i.bins.into_iter().map(|b| (b, guest.clone())).collect(),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_images_resolve_and_unknown_ones_do_not() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        assert_eq!(resolve(dir.path(), "lab/k3s").expect("resolve"), None);
        add(dir.path(), "lab/k3s", std::slice::from_ref(&bin)).expect("add");
        assert_eq!(
            resolve(dir.path(), "lab/k3s").expect("resolve"),
            Some(View {
                path_dirs: vec![bin.clone()],
                mounts: Vec::new()
            })
        );
        assert!(resolve(dir.path(), BASE_IMAGE)
            .expect("base")
            .is_some_and(|v| !v.path_dirs.is_empty() || std::env::var_os("PATH").is_none()));
        assert!(add(dir.path(), "x", &[dir.path().join("missing")]).is_err());
        assert!(add(dir.path(), BASE_IMAGE, &[bin]).is_err());
        assert!(add(dir.path(), "y", &[PathBuf::from("/tmp")]).is_err());
    }

    /// A fake binary: a shell script printing `version_line` for `--version`.
    fn fake(dir: &Path, file: &str, version_line: &str) -> PathBuf {
        let p = dir.join(file);
        std::fs::write(&p, format!("#!/bin/sh\necho '{version_line}'\n")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    struct Fixture {
        dir: tempfile::TempDir,
        fks: PathBuf,
        standin: PathBuf,
        real: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        Fixture {
            fks: fake(&src, "fks-bootstrap", "fks-bootstrap 0.1.0"),
            standin: fake(
                &src,
                "k3s-standin",
                "k3s-standin version v1.33.7+k3s-standin (stand-in for k3s, not k3s)",
            ),
            real: fake(&src, "k3s", "k3s version v1.33.7+k3s1 (d5ed2a5c)"),
            dir,
        }
    }

    #[test]
    fn node_image_with_standin_is_copied_recorded_and_described_as_stand_in() {
        let f = fixture();
        let state = f.dir.path().join("state");
        let k3s = K3sSource::Standin {
            path: f.standin.clone(),
        };
        let node = add_node(&state, "lab/fks-node", &f.fks, &k3s).expect("add_node");
        assert_eq!(node.k3s.kind, K3sKind::Standin);
        assert_eq!(node.k3s.version, "v1.33.7+k3s-standin");
        assert_eq!(node.fks_bootstrap_version, "fks-bootstrap 0.1.0");
        assert_eq!(
            node.k3s.describe(),
            "k3s: stand-in (k3s-standin v1.33.7+k3s-standin), not k3s"
        );
        let bin = node_image_dir(&state, "lab/fks-node").join("bin");
        assert_eq!(bin, state.join("images").join("lab+fks-node").join("bin"));
        assert_eq!(
            std::fs::read(bin.join("k3s")).expect("k3s"),
            std::fs::read(&f.standin).expect("src")
        );
        assert!(bin.join("fks-bootstrap").is_file());
        assert!(!bin.join(".k3s.tmp").exists());
        // Guests see the copy through the overlay path, never the state dir.
        assert_eq!(
            resolve(&state, "lab/fks-node").expect("resolve"),
            Some(View {
                path_dirs: vec![PathBuf::from(NODE_IMAGE_GUEST_BIN)],
                mounts: vec![(bin.clone(), PathBuf::from(NODE_IMAGE_GUEST_BIN))],
            })
        );
        // The copy does not follow later changes of the source (a rebuilt target/).
        std::fs::write(&f.standin, "changed").expect("overwrite");
        assert_ne!(
            std::fs::read(bin.join("k3s")).expect("k3s"),
            b"changed".to_vec()
        );
        let table = load(&state).expect("load");
        assert_eq!(table["lab/fks-node"].node.as_ref(), Some(&node));
    }

    #[test]
    fn re_registering_the_same_binaries_keeps_the_files_and_one_entry() {
        let f = fixture();
        let state = f.dir.path().join("state");
        let k3s = K3sSource::Standin {
            path: f.standin.clone(),
        };
        add_node(&state, "lab/fks-node", &f.fks, &k3s).expect("first");
        let k3s_path = node_image_dir(&state, "lab/fks-node")
            .join("bin")
            .join("k3s");
        let before = std::fs::metadata(&k3s_path).expect("meta");
        add_node(&state, "lab/fks-node", &f.fks, &k3s).expect("second");
        let after = std::fs::metadata(&k3s_path).expect("meta");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            before.ino(),
            after.ino(),
            "unchanged binary is not replaced"
        );
        assert_eq!(load(&state).expect("load").len(), 1);
    }

    #[test]
    fn standin_given_as_real_k3s_is_refused_and_the_reverse_too() {
        let f = fixture();
        let state = f.dir.path().join("state");
        let as_real = K3sSource::Real {
            path: f.standin.clone(),
            sha256_file: None,
        };
        let e = add_node(&state, "lab/fks-node", &f.fks, &as_real).expect_err("refused");
        assert!(
            e.to_string()
                .contains("not k3s: give it with --k3s-standin"),
            "{e}"
        );
        let as_standin = K3sSource::Standin {
            path: f.real.clone(),
        };
        let e = add_node(&state, "lab/fks-node", &f.fks, &as_standin).expect_err("refused");
        assert!(e.to_string().contains("give it with --k3s"), "{e}");
        assert!(load(&state).expect("load").is_empty());
        let bin = node_image_dir(&state, "lab/fks-node").join("bin");
        assert!(!bin.join("k3s").exists() && !bin.join(".k3s.tmp").exists());
    }

    #[test]
    fn real_k3s_is_verified_against_the_release_checksum_file() {
        let f = fixture();
        let state = f.dir.path().join("state");
        let bytes = std::fs::read(&f.real).expect("read");
        let good = hex_of(&Sha256::digest(&bytes));
        let sums = f.dir.path().join("sha256sum-amd64.txt");
        std::fs::write(
            &sums,
            format!("{good}  k3s\n{}  k3s-arm64\n", "a".repeat(64)),
        )
        .expect("sums");
        let k3s = K3sSource::Real {
            path: f.real.clone(),
            sha256_file: Some(sums.clone()),
        };
        let node = add_node(&state, "lab/real", &f.fks, &k3s).expect("verified");
        assert_eq!(node.k3s.kind, K3sKind::Real);
        assert_eq!(node.k3s.version, "v1.33.7+k3s1");
        assert_eq!(node.k3s.verified_by.as_deref(), Some(sums.as_path()));
        assert!(node
            .k3s
            .describe()
            .starts_with("k3s: v1.33.7+k3s1 (sha256 verified by"));

        std::fs::write(&sums, format!("{}  k3s\n", "b".repeat(64))).expect("sums");
        let e = add_node(&state, "lab/bad", &f.fks, &k3s).expect_err("mismatch");
        assert!(e.to_string().contains("but"), "{e}");
        assert!(!load(&state).expect("load").contains_key("lab/bad"));

        let unverified = K3sSource::Real {
            path: f.real.clone(),
            sha256_file: None,
        };
        let node = add_node(&state, "lab/unverified", &f.fks, &unverified).expect("add");
        assert_eq!(
            node.k3s.describe(),
            "k3s: v1.33.7+k3s1 (sha256 not verified)"
        );
    }

    #[test]
    fn a_binary_that_is_not_fks_bootstrap_is_refused() {
        let f = fixture();
        let k3s = K3sSource::Standin {
            path: f.standin.clone(),
        };
        let e = add_node(&f.dir.path().join("s"), "lab/x", &f.real, &k3s).expect_err("refused");
        assert!(e.to_string().contains("not `fks-bootstrap X.Y.Z`"), "{e}");
    }

    #[test]
    fn k3s_identity_reads_real_and_standin_version_lines() {
        assert_eq!(
            k3s_identity("k3s version v1.24.15+k3s1 (5e5f8e1b)\ngo version go1.20.5\n"),
            Ok((K3sKind::Real, "v1.24.15+k3s1".to_string()))
        );
        assert_eq!(
            k3s_identity("k3s-standin version v1.33.7+k3s-standin (stand-in for k3s, not k3s)"),
            Ok((K3sKind::Standin, "v1.33.7+k3s-standin".to_string()))
        );
        // A binary claiming to be k3s while mentioning the stand-in is not taken as real.
        assert!(k3s_identity("k3s version v1.33.7+k3s-standin\n(k3s-standin)").is_err());
        assert!(k3s_identity("hello").is_err());
    }
}
