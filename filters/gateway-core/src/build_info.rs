//! What a filter says about itself in Envoy's log, so an operator can tell that an
//! EnvoyFilter really applied (patches fail silently) and which build and which
//! configuration are running.
//!
//! ```text
//! security-headers 0.1.0: vm started
//! security-headers 0.1.0: configured, config sha256:3f1c0e5a9b7d2c4e (preset api, ...)
//! ```

use std::fmt;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// Identity of a filter build. Filters fill it from their own crate metadata:
/// `BuildInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    pub filter: &'static str,
    pub version: &'static str,
}

/// SHA-256 of the configuration bytes exactly as Envoy handed them over. Shown as a
/// 16-hex-digit prefix: enough to tell configs apart in a log, and comparable with
/// the start of `sha256sum` over the same JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ConfigHash([u8; 32]);

// === impl BuildInfo ===

impl BuildInfo {
    pub const fn new(filter: &'static str, version: &'static str) -> Self {
        Self { filter, version }
    }

    pub fn vm_started(&self) -> String {
        format!("{self}: vm started")
    }

    pub fn configured(&self, hash: &ConfigHash, summary: &dyn fmt::Display) -> String {
        format!("{self}: configured, config {hash} ({summary})")
    }

    pub fn config_rejected(&self, hash: &ConfigHash, error: &dyn fmt::Display) -> String {
        format!("{self}: configuration rejected, config {hash}: {error}")
    }
}

impl fmt::Display for BuildInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.filter, self.version)
    }
}

// === impl ConfigHash ===

impl ConfigHash {
    const PREFIX_BYTES: usize = 8;

    pub fn of(config: &[u8]) -> Self {
        Self(Sha256::digest(config).into())
    }

    /// The full digest in lower-case hex, for tools that want all of it.
    pub fn full_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn prefix_hex(&self) -> String {
        hex(self.0.get(..Self::PREFIX_BYTES).unwrap_or(&self.0))
    }
}

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.prefix_hex())
    }
}

impl fmt::Debug for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigHash({})", self.full_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: BuildInfo = BuildInfo::new("security-headers", "0.1.0");

    #[test]
    fn hashes_match_sha256sum() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                b"{}",
                "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            ),
        ];
        for (config, expected) in cases {
            let hash = ConfigHash::of(config);
            assert_eq!(hash.full_hex(), *expected);
            assert_eq!(hash.prefix_hex(), expected[..16]);
            assert_eq!(hash.to_string(), format!("sha256:{}", &expected[..16]));
        }
        assert_ne!(ConfigHash::of(b"{}"), ConfigHash::of(b"{ }"));
    }

    #[test]
    fn log_lines_name_filter_version_and_hash() {
        let hash = ConfigHash::of(b"{}");
        assert_eq!(INFO.vm_started(), "security-headers 0.1.0: vm started");
        assert_eq!(
            INFO.configured(&hash, &"preset api"),
            "security-headers 0.1.0: configured, config sha256:44136fa355b3678a (preset api)"
        );
        assert_eq!(
            INFO.config_rejected(&hash, &"routes[0].pathPrefix: must start with '/'"),
            "security-headers 0.1.0: configuration rejected, config sha256:44136fa355b3678a: \
             routes[0].pathPrefix: must start with '/'"
        );
    }
}
