//! The main thread's job once serving: signals and the routes-file poll.
//!
//! `SIGHUP` reloads both configuration files; the routes file is also
//! polled every second (APISIX's standalone behaviour). `SIGTERM` and
//! `SIGINT` drain: workers stop accepting and close idle connections,
//! requests in flight finish within the grace period, then the process
//! exits 0; a second such signal exits at once. Either way every access
//! log line buffered by the workers is written out first. `SIGUSR1`
//! reopens the access log file.

use super::OPEN_CONNECTIONS;
use crate::live::Live;
use async_signal::{Signal, Signals};
use smol::stream::StreamExt;
use smol::Timer;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the routes file is checked for changes.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Installs the handlers for the signals tinygate acts on. Call it before
/// announcing readiness: until then all four still have their default
/// action, which is to kill the process (a `SIGHUP` or `SIGUSR1` sent
/// right after the `listening on` line must not do that).
///
/// # Errors
/// When signal handlers cannot be installed.
pub fn install() -> io::Result<Signals> {
    Signals::new([Signal::Hup, Signal::Term, Signal::Int, Signal::Usr1])
}

/// Runs until a stop signal has drained the process.
///
/// # Errors
/// None today; kept for errors of the signal stream.
pub fn run(
    mut signals: Signals,
    live: &Live,
    stop: &smol::channel::Sender<()>,
    grace: Duration,
) -> io::Result<()> {
    smol::block_on(async {
        let mut poll = Timer::interval(POLL_INTERVAL);
        loop {
            let event = smol::future::or(async { signals.next().await.map(Some) }, async {
                poll.next().await;
                Some(None)
            })
            .await;
            match event {
                Some(Some(Ok(Signal::Hup))) => {
                    log::info!("SIGHUP: reloading the configuration");
                    live.reload_all();
                }
                Some(Some(Ok(Signal::Term | Signal::Int))) => {
                    drain(&mut signals, stop, grace).await;
                    // Every line of the requests served, before the exit.
                    crate::ops::access_log::flush_all();
                    return Ok(());
                }
                Some(Some(Ok(Signal::Usr1))) => crate::ops::access_log::reopen(),
                Some(Some(Ok(_))) => {}
                Some(Some(Err(e))) => log::warn!("signal handling: {e}"),
                Some(None) => live.poll_routes_file(),
                None => return Ok(()),
            }
        }
    })
}

/// Stops accepting, then waits for open connections to finish, the grace
/// period to pass, or a second stop signal.
async fn drain(signals: &mut Signals, stop: &smol::channel::Sender<()>, grace: Duration) {
    stop.close();
    let open = OPEN_CONNECTIONS.load(Ordering::Acquire);
    log::info!("stopping: no new connections; waiting up to {grace:?} for {open} open ones");
    let deadline = Instant::now() + grace;
    let mut tick = Timer::interval(Duration::from_millis(20));
    loop {
        if OPEN_CONNECTIONS.load(Ordering::Acquire) == 0 {
            log::info!("stopped: all connections finished");
            return;
        }
        if Instant::now() >= deadline {
            log::warn!(
                "stopped: grace period over with {} connections still open",
                OPEN_CONNECTIONS.load(Ordering::Acquire)
            );
            return;
        }
        let second = smol::future::or(
            async { matches!(signals.next().await, Some(Ok(Signal::Term | Signal::Int))) },
            async {
                tick.next().await;
                false
            },
        )
        .await;
        if second {
            log::warn!("second stop signal: exiting now");
            crate::ops::access_log::flush_all();
            std::process::exit(1);
        }
    }
}
