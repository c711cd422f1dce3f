//! The node description the renderer needs: which k3s role a machine plays, in which app, with
//! which addresses, and how that follows from the node names k3s.sh used (`ctrl-N`,
//! `worker-ng-<group>-<i>`, reference/k3s-sh-behaviour.md "Operator side").
//!
//! Pure: values in, values out. The addresses and ids are read on the machine by the caller.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::config::Config;

use super::Error;

/// One cluster node, as its k3s config needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The operator's name for it: `ctrl-0`, `worker-ng-a-2`.
    pub name: String,
    pub role: Role,
    /// The Fly app the machine lives in: `<cluster>-cp` or `<cluster>-ng-<group>`.
    pub app: String,
    /// The Fly machine id (FLY_MACHINE_ID): k3s's node name is `<id>.vm.<app>.internal`.
    pub machine_id: String,
    /// The machine's 6PN address (FLY_PRIVATE_IP / `fly-local-6pn`); listed first everywhere.
    pub private_ip: Ipv6Addr,
    /// The machine's eth0 IPv4, needed when the cluster is dual-stack.
    pub ipv4: Option<Ipv4Addr>,
    /// The Fly region (FLY_REGION), for the `topology.kubernetes.io/region` label.
    pub region: String,
    /// The volume's zone, for the `topology.kubernetes.io/zone` label; no label when unknown.
    pub zone: Option<String>,
}

/// The k3s role of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The server that starts the embedded etcd cluster (`cluster-init`).
    BootstrapServer,
    /// A server that joins the bootstrap server directly by its machine DNS name.
    JoiningServer {
        /// The machine id of the bootstrap server.
        bootstrap_machine_id: String,
    },
    /// A worker (`k3s agent`), joining through the control-plane app's DNS name.
    Agent,
}

impl Role {
    /// Whether this role runs `k3s server`.
    pub fn is_server(&self) -> bool {
        !matches!(self, Role::Agent)
    }
}

/// What a node name says: a control-plane slot or a worker of a node group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeName {
    /// `ctrl-<index>`.
    Server { index: u32 },
    /// `worker-ng-<group>-<index>`.
    Worker { group: String, index: u32 },
}

impl NodeName {
    /// Parse `ctrl-N` or `worker-ng-<group>-<i>`. A group is lowercase letters, digits and
    /// `-` (it becomes part of a Fly app name), not starting or ending with `-`.
    pub fn parse(name: &str) -> Result<NodeName, Error> {
        let bad = |reason: &str| Error::NodeName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(index) = name.strip_prefix("ctrl-") {
            let index = parse_index(index).ok_or_else(|| bad("N in ctrl-N must be a number"))?;
            return Ok(NodeName::Server { index });
        }
        if let Some(rest) = name.strip_prefix("worker-ng-") {
            let (group, index) = rest
                .rsplit_once('-')
                .ok_or_else(|| bad("expected worker-ng-<group>-<i>"))?;
            let index = parse_index(index)
                .ok_or_else(|| bad("i in worker-ng-<group>-<i> must be a number"))?;
            let group_ok = !group.is_empty()
                && !group.starts_with('-')
                && !group.ends_with('-')
                && group
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !group_ok {
                return Err(bad(
                    "the group must be lowercase letters, digits and inner '-'",
                ));
            }
            return Ok(NodeName::Worker {
                group: group.to_owned(),
                index,
            });
        }
        Err(bad("expected ctrl-N or worker-ng-<group>-<i>"))
    }

    /// The Fly app this node lives in.
    pub fn app(&self, config: &Config) -> String {
        match self {
            NodeName::Server { .. } => config.cp_app(),
            NodeName::Worker { group, .. } => config.node_group_app(group),
        }
    }
}

/// A decimal index without sign or leading zeros (so `ctrl-01` is not a second `ctrl-1`).
fn parse_index(s: &str) -> Option<u32> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// Which control-plane node bootstraps the cluster (`BOOTSTRAP_NODE_ID`, default 0) and, for
/// the others, the machine id they join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bootstrap {
    /// N of the bootstrap `ctrl-N`.
    pub index: u32,
    /// The bootstrap server's machine id; required to describe a joining server.
    pub machine_id: Option<String>,
}

/// What the machine itself knows: its id, addresses and placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub machine_id: String,
    pub private_ip: Ipv6Addr,
    pub ipv4: Option<Ipv4Addr>,
    pub region: String,
    pub zone: Option<String>,
}

impl Node {
    /// Describe node `name` of `config`: role and app from the name, the rest from `host`.
    /// A joining server needs `bootstrap.machine_id`.
    pub fn from_name(
        config: &Config,
        name: &str,
        bootstrap: &Bootstrap,
        host: Host,
    ) -> Result<Node, Error> {
        let parsed = NodeName::parse(name)?;
        let role = match &parsed {
            NodeName::Server { index } if *index == bootstrap.index => Role::BootstrapServer,
            NodeName::Server { .. } => Role::JoiningServer {
                bootstrap_machine_id: bootstrap.machine_id.clone().ok_or_else(|| {
                    Error::MissingBootstrapMachineId {
                        node: name.to_owned(),
                        bootstrap_index: bootstrap.index,
                    }
                })?,
            },
            NodeName::Worker { .. } => Role::Agent,
        };
        Ok(Node {
            name: name.to_owned(),
            role,
            app: parsed.app(config),
            machine_id: host.machine_id,
            private_ip: host.private_ip,
            ipv4: host.ipv4,
            region: host.region,
            zone: host.zone,
        })
    }

    /// The k3s node name: the machine's own stable DNS name, which resolves to its current 6PN
    /// address (reference/fly-machines-api.md, "Internal DNS").
    pub fn k3s_node_name(&self) -> String {
        format!("{}.vm.{}.internal", self.machine_id, self.app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::lab_config;

    fn host() -> Host {
        Host {
            machine_id: "e784079b449483".into(),
            private_ip: "fdaa:0:1:a7b:1:2:3:2".parse().unwrap(),
            ipv4: Some("172.19.0.2".parse().unwrap()),
            region: "sjc".into(),
            zone: Some("a1b2".into()),
        }
    }

    #[test]
    fn ctrl_names_are_servers_in_the_cp_app() {
        assert_eq!(
            NodeName::parse("ctrl-2").unwrap(),
            NodeName::Server { index: 2 }
        );
        let node = Node::from_name(&lab_config(), "ctrl-0", &Bootstrap::default(), host()).unwrap();
        assert_eq!(node.role, Role::BootstrapServer);
        assert_eq!(node.app, "lab-cp");
        assert_eq!(node.k3s_node_name(), "e784079b449483.vm.lab-cp.internal");
    }

    #[test]
    fn bootstrap_index_picks_the_bootstrap_server() {
        let b = Bootstrap {
            index: 1,
            machine_id: Some("boot123".into()),
        };
        let one = Node::from_name(&lab_config(), "ctrl-1", &b, host()).unwrap();
        assert_eq!(one.role, Role::BootstrapServer);
        let zero = Node::from_name(&lab_config(), "ctrl-0", &b, host()).unwrap();
        assert_eq!(
            zero.role,
            Role::JoiningServer {
                bootstrap_machine_id: "boot123".into()
            }
        );
    }

    #[test]
    fn joining_server_without_bootstrap_machine_id_is_an_error() {
        let err =
            Node::from_name(&lab_config(), "ctrl-1", &Bootstrap::default(), host()).unwrap_err();
        assert!(
            matches!(err, Error::MissingBootstrapMachineId { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("ctrl-1"), "{err}");
    }

    #[test]
    fn worker_names_are_agents_in_their_group_app() {
        assert_eq!(
            NodeName::parse("worker-ng-gpu-a-3").unwrap(),
            NodeName::Worker {
                group: "gpu-a".into(),
                index: 3
            }
        );
        let node = Node::from_name(
            &lab_config(),
            "worker-ng-a-0",
            &Bootstrap::default(),
            host(),
        )
        .unwrap();
        assert_eq!(node.role, Role::Agent);
        assert_eq!(node.app, "lab-ng-a");
    }

    #[test]
    fn other_names_are_rejected_with_the_name_and_reason() {
        for bad in [
            "",
            "ctrl",
            "ctrl-",
            "ctrl-x",
            "ctrl-01",
            "ctrl--1",
            "worker-0",
            "worker-ng-",
            "worker-ng-a",
            "worker-ng--0",
            "worker-ng-A-0",
            "worker-ng-a-",
            "worker-ng-a b-0",
            "worker-ng-a-1x",
            "node-0",
        ] {
            let err = NodeName::parse(bad).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("node name `{bad}`")),
                "{bad}: {err}"
            );
        }
    }
}
