//! Reading and writing kubeconfig files: private (0600) atomic writes and `--merge` with a
//! backup. The only effects of this module live here; the decisions are in `rewrite` and
//! `merge`. Must not print file contents: they hold the admin client key.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::merge::merge;
use super::model::Kubeconfig;
use super::rewrite::parse;
use super::{Error, Result};

/// Mode of a written kubeconfig: it holds the admin client key.
const FILE_MODE: u32 = 0o600;
/// Mode of a directory this module creates (`~/.kube`).
const DIR_MODE: u32 = 0o700;

/// What `merge_into` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// The file written (the symlink target when the path was a symlink).
    pub path: PathBuf,
    /// The backup of the previous file; None when there was no file.
    pub backup: Option<PathBuf>,
    /// Names of entries (clusters, users, contexts) that replaced entries of the same name.
    pub replaced: Vec<String>,
    /// Names of entries that were added.
    pub added: Vec<String>,
    /// The file's current context after the merge.
    pub current_context: Option<String>,
    /// Whether the current context changed.
    pub switched: bool,
}

/// `~/.kube/<cluster>`: where `-k` writes a cluster's own kubeconfig (issue 5).
pub fn cluster_path(home: &Path, cluster: &str) -> PathBuf {
    home.join(".kube").join(cluster)
}

/// `~/.kube/config`: the file `-k --merge` merges into (issue 5).
pub fn merge_path(home: &Path) -> PathBuf {
    home.join(".kube").join("config")
}

/// Reads and parses a kubeconfig; `Ok(None)` when the file does not exist. A parse error names
/// the path.
pub fn read(path: &Path) -> Result<Option<Kubeconfig>> {
    match fs::read_to_string(path) {
        Ok(text) => parse(&text, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io("reading", path, source)),
    }
}

/// Writes `cfg` to `path` with mode 0600, whatever mode an existing file had: parent
/// directories are created with mode 0700, the text goes to a temporary file in the same
/// directory that is synced and renamed over `path`, so a reader sees the old or the new file,
/// never half of one. A symlink at `path` is written through. Returns the path written.
pub fn write_private(path: &Path, cfg: &Kubeconfig) -> Result<PathBuf> {
    let text = cfg.to_yaml().map_err(|source| Error::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    let target = resolve(path);
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(&dir)
        .map_err(|e| io("creating directory", &dir, e))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kubeconfig".to_string());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    // A leftover of an interrupted earlier run with the same pid would block `create_new`.
    let _ = fs::remove_file(&tmp);
    let result = write_new(&tmp, text.as_bytes(), FILE_MODE)
        .and_then(|()| fs::rename(&tmp, &target).map_err(|e| io("replacing", &target, e)))
        .and_then(|()| sync_dir(&dir));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| target)
}

/// Merges `new` into the kubeconfig at `path` (`--merge`, normally `~/.kube/config`): backs the
/// old file up next to it as `<name>.<UTC timestamp>.bak` with its original mode, then writes
/// the merge with `write_private`. A missing file is created without backup; a file that does
/// not parse is left alone and the error names it.
pub fn merge_into(path: &Path, new: &Kubeconfig, use_context: bool) -> Result<MergeReport> {
    let target = resolve(path);
    let old_text = match fs::read(&target) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(source) => return Err(io("reading", &target, source)),
    };
    let existing = match &old_text {
        Some(bytes) => Some(parse(
            &String::from_utf8_lossy(bytes),
            &target.display().to_string(),
        )?),
        None => None,
    };
    let names = |cfg: &Kubeconfig| -> Vec<String> {
        let clusters = cfg.clusters.iter().map(|e| format!("cluster {}", e.name));
        let users = cfg.users.iter().map(|e| format!("user {}", e.name));
        let contexts = cfg.contexts.iter().map(|e| format!("context {}", e.name));
        clusters.chain(users).chain(contexts).collect()
    };
    let old_names = existing.as_ref().map(names).unwrap_or_default();
    let (replaced, added): (Vec<String>, Vec<String>) =
        names(new).into_iter().partition(|n| old_names.contains(n));
    let before = existing.as_ref().and_then(|c| c.current_context.clone());
    let merged = merge(existing, new, use_context);
    let backup = match &old_text {
        Some(bytes) => Some(write_backup(&target, bytes)?),
        None => None,
    };
    let path = write_private(&target, &merged)?;
    Ok(MergeReport {
        path,
        backup,
        replaced,
        added,
        switched: merged.current_context != before,
        current_context: merged.current_context,
    })
}

/// The backup name for `path` at `now`: `<file name>.<YYYYmmddTHHMMSSZ>.bak` next to it.
pub fn backup_name(path: &Path, now: SystemTime) -> PathBuf {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kubeconfig".to_string());
    path.with_file_name(format!("{name}.{}.bak", utc_stamp(secs)))
}

/// Copies the old file's bytes to a fresh backup with the old file's mode; never overwrites an
/// earlier backup (a second merge in the same second gets `.1`, `.2`, ...).
fn write_backup(target: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let mode = fs::metadata(target)
        .map_err(|e| io("reading the mode of", target, e))?
        .permissions()
        .mode()
        & 0o7777;
    let base = backup_name(target, SystemTime::now());
    for n in 0..1000u32 {
        let candidate = if n == 0 {
            base.clone()
        } else {
            let stem = base.to_string_lossy();
            let stem = stem.strip_suffix(".bak").unwrap_or(&stem);
            PathBuf::from(format!("{stem}.{n}.bak"))
        };
        match write_new(&candidate, bytes, mode) {
            Ok(()) => return Ok(candidate),
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io(
        "creating a backup of",
        target,
        std::io::Error::new(ErrorKind::AlreadyExists, "too many backups for this second"),
    ))
}

/// Creates `path` (which must not exist), sets `mode` regardless of the umask, writes `bytes`
/// and syncs. Removes the file again on failure.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io("creating", path, e))?;
    let result = file
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .map_err(|e| io("writing", path, e));
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing directory", dir, e))
}

/// Follows a symlink so that writing replaces its target, not the link (users link
/// `~/.kube/config` into dotfile repositories).
fn resolve(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Formats seconds since the Unix epoch as `YYYYmmddTHHMMSSZ` (UTC), using the days-to-civil
/// conversion of H. Hinnant's date algorithms (no calendar crate needed for one timestamp).
fn utc_stamp(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_formats_known_instants() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // 2026-11-21 06:07:49 UTC
        assert_eq!(utc_stamp(1_795_241_269), "20261121T060749Z");
        // 2024-02-29 23:59:59 UTC (leap day)
        assert_eq!(utc_stamp(1_709_251_199), "20240229T235959Z");
    }

    #[test]
    fn backup_name_sits_next_to_the_file() {
        let name = backup_name(Path::new("/home/u/.kube/config"), UNIX_EPOCH);
        assert_eq!(name, Path::new("/home/u/.kube/config.19700101T000000Z.bak"));
    }
}
