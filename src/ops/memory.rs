//! Giving freed memory back to the system after a burst.
//!
//! Worker threads allocate from their own malloc arenas. When thousands of
//! connections close or go idle, what they used is freed but stays in
//! those arenas (glibc returns memory to the kernel only from the top of a
//! heap), so the process's resident memory would stay at its peak. Each
//! thread counts what it holds (open connections, and connections busy
//! with requests, through [`hold`]); once a burst has ended (the count
//! down by a quarter of its peak, and by at least [`MIN_DROP`]), [`settle`]
//! asks the allocator to return every free page, at most once a second.
//! This module knows counts and the allocator, nothing about HTTP or
//! plugins.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Fewest connections a burst must shed (closed, or gone idle) before
/// memory is given back: below it there is little to return, and trimming
/// is not free.
pub const MIN_DROP: usize = 256;

/// Shortest time between two trims of one thread: trimming walks the
/// allocator's free lists, and pages given back must be faulted in again.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A count and its peak since memory was last given back.
#[derive(Default)]
struct Burst {
    now: Cell<usize>,
    peak: Cell<usize>,
    last: Cell<Option<Instant>>,
}

thread_local! {
    /// What this thread holds: open connections plus busy ones.
    static HELD: Burst = Burst::default();
}

/// One connection (or busy connection) held by this thread, until
/// dropped.
pub struct Held(());

/// Counts one more on this thread while the returned guard lives (plain
/// additions, no atomic).
pub fn hold() -> Held {
    HELD.with(|b| {
        let now = b.now.get() + 1;
        b.now.set(now);
        b.peak.set(b.peak.get().max(now));
    });
    Held(())
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|b| b.now.set(b.now.get().saturating_sub(1)));
    }
}

/// Gives freed memory back if what this thread holds fell from its peak
/// by a quarter and by at least [`MIN_DROP`] (and it did not do so in the
/// last second); returns whether it did. Workers call it from their
/// housekeeping, a few times a second.
pub fn settle() -> bool {
    let ended = HELD.with(|b| {
        let recent = b.last.get().is_some_and(|t| t.elapsed() < MIN_INTERVAL);
        let ended = !recent && has_ended(b.peak.get(), b.now.get());
        if ended {
            b.peak.set(b.now.get());
            b.last.set(Some(Instant::now()));
        }
        ended
    });
    if ended {
        give_back();
    }
    ended
}

/// True when a count at `now` is down from `peak` by a quarter and by at
/// least [`MIN_DROP`].
fn has_ended(peak: usize, now: usize) -> bool {
    let drop = peak.saturating_sub(now);
    drop >= MIN_DROP && drop >= peak / 4
}

/// Asks the allocator to return every free page of every arena to the
/// kernel (glibc's `malloc_trim`). musl's allocator returns freed memory
/// by itself, so this does nothing there.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back() {
    // SAFETY: malloc_trim takes no pointer and only walks the allocator's
    // own free lists, under the allocator's locks; any thread may call it.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Asks the allocator to return every free page (nothing to do here).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn a_burst_has_ended_when_down_by_a_quarter_and_by_enough() {
        let table = [
            // (peak, now, ended)
            (0,     0,    false),
            (300,   0,    true),
            (300,   100,  false), // down by 200 only
            (3000,  2250, true),
            (3000,  2300, false), // down by less than a quarter
            (10000, 7400, true),
        ];
        for (peak, now, ended) in table {
            assert_eq!(has_ended(peak, now), ended, "peak {peak}, now {now}");
        }
    }

    /// Counted per thread: a test thread starts from nothing.
    #[test]
    fn memory_is_given_back_once_per_burst() {
        let held: Vec<Held> = (0..1000).map(|_| hold()).collect();
        assert!(!settle(), "nothing was shed yet");
        drop(held);
        assert!(settle());
        let again: Vec<Held> = (0..1000).map(|_| hold()).collect();
        drop(again);
        assert!(!settle(), "at most once a second");
        HELD.with(|b| b.last.set(None));
        assert!(settle(), "the next burst");
        let few: Vec<Held> = (0..100).map(|_| hold()).collect();
        drop(few);
        assert!(!settle(), "100 is no burst");
    }
}
