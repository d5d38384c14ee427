//! Test harness: the real `tinygate` binary on loopback port 0, real
//! upstream servers on loopback port 0, and a raw-bytes HTTP client.
//!
//! Readiness is the `listening on ADDR` line on the proxy's stdout, never a
//! sleep. Upstreams are plain threaded std servers so tests control every
//! byte they send and see every byte they receive.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Absolute path of a committed fixture plugin.
pub fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}.wasm", env!("CARGO_MANIFEST_DIR"))
}

/// A fresh, empty directory for one test's files.
pub fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tinygate-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// `config.yaml` text listening on 127.0.0.1:0 with these wasm plugins
/// (`(name, priority, fixture name)`) and extra text appended.
pub fn config_yaml(plugins: &[(&str, i64, &str)], extra: &str) -> String {
    let mut s = String::from("apisix:\n  node_listen:\n    - {ip: 127.0.0.1, port: 0}\n");
    if !plugins.is_empty() {
        s.push_str("wasm:\n  plugins:\n");
        for (name, priority, file) in plugins {
            s.push_str(&format!(
                "    - {{name: {name}, priority: {priority}, file: \"{}\"}}\n",
                fixture(file)
            ));
        }
    }
    s.push_str("tinygate:\n  workers: 2\n");
    s.push_str(extra);
    s
}

/// A running tinygate process.
pub struct Gate {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    stderr: Arc<Mutex<StderrLog>>,
    /// Every `listening on` line after the first, as printed.
    more_listeners: Arc<Mutex<Vec<String>>>,
}

impl Gate {
    /// Writes both files into a temp dir and starts tinygate on them.
    pub fn start(config: &str, routes: &str) -> Gate {
        let dir = temp_dir();
        std::fs::write(dir.join("config.yaml"), config).unwrap();
        std::fs::write(dir.join("apisix.yaml"), routes).unwrap();
        Gate::start_in(dir)
    }

    /// Starts tinygate on `dir/config.yaml`.
    pub fn start_in(dir: PathBuf) -> Gate {
        Gate::start_in_capturing_stdout(dir).0
    }

    /// Everything tinygate logged so far: every line it wrote before this
    /// call, including those of the request whose response the test just
    /// read (see [`StderrLog`]). Lines it writes after a response (the
    /// access log) need [`Gate::wait_for_log`].
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().text()
    }

    /// Waits (bounded: [`WAIT`]) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// One request on a new connection.
    pub fn request(&self, raw: &str) -> Response {
        send(self.addr, raw.as_bytes())
    }

    /// `GET path` with `Host: host`.
    pub fn get(&self, path: &str) -> Response {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The status listener's address (`status_listen`, e.g. port 0), from
    /// the start-up log.
    pub fn status_addr(&self) -> SocketAddr {
        let line = "status and metrics on http://";
        assert!(
            self.wait_for_log(line),
            "no status listener: {}",
            self.log()
        );
        let log = self.log();
        let rest = log.split(line).nth(1).expect("the status line");
        rest.split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("the status listener's address")
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// tinygate's stderr as far as the test has read it.
///
/// Reading happens under the lock, both on a thread (so that the pipe never
/// fills and blocks tinygate) and in [`StderrLog::text`], which first takes
/// whatever the pipe holds: a line tinygate wrote before it sent a response
/// is in the log a test reads after that response, and after tinygate has
/// exited the log is whole.
pub struct StderrLog {
    pipe: std::process::ChildStderr,
    bytes: Vec<u8>,
    closed: bool,
}

impl StderrLog {
    /// Follows `pipe` (set non-blocking) on a thread of its own.
    fn follow(pipe: std::process::ChildStderr) -> Arc<Mutex<StderrLog>> {
        rustix::io::ioctl_fionbio(&pipe, true).expect("a non-blocking stderr pipe");
        let readable = std::os::fd::AsFd::as_fd(&pipe)
            .try_clone_to_owned()
            .expect("dup the stderr pipe");
        let log = Arc::new(Mutex::new(StderrLog {
            pipe,
            bytes: Vec::new(),
            closed: false,
        }));
        let follower = Arc::clone(&log);
        std::thread::spawn(move || loop {
            use rustix::event::{poll, PollFd, PollFlags};
            let mut fds = [PollFd::new(&readable, PollFlags::IN)];
            match poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => panic!("poll tinygate's stderr: {e}"),
            }
            let mut log = follower.lock().unwrap();
            log.drain();
            if log.closed {
                return;
            }
        });
        log
    }

    /// Appends what the pipe holds now, without waiting.
    fn drain(&mut self) {
        let mut chunk = [0u8; 16384];
        while !self.closed {
            match self.pipe.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => self.closed = true,
            }
        }
    }

    /// Everything read so far, after reading what the pipe holds.
    fn text(&mut self) -> String {
        self.drain();
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// The `tinygate` command the tests run: `TINYGATE_BIN` if set (another
/// build, e.g. a static aarch64 one), else the binary cargo built; started
/// through `TINYGATE_RUNNER` (e.g. `qemu-aarch64`) if that is set.
pub fn tinygate() -> Command {
    let bin = std::env::var("TINYGATE_BIN").unwrap_or(env!("CARGO_BIN_EXE_tinygate").into());
    let runner = std::env::var("TINYGATE_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// True when the tests run tinygate through `TINYGATE_RUNNER` (an
/// emulator), so [`Gate::pid`] is the emulator's process.
pub fn under_runner() -> bool {
    std::env::var("TINYGATE_RUNNER").is_ok_and(|r| !r.trim().is_empty())
}

/// Runs `tinygate` with `args` to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = tinygate().args(args).output().expect("run tinygate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How long a test waits for something it expects (an answer, a close, a
/// reload, a log line, an exit) before it fails. It bounds a wait and
/// never measures speed: far longer than any stall of a loaded 2-core CI
/// machine, and shorter than tinygate's default timeouts (60 s), which
/// would otherwise bring the event late and let a test pass that should
/// fail.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `cond` every 20 ms until it holds (true) or `within` passes
/// (false): for state that changes after a request, never as a sleep.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `raw` on a new connection and reads one response.
pub fn send(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.write(raw);
    c.read_response(raw.starts_with(b"HEAD "))
}

/// How long a [`Client`] waits for bytes before it gives up on a
/// response, unless a test that waits on purpose asks for longer.
const CLIENT_READ_TIMEOUT: Duration = WAIT;

/// A keep-alive client connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    read_timeout: Duration,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(CLIENT_READ_TIMEOUT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            read_timeout: CLIENT_READ_TIMEOUT,
        }
    }

    /// Waits up to `timeout` for each read instead: longer than any bound
    /// on the server's side that the test checks, so that a slow answer
    /// fails the test's assertion (with the time it took), not a read.
    pub fn with_read_timeout(mut self, timeout: Duration) -> Client {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        self.read_timeout = timeout;
        self
    }

    /// The client's own port (the proxy sees it as `source.port`).
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local address").port()
    }

    pub fn write(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write request");
    }

    /// Sends `raw` and reads one response.
    pub fn request(&mut self, raw: &str) -> Response {
        self.write(raw.as_bytes());
        self.read_response(raw.starts_with("HEAD "))
    }

    fn fill(&mut self) -> bool {
        let mut b = [0u8; 16384];
        match self.stream.read(&mut b) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
        }
    }

    /// Reads one response (interim 1xx responses are skipped).
    pub fn read_response(&mut self, head_request: bool) -> Response {
        loop {
            let r = self.read_one(head_request);
            if !(100..200).contains(&r.status) {
                return r;
            }
        }
    }

    fn read_one(&mut self, head_request: bool) -> Response {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill(),
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').expect("header line");
                (k.to_string(), v.trim().to_string())
            })
            .collect();
        let mut r = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status < 200 || status == 204 || status == 304 {
            return r;
        }
        if r.header("transfer-encoding").is_some() {
            r.body = self.read_chunked();
        } else if let Some(len) = r.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill(), "connection closed inside a body");
            }
            r.body = self.buf.drain(..len).collect();
        } else {
            while self.fill() {}
            r.body = std::mem::take(&mut self.buf);
        }
        r
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                assert!(self.fill(), "connection closed inside a chunked body");
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .expect("chunk size");
            self.buf.drain(..line_end + 2);
            if size == 0 {
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        assert!(self.fill(), "connection closed inside trailers");
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return body;
                    }
                }
            }
            while self.buf.len() < size + 2 {
                assert!(self.fill(), "connection closed inside a chunk");
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub target: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The raw head bytes.
    pub head: String,
    /// The proxy's address on this connection.
    pub peer: SocketAddr,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What an upstream does with a request.
pub enum Behaviour {
    /// Answer with these raw bytes, keeping the connection.
    Respond(Vec<u8>),
    /// Never answer (keep the connection open, read nothing more).
    Hang,
    /// Answer with these bytes, then close.
    RespondAndClose(Vec<u8>),
}

type Handler = dyn Fn(&Received) -> Behaviour + Send + Sync;

/// A real HTTP/1.1 upstream on 127.0.0.1:0 that records what it gets.
pub struct Upstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Upstream {
    /// Answers every request with `handler`'s behaviour.
    pub fn start(handler: impl Fn(&Received) -> Behaviour + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve(stream, &*handler, &log));
            }
        });
        Upstream { addr, received }
    }

    /// An upstream answering 200 with `body` and header `x-upstream: name`.
    pub fn named(name: &str) -> Upstream {
        let name = name.to_string();
        Upstream::start(move |_| Behaviour::Respond(ok_response(&name)))
    }

    /// An upstream that echoes the request body back.
    pub fn echo() -> Upstream {
        Upstream::start(|r| {
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                r.body.len()
            )
            .into_bytes();
            out.extend_from_slice(&r.body);
            Behaviour::Respond(out)
        })
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn last(&self) -> Received {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream received nothing")
    }
}

/// `200 OK` with `x-upstream: name` and body `name`.
pub fn ok_response(name: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nx-upstream: {name}\r\ncontent-length: {}\r\n\r\n{name}",
        name.len()
    )
    .into_bytes()
}

fn serve(mut stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Received>>) {
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut stream, &mut buf) else {
            return;
        };
        log.lock().unwrap().push(req.clone());
        match handler(&req) {
            Behaviour::Respond(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            Behaviour::RespondAndClose(bytes) => {
                let _ = stream.write_all(&bytes);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Behaviour::Hang => {
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Received> {
    let fill = |stream: &mut TcpStream, buf: &mut Vec<u8>| -> bool {
        let mut b = [0u8; 16384];
        match stream.read(&mut b) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&b[..n]);
                true
            }
        }
    };
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(stream, buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        let len: usize = len.parse().ok()?;
        while buf.len() < len {
            if !fill(stream, buf) {
                return None;
            }
        }
        body = buf.drain(..len).collect();
    } else if get("transfer-encoding").is_some() {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                if !fill(stream, buf) {
                    return None;
                }
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&buf[..line_end])
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                while find(buf, b"\r\n").is_none() {
                    if !fill(stream, buf) {
                        return None;
                    }
                }
                let e = find(buf, b"\r\n").unwrap();
                buf.drain(..e + 2);
                break;
            }
            while buf.len() < size + 2 {
                if !fill(stream, buf) {
                    return None;
                }
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
        }
    }
    Some(Received {
        method,
        target,
        headers,
        body,
        head,
        peer: stream.peer_addr().ok()?,
    })
}

// ---- Loopback ports a test holds for as long as it needs them ----
//
// A port is only ever named by a socket the test keeps bound, never by one
// it let go of: a dropped listener's port is free again at once, and a test
// running beside this one (cargo runs them in parallel) may bind it and
// answer where this test expects nothing.

/// A loopback port where nothing listens for as long as this value lives:
/// connects to [`ClosedPort::addr`] are refused.
///
/// A socket is bound to the port and never listens. While it is bound the
/// kernel gives the port to no other socket: not to a bind to port 0 (any
/// test's listener, any tinygate's), not to an outgoing connect, and,
/// since it does not set `SO_REUSEADDR`, not to a bind naming the port.
pub struct ClosedPort {
    socket: OwnedFd,
    pub addr: SocketAddr,
}

impl ClosedPort {
    pub fn reserve() -> ClosedPort {
        let (socket, addr) = bound_loopback_socket(false);
        ClosedPort { socket, addr }
    }

    /// Starts listening on the same port (a node that comes back): no other
    /// socket can have taken it in between.
    pub fn listen(self) -> TcpListener {
        rustix::net::listen(&self.socket, 128).expect("listen on the reserved port");
        TcpListener::from(self.socket)
    }
}

/// A loopback port for a server the test starts on an address it must
/// know first (tinygate's demo upstream named in a routes file, etcd, a
/// node restarted on its port): no other socket can take the port for as
/// long as this value lives, so hold it until the server is done with it.
///
/// A socket is bound to the port with `SO_REUSEADDR` and never listens.
/// A bind to port 0 and an outgoing connect never get a port that is
/// bound; a bind naming the port succeeds only for a socket that sets
/// `SO_REUSEADDR` too, and Linux lets that socket listen beside this one.
/// std's `TcpListener::bind` (tinygate's listeners, the tests' servers)
/// and Go's `net.Listen` (etcd) set it.
pub struct PortForServer {
    _socket: OwnedFd,
    pub addr: SocketAddr,
}

impl PortForServer {
    pub fn reserve() -> PortForServer {
        let (socket, addr) = bound_loopback_socket(true);
        PortForServer {
            _socket: socket,
            addr,
        }
    }
}

/// A TCP socket bound to 127.0.0.1 on a port the kernel picks, not
/// listening, closed on exec; `SO_REUSEADDR` as asked.
fn bound_loopback_socket(reuse_address: bool) -> (OwnedFd, SocketAddr) {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    // CLOEXEC: the tinygate a test starts must not hold the port too.
    let socket = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("a TCP socket");
    rustix::net::sockopt::set_socket_reuseaddr(&socket, reuse_address).expect("SO_REUSEADDR");
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    rustix::net::bind(&socket, &any_port).expect("bind 127.0.0.1:0");
    let addr = rustix::net::getsockname(&socket)
        .ok()
        .and_then(|a| SocketAddr::try_from(a).ok())
        .expect("the bound address");
    (socket, addr)
}

/// A count that test threads raise and wait on, bounded: an upstream that
/// holds its answer until the test has checked what it must see while the
/// request is in flight (instead of sleeping and hoping the check came
/// first), or until enough requests are in flight at once.
#[derive(Clone, Default)]
pub struct Checkpoint(Arc<(Mutex<usize>, std::sync::Condvar)>);

impl Checkpoint {
    pub fn new() -> Checkpoint {
        Checkpoint::default()
    }

    /// Raises the count by one and wakes the waiters.
    pub fn pass(&self) {
        let (count, changed) = &*self.0;
        *count.lock().unwrap() += 1;
        changed.notify_all();
    }

    /// Waits until the count is at least `n`; false if `within` passed
    /// first.
    pub fn wait_for(&self, n: usize, within: Duration) -> bool {
        let (count, changed) = &*self.0;
        let guard = count.lock().unwrap();
        let (guard, _) = changed
            .wait_timeout_while(guard, within, |c| *c < n)
            .unwrap();
        *guard >= n
    }
}

/// Replaces `path` at once (write a temporary file, then rename), as
/// deployment tools do, so tinygate's poll never sees a half-written file.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The file's content with `path` replaced in `conf/` style tests.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

// ---- Helpers for the edge and ops tests (signals, exits, raw upstreams) ----

impl Gate {
    /// Sends `signal` to the tinygate process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a positive pid");
        rustix::process::kill_process(pid, signal).expect("send a signal to tinygate");
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None`
    /// if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts tinygate on `dir/config.yaml` and keeps what it writes to
    /// stdout after its `listening on` line (e.g. an access log on stdout).
    pub fn start_in_capturing_stdout(dir: PathBuf) -> (Gate, Arc<Mutex<String>>) {
        let log = std::env::var("TEST_RUST_LOG").unwrap_or("info".into());
        Gate::start_in_logging(dir, &log)
    }

    /// Writes both files into a temp dir and starts tinygate on them with
    /// `RUST_LOG` set to `log` (a test that waits for a `debug` line).
    pub fn start_logging(config: &str, routes: &str, log: &str) -> Gate {
        let dir = temp_dir();
        std::fs::write(dir.join("config.yaml"), config).unwrap();
        std::fs::write(dir.join("apisix.yaml"), routes).unwrap();
        Gate::start_in_logging(dir, log).0
    }

    // The child is killed and waited for in `Drop` (or here when it does
    // not start), which the lint cannot see.
    #[allow(clippy::zombie_processes)]
    fn start_in_logging(dir: PathBuf, log: &str) -> (Gate, Arc<Mutex<String>>) {
        let mut child = tinygate()
            .arg("-c")
            .arg(dir.join("config.yaml"))
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tinygate");
        let stderr = StderrLog::follow(child.stderr.take().unwrap());
        let stdout = Arc::new(Mutex::new(String::new()));
        let more_listeners = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        let kept = Arc::clone(&stdout);
        let more = Arc::clone(&more_listeners);
        std::thread::spawn(move || {
            let mut first = true;
            for line in out.lines().map_while(Result::ok) {
                match line.strip_prefix("listening on ") {
                    Some(addr) if first => {
                        first = false;
                        let _ = tx.send(addr.trim().to_string());
                    }
                    Some(addr) => more.lock().unwrap().push(addr.trim().to_string()),
                    None => {
                        let mut s = kept.lock().unwrap();
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let status = child.wait();
            panic!(
                "tinygate did not start listening ({status:?});\nconfig:\n{}\nstderr:\n{}",
                std::fs::read_to_string(dir.join("config.yaml")).unwrap_or_default(),
                stderr.lock().unwrap().text()
            );
        };
        let gate = Gate {
            child,
            addr: addr.parse().expect("listening address"),
            dir,
            stderr,
            more_listeners,
        };
        (gate, stdout)
    }

    /// The address of the first HTTPS listener (`listening on ADDR
    /// (https)`, printed with the others, after the plain ones).
    pub fn https_addr(&self) -> SocketAddr {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let lines = self.more_listeners.lock().unwrap().clone();
            if let Some(addr) = lines.iter().find_map(|l| l.strip_suffix(" (https)")) {
                return addr.parse().expect("an HTTPS listening address");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no HTTPS listener printed; other listeners: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Client {
    /// Reads the next response, interim 1xx responses included.
    pub fn read_interim(&mut self) -> Response {
        self.read_one(false)
    }

    /// True when the server closes the connection (FIN or reset) within
    /// `within`, after any bytes still unread; false if it stays open or
    /// sends more.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut b = [0u8; 64];
        let r = self.stream.read(&mut b);
        self.stream
            .set_read_timeout(Some(self.read_timeout))
            .unwrap();
        match r {
            Ok(0) => self.buf.is_empty(),
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
        }
    }

    /// Everything the server sends until it closes the connection (or
    /// `within` passes: then `None`), after what is already buffered. The
    /// client's own read timeout is back in place afterwards.
    pub fn read_to_close(&mut self, within: Duration) -> Option<Vec<u8>> {
        let wire = self.read_until_close(within);
        self.stream
            .set_read_timeout(Some(self.read_timeout))
            .unwrap();
        wire
    }

    /// [`Client::read_to_close`], leaving the socket's read timeout at
    /// whatever was left of `within`.
    fn read_until_close(&mut self, within: Duration) -> Option<Vec<u8>> {
        let deadline = std::time::Instant::now() + within;
        let mut out = std::mem::take(&mut self.buf);
        let mut b = [0u8; 16384];
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut b) {
                Ok(0) => return Some(out),
                Ok(n) => out.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(out),
                Err(_) => return None,
            }
        }
    }

    /// The underlying socket (e.g. to shut down the write side).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// A raw-TCP upstream on 127.0.0.1:0: every accepted connection goes to
/// `script` on its own thread, which reads and writes exactly the bytes a
/// test is about (a response cut short, a reset, a close with no answer).
pub struct Scripted {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
}

/// One connection of a [`Scripted`] upstream.
pub struct ScriptConn {
    pub stream: TcpStream,
    /// 0 for the first connection the upstream accepted, then 1, ...
    pub index: usize,
    buf: Vec<u8>,
    log: Arc<Mutex<Vec<Received>>>,
}

impl ScriptConn {
    /// Reads one whole request (head and body) and records it; `None` when
    /// the proxy closed first.
    pub fn read_request(&mut self) -> Option<Received> {
        let r = read_request(&mut self.stream, &mut self.buf)?;
        self.log.lock().unwrap().push(r.clone());
        Some(r)
    }

    /// Writes `bytes`; false if the proxy has gone.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok() && self.stream.flush().is_ok()
    }

    /// Closes with a TCP reset instead of a FIN (SO_LINGER 0).
    pub fn reset(self) {
        let _ = rustix::net::sockopt::set_socket_linger(&self.stream, Some(Duration::ZERO));
        drop(self.stream);
    }
}

impl Scripted {
    pub fn start(script: impl Fn(ScriptConn) + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let (log, count) = (Arc::clone(&received), Arc::clone(&connections));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let conn = ScriptConn {
                    stream,
                    index: count.fetch_add(1, Ordering::SeqCst),
                    buf: Vec::new(),
                    log: Arc::clone(&log),
                };
                let script = Arc::clone(&script);
                std::thread::spawn(move || script(conn));
            }
        });
        Scripted {
            addr,
            received,
            connections,
        }
    }

    /// Requests the scripts have read.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// `apisix.yaml` text with one route `/*` (id `r`) to the node `addr`.
pub fn route_to(addr: SocketAddr) -> String {
    format!("routes:\n  - {{id: r, uri: /*, upstream: {{nodes: {{\"{addr}\": 1}}}}}}\n#END\n")
}
