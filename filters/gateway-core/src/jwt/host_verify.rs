//! Signature checks delegated to Envoy's `verify_signature` foreign function.
//!
//! Envoy (since PR envoyproxy/envoy#32127, 2024) registers `verify_signature` for Wasm in
//! `source/extensions/common/wasm/foreign.cc`. Its argument is a serialized protobuf
//! (`source/extensions/common/wasm/ext/verify_signature.proto`):
//!
//! ```text
//! message VerifySignatureArguments {
//!   string hash_function = 1;  // "sha256" | "sha384" | "sha512" (also sha1/sha224)
//!   bytes  public_key    = 2;  // DER SubjectPublicKeyInfo (EVP_parse_public_key)
//!   bytes  signature     = 3;
//!   bytes  text          = 4;  // the signed bytes
//!   string public_key_pem = 5; // newer Envoys; mutually exclusive with public_key
//! }
//! message VerifySignatureResult { bool result = 1; string error = 2; }
//! ```
//!
//! It runs BoringSSL `EVP_DigestVerify` with the key's default padding, so it verifies
//! RSASSA-PKCS1-v1_5 (RS256/384/512) and ECDSA with a DER signature (ES256/384, after we
//! re-encode the JWS `r || s`). It cannot do PS* (no PSS padding parameter) or EdDSA (BoringSSL
//! needs a null digest for Ed25519); for those, and whenever the call fails, this verifier says
//! [`SignatureError::Unavailable`] so a [`super::verify::FallbackVerifier`] uses pure Rust.
//! Only an explicit `result: true` counts as valid.

use super::algorithm::Algorithm;
use super::jwks::KeyMaterial;
use super::verify::{SignatureError, SignatureVerifier, SignedInput};

/// Name to pass to `proxy_call_foreign_function`.
pub const FOREIGN_FUNCTION_NAME: &str = "verify_signature";

/// Calls the host: takes serialized `VerifySignatureArguments`, returns the serialized
/// `VerifySignatureResult`, or `None` if the call failed (function missing, bad argument).
pub trait ForeignCall {
    fn call(&self, arguments: &[u8]) -> Option<Vec<u8>>;
}

impl<F: Fn(&[u8]) -> Option<Vec<u8>>> ForeignCall for F {
    fn call(&self, arguments: &[u8]) -> Option<Vec<u8>> {
        self(arguments)
    }
}

/// [`SignatureVerifier`] over Envoy's native crypto.
pub struct HostSignatureVerifier<C> {
    call: C,
}

impl<C: ForeignCall> HostSignatureVerifier<C> {
    pub fn new(call: C) -> Self {
        Self { call }
    }
}

impl<C: ForeignCall> SignatureVerifier for HostSignatureVerifier<C> {
    fn verify(&self, input: &SignedInput<'_>) -> Result<(), SignatureError> {
        let arguments = verify_signature_arguments(input)?;
        let answer = self
            .call
            .call(&arguments)
            .ok_or(SignatureError::Unavailable)?;
        match parse_verify_signature_result(&answer) {
            Some(true) => Ok(()),
            Some(false) => Err(SignatureError::Invalid),
            None => Err(SignatureError::Unavailable),
        }
    }
}

/// Serializes `VerifySignatureArguments` for `input`, or `Unavailable` if the host cannot
/// verify this algorithm.
pub fn verify_signature_arguments(input: &SignedInput<'_>) -> Result<Vec<u8>, SignatureError> {
    let hash = input
        .algorithm
        .host_hash_function()
        .ok_or(SignatureError::Unavailable)?;
    let (public_key, signature) = match (input.algorithm, input.key.material()) {
        (
            Algorithm::Rs256 | Algorithm::Rs384 | Algorithm::Rs512,
            KeyMaterial::Rsa { modulus, exponent },
        ) => (rsa_spki(modulus, exponent), input.signature.to_vec()),
        (Algorithm::Es256, KeyMaterial::EcP256 { point }) => (
            ec_spki(P256_OID, point),
            ecdsa_der_signature(input.signature, 32)?,
        ),
        (Algorithm::Es384, KeyMaterial::EcP384 { point }) => (
            ec_spki(P384_OID, point),
            ecdsa_der_signature(input.signature, 48)?,
        ),
        _ => return Err(SignatureError::KeyMismatch),
    };
    let mut message =
        Vec::with_capacity(public_key.len() + signature.len() + input.signing_input.len() + 32);
    protobuf_bytes_field(&mut message, 1, hash.as_bytes());
    protobuf_bytes_field(&mut message, 2, &public_key);
    protobuf_bytes_field(&mut message, 3, &signature);
    protobuf_bytes_field(&mut message, 4, input.signing_input);
    Ok(message)
}

/// Reads `VerifySignatureResult.result`; `None` if the message is malformed.
pub fn parse_verify_signature_result(message: &[u8]) -> Option<bool> {
    let mut result = false;
    let mut rest = message;
    while !rest.is_empty() {
        let (key, after_key) = read_varint(rest)?;
        rest = after_key;
        match (key >> 3, key & 7) {
            (1, 0) => {
                let (value, after) = read_varint(rest)?;
                result = value == 1;
                rest = after;
            }
            (_, 0) => rest = read_varint(rest)?.1,
            (_, 2) => {
                let (length, after) = read_varint(rest)?;
                let length = usize::try_from(length).ok()?;
                rest = after.get(length..)?;
            }
            _ => return None,
        }
    }
    Some(result)
}

// --- DER ---

const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const DER_NULL: &[u8] = &[0x05, 0x00];

/// SubjectPublicKeyInfo of an RSA key (RFC 8017 A.1.1, RFC 5280 §4.1).
fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let rsa_public_key = der_sequence(&[&der_integer(modulus), &der_integer(exponent)]);
    let algorithm = der_sequence(&[RSA_ENCRYPTION_OID, DER_NULL]);
    der_sequence(&[&algorithm, &der_bit_string(&rsa_public_key)])
}

/// SubjectPublicKeyInfo of an EC key (RFC 5480).
fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let algorithm = der_sequence(&[EC_PUBLIC_KEY_OID, curve_oid]);
    der_sequence(&[&algorithm, &der_bit_string(point)])
}

/// JWS ECDSA signatures are `r || s` (RFC 7518 §3.4); BoringSSL wants `SEQUENCE { r, s }`.
/// A wrong length is an invalid signature, not something to repair.
fn ecdsa_der_signature(signature: &[u8], scalar_bytes: usize) -> Result<Vec<u8>, SignatureError> {
    if signature.len() != 2 * scalar_bytes {
        return Err(SignatureError::Invalid);
    }
    let (r, s) = signature.split_at(scalar_bytes);
    Ok(der_sequence(&[&der_integer(r), &der_integer(s)]))
}

fn der_integer(big_endian: &[u8]) -> Vec<u8> {
    let significant = match big_endian.iter().position(|byte| *byte != 0) {
        Some(first) => big_endian.get(first..).unwrap_or_default(),
        None => &[0],
    };
    let needs_pad = significant.first().is_some_and(|top| top & 0x80 != 0);
    let mut content = Vec::with_capacity(significant.len() + 1);
    if needs_pad {
        content.push(0);
    }
    content.extend_from_slice(significant);
    der_element(0x02, &content)
}

fn der_bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0); // no unused bits
    content.extend_from_slice(bytes);
    der_element(0x03, &content)
}

fn der_sequence(parts: &[&[u8]]) -> Vec<u8> {
    der_element(0x30, &parts.concat())
}

fn der_element(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut element = Vec::with_capacity(content.len() + 6);
    element.push(tag);
    let length = content.len();
    if length < 0x80 {
        element.push(length as u8);
    } else {
        let length_bytes = (length as u64).to_be_bytes();
        let skip = length_bytes.iter().take_while(|byte| **byte == 0).count();
        let significant = length_bytes.get(skip..).unwrap_or_default();
        element.push(0x80 | significant.len() as u8);
        element.extend_from_slice(significant);
    }
    element.extend_from_slice(content);
    element
}

// --- protobuf wire format ---

fn protobuf_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    write_varint(out, field << 3 | 2);
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, bytes.get(index + 1..)?));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use jwt_simple::prelude::*;

    use super::*;
    use crate::jwt::jwks::tests::{ec_jwk, ed_jwk, rsa_jwk, test_keys};
    use crate::jwt::jwks::{KeySet, VerificationKey};
    use crate::jwt::token::UnverifiedToken;
    use crate::jwt::verify::{ClaimExpectations, FallbackVerifier, PureRustVerifier};

    fn key_of(jwk: serde_json::Value) -> VerificationKey {
        let parsed = KeySet::from_jwks_value(&serde_json::json!({"keys": [jwk]})).unwrap();
        let key = parsed.keys.iter().next().cloned().unwrap();
        key
    }

    /// A stand-in for Envoy: decodes the protobuf and verifies with jwt-simple's DER import,
    /// which proves our SPKI and signature encodings are what a DER consumer expects.
    fn fake_envoy(arguments: &[u8]) -> Option<Vec<u8>> {
        let fields = decode_fields(arguments)?;
        let [hash, key, signature, text] = fields.as_slice() else {
            return None;
        };
        let valid = match (hash.as_slice(), key.get(..3)?) {
            (b"sha256", [0x30, _, _]) if key.len() > 200 => {
                let public = RS256PublicKey::from_der(key).ok()?;
                verify_raw_rsa(&public, text, signature)
            }
            (b"sha256", _) => {
                let public = ES256PublicKey::from_der(key).ok()?;
                let r_s = p256::ecdsa::Signature::from_der(signature).ok()?.to_bytes();
                verify_with_token(
                    |token| public.verify_token::<NoCustomClaims>(token, None).is_ok(),
                    text,
                    &r_s,
                )
            }
            _ => return None,
        };
        let mut result = Vec::new();
        if valid {
            result.extend_from_slice(&[0x08, 0x01]);
        }
        result.extend_from_slice(&[0x12, 0x02, b'o', b'k']);
        Some(result)
    }

    fn verify_raw_rsa(public: &RS256PublicKey, text: &[u8], signature: &[u8]) -> bool {
        verify_with_token(
            |token| public.verify_token::<NoCustomClaims>(token, None).is_ok(),
            text,
            signature,
        )
    }

    fn verify_with_token(check: impl Fn(&str) -> bool, text: &[u8], signature: &[u8]) -> bool {
        let token = format!(
            "{}.{}",
            String::from_utf8_lossy(text),
            crate::jwt::base64url::encode(signature)
        );
        check(&token)
    }

    fn decode_fields(mut bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut fields = Vec::new();
        while !bytes.is_empty() {
            let (key, rest) = read_varint(bytes)?;
            let (length, rest) = read_varint(rest)?;
            assert_eq!(key & 7, 2);
            assert_eq!(key >> 3, fields.len() as u64 + 1, "fields 1..4 in order");
            let length = length as usize;
            fields.push(rest.get(..length)?.to_vec());
            bytes = rest.get(length..)?;
        }
        Some(fields)
    }

    fn input<'a>(token: &'a UnverifiedToken<'a>, key: &'a VerificationKey) -> SignedInput<'a> {
        SignedInput {
            algorithm: token.header().algorithm,
            key,
            compact: token.compact(),
            signing_input: token.signing_input().as_bytes(),
            signature: token.signature(),
            expectations: ClaimExpectations {
                issuer: "i",
                now: 0,
                clock_skew_seconds: 0,
                max_token_bytes: 8192,
            },
        }
    }

    #[test]
    fn host_verifies_rs256_and_es256_through_the_protobuf_contract() {
        let claims = Claims::create(Duration::from_secs(600));
        let cases = [
            (
                test_keys().rsa.sign(claims.clone()).unwrap(),
                key_of(rsa_jwk("rsa-1", None)),
            ),
            (
                test_keys().es256.sign(claims.clone()).unwrap(),
                key_of(ec_jwk("ec-1")),
            ),
        ];
        let host = HostSignatureVerifier::new(fake_envoy);
        for (token, key) in &cases {
            let parsed = UnverifiedToken::parse(token).unwrap();
            assert_eq!(host.verify(&input(&parsed, key)), Ok(()));
            let mut forged_signature = parsed.signature().to_vec();
            forged_signature[5] ^= 1;
            let forged = SignedInput {
                signature: &forged_signature,
                ..input(&parsed, key)
            };
            assert_eq!(host.verify(&forged), Err(SignatureError::Invalid));
        }
    }

    #[test]
    fn unsupported_algorithms_and_failed_calls_fall_back() {
        let token = test_keys()
            .ed25519
            .sign(Claims::create(Duration::from_secs(600)))
            .unwrap();
        let parsed = UnverifiedToken::parse(&token).unwrap();
        let key = key_of(ed_jwk("ed-1"));
        let host = HostSignatureVerifier::new(fake_envoy);
        assert_eq!(
            host.verify(&input(&parsed, &key)),
            Err(SignatureError::Unavailable)
        );
        let combined = FallbackVerifier {
            primary: host,
            fallback: PureRustVerifier,
        };
        // The pure-Rust fallback also checks the issuer, which this token lacks.
        assert_eq!(
            combined.verify(&input(&parsed, &key)),
            Err(SignatureError::Invalid)
        );

        let es = test_keys()
            .es256
            .sign(Claims::create(Duration::from_secs(600)))
            .unwrap();
        let parsed = UnverifiedToken::parse(&es).unwrap();
        let key = key_of(ec_jwk("ec-1"));
        let missing_function = HostSignatureVerifier::new(|_: &[u8]| None);
        assert_eq!(
            missing_function.verify(&input(&parsed, &key)),
            Err(SignatureError::Unavailable)
        );
        let garbage = HostSignatureVerifier::new(|_: &[u8]| Some(vec![0xff]));
        assert_eq!(
            garbage.verify(&input(&parsed, &key)),
            Err(SignatureError::Unavailable)
        );
        let empty_means_false = HostSignatureVerifier::new(|_: &[u8]| Some(Vec::new()));
        assert_eq!(
            empty_means_false.verify(&input(&parsed, &key)),
            Err(SignatureError::Invalid)
        );
        let wrong_length = SignedInput {
            signature: &[1u8; 63],
            ..input(&parsed, &key)
        };
        assert_eq!(
            verify_signature_arguments(&wrong_length),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn der_and_protobuf_primitives() {
        assert_eq!(der_integer(&[0x00, 0x00, 0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(der_integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_integer(&[0, 0]), [0x02, 0x01, 0x00]);
        assert_eq!(der_element(0x04, &[0u8; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(
            der_element(0x04, &[0u8; 300])[..4],
            [0x04, 0x82, 0x01, 0x2c]
        );
        let mut buffer = Vec::new();
        write_varint(&mut buffer, 300);
        assert_eq!(buffer, [0xac, 0x02]);
        assert_eq!(read_varint(&buffer), Some((300, &[][..])));
        assert_eq!(parse_verify_signature_result(&[0x08, 0x01]), Some(true));
        assert_eq!(
            parse_verify_signature_result(&[0x08, 0x00, 0x12, 0x01, b'x']),
            Some(false)
        );
        assert_eq!(parse_verify_signature_result(&[0x12, 0x05, b'x']), None);
        assert_eq!(parse_verify_signature_result(&[0x0d, 0, 0, 0, 0]), None);
    }
}
