//! Reading and writing cgroup files, and emptying and removing cgroup directories.
//!
//! cgroupfs is not a normal filesystem: its files exist from `mkdir` on and must never be
//! created (so no `O_CREAT`), each value is one `write(2)`, a directory with processes in
//! it cannot be removed (`EBUSY`) and one is removed with `rmdir` although it lists files.
//! Every error names the operation and the path (and, for writes, the value).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rustix::process::{getpid, kill_process, Pid, Signal};

use super::CgroupError;

/// The longest pause between two looks at a cgroup being emptied or removed.
const MAX_PAUSE: Duration = Duration::from_millis(50);

fn io_error(op: &'static str, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `value` to the existing cgroup file `path` in one write.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    Writer::default().write(path, value)
}

/// Writes values to cgroup files, keeping the last file open: a run of writes to one file
/// (the rules of v1 `devices.allow`, one per write) costs one open.
#[derive(Default)]
pub(crate) struct Writer {
    open: Option<(PathBuf, fs::File)>,
}

impl Writer {
    pub(crate) fn write(&mut self, path: &Path, value: &str) -> Result<(), CgroupError> {
        let failed = |source| CgroupError::Write {
            value: value.to_string(),
            path: path.to_path_buf(),
            source,
        };
        if self.open.as_ref().is_none_or(|(p, _)| p != path) {
            self.open = None;
            let file = OpenOptions::new().write(true).open(path).map_err(failed)?;
            self.open = Some((path.to_path_buf(), file));
        }
        let (_, file) = self.open.as_mut().expect("opened above");
        file.write_all(value.as_bytes()).map_err(failed)
    }
}

/// `rmdir` of an empty cgroup: true when it is gone (or was already), false when the
/// kernel refuses (processes or child cgroups in it) and teardown must do it properly.
pub(crate) fn try_remove(dir: &Path) -> bool {
    match fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| io_error("read", path, e))
}

/// `mkdir` that accepts an existing directory (for shared parents).
pub(crate) fn mkdir_shared(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io_error("mkdir", path, e)),
        _ => Ok(()),
    }
}

/// `mkdir` of a directory that must be new.
pub(crate) fn mkdir_new(path: &Path) -> Result<(), CgroupError> {
    match mkdir_new_if_parent(path)? {
        true => Ok(()),
        false => Err(io_error("mkdir", path, io::ErrorKind::NotFound.into())),
    }
}

/// [`mkdir_new`], but a missing parent is no error: false, and nothing is made.
pub(crate) fn mkdir_new_if_parent(path: &Path) -> Result<bool, CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CgroupError::Exists(path.to_path_buf())),
        Err(e) => Err(io_error("mkdir", path, e)),
    }
}

/// The value of `key` in a flat-keyed file ("oom_kill 3", "usage_usec 1234"), if present.
pub(crate) fn keyed(path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    keyed_in(&read(path)?, path, key)
}

/// The whole text of the open cgroup file `file` (at `path`), read from its start: each
/// read at offset 0 sees the values as they are now.
pub(crate) fn read_open(file: &fs::File, path: &Path) -> Result<String, CgroupError> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = rustix::io::pread(file, &mut buf[len..], len as u64).map_err(|e| io_error("read", path, e.into()))?;
        len += n;
        if n == 0 {
            break;
        }
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io_error("read", path, io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// [`keyed`] of a file's `text`, read from `path`.
pub(crate) fn keyed_in(text: &str, path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(key) {
            let value = words.next().and_then(|v| v.parse().ok());
            return value.map(Some).ok_or_else(|| CgroupError::Malformed {
                what: path.display().to_string(),
                line: line.to_string(),
            });
        }
    }
    Ok(None)
}

/// The pids in `cgroup.procs` of `dir`; none when the directory is gone.
pub(crate) fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    let text = match fs::read_to_string(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(|e| io_error("read", &path, e))?,
    };
    text.lines()
        .map(|l| {
            l.trim().parse().map_err(|_| CgroupError::Malformed {
                what: path.display().to_string(),
                line: l.to_string(),
            })
        })
        .collect()
}

/// The child cgroups of `dir` (none when it is gone).
fn children(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(|e| io_error("list", dir, e))?,
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        if entry
            .file_type()
            .map_err(|e| io_error("stat", &entry.path(), e))?
            .is_dir()
        {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// The pids in `dir` and every cgroup below it.
pub(crate) fn procs_in_tree(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let mut pids = procs(dir)?;
    for child in children(dir)? {
        pids.extend(procs_in_tree(&child)?);
    }
    Ok(pids)
}

/// SIGKILLs every process in the tree at `dir` until none is left or `deadline` passes.
/// This process is never signalled, whatever the cgroup says.
pub(crate) fn kill_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    let me = getpid().as_raw_pid();
    let mut pause = Duration::from_millis(1);
    loop {
        let pids = procs_in_tree(dir)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline || pids.contains(&me) {
            return Err(CgroupError::StillRunning {
                path: dir.to_path_buf(),
                pids,
            });
        }
        for pid in pids.iter().filter_map(|p| Pid::from_raw(*p)) {
            // ESRCH: it exited meanwhile.
            let _ = kill_process(pid, Signal::KILL);
        }
        sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Removes `dir` and every cgroup below it, children first, retrying `EBUSY` (processes
/// still exiting) until `deadline`. A directory already gone is fine.
pub(crate) fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    for child in children(dir)? {
        remove_tree(&child, deadline)?;
    }
    let mut pause = Duration::from_millis(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(pause);
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => return Err(io_error("rmdir", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_never_create_files() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("memory.max");
        let e = write(&missing, "1").unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("write 1 to {}: ", missing.display())),
            "{e}"
        );
        assert!(!missing.exists());
        fs::write(&missing, "max\n").unwrap();
        write(&missing, "4096").unwrap();
        assert_eq!(fs::read_to_string(&missing).unwrap(), "4096");
    }

    #[test]
    fn writer_reopens_only_for_another_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("devices.allow"), tmp.path().join("devices.deny"));
        fs::write(&a, "").unwrap();
        fs::write(&b, "").unwrap();
        let mut w = Writer::default();
        w.write(&b, "a").unwrap();
        w.write(&a, "c 1:3 rwm\n").unwrap();
        // Unlinked while open: the next write to the same path still goes to the open file.
        fs::remove_file(&a).unwrap();
        w.write(&a, "c 1:5 rwm\n").unwrap();
        assert!(!a.exists(), "reopened (and so created) the same file");
        // Another file: opened afresh, so this write lands at its start, over the "a".
        w.write(&b, "b").unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "b");
    }

    #[test]
    fn try_remove_refuses_a_non_empty_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c1");
        fs::create_dir_all(dir.join("child")).unwrap();
        assert!(!try_remove(&dir));
        assert!(dir.exists());
        fs::remove_dir(dir.join("child")).unwrap();
        assert!(try_remove(&dir));
        assert!(try_remove(&dir), "a directory already gone counts as removed");
    }

    #[test]
    fn keyed_values() {
        let tmp = tempfile::tempdir().unwrap();
        let events = tmp.path().join("memory.events");
        fs::write(&events, "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n").unwrap();
        assert_eq!(keyed(&events, "oom_kill").unwrap(), Some(1));
        assert_eq!(keyed(&events, "absent").unwrap(), None);
        fs::write(&events, "oom_kill lots\n").unwrap();
        assert!(keyed(&events, "oom_kill").is_err());
    }

    #[test]
    fn procs_and_tree_removal_on_plain_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("c1");
        fs::create_dir_all(top.join("sub/deeper")).unwrap();
        fs::write(top.join("cgroup.procs"), "").unwrap();
        fs::write(top.join("sub/cgroup.procs"), "12\n13\n").unwrap();
        assert_eq!(procs_in_tree(&top).unwrap(), [12, 13]);
        assert_eq!(procs(&tmp.path().join("gone")).unwrap(), Vec::<i32>::new());
        fs::remove_file(top.join("cgroup.procs")).unwrap();
        fs::remove_file(top.join("sub/cgroup.procs")).unwrap();
        remove_tree(&top, Instant::now()).unwrap();
        assert!(!top.exists());
        remove_tree(&top, Instant::now()).unwrap();
    }

    #[test]
    fn never_kills_itself() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("cgroup.procs"), format!("{}\n", getpid().as_raw_pid())).unwrap();
        let e = kill_tree(tmp.path(), Instant::now() + Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, CgroupError::StillRunning { .. }));
    }

    #[test]
    fn mkdir_new_reports_an_existing_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c1");
        mkdir_new(&dir).unwrap();
        assert!(matches!(mkdir_new(&dir), Err(CgroupError::Exists(_))));
        mkdir_shared(&dir).unwrap();
    }

    #[test]
    fn mkdir_new_if_parent_makes_nothing_without_the_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("petri/c1");
        assert!(!mkdir_new_if_parent(&dir).unwrap());
        assert!(!tmp.path().join("petri").exists());
        assert!(matches!(mkdir_new(&dir), Err(CgroupError::Io { .. })));
        mkdir_shared(&tmp.path().join("petri")).unwrap();
        assert!(mkdir_new_if_parent(&dir).unwrap());
        assert!(matches!(mkdir_new_if_parent(&dir), Err(CgroupError::Exists(_))));
    }
}
