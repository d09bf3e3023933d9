//! The container's filesystem as a list of operations, computed from the spec without
//! touching the system (bubblewrap's "parse into setup ops, then execute"). Tests check
//! the list; `mounts` executes it inside the new mount namespace.

use std::path::PathBuf;

use rustix::mount::MountFlags;

use crate::cgroup::CgroupMounts;

/// One step; every `target` is an absolute path inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Mount a fresh filesystem (proc, tmpfs, devpts, ...) on a directory.
    Fs {
        fstype: &'static str,
        target: String,
        flags: MountFlags,
        data: String,
    },
    /// Bind a host path (file or directory) over `target`, recursively; read-only binds
    /// are made read-only with every submount.
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    /// Hide a file (bind /dev/null over it) or a directory (read-only empty tmpfs).
    Mask { target: String },
    /// Re-bind a path onto itself read-only.
    ReadOnly { target: String },
    /// Make the mount already at `target` (and its submounts) read-only.
    Seal { target: String },
    /// Attach the mount the launcher built for `target` (one of [`PREBUILT`]).
    Attach { target: &'static str },
}

/// The mounts the launcher builds as detached mounts (the new mount API) while the
/// child makes its namespaces, and the child only attaches, in this order: /dev (a
/// tmpfs with the device nodes, links and mount points of [`DEVICES`], [`LINKS`] and
/// [`DEV_DIRS`]), its devpts and its shm. None of them belongs to a namespace the child
/// makes, unlike proc (pid), sysfs (net), mqueue (ipc) and cgroup, which it mounts
/// itself.
pub const PREBUILT: [&str; 3] = ["/dev", "/dev/pts", "/dev/shm"];
/// The generated files, bound from the scratch tmpfs over the base layer's empty ones.
pub const GENERATED: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];
/// Mount points in the /dev tmpfs, relative to it.
pub const DEV_DIRS: &[&str] = &["pts", "shm", "mqueue"];

/// The inputs the plan depends on.
pub struct PlanInput<'a> {
    pub binds: &'a [(PathBuf, String, bool)],
    pub etc_files: &'a [(PathBuf, &'static str)],
    pub cgroups: &'a CgroupMounts,
}

/// Character devices in /dev (name relative to it, major, minor).
pub const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];
/// Symbolic links in /dev (name relative to it, what it points to).
pub const LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];
/// Docker's masked and read-only paths.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READ_ONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

fn fs(fstype: &'static str, target: &str, flags: MountFlags, data: &str) -> MountOp {
    MountOp::Fs {
        fstype,
        target: target.to_string(),
        flags,
        data: data.to_string(),
    }
}

/// Everything mounted after the root filesystem, in order. proc, sysfs and
/// /sys/fs/cgroup come before /dev, the launcher's ([`PREBUILT`]): the
/// child makes them while the launcher builds /dev, and waits for it only at the first
/// [`MountOp::Attach`].
pub fn plan(input: &PlanInput) -> Vec<MountOp> {
    let nosuid_nodev = MountFlags::NOSUID | MountFlags::NODEV;
    let mut ops = vec![fs("proc", "/proc", nosuid_nodev | MountFlags::NOEXEC, "")];
    let ro_sys = nosuid_nodev | MountFlags::NOEXEC | MountFlags::RDONLY;
    ops.push(fs("sysfs", "/sys", ro_sys, ""));
    ops.extend(cgroup_ops(input.cgroups, ro_sys));
    ops.extend(PREBUILT.iter().map(|&target| MountOp::Attach { target }));
    ops.push(fs("mqueue", "/dev/mqueue", nosuid_nodev | MountFlags::NOEXEC, ""));
    for (source, target) in input.etc_files {
        ops.push(MountOp::Bind {
            source: source.clone(),
            target: (*target).to_string(),
            readonly: false,
        });
    }
    for (source, target, readonly) in input.binds {
        ops.push(MountOp::Bind {
            source: source.clone(),
            target: target.clone(),
            readonly: *readonly,
        });
    }
    ops.extend(MASKED.iter().map(|t| MountOp::Mask { target: t.to_string() }));
    ops.extend(READ_ONLY.iter().map(|t| MountOp::ReadOnly { target: t.to_string() }));
    ops
}

/// /sys/fs/cgroup, read-only: cgroup2 when the host is pure v2; otherwise a tmpfs with
/// each v1 hierarchy (and the v2 part of a hybrid host) mounted in it. With a cgroup
/// namespace each shows the container's own cgroup as its root.
fn cgroup_ops(mounts: &CgroupMounts, ro: MountFlags) -> Vec<MountOp> {
    if mounts.v1.is_empty() {
        return vec![fs("cgroup2", "/sys/fs/cgroup", ro, "")];
    }
    // The tmpfs is made read-only once the hierarchies' mount points are in it.
    let mut ops = vec![fs(
        "tmpfs",
        "/sys/fs/cgroup",
        ro.difference(MountFlags::RDONLY),
        "mode=755",
    )];
    for (options, host) in &mounts.v1 {
        let name = host.file_name().and_then(|n| n.to_str()).unwrap_or(options);
        ops.push(fs("cgroup", &format!("/sys/fs/cgroup/{name}"), ro, options));
    }
    if mounts.unified.is_some() {
        ops.push(fs("cgroup2", "/sys/fs/cgroup/unified", ro, ""));
    }
    ops.push(MountOp::Seal {
        target: "/sys/fs/cgroup".into(),
    });
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(cgroups: &'a CgroupMounts, binds: &'a [(PathBuf, String, bool)]) -> PlanInput<'a> {
        PlanInput {
            binds,
            etc_files: &[],
            cgroups,
        }
    }

    #[test]
    fn proc_comes_first_then_sys_then_dev_masks_last() {
        let cg = CgroupMounts {
            unified: Some("/sys/fs/cgroup".into()),
            v1: vec![],
        };
        let binds = [(PathBuf::from("/data"), "/mnt/data".to_string(), true)];
        let ops = plan(&input(&cg, &binds));
        let targets: Vec<&str> = ops
            .iter()
            .take(6)
            .map(|o| match o {
                MountOp::Fs { target, .. } => target.as_str(),
                MountOp::Attach { target } => target,
                _ => "",
            })
            .collect();
        assert_eq!(
            targets,
            ["/proc", "/sys", "/sys/fs/cgroup", "/dev", "/dev/pts", "/dev/shm"],
            "the launcher's /dev after what the child mounts alone, and before the mounts inside it"
        );
        let first_attach = ops.iter().position(|o| matches!(o, MountOp::Attach { .. })).unwrap();
        assert!(
            ops[first_attach..].iter().all(|o| !matches!(
                o,
                MountOp::Fs {
                    fstype: "cgroup" | "cgroup2" | "sysfs" | "proc",
                    ..
                }
            )),
            "proc, sysfs and the cgroup mounts all come before the child waits for /dev"
        );
        let bind = ops
            .iter()
            .position(|o| matches!(o, MountOp::Bind { readonly: true, .. }))
            .unwrap();
        let first_mask = ops.iter().position(|o| matches!(o, MountOp::Mask { .. })).unwrap();
        assert!(
            bind < first_mask,
            "masks must come after user binds so a bind cannot unmask"
        );
        assert!(ops.contains(&MountOp::Mask {
            target: "/proc/kcore".into()
        }));
        assert!(ops
            .iter()
            .any(|o| matches!(o, MountOp::Fs { fstype: "cgroup2", flags, .. } if flags.contains(MountFlags::RDONLY))));
    }

    #[test]
    fn hybrid_cgroups_get_a_tmpfs_with_each_hierarchy() {
        let cg = CgroupMounts {
            unified: Some("/sys/fs/cgroup/unified".into()),
            v1: vec![
                ("memory".into(), "/sys/fs/cgroup/memory".into()),
                ("cpu".into(), "/sys/fs/cgroup/cpu".into()),
            ],
        };
        let ops = cgroup_ops(&cg, MountFlags::RDONLY);
        let targets: Vec<&str> = ops
            .iter()
            .map(|o| match o {
                MountOp::Fs { target, .. } => target.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(
            targets,
            [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/unified",
                ""
            ]
        );
        assert_eq!(
            ops.last(),
            Some(&MountOp::Seal {
                target: "/sys/fs/cgroup".into()
            })
        );
    }
}
