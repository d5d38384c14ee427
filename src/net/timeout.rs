//! Bounding any I/O future in time: the one way tinygate turns "took too
//! long" into an error (`TimedOut`), so callers match on one kind.

use super::Timer;
use std::future::Future;
use std::io;
use std::time::Duration;

/// Runs `f`, failing with `TimedOut` if it takes longer than `d`.
///
/// A plain function returning the race itself, not an `async fn`: an
/// `async fn` would hold `f` twice (as its argument and as the future it
/// awaits), and every idle connection waits inside one of these.
///
/// # Errors
/// `f`'s error, or `TimedOut` once `d` has passed.
pub fn with_timeout<T, F>(d: Duration, f: F) -> impl Future<Output = io::Result<T>>
where
    F: Future<Output = io::Result<T>>,
{
    smol::future::or(f, async move {
        Timer::after(d).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    })
}
