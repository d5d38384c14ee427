//! `chash`: a consistent-hash ring with virtual nodes.
//!
//! Each node gets 160 points on a 64-bit ring per unit of weight (after
//! dividing the weights by their gcd), as `resty.chash` does for APISIX; a
//! point's place is a hash of the node's `host:port` and the point's
//! number, so a node keeps its points whatever other nodes come and go.
//! A key maps to the first point at or after its hash: adding a node to N
//! moves only the keys that fall on its points, about 1/(N+1) of them, and
//! removing one moves only its own keys. When the node found may not be
//! used (unhealthy, or tried already by this request) the walk goes on
//! along the ring to the next node that may, as APISIX's retries do, so a
//! key keeps landing on the same fallback. This module knows positions,
//! names and bytes, not requests or health.

use super::roundrobin::gcd;

/// Points per unit of (gcd-reduced) weight, as `resty.chash`.
const POINTS_PER_WEIGHT: u64 = 160;

/// Rings larger than this are scaled down, so huge weights cannot cost
/// memory (each point is 16 bytes).
const MAX_POINTS: u64 = 1 << 18;

#[derive(Debug)]
pub struct Ring {
    /// (place, position), sorted by place.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// A ring over positions named by `ids` (their `host:port`) with these
    /// weights; weight 0 positions get no points.
    pub fn new(ids: &[&str], weights: &[u32]) -> Ring {
        let g = weights
            .iter()
            .fold(0u64, |g, &w| gcd(g, u64::from(w)))
            .max(1);
        let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
        let total: u64 = reduced.iter().sum::<u64>() * POINTS_PER_WEIGHT;
        let mut points = Vec::with_capacity(total.min(MAX_POINTS) as usize);
        for (position, (id, &w)) in ids.iter().zip(&reduced).enumerate() {
            let mut count = w * POINTS_PER_WEIGHT;
            if total > MAX_POINTS && count > 0 {
                count = (count * MAX_POINTS / total).max(1);
            }
            for point in 0..count {
                let mut seed = Vec::with_capacity(id.len() + 12);
                seed.extend_from_slice(id.as_bytes());
                seed.push(b'#');
                seed.extend_from_slice(point.to_string().as_bytes());
                points.push((hash(&seed), position as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The first position `allowed` accepts, walking the ring from where
    /// `key` falls; `None` when it accepts none.
    pub fn pick(&self, key: &[u8], allowed: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let place = hash(key);
        let start = self.points.partition_point(|&(p, _)| p < place);
        let mut refused: Vec<u32> = Vec::new();
        for k in 0..self.points.len() {
            let (_, position) = self.points[(start + k) % self.points.len()];
            if refused.contains(&position) {
                continue;
            }
            if allowed(position as usize) {
                return Some(position as usize);
            }
            refused.push(position);
        }
        None
    }
}

/// FNV-1a over `bytes`, then MurmurHash3's 64-bit finalizer so that close
/// inputs (`a#1`, `a#2`) land far apart. Stable across builds and
/// platforms, so a key keeps its node across restarts.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    fn ring(ids: &[String], weights: &[u32]) -> Ring {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        Ring::new(&ids, weights)
    }

    fn owner(r: &Ring, ids: &[String], key: &str) -> String {
        ids[r.pick(key.as_bytes(), |_| true).unwrap()].clone()
    }

    #[test]
    fn adding_a_node_moves_about_one_in_n_plus_one_keys_all_to_it() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let four = names(4);
        let five = names(5);
        let before = ring(&four, &[1; 4]);
        let after = ring(&five, &[1; 5]);
        let mut moved = 0;
        for k in &keys {
            let (a, b) = (owner(&before, &four, k), owner(&after, &five, k));
            if a != b {
                moved += 1;
                assert_eq!(b, five[4], "a moved key goes to the new node");
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!(
            (0.15..0.25).contains(&share),
            "moved {share:.3}, expected ~0.2"
        );
    }

    #[test]
    fn weights_share_keys_and_a_refused_node_falls_to_a_stable_next() {
        let ids = names(2);
        let r = ring(&ids, &[3, 1]);
        let keys: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
        let heavy = keys.iter().filter(|k| owner(&r, &ids, k) == ids[0]).count();
        let share = heavy as f64 / keys.len() as f64;
        assert!((0.70..0.80).contains(&share), "{share:.3}");

        let ids = names(3);
        let r = ring(&ids, &[1, 1, 1]);
        for k in &keys[..500] {
            let first = r.pick(k.as_bytes(), |_| true).unwrap();
            let next = r.pick(k.as_bytes(), |i| i != first).unwrap();
            assert_ne!(first, next);
            assert_eq!(r.pick(k.as_bytes(), |i| i != first), Some(next), "stable");
        }
        assert_eq!(r.pick(b"x", |_| false), None);
        assert_eq!(Ring::new(&[], &[]).pick(b"x", |_| true), None);
    }

    #[test]
    fn the_hash_is_stable() {
        // Pinned: a change here would move every key of every ring.
        assert_eq!(hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash(b"user-1"), 0x41a2_fca5_c684_01c5);
        assert_ne!(hash(b"a#1"), hash(b"a#2"));
    }
}
