//! HTTP callouts (`proxy_http_call`, `proxy_get_status`) and the gRPC family (linked, not
//! modelled). Callouts belong to the root context, tokens are 4, 8, 12, … like Envoy.

use std::time::Duration;

use wasmtime::{Caller, Result};

use super::memory::{check_writable, read_bytes, read_string, return_bytes, write_u32};
use super::restrict;
use crate::error::Status;
use crate::header_map::{deserialize_pairs, HeaderMap};
use crate::state::{HostState, PendingCallout};
use crate::types::{HttpCall, LogLevel};

const TOKEN_STEP: u32 = 4;

fn parse_map(bytes: &[u8]) -> HeaderMap {
    HeaderMap::from_pairs(
        deserialize_pairs(bytes)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)),
    )
}

#[allow(clippy::too_many_arguments)] // the ABI signature
pub(crate) fn proxy_http_call(
    mut caller: Caller<'_, HostState>,
    upstream_ptr: i32,
    upstream_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    body_ptr: i32,
    body_len: i32,
    trailers_ptr: i32,
    trailers_len: i32,
    timeout_ms: i32,
    ret_token: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_http_call";
    restrict(&caller, CALL)?;
    let upstream = read_string(&caller, CALL, upstream_ptr, upstream_len)?;
    let mut headers = parse_map(&read_bytes(&caller, CALL, headers_ptr, headers_len)?);
    let body = read_bytes(&caller, CALL, body_ptr, body_len)?;
    let trailers = parse_map(&read_bytes(&caller, CALL, trailers_ptr, trailers_len)?);
    check_writable(&caller, CALL, ret_token, 4)?;

    let state = caller.data_mut();
    if let Some(clusters) = &state.clusters {
        if !clusters.contains(&upstream) {
            state.log(
                LogLevel::Debug,
                format!("[sim] {CALL}: unknown cluster `{upstream}` → BAD_ARGUMENT"),
            );
            return Ok(Status::BadArgument.code());
        }
    }
    if [":path", ":method", ":authority"]
        .iter()
        .any(|h| headers.first(h).is_none())
    {
        state.log(
            LogLevel::Debug,
            format!("[sim] {CALL}: missing :path/:method/:authority → BAD_ARGUMENT"),
        );
        return Ok(Status::BadArgument.code());
    }
    // The ABI passes a u32, Envoy reads it as a C int: "negative" timeouts are rejected.
    if timeout_ms < 0 {
        return Ok(Status::BadArgument.code());
    }
    if !body.is_empty() {
        headers.replace("content-length", body.len().to_string().as_bytes());
    }
    let timeout = Duration::from_millis(timeout_ms as u64);
    state.last_callout_token = state.last_callout_token.wrapping_add(TOKEN_STEP);
    let token = state.last_callout_token;
    let deadline = (timeout_ms > 0).then(|| state.clock.elapsed + timeout);
    state.callouts.insert(
        token,
        PendingCallout {
            call: HttpCall {
                token,
                upstream,
                headers: headers.to_string_pairs(),
                body,
                trailers: trailers.to_string_pairs(),
                timeout,
            },
            deadline,
        },
    );
    write_u32(&mut caller, CALL, ret_token, token)?;
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_get_status(
    mut caller: Caller<'_, HostState>,
    ret_code: i32,
    ret_msg_ptr: i32,
    ret_msg_size: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_get_status";
    restrict(&caller, CALL)?;
    let (code, message) = caller.data().last_status.clone();
    check_writable(&caller, CALL, ret_code, 4)?;
    return_bytes(&mut caller, CALL, &message, ret_msg_ptr, ret_msg_size)?;
    write_u32(&mut caller, CALL, ret_code, code)?;
    Ok(Status::Ok.code())
}

fn grpc_not_modelled(caller: &mut Caller<'_, HostState>, call: &str) -> Result<i32> {
    restrict(caller, call)?;
    caller.data_mut().log(
        LogLevel::Warn,
        format!("[sim] {call}: gRPC callouts are not modelled → INTERNAL_FAILURE"),
    );
    Ok(Status::InternalFailure.code())
}

#[allow(clippy::too_many_arguments)] // the ABI signature
pub(crate) fn proxy_grpc_call(
    mut caller: Caller<'_, HostState>,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
) -> Result<i32> {
    grpc_not_modelled(&mut caller, "proxy_grpc_call")
}

#[allow(clippy::too_many_arguments)] // the ABI signature
pub(crate) fn proxy_grpc_stream(
    mut caller: Caller<'_, HostState>,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
) -> Result<i32> {
    grpc_not_modelled(&mut caller, "proxy_grpc_stream")
}

pub(crate) fn proxy_grpc_send(
    caller: Caller<'_, HostState>,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
) -> Result<i32> {
    restrict(&caller, "proxy_grpc_send")?;
    Ok(Status::NotFound.code())
}

pub(crate) fn proxy_grpc_cancel(caller: Caller<'_, HostState>, _: i32) -> Result<i32> {
    restrict(&caller, "proxy_grpc_cancel")?;
    Ok(Status::NotFound.code())
}

pub(crate) fn proxy_grpc_close(caller: Caller<'_, HostState>, _: i32) -> Result<i32> {
    restrict(&caller, "proxy_grpc_close")?;
    Ok(Status::NotFound.code())
}
