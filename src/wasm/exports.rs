//! The module's exports as the host sees them: the ABI version marker, the
//! signatures of the callbacks the host calls (checked once at load), and
//! the typed handles to them (looked up once per VM, never per call).
//!
//! Owns the table of callback names and signatures from the spec's
//! "Callbacks exposed by the Wasm module". Every callback is optional: a
//! missing one is `None` and the host skips it. Knows nothing about what the
//! callbacks do.

use wasmi::{ExternType, Instance, Module, Store, TypedFunc, ValType};

use super::host::HostState;
use super::types::AbiVersion;

/// `(name, accepted parameter counts, result count)`; every value is `i32`.
/// The two headers callbacks take 2 parameters in ABI 0.1.0, 3 later.
const CALLBACKS: &[(&str, &[usize], usize)] = &[
    ("_initialize", &[0], 0),
    ("main", &[2], 1),
    ("__main_void", &[0], 1),
    ("_start", &[0], 0),
    ("proxy_on_context_create", &[2], 0),
    ("proxy_on_vm_start", &[2], 1),
    ("proxy_on_configure", &[2], 1),
    ("proxy_on_request_headers", &[2, 3], 1),
    ("proxy_on_response_headers", &[2, 3], 1),
    ("proxy_on_request_body", &[3], 1),
    ("proxy_on_response_body", &[3], 1),
    ("proxy_on_request_trailers", &[2], 1),
    ("proxy_on_response_trailers", &[2], 1),
    ("proxy_on_http_call_response", &[5], 0),
    ("proxy_on_tick", &[1], 0),
    ("proxy_on_queue_ready", &[2], 0),
    ("proxy_on_done", &[1], 1),
    ("proxy_on_log", &[1], 0),
    ("proxy_on_delete", &[1], 0),
];

/// The allocator exports, in the order the spec prefers them (cpp-host and
/// Kong check `malloc` first; the spec calls it the deprecated fallback).
const ALLOCATORS: [&str; 2] = ["proxy_on_memory_allocate", "malloc"];

/// The ABI version the module declares, the newest if it declares several.
pub(crate) fn abi_version(module: &Module) -> Option<AbiVersion> {
    AbiVersion::MARKERS
        .iter()
        .filter(|(name, _)| module.get_export(name).is_some())
        .map(|&(_, version)| version)
        .max()
}

/// The allocator export the host will use, if any.
pub(crate) fn allocator_name(module: &Module) -> Option<&'static str> {
    ALLOCATORS
        .into_iter()
        .find(|name| matches!(module.get_export(name), Some(ExternType::Func(_))))
}

/// Checks that every callback the host may call, and the allocator, has
/// the signature the spec gives it.
///
/// # Errors
///
/// A message naming the first export with the wrong signature or kind.
pub(crate) fn check(module: &Module) -> Result<(), String> {
    let allocator = allocator_name(module).map(|name| (name, &[1][..], 1));
    for (name, params, results) in CALLBACKS.iter().copied().chain(allocator) {
        let Some(ty) = module.get_export(name) else {
            continue;
        };
        let ExternType::Func(func) = ty else {
            return Err(format!("export \"{name}\" is not a function"));
        };
        let all_i32 = func
            .params()
            .iter()
            .chain(func.results())
            .all(|t| *t == ValType::I32);
        if !all_i32 || !params.contains(&func.params().len()) || func.results().len() != results {
            let want = params
                .iter()
                .map(|n| signature(*n, results))
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(format!(
                "export \"{name}\" has signature {func:?}, expected {want}"
            ));
        }
    }
    Ok(())
}

fn signature(params: usize, results: usize) -> String {
    format!(
        "({}) -> ({})",
        vec!["i32"; params].join(", "),
        vec!["i32"; results].join(", ")
    )
}

/// A headers callback in its 0.1.0 or 0.2.x form.
#[derive(Clone, Copy)]
pub(crate) enum HeadersHook {
    /// `(context_id, num_headers) -> action` (ABI 0.1.0).
    V1(TypedFunc<(u32, u32), u32>),
    /// `(context_id, num_headers, end_of_stream) -> action`.
    V2(TypedFunc<(u32, u32, u32), u32>),
}

/// `proxy_on_{request,response}_body(context_id, body_size, end_of_stream)
/// -> action`.
pub(crate) type BodyHook = TypedFunc<(u32, u32, u32), u32>;

/// `proxy_on_{request,response}_trailers(context_id, num_trailers) -> action`.
pub(crate) type TrailersHook = TypedFunc<(u32, u32), u32>;

/// `proxy_on_http_call_response(root_context_id, call_id, num_headers,
/// body_size, num_trailers)`.
pub(crate) type CallResponseHook = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// Typed handles to the callbacks one instance exports.
#[derive(Clone, Copy)]
pub(crate) struct Exports {
    pub(crate) initialize: Option<TypedFunc<(), ()>>,
    pub(crate) main: Option<TypedFunc<(u32, u32), u32>>,
    pub(crate) main_void: Option<TypedFunc<(), u32>>,
    pub(crate) start: Option<TypedFunc<(), ()>>,
    pub(crate) allocator: Option<TypedFunc<u32, u32>>,
    pub(crate) on_context_create: Option<TypedFunc<(u32, u32), ()>>,
    pub(crate) on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    pub(crate) on_configure: Option<TypedFunc<(u32, u32), u32>>,
    pub(crate) on_request_headers: Option<HeadersHook>,
    pub(crate) on_response_headers: Option<HeadersHook>,
    pub(crate) on_request_body: Option<BodyHook>,
    pub(crate) on_response_body: Option<BodyHook>,
    pub(crate) on_request_trailers: Option<TrailersHook>,
    pub(crate) on_response_trailers: Option<TrailersHook>,
    pub(crate) on_http_call_response: Option<CallResponseHook>,
    pub(crate) on_tick: Option<TypedFunc<u32, ()>>,
    pub(crate) on_queue_ready: Option<TypedFunc<(u32, u32), ()>>,
    pub(crate) on_done: Option<TypedFunc<u32, u32>>,
    pub(crate) on_log: Option<TypedFunc<u32, ()>>,
    pub(crate) on_delete: Option<TypedFunc<u32, ()>>,
}

impl Exports {
    /// Looks every callback up once. Signatures were checked at load, so a
    /// mismatch here cannot happen; it would read as a missing callback.
    pub(crate) fn lookup(instance: &Instance, store: &Store<HostState>) -> Exports {
        let get = |name: &str| instance.get_func(store, name);
        let typed2 = |name: &str| get(name).and_then(|f| f.typed::<(u32, u32), u32>(store).ok());
        let typed3 =
            |name: &str| get(name).and_then(|f| f.typed::<(u32, u32, u32), u32>(store).ok());
        let headers = |name: &str| {
            typed3(name)
                .map(HeadersHook::V2)
                .or_else(|| typed2(name).map(HeadersHook::V1))
        };
        Exports {
            initialize: get("_initialize").and_then(|f| f.typed(store).ok()),
            main: typed2("main"),
            main_void: get("__main_void").and_then(|f| f.typed(store).ok()),
            start: get("_start").and_then(|f| f.typed(store).ok()),
            allocator: ALLOCATORS
                .into_iter()
                .find_map(|name| get(name).and_then(|f| f.typed(store).ok())),
            on_context_create: get("proxy_on_context_create").and_then(|f| f.typed(store).ok()),
            on_vm_start: typed2("proxy_on_vm_start"),
            on_configure: typed2("proxy_on_configure"),
            on_request_headers: headers("proxy_on_request_headers"),
            on_response_headers: headers("proxy_on_response_headers"),
            on_request_body: typed3("proxy_on_request_body"),
            on_response_body: typed3("proxy_on_response_body"),
            on_request_trailers: typed2("proxy_on_request_trailers"),
            on_response_trailers: typed2("proxy_on_response_trailers"),
            on_http_call_response: get("proxy_on_http_call_response")
                .and_then(|f| f.typed(store).ok()),
            on_tick: get("proxy_on_tick").and_then(|f| f.typed(store).ok()),
            on_queue_ready: get("proxy_on_queue_ready").and_then(|f| f.typed(store).ok()),
            on_done: get("proxy_on_done").and_then(|f| f.typed(store).ok()),
            on_log: get("proxy_on_log").and_then(|f| f.typed(store).ok()),
            on_delete: get("proxy_on_delete").and_then(|f| f.typed(store).ok()),
        }
    }
}
