//! Header maps (`proxy_*_header_map_*`) and buffers (`proxy_get/set_buffer_bytes`), with
//! Envoy's availability rules: a stream's header map is reachable only while it is
//! "current" (inside its callback, or while the stream is stopped there), read-only in the
//! access-log phase; callout maps only inside `proxy_on_http_call_response`.

use wasmtime::{Caller, Result};

use super::memory::{offset, read_bytes, read_string, return_bytes};
use super::{injected_failure, restrict};
use crate::error::Status;
use crate::header_map::{deserialize_pairs, HeaderMap};
use crate::state::{Callback, HostState};

#[derive(Debug, Clone, Copy)]
enum MapLocation {
    Stream {
        id: u32,
        request: bool,
        trailers: bool,
    },
    CalloutHeaders,
    CalloutTrailers,
}

/// `Err(BadArgument)` for an unknown map type; `Ok(None)` when the map is not available
/// now; otherwise the location and whether it may be modified.
fn locate_map(state: &HostState, map_type: i32) -> Result<Option<(MapLocation, bool)>, Status> {
    match map_type {
        0..=3 => {
            let request = map_type <= 1;
            let trailers = map_type == 1 || map_type == 3;
            let Some((id, stream)) = state.target_stream() else {
                return Ok(None);
            };
            let location = MapLocation::Stream {
                id,
                request,
                trailers,
            };
            if state.callback == Callback::Log {
                return Ok(Some((location, false)));
            }
            let direction = if request {
                &stream.request
            } else {
                &stream.response
            };
            let current = if trailers {
                // Trailers can also be created from the last body callback (addDecodedTrailers).
                direction.trailers_current || (direction.body_current && direction.ended)
            } else {
                direction.headers_current
            };
            Ok(current.then_some((location, true)))
        }
        4 | 5 => Ok(None),
        6 => Ok(state
            .callout_response
            .is_some()
            .then_some((MapLocation::CalloutHeaders, false))),
        7 => Ok(state
            .callout_response
            .is_some()
            .then_some((MapLocation::CalloutTrailers, false))),
        _ => Err(Status::BadArgument),
    }
}

fn map_ref(state: &HostState, location: MapLocation) -> Option<&HeaderMap> {
    match location {
        MapLocation::Stream {
            id,
            request,
            trailers,
        } => {
            let stream = state.streams.get(&id)?;
            let direction = if request {
                &stream.request
            } else {
                &stream.response
            };
            Some(if trailers {
                &direction.trailers
            } else {
                &direction.headers
            })
        }
        MapLocation::CalloutHeaders => state.callout_response.as_ref().map(|r| &r.headers),
        MapLocation::CalloutTrailers => state.callout_response.as_ref().map(|r| &r.trailers),
    }
}

/// A writable map, or BAD_ARGUMENT (unknown type, unavailable, or read-only now).
fn writable_map(state: &mut HostState, map_type: i32) -> Result<&mut HeaderMap, Status> {
    let Some((
        MapLocation::Stream {
            id,
            request,
            trailers,
        },
        true,
    )) = locate_map(state, map_type)?
    else {
        return Err(Status::BadArgument);
    };
    let stream = state.streams.get_mut(&id).ok_or(Status::BadArgument)?;
    let direction = stream.direction_mut(request);
    Ok(if trailers {
        &mut direction.trailers
    } else {
        &mut direction.headers
    })
}

pub(crate) fn proxy_get_header_map_pairs(
    mut caller: Caller<'_, HostState>,
    map_type: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_get_header_map_pairs";
    restrict(&caller, CALL)?;
    if let Some(status) = injected_failure(&mut caller, CALL) {
        return Ok(status);
    }
    let serialized = match locate_map(caller.data(), map_type) {
        Err(status) => return Ok(status.code()),
        // Envoy: an unavailable map reads as an empty map (OK), not as an error.
        Ok(None) => Vec::new(),
        Ok(Some((location, _))) => map_ref(caller.data(), location)
            .map(HeaderMap::serialize)
            .unwrap_or_default(),
    };
    return_bytes(&mut caller, CALL, &serialized, ret_ptr, ret_size)?;
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_set_header_map_pairs(
    mut caller: Caller<'_, HostState>,
    map_type: i32,
    ptr: i32,
    size: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_set_header_map_pairs";
    restrict(&caller, CALL)?;
    if let Some(status) = injected_failure(&mut caller, CALL) {
        return Ok(status);
    }
    let bytes = read_bytes(&caller, CALL, ptr, size)?;
    // cpp-host: malformed pairs parse as an empty map, which then clears the headers.
    let pairs = deserialize_pairs(&bytes).unwrap_or_default();
    match writable_map(caller.data_mut(), map_type) {
        Ok(map) => {
            map.clear();
            for (key, value) in pairs {
                map.add(&String::from_utf8_lossy(&key), &value);
            }
            Ok(Status::Ok.code())
        }
        Err(status) => Ok(status.code()),
    }
}

pub(crate) fn proxy_get_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: i32,
    key_ptr: i32,
    key_len: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_get_header_map_value";
    restrict(&caller, CALL)?;
    if let Some(status) = injected_failure(&mut caller, CALL) {
        return Ok(status);
    }
    let key = read_string(&caller, CALL, key_ptr, key_len)?;
    let value = match locate_map(caller.data(), map_type) {
        Err(status) => return Ok(status.code()),
        // Envoy: a single-value read of an unavailable map is BAD_ARGUMENT (the SDK panics).
        Ok(None) => return Ok(Status::BadArgument.code()),
        Ok(Some((location, _))) => map_ref(caller.data(), location)
            .and_then(|m| m.first(&key))
            .map(<[u8]>::to_vec),
    };
    match value {
        None => Ok(Status::NotFound.code()),
        Some(value) => {
            return_bytes(&mut caller, CALL, &value, ret_ptr, ret_size)?;
            Ok(Status::Ok.code())
        }
    }
}

fn modify_map(
    caller: &mut Caller<'_, HostState>,
    call: &str,
    map_type: i32,
    key: (i32, i32),
    value: Option<(i32, i32)>,
    apply: impl FnOnce(&mut HeaderMap, &str, &[u8]),
) -> Result<i32> {
    restrict(caller, call)?;
    if let Some(status) = injected_failure(caller, call) {
        return Ok(status);
    }
    let key = read_string(caller, call, key.0, key.1)?;
    let value = match value {
        Some((ptr, len)) => read_bytes(caller, call, ptr, len)?,
        None => Vec::new(),
    };
    match writable_map(caller.data_mut(), map_type) {
        Ok(map) => {
            apply(map, &key, &value);
            Ok(Status::Ok.code())
        }
        Err(status) => Ok(status.code()),
    }
}

pub(crate) fn proxy_add_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: i32,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> Result<i32> {
    modify_map(
        &mut caller,
        "proxy_add_header_map_value",
        map_type,
        (key_ptr, key_len),
        Some((value_ptr, value_len)),
        |m, k, v| m.add(k, v),
    )
}

pub(crate) fn proxy_replace_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: i32,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> Result<i32> {
    modify_map(
        &mut caller,
        "proxy_replace_header_map_value",
        map_type,
        (key_ptr, key_len),
        Some((value_ptr, value_len)),
        |m, k, v| m.replace(k, v),
    )
}

pub(crate) fn proxy_remove_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: i32,
    key_ptr: i32,
    key_len: i32,
) -> Result<i32> {
    modify_map(
        &mut caller,
        "proxy_remove_header_map_value",
        map_type,
        (key_ptr, key_len),
        None,
        |m, k, _| m.remove(k),
    )
}

#[derive(Debug, Clone, Copy)]
enum BufferLocation {
    StreamBody { id: u32, request: bool },
    CalloutBody,
    VmConfiguration,
    PluginConfiguration,
}

fn locate_buffer(state: &HostState, buffer_type: i32) -> Result<Option<BufferLocation>, Status> {
    Ok(match buffer_type {
        0 | 1 => {
            let request = buffer_type == 0;
            state.target_stream().and_then(|(id, stream)| {
                let direction = if request {
                    &stream.request
                } else {
                    &stream.response
                };
                direction
                    .body_current
                    .then_some(BufferLocation::StreamBody { id, request })
            })
        }
        2 | 3 | 5 | 8 => None,
        4 => state
            .callout_response
            .is_some()
            .then_some(BufferLocation::CalloutBody),
        6 => Some(BufferLocation::VmConfiguration),
        // Envoy exposes the plugin configuration only while on_configure runs.
        7 => (state.callback == Callback::Configure).then_some(BufferLocation::PluginConfiguration),
        _ => return Err(Status::BadArgument),
    })
}

fn buffer_ref(state: &HostState, location: BufferLocation) -> &[u8] {
    match location {
        BufferLocation::StreamBody { id, request } => state
            .streams
            .get(&id)
            .map(|s| {
                if request {
                    s.request.body.as_slice()
                } else {
                    s.response.body.as_slice()
                }
            })
            .unwrap_or_default(),
        BufferLocation::CalloutBody => state
            .callout_response
            .as_ref()
            .map(|r| r.body.as_slice())
            .unwrap_or_default(),
        BufferLocation::VmConfiguration => &state.vm_config,
        BufferLocation::PluginConfiguration => &state.plugin_config,
    }
}

pub(crate) fn proxy_get_buffer_bytes(
    mut caller: Caller<'_, HostState>,
    buffer_type: i32,
    start: i32,
    max_size: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_get_buffer_bytes";
    restrict(&caller, CALL)?;
    let (start, max_size) = (start as u32, max_size as u32);
    let Some(end) = start.checked_add(max_size) else {
        return Ok(Status::BadArgument.code());
    };
    let slice = match locate_buffer(caller.data(), buffer_type) {
        Err(status) => return Ok(status.code()),
        Ok(None) => return Ok(Status::NotFound.code()),
        Ok(Some(location)) => {
            let buffer = buffer_ref(caller.data(), location);
            let end = (end as usize).min(buffer.len());
            let start = (start as usize).min(end);
            buffer
                .get(start..end)
                .map(<[u8]>::to_vec)
                .unwrap_or_default()
        }
    };
    return_bytes(&mut caller, CALL, &slice, ret_ptr, ret_size)?;
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_set_buffer_bytes(
    mut caller: Caller<'_, HostState>,
    buffer_type: i32,
    start: i32,
    size: i32,
    data_ptr: i32,
    data_len: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_set_buffer_bytes";
    restrict(&caller, CALL)?;
    let data = read_bytes(&caller, CALL, data_ptr, data_len)?;
    let (start, size) = (offset(start), offset(size));
    let state = caller.data_mut();
    let (id, request) = match locate_buffer(state, buffer_type) {
        Err(status) => return Ok(status.code()),
        Ok(None) => return Ok(Status::NotFound.code()),
        Ok(Some(BufferLocation::StreamBody { id, request })) => (id, request),
        // Callout body and configurations are constant buffers in Envoy.
        Ok(Some(_)) => return Ok(Status::BadArgument.code()),
    };
    let Some(stream) = state.streams.get_mut(&id) else {
        return Ok(Status::NotFound.code());
    };
    let body = &mut stream.direction_mut(request).body;
    if start == 0 {
        // Envoy: drain `size` bytes, then prepend the data.
        let drained = size.min(body.len());
        body.splice(..drained, data);
    } else if start >= body.len() {
        body.extend_from_slice(&data);
    } else {
        // Envoy's Buffer cannot replace in the middle.
        return Ok(Status::BadArgument.code());
    }
    Ok(Status::Ok.code())
}
