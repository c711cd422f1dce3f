//! Reads a k3s command line and config file the way k3s does (reference/k3s.md §1) and checks
//! the result against the k3s flag table for the role and the dual-stack, token and URL rules of
//! reference/k3s.md §3 and §4, producing the resolved [`Settings`] a run uses.
//!
//! Owns: config file location (`K3S_CONFIG_FILE` before `--config`), drop-ins, `key+` appends,
//! flag typing, every rejection rule. Must not start servers or touch the network; the only I/O
//! is reading the config files, `token-file`, and for the flannel rule (`crate::flannel`) the
//! `flannel-conf` file and this network namespace's IPv4 routing table.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use fks_bootstrap::render::flags::{self, Kind};
use ipnet::IpNet;
use serde_yaml_ng::Value;

/// Default config file (reference/k3s.md §1).
pub const DEFAULT_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
/// Default data dir when privileged (reference/k3s.md §4).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rancher/k3s";
/// Default admin kubeconfig (reference/k3s.md §4).
pub const DEFAULT_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
/// flannel backends k3s knows (reference/k3s.md §3).
pub const FLANNEL_BACKENDS: [&str; 5] =
    ["vxlan", "host-gw", "wireguard-native", "none", "tailscale"];

/// Errors from reading or checking the configuration. Messages follow k3s's where
/// reference/k3s.md quotes them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("flag provided but not defined: -{flag}")]
    UnknownFlag { flag: String },
    #[error("Unknown flag --{key} found in config file {file}: not a k3s {role} flag (real k3s {consequence})")]
    UnknownConfigKey {
        key: String,
        file: String,
        role: &'static str,
        consequence: &'static str,
    },
    #[error("flag needs an argument: -{flag}")]
    MissingValue { flag: String },
    #[error("invalid value \"{value}\" for flag -{flag}: parse error")]
    BadValue { flag: String, value: String },
    #[error("reading config file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {file}: {source}")]
    Yaml {
        file: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("config file {file}: key {key}: {reason}")]
    BadYaml {
        file: String,
        key: String,
        reason: String,
    },
    #[error("config file {file} must hold a mapping of flag names to values")]
    NotAMapping { file: String },
    #[error("invalid {what} {value}")]
    Invalid { what: &'static str, value: String },
    #[error("{a_name}: {a:?} and {b_name}: {b:?}, must share the same IP version (IPv4, IPv6 or dual-stack)")]
    FamilyMismatch {
        a_name: &'static str,
        a: Vec<String>,
        b_name: &'static str,
        b: Vec<String>,
    },
    #[error("{what}: {value:?}: expected at most one entry per IP family")]
    NotDualStack {
        what: &'static str,
        value: Vec<String>,
    },
    #[error("cluster-dns {dns} is not inside any service-cidr {cidrs:?} of its IP family")]
    DnsOutsideServiceCidr { dns: String, cidrs: Vec<String> },
    #[error("service-cidr {cidr} is too large: the largest allowed is /{max} for this IP family (reference/k3s.md §3)")]
    ServiceCidrTooLarge { cidr: String, max: u8 },
    #[error("cluster-cidr {cidr} with node CIDR mask /{mask}: New CIDR set failed; the node CIDR size is too big")]
    NodeCidrTooBig { cidr: String, mask: u8 },
    #[error("cluster-cidr {cidr} is smaller than the node CIDR mask /{mask}")]
    NodeMaskTooLarge { cidr: String, mask: u8 },
    #[error("Cannot configure unknown flannel backend '{0}'")]
    FlannelBackend(String),
    #[error("invalid egress-selector-mode {0}: must be one of agent, cluster, pod, disabled")]
    EgressMode(String),
    #[error("only https:// URLs are supported, invalid scheme: {0}")]
    ServerScheme(String),
    #[error("--server is required")]
    ServerRequired,
    #[error("--token is required")]
    AgentTokenRequired,
    #[error("token is required to join a cluster")]
    JoinTokenRequired,
    #[error("--cluster-reset-restore-path requires --cluster-reset")]
    RestorePathWithoutReset,
    #[error("--cluster-reset cannot be used with --server")]
    ResetWithServer,
    #[error("invalid node-taint {0}: expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute")]
    Taint(String),
    #[error("invalid node-label {0}: expected key=value")]
    Label(String),
    #[error("reading token-file {file}: {source}")]
    TokenFile {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The flannel rule of issue 13 (see `crate::flannel`).
    #[error(transparent)]
    Flannel(#[from] crate::flannel::Error),
}

/// `k3s server` or `k3s agent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }

    fn accepts(self, name: &str) -> Option<&'static flags::Flag> {
        flags::lookup(name).filter(|f| match self {
            Role::Server => f.scope.on_server(),
            Role::Agent => f.scope.on_agent(),
        })
    }
}

/// One-letter aliases k3s declares (reference/k3s.md §2).
fn alias(name: &str) -> &str {
    match name {
        "c" => "config",
        "d" => "data-dir",
        "t" => "token",
        "s" => "server",
        "o" => "write-kubeconfig",
        "i" => "node-ip",
        "l" => "log",
        other => other,
    }
}

/// Which config file a run reads: `K3S_CONFIG_FILE` wins over `--config` (reference/k3s.md §1,
/// `findConfigFileFlag`), else the default.
pub fn config_path(args: &[String], env: &BTreeMap<String, String>) -> PathBuf {
    if let Some(p) = env.get("K3S_CONFIG_FILE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let stripped = a.trim_start_matches('-');
        if !a.starts_with('-') {
            continue;
        }
        if let Some((k, v)) = stripped.split_once('=') {
            if alias(k) == "config" {
                found = Some(v.to_owned());
            }
        } else if alias(stripped) == "config" {
            found = it.next().cloned();
        }
    }
    PathBuf::from(found.unwrap_or_else(|| DEFAULT_CONFIG.to_owned()))
}

fn yaml_scalar(file: &str, key: &str, v: &Value) -> Result<String, Error> {
    match v {
        Value::Null => Ok(String::new()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        _ => Err(Error::BadYaml {
            file: file.to_owned(),
            key: key.to_owned(),
            reason: "a value must be a scalar or a list of scalars".to_owned(),
        }),
    }
}

/// The config file and its `.d/` drop-ins, merged (last wins, `key+` appends), as `--key=value`
/// arguments in first-seen key order (reference/k3s.md §1). Rejects keys the role does not have.
pub fn config_file_args(path: &Path, role: Role) -> Result<Vec<String>, Error> {
    let mut files = Vec::new();
    if path.is_file() {
        files.push(path.to_path_buf());
    }
    let mut dropin = path.as_os_str().to_owned();
    dropin.push(".d");
    let dropin = PathBuf::from(dropin);
    if let Ok(rd) = std::fs::read_dir(&dropin) {
        let mut names: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml")
                    })
            })
            .collect();
        names.sort();
        files.extend(names);
    }
    let mut order: Vec<String> = Vec::new();
    let mut merged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
            file: shown.clone(),
            source,
        })?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|source| Error::Yaml {
            file: shown.clone(),
            source,
        })?;
        let map = match doc {
            Value::Null => continue,
            Value::Mapping(m) => m,
            _ => return Err(Error::NotAMapping { file: shown }),
        };
        for (k, v) in map {
            let raw_key = yaml_scalar(&shown, "?", &k)?;
            let (key, append) = match raw_key.strip_suffix('+') {
                Some(k) => (k.to_owned(), true),
                None => (raw_key.clone(), false),
            };
            let key = alias(&key).to_owned();
            if role.accepts(&key).is_none() {
                return Err(Error::UnknownConfigKey {
                    key,
                    file: shown,
                    role: role.name(),
                    consequence: match role {
                        Role::Server => "skips it with a warning; the stand-in refuses it",
                        Role::Agent => "fails with \"flag provided but not defined\"",
                    },
                });
            }
            let values = match &v {
                Value::Sequence(items) => items
                    .iter()
                    .map(|i| yaml_scalar(&shown, &key, i))
                    .collect::<Result<Vec<_>, _>>()?,
                other => vec![yaml_scalar(&shown, &key, other)?],
            };
            if !merged.contains_key(&key) {
                order.push(key.clone());
            }
            let slot = merged.entry(key).or_default();
            if append {
                slot.extend(values);
            } else {
                *slot = values;
            }
        }
    }
    Ok(order
        .iter()
        .flat_map(|k| {
            merged[k].iter().map(move |v| {
                if k.len() == 1 {
                    format!("-{k}={v}")
                } else {
                    format!("--{k}={v}")
                }
            })
        })
        .collect())
}

/// Parsed flags: every occurrence of each flag, in order.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    values: BTreeMap<String, Vec<String>>,
}

impl Flags {
    /// The last value of a scalar flag.
    pub fn last(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value of a slice flag.
    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every value of a slice flag, each split on commas as k3s does for the network lists
    /// (reference/k3s.md §1, `util.SplitStringSlice`), empty items dropped.
    pub fn split(&self, name: &str) -> Vec<String> {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A bool flag's value (`false` when absent).
    pub fn bool(&self, name: &str) -> bool {
        self.last(name) == Some("true")
    }
}

fn check_type(flag: &flags::Flag, value: &str) -> Result<(), Error> {
    let ok = match flag.kind {
        Kind::Bool => matches!(value, "true" | "false"),
        Kind::Int => value.parse::<i64>().is_ok(),
        Kind::Duration => {
            !value.is_empty()
                && value
                    .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.')
        }
        Kind::String | Kind::Slice => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::BadValue {
            flag: flag.name.clone(),
            value: value.to_owned(),
        })
    }
}

/// Parse `--flag=value`, `--flag value`, `-f value` and bare bool flags for `role`; anything
/// not a k3s flag of that role fails like urfave/cli (`flag provided but not defined`).
pub fn parse_flags(args: &[String], role: Role) -> Result<Flags, Error> {
    let mut flags = Flags::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if !arg.starts_with('-') || arg == "-" || arg == "--" {
            return Err(Error::UnknownFlag { flag: arg.clone() });
        }
        let body = arg.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (alias(n).to_owned(), Some(v.to_owned())),
            None => (alias(body).to_owned(), None),
        };
        let flag = role
            .accepts(&name)
            .ok_or_else(|| Error::UnknownFlag { flag: name.clone() })?;
        let value = match (inline, flag.kind) {
            (Some(v), _) => v,
            (None, Kind::Bool) => "true".to_owned(),
            (None, _) => it
                .next()
                .cloned()
                .ok_or_else(|| Error::MissingValue { flag: name.clone() })?,
        };
        check_type(flag, &value)?;
        flags.values.entry(name).or_default().push(value);
    }
    Ok(flags)
}

/// Environment variables bound to flags (reference/k3s.md §2): they act as defaults, below the
/// config file and the command line.
const ENV_FLAGS: [(&str, &str); 10] = [
    ("K3S_TOKEN", "token"),
    ("K3S_TOKEN_FILE", "token-file"),
    ("K3S_URL", "server"),
    ("K3S_DATA_DIR", "data-dir"),
    ("K3S_NODE_NAME", "node-name"),
    ("K3S_KUBECONFIG_OUTPUT", "write-kubeconfig"),
    ("K3S_KUBECONFIG_MODE", "write-kubeconfig-mode"),
    ("K3S_CLUSTER_INIT", "cluster-init"),
    ("K3S_AGENT_TOKEN", "agent-token"),
    ("K3S_AGENT_TOKEN_FILE", "agent-token-file"),
];

/// Everything a server or agent run needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `server` or `agent`.
    pub role: Role,
    /// `data-dir` (default /var/lib/rancher/k3s).
    pub data_dir: PathBuf,
    /// The token text (from `token` or the contents of `token-file`), never logged.
    pub token: Option<String>,
    /// Agent token text (server only).
    pub agent_token: Option<String>,
    /// The server to join (`server:`), when joining.
    pub server: Option<String>,
    /// `node-name`, else the hostname.
    pub node_name: String,
    /// `with-node-id`: append a random suffix to the node name.
    pub with_node_id: bool,
    /// `node-ip` in the given order (primary family first), else the default-route address.
    pub node_ips: Vec<IpAddr>,
    /// `node-external-ip`.
    pub node_external_ips: Vec<IpAddr>,
    /// `node-label` as `(key, value)`.
    pub node_labels: Vec<(String, String)>,
    /// `node-taint`, registered with the node.
    pub node_taints: Vec<Taint>,
    /// `tls-san`, comma-split.
    pub tls_sans: Vec<String>,
    /// `cluster-cidr` (the first is primary), or the family default.
    pub cluster_cidrs: Vec<IpNet>,
    /// `service-cidr` (the first is primary), or the family default.
    pub service_cidrs: Vec<IpNet>,
    /// `cluster-dns`, or index 10 of each service CIDR.
    pub cluster_dns: Vec<IpAddr>,
    /// `cluster-domain` (default cluster.local).
    pub cluster_domain: String,
    pub node_mask_v4: u8,
    pub node_mask_v6: u8,
    /// `https-listen-port` (default 6443; 0 lets the kernel choose).
    pub https_port: u16,
    /// `bind-address`: where to listen, and the kubeconfig host when set (reference/k3s.md §4).
    pub bind_address: Option<IpAddr>,
    /// `write-kubeconfig` (default /etc/rancher/k3s/k3s.yaml).
    pub write_kubeconfig: PathBuf,
    /// `write-kubeconfig-mode`, parsed as octal (default 0600).
    pub write_kubeconfig_mode: u32,
    /// `cluster-init`.
    pub cluster_init: bool,
    /// `flannel-backend` (default vxlan).
    pub flannel_backend: String,
    /// `flannel-conf`: a net-conf file that replaces the one k3s would write.
    pub flannel_conf: Option<PathBuf>,
    /// Warnings to log once logging is up (k3s logs these instead of failing).
    pub warnings: Vec<String>,
}

/// A node taint `key[=value]:Effect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value, if any.
    pub value: Option<String>,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: String,
}

fn parse_taint(s: &str) -> Result<Taint, Error> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| Error::Taint(s.to_owned()))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(Error::Taint(s.to_owned()));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(Error::Taint(s.to_owned()));
    }
    Ok(Taint {
        key: key.to_owned(),
        value,
        effect: effect.to_owned(),
    })
}

fn parse_ips(flags: &Flags, name: &'static str) -> Result<Vec<IpAddr>, Error> {
    flags
        .split(name)
        .iter()
        .map(|s| {
            s.parse().map_err(|_| Error::Invalid {
                what: name,
                value: s.clone(),
            })
        })
        .collect()
}

fn parse_cidrs(flags: &Flags, name: &'static str) -> Result<Vec<IpNet>, Error> {
    flags
        .split(name)
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| Error::Invalid {
                    what: name,
                    value: s.clone(),
                })
        })
        .collect()
}

fn fam_ip(ip: &IpAddr) -> bool {
    ip.is_ipv6()
}

fn fam_net(n: &IpNet) -> bool {
    matches!(n, IpNet::V6(_))
}

/// At most one entry per family, at most two entries (k8s `IsDualStack*`).
fn check_dual<T>(
    what: &'static str,
    items: &[T],
    fam: impl Fn(&T) -> bool,
    show: &dyn Fn() -> Vec<String>,
) -> Result<(), Error> {
    if items.len() > 2 || (items.len() == 2 && fam(&items[0]) == fam(&items[1])) {
        return Err(Error::NotDualStack {
            what,
            value: show(),
        });
    }
    Ok(())
}

/// Same primary family and same single/dual shape (reference/k3s.md §3).
fn same_version(a: &[bool], b: &[bool]) -> bool {
    a.first() == b.first() && (a.len() > 1) == (b.len() > 1)
}

fn strs<T: ToString>(v: &[T]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

fn controller_arg(flags: &Flags, name: &str) -> Option<String> {
    flags
        .all("kube-controller-manager-arg")
        .iter()
        .chain(flags.all("kube-controller-arg"))
        .filter_map(|a| a.trim_start_matches('-').split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .next_back()
}

/// The first address of the route used for the default destination, as a guess at the node IP
/// when none is configured (k3s auto-detects from the default route too, reference/k3s.md §3).
fn detect_node_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn read_token_file(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| Error::TokenFile {
            file: path.to_owned(),
            source,
        })
}

/// Load a run's settings: config file args first, then the command line, env vars as defaults
/// (reference/k3s.md §1 precedence), then every check.
pub fn load(role: Role, cli: &[String], env: &BTreeMap<String, String>) -> Result<Settings, Error> {
    let path = config_path(cli, env);
    let mut argv = Vec::new();
    for (var, flag) in ENV_FLAGS {
        if let Some(v) = env.get(var).filter(|v| !v.is_empty()) {
            if role.accepts(flag).is_some() {
                argv.push(format!("--{flag}={v}"));
            }
        }
    }
    argv.extend(config_file_args(&path, role)?);
    argv.extend(cli.iter().cloned());
    let flags = parse_flags(&argv, role)?;
    let settings = resolve(role, &flags)?;
    check_flannel(&settings, &crate::flannel::detect_reach(env)?)?;
    Ok(settings)
}

/// The flannel rule (`crate::flannel`): IPv4 pods must not ride an IPv4 that reaches only the
/// host.
pub fn check_flannel(s: &Settings, reach: &crate::flannel::Reach) -> Result<(), Error> {
    let conf_file = s.flannel_conf.as_ref().map(|p| p.display().to_string());
    let input = crate::flannel::Input {
        server: s.role == Role::Server,
        backend: &s.flannel_backend,
        conf_file: conf_file.as_deref(),
        cluster_cidrs: &s.cluster_cidrs,
        node_ips: &s.node_ips,
    };
    Ok(crate::flannel::check(&input, reach)?)
}

/// Check parsed flags and resolve defaults (reference/k3s.md §3, §4).
pub fn resolve(role: Role, flags: &Flags) -> Result<Settings, Error> {
    let mut warnings = Vec::new();
    let server = flags
        .last("server")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if let Some(s) = &server {
        if !s.starts_with("https://") {
            return Err(Error::ServerScheme(s.clone()));
        }
    }
    let token = match (
        flags.last("token").filter(|t| !t.is_empty()),
        flags.last("token-file").filter(|t| !t.is_empty()),
    ) {
        (Some(t), _) => Some(t.to_owned()),
        (None, Some(f)) => Some(read_token_file(f)?),
        (None, None) => None,
    };
    let agent_token = match (
        flags.last("agent-token").filter(|t| !t.is_empty()),
        flags.last("agent-token-file").filter(|t| !t.is_empty()),
    ) {
        (Some(t), _) => Some(t.to_owned()),
        (None, Some(f)) => Some(read_token_file(f)?),
        (None, None) => None,
    };
    match role {
        Role::Agent => {
            if server.is_none() {
                return Err(Error::ServerRequired);
            }
            if token.is_none() {
                return Err(Error::AgentTokenRequired);
            }
        }
        Role::Server => {
            if server.is_some() && token.is_none() {
                return Err(Error::JoinTokenRequired);
            }
            if flags
                .last("cluster-reset-restore-path")
                .is_some_and(|p| !p.is_empty())
                && !flags.bool("cluster-reset")
            {
                return Err(Error::RestorePathWithoutReset);
            }
            if flags.bool("cluster-reset") && server.is_some() {
                return Err(Error::ResetWithServer);
            }
        }
    }

    let mut node_ips = parse_ips(flags, "node-ip")?;
    let node_external_ips = parse_ips(flags, "node-external-ip")?;
    check_dual("node-ip", &node_ips, fam_ip, &|| strs(&node_ips))?;
    check_dual("node-external-ip", &node_external_ips, fam_ip, &|| {
        strs(&node_external_ips)
    })?;
    if node_ips.is_empty() {
        node_ips.push(detect_node_ip());
    }

    let mut cluster_cidrs = parse_cidrs(flags, "cluster-cidr")?;
    let mut service_cidrs = parse_cidrs(flags, "service-cidr")?;
    let v6_first = node_ips[0].is_ipv6();
    // Defaults follow the family of the first node IP (reference/k3s.md §3 item 4).
    if cluster_cidrs.is_empty() {
        let d = if v6_first {
            "fd00:42::/56"
        } else {
            "10.42.0.0/16"
        };
        cluster_cidrs.push(d.parse().expect("literal CIDR"));
    }
    if service_cidrs.is_empty() {
        let d = if v6_first {
            "fd00:43::/112"
        } else {
            "10.43.0.0/16"
        };
        service_cidrs.push(d.parse().expect("literal CIDR"));
    }
    check_dual("cluster-cidr", &cluster_cidrs, fam_net, &|| {
        strs(&cluster_cidrs)
    })?;
    check_dual("service-cidr", &service_cidrs, fam_net, &|| {
        strs(&service_cidrs)
    })?;
    let cf: Vec<bool> = cluster_cidrs.iter().map(fam_net).collect();
    let sf: Vec<bool> = service_cidrs.iter().map(fam_net).collect();
    let nf: Vec<bool> = node_ips.iter().map(fam_ip).collect();
    if role == Role::Server {
        if !same_version(&cf, &sf) {
            return Err(Error::FamilyMismatch {
                a_name: "cluster-cidr",
                a: strs(&cluster_cidrs),
                b_name: "service-cidr",
                b: strs(&service_cidrs),
            });
        }
        if !same_version(&cf, &nf) {
            return Err(Error::FamilyMismatch {
                a_name: "cluster-cidr",
                a: strs(&cluster_cidrs),
                b_name: "node-ip",
                b: strs(&node_ips),
            });
        }
        for s in &service_cidrs {
            let (max, len) = match s {
                IpNet::V4(n) => (12, n.prefix_len()),
                IpNet::V6(n) => (112, n.prefix_len()),
            };
            if len < max {
                return Err(Error::ServiceCidrTooLarge {
                    cidr: s.to_string(),
                    max,
                });
            }
        }
    }

    let parse_mask = |name: &str, default: u8| -> Result<u8, Error> {
        match controller_arg(flags, name) {
            Some(v) => v.parse().map_err(|_| Error::BadValue {
                flag: format!("kube-controller-manager-arg {name}"),
                value: v,
            }),
            None => Ok(default),
        }
    };
    let single = parse_mask("node-cidr-mask-size", 0)?;
    let node_mask_v4 = parse_mask(
        "node-cidr-mask-size-ipv4",
        if single > 0 && !cf[0] { single } else { 24 },
    )?;
    let node_mask_v6 = parse_mask(
        "node-cidr-mask-size-ipv6",
        if single > 0 && cf[0] { single } else { 64 },
    )?;
    if role == Role::Server {
        for c in &cluster_cidrs {
            let mask = if fam_net(c) {
                node_mask_v6
            } else {
                node_mask_v4
            };
            if mask < c.prefix_len() || mask > c.max_prefix_len() {
                return Err(Error::NodeMaskTooLarge {
                    cidr: c.to_string(),
                    mask,
                });
            }
            // kube-controller-manager cidr_set.go: at most 16 bits between cluster and node mask
            // (reference/k3s.md §3 Sizes, k3s#7888).
            if mask - c.prefix_len() > 16 {
                return Err(Error::NodeCidrTooBig {
                    cidr: c.to_string(),
                    mask,
                });
            }
        }
    }

    let cluster_dns = if flags.split("cluster-dns").is_empty() {
        // Index 10 of each service CIDR (reference/k3s.md §3 item 5).
        service_cidrs
            .iter()
            .map(|n| match n {
                IpNet::V4(n) => IpAddr::from((u32::from(n.network()) + 10).to_be_bytes()),
                IpNet::V6(n) => IpAddr::from((u128::from(n.network()) + 10).to_be_bytes()),
            })
            .collect()
    } else {
        let dns = flags
            .split("cluster-dns")
            .iter()
            .map(|s| {
                s.parse::<IpAddr>().map_err(|_| Error::Invalid {
                    what: "cluster-dns address",
                    value: s.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if role == Role::Server {
            for d in &dns {
                if !service_cidrs.iter().any(|n| n.contains(d)) {
                    return Err(Error::DnsOutsideServiceCidr {
                        dns: d.to_string(),
                        cidrs: strs(&service_cidrs),
                    });
                }
            }
        }
        dns
    };

    let flannel_backend = flags.last("flannel-backend").unwrap_or("vxlan").to_owned();
    if !FLANNEL_BACKENDS.contains(&flannel_backend.as_str()) {
        return Err(Error::FlannelBackend(flannel_backend));
    }
    if let Some(m) = flags.last("egress-selector-mode") {
        if !matches!(m, "agent" | "cluster" | "pod" | "disabled") {
            return Err(Error::EgressMode(m.to_owned()));
        }
    }
    if let Some(r) = flags.last("service-node-port-range") {
        let ok = r.split_once('-').is_some_and(
            |(a, b)| matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= b),
        );
        if !ok {
            return Err(Error::Invalid {
                what: "service-node-port-range",
                value: r.to_owned(),
            });
        }
    }

    let node_labels = flags
        .all("node-label")
        .iter()
        .map(|l| {
            l.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Error::Label(l.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let node_taints = flags
        .all("node-taint")
        .iter()
        .map(|t| parse_taint(t))
        .collect::<Result<Vec<_>, _>>()?;

    let https_port = match flags.last("https-listen-port") {
        Some(p) => p.parse().map_err(|_| Error::BadValue {
            flag: "https-listen-port".to_owned(),
            value: p.to_owned(),
        })?,
        None => 6443,
    };
    let bind_address = match flags.last("bind-address").filter(|b| !b.is_empty()) {
        Some(b) => Some(b.parse().map_err(|_| Error::Invalid {
            what: "bind-address",
            value: b.to_owned(),
        })?),
        None => None,
    };
    // write-kubeconfig-mode is octal; a bad value is logged, not fatal (reference/k3s.md §4).
    let write_kubeconfig_mode = match flags
        .last("write-kubeconfig-mode")
        .filter(|m| !m.is_empty())
    {
        Some(m) => u32::from_str_radix(m, 8).unwrap_or_else(|_| {
            warnings.push(format!(
                "failed to parse write-kubeconfig-mode {m} as octal, using 0600"
            ));
            0o600
        }),
        None => 0o600,
    };

    Ok(Settings {
        role,
        data_dir: PathBuf::from(
            flags
                .last("data-dir")
                .filter(|d| !d.is_empty())
                .unwrap_or(DEFAULT_DATA_DIR),
        ),
        token,
        agent_token,
        server,
        node_name: flags
            .last("node-name")
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(hostname),
        with_node_id: flags.bool("with-node-id"),
        node_ips,
        node_external_ips,
        node_labels,
        node_taints,
        tls_sans: flags.split("tls-san"),
        cluster_cidrs,
        service_cidrs,
        cluster_dns,
        cluster_domain: flags
            .last("cluster-domain")
            .unwrap_or("cluster.local")
            .to_owned(),
        node_mask_v4,
        node_mask_v6,
        https_port,
        bind_address,
        write_kubeconfig: PathBuf::from(
            flags
                .last("write-kubeconfig")
                .filter(|p| !p.is_empty())
                .unwrap_or(DEFAULT_KUBECONFIG),
        ),
        write_kubeconfig_mode,
        cluster_init: flags.bool("cluster-init"),
        flannel_backend,
        flannel_conf: flags
            .last("flannel-conf")
            .filter(|f| !f.is_empty())
            .map(PathBuf::from),
        warnings,
    })
}
