//! The request decision: path → rule → token → keys → signature → claims → policy.
//!
//! Cheap checks run before expensive ones: the path and rule first (an anonymous route never
//! parses credentials), then extraction with the size cap, header checks, issuer, algorithm
//! allow-list and time claims, and only then the signature. A cached token skips parsing and
//! the signature, but its key must still be published and the route policy always runs.

use std::sync::Arc;

use super::cache::{TokenCache, VerifiedToken};
use super::claims::{ClaimError, TokenClaims};
use super::config::{Access, IssuerId, JwtAuthzConfig, Requirements};
use super::decision::{Denial, DenyReason};
use super::extract::{bearer_token, ExtractError};
use super::identity::Identity;
use super::jwks::{KeyFingerprint, KeyLookup, KeySet, VerificationKey};
use super::keyring::KeyRing;
use super::token::{TokenError, UnverifiedToken};
use super::verify::{ClaimExpectations, SignatureError, SignatureVerifier, SignedInput};
use crate::path::NormalizedPath;

/// The parts of a request the decision needs.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The raw `:path` (query included).
    pub path: &'a str,
    /// Every `Authorization` header value, in order.
    pub authorization: &'a [&'a str],
}

/// Whether the verified-token cache answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
}

#[derive(Debug)]
pub enum Authorization {
    /// Authenticated and authorized: set the identity headers of `token.identity`.
    Allow {
        rule: usize,
        token: Arc<VerifiedToken>,
        cache: CacheUse,
    },
    /// Anonymous route: forward without identity.
    AllowAnonymous {
        rule: usize,
    },
    Deny(Denial),
    /// The token names a key the issuer's remote JWKS does not have (yet). The glue asks
    /// [`crate::jwt::RemoteKeys::on_unknown_key`] whether to refetch and retry; otherwise it
    /// sends `denial`.
    UnknownKey {
        issuer: IssuerId,
        denial: Denial,
    },
}

enum Rejection {
    Deny(DenyReason),
    UnknownKey(IssuerId, DenyReason),
}

impl From<DenyReason> for Rejection {
    fn from(reason: DenyReason) -> Self {
        Self::Deny(reason)
    }
}

// === impl JwtAuthzConfig ===

impl JwtAuthzConfig {
    /// Decides one request. `now` is host time in seconds.
    pub fn authorize(
        &self,
        request: &RequestView<'_>,
        keys: &KeyRing,
        cache: &mut TokenCache,
        verifier: &dyn SignatureVerifier,
        now: u64,
    ) -> Authorization {
        let Ok(path) = NormalizedPath::parse(request.path) else {
            return Authorization::Deny(self.denial(DenyReason::InvalidPath, None));
        };
        let Some((rule_index, rule)) = self.match_rule(request.method, &path) else {
            return Authorization::Deny(self.denial(DenyReason::NoMatchingRule, None));
        };
        let requirements = match &rule.access {
            Access::Anonymous => return Authorization::AllowAnonymous { rule: rule_index },
            Access::Authenticated(requirements) => requirements,
        };
        let token = match bearer_token(request.authorization, request.path, self.max_token_bytes) {
            Ok(token) => token,
            Err(error) => {
                let reason = match error {
                    ExtractError::Missing => DenyReason::MissingToken,
                    ExtractError::MultipleHeaders => DenyReason::MultipleAuthorizationHeaders,
                    ExtractError::Malformed => DenyReason::MalformedAuthorization,
                    ExtractError::InQuery => DenyReason::TokenInQuery,
                    ExtractError::TooLarge => DenyReason::TokenTooLarge,
                };
                return Authorization::Deny(self.denial(reason, Some(requirements)));
            }
        };

        let digest = cache.digest(token);
        let cached = cache
            .get(&digest, now)
            .filter(|verified| self.key_is_current(keys, verified.issuer, verified.key, now));
        let (verified, cache_use) = match cached {
            Some(verified) => (verified, CacheUse::Hit),
            None => match self.verify(token, keys, verifier, now) {
                Ok(verified) => {
                    let verified = Arc::new(verified);
                    cache.insert(digest, Arc::clone(&verified), now);
                    (verified, CacheUse::Miss)
                }
                Err(Rejection::Deny(reason)) => {
                    return Authorization::Deny(self.denial(reason, Some(requirements)));
                }
                Err(Rejection::UnknownKey(issuer, reason)) => {
                    let denial = self.denial(reason, Some(requirements));
                    return Authorization::UnknownKey { issuer, denial };
                }
            },
        };
        match self.check_requirements(requirements, &verified.claims, now) {
            Ok(()) => Authorization::Allow {
                rule: rule_index,
                token: verified,
                cache: cache_use,
            },
            Err(reason) => Authorization::Deny(self.denial(reason, Some(requirements))),
        }
    }

    fn denial(&self, reason: DenyReason, requirements: Option<&Requirements>) -> Denial {
        let (scopes, max_age) = match requirements {
            Some(requirements) => {
                let mut scopes = requirements.scopes_all_of.clone();
                scopes.extend(requirements.scopes_any_of.iter().cloned());
                (scopes, requirements.max_auth_age_seconds)
            }
            None => (Vec::new(), None),
        };
        Denial::new(reason, &self.realm, &scopes, max_age)
    }

    fn verify(
        &self,
        compact: &str,
        keys: &KeyRing,
        verifier: &dyn SignatureVerifier,
        now: u64,
    ) -> Result<VerifiedToken, Rejection> {
        let token = UnverifiedToken::parse(compact).map_err(|error| match error {
            TokenError::Jwe => DenyReason::Jwe,
            TokenError::AlgorithmNone => DenyReason::AlgorithmNone,
            TokenError::UnsupportedAlgorithm => DenyReason::AlgorithmNotAllowed,
            TokenError::EmbeddedKey(_) => DenyReason::EmbeddedKey,
            TokenError::CriticalExtension => DenyReason::CriticalHeader,
            _ => DenyReason::MalformedToken,
        })?;
        let claims = TokenClaims::from_payload(token.payload(), &self.compared_claims)
            .map_err(claim_reason)?;
        let issuer_id = self
            .issuer_id(&claims.issuer)
            .ok_or(DenyReason::UnknownIssuer)?;
        let issuer = self
            .issuers
            .get(issuer_id)
            .ok_or(DenyReason::UnknownIssuer)?;
        let algorithm = token.header().algorithm;
        if !issuer.algorithms.contains(&algorithm) {
            return Err(DenyReason::AlgorithmNotAllowed.into());
        }
        claims
            .check_time(now, self.clock_skew_seconds)
            .map_err(claim_reason)?;

        let key = self.find_key(issuer_id, &issuer.static_keys, keys, &token, now)?;
        let input = SignedInput {
            algorithm,
            key,
            compact,
            signing_input: token.signing_input().as_bytes(),
            signature: token.signature(),
            expectations: ClaimExpectations {
                issuer: &issuer.issuer,
                now,
                clock_skew_seconds: self.clock_skew_seconds,
                max_token_bytes: self.max_token_bytes,
            },
        };
        verifier.verify(&input).map_err(|error| match error {
            SignatureError::Invalid => DenyReason::BadSignature,
            SignatureError::KeyMismatch => DenyReason::KeyMismatch,
            SignatureError::Unavailable => DenyReason::VerifierUnavailable,
        })?;
        let identity =
            Identity::from_claims(&claims).map_err(|_| DenyReason::UnsafeIdentityClaim)?;
        Ok(VerifiedToken {
            issuer: issuer_id,
            key: key.fingerprint(),
            claims,
            identity,
        })
    }

    fn find_key<'k>(
        &self,
        issuer_id: IssuerId,
        static_keys: &'k KeySet,
        keys: &'k KeyRing,
        token: &UnverifiedToken<'_>,
        now: u64,
    ) -> Result<&'k VerificationKey, Rejection> {
        let header = token.header();
        let key_id = header.key_id.as_deref();
        let remote = keys.remote(issuer_id);
        let remote_keys = remote.and_then(|remote| remote.keys(now));
        // Static keys first, then remote ones; a definite "wrong key" answer from either
        // wins over "not found", so a kid bound to another algorithm is never retried.
        let mut refusal = None;
        for key_set in [Some(static_keys), remote_keys].into_iter().flatten() {
            match key_set.find(key_id, header.algorithm) {
                KeyLookup::Found(key) => return Ok(key),
                KeyLookup::UnknownKey => {}
                KeyLookup::AlgorithmMismatch => refusal = Some(DenyReason::KeyMismatch),
                KeyLookup::Ambiguous => refusal = Some(DenyReason::AmbiguousKey),
            }
        }
        if let Some(reason) = refusal {
            return Err(reason.into());
        }
        match (remote, remote_keys) {
            (None, _) => Err(DenyReason::UnknownKey.into()),
            (Some(_), None) => Err(Rejection::UnknownKey(
                issuer_id,
                DenyReason::KeysUnavailable,
            )),
            (Some(_), Some(_)) => Err(Rejection::UnknownKey(issuer_id, DenyReason::UnknownKey)),
        }
    }

    /// A cached token is only reused while the key that verified it is still in use.
    fn key_is_current(
        &self,
        keys: &KeyRing,
        issuer_id: IssuerId,
        fingerprint: KeyFingerprint,
        now: u64,
    ) -> bool {
        let in_static = self
            .issuers
            .get(issuer_id)
            .is_some_and(|issuer| issuer.static_keys.contains(fingerprint));
        in_static
            || keys
                .remote(issuer_id)
                .and_then(|remote| remote.keys(now))
                .is_some_and(|remote_keys| remote_keys.contains(fingerprint))
    }

    fn check_requirements(
        &self,
        requirements: &Requirements,
        claims: &TokenClaims,
        now: u64,
    ) -> Result<(), DenyReason> {
        let audience_ok = requirements
            .audiences_any_of
            .iter()
            .any(|wanted| claims.audiences.iter().any(|held| held == wanted));
        if !audience_ok {
            return Err(DenyReason::AudienceMismatch);
        }
        let all_of_ok = requirements
            .scopes_all_of
            .iter()
            .all(|scope| claims.has_scope(scope));
        let any_of_ok = requirements.scopes_any_of.is_empty()
            || requirements
                .scopes_any_of
                .iter()
                .any(|scope| claims.has_scope(scope));
        if !all_of_ok || !any_of_ok {
            return Err(DenyReason::InsufficientScope);
        }
        if let Some(max_age) = requirements.max_auth_age_seconds {
            let auth_time = claims.auth_time.ok_or(DenyReason::AuthenticationTooOld)?;
            if auth_time > now.saturating_add(self.clock_skew_seconds) {
                return Err(DenyReason::IssuedInFuture);
            }
            if now.saturating_sub(auth_time) > max_age {
                return Err(DenyReason::AuthenticationTooOld);
            }
        }
        let claims_ok = requirements
            .claims_equal
            .iter()
            .all(|(name, expected)| claims.compared_value(name) == Some(expected));
        if !claims_ok {
            return Err(DenyReason::ClaimMismatch);
        }
        Ok(())
    }
}

fn claim_reason(error: ClaimError) -> Rejection {
    Rejection::Deny(match error {
        ClaimError::MissingIssuer | ClaimError::InvalidClaim(_) => DenyReason::InvalidClaims,
        ClaimError::MissingExpiry => DenyReason::MissingExpiry,
        ClaimError::Expired => DenyReason::Expired,
        ClaimError::NotYetValid => DenyReason::NotYetValid,
        ClaimError::IssuedInFuture => DenyReason::IssuedInFuture,
    })
}
