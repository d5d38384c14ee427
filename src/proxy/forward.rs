//! Forwarding a request: pick a node through the upstream's balancer
//! (its algorithm, `chash` key, priorities and node health), get a
//! connection from the [`Transport`], send the head and body, read the
//! response head.
//!
//! Retries (nginx's `proxy_next_upstream error timeout`, APISIX's
//! `retries` and `retry_timeout`): a node that cannot be reached is skipped
//! for the next untried one. A request that can be replayed (idempotent,
//! RFC 9110 §9.2.2, with its body empty or in memory) also moves on when
//! the node failed before any byte of its answer arrived: closed, reset or
//! timed out; on a pooled connection, which the node may have closed just
//! before it was used, it is first replayed once on a fresh connection to
//! the same node. Retries stop when every node has been tried, `retries`
//! is spent, or `retry_timeout` has passed since the first try. Where an
//! exchange failed ([`Stage`]) decides what the client is answered.
//!
//! Each node attempt ends in [`report`], which tells the node's health
//! record how it did (passive health checks).

use super::answer::EarlyEnd;
use super::body::{unreadable, NodeBody, RequestBody, Source};
use super::connection::Client;
use super::heads::{expects_continue, host_field, node_request_head, Destination};
use super::request::Request;
use super::send::{forward_body, forward_spilled_body, ToNode};
use super::transport::Transport;
use super::upgrade;
use crate::balancer::{request_key, Picked};
use crate::config::{Node, Upstream};
use crate::expr::RequestVars;
use crate::health::Report;
use crate::http::reply;
use crate::http::{self, Framing, Head, HeaderMap, ReadBuf, ResponseHead};
use crate::net::with_timeout;
use crate::tls::{self, Connector};
use crate::upstream::{Conn, Dial, Tls};
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

    /// The node's failure, when the node failed (not the client or a
    /// plugin).
    fn node_error(&self) -> Option<&io::Error> {
        match self {
            Stage::Stale(e) | Stage::Upstream(e) | Stage::RequestBody(e) => Some(e),
            Stage::Client(_) | Stage::TooLarge | Stage::Plugin(_) => None,
        }
    }

    /// True when the node went away (closed, reset, or timed out) rather
    /// than answered something wrong: if no byte of an answer came, the
    /// request may be tried again elsewhere.
    fn node_went_away(&self) -> bool {
        self.node_error().is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::NotConnected
                    | io::ErrorKind::TimedOut
            )
        })
    }
}

/// A node's answer: the connection it came on, and its head.
pub(super) struct Answered<'u, S> {
    pub(super) conn: Conn<S>,
    pub(super) node: &'u Node,
    /// The node as picked: for `least_conn`, the request counts on it
    /// until this is dropped, after the response is relayed.
    pub(super) picked: Picked<'u>,
    /// Where the connection goes back to when it can be reused.
    pub(super) target: Target<'u>,
    pub(super) response: ResponseHead,
}

/// Where connections to one node of an upstream go, for one request: the
/// node, and for an HTTPS upstream its TLS client and the server name
/// (the `Host` the node is sent, without port: APISIX's `$upstream_host`).
/// Owns the name, so the connection can go back to the pool under it once
/// the request's maps have moved on.
pub(super) struct Target<'u> {
    node: &'u Node,
    tls: Option<(&'u Connector, Box<str>)>,
}

impl<'u> Target<'u> {
    /// The target for a request whose (plugin-edited) headers are `map`.
    ///
    /// # Errors
    /// An HTTPS upstream whose TLS client was not made (a bug), or a
    /// `Host` that is not text.
    fn new(to: &Destination<'u>, map: &HeaderMap) -> io::Result<Target<'u>> {
        let Some(settings) = &to.upstream.tls else {
            return Ok(Target {
                node: to.node,
                tls: None,
            });
        };
        let connector = settings
            .connector()
            .ok_or_else(|| io::Error::other("the upstream's TLS client was not prepared"))?;
        let host = std::str::from_utf8(host_field(map, to))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "Host is not text"))?;
        Ok(Target {
            node: to.node,
            tls: Some((connector, tls::host_of(host).into())),
        })
    }

    /// The [`Dial`] the transport is given.
    pub(super) fn dial(&self) -> Dial<'_> {
        Dial {
            addr: self.node.addr,
            tls: self.tls.as_ref().map(|(connector, name)| Tls {
                connector,
                server_name: name,
            }),
        }
    }
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
pub(super) async fn send_request<'u, C>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    transport: &dyn Transport,
    upstream: &'u Upstream,
    body: RequestBody,
) -> Result<Answered<'u, tls::Stream>, EarlyEnd>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let key = upstream
        .hash_key
        .as_ref()
        .map(|hash| request_key(hash, &request_vars(req, client)));
    let mut tries = Tries::new(upstream);
    let mut body = body.for_node(&req.head, &req.ex);
    let replayable = body.can_resend(&req.head) && is_idempotent(&req.head.method);
    while let Some(picked) = tries.next(key.as_deref()) {
        let index = picked.index;
        let to = Destination {
            upstream,
            node: &upstream.nodes[index],
            client: client.peer,
            client_https: client.tls.is_some(),
        };
        let attempted = attempt(req, client, transport, &to, &mut body, replayable).await;
        let (conn, target, result) = match attempted {
            Ok(attempted) => attempted,
            Err(e) => {
                report(upstream, index, &Attempt::ConnectFailed(&e));
                let timed_out = e.kind() == io::ErrorKind::TimedOut;
                tries.failed(
                    format!("connect to {} failed: {e}", to.node.addr),
                    timed_out,
                );
                continue;
            }
        };
        let stage = match result {
            Ok(response) => {
                report(upstream, index, &Attempt::Answered(response.status));
                let node = to.node;
                return Ok(Answered {
                    conn,
                    node,
                    picked,
                    target,
                    response,
                });
            }
            Err(stage) => stage,
        };
        report(upstream, index, &Attempt::Failed(&stage));
        // Nothing of an answer came: another node may give one.
        if !(replayable && stage.node_went_away() && !conn.buf.has_data()) {
            return Err(failure(stage, to.node.addr));
        }
        let timed_out = stage
            .node_error()
            .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut);
        tries.failed(
            format!("upstream {}: {}", to.node.addr, stage.name()),
            timed_out,
        );
    }
    Err(tries.refusal())
}

/// The attempts at an upstream's nodes so far: which were tried, and why
/// the last one failed.
struct Tries<'u> {
    upstream: &'u Upstream,
    /// One, plus `retries` (every other node by default).
    attempts: usize,
    /// `retry_timeout`: no new attempt starts after it.
    deadline: Option<Instant>,
    tried: Vec<usize>,
    last_error: String,
    timed_out: bool,
}

impl<'u> Tries<'u> {
    fn new(upstream: &'u Upstream) -> Tries<'u> {
        let attempts = 1 + upstream
            .retries
            .unwrap_or(upstream.nodes.len().saturating_sub(1) as u32)
            as usize;
        Tries {
            upstream,
            attempts,
            deadline: upstream.retry_timeout.map(|t| Instant::now() + t),
            tried: Vec::with_capacity(attempts),
            last_error: String::from("no upstream node has a positive weight"),
            timed_out: false,
        }
    }

    /// The next node to try, through the balancer (with the request's
    /// hash `key`): none once the attempts are spent, `retry_timeout` has
    /// passed, or no untried node is left.
    fn next(&mut self, key: Option<&[u8]>) -> Option<Picked<'u>> {
        if self.tried.len() >= self.attempts {
            return None;
        }
        if !self.tried.is_empty() && self.deadline.is_some_and(|d| Instant::now() >= d) {
            // APISIX answers 502 when `retry_timeout` has passed.
            let tries = self.tried.len();
            self.last_error = format!(
                "retry_timeout passed after {tries} tries; {}",
                self.last_error
            );
            self.timed_out = false;
            return None;
        }
        let picked = self.upstream.balancer.pick(key, &self.tried)?;
        self.tried.push(picked.index);
        Some(picked)
    }

    /// The attempt just made failed, as `why` says.
    fn failed(&mut self, why: String, timed_out: bool) {
        log::debug!(
            "upstream {:?}: {why}; trying the next node",
            self.upstream.id
        );
        self.last_error = why;
        self.timed_out = timed_out;
    }

    /// The answer when no node answered: 504 if the last one timed out,
    /// 502 otherwise.
    fn refusal(self) -> EarlyEnd {
        let reply = if self.timed_out {
            reply::gateway_timeout()
        } else {
            reply::bad_gateway()
        };
        EarlyEnd::Refuse(reply, self.last_error)
    }
}

/// The request's variables (a `chash` key's source): the head as the
/// client sent it, with the header fields as the plugins left them.
fn request_vars<'r, C>(req: &'r Request<'_>, client: &Client<C>) -> RequestVars<'r> {
    let path = req.head.target.split('?').next().unwrap_or("/");
    RequestVars {
        headers: &req.ex.request_headers,
        ..RequestVars::of(&req.head, path, client.peer, client.local, client.scheme())
    }
}

/// One attempt at the node `to` names: on an idle connection or a new
/// one. A pooled connection the node closed or reset (before any byte of
/// an answer) gets one more try on a fresh connection when the request
/// can be `replayable`: the node may have closed it just before it was
/// used, which says nothing about the node.
///
/// # Errors
/// When no connection could be made: the next node is tried.
async fn attempt<'u, C>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    transport: &dyn Transport,
    to: &Destination<'u>,
    body: &mut NodeBody,
    replayable: bool,
) -> io::Result<(Conn<tls::Stream>, Target<'u>, Result<ResponseHead, Stage>)>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let connect = req.route.timeout.connect;
    let target = Target::new(to, &req.ex.request_headers)?;
    let dial = target.dial();
    let mut conn = match transport.take_idle(&dial) {
        Some(conn) => conn,
        None => transport.connect(&dial, connect).await?,
    };
    let mut head = node_request_head(&req.head, &req.ex.request_headers, to, body.framing);
    if let Some(protocol) = upgrade::requested(&req.head, req.route) {
        upgrade::add_upgrade_fields(&mut head, protocol);
    }
    let result = exchange(req, client, &mut conn, &head, body).await;
    let stale = match &result {
        Err(stage) => {
            let timed_out = stage
                .node_error()
                .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut);
            stage.node_went_away() && !timed_out && !conn.buf.has_data()
        }
        Ok(_) => false,
    };
    if conn.reused && replayable && stale {
        let mut fresh = transport.connect(&dial, connect).await?;
        let result = exchange(req, client, &mut fresh, &head, body).await;
        return Ok((fresh, target, result));
    }
    Ok((conn, target, result))
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

/// Tells node `index` of `upstream`'s health record how an attempt went
/// (passive health checks, counted when the upstream has `checks`): no
/// connection or a failed exchange is a TCP failure or a timeout, an
/// answer that is not HTTP an HTTP failure, an answer's status what
/// `checks.passive` says it is. A client or a plugin ending the exchange
/// says nothing about the node.
fn report(upstream: &Upstream, index: usize, attempt: &Attempt<'_>) {
    let (id, node) = (&upstream.id, upstream.nodes[index].addr);
    match attempt {
        Attempt::ConnectFailed(e) => {
            log::trace!("upstream {id:?}: node {node}: no connection: {e}");
            upstream.report_failure(index, failure_kind(e));
        }
        Attempt::Failed(stage) => {
            log::trace!(
                "upstream {id:?}: node {node}: exchange failed: {}",
                stage.name()
            );
            if let Some(e) = stage.node_error() {
                upstream.report_failure(index, failure_kind(e));
            }
        }
        Attempt::Answered(status) => {
            log::trace!("upstream {id:?}: node {node}: {status}");
            upstream.report_response(index, *status);
        }
    }
}

/// How a node's I/O error counts for its health.
pub(super) fn failure_kind(e: &io::Error) -> Report {
    match e.kind() {
        io::ErrorKind::TimedOut => Report::Timeout,
        io::ErrorKind::InvalidData | io::ErrorKind::Unsupported => Report::HttpFailure,
        _ => Report::TcpFailure,
    }
}

/// Methods whose repetition has the same effect (RFC 9110 §9.2.2).
fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}
