//! Heads in and out of the plugins, as pure functions: the request and the
//! response as plugins see them (header maps with pseudo-headers first),
//! the request head a node receives, and the response head a client
//! receives, built back from the maps the plugins edited. No I/O, no
//! state: each is tested on exact bytes below.

use super::connection::Client;
use super::keep_alive::has_token;
use crate::config::{Node, PassHost, Route, Upstream};
use crate::http::{self, push_decimal, Framing, HeaderMap, RequestHead, ResponseHead, Version};
use crate::wasm::StreamInfo;
use std::net::SocketAddr;

/// The request as plugins see it: pseudo-headers first, then the fields
/// without `Host` and without hop-by-hop fields. `:scheme` is `https` for
/// a client of an HTTPS listener.
pub(crate) fn request_map(req: &RequestHead, https: bool) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(req.headers.len() + 4);
    map.add_lowercase(b":method", req.method.as_bytes());
    map.add_lowercase(b":path", req.target.as_bytes());
    map.add_lowercase(b":authority", req.host.as_deref().unwrap_or("").as_bytes());
    map.add_lowercase(b":scheme", scheme(https));
    let tokens: Vec<&[u8]> = http::connection_tokens(req.headers.iter()).collect();
    for (k, v) in &req.headers {
        if k != b"host" && !http::is_hop_by_hop(k, &tokens) {
            map.add_lowercase(k, v);
        }
    }
    map
}

/// The response as plugins see it: `:status` first, then the fields
/// without hop-by-hop ones.
pub(crate) fn response_map(res: &ResponseHead) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(res.headers.len() + 1);
    let mut status = Vec::with_capacity(3);
    push_decimal(&mut status, u64::from(res.status));
    map.add_lowercase(b":status", &status);
    let tokens: Vec<&[u8]> = http::connection_tokens(res.headers.iter()).collect();
    for (k, v) in &res.headers {
        if !http::is_hop_by_hop(k, &tokens) {
            map.add_lowercase(k, v);
        }
    }
    map
}

/// True when a node's response leaves its connection reusable: HTTP/1.1,
/// no `Connection: close`, and an end that is not the close.
pub(crate) fn node_connection_reusable(response: &ResponseHead, framing: Framing) -> bool {
    response.version == Version::Http11
        && !has_token(response.headers.iter(), b"close")
        && framing != Framing::Close
}

/// Where the request goes and who sent it: what the node's head needs
/// besides the plugin-edited map.
pub(crate) struct Destination<'a> {
    pub(crate) upstream: &'a Upstream,
    pub(crate) node: &'a Node,
    /// The client's address (`X-Forwarded-For`, `X-Real-IP`).
    pub(crate) client: SocketAddr,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub(crate) client_https: bool,
}

/// `http` or `https`, as `:scheme` and `X-Forwarded-Proto` say it.
fn scheme(https: bool) -> &'static [u8] {
    if https {
        b"https"
    } else {
        b"http"
    }
}

/// The `Host` a node is sent, as `pass_host` says: the client's (as the
/// plugins left `:authority`), the node's `host:port`, or `upstream_host`.
/// Without its port, it is also the name an HTTPS node is sent (SNI) and
/// verified against (APISIX's `$upstream_host`, nginx's `proxy_ssl_name`).
pub(crate) fn host_field<'a>(map: &'a HeaderMap, to: &Destination<'a>) -> &'a [u8] {
    let authority = map.get(b":authority").unwrap_or(b"");
    match &to.upstream.pass_host {
        PassHost::Pass if !authority.is_empty() => authority,
        PassHost::Pass | PassHost::Node => to.node.authority.as_bytes(),
        PassHost::Rewrite(h) => h.as_bytes(),
    }
}

/// The request head for the node, built from the (plugin-edited) map
/// `map`, with the body in `framing`.
pub(crate) fn node_request_head(
    req: &RequestHead,
    map: &HeaderMap,
    to: &Destination<'_>,
    framing: Framing,
) -> Vec<u8> {
    let method = map.get(b":method").unwrap_or(req.method.as_bytes());
    let path = map.get(b":path").unwrap_or(req.target.as_bytes());
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host_field(map, to));
    out.extend_from_slice(b"\r\n");
    let forwarded_for = write_plugin_fields(&mut out, map);
    write_forwarding_fields(&mut out, req, to, forwarded_for);
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(&mut out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::Close => {
            if map.contains(b"content-length") {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes the request fields of `map` the node may see as they are
/// (framing and forwarding fields are tinygate's to write; invalid ones
/// a plugin set are dropped); returns the `X-Forwarded-For` it had.
fn write_plugin_fields<'m>(out: &mut Vec<u8>, map: &'m HeaderMap) -> Option<&'m [u8]> {
    let mut forwarded_for = None;
    for (k, v) in map.iter() {
        match k {
            b"x-forwarded-for" => forwarded_for = Some(v),
            b"expect" | b"host" | b"x-real-ip" | b"x-forwarded-proto" | b"x-forwarded-host" => {}
            // The framing is the proxy's, whatever the map holds.
            _ if k.starts_with(b":") || http::is_framing(k) => {}
            _ if !http::is_valid_field(k, v) => {
                log::warn!(
                    "dropping invalid request header {:?} set by a plugin",
                    String::from_utf8_lossy(k)
                );
            }
            _ => http::write_header(out, k, v),
        }
    }
    forwarded_for
}

/// `X-Forwarded-For` (appended to), `X-Real-IP`, `X-Forwarded-Proto` and
/// `X-Forwarded-Host`, as APISIX sets them.
fn write_forwarding_fields(
    out: &mut Vec<u8>,
    req: &RequestHead,
    to: &Destination<'_>,
    forwarded_for: Option<&[u8]>,
) {
    let client_ip = to.client.ip().to_string();
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prev) = forwarded_for {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-real-ip: ");
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(scheme(to.client_https));
    out.extend_from_slice(b"\r\n");
    if let Some(host) = &req.host {
        http::write_header(out, b"x-forwarded-host", host.as_bytes());
    }
}

/// Appends the response head for the client, built from the
/// (plugin-edited) map, framed for the client's HTTP version.
pub(crate) fn write_response_head(
    out: &mut Vec<u8>,
    status: u16,
    map: &HeaderMap,
    framing: Framing,
    req: &RequestHead,
    keep_alive: bool,
) {
    http::write_status_line(out, status);
    // A bodiless response keeps the representation's length (a HEAD or
    // 304); every other framing field is the proxy's own, below. A 1xx or
    // 204 never has one (RFC 9110 §8.6: a server MUST NOT send it; nginx
    // drops it from a 204 too).
    let keep_length = framing == Framing::Empty && !(status < 200 || status == 204);
    for (k, v) in map.iter() {
        let framing_field = http::is_framing(k) && !(keep_length && k == b"content-length");
        if k.starts_with(b":") || framing_field {
            continue;
        }
        if !http::is_valid_field(k, v) {
            log::warn!(
                "dropping invalid response header {:?} set by a plugin",
                String::from_utf8_lossy(k)
            );
            continue;
        }
        http::write_header(out, k, v);
    }
    // RFC 9110 §6.6.1: a proxy forwarding a response without `Date` adds
    // one (nginx does, with its own time).
    if !map.contains(b"date") {
        http::date::write_date_field(out);
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked | Framing::Close if req.version == Version::Http11 => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        _ => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.version == Version::Http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `:status` as a valid code.
pub(crate) fn status_of(map: &HeaderMap) -> Option<u16> {
    let s = std::str::from_utf8(map.get(b":status")?).ok()?;
    s.parse::<u16>().ok().filter(|s| (200..=999).contains(s))
}

/// True when the client waits for `100 Continue` before sending its body.
pub(crate) fn expects_continue(req: &RequestHead) -> bool {
    req.version == Version::Http11
        && req
            .headers
            .iter()
            .any(|(k, v)| k == b"expect" && v.eq_ignore_ascii_case(b"100-continue"))
}

/// What plugins can read about this stream through properties: `source`
/// is the client, `destination` the listener it reached, `tls` its
/// handshake.
pub(crate) fn stream_info<C>(client: &Client<C>, req: &RequestHead, route: &Route) -> StreamInfo {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let start_time_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    StreamInfo {
        source: Some(client.peer),
        destination: client.local,
        tls: client.tls.clone(),
        request_id: format!("{}-{n:x}", request_id_prefix()),
        route_name: route.id.clone(),
        protocol: protocol(req.version),
        start_time_ns,
        response_code: None,
    }
}

/// The version as it is written in a request line.
pub(crate) fn protocol(version: Version) -> &'static str {
    match version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    }
}

/// The process id in hex, looked up once (it is a system call).
fn request_id_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!("{:x}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::Algorithm;
    use crate::http::parse::{parse_request_head, parse_response_head};

    fn request(head: &str) -> RequestHead {
        parse_request_head(head.as_bytes()).expect("a valid request head")
    }

    fn text(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    fn upstream(pass_host: PassHost) -> Upstream {
        let mut upstream = Upstream::new("u".into(), vec![node()], Algorithm::RoundRobin);
        upstream.pass_host = pass_host;
        upstream
    }

    fn node() -> Node {
        Node {
            authority: "10.0.0.7:8080".into(),
            addr: "10.0.0.7:8080".parse().expect("an address"),
            weight: 1,
            priority: 0,
        }
    }

    const CLIENT: &str = "192.0.2.1:5000";

    /// Pseudo-headers first; `Host`, hop-by-hop fields and the fields
    /// `Connection` names are not the plugins' to see.
    #[test]
    fn the_request_map_has_pseudo_headers_first_and_no_hop_by_hop_fields() {
        let req = request(
            "POST /p?q=1 HTTP/1.1\r\nHost: Example.com\r\nConnection: x-trace\r\n\
             X-Trace: 1\r\nKeep-Alive: 5\r\nAccept: */*\r\nTE: trailers\r\ncontent-length: 2\r\n\r\n",
        );
        let expected = [
            (":method", "POST"),
            (":path", "/p?q=1"),
            (":authority", "Example.com"),
            (":scheme", "http"),
            ("accept", "*/*"),
            ("content-length", "2"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(text(&request_map(&req, false)), expected);
    }

    #[test]
    fn the_response_map_has_the_status_first_and_no_hop_by_hop_fields() {
        let res = parse_response_head(
            b"HTTP/1.1 201 Created\r\nConnection: close, x-a\r\nx-a: 1\r\nx-b: 2\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .expect("a valid response head");
        let expected = vec![
            (":status".to_string(), "201".to_string()),
            ("x-b".into(), "2".into()),
        ];
        assert_eq!(text(&response_map(&res)), expected);
    }

    /// The node's head: the plugins' method, path and fields; tinygate's
    /// host, forwarding and framing fields, in this order, byte for byte.
    #[test]
    fn the_node_request_head_golden_bytes() {
        let req = request(
            "POST /a HTTP/1.1\r\nHost: gw.example\r\nX-Forwarded-For: 203.0.113.9\r\n\
             Expect: 100-continue\r\nX-Real-IP: spoofed\r\nx-keep: yes\r\ncontent-length: 5\r\n\r\n",
        );
        let mut map = request_map(&req, false);
        map.replace(b":path", b"/rewritten");
        map.add(b"x-added", b"by plugin");
        map.add(b"x-bad", b"line\r\nbreak");
        map.add(b"transfer-encoding", b"chunked");
        map.add(b"connection", b"close");
        let up = upstream(PassHost::Pass);
        let node = node();
        let to = Destination {
            upstream: &up,
            node: &node,
            client: CLIENT.parse().expect("an address"),
            client_https: false,
        };
        let head = node_request_head(&req, &map, &to, Framing::Length(5));
        #[rustfmt::skip]
        let expected = concat!(
            "POST /rewritten HTTP/1.1\r\n",       // the plugins' method and path
            "host: gw.example\r\n",               // pass_host: pass keeps the client's
            "x-keep: yes\r\n",                    // the client's own fields, in order
            "x-added: by plugin\r\n",             // a plugin's; x-bad (CR LF) and framing fields are dropped
            "x-forwarded-for: 203.0.113.9, 192.0.2.1\r\n", // appended to
            "x-real-ip: 192.0.2.1\r\n",           // replaced, never the client's
            "x-forwarded-proto: http\r\n",
            "x-forwarded-host: gw.example\r\n",
            "content-length: 5\r\n",              // tinygate's framing, not the client's
            "\r\n",
        );
        assert_eq!(String::from_utf8_lossy(&head), expected);
    }

    #[test]
    fn pass_host_node_and_rewrite_and_chunked_framing() {
        let req = request("GET / HTTP/1.1\r\nHost: gw\r\n\r\n");
        let node = node();
        let client = CLIENT.parse().expect("an address");
        for (pass_host, host, https) in [
            (PassHost::Node, "10.0.0.7:8080", false),
            (
                PassHost::Rewrite("api.internal".into()),
                "api.internal",
                true,
            ),
        ] {
            let map = request_map(&req, https);
            let scheme = if https { "https" } else { "http" };
            assert_eq!(map.get(b":scheme"), Some(scheme.as_bytes()));
            let up = upstream(pass_host);
            let to = Destination {
                upstream: &up,
                node: &node,
                client,
                client_https: https,
            };
            assert_eq!(host_field(&map, &to), host.as_bytes());
            let head = node_request_head(&req, &map, &to, Framing::Chunked);
            let expected = format!(
                "GET / HTTP/1.1\r\nhost: {host}\r\nx-forwarded-for: 192.0.2.1\r\n\
                 x-real-ip: 192.0.2.1\r\nx-forwarded-proto: {scheme}\r\nx-forwarded-host: gw\r\n\
                 transfer-encoding: chunked\r\n\r\n"
            );
            assert_eq!(String::from_utf8_lossy(&head), expected);
        }
    }

    /// The client's head: the map's fields, tinygate's framing for the
    /// client's version, and the connection field the keep-alive decision
    /// asks for.
    #[test]
    #[rustfmt::skip]
    fn the_response_head_golden_bytes() {
        let mut map = HeaderMap::new();
        map.add(b":status", b"200");
        map.add(b"content-type", b"text/plain");
        map.add(b"date", b"Sun, 06 Nov 1994 08:49:37 GMT"); // the node's, kept
        map.add(b"content-length", b"99");
        let get_11 = request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let get_10 = request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let cases = [
            (&get_11, Framing::Length(5), true,
             "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 5\r\n\r\n"),
            (&get_11, Framing::Chunked, false,
             "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            (&get_11, Framing::Empty, true, // a body-less response keeps the length it announces (HEAD)
             "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 99\r\n\r\n"),
            (&get_10, Framing::Length(5), true,
             "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n"),
            (&get_10, Framing::Close, false, // HTTP/1.0 gets no chunks: the close ends it
             "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nconnection: close\r\n\r\n"),
        ];
        for (req, framing, keep, expected) in cases {
            let mut out = Vec::new();
            write_response_head(&mut out, 200, &map, framing, req, keep);
            assert_eq!(String::from_utf8_lossy(&out), expected, "{framing:?}");
        }
        // A response without `Date` gets the proxy's (RFC 9110 §6.6.1).
        let mut undated = HeaderMap::new();
        undated.add(b":status", b"204");
        let mut out = Vec::new();
        write_response_head(&mut out, 204, &undated, Framing::Empty, &get_11, true);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\ndate: "), "{text}");
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
    }

    #[test]
    fn status_must_be_three_digits_from_200() {
        let status = |s: &[u8]| {
            let mut map = HeaderMap::new();
            map.add(b":status", s);
            status_of(&map)
        };
        assert_eq!(status(b"204"), Some(204));
        assert_eq!(status(b"199"), None);
        assert_eq!(status(b"1000"), None);
        assert_eq!(status(b"2x0"), None);
        assert_eq!(status_of(&HeaderMap::new()), None);
    }
}
