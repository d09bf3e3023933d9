//! The command line: clap definitions apart from the code that acts on them, and one
//! `Printer` through which every user-facing line goes.

mod image;
mod log;
mod printer;
mod progress;
mod quick;
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
    /// A plain `petri run` line, the one on the path of every container start, is
    /// parsed by `quick` without clap; whatever it refuses is clap's.
    pub fn parse_args() -> Cli {
        let args: Vec<OsString> = std::env::args_os().collect();
        quick::parse(&args, std::env::var_os("PETRI_ROOT").as_deref()).unwrap_or_else(|| Cli::parse_from(args))
    }
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

/// Logs on stderr: petri's warnings (`log::Warnings`), its debug lines with `-v`, or
/// what PETRI_LOG asks for (an EnvFilter directive list). Without PETRI_LOG the filter
/// is a static one, and without `-v` there is no span registry either, as the log set-up
/// is on the path of every `petri run`.
pub fn init_tracing(verbose: bool) {
    use tracing_subscriber::{filter::Targets, fmt, prelude::*, EnvFilter};
    let layer = || fmt::layer().with_writer(std::io::stderr).with_target(false);
    match EnvFilter::try_from_env("PETRI_LOG") {
        Ok(filter) => tracing_subscriber::registry().with(layer().with_filter(filter)).init(),
        Err(_) if verbose => {
            let filter = Targets::new().with_target("petri", tracing::Level::DEBUG);
            tracing_subscriber::registry().with(layer().with_filter(filter)).init()
        }
        Err(_) => {
            let _ = tracing::subscriber::set_global_default(log::Warnings::new(std::io::stderr()));
        }
    }
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
