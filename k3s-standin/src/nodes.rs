//! The cluster state of the bootstrap server: Node objects (Kubernetes v1 JSON), pod CIDR
//! allocation, heartbeats and readiness, patches (strategic-merge as kubectl sends it, JSON
//! merge, JSON patch) and the Table form kubectl asks for.
//!
//! Pure: no I/O, time is passed in. Must not authenticate: the HTTP layer decides who may call.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::log::{self, rfc3339};

/// Errors from node operations; each maps to a Kubernetes `Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nodes \"{0}\" not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cluster-cidr: {cluster:?} and node-ip: {node:?}, must share the same IP version (IPv4, IPv6 or dual-stack)")]
    Family {
        cluster: Vec<String>,
        node: Vec<String>,
    },
    #[error("no pod CIDR left in cluster-cidr {0}")]
    CidrExhausted(String),
    #[error("unsupported patch content type {0}")]
    PatchType(String),
}

impl Error {
    /// HTTP status and Kubernetes `reason`.
    pub fn code(&self) -> (u16, &'static str) {
        match self {
            Error::NotFound(_) => (404, "NotFound"),
            Error::PatchType(_) => (415, "UnsupportedMediaType"),
            Error::CidrExhausted(_) => (500, "InternalError"),
            Error::Invalid(_) | Error::Family { .. } => (422, "Invalid"),
        }
    }
}

/// What a node sends to register and heartbeat (the stand-in's own supervisor endpoint, not a
/// k3s API).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Registration {
    /// Node name.
    pub name: String,
    /// `server` or `agent`.
    pub role: String,
    /// InternalIP addresses in order.
    pub node_ips: Vec<IpAddr>,
    /// ExternalIP addresses.
    pub external_ips: Vec<IpAddr>,
    /// Labels set at first registration.
    pub labels: Vec<(String, String)>,
    /// `(key, value, effect)`.
    pub taints: Vec<(String, Option<String>, String)>,
    /// Whether the node reports itself Ready (a kubelet posts its own Ready condition). False
    /// only while the stand-in knob `K3S_STANDIN_READY_DELAY` has not passed; absent (older
    /// nodes) means Ready.
    #[serde(default = "yes")]
    pub ready: bool,
    /// The registering node's own version, which its Node reports as kubeletVersion and
    /// kubeProxyVersion (a kubelet posts its `nodeInfo` with its status, so a node restarted
    /// on a newer k3s shows the new version on its next post). Absent (older nodes): the
    /// version of the server answering.
    #[serde(default)]
    pub version: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
struct Entry {
    node: Value,
    last_seen: u64,
    created: u64,
    /// What the node's last registration or heartbeat said about its own readiness.
    #[serde(default = "yes")]
    ready: bool,
    /// When `ready` last changed (seconds), for `lastTransitionTime`.
    #[serde(default)]
    ready_since: u64,
}

/// What survives a restart of the bootstrap server (the stand-in's substitute for etcd).
#[derive(Serialize, Deserialize)]
struct Saved {
    resource_version: u64,
    next_cidr: u64,
    nodes: BTreeMap<String, Entry>,
}

/// Where node records live in etcd (Kubernetes' key for nodes).
pub const NODES_PREFIX: &str = "/registry/minions/";
/// Where the pod-CIDR allocation counters live in etcd (the stand-in's own key).
pub const ALLOCATION_KEY: &str = "/registry/k3s-standin/allocation";
/// The prefix that holds everything the stand-in keeps in etcd.
pub const REGISTRY_PREFIX: &str = "/registry/";

/// All nodes, and the allocation state.
pub struct Cluster {
    cluster_cidrs: Vec<IpNet>,
    mask_v4: u8,
    mask_v6: u8,
    /// Seconds without a heartbeat after which a node is shown NotReady.
    timeout: u64,
    nodes: BTreeMap<String, Entry>,
    resource_version: u64,
    next_cidr: u64,
    /// Set by every change worth persisting (not by plain heartbeats).
    dirty: bool,
}

/// The Go/Kubernetes name of this machine's architecture (`amd64`, `arm64`).
pub fn k8s_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn node_info() -> (String, String) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    (
        kernel,
        "k3s-standin (not k3s): no kubelet, no containers".to_owned(),
    )
}

fn subnet(net: &IpNet, mask: u8, index: u128) -> Option<IpNet> {
    let bits = mask.checked_sub(net.prefix_len())?;
    if bits < 128 && index >= (1u128 << bits) {
        return None;
    }
    match net {
        IpNet::V4(n) => {
            let base = u128::from(u32::from(n.network()));
            let addr = base + (index << (32 - u32::from(mask)));
            let addr = u32::try_from(addr).ok()?;
            ipnet::Ipv4Net::new(addr.into(), mask).ok().map(IpNet::V4)
        }
        IpNet::V6(n) => {
            let shift = 128 - u32::from(mask);
            let off = if shift >= 128 { 0 } else { index << shift };
            let addr = u128::from(n.network()).checked_add(off)?;
            ipnet::Ipv6Net::new(addr.into(), mask).ok().map(IpNet::V6)
        }
    }
}

fn same_version(a: &[bool], b: &[bool]) -> bool {
    a.first() == b.first() && (a.len() > 1) == (b.len() > 1)
}

impl Cluster {
    /// An empty cluster allocating per-node pod CIDRs of `/mask_v4` and `/mask_v6`.
    pub fn new(cluster_cidrs: Vec<IpNet>, mask_v4: u8, mask_v6: u8, timeout: u64) -> Self {
        Cluster {
            cluster_cidrs,
            mask_v4,
            mask_v6,
            timeout,
            nodes: BTreeMap::new(),
            resource_version: 1,
            next_cidr: 0,
            dirty: false,
        }
    }

    /// The state to persist, if it changed since the last call.
    pub fn take_snapshot(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let saved = Saved {
            resource_version: self.resource_version,
            next_cidr: self.next_cidr,
            nodes: std::mem::take(&mut self.nodes),
        };
        let text = serde_json::to_string(&saved).expect("node state serialises");
        self.nodes = saved.nodes;
        Some(text)
    }

    /// Restore a snapshot taken by [`Cluster::take_snapshot`].
    pub fn restore(&mut self, text: &str) -> Result<(), Error> {
        let saved: Saved = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("saved node state: {e}")))?;
        self.resource_version = saved.resource_version;
        self.next_cidr = saved.next_cidr;
        self.nodes = saved.nodes;
        Ok(())
    }

    /// The state as etcd keys and JSON values: each node at `/registry/minions/<name>` (the
    /// key Kubernetes' apiserver uses for nodes; the value here is the stand-in's own record of
    /// the Node object and its last heartbeat, not protobuf) and the allocation counters at
    /// [`ALLOCATION_KEY`].
    pub fn export(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let meta = serde_json::json!({"resource_version": self.resource_version, "next_cidr": self.next_cidr});
        out.insert(ALLOCATION_KEY.to_owned(), meta.to_string());
        for (name, e) in &self.nodes {
            out.insert(
                format!("{NODES_PREFIX}{name}"),
                serde_json::to_string(e).expect("a node entry serialises"),
            );
        }
        out
    }

    /// Load the state from etcd keys written by [`Cluster::export`].
    pub fn import(&mut self, kvs: &BTreeMap<String, String>) -> Result<(), Error> {
        self.nodes.clear();
        for (k, v) in kvs {
            if k == ALLOCATION_KEY {
                let m: Value =
                    serde_json::from_str(v).map_err(|e| Error::Invalid(format!("{k}: {e}")))?;
                self.resource_version = m["resource_version"].as_u64().unwrap_or(1);
                self.next_cidr = m["next_cidr"].as_u64().unwrap_or(0);
            } else if let Some(name) = k.strip_prefix(NODES_PREFIX) {
                let e: Entry =
                    serde_json::from_str(v).map_err(|e| Error::Invalid(format!("{k}: {e}")))?;
                self.nodes.insert(name.to_owned(), e);
            }
        }
        Ok(())
    }

    fn bump(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Register a node or record its heartbeat. A new node gets its labels, taints and pod
    /// CIDRs; a known one keeps what was patched since and only refreshes its addresses, as a
    /// kubelet does. The kubelet's `NodeAddress` status setter writes `status.addresses` from
    /// its current `--node-ip` at every status sync, on the existing Node object found by node
    /// name (kubernetes pkg/kubelet/nodestatus/setters.go, read for this). Under k3s's embedded
    /// cloud controller the kubelet runs with an external cloud provider, and the addresses come
    /// from the node-ip annotations k3s's agent writes at start; that k3s path is from memory,
    /// not from reference/k3s.md, so unverified here. Either way a node whose address changed
    /// (a Fly host migration gives a machine a new 6PN address, reference fly-runtime.md §4)
    /// comes back as the same object with the new InternalIP, and no stale object is left.
    /// The change is persisted at once, as k3s keeps it in its datastore.
    pub fn register(&mut self, r: &Registration, now: u64) -> Result<Value, Error> {
        let cf: Vec<bool> = self
            .cluster_cidrs
            .iter()
            .map(|c| matches!(c, IpNet::V6(_)))
            .collect();
        let nf: Vec<bool> = r.node_ips.iter().map(IpAddr::is_ipv6).collect();
        if !same_version(&cf, &nf) {
            return Err(Error::Family {
                cluster: self.cluster_cidrs.iter().map(ToString::to_string).collect(),
                node: r.node_ips.iter().map(ToString::to_string).collect(),
            });
        }
        let mut addresses: Vec<Value> = r
            .node_ips
            .iter()
            .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
            .collect();
        addresses.extend(
            r.external_ips
                .iter()
                .map(|ip| json!({"type": "ExternalIP", "address": ip.to_string()})),
        );
        addresses.push(json!({"type": "Hostname", "address": r.name}));
        let version = Value::String(
            r.version
                .clone()
                .unwrap_or_else(|| log::version().to_owned()),
        );
        let rv = self.bump();
        if let Some(e) = self.nodes.get_mut(&r.name) {
            e.last_seen = now;
            for field in ["kubeletVersion", "kubeProxyVersion"] {
                if e.node["status"]["nodeInfo"][field] != version {
                    e.node["status"]["nodeInfo"][field] = version.clone();
                    self.dirty = true;
                }
            }
            if e.ready != r.ready {
                e.ready = r.ready;
                e.ready_since = now;
            }
            let addresses = Value::Array(addresses);
            if e.node["status"]["addresses"] != addresses {
                self.dirty = true;
            }
            e.node["status"]["addresses"] = addresses;
            e.node["metadata"]["resourceVersion"] = Value::String(rv);
            return Ok(e.node.clone());
        }
        let index = u128::from(self.next_cidr);
        let mut pod_cidrs = Vec::new();
        for c in &self.cluster_cidrs {
            let mask = if matches!(c, IpNet::V6(_)) {
                self.mask_v6
            } else {
                self.mask_v4
            };
            pod_cidrs.push(
                subnet(c, mask, index)
                    .ok_or_else(|| Error::CidrExhausted(c.to_string()))?
                    .to_string(),
            );
        }
        self.next_cidr += 1;
        let mut labels = Map::new();
        for (k, v) in [
            ("beta.kubernetes.io/arch", k8s_arch()),
            ("beta.kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", k8s_arch()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/hostname", r.name.as_str()),
            ("node.kubernetes.io/instance-type", "k3s-standin"),
        ] {
            labels.insert(k.to_owned(), Value::String(v.to_owned()));
        }
        if r.role == "server" {
            // k3s labels servers with embedded etcd control-plane, etcd and master.
            for k in [
                "node-role.kubernetes.io/control-plane",
                "node-role.kubernetes.io/etcd",
                "node-role.kubernetes.io/master",
            ] {
                labels.insert(k.to_owned(), Value::String("true".to_owned()));
            }
        }
        for (k, v) in &r.labels {
            labels.insert(k.clone(), Value::String(v.clone()));
        }
        let taints: Vec<Value> = r
            .taints
            .iter()
            .map(|(k, v, e)| {
                let mut t = json!({"key": k, "effect": e});
                if let Some(v) = v {
                    t["value"] = Value::String(v.clone());
                }
                t
            })
            .collect();
        let (kernel, os_image) = node_info();
        let mut spec = json!({
            "podCIDR": pod_cidrs[0],
            "podCIDRs": pod_cidrs,
            "providerID": format!("k3s-standin://{}", r.name),
        });
        if !taints.is_empty() {
            spec["taints"] = Value::Array(taints);
        }
        let uid = format!(
            "{:032x}",
            u128::from_str_radix(&crate::pki::random_password(), 16).unwrap_or_default()
        );
        let uid = format!(
            "{}-{}-{}-{}-{}",
            &uid[0..8],
            &uid[8..12],
            &uid[12..16],
            &uid[16..20],
            &uid[20..32]
        );
        let node = json!({
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": r.name,
                "uid": uid,
                "resourceVersion": rv,
                "creationTimestamp": rfc3339(now),
                "labels": labels,
                "annotations": {"k3s-standin.io/stand-in": "this node is registered with k3s-standin, a test double, not k3s"},
            },
            "spec": spec,
            "status": {
                "addresses": addresses,
                "conditions": [],
                "nodeInfo": {
                    "kubeletVersion": version.clone(),
                    "kubeProxyVersion": version,
                    "osImage": os_image,
                    "kernelVersion": kernel,
                    "containerRuntimeVersion": "none://k3s-standin",
                    "operatingSystem": "linux",
                    "architecture": k8s_arch(),
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            },
        });
        self.dirty = true;
        self.nodes.insert(
            r.name.clone(),
            Entry {
                node,
                last_seen: now,
                created: now,
                ready: r.ready,
                ready_since: now,
            },
        );
        Ok(self.view(&r.name, now).expect("just inserted"))
    }

    /// A node as served at `now`: the Ready condition follows the last heartbeat.
    fn view(&self, name: &str, now: u64) -> Option<Value> {
        let e = self.nodes.get(name)?;
        let mut n = e.node.clone();
        let fresh = now.saturating_sub(e.last_seen) <= self.timeout;
        let (status, reason, message, since) = if !fresh {
            (
                "Unknown",
                "NodeStatusUnknown",
                "k3s-standin node stopped posting heartbeats",
                e.last_seen + self.timeout,
            )
        } else if !e.ready {
            (
                "False",
                "KubeletNotReady",
                "k3s-standin node is not ready yet (K3S_STANDIN_READY_DELAY, a stand-in knob)",
                e.ready_since.max(e.created),
            )
        } else {
            (
                "True",
                "KubeletReady",
                "k3s-standin node is posting heartbeats",
                e.ready_since.max(e.created),
            )
        };
        n["status"]["conditions"] = json!([{
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": rfc3339(e.last_seen),
            "lastTransitionTime": rfc3339(since),
        }]);
        Some(n)
    }

    /// One node.
    pub fn get(&self, name: &str, now: u64) -> Result<Value, Error> {
        self.view(name, now)
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// A `NodeList`.
    pub fn list(&self, now: u64) -> Value {
        let items: Vec<Value> = self
            .nodes
            .keys()
            .filter_map(|n| self.view(n, now))
            .collect();
        json!({
            "kind": "NodeList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": self.resource_version.to_string()},
            "items": items,
        })
    }

    /// Delete a node (it comes back at its next heartbeat, as with a kubelet).
    pub fn delete(&mut self, name: &str) -> Result<(), Error> {
        self.dirty = true;
        self.nodes
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// Apply a patch of `content_type` to a node and return the result.
    pub fn patch(
        &mut self,
        name: &str,
        content_type: &str,
        body: &[u8],
        now: u64,
    ) -> Result<Value, Error> {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        let patch: Value =
            serde_json::from_slice(body).map_err(|e| Error::Invalid(format!("patch body: {e}")))?;
        let current = self
            .nodes
            .get(name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))?
            .node
            .clone();
        let updated = match ct {
            // Node fields kubectl patches (labels, annotations, taints, unschedulable) are maps,
            // scalars or lists without a merge key, so a strategic merge reduces to a JSON merge
            // with the `$` directives dropped.
            "application/strategic-merge-patch+json" => merge(current, &strip_directives(patch)),
            "application/merge-patch+json" => merge(current, &patch),
            "application/json-patch+json" => json_patch(current, &patch)?,
            other => return Err(Error::PatchType(other.to_owned())),
        };
        self.replace(name, updated, now)
    }

    /// Replace a node's metadata and spec (PUT); status stays the server's.
    pub fn replace(&mut self, name: &str, mut updated: Value, now: u64) -> Result<Value, Error> {
        if updated["metadata"]["name"] != Value::String(name.to_owned()) {
            return Err(Error::Invalid(format!("metadata.name must stay {name}")));
        }
        let rv = self.bump();
        let e = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        updated["metadata"]["uid"] = e.node["metadata"]["uid"].clone();
        updated["metadata"]["creationTimestamp"] = e.node["metadata"]["creationTimestamp"].clone();
        updated["metadata"]["resourceVersion"] = Value::String(rv);
        updated["status"] = e.node["status"].clone();
        updated["kind"] = json!("Node");
        updated["apiVersion"] = json!("v1");
        e.node = updated;
        self.dirty = true;
        Ok(self.view(name, now).expect("node present"))
    }

    /// The Table kubectl prints for `get nodes` (the apiserver's node printer columns; the wide
    /// ones have priority 1). `names` limits the rows to one node for `get nodes NAME`.
    pub fn table(&self, only: Option<&str>, now: u64) -> Result<Value, Error> {
        let names: Vec<&String> = match only {
            Some(n) => vec![
                self.nodes
                    .get_key_value(n)
                    .ok_or_else(|| Error::NotFound(n.to_owned()))?
                    .0,
            ],
            None => self.nodes.keys().collect(),
        };
        let rows: Vec<Value> = names
            .iter()
            .filter_map(|n| self.view(n, now).map(|v| (n, v)))
            .map(|(n, v)| {
                let e = &self.nodes[n.as_str()];
                let ready = v["status"]["conditions"][0]["status"] == "True";
                let mut status = if ready { "Ready".to_owned() } else { "NotReady".to_owned() };
                if v["spec"]["unschedulable"] == true {
                    status.push_str(",SchedulingDisabled");
                }
                let mut roles: Vec<&str> = v["metadata"]["labels"]
                    .as_object()
                    .map(|m| m.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).collect())
                    .unwrap_or_default();
                roles.sort_unstable();
                let roles = if roles.is_empty() { "<none>".to_owned() } else { roles.join(",") };
                let addr = |t: &str| {
                    v["status"]["addresses"]
                        .as_array()
                        .and_then(|a| a.iter().find(|x| x["type"] == t))
                        .and_then(|x| x["address"].as_str())
                        .unwrap_or("<none>")
                        .to_owned()
                };
                let info = &v["status"]["nodeInfo"];
                json!({
                    "cells": [n, status, roles, human_age(now.saturating_sub(e.created)), info["kubeletVersion"],
                        addr("InternalIP"), addr("ExternalIP"), info["osImage"], info["kernelVersion"], info["containerRuntimeVersion"]],
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": v["metadata"],
                    },
                })
            })
            .collect();
        let col = |name: &str, ty: &str, fmt: &str, prio: u8, desc: &str| json!({"name": name, "type": ty, "format": fmt, "description": desc, "priority": prio});
        Ok(json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": self.resource_version.to_string()},
            "columnDefinitions": [
                col("Name", "string", "name", 0, "Name must be unique within a namespace."),
                col("Status", "string", "", 0, "The status of the node"),
                col("Roles", "string", "", 0, "The roles of the node"),
                col("Age", "string", "", 0, "CreationTimestamp of the node"),
                col("Version", "string", "", 0, "Kubelet Version reported by the node."),
                col("Internal-IP", "string", "", 1, "List of internal IPs."),
                col("External-IP", "string", "", 1, "List of external IPs."),
                col("OS-Image", "string", "", 1, "OS Image reported by the node."),
                col("Kernel-Version", "string", "", 1, "Kernel Version reported by the node."),
                col("Container-Runtime", "string", "", 1, "Container Runtime Version reported by the node."),
            ],
            "rows": rows,
        }))
    }
}

/// kubectl's short age form (k8s `duration.HumanDuration`, coarsened).
fn human_age(s: u64) -> String {
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10_800 => format!("{}m", s / 60),
        10_800..28_800 => format!("{}h{}m", s / 3600, (s / 60) % 60),
        28_800..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Drop strategic-merge directives (`$setElementOrder/...`, `$retainKeys`, `$patch`, ...).
fn strip_directives(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect(),
        ),
        other => other,
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut t = match target {
        Value::Object(t) => t,
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            let old = t.remove(k).unwrap_or(Value::Null);
            t.insert(k.clone(), merge(old, v));
        }
    }
    Value::Object(t)
}

fn pointer_parts(path: &str) -> Result<Vec<String>, Error> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| Error::Invalid(format!("json patch path {path}")))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// RFC 6902 JSON patch: add, remove, replace, test, copy, move.
pub fn json_patch(mut doc: Value, ops: &Value) -> Result<Value, Error> {
    let ops = ops
        .as_array()
        .ok_or_else(|| Error::Invalid("json patch must be an array".to_owned()))?;
    for op in ops {
        let kind = op["op"].as_str().unwrap_or("");
        let path = op["path"]
            .as_str()
            .ok_or_else(|| Error::Invalid("json patch op without path".to_owned()))?;
        match kind {
            "add" | "replace" => {
                let value = op
                    .get("value")
                    .cloned()
                    .ok_or_else(|| Error::Invalid(format!("{kind} {path} without value")))?;
                set(&mut doc, path, value, kind == "add")?;
            }
            "remove" => {
                take(&mut doc, path)?;
            }
            "test" => {
                if doc.pointer(path) != op.get("value") {
                    return Err(Error::Invalid(format!("json patch test failed at {path}")));
                }
            }
            "copy" | "move" => {
                let from = op["from"]
                    .as_str()
                    .ok_or_else(|| Error::Invalid(format!("{kind} without from")))?;
                let v = if kind == "move" {
                    take(&mut doc, from)?
                } else {
                    doc.pointer(from).cloned().ok_or_else(|| {
                        Error::Invalid(format!("json patch path {from} not found"))
                    })?
                };
                set(&mut doc, path, v, true)?;
            }
            other => return Err(Error::Invalid(format!("json patch op {other}"))),
        }
    }
    Ok(doc)
}

fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), Error> {
    let mut parts = pointer_parts(path)?;
    let last = parts
        .pop()
        .ok_or_else(|| Error::Invalid("json patch on the whole object".to_owned()))?;
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(&p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| Error::Invalid(format!("json patch path {path} not found")))?;
    }
    Ok((cur, last))
}

fn set(doc: &mut Value, path: &str, value: Value, add: bool) -> Result<(), Error> {
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => {
            if !add && !m.contains_key(&last) {
                return Err(Error::Invalid(format!("json patch path {path} not found")));
            }
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse()
                    .map_err(|_| Error::Invalid(format!("json patch index {path}")))?
            };
            if add && i <= a.len() {
                a.insert(i, value);
            } else if !add && i < a.len() {
                a[i] = value;
            } else {
                return Err(Error::Invalid(format!(
                    "json patch index {path} out of range"
                )));
            }
        }
        _ => return Err(Error::Invalid(format!("json patch path {path} not found"))),
    }
    Ok(())
}

fn take(doc: &mut Value, path: &str) -> Result<Value, Error> {
    let (p, last) = parent(doc, path)?;
    let missing = || Error::Invalid(format!("json patch path {path} not found"));
    match p {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            (i < a.len()).then(|| a.remove(i)).ok_or_else(missing)
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, ips: &[&str]) -> Registration {
        Registration {
            name: name.into(),
            role: "server".into(),
            node_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            external_ips: vec![],
            labels: vec![("topology.kubernetes.io/region".into(), "iad".into())],
            taints: vec![],
            ready: true,
            version: Some("v1.33.7+k3s-standin".into()),
        }
    }

    fn cluster() -> Cluster {
        Cluster::new(
            vec![
                "fd00:42::/56".parse().unwrap(),
                "10.42.0.0/16".parse().unwrap(),
            ],
            24,
            64,
            40,
        )
    }

    #[test]
    fn register_allocates_pod_cidrs_in_cluster_cidr_order() {
        let mut c = cluster();
        let a = c
            .register(&reg("a", &["fdaa::1", "10.0.0.1"]), 100)
            .unwrap();
        let b = c
            .register(&reg("b", &["fdaa::2", "10.0.0.2"]), 100)
            .unwrap();
        assert_eq!(
            a["spec"]["podCIDRs"],
            json!(["fd00:42::/64", "10.42.0.0/24"])
        );
        assert_eq!(
            b["spec"]["podCIDRs"],
            json!(["fd00:42:0:1::/64", "10.42.1.0/24"])
        );
        assert_eq!(
            a["status"]["addresses"][0],
            json!({"type": "InternalIP", "address": "fdaa::1"})
        );
        assert_eq!(
            a["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
            "true"
        );
        assert_eq!(
            a["metadata"]["labels"]["topology.kubernetes.io/region"],
            "iad"
        );
    }

    #[test]
    fn table_shows_first_internal_and_external_ip_and_roles() {
        let mut c = cluster();
        let mut r = reg("a", &["fdaa::1", "10.0.0.1"]);
        r.external_ips = vec!["2001:db8::1".parse().unwrap()];
        r.role = "agent".into();
        let n = c.register(&r, 0).unwrap();
        assert_eq!(
            n["status"]["addresses"][2],
            json!({"type": "ExternalIP", "address": "2001:db8::1"})
        );
        let t = c.table(Some("a"), 5).unwrap();
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "Ready");
        assert_eq!(cells[2], "<none>");
        assert_eq!(cells[5], "fdaa::1");
        assert_eq!(cells[6], "2001:db8::1");
        assert!(c.table(Some("zz"), 5).is_err());
    }

    #[test]
    fn register_refuses_node_ips_in_the_wrong_family_order() {
        let mut c = cluster();
        let e = c
            .register(&reg("a", &["10.0.0.1", "fdaa::1"]), 0)
            .unwrap_err();
        assert!(
            e.to_string().contains("must share the same IP version"),
            "{e}"
        );
    }

    #[test]
    fn node_reporting_not_ready_shows_ready_false_until_it_reports_ready() {
        let mut c = cluster();
        let mut r = reg("a", &["fdaa::1", "10.0.0.1"]);
        r.ready = false;
        c.register(&r, 100).unwrap();
        let cond = &c.get("a", 101).unwrap()["status"]["conditions"][0];
        assert_eq!(cond["status"], "False");
        assert_eq!(cond["reason"], "KubeletNotReady");
        assert_eq!(
            c.table(None, 101).unwrap()["rows"][0]["cells"][1],
            "NotReady"
        );
        r.ready = true;
        c.register(&r, 103).unwrap();
        let cond = &c.get("a", 104).unwrap()["status"]["conditions"][0];
        assert_eq!(cond["status"], "True");
        assert_eq!(cond["lastTransitionTime"], rfc3339(103));
    }

    #[test]
    fn a_node_registering_again_on_a_newer_version_reports_it() {
        let mut c = cluster();
        let mut r = reg("a", &["fdaa::1", "10.0.0.1"]);
        c.register(&r, 100).unwrap();
        let info = |c: &Cluster| c.get("a", 101).unwrap()["status"]["nodeInfo"].clone();
        assert_eq!(info(&c)["kubeletVersion"], "v1.33.7+k3s-standin");
        r.version = Some("v1.34.1+k3s-standin".into());
        c.register(&r, 102).unwrap();
        assert_eq!(info(&c)["kubeletVersion"], "v1.34.1+k3s-standin");
        assert_eq!(info(&c)["kubeProxyVersion"], "v1.34.1+k3s-standin");
    }

    #[test]
    fn registration_without_ready_field_means_ready() {
        let r: Registration = serde_json::from_str(
            r#"{"name":"a","role":"agent","node_ips":["fdaa::1","10.0.0.1"],"external_ips":[],"labels":[],"taints":[]}"#,
        )
        .unwrap();
        assert!(r.ready);
    }

    #[test]
    fn silent_node_turns_not_ready_after_the_timeout() {
        let mut c = cluster();
        c.register(&reg("a", &["fdaa::1", "10.0.0.1"]), 100)
            .unwrap();
        assert_eq!(
            c.get("a", 140).unwrap()["status"]["conditions"][0]["status"],
            "True"
        );
        assert_eq!(
            c.get("a", 141).unwrap()["status"]["conditions"][0]["status"],
            "Unknown"
        );
        let t = c.table(None, 141).unwrap();
        assert_eq!(t["rows"][0]["cells"][1], "NotReady");
    }

    #[test]
    fn strategic_merge_taint_patch_replaces_taints_and_keeps_them_on_heartbeat() {
        let mut c = cluster();
        c.register(&reg("a", &["fdaa::1", "10.0.0.1"]), 0).unwrap();
        let p = br#"{"spec":{"taints":[{"effect":"NoExecute","key":"CriticalAddonsOnly","value":"true"}]},"$setElementOrder/x":[]}"#;
        c.patch("a", "application/strategic-merge-patch+json", p, 1)
            .unwrap();
        let n = c.register(&reg("a", &["fdaa::1", "10.0.0.1"]), 2).unwrap();
        assert_eq!(n["spec"]["taints"][0]["key"], "CriticalAddonsOnly");
        let n = c
            .patch(
                "a",
                "application/merge-patch+json",
                br#"{"metadata":{"labels":{"kubernetes.io/os":null}}}"#,
                3,
            )
            .unwrap();
        assert!(n["metadata"]["labels"].get("kubernetes.io/os").is_none());
        assert!(c
            .patch("a", "application/apply-patch+yaml", b"{}", 3)
            .is_err());
    }

    #[test]
    fn cordon_is_kept_across_heartbeats_and_a_deleted_node_leaves_the_store() {
        let mut c = cluster();
        c.register(&reg("a", &["fdaa::1", "10.0.0.1"]), 0).unwrap();
        c.register(&reg("b", &["fdaa::2", "10.0.0.2"]), 0).unwrap();
        // What `kubectl cordon` (and `kubectl drain`, first) sends.
        let p = br#"{"spec":{"unschedulable":true}}"#;
        c.patch("a", "application/strategic-merge-patch+json", p, 1)
            .unwrap();
        let n = c.register(&reg("a", &["fdaa::1", "10.0.0.1"]), 2).unwrap();
        assert_eq!(n["spec"]["unschedulable"], true);
        let key = format!("{NODES_PREFIX}a");
        let mut d = cluster();
        d.import(&c.export()).unwrap();
        assert_eq!(d.get("a", 2).unwrap()["spec"]["unschedulable"], true);
        // The delete is a missing key in the export: the etcd store deletes it.
        c.delete("a").unwrap();
        assert!(!c.export().contains_key(&key));
        assert!(matches!(c.get("a", 3), Err(Error::NotFound(_))));
        assert!(matches!(c.delete("a"), Err(Error::NotFound(_))));
        assert_eq!(c.list(3)["items"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn snapshot_restores_patched_nodes_and_allocation() {
        let mut c = cluster();
        c.register(&reg("a", &["fdaa::1", "10.0.0.1"]), 0).unwrap();
        c.patch(
            "a",
            "application/merge-patch+json",
            br#"{"metadata":{"labels":{"x":"y"}}}"#,
            1,
        )
        .unwrap();
        let snap = c.take_snapshot().unwrap();
        assert!(c.take_snapshot().is_none(), "nothing changed since");
        c.register(&reg("a", &["fdaa::1", "10.0.0.1"]), 2).unwrap();
        assert!(c.take_snapshot().is_none(), "a heartbeat is not persisted");
        let mut d = cluster();
        d.restore(&snap).unwrap();
        assert_eq!(d.get("a", 1).unwrap()["metadata"]["labels"]["x"], "y");
        let b = d.register(&reg("b", &["fdaa::2", "10.0.0.2"]), 2).unwrap();
        assert_eq!(b["spec"]["podCIDRs"][0], "fd00:42:0:1::/64");
    }

    #[test]
    fn json_patch_adds_replaces_removes_and_tests() {
        let doc = json!({"a": {"b": [1, 2]}, "c": 1});
        let ops = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c", "value": 2},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "test", "path": "/c", "value": 2},
            {"op": "add", "path": "/a/x~1y", "value": true}
        ]);
        assert_eq!(
            json_patch(doc.clone(), &ops).unwrap(),
            json!({"a": {"b": [2, 3], "x/y": true}, "c": 2})
        );
        assert!(json_patch(doc, &json!([{"op": "test", "path": "/c", "value": 9}])).is_err());
    }

    #[test]
    fn a_node_back_with_a_new_address_keeps_its_object_and_gets_the_new_internal_ip() {
        let mut c = cluster();
        let old = reg("n1", &["fdaa:0:1:a7b:1:2:3:2", "172.19.0.2"]);
        let first = c.register(&old, 100).expect("register");
        c.take_snapshot();
        let cidrs = first["spec"]["podCIDRs"].clone();
        let uid = first["metadata"]["uid"].clone();
        let moved = reg("n1", &["fdaa:0:1:b00:9:2:3:2", "172.19.0.2"]);
        c.register(&moved, 110).expect("re-register");
        let list = c.list(110);
        let items = list["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "no stale node object: {list}");
        let n = &items[0];
        assert_eq!(n["metadata"]["uid"], uid);
        assert_eq!(n["spec"]["podCIDRs"], cidrs);
        let internal: Vec<&str> = n["status"]["addresses"]
            .as_array()
            .expect("addresses")
            .iter()
            .filter(|a| a["type"] == "InternalIP")
            .filter_map(|a| a["address"].as_str())
            .collect();
        assert_eq!(internal, ["fdaa:0:1:b00:9:2:3:2", "172.19.0.2"]);
        // The new address is persisted, so a restart of the server does not bring back the old.
        let saved = c.take_snapshot().expect("an address change is persisted");
        assert!(saved.contains("fdaa:0:1:b00:9:2:3:2"), "{saved}");
        // A heartbeat with the same addresses is not worth a write.
        c.register(&moved, 120).expect("heartbeat");
        assert!(c.take_snapshot().is_none());
    }

    #[test]
    fn node_cidr_allocation_stops_at_the_end_of_the_range() {
        let mut c = Cluster::new(vec!["10.42.0.0/23".parse().unwrap()], 24, 64, 40);
        c.register(&reg("a", &["10.0.0.1"]), 0).unwrap();
        c.register(&reg("b", &["10.0.0.2"]), 0).unwrap();
        assert!(matches!(
            c.register(&reg("c", &["10.0.0.3"]), 0),
            Err(Error::CidrExhausted(_))
        ));
    }
}
