//! The health of one node of one upstream: a state and four counters, in
//! one atomic word shared by every worker and the active checker.
//!
//! The rules are lua-resty-healthcheck's, which APISIX uses: a node has a
//! success counter and three failure counters (HTTP, TCP, timeout). A
//! failure resets the success counter; a success resets the three failure
//! counters. A counter that reaches its threshold moves the node to
//! `healthy` or `unhealthy`; a failure seen by a healthy node makes it
//! `mostly_healthy` (still used), a success seen by an unhealthy node makes
//! it `mostly_unhealthy` (still skipped). Successes of a fully healthy node
//! and failures of a fully unhealthy one are not counted, so the steady
//! state costs one atomic load. A threshold of 0 turns that kind of report
//! off. This module knows counters and thresholds, not sockets, configs or
//! what a report was about.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Where a node stands, as APISIX's Control API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Healthy, but failures were seen since the last success.
    MostlyHealthy,
    /// Unhealthy, but successes were seen since the last failure.
    MostlyUnhealthy,
    Unhealthy,
}

impl Health {
    /// True when balancers may pick the node.
    pub fn is_usable(self) -> bool {
        matches!(self, Health::Healthy | Health::MostlyHealthy)
    }

    /// The name APISIX's Control API uses.
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::MostlyHealthy => "mostly_healthy",
            Health::MostlyUnhealthy => "mostly_unhealthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    fn from_bits(bits: u64) -> Health {
        match bits & 3 {
            0 => Health::Healthy,
            1 => Health::MostlyHealthy,
            2 => Health::MostlyUnhealthy,
            _ => Health::Unhealthy,
        }
    }

    fn bits(self) -> u64 {
        match self {
            Health::Healthy => 0,
            Health::MostlyHealthy => 1,
            Health::MostlyUnhealthy => 2,
            Health::Unhealthy => 3,
        }
    }
}

/// What was observed about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A probe or a response that counts as healthy.
    Success,
    /// An HTTP status that counts as unhealthy (or no valid status line).
    HttpFailure,
    /// Connect, send or receive failed.
    TcpFailure,
    /// Connect, send or receive took longer than allowed.
    Timeout,
}

impl Report {
    /// Bit offset of this report's counter in the packed word.
    fn shift(self) -> u32 {
        match self {
            Report::Success => 0,
            Report::HttpFailure => 8,
            Report::TcpFailure => 16,
            Report::Timeout => 24,
        }
    }

    /// The state this kind of report drives a node towards.
    fn towards(self) -> Health {
        match self {
            Report::Success => Health::Healthy,
            _ => Health::Unhealthy,
        }
    }
}

/// A node's counters, as the Control API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub success: u8,
    pub http_failure: u8,
    pub tcp_failure: u8,
    pub timeout_failure: u8,
}

/// The health state and load of one node of one upstream.
#[derive(Debug)]
pub struct Target {
    /// The node's address (what is probed, unless `checks.active.port`).
    pub addr: SocketAddr,
    /// Bits 0..32: success, HTTP, TCP and timeout counters (8 bits each);
    /// bits 32..34: the [`Health`].
    packed: AtomicU64,
    /// Requests being served by this node right now, in this process
    /// (what `least_conn` balances on).
    in_flight: AtomicU32,
}

/// Counters and state after a change of state: `(from, to)`.
pub type Transition = (Health, Health);

const COUNTERS: u64 = 0xffff_ffff;
const SUCCESS_MASK: u64 = 0xff;
const FAILURE_MASK: u64 = 0xffff_ff00;

impl Target {
    /// A node that starts healthy with zero counters, as APISIX adds them.
    pub fn new(addr: SocketAddr) -> Target {
        Target {
            addr,
            packed: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
        }
    }

    pub fn health(&self) -> Health {
        Health::from_bits(self.packed.load(Ordering::Relaxed) >> 32)
    }

    /// True when balancers may pick this node.
    pub fn is_usable(&self) -> bool {
        self.health().is_usable()
    }

    pub fn counters(&self) -> Counters {
        let p = self.packed.load(Ordering::Relaxed);
        let at = |shift: u32| ((p >> shift) & 0xff) as u8;
        Counters {
            success: at(Report::Success.shift()),
            http_failure: at(Report::HttpFailure.shift()),
            tcp_failure: at(Report::TcpFailure.shift()),
            timeout_failure: at(Report::Timeout.shift()),
        }
    }

    /// Counts `report` against `threshold` (0: this kind is not counted).
    /// Returns the change of state it caused, if any, and the counter's
    /// new value.
    pub fn report(&self, report: Report, threshold: u8) -> Option<(Transition, u8)> {
        if threshold == 0 {
            return None;
        }
        let towards = report.towards();
        let mut current = self.packed.load(Ordering::Relaxed);
        loop {
            let health = Health::from_bits(current >> 32);
            if health == towards {
                return None; // fully there already: nothing to count
            }
            let shift = report.shift();
            let count = (((current >> shift) & 0xff) + 1).min(0xff);
            let with_count = (current & COUNTERS & !(0xff << shift)) | (count << shift);
            let counters = match report {
                Report::Success => with_count & SUCCESS_MASK,
                _ => with_count & FAILURE_MASK,
            };
            let next = if count >= u64::from(threshold) {
                towards
            } else if health == Health::Healthy && counters & FAILURE_MASK != 0 {
                Health::MostlyHealthy
            } else if health == Health::Unhealthy && counters & SUCCESS_MASK != 0 {
                Health::MostlyUnhealthy
            } else {
                health
            };
            let packed = (next.bits() << 32) | counters;
            match self.packed.compare_exchange_weak(
                current,
                packed,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let changed =
                        (next.is_usable() != health.is_usable()).then_some((health, next));
                    return changed.map(|t| (t, count as u8));
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Requests this node serves right now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one more request on this node.
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request less (never below zero).
    pub fn end(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::new("127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn failures_take_a_node_out_at_the_threshold_and_successes_bring_it_back() {
        let t = target();
        assert!(t.report(Report::TcpFailure, 2).is_none());
        assert_eq!(t.health(), Health::MostlyHealthy);
        assert!(t.is_usable());
        let ((from, to), count) = t.report(Report::TcpFailure, 2).expect("a change");
        assert_eq!(
            (from, to, count),
            (Health::MostlyHealthy, Health::Unhealthy, 2)
        );
        assert!(!t.is_usable());
        // Failures of a fully unhealthy node are not counted.
        assert!(t.report(Report::TcpFailure, 2).is_none());
        assert_eq!(t.counters().tcp_failure, 2);

        assert!(t.report(Report::Success, 3).is_none());
        assert_eq!(t.health(), Health::MostlyUnhealthy);
        assert_eq!(
            t.counters(),
            Counters {
                success: 1,
                ..Counters::default()
            },
            "a success resets every failure counter"
        );
        assert!(t.report(Report::Success, 3).is_none());
        let ((_, to), _) = t.report(Report::Success, 3).expect("healthy again");
        assert_eq!(to, Health::Healthy);
        // Successes of a fully healthy node are not counted.
        assert!(t.report(Report::Success, 3).is_none());
        assert_eq!(t.counters().success, 3);
    }

    #[test]
    fn a_failure_resets_successes_and_kinds_count_apart() {
        let t = target();
        t.report(Report::HttpFailure, 5);
        t.report(Report::Timeout, 3);
        t.report(Report::HttpFailure, 5);
        let c = t.counters();
        assert_eq!(
            (c.http_failure, c.timeout_failure, c.tcp_failure),
            (2, 1, 0)
        );
        t.report(Report::Success, 5);
        assert_eq!(t.counters().http_failure, 0);
        assert_eq!(
            t.health(),
            Health::MostlyHealthy,
            "one success is not enough"
        );
        t.report(Report::HttpFailure, 5);
        assert_eq!(t.counters().success, 0);
    }

    #[test]
    fn a_zero_threshold_turns_a_kind_off() {
        let t = target();
        for _ in 0..10 {
            assert!(t.report(Report::Timeout, 0).is_none());
        }
        assert_eq!(t.health(), Health::Healthy);
        assert_eq!(t.counters(), Counters::default());
    }

    #[test]
    fn counters_saturate() {
        let t = target();
        t.report(Report::HttpFailure, 255);
        for _ in 0..300 {
            t.report(Report::HttpFailure, 255);
        }
        assert_eq!(t.health(), Health::Unhealthy);
        assert_eq!(t.counters().http_failure, 255);
    }

    #[test]
    fn in_flight_never_goes_below_zero() {
        let t = target();
        t.begin();
        t.end();
        t.end();
        assert_eq!(t.in_flight(), 0);
    }
}
