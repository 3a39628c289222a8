//! Host functions: every `env.proxy_*` import the Rust SDK links, plus the WASI functions
//! a wasip1 module imports. Each returns a proxy-wasm status to the guest, or an `Err`
//! (a trap with a message) for guest bugs Envoy would also not survive.

pub(crate) mod callouts;
pub(crate) mod control;
pub(crate) mod headers;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod properties;
pub(crate) mod shared;
pub(crate) mod wasi;

use wasmtime::{bail, Caller, Linker, Module, Result};

use crate::state::{Callback, HostState};

/// Envoy restricts what a module may call while it is not "running": during
/// `proxy_on_memory_allocate` (called from inside a hostcall) and during `_initialize`
/// (before the VM started). Anything else traps with "restricted_callback".
pub(crate) fn restrict(caller: &Caller<'_, HostState>, call: &str) -> Result<()> {
    let state = caller.data();
    if state.allocating
        && !matches!(
            call,
            "proxy_log" | "fd_write" | "clock_time_get" | "poll_oneoff"
        )
    {
        bail!("restricted_callback: {call} called from inside proxy_on_memory_allocate");
    }
    if state.callback == Callback::Initialize && call.starts_with("proxy_") && call != "proxy_log" {
        bail!(
            "restricted_callback: {call} called during _initialize (Envoy allows only logging \
             and WASI before the VM has started; move it to on_vm_start/on_configure)"
        );
    }
    Ok(())
}

/// The status a test asked `call` to fail with ([`crate::Host::fail_host_call`]), consuming
/// one of the failures asked for; `None` when the call runs normally.
pub(crate) fn injected_failure(caller: &mut Caller<'_, HostState>, call: &str) -> Option<i32> {
    let failures = &mut caller.data_mut().injected_failures;
    let entry = failures
        .iter_mut()
        .find(|(name, _, left)| name == call && *left > 0)?;
    entry.2 -= 1;
    i32::try_from(entry.1).ok()
}

/// Builds the linker for one module: real host functions first, then every import still
/// undefined becomes a trap naming itself when called.
pub(crate) fn linker(module: &Module) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(module.engine());
    define_env(&mut linker)?;
    for wasi_module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        define_wasi(&mut linker, wasi_module)?;
    }
    linker.define_unknown_imports_as_traps(module)?;
    Ok(linker)
}

fn define_env(linker: &mut Linker<HostState>) -> Result<()> {
    const ENV: &str = "env";
    linker.func_wrap(ENV, "proxy_log", control::proxy_log)?;
    linker.func_wrap(ENV, "proxy_get_log_level", control::proxy_get_log_level)?;
    linker.func_wrap(
        ENV,
        "proxy_get_current_time_nanoseconds",
        control::proxy_get_current_time_nanoseconds,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_tick_period_milliseconds",
        control::proxy_set_tick_period_milliseconds,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_effective_context",
        control::proxy_set_effective_context,
    )?;
    linker.func_wrap(ENV, "proxy_continue_stream", control::proxy_continue_stream)?;
    linker.func_wrap(ENV, "proxy_close_stream", control::proxy_close_stream)?;
    linker.func_wrap(
        ENV,
        "proxy_send_local_response",
        control::proxy_send_local_response,
    )?;
    linker.func_wrap(ENV, "proxy_done", control::proxy_done)?;
    linker.func_wrap(
        ENV,
        "proxy_call_foreign_function",
        control::proxy_call_foreign_function,
    )?;

    linker.func_wrap(
        ENV,
        "proxy_get_buffer_bytes",
        headers::proxy_get_buffer_bytes,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_buffer_bytes",
        headers::proxy_set_buffer_bytes,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_pairs",
        headers::proxy_get_header_map_pairs,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_header_map_pairs",
        headers::proxy_set_header_map_pairs,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_value",
        headers::proxy_get_header_map_value,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_add_header_map_value",
        headers::proxy_add_header_map_value,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_replace_header_map_value",
        headers::proxy_replace_header_map_value,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_remove_header_map_value",
        headers::proxy_remove_header_map_value,
    )?;

    linker.func_wrap(ENV, "proxy_get_property", properties::proxy_get_property)?;
    linker.func_wrap(ENV, "proxy_set_property", properties::proxy_set_property)?;

    linker.func_wrap(ENV, "proxy_http_call", callouts::proxy_http_call)?;
    linker.func_wrap(ENV, "proxy_get_status", callouts::proxy_get_status)?;
    linker.func_wrap(ENV, "proxy_grpc_call", callouts::proxy_grpc_call)?;
    linker.func_wrap(ENV, "proxy_grpc_stream", callouts::proxy_grpc_stream)?;
    linker.func_wrap(ENV, "proxy_grpc_send", callouts::proxy_grpc_send)?;
    linker.func_wrap(ENV, "proxy_grpc_cancel", callouts::proxy_grpc_cancel)?;
    linker.func_wrap(ENV, "proxy_grpc_close", callouts::proxy_grpc_close)?;

    linker.func_wrap(ENV, "proxy_define_metric", metrics::proxy_define_metric)?;
    linker.func_wrap(
        ENV,
        "proxy_increment_metric",
        metrics::proxy_increment_metric,
    )?;
    linker.func_wrap(ENV, "proxy_record_metric", metrics::proxy_record_metric)?;
    linker.func_wrap(ENV, "proxy_get_metric", metrics::proxy_get_metric)?;

    linker.func_wrap(ENV, "proxy_get_shared_data", shared::proxy_get_shared_data)?;
    linker.func_wrap(ENV, "proxy_set_shared_data", shared::proxy_set_shared_data)?;
    linker.func_wrap(
        ENV,
        "proxy_register_shared_queue",
        shared::proxy_register_shared_queue,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_resolve_shared_queue",
        shared::proxy_resolve_shared_queue,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_enqueue_shared_queue",
        shared::proxy_enqueue_shared_queue,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_dequeue_shared_queue",
        shared::proxy_dequeue_shared_queue,
    )?;
    Ok(())
}

fn define_wasi(linker: &mut Linker<HostState>, module: &str) -> Result<()> {
    linker.func_wrap(module, "fd_write", wasi::fd_write)?;
    linker.func_wrap(module, "fd_read", wasi::fd_read)?;
    linker.func_wrap(module, "fd_seek", wasi::fd_seek)?;
    linker.func_wrap(module, "fd_close", wasi::fd_close)?;
    linker.func_wrap(module, "fd_fdstat_get", wasi::fd_fdstat_get)?;
    linker.func_wrap(module, "fd_fdstat_set_flags", wasi::fd_fdstat_set_flags)?;
    linker.func_wrap(module, "fd_prestat_get", wasi::fd_prestat_get)?;
    linker.func_wrap(module, "fd_prestat_dir_name", wasi::fd_prestat_dir_name)?;
    linker.func_wrap(module, "path_open", wasi::path_open)?;
    linker.func_wrap(module, "environ_sizes_get", wasi::environ_sizes_get)?;
    linker.func_wrap(module, "environ_get", wasi::environ_get)?;
    linker.func_wrap(module, "args_sizes_get", wasi::args_sizes_get)?;
    linker.func_wrap(module, "args_get", wasi::args_get)?;
    linker.func_wrap(module, "clock_time_get", wasi::clock_time_get)?;
    linker.func_wrap(module, "clock_res_get", wasi::clock_res_get)?;
    linker.func_wrap(module, "random_get", wasi::random_get)?;
    linker.func_wrap(module, "sched_yield", wasi::sched_yield)?;
    linker.func_wrap(module, "poll_oneoff", wasi::poll_oneoff)?;
    linker.func_wrap(module, "proc_exit", wasi::proc_exit)?;
    Ok(())
}
