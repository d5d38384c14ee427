//! Operations (issue #5): hot reload of `apisix.yaml` (file poll and
//! `SIGHUP`) without losing a request, graceful drain on `SIGTERM`/`SIGINT`
//! and the forced exit on a second signal, and the access log (combined
//! and JSON lines, file or stdout, reopened on `SIGUSR1`).

use crate::util::*;
use rustix::process::Signal;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds or `within` passes.
fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn occurrences(gate: &Gate, needle: &str) -> usize {
    gate.log().matches(needle).count()
}

/// One GET on a keep-alive stream, without panicking: (status, body).
fn try_get(stream: &mut TcpStream, buf: &mut Vec<u8>, path: &str) -> Result<(u16, String), String> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut b = [0u8; 4096];
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut b) {
            Ok(0) => return Err(format!("closed; got {:?}", String::from_utf8_lossy(buf))),
            Ok(n) => buf.extend_from_slice(&b[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad head {head:?}"))?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no content-length in {head:?}"))?;
    while buf.len() < len {
        match stream.read(&mut b) {
            Ok(0) => return Err("closed inside a body".into()),
            Ok(n) => buf.extend_from_slice(&b[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let body = String::from_utf8_lossy(&buf[..len]).into_owned();
    buf.drain(..len);
    Ok((status, body))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// The routes file of one version: `/v` goes to `node`, which answers
/// with the version's name.
fn version_file(node: SocketAddr) -> String {
    format!(
        "routes:\n  - id: v\n    uri: /v\n    upstream_id: u\nupstreams:\n  - id: u\n    nodes:\n      \"{node}\": 1\n#END\n"
    )
}

/// A version with invalid routes and an invalid upstream next to the good
/// ones: the bad items are skipped, `/v` still applies.
fn version_file_with_bad_items(node: SocketAddr) -> String {
    format!(
        "routes:\n  - id: bad-ref\n    uri: /bad\n    upstream_id: nope\n  - id: v\n    uri: /v\n    upstream_id: u\n  - id: bad-key\n    uri: /bad2\n    bogus: 1\n    upstream_id: u\nupstreams:\n  - id: u\n    nodes:\n      \"{node}\": 1\n  - id: broken\n    nodes:\n      \"127.0.0.1:99999\": 1\n#END\n"
    )
}

/// What a step of the reload test writes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Valid,
    ValidWithBadItems,
    NoEndMarker,
    BadYaml,
}

/// Ten rewrites of `apisix.yaml` (some invalid: no `#END`, bad YAML; some
/// with a bad route next to good ones), applied by the 1 s poll or by
/// `SIGHUP`, while two clients (one keep-alive, one new connection per
/// request) send requests non-stop. No request fails, every answer names a
/// version that was valid, and no client ever sees an older version after
/// a newer one.
#[test]
fn reload_under_load_loses_nothing_and_serves_only_valid_versions() {
    let steps: [(Kind, bool); 10] = [
        (Kind::Valid, false),
        (Kind::NoEndMarker, false),
        (Kind::Valid, true),
        (Kind::BadYaml, true),
        (Kind::ValidWithBadItems, true),
        (Kind::NoEndMarker, true),
        (Kind::Valid, false),
        (Kind::BadYaml, true),
        (Kind::Valid, true),
        (Kind::ValidWithBadItems, false),
    ];
    // Version 1 is the initial file; version i + 2 is steps[i].
    let nodes: Vec<Upstream> = (1..=steps.len() + 1)
        .map(|v| Upstream::named(&format!("v{v}")))
        .collect();
    let gate = Gate::start(&config_yaml(&[], ""), &version_file(nodes[0].addr));
    let routes_path = gate.dir.join("apisix.yaml");
    let mut valid: BTreeSet<u32> = BTreeSet::from([1]);
    for (i, (kind, _)) in steps.iter().enumerate() {
        if matches!(kind, Kind::Valid | Kind::ValidWithBadItems) {
            valid.insert(i as u32 + 2);
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = |keep_alive: bool| {
        let stop = Arc::clone(&stop);
        let addr = gate.addr;
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut seen: Vec<u32> = Vec::new();
            let mut failures: Vec<String> = Vec::new();
            let mut stream = connect(addr);
            let mut buf = Vec::new();
            // Until the test stops it after the last rewrite (bounded in
            // time and count all the same).
            while !stop.load(Ordering::SeqCst)
                && started.elapsed() < WAIT * 6
                && seen.len() + failures.len() < 40_000
            {
                if !keep_alive {
                    stream = connect(addr);
                    buf.clear();
                }
                match try_get(&mut stream, &mut buf, "/v") {
                    Ok((200, body)) => match body.strip_prefix('v').and_then(|n| n.parse().ok()) {
                        Some(v) => seen.push(v),
                        None => failures.push(format!("body {body:?}")),
                    },
                    Ok((status, body)) => failures.push(format!("{status} {body}")),
                    Err(e) => failures.push(e),
                }
            }
            (seen, failures)
        })
    };
    let kept = load(true);
    let fresh = load(false);

    let probe = |v: u32| {
        let name = format!("v{v}");
        wait_until(WAIT, || gate.get("/v").text() == name)
    };
    let mut current = 1;
    for (i, (kind, sighup)) in steps.iter().enumerate() {
        let version = i as u32 + 2;
        let node = nodes[version as usize - 1].addr;
        let text = match kind {
            Kind::Valid => version_file(node),
            Kind::ValidWithBadItems => version_file_with_bad_items(node),
            Kind::NoEndMarker => version_file(node).replace("#END\n", ""),
            Kind::BadYaml => version_file(node).replace("    uri: /v\n", "    uri: [/v\n"),
        };
        let rejected_before = occurrences(&gate, "reload rejected");
        replace_file(&routes_path, &text);
        if *sighup {
            gate.signal(Signal::HUP);
        }
        if valid.contains(&version) {
            assert!(
                probe(version),
                "step {i} ({kind:?}, sighup {sighup}): v{version} never served; log:\n{}",
                gate.log()
            );
            current = version;
        } else {
            assert!(
                wait_until(WAIT, || occurrences(&gate, "reload rejected")
                    > rejected_before),
                "step {i} ({kind:?}): no rejection logged; log:\n{}",
                gate.log()
            );
            assert_eq!(gate.get("/v").text(), format!("v{current}"), "step {i}");
        }
        if *kind == Kind::ValidWithBadItems {
            assert_eq!(gate.get("/bad").status, 404, "a bad route was applied");
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for (name, handle) in [("keep-alive", kept), ("new connections", fresh)] {
        let (seen, failures) = handle.join().unwrap();
        total += seen.len();
        assert!(
            failures.is_empty(),
            "{name}: {} failures: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        let names: BTreeSet<u32> = seen.iter().copied().collect();
        assert!(
            names.is_subset(&valid),
            "{name}: answers from invalid versions: {:?}",
            names.difference(&valid).collect::<Vec<_>>()
        );
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "{name}: an older version was served after a newer one"
        );
        assert!(seen.len() >= 100, "{name}: only {} requests", seen.len());
        eprintln!(
            "reload under load: {name}: {} requests, versions seen {names:?}",
            seen.len()
        );
    }
    eprintln!("reload under load: {total} requests, 0 failed, across 10 rewrites");
    for problem in [
        "reload rejected",
        "missing valid end flag",
        "(item skipped)",
        "reloaded",
    ] {
        assert!(gate.log().contains(problem), "no {problem:?} in the log");
    }
}

/// A request in flight when the routes change finishes where it started;
/// the next request, even on the same keep-alive connection, uses the new
/// configuration.
#[test]
fn in_flight_request_finishes_on_the_config_it_started_with() {
    // The old node answers once the reload is done, however long it takes.
    let reloaded = Checkpoint::new();
    let hold = reloaded.clone();
    let old = Upstream::start(move |_| {
        hold.wait_for(1, WAIT);
        Behaviour::Respond(ok_response("old"))
    });
    let new = Upstream::named("new");
    let gate = Gate::start(&config_yaml(&[], ""), &route_to(old.addr));
    let addr = gate.addr;
    let in_flight = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let r = c.request("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
        let next = c.request("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
        (r, next)
    });
    assert!(wait_until(WAIT, || old.count() == 1));
    replace_file(&gate.dir.join("apisix.yaml"), &route_to(new.addr));
    gate.signal(Signal::HUP);
    assert!(gate.wait_for_log("reloaded (SIGHUP)"), "{}", gate.log());
    assert_eq!(gate.get("/slow").text(), "new");
    reloaded.pass();
    let (r, next) = in_flight.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "old"));
    assert_eq!((next.status, next.text().as_str()), (200, "new"));
    assert_eq!(old.count(), 1);
}

/// An invalid `config.yaml` on `SIGHUP` keeps the running configuration
/// and logs every problem, not just the first; a fixed one then applies.
#[test]
fn invalid_config_on_sighup_keeps_the_old_one_and_logs_every_error() {
    let a = Upstream::named("a");
    let gate = Gate::start(&config_yaml(&[], ""), &route_to(a.addr));
    let config = gate.dir.join("config.yaml");
    let good = std::fs::read_to_string(&config).unwrap();
    replace_file(
        &config,
        &format!("{good}  bogus_key: 1\n  keepalive_timeout: -3\n  access_log_format: xml\n"),
    );
    gate.signal(Signal::HUP);
    assert!(gate.wait_for_log("reload rejected"), "{}", gate.log());
    let log = gate.log();
    for problem in [
        "tinygate.bogus_key",
        "tinygate.keepalive_timeout",
        "tinygate.access_log_format",
    ] {
        assert!(log.contains(problem), "{problem} not logged:\n{log}");
    }
    assert_eq!(gate.get("/").text(), "a");
    // Fixed: the next SIGHUP applies both files (a new route and a new
    // body size limit).
    let b = Upstream::named("b");
    replace_file(&config, &format!("{good}  client_max_body_size: 10\n"));
    replace_file(&gate.dir.join("apisix.yaml"), &route_to(b.addr));
    gate.signal(Signal::HUP);
    assert!(wait_until(WAIT, || gate.get("/").text() == "b"));
    let r = gate.request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n");
    assert_eq!(r.status, 413, "config.yaml was not reloaded");
}

/// The poll picks up a changed routes file (no signal is sent); invalid
/// routes and upstreams are skipped with one error each while the rest
/// applies; a file without `#END` or with bad YAML is refused whole.
#[test]
fn routes_file_poll_skips_bad_items_and_refuses_bad_files() {
    let a = Upstream::named("a");
    let b = Upstream::named("b");
    let c = Upstream::named("c");
    let gate = Gate::start(&config_yaml(&[], ""), &version_file(a.addr));
    let path = gate.dir.join("apisix.yaml");

    replace_file(&path, &version_file_with_bad_items(b.addr));
    assert!(wait_until(WAIT, || gate.get("/v").text() == "b"));
    let log = gate.log();
    assert!(
        log.contains("reloaded (routes file changed)"),
        "not applied by the poll:\n{log}"
    );
    for item in ["routes[0]", "routes[2]", "upstreams[1]"] {
        assert!(
            log.lines()
                .any(|l| l.contains(item) && l.contains("(item skipped)")),
            "{item} not reported as skipped:\n{log}"
        );
    }
    assert_eq!(gate.get("/bad").status, 404);
    assert_eq!(gate.get("/bad2").status, 404);

    for (what, text) in [
        ("no #END", version_file(c.addr).replace("#END\n", "")),
        (
            "bad YAML",
            version_file(c.addr).replace("    uri: /v\n", "    uri: [/v\n"),
        ),
    ] {
        let before = occurrences(&gate, "reload rejected");
        replace_file(&path, &text);
        assert!(
            wait_until(WAIT, || occurrences(&gate, "reload rejected") > before),
            "{what}: not rejected:\n{}",
            gate.log()
        );
        assert_eq!(gate.get("/v").text(), "b", "{what}: applied anyway");
    }
    assert!(gate.log().contains("missing valid end flag"));
    // Completing the file (the marker arrives last) applies it.
    replace_file(&path, &version_file(c.addr));
    assert!(wait_until(WAIT, || gate.get("/v").text() == "c"));
    assert_eq!(c.count(), 1);
}

/// `SIGTERM` with ten slow requests in flight: new connections are refused
/// and idle keep-alive connections are closed while they are in flight,
/// every in-flight request completes with a 200, and the process exits 0
/// once they are done, long before the grace period ends.
#[test]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    const IN_FLIGHT: usize = 10;
    // The slow requests are answered once the test has seen the drain
    // start, so they are in flight during it however slow the machine.
    let checked = Checkpoint::new();
    let hold = checked.clone();
    let slow = Upstream::start(move |r| {
        if r.target == "/slow" {
            hold.wait_for(1, WAIT);
        }
        Behaviour::Respond(ok_response("done"))
    });
    let mut gate = Gate::start(
        // A grace far past every wait below: an exit the test sees came
        // when the requests were done, not at the end of the grace.
        &config_yaml(&[], "  shutdown_grace: 120\n"),
        &route_to(slow.addr),
    );
    let addr = gate.addr;
    let mut idle = Client::connect(addr);
    assert_eq!(
        idle.request("GET /fast HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    let clients: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let r = c.request("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
                (r.status, r.text(), c.closed_within(WAIT))
            })
        })
        .collect();
    assert!(wait_until(WAIT, || slow.count() == IN_FLIGHT + 1));
    gate.signal(Signal::TERM);
    assert!(gate.wait_for_log("stopping"), "{}", gate.log());
    // The slow requests are held until `checked.pass()`: what follows
    // happens while they are in flight, however long it takes.
    let refused = wait_until(WAIT, || TcpStream::connect(addr).is_err());
    assert!(refused, "a new connection was accepted after SIGTERM");
    assert!(
        idle.closed_within(WAIT),
        "an idle keep-alive connection held the drain"
    );
    checked.pass();
    let answered = Instant::now();
    for client in clients {
        let (status, body, closed) = client.join().unwrap();
        assert_eq!((status, body.as_str()), (200, "done"));
        assert!(closed, "connection left open after its last response");
    }
    let status = gate.wait_exit(WAIT).expect("still running after the drain");
    let took = answered.elapsed();
    eprintln!(
        "drain: {IN_FLIGHT} in-flight requests finished, exit {status:?} {took:?} after the node answered them"
    );
    assert!(status.success(), "exit status {status:?}\n{}", gate.log());
    assert_eq!(slow.count(), IN_FLIGHT + 1);
}

/// A request that outlives `shutdown_grace` does not keep the process: it
/// exits 0 once the grace period is over.
#[test]
fn drain_ends_at_shutdown_grace() {
    let hang = Upstream::start(|_| Behaviour::Hang);
    let mut gate = Gate::start(
        &config_yaml(&[], "  shutdown_grace: 1\n"),
        &route_to(hang.addr),
    );
    let mut c = Client::connect(gate.addr);
    c.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(wait_until(WAIT, || hang.count() == 1));
    let signalled = Instant::now();
    gate.signal(Signal::TERM);
    // The grace is the behaviour: the exit comes from it (the request
    // never ends, and the wait is far past 1 s), and not before it (0.9
    // of it; the clock starts before the signal is sent).
    let status = gate
        .wait_exit(WAIT)
        .expect("still running past the grace period");
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took >= Duration::from_millis(900),
        "exit after {took:?} with a 1 s grace"
    );
    // The log line may still be in the pipe when the process has exited.
    assert!(gate.wait_for_log("grace period over"), "{}", gate.log());
    assert!(c.read_to_close(WAIT).is_some());
}

/// `SIGINT` drains like `SIGTERM`; a second stop signal during the drain
/// exits at once instead of waiting out a long grace period.
#[test]
fn second_stop_signal_exits_at_once() {
    let hang = Upstream::start(|_| Behaviour::Hang);
    let mut gate = Gate::start(
        // A grace far past every wait below: an exit the test sees came
        // from the second signal, not from the end of the grace.
        &config_yaml(&[], "  shutdown_grace: 120\n"),
        &route_to(hang.addr),
    );
    let mut c = Client::connect(gate.addr);
    c.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(wait_until(WAIT, || hang.count() == 1));
    gate.signal(Signal::INT);
    assert!(gate.wait_for_log("stopping"), "{}", gate.log());
    // Still draining: the request is in flight and the grace is long.
    assert!(
        gate.wait_exit(Duration::from_millis(300)).is_none(),
        "exited without waiting"
    );
    let second = Instant::now();
    gate.signal(Signal::TERM);
    let status = gate
        .wait_exit(WAIT)
        .expect("a second signal did not end it");
    let took = second.elapsed();
    eprintln!("second signal: exit {status:?} {took:?} after it");
    assert!(gate.log().contains("second stop signal"), "{}", gate.log());
}

/// The fields of a combined-format line: space-separated, with `"..."`
/// and `[...]` kept whole (without their delimiters).
fn combined_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line.trim_end();
    while !rest.is_empty() {
        let (field, after) = match rest.as_bytes()[0] {
            b'"' => {
                let end = rest[1..].find('"').expect("closing quote") + 1;
                (&rest[1..end], &rest[end + 1..])
            }
            b'[' => {
                let end = rest.find(']').expect("closing bracket");
                (&rest[1..end], &rest[end + 1..])
            }
            _ => match rest.find(' ') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            },
        };
        out.push(field.to_string());
        rest = after.trim_start_matches(' ');
    }
    out
}

/// Waits (bounded) until `path` has at least `n` lines; returns them.
fn lines_of(path: &Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    wait_until(WAIT, || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.len() >= n
    });
    lines
}

/// The default access log line is APISIX's (nginx combined plus host,
/// upstream address, status and time, and the route id), one per request,
/// including requests answered locally or refused.
#[test]
fn access_log_combined_line_has_route_upstream_and_status() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config_yaml(
            &[],
            "  access_log: access.log\n  client_header_timeout: 0.5\n",
        ),
        &route_to(up.addr),
    );
    let r = gate.request(
        "GET /x?y=1 HTTP/1.1\r\nHost: front.test\r\nUser-Agent: probe \"1\"\r\nReferer: http://r.test/\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let path = gate.dir.join("access.log");
    let lines = lines_of(&path, 1);
    let f = combined_fields(&lines[0]);
    assert_eq!(f.len(), 15, "{f:?} from {:?}", lines[0]);
    assert_eq!(f[0], "127.0.0.1");
    assert!(
        f[3].ends_with(" +0000") && f[3].len() == 26,
        "time {:?}",
        f[3]
    );
    assert_eq!(f[4], "front.test");
    assert_eq!(f[5], "GET /x?y=1 HTTP/1.1");
    assert_eq!(f[6], "200");
    assert_eq!(f[7], "1", "body bytes");
    assert!(f[8].parse::<f64>().is_ok(), "request time {:?}", f[8]);
    assert_eq!(f[9], "http://r.test/");
    assert_eq!(
        f[10], "probe \\x221\\x22",
        "user agent escaped as nginx does"
    );
    assert_eq!(f[11], up.addr.to_string());
    assert_eq!(f[12], "200");
    assert!(f[13].parse::<f64>().is_ok(), "upstream time {:?}", f[13]);
    assert_eq!(f[14], "r");

    // A refused request is logged too, with its status.
    let bad = send(
        gate.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
    );
    assert_eq!(bad.status, 400);
    let lines = lines_of(&path, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let f = combined_fields(&lines[1]);
    assert_eq!(
        (f[6].as_str(), f[11].as_str(), f[12].as_str()),
        ("400", "-", "-")
    );
    // Empty fields are "-", as nginx writes them.
    assert_eq!((f[9].as_str(), f[10].as_str()), ("-", "-"));
    // So are heads refused for their size or for arriving too slowly.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    assert_eq!(gate.request(&big).status, 431);
    let mut slow = Client::connect(gate.addr);
    slow.write(b"GET / HTTP/1.1\r\n");
    assert_eq!(slow.read_response(false).status, 408);
    let lines = lines_of(&path, 4);
    let statuses: Vec<String> = lines
        .iter()
        .map(|l| combined_fields(l)[6].clone())
        .collect();
    assert_eq!(statuses, ["200", "400", "431", "408"], "{lines:?}");
}

/// `access_log_format: json`: every line is one JSON object with the
/// route id, upstream address, upstream status and times.
#[test]
fn access_log_json_lines_parse() {
    let up = Upstream::named("u");
    let dead = ClosedPort::reserve();
    let routes = format!(
        "routes:\n  - {{id: live, uri: /live, upstream: {{nodes: {{\"{}\": 1}}}}}}\n  - {{id: dead, uri: /dead, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        up.addr, dead.addr
    );
    let gate = Gate::start(
        &config_yaml(&[], "  access_log: access.log\n  access_log_format: json\n"),
        &routes,
    );
    assert_eq!(gate.get("/live").status, 200);
    assert_eq!(gate.get("/dead").status, 502);
    assert_eq!(gate.get("/none").status, 404);
    let lines = lines_of(&gate.dir.join("access.log"), 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let by_uri = |uri: &str| {
        parsed
            .iter()
            .find(|v| v["uri"] == uri)
            .unwrap_or_else(|| panic!("no line for {uri}: {lines:?}"))
    };
    let live = by_uri("/live");
    assert_eq!(live["route_id"], "live");
    assert_eq!(live["status"], 200);
    assert_eq!(live["upstream_status"], 200);
    assert_eq!(live["upstream_addr"], up.addr.to_string());
    assert_eq!(live["method"], "GET");
    assert_eq!(live["remote_addr"], "127.0.0.1");
    assert!(live["request_time"].is_f64(), "{live}");
    assert!(live["upstream_response_time"].is_f64(), "{live}");
    let dead = by_uri("/dead");
    assert_eq!(
        (dead["route_id"].as_str(), dead["status"].as_u64()),
        (Some("dead"), Some(502))
    );
    assert!(dead["upstream_status"].is_null(), "{dead}");
    let none = by_uri("/none");
    assert_eq!(
        (none["route_id"].as_str(), none["status"].as_u64()),
        (Some(""), Some(404))
    );
}

/// `access_log: stdout` writes the lines to stdout, after the
/// `listening on` line.
#[test]
fn access_log_to_stdout() {
    let up = Upstream::named("u");
    let dir = temp_dir();
    std::fs::write(
        dir.join("config.yaml"),
        config_yaml(&[], "  access_log: stdout\n"),
    )
    .unwrap();
    std::fs::write(dir.join("apisix.yaml"), route_to(up.addr)).unwrap();
    let (gate, stdout) = Gate::start_in_capturing_stdout(dir);
    assert_eq!(gate.get("/to-stdout").status, 200);
    assert!(
        wait_until(WAIT, || stdout
            .lock()
            .unwrap()
            .contains("\"GET /to-stdout HTTP/1.1\" 200")),
        "stdout: {:?}",
        stdout.lock().unwrap()
    );
}

/// logrotate's way: rename the file, send `SIGUSR1`; later lines go to a
/// new file at the configured path, earlier ones stay in the renamed one.
#[test]
fn sigusr1_reopens_the_access_log() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config_yaml(&[], "  access_log: access.log\n"),
        &route_to(up.addr),
    );
    let path = gate.dir.join("access.log");
    let rotated = gate.dir.join("access.log.1");
    assert_eq!(gate.get("/before").status, 200);
    assert_eq!(lines_of(&path, 1).len(), 1);
    std::fs::rename(&path, &rotated).unwrap();
    gate.signal(Signal::USR1);
    assert!(gate.wait_for_log("reopened"), "{}", gate.log());
    assert_eq!(gate.get("/after").status, 200);
    let new_lines = lines_of(&path, 1);
    assert_eq!(new_lines.len(), 1, "{new_lines:?}");
    assert!(new_lines[0].contains("GET /after "), "{new_lines:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("GET /before ") && !old.contains("/after"),
        "{old}"
    );
}

/// Regression: the handlers must be in place when `listening on` is
/// printed. A `SIGHUP` or `SIGUSR1` sent right after it used to find the
/// default action still set and kill the process.
#[test]
fn signals_right_after_readiness_are_handled() {
    let a = Upstream::named("a");
    for signal in [Signal::HUP, Signal::USR1] {
        let mut gate = Gate::start(&config_yaml(&[], ""), &route_to(a.addr));
        gate.signal(signal);
        assert_eq!(
            gate.wait_exit(Duration::from_millis(300)),
            None,
            "killed by {signal:?} sent right after readiness"
        );
        assert_eq!(gate.get("/").text(), "a");
    }
}
