//! Running test cases in-process, through the proxy's own code.
//!
//! Each test file gets a [`Bench`]: its plugins loaded once, a [`Gateway`]
//! with one route per distinct plugin conf, and a real [`Worker`] on a
//! single-threaded executor that this thread drives. A case is then one
//! client connection given to the proxy's only door,
//! [`proxy::serve_connection`]: head reading, plugin chain, maps, node
//! head, body loops, retries, answers and framing are the production
//! code, not a copy of it. Two things differ, and nothing else can: the
//! client and the node are scripted byte streams ([`Peer`], as
//! `tls::Stream::Other`, through the [`Script`] transport) instead of
//! sockets, and the connection is pinned
//! to the case's route instead of routing (every case has its route). So
//! "the request the upstream received" is the bytes the proxy wrote to
//! the node, and "the response the client received" the bytes it wrote
//! to the client, each parsed back with the proxy's own parser. The
//! `runner_and_proxy_agree` integration test shows it on the fixtures.
//!
//! Connection-specific values come from a fixed fake connection: the
//! client is [`CLIENT`], the listener [`LISTENER`], the route's single node
//! [`NODE`]. Time is the runner's: the worker's timed ticks are off; a
//! case's `ticks` and a request that stalls (paused, nothing left to run)
//! advance it by calling `proxy_on_tick` on every root by hand; a request
//! still paused after [`STALL_TICKS`] of those has its pause expired, and
//! fails as it would after `PAUSE_TIMEOUT`. `proxy_http_call`s are answered
//! from the case's script. Nothing opens a socket.

use super::capture::{self, Line};
use super::spec::{self, Answer, Case, TestFile};
use crate::balancer::Algorithm;
use crate::config::{
    ClientLimits, Config, DeclaredPlugin, MainConfig, Node, Route, RoutePlugin, Routes, Timeouts,
    Upstream, UriMatch,
};
use crate::gateway::Gateway;
use crate::http::{self, parse, BodyReader, Framing, Head, HeaderMap, ReadBuf};
use crate::live::Live;
use crate::plugins::chain::PAUSE_TIMEOUT;
use crate::plugins::Mode;
use crate::proxy::{self, Connecting, EarlyEnd, Transport};
use crate::tls::Stream;
use crate::upstream::{Conn, Dial};
use crate::wasm::{
    metrics_snapshot, CallResponse, Engine, Fault, HttpCall, LocalResponse, MetricKind, Plugin,
};
use crate::worker::Worker;
use smol::channel::Sender;
use smol::io::{AsyncRead, AsyncWrite};
use smol::LocalExecutor;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Where the runner's client connects from (`x-forwarded-for`,
/// `source.address`).
pub const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// The listener the runner's client reached (`destination.address`).
pub const LISTENER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9080);

/// The route's only upstream node (seen only with `pass_host: node`).
pub const NODE: &str = "127.0.0.1:1980";

/// Ticks given to a stalled request before its pause is expired: enough
/// for any plugin that resumes on a later tick, few enough to stay quick.
pub const STALL_TICKS: u32 = 100;

/// Executor steps run before the runner decides nothing is runnable: a
/// guard against a task that wakes itself forever.
const MAX_STEPS: usize = 1_000_000;

/// Source of route plugin keys, far from the config's own (which start at
/// 1), so a root context is never shared by mistake.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1 << 48);

/// One test file, ready to run: plugins loaded, worker started.
pub struct Bench {
    executor: Rc<LocalExecutor<'static>>,
    worker: Rc<Worker>,
    gateway: Arc<Gateway>,
    plugins: Vec<Arc<Plugin>>,
    /// Index of each case's route in the gateway.
    route_of_case: Vec<usize>,
    calls: Rc<RefCell<CallBook>>,
    /// Kept open: a closed channel would tell the worker to drain.
    _stop: Sender<()>,
}

/// The current case's scripted call answers, and the calls made.
#[derive(Default)]
struct CallBook {
    answers: Vec<(String, Answer)>,
    made: Vec<HttpCall>,
}

/// What running one case produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The request as the upstream received it (`None`: none was sent).
    pub upstream: Option<Message>,
    /// The response as the client received it.
    pub response: Option<Message>,
    /// The local response a plugin sent, if any (request and header
    /// phases, request body phase).
    pub local: Option<LocalResponse>,
    /// `proxy_http_call`s made during the case, in order.
    pub calls: Vec<HttpCall>,
    /// The plugin failure that ended the request, if any.
    pub fault: Option<Fault>,
    /// Everything logged during the case.
    pub logs: Vec<Line>,
    /// Every plugin metric: (name, kind, value before, value after).
    pub metrics: Vec<(String, MetricKind, i64, i64)>,
    /// What the runner did that the proxy would have done with time.
    pub notes: Vec<String>,
    /// The case could not be run to its end (a runner limit, not a plugin
    /// failure).
    pub error: Option<String>,
    pub elapsed: Duration,
}

/// An HTTP message as received, parsed back from its bytes.
#[derive(Debug, Default, Clone)]
pub struct Message {
    /// Requests only.
    pub method: String,
    pub path: String,
    /// Responses only.
    pub status: u16,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Message {
    /// The value of `name`: several fields joined with `, `.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

impl Bench {
    /// Loads the plugins of `file` and starts a worker for them.
    ///
    /// # Errors
    /// Each plugin that fails to load, with the test file and key path.
    pub fn new(file: &TestFile, engine: &Engine) -> Result<Bench, Vec<String>> {
        let mut plugins = Vec::new();
        let mut problems = Vec::new();
        for p in &file.plugins {
            match Plugin::load(engine, p.spec.clone()) {
                Ok(plugin) => plugins.push(Arc::new(plugin)),
                Err(e) => problems.push(format!("{}: {}.file: {e}", file.label, p.path)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let node = Node {
            authority: NODE.to_string(),
            addr: NODE.parse().expect("NODE is an address"),
            weight: 1,
            priority: 0,
        };
        let upstream = |id: &str| {
            Arc::new(Upstream::new(
                id.to_string(),
                vec![node.clone()],
                Algorithm::RoundRobin,
            ))
        };
        // One route per distinct conf; the cases that share a conf share
        // its root contexts, as requests of one route do.
        let mut routes: Vec<(Option<Vec<u8>>, Route)> = Vec::new();
        let mut route_of_case = Vec::with_capacity(file.cases.len());
        for case in &file.cases {
            if let Some(i) = routes.iter().position(|(c, _)| *c == case.conf) {
                route_of_case.push(i);
                continue;
            }
            let plugins = file
                .plugins
                .iter()
                .enumerate()
                .map(|(i, p)| RoutePlugin {
                    plugin: i,
                    name: p.spec.name.clone(),
                    conf: match (&case.conf, i) {
                        (Some(conf), 0) => conf.clone(),
                        _ => p.conf.clone(),
                    },
                    policy: p.policy,
                    key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
                })
                .collect();
            let route = Route {
                id: "test".to_string(),
                uris: vec![UriMatch::Prefix("/".to_string())],
                hosts: Vec::new(),
                methods: Vec::new(),
                priority: 0,
                upstream: Some(upstream("route test")),
                plugins,
                timeout: Timeouts::default(),
                ..Route::default()
            };
            route_of_case.push(routes.len());
            routes.push((case.conf.clone(), route));
        }
        // Call targets that name an upstream must exist, as in production
        // (a plugin's call to an unknown upstream id is refused).
        let mut targets: Vec<&str> = Vec::new();
        for (target, _) in file.cases.iter().flat_map(|c| &c.calls) {
            if !targets.contains(&target.as_str()) {
                targets.push(target);
            }
        }
        let label = std::path::PathBuf::from(&file.label);
        let main = MainConfig {
            config_file: label.clone(),
            routes_file: label,
            listen: vec![LISTENER],
            ssl: Default::default(),
            workers: 1,
            demo_upstream: None,
            shutdown_grace: Duration::from_secs(1),
            deny_exec_memory: false,
            plugins: file
                .plugins
                .iter()
                .map(|p| DeclaredPlugin {
                    spec: p.spec.clone(),
                    failure_policy: p.policy,
                })
                .collect(),
            limits: ClientLimits::default(),
            access_log: crate::ops::access_log::Target::Off,
            access_log_format: crate::ops::access_log::Format::Combined,
            status_listen: None,
            etcd: None,
        };
        let config = Config {
            main,
            routes: Routes {
                routes: routes.into_iter().map(|(_, r)| Arc::new(r)).collect(),
                upstreams: targets.into_iter().map(upstream).collect(),
                ..Routes::default()
            },
        };
        let gateway = Gateway::with_plugins(config, plugins.clone());
        let live = Live::new(gateway, engine.clone());
        let (stop, stopped) = smol::channel::bounded(1);
        let executor = Rc::new(LocalExecutor::new());
        let calls = Rc::new(RefCell::new(CallBook::default()));
        let book = Rc::clone(&calls);
        let script = Mode::Scripted(Rc::new(move |call: &HttpCall| answer(&book, call)));
        let worker = Worker::new(live, stopped, Rc::clone(&executor), 0, script);
        let gateway = worker.gateway();
        Ok(Bench {
            executor,
            worker,
            gateway,
            plugins,
            route_of_case,
            calls,
            _stop: stop,
        })
    }

    /// Runs case number `index` (of the file this bench was made for).
    pub fn run(&self, index: usize, case: &Case) -> Outcome {
        let started = Instant::now();
        let _ = capture::take();
        let before = metrics_snapshot();
        *self.calls.borrow_mut() = CallBook {
            answers: case.calls.clone(),
            made: Vec::new(),
        };
        let route = self.route_of_case[index];
        let mut outcome = Outcome::default();
        if case.ticks > 0 {
            self.configure(route);
            for _ in 0..case.ticks {
                self.tick();
                self.settle();
            }
        }
        let task = self.executor.spawn(exchange(
            Rc::clone(&self.worker),
            route,
            case.request.clone(),
            case.upstream.clone(),
        ));
        let mut ticks = 0;
        let mut expired = false;
        let finished = loop {
            self.settle();
            if task.is_finished() {
                break true;
            }
            if ticks < STALL_TICKS && self.tick() > 0 {
                ticks += 1;
                continue;
            }
            if expired {
                break false;
            }
            expired = true;
            self.bench().expire_pauses();
        };
        if ticks > 0 {
            outcome.notes.push(format!(
                "the request stalled: time advanced by {ticks} tick(s) while it waited"
            ));
        }
        if expired {
            outcome.notes.push(format!(
                "the request stayed paused with nothing left to resume it: its pause was \
                 expired, as the proxy does after {} s",
                PAUSE_TIMEOUT.as_secs()
            ));
        }
        if finished {
            let (wire, client) = smol::future::block_on(task);
            outcome.local = wire.local;
            outcome.fault = wire.fault;
            if let Some(bytes) = wire.upstream {
                match parse_request(&bytes) {
                    Ok(m) => outcome.upstream = Some(m),
                    Err(e) => outcome.error = Some(format!("the request sent upstream: {e}")),
                }
            }
            match parse_response(&client, &case.request.method) {
                Ok(m) => outcome.response = Some(m),
                Err(e) => outcome.error = Some(format!("the response to the client: {e}")),
            }
        } else {
            drop(task);
            outcome.error = Some("the request never completed, even with its pause expired".into());
        }
        self.settle();
        outcome.calls = std::mem::take(&mut self.calls.borrow_mut().made);
        outcome.logs = capture::take();
        outcome.metrics = metrics_snapshot()
            .into_iter()
            .map(|(name, kind, after)| {
                let was = before
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .map_or(0, |m| m.2);
                (name, kind, was, after)
            })
            .collect();
        outcome.elapsed = started.elapsed();
        outcome
    }

    /// The test bench controls of the worker's plugins.
    fn bench(&self) -> crate::plugins::Bench<'_> {
        self.worker
            .plugins()
            .bench()
            .expect("the runner's worker is made with Mode::Scripted")
    }

    /// Runs every task that can run now.
    fn settle(&self) {
        for _ in 0..MAX_STEPS {
            if !self.executor.try_tick() {
                return;
            }
        }
    }

    /// One `proxy_on_tick` for every root with a tick period, in every
    /// plugin; returns how many ran.
    fn tick(&self) -> usize {
        self.plugins
            .iter()
            .map(|plugin| self.bench().tick(plugin))
            .sum()
    }

    /// Creates the root contexts of `route`, as its first request would,
    /// so ticks before that request reach them.
    fn configure(&self, route: usize) {
        let route = &self.gateway.config.routes.routes[route];
        self.bench().configure(&self.gateway, route);
    }
}

/// The scripted answer to `call` (recorded in `book`).
fn answer(book: &RefCell<CallBook>, call: &HttpCall) -> Option<CallResponse> {
    let mut book = book.borrow_mut();
    book.made.push(call.clone());
    let scripted = book.answers.iter().find(|(t, _)| *t == call.target);
    match scripted.map(|(_, a)| a) {
        Some(Answer::Responds {
            status,
            headers,
            body,
        }) => {
            let mut map = HeaderMap::with_capacity(headers.len() + 1);
            map.add(b":status", status.to_string().as_bytes());
            for (k, v) in headers {
                map.add(k.as_bytes(), v.as_bytes());
            }
            Some(CallResponse {
                headers: map,
                body: body.clone(),
                trailers: HeaderMap::new(),
            })
        }
        Some(Answer::Fails) => {
            log::warn!(
                "http_call {} to {:?} failed: the test scripts a failure",
                call.call_id,
                call.target
            );
            None
        }
        None => {
            log::warn!(
                "http_call {} to {:?} failed: the test scripts no answer for it",
                call.call_id,
                call.target
            );
            None
        }
    }
}

/// What one exchange left besides the client's bytes.
#[derive(Default)]
struct Wire {
    /// The bytes the proxy wrote to the node, if it connected.
    upstream: Option<Vec<u8>>,
    local: Option<LocalResponse>,
    fault: Option<Fault>,
}

/// The network of one case, as the request path sees it: one connection
/// to the route's node, which answers as the case scripts; and a record of
/// what the proxy sent it and how plugins ended the request.
struct Script {
    /// The node's answer, until the proxy connects.
    answer: RefCell<Option<Segments>>,
    /// What the proxy wrote to the node.
    received: Rc<RefCell<Vec<u8>>>,
    connected: Cell<bool>,
    local: RefCell<Option<LocalResponse>>,
    fault: RefCell<Option<Fault>>,
}

impl Script {
    fn new(upstream: &spec::Upstream) -> Script {
        Script {
            answer: RefCell::new(Some(upstream_bytes(upstream))),
            received: Rc::default(),
            connected: Cell::new(false),
            local: RefCell::default(),
            fault: RefCell::default(),
        }
    }

    fn into_wire(self) -> Wire {
        Wire {
            upstream: self.connected.get().then(|| self.received.take()),
            local: self.local.take(),
            fault: self.fault.take(),
        }
    }
}

impl Transport for Script {
    fn take_idle(&self, _: &Dial<'_>) -> Option<Conn<Stream>> {
        None
    }

    fn connect<'a>(&'a self, dial: &'a Dial<'_>, _: Duration) -> Connecting<'a> {
        let connected = match self.answer.take() {
            Some(answer) => {
                self.connected.set(true);
                Ok(Conn {
                    stream: Stream::Other(Box::new(Peer {
                        from: answer,
                        to: Rc::clone(&self.received),
                    })),
                    buf: ReadBuf::new(),
                    reused: false,
                })
            }
            None => {
                let why = format!("{}: the test scripts one connection", dial.addr);
                Err(io::Error::new(io::ErrorKind::ConnectionRefused, why))
            }
        };
        Box::pin(std::future::ready(connected))
    }

    fn release(&self, _: &Dial<'_>, _: Conn<Stream>) {}

    fn ended_early(&self, how: &EarlyEnd) {
        match how {
            EarlyEnd::Respond(local) => *self.local.borrow_mut() = Some(local.clone()),
            EarlyEnd::Fail(fault) => *self.fault.borrow_mut() = Some(fault.clone()),
            EarlyEnd::Refuse(..) => {}
        }
    }
}

/// One end of a scripted conversation: reads give the script's bytes,
/// writes are kept.
struct Peer {
    from: Segments,
    to: Rc<RefCell<Vec<u8>>>,
}

impl AsyncRead for Peer {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().from).poll_read(cx, out)
    }
}

impl AsyncWrite for Peer {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.to.borrow_mut().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A peer's bytes as scripted: each read returns at most one segment, as
/// if each had arrived on its own; then `end` (end of stream when `None`).
struct Segments {
    parts: VecDeque<Vec<u8>>,
    end: Option<io::ErrorKind>,
}

impl Segments {
    fn new(parts: Vec<Vec<u8>>) -> Segments {
        Segments {
            parts: parts.into_iter().filter(|p| !p.is_empty()).collect(),
            end: None,
        }
    }
}

impl AsyncRead for Segments {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(front) = this.parts.front_mut() else {
            return Poll::Ready(match this.end {
                None => Ok(0),
                // A timed-out read says what `net::with_timeout` says.
                Some(io::ErrorKind::TimedOut) => {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
                }
                Some(kind) => Err(io::Error::from(kind)),
            });
        };
        let n = front.len().min(out.len());
        out[..n].copy_from_slice(&front[..n]);
        front.drain(..n);
        if front.is_empty() {
            this.parts.pop_front();
        }
        Poll::Ready(Ok(n))
    }
}

/// One request on a connection pinned to the case's route, through the
/// proxy's own request path; returns what happened and the client's bytes.
async fn exchange(
    worker: Rc<Worker>,
    route: usize,
    request: spec::Request,
    upstream: spec::Upstream,
) -> (Wire, Vec<u8>) {
    let script = Script::new(&upstream);
    let client_received = Rc::new(RefCell::new(Vec::new()));
    let connection = proxy::Connection {
        stream: Stream::Other(Box::new(Peer {
            from: Segments::new(request_bytes(&request)),
            to: Rc::clone(&client_received),
        })),
        peer: CLIENT,
        local: Some(LISTENER),
        tls: None,
        pinned_route: Some(route),
    };
    proxy::serve_connection(&worker, &script, connection).await;
    (script.into_wire(), client_received.take())
}

/// The client's request as bytes on the wire: the head, then each piece
/// of body as it arrives.
fn request_bytes(r: &spec::Request) -> Vec<Vec<u8>> {
    let mut head = format!("{} {} HTTP/1.1\r\n", r.method, r.path).into_bytes();
    for (k, v) in &r.headers {
        http::write_header(&mut head, k.as_bytes(), v.as_bytes());
    }
    // No body, no framing field, as clients send a GET.
    let framed = !r.body.pieces.is_empty();
    message_bytes(head, &r.body, framed)
}

/// The upstream's answer as bytes on the wire.
fn upstream_bytes(script: &spec::Upstream) -> Segments {
    match script {
        spec::Upstream::Answers {
            status,
            headers,
            body,
        } => {
            let mut head = Vec::with_capacity(256);
            http::write_status_line(&mut head, *status);
            for (k, v) in headers {
                http::write_header(&mut head, k.as_bytes(), v.as_bytes());
            }
            // Every response is framed, except those that never have a body.
            let framed = !(*status < 200 || *status == 204 || *status == 304);
            Segments::new(message_bytes(head, body, framed))
        }
        spec::Upstream::NeverAnswers => Segments {
            parts: VecDeque::new(),
            end: Some(io::ErrorKind::TimedOut),
        },
        spec::Upstream::Resets => Segments {
            parts: VecDeque::new(),
            end: Some(io::ErrorKind::ConnectionReset),
        },
    }
}

/// `head` (without its blank line) plus the framing and pieces of `body`;
/// an empty body gets `content-length: 0` only when `framed`.
fn message_bytes(mut head: Vec<u8>, body: &spec::Body, framed: bool) -> Vec<Vec<u8>> {
    let mut parts = Vec::with_capacity(body.pieces.len() + 2);
    if body.chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        parts.push(head);
        for piece in &body.pieces {
            let mut chunk = Vec::with_capacity(piece.len() + 12);
            proxy::encode_piece(&mut chunk, piece, true);
            parts.push(chunk);
        }
        let trailers: Vec<(Vec<u8>, Vec<u8>)> = body
            .trailers
            .iter()
            .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
            .collect();
        let mut last = Vec::new();
        http::io::last_chunk_with(&mut last, &trailers);
        parts.push(last);
        return parts;
    }
    let len: usize = body.pieces.iter().map(Vec::len).sum();
    if framed || len > 0 {
        head.extend_from_slice(b"content-length: ");
        http::push_decimal(&mut head, len as u64);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    parts.push(head);
    parts.extend(body.pieces.iter().cloned());
    parts
}

/// A request as a node receives it, parsed back.
fn parse_request(bytes: &[u8]) -> Result<Message, String> {
    smol::future::block_on(async {
        let mut from = Segments::new(vec![bytes.to_vec()]);
        let mut buf = ReadBuf::new();
        let n = match buf.read_head(&mut from, usize::MAX).await {
            Ok(Head::Complete(n)) => n,
            _ => return Err("no complete head".to_string()),
        };
        let head = parse::parse_request_head(&buf.data()[..n]).map_err(|e| e.reason.to_string())?;
        buf.consume(n);
        let (body, trailers) = read_body(&mut buf, &mut from, head.framing).await?;
        Ok(Message {
            method: head.method,
            path: head.target,
            headers: text_pairs(&head.headers),
            body,
            trailers,
            ..Message::default()
        })
    })
}

/// A response as the client receives it, parsed back (interim responses
/// skipped).
fn parse_response(bytes: &[u8], method: &str) -> Result<Message, String> {
    smol::future::block_on(async {
        let mut from = Segments::new(vec![bytes.to_vec()]);
        let mut buf = ReadBuf::new();
        loop {
            let n = match buf.read_head(&mut from, usize::MAX).await {
                Ok(Head::Complete(n)) => n,
                _ => return Err("no complete response head".to_string()),
            };
            let head =
                parse::parse_response_head(&buf.data()[..n]).map_err(|e| e.reason.to_string())?;
            buf.consume(n);
            if head.status < 200 {
                continue;
            }
            let framing =
                parse::response_framing(&head, method).map_err(|e| e.reason.to_string())?;
            let (body, trailers) = read_body(&mut buf, &mut from, framing).await?;
            return Ok(Message {
                status: head.status,
                headers: text_pairs(&head.headers),
                body,
                trailers,
                ..Message::default()
            });
        }
    })
}

async fn read_body(
    buf: &mut ReadBuf,
    from: &mut Segments,
    framing: Framing,
) -> Result<(Vec<u8>, Vec<(String, String)>), String> {
    let mut reader = BodyReader::new(framing);
    let mut body = Vec::new();
    loop {
        let n = reader.next(buf, from).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok((body, text_pairs(reader.take_trailers())));
        }
        body.extend_from_slice(&buf.data()[..n]);
        buf.consume(n);
    }
}

fn text_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k.as_ref()).into_owned(),
                String::from_utf8_lossy(v.as_ref()).into_owned(),
            )
        })
        .collect()
}
