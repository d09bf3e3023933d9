//! Executes the mount plan inside the container's new mount namespace, before
//! pivot_root, and builds on the launcher's side the detached mounts the child attaches
//! (the scratch tmpfs with the generated /etc files and the directories of /dev, the
//! masks and /sys/fs/cgroup: see `plan::Scratch`; /dev's devpts and shm: see
//! `plan::PREBUILT`). Every target is resolved with openat2(RESOLVE_IN_ROOT) against the
//! rootfs, so a symlink planted in the image cannot redirect a mount onto the host, and
//! the mount is made on `/proc/self/fd/N` of that resolved path (runc's technique).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{
    self as rmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
};

use super::plan::{MountOp, Scratch, DEVICES, DEV_DIRS, GENERATED, LINKS, PREBUILT};
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
        "lowerdir={},upperdir={},workdir={}{}",
        lower.join(":"),
        fd_path(upper),
        fd_path(work),
        if volatile { ",volatile" } else { "" }
    );
    let data = options(&data, &shown)?;
    rmount::mount("overlay", rootfs, "overlay", MountFlags::empty(), data.as_deref())
        .map_err(err("mount overlay on", &shown))
}

/// The launcher's overlay root, as a detached mount for the child to attach; `None` on
/// a kernel that cannot take the layers one at a time (`lowerdir+`, Linux 6.8), whose
/// child mounts the root itself ([`mount_overlay`]): fsconfig caps each string at 256
/// bytes, which a whole `lowerdir` list soon overflows. The layers, the upper and the
/// work directory are named through open directories (/proc/self/fd/N/...), so every
/// string is short whatever the store's path; the overlay resolves each as it is given.
/// Mounting here takes the overlay off the child's path: the child makes its network
/// namespace meanwhile, and attaches the root with one `move_mount`.
pub fn build_overlay(
    layers_dir: &Path,
    lower: &[String],
    bundle: &Path,
    volatile: bool,
) -> Result<Option<OwnedFd>, MountError> {
    let shown = root_mount_point(bundle).display().to_string();
    let (layers, upper, work) = (
        open_dir(layers_dir, "open")?,
        open_dir(&bundle.join("upper"), "open")?,
        open_dir(&bundle.join("work"), "open")?,
    );
    let (upperdir, workdir) = (fd_path(&upper), fd_path(&work));
    let mut options = vec![("upperdir", upperdir.as_str()), ("workdir", workdir.as_str())];
    if volatile {
        options.push(("volatile", ""));
    }
    let context = fs_context("overlay", &shown, &options)?;
    let layers = fd_path(&layers);
    for (i, layer) in lower.iter().enumerate() {
        match rmount::fsconfig_set_string(&context, "lowerdir+", format!("{layers}/{layer}")) {
            Ok(()) => {}
            // Linux 6.5 to 6.7: the overlay checks its options, and has no `lowerdir+`.
            Err(Errno::INVAL) if i == 0 => return Ok(None),
            Err(e) => return Err(err("add a layer to the overlay for", &shown)(e)),
        }
    }
    match rmount::fsconfig_create(&context) {
        Ok(()) => {}
        // Before Linux 6.5 the overlay takes fsconfig's options as legacy mount data,
        // unchecked until now, and `lowerdir+` is refused here. Any other fault that
        // refuses with EINVAL is refused again by the child's own mount, which reports it.
        Err(Errno::INVAL) => return Ok(None),
        Err(e) => return Err(err("create the overlay for", &shown)(e)),
    }
    let root = rmount::fsmount(&context, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(err("fsmount the overlay for", &shown))?;
    Ok(Some(root))
}

/// Attaches a detached mount the launcher built (the scratch tmpfs, the overlay root)
/// on the directory `dir`.
pub fn attach(detached: &OwnedFd, dir: &Path, what: &'static str) -> Result<(), MountError> {
    rmount::move_mount(detached, "", rfs::CWD, dir, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(err(what, &dir.display().to_string()))
}

/// The scratch tmpfs's directories besides the generated files: the root's mount point
/// and those of [`Scratch`] (/dev's, filled after the plan is sent by [`build_dev`]).
const SCRATCH_ROOT: &str = "root";
const SCRATCH_DEV: &str = "dev";
const SCRATCH_CGROUP: &str = "cgroup";
const SCRATCH_EMPTY: &str = "empty";
const SCRATCH_DIRS: [(&str, u32); 4] = [
    (SCRATCH_ROOT, 0o755),
    (SCRATCH_DEV, 0o755),
    (SCRATCH_CGROUP, 0o755),
    (SCRATCH_EMPTY, 0o555),
];

/// Where the child attaches the root filesystem: a directory of the scratch tmpfs, which
/// the child attaches over `bundle`.
pub fn root_mount_point(bundle: &Path) -> PathBuf {
    bundle.join(SCRATCH_ROOT)
}

/// The launcher's half of the scratch tmpfs: a detached tmpfs holding the generated
/// files (`contents` in the order of [`GENERATED`], under their file names), the
/// directory `root`, the root's mount point, and the directories the container's other
/// small tmpfs are bound from ([`Scratch`]). Its size and mount attributes are those of
/// Docker's /dev (`size=65536k`, nosuid, strictatime), the largest of them; the binds
/// of the others add their own. The child attaches it over its bundle
/// ([`attach_scratch`]); building it here keeps the mount and the file creations off
/// the child's critical path.
pub fn build_scratch(contents: &[String; 3]) -> Result<OwnedFd, MountError> {
    let shown = "the scratch tmpfs";
    let fs = new_mount(
        "tmpfs",
        shown,
        &[("mode", "755"), ("size", "65536k")],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_STRICTATIME,
    )?;
    // The modes are exact: the launcher's umask must not narrow them.
    exact_modes(|| {
        for (dir, mode) in SCRATCH_DIRS {
            rfs::mkdirat(&fs, dir, Mode::from_raw_mode(mode)).map_err(err("mkdir in", shown))?;
        }
        for (target, text) in GENERATED.iter().zip(contents) {
            let name = Path::new(target).file_name().unwrap_or_default();
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            let file =
                rfs::openat(&fs, name, flags, Mode::from_raw_mode(0o644)).map_err(err("create a file in", shown))?;
            std::io::Write::write_all(&mut std::fs::File::from(file), text.as_bytes()).map_err(|source| {
                MountError {
                    op: "write a file in",
                    target: shown.to_string(),
                    source,
                }
            })?;
        }
        Ok(())
    })?;
    Ok(fs)
}

/// Attaches the launcher's scratch tmpfs at `dir`; returns where its parts are. Its
/// empty directory is bound onto itself read-only, for the masks to bind.
pub fn attach_scratch(scratch: &OwnedFd, dir: &Path) -> Result<Scratch, MountError> {
    attach(scratch, dir, "attach the scratch tmpfs on")?;
    let empty = dir.join(SCRATCH_EMPTY);
    let shown = empty.display().to_string();
    rmount::mount_bind(&empty, &empty).map_err(err("bind", &shown))?;
    let sealed = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    rmount::mount_remount(&empty, sealed, "").map_err(err("make read-only", &shown))?;
    Ok(Scratch {
        etc_files: GENERATED
            .iter()
            .map(|target| (dir.join(Path::new(target).file_name().unwrap_or_default()), *target))
            .collect(),
        cgroup: dir.join(SCRATCH_CGROUP),
        empty,
    })
}

/// Makes the directories `names` in the scratch tmpfs's `cgroup` (the mount points of
/// `plan::cgroup_mount_points`).
pub fn make_cgroup_mount_points<'a>(
    scratch: &OwnedFd,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), MountError> {
    let dir = rfs::openat(
        scratch,
        SCRATCH_CGROUP,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open", "/sys/fs/cgroup in the scratch tmpfs"))?;
    exact_modes(|| {
        names.into_iter().try_for_each(|name| {
            rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)).map_err(err("mkdir in", "/sys/fs/cgroup"))
        })
    })
}

/// Runs `f` with the umask cleared, so that the modes it gives are exact.
fn exact_modes<T>(f: impl FnOnce() -> T) -> T {
    let umask = rustix::process::umask(Mode::empty());
    let out = f();
    rustix::process::umask(umask);
    out
}

/// Detached mounts by their container path, in attach order.
pub type Detached = Vec<(&'static str, OwnedFd)>;

/// /dev, for the plan: a detached mount of the scratch tmpfs's `dev`, empty until
/// [`build_dev`]. Made after the root's mount, and before /dev's own ([`build_dev`]), so
/// the container's mountinfo lists them in that order, as a runtime mounting one after
/// the other would.
pub fn clone_dev(scratch: &OwnedFd) -> Result<OwnedFd, MountError> {
    let flags = rmount::OpenTreeFlags::OPEN_TREE_CLONE | rmount::OpenTreeFlags::OPEN_TREE_CLOEXEC;
    rmount::open_tree(scratch, SCRATCH_DEV, flags).map_err(err("clone", "/dev of the scratch tmpfs"))
}

/// The launcher's half of /dev: makes its device nodes, links and mount points in `dev`
/// ([`clone_dev`], which the child may have attached already: it looks inside only
/// after the launcher's /dev message), and builds its devpts and shm as detached
/// mounts (fsopen/fsmount), in the order of [`PREBUILT`], for the child to attach. So
/// the child's critical path is two `move_mount`s instead of two mounts and fifteen
/// node, link and directory creations.
pub fn build_dev(dev: &OwnedFd, shm_bytes: u64) -> Result<Detached, MountError> {
    let [pts_target, shm_target] = PREBUILT;
    // The modes below are exact: the launcher's umask must not narrow them.
    exact_modes(|| populate_dev(dev, "/dev"))?;
    let pts = new_mount(
        "devpts",
        pts_target,
        &[
            ("newinstance", ""),
            ("ptmxmode", "0666"),
            ("mode", "0620"),
            ("gid", "5"),
        ],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    let shm_size = shm_bytes.to_string();
    let shm = new_mount(
        "tmpfs",
        shm_target,
        &[("mode", "1777"), ("size", &shm_size)],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    Ok(vec![(pts_target, pts), (shm_target, shm)])
}

fn populate_dev(dev: &OwnedFd, shown: &str) -> Result<(), MountError> {
    for (name, major, minor) in DEVICES {
        let mode = Mode::from_raw_mode(0o666);
        rfs::mknodat(
            dev,
            *name,
            FileType::CharacterDevice,
            mode,
            rfs::makedev(*major, *minor),
        )
        .map_err(err("mknod in", shown))?;
    }
    for (name, points_to) in LINKS {
        rfs::symlinkat(*points_to, dev, *name).map_err(err("symlink in", shown))?;
    }
    for name in DEV_DIRS {
        rfs::mkdirat(dev, *name, Mode::from_raw_mode(0o755)).map_err(err("mkdir in", shown))?;
    }
    Ok(())
}

/// A detached mount of a new `fstype` filesystem; `options` are (key, value) pairs, an
/// empty value being a flag.
fn new_mount(
    fstype: &str,
    shown: &str,
    options: &[(&str, &str)],
    attrs: MountAttrFlags,
) -> Result<OwnedFd, MountError> {
    let context = fs_context(fstype, shown, options)?;
    rmount::fsconfig_create(&context).map_err(err("create the filesystem for", shown))?;
    rmount::fsmount(&context, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(err("fsmount for", shown))
}

/// A filesystem context of `fstype` with `options` set (see [`new_mount`]), not yet
/// created.
fn fs_context(fstype: &str, shown: &str, options: &[(&str, &str)]) -> Result<OwnedFd, MountError> {
    let context = rmount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).map_err(err("fsopen for", shown))?;
    // The source shown in the container's mountinfo, as mount(8) would name it.
    for (key, value) in std::iter::once(&("source", fstype)).chain(options) {
        match *value {
            "" => rmount::fsconfig_set_flag(&context, *key),
            v => rmount::fsconfig_set_string(&context, *key, v),
        }
        .map_err(err("configure the filesystem for", shown))?;
    }
    Ok(context)
}

/// An O_PATH descriptor of the directory `dir`; `op` names the opening in an error.
fn open_dir(dir: &Path, op: &'static str) -> Result<OwnedFd, MountError> {
    rfs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(err(op, &dir.display().to_string()))
}

/// Runs each operation against the rootfs at `root`; `prebuilt` are the launcher's
/// detached mounts for [`MountOp::Attach`], by target.
pub fn execute(root: &Path, ops: &[MountOp], prebuilt: &[(&str, OwnedFd)]) -> Result<(), MountError> {
    let root = open_dir(root, "open rootfs")?;
    for op in ops {
        apply(&root, op, prebuilt)?;
    }
    Ok(())
}

fn apply(root: &OwnedFd, op: &MountOp, prebuilt: &[(&str, OwnedFd)]) -> Result<(), MountError> {
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
        MountOp::Attach { target } => {
            let (_, detached) = prebuilt
                .iter()
                .find(|(t, _)| t == target)
                .ok_or_else(|| err("attach", target)(Errno::NOENT))?;
            let fd = ensure(root, target, Kind::Dir)?;
            let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
            rmount::move_mount(detached, c"", &fd, c"", flags).map_err(err("attach", target))
        }
        MountOp::Bind {
            source,
            target,
            readonly,
        } => bind(root, source, target, *readonly),
        MountOp::Mask { target, empty } => mask(root, target, empty),
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

/// Hides `target`: a directory under a bind of `empty`, an empty directory on a
/// read-only mount ([`attach_scratch`]), which the bind inherits; anything else under
/// /dev/null.
fn mask(root: &OwnedFd, target: &str, empty: &Path) -> Result<(), MountError> {
    let fd = match resolve(root, target) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(err("resolve", target)(e)),
    };
    let is_dir = rfs::fstat(&fd).map_err(err("stat", target))?.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if is_dir {
        rmount::mount_bind(empty, fd_path(&fd)).map_err(err("mask", target))
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

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::process::{unshare_namespace, SharedView};
    use std::fs;

    fn read_at(root: &OwnedFd, name: &str) -> String {
        let file = rfs::openat(root, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        let mut buf = [0u8; 64];
        let n = rustix::io::read(&file, &mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// The launcher's detached overlay ([`build_overlay`], which this kernel takes) and the
    /// child's own mount ([`mount_overlay`], for kernels without `lowerdir+`, which CI's
    /// runs never reach otherwise) stack the same layers the same way, top layer first,
    /// and write to the upper directory.
    #[test]
    fn both_overlay_mounts_stack_the_layers_alike() {
        if !rustix::process::geteuid().is_root() {
            let must = std::env::var("PETRI_MUST_WORK").is_ok_and(|v| v == "1");
            assert!(!must, "needs root (PETRI_MUST_WORK=1 forbids skipping)");
            eprintln!("SKIP both_overlay_mounts_stack_the_layers_alike: needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let layers = tmp.path().join("layers");
        for (layer, files) in [("top", &[("a", "top")][..]), ("low", &[("a", "low"), ("b", "low")])] {
            fs::create_dir_all(layers.join(layer).join("diff")).unwrap();
            for (name, text) in files {
                fs::write(layers.join(layer).join("diff").join(name), text).unwrap();
            }
        }
        let lower = ["top/diff".to_string(), "low/diff".to_string()];
        let bundles: Vec<PathBuf> = ["launcher", "child"].iter().map(|b| tmp.path().join(b)).collect();
        for bundle in &bundles {
            for dir in ["upper", "work", "root"] {
                fs::create_dir_all(bundle.join(dir)).unwrap();
            }
        }

        let built = build_overlay(&layers, &lower, &bundles[0], true)
            .unwrap()
            .expect("a kernel with lowerdir+");
        assert_eq!(
            (read_at(&built, "a"), read_at(&built, "b")),
            ("top".into(), "low".into())
        );
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC;
        drop(rfs::openat(&built, "c", flags, Mode::from_raw_mode(0o644)).unwrap());
        assert!(
            bundles[0].join("upper/c").exists(),
            "a write lands in the upper directory"
        );

        // The child's way, in a mount namespace of a thread's own, gone with the thread.
        let (layers, lower, bundle) = (layers.clone(), lower.clone(), bundles[1].clone());
        let seen = std::thread::spawn(move || {
            unshare_namespace(SharedView::Mount).unwrap();
            make_private().unwrap();
            let open = |p: PathBuf| open_dir(&p, "open").unwrap();
            let (upper, work) = (open(bundle.join("upper")), open(bundle.join("work")));
            let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
            let root = bundle.join("root");
            mount_overlay(&layers, &lower, &upper, &work, true, &root).unwrap();
            let root = open(root);
            (read_at(&root, "a"), read_at(&root, "b"))
        })
        .join()
        .unwrap();
        assert_eq!(seen, ("top".into(), "low".into()));
    }
}
