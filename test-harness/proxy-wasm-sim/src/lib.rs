//! proxy-wasm host simulator.
