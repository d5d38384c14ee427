//! Replies tinygate makes itself on a request whose plugins ran (502 and
//! 504 from its node, 503 with nowhere to send it, 4xx refusals of its
//! body) go through the plugins' response hooks, global rules' plugins
//! first, as APISIX runs `header_filter` and `body_filter` on an error
//! nginx makes and Envoy encodes a router's local reply through its
//! filters. A plugin's own failure, a request no plugin saw, and a node
//! failing after the plugins saw its head get the reply as it is.

use crate::util::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// The article's plugin conf: `X-Go-Wasm: APISIX` on every response.
const ARTICLE: &str = r#"'{"headers":[{"name":"X-Go-Wasm","value":"APISIX"}]}'"#;

/// The body of tinygate's own 502.
const BAD_GATEWAY: &str = "{\"error_msg\":\"502 Bad Gateway\"}\n";

/// One route `/*` (id `r`) to `nodes`, with `extra` keys (indented as
/// route keys) and the article's plugin as `article`.
fn article_route(nodes: &[SocketAddr], extra: &str) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("\"{n}\": 1")).collect();
    format!(
        "routes:\n  - id: r\n    uri: /*\n    upstream: {{nodes: {{{}}}}}\n{extra}    plugins:\n      article: {{conf: {ARTICLE}}}\n#END\n",
        nodes.join(", ")
    )
}

/// A gate with the article's plugin as `article` and `routes`.
fn article_gate(routes: &str) -> Gate {
    Gate::start(
        &config_yaml(&[("article", 7000, "custom_response_header")], ""),
        routes,
    )
}

/// A gate whose one route `/*` goes to `node` with `plugins`, each as
/// (name, priority, fixture, conf as YAML).
fn gate_with(node: SocketAddr, plugins: &[(&str, i64, &str, &str)]) -> Gate {
    let mut routes =
        format!("routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{node}\": 1}}}}\n    plugins:\n");
    for (name, _, _, conf) in plugins {
        routes.push_str(&format!("      {name}: {{conf: {conf}}}\n"));
    }
    routes.push_str("#END\n");
    let entries: Vec<(&str, i64, &str)> = plugins.iter().map(|&(n, p, f, _)| (n, p, f)).collect();
    Gate::start(&config_yaml(&entries, ""), &routes)
}

/// The conf of a `header_mutator` that adds `x-trace: <name>` to responses.
fn trace(name: &str) -> String {
    format!(r#"'{{"response": {{"add": [["x-trace", "{name}"]]}}}}'"#)
}

/// The values of every `name` field of `r`, in order.
fn values<'r>(r: &'r Response, name: &str) -> Vec<&'r str> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The article's plugin runs on the 502 of a node that refuses
/// connections, as on APISIX: the header is there on GET and HEAD, the
/// body and framing are tinygate's, and the connection stays open.
#[test]
fn a_502_from_a_dead_node_carries_the_header_the_plugin_adds() {
    let dead = ClosedPort::reserve();
    let gate = article_gate(&article_route(&[dead.addr], ""));
    let mut c = Client::connect(gate.addr);
    for _ in 0..2 {
        let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (502, BAD_GATEWAY));
        assert_eq!(r.header("x-go-wasm"), Some("APISIX"), "{}", gate.log());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(values(&r, "server").len(), 1);
        assert_eq!(r.header("connection"), None, "kept alive");
    }
    let r = c.request("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-go-wasm"), Some("APISIX"));
    let length = BAD_GATEWAY.len().to_string();
    assert_eq!(r.header("content-length"), Some(length.as_str()));
    // No body came after the HEAD's head: the next answer is read whole.
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.header("x-go-wasm")), (502, Some("APISIX")));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(WAIT));
}

/// A node that never answers gets the client a 504 after `timeout.read`,
/// with the plugin's header.
#[test]
fn a_504_after_the_read_timeout_carries_the_header_the_plugin_adds() {
    let node = Upstream::start(|_| Behaviour::Hang);
    let timeout = "    timeout: {connect: 1, send: 1, read: 0.3}\n";
    let gate = article_gate(&article_route(&[node.addr], timeout));
    let r = gate.get("/");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.text(), "{\"error_msg\":\"504 Gateway Timeout\"}\n");
    assert_eq!(r.header("x-go-wasm"), Some("APISIX"), "{}", gate.log());
}

/// Every node refusing (two of them, each tried once) is a 502, and a
/// route with plugins and no upstream a 503 (APISIX's "missing upstream
/// configuration"): both with the plugin's header.
#[test]
fn no_node_to_answer_gives_a_502_or_503_with_the_header_the_plugin_adds() {
    let (one, two) = (ClosedPort::reserve(), ClosedPort::reserve());
    let routes = format!(
        "{}  - id: nowhere\n    uri: /nowhere\n    plugins:\n      article: {{conf: {ARTICLE}}}\n#END\n",
        article_route(&[one.addr, two.addr], "").trim_end_matches("#END\n")
    );
    let gate = article_gate(&routes);
    let r = gate.get("/");
    assert_eq!((r.status, r.header("x-go-wasm")), (502, Some("APISIX")));
    let r = gate.get("/nowhere");
    assert_eq!((r.status, r.header("x-go-wasm")), (503, Some("APISIX")));
    assert_eq!(r.text(), "{\"error_msg\":\"503 Service Unavailable\"}\n");
}

/// A node that resets, answers something that is not HTTP, or answers a
/// head tinygate cannot relay (two framings): a 502 whose head the
/// plugins saw once, as the node's was never shown to them.
#[test]
fn a_node_that_resets_or_answers_garbage_gets_a_502_through_the_hooks_once() {
    for answer in [
        None,
        Some(&b"SPDY/9 whatever\r\n\r\n"[..]),
        Some(&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\nok"[..]),
    ] {
        let node = Scripted::start(move |mut conn| {
            if conn.read_request().is_none() {
                return;
            }
            match answer {
                None => conn.reset(),
                Some(bytes) => {
                    conn.write(bytes);
                }
            }
        });
        let gate = gate_with(
            node.addr,
            &[("trace", 1, "header_mutator", &trace("route"))],
        );
        let r = gate.get("/");
        let what = answer.map(String::from_utf8_lossy);
        assert_eq!(r.status, 502, "{what:?}: {}", gate.log());
        assert_eq!(values(&r, "x-trace"), ["route"], "{what:?}");
    }
}

/// Global rules' plugins see the error reply before the route's, in
/// every phase as on a node's response (APISIX's `header_filter` runs the
/// global rules first).
#[test]
fn global_rules_run_before_the_routes_plugins_on_an_error_reply() {
    let dead = ClosedPort::reserve();
    let entry = |name: &str| format!("      {name}: {{conf: {}}}\n", trace(name));
    let routes = format!(
        "global_rules:\n  - id: 1\n    plugins:\n{}{}routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n{}{}#END\n",
        entry("global-last"),
        entry("global-first"),
        dead.addr,
        entry("route-last"),
        entry("route-first"),
    );
    let gate = Gate::start(
        &config_yaml(
            &[
                ("route-first", 1000, "header_mutator"),
                ("global-first", 500, "header_mutator"),
                ("route-last", 100, "header_mutator"),
                ("global-last", 50, "header_mutator"),
            ],
            "",
        ),
        &routes,
    );
    let r = gate.get("/");
    assert_eq!(r.status, 502);
    assert_eq!(
        values(&r, "x-trace"),
        ["global-first", "global-last", "route-first", "route-last"]
    );
}

/// A plugin that answers locally from its response-header hook on an
/// error reply is obeyed, as on a node's response: its status, headers
/// and body replace the 502.
#[test]
fn a_plugin_answering_on_the_error_replys_head_is_obeyed() {
    let dead = ClosedPort::reserve();
    let conf = r#"'{"status": 418, "body": "short and stout\n", "headers": [["x-reason", "node down"]], "phase": "response"}'"#;
    let gate = gate_with(dead.addr, &[("teapot", 1, "local_reply", conf)]);
    let mut c = Client::connect(gate.addr);
    for _ in 0..2 {
        let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (r.status, r.text().as_str()),
            (418, "short and stout\n"),
            "{}",
            gate.log()
        );
        assert_eq!(r.header("x-reason"), Some("node down"));
    }
}

/// A plugin that traps on the error reply's head fails that request only:
/// a 503 (the hooks do not run again on it), one log line naming the
/// hook, and the connection and the other routes go on. Under
/// `fail_open` it is skipped, and the 502 goes out with the next
/// plugin's header.
#[test]
fn a_plugin_trapping_on_the_error_reply_fails_only_that_request() {
    let dead = ClosedPort::reserve();
    let up = Upstream::named("up");
    let config = format!(
        "apisix:\n  node_listen:\n    - {{ip: 127.0.0.1, port: 0}}\nwasm:\n  plugins:
    - {{name: closed, priority: 9000, file: \"{faults}\"}}
    - {{name: open, priority: 9000, file: \"{faults}\", failure_policy: fail_open}}
    - {{name: article, priority: 7000, file: \"{article}\"}}
tinygate:\n  workers: 2\n",
        faults = fixture("hook_faults"),
        article = fixture("custom_response_header"),
    );
    let trap = "{conf: 'trap proxy_on_response_headers'}";
    let routes = format!(
        "routes:
  - {{uri: /closed, upstream: {{nodes: {{\"{dead}\": 1}}}}, plugins: {{closed: {trap}, article: {{conf: {ARTICLE}}}}}}}
  - {{uri: /open, upstream: {{nodes: {{\"{dead}\": 1}}}}, plugins: {{open: {trap}, article: {{conf: {ARTICLE}}}}}}}
  - {{uri: /fine, upstream: {{nodes: {{\"{up}\": 1}}}}, plugins: {{article: {{conf: {ARTICLE}}}}}}}
#END
",
        dead = dead.addr,
        up = up.addr
    );
    let gate = Gate::start(&config, &routes);
    let mut c = Client::connect(gate.addr);
    let r = c.request("GET /closed HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 503, "{}", gate.log());
    assert_eq!(r.header("x-go-wasm"), None, "no hook ran on the 503");
    assert!(
        gate.wait_for_log("plugin \"closed\" failed in proxy_on_response_headers"),
        "{}",
        gate.log()
    );
    let r = c.request("GET /fine HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "up"));
    assert_eq!(r.header("x-go-wasm"), Some("APISIX"));
    let r = c.request("GET /open HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.header("x-go-wasm")), (502, Some("APISIX")));
    assert!(
        gate.wait_for_log("plugin \"open\" failed in proxy_on_response_headers on route"),
        "{}",
        gate.log()
    );
}

/// A plugin with a body hook sees the error reply's body whole, with
/// `end_of_stream`, and may replace it: the client gets the new body
/// with its exact length. A HEAD gets no body and no body hook.
#[test]
fn a_plugin_rewrites_the_body_of_an_error_reply() {
    let dead = ClosedPort::reserve();
    let conf = r#"'{"from": "502 Bad Gateway", "to": "the node is down"}'"#;
    let gate = gate_with(
        dead.addr,
        &[
            ("rewrite", 1, "body_rewrite", conf),
            ("article", 7000, "custom_response_header", ARTICLE),
        ],
    );
    let mut c = Client::connect(gate.addr);
    let rewritten = "{\"error_msg\":\"the node is down\"}\n";
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (502, rewritten));
    let length = rewritten.len().to_string();
    assert_eq!(r.header("content-length"), Some(length.as_str()));
    assert_eq!(r.header("x-go-wasm"), Some("APISIX"));
    let r = c.request("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.header("x-go-wasm")), (502, Some("APISIX")));
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (502, rewritten));
}

/// Framing fields a plugin sets on an error reply are dropped, as on any
/// response (`tests/framing.rs`): the bytes on the wire are the reply's
/// own framing.
#[test]
fn framing_headers_a_plugin_sets_on_an_error_reply_never_reach_the_client() {
    let dead = ClosedPort::reserve();
    let framing =
        r#"["content-length", "999"], ["transfer-encoding", "chunked"], ["connection", "close"]"#;
    let conf = format!(
        r#"'{{"response": {{"add": [{framing}, ["x-ok", "1"]], "replace": [{framing}]}}}}'"#
    );
    let gate = gate_with(dead.addr, &[("mutator", 1, "header_mutator", &conf)]);
    let mut s = TcpStream::connect(gate.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let want = loop {
        if let Some(end) = find(&got, b"\r\n\r\n") {
            if got.len() >= end + 4 + BAD_GATEWAY.len() {
                break end + 4;
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..want]).into_owned();
    let server = head.lines().find(|l| l.starts_with("server: ")).unwrap();
    let date = head.lines().find(|l| l.starts_with("date: ")).unwrap();
    assert_eq!(
        head.replace(&format!("{server}\r\n"), "")
            .replace(&format!("{date}\r\n"), ""),
        format!(
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\nx-ok: 1\r\ncontent-length: {}\r\n\r\n",
            BAD_GATEWAY.len()
        )
    );
    assert_eq!(
        &got[want..],
        BAD_GATEWAY.as_bytes(),
        "nothing after the body"
    );
}

/// A chunked body over `client_max_body_size`, found while it streams
/// after the plugins saw the request, gets its 413 through their hooks
/// (nginx finds it reading the body, after APISIX's access phase); one
/// over it by its `Content-Length` is refused before any plugin runs, as
/// nginx refuses it before APISIX's phases.
#[test]
fn a_body_refused_after_the_plugins_saw_the_request_carries_their_header() {
    let up = Upstream::echo();
    let gate = Gate::start(
        &config_yaml(
            &[("article", 7000, "custom_response_header")],
            "  client_max_body_size: 4\n",
        ),
        &article_route(&[up.addr], ""),
    );
    let r = gate.request(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 413, "{}", gate.log());
    assert_eq!(r.header("x-go-wasm"), Some("APISIX"));
    let r = gate.request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabcdef");
    assert_eq!((r.status, r.header("x-go-wasm")), (413, None));
}

/// A node that fails after the plugins saw its head (a body plugin holds
/// the head, the node closes mid-body): the 502 goes out as it is, and
/// the hooks that already ran on the node's head do not run again (as
/// Envoy sends such a local reply past the filters).
#[test]
fn a_node_failing_after_the_plugins_saw_its_head_does_not_run_them_again() {
    let partial = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello".to_vec();
    let node = Upstream::start(move |_| Behaviour::RespondAndClose(partial.clone()));
    let gate = gate_with(
        node.addr,
        &[
            (
                "rewrite",
                1,
                "body_rewrite",
                r#"'{"from": "x", "to": "y"}'"#,
            ),
            ("trace", 2, "header_mutator", &trace("route")),
        ],
    );
    let r = gate.get("/");
    assert_eq!((r.status, r.text().as_str()), (502, BAD_GATEWAY));
    assert_eq!(r.header("x-trace"), None);
}
