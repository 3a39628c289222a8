//! Guest linear-memory access and the host → guest return protocol (brief §3).
//!
//! Rules: every guest pointer is bounds-checked (an out-of-range pointer is a trap with a
//! message, since the Rust SDK cannot represent INVALID_MEMORY_ACCESS); returned values are
//! allocated with `proxy_on_memory_allocate` and written afterwards, re-fetching the memory
//! because the allocator may grow it; empty values are returned as ptr 0 / size 0 without
//! allocating, exactly like Envoy's `copyToPointerSize`.

use wasmtime::{bail, format_err, Caller, Memory, Result};

use crate::state::HostState;

fn memory(caller: &Caller<'_, HostState>) -> Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| format_err!("the module exports no `memory`"))
}

/// Converts an ABI `i32` pointer/size (really `u32` on wasm32).
pub(crate) fn offset(value: i32) -> usize {
    value as u32 as usize
}

fn range(
    call: &str,
    what: &str,
    ptr: i32,
    len: usize,
    memory_size: usize,
) -> Result<std::ops::Range<usize>> {
    let start = offset(ptr);
    match start.checked_add(len) {
        Some(end) if end <= memory_size => Ok(start..end),
        _ => bail!(
            "{call}: {what} [{start:#x}, +{len}) is outside guest memory ({memory_size} bytes)"
        ),
    }
}

/// Copies `len` bytes from the guest. A zero length never touches memory (null is fine).
pub(crate) fn read_bytes(
    caller: &Caller<'_, HostState>,
    call: &str,
    ptr: i32,
    len: i32,
) -> Result<Vec<u8>> {
    let len = offset(len);
    if len == 0 {
        return Ok(Vec::new());
    }
    let memory = memory(caller)?;
    let data = memory.data(caller);
    let range = range(call, "input", ptr, len, data.len())?;
    data.get(range)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format_err!("{call}: input out of range"))
}

/// Reads a name/key; Envoy treats them as bytes, invalid UTF-8 is replaced.
pub(crate) fn read_string(
    caller: &Caller<'_, HostState>,
    call: &str,
    ptr: i32,
    len: i32,
) -> Result<String> {
    Ok(String::from_utf8_lossy(&read_bytes(caller, call, ptr, len)?).into_owned())
}

pub(crate) fn write_bytes(
    caller: &mut Caller<'_, HostState>,
    call: &str,
    ptr: i32,
    bytes: &[u8],
) -> Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let memory = memory(caller)?;
    let data = memory.data_mut(&mut *caller);
    let range = range(call, "output", ptr, bytes.len(), data.len())?;
    data.get_mut(range)
        .ok_or_else(|| format_err!("{call}: output out of range"))?
        .copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    call: &str,
    ptr: i32,
    value: u32,
) -> Result<()> {
    write_bytes(caller, call, ptr, &value.to_le_bytes())
}

pub(crate) fn write_u64(
    caller: &mut Caller<'_, HostState>,
    call: &str,
    ptr: i32,
    value: u64,
) -> Result<()> {
    write_bytes(caller, call, ptr, &value.to_le_bytes())
}

/// Fails unless `[ptr, ptr+len)` is inside guest memory (used to validate return pointers
/// before calling the allocator, so a bad pointer never leaks an allocation).
pub(crate) fn check_writable(
    caller: &Caller<'_, HostState>,
    call: &str,
    ptr: i32,
    len: usize,
) -> Result<()> {
    let memory = memory(caller)?;
    range(call, "return pointer", ptr, len, memory.data_size(caller)).map(|_| ())
}

/// Returns `value` through `(*ret_ptr, *ret_size)`: allocates in the guest, copies, writes
/// the pointer and size (the SDK frees with exactly that size). Empty → `(0, 0)`.
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    call: &str,
    value: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> Result<()> {
    check_writable(caller, call, ret_ptr, 4)?;
    check_writable(caller, call, ret_size, 4)?;
    if value.is_empty() {
        write_u32(caller, call, ret_ptr, 0)?;
        return write_u32(caller, call, ret_size, 0);
    }
    let size = u32::try_from(value.len())
        .ok()
        .and_then(|s| i32::try_from(s).ok())
        .ok_or_else(|| format_err!("{call}: value of {} bytes is too large", value.len()))?;
    let allocator = caller.data().allocator.clone().ok_or_else(|| {
        format_err!("the module exports neither proxy_on_memory_allocate nor malloc")
    })?;
    caller.data_mut().allocating = true;
    caller.data_mut().allocator_calls += 1;
    let allocated = allocator.call(&mut *caller, size);
    caller.data_mut().allocating = false;
    let address = allocated?;
    if address == 0 {
        bail!("{call}: proxy_on_memory_allocate({size}) returned 0 (guest out of memory)");
    }
    // Memory may have grown (or moved) during the allocator call: re-fetch, never reuse.
    write_bytes(caller, call, address, value)?;
    write_u32(caller, call, ret_ptr, address as u32)?;
    write_u32(caller, call, ret_size, size as u32)
}
