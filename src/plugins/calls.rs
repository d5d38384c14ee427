//! Performing `proxy_http_call`s: plugins' own HTTP requests to an
//! upstream of the configuration (by id, as Envoy plugins name clusters) or
//! to a `host:port`.
//!
//! A call runs as its own task on the worker, so it never blocks other
//! requests; its whole response (bounded in size) is read before the plugin
//! sees it. Any failure (connect, timeout, bad framing, too large, a
//! certificate that does not verify) is reported as "no response", which
//! plugins see as zero headers. A call to an HTTPS upstream speaks TLS to
//! it as requests do, with the server name its `pass_host` gives (the
//! call's `:authority` for `pass`). An upstream id is resolved when the
//! call is made ([`Target::of`]), with the configuration the call serves
//! (the one its instance checked the target against): the task performing
//! it holds only the upstream, never the configuration or a lock.

use crate::config::{PassHost, Upstream};
use crate::gateway::Gateway;
use crate::http::HeaderMap;
use crate::http::{self, BodyReader, Head};
use crate::net::with_timeout;
use crate::tls::{self, Stream};
use crate::upstream::{self, Conn, Dial, Tls};
use crate::wasm::{CallResponse, HttpCall};
use smol::io::AsyncWriteExt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// Largest call response body a plugin is handed.
const MAX_CALL_RESPONSE: usize = 4 << 20;

/// Where a call goes, as far as the configuration says.
pub enum Target {
    /// The node an upstream's balancer picked.
    Node {
        upstream: Arc<Upstream>,
        /// Its index in `upstream.nodes`.
        node: usize,
    },
    /// An upstream with no node to pick.
    NoNode,
    /// A `host:port` to look up.
    Name(String),
}

impl Target {
    /// Where a call to `target` goes: an upstream id of `gateway` (its
    /// balancer picks the node now), else a `host:port`.
    pub fn of(gateway: &Gateway, target: &str) -> Target {
        let Some(up) = gateway
            .config
            .routes
            .upstreams
            .iter()
            .find(|u| u.id == target)
        else {
            return Target::Name(target.to_string());
        };
        match up.balancer.pick(None, &[]) {
            Some(picked) => Target::Node {
                upstream: Arc::clone(up),
                node: picked.index,
            },
            None => Target::NoNode,
        }
    }
}

/// Performs `call`, sent to `target`; `None` when it failed or timed out.
pub async fn perform(target: Target, call: &HttpCall) -> Option<CallResponse> {
    match with_timeout(call.timeout, attempt(target, call)).await {
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

/// One call on the wire: dial the target, send the request, read the whole
/// response (the caller bounds it all with the call's timeout).
///
/// # Errors
/// Any failure to resolve, connect, send or read a valid response.
async fn attempt(target: Target, call: &HttpCall) -> io::Result<CallResponse> {
    let host = host_of_call(&target, call).into_bytes();
    let mut conn = dial(target, call).await?;
    conn.stream.write_all(&request_bytes(call, &host)).await?;
    read_response(&mut conn, call.headers.get(b":method").unwrap_or(b"")).await
}

/// Connects to where `call` goes: over TLS to an HTTPS upstream's node,
/// with the server name its `pass_host` gives.
///
/// # Errors
/// The target does not resolve, the upstream has no TLS client, or the
/// connection or its handshake fails or times out.
async fn dial(target: Target, call: &HttpCall) -> io::Result<Conn<Stream>> {
    let (addr, up) = resolve(target).await?;
    let authority = String::from_utf8_lossy(call.headers.get(b":authority").unwrap_or(b""));
    let name = up
        .as_ref()
        .map(|(u, node)| server_name(u, *node, &authority));
    let connector = match up.as_ref().and_then(|(u, _)| u.tls.as_ref()) {
        Some(settings) => Some(
            settings
                .connector()
                .ok_or_else(|| invalid("no TLS client"))?,
        ),
        None => None,
    };
    let dial = Dial {
        addr,
        tls: connector
            .zip(name.as_deref())
            .map(|(connector, server_name)| Tls {
                connector,
                server_name,
            }),
    };
    upstream::dial(&dial, call.timeout).await
}

/// The `Host` of a call to `target`: its `:authority`, or when that is
/// empty (Envoy accepts it, and the Go SDK's examples send it so) what
/// the call goes to: the node's address as `pass_host: node` gives it, the
/// upstream's `upstream_host` under `rewrite`, or the `host:port` named.
/// An empty `Host` would make most servers answer 400 (nginx does).
fn host_of_call(target: &Target, call: &HttpCall) -> String {
    let authority = call.headers.get(b":authority").unwrap_or(b"");
    if !authority.is_empty() {
        return String::from_utf8_lossy(authority).into_owned();
    }
    match target {
        Target::Node { upstream, node } => match &upstream.pass_host {
            PassHost::Rewrite(h) => h.clone(),
            PassHost::Pass | PassHost::Node => upstream.nodes[*node].authority.clone(),
        },
        Target::NoNode => String::new(),
        Target::Name(name) => name.clone(),
    }
}

/// The call's request on the wire: its `:method` and `:path` as the
/// request line, `host`, its other valid fields but framing, a
/// `content-length` when there is a body (or the method expects one), and
/// `connection: close`.
fn request_bytes(call: &HttpCall, host: &[u8]) -> Vec<u8> {
    let get = |name: &[u8]| call.headers.get(name).unwrap_or(b"");
    let method = get(b":method");
    let mut out = Vec::with_capacity(256 + call.body.len());
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(get(b":path"));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    http::write_header(&mut out, b"host", host);
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
    out
}

/// Reads the response to a request made with `method`: its final head
/// (1xx heads skipped) and its whole body, up to [`MAX_CALL_RESPONSE`].
///
/// # Errors
/// The connection fails or closes early, the head is invalid or too
/// large, or the body is over the limit.
async fn read_response(conn: &mut Conn<Stream>, method: &[u8]) -> io::Result<CallResponse> {
    let head = loop {
        let n = match conn
            .buf
            .read_head(&mut conn.stream, http::io::MAX_RESPONSE_HEAD)
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
        let n = reader.next(&mut conn.buf, &mut conn.stream).await?;
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

/// Where a call goes: the node picked for an upstream (with the upstream
/// and that node's index), or a `host:port` (plain HTTP).
async fn resolve(target: Target) -> io::Result<(SocketAddr, Option<(Arc<Upstream>, usize)>)> {
    let name = match target {
        Target::Node { upstream, node } => {
            return Ok((upstream.nodes[node].addr, Some((upstream, node))));
        }
        Target::NoNode => return Err(invalid("upstream has no node with a positive weight")),
        Target::Name(name) => name,
    };
    if let Ok(addr) = name.parse::<SocketAddr>() {
        return Ok((addr, None));
    }
    smol::unblock(move || {
        let addr = name.to_socket_addrs()?.next();
        Ok((addr.ok_or_else(|| invalid("no address"))?, None))
    })
    .await
}

/// The TLS server name of a call to node `node` of `up`: as `pass_host`
/// gives the `Host` of a request, with the call's `:authority` as the
/// client's.
fn server_name(up: &Upstream, node: usize, authority: &str) -> String {
    let host = match &up.pass_host {
        PassHost::Pass if !authority.is_empty() => authority,
        PassHost::Rewrite(h) => h,
        PassHost::Pass | PassHost::Node => &up.nodes[node].authority,
    };
    tls::host_of(host).to_string()
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
