//! Upstreams that fail are noticed and avoided (issue #17): active health
//! checks against nodes whose `/health` flips, priority failover, retries
//! that reach every node whatever the weights, the Control API and the
//! `apisix_upstream_status` metric, state kept across reloads, and access
//! log lines kept on stop.
//!
//! Intervals are APISIX's integers (1 s at least), so a check test takes a
//! few seconds. Waits are bounded and assert what happened (how many
//! probes it took), not how fast.

use crate::util::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An upstream named `name` whose `/health` answers the status in
/// `health`; every other path gets `200` with body `name`.
fn flipping(name: &str, health: &Arc<AtomicU16>) -> Upstream {
    let name = name.to_string();
    let health = Arc::clone(health);
    Upstream::start(move |r| {
        if r.target == "/health" {
            let status = health.load(Ordering::SeqCst);
            Behaviour::Respond(
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n").into_bytes(),
            )
        } else {
            Behaviour::Respond(ok_response(&name))
        }
    })
}

fn status_of(code: u16) -> Arc<AtomicU16> {
    Arc::new(AtomicU16::new(code))
}

/// How many requests `up` got for other paths than `/health`.
fn served(up: &Upstream) -> usize {
    up.received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.target != "/health")
        .count()
}

/// How many `/health` probes `up` got.
fn probes(up: &Upstream) -> usize {
    up.count() - served(up)
}

/// `config.yaml` with a status listener on a free port.
fn config_with_status(extra: &str) -> String {
    config_yaml(&[], &format!("  status_listen: \"127.0.0.1:0\"\n{extra}"))
}

/// `GET path` on the status listener: (status, body).
fn status_get(status: SocketAddr, path: &str) -> (u16, String) {
    let r = send(
        status,
        format!("GET {path} HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    (r.status, r.text())
}

/// The Control API's entry for node `addr` of checker `name`.
fn node_entry(status: SocketAddr, name: &str, addr: SocketAddr) -> Value {
    let (code, body) = status_get(status, "/v1/healthcheck");
    assert_eq!(code, 200, "{body}");
    let all: Value = serde_json::from_str(&body).expect("JSON");
    let checker = all
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no checker {name} in {body}"))
        .clone();
    checker["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["port"] == addr.port())
        .unwrap_or_else(|| panic!("no node {addr} in {body}"))
        .clone()
}

/// The node's change of state as logged, with the count that caused it:
/// the Control API's counters go on counting with every probe after the
/// change, so what they show depends on when the test looks.
fn assert_transition(gate: &Gate, addr: SocketAddr, to: &str, cause: &str) {
    let line = format!("node {addr} is now {to} ({cause}, active check)");
    assert!(gate.wait_for_log(&line), "no {line:?} in\n{}", gate.log());
}

/// How long a check may take to change a node's state before a test
/// fails: far more than the intervals (1 s) times the thresholds (≤ 2).
const LIMIT: Duration = Duration::from_secs(20);

/// Waits (up to [`LIMIT`]) until node `addr` of `name` has `state`; the
/// node's entry at that moment.
fn wait_for_state(status: SocketAddr, name: &str, addr: SocketAddr, state: &str) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let entry = node_entry(status, name, addr);
        if entry["status"] == state {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "node {addr} of {name} not {state} within {LIMIT:?}: {entry}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(status: SocketAddr) -> String {
    status_get(status, "/apisix/prometheus/metrics").1
}

/// Checks that probe `/health` every second; two failures take a node out,
/// two successes bring it back.
const CHECKS: &str = "    checks:
      active:
        http_path: /health
        healthy: {interval: 1, successes: 2}
        unhealthy: {interval: 1, http_failures: 2}
";

/// The first example: `/health` of one node flips to 500; after
/// `http_failures` probes it is out (every request goes to the other
/// node), and after `successes` good probes it is back. The Control API
/// and the metric show each state.
#[test]
fn an_active_check_takes_a_failing_node_out_and_brings_it_back() {
    let health_a = status_of(200);
    let a = flipping("a", &health_a);
    let b = flipping("b", &status_of(200));
    let routes = format!(
        "routes:\n  - {{id: r, uri: /*, upstream_id: pair}}\nupstreams:\n  - id: pair\n    nodes:\n      \"{}\": 1\n      \"{}\": 1\n{CHECKS}#END\n",
        a.addr, b.addr
    );
    let gate = Gate::start(&config_with_status(""), &routes);
    let status = gate.status_addr();
    for _ in 0..10 {
        assert_eq!(gate.get("/").status, 200);
    }
    assert!(served(&a) > 0 && served(&b) > 0);
    let line = |state: u8| {
        format!(
            "apisix_upstream_status{{name=\"/upstreams/pair\",ip=\"127.0.0.1\",port=\"{}\"}} {state}",
            a.addr.port()
        )
    };
    assert!(metrics(status).contains(&line(1)), "{}", metrics(status));

    health_a.store(500, Ordering::SeqCst);
    let probes_before = probes(&a);
    let out = wait_for_state(status, "/upstreams/pair", a.addr, "unhealthy");
    assert_transition(&gate, a.addr, "unhealthy", "2/2 HTTP failures");
    assert!(out["counter"]["http_failure"].as_u64() >= Some(2), "{out}");
    assert!(probes(&a) - probes_before >= 2);
    assert_eq!(out["hostname"], "127.0.0.1");
    assert!(metrics(status).contains(&line(0)), "{}", metrics(status));
    let (a_before, b_before) = (served(&a), served(&b));
    for _ in 0..20 {
        let r = gate.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "b"));
    }
    assert_eq!(
        served(&a),
        a_before,
        "no request reaches the unhealthy node"
    );
    assert_eq!(served(&b), b_before + 20);

    health_a.store(200, Ordering::SeqCst);
    let back = wait_for_state(status, "/upstreams/pair", a.addr, "healthy");
    assert_transition(&gate, a.addr, "healthy", "2/2 successes");
    assert!(back["counter"]["success"].as_u64() >= Some(2), "{back}");
    assert!(metrics(status).contains(&line(1)));
    for _ in 0..10 {
        assert_eq!(gate.get("/").status, 200);
    }
    assert!(served(&a) > a_before, "traffic returns to the healthy node");
    // The probes were lua-resty-healthcheck's.
    let probe = a
        .received
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.target == "/health")
        .cloned()
        .unwrap();
    assert_eq!(probe.method, "GET");
    assert_eq!(probe.header("connection"), Some("close"));
    assert_eq!(probe.header("host"), Some("127.0.0.1"));
}

/// APISIX: when every node is unhealthy, traffic goes to all of them
/// rather than nowhere.
#[test]
fn when_every_node_fails_its_check_every_node_still_serves() {
    let down = status_of(503);
    let a = flipping("a", &down);
    let b = flipping("b", &down);
    let routes = format!(
        "routes:\n  - {{id: r, uri: /*, upstream_id: pair}}\nupstreams:\n  - id: pair\n    nodes:\n      \"{}\": 1\n      \"{}\": 1\n{CHECKS}#END\n",
        a.addr, b.addr
    );
    let gate = Gate::start(&config_with_status(""), &routes);
    let status = gate.status_addr();
    for up in [&a, &b] {
        wait_for_state(status, "/upstreams/pair", up.addr, "unhealthy");
    }
    for _ in 0..20 {
        assert_eq!(gate.get("/").status, 200);
    }
    assert!(
        served(&a) >= 5 && served(&b) >= 5,
        "{} {}",
        served(&a),
        served(&b)
    );
}

/// Node `priority`: the lower one serves only when the higher one cannot,
/// because it is unhealthy or because it failed for this request.
#[test]
fn a_lower_priority_node_serves_only_when_the_higher_one_cannot() {
    let health_main = status_of(200);
    let main = flipping("main", &health_main);
    let backup = flipping("backup", &status_of(200));
    let routes = format!(
        "routes:\n  - {{id: r, uri: /*, upstream_id: p}}\nupstreams:\n  - id: p\n    nodes:\n      - {{host: 127.0.0.1, port: {}, weight: 1}}\n      - {{host: 127.0.0.1, port: {}, weight: 100, priority: -1}}\n{CHECKS}#END\n",
        main.addr.port(),
        backup.addr.port()
    );
    let gate = Gate::start(&config_with_status(""), &routes);
    let status = gate.status_addr();
    for _ in 0..20 {
        assert_eq!(gate.get("/").text(), "main");
    }
    assert_eq!(served(&backup), 0, "weight does not beat priority");
    health_main.store(500, Ordering::SeqCst);
    wait_for_state(status, "/upstreams/p", main.addr, "unhealthy");
    let main_before = served(&main);
    for _ in 0..20 {
        assert_eq!(gate.get("/").text(), "backup");
    }
    assert_eq!(
        served(&main),
        main_before,
        "the unhealthy node is not tried first"
    );

    // Without checks: the higher node failing for this request (nothing
    // listens) moves the request to the lower one.
    let dead = ClosedPort::reserve();
    let routes = format!(
        "routes:\n  - {{uri: /*, upstream: {{nodes: [{{host: 127.0.0.1, port: {}, weight: 1}}, {{host: 127.0.0.1, port: {}, weight: 1, priority: -5}}]}}}}\n#END\n",
        dead.addr.port(),
        backup.addr.port()
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    for _ in 0..10 {
        assert_eq!(gate.get("/").text(), "backup");
    }
}

/// The "skewed weights break retries": 100:1 with the heavy node
/// down used to be a 502 every time.
#[test]
fn retries_reach_the_light_node_when_the_heavy_one_is_dead() {
    let light = Upstream::named("light");
    let heavy = ClosedPort::reserve();
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream:\n      nodes:\n        \"{}\": 100\n        \"{}\": 1\n#END\n",
        heavy.addr,
        light.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    for _ in 0..30 {
        let r = gate.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "light"));
    }
}

/// A `tcp` check: a node that is not listening goes out after
/// `tcp_failures` refused connects and comes back once something listens
/// on its port again (a node killed and restarted).
#[test]
fn a_tcp_check_follows_a_node_that_dies_and_comes_back() {
    let node = ClosedPort::reserve();
    let spare = node.addr;
    let other = Upstream::named("other");
    let routes = format!(
        "routes:\n  - id: r7\n    uri: /*\n    upstream:\n      nodes:\n        \"{spare}\": 1\n        \"{}\": 1\n      checks:\n        active:\n          type: tcp\n          healthy: {{interval: 1, successes: 1}}\n          unhealthy: {{interval: 1, tcp_failures: 2}}\n#END\n",
        other.addr
    );
    let gate = Gate::start(&config_with_status(""), &routes);
    let status = gate.status_addr();
    let out = wait_for_state(status, "/routes/r7", spare, "unhealthy");
    assert_transition(&gate, spare, "unhealthy", "2/2 TCP failures");
    assert!(out["counter"]["tcp_failure"].as_u64() >= Some(2), "{out}");
    let (_, body) = status_get(status, "/v1/healthcheck/routes/r7");
    let checker: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(checker["type"], "tcp");
    assert_eq!(checker["name"], "/routes/r7");
    for _ in 0..10 {
        assert_eq!(gate.get("/").text(), "other");
    }
    // The node comes back on its port.
    let listener = node.listen();
    let back = wait_for_state(status, "/routes/r7", spare, "healthy");
    assert_transition(&gate, spare, "healthy", "1/1 successes");
    assert!(back["counter"]["success"].as_u64() >= Some(1), "{back}");
    drop(listener);
}

/// The Control API's answers for what it does not have, as APISIX's.
#[test]
fn the_control_api_answers_like_apisix() {
    let a = flipping("a", &status_of(200));
    let routes = format!(
        "routes:\n  - {{id: r, uri: /*, upstream_id: checked}}\nupstreams:\n  - id: checked\n    nodes: {{\"{0}\": 1}}\n{CHECKS}  - id: plain\n    nodes: {{\"{0}\": 1}}\n#END\n",
        a.addr
    );
    let gate = Gate::start(&config_with_status(""), &routes);
    let status = gate.status_addr();
    let (code, body) = status_get(status, "/v1/healthcheck/upstreams/checked");
    assert_eq!(code, 200, "{body}");
    let one: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["name"], "/upstreams/checked");
    assert_eq!(one["type"], "http");
    let node = &one["nodes"][0];
    assert_eq!(node["ip"], "127.0.0.1");
    assert_eq!(node["port"], a.addr.port());
    assert_eq!(node["status"], "healthy");
    for key in ["success", "http_failure", "tcp_failure", "timeout_failure"] {
        assert!(node["counter"][key].is_u64(), "{key}: {body}");
    }
    let (_, all) = status_get(status, "/v1/healthcheck");
    let all: Value = serde_json::from_str(&all).unwrap();
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "only upstreams with checks: {all}"
    );
    for (path, code, message) in [
        (
            "/v1/healthcheck/upstreams/plain",
            404,
            "no checker for upstreams[plain]",
        ),
        (
            "/v1/healthcheck/upstreams/nope",
            404,
            "upstreams[nope] not found",
        ),
        (
            "/v1/healthcheck/upstreams",
            404,
            "missing src id for src type upstreams",
        ),
        (
            "/v1/healthcheck/consumers/1",
            400,
            "invalid src type consumers",
        ),
    ] {
        let (got, body) = status_get(status, path);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (got, v["error_msg"].as_str()),
            (code, Some(message)),
            "{path}"
        );
    }
}

/// A reload keeps the state of nodes that are still configured: an
/// unhealthy node stays out at once, without waiting for new probes.
#[test]
fn a_reload_keeps_the_state_of_nodes_still_configured() {
    let a = flipping("a", &status_of(500));
    let b = flipping("b", &status_of(200));
    let routes = |uri: &str| {
        format!(
            "routes:\n  - {{id: r, uri: \"{uri}\", upstream_id: pair}}\nupstreams:\n  - id: pair\n    nodes:\n      \"{}\": 1\n      \"{}\": 1\n{CHECKS}#END\n",
            a.addr, b.addr
        )
    };
    let gate = Gate::start(&config_with_status(""), &routes("/*"));
    let status = gate.status_addr();
    wait_for_state(status, "/upstreams/pair", a.addr, "unhealthy");
    std::fs::write(gate.dir.join("apisix.yaml"), routes("/v2/*")).unwrap();
    assert!(gate.wait_for_log("reloaded"), "{}", gate.log());
    let entry = node_entry(status, "/upstreams/pair", a.addr);
    assert_eq!(entry["status"], "unhealthy", "{entry}");
    let before = served(&a);
    for _ in 0..10 {
        assert_eq!(gate.get("/v2/x").text(), "b");
    }
    assert_eq!(served(&a), before);
}

/// Bad `checks`, `type` and node keys are refused with their key paths.
#[test]
fn bad_balancing_and_checks_are_refused_with_their_paths() {
    let dir = temp_dir();
    std::fs::write(dir.join("config.yaml"), config_yaml(&[], "")).unwrap();
    std::fs::write(
        dir.join("apisix.yaml"),
        "routes:\n  - {uri: /a, upstream_id: u}\nupstreams:\n  - id: u\n    type: ewma\n    nodes: [{host: 127.0.0.1, port: 1, weight: 1, priority: high}]\n    checks:\n      active: {healthy: {successes: 0}, req_headers: [nope]}\n#END\n",
    )
    .unwrap();
    let config = dir.join("config.yaml");
    let (code, _, stderr) = run(&["-t", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    for expected in [
        "upstreams[0].type: ewma is not supported by tinygate yet",
        "upstreams[0].nodes[0].priority: expected an integer, got a string",
        "upstreams[0].checks.active.healthy.successes: 0 is out of range 1..=254",
        "upstreams[0].checks.active.req_headers[0]: expected a \"Name: value\" header line",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

/// Nothing lost on stop: N requests, then `SIGTERM` at once, and the
/// access log has N lines (the workers' buffers are written out).
#[test]
fn every_access_log_line_is_written_before_a_stop() {
    const N: usize = 50;
    let up = Upstream::named("u");
    let mut gate = Gate::start(
        &config_yaml(&[], "  access_log: access.log\n"),
        &format!(
            "routes:\n  - {{uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
            up.addr
        ),
    );
    let mut c = Client::connect(gate.addr);
    for i in 0..N {
        let r = c.request(&format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(r.status, 200);
    }
    drop(c);
    gate.signal(rustix::process::Signal::TERM);
    let exit = gate.wait_exit(Duration::from_secs(15));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    let log = std::fs::read_to_string(gate.dir.join("access.log")).unwrap();
    assert_eq!(log.lines().count(), N, "{log}");
    for i in 0..N {
        assert!(
            log.contains(&format!("GET /{i} HTTP/1.1")),
            "line {i} missing"
        );
    }
}

/// A passive check: a node answering 500 is taken out after
/// `unhealthy.http_failures` such answers, with no probe involved (the
/// active intervals are a minute).
#[test]
fn a_passive_check_stops_traffic_to_a_node_answering_500() {
    let bad = Upstream::start(|r| {
        if r.target == "/health" {
            Behaviour::Respond(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec())
        } else {
            Behaviour::Respond(b"HTTP/1.1 500 Oops\r\ncontent-length: 3\r\n\r\nbad".to_vec())
        }
    });
    let good = flipping("good", &status_of(200));
    let routes = format!(
        "routes:\n  - {{id: r, uri: /*, upstream_id: pair}}\nupstreams:\n  - id: pair\n    nodes:\n      \"{}\": 1\n      \"{}\": 1\n    checks:\n      active:\n        http_path: /health\n        healthy: {{interval: 60}}\n        unhealthy: {{interval: 60}}\n      passive:\n        unhealthy: {{http_statuses: [500], http_failures: 3}}\n#END\n",
        bad.addr, good.addr
    );
    let gate = Gate::start(&config_with_status(""), &routes);
    let status = gate.status_addr();
    let mut failures = 0;
    for _ in 0..30 {
        match gate.get("/").status {
            500 => failures += 1,
            other => assert_eq!(other, 200),
        }
    }
    assert_eq!(failures, 3, "out after http_failures 500s");
    assert_eq!(served(&bad), 3);
    assert_eq!(probes(&bad), 0, "no probe took part");
    let entry = node_entry(status, "/upstreams/pair", bad.addr);
    assert_eq!(entry["status"], "unhealthy", "{entry}");
    assert_eq!(entry["counter"]["http_failure"], 3, "{entry}");
}

/// `chash` on a header: a key stays on its node, across connections and
/// workers; adding a fifth node to four moves about 1/5 of the keys, all
/// of them to the new node.
#[test]
fn chash_keeps_a_key_on_one_node_and_moves_about_one_in_n_when_a_node_is_added() {
    let names = ["n0", "n1", "n2", "n3", "n4"];
    let nodes: Vec<Upstream> = names.iter().map(|n| Upstream::named(n)).collect();
    let routes = |count: usize| {
        let list = nodes[..count]
            .iter()
            .map(|n| format!("\"{}\": 1", n.addr))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "routes:\n  - uri: /*\n    upstream:\n      type: chash\n      hash_on: header\n      key: x-user\n      nodes: {{{list}}}\n#END\n"
        )
    };
    let gate = Gate::start(&config_yaml(&[], ""), &routes(4));
    let owner = |key: usize| {
        let r = gate.request(&format!(
            "GET / HTTP/1.1\r\nHost: a\r\nx-user: user-{key}\r\n\r\n"
        ));
        assert_eq!(r.status, 200);
        r.text()
    };
    // The ring is placed by the nodes' random ports, so the share a fifth
    // node takes varies from run to run: about 0.016 (sd) from its 160
    // points per weight, 0.016 from sampling 600 keys. The bounds are 5 sd
    // away, and far from what a modulo hash would move (0.8).
    const KEYS: usize = 600;
    let before: Vec<String> = (0..KEYS).map(owner).collect();
    for (key, node) in before.iter().enumerate().take(50) {
        assert_eq!(&owner(key), node, "key {key} stays on its node");
    }
    let used: std::collections::HashSet<&String> = before.iter().collect();
    assert_eq!(used.len(), 4, "keys spread over every node");
    std::fs::write(gate.dir.join("apisix.yaml"), routes(5)).unwrap();
    assert!(gate.wait_for_log("reloaded"), "{}", gate.log());
    let after: Vec<String> = (0..KEYS).map(owner).collect();
    let moved: Vec<usize> = (0..KEYS).filter(|&k| before[k] != after[k]).collect();
    for &k in &moved {
        assert_eq!(after[k], "n4", "key {k} moved to an old node");
    }
    let share = moved.len() as f64 / KEYS as f64;
    println!(
        "chash: {} of {KEYS} keys moved to the fifth node ({share:.2})",
        moved.len()
    );
    assert!(
        (0.08..=0.35).contains(&share),
        "moved {share:.2}, expected about 0.2"
    );
    // A query argument as the key, and a request without the key: both stick.
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream:\n      type: chash\n      key: arg_id\n      nodes: {{\"{}\": 1, \"{}\": 1, \"{}\": 1}}\n#END\n",
        nodes[0].addr, nodes[1].addr, nodes[2].addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    for id in 0..20 {
        let first = gate.get(&format!("/?id={id}")).text();
        assert_eq!(gate.get(&format!("/x?b=1&id={id}")).text(), first);
    }
    let no_key = gate.get("/").text();
    for _ in 0..5 {
        assert_eq!(gate.get("/").text(), no_key, "no key: the client's address");
    }
}

/// `least_conn`: with three requests held (two on one node, one on the
/// other), every new request goes to the node with fewer in flight, across
/// both workers; round-robin would alternate.
///
/// Each step waits for the one before to be counted, so every pick sees
/// the counts the test expects: a held request is sent once the one before
/// reached its node (so the three are spread two and one), and a probe
/// once the one before is in `apisix_http_requests_total`, which a request
/// joins only after it stopped counting on its node (a probe whose response
/// the client has read may still count there for a moment, which would tie
/// the two nodes).
#[test]
fn least_conn_sends_requests_to_the_node_with_fewer_in_flight() {
    let node = |name: &'static str| {
        Upstream::start(move |r| {
            if r.target == "/hold" {
                Behaviour::Hang
            } else {
                Behaviour::Respond(ok_response(name))
            }
        })
    };
    let (a, b) = (node("a"), node("b"));
    // The held requests must stay in flight until the test ends, however
    // slow the machine: a read timeout far past the test's own waits.
    let routes = format!(
        "routes:\n  - uri: /*\n    timeout: {{connect: 1, send: 5, read: 300}}\n    upstream:\n      type: least_conn\n      nodes: {{\"{}\": 1, \"{}\": 1}}\n#END\n",
        a.addr, b.addr
    );
    let gate = Gate::start(&config_with_status(""), &routes);
    let status = gate.status_addr();
    let mut held = Vec::new();
    for n in 1..=3 {
        let mut c = Client::connect(gate.addr);
        c.write(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n");
        held.push(c);
        assert!(
            eventually(WAIT, || a.count() + b.count() == n),
            "held request {n} never reached a node: {}",
            gate.log()
        );
    }
    let (on_a, on_b) = (a.count(), b.count());
    assert!(
        on_a >= 1 && on_b >= 1,
        "held requests spread: {on_a} {on_b}"
    );
    let less_busy = if on_a < on_b { "a" } else { "b" };
    for n in 1..=10 {
        assert_eq!(gate.get("/").text(), less_busy, "probe {n}");
        let counted = format!("apisix_http_requests_total {n}\n");
        assert!(
            eventually(WAIT, || metrics(status).contains(&counted)),
            "probe {n} never counted: {}",
            metrics(status)
        );
    }
    drop(held);
}
