//! The in-module (pure-Rust) signature verifier this filter ships.
//!
//! The module must fit a ConfigMap (≤ 700 KB), and every algorithm jwt-simple verifies costs a
//! full monomorphized verification path plus its bignum or curve code (all twelve: 933 KB).
//! So the split is:
//! * **in the module** (pure Rust, works on any host): ES256, EdDSA (Envoy's
//!   `verify_signature` cannot do Ed25519) and HS256 (shared-secret issuers);
//! * **Envoy's `verify_signature` only** (BoringSSL): RS256, RS384, RS512, ES384 — and ES256
//!   whenever the host has it, since native is faster. RS256 is the common IdP default, but
//!   pure-Rust RSA in Wasm runs at about 0.12× native `jwt_authn`, far below the cold-verify
//!   budget, and its bignum code alone is ~120 KB of the module: the native path is the only
//!   one that meets both budgets;
//! * PS*, HS384, HS512: not verified by this build.
//!
//! A configuration naming an algorithm this build cannot verify on this host is rejected at
//! `on_configure` ([`unverifiable_algorithm`]): it fails loudly (Envoy keeps the previous
//! configuration) instead of denying every token at run time.
//!
//! The claim checks passed to jwt-simple are the same as [`gateway_core::jwt::PureRustVerifier`]
//! uses: exact issuer, our clock skew and host time, the size cap; they are a second,
//! independent check after the core's own.

use std::collections::HashSet;

use gateway_core::jwt::jwks::KeyMaterial;
use gateway_core::jwt::verify::{SignatureError, SignatureVerifier, SignedInput};
use gateway_core::jwt::{Algorithm, JwtAuthzConfig};
use jwt_simple::prelude::*;

/// Algorithms verified inside the module.
pub const IN_MODULE: [Algorithm; 3] = [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Hs256];

/// Algorithms only Envoy's `verify_signature` verifies.
pub const HOST_ONLY: [Algorithm; 4] = [
    Algorithm::Rs256,
    Algorithm::Rs384,
    Algorithm::Rs512,
    Algorithm::Es384,
];

/// jwt-simple, for [`IN_MODULE`] only; everything else is [`SignatureError::Unavailable`].
#[derive(Clone, Copy, Debug, Default)]
pub struct InModuleVerifier;

impl SignatureVerifier for InModuleVerifier {
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
            (Algorithm::Es256, KeyMaterial::EcP256 { point }) => ES256PublicKey::from_bytes(point)
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
            (algorithm, _) if !IN_MODULE.contains(&algorithm) => {
                return Err(SignatureError::Unavailable)
            }
            _ => return Err(SignatureError::KeyMismatch),
        };
        verified.map(drop).map_err(|_| SignatureError::Invalid)
    }
}

/// The first configured algorithm this build cannot verify, as `(field, algorithm)`.
pub fn unverifiable_algorithm(
    config: &JwtAuthzConfig,
    host_crypto: bool,
) -> Option<(String, Algorithm)> {
    config
        .issuers
        .iter()
        .enumerate()
        .flat_map(|(issuer_index, issuer)| {
            issuer
                .algorithms
                .iter()
                .enumerate()
                .map(move |(index, algorithm)| (issuer_index, index, *algorithm))
        })
        .find(|(_, _, algorithm)| {
            let verifiable =
                IN_MODULE.contains(algorithm) || (host_crypto && HOST_ONLY.contains(algorithm));
            !verifiable
        })
        .map(|(issuer_index, index, algorithm)| {
            (
                format!("issuers[{issuer_index}].algorithms[{index}]"),
                algorithm,
            )
        })
}
