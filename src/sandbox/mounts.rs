//! Executes the mount plan inside the container's new mount namespace, before
//! pivot_root. Every target is resolved with openat2(RESOLVE_IN_ROOT) against the
//! rootfs, so a symlink planted in the image cannot redirect a mount onto the host, and
//! the mount is made on `/proc/self/fd/N` of that resolved path (runc's technique).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{self as rmount, MountFlags, MountPropagationFlags};

use super::plan::MountOp;
use crate::sys::process::make_tree_readonly;

#[derive(Debug, thiserror::Error)]
#[error("{op} {target}: {source}")]
pub struct MountError {
    pub op: &'static str,
    pub target: String,
    #[source]
    pub source: io::Error,
}

fn err<'a>(op: &'static str, target: &'a str) -> impl FnOnce(Errno) -> MountError + 'a {
    move |e| MountError {
        op,
        target: target.to_string(),
        source: e.into(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// Makes every mount private, so nothing done here propagates to the host.
pub fn make_private() -> Result<(), MountError> {
    rmount::mount_change("/", MountPropagationFlags::REC | MountPropagationFlags::PRIVATE)
        .map_err(err("make private", "/"))
}

/// Mounts the overlay root: `lower` are paths relative to `layers_dir` (kept short so
/// dozens of layers fit in one page of mount options), top layer first. `upper` and
/// `work` are given as open directories (named through /proc/self/fd), so the bundle
/// that holds them can already be covered by the scratch tmpfs. `volatile` skips the
/// sync of the upper filesystem at unmount, for a writable layer that is thrown away
/// (Podman does the same for `--rm`): on ext4 that sync costs more than the rest of
/// the unmount.
pub fn mount_overlay(
    layers_dir: &Path,
    lower: &[&str],
    upper: &OwnedFd,
    work: &OwnedFd,
    volatile: bool,
    rootfs: &Path,
) -> Result<(), MountError> {
    let shown = rootfs.display().to_string();
    rustix::process::chdir(layers_dir).map_err(err("chdir to", &shown))?;
    let data = format!(
        "lowerdir={},upperdir=/proc/self/fd/{},workdir=/proc/self/fd/{}{}",
        lower.join(":"),
        upper.as_raw_fd(),
        work.as_raw_fd(),
        if volatile { ",volatile" } else { "" }
    );
    let data = options(&data, &shown)?;
    rmount::mount("overlay", rootfs, "overlay", MountFlags::empty(), data.as_deref())
        .map_err(err("mount overlay on", &shown))
}

/// Mounts a small tmpfs at `dir`, writes `files` (container path, contents) into it
/// under their file names and makes `dir/root`; returns (tmpfs path, container path).
pub fn scratch(dir: &Path, files: &[(&'static str, String)]) -> Result<Vec<(PathBuf, &'static str)>, MountError> {
    let shown = dir.display().to_string();
    rmount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=755,size=1m"),
    )
    .map_err(err("mount tmpfs on", &shown))?;
    let io = |op: &'static str| {
        let target = shown.clone();
        move |source| MountError { op, target, source }
    };
    std::fs::create_dir(dir.join("root")).map_err(io("create the root mount point in"))?;
    let mut out = Vec::with_capacity(files.len());
    for (target, text) in files {
        let path = dir.join(Path::new(target).file_name().unwrap_or_default());
        std::fs::write(&path, text).map_err(io("write a generated file in"))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io("chmod a generated file in"))?;
        out.push((path, *target));
    }
    Ok(out)
}

/// Runs each operation against the rootfs at `root`.
pub fn execute(root: &Path, ops: &[MountOp]) -> Result<(), MountError> {
    let shown = root.display().to_string();
    let root = rfs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(err("open rootfs", &shown))?;
    for op in ops {
        apply(&root, op)?;
    }
    Ok(())
}

fn apply(root: &OwnedFd, op: &MountOp) -> Result<(), MountError> {
    match op {
        MountOp::Fs {
            fstype,
            target,
            flags,
            data,
        } => {
            let fd = ensure(root, target, Kind::Dir)?;
            let data = options(data, target)?;
            rmount::mount(*fstype, fd_path(&fd), *fstype, *flags, data.as_deref()).map_err(err("mount", target))
        }
        MountOp::Device { target, major, minor } => {
            let (parent, leaf) = parent_of(root, target)?;
            rfs::mknodat(
                &parent,
                leaf,
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rfs::makedev(*major, *minor),
            )
            .map_err(err("mknod", target))
        }
        MountOp::Symlink { target, points_to } => {
            let (parent, leaf) = parent_of(root, target)?;
            rfs::symlinkat(points_to.as_str(), &parent, leaf).map_err(err("symlink", target))
        }
        MountOp::Bind {
            source,
            target,
            readonly,
        } => bind(root, source, target, *readonly),
        MountOp::Mask { target } => mask(root, target),
        MountOp::Seal { target } => readonly(root, target),
        MountOp::ReadOnly { target } => match resolve(root, target) {
            Ok(fd) => {
                rmount::mount_bind_recursive(fd_path(&fd), fd_path(&fd)).map_err(err("bind", target))?;
                readonly(root, target)
            }
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(err("resolve", target)(e)),
        },
    }
}

fn bind(root: &OwnedFd, source: &Path, target: &str, ro: bool) -> Result<(), MountError> {
    let src = rfs::open(source, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(err("open bind source", &source.display().to_string()))?;
    let kind = match rfs::fstat(&src).map_err(err("stat", target))?.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        _ => Kind::File,
    };
    let dst = ensure(root, target, kind)?;
    rmount::mount_bind_recursive(fd_path(&src), fd_path(&dst)).map_err(err("bind", target))?;
    if ro {
        readonly(root, target)?;
    }
    Ok(())
}

/// Makes the mount now at `target` read-only together with all its submounts.
fn readonly(root: &OwnedFd, target: &str) -> Result<(), MountError> {
    let fd = resolve(root, target).map_err(err("resolve", target))?;
    make_tree_readonly(&fd).map_err(|source| MountError {
        op: "make read-only",
        target: target.to_string(),
        source,
    })
}

fn mask(root: &OwnedFd, target: &str) -> Result<(), MountError> {
    let fd = match resolve(root, target) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(err("resolve", target)(e)),
    };
    let is_dir = rfs::fstat(&fd).map_err(err("stat", target))?.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if is_dir {
        rmount::mount("tmpfs", fd_path(&fd), "tmpfs", MountFlags::RDONLY, Some(c"size=0")).map_err(err("mask", target))
    } else {
        rmount::mount_bind("/dev/null", fd_path(&fd)).map_err(err("mask", target))
    }
}

/// An O_PATH fd of `target` inside the root, symlinks resolved as if the root were `/`.
fn resolve(root: &OwnedFd, target: &str) -> Result<OwnedFd, Errno> {
    let relative = match target.trim_start_matches('/') {
        "" => ".",
        r => r,
    };
    rfs::openat2(
        root,
        relative,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Resolves `target`, creating it (and missing parents) as a directory or empty file.
fn ensure(root: &OwnedFd, target: &str, kind: Kind) -> Result<OwnedFd, MountError> {
    match resolve(root, target) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => {}
        Err(e) => return Err(err("resolve", target)(e)),
    }
    let (parent, leaf) = match target.rsplit_once('/') {
        Some((p, leaf)) if !p.is_empty() => (ensure(root, p, Kind::Dir)?, leaf),
        _ => (
            resolve(root, "/").map_err(err("resolve", "/"))?,
            target.trim_start_matches('/'),
        ),
    };
    let made = match kind {
        Kind::Dir => rfs::mkdirat(&parent, leaf, Mode::from_raw_mode(0o755)),
        Kind::File => rfs::openat(
            &parent,
            leaf,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
    };
    match made {
        Ok(()) | Err(Errno::EXIST) => resolve(root, target).map_err(err("resolve", target)),
        Err(e) => Err(err("create mount point", target)(e)),
    }
}

fn parent_of<'a>(root: &OwnedFd, target: &'a str) -> Result<(OwnedFd, &'a OsStr), MountError> {
    let (parent, leaf) = target.rsplit_once('/').unwrap_or(("", target));
    let dir = if parent.is_empty() { "/" } else { parent };
    Ok((ensure(root, dir, Kind::Dir)?, OsStr::new(leaf)))
}

/// Mount options as the C string mount(2) takes; none when empty.
fn options(data: &str, target: &str) -> Result<Option<CString>, MountError> {
    if data.is_empty() {
        return Ok(None);
    }
    CString::new(data).map(Some).map_err(|_| MountError {
        op: "mount",
        target: target.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "mount options contain a NUL byte"),
    })
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}
