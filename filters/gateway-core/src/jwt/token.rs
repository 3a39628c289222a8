//! Compact JWS parsing and the header checks done before any key is looked up.
//!
//! Accepted: exactly three non-empty, strictly base64url segments; a header and a payload that
//! are JSON objects without duplicate member names (RFC 7515 §5.2 lets us reject them, and taking
//! "the last one" is how parser-differential attacks work). Rejected before any crypto: a JWE (five
//! segments), `alg` `none` in any case or outside our list, attacker-supplied key material
//! (`jwk`, `jku`, `x5u`, `x5c` — never used, never fetched), any `crit` (we implement no
//! extension, so every listed one is unknown), `b64: false` (RFC 7797) and `zip`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use thiserror::Error;

use super::algorithm::{Algorithm, AlgorithmError};
use super::base64url;

/// Longest `kid` we look up; a longer one is not a key id of any issuer we know.
pub const MAX_KEY_ID_BYTES: usize = 256;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not a compact JWS (expected three segments)")]
    SegmentCount,
    #[error("token is a JWE (five segments); only signed tokens are accepted")]
    Jwe,
    #[error("token has an empty segment")]
    EmptySegment,
    #[error("token segment is not strict base64url")]
    Base64,
    #[error("token header or payload is not a JSON object")]
    Json,
    #[error("token header has no string `alg`")]
    MissingAlgorithm,
    #[error("token uses alg `none`")]
    AlgorithmNone,
    #[error("token uses an unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("token header carries key material or a key URL (`{0}`)")]
    EmbeddedKey(&'static str),
    #[error("token header lists critical extensions")]
    CriticalExtension,
    #[error("token header has an invalid `{0}` member")]
    InvalidHeaderMember(&'static str),
}

/// The protected header members we act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoseHeader {
    pub algorithm: Algorithm,
    pub key_id: Option<String>,
}

/// A syntactically valid compact JWS whose signature has not been checked yet.
/// Nothing in it may be trusted except for choosing which key to verify with.
pub struct UnverifiedToken<'a> {
    compact: &'a str,
    signing_input: &'a str,
    header: JoseHeader,
    payload: Map<String, Value>,
    signature: Vec<u8>,
}

// === impl UnverifiedToken ===

impl<'a> UnverifiedToken<'a> {
    pub fn parse(compact: &'a str) -> Result<Self, TokenError> {
        let mut segments = compact.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64)) =
            (segments.next(), segments.next(), segments.next())
        else {
            return Err(TokenError::SegmentCount);
        };
        match segments.count() {
            0 => {}
            2 => return Err(TokenError::Jwe),
            _ => return Err(TokenError::SegmentCount),
        }
        if header_b64.is_empty() || payload_b64.is_empty() || signature_b64.is_empty() {
            return Err(TokenError::EmptySegment);
        }
        let header = parse_header(&decode_object(header_b64)?)?;
        let payload = decode_object(payload_b64)?;
        let signature = base64url::decode(signature_b64).map_err(|_| TokenError::Base64)?;
        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        let signing_input = compact
            .get(..signing_input_len)
            .ok_or(TokenError::SegmentCount)?;
        Ok(Self {
            compact,
            signing_input,
            header,
            payload,
            signature,
        })
    }

    pub fn compact(&self) -> &'a str {
        self.compact
    }

    /// `BASE64URL(header) || '.' || BASE64URL(payload)`, the bytes the signature covers.
    pub fn signing_input(&self) -> &'a str {
        self.signing_input
    }

    pub fn header(&self) -> &JoseHeader {
        &self.header
    }

    pub fn payload(&self) -> &Map<String, Value> {
        &self.payload
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl fmt::Debug for UnverifiedToken<'_> {
    // Never print the token itself: it is a bearer credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedToken")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

fn decode_object(segment: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = base64url::decode(segment).map_err(|_| TokenError::Base64)?;
    serde_json::from_slice::<UniqueKeyObject>(&bytes)
        .map(|object| object.0)
        .map_err(|_| TokenError::Json)
}

fn parse_header(header: &Map<String, Value>) -> Result<JoseHeader, TokenError> {
    let algorithm = match header.get("alg") {
        Some(Value::String(name)) => Algorithm::from_name(name).map_err(|error| match error {
            AlgorithmError::None => TokenError::AlgorithmNone,
            AlgorithmError::Unsupported => TokenError::UnsupportedAlgorithm,
        })?,
        _ => return Err(TokenError::MissingAlgorithm),
    };
    for member in ["jwk", "jku", "x5u", "x5c"] {
        if header.contains_key(member) {
            return Err(TokenError::EmbeddedKey(member));
        }
    }
    if header.contains_key("crit") {
        return Err(TokenError::CriticalExtension);
    }
    if header.contains_key("zip") || header.contains_key("enc") {
        return Err(TokenError::InvalidHeaderMember("zip"));
    }
    match header.get("b64") {
        None | Some(Value::Bool(true)) => {}
        Some(_) => return Err(TokenError::InvalidHeaderMember("b64")),
    }
    match header.get("typ") {
        None => {}
        // RFC 7519 `JWT` or an explicit `…+jwt` type such as RFC 9068 `at+jwt`.
        Some(Value::String(typ))
            if typ.eq_ignore_ascii_case("jwt") || typ.to_ascii_lowercase().ends_with("+jwt") => {}
        Some(_) => return Err(TokenError::InvalidHeaderMember("typ")),
    }
    let key_id = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KEY_ID_BYTES => {
            Some(kid.clone())
        }
        Some(_) => return Err(TokenError::InvalidHeaderMember("kid")),
    };
    Ok(JoseHeader { algorithm, key_id })
}

/// A JSON object whose top-level member names are unique.
pub(crate) struct UniqueKeyObject(pub(crate) Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueKeyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueKeyVisitor;

        impl<'de> Visitor<'de> for UniqueKeyVisitor {
            type Value = UniqueKeyObject;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object without duplicate member names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut object = Map::new();
                while let Some((name, value)) = access.next_entry::<String, Value>()? {
                    if object.contains_key(&name) {
                        return Err(de::Error::custom("duplicate member name"));
                    }
                    object.insert(name, value);
                }
                Ok(UniqueKeyObject(object))
            }
        }

        deserializer.deserialize_map(UniqueKeyVisitor)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn b64(text: &str) -> String {
        base64url::encode(text.as_bytes())
    }

    pub(crate) fn compact(header: &str, payload: &str, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64(header),
            b64(payload),
            base64url::encode(signature)
        )
    }

    const PAYLOAD: &str = r#"{"iss":"https://idp","exp":2000000000}"#;

    #[test]
    fn parses_a_well_formed_token() {
        let token = compact(
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#,
            PAYLOAD,
            b"sig",
        );
        let parsed = UnverifiedToken::parse(&token).unwrap();
        assert_eq!(parsed.header().algorithm, Algorithm::Es256);
        assert_eq!(parsed.header().key_id.as_deref(), Some("k1"));
        assert_eq!(parsed.signature(), b"sig");
        assert_eq!(parsed.payload()["iss"], "https://idp");
        let (signing_input, _) = token.rsplit_once('.').unwrap();
        assert_eq!(parsed.signing_input(), signing_input);
        assert!(!format!("{parsed:?}").contains(&token));
    }

    #[test]
    fn rejects_bad_structure() {
        let header = b64(r#"{"alg":"RS256"}"#);
        let payload = b64(PAYLOAD);
        let cases = [
            (format!("{header}.{payload}"), TokenError::SegmentCount),
            (
                format!("{header}.{payload}.c2ln.eA"),
                TokenError::SegmentCount,
            ),
            (
                format!("{header}.{payload}.c2ln."),
                TokenError::SegmentCount,
            ),
            (format!("{header}.{payload}.c2ln.a.b"), TokenError::Jwe),
            (format!("{header}.{payload}."), TokenError::EmptySegment),
            (format!("{header}..c2ln"), TokenError::EmptySegment),
            (format!("{header}.{payload}.c2ln="), TokenError::Base64),
            (format!("{header}.{payload}.c2l+"), TokenError::Base64),
            (format!("{header}=.{payload}.c2ln"), TokenError::Base64),
            (format!("{header}.{payload} .c2ln"), TokenError::Base64),
            (
                format!("{}.{payload}.c2ln", b64("not json")),
                TokenError::Json,
            ),
            (format!("{}.{payload}.c2ln", b64("[1]")), TokenError::Json),
            (
                format!("{header}.{}.c2ln", b64("\"str\"")),
                TokenError::Json,
            ),
            (
                format!("{header}.{}.c2ln", b64(r#"{"aud":"a","aud":"b"}"#)),
                TokenError::Json,
            ),
            (
                format!("{}.{payload}.c2ln", b64(r#"{"alg":"RS256","alg":"none"}"#)),
                TokenError::Json,
            ),
            (String::new(), TokenError::SegmentCount),
        ];
        for (token, expected) in cases {
            assert_eq!(
                UnverifiedToken::parse(&token).err(),
                Some(expected),
                "{token}"
            );
        }
    }

    #[test]
    fn rejects_dangerous_headers() {
        let cases = [
            (r#"{"alg":"none"}"#, TokenError::AlgorithmNone),
            (r#"{"alg":"None"}"#, TokenError::AlgorithmNone),
            (r#"{"alg":"NONE"}"#, TokenError::AlgorithmNone),
            (r#"{"alg":"nOnE"}"#, TokenError::AlgorithmNone),
            (r#"{"alg":"XS256"}"#, TokenError::UnsupportedAlgorithm),
            (r#"{}"#, TokenError::MissingAlgorithm),
            (r#"{"alg":256}"#, TokenError::MissingAlgorithm),
            (
                r#"{"alg":"RS256","jwk":{"kty":"RSA"}}"#,
                TokenError::EmbeddedKey("jwk"),
            ),
            (
                r#"{"alg":"RS256","jku":"https://evil/jwks"}"#,
                TokenError::EmbeddedKey("jku"),
            ),
            (
                r#"{"alg":"RS256","x5u":"https://evil/cert"}"#,
                TokenError::EmbeddedKey("x5u"),
            ),
            (
                r#"{"alg":"RS256","x5c":["MIIB"]}"#,
                TokenError::EmbeddedKey("x5c"),
            ),
            (
                r#"{"alg":"RS256","crit":["exp"],"exp":1}"#,
                TokenError::CriticalExtension,
            ),
            (
                r#"{"alg":"RS256","crit":[]}"#,
                TokenError::CriticalExtension,
            ),
            (
                r#"{"alg":"RS256","b64":false,"crit":["b64"]}"#,
                TokenError::CriticalExtension,
            ),
            (
                r#"{"alg":"RS256","b64":false}"#,
                TokenError::InvalidHeaderMember("b64"),
            ),
            (
                r#"{"alg":"RS256","zip":"DEF"}"#,
                TokenError::InvalidHeaderMember("zip"),
            ),
            (
                r#"{"alg":"RS256","typ":"JWE"}"#,
                TokenError::InvalidHeaderMember("typ"),
            ),
            (
                r#"{"alg":"RS256","typ":7}"#,
                TokenError::InvalidHeaderMember("typ"),
            ),
            (
                r#"{"alg":"RS256","kid":7}"#,
                TokenError::InvalidHeaderMember("kid"),
            ),
            (
                r#"{"alg":"RS256","kid":""}"#,
                TokenError::InvalidHeaderMember("kid"),
            ),
        ];
        for (header, expected) in cases {
            let token = compact(header, PAYLOAD, b"sig");
            assert_eq!(
                UnverifiedToken::parse(&token).err(),
                Some(expected),
                "{header}"
            );
        }
        let long_kid = format!(r#"{{"alg":"RS256","kid":"{}"}}"#, "k".repeat(257));
        let token = compact(&long_kid, PAYLOAD, b"sig");
        assert_eq!(
            UnverifiedToken::parse(&token).err(),
            Some(TokenError::InvalidHeaderMember("kid"))
        );
    }

    #[test]
    fn kid_is_an_opaque_lookup_key() {
        for kid in ["../../../../dev/null", "' OR 1=1 --", "/dev/null", "k\u{0}"] {
            let header = serde_json::json!({"alg": "RS256", "kid": kid}).to_string();
            let token = compact(&header, PAYLOAD, b"sig");
            let parsed = UnverifiedToken::parse(&token).unwrap();
            assert_eq!(parsed.header().key_id.as_deref(), Some(kid));
        }
    }
}
