//! The image step of `-c` and `-a` (ARCHITECTURE "How `fks-bootstrap -c` flows", steps 2 and
//! 4): which image the cluster's machines run, pinned by digest, and making sure the registry
//! has it before any machine is created.
//!
//! - `IMAGE` set in the config: it wins and is never built; its tag is resolved to a digest
//!   through its registry (unknown or unreachable: an error before anything is touched).
//! - `IMAGE` unset: the cluster's own image, `<registry>/<cluster>-cp:<default tag>`, built
//!   from the config (the tag is content-addressed, `Built::default_tag`) and pushed only when
//!   the registry lacks that tag at that digest; a warm run uploads nothing.
//!
//! - A node group (`-a`) without `IMAGE` runs the image its control plane runs
//!   ([`from_control_plane`]), never one built from the config at hand: k3s agents must not be
//!   newer than their servers (Kubernetes' version skew policy), so a changed `K3S_VERSION`
//!   reaches the servers first (`-c`) and the groups after them.
//!
//! Node groups use the same `<cluster>-cp` path: Fly's registry paths are per app but readable
//! by every app of the same organization (reference/fly-runtime.md §3, "An image under `app-1`
//! can be deployed by `app-2` in the same org"). Whether an app-scoped deploy token may pull
//! another app's repository is not known (reference/fly-runtime.md "Known unknowns" 5).
//!
//! Must not: push anything on a dry run, create a machine (the caller does, only after this
//! returned), or return a tag: the reference returned always carries the manifest digest.

use crate::config::Config;
use crate::fly;

use super::{registry, Request, Settings};

/// What `-c`/`-a` need to find or make the image.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The registry and its credentials.
    pub settings: Settings,
    /// What to build when the config has no `IMAGE` (k3s choice, this binary, the cache).
    pub request: Request,
    /// Look only: build into the local cache, but push nothing and make no app.
    pub dry_run: bool,
}

/// How the image came to be the cluster's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `IMAGE` from the config, resolved to its digest.
    Configured,
    /// The cluster's image was already in the registry: nothing was pushed.
    Present,
    /// The cluster's image was built and pushed now.
    Pushed(registry::PushReport),
    /// Dry run: the image is not in the registry and a real run would push it.
    WouldPush,
    /// A node group's: the image every server of the control plane runs.
    ControlPlane,
}

/// The image the cluster's machines are created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The reference by tag: `IMAGE` as written, or `<registry>/<cluster>-cp:<tag>`.
    pub reference: String,
    /// `sha256:<hex>` of the manifest (or index) the tag names.
    pub digest: String,
    /// `<registry>/<repository>@<digest>`: what goes into `config.image`.
    pub pinned: String,
    /// What happened to get it.
    pub outcome: Outcome,
    /// Whether the control-plane app was created for the push (what was observed before is
    /// then out of date).
    pub made_app: bool,
}

impl std::fmt::Display for Image {
    /// One line for the summary and the dry run: the pinned reference and what was done.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match &self.outcome {
            Outcome::Configured => format!("IMAGE {} from the config", self.reference),
            Outcome::Present => format!("{} was already in the registry", self.reference),
            Outcome::Pushed(r) => format!(
                "built and pushed as {}: {} blob(s) uploaded ({} bytes), {} already there",
                self.reference, r.uploaded_blobs, r.uploaded_bytes, r.skipped_blobs
            ),
            Outcome::WouldPush => format!(
                "not in the registry yet: would be built and pushed as {}",
                self.reference
            ),
            Outcome::ControlPlane => "the image the control plane's servers run".to_string(),
        };
        write!(f, "image {} ({how})", self.pinned)
    }
}

impl Image {
    /// The image as JSON for `--json` output.
    pub fn to_json(&self) -> serde_json::Value {
        let outcome = match &self.outcome {
            Outcome::Configured => "configured",
            Outcome::Present => "present",
            Outcome::Pushed(_) => "pushed",
            Outcome::WouldPush => "would_push",
            Outcome::ControlPlane => "control_plane",
        };
        let mut v = serde_json::json!({
            "reference": self.reference,
            "digest": self.digest,
            "pinned": self.pinned,
            "outcome": outcome,
        });
        if let Outcome::Pushed(report) = &self.outcome {
            v["push"] = serde_json::json!(report);
        }
        v
    }
}

/// The image a node group runs when the config has no `IMAGE`: the pinned image of the
/// control plane's servers (`servers`: the observed machines of `<cluster>-cp` that belong to
/// `cluster`). `Ok(None)` when there is no server to copy from (the plan then refuses the
/// group); an error while the servers disagree (a control-plane roll-out is not finished).
pub fn from_control_plane(cluster: &str, servers: &[fly::Machine]) -> Result<Option<Image>, Error> {
    use crate::contract::meta as metadata;
    let mut images: Vec<(&str, &str)> = servers
        .iter()
        .filter(|m| m.metadata(metadata::CLUSTER) == Some(cluster))
        .filter(|m| {
            !matches!(
                m.state,
                fly::MachineState::Destroying | fly::MachineState::Destroyed
            )
        })
        .filter_map(|m| {
            let image = m.config.as_ref()?.image.as_str();
            Some((m.metadata(metadata::NODE).unwrap_or(m.id.as_str()), image))
        })
        .collect();
    images.sort();
    let Some((_, first)) = images.first().copied() else {
        return Ok(None);
    };
    if let Some((node, other)) = images.iter().find(|(_, i)| *i != first) {
        return Err(Error::ControlPlaneImages {
            first: first.to_string(),
            node: node.to_string(),
            other: other.to_string(),
        });
    }
    let Some((repository, digest)) = first.split_once('@') else {
        return Err(Error::ControlPlaneImages {
            first: first.to_string(),
            node: images[0].0.to_string(),
            other: "(not pinned by digest)".to_string(),
        });
    };
    Ok(Some(Image {
        reference: repository.to_string(),
        digest: digest.to_string(),
        pinned: first.to_string(),
        outcome: Outcome::ControlPlane,
        made_app: false,
    }))
}

/// Why the image step failed; nothing was created on Fly but (for a push) the app.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control plane's servers run different images (or one not pinned by digest).
    #[error("the control plane's servers run different images ({first}; {node}: {other}): finish the control plane first (fks-bootstrap -c), then add node groups, or set IMAGE in the config")]
    ControlPlaneImages {
        first: String,
        node: String,
        other: String,
    },
    /// `IMAGE` was built for another Kubernetes version than `K3S_VERSION` (its label says).
    #[error("IMAGE {reference} runs Kubernetes {image} (its label {label}), but K3S_VERSION is {k3s_version}: build the image of that version (fks-bootstrap image build CLUSTER_DIR --push) and set IMAGE to it, or remove IMAGE so the cluster's own image is built")]
    ImageVersion {
        reference: String,
        label: &'static str,
        image: String,
        k3s_version: String,
    },
    /// `IMAGE` could not be resolved to a digest.
    #[error("resolving IMAGE {reference} through registry {registry}")]
    Resolve {
        registry: String,
        reference: String,
        #[source]
        source: Box<super::Error>,
    },
    /// Building the cluster's image failed.
    #[error("building the node image of cluster {cluster}")]
    Build {
        cluster: String,
        #[source]
        source: Box<super::Error>,
    },
    /// The registry could not say whether it has the image.
    #[error("looking up {reference} in registry {registry}")]
    Lookup {
        registry: String,
        reference: String,
        #[source]
        source: Box<super::Error>,
    },
    /// The app whose registry path the image goes to could not be made.
    #[error("creating app {app}, whose registry path the node image is pushed to")]
    App {
        app: String,
        #[source]
        source: Box<fly::Error>,
    },
    /// The push failed: the tag is pushed last, so no half-pushed image carries it.
    #[error("pushing the node image to registry {registry} as {reference}")]
    Push {
        registry: String,
        reference: String,
        #[source]
        source: Box<super::Error>,
    },
}

impl Error {
    /// Whether this is the user's input to fix (exit 2) rather than a failed operation (1).
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Resolve { source, .. }
            | Error::Build { source, .. }
            | Error::Lookup { source, .. }
            | Error::Push { source, .. } => source.is_usage(),
            Error::ImageVersion { .. } => true,
            Error::App { .. } | Error::ControlPlaneImages { .. } => false,
        }
    }
}

/// `<registry>/<repository>@<digest>` of `reference`.
pub fn pin(reference: &oci_client::Reference, digest: &str) -> String {
    format!(
        "{}/{}@{digest}",
        reference.registry(),
        reference.repository()
    )
}

/// Finds (and unless dry-running, makes) the image of `config`'s machines; see the module
/// header. `fly` creates the control-plane app before a first push when it is missing: the
/// registry path belongs to that app (reference/fly-runtime.md §3). Whether Fly's registry
/// refuses a push to an app that does not exist yet is not documented; flyctl always has the
/// app before it pushes, and so does this.
pub async fn ensure(config: &Config, inputs: &Inputs, fly: &fly::Client) -> Result<Image, Error> {
    let client = registry::client(&inputs.settings);
    if let Some(configured) = &config.image {
        return resolve(configured, &config.k3s_version, &inputs.settings, &client).await;
    }
    let build_error = |source| Error::Build {
        cluster: config.cluster_name.clone(),
        source: Box::new(source),
    };
    let cp_app = config.cp_app();
    if !inputs.dry_run {
        // Fail on a missing token before the build, not after it.
        inputs.settings.auth().map_err(build_error)?;
    }
    eprintln!(
        "fks-bootstrap: building the node image of cluster {} (base {}; a first build compresses fks-bootstrap and k3s, later ones reuse the layer)",
        config.cluster_name, config.node_image_base
    );
    let started = std::time::Instant::now();
    let built = super::build(config, &inputs.request, &inputs.settings, &client)
        .await
        .map_err(build_error)?;
    eprintln!(
        "fks-bootstrap: built {} in {:.1}s",
        built.digest,
        started.elapsed().as_secs_f64()
    );
    let target = inputs
        .settings
        .cluster_reference(&cp_app, &built.default_tag())
        .map_err(build_error)?;
    let registry_name = target.registry().to_string();
    let reference = target.whole();
    let found = registry::manifest_digest(&client, &target, &inputs.settings.auth_for(&target))
        .await
        .map_err(|source| Error::Lookup {
            registry: registry_name.clone(),
            reference: reference.clone(),
            source: Box::new(source),
        })?;
    let image = |outcome, made_app| Image {
        reference: reference.clone(),
        digest: built.digest.clone(),
        pinned: pin(&target, &built.digest),
        outcome,
        made_app,
    };
    // The tag is derived from the digest, so a tag at another digest was put there by someone
    // else: pushed over, as `image build --push` would.
    if found.as_deref() == Some(built.digest.as_str()) {
        eprintln!("fks-bootstrap: node image {reference} is in the registry; nothing to push");
        return Ok(image(Outcome::Present, false));
    }
    if inputs.dry_run {
        return Ok(image(Outcome::WouldPush, false));
    }
    let made_app = ensure_app(fly, config).await?;
    eprintln!(
        "fks-bootstrap: pushing node image {} to {reference}",
        built.digest
    );
    let report = super::push(
        &built,
        &target,
        &inputs.settings,
        &client,
        &inputs.request.cache_dir,
    )
    .await
    .map_err(|source| Error::Push {
        registry: registry_name.clone(),
        reference: reference.clone(),
        source: Box::new(source),
    })?;
    Ok(image(Outcome::Pushed(report), made_app))
}

/// Resolves the configured `IMAGE` to its digest through its own registry (the cluster's
/// credentials only when it is on the cluster's registry), and refuses it when its
/// [`super::LABEL_KUBERNETES_VERSION`] names another Kubernetes version than `k3s_version`
/// (nodes would run, and an upgrade would wait in vain for, the wrong version). An image
/// without that label (not built by fks-bootstrap) is taken as it is; one whose labels cannot
/// be read is too, with a warning.
async fn resolve(
    configured: &str,
    k3s_version: &str,
    settings: &Settings,
    client: &oci_client::Client,
) -> Result<Image, Error> {
    let resolve_error = |registry: String, source: super::Error| Error::Resolve {
        registry,
        reference: configured.to_string(),
        source: Box::new(source),
    };
    let reference = registry::parse_reference(configured)
        .map_err(|e| resolve_error(configured.to_string(), e))?;
    let registry_name = reference.registry().to_string();
    let digest = registry::manifest_digest(client, &reference, &settings.auth_for(&reference))
        .await
        .map_err(|e| resolve_error(registry_name.clone(), e))?
        .ok_or_else(|| {
            resolve_error(
                registry_name.clone(),
                super::Error::NotFound {
                    op: "looking up",
                    reference: reference.whole(),
                    what: "manifest".to_string(),
                },
            )
        })?;
    let pinned_ref = reference.clone_with_digest(digest.clone());
    match registry::labels(client, &pinned_ref, &settings.auth_for(&reference)).await {
        Ok(labels) => {
            let want = crate::plan::skew::kubernetes_version(k3s_version);
            if let Some(image) = labels.get(super::LABEL_KUBERNETES_VERSION) {
                if image != want {
                    return Err(Error::ImageVersion {
                        reference: configured.to_string(),
                        label: super::LABEL_KUBERNETES_VERSION,
                        image: image.clone(),
                        k3s_version: k3s_version.to_string(),
                    });
                }
            }
        }
        Err(e) => eprintln!(
            "fks-bootstrap: warning: could not read the labels of IMAGE {configured} ({}); its Kubernetes version is not checked against K3S_VERSION",
            crate::errors::chain(&e)
        ),
    }
    Ok(Image {
        reference: configured.to_string(),
        pinned: pin(&reference, &digest),
        digest,
        outcome: Outcome::Configured,
        made_app: false,
    })
}

/// Creates the control-plane app when it does not exist (the plan then finds it); true when
/// it did.
async fn ensure_app(fly: &fly::Client, config: &Config) -> Result<bool, Error> {
    let app = config.cp_app();
    let app_error = |source| Error::App {
        app: app.clone(),
        source: Box::new(source),
    };
    match fly.get_app(&app).await {
        Ok(_) => return Ok(false),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(app_error(e)),
    }
    let request = fly::types::CreateAppRequest::new(app.clone(), config.org_name.clone());
    // `create_app` also waits until the new app answers.
    fly.create_app(&request).await.map_err(app_error)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::meta;

    fn server(id: &str, node: &str, cluster: &str, image: &str) -> fly::Machine {
        let metadata = [(meta::CLUSTER, cluster), (meta::NODE, node)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        fly::Machine {
            id: id.into(),
            state: fly::MachineState::Started,
            config: Some(fly::MachineConfig {
                image: image.into(),
                metadata,
                ..fly::MachineConfig::default()
            }),
            ..fly::Machine::default()
        }
    }

    #[test]
    fn a_node_group_runs_the_image_of_its_control_plane() {
        let pinned = "registry.fly.io/demo-cp@sha256:0123";
        let servers = [
            server("m0", "ctrl-0", "demo", pinned),
            server("m1", "ctrl-1", "demo", pinned),
            // Another cluster's machine in the app is not asked.
            server("m9", "ctrl-9", "other", "registry.fly.io/other@sha256:ff"),
        ];
        let image = from_control_plane("demo", &servers)
            .expect("agree")
            .expect("found");
        assert_eq!(image.pinned, pinned);
        assert_eq!(image.reference, "registry.fly.io/demo-cp");
        assert_eq!(image.digest, "sha256:0123");
        assert_eq!(image.outcome, Outcome::ControlPlane);
        assert!(image
            .to_string()
            .contains("the control plane's servers run"));
        assert_eq!(from_control_plane("demo", &[]).expect("no servers"), None);
    }

    #[test]
    fn servers_on_different_images_stop_a_node_group() {
        let servers = [
            server("m0", "ctrl-0", "demo", "registry.fly.io/demo-cp@sha256:01"),
            server("m1", "ctrl-1", "demo", "registry.fly.io/demo-cp@sha256:02"),
        ];
        let e = from_control_plane("demo", &servers).expect_err("they differ");
        let text = e.to_string();
        assert!(
            text.contains("ctrl-1: registry.fly.io/demo-cp@sha256:02"),
            "{text}"
        );
        assert!(text.contains("fks-bootstrap -c"), "{text}");
        let tagged = [server(
            "m0",
            "ctrl-0",
            "demo",
            "registry.fly.io/demo-cp:latest",
        )];
        assert!(from_control_plane("demo", &tagged)
            .expect_err("not pinned")
            .to_string()
            .contains("not pinned by digest"));
    }

    #[test]
    fn pinned_references_carry_the_digest_and_drop_the_tag() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = registry::parse_reference("127.0.0.1:5000/lab-cp:fks-0123").expect("ref");
        assert_eq!(pin(&r, &d), format!("127.0.0.1:5000/lab-cp@{d}"));
        let r = registry::parse_reference("registry.fly.io/demo-cp:latest").expect("ref");
        assert_eq!(pin(&r, &d), format!("registry.fly.io/demo-cp@{d}"));
    }

    #[test]
    fn the_summary_line_names_the_pinned_image_and_what_was_done() {
        let image = Image {
            reference: "registry.fly.io/demo-cp:fks-0123".into(),
            digest: "sha256:0123".into(),
            pinned: "registry.fly.io/demo-cp@sha256:0123".into(),
            outcome: Outcome::Pushed(registry::PushReport {
                uploaded_blobs: 2,
                uploaded_bytes: 10,
                skipped_blobs: 1,
            }),
            made_app: true,
        };
        assert_eq!(
            image.to_string(),
            "image registry.fly.io/demo-cp@sha256:0123 (built and pushed as registry.fly.io/demo-cp:fks-0123: 2 blob(s) uploaded (10 bytes), 1 already there)"
        );
        assert_eq!(image.to_json()["push"]["uploaded_blobs"], 2);
        let dry = Image {
            outcome: Outcome::WouldPush,
            ..image
        };
        assert!(dry.to_string().contains("would be built and pushed"));
        assert_eq!(dry.to_json()["outcome"], "would_push");
    }
}
