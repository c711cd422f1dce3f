//! The requirement sets (`kernel-configs/*.toml`, embedded so the binary works anywhere) and
//! the option history rules, loaded into [`Requirements`].
//!
//! Pure: the data is compiled in; nothing is read at run time.

use serde::Deserialize;

use super::{Error, Version};
use crate::config::FlannelBackend;

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
    #[serde(default = "always")]
    when: String,
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

fn always() -> String {
    "always".to_string()
}

/// Which cluster-dependent options to include.
fn wanted(when: &str, flannel: Option<FlannelBackend>) -> bool {
    when == "always" || flannel.is_some_and(|b| b.as_str() == when)
}

const WHEN_VALUES: [&str; 5] = ["always", "vxlan", "host-gw", "wireguard-native", "none"];

impl Requirements {
    /// The embedded sets: the seed README's list, k3s check-config's, and the cluster's (the
    /// IPv6-first items always, the flannel backend's when it is known).
    pub fn builtin(flannel: Option<FlannelBackend>) -> Requirements {
        Requirements::from_files(&[SEED, K3S, CLUSTER], HISTORY, flannel)
            .expect("the embedded kernel-configs files are valid (checked by the unit tests)")
    }

    /// Load requirement sets and history from `(file name, TOML text)` pairs.
    pub fn from_files(
        sets: &[(&str, &str)],
        history: (&str, &str),
        flannel: Option<FlannelBackend>,
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
            for entry in parsed.option {
                if !WHEN_VALUES.contains(&entry.when.as_str()) {
                    return Err(Error::RequirementsInvalid {
                        file: file.to_string(),
                        message: format!("option {}: unknown when {:?}", entry.name, entry.when),
                    });
                }
                if !wanted(&entry.when, flannel) {
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
        }
        match flannel {
            None => out.notes.push(
                "flannel backend unknown (no --cluster): backend options (WIREGUARD, VXLAN) not checked"
                    .to_string(),
            ),
            Some(FlannelBackend::HostGw) => out.notes.push(
                "flannel host-gw only adds routes: no kernel option beyond IPv6 routing".to_string(),
            ),
            Some(FlannelBackend::None) => out.notes.push(
                "flannel backend none: the CNI you install brings its own kernel requirements"
                    .to_string(),
            ),
            Some(_) => {}
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

    #[test]
    fn embedded_files_load_for_every_backend() {
        for backend in [
            None,
            Some(FlannelBackend::Vxlan),
            Some(FlannelBackend::HostGw),
            Some(FlannelBackend::WireguardNative),
            Some(FlannelBackend::None),
        ] {
            let r = Requirements::builtin(backend);
            assert_eq!(
                r.sets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
                ["seed", "k3s-check-config", "cluster"]
            );
            assert!(!r.items.is_empty());
            assert!(r.items.iter().all(|i| !i.reason.is_empty()));
        }
    }

    #[test]
    fn seed_set_is_exactly_the_readme_list_all_required_built_in() {
        let r = Requirements::builtin(None);
        let seed: Vec<&Requirement> = r.items.iter().filter(|i| i.set == "seed").collect();
        assert_eq!(
            seed.iter().map(|i| i.option.as_str()).collect::<Vec<_>>(),
            SEED_OPTIONS
        );
        assert!(seed.iter().all(|i| i.required && i.builtin));
        let groups: HashSet<&str> = seed.iter().map(|i| i.group.as_str()).collect();
        assert_eq!(
            groups,
            HashSet::from(["k3s/iptables", "systemd", "Longhorn"])
        );
    }

    #[test]
    fn k3s_set_requires_generally_necessary_and_only_warns_on_optional() {
        let r = Requirements::builtin(None);
        let k3s: Vec<&Requirement> = r
            .items
            .iter()
            .filter(|i| i.set == "k3s-check-config")
            .collect();
        let find = |name: &str| {
            k3s.iter()
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
        assert!(k3s.iter().all(|i| !i.builtin));
    }

    #[test]
    fn cluster_set_follows_the_flannel_backend() {
        let names = |b: Option<FlannelBackend>| -> Vec<String> {
            Requirements::builtin(b)
                .items
                .into_iter()
                .filter(|i| i.set == "cluster")
                .map(|i| i.option)
                .collect()
        };
        let ipv6 = [
            "IPV6",
            "IP6_NF_IPTABLES",
            "IP6_NF_FILTER",
            "IP6_NF_NAT",
            "IP6_NF_TARGET_MASQUERADE",
        ];
        assert_eq!(names(None), ipv6);
        assert_eq!(names(Some(FlannelBackend::HostGw)), ipv6);
        let wg = names(Some(FlannelBackend::WireguardNative));
        assert!(wg.contains(&"WIREGUARD".to_string()) && !wg.contains(&"VXLAN".to_string()));
        let vx = names(Some(FlannelBackend::Vxlan));
        assert!(vx.contains(&"VXLAN".to_string()) && !vx.contains(&"WIREGUARD".to_string()));
        assert!(Requirements::builtin(None).notes[0].contains("flannel backend unknown"));
    }

    #[test]
    fn no_set_lists_an_option_twice_and_history_has_one_rule_per_option() {
        let r = Requirements::builtin(Some(FlannelBackend::Vxlan));
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
        let r = Requirements::builtin(None);
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
        let bad_when = (
            "x.toml",
            "set = \"x\"\ntitle = \"x\"\n[[option]]\nname = \"A\"\ngroup = \"g\"\nreason = \"r\"\nwhen = \"flannel\"\n",
        );
        let err = Requirements::from_files(&[bad_when], HISTORY, None).expect_err("rejects");
        assert!(err.to_string().contains("x.toml"), "{err}");
        let bad_toml = ("y.toml", "set = ");
        let err = Requirements::from_files(&[bad_toml], HISTORY, None).expect_err("rejects");
        assert!(err.to_string().contains("y.toml"), "{err}");
        let bad_since = (
            "h.toml",
            "[[rule]]\noption = \"A\"\nsince = \"soon\"\nreason = \"r\"\n",
        );
        let err = Requirements::from_files(&[SEED], bad_since, None).expect_err("rejects");
        assert!(err.to_string().contains("h.toml"), "{err}");
    }
}
