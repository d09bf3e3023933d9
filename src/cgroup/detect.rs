//! Which cgroup version serves each controller, where its hierarchy is mounted, and which
//! cgroup this process is in there.
//!
//! Two files decide it. /proc/self/mountinfo lists the hierarchies: fstype `cgroup` (v1,
//! the super options name its controllers, e.g. `rw,cpu,cpuacct`) and `cgroup2` (v2, whose
//! root's `cgroup.controllers` lists the controllers not bound to v1). /proc/self/cgroup
//! gives this process's path in each (`4:memory:/a/b`, `0::/a/b`). A controller mounted as
//! v1 is used as v1: the kernel lets a controller be active in only one version, and on a
//! hybrid host the v1 one is where it is.
//!
//! Paths in /proc/self/cgroup are relative to the cgroup namespace; the mount's root (field
//! 4 of mountinfo) says which cgroup the mount point shows, so the directory of our cgroup
//! is the mount point plus our path below that root (how runc finds it too). Mounts that do
//! not show our cgroup are skipped.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::CgroupError;

/// The controllers petri uses. `cpuacct` only exists on v1 (v2's cpu.stat is always there).
pub(crate) const NEEDED: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "devices"];

/// v1 mount options that are not controllers.
const NOT_CONTROLLERS: [&str; 10] = [
    "rw",
    "ro",
    "none",
    "all",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
    "nofavordynmods",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

/// Where one controller lives for this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub version: Version,
    /// The mount point of its hierarchy.
    pub mount: PathBuf,
    /// This process's cgroup in that hierarchy, as /proc/self/cgroup names it.
    pub own: String,
    /// The directory of that cgroup.
    pub own_dir: PathBuf,
    /// The hierarchy's controllers as a mount option ("cpu,cpuacct", "name=systemd");
    /// empty for cgroup2.
    pub options: String,
}

/// Where /sys/fs/cgroup's parts come from, to rebuild it inside a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// The cgroup2 mount point (pure v2, or the v2 part of a hybrid host).
    pub unified: Option<PathBuf>,
    /// Each v1 hierarchy once: (mount option naming its controllers, host mount point).
    pub v1: Vec<(String, PathBuf)>,
}

/// The cgroup layout as seen by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// The controllers of [`NEEDED`] that are usable. `devices` on v2 stands for the eBPF
    /// device filter, which needs only a cgroup2 directory.
    pub(crate) controllers: BTreeMap<&'static str, Controller>,
    /// The cgroup2 hierarchy, when mounted and listed in /proc/self/cgroup.
    pub(crate) unified: Option<Controller>,
    pub(crate) mounts: CgroupMounts,
}

/// One cgroup line of /proc/self/mountinfo, the fields used here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    root: String,
    point: PathBuf,
    version: Version,
    /// A v1 hierarchy's controllers as its mount options name them ("cpu,cpuacct");
    /// empty for cgroup2.
    options: String,
    /// The same controllers, sorted, to match a /proc/self/cgroup line's.
    sorted: Vec<String>,
}

impl Hierarchy {
    /// Reads /proc/self/mountinfo and /proc/self/cgroup (and the v2 `cgroup.controllers`).
    pub fn detect() -> Result<Hierarchy, CgroupError> {
        let read = |path: &str| {
            fs::read_to_string(path).map_err(|source| CgroupError::Io {
                op: "read",
                path: path.into(),
                source,
            })
        };
        Hierarchy::detect_from(&read("/proc/self/mountinfo")?, &read("/proc/self/cgroup")?)
    }

    /// Detection from the two files' text. The only file read is `cgroup.controllers` of
    /// the cgroup2 mount found (our cgroup's, else the mount root's), so tests can point
    /// the mount points into a temporary directory.
    pub fn detect_from(mountinfo: &str, proc_self_cgroup: &str) -> Result<Hierarchy, CgroupError> {
        let mounts = parse_mountinfo(mountinfo)?;
        let lines = parse_proc_cgroup(proc_self_cgroup)?;
        let mut controllers = BTreeMap::new();
        for (names, path) in lines.iter().filter(|(names, _)| !names.is_empty()) {
            let Some((m, own_dir)) = find_v1(&mounts, names, path) else {
                continue;
            };
            for name in NEEDED.iter().filter(|n| names.iter().any(|c| c == *n)) {
                controllers.insert(*name, controller(m, path, own_dir.clone()));
            }
        }
        let unified = find_v2(&mounts, &lines);
        if let Some(v2) = &unified {
            for name in available_v2(v2)? {
                if let Some(known) = NEEDED.iter().find(|n| **n == name && **n != "devices") {
                    controllers.entry(*known).or_insert_with(|| v2.clone());
                }
            }
            controllers.entry("devices").or_insert_with(|| v2.clone());
        }
        let v1 = v1_mounts(&mounts);
        if unified.is_none() && v1.is_empty() {
            return Err(CgroupError::NoCgroupFs);
        }
        let unified_mount = unified.as_ref().map(|u| u.mount.clone());
        Ok(Hierarchy {
            controllers,
            unified,
            mounts: CgroupMounts {
                unified: unified_mount,
                v1,
            },
        })
    }

    /// Where a controller of [`NEEDED`] ("cpu", "cpuacct", "memory", "pids", "devices")
    /// is, if it is usable.
    pub fn controller(&self, name: &str) -> Option<&Controller> {
        self.controllers.get(name)
    }

    /// The cgroup2 hierarchy, if there is one.
    pub fn unified(&self) -> Option<&Controller> {
        self.unified.as_ref()
    }

    /// Every hierarchy's host mount point, for mounting /sys/fs/cgroup in a container.
    pub fn mounts(&self) -> CgroupMounts {
        self.mounts.clone()
    }
}

fn controller(m: &MountEntry, own: &str, own_dir: PathBuf) -> Controller {
    Controller {
        version: m.version,
        mount: m.point.clone(),
        own: own.to_string(),
        own_dir,
        options: m.options.clone(),
    }
}

/// The v1 mount of exactly the hierarchy `names` (sorted), that shows the cgroup `path`.
fn find_v1<'a>(mounts: &'a [MountEntry], names: &[String], path: &str) -> Option<(&'a MountEntry, PathBuf)> {
    mounts
        .iter()
        .filter(|m| m.version == Version::V1 && m.sorted == names)
        .find_map(|m| own_dir(m, path).map(|dir| (m, dir)))
}

/// The cgroup2 mount that shows our "0::" cgroup.
fn find_v2(mounts: &[MountEntry], lines: &[(Vec<String>, String)]) -> Option<Controller> {
    let (_, path) = lines.iter().find(|(names, _)| names.is_empty())?;
    mounts
        .iter()
        .filter(|m| m.version == Version::V2)
        .find_map(|m| own_dir(m, path).map(|dir| controller(m, path, dir)))
}

/// The controllers our v2 cgroup can hand to children: its `cgroup.controllers`, or the
/// mount root's when ours cannot be found (a missing file means none).
fn available_v2(v2: &Controller) -> Result<Vec<String>, CgroupError> {
    for dir in [&v2.own_dir, &v2.mount] {
        let path = dir.join("cgroup.controllers");
        match fs::read_to_string(&path) {
            Ok(text) => return Ok(text.split_whitespace().map(str::to_string).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CgroupError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        }
    }
    Ok(Vec::new())
}

/// The directory of cgroup `path` under mount `m`, when the mount shows it.
fn own_dir(m: &MountEntry, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path).strip_prefix(&m.root).ok()?;
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(if rel.as_os_str().is_empty() {
        m.point.clone()
    } else {
        m.point.join(rel)
    })
}

/// A v1 hierarchy's controllers, in the order of its super options.
fn v1_controllers(super_options: &str) -> impl Iterator<Item = &str> {
    super_options
        .split(',')
        .filter(|o| !o.is_empty() && !NOT_CONTROLLERS.contains(o) && !o.starts_with("release_agent="))
}

/// Each v1 hierarchy once, in mount order.
fn v1_mounts(mounts: &[MountEntry]) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for m in mounts.iter().filter(|m| m.version == Version::V1) {
        if !m.options.is_empty() && !out.iter().any(|(o, _)| *o == m.options) {
            out.push((m.options.clone(), m.point.clone()));
        }
    }
    out
}

/// The cgroup mounts of a mountinfo text:
/// `id parent maj:min root point options [optional...] - fstype source super_options`.
fn parse_mountinfo(text: &str) -> Result<Vec<MountEntry>, CgroupError> {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        fields.clear();
        fields.extend(line.split(' '));
        let sep = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6);
        let (Some(sep), Some(point)) = (sep, fields.get(4)) else {
            return Err(malformed("/proc/self/mountinfo", line));
        };
        let (Some(fstype), Some(super_options)) = (fields.get(sep + 1), fields.get(sep + 3)) else {
            return Err(malformed("/proc/self/mountinfo", line));
        };
        let version = match *fstype {
            "cgroup" => Version::V1,
            "cgroup2" => Version::V2,
            _ => continue,
        };
        let controllers: Vec<&str> = match version {
            Version::V1 => v1_controllers(super_options).collect(),
            Version::V2 => Vec::new(),
        };
        let mut sorted: Vec<String> = controllers.iter().map(|c| c.to_string()).collect();
        sorted.sort();
        out.push(MountEntry {
            root: unescape(fields[3]),
            point: PathBuf::from(unescape(point)),
            version,
            options: controllers.join(","),
            sorted,
        });
    }
    Ok(out)
}

/// /proc/self/cgroup: `id:controllers:path` lines, the controllers sorted; v2's line
/// has none.
fn parse_proc_cgroup(text: &str) -> Result<Vec<(Vec<String>, String)>, CgroupError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(names), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("/proc/self/cgroup", line));
        };
        if id.parse::<u32>().is_err() || !path.starts_with('/') {
            return Err(malformed("/proc/self/cgroup", line));
        }
        let mut names: Vec<String> = names.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect();
        names.sort();
        out.push((names, path.to_string()));
    }
    Ok(out)
}

fn malformed(what: &str, line: &str) -> CgroupError {
    CgroupError::Malformed {
        what: what.to_string(),
        line: line.to_string(),
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A mountinfo text with the given (point, fstype, super options), points absolute.
    pub(crate) fn mountinfo(mounts: &[(&Path, &str, &str)]) -> String {
        let mut text = String::from("22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n");
        for (i, (point, fstype, opts)) in mounts.iter().enumerate() {
            let point = point.display().to_string().replace(' ', "\\040");
            text += &format!(
                "{} 22 0:{} / {point} rw,nosuid - {fstype} {fstype} {opts}\n",
                30 + i,
                30 + i
            );
        }
        text
    }

    /// This machine's layout: v1 controllers, a name=systemd hierarchy, a hugetlb-only v2.
    pub(crate) fn hybrid(root: &Path) -> Hierarchy {
        let v1 = ["cpu", "cpuacct", "cpuset", "memory", "devices", "pids"];
        let mut mounts: Vec<(PathBuf, &str, String)> =
            v1.iter().map(|c| (root.join(c), "cgroup", format!("rw,{c}"))).collect();
        mounts.push((root.join("systemd"), "cgroup", "rw,xattr,name=systemd".into()));
        mounts.push((root.join("unified"), "cgroup2", "rw,nsdelegate".into()));
        fs::create_dir_all(root.join("unified")).unwrap();
        fs::write(root.join("unified/cgroup.controllers"), "hugetlb\n").unwrap();
        let refs: Vec<(&Path, &str, &str)> = mounts.iter().map(|(p, t, o)| (p.as_path(), *t, o.as_str())).collect();
        let cgroup = "9:name=systemd:/\n8:pids:/\n5:devices:/\n4:memory:/process_api/e437\n\
                      3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        Hierarchy::detect_from(&mountinfo(&refs), cgroup).unwrap()
    }

    /// A laptop: cgroup2 only, this process in a session scope.
    pub(crate) fn pure_v2(root: &Path) -> Hierarchy {
        let own = root.join("user.slice/session-2.scope");
        fs::create_dir_all(&own).unwrap();
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        fs::write(own.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let info = mountinfo(&[(root, "cgroup2", "rw,nsdelegate,memory_recursiveprot")]);
        Hierarchy::detect_from(&info, "0::/user.slice/session-2.scope\n").unwrap()
    }

    /// An old server: v1 only, cpu and cpuacct co-mounted, no cgroup2 at all.
    pub(crate) fn v1_only(root: &Path) -> Hierarchy {
        let (cpu, mem, pids, dev) = (
            root.join("cpu,cpuacct"),
            root.join("memory"),
            root.join("pids"),
            root.join("devices"),
        );
        let info = mountinfo(&[
            (&cpu, "cgroup", "rw,cpu,cpuacct"),
            (&mem, "cgroup", "rw,memory"),
            (&pids, "cgroup", "rw,pids"),
            (&dev, "cgroup", "rw,devices"),
        ]);
        Hierarchy::detect_from(
            &info,
            "4:pids:/job\n3:devices:/job\n2:memory:/job\n1:cpu,cpuacct:/job\n",
        )
        .unwrap()
    }

    #[test]
    fn hybrid_prefers_v1_and_finds_own_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let h = hybrid(tmp.path());
        for name in NEEDED {
            assert_eq!(h.controller(name).unwrap().version, Version::V1, "{name}");
        }
        let mem = h.controller("memory").unwrap();
        assert_eq!(mem.own, "/process_api/e437");
        assert_eq!(mem.own_dir, tmp.path().join("memory/process_api/e437"));
        assert_eq!(h.controller("cpu").unwrap().own_dir, tmp.path().join("cpu"));
        assert_eq!(h.unified().unwrap().own_dir, tmp.path().join("unified"));
        let m = h.mounts();
        assert_eq!(m.unified, Some(tmp.path().join("unified")));
        let names: Vec<&str> = m.v1.iter().map(|(o, _)| o.as_str()).collect();
        assert_eq!(
            names,
            ["cpu", "cpuacct", "cpuset", "memory", "devices", "pids", "name=systemd"]
        );
    }

    #[test]
    fn pure_v2_uses_our_cgroups_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let h = pure_v2(tmp.path());
        for name in ["cpu", "memory", "pids", "devices"] {
            let c = h.controller(name).unwrap();
            assert_eq!(
                (c.version, &c.own_dir),
                (Version::V2, &tmp.path().join("user.slice/session-2.scope"))
            );
        }
        assert!(h.controller("cpuacct").is_none());
        assert_eq!(h.mounts().v1, []);
        assert_eq!(h.mounts().unified.as_deref(), Some(tmp.path()));
    }

    #[test]
    fn v2_without_a_controller_lacks_it() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("cgroup.controllers"), "memory\n").unwrap();
        let info = mountinfo(&[(tmp.path(), "cgroup2", "rw")]);
        let h = Hierarchy::detect_from(&info, "0::/\n").unwrap();
        assert!(h.controller("cpu").is_none() && h.controller("pids").is_none());
        assert_eq!(h.controller("memory").unwrap().own_dir, tmp.path());
    }

    #[test]
    fn v1_only_shares_comounted_hierarchies() {
        let tmp = tempfile::tempdir().unwrap();
        let h = v1_only(tmp.path());
        let (cpu, acct) = (h.controller("cpu").unwrap(), h.controller("cpuacct").unwrap());
        assert_eq!(cpu, acct);
        assert_eq!(cpu.options, "cpu,cpuacct");
        assert_eq!(cpu.own_dir, tmp.path().join("cpu,cpuacct/job"));
        assert!(h.unified().is_none());
        assert_eq!(h.controller("devices").unwrap().version, Version::V1);
    }

    #[test]
    fn mount_roots_are_stripped_and_foreign_mounts_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let info = "40 22 0:40 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    41 22 0:40 /other /mnt/mem rw - cgroup cgroup rw,memory\n";
        let h = Hierarchy::detect_from(info, "4:memory:/docker/abc/sub\n").unwrap();
        assert_eq!(
            h.controller("memory").unwrap().own_dir,
            Path::new("/sys/fs/cgroup/memory/sub")
        );
        let escaped = format!(
            "30 22 0:30 / {}/a\\040b rw - cgroup2 cgroup2 rw\n",
            tmp.path().display()
        );
        let h = Hierarchy::detect_from(&escaped, "0::/\n").unwrap();
        assert_eq!(h.unified().unwrap().mount, tmp.path().join("a b"));
        assert!(Hierarchy::detect_from(info, "4:memory:/elsewhere\n")
            .unwrap()
            .controller("memory")
            .is_none());
        assert!(Hierarchy::detect_from(info, "4:memory:/docker/abc/../../x\n")
            .unwrap()
            .controller("memory")
            .is_none());
    }

    #[test]
    fn malformed_input_is_an_error_naming_the_file() {
        let e = Hierarchy::detect_from("garbage\n", "0::/\n").unwrap_err();
        assert!(e.to_string().contains("/proc/self/mountinfo"), "{e}");
        let info = "41 31 0:38 / /x rw - cgroup2 cgroup2 rw\n";
        let e = Hierarchy::detect_from(info, "no colons\n").unwrap_err();
        assert!(e.to_string().contains("/proc/self/cgroup"), "{e}");
        assert!(matches!(
            Hierarchy::detect_from("", "0::/\n"),
            Err(CgroupError::NoCgroupFs)
        ));
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape("a\\040b\\011c\\134d\\x"), "a b\tc\\d\\x");
    }
}
