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
