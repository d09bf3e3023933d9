//! Applies one layer's tar stream to an empty directory, in overlayfs form.
//!
//! This is the code that touches the host filesystem with names an image chose, so it
//! trusts none of them:
//! - the `tar` crate only parses; every file is created here with `*at` syscalls relative
//!   to a directory fd that was opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`,
//!   so no path can leave the layer root or pass through a symlink, whatever the kernel
//!   finds on disk;
//! - absolute names, `..`, entries through symlinks, duplicate entries (and so every
//!   "replace a symlink, then chmod through it" trick), type changes of `/`, hardlinks to
//!   anything but a file made earlier in this layer, malformed whiteouts, overlay xattrs
//!   and device nodes other than the harmless ones are all refused with an error naming
//!   the entry;
//! - whiteouts become 0:0 character devices and opaque markers the
//!   `trusted.overlay.opaque=y` xattr, which is what overlayfs reads. Because each layer
//!   is its own directory, an opaque marker hides only lower layers and so applies
//!   before its same-layer siblings whatever the tar order.
//!
//! Metadata: numeric owner (when privileged), mode applied after chown so setuid bits
//! survive, mtime, and `user.*` / `security.capability` xattrs. Directory modes and times
//! are applied last, once nothing more is created inside them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

/// Why an entry was refused. Each variant is one class of attack or malformed layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("absolute path")]
    AbsolutePath,
    #[error("path contains '..'")]
    ParentComponent,
    #[error("path goes through a symlink")]
    ThroughSymlink,
    #[error("a parent of the path is not a directory")]
    ParentNotDirectory,
    #[error("duplicate entry: the path was already created by this layer")]
    Duplicate,
    #[error("changes the type of the root directory")]
    RootTypeChange,
    #[error("invalid whiteout name")]
    InvalidWhiteout,
    #[error("hardlink target {0:?} is not a file created earlier in this layer")]
    HardlinkTarget(String),
    #[error("device node {major}:{minor} is not allowed in an image")]
    DeviceNotAllowed { major: u32, minor: u32 },
    #[error("overlay xattr {0:?} is not allowed in an image")]
    OverlayXattr(String),
    #[error("unsupported tar entry type {0:?}")]
    UnsupportedType(u8),
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: Refusal },
    #[error("layer entry {entry:?}: {op} {path:?}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("reading the layer's tar stream: {0}")]
    Read(#[source] io::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Running with the privileges to chown, mknod and set `trusted.*` xattrs.
    pub privileged: bool,
}

impl UnpackOptions {
    pub fn for_current_user() -> Self {
        UnpackOptions {
            privileged: rustix::process::geteuid().is_root(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub file_bytes: u64,
}

/// Devices that every container's /dev has anyway; old images ship them.
const ALLOWED_CHAR_DEVICES: &[(u32, u32)] = &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)];
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Unpacks the tar stream `tar` into `dest`, which must be an empty directory.
/// Returns when the archive's end marker is read; the caller drains what follows.
pub fn unpack_layer<R: Read>(tar: R, dest: &Path, opts: UnpackOptions) -> Result<UnpackStats, UnpackError> {
    let root = rfs::open(dest, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
        UnpackError::Io {
            entry: String::new(),
            op: "open layer root",
            path: dest.display().to_string(),
            source: e.into(),
        }
    })?;
    let mut unpacker = Unpacker {
        root,
        opts,
        seen: HashMap::new(),
        dirs: Vec::new(),
        cached_parent: None,
        buf: vec![0; 256 * 1024],
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        unpacker.apply(&mut entry)?;
    }
    unpacker.finish_dirs()?;
    Ok(unpacker.stats)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Created as a parent of another entry, before (or without) its own entry.
    ImplicitDir,
    Dir,
    NonDir,
}

/// Metadata taken from the header and its PAX extensions.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker {
    root: OwnedFd,
    opts: UnpackOptions,
    seen: HashMap<Vec<u8>, Seen>,
    /// Directories whose mode and times are set once the layer is complete.
    dirs: Vec<(Vec<u8>, u32, Timespec)>,
    cached_parent: Option<(Vec<u8>, OwnedFd)>,
    buf: Vec<u8>,
    stats: UnpackStats,
}

/// One entry being applied: its name for errors, its normalised path and parts.
struct Target<'a> {
    name: &'a str,
    parent: Vec<u8>,
    leaf: &'a OsStr,
    key: Vec<u8>,
}

impl Unpacker {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let raw: Vec<u8> = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason| UnpackError::Refused {
            entry: name.clone(),
            reason,
        };
        let parts = normalise(&raw).map_err(refuse)?;
        let meta = read_meta(entry, &name)?;
        self.stats.entries += 1;
        let Some((leaf, parents)) = parts.split_last() else {
            if kind != EntryType::Directory {
                return Err(refuse(Refusal::RootTypeChange));
            }
            self.dirs.push((Vec::new(), meta.mode, meta.mtime));
            return Ok(());
        };
        let target = Target {
            name: &name,
            parent: parents.join(&b'/'),
            leaf: OsStr::from_bytes(leaf),
            key: parts.join(&b'/'),
        };
        if leaf.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&target, kind);
        }
        match (self.seen.get(&target.key), kind) {
            (None, _) => {}
            (Some(Seen::ImplicitDir), EntryType::Directory) => {}
            (Some(_), _) => return Err(refuse(Refusal::Duplicate)),
        }
        let parent = self.parent(&target)?;
        match kind {
            EntryType::Directory => self.directory(&target, &parent, &meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(&target, &parent, &meta, entry)
            }
            EntryType::Symlink => self.symlink(&target, &parent, &meta, entry),
            EntryType::Link => self.hardlink(&target, &parent, entry),
            EntryType::Fifo | EntryType::Char | EntryType::Block => self.node(&target, &parent, &meta, entry),
            other => Err(refuse(Refusal::UnsupportedType(other.as_byte()))),
        }
    }

    /// Opens the entry's parent directory, creating missing ones; never through a symlink.
    fn parent(&mut self, t: &Target) -> Result<OwnedFd, UnpackError> {
        if let Some((key, fd)) = &self.cached_parent {
            if *key == t.parent {
                return fd.try_clone().map_err(|e| io_err(t, "dup", &t.parent, e));
            }
        }
        let fd = if t.parent.is_empty() {
            self.root.try_clone().map_err(|e| io_err(t, "dup", b"", e))?
        } else {
            match self.open_dir(&t.parent, OFlags::PATH) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => self.create_parents(t)?,
                Err(e) => return Err(self.resolve_error(t, &t.parent, e)),
            }
        };
        let clone = fd.try_clone().map_err(|e| io_err(t, "dup", &t.parent, e))?;
        self.cached_parent = Some((t.parent.clone(), clone));
        Ok(fd)
    }

    fn open_dir(&self, rel: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        let path: &OsStr = if rel.is_empty() {
            OsStr::new(".")
        } else {
            OsStr::from_bytes(rel)
        };
        rfs::openat2(
            &self.root,
            path,
            // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS must see a symlink in the last component
            // too, to fail it with ELOOP (with O_NOFOLLOW|O_PATH it would open the link).
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        )
    }

    fn create_parents(&mut self, t: &Target) -> Result<OwnedFd, UnpackError> {
        let mut prefix: Vec<u8> = Vec::new();
        for comp in t.parent.split(|&b| b == b'/') {
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(comp);
            match rfs::mkdirat(&self.root, OsStr::from_bytes(&prefix), Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    self.seen.insert(prefix.clone(), Seen::ImplicitDir);
                }
                Err(Errno::EXIST) => {}
                // mkdirat follows no symlink in the last component but does in earlier
                // ones; the openat2 below is what decides, so only report other errors.
                Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => {}
                Err(e) => return Err(io_err(t, "mkdir", &prefix, e)),
            }
            if let Err(e) = self.open_dir(&prefix, OFlags::PATH) {
                return Err(self.resolve_error(t, &prefix, e));
            }
        }
        self.open_dir(&t.parent, OFlags::PATH)
            .map_err(|e| self.resolve_error(t, &t.parent, e))
    }

    fn resolve_error(&self, t: &Target, rel: &[u8], e: Errno) -> UnpackError {
        let reason = match e {
            Errno::LOOP | Errno::XDEV => Refusal::ThroughSymlink,
            Errno::NOTDIR => Refusal::ParentNotDirectory,
            _ => return io_err(t, "open directory", rel, e),
        };
        refused(t, reason)
    }

    fn whiteout(&mut self, t: &Target, kind: EntryType) -> Result<(), UnpackError> {
        if kind != EntryType::Regular {
            return Err(refused(t, Refusal::InvalidWhiteout));
        }
        let leaf = t.leaf.as_bytes();
        if leaf == OPAQUE_MARKER {
            self.claim(t, t.key.clone())?;
            self.parent(t)?;
            let dir = self
                .open_dir(&t.parent, OFlags::RDONLY)
                .map_err(|e| self.resolve_error(t, &t.parent, e))?;
            return rfs::fsetxattr(&dir, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(|e| io_err(t, "set trusted.overlay.opaque on", &t.parent, e));
        }
        let hidden = &leaf[WHITEOUT_PREFIX.len()..];
        if hidden.starts_with(WHITEOUT_PREFIX) {
            // Other AUFS metadata (.wh..wh.plnk and friends) carries no meaning for overlay.
            tracing::debug!(entry = t.name, "skipping AUFS metadata entry");
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(refused(t, Refusal::InvalidWhiteout));
        }
        let mut key = t.parent.clone();
        if !key.is_empty() {
            key.push(b'/');
        }
        key.extend_from_slice(hidden);
        self.claim(t, key)?;
        let parent = self.parent(t)?;
        rfs::mknodat(
            &parent,
            OsStr::from_bytes(hidden),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .map_err(|e| io_err(t, "create whiteout", &t.key, e))
    }

    /// Records that this layer now owns `key`; a second claim is a duplicate entry.
    fn claim(&mut self, t: &Target, key: Vec<u8>) -> Result<(), UnpackError> {
        if self.seen.insert(key, Seen::NonDir).is_some() {
            return Err(refused(t, Refusal::Duplicate));
        }
        Ok(())
    }

    fn directory(&mut self, t: &Target, parent: &OwnedFd, meta: &Meta) -> Result<(), UnpackError> {
        if self.seen.insert(t.key.clone(), Seen::Dir) != Some(Seen::ImplicitDir) {
            rfs::mkdirat(parent, t.leaf, Mode::from_raw_mode(0o700)).map_err(|e| io_err(t, "mkdir", &t.key, e))?;
        }
        let dir = self
            .open_dir(&t.key, OFlags::RDONLY)
            .map_err(|e| self.resolve_error(t, &t.key, e))?;
        self.set_owner_and_xattrs(t, &dir, meta)?;
        self.dirs.push((t.key.clone(), meta.mode, meta.mtime));
        Ok(())
    }

    fn file<R: Read>(&mut self, t: &Target, parent: &OwnedFd, meta: &Meta, data: &mut R) -> Result<(), UnpackError> {
        self.seen.insert(t.key.clone(), Seen::NonDir);
        let fd = rfs::openat(
            parent,
            t.leaf,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_err(t, "create", &t.key, e))?;
        let mut file = File::from(fd);
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Read(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| io_err(t, "write", &t.key, e))?;
            self.stats.file_bytes += n as u64;
        }
        self.set_owner_and_xattrs(t, &file, meta)?;
        rfs::fchmod(&file, Mode::from_raw_mode(meta.mode)).map_err(|e| io_err(t, "chmod", &t.key, e))?;
        rfs::futimens(&file, &times(meta.mtime)).map_err(|e| io_err(t, "set times of", &t.key, e))
    }

    fn symlink<R: Read>(
        &mut self,
        t: &Target,
        parent: &OwnedFd,
        meta: &Meta,
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        self.seen.insert(t.key.clone(), Seen::NonDir);
        let link: Cow<[u8]> = entry.link_name_bytes().unwrap_or_default();
        rfs::symlinkat(OsStr::from_bytes(&link), parent, t.leaf).map_err(|e| io_err(t, "symlink", &t.key, e))?;
        self.chown_at(t, parent, meta)?;
        rfs::utimensat(parent, t.leaf, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err(t, "set times of", &t.key, e))
    }

    fn hardlink<R: Read>(
        &mut self,
        t: &Target,
        parent: &OwnedFd,
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let raw = entry.link_name_bytes().unwrap_or_default().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let parts = normalise(&raw).map_err(|r| refused(t, r))?;
        let target_key = parts.join(&b'/');
        if self.seen.get(&target_key) != Some(&Seen::NonDir) {
            return Err(refused(t, Refusal::HardlinkTarget(shown)));
        }
        let (target_leaf, target_parents) = parts.split_last().expect("a seen key is never the root");
        let target_dir = self
            .open_dir(&target_parents.join(&b'/'), OFlags::PATH)
            .map_err(|e| self.resolve_error(t, &target_key, e))?;
        self.seen.insert(t.key.clone(), Seen::NonDir);
        rfs::linkat(
            &target_dir,
            OsStr::from_bytes(target_leaf),
            parent,
            t.leaf,
            AtFlags::empty(),
        )
        .map_err(|e| io_err(t, "hardlink", &t.key, e))
    }

    fn node<R: Read>(
        &mut self,
        t: &Target,
        parent: &OwnedFd,
        meta: &Meta,
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let header = entry.header();
        let kind = header.entry_type();
        let file_type = match kind {
            EntryType::Fifo => FileType::Fifo,
            EntryType::Char => FileType::CharacterDevice,
            _ => FileType::BlockDevice,
        };
        let (major, minor) = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        if kind != EntryType::Fifo {
            if kind == EntryType::Block || !ALLOWED_CHAR_DEVICES.contains(&(major, minor)) {
                return Err(refused(t, Refusal::DeviceNotAllowed { major, minor }));
            }
            if !self.opts.privileged {
                tracing::warn!(entry = t.name, "skipping device node: creating it needs root");
                return Ok(());
            }
        }
        self.seen.insert(t.key.clone(), Seen::NonDir);
        rfs::mknodat(
            parent,
            t.leaf,
            file_type,
            Mode::from_raw_mode(0o600),
            rfs::makedev(major, minor),
        )
        .map_err(|e| io_err(t, "mknod", &t.key, e))?;
        self.chown_at(t, parent, meta)?;
        rfs::chmodat(parent, t.leaf, Mode::from_raw_mode(meta.mode), AtFlags::empty())
            .map_err(|e| io_err(t, "chmod", &t.key, e))?;
        rfs::utimensat(parent, t.leaf, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err(t, "set times of", &t.key, e))
    }

    fn chown_at(&self, t: &Target, parent: &OwnedFd, meta: &Meta) -> Result<(), UnpackError> {
        if !self.opts.privileged {
            return Ok(());
        }
        let (uid, gid) = ids(meta);
        rfs::chownat(parent, t.leaf, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err(t, "chown", &t.key, e))
    }

    fn set_owner_and_xattrs(&self, t: &Target, fd: impl AsFd, meta: &Meta) -> Result<(), UnpackError> {
        if self.opts.privileged {
            let (uid, gid) = ids(meta);
            rfs::fchown(&fd, Some(uid), Some(gid)).map_err(|e| io_err(t, "chown", &t.key, e))?;
        }
        for (name, value) in &meta.xattrs {
            if name.starts_with("security.") && !self.opts.privileged {
                continue;
            }
            rfs::fsetxattr(&fd, name.as_str(), value, XattrFlags::empty())
                .map_err(|e| io_err(t, "set xattr on", &t.key, e))?;
        }
        Ok(())
    }

    /// Applies the deferred modes and times, innermost directories first.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        for (key, mode, mtime) in self.dirs.iter().rev() {
            let name = String::from_utf8_lossy(key);
            let fail = |op, e: Errno| UnpackError::Io {
                entry: name.to_string(),
                op,
                path: name.to_string(),
                source: e.into(),
            };
            let dir = self
                .open_dir(key, OFlags::RDONLY)
                .map_err(|e| fail("open directory", e))?;
            rfs::fchmod(&dir, Mode::from_raw_mode(*mode)).map_err(|e| fail("chmod", e))?;
            rfs::futimens(&dir, &times(*mtime)).map_err(|e| fail("set times of", e))?;
        }
        Ok(())
    }
}

/// Splits a tar name into components, dropping `.` and empty ones; refuses absolute
/// names and `..`.
fn normalise(raw: &[u8]) -> Result<Vec<&[u8]>, Refusal> {
    if raw.first() == Some(&b'/') {
        return Err(Refusal::AbsolutePath);
    }
    let mut parts = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(Refusal::ParentComponent),
            c => parts.push(c),
        }
    }
    Ok(parts)
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, UnpackError> {
    let h = entry.header();
    let bad = |e: io::Error| UnpackError::Io {
        entry: name.to_string(),
        op: "read header of",
        path: name.to_string(),
        source: e,
    };
    let mut meta = Meta {
        mode: h.mode().map_err(bad)? & 0o7777,
        uid: h.uid().map_err(bad)? as u32,
        gid: h.gid().map_err(bad)? as u32,
        mtime: Timespec {
            tv_sec: h.mtime().map_err(bad)? as i64,
            tv_nsec: 0,
        },
        xattrs: Vec::new(),
    };
    let Some(pax) = entry.pax_extensions().map_err(bad)? else {
        return Ok(meta);
    };
    for ext in pax {
        let ext = ext.map_err(bad)?;
        let (Ok(key), Ok(value)) = (ext.key(), ext.value()) else {
            continue;
        };
        match key {
            "uid" => meta.uid = value.parse().unwrap_or(meta.uid),
            "gid" => meta.gid = value.parse().unwrap_or(meta.gid),
            "mtime" => meta.mtime = parse_pax_time(value).unwrap_or(meta.mtime),
            _ => {}
        }
        if let Some(xattr) = key.strip_prefix("SCHILY.xattr.") {
            if xattr.starts_with("trusted.overlay.") || xattr.starts_with("user.overlay.") {
                return Err(UnpackError::Refused {
                    entry: name.to_string(),
                    reason: Refusal::OverlayXattr(xattr.to_string()),
                });
            }
            if xattr.starts_with("user.") || xattr == "security.capability" {
                meta.xattrs.push((xattr.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(meta)
}

/// PAX times are decimal seconds with an optional fraction: "1700000000.5".
fn parse_pax_time(v: &str) -> Option<Timespec> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let tv_sec = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some(Timespec { tv_sec, tv_nsec })
}

fn ids(meta: &Meta) -> (rfs::Uid, rfs::Gid) {
    (rfs::Uid::from_raw(meta.uid), rfs::Gid::from_raw(meta.gid))
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

fn refused(t: &Target, reason: Refusal) -> UnpackError {
    UnpackError::Refused {
        entry: t.name.to_string(),
        reason,
    }
}

fn io_err(t: &Target, op: &'static str, rel: &[u8], e: impl Into<io::Error>) -> UnpackError {
    UnpackError::Io {
        entry: t.name.to_string(),
        op,
        path: String::from_utf8_lossy(rel).into_owned(),
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalise_paths() {
        assert_eq!(normalise(b"./a//b/./c/").unwrap(), vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(normalise(b"./").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(normalise(b"/etc/passwd"), Err(Refusal::AbsolutePath));
        assert_eq!(normalise(b"a/../../b"), Err(Refusal::ParentComponent));
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_pax_time("12.5").map(|t| (t.tv_sec, t.tv_nsec)),
            Some((12, 500_000_000))
        );
        assert_eq!(parse_pax_time("7").map(|t| (t.tv_sec, t.tv_nsec)), Some((7, 0)));
        assert!(parse_pax_time("x").is_none());
    }

    proptest! {
        /// Whatever the name, a normalised path has no component that could climb out.
        #[test]
        fn normalised_components_stay_inside(raw in proptest::collection::vec(prop_oneof![
            Just(b'/'), Just(b'.'), Just(b'a'), Just(0xffu8)], 0..24)) {
            if let Ok(parts) = normalise(&raw) {
                for p in parts {
                    prop_assert!(!p.is_empty() && p != b"." && p != b".." && !p.contains(&b'/'));
                }
            }
        }
    }
}
