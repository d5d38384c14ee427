//! Upstreams that fail on purpose, on the request path (issue #17): nodes
//! that stall mid-body, reset pooled connections, answer 500, or are
//! killed and restarted under load.

use crate::util::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A keep-alive HTTP node that can be killed (its listener closed and
/// every open connection reset, as when its process dies) and started
/// again on the same port.
struct Node {
    addr: SocketAddr,
    /// The node's port, held across kill and restart so that no other
    /// test's socket takes it in between.
    port: Arc<PortForServer>,
    name: String,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
    served: Arc<AtomicUsize>,
}

impl Node {
    /// Listens on a port of its own and answers every request with `200`
    /// and body `name`.
    fn start(name: &str) -> Node {
        Node::listen(Arc::new(PortForServer::reserve()), name)
    }

    fn listen(port: Arc<PortForServer>, name: &str) -> Node {
        let addr = port.addr;
        let listener = TcpListener::bind(addr).expect("bind node");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (stop, conns, served) = (stop.clone(), conns.clone(), served.clone());
            let name = name.to_string();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            conns.lock().unwrap().push(stream.try_clone().unwrap());
                            let (served, name, stop) = (served.clone(), name.clone(), stop.clone());
                            std::thread::spawn(move || {
                                serve_keep_alive(stream, &name, &served, &stop)
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        Node {
            addr,
            port,
            name: name.to_string(),
            stop,
            conns,
            accept: Some(accept),
            served,
        }
    }

    /// Stops listening and resets every open connection (`SO_LINGER` 0),
    /// as the kernel does for a killed process with unread data.
    fn kill(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = rustix::net::sockopt::set_socket_linger(&conn, Some(Duration::ZERO));
            // Wakes a serving thread that waits for a request; one serving
            // a request stops before answering. The last close of the
            // socket sends the reset.
            let _ = conn.shutdown(Shutdown::Read);
        }
    }

    /// Closes every open connection cleanly (a node's keep-alive timeout).
    fn close_connections(&self) {
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// A new process on the same port.
    fn restart(&mut self) {
        *self = Node::listen(Arc::clone(&self.port), &self.name.clone());
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Answers requests (heads only, no bodies) on one connection until it
/// closes, or until the node is killed: then a request being served gets
/// no answer (the connection is reset).
fn serve_keep_alive(mut stream: TcpStream, name: &str, served: &AtomicUsize, killed: &AtomicBool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while find(&buf, b"\r\n\r\n").is_none() {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
        buf.drain(..end);
        served.fetch_add(1, Ordering::SeqCst);
        // A node that takes a moment, so that requests are in flight on it
        // when it is killed.
        std::thread::sleep(Duration::from_millis(5));
        if killed.load(Ordering::SeqCst) {
            return;
        }
        let out = ok_response(name);
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    /// Answers other than 200, by status.
    statuses: Vec<u16>,
    /// Requests that got no answer (connection closed or reset).
    lost: usize,
}

/// One response on `stream` (heads and `content-length` bodies only);
/// `None` when the connection ended first.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < end + len {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..end + len);
    Some(status)
}

/// `clients` keep-alive clients sending `GET /` to `gate` until `stop`.
fn load(gate: SocketAddr, clients: usize, stop: Arc<AtomicBool>) -> Vec<JoinHandle<Tally>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut tally = Tally::default();
                let mut conn: Option<(TcpStream, Vec<u8>)> = None;
                while !stop.load(Ordering::SeqCst) {
                    let (stream, buf) = conn.get_or_insert_with(|| {
                        let s = TcpStream::connect(gate).expect("connect to tinygate");
                        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        (s, Vec::new())
                    });
                    if stream
                        .write_all(b"GET / HTTP/1.1\r\nHost: load\r\n\r\n")
                        .is_err()
                    {
                        tally.lost += 1;
                        conn = None;
                        continue;
                    }
                    match read_response(stream, buf) {
                        Some(200) => tally.ok += 1,
                        Some(s) => tally.statuses.push(s),
                        None => {
                            tally.lost += 1;
                            conn = None;
                        }
                    }
                }
                tally
            })
        })
        .collect()
}

/// The load test: three nodes, one killed and restarted while 8
/// keep-alive clients send GETs. A GET can always be replayed, so no
/// request may fail. Each phase lasts until what it is about happened
/// (bounded by `WAIT`): the load reached the node; the health check saw it
/// dead and the others served on; it came back and served again. The
/// figures are printed for the docs/configuration.md (`cargo test --release
/// --test tests failover::load -- --nocapture`).
#[test]
fn load_with_a_node_killed_and_restarted_loses_no_request() {
    let mut nodes: Vec<Node> = ["a", "b", "c"].iter().map(|n| Node::start(n)).collect();
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream:\n      nodes:\n        \"{}\": 1\n        \"{}\": 1\n        \"{}\": 1\n      checks:\n        active:\n          type: tcp\n          healthy: {{interval: 1, successes: 1}}\n          unhealthy: {{interval: 1, tcp_failures: 1}}\n#END\n",
        nodes[0].addr, nodes[1].addr, nodes[2].addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients = load(gate.addr, 8, stop.clone());
    let phase = |what: &str, cond: &dyn Fn() -> bool| {
        assert!(eventually(WAIT, cond), "{what}\n{}", gate.log());
    };
    phase("the load reached node c", &|| nodes[2].served() >= 50);
    let before_kill = nodes[2].served();
    nodes[2].kill();
    let others = |nodes: &[Node]| nodes[0].served() + nodes[1].served();
    let at_kill = others(&nodes);
    let down = format!("node {} is now unhealthy", nodes[2].addr);
    phase("node c seen dead", &|| gate.log().contains(&down));
    phase("served on without c", &|| others(&nodes) >= at_kill + 200);
    nodes[2].restart();
    phase("node c back in use", &|| nodes[2].served() >= 50);
    stop.store(true, Ordering::SeqCst);
    let mut total = Tally::default();
    for c in clients {
        let t = c.join().unwrap();
        total.ok += t.ok;
        total.lost += t.lost;
        total.statuses.extend(t.statuses);
    }
    let took = started.elapsed();
    let served: Vec<usize> = nodes.iter().map(Node::served).collect();
    let failed = total.lost + total.statuses.len();
    println!(
        "failover load: {} requests in {took:.1?}, {failed} failed ({} lost, statuses {:?}); node c served {before_kill} before the kill, {} after its restart; a, b: {}, {}",
        total.ok + failed,
        total.lost,
        total.statuses,
        served[2],
        served[0],
        served[1]
    );
    assert_eq!(failed, 0, "{total:?}\n{}", gate.log());
}

/// A route to `node` with read (and send) timeout `read` seconds, with
/// `plugins` (a `plugins:` mapping's text, or empty).
fn routes_with_timeout(node: SocketAddr, read: f64, plugins: &str) -> String {
    format!(
        "routes:\n  - id: r\n    uri: /*\n    timeout: {{connect: 1, send: {read}, read: {read}}}\n    upstream: {{nodes: {{\"{node}\": 1}}}}\n{plugins}#END\n"
    )
}

/// The first finding: the node sends its head and 5 bytes, then
/// stalls. `timeout.read` bounds every read from the node, so the client
/// connection is closed after it with a body that cannot look complete
/// (5 of 100 bytes), instead of waiting for the client's own timeout.
#[test]
fn a_body_that_stalls_is_cut_at_the_read_timeout() {
    for (framing, head) in [
        ("length", "content-length: 100\r\n\r\nhello"),
        (
            "chunked",
            "transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ),
    ] {
        let raw = format!("HTTP/1.1 200 OK\r\n{head}").into_bytes();
        let node = Upstream::start(move |_| Behaviour::Respond(raw.clone()));
        let gate = Gate::start(
            &config_yaml(&[], "  access_log: access.log\n"),
            &routes_with_timeout(node.addr, 0.5, ""),
        );
        let mut c = Client::connect(gate.addr);
        c.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let got = c
            .read_to_close(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{framing}: the client connection was left open"));
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{framing}: {text}");
        assert!(
            text.ends_with("hello") || text.ends_with("hello\r\n"),
            "{framing}: {text}"
        );
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        assert!(
            !body.contains("0\r\n\r\n"),
            "{framing}: the body must not end: {text}"
        );
        assert!(gate.wait_for_log("timed out"), "{framing}: {}", gate.log());
        let log = std::fs::read_to_string(gate.dir.join("access.log")).unwrap_or_default();
        let deadline = Instant::now() + WAIT;
        let mut log = log;
        while !log.contains("\"GET / HTTP/1.1\" 200 5 ") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            log = std::fs::read_to_string(gate.dir.join("access.log")).unwrap_or_default();
        }
        assert!(
            log.contains("\"GET / HTTP/1.1\" 200 5 "),
            "{framing}: {log}"
        );
    }
}

/// The same stall while a body plugin holds the response head (it removed
/// `content-length` and buffers the whole body): nothing was sent yet, so
/// the client gets a `504`, and the access log says so; a node that closes
/// mid-body instead gets the client a `502`, never a silent close.
#[test]
fn a_node_failing_while_plugins_hold_the_head_gets_an_answer() {
    let plugins =
        "    plugins:\n      rewrite:\n        conf: '{\"from\": \"x\", \"to\": \"y\"}'\n";
    let partial = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello".to_vec();
    for (status, behaviour) in [(504, "stalls"), (502, "closes")] {
        let raw = partial.clone();
        let node = Upstream::start(move |_| {
            if behaviour == "stalls" {
                Behaviour::Respond(raw.clone())
            } else {
                Behaviour::RespondAndClose(raw.clone())
            }
        });
        let gate = Gate::start(
            &config_yaml(
                &[("rewrite", 1, "body_rewrite")],
                "  access_log: access.log\n",
            ),
            &routes_with_timeout(node.addr, 0.5, plugins),
        );
        let r = gate.get("/");
        assert_eq!(r.status, status, "a node that {behaviour}: {}", r.text());
        let path = gate.dir.join("access.log");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline
            && !std::fs::read_to_string(&path)
                .unwrap_or_default()
                .contains(&format!("\"GET / HTTP/1.1\" {status} "))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            log.contains(&format!("\"GET / HTTP/1.1\" {status} ")),
            "{log}"
        );
    }
}

/// A node that answers the first `answered` requests on each connection
/// and resets the connection when the next one comes (ECONNRESET, not a
/// clean close).
fn resetting_after(answered: usize, name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for n in 0.. {
                    while find(&buf, b"\r\n\r\n").is_none() {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if n >= answered {
                        let _ =
                            rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
                        return; // dropped with linger 0: a reset
                    }
                    if stream.write_all(&ok_response(name)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The "a reset is not retried": an idempotent request on a
/// pooled connection that the node resets is replayed on a fresh
/// connection (5 of 5 were 502 before).
#[test]
fn a_reset_pooled_connection_is_retried() {
    let node = resetting_after(1, "n");
    let routes =
        format!("routes:\n  - {{uri: /*, upstream: {{nodes: {{\"{node}\": 1}}}}}}\n#END\n");
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let mut c = Client::connect(gate.addr);
    for i in 0..5 {
        let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "n"),
            "request {i}\n{}",
            gate.log()
        );
    }
}

/// Sockets on this machine in `CLOSE-WAIT` whose peer is port `port` of
/// 127.0.0.1: connections the peer closed and the local side has not.
fn close_wait_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let peer = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&peer.as_str()) && fields.get(3) == Some(&"08")
        })
        .count()
}

/// The "dead pooled connections pile up": a node closes its idle
/// keep-alive connections; tinygate closes its side at once instead of
/// leaving them in `CLOSE-WAIT` until the next request to that node.
#[test]
fn idle_connections_a_node_closes_do_not_linger_in_close_wait() {
    let node = Node::start("n");
    let routes = format!(
        "routes:\n  - {{uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        node.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let addr = gate.addr;
            std::thread::spawn(move || {
                for _ in 0..3 {
                    assert_eq!(send(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let pooled = node.conns.lock().unwrap().len();
    assert!(pooled >= 2, "several idle connections: {pooled}");
    node.close_connections();
    let deadline = Instant::now() + WAIT;
    while close_wait_to(node.addr.port()) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        close_wait_to(node.addr.port()),
        0,
        "connections left in CLOSE-WAIT"
    );
    assert_eq!(
        gate.get("/").status,
        200,
        "a fresh connection serves the next request"
    );
}

/// A node that resets every request: an idempotent request moves on to
/// the next node; a POST, which may not be replayed, gets a 502.
#[test]
fn a_node_that_resets_is_skipped_only_by_requests_that_may_be_replayed() {
    let resetting = resetting_after(0, "x");
    let good = Upstream::named("good");
    let routes = format!(
        "routes:\n  - {{uri: /*, upstream: {{nodes: {{\"{resetting}\": 1, \"{}\": 1}}}}}}\n#END\n",
        good.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    for _ in 0..10 {
        let r = gate.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "good"));
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = gate.request("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 2\r\n\r\nhi");
        statuses.push(r.status);
    }
    assert!(
        statuses.contains(&502),
        "a POST the node reset is not replayed: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
}

/// `retry_timeout`: retries stop once it has passed since the first try
/// (APISIX answers 502 then); without it every node is tried (504 after
/// the last read timeout).
#[test]
fn retry_timeout_bounds_how_long_retries_go_on() {
    let nodes: Vec<Upstream> = (0..3)
        .map(|_| Upstream::start(|_| Behaviour::Hang))
        .collect();
    let list = nodes
        .iter()
        .map(|n| format!("\"{}\": 1", n.addr))
        .collect::<Vec<_>>()
        .join(", ");
    let routes = |retry_timeout: &str| {
        format!(
            "routes:\n  - uri: /*\n    timeout: {{connect: 1, send: 1, read: 0.4}}\n    upstream:\n      {retry_timeout}nodes: {{{list}}}\n#END\n"
        )
    };
    let gate = Gate::start(&config_yaml(&[], ""), &routes("retry_timeout: 0.6\n      "));
    assert_eq!(gate.get("/").status, 502);
    let reached: usize = nodes.iter().map(Upstream::count).sum();
    assert_eq!(reached, 2, "the third try would start after retry_timeout");
    drop(gate);
    let gate = Gate::start(&config_yaml(&[], ""), &routes(""));
    assert_eq!(gate.get("/").status, 504);
    let reached: usize = nodes.iter().map(Upstream::count).sum();
    assert_eq!(reached, 2 + 3, "every node tried once");
}

/// `proxy_http_call` timeouts hold the same way: a call to a node that
/// sends its head and 5 bytes, then stalls, fails at the call's timeout
/// (the plugin sees no response and answers 503), instead of holding the
/// request.
#[test]
fn a_plugin_call_to_a_node_that_stalls_mid_body_fails_at_its_timeout() {
    let stalling = Upstream::start(|_| {
        Behaviour::Respond(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello".to_vec())
    });
    let app = Upstream::named("app");
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      auth:\n        conf: '{{\"upstream\": \"{}\", \"timeout_ms\": 300}}'\n#END\n",
        app.addr, stalling.addr
    );
    let gate = Gate::start(&config_yaml(&[("auth", 1, "auth_callout")], ""), &routes);
    let r = gate.get("/");
    assert_eq!((r.status, r.text().as_str()), (503, "auth unavailable\n"));
    assert_eq!((app.count(), stalling.count()), (0, 1));
}
