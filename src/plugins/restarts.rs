//! When a root context that failed may run again: the restart policy of one
//! route's plugin entry, kept per worker by the plugin supervisor
//! (`supervisor.rs`). Pure arithmetic on instants, so it is tested without
//! plugins or clocks.
//!
//! Two bounds, whichever is longer:
//! - **Failures in a row** back off exponentially: the first is retried at
//!   once, the second after [`RESTART_BACKOFF_BASE`], each next one twice as
//!   long up to [`RESTART_BACKOFF_MAX`] (Envoy's `FAIL_RELOAD` schedule). The
//!   run ends when a request of the root context completes, or when the root
//!   context ran [`HEALTHY_PERIOD`] since it was last let back in.
//! - **A restart budget** bounds failures that come between successes (a
//!   plugin that fails every other request would otherwise reset the run
//!   each time and cost one instance restart per failure): a root context
//!   may fail [`RESTART_BURST`] times at once, then once per
//!   [`RESTART_INTERVAL`] (a generic cell rate algorithm, RFC 2697's token
//!   bucket in one timestamp).
//!
//! Every failure of a root context that broke its instance costs at most
//! one instance start, so these bound the restarts it can cause.

use std::time::{Duration, Instant};

/// Wait after a second failure in a row; each further one doubles it.
pub const RESTART_BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Longest wait between two attempts of a root context that keeps failing.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A root context that ran this long since it was let back in was healthy:
/// its next failure starts a new run instead of extending the backoff.
pub const HEALTHY_PERIOD: Duration = Duration::from_secs(10);

/// Failures a root context may have at once before its budget runs out.
pub const RESTART_BURST: u32 = 5;

/// Once its budget ran out, a root context may fail once per interval.
pub const RESTART_INTERVAL: Duration = Duration::from_secs(1);

/// The failure record of one root context.
#[derive(Clone, Debug)]
pub struct Health {
    /// Failures in a row (see the module doc).
    failures: u32,
    /// When the root context was last let back in (the end of its last
    /// backoff), for [`HEALTHY_PERIOD`].
    let_in: Instant,
    /// The budget's theoretical arrival time: the budget is full when this
    /// is not after now, and each failure pushes it one interval on.
    budget_tat: Instant,
    /// While backing off: no attempt before this.
    retry_at: Option<Instant>,
}

impl Health {
    /// The record of a root context that never failed.
    pub fn new(now: Instant) -> Health {
        Health {
            failures: 0,
            let_in: now,
            budget_tat: now,
            retry_at: None,
        }
    }

    /// How much longer the root context backs off; `None` once it may run.
    pub fn backing_off(&self, now: Instant) -> Option<Duration> {
        self.retry_at
            .and_then(|at| at.checked_duration_since(now))
            .filter(|wait| !wait.is_zero())
    }

    /// Records a failure at `now`; returns how long the root context must
    /// wait before its next attempt (zero: at once).
    pub fn failed(&mut self, now: Instant) -> Duration {
        if now.saturating_duration_since(self.let_in) >= HEALTHY_PERIOD {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.budget_tat = self.budget_tat.max(now) + RESTART_INTERVAL;
        let allowance = RESTART_INTERVAL.saturating_mul(RESTART_BURST - 1);
        let over_budget = self
            .budget_tat
            .saturating_duration_since(now)
            .saturating_sub(allowance);
        let delay = backoff_delay(self.failures).max(over_budget);
        self.let_in = now + delay;
        self.retry_at = (!delay.is_zero()).then_some(self.let_in);
        delay
    }

    /// A request of the root context completed: its run of failures ends
    /// (its budget does not refill any faster).
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// True when the record says nothing a fresh one would not: no run of
    /// failures, a full budget and no backoff. It can then be forgotten.
    pub fn is_settled(&self, now: Instant) -> bool {
        self.failures == 0 && self.budget_tat <= now && self.backing_off(now).is_none()
    }
}

/// The wait after `failures` failures in a row: none after one, then
/// [`RESTART_BACKOFF_BASE`] doubling up to [`RESTART_BACKOFF_MAX`].
fn backoff_delay(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => RESTART_BACKOFF_BASE
            .saturating_mul(1 << (n - 2).min(16))
            .min(RESTART_BACKOFF_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn failures_in_a_row_back_off_from_the_second() {
        let secs = |n| backoff_delay(n).as_secs();
        let table: Vec<u64> = (1..=9).map(secs).collect();
        assert_eq!(table, [0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff_delay(u32::MAX), RESTART_BACKOFF_MAX);
    }

    #[test]
    fn a_crash_loop_waits_longer_each_time_it_is_let_back_in() {
        let t0 = Instant::now();
        let mut h = Health::new(t0);
        assert_eq!(h.failed(t0), Duration::ZERO);
        assert_eq!(h.backing_off(t0), None);
        assert_eq!(h.failed(t0 + MS), Duration::from_secs(1));
        assert_eq!(h.backing_off(t0 + 500 * MS), Some(501 * MS));
        let back = t0 + MS + Duration::from_secs(1);
        assert_eq!(h.backing_off(back), None);
        assert_eq!(h.failed(back), Duration::from_secs(2));
        assert_eq!(h.failures(), 3);
    }

    /// Every other request failing (each success ends the run): five
    /// failures at once, then one per second however fast they come.
    #[test]
    fn failures_between_successes_are_bounded_by_the_budget() {
        let t0 = Instant::now();
        let mut h = Health::new(t0);
        let mut now = t0;
        let mut allowed = 0;
        // 2,000 requests 1 ms apart, every other one failing.
        for i in 0..2000u32 {
            now = t0 + MS * i;
            if h.backing_off(now).is_some() {
                continue;
            }
            if i % 2 == 0 {
                h.succeeded();
            } else {
                h.failed(now);
                allowed += 1;
            }
        }
        let elapsed = now - t0;
        assert!(
            allowed <= RESTART_BURST + elapsed.as_secs() as u32 + 1,
            "{allowed} failures in {elapsed:?}"
        );
        assert!(allowed >= RESTART_BURST, "{allowed}");
    }

    #[test]
    fn an_occasional_failure_is_retried_at_once() {
        let t0 = Instant::now();
        let mut h = Health::new(t0);
        for i in 1..RESTART_BURST {
            assert_eq!(h.failed(t0 + MS * i), Duration::ZERO, "failure {i}");
            h.succeeded();
        }
        let last = h.failed(t0 + MS * 10);
        assert!(last > Duration::ZERO, "the budget is spent: {last:?}");
    }

    #[test]
    fn a_healthy_period_ends_the_run_and_a_settled_record_can_go() {
        let t0 = Instant::now();
        let mut h = Health::new(t0);
        h.failed(t0);
        h.failed(t0);
        let later = t0 + Duration::from_secs(1) + HEALTHY_PERIOD;
        assert_eq!(h.failed(later), Duration::ZERO);
        assert_eq!(h.failures(), 1);
        assert!(!h.is_settled(later));
        h.succeeded();
        assert!(h.is_settled(later + RESTART_INTERVAL * RESTART_BURST));
    }
}
