//! The small HTTP servers beside the proxy (the demo upstream, the status
//! listener): each on a thread of its own, answering every request with
//! what a plain function returns. They share the codec with the proxy and
//! nothing else: no routes, plugins or upstreams.

use super::{BodyReader, Head, ReadBuf, RequestHead, Version};
use crate::net;
use smol::io::AsyncWriteExt;
use smol::LocalExecutor;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;

/// A small server beside the proxy (the demo upstream, the status
/// listener): what it answers to one request.
pub struct SideReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: SideBody,
}

/// The body of a side server's reply.
pub enum SideBody {
    /// Known whole: sent with its length.
    Whole(Vec<u8>),
    /// Made piece by piece as it is sent (chunked; to an HTTP/1.0 client,
    /// up to the close), so a large body is never held whole: a scrape with
    /// 10,000 routes is 25 MB.
    Pieces(Box<dyn Iterator<Item = Vec<u8>>>),
}

/// Binds `addr` and answers every request with `answer`, on a thread of
/// its own (`name`), keeping connections alive; request bodies are read
/// and dropped.
///
/// # Errors
/// When `addr` cannot be bound.
pub fn spawn_side_server(
    name: &'static str,
    addr: SocketAddr,
    answer: fn(&RequestHead) -> SideReply,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("{name} on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let reactor = net::prepare()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let executor = Rc::new(LocalExecutor::new());
            reactor.block_on(executor.run(async {
                let Ok(listener) = net::TcpListener::new(listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    executor.spawn(serve_side(stream, answer)).detach();
                }
            }));
        })?;
    Ok(bound)
}

async fn serve_side(stream: net::TcpStream, answer: fn(&RequestHead) -> SideReply) {
    let mut buf = ReadBuf::new();
    while let Ok(Head::Complete(n)) = buf.read_head(&mut &stream, 64 * 1024).await {
        let parsed = super::parse::parse_request_head(&buf.data()[..n]);
        buf.consume(n);
        let Ok(req) = parsed else { return };
        let mut body = BodyReader::new(req.framing);
        while let Ok(n) = body.next(&mut buf, &mut &stream).await {
            if n == 0 {
                break;
            }
            buf.consume(n);
        }
        let reply = answer(&req);
        let mut head = Vec::with_capacity(256);
        super::write_status_line(&mut head, reply.status);
        super::write_header(&mut head, b"content-type", reply.content_type.as_bytes());
        let keep_alive = match reply.body {
            SideBody::Whole(body) => {
                head.extend_from_slice(b"content-length: ");
                super::push_decimal(&mut head, body.len() as u64);
                head.extend_from_slice(b"\r\n\r\n");
                if req.method != "HEAD" {
                    head.extend_from_slice(&body);
                }
                (&stream).write_all(&head).await.is_ok()
            }
            SideBody::Pieces(pieces) => send_pieces(&stream, head, &req, pieces).await,
        };
        if !keep_alive {
            return;
        }
    }
}

/// Sends a head ending in `head` and then `pieces`, chunked (RFC 9112
/// §7.1) or, to an HTTP/1.0 client, delimited by the close. Returns
/// whether the connection may carry another request.
async fn send_pieces(
    stream: &net::TcpStream,
    mut head: Vec<u8>,
    req: &RequestHead,
    pieces: Box<dyn Iterator<Item = Vec<u8>>>,
) -> bool {
    let chunked = req.version == Version::Http11;
    head.extend_from_slice(if chunked {
        b"transfer-encoding: chunked\r\n\r\n"
    } else {
        b"connection: close\r\n\r\n"
    });
    if (&*stream).write_all(&head).await.is_err() {
        return false;
    }
    if req.method == "HEAD" {
        return chunked;
    }
    let mut frame = Vec::new();
    for piece in pieces.filter(|p| !p.is_empty()) {
        frame.clear();
        if chunked {
            super::io::chunk_header(&mut frame, piece.len());
        }
        frame.extend_from_slice(&piece);
        if chunked {
            frame.extend_from_slice(b"\r\n");
        }
        if (&*stream).write_all(&frame).await.is_err() {
            return false;
        }
    }
    chunked && (&*stream).write_all(b"0\r\n\r\n").await.is_ok()
}
