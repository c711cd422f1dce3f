//! Rendering of the k3s `config.yaml` a node gets at every boot, from the resolved
//! [`Config`] and a [`Node`] description, through the tera templates in `templates/k3s/`
//! (embedded, so the binary renders from any directory).
//!
//! Pure: no I/O, no clock, no environment. The caller reads the machine's addresses and
//! writes the result. Every string reaches the YAML through [`yaml_quote`], so no value can
//! change the document's structure (reference/k3s.md §1: k3s reads YAML 1.1).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::OnceLock;

use ipnet::IpNet;
use serde::Serialize;

use crate::config::Config;

pub mod flags;
pub mod flannel;
mod node;

pub use node::{Bootstrap, Host, Node, NodeName, Role};

pub use crate::contract::path::{DATA_DIR, TOKEN_FILE};

/// The interface flannel's tunnels use: eth0 holds both the 6PN address and the private IPv4
/// on a Fly machine (reference/fly-runtime.md §1.4). Without `flannel-iface` flannel picks the
/// interface of the default route (reference/k3s.md §3), and Fly's init sets no IPv6 default
/// route for the 6PN (fly-runtime.md §1.4), so an IPv6-only cluster would find none.
pub const FLANNEL_IFACE: &str = "eth0";

/// The port joining servers and agents reach the supervisor/apiserver on (reference/k3s.md §4).
pub const SERVER_PORT: u16 = 6443;

/// What rendering can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node name that is neither `ctrl-N` nor `worker-ng-<group>-<i>`.
    #[error("node name `{name}`: {reason}")]
    NodeName { name: String, reason: String },
    /// A joining server was described without the machine it joins.
    #[error(
        "node {node} joins the cluster but the machine id of the bootstrap server ctrl-{bootstrap_index} is not known"
    )]
    MissingBootstrapMachineId { node: String, bootstrap_index: u32 },
    /// k3s refuses a dual-stack cluster-cidr with single-stack node IPs (reference/k3s.md §3).
    #[error(
        "node {node}: cluster {cluster} is dual-stack ({cidrs}) but the node has no IPv4 address"
    )]
    MissingIpv4 {
        node: String,
        cluster: String,
        cidrs: String,
    },
    /// A line of a k3s flag table that does not parse.
    #[error("{source_name} line {line}: bad k3s flag table: {reason}")]
    FlagTable {
        source_name: String,
        line: usize,
        reason: String,
    },
    /// The template engine failed (a template bug; the tests render every role).
    #[error("rendering the k3s config of node {node} with template {template}")]
    Template {
        node: String,
        template: &'static str,
        #[source]
        source: tera::Error,
    },
}

/// The templates, by name, as tera sees them. `_`-prefixed ones are shared partials.
const TEMPLATES: [(&str, &str); 5] = [
    (
        "_node.yaml",
        include_str!("../../templates/k3s/_node.yaml.tera"),
    ),
    (
        "_server.yaml",
        include_str!("../../templates/k3s/_server.yaml.tera"),
    ),
    (
        "server-bootstrap.yaml",
        include_str!("../../templates/k3s/server-bootstrap.yaml.tera"),
    ),
    (
        "server-join.yaml",
        include_str!("../../templates/k3s/server-join.yaml.tera"),
    ),
    (
        "agent.yaml",
        include_str!("../../templates/k3s/agent.yaml.tera"),
    ),
];

fn engine() -> &'static tera::Tera {
    static ENGINE: OnceLock<tera::Tera> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(Vec::new());
        tera.register_filter("yaml_str", yaml_str_filter);
        tera.add_raw_templates(TEMPLATES)
            .expect("the embedded templates parse (every role is rendered by the tests)");
        tera
    })
}

/// What the templates see. Everything is pre-formatted here so the templates only lay out keys.
#[derive(Debug, Serialize)]
struct Context {
    node_name: String,
    data_dir: &'static str,
    node_ips: Vec<String>,
    node_external_ips: Vec<String>,
    node_labels: Vec<String>,
    cluster_cidrs: Vec<String>,
    service_cidrs: Vec<String>,
    cluster_dns: Vec<String>,
    flannel_backend: &'static str,
    flannel_iface: &'static str,
    flannel_conf: Option<&'static str>,
    tls_sans: Vec<String>,
    server_url: Option<String>,
    token_file: &'static str,
}

/// Render the k3s `config.yaml` of `node` in cluster `config`. When the cluster needs a flannel
/// net-conf of its own ([`flannel::net_conf`]), the config points `flannel-conf` at
/// [`flannel::FLANNEL_CONF`], which the caller writes with that text.
pub fn render(config: &Config, node: &Node) -> Result<String, Error> {
    let dual_stack = config
        .cluster_cidr
        .iter()
        .any(|n| matches!(n, IpNet::V4(_)));
    // The 6PN address first, so k3s, the kubelet and etcd pick IPv6 as the primary family
    // (reference/k3s.md §3); the IPv4 only when the cluster has an IPv4 range, because k3s
    // requires node-ip and cluster-cidr to be the same stack.
    let mut node_ips = vec![node.private_ip.to_string()];
    if dual_stack {
        let v4 = node.ipv4.ok_or_else(|| Error::MissingIpv4 {
            node: node.name.clone(),
            cluster: config.cluster_name.clone(),
            cidrs: join(&config.cluster_cidr),
        })?;
        node_ips.push(v4.to_string());
    }
    let mut node_labels = vec![format!("topology.kubernetes.io/region={}", node.region)];
    if let Some(zone) = &node.zone {
        node_labels.push(format!("topology.kubernetes.io/zone={zone}"));
    }
    let node_name = node.k3s_node_name();
    let (template, server_url) = match &node.role {
        Role::BootstrapServer => ("server-bootstrap.yaml", None),
        Role::JoiningServer {
            bootstrap_machine_id,
        } => (
            "server-join.yaml",
            Some(format!(
                "https://{bootstrap_machine_id}.vm.{}.internal:{SERVER_PORT}",
                config.cp_app()
            )),
        ),
        Role::Agent => (
            "agent.yaml",
            Some(format!(
                "https://{}.internal:{SERVER_PORT}",
                config.cp_app()
            )),
        ),
    };
    let context = Context {
        tls_sans: vec![format!("{}.internal", node.app), node_name.clone()],
        node_name,
        data_dir: DATA_DIR,
        node_ips,
        node_external_ips: vec![node.private_ip.to_string()],
        node_labels,
        cluster_cidrs: config
            .cluster_cidr
            .iter()
            .map(ToString::to_string)
            .collect(),
        service_cidrs: config
            .service_cidr
            .iter()
            .map(ToString::to_string)
            .collect(),
        cluster_dns: config.cluster_dns.iter().map(IpAddr::to_string).collect(),
        flannel_backend: config.flannel_backend.as_str(),
        flannel_iface: FLANNEL_IFACE,
        flannel_conf: flannel::net_conf(config).map(|_| flannel::FLANNEL_CONF),
        server_url,
        token_file: TOKEN_FILE,
    };
    let template_error = |source| Error::Template {
        node: node.name.clone(),
        template,
        source,
    };
    let context = tera::Context::from_serialize(&context).map_err(template_error)?;
    engine().render(template, &context).map_err(template_error)
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Quote `s` as a YAML double-quoted scalar that reads back as exactly `s`.
///
/// JSON string escaping is almost this, but leaves non-ASCII characters raw, and YAML 1.1
/// (k3s's yaml.v2) treats U+0085, U+2028 and U+2029 as line breaks and rejects C1 controls,
/// DEL and U+FEFF inside scalars. So everything outside printable ASCII is written as a
/// `\uXXXX` / `\UXXXXXXXX` escape (both YAML 1.1 and 1.2 have them) and the output is
/// plain ASCII on one line.
pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08X}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// The tera filter `yaml_str`: [`yaml_quote`] for string values. Anything else is a template
/// bug, reported as an error rather than rendered unquoted.
fn yaml_str_filter(
    value: &tera::Value,
    _args: &HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    match value {
        tera::Value::String(s) => Ok(tera::Value::String(yaml_quote(s))),
        other => Err(tera::Error::msg(format!(
            "yaml_str takes a string, got {other}"
        ))),
    }
}

#[cfg(test)]
pub(crate) mod tests;
