//! Smooth weighted round-robin, shared by every worker without a lock.
//!
//! nginx's smooth algorithm spreads picks evenly (weights 5:1:1 give
//! `a a b a c a a`, not `a a a a a b c`). Its state is a vector of running
//! weights, which would need a lock to share between worker threads. The
//! sequence it produces is periodic with period `sum(weights)` (after
//! dividing by their gcd), so we precompute one period once and let workers
//! share a single atomic cursor into it: every worker sees the same exact,
//! interleaved sequence, and a pick costs one `fetch_add`. This module knows
//! node indexes and weights only, not addresses or sockets.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Periods longer than this are scaled down (keeping the weights' ratio to
/// within rounding), so a config with huge weights cannot cost memory.
const MAX_PERIOD: u64 = 1 << 16;

/// A precomputed smooth weighted round-robin schedule with a shared cursor.
#[derive(Debug)]
pub struct Balancer {
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

impl Balancer {
    /// A schedule for nodes with these weights; weight 0 nodes are never
    /// picked. With no positive weight, [`Balancer::pick`] returns `None`.
    pub fn new(weights: &[u32]) -> Self {
        Balancer {
            schedule: smooth_schedule(&scaled(weights)),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next node index in the sequence.
    pub fn pick(&self) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        Some(self.schedule[i] as usize)
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

fn gcd(a: u64, b: u64) -> u64 {
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
        let b = Balancer::new(weights);
        (0..n).map(|_| b.pick().unwrap()).collect()
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
        assert_eq!(Balancer::new(&[0, 0]).pick(), None);
        assert_eq!(Balancer::new(&[]).pick(), None);
    }

    #[test]
    fn huge_weights_keep_a_bounded_period() {
        let b = Balancer::new(&[u32::MAX, 1]);
        assert!(b.schedule.len() as u64 <= MAX_PERIOD + 1);
        assert!(b.schedule.contains(&1));
    }
}
