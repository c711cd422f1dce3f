//! Images the lab runs, as Fly runs them: `config.image` is pulled from an OCI registry by tag
//! or digest, every blob is checked against its digest, and the layers are unpacked in order
//! into a content-addressed root filesystem cache under the lab's state dir, keyed by the
//! manifest digest (reference/fly-runtime.md §2: "the image is unpacked into a VM root
//! filesystem"; §3: registry auth is HTTP Basic, user `x`, password the token).
//! The image config's Entrypoint, Cmd, Env, WorkingDir and User come back as an
//! [`ImageConfig`] for the guest runner (§1.1, §2: the only five fields Fly's init uses).
//!
//! - `pull`: the registry side (oci-client): manifest, config and layer blobs.
//! - `unpack`: applies one layer onto a directory; nothing escapes the root.
//! - `cache`: the on-disk layout, cache lookups and the atomic commit of an unpacked image.
//!
//! This module does not start guests, mount overlays or answer API requests; it gives the API
//! [`Error::api_error`] to turn a failed pull into a Fly-like error body.

pub mod cache;
pub mod pull;
pub mod unpack;

use fks_bootstrap::fly::types::MachineInit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::ApiError;

pub use cache::Cache;
pub use pull::Registry;

/// A registry password (the lab token; on Fly the Fly token). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(secret: impl Into<String>) -> Password {
        Password(secret.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// What Fly's init takes from an image config (reference/fly-runtime.md §2: `Entrypoint`,
/// `Cmd`, `Env`, `WorkingDir`, `User`), plus its labels and the platform it was built for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` strings, in image order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Not used by init; Fly shows them in the API's `image_ref.labels` (§2).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub architecture: String,
    pub os: String,
}

impl ImageConfig {
    /// The main process's argv (reference/fly-runtime.md §1.1): `init.exec` alone if set;
    /// otherwise the entrypoint (`init.entrypoint`, else the image's) followed by the command
    /// (`init.cmd`, else the image's). Whether an `init.entrypoint` override drops the image
    /// Cmd, as Docker does, is undocumented (§1.1 "uncertain", Known unknowns 2): this keeps
    /// the image Cmd, as INIT's code did.
    pub fn argv(&self, init: &MachineInit) -> Vec<String> {
        if let Some(exec) = init.exec.as_ref().filter(|e| !e.is_empty()) {
            return exec.clone();
        }
        let entrypoint = init.entrypoint.as_ref().unwrap_or(&self.entrypoint);
        let cmd = init.cmd.as_ref().unwrap_or(&self.cmd);
        entrypoint.iter().chain(cmd).cloned().collect()
    }

    /// The main process's environment: the image Env, then `machine` (FLY_* vars,
    /// `config.env`, secrets) merged over it (reference/fly-runtime.md §1.1). An image entry
    /// without `=` is kept with an empty value.
    pub fn env_under(&self, machine: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect();
        out.extend(machine.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
}

/// Who the main process runs as, from the image's `User` (reference/fly-runtime.md §1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// The passwd entry's home, `/` for a numeric uid without one (INIT's rule, §1.1).
    pub home: String,
}

impl RunAs {
    /// Resolves an image `User` as Fly's init does (reference/fly-runtime.md §1.1): none means
    /// root; `user[:group]` where each part is a number or a name; a numeric uid without a
    /// passwd entry runs with gid = uid and HOME `/`; an unknown *name* is refused. `passwd`
    /// and `group` are the image's /etc/passwd and /etc/group (empty when absent). Pure.
    pub fn resolve(user: Option<&str>, passwd: &str, group: &str) -> Result<RunAs, String> {
        let field = |line: &str, i: usize| line.split(':').nth(i).map(str::to_string);
        let entries: Vec<&str> = passwd
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        let Some(user) = user.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(RunAs {
                uid: 0,
                gid: 0,
                home: "/root".to_string(),
            });
        };
        let (name, grp) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        let by = |i: usize, want: &str| {
            entries
                .iter()
                .find(|l| field(l, i).as_deref() == Some(want))
                .copied()
        };
        let (uid, mut gid, home) = if let Ok(uid) = name.parse::<u32>() {
            match by(2, name) {
                Some(l) => (
                    uid,
                    field(l, 3).and_then(|g| g.parse().ok()).unwrap_or(uid),
                    field(l, 5).unwrap_or_else(|| "/".to_string()),
                ),
                None => (uid, uid, "/".to_string()),
            }
        } else {
            let l = by(0, name).ok_or_else(|| {
                format!("no user named {name} in the image's /etc/passwd (Fly's init refuses an unknown user name too)")
            })?;
            let num = |i: usize| {
                field(l, i)
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| format!("the /etc/passwd entry of {name} is malformed"))
            };
            (
                num(2)?,
                num(3)?,
                field(l, 5).unwrap_or_else(|| "/".to_string()),
            )
        };
        if let Some(g) = grp.filter(|g| !g.is_empty()) {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => group
                    .lines()
                    .find(|l| field(l, 0).as_deref() == Some(g))
                    .and_then(|l| field(l, 2))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("no group named {g} in the image's /etc/group"))?,
            };
        }
        Ok(RunAs { uid, gid, home })
    }
}

/// An image ready to run: its unpacked root filesystem and its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The reference as asked for (what `FLY_IMAGE_REF` shows).
    pub reference: String,
    /// `sha256:<hex>` of the image manifest: the cache key.
    pub manifest_digest: String,
    /// The unpacked root filesystem (read-only by convention: guests get an overlay on it).
    pub rootfs: PathBuf,
    pub config: ImageConfig,
}

impl Image {
    /// Who the main process runs as ([`RunAs::resolve`]), reading the image's /etc/passwd and
    /// /etc/group only when the image names a user. Those files must be plain files below a
    /// real `etc` directory: a symlink there could point at the host's files.
    pub fn run_as(&self) -> Result<RunAs, Error> {
        let user = self.config.user.as_deref();
        let named = user.is_some_and(|u| {
            let u = u.trim();
            !u.is_empty() && u != "0" && u != "0:0" && u != "root"
        });
        let user_err = |reason: String| Error::User {
            image: self.reference.clone(),
            user: user.unwrap_or_default().to_string(),
            reason,
        };
        let read = |name: &str| -> Result<String, Error> {
            if !named {
                return Ok(String::new());
            }
            let etc = self.rootfs.join("etc");
            let path = etc.join(name);
            let plain = |p: &std::path::Path, dir: bool| {
                std::fs::symlink_metadata(p).map(|m| {
                    if dir {
                        m.file_type().is_dir()
                    } else {
                        m.file_type().is_file()
                    }
                })
            };
            match (plain(&etc, true), plain(&path, false)) {
                (Ok(true), Ok(true)) => {
                    std::fs::read_to_string(&path).map_err(|source| Error::Io {
                        image: self.reference.clone(),
                        op: "reading",
                        path,
                        source,
                    })
                }
                (Ok(true), Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                _ => Err(user_err(format!(
                    "/etc/{name} of the image is not a plain file in a plain directory"
                ))),
            }
        };
        let passwd = read("passwd")?;
        let group = read("group")?;
        let root_name = user.map(str::trim) == Some("root");
        if root_name && passwd.is_empty() {
            return Ok(RunAs {
                uid: 0,
                gid: 0,
                home: "/root".to_string(),
            });
        }
        RunAs::resolve(user, &passwd, &group).map_err(user_err)
    }
}

/// How a pull went, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullStats {
    /// True when the unpacked image was already in the cache.
    pub cache_hit: bool,
    /// Layer blobs fetched from the registry (not already in the blob store).
    pub blobs_fetched: usize,
    pub bytes_fetched: u64,
    /// Entries and file bytes written while unpacking.
    pub entries: u64,
    pub bytes_unpacked: u64,
}

/// Errors pulling or unpacking an image. Every variant names the image; layer errors name the
/// layer digest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image reference `{reference}` does not parse")]
    Reference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error("image {image}: it is on registry {registry}, but the lab pulls only from its own registry {lab} (it cannot reach others; push the image there)")]
    ForeignRegistry {
        image: String,
        registry: String,
        lab: String,
    },
    #[error("image {image}: the registry refused the credentials")]
    Unauthorized {
        image: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("image {image}: no such manifest in the registry")]
    ManifestUnknown {
        image: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("image {image}: fetching the manifest")]
    Manifest {
        image: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("image {image}: blob {digest} ({what}) is missing from the registry")]
    MissingBlob {
        image: String,
        digest: String,
        what: &'static str,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("image {image}: blob {digest} ({what}) does not match its digest")]
    BlobDigest {
        image: String,
        digest: String,
        what: &'static str,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("image {image}: fetching blob {digest} ({what})")]
    Blob {
        image: String,
        digest: String,
        what: &'static str,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("image {image}: the config blob {digest} is not an image config")]
    Config {
        image: String,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {image}: built for {os}/{architecture}, but the lab runs {want}")]
    Platform {
        image: String,
        os: String,
        architecture: String,
        want: String,
    },
    #[error("image {image}: {layers} layers but {diff_ids} diff_ids in its config")]
    LayerCount {
        image: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error(
        "image {image}: layer {layer} has media type {media_type}, which the lab cannot unpack"
    )]
    MediaType {
        image: String,
        layer: String,
        media_type: String,
    },
    #[error("image {image}: blob digest `{digest}` is not sha256:<64 lowercase hex>")]
    BadDigest { image: String, digest: String },
    #[error("image {image}: no space left in {dir} while unpacking layer {layer}")]
    NoSpace {
        image: String,
        layer: String,
        dir: PathBuf,
        #[source]
        source: Box<unpack::Error>,
    },
    #[error("image {image}: unpacking layer {layer}")]
    Unpack {
        image: String,
        layer: String,
        #[source]
        source: Box<unpack::Error>,
    },
    #[error("opening the rootfs cache in {dir}")]
    Cache {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image}: user `{user}`: {reason}")]
    User {
        image: String,
        user: String,
        reason: String,
    },
    #[error("image {image}: {op} {path}")]
    Io {
        image: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the image itself (or its reference or registry) is at fault, so a machine
    /// create must be refused; false when the lab failed (disk full, I/O).
    pub fn is_image_fault(&self) -> bool {
        !matches!(
            self,
            Error::NoSpace { .. } | Error::Io { .. } | Error::Cache { .. } | Error::Blob { .. }
        )
    }

    /// The error body a Machines API create answers when its image cannot be pulled. Fly's
    /// exact text and status for this are not documented (reference/fly-machines-api.md §2.3
    /// says only "400/422 bad config"): a reference that does not parse is a 400, an image
    /// that cannot be pulled or unpacked a 422, and a lab-side failure (disk full, I/O) a 500.
    /// The message carries the whole cause chain, so the client sees which image and layer.
    pub fn api_error(&self) -> ApiError {
        let mut message = format!("image cannot be pulled: {self}");
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        match self {
            Error::Reference { .. } => ApiError::bad_request(message),
            e if e.is_image_fault() => ApiError::unprocessable(message),
            _ => ApiError::internal(message),
        }
    }
}

#[cfg(test)]
mod tests;
