//! Host calls the filter needs beyond plain header access, each with its failure handled.

use std::cell::Cell;
use std::time::UNIX_EPOCH;

use gateway_core::jwt::host_verify::FOREIGN_FUNCTION_NAME;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// Host wall-clock time in milliseconds since the Unix epoch; 0 if the host cannot say,
/// which makes every token look expired (fail closed) rather than trapping.
pub fn now_millis() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|now| now.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

#[link(wasm_import_module = "env")]
extern "C" {
    // The SDK's `hostcalls::set_property` panics on any status but OK, and a panic fails the
    // whole VM (every later request answered 503 under FAIL_CLOSED). Envoy answers NOT_FOUND
    // without a stream and BAD_ARGUMENT when a typed filter-state prototype rejects the value;
    // declaring the import with a plain integer status lets us log those instead.
    #[allow(clashing_extern_declarations)]
    #[link_name = "proxy_set_property"]
    fn proxy_set_property_raw(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
}

/// Writes the filter-state object `wasm.<name>` on the current stream (Envoy
/// `proxy_set_property`). Returns the host status on failure.
pub fn set_stream_property(name: &str, value: &[u8]) -> Result<(), u32> {
    // A one-segment property path is the name itself (segments are joined by NUL).
    // SAFETY: both pointers are valid for the given lengths for the duration of the call;
    // the host only reads them.
    let status =
        unsafe { proxy_set_property_raw(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    match status {
        0 => Ok(()),
        other => Err(other),
    }
}

/// Whether Envoy's `verify_signature` foreign function is worth calling.
#[derive(Debug)]
pub struct HostCrypto {
    available: Cell<bool>,
}

impl HostCrypto {
    /// Asks the host once, at configuration time: an empty argument is a valid (empty)
    /// protobuf, so a host with the function answers (with `result: false`) and one without
    /// it answers NOT_FOUND.
    pub fn probe() -> Self {
        let available = !matches!(
            hostcalls::call_foreign_function(FOREIGN_FUNCTION_NAME, Some(&[])),
            Err(Status::NotFound)
        );
        Self {
            available: Cell::new(available),
        }
    }

    pub fn is_available(&self) -> bool {
        self.available.get()
    }

    /// One `verify_signature` call: the serialized `VerifySignatureResult`, or `None` when
    /// the host could not answer (the caller then verifies in pure Rust).
    pub fn verify_signature(&self, arguments: &[u8]) -> Option<Vec<u8>> {
        if !self.available.get() {
            return None;
        }
        match hostcalls::call_foreign_function(FOREIGN_FUNCTION_NAME, Some(arguments)) {
            // An empty answer is an all-default message: `result: false`.
            Ok(answer) => Some(answer.unwrap_or_default()),
            Err(Status::NotFound) => {
                self.available.set(false);
                log::warn!("{FOREIGN_FUNCTION_NAME} disappeared: verifying in pure Rust");
                None
            }
            Err(status) => {
                log::debug!("{FOREIGN_FUNCTION_NAME} failed: {status:?}: verifying in pure Rust");
                None
            }
        }
    }
}
