//! Kernel config verification: does a kernel `.config` (a file, or the running kernel's
//! `/proc/config.gz`) have the options a cluster needs?
//!
//! The requirements are data (`kernel-configs/*.toml`, embedded at build time). The cluster's
//! own list follows from what the cluster runs ([`Usage`]: flannel backend, kube-proxy mode,
//! add-ons); the seed README's and k3s check-config's lists stay available as reports
//! ([`Profile`]). They are judged against the kernel being checked: renamed and removed options
//! follow `kernel-configs/history.toml` (reference/k3s.md §6), and on a kernel that cannot load
//! modules `=m` does not count.
//!
//! Pure except [`source`], which reads the files it is pointed at (and, for the running kernel,
//! `/proc/sys/kernel/osrelease` and `/lib/modules/<release>`), and [`probe`], which asks the
//! running kernel when its config cannot be read. No printing here: the CLI renders the
//! [`Report`].

mod check;
mod parse;
pub mod probe;
mod profile;
mod requirements;
pub mod source;

use std::path::PathBuf;

pub use check::{check, Entry, Report, Status};
pub use parse::{KernelConfig, Modules, Value, Version};
pub use profile::{Addon, KubeProxyMode, Profile, Usage};
pub use requirements::{HistoryRule, Requirement, RequirementSet, Requirements};

/// Why a kernel config could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("reading kernel config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file starts with the gzip magic bytes but does not decompress.
    #[error("decompressing gzip kernel config {path}")]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The (decompressed) file is not UTF-8 text.
    #[error("kernel config {path} is not text")]
    NotText {
        path: PathBuf,
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// A line that is neither a comment, blank, `CONFIG_X=value` nor `# CONFIG_X is not set`.
    #[error("line {line}: not a kernel config line: {text:?}")]
    Syntax { line: usize, text: String },
    /// Not a single `CONFIG_` line: whatever this is, it is not a kernel config.
    #[error("no CONFIG_ options found")]
    Empty,
    /// A parse error, with the file it came from.
    #[error("parsing kernel config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// The running kernel's release could not be read.
    #[error("reading the kernel release from {path}")]
    Release {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No config was given and none of the usual places has one.
    #[error("no kernel config found (tried {}); pass --kernel-config PATH", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound { tried: Vec<PathBuf> },
    /// A requirements data file is malformed.
    #[error("requirements file {file}")]
    Requirements {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    /// A requirements data file parses but says something impossible (bad version, bad `when`).
    #[error("requirements file {file}: {message}")]
    RequirementsInvalid { file: String, message: String },
}

/// A kernel config from tests/fixtures/kernel/: `firecracker-6.18.44-x86_64.config` (a
/// Firecracker guest build -fc-v669, with AUTOFS) and `firecracker-6.18.44-fc-v1272-x86_64.config`
/// (another build of the same version, without AUTOFS), both copied from machines like this one.
#[cfg(test)]
fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernel")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FlannelBackend;

    const V669: &str = "firecracker-6.18.44-x86_64.config";
    const V1272: &str = "firecracker-6.18.44-fc-v1272-x86_64.config";

    fn fixture(name: &str) -> KernelConfig {
        source::read_file(&fixture_path(name)).expect("fixture reads")
    }

    fn usage(flannel: FlannelBackend) -> Usage {
        Usage {
            flannel: Some(flannel),
            ..Usage::unknown_cluster()
        }
    }

    fn failing(report: &Report) -> Vec<&str> {
        report.failures().map(|e| e.option.as_str()).collect()
    }

    fn missing_recommended(report: &Report) -> Vec<&str> {
        report
            .entries
            .iter()
            .filter(|e| !e.required && !e.satisfied)
            .map(|e| e.option.as_str())
            .collect()
    }

    /// Every seed option on the -fc-v669 6.18.44 Firecracker config (checked against the
    /// fixture itself; reference/k3s.md §7 describes the upstream CI config, which differs:
    /// this build has MULTIPORT, NOTRACK, NFLOG, LIMIT, PHYSDEV and TPROXY but no NFS).
    #[test]
    fn fixture_verdict_for_every_seed_option() {
        let config = fixture(V669);
        assert_eq!(config.version, Some(Version::new(6, 18, 44)));
        assert_eq!(config.modules, Modules::Disabled);
        let report = check(
            &config,
            &Requirements::builtin(Profile::Seed, &Usage::unknown_cluster()),
        );
        let expected = [
            ("NETFILTER_XT_MATCH_MULTIPORT", Status::Ok, None),
            (
                "NETFILTER_XT_MATCH_IPVS",
                Status::Missing,
                Some("needs IP_VS"),
            ),
            ("INET_ESP", Status::Missing, None),
            ("VXLAN", Status::Ok, None),
            ("IP_VS_RR", Status::Missing, Some("needs IP_VS")),
            ("IP_VS", Status::Missing, None),
            ("NET_CLS_CGROUP", Status::Missing, None),
            (
                "INET_XFRM_MODE_TRANSPORT",
                Status::Ok,
                Some("judged by XFRM"),
            ),
            ("NETFILTER_XT_TARGET_NOTRACK", Status::Ok, None),
            ("NETFILTER_XT_TARGET_NFLOG", Status::Ok, None),
            ("NETFILTER_XT_MATCH_LIMIT", Status::Ok, None),
            ("IP6_NF_TARGET_REJECT", Status::Ok, None),
            ("NETFILTER_XT_MATCH_PHYSDEV", Status::Ok, None),
            ("NETFILTER_XT_TARGET_TPROXY", Status::Ok, None),
            ("NF_TPROXY_IPV4", Status::Ok, None),
            ("NF_TPROXY_IPV6", Status::Ok, None),
            ("AUTOFS4_FS", Status::Ok, Some("judged by AUTOFS_FS")),
            ("NFS_V4", Status::Missing, Some("needs NFS_FS")),
            ("NFS_FS", Status::Missing, Some("needs NETWORK_FILESYSTEMS")),
        ];
        assert_eq!(report.entries.len(), expected.len());
        for (entry, (option, status, note)) in report.entries.iter().zip(expected) {
            assert_eq!(entry.option, option);
            assert_eq!(entry.status, status, "{option}: {:?}", entry.note);
            assert_eq!(entry.satisfied, status == Status::Ok, "{option}");
            if let Some(note) = note {
                let got = entry.note.as_deref().unwrap_or("");
                assert!(got.contains(note), "{option}: {got:?}");
            }
        }
        assert_eq!(
            report.modules_note.as_deref(),
            Some("kernel cannot load modules: CONFIG_MODULES is not set")
        );
        assert!(!report.passed());
    }

    /// The seed list on the build without AUTOFS: AUTOFS4_FS fails there too, although no
    /// cluster of this tool needs it.
    #[test]
    fn seed_list_fails_autofs_on_the_build_without_it() {
        let report = check(
            &fixture(V1272),
            &Requirements::builtin(Profile::Seed, &Usage::unknown_cluster()),
        );
        assert!(failing(&report).contains(&"AUTOFS4_FS"));
    }

    /// k3s check-config's "Generally Necessary" on both builds: all present except the IPVS
    /// match (no IP_VS).
    #[test]
    fn k3s_check_config_fails_only_the_ipvs_match() {
        for name in [V669, V1272] {
            let report = check(
                &fixture(name),
                &Requirements::builtin(Profile::K3sCheckConfig, &Usage::unknown_cluster()),
            );
            assert_eq!(failing(&report), ["NETFILTER_XT_MATCH_IPVS"], "{name}");
            let na: Vec<&str> = report
                .entries
                .iter()
                .filter(|e| e.status == Status::NotApplicable)
                .map(|e| e.option.as_str())
                .collect();
            assert_eq!(
                na,
                [
                    "DEVPTS_MULTIPLE_INSTANCES",
                    "MEMCG_KMEM",
                    "RESOURCE_COUNTERS",
                    "MEMCG_SWAP",
                    "MEMCG_SWAP_ENABLED"
                ]
            );
        }
    }

    /// What a cluster needs, on both Firecracker builds: vxlan and host-gw pass with nothing
    /// missing, not even a recommendation; wireguard-native fails on WIREGUARD alone (both
    /// builds have `# CONFIG_WIREGUARD is not set`).
    #[test]
    fn cluster_verdicts_follow_the_flannel_backend() {
        for name in [V669, V1272] {
            let config = fixture(name);
            for backend in [FlannelBackend::Vxlan, FlannelBackend::HostGw] {
                let report = check(&config, &Requirements::cluster(&usage(backend)));
                assert!(
                    report.passed(),
                    "{name} {backend:?}: {:?}",
                    failing(&report)
                );
                assert!(missing_recommended(&report).is_empty(), "{name}");
            }
            let report = check(
                &config,
                &Requirements::cluster(&usage(FlannelBackend::WireguardNative)),
            );
            assert_eq!(failing(&report), ["WIREGUARD"], "{name}");
            let wg = report.failures().next().expect("one failure");
            assert_eq!(wg.group, "FLANNEL_BACKEND=wireguard-native");
        }
    }

    /// A kernel that lacks a recommended option still passes; the miss is reported.
    #[test]
    fn recommended_misses_do_not_fail_the_cluster_check() {
        let text = std::fs::read_to_string(fixture_path(V1272)).expect("fixture");
        let config = KernelConfig::parse(&text.replace(
            "CONFIG_CFS_BANDWIDTH=y",
            "# CONFIG_CFS_BANDWIDTH is not set",
        ))
        .expect("parses");
        let report = check(
            &config,
            &Requirements::cluster(&usage(FlannelBackend::Vxlan)),
        );
        assert!(report.passed());
        assert_eq!(missing_recommended(&report), ["CFS_BANDWIDTH"]);
    }
}
