//! `.tar.gz` bundles of named files with their modes (the k3s binary, manifests, scripts)
//! for image builds, and unpacking them safely. Must not: write outside the destination when
//! unpacking; entries with absolute paths, `..`, links or special files are refused, not
//! skipped, so a bad bundle never half-installs silently.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::{io, Error, Result};

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEntry {
    /// Its relative path inside the bundle (`bin/k3s`).
    pub name: String,
    /// Where its bytes come from.
    pub contents: Contents,
    /// Its permission bits (`0o755` for programs).
    pub mode: u32,
}

/// The bytes of a [`BundleEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Read from this file when the bundle is written.
    File(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// Writes `entries`, in order, to the `.tar.gz` file `out` (replaced atomically). Headers are
/// normalised (owner 0:0, mtime 0) so that the same inputs give the same bundle.
pub fn bundle(entries: &[BundleEntry], out: &Path) -> Result<()> {
    let mut seen = BTreeSet::new();
    for entry in entries {
        let unsafe_entry = |reason| Error::UnsafeEntry {
            bundle: out.to_path_buf(),
            entry: entry.name.clone(),
            reason,
        };
        let rel = relative_path(&entry.name).map_err(unsafe_entry)?;
        if !seen.insert(rel) {
            return Err(unsafe_entry("appears twice"));
        }
    }
    let tmp = out.with_file_name(format!(
        ".{}.partial-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = write_bundle(entries, &tmp)
        .and_then(|()| fs::rename(&tmp, out).map_err(|e| io("replacing", out, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_bundle(entries: &[BundleEntry], tmp: &Path) -> Result<()> {
    let file = File::create(tmp).map_err(|e| io("creating", tmp, e))?;
    let mut builder = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(entry.mode & 0o7777);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match &entry.contents {
            Contents::Bytes(bytes) => {
                header.set_size(bytes.len() as u64);
                builder
                    .append_data(&mut header, &entry.name, bytes.as_slice())
                    .map_err(|e| io("writing", tmp, e))?;
            }
            Contents::File(path) => {
                let src = File::open(path).map_err(|e| io("opening", path, e))?;
                let len = src.metadata().map_err(|e| io("reading", path, e))?.len();
                header.set_size(len);
                builder
                    .append_data(&mut header, &entry.name, src.take(len))
                    .map_err(|e| io("writing", tmp, e))?;
            }
        }
    }
    let file = builder
        .into_inner()
        .and_then(GzEncoder::finish)
        .map_err(|e| io("writing", tmp, e))?;
    file.sync_all().map_err(|e| io("syncing", tmp, e))
}

/// Unpacks the `.tar.gz` file `bundle` into `dest` (created if needed), keeping each file's
/// mode, and returns the files written. Any entry with an absolute path, a `..` component, or
/// a type other than file or directory is an error naming it; entries before it may already
/// have been written.
pub fn unpack(bundle: &Path, dest: &Path) -> Result<Vec<PathBuf>> {
    let file = File::open(bundle).map_err(|e| io("opening", bundle, e))?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    fs::create_dir_all(dest).map_err(|e| io("creating directory", dest, e))?;
    let mut written = Vec::new();
    for entry in archive.entries().map_err(|e| io("reading", bundle, e))? {
        let mut entry = entry.map_err(|e| io("reading", bundle, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_entry = |reason| Error::UnsafeEntry {
            bundle: bundle.to_path_buf(),
            entry: name.clone(),
            reason,
        };
        let rel = relative_path(&name).map_err(unsafe_entry)?;
        let path = dest.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&path).map_err(|e| io("creating directory", &path, e))?;
            }
            tar::EntryType::Regular => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|e| io("creating directory", parent, e))?;
                }
                let mode = entry
                    .header()
                    .mode()
                    .map_err(|e| io("reading", bundle, e))?;
                entry.unpack(&path).map_err(|e| io("writing", &path, e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| io("setting the mode of", &path, e))?;
                written.push(path);
            }
            _ => return Err(unsafe_entry("is a link or special file")),
        }
    }
    Ok(written)
}

/// An entry name as a path that stays inside the directory it is unpacked into.
fn relative_path(name: &str) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("is empty");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    #[test]
    fn bundle_round_trip_keeps_contents_and_modes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let src = tmp.path().join("k3s");
        fs::write(&src, b"fake k3s binary").expect("src");
        let entries = [
            BundleEntry {
                name: "usr/local/bin/k3s".into(),
                contents: Contents::File(src),
                mode: 0o755,
            },
            BundleEntry {
                name: "etc/rancher/k3s/config.yaml".into(),
                contents: Contents::Bytes(b"node-name: x\n".to_vec()),
                mode: 0o600,
            },
        ];
        let out = tmp.path().join("image.tar.gz");
        bundle(&entries, &out).expect("bundle");
        let again = tmp.path().join("again.tar.gz");
        bundle(&entries, &again).expect("bundle again");
        assert_eq!(fs::read(&out).expect("a"), fs::read(&again).expect("b"));

        let dest = tmp.path().join("root");
        let written = unpack(&out, &dest).expect("unpack");
        assert_eq!(written.len(), 2);
        let bin = dest.join("usr/local/bin/k3s");
        assert_eq!(fs::read(&bin).expect("bin"), b"fake k3s binary");
        assert_eq!(mode(&bin), 0o755);
        let cfg = dest.join("etc/rancher/k3s/config.yaml");
        assert_eq!(fs::read(&cfg).expect("cfg"), b"node-name: x\n");
        assert_eq!(mode(&cfg), 0o600);
    }

    #[test]
    fn bundle_refuses_names_that_escape_and_duplicates() {
        let tmp = tempfile::tempdir().expect("tmp");
        let out = tmp.path().join("b.tar.gz");
        for (names, reason) in [
            (vec!["../x"], "'..'"),
            (vec!["/etc/passwd"], "absolute"),
            (vec!["a", "./a"], "twice"),
        ] {
            let entries: Vec<_> = names
                .iter()
                .map(|n| BundleEntry {
                    name: (*n).into(),
                    contents: Contents::Bytes(vec![]),
                    mode: 0o644,
                })
                .collect();
            let err = bundle(&entries, &out).expect_err(reason);
            assert!(err.to_string().contains(reason), "{err}");
        }
        assert_eq!(fs::read_dir(tmp.path()).expect("ls").count(), 0);
    }

    /// Writes a bundle with raw header names, bypassing `bundle`'s (and tar's) checks, the way
    /// a hostile bundle would be made.
    fn raw_bundle(path: &Path, name: &str, kind: tar::EntryType) {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_size(2);
        header.set_mode(0o644);
        header.set_cksum();
        let file = File::create(path).expect("create");
        let mut builder = tar::Builder::new(GzEncoder::new(file, Compression::default()));
        builder.append(&header, &b"hi"[..]).expect("append");
        builder
            .into_inner()
            .and_then(GzEncoder::finish)
            .expect("finish");
    }

    #[test]
    fn unpack_refuses_parent_and_absolute_paths_and_links() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dest = tmp.path().join("dest");
        for (name, kind, reason) in [
            ("../x", tar::EntryType::Regular, "contains '..'"),
            ("a/../../x", tar::EntryType::Regular, "contains '..'"),
            ("/tmp/x", tar::EntryType::Regular, "absolute path"),
            ("link", tar::EntryType::Symlink, "link or special file"),
        ] {
            let path = tmp.path().join("bad.tar.gz");
            raw_bundle(&path, name, kind);
            let err = unpack(&path, &dest).expect_err(name);
            assert!(err.to_string().contains(reason), "{name}: {err}");
            assert!(err.to_string().contains(name), "{err}");
        }
        assert!(!tmp.path().join("x").exists());
        assert_eq!(fs::read_dir(&dest).expect("ls").count(), 0);
    }
}
