//! Loading, starting, configuring, contexts, faults and limits.

use std::time::{Duration, Instant};

use super::*;
use crate::wasm::{Action, PluginVm};

/// A load error's message without its `plugin "test": FILE: ` prefix.
fn reason(err: &crate::wasm::LoadError) -> String {
    let msg = err.to_string();
    msg.split_once(".wasm: ")
        .map_or(msg.clone(), |(_, reason)| reason.to_owned())
}

/// `on_configure` answers whether the start functions ran, in order.
#[test]
fn start_runs_initialize_then_main() {
    let wat = Wat::new();
    let vm_wat = wat.module(
        r#"
        (global $step (mut i32) (i32.const 0))
        (func (export "_initialize") (global.set $step (i32.const 1)))
        (func (export "main") (param i32 i32) (result i32)
          (if (i32.or (local.get 0) (local.get 1)) (then unreachable))
          (if (i32.ne (global.get $step) (i32.const 1)) (then unreachable))
          (global.set $step (i32.const 2))
          (i32.const 0))
        (func (export "_start") unreachable) ;; never called when _initialize exists
        (func (export "proxy_on_configure") (param i32 i32) (result i32)
          (i32.eq (global.get $step) (i32.const 2)))
        "#,
    );
    let mut vm = start(&vm_wat);
    assert!(vm.configure(1, b"").is_ok());
}

#[test]
fn start_accepts_proc_exit_zero_in_start() {
    let vm_wat = Wat::new().module(
        r#"
        (global $started (mut i32) (i32.const 0))
        (func (export "_start")
          (global.set $started (i32.const 1))
          (call $wasi_proc_exit (i32.const 0))
          unreachable)
        (func (export "proxy_on_configure") (param i32 i32) (result i32) (global.get $started))
        "#,
    );
    let mut vm = start(&vm_wat);
    assert!(!vm.is_broken());
    assert!(
        vm.configure(1, b"").is_ok(),
        "the VM stays usable after exiting cleanly"
    );
}

#[test]
fn start_fails_on_proc_exit_nonzero() {
    let vm_wat =
        Wat::new().module(r#"(func (export "_start") (call $wasi_proc_exit (i32.const 3)))"#);
    let plugin = load_with(&vm_wat, |_| {}).unwrap();
    let fault = PluginVm::start(plugin).err().expect("start must fail");
    assert_eq!(fault.hook, "_start");
    assert_eq!(
        fault.to_string(),
        r#"plugin "test" failed in _start: called proc_exit(3)"#
    );
}

#[test]
fn start_fails_on_a_trap_in_the_start_section() {
    let vm_wat = Wat::new().module(r#"(func $boom unreachable) (start $boom)"#);
    let fault = PluginVm::start(load_with(&vm_wat, |_| {}).unwrap())
        .err()
        .unwrap();
    assert_eq!(fault.hook, "instantiate");
    assert!(fault.reason.contains("unreachable"), "{fault}");
}

#[test]
fn load_rejects_a_module_without_abi_marker() {
    let err = load_with(
        r#"(module (memory (export "memory") 1) (func (export "_start")))"#,
        |_| {},
    )
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(msg.starts_with("plugin \"test\": "), "{msg}");
    assert!(
        msg.contains("/tinygate-wasm-test-"),
        "names the file: {msg}"
    );
    assert!(
        msg.ends_with("not a proxy-wasm module: it exports none of proxy_abi_version_0_1_0, proxy_abi_version_0_2_0, proxy_abi_version_0_2_1"),
        "{msg}"
    );
}

#[test]
fn load_errors_name_the_file_and_the_reason() {
    let missing = super::spec("/nonexistent/plugin.wasm".into());
    let err = crate::wasm::Plugin::load(&ENGINE, missing).err().unwrap();
    assert!(
        err.to_string()
            .starts_with("plugin \"test\": /nonexistent/plugin.wasm: cannot read file: "),
        "{err}"
    );

    let err = load_with(
        "(module (func (export \"proxy_abi_version_0_2_1\")))",
        |_| {},
    )
    .err()
    .unwrap();
    assert_eq!(
        reason(&err),
        "does not export its linear memory as \"memory\""
    );

    let bad_sig = Wat::new()
        .module(r#"(func (export "proxy_on_configure") (param i32) (result i32) (i32.const 1))"#);
    let err = load_with(&bad_sig, |_| {}).err().unwrap();
    assert!(
        reason(&err).starts_with("export \"proxy_on_configure\" has signature"),
        "{err}"
    );

    let imports_memory = r#"(module (import "env" "memory" (memory 1)) (export "memory" (memory 0)) (func (export "proxy_abi_version_0_2_1")))"#;
    let err = load_with(imports_memory, |_| {}).err().unwrap();
    assert!(reason(&err).contains("env.memory"), "{err}");
}

#[test]
fn load_rejects_initial_memory_over_the_limit() {
    let err = load_with(&Wat::new().module(""), |spec| spec.memory_limit = 65535)
        .err()
        .unwrap();
    assert_eq!(
        reason(&err),
        "initial memory of 65536 bytes exceeds the plugin's memory limit of 65535 bytes"
    );
}

/// `on_configure` fails the first time, then succeeds; the failed root is
/// deleted and the success is cached.
#[test]
fn configure_false_is_an_error_and_retried_next_time() {
    let vm_wat = Wat::new().module(
        r#"
        (global $configures (mut i32) (i32.const 0))
        (global $deleted (mut i32) (i32.const 0))
        (func (export "proxy_on_configure") (param i32 i32) (result i32)
          (global.set $configures (i32.add (global.get $configures) (i32.const 1)))
          (i32.gt_u (global.get $configures) (i32.const 1)))
        (func (export "proxy_on_delete") (param i32)
          (global.set $deleted (local.get 0)))
        (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
          (i32.store (i32.const 28672) (global.get $configures))
          (i32.store (i32.const 28676) (global.get $deleted))
          (i32.const 0))
        "#,
    );
    let mut vm = start(&vm_wat);
    let fault = vm.configure(7, b"conf").expect_err("first configure fails");
    assert_eq!(fault.hook, "proxy_on_configure");
    assert_eq!(
        fault.reason,
        "returned false: the plugin rejected its configuration"
    );
    assert!(
        !vm.is_broken(),
        "a rejected configuration does not break the VM"
    );
    let root = vm.configure(7, b"conf").expect("second configure succeeds");
    assert_eq!(vm.configure(7, b"conf"), Ok(root), "cached");
    let ctx = vm.create_http_context(root).unwrap();
    vm.on_request_headers(ctx, &mut exchange(), true).unwrap();
    assert_eq!(
        slots(&vm, 2),
        [2, 1],
        "configured twice; the failed root (id 1) was deleted"
    );
    assert_ne!(root, 1);
}

#[test]
fn vm_start_false_is_an_error() {
    let vm_wat = Wat::new().module(
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 0))"#,
    );
    let mut vm = start(&vm_wat);
    let fault = vm.configure(1, b"").err().unwrap();
    assert_eq!(
        (fault.hook, fault.reason.as_str()),
        (
            "proxy_on_vm_start",
            "returned false: the plugin rejected its VM configuration"
        )
    );
}

/// Context ids are unique, roots are per key, and the callbacks see them in
/// the spec's order.
#[test]
fn contexts_follow_the_lifecycle_order() {
    let vm_wat = Wat::new().module(
        r#"
        (global $log_pos (mut i32) (i32.const 28672))
        (func $log (param i32) (param i32)
          (i32.store (global.get $log_pos) (i32.or (i32.shl (local.get 0) (i32.const 16)) (local.get 1)))
          (global.set $log_pos (i32.add (global.get $log_pos) (i32.const 4))))
        (func (export "proxy_on_context_create") (param i32 i32) (call $log (i32.const 1) (local.get 0)))
        (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (call $log (i32.const 2) (local.get 0)) (i32.const 1))
        (func (export "proxy_on_configure") (param i32 i32) (result i32) (call $log (i32.const 3) (local.get 1)) (i32.const 1))
        (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $log (i32.const 4) (local.get 1)) (i32.const 0))
        (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $log (i32.const 5) (local.get 2)) (i32.const 1))
        (func (export "proxy_on_done") (param i32) (result i32) (call $log (i32.const 6) (local.get 0)) (i32.const 1))
        (func (export "proxy_on_log") (param i32) (call $log (i32.const 7) (local.get 0)))
        (func (export "proxy_on_delete") (param i32) (call $log (i32.const 8) (local.get 0)))
        "#,
    );
    let mut vm = start(&vm_wat);
    let root_a = vm.configure(1, b"abc").unwrap();
    let root_b = vm.configure(2, b"").unwrap();
    assert_ne!(root_a, root_b);
    let ctx = vm.create_http_context(root_a).unwrap();
    let mut ex = exchange();
    assert_eq!(
        vm.on_request_headers(ctx, &mut ex, false),
        Ok(Action::Continue)
    );
    assert_eq!(
        vm.on_response_headers(ctx, &mut ex, true),
        Ok(Action::Pause)
    );
    vm.finish(ctx, &mut ex).unwrap();
    let ev = |kind: u32, arg: u32| (kind << 16) | arg;
    assert_eq!(
        slots(&vm, 12),
        [
            ev(1, root_a),
            ev(2, root_a),
            ev(3, 3), // configuration size
            ev(1, root_b),
            ev(2, root_b),
            ev(3, 0),
            ev(1, ctx),
            ev(4, 6), // num_headers
            ev(5, 1), // end_of_stream
            ev(6, ctx),
            ev(7, ctx),
            ev(8, ctx),
        ]
    );
    // The finished context is gone; unknown ids are refused without
    // breaking the VM and without calling the plugin.
    let fault = vm.on_request_headers(ctx, &mut ex, true).err().unwrap();
    assert_eq!(fault.reason, format!("unknown HTTP context id {ctx}"));
    assert!(
        vm.create_http_context(ctx).is_err(),
        "an HTTP context is not a root"
    );
    assert!(vm.finish(999, &mut ex).is_err());
    assert!(!vm.is_broken());
    let ctx2 = vm.create_http_context(root_b).unwrap();
    assert!(ctx2 != ctx && ctx2 != root_a && ctx2 != root_b);
}

/// ABI 0.1.0 headers callbacks take `(ctx, num_headers)`.
#[test]
fn abi_0_1_0_headers_callbacks_are_called_with_two_params() {
    let vm_wat = Wat::new().module_with_marker(
        "proxy_abi_version_0_1_0",
        r#"(func (export "proxy_on_request_headers") (param i32 i32) (result i32)
             (i32.store (i32.const 28672) (local.get 1)) (i32.const 0))"#,
    );
    let mut vm = start(&vm_wat);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    assert_eq!(
        vm.on_request_headers(ctx, &mut exchange(), true),
        Ok(Action::Continue)
    );
    assert_eq!(slots(&vm, 1), [6]);
}

/// A module that exports no callbacks at all: everything is skipped.
#[test]
fn missing_callbacks_are_skipped() {
    let mut vm = start(&Wat::new().module(""));
    let root = vm.configure(1, b"x").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    assert_eq!(
        vm.on_request_headers(ctx, &mut ex, true),
        Ok(Action::Continue)
    );
    assert_eq!(
        vm.on_response_headers(ctx, &mut ex, true),
        Ok(Action::Continue)
    );
    assert_eq!(vm.finish(ctx, &mut ex), Ok(true));
    assert_eq!(ex, exchange(), "untouched");
}

#[test]
fn a_trap_is_a_fault_and_breaks_the_vm() {
    let vm_wat = Wat::new().module(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)"#,
    );
    let mut vm = start(&vm_wat);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    let fault = vm.on_request_headers(ctx, &mut ex, true).err().unwrap();
    assert_eq!(fault.hook, "proxy_on_request_headers");
    assert!(
        fault
            .to_string()
            .starts_with(r#"plugin "test" failed in proxy_on_request_headers: trapped: "#),
        "{fault}"
    );
    assert!(fault.reason.contains("unreachable"), "{fault}");
    assert!(vm.is_broken());
    assert_eq!(ex, exchange(), "the exchange comes back even after a trap");
    let again = vm.on_request_headers(ctx, &mut ex, true).err().unwrap();
    assert_eq!(again.reason, "the VM is broken by an earlier fault");
    assert!(vm.configure(2, b"").is_err());
}

/// An infinite loop runs out of fuel quickly, even in a debug build.
#[test]
fn an_infinite_loop_is_stopped_by_fuel() {
    let vm_wat = Wat::new().module(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0))"#,
    );
    let mut vm = start_with(&vm_wat, |spec| spec.fuel_per_callback = 2_000_000);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let started = Instant::now();
    let fault = vm
        .on_request_headers(ctx, &mut exchange(), true)
        .err()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(fault.reason, "exceeded its CPU budget (fuel)");
    assert!(vm.is_broken());
}

/// A loop of cheap host calls is stopped too: host calls pay fuel.
#[test]
fn a_host_call_loop_is_stopped_by_fuel() {
    let vm_wat = Wat::new().module(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (loop $l (drop (call $proxy_get_header_map_size (i32.const 0) (i32.const 16))) (br $l))
             (i32.const 0))"#,
    );
    let mut vm = start_with(&vm_wat, |spec| spec.fuel_per_callback = 2_000_000);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let fault = vm
        .on_request_headers(ctx, &mut exchange(), true)
        .err()
        .unwrap();
    assert_eq!(fault.reason, "exceeded its CPU budget (fuel)");
}

#[test]
fn an_infinite_loop_in_start_is_stopped_by_fuel() {
    let vm_wat = Wat::new().module(r#"(func (export "_initialize") (loop $l (br $l)))"#);
    let plugin = load_with(&vm_wat, |spec| spec.fuel_per_callback = 100_000).unwrap();
    let fault = PluginVm::start(plugin).err().unwrap();
    assert_eq!(
        (fault.hook, fault.reason.as_str()),
        ("_initialize", "exceeded its CPU budget (fuel)")
    );
}

/// Every callback gets a full budget: fuel does not carry over.
#[test]
fn fuel_is_refilled_for_every_callback() {
    let vm_wat = Wat::new().module(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (local $i i32)
             (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
                      (br_if $l (i32.lt_u (local.get $i) (i32.const 10000))))
             (i32.const 0))"#,
    );
    let mut vm = start_with(&vm_wat, |spec| spec.fuel_per_callback = 150_000);
    let root = vm.configure(1, b"").unwrap();
    for _ in 0..20 {
        let ctx = vm.create_http_context(root).unwrap();
        vm.on_request_headers(ctx, &mut exchange(), true).unwrap();
        vm.finish(ctx, &mut exchange()).unwrap();
    }
}

/// `memory.grow` past `memory_limit` returns -1 inside the guest; the VM
/// keeps working.
#[test]
fn memory_grow_past_the_limit_returns_minus_one() {
    let vm_wat = Wat::new().module(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (i32.store (i32.const 28672) (memory.grow (i32.const 1)))
             (i32.store (i32.const 28676) (memory.grow (i32.const 1)))
             (i32.store (i32.const 28680) (memory.grow (i32.const 1000)))
             (i32.store (i32.const 28684) (memory.size))
             (i32.const 0))"#,
    );
    let mut vm = start_with(&vm_wat, |spec| spec.memory_limit = 2 * 65536);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    vm.on_request_headers(ctx, &mut exchange(), true).unwrap();
    assert_eq!(slots(&vm, 4), [1, u32::MAX, u32::MAX, 2]);
    assert!(!vm.is_broken());
}

/// Unknown imports (and imports whose signature differs from the host's)
/// are stubbed: i32-returning ones answer an error status, others trap.
#[test]
fn a_known_import_with_another_signature_is_refused() {
    let vm_wat = Wat::new().module(r#"(import "env" "proxy_log" (func (param i32) (result i32)))"#);
    let err = load_with(&vm_wat, |_| {}).err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("env.proxy_log"), "{msg}");
    assert!(msg.contains("the proxy-wasm ABI defines it as"), "{msg}");
}

#[test]
fn unknown_imports_are_stubbed() {
    let vm_wat = Wat::new().module(
        r#"
        (import "env" "proxy_not_in_any_abi" (func $unknown (param i32) (result i32)))
        (import "env" "proxy_also_unknown" (func $wrong_log (param i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_not_a_thing" (func $unknown_wasi (result i32)))
        (import "wasi_unstable" "fd_write" (func $old_fd_write (param i32 i32 i32 i32) (result i32)))
        (import "custom" "no_result" (func $no_result (param i64)))
        (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
          (i32.store (i32.const 28672) (call $unknown (i32.const 1)))
          (i32.store (i32.const 28676) (call $wrong_log (i32.const 1)))
          (i32.store (i32.const 28680) (call $unknown_wasi))
          (i32.store (i32.const 28684) (call $old_fd_write (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 16)))
          (i32.const 0))
        (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
          (call $no_result (i64.const 1))
          (i32.const 0))
        "#,
    );
    let plugin = load_with(&vm_wat, |_| {}).unwrap();
    assert_eq!(
        plugin.stubbed,
        [
            "env.proxy_not_in_any_abi",
            "env.proxy_also_unknown",
            "wasi_snapshot_preview1.fd_not_a_thing",
            "custom.no_result"
        ]
    );
    let mut vm = PluginVm::start(plugin).unwrap();
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = exchange();
    vm.on_request_headers(ctx, &mut ex, true).unwrap();
    assert_eq!(
        slots(&vm, 4),
        [12, 12, 52, 8],
        "UNIMPLEMENTED, UNIMPLEMENTED, NOSYS, real fd_write: BADF"
    );
    let fault = vm.on_response_headers(ctx, &mut ex, true).err().unwrap();
    assert!(
        fault
            .reason
            .contains("called unimplemented host function custom.no_result"),
        "{fault}"
    );
}

/// The whole ABI surface links: a module importing every `env` function
/// and every WASI function under both module names instantiates.
#[test]
fn every_host_function_is_defined_with_its_abi_signature() {
    let mut imports = String::new();
    for (name, params) in super::ENV {
        imports += &format!("(import \"env\" \"{name}\" (func (param {params}) (result i32)))\n");
    }
    imports += r#"(import "env" "emscripten_notify_memory_growth" (func (param i32)))
                  (import "env" "pthread_equal" (func (param i32 i32) (result i32)))"#;
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        for (name, params, results) in WASI_ALL {
            let results = if results.is_empty() {
                String::new()
            } else {
                format!("(result {results})")
            };
            imports +=
                &format!("(import \"{module}\" \"{name}\" (func (param {params}) {results}))\n");
        }
    }
    let module = format!(
        r#"(module {imports} (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))"#
    );
    let plugin = load_with(&module, |_| {}).unwrap();
    assert_eq!(
        plugin.stubbed,
        Vec::<String>::new(),
        "every import matched a host definition exactly"
    );
    PluginVm::start(plugin).unwrap();
}

/// All 46 WASI preview1 functions (cpp-host lists 45; `proc_raise` is the
/// 46th), with their wasm signatures.
const WASI_ALL: &[(&str, &str, &str)] = &[
    ("args_get", "i32 i32", "i32"),
    ("args_sizes_get", "i32 i32", "i32"),
    ("environ_get", "i32 i32", "i32"),
    ("environ_sizes_get", "i32 i32", "i32"),
    ("clock_res_get", "i32 i32", "i32"),
    ("clock_time_get", "i32 i64 i32", "i32"),
    ("fd_advise", "i32 i64 i64 i32", "i32"),
    ("fd_allocate", "i32 i64 i64", "i32"),
    ("fd_close", "i32", "i32"),
    ("fd_datasync", "i32", "i32"),
    ("fd_fdstat_get", "i32 i32", "i32"),
    ("fd_fdstat_set_flags", "i32 i32", "i32"),
    ("fd_fdstat_set_rights", "i32 i64 i64", "i32"),
    ("fd_filestat_get", "i32 i32", "i32"),
    ("fd_filestat_set_size", "i32 i64", "i32"),
    ("fd_filestat_set_times", "i32 i64 i64 i32", "i32"),
    ("fd_pread", "i32 i32 i32 i64 i32", "i32"),
    ("fd_prestat_get", "i32 i32", "i32"),
    ("fd_prestat_dir_name", "i32 i32 i32", "i32"),
    ("fd_pwrite", "i32 i32 i32 i64 i32", "i32"),
    ("fd_read", "i32 i32 i32 i32", "i32"),
    ("fd_readdir", "i32 i32 i32 i64 i32", "i32"),
    ("fd_renumber", "i32 i32", "i32"),
    ("fd_seek", "i32 i64 i32 i32", "i32"),
    ("fd_sync", "i32", "i32"),
    ("fd_tell", "i32 i32", "i32"),
    ("fd_write", "i32 i32 i32 i32", "i32"),
    ("path_create_directory", "i32 i32 i32", "i32"),
    ("path_filestat_get", "i32 i32 i32 i32 i32", "i32"),
    (
        "path_filestat_set_times",
        "i32 i32 i32 i32 i64 i64 i32",
        "i32",
    ),
    ("path_link", "i32 i32 i32 i32 i32 i32 i32", "i32"),
    ("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32", "i32"),
    ("path_readlink", "i32 i32 i32 i32 i32 i32", "i32"),
    ("path_remove_directory", "i32 i32 i32", "i32"),
    ("path_rename", "i32 i32 i32 i32 i32 i32", "i32"),
    ("path_symlink", "i32 i32 i32 i32 i32", "i32"),
    ("path_unlink_file", "i32 i32 i32", "i32"),
    ("poll_oneoff", "i32 i32 i32 i32", "i32"),
    ("proc_exit", "i32", ""),
    ("proc_raise", "i32", "i32"),
    ("sched_yield", "", "i32"),
    ("random_get", "i32 i32", "i32"),
    ("sock_accept", "i32 i32 i32", "i32"),
    ("sock_recv", "i32 i32 i32 i32 i32 i32", "i32"),
    ("sock_send", "i32 i32 i32 i32 i32", "i32"),
    ("sock_shutdown", "i32 i32", "i32"),
];

/// Measures how fast fuel burns (printed with `--nocapture`) and checks, in
/// release builds, that the default budget stops every kind of busy loop
/// within 100 ms.
#[test]
fn default_budget_stops_busy_loops_quickly() {
    let fuel = if cfg!(debug_assertions) {
        2_000_000
    } else {
        crate::wasm::DEFAULT_FUEL_PER_CALLBACK
    };
    let w = Wat::new();
    let key = w.s(":path");
    let loops = [
        ("loop br 0", "(loop $l (br $l))".to_owned()),
        ("loop calling a wasm function", "(loop $l (drop (call $f (i32.const 1))) (br $l))".to_owned()),
        ("loop calling get_header_map_size", "(loop $l (drop (call $proxy_get_header_map_size (i32.const 0) (i32.const 16))) (br $l))".to_owned()),
        ("loop calling proxy_log (filtered)", "(loop $l (drop (call $proxy_log (i32.const 0) (i32.const 0) (i32.const 64))) (br $l))".to_owned()),
        ("loop of memory.fill 64 KiB", "(loop $l (memory.fill (i32.const 0) (i32.const 0) (i32.const 65536)) (br $l))".to_owned()),
        ("loop of memory.copy 32 KiB", "(loop $l (memory.copy (i32.const 0) (i32.const 32768) (i32.const 32768)) (br $l))".to_owned()),
        (
            "loop calling get_header_map_value",
            format!("(loop $l (global.set $heap (i32.const 40000)) (drop (call $proxy_get_header_map_value (i32.const 0) {key} (i32.const 16) (i32.const 20))) (br $l))"),
        ),
    ];
    for (what, body) in loops {
        let module = w.module(&format!(
            r#"(func $f (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
               (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body} (i32.const 0))"#
        ));
        let mut vm = start_with(&module, |spec| spec.fuel_per_callback = fuel);
        let root = vm.configure(1, b"").unwrap();
        let ctx = vm.create_http_context(root).unwrap();
        let started = Instant::now();
        let fault = vm
            .on_request_headers(ctx, &mut exchange(), true)
            .err()
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(fault.reason, "exceeded its CPU budget (fuel)", "{what}");
        let per_ms = fuel as f64 / elapsed.as_secs_f64() / 1000.0;
        eprintln!("{what}: {fuel} fuel in {elapsed:?} = {per_ms:.0} fuel/ms");
        if cfg!(not(debug_assertions)) {
            assert!(
                elapsed < Duration::from_millis(100),
                "{what} ran {elapsed:?}"
            );
        }
    }
}

/// Every fault says what kind it is, decided where it is made: the kinds
/// that break the instance, and those that leave it usable.
#[test]
fn faults_carry_the_kind_decided_where_they_are_made() {
    use crate::wasm::FaultKind;
    // The request header hook fails as the configuration's size says.
    let vm_wat = Wat::new().module(
        r#"
        (global $mode (mut i32) (i32.const 0))
        (func (export "proxy_on_configure") (param i32) (param $size i32) (result i32)
          (global.set $mode (local.get $size))
          (i32.ne (local.get $size) (i32.const 9)))
        (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
          (if (i32.eq (global.get $mode) (i32.const 1)) (then unreachable))
          (if (i32.eq (global.get $mode) (i32.const 2)) (then (loop $l (br $l))))
          (if (i32.eq (global.get $mode) (i32.const 3))
            (then
              (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
              unreachable))
          (if (i32.eq (global.get $mode) (i32.const 4)) (then (call $wasi_proc_exit (i32.const 3))))
          (i32.const 0))
        "#,
    );
    let fault_of = |mode: usize| {
        let mut vm = start_with(&vm_wat, |s| {
            s.fuel_per_callback = 100_000;
            s.memory_limit = 4 << 20;
        });
        let root = match vm.configure(1, &vec![b' '; mode]) {
            Ok(root) => root,
            Err(fault) => return (fault.kind, vm.is_broken()),
        };
        let ctx = vm.create_http_context(root).unwrap();
        let fault = vm
            .on_request_headers(ctx, &mut exchange(), true)
            .unwrap_err();
        (fault.kind, vm.is_broken())
    };
    assert_eq!(fault_of(1), (FaultKind::Trap, true));
    assert_eq!(fault_of(2), (FaultKind::Fuel, true));
    assert_eq!(fault_of(3), (FaultKind::Memory, true));
    assert_eq!(fault_of(4), (FaultKind::Exit(3), true));
    assert_eq!(fault_of(9), (FaultKind::Rejected, false));
    let mut vm = start(&vm_wat);
    let mut ex = exchange();
    let unknown = vm.on_request_headers(99, &mut ex, true).unwrap_err();
    assert_eq!(
        (unknown.kind, vm.is_broken()),
        (FaultKind::UnknownContext, false)
    );
    let root = vm.configure(1, b" ").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    vm.on_request_headers(ctx, &mut ex, true).unwrap_err();
    let after = vm.on_request_headers(ctx, &mut ex, true).unwrap_err();
    assert_eq!(after.kind, FaultKind::Broken);
}
