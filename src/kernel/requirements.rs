//! The requirement sets (`kernel-configs/*.toml`, embedded so the binary works anywhere) and
//! the option history rules, loaded into [`Requirements`].
//!
//! Pure: the data is compiled in; nothing is read at run time.

use serde::Deserialize;

use super::profile::When;
use super::{Error, Profile, Usage, Version};

const SEED: (&str, &str) = (
    "kernel-configs/seed.toml",
    include_str!("../../kernel-configs/seed.toml"),
);
const K3S: (&str, &str) = (
    "kernel-configs/k3s-check-config.toml",
    include_str!("../../kernel-configs/k3s-check-config.toml"),
);
const CLUSTER: (&str, &str) = (
    "kernel-configs/cluster.toml",
    include_str!("../../kernel-configs/cluster.toml"),
);
const HISTORY: (&str, &str) = (
    "kernel-configs/history.toml",
    include_str!("../../kernel-configs/history.toml"),
);

/// One option a requirement set asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Without the `CONFIG_` prefix.
    pub option: String,
    /// The set it belongs to (`seed`, `k3s-check-config`, `cluster`).
    pub set: String,
    /// The group inside the set (`k3s/iptables`, `Generally Necessary`).
    pub group: String,
    /// A miss fails the check.
    pub required: bool,
    /// Only `=y` counts, even when the kernel can load modules.
    pub builtin: bool,
    /// Why the option is needed.
    pub reason: String,
    /// Options it depends on (all of them), named in the report when it is missing.
    pub depends: Vec<String>,
    /// Options of which it needs at least one, named in the report when it is missing.
    pub depends_any: Vec<String>,
}

/// A renamed, folded or removed option (`kernel-configs/history.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    /// The old option, as requirement sets name it.
    pub option: String,
    /// The first kernel version the rule applies to.
    pub since: Version,
    /// Options that satisfy it from `since` on; empty: the option no longer applies.
    pub replaced_by: Vec<String>,
    /// What changed and where (commit, version), shown in the report.
    pub reason: String,
}

/// A requirement set's name and title, in the order the report shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequirementSet {
    /// Short name used in entries and JSON (`seed`).
    pub name: String,
    /// Heading for the table.
    pub title: String,
}

/// Everything a kernel is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// The sets, in report order.
    pub sets: Vec<RequirementSet>,
    /// Every requirement of every set, in file order.
    pub items: Vec<Requirement>,
    /// The option history rules.
    pub history: Vec<HistoryRule>,
    /// What was left out and why (e.g. no flannel backend known).
    pub notes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    set: String,
    title: String,
    #[serde(default = "yes")]
    required: bool,
    #[serde(default)]
    builtin: bool,
    option: Vec<OptionEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionEntry {
    name: String,
    group: String,
    required: Option<bool>,
    builtin: Option<bool>,
    reason: String,
    #[serde(default)]
    when: When,
    #[serde(default)]
    depends: Vec<String>,
    #[serde(default)]
    depends_any: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryFile {
    rule: Vec<RuleEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    option: String,
    since: String,
    #[serde(default)]
    replaced_by: Vec<String>,
    reason: String,
}

fn yes() -> bool {
    true
}

impl Requirements {
    /// The embedded sets of `profile`; the cluster set keeps what `usage` needs.
    pub fn builtin(profile: Profile, usage: &Usage) -> Requirements {
        let sets: &[(&str, &str)] = match profile {
            Profile::Cluster => &[CLUSTER],
            Profile::Seed => &[SEED],
            Profile::K3sCheckConfig => &[K3S],
            Profile::All => &[SEED, K3S, CLUSTER],
        };
        Requirements::from_files(sets, HISTORY, usage)
            .expect("the embedded kernel-configs files are valid (checked by the unit tests)")
    }

    /// What the cluster that runs `usage` needs: the list `node init` enforces.
    pub fn cluster(usage: &Usage) -> Requirements {
        Requirements::builtin(Profile::Cluster, usage)
    }

    /// Load requirement sets and history from `(file name, TOML text)` pairs. Options with a
    /// `when` are kept only when `usage` matches it; when a set has such options, the notes
    /// say what `usage` left out.
    pub fn from_files(
        sets: &[(&str, &str)],
        history: (&str, &str),
        usage: &Usage,
    ) -> Result<Requirements, Error> {
        let mut out = Requirements {
            sets: Vec::new(),
            items: Vec::new(),
            history: Vec::new(),
            notes: Vec::new(),
        };
        for (file, text) in sets {
            let parsed: SetFile = toml::from_str(text).map_err(|source| Error::Requirements {
                file: file.to_string(),
                source,
            })?;
            out.sets.push(RequirementSet {
                name: parsed.set.clone(),
                title: parsed.title,
            });
            let mut conditional = false;
            for entry in parsed.option {
                if let Some(value) = entry.when.unknown_value() {
                    return Err(Error::RequirementsInvalid {
                        file: file.to_string(),
                        message: format!("option {}: unknown when {value}", entry.name),
                    });
                }
                conditional |= entry.when != When::default();
                if !usage.wants(&entry.when) {
                    continue;
                }
                out.items.push(Requirement {
                    option: entry.name,
                    set: parsed.set.clone(),
                    group: entry.group,
                    required: entry.required.unwrap_or(parsed.required),
                    builtin: entry.builtin.unwrap_or(parsed.builtin),
                    reason: entry.reason,
                    depends: entry.depends,
                    depends_any: entry.depends_any,
                });
            }
            if conditional {
                out.notes.extend(usage.notes());
            }
        }
        let (file, text) = history;
        let parsed: HistoryFile = toml::from_str(text).map_err(|source| Error::Requirements {
            file: file.to_string(),
            source,
        })?;
        for rule in parsed.rule {
            let since = rule.since.parse().map_err(|e| Error::RequirementsInvalid {
                file: file.to_string(),
                message: format!("rule {}: {e}", rule.option),
            })?;
            out.history.push(HistoryRule {
                option: rule.option,
                since,
                replaced_by: rule.replaced_by,
                reason: rule.reason,
            });
        }
        Ok(out)
    }

    /// The history rule for an option, if it has one.
    pub fn rule(&self, option: &str) -> Option<&HistoryRule> {
        self.history.iter().find(|r| r.option == option)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::config::FlannelBackend;
    use crate::kernel::{Addon, KubeProxyMode};

    const SEED_OPTIONS: [&str; 19] = [
        "NETFILTER_XT_MATCH_MULTIPORT",
        "NETFILTER_XT_MATCH_IPVS",
        "INET_ESP",
        "VXLAN",
        "IP_VS_RR",
        "IP_VS",
        "NET_CLS_CGROUP",
        "INET_XFRM_MODE_TRANSPORT",
        "NETFILTER_XT_TARGET_NOTRACK",
        "NETFILTER_XT_TARGET_NFLOG",
        "NETFILTER_XT_MATCH_LIMIT",
        "IP6_NF_TARGET_REJECT",
        "NETFILTER_XT_MATCH_PHYSDEV",
        "NETFILTER_XT_TARGET_TPROXY",
        "NF_TPROXY_IPV4",
        "NF_TPROXY_IPV6",
        "AUTOFS4_FS",
        "NFS_V4",
        "NFS_FS",
    ];

    fn usage(flannel: Option<FlannelBackend>) -> Usage {
        Usage {
            flannel,
            ..Usage::unknown_cluster()
        }
    }

    /// The cluster set for `usage`: (option, required).
    fn cluster(usage: &Usage) -> Vec<(String, bool)> {
        Requirements::cluster(usage)
            .items
            .into_iter()
            .map(|i| (i.option, i.required))
            .collect()
    }

    fn has(list: &[(String, bool)], option: &str) -> Option<bool> {
        list.iter().find(|(o, _)| o == option).map(|(_, r)| *r)
    }

    #[test]
    fn embedded_files_load_for_every_profile_and_backend() {
        for backend in [
            None,
            Some(FlannelBackend::Vxlan),
            Some(FlannelBackend::HostGw),
            Some(FlannelBackend::WireguardNative),
            Some(FlannelBackend::None),
        ] {
            for (profile, sets) in [
                (Profile::Cluster, &["cluster"][..]),
                (Profile::Seed, &["seed"][..]),
                (Profile::K3sCheckConfig, &["k3s-check-config"][..]),
                (Profile::All, &["seed", "k3s-check-config", "cluster"][..]),
            ] {
                let r = Requirements::builtin(profile, &usage(backend));
                assert_eq!(
                    r.sets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
                    sets
                );
                assert!(!r.items.is_empty());
                assert!(r.items.iter().all(|i| !i.reason.is_empty()));
            }
        }
    }

    #[test]
    fn seed_set_is_exactly_the_readme_list_all_required_built_in() {
        let r = Requirements::builtin(Profile::Seed, &Usage::unknown_cluster());
        assert_eq!(
            r.items
                .iter()
                .map(|i| i.option.as_str())
                .collect::<Vec<_>>(),
            SEED_OPTIONS
        );
        assert!(r.items.iter().all(|i| i.required && i.builtin));
        let groups: HashSet<&str> = r.items.iter().map(|i| i.group.as_str()).collect();
        assert_eq!(
            groups,
            HashSet::from(["k3s/iptables", "systemd", "Longhorn"])
        );
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn k3s_set_requires_generally_necessary_and_only_warns_on_optional() {
        let r = Requirements::builtin(Profile::K3sCheckConfig, &Usage::unknown_cluster());
        let find = |name: &str| {
            r.items
                .iter()
                .find(|i| i.option == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        for name in [
            "CGROUP_PIDS",
            "SECCOMP",
            "NETFILTER_XT_MATCH_STATISTIC",
            "NF_NAT",
        ] {
            assert!(find(name).required, "{name}");
            assert_eq!(find(name).group, "Generally Necessary");
        }
        for name in [
            "USER_NS",
            "IP_VS",
            "VXLAN",
            "INET_XFRM_MODE_TRANSPORT",
            "MEMCG_KMEM",
        ] {
            assert!(!find(name).required, "{name}");
        }
        assert!(r
            .items
            .iter()
            .all(|i| i.set == "k3s-check-config" && !i.builtin));
    }

    #[test]
    fn flannel_backend_decides_vxlan_or_wireguard() {
        let vx = cluster(&usage(Some(FlannelBackend::Vxlan)));
        assert_eq!(has(&vx, "VXLAN"), Some(true));
        assert_eq!(has(&vx, "WIREGUARD"), None);
        let wg = cluster(&usage(Some(FlannelBackend::WireguardNative)));
        assert_eq!(has(&wg, "WIREGUARD"), Some(true));
        assert_eq!(has(&wg, "VXLAN"), None);
        for backend in [
            None,
            Some(FlannelBackend::HostGw),
            Some(FlannelBackend::None),
        ] {
            let list = cluster(&usage(backend));
            assert_eq!(has(&list, "VXLAN"), None, "{backend:?}");
            assert_eq!(has(&list, "WIREGUARD"), None, "{backend:?}");
        }
        // Apart from the backend's own option, every backend needs the same.
        let without = |list: Vec<(String, bool)>, option: &str| -> Vec<(String, bool)> {
            list.into_iter().filter(|(o, _)| o != option).collect()
        };
        assert_eq!(without(vx, "VXLAN"), without(wg, "WIREGUARD"));
    }

    #[test]
    fn iptables_mode_needs_statistic_and_no_ipvs_option() {
        let list = cluster(&usage(Some(FlannelBackend::Vxlan)));
        assert_eq!(has(&list, "NETFILTER_XT_MATCH_STATISTIC"), Some(true));
        for ipvs in ["IP_VS", "IP_VS_RR", "NETFILTER_XT_MATCH_IPVS"] {
            assert_eq!(has(&list, ipvs), None, "{ipvs}");
        }
        let ipvs = cluster(&Usage {
            kube_proxy: KubeProxyMode::Ipvs,
            ..usage(Some(FlannelBackend::Vxlan))
        });
        for option in ["IP_VS", "IP_VS_RR", "NETFILTER_XT_MATCH_IPVS"] {
            assert_eq!(has(&ipvs, option), Some(true), "{option}");
        }
        assert_eq!(has(&ipvs, "NETFILTER_XT_MATCH_STATISTIC"), None);
    }

    #[test]
    fn nfs_only_for_longhorn_and_never_autofs_or_ipsec() {
        let list = cluster(&usage(Some(FlannelBackend::Vxlan)));
        for absent in [
            "NFS_FS",
            "NFS_V4",
            "AUTOFS4_FS",
            "AUTOFS_FS",
            "INET_ESP",
            "INET_XFRM_MODE_TRANSPORT",
            "NET_CLS_CGROUP",
        ] {
            assert_eq!(has(&list, absent), None, "{absent}");
        }
        let longhorn = cluster(&Usage {
            addons: vec![Addon::Longhorn],
            ..usage(Some(FlannelBackend::Vxlan))
        });
        assert_eq!(has(&longhorn, "NFS_FS"), Some(true));
        assert_eq!(has(&longhorn, "NFS_V4"), Some(true));
        assert_eq!(has(&longhorn, "AUTOFS_FS"), None);
    }

    #[test]
    fn cluster_set_requires_containers_and_ipv6_and_recommends_limits() {
        let list = cluster(&usage(Some(FlannelBackend::Vxlan)));
        for required in [
            "CGROUP_PIDS",
            "OVERLAY_FS",
            "BRIDGE_NETFILTER",
            "IP6_NF_NAT",
            "IP6_NF_TARGET_MASQUERADE",
            "IP_NF_NAT",
            "IP_SET",
        ] {
            assert_eq!(has(&list, required), Some(true), "{required}");
        }
        for recommended in ["CFS_BANDWIDTH", "NETFILTER_XT_TARGET_NFLOG", "USER_NS"] {
            assert_eq!(has(&list, recommended), Some(false), "{recommended}");
        }
        let r = Requirements::cluster(&usage(Some(FlannelBackend::Vxlan)));
        assert!(r.items.iter().all(|i| i.builtin && i.set == "cluster"));
    }

    #[test]
    fn cluster_notes_say_what_the_usage_left_out() {
        let r = Requirements::cluster(&Usage::unknown_cluster());
        assert!(
            r.notes[0].contains("flannel backend unknown"),
            "{:?}",
            r.notes
        );
        assert!(r.notes.iter().any(|n| n.contains("IPVS")));
        let r = Requirements::builtin(Profile::K3sCheckConfig, &Usage::unknown_cluster());
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn no_set_lists_an_option_twice_and_history_has_one_rule_per_option() {
        let r = Requirements::builtin(
            Profile::All,
            &Usage {
                kube_proxy: KubeProxyMode::Ipvs,
                addons: vec![Addon::Longhorn],
                flannel: Some(FlannelBackend::Vxlan),
            },
        );
        let mut seen = HashSet::new();
        for i in &r.items {
            assert!(
                seen.insert((i.set.clone(), i.option.clone())),
                "{} twice in {}",
                i.option,
                i.set
            );
        }
        let mut rules = HashSet::new();
        for rule in &r.history {
            assert!(rules.insert(rule.option.clone()), "{} twice", rule.option);
        }
        // Every history rule is about an option some set asks for, so none is dead data.
        for rule in &r.history {
            assert!(
                r.items.iter().any(|i| i.option == rule.option),
                "{}",
                rule.option
            );
        }
    }

    #[test]
    fn history_gates_match_reference_k3s_section_6() {
        let r = Requirements::builtin(Profile::All, &Usage::unknown_cluster());
        let gate = |o: &str| {
            let rule = r.rule(o).unwrap_or_else(|| panic!("no rule for {o}"));
            (rule.since, rule.replaced_by.clone())
        };
        let v = Version::new;
        assert_eq!(gate("AUTOFS4_FS"), (v(4, 18, 0), vec!["AUTOFS_FS".into()]));
        assert_eq!(
            gate("INET_XFRM_MODE_TRANSPORT"),
            (v(5, 3, 0), vec!["XFRM".into()])
        );
        assert_eq!(gate("MEMCG_KMEM"), (v(4, 6, 0), vec![]));
        assert_eq!(gate("DEVPTS_MULTIPLE_INSTANCES"), (v(4, 8, 0), vec![]));
        assert_eq!(gate("RESOURCE_COUNTERS"), (v(3, 19, 0), vec![]));
        assert_eq!(
            gate("NETPRIO_CGROUP"),
            (v(3, 14, 0), vec!["CGROUP_NET_PRIO".into()])
        );
        assert_eq!(gate("NF_NAT_IPV4"), (v(5, 1, 0), vec!["NF_NAT".into()]));
        assert_eq!(gate("NF_NAT_NEEDED"), (v(5, 2, 0), vec!["NF_NAT".into()]));
        assert_eq!(gate("MEMCG_SWAP_ENABLED"), (v(5, 8, 0), vec![]));
        assert_eq!(gate("MEMCG_SWAP"), (v(6, 1, 0), vec![]));
    }

    #[test]
    fn malformed_data_is_an_error_naming_the_file() {
        let any = Usage::unknown_cluster();
        let bad_when = (
            "x.toml",
            "set = \"x\"\ntitle = \"x\"\n[[option]]\nname = \"A\"\ngroup = \"g\"\nreason = \"r\"\nwhen = { flannel = \"carrier-pigeon\" }\n",
        );
        let err = Requirements::from_files(&[bad_when], HISTORY, &any).expect_err("rejects");
        assert!(
            err.to_string().contains("x.toml") && err.to_string().contains("carrier-pigeon"),
            "{err}"
        );
        let bad_key = (
            "w.toml",
            "set = \"x\"\ntitle = \"x\"\n[[option]]\nname = \"A\"\ngroup = \"g\"\nreason = \"r\"\nwhen = { systemd = \"yes\" }\n",
        );
        let err = Requirements::from_files(&[bad_key], HISTORY, &any).expect_err("rejects");
        assert!(err.to_string().contains("w.toml"), "{err}");
        let bad_toml = ("y.toml", "set = ");
        let err = Requirements::from_files(&[bad_toml], HISTORY, &any).expect_err("rejects");
        assert!(err.to_string().contains("y.toml"), "{err}");
        let bad_since = (
            "h.toml",
            "[[rule]]\noption = \"A\"\nsince = \"soon\"\nreason = \"r\"\n",
        );
        let err = Requirements::from_files(&[SEED], bad_since, &any).expect_err("rejects");
        assert!(err.to_string().contains("h.toml"), "{err}");
    }
}
