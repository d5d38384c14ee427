//! Root contexts across configuration reloads: one per key, retired when
//! the key leaves the configuration, deleted (`proxy_on_done`,
//! `proxy_on_log`, `proxy_on_delete`) once no HTTP context of theirs is
//! alive, with their tick periods and queue registrations.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::calls::produce_on_another_thread;
use super::{exchange, slots, start, Wat};
use crate::wasm::{FaultKind, PluginVm};

/// Registers the queue its configuration names and sets a 10 ms tick in
/// `proxy_on_configure`; logs `proxy_on_done` (6), `proxy_on_log` (7) and
/// `proxy_on_delete` (8) of root contexts as `kind << 16 | id` from slot 0
/// on (slot 15 holds the next free slot).
const ROOTS: &str = r#"
    (func $log (param $kind i32) (param $id i32)
      (local $at i32)
      (local.set $at (i32.add (i32.const 28672) (i32.shl (i32.load (i32.const 28732)) (i32.const 2))))
      (i32.store (local.get $at) (i32.or (i32.shl (local.get $kind) (i32.const 16)) (local.get $id)))
      (i32.store (i32.const 28732) (i32.add (i32.load (i32.const 28732)) (i32.const 1))))
    (global $roots (mut i32) (i32.const 0))
    (func $is_root (param $id i32) (result i32)
      (i32.load8_u (i32.add (i32.const 30000) (i32.and (local.get $id) (i32.const 255)))))
    (func (export "proxy_on_context_create") (param $id i32) (param $parent i32)
      (if (i32.eqz (local.get $parent))
        (then (i32.store8 (i32.add (i32.const 30000) (i32.and (local.get $id) (i32.const 255))) (i32.const 1)))))
    (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
      (drop (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
      (drop (call $proxy_register_shared_queue (i32.load (i32.const 16)) (i32.load (i32.const 20)) (i32.const 24)))
      (drop (call $proxy_set_tick_period_milliseconds (i32.const 10)))
      (i32.const 1))
    (func (export "proxy_on_done") (param $id i32) (result i32)
      (if (call $is_root (local.get $id)) (then (call $log (i32.const 6) (local.get $id))))
      (i32.const 1))
    (func (export "proxy_on_log") (param $id i32)
      (if (call $is_root (local.get $id)) (then (call $log (i32.const 7) (local.get $id)))))
    (func (export "proxy_on_delete") (param $id i32)
      (if (call $is_root (local.get $id)) (then (call $log (i32.const 8) (local.get $id)))))
    (func (export "proxy_on_queue_ready") (param i32 i32))
    "#;

/// A VM of [`ROOTS`] whose queue notifications go to the returned channel.
fn roots_vm() -> (PluginVm, mpsc::Receiver<(u32, u32)>) {
    let mut vm = start(&Wat::new().module(ROOTS));
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    vm.set_queue_notifier(Arc::new(move |root, queue| {
        let _ = tx.lock().unwrap().send((root, queue));
    }));
    (vm, rx)
}

/// The root-context events [`ROOTS`] logged, as `(callback, id)`.
fn events(vm: &PluginVm) -> Vec<(u32, u32)> {
    let n = slots(vm, 16)[15];
    slots(vm, n)
        .into_iter()
        .map(|e| (e >> 16, e & 0xFFFF))
        .collect()
}

#[test]
fn a_retired_root_is_deleted_with_its_tick_and_queue_registration() {
    let queue = "roots-test-retired";
    let (mut vm, rx) = roots_vm();
    let kept = vm.configure(1, queue.as_bytes()).unwrap();
    let gone = vm.configure(2, queue.as_bytes()).unwrap();
    assert_eq!(vm.root_count(), 2);
    assert_eq!(vm.roots_to_retire(|key| key == 1), [gone]);
    vm.retire_root(gone).unwrap();
    assert_eq!(events(&vm), [(6, gone), (7, gone), (8, gone)]);
    assert_eq!(vm.root_count(), 1);
    assert_eq!(vm.tick_periods(), [(kept, Duration::from_millis(10))]);
    assert_eq!(vm.root_key_of(gone), None);
    assert!(vm.roots_to_retire(|key| key == 1).is_empty());
    // The retired root registered the queue last: an enqueue now notifies
    // the root that registered it before (the notifier runs inside the
    // producer's call).
    produce_on_another_thread(queue);
    assert_eq!(rx.try_recv().map(|n| n.0), Ok(kept));
    assert_eq!(rx.try_recv(), Err(mpsc::TryRecvError::Empty));
    // The retired key comes back as a new root context.
    let again = vm.configure(2, queue.as_bytes()).unwrap();
    assert_ne!(again, gone);
    assert_eq!(
        vm.on_tick(gone).unwrap_err().kind,
        FaultKind::UnknownContext
    );
    assert!(!vm.is_broken());
}

#[test]
fn a_retired_root_waits_for_its_last_request() {
    let (mut vm, _rx) = roots_vm();
    let old = vm.configure(1, b"roots-test-in-flight").unwrap();
    let first = vm.create_http_context(old).unwrap();
    let second = vm.create_http_context(old).unwrap();
    vm.retire_root(old).unwrap();
    assert!(events(&vm).is_empty(), "requests still use it");
    assert_eq!(vm.root_count(), 1);
    // New requests of the same key get a new root context.
    let new = vm.configure(1, b"roots-test-in-flight").unwrap();
    assert_ne!(new, old);
    assert_eq!(vm.root_count(), 2);
    let mut ex = exchange();
    assert_eq!(vm.finish(first, &mut ex), Ok(true));
    assert!(events(&vm).is_empty());
    assert_eq!(vm.finish(second, &mut ex), Ok(true));
    assert_eq!(events(&vm), [(6, old), (7, old), (8, old)]);
    assert_eq!(vm.root_count(), 1);
    assert_eq!(vm.tick_periods(), [(new, Duration::from_millis(10))]);
}
