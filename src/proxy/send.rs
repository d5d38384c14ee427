//! Writing a request to a node: the head and the body from its
//! [`Source`](super::body::Source), gathered into few writes and flushed
//! whenever the client has nothing more buffered, so that the node is
//! never kept waiting on bytes tinygate holds.
//!
//! A body streamed from the client is re-chunked if it came chunked; the
//! rest of a spilled body passes the plugins piece by piece, and a plugin
//! that breaks the length the node was promised fails the exchange before
//! a byte too many is written.

use super::answer::EarlyEnd;
use super::body::{
    held_too_much, over_client_max, read_body_piece, trailers_through_plugins, valid_trailers,
    Spill,
};
use super::connection::Client;
use super::forward::Stage;
use super::request::Request;
use crate::config::ClientLimits;
use crate::http::io::{chunk_header, last_chunk_with};
use crate::http::reply;
use crate::http::{BodyReader, Framing};
use crate::net::with_timeout;
use crate::plugins::chain::BodyVerdict;
use crate::wasm::Exchange;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use std::time::Duration;

/// Bytes gathered into one write before flushing.
pub(super) const WRITE_COALESCE: usize = 64 * 1024;

/// Bytes on their way to a node: what is gathered, and where it goes.
pub(super) struct ToNode<'a, W> {
    pub(super) stream: &'a mut W,
    /// Gathered, not written yet.
    pub(super) out: Vec<u8>,
    /// `timeout.send`: how long one write may wait.
    pub(super) send_timeout: Duration,
}

impl<W: AsyncWrite + Unpin> ToNode<'_, W> {
    /// Writes what is gathered and empties it.
    pub(super) async fn flush(&mut self) -> Result<(), Stage> {
        if !self.out.is_empty() {
            write_to(self.stream, &self.out, self.send_timeout).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Flushes once a full write's worth is gathered.
    async fn flush_if_full(&mut self) -> Result<(), Stage> {
        if self.out.len() >= WRITE_COALESCE {
            self.flush().await?;
        }
        Ok(())
    }
}

/// Writes `bytes` to a node within `send_timeout`.
async fn write_to<W: AsyncWrite + Unpin>(
    stream: &mut W,
    bytes: &[u8],
    send_timeout: Duration,
) -> Result<(), Stage> {
    with_timeout(send_timeout, stream.write_all(bytes))
        .await
        .map_err(Stage::RequestBody)
}

/// Streams the client's request body (in `framing`) to the node after
/// what `to` holds (the head), re-chunked if it came chunked; leaves the
/// end of the body in `to.out`.
pub(super) async fn forward_body<C, W>(
    client: &mut Client<C>,
    limits: &ClientLimits,
    framing: Framing,
    to: &mut ToNode<'_, W>,
) -> Result<(), Stage>
where
    C: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BodyReader::new(framing);
    let chunked = framing == Framing::Chunked;
    let mut read = 0;
    loop {
        let n = next_piece_for_node(&mut reader, client, limits, to, &mut read).await?;
        if n == 0 {
            break;
        }
        encode_piece(&mut to.out, &client.buf.data()[..n], chunked);
        client.buf.consume(n);
        to.flush_if_full().await?;
    }
    if chunked {
        last_chunk_with(&mut to.out, &reader.take_trailers());
    }
    Ok(())
}

/// The next piece of a request body bound for a node, counted in `read`
/// against `client_max_body_size`. What `to` holds is written first when
/// the client has nothing more buffered, so the node is not kept waiting
/// on the client.
async fn next_piece_for_node<C, W>(
    reader: &mut BodyReader,
    client: &mut Client<C>,
    limits: &ClientLimits,
    to: &mut ToNode<'_, W>,
    read: &mut u64,
) -> Result<usize, Stage>
where
    C: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    if !reader.has_buffered(&client.buf) {
        to.flush().await?;
    }
    let n = read_body_piece(reader, &mut client.buf, &mut client.stream, limits)
        .await
        .map_err(Stage::Client)?;
    *read += n as u64;
    if over_client_max(*read, limits) {
        return Err(Stage::TooLarge);
    }
    Ok(n)
}

/// Streams the rest of a spilled request body through the plugins to the
/// node, after what `to` holds (the head); leaves the end of the body in
/// `to.out`. The node was promised `framing`: with a length, a plugin that
/// changes it fails the exchange before a byte too many is written.
pub(super) async fn forward_spilled_body<C, W>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    spill: Spill,
    framing: Framing,
    to: &mut ToNode<'_, W>,
) -> Result<(), Stage>
where
    C: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = req.limits;
    let Spill {
        forward,
        mut reader,
        mut read,
    } = spill;
    let mut sent = Sent::new(framing);
    send_what_passed(forward, &mut sent, to).await?;
    let mut first_plugin = 0;
    loop {
        let n = next_piece_for_node(&mut reader, client, limits, to, &mut read).await?;
        let ex = &mut req.ex;
        ex.request_body.extend_from_slice(&client.buf.data()[..n]);
        client.buf.consume(n);
        if ex.request_body.len() > limits.max_buffered_body {
            return Err(Stage::Plugin(held_too_much()));
        }
        let end_of_stream = n == 0 || reader.is_done();
        match req
            .chain
            .on_request_body(ex, end_of_stream, first_plugin)
            .await
        {
            BodyVerdict::Continue => {
                sent.encode(&mut to.out, &ex.request_body)?;
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
        to.flush_if_full().await?;
    }
    trailers_through_plugins(&mut reader, req)
        .await
        .map_err(Stage::Plugin)?;
    sent.finish(&mut to.out, &req.ex)
}

/// Writes what the plugins let through before the body spilled, as it is
/// (it may be `max_buffered_body` long: it is not copied into `to.out`).
async fn send_what_passed<W: AsyncWrite + Unpin>(
    forward: Vec<u8>,
    sent: &mut Sent,
    to: &mut ToNode<'_, W>,
) -> Result<(), Stage> {
    if forward.is_empty() {
        return Ok(());
    }
    sent.admit(forward.len())?;
    let chunked = sent.framing == Framing::Chunked;
    if chunked {
        chunk_header(&mut to.out, forward.len());
    }
    to.flush().await?;
    write_to(to.stream, &forward, to.send_timeout).await?;
    if chunked {
        to.out.extend_from_slice(b"\r\n");
    }
    Ok(())
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
