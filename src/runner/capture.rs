//! Log capture for `tinygate test`: the process logger while tests run.
//!
//! Plugins log through the `log` crate (target `wasm::<plugin name>`), and
//! so does the host (a failed plugin, a discarded instance). When serving,
//! `env_logger` writes those lines to stderr; the runner instead keeps them,
//! so a case can expect a line and a failed case can show what was logged.
//! Lines at `debug` and above are kept (host `trace` lines, one per ABI
//! call, would only cost time).

use std::sync::Mutex;

/// Most lines kept between two [`take`]s: a plugin logging in a loop must
/// not eat the machine's memory.
const MAX_LINES: usize = 10_000;

/// One captured log line.
#[derive(Debug, Clone)]
pub struct Line {
    pub level: log::Level,
    pub target: String,
    pub message: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<5} {}: {}", self.level, self.target, self.message)
    }
}

static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());

struct Capture;

static CAPTURE: Capture = Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Debug
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() < MAX_LINES {
            lines.push(Line {
                level: record.level(),
                target: record.target().to_string(),
                message: record.args().to_string(),
            });
        }
    }

    fn flush(&self) {}
}

/// Makes the capture the process logger (once; later calls do nothing).
pub fn install() {
    if log::set_logger(&CAPTURE).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// The lines logged since the last call.
pub fn take() -> Vec<Line> {
    std::mem::take(&mut *LINES.lock().unwrap_or_else(|e| e.into_inner()))
}
