//! Breakout attempts against the layer unpacker (containerd's TestBreakouts, umoci's
//! scoping tests, RUSTSEC-2026-0067): each test crafts a malicious tar layer by hand,
//! unpacks it into `root/` and checks that the entry is refused for the right reason and
//! that nothing outside `root/` changed. Two positive tests show ordinary layers (and
//! whiteouts) still unpack.
//!
//! Tests that need root (mknod, chown, `trusted.*` xattrs) print `SKIP` when not root,
//! or fail when `PETRI_MUST_WORK=1`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;

use common::{is_root, require};
use petri::image::unpack::{unpack_layer, Refusal, UnpackError, UnpackOptions, UnpackStats};
use tar::{EntryType, Header};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn require_root(test: &str) -> bool {
    require(test, is_root(), "needs root (mknod, chown, trusted.* xattrs)")
}

/// A temporary directory holding `root/` (the empty layer destination) and `outside/`
/// (a sibling holding `victim`, the file every attack tries to reach).
struct Sandbox {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
    outside_mode: u32,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().canonicalize().expect("canonicalize tempdir");
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        let victim = outside.join("victim");
        fs::write(&victim, "original").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        let outside_mode = fs::metadata(&outside).unwrap().mode() & 0o7777;
        Sandbox {
            _tmp: tmp,
            base,
            root,
            outside,
            outside_mode,
        }
    }

    /// Absolute path of `outside/`, as bytes for a link name.
    fn outside_abs(&self) -> Vec<u8> {
        self.outside.as_os_str().as_encoded_bytes().to_vec()
    }

    fn unpack(&self, layer: Vec<u8>) -> Result<UnpackStats, UnpackError> {
        unpack_layer(layer.as_slice(), &self.root, UnpackOptions { privileged: is_root() })
    }

    /// Nothing outside `root/` changed.
    fn assert_outside_untouched(&self) {
        let victim = self.outside.join("victim");
        let meta = fs::symlink_metadata(&victim).expect("outside/victim still exists");
        assert!(meta.file_type().is_file(), "outside/victim is no longer a regular file");
        assert_eq!(
            fs::read_to_string(&victim).unwrap(),
            "original",
            "outside/victim was rewritten"
        );
        assert_eq!(meta.mode() & 0o7777, 0o644, "outside/victim's mode changed");
        assert_eq!(
            names_in(&self.outside),
            vec!["victim".to_string()],
            "outside/ gained entries"
        );
        let outside_meta = fs::symlink_metadata(&self.outside).unwrap();
        assert!(outside_meta.file_type().is_dir(), "outside/ is no longer a directory");
        assert_eq!(
            outside_meta.mode() & 0o7777,
            self.outside_mode,
            "outside/'s mode changed"
        );
        assert_eq!(
            names_in(&self.base),
            vec!["outside".to_string(), "root".to_string()],
            "the directory around root/ gained entries"
        );
    }

    /// Unpacks `layer`, expects it refused at `entry` for `reason`, and checks that
    /// nothing outside `root/` changed.
    fn expect_refused(&self, layer: Vec<u8>, entry: &str, reason: Refusal) {
        let res = self.unpack(layer);
        assert_refused(res, entry, reason);
        self.assert_outside_untouched();
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_refused(res: Result<UnpackStats, UnpackError>, entry: &str, reason: Refusal) {
    match res {
        Err(err) => {
            let shown = err.to_string();
            match err {
                UnpackError::Refused {
                    entry: got_entry,
                    reason: got_reason,
                } => {
                    assert_eq!(got_reason, reason, "wrong refusal for {entry:?}: {shown}");
                    assert_eq!(got_entry, entry, "refusal names the wrong entry: {shown}");
                    assert!(
                        shown.contains(entry),
                        "error message {shown:?} does not name entry {entry:?}"
                    );
                }
                other => {
                    panic!("expected {entry:?} refused with {reason:?}, got another error: {other}")
                }
            }
        }
        Ok(stats) => {
            panic!("expected {entry:?} refused with {reason:?}, but the layer unpacked: {stats:?}")
        }
    }
}

/// Builds a layer entry by entry, writing names and link names straight into the
/// header so that `..` and absolute paths survive.
struct Layer {
    b: tar::Builder<Vec<u8>>,
}

fn copy_name(field: &mut [u8], value: &[u8]) {
    assert!(value.len() <= field.len(), "name too long for a plain header");
    field[..value.len()].copy_from_slice(value);
}

impl Layer {
    fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &[u8], kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        copy_name(&mut h.as_old_mut().name, name);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h
    }

    fn push(mut self, mut h: Header, data: &[u8]) -> Self {
        h.set_cksum();
        self.b.append(&h, data).expect("append to layer");
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.file_with(name, data, 0o644, 0, 0)
    }

    fn file_with(self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(name.as_bytes(), EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.push(h, data)
    }

    fn dir(self, name: &str, mode: u32) -> Self {
        let h = Self::header(name.as_bytes(), EntryType::Directory, mode, 0);
        self.push(h, &[])
    }

    fn link(self, kind: EntryType, name: &str, target: &[u8]) -> Self {
        let mut h = Self::header(name.as_bytes(), kind, 0o777, 0);
        copy_name(&mut h.as_old_mut().linkname, target);
        self.push(h, &[])
    }

    fn symlink(self, name: &str, target: &[u8]) -> Self {
        self.link(EntryType::Symlink, name, target)
    }

    fn hardlink(self, name: &str, target: &[u8]) -> Self {
        self.link(EntryType::Link, name, target)
    }

    fn device(self, name: &str, kind: EntryType, major: u32, minor: u32) -> Self {
        let mut h = Self::header(name.as_bytes(), kind, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, &[])
    }

    /// A PAX extended header ('x') applying to the next entry.
    fn pax(self, key: &str, value: &str) -> Self {
        let record = pax_record(key, value);
        let h = Self::header(b"PaxHeaders/next", EntryType::XHeader, 0o644, record.len() as u64);
        self.push(h, &record)
    }

    fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish layer")
    }
}

/// "LEN key=value\n", where LEN counts the whole record including its own digits.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}").into_bytes()
}

// ---------------------------------------------------------------------------------------
// 1. Absolute names
// ---------------------------------------------------------------------------------------

#[test]
fn absolute_name_is_refused() {
    let existed = fs::symlink_metadata("/evil").is_ok();
    let sb = Sandbox::new();
    let layer = Layer::new().file("/evil", b"pwned").finish();
    sb.expect_refused(layer, "/evil", Refusal::AbsolutePath);
    if !existed {
        assert!(fs::symlink_metadata("/evil").is_err(), "/evil was created");
    }
    assert_eq!(names_in(&sb.root), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// 2. Parent components
// ---------------------------------------------------------------------------------------

#[test]
fn dotdot_name_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().file("../evil", b"pwned").finish();
    sb.expect_refused(layer, "../evil", Refusal::ParentComponent);
}

#[test]
fn inner_dotdot_climbing_out_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().file("a/../../evil", b"pwned").finish();
    sb.expect_refused(layer, "a/../../evil", Refusal::ParentComponent);
}

// ---------------------------------------------------------------------------------------
// 3-5. Writing through symlinks
// ---------------------------------------------------------------------------------------

#[test]
fn file_written_through_absolute_symlink_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("link", &sb.outside_abs())
        .file("link/victim", b"pwned")
        .finish();
    sb.expect_refused(layer, "link/victim", Refusal::ThroughSymlink);
}

#[test]
fn file_written_through_chained_symlinks_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("a", b"b")
        .symlink("b", &sb.outside_abs())
        .file("a/victim", b"pwned")
        .finish();
    sb.expect_refused(layer, "a/victim", Refusal::ThroughSymlink);
}

#[test]
fn file_written_through_relative_symlink_out_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("up", b"../outside")
        .file("up/new", b"pwned")
        .finish();
    sb.expect_refused(layer, "up/new", Refusal::ThroughSymlink);
}

// ---------------------------------------------------------------------------------------
// 6. Hardlinks
// ---------------------------------------------------------------------------------------

#[test]
fn hardlink_to_parent_path_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().hardlink("hl", b"../outside/victim").finish();
    sb.expect_refused(layer, "hl", Refusal::ParentComponent);
    assert_eq!(fs::metadata(sb.outside.join("victim")).unwrap().nlink(), 1);
}

#[test]
fn hardlink_to_absolute_path_is_refused() {
    let nlink_before = fs::metadata("/etc/passwd").map(|m| m.nlink()).ok();
    let sb = Sandbox::new();
    let layer = Layer::new().hardlink("hl", b"/etc/passwd").finish();
    sb.expect_refused(layer, "hl", Refusal::AbsolutePath);
    assert_eq!(fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(), nlink_before);
    assert!(fs::symlink_metadata(sb.root.join("hl")).is_err());
}

#[test]
fn hardlink_through_symlink_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("link", &sb.outside_abs())
        .hardlink("hl", b"link/victim")
        .finish();
    sb.expect_refused(layer, "hl", Refusal::HardlinkTarget("link/victim".into()));
    assert_eq!(fs::metadata(sb.outside.join("victim")).unwrap().nlink(), 1);
    assert!(fs::symlink_metadata(sb.root.join("hl")).is_err());
}

#[test]
fn hardlink_to_missing_file_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().file("present", b"x").hardlink("hl", b"absent").finish();
    sb.expect_refused(layer, "hl", Refusal::HardlinkTarget("absent".into()));
    assert!(fs::symlink_metadata(sb.root.join("hl")).is_err());
}

// ---------------------------------------------------------------------------------------
// 7-8. Malformed whiteouts, whiteouts through symlinks
// ---------------------------------------------------------------------------------------

#[test]
fn whiteout_of_dot_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().file(".wh..", b"").finish();
    sb.expect_refused(layer, ".wh..", Refusal::InvalidWhiteout);
}

#[test]
fn whiteout_of_dotdot_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().file(".wh...", b"").finish();
    sb.expect_refused(layer, ".wh...", Refusal::InvalidWhiteout);
}

#[test]
fn whiteout_of_empty_name_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().file(".wh.", b"").finish();
    sb.expect_refused(layer, ".wh.", Refusal::InvalidWhiteout);
}

#[test]
fn whiteout_through_symlinked_dir_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("link", &sb.outside_abs())
        .file("link/.wh.victim", b"")
        .finish();
    sb.expect_refused(layer, "link/.wh.victim", Refusal::ThroughSymlink);
    // assert_outside_untouched already checked victim is still the original regular file.
    assert!(sb.outside.join("victim").is_file());
}

// ---------------------------------------------------------------------------------------
// 9. Changing the type of `/`
// ---------------------------------------------------------------------------------------

#[test]
fn root_replaced_by_symlink_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("./", &sb.outside_abs())
        .file("victim", b"pwned")
        .finish();
    sb.expect_refused(layer, "./", Refusal::RootTypeChange);
    assert!(fs::symlink_metadata(&sb.root).unwrap().is_dir());
}

#[test]
fn root_replaced_by_file_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().file(".", b"pwned").finish();
    sb.expect_refused(layer, ".", Refusal::RootTypeChange);
    assert!(fs::symlink_metadata(&sb.root).unwrap().is_dir());
}

// ---------------------------------------------------------------------------------------
// 10. RUSTSEC-2026-0067 / CVE-2026-33055: symlink, then a directory entry chmods its target
// ---------------------------------------------------------------------------------------

#[test]
fn directory_entry_over_symlink_does_not_chmod_target() {
    let sb = Sandbox::new();
    assert_ne!(
        sb.outside_mode, 0o777,
        "the test needs outside/ to start at another mode"
    );
    let layer = Layer::new().symlink("d", &sb.outside_abs()).dir("d", 0o777).finish();
    sb.expect_refused(layer, "d", Refusal::Duplicate);
    // assert_outside_untouched compared outside/'s mode with the one recorded before.
    assert!(fs::symlink_metadata(sb.root.join("d"))
        .unwrap()
        .file_type()
        .is_symlink());
}

// ---------------------------------------------------------------------------------------
// 11. Device nodes
// ---------------------------------------------------------------------------------------

#[test]
fn block_device_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().device("sda", EntryType::Block, 8, 0).finish();
    sb.expect_refused(layer, "sda", Refusal::DeviceNotAllowed { major: 8, minor: 0 });
    assert!(fs::symlink_metadata(sb.root.join("sda")).is_err());
}

#[test]
fn dev_mem_char_device_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().device("mem", EntryType::Char, 1, 1).finish();
    sb.expect_refused(layer, "mem", Refusal::DeviceNotAllowed { major: 1, minor: 1 });
    assert!(fs::symlink_metadata(sb.root.join("mem")).is_err());
}

#[test]
fn dev_null_char_device_is_allowed() {
    if !require_root("dev_null_char_device_is_allowed") {
        return;
    }
    let sb = Sandbox::new();
    let layer = Layer::new().device("null", EntryType::Char, 1, 3).finish();
    sb.unpack(layer).expect("char 1:3 is allowed");
    let meta = fs::symlink_metadata(sb.root.join("null")).expect("root/null created");
    assert!(meta.file_type().is_char_device(), "root/null is not a char device");
    let rdev = meta.rdev();
    assert_eq!((rustix::fs::major(rdev), rustix::fs::minor(rdev)), (1, 3));
    assert_eq!(meta.mode() & 0o7777, 0o666);
    sb.assert_outside_untouched();
}

// ---------------------------------------------------------------------------------------
// 12. Duplicate entries
// ---------------------------------------------------------------------------------------

#[test]
fn duplicate_file_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().file("f", b"first").file("f", b"second").finish();
    sb.expect_refused(layer, "f", Refusal::Duplicate);
    assert_eq!(fs::read(sb.root.join("f")).unwrap(), b"first");
}

#[test]
fn file_then_dir_of_same_name_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new().file("x", b"file").dir("x", 0o755).finish();
    sb.expect_refused(layer, "x", Refusal::Duplicate);
    assert!(fs::symlink_metadata(sb.root.join("x")).unwrap().is_file());
}

// ---------------------------------------------------------------------------------------
// 13. Overlay xattrs smuggled in PAX headers
// ---------------------------------------------------------------------------------------

#[test]
fn overlay_redirect_xattr_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .pax("SCHILY.xattr.trusted.overlay.redirect", "/outside")
        .file("f", b"data")
        .finish();
    sb.expect_refused(layer, "f", Refusal::OverlayXattr("trusted.overlay.redirect".into()));
    assert!(fs::symlink_metadata(sb.root.join("f")).is_err());
}

#[test]
fn pax_record_length_counts_itself() {
    let rec = pax_record("SCHILY.xattr.trusted.overlay.redirect", "/outside");
    assert_eq!(rec, b"50 SCHILY.xattr.trusted.overlay.redirect=/outside\n");
    assert_eq!(pax_record("a", "b"), b"6 a=b\n");
    assert_eq!(pax_record("k", "vvvv"), b"9 k=vvvv\n");
    // Crossing a digit boundary: 9 bytes + 1 digit is 10, which needs 2 digits.
    assert_eq!(pax_record("k", "vvvvv"), b"11 k=vvvvv\n");
}

// ---------------------------------------------------------------------------------------
// Positive: ordinary layers still unpack
// ---------------------------------------------------------------------------------------

#[test]
fn normal_layer_unpacks() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .dir("./", 0o755)
        .dir("etc/", 0o755)
        .file_with("etc/f", b"hello", 0o4755, 1000, 1000)
        .symlink("etc/l", b"f")
        .hardlink("etc/h", b"etc/f")
        .file("new/dir/file", b"deep")
        .finish();
    let stats = sb.unpack(layer).expect("a normal layer unpacks");
    assert_eq!(stats.entries, 6);
    assert_eq!(stats.file_bytes, 9);

    let root = &sb.root;
    assert_eq!(names_in(root), vec!["etc".to_string(), "new".to_string()]);
    let etc = fs::symlink_metadata(root.join("etc")).unwrap();
    assert!(etc.is_dir());
    assert_eq!(etc.mode() & 0o7777, 0o755);

    let f = fs::symlink_metadata(root.join("etc/f")).unwrap();
    assert!(f.is_file());
    assert_eq!(f.mode() & 0o7777, 0o4755, "setuid bit lost");
    assert_eq!(f.mtime(), 1_700_000_000);
    assert_eq!(fs::read(root.join("etc/f")).unwrap(), b"hello");

    let l = fs::symlink_metadata(root.join("etc/l")).unwrap();
    assert!(l.file_type().is_symlink());
    assert_eq!(fs::read_link(root.join("etc/l")).unwrap(), Path::new("f"));

    let h = fs::symlink_metadata(root.join("etc/h")).unwrap();
    assert_eq!(
        (h.dev(), h.ino()),
        (f.dev(), f.ino()),
        "etc/h is not a hardlink of etc/f"
    );
    assert_eq!(f.nlink(), 2);

    assert!(fs::symlink_metadata(root.join("new")).unwrap().is_dir());
    assert!(fs::symlink_metadata(root.join("new/dir")).unwrap().is_dir());
    assert_eq!(fs::read(root.join("new/dir/file")).unwrap(), b"deep");
    sb.assert_outside_untouched();

    if require_root("normal_layer_unpacks (owner check)") {
        assert_eq!((f.uid(), f.gid()), (1000, 1000), "numeric owner not applied");
        assert_eq!((etc.uid(), etc.gid()), (0, 0));
    }
}

#[test]
fn whiteouts_and_opaque_markers_unpack() {
    if !require_root("whiteouts_and_opaque_markers_unpack") {
        return;
    }
    let sb = Sandbox::new();
    let layer = Layer::new()
        .file(".wh.gone", b"")
        .dir("dir/", 0o755)
        .file("dir/keep", b"kept")
        .file("dir/.wh..wh..opq", b"")
        .finish();
    sb.unpack(layer).expect("whiteouts unpack");

    let gone = fs::symlink_metadata(sb.root.join("gone")).expect("root/gone created");
    assert!(gone.file_type().is_char_device(), "whiteout is not a char device");
    assert_eq!(gone.rdev(), 0, "whiteout is not 0:0");
    assert!(fs::symlink_metadata(sb.root.join(".wh.gone")).is_err());

    let dir = sb.root.join("dir");
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(&dir, "trusted.overlay.opaque", &mut buf).expect("opaque xattr set");
    assert_eq!(&buf[..n], b"y");
    assert_eq!(fs::read(dir.join("keep")).unwrap(), b"kept");
    assert!(fs::symlink_metadata(dir.join(".wh..wh..opq")).is_err());
    sb.assert_outside_untouched();
}
