//! Pure assembly of the node image's OCI documents with `oci-spec` types: choosing the base's
//! platform from an index, the new image config (the base's, plus the added layer's diff id,
//! the entrypoint and the labels), the manifest, and their canonical bytes.
//!
//! Pure: values in, values out; no I/O, no clock. The config carries no `created` time, so
//! the same inputs give the same bytes and so the same digests.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{
    Arch, Descriptor, History, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder,
    MediaType, Os,
};
use serde::Serialize;

use super::{Error, Result};

/// The node image's OS.
pub const TARGET_OS: &str = "linux";
/// The node image's architecture: Fly runs linux/amd64 machines only (reference/fly-runtime.md
/// §2: flyctl forces `platform=linux/amd64`, "Fly.io only supports linux/amd64").
pub const TARGET_ARCH: &str = "amd64";

/// The entrypoint of every machine of a cluster (ARCHITECTURE "Programs").
pub const ENTRYPOINT: [&str; 3] = ["/usr/local/bin/fks-bootstrap", "node", "init"];

/// Docker's gzip layer type; the same bytes are an OCI gzip layer.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The media types accepted when the base's manifest is pulled.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// What a pulled manifest document is.
#[derive(Debug)]
pub enum Pulled {
    /// A single-platform image manifest.
    Manifest(Box<ImageManifest>),
    /// A multi-platform index (or Docker manifest list).
    Index(Box<ImageIndex>),
}

/// Reads a manifest or index (OCI or Docker v2s2, told apart by `mediaType`, else by shape).
pub fn parse_manifest(reference: &str, bytes: &[u8]) -> Result<Pulled> {
    let bad = |reason: String| Error::BadDocument {
        reference: reference.to_string(),
        what: "manifest",
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let media_type = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or("");
    let is_index = media_type.contains("index") || media_type.contains("manifest.list") || {
        media_type.is_empty() && value.get("manifests").is_some()
    };
    if is_index {
        serde_json::from_value(value)
            .map(|i| Pulled::Index(Box::new(i)))
            .map_err(|e| bad(e.to_string()))
    } else {
        serde_json::from_value(value)
            .map(|m| Pulled::Manifest(Box::new(m)))
            .map_err(|e| bad(e.to_string()))
    }
}

/// The index entry for linux/amd64, or the platforms the index does offer.
pub fn choose_platform(reference: &str, index: &ImageIndex) -> Result<Descriptor> {
    let wanted = |d: &&Descriptor| {
        d.platform().as_ref().is_some_and(|p| {
            p.os() == &Os::from(TARGET_OS) && p.architecture() == &Arch::from(TARGET_ARCH)
        })
    };
    if let Some(d) = index.manifests().iter().find(wanted) {
        return Ok(d.clone());
    }
    let found = index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| format!("{}/{}", p.os(), p.architecture()))
        .collect();
    Err(Error::BaseArch {
        reference: reference.to_string(),
        found,
    })
}

/// Checks that a base config is for linux/amd64.
pub fn check_base_platform(reference: &str, config: &ImageConfiguration) -> Result<()> {
    if config.os() == &Os::from(TARGET_OS) && config.architecture() == &Arch::from(TARGET_ARCH) {
        return Ok(());
    }
    Err(Error::BaseArch {
        reference: reference.to_string(),
        found: vec![format!("{}/{}", config.os(), config.architecture())],
    })
}

/// The media type the node image's manifest gives a base layer: Docker's gzip type becomes
/// OCI's (the bytes are the same), OCI types stay; anything else is refused.
pub fn layer_media_type(reference: &str, given: &MediaType) -> Result<MediaType> {
    match given {
        MediaType::ImageLayerGzip | MediaType::ImageLayer | MediaType::ImageLayerZstd => {
            Ok(given.clone())
        }
        MediaType::Other(s) if s == DOCKER_LAYER_GZIP => Ok(MediaType::ImageLayerGzip),
        other => Err(Error::BadDocument {
            reference: reference.to_string(),
            what: "manifest",
            reason: format!("layer media type {other} is not a tar or tar+gzip/zstd layer"),
        }),
    }
}

/// The node image's config: the base's, with `layer_diff_id` appended to the root filesystem,
/// the entrypoint set and the base's Cmd cleared (it would become arguments of `node init`),
/// `labels` added over the base's, one history entry for the layer, and no `created`.
pub fn node_config(
    base: &ImageConfiguration,
    layer_diff_id: &str,
    labels: &BTreeMap<String, String>,
) -> ImageConfiguration {
    let mut config = base.clone();
    config.set_created(None);
    config.set_author(None);
    let mut run = config.config().clone().unwrap_or_default();
    run.set_entrypoint(Some(ENTRYPOINT.iter().map(|s| s.to_string()).collect()));
    run.set_cmd(None);
    let mut all: HashMap<String, String> = run.labels().clone().unwrap_or_default();
    for (k, v) in labels {
        all.insert(k.clone(), v.clone());
    }
    run.set_labels(Some(all));
    config.set_config(Some(run));
    config
        .rootfs_mut()
        .diff_ids_mut()
        .push(layer_diff_id.to_string());
    let mut history = config.history().clone().unwrap_or_default();
    let mut entry = History::default();
    entry.set_created_by(Some("fks-bootstrap image build".to_string()));
    entry.set_comment(Some(
        "fks-bootstrap, k3s and CA certificates (see the labels)".to_string(),
    ));
    // Drop the base's history times too: they are facts about the base, kept in its own
    // config, and omitting them keeps this document free of timestamps.
    for h in &mut history {
        h.set_created(None);
    }
    history.push(entry);
    config.set_history(Some(history));
    config
}

/// The node image's manifest: `config` and `layers` in order, the base named in annotations.
pub fn manifest(
    config: Descriptor,
    layers: Vec<Descriptor>,
    annotations: &BTreeMap<String, String>,
) -> Result<ImageManifest> {
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .annotations(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        )
        .build()
        .map_err(|e| Error::BadDocument {
            reference: "(node image)".to_string(),
            what: "manifest",
            reason: e.to_string(),
        })
}

/// JSON with every object's keys sorted and no insignificant whitespace, so that the same
/// value gives the same bytes however its maps were built.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    fn sort(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.sort_keys();
                map.values_mut().for_each(sort);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(sort),
            _ => {}
        }
    }
    let to_err = |e: serde_json::Error| Error::BadDocument {
        reference: "(node image)".to_string(),
        what: "json",
        reason: e.to_string(),
    };
    let mut v = serde_json::to_value(value).map_err(to_err)?;
    sort(&mut v);
    serde_json::to_vec(&v).map_err(to_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_config() -> ImageConfiguration {
        serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z",
                "config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                          "Cmd":["bash"],"Labels":{"base":"yes"}},
                "rootfs":{"type":"layers","diff_ids":["sha256:aaaa"]},
                "history":[{"created":"2026-01-01T00:00:00Z","created_by":"debian"}]}"#,
        )
        .expect("base config")
    }

    fn labels() -> BTreeMap<String, String> {
        [("b", "2"), ("a", "1"), ("c", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn node_config_sets_entrypoint_clears_cmd_appends_the_layer_and_has_no_time() {
        let c = node_config(&base_config(), "sha256:bbbb", &labels());
        let run = c.config().clone().expect("config");
        assert_eq!(
            run.entrypoint().clone().expect("entrypoint"),
            ENTRYPOINT.to_vec()
        );
        assert_eq!(run.cmd(), &None);
        assert_eq!(run.env().clone().expect("env").len(), 1);
        let l = run.labels().clone().expect("labels");
        assert_eq!(l["base"], "yes");
        assert_eq!(l["a"], "1");
        assert_eq!(c.rootfs().diff_ids(), &vec!["sha256:aaaa", "sha256:bbbb"]);
        let text = String::from_utf8(canonical_json(&c).expect("json")).expect("utf8");
        assert!(!text.contains("2026"), "{text}");
        assert!(!text.contains("\"created\""), "{text}");
    }

    #[test]
    fn canonical_json_is_the_same_for_maps_built_in_any_order() {
        let a = node_config(&base_config(), "sha256:bbbb", &labels());
        let mut reversed = BTreeMap::new();
        for (k, v) in labels().into_iter().rev() {
            reversed.insert(k, v);
        }
        let b = node_config(&base_config(), "sha256:bbbb", &reversed);
        // Many runs: HashMap order differs between instances.
        for _ in 0..20 {
            assert_eq!(
                canonical_json(&a).expect("a"),
                canonical_json(&b.clone()).expect("b")
            );
        }
    }

    #[test]
    fn an_index_without_linux_amd64_is_refused_naming_what_it_has() {
        let index: ImageIndex = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
                {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
                 "digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000",
                 "platform":{"os":"linux","architecture":"arm64"}}]}"#,
        )
        .expect("index");
        let e = choose_platform("x/y:z", &index).expect_err("no amd64");
        assert!(
            e.to_string().contains("linux/arm64") && e.to_string().contains("x/y:z"),
            "{e}"
        );
        let Pulled::Index(_) =
            parse_manifest("x", &canonical_json(&index).expect("json")).expect("parses")
        else {
            panic!("an index")
        };
    }

    #[test]
    fn a_base_config_for_another_arch_is_refused() {
        let mut c = base_config();
        c.set_architecture(Arch::ARM64);
        let e = check_base_platform("b:1", &c).expect_err("arm64");
        assert!(e.to_string().contains("linux/arm64"), "{e}");
        assert!(check_base_platform("b:1", &base_config()).is_ok());
    }

    #[test]
    fn docker_gzip_layers_become_oci_gzip_layers() {
        let docker = MediaType::Other(DOCKER_LAYER_GZIP.to_string());
        assert_eq!(
            layer_media_type("b", &docker).expect("ok"),
            MediaType::ImageLayerGzip
        );
        assert!(layer_media_type("b", &MediaType::ImageConfig).is_err());
    }
}
