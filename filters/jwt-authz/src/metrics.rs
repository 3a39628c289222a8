//! The filter's metrics. Envoy shows them under the `wasmcustom.` namespace in `/stats`
//! and without any prefix in `/stats/prometheus`.
//!
//! The counters of every allowed request (allowed, anonymous, cache hit or miss) are
//! [`BatchedCounter`]s: counted in the VM, handed to Envoy by the root's tick (at least once
//! a second), since a host call per update would cost as much as the rest of the cached
//! path. Denials, unknown-`kid` waits and the root's own events are exceptional, and what
//! alerts watch: they go to Envoy at once.

use filter_glue::{BatchedCounter, Counter, Gauge};
use gateway_core::jwt::DenyReason;

pub mod names {
    pub const ALLOWED: &str = "jwt_authz_allowed_total";
    pub const ALLOWED_ANONYMOUS: &str = "jwt_authz_allowed_anonymous_total";
    /// `jwt_authz_denied_<reason>_total`, one counter per [`super::DENY_REASONS`] label.
    pub const DENIED_PREFIX: &str = "jwt_authz_denied_";
    pub const CACHE_HITS: &str = "jwt_authz_cache_hits_total";
    pub const CACHE_MISSES: &str = "jwt_authz_cache_misses_total";
    pub const UNKNOWN_KID_WAITS: &str = "jwt_authz_unknown_kid_waits_total";
    pub const JWKS_FETCHES_OK: &str = "jwt_authz_jwks_fetches_ok_total";
    pub const JWKS_FETCHES_FAILED: &str = "jwt_authz_jwks_fetches_failed_total";
    pub const CONFIGS_REJECTED: &str = "jwt_authz_configs_rejected_total";
    /// Seconds since the oldest remote key set was last refreshed (counted from configuration
    /// time while no fetch has succeeded yet), so one alert covers "never fetched" too.
    pub const JWKS_AGE_SECONDS: &str = "jwt_authz_jwks_age_seconds";
    pub const INFO: &str = "jwt_authz_info";
}

/// Every denial reason, in [`deny_slot`] order.
pub const DENY_REASONS: [DenyReason; 30] = [
    DenyReason::InvalidPath,
    DenyReason::NoMatchingRule,
    DenyReason::MissingToken,
    DenyReason::MultipleAuthorizationHeaders,
    DenyReason::MalformedAuthorization,
    DenyReason::TokenInQuery,
    DenyReason::TokenTooLarge,
    DenyReason::MalformedToken,
    DenyReason::Jwe,
    DenyReason::AlgorithmNone,
    DenyReason::AlgorithmNotAllowed,
    DenyReason::EmbeddedKey,
    DenyReason::CriticalHeader,
    DenyReason::InvalidClaims,
    DenyReason::UnknownIssuer,
    DenyReason::UnknownKey,
    DenyReason::KeyMismatch,
    DenyReason::AmbiguousKey,
    DenyReason::KeysUnavailable,
    DenyReason::VerifierUnavailable,
    DenyReason::BadSignature,
    DenyReason::Expired,
    DenyReason::NotYetValid,
    DenyReason::IssuedInFuture,
    DenyReason::MissingExpiry,
    DenyReason::AudienceMismatch,
    DenyReason::InsufficientScope,
    DenyReason::AuthenticationTooOld,
    DenyReason::ClaimMismatch,
    DenyReason::UnsafeIdentityClaim,
];

/// Position of `reason` in [`DENY_REASONS`]. Exhaustive on purpose: a reason added to the
/// core does not compile here until it has its own counter.
pub fn deny_slot(reason: DenyReason) -> usize {
    match reason {
        DenyReason::InvalidPath => 0,
        DenyReason::NoMatchingRule => 1,
        DenyReason::MissingToken => 2,
        DenyReason::MultipleAuthorizationHeaders => 3,
        DenyReason::MalformedAuthorization => 4,
        DenyReason::TokenInQuery => 5,
        DenyReason::TokenTooLarge => 6,
        DenyReason::MalformedToken => 7,
        DenyReason::Jwe => 8,
        DenyReason::AlgorithmNone => 9,
        DenyReason::AlgorithmNotAllowed => 10,
        DenyReason::EmbeddedKey => 11,
        DenyReason::CriticalHeader => 12,
        DenyReason::InvalidClaims => 13,
        DenyReason::UnknownIssuer => 14,
        DenyReason::UnknownKey => 15,
        DenyReason::KeyMismatch => 16,
        DenyReason::AmbiguousKey => 17,
        DenyReason::KeysUnavailable => 18,
        DenyReason::VerifierUnavailable => 19,
        DenyReason::BadSignature => 20,
        DenyReason::Expired => 21,
        DenyReason::NotYetValid => 22,
        DenyReason::IssuedInFuture => 23,
        DenyReason::MissingExpiry => 24,
        DenyReason::AudienceMismatch => 25,
        DenyReason::InsufficientScope => 26,
        DenyReason::AuthenticationTooOld => 27,
        DenyReason::ClaimMismatch => 28,
        DenyReason::UnsafeIdentityClaim => 29,
    }
}

pub fn denied_metric_name(reason: DenyReason) -> String {
    format!("{}{}_total", names::DENIED_PREFIX, reason.label())
}

#[derive(Debug, Default)]
pub struct Metrics {
    allowed: BatchedCounter,
    allowed_anonymous: BatchedCounter,
    denied: [Counter; DENY_REASONS.len()],
    cache_hits: BatchedCounter,
    cache_misses: BatchedCounter,
    unknown_kid_waits: Counter,
    jwks_fetches_ok: Counter,
    jwks_fetches_failed: Counter,
    /// Counted by `on_configure` through [`filter_glue`].
    pub configs_rejected: Counter,
    jwks_age_seconds: Gauge,
    /// Set by `on_configure` through [`filter_glue`].
    pub info: Gauge,
}

/// Which counter to move.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    Allowed,
    AllowedAnonymous,
    Denied(DenyReason),
    CacheHit,
    CacheMiss,
    UnknownKidWait,
    JwksFetchOk,
    JwksFetchFailed,
}

// === impl Metrics ===

impl Metrics {
    pub fn define() -> Self {
        Self {
            allowed: BatchedCounter::define(names::ALLOWED),
            allowed_anonymous: BatchedCounter::define(names::ALLOWED_ANONYMOUS),
            // Defined up front so every reason exports a zero before its first denial:
            // alerts on rate() work from the start.
            denied: DENY_REASONS.map(|reason| Counter::define(&denied_metric_name(reason))),
            cache_hits: BatchedCounter::define(names::CACHE_HITS),
            cache_misses: BatchedCounter::define(names::CACHE_MISSES),
            unknown_kid_waits: Counter::define(names::UNKNOWN_KID_WAITS),
            jwks_fetches_ok: Counter::define(names::JWKS_FETCHES_OK),
            jwks_fetches_failed: Counter::define(names::JWKS_FETCHES_FAILED),
            configs_rejected: Counter::define(names::CONFIGS_REJECTED),
            jwks_age_seconds: Gauge::define(names::JWKS_AGE_SECONDS),
            info: Gauge::define(names::INFO),
        }
    }

    pub fn count(&self, event: Event) {
        let immediate = match event {
            Event::Allowed => return self.allowed.increment(),
            Event::AllowedAnonymous => return self.allowed_anonymous.increment(),
            Event::CacheHit => return self.cache_hits.increment(),
            Event::CacheMiss => return self.cache_misses.increment(),
            Event::Denied(reason) => self
                .denied
                .get(deny_slot(reason))
                .copied()
                .unwrap_or_default(),
            Event::UnknownKidWait => self.unknown_kid_waits,
            Event::JwksFetchOk => self.jwks_fetches_ok,
            Event::JwksFetchFailed => self.jwks_fetches_failed,
        };
        immediate.increment();
    }

    /// Hands the per-request counts to Envoy (from the root's tick).
    pub fn flush(&self) {
        for counter in [
            &self.allowed,
            &self.allowed_anonymous,
            &self.cache_hits,
            &self.cache_misses,
        ] {
            counter.flush();
        }
    }

    pub fn set_jwks_age(&self, seconds: u64) {
        self.jwks_age_seconds.record(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        for (slot, reason) in DENY_REASONS.iter().enumerate() {
            assert_eq!(deny_slot(*reason), slot, "{reason:?}");
        }
        let names: std::collections::HashSet<String> = DENY_REASONS
            .iter()
            .map(|r| denied_metric_name(*r))
            .collect();
        assert_eq!(names.len(), DENY_REASONS.len());
        assert!(names.contains("jwt_authz_denied_alg_none_total"));
    }
}
