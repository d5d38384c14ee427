//! The connection loop: one client connection, request after request.
//!
//! Wait for a request (within `client_header_timeout` on a new connection,
//! `keepalive_timeout` after one; not at all once the process drains),
//! read and parse its head within `client_header_timeout`, serve it, log
//! it, and go on while the keep-alive decision allows. A head that cannot
//! be read or parsed gets its 4xx and the connection closes: its framing
//! can no longer be trusted.

use super::answer::answer_raw;
use super::request::serve_request;
use super::transport::Transport;
use crate::config::ClientLimits;
use crate::gateway::Gateway;
use crate::http::reply::{self, Reply};
use crate::http::{self, Framing, Head, ReadBuf, RequestHead};
use crate::net::with_timeout;
use crate::ops::access_log::Record;
use crate::ops::memory;
use crate::tls::TlsInfo;
use crate::worker::Worker;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A client connection, as a listener (or the test runner) hands it over.
pub(crate) struct Connection<C> {
    /// The client's byte stream: a TCP socket when serving.
    pub(crate) stream: C,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The listener address the client reached.
    pub(crate) local: Option<SocketAddr>,
    /// What the TLS handshake settled, on an HTTPS listener.
    pub(crate) tls: Option<Arc<TlsInfo>>,
    /// Serves every request on this route of the configuration instead of
    /// routing it (each `tinygate test` case has its own route).
    pub(crate) pinned_route: Option<usize>,
}

/// The client side of a connection while it is served.
pub(crate) struct Client<C> {
    pub(super) stream: C,
    /// Bytes read from the client and not used yet.
    pub(super) buf: ReadBuf,
    pub(super) peer: SocketAddr,
    pub(super) local: Option<SocketAddr>,
    /// The handshake of an HTTPS client (`:scheme` is `https` then).
    pub(super) tls: Option<Arc<TlsInfo>>,
    /// `send_timeout` of the configuration serving the request.
    send_timeout: Duration,
    /// The access log record of the request being served.
    pub(super) record: RecordSlot,
    /// Counts the connection as busy (holding buffers) for `ops::memory`,
    /// from its first bytes until it has idled for [`IDLE_RELEASE`].
    busy: Option<memory::Held>,
}

/// A client's access log record, allocated when a request first writes
/// to it and given back while the connection idles ([`RecordSlot::release`]):
/// the record is most of a client's size, and an idle connection needs
/// none. Reads and writes go through it as through the record itself.
#[derive(Default)]
pub(crate) struct RecordSlot(Option<Box<Record>>);

impl RecordSlot {
    /// Gives the record's memory back; the next write starts a new one.
    fn release(&mut self) {
        self.0 = None;
    }
}

impl std::ops::Deref for RecordSlot {
    type Target = Record;
    fn deref(&self) -> &Record {
        static NONE: Record = Record::EMPTY;
        self.0.as_deref().unwrap_or(&NONE)
    }
}

impl std::ops::DerefMut for RecordSlot {
    fn deref_mut(&mut self) -> &mut Record {
        self.0.get_or_insert_with(Box::default)
    }
}

impl<C> Client<C> {
    /// `https` for a client of an HTTPS listener, else `http` (the
    /// `scheme` variable of route `vars` and `chash` keys).
    pub(super) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> Client<C> {
    /// Writes `bytes` to the client within its send timeout.
    pub(super) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        with_timeout(self.send_timeout, self.stream.write_all(bytes)).await
    }

    /// nginx's lingering close, before a close that may leave request
    /// bytes unread: closing a socket with unread input sends a reset, and
    /// a reset makes the client's stack drop the answer it has not read
    /// yet. So: send FIN after the answer, then read and discard until the
    /// client closes, stays quiet for `lingering_timeout`, sends
    /// [`LINGERING_MAX_BYTES`], or `lingering_time` is up.
    async fn linger(&mut self, limits: &ClientLimits) {
        if self.stream.close().await.is_err() {
            return;
        }
        let deadline = Instant::now() + limits.lingering_time;
        let mut discarded = 0;
        loop {
            let unread = self.buf.data().len();
            discarded += unread;
            self.buf.consume(unread);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || discarded >= LINGERING_MAX_BYTES {
                return;
            }
            let wait = limits.lingering_timeout.min(left);
            match with_timeout(wait, self.buf.fill(&mut self.stream)).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }
}

/// Most request bytes read and discarded by a lingering close: a client
/// that goes on sending after its answer (a large upload refused with 413)
/// costs bounded work; one that stops, as clients that read while they
/// send do, is let go long before.
const LINGERING_MAX_BYTES: usize = 8 << 20;

/// Serves one client connection until it closes or must be closed.
///
/// Request after request. While the connection waits, its task holds the
/// client and the wait, nothing more: what serving a request needs lives
/// in its own allocation while it runs ([`one_request`]). A plain function
/// returning an `async move` block, because an `async fn` would hold its
/// arguments twice (as given, and moved into its body) for as long as the
/// connection lives.
pub(crate) fn serve_connection<'a, C>(
    worker: &'a Worker,
    transport: &'a dyn Transport,
    conn: Connection<C>,
) -> impl Future<Output = ()> + 'a
where
    C: AsyncRead + AsyncWrite + Unpin + 'a,
{
    let Connection {
        stream,
        peer,
        local,
        tls,
        pinned_route,
    } = conn;
    let mut client = Client {
        stream,
        buf: ReadBuf::new(),
        peer,
        local,
        tls,
        send_timeout: worker.gateway().config.main.limits.send_timeout,
        record: RecordSlot::default(),
        busy: None,
    };
    async move {
        let _connection = memory::hold();
        let mut first = true;
        loop {
            if !client.buf.has_data() {
                // The wait's limit is copied out: an idle connection holds
                // no gateway, so a reload while it idles retires the old
                // one (and its plugins' root contexts), and its next
                // request is served with the new one.
                let limit = {
                    let limits = &worker.gateway().config.main.limits;
                    if first {
                        limits.client_header_timeout
                    } else {
                        limits.keepalive_timeout
                    }
                };
                if !wait_for_request(worker, &mut client, limit, first).await {
                    return;
                }
            }
            first = false;
            let request = one_request(worker, transport, &mut client, pinned_route);
            if !Box::pin(request).await {
                return;
            }
        }
    }
}

/// Reads, serves and logs one request; returns whether the connection
/// carries another.
async fn one_request<C>(
    worker: &Worker,
    transport: &dyn Transport,
    client: &mut Client<C>,
    pinned_route: Option<usize>,
) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let gateway = worker.gateway();
    let limits = &gateway.config.main.limits;
    client.send_timeout = limits.send_timeout;
    let head = match read_head(client, limits).await {
        Ok(head) => head,
        Err(None) => return false,
        Err(Some(refusal)) => {
            refuse(worker, &gateway, client, &refusal, limits).await;
            return false;
        }
    };
    start_record(&mut client.record, client.peer, &head);
    let had_body = head.framing != Framing::Empty;
    let keep = serve_request(worker, &gateway, client, transport, head, pinned_route).await;
    worker.record_request(&gateway, &client.record);
    if !keep && had_body {
        // Maybe answered before the body was read (413, 400, a plugin's
        // reply): let the client read it.
        client.linger(limits).await;
    }
    keep
}

/// How long a connection may wait for its next request and keep its
/// read buffer and log record: a busy keep-alive connection's next request
/// comes well within it; an idle one gives them back, so that thousands of
/// idle connections cost only their tasks and sockets.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Waits until the client sends something, reading it into the buffer.
/// Gives up (false) when the connection idles past its timeout, closes, or
/// the process drains. Reading (rather than waiting for readability)
/// costs no readiness registration when the next request is already there,
/// which it usually is on a busy keep-alive connection.
async fn wait_for_request<C: AsyncRead + AsyncWrite + Unpin>(
    worker: &Worker,
    client: &mut Client<C>,
    idle_limit: Duration,
    first: bool,
) -> bool {
    let soon = IDLE_RELEASE.min(idle_limit);
    let mut waited = wait_for_bytes(worker, client, soon).await;
    if matches!(&waited, Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut) && soon < idle_limit {
        client.buf.release();
        client.record.release();
        client.busy = None;
        waited = wait_for_bytes(worker, client, idle_limit - soon).await;
    }
    if matches!(waited, Some(Ok(n)) if n > 0) {
        client.busy.get_or_insert_with(memory::hold);
    }
    match waited {
        Some(Ok(n)) => n > 0,
        Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut && first => {
            log::debug!("{}: 408: nothing received in time", client.peer);
            let r = reply::bad_request(408, "request not received in time");
            let _ = client.send(&reply::encode(&r, false, true)).await;
            false
        }
        _ => false,
    }
}

/// The next bytes from the client within `limit` (`TimedOut` after it);
/// `None` once the process drains.
async fn wait_for_bytes<C: AsyncRead + AsyncWrite + Unpin>(
    worker: &Worker,
    client: &mut Client<C>,
    limit: Duration,
) -> Option<io::Result<usize>> {
    // Pinned here and raced by reference, so the read is held once.
    let filled = pin!(with_timeout(
        limit,
        client.buf.fill_idle(&mut client.stream)
    ));
    smol::future::or(async { Some(filled.await) }, async {
        worker.stopped().await;
        None
    })
    .await
}

/// Reads and parses the next request head.
///
/// # Errors
/// `Some(reply)` to refuse the request with before closing (a head too
/// large, too slow or malformed); `None` to close without a word (the
/// client went away).
async fn read_head<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<C>,
    limits: &ClientLimits,
) -> Result<RequestHead, Option<Reply>> {
    let peer = client.peer;
    let head = client
        .buf
        .read_head(&mut client.stream, limits.max_header_size);
    let n = match with_timeout(limits.client_header_timeout, head).await {
        Ok(Head::Complete(n)) => n,
        Ok(Head::Closed) => return Err(None),
        Ok(Head::TooLarge) => return Err(Some(too_large(client.buf.data(), limits, peer))),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            log::warn!("{peer}: 408: request head not received in time");
            return Err(Some(reply::bad_request(
                408,
                "request head not received in time",
            )));
        }
        Err(e) => {
            log::debug!("{peer}: connection ended while reading a head: {e}");
            return Err(None);
        }
    };
    // Routing, plugins, the access log and the node all see the normalised
    // path (http::uri), so no spelling of a path escapes the route that
    // guards it.
    let parsed = http::parse::parse_request_head(&client.buf.data()[..n])
        .and_then(|req| http::uri::normalize_request(req, limits.paths));
    client.buf.consume(n);
    parsed.map_err(|e| {
        log::warn!("{peer}: {} {}", e.status, e.reason);
        Some(reply::bad_request(e.status, e.reason))
    })
}

/// The refusal of a head past `max_header_size`: a request line that
/// alone passes the limit is a 414, as in nginx; otherwise the header
/// section is too large (431).
fn too_large(data: &[u8], limits: &ClientLimits, peer: SocketAddr) -> Reply {
    let line = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let line_limit = http::parse::MAX_REQUEST_LINE.min(limits.max_header_size);
    let (status, why) = if line > line_limit {
        (414, "request line too long")
    } else {
        (431, "request header fields too large")
    };
    log::warn!(
        "{peer}: {status}: request head larger than {} bytes",
        limits.max_header_size
    );
    reply::bad_request(status, why)
}

/// Answers a request whose head could not be read or parsed, and logs it
/// (method `-`); then lingers (except after a 408: a client too slow to
/// send a head gets no more time) so the caller can close.
async fn refuse<C: AsyncRead + AsyncWrite + Unpin>(
    worker: &Worker,
    gateway: &Gateway,
    client: &mut Client<C>,
    reply: &Reply,
    limits: &ClientLimits,
) {
    *client.record = Record {
        remote: Some(client.peer),
        method: "-".into(),
        version: "-",
        ..Record::default()
    };
    answer_raw(client, reply).await;
    worker.record_request(gateway, &client.record);
    if reply.status != 408 {
        client.linger(limits).await;
    }
}

/// Starts the access log record of a request, before it is served. The
/// previous request's record is overwritten in place, reusing its memory.
fn start_record(record: &mut Record, peer: SocketAddr, req: &RequestHead) {
    fn set(to: &mut String, from: &[u8]) {
        to.clear();
        to.push_str(&String::from_utf8_lossy(from));
    }
    let header = |name: &[u8]| req.headers.get(name).unwrap_or(b"");
    // Every field, so that a new one cannot be forgotten here.
    let Record {
        remote,
        host,
        method,
        target,
        version,
        status,
        body_bytes_sent,
        started,
        referer,
        user_agent,
        route_id,
        upstream_addr,
        upstream_status,
        upstream_time,
    } = record;
    *remote = Some(peer);
    set(host, req.host.as_deref().unwrap_or("").as_bytes());
    set(method, req.method.as_bytes());
    set(target, req.target.as_bytes());
    *version = super::heads::protocol(req.version);
    *status = 0;
    *body_bytes_sent = 0;
    *started = Some(std::time::Instant::now());
    set(referer, header(b"referer"));
    set(user_agent, header(b"user-agent"));
    route_id.clear();
    *upstream_addr = None;
    *upstream_status = None;
    *upstream_time = None;
}
