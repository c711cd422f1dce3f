//! Which list a kernel is checked against ([`Profile`]) and, for the cluster's own list, what
//! the cluster runs ([`Usage`]): its flannel backend, kube-proxy's mode and its add-ons, derived
//! from the cluster config. `kernel-configs/cluster.toml` says which option each of them needs.
//!
//! Pure: values in, values out.

use crate::config::{Config, FlannelBackend};

/// The requirement list a check uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// What this cluster needs, from its config (`kernel-configs/cluster.toml`): what `node
    /// init` enforces.
    Cluster,
    /// The seed README's list, every option required (a report: it includes IPVS, autofs and
    /// NFS, which a cluster may not use).
    Seed,
    /// k3s check-config's list ("Generally Necessary" required, the rest optional).
    #[value(name = "k3s-check-config")]
    K3sCheckConfig,
    /// All three lists, each in its own section.
    All,
}

impl Profile {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Cluster => "cluster",
            Profile::Seed => "seed",
            Profile::K3sCheckConfig => "k3s-check-config",
            Profile::All => "all",
        }
    }

    /// Whether the list depends on the cluster's config.
    pub fn uses_cluster(self) -> bool {
        matches!(self, Profile::Cluster | Profile::All)
    }
}

/// kube-proxy's proxy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeProxyMode {
    Iptables,
    Ipvs,
}

impl KubeProxyMode {
    /// kube-proxy's spelling (`--proxy-mode`), as `when = { kube_proxy = ... }` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            KubeProxyMode::Iptables => "iptables",
            KubeProxyMode::Ipvs => "ipvs",
        }
    }
}

/// An add-on a cluster may enable, with kernel needs of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addon {
    Longhorn,
}

impl Addon {
    /// The name `when = { addon = ... }` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Addon::Longhorn => "longhorn",
        }
    }
}

/// What a cluster runs that the kernel must support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// `FLANNEL_BACKEND`; `None` when no cluster config was given.
    pub flannel: Option<FlannelBackend>,
    pub kube_proxy: KubeProxyMode,
    pub addons: Vec<Addon>,
}

impl Usage {
    /// What the cluster of `config` runs. kube-proxy: templates/k3s set no `proxy-mode`, so
    /// k3s runs kube-proxy in its default mode, iptables; the config has no setting to change
    /// it. Add-ons: the config has no add-on settings, so none is enabled.
    pub fn of(config: &Config) -> Usage {
        Usage {
            flannel: Some(config.flannel_backend),
            kube_proxy: KubeProxyMode::Iptables,
            addons: Vec::new(),
        }
    }

    /// Without a cluster config: the flannel backend is unknown; the rest is what every
    /// cluster of this tool runs.
    pub fn unknown_cluster() -> Usage {
        Usage {
            flannel: None,
            kube_proxy: KubeProxyMode::Iptables,
            addons: Vec::new(),
        }
    }

    /// Whether a requirement limited by `when` applies to this cluster.
    pub(super) fn wants(&self, when: &When) -> bool {
        let flannel = match &when.flannel {
            None => true,
            Some(b) => self.flannel.is_some_and(|f| f.as_str() == b),
        };
        let proxy = when
            .kube_proxy
            .as_deref()
            .is_none_or(|m| m == self.kube_proxy.as_str());
        let addon = when
            .addon
            .as_deref()
            .is_none_or(|a| self.addons.iter().any(|x| x.as_str() == a));
        flannel && proxy && addon
    }

    /// What the derivation left out and why, for the report.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        match self.flannel {
            None => notes.push(
                "flannel backend unknown (no --cluster): backend options (VXLAN, WIREGUARD) not checked"
                    .to_string(),
            ),
            Some(FlannelBackend::HostGw) => notes.push(
                "FLANNEL_BACKEND=host-gw only adds routes: neither VXLAN nor WIREGUARD is needed"
                    .to_string(),
            ),
            Some(FlannelBackend::None) => notes.push(
                "FLANNEL_BACKEND=none: the CNI you install brings its own kernel requirements"
                    .to_string(),
            ),
            Some(_) => {}
        }
        if self.kube_proxy == KubeProxyMode::Iptables {
            notes.push(
                "kube-proxy runs in iptables mode (k3s's default; the templates set no proxy-mode): the IPVS options are not needed"
                    .to_string(),
            );
        }
        if !self.addons.contains(&Addon::Longhorn) {
            notes.push(
                "no add-on is enabled (the config has no add-on settings): Longhorn's NFS options are not needed"
                    .to_string(),
            );
        }
        notes.push(
            "node init runs no systemd: AUTOFS is not needed (--profile seed lists it)".to_string(),
        );
        notes
    }
}

/// `when = { ... }` of a requirement: every key given must match the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct When {
    pub flannel: Option<String>,
    pub kube_proxy: Option<String>,
    pub addon: Option<String>,
}

impl When {
    /// The first value no cluster can have, as `key value`.
    pub fn unknown_value(&self) -> Option<String> {
        const FLANNEL: [&str; 4] = ["vxlan", "host-gw", "wireguard-native", "none"];
        const PROXY: [&str; 2] = ["iptables", "ipvs"];
        const ADDON: [&str; 1] = ["longhorn"];
        let checks: [(&str, &Option<String>, &[&str]); 3] = [
            ("flannel", &self.flannel, &FLANNEL),
            ("kube_proxy", &self.kube_proxy, &PROXY),
            ("addon", &self.addon, &ADDON),
        ];
        checks.into_iter().find_map(|(key, value, known)| {
            value
                .as_deref()
                .filter(|v| !known.contains(v))
                .map(|v| format!("{key} {v:?}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn when(flannel: Option<&str>, proxy: Option<&str>, addon: Option<&str>) -> When {
        When {
            flannel: flannel.map(Into::into),
            kube_proxy: proxy.map(Into::into),
            addon: addon.map(Into::into),
        }
    }

    #[test]
    fn usage_of_a_config_takes_its_flannel_backend_and_kube_proxys_default_mode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters/fly-k3s-poc");
        let config = crate::config::load(&dir).expect("example cluster");
        let usage = Usage::of(&config);
        assert_eq!(usage.flannel, Some(config.flannel_backend));
        assert_eq!(usage.kube_proxy, KubeProxyMode::Iptables);
        assert!(usage.addons.is_empty());
    }

    #[test]
    fn when_matches_only_what_the_cluster_runs() {
        let vxlan = Usage {
            flannel: Some(FlannelBackend::Vxlan),
            ..Usage::unknown_cluster()
        };
        assert!(vxlan.wants(&When::default()));
        assert!(vxlan.wants(&when(Some("vxlan"), None, None)));
        assert!(!vxlan.wants(&when(Some("wireguard-native"), None, None)));
        assert!(vxlan.wants(&when(None, Some("iptables"), None)));
        assert!(!vxlan.wants(&when(None, Some("ipvs"), None)));
        assert!(!vxlan.wants(&when(None, None, Some("longhorn"))));
        assert!(!vxlan.wants(&when(Some("vxlan"), Some("ipvs"), None)));
        let unknown = Usage::unknown_cluster();
        assert!(!unknown.wants(&when(Some("vxlan"), None, None)));
        let longhorn = Usage {
            addons: vec![Addon::Longhorn],
            kube_proxy: KubeProxyMode::Ipvs,
            ..vxlan
        };
        assert!(longhorn.wants(&when(None, None, Some("longhorn"))));
        assert!(longhorn.wants(&when(Some("vxlan"), Some("ipvs"), None)));
    }

    #[test]
    fn notes_say_what_was_left_out() {
        let notes = Usage::unknown_cluster().notes().join("\n");
        for text in ["flannel backend unknown", "IPVS", "Longhorn", "AUTOFS"] {
            assert!(notes.contains(text), "{text}: {notes}");
        }
        let host_gw = Usage {
            flannel: Some(FlannelBackend::HostGw),
            ..Usage::unknown_cluster()
        };
        assert!(host_gw.notes()[0].contains("host-gw"));
        let ipvs_longhorn = Usage {
            kube_proxy: KubeProxyMode::Ipvs,
            addons: vec![Addon::Longhorn],
            flannel: Some(FlannelBackend::Vxlan),
        };
        let notes = ipvs_longhorn.notes().join("\n");
        assert!(
            !notes.contains("IPVS") && !notes.contains("Longhorn"),
            "{notes}"
        );
    }

    #[test]
    fn unknown_when_values_are_named() {
        assert_eq!(when(Some("vxlan"), None, None).unknown_value(), None);
        assert_eq!(
            when(None, Some("nftables"), None).unknown_value(),
            Some("kube_proxy \"nftables\"".to_string())
        );
        assert_eq!(
            when(None, None, Some("rook")).unknown_value(),
            Some("addon \"rook\"".to_string())
        );
    }
}
