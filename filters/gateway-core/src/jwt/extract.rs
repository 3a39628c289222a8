//! Bearer token extraction (RFC 6750 §2.1), strictly.
//!
//! * Only the `Authorization` header; exactly one such header (two are rejected, even if equal:
//!   intermediaries disagree on which one counts).
//! * `access_token` in the query (name compared after percent-decoding, case-insensitively) is
//!   rejected whether or not a header is present: RFC 6750 §2 forbids two methods, and a token
//!   in a URL leaks into logs and `Referer` (RFC 6819 §4.6.7). Checked on authenticated routes
//!   only; anonymous routes ignore credentials entirely.
//! * Form `<scheme> SP <token>`: the scheme is matched case-insensitively (RFC 9110 §11.1:
//!   `bearer`, `BEARER` are fine); exactly one space, no tab, no second space, nothing after the
//!   token; the token must match RFC 6750 `b64token`. Another scheme (`Basic …`) means "no
//!   bearer token" (401 with a challenge); a malformed bearer credential is `invalid_request`.
//! * The size limit is applied before any decoding.

use thiserror::Error;

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("no bearer token in the request")]
    Missing,
    #[error("more than one Authorization header")]
    MultipleHeaders,
    #[error("malformed bearer credentials")]
    Malformed,
    #[error("access_token query parameter present")]
    InQuery,
    #[error("bearer token larger than the limit")]
    TooLarge,
}

/// Returns the bearer token of a request.
///
/// `authorization` holds every `Authorization` header value, `raw_path` the `:path` value.
pub fn bearer_token<'a>(
    authorization: &[&'a str],
    raw_path: &str,
    max_token_bytes: usize,
) -> Result<&'a str, ExtractError> {
    let value = match authorization {
        [] => None,
        [value] => Some(*value),
        _ => return Err(ExtractError::MultipleHeaders),
    };
    if has_access_token_parameter(raw_path) {
        return Err(ExtractError::InQuery);
    }
    let value = value.ok_or(ExtractError::Missing)?;
    if value.len() > max_token_bytes.saturating_add("Bearer ".len()) {
        return Err(ExtractError::TooLarge);
    }
    let (scheme, credentials) = match value.split_once([' ', '\t']) {
        Some((scheme, credentials)) => (scheme, Some(credentials)),
        None => (value, None),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ExtractError::Missing);
    }
    let token = credentials.ok_or(ExtractError::Malformed)?;
    let separator_is_one_space = value.as_bytes().get(scheme.len()) == Some(&b' ');
    if !separator_is_one_space || !is_b64token(token) {
        return Err(ExtractError::Malformed);
    }
    if token.len() > max_token_bytes {
        return Err(ExtractError::TooLarge);
    }
    Ok(token)
}

/// RFC 6750 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    // Every authenticated request checks every byte of its token (hundreds of them), so
    // one table lookup per byte rather than a chain of comparisons.
    !body.is_empty()
        && body
            .bytes()
            .all(|b| B64TOKEN_BYTES.get(usize::from(b)).copied().unwrap_or(false))
}

/// `B64TOKEN_BYTES[b]`: whether byte `b` may appear in a `b64token` before its `=` padding.
// Indexing in a const initializer: evaluated at compile time, where an index out of bounds
// fails the build instead of panicking at run time.
#[allow(clippy::indexing_slicing)]
const B64TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] =
            byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

#[cfg(test)]
#[test]
fn the_b64token_table_is_the_rfc_6750_alphabet() {
    for byte in 0..=127u8 {
        let expected =
            byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        let token = char::from(byte).to_string();
        assert_eq!(is_b64token(&token), expected, "{byte:#04x}");
        assert_eq!(
            is_b64token(&format!("ab{token}cd")),
            expected,
            "{byte:#04x}"
        );
    }
    // Bytes of non-ASCII characters; padding only at the end.
    assert!(!is_b64token("abé"));
    assert!(!is_b64token("ab\u{feff}"));
    assert!(is_b64token("ab=="));
    assert!(!is_b64token("=="));
}

fn has_access_token_parameter(raw_path: &str) -> bool {
    let Some((_, query)) = raw_path.split_once('?') else {
        return false;
    };
    query
        .split(['&', ';'])
        .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
        .any(|name| percent_decode(name).eq_ignore_ascii_case(b"access_token"))
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(value) => {
                decoded.push(value);
                index += 3;
            }
            None => {
                decoded.push(if byte == b'+' { b' ' } else { byte });
                index += 1;
            }
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJpIn0.c2ln";

    #[test]
    fn accepts_the_canonical_forms() {
        for header in [
            format!("Bearer {TOKEN}"),
            format!("bearer {TOKEN}"),
            format!("BEARER {TOKEN}"),
        ] {
            assert_eq!(
                bearer_token(&[&header], "/api", 8192),
                Ok(TOKEN),
                "{header}"
            );
        }
        assert_eq!(
            bearer_token(&["Bearer abc=="], "/api?x=1", 8192),
            Ok("abc==")
        );
        assert_eq!(
            bearer_token(&["Bearer a"], "/api?my_access_token=1", 8192),
            Ok("a")
        );
    }

    #[test]
    fn rejects_ambiguous_or_malformed_credentials() {
        let too_long = format!("Bearer {}", "a".repeat(8193));
        let cases: Vec<(Vec<&str>, &str, ExtractError)> = vec![
            (vec![], "/api", ExtractError::Missing),
            (vec!["Basic dXNlcjpwYXNz"], "/api", ExtractError::Missing),
            (vec!["Bearertoken"], "/api", ExtractError::Missing),
            (vec!["xyzBearer tok"], "/api", ExtractError::Missing),
            (vec!["Bearer"], "/api", ExtractError::Malformed),
            (vec!["Bearer "], "/api", ExtractError::Malformed),
            (vec!["Bearer  tok"], "/api", ExtractError::Malformed),
            (vec!["Bearer\ttok"], "/api", ExtractError::Malformed),
            (vec!["Bearer tok extra"], "/api", ExtractError::Malformed),
            (
                vec!["Bearer tok,Bearer other"],
                "/api",
                ExtractError::Malformed,
            ),
            (vec!["Bearer to\"k"], "/api", ExtractError::Malformed),
            (vec!["Bearer ==="], "/api", ExtractError::Malformed),
            (vec!["Bearer a=b"], "/api", ExtractError::Malformed),
            (
                vec!["Bearer a", "Bearer a"],
                "/api",
                ExtractError::MultipleHeaders,
            ),
            (
                vec!["Bearer a", "Basic b"],
                "/api",
                ExtractError::MultipleHeaders,
            ),
            (
                vec!["Bearer a"],
                "/api?access_token=a",
                ExtractError::InQuery,
            ),
            (vec![], "/api?access_token=a", ExtractError::InQuery),
            (
                vec!["Bearer a"],
                "/api?x=1&access_token",
                ExtractError::InQuery,
            ),
            (
                vec!["Bearer a"],
                "/api?x=1;ACCESS_TOKEN=a",
                ExtractError::InQuery,
            ),
            (
                vec!["Bearer a"],
                "/api?access%5Ftoken=a",
                ExtractError::InQuery,
            ),
            (vec![too_long.as_str()], "/api", ExtractError::TooLarge),
        ];
        for (headers, path, expected) in cases {
            assert_eq!(
                bearer_token(&headers, path, 8192),
                Err(expected),
                "{headers:?} {path}"
            );
        }
        let at_limit = format!("Bearer {}", "a".repeat(100));
        assert_eq!(bearer_token(&[&at_limit], "/", 100).map(str::len), Ok(100));
        let over = format!("Bearer {}", "a".repeat(101));
        assert_eq!(
            bearer_token(&[&over], "/", 100),
            Err(ExtractError::TooLarge)
        );
    }
}
