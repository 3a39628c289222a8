//! jwt-authz policy logic: bearer-token extraction, JWS verification, per-route audience and
//! scope policy, RFC 6750 answers, identity hand-off, verified-token cache and JWKS lifecycle.
//!
//! Everything here is pure (time is passed in, no host calls), so the filter crate is glue:
//! it builds a [`RequestView`], calls [`JwtAuthzConfig::authorize`], and turns the
//! [`Authorization`] into headers or a local reply; it drives [`KeyRing`] from its tick and
//! HTTP-callout callbacks.
//!
//! Decisions, each documented in its module:
//! * credentials ([`extract`]): `Authorization: Bearer` only, scheme case-insensitive, exactly
//!   one space, one header; `access_token` in the query → 400 `invalid_request`; a non-Bearer
//!   scheme → 401 challenge;
//! * token format ([`token`]): compact JWS only, strict base64url, no duplicate JSON members,
//!   no `alg: none`, no header key material, no `crit`;
//! * keys ([`jwks`]): `kid`-bound, `alg`-bound when the JWK says so, never `oct` from a JWKS,
//!   no guessing among several keys when `kid` is absent;
//! * claims ([`claims`]): `exp` required, skew ≤ 60 s (default 30), `aud` any-of required on
//!   every authenticated rule, scopes from `scope` and `scp`;
//! * answers ([`decision`]): 401/403/400 per RFC 6750, `insufficient_user_authentication`
//!   (RFC 9470) for a stale `auth_time`, 403 `access_denied` for unmatched paths;
//! * identity ([`identity`]): claim values written exactly or the request is denied;
//! * cache ([`cache`]): SHA-256-keyed, CLOCK-bounded, dies at `exp`, revalidated against
//!   current keys;
//! * JWKS ([`keyring`]): single-flight, rate-limited refetch on unknown `kid`, last-known-good,
//!   fail closed after `maxStalenessSeconds`, snapshots shareable across VMs;
//! * crypto ([`verify`]): behind [`SignatureVerifier`], so Envoy's native `verify_signature`
//!   can take over RS*/ES* without touching the policy.

pub mod algorithm;
pub mod authorizer;
pub mod base64url;
pub mod cache;
pub mod claims;
pub mod config;
pub mod decision;
pub mod extract;
pub mod host_verify;
pub mod identity;
pub mod jwks;
pub mod keyring;
pub mod token;
pub mod verify;

#[cfg(test)]
mod tests;

pub use algorithm::Algorithm;
pub use authorizer::{Authorization, CacheUse, RequestView};
pub use cache::{CacheKey, TokenCache, VerifiedToken};
pub use config::{ConfigError, IssuerId, JwtAuthzConfig};
pub use decision::{Denial, DenyReason};
pub use host_verify::HostSignatureVerifier;
pub use identity::Identity;
pub use keyring::{KeyFreshness, KeyRing, RemoteKeys, UnknownKeyAction};
pub use verify::{FallbackVerifier, PureRustVerifier, SignatureVerifier};
