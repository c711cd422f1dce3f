//! Talking to registries through `oci-client`: which registry is the cluster's (settings),
//! pulling the base (manifest, config, layers into the store), and pushing the node image
//! (blobs the registry lacks, then the manifest last, so that a failed push never leaves the
//! tag pointing at a half-pushed image).
//!
//! Fly's registry (reference/fly-runtime.md §3): `registry.fly.io/<app>:<tag>`, host override
//! `FLY_REGISTRY_HOST`; HTTP Basic auth with user `x` and the Fly token without its `FlyV1 `
//! scheme as password; `oci-client` falls back to Basic auth on a non-Bearer challenge.
//! Must not: print or log the token (it is a [`SecretString`]).

use std::io::IsTerminal;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::fly::types::SecretString;

use super::spec::{self, Pulled};
use super::store::Store;
use super::{Error, Result};

/// Fly's registry (reference/fly-runtime.md §3).
pub const DEFAULT_REGISTRY_HOST: &str = "registry.fly.io";
/// The user name Fly's registry expects (reference/fly-runtime.md §3).
pub const REGISTRY_USER: &str = "x";
/// flyctl's override of the registry host (reference/fly-runtime.md §3).
pub const HOST_ENV: &str = "FLY_REGISTRY_HOST";
/// Set to `1` to speak plain HTTP to a registry on this machine (a loopback host only).
pub const PLAIN_HTTP_ENV: &str = "FKS_REGISTRY_PLAIN_HTTP";
/// The Fly token, the registry password.
pub const TOKEN_ENV: &str = "FLY_API_TOKEN";

/// Where the cluster's images go and how to log in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `host[:port]` of the registry.
    pub host: String,
    /// Plain HTTP (only for a loopback host).
    pub plain_http: bool,
    /// The password for user `x` (`None` when `FLY_API_TOKEN` is unset: enough to build from
    /// a public base, not to push).
    pub password: Option<SecretString>,
}

impl Settings {
    /// The settings from `FLY_REGISTRY_HOST`, `FKS_REGISTRY_PLAIN_HTTP` and the Fly token (the
    /// CLI takes it from `cli::credentials`, as for the API).
    pub fn from_values(
        host: Option<String>,
        plain_http: Option<String>,
        token: Option<String>,
    ) -> Result<Settings> {
        let setting = |name: &'static str, reason: String| Error::Setting { name, reason };
        let host = host
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_REGISTRY_HOST.to_string());
        if host.contains('/') || host.contains(char::is_whitespace) {
            return Err(setting(
                HOST_ENV,
                format!("{host:?} is not a host[:port] (no scheme, no path)"),
            ));
        }
        let plain_http = match plain_http.as_deref().map(str::trim) {
            None | Some("") | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => return Err(setting(PLAIN_HTTP_ENV, format!("{other:?} is not 1 or 0"))),
        };
        if plain_http && !is_loopback(&host) {
            return Err(setting(
                PLAIN_HTTP_ENV,
                format!("plain http is allowed only for a registry on this machine (localhost, 127.0.0.1, [::1]), not {host}"),
            ));
        }
        // The password is the token without its scheme (reference/fly-runtime.md §3).
        let password = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .map(|t| {
                let bare = t
                    .strip_prefix("FlyV1 ")
                    .or_else(|| t.strip_prefix("Bearer "))
                    .unwrap_or(&t);
                SecretString::new(bare.to_string())
            });
        Ok(Settings {
            host,
            plain_http,
            password,
        })
    }

    /// Basic auth for this registry; an error naming `FLY_API_TOKEN` when it is unset.
    pub fn auth(&self) -> Result<RegistryAuth> {
        let password = self.password.as_ref().ok_or(Error::Setting {
            name: TOKEN_ENV,
            reason: "is not set (nor FLY_ACCESS_TOKEN, nor flyctl's ~/.fly/config.yml): the registry password is the Fly token (`fly auth token`)"
                .to_string(),
        })?;
        Ok(RegistryAuth::Basic(
            REGISTRY_USER.to_string(),
            password.expose().to_string(),
        ))
    }

    /// The credentials for `reference`: this registry's for an image on it (when the token is
    /// set), none elsewhere.
    pub fn auth_for(&self, reference: &Reference) -> RegistryAuth {
        match self.auth() {
            Ok(auth) if reference.registry() == self.host => auth,
            _ => RegistryAuth::Anonymous,
        }
    }

    /// The cluster's image reference: `<host>/<cluster>-cp:<tag>` (reference/fly-runtime.md
    /// §3: registry paths are per app).
    pub fn cluster_reference(&self, cp_app: &str, tag: &str) -> Result<Reference> {
        parse_reference(&format!("{}/{cp_app}:{tag}", self.host))
    }
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses an image reference, naming it when it does not parse.
pub fn parse_reference(text: &str) -> Result<Reference> {
    text.parse::<Reference>()
        .map_err(|source| Error::InvalidReference {
            reference: text.to_string(),
            source,
        })
}

/// An `oci-client` for these settings: rustls, monolithic blob uploads (Fly's registry
/// handles chunked ones by falling back, reference/fly-runtime.md §3; one PUT is simpler).
pub fn client(settings: &Settings) -> Client {
    // reqwest 0.13 is built without a default crypto provider: install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if settings.plain_http {
        ClientProtocol::HttpsExcept(vec![settings.host.clone()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        use_monolithic_push: true,
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(300)),
        user_agent: concat!("fks-bootstrap/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    })
}

/// Maps an `oci-client` error of `op` on `reference` to this module's errors: refused
/// credentials, a missing blob or manifest, and digest mismatches get their own variants.
fn classify(
    op: &'static str,
    reference: &str,
    digest: Option<&str>,
    e: OciDistributionError,
) -> Error {
    let status = match &e {
        OciDistributionError::UnauthorizedError { .. } => Some(401),
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::RequestError(r) => r.status().map(|s| s.as_u16()),
        OciDistributionError::AuthenticationFailure(_) => Some(401),
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().find_map(|err| match err.code {
                OciErrorCode::Unauthorized | OciErrorCode::Denied => Some(401),
                OciErrorCode::BlobUnknown
                | OciErrorCode::ManifestUnknown
                | OciErrorCode::ManifestBlobUnknown
                | OciErrorCode::NameUnknown
                | OciErrorCode::NotFound => Some(404),
                _ => None,
            })
        }
        _ => None,
    };
    if let OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
        expected,
        actual,
    }) = &e
    {
        return Error::DigestMismatch {
            what: format!("{op} {reference}"),
            expected: expected.clone(),
            actual: actual.clone(),
        };
    }
    match status {
        Some(401) | Some(403) => Error::CredentialsRefused {
            registry: reference.split('/').next().unwrap_or(reference).to_string(),
            user: REGISTRY_USER,
        },
        Some(404) => Error::NotFound {
            op,
            reference: reference.to_string(),
            what: digest.map_or_else(|| "manifest".to_string(), |d| format!("blob {d}")),
        },
        _ => Error::Registry {
            op,
            reference: reference.to_string(),
            source: e,
        },
    }
}

/// The base image as pulled: its manifest (single-platform), its digest and its config.
#[derive(Debug, Clone)]
pub struct Base {
    /// The reference given.
    pub reference: Reference,
    /// The platform manifest's digest.
    pub digest: String,
    /// The platform manifest.
    pub manifest: ImageManifest,
    /// The config.
    pub config: ImageConfiguration,
}

/// Pulls `reference`'s manifest (choosing linux/amd64 from an index), checks its config is
/// linux/amd64, and puts every layer into `store` (those already there are not fetched).
pub async fn pull_base(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    store: &Store,
) -> Result<Base> {
    let name = reference.whole();
    let (bytes, digest) = client
        .pull_manifest_raw(reference, auth, spec::ACCEPTED_MANIFESTS)
        .await
        .map_err(|e| classify("pulling the base manifest", &name, None, e))?;
    let (manifest, digest, platform_ref) = match spec::parse_manifest(&name, &bytes)? {
        Pulled::Manifest(m) => (*m, digest, reference.clone()),
        Pulled::Index(index) => {
            let chosen = spec::choose_platform(&name, &index)?;
            let platform_ref = reference.clone_with_digest(chosen.digest().to_string());
            let (bytes, digest) = client
                .pull_manifest_raw(&platform_ref, auth, spec::ACCEPTED_MANIFESTS)
                .await
                .map_err(|e| classify("pulling the base manifest", &name, None, e))?;
            match spec::parse_manifest(&name, &bytes)? {
                Pulled::Manifest(m) => (*m, digest, platform_ref),
                Pulled::Index(_) => {
                    return Err(Error::BadDocument {
                        reference: name,
                        what: "manifest",
                        reason: "the index's linux/amd64 entry is another index".to_string(),
                    })
                }
            }
        }
    };
    let config_digest = manifest.config().digest().to_string();
    let mut config_bytes = Vec::new();
    client
        .pull_blob(&platform_ref, config_digest.as_str(), &mut config_bytes)
        .await
        .map_err(|e| classify("pulling the base config", &name, Some(&config_digest), e))?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| Error::BadDocument {
            reference: name.clone(),
            what: "config",
            reason: e.to_string(),
        })?;
    spec::check_base_platform(&name, &config)?;
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(Error::BadDocument {
            reference: name,
            what: "config",
            reason: format!(
                "{} diff_ids for {} layers",
                config.rootfs().diff_ids().len(),
                manifest.layers().len()
            ),
        });
    }
    for layer in manifest.layers() {
        let digest = layer.digest().to_string();
        if store.has(&digest)? {
            continue;
        }
        let partial = store.partial("base-layer");
        let file = tokio::fs::File::create(partial.path())
            .await
            .map_err(|e| super::io_error("creating", partial.path(), e))?;
        client
            .pull_blob(&platform_ref, digest.as_str(), file)
            .await
            .map_err(|e| classify("pulling a base layer of", &name, Some(&digest), e))?;
        store.commit(partial, &digest)?;
    }
    Ok(Base {
        reference: reference.clone(),
        digest,
        manifest,
        config,
    })
}

/// One blob of the image to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// For progress lines: `base layer 1/1`, `fks-bootstrap layer`, `config`.
    pub what: String,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushReport {
    /// Blobs uploaded.
    pub uploaded_blobs: usize,
    /// Their bytes.
    pub uploaded_bytes: u64,
    /// Blobs the registry already had (or mounted from the base's repository).
    pub skipped_blobs: usize,
}

/// Pushes `blobs` (read from `store`) that `target` lacks, then the manifest under `target`'s
/// tag. Progress per blob goes to stderr: bars on a terminal, a line per blob otherwise.
/// `mount_from` is the base's repository when it is on the same registry (blobs are mounted
/// from it instead of uploaded).
pub async fn push(
    client: &Client,
    settings: &Settings,
    target: &Reference,
    blobs: &[Blob],
    manifest: &[u8],
    store: &Store,
    mount_from: Option<&Reference>,
) -> Result<PushReport> {
    let name = target.whole();
    client
        .store_auth_if_needed(target.resolve_registry(), &settings.auth()?)
        .await;
    let bars = std::io::stderr()
        .is_terminal()
        .then(indicatif::MultiProgress::new);
    let mut report = PushReport::default();
    for blob in blobs {
        let present = client
            .blob_exists(target, &blob.digest)
            .await
            .map_err(|e| classify("checking a blob of", &name, Some(&blob.digest), e))?;
        if present {
            report.skipped_blobs += 1;
            eprintln!(
                "fks-bootstrap: {} {} already in {name}",
                blob.what,
                short(&blob.digest)
            );
            continue;
        }
        if let Some(from) = mount_from {
            if client.mount_blob(target, from, &blob.digest).await.is_ok()
                && client
                    .blob_exists(target, &blob.digest)
                    .await
                    .unwrap_or(false)
            {
                report.skipped_blobs += 1;
                eprintln!(
                    "fks-bootstrap: {} {} mounted from {}",
                    blob.what,
                    short(&blob.digest),
                    from.repository()
                );
                continue;
            }
        }
        upload(client, target, blob, store, bars.as_ref()).await?;
        report.uploaded_blobs += 1;
        report.uploaded_bytes += blob.size;
    }
    let content_type = http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
    client
        .push_manifest_raw(target, manifest.to_vec(), content_type)
        .await
        .map_err(|e| classify("pushing the manifest of", &name, None, e))?;
    Ok(report)
}

async fn upload(
    client: &Client,
    target: &Reference,
    blob: &Blob,
    store: &Store,
    bars: Option<&indicatif::MultiProgress>,
) -> Result<()> {
    let path = store.blob_path(&blob.digest)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| super::io_error("opening", &path, e))?;
    let bar = match bars {
        Some(m) => {
            let bar = m.add(indicatif::ProgressBar::new(blob.size));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(format!("{} {}", blob.what, short(&blob.digest)));
            bar
        }
        None => indicatif::ProgressBar::hidden(),
    };
    let counted = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map(move |chunk| {
        if let Ok(c) = &chunk {
            counted.inc(c.len() as u64);
        }
        chunk.map_err(OciDistributionError::from)
    });
    let name = target.whole();
    client
        .push_blob_stream(target, stream, &blob.digest, Some(blob.size))
        .await
        .map_err(|e| classify("uploading a blob to", &name, Some(&blob.digest), e))?;
    bar.finish();
    if bars.is_none() {
        eprintln!(
            "fks-bootstrap: uploaded {} {} ({} bytes) to {name}",
            blob.what,
            short(&blob.digest),
            blob.size
        );
    }
    Ok(())
}

/// `sha256:0123456789ab` for messages.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// The labels of image `reference` (its config's `config.Labels`; an index is resolved to its
/// linux/amd64 image by the client).
pub async fn labels(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
) -> Result<std::collections::BTreeMap<String, String>> {
    let name = reference.whole();
    let (_, _, config) = client
        .pull_manifest_and_config(reference, auth)
        .await
        .map_err(|e| classify("reading the image config of", &name, None, e))?;
    let config: serde_json::Value =
        serde_json::from_str(&config).map_err(|e| Error::BadDocument {
            reference: name.clone(),
            what: "the config",
            reason: format!("not JSON: {e}"),
        })?;
    Ok(config["config"]["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect())
}

/// Whether the image `reference` (by tag or digest) exists, for callers that skip pushes.
pub async fn manifest_digest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
) -> Result<Option<String>> {
    match client.fetch_manifest_digest(reference, auth).await {
        Ok(d) => Ok(Some(d)),
        Err(e) => match classify("looking up", &reference.whole(), None, e) {
            Error::NotFound { .. } => Ok(None),
            other => Err(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_fly_and_strip_the_token_scheme() {
        let s = Settings::from_values(None, None, Some("FlyV1 fm2_abc,fm2_def".into()))
            .expect("settings");
        assert_eq!(s.host, DEFAULT_REGISTRY_HOST);
        assert!(!s.plain_http);
        assert_eq!(
            s.password.as_ref().map(|p| p.expose()),
            Some("fm2_abc,fm2_def")
        );
        assert!(!format!("{s:?}").contains("fm2_abc"));
        let r = s.cluster_reference("demo-cp", "t1").expect("ref");
        assert_eq!(r.whole(), "registry.fly.io/demo-cp:t1");
    }

    #[test]
    fn plain_http_only_for_a_loopback_registry() {
        let tok = Some("t".to_string());
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "localhost",
        ] {
            let s = Settings::from_values(Some(host.into()), Some("1".into()), tok.clone())
                .expect(host);
            assert!(s.plain_http);
        }
        let e = Settings::from_values(
            Some("registry.fly.io".into()),
            Some("1".into()),
            tok.clone(),
        )
        .expect_err("remote");
        assert!(e.to_string().contains(PLAIN_HTTP_ENV), "{e}");
        let e = Settings::from_values(Some("http://x".into()), None, tok).expect_err("scheme");
        assert!(e.to_string().contains(HOST_ENV), "{e}");
        let s = Settings::from_values(None, None, None).expect("no token: build only");
        let e = s.auth().expect_err("no token to push with");
        assert!(e.to_string().contains(TOKEN_ENV), "{e}");
    }

    #[test]
    fn an_unparsable_reference_is_named() {
        let e = parse_reference("UPPER/Case:tag").expect_err("invalid");
        assert!(e.to_string().contains("UPPER/Case:tag"), "{e}");
    }
}
