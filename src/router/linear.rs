//! The router tinygate had before the radix tree, kept as the oracle for
//! the property test (`prop_tests.rs`): it sorts every (route, uri) pair
//! into precedence order and scans them all for each request. Test-only;
//! its sort key is written out again on purpose, so the test compares two
//! independent statements of the rules.

use crate::config::{HostMatch, Route, UriMatch};
use std::cmp::Reverse;
use std::sync::Arc;

/// The routes of one configuration, ordered for first-match lookup.
#[derive(Debug, Default)]
pub struct LinearRouter {
    /// (route index, uri index) pairs, best candidates first.
    order: Vec<(usize, usize)>,
}

impl LinearRouter {
    /// Builds the lookup order for `routes`.
    pub fn new(routes: &[Arc<Route>]) -> Self {
        let mut order: Vec<(usize, usize)> = Vec::new();
        for (r, route) in routes.iter().enumerate() {
            for u in 0..route.uris.len() {
                order.push((r, u));
            }
        }
        // Sort key: host-specific first, exact before prefix, longer
        // prefix first, higher priority first; stable keeps file order.
        order.sort_by_key(|&(r, u)| {
            let route = &routes[r];
            let (exact, len) = match &route.uris[u] {
                UriMatch::Exact(p) => (true, p.len()),
                UriMatch::Prefix(p) => (false, p.len()),
            };
            (
                route.hosts.is_empty(),
                !exact,
                Reverse(len),
                Reverse(route.priority),
            )
        });
        LinearRouter { order }
    }

    /// Every matching route for this request, best first: the old `find`
    /// was the first of these.
    pub fn candidates(
        &self,
        routes: &[Arc<Route>],
        method: &str,
        host: &str,
        path: &str,
    ) -> Vec<usize> {
        self.order
            .iter()
            .filter(|&&(r, u)| {
                let route = &routes[r];
                let uri_ok = match &route.uris[u] {
                    UriMatch::Exact(p) => p == path,
                    UriMatch::Prefix(p) => path.starts_with(p.as_str()),
                };
                uri_ok
                    && (route.methods.is_empty() || route.methods.iter().any(|m| m == method))
                    && (route.hosts.is_empty() || route.hosts.iter().any(|h| host_matches(h, host)))
            })
            .map(|&(r, _)| r)
            .collect()
    }
}

fn host_matches(pattern: &HostMatch, host: &str) -> bool {
    match pattern {
        HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
        HostMatch::Suffix(s) => {
            host.len() > s.len()
                && host.is_char_boundary(host.len() - s.len())
                && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
        }
    }
}
