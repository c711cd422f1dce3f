//! The real `fks-bootstrap` binary's operator commands (`list`/`-l`, `destroy`) against an
//! in-process API-only lab: a control plane made with the library (observe, plan, execute;
//! k3s steps off) next to foreign apps in the same organization. Asserts on stdout, exit
//! codes, the lab's state and its request log (`/lab/v1/events`). `destroy` and the
//! operator's WireGuard peer: the lab's GraphQL endpoint (API-only: peers are recorded, no
//! gateway runs) holds the peer list.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Output, Stdio};
use std::time::Duration;

use fks_bootstrap::config::{self, Config};
use fks_bootstrap::fly::types::{
    CreateAppRequest, CreateMachineRequest, CreateVolumeRequest, Machine, MachineConfig,
    MachineFile, MachineListFilter, MachineMount, MachineState, SecretString, Volume,
};
use fks_bootstrap::fly::{Client, Options as ClientOptions, RetryPolicy, Token};
use fks_bootstrap::plan::{self, Target, META_CLUSTER, META_NODE};
use fks_bootstrap::run;
use fks_bootstrap::tunnel::{self, graphql};
use serde_json::Value;

mod common;
use common::{fks_bootstrap_binary, repo_root};

const TOKEN: &str = "cli-ops-test-token";
/// The image the plan gives every machine: pinned by digest, as `image::ensure` makes it (the
/// API-only lab runs nothing, so no registry has to hold it here).
const LAB_IMAGE: &str =
    "127.0.0.1:5000/lab-cp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A lab serving on a local port until dropped.
type Lab = common::ApiLab;

async fn start_lab() -> Lab {
    start_lab_with("").await
}

async fn start_lab_with(faults: &str) -> Lab {
    common::start_api_lab("sjc=3", faults, 11, Duration::from_millis(30), TOKEN).await
}

impl Lab {
    fn client(&self) -> Client {
        let options = ClientOptions {
            seed: Some(5),
            create_settle: Duration::from_millis(50),
            retry: RetryPolicy {
                max_attempts: 10,
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(500),
                max_elapsed: Duration::from_secs(30),
            },
            ..ClientOptions::default()
        };
        Client::new(&self.base, Token::new(TOKEN), options).expect("client")
    }

    async fn lab_get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.base))
            .await
            .expect("lab introspection")
            .json()
            .await
            .expect("json")
    }

    async fn mutations(&self) -> u64 {
        self.lab_get("/lab/v1/stats").await["mutations"]
            .as_u64()
            .expect("mutations count")
    }

    /// The newest request log sequence number.
    async fn last_seq(&self) -> u64 {
        self.lab_get("/lab/v1/events").await["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// The successful writes since `seq`, oldest first: (method, path).
    async fn writes_since(&self, seq: u64) -> Vec<(String, String)> {
        self.lab_get(&format!("/lab/v1/events?since={seq}")).await["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| {
                e["method"] != "GET"
                    && e["status"]
                        .as_u64()
                        .is_some_and(|s| (200..300).contains(&s))
            })
            .map(|e| {
                (
                    e["method"].as_str().expect("method").to_string(),
                    e["path"].as_str().expect("path").to_string(),
                )
            })
            .collect()
    }

    /// Runs the binary with this lab's address and token, stdin not a terminal.
    async fn fks(&self, args: &[&str]) -> Output {
        self.fks_with(args, &[]).await
    }

    /// [`Lab::fks`] with `extra` environment over the lab's; `XDG_CONFIG_HOME` is the lab's
    /// own empty one ([`common::ApiLab::config_home`]).
    async fn fks_with(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let out = tokio::process::Command::new(fks_bootstrap_binary())
            .args(args)
            .current_dir(repo_root())
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .envs(extra.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running fks-bootstrap");
        out
    }

    /// The config dir the binary uses (`$XDG_CONFIG_HOME/fks-bootstrap`).
    fn fks_config_dir(&self) -> std::path::PathBuf {
        self.config_home.path().join("fks-bootstrap")
    }

    /// The lab's GraphQL endpoint, as the binary reaches it (`FLY_API_BASE_URL`).
    fn graphql(&self) -> graphql::Client {
        graphql::Client::new(&self.base, Token::new(TOKEN)).expect("graphql client")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lab_config() -> Config {
    config::load(&repo_root().join("clusters/lab")).expect("clusters/lab loads")
}

/// The operator's peer of `org` as `tunnel up` / `-s` leave it: added at the lab's GraphQL
/// endpoint (`addWireGuardPeer`) and saved by the product's own `tunnel::peer::save` where the
/// binary looks. The API-only lab runs no gateway and answers without an endpoint or gateway
/// key (`ensure_peer` refuses that), so those two are stand-ins (TEST-NET-1, a fresh key):
/// destroy never dials them.
async fn saved_peer(lab: &Lab, org: &str) -> tunnel::Peer {
    let gql = lab.graphql();
    let org_id = gql.org_id(org).await.expect("org id");
    let (private, public) = tunnel::peer::keypair();
    let name = tunnel::peer::new_name();
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/graphql", lab.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "query": "mutation($input: AddWireGuardPeerInput!) { addWireGuardPeer(input: $input) { peerip endpointip pubkey } }",
            "variables": {"input": {"organizationId": org_id, "name": name, "pubkey": public}},
        }))
        .send()
        .await
        .expect("graphql")
        .json()
        .await
        .expect("json");
    let peerip = answer["data"]["addWireGuardPeer"]["peerip"]
        .as_str()
        .unwrap_or_else(|| panic!("no peerip: {answer}"));
    let added = graphql::AddedPeer {
        peerip: peerip.to_string(),
        endpointip: "192.0.2.1".into(),
        pubkey: tunnel::peer::keypair().1,
    };
    let peer = tunnel::Peer::new(org, &name, private, &added).expect("peer");
    tunnel::peer::save(&lab.fks_config_dir(), &peer).expect("save peer");
    peer
}

/// The names of `org`'s peers at the lab's GraphQL endpoint. The lab knows an organization
/// only by what it holds (apps, peers; `personal` always): one that holds nothing any more
/// answers "Could not find Organization", which here means no peer.
async fn lab_peers(lab: &Lab, org: &str) -> Vec<String> {
    match lab.graphql().peer_names(org).await {
        Ok(names) => names,
        Err(e) if e.to_string().contains("Could not find Organization") => Vec::new(),
        Err(e) => panic!("listing the peers of {org}: {e}"),
    }
}

/// A copy of `clusters/lab/config` in `<root>/<cluster>` with `CLUSTER_NAME` and `ORG_NAME`
/// replaced; its directory and the loaded config.
fn cluster_copy(root: &std::path::Path, cluster: &str, org: &str) -> (String, Config) {
    let text = std::fs::read_to_string(repo_root().join("clusters/lab/config")).expect("config");
    let text: String = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some(("CLUSTER_NAME", _)) => format!("CLUSTER_NAME={cluster}\n"),
            Some(("ORG_NAME", _)) => format!("ORG_NAME={org}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let dir = root.join(cluster);
    std::fs::create_dir_all(&dir).expect("cluster dir");
    std::fs::write(dir.join("config"), text).expect("write config");
    let config = config::load(&dir).expect("copied config loads");
    (dir.to_string_lossy().into_owned(), config)
}

/// Creates `lab-cp` with three nodes the way `create` will: observe, plan, execute.
async fn make_control_plane(client: &Client, config: &Config) {
    let target = Target::control_plane(0).expect("target");
    let state = run::observe(client, config, &target)
        .await
        .expect("observe");
    let files: BTreeMap<String, Vec<MachineFile>> = (0..3)
        .map(|i| {
            let file = MachineFile {
                guest_path: "/etc/ssh/sshd_config.d/fks-bootstrap.conf".into(),
                raw_value: Some("UGFzc3dvcmRBdXRoZW50aWNhdGlvbiBubwo=".into()),
                mode: Some(0o644),
                ..MachineFile::default()
            };
            (format!("ctrl-{i}"), vec![file])
        })
        .collect();
    let options = plan::Options {
        zones: Some(3),
        allow_shared_zones: false,
        k3s: false,
        node_files: files,
        extra_env: BTreeMap::new(),
        image: LAB_IMAGE.to_string(),
        max_unavailable: plan::update::WORKER_BATCH,
    };
    let p = plan::plan(config, &target, &state, &options).expect("plan");
    run::execute(client, &p, &run::Options::default(), None)
        .await
        .unwrap_or_else(|e| panic!("run failed: {e}\nplan:\n{p}"));
    client
        .set_secret(
            &config.cp_app(),
            "EXTRA_SETTING",
            &SecretString::new("cp secret".to_string()),
        )
        .await
        .expect("secret");
}

/// An app (created if missing) with one volume and one machine using it, with `metadata`.
async fn make_app_machine(
    client: &Client,
    app: &str,
    name: &str,
    metadata: &[(&str, &str)],
) -> (Machine, Volume) {
    if client.get_app(app).await.is_err() {
        client
            .create_app(&CreateAppRequest {
                app_name: Some(app.to_string()),
                org_slug: Some("personal".to_string()),
                ..CreateAppRequest::default()
            })
            .await
            .expect("create app");
    }
    let vol = client
        .create_volume(
            app,
            &CreateVolumeRequest {
                name: "data".into(),
                region: Some("sjc".into()),
                size_gb: Some(1),
                ..CreateVolumeRequest::default()
            },
            &BTreeSet::new(),
        )
        .await
        .expect("create volume");
    let mut config = MachineConfig {
        image: "lab/other".into(),
        ..MachineConfig::default()
    };
    for (k, v) in metadata {
        config.metadata.insert(k.to_string(), v.to_string());
    }
    config.mounts.push(MachineMount {
        volume: vol.id.clone(),
        path: "/data".into(),
        ..MachineMount::default()
    });
    let m = client
        .create_machine(
            app,
            CreateMachineRequest {
                config,
                name: Some(name.into()),
                region: Some("sjc".into()),
                ..CreateMachineRequest::default()
            },
        )
        .await
        .expect("create machine");
    (m, vol)
}

async fn live_machines(client: &Client, app: &str) -> Vec<Machine> {
    let mut ms = client
        .list_machines(app, &MachineListFilter::default())
        .await
        .expect("machines");
    ms.retain(|m| m.state != MachineState::Destroyed);
    ms
}

async fn live_volumes(client: &Client, app: &str) -> Vec<Volume> {
    let mut vs = client.list_volumes(app).await.expect("volumes");
    vs.retain(|v| !v.state.is_being_destroyed());
    vs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_cp_table_and_json_match_the_labs_machines() {
    let lab = start_lab().await;
    let client = lab.client();
    let config = lab_config();
    make_control_plane(&client, &config).await;
    let machines = live_machines(&client, "lab-cp").await;
    let volumes = live_volumes(&client, "lab-cp").await;
    assert_eq!(machines.len(), 3);

    let json = lab.fks(&["list", "cp", "clusters/lab", "--json"]).await;
    assert_eq!(json.status.code(), Some(0), "{}", text(&json.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&json.stdout).expect("json array");
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["ctrl-0", "ctrl-1", "ctrl-2"]);
    let mut zones = BTreeSet::new();
    for row in &rows {
        let id = row["machine_id"].as_str().expect("id");
        let m = machines
            .iter()
            .find(|m| m.id == id)
            .expect("listed machine exists");
        assert_eq!(row["name"].as_str(), m.metadata(META_NODE));
        assert_eq!(row["app"], "lab-cp");
        assert_eq!(row["region"], "sjc");
        assert_eq!(row["state"], "started");
        assert_eq!(row["private_ip"].as_str(), Some(m.private_ip.as_str()));
        assert!(!m.private_ip.is_empty());
        assert_eq!(row["role"], "server");
        assert_eq!(row["ready"], false, "k3s steps were off");
        let vol = volumes
            .iter()
            .find(|v| v.attached_machine_id.as_deref() == Some(id))
            .expect("attached volume");
        assert_eq!(row["zone"].as_str(), Some(vol.zone.as_str()));
        zones.insert(vol.zone.clone());
    }
    assert_eq!(zones.len(), 3, "distinct zones");

    let table = lab.fks(&["-l", "cp", "clusters/lab"]).await;
    assert_eq!(table.status.code(), Some(0), "{}", text(&table.stderr));
    let out = text(&table.stdout);
    let mut lines = out.lines();
    assert_eq!(
        lines
            .next()
            .map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec![
            "NAME", "MACHINE", "ID", "APP", "REGION", "ZONE", "STATE", "6PN", "ADDRESS", "ROLE",
            "READY"
        ])
    );
    let body: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(body.len(), 3, "{out}");
    for (cells, row) in body.iter().zip(&rows) {
        let want = [
            row["name"].as_str().expect("name"),
            row["machine_id"].as_str().expect("id"),
            "lab-cp",
            "sjc",
            row["zone"].as_str().expect("zone"),
            "started",
            row["private_ip"].as_str().expect("ip"),
            "server",
            "no",
        ];
        assert_eq!(cells.as_slice(), want.as_slice(), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_of_a_missing_app_exits_1_with_a_sentence() {
    let lab = start_lab().await;
    let out = lab.fks(&["-l", "cp", "clusters/lab"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "cluster lab has no control plane yet (app lab-cp not found): create it with fks-bootstrap -c clusters/lab"
        ),
        "{err}"
    );
    let out = lab.fks(&["list", "web", "clusters/lab"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no node group web yet (app lab-ng-web not found)"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_exactly_this_clusters_objects_then_finds_nothing() {
    let lab = start_lab().await;
    let client = lab.client();
    let config = lab_config();
    make_control_plane(&client, &config).await;
    // A node group app of the same cluster, and foreign apps: another cluster whose name
    // starts like ours, and an unrelated app.
    let (ng_m, ng_v) = make_app_machine(
        &client,
        "lab-ng-web",
        "worker-ng-web-0",
        &[(META_CLUSTER, "lab"), (META_NODE, "worker-ng-web-0")],
    )
    .await;
    let (other_m, other_v) =
        make_app_machine(&client, "lab2-cp", "ctrl-0", &[(META_CLUSTER, "lab2")]).await;
    let (plain_m, plain_v) = make_app_machine(&client, "website", "web", &[]).await;
    client
        .set_secret(
            "website",
            "API_KEY",
            &SecretString::new("foreign".to_string()),
        )
        .await
        .expect("foreign secret");
    let cp_machines = live_machines(&client, "lab-cp").await;
    let cp_volumes = live_volumes(&client, "lab-cp").await;
    let cp_secrets = client.list_secrets("lab-cp").await.expect("secrets");
    assert!(!cp_secrets.is_empty());

    // Dry run: the plan on stdout, no change.
    let before = lab.mutations().await;
    let dry = lab.fks(&["destroy", "clusters/lab", "--dry-run"]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    let dry_out = text(&dry.stdout);
    assert!(dry_out.contains("would remove app lab-cp"), "{dry_out}");
    assert!(dry_out.contains(&ng_m.id), "{dry_out}");
    assert!(!dry_out.contains("lab2-cp") && !dry_out.contains("website"));
    assert_eq!(lab.mutations().await, before);

    let seq = lab.last_seq().await;
    let started = std::time::Instant::now();
    let out = lab.fks(&["destroy", "clusters/lab", "--yes"]).await;
    println!(
        "destroy of 4 machines, 4 volumes, 2 apps in the lab (process included): {:?}",
        started.elapsed()
    );
    let stdout = text(&out.stdout);
    println!("{stdout}{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for m in &cp_machines {
        assert!(
            stdout.contains(&format!("destroyed machine {}", m.id)),
            "{stdout}"
        );
    }
    assert!(stdout.contains("deleted app lab-cp") && stdout.contains("deleted app lab-ng-web"));

    // Lab state: ours gone, foreign untouched.
    for app in ["lab-cp", "lab-ng-web"] {
        let e = client.get_app(app).await.expect_err("app deleted");
        assert!(e.is_not_found(), "{app}: {e}");
    }
    assert_eq!(live_machines(&client, "lab2-cp").await[0].id, other_m.id);
    assert_eq!(live_volumes(&client, "lab2-cp").await[0].id, other_v.id);
    assert_eq!(live_machines(&client, "website").await[0].id, plain_m.id);
    assert_eq!(live_volumes(&client, "website").await[0].id, plain_v.id);
    let website_secrets = client.list_secrets("website").await.expect("secrets");
    assert_eq!(website_secrets.len(), 1);

    // The writes: only DELETEs, only in our apps, machines before volumes before secrets
    // before apps.
    let writes = lab.writes_since(seq).await;
    let kind = |path: &str| -> (u8, String) {
        let parts: Vec<&str> = path.trim_start_matches("/v1/apps/").split('/').collect();
        let app = parts[0].to_string();
        match parts.get(1).copied() {
            Some("machines") => (0, app),
            Some("volumes") => (1, app),
            Some("secrets") => (2, app),
            None => (3, app),
            Some(other) => panic!("unexpected write to {other} in {path}"),
        }
    };
    let mut counts = [0usize; 4];
    let mut last = 0;
    for (method, path) in &writes {
        assert_eq!(method, "DELETE", "{path}");
        let (k, app) = kind(path);
        assert!(app == "lab-cp" || app == "lab-ng-web", "{path}");
        assert!(k >= last, "out of order: {writes:?}");
        last = k;
        counts[k as usize] += 1;
    }
    assert_eq!(
        counts,
        [
            cp_machines.len() + 1,
            cp_volumes.len() + 1,
            cp_secrets.len(),
            2
        ],
        "{writes:?}"
    );
    assert!(writes.iter().any(|(_, p)| p.ends_with(&ng_v.id)));

    // A second destroy finds nothing and changes nothing.
    let before = lab.mutations().await;
    let again = lab.fks(&["destroy", "clusters/lab", "--yes"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("nothing to destroy"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(lab.mutations().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_keeps_the_wireguard_peer_until_the_orgs_last_cluster_goes() {
    let lab = start_lab().await;
    let client = lab.client();
    let clusters = tempfile::tempdir().expect("tempdir");
    let (lab_dir, lab_config) = cluster_copy(clusters.path(), "lab", "peerorg");
    let (lab2_dir, lab2_config) = cluster_copy(clusters.path(), "lab2", "peerorg");
    make_control_plane(&client, &lab_config).await;
    make_control_plane(&client, &lab2_config).await;
    let peer = saved_peer(&lab, "peerorg").await;
    assert!(peer.made_by_fks_bootstrap);
    let at_lab = || lab_peers(&lab, "peerorg");
    let saved = || tunnel::peer::load(&lab.fks_config_dir(), "peerorg").expect("peer file");

    // lab goes, lab2 remains: the peer stays, and destroy says why.
    let dry = lab.fks(&["destroy", &lab_dir, "--dry-run"]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    assert!(
        !text(&dry.stdout).contains("WireGuard"),
        "{}",
        text(&dry.stdout)
    );
    let keeping = format!(
        "keeping WireGuard peer {} of org peerorg: cluster(s) lab2 of the org remain",
        peer.name
    );
    assert!(
        text(&dry.stderr).contains(&keeping),
        "{}",
        text(&dry.stderr)
    );
    let out = lab.fks(&["destroy", &lab_dir, "--yes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&keeping),
        "{}",
        text(&out.stderr)
    );
    assert!(client.get_app("lab-cp").await.is_err());
    assert_eq!(at_lab().await, vec![peer.name.clone()]);
    assert_eq!(saved(), Some(peer.clone()));

    // lab2 is the org's last cluster: the dry run shows the peer, the destroy removes it.
    let dry = lab.fks(&["destroy", &lab2_dir, "--dry-run"]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    let dry_out = text(&dry.stdout);
    assert!(
        dry_out.contains(&format!(
            "would remove WireGuard peer {} of org peerorg",
            peer.name
        )),
        "{dry_out}"
    );
    assert_eq!(
        at_lab().await,
        vec![peer.name.clone()],
        "a dry run changes nothing"
    );
    let out = lab.fks(&["destroy", &lab2_dir, "--yes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "removed WireGuard peer {} of org peerorg",
            peer.name
        )),
        "{stdout}"
    );
    // The peer goes after the apps: the last line of the report.
    let app_at = stdout.find("deleted app lab2-cp").expect("app deleted");
    let peer_at = stdout.find("removed WireGuard peer").expect("peer removed");
    assert!(app_at < peer_at, "{stdout}");
    assert!(
        at_lab().await.is_empty(),
        "the peer is gone at the platform"
    );
    assert_eq!(saved(), None, "the saved key is forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_peer_removal_is_reported_and_the_destroy_still_succeeds() {
    let lab = start_lab().await;
    let client = lab.client();
    let clusters = tempfile::tempdir().expect("tempdir");
    let (dir, config) = cluster_copy(clusters.path(), "lab", "peerorg");
    make_control_plane(&client, &config).await;
    let peer = saved_peer(&lab, "peerorg").await;
    // GraphQL unreachable (nothing listens on port 9 here): the Machines API still works.
    let out = lab
        .fks_with(
            &["destroy", &dir, "--yes"],
            &[("FLY_API_BASE_URL", "http://127.0.0.1:9")],
        )
        .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the cluster is destroyed, but removing WireGuard peer {} of org peerorg failed",
            peer.name
        )) && stderr.contains("fks-bootstrap tunnel down"),
        "{stderr}"
    );
    assert!(
        client.get_app("lab-cp").await.is_err(),
        "the cluster is gone"
    );
    assert_eq!(lab_peers(&lab, "peerorg").await, vec![peer.name.clone()]);
    assert!(tunnel::peer::load(&lab.fks_config_dir(), "peerorg")
        .expect("peer file")
        .is_some());

    // `tunnel down` removes it later, though the org has no app left.
    let down = lab.fks(&["tunnel", "down", &dir]).await;
    assert_eq!(down.status.code(), Some(0), "{}", text(&down.stderr));
    assert!(lab_peers(&lab, "peerorg").await.is_empty());
    assert!(tunnel::peer::load(&lab.fks_config_dir(), "peerorg")
        .expect("peer file")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_without_yes_and_without_a_terminal_exits_2_and_changes_nothing() {
    let lab = start_lab().await;
    let client = lab.client();
    make_control_plane(&client, &lab_config()).await;
    let before = lab.mutations().await;
    let out = lab.fks(&["destroy", "clusters/lab"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(lab.mutations().await, before);
    assert_eq!(live_machines(&client, "lab-cp").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_refuses_when_our_app_holds_a_machine_without_our_metadata() {
    let lab = start_lab().await;
    let client = lab.client();
    make_control_plane(&client, &lab_config()).await;
    let (stray, _) = make_app_machine(&client, "lab-cp", "stray", &[]).await;
    let before = lab.mutations().await;
    let out = lab.fks(&["destroy", "clusters/lab", "--yes"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to destroy cluster lab") && err.contains(&stray.id),
        "{err}"
    );
    assert_eq!(lab.mutations().await, before);
    assert_eq!(live_machines(&client, "lab-cp").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_finishes_a_cluster_left_half_removed() {
    let lab = start_lab().await;
    let client = lab.client();
    make_control_plane(&client, &lab_config()).await;
    // As if an earlier destroy stopped after one machine: it is gone, its volume is not.
    let first = live_machines(&client, "lab-cp").await.remove(0);
    client
        .destroy_machine("lab-cp", &first.id, None)
        .await
        .expect("destroy one machine");
    client
        .wait(
            "lab-cp",
            &first.id,
            MachineState::Destroyed,
            None,
            tokio::time::Instant::now() + Duration::from_secs(30),
        )
        .await
        .expect("destroyed");
    let out = lab.fks(&["destroy", "clusters/lab", "--yes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains(&first.id), "already gone: {stdout}");
    assert_eq!(stdout.matches("deleted volume").count(), 3, "{stdout}");
    assert!(client
        .get_app("lab-cp")
        .await
        .expect_err("app deleted")
        .is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_gets_through_rate_limits_and_503s() {
    let lab = start_lab_with("rate_limits=on;error_rate=0.15").await;
    let client = lab.client();
    make_control_plane(&client, &lab_config()).await;
    let started = std::time::Instant::now();
    let out = lab.fks(&["destroy", "clusters/lab", "--yes"]).await;
    println!(
        "destroy under rate limits and 15% 503s: {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("destroyed machine").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("deleted volume").count(), 3, "{stdout}");
    let gone = client.get_app("lab-cp").await;
    assert!(
        matches!(&gone, Err(e) if e.is_not_found()),
        "app still there: {gone:?}"
    );
}

/// Runs the binary like [`Lab::fks`] with `registry`'s settings, the cluster keys in `xdg`.
async fn fks_keys(
    lab: &Lab,
    registry: &common::LabRegistry,
    xdg: &std::path::Path,
    args: &[&str],
) -> Output {
    tokio::process::Command::new(fks_bootstrap_binary())
        .args(args)
        .current_dir(repo_root())
        .envs(lab.env.iter().map(|(k, v)| (*k, v.as_str())))
        .envs(registry.env())
        .env("XDG_CONFIG_HOME", xdg)
        .env_remove("RUST_LOG")
        .env_remove("BOOTSTRAP_NODE_ID")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running fks-bootstrap")
}

#[tokio::test]
async fn create_and_nodegroup_add_converge_and_a_rerun_changes_nothing() {
    let lab = start_lab().await;
    let xdg = tempfile::tempdir().expect("tempdir");
    let (registry, dir) = common::registry_and_cluster(xdg.path(), TOKEN).await;
    let dir = dir.as_str();
    let client = lab.client();

    // A dry run plans everything and changes nothing.
    let before = lab.mutations().await;
    let dry = fks_keys(&lab, &registry, xdg.path(), &["-c", dir, "--dry-run"]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    let plan = text(&dry.stdout);
    assert!(
        plan.contains("nothing was changed") && plan.contains("ctrl-2"),
        "{plan}"
    );
    assert_eq!(lab.mutations().await, before, "a dry run mutated:\n{plan}");

    let out = fks_keys(&lab, &registry, xdg.path(), &["-c", dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let machines = live_machines(&client, "lab-cp").await;
    assert_eq!(machines.len(), 3, "{machines:?}");
    let zones: BTreeSet<String> = live_volumes(&client, "lab-cp")
        .await
        .into_iter()
        .map(|v| v.zone)
        .collect();
    assert_eq!(zones.len(), 3, "control-plane zones must be distinct");
    let summary = text(&out.stdout);
    for m in &machines {
        assert!(
            summary.contains(&m.id),
            "summary lacks {}:\n{summary}",
            m.id
        );
    }
    // The lab runs no guests and its env says FKS_MACHINES_ONLY=1: the k3s steps are skipped,
    // with a warning.
    assert!(
        text(&out.stderr).contains("machines only (FKS_MACHINES_ONLY=1 or --machines-only)"),
        "{}",
        text(&out.stderr)
    );

    let out = fks_keys(&lab, &registry, xdg.path(), &["nodegroup", "add", "0", dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let config = lab_config();
    let workers = live_machines(&client, "lab-ng-0").await;
    assert_eq!(workers.len(), config.node_group_size as usize);

    // Converged: both re-runs make no change.
    let before = lab.mutations().await;
    for args in [&["-c", dir][..], &["-a", "0", dir]] {
        let out = fks_keys(&lab, &registry, xdg.path(), args).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("nothing to do"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(lab.mutations().await, before, "a converged re-run mutated");
}

#[tokio::test]
async fn too_few_zones_is_refused_before_anything_is_made_naming_the_flag() {
    let lab = common::start_api_lab("sjc=2", "", 12, Duration::from_millis(30), TOKEN).await;
    let xdg = tempfile::tempdir().expect("tempdir");
    let (registry, dir) = common::registry_and_cluster(xdg.path(), TOKEN).await;
    let dir = dir.as_str();
    let before = lab.mutations().await;
    let out = fks_keys(&lab, &registry, xdg.path(), &["-c", dir]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("--allow-shared-zones") && err.contains("2 zone"),
        "{err}"
    );
    assert_eq!(lab.mutations().await, before, "refused, yet mutated");
    // With the flag, two servers share a zone.
    let out = fks_keys(
        &lab,
        &registry,
        xdg.path(),
        &["-c", dir, "--allow-shared-zones"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(live_machines(&lab.client(), "lab-cp").await.len(), 3);
}

/// Rewrites the cluster directory's `NODE_GROUP_SIZE`.
fn set_group_size(dir: &str, size: u32) {
    let path = std::path::Path::new(dir).join("config");
    let text = std::fs::read_to_string(&path).expect("config");
    let text: String = text
        .lines()
        .map(|l| match l.starts_with("NODE_GROUP_SIZE=") {
            true => format!("NODE_GROUP_SIZE={size}\n"),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&path, text).expect("config");
}

/// The lab answers 404 for this path.
async fn gone(lab: &Lab, path: &str) -> bool {
    let url = format!("{}/v1{path}", lab.base);
    let status = reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("lab")
        .status();
    status == reqwest::StatusCode::NOT_FOUND
}

/// Scale 3 -> 2 -> 3 and `nodegroup remove` on the API-only lab (machines only: the lab's env
/// says FKS_MACHINES_ONLY=1, so the kubectl steps are not planned; the guest test covers them).
#[tokio::test]
async fn scale_down_removes_the_highest_node_and_nodegroup_remove_leaves_nothing() {
    let lab = start_lab().await;
    let xdg = tempfile::tempdir().expect("tempdir");
    let (registry, dir) = common::registry_and_cluster(xdg.path(), TOKEN).await;
    let dir = dir.as_str();
    let client = lab.client();
    for args in [&["-c", dir][..], &["-a", "web", dir]] {
        let out = fks_keys(&lab, &registry, xdg.path(), args).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let cp_before: BTreeSet<String> = live_machines(&client, "lab-cp")
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    let workers = live_machines(&client, "lab-ng-web").await;
    assert_eq!(workers.len(), 3);
    let doomed = workers
        .iter()
        .find(|m| m.metadata(META_NODE) == Some("worker-ng-web-2"))
        .expect("worker 2")
        .clone();
    let doomed_volume = live_volumes(&client, "lab-ng-web")
        .await
        .into_iter()
        .find(|v| v.attached_machine_id.as_deref() == Some(doomed.id.as_str()))
        .expect("worker 2's volume");

    set_group_size(dir, 2);
    // The dry run shows the removal and changes nothing; without --yes and a terminal the
    // run is refused before any change.
    let before = lab.mutations().await;
    let dry = fks_keys(
        &lab,
        &registry,
        xdg.path(),
        &["-a", "web", dir, "--dry-run"],
    )
    .await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    let plan = text(&dry.stdout);
    assert!(
        plan.contains(&format!("worker-ng-web-2: remove machine {}", doomed.id))
            && plan.contains(&format!("remove volume {}", doomed_volume.id)),
        "{plan}"
    );
    let refused = fks_keys(&lab, &registry, xdg.path(), &["-a", "web", dir]).await;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("--yes"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(lab.mutations().await, before, "refused, yet mutated");

    let seq = lab.last_seq().await;
    let out = fks_keys(&lab, &registry, xdg.path(), &["-a", "web", dir, "--yes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let left: BTreeSet<String> = live_machines(&client, "lab-ng-web")
        .await
        .into_iter()
        .filter_map(|m| m.metadata(META_NODE).map(str::to_string))
        .collect();
    assert_eq!(
        left,
        ["worker-ng-web-0", "worker-ng-web-1"]
            .map(String::from)
            .into()
    );
    assert!(
        gone(
            &lab,
            &format!("/apps/lab-ng-web/volumes/{}", doomed_volume.id)
        )
        .await
    );
    // The machine went before its volume, and nothing else was written.
    let writes = lab.writes_since(seq).await;
    let destroy = writes
        .iter()
        .position(|(m, p)| m == "DELETE" && p.ends_with(&format!("/machines/{}", doomed.id)))
        .expect("machine destroyed");
    let volume = writes
        .iter()
        .position(|(m, p)| m == "DELETE" && p.ends_with(&format!("/volumes/{}", doomed_volume.id)))
        .expect("volume deleted");
    assert!(destroy < volume, "{writes:?}");
    assert_eq!(
        writes.iter().filter(|(m, _)| m != "GET").count(),
        2,
        "{writes:?}"
    );
    // Converged at 2: a re-run changes nothing.
    let before = lab.mutations().await;
    let out = fks_keys(&lab, &registry, xdg.path(), &["-a", "web", dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(lab.mutations().await, before, "a converged re-run mutated");

    // Back to 3: the node is made again.
    set_group_size(dir, 3);
    let out = fks_keys(&lab, &registry, xdg.path(), &["-a", "web", dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(live_machines(&client, "lab-ng-web").await.len(), 3);

    // nodegroup remove: refused without --yes, then everything of the group goes, the
    // control plane stays.
    let refused = fks_keys(
        &lab,
        &registry,
        xdg.path(),
        &["nodegroup", "remove", "web", dir],
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    let dry = fks_keys(
        &lab,
        &registry,
        xdg.path(),
        &["nodegroup", "remove", "web", dir, "--dry-run"],
    )
    .await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout).contains("remove app lab-ng-web"),
        "{}",
        text(&dry.stdout)
    );
    let machines = live_machines(&client, "lab-ng-web").await;
    let volumes = live_volumes(&client, "lab-ng-web").await;
    let out = fks_keys(
        &lab,
        &registry,
        xdg.path(),
        &["nodegroup", "remove", "web", dir, "--yes"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("done: delete app lab-ng-web"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        gone(&lab, "/apps/lab-ng-web").await,
        "the app is still there"
    );
    for m in &machines {
        assert!(gone(&lab, &format!("/apps/lab-ng-web/machines/{}", m.id)).await);
    }
    for v in &volumes {
        assert!(gone(&lab, &format!("/apps/lab-ng-web/volumes/{}", v.id)).await);
    }
    let cp_after: BTreeSet<String> = live_machines(&client, "lab-cp")
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(cp_after, cp_before, "the control plane was touched");
    // Again: nothing to remove, exit 0.
    let out = fks_keys(
        &lab,
        &registry,
        xdg.path(),
        &["nodegroup", "remove", "web", dir, "--yes"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("nothing to remove"),
        "{}",
        text(&out.stdout)
    );
}

/// `server replace` (issue 11 item 4) refuses before changing anything: a name that is no
/// server (exit 2), no terminal and no `--yes` (exit 2), and, when the etcd members cannot be
/// read through a started survivor (the API-only lab runs no guests, so exec answers no
/// member list), quorum cannot be checked (exit 1). The lab records no mutation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_replace_refuses_what_it_cannot_check_and_changes_nothing() {
    let lab = start_lab().await;
    let client = lab.client();
    let config = lab_config();
    make_control_plane(&client, &config).await;
    client
        .set_secret(
            &config.cp_app(),
            "K3S_TOKEN",
            &SecretString::new("dGVzdAo=".to_string()),
        )
        .await
        .expect("token secret");
    let xdg = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(fks_bootstrap_binary());
        cmd.args(args)
            .current_dir(repo_root())
            .envs(lab.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("XDG_CONFIG_HOME", xdg.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        async move { cmd.output().await.expect("running fks-bootstrap") }
    };
    let before = lab.mutations().await;
    let out = run(&["server", "replace", "ctrl-3", "clusters/lab", "--yes"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ctrl-3 is not a server of the control plane"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["server", "replace", "ctrl-1", "clusters/lab"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out.stderr)
    );
    for args in [
        &["server", "replace", "ctrl-1", "clusters/lab", "--yes"][..],
        &["server", "replace", "ctrl-1", "clusters/lab", "--dry-run"],
    ] {
        let out = run(args).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("refusing to replace ctrl-1 in app lab-cp: its etcd members could not be read through a started survivor"),
            "{err}"
        );
        assert!(err.contains("(nothing was changed)"), "{err}");
    }
    assert_eq!(lab.mutations().await, before, "a refused replace mutated");
    assert_eq!(live_machines(&client, "lab-cp").await.len(), 3);
}

/// Rewrites one `KEY=VALUE` line of the cluster directory's config; returns the old value.
fn set_config_key(dir: &str, key: &str, value: &str) -> String {
    let path = std::path::Path::new(dir).join("config");
    let text = std::fs::read_to_string(&path).expect("config");
    let prefix = format!("{key}=");
    let mut old = None;
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix(&prefix) {
            Some(v) => {
                old = Some(v.to_string());
                format!("{prefix}{value}\n")
            }
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&path, text).expect("config");
    old.unwrap_or_else(|| panic!("no {key} in {}", path.display()))
}

/// Creates the control plane from `dir`, then doubles CP_VM_MEMORY in its config (config
/// drift for the next run). Returns the old and the new memory.
async fn created_then_memory_doubled(
    lab: &Lab,
    registry: &common::LabRegistry,
    xdg: &std::path::Path,
    dir: &str,
) -> (u32, u32) {
    let out = fks_keys(lab, registry, xdg, &["-c", dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let old: u32 = set_config_key(dir, "CP_VM_MEMORY", "0")
        .parse()
        .expect("CP_VM_MEMORY");
    let new = old * 2;
    set_config_key(dir, "CP_VM_MEMORY", &new.to_string());
    (old, new)
}

/// Config drift (issue 11 item 2): a bigger CP_VM_MEMORY reaches the existing servers as
/// updates, one server at a time, each under a lease; the dry run shows the diff; a re-run
/// after it changes nothing.
#[tokio::test]
async fn changed_server_memory_updates_each_server_under_a_lease_one_at_a_time() {
    let lab = start_lab().await;
    let xdg = tempfile::tempdir().expect("tempdir");
    let (registry, dir) = common::registry_and_cluster(xdg.path(), TOKEN).await;
    let dir = dir.as_str();
    let client = lab.client();
    let (old, new) = created_then_memory_doubled(&lab, &registry, xdg.path(), dir).await;

    let before = lab.mutations().await;
    let dry = fks_keys(&lab, &registry, xdg.path(), &["-c", dir, "--dry-run"]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    let plan = text(&dry.stdout);
    assert_eq!(
        plan.matches(&format!("guest memory_mb: {old} -> {new}"))
            .count(),
        3,
        "{plan}"
    );
    assert!(!plan.contains("PRIVATE KEY"), "{plan}");
    assert_eq!(lab.mutations().await, before, "a dry run mutated:\n{plan}");

    let seq = lab.last_seq().await;
    let out = fks_keys(&lab, &registry, xdg.path(), &["-c", dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let writes = lab.writes_since(seq).await;
    // Per server, in order, never interleaved: lease, update, release.
    let mut ids = Vec::new();
    for w in writes.chunks(3) {
        let lease = &w[0];
        assert_eq!(lease.0, "POST", "{writes:?}");
        let path = lease.1.strip_suffix("/lease").expect("a lease first");
        assert_eq!(w[1], ("POST".to_string(), path.to_string()), "{writes:?}");
        assert_eq!(w[2], ("DELETE".to_string(), lease.1.clone()), "{writes:?}");
        ids.push(path.rsplit('/').next().expect("id").to_string());
    }
    assert_eq!(ids.len(), 3, "{writes:?}");
    assert_eq!(writes.len(), 9, "{writes:?}");
    for m in live_machines(&client, "lab-cp").await {
        let guest = m.config.and_then(|c| c.guest).expect("guest");
        assert_eq!(guest.memory_mb, Some(new), "{}", m.id);
        assert!(ids.contains(&m.id), "{} not updated: {ids:?}", m.id);
    }

    let before = lab.mutations().await;
    let out = fks_keys(&lab, &registry, xdg.path(), &["-c", dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing to do"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(lab.mutations().await, before, "a converged re-run mutated");
}

/// `upgrade` (issue 11 item 2): a skipped minor is refused with why and changes nothing; one
/// minor up is written to the config, then rolled out to the servers one at a time, then to
/// the node group; a second `upgrade` changes nothing. The API-only lab runs no guests, so
/// the image stays the config's IMAGE and only the nodes' cluster config file changes.
#[tokio::test]
async fn upgrade_refuses_a_skipped_minor_then_rolls_servers_before_workers() {
    let lab = start_lab().await;
    let xdg = tempfile::tempdir().expect("tempdir");
    let (registry, dir) = common::registry_and_cluster(xdg.path(), TOKEN).await;
    let dir = dir.as_str();
    let client = lab.client();
    for args in [&["-c", dir][..], &["-a", "0", dir]] {
        let out = fks_keys(&lab, &registry, xdg.path(), args).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let config_path = std::path::Path::new(dir).join("config");
    let before_text = std::fs::read_to_string(&config_path).expect("config");
    assert!(
        before_text.contains("K3S_VERSION=\"v1.33.7+k3s1\""),
        "{before_text}"
    );

    let before = lab.mutations().await;
    let out = fks_keys(
        &lab,
        &registry,
        xdg.path(),
        &["upgrade", dir, "--k3s-version", "v1.35.0+k3s1"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("skips Kubernetes minor(s) 1.34..1.34"),
        "{err}"
    );
    assert_eq!(lab.mutations().await, before, "refused, yet mutated");
    assert_eq!(
        std::fs::read_to_string(&config_path).expect("config"),
        before_text
    );

    let seq = lab.last_seq().await;
    let out = fks_keys(
        &lab,
        &registry,
        xdg.path(),
        &["upgrade", dir, "--k3s-version", "v1.34.1+k3s1"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&config_path)
        .expect("config")
        .contains("K3S_VERSION=v1.34.1+k3s1"));
    let updates: Vec<String> = lab
        .writes_since(seq)
        .await
        .into_iter()
        .filter(|(m, p)| m == "POST" && p.contains("/machines/") && !p.ends_with("/lease"))
        .map(|(_, p)| p)
        .collect();
    let cp = live_machines(&client, "lab-cp").await;
    let ng = live_machines(&client, "lab-ng-0").await;
    assert_eq!(updates.len(), cp.len() + ng.len(), "{updates:?}");
    // Every server before any worker.
    let first_worker = updates
        .iter()
        .position(|p| p.contains("/apps/lab-ng-0/"))
        .expect("workers updated");
    assert_eq!(first_worker, cp.len(), "{updates:?}");
    for m in cp.iter().chain(&ng) {
        assert_eq!(
            fks_bootstrap::plan::skew::running_version(m).as_deref(),
            Some("v1.34.1+k3s1"),
            "{}",
            m.id
        );
    }

    let before = lab.mutations().await;
    let out = fks_keys(&lab, &registry, xdg.path(), &["upgrade", dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(lab.mutations().await, before, "a converged upgrade mutated");
}

/// A run SIGKILLed while it held an update lease leaves that lease behind; here the test takes
/// it (12 s, longer than the client's own 409 retries) and never releases it. The next `-c`
/// with drifted memory reads the lease, says in a log line whose lease it waits for and until
/// when, waits it out and updates every server; no lease is left afterwards.
#[tokio::test]
async fn an_update_waits_out_the_lease_a_killed_run_left_behind() {
    const STALE_TTL: u64 = 12;
    let lab = start_lab().await;
    let xdg = tempfile::tempdir().expect("tempdir");
    let (registry, dir) = common::registry_and_cluster(xdg.path(), TOKEN).await;
    let dir = dir.as_str();
    let client = lab.client();
    let (_, new) = created_then_memory_doubled(&lab, &registry, xdg.path(), dir).await;

    let cp = live_machines(&client, "lab-cp").await;
    let victim = cp[1].id.clone();
    let stale = client
        .acquire_lease("lab-cp", &victim, STALE_TTL, Some("fks-bootstrap update"))
        .await
        .expect("the killed run's lease");

    let seq = lab.last_seq().await;
    let started = std::time::Instant::now();
    let out = fks_keys(&lab, &registry, xdg.path(), &["-c", dir]).await;
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "machine {victim} in app lab-cp is leased by lab@tokens.fly.io (fks-bootstrap update) until {}",
            stale.expires_at
        )) && err.contains("for that lease to expire"),
        "{err}"
    );
    eprintln!("figure: -c with a {STALE_TTL} s stale lease on one server took {took:?}");
    for m in live_machines(&client, "lab-cp").await {
        let guest = m.config.and_then(|c| c.guest).expect("guest");
        assert_eq!(guest.memory_mb, Some(new), "{}", m.id);
        assert_eq!(
            client.get_lease("lab-cp", &m.id).await.expect("lease"),
            None,
            "{}",
            m.id
        );
    }
    // The victim's lease was refused while the stale one lived, then taken and released.
    let lease_path = format!("/apps/lab-cp/machines/{victim}/lease");
    let events = lab.lab_get(&format!("/lab/v1/events?since={seq}")).await;
    let on_lease: Vec<(String, u64)> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| {
            e["path"].as_str().is_some_and(|p| p.ends_with(&lease_path)) && e["method"] != "GET"
        })
        .map(|e| {
            (
                e["method"].as_str().expect("method").to_string(),
                e["status"].as_u64().expect("status"),
            )
        })
        .collect();
    let first_ok = on_lease
        .iter()
        .position(|(m, s)| m == "POST" && *s == 201)
        .expect("the lease taken at last");
    assert!(first_ok > 0, "{on_lease:?}");
    assert!(
        on_lease[..first_ok].iter().all(|(_, s)| *s == 409),
        "{on_lease:?}"
    );
    assert_eq!(
        on_lease.last(),
        Some(&("DELETE".to_string(), 200)),
        "{on_lease:?}"
    );
}

/// A scale-down right after an update run was killed: the worker to remove still carries the
/// killed run's lease (here taken by the test, 12 s, never released). The destroy is refused
/// with 409 while it lives; `-a` waits it out, says so, and removes the worker.
#[tokio::test]
async fn a_scale_down_waits_out_the_lease_a_killed_run_left_on_the_doomed_worker() {
    const STALE_TTL: u64 = 12;
    let lab = start_lab().await;
    let xdg = tempfile::tempdir().expect("tempdir");
    let (registry, dir) = common::registry_and_cluster(xdg.path(), TOKEN).await;
    let dir = dir.as_str();
    let client = lab.client();
    for args in [&["-c", dir][..], &["-a", "web", dir]] {
        let out = fks_keys(&lab, &registry, xdg.path(), args).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let doomed = live_machines(&client, "lab-ng-web")
        .await
        .into_iter()
        .find(|m| m.metadata(META_NODE) == Some("worker-ng-web-2"))
        .expect("worker 2");
    let stale = client
        .acquire_lease(
            "lab-ng-web",
            &doomed.id,
            STALE_TTL,
            Some("fks-bootstrap update"),
        )
        .await
        .expect("the killed run's lease");
    set_group_size(dir, 2);
    let out = fks_keys(&lab, &registry, xdg.path(), &["-a", "web", dir, "--yes"]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "machine {} in app lab-ng-web is leased by lab@tokens.fly.io (fks-bootstrap update) until {}",
            doomed.id, stale.expires_at
        )),
        "{err}"
    );
    let left: Vec<String> = live_machines(&client, "lab-ng-web")
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&doomed.id), "{left:?}");
    assert_eq!(live_volumes(&client, "lab-ng-web").await.len(), 2);
}
