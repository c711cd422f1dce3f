//! The local image store: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`)
//! under the cache dir, holding the base's layers, the built layer, configs and manifests, so
//! that `skopeo inspect oci:<dir>:<name>` reads what was built and a push reads blobs from disk.
//!
//! Blobs are written to a temporary file and renamed into place only once their digest is
//! checked, so the store never holds a blob whose name lies about its bytes. Must not: reach
//! the network (the registry module fetches, this module files).

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::layer::Written;
use super::{hex, io_error, Error, Result};

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A temporary file in the store, removed on drop unless renamed into place.
pub struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Partial {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Checks `sha256:<64 lower-case hex>` (the OCI digest grammar for sha256) and returns the
/// hex; only such digests may name a path (the lab's rootfs cache uses it too).
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(Error::BadDigest {
            digest: digest.to_string(),
        }),
    }
}

impl Store {
    /// The layout at `root`, created (with `oci-layout`) when missing.
    pub fn open(root: &Path) -> Result<Store> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| io_error("creating", &blobs, e))?;
        let marker = root.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let built = root.join("built");
        fs::create_dir_all(&built).map_err(|e| io_error("creating", &built, e))?;
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `digest` lives.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("blobs")
            .join("sha256")
            .join(digest_hex(digest)?))
    }

    /// Whether blob `digest` is stored.
    pub fn has(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// A new temporary file for a blob being written.
    pub fn partial(&self, what: &str) -> Partial {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Partial {
            path: self
                .root
                .join("blobs")
                .join(format!(".{what}.partial-{}-{n}", std::process::id())),
            kept: false,
        }
    }

    /// Renames a written temporary file to blob `digest` after checking that its bytes hash
    /// to it.
    pub fn commit(&self, mut partial: Partial, digest: &str) -> Result<PathBuf> {
        let target = self.blob_path(digest)?;
        let actual = hash_file(partial.path())?;
        if format!("sha256:{actual}") != digest {
            return Err(Error::DigestMismatch {
                what: format!("blob written to {}", partial.path().display()),
                expected: digest.to_string(),
                actual: format!("sha256:{actual}"),
            });
        }
        fs::rename(partial.path(), &target).map_err(|e| io_error("renaming into", &target, e))?;
        partial.kept = true;
        Ok(target)
    }

    /// Stores `bytes` as a blob; returns its digest.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let digest = format!("sha256:{}", hex(&Sha256::digest(bytes)));
        let target = self.blob_path(&digest)?;
        if !target.is_file() {
            write_atomic(&target, bytes)?;
        }
        Ok(digest)
    }

    /// Reads a small blob (a manifest or config).
    pub fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(|e| io_error("reading", &path, e))
    }

    /// The layer built earlier from inputs whose hash is `key`, when its blob is still here.
    pub fn built(&self, key: &str) -> Result<Option<Written>> {
        let path = self.root.join("built").join(format!("{key}.json"));
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("reading", &path, e)),
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Ok(None);
        };
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let written = match (
            get("digest"),
            get("diff_id"),
            v.get("size").and_then(|s| s.as_u64()),
        ) {
            (Some(digest), Some(diff_id), Some(size)) => Written {
                digest,
                diff_id,
                size,
            },
            _ => return Ok(None),
        };
        Ok(self.has(&written.digest)?.then_some(written))
    }

    /// Remembers that inputs hashing to `key` gave `written`.
    pub fn remember_built(&self, key: &str, written: &Written) -> Result<()> {
        let path = self.root.join("built").join(format!("{key}.json"));
        let text = serde_json::json!({
            "digest": written.digest,
            "diff_id": written.diff_id,
            "size": written.size,
        })
        .to_string();
        write_atomic(&path, text.as_bytes())
    }

    /// sha256 (hex) of the file at `path`, remembered per (path, device, inode, size, mtime)
    /// so that an unchanged 100+ MB binary is not read again at every build (the same trade
    /// `make` makes: a file rewritten in place with its old size and mtime restored is not
    /// noticed).
    pub fn hash_file_cached(&self, path: &Path) -> Result<String> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).map_err(|e| io_error("inspecting", path, e))?;
        let id = format!(
            "{}\0{}\0{}\0{}\0{}\0{}",
            path.display(),
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        );
        let memo = self
            .root
            .join("built")
            .join(format!("hash-{}", hex(&Sha256::digest(id.as_bytes()))));
        if let Ok(text) = fs::read_to_string(&memo) {
            if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(text);
            }
        }
        let hash = hash_file(path)?;
        write_atomic(&memo, hash.as_bytes())?;
        Ok(hash)
    }

    /// Records manifest `digest` (`size` bytes) in `index.json` under `name`, replacing an
    /// earlier entry of that name.
    pub fn tag(&self, name: &str, digest: &str, size: u64) -> Result<()> {
        let path = self.root.join("index.json");
        let mut index = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::NotFound => serde_json::Value::Null,
            Err(e) => return Err(io_error("reading", &path, e)),
        };
        if !index.is_object() {
            index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [],
            });
        }
        let entry = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": name},
        });
        let manifests = index
            .get_mut("manifests")
            .and_then(|m| m.as_array_mut())
            .ok_or_else(|| Error::BadDocument {
                reference: path.display().to_string(),
                what: "index",
                reason: "no manifests array".to_string(),
            })?;
        manifests.retain(|m| {
            m.pointer("/annotations/org.opencontainers.image.ref.name")
                .and_then(|n| n.as_str())
                != Some(name)
        });
        manifests.push(entry);
        let text = serde_json::to_vec_pretty(&index).map_err(|e| Error::BadDocument {
            reference: path.display().to_string(),
            what: "index",
            reason: e.to_string(),
        })?;
        write_atomic(&path, &text)
    }
}

/// sha256 (hex) of a file's bytes.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| io_error("opening", path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).map_err(|e| io_error("reading", path, e))?;
    Ok(hex(&hasher.finalize()))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|e| io_error("writing", &tmp, e))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_error("renaming into", path, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_whose_bytes_do_not_match_its_name_is_not_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let p = store.partial("x");
        std::fs::write(p.path(), b"hello").expect("write");
        let wrong = format!("sha256:{}", "0".repeat(64));
        let e = store.commit(p, &wrong).expect_err("mismatch");
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert!(!store.has(&wrong).expect("has"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty());
        let d = store.put(b"hello").expect("put");
        assert_eq!(store.read(&d).expect("read"), b"hello");
        assert!(digest_hex("sha256:../../etc").is_err());
    }

    #[test]
    fn a_remembered_hash_follows_a_rewritten_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("oci")).expect("open");
        let f = dir.path().join("bin");
        std::fs::write(&f, b"one").expect("write");
        let first = store.hash_file_cached(&f).expect("hash");
        assert_eq!(first, hash_file(&f).expect("plain"));
        assert_eq!(store.hash_file_cached(&f).expect("memo"), first);
        // A new file at the same path (new inode and mtime), as a rebuild makes.
        std::fs::remove_file(&f).expect("rm");
        std::fs::write(&f, b"two").expect("write");
        assert_eq!(
            store.hash_file_cached(&f).expect("hash"),
            hash_file(&f).expect("plain")
        );
    }

    #[test]
    fn tagging_replaces_an_entry_of_the_same_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let a = store.put(b"a").expect("a");
        let b = store.put(b"b").expect("b");
        store.tag("lab-cp/t", &a, 1).expect("tag a");
        store.tag("lab-cp/t", &b, 1).expect("tag b");
        store.tag("lab-cp/u", &a, 1).expect("tag u");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).expect("read"))
                .expect("json");
        let m = index["manifests"].as_array().expect("array");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["digest"], b.as_str());
    }
}
