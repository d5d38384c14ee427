//! Protocol upgrades (WebSocket) for routes with `enable_websocket`, as
//! APISIX passes them: the client's `Upgrade` and `Connection: upgrade`
//! reach the node (APISIX sets `upstream_upgrade`/`upstream_connection` to
//! the client's); a `101 Switching Protocols` goes back to the client after
//! the response hooks ran on it; from then on the proxy copies bytes both
//! ways until either side closes or nothing moves for the route's
//! `timeout.read`. Plugins see the request headers and the 101's headers,
//! never the frames. Without `enable_websocket`, `Upgrade` and
//! `Connection` are hop-by-hop fields like any other (RFC 9110 §7.6.1) and
//! the request goes to the node as a plain request.

use super::connection::Client;
use crate::config::Route;
use crate::http::{self, RequestHead};
use crate::net::with_timeout;
use crate::upstream::Conn;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::io;
use std::time::Duration;

/// The protocol the client asks to switch to, when its route lets it:
/// `Upgrade`'s value, if `Connection` has the `upgrade` token (RFC 9110
/// §7.8) and the request has no body.
pub(super) fn requested<'r>(req: &'r RequestHead, route: &Route) -> Option<&'r [u8]> {
    if !route.enable_websocket || req.framing != http::Framing::Empty {
        return None;
    }
    let asks =
        http::connection_tokens(req.headers.iter()).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    let protocol = req.headers.get(b"upgrade").filter(|p| !p.is_empty())?;
    asks.then_some(protocol)
}

/// Adds `Connection: upgrade` and `Upgrade: <protocol>` to a complete head
/// (which ends with its empty line).
pub(super) fn add_upgrade_fields(head: &mut Vec<u8>, protocol: &[u8]) {
    if head.ends_with(b"\r\n\r\n") {
        head.truncate(head.len() - 2);
        head.extend_from_slice(b"connection: upgrade\r\n");
        http::write_header(head, b"upgrade", protocol);
        head.extend_from_slice(b"\r\n");
    }
}

/// After the client got the 101 `head`: copies what each side sends to the
/// other (first what was read already past the heads) until one closes,
/// fails, or both are silent for `idle`. The connection is not reused.
///
/// # Errors
/// A side that failed, or the idle timeout (`TimedOut`).
pub(super) async fn tunnel<C, S>(
    client: &mut Client<C>,
    conn: &mut Conn<S>,
    head: &[u8],
    idle: Duration,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    client.send(head).await?;
    if conn.buf.has_data() {
        client.send(conn.buf.data()).await?;
        let n = conn.buf.data().len();
        conn.buf.consume(n);
    }
    if client.buf.has_data() {
        with_timeout(idle, conn.stream.write_all(client.buf.data())).await?;
        let n = client.buf.data().len();
        client.buf.consume(n);
    }
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        // Whichever side has bytes first; the other read is dropped before
        // it took any (readiness-based reads lose nothing when dropped).
        let from_client = async { (true, client.stream.read(&mut up).await) };
        let from_node = async { (false, conn.stream.read(&mut down).await) };
        let (client_side, read) = with_timeout(idle, async {
            Ok(smol::future::or(from_client, from_node).await)
        })
        .await?;
        match (client_side, read?) {
            (_, 0) => return Ok(()),
            (true, n) => with_timeout(idle, conn.stream.write_all(&up[..n])).await?,
            (false, n) => client.send(&down[..n]).await?,
        }
    }
}
