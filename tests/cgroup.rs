//! Real cgroups on this host (root only): limits written and read back on whichever version
//! each controller is on, teardown that kills and removes, an OOM kill seen as one, and the
//! cgroup v2 eBPF device filter allowing and denying real opens.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use petri::cgroup::{default_devices, Cgroup, DeviceRule, Hierarchy, Limits, Version};
use petri::sys::bpf::{self, DeviceAllow};
use rustix::process::Pid;

/// Kills the test's processes and removes its cgroups however the test ends.
#[derive(Default)]
struct Guard {
    cgroup: Option<Cgroup>,
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.destroy();
        }
        for dir in self.dirs.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn name(test: &str) -> String {
    format!("test-{}-{test}", std::process::id())
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32).unwrap()
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("read {file} in {}: {e}", dir.display()))
}

/// A shell that waits for a line on stdin, then runs `script`: it can be moved into a
/// cgroup before it does anything.
fn waiting_shell(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", &format!("read go || exit 1; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn release(mut child: Child) -> Output {
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    child.wait_with_output().unwrap()
}

/// A character device node `major:minor` in a directory on the repository's disk (/tmp
/// may be mounted nodev, which would refuse the open for another reason).
fn device_node(major: u32, minor: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = dir.path().join(format!("dev-{major}-{minor}"));
    let dev = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &node,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        dev,
    )
    .unwrap();
    (dir, node)
}

/// Detection on this host (no root needed): every directory it names exists.
#[test]
fn detection_names_existing_directories() {
    let h = Hierarchy::detect().unwrap();
    eprintln!("{h:#?}");
    for name in ["cpu", "cpuacct", "memory", "pids", "devices"] {
        if let Some(c) = h.controller(name) {
            assert!(c.own_dir.is_dir(), "{name}: {}", c.own_dir.display());
        }
    }
    let mounts = h.mounts();
    assert!(mounts.unified.is_some() || !mounts.v1.is_empty());
    for (options, point) in &mounts.v1 {
        assert!(point.is_dir() && !options.is_empty(), "{options} {}", point.display());
    }
}

#[test]
fn limits_read_back_and_destroy_kills_and_removes() {
    if !common::require(
        "limits_read_back_and_destroy_kills_and_removes",
        common::is_root(),
        "needs root",
    ) {
        return;
    }
    let h = Hierarchy::detect().unwrap();
    let limits = Limits {
        cpu: Some(0.5),
        memory: Some(64 << 20),
        pids: Some(32),
        devices: default_devices(),
    };
    let mut guard = Guard::default();
    let cg = h.create(&name("limits"), &limits).unwrap();
    let paths = cg.paths();
    assert!(!paths.is_empty() && paths.iter().all(|p| p.is_dir()), "{paths:?}");
    guard.cgroup = Some(cg);
    let cg = guard.cgroup.as_ref().unwrap();

    let sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let sleeper_pid = pid(&sleeper);
    guard.children.push(sleeper);
    cg.add(sleeper_pid).unwrap();
    assert_eq!(cg.procs().unwrap(), [sleeper_pid]);
    for p in &paths {
        assert_eq!(
            read(p, "cgroup.procs").trim(),
            sleeper_pid.as_raw_pid().to_string(),
            "{}",
            p.display()
        );
    }

    check_limits(cg);
    check_devices_enforced(cg);
    cg.cpu_usage().unwrap();
    assert!(!cg.oom_killed().unwrap());

    let cg = guard.cgroup.take().unwrap();
    cg.destroy().unwrap();
    let status = guard.children[0].wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "destroy killed the sleep");
    for p in &paths {
        assert!(!p.exists(), "{} remains", p.display());
    }
}

/// Default devices open; a node outside the list (1:2, no driver: ENXIO if it were let
/// through) is refused with EPERM by the v1 controller or the v2 filter.
fn check_devices_enforced(cg: &Cgroup) {
    let (_tmp, denied) = device_node(1, 2);
    let child = waiting_shell(&format!(
        "head -c 1 /dev/zero >/dev/null && echo zero-ok; head -c 1 {} >/dev/null",
        denied.display()
    ));
    cg.add(pid(&child)).unwrap();
    assert_denied_only(&release(child), &["zero-ok"]);
}

fn check_limits(cg: &Cgroup) {
    let (version, dir) = cg.controller_dir("memory").expect("memory controller");
    match version {
        Version::V1 => {
            assert_eq!(read(dir, "memory.limit_in_bytes").trim(), "67108864");
            if dir.join("memory.memsw.limit_in_bytes").exists() {
                assert_eq!(read(dir, "memory.memsw.limit_in_bytes").trim(), "67108864");
            }
        }
        Version::V2 => {
            assert_eq!(read(dir, "memory.max").trim(), "67108864");
            if dir.join("memory.swap.max").exists() {
                assert_eq!(read(dir, "memory.swap.max").trim(), "0");
            }
            assert_eq!(read(dir, "memory.oom.group").trim(), "1");
        }
    }
    let (_, dir) = cg.controller_dir("pids").expect("pids controller");
    assert_eq!(read(dir, "pids.max").trim(), "32");
    let (version, dir) = cg.controller_dir("cpu").expect("cpu controller");
    match version {
        Version::V1 => {
            assert_eq!(read(dir, "cpu.cfs_period_us").trim(), "100000");
            assert_eq!(read(dir, "cpu.cfs_quota_us").trim(), "50000");
        }
        Version::V2 => assert_eq!(read(dir, "cpu.max").trim(), "50000 100000"),
    }
    if let Some((Version::V1, dir)) = cg.controller_dir("devices") {
        let list = read(dir, "devices.list");
        for line in ["c *:* m", "b *:* m", "c 1:3 rwm", "c 5:2 rwm", "c 136:* rwm"] {
            assert!(list.lines().any(|l| l == line), "{line:?} not in devices.list:\n{list}");
        }
        assert!(!list.contains("a *:*"), "devices.list still allows all:\n{list}");
    }
}

#[test]
fn memory_limit_ends_in_an_oom_kill_that_is_reported() {
    if !common::require(
        "memory_limit_ends_in_an_oom_kill_that_is_reported",
        common::is_root(),
        "needs root",
    ) {
        return;
    }
    let h = Hierarchy::detect().unwrap();
    let limits = Limits {
        memory: Some(16 << 20),
        ..Limits::default()
    };
    let mut guard = Guard::default();
    guard.cgroup = Some(h.create(&name("oom"), &limits).unwrap());
    let cg = guard.cgroup.as_ref().unwrap();
    // The shell keeps the 64 MiB of the command substitution in memory.
    let child = waiting_shell("x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived");
    cg.add(pid(&child)).unwrap();
    let out = release(child);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    assert!(cg.oom_killed().unwrap());
    guard.cgroup.take().unwrap().destroy().unwrap();
}

/// The filter alone, attached to a fresh cgroup2 directory: /dev/null and the allowed node
/// open, the denied node does not.
#[test]
fn v2_device_filter_allows_and_denies_opens() {
    let test = "v2_device_filter_allows_and_denies_opens";
    if !common::require(test, common::is_root(), "needs root") {
        return;
    }
    let h = Hierarchy::detect().unwrap();
    let Some(unified) = h.unified() else {
        common::require(test, false, "no cgroup2 hierarchy is mounted");
        return;
    };
    let (_tmp, denied) = device_node(1, 7);
    let mut guard = Guard::default();
    let dir = unified.own_dir.join(name("bpf"));
    fs::create_dir(&dir).unwrap();
    guard.dirs.push(dir.clone());
    let rules = [
        DeviceAllow {
            dev_type: Some(bpf::DEV_CHAR),
            major: Some(1),
            minor: Some(3),
            access: bpf::ACC_READ | bpf::ACC_WRITE,
        },
        DeviceAllow {
            dev_type: Some(bpf::DEV_CHAR),
            major: Some(1),
            minor: Some(5),
            access: bpf::ACC_READ,
        },
    ];
    let _prog = bpf::attach_device_filter(&dir, &rules).unwrap();

    let child = waiting_shell(&format!(
        "cat /dev/null && echo null-ok; head -c 1 /dev/zero >/dev/null && echo zero-ok; head -c 1 {} >/dev/null && echo denied-ok",
        denied.display()
    ));
    fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    let out = release(child);
    assert_denied_only(&out, &["null-ok", "zero-ok"]);
    assert!(!out.status.success());
}

/// The shell printed every `allowed` marker, never "denied-ok", and the denied open
/// failed with EPERM.
fn assert_denied_only(out: &std::process::Output, allowed: &[&str]) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        allowed.iter().all(|a| stdout.contains(a)),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stdout.contains("denied-ok"), "the denied node opened");
    assert!(stderr.contains("Operation not permitted"), "stderr: {stderr}");
}

/// `create` with the eBPF filter, on any host with cgroup2: on a hybrid host the v1 devices
/// hierarchy is hidden from detection so that devices go through cgroup2.
#[test]
fn create_with_the_v2_device_filter() {
    let test = "create_with_the_v2_device_filter";
    if !common::require(test, common::is_root(), "needs root") {
        return;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let without_v1_devices: String = mountinfo
        .lines()
        .filter(|l| !(l.contains(" - cgroup ") && l.rsplit(' ').next().unwrap().split(',').any(|o| o == "devices")))
        .map(|l| format!("{l}\n"))
        .collect();
    let h = Hierarchy::detect_from(&without_v1_devices, &fs::read_to_string("/proc/self/cgroup").unwrap()).unwrap();
    if !common::require(test, h.unified().is_some(), "no cgroup2 hierarchy is mounted") {
        return;
    }
    let limits = Limits {
        devices: vec![DeviceRule::char(1, Some(3)), DeviceRule::char(1, Some(9))],
        ..Limits::default()
    };
    let mut guard = Guard::default();
    guard.cgroup = Some(h.create(&name("devfilter"), &limits).unwrap());
    let cg = guard.cgroup.as_ref().unwrap();
    assert_eq!(cg.controller_dir("devices").map(|(v, _)| v), Some(Version::V2));
    let (_tmp, denied) = device_node(1, 5);
    let child = waiting_shell(&format!(
        "cat /dev/null && echo null-ok; head -c 1 /dev/urandom >/dev/null && echo urandom-ok; head -c 1 {} >/dev/null && echo denied-ok",
        denied.display()
    ));
    cg.add(pid(&child)).unwrap();
    let out = release(child);
    assert_denied_only(&out, &["null-ok", "urandom-ok"]);
    let paths = cg.paths();
    guard.cgroup.take().unwrap().destroy().unwrap();
    assert!(paths.iter().all(|p| !p.exists()), "{paths:?}");
}
