//! Resource limits and cleanup for containers through cgroups, on cgroup v1, v2 or a hybrid
//! of both.
//!
//! Hosts differ: laptops run pure cgroup v2; many servers (this project's test machine
//! among them) are hybrid, with cpu, memory, pids and devices on v1 hierarchies and an
//! almost empty cgroup2 beside them. So the version is decided PER CONTROLLER
//! ([`Hierarchy::detect`]), never once per host (crun refuses hybrid hosts for this reason).
//!
//! A container's cgroup is `<own>/petri/<name>` in each hierarchy, where `<own>` is this
//! process's own cgroup there (/proc/self/cgroup): petri only ever touches the subtree it
//! was started in, so it nests inside systemd units, CI jobs and other containers. The
//! `petri` directory is shared by all containers and is left in place; only the container
//! directories ([`Cgroup::paths`]) are created and removed per container.
//!
//! Work is planned, then executed: [`Hierarchy::plan`] turns a name and [`Limits`] into the
//! directories to make and the exact file writes, purely, so the v1, v2 and hybrid layouts
//! are tested against fixtures; [`Hierarchy::create`] carries the plan out, or
//! [`Hierarchy::begin`] and [`PendingCgroup::finish`] do, in two halves, for a launcher that
//! sets limits while the container's process is still building its namespaces.
//!
//! | limit   | v1                                              | v2                                  |
//! |---------|-------------------------------------------------|-------------------------------------|
//! | cpu     | cpu.cfs_period_us, cpu.cfs_quota_us             | cpu.max                             |
//! | memory  | memory.limit_in_bytes, memory.memsw.limit_in_bytes | memory.max, memory.swap.max 0, memory.oom.group 1 |
//! | pids    | pids.max                                        | pids.max                            |
//! | devices | devices.deny "a", devices.allow per rule        | an eBPF filter ([`crate::sys::bpf`]) |

mod detect;
mod devices;
mod files;
mod live;
mod plan;

use std::io;
use std::path::PathBuf;

pub(crate) use detect::NEEDED;
pub use detect::{CgroupMounts, Controller, Hierarchy, Version};
pub use devices::{default_devices, DeviceKind, DeviceRule};
pub use live::{Cgroup, OomCounter, PendingCgroup};
pub use plan::{DirPlan, Plan, Step};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("write {value} to {path}: {source}")]
    Write {
        value: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what}: cannot parse line {line:?}")]
    Malformed { what: String, line: String },
    #[error("invalid cgroup name {0:?}: use 1 to 255 of A-Z a-z 0-9 _ . - (and not . or ..)")]
    InvalidName(String),
    #[error("invalid {field} limit: {detail}")]
    InvalidLimit { field: &'static str, detail: String },
    #[error("cannot limit {controller}: {detail}")]
    Unavailable { controller: &'static str, detail: String },
    #[error("no cgroup filesystem is mounted (nothing of type cgroup or cgroup2 in /proc/self/mountinfo)")]
    NoCgroupFs,
    #[error("cgroup {0} already exists (a container of that name, or one left behind)")]
    Exists(PathBuf),
    #[error("attach the device filter to {path}: {source}")]
    DeviceFilter { path: PathBuf, source: io::Error },
    #[error("processes {pids:?} in {path} survived SIGKILL")]
    StillRunning { path: PathBuf, pids: Vec<i32> },
}

impl CgroupError {
    /// The errno of an I/O failure, if this is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            CgroupError::Io { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::DeviceFilter { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// What a container may use. `None` means no limit of that kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// CPU time in cores (0.5 = half of one core), enforced per 100 ms period.
    pub cpu: Option<f64>,
    /// Memory in bytes: a hard limit, and no swap beyond it.
    pub memory: Option<u64>,
    /// The most processes and threads at once.
    pub pids: Option<u64>,
    /// The devices it may open or create; every other device is denied (so an empty list
    /// denies all, and `DeviceRule::new(DeviceKind::All, None, None, "rwm")` allows all).
    pub devices: Vec<DeviceRule>,
}

impl Default for Limits {
    /// No resource limits, and Docker's default device list.
    fn default() -> Limits {
        Limits {
            cpu: None,
            memory: None,
            pids: None,
            devices: default_devices(),
        }
    }
}

/// A container name as a cgroup directory: one safe path component.
pub(crate) fn validate_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_safe_components() {
        for good in ["a", "web-1", "exp_2.run", "...", &"x".repeat(255)] {
            validate_name(good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "/a", "a b", "ü", "a\n", &"x".repeat(256)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_name_the_operation_and_path() {
        let e = CgroupError::Write {
            value: "512000000".into(),
            path: "/sys/fs/cgroup/memory/x/memory.limit_in_bytes".into(),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert!(e
            .to_string()
            .starts_with("write 512000000 to /sys/fs/cgroup/memory/x/memory.limit_in_bytes: Invalid argument"));
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn default_limits_use_the_default_devices() {
        assert_eq!(Limits::default().devices, default_devices());
    }
}
