//! security-headers: the proxy-wasm glue around
//! [`gateway_core::security_headers`].
//!
//! The root context turns the plugin configuration into an immutable policy; each
//! stream remembers the request path and, on response headers (upstream responses
//! and local replies alike), applies the operations the policy decides. Nothing
//! here makes a decision of its own.
//!
//! Host calls go through `proxy_wasm::hostcalls`, whose `Result`s are handled,
//! rather than the trait helpers that unwrap them, and header values are only ever
//! read as bytes: an upstream sending non-UTF-8 must not trap the VM.

use std::rc::Rc;

use gateway_core::build_info::{BuildInfo, ConfigHash};
use gateway_core::security_headers::{
    path_without_query, HeaderOperation, ResponseDecision, SecurityHeadersPolicy,
};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

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
    metrics: Option<Metrics>,
}

struct SecurityHeadersStream {
    context_id: u32,
    /// `None` only if Envoy created a stream for a plugin whose configuration was
    /// rejected, which it does not do; the stream then passes responses through.
    policy: Option<Rc<SecurityHeadersPolicy>>,
    metrics: Metrics,
    /// `:path` without its query, read only when the policy has route overrides.
    request_path: Option<Vec<u8>>,
}

/// Metric ids; a metric whose definition failed is `None` and silently not counted.
#[derive(Clone, Copy, Debug, Default)]
struct Metrics {
    responses_hardened: Option<u32>,
    headers_set: Option<u32>,
    headers_removed: Option<u32>,
    upstream_values_kept: Option<u32>,
    configs_rejected: Option<u32>,
    info: Option<u32>,
}

// === impl SecurityHeadersRoot ===

impl Context for SecurityHeadersRoot {}

impl RootContext for SecurityHeadersRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        log::info!("#{} {}", self.context_id, BUILD.vm_started());
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let metrics = *self.metrics.get_or_insert_with(Metrics::define);
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(config) => config.unwrap_or_default(),
            Err(status) => {
                log::error!(
                    "#{} {}: cannot read the configuration: {status:?}",
                    self.context_id,
                    BUILD
                );
                Metrics::add(metrics.configs_rejected, 1);
                return false;
            }
        };
        let hash = ConfigHash::of(&config);
        match SecurityHeadersPolicy::from_json(&config) {
            Ok(policy) => {
                log::info!(
                    "#{} {}",
                    self.context_id,
                    BUILD.configured(&hash, &policy.summary())
                );
                self.policy = Some(Rc::new(policy));
                metrics.set_info();
                true
            }
            Err(error) => {
                // Returning false makes Envoy refuse this configuration and keep serving
                // the previous one; the info gauge is left alone for the same reason.
                log::error!(
                    "#{} {}",
                    self.context_id,
                    BUILD.config_rejected(&hash, &error)
                );
                Metrics::add(metrics.configs_rejected, 1);
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always Some: the SDK panics when a root returns None here.
        Some(Box::new(SecurityHeadersStream {
            context_id,
            policy: self.policy.clone(),
            metrics: self.metrics.unwrap_or_default(),
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
            match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path") {
                Ok(path) => self.request_path = path.map(|p| path_without_query(&p).to_vec()),
                Err(status) => log::warn!("#{} cannot read :path: {status:?}", self.context_id),
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.as_deref() else {
            return Action::Continue;
        };
        let response_headers = match hostcalls::get_map_bytes(MapType::HttpResponseHeaders) {
            Ok(headers) => headers,
            Err(status) => {
                log::warn!(
                    "#{} cannot read response headers: {status:?}",
                    self.context_id
                );
                return Action::Continue;
            }
        };
        let decision = policy.decide_response(
            self.request_path.as_deref(),
            response_headers.iter().map(|(name, _)| name.as_bytes()),
        );
        self.apply(&decision);
        Action::Continue
    }
}

impl SecurityHeadersStream {
    fn apply(&self, decision: &ResponseDecision<'_>) {
        for operation in &decision.operations {
            let result = match operation {
                HeaderOperation::Remove(name) => {
                    hostcalls::remove_map_value(MapType::HttpResponseHeaders, name.as_str())
                }
                HeaderOperation::Set(name, value) => hostcalls::set_map_value_bytes(
                    MapType::HttpResponseHeaders,
                    name.as_str(),
                    Some(value.as_bytes()),
                ),
            };
            if let Err(status) = result {
                log::warn!(
                    "#{} cannot apply {operation:?}: {status:?}",
                    self.context_id
                );
            }
        }
        if !decision.operations.is_empty() {
            Metrics::add(self.metrics.responses_hardened, 1);
        }
        Metrics::add(self.metrics.headers_set, decision.headers_set());
        Metrics::add(self.metrics.headers_removed, decision.headers_removed());
        Metrics::add(
            self.metrics.upstream_values_kept,
            decision.upstream_values_kept,
        );
    }
}

// === impl Metrics ===

impl Metrics {
    fn define() -> Self {
        let counter = |name| hostcalls::define_metric(MetricType::Counter, name).ok();
        Self {
            responses_hardened: counter(metric_names::RESPONSES_HARDENED),
            headers_set: counter(metric_names::HEADERS_SET),
            headers_removed: counter(metric_names::HEADERS_REMOVED),
            upstream_values_kept: counter(metric_names::UPSTREAM_VALUES_KEPT),
            configs_rejected: counter(metric_names::CONFIGS_REJECTED),
            info: hostcalls::define_metric(MetricType::Gauge, metric_names::INFO).ok(),
        }
    }

    /// Counters only move forward and Envoy rejects a zero increment, so zero is skipped.
    fn add(metric: Option<u32>, count: usize) {
        if let (Some(id), Ok(delta @ 1..)) = (metric, i64::try_from(count)) {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }

    /// Every worker VM records 1 into the same gauge, so it reads 1 once any worker
    /// runs a valid configuration of this filter.
    fn set_info(&self) {
        if let Some(id) = self.info {
            let _ = hostcalls::record_metric(id, 1);
        }
    }
}
