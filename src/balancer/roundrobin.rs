//! Smooth weighted round-robin, shared by every worker without a lock.
//!
//! nginx's smooth algorithm spreads picks evenly (weights 5:1:1 give
//! `a a b a c a a`, not `a a a a a b c`). Its state is a vector of running
//! weights, which would need a lock to share between worker threads. The
//! sequence it produces is periodic with period `sum(weights)` (after
//! dividing by their gcd), so we precompute one period once and let workers
//! share a single atomic cursor into it: every worker sees the same exact,
//! interleaved sequence, and a pick costs one `fetch_add`.
//!
//! When the node the sequence names may not be used (unhealthy, or already
//! tried by this request), the pick falls back to a weighted choice among
//! the nodes that may, driven by a second cursor: over many picks each
//! usable node gets its share of the weights, as APISIX's picker rebuilt
//! from the healthy nodes gives. This module knows positions and weights
//! only, not addresses, health or sockets.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Periods longer than this are scaled down (keeping the weights' ratio to
/// within rounding), so a config with huge weights cannot cost memory.
const MAX_PERIOD: u64 = 1 << 16;

/// A precomputed smooth weighted round-robin schedule with a shared cursor.
#[derive(Debug)]
pub struct RoundRobin {
    schedule: Vec<u32>,
    /// The weights the schedule was made from (scaled).
    weights: Vec<u64>,
    cursor: AtomicUsize,
    /// Drives the weighted choice when the schedule's node may not be used.
    fallback: AtomicUsize,
}

impl RoundRobin {
    /// A schedule for positions with these weights; weight 0 positions are
    /// never picked.
    pub fn new(weights: &[u32]) -> Self {
        let weights = scaled(weights);
        RoundRobin {
            schedule: smooth_schedule(&weights),
            weights,
            cursor: AtomicUsize::new(0),
            fallback: AtomicUsize::new(0),
        }
    }

    /// The next position in the sequence that `allowed` accepts; `None`
    /// when it accepts no position with a positive weight.
    pub fn pick(&self, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        let first = self.schedule[i] as usize;
        if allowed(first) {
            return Some(first);
        }
        let usable = |(i, w): (usize, &u64)| (*w > 0 && allowed(i)).then_some((i, *w));
        let total: u64 = self
            .weights
            .iter()
            .enumerate()
            .filter_map(usable)
            .map(|(_, w)| w)
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = self.fallback.fetch_add(1, Ordering::Relaxed) as u64 % total;
        for (i, w) in self.weights.iter().enumerate().filter_map(usable) {
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

/// Weights divided by their gcd, and scaled down if their sum is too long a
/// period (every positive weight stays ≥ 1).
fn scaled(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let sum: u64 = reduced.iter().sum();
    if sum <= MAX_PERIOD {
        return reduced;
    }
    reduced
        .iter()
        .map(|&w| {
            if w == 0 {
                0
            } else {
                (w * MAX_PERIOD / sum).max(1)
            }
        })
        .collect()
}

/// Greatest common divisor (0 with 0 is 0).
pub fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One period of nginx's smooth weighted round-robin: each step, add every
/// weight to its running total, pick the largest total (first on ties), and
/// subtract the sum of weights from it.
fn smooth_schedule(weights: &[u64]) -> Vec<u32> {
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] || weights[best] == 0 {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(weights: &[u32], n: usize) -> Vec<usize> {
        let b = RoundRobin::new(weights);
        (0..n).map(|_| b.pick(|_| true).unwrap()).collect()
    }

    #[test]
    fn matches_nginx_smooth_sequence() {
        // nginx's own example: weights a=5, b=1, c=1.
        assert_eq!(picks(&[5, 1, 1], 7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn three_to_one_is_interleaved_and_exact() {
        let p = picks(&[3, 1], 400);
        assert_eq!(p.iter().filter(|&&i| i == 0).count(), 300);
        assert_eq!(&p[..8], &[0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn zero_weights_are_skipped() {
        assert_eq!(picks(&[0, 2, 0], 3), vec![1, 1, 1]);
        assert_eq!(RoundRobin::new(&[0, 0]).pick(|_| true), None);
        assert_eq!(RoundRobin::new(&[]).pick(|_| true), None);
    }

    #[test]
    fn huge_weights_keep_a_bounded_period() {
        let b = RoundRobin::new(&[u32::MAX, 1]);
        assert!(b.schedule.len() as u64 <= MAX_PERIOD + 1);
        assert!(b.schedule.contains(&1));
    }

    #[test]
    fn excluded_positions_leave_the_others_their_weighted_shares() {
        // 100:1 with the heavy node excluded: every pick finds the light one.
        let b = RoundRobin::new(&[100, 1]);
        for _ in 0..500 {
            assert_eq!(b.pick(|i| i != 0), Some(1));
        }
        // 1:2:3 with the first excluded: 2:3 between the others.
        let b = RoundRobin::new(&[1, 2, 3]);
        let mut counts = [0usize; 3];
        for _ in 0..6000 {
            counts[b.pick(|i| i != 0).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert_eq!(counts[1] + counts[2], 6000);
        let ratio = counts[2] as f64 / counts[1] as f64;
        assert!((1.4..1.6).contains(&ratio), "{counts:?}");
        assert_eq!(b.pick(|_| false), None);
    }
}
