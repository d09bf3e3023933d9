//! Advisory file locks (flock) that several petri processes on one root agree on.
//! The lock is held while the value lives and released when it is dropped (or when the
//! process dies, which is why flock and not a lock file's existence).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

pub struct FileLock {
    file: File,
}

impl FileLock {
    pub fn shared(path: &Path) -> io::Result<FileLock> {
        FileLock::take(path, FlockOperation::LockShared)
    }

    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        FileLock::take(path, FlockOperation::LockExclusive)
    }

    /// Takes the lock exclusively if nobody holds it in any mode; `None` otherwise.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        match FileLock::take(path, FlockOperation::NonBlockingLockExclusive) {
            Ok(lock) => Ok(Some(lock)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Turns an exclusive lock into a shared one (others may then share it too).
    pub fn downgrade(&self) -> io::Result<()> {
        Ok(flock(&self.file, FlockOperation::LockShared)?)
    }

    fn take(path: &Path, op: FlockOperation) -> io::Result<FileLock> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        loop {
            match flock(&file, op) {
                Ok(()) => return Ok(FileLock { file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_waits_for_shared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let shared = FileLock::shared(&path).unwrap();
        let also_shared = FileLock::shared(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let t = std::thread::spawn(move || {
            let _x = FileLock::exclusive(&p).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err());
        drop((shared, also_shared));
        rx.recv().unwrap();
        t.join().unwrap();
    }
}
