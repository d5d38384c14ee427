//! Responses tinygate makes itself: every failure on the request path ends
//! here as a status with a short body, never as a dropped connection.
//!
//! Bodies follow APISIX's shape (`{"error_msg":"..."}`) so clients that
//! parse APISIX errors keep working. This module builds bytes only; the
//! caller writes them and logs the cause.

use super::{push_decimal, write_header, write_status_line};

/// `Server` header value of local replies.
pub const SERVER: &str = concat!("tinygate/", env!("CARGO_PKG_VERSION"));

/// A complete local response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Reply {
    fn error(status: u16, message: &str) -> Reply {
        let body = serde_json::json!({ "error_msg": message }).to_string() + "\n";
        Reply {
            status,
            headers: vec![(b"content-type".to_vec(), b"application/json".to_vec())],
            body: body.into_bytes(),
        }
    }
}

/// 404: no route matched.
pub fn not_found() -> Reply {
    Reply::error(404, "404 Route Not Found")
}

/// 400 (or 414, 431, 501, 505): the request itself is unacceptable.
pub fn bad_request(status: u16, why: &str) -> Reply {
    Reply::error(status, why)
}

/// 502: the upstream could not be reached or answered garbage.
pub fn bad_gateway() -> Reply {
    Reply::error(502, "502 Bad Gateway")
}

/// 504: the upstream did not answer in time.
pub fn gateway_timeout() -> Reply {
    Reply::error(504, "504 Gateway Timeout")
}

/// 503: a plugin failed, or the route has nowhere to send the request.
pub fn unavailable() -> Reply {
    Reply::error(503, "503 Service Unavailable")
}

/// Serializes `reply` as an HTTP/1.1 response. `head_only` omits the body
/// (a response to HEAD); `close` adds `Connection: close`. The `Server`
/// field is [`SERVER`] and `Date` the current time unless the reply has
/// them (a plugin's edit).
pub fn encode(reply: &Reply, head_only: bool, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + reply.body.len());
    write_status_line(&mut out, reply.status);
    if !reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(b"server"))
    {
        write_header(&mut out, b"server", SERVER.as_bytes());
    }
    if !reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(b"date"))
    {
        super::date::write_date_field(&mut out);
    }
    for (k, v) in &reply.headers {
        if !crate::http::is_framing(k) {
            write_header(&mut out, k, v);
        }
    }
    out.extend_from_slice(b"content-length: ");
    push_decimal(&mut out, reply.body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&reply.body);
    }
    out
}
