//! jwt-authz: the proxy-wasm glue around [`gateway_core::jwt`].
//!
//! * The root context parses the configuration once into a [`Plugin`] (policy, remote key
//!   state, verified-token cache), keeps the remote JWKS fresh from its tick and owns every
//!   JWKS callout, so a fetch's answer never depends on the request that triggered it.
//! * Each stream removes client-supplied identity headers, asks
//!   [`JwtAuthzConfig::authorize`] and applies the answer: identity headers and the verified
//!   subject (filter state, for ratelimit-tagger) on success, an RFC 6750 local reply on
//!   denial.
//! * A token signed with a key the issuer's JWKS does not have yet (rotation) pauses its
//!   request; the root fetches the JWKS at once (rate-limited, one fetch for all workers) and
//!   then resumes or denies every paused request. The wait is bounded by the fetch timeout.
//!
//! A request costs as few host calls as the decision allows (host calls are the expensive
//! part of a filter on Envoy): one read of the whole request map, the time, three or four
//! header adds and the subject hand-off on success; counters are batched to the root's tick
//! and the module exports only the callbacks it implements. Request-path host calls go
//! through `filter_glue::host`, which returns errors instead of panicking, and header values
//! are read as bytes only: no client input can trap the VM.

mod host;
pub mod metrics;
mod shared_keys;
pub mod verifier;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use filter_glue::host as glue_host;
use gateway_core::build_info::BuildInfo;
use gateway_core::error_body;
use gateway_core::jwt::{
    Authorization, CacheKey, CacheUse, Denial, DenyReason, FallbackVerifier, HostSignatureVerifier,
    IssuerId, JwtAuthzConfig, KeyFreshness, KeyRing, RequestView, TokenCache, UnknownKeyAction,
};
use gateway_core::ratelimit::identity::DEFAULT_VERIFIED_SUBJECT_PROPERTY;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use host::{now_millis, HostCrypto};
use metrics::{Event, Metrics};
use shared_keys::{Lease, SharedKeys};
use verifier::{unverifiable_algorithm, InModuleVerifier};

const BUILD: BuildInfo = BuildInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));

/// Tick while nothing waits: keys refresh and snapshots from other VMs are picked up.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Tick while requests wait for keys, so a snapshot another VM fetched releases them quickly.
const WAITING_TICK: Duration = Duration::from_millis(100);
/// Tick a stream asks for when it needs a fetch now (the root dispatches it on that tick).
const URGENT_TICK: Duration = Duration::from_millis(1);
/// Requests paused for a key fetch, per VM; more are denied at once. Bounds the memory a
/// flood of unknown `kid`s can pin during one fetch.
const MAX_WAITING_REQUESTS: usize = 256;
/// A waiting request is settled at the latest this long after the fetch timeout.
const WAIT_GRACE_MILLIS: u64 = 1_000;
/// A JWKS larger than this is not read (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 512 * 1024;
const FETCH_USER_AGENT: &str = concat!("svc-gateway-jwt-authz/", env!("CARGO_PKG_VERSION"));

proxy_wasm::main! {{
    // Info, not Trace: every enabled log call crosses into the host, and the filter logs
    // nothing per request unless something is wrong.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(JwtAuthzRoot::new(context_id))
    });
}}

/// One parsed configuration and the state that lives exactly as long as it.
struct Plugin {
    config: JwtAuthzConfig,
    keys: RefCell<KeyRing>,
    cache: RefCell<TokenCache>,
    /// Per issuer (index = issuer id): shared-data bookkeeping and whether a stream wants an
    /// unknown-`kid` fetch the root has not dispatched yet. `None` without `remoteJwks`.
    remote: RefCell<Vec<Option<RemoteIssuer>>>,
    host_crypto: HostCrypto,
    configured_at: u64,
}

struct RemoteIssuer {
    shared: SharedKeys,
    fetch_wanted: bool,
}

/// State shared by the root and its streams, across reconfigurations.
struct Runtime {
    plugin: RefCell<Option<Rc<Plugin>>>,
    waiting: RefCell<Vec<WaitingRequest>>,
    metrics: Metrics,
    /// This VM's name in shared-data leases.
    vm: String,
}

/// A request paused until its issuer's keys are refreshed. It carries what `authorize`
/// needs, since request headers are only readable from the stream's own callbacks or while
/// it is paused.
struct WaitingRequest {
    context_id: u32,
    issuer: IssuerId,
    method: String,
    path: String,
    authorization: Vec<String>,
    deadline_ms: u64,
}

struct JwtAuthzRoot {
    context_id: u32,
    runtime: Option<Rc<Runtime>>,
    /// JWKS callouts in flight: token → the plugin and issuer it refreshes.
    fetches: HashMap<u32, (Rc<Plugin>, IssuerId)>,
    tick: Option<Duration>,
}

struct JwtAuthzStream {
    context_id: u32,
    runtime: Option<Rc<Runtime>>,
}

/// What was read from the request headers.
struct RequestParts {
    method: String,
    path: String,
    authorization: Vec<String>,
}

// === impl Plugin ===

impl Plugin {
    /// `cache_key` is `None` when the host gave no randomness: the cache then stays off,
    /// since digests under a guessable key could be made to collide.
    fn new(
        config: JwtAuthzConfig,
        host_crypto: HostCrypto,
        cache_key: Option<CacheKey>,
        now: u64,
    ) -> Self {
        let keys = KeyRing::new(&config);
        let remote = config
            .issuers
            .iter()
            .map(|issuer| {
                issuer.remote_jwks.as_ref().map(|settings| RemoteIssuer {
                    shared: SharedKeys::new(settings),
                    fetch_wanted: false,
                })
            })
            .collect();
        Self {
            cache: RefCell::new(match cache_key {
                Some(key) => TokenCache::new(config.cache_size, key),
                None => TokenCache::new(0, CacheKey::from_bytes([0; 32])),
            }),
            keys: RefCell::new(keys),
            remote: RefCell::new(remote),
            host_crypto,
            configured_at: now,
            config,
        }
    }

    fn authorize(&self, request: &RequestParts, now: u64) -> Authorization {
        let authorization: Vec<&str> = request.authorization.iter().map(String::as_str).collect();
        let view = RequestView {
            method: &request.method,
            path: &request.path,
            authorization: &authorization,
        };
        let host = HostSignatureVerifier::new(|arguments: &[u8]| {
            self.host_crypto.verify_signature(arguments)
        });
        let verifier = FallbackVerifier {
            primary: host,
            fallback: InModuleVerifier,
        };
        let keys = self.keys.borrow();
        let mut cache = self.cache.borrow_mut();
        self.config
            .authorize(&view, &keys, &mut cache, &verifier, now)
    }

    /// Adopts a newer key snapshot another VM published for `issuer`.
    fn adopt_shared_keys(&self, issuer: IssuerId, now: u64) -> bool {
        let mut remote = self.remote.borrow_mut();
        let mut keys = self.keys.borrow_mut();
        match (
            remote.get_mut(issuer).and_then(Option::as_mut),
            keys.remote_mut(issuer),
        ) {
            (Some(shared), Some(remote_keys)) => shared.shared.adopt(remote_keys, now),
            _ => false,
        }
    }

    /// Streams among `waiting` that no fetch will settle any more: past their deadline, or
    /// their issuer has no fetch in flight or wanted (it failed to start or was lost).
    fn stranded_requests(&self, waiting: &[WaitingRequest], now_ms: u64) -> Vec<u32> {
        let keys = self.keys.borrow();
        let remote = self.remote.borrow();
        waiting
            .iter()
            .filter(|request| {
                let in_flight = keys
                    .remote(request.issuer)
                    .is_some_and(|keys| keys.is_fetch_in_flight());
                let wanted = remote
                    .get(request.issuer)
                    .and_then(Option::as_ref)
                    .is_some_and(|remote| remote.fetch_wanted);
                now_ms >= request.deadline_ms || !(in_flight || wanted)
            })
            .map(|request| request.context_id)
            .collect()
    }

    /// Age of the oldest remote key set; "never fetched" counts from configuration time.
    fn oldest_key_age(&self, now: u64) -> u64 {
        let mut keys = self.keys.borrow_mut();
        keys.iter_mut()
            .map(|(_, remote)| match remote.freshness(now) {
                KeyFreshness::Missing => now.saturating_sub(self.configured_at),
                KeyFreshness::Fresh { age_seconds }
                | KeyFreshness::Stale { age_seconds }
                | KeyFreshness::Expired { age_seconds } => age_seconds,
            })
            .max()
            .unwrap_or(0)
    }

    fn summary(&self) -> String {
        let algorithms: Vec<String> = self
            .config
            .issuers
            .iter()
            .map(|issuer| {
                let names: Vec<&str> = issuer.algorithms.iter().map(|a| a.name()).collect();
                names.join("/")
            })
            .collect();
        let remote = self
            .config
            .issuers
            .iter()
            .filter(|issuer| issuer.remote_jwks.is_some())
            .count();
        let crypto = if self.host_crypto.is_available() {
            "Envoy verify_signature for RS*/ES*, in-module for EdDSA/HS256"
        } else {
            "in-module only (ES256, EdDSA, HS256)"
        };
        format!(
            "{} issuers ({}), {} with remote JWKS, {} rules, cache {}, signatures: {}",
            self.config.issuers.len(),
            algorithms.join(", "),
            remote,
            self.config.rules.len(),
            self.config.cache_size,
            crypto
        )
    }

    /// The value handed to ratelimit-tagger: the subject, qualified by its issuer when more
    /// than one issuer is configured, so equal `sub`s of two issuers never share a bucket.
    fn subject_property_value(&self, issuer: &str, subject: &str) -> String {
        if self.config.issuers.len() > 1 {
            format!("{issuer}|{subject}")
        } else {
            subject.to_owned()
        }
    }
}

// === impl JwtAuthzRoot ===

impl JwtAuthzRoot {
    fn new(context_id: u32) -> Self {
        Self {
            context_id,
            runtime: None,
            fetches: HashMap::new(),
            tick: None,
        }
    }

    fn runtime(&mut self) -> Rc<Runtime> {
        Rc::clone(self.runtime.get_or_insert_with(|| {
            Rc::new(Runtime {
                plugin: RefCell::new(None),
                waiting: RefCell::new(Vec::new()),
                metrics: Metrics::define(),
                vm: shared_keys::vm_identity(),
            })
        }))
    }

    fn set_tick(&mut self, period: Duration) {
        if self.tick != Some(period) {
            match hostcalls::set_tick_period(period) {
                Ok(()) => self.tick = Some(period),
                Err(status) => log::warn!("#{} cannot set the tick: {status:?}", self.context_id),
            }
        }
    }

    /// Starts due fetches: scheduled refreshes and unknown-`kid` refetches streams asked for.
    fn start_fetches(&mut self, runtime: &Runtime, plugin: &Rc<Plugin>, now_ms: u64) {
        let now = now_ms / 1000;
        let issuers = plugin.config.issuers.len();
        for issuer in 0..issuers {
            let mut remote = plugin.remote.borrow_mut();
            let Some(shared) = remote.get_mut(issuer).and_then(Option::as_mut) else {
                continue;
            };
            let mut keys = plugin.keys.borrow_mut();
            let Some(remote_keys) = keys.remote_mut(issuer) else {
                continue;
            };
            // Another VM fetching (or backing off after a failure) means: wait for its
            // snapshot. Checked before `poll`, which would mark a fetch as started.
            if shared.shared.held_elsewhere(&runtime.vm, now_ms) {
                continue;
            }
            let wanted = std::mem::take(&mut shared.fetch_wanted);
            if !wanted && !remote_keys.poll(now) {
                continue;
            }
            let settings = remote_keys.settings().clone();
            if shared
                .shared
                .acquire(&runtime.vm, now_ms, settings.timeout_millis)
                == Lease::HeldElsewhere
            {
                // Lost a race for the lease: the winner's snapshot will arrive; our fetch
                // counts as lost and is retried after the usual backoff if it does not.
                shared.fetch_wanted = wanted;
                continue;
            }
            // The lease is ours, but another worker (a VM on another thread) may have
            // fetched between this tick's adoption and now: it publishes its snapshot before
            // it releases the lease, so the snapshot is visible now. Take it instead of
            // fetching the same JWKS again (adopting also ends the fetch `poll` started).
            if shared.shared.adopt(remote_keys, now) {
                shared.shared.hold_until(&runtime.vm, now_ms);
                continue;
            }
            let request = vec![
                (":method", "GET"),
                (":path", settings.path.as_str()),
                (":authority", settings.authority.as_str()),
                ("accept", "application/json"),
                ("user-agent", FETCH_USER_AGENT),
            ];
            match hostcalls::dispatch_http_call(
                &settings.cluster,
                request,
                None,
                vec![],
                Duration::from_millis(settings.timeout_millis),
            ) {
                Ok(token) => {
                    self.fetches.insert(token, (Rc::clone(plugin), issuer));
                }
                Err(status) => {
                    log::warn!(
                        "#{} cannot fetch JWKS of {} from cluster {}: {status:?}",
                        self.context_id,
                        plugin.config.issuers.get(issuer).map_or("?", |i| &i.issuer),
                        settings.cluster
                    );
                    remote_keys.on_fetch_failure(now);
                    shared.shared.hold_until(
                        &runtime.vm,
                        now_ms.saturating_add(settings.min_refetch_interval_seconds * 1000),
                    );
                    runtime.metrics.count(Event::JwksFetchFailed);
                }
            }
        }
    }

    fn on_fetch_done(&mut self, token: u32, body_size: usize) {
        let Some((plugin, issuer)) = self.fetches.remove(&token) else {
            return;
        };
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let now_ms = now_millis();
        let now = now_ms / 1000;
        let status = hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
            .ok()
            .and_then(|headers| {
                headers
                    .into_iter()
                    .find(|(name, _)| name == ":status")
                    .map(|(_, value)| value)
            });
        let body = if status.as_deref() == Some(b"200") && body_size <= MAX_JWKS_BYTES {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
        } else {
            None
        };
        {
            let issuer_name = plugin.config.issuers.get(issuer).map_or("?", |i| &i.issuer);
            let mut remote = plugin.remote.borrow_mut();
            let mut keys = plugin.keys.borrow_mut();
            let (Some(shared), Some(remote_keys)) = (
                remote.get_mut(issuer).and_then(Option::as_mut),
                keys.remote_mut(issuer),
            ) else {
                return;
            };
            let retry_after_ms =
                now_ms.saturating_add(remote_keys.settings().min_refetch_interval_seconds * 1000);
            let outcome = match body {
                Some(body) => remote_keys
                    .on_fetch_success(now, &body)
                    .map_err(|error| format!("unusable JWKS: {error}")),
                None => {
                    remote_keys.on_fetch_failure(now);
                    Err(match status {
                        Some(status) if status == b"200" && body_size > MAX_JWKS_BYTES => {
                            format!("JWKS of {body_size} bytes, more than {MAX_JWKS_BYTES}")
                        }
                        Some(status) if status == b"200" => "empty JWKS".to_owned(),
                        Some(status) => {
                            format!("HTTP status {}", String::from_utf8_lossy(&status))
                        }
                        None => "no response (connection failure or reset)".to_owned(),
                    })
                }
            };
            match outcome {
                Ok(report) => {
                    runtime.metrics.count(Event::JwksFetchOk);
                    shared.shared.publish(remote_keys);
                    shared.shared.hold_until(&runtime.vm, now_ms);
                    if report.changed {
                        log::info!(
                            "#{} JWKS of {issuer_name} updated: {} usable keys, {} skipped",
                            self.context_id,
                            remote_keys.keys(now).map_or(0, |keys| keys.len()),
                            report.skipped.len()
                        );
                    }
                }
                Err(problem) => {
                    runtime.metrics.count(Event::JwksFetchFailed);
                    shared.shared.hold_until(&runtime.vm, retry_after_ms);
                    log::warn!(
                        "#{} JWKS fetch for {issuer_name} failed ({problem}); keeping the last known good keys ({:?})",
                        self.context_id,
                        remote_keys.freshness(now)
                    );
                }
            }
        }
        self.settle_waiting(&runtime, |waiting| waiting.issuer == issuer, now_ms);
    }

    /// Resumes or denies the waiting requests `which` selects, against the current plugin.
    fn settle_waiting(
        &self,
        runtime: &Runtime,
        which: impl Fn(&WaitingRequest) -> bool,
        now_ms: u64,
    ) {
        let settled: Vec<WaitingRequest> = {
            let mut waiting = runtime.waiting.borrow_mut();
            let (settled, still) = waiting.drain(..).partition(|w| which(w));
            *waiting = still;
            settled
        };
        let plugin = runtime.plugin.borrow().clone();
        for request in settled {
            // The stream may be gone (client closed); then there is nothing to answer.
            if hostcalls::set_effective_context(request.context_id).is_err() {
                continue;
            }
            let parts = RequestParts {
                method: request.method,
                path: request.path,
                authorization: request.authorization,
            };
            let outcome = match &plugin {
                Some(plugin) => plugin.authorize(&parts, now_ms / 1000),
                None => Authorization::Deny(unavailable_denial()),
            };
            let action = apply(
                plugin.as_deref(),
                &runtime.metrics,
                request.context_id,
                &outcome,
            );
            if action == Action::Continue {
                if let Err(status) = hostcalls::resume_http_request() {
                    log::warn!(
                        "#{} cannot resume #{}: {status:?}",
                        self.context_id,
                        request.context_id
                    );
                }
            }
        }
    }
}

impl Context for JwtAuthzRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.on_fetch_done(token_id, body_size);
    }
}

impl RootContext for JwtAuthzRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        filter_glue::log_vm_started(&BUILD, self.context_id);
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let runtime = self.runtime();
        let configs_rejected = runtime.metrics.configs_rejected;
        let Some(loaded) = filter_glue::load_configuration(
            &BUILD,
            self.context_id,
            configs_rejected,
            JwtAuthzConfig::from_json,
        ) else {
            // Envoy refuses this configuration and keeps serving the previous one.
            return false;
        };
        let host_crypto = HostCrypto::probe();
        if let Some((field, algorithm)) =
            unverifiable_algorithm(&loaded.config, host_crypto.is_available())
        {
            let problem = format!(
                "{field}: {algorithm} cannot be verified by this build on this host \
                 (in the module: ES256, EdDSA, HS256; with Envoy's verify_signature also \
                 RS256, RS384, RS512, ES384)"
            );
            filter_glue::reject(
                &BUILD,
                self.context_id,
                &loaded.hash,
                &problem,
                configs_rejected,
            );
            return false;
        }
        let now = now_millis() / 1000;
        let cache_key = random_cache_key();
        if cache_key.is_none() && loaded.config.cache_size > 0 {
            log::error!(
                "#{} {BUILD}: the host gave no randomness for the verified-token cache's key; \
                 the cache is off and every token is verified",
                self.context_id
            );
        }
        let plugin = Rc::new(Plugin::new(loaded.config, host_crypto, cache_key, now));
        // Keys another VM (or this VM's previous configuration) already fetched are used at
        // once; the first tick fetches whatever is still missing.
        for issuer in 0..plugin.config.issuers.len() {
            plugin.adopt_shared_keys(issuer, now);
        }
        filter_glue::log_configured(&BUILD, self.context_id, &loaded.hash, &plugin.summary());
        *runtime.plugin.borrow_mut() = Some(plugin);
        // Requests that waited under the previous configuration are decided by this one.
        self.settle_waiting(&runtime, |_| true, now_millis());
        runtime.metrics.info.set_info();
        self.set_tick(URGENT_TICK);
        true
    }

    fn on_tick(&mut self) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let Some(plugin) = runtime.plugin.borrow().clone() else {
            return;
        };
        let now_ms = now_millis();
        let now = now_ms / 1000;
        for issuer in 0..plugin.config.issuers.len() {
            if plugin.adopt_shared_keys(issuer, now) {
                self.settle_waiting(&runtime, |waiting| waiting.issuer == issuer, now_ms);
            }
        }
        self.start_fetches(&runtime, &plugin, now_ms);
        // Past their deadline, or no fetch will answer them any more (lost, failed to start).
        let stranded = plugin.stranded_requests(&runtime.waiting.borrow(), now_ms);
        if !stranded.is_empty() {
            self.settle_waiting(
                &runtime,
                |waiting| stranded.contains(&waiting.context_id),
                now_ms,
            );
        }
        runtime.metrics.set_jwks_age(plugin.oldest_key_age(now));
        runtime.metrics.flush();
        let wants_fetch = plugin
            .remote
            .borrow()
            .iter()
            .flatten()
            .any(|remote| remote.fetch_wanted);
        let period = if runtime.waiting.borrow().is_empty() && !wants_fetch {
            IDLE_TICK
        } else {
            WAITING_TICK
        };
        self.set_tick(period);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always Some: the SDK panics when a root returns None here.
        Some(Box::new(JwtAuthzStream {
            context_id,
            runtime: self.runtime.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A fresh secret for the verified-token cache's digests (see `TokenDigest`); `None` when
/// the host's random source fails.
fn random_cache_key() -> Option<CacheKey> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(CacheKey::from_bytes(bytes))
}

// === impl JwtAuthzStream ===

impl JwtAuthzStream {
    /// Reads what the decision needs (one read of the whole map) and removes
    /// client-supplied identity headers. Removal is asked for only for names actually
    /// present, which they almost never are; a header that cannot be removed fails the
    /// request closed.
    fn read_request(&self, plugin: &Plugin) -> Option<RequestParts> {
        let headers = match glue_host::header_map(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(error) => {
                log::warn!("#{} cannot read request headers: {error}", self.context_id);
                return None;
            }
        };
        for name in plugin.config.identity_headers.all() {
            let present = headers.iter().any(|(header, _)| name.matches(header));
            if present {
                if let Err(status) =
                    glue_host::remove_header(MapType::HttpRequestHeaders, name.as_str())
                {
                    log::warn!("#{} cannot remove {name}: {status}", self.context_id);
                    return None;
                }
            }
        }
        let mut method = None;
        let mut path = None;
        let mut authorization = Vec::new();
        for (name, value) in &headers {
            // Lossy: a non-UTF-8 byte becomes U+FFFD, which no path rule, method or
            // bearer token accepts, so such a request is denied rather than trapped on.
            let value = || String::from_utf8_lossy(value).into_owned();
            match name {
                b":method" => method = Some(value()),
                b":path" => path = Some(value()),
                _ if name.eq_ignore_ascii_case(b"authorization") => authorization.push(value()),
                _ => {}
            }
        }
        Some(RequestParts {
            method: method.unwrap_or_default(),
            path: path.unwrap_or_default(),
            authorization,
        })
    }

    /// An unknown `kid` (or no keys yet): wait for a fetch when one is allowed, else deny.
    fn on_unknown_key(
        &self,
        runtime: &Runtime,
        plugin: &Plugin,
        issuer: IssuerId,
        denial: Denial,
        parts: RequestParts,
        now_ms: u64,
    ) -> Action {
        let now = now_ms / 1000;
        // Another VM may already have the new keys.
        if plugin.adopt_shared_keys(issuer, now) {
            let retried = plugin.authorize(&parts, now);
            if !matches!(retried, Authorization::UnknownKey { .. }) {
                return apply(Some(plugin), &runtime.metrics, self.context_id, &retried);
            }
        }
        let room = runtime.waiting.borrow().len() < MAX_WAITING_REQUESTS;
        let (action, timeout_millis) = {
            let mut keys = plugin.keys.borrow_mut();
            let Some(remote_keys) = keys.remote_mut(issuer) else {
                return deny(&runtime.metrics, self.context_id, &denial);
            };
            let timeout_millis = remote_keys.settings().timeout_millis;
            let action = if room {
                remote_keys.on_unknown_key(now)
            } else {
                UnknownKeyAction::Deny
            };
            (action, timeout_millis)
        };
        match action {
            UnknownKeyAction::Deny => deny(&runtime.metrics, self.context_id, &denial),
            UnknownKeyAction::FetchNow | UnknownKeyAction::AwaitInFlight => {
                if action == UnknownKeyAction::FetchNow {
                    if let Some(remote) = plugin
                        .remote
                        .borrow_mut()
                        .get_mut(issuer)
                        .and_then(Option::as_mut)
                    {
                        remote.fetch_wanted = true;
                    }
                    // The root dispatches on its next tick; make that tick now.
                    if let Err(status) = hostcalls::set_tick_period(URGENT_TICK) {
                        log::warn!("#{} cannot set the tick: {status:?}", self.context_id);
                    }
                }
                runtime.metrics.count(Event::UnknownKidWait);
                runtime.waiting.borrow_mut().push(WaitingRequest {
                    context_id: self.context_id,
                    issuer,
                    method: parts.method,
                    path: parts.path,
                    authorization: parts.authorization,
                    deadline_ms: now_ms
                        .saturating_add(timeout_millis)
                        .saturating_add(WAIT_GRACE_MILLIS),
                });
                Action::Pause
            }
        }
    }
}

impl Context for JwtAuthzStream {}

/// A client that went away while its request waited for keys leaves nothing behind. In
/// `Drop` rather than `on_done`: the SDK drops the stream in `proxy_on_delete`, which Envoy
/// calls for every stream anyway, and the module does not export `proxy_on_done` (one VM
/// entry less per request).
impl Drop for JwtAuthzStream {
    fn drop(&mut self) {
        if let Some(runtime) = &self.runtime {
            if let Ok(mut waiting) = runtime.waiting.try_borrow_mut() {
                waiting.retain(|waiting| waiting.context_id != self.context_id);
            }
        }
    }
}

impl HttpContext for JwtAuthzStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return deny(&Metrics::default(), self.context_id, &unavailable_denial());
        };
        let plugin = runtime.plugin.borrow().clone();
        let Some(plugin) = plugin else {
            // Envoy does not create streams for a plugin without a valid configuration;
            // if it ever did, fail closed.
            return deny(&runtime.metrics, self.context_id, &unavailable_denial());
        };
        // Before anything else, and on anonymous routes too: upstreams must only ever see
        // identity headers this filter wrote.
        let Some(parts) = self.read_request(&plugin) else {
            return deny(&runtime.metrics, self.context_id, &unavailable_denial());
        };
        let now_ms = now_millis();
        match plugin.authorize(&parts, now_ms / 1000) {
            Authorization::UnknownKey { issuer, denial } => {
                self.on_unknown_key(&runtime, &plugin, issuer, denial, parts, now_ms)
            }
            outcome => apply(Some(&plugin), &runtime.metrics, self.context_id, &outcome),
        }
    }
}

/// Applies a decision to the current (or effective) stream and says how it continues.
fn apply(
    plugin: Option<&Plugin>,
    metrics: &Metrics,
    context_id: u32,
    outcome: &Authorization,
) -> Action {
    match outcome {
        Authorization::Allow { token, cache, .. } => {
            let Some(plugin) = plugin else {
                return deny(metrics, context_id, &unavailable_denial());
            };
            // `add`, not `replace`: `read_request` removed any client copy, so Envoy need not
            // search the map for one.
            for (name, value) in token.identity.headers(&plugin.config.identity_headers) {
                if let Err(status) = glue_host::add_header(
                    MapType::HttpRequestHeaders,
                    name.as_str(),
                    value.as_str().as_bytes(),
                ) {
                    // An upstream must not receive a half-written identity.
                    log::warn!("#{context_id} cannot set {name}: {status}; denying");
                    return deny(metrics, context_id, &unavailable_denial());
                }
            }
            if let Some(subject) = &token.identity.subject {
                let value =
                    plugin.subject_property_value(token.identity.issuer.as_str(), subject.as_str());
                if let Err(status) =
                    glue_host::set_property(DEFAULT_VERIFIED_SUBJECT_PROPERTY, value.as_bytes())
                {
                    // The tagger then keys this request by IP: degraded, not unsafe.
                    log::warn!(
                        "#{context_id} cannot hand the subject to ratelimit-tagger: {status}"
                    );
                }
            }
            metrics.count(Event::Allowed);
            metrics.count(match cache {
                CacheUse::Hit => Event::CacheHit,
                CacheUse::Miss => Event::CacheMiss,
            });
            Action::Continue
        }
        Authorization::AllowAnonymous { .. } => {
            metrics.count(Event::AllowedAnonymous);
            Action::Continue
        }
        Authorization::Deny(denial) | Authorization::UnknownKey { denial, .. } => {
            deny(metrics, context_id, denial)
        }
    }
}

/// Sends the denial as a local reply; the stream stops here.
fn deny(metrics: &Metrics, context_id: u32, denial: &Denial) -> Action {
    metrics.count(Event::Denied(denial.reason));
    let mut headers: Vec<(&[u8], &[u8])> =
        vec![(b"content-type", error_body::CONTENT_TYPE.as_bytes())];
    if let Some(challenge) = &denial.www_authenticate {
        headers.push((b"www-authenticate", challenge.as_bytes()));
    }
    if let Err(status) = glue_host::send_local_response(
        u32::from(denial.status),
        "jwt_authz_denied",
        &headers,
        denial.body.as_bytes(),
    ) {
        log::warn!("#{context_id} cannot send the denial: {status}");
    }
    Action::Pause
}

/// The answer when the filter cannot decide (no configuration, host failure): a 401 like
/// any token the gateway cannot verify, never a pass.
fn unavailable_denial() -> Denial {
    Denial::new(DenyReason::VerifierUnavailable, "svc-gateway", &[], None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's sample is the configuration the manifests ship: it must stay valid.
    #[test]
    fn the_readme_sample_configuration_is_valid() {
        let readme = include_str!("../README.md");
        let sample = readme
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_default();
        let config = JwtAuthzConfig::from_json(sample.as_bytes()).unwrap();
        assert_eq!(config.rules.len(), 7);
        // The algorithms it names are verifiable on Envoy (with verify_signature).
        assert_eq!(unverifiable_algorithm(&config, true), None);
        assert!(unverifiable_algorithm(&config, false).is_some());
    }
}
