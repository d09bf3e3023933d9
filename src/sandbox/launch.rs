//! The launcher's half: prepare the bundle and the cgroup2 directory, clone into new
//! namespaces (born in the cgroup2 directory), then, while the child builds its network
//! namespace and root on another CPU, make the v1 directories, set the limits, compile
//! the seccomp filter and build the container's /dev as detached mounts, and send it all
//! in the go message over a SOCK_SEQPACKET socketpair (the child then joins the v1
//! hierarchies itself and attaches /dev). While the child mounts and execs, ready a
//! pooled bundle for a later `--rm` run (`bundle::tidy`); learn over the same socket
//! whether exec succeeded (EOF with no message means it did), then wait, signal, and
//! clean up: the cgroup and everything in it, and the bundle when asked.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use rustix::thread::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};

use super::{base, bundle, init, mounts, plan, security, Network, SandboxError, SandboxSpec};
use crate::cgroup::{Cgroup, Hierarchy, PendingCgroup};
use crate::sys::process::{clone_into_namespaces, ensure_single_threaded, exit_now, Cloned};

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
    tty: Option<OwnedFd>,
    /// The bundle and the pool it goes back to, when cleanup removes it
    /// (`SandboxSpec::remove`).
    remove: Option<(PathBuf, Option<PathBuf>)>,
}

/// Starts the sandbox. Must be called from a single-threaded process. When the start
/// fails, the bundle directory it prepared is removed again.
pub fn launch(spec: &SandboxSpec, hierarchy: &Hierarchy) -> Result<Running, SandboxError> {
    ensure_single_threaded().map_err(|source| SandboxError::Sys { op: "launch", source })?;
    let started = bundle::prepare(&spec.bundle, pool(spec)).and_then(|()| launch_prepared(spec, hierarchy));
    if started.is_err() {
        let _ = fs::remove_dir_all(&spec.bundle);
    }
    started
}

/// The pool of empty bundles, for a sandbox whose bundle is thrown away.
fn pool(spec: &SandboxSpec) -> Option<&Path> {
    spec.pool.as_deref().filter(|_| spec.remove)
}

fn launch_prepared(spec: &SandboxSpec, hierarchy: &Hierarchy) -> Result<Running, SandboxError> {
    let base = base::ensure(&spec.layers_dir).map_err(io_err("create the base layer in", &spec.layers_dir))?;
    let pending = hierarchy.begin(&spec.id, &spec.limits)?;
    // Held until the go message is sent; dropping it gives the launcher its CPUs back.
    let placement = Placement::pin_launcher();
    let (pid, pidfd, sock) = match clone_child(spec, &base, hierarchy, &pending, placement.as_ref()) {
        Ok(cloned) => cloned,
        Err(e) => {
            let _ = pending.abandon();
            return Err(e);
        }
    };
    let kill = |e: SandboxError| {
        let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
        let _ = rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED);
        e
    };
    // The limits are set here while the child builds its namespaces and root on the
    // other core; it waits for the go message (which carries the seccomp filter) before
    // it joins the v1 hierarchies and execs.
    let filter = match security::default_filter() {
        Ok(f) => f,
        Err(e) => {
            let _ = pending.abandon();
            return Err(kill(e.into()));
        }
    };
    let cgroup = pending.finish().map_err(|e| kill(e.into()))?;
    let dev = match mounts::build_dev(spec.shm_bytes) {
        Ok(dev) => dev,
        Err(e) => {
            let e = kill(SandboxError::Io {
                op: e.op,
                path: e.target.into(),
                source: e.source,
            });
            let _ = cgroup.destroy();
            return Err(e);
        }
    };
    let sent = send_go(&sock, &filter, &dev);
    drop(dev);
    drop(placement);
    // Until the child execs the launcher has nothing to do: it readies a pooled bundle
    // for a later run meanwhile. Not with a tty, whose size is set as soon as it comes.
    if let (Some(pool), false) = (pool(spec), spec.process.tty) {
        bundle::tidy(pool);
    }
    let outcome = sent.and_then(|()| read_outcome(&sock, || bundle::drop_volatile_marker(&spec.bundle)));
    match outcome {
        Ok(tty) => Ok(Running {
            pid,
            pidfd,
            cgroup,
            tty,
            remove: spec
                .remove
                .then(|| (spec.bundle.clone(), pool(spec).map(Path::to_path_buf))),
        }),
        Err(e) => {
            let e = kill(e);
            let _ = cgroup.destroy();
            Err(e)
        }
    }
}

/// Clones the child into its new namespaces (the network namespace it makes itself, so
/// that the parent's cgroup work overlaps it) and starts it on [`init::run`]. Returns
/// the child's pid, a pidfd, and the parent's end of the sync socket.
fn clone_child(
    spec: &SandboxSpec,
    base: &str,
    hierarchy: &Hierarchy,
    cgroup: &PendingCgroup,
    placement: Option<&Placement>,
) -> Result<(Pid, OwnedFd, OwnedFd), SandboxError> {
    let (ours, theirs) = socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
        .map_err(sys("create the sync socketpair"))?;
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    let cgroup_mounts = hierarchy.mounts();
    let task_files = cgroup.v1_task_files();
    let etc = etc_files(spec);
    let lower: Vec<&str> = std::iter::once(base)
        .chain(spec.lower.iter().map(String::as_str))
        .collect();
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
            drop(ours);
            let prepared = init::Prepared {
                lower: &lower,
                task_files: &task_files,
                cgroups: &cgroup_mounts,
                etc: &etc,
                affinity: placement.map(|p| &p.allowed),
            };
            let failure = init::run(spec, &prepared, &theirs);
            let _ = rustix::io::write(&theirs, format!("{}:{}", failure.code, failure.message).as_bytes());
            exit_now(failure.code);
        }
        Cloned::Parent { pid, pidfd } => {
            if let Some(p) = placement {
                p.move_away(pid);
            }
            Ok((pid, pidfd, ours))
        }
    }
}

/// Where the launcher and the child run until the go message. The two work in parallel
/// from the clone to the go message (cgroup limits and the seccomp filter beside the
/// network namespace and the overlay), but the scheduler often puts a new child on its
/// parent's CPU, and a parent and child left free then drift onto one core and take
/// turns on it while another sits idle: measured on the project's 2-core VM, that was
/// most launches. So, when there is more than one CPU to use, the launcher pins itself
/// to the CPU it is on and the child to the others; the launcher's pin ends when this
/// is dropped, and the child restores the launcher's CPU set itself once the go message
/// has come (`init::Prepared::affinity`), before anything of the container's runs.
struct Placement {
    /// The launcher's CPU set, which both end up with again.
    allowed: CpuSet,
    launcher_cpu: usize,
}

impl Placement {
    /// `None` when there is no other CPU for the child, or the launcher cannot be pinned.
    fn pin_launcher() -> Option<Self> {
        let allowed = sched_getaffinity(None).ok()?;
        if allowed.count() < 2 {
            return None;
        }
        let launcher_cpu = sched_getcpu();
        let mut here = CpuSet::new();
        here.set(launcher_cpu);
        sched_setaffinity(None, &here).ok()?;
        Some(Placement { allowed, launcher_cpu })
    }

    /// Best effort: a child that stays on the launcher's CPU is only slower to start.
    fn move_away(&self, child: Pid) {
        let mut elsewhere = self.allowed;
        elsewhere.unset(self.launcher_cpu);
        let _ = sched_setaffinity(Some(child), &elsewhere);
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        let _ = sched_setaffinity(None, &self.allowed);
    }
}

/// Tells the child its cgroup is ready, handing it the seccomp filter to install and
/// the detached mounts of /dev to attach. A child that already failed has closed its
/// end: its reason is then what [`read_outcome`] reports, so a refused send is not an
/// error here.
fn send_go(sock: &OwnedFd, filter: &seccompiler::BpfProgram, dev: &[(&str, OwnedFd)]) -> Result<(), SandboxError> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds: Vec<BorrowedFd> = dev.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(plan::PREBUILT.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let bytes = security::filter_bytes(filter);
    match sendmsg(sock, &[io::IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL) {
        Ok(_) | Err(rustix::io::Errno::PIPE) | Err(rustix::io::Errno::CONNRESET) => Ok(()),
        Err(e) => Err(sys("send the go message to the container process")(e)),
    }
}

/// What the child says before exec: "M" once its root is mounted, for a `--rm` sandbox
/// without a tty (`root_mounted` is called then), its pty master for a tty (a "T"
/// message carrying the fd), then either EOF (exec happened: the socket was
/// close-on-exec) or "CODE:why".
fn read_outcome(sock: &OwnedFd, mut root_mounted: impl FnMut()) -> Result<Option<OwnedFd>, SandboxError> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut tty = None;
    loop {
        let mut buf = vec![0u8; 4096];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let n = recvmsg(
            sock,
            &mut [io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(sys("read from the container process"))?
        .bytes;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                tty = fds.into_iter().next();
            }
        }
        // The terminal takes the size of petri's own, before the process can ask.
        if let (Some(t), Ok(size)) = (&tty, rustix::termios::tcgetwinsize(rustix::stdio::stdout())) {
            let _ = rustix::termios::tcsetwinsize(t, size);
        }
        match &buf[..n] {
            [] => return Ok(tty),
            b"T" => continue,
            b"M" => root_mounted(),
            text => {
                let text = String::from_utf8_lossy(text);
                let (code, message) = text.split_once(':').unwrap_or(("125", &text));
                return Err(SandboxError::Init {
                    code: code.parse().unwrap_or(125),
                    message: message.to_string(),
                });
            }
        }
    }
}

/// The generated /etc/hostname, /etc/hosts and /etc/resolv.conf, by container path. The
/// child writes them to a tmpfs of its own: they never touch the disk.
fn etc_files(spec: &SandboxSpec) -> Vec<(&'static str, String)> {
    let name = &spec.hostname;
    let hosts = match spec.network {
        Network::Isolated => {
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{name}\n")
        }
        Network::Host => fs::read_to_string("/etc/hosts").unwrap_or_default(),
    };
    let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    vec![
        ("/etc/hostname", format!("{name}\n")),
        ("/etc/hosts", hosts),
        ("/etc/resolv.conf", resolv),
    ]
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
            oom_killed: self.cgroup.oom_killed()?,
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
