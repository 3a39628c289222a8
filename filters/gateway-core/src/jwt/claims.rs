//! Typed view of the JWT claims the policy acts on, and the time checks.
//!
//! Claim formats accepted (anything else in these members makes the token invalid, so a
//! surprising shape is never silently read as "no restriction"):
//! * `iss` string (required: it selects the issuer and its keys);
//! * `exp` required, `nbf`, `iat`, `auth_time` optional: JSON numbers ≥ 0 and below year 10000,
//!   fractions rounded down (as jwt-simple does);
//! * `aud` a string or an array of strings (RFC 7519 §4.1.3);
//! * `scope` a space-delimited string (RFC 8693 §4.2 / RFC 9068), `scp` an array of strings or a
//!   space-delimited string; the token's scopes are the union of both;
//! * `sub`, `client_id` (RFC 9068), else `azp` (OIDC) strings.
//!
//! Time rules with skew `s`: expired when `now > exp + s`; not yet valid when `now + s < nbf`;
//! issued in the future when `iat > now + s`. These are the same comparisons jwt-simple makes, so
//! the pure-Rust verifier's second check and ours never disagree.

use serde_json::{Map, Value};
use thiserror::Error;

/// 9999-12-31T23:59:59Z; later "timestamps" are garbage, not long-lived tokens.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("token has no string `iss` claim")]
    MissingIssuer,
    #[error("token has no `exp` claim")]
    MissingExpiry,
    #[error("claim `{0}` has an invalid type or value")]
    InvalidClaim(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (`nbf`)")]
    NotYetValid,
    #[error("token was issued in the future (`iat`)")]
    IssuedInFuture,
}

/// The claims of a token, as far as the gateway uses them.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenClaims {
    pub issuer: String,
    pub subject: Option<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub expires_at: u64,
    pub not_before: Option<u64>,
    pub issued_at: Option<u64>,
    pub auth_time: Option<u64>,
    pub client_id: Option<String>,
    /// Values of the claims some rule compares with `claimsEqual`, by name; absent claims are
    /// not listed.
    pub compared: Vec<(String, Value)>,
}

// === impl TokenClaims ===

impl TokenClaims {
    /// Reads the claims; `compared_claims` are the names `claimsEqual` rules refer to.
    pub fn from_payload(
        payload: &Map<String, Value>,
        compared_claims: &[String],
    ) -> Result<Self, ClaimError> {
        let issuer = match payload.get("iss") {
            Some(Value::String(issuer)) => issuer.clone(),
            _ => return Err(ClaimError::MissingIssuer),
        };
        let expires_at = numeric_date(payload, "exp")?.ok_or(ClaimError::MissingExpiry)?;
        let mut scopes = Vec::new();
        match payload.get("scope") {
            None => {}
            Some(Value::String(scope)) => push_delimited(&mut scopes, scope),
            Some(_) => return Err(ClaimError::InvalidClaim("scope")),
        }
        match payload.get("scp") {
            None => {}
            Some(Value::String(scp)) => push_delimited(&mut scopes, scp),
            Some(Value::Array(items)) => {
                for item in items {
                    let Value::String(scope) = item else {
                        return Err(ClaimError::InvalidClaim("scp"));
                    };
                    push_unique(&mut scopes, scope);
                }
            }
            Some(_) => return Err(ClaimError::InvalidClaim("scp")),
        }
        let audiences = match payload.get("aud") {
            None => Vec::new(),
            Some(Value::String(audience)) => vec![audience.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(audience) => Ok(audience.clone()),
                    _ => Err(ClaimError::InvalidClaim("aud")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ClaimError::InvalidClaim("aud")),
        };
        let client_id = match optional_string(payload, "client_id")? {
            Some(client_id) => Some(client_id),
            None => optional_string(payload, "azp")?,
        };
        let compared = compared_claims
            .iter()
            .filter_map(|name| payload.get(name).map(|value| (name.clone(), value.clone())))
            .collect();
        Ok(Self {
            issuer,
            subject: optional_string(payload, "sub")?,
            audiences,
            scopes,
            expires_at,
            not_before: numeric_date(payload, "nbf")?,
            issued_at: numeric_date(payload, "iat")?,
            auth_time: numeric_date(payload, "auth_time")?,
            client_id,
            compared,
        })
    }

    /// `exp`, `nbf` and `iat` against `now` (host time, seconds) with `clock_skew` seconds of
    /// tolerance.
    pub fn check_time(&self, now: u64, clock_skew: u64) -> Result<(), ClaimError> {
        if now > self.expires_at.saturating_add(clock_skew) {
            return Err(ClaimError::Expired);
        }
        if self
            .not_before
            .is_some_and(|nbf| now.saturating_add(clock_skew) < nbf)
        {
            return Err(ClaimError::NotYetValid);
        }
        if self
            .issued_at
            .is_some_and(|iat| iat > now.saturating_add(clock_skew))
        {
            return Err(ClaimError::IssuedInFuture);
        }
        Ok(())
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|held| held == scope)
    }

    pub fn compared_value(&self, name: &str) -> Option<&Value> {
        self.compared
            .iter()
            .find(|(claim, _)| claim == name)
            .map(|(_, value)| value)
    }
}

fn numeric_date(
    payload: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, ClaimError> {
    let Some(value) = payload.get(name) else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(ClaimError::InvalidClaim(name));
    };
    let seconds = match (number.as_u64(), number.as_f64()) {
        (Some(seconds), _) => Some(seconds),
        (None, Some(seconds)) if seconds.is_finite() && seconds >= 0.0 => {
            // Bounded below, so the cast cannot saturate into a valid-looking value.
            (seconds <= MAX_NUMERIC_DATE as f64).then(|| seconds.floor() as u64)
        }
        _ => None,
    };
    match seconds {
        Some(seconds) if seconds <= MAX_NUMERIC_DATE => Ok(Some(seconds)),
        _ => Err(ClaimError::InvalidClaim(name)),
    }
}

fn optional_string(
    payload: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, ClaimError> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ClaimError::InvalidClaim(name)),
    }
}

/// RFC 6749 §3.3: scopes are separated by single spaces; tolerate runs of them.
fn push_delimited(scopes: &mut Vec<String>, delimited: &str) {
    for scope in delimited.split(' ').filter(|scope| !scope.is_empty()) {
        push_unique(scopes, scope);
    }
}

fn push_unique(scopes: &mut Vec<String>, scope: &str) {
    if !scopes.iter().any(|held| held == scope) {
        scopes.push(scope.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(payload: Value) -> Result<TokenClaims, ClaimError> {
        let Value::Object(payload) = payload else {
            panic!("payload must be an object")
        };
        TokenClaims::from_payload(&payload, &["tenant".to_owned()])
    }

    #[test]
    fn reads_real_world_claim_shapes() {
        let parsed = claims(json!({
            "iss": "https://idp", "sub": "user-1", "exp": 2_000_000_000u64,
            "aud": ["trade", "wallet"], "scope": "trade:read  trade:write",
            "scp": ["wallet:read", "trade:read"], "azp": "web", "auth_time": 1_999_999_000.9,
            "tenant": "exchange", "other": 1
        }))
        .unwrap();
        assert_eq!(parsed.issuer, "https://idp");
        assert_eq!(parsed.subject.as_deref(), Some("user-1"));
        assert_eq!(parsed.audiences, ["trade", "wallet"]);
        assert_eq!(parsed.scopes, ["trade:read", "trade:write", "wallet:read"]);
        assert_eq!(parsed.client_id.as_deref(), Some("web"));
        assert_eq!(parsed.auth_time, Some(1_999_999_000));
        assert_eq!(parsed.compared_value("tenant"), Some(&json!("exchange")));
        assert_eq!(parsed.compared_value("other"), None);

        let parsed = claims(json!({"iss": "i", "exp": 5, "aud": "trade", "scp": "a b",
            "client_id": "bot", "azp": "web"}))
        .unwrap();
        assert_eq!(parsed.audiences, ["trade"]);
        assert_eq!(parsed.scopes, ["a", "b"]);
        assert_eq!(parsed.client_id.as_deref(), Some("bot"));
    }

    #[test]
    fn rejects_malformed_claims() {
        let cases = [
            (json!({"exp": 5}), ClaimError::MissingIssuer),
            (json!({"iss": 5, "exp": 5}), ClaimError::MissingIssuer),
            (json!({"iss": "i"}), ClaimError::MissingExpiry),
            (
                json!({"iss": "i", "exp": "5"}),
                ClaimError::InvalidClaim("exp"),
            ),
            (
                json!({"iss": "i", "exp": -1}),
                ClaimError::InvalidClaim("exp"),
            ),
            (
                json!({"iss": "i", "exp": 1e20}),
                ClaimError::InvalidClaim("exp"),
            ),
            (
                json!({"iss": "i", "exp": 253_402_300_800u64}),
                ClaimError::InvalidClaim("exp"),
            ),
            (
                json!({"iss": "i", "exp": null}),
                ClaimError::InvalidClaim("exp"),
            ),
            (
                json!({"iss": "i", "exp": 5, "nbf": true}),
                ClaimError::InvalidClaim("nbf"),
            ),
            (
                json!({"iss": "i", "exp": 5, "iat": -0.5}),
                ClaimError::InvalidClaim("iat"),
            ),
            (
                json!({"iss": "i", "exp": 5, "aud": 1}),
                ClaimError::InvalidClaim("aud"),
            ),
            (
                json!({"iss": "i", "exp": 5, "aud": ["a", 1]}),
                ClaimError::InvalidClaim("aud"),
            ),
            (
                json!({"iss": "i", "exp": 5, "scope": ["a"]}),
                ClaimError::InvalidClaim("scope"),
            ),
            (
                json!({"iss": "i", "exp": 5, "scp": [1]}),
                ClaimError::InvalidClaim("scp"),
            ),
            (
                json!({"iss": "i", "exp": 5, "scp": {}}),
                ClaimError::InvalidClaim("scp"),
            ),
            (
                json!({"iss": "i", "exp": 5, "sub": 7}),
                ClaimError::InvalidClaim("sub"),
            ),
            (
                json!({"iss": "i", "exp": 5, "client_id": []}),
                ClaimError::InvalidClaim("client_id"),
            ),
        ];
        for (payload, expected) in cases {
            assert_eq!(claims(payload.clone()).err(), Some(expected), "{payload}");
        }
    }

    #[test]
    fn time_checks_apply_the_skew_symmetrically() {
        let token = claims(json!({"iss": "i", "exp": 1000, "nbf": 900, "iat": 900})).unwrap();
        let cases = [
            (1000, 0, Ok(())),
            (1001, 0, Err(ClaimError::Expired)),
            (1030, 30, Ok(())),
            (1031, 30, Err(ClaimError::Expired)),
            (899, 0, Err(ClaimError::NotYetValid)),
            (870, 30, Ok(())),
            (869, 30, Err(ClaimError::NotYetValid)),
        ];
        for (now, skew, expected) in cases {
            assert_eq!(
                token.check_time(now, skew),
                expected,
                "now {now} skew {skew}"
            );
        }
        let future_iat = claims(json!({"iss": "i", "exp": 5000, "iat": 1100})).unwrap();
        assert_eq!(
            future_iat.check_time(1000, 60),
            Err(ClaimError::IssuedInFuture)
        );
        assert_eq!(future_iat.check_time(1040, 60), Ok(()));
    }
}
