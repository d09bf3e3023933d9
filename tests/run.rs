//! `petri run` end to end on the busybox test image: the process contract (exit codes,
//! signals, env, working dir, users, entrypoint/cmd), isolation (mounts, masked paths,
//! capabilities, seccomp, descriptors) and limits (pids, memory, cpu). Needs root.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{busybox, is_root, require, Root};

/// A root with busybox loaded, or None (after printing why) when not root.
fn setup(test: &str) -> Option<Root> {
    if !require(test, is_root(), "needs root (namespaces, overlay, cgroups)") {
        return None;
    }
    let root = Root::new();
    root.ok(&[Path::new("image"), Path::new("load"), &busybox()]);
    Some(root)
}

fn run(root: &Root, args: &[&str]) -> Output {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    root.run(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `script` with busybox sh; returns (exit code, stdout).
fn sh(root: &Root, extra: &[&str], script: &str) -> (i32, String) {
    let mut args = extra.to_vec();
    args.extend_from_slice(&["busybox", "sh", "-c", script]);
    let out = run(root, &args);
    (out.status.code().unwrap_or(-1), stdout(&out))
}

#[test]
fn hello_and_exit_codes() {
    let Some(root) = setup("hello_and_exit_codes") else {
        return;
    };
    let out = run(&root, &["busybox", "echo", "hello"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "hello\n"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sh(&root, &[], "exit 3").0, 3);
    // The same through --image and --.
    let out = root.run(&[
        "run",
        "--rm",
        "--image",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo via-flag; exit 7",
    ]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(7), "via-flag\n"));
    let out = run(&root, &["busybox", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(stderr(&out).contains("executable file not found"), "{}", stderr(&out));
}

/// `--rm` throws the writable layer away, so its overlay is mounted volatile (no sync of
/// the host filesystem at unmount) and its directory is removed; without `--rm` the layer
/// is an ordinary one and stays on disk with what the process wrote.
#[test]
fn the_writable_layer_is_volatile_and_removed_only_with_rm() {
    let Some(root) = setup("the_writable_layer_is_volatile_and_removed_only_with_rm") else {
        return;
    };
    let script = "echo kept > /marker && grep ' / / ' /proc/self/mountinfo";
    let (code, out) = sh(&root, &[], script);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("overlay") && out.contains("volatile"), "{out}");
    assert_eq!(root.entries("containers"), Vec::<String>::new());

    // The emptied bundle is kept: the next `--rm` run readies it, and the one after that
    // takes it; neither sees the file the first one wrote.
    assert_eq!(root.pooled_bundles(), (0, 1));
    for _ in 0..2 {
        let (code, out) = sh(&root, &[], "cat /marker 2>&1; echo again > /marker");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("No such file"), "{out}");
    }
    assert_eq!(root.pooled_bundles(), (1, 1));

    let kept = root.run(&["run", "busybox", "sh", "-c", script]);
    assert_eq!(kept.status.code(), Some(0), "{}", stderr(&kept));
    assert!(!stdout(&kept).contains("volatile"), "{}", stdout(&kept));
    let bundles = root.entries("containers");
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    let marker = root.path().join("containers").join(&bundles[0]).join("upper/marker");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "kept\n");
}

/// The marker a volatile overlay leaves in its work directory (`work/work/incompat`) is
/// removed while a `--rm` container runs, and the overlay goes on working without it:
/// the container writes a new file and changes one of the image's (a copy-up, which
/// goes through the work directory) after the marker has gone. The container's bundle
/// is the one an earlier `--rm` run left in the pool.
#[test]
fn a_rm_containers_overlay_marker_goes_while_it_runs() {
    let Some(root) = setup("a_rm_containers_overlay_marker_goes_while_it_runs") else {
        return;
    };
    for _ in 0..2 {
        assert_eq!(sh(&root, &[], "echo first > /first").0, 0);
    }
    assert_eq!(root.pooled_bundles(), (1, 1));
    let pooled = std::fs::metadata(root.path().join("pool/0")).unwrap();
    let mut child = root
        .cmd()
        .args(["run", "--rm", "-i", "busybox", "sh", "-c"])
        .arg("echo ready; read go; echo new > /new && echo changed >> /etc/passwd && cat /new && tail -n 1 /etc/passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let bundles = root.entries("containers");
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    let bundle = root.path().join("containers").join(&bundles[0]);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&bundle).unwrap().ino(),
        pooled.ino(),
        "the running container took the clean pooled bundle"
    );
    let work = bundle.join("work/work");
    let tree = || {
        let mut names: Vec<String> = std::fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    // The launcher removes it once the child says its root is mounted, which may still
    // be going on when "ready" comes; the container is held by `read` meanwhile, so this
    // only waits for the launcher, never for a timeout to pass or fail the test.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !tree().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        tree(),
        Vec::<String>::new(),
        "the marker is still in {}",
        work.display()
    );
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert_eq!(rest, ["new", "changed"]);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(root.entries("containers"), Vec::<String>::new());
    assert_eq!(
        root.pooled_bundles(),
        (1, 1),
        "one readied while it ran, its own left dirty"
    );
}

#[test]
fn sigterm_to_petri_reaches_the_container() {
    let Some(root) = setup("sigterm_to_petri_reaches_the_container") else {
        return;
    };
    let mut child = root
        .cmd()
        .args([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "got-term");
    assert_eq!(child.wait().unwrap().code(), Some(42));
}

/// The container's pid 1 killed from outside: petri exits 128 + SIGKILL.
#[test]
fn a_killed_container_exits_128_plus_signal() {
    let Some(root) = setup("a_killed_container_exits_128_plus_signal") else {
        return;
    };
    let mut child = root
        .cmd()
        .args(["run", "--rm", "busybox", "sh", "-c", "echo ready; exec sleep 987654"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let pid = (0..100)
        .find_map(|_| {
            let found = find_process(b"sleep\0987654\0");
            if found.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            found
        })
        .expect("the container's sleep never appeared");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(137));
}

fn find_process(cmdline: &[u8]) -> Option<rustix::process::Pid> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        (std::fs::read(e.path().join("cmdline")).ok()? == cmdline).then(|| rustix::process::Pid::from_raw(pid))?
    })
}

#[test]
fn env_workdir_hostname() {
    let Some(root) = setup("env_workdir_hostname") else {
        return;
    };
    let (code, out) = sh(
        &root,
        &[
            "--env",
            "A=1",
            "-e",
            "B=two words",
            "--name",
            "box-1",
            "--workdir",
            "/tmp/work",
        ],
        r#"echo "$A|$B|$PATH|$HOSTNAME|$HOME"; pwd; hostname; cat /etc/hostname"#,
    );
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "1|two words|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|box-1|/root",
            "/tmp/work",
            "box-1",
            "box-1"
        ]
    );
}

/// The network namespace has only lo, and lo is up (the launcher brings it up from
/// outside, on a socket the container's process made there: `launch::bring_up_loopback`).
#[test]
fn the_network_is_lo_alone_and_up() {
    let Some(root) = setup("the_network_is_lo_alone_and_up") else {
        return;
    };
    let (code, out) = sh(&root, &[], "ls /sys/class/net; cat /sys/class/net/lo/flags");
    assert_eq!((code, out.as_str()), (0, "lo\n0x9\n"), "IFF_UP | IFF_LOOPBACK");
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let (code, out) = sh(&root, &["--network", "host"], "ls /sys/class/net");
    let mut seen: Vec<&str> = out.lines().collect();
    let mut host: Vec<&str> = host.iter().map(String::as_str).collect();
    seen.sort_unstable();
    host.sort_unstable();
    assert_eq!((code, seen), (0, host), "--network host shows the host's interfaces");
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf are generated (Docker's contents) on
/// the launcher's scratch tmpfs and bound into the root, so they never reach the
/// container's writable layer; with `--network host`, /etc/hosts is the host's.
#[test]
fn generated_etc_files() {
    let Some(root) = setup("generated_etc_files") else {
        return;
    };
    let script = "cat /etc/hosts; echo ==; cat /etc/resolv.conf; echo ==; \
                  stat -c '%a %s' /etc/hostname; grep -c ' /etc/[a-z.]* .* - tmpfs ' /proc/self/mountinfo";
    let out = root.run(&["run", "--name", "web-1", "busybox", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let parts: Vec<&str> = text.split("==\n").collect();
    assert_eq!(
        parts[0],
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tweb-1\n"
    );
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(parts[1], host_resolv);
    assert_eq!(parts[2], "644 6\n3\n", "mode and size of /etc/hostname, tmpfs binds");
    let bundles = root.entries("containers");
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    let upper = root.path().join("containers").join(&bundles[0]).join("upper");
    assert!(
        !upper.join("etc").exists(),
        "generated files reached the writable layer"
    );

    let (code, hosts) = sh(&root, &["--network", "host"], "cat /etc/hosts");
    assert_eq!(code, 0);
    assert_eq!(hosts, std::fs::read_to_string("/etc/hosts").unwrap_or_default());
}

/// The launcher keeps the child off its own CPU while both set up; the process that
/// runs must still have every CPU petri had.
#[test]
fn the_container_gets_petris_cpu_set() {
    let Some(root) = setup("the_container_gets_petris_cpu_set") else {
        return;
    };
    let cpus = |status: &str| {
        status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .map(str::to_string)
    };
    let ours = cpus(&std::fs::read_to_string("/proc/self/status").unwrap()).expect("Cpus_allowed_list");
    let (code, out) = sh(&root, &[], "cat /proc/self/status");
    assert_eq!(code, 0);
    assert_eq!(cpus(&out), Some(ours));
}

/// /dev as Docker makes it: the default nodes (mode 0666), the links, devpts, an shm of
/// the size asked for, and mqueue. The launcher builds most of it as detached mounts
/// and the child attaches them, so this pins down what the container sees.
#[test]
fn dev_has_the_default_nodes_links_and_mounts() {
    let Some(root) = setup("dev_has_the_default_nodes_links_and_mounts") else {
        return;
    };
    let (code, out) = sh(
        &root,
        &["--shm-size", "8Mi"],
        r#"stat -c '%n %F %a %t:%T' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty
           readlink /dev/fd; readlink /dev/ptmx; df -k /dev/shm | tail -1 | awk '{print $2}'
           awk 'index($5, "/dev") == 1 {print $5, $9}' /proc/self/mountinfo
           echo x > /dev/null && echo null-ok"#,
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "/dev/null character special file 666 1:3",
            "/dev/zero character special file 666 1:5",
            "/dev/full character special file 666 1:7",
            "/dev/random character special file 666 1:8",
            "/dev/urandom character special file 666 1:9",
            "/dev/tty character special file 666 5:0",
            "/proc/self/fd",
            "pts/ptmx",
            "8192",
            "/dev tmpfs",
            "/dev/pts devpts",
            "/dev/shm tmpfs",
            "/dev/mqueue mqueue",
            "null-ok",
        ]
    );
}

#[test]
fn users_and_groups_come_from_the_image() {
    let Some(root) = setup("users_and_groups_come_from_the_image") else {
        return;
    };
    let (_, out) = sh(&root, &["--user", "app"], "id; echo $HOME");
    assert_eq!(
        out,
        "uid=1000(app) gid=1000(app) groups=44(video),50(staff),1000(app)\n/home/app\n"
    );
    let (_, out) = sh(&root, &["--user", "1000:50"], "id -u; id -g");
    assert_eq!(out, "1000\n50\n");
    let (_, out) = sh(&root, &[], "id -u");
    assert_eq!(out, "0\n");
    let out = run(&root, &["--user", "nosuch", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("user \"nosuch\" not found"), "{}", stderr(&out));
}

/// petri works out the user and the program from the image's files before the process
/// has its mounts, unless a bind could cover them: then the bound files decide.
#[test]
fn binds_over_etc_passwd_and_path_decide() {
    let Some(root) = setup("binds_over_etc_passwd_and_path_decide") else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let passwd = host.path().join("passwd");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/sh\nbound:x:2000:2000::/home/bound:/bin/sh\n",
    )
    .unwrap();
    let bind = format!("{}:/etc/passwd", passwd.display());
    let (_, out) = sh(&root, &["--user", "bound", "--mount", &bind], "id -u; echo $HOME");
    assert_eq!(out, "2000\n/home/bound\n");
    let bin = host.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let tool = bin.join("bound-tool");
    std::fs::write(&tool, "#!/bin/sh\necho from the bound PATH directory\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bind = format!("{}:/usr/local/bin", bin.display());
    let out = run(&root, &["--mount", &bind, "busybox", "bound-tool"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from the bound PATH directory\n");
    let out = run(&root, &["busybox", "bound-tool"]);
    assert_eq!(out.status.code(), Some(127), "not in the image itself");
}

#[test]
fn entrypoint_and_cmd_overrides() {
    let Some(root) = setup("entrypoint_and_cmd_overrides") else {
        return;
    };
    let text = |args: &[&str]| {
        let out = root.run(&[&["run", "--rm"], args].concat());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    // The image's Cmd is ["sh"]: with stdin at /dev/null it reads nothing and exits 0.
    assert_eq!(text(&["busybox"]), "");
    assert_eq!(text(&["busybox", "echo", "a", "b"]), "a b\n");
    assert_eq!(
        text(&["--entrypoint", "echo from-entrypoint", "busybox"]),
        "from-entrypoint\n"
    );
    assert_eq!(text(&["--entrypoint", "echo", "busybox", "x", "y"]), "x y\n");
    assert_eq!(
        text(&["--entrypoint", "sh -c 'echo \"$0 $1\"' zero", "busybox", "one"]),
        "zero one\n"
    );
}

#[test]
fn tty_gives_a_terminal_from_the_containers_devpts() {
    let Some(root) = setup("tty_gives_a_terminal_from_the_containers_devpts") else {
        return;
    };
    let out = run(
        &root,
        &[
            "-t",
            "busybox",
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo tty-ok $TERM; tty; ls /dev/pts",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A terminal turns \n into \r\n; `tty` names a node that exists inside.
    assert_eq!(stdout(&out), "tty-ok xterm\r\n/dev/pts/0\r\n0     ptmx\r\n");
    let out = run(&root, &["busybox", "sh", "-c", "[ -t 1 ] || echo no-tty"]);
    assert_eq!(stdout(&out), "no-tty\n");
}

#[test]
fn read_only_mounts_and_submounts_refuse_writes() {
    let Some(root) = setup("read_only_mounts_and_submounts_refuse_writes") else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir(host.path().join("sub")).unwrap();
    std::fs::write(host.path().join("file"), "host data").unwrap();
    // A submount under the source, in a private mount namespace that dies with the shell.
    let petri = env!("CARGO_BIN_EXE_petri");
    let script = format!(
        "mount -t tmpfs sub {d}/sub && {petri} --root {r} run --rm --mount {d}:/data --mount {d}:/rw:rw busybox sh -c \
         'cat /data/file; touch /data/x 2>&1; touch /data/sub/y 2>&1; touch /rw/ok && echo rw-ok'",
        d = host.path().display(),
        r = root.path().display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("host data"), "{text}{}", stderr(&out));
    assert_eq!(text.matches("Read-only file system").count(), 2, "{text}");
    assert!(text.contains("rw-ok"), "{text}");
    assert!(host.path().join("ok").exists());
    assert!(!host.path().join("x").exists());
}

#[test]
fn host_files_and_masked_paths_are_out_of_reach() {
    let Some(root) = setup("host_files_and_masked_paths_are_out_of_reach") else {
        return;
    };
    let secret = root.path().join("host-secret");
    std::fs::write(&secret, "secret").unwrap();
    // On the host these are not empty, so an empty read inside means masked.
    assert!(!std::fs::read("/proc/timer_list").unwrap().is_empty());
    let script = format!(
        "cat {s} 2>&1; wc -c < /proc/timer_list; ls /proc/acpi 2>&1 | wc -l; (echo 1 > /proc/sys/kernel/ostype) 2>&1; \
         touch /sys/x 2>&1; ls /proc | grep -c '^[0-9]'",
        s = secret.display()
    );
    let (_, out) = sh(&root, &[], &script);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(lines[0].contains("No such file"), "{out}");
    assert_eq!(lines[1], "0", "/proc/timer_list is not masked: {out}");
    assert_eq!(lines[2], "0", "/proc/acpi is not masked: {out}");
    assert!(lines[3].contains("Read-only file system"), "{out}");
    assert!(lines[4].contains("Read-only file system"), "{out}");
    // Only the container's own processes: sh, ls, grep (and maybe a subshell).
    assert!(lines[5].parse::<u32>().unwrap() <= 4, "{out}");
    // The host's old root is detached before exec: one mount at /, the overlay.
    let (_, mountinfo) = sh(&root, &[], "cat /proc/self/mountinfo");
    let points: Vec<&str> = mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).collect();
    assert_eq!(points.iter().filter(|p| **p == "/").count(), 1, "{mountinfo}");
    assert!(
        mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/") && l.contains(" - overlay ")),
        "{mountinfo}"
    );
}

#[test]
fn privileges_are_reduced() {
    let Some(root) = setup("privileges_are_reduced") else {
        return;
    };
    let (_, out) = sh(
        &root,
        &[],
        "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; mount -t tmpfs t /mnt 2>&1; \
         unshare -m true 2>&1; ls /proc/self/fd; readlink /proc/self/cwd",
    );
    let lines: Vec<&str> = out.lines().collect();
    // Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert_eq!(lines[0], "CapEff:\t00000000a80425fb", "{out}");
    assert_eq!(lines[1], "CapBnd:\t00000000a80425fb", "{out}");
    assert_eq!(lines[2], "NoNewPrivs:\t1", "{out}");
    assert!(lines[3].starts_with("Seccomp:\t2"), "{out}");
    // busybox mount words EPERM as "permission denied (are you root?)".
    assert!(
        lines[4].contains("ermission denied") || lines[4].contains("not permitted"),
        "{out}"
    );
    assert!(lines[5].contains("Operation not permitted"), "{out}");
    // ls's own directory fd (3) is the only one above 2.
    assert_eq!(lines[6..lines.len() - 1].join(" "), "0 1 2 3", "{out}");
    assert_eq!(lines[lines.len() - 1], "/", "{out}");
    let (_, out) = sh(&root, &["--user", "app"], "grep CapEff /proc/self/status");
    assert_eq!(out, "CapEff:\t0000000000000000\n");
}

/// petri takes the signals it forwards from a signalfd, blocked in itself; the
/// container's process starts with none blocked. (What petri's caller ignores, such as
/// the test harness's two realtime signals, stays ignored across exec.)
#[test]
fn the_container_starts_with_no_signal_blocked() {
    let Some(root) = setup("the_container_starts_with_no_signal_blocked") else {
        return;
    };
    let out = root.run(&["run", "--rm", "busybox", "grep", "^SigBlk:", "/proc/self/status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "SigBlk:\t0000000000000000\n");
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    let Some(root) = setup("a_fork_bomb_stops_at_the_pids_limit") else {
        return;
    };
    // The bomb runs in a subshell that dies when fork fails; the count is read with
    // shell builtins only, since no fork is left. Inside, /sys/fs/cgroup is our cgroup.
    let script = r#"( while :; do sleep 30 & done ) 2>/dev/null
        f=/sys/fs/cgroup/pids/pids.current; [ -f $f ] || f=/sys/fs/cgroup/pids.current
        read n < $f; echo $n"#;
    let (code, out) = sh(&root, &["--pids-limit", "32"], script);
    assert_eq!(code, 0, "{out}");
    let procs: u32 = out.trim().parse().unwrap();
    assert!((30..=32).contains(&procs), "{procs} processes under a limit of 32");
    // The sleeps died with the container; the host goes on.
    assert_eq!(sh(&root, &[], "echo fine").1, "fine\n");
}

#[test]
fn a_memory_hog_is_oom_killed_with_137() {
    let Some(root) = setup("a_memory_hog_is_oom_killed_with_137") else {
        return;
    };
    let out = run(
        &root,
        &[
            "--memory",
            "32Mi",
            "busybox",
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(137),
        "stdout {} stderr {}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stderr(&out).contains("out of memory"), "{}", stderr(&out));
}

#[test]
fn half_a_core_is_half_a_core() {
    let Some(root) = setup("half_a_core_is_half_a_core") else {
        return;
    };
    // Inside, /sys/fs/cgroup shows the container's own cgroup (cgroup namespace).
    let script = r#"
        usage() { if [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then cat /sys/fs/cgroup/cpuacct/cpuacct.usage;
                  else echo $(( $(grep usage_usec /sys/fs/cgroup/cpu.stat | cut -d' ' -f2) * 1000 )); fi; }
        ( while :; do :; done ) & ( while :; do :; done ) &
        sleep 1; u1=$(usage); t1=$(cut -d' ' -f1 /proc/uptime)
        sleep 3; u2=$(usage); t2=$(cut -d' ' -f1 /proc/uptime)
        echo $u1 $u2 $t1 $t2"#;
    let (code, out) = sh(&root, &["--cpu", "0.5"], script);
    assert_eq!(code, 0, "{out}");
    let v: Vec<f64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let cores = (v[1] - v[0]) / 1e9 / (v[3] - v[2]);
    assert!(
        (0.35..=0.6).contains(&cores),
        "two busy loops under --cpu 0.5 used {cores:.2} cores"
    );
}
