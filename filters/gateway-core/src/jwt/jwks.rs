//! JWKS parsing into verification keys.
//!
//! A key is used only if everything about it is consistent; otherwise it is skipped and reported
//! (so the glue can count and log it) while the rest of the set stays usable:
//! * `kty` `RSA` (`n`, `e`; modulus 2048–8192 bits), `EC` (`crv` `P-256`/`P-384`, `x`, `y` of the
//!   curve's size, point on the curve) or `OKP` (`crv` `Ed25519`, `x`). `oct` keys are always
//!   skipped: a symmetric key published in a JWKS is public, so anything it "verifies" is forged;
//! * `use`, when present, must be `sig`; `key_ops`, when present, must include `verify`;
//! * `alg`, when present, must be an algorithm of the key's family; the key is then bound to
//!   exactly that algorithm (RFC 8725 §3.1). Without `alg`, any allowed algorithm of the family;
//! * a JWK carrying private members (`d`, `p`, ...) is skipped: its private key has leaked;
//! * a later key repeating an earlier `kid` is skipped, so a `kid` names one key.
//!
//! A document that is not a JSON object with a `keys` array, exceeds [`MAX_JWKS_BYTES`] or
//! [`MAX_KEYS`], or yields no usable key at all is rejected as a whole; the caller keeps its
//! last-known-good keys.

use std::fmt;

use jwt_simple::prelude::{ES256PublicKey, ES384PublicKey, Ed25519PublicKey, RS256PublicKey};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::algorithm::{Algorithm, KeyFamily};
use super::base64url;

/// Largest JWKS document accepted (real ones are a few KiB).
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Most keys one JWKS may list.
pub const MAX_KEYS: usize = 32;

const MIN_RSA_MODULUS_BITS: usize = 2048;
const MAX_RSA_MODULUS_BITS: usize = 8192;
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("JWKS is not a JSON object with a `keys` array")]
    NotAKeySet,
    #[error("JWKS lists more than {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("JWKS has no usable signature key ({skipped} skipped)")]
    NoUsableKeys { skipped: usize },
}

/// Why one JWK was not loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NotAnObject,
    SymmetricKey,
    UnsupportedKeyType,
    UnsupportedCurve,
    NotForSignatures,
    AlgorithmMismatch,
    PrivateKeyPublished,
    InvalidKeyMaterial,
    WeakKey,
    DuplicateKeyId,
}

/// A JWK that was not loaded, for logs and metrics (`kid` is public information).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    pub index: usize,
    pub key_id: Option<String>,
    pub reason: SkipReason,
}

/// Public key material, or a configured HMAC secret.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// Big-endian modulus (no leading zero bytes) and exponent.
    Rsa {
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    /// SEC1 uncompressed point `04 || x || y`.
    EcP256 {
        point: Vec<u8>,
    },
    EcP384 {
        point: Vec<u8>,
    },
    Ed25519 {
        public: Vec<u8>,
    },
    Hmac {
        secret: Vec<u8>,
    },
}

/// One key an issuer signs with.
#[derive(Clone, PartialEq, Eq)]
pub struct VerificationKey {
    key_id: Option<String>,
    algorithm: Option<Algorithm>,
    material: KeyMaterial,
    fingerprint: KeyFingerprint,
}

/// SHA-256 over the key material: identifies a key across refreshes, so a cached token is
/// only reused while the key that verified it is still published unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyFingerprint([u8; 32]);

/// The usable keys of one source (an inline JWKS, a remote JWKS, or a shared secret).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

/// Outcome of a successful JWKS parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedJwks {
    pub keys: KeySet,
    pub skipped: Vec<SkippedKey>,
}

/// Outcome of looking up the key for a token.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyLookup<'a> {
    Found(&'a VerificationKey),
    /// No key with this `kid` (or, without `kid`, none for the algorithm): a refetch may help.
    UnknownKey,
    /// The `kid` exists but is bound to another algorithm or key type.
    AlgorithmMismatch,
    /// No `kid` and several keys could verify: we never try keys one after another.
    Ambiguous,
}

// === impl KeyFingerprint ===

impl KeyFingerprint {
    fn of(material: &KeyMaterial) -> Self {
        let mut hasher = Sha256::new();
        let (tag, parts): (u8, [&[u8]; 2]) = match material {
            KeyMaterial::Rsa { modulus, exponent } => (1, [modulus, exponent]),
            KeyMaterial::EcP256 { point } => (2, [point, &[]]),
            KeyMaterial::EcP384 { point } => (3, [point, &[]]),
            KeyMaterial::Ed25519 { public } => (4, [public, &[]]),
            KeyMaterial::Hmac { secret } => (5, [secret, &[]]),
        };
        hasher.update([tag]);
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Self(hasher.finalize().into())
    }
}

// === impl VerificationKey ===

impl VerificationKey {
    pub fn hmac(secret: Vec<u8>) -> Self {
        let material = KeyMaterial::Hmac { secret };
        Self {
            key_id: None,
            algorithm: None,
            fingerprint: KeyFingerprint::of(&material),
            material,
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    pub fn algorithm(&self) -> Option<Algorithm> {
        self.algorithm
    }

    pub fn material(&self) -> &KeyMaterial {
        &self.material
    }

    pub fn fingerprint(&self) -> KeyFingerprint {
        self.fingerprint
    }

    pub fn family(&self) -> KeyFamily {
        match self.material {
            KeyMaterial::Rsa { .. } => KeyFamily::Rsa,
            KeyMaterial::EcP256 { .. } => KeyFamily::EcP256,
            KeyMaterial::EcP384 { .. } => KeyFamily::EcP384,
            KeyMaterial::Ed25519 { .. } => KeyFamily::Ed25519,
            KeyMaterial::Hmac { .. } => KeyFamily::Hmac,
        }
    }

    /// Whether this key may verify a token signed with `algorithm`.
    pub fn accepts(&self, algorithm: Algorithm) -> bool {
        self.family() == algorithm.key_family() && self.algorithm.is_none_or(|a| a == algorithm)
    }

    /// The public JWK of this key (never called for HMAC secrets, which are not shared).
    fn to_jwk(&self) -> Option<Value> {
        let mut jwk = match &self.material {
            KeyMaterial::Rsa { modulus, exponent } => json!({
                "kty": "RSA", "n": base64url::encode(modulus), "e": base64url::encode(exponent)
            }),
            KeyMaterial::EcP256 { point } | KeyMaterial::EcP384 { point } => {
                let curve = if self.family() == KeyFamily::EcP256 {
                    "P-256"
                } else {
                    "P-384"
                };
                let coordinates = point.get(1..)?;
                let (x, y) = coordinates.split_at(coordinates.len() / 2);
                json!({"kty": "EC", "crv": curve, "x": base64url::encode(x), "y": base64url::encode(y)})
            }
            KeyMaterial::Ed25519 { public } => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": base64url::encode(public)})
            }
            KeyMaterial::Hmac { .. } => return None,
        };
        if let Value::Object(members) = &mut jwk {
            if let Some(kid) = &self.key_id {
                members.insert("kid".to_owned(), Value::String(kid.clone()));
            }
            if let Some(algorithm) = self.algorithm {
                members.insert("alg".to_owned(), Value::String(algorithm.name().to_owned()));
            }
        }
        Some(jwk)
    }
}

impl fmt::Debug for VerificationKey {
    // Key material stays out of logs (an HMAC secret is a secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("family", &self.family())
            .finish_non_exhaustive()
    }
}

// === impl KeySet ===

impl KeySet {
    pub fn from_keys(keys: Vec<VerificationKey>) -> Self {
        Self { keys }
    }

    /// Parses a JWKS document.
    pub fn parse_jwks(document: &[u8]) -> Result<ParsedJwks, JwksError> {
        if document.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let value: Value = serde_json::from_slice(document).map_err(|_| JwksError::NotAKeySet)?;
        Self::from_jwks_value(&value)
    }

    pub fn from_jwks_value(document: &Value) -> Result<ParsedJwks, JwksError> {
        let Some(Value::Array(entries)) =
            document.as_object().and_then(|object| object.get("keys"))
        else {
            return Err(JwksError::NotAKeySet);
        };
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        let mut keys: Vec<VerificationKey> = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let key_id = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
            let parsed = match entry {
                Value::Object(jwk) => parse_jwk(jwk),
                _ => Err(SkipReason::NotAnObject),
            };
            let result = parsed.and_then(|key| {
                let duplicate = key.key_id.is_some()
                    && keys.iter().any(|existing| existing.key_id == key.key_id);
                if duplicate {
                    Err(SkipReason::DuplicateKeyId)
                } else {
                    Ok(key)
                }
            });
            match result {
                Ok(key) => keys.push(key),
                Err(reason) => skipped.push(SkippedKey {
                    index,
                    key_id,
                    reason,
                }),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys {
                skipped: skipped.len(),
            });
        }
        Ok(ParsedJwks {
            keys: KeySet { keys },
            skipped,
        })
    }

    /// Canonical JWKS JSON of the public keys, which [`KeySet::parse_jwks`] reads back.
    pub fn to_jwks_json(&self) -> String {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .filter_map(VerificationKey::to_jwk)
            .collect();
        json!({ "keys": keys }).to_string()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &VerificationKey> {
        self.keys.iter()
    }

    /// Finds the key for a token's `kid` and `alg`.
    pub fn find(&self, key_id: Option<&str>, algorithm: Algorithm) -> KeyLookup<'_> {
        match key_id {
            Some(kid) => match self
                .keys
                .iter()
                .find(|key| key.key_id.as_deref() == Some(kid))
            {
                None => KeyLookup::UnknownKey,
                Some(key) if key.accepts(algorithm) => KeyLookup::Found(key),
                Some(_) => KeyLookup::AlgorithmMismatch,
            },
            None => {
                let mut candidates = self.keys.iter().filter(|key| key.accepts(algorithm));
                match (candidates.next(), candidates.next()) {
                    (Some(key), None) => KeyLookup::Found(key),
                    (None, _) => KeyLookup::UnknownKey,
                    (Some(_), Some(_)) => KeyLookup::Ambiguous,
                }
            }
        }
    }

    /// True if a key with this fingerprint is in the set.
    pub fn contains(&self, fingerprint: KeyFingerprint) -> bool {
        self.keys.iter().any(|key| key.fingerprint == fingerprint)
    }
}

fn parse_jwk(jwk: &Map<String, Value>) -> Result<VerificationKey, SkipReason> {
    let key_type = jwk
        .get("kty")
        .and_then(Value::as_str)
        .ok_or(SkipReason::UnsupportedKeyType)?;
    if key_type == "oct" {
        return Err(SkipReason::SymmetricKey);
    }
    match jwk.get("use") {
        None => {}
        Some(Value::String(usage)) if usage == "sig" => {}
        Some(_) => return Err(SkipReason::NotForSignatures),
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(operations)) if operations.iter().any(|op| op == "verify") => {}
        Some(_) => return Err(SkipReason::NotForSignatures),
    }
    if PRIVATE_MEMBERS
        .iter()
        .any(|member| jwk.contains_key(*member))
    {
        return Err(SkipReason::PrivateKeyPublished);
    }
    let key_id = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(SkipReason::InvalidKeyMaterial),
    };
    let material = match key_type {
        "RSA" => rsa_material(jwk)?,
        "EC" => ec_material(jwk)?,
        "OKP" => okp_material(jwk)?,
        _ => return Err(SkipReason::UnsupportedKeyType),
    };
    let key = VerificationKey {
        key_id,
        algorithm: None,
        fingerprint: KeyFingerprint::of(&material),
        material,
    };
    let algorithm = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => {
            let algorithm =
                Algorithm::from_name(name).map_err(|_| SkipReason::AlgorithmMismatch)?;
            if algorithm.key_family() != key.family() {
                return Err(SkipReason::AlgorithmMismatch);
            }
            Some(algorithm)
        }
        Some(_) => return Err(SkipReason::AlgorithmMismatch),
    };
    Ok(VerificationKey { algorithm, ..key })
}

fn member_bytes(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, SkipReason> {
    jwk.get(name)
        .and_then(Value::as_str)
        .and_then(|text| base64url::decode(text).ok())
        .filter(|bytes| !bytes.is_empty())
        .ok_or(SkipReason::InvalidKeyMaterial)
}

fn rsa_material(jwk: &Map<String, Value>) -> Result<KeyMaterial, SkipReason> {
    let modulus = strip_leading_zeros(member_bytes(jwk, "n")?);
    let exponent = strip_leading_zeros(member_bytes(jwk, "e")?);
    let bits = modulus.len() * 8
        - modulus
            .first()
            .map_or(8, |top| top.leading_zeros() as usize);
    if !(MIN_RSA_MODULUS_BITS..=MAX_RSA_MODULUS_BITS).contains(&bits) {
        return Err(SkipReason::WeakKey);
    }
    // The exponent must be odd and > 1; larger than 32 bits only slows verification down.
    let is_odd = exponent.last().is_some_and(|low| low & 1 == 1);
    if exponent.len() > 4 || !is_odd || exponent == [1] {
        return Err(SkipReason::WeakKey);
    }
    RS256PublicKey::from_components(&modulus, &exponent)
        .map_err(|_| SkipReason::InvalidKeyMaterial)?;
    Ok(KeyMaterial::Rsa { modulus, exponent })
}

fn ec_material(jwk: &Map<String, Value>) -> Result<KeyMaterial, SkipReason> {
    let curve = jwk
        .get("crv")
        .and_then(Value::as_str)
        .ok_or(SkipReason::UnsupportedCurve)?;
    let coordinate_len = match curve {
        "P-256" => 32,
        "P-384" => 48,
        _ => return Err(SkipReason::UnsupportedCurve),
    };
    let x = member_bytes(jwk, "x")?;
    let y = member_bytes(jwk, "y")?;
    if x.len() != coordinate_len || y.len() != coordinate_len {
        return Err(SkipReason::InvalidKeyMaterial);
    }
    let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    // Construction checks that the point is on the curve.
    if coordinate_len == 32 {
        ES256PublicKey::from_bytes(&point).map_err(|_| SkipReason::InvalidKeyMaterial)?;
        Ok(KeyMaterial::EcP256 { point })
    } else {
        ES384PublicKey::from_bytes(&point).map_err(|_| SkipReason::InvalidKeyMaterial)?;
        Ok(KeyMaterial::EcP384 { point })
    }
}

fn okp_material(jwk: &Map<String, Value>) -> Result<KeyMaterial, SkipReason> {
    if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return Err(SkipReason::UnsupportedCurve);
    }
    let public = member_bytes(jwk, "x")?;
    Ed25519PublicKey::from_bytes(&public).map_err(|_| SkipReason::InvalidKeyMaterial)?;
    Ok(KeyMaterial::Ed25519 { public })
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|byte| **byte == 0).count();
    bytes.drain(..zeros.min(bytes.len().saturating_sub(1)));
    bytes
}

#[cfg(test)]
pub(crate) mod tests {
    use jwt_simple::prelude::*;

    use super::*;

    /// Test keys, generated once per process: RSA key generation is slow.
    pub(crate) struct TestKeys {
        pub rsa: RS256KeyPair,
        pub es256: ES256KeyPair,
        pub es384: ES384KeyPair,
        pub ed25519: Ed25519KeyPair,
    }

    pub(crate) fn test_keys() -> &'static TestKeys {
        static KEYS: std::sync::OnceLock<TestKeys> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| TestKeys {
            rsa: RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-1"),
            es256: ES256KeyPair::generate().with_key_id("ec-1"),
            es384: ES384KeyPair::generate().with_key_id("ec384-1"),
            ed25519: Ed25519KeyPair::generate().with_key_id("ed-1"),
        })
    }

    pub(crate) fn rsa_jwk(kid: &str, alg: Option<&str>) -> Value {
        let components = test_keys().rsa.public_key().to_components();
        let mut jwk = json!({"kty": "RSA", "kid": kid, "use": "sig",
            "n": base64url::encode(&components.n), "e": base64url::encode(&components.e)});
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    pub(crate) fn ec_jwk(kid: &str) -> Value {
        let point = test_keys()
            .es256
            .public_key()
            .public_key()
            .to_bytes_uncompressed();
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": base64url::encode(&point[1..33]), "y": base64url::encode(&point[33..])})
    }

    pub(crate) fn ed_jwk(kid: &str) -> Value {
        let public = test_keys().ed25519.public_key().to_bytes();
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": base64url::encode(&public)})
    }

    pub(crate) fn ec384_jwk(kid: &str) -> Value {
        let point = test_keys()
            .es384
            .public_key()
            .public_key()
            .to_bytes_uncompressed();
        json!({"kty": "EC", "crv": "P-384", "kid": kid,
            "x": base64url::encode(&point[1..49]), "y": base64url::encode(&point[49..])})
    }

    fn parse(keys: Vec<Value>) -> Result<ParsedJwks, JwksError> {
        KeySet::from_jwks_value(&json!({ "keys": keys }))
    }

    #[test]
    fn loads_every_supported_key_type() {
        let parsed = parse(vec![
            rsa_jwk("rsa-1", Some("RS256")),
            ec_jwk("ec-1"),
            ec384_jwk("ec384-1"),
            ed_jwk("ed-1"),
        ])
        .unwrap();
        assert!(parsed.skipped.is_empty());
        assert_eq!(parsed.keys.len(), 4);
        let families: Vec<_> = parsed.keys.iter().map(VerificationKey::family).collect();
        assert_eq!(
            families,
            [
                KeyFamily::Rsa,
                KeyFamily::EcP256,
                KeyFamily::EcP384,
                KeyFamily::Ed25519
            ]
        );
    }

    #[test]
    fn skips_unusable_keys_and_reports_why() {
        let mut bad_point = ec_jwk("bad-point");
        bad_point["y"] = json!(base64url::encode(&[7u8; 32]));
        let mut short_x = ec_jwk("short-x");
        short_x["x"] = json!(base64url::encode(&[7u8; 31]));
        let mut private = ec_jwk("private");
        private["d"] = json!("AAAA");
        let mut enc = rsa_jwk("enc", None);
        enc["use"] = json!("enc");
        let mut ops = rsa_jwk("ops", None);
        ops["key_ops"] = json!(["encrypt"]);
        let mut weak = rsa_jwk("weak", None);
        weak["n"] = json!(base64url::encode(&[0xc5u8; 128]));
        let mut even_e = rsa_jwk("even-e", None);
        even_e["e"] = json!(base64url::encode(&[2u8]));
        let mut padded = rsa_jwk("padded", None);
        padded["n"] = json!(format!("{}=", padded["n"].as_str().unwrap()));
        let cases = vec![
            (
                json!({"kty": "oct", "k": "c2VjcmV0", "kid": "oct"}),
                SkipReason::SymmetricKey,
            ),
            (
                json!({"kty": "XYZ", "kid": "xyz"}),
                SkipReason::UnsupportedKeyType,
            ),
            (json!({"kid": "no-kty"}), SkipReason::UnsupportedKeyType),
            (json!("not an object"), SkipReason::NotAnObject),
            (
                json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}),
                SkipReason::UnsupportedCurve,
            ),
            (
                json!({"kty": "OKP", "crv": "X25519", "x": "AA"}),
                SkipReason::UnsupportedCurve,
            ),
            (bad_point, SkipReason::InvalidKeyMaterial),
            (short_x, SkipReason::InvalidKeyMaterial),
            (private, SkipReason::PrivateKeyPublished),
            (enc, SkipReason::NotForSignatures),
            (ops, SkipReason::NotForSignatures),
            (
                rsa_jwk("es-on-rsa", Some("ES256")),
                SkipReason::AlgorithmMismatch,
            ),
            (
                rsa_jwk("hs-on-rsa", Some("HS256")),
                SkipReason::AlgorithmMismatch,
            ),
            (rsa_jwk("none", Some("none")), SkipReason::AlgorithmMismatch),
            (weak, SkipReason::WeakKey),
            (even_e, SkipReason::WeakKey),
            (padded, SkipReason::InvalidKeyMaterial),
            (ed_jwk("rsa-1"), SkipReason::DuplicateKeyId),
        ];
        let mut keys = vec![rsa_jwk("rsa-1", None)];
        keys.extend(cases.iter().map(|(jwk, _)| jwk.clone()));
        let parsed = parse(keys).unwrap();
        assert_eq!(parsed.keys.len(), 1);
        let reasons: Vec<_> = parsed
            .skipped
            .iter()
            .map(|skipped| skipped.reason)
            .collect();
        let expected: Vec<_> = cases.iter().map(|(_, reason)| *reason).collect();
        assert_eq!(reasons, expected);
        assert_eq!(parsed.skipped[0].index, 1);
        assert_eq!(parsed.skipped[0].key_id.as_deref(), Some("oct"));
    }

    #[test]
    fn rejects_garbage_documents() {
        let cases: Vec<(Vec<u8>, JwksError)> = vec![
            (b"<html>".to_vec(), JwksError::NotAKeySet),
            (b"[]".to_vec(), JwksError::NotAKeySet),
            (br#"{"keys": {}}"#.to_vec(), JwksError::NotAKeySet),
            (
                br#"{"keys": []}"#.to_vec(),
                JwksError::NoUsableKeys { skipped: 0 },
            ),
            (
                br#"{"keys": [{"kty": "oct"}]}"#.to_vec(),
                JwksError::NoUsableKeys { skipped: 1 },
            ),
            (vec![b' '; MAX_JWKS_BYTES + 1], JwksError::TooLarge),
            (
                json!({"keys": vec![json!({}); MAX_KEYS + 1]})
                    .to_string()
                    .into_bytes(),
                JwksError::TooManyKeys,
            ),
        ];
        for (document, expected) in cases {
            assert_eq!(KeySet::parse_jwks(&document).err(), Some(expected));
        }
    }

    #[test]
    fn lookup_binds_keys_to_algorithms() {
        let keys = parse(vec![
            rsa_jwk("rsa-1", Some("RS256")),
            ec_jwk("ec-1"),
            ed_jwk("ed-1"),
        ])
        .unwrap()
        .keys;
        let found = |lookup: KeyLookup<'_>| match lookup {
            KeyLookup::Found(key) => key.key_id().map(str::to_owned),
            _ => None,
        };
        assert_eq!(
            found(keys.find(Some("rsa-1"), Algorithm::Rs256)).as_deref(),
            Some("rsa-1")
        );
        assert_eq!(
            keys.find(Some("rsa-1"), Algorithm::Ps256),
            KeyLookup::AlgorithmMismatch
        );
        assert_eq!(
            keys.find(Some("rsa-1"), Algorithm::Hs256),
            KeyLookup::AlgorithmMismatch
        );
        assert_eq!(
            keys.find(Some("ec-1"), Algorithm::Es384),
            KeyLookup::AlgorithmMismatch
        );
        assert_eq!(
            keys.find(Some("nope"), Algorithm::Rs256),
            KeyLookup::UnknownKey
        );
        assert_eq!(
            found(keys.find(None, Algorithm::EdDsa)).as_deref(),
            Some("ed-1")
        );
        assert_eq!(keys.find(None, Algorithm::Es384), KeyLookup::UnknownKey);

        // Without a kid, two keys that could both verify means no guessing.
        let second_ec = ES256KeyPair::generate()
            .public_key()
            .public_key()
            .to_bytes_uncompressed();
        let other_ec = json!({"kty": "EC", "crv": "P-256",
            "x": base64url::encode(&second_ec[1..33]), "y": base64url::encode(&second_ec[33..])});
        let two_ec = parse(vec![ec_jwk("ec-1"), other_ec]).unwrap().keys;
        assert_eq!(two_ec.find(None, Algorithm::Es256), KeyLookup::Ambiguous);
    }

    #[test]
    fn serialization_round_trips() {
        let parsed = parse(vec![
            rsa_jwk("rsa-1", Some("RS256")),
            ec_jwk("ec-1"),
            ec384_jwk("x"),
            ed_jwk("ed-1"),
        ])
        .unwrap();
        let json = parsed.keys.to_jwks_json();
        let reparsed = KeySet::parse_jwks(json.as_bytes()).unwrap();
        assert_eq!(reparsed.keys, parsed.keys);
        assert!(reparsed.skipped.is_empty());
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let key = VerificationKey::hmac(b"super-secret-value-of-32-bytes!!".to_vec());
        let printed = format!("{key:?}");
        assert!(!printed.contains("super-secret"));
        assert!(printed.contains("Hmac"));
    }
}
