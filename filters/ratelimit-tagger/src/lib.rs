//! ratelimit-tagger: the proxy-wasm glue around [`gateway_core::ratelimit`].
//!
//! On request headers the stream strips every client-sent descriptor header, gathers the
//! request facts (method, path, every `x-forwarded-for` line, `source.address`, the verified
//! subject jwt-authz left in filter state), lets [`tag_request`] decide, and either sets the
//! descriptor headers Envoy's `ratelimit` filter reads or answers 400 (`onMissingIdentity:
//! reject`). On response headers it turns Envoy's draft-03 `x-ratelimit-*` headers into the
//! draft-09 `RateLimit-Policy` / `RateLimit` fields and `Retry-After`, and removes the draft-03
//! ones. Nothing here makes a decision of its own.
//!
//! Host calls go through `proxy_wasm::hostcalls`, whose `Result`s are handled, and header
//! values are read as bytes: a client sending non-UTF-8 must not trap the VM.

use std::cell::RefCell;
use std::rc::Rc;

use filter_glue::{Counter, Gauge};
use gateway_core::build_info::BuildInfo;
use gateway_core::error_body::{self, ErrorBody};
use gateway_core::ratelimit::response_headers::{
    RATELIMIT_HEADER, RATELIMIT_POLICY_HEADER, RETRY_AFTER_HEADER,
};
use gateway_core::ratelimit::{
    tag_request, RateLimitReport, RequestFacts, RequestTags, TagDecision, TaggerConfig,
    MISSING_IDENTITY_STATUS,
};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

const BUILD: BuildInfo = BuildInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));

/// Draft-03 headers Envoy's `ratelimit` filter writes with
/// `enable_x_ratelimit_headers: DRAFT_VERSION_03`; translated, then removed.
pub const ENVOY_LIMIT_HEADER: &str = "x-ratelimit-limit";
pub const ENVOY_REMAINING_HEADER: &str = "x-ratelimit-remaining";
pub const ENVOY_RESET_HEADER: &str = "x-ratelimit-reset";

/// Status Envoy's `ratelimit` and `local_ratelimit` filters answer when a limit is hit.
pub const TOO_MANY_REQUESTS: u32 = 429;

/// Machine code of the 400 answered under `onMissingIdentity: reject`.
pub const CLIENT_ADDRESS_UNKNOWN: &str = "client_address_unknown";

proxy_wasm::main! {{
    // Info, not Trace: every enabled log call crosses into the host, and the filter logs
    // nothing per request at Info unless something is wrong.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(TaggerRoot { context_id, tagger: None, metrics: None })
    });
}}

/// Stat names as the filter defines them. Envoy shows them under the `wasmcustom.` namespace
/// in `/stats` and without any prefix in `/stats/prometheus`. A `.<label>.<value>` suffix
/// carries a dimension; the README gives the `stats_tags` regexes that turn it into a tag.
pub mod metric_names {
    pub const INFO: &str = "ratelimit_tagger_info";
    pub const CONFIGS_REJECTED: &str = "ratelimit_tagger_configs_rejected_total";
    /// Followed by `.class.<class name>`: requests tagged, by route class.
    pub const DESCRIPTORS_EMITTED: &str = "ratelimit_tagger_descriptors_emitted_total";
    /// Followed by `.reason.<reason>`: requests keyed by a fallback (shared client bucket,
    /// anonymous despite a handed-over subject, default class for a non-canonical path).
    pub const IDENTITY_FALLBACKS: &str = "ratelimit_tagger_identity_fallbacks_total";
    /// Client-sent descriptor header lines removed before tagging.
    pub const SPOOFED_HEADERS_STRIPPED: &str = "ratelimit_tagger_spoofed_headers_stripped_total";
    /// Requests answered 400 because no client address could be derived.
    pub const REQUESTS_REJECTED: &str = "ratelimit_tagger_requests_rejected_total";
    /// 429 responses seen on the way out (global limit or local backstop).
    pub const RATE_LIMITED_RESPONSES: &str = "ratelimit_tagger_rate_limited_responses_total";
    /// Responses whose `x-ratelimit-*` headers could not be translated.
    pub const UNTRANSLATED_RESPONSES: &str = "ratelimit_tagger_untranslated_responses_total";
}

/// Label of the fallback counted when the filter-state read itself fails (not a core
/// decision: the host answered with an error, so the request is keyed as anonymous).
const SUBJECT_UNREADABLE: &str = "subject_property_unreadable";

struct TaggerRoot {
    context_id: u32,
    tagger: Option<Rc<Tagger>>,
    metrics: Option<Rc<Metrics>>,
}

/// One validated configuration and what depends on it.
struct Tagger {
    config: TaggerConfig,
    /// `["filter_state", "wasm.<verifiedSubjectProperty>"]`, see the README.
    subject_property_path: [String; 2],
    /// Per-class counters, in `RouteTable::class_names` order.
    descriptors_by_class: Vec<(String, Counter)>,
}

struct TaggerStream {
    context_id: u32,
    /// `None` only if Envoy created a stream for a plugin whose configuration was rejected,
    /// which it does not do; the stream then passes everything through untouched.
    tagger: Option<Rc<Tagger>>,
    metrics: Option<Rc<Metrics>>,
}

struct Metrics {
    info: Gauge,
    configs_rejected: Counter,
    spoofed_headers_stripped: Counter,
    requests_rejected: Counter,
    rate_limited_responses: Counter,
    untranslated_responses: Counter,
    /// Defined on first use: the reasons are core labels, and defining a name per request
    /// would grow Envoy's metric table (every definition gets a new id).
    fallbacks_by_reason: RefCell<Vec<(&'static str, Counter)>>,
}

// === impl TaggerRoot ===

impl Context for TaggerRoot {}

impl RootContext for TaggerRoot {
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
            TaggerConfig::from_json,
        ) else {
            // Envoy refuses this configuration and keeps serving the previous one.
            return false;
        };
        filter_glue::log_configured(
            &BUILD,
            self.context_id,
            &loaded.hash,
            &summary(&loaded.config),
        );
        self.tagger = Some(Rc::new(Tagger::new(loaded.config)));
        metrics.info.set_info();
        true
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always Some: the SDK panics when a root returns None here.
        Some(Box::new(TaggerStream {
            context_id,
            tagger: self.tagger.clone(),
            metrics: self.metrics.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// What the configured log line says besides the hash.
fn summary(config: &TaggerConfig) -> String {
    let client_ip = config.client_ip();
    let hops = client_ip
        .trusted_hops()
        .map_or_else(|| "-".to_owned(), |h| h.to_string());
    format!(
        "trusted hops {hops}, trusted cidrs {}, ipv4 /{}, ipv6 /{}, {} route rules, classes {}, \
         on missing identity {:?}",
        client_ip.trusted_cidrs().len(),
        client_ip.ipv4_prefix_len(),
        client_ip.ipv6_prefix_len(),
        config.routes().rules().len(),
        config.routes().class_names().join("/"),
        config.on_missing_identity(),
    )
}

// === impl Tagger ===

impl Tagger {
    fn new(config: TaggerConfig) -> Self {
        let descriptors_by_class = config
            .routes()
            .class_names()
            .into_iter()
            .map(|class| {
                let name = format!("{}.class.{class}", metric_names::DESCRIPTORS_EMITTED);
                (class.to_owned(), Counter::define(&name))
            })
            .collect();
        // jwt-authz writes `set_property([<name>])`, which Envoy stores as the filter-state
        // object `wasm.<name>`; reading it through `filter_state` names that object exactly.
        let subject_property_path = [
            "filter_state".to_owned(),
            format!("wasm.{}", config.verified_subject_property()),
        ];
        Self {
            config,
            subject_property_path,
            descriptors_by_class,
        }
    }

    fn class_counter(&self, class: &str) -> Counter {
        self.descriptors_by_class
            .iter()
            .find(|(name, _)| name == class)
            .map(|(_, counter)| *counter)
            .unwrap_or_default()
    }
}

// === impl TaggerStream ===

impl Context for TaggerStream {}

impl HttpContext for TaggerStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(tagger) = self.tagger.clone() else {
            return Action::Continue;
        };
        let request_headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(status) => {
                log::warn!(
                    "#{} cannot read request headers: {status:?}",
                    self.context_id
                );
                Vec::new()
            }
        };
        let names = tagger.config.descriptor_headers();

        // Strip first, whatever the decision: a client copy must never reach the ratelimit
        // filter or an upstream.
        let spoofed = request_headers
            .iter()
            .filter(|(name, _)| names.is_descriptor_header(name))
            .count();
        if spoofed > 0 {
            for name in names.to_strip() {
                self.remove_request_header(name);
            }
            self.count(|m| m.spoofed_headers_stripped, spoofed);
        }

        let header = |wanted: &str| {
            request_headers
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| String::from_utf8_lossy(value))
        };
        let method = header(":method").unwrap_or_default();
        let path = header(":path").unwrap_or_default();
        // Every line, in arrival order; a non-UTF-8 line becomes text the parser rejects as
        // garbage, which is what it is.
        let forwarded_for: Vec<_> = request_headers
            .iter()
            .filter(|(name, _)| name == "x-forwarded-for")
            .map(|(_, value)| String::from_utf8_lossy(value))
            .collect();
        let forwarded_for: Vec<&str> = forwarded_for.iter().map(AsRef::as_ref).collect();
        let peer_address = self.read_property(&["source", "address"]);
        let peer_address = peer_address.as_deref().map(String::from_utf8_lossy);
        let verified_subject = self.read_verified_subject(&tagger);

        let facts = RequestFacts {
            method: &method,
            path: &path,
            forwarded_for: &forwarded_for,
            peer_address: peer_address.as_deref(),
            verified_subject: verified_subject.as_deref(),
        };
        match tag_request(&tagger.config, &facts) {
            TagDecision::Tag(tags) => {
                self.apply_tags(&tagger, &tags);
                Action::Continue
            }
            TagDecision::Reject(reason) => {
                log::debug!(
                    "#{} no client address ({reason}): answering {MISSING_IDENTITY_STATUS}",
                    self.context_id
                );
                self.count_fallback(reason.metric_label());
                self.count(|m| m.requests_rejected, 1);
                let body = ErrorBody::new(
                    CLIENT_ADDRESS_UNKNOWN,
                    "the client address could not be determined",
                )
                .render();
                if let Err(status) = hostcalls::send_http_response(
                    u32::from(MISSING_IDENTITY_STATUS),
                    vec![("content-type", error_body::CONTENT_TYPE)],
                    Some(body.as_bytes()),
                ) {
                    log::warn!("#{} cannot answer: {status:?}", self.context_id);
                }
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.tagger.is_none() {
            return Action::Continue;
        }
        let status = self
            .response_header(":status")
            .and_then(|s| s.parse::<u32>().ok());
        if status == Some(TOO_MANY_REQUESTS) {
            self.count(|m| m.rate_limited_responses, 1);
        }
        let limit = self.response_header(ENVOY_LIMIT_HEADER);
        let remaining = self.response_header(ENVOY_REMAINING_HEADER);
        let reset = self.response_header(ENVOY_RESET_HEADER);
        if limit.is_none() && remaining.is_none() && reset.is_none() {
            // Not a limited route (or the service did not answer): nothing to translate.
            return Action::Continue;
        }
        let report = match (&limit, &remaining, &reset) {
            (Some(limit), Some(remaining), Some(reset)) => {
                RateLimitReport::from_envoy_headers(limit, remaining, reset)
                    .map_err(|error| error.to_string())
            }
            _ => Err("an x-ratelimit-* header is missing".to_owned()),
        };
        match report {
            Ok(report) => self.write_report(&report, status == Some(TOO_MANY_REQUESTS)),
            Err(error) => {
                log::debug!(
                    "#{} cannot translate x-ratelimit-* headers: {error}",
                    self.context_id
                );
                self.count(|m| m.untranslated_responses, 1);
            }
        }
        // The draft-03 names go either way: clients get one, current, set of fields.
        for name in [
            ENVOY_LIMIT_HEADER,
            ENVOY_REMAINING_HEADER,
            ENVOY_RESET_HEADER,
        ] {
            if let Err(status) = hostcalls::remove_map_value(MapType::HttpResponseHeaders, name) {
                log::warn!("#{} cannot remove {name}: {status:?}", self.context_id);
            }
        }
        Action::Continue
    }
}

impl TaggerStream {
    fn apply_tags(&self, tagger: &Tagger, tags: &RequestTags<'_>) {
        for (name, value) in tags.headers_to_set(tagger.config.descriptor_headers()) {
            if let Err(status) = hostcalls::set_map_value_bytes(
                MapType::HttpRequestHeaders,
                name,
                Some(value.as_bytes()),
            ) {
                log::warn!("#{} cannot set {name}: {status:?}", self.context_id);
            }
        }
        let class = tags.classification.class.name();
        tagger.class_counter(class).increment();
        for label in tags.fallback_labels() {
            self.count_fallback(label);
        }
        if let Some(error) = &tags.subject_error {
            log::debug!(
                "#{} verified subject not used ({error}): keyed as anonymous",
                self.context_id
            );
        }
    }

    fn write_report(&self, report: &RateLimitReport, rate_limited: bool) {
        let mut fields = vec![
            (RATELIMIT_POLICY_HEADER, report.policy_header()),
            (RATELIMIT_HEADER, report.ratelimit_header()),
        ];
        if rate_limited {
            fields.push((RETRY_AFTER_HEADER, report.retry_after_header()));
        }
        for (name, value) in fields {
            let Some(value) = value else { continue };
            if let Err(status) = hostcalls::set_map_value_bytes(
                MapType::HttpResponseHeaders,
                name,
                Some(value.as_bytes()),
            ) {
                log::warn!("#{} cannot set {name}: {status:?}", self.context_id);
            }
        }
    }

    /// The verified subject, or `None` when the request is anonymous. A read error is not a
    /// reason to fail the request: it is keyed by IP and the fallback counted.
    fn read_verified_subject(&self, tagger: &Tagger) -> Option<Vec<u8>> {
        let [root, key] = &tagger.subject_property_path;
        match hostcalls::get_property(vec![root.as_str(), key.as_str()]) {
            Ok(value) => value,
            Err(status) => {
                log::debug!(
                    "#{} cannot read {key}: {status:?}: keyed as anonymous",
                    self.context_id
                );
                self.count_fallback(SUBJECT_UNREADABLE);
                None
            }
        }
    }

    fn read_property(&self, path: &[&str]) -> Option<Vec<u8>> {
        match hostcalls::get_property(path.to_vec()) {
            Ok(value) => value,
            Err(status) => {
                log::debug!(
                    "#{} cannot read {}: {status:?}",
                    self.context_id,
                    path.join(".")
                );
                None
            }
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        match hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name) {
            Ok(value) => value.map(|v| String::from_utf8_lossy(&v).into_owned()),
            Err(status) => {
                log::debug!("#{} cannot read {name}: {status:?}", self.context_id);
                None
            }
        }
    }

    fn remove_request_header(&self, name: &str) {
        if let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
            log::warn!("#{} cannot remove {name}: {status:?}", self.context_id);
        }
    }

    fn count(&self, metric: impl Fn(&Metrics) -> Counter, count: usize) {
        if let Some(metrics) = &self.metrics {
            metric(metrics).add(count);
        }
    }

    fn count_fallback(&self, reason: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.fallback_counter(reason).increment();
        }
    }
}

// === impl Metrics ===

impl Metrics {
    fn define() -> Self {
        Self {
            info: Gauge::define(metric_names::INFO),
            configs_rejected: Counter::define(metric_names::CONFIGS_REJECTED),
            spoofed_headers_stripped: Counter::define(metric_names::SPOOFED_HEADERS_STRIPPED),
            requests_rejected: Counter::define(metric_names::REQUESTS_REJECTED),
            rate_limited_responses: Counter::define(metric_names::RATE_LIMITED_RESPONSES),
            untranslated_responses: Counter::define(metric_names::UNTRANSLATED_RESPONSES),
            fallbacks_by_reason: RefCell::new(Vec::new()),
        }
    }

    fn fallback_counter(&self, reason: &'static str) -> Counter {
        let Ok(mut known) = self.fallbacks_by_reason.try_borrow_mut() else {
            return Counter::default();
        };
        if let Some((_, counter)) = known.iter().find(|(label, _)| *label == reason) {
            return *counter;
        }
        let name = format!("{}.reason.{reason}", metric_names::IDENTITY_FALLBACKS);
        let counter = Counter::define(&name);
        known.push((reason, counter));
        counter
    }
}
