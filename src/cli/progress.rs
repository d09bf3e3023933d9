//! Per-layer progress bars on stderr for image pulls, as `docker pull` shows them.
//!
//! Drawn only when stderr is a terminal and neither `--quiet` nor `--json` was given;
//! otherwise a pull says nothing until its result line.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::image::digest::Digest;
use crate::image::registry::PullProgress;

pub struct PullBars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl PullBars {
    /// Bars on stderr when `show` and stderr is a terminal; hidden otherwise.
    pub fn new(show: bool) -> PullBars {
        let target = if show && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        PullBars {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl PullProgress for PullBars {
    fn resolved(&self, origin: &str, manifest: &Digest, layers: &[(Digest, u64, bool)]) {
        let _ = self.multi.println(format!("{origin}: {manifest}"));
        let style = ProgressStyle::with_template("{prefix} {wide_bar} {bytes:>10}/{total_bytes:<10} {msg}")
            .expect("template parses");
        let mut bars = self.bars.lock().expect("bars");
        for (digest, size, present) in layers {
            let bar = self.multi.add(ProgressBar::new(*size).with_style(style.clone()));
            bar.set_prefix(digest.short().to_string());
            if *present {
                bar.set_position(*size);
                bar.finish_with_message("already present");
            }
            bars.insert(digest.clone(), bar);
        }
    }

    fn layer_bytes(&self, layer: &Digest, n: u64) {
        if let Some(bar) = self.bars.lock().expect("bars").get(layer) {
            bar.inc(n);
            if bar.position() >= bar.length().unwrap_or(u64::MAX) {
                bar.finish_with_message("done");
            }
        }
    }

    fn layer_retry(&self, layer: &Digest, error: &str) {
        if let Some(bar) = self.bars.lock().expect("bars").get(layer) {
            bar.set_message(format!("retrying: {error}"));
        }
    }

    fn finished(&self) {
        for bar in self.bars.lock().expect("bars").values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}
