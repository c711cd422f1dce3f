//! `-c` and `-a` and the node image (issue 9): the real `fks-bootstrap` against an API-only lab
//! and the lab's real registry (Debian's docker-registry, user `x`, the lab token as password,
//! as `fks-lab serve` runs it). Without IMAGE, `-c` builds the cluster's image and pushes it
//! to `<registry>/lab-cp`, and every machine gets it pinned by digest; a warm run pushes and
//! creates nothing; an explicit IMAGE wins; a refused login or a missing image stops the run
//! before any machine; `--dry-run` leaves the registry as it was.
//!
//! Docker Hub cannot be reached from here, so the base is a tiny one-layer image pushed by
//! `common::push_tiny_image`, and k3s is the stand-in (`--k3s-source file ... --k3s-standin`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use fks_bootstrap::fly::types::{Machine, MachineListFilter, MachineState};
use fks_bootstrap::fly::{Client, Options as ClientOptions, Token};
use serde_json::Value;

use common::{fks_bootstrap_binary, k3s_standin_binary};

/// The lab's token: the API's and the registry's password, as with `fks-lab serve`.
const TOKEN: &str = "create-image-test-token";

struct Env {
    dir: tempfile::TempDir,
    lab: common::ApiLab,
    registry: common::LabRegistry,
}

impl Env {
    /// An API-only lab and a registry whose password is `registry_token`.
    async fn start(registry_token: &str) -> Env {
        let registry = common::LabRegistry::start(registry_token).await;
        let lab = common::start_api_lab("sjc=3", "", 21, Duration::from_millis(30), TOKEN).await;
        let dir = tempfile::tempdir().expect("tempdir");
        Env { dir, lab, registry }
    }

    fn host(&self) -> String {
        self.registry.host()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A copy of clusters/lab without its IMAGE line, with `extra` lines appended.
    fn cluster(&self, extra: &[String]) -> PathBuf {
        let dir = self.path("cluster");
        common::lab_cluster(&dir, extra);
        dir
    }

    /// Runs `fks-bootstrap ARGS --k3s-source file <k3s-standin> --k3s-standin` with the lab's
    /// settings (`fks-lab env`: API, token, zones, machines only) and this registry's.
    async fn fks(&self, args: &[&str]) -> Output {
        let standin = k3s_standin_binary();
        tokio::process::Command::new(fks_bootstrap_binary())
            .args(args)
            .arg("--k3s-source")
            .arg("file")
            .arg(&standin)
            .arg("--k3s-standin")
            .envs(self.lab.env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(self.registry.env())
            .env("XDG_CONFIG_HOME", self.path("xdg-config"))
            // One build cache for all tests of this binary: the node layer (this debug binary
            // and the stand-in, some 400 MB) is compressed once, not once per test.
            .env("XDG_CACHE_HOME", shared_cache())
            .env_remove("RUST_LOG")
            .env_remove("BOOTSTRAP_NODE_ID")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running fks-bootstrap")
    }

    fn client(&self) -> Client {
        Client::new(&self.lab.base, Token::new(TOKEN), ClientOptions::default()).expect("client")
    }

    async fn machines(&self, app: &str) -> Vec<Machine> {
        match self
            .client()
            .list_machines(app, &MachineListFilter::default())
            .await
        {
            Ok(mut ms) => {
                ms.retain(|m| m.state != MachineState::Destroyed);
                ms
            }
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => panic!("listing machines of {app}: {e}"),
        }
    }

    async fn mutations(&self) -> u64 {
        let stats: Value = reqwest::get(format!("{}/lab/v1/stats", self.lab.base))
            .await
            .expect("lab stats")
            .json()
            .await
            .expect("json");
        stats["mutations"].as_u64().expect("mutations")
    }

    /// Every file of the registry's storage with its size: equal listings mean nothing was
    /// pushed (an upload leaves `_uploads` entries, blobs and links behind).
    fn storage(&self) -> BTreeMap<String, u64> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, u64>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let path = e.path();
                let meta = e.metadata().expect("metadata");
                if meta.is_dir() {
                    walk(&path, root, out);
                } else {
                    let rel = path.strip_prefix(root).expect("below root");
                    out.insert(rel.display().to_string(), meta.len());
                }
            }
        }
        let mut out = BTreeMap::new();
        let root = self.registry.registry.storage();
        walk(&root, &root, &mut out);
        out
    }

    /// `skopeo inspect [extra] docker://<reference>` as JSON, with this registry's login.
    fn inspect(&self, reference: &str, extra: &[&str]) -> Value {
        let mut cmd = std::process::Command::new("skopeo");
        cmd.args([
            "inspect",
            "--creds",
            &format!("x:{TOKEN}"),
            "--tls-verify=false",
        ])
        .args(extra)
        .arg(format!("docker://{reference}"));
        let out = cmd.output().expect("running skopeo");
        assert!(
            out.status.success(),
            "skopeo inspect {reference}: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("skopeo json")
    }
}

fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("create-image-cache")
}

/// The machine's `config.image`.
fn image_of(m: &Machine) -> &str {
    m.config.as_ref().map_or("", |c| c.image.as_str())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

fn assert_ok(what: &str, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_builds_pushes_and_pins_the_image_and_a_rerun_pushes_and_creates_nothing() {
    let env = Env::start(TOKEN).await;
    let base = env.registry.push_tiny(TOKEN);
    let cluster = env.cluster(&[format!("NODE_IMAGE_BASE={base}")]);
    let dir = cluster.to_str().expect("utf8");

    // A dry run: the image would be built and pushed; the registry and the lab stay as they were.
    let registry_before = env.storage();
    let out = env.fks(&["-c", dir, "--dry-run"]).await;
    assert_ok("-c --dry-run", &out);
    let plan = text(&out.stdout);
    assert!(
        plan.contains("nothing was changed")
            && plan.contains("would be built and pushed as")
            && plan.contains(&format!("{}/lab-cp:fks-", env.host())),
        "{plan}"
    );
    assert_eq!(env.storage(), registry_before, "a dry run pushed");
    assert_eq!(env.mutations().await, 0, "a dry run mutated");

    // The real run builds, pushes and creates the machines with the image pinned by digest.
    let out = env.fks(&["-c", dir, "--json"]).await;
    assert_ok("-c", &out);
    let first = json(&out);
    let image = &first["image"];
    assert_eq!(image["outcome"], "pushed", "{first}");
    assert!(
        image["push"]["uploaded_blobs"].as_u64() >= Some(2),
        "{first}"
    );
    let digest = image["digest"].as_str().expect("digest").to_string();
    let pinned = format!("{}/lab-cp@{digest}", env.host());
    assert_eq!(image["pinned"], pinned.as_str());
    assert!(
        image["reference"]
            .as_str()
            .expect("reference")
            .starts_with(&format!("{}/lab-cp:fks-{}", env.host(), &digest[7..19])),
        "{first}"
    );
    let machines = env.machines("lab-cp").await;
    assert_eq!(machines.len(), 3, "{machines:?}");
    for m in &machines {
        assert_eq!(image_of(m), pinned, "machine {}", m.id);
    }
    assert_eq!(first["nodes"].as_array().expect("nodes").len(), 3);

    // A third-party client sees the entrypoint and the stand-in label at that digest.
    let config = env.inspect(&pinned, &["--config"]);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/fks-bootstrap", "node", "init"])
    );
    let info = env.inspect(&pinned, &[]);
    assert_eq!(info["Digest"], digest.as_str());
    assert!(info["Labels"]["fks-bootstrap.k3s"]
        .as_str()
        .expect("k3s label")
        .starts_with("stand-in"));
    assert_eq!(
        info["Labels"]["fks-bootstrap.kubernetes.version"],
        "v1.33.7"
    );

    // Warm: nothing pushed, nothing created, the same digest.
    let registry_before = env.storage();
    let mutations_before = env.mutations().await;
    let out = env.fks(&["-c", dir, "--json"]).await;
    assert_ok("-c again", &out);
    let again = json(&out);
    assert_eq!(again["image"]["outcome"], "present", "{again}");
    assert_eq!(again["image"]["pinned"], pinned.as_str());
    assert_eq!(env.storage(), registry_before, "a warm run pushed");
    assert_eq!(
        env.mutations().await,
        mutations_before,
        "a warm run mutated"
    );
    assert!(
        text(&out.stderr).contains("nothing to push"),
        "{}",
        text(&out.stderr)
    );

    // A node group runs the same image, from the control plane's registry path.
    let out = env.fks(&["-a", "0", dir]).await;
    assert_ok("-a 0", &out);
    assert!(
        text(&out.stdout).contains(&format!("image {pinned}")),
        "{}",
        text(&out.stdout)
    );
    let workers = env.machines("lab-ng-0").await;
    assert_eq!(workers.len(), 3, "{workers:?}");
    for m in &workers {
        assert_eq!(image_of(m), pinned, "worker {}", m.id);
    }
    assert_eq!(env.storage(), registry_before, "-a pushed again");

    // That image as IMAGE of a config one minor up: its label says v1.33.7, so the run stops
    // before anything changes (an upgrade would otherwise wait in vain for v1.34.1 nodes).
    let next = env.cluster(&[format!("IMAGE={pinned}")]);
    let config = std::fs::read_to_string(next.join("config")).expect("config");
    assert!(config.contains("K3S_VERSION=\"v1.33.7+k3s1\""), "{config}");
    std::fs::write(
        next.join("config"),
        config.replace(
            "K3S_VERSION=\"v1.33.7+k3s1\"",
            "K3S_VERSION=\"v1.34.1+k3s1\"",
        ),
    )
    .expect("config");
    let before = env.mutations().await;
    let out = env.fks(&["-c", next.to_str().expect("utf8")]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "IMAGE {pinned} runs Kubernetes v1.33.7 (its label fks-bootstrap.kubernetes.version), but K3S_VERSION is v1.34.1+k3s1"
        )),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(env.mutations().await, before, "refused, yet mutated");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_explicit_image_wins_is_pinned_and_an_unknown_one_stops_the_run() {
    let env = Env::start(TOKEN).await;
    let base = env.registry.push_tiny(TOKEN);
    let digest = env.inspect(&base, &[])["Digest"]
        .as_str()
        .expect("digest")
        .to_string();

    // Not in the registry: exit 1 naming the image and the registry; nothing made.
    let missing = format!("{}/elsewhere:1", env.host());
    let cluster = env.cluster(&[format!("IMAGE={missing}")]);
    let out = env.fks(&["-c", cluster.to_str().expect("utf8")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "resolving IMAGE {missing} through registry {}",
            env.host()
        )) && err.contains("the registry has no manifest"),
        "{err}"
    );
    assert_eq!(env.mutations().await, 0, "refused, yet mutated");

    // In the registry: used as given (nothing built or pushed), pinned to its digest.
    let registry_before = env.storage();
    let cluster = env.cluster(&[format!("IMAGE={base}")]);
    let out = env
        .fks(&["-c", cluster.to_str().expect("utf8"), "--json"])
        .await;
    assert_ok("-c with IMAGE", &out);
    let result = json(&out);
    let pinned = format!("{}/base/tiny@{digest}", env.host());
    assert_eq!(result["image"]["outcome"], "configured", "{result}");
    assert_eq!(result["image"]["pinned"], pinned.as_str());
    assert!(
        text(&out.stderr).contains("the --k3s-* flags do nothing"),
        "{}",
        text(&out.stderr)
    );
    let machines = env.machines("lab-cp").await;
    assert_eq!(machines.len(), 3, "{machines:?}");
    for m in &machines {
        assert_eq!(image_of(m), pinned, "machine {}", m.id);
    }
    assert_eq!(
        env.storage(),
        registry_before,
        "an explicit IMAGE was pushed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_refusing_the_credentials_stops_the_run_before_any_machine() {
    // The registry's password is not the lab token the CLI presents.
    let env = Env::start("another-password").await;
    let base = env.registry.push_tiny("another-password");
    let cluster = env.cluster(&[format!("NODE_IMAGE_BASE={base}")]);
    let out = env.fks(&["-c", cluster.to_str().expect("utf8")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "registry {} refused the credentials of user \"x\"",
            env.host()
        )) && err.contains("node image of cluster lab"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "the token is never printed: {err}");
    assert!(env.machines("lab-cp").await.is_empty());
    assert_eq!(env.mutations().await, 0, "refused, yet mutated");
}
