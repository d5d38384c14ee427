//! The `env` host functions of proxy-wasm ABI 0.1.0, 0.2.0 and 0.2.1 (the
//! union: extra definitions are harmless), registered in one table in spec
//! order by [`add_to_linker`].
//!
//! Shared conventions: an unknown enum value is BAD_ARGUMENT; then every
//! pointer argument is bounds-checked (INVALID_MEMORY_ACCESS) before any
//! other outcome, so a bad pointer is reported the same way whatever the
//! state of maps and buffers.
//!
//! This file is the one boundary where a host function's `HostResult`
//! becomes the `i32` status the guest sees ([`status`]), and where every
//! host call pays its base fuel. The other files hold one spec area each;
//! each function is named after its ABI symbol and takes the `Caller` plus
//! the raw `u32`/`u64` arguments. Nothing here knows about sockets, HTTP
//! framing, routing or config files.

mod buffers;
pub(crate) mod calls;
mod context;
mod headers;
mod log;
mod properties;
mod shared;
mod stream;
pub(crate) mod stubs;

use std::collections::HashMap;

use wasmi::{Caller, Func, FuncType, IntoFunc, Linker, Store, WasmTy};

use super::host::{HostError, HostResult, HostState};
use super::memory;

pub(crate) use self::log::unix_nanos;

/// `(module, name)` → the exact signature the host defines, so `Plugin::load`
/// can tell which imports need a stub.
pub(crate) type HostTypes = HashMap<(String, String), FuncType>;

/// Collects host function definitions into a `Linker` and records their
/// signatures (read back from a throwaway `Func` in a probe store, since a
/// `Linker` cannot be asked for them).
pub(crate) struct HostFuncs<'a> {
    pub(crate) linker: &'a mut Linker<HostState>,
    pub(crate) probe: &'a mut Store<HostState>,
    pub(crate) types: &'a mut HostTypes,
}

impl HostFuncs<'_> {
    /// Defines `module.name` as `f`.
    ///
    /// # Panics
    ///
    /// If the name is defined twice: the tables below are static.
    pub(crate) fn define<Params, Results>(
        &mut self,
        module: &str,
        name: &str,
        f: impl IntoFunc<HostState, Params, Results> + Copy,
    ) {
        let ty = Func::wrap(&mut *self.probe, f).ty(&*self.probe);
        self.types.insert((module.to_owned(), name.to_owned()), ty);
        self.linker
            .func_wrap(module, name, f)
            .expect("each host function is defined once");
    }
}

/// Converts a host function's result into what the guest sees: `OK` (0) or
/// the error status, or a trap.
pub(crate) fn status(result: HostResult) -> Result<u32, wasmi::Error> {
    match result {
        Ok(()) => Ok(0),
        Err(HostError::Status(status)) => Ok(status as u32),
        Err(HostError::Trap(trap)) => Err(trap),
    }
}

/// What a host function body returns, and how that reaches the guest.
pub(crate) trait Outcome: Sized + 'static {
    /// Charges the call's base fuel, runs `body`, and converts its result
    /// into the guest's `i32` status (or a trap).
    fn run(
        caller: &mut Caller<'_, HostState>,
        body: impl FnOnce(&mut Caller<'_, HostState>) -> Self,
    ) -> Result<u32, wasmi::Error>;
}

/// `env` functions: proxy-wasm statuses.
impl Outcome for HostResult {
    fn run(
        caller: &mut Caller<'_, HostState>,
        body: impl FnOnce(&mut Caller<'_, HostState>) -> HostResult,
    ) -> Result<u32, wasmi::Error> {
        status(memory::charge(caller, 0).and_then(|()| body(caller)))
    }
}

/// A host function body as a plain `fn` pointer, defined through one
/// wasmi closure per signature rather than one per function: the closures
/// are generic, so with one per function each of the ~120 definitions got
/// its own trampoline and registration code (130 KB of the binary). A call
/// costs one indirect call more.
pub(crate) trait HostFn<Params> {
    /// Defines `module.name` as this body behind [`Outcome::run`].
    fn define_in(self, funcs: &mut HostFuncs<'_>, module: &str, name: &str);
}

macro_rules! host_fn_arity {
    ($($arg:ident),*) => {
        impl<R: Outcome, $($arg: WasmTy + 'static),*> HostFn<($($arg,)*)>
            for fn(&mut Caller<'_, HostState>, $($arg),*) -> R
        {
            #[allow(non_snake_case)]
            fn define_in(self, funcs: &mut HostFuncs<'_>, module: &str, name: &str) {
                funcs.define(
                    module,
                    name,
                    move |mut caller: Caller<'_, HostState>, $($arg: $arg),*| {
                        R::run(&mut caller, |caller| self(caller, $($arg),*))
                    },
                );
            }
        }
    };
}
host_fn_arity!();
host_fn_arity!(A);
host_fn_arity!(A, B);
host_fn_arity!(A, B, C);
host_fn_arity!(A, B, C, D);
host_fn_arity!(A, B, C, D, E);
host_fn_arity!(A, B, C, D, E, F);
host_fn_arity!(A, B, C, D, E, F, G);
host_fn_arity!(A, B, C, D, E, F, G, H);
host_fn_arity!(A, B, C, D, E, F, G, H, I);
host_fn_arity!(A, B, C, D, E, F, G, H, I, J);
host_fn_arity!(A, B, C, D, E, F, G, H, I, J, K);
host_fn_arity!(A, B, C, D, E, F, G, H, I, J, K, L);

/// `env_fn!(funcs, area::proxy_name(arg: ty, ...))` defines `env.proxy_name`
/// as `area::proxy_name(&mut caller, arg, ...)` behind [`Outcome::run`]
/// (the argument names document the table; only the types are used).
macro_rules! env_fn {
    ($funcs:expr, $area:ident :: $name:ident ( $($arg:ident : $ty:ty),* $(,)? )) => {
        HostFn::define_in(
            $area::$name as fn(&mut Caller<'_, HostState>, $($ty),*) -> HostResult,
            $funcs,
            "env",
            stringify!($name),
        )
    };
}

/// Defines every `env.*` host function.
pub(crate) fn add_to_linker(funcs: &mut HostFuncs<'_>) {
    // Context lifecycle.
    env_fn!(funcs, context::proxy_done());
    env_fn!(funcs, context::proxy_set_effective_context(context_id: u32));
    // Logging and clocks.
    env_fn!(funcs, log::proxy_log(level: u32, msg_ptr: u32, msg_size: u32));
    env_fn!(funcs, log::proxy_get_log_level(ret_level_ptr: u32));
    env_fn!(funcs, log::proxy_get_current_time_nanoseconds(ret_time_ptr: u32));
    // Timers.
    env_fn!(funcs, context::proxy_set_tick_period_milliseconds(period_ms: u32));
    // Buffers (and 0.1.0's configuration getter).
    env_fn!(funcs, buffers::proxy_get_buffer_bytes(buffer_type: u32, start: u32, max_size: u32, ret_ptr_ptr: u32, ret_size_ptr: u32));
    env_fn!(funcs, buffers::proxy_set_buffer_bytes(buffer_type: u32, start: u32, size: u32, value_ptr: u32, value_size: u32));
    env_fn!(funcs, buffers::proxy_get_buffer_status(buffer_type: u32, ret_size_ptr: u32, ret_flags_ptr: u32));
    env_fn!(funcs, buffers::proxy_get_configuration(ret_ptr_ptr: u32, ret_size_ptr: u32));
    // HTTP fields.
    env_fn!(funcs, headers::proxy_get_header_map_size(map_type: u32, ret_size_ptr: u32));
    env_fn!(funcs, headers::proxy_get_header_map_pairs(map_type: u32, ret_ptr_ptr: u32, ret_size_ptr: u32));
    env_fn!(funcs, headers::proxy_set_header_map_pairs(map_type: u32, pairs_ptr: u32, pairs_size: u32));
    env_fn!(funcs, headers::proxy_get_header_map_value(map_type: u32, key_ptr: u32, key_size: u32, ret_ptr_ptr: u32, ret_size_ptr: u32));
    env_fn!(funcs, headers::proxy_add_header_map_value(map_type: u32, key_ptr: u32, key_size: u32, value_ptr: u32, value_size: u32));
    env_fn!(funcs, headers::proxy_replace_header_map_value(map_type: u32, key_ptr: u32, key_size: u32, value_ptr: u32, value_size: u32));
    env_fn!(funcs, headers::proxy_remove_header_map_value(map_type: u32, key_ptr: u32, key_size: u32));
    // Common stream operations (0.2.0+) and their 0.1.0 ancestors.
    env_fn!(funcs, stream::proxy_continue_stream(stream_type: u32));
    env_fn!(funcs, stream::proxy_close_stream(stream_type: u32));
    env_fn!(funcs, stream::proxy_get_status(ret_code_ptr: u32, ret_msg_ptr_ptr: u32, ret_msg_size_ptr: u32));
    env_fn!(funcs, stream::proxy_continue_request());
    env_fn!(funcs, stream::proxy_continue_response());
    env_fn!(funcs, stream::proxy_clear_route_cache());
    // HTTP.
    env_fn!(funcs, stream::proxy_send_local_response(
        status_code: u32, details_ptr: u32, details_size: u32, body_ptr: u32, body_size: u32,
        headers_ptr: u32, headers_size: u32, grpc_status: u32,
    ));
    // HTTP and gRPC calls, foreign functions.
    env_fn!(funcs, calls::proxy_http_call(
        upstream_ptr: u32, upstream_size: u32, headers_ptr: u32, headers_size: u32, body_ptr: u32,
        body_size: u32, trailers_ptr: u32, trailers_size: u32, timeout_ms: u32, ret_call_id_ptr: u32,
    ));
    env_fn!(funcs, calls::proxy_grpc_call(
        upstream_ptr: u32, upstream_size: u32, service_ptr: u32, service_size: u32, method_ptr: u32,
        method_size: u32, metadata_ptr: u32, metadata_size: u32, msg_ptr: u32, msg_size: u32,
        timeout_ms: u32, ret_call_id_ptr: u32,
    ));
    env_fn!(funcs, calls::proxy_grpc_stream(
        upstream_ptr: u32, upstream_size: u32, service_ptr: u32, service_size: u32, method_ptr: u32,
        method_size: u32, metadata_ptr: u32, metadata_size: u32, ret_stream_id_ptr: u32,
    ));
    env_fn!(funcs, calls::proxy_grpc_send(stream_id: u32, msg_ptr: u32, msg_size: u32, end_stream: u32));
    env_fn!(funcs, calls::proxy_grpc_cancel(call_or_stream_id: u32));
    env_fn!(funcs, calls::proxy_grpc_close(call_or_stream_id: u32));
    env_fn!(funcs, calls::proxy_call_foreign_function(
        name_ptr: u32, name_size: u32, args_ptr: u32, args_size: u32, ret_ptr_ptr: u32, ret_size_ptr: u32,
    ));
    // Shared key-value store.
    env_fn!(funcs, shared::proxy_set_shared_data(key_ptr: u32, key_size: u32, value_ptr: u32, value_size: u32, cas: u32));
    env_fn!(funcs, shared::proxy_get_shared_data(key_ptr: u32, key_size: u32, ret_ptr_ptr: u32, ret_size_ptr: u32, ret_cas_ptr: u32));
    // Shared queues.
    env_fn!(funcs, shared::proxy_register_shared_queue(name_ptr: u32, name_size: u32, ret_id_ptr: u32));
    env_fn!(funcs, shared::proxy_resolve_shared_queue(vm_id_ptr: u32, vm_id_size: u32, name_ptr: u32, name_size: u32, ret_id_ptr: u32));
    env_fn!(funcs, shared::proxy_enqueue_shared_queue(queue_id: u32, value_ptr: u32, value_size: u32));
    env_fn!(funcs, shared::proxy_dequeue_shared_queue(queue_id: u32, ret_ptr_ptr: u32, ret_size_ptr: u32));
    // Metrics.
    env_fn!(funcs, shared::proxy_define_metric(metric_type: u32, name_ptr: u32, name_size: u32, ret_id_ptr: u32));
    env_fn!(funcs, shared::proxy_record_metric(metric_id: u32, value: u64));
    env_fn!(funcs, shared::proxy_increment_metric(metric_id: u32, delta: i64));
    env_fn!(funcs, shared::proxy_get_metric(metric_id: u32, ret_value_ptr: u32));
    // Properties.
    env_fn!(funcs, properties::proxy_get_property(path_ptr: u32, path_size: u32, ret_ptr_ptr: u32, ret_size_ptr: u32));
    env_fn!(funcs, properties::proxy_set_property(path_ptr: u32, path_size: u32, value_ptr: u32, value_size: u32));
    // Emscripten / C++ SDK helpers.
    stubs::add_to_linker(funcs);
}
