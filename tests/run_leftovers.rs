//! 1000 `petri run --rm` in a row, and runs that fail after the container's process was
//! forked, leave nothing behind: no cgroup directories, no mounts in petri's namespace,
//! no container directories. Its own test binary, so no
//! other test's containers are running while it counts.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{busybox, is_root, require, Root};

/// Every directory below a `petri` cgroup directory, in every mounted hierarchy.
fn petri_cgroups() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let fstype = fields.iter().skip_while(|f| **f != "-").nth(1).copied().unwrap_or("");
        if fstype == "cgroup" || fstype == "cgroup2" {
            walk(Path::new(fields[4]), 0, &mut found);
        }
    }
    found
}

fn walk(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if path.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "petri") {
            found.push(path.clone());
        }
        if depth < 6 {
            walk(&path, depth + 1, found);
        }
    }
}

#[test]
fn a_thousand_runs_leave_nothing_behind() {
    if !require(
        "a_thousand_runs_leave_nothing_behind",
        is_root(),
        "needs root (namespaces, overlay, cgroups)",
    ) {
        return;
    }
    let root = Root::new();
    root.ok(&[Path::new("image"), Path::new("load"), &busybox()]);
    let mounts_before = fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
    let cgroups_before = petri_cgroups();
    // Failures after `sandbox::fork`: the image cannot be resolved (the child waits for
    // a spec that never comes), and the child itself fails (no such user in the image).
    let missing = root.path().join("no-such-layout");
    let source = format!("oci:{}", missing.display());
    for args in [
        vec!["run", "--rm", source.as_str(), "true"],
        vec!["run", "--rm", "--user", "nobody-here", "busybox", "true"],
    ] {
        let out = root.run(&args);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..1000 {
        let out = root.run(&["run", "--rm", "--memory", "64Mi", "--cpu", "1", "busybox", "true"]);
        assert!(
            out.status.success(),
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        root.entries("containers"),
        Vec::<String>::new(),
        "container directories left behind"
    );
    assert_eq!(
        root.pooled_bundles(),
        (1, 1),
        "one bundle readied for the next run, and the last one's emptied"
    );
    assert_eq!(petri_cgroups(), cgroups_before, "cgroups left behind");
    let mounts_after = fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
    assert_eq!(mounts_after, mounts_before, "mounts left behind in petri's namespace");
}
