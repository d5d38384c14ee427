//! Framing headers never come from plugins (issue #15): `content-length`,
//! `transfer-encoding`, `connection`, `keep-alive`, `proxy-connection`,
//! `te` and `upgrade` set by a plugin on a request, a response or a local
//! response are dropped with a warning naming the plugin, and the bytes on
//! the wire are exactly the proxy's own framing. A CR, LF or NUL in a
//! header a plugin writes is refused (`BAD_ARGUMENT`), which fails the
//! request under the plugin's `failure_policy`.

use crate::util::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Each framing field, with a value that would change how a peer reads
/// the message if it reached the wire.
const FRAMING: &[(&str, &str)] = &[
    ("content-length", "999"),
    ("transfer-encoding", "chunked"),
    ("connection", "close"),
    ("keep-alive", "timeout=1"),
    ("proxy-connection", "keep-alive"),
    ("te", "trailers"),
    ("upgrade", "websocket"),
];

/// A gate whose only route runs `header_mutator` (plugin name `mutator`)
/// with `conf`, in front of `up`.
fn mutator_gate(conf: &str, up: &Upstream) -> Gate {
    let routes = format!(
        "routes:\n  - id: r\n    uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      mutator:\n        conf: '{conf}'\n#END\n",
        up.addr
    );
    Gate::start(
        &config_yaml(&[("mutator", 1, "header_mutator")], ""),
        &routes,
    )
}

/// Asserts the log has a warning from plugin `mutator` about `name`.
fn assert_warned(gate: &Gate, call: &str, name: &str) {
    let needle = format!("proxy_{call}: ignored \"{name}\": the proxy frames messages itself");
    assert!(
        gate.wait_for_log(&needle),
        "no warning {needle:?} in {}",
        gate.log()
    );
    let line = gate
        .log()
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap()
        .to_string();
    assert!(
        line.contains("wasm::mutator"),
        "the warning names the plugin: {line}"
    );
}

/// Sends `raw` on a new keep-alive connection and returns the response
/// head and `body_len` body bytes, exactly as they came.
fn raw_exchange(gate: &Gate, raw: &str, body_len: usize) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(gate.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&got, b"\r\n\r\n") {
            if got.len() >= end + 4 + body_len {
                let body = got[end + 4..].to_vec();
                return (String::from_utf8_lossy(&got[..end + 4]).into_owned(), body);
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn framing_headers_a_plugin_sets_on_a_request_never_reach_the_node() {
    for (name, value) in FRAMING {
        let up = Upstream::echo();
        let conf = format!(
            r#"{{"request": {{"add": [["{name}", "{value}"]], "replace": [["{name}", "{value}"]]}}}}"#
        );
        let gate = mutator_gate(&conf, &up);
        let r = gate.request("POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{name}");
        let got = up.last();
        assert_eq!(
            got.head,
            "POST /f HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 127.0.0.1\r\nx-real-ip: 127.0.0.1\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: a\r\ncontent-length: 5\r\n\r\n",
            "{name}: the node's request head"
        );
        assert_eq!(got.body, b"hello", "{name}");
        assert_warned(&gate, "add_header_map_value", name);
        assert_warned(&gate, "replace_header_map_value", name);
    }
}

#[test]
fn framing_headers_a_plugin_sets_on_a_response_never_reach_the_client() {
    for (name, value) in FRAMING {
        let up = Upstream::start(|_| {
            Behaviour::Respond(
                b"HTTP/1.1 200 OK\r\nx-up: 1\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            )
        });
        let conf = format!(
            r#"{{"response": {{"add": [["{name}", "{value}"]], "replace": [["{name}", "{value}"]]}}}}"#
        );
        let gate = mutator_gate(&conf, &up);
        let (head, body) = raw_exchange(&gate, "GET /f HTTP/1.1\r\nHost: a\r\n\r\n", 2);
        assert_eq!(
            head, "HTTP/1.1 200 OK\r\nx-up: 1\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 2\r\n\r\n",
            "{name}: the client's response head"
        );
        assert_eq!(body, b"ok", "{name}: nothing after the body");
        assert_warned(&gate, "add_header_map_value", name);
        assert_warned(&gate, "replace_header_map_value", name);
    }
}

#[test]
fn framing_headers_in_a_plugins_local_response_never_reach_the_client() {
    let up = Upstream::named("u");
    let headers: Vec<String> = FRAMING
        .iter()
        .map(|(name, value)| format!(r#"["{name}", "{value}"]"#))
        .collect();
    let conf = format!(
        r#"{{"status": 403, "body": "no", "headers": [["x-reason", "policy"], {}]}}"#,
        headers.join(", ")
    );
    let routes = format!(
        "routes:\n  - id: r\n    uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      deny:\n        conf: '{conf}'\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[("deny", 1, "local_reply")], ""), &routes);
    let (head, body) = raw_exchange(&gate, "GET /f HTTP/1.1\r\nHost: a\r\n\r\n", 2);
    let line = |name: &str| {
        let found = head.lines().find(|l| l.starts_with(name)).unwrap_or("");
        format!("{found}\r\n")
    };
    // A body without a content type is text/plain, as Envoy's local replies.
    assert_eq!(
        head.replace(&line("server: "), "")
            .replace(&line("date: "), ""),
        "HTTP/1.1 403 Forbidden\r\nx-reason: policy\r\ncontent-type: text/plain\r\n\
         content-length: 2\r\n\r\n"
    );
    assert_eq!(body, b"no");
    assert_eq!(up.count(), 0);
    for (name, _) in FRAMING {
        let needle = format!("proxy_send_local_response: ignored \"{name}\"");
        assert!(gate.wait_for_log(&needle), "{needle}: {}", gate.log());
    }
}

#[test]
fn a_plugin_writing_cr_lf_or_nul_into_a_header_is_refused() {
    for value in ["a\\r\\nx-injected: 1", "a\\nb", "a\\u0000b"] {
        let up = Upstream::named("u");
        let conf = format!(r#"{{"request": {{"add": [["x-evil", "{value}"]]}}}}"#);
        let gate = mutator_gate(&conf, &up);
        // BAD_ARGUMENT: the Rust SDK traps, and fail_closed answers 503.
        let r = gate.get("/f");
        assert_eq!(r.status, 503, "{value}");
        assert_eq!(up.count(), 0, "{value}: the request went on");
        assert!(
            gate.wait_for_log("proxy_add_header_map_value: ignored invalid header \"x-evil\""),
            "{}",
            gate.log()
        );
        let conf = format!(r#"{{"response": {{"replace": [["x-evil", "{value}"]]}}}}"#);
        let gate = mutator_gate(&conf, &up);
        let r = gate.get("/f");
        assert_eq!(r.status, 503, "{value}");
        assert!(r.header("x-evil").is_none() && r.header("x-injected").is_none());
    }
}
