//! Shared data (`proxy_get/set_shared_data`) and shared queues.

use wasmtime::{Caller, Result};

use super::memory::{check_writable, read_bytes, read_string, return_bytes, write_u32};
use super::restrict;
use crate::error::Status;
use crate::state::HostState;

pub(crate) fn proxy_get_shared_data(
    mut caller: Caller<'_, HostState>,
    key_ptr: i32,
    key_len: i32,
    ret_ptr: i32,
    ret_size: i32,
    ret_cas: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_get_shared_data";
    restrict(&caller, CALL)?;
    let key = read_string(&caller, CALL, key_ptr, key_len)?;
    if hidden(&mut caller, &key) {
        return Ok(Status::NotFound.code());
    }
    let found = caller.data().shared.with(|store| store.get(&key));
    match found {
        Err(status) => Ok(status.code()),
        Ok((value, cas)) => {
            check_writable(&caller, CALL, ret_cas, 4)?;
            return_bytes(&mut caller, CALL, &value, ret_ptr, ret_size)?;
            write_u32(&mut caller, CALL, ret_cas, cas)?;
            Ok(Status::Ok.code())
        }
    }
}

pub(crate) fn proxy_set_shared_data(
    caller: Caller<'_, HostState>,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
    cas: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_set_shared_data";
    restrict(&caller, CALL)?;
    let key = read_string(&caller, CALL, key_ptr, key_len)?;
    let value = read_bytes(&caller, CALL, value_ptr, value_len)?;
    let result = caller
        .data()
        .shared
        .with(|store| store.set(&key, &value, cas as u32));
    Ok(result.err().unwrap_or(Status::Ok).code())
}

pub(crate) fn proxy_register_shared_queue(
    mut caller: Caller<'_, HostState>,
    name_ptr: i32,
    name_len: i32,
    ret_id: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_register_shared_queue";
    restrict(&caller, CALL)?;
    let name = read_string(&caller, CALL, name_ptr, name_len)?;
    check_writable(&caller, CALL, ret_id, 4)?;
    let state = caller.data();
    let id = state
        .shared
        .with(|store| store.register_queue(&state.vm_id, &name, state.host_uid));
    write_u32(&mut caller, CALL, ret_id, id)?;
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_resolve_shared_queue(
    mut caller: Caller<'_, HostState>,
    vm_id_ptr: i32,
    vm_id_len: i32,
    name_ptr: i32,
    name_len: i32,
    ret_id: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_resolve_shared_queue";
    restrict(&caller, CALL)?;
    let vm_id = read_string(&caller, CALL, vm_id_ptr, vm_id_len)?;
    let name = read_string(&caller, CALL, name_ptr, name_len)?;
    match caller
        .data()
        .shared
        .with(|store| store.resolve_queue(&vm_id, &name))
    {
        None => Ok(Status::NotFound.code()),
        Some(id) => {
            write_u32(&mut caller, CALL, ret_id, id)?;
            Ok(Status::Ok.code())
        }
    }
}

pub(crate) fn proxy_enqueue_shared_queue(
    caller: Caller<'_, HostState>,
    id: i32,
    value_ptr: i32,
    value_len: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_enqueue_shared_queue";
    restrict(&caller, CALL)?;
    let value = read_bytes(&caller, CALL, value_ptr, value_len)?;
    let result = caller
        .data()
        .shared
        .with(|store| store.enqueue(id as u32, &value));
    Ok(result.err().unwrap_or(Status::Ok).code())
}

pub(crate) fn proxy_dequeue_shared_queue(
    mut caller: Caller<'_, HostState>,
    id: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_dequeue_shared_queue";
    restrict(&caller, CALL)?;
    check_writable(&caller, CALL, ret_ptr, 4)?;
    check_writable(&caller, CALL, ret_size, 4)?;
    match caller.data().shared.with(|store| store.dequeue(id as u32)) {
        Err(status) => Ok(status.code()),
        Ok(value) => {
            return_bytes(&mut caller, CALL, &value, ret_ptr, ret_size)?;
            Ok(Status::Ok.code())
        }
    }
}

/// Whether a test hid `key` from this read ([`crate::Host::hide_shared_data`]), consuming one
/// of the hidden reads.
fn hidden(caller: &mut Caller<'_, HostState>, key: &str) -> bool {
    let hidden = &mut caller.data_mut().hidden_shared_data;
    match hidden
        .iter_mut()
        .find(|(prefix, left)| key.starts_with(prefix.as_str()) && *left > 0)
    {
        Some((_, left)) => {
            *left -= 1;
            true
        }
        None => false,
    }
}
