//! Errors the simulator reports to tests, and the proxy-wasm status codes it returns to guests.

/// Why a simulator call failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The module trapped (a Rust panic, an out-of-bounds access, fuel exhausted, a host
    /// function refusing a call the real Envoy would refuse). `message` is the panic message
    /// the SDK's panic hook logged when there was one, otherwise the trap itself.
    #[error("wasm trap in {callback}: {message}")]
    Trap { callback: String, message: String },
    /// The VM trapped earlier; like Envoy, a failed VM runs no more callbacks.
    #[error("wasm VM failed earlier ({0}); FAIL_CLOSED: callback not run")]
    VmFailed(String),
    /// The module could not be read, compiled or instantiated.
    #[error("cannot instantiate wasm module: {0}")]
    Instantiate(String),
    /// A required export (e.g. `proxy_on_request_headers`) is missing.
    #[error("wasm module does not export `{0}`")]
    MissingExport(String),
    /// The test drove the simulator in a way Envoy never would (unknown token, body after
    /// end_of_stream, ...).
    #[error("simulator misuse: {0}")]
    Misuse(String),
}

/// proxy-wasm status codes (`proxy_status_t`). Only the ones the Rust SDK's `Status` enum
/// can represent: returning anything else is undefined behaviour on the guest side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
}

impl Status {
    /// The value returned to the guest.
    pub fn code(self) -> i32 {
        self as i32
    }
}
