//! The version-skew refusals of an upgrade (issue 11 item 2): the k3s version each existing
//! machine runs is read from the cluster config file it was given (`K3S_VERSION=` in
//! [`CLUSTER_CONFIG_PATH`]), and a desired version that skips a Kubernetes minor, goes back a
//! minor, or puts a node group ahead of its control plane is refused before anything changes.
//!
//! The rules are the Kubernetes "Version Skew Policy" (kubernetes.io/releases/version-skew-policy),
//! stated here from memory since reference/k3s.md does not cover upgrades: kube-apiserver
//! instances differ by at most one minor, so servers move one minor at a time; a kubelet is
//! never newer than the kube-apiserver; Kubernetes does not support downgrading a minor (etcd
//! data written by the newer one may not be read back). k3s follows the Kubernetes version it
//! packages (`v1.33.7+k3s1` is Kubernetes 1.33.7).
//!
//! Pure: no I/O.

use base64::Engine;

use super::{Error, CLUSTER_CONFIG_PATH};
use crate::fly::types::Machine;

/// The Kubernetes version of a k3s (or stand-in) version: `v1.33.7+k3s1` and
/// `v1.33.7+k3s-standin` are both `v1.33.7`; what a node reports as its kubeletVersion up to
/// the build tag.
pub fn kubernetes_version(version: &str) -> &str {
    version.split('+').next().unwrap_or(version)
}

/// `(major, minor)` of a k3s version such as `v1.33.7+k3s1`.
pub fn minor_of(version: &str) -> Option<(u32, u32)> {
    let rest = version.strip_prefix('v')?;
    let mut parts = rest.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The `K3S_VERSION` of the cluster config file machine `m` was given, when it has one inline.
pub fn running_version(m: &Machine) -> Option<String> {
    let file = m
        .any_config()?
        .files
        .iter()
        .find(|f| f.guest_path == CLUSTER_CONFIG_PATH)?;
    let text = base64::engine::general_purpose::STANDARD
        .decode(file.raw_value.as_ref()?)
        .ok()?;
    let text = String::from_utf8(text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("K3S_VERSION="))
        .map(|v| v.trim().to_string())
}

fn refuse(app: &str, node: &str, from: &str, to: &str, why: String) -> Error {
    Error::VersionSkew {
        app: app.to_string(),
        node: node.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        why,
    }
}

/// Refuses moving the existing `machines` (`(node, machine)`) of `app` to `desired` when a
/// node would skip a minor or go back one. `servers` is, for a node group, the control plane's
/// machines: a worker may not run a newer minor than any server.
pub fn check(
    app: &str,
    desired: &str,
    machines: &[(&str, &Machine)],
    servers: &[Machine],
) -> Result<(), Error> {
    let Some(want) = minor_of(desired) else {
        // The config loader validated it; nothing to compare otherwise.
        return Ok(());
    };
    for (node, m) in machines {
        let Some(from) = running_version(m) else {
            continue;
        };
        let Some(have) = minor_of(&from) else {
            continue;
        };
        if want.0 != have.0 {
            return Err(refuse(app, node, &from, desired, format!(
                "the major version changes ({} -> {}); Kubernetes upgrades move one minor of one major",
                have.0, want.0
            )));
        }
        if want.1 > have.1 + 1 {
            return Err(refuse(app, node, &from, desired, format!(
                "it skips Kubernetes minor(s) 1.{}..1.{}; the Kubernetes version skew policy allows one minor per upgrade: set K3S_VERSION to a v{}.{}.x release first, converge, then go on",
                have.1 + 1, want.1 - 1, have.0, have.1 + 1
            )));
        }
        if want.1 < have.1 {
            return Err(refuse(app, node, &from, desired, format!(
                "it goes back from Kubernetes 1.{} to 1.{}; Kubernetes does not support downgrading a minor (the datastore may hold what the older version cannot read): keep K3S_VERSION at v{}.{}.x or newer",
                have.1, want.1, have.0, have.1
            )));
        }
    }
    for s in servers {
        let Some(server_version) = running_version(s) else {
            continue;
        };
        if minor_of(&server_version).is_some_and(|have| want > have) {
            let server = s.metadata(super::META_NODE).unwrap_or(&s.id);
            let (node, from) = match machines.first() {
                Some((n, m)) => (n.to_string(), running_version(m).unwrap_or_default()),
                None => ("(new nodes)".to_string(), "-".to_string()),
            };
            return Err(refuse(
                app,
                &node,
                &from,
                desired,
                format!(
                    "server {server} runs {server_version}, and workers may not run a newer Kubernetes minor than the servers (version skew policy: a kubelet is never newer than kube-apiserver); upgrade the control plane first (fks-bootstrap upgrade, or -c with the new K3S_VERSION)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fly::types::{MachineConfig, MachineFile};

    fn at(version: &str) -> Machine {
        let text = format!("REGION=sjc\nK3S_VERSION={version}\n");
        Machine {
            id: "m1".into(),
            config: Some(MachineConfig {
                files: vec![MachineFile {
                    guest_path: CLUSTER_CONFIG_PATH.into(),
                    raw_value: Some(base64::engine::general_purpose::STANDARD.encode(text)),
                    ..MachineFile::default()
                }],
                ..MachineConfig::default()
            }),
            ..Machine::default()
        }
    }

    #[test]
    fn versions_are_read_from_the_cluster_config_file() {
        assert_eq!(
            running_version(&at("v1.33.7+k3s1")).as_deref(),
            Some("v1.33.7+k3s1")
        );
        assert_eq!(minor_of("v1.33.7-rc4+k3s1"), Some((1, 33)));
        assert_eq!(running_version(&Machine::default()), None);
    }

    #[test]
    fn one_minor_up_and_patches_either_way_are_allowed() {
        let m = at("v1.33.7+k3s1");
        for to in [
            "v1.34.1+k3s1",
            "v1.33.9+k3s1",
            "v1.33.2+k3s1",
            "v1.33.7+k3s2",
        ] {
            assert!(check("a", to, &[("ctrl-0", &m)], &[]).is_ok(), "{to}");
        }
    }

    #[test]
    fn a_skipped_minor_or_a_minor_downgrade_is_refused_saying_why() {
        let m = at("v1.32.3+k3s1");
        let e = check("lab-cp", "v1.34.1+k3s1", &[("ctrl-1", &m)], &[]).expect_err("skip");
        let text = e.to_string();
        assert!(
            text.contains("ctrl-1") && text.contains("skips Kubernetes minor(s) 1.33..1.33"),
            "{text}"
        );
        let e = check("lab-cp", "v1.31.9+k3s1", &[("ctrl-1", &m)], &[]).expect_err("down");
        assert!(
            e.to_string().contains("does not support downgrading"),
            "{e}"
        );
    }

    #[test]
    fn workers_may_not_pass_the_control_plane() {
        let w = at("v1.33.7+k3s1");
        let servers = [at("v1.33.7+k3s1")];
        let e = check(
            "lab-ng-a",
            "v1.34.1+k3s1",
            &[("worker-ng-a-0", &w)],
            &servers,
        )
        .expect_err("ahead of servers");
        assert!(
            e.to_string().contains("upgrade the control plane first"),
            "{e}"
        );
        let servers = [at("v1.34.1+k3s1")];
        assert!(check(
            "lab-ng-a",
            "v1.34.1+k3s1",
            &[("worker-ng-a-0", &w)],
            &servers
        )
        .is_ok());
    }
}
