//! The built-in policies. Values follow the OWASP Secure Headers Project, narrowed
//! for an API that serves JSON and is never meant to be rendered or framed.

use super::config::ConfigProblem;
use super::policy::{HeaderMode, HeaderRule, Scope};
use crate::http::{HeaderName, HeaderValue};

/// `"preset"` in the configuration: the starting point the rest of the config edits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preset {
    /// Hardened API responses; the safe choice, so it is the default.
    #[default]
    Api,
    /// Nothing: every header and removal comes from the configuration.
    None,
}

/// Headers the `api` preset sets (public so the benchmark's native reference scenario
/// sets exactly these).
pub const API_HEADERS: &[(&str, &str, HeaderMode)] = &[
    // Browsers ignore HSTS received over plain HTTP (RFC 6797 §8.1), so sending it on
    // every response is harmless; `preload` is left to the operator: it is a
    // commitment that is hard to undo.
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
        HeaderMode::Overwrite,
    ),
    // An API response is data, never a document: it may load nothing and be framed by
    // no one.
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
        HeaderMode::Overwrite,
    ),
    ("x-content-type-options", "nosniff", HeaderMode::Overwrite),
    // Legacy twin of `frame-ancestors` for browsers without CSP level 2.
    ("x-frame-options", "DENY", HeaderMode::Overwrite),
    ("referrer-policy", "no-referrer", HeaderMode::Overwrite),
    (
        "permissions-policy",
        "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), \
         fullscreen=(), geolocation=(), gyroscope=(), hid=(), idle-detection=(), \
         magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), \
         publickey-credentials-get=(), screen-wake-lock=(), serial=(), sync-xhr=(), usb=(), \
         web-share=(), xr-spatial-tracking=()",
        HeaderMode::Overwrite,
    ),
    (
        "cross-origin-opener-policy",
        "same-origin",
        HeaderMode::Overwrite,
    ),
    // Only affects no-cors loads (<img>, <script>); CORS fetches from web apps are
    // governed by CORS, not by this header.
    (
        "cross-origin-resource-policy",
        "same-origin",
        HeaderMode::Overwrite,
    ),
    // Upstreams know best which of their responses are cacheable; only responses that
    // say nothing are made uncacheable (balances, orders and tokens must never sit in a
    // shared cache).
    ("cache-control", "no-store", HeaderMode::IfAbsent),
    (
        "x-permitted-cross-domain-policies",
        "none",
        HeaderMode::Overwrite,
    ),
];

/// Headers the `api` preset removes: they name software and versions (fingerprinting)
/// or reveal the mesh's internals (timings, retries, peer workload metadata).
pub const API_REMOVE: &[&str] = &[
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-generator",
    "x-runtime",
    "x-version",
    "x-backend-server",
    "x-server",
    "x-sourcemap",
    "sourcemap",
    "x-envoy-upstream-service-time",
    "x-envoy-attempt-count",
    "x-envoy-external-address",
    "x-envoy-internal",
    "x-envoy-overloaded",
    "x-envoy-degraded",
    "x-envoy-decorator-operation",
    "x-envoy-ratelimited",
    "x-envoy-peer-metadata",
    "x-envoy-peer-metadata-id",
];

/// Headers no configuration may set or remove: they frame the message or manage the
/// connection, and belong to Envoy's codecs. Changing them here would corrupt
/// responses rather than harden them.
pub(super) const RESERVED: &[&str] = &[
    "connection",
    "content-encoding",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) fn scope(preset: Preset) -> Result<Scope, ConfigProblem> {
    match preset {
        Preset::None => Ok(Scope::default()),
        Preset::Api => {
            let set = API_HEADERS
                .iter()
                .map(|&(name, value, mode)| {
                    Ok(HeaderRule {
                        name: HeaderName::parse(name)?,
                        value: HeaderValue::parse(value)?,
                        mode,
                    })
                })
                .collect::<Result<_, ConfigProblem>>()?;
            let remove = API_REMOVE
                .iter()
                .map(|name| Ok(HeaderName::parse(name)?))
                .collect::<Result<_, ConfigProblem>>()?;
            Ok(Scope::new(set, remove))
        }
    }
}

pub(super) fn is_reserved(name: &HeaderName) -> bool {
    RESERVED.contains(&name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_consistent() {
        let api = scope(Preset::Api).unwrap();
        assert_eq!(api.set().len(), API_HEADERS.len());
        assert_eq!(api.remove().len(), API_REMOVE.len());
        for rule in api.set() {
            assert_eq!(rule.name.as_str(), rule.name.as_str().to_ascii_lowercase());
            assert!(rule.value.as_str().is_ascii());
            assert!(!is_reserved(&rule.name));
            assert!(
                !api.remove().contains(&rule.name),
                "{} set and removed",
                rule.name
            );
        }
        for name in api.remove() {
            assert!(!is_reserved(name));
        }
        let mut names: Vec<_> = API_HEADERS
            .iter()
            .map(|h| h.0)
            .chain(API_REMOVE.iter().copied())
            .collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate name in a preset");
        assert_eq!(scope(Preset::None).unwrap(), Scope::default());
    }
}
