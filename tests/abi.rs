//! The whole proxy-wasm HTTP ABI through the real binary: bodies, pause and
//! resume, `http_call`, ticks with shared data, queues, metrics, properties
//! and ABI 0.1.0 (issue #3). Each fixture's source and config format are in
//! `fixtures/README.md`.

use crate::util::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn route_with(plugin: &str, conf: &str, up: &Upstream) -> String {
    format!(
        "routes:\n  - id: main\n    uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      {plugin}:\n        conf: '{conf}'\n#END\n",
        up.addr
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn body_rewrite_changes_the_length_and_content_length_follows() {
    let up = Upstream::start(|_| {
        Behaviour::Respond(
            b"HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\nhello hello there".to_vec(),
        )
    });
    let gate = Gate::start(
        &config_yaml(&[("rewrite", 1, "body_rewrite")], ""),
        &route_with(
            "rewrite",
            r#"{"from": "hello", "to": "goodbye, world"}"#,
            &up,
        ),
    );
    let mut c = Client::connect(gate.addr);
    for _ in 0..3 {
        let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "goodbye, world goodbye, world there");
        assert_eq!(r.header("content-length"), Some("35"));
    }
}

#[test]
fn request_body_rewrite_reaches_the_upstream_with_the_right_length() {
    let up = Upstream::echo();
    let gate = Gate::start(
        &config_yaml(&[("rewrite", 1, "body_rewrite")], ""),
        &route_with(
            "rewrite",
            r#"{"from": "a", "to": "xyz", "request": true, "response": false}"#,
            &up,
        ),
    );
    let body = "a-b-a";
    let r = gate.request(&format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    ));
    assert_eq!((r.status, r.text().as_str()), (200, "xyz-b-xyz"));
    assert_eq!(up.last().header("content-length"), Some("9"));
}

#[test]
fn json_validator_pauses_until_the_end_then_answers_403_or_passes() {
    let up = Upstream::echo();
    let gate = Gate::start(
        &config_yaml(&[("json", 1, "json_validator")], ""),
        &route_with("json", r#"{"required": ["name"]}"#, &up),
    );
    let post = |body: &str| {
        gate.request(&format!(
            "POST /v HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let r = post(r#"{"age": 3}"#);
    assert_eq!((r.status, r.text().as_str()), (403, "invalid body\n"));
    let r = post("not json");
    assert_eq!(r.status, 403);
    assert_eq!(up.count(), 0, "invalid bodies never reach the upstream");
    let r = post(r#"{"name": "tiny"}"#);
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"name": "tiny"}"#));
    assert_eq!(up.count(), 1);
}

#[test]
fn auth_callout_continues_or_answers_401() {
    let auth = Upstream::start(|r| {
        if r.header("authorization") == Some("Bearer good") && r.target == "/check" {
            Behaviour::Respond(
                b"HTTP/1.1 200 OK\r\nx-user: alice\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            )
        } else {
            Behaviour::Respond(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n".to_vec())
        }
    });
    let up = Upstream::named("app");
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      auth:\n        conf: '{{\"upstream\": \"auth\", \"path\": \"/check\"}}'\nupstreams:\n  - id: auth\n    nodes: {{\"{}\": 1}}\n#END\n",
        up.addr, auth.addr
    );
    let gate = Gate::start(&config_yaml(&[("auth", 1, "auth_callout")], ""), &routes);
    let mut c = Client::connect(gate.addr);
    let r = c.request("GET /data HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer good\r\nX-Auth-User: forged\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "app"));
    assert_eq!(up.last().header("x-auth-user"), Some("alice"));
    let r = c.request("GET /data HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer bad\r\n\r\n");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        up.count(),
        1,
        "the unauthorized request never reached the app"
    );
    assert_eq!(auth.count(), 2);
}

#[test]
fn several_paused_requests_wait_on_their_own_calls() {
    // The auth service answers no call before all six are in flight: if
    // calls waited for each other the first one would be answered alone.
    // The calls' timeout (30 s) is longer than that wait.
    const REQUESTS: usize = 6;
    let arrived = Checkpoint::new();
    let answered_alone = Arc::new(AtomicBool::new(false));
    let alone = Arc::clone(&answered_alone);
    let auth = Upstream::start(move |r| {
        arrived.pass();
        if !arrived.wait_for(REQUESTS, Duration::from_secs(10)) {
            alone.store(true, Ordering::SeqCst);
        }
        let user = r.header("authorization").unwrap_or("").to_string();
        Behaviour::Respond(
            format!("HTTP/1.1 200 OK\r\nx-user: {user}\r\ncontent-length: 0\r\n\r\n").into_bytes(),
        )
    });
    let up = Upstream::start(|r| {
        let user = r.header("x-auth-user").unwrap_or("").to_string();
        Behaviour::Respond(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{user}",
                user.len()
            )
            .into_bytes(),
        )
    });
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      auth:\n        conf: '{{\"upstream\": \"{}\", \"timeout_ms\": 30000}}'\n#END\n",
        up.addr, auth.addr
    );
    let gate = Gate::start(&config_yaml(&[("auth", 1, "auth_callout")], ""), &routes);
    let threads: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let addr = gate.addr;
            std::thread::spawn(move || {
                let r = send(
                    addr,
                    format!("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: user{i}\r\n\r\n")
                        .as_bytes(),
                );
                (i, r.status, r.text())
            })
        })
        .collect();
    for t in threads {
        let (i, status, body) = t.join().unwrap();
        assert_eq!((status, body), (200, format!("user{i}")));
    }
    // Six calls from two workers: concurrent, not one after another.
    assert!(
        !answered_alone.load(Ordering::SeqCst),
        "a call was answered before all {REQUESTS} were in flight: calls waited for each other"
    );
}

#[test]
fn issue_14_http_call_with_timeout_0_waits_for_the_answer() {
    // timeout_ms 0 is "no timeout given": the call gets the default
    // (30 s), not cancelled at once, so a slow auth service still answers.
    let auth = Upstream::start(|_| {
        std::thread::sleep(Duration::from_millis(300));
        Behaviour::Respond(b"HTTP/1.1 200 OK\r\nx-user: slow\r\ncontent-length: 0\r\n\r\n".to_vec())
    });
    let up = Upstream::named("app");
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      auth:\n        conf: '{{\"upstream\": \"{}\", \"timeout_ms\": 0}}'\n#END\n",
        up.addr, auth.addr
    );
    let gate = Gate::start(&config_yaml(&[("auth", 1, "auth_callout")], ""), &routes);
    let r = gate.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "app"));
    assert_eq!(up.last().header("x-auth-user"), Some("slow"));
    assert_eq!(auth.count(), 1);
}

#[test]
fn failed_callout_reports_zero_headers() {
    let up = Upstream::named("app");
    let auth = ClosedPort::reserve();
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      auth:\n        conf: '{{\"upstream\": \"{}\", \"timeout_ms\": 300}}'\n#END\n",
        up.addr, auth.addr
    );
    let gate = Gate::start(&config_yaml(&[("auth", 1, "auth_callout")], ""), &routes);
    let r = gate.get("/");
    assert_eq!((r.status, r.text().as_str()), (503, "auth unavailable\n"));
    assert_eq!(up.count(), 0);
}

#[test]
fn ticks_update_shared_data_that_every_worker_reads() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config_yaml(&[("ticks", 1, "tick_counter")], ""),
        &route_with("ticks", r#"{"period_ms": 20, "key": "ticks"}"#, &up),
    );
    // The first request configures the root context, which starts ticking.
    gate.get("/");
    let ticks = |r: &Response| r.header("x-ticks").and_then(|v| v.parse::<u64>().ok());
    assert!(
        eventually(WAIT, || ticks(&gate.get("/")).unwrap_or(0) >= 5),
        "ticks never advanced"
    );
    // New connections spread over both workers; each sees the shared value.
    let seen: Vec<u64> = (0..10).filter_map(|_| ticks(&gate.get("/"))).collect();
    assert_eq!(seen.len(), 10);
    assert!(seen.iter().all(|&n| n >= 5), "{seen:?}");
}

#[test]
fn queue_producer_and_consumer() {
    let up = Upstream::named("u");
    let routes = format!(
        "routes:\n  - {{uri: /consumer, upstream: {{nodes: {{\"{0}\": 1}}}}, plugins: {{consumer: {{conf: '{{\"role\": \"consumer\"}}'}}}}}}\n  - {{uri: \"/produce/*\", upstream: {{nodes: {{\"{0}\": 1}}}}, plugins: {{producer: {{conf: '{{\"role\": \"producer\"}}'}}}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(
        &config_yaml(
            &[("consumer", 1, "queue_pair"), ("producer", 2, "queue_pair")],
            "",
        ),
        &routes,
    );
    // The consumer's root context registers the queue on first use.
    assert_eq!(gate.get("/consumer").status, 200);
    for i in 0..5 {
        assert_eq!(gate.get(&format!("/produce/{i}")).status, 200);
        assert_eq!(up.last().header("x-enqueued"), Some("yes"));
    }
    let consumed = || {
        gate.get("/consumer")
            .header("x-consumed")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        eventually(WAIT, || consumed() >= 5),
        "on_queue_ready never consumed the items: {}",
        gate.log()
    );
}

#[test]
fn plugin_metrics_are_exported_on_the_status_listener() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config_yaml(
            &[("probe", 1, "metrics_probe")],
            "  status_listen: \"127.0.0.1:0\"\n",
        ),
        &route_with("probe", "{}", &up),
    );
    let status = gate.status_addr();
    for _ in 0..3 {
        assert_eq!(gate.get("/abc").status, 200);
    }
    let scrape = || {
        send(
            status,
            b"GET /apisix/prometheus/metrics HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
        )
        .text()
    };
    // A request is counted just after its response is written.
    let counted = "apisix_http_status{code=\"200\",route=\"main\"} 3";
    assert!(eventually(WAIT, || scrape().contains(counted)));
    let metrics = scrape();
    assert!(
        metrics.contains("apisix_wasm_probe_requests_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("apisix_wasm_probe_last_status 200"),
        "{metrics}"
    );
    assert!(
        metrics.contains("apisix_wasm_probe_path_len_count 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("apisix_http_status{code=\"200\",route=\"main\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("apisix_http_latency_bucket{type=\"request\""),
        "{metrics}"
    );
}

#[test]
fn properties_have_envoy_names_and_encodings() {
    let up = Upstream::named("u");
    let read = [
        "request.path",
        "request.url_path",
        "request.host",
        "request.method",
        "request.scheme",
        "request.protocol",
        "source.port",
        "destination.port",
        "plugin_name",
        "route_name",
        "remote_addr",
        "uri",
        "host",
        "request_method",
        "request.time",
        "request.id",
        "no.such.property",
    ];
    let conf = format!(
        "{{\"read\": [{}]}}",
        read.iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let gate = Gate::start(
        &config_yaml(&[("props", 1, "properties_probe")], ""),
        &route_with("props", &conf, &up),
    );
    let mut c = Client::connect(gate.addr);
    let local = c.local_port();
    let r = c.request("GET /p/q?x=1 HTTP/1.1\r\nHost: Example.test:81\r\n\r\n");
    assert_eq!(r.status, 200);
    let got = up.last();
    let prop = |name: &str| {
        got.header(&format!("x-prop-{}", name.replace('.', "-")))
            .unwrap_or_else(|| panic!("no header for {name}: {}", got.head))
            .to_string()
    };
    assert_eq!(prop("request.path"), hex(b"/p/q?x=1"));
    assert_eq!(prop("request.url_path"), hex(b"/p/q"));
    assert_eq!(prop("request.host"), hex(b"Example.test:81"));
    assert_eq!(prop("request.method"), hex(b"GET"));
    assert_eq!(prop("request.scheme"), hex(b"http"));
    assert_eq!(prop("request.protocol"), hex(b"HTTP/1.1"));
    assert_eq!(prop("source.port"), hex(&u64::from(local).to_le_bytes()));
    assert_eq!(
        prop("destination.port"),
        hex(&u64::from(gate.addr.port()).to_le_bytes())
    );
    assert_eq!(prop("plugin_name"), hex(b"props"));
    assert_eq!(prop("route_name"), hex(b"main"));
    assert_eq!(prop("remote_addr"), hex(b"127.0.0.1"));
    assert_eq!(prop("uri"), hex(b"/p/q"));
    assert_eq!(prop("request_method"), hex(b"GET"));
    assert_eq!(prop("request.time").len(), 16, "8-byte int64 ns");
    assert_ne!(prop("request.id"), "absent");
    assert_eq!(prop("no.such.property"), "absent");
    assert_eq!(
        got.header("x-prop-set"),
        Some(hex(b"set-by-plugin").as_str())
    );
}

#[test]
fn abi_0_1_0_module_loads_and_runs() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config_yaml(&[("old", 1, "abi_010")], ""),
        &route_with("old", "anything", &up),
    );
    assert_eq!(gate.get("/").status, 200);
    assert_eq!(up.last().header("x-abi"), Some("0.1.0"));
}

#[test]
fn a_tick_resumes_a_paused_request() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config_yaml(&[("pause", 1, "pause_then_continue")], ""),
        &route_with("pause", r#"{"delay_ms": 100}"#, &up),
    );
    let started = Instant::now();
    let r = gate.get("/");
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    // The pause is the behaviour: the request waited for the tick (the
    // plugin's own clock and the client's, which starts first, both say
    // at least 100 ms), and it was resumed at all (a request left paused
    // would not be answered within the client's `WAIT`).
    let paused: u64 = r.header("x-paused-ms").unwrap().parse().unwrap();
    assert!(paused >= 100, "resumed after {paused} ms");
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert_eq!(up.count(), 1);
}
