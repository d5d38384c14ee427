//! Sorting where code size matters more than speed: configuration builds
//! and metrics scrapes, which sort once per load or scrape.
//!
//! Each `sort_by` with its own element type or comparator is a separate
//! copy of the standard library's sort in the binary (5 to 13 KB each once
//! the comparator is inlined into it). These functions all go through one
//! copy, sorting indices with a comparator behind a reference, and cost a
//! call per comparison. The request path sorts nothing through here.
//! Knows nothing about what it sorts.

use std::cmp::Ordering;

/// The indices `0..len` in the order `cmp` gives them. Stable: indices
/// that compare equal keep their order.
pub(crate) fn order_by(len: usize, cmp: &dyn Fn(usize, usize) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|&a, &b| cmp(a, b));
    order
}

/// Sorts `items` by `cmp`, stably, through [`order_by`].
pub(crate) fn sort_by<T>(items: &mut Vec<T>, cmp: impl Fn(&T, &T) -> Ordering) {
    let order = order_by(items.len(), &|a, b| cmp(&items[a], &items[b]));
    permute(items, order);
}

/// Sorts `items` by the key `key` gives each, stably, through
/// [`order_by`]. Each key is computed once (as `sort_by_cached_key`), not
/// in every comparison.
pub(crate) fn sort_by_cached_key<T, K: Ord>(items: &mut Vec<T>, key: impl Fn(&T) -> K) {
    let keys: Vec<K> = items.iter().map(key).collect();
    let order = order_by(keys.len(), &|a, b| keys[a].cmp(&keys[b]));
    permute(items, order);
}

/// Puts `items` in `order` (each index of `items` once).
fn permute<T>(items: &mut Vec<T>, order: Vec<usize>) {
    let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(order.into_iter().filter_map(|i| slots[i].take()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the test needs no
    /// crate and fails the same way every time.
    fn numbers(seed: u64, n: usize) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect()
    }

    #[test]
    fn sorts_as_the_standard_stable_sort_does() {
        for (seed, n) in [(1, 0), (2, 1), (3, 2), (4, 19), (5, 20), (6, 1000)] {
            // Few distinct keys, so many ties whose order stability decides.
            let items: Vec<(u64, usize)> = numbers(seed, n)
                .into_iter()
                .enumerate()
                .map(|(i, x)| (x % 7, i))
                .collect();
            let mut expected = items.clone();
            expected.sort_by_key(|&(k, _)| k);
            let mut got = items.clone();
            sort_by_cached_key(&mut got, |&(k, _)| k);
            assert_eq!(got, expected, "seed {seed}, {n} items");
            let mut reversed = items;
            sort_by(&mut reversed, |a, b| b.0.cmp(&a.0));
            expected.sort_by_key(|&(k, _)| std::cmp::Reverse(k));
            assert_eq!(reversed, expected, "seed {seed}, {n} items, descending");
        }
    }

    #[test]
    fn order_by_gives_each_index_once_in_key_order() {
        let keys = ["b", "a", "c", "a"];
        assert_eq!(
            order_by(keys.len(), &|a, b| keys[a].cmp(keys[b])),
            [1, 3, 0, 2]
        );
        assert_eq!(order_by(0, &|_, _| Ordering::Equal), Vec::<usize>::new());
    }

    #[test]
    fn owned_items_move_without_copies_or_losses() {
        let mut names: Vec<String> = ["delta", "alpha", "charlie", "bravo"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sort_by(&mut names, |a, b| a.cmp(b));
        assert_eq!(names, ["alpha", "bravo", "charlie", "delta"]);
    }
}
