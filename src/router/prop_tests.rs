//! Property test: the radix router offers exactly the candidates, in
//! exactly the order, that the linear router it replaced finds, for random
//! route sets (hosts and wildcards, exact and prefix uris, priorities,
//! methods, several uris and hosts per route) and random requests. The
//! generator has a fixed seed, so a failure reproduces.

use super::linear::LinearRouter;
use super::Router;
use crate::config::{parse_routes, Route, RouteRules};
use std::fmt::Write as _;
use std::sync::Arc;

/// splitmix64: small, fixed-seed, good enough to spread test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// `/` then up to `max` bytes over a small alphabet, so that paths
    /// and uris share prefixes often.
    fn path(&mut self, max: usize) -> String {
        let mut p = String::from("/");
        for _ in 0..self.below(max + 1) {
            p.push(['a', 'b', '/', 'c'][self.below(4)]);
        }
        p
    }
}

/// Nested wildcards: `y.x.b.a.test` matches four of them, one more than
/// the cursors a lookup keeps inline.
const ROUTE_HOSTS: &[&str] = &[
    "a.test",
    "b.a.test",
    "x.b.a.test",
    "A.Test",
    "*.test",
    "*.a.test",
    "*.B.a.test",
    "*.x.b.a.test",
    "test",
    "other.org",
    "*.org",
];
const REQUEST_HOSTS: &[&str] = &[
    "a.test",
    "A.TEST",
    "b.a.test",
    "x.b.a.test",
    "y.x.b.a.test",
    "Y.X.B.A.TEST",
    "test",
    "atest",
    ".test",
    "other.org",
    "é.test",
    "",
    "b.a.test.",
];
const ROUTE_METHODS: &[&str] = &["GET", "POST", "PUT", "PURGE"];
const REQUEST_METHODS: &[&str] = &["GET", "POST", "PUT", "PURGE", "DELETE", "get"];

fn random_routes(rng: &mut Rng, count: usize) -> Vec<Arc<Route>> {
    let mut yaml = String::from("routes:\n");
    for i in 0..count {
        let _ = write!(yaml, "  - id: r{i}\n    plugins: {{}}\n    uris: [");
        for u in 0..1 + rng.below(3) {
            let star = if rng.chance(50) { "*" } else { "" };
            let sep = if u == 0 { "" } else { ", " };
            let _ = write!(yaml, "{sep}\"{}{star}\"", rng.path(5));
        }
        yaml.push_str("]\n");
        if rng.chance(50) {
            yaml.push_str("    hosts: [");
            for h in 0..1 + rng.below(2) {
                let sep = if h == 0 { "" } else { ", " };
                let _ = write!(yaml, "{sep}\"{}\"", rng.pick(ROUTE_HOSTS));
            }
            yaml.push_str("]\n");
        }
        if rng.chance(30) {
            let first = rng.pick(ROUTE_METHODS);
            let second = rng.pick(ROUTE_METHODS);
            let _ = writeln!(yaml, "    methods: [{first}, {second}]");
        }
        if rng.chance(50) {
            let _ = writeln!(yaml, "    priority: {}", rng.below(5) as i64 - 2);
        }
    }
    yaml.push_str("#END\n");
    parse_routes("prop.yaml", &yaml, RouteRules::default())
        .unwrap_or_else(|e| panic!("generated routes do not parse: {e}\n{yaml}"))
        .routes
}

/// A path that often lands on, inside or just past a route's uri.
fn random_path(rng: &mut Rng, routes: &[Arc<Route>]) -> String {
    if routes.is_empty() || rng.chance(40) {
        return rng.path(8);
    }
    let route = &routes[rng.below(routes.len())];
    let uri = match &route.uris[rng.below(route.uris.len())] {
        crate::config::UriMatch::Exact(p) | crate::config::UriMatch::Prefix(p) => p.clone(),
    };
    match rng.below(3) {
        0 => uri,
        1 => uri + &rng.path(3)[1..],
        _ => uri[..rng.below(uri.len()) + 1].to_string(),
    }
}

#[test]
fn radix_router_offers_the_linear_routers_candidates_in_its_order() {
    let mut rng = Rng(20);
    for set in 0..400 {
        let count = if set % 50 == 0 {
            300
        } else {
            1 + rng.below(30)
        };
        let routes = random_routes(&mut rng, count);
        let radix = Router::new(&routes);
        let linear = LinearRouter::new(&routes);
        for _ in 0..100 {
            let method = rng.pick(REQUEST_METHODS);
            // Now and then a host longer than the lookup keeps on the stack.
            let long = format!("{}.B.a.test", "x".repeat(300));
            let host = if rng.chance(3) {
                long.as_str()
            } else {
                rng.pick(REQUEST_HOSTS)
            };
            let path = random_path(&mut rng, &routes);
            let want = linear.candidates(&routes, method, host, &path);
            let got: Vec<usize> = radix.candidates(method, host, &path).collect();
            assert_eq!(
                got, want,
                "set {set}: {method} {host:?} {path:?}\n{routes:#?}"
            );
            // Fall-through: refuse a random subset of routes.
            let refused = rng.next();
            let accept = |r: &usize| refused & (1 << (r % 64)) == 0;
            let first = want.iter().copied().find(accept);
            assert_eq!(radix.find(method, host, &path, accept), first);
        }
    }
}
