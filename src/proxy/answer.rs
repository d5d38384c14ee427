//! Answers the proxy makes instead of relaying a node's response: a reply
//! tinygate makes itself (`reply::*`), a plugin's local response, and the
//! answer to a request that plugins or the client ended early.
//!
//! A reply tinygate makes on a request whose plugins saw it (a 502 or 504
//! from its node, a 503 with nowhere to send it, a 4xx refusal of its
//! body, the 404 of a request no route matched) goes through the
//! plugins' response hooks first, global rules' plugins before the
//! route's, as a node's response does: APISIX runs `header_filter` and
//! `body_filter` on an error nginx makes (its `error-page` plugin rewrites
//! exactly those), and Envoy encodes a router's local reply (`no healthy
//! upstream`, `upstream request timeout`) through the filter chain. Two
//! replies never run them: a plugin's failure (503: the chain is what
//! failed, and the plugin must not run again on its own failure's reply)
//! and the replies to requests no plugin saw (a head that could not be
//! parsed, a body over `client_max_body_size` by its `Content-Length`,
//! which nginx refuses before APISIX's phases run).
//!
//! Each answer goes to the client with the framing the keep-alive decision
//! allows and fills the access log record; it never reads the rest of a
//! request body (the decision closes the connection instead).

use super::connection::Client;
use super::heads::status_of;
use super::keep_alive::Ending;
use super::request::Request;
use super::transport::Transport;
use crate::config::Route;
use crate::http::reply::{self, Reply};
use crate::http::{self, HeaderMap, RequestHead, Version};
use crate::plugins::chain::{local_response_headers, BodyVerdict, Verdict};
use crate::wasm::{Exchange, Fault, LocalResponse};
use smol::io::{AsyncRead, AsyncWrite};

/// How a request ended before the node's answer could be relayed.
pub(crate) enum EarlyEnd {
    /// A plugin answered locally.
    Respond(LocalResponse),
    /// The body could not be read, or was refused, or no node answered:
    /// answer this (through the plugins' response hooks).
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

/// Answers a request that plugins or the client ended before the node's
/// answer was relayed: a refusal through the plugins' response hooks
/// ([`answer_through_plugins`]), a plugin's answer or failure as it is.
/// The rest of a request body is never read then, so the connection stays
/// open only for a request without one.
pub(super) async fn answer_early_end<C>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    transport: &dyn Transport,
    end: EarlyEnd,
) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    transport.ended_early(&end);
    match end {
        EarlyEnd::Refuse(reply, why) => {
            let (route, head) = (&req.route.id, &req.head);
            log::warn!("route {route:?}: {} {}: {why}", head.method, head.target);
            answer_through_plugins(req, client, transport, reply).await
        }
        end => answer_plugins_end(req, client, &end).await,
    }
}

/// Sends `reply`, made by tinygate for a request the route's plugins saw,
/// after their response hooks: `proxy_on_response_headers` on its head
/// ([`reply_map`]), then, if a plugin has a body
/// hook, `proxy_on_response_body` once on the whole body with
/// `end_of_stream` (none for a HEAD or an empty body). A plugin may edit
/// both, answer locally instead, or fail (503, without the hooks). The
/// body goes out with its exact length, whatever the plugins did to it.
pub(super) async fn answer_through_plugins<C>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    transport: &dyn Transport,
    reply: Reply,
) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let head_only = req.head.method == "HEAD";
    req.ex.response_headers = reply_map(&reply);
    req.ex.info.response_code = Some(reply.status);
    let end_of_stream = head_only || reply.body.is_empty();
    let verdict = req
        .chain
        .on_response_headers(&mut req.ex, end_of_stream)
        .await;
    if let Some(end) = EarlyEnd::of(verdict) {
        transport.ended_early(&end);
        return answer_plugins_end(req, client, &end).await;
    }
    let keep = req.keep.after(Ending::Reply);
    let Some(status) = status_of(&req.ex.response_headers) else {
        log::warn!("route {:?}: a plugin set an invalid :status", req.route.id);
        return answer(client, &req.head, &reply::unavailable(), keep).await;
    };
    req.ex.info.response_code = Some(status);
    let body = if end_of_stream || !req.chain.hooks.response_body {
        reply.body
    } else {
        match body_through_plugins(req, reply.body).await {
            Ok(body) => body,
            Err(end) => {
                transport.ended_early(&end);
                return answer_plugins_end(req, client, &end).await;
            }
        }
    };
    let edited = reply_of(&req.ex.response_headers, status, body);
    answer(client, &req.head, &edited, keep).await
}

/// Runs `proxy_on_response_body` on a reply's whole `body` at once, as
/// the relay does on a node's last piece; returns the body the plugins
/// left.
///
/// # Errors
/// A plugin answered locally (its answer replaces the reply, headers
/// included) or failed.
async fn body_through_plugins(req: &mut Request<'_>, body: Vec<u8>) -> Result<Vec<u8>, EarlyEnd> {
    req.ex.response_body = body;
    match req.chain.on_response_body(&mut req.ex, true, 0).await {
        // With `end_of_stream` a plugin cannot buffer: its `Pause` waits
        // in the chain for what resumes the stream.
        BodyVerdict::Continue | BodyVerdict::Buffer(_) => {
            Ok(std::mem::take(&mut req.ex.response_body))
        }
        BodyVerdict::Respond(local) => {
            req.ex.response_headers = local_response_headers(&local);
            Err(EarlyEnd::Respond(local))
        }
        BodyVerdict::Fail(fault) => Err(EarlyEnd::Fail(fault)),
    }
}

/// Answers a plugin's local response or failure (a refusal as it is),
/// without running the response hooks again.
async fn answer_plugins_end<C>(req: &Request<'_>, client: &mut Client<C>, end: &EarlyEnd) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let keep = req.keep.after(Ending::Reply);
    match end {
        EarlyEnd::Respond(local) => answer_local(client, &req.head, local, &req.ex, keep).await,
        EarlyEnd::Refuse(reply, _) => answer(client, &req.head, reply, keep).await,
        EarlyEnd::Fail(fault) => answer_failure(client, &req.head, req.route, fault, keep).await,
    }
}

/// Answers 503 for a plugin's `fault` on `route`, with its log line.
pub(super) async fn answer_failure<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<C>,
    req: &RequestHead,
    route: &Route,
    fault: &Fault,
    keep_alive: bool,
) -> bool {
    log::warn!("route {:?}: {fault}", route.id);
    answer(client, req, &reply::unavailable(), keep_alive).await
}

/// Sends a reply tinygate made itself; returns whether the connection
/// stays open (`keep_alive`, and the reply went out).
pub(super) async fn answer<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<C>,
    req: &RequestHead,
    reply: &Reply,
    keep_alive: bool,
) -> bool {
    let head_only = req.method == "HEAD";
    let mut bytes = reply::encode(reply, head_only, !keep_alive);
    if keep_alive && req.version == Version::Http10 {
        // An HTTP/1.0 connection persists only if the response says so
        // (RFC 9112 §9.3): add the field at the end of the head.
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            bytes.splice(
                end + 2..end + 2,
                b"connection: keep-alive\r\n".iter().copied(),
            );
        }
    }
    client.record.status = reply.status;
    client.record.body_bytes_sent = if head_only {
        0
    } else {
        reply.body.len() as u64
    };
    client.send(&bytes).await.is_ok() && keep_alive
}

/// Sends a plugin's local response, with any header edits the response
/// hooks made to it.
pub(super) async fn answer_local<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<C>,
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
    let reply = reply_of(&map, local.status, local.body.clone());
    answer(client, req, &reply, keep_alive).await
}

/// Sends a reply to a request whose head could not be read or parsed;
/// the connection closes after it.
pub(super) async fn answer_raw<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<C>,
    reply: &Reply,
) {
    client.record.status = reply.status;
    client.record.body_bytes_sent = reply.body.len() as u64;
    let _ = client.send(&reply::encode(reply, false, true)).await;
}

/// The response map plugins see for a reply tinygate made: its status,
/// `server`, its fields, and its length, as a node's response would
/// have them.
fn reply_map(reply: &Reply) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(reply.headers.len() + 3);
    map.add(b":status", reply.status.to_string().as_bytes());
    map.add(b"server", reply::SERVER.as_bytes());
    for (k, v) in &reply.headers {
        map.add(k, v);
    }
    map.add(b"content-length", reply.body.len().to_string().as_bytes());
    map
}

/// The reply made of a response `map` the plugins left (its `:status`, or
/// `status` if that is not valid; its valid fields) and `body`. The
/// framing fields are dropped when it is encoded: the body's length is
/// the proxy's.
fn reply_of(map: &HeaderMap, status: u16, body: Vec<u8>) -> Reply {
    Reply {
        status: status_of(map).unwrap_or(status),
        headers: map
            .iter()
            .filter(|(k, v)| !k.starts_with(b":") && http::is_valid_field(k, v))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
        body,
    }
}
