//! The official SDKs' example plugins, built unmodified from the SDKs'
//! source (`fixtures/README.md`, "The official SDKs' examples"), run the
//! way their READMEs run them in Envoy: what a user of those SDKs expects
//! to see. The compatibility table of every example is in
//! `docs/plugins.md`.

use crate::util::*;

/// `multiple_dispatches` (Go SDK): ten `proxy_http_call`s from the
/// response headers hook to the cluster `httpbin`, with an empty
/// `:authority`, while the response waits; the last answer adds
/// `total-dispatched: 10` and resumes it. Envoy requires only that
/// `:authority` be there, and the call names its target in `Host` (an
/// empty `Host` is a 400 at most servers).
#[test]
fn go_multiple_dispatches_sends_ten_calls_with_an_empty_authority_then_resumes() {
    let app = Upstream::named("app");
    let httpbin = Upstream::named("httpbin");
    let routes = format!(
        "upstreams:
  - id: httpbin
    nodes: {{\"{}\": 1}}
routes:
  - id: r
    uri: /*
    upstream: {{nodes: {{\"{}\": 1}}}}
    plugins: {{dispatch: {{conf: example}}}}
#END
",
        httpbin.addr, app.addr
    );
    let gate = Gate::start(
        &config_yaml(&[("dispatch", 1, "go_multiple_dispatches")], ""),
        &routes,
    );
    let r = gate.get("/");
    assert_eq!(
        (r.status, r.text().as_str(), r.header("total-dispatched")),
        (200, "app", Some("10")),
        "{}",
        gate.log()
    );
    let calls = httpbin.received.lock().unwrap().clone();
    assert_eq!(calls.len(), 10, "{}", gate.log());
    for call in &calls {
        assert_eq!((call.method.as_str(), call.target.as_str()), ("GET", "/"));
        assert_eq!(call.header("host"), Some(httpbin.addr.to_string().as_str()));
    }
    assert!(gate
        .log()
        .contains("response resumed after processed 10 dispatched request"));
}

/// `shared_data` (Go SDK): `OnVMStart` initialises a shared counter (set
/// to empty, unconditionally) and every request increments it. Envoy
/// starts every worker's VM when it loads its configuration, so the log
/// counts 1, 2, 3, ... whichever worker serves; a worker whose VM started
/// on its first request would reset what the other had counted.
#[test]
fn go_shared_data_counts_across_workers_from_the_first_request() {
    const REQUESTS: usize = 16;
    let app = Upstream::named("app");
    let routes = format!(
        "routes:\n  - id: r\n    uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    \
         plugins: {{counter: {{conf: example}}}}\n#END\n",
        app.addr
    );
    let gate = Gate::start(
        &config_yaml(&[("counter", 1, "go_shared_data")], ""),
        &routes,
    );
    // Each on a new connection: the kernel spreads them over both workers.
    for _ in 0..REQUESTS {
        assert_eq!(gate.get("/").status, 200, "{}", gate.log());
    }
    let log = gate.log();
    let counted: Vec<usize> = log
        .lines()
        .filter_map(|l| l.split("shared value: ").nth(1))
        .map(|n| n.trim().parse().expect("a count"))
        .collect();
    assert_eq!(counted, (1..=REQUESTS).collect::<Vec<_>>(), "{log}");
}

/// The `tick_counter` conf that ticks every `period_ms` into `key`; a
/// period of an hour reads `key` without ticking in the test's time.
fn ticks_conf(key: &str, period_ms: u64) -> String {
    format!("'{{\"key\": \"{key}\", \"period_ms\": {period_ms}}}'")
}

/// Routes `reader` (reads shared key `k` into `x-ticks`, never ticks) and,
/// when `with_ticker`, `ticker` (ticks into `k` every 10 ms) that no
/// request ever reaches.
fn ticker_routes(app: std::net::SocketAddr, with_ticker: bool) -> String {
    let route = |id: &str, conf: &str| {
        format!(
            "  - id: {id}\n    uri: /{id}\n    upstream: {{nodes: {{\"{app}\": 1}}}}\n    \
             plugins: {{ticks: {{conf: {conf}}}}}\n"
        )
    };
    let mut routes = route("reader", &ticks_conf("k", 3_600_000));
    if with_ticker {
        routes.push_str(&route("ticker", &ticks_conf("k", 10)));
    }
    format!("routes:\n{routes}#END\n")
}

/// The ticks `reader` reports.
fn ticks_read(gate: &Gate) -> u64 {
    let r = gate.get("/reader");
    assert_eq!(r.status, 200, "{}", gate.log());
    r.header("x-ticks")
        .and_then(|t| t.parse().ok())
        .expect("x-ticks")
}

/// Envoy configures every plugin entry when it loads its configuration:
/// a plugin that sets a tick period in `proxy_on_configure` ticks from the
/// start, with no traffic (the Go SDK's `helloworld` and
/// `dispatch_call_on_tick` examples do nothing else). Route `ticker` never
/// gets a request, yet its ticks count.
#[test]
fn a_route_that_gets_no_request_ticks_from_the_start() {
    let app = Upstream::named("app");
    let gate = Gate::start(
        &config_yaml(&[("ticks", 1, "tick_counter")], ""),
        &ticker_routes(app.addr, true),
    );
    assert!(eventually(WAIT, || ticks_read(&gate) > 0), "{}", gate.log());
}

/// The same after a reload: the entry the reload adds is configured by
/// every worker as it takes the configuration up, not on a first request;
/// and its 10 ms ticks do not wait for the hour-long sleep of the tick
/// task the route `reader` started (one task per plugin and worker).
#[test]
fn a_route_a_reload_adds_ticks_without_a_request() {
    let app = Upstream::named("app");
    let gate = Gate::start(
        &config_yaml(&[("ticks", 1, "tick_counter")], ""),
        &ticker_routes(app.addr, false),
    );
    assert_eq!(ticks_read(&gate), 0);
    replace_file(
        &gate.dir.join("apisix.yaml"),
        &ticker_routes(app.addr, true),
    );
    gate.signal(rustix::process::Signal::HUP);
    assert!(gate.wait_for_log(" reloaded ("), "{}", gate.log());
    assert!(eventually(WAIT, || ticks_read(&gate) > 0), "{}", gate.log());
}

/// `http_headers` (Rust SDK): answers `/hello` itself in its request
/// headers hook and logs every response header in its response headers
/// hook. Envoy encodes a local reply through the filters that decoded the
/// request, the one that answered included, with `content-type:
/// text/plain` for a body without one: the example's README shows the
/// plugin logging its own answer's headers.
#[test]
fn rust_http_headers_sees_its_own_answer_which_has_envoys_content_type() {
    let app = Upstream::named("app");
    let routes = format!(
        "routes:\n  - id: r\n    uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    \
         plugins: {{headers: {{conf: example}}}}\n#END\n",
        app.addr
    );
    let gate = Gate::start(
        &config_yaml(&[("headers", 1, "rust_http_headers")], ""),
        &routes,
    );
    let r = gate.get("/hello");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "Hello, World!\n"),
        "{}",
        gate.log()
    );
    assert_eq!(r.header("hello"), Some("World"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(app.count(), 0);
    let log = gate.log();
    for seen in [
        "<- :status: 200",
        "<- hello: World",
        "<- powered-by: proxy-wasm",
        "<- content-type: text/plain",
        "<- content-length: 14",
    ] {
        assert!(log.contains(seen), "{seen:?} not logged:\n{log}");
    }
    // Any other path goes to the node.
    assert_eq!(gate.get("/other").status, 200);
    assert_eq!(app.count(), 1);
}

/// What a plugin writes to stderr is logged a record per line, whatever
/// pieces it writes it in: Go's runtime writes a panic (the Go SDK panics
/// on any unexpected status, and on a request to a plugin with no HTTP
/// context, such as its `network` example) in some twenty writes, which
/// read as twenty log lines of fragments. A line left unfinished is
/// logged when the callback returns.
#[test]
fn a_line_written_in_pieces_is_one_log_record() {
    let dir = temp_dir();
    let module = wat::parse_str(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write"
               (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 100) "panic: ")
             (data (i32.const 110) "boom")
             (data (i32.const 120) "\ngoroutine ")
             (data (i32.const 140) "1")
             (data (i32.const 150) " [running]:\n")
             (data (i32.const 170) "no newline")
             (func $write (param $at i32) (param $len i32)
               (i32.store (i32.const 0) (local.get $at))
               (i32.store (i32.const 4) (local.get $len))
               (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8))))
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
               (call $write (i32.const 100) (i32.const 7))
               (call $write (i32.const 110) (i32.const 4))
               (call $write (i32.const 120) (i32.const 11))
               (call $write (i32.const 140) (i32.const 1))
               (call $write (i32.const 150) (i32.const 12))
               (call $write (i32.const 170) (i32.const 10))
               (i32.const 0)))"#,
    )
    .unwrap();
    std::fs::write(dir.join("pieces.wasm"), module).unwrap();
    let app = Upstream::named("app");
    std::fs::write(
        dir.join("config.yaml"),
        "apisix:\n  node_listen:\n    - {ip: 127.0.0.1, port: 0}\nwasm:\n  plugins:\n    \
         - {name: pieces, priority: 1, file: pieces.wasm}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("apisix.yaml"),
        format!(
            "routes:\n  - id: r\n    uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    \
             plugins: {{pieces: {{conf: x}}}}\n#END\n",
            app.addr
        ),
    )
    .unwrap();
    let gate = Gate::start_in(dir);
    assert_eq!(gate.get("/").status, 200, "{}", gate.log());
    let log = gate.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("[ERROR wasm::pieces]"))
        .collect();
    assert_eq!(
        lines,
        [
            "[ERROR wasm::pieces] [2] panic: boom",
            "[ERROR wasm::pieces] [2] goroutine 1 [running]:",
            "[ERROR wasm::pieces] [2] no newline",
        ],
        "{log}"
    );
}
