//! The base layer: one small directory shared by every container, stacked above the
//! image's layers (Docker's "init layer"). It holds the mount points petri always uses
//! (/proc, /sys, /dev, /etc/hostname, /etc/hosts, /etc/resolv.conf), so a start never
//! has to create them in the container's upper directory: no copy-up of /etc, nothing
//! to delete afterwards, and `upper/` holds only what the process itself wrote.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Its directory name under the store's layers directory; not a ChainID, so the image
/// store's garbage collection leaves it alone. Bump the version when the contents change.
pub const NAME: &str = "petri-base-v1";

const DIRS: &[&str] = &["etc", "proc", "sys", "dev"];
const FILES: &[&str] = &["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// Creates `layers_dir/NAME/diff` unless it exists; safe against concurrent callers (the
/// tree is built aside and renamed into place). Returns the lowerdir entry, relative to
/// `layers_dir`.
pub fn ensure(layers_dir: &Path) -> io::Result<String> {
    let entry = format!("{NAME}/diff");
    let dest = layers_dir.join(NAME);
    if dest.exists() {
        return Ok(entry);
    }
    let staging = tempfile::Builder::new().prefix(".base-").tempdir_in(layers_dir)?;
    let diff = staging.path().join("diff");
    for dir in std::iter::once("").chain(DIRS.iter().copied()) {
        let path = diff.join(dir);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    }
    for file in FILES {
        let path = diff.join(file);
        fs::write(&path, b"")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    }
    match fs::rename(staging.path(), &dest) {
        Ok(()) => {
            let _ = staging.keep();
            Ok(entry)
        }
        // Another petri won the race; its tree is the same.
        Err(_) if dest.exists() => Ok(entry),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_the_mount_points() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ensure(dir.path()).unwrap(), "petri-base-v1/diff");
        let diff = dir.path().join(NAME).join("diff");
        for f in FILES {
            assert!(diff.join(f).is_file(), "{f}");
        }
        assert!(diff.join("proc").is_dir());
        fs::write(diff.join("etc/hosts"), "marker").unwrap();
        ensure(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(diff.join("etc/hosts")).unwrap(),
            "marker",
            "rebuilt an existing layer"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "staging left behind");
    }
}
