//! From a container name and its [`Limits`] to the directories to make and the exact cgroup
//! file writes, for whichever version each controller is on. Pure: nothing here touches
//! the filesystem, so every layout's plan is checked in unit tests and `create` only
//! executes.

use std::path::{Path, PathBuf};

use super::detect::{Controller, Hierarchy, Version, NEEDED};
use super::devices::{self, DeviceRule};
use super::{validate_name, CgroupError, Limits};

/// The CFS period, in microseconds: Docker's and the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's smallest quota (1 ms per period).
const MIN_QUOTA_US: u64 = 1_000;
/// Beyond any machine, and far below the kernel's quota ceiling.
const MAX_CORES: f64 = 1_000_000.0;

/// The directory under our own cgroup that holds every container's cgroup.
pub(crate) const BASE: &str = "petri";
/// On v2, the leaf petri moves into when its own cgroup has processes and so cannot hand
/// controllers to children (see `live::enable_in_own`). Its parent counts as our own.
pub(crate) const HOST_LEAF: &str = "petri-host";

/// The controllers whose v2 interface files need the controller enabled from our own
/// cgroup down (devices use an eBPF program, and cpu.stat exists without `cpu`).
const V2_ENABLED: [&str; 3] = ["cpu", "memory", "pids"];

/// One hierarchy's part of a container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirPlan {
    pub version: Version,
    /// Our own cgroup (on v2, the parent of [`HOST_LEAF`] if we are in it).
    pub parent: PathBuf,
    /// `<parent>/petri`, shared by all containers and kept.
    pub base: PathBuf,
    /// `<base>/<name>`, the container's own directory.
    pub path: PathBuf,
    /// v2: controllers to enable in `parent`'s and `base`'s `cgroup.subtree_control`.
    pub enable: Vec<&'static str>,
    /// v1: the hierarchy has cpuset, whose new cgroups start with no cpus or mems.
    pub cpuset: bool,
}

/// One action on a created cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write `value` to the cgroup file `path`; an `optional` file the kernel lacks (swap
    /// accounting off, an older kernel) is skipped.
    Write {
        path: PathBuf,
        value: String,
        optional: bool,
    },
    /// Attach the eBPF device filter allowing `rules` to the cgroup2 directory `dir`.
    DeviceFilter { dir: PathBuf, rules: Vec<DeviceRule> },
}

/// Everything `create` does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub dirs: Vec<DirPlan>,
    pub steps: Vec<Step>,
}

fn write(dir: &Path, file: &str, value: impl ToString) -> Step {
    Step::Write {
        path: dir.join(file),
        value: value.to_string(),
        optional: false,
    }
}

fn optional(dir: &Path, file: &str, value: impl ToString) -> Step {
    Step::Write {
        path: dir.join(file),
        value: value.to_string(),
        optional: true,
    }
}

impl Hierarchy {
    /// The container cgroup `name` with `limits`: directories and writes, validated.
    pub fn plan(&self, name: &str, limits: &Limits) -> Result<Plan, CgroupError> {
        validate_name(name)?;
        validate_limits(limits)?;
        let dirs = self.dirs(name);
        let mut steps = Vec::new();
        self.cpu_steps(&dirs, limits.cpu, &mut steps)?;
        self.memory_steps(&dirs, limits.memory, &mut steps)?;
        if let Some(max) = limits.pids {
            let (_, dir) = self.need(&dirs, "pids")?;
            steps.push(write(&dir.path, "pids.max", max));
        }
        self.device_steps(&dirs, &limits.devices, &mut steps)?;
        Ok(Plan { dirs, steps })
    }

    /// One directory per hierarchy in use: the cgroup2 one first (so destroy's
    /// `cgroup.kill` goes first), then the v1 ones of [`NEEDED`].
    pub(crate) fn dirs(&self, name: &str) -> Vec<DirPlan> {
        let mut out: Vec<DirPlan> = Vec::new();
        let used = self
            .unified
            .iter()
            .chain(NEEDED.iter().filter_map(|n| self.controllers.get(n)));
        for c in used {
            if out.iter().any(|d| d.parent == parent_of(c)) {
                continue;
            }
            let parent = parent_of(c);
            let base = parent.join(BASE);
            out.push(DirPlan {
                version: c.version,
                path: base.join(name),
                base,
                parent,
                enable: self.v2_enabled(c),
                cpuset: c.version == Version::V1 && c.options.split(',').any(|o| o == "cpuset"),
            });
        }
        out
    }

    /// The v2 controllers living in `c`'s hierarchy that must be enabled for children.
    fn v2_enabled(&self, c: &Controller) -> Vec<&'static str> {
        if c.version == Version::V1 {
            return Vec::new();
        }
        V2_ENABLED
            .into_iter()
            .filter(|n| {
                self.controllers
                    .get(n)
                    .is_some_and(|x| x.version == Version::V2 && x.mount == c.mount)
            })
            .collect()
    }

    /// The controller and the container directory it writes in, or why it is missing.
    fn need<'a>(
        &'a self,
        dirs: &'a [DirPlan],
        name: &'static str,
    ) -> Result<(&'a Controller, &'a DirPlan), CgroupError> {
        let c = self.controllers.get(name).ok_or_else(|| CgroupError::Unavailable {
            controller: name,
            detail: match &self.unified {
                Some(u) => format!(
                    "no {name} controller: not mounted as cgroup v1, and not in {}",
                    u.own_dir.join("cgroup.controllers").display()
                ),
                None => format!("no {name} controller is mounted"),
            },
        })?;
        let dir = dirs
            .iter()
            .find(|d| d.parent == parent_of(c))
            .expect("dirs() covers every controller");
        Ok((c, dir))
    }

    fn cpu_steps(&self, dirs: &[DirPlan], cpu: Option<f64>, steps: &mut Vec<Step>) -> Result<(), CgroupError> {
        let Some(cores) = cpu else { return Ok(()) };
        let quota = (cores * CPU_PERIOD_US as f64).round() as u64;
        let (c, dir) = self.need(dirs, "cpu")?;
        match c.version {
            Version::V1 => {
                steps.push(write(&dir.path, "cpu.cfs_period_us", CPU_PERIOD_US));
                steps.push(write(&dir.path, "cpu.cfs_quota_us", quota));
            }
            Version::V2 => steps.push(write(&dir.path, "cpu.max", format!("{quota} {CPU_PERIOD_US}"))),
        }
        Ok(())
    }

    /// A hard limit without swap; on v2 also `memory.oom.group`, so an OOM kills the
    /// whole container rather than leave it half-dead.
    fn memory_steps(&self, dirs: &[DirPlan], memory: Option<u64>, steps: &mut Vec<Step>) -> Result<(), CgroupError> {
        if let Some(bytes) = memory {
            let (c, dir) = self.need(dirs, "memory")?;
            match c.version {
                Version::V1 => {
                    steps.push(write(&dir.path, "memory.limit_in_bytes", bytes));
                    steps.push(optional(&dir.path, "memory.memsw.limit_in_bytes", bytes));
                }
                Version::V2 => {
                    steps.push(write(&dir.path, "memory.max", bytes));
                    steps.push(optional(&dir.path, "memory.swap.max", 0));
                }
            }
        }
        if let Ok((c, dir)) = self.need(dirs, "memory") {
            if c.version == Version::V2 {
                steps.push(optional(&dir.path, "memory.oom.group", 1));
            }
        }
        Ok(())
    }

    /// Deny everything, then allow the rules. A list that allows everything needs nothing.
    fn device_steps(&self, dirs: &[DirPlan], rules: &[DeviceRule], steps: &mut Vec<Step>) -> Result<(), CgroupError> {
        if rules.iter().any(devices::allows_everything) {
            return Ok(());
        }
        let (c, dir) = self.need(dirs, "devices")?;
        match c.version {
            Version::V1 => {
                steps.push(write(&dir.path, "devices.deny", "a"));
                for rule in rules {
                    for line in devices::v1_lines(rule)? {
                        steps.push(write(&dir.path, "devices.allow", line));
                    }
                }
            }
            Version::V2 => steps.push(Step::DeviceFilter {
                dir: dir.path.clone(),
                rules: rules.to_vec(),
            }),
        }
        Ok(())
    }
}

/// Where a container's `petri` directory goes for controller `c`.
pub(crate) fn parent_of(c: &Controller) -> PathBuf {
    match (c.version, c.own_dir.file_name(), c.own_dir.parent()) {
        (Version::V2, Some(leaf), Some(parent)) if leaf == HOST_LEAF => parent.to_path_buf(),
        _ => c.own_dir.clone(),
    }
}

fn validate_limits(limits: &Limits) -> Result<(), CgroupError> {
    let invalid = |field, detail: String| Err(CgroupError::InvalidLimit { field, detail });
    if let Some(cores) = limits.cpu {
        if !cores.is_finite() || cores <= 0.0 {
            return invalid("cpu", format!("{cores} cores: must be a positive number"));
        }
        if (cores * CPU_PERIOD_US as f64).round() < MIN_QUOTA_US as f64 || cores > MAX_CORES {
            return invalid("cpu", format!("{cores} cores: must be between 0.01 and {MAX_CORES}"));
        }
    }
    if limits.memory == Some(0) {
        return invalid("memory", "0 bytes (leave it unset for no limit)".into());
    }
    if limits.pids == Some(0) {
        return invalid("pids", "0 processes (leave it unset for no limit)".into());
    }
    devices::validate(&limits.devices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::detect::tests::{hybrid, pure_v2, v1_only};
    use crate::cgroup::{default_devices, DeviceKind};

    fn limits() -> Limits {
        Limits {
            cpu: Some(0.5),
            memory: Some(64 << 20),
            pids: Some(32),
            devices: vec![DeviceRule::char(1, Some(3)), DeviceRule::char(136, None)],
        }
    }

    /// The writes as (path below `root`, value, optional).
    fn writes(plan: &Plan, root: &Path) -> Vec<(String, String, bool)> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Write { path, value, optional } => Some((
                    path.strip_prefix(root).unwrap().display().to_string(),
                    value.clone(),
                    *optional,
                )),
                Step::DeviceFilter { .. } => None,
            })
            .collect()
    }

    fn w(path: &str, value: &str, optional: bool) -> (String, String, bool) {
        (path.to_string(), value.to_string(), optional)
    }

    #[test]
    fn hybrid_writes_v1_files_under_each_own_path() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = hybrid(tmp.path()).plan("c1", &limits()).unwrap();
        let dirs: Vec<_> = plan
            .dirs
            .iter()
            .map(|d| (d.version, d.path.strip_prefix(tmp.path()).unwrap()))
            .collect();
        assert_eq!(
            dirs,
            [
                (Version::V2, Path::new("unified/petri/c1")),
                (Version::V1, Path::new("cpu/petri/c1")),
                (Version::V1, Path::new("cpuacct/petri/c1")),
                (Version::V1, Path::new("memory/process_api/e437/petri/c1")),
                (Version::V1, Path::new("pids/petri/c1")),
                (Version::V1, Path::new("devices/petri/c1")),
            ]
        );
        assert!(plan.dirs.iter().all(|d| d.enable.is_empty() && !d.cpuset));
        assert_eq!(
            writes(&plan, tmp.path()),
            [
                w("cpu/petri/c1/cpu.cfs_period_us", "100000", false),
                w("cpu/petri/c1/cpu.cfs_quota_us", "50000", false),
                w(
                    "memory/process_api/e437/petri/c1/memory.limit_in_bytes",
                    "67108864",
                    false
                ),
                w(
                    "memory/process_api/e437/petri/c1/memory.memsw.limit_in_bytes",
                    "67108864",
                    true
                ),
                w("pids/petri/c1/pids.max", "32", false),
                w("devices/petri/c1/devices.deny", "a", false),
                w("devices/petri/c1/devices.allow", "c 1:3 rwm", false),
                w("devices/petri/c1/devices.allow", "c 136:* rwm", false),
            ]
        );
        assert_eq!(plan.steps.len(), 8, "no eBPF filter when v1 devices exists");
    }

    #[test]
    fn pure_v2_enables_controllers_and_attaches_a_filter() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = pure_v2(tmp.path()).plan("c1", &limits()).unwrap();
        let own = tmp.path().join("user.slice/session-2.scope");
        assert_eq!(
            plan.dirs,
            [DirPlan {
                version: Version::V2,
                parent: own.clone(),
                base: own.join("petri"),
                path: own.join("petri/c1"),
                enable: vec!["cpu", "memory", "pids"],
                cpuset: false,
            }]
        );
        let d = "user.slice/session-2.scope/petri/c1";
        assert_eq!(
            writes(&plan, tmp.path()),
            [
                w(&format!("{d}/cpu.max"), "50000 100000", false),
                w(&format!("{d}/memory.max"), "67108864", false),
                w(&format!("{d}/memory.swap.max"), "0", true),
                w(&format!("{d}/memory.oom.group"), "1", true),
                w(&format!("{d}/pids.max"), "32", false),
            ]
        );
        assert_eq!(
            plan.steps.last(),
            Some(&Step::DeviceFilter {
                dir: own.join("petri/c1"),
                rules: limits().devices
            })
        );
    }

    #[test]
    fn v1_only_uses_one_dir_for_comounted_cpu_and_cpuacct() {
        let tmp = tempfile::tempdir().unwrap();
        let h = v1_only(tmp.path());
        let plan = h
            .plan(
                "c1",
                &Limits {
                    cpu: Some(2.0),
                    ..Limits::default()
                },
            )
            .unwrap();
        let dirs: Vec<_> = plan
            .dirs
            .iter()
            .map(|d| d.path.strip_prefix(tmp.path()).unwrap())
            .collect();
        assert_eq!(
            dirs,
            [
                Path::new("cpu,cpuacct/job/petri/c1"),
                Path::new("memory/job/petri/c1"),
                Path::new("pids/job/petri/c1"),
                Path::new("devices/job/petri/c1")
            ]
        );
        let w = writes(&plan, tmp.path());
        assert_eq!(
            w[1],
            (
                "cpu,cpuacct/job/petri/c1/cpu.cfs_quota_us".into(),
                "200000".into(),
                false
            )
        );
        assert_eq!(
            w.iter().filter(|(p, _, _)| p.ends_with("devices.allow")).count(),
            default_devices().len()
        );
    }

    #[test]
    fn v2_leaf_of_our_own_is_not_nested_into() {
        let tmp = tempfile::tempdir().unwrap();
        fs_leaf(tmp.path());
        let info = crate::cgroup::detect::tests::mountinfo(&[(tmp.path(), "cgroup2", "rw")]);
        let h = Hierarchy::detect_from(&info, "0::/svc/petri-host\n").unwrap();
        let plan = h.plan("c1", &Limits::default()).unwrap();
        assert_eq!(plan.dirs[0].path, tmp.path().join("svc/petri/c1"));
        assert_eq!(plan.dirs[0].enable, ["memory"]);
    }

    fn fs_leaf(root: &Path) {
        std::fs::create_dir_all(root.join("svc/petri-host")).unwrap();
        std::fs::write(root.join("svc/petri-host/cgroup.controllers"), "memory\n").unwrap();
    }

    #[test]
    fn missing_controllers_and_bad_limits_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cgroup.controllers"), "memory\n").unwrap();
        let info = crate::cgroup::detect::tests::mountinfo(&[(tmp.path(), "cgroup2", "rw")]);
        let h = Hierarchy::detect_from(&info, "0::/\n").unwrap();
        let e = h
            .plan(
                "c",
                &Limits {
                    pids: Some(4),
                    ..Limits::default()
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("cannot limit pids: no pids controller"), "{e}");
        for cpu in [0.0, -1.0, f64::NAN, f64::INFINITY, 0.001, 2e6] {
            let e = h
                .plan(
                    "c",
                    &Limits {
                        cpu: Some(cpu),
                        ..Limits::default()
                    },
                )
                .unwrap_err();
            assert!(
                matches!(e, CgroupError::InvalidLimit { field: "cpu", .. }),
                "{cpu}: {e}"
            );
        }
        assert!(h
            .plan(
                "c",
                &Limits {
                    memory: Some(0),
                    ..Limits::default()
                }
            )
            .is_err());
        assert!(matches!(
            h.plan("../x", &Limits::default()),
            Err(CgroupError::InvalidName(_))
        ));
    }

    #[test]
    fn allow_all_devices_needs_no_device_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let info = crate::cgroup::detect::tests::mountinfo(&[(&tmp.path().join("memory"), "cgroup", "rw,memory")]);
        let h = Hierarchy::detect_from(&info, "1:memory:/\n").unwrap();
        let all = Limits {
            devices: vec![DeviceRule::new(DeviceKind::All, None, None, "rwm")],
            ..Limits::default()
        };
        assert!(h.plan("c", &all).unwrap().steps.is_empty());
        assert!(matches!(
            h.plan("c", &Limits::default()),
            Err(CgroupError::Unavailable {
                controller: "devices",
                ..
            })
        ));
    }
}
