//! The request path: one client connection, request after request.
//!
//! For each request: read and check the head, find the route, run the
//! plugins' request hooks, send the request to an upstream node (with
//! retries on connect failure), run the response hooks, stream the response
//! back, then finish the plugin contexts. Every failure becomes a response
//! with the right status and one log line; the connection is closed only
//! when its framing can no longer be trusted.

use crate::chain::{local_response_headers, BodyVerdict, Chain, Verdict};
use crate::config::{ClientLimits, Node, PassHost, Route, Upstream};
use crate::gateway::Gateway;
use crate::http::reply::{self, Reply};
use crate::http::HeaderMap;
use crate::http::{
    self, io::chunk_header, io::last_chunk_with, push_decimal, BodyReader, Framing, Head, ReadBuf,
    RequestHead, ResponseHead, Version,
};
use crate::net::with_timeout;
use crate::net::TcpStream;
use crate::ops::access_log::Record;
use crate::upstream::{self, Conn};
use crate::wasm::{Exchange, ExchangeData, Fault, LocalResponse, StreamInfo};
use crate::worker::Worker;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

/// Bytes gathered into one write before flushing.
const WRITE_COALESCE: usize = 64 * 1024;

/// Most request bytes read and discarded by a lingering close: a client
/// that goes on sending after its answer (a large upload refused with 413)
/// costs bounded work; one that stops, as clients that read while they
/// send do, is let go long before.
const LINGERING_MAX_BYTES: usize = 8 << 20;

/// Serves one client connection until it closes or must be closed.
pub async fn serve_connection(worker: &Worker, stream: TcpStream, peer: SocketAddr) {
    let mut client = Client {
        local: stream.get_ref().local_addr().ok(),
        stream,
        buf: ReadBuf::new(),
        peer,
        send_timeout: worker.gateway().config.main.limits.send_timeout,
        max_buffered_body: worker.gateway().config.main.limits.max_buffered_body,
        record: Record::default(),
    };
    let mut first = true;
    loop {
        let gateway = worker.gateway();
        let limits = gateway.config.main.limits.clone();
        client.send_timeout = limits.send_timeout;
        client.max_buffered_body = limits.max_buffered_body;
        if !client.buf.has_data() && !wait_for_request(worker, &mut client, &limits, first).await {
            return;
        }
        first = false;
        let mut reader = &client.stream;
        let head = client.buf.read_head(&mut reader, limits.max_header_size);
        let n = match with_timeout(limits.client_header_timeout, head).await {
            Ok(Head::Complete(n)) => n,
            Ok(Head::Closed) => return,
            Ok(Head::TooLarge) => {
                // A request line that alone passes the limit is a 414, as
                // in nginx; otherwise the header section is too large.
                let data = client.buf.data();
                let line = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
                let line_limit = http::parse::MAX_REQUEST_LINE.min(limits.max_header_size);
                let (status, why) = if line > line_limit {
                    (414, "request line too long")
                } else {
                    (431, "request header fields too large")
                };
                log::warn!(
                    "{peer}: {status}: request head larger than {} bytes",
                    limits.max_header_size
                );
                let r = reply::bad_request(status, why);
                refuse(worker, &gateway, &mut client, &r, &limits).await;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                log::warn!("{peer}: 408: request head not received in time");
                let r = reply::bad_request(408, "request head not received in time");
                refuse(worker, &gateway, &mut client, &r, &limits).await;
                return;
            }
            Err(e) => {
                log::debug!("{peer}: connection ended while reading a head: {e}");
                return;
            }
        };
        // Routing, plugins, the access log and the node all see the
        // normalised path (http::uri), so no spelling of a path escapes the
        // route that guards it.
        let parsed = http::parse::parse_request_head(&client.buf.data()[..n])
            .and_then(|req| http::uri::normalize_request(req, limits.paths));
        client.buf.consume(n);
        let req = match parsed {
            Ok(req) => req,
            Err(e) => {
                log::warn!("{peer}: {} {}", e.status, e.reason);
                let r = reply::bad_request(e.status, e.reason);
                refuse(worker, &gateway, &mut client, &r, &limits).await;
                return;
            }
        };
        start_record(&mut client.record, client.peer, &req);
        let had_body = req.framing != Framing::Empty;
        let keep = handle(worker, &gateway, &mut client, req, &limits).await;
        worker.record_request(&gateway, &client.record);
        if !keep {
            if had_body {
                // Maybe answered before the body was read (413, 400, a
                // plugin's reply): let the client read it.
                client.linger(&limits).await;
            }
            return;
        }
    }
}

/// Waits until the client sends something, reading it into the buffer.
/// Gives up (false) when the connection idles past its timeout, closes, or
/// the process drains. Reading (rather than waiting for readability)
/// costs no readiness registration when the next request is already there,
/// which it usually is on a busy keep-alive connection.
async fn wait_for_request(
    worker: &Worker,
    client: &mut Client,
    limits: &crate::config::ClientLimits,
    first: bool,
) -> bool {
    let idle_limit = if first {
        limits.client_header_timeout
    } else {
        limits.keepalive_timeout
    };
    let mut reader = &client.stream;
    let filled = with_timeout(idle_limit, client.buf.fill(&mut reader));
    let ready = smol::future::or(async { Some(filled.await) }, async {
        worker.stopped().await;
        None
    });
    match ready.await {
        Some(Ok(n)) => n > 0,
        Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut && first => {
            log::debug!("{}: 408: nothing received in time", client.peer);
            let r = reply::bad_request(408, "request not received in time");
            let _ = client.send(&reply::encode(&r, false, true)).await;
            false
        }
        _ => false,
    }
}

/// The downstream side of a connection.
struct Client {
    stream: TcpStream,
    buf: ReadBuf,
    peer: SocketAddr,
    /// The listener address the client reached (looked up once).
    local: Option<SocketAddr>,
    send_timeout: Duration,
    /// `max_buffered_body` of the configuration serving this request.
    max_buffered_body: usize,
    /// The access log record of the request being served.
    record: Record,
}

impl Client {
    async fn send(&self, bytes: &[u8]) -> io::Result<()> {
        with_timeout(self.send_timeout, (&self.stream).write_all(bytes)).await
    }

    /// nginx's lingering close, before a close that may leave request
    /// bytes unread: closing a socket with unread input sends a reset, and
    /// a reset makes the client's stack drop the answer it has not read
    /// yet. So: send FIN after the answer, then read and discard until the
    /// client closes, stays quiet for `lingering_timeout`, sends
    /// [`LINGERING_MAX_BYTES`], or `lingering_time` is up.
    async fn linger(&mut self, limits: &ClientLimits) {
        if self.stream.get_ref().shutdown(Shutdown::Write).is_err() {
            return;
        }
        let deadline = Instant::now() + limits.lingering_time;
        let mut discarded = 0;
        loop {
            let unread = self.buf.data().len();
            discarded += unread;
            self.buf.consume(unread);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || discarded >= LINGERING_MAX_BYTES {
                return;
            }
            let wait = limits.lingering_timeout.min(left);
            let mut reader = &self.stream;
            match with_timeout(wait, self.buf.fill(&mut reader)).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }
}

/// Where a response goes: the client's connection when serving, the
/// runner's record of it under `tinygate test` (`runner/exec.rs`), so both
/// answer and relay bodies through the same functions.
pub(crate) trait Downstream {
    /// Writes `bytes` to the client (bounded by its send timeout).
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The access log record of the request being answered.
    fn record(&mut self) -> &mut Record;
}

impl Downstream for Client {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        Client::send(self, bytes).await
    }

    fn record(&mut self) -> &mut Record {
        &mut self.record
    }
}

/// One request, from parsed head to the end of its response. Returns
/// whether the connection may carry another request.
async fn handle(
    worker: &Worker,
    gateway: &Gateway,
    client: &mut Client,
    req: RequestHead,
    limits: &ClientLimits,
) -> bool {
    let keep_alive = wants_keep_alive(&req) && !worker.stopping();
    let path = req.target.split('?').next().unwrap_or("/");
    let routes = &gateway.config.routes.routes;
    // Every candidate is taken until routes gain conditions of their own
    // (`vars`, `remote_addrs`), which will refuse some and fall through.
    let Some(index) = gateway
        .router
        .find(&req.method, &req.hostname, path, |_| true)
    else {
        log::debug!("{}: 404 {} {}", client.peer, req.method, req.target);
        return answer(client, &req, &reply::not_found(), keep_alive).await;
    };
    let route = &routes[index];
    client.record.route_id.clone_from(&route.id);

    let mut ex = Exchange::from(ExchangeData {
        request_headers: request_map(&req),
        info: stream_info(client.peer, client.local, &req, route),
        ..ExchangeData::default()
    });
    if let Framing::Length(n) = req.framing {
        if limits.client_max_body_size > 0 && n > limits.client_max_body_size {
            log::warn!("{}: 413: body of {n} bytes", client.peer);
            let r = reply::bad_request(413, "request body too large");
            return answer(client, &req, &r, false).await;
        }
    }
    let mut chain = match Chain::start(worker, gateway, route) {
        Ok(chain) => chain,
        Err((chain, fault)) => {
            log::warn!("route {:?}: {fault}", route.id);
            chain.finish(&mut ex);
            return answer(client, &req, &reply::unavailable(), keep_alive).await;
        }
    };
    let keep = proxy(
        worker, client, &req, route, &mut chain, &mut ex, keep_alive, limits,
    )
    .await;
    chain.finish(&mut ex);
    keep
}

/// Runs the plugins and the upstream exchange for a routed request.
#[allow(clippy::too_many_arguments)] // the request's parts, each used throughout
async fn proxy(
    worker: &Worker,
    client: &mut Client,
    req: &RequestHead,
    route: &Route,
    chain: &mut Chain<'_>,
    ex: &mut Exchange,
    keep_alive: bool,
    limits: &ClientLimits,
) -> bool {
    let eos = req.framing == Framing::Empty;
    if let Some(end) = EarlyEnd::of(chain.on_request_headers(ex, eos).await) {
        return answer_early_end(client, req, route, &end, ex, keep_alive).await;
    }
    let buffered = if (chain.hooks.request_body || chain.hooks.request_trailers)
        && req.framing != Framing::Empty
    {
        if expects_continue(req) {
            let _ = client.send(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        let mut stream = &client.stream;
        let read = request_body_through_plugins(
            &mut client.buf,
            &mut stream,
            req.framing,
            chain,
            ex,
            limits,
            route.upstream.is_some(),
        );
        match read.await {
            Ok(body) => Some(body),
            Err(end) => return answer_early_end(client, req, route, &end, ex, false).await,
        }
    } else {
        None
    };
    let whole = matches!(buffered, Some(PluginBody::Whole(_)));
    let Some(upstream) = &route.upstream else {
        log::warn!("route {:?}: no upstream and no plugin answered", route.id);
        let keep = keep_alive && (whole || req.framing == Framing::Empty);
        return answer(client, req, &reply::unavailable(), keep).await;
    };

    let body = match buffered {
        None => Pending::Unread,
        Some(PluginBody::Whole(body)) => Pending::Whole(body),
        Some(PluginBody::Spilled(spill)) => Pending::Spilled(spill),
    };
    let sent = send_request(
        worker, client, req, route, upstream, ex, chain, limits, body,
    );
    let (mut conn, node, response) = match sent.await {
        Ok(sent) => sent,
        Err(failure) => {
            if let Some(end) = failure.plugin {
                return answer_early_end(client, req, route, &end, ex, false).await;
            }
            log::warn!(
                "route {:?}: {} {}: {}",
                route.id,
                req.method,
                req.target,
                failure.why
            );
            let keep = keep_alive && (failure.request_body_consumed || whole);
            return answer(client, req, &failure.reply, keep).await;
        }
    };
    client.record.upstream_addr = Some(node.addr);
    client.record.upstream_status = Some(response.status);
    client.record.upstream_time = client.record.started.map(|t| t.elapsed());
    let framing = match http::parse::response_framing(&response, &req.method) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("route {:?}: upstream {}: {}", route.id, node.addr, e.reason);
            return answer(client, req, &reply::bad_gateway(), keep_alive).await;
        }
    };

    ex.response_headers = response_map(&response);
    let eos = framing == Framing::Empty;
    if let Some(end) = EarlyEnd::of(chain.on_response_headers(ex, eos).await) {
        return answer_early_end(client, req, route, &end, ex, keep_alive).await;
    }

    let upstream_reusable = response.version == Version::Http11
        && !has_token(response.headers.iter(), b"close")
        && framing != Framing::Close;
    let close_delimited = framing != Framing::Empty
        && !matches!(framing, Framing::Length(_))
        && req.version == Version::Http10;
    let keep_alive = keep_alive && !close_delimited;
    let status = match status_of(&ex.response_headers) {
        Some(s) => s,
        None => {
            log::warn!("route {:?}: a plugin set an invalid :status", route.id);
            return answer(client, req, &reply::unavailable(), keep_alive).await;
        }
    };
    client.record.status = status;
    ex.info.response_code = Some(status);
    let mut stream = &conn.stream;
    let relayed = if (chain.hooks.response_body || chain.hooks.response_trailers)
        && framing != Framing::Empty
    {
        let relay = Relay {
            status,
            req,
            keep_alive,
            limit: client.max_buffered_body,
        };
        let relayed = response_body_through_plugins(
            &mut conn.buf,
            &mut stream,
            client,
            framing,
            chain,
            ex,
            relay,
        );
        relayed.await
    } else {
        let mut out = Vec::with_capacity(1024);
        write_response_head(
            &mut out,
            status,
            &ex.response_headers,
            framing,
            req,
            keep_alive,
        );
        let client_is_11 = req.version == Version::Http11;
        let streamed = stream_body(
            &mut conn.buf,
            &mut stream,
            client,
            framing,
            out,
            client_is_11,
        );
        streamed.await.map(|()| keep_alive)
    };
    match relayed {
        Ok(keep) => {
            if upstream_reusable {
                worker.pool.borrow_mut().put(node.addr, conn);
            }
            keep
        }
        Err(e) => {
            log::warn!(
                "route {:?}: upstream {}: response body aborted: {e}",
                route.id,
                node.addr
            );
            false
        }
    }
}

/// Answers a request that plugins or the client ended early, keeping the
/// connection only if `keep_alive` (never while a body is left unread).
pub(crate) async fn answer_early_end<D: Downstream>(
    client: &mut D,
    req: &RequestHead,
    route: &Route,
    end: &EarlyEnd,
    ex: &Exchange,
    keep_alive: bool,
) -> bool {
    match end {
        EarlyEnd::Respond(local) => answer_local(client, req, local, ex, keep_alive).await,
        EarlyEnd::Refuse(r, why) => {
            log::warn!("route {:?}: {} {}: {why}", route.id, req.method, req.target);
            answer(client, req, r, keep_alive).await
        }
        EarlyEnd::Fail(fault) => {
            log::warn!("route {:?}: {fault}", route.id);
            answer(client, req, &reply::unavailable(), keep_alive).await
        }
    }
}

/// The request body when a node is picked.
enum Pending {
    /// Empty, or not read yet: it streams from the client as it comes.
    Unread,
    /// Read whole through the plugins.
    Whole(Vec<u8>),
    /// Partly read through the plugins; the rest streams through them.
    Spilled(Spill),
}

/// Why forwarding failed, and what to answer.
pub(crate) struct Failure {
    pub(crate) reply: Reply,
    pub(crate) why: String,
    /// True when the client's request body was fully read (or empty), so
    /// the client connection is still in sync.
    pub(crate) request_body_consumed: bool,
    /// A plugin ended the request while its body streamed to the node:
    /// this answers instead of `reply`.
    pub(crate) plugin: Option<EarlyEnd>,
}

impl Failure {
    fn new(reply: Reply, why: String, request_body_consumed: bool) -> Failure {
        Failure {
            reply,
            why,
            request_body_consumed,
            plugin: None,
        }
    }
}

/// Picks a node, sends the request (head and body) and reads the response
/// head. Connect failures move on to the next node, up to `retries`.
#[allow(clippy::too_many_arguments)] // the request's parts, each used throughout
async fn send_request<'u>(
    worker: &Worker,
    client: &mut Client,
    req: &RequestHead,
    route: &Route,
    upstream: &'u Upstream,
    ex: &mut Exchange,
    chain: &mut Chain<'_>,
    limits: &ClientLimits,
    body: Pending,
) -> Result<(Conn, &'u Node, ResponseHead), Failure> {
    let timeout = route.timeout;
    let attempts = 1 + upstream
        .retries
        .unwrap_or(upstream.nodes.len().saturating_sub(1) as u32) as usize;
    let mut tried: Vec<usize> = Vec::with_capacity(attempts);
    let mut last_error = String::from("no upstream node has a positive weight");
    let mut timed_out = false;
    let (whole, mut spill) = match body {
        Pending::Unread => (None, None),
        Pending::Whole(body) => (Some(body), None),
        Pending::Spilled(spill) => (None, Some(spill)),
    };
    // A whole body was read already; it can be sent again.
    let body_empty = req.framing == Framing::Empty || whole.is_some();
    // Replaying a request on a fresh connection is only safe when the body
    // can be sent again and the method is idempotent (RFC 9110 §9.2.2).
    let replayable = body_empty && is_idempotent(&req.method);
    let (framing, encoded) = match &spill {
        Some(spill) => (spilled_framing(req, ex, spill), None),
        None => upstream_framing(req, ex, whole.as_deref()),
    };
    let buffered = encoded.as_deref().or(whole.as_deref());
    for _ in 0..attempts {
        let Some(index) = pick_untried(upstream, &tried) else {
            break;
        };
        tried.push(index);
        let node = &upstream.nodes[index];
        let pooled = worker.pool.borrow_mut().take(node.addr);
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match upstream::connect(node.addr, timeout.connect).await {
                Ok(conn) => conn,
                Err(e) => {
                    timed_out = e.kind() == io::ErrorKind::TimedOut;
                    last_error = format!("connect to {} failed: {e}", node.addr);
                    log::debug!("upstream {:?}: {last_error}", upstream.id);
                    continue;
                }
            },
        };
        let head = request_head(req, ex, upstream, node, client.peer, framing);
        // A spilled body is read on as it is sent: it goes to this node only.
        let outgoing = match spill.take() {
            Some(spill) => Outgoing::Spilled(spill, framing, &mut *chain, &mut *ex),
            None => Outgoing::Ready(buffered),
        };
        let mut result = exchange(&mut conn, client, req, &head, timeout, limits, outgoing).await;
        if conn.reused && replayable && matches!(result, Err(Stage::Stale(_))) {
            // The pooled connection was closed by the node while idle: one
            // more try on a fresh connection, which is safe with no body.
            match upstream::connect(node.addr, timeout.connect).await {
                Ok(fresh) => {
                    conn = fresh;
                    let outgoing = Outgoing::Ready(buffered);
                    result =
                        exchange(&mut conn, client, req, &head, timeout, limits, outgoing).await;
                }
                Err(e) => {
                    last_error = format!("connect to {} failed: {e}", node.addr);
                    continue;
                }
            }
        }
        return match result {
            Ok(response) => Ok((conn, node, response)),
            Err(stage) => Err(failure(stage, node.addr)),
        };
    }
    let reply = if timed_out {
        reply::gateway_timeout()
    } else {
        reply::bad_gateway()
    };
    Err(Failure::new(reply, last_error, body_empty))
}

/// The framing of the request body sent upstream, and the body itself
/// when it must be re-encoded: a buffered body gets its exact length, or
/// chunked framing if plugins left trailers; a streamed one keeps the
/// client's framing.
pub(crate) fn upstream_framing(
    req: &RequestHead,
    ex: &Exchange,
    buffered: Option<&[u8]>,
) -> (Framing, Option<Vec<u8>>) {
    let trailers = valid_trailers(&ex.request_trailers);
    match buffered {
        // Trailers need chunked framing; otherwise the exact length.
        Some(body) if !trailers.is_empty() => {
            let mut out = Vec::with_capacity(body.len() + 64);
            if !body.is_empty() {
                chunk_header(&mut out, body.len());
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n");
            }
            last_chunk_with(&mut out, &trailers);
            (Framing::Chunked, Some(out))
        }
        Some(body) => (Framing::Length(body.len() as u64), None),
        None => (req.framing, None),
    }
}

/// The request trailers the plugins left that may be sent (no framing
/// field: RFC 9110 §6.5.1).
fn valid_trailers(map: &HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    map.iter()
        .filter(|(k, v)| http::is_valid_field(k, v) && !http::is_framing(k))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// What to answer when the exchange with `node` failed at `stage`.
pub(crate) fn failure(stage: Stage, node: SocketAddr) -> Failure {
    match stage {
        Stage::Stale(e) | Stage::Upstream(e) => Failure::new(
            if e.kind() == io::ErrorKind::TimedOut {
                reply::gateway_timeout()
            } else {
                reply::bad_gateway()
            },
            format!("upstream {node}: {e}"),
            true,
        ),
        Stage::RequestBody(e) => Failure::new(
            reply::bad_gateway(),
            format!("upstream {node}: while sending the request body: {e}"),
            false,
        ),
        Stage::Client(e) => client_failure(e),
        Stage::TooLarge => too_large(),
        Stage::Plugin(end) => Failure {
            reply: reply::unavailable(),
            why: String::new(),
            request_body_consumed: false,
            plugin: Some(end),
        },
    }
}

/// What to answer when the client's body could not be read.
fn client_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::TimedOut {
        Failure::new(
            reply::bad_request(408, "request body not received in time"),
            "client request body timed out".to_string(),
            false,
        )
    } else {
        Failure::new(
            reply::bad_request(400, "invalid request body"),
            format!("client request body: {e}"),
            false,
        )
    }
}

/// What to answer for a body past `client_max_body_size`.
fn too_large() -> Failure {
    Failure::new(
        reply::bad_request(413, "request body too large"),
        "request body larger than client_max_body_size".to_string(),
        false,
    )
}

/// Where an exchange with a node failed.
pub(crate) enum Stage {
    /// Writing the head, or the node closed before answering: on a pooled
    /// connection this usually means the node closed it while idle.
    Stale(io::Error),
    /// The client's body could not be read.
    Client(io::Error),
    /// The node failed while we were sending it the body.
    RequestBody(io::Error),
    /// The node failed or timed out while we waited for its answer.
    Upstream(io::Error),
    /// The client's body grew past `client_max_body_size`.
    TooLarge,
    /// A plugin ended a request body that was streaming to the node.
    Plugin(EarlyEnd),
}

/// The request body [`exchange`] sends after the head.
enum Outgoing<'a, 'c> {
    /// Read already (`Some`), or none or the client's, streamed as it
    /// comes (`None`).
    Ready(Option<&'a [u8]>),
    /// The rest of a spilled body, through the plugins, in this framing.
    Spilled(Spill, Framing, &'a mut Chain<'c>, &'a mut Exchange),
}

/// Sends head and body to `conn` and reads the response head.
async fn exchange(
    conn: &mut Conn,
    client: &mut Client,
    req: &RequestHead,
    head: &[u8],
    timeout: crate::config::Timeouts,
    limits: &ClientLimits,
    body: Outgoing<'_, '_>,
) -> Result<ResponseHead, Stage> {
    let mut out = Vec::with_capacity(head.len());
    out.extend_from_slice(head);
    if let Outgoing::Spilled(spill, framing, chain, ex) = body {
        let mut from = &client.stream;
        let mut to = &conn.stream;
        let body = Body {
            framing,
            send_timeout: timeout.send,
            limits,
        };
        let spilled = forward_spilled_body(
            &mut client.buf,
            &mut from,
            &mut to,
            spill,
            chain,
            ex,
            body,
            out,
        );
        out = spilled.await?;
    } else if let Outgoing::Ready(Some(body)) = body {
        out.extend_from_slice(body);
    } else if req.framing != Framing::Empty {
        if expects_continue(req) {
            let _ = client.send(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        let mut from = &client.stream;
        let mut to = &conn.stream;
        let body = Body {
            framing: req.framing,
            send_timeout: timeout.send,
            limits,
        };
        out = forward_body(&mut client.buf, &mut from, &mut to, body, out).await?;
    }
    if !out.is_empty() {
        with_timeout(timeout.send, (&conn.stream).write_all(&out))
            .await
            .map_err(Stage::Stale)?;
    }
    let mut reader = &conn.stream;
    read_response_head(&mut conn.buf, &mut reader, timeout.read).await
}

/// How a streamed request body is framed and bounded.
pub(crate) struct Body<'a> {
    pub(crate) framing: Framing,
    pub(crate) send_timeout: Duration,
    pub(crate) limits: &'a ClientLimits,
}

/// Streams the client's request body (from `buf` and `from`) to the node
/// (`to`), re-chunked if it came chunked, after the bytes already in `out`;
/// returns what is left to write (the end of the body).
pub(crate) async fn forward_body<R, W>(
    buf: &mut ReadBuf,
    from: &mut R,
    to: &mut W,
    body: Body<'_>,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, Stage>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BodyReader::new(body.framing);
    let chunked = body.framing == Framing::Chunked;
    let mut read = 0;
    loop {
        let n = next_piece_for_node(&mut reader, buf, from, to, &mut out, &body, &mut read).await?;
        if n == 0 {
            break;
        }
        encode_piece(&mut out, &buf.data()[..n], chunked);
        buf.consume(n);
        if out.len() >= WRITE_COALESCE {
            flush(to, &mut out, body.send_timeout).await?;
        }
    }
    if chunked {
        last_chunk_with(&mut out, &reader.take_trailers());
    }
    Ok(out)
}

/// The next piece of a request body bound for a node, counted in `read`
/// against `client_max_body_size`. What `out` holds for the node is
/// written first when the client has nothing more buffered, so the node
/// is not kept waiting on the client.
async fn next_piece_for_node<R, W>(
    reader: &mut BodyReader,
    buf: &mut ReadBuf,
    from: &mut R,
    to: &mut W,
    out: &mut Vec<u8>,
    body: &Body<'_>,
    read: &mut u64,
) -> Result<usize, Stage>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !out.is_empty() && !reader.has_buffered(buf) {
        flush(to, out, body.send_timeout).await?;
    }
    let n = read_body_piece(reader, buf, from, body.limits)
        .await
        .map_err(Stage::Client)?;
    *read += n as u64;
    if over_client_max(*read, body.limits) {
        return Err(Stage::TooLarge);
    }
    Ok(n)
}

/// Writes `out` to the node and empties it.
async fn flush<W: AsyncWrite + Unpin>(
    to: &mut W,
    out: &mut Vec<u8>,
    send_timeout: Duration,
) -> Result<(), Stage> {
    with_timeout(send_timeout, to.write_all(out))
        .await
        .map_err(Stage::RequestBody)?;
    out.clear();
    Ok(())
}

/// Appends one piece of body to `out`, as a chunk when `chunked`.
pub(crate) fn encode_piece(out: &mut Vec<u8>, piece: &[u8], chunked: bool) {
    if chunked {
        chunk_header(out, piece.len());
    }
    out.extend_from_slice(piece);
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads a node's response head from `buf` and `reader`, skipping interim
/// (1xx) responses.
pub(crate) async fn read_response_head<R: AsyncRead + Unpin>(
    buf: &mut ReadBuf,
    reader: &mut R,
    read_timeout: Duration,
) -> Result<ResponseHead, Stage> {
    loop {
        let head = buf.read_head(reader, http::io::MAX_RESPONSE_HEAD);
        let read = with_timeout(read_timeout, head).await;
        let n = match read {
            Ok(Head::Complete(n)) => n,
            Ok(Head::Closed) => {
                return Err(Stage::Stale(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "closed the connection before answering",
                )))
            }
            Ok(Head::TooLarge) => {
                return Err(Stage::Upstream(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response head too large",
                )))
            }
            Err(e) => return Err(Stage::Upstream(e)),
        };
        let parsed = http::parse::parse_response_head(&buf.data()[..n]);
        buf.consume(n);
        let response = parsed
            .map_err(|e| Stage::Upstream(io::Error::new(io::ErrorKind::InvalidData, e.reason)))?;
        match response.status {
            101 => {
                return Err(Stage::Upstream(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "protocol upgrades are not supported",
                )))
            }
            100..=199 => continue, // interim responses are not forwarded
            _ => return Ok(response),
        }
    }
}

/// The next node in the balancer's order that has not been tried yet
/// (healthy first; every node is reached, whatever the weights).
fn pick_untried(upstream: &Upstream, tried: &[usize]) -> Option<usize> {
    upstream.balancer.pick(None, tried).map(|p| p.index)
}

/// Streams the upstream body (from `up_buf` and `up`) to the client in the
/// client's framing, after the already-encoded head in `out`.
pub(crate) async fn stream_body<R: AsyncRead + Unpin, D: Downstream>(
    up_buf: &mut ReadBuf,
    up: &mut R,
    client: &mut D,
    framing: Framing,
    mut out: Vec<u8>,
    client_is_11: bool,
) -> io::Result<()> {
    let rechunk = matches!(framing, Framing::Chunked | Framing::Close) && client_is_11;
    let mut body = BodyReader::new(framing);
    loop {
        if !out.is_empty() && !body.has_buffered(up_buf) {
            client.send(&out).await?;
            out.clear();
        }
        let n = body.next(up_buf, up).await?;
        if n == 0 {
            break;
        }
        encode_piece(&mut out, &up_buf.data()[..n], rechunk);
        up_buf.consume(n);
        client.record().body_bytes_sent += n as u64;
        if out.len() >= WRITE_COALESCE {
            client.send(&out).await?;
            out.clear();
        }
    }
    if rechunk {
        last_chunk_with(&mut out, &body.take_trailers());
    }
    if !out.is_empty() {
        client.send(&out).await?;
    }
    Ok(())
}

/// How a request ended before the node's answer could be relayed.
pub(crate) enum EarlyEnd {
    /// A plugin answered locally.
    Respond(LocalResponse),
    /// The body could not be read, or was refused: answer this.
    Refuse(Reply, String),
    /// A plugin failed: answer 503.
    Fail(Fault),
}

impl EarlyEnd {
    /// How the plugins' `verdict` on a head ends the request, if it does.
    pub(crate) fn of(verdict: Verdict) -> Option<EarlyEnd> {
        match verdict {
            Verdict::Continue => None,
            Verdict::Respond(local) => Some(EarlyEnd::Respond(local)),
            Verdict::Fail(fault) => Some(EarlyEnd::Fail(fault)),
        }
    }
}

/// A request body read through the plugins.
pub(crate) enum PluginBody {
    /// All of it, as the plugins let it through.
    Whole(Vec<u8>),
    /// More than `max_buffered_body` got through before the body ended;
    /// the rest streams through the plugins to the node
    /// ([`forward_spilled_body`]).
    Spilled(Spill),
}

/// Where [`request_body_through_plugins`] stopped reading a body that
/// spilled.
pub(crate) struct Spill {
    /// What the plugins let through, not yet sent.
    forward: Vec<u8>,
    reader: BodyReader,
    /// Body bytes read from the client so far.
    read: u64,
}

/// Reads the request body (from `buf` and `body`, in `framing`), running
/// `proxy_on_request_body` on each piece as it arrives (a plugin that
/// returns `Pause` gets the cumulative body on the next call, Envoy-style);
/// returns the body to forward, which the plugins may have rewritten.
///
/// What a plugin holds (`Pause`) is bounded by `max_buffered_body` (413
/// past it). What the plugins let through is held too, so that the node
/// sees nothing before they have seen the whole body, up to the same
/// bound: past it the body spills when `spill` (the rest streams to the
/// node), and is refused with 413 otherwise.
pub(crate) async fn request_body_through_plugins<R: AsyncRead + Unpin>(
    buf: &mut ReadBuf,
    body: &mut R,
    framing: Framing,
    chain: &mut Chain<'_>,
    ex: &mut Exchange,
    limits: &ClientLimits,
    spill: bool,
) -> Result<PluginBody, EarlyEnd> {
    let mut reader = BodyReader::new(framing);
    let mut forward = Vec::new();
    let mut from = 0;
    let mut read: u64 = 0;
    loop {
        let n = read_body_piece(&mut reader, buf, body, limits)
            .await
            .map_err(|e| {
                let f = client_failure(e);
                EarlyEnd::Refuse(f.reply, f.why)
            })?;
        read += n as u64;
        ex.request_body.extend_from_slice(&buf.data()[..n]);
        buf.consume(n);
        if over_client_max(read, limits) {
            let f = too_large();
            return Err(EarlyEnd::Refuse(f.reply, f.why));
        }
        let held = ex.request_body.len() + if spill { 0 } else { forward.len() };
        if held > limits.max_buffered_body {
            return Err(held_too_much());
        }
        // A Content-Length body ends with its last piece: say so in the
        // same call, so that the piece and the end are decided together.
        let end_of_stream = n == 0 || reader.is_done();
        match chain.on_request_body(ex, end_of_stream, from).await {
            BodyVerdict::Continue => {
                forward.append(&mut ex.request_body);
                from = 0;
                if spill && !end_of_stream && forward.len() >= limits.max_buffered_body {
                    return Ok(PluginBody::Spilled(Spill {
                        forward,
                        reader,
                        read,
                    }));
                }
            }
            BodyVerdict::Buffer(i) => from = i,
            BodyVerdict::Respond(local) => return Err(EarlyEnd::Respond(local)),
            BodyVerdict::Fail(fault) => return Err(EarlyEnd::Fail(fault)),
        }
        if end_of_stream {
            request_trailers_through_plugins(&mut reader, chain, ex).await?;
            return Ok(PluginBody::Whole(forward));
        }
    }
}

/// Streams the rest of a spilled request body through the plugins to the
/// node (`to`), after the bytes already in `out` (the head); returns what
/// is left to write. The node was promised `body.framing`: with a length,
/// a plugin that changes it fails the exchange before a byte too many is
/// written.
#[allow(clippy::too_many_arguments)] // both ends, the plugins, and the body
pub(crate) async fn forward_spilled_body<R, W>(
    buf: &mut ReadBuf,
    from: &mut R,
    to: &mut W,
    spill: Spill,
    chain: &mut Chain<'_>,
    ex: &mut Exchange,
    body: Body<'_>,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, Stage>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (framing, send_timeout, limits) = (body.framing, body.send_timeout, body.limits);
    let Spill {
        mut forward,
        mut reader,
        mut read,
    } = spill;
    let mut sent = Sent::new(framing);
    // What the plugins let through so far is written as it is, not
    // copied into `out`: it may be `max_buffered_body` long.
    if !forward.is_empty() {
        sent.admit(forward.len())?;
        let chunked = framing == Framing::Chunked;
        if chunked {
            chunk_header(&mut out, forward.len());
        }
        flush(to, &mut out, send_timeout).await?;
        flush(to, &mut forward, send_timeout).await?;
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    drop(forward);
    let mut first_plugin = 0;
    loop {
        let n = next_piece_for_node(&mut reader, buf, from, to, &mut out, &body, &mut read).await?;
        ex.request_body.extend_from_slice(&buf.data()[..n]);
        buf.consume(n);
        if ex.request_body.len() > limits.max_buffered_body {
            return Err(Stage::Plugin(held_too_much()));
        }
        let end_of_stream = n == 0 || reader.is_done();
        match chain.on_request_body(ex, end_of_stream, first_plugin).await {
            BodyVerdict::Continue => {
                sent.encode(&mut out, &ex.request_body)?;
                ex.request_body.clear();
                first_plugin = 0;
            }
            BodyVerdict::Buffer(i) => first_plugin = i,
            BodyVerdict::Respond(local) => return Err(Stage::Plugin(EarlyEnd::Respond(local))),
            BodyVerdict::Fail(fault) => return Err(Stage::Plugin(EarlyEnd::Fail(fault))),
        }
        if end_of_stream {
            break;
        }
        if out.len() >= WRITE_COALESCE {
            flush(to, &mut out, send_timeout).await?;
        }
    }
    request_trailers_through_plugins(&mut reader, chain, ex)
        .await
        .map_err(Stage::Plugin)?;
    sent.finish(&mut out, ex)?;
    Ok(out)
}

/// What a spilled body has sent, against the framing the node was
/// promised.
struct Sent {
    framing: Framing,
    bytes: u64,
}

impl Sent {
    fn new(framing: Framing) -> Sent {
        Sent { framing, bytes: 0 }
    }

    /// Counts `len` more bytes; an error if they break the promised length.
    fn admit(&mut self, len: usize) -> Result<(), Stage> {
        self.bytes += len as u64;
        match self.framing {
            Framing::Length(n) if self.bytes > n => Err(length_changed()),
            _ => Ok(()),
        }
    }

    /// Appends `piece` to `out` in the promised framing.
    fn encode(&mut self, out: &mut Vec<u8>, piece: &[u8]) -> Result<(), Stage> {
        if !piece.is_empty() {
            self.admit(piece.len())?;
            encode_piece(out, piece, self.framing == Framing::Chunked);
        }
        Ok(())
    }

    /// Ends the body: the last chunk (with the trailers the plugins left)
    /// or a check that the promised length was met.
    fn finish(&self, out: &mut Vec<u8>, ex: &Exchange) -> Result<(), Stage> {
        match self.framing {
            Framing::Chunked => {
                last_chunk_with(out, &valid_trailers(&ex.request_trailers));
                Ok(())
            }
            Framing::Length(n) if self.bytes != n => Err(length_changed()),
            _ => Ok(()),
        }
    }
}

/// A 502: the node was promised a length the plugins did not keep (they
/// must remove `content-length` to change it, as in Envoy).
fn length_changed() -> Stage {
    Stage::Plugin(EarlyEnd::Refuse(
        reply::bad_gateway(),
        "a plugin changed the length of a request body but kept its content-length".to_string(),
    ))
}

/// The framing promised to the node for a spilled body: the client's
/// length while the plugins kept `content-length` and have not changed
/// the length so far, chunked otherwise.
pub(crate) fn spilled_framing(req: &RequestHead, ex: &Exchange, spill: &Spill) -> Framing {
    match req.framing {
        Framing::Length(n)
            if ex.request_headers.contains(b"content-length")
                && spill.forward.len() as u64 == spill.read =>
        {
            Framing::Length(n)
        }
        _ => Framing::Chunked,
    }
}

/// The next piece of a request body, within `client_body_timeout`.
async fn read_body_piece<R: AsyncRead + Unpin>(
    reader: &mut BodyReader,
    buf: &mut ReadBuf,
    from: &mut R,
    limits: &ClientLimits,
) -> io::Result<usize> {
    with_timeout(limits.client_body_timeout, reader.next(buf, from)).await
}

fn over_client_max(read: u64, limits: &ClientLimits) -> bool {
    limits.client_max_body_size > 0 && read > limits.client_max_body_size
}

/// The 413 for a body a plugin holds (`Pause`) past `max_buffered_body`.
fn held_too_much() -> EarlyEnd {
    EarlyEnd::Refuse(
        reply::bad_request(413, "request body too large"),
        "a plugin held more of the request body than max_buffered_body".to_string(),
    )
}

/// Takes the request trailers from `reader` and runs
/// `proxy_on_request_trailers` when there are some.
async fn request_trailers_through_plugins(
    reader: &mut BodyReader,
    chain: &mut Chain<'_>,
    ex: &mut Exchange,
) -> Result<(), EarlyEnd> {
    ex.request_trailers.set_all(reader.take_trailers());
    if chain.hooks.request_trailers && !ex.request_trailers.is_empty() {
        if let Some(end) = EarlyEnd::of(chain.on_request_trailers(ex).await) {
            return Err(end);
        }
    }
    Ok(())
}

/// What the response head needs once body plugins let it go.
pub(crate) struct Relay<'a> {
    pub(crate) status: u16,
    pub(crate) req: &'a RequestHead,
    pub(crate) keep_alive: bool,
    /// `max_buffered_body` of the configuration serving the request.
    pub(crate) limit: usize,
}

/// Streams the upstream body to the client through
/// `proxy_on_response_body`. The head is held until the first piece of
/// body passes every plugin: if the whole body was buffered by then it
/// gets an exact `Content-Length`, otherwise it is chunked (or
/// close-delimited for HTTP/1.0). Until the head is out a plugin can still
/// answer locally and the buffering limit gives a 502; after, a failure
/// closes the connection so the client sees a truncated body. Returns
/// whether the client connection may be reused.
pub(crate) async fn response_body_through_plugins<R: AsyncRead + Unpin, D: Downstream>(
    up_buf: &mut ReadBuf,
    up: &mut R,
    client: &mut D,
    framing: Framing,
    chain: &mut Chain<'_>,
    ex: &mut Exchange,
    relay: Relay<'_>,
) -> io::Result<bool> {
    let Relay {
        status,
        req,
        keep_alive,
        limit,
    } = relay;
    let client_is_11 = req.version == Version::Http11;
    let mut reader = BodyReader::new(framing);
    let mut head_sent = false;
    let mut chunked = false;
    let mut keep = keep_alive;
    let mut from = 0;
    // Envoy's contract: a plugin that changes the body's length removes
    // `content-length` in its headers hook. If it is still there, the head
    // goes out at once with the upstream's length, the body streams, and a
    // plugin that changes the length anyway gets the connection closed
    // rather than a mis-framed response.
    let promised = match framing {
        Framing::Length(n) if ex.response_headers.contains(b"content-length") => Some(n),
        _ => None,
    };
    let mut written: u64 = 0;
    // Bytes for the client, sent before waiting for more from upstream.
    let mut out = Vec::with_capacity(1024);
    if let Some(n) = promised {
        write_response_head(
            &mut out,
            status,
            &ex.response_headers,
            Framing::Length(n),
            req,
            keep,
        );
        head_sent = true;
        chain.response_started();
    }
    let aborted = |why: &str| io::Error::other(why.to_string());
    loop {
        if !out.is_empty() && !reader.has_buffered(up_buf) {
            client.send(&out).await?;
            out.clear();
        }
        let n = reader.next(up_buf, up).await?;
        ex.response_body.extend_from_slice(&up_buf.data()[..n]);
        up_buf.consume(n);
        // A Content-Length body ends with its last piece: say so in the
        // same call instead of one more call with nothing.
        let end_of_stream = n == 0 || reader.is_done();
        if ex.response_body.len() > limit {
            if head_sent {
                return Err(aborted("buffered response body over the limit"));
            }
            let _ = answer(client, req, &reply::bad_gateway(), false).await;
            return Err(aborted("buffered response body over the limit (502 sent)"));
        }
        match chain.on_response_body(ex, end_of_stream, from).await {
            BodyVerdict::Continue => from = 0,
            BodyVerdict::Buffer(i) => {
                from = i;
                continue;
            }
            BodyVerdict::Respond(local) if !head_sent => {
                // It replaces the upstream's response, headers included.
                ex.response_headers = local_response_headers(&local);
                let _ = answer_local(client, req, &local, ex, false).await;
                return Err(aborted(
                    "a plugin answered locally in the response body phase",
                ));
            }
            BodyVerdict::Respond(_) => {
                return Err(aborted(
                    "a plugin answered locally after the response started",
                ))
            }
            BodyVerdict::Fail(fault) => {
                if !head_sent {
                    let _ = answer(client, req, &reply::unavailable(), false).await;
                }
                return Err(aborted(&fault.to_string()));
            }
        }
        if end_of_stream {
            ex.response_trailers.set_all(reader.take_trailers());
            if chain.hooks.response_trailers && !ex.response_trailers.is_empty() {
                if let Verdict::Fail(fault) = chain.on_response_trailers(ex).await {
                    if !head_sent {
                        let _ = answer(client, req, &reply::unavailable(), false).await;
                    }
                    return Err(aborted(&fault.to_string()));
                }
            }
        }
        if !head_sent {
            let trailers = !ex.response_trailers.is_empty() && client_is_11;
            let framing = if end_of_stream && !trailers {
                Framing::Length(ex.response_body.len() as u64)
            } else {
                chunked = client_is_11;
                keep = keep && client_is_11;
                Framing::Chunked
            };
            write_response_head(&mut out, status, &ex.response_headers, framing, req, keep);
            head_sent = true;
            chain.response_started();
        }
        if !ex.response_body.is_empty() {
            written += ex.response_body.len() as u64;
            if promised.is_some_and(|n| written > n) {
                return Err(aborted(
                    "a plugin changed the body length but kept content-length",
                ));
            }
            encode_piece(&mut out, &ex.response_body, chunked);
            client.record().body_bytes_sent += ex.response_body.len() as u64;
            ex.response_body.clear();
        }
        if end_of_stream && chunked {
            let trailers: Vec<_> = ex
                .response_trailers
                .iter()
                .filter(|(k, v)| http::is_valid_field(k, v) && !http::is_framing(k))
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            last_chunk_with(&mut out, &trailers);
        }
        if end_of_stream {
            if !out.is_empty() {
                client.send(&out).await?;
            }
            if promised.is_some_and(|n| written != n) {
                return Err(aborted(
                    "a plugin changed the body length but kept content-length",
                ));
            }
            return Ok(keep);
        }
    }
}

/// Sends a reply tinygate made itself. An unread request body means the
/// connection cannot be reused.
pub(crate) async fn answer<D: Downstream>(
    client: &mut D,
    req: &RequestHead,
    reply: &Reply,
    keep_alive: bool,
) -> bool {
    let keep = keep_alive && req.framing == Framing::Empty;
    let head_only = req.method == "HEAD";
    let mut bytes = reply::encode(reply, head_only, !keep);
    if keep && req.version == Version::Http10 {
        // An HTTP/1.0 connection persists only if the response says so
        // (RFC 9112 §9.3): add the field at the end of the head.
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            bytes.splice(
                end + 2..end + 2,
                b"connection: keep-alive\r\n".iter().copied(),
            );
        }
    }
    client.record().status = reply.status;
    client.record().body_bytes_sent = if head_only {
        0
    } else {
        reply.body.len() as u64
    };
    client.send(&bytes).await.is_ok() && keep
}

/// Answers a request whose head could not be read or parsed, and logs it
/// (method `-`); then lingers (except after a 408: a client too slow to
/// send a head gets no more time) so the caller can close.
async fn refuse(
    worker: &Worker,
    gateway: &Gateway,
    client: &mut Client,
    reply: &Reply,
    limits: &ClientLimits,
) {
    client.record = Record {
        remote: Some(client.peer),
        method: "-".into(),
        version: "-",
        ..Record::default()
    };
    answer_raw(client, reply).await;
    worker.record_request(gateway, &client.record);
    if reply.status != 408 {
        client.linger(limits).await;
    }
}

/// Sends a reply to a request that could not be parsed, then closes.
async fn answer_raw(client: &mut Client, reply: &Reply) {
    client.record.status = reply.status;
    client.record.body_bytes_sent = reply.body.len() as u64;
    let _ = client.send(&reply::encode(reply, false, true)).await;
}

/// Sends a plugin's local response, with any header edits the response
/// hooks made to it.
pub(crate) async fn answer_local<D: Downstream>(
    client: &mut D,
    req: &RequestHead,
    local: &LocalResponse,
    ex: &Exchange,
    keep_alive: bool,
) -> bool {
    let map = if ex.response_headers.is_empty() {
        local_response_headers(local)
    } else {
        ex.response_headers.clone()
    };
    let reply = Reply {
        status: status_of(&map).unwrap_or(local.status),
        headers: map
            .iter()
            .filter(|(k, v)| !k.starts_with(b":") && http::is_valid_field(k, v))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
        body: local.body.clone(),
    };
    answer(client, req, &reply, keep_alive).await
}

/// Starts the access log record of a request, before it is served. The
/// previous request's record is overwritten in place, reusing its memory.
fn start_record(record: &mut Record, peer: SocketAddr, req: &RequestHead) {
    fn set(to: &mut String, from: &[u8]) {
        to.clear();
        to.push_str(&String::from_utf8_lossy(from));
    }
    let header = |name: &[u8]| req.headers.get(name).unwrap_or(b"");
    // Every field, so that a new one cannot be forgotten here.
    let Record {
        remote,
        host,
        method,
        target,
        version,
        status,
        body_bytes_sent,
        started,
        referer,
        user_agent,
        route_id,
        upstream_addr,
        upstream_status,
        upstream_time,
    } = record;
    *remote = Some(peer);
    set(host, req.host.as_deref().unwrap_or("").as_bytes());
    set(method, req.method.as_bytes());
    set(target, req.target.as_bytes());
    *version = match req.version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    };
    *status = 0;
    *body_bytes_sent = 0;
    *started = Some(std::time::Instant::now());
    set(referer, header(b"referer"));
    set(user_agent, header(b"user-agent"));
    route_id.clear();
    *upstream_addr = None;
    *upstream_status = None;
    *upstream_time = None;
}

/// What plugins can read about this stream through properties: `source`
/// is the client, `destination` the listener it reached.
pub(crate) fn stream_info(
    source: SocketAddr,
    destination: Option<SocketAddr>,
    req: &RequestHead,
    route: &Route,
) -> StreamInfo {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let start_time_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    StreamInfo {
        source: Some(source),
        destination,
        request_id: format!("{}-{n:x}", request_id_prefix()),
        route_name: route.id.clone(),
        protocol: match req.version {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        },
        start_time_ns,
        response_code: None,
    }
}

/// The process id in hex, looked up once (it is a system call).
fn request_id_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!("{:x}", std::process::id()))
}

/// The request as plugins see it: pseudo-headers first, then the fields
/// without `Host` and without hop-by-hop fields.
pub(crate) fn request_map(req: &RequestHead) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(req.headers.len() + 4);
    map.add_lowercase(b":method", req.method.as_bytes());
    map.add_lowercase(b":path", req.target.as_bytes());
    map.add_lowercase(b":authority", req.host.as_deref().unwrap_or("").as_bytes());
    map.add_lowercase(b":scheme", b"http");
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

/// The request head for `node`, built from the (plugin-edited) map.
pub(crate) fn request_head(
    req: &RequestHead,
    ex: &Exchange,
    upstream: &Upstream,
    node: &Node,
    peer: SocketAddr,
    framing: Framing,
) -> Vec<u8> {
    let map = &ex.request_headers;
    let method = map.get(b":method").unwrap_or(req.method.as_bytes());
    let path = map.get(b":path").unwrap_or(req.target.as_bytes());
    let authority = map.get(b":authority").unwrap_or(b"");
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    match &upstream.pass_host {
        PassHost::Pass if !authority.is_empty() => out.extend_from_slice(authority),
        PassHost::Pass | PassHost::Node => out.extend_from_slice(node.authority.as_bytes()),
        PassHost::Rewrite(h) => out.extend_from_slice(h.as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let client_ip = peer.ip().to_string();
    let mut forwarded_for: Option<&[u8]> = None;
    for (k, v) in map.iter() {
        match k {
            b"x-forwarded-for" => forwarded_for = Some(v),
            b"expect" | b"host" | b"x-real-ip" | b"x-forwarded-proto" | b"x-forwarded-host" => {}
            // The framing below is the proxy's, whatever the map holds.
            _ if k.starts_with(b":") || http::is_framing(k) => {}
            _ if !http::is_valid_field(k, v) => {
                log::warn!(
                    "dropping invalid request header {:?} set by a plugin",
                    String::from_utf8_lossy(k)
                );
            }
            _ => http::write_header(&mut out, k, v),
        }
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prev) = forwarded_for {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-real-ip: ");
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    if let Some(host) = &req.host {
        http::write_header(&mut out, b"x-forwarded-host", host.as_bytes());
    }
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

/// The response head for the client, built from the (plugin-edited) map,
/// framed for the client's HTTP version.
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
    // 304); every other framing field is the proxy's own, below.
    let keep_length = framing == Framing::Empty;
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

/// HTTP/1.1 keeps alive unless `close`; HTTP/1.0 only with `keep-alive`.
pub(crate) fn wants_keep_alive(req: &RequestHead) -> bool {
    match req.version {
        Version::Http11 => !has_token(req.headers.iter(), b"close"),
        Version::Http10 => has_token(req.headers.iter(), b"keep-alive"),
    }
}

fn has_token<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>, token: &[u8]) -> bool {
    http::connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

/// Methods whose repetition has the same effect (RFC 9110 §9.2.2).
fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

pub(crate) fn expects_continue(req: &RequestHead) -> bool {
    req.version == Version::Http11
        && req
            .headers
            .iter()
            .any(|(k, v)| k == b"expect" && v.eq_ignore_ascii_case(b"100-continue"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_with(result: Result<(), Stage>) -> Option<u16> {
        match result {
            Err(Stage::Plugin(EarlyEnd::Refuse(reply, _))) => Some(reply.status),
            _ => None,
        }
    }

    /// A spilled body promised with a length never sends a byte past it,
    /// and one that falls short fails at the end instead of leaving the
    /// node waiting.
    #[test]
    fn spilled_bodies_keep_the_promised_length() {
        let ex = Exchange::default();
        let mut out = Vec::new();
        let mut sent = Sent::new(Framing::Length(10));
        assert!(sent.encode(&mut out, b"123456").is_ok());
        assert_eq!(refused_with(sent.encode(&mut out, b"78901")), Some(502));
        assert_eq!(out, b"123456", "nothing past the length is written");

        let mut out = Vec::new();
        let mut sent = Sent::new(Framing::Length(10));
        assert!(sent.encode(&mut out, b"1234567890").is_ok());
        assert!(sent.finish(&mut out, &ex).is_ok());
        let mut short = Sent::new(Framing::Length(10));
        assert!(short.encode(&mut Vec::new(), b"123").is_ok());
        assert_eq!(refused_with(short.finish(&mut Vec::new(), &ex)), Some(502));

        let mut out = Vec::new();
        let mut sent = Sent::new(Framing::Chunked);
        assert!(
            sent.encode(&mut out, b"").is_ok(),
            "an empty piece is no chunk"
        );
        assert!(sent.encode(&mut out, b"abc").is_ok());
        assert!(sent.finish(&mut out, &ex).is_ok());
        assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");
    }
}
