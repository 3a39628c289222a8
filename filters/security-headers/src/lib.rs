//! security-headers: the proxy-wasm glue around
//! [`gateway_core::security_headers`].
//!
//! The root context turns the plugin configuration into an immutable policy; each
//! stream remembers the request path (only when the policy has route overrides) and, on
//! response headers (upstream responses and local replies alike), reads the response's
//! header map once, lets the policy compute the new one ([`Scope::rewrite`]) and writes it
//! back in one host call. Nothing here makes a decision of its own.
//!
//! Host calls are the expensive part of a filter on Envoy (see `filter_glue::header_pairs`),
//! so a response costs two of them whatever the policy, the counters are kept in wasm
//! memory and flushed from the root's tick, and the module exports only the callbacks it
//! implements (Makefile `WASM_EXPORTS_security-headers`). Every host call goes through
//! `filter_glue::host`, which returns errors instead of panicking, and header values are
//! bytes: an upstream sending non-UTF-8 must not trap the VM.

use std::rc::Rc;

use filter_glue::header_pairs;
use filter_glue::host;
use filter_glue::{BatchedCounter, Counter, Gauge, METRICS_FLUSH_PERIOD};
use gateway_core::build_info::BuildInfo;
use gateway_core::security_headers::{path_without_query, Scope, SecurityHeadersPolicy};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

const BUILD: BuildInfo = BuildInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));

proxy_wasm::main! {{
    // Info, not Trace: every enabled log call crosses into the host, and the filter
    // logs nothing per request unless something is wrong.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(SecurityHeadersRoot { context_id, policy: None, metrics: None })
    });
}}

/// Stat names as the filter defines them. Envoy shows them under the `wasmcustom.`
/// namespace in `/stats` and without any prefix in `/stats/prometheus`.
pub mod metric_names {
    pub const RESPONSES_HARDENED: &str = "security_headers_responses_hardened_total";
    pub const HEADERS_SET: &str = "security_headers_headers_set_total";
    pub const HEADERS_REMOVED: &str = "security_headers_headers_removed_total";
    pub const UPSTREAM_VALUES_KEPT: &str = "security_headers_upstream_values_kept_total";
    pub const CONFIGS_REJECTED: &str = "security_headers_configs_rejected_total";
    pub const INFO: &str = "security_headers_info";
}

struct SecurityHeadersRoot {
    context_id: u32,
    policy: Option<Rc<SecurityHeadersPolicy>>,
    metrics: Option<Rc<Metrics>>,
}

struct SecurityHeadersStream {
    context_id: u32,
    /// `None` only if Envoy created a stream for a plugin whose configuration was
    /// rejected, which it does not do; the stream then passes responses through.
    policy: Option<Rc<SecurityHeadersPolicy>>,
    metrics: Option<Rc<Metrics>>,
    /// `:path` without its query, read only when the policy has route overrides.
    request_path: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Metrics {
    responses_hardened: BatchedCounter,
    headers_set: BatchedCounter,
    headers_removed: BatchedCounter,
    upstream_values_kept: BatchedCounter,
    configs_rejected: Counter,
    info: Gauge,
}

// === impl SecurityHeadersRoot ===

impl Context for SecurityHeadersRoot {}

impl RootContext for SecurityHeadersRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        filter_glue::log_vm_started(&BUILD, self.context_id);
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let metrics = Rc::clone(
            self.metrics
                .get_or_insert_with(|| Rc::new(Metrics::define())),
        );
        let Some(loaded) = filter_glue::load_configuration(
            &BUILD,
            self.context_id,
            metrics.configs_rejected,
            SecurityHeadersPolicy::from_json,
        ) else {
            // Envoy refuses this configuration and keeps serving the previous one.
            return false;
        };
        filter_glue::log_configured(
            &BUILD,
            self.context_id,
            &loaded.hash,
            &loaded.config.summary(),
        );
        self.policy = Some(Rc::new(loaded.config));
        metrics.info.set_info();
        if let Err(status) = hostcalls::set_tick_period(METRICS_FLUSH_PERIOD) {
            // Counting goes on; Envoy just never sees the counts.
            log::warn!(
                "#{} cannot set the tick that flushes metrics: {status:?}",
                self.context_id
            );
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.flush();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always Some: the SDK panics when a root returns None here.
        Some(Box::new(SecurityHeadersStream {
            context_id,
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
            request_path: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// === impl SecurityHeadersStream ===

impl Context for SecurityHeadersStream {}

impl HttpContext for SecurityHeadersStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Request headers are readable only now; the response callback needs the path.
        if self
            .policy
            .as_ref()
            .is_some_and(|policy| policy.needs_request_path())
        {
            match host::header_value(MapType::HttpRequestHeaders, ":path") {
                Ok(path) => self.request_path = path.map(|p| path_without_query(&p).to_vec()),
                Err(status) => log::warn!("#{} cannot read :path: {status}", self.context_id),
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.as_deref() else {
            return Action::Continue;
        };
        let response = match host::header_map(MapType::HttpResponseHeaders) {
            Ok(response) => response,
            Err(error) => {
                log::warn!("#{} cannot read response headers: {error}", self.context_id);
                return Action::Continue;
            }
        };
        let scope = policy.scope_for(self.request_path.as_deref());
        self.harden(scope, &response);
        Action::Continue
    }
}

impl SecurityHeadersStream {
    fn harden(&self, scope: &Scope, response: &header_pairs::HeaderPairs) {
        let rewrite = scope.rewrite(response);
        if rewrite.headers_set == 0 && rewrite.headers_removed == 0 {
            // Nothing changes (a scope that sets nothing, upstream values kept): no write.
            self.count(
                |metrics| &metrics.upstream_values_kept,
                rewrite.upstream_values_kept,
            );
            return;
        }
        let serialized = header_pairs::serialize(&rewrite.headers);
        if let Err(status) = host::set_header_map(MapType::HttpResponseHeaders, &serialized) {
            log::warn!(
                "#{} cannot write the hardened response headers: {status}",
                self.context_id
            );
            return;
        }
        self.count(|metrics| &metrics.responses_hardened, 1);
        self.count(|metrics| &metrics.headers_set, rewrite.headers_set);
        self.count(|metrics| &metrics.headers_removed, rewrite.headers_removed);
        self.count(
            |metrics| &metrics.upstream_values_kept,
            rewrite.upstream_values_kept,
        );
    }

    fn count(&self, counter: impl Fn(&Metrics) -> &BatchedCounter, count: usize) {
        if let Some(metrics) = &self.metrics {
            counter(metrics).add(count);
        }
    }
}

// === impl Metrics ===

impl Metrics {
    fn define() -> Self {
        Self {
            responses_hardened: BatchedCounter::define(metric_names::RESPONSES_HARDENED),
            headers_set: BatchedCounter::define(metric_names::HEADERS_SET),
            headers_removed: BatchedCounter::define(metric_names::HEADERS_REMOVED),
            upstream_values_kept: BatchedCounter::define(metric_names::UPSTREAM_VALUES_KEPT),
            configs_rejected: Counter::define(metric_names::CONFIGS_REJECTED),
            info: Gauge::define(metric_names::INFO),
        }
    }

    fn flush(&self) {
        for counter in [
            &self.responses_hardened,
            &self.headers_set,
            &self.headers_removed,
            &self.upstream_values_kept,
        ] {
            counter.flush();
        }
    }
}
