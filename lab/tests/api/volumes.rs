//! Volume endpoints and the zone rules.

use crate::util::Lab;
use reqwest::Method;
use serde_json::{json, Value};

async fn vol(lab: &Lab, body: Value) -> (u16, Value) {
    lab.post("/v1/apps/app/volumes", body).await
}

#[tokio::test]
async fn same_name_volumes_spread_over_distinct_zones_until_none_left() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let mut zones = vec![];
    for _ in 0..3 {
        let (s, b) = vol(&lab, json!({"name": "data", "region": "sjc", "size_gb": 1})).await;
        assert_eq!(s, 200, "{b}");
        let id = b["id"].as_str().expect("id");
        assert!(
            id.starts_with("vol_")
                && id.len() == 20
                && id[4..]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        let zone = b["zone"].as_str().expect("zone").to_string();
        assert!(zone.len() == 4 && zone.chars().all(|c| c.is_ascii_hexdigit()));
        zones.push(zone);
    }
    zones.sort();
    zones.dedup();
    assert_eq!(zones.len(), 3, "three distinct zones");
    let (s, b) = vol(&lab, json!({"name": "data", "region": "sjc"})).await;
    assert_eq!(s, 422);
    assert_eq!(b["status"], "insufficient_capacity");
    // Another name may share zones; require_unique_zone=false ignores the rule.
    let (s, _) = vol(&lab, json!({"name": "other", "region": "sjc"})).await;
    assert_eq!(s, 200);
    let (s, _) = vol(
        &lab,
        json!({"name": "data", "region": "sjc", "require_unique_zone": false}),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn unique_zone_app_wide_counts_every_volume_of_the_app() {
    let lab = Lab::start().await;
    lab.app("app").await;
    assert_eq!(
        vol(&lab, json!({"name": "a", "region": "iad"})).await.0,
        200
    );
    assert_eq!(
        vol(&lab, json!({"name": "b", "region": "iad"})).await.0,
        200
    );
    let (s, b) = vol(
        &lab,
        json!({"name": "c", "region": "iad", "unique_zone_app_wide": true}),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["status"], "insufficient_capacity");
    // Explicit nulls (fly-go) are accepted.
    let (s, b) = vol(
        &lab,
        json!({"name": "d", "region": "sjc", "size_gb": null, "encrypted": null, "require_unique_zone": null, "snapshot_id": null}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["size_gb"], 3);
}

#[tokio::test]
async fn volume_get_list_update_extend_delete() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let (_, v) = vol(&lab, json!({"name": "data", "region": "sjc", "size_gb": 2})).await;
    let id = v["id"].as_str().expect("id");
    let (s, b) = lab.get(&format!("/v1/apps/app/volumes/{id}")).await;
    assert_eq!((s, b["name"].clone()), (200, json!("data")));
    let (_, list) = lab.get("/v1/apps/app/volumes?summary=true").await;
    assert_eq!(list.as_array().expect("list").len(), 1);
    assert!(list[0].get("blocks").is_none());
    let (s, b) = lab
        .call(
            Method::PUT,
            &format!("/v1/apps/app/volumes/{id}"),
            Some(json!({"snapshot_retention": 10, "auto_backup_enabled": false})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (
            b["snapshot_retention"].clone(),
            b["auto_backup_enabled"].clone()
        ),
        (json!(10), json!(false))
    );
    let (s, b) = lab
        .call(
            Method::PUT,
            &format!("/v1/apps/app/volumes/{id}/extend"),
            Some(json!({"size_gb": 5})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["volume"]["size_gb"], 5);
    assert_eq!(b["needs_restart"], false);
    let (s, _) = lab
        .call(
            Method::PUT,
            &format!("/v1/apps/app/volumes/{id}/extend"),
            Some(json!({"size_gb": 4})),
        )
        .await;
    assert_eq!(s, 400, "volumes only grow");
    let (s, b) = lab.delete(&format!("/v1/apps/app/volumes/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(b["state"], "destroyed");
    let (s, b) = lab.get(&format!("/v1/apps/app/volumes/{id}")).await;
    assert_eq!((s, b), (404, json!({"error": "volume not found"})));
}

#[tokio::test]
async fn machine_takes_volume_zone_and_attached_volume_cannot_be_deleted() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let (_, v) = vol(&lab, json!({"name": "data", "region": "iad"})).await;
    let vid = v["id"].as_str().expect("id");
    let m = lab
        .machine("app", json!({"region": "iad", "config": {"image": "ubuntu", "mounts": [{"volume": vid, "path": "/data"}]}}))
        .await;
    assert_eq!(m["region"], "iad");
    let (_, v2) = lab.get(&format!("/v1/apps/app/volumes/{vid}")).await;
    assert_eq!(v2["attached_machine_id"], m["id"]);
    let (s, _) = lab.delete(&format!("/v1/apps/app/volumes/{vid}")).await;
    assert_eq!(s, 412);
    // A second machine cannot take the same volume; a wrong region is refused.
    let (s, _) = lab
        .post(
            "/v1/apps/app/machines",
            json!({"config": {"image": "u", "mounts": [{"volume": vid, "path": "/d"}]}}),
        )
        .await;
    assert_eq!(s, 412);
    let mid = m["id"].as_str().expect("id");
    lab.wait("app", mid, "started").await;
    let (s, _) = lab
        .delete(&format!("/v1/apps/app/machines/{mid}?kill=true"))
        .await;
    assert_eq!(s, 200);
    lab.wait("app", mid, "destroyed").await;
    let (_, v3) = lab.get(&format!("/v1/apps/app/volumes/{vid}")).await;
    assert_eq!(v3["attached_machine_id"], json!(null));
    let (s, _) = lab.delete(&format!("/v1/apps/app/volumes/{vid}")).await;
    assert_eq!(s, 200);
}
