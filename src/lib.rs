//! petri: Beam-style pods and Beaker-style experiments on one Linux machine, offline.
//!
//! The library holds everything; the `petri` binary is one thin caller of it.
#![deny(unsafe_code)]

pub mod cli;
pub mod image;
