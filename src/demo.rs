//! The built-in demo upstream: a tiny HTTP server that answers every
//! request with 200 and a text echo of what it received, so the shipped
//! configuration works on a fresh machine with nothing else running.
//! Turned on by `tinygate.demo_upstream: ip:port`; not for production.

use crate::http::{self, Head, ReadBuf};
use smol::io::AsyncWriteExt;
use smol::{Async, LocalExecutor};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;

/// Binds `addr` and serves the demo upstream on its own thread.
///
/// # Errors
/// When `addr` cannot be bound.
pub fn start(addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("demo upstream on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("demo-upstream".into())
        .spawn(move || {
            let executor = Rc::new(LocalExecutor::new());
            smol::block_on(executor.run(async {
                let Ok(listener) = Async::new(listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    executor.spawn(serve(stream)).detach();
                }
            }));
        })?;
    Ok(bound)
}

async fn serve(stream: Async<TcpStream>) {
    let mut buf = ReadBuf::new();
    while let Ok(Head::Complete(n)) = buf.read_head(&mut &stream, 64 * 1024).await {
        let parsed = http::parse::parse_request_head(&buf.data()[..n]);
        buf.consume(n);
        let Ok(req) = parsed else { return };
        let mut body = http::BodyReader::new(req.framing);
        while let Ok(n) = body.next(&mut buf, &mut &stream).await {
            if n == 0 {
                break;
            }
            buf.consume(n);
        }
        let mut text = format!(
            "hello from the tinygate demo upstream\n\n{} {}\n",
            req.method, req.target
        );
        for (k, v) in &req.headers {
            text.push_str(&format!(
                "{}: {}\n",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            ));
        }
        let mut out = Vec::with_capacity(256 + text.len());
        http::write_status_line(&mut out, 200);
        http::write_header(&mut out, b"content-type", b"text/plain; charset=utf-8");
        out.extend_from_slice(b"content-length: ");
        http::push_decimal(&mut out, text.len() as u64);
        out.extend_from_slice(b"\r\n\r\n");
        if req.method != "HEAD" {
            out.extend_from_slice(text.as_bytes());
        }
        if (&stream).write_all(&out).await.is_err() {
            return;
        }
    }
}
