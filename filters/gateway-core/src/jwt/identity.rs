//! Identity headers handed to upstreams after a token is accepted.
//!
//! Claim values become header values only if they can be written *exactly*: printable ASCII
//! (0x21–0x7E, inner spaces allowed) and at most [`MAX_IDENTITY_VALUE_BYTES`]. Stripping or
//! truncating would let two different subjects (`alice` and `alice\r\n`) map to the same
//! header, which is identity confusion; so a `sub`, `iss` or client id that fails is a denial
//! (`unsafe_identity_claim`), not a repair. Scope tokens that are not RFC 6749 scope tokens
//! are left out of the scopes header (they could never satisfy a configured scope anyway).

use crate::http::{HeaderName, HeaderValue};

use super::claims::TokenClaims;
use super::config::{is_scope_token, IdentityHeaderNames};

pub const MAX_IDENTITY_VALUE_BYTES: usize = 256;
pub const MAX_SCOPES_HEADER_BYTES: usize = 2048;

/// The verified identity, ready to be written as headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub issuer: HeaderValue,
    pub subject: Option<HeaderValue>,
    pub scopes: Option<HeaderValue>,
    pub client_id: Option<HeaderValue>,
}

/// A claim could not be represented exactly as a header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsafeClaim(pub &'static str);

// === impl Identity ===

impl Identity {
    pub fn from_claims(claims: &TokenClaims) -> Result<Self, UnsafeClaim> {
        let issuer =
            exact_value(&claims.issuer, MAX_IDENTITY_VALUE_BYTES).ok_or(UnsafeClaim("iss"))?;
        let subject = claims
            .subject
            .as_deref()
            .map(|subject| exact_value(subject, MAX_IDENTITY_VALUE_BYTES).ok_or(UnsafeClaim("sub")))
            .transpose()?;
        let client_id = claims
            .client_id
            .as_deref()
            .map(|id| exact_value(id, MAX_IDENTITY_VALUE_BYTES).ok_or(UnsafeClaim("client_id")))
            .transpose()?;
        let scopes: Vec<&str> = claims
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|scope| is_scope_token(scope))
            .collect();
        let scopes = if scopes.is_empty() {
            None
        } else {
            Some(
                exact_value(&scopes.join(" "), MAX_SCOPES_HEADER_BYTES)
                    .ok_or(UnsafeClaim("scope"))?,
            )
        };
        Ok(Self {
            issuer,
            subject,
            scopes,
            client_id,
        })
    }

    /// The headers to set, by configured name (absent claims set nothing).
    pub fn headers<'a>(
        &'a self,
        names: &'a IdentityHeaderNames,
    ) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
        [
            (&names.issuer, Some(&self.issuer)),
            (&names.subject, self.subject.as_ref()),
            (&names.scopes, self.scopes.as_ref()),
            (&names.client_id, self.client_id.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| (name, value)))
    }
}

fn exact_value(text: &str, max_bytes: usize) -> Option<HeaderValue> {
    let printable = text.bytes().all(|byte| (0x20..=0x7e).contains(&byte));
    if text.is_empty() || text.len() > max_bytes || !printable {
        return None;
    }
    HeaderValue::parse(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(subject: &str) -> TokenClaims {
        TokenClaims {
            issuer: "https://idp".to_owned(),
            subject: Some(subject.to_owned()),
            audiences: vec![],
            scopes: vec![
                "trade:read".to_owned(),
                "bad\"scope".to_owned(),
                "wallet".to_owned(),
                "evil\r\nx-auth-subject:".to_owned(),
                "nul\0".to_owned(),
                "caf\u{e9}".to_owned(),
            ],
            expires_at: 0,
            not_before: None,
            issued_at: None,
            auth_time: None,
            client_id: Some("bot-7".to_owned()),
            compared: vec![],
        }
    }

    #[test]
    fn builds_exact_header_values() {
        let identity = Identity::from_claims(&claims("user 42")).unwrap();
        assert_eq!(
            identity.subject.as_ref().map(HeaderValue::as_str),
            Some("user 42")
        );
        assert_eq!(
            identity.scopes.as_ref().map(HeaderValue::as_str),
            Some("trade:read wallet")
        );
        assert_eq!(
            identity.client_id.as_ref().map(HeaderValue::as_str),
            Some("bot-7")
        );
    }

    #[test]
    fn unsafe_claims_are_refused_not_repaired() {
        let cases = [
            "alice\r\nx-auth-scopes: admin",
            "alice\n",
            "alice\0",
            "al\u{7f}ice",
            "\u{e9}lise",
            " alice",
            "alice ",
            "",
        ];
        for subject in cases {
            assert_eq!(
                Identity::from_claims(&claims(subject)),
                Err(UnsafeClaim("sub")),
                "{subject:?}"
            );
        }
        let long = "a".repeat(MAX_IDENTITY_VALUE_BYTES + 1);
        assert_eq!(
            Identity::from_claims(&claims(&long)),
            Err(UnsafeClaim("sub"))
        );
        let mut bad_issuer = claims("alice");
        bad_issuer.issuer = "https://idp\r\n".to_owned();
        assert_eq!(Identity::from_claims(&bad_issuer), Err(UnsafeClaim("iss")));
        let mut bad_client = claims("alice");
        bad_client.client_id = Some("bot\t".to_owned());
        assert_eq!(
            Identity::from_claims(&bad_client),
            Err(UnsafeClaim("client_id"))
        );
    }
}
