//! The real Fly client (`fks_bootstrap::fly::Client`) against the lab started in-process on
//! 127.0.0.1:0: every endpoint the client offers, then the faults the lab injects (5xx, 429,
//! ambiguous creates, capacity) and what the client must do about them: retry what is safe,
//! recover ambiguous creates without duplicates, report errors a user can act on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fks_bootstrap::fly::{
    Client, CreateAppRequest, CreateMachineRequest, CreateVolumeRequest, Error, ExecRequest,
    MachineConfig, MachineListFilter, MachineMount, MachineState, Options, RetryPolicy,
    SecretString, StopRequest, Token, UpdateMachineRequest, UpdateVolumeRequest, LAUNCH_ID_KEY,
};
use serde_json::Value;
use tokio::time::Instant;

mod common;

const TOKEN: &str = "lab-client-test-token";

/// A lab running in this process.
type Lab = common::ApiLab;

impl Lab {
    async fn start(faults: &str, seed: u64) -> Lab {
        common::start_api_lab(
            "sjc=3,iad=2",
            faults,
            seed,
            Duration::from_millis(20),
            TOKEN,
        )
        .await
    }

    /// A client with fast retries and a fixed seed.
    fn client(&self, client_rate_limit: bool) -> Client {
        self.client_with(
            client_rate_limit,
            RetryPolicy {
                max_attempts: 8,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(500),
                max_elapsed: Duration::from_secs(30),
            },
        )
    }

    /// A client with the given retry policy and a fixed seed.
    fn client_with(&self, client_rate_limit: bool, retry: RetryPolicy) -> Client {
        let options = Options {
            rate_limit: client_rate_limit,
            seed: Some(9),
            retry,
            create_settle: Duration::from_millis(10),
            ..Options::default()
        };
        Client::new(&self.base, Token::new(TOKEN), options).expect("client")
    }

    /// `{status: count}` of one route from the lab's introspection endpoint.
    async fn statuses(&self, route: &str) -> BTreeMap<String, u64> {
        let stats: Value = reqwest::get(format!("{}/lab/v1/stats", self.base))
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json");
        stats["by_route"][route]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn machine_req(name: &str) -> CreateMachineRequest {
    CreateMachineRequest {
        name: Some(name.into()),
        region: Some("sjc".into()),
        config: MachineConfig {
            image: "registry-1.docker.io/library/ubuntu:22.04".into(),
            ..MachineConfig::default()
        },
        ..CreateMachineRequest::default()
    }
}

fn soon(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// The full message chain, as the binary prints it.
fn chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[tokio::test]
async fn every_endpoint_round_trips() {
    let lab = Lab::start("", 1).await;
    let c = lab.client(true);
    let app = "demo-cp";

    // Apps.
    let created = c
        .create_app(&CreateAppRequest::new(app, "personal"))
        .await
        .expect("create app");
    assert_eq!(created.name, app);
    assert_eq!(c.get_app(app).await.expect("get app").name, app);
    let apps = c.list_apps("personal").await.expect("list apps");
    assert!(apps.apps.iter().any(|a| a.name == app));

    // Volumes.
    let vreq = CreateVolumeRequest {
        name: "ctrl_0".into(),
        region: Some("sjc".into()),
        size_gb: Some(10),
        ..CreateVolumeRequest::default()
    };
    let vol = c
        .create_volume(app, &vreq, &BTreeSet::new())
        .await
        .expect("create volume");
    assert_eq!(vol.name, "ctrl_0");
    assert_eq!(vol.region, "sjc");
    assert!(!vol.zone.is_empty());
    assert_eq!(c.list_volumes(app).await.expect("list volumes").len(), 1);
    assert_eq!(
        c.get_volume(app, &vol.id).await.expect("get volume").id,
        vol.id
    );
    let updated = c
        .update_volume(
            app,
            &vol.id,
            &UpdateVolumeRequest {
                snapshot_retention: Some(7),
                auto_backup_enabled: None,
            },
        )
        .await
        .expect("update volume");
    assert_eq!(updated.snapshot_retention, Some(7));
    let extended = c.extend_volume(app, &vol.id, 20).await.expect("extend");
    assert_eq!(extended.volume.size_gb, 20);

    // Machines.
    let mut req = machine_req("ctrl-0");
    req.config.mounts.push(MachineMount {
        volume: vol.id.clone(),
        path: "/var/lib/rancher".into(),
        ..MachineMount::default()
    });
    req.config
        .metadata
        .insert("fks_role".into(), "server".into());
    let m = c.create_machine(app, req).await.expect("create machine");
    assert!(m.metadata(LAUNCH_ID_KEY).is_some(), "launch id was added");
    c.wait(
        app,
        &m.id,
        MachineState::Started,
        Some(&m.instance_id),
        soon(10),
    )
    .await
    .expect("started");
    assert_eq!(
        c.get_machine(app, &m.id).await.expect("get").state,
        MachineState::Started
    );
    let servers = c
        .list_machines(app, &MachineListFilter::metadata("fks_role", "server"))
        .await
        .expect("list by metadata");
    assert_eq!(servers.len(), 1);
    let agents = c
        .list_machines(app, &MachineListFilter::metadata("fks_role", "agent"))
        .await
        .expect("list by metadata");
    assert!(agents.is_empty());
    let stopped = c
        .list_machines(
            app,
            &MachineListFilter {
                states: vec![MachineState::Stopped],
                ..MachineListFilter::default()
            },
        )
        .await
        .expect("list by state");
    assert!(stopped.is_empty());
    assert_eq!(
        c.get_volume(app, &vol.id)
            .await
            .expect("get volume")
            .attached_machine_id
            .as_deref(),
        Some(m.id.as_str())
    );

    // Leases guard mutations.
    let lease = c
        .acquire_lease(app, &m.id, 60, Some("client test"))
        .await
        .expect("lease");
    assert_eq!(
        c.get_lease(app, &m.id)
            .await
            .expect("get lease")
            .map(|l| l.nonce),
        Some(lease.nonce.clone())
    );
    let refused = c
        .stop_machine(app, &m.id, &StopRequest::default(), None)
        .await
        .expect_err("stop without the nonce");
    assert_eq!(refused.status_code(), Some(409), "{}", chain(&refused));
    c.stop_machine(app, &m.id, &StopRequest::default(), Some(&lease.nonce))
        .await
        .expect("stop with the nonce");
    c.wait(app, &m.id, MachineState::Stopped, None, soon(10))
        .await
        .expect("stopped");
    let refreshed = c
        .refresh_lease(app, &m.id, &lease.nonce, 120)
        .await
        .expect("refresh");
    assert!(refreshed.expires_at >= lease.expires_at);
    c.start_machine(app, &m.id, Some(&lease.nonce))
        .await
        .expect("start");
    c.release_lease(app, &m.id, &lease.nonce)
        .await
        .expect("release");
    assert_eq!(c.get_lease(app, &m.id).await.expect("get lease"), None);
    c.wait(app, &m.id, MachineState::Started, None, soon(10))
        .await
        .expect("started again");

    // Update replaces the whole config and makes a new version.
    let current = c.get_machine(app, &m.id).await.expect("get");
    let mut config = current.config.clone().expect("config");
    config.env.insert("FKS_ROLE".into(), "server".into());
    let after = c
        .update_machine(
            app,
            &m.id,
            &UpdateMachineRequest {
                config,
                ..UpdateMachineRequest::default()
            },
            None,
        )
        .await
        .expect("update");
    assert_ne!(after.instance_id, current.instance_id);
    c.wait(
        app,
        &m.id,
        MachineState::Started,
        Some(&after.instance_id),
        soon(10),
    )
    .await
    .expect("started after update");
    let reread = c.get_machine(app, &m.id).await.expect("get");
    let reread_config = reread.config.expect("config");
    assert_eq!(reread_config.env["FKS_ROLE"], "server");
    assert_eq!(
        reread_config.mounts[0].volume, vol.id,
        "update kept the mount"
    );

    // Metadata.
    c.set_metadata(app, &m.id, "fks_node", "ctrl-0")
        .await
        .expect("set metadata");
    assert_eq!(
        c.get_metadata(app, &m.id).await.expect("metadata")["fks_node"],
        "ctrl-0"
    );
    assert_eq!(
        c.get_metadata_key(app, &m.id, "fks_node")
            .await
            .expect("key")
            .as_deref(),
        Some("ctrl-0")
    );
    c.delete_metadata(app, &m.id, "fks_node")
        .await
        .expect("delete metadata");
    assert_eq!(
        c.get_metadata_key(app, &m.id, "fks_node")
            .await
            .expect("key"),
        None
    );

    // Exec: the lab in API-only mode has no guest and says so with a precondition error.
    let exec = c
        .exec(
            app,
            &m.id,
            &ExecRequest {
                command: vec!["true".into()],
                timeout: Some(5),
                ..ExecRequest::default()
            },
        )
        .await;
    match exec {
        Ok(out) => assert_eq!(out.exit_code, 0),
        Err(e) => {
            assert_eq!(e.status_code(), Some(412), "{}", chain(&e));
            assert!(chain(&e).contains("API-only"), "{}", chain(&e));
        }
    }

    // Secrets.
    let set = c
        .set_secret(app, "K3S_TOKEN", &SecretString::new("K10abc::server:xyz"))
        .await
        .expect("set secret");
    assert_eq!(set.name, "K3S_TOKEN");
    let listed = c.list_secrets(app).await.expect("list secrets");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].value, None, "a list never carries values");
    c.delete_secret(app, "K3S_TOKEN")
        .await
        .expect("delete secret");
    assert!(c.list_secrets(app).await.expect("list").is_empty());

    // Tear down.
    c.destroy_machine(app, &m.id, None).await.expect("destroy");
    c.wait(app, &m.id, MachineState::Destroyed, None, soon(10))
        .await
        .expect("destroyed");
    c.delete_volume(app, &vol.id).await.expect("delete volume");
    c.delete_app(app, true).await.expect("delete app");
    let gone = c.get_app(app).await.expect_err("deleted");
    assert!(gone.is_not_found(), "{}", chain(&gone));
}

#[tokio::test]
async fn ambiguous_machine_creates_never_duplicate() {
    let lab = Lab::start("ambiguous_create=0.5", 3).await;
    let c = lab.client(false);
    let app = "amb-m";
    c.create_app(&CreateAppRequest::new(app, "personal"))
        .await
        .expect("app");
    let mut ids = BTreeSet::new();
    for i in 0..8 {
        let m = c
            .create_machine(app, machine_req(&format!("node-{i}")))
            .await
            .expect("create recovers");
        ids.insert(m.id);
    }
    let all = c
        .list_machines(app, &MachineListFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 8, "exactly one machine per create");
    assert_eq!(ids.len(), 8);
    let names: BTreeSet<&str> = all.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names.len(), 8);
    let posts = lab.statuses("POST /v1/apps/{app}/machines").await;
    let ambiguous: u64 = posts
        .iter()
        .filter(|(s, _)| s.as_str() == "408" || s.starts_with('5'))
        .map(|(_, n)| n)
        .sum();
    println!("machine creates answered by the lab: {posts:?}");
    assert!(ambiguous > 0, "the fault fired at least once: {posts:?}");
}

#[tokio::test]
async fn ambiguous_volume_creates_never_duplicate() {
    let lab = Lab::start("ambiguous_create=1", 4).await;
    let c = lab.client(false);
    let app = "amb-v";
    c.create_app(&CreateAppRequest::new(app, "personal"))
        .await
        .expect("app");
    let mut before = BTreeSet::new();
    for i in 0..3 {
        let req = CreateVolumeRequest {
            name: format!("ctrl_{i}"),
            region: Some("sjc".into()),
            size_gb: Some(1),
            ..CreateVolumeRequest::default()
        };
        let v = c
            .create_volume(app, &req, &before)
            .await
            .expect("create recovers");
        assert_eq!(v.name, req.name);
        before.insert(v.id);
    }
    let all = c.list_volumes(app).await.expect("list");
    assert_eq!(all.len(), 3, "exactly one volume per create");
    let posts = lab.statuses("POST /v1/apps/{app}/volumes").await;
    assert_eq!(
        posts.values().sum::<u64>(),
        3,
        "no create was replayed: {posts:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_creates_stay_unique() {
    let lab = Lab::start("error_rate=0.3", 5).await;
    let c = lab.client(false);
    let app = "flaky";
    c.create_app(&CreateAppRequest::new(app, "personal"))
        .await
        .expect("app");
    for i in 0..5 {
        let m = c
            .create_machine(app, machine_req(&format!("n{i}")))
            .await
            .expect("create");
        c.get_machine(app, &m.id).await.expect("get");
    }
    let all = c
        .list_machines(app, &MachineListFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 5);
    let gets = lab.statuses("GET /v1/apps/{app}/machines/{id}").await;
    println!("machine gets answered by the lab: {gets:?}");
}

#[tokio::test]
async fn rate_limited_bursts_all_succeed() {
    for client_side in [true, false] {
        let lab = Lab::start("rate_limits=on", 6).await;
        // The production retry policy: without client-side limiting it must absorb the 429s.
        let c = lab.client_with(client_side, RetryPolicy::default());
        let app = "burst";
        c.create_app(&CreateAppRequest::new(app, "personal"))
            .await
            .expect("app");
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(
                    async move { c.create_machine(app, machine_req(&format!("w{i}"))).await },
                )
            })
            .collect();
        for t in tasks {
            t.await
                .expect("join")
                .expect("create within the rate limit");
        }
        let all = c
            .list_machines(app, &MachineListFilter::default())
            .await
            .expect("list");
        assert_eq!(all.len(), 6);
        let posts = lab.statuses("POST /v1/apps/{app}/machines").await;
        println!(
            "client-side limiting {client_side}: 6 parallel creates took {:?}, lab answered {posts:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn capacity_failure_says_to_pick_another_region() {
    let lab = Lab::start("capacity=sjc", 7).await;
    let c = lab.client(true);
    c.create_app(&CreateAppRequest::new("full", "personal"))
        .await
        .expect("app");
    let req = CreateVolumeRequest {
        name: "data".into(),
        region: Some("sjc".into()),
        ..CreateVolumeRequest::default()
    };
    let err = c
        .create_volume("full", &req, &BTreeSet::new())
        .await
        .expect_err("no capacity");
    assert_eq!(err.fly_status(), Some("insufficient_capacity"));
    let text = chain(&err);
    assert!(
        text.starts_with("creating volume data in app full: "),
        "{text}"
    );
    assert!(text.contains("another region"), "{text}");
}

#[tokio::test]
async fn wrong_token_is_reported_with_advice() {
    let lab = Lab::start("", 8).await;
    let c = Client::new(&lab.base, Token::new("wrong"), Options::default()).expect("client");
    let err = c.get_app("any").await.expect_err("401");
    assert_eq!(err.status_code(), Some(401));
    assert!(
        chain(&err).contains("check FLY_API_TOKEN"),
        "{}",
        chain(&err)
    );
}

#[tokio::test]
async fn wait_deadline_names_the_machine_and_its_state() {
    let lab = Lab::start("", 9).await;
    let c = lab.client(true);
    c.create_app(&CreateAppRequest::new("slow", "personal"))
        .await
        .expect("app");
    let mut req = machine_req("idle");
    req.skip_launch = Some(true);
    let m = c.create_machine("slow", req).await.expect("create");
    let err = c
        .wait("slow", &m.id, MachineState::Started, None, soon(2))
        .await
        .expect_err("never starts");
    match &err {
        Error::WaitTimeout {
            machine,
            want,
            last,
            ..
        } => {
            assert_eq!(machine, &m.id);
            assert_eq!(*want, MachineState::Started);
            assert!(last.is_some(), "{err}");
        }
        other => panic!("expected a wait timeout, got {}", chain(other)),
    }
}

/// A new app answers 404 for a moment (the lab's `app_settle` fault, modelling Fly's eventual
/// consistency, reference fly-runtime.md §6): a bare POST is followed by a 404, but
/// `create_app` returns only once the app answers, so the calls after it succeed at once.
#[tokio::test]
async fn create_app_waits_until_a_new_app_is_usable() {
    let lab = Lab::start("app_settle=600ms", 12).await;
    let c = lab.client(false);
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/v1/apps", lab.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"name": "bare", "org_slug": "personal"}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 201);
    let e = c.list_volumes("bare").await.expect_err("not usable yet");
    assert!(e.is_not_found(), "{}", chain(&e));

    let started = Instant::now();
    c.create_app(&CreateAppRequest::new("waited", "personal"))
        .await
        .expect("created and usable");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "returned before the app settled: {:?}",
        started.elapsed()
    );
    c.list_volumes("waited").await.expect("usable at once");
    c.set_secret("waited", "GREETING", &SecretString::new("hi"))
        .await
        .expect("secret at once");
    let gets = lab.statuses("GET /v1/apps/{app}").await;
    assert!(gets.get("404").copied().unwrap_or(0) >= 1, "{gets:?}");
}
