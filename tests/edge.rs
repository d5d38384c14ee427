//! Edge-grade HTTP (issue #5): strict request parsing, per-connection
//! limits and timeouts, upstream framing and failures, retries, and a
//! bounded slowloris. Every case is raw bytes over loopback; a rejected
//! request must be answered (not dropped), carry `Connection: close`, be
//! followed by a close, and never reach the upstream.

use crate::util::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A gate in front of `addr` (route id `r`, `/*`) with `tinygate:` keys.
fn gate_to(addr: SocketAddr, tinygate_keys: &str) -> Gate {
    Gate::start(&config_yaml(&[], tinygate_keys), &route_to(addr))
}

/// Sends `raw` on a new connection; asserts the answer is `status` with
/// `Connection: close`, followed by a close.
fn assert_rejected(gate: &Gate, raw: &[u8], status: u16, what: &str) {
    let mut c = Client::connect(gate.addr);
    c.write(raw);
    let r = c.read_response(raw.starts_with(b"HEAD "));
    assert_eq!(r.status, status, "{what}: {:?}", r.text());
    assert_eq!(r.header("connection"), Some("close"), "{what}");
    assert!(c.closed_within(WAIT), "{what}: connection left open");
}

fn head(extra: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: a\r\n{extra}\r\n")
}

/// RFC 9112 §6.3, §5, §3.2: every ambiguous or malformed framing and
/// header syntax is a 400 (501 for a coding we do not implement behind a
/// final `chunked`), answered, then closed, and the upstream sees nothing.
#[test]
fn malformed_and_ambiguous_requests_are_400_and_close() {
    let up = Upstream::echo();
    let gate = gate_to(up.addr, "");
    let mut cases: Vec<(String, Vec<u8>, u16)> = Vec::new();
    let mut case = |what: &str, raw: &[u8], status: u16| {
        cases.push((what.to_string(), raw.to_vec(), status));
    };
    // Framing (§6.1, §6.3).
    case(
        "CL + TE",
        head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n").as_bytes(),
        400,
    );
    case(
        "TE + CL",
        head("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n").as_bytes(),
        400,
    );
    case(
        "differing CL fields",
        head("Content-Length: 5\r\nContent-Length: 6\r\n").as_bytes(),
        400,
    );
    case(
        "differing CL list",
        head("Content-Length: 5, 6\r\n").as_bytes(),
        400,
    );
    for bad in [
        "+5",
        "5x",
        "0x5",
        "-1",
        "",
        "5 5",
        "1e3",
        "99999999999999999999",
    ] {
        case(
            &format!("Content-Length {bad:?}"),
            head(&format!("Content-Length: {bad}\r\n")).as_bytes(),
            400,
        );
    }
    for (te, status) in [
        ("gzip", 400),
        ("chunked, gzip", 400),
        ("chunked, identity", 400),
        ("xchunked", 400),
        ("chunked,", 400),
        ("gzip, chunked", 501),
    ] {
        case(
            &format!("Transfer-Encoding {te:?}"),
            head(&format!("Transfer-Encoding: {te}\r\n")).as_bytes(),
            status,
        );
    }
    case(
        "two TE fields",
        head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n").as_bytes(),
        400,
    );
    case(
        "TE on HTTP/1.0",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    case(
        "space before the colon of TE",
        head("Transfer-Encoding : chunked\r\n").as_bytes(),
        400,
    );
    // Field syntax (§5.1, §5.2, RFC 9110 §5.5).
    case(
        "obs-fold",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
        400,
    );
    case(
        "leading white space on the first field",
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        400,
    );
    case(
        "space before the colon",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        400,
    );
    case(
        "tab before the colon",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n",
        400,
    );
    case(
        "0xff in a name",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\xffA: b\r\n\r\n",
        400,
    );
    case(
        "space in a name",
        b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
        400,
    );
    case(
        "@ in a name",
        b"GET / HTTP/1.1\r\nHost: a\r\nX@A: b\r\n\r\n",
        400,
    );
    case(
        "empty name",
        b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
        400,
    );
    case(
        "NUL in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
        400,
    );
    case(
        "bare CR in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
        400,
    );
    case(
        "DEL in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n",
        400,
    );
    case(
        "control byte in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n",
        400,
    );
    case(
        "line without a colon",
        b"GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n",
        400,
    );
    case(
        "bare LF line endings (refused, never left hanging)",
        b"GET / HTTP/1.1\nHost: a\n\n",
        400,
    );
    // Host (§3.2).
    case("missing Host on 1.1", b"GET / HTTP/1.1\r\n\r\n", 400);
    case(
        "two Host fields",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
    );
    case("invalid Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    // Request line (§3).
    case(
        "double space in the request line",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
    );
    case(
        "extra word in the request line",
        b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n",
        400,
    );
    case(
        "lower-case version",
        b"GET / http/1.1\r\nHost: a\r\n\r\n",
        400,
    );
    case(
        "0xff in the target",
        b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
    );
    case(
        "userinfo in an absolute-form target",
        b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
    );
    case(
        "HTTP/2.0 on an HTTP/1 connection",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        505,
    );
    for (what, raw, status) in &cases {
        assert_rejected(&gate, raw, *status, what);
    }
    assert_eq!(
        up.count(),
        0,
        "a rejected request reached the upstream: {:?}",
        up.received.lock().unwrap().first().map(|r| r.head.clone())
    );
    // The gate still serves well-formed requests.
    assert_eq!(gate.get("/ok").status, 200);
    eprintln!("{} malformed requests refused", cases.len());
}

/// 414 for a request line past 8 KiB (also when it is past the whole head
/// limit), 431 for a header section past `max_header_size` or more than
/// 100 fields, 413 for a body past `client_max_body_size` (announced or
/// chunked), each answered with `Connection: close`; nothing reaches the
/// upstream.
#[test]
fn oversized_requests_are_414_431_413_and_close() {
    let up = Upstream::echo();
    let gate = gate_to(
        up.addr,
        "  max_header_size: 16384\n  client_max_body_size: 1024\n",
    );
    let long_target = |n: usize| format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(n));
    assert_rejected(&gate, long_target(9 * 1024).as_bytes(), 414, "9 KiB target");
    assert_rejected(
        &gate,
        long_target(20 * 1024).as_bytes(),
        414,
        "20 KiB target (past max_header_size)",
    );
    let big_field = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20 * 1024)
    );
    assert_rejected(&gate, big_field.as_bytes(), 431, "20 KiB header section");
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_rejected(&gate, many.as_bytes(), 431, "101 header fields");
    // The 413 comes from the announced length alone: the client never has
    // to send the body.
    assert_rejected(
        &gate,
        head("Content-Length: 2000\r\n").as_bytes(),
        413,
        "Content-Length past the limit",
    );
    let mut chunked = head("Transfer-Encoding: chunked\r\n").into_bytes();
    for _ in 0..4 {
        chunked.extend_from_slice(format!("1f4\r\n{}\r\n", "c".repeat(500)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_rejected(&gate, &chunked, 413, "chunked body past the limit");
    assert_eq!(up.count(), 0, "an oversized request reached the upstream");
    // Right at the limits is fine.
    let mut ok = head("Content-Length: 1024\r\n").into_bytes();
    ok.extend_from_slice(&[b'x'; 1024]);
    let r = send(gate.addr, &ok);
    assert_eq!((r.status, r.body.len()), (200, 1024));
    let mut hundred = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..99 {
        hundred.push_str(&format!("X-{i}: v\r\n"));
    }
    hundred.push_str("\r\n");
    assert_eq!(gate.request(&hundred).status, 200);
    assert_eq!(up.count(), 2);
}

/// Writes all of `raw` without reading anything, then reads to the end:
/// (whether the whole write went through, what came back, whether the end
/// was a clean close rather than a reset).
fn send_all_then_read(gate: &Gate, raw: &[u8]) -> (bool, String, bool) {
    let mut s = TcpStream::connect(gate.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let written = s.write_all(raw).is_ok();
    let mut got = Vec::new();
    let clean = s.read_to_end(&mut got).is_ok();
    (written, String::from_utf8_lossy(&got).into_owned(), clean)
}

/// nginx's `lingering_close`: a client that sends its whole oversized
/// request before reading still reads the refusal. The proxy answers,
/// sends FIN, and reads and discards the rest instead of closing with
/// unread input, which would reset the connection and make the client's
/// stack drop the answer.
#[test]
fn refusals_are_readable_by_a_client_still_sending() {
    let up = Upstream::echo();
    // A lingering close that outlasts every wait here: a close the client
    // sees came before the linger ended.
    let gate = gate_to(up.addr, "  lingering_timeout: 60\n  lingering_time: 60\n");
    let line = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let mut fields = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..200 {
        fields.push_str(&format!("X-{i}: {}\r\n", "v".repeat(1000)));
    }
    fields.push_str("\r\n");
    let mut upload = head(&format!("Content-Length: {}\r\n", 2 << 20)).into_bytes();
    upload.resize(upload.len() + (2 << 20), b'u');
    for (raw, status, what) in [
        (
            line.into_bytes(),
            "HTTP/1.1 414 URI Too Long\r\n",
            "100 KB request line",
        ),
        (
            fields.into_bytes(),
            "HTTP/1.1 431 Request Header Fields Too Large\r\n",
            "200 KB of header fields",
        ),
        (
            upload,
            "HTTP/1.1 413 Content Too Large\r\n",
            "2 MiB body past client_max_body_size",
        ),
    ] {
        let (written, answer, clean) = send_all_then_read(&gate, &raw);
        assert!(written, "{what}: the proxy stopped reading");
        assert!(answer.starts_with(status), "{what}: {answer:?}");
        assert!(
            answer.contains("connection: close\r\n"),
            "{what}: {answer:?}"
        );
        assert!(clean, "{what}: reset instead of a close");
    }
    assert_eq!(up.count(), 0);
    // The proxy does not linger longer than the client keeps sending: a
    // client that stops and waits sees the close (the FIN sent before the
    // linger), not one at the end of the 60 s lingering timeout.
    let mut c = Client::connect(gate.addr);
    c.write(format!("GET /{} HTTP/1.1\r\n", "a".repeat(40 * 1024)).as_bytes());
    assert_eq!(c.read_response(false).status, 414);
    assert!(c.closed_within(WAIT), "left open");
}

/// HTTP/1.0 without `Connection: keep-alive` gets its answer and a close;
/// with it, the connection stays open and the answer says so; a body the
/// upstream sends chunked reaches a 1.0 client close-delimited.
#[test]
fn http10_is_served_and_kept_alive_only_when_asked() {
    let fixed = Upstream::named("fixed");
    let chunked = Upstream::start(|_| {
        Behaviour::Respond(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .to_vec(),
        )
    });
    let routes = format!(
        "routes:\n  - {{uri: /fixed, upstream: {{nodes: {{\"{}\": 1}}}}}}\n  - {{uri: /chunked, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        fixed.addr, chunked.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);

    // No Host, no keep-alive: served, then closed.
    let mut c = Client::connect(gate.addr);
    let r = c.request("GET /fixed HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "fixed"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(WAIT));
    // The upstream still gets a valid HTTP/1.1 request with a Host.
    let got = fixed.last();
    assert!(
        got.head.starts_with("GET /fixed HTTP/1.1\r\n"),
        "{}",
        got.head
    );
    assert_eq!(got.header("host"), Some(fixed.addr.to_string().as_str()));

    // keep-alive asked: kept, and said so; a 404 too.
    let mut c = Client::connect(gate.addr);
    for _ in 0..3 {
        let r = c.request("GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (200, "fixed"));
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    let r = c.request("GET /nowhere HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("connection"),
        Some("keep-alive"),
        "a kept HTTP/1.0 connection must say so on local replies too"
    );
    // A request without keep-alive on the same connection ends it.
    let r = c.request("GET /fixed HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(c.closed_within(WAIT));

    // Chunked upstream body → raw bytes, delimited by the close.
    let mut c = Client::connect(gate.addr);
    c.write(b"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let wire = c
        .read_to_close(WAIT)
        .expect("closed after a close-delimited body");
    let text = String::from_utf8_lossy(&wire);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(!lower.contains("transfer-encoding"), "{head}");
    assert!(!lower.contains("content-length"), "{head}");
    assert!(lower.contains("connection: close"), "{head}");
    assert_eq!(body, "hello world");

    // A 1.0 POST with a body goes through.
    let up = Upstream::echo();
    let gate = gate_to(up.addr, "");
    let r = gate.request("POST /e HTTP/1.0\r\nContent-Length: 4\r\n\r\nbody");
    assert_eq!((r.status, r.text().as_str()), (200, "body"));
}

/// `Expect: 100-continue` gets a `100 Continue` before the client sends
/// the body, and is not forwarded; a body over the limit gets the 413
/// straight away, without a 100.
#[test]
fn expect_100_continue_is_answered_then_the_body_flows() {
    let up = Upstream::echo();
    let gate = gate_to(up.addr, "  client_max_body_size: 1024\n");
    let mut c = Client::connect(gate.addr);
    c.write(b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.read_interim();
    assert_eq!(interim.status, 100);
    assert_eq!(up.count(), 0);
    c.write(b"hello");
    let r = c.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(up.last().header("expect"), None);
    // The connection is still good.
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);

    let mut c = Client::connect(gate.addr);
    c.write(
        b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
    );
    let r = c.read_interim();
    assert_eq!(r.status, 413, "413 first, no 100 Continue");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(WAIT));
    assert_eq!(up.count(), 2);
}

/// A request head that trickles in is cut off at `client_header_timeout`
/// with a 408 and a close; nothing reaches the upstream.
#[test]
fn slow_request_head_gets_408_at_client_header_timeout() {
    let up = Upstream::named("u");
    let gate = gate_to(up.addr, "  client_header_timeout: 0.5\n");
    // The client's clock starts before the proxy's (which starts at the
    // accept at the earliest): a loaded machine only makes `took` longer.
    let started = Instant::now();
    let mut c = Client::connect(gate.addr);
    c.write(b"GET / HTTP/1.1\r\nHost: a\r\n");
    let r = c.read_response(false);
    let took = started.elapsed();
    assert_eq!(r.status, 408);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(WAIT));
    // The timeout is the behaviour: never before it (0.9 of it, against
    // clock granularity), and at all (the default, 60 s, is far past the
    // waits).
    assert!(took >= Duration::from_millis(450), "408 after {took:?}");
    // A connection that sends nothing at all is closed too, by the same
    // timeout.
    let started = Instant::now();
    let mut idle = Client::connect(gate.addr);
    let wire = idle.read_to_close(WAIT);
    let took = started.elapsed();
    assert!(wire.is_some(), "silent connection not closed");
    assert!(took >= Duration::from_millis(450), "closed after {took:?}");
    assert_eq!(up.count(), 0);
}

/// A body that stops arriving is cut off at `client_body_timeout` with a
/// 408 and a close; the upstream never gets a whole request.
#[test]
fn stalled_request_body_gets_408_at_client_body_timeout() {
    let up = Upstream::echo();
    let gate = gate_to(up.addr, "  client_body_timeout: 0.5\n");
    let mut c = Client::connect(gate.addr);
    // Before the write: the proxy's timer starts when it has read "abc".
    let started = Instant::now();
    c.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    let r = c.read_response(false);
    let took = started.elapsed();
    assert_eq!(r.status, 408);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(WAIT));
    // Not before the timeout; at all within the wait (the default, 60 s,
    // is far past it).
    assert!(took >= Duration::from_millis(450), "408 after {took:?}");
    assert_eq!(up.count(), 0);
}

/// An idle keep-alive connection is closed after `keepalive_timeout`, not
/// before.
#[test]
fn idle_keep_alive_connection_is_closed_at_keepalive_timeout() {
    let up = Upstream::named("u");
    let gate = gate_to(up.addr, "  keepalive_timeout: 0.5\n");
    let mut c = Client::connect(gate.addr);
    // From before the request: the proxy's idle time starts once it wrote
    // the response, so a loaded machine only makes `idle` longer.
    let idle_since = Instant::now();
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
    // Closed by the timeout, not by the default (60 s, far past the wait)...
    assert!(c.closed_within(WAIT));
    // ...and not before it (0.9 of it, against clock granularity).
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(450),
        "closed after {idle:?} idle"
    );
}

/// Past `max_connections` a new connection gets a 503 and a close; once
/// one closes, new connections are served again.
#[test]
fn connections_past_max_connections_get_503() {
    let up = Upstream::named("u");
    let gate = gate_to(up.addr, "  max_connections: 2\n");
    let mut a = Client::connect(gate.addr);
    let mut b = Client::connect(gate.addr);
    // Both accepted and counted once they have been answered.
    assert_eq!(a.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
    assert_eq!(b.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
    let mut third = Client::connect(gate.addr);
    let r = third.read_interim();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(third.closed_within(WAIT));
    assert!(gate.wait_for_log("max_connections"), "{}", gate.log());
    drop(a);
    let deadline = Instant::now() + WAIT;
    let served = loop {
        let mut c = Client::connect(gate.addr);
        c.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        if c.read_interim().status == 200 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(served, "a freed slot was never reused");
    assert_eq!(b.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
}

/// Responses to HEAD, and 204 and 304 responses, have no body whatever
/// their headers say; the upstream connection is reused after them and the
/// next response on it is intact.
#[test]
fn head_204_304_responses_have_no_body_and_the_connection_is_reused() {
    let up = Upstream::start(|r| {
        let bytes: &[u8] = match (r.method.as_str(), r.target.as_str()) {
            ("HEAD", _) => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            (_, "/204") => b"HTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n",
            (_, "/204te") => b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n",
            (_, "/304") => {
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\netag: \"x\"\r\n\r\n"
            }
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext",
        };
        Behaviour::Respond(bytes.to_vec())
    });
    let gate = gate_to(up.addr, "");
    // A proxy that waited for the body these heads announce would hold the
    // next request until the node's read timeout (60 s): the client's read
    // (`WAIT`) fails first.
    let mut c = Client::connect(gate.addr);
    for (request, status) in [
        ("HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("GET /204 HTTP/1.1\r\nHost: a\r\n\r\n", 204),
        ("GET /204te HTTP/1.1\r\nHost: a\r\n\r\n", 204),
        ("GET /304 HTTP/1.1\r\nHost: a\r\n\r\n", 304),
    ] {
        let r = c.request(request);
        assert_eq!(r.status, status, "{request}");
        assert_eq!(r.header("transfer-encoding"), None, "{request}");
        let next = c.request("GET /n HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "next"),
            "after {request}"
        );
    }
    let received = up.received.lock().unwrap();
    assert_eq!(received.len(), 8);
    assert!(
        received.iter().all(|r| r.peer == received[0].peer),
        "the upstream connection was not reused after no-body responses"
    );
}

/// Bytes an upstream sends after a response that has no body (here a
/// whole forged response after a 204) never reach a client, and the
/// connection they came on is not reused.
#[test]
fn bytes_after_a_bodiless_response_are_never_forwarded() {
    let up = Scripted::start(|mut conn| {
        while let Some(r) = conn.read_request() {
            let bytes: &[u8] = if r.target == "/204" {
                b"HTTP/1.1 204 No Content\r\ncontent-length: 44\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal"
            };
            if !conn.write(bytes) {
                return;
            }
        }
    });
    let gate = gate_to(up.addr, "");
    let mut c = Client::connect(gate.addr);
    for _ in 0..5 {
        let r = c.request("GET /204 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.status, 204);
        let r = c.request("GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (200, "real"));
    }
    assert_eq!(up.count(), 10);
}

/// Interim 1xx responses from the upstream (even with framing headers)
/// are consumed; the client gets the final response, intact.
#[test]
fn interim_1xx_responses_are_skipped() {
    let up = Upstream::start(|_| {
        Behaviour::Respond(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\ncontent-length: 5\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal"
                .to_vec(),
        )
    });
    let gate = gate_to(up.addr, "");
    let mut c = Client::connect(gate.addr);
    for _ in 0..3 {
        c.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_interim();
        assert_eq!((r.status, r.text().as_str()), (200, "final"));
    }
}

/// A close-delimited upstream body (HTTP/1.1 with neither length nor
/// chunked, or HTTP/1.0) is read to EOF and re-chunked for an HTTP/1.1
/// client, whose connection stays usable.
#[test]
fn close_delimited_bodies_are_read_to_eof_and_rechunked() {
    let body: Vec<u8> = (0..300_000).map(|i| b'a' + (i % 26) as u8).collect();
    let sent = body.clone();
    let up = Scripted::start(move |mut conn| {
        if let Some(r) = conn.read_request() {
            let status = if r.target == "/10" {
                "HTTP/1.0 200 OK\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\n"
            };
            let mut out = status.as_bytes().to_vec();
            out.extend_from_slice(&sent);
            conn.write(&out);
        }
    });
    let gate = gate_to(up.addr, "");
    let mut c = Client::connect(gate.addr);
    for path in ["/11", "/10", "/11"] {
        let r = c.request(&format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{path}");
        assert!(
            r.body == body,
            "{path}: body differs ({} bytes)",
            r.body.len()
        );
    }
    // Three requests, three upstream connections: none was pooled.
    assert_eq!(up.connections(), 3);
}

/// A chunk is relayed as soon as it arrives, in both directions, not held
/// back until the next one (streaming responses, long polls, uploads).
///
/// Each side sends its next chunk only once the other end has the first
/// one: a proxy that held a chunk back until the next would wait forever,
/// and the test fails at its bound instead of measuring how fast.
#[test]
fn chunks_are_relayed_as_they_arrive() {
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::Mutex;
    // The upstream tells the client it has the first request chunk; the
    // client tells the upstream it has the first response chunk.
    let (upload_seen, upload_arrived) = channel::<()>();
    let (download_seen, download_arrived) = channel::<()>();
    let upstream_side: Mutex<(Sender<()>, Receiver<()>)> =
        Mutex::new((upload_seen, download_arrived));
    let up = Scripted::start(move |mut conn| {
        let (upload_seen, download_arrived) = &*upstream_side.lock().unwrap();
        let mut seen = Vec::new();
        let mut b = [0u8; 4096];
        let mut read_until = |seen: &mut Vec<u8>, end: &[u8]| {
            while find(seen, end).is_none() {
                match conn.stream.read(&mut b) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => seen.extend_from_slice(&b[..n]),
                }
            }
            true
        };
        if !read_until(&mut seen, b"first\r\n") {
            return;
        }
        let _ = upload_seen.send(());
        if !read_until(&mut seen, b"0\r\n\r\n") {
            return;
        }
        conn.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n");
        // No second chunk unless the client got the first: held back, it
        // would never come.
        if download_arrived.recv_timeout(WAIT).is_ok() {
            conn.write(b"6\r\nsecond\r\n0\r\n\r\n");
        }
    });
    let gate = gate_to(up.addr, "");
    let mut c = TcpStream::connect(gate.addr).unwrap();
    // Longer than the upstream's wait, so a chunk held back fails on what
    // arrived, not on a read.
    c.set_read_timeout(Some(WAIT * 2)).unwrap();
    c.write_all(
        b"POST /stream HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    )
    .unwrap();
    upload_arrived
        .recv_timeout(WAIT)
        .expect("the first request chunk held back until the next one");
    c.write_all(b"0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while find(&got, b"first\r\n").is_none() {
        let n = c.read(&mut b).expect("the first response chunk");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    download_seen.send(()).unwrap();
    while find(&got, b"0\r\n\r\n").is_none() {
        let n = c.read(&mut b).expect("the rest of the response");
        assert!(
            n > 0,
            "the first response chunk was held back until the node gave up: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&b[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("second"));
}

/// A response with conflicting or invalid framing, or an invalid head, is
/// a 502; the client connection survives, the upstream one does not.
#[test]
fn invalid_upstream_framing_is_502() {
    let cases: &[(&str, &[u8])] = &[
        ("/cl-te", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("/cl-cl", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"),
        ("/cl-plus", b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello"),
        ("/cl-text", b"HTTP/1.1 200 OK\r\ncontent-length: five\r\n\r\nhello"),
        ("/te-te", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("/obs-fold", b"HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 0\r\n\r\n"),
        ("/space-colon", b"HTTP/1.1 200 OK\r\ncontent-length : 0\r\n\r\n"),
        ("/garbage", b"HTTP/1.1 2xx OK\r\ncontent-length: 0\r\n\r\n"),
        ("/status-line", b"ICY 200 OK\r\n\r\n"),
    ];
    let table: Vec<(String, Vec<u8>)> = cases
        .iter()
        .map(|(p, b)| (p.to_string(), b.to_vec()))
        .collect();
    let up = Scripted::start(move |mut conn| {
        while let Some(r) = conn.read_request() {
            let bytes = table
                .iter()
                .find(|(p, _)| *p == r.target)
                .map(|(_, b)| b.clone())
                .unwrap_or_else(|| ok_response("fine"));
            if !conn.write(&bytes) {
                return;
            }
        }
    });
    let gate = gate_to(up.addr, "");
    let mut c = Client::connect(gate.addr);
    for (path, _) in cases {
        let r = c.request(&format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(r.status, 502, "{path}");
        let r = c.request("GET /fine HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (200, "fine"), "after {path}");
    }
}

/// An upstream that resets or closes in the middle of a body makes the
/// proxy close the client connection without completing the message: a
/// short `Content-Length` body, or a chunked one without its last chunk.
#[test]
fn upstream_dying_mid_body_closes_the_client_connection() {
    let up = Scripted::start(|mut conn| {
        let Some(r) = conn.read_request() else { return };
        let (head, reset) = match r.target.as_str() {
            "/cl-reset" => (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"[..],
                true,
            ),
            "/cl-close" => (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"[..],
                false,
            ),
            "/chunked-reset" => (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3e8\r\n"[..],
                true,
            ),
            "/chunked-close" => (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n64\r\n"[..],
                false,
            ),
            _ => (&b"HTTP/1.1 200 OK\r\n\r\n"[..], true), // close-delimited, then reset
        };
        let mut out = head.to_vec();
        out.extend_from_slice(&[b'x'; 100]);
        if r.target == "/chunked-close" {
            out.extend_from_slice(b"\r\n"); // a whole chunk, but no last chunk
        }
        conn.write(&out);
        std::thread::sleep(Duration::from_millis(50));
        if reset {
            conn.reset();
        }
    });
    let gate = gate_to(up.addr, "");
    for path in [
        "/cl-reset",
        "/cl-close",
        "/chunked-reset",
        "/chunked-close",
        "/eof-reset",
    ] {
        let mut c = Client::connect(gate.addr);
        c.write(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let wire = c
            .read_to_close(WAIT)
            .unwrap_or_else(|| panic!("{path}: client connection left open"));
        let text = String::from_utf8_lossy(&wire);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{path}: no response head in {text:?}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        if path.starts_with("/cl") {
            assert!(head.contains("content-length: 1000"), "{path}: {head}");
            assert!(body.len() < 1000, "{path}: a complete-looking body");
        } else {
            assert!(
                head.contains("transfer-encoding: chunked"),
                "{path}: {head}"
            );
            assert!(
                !body.ends_with("0\r\n\r\n"),
                "{path}: the last chunk was sent"
            );
        }
    }
    assert!(
        gate.wait_for_log("response body aborted"),
        "no log line: {}",
        gate.log()
    );
    // And the proxy keeps serving.
    let fine = Upstream::named("fine");
    let gate2 = gate_to(fine.addr, "");
    assert_eq!(gate2.get("/").status, 200);
}

/// A client that goes away in the middle of a large response leaves the
/// upstream connection half-read: it must not be pooled (one worker, so
/// the next request would get it).
#[test]
fn upstream_connection_is_not_reused_after_an_incomplete_response() {
    let big: Vec<u8> = vec![b'z'; 4 << 20];
    let up = Scripted::start(move |mut conn| {
        while let Some(r) = conn.read_request() {
            let mut out = if r.target == "/big" {
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len()).into_bytes()
            } else {
                ok_response("small")
            };
            if r.target == "/big" {
                out.extend_from_slice(&big);
            }
            if !conn.write(&out) {
                return;
            }
        }
    });
    let config =
        "apisix:\n  node_listen:\n    - {ip: 127.0.0.1, port: 0}\ntinygate:\n  workers: 1\n";
    let gate = Gate::start(config, &route_to(up.addr));
    // Warm the pool with one complete exchange.
    assert_eq!(gate.get("/small").text(), "small");
    let mut c = TcpStream::connect(gate.addr).unwrap();
    c.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 4096];
    let n = c.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    drop(c);
    // The proxy notices the client is gone (bounded wait), then serves the
    // next requests on connections in sync.
    assert!(gate.wait_for_log("response body aborted"), "{}", gate.log());
    for _ in 0..3 {
        let r = gate.get("/small");
        assert_eq!((r.status, r.text().as_str()), (200, "small"));
    }
    assert!(up.connections() >= 2, "the half-read connection was reused");
}

/// R11: a POST whose bytes reached a node that then dies without answering
/// is not replayed, neither on another node nor on a fresh connection: the
/// client gets a 502 and the node saw it exactly once.
#[test]
fn post_that_reached_a_dying_node_is_not_replayed() {
    let dying = Scripted::start(|mut conn| {
        let _ = conn.read_request();
        // Close without answering.
    });
    let good = Upstream::named("good");
    // The heavier node is picked first (smooth weighted round-robin).
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream:\n      retries: 1\n      nodes:\n        \"{}\": 2\n        \"{}\": 1\n#END\n",
        dying.addr, good.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let r = gate.request("POST /order HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 502);
    assert_eq!(dying.count(), 1, "the POST was replayed");
    assert_eq!(good.count(), 0, "the POST was replayed on another node");
    assert_eq!(dying.received.lock().unwrap()[0].body, b"hello");
}

/// On a pooled connection that the node closes after reading the request:
/// a GET (idempotent, no body) is replayed once on a fresh connection, a
/// POST is not.
#[test]
fn only_idempotent_requests_are_replayed_after_a_stale_pooled_connection() {
    // Each connection answers its first request, then reads the second
    // and closes without answering.
    let node = Scripted::start(|mut conn| {
        if conn.read_request().is_none() || !conn.write(&ok_response("first")) {
            return;
        }
        let _ = conn.read_request();
    });
    let gate = Gate::start(
        "apisix:\n  node_listen:\n    - {ip: 127.0.0.1, port: 0}\ntinygate:\n  workers: 1\n",
        &route_to(node.addr),
    );
    let mut c = Client::connect(gate.addr);
    assert_eq!(c.request("GET /a HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
    let r = c.request("GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "first"),
        "GET not replayed"
    );
    assert_eq!((node.count(), node.connections()), (3, 2));
    let r = c.request("POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(r.status, 502);
    assert_eq!(node.count(), 4, "the POST was replayed");
    assert_eq!(node.connections(), 2);
}

/// Slow heads for slowloris: connections that each sent part of a request
/// head and add a byte at a time.
struct SlowHeads {
    addr: SocketAddr,
    /// Each connection, when it was opened (before its connect), and how
    /// many bytes it trickled.
    conns: Vec<(TcpStream, Instant, usize)>,
}

/// What [`SlowHeads::trickle`] saw of the connections the proxy ended.
#[derive(Default)]
struct CutOff {
    /// How long each lived, from before its connect to its end.
    lifetimes: Vec<Duration>,
    /// How many of them got a `408` first.
    answered_408: usize,
}

impl SlowHeads {
    fn open(addr: SocketAddr, n: usize) -> SlowHeads {
        let mut heads = SlowHeads {
            addr,
            conns: Vec::new(),
        };
        heads.conns = (0..n).map(|_| heads.connect()).collect();
        heads
    }

    fn connect(&self) -> (TcpStream, Instant, usize) {
        let since = Instant::now();
        let s = TcpStream::connect(self.addr).expect("slow connect");
        s.set_nonblocking(true).unwrap();
        let _ = (&s).write(b"GET / HTTP/1.1\r\nHost: a\r\n");
        (s, since, 0)
    }

    /// Sends one more head byte on each connection; one the proxy answered
    /// or closed is replaced by a new one (when `reopen`) and counted.
    fn trickle(&mut self, reopen: bool, cut: &mut CutOff) {
        let trickle = b"X-Slow: 1\r\n";
        let mut i = 0;
        while i < self.conns.len() {
            let (s, since, sent) = &mut self.conns[i];
            let _ = (&*s).write(&trickle[*sent % trickle.len()..][..1]);
            *sent += 1;
            let mut b = [0u8; 512];
            let ended = match (&*s).read(&mut b) {
                Ok(0) => true,
                Ok(n) => {
                    if b[..n].starts_with(b"HTTP/1.1 408") {
                        cut.answered_408 += 1;
                    }
                    true
                }
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            if !ended {
                i += 1;
                continue;
            }
            cut.lifetimes.push(since.elapsed());
            if reopen {
                self.conns[i] = self.connect();
                i += 1;
            } else {
                self.conns.swap_remove(i);
            }
        }
    }
}

/// Slowloris, bounded: 200 connections trickle header bytes. They hold
/// their own connections only: with the default `client_header_timeout`
/// (60 s, so none is cut meanwhile) normal requests on new connections are
/// answered while all 200 are held. With `client_header_timeout: 1` every
/// one is cut off by a 408 and a close, not before the timeout, while the
/// attacker re-opens what is cut and normal requests go on being answered.
/// The figures are printed for docs/operations.md; the test asserts what
/// happened, not how fast.
#[test]
fn slowloris_does_not_delay_normal_requests() {
    const SLOW: usize = 200;
    const NORMAL: usize = 20;
    let up = Upstream::named("u");
    let gate = gate_to(up.addr, "");
    let mut slow = SlowHeads::open(gate.addr, SLOW);
    let mut cut = CutOff::default();
    for i in 0..NORMAL {
        slow.trickle(false, &mut cut);
        assert_eq!(gate.get("/").status, 200, "normal request {i}");
    }
    slow.trickle(false, &mut cut);
    assert_eq!(
        cut.lifetimes.len(),
        0,
        "slow heads ended before their timeout"
    );
    assert_eq!(up.count(), NORMAL, "a slow head reached the upstream");
    drop(slow);

    let up = Upstream::named("u");
    let gate = gate_to(up.addr, "  client_header_timeout: 1\n");
    let addr = gate.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut slow = SlowHeads::open(addr, SLOW);
            let mut cut = CutOff::default();
            let mut opened = SLOW;
            // Until every connection of the first round was cut (they were
            // all opened before any re-opened one), and the test says so.
            let deadline = Instant::now() + WAIT * 2;
            while !(cut.lifetimes.len() >= SLOW && stop.load(Ordering::SeqCst)) {
                let before = cut.lifetimes.len();
                slow.trickle(true, &mut cut);
                opened += cut.lifetimes.len() - before;
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (opened, cut)
        })
    };
    let mut latencies = Vec::new();
    while latencies.len() < NORMAL || !attacker.is_finished() {
        let t = Instant::now();
        let r = gate.get("/");
        latencies.push(t.elapsed());
        assert_eq!(r.status, 200);
        if latencies.len() >= NORMAL {
            stop.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (
        opened,
        CutOff {
            mut lifetimes,
            answered_408,
        },
    ) = attacker.join().unwrap();
    latencies.sort();
    lifetimes.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    eprintln!(
        "slowloris: {SLOW} concurrent slow connections ({opened} opened), \
         {} cut off by the proxy ({answered_408} with a 408), lifetime min {:?} median {:?} max {:?}; \
         {} normal requests: p50 {:?} p99 {:?} max {:?}",
        lifetimes.len(),
        lifetimes.first().copied().unwrap_or_default(),
        if lifetimes.is_empty() { Duration::ZERO } else { pct(&lifetimes, 50) },
        lifetimes.last().copied().unwrap_or_default(),
        latencies.len(),
        pct(&latencies, 50),
        pct(&latencies, 99),
        latencies.last().unwrap(),
    );
    assert!(
        lifetimes.len() >= SLOW,
        "only {} slow connections cut off within {:?}",
        lifetimes.len(),
        WAIT * 2
    );
    // Each lifetime starts before its connect, so before the proxy's
    // timer: a loaded machine only makes it longer. 0.9 of the timeout,
    // against clock granularity.
    assert!(
        lifetimes[0] >= Duration::from_millis(900),
        "cut off early: {:?}",
        lifetimes[0]
    );
    assert_eq!(
        up.count(),
        latencies.len(),
        "a slow head reached the upstream"
    );
}

/// A client that sends its body a byte at a time and one that never reads
/// its (large) response hold their own connections only: normal requests
/// are answered while they are held (the default timeouts, 60 s, cut none
/// of them meanwhile). The slowest is printed for docs/operations.md.
#[test]
fn slow_body_and_slow_reader_do_not_delay_others() {
    let big = vec![b'y'; 8 << 20];
    let up = Scripted::start(move |mut conn| {
        while let Some(r) = conn.read_request() {
            let out = if r.target == "/big" {
                let mut o = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len())
                    .into_bytes();
                o.extend_from_slice(&big);
                o
            } else {
                ok_response("u")
            };
            if !conn.write(&out) {
                return;
            }
        }
    });
    let gate = gate_to(up.addr, "");
    let mut slow_bodies: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(gate.addr).unwrap();
            s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut readers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(gate.addr).unwrap();
            s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let n = 50;
    for i in 0..n {
        for s in slow_bodies.iter_mut() {
            let _ = s.write_all(b"b");
        }
        let t = Instant::now();
        assert_eq!(gate.get("/").status, 200, "normal request {i}");
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("slow body/slow reader: {n} normal requests, slowest {slowest:?}");
    // Every slow body was still held, unanswered and open, after them.
    for (i, s) in slow_bodies.iter_mut().enumerate() {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let held = matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(held, "slow body {i} was answered or closed");
    }
    readers.clear();
}
