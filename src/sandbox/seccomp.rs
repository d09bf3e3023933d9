//! Compiles the seccomp policy to a compact classic-BPF program: a binary search over
//! syscall-number intervals, so a syscall is decided after ~8 comparisons, and the whole
//! program is ~150 instructions. seccompiler (which `security` keeps as the reference
//! and for installing) emits one comparison chain per syscall: ~1500 instructions that
//! the kernel takes over a millisecond to load and every syscall walks linearly. A
//! container start is dominated by such costs, so this part is hand-written; the tests
//! check it against seccompiler's program decision for decision.

use seccompiler::sock_filter;

/// What the policy says about one syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Allow,
    /// Allowed unless the low 32 bits of arg0 intersect the mask (clone's flags).
    AllowUnlessArg0Masked(u32),
    /// Allowed when the low 32 bits of arg0 is one of these (personality's personas).
    AllowIfArg0In(&'static [u32]),
    Errno(u32),
}

pub const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16;

#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;

#[derive(Debug, thiserror::Error)]
#[error("seccomp program too large for BPF's 8-bit jumps ({0} instructions in a subtree)")]
pub struct TooLarge(usize);

/// Builds the program: other architectures are killed, then the rules decide, and any
/// number without a rule gets `default`.
pub fn compile(rules: &[(u32, Rule)], default: Rule) -> Result<Vec<sock_filter>, TooLarge> {
    let intervals = intervals(rules, default);
    let mut prog = Vec::with_capacity(4 + 2 * intervals.len());
    prog.extend([
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFFSET_NR),
    ]);
    tree(&intervals, &mut prog)?;
    Ok(prog)
}

/// The number line cut into maximal runs of one rule: (first number, rule).
fn intervals(rules: &[(u32, Rule)], default: Rule) -> Vec<(u32, Rule)> {
    let mut sorted = rules.to_vec();
    sorted.sort_by_key(|(nr, _)| *nr);
    let mut out: Vec<(u32, Rule)> = vec![(0, default)];
    let push = |out: &mut Vec<(u32, Rule)>, start: u32, rule: Rule| {
        if out.last().is_some_and(|l| l.0 == start) {
            out.pop();
        }
        if out.last().map(|l| l.1) != Some(rule) {
            out.push((start, rule));
        }
    };
    for (nr, rule) in sorted {
        push(&mut out, nr, rule);
        if nr < u32::MAX {
            push(&mut out, nr + 1, default);
        }
    }
    out
}

/// Binary search over interval starts; the accumulator holds the syscall number. Emitted
/// into `out` in place, each jump patched once its upper subtree is written: this runs
/// on every container start, and a program built from per-subtree vectors took ~0.1 ms
/// of allocation.
fn tree(intervals: &[(u32, Rule)], out: &mut Vec<sock_filter>) -> Result<(), TooLarge> {
    if let [(_, rule)] = intervals {
        leaf(*rule, out);
        return Ok(());
    }
    let mid = intervals.len() / 2;
    let at = out.len();
    out.push(jump(JGE_K, intervals[mid].0, 0, 0));
    tree(&intervals[mid..], out)?;
    let upper = out.len() - at - 1;
    out[at].jf = u8::try_from(upper).map_err(|_| TooLarge(upper))?;
    tree(&intervals[..mid], out)
}

/// The instructions that decide a syscall once its interval is known. Argument checks
/// reload the accumulator, which is fine: every path ends in a return.
fn leaf(rule: Rule, out: &mut Vec<sock_filter>) {
    match rule {
        Rule::Allow => out.push(stmt(RET_K, RET_ALLOW)),
        Rule::Errno(e) => out.push(stmt(RET_K, RET_ERRNO | (e & 0xffff))),
        Rule::AllowUnlessArg0Masked(mask) => out.extend([
            stmt(LD_W_ABS, OFFSET_ARG0_LOW),
            stmt(AND_K, mask),
            jump(JEQ_K, 0, 0, 1),
            stmt(RET_K, RET_ALLOW),
            stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
        ]),
        Rule::AllowIfArg0In(values) => {
            out.push(stmt(LD_W_ABS, OFFSET_ARG0_LOW));
            for (i, v) in values.iter().enumerate() {
                let to_allow = (values.len() - i) as u8;
                out.push(jump(JEQ_K, *v, to_allow, 0));
            }
            out.push(stmt(RET_K, RET_ERRNO | libc::EPERM as u32));
            out.push(stmt(RET_K, RET_ALLOW));
        }
    }
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A classic-BPF interpreter for the instructions above: what the kernel would return
/// for a syscall. Used by the tests to compare programs.
#[cfg(test)]
pub fn run(prog: &[sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    data[16..24].copy_from_slice(&arg0.to_le_bytes());
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = &prog[pc];
        pc += 1;
        match i.code {
            0x20 => acc = u32::from_le_bytes(data[i.k as usize..i.k as usize + 4].try_into().unwrap()),
            0x54 => acc &= i.k,
            0x06 => return i.k,
            0x05 => pc += i.k as usize,
            0x15 | 0x35 | 0x25 | 0x45 => {
                let taken = match i.code {
                    0x15 => acc == i.k,
                    0x35 => acc >= i.k,
                    0x25 => acc > i.k,
                    _ => acc & i.k != 0,
                };
                pc += if taken { i.jt } else { i.jf } as usize;
            }
            0x16 => return acc,
            0x04 => acc = acc.wrapping_add(i.k),
            0x87 | 0x07 | 0x00 | 0x01 | 0x02 | 0x61 | 0x60 => {
                unimplemented!("opcode {:#x} in test interpreter", i.code)
            }
            other => panic!("unknown opcode {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_neighbours() {
        let deny = Rule::Errno(1);
        let rules = [
            (0, Rule::Allow),
            (1, Rule::Allow),
            (2, Rule::Allow),
            (5, Rule::Allow),
            (7, Rule::Errno(38)),
        ];
        assert_eq!(
            intervals(&rules, deny),
            vec![
                (0, Rule::Allow),
                (3, deny),
                (5, Rule::Allow),
                (6, deny),
                (7, Rule::Errno(38)),
                (8, deny)
            ]
        );
    }

    #[test]
    fn small_policy_decides_like_its_rules() {
        const P: &[u32] = &[0, 8];
        let rules = [
            (1, Rule::Allow),
            (3, Rule::AllowUnlessArg0Masked(0x10)),
            (4, Rule::AllowIfArg0In(P)),
        ];
        let prog = compile(&rules, Rule::Errno(1)).unwrap();
        let ret = |nr, arg| run(&prog, AUDIT_ARCH, nr, arg);
        assert_eq!(ret(1, 0), RET_ALLOW);
        assert_eq!(ret(0, 0), RET_ERRNO | 1);
        assert_eq!(ret(2, 0), RET_ERRNO | 1);
        assert_eq!(ret(3, 0x20), RET_ALLOW);
        assert_eq!(ret(3, 0x30), RET_ERRNO | libc::EPERM as u32);
        assert_eq!(ret(4, 8), RET_ALLOW);
        assert_eq!(ret(4, 9), RET_ERRNO | libc::EPERM as u32);
        assert_eq!(ret(0x4000_0001, 0), RET_ERRNO | 1);
        assert_eq!(run(&prog, 0x4000_0003, 1, 0), RET_KILL_PROCESS);
    }
}
