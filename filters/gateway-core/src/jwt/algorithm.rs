//! JWS algorithms this gateway can verify, and the key family each one needs.

use std::fmt;

use thiserror::Error;

/// A JWS `alg` we implement. `none` is deliberately not representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

/// The kind of key an algorithm verifies with; a key of another family is never tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AlgorithmError {
    /// `none`, in any letter case: an unsigned token is never accepted.
    #[error("algorithm `none` is never accepted")]
    None,
    #[error("unsupported algorithm")]
    Unsupported,
}

// === impl Algorithm ===

impl Algorithm {
    pub const ALL: [Algorithm; 12] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::EdDsa,
        Self::Hs256,
        Self::Hs384,
        Self::Hs512,
    ];

    /// Parses a JOSE algorithm name. Names are case-sensitive (RFC 7515 §4.1.1), except that
    /// every spelling of `none` gets its own error so it can be counted as an attack.
    pub fn from_name(name: &str) -> Result<Self, AlgorithmError> {
        if name.eq_ignore_ascii_case("none") {
            return Err(AlgorithmError::None);
        }
        Self::ALL
            .into_iter()
            .find(|algorithm| algorithm.name() == name)
            .ok_or(AlgorithmError::Unsupported)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
        }
    }

    pub fn key_family(self) -> KeyFamily {
        match self {
            Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512 => {
                KeyFamily::Rsa
            }
            Self::Es256 => KeyFamily::EcP256,
            Self::Es384 => KeyFamily::EcP384,
            Self::EdDsa => KeyFamily::Ed25519,
            Self::Hs256 | Self::Hs384 | Self::Hs512 => KeyFamily::Hmac,
        }
    }

    pub fn is_hmac(self) -> bool {
        self.key_family() == KeyFamily::Hmac
    }

    /// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
    pub fn min_hmac_secret_bytes(self) -> usize {
        match self {
            Self::Hs256 => 32,
            Self::Hs384 => 48,
            Self::Hs512 => 64,
            _ => 0,
        }
    }

    /// The digest name Envoy's `verify_signature` foreign function expects, where that
    /// function can verify this algorithm at all (PKCS#1 v1.5 and ECDSA only; see
    /// [`crate::jwt::verify`]).
    pub fn host_hash_function(self) -> Option<&'static str> {
        match self {
            Self::Rs256 | Self::Es256 => Some("sha256"),
            Self::Rs384 | Self::Es384 => Some("sha384"),
            Self::Rs512 => Some("sha512"),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_case_sensitively() {
        let cases = [
            ("RS256", Ok(Algorithm::Rs256)),
            ("ES384", Ok(Algorithm::Es384)),
            ("EdDSA", Ok(Algorithm::EdDsa)),
            ("HS512", Ok(Algorithm::Hs512)),
            ("rs256", Err(AlgorithmError::Unsupported)),
            ("Ed25519", Err(AlgorithmError::Unsupported)),
            ("ES256K", Err(AlgorithmError::Unsupported)),
            ("RSA-OAEP", Err(AlgorithmError::Unsupported)),
            ("", Err(AlgorithmError::Unsupported)),
            ("none", Err(AlgorithmError::None)),
            ("None", Err(AlgorithmError::None)),
            ("NONE", Err(AlgorithmError::None)),
            ("nOnE", Err(AlgorithmError::None)),
        ];
        for (name, expected) in cases {
            assert_eq!(Algorithm::from_name(name), expected, "{name}");
        }
    }

    #[test]
    fn every_algorithm_round_trips_and_has_a_family() {
        for algorithm in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(algorithm.name()), Ok(algorithm));
            assert_eq!(algorithm.is_hmac(), algorithm.min_hmac_secret_bytes() > 0);
        }
        assert_eq!(Algorithm::Ps256.key_family(), KeyFamily::Rsa);
        assert_eq!(Algorithm::Ps256.host_hash_function(), None);
        assert_eq!(Algorithm::EdDsa.host_hash_function(), None);
        assert_eq!(Algorithm::Es384.host_hash_function(), Some("sha384"));
    }
}
