//! The filter's metrics. Envoy shows them under the `wasmcustom.` namespace in `/stats`
//! and without any prefix in `/stats/prometheus`.

use gateway_core::jwt::DenyReason;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

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

/// Metric ids; a metric whose definition failed is `None` and silently not counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    allowed: Option<u32>,
    allowed_anonymous: Option<u32>,
    denied: [Option<u32>; DENY_REASONS.len()],
    cache_hits: Option<u32>,
    cache_misses: Option<u32>,
    unknown_kid_waits: Option<u32>,
    jwks_fetches_ok: Option<u32>,
    jwks_fetches_failed: Option<u32>,
    configs_rejected: Option<u32>,
    jwks_age_seconds: Option<u32>,
    info: Option<u32>,
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
    ConfigRejected,
}

// === impl Metrics ===

impl Metrics {
    pub fn define() -> Self {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        let gauge = |name: &str| hostcalls::define_metric(MetricType::Gauge, name).ok();
        Self {
            allowed: counter(names::ALLOWED),
            allowed_anonymous: counter(names::ALLOWED_ANONYMOUS),
            // Defined up front so every reason exports a zero before its first denial:
            // alerts on rate() work from the start.
            denied: DENY_REASONS.map(|reason| counter(&denied_metric_name(reason))),
            cache_hits: counter(names::CACHE_HITS),
            cache_misses: counter(names::CACHE_MISSES),
            unknown_kid_waits: counter(names::UNKNOWN_KID_WAITS),
            jwks_fetches_ok: counter(names::JWKS_FETCHES_OK),
            jwks_fetches_failed: counter(names::JWKS_FETCHES_FAILED),
            configs_rejected: counter(names::CONFIGS_REJECTED),
            jwks_age_seconds: gauge(names::JWKS_AGE_SECONDS),
            info: gauge(names::INFO),
        }
    }

    pub fn count(&self, event: Event) {
        let id = match event {
            Event::Allowed => self.allowed,
            Event::AllowedAnonymous => self.allowed_anonymous,
            Event::Denied(reason) => self.denied.get(deny_slot(reason)).copied().flatten(),
            Event::CacheHit => self.cache_hits,
            Event::CacheMiss => self.cache_misses,
            Event::UnknownKidWait => self.unknown_kid_waits,
            Event::JwksFetchOk => self.jwks_fetches_ok,
            Event::JwksFetchFailed => self.jwks_fetches_failed,
            Event::ConfigRejected => self.configs_rejected,
        };
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    pub fn set_jwks_age(&self, seconds: u64) {
        if let Some(id) = self.jwks_age_seconds {
            let _ = hostcalls::record_metric(id, seconds);
        }
    }

    /// Every worker VM records 1 into the same gauge, so it reads 1 once any worker runs a
    /// valid configuration of this filter.
    pub fn set_info(&self) {
        if let Some(id) = self.info {
            let _ = hostcalls::record_metric(id, 1);
        }
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
