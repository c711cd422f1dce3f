//! The machine-wide settings k3s needs, as the image's entrypoint applied them at every boot
//! (reference/k3s-sh-behaviour.md "Node side"): sysctls, resource limits, mount propagation
//! and the bind mounts that keep pod data on the volume.
//!
//! Which sysctls a process may set is decided purely ([`Scope::of`]): `net.*` settings belong
//! to the network namespace, everything else (`vm.*`, `kernel.*`, `net.core.*`, ...) to the
//! whole kernel. A guest that does not own its kernel (own network namespace, shared
//! kernel) skips the kernel-wide ones. Nothing here fails the boot: each failure is reported
//! to the caller as a warning naming the setting.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};

/// One sysctl the node sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sysctl {
    pub name: &'static str,
    pub value: &'static str,
}

/// The sysctls of the original entrypoint, in its order (reference/k3s-sh-behaviour.md).
pub const SYSCTLS: &[Sysctl] = &[
    Sysctl {
        name: "net.bridge.bridge-nf-call-iptables",
        value: "1",
    },
    Sysctl {
        name: "net.bridge.bridge-nf-call-ip6tables",
        value: "1",
    },
    Sysctl {
        name: "net.ipv4.ip_forward",
        value: "1",
    },
    Sysctl {
        name: "net.ipv4.conf.all.src_valid_mark",
        value: "1",
    },
    Sysctl {
        name: "net.ipv6.conf.all.forwarding",
        value: "1",
    },
    Sysctl {
        name: "net.ipv6.conf.all.disable_ipv6",
        value: "0",
    },
    Sysctl {
        name: "net.ipv4.conf.all.rp_filter",
        value: "1",
    },
    Sysctl {
        name: "net.ipv4.tcp_congestion_control",
        value: "bbr",
    },
    Sysctl {
        name: "vm.overcommit_memory",
        value: "1",
    },
    Sysctl {
        name: "kernel.panic",
        value: "10",
    },
    Sysctl {
        name: "kernel.panic_on_oops",
        value: "1",
    },
];

/// `nofile` for k3s and its containers (reference/k3s-sh-behaviour.md "Limits").
pub const NOFILE_LIMIT: u64 = 1_048_576;

/// Whose setting a sysctl is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Kept per network namespace: a guest with its own namespace sets its own copy.
    NetworkNamespace,
    /// One value for the whole kernel: only the kernel's owner may set it.
    Kernel,
}

impl Scope {
    /// The scope of a sysctl by its name. `net.*` is per network namespace (the bridge-nf-call
    /// switches since Linux 5.3, tcp_congestion_control since 4.15), except `net.core.*`, which
    /// mixes kernel-wide buffers with per-namespace knobs and is treated as kernel-wide.
    pub fn of(name: &str) -> Scope {
        if name.starts_with("net.") && !name.starts_with("net.core.") {
            Scope::NetworkNamespace
        } else {
            Scope::Kernel
        }
    }
}

/// What happened to one sysctl.
#[derive(Debug)]
pub enum SysctlOutcome {
    Set,
    /// Kernel-wide and this machine does not own the kernel.
    Skipped,
    Failed(std::io::Error),
}

/// The file under `/proc/sys` for a sysctl name.
pub fn sysctl_path(root: &Path, name: &str) -> PathBuf {
    root.join("proc/sys").join(name.replace('.', "/"))
}

/// Set each of `sysctls` (kernel-wide ones only when `owns_kernel`), returning every outcome.
pub fn apply_sysctls(
    root: &Path,
    sysctls: &[Sysctl],
    owns_kernel: bool,
) -> Vec<(Sysctl, SysctlOutcome)> {
    sysctls
        .iter()
        .map(|s| {
            let outcome = if !owns_kernel && Scope::of(s.name) == Scope::Kernel {
                SysctlOutcome::Skipped
            } else {
                match fs::write(sysctl_path(root, s.name), s.value) {
                    Ok(()) => SysctlOutcome::Set,
                    Err(e) => SysctlOutcome::Failed(e),
                }
            };
            (*s, outcome)
        })
        .collect()
}

/// Whether this process owns its kernel, so kernel-wide sysctls are its to set: not when its
/// network namespace differs from that of PID 1 or of its parent. On a Fly machine both are
/// the VM's init, in the VM's one namespace (reference fly-runtime.md §1.1: the main process
/// is a child of init); a container, or a guest sharing a host's kernel, sits in its own
/// namespace below a host process. Namespaces that cannot be read (a sandbox may hide PID 1)
/// do not count.
pub fn owns_kernel(root: &Path) -> bool {
    let ns = |pid: &str| fs::read_link(root.join(format!("proc/{pid}/ns/net"))).ok();
    let parent = nix::unistd::getppid().to_string();
    decide_owns_kernel(ns("self"), &[ns("1"), ns(&parent)])
}

/// The decision of [`owns_kernel`] on values: `own` and `others` are `net:[inode]` links.
pub fn decide_owns_kernel(own: Option<PathBuf>, others: &[Option<PathBuf>]) -> bool {
    match own {
        Some(own) => others.iter().flatten().all(|other| *other == own),
        None => true,
    }
}

/// A resource limit value, printed as `unlimited` for RLIM_INFINITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub u64);

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == RLIM_INFINITY {
            f.write_str("unlimited")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// What happened to one limit.
#[derive(Debug)]
pub enum LimitOutcome {
    Set,
    /// The hard limit could not be raised (no CAP_SYS_RESOURCE); the soft limit was raised
    /// to the existing hard limit instead.
    Capped {
        soft: Limit,
        wanted: Limit,
    },
    Failed(nix::Error),
}

/// The limits k3s and its children inherit: `nofile` 1048576, `nproc` unlimited.
pub fn apply_limits() -> Vec<(&'static str, LimitOutcome)> {
    [
        ("nofile", Resource::RLIMIT_NOFILE, NOFILE_LIMIT),
        ("nproc", Resource::RLIMIT_NPROC, RLIM_INFINITY),
    ]
    .into_iter()
    .map(|(name, resource, wanted)| (name, apply_limit(resource, wanted)))
    .collect()
}

fn apply_limit(resource: Resource, wanted: u64) -> LimitOutcome {
    match setrlimit(resource, wanted, wanted) {
        Ok(()) => LimitOutcome::Set,
        Err(e) => match nix::sys::resource::getrlimit(resource) {
            Ok((_, hard)) => {
                let soft = hard.min(wanted);
                match setrlimit(resource, soft, hard) {
                    Ok(()) => LimitOutcome::Capped {
                        soft: Limit(soft),
                        wanted: Limit(wanted),
                    },
                    Err(_) => LimitOutcome::Failed(e),
                }
            }
            Err(_) => LimitOutcome::Failed(e),
        },
    }
}

/// One mount step, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// `/` becomes rshared, so Kubernetes mount propagation works.
    RootShared,
    /// `source` (on the volume) is bind-mounted onto `target`.
    Bind { source: PathBuf, target: PathBuf },
}

impl std::fmt::Display for MountStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountStep::RootShared => write!(f, "make / rshared"),
            MountStep::Bind { source, target } => {
                write!(f, "bind {} onto {}", source.display(), target.display())
            }
        }
    }
}

/// The mount steps under `root`: pod logs and pod directories live on the volume.
pub fn mount_steps(root: &Path) -> Vec<MountStep> {
    vec![
        MountStep::RootShared,
        MountStep::Bind {
            source: root.join("data/logs"),
            target: root.join("var/log/pods"),
        },
        MountStep::Bind {
            source: root.join("data/podtemp"),
            target: root.join("var/lib/kubelet/pods"),
        },
    ]
}

/// What happened to one mount step.
#[derive(Debug)]
pub enum MountOutcome {
    Done,
    /// The target is already a mount point (node init ran before in this boot).
    AlreadyMounted,
    Failed(std::io::Error),
}

/// Run one mount step. `mountinfo` is the text of /proc/self/mountinfo, to keep a second run
/// from stacking bind mounts.
pub fn apply_mount(root: &Path, step: &MountStep, mountinfo: &str) -> MountOutcome {
    let result = match step {
        MountStep::RootShared => mount(
            None::<&str>,
            root,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(std::io::Error::from),
        MountStep::Bind { source, target } => {
            if is_mount_point(mountinfo, target) {
                return MountOutcome::AlreadyMounted;
            }
            fs::create_dir_all(source)
                .and_then(|()| fs::create_dir_all(target))
                .and_then(|()| {
                    mount(
                        Some(source.as_path()),
                        target.as_path(),
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(std::io::Error::from)
                })
        }
    };
    match result {
        Ok(()) => MountOutcome::Done,
        Err(e) => MountOutcome::Failed(e),
    }
}

/// Whether `path` is a mount point according to mountinfo text (field 5; spaces in paths are
/// escaped as `\040` there, as proc(5) documents).
pub fn is_mount_point(mountinfo: &str, path: &Path) -> bool {
    let want = path.to_string_lossy().replace(' ', "\\040");
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_sysctls_are_per_namespace_and_vm_kernel_core_are_kernel_wide() {
        assert_eq!(
            Scope::of("net.bridge.bridge-nf-call-iptables"),
            Scope::NetworkNamespace
        );
        assert_eq!(
            Scope::of("net.ipv4.tcp_congestion_control"),
            Scope::NetworkNamespace
        );
        assert_eq!(
            Scope::of("net.ipv6.conf.all.disable_ipv6"),
            Scope::NetworkNamespace
        );
        assert_eq!(Scope::of("net.core.rmem_max"), Scope::Kernel);
        assert_eq!(Scope::of("vm.overcommit_memory"), Scope::Kernel);
        assert_eq!(Scope::of("kernel.panic"), Scope::Kernel);
        assert_eq!(Scope::of("fs.inotify.max_user_watches"), Scope::Kernel);
    }

    #[test]
    fn sysctls_in_a_guest_skip_kernel_wide_ones_and_report_failures_by_name() {
        let root = tempfile::tempdir().unwrap();
        for name in ["net/ipv4/ip_forward", "vm/overcommit_memory"] {
            let p = root.path().join("proc/sys").join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, "0").unwrap();
        }
        let wanted = [
            Sysctl {
                name: "net.ipv4.ip_forward",
                value: "1",
            },
            Sysctl {
                name: "net.ipv6.conf.all.forwarding",
                value: "1",
            },
            Sysctl {
                name: "vm.overcommit_memory",
                value: "1",
            },
        ];
        let out = apply_sysctls(root.path(), &wanted, false);
        assert!(matches!(out[0].1, SysctlOutcome::Set));
        // No such file under the temp root: a failure carrying the name, not a crash.
        assert_eq!(out[1].0.name, "net.ipv6.conf.all.forwarding");
        assert!(matches!(out[1].1, SysctlOutcome::Failed(_)));
        assert!(matches!(out[2].1, SysctlOutcome::Skipped));
        let read = |n: &str| fs::read_to_string(root.path().join("proc/sys").join(n)).unwrap();
        assert_eq!(read("net/ipv4/ip_forward"), "1");
        assert_eq!(read("vm/overcommit_memory"), "0");
        let owner = apply_sysctls(root.path(), &wanted[2..], true);
        assert!(matches!(owner[0].1, SysctlOutcome::Set));
        assert_eq!(read("vm/overcommit_memory"), "1");
    }

    #[test]
    fn every_listed_sysctl_maps_to_a_proc_sys_path() {
        let p = sysctl_path(Path::new("/"), "net.ipv4.conf.all.src_valid_mark");
        assert_eq!(p, Path::new("/proc/sys/net/ipv4/conf/all/src_valid_mark"));
        assert_eq!(SYSCTLS.len(), 11);
    }

    #[test]
    fn kernel_is_owned_only_in_the_namespace_of_pid_1_and_the_parent() {
        let a = || Some(PathBuf::from("net:[4026531833]"));
        let b = || Some(PathBuf::from("net:[4026532400]"));
        assert!(decide_owns_kernel(a(), &[a(), a()]));
        // A guest sharing a host's kernel: own namespace, its parent in the host's.
        assert!(!decide_owns_kernel(b(), &[None, a()]));
        assert!(!decide_owns_kernel(b(), &[a(), b()]));
        // Unreadable links do not count.
        assert!(decide_owns_kernel(a(), &[None, None]));
    }

    #[test]
    fn mount_points_are_read_from_mountinfo() {
        let info = "36 35 98:0 / /var/log/pods rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 98:0 / /mnt/with\\040space rw - ext3 /dev/root rw\n";
        assert!(is_mount_point(info, Path::new("/var/log/pods")));
        assert!(is_mount_point(info, Path::new("/mnt/with space")));
        assert!(!is_mount_point(info, Path::new("/var/log")));
    }

    #[test]
    fn mount_steps_put_pod_data_on_the_volume() {
        let steps = mount_steps(Path::new("/"));
        assert_eq!(steps[0], MountStep::RootShared);
        assert_eq!(steps[1].to_string(), "bind /data/logs onto /var/log/pods");
        assert_eq!(
            steps[2].to_string(),
            "bind /data/podtemp onto /var/lib/kubelet/pods"
        );
    }
}
