//! `petri run`: one image's process in a sandbox, in the foreground: output streamed,
//! SIGINT/SIGTERM/SIGHUP/SIGQUIT forwarded, the container's exit code passed through.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::Signal;

use super::printer::Printer;
use crate::cgroup::{default_devices, Hierarchy, Limits};
use crate::image::oci::Platform;
use crate::image::reference::Reference;
use crate::image::store::{Store, StoreError};
use crate::sandbox::{self, process, Network, ProcessSpec, SandboxSpec};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image (a name in the store, a digest, or oci:DIR / oci-archive:FILE /
    /// docker-archive:FILE); may instead be the first positional argument.
    #[arg(long)]
    pub(super) image: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass petri's own value).
    #[arg(long = "env", short = 'e')]
    pub(super) env: Vec<String>,
    /// Replace the image's Entrypoint (and drop its Cmd): "CMD ARGS".
    #[arg(long)]
    pub(super) entrypoint: Option<String>,
    /// CPU limit in cores (0.5) or millicores (500m).
    #[arg(long, value_parser = parse_cpu)]
    pub(super) cpu: Option<f64>,
    /// Memory limit: 512Mi, 1Gi, 1GB, or a plain number of MiB. No swap.
    #[arg(long, value_parser = parse_memory)]
    pub(super) memory: Option<u64>,
    /// Maximum number of processes in the container.
    #[arg(long, default_value_t = 4096)]
    pub(super) pids_limit: u64,
    /// Size of /dev/shm.
    #[arg(long, value_parser = parse_memory, default_value = "64Mi")]
    pub(super) shm_size: u64,
    /// Bind a host path: SRC:DST[:ro|rw] (read-only unless :rw).
    #[arg(long = "mount")]
    pub(super) mounts: Vec<String>,
    /// Container name (also its hostname).
    #[arg(long)]
    pub(super) name: Option<String>,
    /// Run as USER[:GROUP] (names or ids from the image).
    #[arg(long, short = 'u')]
    pub(super) user: Option<String>,
    /// Working directory inside the container.
    #[arg(long, short = 'w')]
    pub(super) workdir: Option<String>,
    /// "host" to share the host's network; default: a private one with only lo.
    #[arg(long, default_value = "none", value_parser = ["none", "host"])]
    pub(super) network: String,
    /// Remove the container's files when it exits.
    #[arg(long)]
    pub(super) rm: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub(super) interactive: bool,
    /// Give the process a pseudo-terminal.
    #[arg(short = 't', long)]
    pub(super) tty: bool,
    /// Which image of a multi-platform index.
    #[arg(long)]
    pub(super) platform: Option<Platform>,
    /// IMAGE (unless --image) then CMD ARGS...
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(super) args: Vec<String>,
}

/// Signals petri passes on to the container.
const FORWARDED: [Signal; 4] = [Signal::INT, Signal::TERM, Signal::HUP, Signal::QUIT];

pub fn run(args: RunArgs, root: &Path, printer: &Printer) -> anyhow::Result<i32> {
    let (image_ref, command) = match &args.image {
        Some(i) => (i.clone(), args.args.clone()),
        None => match args.args.split_first() {
            Some((i, rest)) => (i.clone(), rest.to_vec()),
            None => bail!("no image: give --image REF or the image as the first argument"),
        },
    };
    let id = new_id()?;
    let name = match &args.name {
        Some(n) => valid_name(n)?,
        None => id[..12].to_string(),
    };
    let binds = args
        .mounts
        .iter()
        .map(|m| parse_mount(m))
        .collect::<anyhow::Result<_>>()?;
    let limits = Limits {
        cpu: args.cpu,
        memory: args.memory,
        pids: Some(args.pids_limit),
        devices: default_devices(),
    };
    let network = if args.network == "host" {
        Network::Host
    } else {
        Network::Isolated
    };
    // The container's process is cloned now, so that it builds its network namespace
    // while the image is resolved (or pulled) and the spec built.
    let hierarchy = Hierarchy::detect()?;
    let forked = sandbox::fork(&id, network, &limits, &hierarchy).context("starting the container")?;
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let image = match store.resolve(&image_ref, &platform) {
        Ok((image, _)) => image,
        // Docker's default: a named image that is not here yet is pulled.
        Err(StoreError::NotFound(_)) => {
            let reference: Reference = image_ref.parse()?;
            printer.note(&format!("Unable to find image '{reference}' locally; pulling it"));
            super::image::pull_reference(&store, &reference, false, platform.clone(), printer)?.image
        }
        Err(e) => return Err(e.into()),
    };
    let config = store.config(&image)?.config.unwrap_or_default();
    let spec = SandboxSpec {
        hostname: name.clone(),
        layers_dir: root.join("layers"),
        lower: image.lower_dirs(),
        bundle: root.join("containers").join(&id),
        remove: args.rm,
        pool: Some(root.join("pool")),
        binds,
        process: ProcessSpec {
            argv: process::command(&config, args.entrypoint.as_deref(), &command)?,
            env: with_term(process::environment(&config, &args.env, &name)?, args.tty),
            cwd: args
                .workdir
                .clone()
                .or(config.working_dir.clone())
                .filter(|w| !w.is_empty())
                .unwrap_or("/".into()),
            user: args.user.clone().or(config.user.clone()).filter(|u| !u.is_empty()),
            stdin: args.interactive,
            tty: args.tty,
        },
        limits,
        network,
        shm_bytes: args.shm_size,
        id,
    };
    let forward = Forwarder::install()?;
    let running = match forked.launch(&spec) {
        Ok(r) => r,
        Err(sandbox::SandboxError::Init { code, message }) => {
            eprintln!("petri: error: {message}");
            return Ok(code);
        }
        Err(e) => return Err(e).context("starting the container"),
    };
    let raw = match (args.tty && args.interactive, running.tty()) {
        (true, Some(_)) => RawMode::enter(),
        _ => None,
    };
    forward.until_exit(&running, args.interactive)?;
    drop(raw);
    let exit = running.wait()?;
    running.cleanup()?;
    if exit.oom_killed && exit.signal == Some(Signal::KILL.as_raw()) {
        eprintln!(
            "petri: container {name} was killed: out of memory (limit {})",
            limit_text(args.memory)
        );
        return Ok(137);
    }
    Ok(exit.code)
}

fn limit_text(memory: Option<u64>) -> String {
    memory.map_or("none".into(), |m| format!("{} MiB", m >> 20))
}

/// The forwarded signals, blocked and read from a signalfd by the wait loop.
struct Forwarder {
    signals: std::os::fd::OwnedFd,
}

impl Forwarder {
    fn install() -> anyhow::Result<Forwarder> {
        let raw: Vec<i32> = FORWARDED.iter().map(|s| s.as_raw()).collect();
        let signals = crate::sys::process::signalfd_for(&raw).context("blocking the forwarded signals")?;
        Ok(Forwarder { signals })
    }

    /// Forwards signals, and relays the terminal when there is one, until the
    /// container's process has exited.
    fn until_exit(&self, running: &sandbox::Running, interactive: bool) -> anyhow::Result<()> {
        let tty = running.tty();
        let (mut tty_open, mut stdin_open) = (tty.is_some(), tty.is_some() && interactive);
        loop {
            let mut fds = vec![
                PollFd::from_borrowed_fd(running.pidfd(), PollFlags::IN),
                PollFd::new(&self.signals, PollFlags::IN),
            ];
            if let (Some(t), true) = (tty, tty_open) {
                fds.push(PollFd::from_borrowed_fd(t, PollFlags::IN));
            }
            if stdin_open {
                fds.push(PollFd::from_borrowed_fd(rustix::stdio::stdin(), PollFlags::IN));
            }
            match poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e).context("waiting for the container"),
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            let exited = ready[0];
            while let Some(raw) = crate::sys::process::read_signal(self.signals.as_fd()).context("reading a signal")? {
                match Signal::from_named_raw(raw) {
                    Some(sig) if !exited => {
                        let _ = running.signal(sig);
                    }
                    _ => {}
                }
            }
            if let Some(t) = tty {
                if tty_open && ready.get(2) == Some(&true) {
                    tty_open = copy_once(t, rustix::stdio::stdout());
                }
                let stdin_at = if tty_open { 3 } else { 2 };
                if stdin_open && ready.get(stdin_at) == Some(&true) {
                    stdin_open = copy_once(rustix::stdio::stdin(), t);
                }
            }
            if exited {
                if let (Some(t), true) = (tty, tty_open) {
                    while copy_once(t, rustix::stdio::stdout()) {}
                }
                return Ok(());
            }
        }
    }
}

/// Copies what one read gives from `from` to `to`; false once `from` is finished
/// (end of file, or EIO from a pty master whose slave is closed).
fn copy_once(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let n = match rustix::io::read(from, &mut buf) {
        Ok(0) | Err(_) => return false,
        Ok(n) => n,
    };
    let mut rest = &buf[..n];
    while !rest.is_empty() {
        match rustix::io::write(to, rest) {
            Ok(w) => rest = &rest[w..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// The user's terminal in raw mode while a container's tty is attached; restored on drop.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = rustix::stdio::stdin();
        let saved = rustix::termios::tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(rustix::stdio::stdin(), rustix::termios::OptionalActions::Now, &self.0);
    }
}

/// A terminal needs TERM; Docker sets xterm unless the user set one.
fn with_term(mut env: Vec<String>, tty: bool) -> Vec<String> {
    if tty && !env.iter().any(|kv| kv.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    env
}

fn new_id() -> anyhow::Result<String> {
    let mut raw = [0u8; 32];
    rustix::rand::getrandom(&mut raw, rustix::rand::GetRandomFlags::empty()).context("getrandom")?;
    Ok(hex::encode(raw))
}

fn valid_name(n: &str) -> anyhow::Result<String> {
    let b = n.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if !ok {
        bail!("--name {n:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 63 characters");
    }
    Ok(n.to_string())
}

/// SRC:DST[:ro|rw]; SRC must exist; DST must be absolute.
fn parse_mount(m: &str) -> anyhow::Result<(PathBuf, String, bool)> {
    let parts: Vec<&str> = m.split(':').collect();
    let (src, dst, readonly) = match parts.as_slice() {
        [s, d] => (*s, *d, true),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => bail!("--mount {m:?}: expected SRC:DST[:ro|rw]"),
    };
    if !dst.starts_with('/') {
        bail!("--mount {m:?}: the destination must be an absolute path");
    }
    let src = std::fs::canonicalize(src).with_context(|| format!("--mount {m:?}: source {src}"))?;
    Ok((src, dst.to_string(), readonly))
}

/// Cores ("0.5", "2") or millicores ("500m").
pub fn parse_cpu(s: &str) -> Result<f64, String> {
    let cores = match s.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a number of cores (0.5) or millicores (500m)"))?;
    if !(cores.is_finite() && cores > 0.0) {
        return Err(format!("{s:?}: the CPU limit must be positive"));
    }
    Ok(cores)
}

/// "512Mi", "1Gi", "1GB", "100M", or a plain number of MiB; returns bytes.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (512Mi, 1Gi, 1GB, or MiB)"))?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "mi" | "mib" => (1u64 << 20) as f64,
        "ki" | "kib" => 1024.0,
        "gi" | "gib" => (1u64 << 30) as f64,
        "ti" | "tib" => (1u64 << 40) as f64,
        "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}")),
    };
    let bytes = value * mult;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("{s:?}: the size must be positive"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512Mi"), Ok(512 << 20));
        assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_memory("256"), Ok(256 << 20));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("0").is_err());
    }

    #[test]
    fn cpu_amounts() {
        assert_eq!(parse_cpu("0.5"), Ok(0.5));
        assert_eq!(parse_cpu("500m"), Ok(0.5));
        assert_eq!(parse_cpu("2"), Ok(2.0));
        assert!(parse_cpu("0").is_err());
        assert!(parse_cpu("-1").is_err());
    }

    #[test]
    fn mounts_and_names() {
        assert!(parse_mount("/tmp:/data").unwrap().2);
        assert!(!parse_mount("/tmp:/data:rw").unwrap().2);
        assert!(parse_mount("/tmp:data").is_err());
        assert!(parse_mount("/tmp:/d:xx").is_err());
        assert!(valid_name("web-1").is_ok());
        assert!(valid_name("../x").is_err());
    }
}
