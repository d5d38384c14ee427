//! Active checks: one thread for the whole process (not one per worker)
//! with its own reactor, probing the nodes of every upstream that has
//! `checks.active`.
//!
//! As lua-resty-healthcheck runs them for APISIX: every 100 ms the thread
//! looks at each upstream; when `healthy.interval` has passed since its
//! last round of healthy nodes, the nodes that are healthy (or mostly) are
//! probed, and likewise for unhealthy nodes with `unhealthy.interval`. The
//! first round comes one interval after an upstream appears. A round
//! probes at most `concurrency` nodes at once; a node still being probed
//! (a slow one near its timeout) is not probed again until that probe
//! ends. A probe connects (TCP failure or timeout), for `https` makes the
//! TLS handshake (a failure, a certificate that does not verify included,
//! is a TCP failure, as lua-resty-healthcheck counts it), and for `http`
//! and `https` sends `http_method http_path` with `Connection: close`,
//! `req_headers` and `Host`, and reads the status line within `timeout`
//! (each step has the whole `timeout`); a status in neither list does not
//! count. An `https` probe sends the `Host`'s name as SNI and verifies the
//! certificate for it (unless `https_verify_certificate: false`).
//!
//! It knows sockets and the probe's bytes; results go to the node's
//! [`Target`](super::Target).

use super::{checked, threshold, ActiveCheck, Checks, Probe, Report, Watched, WatchedNode};
use crate::http::ReadBuf;
use crate::net::{with_timeout, Timer};
use crate::upstream::{self, Dial, Tls};
use smol::io::{AsyncRead, AsyncWriteExt};
use smol::LocalExecutor;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often the checker looks for rounds that are due.
const TICK: Duration = Duration::from_millis(100);

/// Longest status line read from a probed node.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// Starts the checker thread, once per process.
pub(super) fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let reactor = match crate::net::prepare() {
            Ok(r) => r,
            Err(e) => {
                log::error!("health checks cannot start: {e}");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("health-checker".into())
            .spawn(move || {
                let executor = Rc::new(LocalExecutor::new());
                reactor.block_on(executor.run(run(Rc::clone(&executor))));
            });
        if let Err(e) = spawned {
            log::error!("health checks cannot start: {e}");
        }
    });
}

/// When an upstream's rounds last ran, and with which checks.
struct Clock {
    checks: Arc<Checks>,
    healthy: Instant,
    unhealthy: Instant,
}

/// Runs rounds as they fall due, forever.
async fn run(executor: Rc<LocalExecutor<'static>>) {
    let mut clocks: HashMap<String, Clock> = HashMap::new();
    // (upstream, node) probes under way.
    let busy: Rc<RefCell<HashSet<(String, SocketAddr)>>> = Rc::default();
    loop {
        Timer::after(TICK).await;
        let now = Instant::now();
        let watched: Vec<Arc<Watched>> = checked();
        clocks.retain(|name, _| watched.iter().any(|w| &w.name == name));
        for up in &watched {
            let Some(checks) = &up.checks else { continue };
            let clock = clocks.entry(up.name.clone()).or_insert_with(|| Clock {
                checks: Arc::clone(checks),
                healthy: now,
                unhealthy: now,
            });
            if !Arc::ptr_eq(&clock.checks, checks) && *clock.checks != **checks {
                // New settings: the first round is one interval away again.
                *clock = Clock {
                    checks: Arc::clone(checks),
                    healthy: now,
                    unhealthy: now,
                };
            }
            clock.checks = Arc::clone(checks);
            let a = &checks.active;
            let healthy_due = now.duration_since(clock.healthy) >= a.healthy_interval;
            let unhealthy_due = now.duration_since(clock.unhealthy) >= a.unhealthy_interval;
            if healthy_due {
                clock.healthy = now;
            }
            if unhealthy_due {
                clock.unhealthy = now;
            }
            let due: Vec<usize> = (0..up.nodes.len())
                .filter(|&i| {
                    let usable = up.nodes[i].target.is_usable();
                    (usable && healthy_due) || (!usable && unhealthy_due)
                })
                .filter(|&i| {
                    busy.borrow_mut()
                        .insert((up.name.clone(), up.nodes[i].probe_addr))
                })
                .collect();
            if !due.is_empty() {
                spawn_round(&executor, up, due, &busy);
            }
        }
    }
}

/// Probes nodes `due` of `up`, `concurrency` at a time.
fn spawn_round(
    executor: &LocalExecutor<'static>,
    up: &Arc<Watched>,
    due: Vec<usize>,
    busy: &Rc<RefCell<HashSet<(String, SocketAddr)>>>,
) {
    let Some(checks) = &up.checks else { return };
    let lanes = checks.active.concurrency.max(1);
    let mut packages: Vec<Vec<usize>> = vec![Vec::new(); lanes.min(due.len())];
    for (k, i) in due.into_iter().enumerate() {
        packages[k % lanes].push(i);
    }
    for package in packages {
        let up = Arc::clone(up);
        let busy = Rc::clone(busy);
        executor
            .spawn(async move {
                for i in package {
                    let node = &up.nodes[i];
                    if let Some(checks) = &up.checks {
                        check_node(&up.name, &checks.active, node).await;
                    }
                    busy.borrow_mut()
                        .remove(&(up.name.clone(), node.probe_addr));
                }
            })
            .detach();
    }
}

/// Probes one node and records what the probe found.
async fn check_node(name: &str, check: &ActiveCheck, node: &WatchedNode) {
    let host = node.host_header.as_deref().unwrap_or(&node.hostname);
    let Some(report) = probe(check, node.probe_addr, host).await else {
        return;
    };
    let limit = threshold(&check.counting, report);
    log::debug!(
        "health check of {name} node {}: {report:?}",
        node.probe_addr
    );
    if let Some(((_, to), count)) = node.target.report(report, limit) {
        super::log_transition(name, node.target.addr, to, report, count, limit, "active");
    }
}

/// One probe of `addr`: what it found, or `None` for a status that counts
/// neither way.
pub(super) async fn probe(check: &ActiveCheck, addr: SocketAddr, host: &str) -> Option<Report> {
    let failure = |e: io::Error| {
        Some(if e.kind() == io::ErrorKind::TimedOut {
            Report::Timeout
        } else {
            Report::TcpFailure
        })
    };
    let tls = check.tls.as_ref().and_then(|t| t.connector());
    let dial = Dial {
        addr,
        tls: tls.map(|connector| Tls {
            connector,
            server_name: crate::tls::host_of(host),
        }),
    };
    let mut conn = match upstream::dial(&dial, check.timeout).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    if check.probe == Probe::Tcp {
        return Some(Report::Success);
    }
    let request = probe_request(check, host);
    if let Err(e) = with_timeout(check.timeout, conn.stream.write_all(&request)).await {
        return failure(e);
    }
    let line = status_line(&mut conn.buf, &mut conn.stream);
    let status = match with_timeout(check.timeout, line).await {
        Ok(line) => parse_status(&line),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => 0,
        Err(e) => return failure(e),
    };
    super::classify_status(&check.counting, status)
}

/// The bytes of an HTTP probe, as lua-resty-healthcheck writes them.
fn probe_request(check: &ActiveCheck, host: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(check.http_method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(check.http_path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in &check.req_headers {
        crate::http::write_header(&mut out, name.as_bytes(), value.as_bytes());
    }
    crate::http::write_header(&mut out, b"Host", host.as_bytes());
    if !check.http_req_body.is_empty() {
        out.extend_from_slice(b"Content-Length: ");
        crate::http::push_decimal(&mut out, check.http_req_body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(check.http_req_body.as_bytes());
    out
}

/// Reads up to the end of the first line.
async fn status_line<S: AsyncRead + Unpin>(
    buf: &mut ReadBuf,
    reader: &mut S,
) -> io::Result<Vec<u8>> {
    loop {
        if let Some(end) = buf.data().iter().position(|&b| b == b'\n') {
            return Ok(buf.data()[..end].to_vec());
        }
        if buf.data().len() > MAX_STATUS_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "status line too long",
            ));
        }
        if buf.fill(reader).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed before a status line",
            ));
        }
    }
}

/// The status of `HTTP/x.y NNN ...`; 0 when the line is not one.
fn parse_status(line: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_ascii_whitespace();
    let version_ok = words.next().is_some_and(|v| {
        v.strip_prefix("HTTP/")
            .and_then(|n| n.split_once('.'))
            .is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && (a.to_string() + b).bytes().all(|c| c.is_ascii_digit())
            })
    });
    let status = words
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse().ok());
    match (version_ok, status) {
        (true, Some(s)) => s,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Counting;

    fn check(probe: Probe) -> ActiveCheck {
        ActiveCheck {
            probe,
            tls: None,
            timeout: Duration::from_millis(500),
            concurrency: 10,
            host: None,
            port: None,
            http_method: "GET".into(),
            http_path: "/health".into(),
            http_req_body: String::new(),
            req_headers: vec![("User-Agent".into(), "probe".into())],
            healthy_interval: Duration::from_secs(1),
            unhealthy_interval: Duration::from_secs(1),
            counting: Counting::active_defaults(),
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r"), 200);
        assert_eq!(parse_status(b"HTTP/1.0 503"), 503);
        assert_eq!(parse_status(b"HTTP/1.1 2000 OK"), 0);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), 0);
        assert_eq!(parse_status(b""), 0);
    }

    #[test]
    fn the_probe_request_is_what_lua_resty_healthcheck_sends() {
        let mut c = check(Probe::Http);
        assert_eq!(
            String::from_utf8(probe_request(&c, "foo.com")).unwrap(),
            "GET /health HTTP/1.1\r\nConnection: close\r\nUser-Agent: probe\r\nHost: foo.com\r\n\r\n"
        );
        c.http_method = "POST".into();
        c.http_req_body = "ping".into();
        c.req_headers.clear();
        assert_eq!(
            String::from_utf8(probe_request(&c, "h")).unwrap(),
            "POST /health HTTP/1.1\r\nConnection: close\r\nHost: h\r\nContent-Length: 4\r\n\r\nping"
        );
    }

    /// A probe against real sockets: a node that answers 200, 500, a
    /// garbage line, nothing, or refuses the connection.
    #[test]
    fn probes_classify_what_nodes_do() {
        use std::io::{Read, Write};
        fn serve(answer: &'static [u8]) -> SocketAddr {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            std::thread::spawn(move || {
                for s in l.incoming() {
                    let Ok(mut s) = s else { return };
                    let mut b = [0u8; 1024];
                    let _ = s.read(&mut b);
                    if answer.is_empty() {
                        std::thread::sleep(Duration::from_secs(2));
                    }
                    let _ = s.write_all(answer);
                }
            });
            addr
        }
        let ok = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let broken = serve(b"HTTP/1.1 500 Oops\r\n\r\n");
        let garbage = serve(b"hello\r\n");
        let silent = serve(b"");
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let http = check(Probe::Http);
        let tcp = check(Probe::Tcp);
        crate::net::block_on(async {
            assert_eq!(probe(&http, ok, "h").await, Some(Report::Success));
            assert_eq!(probe(&http, broken, "h").await, Some(Report::HttpFailure));
            assert_eq!(probe(&http, garbage, "h").await, Some(Report::HttpFailure));
            assert_eq!(probe(&http, silent, "h").await, Some(Report::Timeout));
            assert_eq!(probe(&http, refused, "h").await, Some(Report::TcpFailure));
            assert_eq!(probe(&tcp, silent, "h").await, Some(Report::Success));
            assert_eq!(probe(&tcp, refused, "h").await, Some(Report::TcpFailure));
            let mut only_500 = check(Probe::Http);
            only_500.counting.unhealthy_statuses = vec![503];
            assert_eq!(
                probe(&only_500, broken, "h").await,
                None,
                "500 counts neither way"
            );
        })
        .unwrap();
    }
}
