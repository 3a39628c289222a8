//! Signature verification behind a trait, so the crypto can move to the host.
//!
//! [`SignatureVerifier`] sees only the algorithm, the key and the bytes; all policy (header
//! checks, key selection, time and claim checks) happens in [`super::authorizer`] before and
//! after it, identically for every implementation.
//!
//! * [`PureRustVerifier`] uses jwt-simple (pure-Rust backends on wasm32). jwt-simple only
//!   verifies whole tokens, so it receives the compact token with `VerificationOptions` built
//!   from our config (exact issuer, our clock skew instead of its 900 s default, host time,
//!   token size cap); its claim checks are the same as ours and act as a second, independent
//!   check. Audiences are *not* given to jwt-simple: its `allowed_audiences` is any-of over a
//!   string or array `aud` (which would fit), but it is one set per verification, while ours
//!   differ per route and a verified token is cached across routes; the route policy checks
//!   `aud` on every request instead. `max_validity` is not used (so the 0.13 `iat` fix is
//!   moot for us, but the pin stays for the `crit` fix).
//! * Envoy's `verify_signature` foreign function (BoringSSL, native speed), wrapped by
//!   [`super::host_verify::HostSignatureVerifier`] (the glue only supplies the hostcall): it takes a protobuf `VerifySignatureArguments { hash_function = 1,
//!   public_key = 2 (DER SubjectPublicKeyInfo), signature = 3, text = 4, public_key_pem = 5 }`
//!   and returns `VerifySignatureResult { result = 1, error = 2 }`. It runs
//!   `EVP_DigestVerify` with default padding, so it covers RS256/384/512 (PKCS#1 v1.5) and
//!   ES256/384 (with the JWS `r || s` signature re-encoded as DER), not PS* or EdDSA.
//!   [`FallbackVerifier`] tries such a host verifier first and falls back to pure Rust when it
//!   answers [`SignatureError::Unavailable`] (an Envoy without the function, an algorithm it
//!   cannot do).

use std::collections::HashSet;

use jwt_simple::prelude::*;
use thiserror::Error;

use super::algorithm::Algorithm;
use super::jwks::{KeyMaterial, VerificationKey};

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The signature does not verify (or the token failed the verifier's own checks).
    #[error("signature verification failed")]
    Invalid,
    /// The key cannot be used with this algorithm.
    #[error("key does not match the algorithm")]
    KeyMismatch,
    /// This verifier cannot check this signature (e.g. host function missing); another may.
    #[error("verifier unavailable for this algorithm")]
    Unavailable,
}

/// What the issuer and clock must look like, for verifiers that also check claims.
#[derive(Clone, Copy, Debug)]
pub struct ClaimExpectations<'a> {
    pub issuer: &'a str,
    pub now: u64,
    pub clock_skew_seconds: u64,
    pub max_token_bytes: usize,
}

/// Everything needed to check one token signature.
#[derive(Clone, Copy, Debug)]
pub struct SignedInput<'a> {
    pub algorithm: Algorithm,
    pub key: &'a VerificationKey,
    /// The whole compact token (for verifiers that only take tokens).
    pub compact: &'a str,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    /// The decoded signature (`r || s` for ECDSA, as JWS defines it).
    pub signature: &'a [u8],
    pub expectations: ClaimExpectations<'a>,
}

pub trait SignatureVerifier {
    fn verify(&self, input: &SignedInput<'_>) -> Result<(), SignatureError>;
}

/// jwt-simple with pure-Rust crypto.
#[derive(Clone, Copy, Debug, Default)]
pub struct PureRustVerifier;

/// Tries `primary`, and `fallback` only when `primary` is unavailable for the input.
#[derive(Clone, Copy, Debug, Default)]
pub struct FallbackVerifier<P, F> {
    pub primary: P,
    pub fallback: F,
}

// === impl PureRustVerifier ===

impl SignatureVerifier for PureRustVerifier {
    fn verify(&self, input: &SignedInput<'_>) -> Result<(), SignatureError> {
        let expectations = input.expectations;
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([expectations.issuer.to_owned()])),
            time_tolerance: Some(Duration::from_secs(expectations.clock_skew_seconds)),
            artificial_time: Some(UnixTimeStamp::from_secs(expectations.now)),
            max_token_length: Some(expectations.max_token_bytes),
            ..VerificationOptions::default()
        };
        let token = input.compact;
        let verified = match (input.algorithm, input.key.material()) {
            (Algorithm::Rs256, KeyMaterial::Rsa { modulus, exponent }) => {
                rsa_key::<RS256PublicKey>(modulus, exponent, RS256PublicKey::from_components)?
                    .verify_token::<NoCustomClaims>(token, Some(options))
            }
            (Algorithm::Rs384, KeyMaterial::Rsa { modulus, exponent }) => {
                rsa_key::<RS384PublicKey>(modulus, exponent, RS384PublicKey::from_components)?
                    .verify_token::<NoCustomClaims>(token, Some(options))
            }
            (Algorithm::Rs512, KeyMaterial::Rsa { modulus, exponent }) => {
                rsa_key::<RS512PublicKey>(modulus, exponent, RS512PublicKey::from_components)?
                    .verify_token::<NoCustomClaims>(token, Some(options))
            }
            (Algorithm::Ps256, KeyMaterial::Rsa { modulus, exponent }) => {
                rsa_key::<PS256PublicKey>(modulus, exponent, PS256PublicKey::from_components)?
                    .verify_token::<NoCustomClaims>(token, Some(options))
            }
            (Algorithm::Ps384, KeyMaterial::Rsa { modulus, exponent }) => {
                rsa_key::<PS384PublicKey>(modulus, exponent, PS384PublicKey::from_components)?
                    .verify_token::<NoCustomClaims>(token, Some(options))
            }
            (Algorithm::Ps512, KeyMaterial::Rsa { modulus, exponent }) => {
                rsa_key::<PS512PublicKey>(modulus, exponent, PS512PublicKey::from_components)?
                    .verify_token::<NoCustomClaims>(token, Some(options))
            }
            (Algorithm::Es256, KeyMaterial::EcP256 { point }) => ES256PublicKey::from_bytes(point)
                .map_err(|_| SignatureError::KeyMismatch)?
                .verify_token::<NoCustomClaims>(token, Some(options)),
            (Algorithm::Es384, KeyMaterial::EcP384 { point }) => ES384PublicKey::from_bytes(point)
                .map_err(|_| SignatureError::KeyMismatch)?
                .verify_token::<NoCustomClaims>(token, Some(options)),
            (Algorithm::EdDsa, KeyMaterial::Ed25519 { public }) => {
                Ed25519PublicKey::from_bytes(public)
                    .map_err(|_| SignatureError::KeyMismatch)?
                    .verify_token::<NoCustomClaims>(token, Some(options))
            }
            (Algorithm::Hs256, KeyMaterial::Hmac { secret }) => {
                HS256Key::from_bytes(secret).verify_token::<NoCustomClaims>(token, Some(options))
            }
            (Algorithm::Hs384, KeyMaterial::Hmac { secret }) => {
                HS384Key::from_bytes(secret).verify_token::<NoCustomClaims>(token, Some(options))
            }
            (Algorithm::Hs512, KeyMaterial::Hmac { secret }) => {
                HS512Key::from_bytes(secret).verify_token::<NoCustomClaims>(token, Some(options))
            }
            _ => return Err(SignatureError::KeyMismatch),
        };
        verified.map(drop).map_err(|_| SignatureError::Invalid)
    }
}

fn rsa_key<K>(
    modulus: &[u8],
    exponent: &[u8],
    from_components: fn(&[u8], &[u8]) -> Result<K, jwt_simple::Error>,
) -> Result<K, SignatureError> {
    from_components(modulus, exponent).map_err(|_| SignatureError::KeyMismatch)
}

// === impl FallbackVerifier ===

impl<P: SignatureVerifier, F: SignatureVerifier> SignatureVerifier for FallbackVerifier<P, F> {
    fn verify(&self, input: &SignedInput<'_>) -> Result<(), SignatureError> {
        match self.primary.verify(input) {
            Err(SignatureError::Unavailable) => self.fallback.verify(input),
            decided => decided,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::jwks::tests::{ec_jwk, ed_jwk, rsa_jwk, test_keys};
    use crate::jwt::jwks::KeySet;
    use crate::jwt::token::UnverifiedToken;

    const NOW: u64 = 1_900_000_000;

    fn claims() -> JWTClaims<NoCustomClaims> {
        let mut claims = Claims::create(Duration::from_secs(600)).with_issuer("https://idp");
        claims.issued_at = Some(UnixTimeStamp::from_secs(NOW));
        claims.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
        claims
    }

    fn check(token: &str, key: &VerificationKey, now: u64) -> Result<(), SignatureError> {
        let parsed = UnverifiedToken::parse(token).unwrap();
        let input = SignedInput {
            algorithm: parsed.header().algorithm,
            key,
            compact: token,
            signing_input: parsed.signing_input().as_bytes(),
            signature: parsed.signature(),
            expectations: ClaimExpectations {
                issuer: "https://idp",
                now,
                clock_skew_seconds: 30,
                max_token_bytes: 8192,
            },
        };
        PureRustVerifier.verify(&input)
    }

    fn key_of(jwk: serde_json::Value) -> VerificationKey {
        let parsed = KeySet::from_jwks_value(&serde_json::json!({"keys": [jwk]})).unwrap();
        let key = parsed.keys.iter().next().cloned().unwrap();
        key
    }

    fn tamper(token: &str) -> String {
        let mut bytes = token.as_bytes().to_vec();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn verifies_each_key_type_and_rejects_tampering() {
        let keys = test_keys();
        let cases = [
            (
                keys.rsa.sign(claims()).unwrap(),
                key_of(rsa_jwk("rsa-1", None)),
            ),
            (keys.es256.sign(claims()).unwrap(), key_of(ec_jwk("ec-1"))),
            (keys.ed25519.sign(claims()).unwrap(), key_of(ed_jwk("ed-1"))),
        ];
        for (token, key) in &cases {
            assert_eq!(check(token, key, NOW), Ok(()));
            assert_eq!(
                check(&tamper(token), key, NOW),
                Err(SignatureError::Invalid)
            );
            // jwt-simple's own time check uses our skew, not its 15-minute default.
            assert_eq!(
                check(token, key, NOW + 600 + 31),
                Err(SignatureError::Invalid)
            );
            assert_eq!(check(token, key, NOW + 600 + 30), Ok(()));
        }
        // Wrong key of the right type.
        let other = ES256KeyPair::generate().sign(claims()).unwrap();
        assert_eq!(
            check(&other, &cases[1].1, NOW),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_rejected() {
        // CVE-2016-10555: the attacker uses the public key bytes as an HMAC secret.
        let public_der = test_keys().rsa.public_key().to_der().unwrap();
        let forged = HS256Key::from_bytes(&public_der)
            .authenticate(claims())
            .unwrap();
        let rsa_key = key_of(rsa_jwk("rsa-1", None));
        assert_eq!(
            check(&forged, &rsa_key, NOW),
            Err(SignatureError::KeyMismatch)
        );
    }

    #[test]
    fn hmac_keys_verify_hmac_tokens_only() {
        let secret = [7u8; 32];
        let token = HS256Key::from_bytes(&secret)
            .authenticate(claims())
            .unwrap();
        let key = VerificationKey::hmac(secret.to_vec());
        assert_eq!(check(&token, &key, NOW), Ok(()));
        let wrong = VerificationKey::hmac([8u8; 32].to_vec());
        assert_eq!(check(&token, &wrong, NOW), Err(SignatureError::Invalid));
        let es_token = test_keys().es256.sign(claims()).unwrap();
        assert_eq!(
            check(&es_token, &key, NOW),
            Err(SignatureError::KeyMismatch)
        );
    }

    struct Unavailable;
    impl SignatureVerifier for Unavailable {
        fn verify(&self, _: &SignedInput<'_>) -> Result<(), SignatureError> {
            Err(SignatureError::Unavailable)
        }
    }
    struct AlwaysInvalid;
    impl SignatureVerifier for AlwaysInvalid {
        fn verify(&self, _: &SignedInput<'_>) -> Result<(), SignatureError> {
            Err(SignatureError::Invalid)
        }
    }

    #[test]
    fn fallback_is_used_only_when_the_primary_is_unavailable() {
        let token = test_keys().es256.sign(claims()).unwrap();
        let key = key_of(ec_jwk("ec-1"));
        let parsed = UnverifiedToken::parse(&token).unwrap();
        let input = SignedInput {
            algorithm: Algorithm::Es256,
            key: &key,
            compact: &token,
            signing_input: parsed.signing_input().as_bytes(),
            signature: parsed.signature(),
            expectations: ClaimExpectations {
                issuer: "https://idp",
                now: NOW,
                clock_skew_seconds: 0,
                max_token_bytes: 8192,
            },
        };
        let falls_back = FallbackVerifier {
            primary: Unavailable,
            fallback: PureRustVerifier,
        };
        assert_eq!(falls_back.verify(&input), Ok(()));
        let decided = FallbackVerifier {
            primary: AlwaysInvalid,
            fallback: PureRustVerifier,
        };
        assert_eq!(decided.verify(&input), Err(SignatureError::Invalid));
    }
}
