//! tinygate's own HTTP/1.1: strict head parsing, body framing, streaming
//! readers and the few writers a proxy needs (the codec), the header map
//! shared with the plugin host (`headers`), the responses tinygate makes
//! itself (`reply`), and the small servers beside the proxy (`side`).
//!
//! We do not use async-h1 on the request path: it closes connections
//! without a response on malformed input, refuses HTTP/1.0, accepts
//! ambiguous `Content-Length` values, buffers in ways a proxy cannot
//! control, and knows no request method when reading a response (so HEAD
//! responses hang). A proxy needs exact control of every byte it forwards,
//! so the wire format lives here, in a few hundred lines with tests.
//! This module knows nothing about routes, upstream choice or plugins; it
//! sits on `net/` (the side servers' sockets) and under everything else.

pub mod date;
pub mod headers;
pub mod io;
#[cfg(any(test, fuzzing))]
pub mod oracle;
pub mod parse;
// The fuzz crate (`fuzz/`) compiles this module by path, with
// `cfg(fuzzing)`, for the pure codec only; these two need the rest of
// tinygate (sockets, the server name).
#[cfg(not(fuzzing))]
pub mod reply;
#[cfg(not(fuzzing))]
pub mod side;
pub mod uri;

pub use headers::HeaderMap;
pub use io::{BodyReader, Head, ReadBuf};
pub use parse::{Framing, RequestHead, ResponseHead};

/// The HTTP versions tinygate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// Hop-by-hop header names (RFC 9110 §7.6.1): never forwarded.
pub const HOP_BY_HOP: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"transfer-encoding",
    b"upgrade",
    b"trailer",
];

/// Fields that delimit a message or manage its connection (RFC 9112 §6,
/// §9; RFC 9110 §7.6.1, §7.8). tinygate writes these itself from the
/// framing it chose; one taken from a header map a plugin can edit could
/// make the peer read the body differently (request smuggling, response
/// splitting), so serializers skip them.
pub const FRAMING: &[&[u8]] = &[
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"upgrade",
];

/// True when `name` (any case) is in [`FRAMING`].
pub fn is_framing(name: &[u8]) -> bool {
    FRAMING.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// True when `name` is hop-by-hop, either always or because the message's
/// `Connection` header lists it.
pub fn is_hop_by_hop(name: &[u8], connection_tokens: &[&[u8]]) -> bool {
    HOP_BY_HOP.contains(&name)
        || connection_tokens
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name))
}

/// The tokens of every `Connection` header among `headers`, as sent
/// (compare them case-insensitively).
pub fn connection_tokens<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .filter(|(k, _)| *k == b"connection")
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The reason phrase of a status code in IANA's HTTP Status Code Registry
/// (RFC 9110 §15 and the RFCs it names), empty for an unregistered one.
/// The node's own phrase is not kept (plugins see only `:status`), so
/// every registered code needs its phrase here: a client reading
/// `101 Switching Protocols` or `422 Unprocessable Content` should see it.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// Appends `HTTP/1.1 <status> <reason>\r\n`.
pub fn write_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: value\r\n`.
pub fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without allocating.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// True when a name/value pair may go on the wire: a token name and a
/// value without CR, LF, NUL or other controls (RFC 9110 §5.5).
pub fn is_valid_field(name: &[u8], value: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value.iter().all(|&b| parse::is_field_vchar(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 200, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn connection_lists_hop_by_hop_names() {
        let headers = [(&b"connection"[..], &b"X-Foo, close"[..]), (b"x-foo", b"1")];
        let tokens: Vec<&[u8]> = connection_tokens(headers.iter().copied()).collect();
        assert!(is_hop_by_hop(b"x-foo", &tokens));
        assert!(is_hop_by_hop(b"keep-alive", &tokens));
        assert!(!is_hop_by_hop(b"x-bar", &tokens));
    }

    #[test]
    fn framing_names_in_any_case() {
        for name in [
            &b"Content-Length"[..],
            b"TE",
            b"upgrade",
            b"Proxy-Connection",
        ] {
            assert!(is_framing(name), "{name:?}");
        }
        for name in [&b"content-type"[..], b"trailer", b"x-te", b"tes"] {
            assert!(!is_framing(name), "{name:?}");
        }
    }

    #[test]
    fn field_validation() {
        assert!(is_valid_field(b"x-a", b"ok value"));
        assert!(!is_valid_field(b"x a", b"v"));
        assert!(!is_valid_field(b"x", b"a\r\nInjected: 1"));
        assert!(!is_valid_field(b"", b"v"));
    }
}
