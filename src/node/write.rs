//! Writing the node's files safely: a file is replaced atomically (temp file in the same
//! directory, fsync, rename, fsync of the directory), a changed file is first kept as
//! `<name>.<UTC timestamp>.bak`, an unchanged one is not touched (its mtime stays), and
//! symlinks are replaced atomically too.
//!
//! The clock is a parameter; this module never reads it.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Error;

/// What [`write_if_changed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// There was no file; it was created.
    Created,
    /// The file already had these contents; nothing was written.
    Unchanged,
    /// The file differed; the old one was kept at `backup` and replaced.
    Replaced { backup: PathBuf },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Make `path` hold `contents` (mode `mode` when created or replaced). A differing file is
/// backed up as `<name>.<timestamp of now>.bak` next to it before the new one is renamed over it.
pub fn write_if_changed(
    path: &Path,
    contents: &[u8],
    mode: u32,
    now: SystemTime,
) -> Result<Outcome, Error> {
    let old = match fs::read(path) {
        Ok(old) => Some(old),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading", path)(e)),
    };
    if old.as_deref() == Some(contents) {
        return Ok(Outcome::Unchanged);
    }
    let dir = parent(path);
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let tmp = dir.join(format!(".{}.tmp.{}", file_name(path), std::process::id()));
    write_synced(&tmp, contents, mode)?;
    let outcome = match old {
        None => Outcome::Created,
        Some(_) => {
            let backup = backup_path(path, now);
            // A hard link keeps the old inode under the backup name without copying, so the
            // rename below leaves no moment without a config.
            if fs::hard_link(path, &backup).is_err() {
                fs::copy(path, &backup).map_err(io("backing up", path))?;
            }
            Outcome::Replaced { backup }
        }
    };
    fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
    sync_dir(dir)?;
    Ok(outcome)
}

/// Make `path` hold `contents` with mode `mode`, atomically and without a backup (for files
/// that are derived anew at every boot, like /etc/machine-id). Returns whether it wrote.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<bool, Error> {
    match fs::read(path) {
        Ok(old) if old == contents => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading", path)(e)),
    }
    let dir = parent(path);
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let tmp = dir.join(format!(".{}.tmp.{}", file_name(path), std::process::id()));
    write_synced(&tmp, contents, mode)?;
    fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
    sync_dir(dir)?;
    Ok(true)
}

/// Write and fsync a new file (replacing a stale temp file of the same name).
fn write_synced(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io("creating", path))?;
    f.write_all(contents).map_err(io("writing", path))?;
    // The umask may have narrowed the mode; set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", path))?;
    f.sync_all().map_err(io("syncing", path))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `<path>.<YYYYmmddTHHMMSSZ>.bak`, with `-1`, `-2`, ... added when that name is taken (two
/// changes within one second keep both old versions).
fn backup_path(path: &Path, now: SystemTime) -> PathBuf {
    let stamp = utc_timestamp(now);
    let base = format!("{}.{stamp}", file_name(path));
    let dir = parent(path);
    let mut candidate = dir.join(format!("{base}.bak"));
    let mut n = 1;
    while candidate.symlink_metadata().is_ok() {
        candidate = dir.join(format!("{base}-{n}.bak"));
        n += 1;
    }
    candidate
}

/// `YYYYmmddTHHMMSSZ` in UTC (times before 1970, or past what `time` can hold, print as 1970).
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// What [`ensure_symlink`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOutcome {
    /// The link already pointed at the target.
    Unchanged,
    /// The link was created or re-pointed.
    Linked,
}

/// Make `link` a symlink to `target`: left alone when it already is one, otherwise replaced
/// atomically (a new link renamed over it). An empty directory in the way is removed; a file or
/// a non-empty directory is an error (it may hold data that must not be lost).
pub fn ensure_symlink(target: &Path, link: &Path) -> Result<LinkOutcome, Error> {
    match fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if fs::read_link(link).ok().as_deref() == Some(target) {
                return Ok(LinkOutcome::Unchanged);
            }
        }
        Ok(meta) if meta.is_dir() => {
            fs::remove_dir(link).map_err(|source| Error::InTheWay {
                path: link.to_path_buf(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(Error::InTheWay {
                path: link.to_path_buf(),
                source: std::io::Error::new(ErrorKind::AlreadyExists, "a file is in the way"),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspecting", link)(e)),
    }
    let dir = parent(link);
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let tmp = dir.join(format!(".{}.link.{}", file_name(link), std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io("creating symlink", &tmp))?;
    fs::rename(&tmp, link).map_err(io("renaming symlink into place", link))?;
    Ok(LinkOutcome::Linked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(at(0)), "19700101T000000Z");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(utc_timestamp(at(1_709_251_199)), "20240229T235959Z");
        // 2026-11-21T05:28:08Z.
        assert_eq!(utc_timestamp(at(1_795_238_888)), "20261121T052808Z");
    }

    #[test]
    fn new_file_is_created_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k3s/config.yaml");
        assert_eq!(
            write_if_changed(&path, b"a: 1\n", 0o600, at(1)).unwrap(),
            Outcome::Created
        );
        assert_eq!(fs::read(&path).unwrap(), b"a: 1\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn unchanged_file_is_not_written_and_keeps_its_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        write_if_changed(&path, b"a: 1\n", 0o600, at(1)).unwrap();
        let old = File::open(&path).unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        old.set_modified(past).unwrap();
        assert_eq!(
            write_if_changed(&path, b"a: 1\n", 0o600, at(2)).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), past);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no backup");
    }

    #[test]
    fn changed_file_is_backed_up_with_a_timestamp_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        write_if_changed(&path, b"a: 1\n", 0o600, at(1)).unwrap();
        let out = write_if_changed(&path, b"a: 2\n", 0o600, at(1_795_238_888)).unwrap();
        let backup = dir.path().join("config.yaml.20261121T052808Z.bak");
        assert_eq!(
            out,
            Outcome::Replaced {
                backup: backup.clone()
            }
        );
        assert_eq!(fs::read(&backup).unwrap(), b"a: 1\n");
        assert_eq!(fs::read(&path).unwrap(), b"a: 2\n");
        // A second change within the same second keeps both old versions.
        let out = write_if_changed(&path, b"a: 3\n", 0o600, at(1_795_238_888)).unwrap();
        assert_eq!(
            out,
            Outcome::Replaced {
                backup: dir.path().join("config.yaml.20261121T052808Z-1.bak")
            }
        );
        assert_eq!(fs::read(&backup).unwrap(), b"a: 1\n");
        assert_eq!(fs::read(&path).unwrap(), b"a: 3\n");
    }

    #[test]
    fn replace_writes_only_differing_contents_and_keeps_no_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/machine-id");
        assert!(replace(&path, b"abc\n", 0o444).unwrap());
        assert!(!replace(&path, b"abc\n", 0o444).unwrap());
        assert!(replace(&path, b"def\n", 0o444).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"def\n");
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn symlink_is_created_repointed_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("etc/rancher/k3s/config.yaml");
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        assert_eq!(ensure_symlink(&a, &link).unwrap(), LinkOutcome::Linked);
        assert_eq!(ensure_symlink(&a, &link).unwrap(), LinkOutcome::Unchanged);
        assert_eq!(ensure_symlink(&b, &link).unwrap(), LinkOutcome::Linked);
        assert_eq!(fs::read_link(&link).unwrap(), b);
    }

    #[test]
    fn symlink_replaces_an_empty_directory_but_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data/node");
        let link = dir.path().join("etc/rancher/node");
        fs::create_dir_all(&link).unwrap();
        assert_eq!(ensure_symlink(&target, &link).unwrap(), LinkOutcome::Linked);
        let file = dir.path().join("file");
        fs::write(&file, b"keep me").unwrap();
        assert!(matches!(
            ensure_symlink(&target, &file),
            Err(Error::InTheWay { .. })
        ));
        assert_eq!(fs::read(&file).unwrap(), b"keep me");
    }
}
