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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        HeaderMap {
            entries: Vec::with_capacity(n),
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

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// The first value for `name` (case-insensitive).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// True when some entry is named `name` (case-insensitive).
    pub fn contains(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Appends an entry; the name is lower-cased.
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// Appends an entry whose name is already lower-case, without copying.
    pub fn push_owned(&mut self, lower_name: Vec<u8>, value: Vec<u8>) {
        debug_assert!(!lower_name.iter().any(u8::is_ascii_uppercase));
        self.entries.push((lower_name, value));
    }

    /// Sets `name` to the single value `value`: the first entry keeps its
    /// place, later ones are removed; the entry is appended when absent
    /// (proxy-wasm `replace_header_map_value` semantics).
    pub fn replace(&mut self, name: &[u8], value: &[u8]) {
        match self
            .entries
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                self.entries[first].1 = value.to_vec();
                let mut i = 0;
                self.entries.retain(|(k, _)| {
                    i += 1;
                    i - 1 == first || !k.eq_ignore_ascii_case(name)
                });
            }
            None => self.add(name, value),
        }
    }

    /// Removes every entry named `name` (case-insensitive); absent is fine.
    pub fn remove(&mut self, name: &[u8]) {
        self.entries.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// Replaces the whole content (proxy-wasm `set_header_map_pairs`).
    pub fn set_all(&mut self, pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
        self.entries.clear();
        for (mut k, v) in pairs {
            k.make_ascii_lowercase();
            self.entries.push((k, v));
        }
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
    fn get_is_case_insensitive() {
        let m = map(&[("Content-Type", "text/plain")]);
        assert_eq!(m.get(b"content-type"), Some(&b"text/plain"[..]));
    }
}
