//! A client for a k3s server's embedded etcd: member list, add, remove, update and promote,
//! health and status, and the few key-value calls (range, put, txn) a datastore needs.
//!
//! It talks to etcd's JSON gRPC gateway (`POST /v3/...` on the client URL, keys and values
//! base64, 64-bit integers as strings; etcd's "gRPC gateway" doc, served by etcd since 3.3 under
//! `/v3/`) over HTTPS with reqwest and rustls, authenticating with the k3s etcd client
//! certificate. Why not the `etcd-client` crate: it is gRPC through tonic and its build script
//! compiles etcd's .proto files, which needs `protoc` at build time on every machine that
//! builds fks-bootstrap (the operator CLI also builds on macOS); the gateway needs nothing that
//! reqwest does not already bring.
//!
//! Where k3s keeps what this needs (k3s-io/k3s `pkg/daemons/control/server.go` runtime paths and
//! `pkg/etcd/etcd.go`): the member's data in `<data-dir>/server/db/etcd`, its name in
//! `<data-dir>/server/db/etcd/name`, the TLS material in `<data-dir>/server/tls/etcd/`
//! (`server-ca.crt` trusts the serving certificates; `client.crt`/`client.key` is the client
//! certificate k3s's own etcd client and the apiserver use), the client URL
//! `https://<node-ip>:2379` and the peer URL `https://<node-ip>:2380`.
//!
//! Owns the wire format only; what to do with members is the caller's. Must not log keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

/// k3s's etcd client port (`pkg/etcd/etcd.go` `clientURL`).
pub const CLIENT_PORT: u16 = 2379;
/// k3s's etcd peer port (`pkg/etcd/etcd.go` `peerURL`).
pub const PEER_PORT: u16 = 2380;

/// Errors of etcd calls, each naming the endpoint and the operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A TLS file could not be read.
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TLS material could not be used.
    #[error("etcd TLS material from {what}")]
    Tls {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// The request did not get an answer (connection refused, timeout, TLS).
    #[error("etcd {op} at {endpoint}")]
    Request {
        op: &'static str,
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// etcd answered with an error (e.g. no quorum: `etcdserver: request timed out`).
    #[error("etcd {op} at {endpoint}: {status}: {message}")]
    Status {
        op: &'static str,
        endpoint: String,
        status: u16,
        message: String,
    },
    /// etcd's answer could not be read.
    #[error("etcd {op} at {endpoint}: unexpected answer: {reason}")]
    Decode {
        op: &'static str,
        endpoint: String,
        reason: String,
    },
}

/// The CA and client certificate to talk to a k3s server's etcd, PEM.
#[derive(Clone)]
pub struct Tls {
    /// Trusted CA (k3s: `server/tls/etcd/server-ca.crt`).
    pub ca_pem: Vec<u8>,
    /// Client certificate and key, concatenated (k3s: `client.crt` + `client.key`).
    pub identity_pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("etcd::Tls(<certificates>)")
    }
}

/// The directory of a k3s data dir that holds the etcd TLS material.
pub fn tls_dir(k3s_data_dir: &Path) -> PathBuf {
    k3s_data_dir.join("server").join("tls").join("etcd")
}

/// The etcd member data directory of a k3s data dir.
pub fn db_dir(k3s_data_dir: &Path) -> PathBuf {
    k3s_data_dir.join("server").join("db").join("etcd")
}

/// The file holding the member name k3s chose (`<node-name>-<8 hex>`).
pub fn name_file(k3s_data_dir: &Path) -> PathBuf {
    db_dir(k3s_data_dir).join("name")
}

/// Whether the data dir holds an initialised etcd member: k3s's `IsInitialized` looks for
/// `db/etcd/member/wal`.
pub fn is_initialized(k3s_data_dir: &Path) -> bool {
    db_dir(k3s_data_dir).join("member").join("wal").is_dir()
}

/// `https://[ip]:port` (IPv6 bracketed), the form of etcd's URLs.
pub fn url(ip: std::net::IpAddr, port: u16) -> String {
    format!("https://{}", std::net::SocketAddr::new(ip, port))
}

impl Tls {
    /// Read a CA file and a client certificate and key.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Tls, Error> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| Error::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let mut identity_pem = read(cert)?;
        if !identity_pem.ends_with(b"\n") {
            identity_pem.push(b'\n');
        }
        identity_pem.extend(read(key)?);
        Ok(Tls {
            ca_pem: read(ca)?,
            identity_pem,
        })
    }

    /// The client material k3s itself uses, from `<data-dir>/server/tls/etcd/`.
    pub fn from_k3s_data_dir(k3s_data_dir: &Path) -> Result<Tls, Error> {
        let dir = tls_dir(k3s_data_dir);
        Tls::from_files(
            &dir.join("server-ca.crt"),
            &dir.join("client.crt"),
            &dir.join("client.key"),
        )
    }
}

/// One member, as etcd's member calls return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member id (a string on the wire: it may exceed JSON's safe integers).
    #[serde(
        rename = "ID",
        deserialize_with = "u64_text",
        serialize_with = "u64_out"
    )]
    pub id: u64,
    /// Empty until the member has started and published itself.
    #[serde(default)]
    pub name: String,
    /// Where peers reach it.
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    /// Where clients reach it; empty until it has started.
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    /// A learner does not vote.
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

/// A member's own view, from `/v3/maintenance/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The id of the member that answered.
    pub member_id: u64,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// Whether the member that answered is a learner.
    pub is_learner: bool,
    /// Its raft term.
    pub raft_term: u64,
}

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of its last change.
    pub mod_revision: i64,
}

/// A range answer: the keys and the store revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The keys, in key order.
    pub kvs: Vec<Kv>,
    /// The store's revision when it was read.
    pub revision: i64,
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to the value.
    Put(String, Vec<u8>),
    /// Delete `key`.
    Delete(String),
}

fn u64_text<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        N(u64),
    }
    match N::deserialize(d)? {
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
        N::N(n) => Ok(n),
    }
}

fn u64_out<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

/// A number etcd's gateway sends as a string (or leaves out when zero).
fn num(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)),
        Value::Null => Some(0),
        _ => None,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The first key after every key that starts with `prefix` (etcd's `--prefix` range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A client for one etcd endpoint (`https://[ip]:2379`).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
}

impl Client {
    /// A client for `endpoint` with `tls`; every call gives up after `timeout`.
    pub fn new(endpoint: &str, tls: &Tls, timeout: Duration) -> Result<Client, Error> {
        let what = |w: &str| format!("{w} for {endpoint}");
        let ca = reqwest::Certificate::from_pem(&tls.ca_pem).map_err(|source| Error::Tls {
            what: what("the CA"),
            source,
        })?;
        let identity =
            reqwest::Identity::from_pem(&tls.identity_pem).map_err(|source| Error::Tls {
                what: what("the client certificate"),
                source,
            })?;
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|source| Error::Tls {
                what: what("the https client"),
                source,
            })?;
        Ok(Client {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn call(&self, op: &'static str, path: &str, body: Value) -> Result<Value, Error> {
        let res = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .json(&body)
            .send()
            .await
            .map_err(|source| Error::Request {
                op,
                endpoint: self.endpoint.clone(),
                source,
            })?;
        let status = res.status().as_u16();
        let text = res.text().await.map_err(|source| Error::Request {
            op,
            endpoint: self.endpoint.clone(),
            source,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Decode {
            op,
            endpoint: self.endpoint.clone(),
            reason: format!("{e}: {text}"),
        })?;
        // The gateway answers errors as {"error": "...", "code": N, "message": "..."}.
        if status != 200 || v.get("error").is_some() {
            let message = v["message"]
                .as_str()
                .or(v["error"].as_str())
                .unwrap_or(&text)
                .to_owned();
            return Err(Error::Status {
                op,
                endpoint: self.endpoint.clone(),
                status,
                message,
            });
        }
        Ok(v)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        v: Value,
    ) -> Result<T, Error> {
        serde_json::from_value(v).map_err(|e| Error::Decode {
            op,
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        })
    }

    fn members(&self, op: &'static str, v: &Value) -> Result<Vec<Member>, Error> {
        self.decode(op, v.get("members").cloned().unwrap_or(json!([])))
    }

    /// Every member (`etcdctl member list`).
    pub async fn member_list(&self) -> Result<Vec<Member>, Error> {
        let op = "member list";
        let v = self.call(op, "/v3/cluster/member/list", json!({})).await?;
        self.members(op, &v)
    }

    /// Add a member with `peer_urls`, as a learner when `learner` (k3s adds joining servers as
    /// learners, `MemberAddAsLearner`). Returns the new member and the member list after it.
    pub async fn member_add(
        &self,
        peer_urls: &[String],
        learner: bool,
    ) -> Result<(Member, Vec<Member>), Error> {
        let op = "member add";
        let v = self
            .call(
                op,
                "/v3/cluster/member/add",
                json!({"peerURLs": peer_urls, "isLearner": learner}),
            )
            .await?;
        let member = self.decode(op, v["member"].clone())?;
        Ok((member, self.members(op, &v)?))
    }

    /// Remove member `id`; returns the member list after it.
    pub async fn member_remove(&self, id: u64) -> Result<Vec<Member>, Error> {
        let op = "member remove";
        let v = self
            .call(
                op,
                "/v3/cluster/member/remove",
                json!({"ID": id.to_string()}),
            )
            .await?;
        self.members(op, &v)
    }

    /// Set member `id`'s peer URLs (`etcdctl member update`); goes through quorum.
    pub async fn member_update(&self, id: u64, peer_urls: &[String]) -> Result<Vec<Member>, Error> {
        let op = "member update";
        let v = self
            .call(
                op,
                "/v3/cluster/member/update",
                json!({"ID": id.to_string(), "peerURLs": peer_urls}),
            )
            .await?;
        self.members(op, &v)
    }

    /// Promote learner `id` to a voting member; etcd refuses while it has not caught up.
    pub async fn member_promote(&self, id: u64) -> Result<Vec<Member>, Error> {
        let op = "member promote";
        let v = self
            .call(
                op,
                "/v3/cluster/member/promote",
                json!({"ID": id.to_string()}),
            )
            .await?;
        self.members(op, &v)
    }

    /// The answering member's status.
    pub async fn status(&self) -> Result<Status, Error> {
        let op = "status";
        let v = self.call(op, "/v3/maintenance/status", json!({})).await?;
        let field = |f: &Value, name: &str| {
            num(f)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| Error::Decode {
                    op,
                    endpoint: self.endpoint.clone(),
                    reason: format!("{name} is {f}"),
                })
        };
        Ok(Status {
            member_id: field(&v["header"]["member_id"], "header.member_id")?,
            leader: field(&v["leader"], "leader")?,
            is_learner: v["isLearner"].as_bool().unwrap_or(false),
            raft_term: field(&v["raftTerm"], "raftTerm")?,
        })
    }

    /// Whether this member can serve a quorum read: etcd's `/health` (a linearizable read
    /// behind it; `{"health":"true"}`). An unreachable or unhealthy member is `Ok(false)`'s
    /// opposite: the error says why.
    pub async fn health(&self) -> Result<(), Error> {
        let op = "health";
        let res = self
            .http
            .get(format!("{}/health", self.endpoint))
            .send()
            .await
            .map_err(|source| Error::Request {
                op,
                endpoint: self.endpoint.clone(),
                source,
            })?;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 && v["health"] == "true" {
            return Ok(());
        }
        Err(Error::Status {
            op,
            endpoint: self.endpoint.clone(),
            status,
            message: v["reason"].as_str().unwrap_or(&text).to_owned(),
        })
    }

    /// Every key starting with `prefix`, read linearizably (needs quorum).
    pub async fn range_prefix(&self, prefix: &str) -> Result<Range, Error> {
        let op = "range";
        let v = self
            .call(
                op,
                "/v3/kv/range",
                json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes()))}),
            )
            .await?;
        let bad = |reason: String| Error::Decode {
            op,
            endpoint: self.endpoint.clone(),
            reason,
        };
        let revision = num(&v["header"]["revision"])
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| bad(format!("header.revision is {}", v["header"]["revision"])))?;
        let mut kvs = Vec::new();
        for kv in v["kvs"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let dec = |f: &str| {
                base64::engine::general_purpose::STANDARD
                    .decode(kv[f].as_str().unwrap_or(""))
                    .map_err(|e| bad(format!("{f}: {e}")))
            };
            let key = String::from_utf8(dec("key")?).map_err(|e| bad(format!("key: {e}")))?;
            kvs.push(Kv {
                key,
                value: dec("value")?,
                mod_revision: num(&kv["mod_revision"])
                    .and_then(|n| i64::try_from(n).ok())
                    .ok_or_else(|| bad(format!("mod_revision is {}", kv["mod_revision"])))?,
            });
        }
        Ok(Range { kvs, revision })
    }

    /// Set one key.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.call(
            "put",
            "/v3/kv/put",
            json!({"key": b64(key.as_bytes()), "value": b64(value)}),
        )
        .await
        .map(|_| ())
    }

    /// Apply `writes` only if every key of `expect` still has that mod revision (0: the key
    /// does not exist). Returns whether it was applied.
    pub async fn txn(&self, expect: &[(String, i64)], writes: &[Write]) -> Result<bool, Error> {
        let compare: Vec<Value> = expect
            .iter()
            .map(|(k, rev)| {
                json!({"result": "EQUAL", "target": "MOD", "key": b64(k.as_bytes()),
                       "mod_revision": rev.to_string()})
            })
            .collect();
        let success: Vec<Value> = writes
            .iter()
            .map(|w| match w {
                Write::Put(k, v) => {
                    json!({"request_put": {"key": b64(k.as_bytes()), "value": b64(v)}})
                }
                Write::Delete(k) => json!({"request_delete_range": {"key": b64(k.as_bytes())}}),
            })
            .collect();
        let v = self
            .call(
                "txn",
                "/v3/kv/txn",
                json!({"compare": compare, "success": success}),
            )
            .await?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }
}

/// The member whose name is `name`.
pub fn by_name<'a>(members: &'a [Member], name: &str) -> Option<&'a Member> {
    members.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_read_from_strings_and_numbers_and_written_as_strings() {
        let m: Member = serde_json::from_str(
            r#"{"ID":"17212254406337343426","name":"ctrl-0-1a2b3c4d","peerURLs":["https://[fdaa::2]:2380"]}"#,
        )
        .unwrap();
        assert_eq!(m.id, 17_212_254_406_337_343_426);
        assert!(m.client_urls.is_empty() && !m.is_learner);
        let n: Member = serde_json::from_str(r#"{"ID":5,"isLearner":true}"#).unwrap();
        assert_eq!((n.id, n.is_learner, n.name.as_str()), (5, true, ""));
        let out = serde_json::to_value(&m).unwrap();
        assert_eq!(out["ID"], "17212254406337343426");
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(
            url("fdaa::2".parse().unwrap(), PEER_PORT),
            "https://[fdaa::2]:2380"
        );
        assert_eq!(
            url("10.0.0.1".parse().unwrap(), CLIENT_PORT),
            "https://10.0.0.1:2379"
        );
    }

    #[test]
    fn k3s_paths_follow_its_layout() {
        let d = Path::new("/data/k3s");
        assert_eq!(tls_dir(d), Path::new("/data/k3s/server/tls/etcd"));
        assert_eq!(name_file(d), Path::new("/data/k3s/server/db/etcd/name"));
        assert!(!is_initialized(Path::new("/nonexistent")));
    }
}
