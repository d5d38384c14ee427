//! Tests of the host through its public API, with plugins written inline in
//! WAT so they need no toolchain. `Wat` builds a module around a body: the
//! ABI marker, one exported memory page, a bump allocator, the imports the
//! body names, and its string constants.
//!
//! Guest memory map used by the bodies: out-parameters at 16, 20, 24 and 32
//! (`$RET_PTR`, `$RET_SIZE`, `$RET_CAS`, `$RET_U64`), string constants from
//! 1024, status slots from `SLOTS`, the allocator's heap from 40000.

mod calls;
mod host_calls;
mod lifecycle;
mod main_fixtures;
mod metrics;
mod properties;
mod roots;
mod stream_fixtures;
mod streams;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use super::{Engine, Exchange, LoadError, Plugin, PluginSpec, PluginVm};

/// One engine for all tests (it is `Send + Sync`, which this also proves).
pub(crate) static ENGINE: LazyLock<Engine> = LazyLock::new(Engine::new);

/// Where bodies store statuses for the test to read back (`slot(i)`).
pub(crate) const SLOTS: u32 = 28672;

/// A pointer far outside the one-page memory.
pub(crate) const BAD: u32 = 0xFFFF_FF00;

/// Every `env` function and its wasm parameter list (all return `i32`).
const ENV: &[(&str, &str)] = &[
    ("proxy_log", "i32 i32 i32"),
    ("proxy_get_log_level", "i32"),
    ("proxy_get_current_time_nanoseconds", "i32"),
    ("proxy_set_tick_period_milliseconds", "i32"),
    ("proxy_done", ""),
    ("proxy_set_effective_context", "i32"),
    ("proxy_get_buffer_bytes", "i32 i32 i32 i32 i32"),
    ("proxy_set_buffer_bytes", "i32 i32 i32 i32 i32"),
    ("proxy_get_buffer_status", "i32 i32 i32"),
    ("proxy_get_configuration", "i32 i32"),
    ("proxy_get_header_map_size", "i32 i32"),
    ("proxy_get_header_map_pairs", "i32 i32 i32"),
    ("proxy_set_header_map_pairs", "i32 i32 i32"),
    ("proxy_get_header_map_value", "i32 i32 i32 i32 i32"),
    ("proxy_add_header_map_value", "i32 i32 i32 i32 i32"),
    ("proxy_replace_header_map_value", "i32 i32 i32 i32 i32"),
    ("proxy_remove_header_map_value", "i32 i32 i32"),
    ("proxy_continue_stream", "i32"),
    ("proxy_close_stream", "i32"),
    ("proxy_get_status", "i32 i32 i32"),
    ("proxy_continue_request", ""),
    ("proxy_continue_response", ""),
    ("proxy_clear_route_cache", ""),
    (
        "proxy_send_local_response",
        "i32 i32 i32 i32 i32 i32 i32 i32",
    ),
    ("proxy_http_call", "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32"),
    (
        "proxy_grpc_call",
        "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32",
    ),
    ("proxy_grpc_stream", "i32 i32 i32 i32 i32 i32 i32 i32 i32"),
    ("proxy_grpc_send", "i32 i32 i32 i32"),
    ("proxy_grpc_cancel", "i32"),
    ("proxy_grpc_close", "i32"),
    ("proxy_call_foreign_function", "i32 i32 i32 i32 i32 i32"),
    ("proxy_set_shared_data", "i32 i32 i32 i32 i32"),
    ("proxy_get_shared_data", "i32 i32 i32 i32 i32"),
    ("proxy_register_shared_queue", "i32 i32 i32"),
    ("proxy_resolve_shared_queue", "i32 i32 i32 i32 i32"),
    ("proxy_enqueue_shared_queue", "i32 i32 i32"),
    ("proxy_dequeue_shared_queue", "i32 i32 i32"),
    ("proxy_define_metric", "i32 i32 i32 i32"),
    ("proxy_record_metric", "i32 i64"),
    ("proxy_increment_metric", "i32 i64"),
    ("proxy_get_metric", "i32 i32"),
    ("proxy_get_property", "i32 i32 i32 i32"),
    ("proxy_set_property", "i32 i32 i32 i32"),
];

/// WASI functions the tests call, with their parameter lists.
const WASI: &[(&str, &str, &str)] = &[
    ("fd_write", "i32 i32 i32 i32", "i32"),
    ("random_get", "i32 i32", "i32"),
    ("clock_time_get", "i32 i64 i32", "i32"),
    ("environ_sizes_get", "i32 i32", "i32"),
    ("environ_get", "i32 i32", "i32"),
    ("args_sizes_get", "i32 i32", "i32"),
    ("fd_fdstat_get", "i32 i32", "i32"),
    ("fd_prestat_get", "i32 i32", "i32"),
    ("fd_read", "i32 i32 i32 i32", "i32"),
    ("poll_oneoff", "i32 i32 i32 i32", "i32"),
    ("proc_exit", "i32", ""),
];

/// Builds a test module: collects string constants, then wraps a body.
pub(crate) struct Wat {
    data: RefCell<Vec<(u32, Vec<u8>)>>,
}

impl Wat {
    pub(crate) fn new() -> Wat {
        Wat {
            data: RefCell::new(Vec::new()),
        }
    }

    /// `(i32.const ADDR) (i32.const LEN)` of a new constant holding `bytes`.
    pub(crate) fn s(&self, bytes: impl AsRef<[u8]>) -> String {
        let (addr, len) = self.place(bytes.as_ref());
        format!("(i32.const {addr}) (i32.const {len})")
    }

    /// Just the address of a new constant holding `bytes`.
    pub(crate) fn addr(&self, bytes: impl AsRef<[u8]>) -> u32 {
        self.place(bytes.as_ref()).0
    }

    fn place(&self, bytes: &[u8]) -> (u32, u32) {
        let mut data = self.data.borrow_mut();
        let addr = data
            .last()
            .map_or(1024, |(a, b)| (a + b.len() as u32 + 8) & !7);
        assert!(
            addr as usize + bytes.len() < SLOTS as usize,
            "test strings overflow their area"
        );
        data.push((addr, bytes.to_vec()));
        (addr, bytes.len() as u32)
    }

    /// The module text: `body` (whose `(import` lines are hoisted) plus
    /// every import it mentions (`$proxy_*`,
    /// `$wasi_*`), the marker `marker` (e.g. `proxy_abi_version_0_2_1`),
    /// memory, allocator and data.
    pub(crate) fn module_with_marker(&self, marker: &str, body: &str) -> String {
        // The body's own `(import ...)` lines must come before any function.
        let (mut imports, body): (String, String) =
            body.lines()
                .fold(Default::default(), |(mut i, mut b), line| {
                    let target = if line.trim_start().starts_with("(import") {
                        &mut i
                    } else {
                        &mut b
                    };
                    target.push_str(line);
                    target.push('\n');
                    (i, b)
                });
        let body = body.as_str();
        for (name, params) in ENV {
            if mentions(body, name) {
                imports += &format!(
                    "(import \"env\" \"{name}\" (func ${name} (param {params}) (result i32)))\n"
                );
            }
        }
        for (name, params, results) in WASI {
            if mentions(body, &format!("wasi_{name}")) {
                let results = if results.is_empty() {
                    String::new()
                } else {
                    format!("(result {results})")
                };
                imports += &format!("(import \"wasi_snapshot_preview1\" \"{name}\" (func $wasi_{name} (param {params}) {results}))\n");
            }
        }
        let data: String = self
            .data
            .borrow()
            .iter()
            .map(|(addr, bytes)| {
                let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
                format!("(data (i32.const {addr}) \"{escaped}\")\n")
            })
            .collect();
        format!(
            r#"(module
{imports}
(memory (export "memory") 1)
(global $heap (mut i32) (i32.const 40000))
(func $alloc (export "proxy_on_memory_allocate") (param $size i32) (result i32)
  (local $ptr i32)
  (local.set $ptr (global.get $heap))
  (global.set $heap (i32.add (global.get $heap) (local.get $size)))
  (block $ok
    (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
    (drop (memory.grow (i32.add (i32.const 1)
      (i32.div_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536))))))
  (local.get $ptr))
(func (export "{marker}"))
{body}
{data})"#
        )
    }

    /// [`Wat::module_with_marker`] for ABI 0.2.1.
    pub(crate) fn module(&self, body: &str) -> String {
        self.module_with_marker("proxy_abi_version_0_2_1", body)
    }
}

fn mentions(body: &str, name: &str) -> bool {
    body.match_indices(&format!("${name}")).any(|(i, m)| {
        let next = body[i + m.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `(i32.store (i32.const SLOT_i) EXPR)`.
pub(crate) fn store_slot(i: u32, expr: &str) -> String {
    format!("(i32.store (i32.const {}) {expr})", SLOTS + 4 * i)
}

/// The `i32` values in slots `0..n`.
pub(crate) fn slots(vm: &PluginVm, n: u32) -> Vec<u32> {
    vm.read_memory(SLOTS, 4 * n)
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A spec for `file` named "test".
pub(crate) fn spec(file: PathBuf) -> PluginSpec {
    PluginSpec {
        name: "test".to_owned(),
        file,
        ..PluginSpec::default()
    }
}

/// Compiles `wat` to a temporary file and loads it with `edit` applied to
/// the default spec.
pub(crate) fn load_with(
    wat: &str,
    edit: impl FnOnce(&mut PluginSpec),
) -> Result<Arc<Plugin>, LoadError> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let bytes = wat::parse_str(wat).unwrap_or_else(|e| panic!("invalid test WAT: {e}\n{wat}"));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!(
        "tinygate-wasm-test-{}-{n}.wasm",
        std::process::id()
    ));
    std::fs::write(&file, bytes).expect("temp dir is writable");
    let mut spec = spec(file.clone());
    edit(&mut spec);
    let result = Plugin::load(&ENGINE, spec);
    let _ = std::fs::remove_file(&file);
    result.map(Arc::new)
}

/// Loads and starts `wat`, panicking on failure.
pub(crate) fn start(wat: &str) -> PluginVm {
    start_with(wat, |_| {})
}

/// Loads `wat` with `edit` applied to the spec and starts it.
pub(crate) fn start_with(wat: &str, edit: impl FnOnce(&mut PluginSpec)) -> PluginVm {
    let plugin = load_with(wat, edit).unwrap_or_else(|e| panic!("{e}"));
    PluginVm::start(plugin).unwrap_or_else(|e| panic!("{e}"))
}

/// A request exchange as the proxy builds it: pseudo-headers first.
pub(crate) fn exchange() -> Exchange {
    let mut ex = Exchange::default();
    for (k, v) in [
        (":method", "GET"),
        (":path", "/hello?x=1"),
        (":authority", "example.com"),
        (":scheme", "http"),
        ("user-agent", "test/1.0"),
        ("x-remove", "bye"),
    ] {
        ex.request_headers.add(k.as_bytes(), v.as_bytes());
    }
    for (k, v) in [(":status", "200"), ("content-type", "text/plain")] {
        ex.response_headers.add(k.as_bytes(), v.as_bytes());
    }
    ex
}

/// The map as `(name, value)` strings, for readable assertions.
pub(crate) fn strings(map: &crate::http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

#[test]
fn public_types_are_send_and_sync_where_promised() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Engine>();
    send_sync::<Plugin>();
    send_sync::<Arc<Plugin>>();
    send_sync::<LoadError>();
    send_sync::<super::Fault>();
    send_sync::<super::Effect>();
    send_sync::<super::HttpCall>();
    fn send<T: Send>() {}
    send::<PluginVm>();
}
