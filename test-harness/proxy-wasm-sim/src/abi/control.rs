//! Logging, time, timers, context switching, stream control (continue / close / local
//! response), `proxy_done` and foreign functions.

use std::time::Duration;

use wasmtime::{Caller, Result};

use super::memory::{read_bytes, read_string, return_bytes, write_u32, write_u64};
use super::restrict;
use crate::error::Status;
use crate::header_map::deserialize_pairs;
use crate::properties::nanos_since_epoch;
use crate::state::{Deferred, HostState, PendingLocalReply};
use crate::types::LogLevel;

pub(crate) fn proxy_log(
    mut caller: Caller<'_, HostState>,
    level: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_log";
    restrict(&caller, CALL)?;
    let Some(level) = LogLevel::from_abi(level) else {
        return Ok(Status::BadArgument.code());
    };
    let message = String::from_utf8_lossy(&read_bytes(&caller, CALL, ptr, len)?).into_owned();
    caller.data_mut().log(level, message);
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_get_log_level(
    mut caller: Caller<'_, HostState>,
    ret_level: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_get_log_level";
    restrict(&caller, CALL)?;
    // Always 0..=5: the SDK reads it into its LogLevel enum.
    let level = caller.data().log_level.to_abi();
    write_u32(&mut caller, CALL, ret_level, level)?;
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_get_current_time_nanoseconds(
    mut caller: Caller<'_, HostState>,
    ret_time: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_get_current_time_nanoseconds";
    restrict(&caller, CALL)?;
    let now = nanos_since_epoch(caller.data().clock.now()) as u64;
    write_u64(&mut caller, CALL, ret_time, now)?;
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_set_tick_period_milliseconds(
    mut caller: Caller<'_, HostState>,
    period_ms: i32,
) -> Result<i32> {
    restrict(&caller, "proxy_set_tick_period_milliseconds")?;
    // The timer always belongs to the root context (one plugin per Host here).
    let state = caller.data_mut();
    let period = Duration::from_millis(u64::from(period_ms as u32));
    if period.is_zero() {
        state.tick_period = None;
        state.next_tick_at = None;
    } else {
        state.tick_period = Some(period);
        state.next_tick_at = Some(state.clock.elapsed + period);
    }
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_set_effective_context(
    mut caller: Caller<'_, HostState>,
    context_id: i32,
) -> Result<i32> {
    restrict(&caller, "proxy_set_effective_context")?;
    let state = caller.data_mut();
    let id = context_id as u32;
    if !state.context_exists(id) {
        return Ok(Status::BadArgument.code());
    }
    state.effective_context = Some(id);
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_continue_stream(
    mut caller: Caller<'_, HostState>,
    stream_type: i32,
) -> Result<i32> {
    restrict(&caller, "proxy_continue_stream")?;
    let state = caller.data_mut();
    match stream_type {
        0 | 1 => {
            // Deferred like Envoy's addAfterVmCallAction; a no-op from a root context.
            if let Some((stream, _)) = state.target_stream() {
                state.deferred.push(Deferred::Continue {
                    stream,
                    request: stream_type == 0,
                });
            }
            Ok(Status::Ok.code())
        }
        2 => Ok(Status::Ok.code()),
        // Envoy answers UNIMPLEMENTED (12) for UPSTREAM, which the Rust SDK cannot represent;
        // BAD_ARGUMENT keeps the guest's behaviour defined (it panics on both).
        3 => {
            state.log(
                LogLevel::Debug,
                "[sim] proxy_continue_stream(UPSTREAM) is unimplemented in Envoy".into(),
            );
            Ok(Status::BadArgument.code())
        }
        _ => Ok(Status::BadArgument.code()),
    }
}

pub(crate) fn proxy_close_stream(
    mut caller: Caller<'_, HostState>,
    stream_type: i32,
) -> Result<i32> {
    restrict(&caller, "proxy_close_stream")?;
    let state = caller.data_mut();
    match stream_type {
        0 | 1 => {
            if let Some((stream, _)) = state.target_stream() {
                state.deferred.push(Deferred::Close { stream });
            }
            Ok(Status::Ok.code())
        }
        2 | 3 => Ok(Status::Ok.code()),
        _ => Ok(Status::BadArgument.code()),
    }
}

#[allow(clippy::too_many_arguments)] // the ABI signature
pub(crate) fn proxy_send_local_response(
    mut caller: Caller<'_, HostState>,
    status_code: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    grpc_status: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_send_local_response";
    restrict(&caller, CALL)?;
    let details = read_string(&caller, CALL, details_ptr, details_len)?;
    let body = read_bytes(&caller, CALL, body_ptr, body_len)?;
    let headers = deserialize_pairs(&read_bytes(&caller, CALL, headers_ptr, headers_len)?)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
        .collect();
    let state = caller.data_mut();
    let Some((stream_id, stream)) = state.target_stream() else {
        // Envoy #39797: from a root context the call silently does nothing.
        state.log(
            LogLevel::Debug,
            format!("[sim] {CALL} from a root context ignored (Envoy does the same)"),
        );
        return Ok(Status::Ok.code());
    };
    let already = stream.local_reply.is_some()
        || stream.local_reply_in_flight
        || state
            .deferred
            .iter()
            .any(|d| matches!(d, Deferred::LocalReply { stream, .. } if *stream == stream_id));
    if already {
        state.log(
            LogLevel::Debug,
            format!("[sim] second {CALL} on stream {stream_id} ignored"),
        );
        return Ok(Status::Ok.code());
    }
    state.local_reply_requested = true;
    state.deferred.push(Deferred::LocalReply {
        stream: stream_id,
        reply: PendingLocalReply {
            status: status_code as u32,
            details,
            body,
            headers,
            grpc_status,
        },
    });
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_done(caller: Caller<'_, HostState>) -> Result<i32> {
    restrict(&caller, "proxy_done")?;
    // cpp-host: OK only for a root context whose on_done returned false; the simulator
    // never shuts a root context down, so like Envoy in steady state: NOT_FOUND.
    Ok(Status::NotFound.code())
}

pub(crate) fn proxy_call_foreign_function(
    mut caller: Caller<'_, HostState>,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_len: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_call_foreign_function";
    restrict(&caller, CALL)?;
    let name = read_string(&caller, CALL, name_ptr, name_len)?;
    let arguments = read_bytes(&caller, CALL, args_ptr, args_len)?;
    let Some(function) = caller.data().foreign_functions.get(&name).cloned() else {
        return Ok(Status::NotFound.code());
    };
    match function(&arguments) {
        Ok(result) => {
            return_bytes(&mut caller, CALL, &result, ret_ptr, ret_size)?;
            Ok(Status::Ok.code())
        }
        Err(status) => Ok(status.code()),
    }
}
