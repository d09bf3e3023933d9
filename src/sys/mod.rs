//! The only place with `unsafe`: thin, checked wrappers over the few syscalls that rustix
//! does not cover (clone with namespace flags, a BPF program load, an interface ioctl).
//! DESIGN.md puts this under `sandbox/`; it lives at the top because the cgroup module
//! needs it too (v2 device rules are eBPF programs), and modules must not form cycles.
#![allow(unsafe_code)]

pub mod bpf;
pub mod process;
