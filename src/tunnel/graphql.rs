//! The GraphQL calls that manage the operator's WireGuard peer (reference fly-runtime.md §5):
//! the organization's id by slug, `addWireGuardPeer`, `removeWireGuardPeer` and the org's
//! peer list. `POST <FLY_API_BASE_URL>/graphql` (default `https://api.fly.io`), with the same
//! `Authorization` header as the Machines API.
//! Must not: log or print the token or a key.

use serde_json::{json, Value};

use super::Error;
use crate::fly::Token;

/// Fly's GraphQL base, flyctl's default for `FLY_API_BASE_URL` (reference fly-runtime.md §5).
pub const DEFAULT_BASE_URL: &str = "https://api.fly.io";

/// What `addWireGuardPeer` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedPeer {
    /// The peer's address (its /120 in the org's /48).
    pub peerip: String,
    /// The gateway's address or host name; peers send UDP to port 51820 there.
    pub endpointip: String,
    /// The gateway's public key (base64).
    pub pubkey: String,
}

/// A GraphQL client for one base URL and token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    token: Token,
}

impl Client {
    /// `base` is `FLY_API_BASE_URL` (`https://api.fly.io`); requests go to `<base>/graphql`.
    pub fn new(base: &str, token: Token) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("fks-bootstrap/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Graphql {
                op: "building the http client".into(),
                message: e.to_string(),
            })?;
        Ok(Client {
            http,
            url: format!("{}/graphql", base.trim_end_matches('/')),
            token,
        })
    }

    async fn call(&self, op: &str, query: &str, variables: Value) -> Result<Value, Error> {
        let fail = |message: String| Error::Graphql {
            op: op.to_string(),
            message,
        };
        let auth = self.token.header_value().map_err(|e| fail(e.to_string()))?;
        let res = self
            .http
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| fail(format!("POST {}: {e}", self.url)))?;
        let status = res.status();
        let body: Value = res.json().await.map_err(|e| {
            fail(format!(
                "POST {} answered {status} without JSON: {e}",
                self.url
            ))
        })?;
        if let Some(errors) = body.get("errors").and_then(Value::as_array) {
            if !errors.is_empty() {
                let msg = errors
                    .iter()
                    .filter_map(|e| e.get("message").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(fail(msg));
            }
        }
        if !status.is_success() {
            return Err(fail(format!("POST {} answered {status}", self.url)));
        }
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }

    /// The organization's id (`query($slug:String!){ organization(slug:$slug){ id } }`).
    pub async fn org_id(&self, slug: &str) -> Result<String, Error> {
        let op = format!("looking up organization {slug}");
        let data = self
            .call(
                &op,
                "query($slug:String!){ organization(slug:$slug){ id } }",
                json!({ "slug": slug }),
            )
            .await?;
        data.pointer("/organization/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(Error::Graphql {
                op,
                message: "no organization.id in the answer".into(),
            })
    }

    /// The names of the organization's peers.
    pub async fn peer_names(&self, slug: &str) -> Result<Vec<String>, Error> {
        let data = self
            .call(
                &format!("listing the WireGuard peers of {slug}"),
                "query($slug:String!){ organization(slug:$slug){ wireGuardPeers { nodes { name } } } }",
                json!({ "slug": slug }),
            )
            .await?;
        Ok(data
            .pointer("/organization/wireGuardPeers/nodes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|n| n.get("name").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    /// `addWireGuardPeer` for `pubkey` (base64 X25519) named `name`.
    pub async fn add_peer(
        &self,
        org_id: &str,
        name: &str,
        pubkey: &str,
        region: Option<&str>,
    ) -> Result<AddedPeer, Error> {
        let op = format!("creating WireGuard peer {name}");
        let mut input = json!({ "organizationId": org_id, "name": name, "pubkey": pubkey });
        if let Some(r) = region {
            input["region"] = json!(r);
        }
        let data = self
            .call(
                &op,
                "mutation($input: AddWireGuardPeerInput!) { addWireGuardPeer(input: $input) { peerip endpointip pubkey } }",
                json!({ "input": input }),
            )
            .await?;
        let get = |k: &str| {
            data.pointer(&format!("/addWireGuardPeer/{k}"))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| Error::Graphql {
                    op: op.clone(),
                    message: format!("no addWireGuardPeer.{k} in the answer"),
                })
        };
        Ok(AddedPeer {
            peerip: get("peerip")?,
            endpointip: get("endpointip")?,
            pubkey: get("pubkey")?,
        })
    }

    /// `removeWireGuardPeer`.
    pub async fn remove_peer(&self, org_id: &str, name: &str) -> Result<(), Error> {
        self.call(
            &format!("removing WireGuard peer {name}"),
            "mutation($input: RemoveWireGuardPeerInput!) { removeWireGuardPeer(input: $input) { organization { id } } }",
            json!({ "input": { "organizationId": org_id, "name": name } }),
        )
        .await
        .map(|_| ())
    }
}
