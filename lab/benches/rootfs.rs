//! Issue 9's figure "time to unpack the image in the lab, first time and cached", measured on
//! the lab's Debian base image (`scripts/base-image.sh`, cached build) and on the node image
//! built and pushed by the real `fks-bootstrap image build --push` on that base (this
//! workspace's debug `fks-bootstrap` and `k3s-standin`, as the tests' node image). A real
//! `docker-registry` runs on a local port; `fks_lab::rootfs::pull::Puller` pulls from it.
//!
//! Printed rows (wall time, one run each, this machine's load included):
//! - first pull: manifest, config and layer download from the local registry, digest checks,
//!   unpack, commit;
//! - unpack only: the same layer blob applied onto an empty directory (digest + diff_id checks
//!   included), i.e. the first pull minus the download;
//! - cached pull by tag: one manifest request, no blob;
//! - cached pull by digest: no request at all;
//! - node image, first pull into an empty cache (base + node layer download and unpack), and
//!   cached by digest (what every machine start after the create does).
//!
//! Run: `cargo bench -p fks-lab --bench rootfs`. Needs docker-registry, mmdebstrap and skopeo
//! (scripts/setup.sh test); without them it says so and exits 0. It asserts nothing about
//! speed.

#[path = "../tests/common/registry.rs"]
mod registry;

#[path = "../tests/common/images.rs"]
mod images;

use fks_lab::rootfs::pull::{Puller, Registry as PullFrom};
use fks_lab::rootfs::unpack::{self, Compression};
use registry::{have_base_image_tools, have_registry, push_base_image, Registry, TOKEN};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// `cargo build -p PACKAGE --bin BIN` (debug, as the tests' node image), its path.
fn debug_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("bench binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("bench binary in target/<profile>/deps")
        .to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR" {
            cmd.env_remove(&*key);
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = cmd
        .args(["build", "-p", package, "--bin", bin])
        .current_dir(root)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building {bin} failed");
    let path = target.join("debug").join(bin);
    assert!(path.is_file(), "{} not built", path.display());
    path
}

fn main() {
    if !have_registry() || !have_base_image_tools() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let reg = Registry::start();
    let dest = format!("{}/bench/debian:trixie", reg.host);
    let t = Instant::now();
    let digest = push_base_image(&dest);
    let push = t.elapsed();
    let state = tempfile::tempdir().expect("state");
    let puller = Puller::new(state.path(), PullFrom::lab(&reg.host, TOKEN)).expect("puller");

    let t = Instant::now();
    let (_, first) = runtime.block_on(puller.pull(&dest)).expect("first pull");
    let first_time = t.elapsed();

    let layer = std::fs::read_dir(puller.cache().dir().join("blobs/sha256"))
        .expect("blob store")
        .next()
        .expect("one blob")
        .expect("entry")
        .path();
    let layer_digest = format!(
        "sha256:{}",
        layer.file_name().expect("name").to_string_lossy()
    );
    let scratch = tempfile::tempdir_in(state.path()).expect("scratch");
    let root = unpack::open_root(scratch.path()).expect("root");
    let t = Instant::now();
    let blob =
        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&layer).expect("blob"));
    let stats = unpack::apply_blob(&root, blob, Compression::Gzip, &layer_digest, None)
        .expect("unpack only");
    let unpack_time = t.elapsed();

    let t = Instant::now();
    let (_, by_tag) = runtime.block_on(puller.pull(&dest)).expect("cached by tag");
    let by_tag_time = t.elapsed();
    let by_digest_ref = format!("{}/bench/debian@{digest}", reg.host);
    let t = Instant::now();
    let (_, by_digest) = runtime
        .block_on(puller.pull(&by_digest_ref))
        .expect("cached by digest");
    let by_digest_time = t.elapsed();
    assert!(
        by_tag.cache_hit && by_digest.cache_hit,
        "second pulls hit the cache"
    );

    // The node image, as `fks-bootstrap image build --push` makes it, pulled into an empty
    // cache, then again by digest.
    let node = images::push_node_image(
        &reg.host,
        TOKEN,
        &debug_binary("fks-bootstrap", "fks-bootstrap"),
        &debug_binary("k3s-standin", "k3s-standin"),
    );
    let node_state = tempfile::tempdir().expect("state");
    let node_puller =
        Puller::new(node_state.path(), PullFrom::lab(&reg.host, TOKEN)).expect("puller");
    let t = Instant::now();
    let (_, node_first) = runtime
        .block_on(node_puller.pull(&node))
        .expect("node pull");
    let node_first_time = t.elapsed();
    let t = Instant::now();
    let (_, node_again) = runtime
        .block_on(node_puller.pull(&node))
        .expect("node pull cached");
    let node_again_time = t.elapsed();
    assert!(!node_first.cache_hit && node_again.cache_hit);

    println!("rootfs benchmark: the lab's Debian base image {digest}");
    println!(
        "  image: 1 layer, {:.1} MiB gzip, {} entries, {:.1} MiB of file data; base-image.sh (cached build) + skopeo push: {:.2} s",
        first.bytes_fetched as f64 / 1048576.0,
        stats.entries,
        stats.bytes as f64 / 1048576.0,
        push.as_secs_f64()
    );
    println!("  {:<28} {:>10}", "case", "wall");
    println!(
        "  {:<28} {:>8.3} s",
        "first pull (download+unpack)",
        first_time.as_secs_f64()
    );
    println!(
        "  {:<28} {:>8.3} s",
        "unpack only",
        unpack_time.as_secs_f64()
    );
    println!(
        "  {:<28} {:>8.3} s",
        "cached pull by tag",
        by_tag_time.as_secs_f64()
    );
    println!(
        "  {:<28} {:>8.3} s",
        "cached pull by digest",
        by_digest_time.as_secs_f64()
    );
    println!(
        "rootfs benchmark: the node image {node} ({} layers, {:.1} MiB fetched, {} entries, {:.1} MiB of file data; debug binaries)",
        node_first.blobs_fetched,
        node_first.bytes_fetched as f64 / 1048576.0,
        node_first.entries,
        node_first.bytes_unpacked as f64 / 1048576.0,
    );
    println!(
        "  {:<28} {:>8.3} s",
        "first pull (download+unpack)",
        node_first_time.as_secs_f64()
    );
    println!(
        "  {:<28} {:>8.3} s",
        "cached pull by digest",
        node_again_time.as_secs_f64()
    );
}
