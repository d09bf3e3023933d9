//! A container's cgroup on the host: creating it from a [`Plan`], putting processes in it,
//! reading what it used, and tearing it down.
//!
//! On v2 a controller's files appear in `<own>/petri/<name>` only when the controller is
//! enabled in `cgroup.subtree_control` of `<own>` and of `<own>/petri`. v2 also forbids
//! enabling controllers for the children of a cgroup that has processes of its own ("no
//! internal processes"), which is the usual case for a shell's session scope or a service.
//! Then petri does what Docker-in-Docker's entrypoint does: it makes a leaf,
//! `<own>/petri-host`, moves itself there and tries again; if other processes (the shell)
//! still sit in `<own>`, they are moved to the leaf too. Later runs started from that leaf
//! treat its parent as their own cgroup, so the tree does not grow with each run.
//!
//! Teardown kills before it removes: `cgroup.kill` where the kernel has it (v2, 5.14+),
//! and SIGKILL for each listed pid until none is left (v1, and as a check on v2), then
//! `rmdir` children first, retrying `EBUSY` while the killed processes finish exiting.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{getpid, Pid};

use super::detect::{Hierarchy, Version, NEEDED};
use super::devices;
use super::files;
use super::plan::{parent_of, DirPlan, Plan, Step, HOST_LEAF};
use super::{validate_name, CgroupError, Limits};
use crate::sys::bpf;

/// A cgroup's OOM-kill counter, open ([`Cgroup::oom_counter`]).
pub struct OomCounter {
    file: fs::File,
    path: PathBuf,
}

impl OomCounter {
    /// Whether the kernel OOM-killed a process in the cgroup so far.
    pub fn killed(&self) -> Result<bool, CgroupError> {
        let text = files::read_open(&self.file, &self.path)?;
        Ok(files::keyed_in(&text, &self.path, "oom_kill")?.unwrap_or(0) > 0)
    }
}

/// How long teardown waits for processes to die, and then for directories to go.
const GIVE_UP_AFTER: Duration = Duration::from_secs(2);

/// One container's cgroup, in every hierarchy it lives in.
#[derive(Debug)]
pub struct Cgroup {
    name: String,
    /// The container directory in each hierarchy, cgroup2's first.
    dirs: Vec<(Version, PathBuf)>,
    /// The directory each controller of [`NEEDED`] uses.
    controllers: Vec<(&'static str, Version, PathBuf)>,
    unified: Option<PathBuf>,
    /// The v2 device filter; the kernel keeps it attached as long as the cgroup exists.
    device_filter: Option<OwnedFd>,
}

/// A cgroup half made by [`Hierarchy::begin`]: its cgroup2 directory exists (a clone3 can
/// be born in it), its v1 directories and its limits come with [`PendingCgroup::finish`].
///
/// The split lets a launcher clone the container's process first and set the limits
/// while that process builds its namespaces, on the other core. Nothing may run in the
/// cgroup before `finish` has returned: the process waits for the launcher's word.
#[derive(Debug)]
#[must_use = "finish or abandon a pending cgroup: it has directories on the host"]
pub struct PendingCgroup {
    cgroup: Cgroup,
    plan: Plan,
}

impl Hierarchy {
    /// Creates the container's cgroup `<own>/petri/<name>` in every hierarchy in use and
    /// applies `limits`. On failure, whatever this call created is removed again.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        self.begin(name, limits)?.finish()
    }

    /// The first half of [`Hierarchy::create`]: plans, and makes the cgroup2 directory.
    pub fn begin(&self, name: &str, limits: &Limits) -> Result<PendingCgroup, CgroupError> {
        let plan = self.plan(name, limits)?;
        let mut cgroup = self.handle(name, &plan.dirs, Vec::new());
        let mut v2 = plan.dirs.iter().filter(|d| d.version == Version::V2);
        if let Err(e) = v2.try_for_each(|d| cgroup.make(d)) {
            tracing::debug!(cgroup = name, error = %e, "cgroup2 directory failed; removing what was made");
            let _ = cgroup.destroy();
            return Err(e);
        }
        Ok(PendingCgroup { cgroup, plan })
    }

    /// The existing cgroup of container `name` (after a restart of petri, say), without
    /// changing it; hierarchies where it is missing are left out.
    pub fn open(&self, name: &str) -> Result<Cgroup, CgroupError> {
        validate_name(name)?;
        let plans = self.dirs(name);
        let existing: Vec<(Version, PathBuf)> = plans
            .iter()
            .filter(|d| d.path.is_dir())
            .map(|d| (d.version, d.path.clone()))
            .collect();
        if existing.is_empty() {
            let path = plans.first().map(|d| d.path.clone()).unwrap_or_default();
            let source = std::io::Error::from(std::io::ErrorKind::NotFound);
            return Err(CgroupError::Io {
                op: "open cgroup",
                path,
                source,
            });
        }
        Ok(self.handle(name, &plans, existing))
    }

    fn handle(&self, name: &str, plans: &[DirPlan], dirs: Vec<(Version, PathBuf)>) -> Cgroup {
        let controllers: Vec<_> = NEEDED
            .iter()
            .filter_map(|n| {
                let c = self.controllers.get(n)?;
                let d = plans.iter().find(|d| d.parent == parent_of(c))?;
                Some((*n, c.version, d.path.clone()))
            })
            .collect();
        Cgroup {
            name: name.to_string(),
            dirs,
            controllers,
            unified: plans.iter().find(|d| d.version == Version::V2).map(|d| d.path.clone()),
            device_filter: None,
        }
    }
}

impl PendingCgroup {
    /// The cgroup2 directory, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.cgroup.unified_dir()
    }

    /// The `tasks` files of the v1 hierarchies, which [`PendingCgroup::finish`] makes. A
    /// single-threaded process joins them by writing "0" to each itself: moving only the
    /// calling thread skips the global threadgroup lock, and with it an RCU grace period
    /// (milliseconds) that writing a pid to `cgroup.procs` costs. Writing the thread's
    /// id from another process takes that lock too (the kernel skips it only for "0"):
    /// a launcher that moved its child this way was 5 ms slower per start (median 13.8
    /// against 8.3 ms). cgroup2 is joined at clone time (CLONE_INTO_CGROUP).
    pub fn v1_task_files(&self) -> Vec<PathBuf> {
        self.plan
            .dirs
            .iter()
            .filter(|d| d.version == Version::V1)
            .map(|d| d.path.join("tasks"))
            .collect()
    }

    /// Makes the v1 directories and applies the limits. On failure, everything the
    /// cgroup has on the host is removed again.
    pub fn finish(self) -> Result<Cgroup, CgroupError> {
        let PendingCgroup { mut cgroup, plan } = self;
        let mut v1 = plan.dirs.iter().filter(|d| d.version == Version::V1);
        let mut writer = files::Writer::default();
        let built = v1
            .try_for_each(|d| cgroup.make(d))
            .and_then(|()| plan.steps.iter().try_for_each(|step| cgroup.run(step, &mut writer)));
        drop(writer);
        match built {
            Ok(()) => {
                tracing::debug!(cgroup = cgroup.name, dirs = ?cgroup.paths(), "cgroup created");
                Ok(cgroup)
            }
            Err(e) => {
                tracing::debug!(cgroup = cgroup.name, error = %e, "cgroup setup failed; removing what was made");
                let _ = cgroup.destroy();
                Err(e)
            }
        }
    }

    /// Removes what [`Hierarchy::begin`] made, when the launch fails before `finish`.
    pub fn abandon(self) -> Result<(), CgroupError> {
        self.cgroup.destroy()
    }
}

impl Cgroup {
    fn make(&mut self, d: &DirPlan) -> Result<(), CgroupError> {
        make_dir(d)?;
        self.dirs.push((d.version, d.path.clone()));
        Ok(())
    }

    fn run(&mut self, step: &Step, writer: &mut files::Writer) -> Result<(), CgroupError> {
        match step {
            Step::Write { path, value, optional } => match writer.write(path, value) {
                Err(e) if *optional && e.raw_os_error() == Some(libc::ENOENT) => {
                    tracing::debug!(file = %path.display(), "optional cgroup file absent; skipped");
                    Ok(())
                }
                other => other,
            },
            Step::DeviceFilter { dir, rules } => {
                let rules = devices::bpf_rules(rules)?;
                let fd = bpf::attach_device_filter(dir, &rules).map_err(|source| CgroupError::DeviceFilter {
                    path: dir.clone(),
                    source,
                })?;
                self.device_filter = Some(fd);
                Ok(())
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves process `pid` (all its threads) into this cgroup in every hierarchy.
    pub fn add(&self, pid: Pid) -> Result<(), CgroupError> {
        let value = pid.as_raw_pid().to_string();
        for (_, dir) in &self.dirs {
            files::write(&dir.join("cgroup.procs"), &value)?;
        }
        Ok(())
    }

    /// The container's directory in each hierarchy (what [`Cgroup::destroy`] removes).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }

    /// The cgroup2 directory.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// The container directory that holds `controller`'s files ("cpu", "cpuacct", "memory",
    /// "pids"; "devices" is cgroup2's directory when the eBPF filter is used).
    pub fn controller_dir(&self, controller: &str) -> Option<(Version, &Path)> {
        let (_, version, dir) = self.controllers.iter().find(|(n, _, _)| *n == controller)?;
        Some((*version, dir.as_path()))
    }

    /// Where cpuacct.usage (v1) or cpu.stat (v2) is.
    fn usage_dir(&self) -> Option<(Version, &Path)> {
        let v1 = self.controller_dir("cpuacct").filter(|(v, _)| *v == Version::V1);
        v1.or_else(|| self.unified_dir().map(|u| (Version::V2, u)))
    }

    /// The processes in it now (and in any cgroup below it), sorted.
    pub fn procs(&self) -> Result<Vec<Pid>, CgroupError> {
        let Some((_, dir)) = self.dirs.first() else {
            return Ok(Vec::new());
        };
        let mut pids: Vec<Pid> = files::procs_in_tree(dir)?
            .into_iter()
            .filter_map(Pid::from_raw)
            .collect();
        pids.sort_by_key(|p| p.as_raw_pid());
        pids.dedup();
        Ok(pids)
    }

    /// Whether the kernel OOM-killed a process in it: `oom_kill` of memory.events (v2) or
    /// of memory.oom_control (v1). False when there is no memory controller to ask.
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        self.oom_counter()?.map_or(Ok(false), |c| c.killed())
    }

    /// The file [`Cgroup::oom_killed`] reads, opened now, to read when a container has
    /// exited: on that path, opening a file deep in a cgroup tree costs more than
    /// reading it. `None` when there is no memory controller to ask.
    pub fn oom_counter(&self) -> Result<Option<OomCounter>, CgroupError> {
        let Some((version, dir)) = self.controller_dir("memory") else {
            return Ok(None);
        };
        let path = dir.join(match version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        });
        let file = fs::File::open(&path).map_err(|source| CgroupError::Io {
            op: "open",
            path: path.clone(),
            source,
        })?;
        Ok(Some(OomCounter { file, path }))
    }

    /// CPU time used by everything in it: cpuacct.usage (v1, nanoseconds) or `usage_usec`
    /// of cpu.stat (v2).
    pub fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        match self.usage_dir() {
            Some((Version::V1, dir)) => {
                let path = dir.join("cpuacct.usage");
                let text = files::read(&path)?;
                let ns = text.trim().parse().map_err(|_| CgroupError::Malformed {
                    what: path.display().to_string(),
                    line: text.trim().to_string(),
                })?;
                Ok(Duration::from_nanos(ns))
            }
            Some((Version::V2, dir)) => {
                let path = dir.join("cpu.stat");
                let missing = || CgroupError::Malformed {
                    what: path.display().to_string(),
                    line: "(no usage_usec)".into(),
                };
                Ok(Duration::from_micros(
                    files::keyed(&path, "usage_usec")?.ok_or_else(missing)?,
                ))
            }
            None => Err(CgroupError::Unavailable {
                controller: "cpuacct",
                detail: "neither a v1 cpuacct hierarchy nor cgroup2 is mounted".into(),
            }),
        }
    }

    /// Kills every process in it, then removes its directories (children first). Goes on
    /// through every hierarchy whatever fails, and reports the first failure.
    ///
    /// After a container's pid 1 has exited, the kernel has killed the rest of its pid
    /// namespace, so each directory is usually empty: one `rmdir` per hierarchy, and the
    /// kill-and-retry teardown runs only where the kernel refuses it.
    pub fn destroy(self) -> Result<(), CgroupError> {
        let left: Vec<&(Version, PathBuf)> = self.dirs.iter().filter(|(_, dir)| !files::try_remove(dir)).collect();
        if left.is_empty() {
            tracing::debug!(cgroup = self.name, "cgroup removed");
            return Ok(());
        }
        let mut first = None;
        let deadline = Instant::now() + GIVE_UP_AFTER;
        for (version, dir) in left.iter().copied() {
            if *version == Version::V2 {
                // cgroup.kill kills the whole subtree at once; a missing one (older
                // kernel, or the directory already gone) leaves it to the loop.
                let _ = files::write(&dir.join("cgroup.kill"), "1");
            }
            if let Err(e) = files::kill_tree(dir, deadline) {
                first.get_or_insert(e);
            }
        }
        let deadline = Instant::now() + GIVE_UP_AFTER;
        for (_, dir) in left {
            if let Err(e) = files::remove_tree(dir, deadline) {
                first.get_or_insert(e);
            }
        }
        tracing::debug!(cgroup = self.name, ok = first.is_none(), "cgroup destroyed");
        first.map_or(Ok(()), Err)
    }
}

/// Makes the container directory of one hierarchy, and on v2 enables its controllers on
/// the way down; on v1 cpuset, copies cpus and mems into each new directory.
///
/// Where nothing is to be enabled (v1), the container directory is tried first, and
/// the shared base directory made only when that fails for its lack: after the first
/// launch the base is there, and its mkdir would only fail with EEXIST, a syscall per
/// hierarchy on the path of every launch.
fn make_dir(d: &DirPlan) -> Result<(), CgroupError> {
    if d.enable.is_empty() {
        if files::mkdir_new_if_parent(&d.path)? {
            return inherit_into_new(d);
        }
    } else {
        enable_in_own(&d.parent, &d.enable)?;
    }
    files::mkdir_shared(&d.base)?;
    if d.cpuset {
        inherit_cpuset(&d.parent, &d.base)?;
    }
    if !d.enable.is_empty() {
        enable(&d.base, &d.enable)?;
    }
    files::mkdir_new(&d.path)?;
    inherit_into_new(d)
}

/// On v1 cpuset, copies cpus and mems from the base into the new container directory.
fn inherit_into_new(d: &DirPlan) -> Result<(), CgroupError> {
    if d.cpuset {
        inherit_cpuset(&d.base, &d.path)?;
    }
    Ok(())
}

/// Adds the controllers missing from `dir`'s `cgroup.subtree_control`.
fn enable(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let current = files::read(&path)?;
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !current.split_whitespace().any(|x| x == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    files::write(&path, &missing.join(" "))
}

/// [`enable`] in our own cgroup, moving processes out of it into [`HOST_LEAF`] when v2's
/// no-internal-processes rule refuses (EBUSY): this process first, then the others.
fn enable_in_own(own: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    enable_moving(own, controllers, getpid().as_raw_pid())
}

/// [`enable_in_own`] with `me` standing for this process (a test moves a child instead).
fn enable_moving(own: &Path, controllers: &[&str], me: i32) -> Result<(), CgroupError> {
    let busy = |r: &Result<(), CgroupError>| matches!(r, Err(e) if e.raw_os_error() == Some(libc::EBUSY));
    let first = enable(own, controllers);
    if !busy(&first) {
        return first;
    }
    let leaf = own.join(HOST_LEAF);
    let leaf_procs = leaf.join("cgroup.procs");
    files::mkdir_shared(&leaf)?;
    files::write(&leaf_procs, &me.to_string())?;
    tracing::info!(cgroup = %own.display(), leaf = %leaf.display(), "moved petri into a leaf cgroup to enable controllers");
    let second = enable(own, controllers);
    if !busy(&second) {
        return second;
    }
    let others = files::procs(own)?;
    for pid in &others {
        if let Err(e) = files::write(&leaf_procs, &pid.to_string()) {
            tracing::debug!(pid, error = %e, "could not move a process to the leaf cgroup");
        }
    }
    tracing::warn!(
        cgroup = %own.display(), leaf = %leaf.display(), moved = others.len(),
        "moved the cgroup's other processes to a leaf: cgroup v2 allows no processes beside children with controllers"
    );
    enable(own, controllers)
}

/// A new v1 cpuset cgroup has no cpus and no mems, and refuses tasks until given some.
fn inherit_cpuset(parent: &Path, child: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if files::read(&child.join(file))?.trim().is_empty() {
            let value = files::read(&parent.join(file))?;
            files::write(&child.join(file), value.trim())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::detect::tests::{hybrid, pure_v2};

    #[test]
    fn handle_finds_memory_usage_and_unified_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let h = hybrid(tmp.path());
        let cg = h.handle("c1", &h.dirs("c1"), Vec::new());
        let mem = tmp.path().join("memory/process_api/e437/petri/c1");
        assert_eq!(cg.controller_dir("memory"), Some((Version::V1, mem.as_path())));
        let acct = tmp.path().join("cpuacct/petri/c1");
        assert_eq!(cg.usage_dir(), Some((Version::V1, acct.as_path())));
        assert_eq!(cg.unified_dir(), Some(tmp.path().join("unified/petri/c1").as_path()));

        fs::create_dir(tmp.path().join("v2")).unwrap();
        let h = pure_v2(&tmp.path().join("v2"));
        let cg = h.handle("c1", &h.dirs("c1"), Vec::new());
        let dir = tmp.path().join("v2/user.slice/session-2.scope/petri/c1");
        assert_eq!(cg.controller_dir("memory"), Some((Version::V2, dir.as_path())));
        assert_eq!(cg.controller_dir("devices"), Some((Version::V2, dir.as_path())));
        assert_eq!(cg.usage_dir(), Some((Version::V2, dir.as_path())));
    }

    #[test]
    fn enable_adds_only_missing_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("cgroup.subtree_control");
        fs::write(&file, "memory\n").unwrap();
        enable(tmp.path(), &["memory"]).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "memory\n", "nothing written");
        enable(tmp.path(), &["cpu", "memory", "pids"]).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "+cpu +pids");
    }

    #[test]
    fn stats_from_fixture_files() {
        let tmp = tempfile::tempdir().unwrap();
        let h = pure_v2(tmp.path());
        let plans = h.dirs("c1");
        let dir = plans[0].path.clone();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n").unwrap();
        fs::write(dir.join("cpu.stat"), "usage_usec 2500000\nuser_usec 2000000\n").unwrap();
        let cg = h.open("c1").unwrap();
        assert_eq!(cg.paths(), std::slice::from_ref(&dir));
        assert!(cg.oom_killed().unwrap());
        assert_eq!(cg.cpu_usage().unwrap(), Duration::from_millis(2500));
        fs::write(dir.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
        assert!(!cg.oom_killed().unwrap());
        assert!(h.open("other").is_err());
    }

    #[test]
    fn failed_create_leaves_nothing_it_made() {
        let tmp = tempfile::tempdir().unwrap();
        let h = pure_v2(tmp.path());
        let own = tmp.path().join("user.slice/session-2.scope");
        fs::create_dir(own.join("petri")).unwrap();
        for dir in [own.clone(), own.join("petri")] {
            fs::write(dir.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
        }
        // A plain directory has no memory.max: the first limit fails after c1 was made.
        let limits = Limits {
            memory: Some(1 << 20),
            ..Limits::default()
        };
        let e = h.create("c1", &limits).unwrap_err();
        assert!(e.to_string().starts_with("write 1048576 to "), "{e}");
        assert!(e.to_string().contains("petri/c1/memory.max"), "{e}");
        assert!(!own.join("petri/c1").exists());
        assert!(own.join("petri").exists(), "the shared parent stays");
        // An existing container directory is never taken over, nor removed.
        fs::create_dir(own.join("petri/c2")).unwrap();
        assert!(matches!(h.create("c2", &limits), Err(CgroupError::Exists(_))));
        assert!(own.join("petri/c2").exists());
    }

    /// The EBUSY path for real, on the machine's cgroup2 (root only): a cgroup with two
    /// processes gets a controller enabled once both are moved to the leaf.
    #[test]
    fn busy_own_cgroup_is_emptied_into_a_leaf() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP busy_own_cgroup_is_emptied_into_a_leaf: needs root");
            return;
        }
        let Some(unified) = Hierarchy::detect().unwrap().unified().cloned() else {
            eprintln!("SKIP busy_own_cgroup_is_emptied_into_a_leaf: no cgroup2");
            return;
        };
        let own = unified.mount.join(format!("petri-unit-{}", std::process::id()));
        fs::create_dir(&own).unwrap();
        let mut sleeps: Vec<_> = (0..2)
            .map(|_| std::process::Command::new("sleep").arg("30").spawn().unwrap())
            .collect();
        let result = std::panic::catch_unwind(|| {
            let available = fs::read_to_string(own.join("cgroup.controllers")).unwrap();
            let Some(controller) = available.split_whitespace().next().map(str::to_string) else {
                eprintln!("SKIP busy_own_cgroup_is_emptied_into_a_leaf: no v2 controller to enable");
                return;
            };
            let pids: Vec<i32> = sleeps.iter().map(|c| c.id() as i32).collect();
            for pid in &pids {
                files::write(&own.join("cgroup.procs"), &pid.to_string()).unwrap();
            }
            enable_moving(&own, &[controller.as_str()], pids[0]).unwrap();
            let enabled = fs::read_to_string(own.join("cgroup.subtree_control")).unwrap();
            assert!(enabled.split_whitespace().any(|c| c == controller), "{enabled}");
            assert_eq!(files::procs(&own).unwrap(), Vec::<i32>::new());
            let mut moved = files::procs(&own.join(HOST_LEAF)).unwrap();
            moved.sort();
            assert_eq!(moved, pids);
        });
        for child in &mut sleeps {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = files::remove_tree(&own, Instant::now() + GIVE_UP_AFTER);
        assert!(!own.exists());
        result.unwrap();
    }
}
