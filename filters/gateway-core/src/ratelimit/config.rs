//! The tagger's configuration: parsed once in `on_configure`, validated into an immutable
//! [`TaggerConfig`], rejected with an error that names the field.
//!
//! ```json
//! {
//!   "clientIp": { "trustedHops": 1, "trustedCidrs": ["10.0.0.0/8"],
//!                 "ipv4PrefixLength": 32, "ipv6PrefixLength": 64 },
//!   "routeClasses": [
//!     { "methods": ["POST"],   "pathPrefix": "/api/v1/trade/orders", "class": "order", "weight": 1 },
//!     { "methods": ["DELETE"], "pathPrefix": "/api/v1/trade/orders", "class": "order_cancel", "weight": 1 },
//!     { "methods": ["POST"],   "pathPrefix": "/api/v1/wallet/withdrawals", "class": "withdrawal", "weight": 10 },
//!     { "methods": ["GET", "HEAD"], "pathPrefix": "/api/v1/", "class": "account_read", "weight": 1 }
//!   ],
//!   "defaultClass": { "class": "public", "weight": 1 },
//!   "onMissingIdentity": "sharedBucket",
//!   "descriptorHeaders": { "clientIp": "x-rl-client-ip", "user": "x-rl-user",
//!                          "class": "x-rl-class", "weight": "x-rl-weight" },
//!   "verifiedSubjectProperty": "svcgw.verified_subject"
//! }
//! ```
//!
//! `onMissingIdentity` decides what happens when no client address can be derived (fewer
//! forwarded-for entries than trusted hops, garbage where the client entry should be, no peer
//! address):
//! * `sharedBucket` (default): the request is keyed by the fixed client key `unknown`, one
//!   bucket shared by every such request and limited in the rate-limit service like any other
//!   key. This is the fail-safe choice for a public edge: a wrong `trustedHops` after an
//!   infrastructure change must not turn into a 400 for every client (an outage), and it must
//!   not become a free-for-all either; the shared bucket caps it, and the fallback metric says
//!   why. A client cannot gain by provoking it: it only joins a bucket it shares with everyone
//!   else who did the same.
//! * `reject`: answer 400 instead, for deployments that prefer strictness over availability.

use serde::Deserialize;
use thiserror::Error;

use super::client_ip::{Cidr, CidrError, ClientIpPolicy, MAX_TRUSTED_HOPS};
use super::descriptors::DescriptorHeaderNames;
use super::identity::{is_valid_property_name, DEFAULT_VERIFIED_SUBJECT_PROPERTY};
use super::route_class::{RouteClass, RouteRule, RouteSyntaxError, RouteTable};

/// Most route rules: matching is a linear scan on every request.
pub const MAX_ROUTE_RULES: usize = 128;

/// Most trusted ranges; each is checked per hop.
pub const MAX_TRUSTED_CIDRS: usize = 64;

/// Shortest accepted IPv4 key prefix (the widest bucket): anything wider puts unrelated
/// networks into one bucket and is a typo, not a policy.
pub const MIN_IPV4_PREFIX_LEN: u8 = 16;
/// Shortest accepted IPv6 key prefix: a /32 is already a whole provider allocation.
pub const MIN_IPV6_PREFIX_LEN: u8 = 32;

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggerConfig {
    client_ip: ClientIpPolicy,
    routes: RouteTable,
    on_missing_identity: OnMissingIdentity,
    descriptor_headers: DescriptorHeaderNames,
    verified_subject_property: String,
}

/// What to do when no client address can be derived (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnMissingIdentity {
    #[default]
    SharedBucket,
    Reject,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration is not valid JSON for ratelimit-tagger: {0}")]
    Json(#[from] serde_json::Error),
    #[error("clientIp: set trustedHops and/or trustedCidrs; with neither, every request would be keyed by the proxy in front of the gateway")]
    NoTrustedProxies,
    #[error("clientIp.trustedHops: {value} is more than {MAX_TRUSTED_HOPS}")]
    TrustedHops { value: u64 },
    #[error("clientIp.trustedCidrs: more than {MAX_TRUSTED_CIDRS} ranges")]
    TooManyCidrs,
    #[error("{field}: {source}")]
    Cidr {
        field: String,
        #[source]
        source: CidrError,
    },
    #[error("{field}: {value} is outside {min}..={max}")]
    PrefixLength {
        field: &'static str,
        value: u64,
        min: u8,
        max: u8,
    },
    #[error("routeClasses: more than {MAX_ROUTE_RULES} rules")]
    TooManyRules,
    #[error("{field}: {source}")]
    Route {
        field: String,
        #[source]
        source: RouteSyntaxError,
    },
    #[error("{field}: an empty list matches nothing; omit `methods` to match every method")]
    EmptyMethods { field: String },
    #[error("{field}: `{method}` is listed twice")]
    DuplicateMethod { field: String, method: String },
    #[error("{field}: unreachable, every request it matches is already matched by {earlier}")]
    ShadowedRule { field: String, earlier: String },
    #[error("{field}: `{value}` is not a lower-case header name made of letters, digits and `-`")]
    HeaderName { field: String, value: String },
    #[error("{field}: `{value}` is a header the gateway or Envoy itself relies on; pick a dedicated name")]
    ReservedHeaderName { field: String, value: String },
    #[error("{field}: `{value}` is already used by descriptorHeaders.{other}")]
    DuplicateHeaderName {
        field: String,
        value: String,
        other: &'static str,
    },
    #[error("verifiedSubjectProperty: `{0}` must be `svcgw.` followed by dot-separated lower-case identifiers")]
    PropertyName(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    client_ip: RawClientIp,
    route_classes: Vec<RawRouteRule>,
    default_class: RawClass,
    #[serde(default)]
    on_missing_identity: OnMissingIdentity,
    #[serde(default)]
    descriptor_headers: RawDescriptorHeaders,
    #[serde(default = "default_subject_property")]
    verified_subject_property: String,
}

// Numbers are read as u64 and range-checked here, so the error names the field instead of
// serde's "invalid value: integer `300`, expected u8".
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawClientIp {
    trusted_hops: Option<u64>,
    #[serde(default)]
    trusted_cidrs: Vec<String>,
    #[serde(default = "default_ipv4_prefix")]
    ipv4_prefix_length: u64,
    #[serde(default = "default_ipv6_prefix")]
    ipv6_prefix_length: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRouteRule {
    methods: Option<Vec<String>>,
    path_prefix: String,
    class: String,
    weight: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawClass {
    class: String,
    #[serde(default = "default_weight")]
    weight: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDescriptorHeaders {
    #[serde(default = "default_client_ip_header")]
    client_ip: String,
    #[serde(default = "default_user_header")]
    user: String,
    #[serde(default = "default_class_header")]
    class: String,
    #[serde(default = "default_weight_header")]
    weight: String,
}

fn default_subject_property() -> String {
    DEFAULT_VERIFIED_SUBJECT_PROPERTY.to_owned()
}
fn default_ipv4_prefix() -> u64 {
    32
}
fn default_ipv6_prefix() -> u64 {
    64
}
fn default_weight() -> u64 {
    1
}
fn default_client_ip_header() -> String {
    DescriptorHeaderNames::DEFAULT_CLIENT_IP.to_owned()
}
fn default_user_header() -> String {
    DescriptorHeaderNames::DEFAULT_USER.to_owned()
}
fn default_class_header() -> String {
    DescriptorHeaderNames::DEFAULT_CLASS.to_owned()
}
fn default_weight_header() -> String {
    DescriptorHeaderNames::DEFAULT_WEIGHT.to_owned()
}

impl Default for RawDescriptorHeaders {
    fn default() -> Self {
        Self {
            client_ip: default_client_ip_header(),
            user: default_user_header(),
            class: default_class_header(),
            weight: default_weight_header(),
        }
    }
}

// === impl TaggerConfig ===

impl TaggerConfig {
    /// Parses and validates the EnvoyFilter `configuration` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(bytes)?;
        Ok(Self {
            client_ip: validate_client_ip(raw.client_ip)?,
            routes: validate_routes(raw.route_classes, raw.default_class)?,
            on_missing_identity: raw.on_missing_identity,
            descriptor_headers: validate_descriptor_headers(raw.descriptor_headers)?,
            verified_subject_property: validate_property(raw.verified_subject_property)?,
        })
    }

    pub fn client_ip(&self) -> &ClientIpPolicy {
        &self.client_ip
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn on_missing_identity(&self) -> OnMissingIdentity {
        self.on_missing_identity
    }

    pub fn descriptor_headers(&self) -> &DescriptorHeaderNames {
        &self.descriptor_headers
    }

    /// The property (filter-state) name to read the verified subject from.
    pub fn verified_subject_property(&self) -> &str {
        &self.verified_subject_property
    }
}

fn validate_client_ip(raw: RawClientIp) -> Result<ClientIpPolicy, ConfigError> {
    if raw.trusted_hops.is_none() && raw.trusted_cidrs.is_empty() {
        return Err(ConfigError::NoTrustedProxies);
    }
    let trusted_hops = raw
        .trusted_hops
        .map(|value| {
            u8::try_from(value)
                .ok()
                .filter(|hops| *hops <= MAX_TRUSTED_HOPS)
                .ok_or(ConfigError::TrustedHops { value })
        })
        .transpose()?;
    if raw.trusted_cidrs.len() > MAX_TRUSTED_CIDRS {
        return Err(ConfigError::TooManyCidrs);
    }
    let trusted_cidrs = raw
        .trusted_cidrs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            text.parse::<Cidr>().map_err(|source| ConfigError::Cidr {
                field: format!("clientIp.trustedCidrs[{index}]"),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ipv4 = prefix_length(
        "clientIp.ipv4PrefixLength",
        raw.ipv4_prefix_length,
        MIN_IPV4_PREFIX_LEN,
        32,
    )?;
    let ipv6 = prefix_length(
        "clientIp.ipv6PrefixLength",
        raw.ipv6_prefix_length,
        MIN_IPV6_PREFIX_LEN,
        128,
    )?;
    Ok(ClientIpPolicy::new(trusted_hops, trusted_cidrs, ipv4, ipv6))
}

fn prefix_length(field: &'static str, value: u64, min: u8, max: u8) -> Result<u8, ConfigError> {
    u8::try_from(value)
        .ok()
        .filter(|len| (min..=max).contains(len))
        .ok_or(ConfigError::PrefixLength {
            field,
            value,
            min,
            max,
        })
}

fn validate_routes(
    raw_rules: Vec<RawRouteRule>,
    raw_default: RawClass,
) -> Result<RouteTable, ConfigError> {
    if raw_rules.len() > MAX_ROUTE_RULES {
        return Err(ConfigError::TooManyRules);
    }
    let mut rules: Vec<RouteRule> = Vec::with_capacity(raw_rules.len());
    for (index, raw) in raw_rules.into_iter().enumerate() {
        let field = format!("routeClasses[{index}]");
        if let Some(methods) = &raw.methods {
            if methods.is_empty() {
                return Err(ConfigError::EmptyMethods {
                    field: format!("{field}.methods"),
                });
            }
            for (i, method) in methods.iter().enumerate() {
                if methods.iter().take(i).any(|m| m == method) {
                    return Err(ConfigError::DuplicateMethod {
                        field: format!("{field}.methods"),
                        method: method.clone(),
                    });
                }
            }
        }
        let class = RouteClass::new(&raw.class, raw.weight)
            .map_err(|source| route_error(&field, source))?;
        let rule = RouteRule::new(raw.methods, &raw.path_prefix, class)
            .map_err(|source| route_error(&field, source))?;
        if let Some(earlier) = rules.iter().position(|e| rule.is_shadowed_by(e)) {
            return Err(ConfigError::ShadowedRule {
                field,
                earlier: format!("routeClasses[{earlier}]"),
            });
        }
        rules.push(rule);
    }
    let default_class = RouteClass::new(&raw_default.class, raw_default.weight)
        .map_err(|source| route_error("defaultClass", source))?;
    Ok(RouteTable::new(rules, default_class))
}

/// Attributes a route syntax error to the JSON field that holds the offending value.
fn route_error(rule_field: &str, source: RouteSyntaxError) -> ConfigError {
    let key = match source {
        RouteSyntaxError::ClassNameEmpty
        | RouteSyntaxError::ClassNameTooLong
        | RouteSyntaxError::ClassNameCharacters => "class",
        RouteSyntaxError::WeightOutOfRange => "weight",
        RouteSyntaxError::MethodNotUppercaseToken => "methods",
        RouteSyntaxError::PrefixNotAbsolute
        | RouteSyntaxError::PrefixHasQueryOrFragment
        | RouteSyntaxError::PrefixNotCanonical
        | RouteSyntaxError::PrefixCharacters => "pathPrefix",
    };
    ConfigError::Route {
        field: format!("{rule_field}.{key}"),
        source,
    }
}

/// Headers that must never be chosen as descriptor carriers: the tagger strips its descriptor
/// headers from every request, so naming one of these would delete something the gateway or
/// an upstream needs.
const RESERVED_HEADER_NAMES: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "forwarded",
    "host",
    "te",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
    "x-request-id",
];

fn validate_descriptor_headers(
    raw: RawDescriptorHeaders,
) -> Result<DescriptorHeaderNames, ConfigError> {
    let named: [(&'static str, String); 4] = [
        ("clientIp", raw.client_ip),
        ("user", raw.user),
        ("class", raw.class),
        ("weight", raw.weight),
    ];
    let mut seen: Vec<(&'static str, &str)> = Vec::with_capacity(named.len());
    for (key, value) in &named {
        let field = format!("descriptorHeaders.{key}");
        let well_formed = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            return Err(ConfigError::HeaderName {
                field,
                value: value.clone(),
            });
        }
        if RESERVED_HEADER_NAMES.contains(&value.as_str()) || value.starts_with("x-envoy-") {
            return Err(ConfigError::ReservedHeaderName {
                field,
                value: value.clone(),
            });
        }
        if let Some((other, _)) = seen.iter().find(|(_, v)| *v == value.as_str()) {
            return Err(ConfigError::DuplicateHeaderName {
                field,
                value: value.clone(),
                other,
            });
        }
        seen.push((key, value.as_str()));
    }
    let [(_, client_ip), (_, user), (_, class), (_, weight)] = named;
    Ok(DescriptorHeaderNames::new(client_ip, user, class, weight))
}

fn validate_property(name: String) -> Result<String, ConfigError> {
    if is_valid_property_name(&name) {
        Ok(name)
    } else {
        Err(ConfigError::PropertyName(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
        "clientIp": { "trustedHops": 1, "trustedCidrs": ["10.0.0.0/8", "2600:1f18::/32"] },
        "routeClasses": [
            { "methods": ["POST"], "pathPrefix": "/api/v1/trade/orders", "class": "order", "weight": 1 },
            { "methods": ["DELETE"], "pathPrefix": "/api/v1/trade/orders", "class": "order_cancel", "weight": 1 },
            { "methods": ["POST"], "pathPrefix": "/api/v1/wallet/withdrawals", "class": "withdrawal", "weight": 10 },
            { "methods": ["GET", "HEAD"], "pathPrefix": "/api/v1/", "class": "account_read", "weight": 2 }
        ],
        "defaultClass": { "class": "public" }
    }"#;

    /// Replaces `from` by `to` in the example (which must contain it) and parses the result.
    fn parse_modified(from: &str, to: &str) -> Result<TaggerConfig, ConfigError> {
        assert!(EXAMPLE.contains(from), "test bug: {from}");
        TaggerConfig::from_json(EXAMPLE.replacen(from, to, 1).as_bytes())
    }

    #[test]
    fn parses_the_documented_example_with_defaults() {
        let config = TaggerConfig::from_json(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(config.client_ip().trusted_hops(), Some(1));
        assert_eq!(config.client_ip().trusted_cidrs().len(), 2);
        assert_eq!(config.client_ip().ipv4_prefix_len(), 32);
        assert_eq!(config.client_ip().ipv6_prefix_len(), 64);
        assert_eq!(config.routes().rules().len(), 4);
        assert_eq!(config.routes().default_class().name(), "public");
        assert_eq!(config.routes().default_class().weight(), 1);
        assert_eq!(
            config.on_missing_identity(),
            OnMissingIdentity::SharedBucket
        );
        assert_eq!(config.descriptor_headers().client_ip(), "x-rl-client-ip");
        assert_eq!(config.descriptor_headers().weight(), "x-rl-weight");
        assert_eq!(config.verified_subject_property(), "svcgw.verified_subject");
    }

    #[test]
    fn accepts_optional_fields() {
        let config = parse_modified(
            r#""defaultClass": { "class": "public" }"#,
            r#""defaultClass": { "class": "public", "weight": 2 },
               "onMissingIdentity": "reject",
               "descriptorHeaders": { "user": "x-gw-rl-user" },
               "verifiedSubjectProperty": "svcgw.jwt.sub""#,
        )
        .unwrap();
        assert_eq!(config.on_missing_identity(), OnMissingIdentity::Reject);
        assert_eq!(config.descriptor_headers().user(), "x-gw-rl-user");
        assert_eq!(config.descriptor_headers().class(), "x-rl-class");
        assert_eq!(config.verified_subject_property(), "svcgw.jwt.sub");
        assert_eq!(config.routes().default_class().weight(), 2);

        let only_cidrs = parse_modified(r#""trustedHops": 1, "#, "").unwrap();
        assert_eq!(only_cidrs.client_ip().trusted_hops(), None);
        let only_hops = parse_modified(
            r#", "trustedCidrs": ["10.0.0.0/8", "2600:1f18::/32"]"#,
            r#", "ipv6PrefixLength": 56"#,
        )
        .unwrap();
        assert_eq!(only_hops.client_ip().ipv6_prefix_len(), 56);
    }

    #[test]
    fn rejects_bad_configs_naming_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("{", "", "not valid JSON"),
            (r#""defaultClass""#, r#""surprise": 1, "defaultClass""#, "unknown field `surprise`"),
            (r#""trustedHops""#, r#""trustedhops""#, "unknown field `trustedhops`"),
            (r#""pathPrefix": "/api/v1/", "#, r#""pathprefix": "/api/v1/", "#, "unknown field `pathprefix`"),
            (r#""trustedHops": 1, "trustedCidrs": ["10.0.0.0/8", "2600:1f18::/32"]"#, "", "set trustedHops and/or trustedCidrs"),
            (r#""trustedHops": 1"#, r#""trustedHops": 17"#, "clientIp.trustedHops: 17"),
            (r#""trustedHops": 1"#, r#""trustedHops": -1"#, "invalid value"),
            (r#""10.0.0.0/8""#, r#""10.0.0.1/8""#, "clientIp.trustedCidrs[0]: `10.0.0.1/8` has host bits set"),
            (r#""2600:1f18::/32""#, r#""2600:1f18::/129""#, "clientIp.trustedCidrs[1]: prefix length /129"),
            (r#""trustedHops": 1"#, r#""trustedHops": 1, "ipv6PrefixLength": 129"#, "clientIp.ipv6PrefixLength: 129 is outside 32..=128"),
            (r#""trustedHops": 1"#, r#""trustedHops": 1, "ipv4PrefixLength": 8"#, "clientIp.ipv4PrefixLength: 8 is outside 16..=32"),
            (r#""class": "order", "weight": 1"#, r#""class": "order", "weight": 0"#, "routeClasses[0].weight: weight must be"),
            (r#""class": "order", "weight": 1"#, r#""class": "Order", "weight": 1"#, "routeClasses[0].class: class name may only"),
            (r#""methods": ["DELETE"]"#, r#""methods": ["delete"]"#, "routeClasses[1].methods: methods are upper-case"),
            (r#""methods": ["DELETE"]"#, r#""methods": []"#, "routeClasses[1].methods: an empty list"),
            (r#""methods": ["GET", "HEAD"]"#, r#""methods": ["GET", "GET"]"#, "routeClasses[3].methods: `GET` is listed twice"),
            (r#""/api/v1/wallet/withdrawals""#, r#""api/v1/wallet/withdrawals""#, "routeClasses[2].pathPrefix: path prefix must start"),
            (r#""/api/v1/wallet/withdrawals""#, r#""/api/v1//wallet""#, "routeClasses[2].pathPrefix: path prefix must be canonical"),
            (r#""methods": ["DELETE"]"#, r#""methods": ["POST"]"#, "routeClasses[1]: unreachable, every request it matches is already matched by routeClasses[0]"),
            (r#""defaultClass": { "class": "public" }"#, r#""defaultClass": { "class": "" }"#, "defaultClass.class: class name is empty"),
            (r#""defaultClass": { "class": "public" }"#, r#""defaultClass": { "class": "public", "weight": 5000 }"#, "defaultClass.weight"),
            (r#""defaultClass": { "class": "public" }"#, r#""defaultClass": { "class": "public" }, "onMissingIdentity": "allow""#, "unknown variant `allow`"),
            (r#""defaultClass": { "class": "public" }"#, r#""defaultClass": { "class": "public" }, "descriptorHeaders": { "user": "X-RL-User" }"#, "descriptorHeaders.user: `X-RL-User`"),
            (r#""defaultClass": { "class": "public" }"#, r#""defaultClass": { "class": "public" }, "descriptorHeaders": { "user": "authorization" }"#, "descriptorHeaders.user: `authorization` is a header"),
            (r#""defaultClass": { "class": "public" }"#, r#""defaultClass": { "class": "public" }, "descriptorHeaders": { "class": "x-envoy-ratelimited" }"#, "descriptorHeaders.class: `x-envoy-ratelimited` is a header"),
            (r#""defaultClass": { "class": "public" }"#, r#""defaultClass": { "class": "public" }, "descriptorHeaders": { "weight": "x-rl-class" }"#, "descriptorHeaders.weight: `x-rl-class` is already used by descriptorHeaders.class"),
            (r#""defaultClass": { "class": "public" }"#, r#""defaultClass": { "class": "public" }, "verifiedSubjectProperty": "request""#, "verifiedSubjectProperty: `request`"),
        ];
        for (from, to, want) in cases {
            let err = if *from == "{" {
                TaggerConfig::from_json(b"{").unwrap_err()
            } else {
                parse_modified(from, to).unwrap_err()
            };
            let message = err.to_string();
            assert!(
                message.contains(want),
                "{to}: got `{message}`, want `{want}`"
            );
        }
    }

    #[test]
    fn rejects_missing_required_sections() {
        for (json, want) in [
            (r#"{}"#, "missing field `clientIp`"),
            (
                r#"{"clientIp": {"trustedHops": 1}, "defaultClass": {"class": "public"}}"#,
                "missing field `routeClasses`",
            ),
            (
                r#"{"clientIp": {"trustedHops": 1}, "routeClasses": []}"#,
                "missing field `defaultClass`",
            ),
        ] {
            let message = TaggerConfig::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(message.contains(want), "{json}: {message}");
        }
    }
}
