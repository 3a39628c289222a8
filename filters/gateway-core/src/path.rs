//! Request-path canonicalization for policy matching.
//!
//! Rules are matched against the path *as the upstream will understand it*. Any spelling that
//! could be read two ways (by us and by an upstream framework) is rejected rather than guessed,
//! so a request can never match a rule it would not match after normalization:
//!
//! * the query (everything from the first `?`) is dropped; a `#` fragment is rejected, as clients
//!   never send one;
//! * the path must start with `/` (origin form) and contain only RFC 3986 path characters;
//! * `%2F`/`%5C` (encoded slash/backslash) are rejected: some upstreams decode them into
//!   separators, others do not;
//! * `%2E` and every other percent-encoded *unreserved* character are rejected: no well-behaved
//!   client encodes them, and decoding them is how `/%2e%2e/` dot segments are smuggled;
//! * `%25` is rejected: `%252F` turns into `/` under a second, buggy decode;
//! * percent-encoded control bytes and malformed escapes (`%G1`, a trailing `%`) are rejected;
//!   the remaining escapes are kept, with their hex digits upper-cased;
//! * `\`, `;` (Tomcat-style `..;/` path parameters), NUL, control and non-ASCII bytes are
//!   rejected;
//! * empty segments (`//`) and dot segments (`/./`, `/../`, a trailing `/.` or `/..`) are
//!   rejected.
//!
//! Case is preserved: paths are case-sensitive, and a rule that does not match a case variant
//! falls through to the default deny.

use thiserror::Error;

/// Why a request path was refused. Every variant maps to `400 Bad Request`.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is empty or does not start with '/'")]
    NotOriginForm,
    #[error("path contains a fragment ('#')")]
    Fragment,
    #[error("path contains a forbidden character {0:#04x}")]
    ForbiddenByte(u8),
    #[error("path contains a malformed percent-escape")]
    MalformedEscape,
    #[error("path contains an encoded slash or backslash")]
    EncodedSeparator,
    #[error("path percent-encodes an unreserved character, '%' or a control byte")]
    NonCanonicalEscape,
    #[error("path contains an empty segment ('//')")]
    EmptySegment,
    #[error("path contains a dot segment ('.' or '..')")]
    DotSegment,
}

impl PathError {
    /// Stable label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotOriginForm => "path_not_origin_form",
            Self::Fragment => "path_fragment",
            Self::ForbiddenByte(_) => "path_forbidden_byte",
            Self::MalformedEscape => "path_malformed_escape",
            Self::EncodedSeparator => "path_encoded_separator",
            Self::NonCanonicalEscape => "path_non_canonical_escape",
            Self::EmptySegment => "path_empty_segment",
            Self::DotSegment => "path_dot_segment",
        }
    }
}

/// A request path in canonical form: no query, no ambiguous spellings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NormalizedPath(String);

impl NormalizedPath {
    /// Canonicalizes the `:path` pseudo-header value (query allowed, it is dropped).
    pub fn parse(raw_path: &str) -> Result<Self, PathError> {
        let without_query = raw_path
            .split_once('?')
            .map_or(raw_path, |(path, _query)| path);
        canonicalize(without_query).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if `prefix` covers this path on a segment boundary: `/api/v1/wallet` covers
    /// `/api/v1/wallet` and `/api/v1/wallet/x`, not `/api/v1/walletx`.
    pub fn has_segment_prefix(&self, prefix: &str) -> bool {
        match self.0.strip_prefix(prefix) {
            None => false,
            Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        }
    }
}

impl std::fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn canonicalize(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let mut canonical = String::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'%' => {
                let high = bytes.next().and_then(hex_value);
                let low = bytes.next().and_then(hex_value);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(PathError::MalformedEscape);
                };
                let decoded = high << 4 | low;
                check_escape(decoded)?;
                canonical.push('%');
                canonical.push(upper_hex_digit(high));
                canonical.push(upper_hex_digit(low));
            }
            b'#' => return Err(PathError::Fragment),
            byte if is_path_byte(byte) => canonical.push(char::from(byte)),
            byte => return Err(PathError::ForbiddenByte(byte)),
        }
    }
    check_segments(&canonical)?;
    Ok(canonical)
}

fn upper_hex_digit(nibble: u8) -> char {
    match nibble {
        0..=9 => char::from(b'0' + nibble),
        _ => char::from(b'A' + (nibble & 0x0f) - 10),
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn check_escape(decoded: u8) -> Result<(), PathError> {
    match decoded {
        b'/' | b'\\' => Err(PathError::EncodedSeparator),
        byte if is_unreserved(byte) || byte == b'%' || byte.is_ascii_control() => {
            Err(PathError::NonCanonicalEscape)
        }
        _ => Ok(()),
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` plus `/`, minus `;` (see the module docs).
fn is_path_byte(byte: u8) -> bool {
    is_unreserved(byte)
        || matches!(
            byte,
            b'/' | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

fn check_segments(path: &str) -> Result<(), PathError> {
    // The leading '/' yields an empty first item; a trailing '/' an empty last one (allowed).
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        match segment {
            "" if !is_last => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_are_accepted() {
        let cases = [
            ("/", "/"),
            ("/api/v1/wallet", "/api/v1/wallet"),
            ("/api/v1/wallet/", "/api/v1/wallet/"),
            ("/api/v1/wallet?x=1&access_token=y", "/api/v1/wallet"),
            ("/api/v1/wallet?", "/api/v1/wallet"),
            ("/a/b%20c", "/a/b%20c"),
            ("/a/%e2%82%ac", "/a/%E2%82%AC"),
            ("/a/%3a:@!$&'()*+,=", "/a/%3A:@!$&'()*+,="),
            ("/.well-known/jwks.json", "/.well-known/jwks.json"),
            ("/a/...", "/a/..."),
            ("/a/.hidden", "/a/.hidden"),
            ("/API/V1", "/API/V1"),
        ];
        for (raw, expected) in cases {
            let path = NormalizedPath::parse(raw);
            assert_eq!(
                path.as_ref().map(NormalizedPath::as_str),
                Ok(expected),
                "{raw}"
            );
        }
    }

    #[test]
    fn ambiguous_paths_are_rejected() {
        use PathError::*;
        let cases = [
            ("", NotOriginForm),
            ("api/v1", NotOriginForm),
            ("*", NotOriginForm),
            ("http://evil/api", NotOriginForm),
            ("?x=1", NotOriginForm),
            ("/api/v1/wallet%2Fwithdraw", EncodedSeparator),
            ("/api/v1/wallet%2fwithdraw", EncodedSeparator),
            ("/api/v1/wallet%5Cwithdraw", EncodedSeparator),
            ("/api/v1/wallet%5cwithdraw", EncodedSeparator),
            ("/api/v1\\wallet", ForbiddenByte(b'\\')),
            ("/api/./v1", DotSegment),
            ("/api/../v1", DotSegment),
            ("/api/v1/.", DotSegment),
            ("/api/v1/..", DotSegment),
            ("/..", DotSegment),
            ("/api//v1", EmptySegment),
            ("//api", EmptySegment),
            ("/api/%2e%2e/admin", NonCanonicalEscape),
            ("/api/%2E/admin", NonCanonicalEscape),
            ("/api/%77allet", NonCanonicalEscape),
            ("/api/%7e", NonCanonicalEscape),
            ("/api/%252F", NonCanonicalEscape),
            ("/api/%00", NonCanonicalEscape),
            ("/api/%0d%0a", NonCanonicalEscape),
            ("/api/%7F", NonCanonicalEscape),
            ("/api/%", MalformedEscape),
            ("/api/%2", MalformedEscape),
            ("/api/%zz", MalformedEscape),
            ("/api/%+1", MalformedEscape),
            ("/api/v1/public/..;/wallet", ForbiddenByte(b';')),
            ("/api;jsessionid=1/x", ForbiddenByte(b';')),
            ("/api/\0", ForbiddenByte(0)),
            ("/api/\r\n", ForbiddenByte(b'\r')),
            ("/api/\t", ForbiddenByte(b'\t')),
            ("/api/a b", ForbiddenByte(b' ')),
            ("/api/\u{e9}", ForbiddenByte(0xc3)),
            ("/api/<script>", ForbiddenByte(b'<')),
            ("/api#frag", Fragment),
        ];
        for (raw, expected) in cases {
            assert_eq!(NormalizedPath::parse(raw), Err(expected), "{raw:?}");
        }
    }

    #[test]
    fn a_query_cannot_hide_path_problems_and_is_not_inspected() {
        // Everything after '?' is dropped before checks, so `..` there is harmless...
        assert!(NormalizedPath::parse("/api?x=/../../admin").is_ok());
        // ...but the path part is still checked.
        assert!(NormalizedPath::parse("/api/../x?y").is_err());
    }

    #[test]
    fn segment_prefix_matches_on_boundaries_only() {
        let cases = [
            ("/api/v1/wallet", "/api/v1/wallet", true),
            ("/api/v1/wallet/withdraw", "/api/v1/wallet", true),
            ("/api/v1/wallet/", "/api/v1/wallet", true),
            ("/api/v1/walletx", "/api/v1/wallet", false),
            ("/api/v1/wallet/withdraw", "/api/v1/wallet/", true),
            ("/api/v1/wallet", "/api/v1/wallet/", false),
            ("/anything", "/", true),
            ("/api/v1", "/api/v1/wallet", false),
        ];
        for (path, prefix, expected) in cases {
            let path = NormalizedPath::parse(path).unwrap();
            assert_eq!(
                path.has_segment_prefix(prefix),
                expected,
                "{path} / {prefix}"
            );
        }
    }

    #[test]
    fn reasons_are_stable_labels() {
        assert_eq!(PathError::DotSegment.reason(), "path_dot_segment");
        assert_eq!(PathError::ForbiddenByte(0).reason(), "path_forbidden_byte");
    }
}
