//! The launcher's half. [`fork`]: make the cgroup2 directory and clone into new
//! namespaces (born in the cgroup2 directory), before the spec is complete, so that the
//! child builds its network namespace while the caller resolves the image.
//! [`Forked::launch`]: prepare the bundle, mount the overlay root (detached) and send the
//! child its plan (the parts of the spec it acts on) with that root and a scratch tmpfs
//! holding the generated /etc files and the directories of the container's other small
//! tmpfs (`plan::Scratch`), over a SOCK_SEQPACKET socketpair; then, while the child
//! attaches its root and mounts proc, sysfs, /dev and /etc's files on another CPU, make
//! the v1 directories and set the limits, and send the go message (the child then joins
//! the v1 hierarchies itself). While the child mounts /sys/fs/cgroup, bring lo up in its
//! network namespace (on a socket it made there), fill /dev and build its devpts and shm
//! as detached mounts, and send those as the third message; while it makes those mounts
//! and pivots, work out through the overlay root who its process runs as and the program
//! to exec, and send that as the fourth (`init::resolve`), then compile the seccomp
//! filter and send it as the fifth; once the child has pivoted, detach its old root from
//! inside its mount namespace and say so in the sixth ([`detach_old_root`]); then ready a
//! pooled bundle for a later `--rm` run (`bundle::tidy`), learn over the same socket
//! whether exec succeeded (EOF with no message means it did), wait, signal, and clean
//! up: the cgroup and everything in it, and the bundle when asked.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use rustix::thread::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};

use super::{base, bundle, channel, init, mounts, plan, security, Network, SandboxError, SandboxSpec};
use crate::cgroup::{Cgroup, CgroupMounts, Hierarchy, Limits, OomCounter, PendingCgroup};
use crate::sys::process::{clone_into_namespaces, ensure_single_threaded, exit_now, is_single_threaded, Cloned};

/// How the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exit {
    /// The exit status, or 128 + signal when killed (Docker's convention).
    pub code: i32,
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed something in the container.
    pub oom_killed: bool,
}

/// A started sandbox. Dropping it without `cleanup` leaves the cgroup behind.
pub struct Running {
    pid: Pid,
    pidfd: OwnedFd,
    cgroup: Cgroup,
    /// Opened while the child started, for [`Running::wait`].
    oom: Option<OomCounter>,
    tty: Option<OwnedFd>,
    /// The bundle and the pool it goes back to, when cleanup removes it
    /// (`SandboxSpec::remove`).
    remove: Option<(PathBuf, Option<PathBuf>)>,
}

/// Starts the sandbox: [`fork`], then [`Forked::launch`]. Must be called from a
/// single-threaded process. When the start fails, the bundle directory it prepared is
/// removed again.
pub fn launch(spec: &SandboxSpec, hierarchy: &Hierarchy) -> Result<Running, SandboxError> {
    fork(&spec.id, spec.network, &spec.limits, hierarchy)?.launch(spec)
}

/// A sandbox whose process is cloned into its namespaces before the rest of its spec is
/// known. The child makes its network namespace (most of a millisecond of kernel work)
/// and its mount namespace's propagation while the caller resolves the image and builds
/// the spec on the other CPU; [`Forked::launch`] then sends it the spec and starts it.
/// Dropped without `launch`, it kills the child and removes the cgroup directory.
pub struct Forked {
    id: String,
    network: Network,
    limits: Limits,
    /// `None` once the sandbox started (or was killed).
    child: Option<(Pid, OwnedFd, OwnedFd)>,
    /// `None` once `launch` took it.
    pending: Option<PendingCgroup>,
    /// The host's cgroup mounts, which the child rebuilds as /sys/fs/cgroup.
    cgroup_mounts: CgroupMounts,
    /// The v1 `tasks` files the child joins (`PendingCgroup::v1_task_files`).
    task_files: Vec<PathBuf>,
    placement: Option<Placement>,
}

/// Clones sandbox `id`'s process into new pid, mount, uts, ipc (and, for
/// [`Network::Isolated`], network) namespaces, in its cgroup2 directory when the host
/// has one (the v1 hierarchies it joins later). Must be called from a single-threaded
/// process; the caller may start threads afterwards, `launch` forks nothing.
pub fn fork(id: &str, network: Network, limits: &Limits, hierarchy: &Hierarchy) -> Result<Forked, SandboxError> {
    ensure_single_threaded().map_err(|source| SandboxError::Sys { op: "launch", source })?;
    let pending = hierarchy.begin(id, limits)?;
    let placement = Placement::new();
    let cgroup_mounts = hierarchy.mounts();
    let task_files = pending.v1_task_files();
    match clone_child(network, &cgroup_mounts, &task_files, &pending, placement.as_ref()) {
        Ok(child) => Ok(Forked {
            id: id.to_string(),
            network,
            limits: limits.clone(),
            child: Some(child),
            pending: Some(pending),
            cgroup_mounts,
            task_files,
            placement,
        }),
        Err(e) => {
            let _ = pending.abandon();
            Err(e)
        }
    }
}

/// The pool of empty bundles, for a sandbox whose bundle is thrown away.
fn pool(spec: &SandboxSpec) -> Option<&Path> {
    spec.pool.as_deref().filter(|_| spec.remove)
}

impl Forked {
    /// Starts the forked process on `spec`, whose id, network and limits must be the
    /// ones it was forked with. When the start fails, the child is killed and the
    /// bundle directory it prepared is removed again.
    pub fn launch(mut self, spec: &SandboxSpec) -> Result<Running, SandboxError> {
        if (spec.id.as_str(), spec.network, &spec.limits) != (self.id.as_str(), self.network, &self.limits) {
            return Err(SandboxError::Sys {
                op: "launch",
                source: io::Error::other(format!(
                    "spec {} differs from the sandbox {} was forked for (id, network or limits)",
                    spec.id, self.id
                )),
            });
        }
        let started = bundle::prepare(&spec.bundle, pool(spec)).and_then(|()| self.start(spec));
        if started.is_err() {
            let _ = fs::remove_dir_all(&spec.bundle);
        }
        started
    }

    fn start(&mut self, spec: &SandboxSpec) -> Result<Running, SandboxError> {
        let base = base::ensure(&spec.layers_dir).map_err(io_err("create the base layer in", &spec.layers_dir))?;
        // Held until the go message is sent; dropping it gives the launcher its CPUs back.
        let pinned = self.placement.as_ref().and_then(Placement::pin_launcher);
        let sock = &self.child.as_ref().expect("a forked child until it starts").2;
        let lower: Vec<String> = std::iter::once(base).chain(spec.lower.iter().cloned()).collect();
        let scratch = mounts::build_scratch(&etc_files(spec)).map_err(mount_err)?;
        let root = mounts::build_overlay(&spec.layers_dir, &lower, &spec.bundle, spec.remove).map_err(mount_err)?;
        let dev = mounts::clone_dev(&scratch).map_err(mount_err)?;
        send_plan(sock, spec, lower, [&scratch, &dev], root.as_ref())?;
        // The limits are set here while the child attaches its root and makes its first
        // mounts on the other core; it waits for the go message before it joins the v1
        // hierarchies, through their `tasks` files opened here, and mounts them on the
        // mount points made here.
        let pending = self.pending.take().expect("a pending cgroup until it starts");
        let cgroup = pending.finish().map_err(|e| self.kill(e.into()))?;
        let ready = open_task_files(&self.task_files).and_then(|tasks| {
            let points = plan::cgroup_mount_points(&self.cgroup_mounts)
                .into_iter()
                .map(|(name, _)| name);
            mounts::make_cgroup_mount_points(&scratch, points).map_err(mount_err)?;
            Ok(tasks)
        });
        drop(scratch);
        let tasks = match ready {
            Ok(tasks) => tasks,
            Err(e) => {
                let e = self.kill(e);
                let _ = cgroup.destroy();
                return Err(e);
            }
        };
        let sock = &self.child.as_ref().expect("a forked child until it starts").2;
        let tasks: Vec<BorrowedFd> = tasks.iter().map(|fd| fd.as_fd()).collect();
        let sent = send(sock, b"G", &tasks, "send the go message to the container process");
        drop(pinned);
        // While the child joins its cgroups and mounts /sys/fs/cgroup: lo comes up in its
        // network namespace, and /dev is filled and its mounts built for the third
        // message, which the child waits for before it mounts in /dev.
        let networked = sent.and_then(|()| {
            if spec.network == Network::Isolated {
                bring_up_loopback(sock)?;
            }
            let in_dev = mounts::build_dev(&dev, spec.shm_bytes).map_err(mount_err)?;
            send_dev(sock, &in_dev)
        });
        // The child makes its last mounts and pivots before it needs the user (the fourth
        // message), and sets up its process before it needs the seccomp filter (the fifth)
        // and the word that its old root is detached (the sixth, `detach_old_root`).
        let detaches = is_single_threaded();
        let mut heard = Heard::default();
        let resolved = networked
            .and_then(|()| send_resolved(sock, spec, root.as_ref(), detaches))
            .and_then(|()| send_filter(sock))
            .and_then(|()| read_child(sock, &mut heard, Until::Pivot))
            .and_then(|()| {
                if let (true, Some((_, pidfd, _))) = (detaches, self.child.as_ref()) {
                    detach_old_root(pidfd.as_fd())?;
                    send(sock, b"U", &[], "tell the container process its old root is detached")?;
                }
                // Only now: on a disk that discards synchronously, removing the marker
                // waits for the disk, and the child waited for the detach meanwhile.
                if heard.mounted {
                    bundle::drop_volatile_marker(&spec.bundle);
                }
                Ok(())
            });
        drop(root);
        let oom = resolved.and_then(|()| Ok(cgroup.oom_counter()?));
        // Until the child execs the launcher has nothing to do: it readies a pooled bundle
        // for a later run meanwhile (a tty's size is set already, `read_child`).
        if let Some(pool) = pool(spec) {
            bundle::tidy(pool);
        }
        let outcome = oom.and_then(|oom| {
            read_child(sock, &mut heard, Until::Exec)?;
            Ok((oom, heard.tty.take()))
        });
        match outcome {
            Ok((oom, tty)) => {
                let (pid, pidfd, _) = self.child.take().expect("a forked child until it starts");
                Ok(Running {
                    pid,
                    pidfd,
                    cgroup,
                    oom,
                    tty,
                    remove: spec
                        .remove
                        .then(|| (spec.bundle.clone(), pool(spec).map(Path::to_path_buf))),
                })
            }
            Err(e) => {
                let e = self.kill(e);
                let _ = cgroup.destroy();
                Err(e)
            }
        }
    }

    /// Kills and reaps the child (before its cgroup can be removed); returns `e`.
    fn kill(&mut self, e: SandboxError) -> SandboxError {
        self.kill_child();
        e
    }

    fn kill_child(&mut self) {
        if let Some((_, pidfd, _)) = self.child.take() {
            let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
            let _ = rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED);
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        self.kill_child();
        if let Some(pending) = self.pending.take() {
            let _ = pending.abandon();
        }
    }
}

/// Clones the child into its new namespaces (the network namespace it makes itself,
/// while the launcher goes on) and starts it on [`init::run`]. Returns the child's pid,
/// a pidfd, and the parent's end of the sync socket.
fn clone_child(
    network: Network,
    cgroup_mounts: &CgroupMounts,
    task_files: &[PathBuf],
    cgroup: &PendingCgroup,
    placement: Option<&Placement>,
) -> Result<(Pid, OwnedFd, OwnedFd), SandboxError> {
    let (ours, theirs) = socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
        .map_err(sys("create the sync socketpair"))?;
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    let unified = match cgroup.unified_dir() {
        Some(dir) => Some(
            rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| io_err("open cgroup", dir)(e.into()))?,
        ),
        None => None,
    };
    let _ = io::stdout().flush();
    let cloned = clone_into_namespaces(flags, unified.as_ref().map(|fd| fd.as_fd()))
        .map_err(|source| SandboxError::Sys { op: "clone", source })?;
    match cloned {
        Cloned::Child => {
            if let Some(p) = placement {
                p.move_away(None);
            }
            drop(ours);
            let forked = init::AtFork {
                network,
                task_files,
                cgroups: cgroup_mounts,
                affinity: placement.map(|p| &p.allowed),
            };
            let failure = init::run(&forked, &theirs);
            let _ = rustix::io::write(&theirs, format!("{}:{}", failure.code, failure.message).as_bytes());
            exit_now(failure.code);
        }
        Cloned::Parent { pid, pidfd } => {
            if let Some(p) = placement {
                p.move_away(Some(pid));
            }
            Ok((pid, pidfd, ours))
        }
    }
}

/// Where the launcher and the child run until the go message. The two work in parallel
/// from the clone to the go message (the spec, the overlay and the cgroup limits beside
/// the network namespace), but the scheduler often puts a new
/// child on its parent's CPU, and a parent and child left free then drift onto one core
/// and take turns on it while another sits idle: measured on the project's 2-core VM,
/// that was most launches. So, when there is more than one CPU to use, the child is
/// moved off the CPU the launcher forked it on, and the launcher pins itself to that
/// CPU while it starts the child ([`Placement::pin_launcher`]; not before, as a caller
/// may pull an image between the fork and the launch). The child restores the
/// launcher's CPU set itself once the go message has come (`init::AtFork::affinity`),
/// before anything of the container's runs.
///
/// Both sides move the child, as whichever runs first after the clone must. A child
/// put on the launcher's CPU often takes it at once: when the launcher's time slice is
/// up, the scheduler picks the newcomer as the clone returns (traced on the project's
/// VM: 70 launches in 100, with the other CPU idle). Moved only by the launcher, such a
/// child had made its whole network namespace (~0.4 ms) before the launcher ran again;
/// moving itself as its first act hands the CPU back within ~0.07 ms (the migration
/// and the wakeup of the idle CPU). A child that does not run first is queued behind
/// the launcher, which moves it as soon as the clone returns.
struct Placement {
    /// The launcher's CPU set, which both end up with again.
    allowed: CpuSet,
    launcher_cpu: usize,
}

impl Placement {
    /// `None` when there is no other CPU for the child.
    fn new() -> Option<Self> {
        let allowed = sched_getaffinity(None).ok()?;
        (allowed.count() >= 2).then(|| Placement {
            allowed,
            launcher_cpu: sched_getcpu(),
        })
    }

    /// Moves `child` (`None`: the calling child itself) off the launcher's CPU. Best
    /// effort: a child that stays on the launcher's CPU is only slower to start.
    fn move_away(&self, child: Option<Pid>) {
        let mut elsewhere = self.allowed;
        elsewhere.unset(self.launcher_cpu);
        let _ = sched_setaffinity(child, &elsewhere);
    }

    /// Pins the launcher to the CPU the child was moved off; `None` if it cannot be.
    fn pin_launcher(&self) -> Option<Pinned> {
        let mut here = CpuSet::new();
        here.set(self.launcher_cpu);
        sched_setaffinity(None, &here).ok()?;
        Some(Pinned { allowed: self.allowed })
    }
}

/// The launcher's pin; dropping it gives the launcher its CPU set back.
struct Pinned {
    allowed: CpuSet,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = sched_setaffinity(None, &self.allowed);
    }
}

/// The v1 hierarchies' `tasks` files of the container's cgroup, opened write-only for
/// the child to join them through (`PendingCgroup::v1_task_files`).
fn open_task_files(files: &[PathBuf]) -> Result<Vec<OwnedFd>, SandboxError> {
    files
        .iter()
        .map(|file| {
            rustix::fs::open(file, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| io_err("open", file)(e.into()))
        })
        .collect()
}

/// Sends the child what it needs once the spec is known: its plan, whose overlay lower
/// directories are `lower` (base layer first), the scratch tmpfs and /dev
/// (`mounts::clone_dev`), and the overlay root when the launcher could build it.
fn send_plan(
    sock: &OwnedFd,
    spec: &SandboxSpec,
    lower: Vec<String>,
    scratch_and_dev: [&OwnedFd; 2],
    root: Option<&OwnedFd>,
) -> Result<(), SandboxError> {
    let bytes = serde_json::to_vec(&init::Plan::new(spec, lower)).map_err(|e| SandboxError::Sys {
        op: "encode the plan for the container process",
        source: e.into(),
    })?;
    let fds: Vec<BorrowedFd> = scratch_and_dev.into_iter().chain(root).map(|fd| fd.as_fd()).collect();
    send(sock, &bytes, &fds, "send the plan to the container process")
}

/// The contents of the generated files, in the order of [`super::plan::GENERATED`]
/// (/etc/hostname, /etc/hosts, /etc/resolv.conf). They live on the scratch tmpfs, never
/// on disk.
fn etc_files(spec: &SandboxSpec) -> [String; 3] {
    let name = &spec.hostname;
    let hosts = match spec.network {
        Network::Isolated => {
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{name}\n")
        }
        Network::Host => fs::read_to_string("/etc/hosts").unwrap_or_default(),
    };
    let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    [format!("{name}\n"), hosts, resolv]
}

/// The third message to the child ("D"): the detached mounts of /dev to attach.
fn send_dev(sock: &OwnedFd, dev: &[(&str, OwnedFd)]) -> Result<(), SandboxError> {
    let fds: Vec<BorrowedFd> = dev.iter().map(|(_, fd)| fd.as_fd()).collect();
    send(sock, b"D", &fds, "send /dev to the container process")
}

/// The fifth message to the child: the seccomp filter it installs just before exec. Compiled here, after the messages the child needs sooner, as the child's path
/// to exec is longer from here than the launcher's.
fn send_filter(sock: &OwnedFd) -> Result<(), SandboxError> {
    let filter = security::default_filter()?;
    send(
        sock,
        &security::filter_bytes(&filter),
        &[],
        "send the seccomp filter to the container process",
    )
}

/// The fourth message to the child: who its process runs as and the program to exec,
/// worked out through the overlay `root` where that is the container's view
/// (`init::resolve`), and its open-files limit.
fn send_resolved(
    sock: &OwnedFd,
    spec: &SandboxSpec,
    root: Option<&OwnedFd>,
    detaches: bool,
) -> Result<(), SandboxError> {
    let binds = !spec.binds.is_empty();
    let resolved =
        init::resolve(&spec.process, root.map(|r| r.as_fd()), binds, detaches).map_err(|f| SandboxError::Init {
            code: f.code,
            message: f.message,
        })?;
    let bytes = serde_json::to_vec(&resolved).map_err(|e| SandboxError::Sys {
        op: "encode the user and program for the container process",
        source: e.into(),
    })?;
    send(sock, &bytes, &[], "send the user and program to the container process")
}

/// Detaches the child's old root, stacked on its new root since its pivot_root(".", ".")
/// (`init::pivot_root`), from inside the child's mount namespace, and comes back to the
/// launcher's own mount namespace, root and working directory. The detach waits for an
/// RCU grace period; here that is off the child's path to exec. The child's namespace
/// was made private at its start, so nothing of the detach propagates to the host.
fn detach_old_root(child: BorrowedFd) -> Result<(), SandboxError> {
    use rustix::thread::{
        move_into_link_name_space, move_into_thread_name_spaces, LinkNameSpaceType, ThreadNameSpaceType,
    };
    let open = |path: &str, flags: OFlags| {
        rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io_err("open", Path::new(path))(e.into()))
    };
    let own = open("/proc/self/ns/mnt", OFlags::RDONLY)?;
    let root = open("/", OFlags::PATH | OFlags::DIRECTORY)?;
    let cwd = open(".", OFlags::PATH | OFlags::DIRECTORY)?;
    move_into_thread_name_spaces(child, ThreadNameSpaceType::MOUNT)
        .map_err(sys("enter the container's mount namespace"))?;
    // setns put the root and working directory on the topmost mount on the namespace's
    // root: the old root.
    let detached = rustix::mount::unmount("/", rustix::mount::UnmountFlags::DETACH)
        .map_err(sys("detach the container's old root"));
    // Back, whatever happened. Nothing could go on in the container's mount namespace (the
    // cgroup's and the bundle's paths would be the container's), and coming back cannot
    // fail for a process that could go in.
    move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::Mount))
        .and_then(|()| rustix::process::fchdir(&root))
        .and_then(|()| rustix::process::chroot("."))
        .and_then(|()| rustix::process::fchdir(&cwd))
        .expect("return to petri's own mount namespace, root and working directory");
    detached
}

/// Sends one message with descriptors to the child (`channel::send`). A child that
/// already failed has closed its end: its reason is then what [`read_child`]
/// reports, so a refused send is not an error here.
fn send(sock: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd], op: &'static str) -> Result<(), SandboxError> {
    match channel::send(sock, bytes, fds) {
        Ok(()) | Err(rustix::io::Errno::PIPE) | Err(rustix::io::Errno::CONNRESET) => Ok(()),
        Err(e) => Err(sys(op)(e)),
    }
}

/// Brings lo up in the child's new network namespace while the child mounts its
/// filesystem: the child's first message ("N") carries a socket it made in that
/// namespace, on which the ioctl acts. Done here, its tenth of a millisecond is off the
/// child's path from the go message to exec; the third message, which follows, tells the
/// child it is done.
fn bring_up_loopback(sock: &OwnedFd) -> Result<(), SandboxError> {
    match receive_from_child(sock)? {
        (bytes, Some(socket)) if bytes == b"N" => {
            crate::sys::process::loopback_up(socket.as_fd()).map_err(|source| SandboxError::Sys {
                op: "bring up lo in the container's network namespace",
                source,
            })
        }
        (bytes, _) => Err(child_failure(&bytes)),
    }
}

/// What the child has said on the way ([`read_child`]).
#[derive(Default)]
struct Heard {
    /// Its root is mounted ("M", for a `--rm` sandbox without a tty): the volatile
    /// overlay's marker may go.
    mounted: bool,
    /// Its pty master, for a tty ("T", carrying the fd).
    tty: Option<OwnedFd>,
}

/// How far [`read_child`] reads.
#[derive(PartialEq)]
enum Until {
    /// Its "P": it pivoted into its root, with its tty open if it has one.
    Pivot,
    /// EOF: exec happened (the socket was close-on-exec).
    Exec,
}

/// Reads what the child says after its network namespace's socket ("N", read by
/// [`bring_up_loopback`]) until `until`, noting in `heard` what comes on the way; a
/// "CODE:why" (or EOF before its "P") is its failure. A tty takes the size of petri's
/// own terminal as soon as it comes, before the process can ask (it comes before "P",
/// and the child execs only after the launcher has answered that).
fn read_child(sock: &OwnedFd, heard: &mut Heard, until: Until) -> Result<(), SandboxError> {
    loop {
        let (bytes, fd) = receive_from_child(sock)?;
        match bytes.as_slice() {
            b"T" => {
                if let (Some(t), Ok(size)) = (&fd, rustix::termios::tcgetwinsize(rustix::stdio::stdout())) {
                    let _ = rustix::termios::tcsetwinsize(t, size);
                }
                if fd.is_some() {
                    heard.tty = fd;
                }
            }
            b"M" => heard.mounted = true,
            b"P" if until == Until::Pivot => return Ok(()),
            [] if until == Until::Exec => return Ok(()),
            text => return Err(child_failure(text)),
        }
    }
}

/// One message from the child (`channel::receive`), with the descriptor it carries if
/// any; EOF gives no bytes.
fn receive_from_child(sock: &OwnedFd) -> Result<(Vec<u8>, Option<OwnedFd>), SandboxError> {
    let (bytes, fds) = channel::receive(sock).map_err(|source| SandboxError::Sys {
        op: "read from the container process",
        source,
    })?;
    Ok((bytes, fds.into_iter().next()))
}

/// The child's report of its failure, "CODE:why"; nothing at all where a word was due.
fn child_failure(text: &[u8]) -> SandboxError {
    if text.is_empty() {
        return SandboxError::Init {
            code: 125,
            message: "the container process ended before it was set up".into(),
        };
    }
    let text = String::from_utf8_lossy(text);
    let (code, message) = text.split_once(':').unwrap_or(("125", &text));
    SandboxError::Init {
        code: code.parse().unwrap_or(125),
        message: message.to_string(),
    }
}

impl Running {
    /// The container process's pid in petri's pid namespace.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// A pidfd of the container process: readable once it has exited.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The pseudo-terminal master when the process has a tty: its output, and its input.
    pub fn tty(&self) -> Option<BorrowedFd<'_>> {
        self.tty.as_ref().map(|t| t.as_fd())
    }

    pub fn signal(&self, signal: Signal) -> Result<(), SandboxError> {
        rustix::process::pidfd_send_signal(&self.pidfd, signal).map_err(sys("send a signal to the container"))
    }

    pub fn cpu_usage(&self) -> Result<Duration, SandboxError> {
        Ok(self.cgroup.cpu_usage()?)
    }

    /// Waits for the container's process to exit (blocking).
    pub fn wait(&self) -> Result<Exit, SandboxError> {
        let status = loop {
            match rustix::process::waitid(WaitId::PidFd(self.pidfd.as_fd()), WaitIdOptions::EXITED) {
                Ok(Some(status)) => break status,
                Ok(None) => continue,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(sys("wait for the container")(e)),
            }
        };
        let signal = status.terminating_signal();
        let code = match (status.exit_status(), signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 125,
        };
        Ok(Exit {
            code,
            signal,
            oom_killed: self.oom.as_ref().map_or(Ok(false), OomCounter::killed)?,
        })
    }

    /// Kills whatever is left in the container's cgroup and removes it; for a `--rm`
    /// sandbox, removes what the container wrote and the bundle (`bundle::release`).
    pub fn cleanup(self) -> Result<(), SandboxError> {
        self.cgroup.destroy()?;
        if let Some((bundle, pool)) = &self.remove {
            bundle::release(bundle, pool.as_deref())?;
        }
        Ok(())
    }
}

fn mount_err(e: mounts::MountError) -> SandboxError {
    SandboxError::Io {
        op: e.op,
        path: e.target.into(),
        source: e.source,
    }
}

fn sys(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> SandboxError {
    move |e| SandboxError::Sys { op, source: e.into() }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
