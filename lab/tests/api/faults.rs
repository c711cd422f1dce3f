//! Fault injection: every kind, seeded and reproducible.

use crate::util::{machine_body, Lab};
use fks_lab::Faults;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn latency_delays_only_the_named_operation() {
    let lab =
        Lab::start_with(|o| o.faults = Faults::parse("latency=apps.get:300ms").expect("faults"))
            .await;
    lab.app("app").await;
    let t = Instant::now();
    lab.get("/v1/apps/app").await;
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "a delay is at least its configured length"
    );
}

#[tokio::test]
async fn rate_limits_answer_429_after_the_burst() {
    let lab =
        Lab::start_with(|o| o.faults = Faults::parse("rate_limits=on").expect("faults")).await;
    lab.app("app").await;
    let mut codes = vec![];
    for _ in 0..4 {
        codes.push(lab.post("/v1/apps/app/machines", machine_body()).await.0);
    }
    assert_eq!(codes, vec![200, 200, 200, 429]);
    // GET machine has its own, larger bucket (5/s, burst 10).
    let (_, list) = lab.get("/v1/apps/app/machines").await;
    let id = list[0]["id"].as_str().expect("id").to_string();
    let gets: Vec<u16> = {
        let mut v = vec![];
        for _ in 0..11 {
            v.push(lab.get(&format!("/v1/apps/app/machines/{id}")).await.0);
        }
        v
    };
    assert_eq!(gets.iter().filter(|c| **c == 200).count(), 10);
    assert_eq!(gets[10], 429);
}

async fn error_sequence(seed: u64) -> Vec<u16> {
    let lab = Lab::start_with(|o| {
        o.seed = seed;
        o.faults = Faults::parse("error_rate=0.3").expect("faults");
    })
    .await;
    let mut v = vec![];
    for _ in 0..40 {
        v.push(lab.get("/v1/apps").await.0);
    }
    v
}

#[tokio::test]
async fn error_rate_is_seeded_and_reproducible() {
    let a = error_sequence(7).await;
    let b = error_sequence(7).await;
    assert_eq!(a, b);
    assert!(a.contains(&503) && a.contains(&200), "{a:?}");
    assert_ne!(a, error_sequence(8).await);
}

#[tokio::test]
async fn ambiguous_create_makes_the_object_but_answers_an_error() {
    let lab =
        Lab::start_with(|o| o.faults = Faults::parse("ambiguous_create=1").expect("faults")).await;
    lab.app("app").await;
    let (s, b) = lab
        .post(
            "/v1/apps/app/machines",
            json!({"config": {"image": "u", "metadata": {"launch": "L1"}}}),
        )
        .await;
    assert!(s == 408 || s >= 500, "{s} {b}");
    let (_, list) = lab.get("/v1/apps/app/machines?metadata.launch=L1").await;
    assert_eq!(
        list.as_array().expect("list").len(),
        1,
        "the machine was made"
    );
    let (s, _) = lab
        .post(
            "/v1/apps/app/volumes",
            json!({"name": "data", "region": "sjc"}),
        )
        .await;
    assert!(s == 408 || s >= 500);
    let (_, vols) = lab.get("/v1/apps/app/volumes").await;
    assert_eq!(vols.as_array().expect("vols").len(), 1);
}

#[tokio::test]
async fn capacity_faults_fail_a_region_or_a_zone() {
    let lab = Lab::start().await;
    let (_, zones) = lab.get("/lab/v1/zones").await;
    let full = zones["sjc"][0].as_str().expect("zone").to_string();
    drop(lab);
    let spec = format!("capacity=iad,sjc:{full}");
    let lab = Lab::start_with(|o| o.faults = Faults::parse(&spec).expect("faults")).await;
    lab.app("app").await;
    let (s, b) = lab
        .post(
            "/v1/apps/app/machines",
            json!({"region": "iad", "config": {"image": "u"}}),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(b["status"], "insufficient_capacity");
    let (s, b) = lab
        .post(
            "/v1/apps/app/volumes",
            json!({"name": "v", "region": "iad"}),
        )
        .await;
    assert_eq!(
        (s, b["status"].clone()),
        (422, json!("insufficient_capacity"))
    );
    // "iad,sjc" falls through to sjc; no volume lands in the full zone.
    let (s, b) = lab
        .post(
            "/v1/apps/app/machines",
            json!({"region": "iad,sjc", "config": {"image": "u"}}),
        )
        .await;
    assert_eq!((s, b["region"].clone()), (200, json!("sjc")));
    let mut zs = vec![];
    for _ in 0..2 {
        let (s, v) = lab
            .post(
                "/v1/apps/app/volumes",
                json!({"name": "data", "region": "sjc"}),
            )
            .await;
        assert_eq!(s, 200);
        zs.push(v["zone"].as_str().expect("zone").to_string());
    }
    assert!(!zs.contains(&full));
    let (s, _) = lab
        .post(
            "/v1/apps/app/volumes",
            json!({"name": "data", "region": "sjc"}),
        )
        .await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn boot_failure_leaves_machines_failed() {
    let lab =
        Lab::start_with(|o| o.faults = Faults::parse("boot_failure=1").expect("faults")).await;
    lab.app("app").await;
    let m = lab.machine("app", machine_body()).await;
    lab.wait("app", m["id"].as_str().expect("id"), "failed")
        .await;
}

#[tokio::test]
async fn boot_crash_exits_once_then_restart_policy_starts_the_machine_again() {
    let lab = Lab::start_with(|o| o.faults = Faults::parse("boot_crash=1").expect("faults")).await;
    lab.app("app").await;
    let m = lab.machine("app", machine_body()).await;
    let id = m["id"].as_str().expect("id");
    let exits = |events: &serde_json::Value| -> Vec<i64> {
        events
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["type"] == "exit")
            .map(|e| {
                e["request"]["exit_event"]["exit_code"]
                    .as_i64()
                    .unwrap_or(-1)
            })
            .collect()
    };
    // The crash comes a moment after `started`; poll the events (bounded) until it is there.
    let mut seen = vec![];
    for _ in 0..200 {
        let (_, events) = lab.get(&format!("/v1/apps/app/machines/{id}/events")).await;
        seen = exits(&events);
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, vec![1], "one exit with code 1");
    lab.wait("app", id, "started").await;
    // Later boots do not crash: stop, start, and still one exit.
    let (s, b) = lab
        .post(&format!("/v1/apps/app/machines/{id}/stop"), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    lab.wait("app", id, "stopped").await;
    let (s, b) = lab
        .post(&format!("/v1/apps/app/machines/{id}/start"), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    lab.wait("app", id, "started").await;
    let (_, m) = lab.get(&format!("/v1/apps/app/machines/{id}")).await;
    assert_eq!(m["state"], "started");
    let (_, events) = lab.get(&format!("/v1/apps/app/machines/{id}/events")).await;
    assert_eq!(exits(&events), vec![1], "{events}");
}
