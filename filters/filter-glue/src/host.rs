//! The host calls on our filters' per-request paths, declared here with a plain integer
//! status.
//!
//! The SDK's `hostcalls` wrappers `panic!` on any status they do not expect, and a panic
//! kills the whole VM (with FAIL_CLOSED, every later request then gets a 503 until Envoy
//! reloads it). Envoy does answer these calls with errors in real situations: BAD_ARGUMENT
//! for a header map that is not available in the current callback, NOT_FOUND for a property
//! outside a stream. Here every status comes back as a [`HostStatus`] for the caller to
//! handle, and data the host returns is taken over without copying.

use std::fmt;
use std::ptr::null_mut;

use proxy_wasm::types::MapType;

use crate::header_pairs::{HeaderPairs, PairsError};

/// A proxy-wasm status other than OK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostStatus(pub u32);

/// Why a host call failed: the host said no, or sent data that does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    Status(HostStatus),
    Malformed(PairsError),
}

impl HostStatus {
    pub const NOT_FOUND: Self = Self(1);

    fn check(raw: u32) -> Result<(), Self> {
        match raw {
            0 => Ok(()),
            other => Err(Self(other)),
        }
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names of proxy-wasm's WasmResult.
        let name = match self.0 {
            1 => "NOT_FOUND",
            2 => "BAD_ARGUMENT",
            3 => "SERIALIZATION_FAILURE",
            4 => "PARSE_FAILURE",
            5 => "BAD_EXPRESSION",
            6 => "INVALID_MEMORY_ACCESS",
            7 => "EMPTY",
            8 => "CAS_MISMATCH",
            9 => "RESULT_MISMATCH",
            10 => "INTERNAL_FAILURE",
            11 => "BROKEN_CONNECTION",
            12 => "UNIMPLEMENTED",
            _ => "UNKNOWN",
        };
        write!(f, "{name} ({})", self.0)
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "host answered {status}"),
            Self::Malformed(error) => write!(f, "host sent a malformed map: {error}"),
        }
    }
}

impl From<HostStatus> for HostError {
    fn from(status: HostStatus) -> Self {
        Self::Status(status)
    }
}

// The same imports the SDK declares, with the status as a plain integer (an unexpected
// value in the SDK's `Status` enum would be undefined behaviour, and its wrappers panic).
#[link(wasm_import_module = "env")]
#[allow(clashing_extern_declarations)]
extern "C" {
    #[link_name = "proxy_get_header_map_pairs"]
    fn raw_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    #[link_name = "proxy_get_header_map_value"]
    fn raw_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    #[link_name = "proxy_add_header_map_value"]
    fn raw_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    #[link_name = "proxy_set_header_map_pairs"]
    fn raw_set_header_map_pairs(map_type: u32, data: *const u8, size: usize) -> u32;
    #[link_name = "proxy_remove_header_map_value"]
    fn raw_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    #[link_name = "proxy_get_property"]
    fn raw_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    #[link_name = "proxy_set_property"]
    fn raw_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    #[link_name = "proxy_send_local_response"]
    fn raw_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    #[link_name = "proxy_increment_metric"]
    fn raw_increment_metric(metric_id: u32, offset: i64) -> u32;
}

/// The whole header (or trailer) map `map`, read in one host call.
pub fn header_map(map: MapType) -> Result<HeaderPairs, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: both out-pointers are valid for writes for the duration of the call.
    let raw = unsafe { raw_get_header_map_pairs(map as u32, &mut data, &mut size) };
    HostStatus::check(raw)?;
    // SAFETY: the host allocated `size` bytes through `proxy_on_memory_allocate` (the SDK's
    // allocator, a `Vec<u8>` of exactly that capacity) and hands them over.
    let bytes = unsafe { take_host_buffer(data, size) };
    HeaderPairs::parse(bytes).map_err(HostError::Malformed)
}

/// The first value of header `name` in `map` (Envoy returns only the first); `None` when
/// the map has no such header or its value is empty.
pub fn header_value(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostStatus> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the name is valid for its length; the out-pointers are valid for writes.
    let raw = unsafe {
        raw_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    // SAFETY: on OK the host allocated `size` bytes at `data` for us (see `header_map`).
    unsafe { optional_value(raw, data, size) }
}

/// Replaces the whole map `map` with `serialized` (from
/// [`header_pairs::serialize`](crate::header_pairs::serialize)) in one host call. Envoy
/// removes every entry and adds the new ones in order, so repeated names survive.
pub fn set_header_map(map: MapType, serialized: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: the pointer is valid for `len` bytes for the duration of the call; the host
    // only reads it.
    let raw =
        unsafe { raw_set_header_map_pairs(map as u32, serialized.as_ptr(), serialized.len()) };
    HostStatus::check(raw)
}

/// Adds one `name: value` entry to `map`, after any it already has (Envoy `addCopy`: no
/// search for an existing entry, so the cheapest write when the name is known absent).
pub fn add_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: both pointers are valid for their lengths for the duration of the call; the
    // host copies them.
    let raw = unsafe {
        raw_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    HostStatus::check(raw)
}

/// Removes every value of header `name` from `map` (nothing to do is not an error).
pub fn remove_header(map: MapType, name: &str) -> Result<(), HostStatus> {
    // SAFETY: the name is valid for its length for the duration of the call.
    let raw = unsafe { raw_remove_header_map_value(map as u32, name.as_ptr(), name.len()) };
    HostStatus::check(raw)
}

/// A property (`path` segments, e.g. `["source", "address"]`); `None` when the host has no
/// such property (NOT_FOUND) or it is empty.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostStatus> {
    // Segments are joined by NUL; a single segment is the name itself.
    let joined = path.join("\0");
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the path is valid for its length; the out-pointers are valid for writes.
    let raw = unsafe { raw_get_property(joined.as_ptr(), joined.len(), &mut data, &mut size) };
    // SAFETY: on OK the host allocated `size` bytes at `data` for us (see `header_map`).
    unsafe { optional_value(raw, data, size) }
}

/// A value the host returned with status `raw`: `None` for NOT_FOUND or an empty value.
///
/// # Safety
/// When `raw` is OK, `data` and `size` must be what the host returned, as for
/// [`take_host_buffer`].
unsafe fn optional_value(
    raw: u32,
    data: *mut u8,
    size: usize,
) -> Result<Option<Vec<u8>>, HostStatus> {
    match HostStatus::check(raw) {
        Ok(()) => {}
        Err(HostStatus::NOT_FOUND) => return Ok(None),
        Err(status) => return Err(status),
    }
    // SAFETY: upheld by the caller.
    let bytes = unsafe { take_host_buffer(data, size) };
    Ok(Some(bytes).filter(|bytes| !bytes.is_empty()))
}

/// Writes the filter-state object `wasm.<name>` on the current stream (Envoy
/// `proxy_set_property` with a one-segment path).
pub fn set_property(name: &str, value: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: both pointers are valid for their lengths for the duration of the call; the
    // host only reads them.
    let raw = unsafe { raw_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    HostStatus::check(raw)
}

/// Answers the current request with a local reply (Envoy sends it after the callback
/// returns, through the encoder filters); `details` becomes the response code details
/// access logs show. The callback should then return Pause.
pub fn send_local_response(
    status: u32,
    details: &str,
    headers: &[(&[u8], &[u8])],
    body: &[u8],
) -> Result<(), HostStatus> {
    let headers = crate::header_pairs::serialize(headers);
    // SAFETY: every pointer is valid for its length for the duration of the call; the host
    // copies what it needs.
    let raw = unsafe {
        raw_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            // No gRPC status: these are HTTP answers.
            -1,
        )
    };
    HostStatus::check(raw)
}

/// Adds `delta` to a counter (negative deltas are for gauges).
pub fn increment_metric(metric_id: u32, delta: i64) -> Result<(), HostStatus> {
    // SAFETY: no pointers.
    HostStatus::check(unsafe { raw_increment_metric(metric_id, delta) })
}

/// Takes ownership of a buffer the host allocated in this module's memory.
///
/// # Safety
/// `data` must be null, or point to `size` bytes allocated by the SDK's
/// `proxy_on_memory_allocate` (a `Vec<u8>` with capacity `size`) that nothing else owns.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        // Envoy answers an empty map or value without allocating (or with a zero-size
        // allocation, which the SDK's allocator never backs with memory).
        return Vec::new();
    }
    // SAFETY: upheld by the caller.
    unsafe { Vec::from_raw_parts(data, size, size) }
}
