//! One wasmtime `Engine` per process and a per-path cache of compiled modules: cranelift
//! compilation of a filter takes about a second, tests create hundreds of Hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use wasmtime::{Config, Engine, Module};

use crate::error::SimError;

fn engine() -> Result<&'static Engine, SimError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            // Fuel makes runaway guest loops a trap instead of a hung test.
            config.consume_fuel(true);
            Engine::new(&config).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| SimError::Instantiate(format!("wasmtime engine: {e}")))
}

type CacheKey = (PathBuf, Option<SystemTime>, u64);
type CacheSlot = Arc<OnceLock<Result<Module, String>>>;

/// Compiles `path` once per process (re-compiles if the file changed on disk).
pub(crate) fn load_module(path: &Path) -> Result<Module, SimError> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, CacheSlot>>> = OnceLock::new();
    let engine = engine()?;
    let canonical = path
        .canonicalize()
        .map_err(|e| SimError::Instantiate(format!("{}: {e}", path.display())))?;
    let metadata = std::fs::metadata(&canonical)
        .map_err(|e| SimError::Instantiate(format!("{}: {e}", canonical.display())))?;
    let key = (canonical.clone(), metadata.modified().ok(), metadata.len());
    let slot = {
        let mut cache = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(cache.entry(key).or_default())
    };
    // Compile outside the map lock so different modules compile in parallel; the slot's
    // OnceLock makes concurrent tests wait for one compilation of the same module.
    slot.get_or_init(|| {
        Module::from_file(engine, &canonical).map_err(|e| format!("{}: {e:?}", canonical.display()))
    })
    .clone()
    .map_err(SimError::Instantiate)
}
