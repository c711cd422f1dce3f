//! Machine endpoints and the state machine.

use crate::util::{machine_body, Lab};
use serde_json::{json, Value};

fn id(m: &Value) -> String {
    m["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn create_answers_created_then_machine_starts() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let m = lab.machine("app", machine_body()).await;
    assert_eq!(m["state"], "created");
    let mid = id(&m);
    assert!(mid.len() == 14 && mid.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(m["instance_id"].as_str().expect("instance").len(), 26);
    let ip: std::net::Ipv6Addr = m["private_ip"].as_str().expect("ip").parse().expect("ipv6");
    assert_eq!(ip.segments()[0], 0xfdaa);
    let name = m["name"].as_str().expect("name");
    assert_eq!(name.split('-').count(), 3, "{name}");
    let (s, b) = lab
        .get(&format!(
            "/v1/apps/app/machines/{mid}/wait?state=started&timeout=10"
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["ok"], true);
    assert_eq!(b["state"], "started");
    assert_eq!(b["version"], m["instance_id"]);
    let (_, got) = lab.get(&format!("/v1/apps/app/machines/{mid}")).await;
    assert_eq!(got["state"], "started");
    let (_, events) = lab
        .get(&format!("/v1/apps/app/machines/{mid}/events"))
        .await;
    let statuses: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["status"].as_str().expect("s"))
        .collect();
    assert_eq!(
        statuses,
        vec!["started", "starting", "created"],
        "newest first"
    );
}

#[tokio::test]
async fn wait_times_out_with_fly_408_and_clamps_timeout() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let m = lab
        .machine(
            "app",
            json!({"skip_launch": true, "config": {"image": "ubuntu"}}),
        )
        .await;
    let mid = id(&m);
    let (s, b) = lab
        .get(&format!(
            "/v1/apps/app/machines/{mid}/wait?state=started&timeout=0"
        ))
        .await;
    assert_eq!(s, 408);
    assert_eq!(
        b["error"],
        "deadline_exceeded: machine failed to reach desired state, started, currently created"
    );
    let (s, _) = lab
        .get(&format!("/v1/apps/app/machines/{mid}/wait?state=bogus"))
        .await;
    assert_eq!(s, 400);
    let (s, b) = lab
        .get(&format!(
            "/v1/apps/app/machines/{mid}/wait?state=settled&timeout=1"
        ))
        .await;
    assert_eq!((s, b["state"].clone()), (200, json!("created")));
}

#[tokio::test]
async fn stop_start_restart_suspend_signal_and_destroy() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let m = lab.machine("app", machine_body()).await;
    let mid = id(&m);
    let p = |s: &str| format!("/v1/apps/app/machines/{mid}/{s}");
    lab.wait("app", &mid, "started").await;
    let (s, b) = lab.post(&p("signal"), json!({"signal": "SIGHUP"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        lab.post(&p("signal"), json!({"signal": "SIGNOPE"})).await.0,
        400
    );
    let (s, _) = lab
        .post(&p("stop"), json!({"signal": "SIGTERM", "timeout": "30s"}))
        .await;
    assert_eq!(s, 200);
    lab.wait("app", &mid, "stopped").await;
    assert_eq!(
        lab.post(&p("stop"), json!({"timeout": "forever"})).await.0,
        400
    );
    let (s, b) = lab.post(&p("start"), json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(b["previous_state"], "stopped");
    lab.wait("app", &mid, "started").await;
    let (s, _) = lab
        .post(
            &format!("/v1/apps/app/machines/{mid}/restart?signal=SIGTERM&timeout=5s"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    lab.wait("app", &mid, "started").await;
    assert_eq!(lab.post(&p("suspend"), json!({})).await.0, 200);
    lab.wait("app", &mid, "suspended").await;
    assert_eq!(lab.post(&p("start"), json!({})).await.0, 200);
    lab.wait("app", &mid, "started").await;
    // A started machine refuses destroy without force.
    let (s, b) = lab.delete(&format!("/v1/apps/app/machines/{mid}")).await;
    assert_eq!(s, 412, "{b}");
    let (s, _) = lab
        .delete(&format!("/v1/apps/app/machines/{mid}?force=true"))
        .await;
    assert_eq!(s, 200);
    lab.wait("app", &mid, "destroyed").await;
    let (_, list) = lab.get("/v1/apps/app/machines").await;
    assert_eq!(list.as_array().expect("list").len(), 0);
    let (_, list) = lab.get("/v1/apps/app/machines?include_deleted=true").await;
    assert_eq!(list[0]["state"], "destroyed");
    let (s, b) = lab.get("/v1/apps/app/machines/00000000000000").await;
    assert_eq!((s, b), (404, json!({"error": "machine not found"})));
}

#[tokio::test]
async fn update_replaces_config_with_new_version_and_keeps_unknown_fields() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let m = lab.machine("app", json!({"config": {"image": "ubuntu", "guest": {"cpus": 1}, "future_field": {"nested": [1, 2]}}})).await;
    let mid = id(&m);
    assert_eq!(m["config"]["future_field"], json!({"nested": [1, 2]}));
    lab.wait("app", &mid, "started").await;
    let (s, b) = lab
        .post(
            &format!("/v1/apps/app/machines/{mid}"),
            json!({"config": {"image": "ubuntu:24.04", "another": true}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_ne!(b["instance_id"], m["instance_id"]);
    assert_eq!(
        b["config"],
        json!({"image": "ubuntu:24.04", "another": true})
    );
    let v = b["instance_id"].as_str().expect("v").to_string();
    let (s, _) = lab
        .get(&format!(
            "/v1/apps/app/machines/{mid}/wait?state=started&version={v}&timeout=10"
        ))
        .await;
    assert_eq!(s, 200);
    let (s, _) = lab
        .post(
            &format!("/v1/apps/app/machines/{mid}"),
            json!({"name": "other", "config": {"image": "u"}}),
        )
        .await;
    assert_eq!(s, 400, "name is immutable");
    let (s, _) = lab
        .post(
            &format!("/v1/apps/app/machines/{mid}"),
            json!({"config": {}}),
        )
        .await;
    assert_eq!(s, 400, "image is required");
    let (s, b) = lab
        .post(
            &format!("/v1/apps/app/machines/{mid}"),
            json!({"skip_launch": true, "config": {"image": "u"}}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["state"], "stopped");
}

#[tokio::test]
async fn list_filters_by_metadata_region_state_and_summary() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let a = lab.machine("app", json!({"region": "sjc", "config": {"image": "u", "metadata": {"role": "server", "k3s_launch_id": "x1"}}})).await;
    let b = lab.machine("app", json!({"region": "iad", "skip_launch": true, "config": {"image": "u", "metadata": {"role": "agent"}}})).await;
    lab.wait("app", &id(&a), "started").await;
    let ids = |v: &Value| -> Vec<String> { v.as_array().expect("list").iter().map(id).collect() };
    assert_eq!(
        ids(&lab
            .get("/v1/apps/app/machines?metadata.role=server")
            .await
            .1),
        vec![id(&a)]
    );
    assert_eq!(
        ids(&lab
            .get("/v1/apps/app/machines?metadata.k3s_launch_id=x1")
            .await
            .1),
        vec![id(&a)]
    );
    assert_eq!(
        ids(&lab.get("/v1/apps/app/machines?region=iad").await.1),
        vec![id(&b)]
    );
    assert_eq!(
        ids(&lab.get("/v1/apps/app/machines?state=created").await.1),
        vec![id(&b)]
    );
    assert_eq!(
        ids(&lab
            .get("/v1/apps/app/machines?state=started,created")
            .await
            .1)
        .len(),
        2
    );
    let (_, s) = lab.get("/v1/apps/app/machines?summary=true").await;
    assert!(s[0].get("config").is_none());
}

#[tokio::test]
async fn names_are_unique_in_an_app_and_exec_is_refused_in_api_only_mode() {
    let lab = Lab::start().await;
    lab.app("app").await;
    lab.app("other").await;
    lab.machine("app", json!({"name": "ctrl-0", "config": {"image": "u"}}))
        .await;
    let (s, b) = lab
        .post(
            "/v1/apps/app/machines",
            json!({"name": "ctrl-0", "config": {"image": "u"}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    lab.machine("other", json!({"name": "ctrl-0", "config": {"image": "u"}}))
        .await;
    let m = lab.machine("app", machine_body()).await;
    let (s, b) = lab
        .post(
            &format!("/v1/apps/app/machines/{}/exec", id(&m)),
            json!({"command": ["true"]}),
        )
        .await;
    assert_eq!(s, 412);
    assert!(
        b["error"].as_str().expect("error").contains("API-only"),
        "{b}"
    );
    assert!(b.get("stdout").is_none());
}

#[tokio::test]
async fn cordon_and_uncordon_toggle_the_flag() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let m = lab.machine("app", machine_body()).await;
    let mid = id(&m);
    assert_eq!(
        lab.post(&format!("/v1/apps/app/machines/{mid}/cordon"), json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        lab.get(&format!("/v1/apps/app/machines/{mid}")).await.1["cordoned"],
        true
    );
    assert_eq!(
        lab.post(&format!("/v1/apps/app/machines/{mid}/uncordon"), json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        lab.get(&format!("/v1/apps/app/machines/{mid}")).await.1["cordoned"],
        false
    );
}
