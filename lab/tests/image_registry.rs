//! The node image against the lab's real registry (Debian's docker-registry): the real
//! `fks-bootstrap image build --push` pushes to it, `skopeo` (a third-party client, Debian's
//! package) inspects and copies what was pushed, and bad input gets its error and exit code.
//!
//! Docker Hub cannot be reached from here, so each test first pushes a tiny one-layer base
//! image (written with the product's own layer and layout code, copied in by skopeo) and points
//! `NODE_IMAGE_BASE` at it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fks_lab::registry::Registry;

const TOKEN: &str = "lab-registry-token";
const STANDIN_LINE: &str = "k3s-standin version v1.33.7+k3s-standin (stand-in for k3s, not k3s)";

/// A tool the test needs (installed by scripts/setup.sh test).
fn need(program: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    assert!(
        found,
        "{program} is not installed: run scripts/setup.sh test (it installs Debian's {})",
        if program == "skopeo" {
            "skopeo"
        } else {
            "docker-registry"
        }
    );
}

struct Env {
    dir: tempfile::TempDir,
    registry: Registry,
}

impl Env {
    async fn start() -> Env {
        need("docker-registry");
        need("skopeo");
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::start(&dir.path().join("state"), TOKEN)
            .await
            .expect("registry starts");
        Env { dir, registry }
    }

    fn host(&self) -> String {
        self.registry.host()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Pushes a one-layer base (`etc/hostname`) for `arch` as `base/tiny:<tag>`; returns its
    /// layer digest.
    fn push_base(&self, arch: &str, tag: &str) -> String {
        common::push_tiny_image(
            &self.path(&format!("base-{arch}")),
            &format!("{}/base/tiny:{tag}", self.host()),
            TOKEN,
            arch,
        )
    }

    /// A cluster dir whose NODE_IMAGE_BASE is `base`.
    fn cluster(&self, base: &str) -> PathBuf {
        let dir = self.path("cluster");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let lab = std::fs::read_to_string(common::repo_root().join("clusters/lab/config"))
            .expect("clusters/lab/config");
        std::fs::write(
            dir.join("config"),
            format!("{lab}\nNODE_IMAGE_BASE={base}\n"),
        )
        .expect("config");
        dir
    }

    /// A fake k3s-standin (a script answering `--version` as the stand-in does).
    fn standin(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path("k3s-standin");
        std::fs::write(&p, format!("#!/bin/sh\necho '{STANDIN_LINE}'\n")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    /// Runs `fks-bootstrap image build <cluster> <args>` with this registry's settings, the
    /// token `token` and the cache `cache`.
    fn build(&self, cluster: &Path, token: &str, cache: &str, args: &[&str]) -> Output {
        Command::new(common::fks_bootstrap_binary())
            .arg("image")
            .arg("build")
            .arg(cluster)
            .args(args)
            .env("FLY_API_TOKEN", token)
            .env("FLY_REGISTRY_HOST", self.host())
            .env("FKS_REGISTRY_PLAIN_HTTP", "1")
            .env("XDG_CACHE_HOME", self.path(cache))
            .env_remove("RUST_LOG")
            .output()
            .expect("running fks-bootstrap")
    }

    /// The blob file of `digest` in the registry's storage.
    fn stored_blob(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.registry
            .storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("running skopeo")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn node_image_round_trip_through_the_lab_registry() {
    let env = Env::start().await;
    env.push_base("amd64", "1");
    let cluster = env.cluster(&format!("{}/base/tiny:1", env.host()));
    let standin = env.standin();
    let args = [
        "--push",
        "--tag",
        "t1",
        "--k3s-source",
        "file",
        standin.to_str().expect("utf8"),
        "--k3s-standin",
        "--json",
    ];
    let first = env.build(&cluster, TOKEN, "cache", &args);
    assert!(first.status.success(), "build: {}", text(&first.stderr));
    assert!(text(&first.stderr).contains("k3s-standin, a test double, NOT k3s"));
    let first = json(&first);
    let digest = first["digest"].as_str().expect("digest").to_string();
    assert_eq!(first["push"]["uploaded_blobs"], 2, "{first}"); // node layer + config; base mounted

    // skopeo sees the entrypoint, the labels and the digest.
    let creds = format!("x:{TOKEN}");
    let reference = format!("docker://{}/lab-cp:t1", env.host());
    let inspect = |extra: &[&str]| {
        let mut a = vec!["inspect", "--creds", &creds, "--tls-verify=false"];
        a.extend_from_slice(extra);
        a.push(&reference);
        let out = skopeo(&a);
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            text(&out.stderr)
        );
        json(&out)
    };
    let info = inspect(&[]);
    assert_eq!(info["Digest"], digest.as_str());
    assert_eq!(info["Architecture"], "amd64");
    let labels = &info["Labels"];
    assert!(labels["fks-bootstrap.k3s"]
        .as_str()
        .expect("k3s label")
        .starts_with("stand-in: k3s-standin v1.33.7+k3s-standin, a test double, not k3s"));
    assert_eq!(labels["fks-bootstrap.version"], env!("CARGO_PKG_VERSION"));
    assert!(
        labels.get("fks-bootstrap.k3s.version").is_none(),
        "{labels}"
    );
    assert_eq!(info["Layers"].as_array().expect("layers").len(), 2);
    let config = inspect(&["--config"]);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/fks-bootstrap", "node", "init"])
    );
    assert!(config["config"].get("Cmd").is_none(), "{config}");
    assert!(config.get("created").is_none(), "{config}");

    // skopeo copies it out, verifying every blob against its digest.
    let copy = env.path("copy");
    let out = skopeo(&[
        "copy",
        "--src-creds",
        &creds,
        "--src-tls-verify=false",
        &reference,
        &format!("oci:{}:copied", copy.display()),
    ]);
    assert!(out.status.success(), "skopeo copy: {}", text(&out.stderr));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("index.json")).expect("index"))
            .expect("json");
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());

    // Same inputs, another cache: the same digest; nothing left to upload.
    let again = env.build(&cluster, TOKEN, "cache2", &args);
    assert!(again.status.success(), "rebuild: {}", text(&again.stderr));
    let again = json(&again);
    assert_eq!(again["digest"], digest.as_str());
    assert_eq!(again["push"]["uploaded_blobs"], 0, "{again}");
    assert_eq!(again["push"]["uploaded_bytes"], 0, "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_refused_with_exit_1() {
    let env = Env::start().await;
    env.push_base("amd64", "1");
    let cluster = env.cluster(&format!("{}/base/tiny:1", env.host()));
    let standin = env.standin();
    let out = env.build(
        &cluster,
        "not-the-token",
        "cache",
        &[
            "--push",
            "--k3s-source",
            "file",
            standin.to_str().expect("utf8"),
            "--k3s-standin",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "registry {} refused the credentials of user \"x\"",
            env.host()
        )),
        "{err}"
    );
    assert!(
        !err.contains("not-the-token"),
        "the token is never printed: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_for_another_architecture_is_refused_with_exit_2() {
    let env = Env::start().await;
    env.push_base("arm64", "arm");
    let cluster = env.cluster(&format!("{}/base/tiny:arm", env.host()));
    let standin = env.standin();
    let out = env.build(
        &cluster,
        TOKEN,
        "cache",
        &[
            "--k3s-source",
            "file",
            standin.to_str().expect("utf8"),
            "--k3s-standin",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("is not for linux/amd64 (it offers linux/arm64)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_corrupted_base_blob_fails_and_no_tag_is_pushed() {
    let env = Env::start().await;
    let layer_digest = env.push_base("amd64", "1");
    let cluster = env.cluster(&format!("{}/base/tiny:1", env.host()));
    let standin = env.standin();
    let standin = standin.to_str().expect("utf8");
    let args = [
        "--push",
        "--tag",
        "broken",
        "--k3s-source",
        "file",
        standin,
        "--k3s-standin",
    ];
    let blob = env.stored_blob(&layer_digest);

    std::fs::write(&blob, b"not the layer").expect("corrupt the stored layer");
    let out = env.build(&cluster, TOKEN, "cache-a", &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("digest mismatch"), "{err}");

    std::fs::remove_file(&blob).expect("remove the stored layer");
    let out = env.build(&cluster, TOKEN, "cache-b", &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("has no blob {layer_digest}")),
        "{err}"
    );

    // Neither attempt left the tag behind.
    let out = skopeo(&[
        "inspect",
        "--creds",
        &format!("x:{TOKEN}"),
        "--tls-verify=false",
        &format!("docker://{}/lab-cp:broken", env.host()),
    ]);
    assert!(
        !out.status.success(),
        "the tag must not exist: {}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_references_and_k3s_checksums_are_named() {
    let env = Env::start().await;
    let cluster = env.cluster("Not A/Reference");
    let standin = env.standin();
    let out = env.build(
        &cluster,
        TOKEN,
        "cache",
        &[
            "--k3s-source",
            "file",
            standin.to_str().expect("utf8"),
            "--k3s-standin",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("NODE_IMAGE_BASE"),
        "{}",
        text(&out.stderr)
    );

    // An airgap dir whose checksum file disagrees with the binary: exit 1, both hashes named.
    let cluster = env.cluster(&format!("{}/base/tiny:1", env.host()));
    let airgap = env.path("airgap");
    std::fs::create_dir_all(&airgap).expect("mkdir");
    std::fs::write(airgap.join("k3s"), b"not k3s").expect("k3s");
    std::fs::write(
        airgap.join("sha256sum-amd64.txt"),
        format!("{}  k3s\n", "a".repeat(64)),
    )
    .expect("sums");
    let out = env.build(
        &cluster,
        TOKEN,
        "cache",
        &["--k3s-source", "airgap", airgap.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&"a".repeat(64)) && err.contains("sha256 of"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_keeps_its_port_and_images_across_a_restart() {
    let env = Env::start().await;
    env.push_base("amd64", "1");
    let host = env.host();
    let Env { dir, registry } = env;
    registry.stop().await;
    let state = dir.path().join("state");
    assert_eq!(
        fks_lab::registry::host(&state).as_deref(),
        Some(host.as_str())
    );
    let again = Registry::start(&state, TOKEN).await.expect("restart");
    assert_eq!(again.host(), host);
    let out = skopeo(&[
        "inspect",
        "--creds",
        &format!("x:{TOKEN}"),
        "--tls-verify=false",
        &format!("docker://{host}/base/tiny:1"),
    ]);
    assert!(out.status.success(), "after restart: {}", text(&out.stderr));
    let lines = fks_lab::registry::env_lines(&state).expect("env lines");
    assert!(
        lines.contains(&format!("FLY_REGISTRY_HOST={host}")),
        "{lines}"
    );
    again.stop().await;
}
