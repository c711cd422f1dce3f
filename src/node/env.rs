//! The inputs of `node init` that come from the machine's environment: the node's role
//! variables the operator sets (`FKS_NODE_NAME`, `FKS_BOOTSTRAP_NODE_ID`,
//! `FKS_BOOTSTRAP_MACHINE_ID`, `FKS_ZONE`) and Fly's runtime variables (`FLY_MACHINE_ID`,
//! `FLY_APP_NAME`, `FLY_REGION`, `FLY_PRIVATE_IP`; reference/fly-machines-api.md §7).
//!
//! Pure: values are read through a lookup function, so tests pass a map; no secret is ever
//! read from the environment (the join token is a file, `render::TOKEN_FILE`).

use std::net::Ipv6Addr;

use super::Error;

/// The environment variables `node init` reads: the operator<->machine contract.
pub use crate::contract::env as vars;

/// What the environment says about this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// `FKS_NODE_NAME`: `ctrl-N` or `worker-ng-<group>-<i>`.
    pub node_name: String,
    /// `FKS_BOOTSTRAP_NODE_ID`: N of the bootstrap `ctrl-N` (default 0, as `BOOTSTRAP_NODE_ID`).
    pub bootstrap_index: u32,
    /// `FKS_BOOTSTRAP_MACHINE_ID`: the machine a joining server joins.
    pub bootstrap_machine_id: Option<String>,
    /// `FKS_ZONE`: the zone of the machine's volume, for the zone label.
    pub zone: Option<String>,
    /// `FLY_MACHINE_ID`.
    pub machine_id: String,
    /// `FLY_APP_NAME`: checked against the app the node name implies.
    pub app_name: Option<String>,
    /// `FLY_REGION`.
    pub region: String,
    /// `FLY_PRIVATE_IP`, when Fly set it.
    pub private_ip: Option<Ipv6Addr>,
}

impl Inputs {
    /// Read the inputs through `get` (e.g. `|k| std::env::var(k).ok()`). Empty values count as
    /// unset. Every problem is reported at once.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Inputs, Error> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let mut required = |k: &str| {
            get(k).unwrap_or_else(|| {
                problems.push(format!("{k} is not set"));
                String::new()
            })
        };
        let node_name = required(vars::NODE_NAME);
        let machine_id = required(vars::FLY_MACHINE_ID);
        let region = required(vars::FLY_REGION);
        let bootstrap_index = match get(vars::BOOTSTRAP_NODE_ID) {
            None => 0,
            Some(v) => v.parse().unwrap_or_else(|_| {
                problems.push(format!(
                    "{} is `{v}`, expected a number",
                    vars::BOOTSTRAP_NODE_ID
                ));
                0
            }),
        };
        let private_ip = match get(vars::FLY_PRIVATE_IP) {
            None => None,
            Some(v) => match v.parse::<Ipv6Addr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    problems.push(format!(
                        "{} is `{v}`, expected an IPv6 address",
                        vars::FLY_PRIVATE_IP
                    ));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(Error::Env {
                problems: problems.join("; "),
            });
        }
        Ok(Inputs {
            node_name,
            bootstrap_index,
            bootstrap_machine_id: get(vars::BOOTSTRAP_MACHINE_ID),
            zone: get(vars::ZONE),
            machine_id,
            app_name: get(vars::FLY_APP_NAME),
            region,
            private_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn inputs_read_fly_and_fks_variables() {
        let inputs = Inputs::from_lookup(lookup(&[
            ("FKS_NODE_NAME", "ctrl-1"),
            ("FKS_BOOTSTRAP_MACHINE_ID", "e784079b449483"),
            ("FKS_ZONE", "a1b2"),
            ("FLY_MACHINE_ID", "148ed726c12358"),
            ("FLY_APP_NAME", "lab-cp"),
            ("FLY_REGION", "sjc"),
            ("FLY_PRIVATE_IP", "fdaa:0:1:a7b:1:2:3:2"),
        ]))
        .unwrap();
        assert_eq!(inputs.node_name, "ctrl-1");
        assert_eq!(inputs.bootstrap_index, 0);
        assert_eq!(
            inputs.bootstrap_machine_id.as_deref(),
            Some("e784079b449483")
        );
        assert_eq!(inputs.zone.as_deref(), Some("a1b2"));
        assert_eq!(
            inputs.private_ip,
            Some("fdaa:0:1:a7b:1:2:3:2".parse().unwrap())
        );
    }

    #[test]
    fn inputs_report_every_missing_or_bad_variable() {
        let err = Inputs::from_lookup(lookup(&[
            ("FLY_PRIVATE_IP", "10.0.0.1"),
            ("FKS_BOOTSTRAP_NODE_ID", "x"),
            ("FLY_REGION", " "),
        ]))
        .unwrap_err()
        .to_string();
        for needle in [
            "FKS_NODE_NAME is not set",
            "FLY_MACHINE_ID is not set",
            "FLY_REGION is not set",
            "FKS_BOOTSTRAP_NODE_ID is `x`",
            "FLY_PRIVATE_IP is `10.0.0.1`",
        ] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
    }
}
