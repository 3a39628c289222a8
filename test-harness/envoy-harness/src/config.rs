//! Pieces of Envoy configuration that every template repeats.
//!
//! Each helper returns a [`serde_json::Value`]; [`inline`] turns one into a single line of
//! JSON, which is also valid YAML (a flow mapping), so it drops into a template at any
//! indentation: `http_filters: [{{var:WASM}}, {{var:ROUTER}}]` or `- {{var:WASM}}`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::Result;
use crate::paths;

/// What Envoy does when the plugin's VM fails at runtime. Never fail open at the edge: a
/// broken security filter must not turn into an unfiltered gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Every request gets a 503 until the configuration is reloaded.
    FailClosed,
    /// The VM is reloaded; requests that hit the failure get a 503.
    FailReload,
}

impl FailurePolicy {
    fn as_envoy(self) -> &'static str {
        match self {
            Self::FailClosed => "FAIL_CLOSED",
            Self::FailReload => "FAIL_RELOAD",
        }
    }
}

/// An `envoy.filters.http.wasm` filter running one of our modules in V8.
#[derive(Clone, Debug)]
pub struct WasmFilter {
    plugin_name: String,
    vm_id: String,
    root_id: String,
    wasm_path: PathBuf,
    configuration_json: String,
    failure_policy: FailurePolicy,
}

impl WasmFilter {
    /// `plugin_name` is what Envoy prints in front of the module's log lines; it is also
    /// the default `vm_id`. The configuration goes to the module verbatim (as a
    /// `google.protobuf.StringValue`), so a test can hand it malformed JSON on purpose.
    pub fn new(
        plugin_name: &str,
        wasm_path: impl Into<PathBuf>,
        configuration_json: impl Into<String>,
    ) -> Self {
        Self {
            plugin_name: plugin_name.to_owned(),
            vm_id: plugin_name.to_owned(),
            root_id: String::new(),
            wasm_path: wasm_path.into(),
            configuration_json: configuration_json.into(),
            failure_policy: FailurePolicy::FailClosed,
        }
    }

    /// `dist/<filter>.wasm` (built by `make wasm`) with plugin name and vm_id `filter`.
    pub fn from_dist(filter: &str, configuration_json: impl Into<String>) -> Result<Self> {
        Ok(Self::new(
            filter,
            paths::dist_wasm(filter)?,
            configuration_json,
        ))
    }

    /// Filters with the same vm_id and module share one VM per worker.
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        vm_id.clone_into(&mut self.vm_id);
        self
    }

    pub fn root_id(mut self, root_id: &str) -> Self {
        root_id.clone_into(&mut self.root_id);
        self
    }

    pub fn failure_policy(mut self, failure_policy: FailurePolicy) -> Self {
        self.failure_policy = failure_policy;
        self
    }

    pub fn configuration_json(&self) -> &str {
        &self.configuration_json
    }

    pub fn wasm_path(&self) -> &Path {
        &self.wasm_path
    }

    pub fn to_value(&self) -> Value {
        json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": self.plugin_name,
                    "root_id": self.root_id,
                    "vm_config": {
                        "vm_id": self.vm_id,
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": self.wasm_path.display().to_string() } },
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": self.configuration_json,
                    },
                    "failure_policy": self.failure_policy.as_envoy(),
                },
            },
        })
    }
}

/// The terminal `router` filter.
pub fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        },
    })
}

/// A fault filter that answers with a local reply when the request carries
/// `x-envoy-fault-abort-request: <status>`, and does nothing otherwise: a filter later in
/// the chain than ours that sends its own response, on demand.
pub fn fault_abort_on_request_header() -> Value {
    json!({
        "name": "envoy.filters.http.fault",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "abort": {
                "header_abort": {},
                "percentage": { "numerator": 100, "denominator": "HUNDRED" },
            },
        },
    })
}

/// `local_ratelimit` with no bucket of its own: it only limits routes that carry
/// [`local_ratelimit_route_deny_all`] in `typed_per_filter_config`.
pub fn local_ratelimit(stat_prefix: &str) -> Value {
    json!({
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": stat_prefix,
        },
    })
}

/// Per-route `local_ratelimit` config whose bucket holds one token refilled once an hour:
/// the first request passes, every later one gets Envoy's local 429.
pub fn local_ratelimit_route_deny_all(stat_prefix: &str) -> Value {
    let all = json!({ "default_value": { "numerator": 100, "denominator": "HUNDRED" } });
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": stat_prefix,
        "token_bucket": { "max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "3600s" },
        "filter_enabled": all,
        "filter_enforced": all,
    })
}

/// A STATIC cluster of one plain-HTTP/1.1 endpoint on 127.0.0.1.
pub fn loopback_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": "127.0.0.1", "port_value": port },
            } } }] }],
        },
    })
}

/// One line of JSON: valid YAML at any indentation.
pub fn inline(value: &Value) -> String {
    value.to_string()
}

/// `[a, b, ...]` as one line, for `http_filters: {{var:FILTERS}}`.
pub fn inline_list(values: &[Value]) -> String {
    Value::Array(values.to_vec()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_filter_passes_configuration_verbatim_and_fails_closed() {
        let filter = WasmFilter::new(
            "security-headers",
            "/x/security-headers.wasm",
            "{\"a\":\r\n",
        );
        let value = filter.to_value();
        let config = &value["typed_config"]["config"];
        assert_eq!(config["configuration"]["value"], "{\"a\":\r\n");
        assert_eq!(config["failure_policy"], "FAIL_CLOSED");
        assert_eq!(config["vm_config"]["vm_id"], "security-headers");
        assert_eq!(
            config["vm_config"]["code"]["local"]["filename"],
            "/x/security-headers.wasm"
        );
        // One line, so it can be placed into YAML at any indentation.
        assert!(!inline(&value).contains('\n'));
    }
}
