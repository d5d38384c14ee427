use crate::util::*;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn echo_gate() -> (Gate, Upstream) {
    let up = Upstream::echo();
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n#END\n",
        up.addr
    );
    (Gate::start(&config_yaml(&[], ""), &routes), up)
}

#[test]
fn chunked_request_body_of_1_mib_arrives_byte_exact() {
    let (gate, up) = echo_gate();
    let body = pattern(1 << 20);
    let mut raw =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(10_000) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = send(gate.addr, &raw);
    assert_eq!(r.status, 200);
    assert_eq!(up.last().body.len(), body.len());
    assert!(up.last().body == body, "upstream body differs");
    assert!(r.body == body, "echoed body differs");
}

#[test]
fn chunked_response_body_of_1_mib_arrives_byte_exact() {
    let body = pattern(1 << 20);
    let wire = {
        let mut w = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for chunk in body.chunks(7_777) {
            w.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            w.extend_from_slice(chunk);
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"0\r\n\r\n");
        w
    };
    let up = Upstream::start(move |_| Behaviour::Respond(wire.clone()));
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let mut c = Client::connect(gate.addr);
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.body == body, "body differs");
    // The connection is still in sync afterwards.
    assert_eq!(
        c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").body.len(),
        body.len()
    );
}

#[test]
fn content_length_bodies_pass_both_ways() {
    let (gate, up) = echo_gate();
    let body = pattern(300_000);
    let mut raw = format!(
        "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let r = send(gate.addr, &raw);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert!(r.body == body);
    assert_eq!(up.last().header("content-length"), Some("300000"));
}

#[test]
fn close_delimited_response_is_rechunked() {
    let up = Upstream::start(|_| {
        Behaviour::RespondAndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec())
    });
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let r = gate.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "until the end"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
}

#[test]
fn head_response_with_content_length_does_not_hang() {
    let up = Upstream::start(|_| {
        Behaviour::Respond(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec())
    });
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let mut c = Client::connect(gate.addr);
    for _ in 0..3 {
        let r = c.request("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("10"));
    }
}

// ---- request bodies through plugins, past `max_buffered_body` ----

/// A gate whose one route runs the fixture `file` as plugin `p` with
/// `conf`, holding at most 64 KiB of request body for plugins.
fn plugin_gate(file: &str, conf: &str, up: SocketAddr) -> Gate {
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{up}\": 1}}}}\n    plugins:\n      p:\n        conf: '{conf}'\n#END\n"
    );
    let config = config_yaml(&[("p", 1, file)], "  max_buffered_body: 64KiB\n");
    Gate::start(&config, &routes)
}

fn chunked(head: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = head.as_bytes().to_vec();
    for chunk in body.chunks(10_000) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

/// The article's plugin is built with the Rust SDK, which exports the
/// body hooks, so every request body passes through it. Past
/// `max_buffered_body` a body it lets through streams on to the node
/// instead of being refused: byte-exact, with the client's length (or
/// chunked), and the client connection stays in sync.
#[test]
fn request_bodies_past_the_buffer_limit_stream_through_plugins_that_let_them_pass() {
    let up = Upstream::echo();
    let conf = r#"{"headers":[{"name":"X-Go-Wasm","value":"APISIX"}]}"#;
    let gate = plugin_gate("custom_response_header", conf, up.addr);
    let body = pattern(1 << 20);
    let mut c = Client::connect(gate.addr);
    let mut raw = format!(
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    c.write(&raw);
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{}", gate.log());
    assert_eq!(r.header("x-go-wasm"), Some("APISIX"));
    assert!(r.body == body, "echoed body differs");
    let got = up.last();
    assert_eq!(got.header("content-length"), Some("1048576"));
    assert!(got.body == body, "upstream body differs");

    c.write(&chunked(
        "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        &body,
    ));
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{}", gate.log());
    let got = up.last();
    assert_eq!(got.target, "/b");
    assert_eq!(got.header("transfer-encoding"), Some("chunked"));
    assert!(got.body == body, "upstream body differs (chunked)");
    assert_eq!(up.count(), 2);
}

/// A plugin that holds the body (`Pause` until the end) may hold at most
/// `max_buffered_body`: past it the request is refused with 413 and never
/// reaches the node. Under it, the node still sees nothing before the
/// plugin has seen the whole body.
#[test]
fn a_plugin_holding_a_request_body_past_the_buffer_limit_gets_413() {
    let up = Upstream::echo();
    let conf = r#"{"from": "a", "to": "xyz", "request": true, "response": false}"#;
    let gate = plugin_gate("body_rewrite", conf, up.addr);
    let mut c = Client::connect(gate.addr);
    c.write(&chunked(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        &[b'a'; 80 * 1024],
    ));
    let r = c.read_response(false);
    assert_eq!(r.status, 413, "{}", gate.log());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(WAIT), "connection left open");
    assert_eq!(up.count(), 0, "a refused body never reaches the node");
    assert!(gate.wait_for_log("a plugin held more of the request body than max_buffered_body"));

    let r = gate.request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\na-b-a");
    assert_eq!((r.status, r.text().as_str()), (200, "xyz-b-xyz"));
}

/// A plugin that fails at the end of a body that spilled: the node had
/// the head and the first pieces, but not the last one, which the plugin
/// never let through; its connection is closed, never reused. The client
/// gets 503 and a closed connection, and the next request is served on a
/// fresh upstream connection.
#[test]
fn a_plugin_failing_at_the_end_of_a_spilled_body_fails_only_that_request() {
    // What the first connection got, sent once tinygate has closed it.
    let (first_connection, seen) = std::sync::mpsc::channel();
    let up = Scripted::start(move |mut conn| {
        if conn.index == 0 {
            let mut bytes = Vec::new();
            let _ = conn.stream.read_to_end(&mut bytes);
            let _ = first_connection.send(bytes);
        } else if conn.read_request().is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    let gate = plugin_gate("hook_faults", "trap proxy_on_request_body_end", up.addr);
    let body = pattern(256 * 1024);
    let mut raw = format!(
        "POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let mut c = Client::connect(gate.addr);
    c.write(&raw);
    let r = c.read_response(false);
    assert_eq!(r.status, 503, "{}", gate.log());
    assert!(c.closed_within(WAIT), "connection left open");

    let r = gate.get("/after");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(
        up.connections(),
        2,
        "the broken upstream connection was reused"
    );
    let sent = seen
        .recv_timeout(Duration::from_secs(20))
        .expect("the first upstream connection was never closed");
    let sent = &sent[..];
    let head_end = find(sent, b"\r\n\r\n").expect("the node got the head") + 4;
    assert!(sent.starts_with(b"POST /big HTTP/1.1\r\n"));
    let got = &sent[head_end..];
    assert!(
        got.len() >= 64 * 1024 && got.len() < body.len(),
        "the node got {} bytes of body",
        got.len()
    );
    assert!(got == &body[..got.len()], "the node got other bytes");
}
