//! Imports that are not proxy-wasm proper: the two helpers C++/Emscripten
//! SDK modules import (`env.emscripten_notify_memory_growth`,
//! `env.pthread_equal`), and stand-ins for any import the host does not
//! define at all.
//!
//! An unknown function import must never fail instantiation (Kong's
//! "function not yet implemented" trap on `proxy_define_metric` is the
//! cautionary tale): [`unknown_import`] builds a stub with the import's exact
//! signature that warns once and returns an error status, or traps if the
//! signature has no `i32` result to carry one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasmi::{Caller, FuncType, Val, ValType};

use super::HostFuncs;
use crate::wasm::host::HostState;
use crate::wasm::types::{Errno, Status};

pub(super) fn add_to_linker(funcs: &mut HostFuncs<'_>) {
    funcs.define(
        "env",
        "emscripten_notify_memory_growth",
        |_: Caller<'_, HostState>, _memory_index: u32| {},
    );
    funcs.define(
        "env",
        "pthread_equal",
        |_: Caller<'_, HostState>, a: u32, b: u32| u32::from(a == b),
    );
}

/// What an unknown import's stub does when called.
pub(crate) type StubFn =
    dyn Fn(Caller<'_, HostState>, &[Val], &mut [Val]) -> Result<(), wasmi::Error> + Send + Sync;

/// A stub for `module.name` with signature `ty`. WASI modules get
/// `NOSYS` (52), anything else `UNIMPLEMENTED` (12).
pub(crate) fn unknown_import(plugin: &str, module: &str, name: &str, ty: &FuncType) -> Box<StubFn> {
    let is_wasi = module.starts_with("wasi");
    let code = if is_wasi {
        Errno::NOSYS.0
    } else {
        Status::Unimplemented as u32
    };
    let returns_status = ty.results() == [ValType::I32];
    let what = format!("{module}.{name}");
    let target = format!("wasm::{plugin}");
    let warned = Arc::new(AtomicBool::new(false));
    Box::new(move |_caller, _params, results| {
        if !warned.swap(true, Ordering::Relaxed) {
            log::warn!(target: &target, "plugin called {what}, which tinygate does not implement");
        }
        match results {
            [result] if returns_status => {
                *result = Val::I32(code as i32);
                Ok(())
            }
            _ => Err(wasmi::Error::new(format!(
                "called unimplemented host function {what}"
            ))),
        }
    })
}
