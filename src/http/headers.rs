//! The header map shared by the HTTP layer and the plugin host.
//!
//! A request or response travels through tinygate as one ordered list of
//! `(name, value)` pairs, with HTTP/2-style pseudo-headers (`:method`,
//! `:path`, `:authority`, `:scheme` for requests, `:status` for responses)
//! at the front, exactly as proxy-wasm plugins expect to see them. Names are
//! stored lower-case; values are raw bytes. This module knows nothing about
//! sockets, wire framing or wasm: `http` turns wire bytes into a `HeaderMap`,
//! `wasm` lets plugins edit it, `proxy` turns it back into wire bytes.

/// An ordered multimap of lower-case header names to byte values.
///
/// All names and values live in one byte buffer and the entries are spans
/// of it, so a map costs two allocations however many fields it has, and a
/// map reused with `clear` or `clone_from` costs none. Edits append to the
/// buffer; the space they leave behind is reclaimed when it outgrows what
/// is live.
#[derive(Default)]
pub struct HeaderMap {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Bytes of `bytes` that no entry refers to any more.
    garbage: usize,
}

/// One field: where its name and value are in the buffer.
#[derive(Clone, Copy, Debug)]
struct Entry {
    name: Span,
    value: Span,
}

#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    len: usize,
}

/// Garbage a map may hold before an edit compacts it.
const GARBAGE_SLACK: usize = 4096;

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        HeaderMap {
            bytes: Vec::with_capacity(n * 32),
            entries: Vec::with_capacity(n),
            garbage: 0,
        }
    }

    /// Number of entries, counting repeated names once per entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry, keeping the memory for reuse.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.garbage = 0;
    }

    fn span(&self, s: Span) -> &[u8] {
        &self.bytes[s.start..s.start + s.len]
    }

    fn name_of(&self, e: &Entry) -> &[u8] {
        self.span(e.name)
    }

    /// The entries in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            map: self,
            entries: self.entries.iter(),
        }
    }

    /// The first value for `name` (case-insensitive).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| self.name_of(e).eq_ignore_ascii_case(name))
            .map(|e| self.span(e.value))
    }

    /// True when some entry is named `name` (case-insensitive).
    pub fn contains(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    fn store(&mut self, bytes: &[u8]) -> Span {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len(),
        }
    }

    fn store_lowercase(&mut self, name: &[u8]) -> Span {
        let span = self.store(name);
        self.bytes[span.start..].make_ascii_lowercase();
        span
    }

    /// Appends an entry; the name is lower-cased.
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        let name = self.store_lowercase(name);
        let value = self.store(value);
        self.entries.push(Entry { name, value });
    }

    /// Appends an entry whose name is already lower-case (not checked
    /// again in release builds).
    pub fn add_lowercase(&mut self, lower_name: &[u8], value: &[u8]) {
        debug_assert!(!lower_name.iter().any(u8::is_ascii_uppercase));
        let name = self.store(lower_name);
        let value = self.store(value);
        self.entries.push(Entry { name, value });
    }

    /// Sets `name` to the single value `value`: the first entry keeps its
    /// place, later ones are removed; the entry is appended when absent
    /// (proxy-wasm `replace_header_map_value` semantics).
    pub fn replace(&mut self, name: &[u8], value: &[u8]) {
        let Some(first) = self
            .entries
            .iter()
            .position(|e| self.name_of(e).eq_ignore_ascii_case(name))
        else {
            return self.add(name, value);
        };
        self.garbage += self.entries[first].value.len;
        self.entries[first].value = self.store(value);
        let mut i = 0;
        let mut dropped = 0;
        let bytes = &self.bytes;
        self.entries.retain(|e| {
            i += 1;
            let keep = i - 1 == first
                || !bytes[e.name.start..e.name.start + e.name.len].eq_ignore_ascii_case(name);
            if !keep {
                dropped += e.name.len + e.value.len;
            }
            keep
        });
        self.garbage += dropped;
        self.compact_if_wasteful();
    }

    /// Removes every entry named `name` (case-insensitive); absent is fine.
    pub fn remove(&mut self, name: &[u8]) {
        let mut dropped = 0;
        let bytes = &self.bytes;
        self.entries.retain(|e| {
            let keep = !bytes[e.name.start..e.name.start + e.name.len].eq_ignore_ascii_case(name);
            if !keep {
                dropped += e.name.len + e.value.len;
            }
            keep
        });
        self.garbage += dropped;
        self.compact_if_wasteful();
    }

    /// Replaces the whole content (proxy-wasm `set_header_map_pairs`).
    pub fn set_all<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) {
        self.clear();
        for (k, v) in pairs {
            self.add(k.as_ref(), v.as_ref());
        }
    }

    /// Rewrites the buffer without the bytes no entry uses, once they
    /// outweigh the live ones.
    fn compact_if_wasteful(&mut self) {
        if self.garbage <= GARBAGE_SLACK || self.garbage <= self.bytes.len() / 2 {
            return;
        }
        let mut bytes = Vec::with_capacity(self.bytes.len() - self.garbage);
        for e in &mut self.entries {
            for s in [&mut e.name, &mut e.value] {
                let start = bytes.len();
                bytes.extend_from_slice(&self.bytes[s.start..s.start + s.len]);
                s.start = start;
            }
        }
        self.bytes = bytes;
        self.garbage = 0;
    }
}

impl Clone for HeaderMap {
    fn clone(&self) -> Self {
        let mut copy = HeaderMap::with_capacity(0);
        copy.clone_from(self);
        copy
    }

    /// Reuses `self`'s memory (and leaves the garbage behind).
    fn clone_from(&mut self, source: &Self) {
        self.clear();
        if source.garbage == 0 {
            self.bytes.extend_from_slice(&source.bytes);
            self.entries.extend_from_slice(&source.entries);
        } else {
            for (k, v) in source.iter() {
                self.add_lowercase(k, v);
            }
        }
    }
}

impl PartialEq for HeaderMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for HeaderMap {}

impl std::fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

/// The entries of a [`HeaderMap`] in order, as `(name, value)`.
pub struct Iter<'a> {
    map: &'a HeaderMap,
    entries: std::slice::Iter<'a, Entry>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let e = self.entries.next()?;
        Some((self.map.span(e.name), self.map.span(e.value)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<'a> IntoIterator for &'a HeaderMap {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.add(k.as_bytes(), v.as_bytes());
        }
        m
    }

    #[test]
    fn replace_keeps_first_position_and_drops_duplicates() {
        let mut m = map(&[("a", "1"), ("X-Y", "2"), ("b", "3"), ("x-y", "4")]);
        m.replace(b"x-Y", b"9");
        assert_eq!(m, map(&[("a", "1"), ("x-y", "9"), ("b", "3")]));
    }

    #[test]
    fn replace_appends_when_absent() {
        let mut m = map(&[("a", "1")]);
        m.replace(b"B", b"2");
        assert_eq!(m, map(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn edits_reclaim_their_garbage_and_keep_order() {
        let mut m = map(&[("a", "1"), ("b", "2")]);
        for i in 0..10_000 {
            m.replace(b"a", format!("value {i}").as_bytes());
            m.add(b"c", b"x");
            m.remove(b"c");
        }
        assert_eq!(m, map(&[("a", "value 9999"), ("b", "2")]));
        assert!(m.bytes.len() < 3 * GARBAGE_SLACK, "{}", m.bytes.len());
        let mut copy = HeaderMap::new();
        copy.clone_from(&m);
        assert_eq!(copy, m);
        assert_eq!(copy.garbage, 0);
    }

    #[test]
    fn get_is_case_insensitive() {
        let m = map(&[("Content-Type", "text/plain")]);
        assert_eq!(m.get(b"content-type"), Some(&b"text/plain"[..]));
    }
}
