//! Shared test support: the petri binary, throwaway store roots, the project's test
//! images (built once by rootfs/build.py and reused), skip rules, and tree snapshots.
#![allow(dead_code)]

pub mod proxy;
pub mod registry;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest as _, Sha256};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn must_work() -> bool {
    std::env::var("PETRI_MUST_WORK").is_ok_and(|v| v == "1")
}

/// True when the test should go on; otherwise prints why it is skipped. Under
/// PETRI_MUST_WORK=1 a missing requirement fails the test instead.
pub fn require(test: &str, ok: bool, reason: &str) -> bool {
    if !ok {
        if must_work() {
            panic!("{test}: {reason} (PETRI_MUST_WORK=1 forbids skipping)");
        }
        eprintln!("SKIP {test}: {reason}");
    }
    ok
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds (once, under a lock shared by all test processes) an image from rootfs/build.py.
pub fn test_image(name: &str, compression: &str) -> PathBuf {
    let out_dir = repo().join("target/test-images");
    fs::create_dir_all(&out_dir).unwrap();
    let lock = File::create(out_dir.join(".lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let out = out_dir.join(compression).join(name);
    let status = Command::new("python3")
        .arg(repo().join("rootfs/build.py"))
        .args([name, "--compression", compression, "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run rootfs/build.py");
    assert!(status.success(), "rootfs/build.py {name} failed");
    out
}

pub fn busybox() -> PathBuf {
    test_image("busybox", "gzip")
}

/// A throwaway store root with a petri command bound to it.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        Root {
            dir: tempfile::Builder::new().prefix("petri-test-").tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_petri"));
        c.arg("--root").arg(self.path());
        c
    }

    /// Runs petri with `args`; returns the output whatever the exit status.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.cmd().args(args).output().expect("run petri")
    }

    /// Runs petri and requires success; returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "petri {:?} failed ({}): {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs petri, requires failure with exit code 125; returns stderr.
    pub fn fails<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(125),
            "stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> serde_json::Value {
        let mut all: Vec<&OsStr> = vec![OsStr::new("--json")];
        all.extend(args.iter().map(|a| a.as_ref()));
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Names of the entries of a store subdirectory (layers, blobs/sha256, tmp).
    pub fn entries(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(self.path().join(sub)) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    /// The bundles kept for reuse by `--rm` runs: asserts that they hold nothing a
    /// container wrote (a clean one: an empty `work`; a dirty one: also an empty
    /// `upper`, and `work/work`, empty), and returns (clean, dirty) counts.
    pub fn pooled_bundles(&self) -> (usize, usize) {
        let (mut clean, mut dirty) = (0, 0);
        for slot in self.entries("pool") {
            if slot == petri::sandbox::TIDY_LOCK {
                continue;
            }
            let at = |sub: &str| self.entries(&format!("pool/{slot}/{sub}"));
            let shown = self.path().join("pool").join(&slot).display().to_string();
            if slot.starts_with("dirty-") {
                dirty += 1;
                assert_eq!(at(""), ["upper", "work"], "{shown}");
                assert_eq!(at("upper"), Vec::<String>::new(), "{shown}");
                assert_eq!(at("work"), ["work"], "{shown}");
                assert_eq!(at("work/work"), Vec::<String>::new(), "{shown}");
            } else {
                clean += 1;
                assert_eq!(at(""), ["upper", "work"], "{shown}");
                assert_eq!(at("upper"), Vec::<String>::new(), "{shown}");
                assert_eq!(at("work"), Vec::<String>::new(), "{shown}");
            }
        }
        (clean, dirty)
    }

    /// The diff directories of an image's layers, lowest first.
    pub fn layer_dirs(&self, image: &str) -> Vec<PathBuf> {
        let inspected = self.json(&["image", "inspect", image]);
        inspected["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let chain = l["chain_id"].as_str().unwrap().trim_start_matches("sha256:");
                self.path().join("layers").join(chain).join("diff")
            })
            .collect()
    }
}

/// Everything that makes two unpacked trees the same: type, mode, owner, link target,
/// device number, xattrs and contents (not times).
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    link: Option<PathBuf>,
    sha256: Option<String>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let kind = match () {
            _ if ft.is_dir() => "dir",
            _ if ft.is_symlink() => "symlink",
            _ if ft.is_file() => "file",
            _ if ft.is_char_device() => "char",
            _ if ft.is_block_device() => "block",
            _ if ft.is_fifo() => "fifo",
            _ => "other",
        };
        let node = Node {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev(),
            link: ft.is_symlink().then(|| fs::read_link(&path).unwrap()),
            sha256: ft
                .is_file()
                .then(|| hex::encode(Sha256::digest(fs::read(&path).unwrap()))),
            xattrs: xattrs(&path),
        };
        out.insert(path.strip_prefix(root).unwrap().to_path_buf(), node);
        if ft.is_dir() {
            walk(root, &path, out);
        }
    }
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut names).unwrap_or(0);
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut value).unwrap();
        value.truncate(len);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    out
}

/// Copies an OCI layout so a test can tamper with it.
pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success());
}
