//! Tests of the client's request path against a scripted local server: headers, retries per
//! call class, ambiguous-create recovery without duplicates, wait loops, error mapping.
//! (Tests against the full Fly emulator live in `lab/tests/`.)

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::testserver::{json, Answer, Server};
use super::*;

fn options() -> Options {
    Options {
        rate_limit: false,
        seed: Some(1),
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_elapsed: Duration::from_secs(10),
        },
        create_settle: Duration::ZERO,
        ..Options::default()
    }
}

fn client(server: &Server, token: &str) -> Client {
    Client::new(&server.base, Token::new(token), options()).expect("client")
}

fn machine_json(id: &str, launch_id: &str) -> serde_json::Value {
    json!({
        "id": id, "name": "ctrl-1", "state": "created", "region": "sjc",
        "instance_id": "01HEPA330HZ37A78TK080NAK1M",
        "config": {"image": "img", "metadata": {LAUNCH_ID_KEY: launch_id}}
    })
}

fn create_req() -> CreateMachineRequest {
    CreateMachineRequest {
        name: Some("ctrl-1".into()),
        region: Some("sjc".into()),
        config: MachineConfig {
            image: "img".into(),
            ..MachineConfig::default()
        },
        ..CreateMachineRequest::default()
    }
}

fn launch_id_of(body: &serde_json::Value) -> String {
    body["config"]["metadata"][LAUNCH_ID_KEY]
        .as_str()
        .expect("launch id in metadata")
        .to_string()
}

#[tokio::test]
async fn plain_token_is_sent_as_bearer_and_flyv1_unchanged() {
    let server = Server::start(|_, _| json(200, json!({"id": "a", "name": "demo"}))).await;
    client(&server, "plain").get_app("demo").await.expect("get");
    client(&server, "FlyV1 fm2_a,fm2_b")
        .get_app("demo")
        .await
        .expect("get");
    let seen = server.seen();
    assert_eq!(seen[0].headers["authorization"], "Bearer plain");
    assert_eq!(seen[1].headers["authorization"], "FlyV1 fm2_a,fm2_b");
    assert_eq!(seen[0].path(), "/v1/apps/demo");
}

#[tokio::test]
async fn idempotent_get_is_retried_on_503_and_429() {
    let server = Server::start(|_, before| match before.len() {
        0 => json(503, json!({"error": "unavailable"})),
        1 => json(429, json!({})),
        _ => json(200, machine_json("m1", "x")),
    })
    .await;
    let m = client(&server, "t")
        .get_machine("demo", "m1")
        .await
        .expect("third attempt succeeds");
    assert_eq!(m.id, "m1");
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn retries_are_bounded_and_error_keeps_status_and_attempts() {
    let server = Server::start(|_, _| json(502, json!({"error": "bad gateway"}))).await;
    let err = client(&server, "t")
        .list_volumes("demo")
        .await
        .expect_err("always 502");
    assert_eq!(err.status_code(), Some(502));
    assert!(err.is_retryable());
    let api = err.api().expect("api error");
    assert_eq!(api.attempts, 4);
    assert_eq!(api.request_id.as_deref(), Some("01TEST-lab"));
    assert_eq!(err.to_string(), "listing volumes of app demo");
    assert_eq!(server.seen().len(), 4);
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_says_check_the_token() {
    let server = Server::start(|_, _| {
        json(
            401,
            json!({"error": "Authenticate: token validation error"}),
        )
    })
    .await;
    let err = client(&server, "t")
        .get_machine("demo", "m1")
        .await
        .expect_err("401");
    let source = std::error::Error::source(&err).expect("source").to_string();
    assert!(source.contains("check FLY_API_TOKEN"), "{source}");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn ambiguous_create_with_nothing_made_creates_again_with_same_launch_id() {
    let server = Server::start(|req, before| {
        let posts = before.iter().filter(|s| s.method == "POST").count();
        match (req.method.as_str(), posts) {
            ("POST", 0) => json(503, json!({"error": "upstream"})),
            ("GET", _) => json(200, json!([])),
            ("POST", _) => json(200, machine_json("m2", &launch_id_of(&req.json()))),
            _ => json(500, json!({})),
        }
    })
    .await;
    let m = client(&server, "t")
        .create_machine("demo-cp", create_req())
        .await
        .expect("created after recovery");
    assert_eq!(m.id, "m2");
    let seen = server.seen();
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["POST", "GET", "POST"]);
    let first = launch_id_of(&seen[0].json());
    assert_eq!(first, launch_id_of(&seen[2].json()));
    assert!(
        seen[1].target.ends_with(&format!(
            "/v1/apps/demo-cp/machines?metadata.{LAUNCH_ID_KEY}={first}"
        )),
        "{}",
        seen[1].target
    );
}

#[tokio::test]
async fn ambiguous_create_that_made_a_machine_adopts_it_without_a_second_create() {
    let server = Server::start(|req, before| match req.method.as_str() {
        "POST" => json(408, json!({"error": "timed out"})),
        _ => {
            let id = launch_id_of(&before[0].json());
            json(
                200,
                json!([machine_json("other", "zzz"), machine_json("m1", &id)]),
            )
        }
    })
    .await;
    let m = client(&server, "t")
        .create_machine("demo-cp", create_req())
        .await
        .expect("adopted");
    assert_eq!(m.id, "m1");
    let posts = server.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 1, "no duplicate create");
}

#[tokio::test]
async fn dropped_connection_on_create_is_recovered_not_replayed() {
    let server = Server::start(|req, before| match (req.method.as_str(), before.len()) {
        ("POST", 0) => Answer::Drop,
        ("GET", _) => json(
            200,
            json!([machine_json("m1", &launch_id_of(&before[0].json()))]),
        ),
        _ => json(500, json!({})),
    })
    .await;
    let m = client(&server, "t")
        .create_machine("demo-cp", create_req())
        .await
        .expect("adopted");
    assert_eq!(m.id, "m1");
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn caller_launch_id_is_kept_and_429_create_is_retried() {
    let server = Server::start(|req, before| match before.len() {
        0 => json(429, json!({})),
        _ => json(200, machine_json("m1", &launch_id_of(&req.json()))),
    })
    .await;
    let mut req = create_req();
    req.config
        .metadata
        .insert(LAUNCH_ID_KEY.into(), "caller-id".into());
    let m = client(&server, "t")
        .create_machine("demo-cp", req)
        .await
        .expect("created");
    assert_eq!(m.metadata(LAUNCH_ID_KEY), Some("caller-id"));
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.method == "POST"));
}

#[tokio::test]
async fn create_with_422_fails_at_once() {
    let server =
        Server::start(|_, _| json(422, json!({"error": "invalid image", "status": "unknown"})))
            .await;
    let err = client(&server, "t")
        .create_machine("demo-cp", create_req())
        .await
        .expect_err("422");
    assert_eq!(err.to_string(), "creating machine ctrl-1 in app demo-cp");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn ambiguous_volume_create_adopts_the_new_volume() {
    let server = Server::start(|req, _| match req.method.as_str() {
        "POST" => json(500, json!({"error": "boom"})),
        _ => json(
            200,
            json!([
                {"id": "vol_old", "name": "ctrl_0", "region": "sjc", "state": "created"},
                {"id": "vol_new", "name": "ctrl_0", "region": "sjc", "state": "created"}
            ]),
        ),
    })
    .await;
    let req = CreateVolumeRequest {
        name: "ctrl_0".into(),
        region: Some("sjc".into()),
        size_gb: Some(10),
        ..CreateVolumeRequest::default()
    };
    let before = ["vol_old".to_string()].into();
    let v = client(&server, "t")
        .create_volume("demo-cp", &req, &before)
        .await
        .expect("adopted");
    assert_eq!(v.id, "vol_new");
    assert_eq!(
        server.seen().iter().filter(|s| s.method == "POST").count(),
        1
    );
}

#[tokio::test]
async fn wait_loops_over_408_until_the_state_is_reached() {
    let server = Server::start(|_, before| match before.len() {
        0 | 1 => json(
            408,
            json!({"error": "deadline_exceeded: machine failed to reach desired state, started, currently starting"}),
        ),
        _ => json(200, json!({"ok": true, "state": "started", "version": "v1"})),
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let w = client(&server, "t")
        .wait("demo", "m1", MachineState::Started, Some("v1"), deadline)
        .await
        .expect("reached");
    assert_eq!(w.state, Some(MachineState::Started));
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0].target,
        "/v1/apps/demo/machines/m1/wait?state=started&timeout=60&version=v1&instance_id=v1"
    );
}

#[tokio::test]
async fn wait_timeout_names_machine_wanted_and_last_state() {
    let server = Server::start(|_, _| {
        json(
            408,
            json!({"error": "deadline_exceeded: machine failed to reach desired state, started, currently stopped"}),
        )
    })
    .await;
    let deadline = Instant::now() + Duration::from_millis(300);
    let err = client(&server, "t")
        .wait("demo", "m1", MachineState::Started, None, deadline)
        .await
        .expect_err("times out");
    match &err {
        Error::WaitTimeout {
            machine,
            want,
            last,
            ..
        } => {
            assert_eq!(machine, "m1");
            assert_eq!(*want, MachineState::Started);
            assert_eq!(*last, Some(MachineState::Stopped));
        }
        other => panic!("expected a wait timeout, got {other:?}"),
    }
    assert!(err.to_string().contains("last state seen: stopped"));
}

#[tokio::test]
async fn wait_for_destroyed_treats_404_as_done() {
    let server = Server::start(|_, _| json(404, json!({"error": "machine not found"}))).await;
    let w = client(&server, "t")
        .wait(
            "demo",
            "m1",
            MachineState::Destroyed,
            None,
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("gone counts as destroyed");
    assert_eq!(w.state, Some(MachineState::Destroyed));
}

#[tokio::test]
async fn destroy_sends_force_and_nonce() {
    let server = Server::start(|_, _| json(200, json!({"ok": true}))).await;
    client(&server, "t")
        .destroy_machine("demo", "m1", Some("5c35f65c9f95"))
        .await
        .expect("destroyed");
    let seen = server.seen();
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].target, "/v1/apps/demo/machines/m1?force=true");
    assert_eq!(seen[0].headers[LEASE_NONCE_HEADER], "5c35f65c9f95");
}

#[tokio::test]
async fn lease_acquire_retries_409_then_returns_the_lease() {
    let server = Server::start(|_, before| match before.len() {
        0 => json(409, json!({"error": "lease currently held"})),
        _ => json(
            201,
            json!({"status": "success", "data": {"nonce": "abc123", "expires_at": 1700000000, "owner": "me", "version": "v"}}),
        ),
    })
    .await;
    let lease = client(&server, "t")
        .acquire_lease("demo", "m1", 120, Some("fks"))
        .await
        .expect("lease");
    assert_eq!(lease.nonce, "abc123");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].json(), json!({"ttl": 120, "description": "fks"}));
}

#[tokio::test]
async fn release_of_a_missing_lease_is_fine_and_get_returns_none() {
    let server = Server::start(|req, _| match req.method.as_str() {
        "DELETE" => json(400, json!({"error": "lease not found"})),
        _ => json(404, json!({"error": "lease not found"})),
    })
    .await;
    let c = client(&server, "t");
    c.release_lease("demo", "m1", "n").await.expect("released");
    assert_eq!(c.get_lease("demo", "m1").await.expect("get"), None);
}

#[tokio::test]
async fn secrets_list_never_returns_values_and_set_sends_value() {
    let server = Server::start(|req, _| match req.method.as_str() {
        "GET" => json(
            200,
            json!({"secrets": [{"name": "K3S_TOKEN", "digest": "d", "value": "leaked"}]}),
        ),
        _ => json(
            201,
            json!({"name": "K3S_TOKEN", "digest": "d", "version": 2}),
        ),
    })
    .await;
    let c = client(&server, "t");
    let list = c.list_secrets("demo").await.expect("list");
    assert_eq!(list[0].value, None);
    let set = c
        .set_secret("demo", "K3S_TOKEN", &SecretString::new("K10xyz"))
        .await
        .expect("set");
    assert_eq!(set.version, Some(2));
    let seen = server.seen();
    assert!(!seen[0].target.contains("show_secrets"));
    assert_eq!(seen[1].target, "/v1/apps/demo/secrets/K3S_TOKEN");
    assert_eq!(seen[1].json(), json!({"value": "K10xyz"}));
}

#[tokio::test]
async fn create_app_fills_fields_missing_from_the_answer() {
    let server =
        Server::start(|_, _| json(201, json!({"id": "jlyv9r5d56v18xrg", "created_at": 1}))).await;
    let app = client(&server, "t")
        .create_app(&CreateAppRequest::new("demo-cp", "personal"))
        .await
        .expect("created");
    assert_eq!(app.name, "demo-cp");
    assert_eq!(app.id, "jlyv9r5d56v18xrg");
    let seen = server.seen();
    assert_eq!(
        seen[0].json(),
        json!({"name": "demo-cp", "app_name": "demo-cp", "org_slug": "personal"})
    );
}

#[tokio::test]
async fn create_app_returns_once_the_new_app_answers_a_get() {
    // Fly is eventually consistent: the new app 404s, then 401s, then answers (flyctl's
    // WaitForApp retries exactly these, reference fly-runtime.md §6).
    let server = Server::start(|req, before| match (req.method.as_str(), before.len()) {
        ("POST", _) => json(201, json!({"id": "a1", "created_at": 1})),
        (_, 1) => json(404, json!({"error": "app not found"})),
        (_, 2) => json(
            401,
            json!({"error": "Authenticate: token validation error"}),
        ),
        _ => json(200, json!({"id": "a1", "name": "demo-cp"})),
    })
    .await;
    let app = client(&server, "t")
        .create_app(&CreateAppRequest::new("demo-cp", "personal"))
        .await
        .expect("created and usable");
    assert_eq!(app.name, "demo-cp");
    let seen: Vec<String> = server
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path()))
        .collect();
    assert_eq!(
        seen,
        [
            "POST /v1/apps",
            "GET /v1/apps/demo-cp",
            "GET /v1/apps/demo-cp",
            "GET /v1/apps/demo-cp"
        ]
    );
}

#[tokio::test]
async fn waiting_for_a_new_app_ends_at_its_deadline_or_at_another_error() {
    let server = Server::start(|req, _| match req.method.as_str() {
        "POST" => json(201, json!({"id": "a1"})),
        _ => json(404, json!({"error": "app not found"})),
    })
    .await;
    let c = Client::new(
        &server.base,
        Token::new("t"),
        Options {
            app_wait: Duration::from_millis(400),
            ..options()
        },
    )
    .expect("client");
    let started = Instant::now();
    let e = c
        .create_app(&CreateAppRequest::new("demo-cp", "personal"))
        .await
        .expect_err("never usable");
    assert!(e.is_not_found(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // 100 + 200 ms of backoff fit in 400 ms, the next 400 ms would not: POST + 3 GETs.
    assert_eq!(server.seen().len(), 4);

    let server = Server::start(|req, _| match req.method.as_str() {
        "POST" => json(201, json!({"id": "a1"})),
        _ => json(403, json!({"error": "forbidden"})),
    })
    .await;
    let e = client(&server, "t")
        .wait_for_app("demo-cp")
        .await
        .expect_err("403 is not a wait");
    assert_eq!(e.status_code(), Some(403));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn delete_after_a_lost_answer_counts_404_as_done() {
    let server = Server::start(|_, before| match before.len() {
        0 => Answer::Drop,
        _ => json(404, json!({"error": "volume not found"})),
    })
    .await;
    client(&server, "t")
        .delete_volume("demo", "vol_1")
        .await
        .expect("the first attempt did it");
}

#[tokio::test]
async fn metadata_calls_use_the_key_path() {
    let server = Server::start(|req, _| match req.method.as_str() {
        "GET" => json(200, json!({"fks_role": "server"})),
        _ => Answer::Json(204, String::new()),
    })
    .await;
    let c = client(&server, "t");
    c.set_metadata("demo", "m1", "fks_role", "server")
        .await
        .expect("set");
    let all = c.get_metadata("demo", "m1").await.expect("get");
    assert_eq!(all["fks_role"], "server");
    c.delete_metadata("demo", "m1", "fks_role")
        .await
        .expect("delete");
    let seen = server.seen();
    assert_eq!(
        seen[0].target,
        "/v1/apps/demo/machines/m1/metadata/fks_role"
    );
    assert_eq!(seen[0].json(), json!({"value": "server"}));
    assert_eq!(seen[2].method, "DELETE");
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The client's log lines, from a process-wide subscriber. A thread-local one is not enough:
/// tracing caches each callsite's interest on first use, on whichever test thread gets there
/// first, so a scoped subscriber would miss events at random.
fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "fks_bootstrap::fly=trace",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test installs a global tracing subscriber");
        logs
    })
}

#[tokio::test]
async fn traces_every_call_without_token_or_secret_values() {
    let logs = captured_logs();
    let server = Server::start(|req, before| match (req.method.as_str(), before.len()) {
        (_, 0) => json(503, json!({"error": "flaky"})),
        ("POST", _) => json(
            201,
            json!({"name": "K3S_TOKEN", "digest": "d", "version": 1}),
        ),
        _ => json(200, json!({"secrets": []})),
    })
    .await;
    let c = client(&server, "FlyV1 fm2_topsecret");
    c.set_secret(
        "tracing-demo",
        "K3S_TOKEN",
        &SecretString::new("K10value::server:pw"),
    )
    .await
    .expect("set");
    c.list_secrets("tracing-demo").await.expect("list");
    let text = String::from_utf8(logs.0.lock().expect("log lock").clone()).expect("utf8");
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("/v1/apps/tracing-demo/"))
        .collect();
    assert!(
        ours.iter().any(|l| l.contains("fly api call")
            && l.contains("method=POST")
            && l.contains("path=/v1/apps/tracing-demo/secrets/K3S_TOKEN")
            && l.contains("status=503")
            && l.contains("attempt=1")
            && l.contains("duration_ms=")),
        "{text}"
    );
    assert!(
        ours.iter()
            .any(|l| l.contains("status=201") && l.contains("attempt=2")),
        "{text}"
    );
    assert!(
        ours.iter()
            .any(|l| l.contains("method=GET") && l.contains("status=200")),
        "{text}"
    );
    assert!(!text.contains("topsecret"), "token leaked: {text}");
    assert!(!text.contains("K10value"), "secret value leaked: {text}");
}
