//! Getting a verified k3s binary into the local cache `<cache>/<version>/<asset>` (mode
//! 0755): downloaded from a release (GitHub or a mirror) and checked against the release's
//! `sha256sum-<arch>.txt`, or copied from an airgap directory or a lone file.
//!
//! The bytes are hashed while they are written to a temporary file in the cache directory,
//! and only a file whose hash matches is renamed into place; on any failure the temporary file
//! is removed, so the cache only ever holds verified binaries (or, from a lone local file, one
//! that is reported as unverified). The release's checksum file is kept next to the binary so
//! that a cached binary is re-checked, without network, before it is reused.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::arch::{check_version, release_urls, Arch};
use super::sums::{expected_hash, parse_sha256sums, Sums};
use super::{hex, io, Error, Result};

/// A checksum file is a few lines; anything bigger is not one.
const SUMS_LIMIT: usize = 1 << 20;
/// The k3s binary is executable.
const BINARY_MODE: u32 = 0o755;

/// Where the binary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Download `<base_url>/<version>/<asset>` and its checksum file (see
    /// [`super::release_urls`]; [`super::DEFAULT_BASE_URL`] for GitHub).
    Download {
        /// The release base URL.
        base_url: String,
    },
    /// A binary on disk (offline use). Verified against `sha256sum-<arch>.txt` in the same
    /// directory, looked up under the file's own name, when that file exists; used unverified,
    /// with a warning, when it does not.
    LocalFile(PathBuf),
    /// An airgap directory holding the release's binary (`k3s`, `k3s-arm64`, ...) and
    /// `sha256sum-<arch>.txt`; the same as `LocalFile(<dir>/<asset>)`.
    LocalDir(PathBuf),
}

/// A binary in the cache, ready to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// `<cache>/<version>/<asset>`.
    pub path: PathBuf,
    /// Its sha256 (lower-case hex).
    pub sha256: String,
    /// How it got there.
    pub origin: Origin,
}

/// How a [`Fetched`] binary got into the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// It was already cached and still matches the cached checksum file; nothing was fetched.
    Cached,
    /// Downloaded from this URL and verified.
    Downloaded {
        /// The binary's URL.
        url: String,
    },
    /// Copied from a local file.
    Local {
        /// The file copied.
        path: PathBuf,
        /// Whether a checksum file next to it verified it.
        verified: bool,
    },
}

/// Puts k3s `version` for `arch` into `cache_dir/<version>/<asset>` from `source` and returns
/// where it is. See the module documentation for the guarantees.
///
/// Errors name the URL or path concerned; a hash mismatch names both hashes.
pub async fn fetch_k3s(
    version: &str,
    arch: Arch,
    cache_dir: &Path,
    source: &Source,
) -> Result<Fetched> {
    check_version(version)?;
    let dir = cache_dir.join(version);
    let target = dir.join(arch.binary_asset());
    let cached_sums = dir.join(arch.sums_asset());
    match source {
        Source::Download { base_url } => {
            let urls = release_urls(version, arch, base_url)?;
            let (t, s) = (target.clone(), cached_sums.clone());
            let asset = arch.binary_asset();
            if let Some(sha256) = blocking(move || check_cached(&t, &s, asset)).await? {
                return Ok(Fetched {
                    path: target,
                    sha256,
                    origin: Origin::Cached,
                });
            }
            let client = reqwest::Client::builder()
                .user_agent(concat!("fks-bootstrap/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(60))
                .build()
                .map_err(|source| Error::Http {
                    url: urls.sums.clone(),
                    source,
                })?;
            let sums_text = get_small(&client, &urls.sums).await?;
            let sums = parse_sums(&sums_text, &urls.sums)?;
            let expected = expected_hash(&sums, asset)
                .ok_or_else(|| Error::MissingAsset {
                    asset: asset.to_string(),
                    from: urls.sums.clone(),
                })?
                .to_string();
            create_dir(&dir)?;
            let partial = Partial::new(&dir, asset);
            let actual = download_hashing(&client, &urls.binary, partial.path()).await;
            let actual = match actual {
                Ok(actual) => actual,
                Err(e) => {
                    drop(partial);
                    remove_dir_if_empty(&dir);
                    return Err(e);
                }
            };
            let installed = verify(&expected, &actual, &urls.binary)
                .and_then(|()| install(partial, &target, Some(&sums_text), &cached_sums));
            if let Err(e) = installed {
                remove_dir_if_empty(&dir);
                return Err(e);
            }
            Ok(Fetched {
                path: target,
                sha256: actual,
                origin: Origin::Downloaded { url: urls.binary },
            })
        }
        Source::LocalDir(src) => {
            let file = src.join(arch.binary_asset());
            fetch_local(file, arch, dir, target, cached_sums).await
        }
        Source::LocalFile(file) => fetch_local(file.clone(), arch, dir, target, cached_sums).await,
    }
}

async fn fetch_local(
    file: PathBuf,
    arch: Arch,
    dir: PathBuf,
    target: PathBuf,
    cached_sums: PathBuf,
) -> Result<Fetched> {
    blocking(move || {
        let sums_path = file
            .parent()
            .unwrap_or(Path::new("."))
            .join(arch.sums_asset());
        let sums_text = match fs::read(&sums_path) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io("reading", &sums_path, e)),
        };
        let expected = match &sums_text {
            Some(text) => {
                let from = sums_path.display().to_string();
                let sums = parse_sums(text, &from)?;
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let hash = expected_hash(&sums, &name).ok_or(Error::MissingAsset {
                    asset: name.clone(),
                    from,
                })?;
                Some(hash.to_string())
            }
            None => None,
        };
        let mut src = File::open(&file).map_err(|e| io("opening", &file, e))?;
        create_dir(&dir)?;
        let partial = Partial::new(&dir, arch.binary_asset());
        let copied = copy_hashing(&mut src, &file, partial.path());
        let actual = match copied {
            Ok(actual) => actual,
            Err(e) => {
                drop(partial);
                remove_dir_if_empty(&dir);
                return Err(e);
            }
        };
        let from = file.display().to_string();
        let verified = expected.is_some();
        let installed = match &expected {
            Some(expected) => verify(expected, &actual, &from),
            None => {
                tracing::warn!(
                    file = %file.display(),
                    sha256 = %actual,
                    "no {} next to the k3s binary: it could not be verified",
                    arch.sums_asset()
                );
                Ok(())
            }
        }
        .and_then(|()| install(partial, &target, sums_text.as_deref(), &cached_sums));
        if let Err(e) = installed {
            remove_dir_if_empty(&dir);
            return Err(e);
        }
        Ok(Fetched {
            path: target,
            sha256: actual,
            origin: Origin::Local {
                path: file,
                verified,
            },
        })
    })
    .await
}

/// The hash of a cached binary when it matches the cached checksum file; None (and the stale
/// binary removed) when either is missing or they disagree.
fn check_cached(target: &Path, sums_path: &Path, asset: &str) -> Result<Option<String>> {
    let Ok(text) = fs::read_to_string(sums_path) else {
        return Ok(None);
    };
    let Some(expected) = parse_sha256sums(&text)
        .ok()
        .and_then(|s: Sums| expected_hash(&s, asset).map(str::to_string))
    else {
        return Ok(None);
    };
    let mut file = match File::open(target) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("opening", target, e)),
    };
    let actual = hash_reader(&mut file, target)?;
    if actual == expected {
        return Ok(Some(actual));
    }
    tracing::warn!(
        path = %target.display(),
        %expected,
        %actual,
        "cached k3s binary does not match its checksum file; fetching it again"
    );
    fs::remove_file(target).map_err(|e| io("removing", target, e))?;
    Ok(None)
}

fn parse_sums(text: &str, from: &str) -> Result<Sums> {
    parse_sha256sums(text).map_err(|e| Error::Sums {
        from: from.to_string(),
        source: Box::new(e),
    })
}

fn verify(expected: &str, actual: &str, from: &str) -> Result<()> {
    if expected.eq_ignore_ascii_case(actual) {
        return Ok(());
    }
    Err(Error::Mismatch {
        from: from.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    })
}

/// Makes the verified temporary file the cached binary (mode 0755) and stores the checksum
/// file beside it, or removes a stale one when there is none.
fn install(
    partial: Partial,
    target: &Path,
    sums_text: Option<&str>,
    sums_path: &Path,
) -> Result<()> {
    let tmp = partial.path().to_path_buf();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(BINARY_MODE))
        .map_err(|e| io("setting the mode of", &tmp, e))?;
    match sums_text {
        Some(text) => {
            let sums_tmp = Partial::new(target.parent().unwrap_or(Path::new(".")), "sums");
            write_new(sums_tmp.path(), text.as_bytes())?;
            fs::rename(sums_tmp.path(), sums_path).map_err(|e| io("replacing", sums_path, e))?;
            sums_tmp.keep();
        }
        None => match fs::remove_file(sums_path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing", sums_path, e)),
        },
    }
    fs::rename(&tmp, target).map_err(|e| io("replacing", target, e))?;
    partial.keep();
    if let Some(dir) = target.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing directory", dir, e))?;
    }
    Ok(())
}

async fn get_small(client: &reqwest::Client, url: &str) -> Result<String> {
    let mut response = send(client, url).await?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http(url))? {
        body.extend_from_slice(&chunk);
        if body.len() > SUMS_LIMIT {
            return Err(Error::TooLarge {
                url: url.to_string(),
                limit: SUMS_LIMIT,
            });
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Streams `url` into `tmp` (which must not exist), hashing as it goes; syncs the file.
async fn download_hashing(client: &reqwest::Client, url: &str, tmp: &Path) -> Result<String> {
    let mut response = send(client, url).await?;
    let file = create_new(tmp)?;
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Sha256::new();
    while let Some(chunk) = response.chunk().await.map_err(http(url))? {
        hasher.update(&chunk);
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(|e| io("writing", tmp, e))?;
    }
    file.sync_all().await.map_err(|e| io("syncing", tmp, e))?;
    Ok(hex(&hasher.finalize()))
}

async fn send(client: &reqwest::Client, url: &str) -> Result<reqwest::Response> {
    let response = client.get(url).send().await.map_err(http(url))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    Ok(response)
}

/// Maps a transport error of `url`.
fn http(url: &str) -> impl FnOnce(reqwest::Error) -> Error + '_ {
    move |source| Error::Http {
        url: url.to_string(),
        source,
    }
}

/// A temporary file in the cache directory, removed on drop unless kept.
struct Partial {
    path: PathBuf,
    keep: bool,
}

impl Partial {
    fn new(dir: &Path, what: &str) -> Partial {
        Partial {
            path: dir.join(format!(".{what}.partial-{}", std::process::id())),
            keep: false,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed into place: nothing to remove.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| io("creating directory", dir, e))
}

/// A failed first fetch of a version leaves no empty version directory behind.
fn remove_dir_if_empty(dir: &Path) {
    let _ = fs::remove_dir(dir);
}

/// Creates `path`, replacing a leftover temporary file of an interrupted earlier run.
fn create_new(path: &Path) -> Result<File> {
    let _ = fs::remove_file(path);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("creating", path, e))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = create_new(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .map_err(|e| io("writing", path, e))
}

/// Copies `src` (named `src_path` in errors) to the new file `tmp`, hashing the bytes written.
fn copy_hashing(src: &mut File, src_path: &Path, tmp: &Path) -> Result<String> {
    let mut out = create_new(tmp)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = src.read(&mut buf).map_err(|e| io("reading", src_path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| io("writing", tmp, e))?;
    }
    out.sync_all().map_err(|e| io("syncing", tmp, e))?;
    Ok(hex(&hasher.finalize()))
}

fn hash_reader(src: &mut File, path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = src.read(&mut buf).map_err(|e| io("reading", path, e))?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Runs file work (hashing tens of megabytes) off the async worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}
