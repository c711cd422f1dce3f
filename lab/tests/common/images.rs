//! Images for guest tests, pushed to a lab registry the way real images get there:
//! - the lab's Debian base (`scripts/base-image.sh`: mmdebstrap, cached per day; with kubectl
//!   and etcd for the stand-in), pushed with skopeo as `fks/debian:trixie`;
//! - the node image, built and pushed by the real product command
//!   `fks-bootstrap image build CLUSTER_DIR --push --k3s-source file <k3s-standin> --k3s-standin`
//!   on that base (reproducible and cached, so a second push in the same process only checks
//!   blobs);
//! - small test images: the base plus one layer of given files and an exec config, written
//!   with the product's own layer and store code and pushed with its registry client.
//!
//! Each returns the image pinned by digest (`HOST/NAME@sha256:...`), as machines should use it.
//! Self-contained (benches include it with `#[path]`); the tests' `common` wraps it with the
//! workspace binaries.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use fks_bootstrap::image::{layer, registry, store::Store};

/// The workspace root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ has a parent")
        .to_path_buf()
}

/// The base's repository and tag in a lab registry.
pub const BASE_REPO: &str = "fks/debian";
pub const BASE_TAG: &str = "trixie";

/// `scripts/base-image.sh --plain-http HOST/fks/debian:trixie` (cached build, then a skopeo
/// push); returns `HOST/fks/debian@<digest>`. The token goes through the environment only.
pub fn push_debian_base(host: &str, token: &str) -> String {
    push_debian_base_layout(host, token).0
}

/// [`push_debian_base`], also giving the base's OCI layout directory (the script's cache).
fn push_debian_base_layout(host: &str, token: &str) -> (String, std::path::PathBuf) {
    type Pushed = HashMap<String, (String, std::path::PathBuf)>;
    static PUSHED: Mutex<Option<Pushed>> = Mutex::new(None);
    let mut pushed = PUSHED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = pushed.get_or_insert_with(HashMap::new).get(host) {
        return r.clone();
    }
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/base-image.sh"))
        .args([
            "--plain-http",
            "--print-layout",
            &format!("{host}/{BASE_REPO}:{BASE_TAG}"),
        ])
        .env("REGISTRY_TOKEN", token)
        .output()
        .expect("running scripts/base-image.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "base-image.sh failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = stdout.lines();
    let (layout, digest) = (
        lines.next().unwrap_or_default().trim().to_string(),
        lines.next().unwrap_or_default().trim().to_string(),
    );
    assert!(
        digest.starts_with("sha256:"),
        "base-image.sh printed {stdout:?}"
    );
    let got = (
        format!("{host}/{BASE_REPO}@{digest}"),
        std::path::PathBuf::from(layout),
    );
    pushed
        .get_or_insert_with(HashMap::new)
        .insert(host.to_string(), got.clone());
    got
}

/// A blob of an OCI layout, by digest.
fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).expect("layout blob")
}

/// The node image of `clusters/lab`, built and pushed to `host` by the real
/// `fks-bootstrap image build --push` (the binary `fks_bootstrap`, which also goes into the
/// image) with `k3s_standin` as its k3s, on the lab's Debian base; returns the pinned
/// reference it printed (`HOST/lab-cp@sha256:...`). Once per registry per process.
pub fn push_node_image(
    host: &str,
    token: &str,
    fks_bootstrap: &Path,
    k3s_standin: &Path,
) -> String {
    static PUSHED: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);
    let base = push_debian_base(host, token);
    let mut pushed = PUSHED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = pushed.get_or_insert_with(HashMap::new).get(host) {
        return r.clone();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = std::fs::read_to_string(repo_root().join("clusters/lab/config"))
        .expect("clusters/lab/config");
    std::fs::write(
        dir.path().join("config"),
        format!("{config}\nNODE_IMAGE_BASE={base}\n"),
    )
    .expect("writing the cluster config");
    let out = Command::new(fks_bootstrap)
        .args(["image", "build"])
        .arg(dir.path())
        .args(["--push", "--k3s-source", "file"])
        .arg(k3s_standin)
        .arg("--k3s-standin")
        .env("FLY_API_TOKEN", token)
        .env("FLY_REGISTRY_HOST", host)
        .env("FKS_REGISTRY_PLAIN_HTTP", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("running fks-bootstrap image build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fks-bootstrap image build --push failed: {stderr}"
    );
    let pinned = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        pinned.starts_with(&format!("{host}/")) && pinned.contains("@sha256:"),
        "image build printed {pinned:?}; stderr: {stderr}"
    );
    pushed
        .get_or_insert_with(HashMap::new)
        .insert(host.to_string(), pinned.clone());
    pinned
}

/// Replaces the `IMAGE=` line of a cluster config text with `image`.
pub fn with_image(config: &str, image: &str) -> String {
    let mut out: Vec<String> = config
        .lines()
        .filter(|l| !l.trim_start().starts_with("IMAGE="))
        .map(str::to_string)
        .collect();
    out.push(format!("IMAGE={image}"));
    out.join("\n") + "\n"
}

/// One file of a test image's layer: path inside the image (relative), mode, contents.
pub type File<'a> = (&'a str, u32, &'a [u8]);

/// Pushes `HOST/<name>:1`: the lab's Debian base plus one layer of `files`, with `exec` (the
/// image config's `config` object: Entrypoint, Cmd, Env, WorkingDir, User) merged over the
/// base's. Returns it pinned by digest.
pub async fn push_test_image(
    host: &str,
    token: &str,
    name: &str,
    files: &[File<'_>],
    exec: serde_json::Value,
) -> String {
    let (h, t) = (host.to_string(), token.to_string());
    let (base, layout) = tokio::task::spawn_blocking(move || push_debian_base_layout(&h, &t))
        .await
        .expect("base push thread");
    let settings =
        registry::Settings::from_values(Some(host.into()), Some("1".into()), Some(token.into()))
            .expect("registry settings");
    let client = registry::client(&settings);
    let base_ref = registry::parse_reference(&base).expect("base reference");
    let base_digest = base.rsplit_once('@').expect("pinned base").1;
    let base_manifest: serde_json::Value =
        serde_json::from_slice(&layout_blob(&layout, base_digest)).expect("base manifest");
    let base_config = layout_blob(
        &layout,
        base_manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    );
    let base_layers: Vec<(String, String, u64)> = base_manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().expect("media type").to_string(),
                l["digest"].as_str().expect("digest").to_string(),
                l["size"].as_u64().expect("size"),
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let partial = store.partial("layer");
    let file = std::fs::File::create(partial.path()).expect("layer file");
    let entries: Vec<layer::Entry> = files
        .iter()
        .map(|(path, mode, bytes)| layer::Entry {
            path: path.to_string(),
            mode: *mode,
            contents: layer::Contents::Bytes(bytes.to_vec()),
        })
        .collect();
    let written = layer::write(&entries, file).expect("writing the layer");
    store.commit(partial, &written.digest).expect("commit");
    let mut config: serde_json::Value = serde_json::from_slice(&base_config).expect("base config");
    let exec_obj = config["config"].as_object_mut().expect("base exec config");
    for (k, v) in exec.as_object().expect("exec is an object") {
        exec_obj.insert(k.clone(), v.clone());
    }
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("diff_ids")
        .push(written.diff_id.clone().into());
    let config_bytes = serde_json::to_vec(&config).expect("config json");
    let config_digest = store.put(&config_bytes).expect("config blob");
    let mut layers: Vec<serde_json::Value> = base_layers
        .iter()
        .map(|(media_type, digest, size)| serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}))
        .collect();
    layers.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": written.digest,
        "size": written.size,
    }));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
        "layers": layers,
    }))
    .expect("manifest json");
    let manifest_digest = store.put(&manifest).expect("manifest blob");
    let target = registry::parse_reference(&format!("{host}/{name}:1")).expect("target");
    let mut blobs: Vec<registry::Blob> = base_layers
        .iter()
        .map(|(_, digest, size)| registry::Blob {
            digest: digest.clone(),
            size: *size,
            what: "base layer".into(),
        })
        .collect();
    blobs.push(registry::Blob {
        digest: written.digest.clone(),
        size: written.size,
        what: "test layer".into(),
    });
    blobs.push(registry::Blob {
        digest: config_digest,
        size: config_bytes.len() as u64,
        what: "config".into(),
    });
    registry::push(
        &client,
        &settings,
        &target,
        &blobs,
        &manifest,
        &store,
        Some(&base_ref),
    )
    .await
    .expect("pushing the test image");
    format!("{host}/{name}@{manifest_digest}")
}

/// Pushes a one-layer linux/`arch` image (just `etc/hostname`) to `dest`
/// (`host/repo:tag` of a plain-http registry with user `x` and password `token`): written with
/// the product's own layer and layout code into `layout`, copied in by skopeo (Debian's, a
/// third-party client). Docker Hub cannot be reached from tests, so this stands in for a base
/// image. Returns the layer's digest.
pub fn push_tiny_image(layout: &Path, dest: &str, token: &str, arch: &str) -> String {
    let store = Store::open(layout).expect("layout");
    let partial = store.partial("layer");
    let file = std::fs::File::create(partial.path()).expect("create");
    let written = layer::write(
        &[layer::Entry {
            path: "etc/hostname".into(),
            mode: 0o644,
            contents: layer::Contents::Bytes(b"tiny\n".to_vec()),
        }],
        file,
    )
    .expect("layer");
    store.commit(partial, &written.digest).expect("commit");
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [written.diff_id]},
    })
    .to_string();
    let config_digest = store.put(config.as_bytes()).expect("config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": written.digest, "size": written.size}],
    })
    .to_string();
    let manifest_digest = store.put(manifest.as_bytes()).expect("manifest");
    store
        .tag("tiny", &manifest_digest, manifest.len() as u64)
        .expect("tag");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--dest-creds",
            &format!("x:{token}"),
            "--dest-tls-verify=false",
            &format!("oci:{}:tiny", layout.display()),
            &format!("docker://{dest}"),
        ])
        .output()
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    written.digest
}
