//! Performing `proxy_http_call`s: plugins' own HTTP requests to an
//! upstream of the configuration (by id, as Envoy plugins name clusters) or
//! to a `host:port`.
//!
//! A call runs as its own task on the worker, so it never blocks other
//! requests; its whole response (bounded in size) is read before the plugin
//! sees it. Any failure (connect, timeout, bad framing, too large) is
//! reported as "no response", which plugins see as zero headers.

use crate::http::HeaderMap;
use crate::http::{self, BodyReader, Head};
use crate::net::with_timeout;
use crate::upstream;
use crate::wasm::{CallResponse, HttpCall};
use crate::worker::Worker;
use smol::io::AsyncWriteExt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Largest call response body a plugin is handed.
const MAX_CALL_RESPONSE: usize = 4 << 20;

/// Performs `call`; `None` when it failed or timed out.
pub async fn perform(worker: &Worker, call: &HttpCall) -> Option<CallResponse> {
    match with_timeout(call.timeout, attempt(worker, call)).await {
        Ok(response) => Some(response),
        Err(e) => {
            log::warn!(
                "http_call {} to {:?} failed: {e}",
                call.call_id,
                call.target
            );
            None
        }
    }
}

async fn attempt(worker: &Worker, call: &HttpCall) -> io::Result<CallResponse> {
    let addr = resolve(worker, &call.target).await?;
    let mut conn = upstream::connect(addr, call.timeout).await?;
    let get = |name: &[u8]| call.headers.get(name).unwrap_or(b"");
    let method = get(b":method");
    let mut out = Vec::with_capacity(256 + call.body.len());
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(get(b":path"));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    http::write_header(&mut out, b"host", get(b":authority"));
    for (k, v) in call.headers.iter() {
        let ours = http::is_framing(k) || k == b"host";
        if !k.starts_with(b":") && !ours && http::is_valid_field(k, v) {
            http::write_header(&mut out, k, v);
        }
    }
    if !call.body.is_empty() || matches!(method, b"POST" | b"PUT" | b"PATCH") {
        out.extend_from_slice(b"content-length: ");
        http::push_decimal(&mut out, call.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&call.body);
    (&conn.stream).write_all(&out).await?;

    let mut reader = &conn.stream;
    let head = loop {
        let n = match conn
            .buf
            .read_head(&mut reader, http::io::MAX_RESPONSE_HEAD)
            .await?
        {
            Head::Complete(n) => n,
            Head::Closed | Head::TooLarge => return Err(invalid("no valid response head")),
        };
        let parsed = http::parse::parse_response_head(&conn.buf.data()[..n]);
        conn.buf.consume(n);
        let head = parsed.map_err(|e| invalid(e.reason))?;
        if head.status >= 200 {
            break head;
        }
    };
    let method = String::from_utf8_lossy(method);
    let framing = http::parse::response_framing(&head, &method).map_err(|e| invalid(e.reason))?;
    let mut body = Vec::new();
    let mut reader = BodyReader::new(framing);
    loop {
        let mut stream = &conn.stream;
        let n = reader.next(&mut conn.buf, &mut stream).await?;
        if n == 0 {
            break;
        }
        if body.len() + n > MAX_CALL_RESPONSE {
            return Err(invalid("response body too large"));
        }
        body.extend_from_slice(&conn.buf.data()[..n]);
        conn.buf.consume(n);
    }
    let mut headers = HeaderMap::with_capacity(head.headers.len() + 1);
    headers.add(b":status", head.status.to_string().as_bytes());
    for (k, v) in &head.headers {
        headers.add_lowercase(k, v);
    }
    Ok(CallResponse {
        headers,
        body,
        trailers: HeaderMap::new(),
    })
}

/// An upstream id of the current configuration (its next node), or
/// `host:port`.
async fn resolve(worker: &Worker, target: &str) -> io::Result<SocketAddr> {
    let gateway = worker.gateway();
    if let Some(up) = gateway
        .config
        .routes
        .upstreams
        .iter()
        .find(|u| u.id == target)
    {
        let picked = up
            .balancer
            .pick(None, &[])
            .ok_or_else(|| invalid("upstream has no node with a positive weight"))?;
        return Ok(up.nodes[picked.index].addr);
    }
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let target = target.to_string();
    smol::unblock(move || {
        target
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| invalid("no address"))
    })
    .await
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
