//! The stack of every thread that runs plugin code ([`PLUGIN_STACK`]), and
//! running code on such a thread.
//!
//! wasmi keeps wasm frames on a stack of its own (at most 1,000 nested
//! calls, 1 MB of values: a deeper recursion traps with "call stack
//! exhausted" whatever the thread's stack). Everything else runs on the
//! thread's stack: wasmi's entry into a call, the host functions, and the
//! guest calls a host function makes (the allocator, when the host hands the
//! plugin data), which nest up to `memory::MAX_NESTED_GUEST_CALLS` deep.
//! Measured with `fixtures/deep_configure.wasm`, a nesting level takes
//! about 1.3 KiB of stack in a release build and 12 KiB in a debug build,
//! so the deepest allowed nesting needs about 0.3 MiB and 3 MiB: more than
//! the 2 MiB Rust gives a spawned thread in a debug build, and the main
//! thread's stack is whatever `ulimit -s` says. So every thread that runs
//! plugin code is made with this stack: workers, the etcd watcher, and the
//! thread `main` runs everything else on (start-up, `-t`, reloads, `tinygate
//! test`, `bench-plugin`). Only the pages a thread touches count towards
//! memory use.
//!
//! Knows nothing of what the threads do.

use std::io;
use std::thread::{Builder, JoinHandle};

/// Stack size of every thread that runs plugin code: five times what the
/// deepest nesting the host allows needs in a debug build.
pub const PLUGIN_STACK: usize = 16 << 20;

/// Spawns the thread `name` with [`PLUGIN_STACK`].
///
/// # Errors
/// When the thread cannot be created.
pub fn spawn<F, T>(name: String, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().name(name).stack_size(PLUGIN_STACK).spawn(f)
}

/// Runs `f` on a new thread with [`PLUGIN_STACK`] (named after this one)
/// and returns what it returns; a panic in `f` is resumed here.
///
/// # Errors
/// When the thread cannot be created.
pub fn run_on_plugin_stack<F, T>(f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let name = std::thread::current().name().unwrap_or("main").to_owned();
    std::thread::scope(|scope| {
        let handle = Builder::new()
            .name(name)
            .stack_size(PLUGIN_STACK)
            .spawn_scoped(scope, f)?;
        Ok(handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_runs_on_a_thread_of_its_own_and_panics_come_back() {
        let here = std::thread::current().id();
        let there = run_on_plugin_stack(|| std::thread::current().id()).unwrap();
        assert_ne!(here, there);
        let caught = std::panic::catch_unwind(|| run_on_plugin_stack(|| panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(spawn("t".into(), || 7).unwrap().join().unwrap(), 7);
    }
}
