//! The `petri` binary: parse, set up logging, dispatch, and turn the outcome into an exit
//! code (the container's own, 125 when petri itself failed, 2 for usage errors).

/// dlmalloc rather than the C library's malloc. The release binary links musl, whose
/// allocator (mallocng) hands freed memory back to the kernel eagerly: on the short path
/// of `petri run` that was a stream of one-page mmap/munmap pairs, each new page a fresh
/// fault, in the launcher and in the child it forks. dlmalloc keeps what is freed for
/// reuse (it trims only megabytes at the top). Measured (bench/RESULTS.md): `petri run`
/// 20% less CPU time and 0.11-0.17 ms faster; unpack and pull unchanged. Its one lock
/// is uncontended where petri forks, which it only does single-threaded.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() {
    let cli = petri::cli::Cli::parse_args();
    petri::cli::init_tracing(cli.global.verbose);
    let code = match petri::cli::run(cli) {
        Ok(code) => code,
        // A closed stdout (`petri image ls | head -1`) is the reader's choice, not a failure.
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("petri: error: {}", message(&e));
            petri::cli::EXIT_PETRI_FAILED
        }
    };
    std::process::exit(code);
}

/// The error and its causes joined by ": ", skipping a cause whose text the previous
/// message already ends with (errors that name their source in their own message).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
