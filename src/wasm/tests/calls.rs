//! HTTP calls (validation, effects, delivering responses), ticks, and
//! shared-queue notifications across threads.

use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::http::HeaderMap;
use crate::wasm::pairs;
use crate::wasm::{Action, CallResponse, Effect, HttpCall, PluginVm};

fn map(list: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in list {
        m.add(k.as_bytes(), v.as_bytes());
    }
    m
}

fn ser(list: &[(&str, &str)]) -> Vec<u8> {
    pairs::serialize(list.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
}

/// `(call $proxy_http_call TARGET HEADERS BODY TRAILERS TIMEOUT RET)` with
/// the call id written to `ret`.
fn http_call(w: &Wat, target: &str, headers: &[u8], body: &str, timeout: u32, ret: u32) -> String {
    format!(
        "(call $proxy_http_call {} {} {} {} (i32.const {timeout}) (i32.const {ret}))",
        w.s(target),
        w.s(headers),
        w.s(body),
        w.s(ser(&[("x-trailer", "t")])),
    )
}

const GET: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/check"),
    (":authority", "auth"),
    ("Authorization", "Bearer x"),
];

#[test]
fn http_call_validates_like_envoy_and_records_an_effect() {
    let w = Wat::new();
    let without = |name: &str| {
        let kept: Vec<_> = GET.iter().copied().filter(|(k, _)| *k != name).collect();
        ser(&kept)
    };
    let calls = [
        http_call(&w, "auth", &without(":method"), "", 1000, 16),
        http_call(&w, "auth", &without(":path"), "", 1000, 16),
        http_call(
            &w,
            "auth",
            &ser(&[(":method", "GET"), (":path", "/"), ("host", "auth")]),
            "",
            1000,
            16,
        ),
        http_call(
            &w,
            "auth",
            &ser(&[(":method", "GET"), (":path", ""), (":authority", "a")]),
            "",
            1000,
            16,
        ),
        http_call(&w, "unknown-upstream", &ser(GET), "", 1000, 16),
        http_call(&w, "auth:http", &ser(GET), "", 1000, 16),
        http_call(&w, "auth", &ser(GET)[..10], "", 1000, 16),
        http_call(
            &w,
            "auth",
            &ser(&[
                (":method", "GET"),
                (":path", "/"),
                (":authority", "a"),
                ("x", "a\r\nb"),
            ]),
            "",
            1000,
            16,
        ),
        // The valid ones: a known upstream, and host:port with an empty
        // `:authority` (Envoy asks only that it be there; the Go SDK's
        // `multiple_dispatches` example sends it empty).
        http_call(&w, "auth", &ser(GET), "", 1000, 16),
        http_call(
            &w,
            "127.0.0.1:9000",
            &ser(&[(":method", "POST"), (":path", "/log"), (":authority", "")]),
            "payload",
            0,
            20,
        ),
        "(i32.ne (i32.load (i32.const 16)) (i32.load (i32.const 20)))".to_owned(),
    ];
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, c)| store_slot(i as u32, c))
        .collect();
    let mut vm = start(&w.module(&format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body} (i32.const 1))"#
    )));
    vm.set_call_targets(Arc::new(|name: &str| name == "auth"));
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    assert_eq!(
        vm.on_request_headers(ctx, &mut exchange(), true),
        Ok(Action::Pause)
    );
    assert_eq!(
        slots(&vm, calls.len() as u32),
        [2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 1]
    );
    let ids = vm.read_memory(16, 8);
    let id1 = u32::from_le_bytes(ids[..4].try_into().unwrap());
    let id2 = u32::from_le_bytes(ids[4..].try_into().unwrap());
    assert!(id1 != 0 && id2 != 0);
    assert_eq!(
        vm.take_effects(),
        [
            Effect::HttpCall(HttpCall {
                call_id: id1,
                root,
                context: ctx,
                target: "auth".into(),
                headers: map(GET),
                body: vec![],
                trailers: map(&[("x-trailer", "t")]),
                timeout: Duration::from_millis(1000),
            }),
            Effect::HttpCall(HttpCall {
                call_id: id2,
                root,
                context: ctx,
                target: "127.0.0.1:9000".into(),
                headers: map(&[(":method", "POST"), (":path", "/log"), (":authority", "")]),
                body: b"payload".to_vec(),
                trailers: map(&[("x-trailer", "t")]),
                // 0 is no timeout given: the default, never "at once".
                timeout: crate::wasm::abi::calls::DEFAULT_CALL_TIMEOUT,
            }),
        ]
    );
}

#[test]
fn http_call_without_call_targets_accepts_only_host_port() {
    let w = Wat::new();
    let body = [
        store_slot(0, &http_call(&w, "auth", &ser(GET), "", 10, 16)),
        store_slot(1, &http_call(&w, "auth:8080", &ser(GET), "", 10, 16)),
    ]
    .concat();
    // Made from the root context during on_configure: context == root.
    let mut vm = start(&w.module(&format!(
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) {body} (i32.const 1))"#
    )));
    let root = vm.configure(1, b"").unwrap();
    assert_eq!(slots(&vm, 2), [2, 0]);
    let effects = vm.take_effects();
    let [Effect::HttpCall(call)] = effects.as_slice() else {
        panic!("{effects:?}");
    };
    assert_eq!((call.root, call.context), (root, root));
    assert_eq!(call.target, "auth:8080");
}

/// The module behind the call-response tests: `on_request_headers`
/// dispatches a call per header `x-calls` (1 or 2 calls) and pauses;
/// `on_http_call_response` records its arguments, switches to the waiting
/// stream, copies the call's `:status`, body and trailer count into request
/// headers, replaces the paused request body, and resumes.
fn call_response_module(w: &Wat) -> String {
    let record = [
        store_slot(0, "(local.get $root)"),
        store_slot(1, "(local.get $id)"),
        store_slot(2, "(local.get $nh)"),
        store_slot(3, "(local.get $nb)"),
        store_slot(4, "(local.get $nt)"),
        store_slot(5, "(call $proxy_set_effective_context (global.get $waiting))"),
        store_slot(6, &format!("(call $proxy_get_header_map_value (i32.const 6) {} (i32.const 16) (i32.const 20))", w.s(":status"))),
        format!("(if (i32.eqz (i32.load (i32.const {}))) (then (drop (call $proxy_add_header_map_value (i32.const 0) {} (i32.load (i32.const 16)) (i32.load (i32.const 20))))))", SLOTS + 24, w.s("x-call-status")),
        store_slot(7, "(call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (i32.const -1) (i32.const 16) (i32.const 20))"),
        format!("(if (i32.eqz (i32.load (i32.const {}))) (then (drop (call $proxy_add_header_map_value (i32.const 0) {} (i32.load (i32.const 16)) (i32.load (i32.const 20))))))", SLOTS + 28, w.s("x-call-body")),
        store_slot(8, "(call $proxy_get_header_map_pairs (i32.const 7) (i32.const 16) (i32.const 20))"),
        store_slot(9, "(i32.load (i32.const 20))"),
        store_slot(10, "(call $proxy_get_status (i32.const 24) (i32.const 16) (i32.const 20))"),
        store_slot(11, "(i32.load (i32.const 24))"),
        store_slot(12, "(i32.load (i32.const 20))"),
        store_slot(13, &format!("(call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const -1) {})", w.s("rewritten"))),
        store_slot(14, "(call $proxy_continue_stream (i32.const 0))"),
    ]
    .concat();
    let dispatch = |ret: u32| {
        format!(
            "(drop {})",
            http_call(w, "127.0.0.1:9001", &ser(GET), "", 500, ret)
        )
    };
    format!(
        r#"(global $waiting (mut i32) (i32.const 0))
           (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param i32) (result i32)
             (global.set $waiting (local.get $ctx))
             {}
             (if (i32.eq (local.get $n) (i32.const 7)) (then {}))
             (i32.const 1))
           (func (export "proxy_on_http_call_response") (param $root i32) (param $id i32) (param $nh i32) (param $nb i32) (param $nt i32)
             {record})"#,
        dispatch(27000),
        dispatch(27004),
    )
}

fn take_call(vm: &mut PluginVm) -> HttpCall {
    let effects = vm.take_effects();
    match effects.as_slice() {
        [Effect::HttpCall(call)] => call.clone(),
        _ => panic!("expected one call: {effects:?}"),
    }
}

#[test]
fn http_call_response_is_readable_and_resumes_the_stream() {
    let w = Wat::new();
    let mut vm = start(&w.module(&call_response_module(&w)));
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    ex.request_body = b"original".to_vec();
    assert_eq!(
        vm.on_request_headers(ctx, &mut ex, false),
        Ok(Action::Pause)
    );
    let call = take_call(&mut vm);
    assert_eq!((call.root, call.context), (root, ctx));

    ex.call_response = Some(CallResponse {
        headers: map(&[(":status", "200"), ("x-user", "alice")]),
        body: b"ok".to_vec(),
        trailers: map(&[("grpc-status", "0")]),
    });
    assert_eq!(vm.on_http_call_response(&call, &mut ex), Ok(()));
    let s = slots(&vm, 15);
    assert_eq!(&s[..5], [root, call.call_id, 2, 2, 1], "callback arguments");
    assert_eq!(
        &s[5..],
        [
            0,
            0,
            0,
            0,
            pairs::serialized_size(map(&[("grpc-status", "0")]).iter()) as u32,
            0,
            0,
            0,
            0,
            0
        ],
        "switch, status, body, trailers, get_status (0, no message), set body, continue"
    );
    assert_eq!(ex.request_headers.get(b"x-call-status"), Some(&b"200"[..]));
    assert_eq!(ex.request_headers.get(b"x-call-body"), Some(&b"ok"[..]));
    assert_eq!(
        ex.request_body, b"rewritten",
        "the paused stream's body is editable"
    );
    assert_eq!(
        vm.take_effects(),
        [Effect::Continue {
            context: ctx,
            response: false
        }]
    );

    // Delivered already: refused without breaking the VM.
    let fault = vm.on_http_call_response(&call, &mut ex).err().unwrap();
    assert_eq!(
        fault.reason,
        format!("no HTTP call {} is in flight", call.call_id)
    );
    let forged = HttpCall {
        call_id: 4242,
        ..call.clone()
    };
    assert!(vm.on_http_call_response(&forged, &mut ex).is_err());
    assert!(!vm.is_broken());
}

#[test]
fn a_failed_call_has_no_headers_and_an_unavailable_status() {
    let w = Wat::new();
    let mut vm = start(&w.module(&call_response_module(&w)));
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    vm.on_request_headers(ctx, &mut ex, true).unwrap();
    let call = take_call(&mut vm);
    ex.call_response = None;
    vm.on_http_call_response(&call, &mut ex).unwrap();
    let s = slots(&vm, 15);
    assert_eq!(&s[..5], [root, call.call_id, 0, 0, 0]);
    assert_eq!(
        &s[5..13],
        [0, 1, 1, 0, 0, 0, 14, 11],
        "no :status, no body (NOT_FOUND), no trailers, status 14 \"call failed\""
    );
    assert_eq!(ex.request_headers.get(b"x-call-status"), None);
}

#[test]
fn several_calls_in_flight_are_answered_in_any_order() {
    let w = Wat::new();
    let mut vm = start(&w.module(&call_response_module(&w)));
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    ex.request_headers.add(b"x-calls", b"2");
    vm.on_request_headers(ctx, &mut ex, true).unwrap();
    let effects = vm.take_effects();
    let calls: Vec<HttpCall> = effects
        .into_iter()
        .map(|e| match e {
            Effect::HttpCall(call) => call,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0].call_id, calls[1].call_id);
    for call in calls.iter().rev() {
        ex.call_response = Some(CallResponse {
            headers: map(&[(":status", "204")]),
            ..CallResponse::default()
        });
        vm.on_http_call_response(call, &mut ex).unwrap();
        assert_eq!(slots(&vm, 2), [root, call.call_id]);
    }
    assert_eq!(
        ex.request_headers
            .iter()
            .filter(|(k, _)| *k == b"x-call-status")
            .count(),
        2,
        "both answers were seen"
    );
}

#[test]
fn tick_periods_follow_the_plugin_and_on_tick_reaches_the_root() {
    let w = Wat::new();
    let mut vm = start(&w.module(
        r#"
        (global $ticks (mut i32) (i32.const 0))
        (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
          ;; The configuration size is the period to set.
          (i32.store (i32.const 28672) (call $proxy_set_tick_period_milliseconds (local.get $size)))
          (i32.const 1))
        (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
          ;; From an HTTP context: sets its root's period.
          (drop (call $proxy_set_tick_period_milliseconds (i32.const 7)))
          (i32.const 0))
        (func (export "proxy_on_tick") (param $root i32)
          (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
          (i32.store (i32.const 28676) (global.get $ticks))
          (i32.store (i32.const 28680) (local.get $root))
          ;; The third tick stops the timer.
          (if (i32.eq (global.get $ticks) (i32.const 3))
            (then (drop (call $proxy_set_tick_period_milliseconds (i32.const 0))))))
        "#,
    ));
    assert_eq!(vm.tick_periods(), []);
    let a = vm.configure(1, &[b' '; 250]).unwrap();
    let b = vm.configure(2, b"").unwrap();
    assert_eq!(vm.tick_periods(), [(a, Duration::from_millis(250))]);
    let ctx = vm.create_http_context(b).unwrap();
    vm.on_request_headers(ctx, &mut exchange(), true).unwrap();
    assert_eq!(
        vm.tick_periods(),
        [
            (a, Duration::from_millis(250)),
            (b, Duration::from_millis(7))
        ]
    );
    for _ in 0..3 {
        vm.on_tick(a).unwrap();
    }
    assert_eq!(slots(&vm, 3), [0, 3, a]);
    assert_eq!(vm.tick_periods(), [(b, Duration::from_millis(7))]);
    let fault = vm.on_tick(ctx).err().unwrap();
    assert_eq!(fault.reason, format!("unknown root context id {ctx}"));
    assert!(vm.on_queue_ready(999, 1).is_err());
    assert!(!vm.is_broken());
}

#[test]
fn a_failed_configure_forgets_its_tick_period() {
    let w = Wat::new();
    let mut vm = start(&w.module(
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32)
             (drop (call $proxy_set_tick_period_milliseconds (i32.const 10)))
             (i32.const 0))"#,
    ));
    assert!(vm.configure(1, b"").is_err());
    assert_eq!(vm.tick_periods(), []);
}

/// A consumer module: registers the queue named by its configuration and
/// counts the items it dequeues in `proxy_on_queue_ready`.
const CONSUMER: &str = r#"
    (global $queue (mut i32) (i32.const 0))
    (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
      (drop (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
      (i32.store (i32.const 28672) (call $proxy_register_shared_queue (i32.load (i32.const 16)) (i32.load (i32.const 20)) (i32.const 24)))
      (global.set $queue (i32.load (i32.const 24)))
      (i32.const 1))
    (func (export "proxy_on_queue_ready") (param $root i32) (param $queue i32)
      (i32.store (i32.const 28676) (local.get $root))
      (i32.store (i32.const 28680) (local.get $queue))
      (block $done (loop $more
        (br_if $done (call $proxy_dequeue_shared_queue (local.get $queue) (i32.const 16) (i32.const 20)))
        (i32.store (i32.const 28684) (i32.add (i32.load (i32.const 28684)) (i32.const 1)))
        (br $more))))
    "#;

/// A producer module: resolves the queue named by its configuration (with
/// an empty vm_id, as TinyGo does) and enqueues the request path.
const PRODUCER: &str = r#"
    (global $name_ptr (mut i32) (i32.const 0))
    (global $name_len (mut i32) (i32.const 0))
    (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
      (drop (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
      (global.set $name_ptr (i32.load (i32.const 16)))
      (global.set $name_len (i32.load (i32.const 20)))
      (i32.const 1))
    (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
      (i32.store (i32.const 28672)
        (call $proxy_resolve_shared_queue (i32.const 0) (i32.const 0) (global.get $name_ptr) (global.get $name_len) (i32.const 24)))
      (i32.store (i32.const 28676)
        (call $proxy_enqueue_shared_queue (i32.load (i32.const 24)) (global.get $name_ptr) (global.get $name_len)))
      (i32.const 0))
    "#;

/// Starts a consumer of `queue` whose notifier forwards to a channel.
fn consumer(queue: &str) -> (PluginVm, u32, mpsc::Receiver<(u32, u32)>) {
    let mut vm = start(&Wat::new().module(CONSUMER));
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    vm.set_queue_notifier(Arc::new(move |root, queue| {
        let _ = tx.lock().unwrap().send((root, queue));
    }));
    let root = vm.configure(1, queue.as_bytes()).unwrap();
    assert_eq!(slots(&vm, 1), [0]);
    (vm, root, rx)
}

/// Enqueues one item on `queue` from a producer VM on another thread.
pub(super) fn produce_on_another_thread(queue: &str) -> [u32; 2] {
    let queue = queue.to_owned();
    std::thread::spawn(move || {
        let mut vm = start(&Wat::new().module(PRODUCER));
        let root = vm.configure(1, queue.as_bytes()).unwrap();
        let ctx = vm.create_http_context(root).unwrap();
        vm.on_request_headers(ctx, &mut exchange(), true).unwrap();
        let s = slots(&vm, 2);
        [s[0], s[1]]
    })
    .join()
    .unwrap()
}

#[test]
fn enqueue_on_another_thread_notifies_the_registering_root() {
    let (mut vm, root, rx) = consumer("calls-test-queue-notify");
    assert_eq!(
        produce_on_another_thread("calls-test-queue-notify"),
        [0, 0],
        "resolved with an empty vm_id, enqueued"
    );
    let (notified_root, queue) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(notified_root, root);
    assert_eq!(
        rx.try_recv(),
        Err(mpsc::TryRecvError::Empty),
        "one item, one notification"
    );
    vm.on_queue_ready(notified_root, queue).unwrap();
    assert_eq!(slots(&vm, 4), [0, root, queue, 1], "dequeued one item");
}

#[test]
fn the_last_registrant_is_notified_and_a_dropped_vm_hands_over() {
    let name = "calls-test-queue-owners";
    let (_first, first_root, first_rx) = consumer(name);
    let (second, second_root, second_rx) = consumer(name);
    produce_on_another_thread(name);
    assert_eq!(
        second_rx.recv_timeout(Duration::from_secs(5)).map(|n| n.0),
        Ok(second_root)
    );
    assert!(first_rx.try_recv().is_err(), "only the newest registrant");
    drop(second);
    produce_on_another_thread(name);
    assert_eq!(
        first_rx.recv_timeout(Duration::from_secs(5)).map(|n| n.0),
        Ok(first_root),
        "the earlier registrant takes over"
    );
}
