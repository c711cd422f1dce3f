//! A real OCI registry for tests and benchmarks: Debian's `docker-registry` (the CNCF
//! distribution registry) on a free local port, htpasswd auth with user `x` (as Fly's
//! registry, reference/fly-runtime.md §3), storage and access log in a temp dir. Included with
//! `#[path]` by `tests/rootfs.rs` and `benches/rootfs.rs`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "lab-token-rootfs";

/// A `docker-registry serve` running on a free local port.
pub struct Registry {
    pub host: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn have_registry() -> bool {
    if Command::new("docker-registry")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
    {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "docker-registry not found and CI=true: run scripts/setup.sh test (docker-registry)"
        );
    }
    eprintln!("skipping: docker-registry not found (apt-get install docker-registry)");
    false
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let host = format!("127.0.0.1:{port}");
        let hash = bcrypt::hash(TOKEN, 4).expect("bcrypt");
        std::fs::write(dir.path().join("htpasswd"), format!("x:{hash}\n")).expect("htpasswd");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n  secret: fks-lab-test\n\
             auth:\n  htpasswd:\n    realm: fks-lab\n    path: {htpasswd}\n",
            data = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let reg = Registry { host, dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Blob GETs the registry answered so far.
    pub fn blob_gets(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/"))
            .count()
    }

    /// The stored data file of a blob (distribution's filesystem layout).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

pub fn have_base_image_tools() -> bool {
    let missing: Vec<&str> = ["mmdebstrap", "skopeo"]
        .into_iter()
        .filter(|t| {
            Command::new(t)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{missing:?} not found and CI=true: run scripts/setup.sh test");
    }
    eprintln!("skipping: {missing:?} not found (apt-get install mmdebstrap skopeo)");
    false
}

/// Run `scripts/base-image.sh` (cached build) and push the base to `dest`; returns
/// the manifest digest it printed. The token goes through the environment only.
pub fn push_base_image(dest: &str) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/base-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["--plain-http", dest])
        .env("REGISTRY_TOKEN", TOKEN)
        .output()
        .expect("running base-image.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "base-image.sh failed: {stderr}");
    assert!(!stderr.contains(TOKEN), "the token is never printed");
    let digest = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    digest
}
