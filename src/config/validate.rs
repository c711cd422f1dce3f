//! Validation: turn the raw `KEY=VALUE` entries of either file format into a [`Config`],
//! checking every rule and reporting every problem at once, each with file, line, key and fix.
//!
//! Pure: takes entries, returns a value or diagnostics. Fly facts come from `presets`, k3s and
//! Kubernetes sizing rules are cited where they are applied (reference/k3s.md §3).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::diagnostic::{Diagnostic, Diagnostics};
use super::presets::{self, REGIONS};
use super::{Config, FlannelBackend, VmSpec};

/// Fly app names are DNS labels (`<app>.internal`, `<id>.vm.<app>.internal`): at most 63.
pub const MAX_APP_NAME_LEN: usize = 63;
/// The longest node-group name (`-a GROUP`) the cluster name leaves room for.
pub const MAX_NODE_GROUP_LEN: usize = 8;
/// The longest `CLUSTER_NAME`: `<name>-ng-<group>` must fit [`MAX_APP_NAME_LEN`].
pub const MAX_CLUSTER_NAME_LEN: usize = MAX_APP_NAME_LEN - "-ng-".len() - MAX_NODE_GROUP_LEN;
/// The default for `IMAGE`.
pub const DEFAULT_IMAGE: &str = "registry.fly.io/fks-node:latest";
/// The default for `FLANNEL_BACKEND`, what k3s.sh used.
pub const DEFAULT_FLANNEL_BACKEND: FlannelBackend = FlannelBackend::WireguardNative;

/// Keys that must be present, each with an example value for the help text.
const REQUIRED: &[(&str, &str)] = &[
    ("CLUSTER_NAME", "demo"),
    ("CLUSTER_CIDR", "\"fd00:42::/56,10.42.0.0/16\""),
    ("SERVICE_CIDR", "\"fd00:43::/112,10.43.0.0/16\""),
    ("CLUSTER_DNS", "\"fd00:43::a,10.43.0.10\""),
    ("REGION", "sjc"),
    ("NODE_GROUP_SIZE", "3"),
    ("VOLUME_SIZE", "10"),
    ("VOLUME_NAME", "demo_data"),
    ("WORKER_VM_SIZE", "performance-2x"),
    ("WORKER_VM_MEMORY", "8192"),
    ("CP_VM_SIZE", "performance-2x"),
    ("CP_VM_MEMORY", "8192"),
    ("K3S_VERSION", "\"v1.33.7+k3s1\""),
    ("ORG_NAME", "personal"),
];

/// Keys that may be left out.
const OPTIONAL: &[&str] = &["FLANNEL_BACKEND", "IMAGE"];

/// Fly's private network (6PN) lives in `fdaa::/16` (reference/fly-machines-api.md §4).
const FLY_6PN: &str = "fdaa::/16";

/// One `KEY=VALUE` as written, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// What a file format hands to validation: the entries, the keys whose lines could not be
/// read (so they are not also reported as missing), and the syntax problems found so far.
#[derive(Debug)]
pub(crate) struct Raw {
    pub file: PathBuf,
    pub entries: Vec<Entry>,
    broken: BTreeSet<String>,
    pub diagnostics: Diagnostics,
}

impl Raw {
    pub fn new(file: &Path) -> Self {
        Raw {
            file: file.to_path_buf(),
            entries: Vec::new(),
            broken: BTreeSet::new(),
            diagnostics: Diagnostics::new(file),
        }
    }

    /// Record `key=value` from `line`; a key seen before is a problem naming both lines.
    pub fn add(&mut self, key: String, value: String, line: usize) {
        if let Some(first) = self.entries.iter().find(|e| e.key == key) {
            let d = Diagnostic::at(
                &self.file,
                line,
                format!("set again (first set on line {})", first.line),
            )
            .key(key.as_str())
            .help(format!("keep one {key}= line and delete the other"));
            self.diagnostics.push(d);
            return;
        }
        self.entries.push(Entry { key, value, line });
    }

    /// `key` was present but its line could not be read.
    pub fn mark_broken(&mut self, key: &str) {
        self.broken.insert(key.to_string());
    }
}

/// Check every rule on `raw` and build the [`Config`], or return every problem found
/// (including the syntax problems already in `raw`).
pub(crate) fn validate(raw: Raw) -> Result<Config, Diagnostics> {
    let Raw {
        file,
        entries,
        broken,
        diagnostics,
    } = raw;
    let mut c = Checker {
        file: &file,
        entries: entries.iter().map(|e| (e.key.as_str(), e)).collect(),
        broken: &broken,
        diags: diagnostics,
    };
    for e in &entries {
        c.check_known(e);
    }

    let cluster_name = c.required("CLUSTER_NAME").and_then(|e| c.cluster_name(e));
    let cluster_cidr = c
        .required("CLUSTER_CIDR")
        .and_then(|e| c.cidrs(e, CidrRole::Cluster).map(|n| (e, n)));
    let service_cidr = c
        .required("SERVICE_CIDR")
        .and_then(|e| c.cidrs(e, CidrRole::Service).map(|n| (e, n)));
    if let (Some((ce, cn)), Some((se, sn))) = (&cluster_cidr, &service_cidr) {
        c.cidr_pair(ce, cn, se, sn);
    }
    let cluster_dns = c
        .required("CLUSTER_DNS")
        .and_then(|e| c.dns(e, service_cidr.as_ref().map(|(_, n)| n.as_slice())));
    let region = c.required("REGION").and_then(|e| c.region(e));
    let node_group_size = c
        .required("NODE_GROUP_SIZE")
        .and_then(|e| c.number(e, 1, 64, "workers per node group"));
    let volume_size_gb = c
        .required("VOLUME_SIZE")
        .and_then(|e| c.number(e, 1, 500, "GB per volume"));
    let volume_name = c.required("VOLUME_NAME").and_then(|e| c.volume_name(e));
    let cp_vm = c.vm("CP_VM_SIZE", "CP_VM_MEMORY");
    let worker_vm = c.vm("WORKER_VM_SIZE", "WORKER_VM_MEMORY");
    let k3s_version = c.required("K3S_VERSION").and_then(|e| c.k3s_version(e));
    let org_name = c.required("ORG_NAME").and_then(|e| c.org_name(e));
    let flannel_backend = match c.optional("FLANNEL_BACKEND") {
        Some(e) => c.flannel(e),
        None => Some(DEFAULT_FLANNEL_BACKEND),
    };
    let image = match c.optional("IMAGE") {
        Some(e) => c.image(e),
        None => Some(DEFAULT_IMAGE.to_string()),
    };

    let Checker { diags, .. } = c;
    let built = (|| {
        Some(Config {
            source: file.clone(),
            cluster_name: cluster_name?,
            cluster_cidr: cluster_cidr?.1,
            service_cidr: service_cidr?.1,
            cluster_dns: cluster_dns?,
            region: region?,
            node_group_size: node_group_size?,
            volume_size_gb: volume_size_gb?,
            volume_name: volume_name?,
            cp_vm: cp_vm?,
            worker_vm: worker_vm?,
            k3s_version: k3s_version?,
            org_name: org_name?,
            flannel_backend: flannel_backend?,
            image: image?,
        })
    })();
    match built {
        Some(config) => diags.into_result(config),
        None => {
            // Every `None` above pushed a problem (or a syntax problem was already recorded),
            // so this is never empty; push one anyway rather than return an empty error.
            let mut diags = diags;
            if diags.is_empty() {
                diags.push(Diagnostic::in_file(&file, "the config is incomplete"));
            }
            Err(diags.into_result(()).expect_err("not empty"))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CidrRole {
    Cluster,
    Service,
}

struct Checker<'a> {
    file: &'a Path,
    entries: BTreeMap<&'a str, &'a Entry>,
    broken: &'a BTreeSet<String>,
    diags: Diagnostics,
}

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

fn ip_family(ip: &IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// The address `offset` past the network address of `net` (k3s puts DNS at offset 10).
fn nth_address(net: &IpNet, offset: u32) -> IpAddr {
    match net {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).wrapping_add(offset))),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(
            u128::from(n.network()).wrapping_add(u128::from(offset)),
        )),
    }
}

/// The known key closest to `key`, if it is close enough to be a likely typo.
fn closest<'k>(needle: &str, candidates: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    candidates
        .map(|c| (strsim::levenshtein(needle, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

impl<'a> Checker<'a> {
    fn problem(&mut self, e: &Entry, message: impl Into<String>, help: impl Into<String>) {
        let d = Diagnostic::at(self.file, e.line, message)
            .key(e.key.as_str())
            .help(help);
        self.diags.push(d);
    }

    fn required(&mut self, key: &str) -> Option<&'a Entry> {
        if let Some(e) = self.entries.get(key) {
            return Some(e);
        }
        if !self.broken.contains(key) {
            let example = REQUIRED
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("...", |(_, v)| *v);
            self.diags.push(
                Diagnostic::in_file(self.file, "required but not set")
                    .key(key)
                    .help(format!("add a line {key}={example}")),
            );
        }
        None
    }

    fn optional(&self, key: &str) -> Option<&'a Entry> {
        self.entries.get(key).copied()
    }

    fn check_known(&mut self, e: &Entry) {
        let known = || {
            REQUIRED
                .iter()
                .map(|(k, _)| *k)
                .chain(OPTIONAL.iter().copied())
        };
        if known().any(|k| k == e.key) {
            return;
        }
        let help = match closest(&e.key.to_ascii_uppercase(), known()) {
            Some(k) => format!("did you mean {k}?"),
            None => format!("known keys are {}", known().collect::<Vec<_>>().join(", ")),
        };
        self.problem(e, "unknown key", help);
    }

    fn cluster_name(&mut self, e: &Entry) -> Option<String> {
        let v = e.value.as_str();
        let fixed: String = {
            let lower = v.to_ascii_lowercase().replace(['_', '.', ' '], "-");
            lower.trim_matches('-').to_string()
        };
        let example = if fixed.is_empty() {
            "demo".to_string()
        } else {
            fixed
        };
        let help = format!(
            "use lowercase letters, digits and dashes, starting with a letter, e.g. CLUSTER_NAME={example}"
        );
        if v.is_empty() {
            self.problem(e, "is empty", help);
            return None;
        }
        if let Some(bad) = v
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            self.problem(
                e,
                format!("{v:?} contains {bad:?}, which Fly app names do not allow"),
                help,
            );
            return None;
        }
        if !v.starts_with(|c: char| c.is_ascii_lowercase()) {
            self.problem(e, format!("{v:?} does not start with a letter"), help);
            return None;
        }
        if v.ends_with('-') {
            self.problem(e, format!("{v:?} ends with a dash"), help);
            return None;
        }
        if v.len() > MAX_CLUSTER_NAME_LEN {
            self.problem(
                e,
                format!("{v:?} is {} characters long", v.len()),
                format!(
                    "use at most {MAX_CLUSTER_NAME_LEN} characters, so that the app names \
                     <name>-cp and <name>-ng-<group> (group up to {MAX_NODE_GROUP_LEN} characters) \
                     fit Fly's {MAX_APP_NAME_LEN}-character limit"
                ),
            );
            return None;
        }
        Some(v.to_string())
    }

    /// Parse a CIDR list and check its shape (IPv6, or IPv6 then IPv4), host bits and size.
    /// Returns the ranges when they parse and have the right shape, so that cross-key checks
    /// can still run when only a size is wrong.
    fn cidrs(&mut self, e: &Entry, role: CidrRole) -> Option<Vec<IpNet>> {
        let example = match role {
            CidrRole::Cluster => "\"fd00:42::/56,10.42.0.0/16\"",
            CidrRole::Service => "\"fd00:43::/112,10.43.0.0/16\"",
        };
        let mut nets = Vec::new();
        for item in e.value.split(',').map(str::trim) {
            match item.parse::<IpNet>() {
                Ok(n) => nets.push(n),
                Err(_) => {
                    let what = if item.parse::<IpAddr>().is_ok() {
                        format!("{item:?} is an address, not a range (no /prefix)")
                    } else {
                        format!("{item:?} is not a CIDR range")
                    };
                    self.problem(
                        e,
                        what,
                        format!(
                            "write one IPv6 range or an IPv6,IPv4 pair, e.g. {}={example}",
                            e.key
                        ),
                    );
                    return None;
                }
            }
        }
        let families: Vec<_> = nets.iter().map(family).collect();
        let v = &e.value;
        match families.as_slice() {
            ["IPv6"] | ["IPv6", "IPv4"] => {}
            ["IPv4", "IPv6"] => {
                self.problem(
                    e,
                    format!("{v:?} lists IPv4 first"),
                    format!("put the IPv6 range first, e.g. \"{},{}\"", nets[1], nets[0]),
                );
                return None;
            }
            ["IPv4"] => {
                self.problem(
                    e,
                    format!("{v:?} has no IPv6 range"),
                    format!(
                        "the cluster is IPv6-first: add an IPv6 range before it, e.g. {}={example}",
                        e.key
                    ),
                );
                return None;
            }
            _ => {
                self.problem(
                    e,
                    format!("{v:?} has {} ranges ({})", nets.len(), families.join(", ")),
                    format!(
                        "write one IPv6 range or an IPv6,IPv4 pair, e.g. {}={example}",
                        e.key
                    ),
                );
                return None;
            }
        }
        for net in &nets {
            if net.trunc() != *net {
                self.problem(
                    e,
                    format!("{net} has host bits set"),
                    format!("write the network address: {}", net.trunc()),
                );
            }
            self.cidr_size(e, net, role);
            let sixpn: IpNet = FLY_6PN.parse().expect("FLY_6PN is a valid CIDR");
            if overlaps(net, &sixpn) {
                self.problem(
                    e,
                    format!("{net} overlaps Fly's private network {FLY_6PN}"),
                    format!(
                        "use a ULA range outside {FLY_6PN}, e.g. {}={example}",
                        e.key
                    ),
                );
            }
        }
        Some(nets)
    }

    /// Size limits (reference/k3s.md §3 "Sizes"): service ranges at most /112 (IPv6) and /12
    /// (IPv4); cluster ranges at most 16 bits above the node mask (/64 IPv6, /24 IPv4), and no
    /// smaller than one node's share.
    fn cidr_size(&mut self, e: &Entry, net: &IpNet, role: CidrRole) {
        let p = net.prefix_len();
        let (min, max, why) = match (role, net) {
            (CidrRole::Service, IpNet::V6(_)) => (112, 126, "Kubernetes allows an IPv6 service range of at most /112"),
            (CidrRole::Service, IpNet::V4(_)) => (12, 30, "Kubernetes allows an IPv4 service range of at most /12"),
            (CidrRole::Cluster, IpNet::V6(_)) => (48, 64, "each node gets a /64 and kube-controller-manager allows at most 16 bits more (k3s#7888)"),
            (CidrRole::Cluster, IpNet::V4(_)) => (8, 24, "each node gets a /24 and kube-controller-manager allows at most 16 bits more"),
        };
        if p < min {
            self.problem(
                e,
                format!("{net} is too large (/{p})"),
                format!("use a prefix of /{min} or longer: {why}"),
            );
        } else if p > max {
            self.problem(
                e,
                format!("{net} is too small (/{p})"),
                format!("use a prefix between /{min} and /{max}: {why}"),
            );
        }
    }

    /// CLUSTER_CIDR and SERVICE_CIDR: same families in the same order, no overlap.
    fn cidr_pair(&mut self, ce: &Entry, cluster: &[IpNet], se: &Entry, service: &[IpNet]) {
        let cf: Vec<_> = cluster.iter().map(family).collect();
        let sf: Vec<_> = service.iter().map(family).collect();
        if cf != sf {
            self.problem(
                se,
                format!(
                    "has {} but CLUSTER_CIDR (line {}) has {}",
                    sf.join(","),
                    ce.line,
                    cf.join(",")
                ),
                "k3s needs both keys to list the same families in the same order (reference/k3s.md §3): both IPv6, or both IPv6,IPv4",
            );
        }
        for c in cluster {
            for s in service {
                // A service range strictly inside the cluster range is tolerated: the node IPAM
                // controller marks the node subnets it covers as used (kube-controller-manager
                // range_allocator filterOutServiceRange), as the k8s-on-fly example config does.
                let service_inside_cluster =
                    c.prefix_len() < s.prefix_len() && c.contains(&s.network());
                if overlaps(c, s) && !service_inside_cluster {
                    self.problem(
                        se,
                        format!("{s} overlaps CLUSTER_CIDR range {c} (line {})", ce.line),
                        "pick service and cluster ranges that do not overlap, e.g. fd00:42::/56 for pods and fd00:43::/112 for services",
                    );
                }
            }
        }
    }

    fn dns(&mut self, e: &Entry, service: Option<&[IpNet]>) -> Option<Vec<IpAddr>> {
        let mut ips = Vec::new();
        for item in e.value.split(',').map(str::trim) {
            match item.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => {
                    self.problem(
                        e,
                        format!("{item:?} is not an IP address"),
                        "write one address per SERVICE_CIDR range, IPv6 first, e.g. CLUSTER_DNS=\"fd00:43::a,10.43.0.10\"",
                    );
                    return None;
                }
            }
        }
        let v = &e.value;
        if ips.len() > 2 {
            self.problem(
                e,
                format!("{v:?} lists {} addresses", ips.len()),
                "write one address, or an IPv6,IPv4 pair",
            );
            return None;
        }
        if ips.len() == 2 && ips[0].is_ipv4() {
            self.problem(
                e,
                format!("{v:?} lists IPv4 first"),
                format!("put the IPv6 address first: \"{},{}\"", ips[1], ips[0]),
            );
            return None;
        }
        let Some(service) = service else {
            return Some(ips);
        };
        let mut ok = true;
        for (i, ip) in ips.iter().enumerate() {
            let Some(range) = service.get(i) else {
                self.problem(
                    e,
                    format!(
                        "{ip} has no matching SERVICE_CIDR range (SERVICE_CIDR lists {})",
                        service.len()
                    ),
                    "give one address per SERVICE_CIDR range, in the same order",
                );
                ok = false;
                continue;
            };
            let suggestion = nth_address(range, 10);
            if ip_family(ip) != family(range) {
                self.problem(
                    e,
                    format!("{ip} is {} but SERVICE_CIDR range {} is {range}", ip_family(ip), i + 1),
                    format!("use the same families in the same order as SERVICE_CIDR, e.g. {suggestion}"),
                );
                ok = false;
            } else if !range.contains(ip) {
                self.problem(
                    e,
                    format!("{ip} is outside SERVICE_CIDR range {range}"),
                    format!("pick an address inside {range}, e.g. {suggestion} (k3s's choice)"),
                );
                ok = false;
            } else if *ip == range.network() {
                self.problem(
                    e,
                    format!("{ip} is the network address of {range}"),
                    format!("pick another address inside {range}, e.g. {suggestion}"),
                );
                ok = false;
            } else if matches!(range, IpNet::V4(_)) && *ip == range.broadcast() {
                self.problem(
                    e,
                    format!("{ip} is the broadcast address of {range}"),
                    format!("pick another address inside {range}, e.g. {suggestion}"),
                );
                ok = false;
            }
        }
        ok.then_some(ips)
    }

    fn region(&mut self, e: &Entry) -> Option<String> {
        let v = e.value.as_str();
        if REGIONS.contains(&v) {
            return Some(v.to_string());
        }
        let lower = v.to_ascii_lowercase();
        let help = match closest(&lower, REGIONS.iter().copied()).filter(|_| !v.is_empty()) {
            Some(r) if strsim::levenshtein(&lower, r) <= 1 => {
                format!("did you mean {r}? Fly regions: {}", REGIONS.join(" "))
            }
            _ => format!("use a Fly region code: {}", REGIONS.join(" ")),
        };
        self.problem(e, format!("{v:?} is not a Fly region"), help);
        None
    }

    /// A whole number in `min..=max`.
    fn number(&mut self, e: &Entry, min: u32, max: u32, what: &str) -> Option<u32> {
        let v = e.value.as_str();
        let parsed = if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) {
            v.parse::<u32>().ok()
        } else {
            None
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.problem(
                    e,
                    format!("{n} is out of range"),
                    format!("use {min} to {max} ({what})"),
                );
                None
            }
            None => {
                self.problem(
                    e,
                    format!("{v:?} is not a whole number"),
                    format!(
                        "write digits only, {min} to {max} ({what}), e.g. {}={min}",
                        e.key
                    ),
                );
                None
            }
        }
    }

    fn vm(&mut self, size_key: &str, memory_key: &str) -> Option<VmSpec> {
        let size = self.required(size_key);
        let memory = self.required(memory_key);
        let preset = size.and_then(|e| match presets::preset_named(&e.value) {
            Some(p) => Some(p),
            None => {
                let names: Vec<_> = presets::PRESETS.iter().map(|p| p.name).collect();
                let help = match closest(&e.value, names.iter().copied()) {
                    Some(n) if !e.value.is_empty() => {
                        format!("did you mean {n}? Fly presets: {}", names.join(" "))
                    }
                    _ => format!("use a Fly preset: {}", names.join(" ")),
                };
                self.problem(e, format!("{:?} is not a Fly VM size", e.value), help);
                None
            }
        });
        let memory_entry = memory?;
        let memory_mb = match preset {
            Some(p) => self.number(
                memory_entry,
                p.min_memory_mb,
                p.max_memory_mb,
                &format!("MB for {}", p.name),
            )?,
            None => self.number(memory_entry, 256, u32::MAX, "MB")?,
        };
        let p = preset?;
        let step = p.memory_step_mb();
        if memory_mb % step != 0 {
            let lower = memory_mb / step * step;
            let suggestion = if lower < p.min_memory_mb {
                lower + step
            } else {
                lower
            };
            self.problem(
                memory_entry,
                format!("{memory_mb} is not a multiple of {step}"),
                format!(
                    "{} machines take memory in steps of {step} MB (reference/fly-machines-api.md §6), e.g. {}={suggestion}",
                    p.name, memory_entry.key
                ),
            );
            return None;
        }
        Some(VmSpec {
            preset: p.name.to_string(),
            cpu_kind: p.cpu_kind,
            cpus: p.cpus,
            memory_mb,
        })
    }

    fn volume_name(&mut self, e: &Entry) -> Option<String> {
        let v = e.value.as_str();
        let fixed: String = v
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(30)
            .collect();
        let example = if fixed.is_empty() {
            "demo_data".to_string()
        } else {
            fixed
        };
        let help = format!(
            "use letters, digits and _ only, at most 30 characters, e.g. VOLUME_NAME={example}"
        );
        if v.is_empty() {
            self.problem(e, "is empty", help);
            return None;
        }
        if let Some(bad) = v
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            self.problem(
                e,
                format!("{v:?} contains {bad:?}, which Fly volume names do not allow"),
                help,
            );
            return None;
        }
        if v.len() > 30 {
            self.problem(e, format!("{v:?} is {} characters long", v.len()), help);
            return None;
        }
        Some(v.to_string())
    }

    fn k3s_version(&mut self, e: &Entry) -> Option<String> {
        let v = e.value.as_str();
        if is_k3s_version(v) {
            return Some(v.to_string());
        }
        self.problem(
            e,
            format!("{v:?} is not a k3s release tag"),
            "write v<major>.<minor>.<patch>[-rcN]+k3s<N>, e.g. K3S_VERSION=\"v1.33.7+k3s1\" (reference/k3s.md §5)",
        );
        None
    }

    fn org_name(&mut self, e: &Entry) -> Option<String> {
        let v = e.value.as_str();
        let ok = !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            return Some(v.to_string());
        }
        self.problem(
            e,
            if v.is_empty() { "is empty".to_string() } else { format!("{v:?} is not a Fly organization slug") },
            "use the org slug (lowercase letters, digits, dashes) shown by `fly orgs list`, e.g. ORG_NAME=personal",
        );
        None
    }

    fn flannel(&mut self, e: &Entry) -> Option<FlannelBackend> {
        let b = match e.value.as_str() {
            "vxlan" => FlannelBackend::Vxlan,
            "host-gw" => FlannelBackend::HostGw,
            "wireguard-native" => FlannelBackend::WireguardNative,
            "none" => FlannelBackend::None,
            other => {
                self.problem(
                    e,
                    format!("{other:?} is not a flannel backend"),
                    "use vxlan, host-gw, wireguard-native or none (reference/k3s.md §3); leave it out for wireguard-native",
                );
                return None;
            }
        };
        Some(b)
    }

    fn image(&mut self, e: &Entry) -> Option<String> {
        let v = e.value.as_str();
        if !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some(v.to_string());
        }
        self.problem(
            e,
            if v.is_empty() { "is empty".to_string() } else { format!("{v:?} contains whitespace") },
            format!("write an image reference, e.g. IMAGE={DEFAULT_IMAGE}, or leave IMAGE out for that default"),
        );
        None
    }
}

/// Whether two ranges share any address.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// `v<major>.<minor>.<patch>[-<pre>]+k3s<N>`, e.g. `v1.24.15+k3s1`, `v1.33.7-rc4+k3s1`.
pub(crate) fn is_k3s_version(v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let Some((version, build)) = rest.split_once('+') else {
        return false;
    };
    let Some(n) = build.strip_prefix("k3s") else {
        return false;
    };
    if !digits(n) {
        return false;
    }
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    let parts: Vec<_> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| digits(p))
        && pre.is_none_or(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
        })
}

#[cfg(test)]
mod tests;
