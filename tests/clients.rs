//! What real clients and quirky nodes do to tinygate, byte for byte: the
//! cases found by driving it with curl, python's `http.client`, raw
//! sockets and hand-written upstreams, each compared with what nginx (or
//! APISIX, which is nginx) does with the same bytes.

use crate::util::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Sends `raw` on a new connection and returns the response head (up to
/// its empty line), lower-cased.
fn response_head(addr: SocketAddr, raw: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while find(&got, b"\r\n\r\n").is_none() {
        let n = s.read(&mut buf).expect("a response head");
        assert!(
            n > 0,
            "closed before a head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let end = find(&got, b"\r\n\r\n").unwrap() + 4;
    String::from_utf8_lossy(&got[..end]).to_ascii_lowercase()
}

/// A node answering `204` with a `Content-Length` (which RFC 9110 §8.6
/// forbids) reaches the client without it, as nginx sends it; every
/// registered status keeps its reason phrase (a `101` used to go out as
/// `HTTP/1.1 101 ` with none, a `422` likewise), HTTP/1.1 and 1.0 alike.
#[test]
fn a_204_never_carries_a_length_and_registered_statuses_keep_their_reason() {
    let up = Upstream::start(|r| {
        Behaviour::Respond(match r.target.as_str() {
            "/204" => b"HTTP/1.1 204 No Content\r\ncontent-length: 10\r\nx-a: 1\r\n\r\n".to_vec(),
            "/304" => b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n".to_vec(),
            "/422" => b"HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: 2\r\n\r\nno".to_vec(),
            "/ws" => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n".to_vec(),
            _ => ok_response("x"),
        })
    });
    let routes = format!(
        "routes:\n  - {{id: r, uri: /*, enable_websocket: true, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let ask = |path: &str| {
            response_head(
                gate.addr,
                &format!("GET {path} {version}\r\nHost: a\r\nConnection: close\r\n\r\n"),
            )
        };
        let no_content = ask("/204");
        assert!(
            no_content.starts_with("http/1.1 204 no content\r\n"),
            "{no_content}"
        );
        assert!(no_content.contains("x-a: 1\r\n"), "{no_content}");
        assert!(
            !no_content.contains("content-length"),
            "{version}: {no_content}"
        );
        assert!(!no_content.contains("transfer-encoding"), "{no_content}");
        // A 304 may announce the length of what a 200 would have had.
        let not_modified = ask("/304");
        assert!(
            not_modified.starts_with("http/1.1 304 not modified\r\n"),
            "{not_modified}"
        );
        assert!(
            not_modified.contains("content-length: 10\r\n"),
            "{not_modified}"
        );
        let unprocessable = ask("/422");
        assert!(
            unprocessable.starts_with("http/1.1 422 unprocessable content\r\n"),
            "{unprocessable}"
        );
    }
    let switching = response_head(
        gate.addr,
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert!(
        switching.starts_with("http/1.1 101 switching protocols\r\n"),
        "{switching}"
    );
}

/// RFC 9110 §6.6.1: a proxy forwarding a response without `Date` adds
/// one, and tinygate's own replies have one, as nginx (so APISIX) sends on
/// every response; a node's own `Date` goes through unchanged, alone.
#[test]
fn every_response_has_one_date_the_nodes_when_it_sent_one() {
    let up = Upstream::start(|r| {
        Behaviour::Respond(match r.target.as_str() {
            "/u/dated" => b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 0\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
        })
    });
    let routes = format!(
        "routes:\n  - {{id: r, uri: /u/*, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    for path in ["/u/undated", "/u/dated", "/no-route"] {
        let head = response_head(
            gate.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        );
        let dates: Vec<&str> = head.lines().filter(|l| l.starts_with("date: ")).collect();
        assert_eq!(dates.len(), 1, "{path}: {head}");
        let date = &dates[0]["date: ".len()..];
        if path == "/u/dated" {
            assert_eq!(date, "sun, 06 nov 1994 08:49:37 gmt");
        } else {
            // IMF-fixdate (RFC 9110 §5.6.7): `sun, 06 nov 1994 08:49:37 gmt`.
            let b = date.as_bytes();
            assert!(
                b.len() == 29 && &b[3..5] == b", " && date.ends_with(" gmt"),
                "{path}: {date:?}"
            );
        }
    }
}

/// A line that cannot start an HTTP/1.x message (an HTTP/0.9 `GET /`, a
/// node's stray line) is refused as soon as it is complete: a 400 for a
/// client, a 502 for a node, instead of waiting for the rest of a head
/// that can never come until the 60 s header (or read) timeout; the test's
/// own reads give up well before that.
#[test]
fn a_first_line_without_http_version_is_refused_at_once() {
    let node = Scripted::start(|mut conn| {
        if conn.read_request().is_some() {
            conn.write(b"garbage from a node\r\n");
            let mut rest = Vec::new();
            let _ = conn.stream.read_to_end(&mut rest); // keep it open
        }
    });
    let gate = Gate::start(&config_yaml(&[], ""), &route_to(node.addr));
    let head = response_head(gate.addr, "GET /\r\n");
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    let head = response_head(gate.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(head.starts_with("http/1.1 502 bad gateway\r\n"), "{head}");
}
