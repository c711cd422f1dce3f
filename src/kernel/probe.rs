//! Runtime probes, for when a node's kernel config cannot be read: what the running kernel
//! shows of an option without its `.config`.
//!
//! - link kinds (VXLAN, WIREGUARD): create a link of that kind and delete it again, over
//!   rtnetlink, in a network namespace of its own so nothing touches the node's;
//! - cgroup controllers: `/proc/cgroups` lists every controller built in (they cannot be
//!   modules);
//! - file systems, iptables matches and targets: `/proc/filesystems`,
//!   `/proc/net/ip{,6}_tables_{matches,targets}` list what is registered. On a kernel that can
//!   load modules an unlisted one may still load on first use, so there a miss is unknown.
//!
//! The `/proc` reads take a root (`/` on a machine) so tests can point them at a temp dir; the
//! netlink probe talks to the running kernel. Linux only. Options without a probe are not
//! probed (reference/k3s.md §6 "Alternative probes").

use std::path::Path;

/// What a probe found about one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The kernel has it; how that was seen.
    Present(String),
    /// The kernel does not have it; how that was seen.
    Absent(String),
    /// The probe could not tell, and why.
    Unknown(String),
}

/// How an option can be probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// rtnetlink link kind (`ip link add ... type <kind>`).
    Link(LinkKind),
    /// A controller name in `/proc/cgroups`.
    Cgroup(&'static str),
    /// A name in `/proc/filesystems`.
    Filesystem(&'static str),
    /// A name in a `/proc/net` listing (file, name).
    Listed(&'static str, &'static str),
}

/// The link kinds a probe creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Vxlan,
    Wireguard,
}

impl LinkKind {
    fn as_str(self) -> &'static str {
        match self {
            LinkKind::Vxlan => "vxlan",
            LinkKind::Wireguard => "wireguard",
        }
    }
}

const MATCHES: &str = "proc/net/ip_tables_matches";
const TARGETS: &str = "proc/net/ip_tables_targets";
const TARGETS6: &str = "proc/net/ip6_tables_targets";

/// The probe for `option` (without `CONFIG_`), if there is one.
fn method(option: &str) -> Option<Method> {
    use Method::*;
    Some(match option {
        "VXLAN" => Link(LinkKind::Vxlan),
        "WIREGUARD" => Link(LinkKind::Wireguard),
        "CGROUP_PIDS" => Cgroup("pids"),
        "CPUSETS" => Cgroup("cpuset"),
        "MEMCG" => Cgroup("memory"),
        "CGROUP_DEVICE" => Cgroup("devices"),
        "CGROUP_FREEZER" => Cgroup("freezer"),
        "CGROUP_SCHED" => Cgroup("cpu"),
        "CGROUP_CPUACCT" => Cgroup("cpuacct"),
        "CGROUP_HUGETLB" => Cgroup("hugetlb"),
        "OVERLAY_FS" => Filesystem("overlay"),
        "NETFILTER_XT_MATCH_ADDRTYPE" => Listed(MATCHES, "addrtype"),
        "NETFILTER_XT_MATCH_CONNTRACK" => Listed(MATCHES, "conntrack"),
        "NETFILTER_XT_MATCH_COMMENT" => Listed(MATCHES, "comment"),
        "NETFILTER_XT_MATCH_MULTIPORT" => Listed(MATCHES, "multiport"),
        "NETFILTER_XT_MATCH_STATISTIC" => Listed(MATCHES, "statistic"),
        "NETFILTER_XT_MATCH_LIMIT" => Listed(MATCHES, "limit"),
        "NETFILTER_XT_MATCH_PHYSDEV" => Listed(MATCHES, "physdev"),
        "NETFILTER_XT_MARK" => Listed(MATCHES, "mark"),
        "NETFILTER_XT_SET" => Listed(MATCHES, "set"),
        "NETFILTER_XT_NAT" => Listed(TARGETS, "DNAT"),
        "NETFILTER_XT_TARGET_NFLOG" => Listed(TARGETS, "NFLOG"),
        "IP_NF_TARGET_MASQUERADE" => Listed(TARGETS, "MASQUERADE"),
        "IP_NF_TARGET_REJECT" => Listed(TARGETS, "REJECT"),
        "IP6_NF_TARGET_MASQUERADE" => Listed(TARGETS6, "MASQUERADE"),
        "IP6_NF_TARGET_REJECT" => Listed(TARGETS6, "REJECT"),
        _ => return None,
    })
}

/// Whether `option` has a probe.
pub fn probeable(option: &str) -> bool {
    method(option).is_some()
}

/// Probe `option` on the running kernel (`/proc` under `root`); `None` when it has no probe.
pub fn probe(option: &str, root: &Path) -> Option<Finding> {
    Some(match method(option)? {
        Method::Link(kind) => link(kind),
        Method::Cgroup(name) => cgroup(root, name),
        Method::Filesystem(name) => listed(
            root,
            "proc/filesystems",
            |line| line.split_whitespace().last() == Some(name),
            name,
        ),
        Method::Listed(file, name) => listed(root, file, |line| line.trim() == name, name),
    })
}

/// A controller in `/proc/cgroups` (`name hierarchy num_cgroups enabled`). Controllers cannot
/// be modules, so one that is not listed is not built.
fn cgroup(root: &Path, name: &str) -> Finding {
    let path = root.join("proc/cgroups");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => return Finding::Unknown(format!("reading {}: {e}", path.display())),
    };
    let listed = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| l.split_whitespace().next() == Some(name));
    if listed {
        Finding::Present(format!("{} lists the {name} controller", path.display()))
    } else {
        Finding::Absent(format!("{} has no {name} controller", path.display()))
    }
}

/// A name in a `/proc` listing. Unlisted means absent only when no module could add it.
fn listed(root: &Path, file: &str, is: impl Fn(&str) -> bool, name: &str) -> Finding {
    let path = root.join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => return Finding::Unknown(format!("reading {}: {e}", path.display())),
    };
    if text.lines().any(is) {
        return Finding::Present(format!("{} lists {name}", path.display()));
    }
    match modules_dir(root) {
        None => Finding::Absent(format!(
            "{} does not list {name} and this kernel cannot load modules",
            path.display()
        )),
        Some(dir) => Finding::Unknown(format!(
            "{} does not list {name}, but a module from {dir} may add it on first use",
            path.display()
        )),
    }
}

/// Where modules could load from: `None` when the kernel has no module support
/// (`/proc/modules` absent) or ships none (`/lib/modules/<release>` absent).
fn modules_dir(root: &Path) -> Option<String> {
    if !root.join("proc/modules").exists() {
        return None;
    }
    let release = std::fs::read_to_string(root.join("proc/sys/kernel/osrelease")).ok();
    match release {
        Some(release) => {
            let dir = root.join("lib/modules").join(release.trim());
            dir.is_dir().then(|| dir.display().to_string())
        }
        // Modules are supported and the release is unknown: assume they may load.
        None => Some(root.join("lib/modules").display().to_string()),
    }
}

/// The link probe itself: Linux only (a scratch network namespace and rtnetlink), in a module
/// of its own so that the operator CLI's portability check can see the gate.
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux::link;

#[cfg(not(target_os = "linux"))]
fn link(kind: LinkKind) -> Finding {
    Finding::Unknown(format!(
        "{} links can only be probed on Linux",
        kind.as_str()
    ))
}

/// What a failed create of a `kind` link says: the kernel answers EOPNOTSUPP for a link kind
/// it does not know after trying to load `rtnl-link-<kind>` itself (net/core/rtnetlink.c), so
/// that is an answer; anything else (EPERM without CAP_NET_ADMIN, ...) is not.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn classify_create_error(kind: &str, errno: i32) -> Finding {
    let err = std::io::Error::from_raw_os_error(errno);
    if errno == EOPNOTSUPP {
        Finding::Absent(format!(
            "the kernel refused to create a {kind} link: {err} (no such link kind)"
        ))
    } else {
        Finding::Unknown(format!("creating a {kind} link failed: {err}"))
    }
}

/// Linux's EOPNOTSUPP (= ENOTSUP) and EIO, the same on every architecture.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const EOPNOTSUPP: i32 = 95;
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const EIO: i32 = 5;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    const CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t1\t1\nmemory\t4\t14\t1\npids\t8\t1\t1\n";

    #[test]
    fn cgroup_controllers_come_from_proc_cgroups() {
        let root = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            probe("CGROUP_PIDS", root.path()),
            Some(Finding::Unknown(_))
        ));
        write(root.path(), "proc/cgroups", CGROUPS);
        assert!(matches!(
            probe("CGROUP_PIDS", root.path()),
            Some(Finding::Present(_))
        ));
        assert!(matches!(
            probe("MEMCG", root.path()),
            Some(Finding::Present(_))
        ));
        // Listed controllers are built in; an unlisted one cannot come from a module.
        let Some(Finding::Absent(why)) = probe("CGROUP_HUGETLB", root.path()) else {
            panic!("hugetlb is not listed")
        };
        assert!(why.contains("hugetlb"), "{why}");
    }

    #[test]
    fn listings_decide_only_where_modules_cannot_load() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), MATCHES, "comment\nconntrack\naddrtype\n");
        write(root.path(), "proc/filesystems", "nodev\tsysfs\n\text4\n");
        assert!(matches!(
            probe("NETFILTER_XT_MATCH_COMMENT", root.path()),
            Some(Finding::Present(_))
        ));
        // No /proc/modules: no module can add what is not listed.
        assert!(matches!(
            probe("NETFILTER_XT_MATCH_STATISTIC", root.path()),
            Some(Finding::Absent(_))
        ));
        assert!(matches!(
            probe("OVERLAY_FS", root.path()),
            Some(Finding::Absent(_))
        ));
        // Module support but no modules shipped for this release: still absent.
        write(root.path(), "proc/modules", "");
        write(root.path(), "proc/sys/kernel/osrelease", "6.1.0\n");
        assert!(matches!(
            probe("OVERLAY_FS", root.path()),
            Some(Finding::Absent(_))
        ));
        // Modules shipped: an unlisted one may load on first use.
        std::fs::create_dir_all(root.path().join("lib/modules/6.1.0")).expect("mkdir");
        let Some(Finding::Unknown(why)) = probe("OVERLAY_FS", root.path()) else {
            panic!("modules may add overlay")
        };
        assert!(why.contains("lib/modules/6.1.0"), "{why}");
        write(root.path(), "proc/filesystems", "nodev\toverlay\n");
        assert!(matches!(
            probe("OVERLAY_FS", root.path()),
            Some(Finding::Present(_))
        ));
        // No listing at all: unknown, naming the file.
        let Some(Finding::Unknown(why)) = probe("IP6_NF_TARGET_REJECT", root.path()) else {
            panic!("no ip6 listing")
        };
        assert!(why.contains("ip6_tables_targets"), "{why}");
    }

    #[test]
    fn options_without_a_probe_are_not_probed() {
        let root = tempfile::tempdir().expect("tempdir");
        assert_eq!(probe("SECCOMP", root.path()), None);
        assert!(!probeable("KEYS"));
        assert!(probeable("VXLAN") && probeable("WIREGUARD"));
    }

    #[test]
    fn only_eopnotsupp_from_a_link_create_means_absent() {
        assert!(matches!(
            classify_create_error("wireguard", EOPNOTSUPP),
            Finding::Absent(_)
        ));
        let Finding::Unknown(why) = classify_create_error("vxlan", 1) else {
            panic!("EPERM is not an answer")
        };
        assert!(why.contains("vxlan"), "{why}");
    }

    /// The link probe against the running kernel, in a scratch network namespace: conclusive as
    /// root, and the same answer the kernel's own config gives. Which answer that is depends on
    /// the kernel; that they agree does not. Needs root (CI runs as root) and /proc/config.gz.
    #[cfg(target_os = "linux")]
    #[test]
    fn link_probe_agrees_with_the_running_kernels_config() {
        use std::os::unix::fs::MetadataExt;
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if !root {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root; the link probe needs it"
            );
            eprintln!("skipped: not root");
            return;
        }
        let Ok((config, _)) = crate::kernel::source::read(None) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI needs /proc/config.gz to compare the probe with"
            );
            eprintln!("skipped: the running kernel's config is not readable");
            return;
        };
        for (option, kind) in [
            ("VXLAN", LinkKind::Vxlan),
            ("WIREGUARD", LinkKind::Wireguard),
        ] {
            let built_in = config.value(option) == &crate::kernel::Value::Yes;
            let finding = link(kind);
            match (&finding, built_in) {
                (Finding::Present(_), true) | (Finding::Absent(_), false) => {}
                // =m on a kernel that can load it: either answer is the kernel's truth.
                (Finding::Present(_), false)
                    if config.value(option) == &crate::kernel::Value::Module => {}
                _ => panic!("{option}: probe {finding:?}, config built in: {built_in}"),
            }
        }
    }
}
