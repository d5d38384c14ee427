//! The committed Rust-SDK fixtures for bodies, callouts, timers, shared
//! state, metrics and properties, and the ABI 0.1.0 WAT fixture (see
//! `fixtures/README.md`, 16-24), driven through the API the way the proxy
//! drives them.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::main_fixtures::{header, load_fixture, request, start_fixture};
use super::*;
use crate::http::HeaderMap;
use crate::wasm::{shared, Action, CallResponse, Effect, HttpCall, MetricKind, PluginVm};

fn map(list: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in list {
        m.add(k.as_bytes(), v.as_bytes());
    }
    m
}

fn shared_string(key: &str) -> Option<String> {
    shared::get_shared_data(key.as_bytes())
        .ok()
        .map(|(v, _)| String::from_utf8(v).unwrap())
}

#[test]
fn body_rewrite_rewrites_the_buffered_response_body() {
    let mut vm = start_fixture("body_rewrite");
    assert!(vm.stream_hooks().response_body);
    let root = vm
        .configure(1, br#"{"from": "hello", "to": "goodbye, world"}"#)
        .unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    ex.response_headers.add(b"content-length", b"22");
    vm.on_response_headers(ctx, &mut ex, false).unwrap();
    assert_eq!(header(&ex.response_headers, "content-length"), None);
    ex.response_body = b"hello hel".to_vec();
    assert_eq!(vm.on_response_body(ctx, &mut ex, false), Ok(Action::Pause));
    assert_eq!(ex.response_body, b"hello hel", "untouched until the end");
    // The proxy buffered the rest and calls again with the whole body.
    ex.response_body = b"hello hello, hellhello".to_vec();
    assert_eq!(
        vm.on_response_body(ctx, &mut ex, true),
        Ok(Action::Continue)
    );
    assert_eq!(
        String::from_utf8(ex.response_body.clone()).unwrap(),
        "goodbye, world goodbye, world, hellgoodbye, world"
    );
    assert_eq!(vm.finish(ctx, &mut ex), Ok(true));

    let root = vm
        .configure(
            2,
            br#"{"from": "a", "to": "", "request": true, "response": false}"#,
        )
        .unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    ex.request_body = b"banana".to_vec();
    ex.response_body = b"banana".to_vec();
    assert_eq!(vm.on_request_body(ctx, &mut ex, true), Ok(Action::Continue));
    assert_eq!(
        vm.on_response_body(ctx, &mut ex, true),
        Ok(Action::Continue)
    );
    assert_eq!(
        (&ex.request_body[..], &ex.response_body[..]),
        (&b"bnn"[..], &b"banana"[..])
    );
    assert!(vm.configure(3, br#"{"from": "", "to": "x"}"#).is_err());
    assert!(!vm.is_broken());
}

#[test]
fn json_validator_answers_403_for_invalid_bodies() {
    let mut vm = start_fixture("json_validator");
    let root = vm.configure(1, br#"{"required": ["name"]}"#).unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    ex.request_body = br#"{"name":"#.to_vec();
    assert_eq!(vm.on_request_body(ctx, &mut ex, false), Ok(Action::Pause));
    ex.request_body = br#"{"name":"x","a":1}"#.to_vec();
    assert_eq!(vm.on_request_body(ctx, &mut ex, true), Ok(Action::Continue));
    assert_eq!(ex.local_response, None);
    vm.finish(ctx, &mut ex).unwrap();
    for bad in [&br#"{"nam":"x"}"#[..], b"[\"name\"]", b"not json", b""] {
        let ctx = vm.create_http_context(root).unwrap();
        let mut ex = exchange();
        ex.request_body = bad.to_vec();
        assert_eq!(vm.on_request_body(ctx, &mut ex, true), Ok(Action::Pause));
        let local = ex.local_response.clone().expect("a local response");
        assert_eq!(
            (local.status, &local.body[..]),
            (403, &b"invalid body\n"[..])
        );
        assert_eq!(
            local.headers,
            [(b"content-type".to_vec(), b"text/plain".to_vec())]
        );
        vm.finish(ctx, &mut ex).unwrap();
    }
}

/// Sends one request through `auth_callout` up to its call; returns the
/// context, the exchange and the call.
fn auth_request(vm: &mut PluginVm, root: u32, forged: bool) -> (u32, Exchange, HttpCall) {
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    ex.request_headers.add(b"authorization", b"Bearer t0ken");
    if forged {
        ex.request_headers.add(b"x-auth-user", b"forged");
    }
    assert_eq!(vm.on_request_headers(ctx, &mut ex, true), Ok(Action::Pause));
    let effects = vm.take_effects();
    let [Effect::HttpCall(call)] = effects.as_slice() else {
        panic!("expected one call: {effects:?}");
    };
    (ctx, ex, call.clone())
}

#[test]
fn auth_callout_pauses_calls_and_resumes_or_replies() {
    let mut vm = start_fixture("auth_callout");
    vm.set_call_targets(Arc::new(|name: &str| name == "auth"));
    let root = vm.configure(1, b"").unwrap();

    // 200 with x-user: the forged header is replaced and the request resumes.
    let (ctx, mut ex, call) = auth_request(&mut vm, root, true);
    assert_eq!(
        call,
        HttpCall {
            call_id: call.call_id,
            root,
            context: ctx,
            target: "auth".into(),
            headers: map(&[
                (":method", "GET"),
                (":path", "/check"),
                (":authority", "auth"),
                ("authorization", "Bearer t0ken"),
            ]),
            body: vec![],
            trailers: HeaderMap::new(),
            timeout: Duration::from_millis(1000),
        }
    );
    ex.call_response = Some(CallResponse {
        headers: map(&[(":status", "200"), ("x-user", "alice")]),
        body: b"{}".to_vec(),
        trailers: HeaderMap::new(),
    });
    vm.on_http_call_response(&call, &mut ex).unwrap();
    assert_eq!(
        vm.take_effects(),
        [Effect::Continue {
            context: ctx,
            response: false
        }]
    );
    assert_eq!(
        ex.request_headers
            .iter()
            .filter(|(k, _)| *k == b"x-auth-user")
            .map(|(_, v)| v)
            .collect::<Vec<_>>(),
        [&b"alice"[..]],
        "the forged value is replaced"
    );
    assert_eq!(ex.local_response, None);
    assert_eq!(vm.finish(ctx, &mut ex), Ok(true));

    // 200 without x-user: the header is removed.
    let (ctx, mut ex, call) = auth_request(&mut vm, root, true);
    ex.call_response = Some(CallResponse {
        headers: map(&[(":status", "200")]),
        ..CallResponse::default()
    });
    vm.on_http_call_response(&call, &mut ex).unwrap();
    assert_eq!(header(&ex.request_headers, "x-auth-user"), None);
    assert_eq!(vm.take_effects().len(), 1);
    vm.finish(ctx, &mut ex).unwrap();

    // 403: a local 401, no resume.
    let (ctx, mut ex, call) = auth_request(&mut vm, root, false);
    ex.call_response = Some(CallResponse {
        headers: map(&[(":status", "403")]),
        ..CallResponse::default()
    });
    vm.on_http_call_response(&call, &mut ex).unwrap();
    let local = ex.local_response.clone().unwrap();
    assert_eq!(
        (local.status, &local.body[..]),
        (401, &b"unauthorized\n"[..])
    );
    assert_eq!(
        local.headers,
        [(b"www-authenticate".to_vec(), b"Bearer".to_vec())]
    );
    assert_eq!(vm.take_effects(), []);
    vm.finish(ctx, &mut ex).unwrap();

    // Failed or timed out: a local 503.
    let (ctx, mut ex, call) = auth_request(&mut vm, root, false);
    ex.call_response = None;
    vm.on_http_call_response(&call, &mut ex).unwrap();
    assert_eq!(ex.local_response.as_ref().map(|l| l.status), Some(503));
    vm.finish(ctx, &mut ex).unwrap();

    // An upstream that is neither known nor host:port: a local 500 at once.
    let root = vm.configure(2, br#"{"upstream": "nowhere"}"#).unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    assert_eq!(vm.on_request_headers(ctx, &mut ex, true), Ok(Action::Pause));
    assert_eq!(vm.take_effects(), []);
    let local = ex.local_response.clone().unwrap();
    assert_eq!(
        (local.status, &local.body[..]),
        (500, &b"callout failed\n"[..])
    );
    vm.finish(ctx, &mut ex).unwrap();

    // host:port targets need no configuration.
    let root = vm
        .configure(3, br#"{"upstream": "127.0.0.1:9", "timeout_ms": 5}"#)
        .unwrap();
    let (_, _, call) = auth_request(&mut vm, root, false);
    assert_eq!(
        (call.target.as_str(), call.timeout),
        ("127.0.0.1:9", Duration::from_millis(5))
    );
    assert!(!vm.is_broken());
}

#[test]
fn tick_counter_counts_ticks_in_shared_data() {
    let key = "fixture-test-ticks";
    let mut vm = start_fixture("tick_counter");
    let root = vm
        .configure(
            1,
            format!(r#"{{"period_ms": 50, "key": "{key}"}}"#).as_bytes(),
        )
        .unwrap();
    assert_eq!(vm.tick_periods(), [(root, Duration::from_millis(50))]);
    let (_, _, ex) = request(&mut vm, root, exchange());
    assert_eq!(
        header(&ex.response_headers, "x-ticks").as_deref(),
        Some("0")
    );
    for _ in 0..4 {
        vm.on_tick(root).unwrap();
    }
    assert_eq!(shared_string(key).as_deref(), Some("4"));
    let (_, _, ex) = request(&mut vm, root, exchange());
    assert_eq!(
        header(&ex.response_headers, "x-ticks").as_deref(),
        Some("4")
    );
}

/// Runs one request through a `queue_pair` VM and returns
/// (`x-enqueued`, `x-consumed`).
fn queue_pair_request(
    vm: &mut PluginVm,
    root: u32,
    path: &str,
) -> (Option<String>, Option<String>) {
    let mut ex = exchange();
    ex.request_headers.replace(b":path", path.as_bytes());
    let (req, resp, ex) = request(vm, root, ex);
    assert_eq!((req, resp), (Ok(Action::Continue), Ok(Action::Continue)));
    (
        header(&ex.request_headers, "x-enqueued"),
        header(&ex.response_headers, "x-consumed"),
    )
}

#[test]
fn queue_pair_delivers_enqueues_to_the_consumer_across_threads() {
    let plugin = load_fixture("queue_pair", |_| {}).unwrap();
    let producer = {
        let plugin = Arc::clone(&plugin);
        move |paths: &'static [&'static str]| {
            let plugin = Arc::clone(&plugin);
            std::thread::spawn(move || {
                let mut vm = PluginVm::start(plugin).unwrap();
                let root = vm.configure(1, br#"{"role": "producer"}"#).unwrap();
                paths
                    .iter()
                    .map(|path| queue_pair_request(&mut vm, root, path).0.unwrap())
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap()
        }
    };
    // No consumer yet: the queue does not exist.
    assert_eq!(producer(&["/early"]), ["no"]);

    let mut consumer = PluginVm::start(Arc::clone(&plugin)).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    consumer.set_queue_notifier(Arc::new(move |root, queue| {
        let _ = tx.lock().unwrap().send((root, queue));
    }));
    let root = consumer.configure(1, br#"{"role": "consumer"}"#).unwrap();
    assert_eq!(producer(&["/a", "/b/c"]), ["yes", "yes"]);
    let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(first, second);
    assert_eq!(first.0, root);
    // The first notification drains both items; the second finds none.
    consumer.on_queue_ready(first.0, first.1).unwrap();
    consumer.on_queue_ready(second.0, second.1).unwrap();
    assert_eq!(shared_string("consumed").as_deref(), Some("2"));
    assert_eq!(shared_string("last_event").as_deref(), Some("/b/c"));
    assert_eq!(
        queue_pair_request(&mut consumer, root, "/"),
        (None, Some("2".into()))
    );
}

#[test]
fn metrics_probe_counts_and_exports() {
    let mut vm = start_fixture("metrics_probe");
    let root = vm.configure(1, br#"{"prefix": "fixture_mp"}"#).unwrap();
    let mut counts = vec![];
    for status in ["200", "404"] {
        let mut ex = exchange();
        ex.request_headers.replace(b":path", b"/p?q=1");
        ex.response_headers.replace(b":status", status.as_bytes());
        let (_, _, ex) = request(&mut vm, root, ex);
        counts.push(header(&ex.response_headers, "x-probe-count").unwrap());
    }
    assert_eq!(counts, ["1", "2"]);
    // A second root defines the same metrics: same ids, same values.
    vm.configure(2, br#"{"prefix": "fixture_mp"}"#).unwrap();
    let snapshot = crate::wasm::metrics_snapshot();
    let value = |name: &str, kind| {
        snapshot
            .iter()
            .find(|(n, k, _)| n == name && *k == kind)
            .map(|m| m.2)
    };
    assert_eq!(
        value("fixture_mp_requests_total", MetricKind::Counter),
        Some(2)
    );
    assert_eq!(
        value("fixture_mp_last_status", MetricKind::Gauge),
        Some(404)
    );
    assert_eq!(
        value("fixture_mp_path_len", MetricKind::Histogram),
        Some(12)
    );
    let text = crate::wasm::metrics_text("tinygate_plugin_", &[]);
    for line in [
        "# TYPE tinygate_plugin_fixture_mp_requests_total counter",
        "tinygate_plugin_fixture_mp_requests_total 2",
        "# TYPE tinygate_plugin_fixture_mp_last_status gauge",
        "tinygate_plugin_fixture_mp_last_status 404",
        "# TYPE tinygate_plugin_fixture_mp_path_len histogram",
        "tinygate_plugin_fixture_mp_path_len_bucket{le=\"1\"} 0",
        "tinygate_plugin_fixture_mp_path_len_bucket{le=\"10\"} 2",
        "tinygate_plugin_fixture_mp_path_len_sum 12",
        "tinygate_plugin_fixture_mp_path_len_count 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn properties_probe_sees_envoy_encodings() {
    let plugin = load_fixture("properties_probe", |spec| {
        spec.root_id = "probe-root".into()
    })
    .unwrap();
    let mut vm = PluginVm::start(plugin).unwrap();
    let conf = br#"{"read": ["request.path", "request.url_path", "request.host", "request.method",
        "request.scheme", "request.protocol", "request.id", "request.time",
        "source.address", "source.port", "destination.address", "destination.port",
        "response.code", "plugin_name", "plugin_root_id", "plugin_vm_id",
        "route_name", "remote_addr", "uri", "host", "request_method"]}"#;
    let root = vm.configure(1, conf).unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = Exchange::default();
    for (k, v) in [
        (":method", "POST"),
        (":path", "/p?q=1"),
        (":authority", "api.example:8080"),
        (":scheme", "http"),
    ] {
        ex.request_headers.add(k.as_bytes(), v.as_bytes());
    }
    ex.info = crate::wasm::StreamInfo {
        source: Some("192.0.2.7:54321".parse().unwrap()),
        destination: Some("127.0.0.1:9080".parse().unwrap()),
        request_id: "rid-1".into(),
        route_name: "r1".into(),
        protocol: "HTTP/1.1",
        start_time_ns: 1_700_000_000_000_000_001,
        response_code: None,
        tls: None,
    };
    assert_eq!(
        vm.on_request_headers(ctx, &mut ex, true),
        Ok(Action::Continue)
    );
    let int = |n: i64| hex(&n.to_le_bytes());
    let want = [
        ("request-path", hex(b"/p?q=1")),
        ("request-url_path", hex(b"/p")),
        ("request-host", hex(b"api.example:8080")),
        ("request-method", hex(b"POST")),
        ("request-scheme", hex(b"http")),
        ("request-protocol", hex(b"HTTP/1.1")),
        ("request-id", hex(b"rid-1")),
        ("request-time", int(1_700_000_000_000_000_001)),
        ("source-address", hex(b"192.0.2.7:54321")),
        ("source-port", "31d4000000000000".to_owned()),
        ("destination-address", hex(b"127.0.0.1:9080")),
        ("destination-port", int(9080)),
        ("response-code", "absent".to_owned()),
        ("plugin_name", hex(b"properties_probe")),
        ("plugin_root_id", hex(b"probe-root")),
        ("plugin_vm_id", hex(b"properties_probe")),
        ("route_name", hex(b"r1")),
        ("remote_addr", hex(b"192.0.2.7")),
        ("uri", hex(b"/p")),
        ("host", hex(b"api.example")),
        ("request_method", hex(b"POST")),
        ("set", "7365742d62792d706c7567696e".to_owned()),
    ];
    for (name, value) in &want {
        assert_eq!(
            header(&ex.request_headers, &format!("x-prop-{name}")).as_deref(),
            Some(value.as_str()),
            "{name}"
        );
    }
    ex.response_headers.add(b":status", b"200");
    ex.info.response_code = Some(200);
    assert_eq!(
        vm.on_response_headers(ctx, &mut ex, true),
        Ok(Action::Continue)
    );
    assert_eq!(
        header(&ex.response_headers, "x-prop-response-code").as_deref(),
        Some("c800000000000000")
    );
    assert_eq!(vm.finish(ctx, &mut ex), Ok(true));
}

#[test]
fn pause_then_continue_resumes_from_a_tick() {
    let mut vm = start_fixture("pause_then_continue");
    let root = vm.configure(1, br#"{"delay_ms": 50}"#).unwrap();
    assert_eq!(vm.tick_periods(), [(root, Duration::from_millis(10))]);
    let paused_at = Instant::now();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    assert_eq!(vm.on_request_headers(ctx, &mut ex, true), Ok(Action::Pause));
    // A request whose client went away while it waited is skipped.
    let gone = vm.create_http_context(root).unwrap();
    let mut gone_ex = exchange();
    assert_eq!(
        vm.on_request_headers(gone, &mut gone_ex, true),
        Ok(Action::Pause)
    );
    assert_eq!(vm.finish(gone, &mut gone_ex), Ok(true));

    vm.on_tick(root).unwrap();
    if paused_at.elapsed() < Duration::from_millis(40) {
        assert_eq!(vm.take_effects(), [], "too early");
    }
    std::thread::sleep(Duration::from_millis(60));
    vm.on_tick(root).unwrap();
    assert_eq!(
        vm.take_effects(),
        [Effect::Continue {
            context: ctx,
            response: false
        }]
    );
    vm.on_response_headers(ctx, &mut ex, true).unwrap();
    let waited: u64 = header(&ex.response_headers, "x-paused-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(waited >= 50, "{waited}");
    vm.finish(ctx, &mut ex).unwrap();
}

#[test]
fn abi_010_runs_with_the_old_signatures() {
    let mut vm = start_fixture("abi_010");
    assert!(vm.configure(1, b"").is_err(), "an empty config fails");
    let root = vm.configure(2, b"{}").unwrap();
    let (req, resp, ex) = request(&mut vm, root, exchange());
    assert_eq!((req, resp), (Ok(Action::Continue), Ok(Action::Continue)));
    assert_eq!(
        header(&ex.request_headers, "x-abi").as_deref(),
        Some("0.1.0")
    );
}
