//! Which `ssls` entry serves a handshake, from the SNI the client sent
//! (RFC 6066 §3), with APISIX's rules: names are compared lower-case and
//! without a trailing dot; an exact name beats a wildcard; `*.example.com`
//! covers exactly one more label (`a.example.com`, not `example.com` nor
//! `a.b.example.com`, as nginx and APISIX's `radixtree_sni` do); a client
//! that sends no SNI (one that connects by IP address) is served as if it
//! had sent `apisix.ssl.fallback_sni`. An unknown name finds nothing, and
//! the handshake fails, whether or not `fallback_sni` is set (APISIX).
//!
//! Pure lookup: no rustls types, so it is tested without certificates and
//! exists in builds without TLS.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Names to entry indexes.
#[derive(Debug, Default, Clone)]
pub struct SniTable {
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, usize>,
    fallback: Option<String>,
}

impl SniTable {
    /// An empty table; `fallback` stands in for a missing SNI.
    pub fn new(fallback: Option<&str>) -> SniTable {
        SniTable {
            fallback: fallback.map(normalize),
            ..SniTable::default()
        }
    }

    /// Adds `name` (exact or `*.suffix`) for entry `index`. The first
    /// entry to claim a name keeps it; false says the name was taken.
    pub fn insert(&mut self, name: &str, index: usize) -> bool {
        let name = normalize(name);
        let (map, key) = match name.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_string()),
            None => (&mut self.exact, name),
        };
        match map.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(index);
                true
            }
        }
    }

    /// The entry for a handshake that sent `sni` (`None`: no SNI).
    pub fn find(&self, sni: Option<&str>) -> Option<usize> {
        let name = match sni {
            Some(s) => normalize(s),
            None => self.fallback.clone()?,
        };
        if let Some(&i) = self.exact.get(&name) {
            return Some(i);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }
}

/// Whether `name` is a valid `snis` item: a host name (letters, digits,
/// `-`, `_`, `.`) or `*.` followed by one.
pub fn is_valid_sni(name: &str) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('.')
        && !host.contains("..")
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Lower-case, without the trailing dot of a fully qualified name.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Says "no certificate for SNI x" at most once per name per minute, so a
/// scanner trying names cannot flood the log.
pub struct UnknownSniLog {
    seen: Mutex<HashMap<String, Instant>>,
}

/// How often one unknown name is logged.
const UNKNOWN_SNI_LOG_EVERY: Duration = Duration::from_secs(60);

/// Names remembered at most; past it, old ones are forgotten first and a
/// flood of new names is logged as a count.
const UNKNOWN_SNI_REMEMBERED: usize = 1024;

impl Default for UnknownSniLog {
    fn default() -> Self {
        UnknownSniLog {
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl UnknownSniLog {
    /// The process's log: one for every listener and worker, kept across
    /// reloads.
    pub fn process() -> &'static UnknownSniLog {
        static LOG: OnceLock<UnknownSniLog> = OnceLock::new();
        LOG.get_or_init(UnknownSniLog::default)
    }

    /// True when `name` was not logged in the last minute (and is now
    /// counted as logged).
    pub fn should_log(&self, name: &str, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = seen.get(name) {
            if now.duration_since(*last) < UNKNOWN_SNI_LOG_EVERY {
                return false;
            }
        }
        if seen.len() >= UNKNOWN_SNI_REMEMBERED {
            seen.retain(|_, last| now.duration_since(*last) < UNKNOWN_SNI_LOG_EVERY);
            if seen.len() >= UNKNOWN_SNI_REMEMBERED {
                return false;
            }
        }
        seen.insert(name.to_string(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SniTable {
        let mut t = SniTable::new(Some("Default.Example."));
        assert!(t.insert("api.example.com", 0));
        assert!(t.insert("*.example.com", 1));
        assert!(t.insert("default.example", 2));
        assert!(t.insert("*.b.example.com", 3));
        assert!(!t.insert("API.example.com.", 4), "first claim wins");
        t
    }

    #[test]
    fn exact_beats_wildcard_and_wildcards_cover_one_label() {
        let t = table();
        for (sni, want) in [
            (Some("api.example.com"), Some(0)),
            (Some("API.Example.COM."), Some(0)),
            (Some("www.example.com"), Some(1)),
            (Some("a.b.example.com"), Some(3)),
            (Some("x.a.b.example.com"), None),
            (Some("example.com"), None),
            (Some("other.org"), None),
            (None, Some(2)),
        ] {
            assert_eq!(t.find(sni), want, "{sni:?}");
        }
    }

    #[test]
    fn no_sni_without_fallback_finds_nothing() {
        let mut t = SniTable::new(None);
        t.insert("*.example.com", 0);
        assert_eq!(t.find(None), None);
    }

    #[test]
    fn valid_names() {
        for ok in ["a.com", "*.a.com", "a_b.c", "localhost", "a.com."] {
            assert!(is_valid_sni(ok), "{ok}");
        }
        for bad in ["", "*", "*.", "a..b", "a b", "*a.com", "a.*.com", ".a"] {
            assert!(!is_valid_sni(bad), "{bad}");
        }
    }

    #[test]
    fn unknown_names_are_logged_once_a_minute() {
        let log = UnknownSniLog::default();
        let t0 = Instant::now();
        assert!(log.should_log("x.org", t0));
        assert!(!log.should_log("x.org", t0 + Duration::from_secs(59)));
        assert!(log.should_log("y.org", t0));
        assert!(log.should_log("x.org", t0 + Duration::from_secs(61)));
    }
}
