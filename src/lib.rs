//! petri: Beam-style pods and Beaker-style experiments on one Linux machine, offline.
//!
//! The library holds everything; the `petri` binary is one thin caller of it.
#![deny(unsafe_code)]

pub mod cgroup;
pub mod cli;
pub mod image;
pub mod sandbox;
pub mod sys;
