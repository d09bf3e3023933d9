//! Process-level syscalls rustix does not wrap: clone into new namespaces, bringing up
//! the loopback interface, and recursive read-only bind mounts.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Which side of a clone we are on.
pub enum Cloned {
    Child,
    Parent { pid: rustix::process::Pid, pidfd: OwnedFd },
}

/// Forks into new namespaces (`flags` are CLONE_NEW* bits), like fork(2) but with the
/// child already inside them: as pid 1 of a new pid namespace when CLONE_NEWPID is set.
/// With `cgroup` (an fd of a cgroup2 directory) the child is born in that cgroup
/// (CLONE_INTO_CGROUP), which avoids migrating it later: a migration waits for an RCU
/// grace period, milliseconds on a small machine. Returns the child's pid and a pidfd.
///
/// Refuses to run in a multi-threaded process: a child of one may inherit a lock (in the
/// allocator, in logging) held by a thread that does not exist in the child, and hang.
pub fn clone_into_namespaces(flags: i32, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Cloned> {
    ensure_single_threaded()?;
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags as u64 | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM and with no stack behaves like fork(2): the child
    // gets a copy of the address space and continues on its copy of this stack. With a
    // single thread (checked above) no lock can be held by a thread missing from the
    // child. `args` and `pidfd` outlive the call; the kernel writes only `pidfd`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Cloned::Child),
        pid => Ok(Cloned::Parent {
            pid: rustix::process::Pid::from_raw(pid as i32).expect("clone3 returned a positive pid"),
            // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor we now own.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of linux/sched.h (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Fails unless this process has exactly one thread.
///
/// A thread that was just joined (an image pull's workers) has finished its work, but
/// the kernel may count it for a few more microseconds until it is reaped, so extra
/// threads get up to ~50 ms to vanish before this gives up.
pub fn ensure_single_threaded() -> io::Result<()> {
    let mut n = thread_count()?;
    for _ in 0..50 {
        if n == 1 {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        n = thread_count()?;
    }
    Err(io::Error::other(format!(
        "cannot create namespaces from a process with {n} threads; \
         use sandbox::launcher::Launcher from a multi-threaded process"
    )))
}

/// Whether the calling process has one thread, as entering another mount namespace
/// (setns) requires.
pub fn is_single_threaded() -> bool {
    thread_count().is_ok_and(|n| n == 1)
}

/// /proc/self/task's link count is two plus one per thread (procfs' task directory
/// counts them in its getattr): one stat, where /proc/self/status would be generated
/// whole, read and parsed, on the path of every launch.
fn thread_count() -> io::Result<usize> {
    let task = rustix::fs::stat("/proc/self/task")?;
    Ok((task.st_nlink as usize).saturating_sub(2))
}

/// Blocks `signals` in the calling thread and returns a signalfd (nonblocking,
/// close-on-exec) that reports them instead; [`read_signal`] takes them from it. A
/// blocked signal stays pending until read: nothing of petri's runs in a handler, and
/// one descriptor replaces a handler and a wakeup pipe per signal. A child forked
/// afterwards inherits the mask, which exec (std's) clears.
pub fn signalfd_for(signals: &[i32]) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; sigemptyset and sigaddset only write to it.
    unsafe {
        libc::sigemptyset(&mut set);
        for &signal in signals {
            if libc::sigaddset(&mut set, signal) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: pthread_sigmask reads `set` and changes only the calling thread's mask.
    let blocked = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if blocked != 0 {
        return Err(io::Error::from_raw_os_error(blocked));
    }
    // SAFETY: signalfd(-1, ...) makes a new descriptor from `set`, which it only reads.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The next pending signal of a [`signalfd_for`] descriptor; `None` when there is none.
pub fn read_signal(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    match rustix::io::read(fd, &mut info) {
        // ssi_signo, the struct's first field.
        Ok(n) if n == info.len() => Ok(Some(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32)),
        Ok(n) => Err(io::Error::other(format!("short read of {n} bytes from a signalfd"))),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets IFF_UP on the loopback interface of the network namespace `sock` was made in
/// (an ioctl acts on its socket's namespace, whichever the caller is in).
pub fn loopback_up(sock: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which lives across the calls
    // and is the ifreq these requests expect; the socket is valid for the borrow.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Makes the mount at `fd` and every mount beneath it read-only, nosuid and nodev in one
/// atomic step (mount_setattr with AT_RECURSIVE, Linux 5.12+).
pub fn make_tree_readonly(fd: impl AsFd) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: mount_setattr reads `attr` (size passed) and the empty path; both outlive the
    // call, and the fd is borrowed for its duration.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_fd().as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec (close_range with
/// CLOSE_RANGE_CLOEXEC, Linux 5.11+).
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags here; it reads no memory.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ends the process at once, without running exit handlers or flushing buffers that
/// belong to the parent's copy of the address space (for a cloned child that failed).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// unshare(2) of the cgroup, the network or the mount namespace: they change only which
/// cgroups, network and mounts the caller sees, never its memory, open files or
/// anything else the Rust runtime relies on, so unlike other flags they are safe at any
/// point. A new mount namespace comes with the calling thread's own root and working
/// directory (the kernel unshares them along), in a multi-threaded process too.
pub fn unshare_namespace(ns: SharedView) -> io::Result<()> {
    let flags = match ns {
        SharedView::Cgroup => rustix::thread::UnshareFlags::NEWCGROUP,
        SharedView::Network => rustix::thread::UnshareFlags::NEWNET,
        SharedView::Mount => rustix::thread::UnshareFlags::NEWNS,
    };
    // SAFETY: see above; none of the flags touches the address space or the fd table.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(io::Error::from)
}

/// The namespaces [`unshare_namespace`] makes.
pub enum SharedView {
    Cgroup,
    Network,
    /// Used by tests, to mount in a thread's own namespace.
    Mount,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_threads() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap();
        line.trim().parse().unwrap()
    }

    /// The link count agrees with /proc/self/status's Threads: line, while other tests'
    /// threads come and go: taken between two equal readings of the line.
    #[test]
    fn thread_count_is_the_kernels() {
        let _extra = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        for _ in 0..100 {
            let before = status_threads();
            let counted = thread_count().unwrap();
            if status_threads() == before {
                assert_eq!(counted, before);
                assert!(counted >= 2, "this test's thread and the one it started");
                return;
            }
        }
        panic!("the thread count never held still");
    }

    /// A blocked signal sent to the thread is read back from the signalfd, once. In a
    /// thread of its own, whose mask goes with it.
    #[test]
    fn a_blocked_signal_is_read_from_the_signalfd() {
        std::thread::spawn(|| {
            let fd = signalfd_for(&[libc::SIGUSR2]).unwrap();
            assert_eq!(read_signal(fd.as_fd()).unwrap(), None);
            // SAFETY: raise sends SIGUSR2 to this thread, which has it blocked.
            assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
            assert_eq!(read_signal(fd.as_fd()).unwrap(), Some(libc::SIGUSR2));
            assert_eq!(read_signal(fd.as_fd()).unwrap(), None);
        })
        .join()
        .unwrap();
    }
}
