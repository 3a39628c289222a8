//! ratelimit-tagger: trusted client identity, route class and weight as descriptor inputs
//! for Envoy's global `ratelimit` filter, and the draft-09 rate-limit response headers.
//!
//! Per request the glue
//! 1. removes every client-sent copy of the descriptor headers
//!    ([`DescriptorHeaderNames::to_strip`]),
//! 2. gathers [`RequestFacts`]: method, path, all `x-forwarded-for` lines, `source.address`, and
//!    the verified subject jwt-authz left in filter state ([`identity`] explains the channel),
//! 3. calls [`tag_request`] and either sets [`RequestTags::headers_to_set`] or, with
//!    `onMissingIdentity: reject`, answers [`MISSING_IDENTITY_STATUS`].
//!
//! On the response path, [`RateLimitReport`] turns the rate-limit service's answer (or Envoy's
//! draft-03 `x-ratelimit-*` headers) into `RateLimit-Policy`, `RateLimit` and `Retry-After`.
//!
//! [`rls_config`] holds the rate-limit service's own configuration format and semantics, for
//! the test peer that stands in for envoyproxy/ratelimit.

pub mod client_ip;
pub mod config;
pub mod descriptors;
pub mod identity;
pub mod response_headers;
pub mod rls_config;
pub mod route_class;

pub use client_ip::{Cidr, ClientIpPolicy, ClientKey, MissingClientIp};
pub use config::{ConfigError, OnMissingIdentity, TaggerConfig};
pub use descriptors::{
    tag_request, ClientBucket, DescriptorHeaderNames, RequestFacts, RequestTags, TagDecision,
    MISSING_IDENTITY_STATUS, UNKNOWN_CLIENT_KEY,
};
pub use identity::{SubjectError, UserKey, DEFAULT_VERIFIED_SUBJECT_PROPERTY};
pub use response_headers::{
    render_ratelimit, render_ratelimit_policy, retry_after_seconds, QuotaPolicy, RateLimitReport,
    RlsCode, RlsDescriptorStatus, RlsLimit, RlsUnit, ServiceLimit,
};
pub use route_class::{Classification, RouteClass, RouteRule, RouteTable};
