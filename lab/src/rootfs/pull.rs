//! The registry side of images: fetch the manifest (resolving an index to this host's
//! platform), the config and the layer blobs with `oci-client`, every one checked against its
//! digest, then unpack the layers in order into the [`Cache`]. A pull by digest that the cache
//! has makes no request at all; a pull by tag asks the registry for the manifest only.
//!
//! Registry auth follows Fly's registry (reference/fly-runtime.md §3): HTTP Basic with user
//! `x` and the token as password, which `oci-client` sends when the registry answers `/v2/`
//! with a non-Bearer challenge (§3, OCIC). The lab's registry is plain HTTP on a local port.
//! This file must not know about machines or the API; it returns values and typed errors.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde::Deserialize;
use std::path::{Path, PathBuf};

use super::unpack::{self, Compression};
use super::{Cache, Error, Image, ImageConfig, Password, PullStats};

/// How long connecting to the registry may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a registry may go silent in the middle of an answer.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where images come from and how to log in.
#[derive(Debug, Clone)]
pub struct Registry {
    /// `host:port` as it appears in image references.
    pub host: String,
    pub user: String,
    pub password: Password,
    /// Speak HTTP rather than HTTPS to `host` (the lab's local registry).
    pub plain_http: bool,
}

impl Registry {
    /// The lab's registry: plain HTTP on `host`, user `x`, the lab token as password.
    pub fn lab(host: impl Into<String>, token: impl Into<String>) -> Registry {
        Registry {
            host: host.into(),
            user: "x".to_string(),
            password: Password::new(token),
            plain_http: true,
        }
    }
}

/// Pulls images into a cache.
pub struct Puller {
    cache: Cache,
    registry: Registry,
    client: oci_client::Client,
    /// One lock per reference being pulled: a second pull of the same reference (the start
    /// of a machine whose create's background pull still runs) waits for the first and then
    /// finds the image in the cache instead of downloading and unpacking it again.
    inflight:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("cache", &self.cache)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// An image checked for pulling, not downloaded ([`Puller::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `sha256:<hex>` of the image manifest: what a machine pins.
    pub manifest_digest: String,
    pub config: ImageConfig,
}

/// One layer to unpack: its blob digest, where the blob is stored, how it is compressed, and
/// the digest of its uncompressed tar (`rootfs.diff_ids`).
#[derive(Debug, Clone)]
struct Layer {
    digest: String,
    blob: PathBuf,
    compression: Compression,
    diff_id: String,
}

/// The part of an image config the lab reads (OCI image-spec `config.md`; Docker's is the
/// same shape).
#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RawExec>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawExec {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// This host's platform in OCI's words (`GOARCH` names).
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

impl Puller {
    /// A puller caching under `<state_dir>/rootfs`, logging in to `registry`. Opening empties
    /// the cache's scratch space, so a lab opens one puller and shares it (`pull` takes
    /// `&self`; concurrent pulls, even of the same image, are safe).
    pub fn new(state_dir: &Path, registry: Registry) -> Result<Puller, Error> {
        let cache = Cache::open(state_dir).map_err(|source| Error::Cache {
            dir: state_dir.join("rootfs"),
            source,
        })?;
        let protocol = if registry.plain_http {
            ClientProtocol::HttpsExcept(vec![registry.host.clone()])
        } else {
            ClientProtocol::Https
        };
        // oci-client's reqwest 0.13 is built without a crypto provider (as in the root crate):
        // install ring once; a provider already installed is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = oci_client::Client::new(ClientConfig {
            protocol,
            // A registry that stops answering fails the pull instead of hanging a create.
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        });
        Ok(Puller {
            cache,
            registry,
            client,
            inflight: Default::default(),
        })
    }

    /// The cache this puller fills.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The `host:port` images must name.
    pub fn registry_host(&self) -> &str {
        &self.registry.host
    }

    /// Refuses an image on another registry: the lab reaches only its own (no internet), so
    /// trying would only end in a timeout.
    fn check_registry(&self, image: &str, reference: &Reference) -> Result<(), Error> {
        let registry = reference.resolve_registry();
        if registry == self.registry.host {
            return Ok(());
        }
        Err(Error::ForeignRegistry {
            image: image.to_string(),
            registry: registry.to_string(),
            lab: self.registry.host.clone(),
        })
    }

    fn auth(&self, reference: &Reference) -> RegistryAuth {
        if reference.resolve_registry() == self.registry.host {
            RegistryAuth::Basic(
                self.registry.user.clone(),
                self.registry.password.expose().to_string(),
            )
        } else {
            RegistryAuth::Anonymous
        }
    }

    /// Pull `image` (`HOST/NAME:TAG` or `HOST/NAME@sha256:...`) and unpack it into the cache.
    /// Pulls of the same reference run one after the other (the later ones hit the cache).
    pub async fn pull(&self, image: &str) -> Result<(Image, PullStats), Error> {
        let lock = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(image.to_string())
            .or_default()
            .clone();
        let held = lock.lock().await;
        let pulled = self.pull_once(image).await;
        drop(held);
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the lock once nobody else holds or waits for it (the map and `lock`).
        if std::sync::Arc::strong_count(&lock) <= 2 {
            inflight.remove(image);
        }
        pulled
    }

    async fn pull_once(&self, image: &str) -> Result<(Image, PullStats), Error> {
        let reference: Reference = image.parse().map_err(|source| Error::Reference {
            reference: image.to_string(),
            source,
        })?;
        let mut stats = PullStats::default();
        if let Some(hit) = reference.digest().and_then(|d| self.cache.lookup(d, image)) {
            stats.cache_hit = true;
            return Ok((hit, stats));
        }
        self.check_registry(image, &reference)?;
        let auth = self.auth(&reference);
        let (manifest, digest) = self
            .client
            .pull_image_manifest(&reference, &auth)
            .await
            .map_err(|source| manifest_error(image, source))?;
        if let Some(hit) = self.cache.lookup(&digest, image) {
            stats.cache_hit = true;
            return Ok((hit, stats));
        }
        let (config, layers) = self.layers(image, &reference, &manifest).await?;
        for (desc, layer) in manifest.layers.iter().zip(&layers) {
            if let Some(bytes) = self
                .fetch_blob(image, &reference, desc, &layer.blob)
                .await?
            {
                stats.blobs_fetched += 1;
                stats.bytes_fetched += bytes;
            }
        }
        let (rootfs, entries, bytes) = self.unpack(image, &digest, layers, &config).await?;
        stats.entries = entries;
        stats.bytes_unpacked = bytes;
        tracing::info!(image, digest = %digest, blobs = stats.blobs_fetched,
            bytes = stats.bytes_fetched, "pulled and unpacked image");
        Ok((
            Image {
                reference: image.to_string(),
                manifest_digest: digest,
                rootfs,
                config,
            },
            stats,
        ))
    }

    /// Check that `image` can be pulled without downloading its layers: the manifest (and its
    /// digest, the one to pin), the config, the platform, the layer media types. A create can
    /// answer with this at once while the pull itself runs before the start, as Fly keeps a
    /// machine `created` while it fetches the image (reference/fly-runtime.md §2). A cached
    /// image named by digest makes no request.
    pub async fn resolve(&self, image: &str) -> Result<Resolved, Error> {
        let reference: Reference = image.parse().map_err(|source| Error::Reference {
            reference: image.to_string(),
            source,
        })?;
        if let Some(hit) = reference.digest().and_then(|d| self.cache.lookup(d, image)) {
            return Ok(Resolved {
                manifest_digest: hit.manifest_digest,
                config: hit.config,
            });
        }
        self.check_registry(image, &reference)?;
        let (manifest, digest) = self
            .client
            .pull_image_manifest(&reference, &self.auth(&reference))
            .await
            .map_err(|source| manifest_error(image, source))?;
        if let Some(hit) = self.cache.lookup(&digest, image) {
            return Ok(Resolved {
                manifest_digest: digest,
                config: hit.config,
            });
        }
        let (config, _) = self.layers(image, &reference, &manifest).await?;
        Ok(Resolved {
            manifest_digest: digest,
            config,
        })
    }

    /// The config and the layers of `manifest`, checked: as many diff_ids as layers, media
    /// types the lab can unpack, well-formed digests.
    async fn layers(
        &self,
        image: &str,
        reference: &Reference,
        manifest: &OciImageManifest,
    ) -> Result<(ImageConfig, Vec<Layer>), Error> {
        let (config, diff_ids) = self.config(image, reference, &manifest.config).await?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::LayerCount {
                image: image.to_string(),
                layers: manifest.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
            let compression =
                Compression::from_media_type(&desc.media_type).ok_or_else(|| Error::MediaType {
                    image: image.to_string(),
                    layer: desc.digest.clone(),
                    media_type: desc.media_type.clone(),
                })?;
            let blob = self
                .cache
                .blob_path(&desc.digest)
                .ok_or_else(|| Error::BadDigest {
                    image: image.to_string(),
                    digest: desc.digest.clone(),
                })?;
            layers.push(Layer {
                digest: desc.digest.clone(),
                blob,
                compression,
                diff_id,
            });
        }
        Ok((config, layers))
    }

    /// Fetch and parse the config blob: the exec fields and the layers' diff_ids.
    async fn config(
        &self,
        image: &str,
        reference: &Reference,
        desc: &OciDescriptor,
    ) -> Result<(ImageConfig, Vec<String>), Error> {
        let mut raw = Vec::new();
        self.client
            .pull_blob(reference, desc, &mut raw)
            .await
            .map_err(|source| blob_error(image, &desc.digest, "config", source))?;
        let parsed: RawConfig = serde_json::from_slice(&raw).map_err(|source| Error::Config {
            image: image.to_string(),
            digest: desc.digest.clone(),
            source,
        })?;
        let (os, arch) = host_platform();
        if parsed.os != os || parsed.architecture != arch {
            return Err(Error::Platform {
                image: image.to_string(),
                os: parsed.os,
                architecture: parsed.architecture,
                want: format!("{os}/{arch}"),
            });
        }
        let exec = parsed.config.unwrap_or_default();
        Ok((
            ImageConfig {
                entrypoint: exec.entrypoint.unwrap_or_default(),
                cmd: exec.cmd.unwrap_or_default(),
                env: exec.env.unwrap_or_default(),
                working_dir: exec.working_dir.filter(|w| !w.is_empty()),
                user: exec.user.filter(|u| !u.is_empty()),
                labels: exec.labels.unwrap_or_default(),
                architecture: parsed.architecture,
                os: parsed.os,
            },
            parsed.rootfs.map(|r| r.diff_ids).unwrap_or_default(),
        ))
    }

    /// Download a layer blob to `target` in the blob store unless it is there; `Some(bytes)`
    /// if fetched.
    async fn fetch_blob(
        &self,
        image: &str,
        reference: &Reference,
        layer: &OciDescriptor,
        target: &Path,
    ) -> Result<Option<u64>, Error> {
        let io_err = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io {
                image: image.to_string(),
                op,
                path,
                source,
            }
        };
        if tokio::fs::try_exists(target).await.unwrap_or(false) {
            return Ok(None);
        }
        let part = self.cache.scratch("blob");
        let file = tokio::fs::File::create(&part)
            .await
            .map_err(io_err("creating", &part))?;
        let fetched = self.client.pull_blob(reference, layer, file).await;
        if let Err(source) = fetched {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(blob_error(image, &layer.digest, "layer", source));
        }
        let bytes = tokio::fs::metadata(&part)
            .await
            .map_err(io_err("reading the size of", &part))?
            .len();
        tokio::fs::rename(&part, target)
            .await
            .map_err(io_err("storing the blob as", target))?;
        Ok(Some(bytes))
    }

    /// Unpack `layers` in order into a scratch dir and commit it as `digest`; returns the
    /// committed rootfs and the entry and byte counts.
    async fn unpack(
        &self,
        image: &str,
        digest: &str,
        layers: Vec<Layer>,
        config: &ImageConfig,
    ) -> Result<(PathBuf, u64, u64), Error> {
        let scratch = self.cache.scratch("image");
        let (image_s, scratch_b) = (image.to_string(), scratch.clone());
        let unpacked =
            tokio::task::spawn_blocking(move || unpack_all(&image_s, &scratch_b, &layers))
                .await
                .map_err(|e| Error::Io {
                    image: image.to_string(),
                    op: "unpacking (the unpack task failed) into",
                    path: scratch.clone(),
                    source: std::io::Error::other(e.to_string()),
                });
        let (entries, bytes) = match unpacked.and_then(|r| r) {
            Ok(counts) => counts,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&scratch).await;
                return Err(e);
            }
        };
        // Writing the record and renaming are file system calls: off the async workers too.
        let cache_dir = self.cache.dir().to_path_buf();
        let (scratch_b, digest_s, config_c) = (scratch.clone(), digest.to_string(), config.clone());
        let committed = tokio::task::spawn_blocking(move || {
            super::cache::commit_in(&cache_dir, &scratch_b, &digest_s, &config_c)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r);
        let dir = committed.map_err(|source| Error::Io {
            image: image.to_string(),
            op: "committing the unpacked image from",
            path: scratch.clone(),
            source,
        })?;
        Ok((dir.join("rootfs"), entries, bytes))
    }
}

/// Blocking: unpack every layer blob onto `<scratch>/rootfs`.
fn unpack_all(image: &str, scratch: &Path, layers: &[Layer]) -> Result<(u64, u64), Error> {
    let rootfs = scratch.join("rootfs");
    let io_err = |op: &'static str, path: &Path, source| Error::Io {
        image: image.to_string(),
        op,
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(&rootfs).map_err(|e| io_err("creating", &rootfs, e))?;
    std::fs::set_permissions(&rootfs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| io_err("setting the mode of", &rootfs, e))?;
    let root = unpack::open_root(&rootfs).map_err(|e| io_err("opening", &rootfs, e))?;
    let (mut entries, mut bytes) = (0, 0);
    for Layer {
        digest,
        blob,
        compression,
        diff_id,
    } in layers
    {
        let file = std::fs::File::open(blob).map_err(|e| io_err("opening the blob", blob, e))?;
        let reader = std::io::BufReader::with_capacity(1 << 20, file);
        match unpack::apply_blob(&root, reader, *compression, digest, Some(diff_id)) {
            Ok(s) => {
                entries += s.entries;
                bytes += s.bytes;
            }
            Err(source) => {
                if matches!(source, unpack::Error::Digest { .. }) {
                    // A stored blob that no longer matches is dropped, so the next pull
                    // fetches it again.
                    let _ = std::fs::remove_file(blob);
                }
                return Err(if source.is_no_space() {
                    Error::NoSpace {
                        image: image.to_string(),
                        layer: digest.clone(),
                        dir: rootfs.clone(),
                        source: Box::new(source),
                    }
                } else {
                    Error::Unpack {
                        image: image.to_string(),
                        layer: digest.clone(),
                        source: Box::new(source),
                    }
                });
            }
        }
    }
    Ok((entries, bytes))
}

/// A registry error code in `e`, if the registry sent one.
fn codes(e: &OciDistributionError) -> Vec<&OciErrorCode> {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().map(|x| &x.code).collect()
        }
        _ => Vec::new(),
    }
}

fn is_unauthorized(e: &OciDistributionError) -> bool {
    matches!(
        e,
        OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::ServerError {
                code: 401 | 403,
                ..
            }
    ) || codes(e)
        .iter()
        .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
}

fn manifest_error(image: &str, source: OciDistributionError) -> Error {
    let image = image.to_string();
    if is_unauthorized(&source) {
        return Error::Unauthorized { image, source };
    }
    let unknown = matches!(
        source,
        OciDistributionError::ImageManifestNotFoundError(_)
            | OciDistributionError::ServerError { code: 404, .. }
    ) || codes(&source).iter().any(|c| {
        matches!(
            c,
            OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
        )
    });
    if unknown {
        Error::ManifestUnknown { image, source }
    } else {
        Error::Manifest { image, source }
    }
}

fn blob_error(
    image: &str,
    digest: &str,
    what: &'static str,
    source: OciDistributionError,
) -> Error {
    let (image, digest) = (image.to_string(), digest.to_string());
    if is_unauthorized(&source) {
        return Error::Unauthorized { image, source };
    }
    if matches!(source, OciDistributionError::DigestError(_)) {
        return Error::BlobDigest {
            image,
            digest,
            what,
            source,
        };
    }
    let missing = matches!(source, OciDistributionError::ServerError { code: 404, .. })
        || codes(&source)
            .iter()
            .any(|c| matches!(c, OciErrorCode::BlobUnknown | OciErrorCode::NotFound));
    if missing {
        Error::MissingBlob {
            image,
            digest,
            what,
            source,
        }
    } else {
        Error::Blob {
            image,
            digest,
            what,
            source,
        }
    }
}
