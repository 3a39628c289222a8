//! OWASP response hardening: which headers every response gets, which it loses.
//!
//! The policy is parsed once from the filter's JSON configuration
//! ([`SecurityHeadersPolicy::from_json`]) and then answers one question per
//! response ([`SecurityHeadersPolicy::decide_response`]): given the request path
//! and the names of the headers the response carries, which headers to remove and
//! which to set. [`Scope::rewrite`] gives the same answer as the response's complete
//! new header list, which the glue hands to the host in one call; it decides nothing
//! itself.
//!
//! Route overrides are chosen by the longest `pathPrefix` that matches whole path
//! segments of `:path` (query stripped); responses whose request matched no route,
//! or never reached the filter, get the top-level policy.

mod config;
mod field_path;
mod policy;
mod preset;

pub use config::{ConfigError, ConfigProblem, MAX_LIST_LEN, MAX_ROUTES, MAX_VALUE_LEN};
pub use field_path::FieldPath;
pub use policy::{
    path_without_query, HeaderMode, HeaderOperation, HeaderRule, PathPrefix, PolicySummary,
    ResponseDecision, Rewrite, Scope, SecurityHeadersPolicy,
};
pub use preset::{Preset, API_HEADERS, API_REMOVE};

#[cfg(test)]
mod tests;
