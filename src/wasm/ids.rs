//! [`IdMap`]: the hash map for the ids the host hands out itself (context
//! ids, HTTP call ids), looked up several times on every call into a VM.
//!
//! The keys are small integers chosen by the host, never by a plugin (a
//! plugin can only look ids up), so they need no DoS-resistant hashing: one
//! multiplication spreads them over the table, where SipHash cost more than
//! the lookup itself. Knows nothing about what the ids name.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by a host-assigned id.
pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of one integer key: the low bits (the bucket) are a
/// bijection of the key's low bits, the high bits (hashbrown's tag) mix
/// all of them.
#[derive(Clone, Copy, Default)]
pub(crate) struct IdHasher {
    hash: u64,
}

/// 2^64 divided by the golden ratio, odd.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.hash = (self.hash.rotate_left(5) ^ n).wrapping_mul(GOLDEN);
    }

    /// Not used by `u32` keys; any byte string still hashes correctly.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_fill_distinct_buckets() {
        let bucket = |id: u32| {
            let mut h = IdHasher::default();
            h.write_u32(id);
            h.finish() & 1023
        };
        let mut seen: Vec<u64> = (1..=1024).map(bucket).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 1024);
    }

    #[test]
    fn behaves_as_a_map() {
        let mut m: IdMap<&str> = IdMap::default();
        m.insert(7, "seven");
        m.insert(u32::MAX, "max");
        assert_eq!(m.get(&7), Some(&"seven"));
        assert_eq!(m.remove(&u32::MAX), Some("max"));
        assert_eq!(m.get(&8), None);
    }
}
