//! Strict parsing of HTTP/1.x message heads (RFC 9112) and the body framing
//! they imply.
//!
//! A request head that is ambiguous or malformed is refused with the status
//! the RFC asks for, never guessed at: that is what keeps a proxy from being
//! a request-smuggling gadget. Response heads from upstreams get the same
//! syntax checks; their framing errors become a 502 in the caller. This
//! module works on complete heads in memory and knows nothing of sockets.

use super::uri::normalize_host;
use super::HeaderMap;
use super::Version;

/// Why a request head was refused, and with which status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    pub status: u16,
    pub reason: &'static str,
}

fn bad(reason: &'static str) -> HeadError {
    HeadError {
        status: 400,
        reason,
    }
}

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes (responses only).
    Close,
}

/// A parsed request head. Header names are lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The path and query as sent (absolute-form is reduced to its path).
    pub target: String,
    pub version: Version,
    /// The authority: from an absolute-form target, else the `Host` header,
    /// as sent (plugins see it as `:authority`; `pass_host: pass` sends it).
    pub host: Option<String>,
    /// The host that routing matches: [`super::uri::normalize_host`] of
    /// `host` (lower-case, no port, no trailing dot); empty without one.
    pub hostname: String,
    pub headers: HeaderMap,
    pub framing: Framing,
}

/// A parsed response head. Header names are lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub version: Version,
    pub status: u16,
    pub headers: HeaderMap,
}

/// Longest request line accepted; longer gets 414 (nginx's 8 KiB buffer).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Most header fields accepted; more gets 431 (Envoy's default is 100).
pub const MAX_HEADERS: usize = 100;

/// Parses a complete request head (everything up to and including the
/// empty line).
///
/// # Errors
/// The status and reason to answer with.
pub fn parse_request_head(head: &[u8]) -> Result<RequestHead, HeadError> {
    let mut lines = Lines::new(head);
    let line = lines.next().ok_or(bad("empty request"))??;
    if line.len() > MAX_REQUEST_LINE {
        return Err(HeadError {
            status: 414,
            reason: "request line too long",
        });
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad("malformed method"));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(bad("malformed request target"));
    }
    let version = parse_version(version)?;
    let headers = parse_fields(&mut lines)?;
    let method = String::from_utf8_lossy(method).into_owned();
    let target = String::from_utf8_lossy(target).into_owned();

    let mut host_headers = headers.iter().filter(|(k, _)| k == b"host");
    let host_header = host_headers.next();
    if host_headers.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    drop(host_headers);
    if version == Version::Http11 && host_header.is_none() {
        return Err(bad("missing Host header"));
    }
    // RFC 9112 §3.2: a Host that is not a valid authority is a 400, even
    // when an absolute-form target overrides it.
    if let Some((_, h)) = host_header {
        if !std::str::from_utf8(h).is_ok_and(|h| normalize_host(h).is_ok()) {
            return Err(bad("invalid Host header"));
        }
    }
    let (target, host) = if target.starts_with('/') {
        (
            target,
            host_header.map(|(_, h)| String::from_utf8_lossy(h).into_owned()),
        )
    } else if let Some((authority, path)) = split_absolute_form(&target) {
        (path, Some(authority))
    } else if target == "*" && method == "OPTIONS" {
        (
            target,
            host_header.map(|(_, h)| String::from_utf8_lossy(h).into_owned()),
        )
    } else {
        return Err(bad("unsupported request target form"));
    };
    let hostname = match &host {
        Some(h) => normalize_host(h).map_err(|_| bad("invalid Host header"))?,
        None => String::new(),
    };
    let framing = request_framing(&headers, version)?;
    Ok(RequestHead {
        method,
        target,
        version,
        host,
        hostname,
        headers,
        framing,
    })
}

/// Parses a complete response head from an upstream.
///
/// # Errors
/// A description of what is malformed (the caller answers 502).
pub fn parse_response_head(head: &[u8]) -> Result<ResponseHead, HeadError> {
    let mut lines = Lines::new(head);
    let line = lines.next().ok_or(bad("empty response"))??;
    if line.len() < 12 || line[8] != b' ' || (line.len() > 12 && line[12] != b' ') {
        return Err(bad("malformed status line"));
    }
    let version = parse_version(&line[..8])?;
    let code = &line[9..12];
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(bad("malformed status code"));
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if line[12..]
        .iter()
        .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)
    {
        return Err(bad("control character in reason phrase"));
    }
    let headers = parse_fields(&mut lines)?;
    Ok(ResponseHead {
        version,
        status,
        headers,
    })
}

/// How the body of a response to `method` with this head is delimited
/// (RFC 9112 §6.3).
///
/// # Errors
/// Conflicting or invalid framing (the caller answers 502).
pub fn response_framing(head: &ResponseHead, method: &str) -> Result<Framing, HeadError> {
    if method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(Framing::Empty);
    }
    let te = transfer_encoding(&head.headers)?;
    let cl = content_length(&head.headers)?;
    match (te, cl) {
        (Some(_), Some(_)) => Err(bad("both Transfer-Encoding and Content-Length")),
        (Some(true), None) => Ok(Framing::Chunked),
        (Some(false), None) => Ok(Framing::Close),
        (None, Some(0)) => Ok(Framing::Empty),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) => Ok(Framing::Close),
    }
}

fn request_framing(headers: &HeaderMap, version: Version) -> Result<Framing, HeadError> {
    let te = transfer_encoding(headers)?;
    let cl = content_length(headers)?;
    match (te, cl) {
        (Some(_), Some(_)) => Err(bad("both Transfer-Encoding and Content-Length")),
        (Some(_), None) if version == Version::Http10 => {
            Err(bad("Transfer-Encoding in an HTTP/1.0 request"))
        }
        (Some(true), None) => Ok(Framing::Chunked),
        // No final `chunked`: the body length cannot be known, and the
        // server MUST answer 400 and close (RFC 9112 §6.3 item 4).
        (Some(false), None) if !ends_with_chunked(headers) => {
            Err(bad("Transfer-Encoding does not end with chunked"))
        }
        // A final `chunked` behind a coding we do not implement (§6.1).
        (Some(false), None) => Err(HeadError {
            status: 501,
            reason: "unsupported Transfer-Encoding",
        }),
        (None, Some(0)) | (None, None) => Ok(Framing::Empty),
        (None, Some(n)) => Ok(Framing::Length(n)),
    }
}

/// True when the (single, already checked) `Transfer-Encoding` field's
/// last coding is `chunked`.
fn ends_with_chunked(headers: &HeaderMap) -> bool {
    headers
        .iter()
        .find(|(k, _)| k == b"transfer-encoding")
        .and_then(|(_, v)| v.rsplit(|&b| b == b',').next())
        .is_some_and(|last| trim(last).eq_ignore_ascii_case(b"chunked"))
}

/// `Some(true)` for exactly `chunked`, `Some(false)` for any other coding
/// list, `None` when absent. Several fields or `chunked` not last is an
/// error: a proxy must not guess.
fn transfer_encoding(headers: &HeaderMap) -> Result<Option<bool>, HeadError> {
    let mut fields = headers.iter().filter(|(k, _)| k == b"transfer-encoding");
    let Some((_, value)) = fields.next() else {
        return Ok(None);
    };
    if fields.next().is_some() {
        return Err(bad("more than one Transfer-Encoding header"));
    }
    let codings: Vec<&[u8]> = value.split(|&b| b == b',').map(trim).collect();
    if codings
        .iter()
        .any(|c| c.is_empty() || !c.iter().all(|&b| is_tchar(b)))
    {
        return Err(bad("malformed Transfer-Encoding"));
    }
    let chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
    match codings.iter().position(chunked) {
        Some(i) if i + 1 == codings.len() && codings.len() == 1 => Ok(Some(true)),
        Some(i) if i + 1 == codings.len() => Ok(Some(false)),
        Some(_) => Err(bad("chunked is not the final Transfer-Encoding")),
        None => Ok(Some(false)),
    }
}

/// The one value all `Content-Length` fields agree on (each may be a
/// comma list of the same value); anything else is an error (§6.3 item 5).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, HeadError> {
    let mut found: Option<u64> = None;
    for (_, value) in headers.iter().filter(|(k, _)| k == b"content-length") {
        for part in value.split(|&b| b == b',').map(trim) {
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(bad("invalid Content-Length"));
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            match found {
                Some(m) if m != n => return Err(bad("conflicting Content-Length values")),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn parse_version(v: &[u8]) -> Result<Version, HeadError> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Err(HeadError {
                status: 505,
                reason: "HTTP version not supported",
            })
        }
        _ => Err(bad("malformed HTTP version")),
    }
}

/// Header fields as parsed: lower-case name, value.
type Fields = HeaderMap;

/// Header fields up to the empty line; names lower-cased.
fn parse_fields(lines: &mut Lines) -> Result<Fields, HeadError> {
    let mut headers = HeaderMap::with_capacity(16);
    for line in lines {
        let line = line?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return Err(HeadError {
                status: 431,
                reason: "too many header fields",
            });
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(bad("obsolete line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(bad("header line without a colon"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(bad("invalid header name"));
        }
        let value = trim(&line[colon + 1..]);
        if value.iter().any(|&b| !is_field_vchar(b)) {
            return Err(bad("invalid byte in header value"));
        }
        headers.add(name, value);
    }
    Err(bad("head does not end with an empty line"))
}

/// Splits a head into CRLF-terminated lines; a bare CR or LF is an error.
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    fn new(head: &'a [u8]) -> Self {
        Lines { rest: head }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<&'a [u8], HeadError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(lf) = self.rest.iter().position(|&b| b == b'\n') else {
            self.rest = &[];
            return Some(Err(bad("line without CRLF")));
        };
        let line = &self.rest[..lf];
        self.rest = &self.rest[lf + 1..];
        match line.split_last() {
            Some((b'\r', body)) if !body.contains(&b'\r') => Some(Ok(body)),
            _ => {
                self.rest = &[];
                Some(Err(bad("bare CR or LF in head")))
            }
        }
    }
}

/// `http://authority/path` → (authority, /path).
fn split_absolute_form(target: &str) -> Option<(String, String)> {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    // No userinfo (RFC 9110 §4.2.4), and a valid host.
    if authority.contains('@') || normalize_host(authority).is_err() {
        return None;
    }
    Some((authority.to_string(), path))
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Field value bytes: VCHAR, SP, HTAB and obs-text (RFC 9110 §5.5); no
/// CR, LF, NUL or other controls.
pub fn is_field_vchar(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// `s` without leading and trailing SP and HTAB (RFC 9110 §5.5 `OWS`).
pub(super) fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<RequestHead, HeadError> {
        parse_request_head(text.as_bytes())
    }

    fn status_of(text: &str) -> u16 {
        match req(text) {
            Ok(_) => 200,
            Err(e) => e.status,
        }
    }

    #[test]
    fn simple_get() {
        let h = req("GET /a?b=1 HTTP/1.1\r\nHost: example.com:8080\r\nX-Y:  z \r\n\r\n").unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/a?b=1");
        assert_eq!(h.host.as_deref(), Some("example.com:8080"));
        assert_eq!(h.hostname, "example.com");
        assert_eq!(h.headers.iter().nth(1), Some((&b"x-y"[..], &b"z"[..])));
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn absolute_form_overrides_host() {
        let h = req("GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\n\r\n").unwrap();
        assert_eq!(
            (h.host.as_deref(), h.target.as_str()),
            (Some("a.test"), "/x")
        );
        let h = req("GET http://A.Test.:8080?q HTTP/1.1\r\nHost: b\r\n\r\n").unwrap();
        assert_eq!((h.hostname.as_str(), h.target.as_str()), ("a.test", "/?q"));
    }

    #[test]
    fn http10_needs_no_host() {
        let h = req("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((h.version, h.host), (Version::Http10, None));
    }

    #[test]
    fn framing() {
        let f = |t: &str| req(t).map(|h| h.framing);
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for (text, status) in [
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX\u{ff}: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\nHost: a\n\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a..b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            ("GET http://a..b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ] {
            assert_eq!(status_of(text), status, "{text:?}");
        }
    }

    #[test]
    fn limits() {
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE)
        );
        assert_eq!(status_of(&long), 414);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status_of(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
    }

    #[test]
    fn response_heads_and_framing() {
        let h = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(response_framing(&h, "GET"), Ok(Framing::Length(3)));
        assert_eq!(response_framing(&h, "HEAD"), Ok(Framing::Empty));
        let h =
            parse_response_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(response_framing(&h, "GET"), Ok(Framing::Empty));
        let h = parse_response_head(b"HTTP/1.0 200\r\n\r\n").unwrap();
        assert_eq!(response_framing(&h, "GET"), Ok(Framing::Close));
        let h = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert!(response_framing(&h, "GET").is_err());
        assert!(parse_response_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_response_head(b"garbage\r\n\r\n").is_err());
    }
}
