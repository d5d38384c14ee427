use crate::util::*;
use std::time::{Duration, Instant};

#[test]
fn weights_three_to_one_give_exactly_300_and_100_interleaved() {
    let a = Upstream::named("a");
    let b = Upstream::named("b");
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream_id: pair\nupstreams:\n  - id: pair\n    nodes:\n      \"{}\": 3\n      \"{}\": 1\n#END\n",
        a.addr, b.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let mut seq = String::new();
    // A fresh connection each time so both workers serve requests.
    for _ in 0..400 {
        let r = gate.get("/");
        assert_eq!(r.status, 200);
        seq.push_str(&r.text());
    }
    assert_eq!((a.count(), b.count()), (300, 100));
    assert!(
        !seq.contains("bb"),
        "b picked twice in a row: smooth WRR interleaves"
    );
    assert!(!seq.contains("aaaa"), "a picked four times in a row: {seq}");
}

#[test]
fn retries_skip_a_dead_node() {
    let live = Upstream::named("live");
    let dead = ClosedPort::reserve();
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream:\n      retries: 1\n      nodes:\n        \"{}\": 1\n        \"{}\": 1\n#END\n",
        dead.addr, live.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    for _ in 0..10 {
        let r = gate.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "live"));
    }
    assert_eq!(live.count(), 10);
}

#[test]
fn nothing_listening_is_502_with_a_log_line() {
    let dead = ClosedPort::reserve();
    let routes = format!(
        "routes:\n  - {{id: gone, uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        dead.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let mut c = Client::connect(gate.addr);
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 502);
    assert!(gate.wait_for_log("route \"gone\""), "log: {}", gate.log());
    // The client connection survives a 502.
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, 502);
}

#[test]
fn upstream_that_never_answers_is_504_after_the_read_timeout() {
    let up = Upstream::start(|_| Behaviour::Hang);
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream:\n      timeout: {{connect: 1, send: 1, read: 0.3}}\n      nodes: {{\"{}\": 1}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let started = Instant::now();
    let r = gate.get("/");
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    // The read timeout is the behaviour: the 504 comes from it (the node
    // never answers, and the client waits `WAIT`, far past 0.3 s), and not
    // before it (0.9 of it; the client's clock starts first).
    assert!(took >= Duration::from_millis(270), "504 after {took:?}");
}

#[test]
fn proxy_headers_follow_rfc_9110_and_apisix() {
    let up = Upstream::named("h");
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let r = gate.request(
        "GET /p HTTP/1.1\r\nHost: front.test\r\nConnection: X-Foo, keep-alive\r\nX-Foo: secret\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: x\r\nX-Forwarded-For: 10.9.8.7\r\n\
         X-Kept: yes\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let got = up.last();
    for gone in [
        "x-foo",
        "keep-alive",
        "te",
        "proxy-connection",
        "connection",
    ] {
        assert_eq!(
            got.header(gone),
            None,
            "{gone} must not be forwarded: {}",
            got.head
        );
    }
    assert_eq!(got.header("x-kept"), Some("yes"));
    assert_eq!(got.header("host"), Some("front.test"));
    assert_eq!(got.header("x-forwarded-for"), Some("10.9.8.7, 127.0.0.1"));
    assert_eq!(got.header("x-forwarded-proto"), Some("http"));
    assert_eq!(got.header("x-forwarded-host"), Some("front.test"));
}

#[test]
fn response_hop_by_hop_headers_are_dropped() {
    let up = Upstream::start(|_| {
        Behaviour::Respond(
            b"HTTP/1.1 200 OK\r\nConnection: X-Bar\r\nX-Bar: 1\r\nKeep-Alive: x\r\nX-Ok: 1\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        )
    });
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let r = gate.get("/");
    assert_eq!(r.header("x-bar"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("x-ok"), Some("1"));
}

#[test]
fn pass_host_node_and_rewrite() {
    let up = Upstream::named("h");
    let routes = format!(
        "routes:\n  - {{uri: /node, upstream: {{pass_host: node, nodes: {{\"{0}\": 1}}}}}}\n  - {{uri: /rw, upstream: {{pass_host: rewrite, upstream_host: inside.test, nodes: {{\"{0}\": 1}}}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    gate.get("/node");
    assert_eq!(up.last().header("host"), Some(up.addr.to_string().as_str()));
    gate.get("/rw");
    assert_eq!(up.last().header("host"), Some("inside.test"));
}

#[test]
fn keep_alive_connections_to_upstreams_are_reused() {
    let up = Upstream::named("k");
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let mut c = Client::connect(gate.addr);
    for _ in 0..20 {
        assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
    }
    // One client connection lands on one worker, which reuses one upstream
    // connection: the upstream saw 20 requests, all from the same peer.
    let received = up.received.lock().unwrap();
    assert_eq!(received.len(), 20);
    assert!(received.iter().all(|r| r.peer == received[0].peer));
}
