//! k3s release artifacts: which asset fits which architecture and where it is published
//! (`arch`), the release's `sha256sum-<arch>.txt` (`sums`), getting a verified k3s binary into
//! a local cache from GitHub, a mirror or an airgap directory (`fetch`), and `.tar.gz` bundles
//! of files with modes for image builds (`bundle`).
//!
//! Decisions are pure (`arch`, `sums`); effects (network, files) stay in `fetch` and `bundle`.
//! Must not: run anything it downloads, or leave an unverified download where a verified one
//! is expected.

mod arch;
mod bundle;
mod fetch;
mod sums;

use std::path::PathBuf;

pub use arch::{check_version, release_urls, Arch, ReleaseUrls, DEFAULT_BASE_URL};
pub use bundle::{bundle, unpack, BundleEntry, Contents};
pub use fetch::{fetch_k3s, Fetched, Origin, Source};
pub use sums::{expected_hash, parse_sha256sums, Sums};

/// Everything that can go wrong with artifacts; variants name the file, URL or asset concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A machine architecture k3s publishes no binary for.
    #[error("no k3s binary for architecture {name:?}: k3s publishes amd64, arm64 and arm")]
    UnknownArch {
        /// The name given (`uname -m` or Rust's `ARCH`).
        name: String,
    },
    /// A version string that cannot name a release.
    #[error("invalid k3s version {version:?}: {reason}")]
    InvalidVersion {
        /// The version given.
        version: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A base URL that is not http(s).
    #[error("invalid release base url {url:?}: expected an http or https url")]
    InvalidBaseUrl {
        /// The URL given.
        url: String,
    },
    /// A line of a checksum file is not `<64 hex>  <name>`.
    #[error("line {line}: {reason}")]
    SumsLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A checksum file could not be used.
    #[error("checksum file {from}")]
    Sums {
        /// Its URL or path.
        from: String,
        /// What was wrong.
        #[source]
        source: Box<Error>,
    },
    /// The checksum file has no line for the asset (compare install.sh's
    /// `grep " k3s${SUFFIX}$"`, reference/k3s.md §5).
    #[error("checksum file {from} has no line for {asset}")]
    MissingAsset {
        /// The asset looked for.
        asset: String,
        /// The checksum file's URL or path.
        from: String,
    },
    /// The bytes do not hash to what the checksum file says.
    #[error("sha256 of {from} is {actual}, but the checksum file says {expected}")]
    Mismatch {
        /// The binary's URL or path.
        from: String,
        /// The hash from the checksum file.
        expected: String,
        /// The hash of the bytes received.
        actual: String,
    },
    /// A request failed before an answer came.
    #[error("fetching {url}")]
    Http {
        /// The URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("fetching {url}: http status {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A response was larger than such a file can be.
    #[error("fetching {url}: more than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// A bundle entry name that could escape the directory it is unpacked into.
    #[error("bundle {bundle}: entry {entry:?} {reason}")]
    UnsafeEntry {
        /// The bundle file (or the one being written).
        bundle: PathBuf,
        /// The entry's name.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A file system operation failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done ("reading", "creating", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Lower-case hex of a digest (shared by the image builder and the lab's unpacker).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod fetch_tests;
