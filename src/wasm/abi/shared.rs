//! Shared data, shared queues and metrics: the `env` side of the
//! process-wide registries in [`crate::wasm::shared`] and
//! [`crate::wasm::metrics`].
//!
//! Each function checks and copies its guest memory, then calls the
//! registry (metrics through the VM's own `VmMetrics`, which takes the
//! registry's lock only to define a metric or on an id's first use);
//! statuses are the ones the Rust SDK accepts for each call (see
//! the spec table). Registering a queue records the effective context's
//! root as its owner, to be told about enqueues through the VM's
//! `QueueNotifier` (`proxy_on_queue_ready`). `proxy_resolve_shared_queue`
//! ignores `vm_id`: one namespace for the whole process (see `shared.rs`).

use wasmi::Caller;

use crate::wasm::host::{HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::types::{MetricKind, Status};
use crate::wasm::{metrics, shared};

/// Longest shared-data key or queue name stored. Setting a longer key is a
/// CAS mismatch and registering a longer queue name yields
/// `INVALID_QUEUE_ID`: the Rust SDK accepts no other failure there. Longer
/// names are never found.
const MAX_NAME: u32 = 64 * 1024;

pub(super) fn proxy_set_shared_data(
    caller: &mut Caller<'_, HostState>,
    key_ptr: u32,
    key_size: u32,
    value_ptr: u32,
    value_size: u32,
    cas: u32,
) -> HostResult {
    memory::check(caller, &[(key_ptr, key_size), (value_ptr, value_size)])?;
    if key_size > MAX_NAME {
        return Err(Status::CasMismatch.into());
    }
    let key = memory::read(caller, key_ptr, key_size)?;
    let value = memory::read(caller, value_ptr, value_size)?;
    caller.data_mut().shared_writes += 1;
    match shared::set_shared_data(&key, &value, cas) {
        Ok(()) => Ok(()),
        Err(shared::SetError::CasMismatch) => Err(Status::CasMismatch.into()),
        Err(shared::SetError::Full) => {
            // CAS_MISMATCH is the only failure the Rust SDK accepts here.
            let state = caller.data();
            log::warn!(target: state.log_target(), "[{}] proxy_set_shared_data: shared data is full", state.effective_context);
            Err(Status::CasMismatch.into())
        }
    }
}

pub(super) fn proxy_get_shared_data(
    caller: &mut Caller<'_, HostState>,
    key_ptr: u32,
    key_size: u32,
    ret_ptr_ptr: u32,
    ret_size_ptr: u32,
    ret_cas_ptr: u32,
) -> HostResult {
    memory::check(
        caller,
        &[
            (key_ptr, key_size),
            (ret_ptr_ptr, 4),
            (ret_size_ptr, 4),
            (ret_cas_ptr, 4),
        ],
    )?;
    let key = memory::read(caller, key_ptr, key_size.min(MAX_NAME + 1))?;
    let (value, cas) = shared::get_shared_data(&key)?;
    memory::copy_out(caller, &value, ret_ptr_ptr, ret_size_ptr)?;
    Ok(memory::write_u32(caller, ret_cas_ptr, cas)?)
}

pub(super) fn proxy_register_shared_queue(
    caller: &mut Caller<'_, HostState>,
    name_ptr: u32,
    name_size: u32,
    ret_id_ptr: u32,
) -> HostResult {
    memory::check(caller, &[(name_ptr, name_size), (ret_id_ptr, 4)])?;
    let id = if name_size > MAX_NAME {
        shared::INVALID_QUEUE_ID
    } else {
        let name = memory::read(caller, name_ptr, name_size)?;
        shared::register_queue(&name)
    };
    caller.data_mut().shared_writes += 1;
    let state = caller.data();
    if id == shared::INVALID_QUEUE_ID {
        log::warn!(target: state.log_target(), "[{}] proxy_register_shared_queue: name too long or too many queues", state.effective_context);
    } else if let Some(root) = state.root_of(state.effective_context) {
        shared::set_queue_owner(id, state.vm_uid, root);
    }
    Ok(memory::write_u32(caller, ret_id_ptr, id)?)
}

pub(super) fn proxy_resolve_shared_queue(
    caller: &mut Caller<'_, HostState>,
    vm_id_ptr: u32,
    vm_id_size: u32,
    name_ptr: u32,
    name_size: u32,
    ret_id_ptr: u32,
) -> HostResult {
    memory::check(
        caller,
        &[
            (vm_id_ptr, vm_id_size),
            (name_ptr, name_size),
            (ret_id_ptr, 4),
        ],
    )?;
    let name = memory::read(caller, name_ptr, name_size.min(MAX_NAME + 1))?;
    let id = shared::resolve_queue(&name)?;
    Ok(memory::write_u32(caller, ret_id_ptr, id)?)
}

pub(super) fn proxy_enqueue_shared_queue(
    caller: &mut Caller<'_, HostState>,
    queue_id: u32,
    value_ptr: u32,
    value_size: u32,
) -> HostResult {
    memory::check(caller, &[(value_ptr, value_size)])?;
    let value = memory::read(caller, value_ptr, value_size)?;
    caller.data_mut().shared_writes += 1;
    if !shared::enqueue(queue_id, &value)? {
        let state = caller.data();
        log::warn!(target: state.log_target(), "[{}] shared queue {queue_id} is full; item dropped", state.effective_context);
    }
    Ok(())
}

pub(super) fn proxy_dequeue_shared_queue(
    caller: &mut Caller<'_, HostState>,
    queue_id: u32,
    ret_ptr_ptr: u32,
    ret_size_ptr: u32,
) -> HostResult {
    // Check the out-pointers first so a bad one does not lose an item.
    memory::check(caller, &[(ret_ptr_ptr, 4), (ret_size_ptr, 4)])?;
    let value = shared::dequeue(queue_id)?;
    memory::copy_out(caller, &value, ret_ptr_ptr, ret_size_ptr)
}

pub(super) fn proxy_define_metric(
    caller: &mut Caller<'_, HostState>,
    metric_type: u32,
    name_ptr: u32,
    name_size: u32,
    ret_id_ptr: u32,
) -> HostResult {
    let kind = MetricKind::from_raw(metric_type)?;
    memory::check(caller, &[(name_ptr, name_size), (ret_id_ptr, 4)])?;
    let name = memory::read(
        caller,
        name_ptr,
        name_size.min(metrics::MAX_METRIC_NAME as u32 + 1),
    )?;
    // Metrics are dropped once no plugin served defines them (reloads).
    let state = caller.data_mut();
    let name = String::from_utf8_lossy(&name);
    let id = state.metrics.define(kind, &name, &state.plugin.spec.name);
    if id == metrics::INVALID_METRIC_ID {
        let state = caller.data();
        log::warn!(target: state.log_target(), "[{}] proxy_define_metric: name too long or too many metrics", state.effective_context);
    }
    Ok(memory::write_u32(caller, ret_id_ptr, id)?)
}

pub(super) fn proxy_record_metric(
    caller: &mut Caller<'_, HostState>,
    metric_id: u32,
    value: u64,
) -> HostResult {
    Ok(caller.data_mut().metrics.record(metric_id, value)?)
}

pub(super) fn proxy_increment_metric(
    caller: &mut Caller<'_, HostState>,
    metric_id: u32,
    delta: i64,
) -> HostResult {
    Ok(caller.data_mut().metrics.increment(metric_id, delta)?)
}

pub(super) fn proxy_get_metric(
    caller: &mut Caller<'_, HostState>,
    metric_id: u32,
    ret_value_ptr: u32,
) -> HostResult {
    memory::check(caller, &[(ret_value_ptr, 8)])?;
    let value = caller.data_mut().metrics.get(metric_id)?;
    Ok(memory::write_u64(caller, ret_value_ptr, value)?)
}
