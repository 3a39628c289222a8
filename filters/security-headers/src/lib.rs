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

use filter_glue::{Counter, Gauge};
use gateway_core::build_info::BuildInfo;
use gateway_core::security_headers::{
    path_without_query, HeaderOperation, ResponseDecision, SecurityHeadersPolicy,
};
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

#[derive(Clone, Copy, Debug, Default)]
struct Metrics {
    responses_hardened: Counter,
    headers_set: Counter,
    headers_removed: Counter,
    upstream_values_kept: Counter,
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
        let metrics = *self.metrics.get_or_insert_with(Metrics::define);
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
        true
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
            self.metrics.responses_hardened.increment();
        }
        self.metrics.headers_set.add(decision.headers_set());
        self.metrics.headers_removed.add(decision.headers_removed());
        self.metrics
            .upstream_values_kept
            .add(decision.upstream_values_kept);
    }
}

// === impl Metrics ===

impl Metrics {
    fn define() -> Self {
        Self {
            responses_hardened: Counter::define(metric_names::RESPONSES_HARDENED),
            headers_set: Counter::define(metric_names::HEADERS_SET),
            headers_removed: Counter::define(metric_names::HEADERS_REMOVED),
            upstream_values_kept: Counter::define(metric_names::UPSTREAM_VALUES_KEPT),
            configs_rejected: Counter::define(metric_names::CONFIGS_REJECTED),
            info: Gauge::define(metric_names::INFO),
        }
    }
}
