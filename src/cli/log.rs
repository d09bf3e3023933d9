//! petri's default logger: its own warnings and errors on stderr, one line each, as
//! tracing-subscriber's fmt layer prints them (`2026-12-02T04:23:49.123456Z  WARN
//! message key=value`), without that layer's span registry.
//!
//! Why not the fmt layer here too: it needs tracing-subscriber's `Registry`, whose
//! set-up (a sharded slab of 32 KiB, ~7 fresh pages) is on the path of every `petri
//! run`; a start with this logger was 0.10-0.21 ms faster (bench/RESULTS.md), and the default
//! logger has no use for spans (petri makes none). `-v` and `PETRI_LOG` still get the
//! fmt layer and its filters (`cli::init_tracing`).

use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Prints events of petri's own targets at warning level and above to `out`.
pub struct Warnings<W> {
    out: Mutex<W>,
}

impl<W: Write> Warnings<W> {
    pub fn new(out: W) -> Self {
        Warnings { out: Mutex::new(out) }
    }
}

impl<W: Write + 'static> Subscriber for Warnings<W> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN && metadata.target().split("::").next() == Some("petri")
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::WARN)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = format_event(now(), event);
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The current time as the fmt layer shows it: RFC 3339, UTC, microseconds.
fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// `time  LEVEL message key=value ...\n`.
fn format_event(time: String, event: &Event<'_>) -> String {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let mut line = format!("{time} {:>5} {}", event.metadata().level(), fields.message);
    if !fields.rest.is_empty() {
        if !fields.message.is_empty() {
            line.push(' ');
        }
        line.push_str(&fields.rest);
    }
    line.push('\n');
    line
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        if !self.rest.is_empty() {
            self.rest.push(' ');
        }
        let _ = write!(self.rest, "{}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        tracing::subscriber::with_default(Warnings::new(buffer.clone()), f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn warnings_and_errors_print_as_the_fmt_layer_does() {
        let out = logged(|| {
            tracing::warn!(entry = "dev/sda", attempt = 2, "skipping device node");
            tracing::error!(error = %"gone", "cleaning up");
            tracing::warn!("bare");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let (time, rest) = lines[0].split_once(' ').unwrap();
        assert!(
            time.len() == 27 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{time}"
        );
        assert_eq!(rest, " WARN skipping device node entry=\"dev/sda\" attempt=2");
        assert!(lines[1].ends_with(" ERROR cleaning up error=gone"), "{}", lines[1]);
        assert!(lines[2].ends_with("  WARN bare"), "{}", lines[2]);
    }

    #[test]
    fn info_debug_and_other_crates_are_not_printed() {
        let out = logged(|| {
            tracing::info!("starting");
            tracing::debug!("details");
            tracing::warn!(target: "hyper", "not ours");
        });
        assert_eq!(out, "");
    }
}
