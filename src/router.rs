//! Picks the route for a request, as APISIX's `radixtree_host_uri` does.
//!
//! Order of preference: routes whose host matches beat host-less routes; an
//! exact `uri` beats a prefix; a longer prefix beats a shorter one; among
//! equals, higher `priority` wins, then file order. `methods` filter. The
//! candidates are sorted once when the table is built, so a lookup is a scan
//! that stops at the first match. This module knows routes' match rules
//! only: no sockets, upstreams or plugins.

use crate::config::{HostMatch, Route, UriMatch};
use std::cmp::Reverse;

/// The routes of one configuration, ordered for first-match lookup.
#[derive(Debug, Default)]
pub struct Router {
    /// (route index, uri index) pairs, best candidates first.
    order: Vec<(usize, usize)>,
}

impl Router {
    /// Builds the lookup order for `routes`.
    pub fn new(routes: &[Route]) -> Self {
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
        Router { order }
    }

    /// The index of the route for this request, if any. `host` is the
    /// request's host without port; `path` excludes the query string.
    pub fn find(&self, routes: &[Route], method: &str, host: &str, path: &str) -> Option<usize> {
        self.order.iter().find_map(|&(r, u)| {
            let route = &routes[r];
            let uri_ok = match &route.uris[u] {
                UriMatch::Exact(p) => p == path,
                UriMatch::Prefix(p) => path.starts_with(p.as_str()),
            };
            (uri_ok
                && (route.methods.is_empty() || route.methods.iter().any(|m| m == method))
                && (route.hosts.is_empty() || route.hosts.iter().any(|h| host_matches(h, host))))
            .then_some(r)
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_routes;

    const TABLE: &str = r#"
routes:
  - {id: catchall, uri: "/*", plugins: {}}
  - {id: api, uri: "/api/*", plugins: {}}
  - {id: api-v2, uri: "/api/v2/*", plugins: {}}
  - {id: exact, uri: /api/status, plugins: {}}
  - {id: post-only, uri: /submit, methods: [POST], plugins: {}}
  - {id: low, uri: /same, priority: 1, plugins: {}}
  - {id: high, uri: /same, priority: 5, plugins: {}}
  - {id: hosted, uri: "/*", host: "*.example.com", plugins: {}}
  - {id: exact-host, uri: "/api/*", host: api.test, plugins: {}}
#END
"#;

    fn check(cases: &[(&str, &str, &str, Option<&str>)]) {
        let routes = parse_routes("t.yaml", TABLE, &[]).unwrap().routes;
        let router = Router::new(&routes);
        for (method, host, path, want) in cases {
            let got = router
                .find(&routes, method, host, path)
                .map(|i| routes[i].id.as_str());
            assert_eq!(got, *want, "{method} {host}{path}");
        }
    }

    #[test]
    fn match_table() {
        check(&[
            ("GET", "x", "/", Some("catchall")),
            ("GET", "x", "/api/users", Some("api")),
            ("GET", "x", "/api/v2/users", Some("api-v2")),
            ("GET", "x", "/api/status", Some("exact")),
            ("GET", "x", "/api/statusx", Some("api")),
            ("POST", "x", "/submit", Some("post-only")),
            ("GET", "x", "/submit", Some("catchall")),
            ("GET", "x", "/same", Some("high")),
            ("GET", "www.example.com", "/api/x", Some("hosted")),
            ("GET", "example.com", "/x", Some("catchall")),
            ("GET", "API.test", "/api/x", Some("exact-host")),
            ("GET", "api.test", "/other", Some("catchall")),
        ]);
    }

    #[test]
    fn no_route_is_none() {
        let routes = parse_routes("t.yaml", "routes:\n  - {uri: /a, plugins: {}}\n#END\n", &[])
            .unwrap()
            .routes;
        assert_eq!(Router::new(&routes).find(&routes, "GET", "h", "/b"), None);
    }
}
