//! The sandbox: run one image's process in new pid, mount, uts, ipc, net and cgroup
//! namespaces, on an overlay of the image's layers, inside a cgroup with limits, with
//! Docker's default capabilities and seccomp profile.
//!
//! The API is narrow on purpose: build a [`SandboxSpec`], [`launch`] it, then
//! [`Running::wait`] / [`Running::signal`] / [`Running::cleanup`]. A caller that can
//! name the sandbox, its network and its limits before the rest of the spec is known
//! (the CLI, before it resolves the image) calls [`fork`] first and
//! [`Forked::launch`] later: the child builds its network namespace meanwhile. The CLI
//! is one caller; pods and experiments will be others.
//!
//! Launching forks with namespace flags, which is only safe from a single-threaded
//! process (DESIGN.md rule 1), and `launch` and `fork` refuse otherwise. `petri run` calls
//! `fork` directly, before any thread exists. A multi-threaded caller (the tokio control plane
//! to come, or a test) uses [`launcher::Launcher`] instead: a re-executed `petri`
//! helper, single-threaded by construction, that launches, waits and cleans up on its
//! behalf and reports over a socket.

mod base;
mod bundle;
mod channel;
mod init;
mod launch;
pub mod launcher;
mod mounts;
mod plan;
pub mod process;
mod seccomp;
pub mod security;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use bundle::TIDY_LOCK;
pub use launch::{fork, launch, Exit, Forked, Running};

use crate::cgroup::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A new network namespace with only `lo`, up.
    Isolated,
    /// The host's network namespace.
    Host,
}

/// Everything needed to start one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Container id: names the cgroup and, by default, the hostname.
    pub id: String,
    pub hostname: String,
    /// The store's layers directory; `lower` are paths relative to it, top layer first.
    pub layers_dir: PathBuf,
    pub lower: Vec<String>,
    /// The container's own directory on disk: the overlay's upper/ and work/. Inside the
    /// container's mount namespace a tmpfs covers it, holding the root's mount point and
    /// the generated /etc files.
    pub bundle: PathBuf,
    /// `--rm`: the writable layer is thrown away. The overlay is mounted `volatile` (no
    /// sync of the upper filesystem at unmount), the marker that leaves in the work
    /// directory is removed once the root is mounted, and cleanup removes what the
    /// container wrote and the bundle (or keeps the emptied bundle in `pool`).
    #[serde(default)]
    pub remove: bool,
    /// Where a `remove` sandbox's emptied bundle is kept for the next one to reuse, and
    /// taken from (see `bundle`); `None` makes and removes it each time.
    #[serde(default)]
    pub pool: Option<PathBuf>,
    /// (host source, container destination, read-only).
    pub binds: Vec<(PathBuf, String, bool)>,
    pub process: ProcessSpec,
    pub limits: Limits,
    pub network: Network,
    pub shm_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
    /// Keep stdin open (`-i`); otherwise it is /dev/null.
    pub stdin: bool,
    /// Give the process a pseudo-terminal (`-t`); its master is `Running::tty`.
    #[serde(default)]
    pub tty: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Security(#[from] security::SecurityError),
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The container process failed before exec; `code` is what petri should exit with.
    #[error("{message}")]
    Init { code: i32, message: String },
}
