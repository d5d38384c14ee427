//! The access log: one line per request, in APISIX's (nginx combined plus
//! upstream fields) format or as JSON, to stdout or a file.
//!
//! Each worker formats lines into its own [`Buffer`]; buffers are written
//! to the shared sink when they fill up or every 200 ms, so the request
//! path takes only its own worker's lock (which nothing else takes but a
//! stop or a reopen). On `SIGTERM`/`SIGINT`, once the requests in flight
//! are done, and on `SIGUSR1`, before the file is reopened (for
//! logrotate), every worker's lines are written out ([`flush_all`]), so
//! none is lost or lands in the new file out of turn. This module knows
//! what a finished request looked like, not how it was served.

use crate::http::date::{civil_from_days, MONTHS};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::config::access_log::{Format, Target};

/// What a finished request looked like.
#[derive(Debug, Default)]
pub struct Record {
    pub remote: Option<SocketAddr>,
    pub host: String,
    pub method: String,
    pub target: String,
    pub version: &'static str,
    pub status: u16,
    pub body_bytes_sent: u64,
    pub started: Option<std::time::Instant>,
    pub referer: String,
    pub user_agent: String,
    pub route_id: String,
    pub upstream_addr: Option<SocketAddr>,
    pub upstream_status: Option<u16>,
    pub upstream_time: Option<Duration>,
}

impl Record {
    /// A record with nothing in it (as `Record::default()`), usable where
    /// a `'static` one is needed.
    pub const EMPTY: Record = Record {
        remote: None,
        host: String::new(),
        method: String::new(),
        target: String::new(),
        version: "",
        status: 0,
        body_bytes_sent: 0,
        started: None,
        referer: String::new(),
        user_agent: String::new(),
        route_id: String::new(),
        upstream_addr: None,
        upstream_status: None,
        upstream_time: None,
    };
}

struct Sink {
    target: Target,
    file: Option<File>,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    target: Target::Off,
    file: None,
});

/// Sets where lines go (at start and on reload).
///
/// # Errors
/// When the file cannot be opened for appending.
pub fn configure(target: &Target) -> io::Result<()> {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if sink.target != *target {
        sink.file = match target {
            Target::File(path) => Some(open(path)?),
            _ => None,
        };
        sink.target = target.clone();
    }
    Ok(())
}

/// Reopens the log file (`SIGUSR1`), e.g. after logrotate moved it; the
/// lines buffered until now go to the old file first.
pub fn reopen() {
    flush_all();
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if let Target::File(path) = sink.target.clone() {
        match open(&path) {
            Ok(f) => {
                sink.file = Some(f);
                log::info!("access log {} reopened", path.display());
            }
            Err(e) => log::error!("access log {}: cannot reopen: {e}", path.display()),
        }
    }
}

fn open(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

/// Appends `record` as one line to a worker's `buf`.
pub fn format_into(buf: &mut Vec<u8>, record: &Record, format: Format) {
    let mut line = String::with_capacity(256);
    let request_time = record.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let remote = record
        .remote
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let upstream_addr = record.upstream_addr.map(|a| a.to_string());
    let upstream_status = record.upstream_status.map(|s| s.to_string());
    let upstream_time = record
        .upstream_time
        .map(|t| format!("{:.3}", t.as_secs_f64()));
    let request = format!("{} {} {}", record.method, record.target, record.version);
    match format {
        Format::Combined => {
            let _ = write!(
                line,
                "{remote} - - [{}] {} \"{}\" {} {} {:.3} \"{}\" \"{}\" {} {} {} \"{}\"",
                http_log_time(SystemTime::now()),
                dash(&escape(&record.host)),
                escape(&request),
                record.status,
                record.body_bytes_sent,
                request_time,
                dash(&escape(&record.referer)),
                dash(&escape(&record.user_agent)),
                upstream_addr.as_deref().unwrap_or("-"),
                upstream_status.as_deref().unwrap_or("-"),
                upstream_time.as_deref().unwrap_or("-"),
                escape(&record.route_id),
            );
        }
        Format::Json => {
            let value = serde_json::json!({
                "time": http_log_time(SystemTime::now()),
                "remote_addr": remote,
                "host": record.host,
                "request": request,
                "method": record.method,
                "uri": record.target,
                "status": record.status,
                "body_bytes_sent": record.body_bytes_sent,
                "request_time": request_time,
                "http_referer": record.referer,
                "http_user_agent": record.user_agent,
                "upstream_addr": upstream_addr,
                "upstream_status": record.upstream_status,
                "upstream_response_time": record.upstream_time.map(|t| t.as_secs_f64()),
                "route_id": record.route_id,
            });
            line.push_str(&value.to_string());
        }
    }
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
}

/// One worker's lines not yet written, registered so that a stop or a
/// reopen can write out every worker's lines ([`flush_all`]).
pub struct Buffer(Arc<Mutex<Vec<u8>>>);

/// Every worker's buffer, for [`flush_all`].
static BUFFERS: Mutex<Vec<Weak<Mutex<Vec<u8>>>>> = Mutex::new(Vec::new());

impl Buffer {
    /// A new, registered buffer.
    pub fn register() -> Buffer {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut all = BUFFERS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|b| b.strong_count() > 0);
        all.push(Arc::downgrade(&buf));
        Buffer(buf)
    }

    /// Appends `record` as a line, writing the buffer out once it holds
    /// `limit` bytes.
    pub fn append(&self, record: &Record, format: Format, limit: usize) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        format_into(&mut buf, record, format);
        if buf.len() >= limit {
            write_out(&mut buf);
        }
    }

    /// Writes the buffered lines out.
    pub fn flush(&self) {
        write_out(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Writes out every worker's buffered lines (at a stop, before a reopen).
pub fn flush_all() {
    let all: Vec<Arc<Mutex<Vec<u8>>>> = BUFFERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for buf in all {
        write_out(&mut buf.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Writes buffered lines to the sink and empties the buffer.
fn write_out(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let to_stdout = sink.target == Target::Stdout;
    let result = match sink.file.as_mut() {
        Some(f) => f.write_all(buf),
        None if to_stdout => io::stdout().lock().write_all(buf),
        None => Ok(()),
    };
    if let Err(e) = result {
        log::warn!("access log: write failed: {e}");
    }
    buf.clear();
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// nginx's escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
    out
}

/// `25/Nov/2026:12:59:44 +0000` (nginx's `$time_local`, in UTC).
pub fn http_log_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_611_584); // 2026-11-25 12:59:44
        assert_eq!(http_log_time(t), "25/Nov/2026:12:59:44 +0000");
        assert_eq!(http_log_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(http_log_time(leap), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn escaping_follows_nginx() {
        assert_eq!(escape("a\"b\\c\u{1}"), "a\\x22b\\x5Cc\\x01");
    }
}
