//! The committed plugins in `fixtures/` (see `fixtures/README.md`): real
//! Rust-SDK builds and hand-written WAT modules that mimic other
//! toolchains or misbehave on purpose. Tests only load them.

use std::sync::Arc;

use super::*;
use crate::wasm::{Action, Plugin, PluginVm};

pub(super) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("{name}.wasm"))
}

pub(super) fn load_fixture(
    name: &str,
    edit: impl FnOnce(&mut PluginSpec),
) -> Result<Arc<Plugin>, LoadError> {
    let mut spec = super::spec(fixture(name));
    spec.name = name.to_owned();
    edit(&mut spec);
    Plugin::load(&ENGINE, spec).map(Arc::new)
}

pub(super) fn start_fixture(name: &str) -> PluginVm {
    let plugin = load_fixture(name, |_| {}).unwrap_or_else(|e| panic!("{e}"));
    PluginVm::start(plugin).unwrap_or_else(|f| panic!("{f}"))
}

/// Runs one full request through `vm` and returns the actions and exchange.
pub(super) fn request(
    vm: &mut PluginVm,
    root: u32,
    mut ex: Exchange,
) -> (
    Result<Action, crate::wasm::Fault>,
    Result<Action, crate::wasm::Fault>,
    Exchange,
) {
    let ctx = vm.create_http_context(root).unwrap();
    let req = vm.on_request_headers(ctx, &mut ex, true);
    let resp = if req.is_ok() {
        vm.on_response_headers(ctx, &mut ex, true)
    } else {
        Ok(Action::Continue)
    };
    if !vm.is_broken() {
        vm.finish(ctx, &mut ex).unwrap();
    }
    (req, resp, ex)
}

pub(super) fn header(map: &crate::http::HeaderMap, name: &str) -> Option<String> {
    map.get(name.as_bytes())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn every_engine_replica_runs_the_plugin_on_its_own() {
    let engine = crate::wasm::Engine::with_replicas(3);
    let mut spec = super::spec(fixture("custom_response_header"));
    spec.name = "replicated".to_owned();
    let plugin = Arc::new(Plugin::load(&engine, spec).unwrap_or_else(|e| panic!("{e}")));
    // Replica 4 wraps around to replica 1.
    for replica in [0, 1, 2, 4] {
        let mut vm =
            PluginVm::start_on(Arc::clone(&plugin), replica).unwrap_or_else(|f| panic!("{f}"));
        let root = vm
            .configure(1, br#"{"headers":[{"name":"X-Replica","value":"yes"}]}"#)
            .unwrap();
        let (_, resp, ex) = request(&mut vm, root, exchange());
        assert_eq!(resp, Ok(Action::Continue));
        assert_eq!(
            header(&ex.response_headers, "x-replica").as_deref(),
            Some("yes")
        );
    }
}

#[test]
fn plugins_over_the_same_bytes_share_code_and_keep_their_own_settings() {
    let engine = crate::wasm::Engine::with_replicas(2);
    let copy = std::env::temp_dir().join(format!("tinygate-share-{}.wasm", std::process::id()));
    std::fs::copy(fixture("custom_response_header"), &copy).unwrap();
    let load = |name: &str, file: PathBuf, loaded: &[Arc<Plugin>]| {
        let mut spec = super::spec(file);
        spec.name = name.to_owned();
        Arc::new(Plugin::load_sharing(&engine, spec, loaded).unwrap_or_else(|e| panic!("{e}")))
    };
    let a = load("a", fixture("custom_response_header"), &[]);
    let b = load("b", copy.clone(), &[Arc::clone(&a)]);
    let other = load(
        "other",
        fixture("tinygo_like"),
        &[Arc::clone(&a), Arc::clone(&b)],
    );
    let _ = std::fs::remove_file(&copy);
    assert_eq!(b.name(), "b");
    for (plugin, value) in [(&a, "from-a"), (&b, "from-b")] {
        let mut vm = PluginVm::start_on(Arc::clone(plugin), 1).unwrap_or_else(|f| panic!("{f}"));
        let conf = format!(r#"{{"headers":[{{"name":"X-From","value":"{value}"}}]}}"#);
        let root = vm.configure(1, conf.as_bytes()).unwrap();
        let (_, _, ex) = request(&mut vm, root, exchange());
        assert_eq!(
            header(&ex.response_headers, "x-from").as_deref(),
            Some(value)
        );
    }
    // Other bytes are never taken for the same module.
    let vm = PluginVm::start(other).unwrap_or_else(|f| panic!("{f}"));
    assert!(
        !vm.stream_hooks().response_body,
        "tinygo_like exports no body hook"
    );
}

#[test]
fn custom_response_header_adds_the_configured_header() {
    let mut vm = start_fixture("custom_response_header");
    let root = vm
        .configure(1, br#"{"headers":[{"name":"X-Go-Wasm","value":"APISIX"}]}"#)
        .unwrap();
    for _ in 0..3 {
        let (req, resp, ex) = request(&mut vm, root, exchange());
        assert_eq!((req, resp), (Ok(Action::Continue), Ok(Action::Continue)));
        assert_eq!(
            header(&ex.response_headers, "x-go-wasm").as_deref(),
            Some("APISIX")
        );
        assert_eq!(
            ex.request_headers,
            exchange().request_headers,
            "request untouched"
        );
    }
    assert!(vm.last_fuel_used() < 100_000, "a real hook is cheap");
    let fault = vm.configure(2, b"{not json").err().unwrap();
    assert_eq!(fault.hook, "proxy_on_configure");
    assert!(
        vm.configure(3, b"").is_err(),
        "an empty configuration is refused"
    );
    assert!(!vm.is_broken());
    assert_eq!(vm.configure(1, b"ignored: cached"), Ok(root));
}

#[test]
fn tinygo_like_starts_with_start_and_malloc() {
    let mut vm = start_fixture("tinygo_like");
    let root = vm.configure(1, br#"{"headers":[]}"#).unwrap();
    let (_, resp, ex) = request(&mut vm, root, exchange());
    assert_eq!(resp, Ok(Action::Continue));
    assert_eq!(
        header(&ex.response_headers, "x-tinygo").as_deref(),
        Some("yes")
    );
    assert!(
        vm.configure(2, b"").is_err(),
        "an empty configuration fails, as with the Go SDK"
    );
}

#[test]
fn header_mutator_edits_both_maps() {
    let mut vm = start_fixture("header_mutator");
    let conf = br#"{"request": {"add": [["x-a","1"]], "replace": [["user-agent","tg"]], "remove": ["x-remove"]},
                    "response": {"add": [["x-r","2"]], "replace": [["content-type","text/html"]], "remove": ["x-up"]},
                    "echo_path": true}"#;
    let root = vm.configure(1, conf).unwrap();
    let (_, _, ex) = request(&mut vm, root, exchange());
    assert_eq!(
        strings(&ex.request_headers),
        [
            (":method", "GET"),
            (":path", "/hello?x=1"),
            (":authority", "example.com"),
            (":scheme", "http"),
            ("user-agent", "tg"),
            ("x-a", "1"),
            ("x-seen-path", "/hello?x=1")
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    assert_eq!(
        strings(&ex.response_headers),
        [
            (":status", "200"),
            ("content-type", "text/html"),
            ("x-r", "2")
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    assert!(vm.configure(2, br#"{"unknown": 1}"#).is_err());
}

#[test]
fn local_reply_sends_a_local_response() {
    let mut vm = start_fixture("local_reply");
    let root = vm.configure(1, br#"{"status": 403, "body": "denied\n", "headers": [["x-reason","policy"]], "when_header": "x-deny"}"#).unwrap();
    let (req, _, ex) = request(&mut vm, root, exchange());
    assert_eq!(
        (req, ex.local_response.clone()),
        (Ok(Action::Continue), None),
        "no x-deny: passes"
    );
    let mut deny = exchange();
    deny.request_headers.add(b"x-deny", b"1");
    let ctx = vm.create_http_context(root).unwrap();
    assert_eq!(
        vm.on_request_headers(ctx, &mut deny, true),
        Ok(Action::Pause)
    );
    vm.finish(ctx, &mut deny).unwrap();
    let local = deny.local_response.clone().unwrap();
    assert_eq!(local.status, 403);
    assert_eq!(local.body, b"denied\n");
    assert_eq!(local.headers, [(b"x-reason".to_vec(), b"policy".to_vec())]);

    let root = vm
        .configure(2, br#"{"phase": "response", "status": 502}"#)
        .unwrap();
    let (req, resp, ex) = request(&mut vm, root, exchange());
    assert_eq!((req, resp), (Ok(Action::Continue), Ok(Action::Pause)));
    assert_eq!(ex.local_response.clone().map(|l| l.status), Some(502));
    assert!(vm.configure(3, br#"{"phase": "later"}"#).is_err());
}

#[test]
fn no_abi_marker_is_rejected_at_load() {
    let err = load_fixture("no_abi_marker", |_| {}).err().unwrap();
    assert!(
        err.to_string()
            .contains("no_abi_marker.wasm: not a proxy-wasm module"),
        "{err}"
    );
}

#[test]
fn trapping_fixtures_fault_and_break_the_vm() {
    for (name, hook) in [
        ("trap_on_request", "proxy_on_request_headers"),
        ("trap_on_response", "proxy_on_response_headers"),
    ] {
        let mut vm = start_fixture(name);
        let root = vm.configure(1, b"{}").unwrap();
        let (req, resp, _) = request(&mut vm, root, exchange());
        let fault = req.and(resp).err().unwrap();
        assert_eq!(fault.hook, hook);
        assert!(fault.reason.contains("unreachable"), "{fault}");
        assert!(vm.is_broken(), "{name}");
    }
    let mut vm = start_fixture("trap_on_configure");
    assert_eq!(
        vm.configure(1, b"{}").err().map(|f| f.hook),
        Some("proxy_on_configure")
    );
    assert!(vm.is_broken());
}

#[test]
fn trap_every_10th_traps_on_the_tenth_request() {
    let mut vm = start_fixture("trap_every_10th");
    let root = vm.configure(1, b"{}").unwrap();
    for i in 1..=9 {
        assert_eq!(
            request(&mut vm, root, exchange()).0,
            Ok(Action::Continue),
            "request {i}"
        );
    }
    assert!(request(&mut vm, root, exchange()).0.is_err());
    assert!(vm.is_broken());
}

#[test]
fn configure_false_is_retryable_and_does_not_break() {
    let mut vm = start_fixture("configure_false");
    for _ in 0..3 {
        assert_eq!(
            vm.configure(1, b"{}").err().map(|f| f.hook),
            Some("proxy_on_configure")
        );
    }
    assert!(!vm.is_broken());
}

#[test]
fn exit_in_start_fails_the_start() {
    let fault = PluginVm::start(load_fixture("exit_in_start", |_| {}).unwrap())
        .err()
        .unwrap();
    assert_eq!(
        fault.to_string(),
        r#"plugin "exit_in_start" failed in _start: called proc_exit(1)"#
    );
}

#[test]
fn loop_forever_runs_out_of_fuel() {
    let plugin = load_fixture("loop_forever", |spec| spec.fuel_per_callback = 1_000_000).unwrap();
    let mut vm = PluginVm::start(plugin).unwrap();
    let root = vm.configure(1, b"{}").unwrap();
    let fault = request(&mut vm, root, exchange()).0.err().unwrap();
    assert_eq!(fault.reason, "exceeded its CPU budget (fuel)");
}

#[test]
fn memory_bomb_is_capped_by_the_memory_limit() {
    let plugin = load_fixture("memory_bomb", |spec| spec.memory_limit = 128 << 20).unwrap();
    let mut vm = PluginVm::start(plugin).unwrap();
    let root = vm.configure(1, b"{}").unwrap();
    for _ in 0..3 {
        assert_eq!(request(&mut vm, root, exchange()).0, Ok(Action::Continue));
    }
}

#[test]
fn bad_pointers_all_get_invalid_memory_access() {
    let mut vm = start_fixture("bad_pointers");
    let root = vm.configure(1, b"{}").unwrap();
    let (req, _, ex) = request(&mut vm, root, exchange());
    assert_eq!(req, Ok(Action::Continue));
    assert_eq!(
        header(&ex.request_headers, "x-bad-pointers").as_deref(),
        Some("ok")
    );
    assert_eq!(ex.local_response, None, "nothing was sent");
}

#[test]
fn missing_import_is_stubbed_and_the_plugin_runs() {
    let plugin = load_fixture("missing_import", |_| {}).unwrap();
    assert_eq!(plugin.stubbed, ["env.proxy_this_does_not_exist"]);
    let mut vm = PluginVm::start(plugin).unwrap();
    let root = vm.configure(1, b"{}").unwrap();
    let (_, _, ex) = request(&mut vm, root, exchange());
    assert_eq!(
        header(&ex.response_headers, "x-missing-import").as_deref(),
        Some("loaded")
    );
}
