//! The cgroup v2 device filter: a hand-assembled eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE`, loaded and attached with the `bpf(2)` syscall.
//!
//! cgroup v2 has no `devices` controller; the kernel asks the programs attached to a
//! process's cgroup (and to every ancestor: with `BPF_F_ALLOW_MULTI` all of them must say
//! yes) whether an open or mknod of a device node is allowed. The program is tiny and its
//! shape fixed, so it is assembled here rather than pulled in with an eBPF toolchain or
//! crate; it is the same program runc (`libcontainer/cgroups/devices/devicefilter`) and crun
//! (`ebpf_src.c`) generate:
//!
//! ```text
//! r2 = ctx->access_type & 0xffff   device type (BPF_DEVCG_DEV_BLOCK / _CHAR)
//! r3 = ctx->access_type >> 16      requested access (BPF_DEVCG_ACC_MKNOD | _READ | _WRITE)
//! r4 = ctx->major; r5 = ctx->minor
//! per rule:  if type, access, major and minor all match: return 1 (allow)
//! return 0 (deny)
//! ```
//!
//! [`device_filter_program`] builds the instructions (pure, tested by interpreting them);
//! [`attach_device_filter`] is the one entry point with syscalls. The `unsafe` is confined to
//! the two `bpf(2)` calls and taking ownership of the descriptor the kernel returns.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// `BPF_DEVCG_ACC_*`: the access bits of `bpf_cgroup_dev_ctx.access_type >> 16`.
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// `BPF_DEVCG_DEV_*`: the device types of `bpf_cgroup_dev_ctx.access_type & 0xffff`.
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const LICENSE: &CStr = c"Apache";
const PROG_NAME: &[u8] = b"petri_devices";

/// One allow rule of the filter. `None` matches any value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAllow {
    /// [`DEV_BLOCK`] or [`DEV_CHAR`]; `None` for both.
    pub dev_type: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// A non-empty set of `ACC_*` bits; the request must ask for nothing outside it.
    pub access: u32,
}

/// One eBPF instruction (`struct bpf_insn`), registers unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

/// The opcodes the filter uses (class | operation | source).
pub mod op {
    /// `BPF_LDX | BPF_MEM | BPF_W`: dst = *(u32 *)(src + off)
    pub const LDX_W: u8 = 0x61;
    /// `BPF_ALU | BPF_AND | BPF_K`: dst = (u32)dst & imm
    pub const AND32_IMM: u8 = 0x54;
    /// `BPF_ALU | BPF_RSH | BPF_K`: dst = (u32)dst >> imm
    pub const RSH32_IMM: u8 = 0x74;
    /// `BPF_ALU | BPF_MOV | BPF_X`: dst = (u32)src
    pub const MOV32_REG: u8 = 0xbc;
    /// `BPF_ALU64 | BPF_MOV | BPF_K`: dst = imm
    pub const MOV64_IMM: u8 = 0xb7;
    /// `BPF_JMP | BPF_JNE | BPF_K`: if dst != imm, pc += off
    pub const JNE_IMM: u8 = 0x55;
    /// `BPF_JMP | BPF_JNE | BPF_X`: if dst != src, pc += off
    pub const JNE_REG: u8 = 0x5d;
    /// `BPF_JMP | BPF_EXIT`: return r0
    pub const EXIT: u8 = 0x95;
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// Builds the filter: allow when any rule matches, deny otherwise. Errors when a rule
/// cannot be expressed (a number above `i32::MAX`, an access set that is empty or has
/// unknown bits, an unknown type).
pub fn device_filter_program(rules: &[DeviceAllow]) -> io::Result<Vec<Insn>> {
    let mut prog = vec![
        insn(op::LDX_W, 2, 1, 0, 0),
        insn(op::AND32_IMM, 2, 0, 0, 0xffff),
        insn(op::LDX_W, 3, 1, 0, 0),
        insn(op::RSH32_IMM, 3, 0, 0, 16),
        insn(op::LDX_W, 4, 1, 4, 0),
        insn(op::LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules {
        prog.extend(rule_block(rule)?);
    }
    prog.push(insn(op::MOV64_IMM, 0, 0, 0, 0));
    prog.push(insn(op::EXIT, 0, 0, 0, 0));
    Ok(prog)
}

/// The checks of one rule; each mismatch jumps past the block's final "return 1".
fn rule_block(rule: &DeviceAllow) -> io::Result<Vec<Insn>> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    if rule.access == 0 || rule.access & !ACC_ALL != 0 {
        return Err(invalid(format!("device rule access bits {:#x}", rule.access)));
    }
    let num = |n: u32| i32::try_from(n).map_err(|_| invalid(format!("device number {n} too large")));
    // Jumps are patched once the block's length is known: off = 0 marks "to the end".
    let mut checks = Vec::new();
    if let Some(t) = rule.dev_type {
        if t != DEV_BLOCK && t != DEV_CHAR {
            return Err(invalid(format!("device type {t}")));
        }
        checks.push(insn(op::JNE_IMM, 2, 0, 0, t as i32));
    }
    if rule.access != ACC_ALL {
        checks.push(insn(op::MOV32_REG, 1, 3, 0, 0));
        checks.push(insn(op::AND32_IMM, 1, 0, 0, rule.access as i32));
        checks.push(insn(op::JNE_REG, 1, 3, 0, 0));
    }
    if let Some(major) = rule.major {
        checks.push(insn(op::JNE_IMM, 4, 0, 0, num(major)?));
    }
    if let Some(minor) = rule.minor {
        checks.push(insn(op::JNE_IMM, 5, 0, 0, num(minor)?));
    }
    checks.push(insn(op::MOV64_IMM, 0, 0, 0, 1));
    checks.push(insn(op::EXIT, 0, 0, 0, 0));
    let len = checks.len();
    for (i, c) in checks.iter_mut().enumerate() {
        if c.code == op::JNE_IMM || c.code == op::JNE_REG {
            c.off = (len - i - 1) as i16;
        }
    }
    Ok(checks)
}

/// `struct bpf_insn` as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl From<Insn> for RawInsn {
    fn from(i: Insn) -> RawInsn {
        // The C bitfields `dst_reg:4, src_reg:4` are allocated from the low bits on
        // little-endian targets and from the high bits on big-endian ones.
        #[cfg(target_endian = "little")]
        let regs = (i.dst & 0xf) | (i.src << 4);
        #[cfg(target_endian = "big")]
        let regs = (i.dst << 4) | (i.src & 0xf);
        RawInsn {
            code: i.code,
            regs,
            off: i.off,
            imm: i.imm,
        }
    }
}

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `bpf(cmd, attr, sizeof attr)`; returns the non-negative result.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] struct laid out as the
    // kernel's `union bpf_attr` member for `cmd`, and the size passed is its exact size;
    // any pointers inside it were set by the caller to buffers that outlive this call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// Loads the program; a verifier rejection is reported with the verifier's log.
pub fn load_device_filter(rules: &[DeviceAllow]) -> io::Result<OwnedFd> {
    load_device_program(&device_filter_program(rules)?)
}

fn load_device_program(prog: &[Insn]) -> io::Result<OwnedFd> {
    let insns: Vec<RawInsn> = prog.iter().copied().map(RawInsn::from).collect();
    let mut name = [0u8; 16];
    name[..PROG_NAME.len()].copy_from_slice(PROG_NAME);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    match prog_load(&mut attr) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EINVAL)) => {
            // Load again, with a log, only to say why; the first error is the one reported.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = prog_load(&mut attr);
            let text = CStr::from_bytes_until_nul(&log).map(|c| c.to_string_lossy().into_owned());
            let text = text.unwrap_or_default();
            Err(io::Error::new(e.kind(), format!("{e}; verifier log: {}", text.trim())))
        }
        other => other,
    }
}

/// `bpf(BPF_PROG_LOAD)`, owning the descriptor it returns.
fn prog_load(attr: &mut ProgLoadAttr) -> io::Result<OwnedFd> {
    let fd = bpf(BPF_PROG_LOAD, attr)?;
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor (opened O_CLOEXEC by
    // the kernel) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Builds and loads the filter and attaches it to the cgroup2 directory `cgroup_dir` with
/// `BPF_F_ALLOW_MULTI` (so filters of ancestors keep applying too). Returns the program's
/// descriptor; the attachment lives as long as the cgroup, whether or not it is kept.
pub fn attach_device_filter(cgroup_dir: &Path, rules: &[DeviceAllow]) -> io::Result<OwnedFd> {
    let prog = load_device_filter(rules)?;
    let dir = rustix::fs::open(
        cgroup_dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)?;
    Ok(prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the subset of eBPF the filter uses against one device request.
    fn run(prog: &[Insn], dev_type: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | dev_type, major, minor];
        let mut r = [0u64; 11];
        let mut r1_is_ctx = true;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (d, s) = (i.dst as usize, i.src as usize);
            pc += 1;
            match i.code {
                op::LDX_W => {
                    assert!(s == 1 && r1_is_ctx, "load from a non-context register");
                    r[d] = ctx[i.off as usize / 4] as u64;
                }
                op::AND32_IMM => r[d] = (r[d] as u32 & i.imm as u32) as u64,
                op::RSH32_IMM => r[d] = (r[d] as u32 >> i.imm) as u64,
                op::MOV32_REG => r[d] = r[s] as u32 as u64,
                op::MOV64_IMM => r[d] = i.imm as i64 as u64,
                op::JNE_IMM if r[d] != i.imm as i64 as u64 => pc += i.off as usize,
                op::JNE_REG if r[d] != r[s] => pc += i.off as usize,
                op::JNE_IMM | op::JNE_REG => {}
                op::EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
            if d == 1 && i.code != op::JNE_REG && i.code != op::JNE_IMM {
                r1_is_ctx = false;
            }
        }
    }

    fn allow(dev_type: Option<u32>, major: Option<u32>, minor: Option<u32>, access: u32) -> DeviceAllow {
        DeviceAllow {
            dev_type,
            major,
            minor,
            access,
        }
    }

    #[test]
    fn no_rules_denies_everything() {
        let prog = device_filter_program(&[]).unwrap();
        assert_eq!(prog.len(), 8);
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 1, 3), 0);
    }

    #[test]
    fn rules_match_type_numbers_and_access_subsets() {
        let prog = device_filter_program(&[
            allow(Some(DEV_CHAR), Some(1), Some(3), ACC_ALL),
            allow(Some(DEV_CHAR), Some(136), None, ACC_READ | ACC_WRITE),
            allow(None, None, None, ACC_MKNOD),
        ])
        .unwrap();
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), 1);
        assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 1, 3), 0, "type must match");
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 1, 7), 0, "minor must match");
        assert_eq!(run(&prog, DEV_CHAR, ACC_WRITE, 136, 42), 1, "any minor");
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ | ACC_WRITE, 136, 0), 1);
        assert_eq!(
            run(&prog, DEV_CHAR, ACC_READ | ACC_MKNOD, 136, 0),
            0,
            "access must be a subset"
        );
        assert_eq!(run(&prog, DEV_BLOCK, ACC_MKNOD, 8, 0), 1, "mknod of anything");
        assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 8, 0), 0);
    }

    #[test]
    fn full_access_rules_skip_the_access_check() {
        let prog = device_filter_program(&[allow(None, None, None, ACC_ALL)]).unwrap();
        // prologue (6) + mov r0 1, exit + mov r0 0, exit
        assert_eq!(prog.len(), 10);
        assert_eq!(run(&prog, DEV_BLOCK, ACC_ALL, 259, 1), 1);
    }

    #[test]
    fn jumps_land_on_the_next_rule() {
        let prog = device_filter_program(&[allow(Some(DEV_CHAR), Some(5), Some(1), ACC_READ)]).unwrap();
        let block = &prog[6..prog.len() - 2];
        for (i, c) in block.iter().enumerate() {
            if c.code == op::JNE_IMM || c.code == op::JNE_REG {
                assert_eq!(i + 1 + c.off as usize, block.len(), "jump at {i}");
            }
        }
    }

    #[test]
    fn unrepresentable_rules_are_refused() {
        assert!(device_filter_program(&[allow(None, None, None, 0)]).is_err());
        assert!(device_filter_program(&[allow(None, None, None, 8)]).is_err());
        assert!(device_filter_program(&[allow(Some(3), None, None, ACC_READ)]).is_err());
        assert!(device_filter_program(&[allow(None, Some(u32::MAX), None, ACC_READ)]).is_err());
    }

    #[test]
    fn registers_pack_like_the_c_bitfields() {
        let raw = RawInsn::from(insn(op::LDX_W, 2, 1, 4, 0));
        #[cfg(target_endian = "little")]
        assert_eq!(raw.regs, 0x12);
        assert_eq!((raw.code, raw.off), (op::LDX_W, 4));
        assert_eq!(std::mem::size_of::<RawInsn>(), 8);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
    }

    /// The verifier accepts the program (root only; the attach is tested in tests/cgroup.rs).
    #[test]
    fn kernel_verifier_accepts_the_program() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP kernel_verifier_accepts_the_program: needs root");
            return;
        }
        load_device_filter(&[]).unwrap();
        load_device_filter(&[
            allow(Some(DEV_CHAR), Some(1), Some(3), ACC_ALL),
            allow(Some(DEV_CHAR), Some(136), None, ACC_READ | ACC_WRITE),
            allow(None, None, None, ACC_MKNOD),
        ])
        .unwrap();
        // Returning an unset r0 is refused, and the error says why.
        let e = load_device_program(&[insn(op::EXIT, 0, 0, 0, 0)]).unwrap_err();
        assert!(
            e.to_string().contains("verifier log") && e.to_string().contains("R0"),
            "{e}"
        );
    }
}
