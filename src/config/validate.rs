//! Validation: turn the raw `KEY=VALUE` entries of either file format into a [`Config`],
//! checking every rule and reporting every problem at once, each with file, line, key and fix.
//!
//! Pure: takes entries, returns a value or diagnostics. Fly facts come from `presets`, k3s and
//! Kubernetes sizing rules are cited where they are applied (reference/k3s.md §3).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::diagnostic::{Diagnostic, Diagnostics};
use super::presets::{self, REGIONS};
use super::{Config, FlannelBackend, VmSpec};
use network::CidrRole;

/// Fly app names are DNS labels (`<app>.internal`, `<id>.vm.<app>.internal`): at most 63.
pub const MAX_APP_NAME_LEN: usize = 63;
/// The longest node-group name (`-a GROUP`) the cluster name leaves room for.
pub const MAX_NODE_GROUP_LEN: usize = 8;
/// The longest `CLUSTER_NAME`: `<name>-ng-<group>` must fit [`MAX_APP_NAME_LEN`].
pub const MAX_CLUSTER_NAME_LEN: usize = MAX_APP_NAME_LEN - "-ng-".len() - MAX_NODE_GROUP_LEN;
/// The default for `NODE_IMAGE_BASE`: the base `fks-bootstrap image build` adds its layer to
/// (ARCHITECTURE "The node image").
pub const DEFAULT_NODE_IMAGE_BASE: &str = "docker.io/library/debian:trixie-slim";
/// The default for `FLANNEL_BACKEND`, what k3s.sh used.
pub const DEFAULT_FLANNEL_BACKEND: FlannelBackend = FlannelBackend::WireguardNative;
/// The default for `SSH_PORT`: Fly's own SSH server holds port 22 on every machine's 6PN
/// address (reference/fly-runtime.md §1.6), so the node's SSH server uses another port.
pub const DEFAULT_SSH_PORT: u16 = 2222;
/// Ports `SSH_PORT` must not take: Fly's SSH (22) and what k3s and flannel listen on
/// (reference/k3s.md: 6443 API, 10250 kubelet, 2379/2380 etcd, 8472 vxlan, 51820/51821
/// wireguard-native).
const SSH_PORT_TAKEN: &[(u16, &str)] = &[
    (
        22,
        "Fly's own SSH server (hallpass) listens there on the 6PN address",
    ),
    (6443, "the Kubernetes API server"),
    (10250, "the kubelet"),
    (2379, "etcd clients"),
    (2380, "etcd peers"),
    (8472, "flannel vxlan"),
    (51820, "flannel wireguard-native"),
    (51821, "flannel wireguard-native (IPv6)"),
];

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
const OPTIONAL: &[&str] = &[
    "FLANNEL_BACKEND",
    "IMAGE",
    "NODE_IMAGE_BASE",
    ALLOW_IPV6_ONLY_POD_TRAFFIC,
    "SSH_PORT",
];

/// The key by which a user accepts that, with a dual-stack `CLUSTER_CIDR` and a flannel backend
/// that carries IPv4 pods over IPv4 (vxlan, host-gw), IPv4 pod traffic between nodes does not
/// work on Fly and only IPv6 pods reach each other across nodes
/// (reference/flannel-dualstack.md §2).
pub const ALLOW_IPV6_ONLY_POD_TRAFFIC: &str = "ALLOW_IPV6_ONLY_POD_TRAFFIC";

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
    // Fly documents no per-app machine limit, only org quotas raised through support
    // (reference fly-machines-api.md §5); 1000 bounds typos. What really limits a group is
    // the pod ranges CLUSTER_CIDR holds, checked next.
    let node_group_size = c.required("NODE_GROUP_SIZE").and_then(|e| {
        c.number(e, 1, 1000, "workers per node group")
            .map(|n| (e, n))
    });
    if let (Some((ne, n)), Some((ce, cn))) = (&node_group_size, &cluster_cidr) {
        c.node_ranges(ne, *n, ce, cn);
    }
    let node_group_size = node_group_size.map(|(_, n)| n);
    let volume_size_gb = c
        .required("VOLUME_SIZE")
        .and_then(|e| c.number(e, 1, 500, "GB per volume"));
    let volume_name = c.required("VOLUME_NAME").and_then(|e| c.volume_name(e));
    let cp_vm = c.vm("CP_VM_SIZE", "CP_VM_MEMORY");
    let worker_vm = c.vm("WORKER_VM_SIZE", "WORKER_VM_MEMORY");
    let k3s_version = c.required("K3S_VERSION").and_then(|e| c.k3s_version(e));
    let org_name = c.required("ORG_NAME").and_then(|e| c.org_name(e));
    let flannel_entry = c.optional("FLANNEL_BACKEND");
    let flannel_backend = match flannel_entry {
        Some(e) => c.flannel(e),
        None => Some(DEFAULT_FLANNEL_BACKEND),
    };
    // No default: without IMAGE, -c/-a build the cluster's own image (`image::ensure`).
    let image = match c.optional("IMAGE") {
        Some(e) => c.image(e).map(Some),
        None => Some(None),
    };
    let node_image_base = match c.optional("NODE_IMAGE_BASE") {
        Some(e) => c.base_image(e),
        None => Some(DEFAULT_NODE_IMAGE_BASE.to_string()),
    };
    let allow_entry = c.optional(ALLOW_IPV6_ONLY_POD_TRAFFIC);
    let allow_ipv6_only_pod_traffic = match allow_entry {
        Some(e) => c.boolean(e),
        None => Some(false),
    };
    if let (Some((ce, cidrs)), Some(backend), Some(allow)) =
        (&cluster_cidr, flannel_backend, allow_ipv6_only_pod_traffic)
    {
        c.pod_underlay(
            ce,
            cidrs,
            flannel_entry,
            backend,
            allow_entry.filter(|_| allow),
        );
    }
    let ssh_port = match c.optional("SSH_PORT") {
        Some(e) => c.ssh_port(e),
        None => Some(DEFAULT_SSH_PORT),
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
            node_image_base: node_image_base?,
            allow_ipv6_only_pod_traffic: allow_ipv6_only_pod_traffic?,
            ssh_port: ssh_port?,
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

struct Checker<'a> {
    file: &'a Path,
    entries: BTreeMap<&'a str, &'a Entry>,
    broken: &'a BTreeSet<String>,
    diags: Diagnostics,
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

    /// `true` or `false`.
    fn boolean(&mut self, e: &Entry) -> Option<bool> {
        match e.value.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            other => {
                self.problem(
                    e,
                    format!("{other:?} is not true or false"),
                    format!("write {}=true or {}=false", e.key, e.key),
                );
                None
            }
        }
    }

    /// `SSH_PORT`: a TCP port that nothing else on the node or Fly's init uses.
    fn ssh_port(&mut self, e: &Entry) -> Option<u16> {
        let n = self.number(e, 1, u32::from(u16::MAX), "a TCP port")?;
        let port = u16::try_from(n).ok()?;
        if let Some((_, what)) = SSH_PORT_TAKEN.iter().find(|(p, _)| *p == port) {
            self.problem(
                e,
                format!("port {port} is taken: {what}"),
                format!("use another port, e.g. the default {DEFAULT_SSH_PORT}"),
            );
            return None;
        }
        Some(port)
    }

    /// `IMAGE`: an image reference as registries spell it, checked like `NODE_IMAGE_BASE`.
    fn image(&mut self, e: &Entry) -> Option<String> {
        let v = e.value.as_str();
        let reason = if v.is_empty() {
            "is empty".to_string()
        } else if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            format!("{v:?} contains whitespace")
        } else {
            match v.parse::<oci_spec::distribution::Reference>() {
                Ok(_) => return Some(v.to_string()),
                Err(err) => format!("{v:?} is not an image reference: {err}"),
            }
        };
        self.problem(
            e,
            reason,
            "write an image reference, e.g. IMAGE=registry.fly.io/my-app@sha256:<digest>, or leave IMAGE out to have -c build and push the cluster's own".to_string(),
        );
        None
    }
}

impl Checker<'_> {
    /// `NODE_IMAGE_BASE`: an image reference as registries spell it (`host/repo:tag` or
    /// `...@sha256:<hex>`), checked with the OCI distribution grammar of `oci-spec`.
    fn base_image(&mut self, e: &Entry) -> Option<String> {
        match e.value.parse::<oci_spec::distribution::Reference>() {
            Ok(_) => Some(e.value.clone()),
            Err(err) => {
                self.problem(
                    e,
                    format!("{:?} is not an image reference: {err}", e.value),
                    format!("write e.g. NODE_IMAGE_BASE={DEFAULT_NODE_IMAGE_BASE}, or leave it out for that default"),
                );
                None
            }
        }
    }
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

mod network;
mod pods;

#[cfg(test)]
mod tests;
