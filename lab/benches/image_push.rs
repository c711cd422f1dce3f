//! Issue 9's figures for the node image: build time and pushed bytes against the lab's real
//! registry (Debian's docker-registry), and a second push with nothing changed (how many
//! blobs it uploads, target none, and how long it takes, target under 1 s).
//!
//! The library is driven as `fks-bootstrap image build --push` drives it (`image::build`,
//! `image::push`, one `oci-client` for both), in this optimised bench binary. Inputs:
//! - the fks-bootstrap binary put into the image: this workspace's `target/debug/fks-bootstrap`
//!   (built first with `cargo build -p fks-bootstrap`; a debug build, so larger than a
//!   release one; its size is printed);
//! - k3s: `target/debug/k3s-standin`, declared as the stand-in (built the same way);
//! - the base: a one-layer image pushed to the lab registry by skopeo first (Docker Hub cannot
//!   be reached here), so the figures are the added layer's.
//!
//! Cases: cold (empty cache: the layer is written and compressed), warm (the same inputs, the
//! layer reused from the cache; the binaries are hashed again), and the second push.
//! Run: `cargo bench -p fks-lab --bench image_push`. It asserts nothing about speed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fks_bootstrap::image::{self, k3s, registry};
use fks_lab::registry::Registry;

#[path = "../tests/common/images.rs"]
mod images;

const TOKEN: &str = "image-push-bench";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ has a parent")
        .to_path_buf()
}

/// `cargo build -p <package>` (debug) and the binary's path.
fn debug_binary(package: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR" {
            cmd.env_remove(&*key);
        }
    }
    let status = cmd
        .args(["build", "-p", package, "--bin", package])
        .current_dir(repo_root())
        .status()
        .expect("cargo build");
    assert!(status.success(), "building {package}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug").join(package)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

#[tokio::main]
async fn main() {
    let fks = debug_binary("fks-bootstrap");
    let standin = debug_binary("k3s-standin");
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Registry::start(&dir.path().join("state"), TOKEN)
        .await
        .expect("the lab registry (scripts/setup.sh test installs docker-registry)");
    let host = lab.host();
    // A one-layer linux/amd64 base, copied in by skopeo as `<host>/base/tiny:1`.
    images::push_tiny_image(
        &dir.path().join("base"),
        &format!("{host}/base/tiny:1"),
        TOKEN,
        "amd64",
    );

    let cluster = dir.path().join("cluster");
    std::fs::create_dir_all(&cluster).expect("mkdir");
    let lab_config =
        std::fs::read_to_string(repo_root().join("clusters/lab/config")).expect("lab config");
    std::fs::write(
        cluster.join("config"),
        format!("{lab_config}\nNODE_IMAGE_BASE={host}/base/tiny:1\n"),
    )
    .expect("config");
    let config = fks_bootstrap::config::load(&cluster).expect("config");
    let settings =
        image::Settings::from_values(Some(host.clone()), Some("1".into()), Some(TOKEN.into()))
            .expect("settings");
    let client = registry::client(&settings);
    let request = image::Request {
        fks_bootstrap: fks.clone(),
        k3s: k3s::Choice {
            source: k3s::Source::File(standin.clone()),
            standin: true,
        },
        cache_dir: dir.path().join("cache"),
    };
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "node image bench: fks-bootstrap {} ({:.1} MB, debug), k3s = k3s-standin {} ({:.1} MB, debug), base {host}/base/tiny:1 (one tiny layer), lab registry docker-registry on {host}",
        fks.display(),
        mb(size(&fks)),
        standin.display(),
        mb(size(&standin)),
    );
    println!(
        "{:<34} {:>9} {:>9} {:>10} {:>8} {:>12}",
        "case", "build s", "push s", "uploaded", "skipped", "pushed MB"
    );
    let mut digests = Vec::new();
    for case in ["cold (empty cache), first push", "warm cache, second push"] {
        let t = Instant::now();
        let built = image::build(&config, &request, &settings, &client)
            .await
            .expect("build");
        let build_s = t.elapsed().as_secs_f64();
        let target = settings
            .cluster_reference(&config.cp_app(), "bench")
            .expect("reference");
        let t = Instant::now();
        let report = image::push(&built, &target, &settings, &client, &request.cache_dir)
            .await
            .expect("push");
        let push_s = t.elapsed().as_secs_f64();
        println!(
            "{case:<34} {build_s:>9.2} {push_s:>9.3} {:>10} {:>8} {:>12.1}",
            report.uploaded_blobs,
            report.skipped_blobs,
            mb(report.uploaded_bytes)
        );
        let layer = built
            .blobs
            .iter()
            .find(|b| b.what == "node layer")
            .map(|b| b.size)
            .unwrap_or(0);
        digests.push((built.digest.clone(), layer));
    }
    println!(
        "same digest both times: {} ({}); node layer {:.1} MB compressed",
        digests[0].0 == digests[1].0,
        digests[0].0,
        mb(digests[0].1)
    );
    lab.stop().await;
}
