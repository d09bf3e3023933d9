//! The container's directory on disk, its bundle: the overlay's `upper` and `work`.
//!
//! Why this is more than two `mkdir`s and a `remove_dir_all`: where the filesystem
//! discards freed blocks synchronously (ext4 mounted `discard` without a journal, as on
//! the project's VM), removing a directory waits for the disk, ~0.25 ms each, and a
//! `--rm` run removed six after its process had exited. So, for a `--rm` sandbox:
//! - the marker a `volatile` overlay leaves in `work` goes as soon as the process runs
//!   ([`drop_volatile_marker`]);
//! - [`release`] removes what the container wrote (`upper`, and whatever the kernel left
//!   in `work`) as before, but keeps the emptied bundle, with its empty `work`, in a pool
//!   of [`POOL_SLOTS`] slots, and [`prepare`] takes the next `--rm` sandbox's bundle
//!   from there, adding a fresh `upper`.
//!
//! What the container wrote is gone when cleanup returns; only two empty directories are
//! reused, and never the `upper`, which an overlay still mounted somewhere (a mount
//! namespace kept alive from outside) would go on writing to. The kernel empties the
//! reused `work` when it mounts the next overlay. Slots are taken and filled with
//! rename(2), which either moves the whole directory or fails, so petri processes that
//! share a root never get the same bundle.

use std::fs;
use std::io;
use std::path::Path;

use super::SandboxError;

/// How many empty bundles a pool keeps: enough for a few `--rm` runs at a time.
pub const POOL_SLOTS: usize = 4;

/// Makes `bundle` with an empty `upper` and `work`, taking the bundle from `pool` when
/// one is there.
pub fn prepare(bundle: &Path, pool: Option<&Path>) -> Result<(), SandboxError> {
    if let Some(pool) = pool {
        take(pool, bundle);
    }
    for sub in ["upper", "work"] {
        let dir = bundle.join(sub);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
    }
    Ok(())
}

/// Moves a pooled bundle to `bundle`; false when the pool has none (or does not exist).
fn take(pool: &Path, bundle: &Path) -> bool {
    (0..POOL_SLOTS).any(|slot| fs::rename(pool.join(slot.to_string()), bundle).is_ok())
}

/// A `volatile` overlay (a `--rm` sandbox's) leaves `work/work/incompat/volatile` in its
/// work directory when mounted, so that a later mount of the same upper refuses: after a
/// crash the upper may not have reached the disk. A `--rm` bundle's upper is never
/// mounted again, and the kernel keeps no reference to the marker once the mount is
/// made, so it is removed as soon as the container's process runs (its exec proves the
/// mount is made) rather than after it exits: its two directories then go while the
/// container runs. Best effort: whatever is left goes at [`release`].
pub fn drop_volatile_marker(bundle: &Path) {
    let marker = bundle.join("work/work/incompat");
    if let Err(e) = fs::remove_dir_all(&marker) {
        tracing::debug!(path = %marker.display(), error = %e, "removing the volatile overlay's marker early");
    }
}

/// Removes what the container wrote, then puts the emptied bundle in `pool` when one
/// is given and has a free slot; otherwise (or when emptying fails) removes the bundle.
pub fn release(bundle: &Path, pool: Option<&Path>) -> Result<(), SandboxError> {
    if let Some(pool) = pool {
        match empty_but_work(bundle).and_then(|()| put(bundle, pool)) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => tracing::debug!(bundle = %bundle.display(), error = %e, "keeping an empty bundle for reuse"),
        }
    }
    fs::remove_dir_all(bundle).map_err(io_err("remove", bundle))
}

/// Leaves `bundle` holding only an empty `work` directory.
fn empty_but_work(bundle: &Path) -> io::Result<()> {
    for entry in fs::read_dir(bundle)? {
        let entry = entry?;
        if entry.file_name() == "work" && entry.file_type()?.is_dir() {
            for inner in fs::read_dir(entry.path())? {
                remove_entry(&inner?)?;
            }
        } else {
            remove_entry(&entry)?;
        }
    }
    Ok(())
}

fn remove_entry(entry: &fs::DirEntry) -> io::Result<()> {
    if entry.file_type()?.is_dir() {
        fs::remove_dir_all(entry.path())
    } else {
        fs::remove_file(entry.path())
    }
}

/// Moves the emptied `bundle` into a free slot of `pool`; false when every slot is
/// taken. A taken slot is never empty (it holds `work`), so rename(2) refuses to
/// replace it.
fn put(bundle: &Path, pool: &Path) -> io::Result<bool> {
    fs::create_dir_all(pool)?;
    for slot in 0..POOL_SLOTS {
        match fs::rename(bundle, pool.join(slot.to_string())) {
            Ok(()) => return Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => continue,
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

    #[test]
    fn a_released_bundle_is_emptied_pooled_and_taken_again() {
        let t = tempfile::tempdir().unwrap();
        let pool = t.path().join("pool");
        let first = t.path().join("containers/a");
        prepare(&first, Some(&pool)).unwrap();
        assert_eq!(names(&first), ["upper", "work"]);
        // What a container and the kernel leave behind.
        fs::create_dir_all(first.join("upper/etc")).unwrap();
        fs::write(first.join("upper/etc/passwd"), "changed").unwrap();
        fs::create_dir_all(first.join("work/work/#12")).unwrap();
        release(&first, Some(&pool)).unwrap();
        assert!(!first.exists());
        assert_eq!(names(&pool), ["0"]);
        assert_eq!(names(&pool.join("0")), ["work"]);
        assert!(names(&pool.join("0/work")).is_empty());

        let second = t.path().join("containers/b");
        prepare(&second, Some(&pool)).unwrap();
        assert!(names(&pool).is_empty(), "the pooled bundle was taken");
        assert_eq!(names(&second), ["upper", "work"]);
        assert!(names(&second.join("upper")).is_empty());
    }

    #[test]
    fn a_full_pool_or_no_pool_removes_the_bundle() {
        let t = tempfile::tempdir().unwrap();
        let pool = t.path().join("pool");
        let bundles: Vec<_> = (0..=POOL_SLOTS).map(|i| t.path().join(format!("c/{i}"))).collect();
        for b in &bundles {
            prepare(b, Some(&pool)).unwrap();
        }
        for b in &bundles {
            release(b, Some(&pool)).unwrap();
            assert!(!b.exists());
        }
        assert_eq!(names(&pool).len(), POOL_SLOTS);
        let lone = t.path().join("c/lone");
        prepare(&lone, None).unwrap();
        release(&lone, None).unwrap();
        assert!(!lone.exists());
        assert_eq!(names(&pool).len(), POOL_SLOTS);
    }
}
