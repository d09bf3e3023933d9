//! The container's filesystem as a list of operations, computed from the spec without
//! touching the system (bubblewrap's "parse into setup ops, then execute"). Tests check
//! the list; `mounts` executes it inside the new mount namespace.

use std::path::{Path, PathBuf};

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
    /// Hide a file (bind /dev/null over it) or a directory (bind `empty`, an empty
    /// directory of the scratch tmpfs, over it read-only).
    Mask { target: String, empty: PathBuf },
    /// Re-bind a path onto itself read-only.
    ReadOnly { target: String },
    /// Make the mount already at `target` (and its submounts) read-only.
    Seal { target: String },
    /// Attach the mount the launcher built for `target` (one of [`PREBUILT`]).
    Attach { target: &'static str },
}

/// The mounts the launcher builds as detached mounts (the new mount API) after the go
/// message, and the child only attaches, in this order: /dev's devpts and shm. Neither
/// belongs to a namespace the child makes, unlike proc (pid), sysfs (net), mqueue (ipc)
/// and cgroup, which it mounts itself. /dev itself ([`DEV`]) comes with the plan.
pub const PREBUILT: [&str; 2] = ["/dev/pts", "/dev/shm"];
/// /dev: a detached mount of a directory of the scratch tmpfs ([`Scratch`]), which the
/// launcher sends with the plan, and where it makes the device nodes, links and mount
/// points of [`DEVICES`], [`LINKS`] and [`DEV_DIRS`] after the go message.
pub const DEV: &str = "/dev";
/// The generated files, bound from the scratch tmpfs over the base layer's empty ones.
pub const GENERATED: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];
/// Mount points in the /dev tmpfs, relative to it.
pub const DEV_DIRS: &[&str] = &["pts", "shm", "mqueue"];

/// The inputs the plan depends on.
pub struct PlanInput<'a> {
    pub binds: &'a [(PathBuf, String, bool)],
    pub scratch: &'a Scratch,
    pub cgroups: &'a CgroupMounts,
}

/// Where the parts of the launcher's scratch tmpfs are, once the child attached it:
/// every small tmpfs the container has but /dev/shm comes from this one filesystem
/// (/dev as [`DEV`]). Each filesystem of its own would be made and, when the container
/// exits, torn down on the launch's path: ~0.02 ms a superblock on the project's VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scratch {
    /// The generated files of [`GENERATED`], in that order: (path, container path).
    pub etc_files: Vec<(PathBuf, &'static str)>,
    /// /sys/fs/cgroup on v1 hierarchies, where their mount points are made.
    pub cgroup: PathBuf,
    /// An empty directory, bound read-only over each masked one.
    pub empty: PathBuf,
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

/// Everything mounted after the root filesystem, in order, in the three stretches the
/// child runs it in.
#[derive(Debug)]
pub struct MountPlan {
    /// While it waits for the go message (the launcher is still setting the cgroup up):
    /// proc, sysfs, /dev (empty until the launcher's /dev message, and not looked into
    /// before) and the generated /etc files, none of which depends on the cgroup; and,
    /// when the user binds nothing, the masks and read-only paths in /proc and /sys.
    pub before_go: Vec<MountOp>,
    /// Once it has joined its cgroups and made its cgroup namespace: /sys/fs/cgroup,
    /// whose hierarchies show the namespace's root.
    pub after_go: Vec<MountOp>,
    /// After the launcher's /dev message: /dev's mounts ([`PREBUILT`] and mqueue), then
    /// the user's binds, which may land on any of the above, then (with binds) the
    /// masks and the read-only paths, which no bind may undo.
    pub after_dev: Vec<MountOp>,
}

pub fn plan(input: &PlanInput) -> MountPlan {
    let nosuid_nodev = MountFlags::NOSUID | MountFlags::NODEV;
    let ro_sys = nosuid_nodev | MountFlags::NOEXEC | MountFlags::RDONLY;
    let mut before_go = vec![
        fs("proc", "/proc", nosuid_nodev | MountFlags::NOEXEC, ""),
        fs("sysfs", "/sys", ro_sys, ""),
        MountOp::Attach { target: DEV },
    ];
    for (source, target) in &input.scratch.etc_files {
        before_go.push(MountOp::Bind {
            source: source.clone(),
            target: (*target).to_string(),
            readonly: false,
        });
    }
    let mut after_dev: Vec<MountOp> = PREBUILT.iter().map(|&target| MountOp::Attach { target }).collect();
    after_dev.push(fs("mqueue", "/dev/mqueue", nosuid_nodev | MountFlags::NOEXEC, ""));
    for (source, target, readonly) in input.binds {
        after_dev.push(MountOp::Bind {
            source: source.clone(),
            target: target.clone(),
            readonly: *readonly,
        });
    }
    // Without binds nothing after proc and sysfs can land where the masks are: they
    // leave the child's path after the go message then.
    let hiding = if input.binds.is_empty() {
        &mut before_go
    } else {
        &mut after_dev
    };
    hiding.extend(MASKED.iter().map(|t| MountOp::Mask {
        target: t.to_string(),
        empty: input.scratch.empty.clone(),
    }));
    hiding.extend(READ_ONLY.iter().map(|t| MountOp::ReadOnly { target: t.to_string() }));
    MountPlan {
        before_go,
        after_go: cgroup_ops(input.cgroups, &input.scratch.cgroup, ro_sys),
        after_dev,
    }
}

/// The mount points in /sys/fs/cgroup's tmpfs of a host with v1 hierarchies (none on a
/// pure v2 host): each hierarchy's, named as on the host, with its mount options, and
/// `unified` (no options: cgroup2) for a hybrid host's v2 part. The launcher makes
/// them in the scratch tmpfs before the go message, for the child to mount on.
pub fn cgroup_mount_points(mounts: &CgroupMounts) -> Vec<(&str, Option<&str>)> {
    let mut points: Vec<(&str, Option<&str>)> = mounts
        .v1
        .iter()
        .map(|(options, host)| {
            let name = host.file_name().and_then(|n| n.to_str()).unwrap_or(options);
            (name, Some(options.as_str()))
        })
        .collect();
    if !points.is_empty() && mounts.unified.is_some() {
        points.push(("unified", None));
    }
    points
}

/// /sys/fs/cgroup, read-only: cgroup2 when the host is pure v2; otherwise a tmpfs with
/// each v1 hierarchy (and the v2 part of a hybrid host) mounted in it. With a cgroup
/// namespace each shows the container's own cgroup as its root.
fn cgroup_ops(mounts: &CgroupMounts, tmpfs: &Path, ro: MountFlags) -> Vec<MountOp> {
    if mounts.v1.is_empty() {
        return vec![fs("cgroup2", "/sys/fs/cgroup", ro, "")];
    }
    // A tmpfs directory, made read-only once the hierarchies are mounted in it.
    let mut ops = vec![MountOp::Bind {
        source: tmpfs.to_path_buf(),
        target: "/sys/fs/cgroup".into(),
        readonly: false,
    }];
    for (name, options) in cgroup_mount_points(mounts) {
        let (fstype, data) = match options {
            Some(options) => ("cgroup", options),
            None => ("cgroup2", ""),
        };
        ops.push(fs(fstype, &format!("/sys/fs/cgroup/{name}"), ro, data));
    }
    ops.push(MountOp::Seal {
        target: "/sys/fs/cgroup".into(),
    });
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> Scratch {
        Scratch {
            etc_files: vec![],
            cgroup: "/b/cgroup".into(),
            empty: "/b/empty".into(),
        }
    }

    fn input<'a>(
        cgroups: &'a CgroupMounts,
        binds: &'a [(PathBuf, String, bool)],
        scratch: &'a Scratch,
    ) -> PlanInput<'a> {
        PlanInput {
            binds,
            scratch,
            cgroups,
        }
    }

    fn target(op: &MountOp) -> &str {
        match op {
            MountOp::Fs { target, .. } | MountOp::Bind { target, .. } | MountOp::Seal { target } => target,
            MountOp::Attach { target } => target,
            MountOp::Mask { target, .. } | MountOp::ReadOnly { target } => target,
        }
    }

    #[test]
    fn proc_sys_and_dev_before_the_go_cgroups_after_it_masks_last() {
        let cg = CgroupMounts {
            unified: Some("/sys/fs/cgroup".into()),
            v1: vec![],
        };
        let binds = [(PathBuf::from("/data"), "/mnt/data".to_string(), true)];
        let mut scratch = scratch();
        scratch.etc_files = vec![("/b/hostname".into(), "/etc/hostname")];
        let plan = plan(&input(&cg, &binds, &scratch));
        let targets = |ops: &[MountOp]| ops.iter().map(|o| target(o).to_string()).collect::<Vec<_>>();
        assert_eq!(targets(&plan.before_go), ["/proc", "/sys", "/dev", "/etc/hostname"]);
        assert_eq!(
            plan.before_go[2],
            MountOp::Attach { target: DEV },
            "/dev is the launcher's"
        );
        assert_eq!(targets(&plan.after_go), ["/sys/fs/cgroup"]);
        assert!(
            matches!(&plan.after_go[0], MountOp::Fs { fstype: "cgroup2", flags, .. } if flags.contains(MountFlags::RDONLY))
        );
        let last = targets(&plan.after_dev);
        assert_eq!(
            last[..4],
            ["/dev/pts", "/dev/shm", "/dev/mqueue", "/mnt/data"],
            "the launcher's mounts in /dev first, then the rest of /dev, then the user's binds"
        );
        assert!(
            plan.before_go
                .iter()
                .chain(&plan.after_go)
                .all(|o| !target(o).starts_with("/dev/")),
            "nothing before the /dev message looks into /dev, which the launcher fills meanwhile"
        );
        let bind = plan
            .after_dev
            .iter()
            .position(|o| matches!(o, MountOp::Bind { readonly: true, .. }))
            .unwrap();
        let first_mask = plan
            .after_dev
            .iter()
            .position(|o| matches!(o, MountOp::Mask { .. }))
            .unwrap();
        assert!(
            bind < first_mask,
            "masks must come after user binds so a bind cannot unmask"
        );
        assert!(plan.after_dev.contains(&MountOp::Mask {
            target: "/proc/kcore".into(),
            empty: "/b/empty".into()
        }));
        assert!(!plan
            .before_go
            .iter()
            .any(|o| matches!(o, MountOp::Mask { .. } | MountOp::ReadOnly { .. })));

        let unbound = super::plan(&input(&cg, &[], &scratch));
        let hidden = |ops: &[MountOp]| {
            ops.iter()
                .filter(|o| matches!(o, MountOp::Mask { .. } | MountOp::ReadOnly { .. }))
                .count()
        };
        assert_eq!(
            (hidden(&unbound.before_go), hidden(&unbound.after_dev)),
            (MASKED.len() + READ_ONLY.len(), 0),
            "without binds the masks and read-only paths come before the go message"
        );
        assert_eq!(
            targets(&unbound.before_go)[..4],
            ["/proc", "/sys", "/dev", "/etc/hostname"]
        );
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
        assert_eq!(
            cgroup_mount_points(&cg),
            [("memory", Some("memory")), ("cpu", Some("cpu")), ("unified", None)],
            "what the launcher makes in the scratch tmpfs"
        );
        assert!(cgroup_mount_points(&CgroupMounts {
            unified: Some("/sys/fs/cgroup".into()),
            v1: vec![]
        })
        .is_empty());
        let ops = cgroup_ops(&cg, Path::new("/b/cgroup"), MountFlags::RDONLY);
        let targets: Vec<&str> = ops.iter().map(target).collect();
        assert_eq!(
            targets,
            [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup"
            ]
        );
        assert!(
            matches!(&ops[0], MountOp::Bind { source, readonly: false, .. } if source == Path::new("/b/cgroup")),
            "the hierarchies' mount points are in the scratch tmpfs: {:?}",
            ops[0]
        );
        assert_eq!(
            ops.last(),
            Some(&MountOp::Seal {
                target: "/sys/fs/cgroup".into()
            })
        );
    }
}
