//! jwt-authz configuration: parsed once, validated into an immutable form.
//!
//! ```json
//! {
//!   "issuers": [{
//!     "issuer": "https://auth.exchange.example",
//!     "algorithms": ["ES256", "RS256"],
//!     "jwks": {"keys": [ ... ]},
//!     "remoteJwks": {"cluster": "outbound|443||auth.exchange.example",
//!                    "authority": "auth.exchange.example", "path": "/.well-known/jwks.json",
//!                    "refreshIntervalSeconds": 300, "timeoutMillis": 2000,
//!                    "minRefetchIntervalSeconds": 30, "maxStalenessSeconds": 86400}
//!   }],
//!   "clockSkewSeconds": 30, "maxTokenBytes": 8192, "realm": "svc-gateway",
//!   "rules": [
//!     {"name": "health", "pathPrefix": "/healthz", "anonymous": true},
//!     {"name": "withdraw", "methods": ["POST"], "exactPath": "/api/v1/wallet/withdrawals",
//!      "audiencesAnyOf": ["wallet"], "scopesAllOf": ["wallet:withdraw"],
//!      "maxAuthAgeSeconds": 300, "claimsEqual": {"acr": "mfa"}},
//!     {"name": "trade", "pathPrefix": "/api/v1/trade", "audiencesAnyOf": ["trade"],
//!      "scopesAnyOf": ["trade:read", "trade:write"]}
//!   ],
//!   "identityHeaders": {"subject": "x-auth-subject", "scopes": "x-auth-scopes",
//!                       "issuer": "x-auth-issuer", "clientId": "x-auth-client-id"},
//!   "cacheSize": 4096
//! }
//! ```
//!
//! Validation (each error names the field, e.g. `issuers[0].algorithms[2]`):
//! * every issuer: unique `issuer` of 1–256 printable ASCII characters (it is also an identity
//!   header value); non-empty `algorithms`, never `none`, only names we
//!   implement; `sharedSecret` (base64url, at least as long as the largest allowed HMAC hash)
//!   if and only if the algorithms are HS*, and then no JWKS; otherwise `jwks` and/or
//!   `remoteJwks`, and every key of an inline `jwks` must be usable (a typo fails loudly);
//! * `remoteJwks`: `refreshIntervalSeconds` 10–86400 (default 300), `timeoutMillis` 100–60000
//!   (2000), `minRefetchIntervalSeconds` 1–3600 (30), `maxStalenessSeconds` 60–604800 (86400,
//!   longer than the refresh interval; see [`super::keyring`] for what happens after it);
//! * `clockSkewSeconds` 0–60 (default 30); `maxTokenBytes` 256–16384 (default 8192);
//!   `cacheSize` 0–100000 (default 4096, 0 disables the cache);
//! * every rule: exactly one of `pathPrefix`/`exactPath`, in canonical form (see
//!   [`crate::path`]); `methods` upper-case tokens (absent = any method); `anonymous: true` with
//!   no requirement, or authenticated with a non-empty `audiencesAnyOf` — RFC 8725 §3.9: a
//!   token minted for another service of the same issuer must not be accepted here;
//! * scopes are RFC 6749 scope tokens, so they can be quoted in `WWW-Authenticate`;
//! * `claimsEqual` values are strings, booleans or integers, on non-registered claim names;
//! * identity header names are distinct, valid, and neither standard/routing headers nor
//!   `x-envoy-*` / `x-forwarded-*` (Envoy acts on those).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use super::algorithm::{Algorithm, AlgorithmError};
use super::base64url;
use super::jwks::{KeySet, VerificationKey};
use crate::http::HeaderName;
use crate::path::NormalizedPath;

pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 30;
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 60;
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
pub const DEFAULT_CACHE_SIZE: usize = 4096;
pub const DEFAULT_REALM: &str = "svc-gateway";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("jwt-authz configuration is not valid: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Index of an issuer in [`JwtAuthzConfig::issuers`].
pub type IssuerId = usize;

/// The validated, immutable configuration.
#[derive(Debug)]
pub struct JwtAuthzConfig {
    pub issuers: Vec<IssuerPolicy>,
    pub clock_skew_seconds: u64,
    pub max_token_bytes: usize,
    pub realm: String,
    pub rules: Vec<Rule>,
    pub identity_headers: IdentityHeaderNames,
    pub cache_size: usize,
    /// Claim names some rule compares, so only those are kept from a token.
    pub compared_claims: Vec<String>,
}

#[derive(Debug)]
pub struct IssuerPolicy {
    pub issuer: String,
    pub algorithms: Vec<Algorithm>,
    /// Inline JWKS keys, or the shared secret of an HS issuer.
    pub static_keys: KeySet,
    pub remote_jwks: Option<RemoteJwksSettings>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteJwksSettings {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub refresh_interval_seconds: u64,
    pub timeout_millis: u64,
    pub min_refetch_interval_seconds: u64,
    pub max_staleness_seconds: u64,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub methods: Option<Vec<String>>,
    pub path: PathMatch,
    pub access: Access,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
}

#[derive(Debug)]
pub enum Access {
    Anonymous,
    Authenticated(Requirements),
}

#[derive(Debug, Default)]
pub struct Requirements {
    pub audiences_any_of: Vec<String>,
    pub scopes_all_of: Vec<String>,
    pub scopes_any_of: Vec<String>,
    pub max_auth_age_seconds: Option<u64>,
    pub claims_equal: Vec<(String, Value)>,
}

#[derive(Clone, Debug)]
pub struct IdentityHeaderNames {
    pub subject: HeaderName,
    pub scopes: HeaderName,
    pub issuer: HeaderName,
    pub client_id: HeaderName,
}

// --- raw (wire) form ---

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    issuers: Vec<RawIssuer>,
    clock_skew_seconds: Option<u64>,
    max_token_bytes: Option<usize>,
    realm: Option<String>,
    rules: Vec<RawRule>,
    #[serde(default)]
    identity_headers: RawIdentityHeaders,
    cache_size: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    algorithms: Vec<String>,
    jwks: Option<Value>,
    remote_jwks: Option<RawRemoteJwks>,
    shared_secret: Option<Secret>,
}

/// A configured secret; `Debug` never prints it.
#[derive(Deserialize)]
#[serde(transparent)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRemoteJwks {
    cluster: String,
    authority: String,
    path: String,
    #[serde(default = "default_refresh_interval")]
    refresh_interval_seconds: u64,
    #[serde(default = "default_timeout_millis")]
    timeout_millis: u64,
    #[serde(default = "default_min_refetch_interval")]
    min_refetch_interval_seconds: u64,
    #[serde(default = "default_max_staleness")]
    max_staleness_seconds: u64,
}

fn default_refresh_interval() -> u64 {
    300
}
fn default_timeout_millis() -> u64 {
    2_000
}
fn default_min_refetch_interval() -> u64 {
    30
}
fn default_max_staleness() -> u64 {
    24 * 3600
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    methods: Option<Vec<String>>,
    path_prefix: Option<String>,
    exact_path: Option<String>,
    #[serde(default)]
    anonymous: bool,
    audiences_any_of: Option<Vec<String>>,
    scopes_all_of: Option<Vec<String>>,
    scopes_any_of: Option<Vec<String>>,
    max_auth_age_seconds: Option<u64>,
    claims_equal: Option<BTreeMap<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawIdentityHeaders {
    #[serde(default = "default_subject_header")]
    subject: String,
    #[serde(default = "default_scopes_header")]
    scopes: String,
    #[serde(default = "default_issuer_header")]
    issuer: String,
    #[serde(default = "default_client_id_header")]
    client_id: String,
}

fn default_subject_header() -> String {
    "x-auth-subject".to_owned()
}
fn default_scopes_header() -> String {
    "x-auth-scopes".to_owned()
}
fn default_issuer_header() -> String {
    "x-auth-issuer".to_owned()
}
fn default_client_id_header() -> String {
    "x-auth-client-id".to_owned()
}

impl Default for RawIdentityHeaders {
    fn default() -> Self {
        Self {
            subject: default_subject_header(),
            scopes: default_scopes_header(),
            issuer: default_issuer_header(),
            client_id: default_client_id_header(),
        }
    }
}

/// Registered claims the verifier itself interprets; comparing them in `claimsEqual` would
/// bypass or duplicate typed checks.
const REGISTERED_CLAIMS: [&str; 7] = ["iss", "exp", "nbf", "iat", "aud", "scope", "scp"];

/// Headers an identity header must never replace.
const RESERVED_HEADERS: [&str; 12] = [
    "authorization",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "cookie",
    "x-forwarded-for",
    "x-request-id",
    "x-envoy-original-path",
];

/// Envoy acts on `x-envoy-*` request headers (timeouts, retries) and forwards `x-forwarded-*`.
const RESERVED_HEADER_PREFIXES: [&str; 2] = ["x-envoy-", "x-forwarded-"];

// === impl JwtAuthzConfig ===

impl JwtAuthzConfig {
    /// Parses and validates the filter configuration (the EnvoyFilter `configuration` bytes).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(bytes)?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        if raw.issuers.is_empty() {
            return Err(field_error("issuers", "at least one issuer is required"));
        }
        let mut issuers = Vec::with_capacity(raw.issuers.len());
        let mut seen_issuers = HashSet::new();
        for (index, raw_issuer) in raw.issuers.into_iter().enumerate() {
            let field = format!("issuers[{index}]");
            if !seen_issuers.insert(raw_issuer.issuer.clone()) {
                return Err(field_error(format!("{field}.issuer"), "duplicate issuer"));
            }
            issuers.push(validate_issuer(&field, raw_issuer)?);
        }

        let clock_skew_seconds = raw.clock_skew_seconds.unwrap_or(DEFAULT_CLOCK_SKEW_SECONDS);
        if clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS {
            return Err(field_error(
                "clockSkewSeconds",
                format!("must be at most {MAX_CLOCK_SKEW_SECONDS}"),
            ));
        }
        let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if !(256..=16_384).contains(&max_token_bytes) {
            return Err(field_error(
                "maxTokenBytes",
                "must be between 256 and 16384",
            ));
        }
        let cache_size = raw.cache_size.unwrap_or(DEFAULT_CACHE_SIZE);
        if cache_size > 100_000 {
            return Err(field_error("cacheSize", "must be at most 100000"));
        }
        let realm = raw.realm.unwrap_or_else(|| DEFAULT_REALM.to_owned());
        let realm_is_quotable = !realm.is_empty()
            && realm.len() <= 128
            && realm
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
        if !realm_is_quotable {
            return Err(field_error(
                "realm",
                "must be 1-128 printable ASCII characters without '\"' or '\\'",
            ));
        }

        if raw.rules.is_empty() {
            return Err(field_error("rules", "at least one rule is required"));
        }
        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut compared_claims: Vec<String> = Vec::new();
        for (index, raw_rule) in raw.rules.into_iter().enumerate() {
            let rule = validate_rule(index, raw_rule)?;
            if let Access::Authenticated(requirements) = &rule.access {
                for (claim, _) in &requirements.claims_equal {
                    if !compared_claims.contains(claim) {
                        compared_claims.push(claim.clone());
                    }
                }
            }
            rules.push(rule);
        }

        Ok(Self {
            issuers,
            clock_skew_seconds,
            max_token_bytes,
            realm,
            rules,
            identity_headers: validate_identity_headers(raw.identity_headers)?,
            cache_size,
            compared_claims,
        })
    }

    pub fn issuer_id(&self, issuer: &str) -> Option<IssuerId> {
        self.issuers
            .iter()
            .position(|policy| policy.issuer == issuer)
    }

    /// First rule matching the method and the normalized path.
    pub fn match_rule(&self, method: &str, path: &NormalizedPath) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matches(method, path))
    }
}

// === impl Rule ===

impl Rule {
    pub fn matches(&self, method: &str, path: &NormalizedPath) -> bool {
        let method_matches = self
            .methods
            .as_ref()
            .is_none_or(|methods| methods.iter().any(|m| m == method));
        method_matches
            && match &self.path {
                PathMatch::Exact(exact) => path.as_str() == exact,
                PathMatch::Prefix(prefix) => path.has_segment_prefix(prefix),
            }
    }
}

// === impl IdentityHeaderNames ===

impl IdentityHeaderNames {
    /// Every identity header; all are removed from each incoming request.
    pub fn all(&self) -> [&HeaderName; 4] {
        [&self.subject, &self.scopes, &self.issuer, &self.client_id]
    }
}

fn validate_issuer(field: &str, raw: RawIssuer) -> Result<IssuerPolicy, ConfigError> {
    // The issuer is also written into the issuer identity header, so it must be a safe value.
    let issuer_is_printable = raw.issuer.bytes().all(|b| b.is_ascii_graphic());
    if raw.issuer.is_empty() || raw.issuer.len() > 256 || !issuer_is_printable {
        return Err(field_error(
            format!("{field}.issuer"),
            "must be 1-256 printable ASCII characters without spaces",
        ));
    }
    if raw.algorithms.is_empty() {
        return Err(field_error(
            format!("{field}.algorithms"),
            "at least one algorithm is required",
        ));
    }
    let mut algorithms = Vec::with_capacity(raw.algorithms.len());
    for (index, name) in raw.algorithms.iter().enumerate() {
        let algorithm = Algorithm::from_name(name).map_err(|error| {
            let problem = match error {
                AlgorithmError::None => "alg `none` is never allowed".to_owned(),
                AlgorithmError::Unsupported => format!("unsupported algorithm `{name}`"),
            };
            field_error(format!("{field}.algorithms[{index}]"), problem)
        })?;
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    let hmac_count = algorithms
        .iter()
        .filter(|algorithm| algorithm.is_hmac())
        .count();
    let is_hmac_issuer = hmac_count > 0;
    if is_hmac_issuer && hmac_count != algorithms.len() {
        return Err(field_error(
            format!("{field}.algorithms"),
            "HS* algorithms cannot be mixed with asymmetric ones (key-confusion risk)",
        ));
    }

    if is_hmac_issuer {
        let Some(secret) = raw.shared_secret else {
            return Err(field_error(
                format!("{field}.sharedSecret"),
                "required for HS* algorithms",
            ));
        };
        if raw.jwks.is_some() || raw.remote_jwks.is_some() {
            return Err(field_error(
                format!("{field}.jwks"),
                "an HS* issuer takes only a sharedSecret, no JWKS",
            ));
        }
        let secret = base64url::decode(&secret.0).map_err(|_| {
            field_error(
                format!("{field}.sharedSecret"),
                "must be unpadded base64url",
            )
        })?;
        let minimum = algorithms
            .iter()
            .map(|a| a.min_hmac_secret_bytes())
            .max()
            .unwrap_or(32);
        if secret.len() < minimum {
            return Err(field_error(
                format!("{field}.sharedSecret"),
                format!("must decode to at least {minimum} bytes"),
            ));
        }
        return Ok(IssuerPolicy {
            issuer: raw.issuer,
            algorithms,
            static_keys: KeySet::from_keys(vec![VerificationKey::hmac(secret)]),
            remote_jwks: None,
        });
    }

    if raw.shared_secret.is_some() {
        return Err(field_error(
            format!("{field}.sharedSecret"),
            "only allowed for an issuer whose algorithms are all HS*",
        ));
    }
    if raw.jwks.is_none() && raw.remote_jwks.is_none() {
        return Err(field_error(field, "needs `jwks` and/or `remoteJwks`"));
    }
    let static_keys = match &raw.jwks {
        None => KeySet::default(),
        Some(document) => {
            let parsed = KeySet::from_jwks_value(document)
                .map_err(|error| field_error(format!("{field}.jwks"), error.to_string()))?;
            if let Some(skipped) = parsed.skipped.first() {
                return Err(field_error(
                    format!("{field}.jwks.keys[{}]", skipped.index),
                    format!("unusable key ({:?})", skipped.reason),
                ));
            }
            parsed.keys
        }
    };
    let remote_jwks = raw
        .remote_jwks
        .map(|remote| validate_remote_jwks(&format!("{field}.remoteJwks"), remote))
        .transpose()?;
    Ok(IssuerPolicy {
        issuer: raw.issuer,
        algorithms,
        static_keys,
        remote_jwks,
    })
}

fn validate_remote_jwks(
    field: &str,
    raw: RawRemoteJwks,
) -> Result<RemoteJwksSettings, ConfigError> {
    if raw.cluster.is_empty() {
        return Err(field_error(format!("{field}.cluster"), "must not be empty"));
    }
    if raw.authority.is_empty() || raw.authority.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(field_error(
            format!("{field}.authority"),
            "must be a host[:port]",
        ));
    }
    if !raw.path.starts_with('/') || raw.path.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(field_error(
            format!("{field}.path"),
            "must be an absolute, canonical path",
        ));
    }
    let checks = [
        (
            "refreshIntervalSeconds",
            raw.refresh_interval_seconds,
            10,
            86_400,
        ),
        ("timeoutMillis", raw.timeout_millis, 100, 60_000),
        (
            "minRefetchIntervalSeconds",
            raw.min_refetch_interval_seconds,
            1,
            3_600,
        ),
        (
            "maxStalenessSeconds",
            raw.max_staleness_seconds,
            60,
            7 * 86_400,
        ),
    ];
    for (name, value, minimum, maximum) in checks {
        if !(minimum..=maximum).contains(&value) {
            return Err(field_error(
                format!("{field}.{name}"),
                format!("must be between {minimum} and {maximum}"),
            ));
        }
    }
    if raw.max_staleness_seconds <= raw.refresh_interval_seconds {
        return Err(field_error(
            format!("{field}.maxStalenessSeconds"),
            "must be longer than refreshIntervalSeconds",
        ));
    }
    Ok(RemoteJwksSettings {
        cluster: raw.cluster,
        authority: raw.authority,
        path: raw.path,
        refresh_interval_seconds: raw.refresh_interval_seconds,
        timeout_millis: raw.timeout_millis,
        min_refetch_interval_seconds: raw.min_refetch_interval_seconds,
        max_staleness_seconds: raw.max_staleness_seconds,
    })
}

fn validate_rule(index: usize, raw: RawRule) -> Result<Rule, ConfigError> {
    let field = format!("rules[{index}]");
    let name = raw.name.unwrap_or_else(|| format!("rule-{index}"));
    let path = match (raw.path_prefix, raw.exact_path) {
        (Some(prefix), None) => {
            PathMatch::Prefix(canonical_config_path(&field, "pathPrefix", prefix)?)
        }
        (None, Some(exact)) => PathMatch::Exact(canonical_config_path(&field, "exactPath", exact)?),
        _ => {
            return Err(field_error(
                field,
                "exactly one of `pathPrefix` and `exactPath` is required",
            ))
        }
    };
    let methods = match raw.methods {
        None => None,
        Some(methods) if methods.is_empty() => {
            return Err(field_error(
                format!("{field}.methods"),
                "omit it to match any method",
            ));
        }
        Some(methods) => {
            if let Some((i, _)) = methods.iter().enumerate().find(|(_, method)| {
                method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase())
            }) {
                return Err(field_error(
                    format!("{field}.methods[{i}]"),
                    "must be an upper-case HTTP method",
                ));
            }
            Some(methods)
        }
    };
    let has_requirements = raw.audiences_any_of.is_some()
        || raw.scopes_all_of.is_some()
        || raw.scopes_any_of.is_some()
        || raw.max_auth_age_seconds.is_some()
        || raw.claims_equal.is_some();
    let access = if raw.anonymous {
        if has_requirements {
            return Err(field_error(
                format!("{field}.anonymous"),
                "an anonymous rule cannot have audience, scope, auth-age or claim requirements",
            ));
        }
        Access::Anonymous
    } else {
        let audiences_any_of = raw.audiences_any_of.unwrap_or_default();
        if audiences_any_of.is_empty() || audiences_any_of.iter().any(String::is_empty) {
            return Err(field_error(
                format!("{field}.audiencesAnyOf"),
                "an authenticated rule needs at least one non-empty audience",
            ));
        }
        let scopes_all_of = validate_scopes(&field, "scopesAllOf", raw.scopes_all_of)?;
        let scopes_any_of = validate_scopes(&field, "scopesAnyOf", raw.scopes_any_of)?;
        if raw.max_auth_age_seconds == Some(0) {
            return Err(field_error(
                format!("{field}.maxAuthAgeSeconds"),
                "must be positive",
            ));
        }
        let mut claims_equal = Vec::new();
        for (claim, value) in raw.claims_equal.unwrap_or_default() {
            let claim_field = format!("{field}.claimsEqual.{claim}");
            if claim.is_empty() || REGISTERED_CLAIMS.contains(&claim.as_str()) {
                return Err(field_error(
                    claim_field,
                    "use the dedicated setting for this claim",
                ));
            }
            let comparable = matches!(&value, Value::String(_) | Value::Bool(_))
                || value.is_i64()
                || value.is_u64();
            if !comparable {
                return Err(field_error(
                    claim_field,
                    "must be a string, boolean or integer",
                ));
            }
            claims_equal.push((claim, value));
        }
        Access::Authenticated(Requirements {
            audiences_any_of,
            scopes_all_of,
            scopes_any_of,
            max_auth_age_seconds: raw.max_auth_age_seconds,
            claims_equal,
        })
    };
    Ok(Rule {
        name,
        methods,
        path,
        access,
    })
}

fn canonical_config_path(field: &str, key: &str, path: String) -> Result<String, ConfigError> {
    match NormalizedPath::parse(&path) {
        Ok(normalized) if normalized.as_str() == path => Ok(path),
        _ => Err(field_error(
            format!("{field}.{key}"),
            "must be a canonical absolute path (no query, dot segments, '//' or needless escapes)",
        )),
    }
}

/// RFC 6749 §3.3 `scope-token`: `%x21 / %x23-5B / %x5D-7E`.
pub(crate) fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

fn validate_scopes(
    field: &str,
    key: &str,
    scopes: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let scopes = scopes.unwrap_or_default();
    if let Some((index, _)) = scopes
        .iter()
        .enumerate()
        .find(|(_, scope)| !is_scope_token(scope))
    {
        return Err(field_error(
            format!("{field}.{key}[{index}]"),
            "must be an RFC 6749 scope token (printable ASCII, no space, '\"' or '\\')",
        ));
    }
    Ok(scopes)
}

fn validate_identity_headers(raw: RawIdentityHeaders) -> Result<IdentityHeaderNames, ConfigError> {
    let parse = |key: &str, name: &str| -> Result<HeaderName, ConfigError> {
        let header = HeaderName::parse(name)
            .map_err(|error| field_error(format!("identityHeaders.{key}"), error.to_string()))?;
        let is_reserved = RESERVED_HEADERS.contains(&header.as_str())
            || RESERVED_HEADER_PREFIXES
                .iter()
                .any(|prefix| header.as_str().starts_with(prefix));
        if is_reserved {
            return Err(field_error(
                format!("identityHeaders.{key}"),
                "must not be a standard or routing header",
            ));
        }
        Ok(header)
    };
    let names = IdentityHeaderNames {
        subject: parse("subject", &raw.subject)?,
        scopes: parse("scopes", &raw.scopes)?,
        issuer: parse("issuer", &raw.issuer)?,
        client_id: parse("clientId", &raw.client_id)?,
    };
    let unique: HashSet<&str> = names.all().iter().map(|name| name.as_str()).collect();
    if unique.len() != 4 {
        return Err(field_error(
            "identityHeaders",
            "the four header names must be distinct",
        ));
    }
    Ok(names)
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::jwt::jwks::tests::{ec_jwk, rsa_jwk};

    pub(crate) fn base_config() -> Value {
        json!({
            "issuers": [{
                "issuer": "https://idp.example",
                "algorithms": ["ES256", "RS256"],
                "jwks": {"keys": [ec_jwk("ec-1"), rsa_jwk("rsa-1", Some("RS256"))]},
                "remoteJwks": {"cluster": "idp", "authority": "idp.example", "path": "/jwks.json"}
            }, {
                "issuer": "https://hmac.example",
                "algorithms": ["HS256"],
                "sharedSecret": base64url::encode(&[0x42u8; 32])
            }],
            "realm": "exchange",
            "rules": [
                {"name": "health", "exactPath": "/healthz", "anonymous": true},
                {"name": "withdraw", "methods": ["POST"], "pathPrefix": "/api/v1/wallet/withdrawals",
                 "audiencesAnyOf": ["wallet"], "scopesAllOf": ["wallet:withdraw"],
                 "maxAuthAgeSeconds": 300, "claimsEqual": {"acr": "mfa"}},
                {"name": "trade", "pathPrefix": "/api/v1/trade", "audiencesAnyOf": ["trade", "api"],
                 "scopesAnyOf": ["trade:read", "trade:write"]}
            ]
        })
    }

    pub(crate) fn parse(config: &Value) -> Result<JwtAuthzConfig, ConfigError> {
        JwtAuthzConfig::from_json(config.to_string().as_bytes())
    }

    #[test]
    fn parses_a_full_config_with_defaults() {
        let config = parse(&base_config()).unwrap();
        assert_eq!(config.issuers.len(), 2);
        assert_eq!(
            config.issuers[0].algorithms,
            [Algorithm::Es256, Algorithm::Rs256]
        );
        assert_eq!(config.issuers[0].static_keys.len(), 2);
        let remote = config.issuers[0].remote_jwks.as_ref().unwrap();
        assert_eq!(remote.refresh_interval_seconds, 300);
        assert_eq!(remote.max_staleness_seconds, 86_400);
        assert_eq!(config.issuers[1].static_keys.len(), 1);
        assert_eq!(config.clock_skew_seconds, 30);
        assert_eq!(config.max_token_bytes, 8192);
        assert_eq!(config.cache_size, 4096);
        assert_eq!(config.realm, "exchange");
        assert_eq!(config.identity_headers.subject.as_str(), "x-auth-subject");
        assert_eq!(
            config.identity_headers.client_id.as_str(),
            "x-auth-client-id"
        );
        assert_eq!(config.compared_claims, ["acr"]);
        assert_eq!(config.issuer_id("https://hmac.example"), Some(1));
        assert_eq!(config.issuer_id("https://other"), None);
    }

    #[test]
    fn first_matching_rule_wins() {
        let config = parse(&base_config()).unwrap();
        let rule_name = |method: &str, path: &str| {
            let path = NormalizedPath::parse(path).unwrap();
            config
                .match_rule(method, &path)
                .map(|(_, rule)| rule.name.clone())
        };
        assert_eq!(rule_name("GET", "/healthz").as_deref(), Some("health"));
        assert_eq!(rule_name("GET", "/healthz/x"), None);
        assert_eq!(
            rule_name("POST", "/api/v1/wallet/withdrawals/1").as_deref(),
            Some("withdraw")
        );
        assert_eq!(rule_name("GET", "/api/v1/wallet/withdrawals"), None);
        assert_eq!(
            rule_name("DELETE", "/api/v1/trade/orders?x").as_deref(),
            Some("trade")
        );
        assert_eq!(rule_name("GET", "/api/v1/trades"), None);
        assert_eq!(rule_name("get", "/api/v1/trade"), Some("trade".to_owned()));
    }

    #[test]
    fn rejects_invalid_configs_naming_the_field() {
        type Edit = fn(&mut Value);
        let cases: Vec<(Edit, &str)> = vec![
            (|c| c["issuers"] = json!([]), "issuers"),
            (
                |c| c["issuers"][0]["algorithms"] = json!(["none"]),
                "issuers[0].algorithms[0]",
            ),
            (
                |c| c["issuers"][0]["algorithms"] = json!(["ES256", "NONE"]),
                "issuers[0].algorithms[1]",
            ),
            (
                |c| c["issuers"][0]["algorithms"] = json!(["RS257"]),
                "issuers[0].algorithms[0]",
            ),
            (
                |c| c["issuers"][0]["algorithms"] = json!([]),
                "issuers[0].algorithms",
            ),
            (
                |c| c["issuers"][0]["algorithms"] = json!(["RS256", "HS256"]),
                "issuers[0].algorithms",
            ),
            (
                |c| c["issuers"][0]["sharedSecret"] = json!("AAAA"),
                "issuers[0].sharedSecret",
            ),
            (
                |c| c["issuers"][1]["issuer"] = json!("https://idp.example"),
                "issuers[1].issuer",
            ),
            (
                |c| {
                    c["issuers"][1]
                        .as_object_mut()
                        .unwrap()
                        .remove("sharedSecret");
                },
                "issuers[1].sharedSecret",
            ),
            (
                |c| c["issuers"][1]["sharedSecret"] = json!(base64url::encode(&[1u8; 31])),
                "issuers[1].sharedSecret",
            ),
            (
                |c| c["issuers"][1]["sharedSecret"] = json!("not base64!"),
                "issuers[1].sharedSecret",
            ),
            (
                |c| c["issuers"][1]["jwks"] = json!({"keys": []}),
                "issuers[1].jwks",
            ),
            (
                |c| {
                    let issuer = c["issuers"][0].as_object_mut().unwrap();
                    issuer.remove("jwks");
                    issuer.remove("remoteJwks");
                },
                "issuers[0]",
            ),
            (
                |c| c["issuers"][0]["jwks"]["keys"][1]["alg"] = json!("ES256"),
                "issuers[0].jwks.keys[1]",
            ),
            (
                |c| c["issuers"][0]["jwks"] = json!({"keys": []}),
                "issuers[0].jwks",
            ),
            (
                |c| c["issuers"][0]["remoteJwks"]["refreshIntervalSeconds"] = json!(1),
                "issuers[0].remoteJwks.refreshIntervalSeconds",
            ),
            (
                |c| c["issuers"][0]["remoteJwks"]["maxStalenessSeconds"] = json!(100),
                "issuers[0].remoteJwks.maxStalenessSeconds",
            ),
            (
                |c| c["issuers"][0]["remoteJwks"]["cluster"] = json!(""),
                "issuers[0].remoteJwks.cluster",
            ),
            (
                |c| c["issuers"][0]["remoteJwks"]["path"] = json!("jwks"),
                "issuers[0].remoteJwks.path",
            ),
            (|c| c["clockSkewSeconds"] = json!(61), "clockSkewSeconds"),
            (|c| c["maxTokenBytes"] = json!(100), "maxTokenBytes"),
            (|c| c["cacheSize"] = json!(1_000_000), "cacheSize"),
            (|c| c["realm"] = json!("a\"b"), "realm"),
            (|c| c["realm"] = json!(""), "realm"),
            (|c| c["rules"] = json!([]), "rules"),
            (|c| c["rules"][0]["pathPrefix"] = json!("/x"), "rules[0]"),
            (
                |c| {
                    c["rules"][0].as_object_mut().unwrap().remove("exactPath");
                },
                "rules[0]",
            ),
            (
                |c| c["rules"][0]["exactPath"] = json!("/a/../b"),
                "rules[0].exactPath",
            ),
            (
                |c| c["rules"][0]["exactPath"] = json!("/a?b"),
                "rules[0].exactPath",
            ),
            (
                |c| c["rules"][0]["exactPath"] = json!("/%61"),
                "rules[0].exactPath",
            ),
            (
                |c| c["rules"][0]["scopesAllOf"] = json!(["x"]),
                "rules[0].anonymous",
            ),
            (
                |c| c["rules"][1]["methods"] = json!(["post"]),
                "rules[1].methods[0]",
            ),
            (|c| c["rules"][1]["methods"] = json!([]), "rules[1].methods"),
            (
                |c| {
                    c["rules"][1]
                        .as_object_mut()
                        .unwrap()
                        .remove("audiencesAnyOf");
                },
                "rules[1].audiencesAnyOf",
            ),
            (
                |c| c["rules"][1]["audiencesAnyOf"] = json!([""]),
                "rules[1].audiencesAnyOf",
            ),
            (
                |c| c["rules"][1]["scopesAllOf"] = json!(["a b"]),
                "rules[1].scopesAllOf[0]",
            ),
            (
                |c| c["rules"][2]["scopesAnyOf"] = json!(["ok", "q\"uote"]),
                "rules[2].scopesAnyOf[1]",
            ),
            (
                |c| c["rules"][1]["maxAuthAgeSeconds"] = json!(0),
                "rules[1].maxAuthAgeSeconds",
            ),
            (
                |c| c["rules"][1]["claimsEqual"] = json!({"iss": "x"}),
                "rules[1].claimsEqual.iss",
            ),
            (
                |c| c["rules"][1]["claimsEqual"] = json!({"acr": ["x"]}),
                "rules[1].claimsEqual.acr",
            ),
            (
                |c| c["rules"][1]["claimsEqual"] = json!({"acr": 1.5}),
                "rules[1].claimsEqual.acr",
            ),
            (
                |c| c["identityHeaders"] = json!({"subject": "authorization"}),
                "identityHeaders.subject",
            ),
            (
                |c| c["identityHeaders"] = json!({"scopes": "bad header"}),
                "identityHeaders.scopes",
            ),
            (
                |c| c["identityHeaders"] = json!({"issuer": "x-auth-subject"}),
                "identityHeaders",
            ),
            (
                |c| c["identityHeaders"] = json!({"clientId": "X-Envoy-Upstream-Rq-Timeout-Ms"}),
                "identityHeaders.clientId",
            ),
            (
                |c| c["identityHeaders"] = json!({"issuer": "x-forwarded-user"}),
                "identityHeaders.issuer",
            ),
            (
                |c| c["issuers"][0]["issuer"] = json!("https://idp\r\n"),
                "issuers[0].issuer",
            ),
            (
                |c| c["issuers"][0]["issuer"] = json!("https://idp x"),
                "issuers[0].issuer",
            ),
            (
                |c| c["issuers"][0]["issuer"] = json!(""),
                "issuers[0].issuer",
            ),
        ];
        for (edit, expected_field) in cases {
            let mut config = base_config();
            edit(&mut config);
            match parse(&config) {
                Err(ConfigError::Field { field, .. }) => {
                    assert_eq!(field, expected_field, "{config}")
                }
                other => panic!("expected an error on {expected_field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_unknown_fields_and_bad_json() {
        let mut config = base_config();
        config["issuers"][0]["audience"] = json!("typo");
        let error = parse(&config).unwrap_err();
        assert!(matches!(error, ConfigError::Syntax(_)));
        assert!(error.to_string().contains("audience"), "{error}");
        let mut config = base_config();
        config["rules"][0]["scope"] = json!("typo");
        assert!(matches!(parse(&config), Err(ConfigError::Syntax(_))));
        assert!(JwtAuthzConfig::from_json(b"{").is_err());
    }

    #[test]
    fn secrets_never_reach_debug_output() {
        let config = parse(&base_config()).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains(&base64url::encode(&[0x42u8; 32])));
        assert!(!printed.contains("BBBB"));
        assert!(format!("{:?}", Secret("hunter2".to_owned())) == "<redacted>");
    }
}
