//! `fks-bootstrap render CLUSTER_DIR --node NAME ...`: print the k3s config.yaml one node of a
//! cluster would get (or, with `--flannel-conf`, the flannel net-conf its `flannel-conf` key
//! points to), on stdout, without touching Fly or the node.
//!
//! Owns only flag handling and the defaults for facts a node reads on itself (machine id,
//! zone); the rendering is `render::render`. No network, no writes besides stdout/stderr.

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use anyhow::anyhow;
use ipnet::IpNet;

use super::Error;
use crate::config;
use crate::render::{self, Bootstrap, Host, Node, NodeName};

const AFTER_HELP: &str = "\
Omitted optional flags:
  --machine-id     node-name falls back to NAME.vm.<app>.internal (a note on stderr says so);
                   on a machine it is FLY_MACHINE_ID.
  --ipv4           required when the cluster is dual-stack (CLUSTER_CIDR has an IPv4 range);
                   ignored, with a note, on an IPv6-only cluster.
  --zone           no topology.kubernetes.io/zone label (a note on stderr says so).
  --bootstrap-id   required for a joining server (ctrl-N other than the bootstrap node);
                   ignored for the bootstrap server and for workers.
  --flannel-conf   print flannel's net-conf (the file the config's flannel-conf key names)
                   instead of the k3s config; only dual-stack clusters on wireguard-native have
                   one (Mode ipv6: IPv4 and IPv6 pods both ride the 6PN).
The region label is the cluster's REGION. The join token is never in the output: servers and
agents read it from token-file.

Examples:
  fks-bootstrap render clusters/lab --node ctrl-0 --private-ip fdaa:0:1:a7b:1:2:3:2 \\
      --ipv4 172.19.0.2 --machine-id e784079b449483 --zone c2e1
  fks-bootstrap render clusters/lab --node worker-ng-a-0 --private-ip fdaa:0:1:a7b:1:2:3:9 \\
      --ipv4 172.19.0.9";

/// Print the k3s config.yaml a node would get.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The cluster directory (holding `config` or `cluster.toml`).
    pub cluster_dir: PathBuf,
    /// The node: `ctrl-N` (a server) or `worker-ng-<group>-<i>` (an agent).
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// The node's 6PN IPv6 address (FLY_PRIVATE_IP on the machine).
    #[arg(long, value_name = "6PN")]
    pub private_ip: Ipv6Addr,
    /// The node's eth0 IPv4 address.
    #[arg(long, value_name = "ADDR")]
    pub ipv4: Option<Ipv4Addr>,
    /// The zone of the node's volume.
    #[arg(long, value_name = "Z")]
    pub zone: Option<String>,
    /// The node's Fly machine id.
    #[arg(long, value_name = "ID")]
    pub machine_id: Option<String>,
    /// The machine id of the bootstrap server, which joining servers dial.
    #[arg(long, value_name = "ID")]
    pub bootstrap_id: Option<String>,
    /// N of the bootstrap server ctrl-N.
    #[arg(long, value_name = "N", env = "BOOTSTRAP_NODE_ID", default_value_t = 0)]
    pub bootstrap_node: u32,
    /// Print flannel's net-conf JSON (what `flannel-conf` points to) instead of the k3s config.
    #[arg(long)]
    pub flannel_conf: bool,
}

pub fn run(args: Args) -> Result<(), Error> {
    let config = config::load(&args.cluster_dir).map_err(|e| match e {
        config::Error::Read { .. } => Error::Failed(e.into()),
        _ => Error::Usage(e.into()),
    })?;
    // The name first: it decides which of the other flags are needed.
    NodeName::parse(&args.node).map_err(|e| Error::Usage(anyhow!(e).context("--node")))?;
    if let Some(id) = &args.machine_id {
        check_machine_id(id, "--machine-id")?;
    }
    if let Some(id) = &args.bootstrap_id {
        check_machine_id(id, "--bootstrap-id")?;
    }
    if let Some(zone) = &args.zone {
        check_zone(zone)?;
    }
    let dual_stack = config
        .cluster_cidr
        .iter()
        .any(|n| matches!(n, IpNet::V4(_)));
    if dual_stack && args.ipv4.is_none() {
        return Err(Error::Usage(anyhow!(
            "--ipv4 is required: cluster {} is dual-stack (CLUSTER_CIDR {}) and k3s needs a node IP of each family",
            config.cluster_name,
            cidrs(&config.cluster_cidr)
        )));
    }
    let bootstrap = Bootstrap {
        index: args.bootstrap_node,
        machine_id: args.bootstrap_id,
    };
    let host = Host {
        machine_id: args.machine_id.clone().unwrap_or_else(|| args.node.clone()),
        private_ip: args.private_ip,
        ipv4: args.ipv4,
        region: config.region.clone(),
        zone: args.zone.clone(),
    };
    let node = Node::from_name(&config, &args.node, &bootstrap, host).map_err(|e| match e {
        render::Error::MissingBootstrapMachineId {
            node,
            bootstrap_index,
        } => Error::Usage(anyhow!(
            "--bootstrap-id is required: {node} joins the bootstrap server ctrl-{bootstrap_index} by its machine id"
        )),
        other => Error::Usage(anyhow!(other).context("--node")),
    })?;
    // The input is usable; say what the omitted flags turned into.
    if args.machine_id.is_none() {
        eprintln!(
            "fks-bootstrap: note: no --machine-id: node-name falls back to {}",
            node.k3s_node_name()
        );
    }
    if args.zone.is_none() {
        eprintln!(
            "fks-bootstrap: note: no --zone: the node gets no topology.kubernetes.io/zone label"
        );
    }
    if let (false, Some(v4)) = (dual_stack, args.ipv4) {
        eprintln!(
            "fks-bootstrap: note: --ipv4 {v4} left out: cluster {} is IPv6-only",
            config.cluster_name
        );
    }
    let yaml = render::render(&config, &node).map_err(|e| Error::Failed(e.into()))?;
    let text = if args.flannel_conf {
        render::flannel::net_conf(&config).ok_or_else(|| {
            Error::Usage(anyhow!(
                "--flannel-conf: cluster {} has no flannel net-conf of its own (FLANNEL_BACKEND {}, CLUSTER_CIDR {}): k3s writes flannel's; only a dual-stack cluster on wireguard-native gets one",
                config.cluster_name,
                config.flannel_backend.as_str(),
                cidrs(&config.cluster_cidr)
            ))
        })?
    } else {
        yaml
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Error::Failed(anyhow!(e).context("writing the config to stdout")))
}

fn cidrs(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Fly machine ids are short lowercase hex strings; accept any ASCII letters and digits (a DNS
/// label, since the id becomes part of `<id>.vm.<app>.internal`).
fn check_machine_id(id: &str, flag: &str) -> Result<(), Error> {
    let ok = !id.is_empty() && id.len() <= 63 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(anyhow!(
            "{flag} `{}`: a machine id is 1 to 63 ASCII letters and digits",
            id.escape_debug()
        )))
    }
}

/// The zone becomes a Kubernetes label value: at most 63 characters, alphanumerics and `-_.`,
/// starting and ending with an alphanumeric.
fn check_zone(zone: &str) -> Result<(), Error> {
    let bytes = zone.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(anyhow!(
            "--zone `{}`: a zone must be a Kubernetes label value (1 to 63 letters, digits, '-', '_', '.', alphanumeric at both ends)",
            zone.escape_debug()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_letters_and_digits() {
        assert!(check_machine_id("e784079b449483", "--machine-id").is_ok());
        for bad in ["", "a b", "a.b", "a\nb", "é", &"a".repeat(64)] {
            let err = check_machine_id(bad, "--bootstrap-id").unwrap_err();
            assert!(err.to_string().starts_with("--bootstrap-id `"), "{err}");
        }
    }

    #[test]
    fn zones_must_be_kubernetes_label_values() {
        for ok in ["c2e1", "a", "us-east-1a", "z_1.b"] {
            assert!(check_zone(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "a/b", "a\"", &"a".repeat(64)] {
            let err = check_zone(bad).unwrap_err();
            assert!(err.to_string().starts_with("--zone `"), "{err}");
        }
    }
}
