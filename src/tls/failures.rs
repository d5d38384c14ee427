//! Failed handshakes in the log, without letting a scanner or a broken
//! client flood it: an unknown SNI is logged once per name per minute
//! (`sni.rs`), any other failure at most once every
//! [`FAILURE_LOG_EVERY`], with the number of failures not logged since.
//! A client that connects and leaves without a word (a port check, a load
//! balancer's TCP probe) is not a failure worth a warning: `debug` only.

use super::HandshakeError;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one warning per this long for failures other than unknown
/// SNI.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// When the last warning was written, and the failures since.
struct Window {
    last: Option<Instant>,
    quiet: u64,
}

static WINDOW: Mutex<Window> = Mutex::new(Window {
    last: None,
    quiet: 0,
});

/// Logs the handshake from `peer` that failed with `error`.
pub fn log_handshake_failure(peer: SocketAddr, error: &HandshakeError) {
    let reason = match error {
        HandshakeError::UnknownSni { sni, log } => {
            let why = match sni {
                Some(name) => format!("no ssls entry for SNI {name:?}"),
                None => "no SNI sent and no apisix.ssl.fallback_sni".to_string(),
            };
            if *log {
                log::warn!("{peer}: TLS handshake refused: {why} (logged once a minute per name)");
            } else {
                log::debug!("{peer}: TLS handshake refused: {why}");
            }
            return;
        }
        HandshakeError::Failed(e) if left_without_a_word(e) => {
            log::debug!("{peer}: connection closed before a TLS handshake: {e}");
            return;
        }
        HandshakeError::Failed(e) if e.kind() == io::ErrorKind::TimedOut => {
            "no handshake within client_header_timeout".to_string()
        }
        HandshakeError::Failed(e) => e.to_string(),
    };
    let now = Instant::now();
    let mut w = WINDOW.lock().unwrap_or_else(|e| e.into_inner());
    if w.last
        .is_some_and(|t| now.duration_since(t) < FAILURE_LOG_EVERY)
    {
        w.quiet += 1;
        log::debug!("{peer}: TLS handshake failed: {reason}");
        return;
    }
    let quiet = std::mem::take(&mut w.quiet);
    w.last = Some(now);
    drop(w);
    if quiet > 0 {
        log::warn!(
            "{peer}: TLS handshake failed: {reason} ({quiet} more failed since the last \
             such line; at most one every {}s)",
            FAILURE_LOG_EVERY.as_secs()
        );
    } else {
        log::warn!("{peer}: TLS handshake failed: {reason}");
    }
}

/// The peer closed (or reset) before finishing a ClientHello.
fn left_without_a_word(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}
