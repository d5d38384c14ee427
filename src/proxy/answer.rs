//! Answers the proxy makes instead of relaying a node's response: a reply
//! tinygate makes itself (`reply::*`), a plugin's local response, and the
//! answer to a request that plugins or the client ended early.
//!
//! Each answer goes to the client with the framing the keep-alive decision
//! allows and fills the access log record; it never reads the rest of a
//! request body (the decision closes the connection instead).

use super::connection::Client;
use super::heads::status_of;
use crate::config::Route;
use crate::http::reply::{self, Reply};
use crate::http::{self, RequestHead, Version};
use crate::plugins::chain::{local_response_headers, Verdict};
use crate::wasm::{Exchange, Fault, LocalResponse};
use smol::io::{AsyncRead, AsyncWrite};

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

/// Answers a request that plugins or the client ended early, keeping the
/// connection only if `keep_alive`.
pub(super) async fn answer_early_end<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<C>,
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
