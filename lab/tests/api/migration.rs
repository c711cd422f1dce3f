//! Host migration (reference fly-runtime.md §4 "Migration"): through the lab endpoint
//! `POST /lab/v1/apps/{app}/machines/{id}/migrate` and as the seeded `migrate` fault. The
//! machine keeps its id and gets a new 6PN address; its volume is forked to a new id with the
//! data kept, the source goes `pending_destroy`; the API shows all of it.

use crate::util::Lab;
use reqwest::Method;
use serde_json::{json, Value};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// Poll the machine until `done` holds (10 s at most).
async fn machine_until(lab: &Lab, app: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, m) = lab.get(&format!("/v1/apps/{app}/machines/{id}")).await;
        assert_eq!(status, 200, "{m}");
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "machine never got there: {m:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn migrate_keeps_the_id_and_data_and_changes_the_address_and_volume_id() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let (status, vol) = lab
        .post(
            "/v1/apps/app/volumes",
            json!({"name": "data", "region": "sjc", "size_gb": 1}),
        )
        .await;
    assert_eq!(status, 200, "{vol}");
    let old_vol = s(&vol["id"]);
    let m = lab
        .machine(
            "app",
            json!({"region": "sjc", "config": {"image": "ubuntu",
                "mounts": [{"volume": old_vol, "path": "/data"}]}}),
        )
        .await;
    let id = s(&m["id"]);
    lab.wait("app", &id, "started").await;
    let before = machine_until(&lab, "app", &id, |m| m["state"] == "started").await;
    // What the machine wrote on its volume (API-only mode: the test writes it).
    let old_dir = fks_lab::runner::volume_dir(&lab.dir, &old_vol);
    std::fs::create_dir_all(old_dir.join("k3s/server")).expect("mkdir");
    std::fs::write(old_dir.join("k3s/server/token"), "K10data\n").expect("write");
    let mutations = lab.get("/lab/v1/stats").await.1["mutations"].clone();

    let path = format!("/lab/v1/apps/app/machines/{id}/migrate");
    let (status, body) = lab
        .call_with(
            Method::POST,
            &path,
            None,
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(status, 401, "the endpoint needs the token: {body}");
    let (status, body) = lab.call(Method::POST, &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "stopping", "{body}");
    let (status, body) = lab.call(Method::POST, &path, None).await;
    assert_eq!(status, 412, "a second migration while one runs: {body}");

    let after = machine_until(&lab, "app", &id, |m| {
        m["state"] == "started" && m["private_ip"] != before["private_ip"]
    })
    .await;
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["region"], before["region"]);
    assert_ne!(after["instance_id"], before["instance_id"], "a new version");
    let (old_ip, new_ip): (Ipv6Addr, Ipv6Addr) = (
        s(&before["private_ip"]).parse().expect("ipv6"),
        s(&after["private_ip"]).parse().expect("ipv6"),
    );
    // Same org network (fdaa + 32 bits), another host (the next 32 bits).
    assert_eq!(old_ip.segments()[..3], new_ip.segments()[..3]);
    assert_ne!(old_ip.segments()[3..5], new_ip.segments()[3..5]);
    let new_vol = s(&after["config"]["mounts"][0]["volume"]);
    assert_ne!(new_vol, old_vol);
    assert_eq!(after["config"]["mounts"][0]["path"], "/data");

    // A fresh event log: launch (created, flyd) = flyctl's "migrated=true", then the start.
    let events: Vec<(String, String, String)> = after["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (s(&e["type"]), s(&e["status"]), s(&e["source"])))
        .collect();
    let last = events.last().expect("an event");
    assert_eq!(
        (last.0.as_str(), last.1.as_str(), last.2.as_str()),
        ("launch", "created", "flyd"),
        "{events:?}"
    );
    assert_eq!(events.first().map(|e| e.1.as_str()), Some("started"));

    // Volumes: the fork in the same zone, attached, with the data; the source soft-deleted.
    let (status, vols) = lab.get("/v1/apps/app/volumes").await;
    assert_eq!(status, 200, "{vols}");
    let find = |vid: &str| {
        vols.as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["id"] == vid)
            .unwrap_or_else(|| panic!("volume {vid} listed: {vols:#}"))
            .clone()
    };
    let (old, new) = (find(&old_vol), find(&new_vol));
    assert_eq!(old["state"], "pending_destroy");
    assert!(old["attached_machine_id"].is_null(), "{old}");
    assert_eq!(new["state"], "created");
    assert_eq!(new["attached_machine_id"], json!(id));
    for key in ["name", "region", "zone", "size_gb"] {
        assert_eq!(new[key], old[key], "{key}");
    }
    let new_dir = fks_lab::runner::volume_dir(&lab.dir, &new_vol);
    assert_eq!(
        std::fs::read_to_string(new_dir.join("k3s/server/token")).expect("forked data"),
        "K10data\n"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while old_dir.exists() {
        assert!(Instant::now() < deadline, "the source's data stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The platform moved it, not a client: no mutation counted.
    assert_eq!(lab.get("/lab/v1/stats").await.1["mutations"], mutations);
    // The soft-deleted source cannot be mounted again.
    let (status, body) = lab
        .post(
            "/v1/apps/app/machines",
            json!({"region": "sjc", "config": {"image": "ubuntu",
                "mounts": [{"volume": old_vol, "path": "/data"}]}}),
        )
        .await;
    assert_eq!(status, 412, "{body}");
}

#[tokio::test]
async fn migrate_refuses_unknown_and_not_started_machines() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let (status, body) = lab
        .call(Method::POST, "/lab/v1/apps/app/machines/nope/migrate", None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = lab
        .call(
            Method::POST,
            "/lab/v1/apps/nope/machines/nope/migrate",
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let m = lab
        .machine(
            "app",
            json!({"skip_launch": true, "config": {"image": "ubuntu"}}),
        )
        .await;
    let id = s(&m["id"]);
    let (status, body) = lab
        .call(
            Method::POST,
            &format!("/lab/v1/apps/app/machines/{id}/migrate"),
            None,
        )
        .await;
    assert_eq!(status, 412, "{body}");
    assert!(
        s(&body["error"]).contains("started machines only"),
        "{body}"
    );
}

/// The `migrate=1@DUR` fault moves every machine once, DUR after its first start; the same
/// seed gives the same ids and addresses.
#[tokio::test]
async fn migrate_fault_moves_each_machine_once_and_is_reproducible_with_the_seed() {
    async fn run() -> (String, String, String) {
        let lab = Lab::start_with(|o| {
            o.faults = fks_lab::Faults::parse("migrate=1@100ms").expect("faults");
        })
        .await;
        lab.app("app").await;
        let m = lab
            .machine("app", json!({"config": {"image": "ubuntu"}}))
            .await;
        let id = s(&m["id"]);
        let first = s(&m["private_ip"]);
        let moved = machine_until(&lab, "app", &id, |m| {
            m["state"] == "started" && m["private_ip"] != json!(first)
        })
        .await;
        let events = moved["events"].as_array().expect("events");
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "launch" && e["source"] == "flyd"),
            "{moved:#}"
        );
        // At most once: the start after the move draws nothing.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (_, later) = lab.get(&format!("/v1/apps/app/machines/{id}")).await;
        assert_eq!(later["private_ip"], moved["private_ip"], "moved twice");
        assert_eq!(later["state"], "started");
        (id, first, s(&moved["private_ip"]))
    }
    let a = run().await;
    let b = run().await;
    assert_eq!(a, b, "same seed, same machine and addresses");
}

/// A migration under way is recorded: a lab restarted while the machine is still stopping
/// carries the move through.
#[tokio::test]
async fn a_migration_under_way_survives_a_lab_restart() {
    let lab = Lab::start_with(|o| o.timings.stop = Duration::from_secs(3)).await;
    lab.app("app").await;
    let m = lab
        .machine("app", json!({"config": {"image": "ubuntu"}}))
        .await;
    let id = s(&m["id"]);
    lab.wait("app", &id, "started").await;
    let (status, body) = lab
        .call(
            Method::POST,
            &format!("/lab/v1/apps/app/machines/{id}/migrate"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let lab = lab.restart().await;
    let after = machine_until(&lab, "app", &id, |m| {
        m["state"] == "started" && m["private_ip"] != json!(s(&body["private_ip"]))
    })
    .await;
    assert_eq!(after["id"], json!(id));
}
