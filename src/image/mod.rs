//! The node image (ARCHITECTURE "The node image"): an OCI image assembled here, in Rust, from
//! a base pulled from its registry (default Debian trixie slim, `NODE_IMAGE_BASE`) plus one
//! layer holding this very `fks-bootstrap` binary, the k3s binary (verified, or declared the
//! stand-in) and CA certificates when the base has none; entrypoint `fks-bootstrap node init`;
//! labels naming versions and hashes. Pushed to the cluster's registry path
//! `<registry>/<cluster>-cp:<tag>` (reference/fly-runtime.md §3).
//!
//! Reproducible: the same inputs give the same manifest digest (see `layer` and `spec`).
//! Modules: `layer` (the tar.gz), `spec` (pure OCI documents), `k3s` (which binary),
//! `store` (the local OCI layout), `registry` (oci-client: pull and push), `ensure` (the
//! image step of `-c`/`-a`: find or build+push, pin by digest). Must not: shell
//! out to Docker or any image tool, or tag an image in a registry before all its blobs are
//! there.

pub mod ensure;
pub mod k3s;
pub mod layer;
pub mod registry;
pub mod spec;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, MediaType};
use sha2::{Digest, Sha256};

use crate::config::Config;

pub use registry::{PushReport, Settings};

/// Where CA certificates go in the image (Debian's path, which Go programs such as k3s and
/// containerd also look in).
pub const CA_BUNDLE_PATH: &str = "etc/ssl/certs/ca-certificates.crt";
/// Label: fks-bootstrap's version.
pub const LABEL_VERSION: &str = "fks-bootstrap.version";
/// Label: sha256 of the fks-bootstrap binary inside.
pub const LABEL_SHA256: &str = "fks-bootstrap.sha256";
/// Label: which k3s is inside, in words (`k3s v1.33.7+k3s1` or the stand-in statement).
pub const LABEL_K3S: &str = "fks-bootstrap.k3s";
/// Label: the k3s version (real k3s only).
pub const LABEL_K3S_VERSION: &str = "fks-bootstrap.k3s.version";
/// Label: the Kubernetes version the k3s inside runs (`v1.33.7`; the stand-in's too, since it
/// imitates one), what `-c`/`-a` check a configured `IMAGE` against `K3S_VERSION`.
pub const LABEL_KUBERNETES_VERSION: &str = "fks-bootstrap.kubernetes.version";
/// Label: sha256 of the k3s binary inside.
pub const LABEL_K3S_SHA256: &str = "fks-bootstrap.k3s.sha256";
/// Label: what verified the k3s binary.
pub const LABEL_K3S_VERIFIED_BY: &str = "fks-bootstrap.k3s.verified-by";
/// Label: where the CA certificates come from.
pub const LABEL_CA: &str = "fks-bootstrap.ca-certificates";

/// Everything that can go wrong building or pushing the node image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This machine cannot build the image.
    #[error("this machine is {os}/{arch}, but the node image is linux/amd64 and carries this very fks-bootstrap binary: run `fks-bootstrap image build` on a linux/amd64 machine (a Linux VM, a CI runner or a Fly machine), or set IMAGE= in the cluster config to an image built there")]
    UnsupportedOperator { os: String, arch: String },
    /// A blocking task (building the layer) panicked or was cancelled.
    #[error("building the node layer stopped: {0}")]
    Blocking(String),
    /// An image reference that does not parse.
    #[error("{reference:?} is not an image reference")]
    InvalidReference {
        reference: String,
        #[source]
        source: oci_spec::distribution::ParseError,
    },
    /// A setting (environment variable) with a bad value.
    #[error("{name}: {reason}")]
    Setting { name: &'static str, reason: String },
    /// A tag that registries do not accept.
    #[error("--tag {tag:?}: a tag is 1-128 of A-Z a-z 0-9 _ . -, not starting with . or -")]
    InvalidTag { tag: String },
    /// The registry answered 401/403.
    #[error("registry {registry} refused the credentials of user {user:?}: check FLY_API_TOKEN (the password is the Fly token, e.g. from `flyctl auth token`)")]
    CredentialsRefused {
        registry: String,
        user: &'static str,
    },
    /// A manifest or blob the registry does not have.
    #[error("{op} {reference}: the registry has no {what}")]
    NotFound {
        op: &'static str,
        reference: String,
        what: String,
    },
    /// Bytes that do not hash to the digest that names them.
    #[error("{what}: digest mismatch, expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A base image without a linux/amd64 variant.
    #[error("base image {reference} is not for linux/amd64 (it offers {}): Fly runs linux/amd64 machines; set NODE_IMAGE_BASE to a linux/amd64 image", if found.is_empty() { "no platform".to_string() } else { found.join(", ") })]
    BaseArch {
        reference: String,
        found: Vec<String>,
    },
    /// A manifest, index or config that cannot be used.
    #[error("{what} of {reference}: {reason}")]
    BadDocument {
        reference: String,
        what: &'static str,
        reason: String,
    },
    /// A digest string that is not `sha256:<64 hex>`.
    #[error("{digest:?} is not a sha256 digest")]
    BadDigest { digest: String },
    /// An entry of the added layer that cannot be written.
    #[error("layer entry {path:?} {reason}")]
    LayerEntry { path: String, reason: &'static str },
    /// Getting or verifying the k3s binary failed.
    #[error("k3s binary")]
    K3s(#[source] crate::artifacts::Error),
    /// A local k3s binary is not what it was given as.
    #[error("k3s binary {}: {reason}", path.display())]
    K3sIdentity { path: PathBuf, reason: String },
    /// Any other registry error.
    #[error("{op} {reference}")]
    Registry {
        op: &'static str,
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// A file system operation failed.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether this is the user's input to fix (exit 2) rather than a failed operation (1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::UnsupportedOperator { .. }
                | Error::InvalidReference { .. }
                | Error::Setting { .. }
                | Error::InvalidTag { .. }
                | Error::BaseArch { .. }
                | Error::K3sIdentity { .. }
        )
    }
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) use crate::artifacts::hex;

/// Refuses an operator that is not linux/amd64 (`os`, `arch` as Rust names them): the image
/// carries the running binary, so it must be the image's platform.
pub fn check_operator(os: &str, arch: &str) -> Result<()> {
    if os == spec::TARGET_OS && (arch == "x86_64" || arch == spec::TARGET_ARCH) {
        return Ok(());
    }
    Err(Error::UnsupportedOperator {
        os: os.to_string(),
        arch: arch.to_string(),
    })
}

/// Checks a tag against the distribution spec's `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTag {
            tag: tag.to_string(),
        })
    }
}

/// The cache directory: `$XDG_CACHE_HOME/fks-bootstrap`, else `~/.cache/fks-bootstrap`.
pub fn default_cache_dir() -> Result<PathBuf> {
    let from = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = from("XDG_CACHE_HOME") {
        return Ok(dir.join("fks-bootstrap"));
    }
    if let Some(home) = from("HOME") {
        return Ok(home.join(".cache").join("fks-bootstrap"));
    }
    Err(Error::Setting {
        name: "XDG_CACHE_HOME",
        reason: "neither it nor HOME is set: no place for the image cache".to_string(),
    })
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Request {
    /// The fks-bootstrap binary to put in (normally `std::env::current_exe()`).
    pub fks_bootstrap: PathBuf,
    /// Where k3s comes from.
    pub k3s: k3s::Choice,
    /// The cache (k3s downloads, the OCI layout).
    pub cache_dir: PathBuf,
}

/// A built image, in the local layout.
#[derive(Debug, Clone)]
pub struct Built {
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// Its blobs in push order: base layers, the added layer, the config.
    pub blobs: Vec<registry::Blob>,
    /// The labels set.
    pub labels: BTreeMap<String, String>,
    /// The base as pulled.
    pub base: registry::Base,
    /// The OCI layout directory holding it.
    pub layout: PathBuf,
}

impl Built {
    /// The default tag: derived from the manifest digest, so the same image gets the same tag.
    pub fn default_tag(&self) -> String {
        let hex = self.digest.trim_start_matches("sha256:");
        format!("fks-{}", hex.get(..12).unwrap_or(hex))
    }
}

/// Builds the node image of `config` into the local layout: pulls the base, gets k3s, writes
/// the layer (reused when the same inputs were built before), assembles config and manifest.
pub async fn build(
    config: &Config,
    request: &Request,
    settings: &Settings,
    client: &oci_client::Client,
) -> Result<Built> {
    check_operator(std::env::consts::OS, std::env::consts::ARCH)?;
    let base_ref = registry::parse_reference(&config.node_image_base)?;
    let store = store::Store::open(&request.cache_dir.join("oci"))?;
    let k3s = k3s::resolve(
        &request.k3s,
        &config.k3s_version,
        &request.cache_dir,
        &|p| store.hash_file_cached(p),
    )
    .await?;
    let base =
        registry::pull_base(client, &base_ref, &settings.auth_for(&base_ref), &store).await?;

    let base_has_ca = base_has(&store, &base, CA_BUNDLE_PATH)?;
    let fks_sha = store.hash_file_cached(&request.fks_bootstrap)?;
    let mut entries = vec![
        layer::Entry {
            path: "usr/local/bin/fks-bootstrap".into(),
            mode: 0o755,
            contents: layer::Contents::File(request.fks_bootstrap.clone()),
        },
        layer::Entry {
            path: "usr/local/bin/k3s".into(),
            mode: 0o755,
            contents: layer::Contents::File(k3s.path.clone()),
        },
    ];
    let ca_label = if base_has_ca {
        "from the base image".to_string()
    } else {
        entries.push(layer::Entry {
            path: CA_BUNDLE_PATH.into(),
            mode: 0o644,
            contents: layer::Contents::Bytes(ca_bundle()),
        });
        format!("Mozilla's roots from the webpki-root-certs crate, at /{CA_BUNDLE_PATH}")
    };
    let key = layer_key(
        &entries,
        &[("fks-bootstrap", &fks_sha), ("k3s", &k3s.sha256)],
    );
    let written = match store.built(&key)? {
        Some(w) => w,
        // Reading, hashing and compressing ~100 MB: on a blocking thread, not a runtime worker.
        None => {
            let (store, entries, key) = (store.clone(), entries.clone(), key.clone());
            tokio::task::spawn_blocking(move || -> Result<layer::Written> {
                let partial = store.partial("layer");
                let file = std::fs::File::create(partial.path())
                    .map_err(|e| io_error("creating", partial.path(), e))?;
                let mut out = std::io::BufWriter::new(file);
                let w = layer::write(&entries, &mut out)?;
                drop(out);
                store.commit(partial, &w.digest)?;
                store.remember_built(&key, &w)?;
                Ok(w)
            })
            .await
            .map_err(|e| Error::Blocking(e.to_string()))??
        }
    };

    let mut labels = BTreeMap::new();
    labels.insert(
        LABEL_VERSION.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    labels.insert(LABEL_SHA256.to_string(), fks_sha);
    labels.insert(LABEL_K3S_SHA256.to_string(), k3s.sha256.clone());
    labels.insert(LABEL_CA.to_string(), ca_label);
    let (k3s::Kind::Real { version, .. } | k3s::Kind::Standin { version }) = &k3s.kind;
    labels.insert(
        LABEL_KUBERNETES_VERSION.to_string(),
        crate::plan::skew::kubernetes_version(version).to_string(),
    );
    match &k3s.kind {
        k3s::Kind::Real {
            version,
            verified_by,
        } => {
            labels.insert(LABEL_K3S.to_string(), format!("k3s {version}"));
            labels.insert(LABEL_K3S_VERSION.to_string(), version.clone());
            labels.insert(
                LABEL_K3S_VERIFIED_BY.to_string(),
                verified_by.clone().unwrap_or_else(|| {
                    "not verified: no sha256sum-amd64.txt beside the file".into()
                }),
            );
        }
        k3s::Kind::Standin { version } => {
            labels.insert(
                LABEL_K3S.to_string(),
                format!("stand-in: k3s-standin {version}, a test double, not k3s"),
            );
        }
    }
    labels.insert(
        "org.opencontainers.image.base.name".to_string(),
        base_ref.whole(),
    );
    labels.insert(
        "org.opencontainers.image.base.digest".to_string(),
        base.digest.clone(),
    );

    let image_config = spec::node_config(&base.config, &written.diff_id, &labels);
    let config_bytes = spec::canonical_json(&image_config)?;
    let config_digest = store.put(&config_bytes)?;
    let mut blobs = Vec::new();
    let mut layers = Vec::new();
    let n = base.manifest.layers().len();
    for (i, l) in base.manifest.layers().iter().enumerate() {
        let media = spec::layer_media_type(&base_ref.whole(), l.media_type())?;
        layers.push(descriptor(media, l.size(), l.digest().as_ref())?);
        blobs.push(registry::Blob {
            digest: l.digest().to_string(),
            size: l.size(),
            what: format!("base layer {}/{n}", i + 1),
        });
    }
    layers.push(descriptor(
        MediaType::ImageLayerGzip,
        written.size,
        &written.digest,
    )?);
    blobs.push(registry::Blob {
        digest: written.digest.clone(),
        size: written.size,
        what: "node layer".to_string(),
    });
    blobs.push(registry::Blob {
        digest: config_digest.clone(),
        size: config_bytes.len() as u64,
        what: "config".to_string(),
    });
    let config_desc = descriptor(
        MediaType::ImageConfig,
        config_bytes.len() as u64,
        &config_digest,
    )?;
    let annotations: BTreeMap<String, String> = [
        ("org.opencontainers.image.base.name", base_ref.whole()),
        ("org.opencontainers.image.base.digest", base.digest.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let manifest = spec::manifest(config_desc, layers, &annotations)?;
    let manifest_bytes = spec::canonical_json(&manifest)?;
    let digest = store.put(&manifest_bytes)?;
    store.tag(
        &format!("{}-cp", config.cluster_name),
        &digest,
        manifest_bytes.len() as u64,
    )?;
    Ok(Built {
        digest,
        manifest: manifest_bytes,
        blobs,
        labels,
        base,
        layout: store.root().to_path_buf(),
    })
}

/// Pushes `built` to `target` (blobs it lacks, then the manifest).
pub async fn push(
    built: &Built,
    target: &oci_client::Reference,
    settings: &Settings,
    client: &oci_client::Client,
    cache_dir: &Path,
) -> Result<PushReport> {
    let store = store::Store::open(&cache_dir.join("oci"))?;
    let mount_from =
        (built.base.reference.registry() == target.registry()).then_some(&built.base.reference);
    registry::push(
        client,
        settings,
        target,
        &built.blobs,
        &built.manifest,
        &store,
        mount_from,
    )
    .await
}

fn descriptor(media: MediaType, size: u64, digest: &str) -> Result<Descriptor> {
    let d: oci_spec::image::Digest = digest.parse().map_err(|_| Error::BadDigest {
        digest: digest.to_string(),
    })?;
    Ok(Descriptor::new(media, size, d))
}

/// Whether the base's layers, applied in order, leave `path` in place (cached per base digest).
fn base_has(store: &store::Store, base: &registry::Base, path: &str) -> Result<bool> {
    let mut present = false;
    for l in base.manifest.layers() {
        let digest = l.digest().to_string();
        let file_path = store.blob_path(&digest)?;
        let file =
            std::fs::File::open(&file_path).map_err(|e| io_error("opening", &file_path, e))?;
        // zstd layers are not read; a base using them gets the bundle added (harmless).
        if !matches!(
            spec::layer_media_type(&base.reference.whole(), l.media_type())?,
            MediaType::ImageLayerGzip
        ) {
            continue;
        }
        if let Some(v) = layer::presence_after(std::io::BufReader::new(file), path)
            .map_err(|e| io_error("reading the base layer", &file_path, e))?
        {
            present = v;
        }
    }
    Ok(present)
}

/// The hash naming a layer's inputs: each entry's path, mode and content hash, plus the
/// layer format's version; the same inputs reuse the layer built before.
fn layer_key(entries: &[layer::Entry], file_hashes: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    h.update(b"fks-bootstrap node layer v1\n");
    for e in entries {
        h.update(format!("{} {:o}\n", e.path, e.mode).as_bytes());
        match &e.contents {
            layer::Contents::Bytes(b) => h.update(Sha256::digest(b)),
            layer::Contents::File(_) => {}
        }
    }
    for (name, sha) in file_hashes {
        h.update(format!("{name} {sha}\n").as_bytes());
    }
    hex(&h.finalize())
}

/// Mozilla's root certificates (the `webpki-root-certs` crate, pinned by Cargo.lock) as a PEM
/// bundle: the same bytes on every operator's machine, unlike the operator's own
/// /etc/ssl/certs, so the image stays reproducible.
pub fn ca_bundle() -> Vec<u8> {
    use base64::Engine;
    let mut out = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_linux_amd64_operators_may_build() {
        assert!(check_operator("linux", "x86_64").is_ok());
        for (os, arch) in [
            ("macos", "aarch64"),
            ("linux", "aarch64"),
            ("windows", "x86_64"),
        ] {
            let e = check_operator(os, arch).expect_err(os);
            assert!(e.is_usage());
            let text = e.to_string();
            assert!(text.contains(&format!("{os}/{arch}")), "{text}");
            assert!(text.contains("linux/amd64 machine"), "{text}");
        }
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        for ok in ["t1", "fks-0123", "v1.2.3_x"] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a+b", "a:b", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ca_bundle_is_pem_and_the_same_every_time() {
        let a = ca_bundle();
        assert_eq!(a, ca_bundle());
        let text = String::from_utf8(a).expect("utf8");
        assert!(text.matches("BEGIN CERTIFICATE").count() > 100);
    }
}
