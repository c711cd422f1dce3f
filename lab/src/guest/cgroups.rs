//! The cgroup layout Fly's init mounts, as far as the host allows it without side effects.
//!
//! Fly (reference/fly-runtime.md §1.3, INIT 2021; the current set is uncertain, and a 2023
//! `df` still shows the hybrid layout): a tmpfs on `/sys/fs/cgroup`, cgroup2 at
//! `/sys/fs/cgroup/unified` (`nsdelegate`), the v1 hierarchies `net_cls,net_prio`, `hugetlb`,
//! `pids`, `freezer`, `cpu,cpuacct`, `devices`, `blkio`, `memory`, `perf_event`, `cpuset`,
//! and no `name=systemd`.
//!
//! A guest shares the host's kernel, and cgroup hierarchies are kernel-wide: mounting cgroup2
//! applies its options (`nsdelegate`) to the one cgroup2 hierarchy of the whole host, and a
//! new v1 hierarchy takes its controllers away from the host's cgroup2. So the guest only
//! gets **binds of hierarchies the host already has**: cgroup2 (with the host's options), and
//! each of Fly's v1 hierarchies whose exact controller set the host mounts. The rest is
//! reported as not modelled (the directory names are the controller lists, as systemd
//! names them; the names init used are not documented).
//!
//! Pure: parses a mountinfo text and returns values.

use std::path::PathBuf;

use super::mounts::unescape_mountinfo;

/// Fly's v1 hierarchies (§1.3), each a set of controllers.
pub const FLY_V1: &[&[&str]] = &[
    &["net_cls", "net_prio"],
    &["hugetlb"],
    &["pids"],
    &["freezer"],
    &["cpu", "cpuacct"],
    &["devices"],
    &["blkio"],
    &["memory"],
    &["perf_event"],
    &["cpuset"],
];

/// Where the guest's cgroup tmpfs goes.
pub const ROOT: &str = "/sys/fs/cgroup";

/// A cgroup hierarchy mounted on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHierarchy {
    pub mount_point: PathBuf,
    /// `None` for cgroup2; the sorted controllers of a v1 hierarchy.
    pub controllers: Option<Vec<String>>,
}

/// The guest's cgroup mounts: (host mount point, guest path) binds under a fresh tmpfs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The host has a mount on `/sys/fs/cgroup` (its own tmpfs or cgroup2): the guest drops
    /// that subtree first, so only Fly's hierarchies are seen there.
    pub replaces_host_mount: bool,
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// What Fly mounts that the host cannot give the guest, for the log.
    pub not_modelled: Vec<String>,
}

/// The cgroup hierarchies in a mountinfo text (first mount of each).
pub fn host_hierarchies(mountinfo: &str) -> Vec<HostHierarchy> {
    let mut out: Vec<HostHierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let (Some(fstype), Some(_source), Some(super_opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        let controllers = match fstype {
            "cgroup2" => None,
            "cgroup" => {
                let mut c: Vec<String> = super_opts
                    .split(',')
                    .filter(|o| {
                        !matches!(
                            *o,
                            "rw" | "ro" | "relatime" | "noatime" | "nosuid" | "nodev" | "noexec"
                        ) && !o.starts_with("release_agent=")
                            && *o != "clone_children"
                            && *o != "noprefix"
                            && *o != "xattr"
                    })
                    .map(str::to_owned)
                    .collect();
                c.sort();
                Some(c)
            }
            _ => continue,
        };
        if out
            .iter()
            .any(|h| h.controllers == controllers && controllers.is_some())
        {
            continue;
        }
        if controllers.is_none() && out.iter().any(|h| h.controllers.is_none()) {
            continue;
        }
        out.push(HostHierarchy {
            mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
            controllers,
        });
    }
    out
}

/// Whether a mountinfo text has a mount on `/sys/fs/cgroup`.
pub fn has_mount_at_root(mountinfo: &str) -> bool {
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(ROOT))
}

/// Fly's layout from what the host has (`host_mountinfo` for [`has_mount_at_root`]).
pub fn layout(host: &[HostHierarchy], host_mountinfo: &str) -> Layout {
    let mut l = Layout {
        replaces_host_mount: has_mount_at_root(host_mountinfo),
        ..Layout::default()
    };
    let root = PathBuf::from(ROOT);
    match host.iter().find(|h| h.controllers.is_none()) {
        Some(v2) => l.binds.push((v2.mount_point.clone(), root.join("unified"))),
        None => l
            .not_modelled
            .push("cgroup2 at /sys/fs/cgroup/unified (the host has no cgroup2 mounted)".into()),
    }
    for set in FLY_V1 {
        let mut want: Vec<String> = set.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        let name = set.join(",");
        match host.iter().find(|h| h.controllers.as_ref() == Some(&want)) {
            Some(h) => l.binds.push((h.mount_point.clone(), root.join(&name))),
            None => l.not_modelled.push(format!(
                "cgroup v1 {name} (the host has no hierarchy of exactly these controllers)"
            )),
        }
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This build machine's hybrid layout (a Firecracker guest, like Fly's).
    const HYBRID: &str = "\
30 24 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
36 30 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
37 30 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_prio,net_cls
";

    #[test]
    fn host_hierarchies_are_read_with_sorted_controllers() {
        let h = host_hierarchies(HYBRID);
        assert_eq!(h.len(), 7);
        assert_eq!(h[5].controllers, None);
        assert_eq!(
            h[6].controllers,
            Some(vec!["net_cls".to_owned(), "net_prio".to_owned()])
        );
    }

    #[test]
    fn only_hierarchies_the_host_has_are_bound_and_the_rest_is_reported() {
        let l = layout(&host_hierarchies(HYBRID), HYBRID);
        assert!(l.replaces_host_mount);
        let guest: Vec<String> = l
            .binds
            .iter()
            .map(|(_, g)| g.display().to_string())
            .collect();
        assert_eq!(
            guest,
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/net_cls,net_prio",
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/memory",
            ]
        );
        assert!(l.binds.iter().all(|(h, _)| !h.ends_with("systemd")));
        // cpu and cpuacct are separate hierarchies here: Fly's joint one cannot be had.
        assert!(
            l.not_modelled.iter().any(|m| m.contains("cpu,cpuacct")),
            "{:?}",
            l.not_modelled
        );
    }

    #[test]
    fn a_pure_cgroup2_host_gets_unified_only() {
        let v2 = "29 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = layout(&host_hierarchies(v2), v2);
        assert_eq!(
            l.binds,
            [(
                PathBuf::from("/sys/fs/cgroup"),
                PathBuf::from("/sys/fs/cgroup/unified")
            )]
        );
        assert_eq!(l.not_modelled.len(), FLY_V1.len());
    }
}
