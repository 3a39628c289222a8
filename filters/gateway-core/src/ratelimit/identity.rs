//! The verified user: how jwt-authz hands it over, and the per-user key made from it.
//!
//! # Hand-off channel: Envoy filter state, not a header
//!
//! jwt-authz writes the verified subject with `proxy_set_property([<name>], subject)` after a
//! successful verification, and only then. Envoy stores it as the stream's filter-state object
//! `wasm.<name>`; the tagger reads it back with `proxy_get_property([<name>])`, which resolves
//! an unknown first path segment to exactly that filter-state object.
//!
//! Why this channel:
//! * A client cannot write filter state. Nothing in the request (headers, path, body, trailers)
//!   reaches it, so there is nothing to strip and no ordering mistake that lets a client value
//!   through.
//! * If jwt-authz is missing (its EnvoyFilter silently failed to apply, or a route bypasses it),
//!   the property is simply absent and the request is keyed by client IP as an anonymous one:
//!   the failure degrades to "no per-user bucket", never to "a user chosen by the client".
//! * It lives and dies with the stream (filter-chain lifespan); nothing leaks into the next
//!   request on the connection or upstream.
//! * It works across VMs: filter state belongs to the stream, not to a VM, so jwt-authz and
//!   the tagger keep separate `vm_id`s and a crash in one cannot take down the other.
//!
//! Rejected alternatives:
//! * An internal header set by jwt-authz and stripped by the tagger cannot work: the tagger
//!   cannot tell jwt-authz's copy from a client's copy, so it must either strip both or trust
//!   both. Stripping in jwt-authz alone fails open when jwt-authz does not run.
//! * A header signed with a per-boot secret kept in shared data: shared data is scoped by
//!   `vm_id` in Envoy, so both filters would have to share one VM (one crash domain), the
//!   secret changes whenever a VM is (re)created (`FAIL_RELOAD`), and a secret in a header is
//!   one missed strip away from leaking upstream.
//!
//! The value is the subject as UTF-8 bytes, written by jwt-authz exactly as it verified it. If
//! more than one issuer can mint tokens for the same routes, jwt-authz should qualify it
//! (`<issuer alias>|<sub>`) so that equal `sub` values of different issuers do not share a
//! bucket; the tagger treats the value as opaque.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Default property (filter-state) name jwt-authz writes and the tagger reads. Envoy prefixes
/// it with `wasm.` internally; the proxy-wasm calls use it as is.
pub const DEFAULT_VERIFIED_SUBJECT_PROPERTY: &str = "svcgw.verified_subject";

/// Longest subject accepted. OpenID Connect caps `sub` at 255 ASCII characters; the margin
/// leaves room for an issuer qualifier. Anything longer is a bug upstream, not a user.
pub const MAX_SUBJECT_LEN: usize = 512;

/// Subjects up to this length that use only safe characters are used verbatim; anything else
/// is hashed so the key stays short and header-safe.
const MAX_VERBATIM_LEN: usize = 128;

/// Prefix of hashed keys. A verbatim subject starting with it is hashed as well, so a subject
/// can never be mistaken for the hash of another one.
const HASHED_PREFIX: &str = "sha256:";

/// The per-user rate-limit key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserKey(String);

/// Why a handed-over subject was not used. The request is then keyed as anonymous (by IP) and
/// the reason is counted; it never fails the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SubjectError {
    #[error("verified subject is empty")]
    Empty,
    #[error("verified subject is longer than {MAX_SUBJECT_LEN} bytes")]
    TooLong,
    #[error("verified subject is not UTF-8")]
    NotUtf8,
    #[error("verified subject contains a control character")]
    ControlCharacter,
}

/// Namespace of every filter-state name the svc-gateway filters exchange.
pub const PROPERTY_NAMESPACE: &str = "svcgw.";

/// Validates a property name as jwt-authz and the tagger will use it: `svcgw.` followed by
/// dot-separated lower-case identifiers. The fixed namespace keeps it clear of Envoy's own
/// attribute roots (`request`, `source`, `filter_state`, ...) and of other wasm filters.
pub fn is_valid_property_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PROPERTY_NAMESPACE) else {
        return false;
    };
    let segments_ok = rest.split('.').all(|segment| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    });
    name.len() <= 128 && segments_ok
}

// === impl SubjectError ===

impl SubjectError {
    /// Stable label for the identity-fallback metric.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Empty => "subject_empty",
            Self::TooLong => "subject_too_long",
            Self::NotUtf8 => "subject_not_utf8",
            Self::ControlCharacter => "subject_control_character",
        }
    }
}

// === impl UserKey ===

impl UserKey {
    /// Builds the key from the property value. Safe subjects (visible ASCII without `"`, `\`,
    /// `,`; at most 128 bytes) are used as they are, so descriptors stay readable in the
    /// rate-limit service's logs; others (non-ASCII, spaces, long) become
    /// `sha256:<64 hex digits>`, which is stable, header-safe and of bounded size.
    pub fn from_verified_subject(raw: &[u8]) -> Result<Self, SubjectError> {
        if raw.is_empty() {
            return Err(SubjectError::Empty);
        }
        if raw.len() > MAX_SUBJECT_LEN {
            return Err(SubjectError::TooLong);
        }
        let subject = std::str::from_utf8(raw).map_err(|_| SubjectError::NotUtf8)?;
        if subject.chars().any(char::is_control) {
            return Err(SubjectError::ControlCharacter);
        }
        let verbatim = subject.len() <= MAX_VERBATIM_LEN
            && !subject.starts_with(HASHED_PREFIX)
            && subject
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b','));
        if verbatim {
            return Ok(Self(subject.to_owned()));
        }
        Ok(Self(format!(
            "{HASHED_PREFIX}{}",
            hex(&Sha256::digest(raw))
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| [b >> 4, b & 0x0f])
        .filter_map(|nibble| char::from_digit(u32::from(nibble), 16))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_user_keys() {
        let hashed_alice = format!(
            "sha256:{}",
            hex(&Sha256::digest("Ålice Example".as_bytes()))
        );
        let cases: &[(&[u8], Result<&str, SubjectError>)] = &[
            (b"user-8812", Ok("user-8812")),
            (b"auth0|5f3a9c", Ok("auth0|5f3a9c")),
            (b"urn:example:user:42", Ok("urn:example:user:42")),
            ("Ålice Example".as_bytes(), Ok(&hashed_alice)),
            // failing cases
            (b"", Err(SubjectError::Empty)),
            (b"\xff\xfe", Err(SubjectError::NotUtf8)),
            (
                b"user\r\nx-rl-class: free",
                Err(SubjectError::ControlCharacter),
            ),
            (b"user\0", Err(SubjectError::ControlCharacter)),
        ];
        for (raw, want) in cases {
            let got = UserKey::from_verified_subject(raw);
            assert_eq!(
                got.as_ref().map(UserKey::as_str).map_err(|e| *e),
                want.map(|s| s),
                "{raw:?}"
            );
        }
        assert_eq!(
            UserKey::from_verified_subject(&[b'a'; MAX_SUBJECT_LEN + 1]),
            Err(SubjectError::TooLong)
        );
    }

    #[test]
    fn unsafe_or_long_subjects_are_hashed_to_a_fixed_size() {
        for raw in [
            "with space".to_owned(),
            "quote\"d".to_owned(),
            "comma,separated".to_owned(),
            "a".repeat(MAX_VERBATIM_LEN + 1),
            format!("{HASHED_PREFIX}{}", "0".repeat(64)),
        ] {
            let key = UserKey::from_verified_subject(raw.as_bytes()).unwrap();
            assert!(key.as_str().starts_with(HASHED_PREFIX), "{raw}");
            assert_eq!(key.as_str().len(), HASHED_PREFIX.len() + 64, "{raw}");
            assert_ne!(key.as_str(), raw);
        }
        // Stable: the same subject always lands in the same bucket.
        let a = UserKey::from_verified_subject("with space".as_bytes()).unwrap();
        let b = UserKey::from_verified_subject("with space".as_bytes()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn validates_property_names() {
        let cases: &[(&str, bool)] = &[
            (DEFAULT_VERIFIED_SUBJECT_PROPERTY, true),
            ("svcgw.jwt_authz.subject", true),
            ("request", false),
            ("source.address", false),
            ("wasm.svcgw.sub", false),
            ("", false),
            ("svcgw.", false),
            (".svcgw", false),
            ("svcgw..sub", false),
            ("SvcGw.sub", false),
            ("svcgw.sub ject", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_valid_property_name(name), *want, "{name}");
        }
    }
}
