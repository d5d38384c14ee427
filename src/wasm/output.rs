//! What a plugin writes to stdout and stderr (`fd_write`), as log lines:
//! one log record per line, whatever pieces the plugin wrote it in, and
//! what is left of a line when its call into the plugin returns.
//!
//! Runtimes write in pieces: Go's prints a panic as some twenty writes
//! (`panic: `, the message, `\n`, `goroutine `, `1`, ` [`, ...), which
//! logged one record per write read as twenty lines of fragments. The
//! pieces are kept per stream until a newline; `vm.rs` flushes the rest
//! after each callback, so a line is never held past the call that wrote
//! it, nor mixed with another call's. It knows the log and the VM's state,
//! not WASI's calling conventions (`wasi.rs`).

use super::host::HostState;

/// Most bytes of one line kept: the rest of a longer line is dropped,
/// and the line logged with a mark.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// The unfinished line of each standard stream of one VM.
#[derive(Default)]
pub(crate) struct Output {
    stdout: Pending,
    stderr: Pending,
}

/// A line being written: its bytes, whether some were dropped, and the
/// context that wrote its first piece (its log prefix).
#[derive(Default)]
struct Pending {
    line: Vec<u8>,
    cut: bool,
    context: u32,
}

/// A standard stream a plugin writes to.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    /// Logged at info.
    Stdout,
    /// Logged at error.
    Stderr,
}

impl Stream {
    fn level(self) -> log::Level {
        match self {
            Stream::Stdout => log::Level::Info,
            Stream::Stderr => log::Level::Error,
        }
    }
}

/// Appends `text` (of which `cut` says whether some was already dropped)
/// to `stream`'s line and logs every line it completes.
pub(crate) fn write(state: &mut HostState, stream: Stream, text: &[u8], cut: bool) {
    let context = state.effective_context;
    let mut rest = text;
    loop {
        let pending = pending(state, stream);
        if pending.line.is_empty() && !pending.cut {
            pending.context = context;
        }
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            append(pending, rest);
            pending.cut |= cut;
            return;
        };
        append(pending, &rest[..end]);
        let line = std::mem::take(&mut pending.line);
        let line_cut = std::mem::take(&mut pending.cut);
        let line_context = pending.context;
        log_line(state, stream, line_context, &line, line_cut);
        rest = &rest[end + 1..];
    }
}

/// Logs what is left of each stream's line (after a callback returns).
pub(crate) fn flush(state: &mut HostState) {
    for stream in [Stream::Stdout, Stream::Stderr] {
        let pending = pending(state, stream);
        if pending.line.is_empty() && !pending.cut {
            continue;
        }
        let line = std::mem::take(&mut pending.line);
        let cut = std::mem::take(&mut pending.cut);
        let context = pending.context;
        log_line(state, stream, context, &line, cut);
    }
}

fn pending(state: &mut HostState, stream: Stream) -> &mut Pending {
    match stream {
        Stream::Stdout => &mut state.output.stdout,
        Stream::Stderr => &mut state.output.stderr,
    }
}

/// Adds `bytes` to the line, up to [`MAX_LINE`].
fn append(pending: &mut Pending, bytes: &[u8]) {
    let room = MAX_LINE.saturating_sub(pending.line.len());
    pending
        .line
        .extend_from_slice(&bytes[..bytes.len().min(room)]);
    pending.cut |= bytes.len() > room;
}

/// One log record for a line (an empty one is not logged).
fn log_line(state: &HostState, stream: Stream, context: u32, line: &[u8], cut: bool) {
    if line.is_empty() && !cut {
        return;
    }
    let mark = if cut { "… (truncated)" } else { "" };
    log::log!(target: state.log_target(), stream.level(), "[{context}] {}{mark}", String::from_utf8_lossy(line));
}
