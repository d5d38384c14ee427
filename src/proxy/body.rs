//! The request body, in the one type the request path passes on:
//! [`RequestBody`] is `Unread` (it streams from the client to the node as
//! it comes), `Whole` (read through the plugins, sent with its exact
//! length) or `Spilled` (read through the plugins past what may be held:
//! what passed goes to the node, the rest streams through the plugins).
//!
//! This module reads a body through `proxy_on_request_body` and
//! `proxy_on_request_trailers`, and says how the body is framed for the
//! node; `send.rs` writes it there.

use super::answer::EarlyEnd;
use super::connection::Client;
use super::request::Request;
use crate::config::ClientLimits;
use crate::http::io::{chunk_header, last_chunk_with};
use crate::http::reply;
use crate::http::{self, BodyReader, Framing, HeaderMap, ReadBuf, RequestHead};
use crate::net::with_timeout;
use crate::plugins::chain::BodyVerdict;
use crate::wasm::Exchange;
use smol::io::{AsyncRead, AsyncWrite};
use std::io;

/// The request body when a node is picked.
pub(crate) enum RequestBody {
    /// Empty, or not read yet: it streams from the client as it comes.
    Unread,
    /// Read whole through the plugins.
    Whole(Vec<u8>),
    /// Partly read through the plugins; the rest streams through them.
    Spilled(Spill),
}

/// Where reading a body through the plugins stopped when it spilled.
pub(crate) struct Spill {
    /// What the plugins let through, not yet sent.
    pub(super) forward: Vec<u8>,
    pub(super) reader: BodyReader,
    /// Body bytes read from the client so far.
    pub(super) read: u64,
}

/// The request body as it goes to a node.
pub(super) struct NodeBody {
    /// The framing the node is promised.
    pub(super) framing: Framing,
    pub(super) source: Source,
}

/// Where the bytes of a [`NodeBody`] come from.
pub(super) enum Source {
    /// The client's connection, as they come (nothing when the framing is
    /// empty).
    Client,
    /// Ready in memory, encoded for the framing; can be sent again.
    Bytes(Vec<u8>),
    /// The rest of a spilled body, through the plugins: it goes to one
    /// node only, and is taken by the first exchange.
    Spill(Option<Spill>),
}

impl RequestBody {
    /// How this body goes to a node: a whole body gets its exact length,
    /// or chunked framing if plugins left trailers; a spilled one keeps
    /// the client's length while it can ([`spilled_framing`]); an unread
    /// one keeps the client's framing.
    pub(super) fn for_node(self, req: &RequestHead, ex: &Exchange) -> NodeBody {
        match self {
            RequestBody::Unread => NodeBody {
                framing: req.framing,
                source: Source::Client,
            },
            RequestBody::Whole(body) => {
                let trailers = valid_trailers(&ex.request_trailers);
                if trailers.is_empty() {
                    return NodeBody {
                        framing: Framing::Length(body.len() as u64),
                        source: Source::Bytes(body),
                    };
                }
                let mut out = Vec::with_capacity(body.len() + 64);
                if !body.is_empty() {
                    chunk_header(&mut out, body.len());
                    out.extend_from_slice(&body);
                    out.extend_from_slice(b"\r\n");
                }
                last_chunk_with(&mut out, &trailers);
                NodeBody {
                    framing: Framing::Chunked,
                    source: Source::Bytes(out),
                }
            }
            RequestBody::Spilled(spill) => NodeBody {
                framing: spilled_framing(req, ex, &spill),
                source: Source::Spill(Some(spill)),
            },
        }
    }
}

impl NodeBody {
    /// True when the body can be sent again on another connection: it is
    /// empty or in memory.
    pub(super) fn can_resend(&self, req: &RequestHead) -> bool {
        match self.source {
            Source::Client => req.framing == Framing::Empty,
            Source::Bytes(_) => true,
            Source::Spill(_) => false,
        }
    }
}

/// The framing promised to the node for a spilled body: the client's
/// length while the plugins kept `content-length` and have not changed
/// the length so far, chunked otherwise.
fn spilled_framing(req: &RequestHead, ex: &Exchange, spill: &Spill) -> Framing {
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

/// Reads the request body through the plugins when one of them has a
/// body or trailer hook (answering `100 Continue` first if the client
/// waits for it); otherwise leaves it [`RequestBody::Unread`].
///
/// # Errors
/// How the request ends instead: a plugin answered or failed, or the body
/// was unreadable or too large.
pub(super) async fn read_through_plugins<C: AsyncRead + AsyncWrite + Unpin>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
) -> Result<RequestBody, EarlyEnd> {
    let hooks = req.chain.hooks;
    if !(hooks.request_body || hooks.request_trailers) || req.head.framing == Framing::Empty {
        return Ok(RequestBody::Unread);
    }
    if super::heads::expects_continue(&req.head) {
        let _ = client.send(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    // Without a node to stream to, a body past the bound is refused.
    let spill = req.route.upstream.is_some();
    request_body_through_plugins(req, client, spill).await
}

/// Reads the request body, running `proxy_on_request_body` on each piece
/// as it arrives (a plugin that returns `Pause` gets the cumulative body
/// on the next call, Envoy-style); returns the body to forward, which the
/// plugins may have rewritten.
///
/// What a plugin holds (`Pause`) is bounded by `max_buffered_body` (413
/// past it). What the plugins let through is held too, so that the node
/// sees nothing before they have seen the whole body, up to the same
/// bound: past it the body spills when `spill` (the rest streams to the
/// node), and is refused with 413 otherwise.
async fn request_body_through_plugins<C: AsyncRead + AsyncWrite + Unpin>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    spill: bool,
) -> Result<RequestBody, EarlyEnd> {
    let limits = req.limits;
    let mut reader = BodyReader::new(req.head.framing);
    let mut forward = Vec::new();
    let mut from = 0;
    let mut read: u64 = 0;
    loop {
        let n = read_body_piece(&mut reader, &mut client.buf, &mut client.stream, limits)
            .await
            .map_err(unreadable)?;
        read += n as u64;
        let ex = &mut req.ex;
        ex.request_body.extend_from_slice(&client.buf.data()[..n]);
        client.buf.consume(n);
        if over_client_max(read, limits) {
            return Err(too_large());
        }
        let held = ex.request_body.len() + if spill { 0 } else { forward.len() };
        if held > limits.max_buffered_body {
            return Err(held_too_much());
        }
        // A Content-Length body ends with its last piece: say so in the
        // same call, so that the piece and the end are decided together.
        let end_of_stream = n == 0 || reader.is_done();
        match req.chain.on_request_body(ex, end_of_stream, from).await {
            BodyVerdict::Continue => {
                forward.append(&mut ex.request_body);
                from = 0;
                if spill && !end_of_stream && forward.len() >= limits.max_buffered_body {
                    let spill = Spill {
                        forward,
                        reader,
                        read,
                    };
                    return Ok(RequestBody::Spilled(spill));
                }
            }
            BodyVerdict::Buffer(i) => from = i,
            BodyVerdict::Respond(local) => return Err(EarlyEnd::Respond(local)),
            BodyVerdict::Fail(fault) => return Err(EarlyEnd::Fail(fault)),
        }
        if end_of_stream {
            trailers_through_plugins(&mut reader, req).await?;
            return Ok(RequestBody::Whole(forward));
        }
    }
}

/// Takes the request trailers from `reader` and runs
/// `proxy_on_request_trailers` when there are some.
pub(super) async fn trailers_through_plugins(
    reader: &mut BodyReader,
    req: &mut Request<'_>,
) -> Result<(), EarlyEnd> {
    req.ex.request_trailers.set_all(reader.take_trailers());
    if req.chain.hooks.request_trailers && !req.ex.request_trailers.is_empty() {
        if let Some(end) = EarlyEnd::of(req.chain.on_request_trailers(&mut req.ex).await) {
            return Err(end);
        }
    }
    Ok(())
}

/// The next piece of a request body, within `client_body_timeout`.
pub(super) async fn read_body_piece<R: AsyncRead + Unpin>(
    reader: &mut BodyReader,
    buf: &mut ReadBuf,
    from: &mut R,
    limits: &ClientLimits,
) -> io::Result<usize> {
    with_timeout(limits.client_body_timeout, reader.next(buf, from)).await
}

/// True when `read` bytes of body are past `client_max_body_size`.
pub(super) fn over_client_max(read: u64, limits: &ClientLimits) -> bool {
    limits.client_max_body_size > 0 && read > limits.client_max_body_size
}

/// The trailers the plugins left that may be sent (no framing field:
/// RFC 9110 §6.5.1).
pub(super) fn valid_trailers(map: &HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    map.iter()
        .filter(|(k, v)| http::is_valid_field(k, v) && !http::is_framing(k))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// What to answer when the client's body could not be read: 408 when it
/// stalled, 400 when its framing was broken.
pub(super) fn unreadable(e: io::Error) -> EarlyEnd {
    if e.kind() == io::ErrorKind::TimedOut {
        EarlyEnd::Refuse(
            reply::bad_request(408, "request body not received in time"),
            "client request body timed out".to_string(),
        )
    } else {
        EarlyEnd::Refuse(
            reply::bad_request(400, "invalid request body"),
            format!("client request body: {e}"),
        )
    }
}

/// The 413 for a body past `client_max_body_size`.
pub(super) fn too_large() -> EarlyEnd {
    EarlyEnd::Refuse(
        reply::bad_request(413, "request body too large"),
        "request body larger than client_max_body_size".to_string(),
    )
}

/// The 413 for a body a plugin holds (`Pause`) past `max_buffered_body`.
pub(super) fn held_too_much() -> EarlyEnd {
    EarlyEnd::Refuse(
        reply::bad_request(413, "request body too large"),
        "a plugin held more of the request body than max_buffered_body".to_string(),
    )
}
