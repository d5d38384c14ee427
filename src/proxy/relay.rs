//! Relaying a node's response body to the client: streamed as it comes
//! when no plugin has a response body or trailer hook, through
//! `proxy_on_response_body` otherwise. Either way the body is re-framed
//! for the client (re-chunked for HTTP/1.1, close-delimited for HTTP/1.0
//! when it has no length), gathered into few writes, and flushed whenever
//! the node has nothing more buffered.
//!
//! Every read from the node is bounded by the route's `timeout.read`
//! (nginx's `proxy_read_timeout`, between two reads), so a node that
//! stalls mid-body cannot hold the client. Once the head has gone out, a
//! failure can only close the connection (the client sees a truncated
//! body, never one that looks complete): these functions return an error
//! then, and the caller drops both connections. While plugins still hold
//! the head, a node that fails gets the client a `504` (timed out) or a
//! `502`.

use super::answer::{answer, answer_local};
use super::body::valid_trailers;
use super::connection::Client;
use super::heads::write_response_head;
use super::keep_alive::Ending;
use super::request::Request;
use super::send::{encode_piece, WRITE_COALESCE};
use crate::http::io::last_chunk_with;
use crate::http::reply;
use crate::http::{BodyReader, Framing, ReadBuf, Version};
use crate::net::with_timeout;
use crate::ops::access_log::Record;
use crate::plugins::chain::{local_response_headers, BodyVerdict, Verdict};
use crate::upstream::Conn;
use crate::wasm::LocalResponse;
use smol::io::{AsyncRead, AsyncWrite};
use std::io;
use std::time::Duration;

/// Relays the response body (in `framing`, from `node`) with `status` and
/// the plugin-edited head; returns whether the client connection may be
/// reused.
///
/// # Errors
/// The relay was cut short: by the node, the client, or a plugin (the
/// client got a reply if the head had not gone out).
pub(super) async fn relay_response<C, S>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    node: &mut Conn<S>,
    framing: Framing,
    status: u16,
) -> io::Result<bool>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + Unpin,
{
    let hooks = req.chain.hooks;
    if (hooks.response_body || hooks.response_trailers) && framing != Framing::Empty {
        return relay_through_plugins(req, client, node, framing, status).await;
    }
    let client_is_11 = req.head.version == Version::Http11;
    let rechunk = matches!(framing, Framing::Chunked | Framing::Close) && client_is_11;
    let to_client = match framing {
        Framing::Chunked | Framing::Close if rechunk => Framing::Chunked,
        Framing::Chunked => Framing::Close,
        other => other,
    };
    let keep = req.keep.after(Ending::Relayed {
        upstream: framing,
        to_client,
    });
    let mut out = Vec::with_capacity(1024);
    write_response_head(
        &mut out,
        status,
        &req.ex.response_headers,
        framing,
        &req.head,
        keep,
    );
    let read_timeout = req.route.timeout.read;
    stream_body(node, client, framing, out, rechunk, read_timeout).await?;
    Ok(keep)
}

/// A read from the node failed: it closed or reset the connection early,
/// or `timeout.read` passed. (Carried inside the `io::Error` so the caller
/// can tell the node's failures from the client's.)
#[derive(Debug)]
struct NodeFailed(io::Error);

impl std::fmt::Display for NodeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reading from the node: {}", self.0)
    }
}

impl std::error::Error for NodeFailed {}

/// The node's own error, when a relay was cut short by the node.
pub(super) fn node_failure(e: &io::Error) -> Option<&io::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<NodeFailed>())
        .map(|failed| &failed.0)
}

/// The next piece of the node's body, within `timeout`.
async fn next_piece<S: AsyncRead + Unpin>(
    reader: &mut BodyReader,
    buf: &mut ReadBuf,
    stream: &mut S,
    timeout: Duration,
) -> io::Result<usize> {
    with_timeout(timeout, reader.next(buf, stream))
        .await
        .map_err(|e| io::Error::new(e.kind(), NodeFailed(e)))
}

/// Streams the node's body to the client, re-chunked when `rechunk`,
/// after the already-encoded head in `out`.
async fn stream_body<C, S>(
    node: &mut Conn<S>,
    client: &mut Client<C>,
    framing: Framing,
    mut out: Vec<u8>,
    rechunk: bool,
    read_timeout: Duration,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + Unpin,
{
    let mut body = BodyReader::new(framing);
    loop {
        if !out.is_empty() && !body.has_buffered(&node.buf) {
            client.send(&out).await?;
            out.clear();
        }
        let n = next_piece(&mut body, &mut node.buf, &mut node.stream, read_timeout).await?;
        if n == 0 {
            break;
        }
        encode_piece(&mut out, &node.buf.data()[..n], rechunk);
        node.buf.consume(n);
        client.record.body_bytes_sent += n as u64;
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

/// A response body on its way through the plugins to the client.
struct PluginRelay {
    status: u16,
    /// The framing the node sent the body in.
    upstream: Framing,
    /// The length the client was promised, when the head went out at once.
    promised: Option<u64>,
    head_sent: bool,
    /// The client gets chunks (decided with the head).
    chunked: bool,
    keep: bool,
    /// Body bytes given to the client so far.
    written: u64,
    /// Bytes for the client, sent before waiting for more from the node.
    out: Vec<u8>,
}

/// Streams the node's body to the client through `proxy_on_response_body`.
/// The head is held until the first piece of body passes every plugin: if
/// the whole body was buffered by then it gets an exact `Content-Length`,
/// otherwise it is chunked (or close-delimited for HTTP/1.0). Until the
/// head is out a plugin can still answer locally and the buffering limit
/// gives a 502; after, a failure closes the connection.
///
/// Envoy's contract: a plugin that changes the body's length removes
/// `content-length` in its headers hook. If it is still there, the head
/// goes out at once with the node's length, the body streams, and a
/// plugin that changes the length anyway gets the connection closed
/// rather than a mis-framed response.
async fn relay_through_plugins<C, S>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    node: &mut Conn<S>,
    framing: Framing,
    status: u16,
) -> io::Result<bool>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + Unpin,
{
    let mut relay = PluginRelay::start(req, framing, status);
    let mut reader = BodyReader::new(framing);
    let mut from = 0;
    loop {
        let end_of_stream = relay.next_piece(req, client, node, &mut reader).await?;
        match req
            .chain
            .on_response_body(&mut req.ex, end_of_stream, from)
            .await
        {
            BodyVerdict::Continue => from = 0,
            BodyVerdict::Buffer(i) => {
                from = i;
                continue;
            }
            BodyVerdict::Respond(local) => return Err(relay.answered(req, client, local).await),
            BodyVerdict::Fail(fault) => {
                return Err(relay.fail(req, client, &fault.to_string()).await)
            }
        }
        if end_of_stream {
            relay
                .trailers_through_plugins(req, client, &mut reader)
                .await?;
        }
        relay.pass_piece(req, &mut client.record, end_of_stream)?;
        if end_of_stream {
            return relay.finish(req, client).await;
        }
    }
}

impl PluginRelay {
    /// A relay of a body in `framing` with `status`; the head goes out at
    /// once when the plugins kept the node's `content-length`.
    fn start(req: &mut Request<'_>, framing: Framing, status: u16) -> PluginRelay {
        let promised = match framing {
            Framing::Length(n) if req.ex.response_headers.contains(b"content-length") => Some(n),
            _ => None,
        };
        let mut relay = PluginRelay {
            status,
            upstream: framing,
            promised,
            head_sent: false,
            chunked: false,
            keep: false,
            written: 0,
            out: Vec::with_capacity(1024),
        };
        if let Some(n) = promised {
            relay.send_head(req, Framing::Length(n));
        }
        relay
    }

    /// Sends what is gathered when the node has nothing more buffered,
    /// then reads the next piece of body into `ex.response_body`; returns
    /// whether the body ended with it.
    ///
    /// # Errors
    /// The node failed or was too slow, or the plugins held more than
    /// `max_buffered_body` (the client got a reply if the head was held).
    async fn next_piece<C, S>(
        &mut self,
        req: &mut Request<'_>,
        client: &mut Client<C>,
        node: &mut Conn<S>,
        reader: &mut BodyReader,
    ) -> io::Result<bool>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + Unpin,
    {
        if !self.out.is_empty() && !reader.has_buffered(&node.buf) {
            client.send(&self.out).await?;
            self.out.clear();
        }
        let timeout = req.route.timeout.read;
        let n = match next_piece(reader, &mut node.buf, &mut node.stream, timeout).await {
            Ok(n) => n,
            Err(e) => return Err(self.node_failed(req, client, e).await),
        };
        req.ex
            .response_body
            .extend_from_slice(&node.buf.data()[..n]);
        node.buf.consume(n);
        if req.ex.response_body.len() > req.limits.max_buffered_body {
            let why = "buffered response body over the limit";
            return Err(self.refuse(req, client, why).await);
        }
        // A Content-Length body ends with its last piece: say so in the
        // same call instead of one more call with nothing.
        Ok(n == 0 || reader.is_done())
    }

    /// Writes the head for the client, with the body in `to_client`.
    fn send_head(&mut self, req: &mut Request<'_>, to_client: Framing) {
        self.chunked = to_client == Framing::Chunked && req.head.version == Version::Http11;
        self.keep = req.keep.after(Ending::Relayed {
            upstream: self.upstream,
            to_client,
        });
        let map = &req.ex.response_headers;
        write_response_head(
            &mut self.out,
            self.status,
            map,
            to_client,
            &req.head,
            self.keep,
        );
        self.head_sent = true;
        req.chain.response_started();
    }

    /// Passes what the plugins let through to `out`, writing the head
    /// first if it is still held: an exact length when the whole body is
    /// in, chunked otherwise.
    fn pass_piece(
        &mut self,
        req: &mut Request<'_>,
        record: &mut Record,
        end_of_stream: bool,
    ) -> io::Result<()> {
        if !self.head_sent {
            let trailers =
                !req.ex.response_trailers.is_empty() && req.head.version == Version::Http11;
            let to_client = if end_of_stream && !trailers {
                Framing::Length(req.ex.response_body.len() as u64)
            } else {
                Framing::Chunked
            };
            self.send_head(req, to_client);
        }
        let body = &mut req.ex.response_body;
        if body.is_empty() {
            return Ok(());
        }
        self.written += body.len() as u64;
        if self.promised.is_some_and(|n| self.written > n) {
            return Err(aborted(
                "a plugin changed the body length but kept content-length",
            ));
        }
        encode_piece(&mut self.out, body, self.chunked);
        record.body_bytes_sent += body.len() as u64;
        body.clear();
        Ok(())
    }

    /// Ends the body: the last chunk with the plugins' trailers, the last
    /// write, and a check that a promised length was kept.
    async fn finish<C: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        req: &mut Request<'_>,
        client: &mut Client<C>,
    ) -> io::Result<bool> {
        if self.chunked {
            let trailers = valid_trailers(&req.ex.response_trailers);
            last_chunk_with(&mut self.out, &trailers);
        }
        if !self.out.is_empty() {
            client.send(&self.out).await?;
        }
        if self.promised.is_some_and(|n| self.written != n) {
            return Err(aborted(
                "a plugin changed the body length but kept content-length",
            ));
        }
        Ok(self.keep)
    }

    /// Takes the response trailers from `reader` and runs
    /// `proxy_on_response_trailers` when there are some.
    async fn trailers_through_plugins<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        req: &mut Request<'_>,
        client: &mut Client<C>,
        reader: &mut BodyReader,
    ) -> io::Result<()> {
        req.ex.response_trailers.set_all(reader.take_trailers());
        if !req.chain.hooks.response_trailers || req.ex.response_trailers.is_empty() {
            return Ok(());
        }
        match req.chain.on_response_trailers(&mut req.ex).await {
            Verdict::Fail(fault) => Err(self.fail(req, client, &fault.to_string()).await),
            _ => Ok(()),
        }
    }

    /// A plugin answered in the body phase: before the head went out its
    /// answer replaces the node's response, headers included; after, the
    /// connection closes.
    async fn answered<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        req: &mut Request<'_>,
        client: &mut Client<C>,
        local: LocalResponse,
    ) -> io::Error {
        if self.head_sent {
            return aborted("a plugin answered locally after the response started");
        }
        req.ex.response_headers = local_response_headers(&local);
        let keep = req.keep.after(Ending::Aborted);
        let _ = answer_local(client, &req.head, &local, &req.ex, keep).await;
        aborted("a plugin answered locally in the response body phase")
    }

    /// A plugin failed: a 503 if the head is still held, then the close.
    async fn fail<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        req: &mut Request<'_>,
        client: &mut Client<C>,
        why: &str,
    ) -> io::Error {
        if !self.head_sent {
            let keep = req.keep.after(Ending::Aborted);
            let _ = answer(client, &req.head, &reply::unavailable(), keep).await;
        }
        aborted(why)
    }

    /// The node failed while plugins held the body: a `504` (it timed
    /// out) or a `502` if the head is still held, so the client never sees
    /// a silent close; then the close.
    async fn node_failed<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        req: &mut Request<'_>,
        client: &mut Client<C>,
        e: io::Error,
    ) -> io::Error {
        if !self.head_sent {
            let r = if e.kind() == io::ErrorKind::TimedOut {
                reply::gateway_timeout()
            } else {
                reply::bad_gateway()
            };
            let keep = req.keep.after(Ending::Aborted);
            let _ = answer(client, &req.head, &r, keep).await;
        }
        e
    }

    /// The plugins held more than `max_buffered_body`: a 502 if the head
    /// is still held, then the close.
    async fn refuse<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        req: &mut Request<'_>,
        client: &mut Client<C>,
        why: &str,
    ) -> io::Error {
        if self.head_sent {
            return aborted(why);
        }
        let keep = req.keep.after(Ending::Aborted);
        let _ = answer(client, &req.head, &reply::bad_gateway(), keep).await;
        aborted(&format!("{why} (502 sent)"))
    }
}

/// The error that ends a relay cut short.
fn aborted(why: &str) -> io::Error {
    io::Error::other(why.to_string())
}
