//! All user-facing output goes through `Printer`: data on stdout (text or stable JSON),
//! notes on stderr, nothing but data under `--quiet`. Writes return their errors (never
//! panic as `println!` does), so `petri image ls | head -1` ends quietly.

use std::io::Write;

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    /// Same as text; accepted because `--format table` is what list commands document.
    Table,
}

pub struct Printer {
    format: OutputFormat,
    quiet: bool,
}

impl Printer {
    pub fn new(format: OutputFormat, quiet: bool) -> Printer {
        Printer { format, quiet }
    }

    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Prints a value as pretty JSON on stdout.
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
        writeln!(out)?;
        Ok(())
    }

    /// A line of text output on stdout (in text mode only).
    pub fn line(&self, text: &str) -> anyhow::Result<()> {
        if !self.is_json() {
            writeln!(std::io::stdout().lock(), "{text}")?;
        }
        Ok(())
    }

    /// Whether progress bars may be drawn (they still need stderr to be a terminal).
    pub fn shows_progress(&self) -> bool {
        !self.quiet && !self.is_json()
    }

    /// A human note on stderr, silenced by --quiet.
    pub fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// A table on stdout; under --quiet only the first column.
    pub fn table(&self, header: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.quiet {
            for row in rows {
                writeln!(out, "{}", row.first().map(String::as_str).unwrap_or(""))?;
            }
            return Ok(());
        }
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(header.iter().copied());
        for row in rows {
            table.add_row(row);
        }
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
        }
        for line in table.lines() {
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Sizes the way Docker prints them: SI units, three significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[unit]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(1_000_000), "1MB");
    }
}
