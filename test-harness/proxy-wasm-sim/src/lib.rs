//! proxy-wasm host simulator: runs a real proxy-wasm module (ABI 0.2.1, Rust SDK 0.2.x,
//! `wasm32-wasip1`) on wasmtime with the host behaviour of Envoy, for state-based tests.
//!
//! A test builds a [`Host`] (one VM, one plugin), drives streams through it
//! (`request_headers`, `request_body`, `response_headers`, …, `complete`), answers HTTP
//! callouts, advances the virtual clock, then inspects headers, local replies, logs,
//! metrics and shared data. No global state: every `Host` owns its own wasmtime `Store`,
//! so tests run in parallel; compiled modules are cached per process.
//!
//! ```no_run
//! use proxy_wasm_sim::{Action, Host, fixture};
//! let mut host = Host::builder(fixture("abi-probe")).plugin_config("{}").build().unwrap();
//! let s = host.new_stream();
//! assert_eq!(host.request_headers(s, &[(":path", "/"), (":method", "GET")], true).unwrap(), Action::Continue);
//! ```
//!
//! See README.md for the Envoy behaviours that are modelled and those that are not.

// Test helpers (`artifact`, `fixture`) panic with an instruction when a module is missing;
// host functions never panic (they return statuses or traps).
#![allow(clippy::panic)]

mod abi;
mod engine;
mod error;
mod header_map;
mod host;
mod properties;
mod shared_data;
mod state;
mod types;

use std::path::{Path, PathBuf};

pub use error::{SimError, Status};
pub use header_map::HeaderMap;
pub use host::{Host, HostBuilder};
pub use properties::PropertyValue;
pub use shared_data::SharedData;
pub use types::{
    Action, HttpCall, LocalReply, LogEntry, LogLevel, MetricKind, StreamId, TeardownOrder,
};

/// The workspace root: `$SVC_GATEWAY_ROOT`, else two levels above this crate.
pub fn workspace_root() -> PathBuf {
    match std::env::var_os("SVC_GATEWAY_ROOT") {
        Some(root) => PathBuf::from(root),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(".."),
    }
}

fn existing(path: PathBuf, what: &str) -> PathBuf {
    if !path.is_file() {
        panic!("{what} {} not found: run `make wasm` first", path.display());
    }
    path
}

/// A shipped filter: `$SVC_GATEWAY_DIST/<name>.wasm`, else `<workspace>/dist/<name>.wasm`.
/// Panics (test helper) when the file is missing.
pub fn artifact(name: &str) -> PathBuf {
    let dist = std::env::var_os("SVC_GATEWAY_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("dist"));
    existing(dist.join(format!("{name}.wasm")), "wasm artifact")
}

/// A test-only module: `$SVC_GATEWAY_FIXTURES/<name_with_underscores>.wasm`, else
/// `<target>/wasm32-wasip1/release/…` (`$CARGO_TARGET_DIR` or `<workspace>/target`).
/// Panics (test helper) when the file is missing.
pub fn fixture(name: &str) -> PathBuf {
    let file = format!("{}.wasm", name.replace('-', "_"));
    let dir = match std::env::var_os("SVC_GATEWAY_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("wasm32-wasip1")
            .join("release"),
    };
    existing(dir.join(file), "wasm fixture")
}
