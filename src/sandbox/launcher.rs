//! Launching from a multi-threaded process: a re-executed `petri __launcher` helper,
//! single-threaded by construction, clones the sandboxes, waits for them (only a parent
//! can collect an exit status) and cleans up, and reports over a SOCK_SEQPACKET socket
//! with one JSON message per request or event.
//!
//! The helper is the containers' parent. When the socket closes (the caller exited or
//! dropped its `Launcher`), it kills what is still running, cleans up, and exits.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::{recv, send, socketpair, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use super::{launch, Exit, Running, SandboxError, SandboxSpec};
use crate::cgroup::Hierarchy;

const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Launch { spec: Box<SandboxSpec> },
    Signal { id: String, signal: i32 },
}

/// What the helper reports about a sandbox, by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event {
    Started { id: String, pid: i32 },
    Failed { id: String, code: i32, message: String },
    Exited { id: String, exit: Exit },
}

impl Event {
    fn id(&self) -> &str {
        match self {
            Event::Started { id, .. } | Event::Failed { id, .. } | Event::Exited { id, .. } => id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("launcher helper: {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("launcher helper sent an invalid message: {0}")]
    Protocol(#[from] serde_json::Error),
    #[error("launcher helper exited")]
    Gone,
    /// The sandbox failed before its process could exec.
    #[error("{message}")]
    Failed { code: i32, message: String },
}

fn io_err(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> LauncherError {
    move |e| LauncherError::Io { op, source: e.into() }
}

/// The caller's handle; usable from any thread.
pub struct Launcher {
    helper: Child,
    sock: OwnedFd,
    inbox: Mutex<HashMap<String, Vec<Event>>>,
}

impl Launcher {
    /// Starts the helper: `petri` is the petri binary (`/proc/self/exe` from petri itself).
    pub fn spawn(petri: &Path) -> Result<Launcher, LauncherError> {
        let (ours, theirs) = socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
            .map_err(io_err("socketpair"))?;
        let helper = Command::new(petri)
            .arg("__launcher")
            .stdin(Stdio::from(theirs))
            .spawn()
            .map_err(|source| LauncherError::Io { op: "spawn", source })?;
        Ok(Launcher {
            helper,
            sock: ours,
            inbox: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a sandbox; returns its process id once it has exec'd.
    pub fn start(&self, spec: &SandboxSpec) -> Result<i32, LauncherError> {
        let request = Request::Launch {
            spec: Box::new(spec.clone()),
        };
        self.send(&request)?;
        match self.next_event(&spec.id, |e| !matches!(e, Event::Exited { .. }))? {
            Event::Started { pid, .. } => Ok(pid),
            Event::Failed { code, message, .. } => Err(LauncherError::Failed { code, message }),
            Event::Exited { .. } => unreachable!("filtered out"),
        }
    }

    pub fn signal(&self, id: &str, signal: Signal) -> Result<(), LauncherError> {
        self.send(&Request::Signal {
            id: id.to_string(),
            signal: signal.as_raw(),
        })
    }

    /// Waits for the sandbox to exit (its cgroup, and its bundle for a `remove` spec, are gone by then).
    pub fn wait(&self, id: &str) -> Result<Exit, LauncherError> {
        match self.next_event(id, |e| matches!(e, Event::Exited { .. }))? {
            Event::Exited { exit, .. } => Ok(exit),
            _ => unreachable!("filtered"),
        }
    }

    fn send(&self, request: &Request) -> Result<(), LauncherError> {
        let bytes = serde_json::to_vec(request)?;
        send(&self.sock, &bytes, SendFlags::NOSIGNAL).map_err(io_err("send"))?;
        Ok(())
    }

    /// The next event for `id` that `wanted` accepts; others are kept for their readers.
    fn next_event(&self, id: &str, wanted: impl Fn(&Event) -> bool) -> Result<Event, LauncherError> {
        let mut inbox = self.inbox.lock().expect("launcher inbox");
        loop {
            if let Some(queue) = inbox.get_mut(id) {
                if let Some(i) = queue.iter().position(&wanted) {
                    return Ok(queue.remove(i));
                }
            }
            let event: Event = serde_json::from_slice(&receive(&self.sock)?.ok_or(LauncherError::Gone)?)?;
            inbox.entry(event.id().to_string()).or_default().push(event);
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = rustix::net::shutdown(&self.sock, rustix::net::Shutdown::Both);
        let _ = self.helper.wait();
    }
}

fn receive(sock: &OwnedFd) -> Result<Option<Vec<u8>>, LauncherError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        match recv(sock, &mut buf, RecvFlags::empty()) {
            Ok((0, _)) => return Ok(None),
            Ok((n, _)) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io_err("recv")(e)),
        }
    }
}

/// One sandbox the helper looks after.
struct Sandbox {
    id: String,
    running: Running,
}

/// The helper's main loop (`petri __launcher`): the socket arrives as stdin.
pub fn serve() -> Result<(), LauncherError> {
    let sock = rustix::io::dup(rustix::stdio::stdin()).map_err(io_err("dup stdin"))?;
    let null = rustix::fs::open("/dev/null", rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty())
        .map_err(io_err("open /dev/null"))?;
    rustix::stdio::dup2_stdin(&null).map_err(io_err("redirect stdin"))?;
    let hierarchy = Hierarchy::detect().map_err(|e| LauncherError::Io {
        op: "detect cgroups",
        source: io::Error::other(e),
    })?;
    let mut children: Vec<Sandbox> = Vec::new();
    loop {
        let mut fds: Vec<PollFd> = vec![PollFd::new(&sock, PollFlags::IN)];
        fds.extend(
            children
                .iter()
                .map(|c| PollFd::from_borrowed_fd(c.running.pidfd(), PollFlags::IN)),
        );
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io_err("poll")(e)),
        }
        let request_ready = !fds[0].revents().is_empty();
        let exited: Vec<usize> = (0..children.len())
            .filter(|&i| !fds[i + 1].revents().is_empty())
            .collect();
        drop(fds);
        for i in exited.into_iter().rev() {
            let child = children.swap_remove(i);
            let event = finish(child);
            let _ = send(&sock, &serde_json::to_vec(&event)?, SendFlags::NOSIGNAL);
        }
        if request_ready {
            match receive(&sock)? {
                Some(bytes) => handle(&sock, &serde_json::from_slice(&bytes)?, &hierarchy, &mut children)?,
                None => break,
            }
        }
    }
    for child in children {
        let _ = child.running.signal(Signal::KILL);
        finish(child);
    }
    Ok(())
}

fn handle(
    sock: &OwnedFd,
    request: &Request,
    hierarchy: &Hierarchy,
    children: &mut Vec<Sandbox>,
) -> Result<(), LauncherError> {
    let event = match request {
        Request::Signal { id, signal } => {
            if let (Some(c), Some(sig)) = (children.iter().find(|c| c.id == *id), Signal::from_named_raw(*signal)) {
                let _ = c.running.signal(sig);
            }
            return Ok(());
        }
        Request::Launch { spec, .. } if spec.process.tty => Event::Failed {
            id: spec.id.clone(),
            code: 125,
            message: "a tty is not available through the launcher yet".into(),
        },
        Request::Launch { spec } => match launch(spec, hierarchy) {
            Ok(running) => {
                let pid = running.pid().as_raw_nonzero().get();
                children.push(Sandbox {
                    id: spec.id.clone(),
                    running,
                });
                Event::Started {
                    id: spec.id.clone(),
                    pid,
                }
            }
            Err(e) => {
                let (code, message) = match e {
                    SandboxError::Init { code, message } => (code, message),
                    other => (125, other.to_string()),
                };
                Event::Failed {
                    id: spec.id.clone(),
                    code,
                    message,
                }
            }
        },
    };
    send(sock, &serde_json::to_vec(&event)?, SendFlags::NOSIGNAL).map_err(io_err("send"))?;
    Ok(())
}

/// Collects the exit and cleans up; the event says how it ended.
fn finish(child: Sandbox) -> Event {
    let exit = child.running.wait().unwrap_or(Exit {
        code: 125,
        signal: None,
        oom_killed: false,
    });
    if let Err(e) = child.running.cleanup() {
        tracing::warn!(id = child.id, error = %e, "cleaning up a sandbox");
    }
    Event::Exited { id: child.id, exit }
}
