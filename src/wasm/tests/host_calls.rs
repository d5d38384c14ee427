//! Host functions called from inline-WAT plugins: each test's body stores
//! the statuses it gets in slots, and the test compares them with the spec.

use super::*;
use crate::wasm::pairs;
use crate::wasm::{LocalResponse, PluginVm};

/// Runs `body` inside `proxy_on_request_headers` of a fresh VM (configured
/// with `conf`) and returns the VM and the exchange afterwards.
fn on_request(w: &Wat, body: &str, edit: impl FnOnce(&mut PluginSpec)) -> (PluginVm, Exchange) {
    let module = w.module(&format!(
        r#"(func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
             {body}
             (i32.const 0))"#
    ));
    let mut vm = start_with(&module, edit);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    vm.on_request_headers(ctx, &mut ex, true)
        .unwrap_or_else(|f| panic!("{f}"));
    (vm, ex)
}

fn pairs_of(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn header_map_calls_round_trip_on_request_and_response_maps() {
    let w = Wat::new();
    let calls = [
        // 0-1: copy the :path pseudo-header into a new header
        format!("(call $proxy_get_header_map_value (i32.const 0) {} (i32.const 16) (i32.const 20))", w.s(":path")),
        format!("(call $proxy_add_header_map_value (i32.const 0) {} (i32.load (i32.const 16)) (i32.load (i32.const 20)))", w.s("x-path-copy")),
        // 2: a missing key
        format!("(call $proxy_get_header_map_value (i32.const 0) {} (i32.const 16) (i32.const 20))", w.s("x-nope")),
        // 3-5: replace an existing key (case-insensitively), replace an absent one (adds), add a duplicate
        format!("(call $proxy_replace_header_map_value (i32.const 0) {} {})", w.s("User-Agent"), w.s("wasm/2")),
        format!("(call $proxy_replace_header_map_value (i32.const 0) {} {})", w.s("x-new"), w.s("n")),
        format!("(call $proxy_add_header_map_value (i32.const 0) {} {})", w.s("X-New"), w.s("m")),
        // 6-7: remove a present and an absent key
        format!("(call $proxy_remove_header_map_value (i32.const 0) {})", w.s("x-remove")),
        format!("(call $proxy_remove_header_map_value (i32.const 0) {})", w.s("x-absent")),
        // 8-10: size, pairs, and the request map copied over the response map
        "(call $proxy_get_header_map_size (i32.const 0) (i32.const 24))".to_owned(),
        "(call $proxy_get_header_map_pairs (i32.const 0) (i32.const 16) (i32.const 20))".to_owned(),
        "(call $proxy_set_header_map_pairs (i32.const 2) (i32.load (i32.const 16)) (i32.load (i32.const 20)))".to_owned(),
        // 11: the size is the serialized size
        "(i32.eq (i32.load (i32.const 24)) (i32.load (i32.const 20)))".to_owned(),
        // 12: the response map is writable
        format!("(call $proxy_add_header_map_value (i32.const 2) {} {})", w.s("x-resp"), w.s("r")),
        // 13: CR/LF in a value: BAD_ARGUMENT; 14-15: other invalid fields are dropped with OK
        format!("(call $proxy_add_header_map_value (i32.const 0) {} {})", w.s("x-evil"), w.s("a\r\nset-cookie: x")),
        format!("(call $proxy_replace_header_map_value (i32.const 0) {} {})", w.s("bad name"), w.s("v")),
        format!("(call $proxy_replace_header_map_value (i32.const 0) {} {})", w.s(":path"), w.s("/a b")),
        // 16-19: maps that do not exist here read empty and ignore writes
        format!("(call $proxy_get_header_map_value (i32.const 1) {} (i32.const 16) (i32.const 20))", w.s("x")),
        format!("(call $proxy_add_header_map_value (i32.const 3) {} {})", w.s("x"), w.s("y")),
        "(call $proxy_get_header_map_pairs (i32.const 6) (i32.const 16) (i32.const 20))".to_owned(),
        "(i32.add (i32.load (i32.const 16)) (i32.load (i32.const 20)))".to_owned(),
        // 20-21: unknown map types
        format!("(call $proxy_get_header_map_value (i32.const 8) {} (i32.const 16) (i32.const 20))", w.s("x")),
        "(call $proxy_get_header_map_size (i32.const 99) (i32.const 24))".to_owned(),
    ];
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, c)| store_slot(i as u32, c))
        .collect();
    let (vm, ex) = on_request(&w, &body, |_| {});
    assert_eq!(
        slots(&vm, 22),
        [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 1, 0, 0, 0, 2, 2]
    );
    let request = pairs_of(&[
        (":method", "GET"),
        (":path", "/hello?x=1"),
        (":authority", "example.com"),
        (":scheme", "http"),
        ("user-agent", "wasm/2"),
        ("x-path-copy", "/hello?x=1"),
        ("x-new", "n"),
        ("x-new", "m"),
    ]);
    assert_eq!(strings(&ex.request_headers), request);
    let mut response = request.clone();
    response.push(("x-resp".into(), "r".into()));
    assert_eq!(
        strings(&ex.response_headers),
        response,
        "set_header_map_pairs replaced the response map"
    );
    assert_eq!(ex.local_response, None);
}

#[test]
fn header_map_value_bytes_are_handed_over_through_the_allocator() {
    let w = Wat::new();
    let body = store_slot(
        0,
        &format!(
            "(call $proxy_get_header_map_value (i32.const 0) {} (i32.const 16) (i32.const 20))",
            w.s(":authority")
        ),
    );
    let (vm, _) = on_request(&w, &body, |_| {});
    let ptr_size = vm.read_memory(16, 8);
    let (ptr, size) = (
        u32::from_le_bytes(ptr_size[..4].try_into().unwrap()),
        u32::from_le_bytes(ptr_size[4..].try_into().unwrap()),
    );
    assert_eq!(ptr, 40000, "the first block of the bump allocator");
    assert_eq!(vm.read_memory(ptr, size), b"example.com");
}

#[test]
fn set_header_map_pairs_rejects_malformed_maps() {
    let w = Wat::new();
    let good = pairs::serialize([(&b"a"[..], &b"1"[..])].into_iter());
    let mut truncated = good.clone();
    truncated.pop();
    let evil = pairs::serialize([(&b"a"[..], &b"1\r\n"[..])].into_iter());
    let invalid = pairs::serialize([(&b"a"[..], &b"1\x01"[..])].into_iter());
    let calls = [
        format!(
            "(call $proxy_set_header_map_pairs (i32.const 0) {})",
            w.s(&truncated)
        ),
        format!(
            "(call $proxy_set_header_map_pairs (i32.const 0) {})",
            w.s(&evil)
        ),
        format!(
            "(call $proxy_set_header_map_pairs (i32.const 0) {})",
            w.s(&invalid)
        ),
        format!(
            "(call $proxy_set_header_map_pairs (i32.const 2) {})",
            w.s(&good)
        ),
        "(call $proxy_set_header_map_pairs (i32.const 2) (i32.const 0) (i32.const 0))".to_owned(),
    ];
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, c)| store_slot(i as u32, c))
        .collect();
    let (vm, ex) = on_request(&w, &body, |_| {});
    assert_eq!(
        slots(&vm, 5),
        [2, 2, 0, 0, 0],
        "malformed, or CR/LF in a value: BAD_ARGUMENT; another invalid value: dropped with OK"
    );
    assert_eq!(
        ex.request_headers,
        exchange().request_headers,
        "request map untouched"
    );
    assert!(ex.response_headers.is_empty(), "size 0 is the empty map");
}

#[test]
fn send_local_response_is_captured() {
    let w = Wat::new();
    let headers = pairs::serialize(
        [
            (&b"X-Reason"[..], &b"blocked"[..]),
            (b"bad", b"x\x01y"),
            (b":status", b"201"),
            (b"Transfer-Encoding", b"chunked"),
            (b"content-length", b"1"),
        ]
        .into_iter(),
    );
    let body = format!(
        "{}(return (i32.const 1))",
        store_slot(
            0,
            &format!(
                "(call $proxy_send_local_response (i32.const 403) {} {} {} (i32.const -1))",
                w.s("denied"),
                w.s("nope"),
                w.s(&headers)
            )
        )
    );
    let module = w.module(&format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body})"#
    ));
    let mut vm = start(&module);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    assert_eq!(
        vm.on_request_headers(ctx, &mut ex, true),
        Ok(crate::wasm::Action::Pause)
    );
    assert_eq!(slots(&vm, 1), [0]);
    assert_eq!(
        ex.local_response,
        Some(LocalResponse {
            status: 403,
            details: b"denied".to_vec(),
            headers: vec![(b"x-reason".to_vec(), b"blocked".to_vec())],
            body: b"nope".to_vec(),
        }),
        "invalid, pseudo and framing headers are dropped, names lower-cased"
    );
}

#[test]
fn send_local_response_refuses_headers_that_split_the_response() {
    let w = Wat::new();
    let headers = pairs::serialize([(&b"x-a"[..], &b"1\r\nx-b: 2"[..])].into_iter());
    let call = format!(
        "(call $proxy_send_local_response (i32.const 403) {} {} {} (i32.const -1))",
        w.s(""),
        w.s("nope"),
        w.s(&headers)
    );
    let (vm, ex) = on_request(&w, &store_slot(0, &call), |_| {});
    assert_eq!(slots(&vm, 1), [2], "BAD_ARGUMENT");
    assert_eq!(ex.local_response, None, "nothing is answered");
}

#[test]
fn framing_fields_are_the_proxys_and_splitting_bytes_are_refused() {
    let w = Wat::new();
    let with_length = pairs::serialize(
        [
            (&b":method"[..], &b"GET"[..]),
            (b"Content-Length", b"5"),
            (b"te", b"trailers"),
            (b"x-kept", b"1"),
        ]
        .into_iter(),
    );
    let calls = [
        // 0-3: framing fields added or replaced: dropped with OK
        format!(
            "(call $proxy_add_header_map_value (i32.const 0) {} {})",
            w.s("Transfer-Encoding"),
            w.s("chunked")
        ),
        format!(
            "(call $proxy_replace_header_map_value (i32.const 0) {} {})",
            w.s("connection"),
            w.s("close")
        ),
        format!(
            "(call $proxy_add_header_map_value (i32.const 2) {} {})",
            w.s("upgrade"),
            w.s("h2c")
        ),
        format!(
            "(call $proxy_add_header_map_value (i32.const 3) {} {})",
            w.s("content-length"),
            w.s("3")
        ),
        // 4-5: CR, LF or NUL in a name or value: BAD_ARGUMENT
        format!(
            "(call $proxy_add_header_map_value (i32.const 0) {} {})",
            w.s("x-a"),
            w.s("b\0c")
        ),
        format!(
            "(call $proxy_replace_header_map_value (i32.const 2) {} {})",
            w.s("x\nb"),
            w.s("v")
        ),
        // 6: a whole map: framing fields dropped; the request map has no
        // content-length, so none is kept either
        format!(
            "(call $proxy_set_header_map_pairs (i32.const 0) {})",
            w.s(&with_length)
        ),
        // 7: the response map has a content-length (as from the upstream):
        // set whole with one, it keeps its own value
        format!(
            "(call $proxy_set_header_map_pairs (i32.const 2) {})",
            w.s(&with_length)
        ),
    ];
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, c)| store_slot(i as u32, c))
        .collect();
    let module = w.module(&format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body} (i32.const 0))"#
    ));
    let mut vm = start(&module);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    ex.response_headers.add(b"content-length", b"22");
    vm.on_request_headers(ctx, &mut ex, true)
        .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(slots(&vm, 8), [0, 0, 0, 0, 2, 2, 0, 0]);
    assert_eq!(
        strings(&ex.request_headers),
        pairs_of(&[(":method", "GET"), ("x-kept", "1")]),
        "framing fields never entered the request map"
    );
    assert_eq!(
        strings(&ex.response_headers),
        pairs_of(&[
            (":method", "GET"),
            ("x-kept", "1"),
            ("content-length", "22")
        ]),
        "the response map kept its own content-length"
    );
    assert!(ex.response_trailers.is_empty());
}

#[test]
fn send_local_response_sanitizes_status_and_oversized_bodies() {
    let w = Wat::new();
    let calls = [
        "(call $proxy_send_local_response (i32.const 42) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))".to_owned(),
        "(memory.grow (i32.const 17))".to_owned(),
        "(call $proxy_send_local_response (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 65536) (i32.const 1048577) (i32.const 0) (i32.const 0) (i32.const 0))".to_owned(),
    ];
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, c)| store_slot(i as u32, c))
        .collect();
    let (vm, ex) = on_request(&w, &body, |_| {});
    assert_eq!(slots(&vm, 3), [0, 1, 0]);
    let local = ex.local_response.clone().unwrap();
    assert_eq!(
        (local.status, local.body.len()),
        (500, 0),
        "an oversized body becomes an empty 500"
    );
}

/// Every host function that takes a pointer answers INVALID_MEMORY_ACCESS
/// (6; WASI: FAULT, 21) for one outside memory, or for a range whose end
/// wraps past `u32::MAX`, instead of trapping.
#[test]
fn bad_pointers_give_invalid_memory_access() {
    let w = Wat::new();
    let ok = w.addr("some-bytes-to-point-at");
    let path = w.addr(":path");
    let b = BAD;
    let calls: Vec<(&str, String)> = vec![
        ("log", format!("(call $proxy_log (i32.const 2) (i32.const {b}) (i32.const 4))")),
        ("log wraps", "(call $proxy_log (i32.const 2) (i32.const -1) (i32.const 2))".to_owned()),
        ("log last byte", "(call $proxy_log (i32.const 2) (i32.const 65532) (i32.const 4))".to_owned()),
        ("log one past", "(call $proxy_log (i32.const 2) (i32.const 65533) (i32.const 4))".to_owned()),
        ("get_log_level", format!("(call $proxy_get_log_level (i32.const {b}))")),
        ("get_current_time", format!("(call $proxy_get_current_time_nanoseconds (i32.const {b}))")),
        ("get_buffer_bytes data", format!("(call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 9) (i32.const {b}) (i32.const 20))")),
        ("get_buffer_bytes size", format!("(call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 9) (i32.const 16) (i32.const {b}))")),
        ("set_buffer_bytes", format!("(call $proxy_set_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 0) (i32.const {b}) (i32.const 4))")),
        ("get_buffer_status", format!("(call $proxy_get_buffer_status (i32.const 7) (i32.const {b}) (i32.const 20))")),
        ("get_configuration", format!("(call $proxy_get_configuration (i32.const {b}) (i32.const 20))")),
        ("get_header_map_size", format!("(call $proxy_get_header_map_size (i32.const 0) (i32.const {b}))")),
        ("get_header_map_pairs", format!("(call $proxy_get_header_map_pairs (i32.const 0) (i32.const {b}) (i32.const 20))")),
        ("set_header_map_pairs", format!("(call $proxy_set_header_map_pairs (i32.const 0) (i32.const {b}) (i32.const 16))")),
        ("get_header_map_value key", format!("(call $proxy_get_header_map_value (i32.const 0) (i32.const {b}) (i32.const 4) (i32.const 16) (i32.const 20))")),
        ("get_header_map_value ret", format!("(call $proxy_get_header_map_value (i32.const 0) (i32.const {path}) (i32.const 5) (i32.const {b}) (i32.const 20))")),
        ("add_header_map_value key", format!("(call $proxy_add_header_map_value (i32.const 0) (i32.const {b}) (i32.const 4) (i32.const {ok}) (i32.const 1))")),
        ("add_header_map_value value", format!("(call $proxy_add_header_map_value (i32.const 0) (i32.const {ok}) (i32.const 1) (i32.const {b}) (i32.const 4))")),
        ("replace_header_map_value", format!("(call $proxy_replace_header_map_value (i32.const 0) (i32.const {b}) (i32.const 4) (i32.const {ok}) (i32.const 1))")),
        ("remove_header_map_value", format!("(call $proxy_remove_header_map_value (i32.const 0) (i32.const {b}) (i32.const 4))")),
        ("get_status", format!("(call $proxy_get_status (i32.const {b}) (i32.const 16) (i32.const 20))")),
        ("send_local_response", format!("(call $proxy_send_local_response (i32.const 200) (i32.const {b}) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))")),
        ("http_call", format!("(call $proxy_http_call (i32.const {b}) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 16))")),
        ("grpc_call", format!("(call $proxy_grpc_call (i32.const {b}) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 16))")),
        ("grpc_stream", format!("(call $proxy_grpc_stream (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const {b}))")),
        ("grpc_send", format!("(call $proxy_grpc_send (i32.const 1) (i32.const {b}) (i32.const 4) (i32.const 0))")),
        ("call_foreign_function", format!("(call $proxy_call_foreign_function (i32.const {b}) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 20))")),
        ("set_shared_data", format!("(call $proxy_set_shared_data (i32.const {b}) (i32.const 4) (i32.const {ok}) (i32.const 1) (i32.const 0))")),
        ("get_shared_data", format!("(call $proxy_get_shared_data (i32.const {ok}) (i32.const 4) (i32.const 16) (i32.const 20) (i32.const {b}))")),
        ("register_shared_queue", format!("(call $proxy_register_shared_queue (i32.const {ok}) (i32.const 4) (i32.const {b}))")),
        ("resolve_shared_queue", format!("(call $proxy_resolve_shared_queue (i32.const {ok}) (i32.const 1) (i32.const {b}) (i32.const 4) (i32.const 16))")),
        ("enqueue_shared_queue", format!("(call $proxy_enqueue_shared_queue (i32.const 1) (i32.const {b}) (i32.const 4))")),
        ("dequeue_shared_queue", format!("(call $proxy_dequeue_shared_queue (i32.const 1) (i32.const {b}) (i32.const 20))")),
        ("define_metric", format!("(call $proxy_define_metric (i32.const 0) (i32.const {b}) (i32.const 4) (i32.const 16))")),
        ("get_metric", format!("(call $proxy_get_metric (i32.const 1) (i32.const {b}))")),
        ("get_property", format!("(call $proxy_get_property (i32.const {b}) (i32.const 4) (i32.const 16) (i32.const 20))")),
        ("set_property", format!("(call $proxy_set_property (i32.const {ok}) (i32.const 1) (i32.const {b}) (i32.const 4))")),
        ("wasi fd_write", format!("(call $wasi_fd_write (i32.const 1) (i32.const {b}) (i32.const 1) (i32.const 16))")),
        ("wasi fd_write iovs_len overflow", "(call $wasi_fd_write (i32.const 1) (i32.const 0) (i32.const 0x20000000) (i32.const 16))".to_owned()),
        ("wasi random_get", format!("(call $wasi_random_get (i32.const {b}) (i32.const 4))")),
        ("wasi clock_time_get", format!("(call $wasi_clock_time_get (i32.const 0) (i64.const 0) (i32.const {b}))")),
        ("wasi environ_sizes_get", format!("(call $wasi_environ_sizes_get (i32.const {b}) (i32.const 20))")),
        ("wasi args_sizes_get", format!("(call $wasi_args_sizes_get (i32.const 16) (i32.const {b}))")),
    ];
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, (_, c))| store_slot(i as u32, c))
        .collect();
    // PLUGIN_CONFIGURATION is readable in on_configure, so run it there.
    let module = w.module(&format!(
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) {body} (i32.const 1))"#
    ));
    let mut vm = start(&module);
    vm.configure(1, b"some configuration").unwrap();
    let got = slots(&vm, calls.len() as u32);
    for ((what, _), status) in calls.iter().zip(got) {
        let want = match *what {
            "log last byte" => 0,
            w if w.starts_with("wasi") => 21,
            _ => 6,
        };
        assert_eq!(status, want, "{what}");
    }
    assert!(!vm.is_broken());
}

#[test]
fn buffers_are_readable_in_their_own_hooks_and_clamped() {
    let w = Wat::new();
    let get = |slot: u32, buffer: u32, start: i64, max: i64| {
        format!(
            "{}{}{}",
            store_slot(slot, &format!("(call $proxy_get_buffer_bytes (i32.const {buffer}) (i32.const {start}) (i32.const {max}) (i32.const 16) (i32.const 20))")),
            store_slot(slot + 1, "(i32.load (i32.const 16))"),
            store_slot(slot + 2, "(i32.load (i32.const 20))"),
        )
    };
    let vm_start = [get(0, 6, 0, 0x7fff_ffff), get(3, 7, 0, 10)].concat();
    let configure = [
        get(6, 7, 2, 3),
        get(9, 7, 100, 5),
        get(12, 7, 0xFFFF_FFF0, 0xFFFF_FFF0),
        get(15, 6, 0, 10),
        get(18, 9, 0, 10),
        store_slot(
            21,
            "(call $proxy_get_buffer_status (i32.const 7) (i32.const 24) (i32.const 28))",
        ),
        store_slot(22, "(i32.load (i32.const 24))"),
        store_slot(
            23,
            "(call $proxy_get_configuration (i32.const 16) (i32.const 20))",
        ),
        store_slot(24, "(i32.load (i32.const 20))"),
    ]
    .concat();
    let request = [
        get(25, 7, 0, 10),
        store_slot(
            28,
            "(call $proxy_get_buffer_status (i32.const 6) (i32.const 24) (i32.const 28))",
        ),
    ]
    .concat();
    let module = w.module(&format!(
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32) {vm_start} (i32.const 1))
           (func (export "proxy_on_configure") (param i32 i32) (result i32) {configure} (i32.const 1))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {request} (i32.const 0))"#
    ));
    let mut vm = start_with(&module, |spec| spec.vm_config = b"vm-config".to_vec());
    let root = vm.configure(1, b"configuration").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    vm.on_request_headers(ctx, &mut exchange(), true).unwrap();
    let s = slots(&vm, 29);
    assert_eq!((s[0], s[2]), (0, 9), "VM_CONFIGURATION in on_vm_start");
    assert_eq!(vm.read_memory(s[1], s[2]), b"vm-config");
    assert_eq!(
        s[3], 1,
        "PLUGIN_CONFIGURATION is not readable in on_vm_start"
    );
    assert_eq!((s[6], s[8]), (0, 3));
    assert_eq!(vm.read_memory(s[7], s[8]), b"nfi", "start 2, max 3");
    assert_eq!(
        &s[9..12],
        [0, 0, 0],
        "start past the end: OK and (0, 0), nothing allocated"
    );
    assert_eq!(
        &s[12..15],
        [0, 0, 0],
        "start + max overflowing u32 is clamped"
    );
    assert_eq!(s[15], 1, "VM_CONFIGURATION is not readable in on_configure");
    assert_eq!(s[18], 2, "unknown buffer type");
    assert_eq!((s[21], s[22]), (0, 13), "buffer status size");
    assert_eq!((s[23], s[24]), (0, 13), "0.1.0 get_configuration");
    assert_eq!((s[25], s[28]), (1, 1), "no configuration during a request");
}

#[test]
fn shared_data_queues_and_metrics_through_the_abi() {
    let w = Wat::new();
    let key = w.s("abi-test-key");
    let q = w.s("abi-test-queue");
    let calls = [
        format!("(call $proxy_set_shared_data {key} {} (i32.const 0))", w.s("v1")),
        format!("(call $proxy_get_shared_data {key} (i32.const 16) (i32.const 20) (i32.const 24))"),
        "(i32.load (i32.const 16))".to_owned(),
        format!("(call $proxy_set_shared_data {key} {} (i32.add (i32.load (i32.const 24)) (i32.const 1)))", w.s("v2")),
        format!("(call $proxy_set_shared_data {key} {} (i32.load (i32.const 24)))", w.s("v2")),
        format!("(call $proxy_get_shared_data {} (i32.const 16) (i32.const 20) (i32.const 24))", w.s("abi-test-missing")),
        format!("(call $proxy_define_metric (i32.const 0) {} (i32.const 28))", w.s("abi_test_counter")),
        "(call $proxy_increment_metric (i32.load (i32.const 28)) (i64.const 5))".to_owned(),
        "(call $proxy_get_metric (i32.load (i32.const 28)) (i32.const 32))".to_owned(),
        "(i32.wrap_i64 (i64.load (i32.const 32)))".to_owned(),
        "(call $proxy_increment_metric (i32.load (i32.const 28)) (i64.const -1))".to_owned(),
        format!("(call $proxy_define_metric (i32.const 7) {} (i32.const 28))", w.s("abi_test_bad_type")),
        "(call $proxy_record_metric (i32.const 123456) (i64.const 1))".to_owned(),
        format!("(call $proxy_register_shared_queue {q} (i32.const 28))"),
        format!("(call $proxy_enqueue_shared_queue (i32.load (i32.const 28)) {})", w.s("item")),
        "(call $proxy_dequeue_shared_queue (i32.load (i32.const 28)) (i32.const 16) (i32.const 20))".to_owned(),
        "(i32.load (i32.const 20))".to_owned(),
        "(call $proxy_dequeue_shared_queue (i32.load (i32.const 28)) (i32.const 16) (i32.const 20))".to_owned(),
        format!("(call $proxy_resolve_shared_queue {} {q} (i32.const 36))", w.s("any-vm")),
        "(i32.eq (i32.load (i32.const 36)) (i32.load (i32.const 28)))".to_owned(),
        format!("(call $proxy_resolve_shared_queue {} {} (i32.const 36))", w.s("any-vm"), w.s("abi-test-no-queue")),
        "(call $proxy_dequeue_shared_queue (i32.const 999999) (i32.const 16) (i32.const 20))".to_owned(),
    ];
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, c)| store_slot(i as u32, c))
        .collect();
    let (vm, _) = on_request(&w, &body, |_| {});
    let s = slots(&vm, calls.len() as u32);
    assert_eq!(vm.read_memory(s[2], 2), b"v1");
    let expected = [
        0, 0, s[2], 8, 0, 1, 0, 0, 0, 5, 2, 2, 1, 0, 0, 0, 4, 7, 0, 1, 1, 1,
    ];
    assert_eq!(s, expected);
    assert_eq!(
        crate::wasm::shared::get_shared_data(b"abi-test-key").map(|(v, _)| v),
        Ok(b"v2".to_vec())
    );
    assert!(crate::wasm::metrics_snapshot()
        .iter()
        .any(|(n, k, v)| n == "abi_test_counter"
            && *k == crate::wasm::MetricKind::Counter
            && *v == 5));
}

#[test]
fn logging_context_calls_and_unsupported_calls() {
    let w = Wat::new();
    let msg = w.s("hello from the plugin");
    let calls = [
        format!("(call $proxy_log (i32.const 2) {msg})"),
        format!("(call $proxy_log (i32.const 99) {msg})"),
        "(call $proxy_get_log_level (i32.const 16))".to_owned(),
        "(call $proxy_get_current_time_nanoseconds (i32.const 32))".to_owned(),
        "(i64.gt_u (i64.load (i32.const 32)) (i64.const 1600000000000000000))".to_owned(),
        "(call $proxy_set_effective_context (local.get $ctx))".to_owned(),
        "(call $proxy_set_effective_context (i32.const 424242))".to_owned(),
        "(call $proxy_done)".to_owned(),
        "(call $proxy_set_tick_period_milliseconds (i32.const 1000))".to_owned(),
        "(call $proxy_continue_stream (i32.const 0))".to_owned(),
        "(call $proxy_continue_stream (i32.const 9))".to_owned(),
        "(call $proxy_close_stream (i32.const 1))".to_owned(),
        "(call $proxy_get_status (i32.const 24) (i32.const 16) (i32.const 20))".to_owned(),
        "(i32.add (i32.load (i32.const 24)) (i32.load (i32.const 20)))".to_owned(),
        format!("(call $proxy_http_call {} {} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 16))", w.s("upstream"), w.s(pairs::serialize([(&b":path"[..], &b"/"[..])].into_iter()))),
        format!("(call $proxy_grpc_call {} {} {} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 16))", w.s("up"), w.s("svc"), w.s("m")),
        "(call $proxy_grpc_cancel (i32.const 1))".to_owned(),
        format!("(call $proxy_call_foreign_function {} (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 20))", w.s("compress")),
        format!("(call $proxy_get_property {} (i32.const 48) (i32.const 52))", w.s("request\0path")),
        format!("(call $proxy_set_property {} {})", w.s("x"), w.s("y")),
        "(call $proxy_continue_request)".to_owned(),
        "(call $proxy_clear_route_cache)".to_owned(),
    ];
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, c)| store_slot(i as u32, c))
        .collect();
    let (vm, _) = on_request(&w, &body, |_| {});
    let s = slots(&vm, calls.len() as u32);
    // http_call without :method/:authority is BAD_ARGUMENT; request.path
    // is a property of the lent request.
    assert_eq!(
        s,
        [0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 10, 1, 1, 0, 0, 0, 0]
    );
    assert!(vm.read_memory(16, 4)[0] <= 5, "a valid log level");
}

#[test]
fn wasi_environment_clocks_random_and_stdio() {
    let w = Wat::new();
    let hello = w.addr("hello\n");
    let calls = [
        // 0-1: fd_write one iovec {hello, 6} to stdout, then to a bad fd
        format!("(i32.store (i32.const 48) (i32.const {hello})) (i32.store (i32.const 52) (i32.const 6)) (call $wasi_fd_write (i32.const 1) (i32.const 48) (i32.const 1) (i32.const 56))"),
        "(call $wasi_fd_write (i32.const 5) (i32.const 48) (i32.const 1) (i32.const 56))".to_owned(),
        "(i32.load (i32.const 56))".to_owned(),
        // 3-6: environment
        "(call $wasi_environ_sizes_get (i32.const 16) (i32.const 20))".to_owned(),
        "(i32.load (i32.const 16))".to_owned(),
        "(i32.load (i32.const 20))".to_owned(),
        "(call $wasi_environ_get (i32.const 600) (i32.const 700))".to_owned(),
        // 7-9: randomness
        "(call $wasi_random_get (i32.const 800) (i32.const 32))".to_owned(),
        "(call $wasi_random_get (i32.const 800) (i32.const 65537))".to_owned(),
        "(i32.or (i32.load (i32.const 800)) (i32.load (i32.const 804)))".to_owned(),
        // 10-12: clocks
        "(call $wasi_clock_time_get (i32.const 0) (i64.const 1) (i32.const 32))".to_owned(),
        "(call $wasi_clock_time_get (i32.const 1) (i64.const 1) (i32.const 40))".to_owned(),
        "(call $wasi_clock_time_get (i32.const 2) (i64.const 1) (i32.const 40))".to_owned(),
        // 13-20: args, fdstat, files, poll
        "(call $wasi_args_sizes_get (i32.const 16) (i32.const 20))".to_owned(),
        "(i32.add (i32.load (i32.const 16)) (i32.load (i32.const 20)))".to_owned(),
        "(call $wasi_fd_fdstat_get (i32.const 1) (i32.const 900))".to_owned(),
        "(i32.load (i32.const 908))".to_owned(),
        "(call $wasi_fd_fdstat_get (i32.const 3) (i32.const 900))".to_owned(),
        "(call $wasi_fd_prestat_get (i32.const 3) (i32.const 16))".to_owned(),
        "(call $wasi_fd_read (i32.const 0) (i32.const 48) (i32.const 1) (i32.const 16))".to_owned(),
        "(i32.store (i32.const 20) (i32.const 7)) (call $wasi_poll_oneoff (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 20))".to_owned(),
        "(i32.load (i32.const 20))".to_owned(),
    ];
    let body: String = calls
        .iter()
        .enumerate()
        .map(|(i, c)| store_slot(i as u32, c))
        .collect();
    let env = vec![
        ("A".to_owned(), "1".to_owned()),
        ("LONG".to_owned(), "two".to_owned()),
    ];
    let (vm, _) = on_request(&w, &body, |spec| spec.env = env);
    let s = slots(&vm, calls.len() as u32);
    assert_eq!(&s[..9], [0, 8, 6, 0, 2, 13, 0, 0, 28]);
    assert_ne!(s[9], 0, "random bytes were written");
    assert_eq!(&s[10..], [0, 0, 58, 0, 0, 0, 64, 8, 8, 52, 0, 0]);
    assert_eq!(
        vm.read_memory(600, 8),
        [700u32.to_le_bytes(), 704u32.to_le_bytes()].concat()
    );
    assert_eq!(vm.read_memory(700, 13), b"A=1\0LONG=two\0");
}

/// An allocator that fails gives INTERNAL_FAILURE; one that traps faults
/// the call.
#[test]
fn allocator_failures() {
    let wat = |alloc_body: &str| {
        format!(
            r#"(module
              (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
              (memory (export "memory") 1)
              (data (i32.const 100) ":path")
              (func (export "proxy_abi_version_0_2_1"))
              (func (export "proxy_on_memory_allocate") (param i32) (result i32) {alloc_body})
              (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                (i32.store (i32.const 28672) (call $get (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 16) (i32.const 20)))
                (i32.const 0)))"#
        )
    };
    let mut vm = start(&wat("(i32.const 0)"));
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    vm.on_request_headers(ctx, &mut exchange(), true).unwrap();
    assert_eq!(slots(&vm, 1), [10]);

    let mut vm = start(&wat("(i32.const 65535)"));
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    vm.on_request_headers(ctx, &mut exchange(), true).unwrap();
    assert_eq!(
        slots(&vm, 1),
        [10],
        "a block that runs past the end of memory"
    );

    let mut vm = start(&wat("unreachable"));
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let fault = vm
        .on_request_headers(ctx, &mut exchange(), true)
        .err()
        .unwrap();
    assert!(fault.reason.contains("unreachable"), "{fault}");
    assert!(vm.is_broken());
}
