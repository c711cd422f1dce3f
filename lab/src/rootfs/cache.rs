//! The on-disk layout of the rootfs cache, under `<state>/rootfs/`:
//! - `blobs/sha256/<hex>`: layer blobs as fetched, kept so images that share layers (the node
//!   image and its base) download them once; re-verified against their digest on every use;
//! - `images/<hex>/`: one unpacked image per manifest digest `sha256:<hex>`, holding
//!   `rootfs/` and `image.json` (the [`Image`] record); it appears only complete, by an atomic
//!   rename of a scratch directory, so a crash mid-unpack leaves no half image behind;
//! - `tmp/`: scratch directories and partial downloads, emptied when the cache opens.
//!
//! This file only lays out and commits directories; it does not talk to registries or parse
//! tar streams.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Image, ImageConfig};

/// The record written next to an unpacked rootfs.
const RECORD: &str = "image.json";

/// The rootfs cache of one lab state dir.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    /// Makes scratch names unique within this process (the pid covers other processes).
    seq: AtomicU64,
}

impl Cache {
    /// Open (and create) the cache in `<state_dir>/rootfs`, emptying its scratch space.
    pub fn open(state_dir: &Path) -> io::Result<Cache> {
        let dir = state_dir.join("rootfs");
        for sub in ["blobs/sha256", "images"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let tmp = dir.join("tmp");
        match std::fs::remove_dir_all(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Cache {
            dir,
            seq: AtomicU64::new(0),
        })
    }

    /// The cache's directory (`<state>/rootfs`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The unpacked image for `manifest_digest`, if the cache has it complete.
    pub fn lookup(&self, manifest_digest: &str, reference: &str) -> Option<Image> {
        let hex = digest_hex(manifest_digest)?;
        let dir = self.dir.join("images").join(hex);
        let text = std::fs::read(dir.join(RECORD)).ok()?;
        let config: ImageConfig = serde_json::from_slice(&text).ok()?;
        Some(Image {
            reference: reference.to_string(),
            manifest_digest: manifest_digest.to_string(),
            rootfs: dir.join("rootfs"),
            config,
        })
    }

    /// Where a verified layer blob `sha256:<hex>` is kept (`None` for a malformed digest).
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        digest_hex(digest).map(|hex| self.dir.join("blobs/sha256").join(hex))
    }

    /// A fresh path under `tmp/` (not created).
    pub fn scratch(&self, what: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Make the scratch image directory `scratch` (holding `rootfs/`) the cached image for
    /// `manifest_digest`: write its record, then rename it into place. When another pull got
    /// there first, its copy wins and `scratch` is removed.
    pub fn commit(
        &self,
        scratch: &Path,
        manifest_digest: &str,
        config: &ImageConfig,
    ) -> io::Result<PathBuf> {
        commit_in(&self.dir, scratch, manifest_digest, config)
    }
}

/// [`Cache::commit`] into the cache at `dir` (for a blocking thread, which gets the path).
pub fn commit_in(
    dir: &Path,
    scratch: &Path,
    manifest_digest: &str,
    config: &ImageConfig,
) -> io::Result<PathBuf> {
    let hex = digest_hex(manifest_digest)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "malformed manifest digest"))?;
    let record = serde_json::to_vec_pretty(config).map_err(io::Error::other)?;
    std::fs::write(scratch.join(RECORD), record)?;
    let target = dir.join("images").join(hex);
    match std::fs::rename(scratch, &target) {
        Ok(()) => Ok(target),
        Err(e)
            if e.raw_os_error() == Some(rustix::io::Errno::NOTEMPTY.raw_os_error())
                || e.kind() == io::ErrorKind::AlreadyExists =>
        {
            std::fs::remove_dir_all(scratch)?;
            Ok(target)
        }
        Err(e) => Err(e),
    }
}

/// The hex part of `sha256:<64 lower-case hex>`, or `None`: only such digests name cache
/// paths (the product's image store's check, one rule for both).
pub fn digest_hex(digest: &str) -> Option<&str> {
    fks_bootstrap::image::store::digest_hex(digest).ok()
}
