//! Denials: status, RFC 6750 challenge and the shared JSON error body.
//!
//! | reason class | status | `WWW-Authenticate` | body `error` |
//! |---|---|---|---|
//! | no bearer token (absent, or another scheme) | 401 | `Bearer realm="…"` (RFC 6750 §3.1: no error code) | `unauthorized` |
//! | malformed `Authorization`, two of them, `access_token` in the query | 400 | `…, error="invalid_request"` | `invalid_request` |
//! | any token problem (format, alg, key, signature, time, issuer, audience) | 401 | `…, error="invalid_token"` | `invalid_token` |
//! | missing scope | 403 | `…, error="insufficient_scope", scope="<all-of> <any-of>"` | `insufficient_scope` |
//! | `auth_time` too old or absent on a max-age route | 401 | `…, error="insufficient_user_authentication", max_age=N` (RFC 9470) | `insufficient_user_authentication` |
//! | `claimsEqual` mismatch, no rule matches | 403 | none | `access_denied` |
//! | non-canonical path | 400 | none | `invalid_request` |
//!
//! The `scope` attribute lists every scope of the rule (the all-of ones and the any-of
//! alternatives): a token holding all of them is sufficient. Messages are fixed strings: which
//! check failed exactly (bad signature vs. unknown key vs. `alg: none`) is only in the
//! [`DenyReason`] label for metrics and logs, never in the response.

use crate::error_body::ErrorBody;

/// Why a request was denied; [`DenyReason::label`] is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    InvalidPath,
    NoMatchingRule,
    MissingToken,
    MultipleAuthorizationHeaders,
    MalformedAuthorization,
    TokenInQuery,
    TokenTooLarge,
    MalformedToken,
    Jwe,
    AlgorithmNone,
    AlgorithmNotAllowed,
    EmbeddedKey,
    CriticalHeader,
    InvalidClaims,
    UnknownIssuer,
    UnknownKey,
    KeyMismatch,
    AmbiguousKey,
    KeysUnavailable,
    VerifierUnavailable,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingExpiry,
    AudienceMismatch,
    InsufficientScope,
    AuthenticationTooOld,
    ClaimMismatch,
    UnsafeIdentityClaim,
}

/// A complete answer for the glue to send as a local reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub body: String,
}

// === impl DenyReason ===

impl DenyReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidPath => "invalid_path",
            Self::NoMatchingRule => "no_matching_rule",
            Self::MissingToken => "missing_token",
            Self::MultipleAuthorizationHeaders => "multiple_authorization_headers",
            Self::MalformedAuthorization => "malformed_authorization",
            Self::TokenInQuery => "token_in_query",
            Self::TokenTooLarge => "token_too_large",
            Self::MalformedToken => "malformed_token",
            Self::Jwe => "jwe",
            Self::AlgorithmNone => "alg_none",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::EmbeddedKey => "embedded_key",
            Self::CriticalHeader => "critical_header",
            Self::InvalidClaims => "invalid_claims",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKey => "unknown_kid",
            Self::KeyMismatch => "key_alg_mismatch",
            Self::AmbiguousKey => "ambiguous_key",
            Self::KeysUnavailable => "keys_unavailable",
            Self::VerifierUnavailable => "verifier_unavailable",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::MissingExpiry => "missing_exp",
            Self::AudienceMismatch => "audience_mismatch",
            Self::InsufficientScope => "insufficient_scope",
            Self::AuthenticationTooOld => "auth_too_old",
            Self::ClaimMismatch => "claim_mismatch",
            Self::UnsafeIdentityClaim => "unsafe_identity_claim",
        }
    }

    fn class(self) -> Class {
        match self {
            Self::InvalidPath => Class::BadPath,
            Self::NoMatchingRule | Self::ClaimMismatch => Class::AccessDenied,
            Self::MissingToken => Class::NoCredentials,
            Self::MultipleAuthorizationHeaders
            | Self::MalformedAuthorization
            | Self::TokenInQuery => Class::InvalidRequest,
            Self::InsufficientScope => Class::InsufficientScope,
            Self::AuthenticationTooOld => Class::StepUp,
            Self::Expired => Class::InvalidToken("the access token has expired"),
            Self::NotYetValid => Class::InvalidToken("the access token is not valid yet"),
            Self::AudienceMismatch => {
                Class::InvalidToken("the access token is not intended for this resource")
            }
            _ => Class::InvalidToken("the access token is invalid"),
        }
    }
}

enum Class {
    BadPath,
    AccessDenied,
    NoCredentials,
    InvalidRequest,
    InvalidToken(&'static str),
    InsufficientScope,
    StepUp,
}

// === impl Denial ===

impl Denial {
    /// Builds the reply. `required_scopes` is used for `insufficient_scope`, `max_auth_age`
    /// for `insufficient_user_authentication`.
    pub fn new(
        reason: DenyReason,
        realm: &str,
        required_scopes: &[String],
        max_auth_age: Option<u64>,
    ) -> Self {
        let challenge = |error: Option<&str>| match error {
            None => format!("Bearer realm=\"{realm}\""),
            Some(error) => format!("Bearer realm=\"{realm}\", error=\"{error}\""),
        };
        let (status, www_authenticate, body) = match reason.class() {
            Class::BadPath => (
                400,
                None,
                ErrorBody::new(
                    "invalid_request",
                    "the request path is not in canonical form",
                ),
            ),
            Class::AccessDenied => (
                403,
                None,
                ErrorBody::new("access_denied", "access to this resource is denied"),
            ),
            Class::NoCredentials => (
                401,
                Some(challenge(None)),
                ErrorBody::new("unauthorized", "a bearer token is required"),
            ),
            Class::InvalidRequest => (
                400,
                Some(challenge(Some("invalid_request"))),
                ErrorBody::new(
                    "invalid_request",
                    "send the access token once, in the Authorization header as 'Bearer <token>'",
                ),
            ),
            Class::InvalidToken(message) => (
                401,
                Some(challenge(Some("invalid_token"))),
                ErrorBody::new("invalid_token", message),
            ),
            Class::InsufficientScope => (
                403,
                Some(format!(
                    "{}, scope=\"{}\"",
                    challenge(Some("insufficient_scope")),
                    required_scopes.join(" ")
                )),
                ErrorBody::new(
                    "insufficient_scope",
                    "the access token lacks a scope this resource requires",
                ),
            ),
            Class::StepUp => {
                let mut header = challenge(Some("insufficient_user_authentication"));
                if let Some(max_age) = max_auth_age {
                    header.push_str(&format!(", max_age={max_age}"));
                }
                (
                    401,
                    Some(header),
                    ErrorBody::new(
                        "insufficient_user_authentication",
                        "a more recent authentication is required",
                    ),
                )
            }
        };
        Self {
            reason,
            status,
            www_authenticate,
            body: body.render(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc6750_answers() {
        let scopes = ["wallet:withdraw".to_owned(), "wallet:read".to_owned()];
        let cases = [
            (
                DenyReason::MissingToken,
                401,
                Some(r#"Bearer realm="ex""#),
                "unauthorized",
            ),
            (
                DenyReason::TokenInQuery,
                400,
                Some(r#"Bearer realm="ex", error="invalid_request""#),
                "invalid_request",
            ),
            (
                DenyReason::MultipleAuthorizationHeaders,
                400,
                Some(r#"Bearer realm="ex", error="invalid_request""#),
                "invalid_request",
            ),
            (
                DenyReason::BadSignature,
                401,
                Some(r#"Bearer realm="ex", error="invalid_token""#),
                "invalid_token",
            ),
            (
                DenyReason::AlgorithmNone,
                401,
                Some(r#"Bearer realm="ex", error="invalid_token""#),
                "invalid_token",
            ),
            (
                DenyReason::Expired,
                401,
                Some(r#"Bearer realm="ex", error="invalid_token""#),
                "invalid_token",
            ),
            (
                DenyReason::InsufficientScope,
                403,
                Some(
                    r#"Bearer realm="ex", error="insufficient_scope", scope="wallet:withdraw wallet:read""#,
                ),
                "insufficient_scope",
            ),
            (
                DenyReason::AuthenticationTooOld,
                401,
                Some(r#"Bearer realm="ex", error="insufficient_user_authentication", max_age=300"#),
                "insufficient_user_authentication",
            ),
            (DenyReason::ClaimMismatch, 403, None, "access_denied"),
            (DenyReason::NoMatchingRule, 403, None, "access_denied"),
            (DenyReason::InvalidPath, 400, None, "invalid_request"),
        ];
        for (reason, status, header, code) in cases {
            let denial = Denial::new(reason, "ex", &scopes, Some(300));
            assert_eq!(denial.status, status, "{reason:?}");
            assert_eq!(denial.www_authenticate.as_deref(), header, "{reason:?}");
            let body: serde_json::Value = serde_json::from_str(&denial.body).unwrap();
            assert_eq!(body["error"], code, "{reason:?}");
        }
    }

    #[test]
    fn bodies_never_reveal_which_check_failed() {
        let generic = [
            DenyReason::AlgorithmNone,
            DenyReason::EmbeddedKey,
            DenyReason::BadSignature,
            DenyReason::UnknownKey,
            DenyReason::UnknownIssuer,
            DenyReason::KeysUnavailable,
        ];
        let bodies: std::collections::HashSet<String> = generic
            .iter()
            .map(|reason| Denial::new(*reason, "ex", &[], None).body)
            .collect();
        assert_eq!(bodies.len(), 1);
        assert_eq!(DenyReason::UnknownKey.label(), "unknown_kid");
    }
}
