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

/// Routes `/r<i>` (ids `r<i>`) to `up`, for each `i` of `order`.
fn numbered_routes(order: impl Iterator<Item = usize>, up: &Upstream) -> String {
    let mut s = String::from("routes:\n");
    for i in order {
        s.push_str(&format!(
            "  - {{id: r{i}, uri: /r{i}, upstream: {{nodes: {{\"{}\": 1}}}}}}\n",
            up.addr
        ));
    }
    s.push_str("#END\n");
    s
}

/// The scrape, once every request sent so far is counted (a request is
/// counted just after its response is written).
fn scrape_counting(gate: &Gate, requests: usize) -> String {
    let addr = gate.status_addr();
    let want = format!("apisix_http_requests_total {requests}\n");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = send(
            addr,
            b"GET /apisix/prometheus/metrics HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
        )
        .text();
        if text.contains(&want) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Per-route counters with hundreds of routes served by both workers: each
/// route's status count and latency histogram add up across workers, and
/// keep counting by route id across a reload that reorders the routes and
/// adds one.
#[test]
fn per_route_metrics_add_up_across_workers_and_survive_a_reload() {
    const ROUTES: usize = 300;
    let up = Upstream::named("up");
    let gate = Gate::start(
        &config_yaml(&[], "  status_listen: \"127.0.0.1:0\"\n"),
        &numbered_routes(0..ROUTES, &up),
    );
    for i in 0..ROUTES {
        for _ in 0..2 {
            assert_eq!(gate.get(&format!("/r{i}")).status, 200);
        }
    }
    let text = scrape_counting(&gate, 2 * ROUTES);
    for i in 0..ROUTES {
        let line = format!("apisix_http_status{{code=\"200\",route=\"r{i}\"}} 2\n");
        assert!(text.contains(&line), "{line}in\n{text}");
    }

    std::fs::write(
        gate.dir.join("apisix.yaml"),
        numbered_routes((0..=ROUTES).rev(), &up),
    )
    .unwrap();
    gate.signal(rustix::process::Signal::HUP);
    assert!(gate.wait_for_log("reloaded (SIGHUP)"), "{}", gate.log());
    for i in 0..=ROUTES {
        assert_eq!(gate.get(&format!("/r{i}")).status, 200);
    }
    let text = scrape_counting(&gate, 3 * ROUTES + 1);
    for i in 0..ROUTES {
        let line = format!("apisix_http_status{{code=\"200\",route=\"r{i}\"}} 3\n");
        assert!(text.contains(&line), "{line}in\n{text}");
        let line = format!("apisix_http_latency_count{{type=\"request\",route=\"r{i}\"}} 3\n");
        assert!(text.contains(&line), "{line}in\n{text}");
    }
    let new = format!("apisix_http_status{{code=\"200\",route=\"r{ROUTES}\"}} 1\n");
    assert!(text.contains(&new), "{new}in\n{text}");
    assert_eq!(text.matches("apisix_http_status{").count(), ROUTES + 1);
}

/// A scrape is written as it is made: chunked to an HTTP/1.1 client (the
/// connection stays usable, HEAD gets the head only), up to the close to an
/// HTTP/1.0 one.
#[test]
fn a_scrape_is_streamed_chunked_or_to_the_close() {
    let up = Upstream::named("up");
    let gate = Gate::start(
        &config_yaml(&[], "  status_listen: \"127.0.0.1:0\"\n"),
        &numbered_routes(0..50, &up),
    );
    for i in 0..50 {
        assert_eq!(gate.get(&format!("/r{i}")).status, 200);
    }
    let series = "apisix_http_status{code=\"200\",route=\"r49\"} 1\n";
    let full = scrape_counting(&gate, 50);
    assert!(full.contains(series), "{full}");

    let mut c = Client::connect(gate.status_addr());
    c.write(b"HEAD /apisix/prometheus/metrics HTTP/1.1\r\nHost: s\r\n\r\n");
    let head = c.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert!(head.body.is_empty());
    let r = c.request("GET /apisix/prometheus/metrics HTTP/1.1\r\nHost: s\r\n\r\n");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.text().contains(series), "{}", r.text());

    let mut old = Client::connect(gate.status_addr());
    old.write(b"GET /apisix/prometheus/metrics HTTP/1.0\r\n\r\n");
    let raw = old
        .read_to_close(std::time::Duration::from_secs(10))
        .expect("the status listener closes after an HTTP/1.0 scrape");
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("connection: close") && !head.contains("transfer-encoding"));
    assert!(
        body.starts_with("# HELP apisix_http_requests_total ")
            && body.contains("\n# TYPE apisix_http_requests_total counter\n"),
        "{body}"
    );
    assert!(body.contains(series), "{body}");
}
