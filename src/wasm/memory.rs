//! Guest linear memory: bounds-checked reads and writes, and handing data
//! to the guest through its own allocator (spec "Memory ownership").
//!
//! Every pointer and length comes from the guest and is untrusted: ranges are
//! computed with checked `u32` arithmetic and checked against the memory's
//! *current* size, and a bad one is `Status::InvalidMemoryAccess`, never a
//! panic or a trap. Host calls also pay fuel here for the bytes they move, so
//! a plugin cannot dodge its CPU budget by looping over expensive host calls.
//! This module knows nothing about headers, HTTP or what the bytes mean.

use std::ops::Range;

use wasmi::{Caller, Memory, TrapCode};

use super::host::{HostError, HostResult, HostState};
use super::types::Status;

/// Fuel charged for every host call, on top of the guest's `call`
/// instruction; about the cost of a host call in nanoseconds on the
/// reference machine, where wasmi burns roughly one unit per nanosecond.
pub(crate) const HOST_CALL_FUEL: u64 = 50;

/// Bytes copied between host and guest per unit of fuel.
const BYTES_PER_FUEL: u64 = 8;

/// The byte range `ptr..ptr+len` if it lies inside a memory of `mem_len`
/// bytes. `ptr + len` is computed in `u32`, so a sum that wraps is rejected
/// like any other out-of-bounds access.
pub(crate) fn range(mem_len: usize, ptr: u32, len: u32) -> Result<Range<usize>, Status> {
    let end = ptr.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    let (start, end) = (ptr as usize, end as usize);
    if end > mem_len {
        return Err(Status::InvalidMemoryAccess);
    }
    Ok(start..end)
}

/// `mem[ptr..ptr+len]`, bounds-checked.
pub(crate) fn slice(mem: &[u8], ptr: u32, len: u32) -> Result<&[u8], Status> {
    Ok(&mem[range(mem.len(), ptr, len)?])
}

/// `&mut mem[ptr..ptr+len]`, bounds-checked.
pub(crate) fn slice_mut(mem: &mut [u8], ptr: u32, len: u32) -> Result<&mut [u8], Status> {
    let r = range(mem.len(), ptr, len)?;
    Ok(&mut mem[r])
}

/// A little-endian `u32` at `ptr`.
pub(crate) fn get_u32(mem: &[u8], ptr: u32) -> Result<u32, Status> {
    let bytes = slice(mem, ptr, 4)?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// The guest's exported memory. Absent only while the wasm start section
/// runs (before the host has looked the export up).
pub(crate) fn memory(caller: &Caller<'_, HostState>) -> Result<Memory, Status> {
    caller.data().memory.ok_or(Status::InvalidMemoryAccess)
}

/// Bounds-checks every `(ptr, len)` against the current memory.
pub(crate) fn check(caller: &Caller<'_, HostState>, ranges: &[(u32, u32)]) -> Result<(), Status> {
    let mem = memory(caller)?;
    let len = mem.data(caller).len();
    for &(ptr, size) in ranges {
        range(len, ptr, size)?;
    }
    Ok(())
}

/// Charges the fuel for one host call that moves `bytes` bytes; running dry
/// traps with `OutOfFuel` exactly as guest code would.
pub(crate) fn charge(caller: &mut Caller<'_, HostState>, bytes: usize) -> HostResult {
    let cost = HOST_CALL_FUEL.saturating_add(bytes as u64 / BYTES_PER_FUEL);
    // Fuel metering is always on (see `plugin::wasmi_config`), so `get_fuel`
    // cannot fail; if it ever did, charging nothing is the harmless outcome.
    let Ok(fuel) = caller.get_fuel() else {
        return Ok(());
    };
    match fuel.checked_sub(cost) {
        Some(left) => caller.set_fuel(left).map_err(HostError::Trap),
        None => {
            let _ = caller.set_fuel(0);
            Err(HostError::Trap(TrapCode::OutOfFuel.into()))
        }
    }
}

/// The range `ptr..ptr+len` of guest memory, bounds-checked against its
/// current size.
pub(crate) fn checked_range(
    caller: &Caller<'_, HostState>,
    ptr: u32,
    len: u32,
) -> Result<Range<usize>, Status> {
    range(memory(caller)?.data(caller).len(), ptr, len)
}

/// Guest memory and the host state at once, so a host call can read guest
/// bytes in place while it edits the state.
pub(crate) fn data_and_state<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> Result<(&'a mut [u8], &'a mut HostState), Status> {
    Ok(memory(caller)?.data_and_store_mut(caller))
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read(caller: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> HostResult<Vec<u8>> {
    let mem = memory(caller)?;
    let bytes = slice(mem.data(&*caller), ptr, len)?.to_vec();
    charge(caller, bytes.len())?;
    Ok(bytes)
}

/// Writes `bytes` at `ptr`.
pub(crate) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    bytes: &[u8],
) -> Result<(), Status> {
    let len = u32::try_from(bytes.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    let mem = memory(caller)?;
    slice_mut(mem.data_mut(&mut *caller), ptr, len)?.copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian `u32` at `ptr`.
pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    value: u32,
) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`.
pub(crate) fn write_u64(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    value: u64,
) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Most guest calls that host functions may have in progress at once. The
/// host calls the guest's allocator from inside a host function; an
/// allocator that asks the host for data again nests one level deeper,
/// each level on the thread's stack (wasmi's own recursion limit does not
/// see them: each is a new entry into the interpreter), and fuel allows
/// tens of thousands of levels, enough to overflow any stack and abort the
/// process. SDK allocators never call the host, so real plugins nest once;
/// 256 levels take about 3 MiB of stack in a debug build, well inside
/// `stack::PLUGIN_STACK`.
pub(crate) const MAX_NESTED_GUEST_CALLS: u32 = 256;

/// Hands `data` to the guest: allocates exactly `data.len()` bytes with the
/// guest's allocator, copies, and writes the pointer and size (`u32` LE) to
/// `ret_ptr_ptr` and `ret_size_ptr`. Empty data writes `(0, 0)` without
/// allocating, as cpp-host's `copyToPointerSize` does.
///
/// The out-pointers are checked before allocating, so a bad one does not
/// leak a guest allocation. Past [`MAX_NESTED_GUEST_CALLS`] nested
/// allocator calls it traps. A trap inside the allocator (including running
/// out of fuel) is returned as `HostError::Trap` and ends the call. An
/// allocator that returns 0 or a block outside memory gives
/// `INTERNAL_FAILURE`: the Go SDKs turn it into an error, the Rust SDK panics
/// (a trap); both are better than handing the plugin empty data it would
/// trust.
pub(crate) fn copy_out(
    caller: &mut Caller<'_, HostState>,
    data: &[u8],
    ret_ptr_ptr: u32,
    ret_size_ptr: u32,
) -> HostResult {
    check(caller, &[(ret_ptr_ptr, 4), (ret_size_ptr, 4)])?;
    let size = u32::try_from(data.len()).map_err(|_| Status::InternalFailure)?;
    if size == 0 {
        write_u32(caller, ret_ptr_ptr, 0)?;
        write_u32(caller, ret_size_ptr, 0)?;
        return Ok(());
    }
    charge(caller, data.len())?;
    let allocator = caller.data().allocator.ok_or(Status::InternalFailure)?;
    let nested = caller.data().nested_guest_calls;
    if nested >= MAX_NESTED_GUEST_CALLS {
        return Err(HostError::Trap(wasmi::Error::new(format!(
            "host calls nested more than {MAX_NESTED_GUEST_CALLS} deep: the allocator asked \
             the host for data that needed the allocator again (MAX_NESTED_GUEST_CALLS)"
        ))));
    }
    caller.data_mut().nested_guest_calls = nested + 1;
    let ptr = allocator.call(&mut *caller, size);
    caller.data_mut().nested_guest_calls = nested;
    let ptr = ptr.map_err(HostError::Trap)?;
    if ptr == 0 {
        return Err(Status::InternalFailure.into());
    }
    // The allocator may have grown memory: `write` re-reads it.
    write(caller, ptr, data).map_err(|_| Status::InternalFailure)?;
    write_u32(caller, ret_ptr_ptr, ptr)?;
    write_u32(caller, ret_size_ptr, size)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMA: Status = Status::InvalidMemoryAccess;

    #[test]
    fn ranges_inside_memory_are_accepted_up_to_the_last_byte() {
        let mem = [0u8; 16];
        assert_eq!(range(mem.len(), 0, 16), Ok(0..16));
        assert_eq!(range(mem.len(), 12, 4), Ok(12..16));
        assert_eq!(
            range(mem.len(), 16, 0),
            Ok(16..16),
            "empty range at the end"
        );
        assert_eq!(slice(&mem, 15, 1).map(<[u8]>::len), Ok(1));
    }

    #[test]
    fn ranges_past_the_end_are_invalid_memory_access() {
        let mem = [0u8; 16];
        assert_eq!(range(mem.len(), 13, 4), Err(IMA));
        assert_eq!(range(mem.len(), 17, 0), Err(IMA));
        assert_eq!(range(mem.len(), 0, 17), Err(IMA));
        assert_eq!(slice(&mem, 16, 1), Err(IMA));
        assert_eq!(get_u32(&mem, 13), Err(IMA));
        let mut mem = mem;
        assert_eq!(slice_mut(&mut mem, 15, 2).map(|s| s.len()), Err(IMA));
    }

    #[test]
    fn ranges_whose_end_overflows_u32_are_invalid_memory_access() {
        // A memory as large as the address space still rejects a wrapped sum.
        let huge = usize::MAX;
        assert_eq!(range(huge, u32::MAX, 1), Err(IMA));
        assert_eq!(range(huge, 1, u32::MAX), Err(IMA));
        assert_eq!(range(huge, 0x8000_0000, 0x8000_0000), Err(IMA));
        assert_eq!(
            range(huge, u32::MAX, 0),
            Ok(u32::MAX as usize..u32::MAX as usize)
        );
    }

    #[test]
    fn get_u32_is_little_endian() {
        let mem = [0xff, 0x01, 0x02, 0x03, 0x04];
        assert_eq!(get_u32(&mem, 1), Ok(0x0403_0201));
    }
}
