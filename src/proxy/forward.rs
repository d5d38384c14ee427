//! Forwarding a request: pick a node through the upstream's balancer, get
//! a connection from the [`Transport`], send the head and body, read the
//! response head. A node that cannot be reached is skipped for the next
//! one, up to `retries`; a pooled connection the node closed while idle
//! is replaced once by a fresh one when the request can be replayed
//! (idempotent, body in memory). Where an exchange failed ([`Stage`])
//! decides what the client is answered.
//!
//! Each node attempt ends in [`report`], the one place that will tell a
//! per-upstream health record how the node did.

use super::answer::EarlyEnd;
use super::body::{unreadable, NodeBody, RequestBody, Source};
use super::connection::Client;
use super::heads::{expects_continue, node_request_head, Destination};
use super::request::Request;
use super::send::{forward_body, forward_spilled_body, ToNode};
use super::transport::Transport;
use super::upgrade;
use crate::config::{Node, Upstream};
use crate::http::reply;
use crate::http::{self, Framing, Head, ReadBuf, ResponseHead};
use crate::net::with_timeout;
use crate::upstream::Conn;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

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

impl Stage {
    /// What failed, in a few words.
    fn name(&self) -> &'static str {
        match self {
            Stage::Stale(_) => "the node closed the connection",
            Stage::Client(_) => "the client's body",
            Stage::RequestBody(_) => "sending the body",
            Stage::Upstream(_) => "waiting for the response",
            Stage::TooLarge => "the body is too large",
            Stage::Plugin(_) => "a plugin ended it",
        }
    }
}

/// A node's answer: the connection it came on, and its head.
pub(super) struct Answered<'u, S> {
    pub(super) conn: Conn<S>,
    pub(super) node: &'u Node,
    pub(super) response: ResponseHead,
}

/// How one attempt at a node went: what passive health checks count.
pub(crate) enum Attempt<'e> {
    /// No connection: refused, unreachable, or `timeout.connect` passed.
    ConnectFailed(&'e io::Error),
    /// The exchange failed after connecting, at this stage (a timeout or
    /// a reset from the node, or the client or a plugin ending it).
    Failed(&'e Stage),
    /// The node answered with this status.
    Answered(u16),
}

/// Sends the request to a node of `upstream` and reads its response head,
/// trying the next node after a connect failure.
///
/// # Errors
/// How the request ends instead: 502 or 504 when no node answered, or
/// what a failed exchange means ([`failure`]).
pub(super) async fn send_request<'u, C, T>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    transport: &T,
    upstream: &'u Upstream,
    body: RequestBody,
) -> Result<Answered<'u, T::Stream>, EarlyEnd>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: Transport,
{
    let attempts = 1 + upstream
        .retries
        .unwrap_or(upstream.nodes.len().saturating_sub(1) as u32) as usize;
    let mut tried: Vec<usize> = Vec::with_capacity(attempts);
    let mut last_error = String::from("no upstream node has a positive weight");
    let mut timed_out = false;
    let mut body = body.for_node(&req.head, &req.ex);
    for _ in 0..attempts {
        let Some(index) = pick_untried(upstream, &tried) else {
            break;
        };
        tried.push(index);
        let to = Destination {
            upstream,
            node: &upstream.nodes[index],
            client: client.peer,
        };
        let (conn, result) = match attempt(req, client, transport, &to, &mut body).await {
            Ok(attempted) => attempted,
            Err(e) => {
                report(upstream, index, &Attempt::ConnectFailed(&e));
                timed_out = e.kind() == io::ErrorKind::TimedOut;
                last_error = format!("connect to {} failed: {e}", to.node.addr);
                log::debug!("upstream {:?}: {last_error}", upstream.id);
                continue;
            }
        };
        return match result {
            Ok(response) => {
                report(upstream, index, &Attempt::Answered(response.status));
                Ok(Answered {
                    conn,
                    node: to.node,
                    response,
                })
            }
            Err(stage) => {
                report(upstream, index, &Attempt::Failed(&stage));
                Err(failure(stage, to.node.addr))
            }
        };
    }
    let reply = if timed_out {
        reply::gateway_timeout()
    } else {
        reply::bad_gateway()
    };
    Err(EarlyEnd::Refuse(reply, last_error))
}

/// One attempt at the node `to` names: on an idle connection or a new
/// one. A pooled connection the node closed while idle gets one more try
/// on a fresh connection, which is safe when the request can be replayed
/// (idempotent, RFC 9110 §9.2.2, with its body empty or in memory).
///
/// # Errors
/// When no connection could be made: the next node is tried.
async fn attempt<C, T>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    transport: &T,
    to: &Destination<'_>,
    body: &mut NodeBody,
) -> io::Result<(Conn<T::Stream>, Result<ResponseHead, Stage>)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: Transport,
{
    let connect = req.route.timeout.connect;
    let mut conn = match transport.take_idle(to.node) {
        Some(conn) => conn,
        None => transport.connect(to.node, connect).await?,
    };
    let mut head = node_request_head(&req.head, &req.ex.request_headers, to, body.framing);
    if let Some(protocol) = upgrade::requested(&req.head, req.route) {
        upgrade::add_upgrade_fields(&mut head, protocol);
    }
    let replayable = body.can_resend(&req.head) && is_idempotent(&req.head.method);
    let result = exchange(req, client, &mut conn, &head, body).await;
    if conn.reused && replayable && matches!(result, Err(Stage::Stale(_))) {
        let mut fresh = transport.connect(to.node, connect).await?;
        let result = exchange(req, client, &mut fresh, &head, body).await;
        return Ok((fresh, result));
    }
    Ok((conn, result))
}

/// Sends `head` and the body to `conn` and reads the response head.
async fn exchange<C, S>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    conn: &mut Conn<S>,
    head: &[u8],
    body: &mut NodeBody,
) -> Result<ResponseHead, Stage>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = req.route.timeout;
    let mut to = ToNode {
        stream: &mut conn.stream,
        out: Vec::with_capacity(head.len()),
        send_timeout: timeout.send,
    };
    to.out.extend_from_slice(head);
    match &mut body.source {
        Source::Spill(spill) => {
            if let Some(spill) = spill.take() {
                forward_spilled_body(req, client, spill, body.framing, &mut to).await?;
            }
        }
        Source::Bytes(bytes) => to.out.extend_from_slice(bytes),
        Source::Client if req.head.framing == Framing::Empty => {}
        Source::Client => {
            if expects_continue(&req.head) {
                let _ = client.send(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            }
            forward_body(client, req.limits, req.head.framing, &mut to).await?;
        }
    }
    if !to.out.is_empty() {
        with_timeout(timeout.send, to.stream.write_all(&to.out))
            .await
            .map_err(Stage::Stale)?;
    }
    let upgrading = upgrade::requested(&req.head, req.route).is_some();
    read_response_head(&mut conn.buf, &mut conn.stream, timeout.read, upgrading).await
}

/// Reads a node's response head from `buf` and `reader`, skipping interim
/// (1xx) responses; a `101` is the answer when the request asked for an
/// upgrade its route allows (`upgrading`), and a failure otherwise.
pub(super) async fn read_response_head<R: AsyncRead + Unpin>(
    buf: &mut ReadBuf,
    reader: &mut R,
    read_timeout: Duration,
    upgrading: bool,
) -> Result<ResponseHead, Stage> {
    loop {
        let head = buf.read_head(reader, http::io::MAX_RESPONSE_HEAD);
        let n = match with_timeout(read_timeout, head).await {
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
            101 if upgrading => return Ok(response),
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

/// What to answer when the exchange with `node` failed at `stage`.
fn failure(stage: Stage, node: SocketAddr) -> EarlyEnd {
    match stage {
        Stage::Stale(e) | Stage::Upstream(e) => EarlyEnd::Refuse(
            if e.kind() == io::ErrorKind::TimedOut {
                reply::gateway_timeout()
            } else {
                reply::bad_gateway()
            },
            format!("upstream {node}: {e}"),
        ),
        Stage::RequestBody(e) => EarlyEnd::Refuse(
            reply::bad_gateway(),
            format!("upstream {node}: while sending the request body: {e}"),
        ),
        Stage::Client(e) => unreadable(e),
        Stage::TooLarge => super::body::too_large(),
        Stage::Plugin(end) => end,
    }
}

/// Tells `upstream`'s health record how an attempt at node `index` went.
/// Nothing keeps one yet (passive health checks will): the outcome is
/// only traced.
fn report(upstream: &Upstream, index: usize, attempt: &Attempt<'_>) {
    let (id, node) = (&upstream.id, upstream.nodes[index].addr);
    match attempt {
        Attempt::ConnectFailed(e) => {
            log::trace!("upstream {id:?}: node {node}: no connection: {e}")
        }
        Attempt::Failed(stage) => {
            log::trace!(
                "upstream {id:?}: node {node}: exchange failed: {}",
                stage.name()
            );
        }
        Attempt::Answered(status) => log::trace!("upstream {id:?}: node {node}: {status}"),
    }
}

/// The next node in the balancer's order that has not been tried yet
/// (healthy first; every node is reached, whatever the weights).
fn pick_untried(upstream: &Upstream, tried: &[usize]) -> Option<usize> {
    upstream.balancer.pick(None, tried).map(|p| p.index)
}

/// Methods whose repetition has the same effect (RFC 9110 §9.2.2).
fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}
