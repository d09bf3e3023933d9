//! The container's directory on disk, its bundle: the overlay's `upper` and `work`.
//!
//! Why this is more than two `mkdir`s and a `remove_dir_all`: where the filesystem
//! discards freed blocks synchronously (ext4 mounted `discard` without a journal, as on
//! the project's VM), removing a directory waits for the disk, ~0.25 ms each, and a
//! `--rm` run removed six after its process had exited. Now none is removed after exit:
//! - the marker a `volatile` overlay leaves in `work` goes as soon as the overlay is
//!   mounted, while the container's process is being set up ([`drop_volatile_marker`]);
//! - [`release`] removes what the container wrote (the contents of `upper`, whatever
//!   the kernel left in `work/work`) and moves the bundle, now only empty directories,
//!   to a "dirty" slot of a pool;
//! - a later launch, while it waits for its own process to exec (the launcher has
//!   nothing else to do then), removes a dirty bundle's `upper` and `work/work`, makes
//!   a fresh `upper` and moves the bundle to a clean slot ([`tidy`]), from which a
//!   `--rm` launch after that takes it as it is ([`prepare`]). Even a mkdir is worth
//!   keeping off the launch's path there: without a journal, ext4's inode allocator
//!   skips every inode freed in the last minutes, ~0.03 ms a mkdir after a few hundred
//!   runs;
//! - for the same reason each new bundle gets a block group of its own, away from the
//!   churn of whatever else shares petri's root's group ([`spread_below`]): the overlay
//!   mount makes six inodes in it.
//!
//! So what the container wrote is gone when cleanup returns, as before, and the pool
//! holds at most [`POOL_SLOTS`] clean and as many dirty bundles of empty directories. An
//! `upper` is never used twice: an overlay still mounted somewhere (its mount namespace
//! kept alive from outside) could go on writing to it. The kernel empties a reused
//! `work` when it mounts the next overlay. Slots are taken and filled with rename(2),
//! which moves a whole directory or fails, so petri processes that share a root never
//! get the same bundle, and tidies take turns ([`TIDY_LOCK`]), so none moves on a
//! bundle another is cleaning, whose `upper` it did not make.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, IFlags, Mode, OFlags, CWD};

use super::SandboxError;
use crate::image::lock::FileLock;

/// The lock file in a pool that tidies hold, one at a time.
pub const TIDY_LOCK: &str = ".tidy.lock";

/// How many clean (and how many dirty) bundles a pool keeps: enough for a few `--rm`
/// runs at a time.
pub const POOL_SLOTS: usize = 4;

fn clean_slot(pool: &Path, slot: usize) -> PathBuf {
    pool.join(slot.to_string())
}

fn dirty_slot(pool: &Path, slot: usize) -> PathBuf {
    pool.join(format!("dirty-{slot}"))
}

/// Makes `bundle` with a new, empty `upper` and an empty `work`, taking the bundle from
/// a clean slot of `pool` when there is one.
pub fn prepare(bundle: &Path, pool: Option<&Path>) -> Result<(), SandboxError> {
    let taken = pool.is_some_and(|pool| (0..POOL_SLOTS).any(|slot| fs::rename(clean_slot(pool, slot), bundle).is_ok()));
    let upper = bundle.join("upper");
    if taken {
        // A clean bundle holds its `work` (which is how a taken slot is told from a free
        // one) and the `upper` its tidy made; one cleaned by an older petri has none.
        match fs::create_dir(&upper) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => other.map_err(io_err("create directory", &upper))?,
        }
        return Ok(());
    }
    if let Some(containers) = bundle.parent() {
        fs::create_dir_all(containers).map_err(io_err("create directory", containers))?;
        spread_below(containers);
    }
    for dir in [upper, bundle.join("work")] {
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
    }
    Ok(())
}

/// Marks `dir` as the top of directory hierarchies for ext4's Orlov allocator (`chattr
/// +T`, FS_TOPDIR_FL), so that each bundle made in it is placed in a block group of its
/// own, one with inodes to spare, rather than in `dir`'s. Why: on ext4 without a
/// journal (the project's VM) an inode allocation skips, one by one, every inode of its
/// group freed in the last one to six minutes (`recently_deleted` in
/// fs/ext4/ialloc.c), and the group of petri's root is shared with whatever else churns
/// files there (a build, a package install) and can hold thousands. Each start makes
/// seven inodes in its bundle (its `upper`, and the overlay's `work/work`, probe files
/// and volatile marker), so this is the cost of the overlay mount: traced on the VM
/// after a build, 0.05-0.35 ms an inode, 0.4-0.8 ms a mount. Best effort: other
/// filesystems ignore or refuse the flag.
fn spread_below(dir: &Path) {
    let set =
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).and_then(|fd| {
            let flags = rustix::fs::ioctl_getflags(&fd)?;
            if flags.contains(IFlags::TOPDIR) {
                return Ok(());
            }
            rustix::fs::ioctl_setflags(&fd, flags | IFlags::TOPDIR)
        });
    if let Err(e) = set {
        tracing::debug!(path = %dir.display(), error = %e, "marking the bundles' directory as a top directory");
    }
}

/// A `volatile` overlay (a `--rm` sandbox's) leaves `work/work/incompat/volatile` in its
/// work directory when mounted, so that a later mount of the same upper refuses: after a
/// crash the upper may not have reached the disk. A `--rm` bundle's upper is never
/// mounted again, and the kernel keeps no reference to the marker once the mount is
/// made, so once the child has said the mount is made, the launcher removes it while
/// the child goes on to exec (after the launcher's own part in the start, as the
/// removal may wait for the disk), rather than after the container exits. (Removing it
/// while the mount is being made would fail the mount.) Best effort: whatever is left
/// goes at [`release`].
pub fn drop_volatile_marker(bundle: &Path) {
    let marker = bundle.join("work/work/incompat");
    if let Err(e) = remove_tree(&marker) {
        tracing::debug!(path = %marker.display(), error = %e, "removing the volatile overlay's marker early");
    }
}

/// Removes what the container wrote, then moves the bundle to a free dirty slot of
/// `pool` when one is given; otherwise (no pool, no free slot, or a failure on the way)
/// removes the bundle.
pub fn release(bundle: &Path, pool: Option<&Path>) -> Result<(), SandboxError> {
    if let Some(pool) = pool {
        match empty_dirs_only(bundle).and_then(|()| put(bundle, pool, dirty_slot)) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => tracing::debug!(bundle = %bundle.display(), error = %e, "keeping an emptied bundle for reuse"),
        }
    }
    remove_tree(bundle).map_err(io_err("remove", bundle))
}

/// Leaves `bundle` holding at most an empty `upper` and a `work` with at most an empty
/// `work` in it: the directories petri and the kernel made, none of what was in them.
fn empty_dirs_only(bundle: &Path) -> io::Result<()> {
    let mut bundle = open_dir(CWD, bundle)?;
    for (name, is_dir) in entries(&mut bundle)? {
        match name.to_bytes() {
            b"upper" if is_dir => empty(&mut open_dir(bundle.fd()?, name.as_c_str())?)?,
            b"work" if is_dir => {
                let mut work = open_dir(bundle.fd()?, name.as_c_str())?;
                for (inner, inner_is_dir) in entries(&mut work)? {
                    if inner.to_bytes() == b"work" && inner_is_dir {
                        empty(&mut open_dir(work.fd()?, inner.as_c_str())?)?;
                    } else {
                        remove_entry(&work, &inner, inner_is_dir)?;
                    }
                }
            }
            _ => remove_entry(&bundle, &name, is_dir)?,
        }
    }
    Ok(())
}

// Directories are read and removed here with getdents64 into petri's own buffer
// (rustix's `Dir`), through descriptors, never following a symlink (as std's
// `remove_dir_all` does, CVE-2022-21658). Not with std's `read_dir`/`remove_dir_all`:
// they go through libc's opendir, and musl allocates each DIR with its own allocator,
// which maps a fresh page group and unmaps it again each time, ~0.02 ms a directory on
// the project's VM, and a `--rm` run's cleanup reads four.

/// Opens the directory `path` (relative to `at`) to read or remove what is in it; a
/// symlink there is refused (ELOOP or ENOTDIR), not followed.
fn open_dir<P: rustix::path::Arg>(at: impl AsFd, path: P) -> io::Result<Dir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(Dir::new(rustix::fs::openat(at, path, flags, Mode::empty())?)?)
}

/// The entries of `dir` but `.` and `..`, each with whether it is a directory (asked
/// with a stat where the filesystem does not say).
fn entries(dir: &mut Dir) -> io::Result<Vec<(CString, bool)>> {
    let mut listed = Vec::new();
    for entry in dir.by_ref() {
        let entry = entry?;
        if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
            listed.push((entry.file_name().to_owned(), entry.file_type()));
        }
    }
    listed
        .into_iter()
        .map(|(name, file_type)| {
            let file_type = match file_type {
                FileType::Unknown => {
                    let stat = rustix::fs::statat(dir.fd()?, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
                    FileType::from_raw_mode(stat.st_mode)
                }
                known => known,
            };
            Ok((name, file_type == FileType::Directory))
        })
        .collect()
}

/// Removes everything in `dir`.
fn empty(dir: &mut Dir) -> io::Result<()> {
    entries(dir)?
        .into_iter()
        .try_for_each(|(name, is_dir)| remove_entry(dir, &name, is_dir))
}

/// Removes `name` from `dir`: a file or symlink, or a directory and everything in it.
fn remove_entry(dir: &Dir, name: &CStr, is_dir: bool) -> io::Result<()> {
    if is_dir {
        empty(&mut open_dir(dir.fd()?, name)?)?;
        Ok(rustix::fs::unlinkat(dir.fd()?, name, AtFlags::REMOVEDIR)?)
    } else {
        Ok(rustix::fs::unlinkat(dir.fd()?, name, AtFlags::empty())?)
    }
}

/// Removes the directory `path` and everything in it.
fn remove_tree(path: &Path) -> io::Result<()> {
    empty(&mut open_dir(CWD, path)?)?;
    fs::remove_dir(path)
}

/// Turns one dirty bundle of `pool`, if there is one, into a clean one: removes its
/// `upper` and `work/work`, makes a fresh `upper` and moves it to a free clean slot (or
/// removes it when there is none). Best effort, for a launch's idle time: a failure
/// only leaves the bundle for a later tidy, and while another tidy holds the pool's
/// [`TIDY_LOCK`] this one leaves everything to it.
pub fn tidy(pool: &Path) {
    let _turn = match FileLock::try_exclusive(&pool.join(TIDY_LOCK)) {
        Ok(Some(lock)) => lock,
        // No pool yet (nothing to tidy), or another tidy at work.
        Ok(None) | Err(_) => return,
    };
    let Some(dirty) = (0..POOL_SLOTS).map(|slot| dirty_slot(pool, slot)).find(|d| d.exists()) else {
        return;
    };
    let upper = dirty.join("upper");
    let cleaned = remove_if_there(&upper)
        .and_then(|()| remove_if_there(&dirty.join("work/work")))
        .and_then(|()| fs::create_dir(&upper))
        .and_then(|()| put(&dirty, pool, clean_slot));
    match cleaned {
        Ok(true) => {}
        Ok(false) => {
            let _ = remove_if_there(&dirty);
        }
        Err(e) => tracing::debug!(bundle = %dirty.display(), error = %e, "tidying a pooled bundle"),
    }
}

/// [`remove_tree`], where a directory already gone (another tidy got there first) is
/// not a failure.
fn remove_if_there(dir: &Path) -> io::Result<()> {
    match remove_tree(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Moves `bundle` to the first free slot named by `slot_path`, making the pool on first
/// use; false when every slot is taken. A taken slot is never empty (it holds `work`),
/// so rename(2) refuses to replace it.
fn put(bundle: &Path, pool: &Path, slot_path: fn(&Path, usize) -> PathBuf) -> io::Result<bool> {
    let mut slot = 0;
    while slot < POOL_SLOTS {
        match fs::rename(bundle, slot_path(pool, slot)) {
            Ok(()) => return Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => slot += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !pool.exists() => fs::create_dir_all(pool)?,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    /// What a container and the kernel leave in a bundle.
    fn use_bundle(bundle: &Path) {
        fs::create_dir_all(bundle.join("upper/etc")).unwrap();
        fs::write(bundle.join("upper/etc/passwd"), "changed").unwrap();
        fs::create_dir_all(bundle.join("work/work/#12")).unwrap();
        fs::write(bundle.join("work/work/#13"), "half a copy-up").unwrap();
    }

    #[test]
    fn a_released_bundle_is_emptied_then_tidied_then_taken_again() {
        let t = tempfile::tempdir().unwrap();
        let pool = t.path().join("pool");
        let first = t.path().join("containers/a");
        prepare(&first, Some(&pool)).unwrap();
        assert_eq!(names(&first), ["upper", "work"]);
        use_bundle(&first);
        release(&first, Some(&pool)).unwrap();
        assert!(!first.exists());
        assert_eq!(names(&pool), ["dirty-0"]);
        let dirty = pool.join("dirty-0");
        assert_eq!(names(&dirty), ["upper", "work"]);
        assert!(
            names(&dirty.join("upper")).is_empty(),
            "the container's files went at release"
        );
        assert_eq!(names(&dirty.join("work")), ["work"]);
        assert!(names(&dirty.join("work/work")).is_empty());

        fs::write(dirty.join("upper/left"), "by a mount still alive somewhere").unwrap();
        tidy(&pool);
        assert_eq!(names(&pool), [TIDY_LOCK, "0"]);
        assert_eq!(names(&pool.join("0")), ["upper", "work"]);
        assert!(
            names(&pool.join("0/upper")).is_empty(),
            "a fresh upper, not the released one"
        );
        assert!(names(&pool.join("0/work")).is_empty());

        let second = t.path().join("containers/b");
        prepare(&second, Some(&pool)).unwrap();
        assert_eq!(names(&pool), [TIDY_LOCK], "the clean bundle was taken");
        assert_eq!(names(&second), ["upper", "work"]);
        assert!(names(&second.join("upper")).is_empty());
    }

    #[test]
    fn new_bundles_are_spread_over_ext4s_block_groups() {
        let t = tempfile::tempdir().unwrap();
        let containers = t.path().join("containers");
        prepare(&containers.join("a"), None).unwrap();
        let fs_type = rustix::fs::statfs(t.path()).unwrap().f_type;
        if fs_type != 0xEF53 {
            eprintln!(
                "SKIP new_bundles_are_spread_over_ext4s_block_groups: the temporary directory is not on ext2/3/4"
            );
            return;
        }
        let fd = rustix::fs::open(&containers, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert!(rustix::fs::ioctl_getflags(&fd).unwrap().contains(IFlags::TOPDIR));
        prepare(&containers.join("b"), None).unwrap();
        assert!(containers.join("b/work").is_dir(), "a second bundle beside the first");
    }

    /// While one tidy holds the pool's lock another moves nothing: it could otherwise
    /// take on a bundle whose fresh `upper` the first has not made yet, or move on one
    /// put in the slot meanwhile, with its old upper.
    #[test]
    fn tidies_take_turns() {
        let t = tempfile::tempdir().unwrap();
        let pool = t.path().join("pool");
        let bundle = t.path().join("containers/a");
        prepare(&bundle, Some(&pool)).unwrap();
        release(&bundle, Some(&pool)).unwrap();
        let other = FileLock::exclusive(&pool.join(TIDY_LOCK)).unwrap();
        tidy(&pool);
        assert_eq!(names(&pool), [TIDY_LOCK, "dirty-0"], "left to the tidy at work");
        drop(other);
        tidy(&pool);
        assert_eq!(names(&pool), [TIDY_LOCK, "0"]);
    }

    /// A clean bundle left by a petri whose tidy made no `upper` gets one when taken.
    #[test]
    fn a_clean_bundle_without_upper_gets_one() {
        let t = tempfile::tempdir().unwrap();
        let pool = t.path().join("pool");
        fs::create_dir_all(pool.join("0/work")).unwrap();
        fs::create_dir(t.path().join("containers")).unwrap();
        let bundle = t.path().join("containers/a");
        prepare(&bundle, Some(&pool)).unwrap();
        assert!(names(&pool).is_empty());
        assert_eq!(names(&bundle), ["upper", "work"]);
    }

    #[test]
    fn full_pools_or_no_pool_remove_the_bundle() {
        let t = tempfile::tempdir().unwrap();
        let pool = t.path().join("pool");
        let bundles: Vec<_> = (0..=POOL_SLOTS).map(|i| t.path().join(format!("c/{i}"))).collect();
        for b in &bundles {
            prepare(b, Some(&pool)).unwrap();
            use_bundle(b);
        }
        for b in &bundles {
            release(b, Some(&pool)).unwrap();
            assert!(!b.exists());
        }
        let dirty: Vec<String> = (0..POOL_SLOTS).map(|i| format!("dirty-{i}")).collect();
        assert_eq!(names(&pool), dirty);
        for _ in 0..=POOL_SLOTS {
            tidy(&pool);
        }
        let clean: Vec<String> = std::iter::once(TIDY_LOCK.to_string())
            .chain((0..POOL_SLOTS).map(|i| i.to_string()))
            .collect();
        assert_eq!(names(&pool), clean, "every dirty bundle made clean");
        let lone = t.path().join("c/lone");
        prepare(&lone, None).unwrap();
        release(&lone, None).unwrap();
        assert!(!lone.exists());
        assert_eq!(names(&pool), clean);
    }
}
