//! Judging a [`KernelConfig`] against [`Requirements`]: one [`Entry`] per requirement, with a
//! [`Status`], whether it is satisfied, and a note explaining renamed, removed or module-built
//! options and unmet dependencies.
//!
//! Pure: values in, a [`Report`] out. Rendering is the CLI's job.

use serde::Serialize;

use super::{HistoryRule, KernelConfig, Requirement, Requirements, Value};

/// How an option is present in the kernel being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Built in (`=y`, or another set value).
    Ok,
    /// Built as a module (`=m`).
    Module,
    /// `is not set`, `=n`, or not in the config at all.
    Missing,
    /// The option does not exist on this kernel version (history.toml).
    NotApplicable,
}

impl Status {
    /// The word used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Module => "module",
            Status::Missing => "missing",
            Status::NotApplicable => "not_applicable",
        }
    }

    /// Higher is better: ok > module > missing.
    fn rank(self) -> u8 {
        match self {
            Status::Missing => 0,
            Status::Module => 1,
            Status::Ok | Status::NotApplicable => 2,
        }
    }
}

/// The verdict on one requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Without the `CONFIG_` prefix.
    pub option: String,
    /// The requirement set (`seed`, `k3s-check-config`, `cluster`).
    pub set: String,
    /// The group inside the set.
    pub group: String,
    pub required: bool,
    /// Only `=y` counts for this requirement.
    pub builtin: bool,
    pub status: Status,
    /// Does the kernel meet this requirement (whether or not it is required)?
    pub satisfied: bool,
    /// Why the option is needed.
    pub reason: String,
    /// How the verdict was reached when it is not plain (history, modules, dependencies).
    pub note: Option<String>,
}

/// The verdicts, in requirement order, plus kernel-wide notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub entries: Vec<Entry>,
    /// Why `=m` does not count on this kernel, when it does not.
    pub modules_note: Option<String>,
    /// Other things the reader must know (unknown version, options not checked).
    pub notes: Vec<String>,
}

impl Report {
    /// Every required option is satisfied.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The required options that are not satisfied.
    pub fn failures(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.required && !e.satisfied)
    }

    /// How many entries have each status: (ok, module, missing, not_applicable).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let count = |s: Status| self.entries.iter().filter(|e| e.status == s).count();
        (
            count(Status::Ok),
            count(Status::Module),
            count(Status::Missing),
            count(Status::NotApplicable),
        )
    }
}

/// Judge every requirement against the kernel config.
pub fn check(config: &KernelConfig, requirements: &Requirements) -> Report {
    let mut notes = requirements.notes.clone();
    if config.version.is_none() {
        notes.push(
            "kernel version unknown (no header): renamed options accept either name, removed ones are not_applicable when absent"
                .to_string(),
        );
    }
    let entries = requirements
        .items
        .iter()
        .map(|req| judge(config, req, requirements.rule(&req.option)))
        .collect();
    Report {
        entries,
        modules_note: config.modules.reason(),
        notes,
    }
}

fn plain_status(config: &KernelConfig, option: &str) -> Status {
    match config.value(option) {
        Value::Yes | Value::Text(_) => Status::Ok,
        Value::Module => Status::Module,
        Value::No => Status::Missing,
    }
}

/// The worst status among `options` (all are needed).
fn all_of(config: &KernelConfig, options: &[String]) -> Status {
    options
        .iter()
        .map(|o| plain_status(config, o))
        .min_by_key(|s| s.rank())
        .unwrap_or(Status::Ok)
}

fn judge(config: &KernelConfig, req: &Requirement, rule: Option<&HistoryRule>) -> Entry {
    let own = plain_status(config, &req.option);
    let mut notes: Vec<String> = Vec::new();
    // `Some(true)`: the kernel is at or past the rule's version; `None`: version unknown.
    let applies = rule.map(|r| config.version.map(|v| v >= r.since));
    let status = match (rule, applies) {
        (Some(rule), Some(Some(true) | None)) if rule.replaced_by.is_empty() => {
            if applies == Some(None) && own != Status::Missing {
                own
            } else {
                notes.push(format!(
                    "not applicable on {}: {}",
                    kernel_name(config),
                    rule.reason
                ));
                Status::NotApplicable
            }
        }
        (Some(rule), Some(Some(true) | None)) => {
            let replacement = all_of(config, &rule.replaced_by);
            let names = rule.replaced_by.join(" + ");
            if own.rank() >= replacement.rank() && own != Status::Missing {
                notes.push(format!("set under its old name; {}", rule.reason));
                own
            } else {
                notes.push(format!("judged by {names}: {}", rule.reason));
                replacement
            }
        }
        _ => own,
    };
    let loadable = config.modules.loadable();
    let satisfied = match status {
        Status::Ok | Status::NotApplicable => true,
        Status::Module => loadable && !req.builtin,
        Status::Missing => false,
    };
    if status == Status::Module {
        if !loadable {
            notes.push("built as a module, which this kernel cannot load".to_string());
        } else if req.builtin {
            notes.push(
                "built as a module; Fly machines cannot load modules, build it in (=y)".to_string(),
            );
        }
    }
    if status == Status::Missing {
        let unmet: Vec<&str> = req
            .depends
            .iter()
            .filter(|d| plain_status(config, d) == Status::Missing)
            .map(String::as_str)
            .collect();
        if !unmet.is_empty() {
            notes.push(format!(
                "needs {} (missing), so it cannot be selected",
                unmet.join(", ")
            ));
        }
        if !req.depends_any.is_empty()
            && req
                .depends_any
                .iter()
                .all(|d| plain_status(config, d) == Status::Missing)
        {
            notes.push(format!(
                "needs one of {} (all missing), so it cannot be selected",
                req.depends_any.join(", ")
            ));
        }
        if notes.is_empty() && !config.mentions(&req.option) {
            notes.push("not offered by this kernel's config (absent from the file)".to_string());
        }
    }
    Entry {
        option: req.option.clone(),
        set: req.set.clone(),
        group: req.group.clone(),
        required: req.required,
        builtin: req.builtin,
        status,
        satisfied,
        reason: req.reason.clone(),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

fn kernel_name(config: &KernelConfig) -> String {
    match config.version {
        Some(v) => format!("Linux {v}"),
        None => "this kernel (version unknown)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FlannelBackend;
    use crate::kernel::{Modules, Profile, Usage, Version};

    fn req(option: &str, required: bool, builtin: bool) -> Requirement {
        Requirement {
            option: option.into(),
            set: "test".into(),
            group: "g".into(),
            required,
            builtin,
            reason: "because".into(),
            depends: vec![],
            depends_any: vec![],
        }
    }

    fn reqs(items: Vec<Requirement>) -> Requirements {
        Requirements {
            sets: vec![],
            items,
            history: Requirements::builtin(Profile::Seed, &Usage::unknown_cluster()).history,
            notes: vec![],
        }
    }

    fn kernel(version: &str, body: &str) -> KernelConfig {
        let header = if version.is_empty() {
            String::new()
        } else {
            format!("# Linux/x86 {version} Kernel Configuration\n")
        };
        KernelConfig::parse(&format!("{header}CONFIG_MODULES=y\n{body}")).expect("test config")
    }

    fn one(config: &KernelConfig, option: &str) -> Entry {
        let report = check(config, &reqs(vec![req(option, true, false)]));
        report.entries.into_iter().next().expect("one entry")
    }

    #[test]
    fn built_in_option_is_ok() {
        let e = one(&kernel("6.1.0", "CONFIG_VXLAN=y\n"), "VXLAN");
        assert_eq!((e.status, e.satisfied, e.note), (Status::Ok, true, None));
    }

    #[test]
    fn not_set_and_absent_options_are_missing() {
        let c = kernel("6.1.0", "# CONFIG_VXLAN is not set\n");
        let e = one(&c, "VXLAN");
        assert_eq!(
            (e.status, e.satisfied, e.note),
            (Status::Missing, false, None)
        );
        let e = one(&c, "WIREGUARD");
        assert_eq!((e.status, e.satisfied), (Status::Missing, false));
        assert!(e.note.expect("note").contains("absent"));
    }

    #[test]
    fn module_satisfies_a_non_builtin_requirement_on_a_modular_kernel() {
        let c = kernel("6.1.0", "CONFIG_IP_VS=m\n");
        let report = check(&c, &reqs(vec![req("IP_VS", true, false)]));
        assert_eq!(report.entries[0].status, Status::Module);
        assert!(report.entries[0].satisfied);
        assert!(report.passed());
        assert_eq!(report.modules_note, None);
    }

    #[test]
    fn module_fails_a_builtin_requirement_even_on_a_modular_kernel() {
        let c = kernel("6.1.0", "CONFIG_IP_VS=m\n");
        let report = check(&c, &reqs(vec![req("IP_VS", true, true)]));
        assert_eq!(report.entries[0].status, Status::Module);
        assert!(!report.entries[0].satisfied);
        assert!(!report.passed());
        assert!(report.entries[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("=y"));
    }

    #[test]
    fn module_counts_as_missing_when_config_modules_is_not_set() {
        let c = KernelConfig::parse(
            "# Linux/x86 6.1.0 Kernel Configuration\n# CONFIG_MODULES is not set\nCONFIG_IP_VS=m\n",
        )
        .expect("parses");
        let report = check(&c, &reqs(vec![req("IP_VS", true, false)]));
        assert_eq!(report.entries[0].status, Status::Module);
        assert!(!report.entries[0].satisfied);
        assert!(!report.passed());
        assert_eq!(
            report.modules_note.as_deref(),
            Some("kernel cannot load modules: CONFIG_MODULES is not set")
        );
        assert_eq!(report.failures().count(), 1);
    }

    #[test]
    fn module_counts_as_missing_when_no_modules_are_shipped() {
        let mut c = kernel("6.1.0", "CONFIG_IP_VS=m\n");
        c.modules = Modules::NotShipped {
            dir: "/lib/modules/6.1.0".into(),
        };
        let report = check(&c, &reqs(vec![req("IP_VS", true, false)]));
        assert!(!report.passed());
        assert!(report
            .modules_note
            .expect("note")
            .contains("/lib/modules/6.1.0 does not exist"));
    }

    #[test]
    fn optional_miss_does_not_fail_the_report() {
        let c = kernel("6.1.0", "CONFIG_A=y\n");
        let report = check(
            &c,
            &reqs(vec![req("A", true, false), req("B", false, false)]),
        );
        assert_eq!(report.entries[1].status, Status::Missing);
        assert!(report.passed());
        assert_eq!(report.counts(), (1, 0, 1, 0));
    }

    #[test]
    fn unmet_dependency_is_missing_with_a_hint() {
        let c = kernel("6.18.44", "# CONFIG_IP_VS is not set\n");
        let mut r = req("NETFILTER_XT_MATCH_IPVS", true, true);
        r.depends = vec!["IP_VS".into()];
        let mut notrack = req("NETFILTER_XT_TARGET_NOTRACK", true, true);
        notrack.depends_any = vec!["IP_NF_RAW".into(), "IP6_NF_RAW".into()];
        let report = check(&c, &reqs(vec![r, notrack]));
        assert_eq!(report.entries[0].status, Status::Missing);
        assert!(report.entries[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("needs IP_VS"));
        assert_eq!(report.entries[1].status, Status::Missing);
        assert!(report.entries[1]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("needs one of IP_NF_RAW, IP6_NF_RAW"));
    }

    // History rules (reference/k3s.md §6), each on a kernel before and after its version.

    #[test]
    fn autofs4_is_judged_by_its_own_name_before_4_18() {
        let c = kernel(
            "4.17.0",
            "# CONFIG_AUTOFS4_FS is not set\nCONFIG_AUTOFS_FS=y\n",
        );
        assert_eq!(one(&c, "AUTOFS4_FS").status, Status::Missing);
        let c = kernel("4.17.0", "CONFIG_AUTOFS4_FS=y\n");
        assert_eq!(one(&c, "AUTOFS4_FS").status, Status::Ok);
    }

    #[test]
    fn autofs_fs_satisfies_autofs4_from_4_18() {
        let c = kernel("6.18.44", "CONFIG_AUTOFS_FS=y\n");
        let e = one(&c, "AUTOFS4_FS");
        assert_eq!((e.status, e.satisfied), (Status::Ok, true));
        assert!(e.note.expect("note").contains("judged by AUTOFS_FS"));
        // Kernels 4.18..6.x still carry the old name as an alias: accepted too.
        let c = kernel("5.10.0", "CONFIG_AUTOFS4_FS=y\nCONFIG_AUTOFS_FS=y\n");
        assert_eq!(one(&c, "AUTOFS4_FS").status, Status::Ok);
        let c = kernel("6.18.44", "# CONFIG_AUTOFS_FS is not set\n");
        assert_eq!(one(&c, "AUTOFS4_FS").status, Status::Missing);
    }

    #[test]
    fn xfrm_transport_mode_is_its_own_option_before_5_3() {
        let c = kernel("5.2.0", "CONFIG_XFRM=y\n");
        assert_eq!(one(&c, "INET_XFRM_MODE_TRANSPORT").status, Status::Missing);
        let c = kernel("4.19.0", "CONFIG_INET_XFRM_MODE_TRANSPORT=y\n");
        assert_eq!(one(&c, "INET_XFRM_MODE_TRANSPORT").status, Status::Ok);
    }

    #[test]
    fn xfrm_transport_mode_is_judged_by_xfrm_from_5_3() {
        let c = kernel("5.3.0", "CONFIG_XFRM=y\n");
        let e = one(&c, "INET_XFRM_MODE_TRANSPORT");
        assert_eq!(e.status, Status::Ok);
        assert!(e.note.expect("note").contains("judged by XFRM"));
        let c = kernel("6.18.44", "# CONFIG_XFRM is not set\n");
        assert_eq!(one(&c, "INET_XFRM_MODE_TRANSPORT").status, Status::Missing);
    }

    #[test]
    fn removed_options_are_not_applicable_from_their_version() {
        let cases = [
            ("MEMCG_KMEM", "4.5.7", "4.6.0"),
            ("DEVPTS_MULTIPLE_INSTANCES", "4.7.10", "4.8.0"),
            ("RESOURCE_COUNTERS", "3.18.140", "3.19.0"),
            ("MEMCG_SWAP_ENABLED", "5.7.19", "5.8.0"),
            ("MEMCG_SWAP", "6.0.19", "6.1.0"),
        ];
        for (option, old, new) in cases {
            let e = one(&kernel(old, ""), option);
            assert_eq!(e.status, Status::Missing, "{option} on {old}");
            let e = one(&kernel(old, &format!("CONFIG_{option}=y\n")), option);
            assert_eq!(e.status, Status::Ok, "{option} on {old}");
            let e = one(&kernel(new, ""), option);
            assert_eq!(e.status, Status::NotApplicable, "{option} on {new}");
            assert!(e.satisfied);
            assert!(
                e.note
                    .as_deref()
                    .unwrap_or("")
                    .contains("not applicable on Linux"),
                "{option}: {:?}",
                e.note
            );
        }
    }

    #[test]
    fn renamed_and_folded_options_use_the_new_name_from_their_version() {
        let cases = [
            ("NETPRIO_CGROUP", "CGROUP_NET_PRIO", "3.13.11", "3.14.0"),
            ("NF_NAT_IPV4", "NF_NAT", "5.0.21", "5.1.0"),
            ("NF_NAT_NEEDED", "NF_NAT", "5.1.21", "5.2.0"),
        ];
        for (old_name, new_name, old, new) in cases {
            let body = format!("CONFIG_{new_name}=y\n");
            assert_eq!(
                one(&kernel(old, &body), old_name).status,
                Status::Missing,
                "{old_name} on {old}"
            );
            let e = one(&kernel(new, &body), old_name);
            assert_eq!(e.status, Status::Ok, "{old_name} on {new}");
            assert!(e
                .note
                .expect("note")
                .contains(&format!("judged by {new_name}")));
            assert_eq!(one(&kernel(new, ""), old_name).status, Status::Missing);
        }
    }

    #[test]
    fn unknown_version_accepts_either_name_and_says_so() {
        let c = kernel("", "CONFIG_AUTOFS_FS=y\nCONFIG_MEMCG_KMEM=y\n");
        assert_eq!(c.version, None);
        let report = check(
            &c,
            &reqs(vec![
                req("AUTOFS4_FS", true, true),
                req("MEMCG_KMEM", true, false),
                req("DEVPTS_MULTIPLE_INSTANCES", true, false),
            ]),
        );
        let statuses: Vec<Status> = report.entries.iter().map(|e| e.status).collect();
        assert_eq!(statuses, [Status::Ok, Status::Ok, Status::NotApplicable]);
        assert!(report.notes.iter().any(|n| n.contains("version unknown")));
    }

    #[test]
    fn report_for_builtin_requirements_names_backend_notes() {
        let c = kernel("6.18.44", "CONFIG_WIREGUARD=y\n");
        let usage = Usage {
            flannel: Some(FlannelBackend::WireguardNative),
            ..Usage::unknown_cluster()
        };
        let report = check(&c, &Requirements::cluster(&usage));
        let wg = report
            .entries
            .iter()
            .find(|e| e.set == "cluster" && e.option == "WIREGUARD")
            .expect("wireguard entry");
        assert_eq!(wg.status, Status::Ok);
        assert!(
            !report.notes.iter().any(|n| n.contains("flannel")),
            "{:?}",
            report.notes
        );
        assert!(report.notes.iter().any(|n| n.contains("IPVS")));
        assert_eq!(c.version, Some(Version::new(6, 18, 44)));
    }
}
