//! Leases, metadata and secrets.

use crate::util::{machine_body, Lab, TOKEN};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn lease_guards_mutations_and_follows_nonce_rules() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let m = lab.machine("app", machine_body()).await;
    let mid = m["id"].as_str().expect("id");
    let p = |s: &str| format!("/v1/apps/app/machines/{mid}{s}");
    let auth = format!("Bearer {TOKEN}");
    lab.wait("app", mid, "started").await;
    let (s, _) = lab.get(&p("/lease")).await;
    assert_eq!(s, 404);
    let (s, l) = lab
        .post(&p("/lease"), json!({"ttl": 60, "description": "bootstrap"}))
        .await;
    assert_eq!(s, 201, "{l}");
    assert_eq!(l["status"], "success");
    let nonce = l["data"]["nonce"].as_str().expect("nonce").to_string();
    assert_eq!(nonce.len(), 12);
    assert_eq!(l["data"]["version"], m["instance_id"]);
    // Someone else cannot take it; mutations without the nonce get 409.
    let (s, _) = lab.post(&p("/lease"), json!({})).await;
    assert_eq!(s, 409);
    let (s, _) = lab.post(&p("/stop"), json!({})).await;
    assert_eq!(s, 409);
    // Refresh with the nonce (fly-go sends ttl as a query).
    let (s, r) = lab
        .call_with(
            Method::POST,
            &p("/lease?ttl=120"),
            None,
            &[
                ("authorization", &auth),
                ("fly-machine-lease-nonce", &nonce),
            ],
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(r["data"]["nonce"], nonce.as_str());
    assert!(r["data"]["expires_at"].as_u64() > l["data"]["expires_at"].as_u64());
    let (s, _) = lab
        .call_with(
            Method::POST,
            &p("/stop"),
            Some(json!({})),
            &[
                ("authorization", &auth),
                ("fly-machine-lease-nonce", &nonce),
            ],
        )
        .await;
    assert_eq!(s, 200);
    // Release needs the nonce.
    let (s, _) = lab.delete(&p("/lease")).await;
    assert_eq!(s, 400);
    let (s, _) = lab
        .call_with(
            Method::DELETE,
            &p("/lease"),
            None,
            &[
                ("authorization", &auth),
                ("fly-machine-lease-nonce", "000000000000"),
            ],
        )
        .await;
    assert_eq!(s, 409);
    let (s, b) = lab
        .call_with(
            Method::DELETE,
            &p("/lease"),
            None,
            &[
                ("authorization", &auth),
                ("fly-machine-lease-nonce", &nonce),
            ],
        )
        .await;
    assert_eq!(
        (s, b),
        (200, json!({"status": "success", "data": {"ok": true}}))
    );
    // lease_ttl on create takes a lease at once and answers the nonce.
    let m2 = lab
        .machine("app", json!({"lease_ttl": 30, "config": {"image": "u"}}))
        .await;
    assert_eq!(m2["nonce"].as_str().expect("nonce").len(), 12);
    let (s, _) = lab
        .post(
            &format!(
                "/v1/apps/app/machines/{}/lease",
                m2["id"].as_str().expect("id")
            ),
            json!({}),
        )
        .await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn metadata_endpoints_edit_without_new_version() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let m = lab
        .machine(
            "app",
            json!({"config": {"image": "u", "metadata": {"a": "1"}}}),
        )
        .await;
    let mid = m["id"].as_str().expect("id");
    let p = |s: &str| format!("/v1/apps/app/machines/{mid}/metadata{s}");
    assert_eq!(
        lab.post(&p("/role"), json!({"value": "server"})).await.0,
        204
    );
    assert_eq!(lab.get(&p("")).await.1, json!({"a": "1", "role": "server"}));
    assert_eq!(lab.get(&p("/role")).await.1, json!({"value": "server"}));
    assert_eq!(lab.get(&p("/nope")).await.0, 404);
    assert_eq!(lab.delete(&p("/a")).await.0, 204);
    assert_eq!(lab.get(&p("")).await.1, json!({"role": "server"}));
    let (s, _) = lab
        .call(
            Method::PATCH,
            &p(""),
            Some(json!({"metadata": {"x": "y", "role": null}})),
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(lab.get(&p("")).await.1, json!({"x": "y"}));
    let (s, _) = lab
        .call(
            Method::PUT,
            &p(""),
            Some(json!({"metadata": {"only": "this"}})),
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(lab.get(&p("")).await.1, json!({"only": "this"}));
    let (s, _) = lab
        .call(
            Method::PUT,
            &p(""),
            Some(json!({"metadata": {}, "machine_version": "01STALE"})),
        )
        .await;
    assert_eq!(s, 412);
    let (_, got) = lab.get(&format!("/v1/apps/app/machines/{mid}")).await;
    assert_eq!(
        got["instance_id"], m["instance_id"],
        "metadata writes keep the version"
    );
    let (_, list) = lab.get("/v1/apps/app/machines?metadata.only=this").await;
    assert_eq!(list.as_array().expect("list").len(), 1);
}

#[tokio::test]
async fn secrets_are_stored_privately_and_never_listed_with_values() {
    let lab = Lab::start().await;
    lab.app("app").await;
    let (s, b) = lab
        .post(
            "/v1/apps/app/secrets/K3S_TOKEN",
            json!({"value": "K10supersecret::server:abc"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(b.get("value").is_none());
    let (s, b) = lab
        .post(
            "/v1/apps/app/secrets",
            json!({"values": {"A": "alpha", "B": "beta"}}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["version"], 2);
    let (_, list) = lab.get("/v1/apps/app/secrets?show_secrets=true").await;
    let text = list.to_string();
    assert!(
        !text.contains("supersecret") && !text.contains("alpha"),
        "{text}"
    );
    assert_eq!(list["secrets"].as_array().expect("secrets").len(), 3);
    let (s, one) = lab.get("/v1/apps/app/secrets/K3S_TOKEN").await;
    assert_eq!(s, 200);
    assert!(one.get("value").is_none());
    assert_eq!(
        lab.post("/v1/apps/app/secrets", json!({"values": {"A": null}}))
            .await
            .0,
        200
    );
    assert_eq!(lab.delete("/v1/apps/app/secrets/B").await.0, 200);
    assert_eq!(lab.delete("/v1/apps/app/secrets/B").await.0, 404);
    let (_, list) = lab.get("/v1/apps/app/secrets").await;
    assert_eq!(list["secrets"][0]["name"], "K3S_TOKEN");
    // The value lives only in secrets.json (mode 0600), never in the machine/app records.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(lab.dir.join("secrets.json")).expect("secrets file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    for f in ["journal.jsonl", "state.json"] {
        let text = std::fs::read_to_string(lab.dir.join(f)).unwrap_or_default();
        assert!(!text.contains("supersecret"), "{f} holds a secret value");
    }
}
