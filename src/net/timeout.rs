//! Bounding any I/O future in time: the one way tinygate turns "took too
//! long" into an error (`TimedOut`), so callers match on one kind.

use super::Timer;
use std::future::Future;
use std::io;
use std::time::Duration;

/// Runs `f`, failing with `TimedOut` if it takes longer than `d`.
///
/// # Errors
/// `f`'s error, or `TimedOut` once `d` has passed.
pub async fn with_timeout<T>(d: Duration, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    smol::future::or(f, async {
        Timer::after(d).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    })
    .await
}
