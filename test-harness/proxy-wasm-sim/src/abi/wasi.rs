//! The `wasi_snapshot_preview1` functions a wasip1 proxy-wasm module imports, hand-written
//! with Envoy's behaviour (cpp-host `exports.cc`): stdout/stderr go to the log, no files,
//! no preopens, virtual clock, deterministic (seeded) randomness.

use wasmtime::{bail, Caller, Result};

use super::memory::{offset, read_bytes, write_bytes, write_u32, write_u64};
use super::restrict;
use crate::state::HostState;
use crate::types::LogLevel;

const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const INVAL: i32 = 28;
const NOENT: i32 = 44;
const NOSYS: i32 = 52;
const NOTSUP: i32 = 58;
const MAX_RANDOM_BYTES: usize = 64 * 1024;

pub(crate) fn fd_write(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    ret_written: i32,
) -> Result<i32> {
    const CALL: &str = "fd_write";
    restrict(&caller, CALL)?;
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Ok(BADF),
    };
    let count = offset(iovs_len);
    let descriptors = read_bytes(
        &caller,
        CALL,
        iovs,
        i32::try_from(count.saturating_mul(8)).unwrap_or(i32::MAX),
    )?;
    let mut text = Vec::new();
    for descriptor in descriptors.chunks_exact(8) {
        let field = |range: std::ops::Range<usize>| -> i32 {
            descriptor
                .get(range)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i32::from_le_bytes)
        };
        text.extend(read_bytes(&caller, CALL, field(0..4), field(4..8))?);
    }
    let written = text.len();
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    caller
        .data_mut()
        .log(level, String::from_utf8_lossy(&text).into_owned());
    write_u32(&mut caller, CALL, ret_written, written as u32)?;
    Ok(SUCCESS)
}

pub(crate) fn fd_read(_: Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32) -> Result<i32> {
    Ok(NOSYS)
}

pub(crate) fn fd_seek(_: Caller<'_, HostState>, _: i32, _: i64, _: i32, _: i32) -> Result<i32> {
    Ok(SUCCESS)
}

pub(crate) fn fd_close(_: Caller<'_, HostState>, _: i32) -> Result<i32> {
    Ok(SUCCESS)
}

pub(crate) fn fd_fdstat_get(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    ret_stat: i32,
) -> Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(BADF);
    }
    // fdstat: filetype u8 (2 = character device), flags u16, rights_base u64 (FD_WRITE),
    // rights_inheriting u64 — 24 bytes with padding.
    let mut stat = vec![2u8, 0, 0, 0, 0, 0, 0, 0];
    stat.extend_from_slice(&(1u64 << 6).to_le_bytes());
    stat.extend_from_slice(&0u64.to_le_bytes());
    write_bytes(&mut caller, "fd_fdstat_get", ret_stat, &stat)?;
    Ok(SUCCESS)
}

pub(crate) fn fd_fdstat_set_flags(_: Caller<'_, HostState>, _: i32, _: i32) -> Result<i32> {
    Ok(NOSYS)
}

pub(crate) fn fd_prestat_get(_: Caller<'_, HostState>, _: i32, _: i32) -> Result<i32> {
    Ok(BADF)
}

pub(crate) fn fd_prestat_dir_name(_: Caller<'_, HostState>, _: i32, _: i32, _: i32) -> Result<i32> {
    Ok(BADF)
}

#[allow(clippy::too_many_arguments)] // the WASI signature
pub(crate) fn path_open(
    _: Caller<'_, HostState>,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i64,
    _: i64,
    _: i32,
    _: i32,
) -> Result<i32> {
    Ok(NOENT)
}

fn environment_block(state: &HostState) -> Vec<Vec<u8>> {
    state
        .environment
        .iter()
        .map(|(k, v)| {
            let mut entry = format!("{k}={v}").into_bytes();
            entry.push(0);
            entry
        })
        .collect()
}

pub(crate) fn environ_sizes_get(
    mut caller: Caller<'_, HostState>,
    ret_count: i32,
    ret_size: i32,
) -> Result<i32> {
    let entries = environment_block(caller.data());
    let size: usize = entries.iter().map(Vec::len).sum();
    write_u32(
        &mut caller,
        "environ_sizes_get",
        ret_count,
        entries.len() as u32,
    )?;
    write_u32(&mut caller, "environ_sizes_get", ret_size, size as u32)?;
    Ok(SUCCESS)
}

pub(crate) fn environ_get(
    mut caller: Caller<'_, HostState>,
    pointers: i32,
    buffer: i32,
) -> Result<i32> {
    const CALL: &str = "environ_get";
    let entries = environment_block(caller.data());
    let mut cursor = buffer as u32;
    for (index, entry) in entries.iter().enumerate() {
        write_u32(
            &mut caller,
            CALL,
            pointers.wrapping_add((index * 4) as i32),
            cursor,
        )?;
        write_bytes(&mut caller, CALL, cursor as i32, entry)?;
        cursor = cursor.wrapping_add(entry.len() as u32);
    }
    Ok(SUCCESS)
}

pub(crate) fn args_sizes_get(
    mut caller: Caller<'_, HostState>,
    ret_count: i32,
    ret_size: i32,
) -> Result<i32> {
    write_u32(&mut caller, "args_sizes_get", ret_count, 0)?;
    write_u32(&mut caller, "args_sizes_get", ret_size, 0)?;
    Ok(SUCCESS)
}

pub(crate) fn args_get(_: Caller<'_, HostState>, _: i32, _: i32) -> Result<i32> {
    Ok(SUCCESS)
}

pub(crate) fn clock_time_get(
    mut caller: Caller<'_, HostState>,
    clock_id: i32,
    _precision: i64,
    ret_time: i32,
) -> Result<i32> {
    const CALL: &str = "clock_time_get";
    restrict(&caller, CALL)?;
    let clock = caller.data().clock;
    let nanos = match clock_id {
        0 => crate::properties::nanos_since_epoch(clock.now()) as u64,
        1 => clock.monotonic_nanos(),
        _ => return Ok(NOTSUP),
    };
    write_u64(&mut caller, CALL, ret_time, nanos)?;
    Ok(SUCCESS)
}

pub(crate) fn clock_res_get(
    mut caller: Caller<'_, HostState>,
    _clock_id: i32,
    ret_resolution: i32,
) -> Result<i32> {
    write_u64(&mut caller, "clock_res_get", ret_resolution, 1)?;
    Ok(SUCCESS)
}

pub(crate) fn random_get(mut caller: Caller<'_, HostState>, buffer: i32, len: i32) -> Result<i32> {
    let len = offset(len);
    if len > MAX_RANDOM_BYTES {
        return Ok(INVAL);
    }
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        let word = caller.data_mut().next_random();
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes.truncate(len);
    write_bytes(&mut caller, "random_get", buffer, &bytes)?;
    Ok(SUCCESS)
}

pub(crate) fn sched_yield(_: Caller<'_, HostState>) -> Result<i32> {
    Ok(SUCCESS)
}

pub(crate) fn poll_oneoff(
    mut caller: Caller<'_, HostState>,
    _in: i32,
    _out: i32,
    _subscriptions: i32,
    ret_events: i32,
) -> Result<i32> {
    write_u32(&mut caller, "poll_oneoff", ret_events, 0)?;
    Ok(SUCCESS)
}

pub(crate) fn proc_exit(_: Caller<'_, HostState>, code: i32) -> Result<()> {
    // Envoy only logs; a trap is more useful in tests (the module meant to stop).
    bail!("the module called proc_exit({code})")
}
