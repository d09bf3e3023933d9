//! The command line: clap definitions apart from the code that acts on them, and one
//! `Printer` through which every user-facing line goes.

mod image;
mod printer;
mod progress;
mod run;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use printer::{OutputFormat, Printer};

/// Docker's convention: the runtime itself failed.
pub const EXIT_PETRI_FAILED: i32 = 125;

#[derive(Debug, Parser)]
#[command(
    name = "petri",
    version,
    about = "Run Beam-style pods and Beaker-style experiments on one Linux machine, offline"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses petri's arguments, exiting with clap's message on a usage error.
    ///
    /// `petri run` is on the path of every container start, and clap builds the whole
    /// command tree before it parses: every subcommand's arguments, with the global ones
    /// copied into each. For a `petri run` line that took 0.42-0.50 ms of a cold start,
    /// against 0.23-0.36 ms for a parser of the global arguments and `run` alone
    /// (bench/RESULTS.md). So that parser goes first, and whatever it does not accept
    /// (another subcommand, a usage error, `--help`, `--version`) is parsed again by the
    /// whole tree, so that every error, help text and version line is the full parser's.
    pub fn parse_args() -> Cli {
        let args: Vec<OsString> = std::env::args_os().collect();
        run_only(&args).unwrap_or_else(|| Cli::parse_from(args))
    }
}

/// A `petri run` line parsed by [`RunOnly`]; `None` for anything it does not accept.
fn run_only(args: &[OsString]) -> Option<Cli> {
    let RunOnly {
        global,
        command: RunOnlyCommand::Run(args),
    } = RunOnly::try_parse_from(args).ok()?;
    Some(Cli {
        global,
        command: Command::Run(args),
    })
}

/// The first try of [`Cli::parse_args`]: the same global arguments and `run`, nothing
/// else. It never prints: its errors are the cue to parse with [`Cli`].
#[derive(Parser)]
#[command(name = "petri")]
struct RunOnly {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: RunOnlyCommand,
}

#[derive(Subcommand)]
enum RunOnlyCommand {
    Run(Box<run::RunArgs>),
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where images, datasets, state and logs live.
    #[arg(long, global = true, env = "PETRI_ROOT", default_value = "/var/lib/petri")]
    pub root: PathBuf,
    /// Machine-readable JSON on stdout (same as --format json).
    #[arg(long, global = true)]
    pub json: bool,
    /// Output format.
    #[arg(long, global = true, value_enum)]
    pub format: Option<OutputFormat>,
    /// Print only what was asked for (ids, names), no progress or notes.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Show debug logs on stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage images: pull, load, list, inspect, remove.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Run an image's process in a sandbox: `petri run --rm busybox echo hello`.
    Run(Box<run::RunArgs>),
    /// Internal: the single-threaded helper that launches sandboxes for a
    /// multi-threaded petri (see sandbox::launcher).
    #[command(name = "__launcher", hide = true)]
    Launcher,
}

pub fn init_tracing(verbose: bool) {
    let default = if verbose { "petri=debug" } else { "petri=warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PETRI_LOG").unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let format = match (cli.global.json, cli.global.format) {
        (true, _) => OutputFormat::Json,
        (false, f) => f.unwrap_or(OutputFormat::Text),
    };
    let printer = Printer::new(format, cli.global.quiet);
    match cli.command {
        Command::Image(cmd) => image::run(cmd, &cli.global.root, &printer),
        Command::Run(args) => run::run(*args, &cli.global.root, &printer),
        Command::Launcher => {
            crate::sandbox::launcher::serve()?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &str) -> Vec<OsString> {
        words.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_run_only_parser_agrees_with_the_whole_tree() {
        for words in [
            "petri run --rm busybox true",
            "petri --root /tmp/r -q run -e A=1 --env B --cpu 0.5 --memory 1Gi -v --rm -it busybox sh -c x",
            "petri run --network host --mount /a:/b:rw --name web -u 1000:1000 -w /srv img -- ls -l",
            "petri --format json run --image img --entrypoint echo hi",
        ] {
            let args = line(words);
            let fast = run_only(&args).unwrap_or_else(|| panic!("not taken by the run parser: {words}"));
            let full = Cli::try_parse_from(&args).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{words}");
        }
    }

    #[test]
    fn everything_else_goes_to_the_whole_tree() {
        for words in [
            "petri image ls",
            "petri --version",
            "petri run --help",
            "petri help run",
            "petri run --cpu lots busybox",
            "petri --bogus run busybox",
        ] {
            assert!(run_only(&line(words)).is_none(), "{words}");
        }
    }
}
