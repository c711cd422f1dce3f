//! Apps endpoints and auth forms.

use crate::util::{Lab, TOKEN};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn app_create_accepts_name_and_app_name_and_rejects_taken() {
    let lab = Lab::start().await;
    let (s, b) = lab
        .post("/v1/apps", json!({"name": "one", "org_slug": "personal"}))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["name"], "one");
    assert_eq!(b["id"].as_str().expect("id").len(), 16);
    let (s, _) = lab
        .post("/v1/apps", json!({"app_name": "two", "org_slug": "acme"}))
        .await;
    assert_eq!(s, 201);
    let (s, b) = lab
        .post("/v1/apps", json!({"name": "one", "org_slug": "personal"}))
        .await;
    assert_eq!(s, 422);
    assert_eq!(
        b,
        json!({"error": "Validation failed: Name has already been taken", "status": "name_taken"})
    );
    let (s, _) = lab.post("/v1/apps", json!({"name": "Bad_Name"})).await;
    assert_eq!(s, 422);
    let (s, _) = lab.post("/v1/apps", json!({"org_slug": "personal"})).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn app_get_list_and_delete() {
    let lab = Lab::start().await;
    lab.app("one").await;
    lab.post("/v1/apps", json!({"name": "two", "org_slug": "acme"}))
        .await;
    let (s, b) = lab.get("/v1/apps/one").await;
    assert_eq!(s, 200);
    assert_eq!(b["organization"]["slug"], "personal");
    assert_eq!(b["status"], "pending");
    let (_, b) = lab.get("/v1/apps?org_slug=acme").await;
    assert_eq!(b["total_apps"], 1);
    assert_eq!(b["apps"][0]["name"], "two");
    let (s, b) = lab.get("/v1/apps/nope").await;
    assert_eq!((s, b), (404, json!({"error": "app not found"})));
    // A running machine blocks a delete without force.
    let m = lab.machine("one", crate::util::machine_body()).await;
    lab.wait("one", m["id"].as_str().expect("id"), "started")
        .await;
    let (s, _) = lab.delete("/v1/apps/one").await;
    assert_eq!(s, 412);
    let (s, _) = lab.delete("/v1/apps/one?force=true").await;
    assert_eq!(s, 202);
    let (s, _) = lab.get("/v1/apps/one").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn auth_accepts_fly_forms_and_refuses_others() {
    let lab = Lab::start().await;
    for header in [
        format!("Bearer {TOKEN}"),
        format!("FlyV1 {TOKEN}"),
        format!("Bearer FlyV1 {TOKEN}"),
    ] {
        let (s, _) = lab
            .call_with(Method::GET, "/v1/apps", None, &[("authorization", &header)])
            .await;
        assert_eq!(s, 200, "{header}");
    }
    for header in ["Bearer wrong", TOKEN, "Basic dGVzdA=="] {
        let (s, b) = lab
            .call_with(Method::GET, "/v1/apps", None, &[("authorization", header)])
            .await;
        assert_eq!(s, 401, "{header}");
        assert_eq!(b, json!({"error": "Authenticate: token validation error"}));
    }
    let (s, _) = lab.call_with(Method::GET, "/v1/apps", None, &[]).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn stats_count_routes_and_mutations_and_log_requests() {
    let lab = Lab::start().await;
    lab.app("one").await;
    lab.get("/v1/apps/one").await;
    lab.get("/v1/apps/nope").await;
    let (s, stats) = lab.call_with(Method::GET, "/lab/v1/stats", None, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(stats["requests"], 3);
    assert_eq!(stats["mutations"], 1);
    assert_eq!(stats["by_route"]["POST /v1/apps"]["201"], 1);
    assert_eq!(stats["by_route"]["GET /v1/apps/{app}"]["200"], 1);
    assert_eq!(stats["by_route"]["GET /v1/apps/{app}"]["404"], 1);
    let (_, log) = lab
        .call_with(Method::GET, "/lab/v1/events?since=1", None, &[])
        .await;
    let events = log["events"].as_array().expect("events");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["path"], "/v1/apps/one");
    assert_eq!(events[1]["status"], 404);
}
