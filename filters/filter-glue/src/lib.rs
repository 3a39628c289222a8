//! The thin layer between `proxy-wasm` and [`gateway_core`] that every svc-gateway filter
//! uses: metric ids and the common part of a root context's lifecycle.
//!
//! It exists because each filter had its own copy of the same host-boundary code: reading
//! the plugin configuration, hashing it, logging `configured` / `configuration rejected`,
//! counting rejections, the `<filter>_info` gauge, and counters that must skip zero. The
//! copies had to stay identical (operators and tests read those log lines and metrics), so
//! they live here once. Decisions stay in [`gateway_core`]; what is specific to one filter
//! (its configuration type, its summary, extra checks) stays in that filter.
//!
//! Like the filters, this goes through `proxy_wasm::hostcalls` and handles every `Result`:
//! a failed metric definition or update is not counted rather than trapping the VM.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use gateway_core::build_info::{BuildInfo, ConfigHash};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MetricType};

pub mod header_pairs;
pub mod host;

/// How often a root context hands its [`BatchedCounter`]s to Envoy (from its tick). Far
/// below any Prometheus scrape interval, so no dashboard sees the delay.
pub const METRICS_FLUSH_PERIOD: Duration = Duration::from_secs(1);

/// A counter updated on every call (one host call each); for rare events such as a
/// rejected configuration. `None` when its definition failed, and then it silently counts
/// nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counter(Option<u32>);

/// A counter for per-request events: counted in wasm memory and handed to Envoy in one host
/// call per [`METRICS_FLUSH_PERIOD`] by the root context's tick ([`BatchedCounter::flush`]).
///
/// A host call costs thousands of instructions on Envoy (V8's boundary crossing plus the
/// allocations on both sides), as much as the rest of a filter's per-request work; counting
/// locally takes it off the request path. The price: Envoy's value lags by up to one flush
/// period, and the counts of the last period are lost if the VM is torn down before its
/// next tick.
#[derive(Debug, Default)]
pub struct BatchedCounter {
    id: Option<u32>,
    pending: Cell<u64>,
}

/// A gauge; `None` when its definition failed, and then it silently records nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauge(Option<u32>);

/// A configuration that parsed, and the hash of the bytes it was parsed from.
#[derive(Debug)]
pub struct Loaded<T> {
    pub config: T,
    pub hash: ConfigHash,
}

// === impl Counter ===

impl Counter {
    pub fn define(name: &str) -> Self {
        Self(hostcalls::define_metric(MetricType::Counter, name).ok())
    }

    /// Counters only move forward and Envoy rejects a non-positive increment, so zero is
    /// skipped.
    pub fn add(self, count: usize) {
        if let (Some(id), Some(delta)) = (self.0, positive_delta(count)) {
            let _ = host::increment_metric(id, delta);
        }
    }

    pub fn increment(self) {
        self.add(1);
    }
}

// === impl BatchedCounter ===

impl BatchedCounter {
    pub fn define(name: &str) -> Self {
        Self {
            id: hostcalls::define_metric(MetricType::Counter, name).ok(),
            pending: Cell::new(0),
        }
    }

    pub fn add(&self, count: usize) {
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        self.pending.set(self.pending.get().saturating_add(count));
    }

    pub fn increment(&self) {
        self.add(1);
    }

    /// Hands what was counted since the last flush to Envoy; nothing when nothing was. A
    /// failed host call keeps the counts for the next flush.
    pub fn flush(&self) {
        let pending = self.pending.get();
        let (Some(id), Ok(delta @ 1..)) = (self.id, i64::try_from(pending)) else {
            return;
        };
        if host::increment_metric(id, delta).is_ok() {
            self.pending.set(0);
        }
    }
}

/// The increment Envoy accepts for `count`: positive, or nothing to do.
fn positive_delta(count: usize) -> Option<i64> {
    match i64::try_from(count) {
        Ok(delta @ 1..) => Some(delta),
        _ => None,
    }
}

// === impl Gauge ===

impl Gauge {
    pub fn define(name: &str) -> Self {
        Self(hostcalls::define_metric(MetricType::Gauge, name).ok())
    }

    pub fn record(self, value: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// For a `<filter>_info` gauge, once a configuration is accepted: every worker VM
    /// records 1 into the same gauge, so it reads 1 once any worker runs a valid
    /// configuration of the filter. A rejected configuration leaves it alone, since Envoy
    /// keeps serving the previous one.
    pub fn set_info(self) {
        self.record(1);
    }
}

// === lifecycle ===

/// `on_vm_start`'s log line.
pub fn log_vm_started(build: &BuildInfo, context_id: u32) {
    log::info!("#{context_id} {}", build.vm_started());
}

/// The common part of `on_configure`: reads the plugin configuration, hashes it and parses
/// it with `parse`. On failure (unreadable or unparsable) it logs the error, counts it in
/// `configs_rejected` and returns `None`; `on_configure` then returns false, which makes
/// Envoy refuse this configuration and keep serving the previous one.
///
/// On success nothing is logged yet: the filter builds its state (and runs any extra check,
/// see [`reject`]), then calls [`log_configured`] and [`Gauge::set_info`].
pub fn load_configuration<T, E: fmt::Display>(
    build: &BuildInfo,
    context_id: u32,
    configs_rejected: Counter,
    parse: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Option<Loaded<T>> {
    let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(bytes) => bytes.unwrap_or_default(),
        Err(status) => {
            log::error!("#{context_id} {build}: cannot read the configuration: {status:?}");
            configs_rejected.increment();
            return None;
        }
    };
    let hash = ConfigHash::of(&bytes);
    match parse(&bytes) {
        Ok(config) => Some(Loaded { config, hash }),
        Err(error) => {
            reject(build, context_id, &hash, &error, configs_rejected);
            None
        }
    }
}

/// Logs and counts a configuration refused by a check after parsing (the caller's
/// `on_configure` then returns false).
pub fn reject(
    build: &BuildInfo,
    context_id: u32,
    hash: &ConfigHash,
    problem: &dyn fmt::Display,
    configs_rejected: Counter,
) {
    log::error!("#{context_id} {}", build.config_rejected(hash, problem));
    configs_rejected.increment();
}

/// The log line of an accepted configuration: its hash and the filter's `summary` of it.
pub fn log_configured(
    build: &BuildInfo,
    context_id: u32,
    hash: &ConfigHash,
    summary: &dyn fmt::Display,
) {
    log::info!("#{context_id} {}", build.configured(hash, summary));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positive_counts_become_increments() {
        assert_eq!(positive_delta(0), None);
        assert_eq!(positive_delta(1), Some(1));
        assert_eq!(positive_delta(7), Some(7));
        assert_eq!(positive_delta(usize::MAX), None);
    }
}
