//! The child's half of a launch, run in the cloned process (pid 1 of the new pid
//! namespace) from the clone to execve: the start sequence of runtime-notes.md, one step
//! a line. It runs in a single-threaded copy of the launcher, allocates freely, and
//! returns any failure for the launcher's copy of the code to report before exiting.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Access, FileType, Mode, OFlags, ResolveFlags};
use rustix::process::{self as rproc, Resource, Rlimit};
use rustix::thread::{self as rthread, CpuSet};

use seccompiler::BpfProgram;
use serde::{Deserialize, Serialize};

use super::plan::{plan as mount_plan, PlanInput, DEV, PREBUILT};
use super::process::{resolve_user, User};
use super::{channel, mounts, security, Network, ProcessSpec, SandboxSpec};
use crate::cgroup::CgroupMounts;
use crate::sys::process::{unshare_namespace, SharedView};

/// A failure inside the child: the exit code petri should report, and why.
pub struct InitFailure {
    pub code: i32,
    pub message: String,
}

fn fail<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> InitFailure {
    move |e| InitFailure {
        code: 125,
        message: format!("{step}: {e}"),
    }
}

/// What the launcher knows at the clone, in the child's copy of its memory.
pub struct AtFork<'a> {
    pub network: Network,
    pub task_files: &'a [PathBuf],
    pub cgroups: &'a CgroupMounts,
    /// The launcher's CPU set, to take back after the go message: until then the
    /// launcher may keep this process off its own CPU (`launch::Placement`).
    pub affinity: Option<&'a CpuSet>,
}

/// What the launcher sends once the spec is known (the first message on the socket):
/// the parts of the [`SandboxSpec`] the child acts on. The limits, device rules and
/// /dev's size stay with the launcher, which applies them itself.
#[derive(Serialize, Deserialize)]
pub struct Plan {
    pub hostname: String,
    pub layers_dir: PathBuf,
    /// Overlay lower directories relative to `layers_dir`, top first.
    pub lower: Vec<String>,
    pub bundle: PathBuf,
    pub remove: bool,
    pub binds: Vec<(PathBuf, String, bool)>,
    pub process: ProcessSpec,
}

impl Plan {
    /// The plan for `spec`, whose root is the overlay of `lower`.
    pub fn new(spec: &SandboxSpec, lower: Vec<String>) -> Plan {
        Plan {
            hostname: spec.hostname.clone(),
            layers_dir: spec.layers_dir.clone(),
            lower,
            bundle: spec.bundle.clone(),
            remove: spec.remove,
            binds: spec.binds.clone(),
            process: spec.process.clone(),
        }
    }
}

/// Everything from the clone to execve. Returns only on failure.
pub fn run(forked: &AtFork, sync: &OwnedFd) -> InitFailure {
    match setup(forked, sync) {
        Ok(never) => match never {},
        Err(f) => f,
    }
}

enum Never {}

/// Where the root filesystem comes from: the launcher's overlay, or the child's own
/// mount of the layers over these writable directories.
enum Root {
    Built(OwnedFd),
    Layers { upper: OwnedFd, work: OwnedFd },
}

fn setup(forked: &AtFork, sync: &OwnedFd) -> Result<Never, InitFailure> {
    // The network namespace is made here rather than at clone: building one takes most
    // of a millisecond, which the launcher spends on the spec and the cgroup meanwhile.
    if forked.network == Network::Isolated {
        unshare_namespace(SharedView::Network).map_err(fail("unshare the network namespace"))?;
        // The launcher brings lo up on a socket made in the new namespace, in parallel
        // with the mounts below; its /dev message (`await_dev`) comes after.
        let socket = rustix::net::socket_with(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(fail("make a socket in the network namespace"))?;
        send_fd(sync, b"N", &socket).map_err(fail("send the network namespace's socket"))?;
    }
    // Out of petri's session: a Ctrl-C on the terminal reaches petri only, which forwards it.
    rproc::setsid().map_err(fail("setsid"))?;
    rproc::umask(rustix::fs::Mode::empty());
    mounts::make_private().map_err(fail("mounts"))?;
    let (plan, PlanMounts { scratch, dev, root }) = await_plan(sync)?;
    // The launcher mounted the overlay root (`mounts::build_overlay`) unless the kernel
    // could not take its layers. Then the child mounts it, from the writable directories
    // held open now: the scratch tmpfs goes over the bundle itself, so the bundle on disk
    // needs no mount point of its own.
    let root = match root {
        Some(built) => Root::Built(built),
        None => Root::Layers {
            upper: open_dir(&plan.bundle.join("upper"))?,
            work: open_dir(&plan.bundle.join("work"))?,
        },
    };
    // The launcher's scratch tmpfs holds the generated /etc files, the root's mount
    // point and the directories of the container's other small tmpfs; after pivot_root
    // only the mounts made from it keep it alive.
    let scratch_parts = mounts::attach_scratch(&scratch, &plan.bundle).map_err(fail("scratch tmpfs"))?;
    drop(scratch);
    let rootfs = mounts::root_mount_point(&plan.bundle);
    match root {
        Root::Built(built) => mounts::attach(&built, &rootfs, "attach the root filesystem on"),
        Root::Layers { upper, work } => {
            let lower: Vec<&str> = plan.lower.iter().map(String::as_str).collect();
            mounts::mount_overlay(&plan.layers_dir, &lower, &upper, &work, plan.remove, &rootfs)
        }
    }
    .map_err(fail("root filesystem"))?;
    if plan.remove && !plan.process.tty {
        // The launcher removes the volatile overlay's marker now (`bundle`). Not with a
        // tty, whose size the launcher sets as soon as it comes. A failed send means the
        // launcher is gone, which `await_go` reports.
        let _ = rustix::io::write(sync, b"M");
    }
    let mounts = mount_plan(&PlanInput {
        binds: &plan.binds,
        scratch: &scratch_parts,
        cgroups: forked.cgroups,
    });
    mounts::execute(&rootfs, &mounts.before_go, &[(DEV, dev)]).map_err(fail("mounts"))?;
    // The cgroup is ready: join it before the cgroup namespace is made, whose root is
    // the cgroup the process is in at that moment.
    let tasks = await_go(sync)?;
    if let Some(cpus) = forked.affinity {
        rthread::sched_setaffinity(None, cpus).map_err(fail("restore the CPU affinity"))?;
    }
    join_cgroups(forked.task_files, tasks)?;
    unshare_namespace(SharedView::Cgroup).map_err(fail("unshare the cgroup namespace"))?;
    mounts::execute(&rootfs, &mounts.after_go, &[]).map_err(fail("mounts"))?;
    // The launcher fills /dev and builds its mounts meanwhile, and sends them in its
    // third message.
    let dev = await_dev(sync)?;
    mounts::execute(&rootfs, &mounts.after_dev, &dev).map_err(fail("mounts"))?;
    drop(dev);
    let old_root = pivot_root(&rootfs)?;
    if plan.process.tty {
        open_tty(sync)?;
    }
    // The launcher detaches the old root now (see `pivot_root`). A failed send means the
    // launcher is gone, which the next wait for it reports.
    let _ = rustix::io::write(sync, b"P");
    rustix::system::sethostname(plan.hostname.as_bytes()).map_err(fail("sethostname"))?;
    rproc::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let resolved = await_resolved(sync)?;
    if !resolved.launcher_detaches {
        detach_old_root(&old_root)?;
    }
    drop(old_root);
    enter_workdir(&plan.process.cwd)?;
    let user = match resolved.user {
        Some(user) => user,
        None => lookup_user(&plan.process, &RootFiles::Pivoted)?,
    };
    set_limits(resolved.nofile)?;
    if !plan.process.stdin && !plan.process.tty {
        redirect_stdin_to_null()?;
    }
    security::drop_bounding_set().map_err(fail("capabilities"))?;
    switch_user(&user)?;
    security::set_capabilities(user.uid == 0).map_err(fail("capabilities"))?;
    security::set_no_new_privs().map_err(fail("no_new_privs"))?;
    cloexec_all_fds()?;
    let env = with_home(&plan.process.env, &user.home);
    let program = match resolved.program {
        Some(program) => program,
        None => find_program(&plan.process.argv[0], &env, &RootFiles::Pivoted)?,
    };
    let filter = await_filter(sync)?;
    security::install_filter(&filter).map_err(fail("seccomp"))?;
    // Last: loading the filter is more of the wait for the detach done. Docker's profile
    // lets this read the socket.
    if resolved.launcher_detaches {
        await_detached(sync)?;
    }
    let err = std::process::Command::new(&program)
        .arg0(&plan.process.argv[0])
        .args(&plan.process.argv[1..])
        .env_clear()
        .envs(env.iter().filter_map(|kv| kv.split_once('=')))
        .exec();
    Err(exec_failure(&plan.process.argv[0], err))
}

/// What comes with the plan: the scratch tmpfs (`mounts::build_scratch`), /dev
/// (`mounts::clone_dev`) and, where the kernel allowed it, the overlay root
/// (`mounts::build_overlay`).
struct PlanMounts {
    scratch: OwnedFd,
    dev: OwnedFd,
    root: Option<OwnedFd>,
}

/// Waits for the launcher's plan message, once the launcher has the spec. EOF means the
/// launcher gave up.
fn await_plan(sync: &OwnedFd) -> Result<(Plan, PlanMounts), InitFailure> {
    let (bytes, mut fds) = receive(sync)?;
    let root = (fds.len() == 3).then(|| fds.pop()).flatten();
    match <[OwnedFd; 2]>::try_from(fds) {
        Ok([scratch, dev]) if !bytes.is_empty() => {
            let plan = serde_json::from_slice(&bytes).map_err(fail("read the launcher's spec"))?;
            Ok((plan, PlanMounts { scratch, dev, root }))
        }
        _ => Err(fail("wait for the launcher")("no spec, scratch tmpfs and /dev came")),
    }
}

/// Waits for the launcher's go message ("G"): the cgroup exists with its limits, and
/// comes with its v1 `tasks` files, open for writing. EOF means the launcher gave up.
fn await_go(sync: &OwnedFd) -> Result<Vec<OwnedFd>, InitFailure> {
    match receive(sync)? {
        (bytes, fds) if bytes == b"G" => Ok(fds),
        (bytes, _) => Err(fail("wait for the launcher")(format!(
            "got {} bytes, not the go message",
            bytes.len()
        ))),
    }
}

/// Waits for the launcher's third message ("D"), which it builds while the child makes
/// its first mounts and sends once lo is up in an isolated network namespace (on the
/// socket the child sent at the start): the detached mounts of [`PREBUILT`], in that
/// order. EOF means the launcher gave up.
fn await_dev(sync: &OwnedFd) -> Result<mounts::Detached, InitFailure> {
    match receive(sync)? {
        (bytes, fds) if bytes == b"D" && fds.len() == PREBUILT.len() => Ok(PREBUILT.into_iter().zip(fds).collect()),
        (bytes, fds) => Err(fail("wait for the launcher")(format!(
            "got {} bytes and {} descriptors, not /dev's {} mounts",
            bytes.len(),
            fds.len(),
            PREBUILT.len()
        ))),
    }
}

/// What the launcher worked out from the container's files while the child made its
/// last mounts and pivoted (the fourth message, [`resolve`]). EOF means the launcher
/// gave up.
fn await_resolved(sync: &OwnedFd) -> Result<Resolved, InitFailure> {
    let (bytes, _) = receive(sync)?;
    serde_json::from_slice(&bytes).map_err(|e| fail("wait for the launcher")(format!("no user and program came: {e}")))
}

/// Waits for the launcher's word ("U", its sixth and last message) that it detached the
/// old root, which nothing of the container may see. EOF means the launcher gave up.
fn await_detached(sync: &OwnedFd) -> Result<(), InitFailure> {
    match receive(sync)? {
        (bytes, _) if bytes == b"U" => Ok(()),
        (bytes, _) => Err(fail("wait for the launcher to detach the old root")(format!(
            "got {} bytes",
            bytes.len()
        ))),
    }
}

/// The seccomp filter to install before exec (the launcher's fifth message). EOF
/// means the launcher gave up.
fn await_filter(sync: &OwnedFd) -> Result<BpfProgram, InitFailure> {
    let (bytes, _) = receive(sync)?;
    security::filter_from_bytes(&bytes)
        .ok_or_else(|| fail("wait for the launcher")(format!("got {} bytes, not a seccomp filter", bytes.len())))
}

/// One message from the launcher (`channel::receive`).
fn receive(sync: &OwnedFd) -> Result<(Vec<u8>, Vec<OwnedFd>), InitFailure> {
    channel::receive(sync).map_err(fail("wait for the launcher"))
}

/// Joins the v1 hierarchies (cgroup2 was joined at clone) through their `tasks` files,
/// `task_files`, which the launcher opened (`tasks`, in the same order): see
/// `PendingCgroup::v1_task_files`.
fn join_cgroups(task_files: &[PathBuf], tasks: Vec<OwnedFd>) -> Result<(), InitFailure> {
    if tasks.len() != task_files.len() {
        return Err(fail("join the cgroups")(format!(
            "the launcher sent {} tasks files for {} hierarchies",
            tasks.len(),
            task_files.len()
        )));
    }
    for (file, fd) in task_files.iter().zip(tasks) {
        rustix::io::write(&fd, b"0").map_err(|e| InitFailure {
            code: 125,
            message: format!("join cgroup {}: {e}", file.display()),
        })?;
    }
    Ok(())
}

/// An O_PATH descriptor of the directory `path`.
fn open_dir(path: &Path) -> Result<OwnedFd, InitFailure> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| InitFailure {
        code: 125,
        message: format!("open {}: {e}", path.display()),
    })
}

/// runtime-notes.md step 5: pivot into the rootfs. The old root is then stacked on
/// the new one, where no path of this process leads (they start at its new root), and
/// must be detached before exec. Its detach waits for an RCU grace period (~0.1 ms on
/// the project's VM), so the launcher, whose path to exec is shorter from here, does
/// it from inside this mount namespace while this process goes on ("P", sent once a
/// tty is open, tells it to: `launch::detach_old_root`; [`await_detached`] waits for its
/// word). Returned is a descriptor of the old root, for [`detach_old_root`] when the
/// launcher cannot (`Resolved::launcher_detaches`).
fn pivot_root(rootfs: &Path) -> Result<OwnedFd, InitFailure> {
    let old = rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(fail("open old root"))?;
    rproc::chdir(rootfs).map_err(fail("chdir to rootfs"))?;
    rproc::pivot_root(".", ".").map_err(fail("pivot_root"))?;
    rproc::chdir("/").map_err(fail("chdir /"))?;
    Ok(old)
}

/// Detaches the old root from here, as runc does: from inside it, made a slave first
/// so that nothing of the detach reaches the host's mounts.
fn detach_old_root(old: &OwnedFd) -> Result<(), InitFailure> {
    use rustix::mount::{mount_change, unmount, MountPropagationFlags, UnmountFlags};
    rproc::fchdir(old).map_err(fail("fchdir to old root"))?;
    mount_change(".", MountPropagationFlags::REC | MountPropagationFlags::DOWNSTREAM)
        .map_err(fail("make old root a slave"))?;
    unmount(".", UnmountFlags::DETACH).map_err(fail("detach old root"))?;
    rproc::chdir("/").map_err(fail("chdir /"))
}

/// What the launcher works out for the child from the container's files, through the
/// detached overlay root, once it has sent its third message: the child, between that
/// message and exec, has the rest of its setup (its last mounts and pivot_root) to do
/// first, and the launcher nothing. It sends the open-files limit and whether it will
/// detach the child's old root (`launcher_detaches`) always, and who the process runs as
/// and the program to exec where its view of the files is the container's: `root` is
/// the overlay root (`None` when the child mounted the layers itself) and there are no
/// user binds (`binds`), which might cover /etc/passwd or a directory on PATH. The program only for root, whose access checks
/// are the launcher's (CAP_DAC_OVERRIDE is in Docker's default set). The child works
/// out whatever is left `None` itself, after pivot_root.
pub fn resolve(
    process: &ProcessSpec,
    root: Option<BorrowedFd>,
    binds: bool,
    launcher_detaches: bool,
) -> Result<Resolved, InitFailure> {
    let mut resolved = Resolved {
        user: None,
        program: None,
        nofile: open_files_limit(),
        launcher_detaches,
    };
    if let (Some(root), false) = (root, binds) {
        let files = RootFiles::Detached(root);
        let user = lookup_user(process, &files)?;
        if user.uid == 0 {
            resolved.program = Some(find_program(&process.argv[0], &process.env, &files)?);
        }
        resolved.user = Some(user);
    }
    Ok(resolved)
}

/// The fourth message ([`resolve`]).
#[derive(Serialize, Deserialize)]
pub struct Resolved {
    user: Option<User>,
    program: Option<PathBuf>,
    /// RLIMIT_NOFILE to set ([`set_limits`]).
    nofile: u64,
    /// The launcher detaches the old root (see [`pivot_root`]); it cannot when it has
    /// threads, which setns into a mount namespace refuses.
    launcher_detaches: bool,
}

/// The container's files as [`lookup_user`] and [`find_program`] see them: the child's
/// own after pivot_root, or the launcher's through the overlay root, symlinks resolved
/// as if it were `/` (openat2 RESOLVE_IN_ROOT), which is what the child would see
/// where no mount covers them.
enum RootFiles<'a> {
    Pivoted,
    Detached(BorrowedFd<'a>),
}

impl RootFiles<'_> {
    /// The text of the file at the absolute `path`; empty when it cannot be read.
    fn read(&self, path: &str) -> String {
        match self {
            RootFiles::Pivoted => fs::read_to_string(path).unwrap_or_default(),
            RootFiles::Detached(root) => open_in(*root, path, OFlags::RDONLY)
                .and_then(|fd| io::read_to_string(fs::File::from(fd)))
                .unwrap_or_default(),
        }
    }

    /// Whether `path` is a regular file the caller may execute (access(2)'s X_OK).
    fn executable(&self, path: &Path) -> bool {
        match self {
            RootFiles::Pivoted => {
                let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
                    return false;
                };
                rustix::fs::access(c.as_c_str(), Access::EXEC_OK).is_ok() && path.is_file()
            }
            // faccessat2's AT_EMPTY_PATH is what this needs, which rustix does not pass
            // on; the descriptor's magic link gets the kernel's own check the same way.
            RootFiles::Detached(root) => open_in(*root, path, OFlags::PATH).is_ok_and(|fd| {
                rustix::fs::fstat(&fd).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
                    && rustix::fs::access(format!("/proc/self/fd/{}", fd.as_raw_fd()), Access::EXEC_OK).is_ok()
            }),
        }
    }
}

/// Opens the absolute `path` inside `root` (see [`RootFiles`]).
fn open_in(root: BorrowedFd, path: impl AsRef<Path>, flags: OFlags) -> io::Result<OwnedFd> {
    let relative = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    Ok(rustix::fs::openat2(
        root,
        relative,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )?)
}

fn lookup_user(process: &ProcessSpec, files: &RootFiles) -> Result<User, InitFailure> {
    resolve_user(
        process.user.as_deref().unwrap_or(""),
        &files.read("/etc/passwd"),
        &files.read("/etc/group"),
    )
    .map_err(|e| InitFailure {
        code: 125,
        message: e.to_string(),
    })
}

/// Docker creates a missing WorkingDir. The final check is CVE-2024-21626's: a working
/// directory that resolves outside the root shows as "(unreachable)".
fn enter_workdir(cwd: &str) -> Result<(), InitFailure> {
    fs::create_dir_all(cwd).map_err(fail("create working directory"))?;
    rproc::chdir(cwd).map_err(fail("chdir to the working directory"))?;
    let here = rproc::getcwd(Vec::new()).map_err(fail("getcwd"))?;
    if !here.to_bytes().starts_with(b"/") {
        return Err(fail("working directory")("resolves outside the container root"));
    }
    Ok(())
}

/// Open files: Docker's 1048576, capped by fs.nr_open (one value for the whole kernel,
/// read by the launcher).
fn open_files_limit() -> u64 {
    let ceiling = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    ceiling.unwrap_or(1 << 20).min(1 << 20)
}

/// RLIMIT_NOFILE to `n` ([`open_files_limit`]); without CAP_SYS_RESOURCE to raise the
/// hard limit, the soft limit is raised to the inherited hard one.
fn set_limits(n: u64) -> Result<(), InitFailure> {
    let wanted = Rlimit {
        current: Some(n),
        maximum: Some(n),
    };
    match rproc::setrlimit(Resource::Nofile, wanted) {
        Err(rustix::io::Errno::PERM) => {
            let hard = rproc::getrlimit(Resource::Nofile).maximum;
            let raised = Rlimit {
                current: hard,
                maximum: hard,
            };
            rproc::setrlimit(Resource::Nofile, raised).map_err(fail("setrlimit NOFILE"))
        }
        other => other.map_err(fail("setrlimit NOFILE")),
    }
}

/// Opens a pseudo-terminal in the container's own devpts (so `tty` names a path that
/// exists inside), hands the master to the launcher over the sync socket (runc's
/// console socket), and attaches the slave.
fn open_tty(sync: &OwnedFd) -> Result<(), InitFailure> {
    use rustix::pty::{ioctl_tiocgptpeer, unlockpt, OpenptFlags};
    let flags = rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC;
    let master = rustix::fs::open("/dev/ptmx", flags, rustix::fs::Mode::empty()).map_err(fail("open /dev/ptmx"))?;
    unlockpt(&master).map_err(fail("unlockpt"))?;
    let peer = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let slave = ioctl_tiocgptpeer(&master, peer).map_err(fail("open the terminal's peer"))?;
    send_fd(sync, b"T", &master).map_err(fail("send the terminal"))?;
    attach_tty(&slave)
}

/// Sends the launcher a message `tag` carrying descriptor `fd`.
fn send_fd(sync: &OwnedFd, tag: &[u8], fd: &OwnedFd) -> rustix::io::Result<()> {
    use std::os::fd::AsFd;
    channel::send(sync, tag, &[fd.as_fd()])
}

/// Makes the pty slave the controlling terminal and stdin, stdout and stderr.
fn attach_tty(slave: &OwnedFd) -> Result<(), InitFailure> {
    rproc::ioctl_tiocsctty(slave).map_err(fail("set the controlling terminal"))?;
    rustix::stdio::dup2_stdin(slave).map_err(fail("attach the terminal"))?;
    rustix::stdio::dup2_stdout(slave).map_err(fail("attach the terminal"))?;
    rustix::stdio::dup2_stderr(slave).map_err(fail("attach the terminal"))
}

fn redirect_stdin_to_null() -> Result<(), InitFailure> {
    let null = rustix::fs::open("/dev/null", rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty())
        .map_err(fail("open /dev/null"))?;
    rustix::stdio::dup2_stdin(&null).map_err(fail("redirect stdin"))
}

fn switch_user(user: &User) -> Result<(), InitFailure> {
    let groups: Vec<rustix::fs::Gid> = user.groups.iter().map(|&g| rustix::fs::Gid::from_raw(g)).collect();
    rthread::set_thread_groups(&groups).map_err(fail("setgroups"))?;
    let gid = rustix::fs::Gid::from_raw(user.gid);
    rthread::set_thread_res_gid(gid, gid, gid).map_err(fail("setresgid"))?;
    let uid = rustix::fs::Uid::from_raw(user.uid);
    rthread::set_thread_res_uid(uid, uid, uid).map_err(fail("setresuid"))
}

/// Every inherited descriptor above 2 is closed at exec (runc marks them CLOEXEC; the
/// sync socket is CLOEXEC already, and its closing tells the parent exec succeeded).
fn cloexec_all_fds() -> Result<(), InitFailure> {
    crate::sys::process::cloexec_from(3).map_err(fail("mark descriptors close-on-exec"))
}

fn with_home(env: &[String], home: &str) -> Vec<String> {
    let mut env = env.to_vec();
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    env
}

/// Resolves argv[0] along the container's PATH, as Docker does before exec.
fn find_program(arg0: &str, env: &[String], files: &RootFiles) -> Result<PathBuf, InitFailure> {
    if arg0.contains('/') {
        return Ok(arg0.into());
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(super::process::DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(arg0);
        if files.executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(InitFailure {
        code: 127,
        message: format!("exec: {arg0:?}: executable file not found in $PATH"),
    })
}

fn exec_failure(arg0: &str, err: io::Error) -> InitFailure {
    let code = match err.kind() {
        io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    InitFailure {
        code,
        message: format!("exec {arg0:?}: {err}"),
    }
}
