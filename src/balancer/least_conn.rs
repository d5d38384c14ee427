//! `least_conn`: the position with the fewest requests in flight for its
//! weight, as APISIX scores it: `(1 + in_flight) / weight`, lowest first.
//!
//! The counts come from the caller (they are per process and survive
//! reloads, see `health::Target`); ties go round the positions from a
//! shared cursor, so equal nodes share the load instead of the first one
//! taking it all. Reading the counts and counting the pick are not one
//! atomic step: two workers picking at the same instant may both see the
//! same least-loaded node, which the next picks correct. This module knows
//! positions, weights and counts only.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct LeastConn {
    weights: Vec<u32>,
    cursor: AtomicUsize,
}

impl LeastConn {
    pub fn new(weights: &[u32]) -> LeastConn {
        LeastConn {
            weights: weights.to_vec(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The allowed position with the lowest `(1 + load) / weight`; `None`
    /// when no position with a positive weight is allowed.
    pub fn pick(
        &self,
        load: impl Fn(usize) -> u32,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64, u64)> = None; // (position, 1 + load, weight)
        for k in 0..n {
            let i = (start + k) % n;
            let weight = u64::from(self.weights[i]);
            if weight == 0 || !allowed(i) {
                continue;
            }
            let busy = 1 + u64::from(load(i));
            // busy / weight < best_busy / best_weight, without division.
            let better = best.is_none_or(|(_, b_busy, b_weight)| busy * b_weight < b_busy * weight);
            if better {
                best = Some((i, busy, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn the_least_loaded_for_its_weight_wins() {
        let b = LeastConn::new(&[1, 1, 1]);
        let load = [3, 0, 2];
        assert_eq!(b.pick(|i| load[i], |_| true), Some(1));
        assert_eq!(b.pick(|i| load[i], |i| i != 1), Some(2));
        // Weight 3 with 5 in flight (6/3 = 2) beats weight 1 with 2 (3/1).
        let b = LeastConn::new(&[3, 1]);
        assert_eq!(b.pick(|i| [5, 2][i], |_| true), Some(0));
        assert_eq!(b.pick(|_| 0, |_| false), None);
        assert_eq!(LeastConn::new(&[0]).pick(|_| 0, |_| true), None);
    }

    #[test]
    fn held_requests_spread_by_weight_and_ties_rotate() {
        let b = LeastConn::new(&[2, 1]);
        let load = RefCell::new([0u32; 2]);
        for _ in 0..30 {
            let i = b.pick(|i| load.borrow()[i], |_| true).unwrap();
            load.borrow_mut()[i] += 1;
        }
        let [heavy, light] = *load.borrow();
        assert_eq!(heavy + light, 30);
        assert!(
            (19..=21).contains(&heavy),
            "2:1 weights hold 2:1: {heavy}:{light}"
        );

        let b = LeastConn::new(&[1, 1, 1]);
        let picks: Vec<usize> = (0..3).map(|_| b.pick(|_| 0, |_| true).unwrap()).collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![0, 1, 2],
            "idle equal nodes take turns: {picks:?}"
        );
    }
}
