//! The last steps before exec: capabilities cut to Docker's default set, no_new_privs,
//! and a seccomp filter equivalent to Docker's default profile.
//!
//! Seccomp uses `seccompiler` (rust-vmm, the compiler behind Firecracker's jailer): pure
//! Rust, no libseccomp C library to install or link, maintained by people who run it in
//! production. It installs the filter and is the reference the tests hold petri's own
//! compact compiler (`seccomp`) to: seccompiler's linear programs cost ~1 ms to load per
//! container. The profile follows moby's `profiles/seccomp/default.json`: an allow list of the syscalls a
//! container needs with EPERM for the rest, so mount, unshare, setns, keyctl, bpf,
//! pivot_root, kexec, module loading and the like fail; `clone` is allowed only without
//! namespace flags, and `clone3` answers ENOSYS so libc falls back to `clone`.

use rustix::thread::{self as rthread, CapabilitySet, CapabilitySets};
use seccompiler::BpfProgram;

use super::seccomp::{self, Rule};

/// Docker's default capabilities.
pub const DEFAULT_CAPS: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::AUDIT_WRITE);

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("building the seccomp filter: {0}")]
    Seccomp(#[from] seccomp::TooLarge),
    #[error("installing the seccomp filter: {0}")]
    SeccompInstall(#[from] seccompiler::Error),
}

fn sys(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> SecurityError {
    move |e| SecurityError::Sys { op, source: e.into() }
}

/// Removes every capability outside the default set from the bounding set. Runs while
/// still fully privileged (it needs CAP_SETPCAP), before the switch of user.
pub fn drop_bounding_set() -> Result<(), SecurityError> {
    for cap in CapabilitySet::all().difference(DEFAULT_CAPS).iter() {
        match rthread::remove_capability_from_bounding_set(cap) {
            // EINVAL: a capability this kernel does not have.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(sys("drop capability from the bounding set")(e)),
        }
    }
    Ok(())
}

/// Sets effective, permitted and inheritable to the default set for a root process, or
/// clears them for any other user (Docker's behaviour), and no ambient capabilities.
pub fn set_capabilities(uid_is_root: bool) -> Result<(), SecurityError> {
    let set = if uid_is_root {
        DEFAULT_CAPS
    } else {
        CapabilitySet::empty()
    };
    rthread::set_capabilities(
        None,
        CapabilitySets {
            effective: set,
            permitted: set,
            inheritable: set,
        },
    )
    .map_err(sys("set capabilities"))
}

pub fn set_no_new_privs() -> Result<(), SecurityError> {
    rthread::set_no_new_privs(true).map_err(sys("set no_new_privs"))
}

/// Docker's allowed personas for personality(2).
const PERSONAS: &[u32] = &[0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];
/// clone(2) flags that create namespaces: clone is allowed only without them.
const CLONE_NAMESPACE_FLAGS: u32 = 0x7E02_0000;

/// The default profile as rules: the allow list, clone without namespace flags, the
/// harmless personas, and ENOSYS for clone3 (its flags live in memory where a filter
/// cannot look, so libc must fall back to clone). Everything else: EPERM.
fn default_rules() -> Vec<(u32, Rule)> {
    let mut rules: Vec<(u32, Rule)> = ALLOWED
        .iter()
        .chain(LEGACY)
        .map(|&nr| (nr as u32, Rule::Allow))
        .collect();
    rules.push((
        libc::SYS_clone as u32,
        Rule::AllowUnlessArg0Masked(CLONE_NAMESPACE_FLAGS),
    ));
    rules.push((libc::SYS_personality as u32, Rule::AllowIfArg0In(PERSONAS)));
    rules.push((libc::SYS_clone3 as u32, Rule::Errno(libc::ENOSYS as u32)));
    rules
}

/// Compiles the default profile for this machine's architecture.
pub fn default_filter() -> Result<BpfProgram, SecurityError> {
    Ok(seccomp::compile(&default_rules(), Rule::Errno(libc::EPERM as u32))?)
}

/// The filter as bytes, to hand to a cloned child: `struct sock_filter` in this
/// machine's layout, eight bytes an instruction.
pub fn filter_bytes(filter: &BpfProgram) -> Vec<u8> {
    filter
        .iter()
        .flat_map(|i| {
            let mut b = [0u8; 8];
            b[..2].copy_from_slice(&i.code.to_ne_bytes());
            b[2] = i.jt;
            b[3] = i.jf;
            b[4..].copy_from_slice(&i.k.to_ne_bytes());
            b
        })
        .collect()
}

/// The inverse of [`filter_bytes`]; `None` when `bytes` is not a whole, non-empty
/// number of instructions.
pub fn filter_from_bytes(bytes: &[u8]) -> Option<BpfProgram> {
    if bytes.is_empty() || bytes.len() % 8 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|b| seccompiler::sock_filter {
                code: u16::from_ne_bytes([b[0], b[1]]),
                jt: b[2],
                jf: b[3],
                k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            })
            .collect(),
    )
}

/// Installs the filter (after no_new_privs, as the last step before exec).
pub fn install_filter(filter: &BpfProgram) -> Result<(), SecurityError> {
    Ok(seccompiler::apply_filter(filter)?)
}

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => { &[$(libc::$name),*] };
}

/// Docker's default allow list (syscalls without argument conditions), by number.
const ALLOWED: &[i64] = syscalls![
    SYS_accept,
    SYS_accept4,
    SYS_acct,
    SYS_adjtimex,
    SYS_bind,
    SYS_brk,
    SYS_capget,
    SYS_capset,
    SYS_chdir,
    SYS_chroot,
    SYS_clock_adjtime,
    SYS_clock_getres,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_close,
    SYS_close_range,
    SYS_connect,
    SYS_copy_file_range,
    SYS_dup,
    SYS_dup3,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_eventfd2,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_fadvise64,
    SYS_fallocate,
    SYS_fanotify_mark,
    SYS_fchdir,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchown,
    SYS_fchownat,
    SYS_fcntl,
    SYS_fdatasync,
    SYS_fgetxattr,
    SYS_flistxattr,
    SYS_flock,
    SYS_fremovexattr,
    SYS_fsetxattr,
    SYS_fstat,
    SYS_fstatfs,
    SYS_fsync,
    SYS_ftruncate,
    SYS_futex,
    SYS_futex_waitv,
    SYS_get_mempolicy,
    SYS_get_robust_list,
    SYS_getcpu,
    SYS_getcwd,
    SYS_getdents64,
    SYS_getegid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getgroups,
    SYS_getitimer,
    SYS_getpeername,
    SYS_getpgid,
    SYS_getpid,
    SYS_getppid,
    SYS_getpriority,
    SYS_getrandom,
    SYS_getresgid,
    SYS_getresuid,
    SYS_getrlimit,
    SYS_getrusage,
    SYS_getsid,
    SYS_getsockname,
    SYS_getsockopt,
    SYS_gettid,
    SYS_gettimeofday,
    SYS_getuid,
    SYS_getxattr,
    SYS_inotify_add_watch,
    SYS_inotify_init1,
    SYS_inotify_rm_watch,
    SYS_io_cancel,
    SYS_io_destroy,
    SYS_io_getevents,
    SYS_io_setup,
    SYS_io_submit,
    SYS_ioctl,
    SYS_ioprio_get,
    SYS_ioprio_set,
    SYS_kill,
    SYS_landlock_add_rule,
    SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self,
    SYS_lgetxattr,
    SYS_linkat,
    SYS_listen,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_lremovexattr,
    SYS_lseek,
    SYS_lsetxattr,
    SYS_madvise,
    SYS_mbind,
    SYS_membarrier,
    SYS_memfd_create,
    SYS_memfd_secret,
    SYS_mincore,
    SYS_mkdirat,
    SYS_mknodat,
    SYS_mlock,
    SYS_mlock2,
    SYS_mlockall,
    SYS_mmap,
    SYS_mprotect,
    SYS_mq_getsetattr,
    SYS_mq_notify,
    SYS_mq_open,
    SYS_mq_timedreceive,
    SYS_mq_timedsend,
    SYS_mq_unlink,
    SYS_mremap,
    SYS_msgctl,
    SYS_msgget,
    SYS_msgrcv,
    SYS_msgsnd,
    SYS_msync,
    SYS_munlock,
    SYS_munlockall,
    SYS_munmap,
    SYS_name_to_handle_at,
    SYS_nanosleep,
    SYS_newfstatat,
    SYS_openat,
    SYS_openat2,
    SYS_pidfd_getfd,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_pipe2,
    SYS_pkey_alloc,
    SYS_pkey_free,
    SYS_pkey_mprotect,
    SYS_ppoll,
    SYS_prctl,
    SYS_pread64,
    SYS_preadv,
    SYS_preadv2,
    SYS_prlimit64,
    SYS_process_mrelease,
    SYS_pselect6,
    SYS_ptrace,
    SYS_pwrite64,
    SYS_pwritev,
    SYS_pwritev2,
    SYS_read,
    SYS_readahead,
    SYS_readlinkat,
    SYS_readv,
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_remap_file_pages,
    SYS_removexattr,
    SYS_renameat,
    SYS_renameat2,
    SYS_restart_syscall,
    SYS_rseq,
    SYS_rt_sigaction,
    SYS_rt_sigpending,
    SYS_rt_sigprocmask,
    SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn,
    SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait,
    SYS_rt_tgsigqueueinfo,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_getaffinity,
    SYS_sched_getattr,
    SYS_sched_getparam,
    SYS_sched_getscheduler,
    SYS_sched_rr_get_interval,
    SYS_sched_setaffinity,
    SYS_sched_setattr,
    SYS_sched_setparam,
    SYS_sched_setscheduler,
    SYS_sched_yield,
    SYS_seccomp,
    SYS_semctl,
    SYS_semget,
    SYS_semop,
    SYS_semtimedop,
    SYS_sendfile,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    SYS_set_mempolicy,
    SYS_set_robust_list,
    SYS_set_tid_address,
    SYS_setfsgid,
    SYS_setfsuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_setitimer,
    SYS_setpgid,
    SYS_setpriority,
    SYS_setregid,
    SYS_setresgid,
    SYS_setresuid,
    SYS_setreuid,
    SYS_setrlimit,
    SYS_setsid,
    SYS_setsockopt,
    SYS_setuid,
    SYS_setxattr,
    SYS_shmat,
    SYS_shmctl,
    SYS_shmdt,
    SYS_shmget,
    SYS_shutdown,
    SYS_sigaltstack,
    SYS_signalfd4,
    SYS_socket,
    SYS_socketpair,
    SYS_splice,
    SYS_statfs,
    SYS_statx,
    SYS_symlinkat,
    SYS_sync,
    SYS_sync_file_range,
    SYS_syncfs,
    SYS_sysinfo,
    SYS_tee,
    SYS_tgkill,
    SYS_timer_create,
    SYS_timer_delete,
    SYS_timer_getoverrun,
    SYS_timer_gettime,
    SYS_timer_settime,
    SYS_timerfd_create,
    SYS_timerfd_gettime,
    SYS_timerfd_settime,
    SYS_times,
    SYS_tkill,
    SYS_truncate,
    SYS_umask,
    SYS_uname,
    SYS_unlinkat,
    SYS_utimensat,
    SYS_vmsplice,
    SYS_wait4,
    SYS_waitid,
    SYS_write,
    SYS_writev,
];

/// The x86_64 syscalls that newer architectures replaced by `*at` and friends.
#[cfg(target_arch = "x86_64")]
const LEGACY: &[i64] = syscalls![
    SYS_access,
    SYS_alarm,
    SYS_arch_prctl,
    SYS_chmod,
    SYS_chown,
    SYS_creat,
    SYS_dup2,
    SYS_epoll_create,
    SYS_epoll_wait,
    SYS_eventfd,
    SYS_fork,
    SYS_futimesat,
    SYS_getdents,
    SYS_getpgrp,
    SYS_inotify_init,
    SYS_lchown,
    SYS_link,
    SYS_lstat,
    SYS_mkdir,
    SYS_mknod,
    SYS_open,
    SYS_pause,
    SYS_pipe,
    SYS_poll,
    SYS_readlink,
    SYS_rename,
    SYS_rmdir,
    SYS_select,
    SYS_signalfd,
    SYS_stat,
    SYS_symlink,
    SYS_time,
    SYS_unlink,
    SYS_utime,
    SYS_utimes,
    SYS_vfork,
    SYS_set_thread_area,
    SYS_get_thread_area,
];
#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[i64] = &[];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};

    use super::*;
    use crate::sandbox::seccomp::{run, AUDIT_ARCH, RET_ALLOW};

    /// The same profile through seccompiler, the reference.
    fn reference() -> BpfProgram {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED.iter().chain(LEGACY).map(|&nr| (nr, vec![])).collect();
        let masked = SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS as u64);
        let clone = SeccompCondition::new(0, SeccompCmpArgLen::Dword, masked, 0).unwrap();
        rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![clone]).unwrap()]);
        let personas = PERSONAS
            .iter()
            .map(|&p| {
                let c = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, p as u64).unwrap();
                SeccompRule::new(vec![c]).unwrap()
            })
            .collect();
        rules.insert(libc::SYS_personality, personas);
        let arch = std::env::consts::ARCH.try_into().unwrap();
        let errno = SeccompAction::Errno(libc::EPERM as u32);
        SeccompFilter::new(rules, errno, SeccompAction::Allow, arch)
            .unwrap()
            .try_into()
            .unwrap()
    }

    #[test]
    fn compact_filter_decides_like_seccompiler() {
        let ours = default_filter().unwrap();
        let theirs = reference();
        assert!(ours.len() < 300, "compact program has {} instructions", ours.len());
        let args = [
            0u64,
            0x0001_0000,
            0x2000_0000,
            0x0002_0000,
            8,
            0x20008,
            0xffff_ffff,
            0x7E02_0000,
        ];
        for nr in 0..1024u32 {
            for &arg in &args {
                let want = if nr == libc::SYS_clone3 as u32 {
                    0x0005_0000 | libc::ENOSYS as u32
                } else {
                    run(&theirs, AUDIT_ARCH, nr, arg)
                };
                assert_eq!(run(&ours, AUDIT_ARCH, nr, arg), want, "syscall {nr} arg0 {arg:#x}");
            }
        }
        assert_eq!(run(&ours, AUDIT_ARCH, libc::SYS_read as u32, 0), RET_ALLOW);
    }

    #[test]
    fn denies_what_docker_denies() {
        let ours = default_filter().unwrap();
        for nr in [
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_keyctl,
            libc::SYS_bpf,
            libc::SYS_pivot_root,
        ] {
            assert_eq!(
                run(&ours, AUDIT_ARCH, nr as u32, 0),
                0x0005_0000 | libc::EPERM as u32,
                "syscall {nr}"
            );
        }
        // clone creating a namespace is refused; a plain fork-like clone is not.
        let clone = libc::SYS_clone as u32;
        assert_ne!(run(&ours, AUDIT_ARCH, clone, libc::CLONE_NEWNS as u64), RET_ALLOW);
        assert_eq!(run(&ours, AUDIT_ARCH, clone, libc::SIGCHLD as u64), RET_ALLOW);
    }

    #[test]
    fn filter_survives_the_trip_to_the_child() {
        let filter = default_filter().unwrap();
        let bytes = filter_bytes(&filter);
        assert_eq!(bytes.len(), filter.len() * 8);
        let back = filter_from_bytes(&bytes).unwrap();
        assert_eq!(back.len(), filter.len());
        for (a, b) in back.iter().zip(&filter) {
            assert_eq!((a.code, a.jt, a.jf, a.k), (b.code, b.jt, b.jf, b.k));
        }
        assert!(filter_from_bytes(&[]).is_none(), "EOF is no filter");
        assert!(
            filter_from_bytes(&bytes[..bytes.len() - 3]).is_none(),
            "a torn instruction"
        );
    }

    #[test]
    fn default_caps_are_dockers_fourteen() {
        assert_eq!(DEFAULT_CAPS.bits().count_ones(), 14);
        assert!(!DEFAULT_CAPS.contains(CapabilitySet::SYS_ADMIN));
    }
}
