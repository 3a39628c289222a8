//! Pure logic shared by the svc-gateway proxy-wasm filters.
//!
//! Nothing here depends on `proxy-wasm`: the filter crates are thin glue that
//! translate between the host ABI and these types, so every decision can be
//! unit-tested natively and the same code ships in the `.wasm`.

pub mod build_info;
pub mod error_body;
pub mod http;
#[cfg(feature = "jwt")]
pub mod jwt;
pub mod path;
pub mod ratelimit;
pub mod security_headers;
