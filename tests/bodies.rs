use crate::util::*;

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
