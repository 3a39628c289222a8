//! ratelimit-tagger: the proxy-wasm glue around [`gateway_core::ratelimit`].
//!
//! On request headers the stream reads the whole request map once, gathers the request
//! facts (method, path, every `x-forwarded-for` line, `source.address`, the verified subject
//! jwt-authz left in filter state), lets [`tag_request`] decide, and either writes the map
//! back once -- every client-sent descriptor header removed, the descriptor headers Envoy's
//! `ratelimit` filter reads added -- or answers 400 (`onMissingIdentity: reject`). On
//! response headers it reads the map once and, when Envoy's `ratelimit` filter left draft-03
//! `x-ratelimit-*` headers, writes it back with the draft-09 `RateLimit-Policy` / `RateLimit`
//! fields and `Retry-After` in their place. Nothing here makes a decision of its own.
//!
//! Host calls are the expensive part of a filter on Envoy (see `filter_glue::header_pairs`),
//! so a request costs two map reads, two property reads and one or two map writes, the
//! counters are batched to the root's tick, and the module exports only the callbacks it
//! implements. Every host call goes through `filter_glue::host`, which returns errors
//! instead of panicking, and header values are bytes: a client sending non-UTF-8 must not
//! trap the VM.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use filter_glue::header_pairs::{self, HeaderPairs};
use filter_glue::host;
use filter_glue::{BatchedCounter, Counter, Gauge, METRICS_FLUSH_PERIOD};
use gateway_core::build_info::BuildInfo;
use gateway_core::error_body::{self, ErrorBody};
use gateway_core::ratelimit::response_headers::{
    RATELIMIT_HEADER, RATELIMIT_POLICY_HEADER, RETRY_AFTER_HEADER,
};
use gateway_core::ratelimit::{
    tag_request, DescriptorHeaderNames, RateLimitReport, RequestFacts, RequestTags, TagDecision,
    TaggerConfig, MISSING_IDENTITY_STATUS,
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
    descriptors_by_class: Vec<(String, BatchedCounter)>,
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
    spoofed_headers_stripped: BatchedCounter,
    requests_rejected: BatchedCounter,
    rate_limited_responses: BatchedCounter,
    untranslated_responses: BatchedCounter,
    /// Defined on first use: the reasons are core labels, and defining a name per request
    /// would grow Envoy's metric table (every definition gets a new id).
    fallbacks_by_reason: RefCell<Vec<(&'static str, Rc<BatchedCounter>)>>,
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
        // Counters of the previous configuration go to Envoy before they are dropped.
        if let Some(previous) = &self.tagger {
            previous.flush();
        }
        self.tagger = Some(Rc::new(Tagger::new(loaded.config)));
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
        if let Some(tagger) = &self.tagger {
            tagger.flush();
        }
        if let Some(metrics) = &self.metrics {
            metrics.flush();
        }
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
                (class.to_owned(), BatchedCounter::define(&name))
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

    fn count_class(&self, class: &str) {
        if let Some((_, counter)) = self
            .descriptors_by_class
            .iter()
            .find(|(name, _)| name == class)
        {
            counter.increment();
        }
    }

    fn flush(&self) {
        for (_, counter) in &self.descriptors_by_class {
            counter.flush();
        }
    }
}

// === impl TaggerStream ===

impl Context for TaggerStream {}

impl HttpContext for TaggerStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(tagger) = self.tagger.clone() else {
            return Action::Continue;
        };
        let request = match host::header_map(MapType::HttpRequestHeaders) {
            Ok(request) => request,
            Err(error) => {
                // Nothing to tag from: the ratelimit filter finds no descriptor headers and
                // the local backstop still applies, but a client's copies must not survive.
                log::warn!("#{} cannot read request headers: {error}", self.context_id);
                return self.strip_or_refuse(&tagger);
            }
        };
        let names = tagger.config.descriptor_headers();
        let spoofed = request
            .iter()
            .filter(|(name, _)| is_descriptor_header(names, name))
            .count();
        self.count(|m| &m.spoofed_headers_stripped, spoofed);

        // Lossy: a non-UTF-8 byte becomes U+FFFD, which no method, path rule or address
        // accepts, so such a request is keyed as the garbage it is rather than trapped on.
        let method = lossy(request.get(b":method"));
        let path = lossy(request.get(b":path"));
        let forwarded_for: Vec<Cow<'_, str>> = request
            .get_all(b"x-forwarded-for")
            .map(String::from_utf8_lossy)
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
            TagDecision::Tag(tags) => self.apply_tags(&tagger, &request, &tags),
            TagDecision::Reject(reason) => {
                log::debug!(
                    "#{} no client address ({reason}): answering {MISSING_IDENTITY_STATUS}",
                    self.context_id
                );
                self.count_fallback(reason.metric_label());
                self.count(|m| &m.requests_rejected, 1);
                // The request goes no further, but a client's copies are removed all the
                // same: nothing after this filter (access logs included) ever sees them.
                if spoofed > 0 {
                    for name in names.to_strip() {
                        if let Err(status) = host::remove_header(MapType::HttpRequestHeaders, name)
                        {
                            log::warn!("#{} cannot remove {name}: {status}", self.context_id);
                        }
                    }
                }
                self.answer(
                    u32::from(MISSING_IDENTITY_STATUS),
                    "ratelimit_tagger_client_address_unknown",
                    &ErrorBody::new(
                        CLIENT_ADDRESS_UNKNOWN,
                        "the client address could not be determined",
                    ),
                )
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.tagger.is_none() {
            return Action::Continue;
        }
        let response = match host::header_map(MapType::HttpResponseHeaders) {
            Ok(response) => response,
            Err(error) => {
                log::warn!("#{} cannot read response headers: {error}", self.context_id);
                return Action::Continue;
            }
        };
        let rate_limited = response
            .get(b":status")
            .and_then(|status| std::str::from_utf8(status).ok())
            .and_then(|status| status.parse::<u32>().ok())
            == Some(TOO_MANY_REQUESTS);
        if rate_limited {
            self.count(|m| &m.rate_limited_responses, 1);
        }
        let limit = response.get(ENVOY_LIMIT_HEADER.as_bytes());
        let remaining = response.get(ENVOY_REMAINING_HEADER.as_bytes());
        let reset = response.get(ENVOY_RESET_HEADER.as_bytes());
        if limit.is_none() && remaining.is_none() && reset.is_none() {
            // Not a limited route (or the service did not answer): nothing to translate.
            return Action::Continue;
        }
        let report = match (limit, remaining, reset) {
            (Some(limit), Some(remaining), Some(reset)) => RateLimitReport::from_envoy_headers(
                &String::from_utf8_lossy(limit),
                &String::from_utf8_lossy(remaining),
                &String::from_utf8_lossy(reset),
            )
            .map_err(|error| error.to_string()),
            _ => Err("an x-ratelimit-* header is missing".to_owned()),
        };
        let fields = match report {
            Ok(report) => report_fields(&report, rate_limited),
            Err(error) => {
                log::debug!(
                    "#{} cannot translate x-ratelimit-* headers: {error}",
                    self.context_id
                );
                self.count(|m| &m.untranslated_responses, 1);
                Vec::new()
            }
        };
        // The draft-03 names go either way: clients get one, current, set of fields, and
        // ours replace any an upstream sent.
        let replaced = |name: &[u8]| {
            [
                ENVOY_LIMIT_HEADER,
                ENVOY_REMAINING_HEADER,
                ENVOY_RESET_HEADER,
            ]
            .iter()
            .any(|draft03| draft03.as_bytes().eq_ignore_ascii_case(name))
                || fields
                    .iter()
                    .any(|(field, _)| field.as_bytes().eq_ignore_ascii_case(name))
        };
        let fields = fields
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes()));
        if let Err(status) = host::set_header_map(
            MapType::HttpResponseHeaders,
            &header_pairs::replace(&response, replaced, fields),
        ) {
            log::warn!(
                "#{} cannot write the rate-limit fields: {status}",
                self.context_id
            );
        }
        Action::Continue
    }
}

/// The draft-09 fields of a report (`Retry-After` only on a 429).
fn report_fields(report: &RateLimitReport, rate_limited: bool) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        (RATELIMIT_POLICY_HEADER, report.policy_header()),
        (RATELIMIT_HEADER, report.ratelimit_header()),
    ];
    if rate_limited {
        fields.push((RETRY_AFTER_HEADER, report.retry_after_header()));
    }
    fields
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| (name, value)))
        .collect()
}

fn is_descriptor_header(names: &DescriptorHeaderNames, name: &[u8]) -> bool {
    names
        .to_strip()
        .iter()
        .any(|ours| ours.as_bytes().eq_ignore_ascii_case(name))
}

fn lossy(value: Option<&[u8]>) -> Cow<'_, str> {
    value.map_or(Cow::Borrowed(""), String::from_utf8_lossy)
}

impl TaggerStream {
    /// Writes the request map back once: the client's entries minus every copy of our
    /// descriptor headers, then ours.
    fn apply_tags(&self, tagger: &Tagger, request: &HeaderPairs, tags: &RequestTags<'_>) -> Action {
        let names = tagger.config.descriptor_headers();
        let descriptors = tags.headers_to_set(names);
        if !request
            .iter()
            .any(|(name, _)| is_descriptor_header(names, name))
        {
            // The usual case: nothing to strip. A request-header write makes Envoy clear its
            // route cache and costs a host call either way, and rewriting the whole map costs
            // more than the three or four adds (callgrind through Envoy: 37k instructions
            // against 21k).
            for (name, value) in &descriptors {
                if let Err(status) =
                    host::add_header(MapType::HttpRequestHeaders, name, value.as_bytes())
                {
                    log::warn!("#{} cannot add {name}: {status}", self.context_id);
                    return self.strip_or_refuse(tagger);
                }
            }
            return self.tagged(tagger, tags);
        }
        let ours = descriptors
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes()));
        if let Err(status) = host::set_header_map(
            MapType::HttpRequestHeaders,
            &header_pairs::replace(request, |name| is_descriptor_header(names, name), ours),
        ) {
            // This write was also what removed the client's copies.
            log::warn!(
                "#{} cannot write the descriptor headers: {status}",
                self.context_id
            );
            return self.strip_or_refuse(tagger);
        }
        self.tagged(tagger, tags)
    }

    fn tagged(&self, tagger: &Tagger, tags: &RequestTags<'_>) -> Action {
        tagger.count_class(tags.classification.class.name());
        for label in tags.fallback_labels() {
            self.count_fallback(label);
        }
        if let Some(error) = &tags.subject_error {
            log::debug!(
                "#{} verified subject not used ({error}): keyed as anonymous",
                self.context_id
            );
        }
        Action::Continue
    }

    /// When the request map could not be rewritten: removes every descriptor header by
    /// name, so the request goes on untagged (rate limited by the local backstop only).
    /// If even that fails, a client's copies could reach the ratelimit filter and key the
    /// request to someone else's bucket: the request is refused instead.
    fn strip_or_refuse(&self, tagger: &Tagger) -> Action {
        let names = tagger.config.descriptor_headers();
        let failed = names
            .to_strip()
            .iter()
            .find_map(|name| host::remove_header(MapType::HttpRequestHeaders, name).err());
        let Some(status) = failed else {
            return Action::Continue;
        };
        log::error!(
            "#{} cannot remove client-sent descriptor headers ({status}): refusing the request",
            self.context_id
        );
        self.answer(
            503,
            "ratelimit_tagger_headers_unwritable",
            &ErrorBody::new(
                "service_unavailable",
                "the request could not be processed; retry later",
            ),
        )
    }

    /// Answers the request with the gateway's JSON error body; the stream stops here.
    fn answer(&self, status: u32, details: &str, body: &ErrorBody) -> Action {
        if let Err(error) = host::send_local_response(
            status,
            details,
            &[(b"content-type", error_body::CONTENT_TYPE.as_bytes())],
            body.render().as_bytes(),
        ) {
            log::warn!("#{} cannot answer: {error}", self.context_id);
        }
        Action::Pause
    }

    /// The verified subject, or `None` when the request is anonymous. A read error is not a
    /// reason to fail the request: it is keyed by IP and the fallback counted.
    fn read_verified_subject(&self, tagger: &Tagger) -> Option<Vec<u8>> {
        let [root, key] = &tagger.subject_property_path;
        match host::property(&[root.as_str(), key.as_str()]) {
            Ok(value) => value,
            Err(status) => {
                log::debug!(
                    "#{} cannot read {key}: {status}: keyed as anonymous",
                    self.context_id
                );
                self.count_fallback(SUBJECT_UNREADABLE);
                None
            }
        }
    }

    fn read_property(&self, path: &[&str]) -> Option<Vec<u8>> {
        match host::property(path) {
            Ok(value) => value,
            Err(status) => {
                log::debug!(
                    "#{} cannot read {}: {status}",
                    self.context_id,
                    path.join(".")
                );
                None
            }
        }
    }

    fn count(&self, metric: impl Fn(&Metrics) -> &BatchedCounter, count: usize) {
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
            spoofed_headers_stripped: BatchedCounter::define(
                metric_names::SPOOFED_HEADERS_STRIPPED,
            ),
            requests_rejected: BatchedCounter::define(metric_names::REQUESTS_REJECTED),
            rate_limited_responses: BatchedCounter::define(metric_names::RATE_LIMITED_RESPONSES),
            untranslated_responses: BatchedCounter::define(metric_names::UNTRANSLATED_RESPONSES),
            fallbacks_by_reason: RefCell::new(Vec::new()),
        }
    }

    fn fallback_counter(&self, reason: &'static str) -> Rc<BatchedCounter> {
        let Ok(mut known) = self.fallbacks_by_reason.try_borrow_mut() else {
            return Rc::new(BatchedCounter::default());
        };
        if let Some((_, counter)) = known.iter().find(|(label, _)| *label == reason) {
            return Rc::clone(counter);
        }
        let name = format!("{}.reason.{reason}", metric_names::IDENTITY_FALLBACKS);
        let counter = Rc::new(BatchedCounter::define(&name));
        known.push((reason, Rc::clone(&counter)));
        counter
    }

    fn flush(&self) {
        for counter in [
            &self.spoofed_headers_stripped,
            &self.requests_rejected,
            &self.rate_limited_responses,
            &self.untranslated_responses,
        ] {
            counter.flush();
        }
        if let Ok(known) = self.fallbacks_by_reason.try_borrow() {
            for (_, counter) in known.iter() {
                counter.flush();
            }
        }
    }
}
