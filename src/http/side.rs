//! The small HTTP servers beside the proxy (the demo upstream, the status
//! listener): each on a thread of its own, answering every request with
//! what a plain function returns. They share the codec with the proxy and
//! nothing else: no routes, plugins or upstreams.

use super::{BodyReader, Head, ReadBuf, RequestHead};
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
    pub body: Vec<u8>,
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
        head.extend_from_slice(b"content-length: ");
        super::push_decimal(&mut head, reply.body.len() as u64);
        head.extend_from_slice(b"\r\n\r\n");
        let mut body: &[u8] = if req.method == "HEAD" {
            &[]
        } else {
            &reply.body
        };
        // A large body (a scrape with 10,000 routes is tens of MiB) goes
        // out after the head instead of being copied behind it.
        if body.len() <= 64 * 1024 {
            head.extend_from_slice(body);
            body = &[];
        }
        if (&stream).write_all(&head).await.is_err() || (&stream).write_all(body).await.is_err() {
            return;
        }
    }
}
