//! The lab's image pull against a real registry: Debian's `docker-registry` (the CNCF
//! distribution registry) started by each test with htpasswd auth (user `x`, as Fly's
//! registry, reference/fly-runtime.md §3) and storage in a temp dir. Images are pushed with
//! `oci-client` and pulled by `fks_lab::rootfs::pull::Puller`. Without the binary the tests say
//! so and pass, except under `CI=true`, where they fail (scripts/setup.sh installs it).
//!
//! Blob downloads are counted from the registry's access log (`"GET /v2/<name>/blobs/..."`).

use fks_lab::rootfs::pull::{Puller, Registry as PullFrom};
use fks_lab::rootfs::Error;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use sha2::Digest;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

#[path = "common/registry.rs"]
mod registry;

use registry::{have_base_image_tools, have_registry, push_base_image, Registry, TOKEN};

fn client() -> oci_client::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}

fn auth() -> RegistryAuth {
    RegistryAuth::Basic("x".into(), TOKEN.into())
}

/// A tar layer built entry by entry.
fn tar_layer(entries: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).expect("path");
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
        }
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    for (name, target) in symlinks {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, name, target).expect("symlink");
    }
    b.into_inner().expect("tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(data))
}

/// Push an image of `layers` (uncompressed tars, pushed gzip) with an exec config; returns
/// the layer digests and the manifest digest.
async fn push(reg: &Registry, name: &str, layers: &[Vec<u8>], arch: &str) -> (Vec<String>, String) {
    let reference: Reference = format!("{}/{name}", reg.host).parse().expect("ref");
    let oci_layers: Vec<ImageLayer> = layers
        .iter()
        .map(|t| ImageLayer::oci_v1_gzip(gzip(t), None))
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|t| sha256(t)).collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/local/bin/fks-bootstrap"],
            "Cmd": ["node", "init"],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
            "WorkingDir": "/root",
            "User": "0:0",
            "Labels": { "org.opencontainers.image.version": "0.1.0" }
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = Config::oci_v1(serde_json::to_vec(&config).expect("json"), None);
    let c = client();
    c.push(&reference, &oci_layers, config, &auth(), None)
        .await
        .expect("push");
    let digest = c
        .fetch_manifest_digest(&reference, &auth())
        .await
        .expect("manifest digest");
    (
        oci_layers.iter().map(|l| l.sha256_digest()).collect(),
        digest,
    )
}

fn base_layers() -> Vec<Vec<u8>> {
    vec![
        tar_layer(
            &[
                ("usr/", b""),
                ("usr/bin/", b""),
                ("usr/bin/hello", b"#!/bin/sh\necho hello\n"),
                ("etc/", b""),
                ("etc/old.conf", b"old"),
            ],
            &[("bin", "usr/bin")],
        ),
        tar_layer(
            &[
                ("etc/.wh.old.conf", b""),
                ("etc/new.conf", b"new"),
                ("usr/local/bin/fks-bootstrap", b"binary"),
            ],
            &[],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_round_trip_unpacks_layers_and_hits_the_cache() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start();
    let (layer_digests, digest) = push(&reg, "rt/node:v1", &base_layers(), arch()).await;
    let gets_after_push = reg.blob_gets();
    let state = tempfile::tempdir().expect("state");
    let puller = Puller::new(state.path(), PullFrom::lab(&reg.host, TOKEN)).expect("puller");

    let by_tag = format!("{}/rt/node:v1", reg.host);
    // Resolving checks the image and gives the digest to pin without any layer download.
    let resolved = puller.resolve(&by_tag).await.expect("resolve");
    assert_eq!(resolved.manifest_digest, digest);
    assert_eq!(resolved.config.cmd, ["node", "init"]);
    assert_eq!(reg.blob_gets() - gets_after_push, 1, "the config blob only");
    let gets_after_push = reg.blob_gets();
    let (image, stats) = puller.pull(&by_tag).await.expect("pull by tag");
    assert!(!stats.cache_hit);
    assert_eq!(stats.blobs_fetched, 2);
    assert_eq!(image.manifest_digest, digest);
    assert_eq!(image.reference, by_tag);
    let root = &image.rootfs;
    assert!(
        root.starts_with(state.path()),
        "the cache is under the state dir"
    );
    assert_eq!(
        std::fs::read(root.join("bin/hello")).expect("hello via bin symlink"),
        b"#!/bin/sh\necho hello\n"
    );
    assert!(!root.join("etc/old.conf").exists(), "whited out by layer 2");
    assert_eq!(
        std::fs::read(root.join("etc/new.conf")).expect("new"),
        b"new"
    );
    assert_eq!(
        std::fs::metadata(root.join("usr/local/bin"))
            .expect("implicit dir")
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(image.config.entrypoint, ["/usr/local/bin/fks-bootstrap"]);
    assert_eq!(image.config.cmd, ["node", "init"]);
    assert_eq!(image.config.env[1], "LANG=C.UTF-8");
    assert_eq!(image.config.working_dir.as_deref(), Some("/root"));
    assert_eq!(image.config.user.as_deref(), Some("0:0"));
    assert_eq!(
        image.config.labels["org.opencontainers.image.version"],
        "0.1.0"
    );
    // Config + two layers.
    assert_eq!(reg.blob_gets() - gets_after_push, 3, "{}", reg.log());
    for d in &layer_digests {
        let stored = puller.cache().blob_path(d).expect("blob path");
        assert!(stored.exists(), "blob {d} kept in the blob store");
    }

    // By tag again: the manifest is asked for, no blob is downloaded.
    let (again, stats) = puller.pull(&by_tag).await.expect("pull again");
    assert!(stats.cache_hit && stats.blobs_fetched == 0);
    assert_eq!(again.rootfs, image.rootfs);
    assert_eq!(
        reg.blob_gets() - gets_after_push,
        3,
        "no blob GET on a cache hit"
    );

    // By digest, after a lab restart, with the registry gone: no request at all.
    drop(reg);
    let puller = Puller::new(state.path(), PullFrom::lab("127.0.0.1:9", TOKEN)).expect("reopen");
    let by_digest = format!("127.0.0.1:9/rt/node@{digest}");
    let (cached, stats) = puller.pull(&by_digest).await.expect("cache hit offline");
    assert!(stats.cache_hit);
    assert_eq!(cached.rootfs, image.rootfs);
    assert_eq!(cached.config, image.config);
    assert_eq!(cached.reference, by_digest);
}

/// A tar with one regular entry whose name is written as raw bytes (the `tar` builder refuses
/// `..`).
fn raw_entry_layer(name: &str) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(5);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b"pwned"[..]).expect("append");
    b.into_inner().expect("tar")
}

/// Malicious layers pushed to a real registry: an entry with `..`, and an absolute symlink to
/// the host's root followed by a write through it. Both are refused naming the layer, the
/// host is untouched, and nothing is committed to the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_layers_are_refused_and_nothing_is_committed() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start();
    let state = tempfile::tempdir().expect("state");
    let puller = Puller::new(state.path(), PullFrom::lab(&reg.host, TOKEN)).expect("puller");
    let victim = tempfile::tempdir().expect("victim");
    let target = victim.path().display().to_string();
    let cases = [
        (
            "evil/dotdot:v1",
            vec![raw_entry_layer("../../../../../tmp/fks-pwned")],
            0,
        ),
        (
            "evil/symlink:v1",
            vec![
                tar_layer(&[], &[("escape", target.as_str())]),
                raw_entry_layer("escape/pwned"),
            ],
            1,
        ),
    ];
    for (name, layers, bad) in cases {
        let (digests, _) = push(&reg, name, &layers, arch()).await;
        let image = format!("{}/{name}", reg.host);
        let err = puller.pull(&image).await.expect_err("malicious layer");
        match &err {
            Error::Unpack {
                image: i,
                layer,
                source,
            } => {
                assert_eq!((i, layer), (&image, &digests[bad]));
                assert!(
                    matches!(**source, fks_lab::rootfs::unpack::Error::Refused { .. }),
                    "{source:?}"
                );
            }
            other => panic!("expected Unpack, got {other:?}"),
        }
        let (status, message) = api(&err);
        assert_eq!(status, 422);
        assert!(message.contains("refused"), "{message}");
    }
    assert_eq!(std::fs::read_dir(victim.path()).expect("victim").count(), 0);
    assert!(!Path::new("/tmp/fks-pwned").exists());
    assert_eq!(
        std::fs::read_dir(puller.cache().dir().join("images"))
            .expect("images")
            .count(),
        0,
        "nothing committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_agree() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start();
    let (_, digest) = push(&reg, "conc/x:v1", &base_layers(), arch()).await;
    let state = tempfile::tempdir().expect("state");
    let puller = Puller::new(state.path(), PullFrom::lab(&reg.host, TOKEN)).expect("puller");
    let image = format!("{}/conc/x:v1", reg.host);
    let (a, b) = tokio::join!(puller.pull(&image), puller.pull(&image));
    let (a, b) = (a.expect("first").0, b.expect("second").0);
    assert_eq!((&a.manifest_digest, &a.rootfs), (&digest, &b.rootfs));
    assert_eq!(
        std::fs::read(a.rootfs.join("etc/new.conf")).expect("new"),
        b"new"
    );
    let scratch = std::fs::read_dir(puller.cache().dir().join("tmp"))
        .expect("tmp")
        .count();
    assert_eq!(scratch, 0, "the loser's scratch copy is removed");
}

fn arch() -> &'static str {
    fks_lab::rootfs::pull::host_platform().1
}

/// The `api_error` status for an error, with its message.
fn api(e: &Error) -> (u16, String) {
    let a = e.api_error();
    (a.status.as_u16(), a.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_errors_name_the_image_and_the_layer() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start();
    let (layers, _) = push(&reg, "errs/a:v1", &base_layers(), arch()).await;
    let state = tempfile::tempdir().expect("state");
    let good = Puller::new(state.path(), PullFrom::lab(&reg.host, TOKEN)).expect("puller");
    let image = format!("{}/errs/a:v1", reg.host);

    let wrong = Puller::new(state.path(), PullFrom::lab(&reg.host, "not-the-token")).expect("p");
    let err = wrong.pull(&image).await.expect_err("bad credentials");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(api(&err).0, 422);

    let err = good
        .pull(&format!("{}/errs/a:nope", reg.host))
        .await
        .expect_err("unknown tag");
    assert!(matches!(err, Error::ManifestUnknown { .. }), "{err:?}");
    let err = good
        .resolve(&format!("{}/errs/a:nope", reg.host))
        .await
        .expect_err("unknown tag, resolve");
    assert!(matches!(err, Error::ManifestUnknown { .. }), "{err:?}");
    let (status, message) = api(&err);
    assert_eq!(status, 422);
    assert!(
        message.starts_with(&format!(
            "image cannot be pulled: image {}/errs/a:nope: no such manifest",
            reg.host
        )),
        "{message}"
    );
    let err = good.pull("Bad Ref!").await.expect_err("unparsable");
    assert!(matches!(err, Error::Reference { .. }), "{err:?}");
    assert_eq!(api(&err).0, 400);

    // Corrupt the second layer in the registry's storage: a digest mismatch.
    let blob = reg.blob_file(&layers[1]);
    std::fs::write(&blob, gzip(b"not the layer")).expect("corrupt");
    let err = good.pull(&image).await.expect_err("digest mismatch");
    match &err {
        Error::BlobDigest {
            image: i, digest, ..
        } => {
            assert_eq!((i, digest), (&image, &layers[1]));
        }
        other => panic!("expected BlobDigest, got {other:?}"),
    }
    let (status, message) = api(&err);
    assert_eq!(status, 422);
    assert!(
        message.contains(&layers[1]) && message.contains(&image),
        "{message}"
    );
    assert!(
        std::fs::read_dir(good.cache().dir().join("images"))
            .expect("images")
            .next()
            .is_none(),
        "nothing committed"
    );

    // Remove it: a missing blob.
    std::fs::remove_file(&blob).expect("remove blob");
    let err = good.pull(&image).await.expect_err("missing blob");
    match &err {
        Error::MissingBlob {
            image: i, digest, ..
        } => {
            assert_eq!((i, digest), (&image, &layers[1]));
        }
        other => panic!("expected MissingBlob, got {other:?}"),
    }
    assert!(
        err.to_string().contains("is missing from the registry"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_for_another_architecture_is_refused() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start();
    let other = if arch() == "amd64" { "arm64" } else { "amd64" };
    push(&reg, "plat/x:v1", &base_layers(), other).await;
    let state = tempfile::tempdir().expect("state");
    let puller = Puller::new(state.path(), PullFrom::lab(&reg.host, TOKEN)).expect("puller");
    let image = format!("{}/plat/x:v1", reg.host);
    let err = puller.resolve(&image).await.expect_err("foreign platform");
    assert!(matches!(err, Error::Platform { .. }), "{err:?}");
    let err = puller.pull(&image).await.expect_err("foreign platform");
    assert!(matches!(err, Error::Platform { .. }), "{err:?}");
    assert!(err.to_string().contains(other), "{err}");
}

/// A full disk while unpacking (root: the state dir is a 2 MiB tmpfs; the layer's 8 MiB of
/// zeros compress to a few KiB, so the download fits and the unpack does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_while_unpacking_names_the_image_and_the_layer() {
    if !have_registry() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "needs root under CI"
        );
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    }
    let reg = Registry::start();
    let zeros = vec![0u8; 8 << 20];
    let layers = vec![tar_layer(&[("big", &zeros)], &[])];
    let (digests, _) = push(&reg, "full/x:v1", &layers, arch()).await;
    let state = tempfile::tempdir().expect("state");
    mount_tmpfs(state.path(), "2m");
    let puller = Puller::new(state.path(), PullFrom::lab(&reg.host, TOKEN)).expect("puller");
    let image = format!("{}/full/x:v1", reg.host);
    let result = puller.pull(&image).await;
    let leftovers = std::fs::read_dir(puller.cache().dir().join("tmp"))
        .expect("tmp")
        .count();
    nix::mount::umount2(state.path(), nix::mount::MntFlags::MNT_DETACH).expect("umount");
    let err = result.expect_err("ENOSPC");
    match &err {
        Error::NoSpace {
            image: i, layer, ..
        } => assert_eq!((i, layer), (&image, &digests[0])),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(api(&err).0, 500);
    assert_eq!(leftovers, 0, "the half-unpacked scratch dir is removed");
}

fn mount_tmpfs(dir: &Path, size: &str) {
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size={size}").as_str()),
    )
    .expect("mount tmpfs");
}

/// `scripts/base-image.sh` builds (or takes from its cache: `scripts/test.sh` builds it before
/// the tests) the Debian base, pushes it with skopeo, and the lab pulls and unpacks it: a real
/// root filesystem with hard links, set-uid files, group-owned files and a sticky /tmp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_image_script_pushes_a_debian_the_lab_can_pull() {
    if !have_registry() || !have_base_image_tools() {
        return;
    }
    let reg = Registry::start();
    let dest = format!("{}/lab/debian:trixie", reg.host);
    let digest = push_base_image(&dest);
    // A third-party client sees what was pushed.
    let auth = tempfile::NamedTempFile::new().expect("authfile");
    std::fs::write(
        auth.path(),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}",
            reg.host,
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("x:{TOKEN}")
            )
        ),
    )
    .expect("auth.json");
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--authfile"])
        .arg(auth.path())
        .arg(format!("docker://{dest}"))
        .output()
        .expect("skopeo inspect");
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspect json");
    assert_eq!(
        seen["Digest"],
        digest.as_str(),
        "pushed with the layout's digest"
    );
    assert_eq!(seen["Architecture"], arch());

    let state = tempfile::tempdir().expect("state");
    let puller = Puller::new(state.path(), PullFrom::lab(&reg.host, TOKEN)).expect("puller");
    let (image, stats) = puller.pull(&dest).await.expect("pull the base");
    assert_eq!(image.manifest_digest, digest);
    assert_eq!(image.config.cmd, ["bash"]);
    let root = &image.rootfs;
    let version = std::fs::read_to_string(root.join("etc/debian_version")).expect("debian_version");
    assert!(version.starts_with("13"), "trixie is Debian 13: {version}");
    assert_eq!(
        std::fs::read_link(root.join("bin")).expect("usrmerge"),
        Path::new("usr/bin")
    );
    assert!(root.join("dev").is_dir(), "an empty /dev");
    assert!(
        !root.join("etc/ssl/certs/ca-certificates.crt").exists(),
        "slim: no CA bundle"
    );
    let tmp = std::fs::metadata(root.join("tmp")).expect("tmp");
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    let su = std::fs::metadata(root.join("usr/bin/su")).expect("su");
    assert_eq!((su.mode() & 0o7777, su.uid()), (0o4755, 0));
    let shadow = std::fs::metadata(root.join("etc/shadow")).expect("shadow");
    assert_eq!(shadow.mode() & 0o7777, 0o640);
    assert_ne!(shadow.gid(), 0, "group shadow");
    eprintln!(
        "base image: {} entries, {} MiB of files, {} blob(s) fetched",
        stats.entries,
        stats.bytes_unpacked >> 20,
        stats.blobs_fetched
    );
    let (_, again) = puller.pull(&dest).await.expect("second pull");
    assert!(again.cache_hit && again.blobs_fetched == 0);
}
