//! Picks the route for a request, as APISIX's `radixtree_host_uri` does,
//! in time that does not grow with the number of routes.
//!
//! Order of preference: routes whose host matches beat host-less routes; an
//! exact `uri` beats a prefix; a longer prefix beats a shorter one; among
//! equals, higher `priority` wins, then file order. `methods` filter.
//!
//! Every (route, uri) pair gets its rank in that order when the table is
//! built. Host-less pairs go into one radix tree over uris; pairs of routes
//! with hosts go into one such uri tree per host pattern, found through a
//! radix tree over hosts read backwards (so `*.example.com` is a prefix of
//! `www.example.com`, as in APISIX). A lookup walks the host once and the
//! path once per matching host pattern, then merges the candidates of
//! those few trees by rank. The result is a lazy sequence of candidates in
//! precedence order ([`Candidates`]), so a caller whose own checks refuse
//! one (`vars`, `remote_addrs`) gets the next, as APISIX falls through.
//!
//! The host and path arrive normalised (the HTTP layer does that); hosts
//! compare case-insensitively here. This module knows routes' match rules
//! only: no sockets, upstreams or plugins.
//!
//! Why not `matchit` or `path-tree`: both return one route per path and
//! refuse overlapping patterns (two routes on `/same` with different
//! `priority` or `methods`), have no host dimension, and cannot yield the
//! next candidate when a route's own conditions fail.

#[cfg(test)]
mod linear;
#[cfg(test)]
mod prop_tests;
mod tree;

use crate::config::{HostMatch, Route, UriMatch};
use std::cmp::Reverse;
use std::sync::Arc;
use tree::{NodeId, RadixTree, NONE};

/// The routes of one configuration, indexed for lookup.
#[derive(Debug)]
pub struct Router {
    /// Host patterns read backwards, lower-case; each names uri trees.
    hosts: RadixTree<HostSlot>,
    /// Uri trees of routes with hosts, indexed by [`HostSlot`] ids.
    by_host: Vec<UriTree>,
    /// The uri tree of host-less routes.
    any_host: UriTree,
    /// Method names that routes list, interned to bits of [`MethodSet`].
    method_names: Vec<Box<str>>,
}

/// The candidate routes for one request, best first, as route indexes. A
/// route with several uris that match may come more than once.
pub struct Candidates<'r> {
    streams: Streams<'r>,
    method: MethodSet,
    /// Rank of the entry yielded last: one (route, uri) pair can be reached
    /// through two host patterns of its route (`a.test` and `*.test`).
    last_rank: Option<u32>,
}

impl Router {
    /// Builds the index for `routes`.
    pub fn new(routes: &[Arc<Route>]) -> Self {
        let mut router = Router {
            hosts: RadixTree::new(),
            by_host: Vec::new(),
            any_host: UriTree::new(),
            method_names: Vec::new(),
        };
        let method_sets: Vec<MethodSet> = routes
            .iter()
            .map(|route| router.intern_methods(&route.methods))
            .collect();
        for (rank, (r, u)) in precedence(routes).into_iter().enumerate() {
            let route = &routes[r];
            let entry = Entry {
                rank: u32::try_from(rank).expect("fewer than 2^32 route uris"),
                route: u32::try_from(r).expect("fewer than 2^32 routes"),
                methods: method_sets[r],
            };
            let uri = &route.uris[u];
            if route.hosts.is_empty() {
                add_uri(&mut router.any_host, uri, entry);
            }
            for host in &route.hosts {
                let tree = router.host_tree(host);
                add_uri(&mut router.by_host[tree], uri, entry);
            }
        }
        router.any_host.link_up(|slot| !slot.prefix.is_empty());
        for tree in &mut router.by_host {
            tree.link_up(|slot| !slot.prefix.is_empty());
        }
        router.hosts.link_up(|slot| slot.wildcard.is_some());
        router
    }

    /// The first candidate for this request that `accept` takes. `host` is
    /// the request's host without port; `path` excludes the query string.
    pub fn find(
        &self,
        method: &str,
        host: &str,
        path: &str,
        accept: impl FnMut(&usize) -> bool,
    ) -> Option<usize> {
        self.candidates(method, host, path).find(accept)
    }

    /// Every route that matches this request's host, path and method, in
    /// precedence order (route indexes), computed as it is consumed.
    pub fn candidates<'r>(&'r self, method: &str, host: &str, path: &str) -> Candidates<'r> {
        let mut streams = Streams::new(UriCursor::start(&self.any_host, path));
        let method = self.method_bit(method);
        if self.by_host.is_empty() {
            return Candidates::new(streams, method);
        }
        let walk = self.hosts.walk(&HostKey::new(host));
        if walk.whole {
            if let Some(tree) = self.hosts.value(walk.node).exact {
                streams.push(UriCursor::start(&self.by_host[tree], path));
            }
        }
        // A wildcard needs at least one byte of host before its suffix, so
        // the node the host ends on offers its exact pattern only.
        let mut node = if walk.whole || self.hosts.value(walk.node).wildcard.is_none() {
            self.hosts.up(walk.node)
        } else {
            walk.node
        };
        while node != NONE {
            if let Some(tree) = self.hosts.value(node).wildcard {
                streams.push(UriCursor::start(&self.by_host[tree], path));
            }
            node = self.hosts.up(node);
        }
        Candidates::new(streams, method)
    }

    /// The uri tree for one host pattern, created on first use.
    fn host_tree(&mut self, host: &HostMatch) -> usize {
        let (pattern, wildcard) = match host {
            HostMatch::Exact(h) => (h, false),
            HostMatch::Suffix(s) => (s, true),
        };
        let node = self.hosts.insert(&HostKey::new(pattern));
        let slot = self.hosts.value_mut(node);
        let id = if wildcard {
            &mut slot.wildcard
        } else {
            &mut slot.exact
        };
        *id.get_or_insert_with(|| {
            self.by_host.push(UriTree::new());
            self.by_host.len() - 1
        })
    }

    fn intern_methods(&mut self, methods: &[String]) -> MethodSet {
        if methods.is_empty() {
            return MethodSet::ANY;
        }
        let mut set = MethodSet(0);
        for m in methods {
            let i = match self.method_names.iter().position(|n| **n == **m) {
                Some(i) => i,
                None => {
                    self.method_names.push(m.as_str().into());
                    self.method_names.len() - 1
                }
            };
            set.0 |= MethodSet::bit(i).0;
        }
        set
    }

    fn method_bit(&self, method: &str) -> MethodSet {
        match self.method_names.iter().position(|n| **n == *method) {
            Some(i) => MethodSet::bit(i),
            None => MethodSet::UNLISTED,
        }
    }
}

impl<'r> Candidates<'r> {
    fn new(streams: Streams<'r>, method: MethodSet) -> Self {
        Candidates {
            streams,
            method,
            last_rank: None,
        }
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        loop {
            let entry = self.streams.pop_lowest()?;
            if self.last_rank == Some(entry.rank) {
                continue;
            }
            self.last_rank = Some(entry.rank);
            if entry.methods.0 & self.method.0 != 0 {
                return Some(entry.route as usize);
            }
        }
    }
}

/// (route index, uri index) pairs in precedence order.
fn precedence(routes: &[Arc<Route>]) -> Vec<(usize, usize)> {
    let mut order: Vec<(usize, usize)> = routes
        .iter()
        .enumerate()
        .flat_map(|(r, route)| (0..route.uris.len()).map(move |u| (r, u)))
        .collect();
    // Host routes first, exact before prefix, longer prefix first, higher
    // priority first; the stable sort keeps file order among equals. Each
    // key is computed once, not in every comparison (each reaches into its
    // route: a cache miss with 10,000 routes).
    crate::order::sort_by_cached_key(&mut order, |&(r, u)| {
        let route = &routes[r];
        let (prefix, len) = match &route.uris[u] {
            UriMatch::Exact(p) => (false, p.len()),
            UriMatch::Prefix(p) => (true, p.len()),
        };
        (
            route.hosts.is_empty(),
            prefix,
            Reverse(len),
            Reverse(route.priority),
        )
    });
    order
}

fn add_uri(tree: &mut UriTree, uri: &UriMatch, entry: Entry) {
    let (path, exact) = match uri {
        UriMatch::Exact(p) => (p, true),
        UriMatch::Prefix(p) => (p, false),
    };
    let node = tree.insert(path.as_bytes());
    let slot = tree.value_mut(node);
    let list = if exact {
        &mut slot.exact
    } else {
        &mut slot.prefix
    };
    // Entries arrive in rank order; a route naming one host twice would
    // add its pair twice.
    if list.last().map(|e| e.rank) != Some(entry.rank) {
        list.push(entry);
    }
}

/// A host as the host tree stores it: lower-case and backwards, so that
/// `*.example.com` is a prefix of every host it matches. On the stack for
/// any host DNS allows (253 bytes), on the heap beyond.
struct HostKey {
    short: [u8; HostKey::INLINE],
    /// Bytes of `short` in use, or 0 when `long` holds the key.
    len: usize,
    long: Vec<u8>,
}

impl HostKey {
    const INLINE: usize = 256;

    fn new(host: &str) -> Self {
        let bytes = host.bytes().rev().map(|b| b.to_ascii_lowercase());
        let mut key = HostKey {
            short: [0; Self::INLINE],
            len: 0,
            long: Vec::new(),
        };
        if host.len() > Self::INLINE {
            key.long = bytes.collect();
        } else {
            for (slot, b) in key.short.iter_mut().zip(bytes) {
                *slot = b;
            }
            key.len = host.len();
        }
        key
    }
}

impl std::ops::Deref for HostKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.long.is_empty() {
            &self.short[..self.len]
        } else {
            &self.long
        }
    }
}

/// Which request methods a route takes: one bit per name routes list, and
/// one for every other name.
#[derive(Debug, Clone, Copy)]
struct MethodSet(u64);

impl MethodSet {
    const ANY: MethodSet = MethodSet(u64::MAX);
    /// Methods no route lists. Config accepts 10 names, so the 63 other
    /// bits never run out; a 64th name would share this bit.
    const UNLISTED: MethodSet = MethodSet(1 << 63);

    fn bit(i: usize) -> MethodSet {
        MethodSet(1u64 << i.min(63))
    }
}

/// One (route, uri) pair in a tree.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Position in precedence order: lower is better.
    rank: u32,
    route: u32,
    methods: MethodSet,
}

type UriTree = RadixTree<UriSlot>;

/// The pairs whose uri is one node's key, by rank.
#[derive(Debug, Default)]
struct UriSlot {
    exact: Vec<Entry>,
    prefix: Vec<Entry>,
}

/// The uri trees of one host pattern read backwards.
#[derive(Debug, Default)]
struct HostSlot {
    /// For the host exactly.
    exact: Option<usize>,
    /// For `*.` + the pattern: hosts with more bytes before it.
    wildcard: Option<usize>,
}

/// The candidates of one uri tree for one path, best first: the exact
/// matches, then prefixes from the longest.
#[derive(Clone, Copy)]
struct UriCursor<'r> {
    tree: &'r UriTree,
    /// What is left of the list being read.
    current: &'r [Entry],
    /// The next node whose prefix entries follow, or [`NONE`].
    next: NodeId,
}

impl<'r> UriCursor<'r> {
    fn start(tree: &'r UriTree, path: &str) -> Self {
        let walk = tree.walk(path.as_bytes());
        let slot = tree.value(walk.node);
        UriCursor {
            tree,
            current: if walk.whole { &slot.exact } else { &[] },
            next: if slot.prefix.is_empty() {
                tree.up(walk.node)
            } else {
                walk.node
            },
        }
    }

    fn head(&mut self) -> Option<Entry> {
        while self.current.is_empty() {
            if self.next == NONE {
                return None;
            }
            self.current = &self.tree.value(self.next).prefix;
            self.next = self.tree.up(self.next);
        }
        self.current.first().copied()
    }

    fn advance(&mut self) {
        self.current = self.current.get(1..).unwrap_or_default();
    }
}

/// The cursors of one lookup: the host-less tree's and one per matching
/// host pattern. Almost always one or two, so they live inline; a host
/// under more nested wildcards than that spills to the heap.
struct Streams<'r> {
    inline: [UriCursor<'r>; INLINE_STREAMS],
    len: usize,
    spilled: Vec<UriCursor<'r>>,
}

const INLINE_STREAMS: usize = 4;

impl<'r> Streams<'r> {
    fn new(first: UriCursor<'r>) -> Self {
        Streams {
            inline: [first; INLINE_STREAMS],
            len: 1,
            spilled: Vec::new(),
        }
    }

    fn push(&mut self, cursor: UriCursor<'r>) {
        if self.len < INLINE_STREAMS {
            self.inline[self.len] = cursor;
            self.len += 1;
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend_from_slice(&self.inline);
            }
            self.spilled.push(cursor);
        }
    }

    /// Takes the entry of lowest rank among the cursors' heads.
    fn pop_lowest(&mut self) -> Option<Entry> {
        let cursors = if self.spilled.is_empty() {
            &mut self.inline[..self.len]
        } else {
            &mut self.spilled[..]
        };
        let mut best: Option<(usize, Entry)> = None;
        for (i, cursor) in cursors.iter_mut().enumerate() {
            if let Some(e) = cursor.head() {
                if best.is_none_or(|(_, b)| e.rank < b.rank) {
                    best = Some((i, e));
                }
            }
        }
        let (i, entry) = best?;
        cursors[i].advance();
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_routes, RouteRules};

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
        let routes = parse_routes("t.yaml", TABLE, RouteRules::default())
            .unwrap()
            .routes;
        let router = Router::new(&routes);
        for (method, host, path, want) in cases {
            let got = router
                .find(method, host, path, |_| true)
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
        let routes = parse_routes(
            "t.yaml",
            "routes:\n  - {uri: /a, plugins: {}}\n#END\n",
            RouteRules::default(),
        )
        .unwrap()
        .routes;
        assert_eq!(Router::new(&routes).find("GET", "h", "/b", |_| true), None);
    }

    #[test]
    fn a_refused_candidate_falls_through_to_the_next_in_precedence_order() {
        let routes = parse_routes("t.yaml", TABLE, RouteRules::default())
            .unwrap()
            .routes;
        let router = Router::new(&routes);
        let ids = |host: &str, path: &str| -> Vec<&str> {
            router
                .candidates("GET", host, path)
                .map(|i| routes[i].id.as_str())
                .collect()
        };
        assert_eq!(ids("x", "/api/v2/users"), ["api-v2", "api", "catchall"]);
        assert_eq!(ids("x", "/same"), ["high", "low", "catchall"]);
        assert_eq!(ids("API.test", "/api/x"), ["exact-host", "api", "catchall"]);
        let refuse_api_v2 = |i: &usize| routes[*i].id != "api-v2";
        assert_eq!(
            router
                .find("GET", "x", "/api/v2/users", refuse_api_v2)
                .map(|i| routes[i].id.as_str()),
            Some("api")
        );
    }
}
