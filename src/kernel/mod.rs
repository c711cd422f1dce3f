//! Kernel config verification: does a kernel `.config` (a file, or the running kernel's
//! `/proc/config.gz`) have the options k3s, the seed image and the cluster configuration need?
//!
//! The requirements are data (`kernel-configs/*.toml`, embedded at build time), judged against
//! the kernel being checked: renamed and removed options follow `kernel-configs/history.toml`
//! (reference/k3s.md §6), and on a kernel that cannot load modules `=m` does not count.
//!
//! Pure except [`source`], which reads the files it is pointed at (and, for the running kernel,
//! `/proc/sys/kernel/osrelease` and `/lib/modules/<release>`). No printing here: the CLI renders
//! the [`Report`].

mod check;
mod parse;
mod requirements;
pub mod source;

use std::path::PathBuf;

pub use check::{check, Entry, Report, Status};
pub use parse::{KernelConfig, Modules, Value, Version};
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

/// This machine's kernel config, copied as a test fixture (Firecracker guest, 6.18.44).
#[cfg(test)]
fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernel/firecracker-6.18.44-x86_64.config")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FlannelBackend;

    fn fixture() -> KernelConfig {
        source::read_file(&fixture_path()).expect("fixture reads")
    }

    /// Every seed option on this machine's 6.18.44 Firecracker config (checked against the
    /// fixture itself; reference/k3s.md §7 describes the upstream CI config, which differs:
    /// this build has MULTIPORT, NOTRACK, NFLOG, LIMIT, PHYSDEV and TPROXY but no NFS).
    #[test]
    fn fixture_verdict_for_every_seed_option() {
        let config = fixture();
        assert_eq!(config.version, Some(Version::new(6, 18, 44)));
        assert_eq!(config.modules, Modules::Disabled);
        let report = check(&config, &Requirements::builtin(None));
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
        let seed: Vec<&Entry> = report.entries.iter().filter(|e| e.set == "seed").collect();
        assert_eq!(seed.len(), expected.len());
        for (entry, (option, status, note)) in seed.iter().zip(expected) {
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

    /// k3s check-config's "Generally Necessary" on the fixture: all present except the IPVS
    /// match (no IP_VS); the cluster's IPv6 items all present; WIREGUARD is not.
    #[test]
    fn fixture_verdict_for_k3s_and_cluster_sets() {
        let report = check(
            &fixture(),
            &Requirements::builtin(Some(FlannelBackend::WireguardNative)),
        );
        let failing: Vec<(&str, &str)> = report
            .failures()
            .filter(|e| e.set != "seed")
            .map(|e| (e.set.as_str(), e.option.as_str()))
            .collect();
        assert_eq!(
            failing,
            [
                ("k3s-check-config", "NETFILTER_XT_MATCH_IPVS"),
                ("cluster", "WIREGUARD"),
            ]
        );
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
