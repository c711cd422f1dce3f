//! The node image's added layer: a gzip-compressed tar written so that the same inputs give
//! the same bytes (entries sorted by path, parent directories listed first, owner 0:0 with no
//! user or group names, mtime 0, modes as given), and the two digests OCI needs: the
//! compressed blob's (the manifest's layer digest) and the uncompressed tar's (the config's
//! `rootfs.diff_ids`).
//!
//! Must not: read anything but the files it is given, or depend on the clock or the machine
//! (no timestamps, no uid lookups).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

use super::{hex, io_error, Error, Result};

/// The fixed mtime of every entry (reproducible builds use a constant, see
/// <https://reproducible-builds.org/docs/archives/>).
pub const MTIME: u64 = 0;

/// One file of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image, relative (`usr/local/bin/k3s`).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Where the bytes come from.
    pub contents: Contents,
}

/// The bytes of an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Read from this file while the layer is written.
    File(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// A written layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// `sha256:<hex>` of the compressed blob.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Size of the compressed blob in bytes.
    pub size: u64,
}

/// Checks that `path` is a plain relative path (no `..`, no leading `/`, no empty parts).
fn check_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.ends_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::LayerEntry {
            path: path.to_string(),
            reason: "is not a plain relative path",
        });
    }
    Ok(())
}

/// Writes the layer of `entries` as tar+gzip into `out` and returns its digests and size.
/// Directories leading to each file are added (mode 0755) before it; entries are sorted by
/// path, so their order in `entries` does not matter. A path given twice is refused.
pub fn write<W: Write>(entries: &[Entry], out: W) -> Result<Written> {
    let mut files: BTreeMap<&str, &Entry> = BTreeMap::new();
    for e in entries {
        check_path(&e.path)?;
        if files.insert(e.path.as_str(), e).is_some() {
            return Err(Error::LayerEntry {
                path: e.path.clone(),
                reason: "appears twice",
            });
        }
    }
    // Every parent directory, once, keyed "dir/": a directory's key is a prefix of its
    // contents' keys, so the sorted map lists it before them.
    let mut items: BTreeMap<String, Option<&Entry>> = BTreeMap::new();
    for (path, entry) in &files {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for dir in &parts[..parts.len() - 1] {
            prefix.push_str(dir);
            prefix.push('/');
            items.entry(prefix.clone()).or_insert(None);
        }
        items.insert((*path).to_string(), Some(entry));
    }

    let counted = Counting::new(out);
    let gz = GzEncoder::new(counted, Compression::fast());
    let mut tar_hash = HashingWriter::new(gz);
    {
        let mut builder = tar::Builder::new(&mut tar_hash);
        builder.mode(tar::HeaderMode::Deterministic);
        for (path, entry) in &items {
            let mut header = tar::Header::new_ustar();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(MTIME);
            match entry {
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, path, io::empty())
                        .map_err(|e| io_error("writing layer entry", Path::new(path), e))?;
                }
                Some(entry) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(entry.mode & 0o7777);
                    match &entry.contents {
                        Contents::Bytes(bytes) => {
                            header.set_size(bytes.len() as u64);
                            builder
                                .append_data(&mut header, path, bytes.as_slice())
                                .map_err(|e| io_error("writing layer entry", Path::new(path), e))?;
                        }
                        Contents::File(src) => {
                            let file = File::open(src).map_err(|e| io_error("opening", src, e))?;
                            let len = file
                                .metadata()
                                .map_err(|e| io_error("inspecting", src, e))?
                                .len();
                            header.set_size(len);
                            // `take` guards against a file that grows while it is read.
                            builder
                                .append_data(&mut header, path, file.take(len))
                                .map_err(|e| io_error("reading", src, e))?;
                        }
                    }
                }
            }
        }
        builder
            .finish()
            .map_err(|e| io_error("finishing the layer", Path::new("layer.tar"), e))?;
    }
    let (gz, diff_id) = tar_hash.finish();
    let counted = gz
        .finish()
        .map_err(|e| io_error("compressing the layer", Path::new("layer.tar.gz"), e))?;
    let (mut out, digest, size) = counted.finish();
    out.flush()
        .map_err(|e| io_error("writing the layer", Path::new("layer.tar.gz"), e))?;
    Ok(Written {
        digest: format!("sha256:{digest}"),
        diff_id: format!("sha256:{diff_id}"),
        size,
    })
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn finish(self) -> (W, String) {
        (self.inner, hex(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A hashing writer that also counts bytes.
struct Counting<W> {
    inner: HashingWriter<W>,
    bytes: u64,
}

impl<W: Write> Counting<W> {
    fn new(inner: W) -> Self {
        Counting {
            inner: HashingWriter::new(inner),
            bytes: 0,
        }
    }

    fn finish(self) -> (W, String, u64) {
        let (w, digest) = self.inner.finish();
        (w, digest, self.bytes)
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether the tar+gzip layer read from `reader` leaves `path` (relative, e.g.
/// `etc/ssl/certs/ca-certificates.crt`) present, absent, or says nothing about it: an entry at
/// the path adds it; an OCI whiteout (`.wh.<name>` beside it, or `.wh..wh..opq` in a parent
/// directory) removes it (OCI image-spec "layer.md", whiteouts).
pub fn presence_after<R: Read>(reader: R, path: &str) -> io::Result<Option<bool>> {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", path),
    };
    let whiteout = if dir.is_empty() {
        format!(".wh.{name}")
    } else {
        format!("{dir}/.wh.{name}")
    };
    let mut verdict = None;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    for entry in archive.entries()? {
        let entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let p = raw.trim_start_matches("./").trim_start_matches('/');
        if p == path {
            verdict = Some(true);
        } else if p == whiteout {
            verdict = Some(false);
        } else if let Some(opq_dir) = p.strip_suffix("/.wh..wh..opq") {
            if path.starts_with(&format!("{opq_dir}/")) {
                verdict = Some(false);
            }
        }
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<Entry> {
        let bin = dir.join("prog");
        std::fs::write(&bin, b"#!/bin/sh\necho hi\n").expect("write");
        vec![
            Entry {
                path: "usr/local/bin/k3s".into(),
                mode: 0o755,
                contents: Contents::Bytes(b"k3s bytes".to_vec()),
            },
            Entry {
                path: "usr/local/bin/fks-bootstrap".into(),
                mode: 0o755,
                contents: Contents::File(bin),
            },
            Entry {
                path: "etc/ssl/certs/ca-certificates.crt".into(),
                mode: 0o644,
                contents: Contents::Bytes(b"certs".to_vec()),
            },
        ]
    }

    #[test]
    fn the_same_entries_give_the_same_bytes_and_digests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = entries(dir.path());
        let mut a = Vec::new();
        let wa = write(&e, &mut a).expect("first");
        // Another order, another moment, same content: the same layer.
        let mut reversed = e.clone();
        reversed.reverse();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut b = Vec::new();
        let wb = write(&reversed, &mut b).expect("second");
        assert_eq!(a, b);
        assert_eq!(wa, wb);
        assert_eq!(wa.size, a.len() as u64);
        assert_eq!(wa.digest, format!("sha256:{}", hex(&Sha256::digest(&a))));
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(a.as_slice())
            .read_to_end(&mut tar)
            .expect("gunzip");
        assert_eq!(wa.diff_id, format!("sha256:{}", hex(&Sha256::digest(&tar))));
    }

    #[test]
    fn entries_are_sorted_with_parents_first_owned_by_root_at_time_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut out = Vec::new();
        write(&entries(dir.path()), &mut out).expect("write");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(out.as_slice()));
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let h = entry.header();
            assert_eq!(h.uid().expect("uid"), 0);
            assert_eq!(h.gid().expect("gid"), 0);
            assert_eq!(h.mtime().expect("mtime"), 0);
            assert_eq!(h.username().expect("user"), Some(""));
            let mode = h.mode().expect("mode");
            seen.push((entry.path().expect("path").display().to_string(), mode));
        }
        assert_eq!(
            seen,
            vec![
                ("etc/".to_string(), 0o755),
                ("etc/ssl/".to_string(), 0o755),
                ("etc/ssl/certs/".to_string(), 0o755),
                ("etc/ssl/certs/ca-certificates.crt".to_string(), 0o644),
                ("usr/".to_string(), 0o755),
                ("usr/local/".to_string(), 0o755),
                ("usr/local/bin/".to_string(), 0o755),
                ("usr/local/bin/fks-bootstrap".to_string(), 0o755),
                ("usr/local/bin/k3s".to_string(), 0o755),
            ]
        );
    }

    #[test]
    fn a_changed_file_changes_the_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = entries(dir.path());
        let first = write(&e, io::sink()).expect("first");
        e[0].contents = Contents::Bytes(b"other k3s".to_vec());
        let second = write(&e, io::sink()).expect("second");
        assert_ne!(first.digest, second.digest);
        assert_ne!(first.diff_id, second.diff_id);
    }

    #[test]
    fn unsafe_or_duplicate_paths_are_refused() {
        for bad in ["/etc/x", "../x", "a/../b", "a//b", "", "a/"] {
            let e = vec![Entry {
                path: bad.into(),
                mode: 0o644,
                contents: Contents::Bytes(Vec::new()),
            }];
            let err = write(&e, io::sink()).expect_err(bad);
            assert!(err.to_string().contains("plain relative path"), "{err}");
        }
        let one = Entry {
            path: "a".into(),
            mode: 0o644,
            contents: Contents::Bytes(Vec::new()),
        };
        let err = write(&[one.clone(), one], io::sink()).expect_err("twice");
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn presence_follows_entries_and_whiteouts() {
        let layer = |names: &[&str]| {
            let e: Vec<Entry> = names
                .iter()
                .map(|n| Entry {
                    path: n.to_string(),
                    mode: 0o644,
                    contents: Contents::Bytes(Vec::new()),
                })
                .collect();
            let mut out = Vec::new();
            write(&e, &mut out).expect("layer");
            out
        };
        let path = "etc/ssl/certs/ca-certificates.crt";
        let has = layer(&[path]);
        assert_eq!(
            presence_after(has.as_slice(), path).expect("read"),
            Some(true)
        );
        let other = layer(&["etc/hostname"]);
        assert_eq!(presence_after(other.as_slice(), path).expect("read"), None);
        let wh = layer(&["etc/ssl/certs/.wh.ca-certificates.crt"]);
        assert_eq!(
            presence_after(wh.as_slice(), path).expect("read"),
            Some(false)
        );
        let opq = layer(&["etc/ssl/.wh..wh..opq"]);
        assert_eq!(
            presence_after(opq.as_slice(), path).expect("read"),
            Some(false)
        );
    }
}
