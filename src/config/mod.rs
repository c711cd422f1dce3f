//! The cluster configuration: `clusters/<name>/config` (k3s.sh's `KEY=VALUE` format) or
//! `clusters/<name>/cluster.toml`, parsed without executing anything, validated in full, and
//! resolved once into [`Config`], the value every later stage reads.
//!
//! Pure: this module reads the one file it is pointed at and nothing else (no env, no network,
//! no clock).

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Serialize;

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
    /// `IMAGE` (optional): the machine image that carries `fks-bootstrap` and k3s.
    pub image: String,
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
    /// The control-plane app: `<cluster>-cp`.
    pub fn cp_app(&self) -> String {
        format!("{}-cp", self.cluster_name)
    }

    /// The app of worker node group `group`: `<cluster>-ng-<group>`.
    pub fn node_group_app(&self, group: &str) -> String {
        format!("{}-ng-{}", self.cluster_name, group)
    }
}
