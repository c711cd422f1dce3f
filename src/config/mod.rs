//! The cluster configuration: `clusters/<name>/config` (k3s.sh's `KEY=VALUE` format) or
//! `clusters/<name>/cluster.toml`, parsed without executing anything, validated in full, and
//! resolved once into [`Config`], the value every later stage reads.
//!
//! Pure: this module reads the one file it is pointed at and nothing else (no env, no network,
//! no clock).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Serialize;

mod diagnostic;
mod parse;
pub mod presets;
mod toml;
mod validate;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use parse::parse_shell;
pub use toml::parse_toml;
pub(crate) use validate::is_k3s_version;
pub use validate::{
    ALLOW_IPV6_ONLY_POD_TRAFFIC, DEFAULT_FLANNEL_BACKEND, DEFAULT_NODE_IMAGE_BASE,
    DEFAULT_SSH_PORT, MAX_APP_NAME_LEN, MAX_CLUSTER_NAME_LEN, MAX_NODE_GROUP_LEN,
};

/// The shell-style config file name inside a cluster directory.
pub const SHELL_FILE: &str = "config";
/// The TOML config file name inside a cluster directory.
pub const TOML_FILE: &str = "cluster.toml";

/// Why a cluster config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file exists but could not be read.
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        io: std::io::Error,
    },
    /// The file is not UTF-8 text (a binary file, or another encoding): a configuration error.
    #[error("{} is not UTF-8 text: invalid byte 0x{byte:02x} at line {line}, byte offset {offset}; a cluster config is KEY=VALUE (or TOML) text", path.display())]
    NotText {
        path: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 0-based byte offset of the first invalid byte in the file.
        offset: usize,
        byte: u8,
    },
    /// Both formats are present; which one wins would be a guess.
    #[error("{} has both {SHELL_FILE} and {TOML_FILE}; keep one of them", dir.display())]
    BothFormats { dir: PathBuf },
    /// Neither format is present.
    #[error("no {SHELL_FILE} or {TOML_FILE} in {}", dir.display())]
    Missing { dir: PathBuf },
    /// The file was read and has problems; all of them are listed.
    #[error("{}", invalid_message(.0))]
    Invalid(Diagnostics),
}

/// `<n> problems in <file>:` then one diagnostic per line.
fn invalid_message(diagnostics: &Diagnostics) -> String {
    let n = diagnostics.len();
    let plural = if n == 1 { "" } else { "s" };
    format!(
        "{n} problem{plural} in {}:\n{diagnostics}",
        diagnostics.file().display()
    )
}

/// Load the config of the cluster in `cluster_dir`: its `config` (shell format) or its
/// `cluster.toml`, never both. Reads that one file and nothing else.
pub fn load(cluster_dir: &Path) -> Result<Config, Error> {
    let shell = cluster_dir.join(SHELL_FILE);
    let toml = cluster_dir.join(TOML_FILE);
    let (path, is_toml) = match (shell.is_file(), toml.is_file()) {
        (true, true) => {
            return Err(Error::BothFormats {
                dir: cluster_dir.to_path_buf(),
            })
        }
        (true, false) => (shell, false),
        (false, true) => (toml, true),
        (false, false) => {
            return Err(Error::Missing {
                dir: cluster_dir.to_path_buf(),
            })
        }
    };
    let bytes = std::fs::read(&path).map_err(|io| Error::Read {
        path: path.clone(),
        io,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        Error::NotText {
            line: bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1,
            offset,
            // The first invalid byte; an error always has one at `valid_up_to`.
            byte: bytes.get(offset).copied().unwrap_or_default(),
            path: path.clone(),
        }
    })?;
    let parsed = if is_toml {
        parse_toml(&text, &path)
    } else {
        parse_shell(&text, &path)
    };
    parsed.map_err(Error::Invalid)
}

/// A validated cluster configuration. Every field is already checked: CIDR lists are IPv6
/// first, sizes fit their presets, names use the characters Fly allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The file the values came from, for messages.
    pub source: PathBuf,
    /// `CLUSTER_NAME`: the apps are `<name>-cp` and `<name>-ng-<group>`.
    pub cluster_name: String,
    /// `CLUSTER_CIDR`: one IPv6 range, or an IPv6,IPv4 pair (IPv6 first).
    pub cluster_cidr: Vec<IpNet>,
    /// `SERVICE_CIDR`: same families in the same order as `cluster_cidr`.
    pub service_cidr: Vec<IpNet>,
    /// `CLUSTER_DNS`: one address per service range, each inside it, same order.
    pub cluster_dns: Vec<IpAddr>,
    /// `REGION`: a Fly region code.
    pub region: String,
    /// `NODE_GROUP_SIZE`: workers per node group.
    pub node_group_size: u32,
    /// `VOLUME_SIZE`: GB per node volume, 1..=500.
    pub volume_size_gb: u32,
    /// `VOLUME_NAME`: letters, digits and `_`.
    pub volume_name: String,
    /// `CP_VM_SIZE` / `CP_VM_MEMORY`.
    pub cp_vm: VmSpec,
    /// `WORKER_VM_SIZE` / `WORKER_VM_MEMORY`.
    pub worker_vm: VmSpec,
    /// `K3S_VERSION`, e.g. `v1.24.15+k3s1`.
    pub k3s_version: String,
    /// `ORG_NAME`: the Fly organization slug.
    pub org_name: String,
    /// `FLANNEL_BACKEND` (optional, default `wireguard-native` as k3s.sh used).
    pub flannel_backend: FlannelBackend,
    /// `IMAGE` (optional, no default): an image of the user's that carries `fks-bootstrap` and
    /// k3s, used as given (never built). Unset: `-c`/`-a` build the cluster's own image and
    /// push it to `<registry>/<cluster>-cp` (`image::ensure`).
    pub image: Option<String>,
    /// `NODE_IMAGE_BASE` (optional): the base image `fks-bootstrap image build` adds its
    /// layer to, default Debian trixie slim.
    pub node_image_base: String,
    /// `ALLOW_IPV6_ONLY_POD_TRAFFIC` (optional, default false): the user accepts that with a
    /// dual-stack `CLUSTER_CIDR` and vxlan or host-gw, IPv4 pods cannot reach each other across
    /// nodes on Fly (reference/flannel-dualstack.md §2). Validation allows it only there.
    pub allow_ipv6_only_pod_traffic: bool,
    /// `SSH_PORT` (optional, default 2222): where `node init`'s SSH server listens on the
    /// node; port 22 on the 6PN address belongs to Fly (reference/fly-runtime.md §1.6).
    pub ssh_port: u16,
}

/// A machine size: a Fly preset plus the memory asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmSpec {
    /// The preset name, e.g. `performance-2x`.
    pub preset: String,
    pub cpu_kind: CpuKind,
    pub cpus: u32,
    pub memory_mb: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuKind {
    Shared,
    Performance,
}

/// The flannel backends k3s accepts (reference/k3s.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlannelBackend {
    Vxlan,
    HostGw,
    WireguardNative,
    None,
}

impl CpuKind {
    /// Fly's spelling: `shared` or `performance`.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuKind::Shared => "shared",
            CpuKind::Performance => "performance",
        }
    }
}

impl FlannelBackend {
    /// The value k3s's `flannel-backend` flag takes.
    pub fn as_str(self) -> &'static str {
        match self {
            FlannelBackend::Vxlan => "vxlan",
            FlannelBackend::HostGw => "host-gw",
            FlannelBackend::WireguardNative => "wireguard-native",
            FlannelBackend::None => "none",
        }
    }
}

impl Config {
    /// Whether `CLUSTER_CIDR` has an IPv4 range besides the IPv6 one.
    pub fn is_dual_stack(&self) -> bool {
        self.cluster_cidr.iter().any(|n| matches!(n, IpNet::V4(_)))
    }

    /// The control-plane app: `<cluster>-cp`.
    pub fn cp_app(&self) -> String {
        format!("{}-cp", self.cluster_name)
    }

    /// The app of worker node group `group`: `<cluster>-ng-<group>`.
    pub fn node_group_app(&self, group: &str) -> String {
        format!("{}-ng-{}", self.cluster_name, group)
    }

    /// Every setting as `(KEY, value)` in the config file's spelling, defaults filled in;
    /// lists are comma-separated. Values are validated, so none needs quoting.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let join = |items: Vec<String>| items.join(",");
        let mut entries = vec![
            ("CLUSTER_NAME", self.cluster_name.clone()),
            (
                "CLUSTER_CIDR",
                join(self.cluster_cidr.iter().map(ToString::to_string).collect()),
            ),
            (
                "SERVICE_CIDR",
                join(self.service_cidr.iter().map(ToString::to_string).collect()),
            ),
            (
                "CLUSTER_DNS",
                join(self.cluster_dns.iter().map(ToString::to_string).collect()),
            ),
            ("REGION", self.region.clone()),
            ("NODE_GROUP_SIZE", self.node_group_size.to_string()),
            ("VOLUME_SIZE", self.volume_size_gb.to_string()),
            ("VOLUME_NAME", self.volume_name.clone()),
            ("WORKER_VM_SIZE", self.worker_vm.preset.clone()),
            ("WORKER_VM_MEMORY", self.worker_vm.memory_mb.to_string()),
            ("CP_VM_SIZE", self.cp_vm.preset.clone()),
            ("CP_VM_MEMORY", self.cp_vm.memory_mb.to_string()),
            ("K3S_VERSION", self.k3s_version.clone()),
            ("ORG_NAME", self.org_name.clone()),
            ("FLANNEL_BACKEND", self.flannel_backend.as_str().to_string()),
            ("NODE_IMAGE_BASE", self.node_image_base.clone()),
            (
                ALLOW_IPV6_ONLY_POD_TRAFFIC,
                self.allow_ipv6_only_pod_traffic.to_string(),
            ),
            ("SSH_PORT", self.ssh_port.to_string()),
        ];
        // IMAGE has no default: left out when unset (the file then reads back the same).
        if let Some(image) = &self.image {
            entries.push(("IMAGE", image.clone()));
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_text() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters/fly-k3s-poc/config"),
        )
        .expect("example cluster is checked in")
    }

    #[test]
    fn load_reads_the_shell_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(SHELL_FILE), seed_text()).expect("write");
        let c = load(dir.path()).expect("valid");
        assert_eq!(c.cluster_name, "fly-k3s-poc");
        assert_eq!(c.source, dir.path().join(SHELL_FILE));
        assert_eq!(c.cp_app(), "fly-k3s-poc-cp");
    }

    #[test]
    fn load_reads_cluster_toml() {
        let dir = tempfile::tempdir().expect("temp dir");
        let toml: String = seed_text()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('=').expect("KEY=VALUE");
                let v = v.trim_matches('"');
                if v.chars().all(|c| c.is_ascii_digit()) {
                    format!("{k} = {v}\n")
                } else {
                    format!("{k} = \"{v}\"\n")
                }
            })
            .collect();
        std::fs::write(dir.path().join(TOML_FILE), toml).expect("write");
        let c = load(dir.path()).expect("valid");
        assert_eq!(c.volume_size_gb, 250);
        assert_eq!(c.source, dir.path().join(TOML_FILE));
    }

    #[test]
    fn load_refuses_a_dir_with_both_formats() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(SHELL_FILE), seed_text()).expect("write");
        std::fs::write(dir.path().join(TOML_FILE), "").expect("write");
        let e = load(dir.path()).expect_err("both");
        assert!(matches!(e, Error::BothFormats { .. }), "{e:?}");
        assert!(e.to_string().contains("keep one"), "{e}");
    }

    #[test]
    fn load_names_the_dir_when_no_config_is_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = load(dir.path()).expect_err("missing");
        assert!(matches!(e, Error::Missing { .. }), "{e:?}");
        assert!(
            e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn load_reports_every_problem_with_a_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = seed_text()
            .replace("REGION=sjc", "REGION=xyz")
            .replace("VOLUME_SIZE=250", "VOLUME_SIZE=0");
        std::fs::write(dir.path().join(SHELL_FILE), text).expect("write");
        let e = load(dir.path()).expect_err("invalid");
        let Error::Invalid(diags) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(diags.len(), 2);
        let msg = e.to_string();
        assert!(msg.starts_with("2 problems in "), "{msg}");
        assert!(msg.contains(":5: REGION: "), "{msg}");
        assert!(msg.contains(":7: VOLUME_SIZE: "), "{msg}");
    }

    #[test]
    fn load_names_file_line_and_offset_of_a_non_utf8_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join(SHELL_FILE),
            b"CLUSTER_NAME=a\nREGION=\xff\xfe\n",
        )
        .expect("write");
        let e = load(dir.path()).expect_err("not text");
        let Error::NotText {
            line, offset, byte, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!((*line, *offset, *byte), (2, 22, 0xff));
        let msg = e.to_string();
        assert!(
            msg.contains(&dir.path().join(SHELL_FILE).display().to_string())
                && msg.contains("line 2, byte offset 22"),
            "{msg}"
        );
    }

    #[test]
    fn ssh_port_defaults_to_2222_and_refuses_ports_that_are_taken() {
        let with = |extra: &str| {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(
                dir.path().join(SHELL_FILE),
                format!("{}{extra}", seed_text()),
            )
            .expect("write");
            load(dir.path())
        };
        assert_eq!(with("").expect("valid").ssh_port, DEFAULT_SSH_PORT);
        assert_eq!(with("\nSSH_PORT=2200\n").expect("valid").ssh_port, 2200);
        for (value, why) in [
            ("22", "Fly's own SSH server"),
            ("6443", "the Kubernetes API server"),
            ("0", "out of range"),
            ("65536", "out of range"),
            ("ssh", "SSH_PORT"),
        ] {
            let e = with(&format!("\nSSH_PORT={value}\n")).expect_err(value);
            let msg = e.to_string();
            assert!(
                msg.contains("SSH_PORT") && msg.contains(why),
                "{value}: {msg}"
            );
        }
    }

    #[test]
    fn example_clusters_validate() {
        for name in ["fly-k3s-poc", "lab"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("clusters")
                .join(name);
            let c = load(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.cluster_name, name);
        }
    }

    #[test]
    fn node_image_base_defaults_to_debian_and_must_be_an_image_reference() {
        let path = Path::new("clusters/x/config");
        let c = parse_shell(&seed_text(), path).expect("valid");
        assert_eq!(c.node_image_base, DEFAULT_NODE_IMAGE_BASE);
        let text = format!(
            "{}\nNODE_IMAGE_BASE=127.0.0.1:5000/base/tiny:1\n",
            seed_text()
        );
        let c = parse_shell(&text, path).expect("valid");
        assert_eq!(c.node_image_base, "127.0.0.1:5000/base/tiny:1");
        let text = format!("{}\nNODE_IMAGE_BASE=\"Not A/Reference\"\n", seed_text());
        let e = parse_shell(&text, path).expect_err("invalid");
        let msg = e.to_string();
        assert!(
            msg.contains("NODE_IMAGE_BASE: \"Not A/Reference\" is not an image reference"),
            "{msg}"
        );
    }

    #[test]
    fn entries_round_trip_through_the_shell_parser() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters/lab");
        let c = load(&dir).expect("lab config");
        let text: String = c
            .entries()
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        let again = parse_shell(&text, &c.source).expect("listing parses");
        assert_eq!(again, c);
    }
}
