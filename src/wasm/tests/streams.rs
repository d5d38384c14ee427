//! Stream callbacks beyond the headers: bodies and their edit semantics,
//! trailers, the effective context and the effects plugins leave for the
//! proxy, and finishing a context that waits for `proxy_done`.

use super::*;
use crate::wasm::pairs;
use crate::wasm::{Action, Effect, LocalResponse, PluginVm, StreamHooks};

/// Starts `body` as a module and configures one root.
fn configured(w: &Wat, body: &str) -> (PluginVm, u32) {
    let mut vm = start(&w.module(body));
    let root = vm.configure(1, b"").unwrap();
    (vm, root)
}

/// Runs `proxy_set_buffer_bytes(buffer, start, size, value)` in the body
/// hook of `buffer` (0: request, 1: response) with `initial` as the body,
/// and returns the body afterwards and the slots (status, body_size,
/// end_of_stream).
fn set_body(buffer: u32, initial: &str, start: u32, size: u32, value: &str) -> (String, Vec<u32>) {
    let w = Wat::new();
    let hook = if buffer == 0 {
        "proxy_on_request_body"
    } else {
        "proxy_on_response_body"
    };
    let set = format!(
        "(call $proxy_set_buffer_bytes (i32.const {buffer}) (i32.const {start}) (i32.const {size}) {})",
        w.s(value)
    );
    let (mut vm, root) = configured(
        &w,
        &format!(
            r#"(func (export "{hook}") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
                 {} {} {} (i32.const 0))"#,
            store_slot(0, &set),
            store_slot(1, "(local.get $size)"),
            store_slot(2, "(local.get $eos)"),
        ),
    );
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    let action = if buffer == 0 {
        ex.request_body = initial.as_bytes().to_vec();
        vm.on_request_body(ctx, &mut ex, true)
    } else {
        ex.response_body = initial.as_bytes().to_vec();
        vm.on_response_body(ctx, &mut ex, true)
    };
    assert_eq!(action, Ok(Action::Continue));
    let body = if buffer == 0 {
        std::mem::take(&mut ex.request_body)
    } else {
        std::mem::take(&mut ex.response_body)
    };
    (String::from_utf8(body).unwrap(), slots(&vm, 3))
}

#[test]
fn set_buffer_bytes_prepends_appends_replaces_and_clamps() {
    const MAX: u32 = u32::MAX;
    let cases: &[(&str, u32, u32, &str, &str, &str)] = &[
        ("prepend", 0, 0, "<<", "hello", "<<hello"),
        ("append at len", 5, 0, ">>", "hello", "hello>>"),
        ("append past len", 9999, 3, ">>", "hello", "hello>>"),
        ("start and size u32::MAX", MAX, MAX, "x", "hello", "hellox"),
        ("replace all (Rust idiom)", 0, MAX, "new", "hello", "new"),
        ("replace all (exact size)", 0, 5, "new", "hello", "new"),
        ("replace a window", 1, 3, "EY", "hello", "hEYo"),
        ("insert inside", 3, 0, "--", "hello", "hel--lo"),
        ("size clamped at the end", 2, 100, "", "hello", "he"),
        (
            "start + size overflows u32",
            2,
            MAX - 1,
            "!",
            "hello",
            "he!",
        ),
        ("clear", 0, MAX, "", "hello", ""),
        ("into an empty body", 0, 0, "abc", "", "abc"),
    ];
    for &(what, start, size, value, initial, want) in cases {
        for buffer in [0, 1] {
            let (body, s) = set_body(buffer, initial, start, size, value);
            assert_eq!(body, want, "{what} (buffer {buffer})");
            assert_eq!(s, [0, initial.len() as u32, 1], "{what} (buffer {buffer})");
        }
    }
}

#[test]
fn body_bytes_are_readable_in_windows_and_clamped() {
    let w = Wat::new();
    let get = |slot: u32, buffer: u32, start: u32, max: u32| {
        [
            store_slot(slot, &format!("(call $proxy_get_buffer_bytes (i32.const {buffer}) (i32.const {start}) (i32.const {max}) (i32.const 16) (i32.const 20))")),
            store_slot(slot + 1, "(i32.load (i32.const 16))"),
            store_slot(slot + 2, "(i32.load (i32.const 20))"),
        ]
        .concat()
    };
    let body = [
        get(0, 0, 0, u32::MAX),
        get(3, 0, 6, 5),
        get(6, 0, 100, 5),
        get(9, 0, 0xFFFF_FFF0, 0xFFFF_FFF0),
        get(12, 1, 0, 3),
        store_slot(
            15,
            "(call $proxy_get_buffer_status (i32.const 0) (i32.const 24) (i32.const 28))",
        ),
        store_slot(16, "(i32.load (i32.const 24))"),
        // Call-response and configuration buffers do not exist here.
        get(17, 4, 0, 10),
        get(20, 7, 0, 10),
    ]
    .concat();
    let (mut vm, root) = configured(
        &w,
        &format!(
            r#"(func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) {body} (i32.const 1))"#
        ),
    );
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    ex.request_body = b"hello world".to_vec();
    ex.response_body = b"response".to_vec();
    assert_eq!(vm.on_request_body(ctx, &mut ex, false), Ok(Action::Pause));
    let s = slots(&vm, 23);
    assert_eq!((s[0], s[2]), (0, 11));
    assert_eq!(vm.read_memory(s[1], s[2]), b"hello world");
    assert_eq!((s[3], s[5]), (0, 5));
    assert_eq!(vm.read_memory(s[4], s[5]), b"world");
    assert_eq!(&s[6..9], [0, 0, 0], "start past the end: OK and (0, 0)");
    assert_eq!(&s[9..12], [0, 0, 0], "start + max overflowing u32");
    assert_eq!((s[12], s[14]), (0, 3));
    assert_eq!(
        vm.read_memory(s[13], 3),
        b"res",
        "the response body too, in a request hook"
    );
    assert_eq!((s[15], s[16]), (0, 11), "buffer status");
    assert_eq!((s[17], s[20]), (1, 1), "no call response, no configuration");
    assert_eq!(ex.request_body, b"hello world", "reading changes nothing");
}

#[test]
fn oversized_body_writes_are_dropped_with_ok() {
    let w = Wat::new();
    // Append 32 MiB three times: the third would pass the 64 MiB cap.
    let append = "(call $proxy_set_buffer_bytes (i32.const 0) (i32.const -1) (i32.const 0) (i32.const 0) (i32.const 33554432))";
    let (mut vm, root) = configured(
        &w,
        &format!(
            r#"(func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
                 (drop (memory.grow (i32.const 512)))
                 {} {} {} (i32.const 0))"#,
            store_slot(0, append),
            store_slot(1, append),
            store_slot(2, append),
        ),
    );
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    vm.on_request_body(ctx, &mut ex, true).unwrap();
    assert_eq!(slots(&vm, 3), [0, 0, 0]);
    assert_eq!(ex.request_body.len(), 64 << 20);
}

#[test]
fn trailers_are_maps_1_and_3() {
    let w = Wat::new();
    let request = [
        store_slot(0, "(local.get $n)"),
        store_slot(
            1,
            &format!(
                "(call $proxy_get_header_map_value (i32.const 1) {} (i32.const 16) (i32.const 20))",
                w.s("x-checksum")
            ),
        ),
        store_slot(
            2,
            &format!(
                "(call $proxy_add_header_map_value (i32.const 1) {} {})",
                w.s("x-added"),
                w.s("1")
            ),
        ),
        store_slot(
            3,
            &format!(
                "(call $proxy_remove_header_map_value (i32.const 1) {})",
                w.s("x-checksum")
            ),
        ),
    ]
    .concat();
    let response = [
        store_slot(4, "(local.get $n)"),
        store_slot(
            5,
            &format!(
                "(call $proxy_replace_header_map_value (i32.const 3) {} {})",
                w.s("grpc-status"),
                w.s("0")
            ),
        ),
        store_slot(
            6,
            "(call $proxy_get_header_map_size (i32.const 3) (i32.const 24))",
        ),
        store_slot(7, "(i32.load (i32.const 24))"),
    ]
    .concat();
    let (mut vm, root) = configured(
        &w,
        &format!(
            r#"(func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (result i32) {request} (i32.const 0))
               (func (export "proxy_on_response_trailers") (param $ctx i32) (param $n i32) (result i32) {response} (i32.const 1))"#
        ),
    );
    assert_eq!(
        vm.stream_hooks(),
        StreamHooks {
            request_body: false,
            response_body: false,
            request_trailers: true,
            response_trailers: true,
        }
    );
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    ex.request_trailers.add(b"x-checksum", b"abc");
    ex.response_trailers.add(b"grpc-status", b"13");
    ex.response_trailers.add(b"grpc-message", b"x");
    assert_eq!(vm.on_request_trailers(ctx, &mut ex), Ok(Action::Continue));
    assert_eq!(vm.on_response_trailers(ctx, &mut ex), Ok(Action::Pause));
    let s = slots(&vm, 8);
    assert_eq!(&s[..7], [1, 0, 0, 0, 2, 0, 0]);
    let ptr_size = vm.read_memory(16, 8);
    let ptr = u32::from_le_bytes(ptr_size[..4].try_into().unwrap());
    let size = u32::from_le_bytes(ptr_size[4..].try_into().unwrap());
    assert_eq!(vm.read_memory(ptr, size), b"abc", "the trailer value read");
    assert_eq!(
        strings(&ex.request_trailers),
        [("x-added".into(), "1".into())]
    );
    assert_eq!(
        strings(&ex.response_trailers),
        [
            ("grpc-status".into(), "0".into()),
            ("grpc-message".into(), "x".into())
        ]
    );
    assert_eq!(
        s[7],
        pairs::serialized_size(ex.response_trailers.iter()) as u32
    );
}

#[test]
fn missing_body_and_trailer_hooks_continue() {
    let w = Wat::new();
    let (mut vm, root) = configured(&w, "");
    assert_eq!(vm.stream_hooks(), StreamHooks::default());
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    ex.request_body = b"x".to_vec();
    assert_eq!(vm.on_request_body(ctx, &mut ex, true), Ok(Action::Continue));
    assert_eq!(
        vm.on_response_body(ctx, &mut ex, true),
        Ok(Action::Continue)
    );
    assert_eq!(vm.on_request_trailers(ctx, &mut ex), Ok(Action::Continue));
    assert_eq!(vm.on_response_trailers(ctx, &mut ex), Ok(Action::Continue));
    let fault = vm.on_request_body(999, &mut ex, true).err().unwrap();
    assert_eq!(fault.reason, "unknown HTTP context id 999");
    assert!(!vm.is_broken());
}

/// The second request switches to the first (paused) one: its headers and
/// body are not lent, so reads find nothing and writes are dropped with OK;
/// a local response, continue and close become effects for it.
#[test]
fn effective_context_switching_and_effects() {
    let w = Wat::new();
    let calls = [
        "(call $proxy_set_effective_context (global.get $first))".to_owned(),
        format!("(call $proxy_add_header_map_value (i32.const 0) {} {})", w.s("x-wrong"), w.s("1")),
        format!("(call $proxy_get_header_map_value (i32.const 0) {} (i32.const 16) (i32.const 20))", w.s(":path")),
        "(call $proxy_get_header_map_pairs (i32.const 0) (i32.const 16) (i32.const 20))".to_owned(),
        "(i32.load (i32.const 20))".to_owned(),
        "(call $proxy_get_buffer_bytes (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 16) (i32.const 20))".to_owned(),
        format!("(call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0) {})", w.s("x")),
        format!("(call $proxy_send_local_response (i32.const 429) {} {} {} (i32.const -1))", w.s(""), w.s("slow down"), w.s(pairs::serialize([(&b"retry-after"[..], &b"1"[..])].into_iter()))),
        "(call $proxy_continue_stream (i32.const 0))".to_owned(),
        "(call $proxy_close_stream (i32.const 1))".to_owned(),
        "(call $proxy_set_effective_context (local.get $ctx))".to_owned(),
        format!("(call $proxy_add_header_map_value (i32.const 0) {} {})", w.s("x-right"), w.s("1")),
        "(call $proxy_set_effective_context (i32.const 424242))".to_owned(),
        "(call $proxy_set_effective_context (global.get $root))".to_owned(),
        "(call $proxy_continue_stream (i32.const 0))".to_owned(),
        format!("(call $proxy_send_local_response (i32.const 500) {} {} {} (i32.const -1))", w.s(""), w.s(""), w.s("")),
        "(call $proxy_continue_stream (i32.const 2))".to_owned(),
        "(call $proxy_continue_stream (i32.const 4))".to_owned(),
    ];
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, c)| store_slot(i as u32, c))
        .collect();
    let (mut vm, root) = configured(
        &w,
        &format!(
            r#"(global $first (mut i32) (i32.const 0))
               (global $root (mut i32) (i32.const 0))
               (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)
                 (if (i32.eqz (local.get $parent)) (then (global.set $root (local.get $ctx)))))
               (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
                 (if (i32.eqz (global.get $first))
                   (then (global.set $first (local.get $ctx)) (return (i32.const 1))))
                 {body}
                 (i32.const 0))"#
        ),
    );
    let first = vm.create_http_context(root).unwrap();
    let mut first_ex = exchange();
    assert_eq!(
        vm.on_request_headers(first, &mut first_ex, false),
        Ok(Action::Pause)
    );
    assert_eq!(vm.take_effects(), []);
    let second = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    assert_eq!(
        vm.on_request_headers(second, &mut ex, true),
        Ok(Action::Continue)
    );
    assert_eq!(
        slots(&vm, calls.len() as u32),
        [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2]
    );
    let mut want = exchange();
    want.request_headers.add(b"x-right", b"1");
    assert_eq!(ex, want, "only the write for the lent context landed");
    assert_eq!(first_ex, exchange(), "the paused stream was not touched");
    assert_eq!(
        vm.take_effects(),
        [
            Effect::LocalResponse {
                context: first,
                response: LocalResponse {
                    status: 429,
                    details: vec![],
                    headers: vec![(b"retry-after".to_vec(), b"1".to_vec())],
                    body: b"slow down".to_vec(),
                },
            },
            Effect::Continue {
                context: first,
                response: false,
            },
            Effect::Close {
                context: first,
                response: true,
            },
        ],
        "nothing for the root context"
    );
    assert_eq!(vm.take_effects(), [], "drained");
}

#[test]
fn continue_in_the_own_hook_is_an_effect_too() {
    let w = Wat::new();
    let (mut vm, root) = configured(
        &w,
        r#"(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
             (drop (call $proxy_continue_stream (i32.const 1)))
             (i32.const 0))"#,
    );
    let ctx = vm.create_http_context(root).unwrap();
    vm.on_response_headers(ctx, &mut exchange(), true).unwrap();
    assert_eq!(
        vm.take_effects(),
        [Effect::Continue {
            context: ctx,
            response: true
        }]
    );
}

#[test]
fn effects_of_a_call_that_traps_are_dropped() {
    let w = Wat::new();
    let (mut vm, root) = configured(
        &w,
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $proxy_continue_stream (i32.const 0)))
             unreachable)"#,
    );
    let ctx = vm.create_http_context(root).unwrap();
    assert!(vm.on_request_headers(ctx, &mut exchange(), true).is_err());
    assert_eq!(vm.take_effects(), []);
}

/// ABI 0.1.0's `proxy_continue_request`/`_response` resume like
/// `proxy_continue_stream`.
#[test]
fn abi_0_1_0_continue_request_and_response_are_effects() {
    let vm_wat = Wat::new().module_with_marker(
        "proxy_abi_version_0_1_0",
        r#"(func (export "proxy_on_request_headers") (param i32 i32) (result i32)
             (i32.store (i32.const 28672) (call $proxy_continue_request))
             (i32.store (i32.const 28676) (call $proxy_continue_response))
             (i32.const 0))"#,
    );
    let mut vm = start(&vm_wat);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    vm.on_request_headers(ctx, &mut exchange(), true).unwrap();
    assert_eq!(slots(&vm, 2), [0, 0]);
    assert_eq!(
        vm.take_effects(),
        [
            Effect::Continue {
                context: ctx,
                response: false
            },
            Effect::Continue {
                context: ctx,
                response: true
            }
        ]
    );
}

/// `proxy_on_done` returning false keeps the context until `complete`;
/// `proxy_done` from a tick (switched to it) becomes `Effect::Done` once;
/// `proxy_done` inside `proxy_on_done` means done at once.
#[test]
fn on_done_false_waits_for_proxy_done_then_complete() {
    let w = Wat::new();
    let (mut vm, root) = configured(
        &w,
        r#"
        (global $log_pos (mut i32) (i32.const 28672))
        (global $waiting (mut i32) (i32.const 0))
        (global $mode (mut i32) (i32.const 0))
        (func $ev (param i32) (param i32)
          (i32.store (global.get $log_pos) (i32.or (i32.shl (local.get 0) (i32.const 16)) (local.get 1)))
          (global.set $log_pos (i32.add (global.get $log_pos) (i32.const 4))))
        (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param i32) (result i32)
          (global.set $waiting (local.get $ctx))
          (global.set $mode (i32.eq (local.get $n) (i32.const 1)))
          ;; Not waiting yet: ignored.
          (i32.store (i32.const 27000) (call $proxy_done))
          (i32.const 0))
        (func (export "proxy_on_done") (param $ctx i32) (result i32)
          (call $ev (i32.const 6) (local.get $ctx))
          (if (global.get $mode) (then (drop (call $proxy_done))))
          (i32.const 0))
        (func (export "proxy_on_log") (param $ctx i32) (call $ev (i32.const 7) (local.get $ctx)))
        (func (export "proxy_on_delete") (param $ctx i32) (call $ev (i32.const 8) (local.get $ctx)))
        (func (export "proxy_on_tick") (param $root i32)
          (i32.store (i32.const 27004) (call $proxy_set_effective_context (global.get $waiting)))
          (i32.store (i32.const 27008) (call $proxy_done))
          (i32.store (i32.const 27012) (call $proxy_done)))
        "#,
    );
    let ev = |kind: u32, ctx: u32| (kind << 16) | ctx;
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    vm.on_request_headers(ctx, &mut ex, true).unwrap();
    assert_eq!(vm.finish(ctx, &mut ex), Ok(false));
    assert_eq!(vm.take_effects(), [], "proxy_done before on_done: ignored");
    assert_eq!(slots(&vm, 2), [ev(6, ctx), 0], "on_log not yet");
    // The waiting context takes no more stream callbacks.
    assert!(vm.on_response_headers(ctx, &mut ex, true).is_err());
    assert!(vm.finish(ctx, &mut ex).is_err());
    assert!(!vm.is_broken());

    vm.on_tick(root).unwrap();
    assert_eq!(vm.read_memory(27000, 16), [0u8; 16], "every call OK");
    assert_eq!(vm.take_effects(), [Effect::Done { context: ctx }], "once");
    vm.complete(ctx, &mut ex).unwrap();
    assert_eq!(slots(&vm, 3), [ev(6, ctx), ev(7, ctx), ev(8, ctx)]);
    let fault = vm.complete(ctx, &mut ex).err().unwrap();
    assert_eq!(
        fault.reason,
        format!("HTTP context {ctx} is not waiting for proxy_done")
    );
    vm.on_tick(root).unwrap();
    assert_eq!(
        vm.read_memory(27004, 4),
        2u32.to_le_bytes(),
        "the context is gone"
    );
    assert_eq!(vm.take_effects(), []);

    // proxy_done inside proxy_on_done: done at once.
    let ctx2 = vm.create_http_context(root).unwrap();
    let mut one = Exchange::default();
    one.request_headers.add(b":path", b"/");
    vm.on_request_headers(ctx2, &mut one, true).unwrap();
    assert_eq!(vm.finish(ctx2, &mut one), Ok(true));
    assert_eq!(&slots(&vm, 6)[3..], [ev(6, ctx2), ev(7, ctx2), ev(8, ctx2)]);

    // The proxy may give up waiting and complete without proxy_done.
    let ctx3 = vm.create_http_context(root).unwrap();
    vm.on_request_headers(ctx3, &mut exchange(), true).unwrap();
    assert_eq!(vm.finish(ctx3, &mut exchange()), Ok(false));
    assert_eq!(vm.complete(ctx3, &mut exchange()), Ok(()));
    assert_eq!(&slots(&vm, 9)[6..], [ev(6, ctx3), ev(7, ctx3), ev(8, ctx3)]);
    assert_eq!(vm.take_effects(), []);
}
