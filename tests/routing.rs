use crate::util::*;

/// One upstream per route, each naming itself, so the body says which
/// route served the request.
fn routed_gate() -> (Gate, Vec<Upstream>) {
    let names = ["catchall", "api", "exact", "post", "low", "high", "hosted"];
    let ups: Vec<Upstream> = names.iter().map(|n| Upstream::named(n)).collect();
    let node = |i: usize| format!("{{\"{}\": 1}}", ups[i].addr);
    let routes = format!(
        r#"routes:
  - {{id: catchall, uri: "/*", upstream: {{nodes: {}}}}}
  - {{id: api, uri: "/api/*", upstream: {{nodes: {}}}}}
  - {{id: exact, uri: /api/status, upstream: {{nodes: {}}}}}
  - {{id: post, uri: /submit, methods: [POST], upstream: {{nodes: {}}}}}
  - {{id: low, uri: /same, priority: 1, upstream: {{nodes: {}}}}}
  - {{id: high, uri: /same, priority: 9, upstream: {{nodes: {}}}}}
  - {{id: hosted, uri: "/*", host: "*.example.com", upstream: {{nodes: {}}}}}
#END
"#,
        node(0),
        node(1),
        node(2),
        node(3),
        node(4),
        node(5),
        node(6)
    );
    (Gate::start(&config_yaml(&[], ""), &routes), ups)
}

#[test]
fn routes_match_like_apisix_radixtree_host_uri() {
    let (gate, _ups) = routed_gate();
    for (method, host, path, want) in [
        ("GET", "x", "/", "catchall"),
        ("GET", "x", "/api/users", "api"),
        ("GET", "x", "/api/status", "exact"),
        ("GET", "x", "/api/status?x=1", "exact"),
        ("POST", "x", "/submit", "post"),
        ("GET", "x", "/submit", "catchall"),
        ("GET", "x", "/same", "high"),
        ("GET", "www.example.com", "/api/status", "hosted"),
        ("GET", "WWW.Example.COM:9080", "/x", "hosted"),
        ("GET", "example.com", "/x", "catchall"),
    ] {
        let body = if method == "POST" {
            "content-length: 0\r\n"
        } else {
            ""
        };
        let r = gate.request(&format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{body}\r\n"
        ));
        assert_eq!(r.status, 200, "{method} {host}{path}");
        assert_eq!(r.text(), want, "{method} {host}{path}");
    }
}

#[test]
fn no_matching_route_is_404_and_the_connection_stays_usable() {
    let up = Upstream::named("only");
    let routes = format!(
        "routes:\n  - {{uri: /only, methods: [GET], upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let mut c = Client::connect(gate.addr);
    let r = c.request("GET /other HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("404 Route Not Found"));
    let r = c.request("DELETE /only HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 404);
    let r = c.request("GET /only HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "only"));
    assert_eq!(up.count(), 1);
}

#[test]
fn disabled_route_is_not_served() {
    let up = Upstream::named("x");
    let routes = format!(
        "routes:\n  - {{uri: /off, status: 0, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    assert_eq!(gate.get("/off").status, 404);
    assert_eq!(up.count(), 0);
}
