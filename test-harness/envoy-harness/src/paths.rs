//! Where the repository, its build outputs and the Envoy binary are.
//!
//! `make` exports `SVC_GATEWAY_ROOT`, `SVC_GATEWAY_DIST` and `ENVOY_BIN`; a plain
//! `cargo test -p envoy-harness` falls back to the paths the Makefile would use, so both
//! ways of running the tests find the same files.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The repository root.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("SVC_GATEWAY_ROOT") {
        Some(root) => PathBuf::from(root),
        // This crate lives at <root>/test-harness/envoy-harness.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

/// Where `make wasm` puts the shipped filters.
pub fn dist_dir() -> PathBuf {
    match std::env::var_os("SVC_GATEWAY_DIST") {
        Some(dist) => PathBuf::from(dist),
        None => repo_root().join("dist"),
    }
}

/// `dist/<filter>.wasm`, or an error that says how to build it.
pub fn dist_wasm(filter: &str) -> Result<PathBuf> {
    let path = dist_dir().join(format!("{filter}.wasm"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::new(format!(
            "{} does not exist: run `make wasm`",
            path.display()
        )))
    }
}

/// The Envoy binary, or an error that says how to install it.
pub fn envoy_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("ENVOY_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => repo_root().join("build/bin/envoy"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::new(format!(
            "Envoy binary not found at {}: run `make envoy` (or set ENVOY_BIN)",
            path.display()
        )))
    }
}

/// A test-only module (`test-harness/fixtures/<name>`, crate name == `name`) as `make wasm`
/// builds it: `$SVC_GATEWAY_FIXTURES/<name with _>.wasm`, by default
/// `target/wasm32-wasip1/release/`. Whether it exists is the caller's business.
pub fn fixture_wasm(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SVC_GATEWAY_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("target/wasm32-wasip1/release"),
    };
    dir.join(format!("{}.wasm", name.replace('-', "_")))
}
