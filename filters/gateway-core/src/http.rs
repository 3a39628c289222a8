//! HTTP field names and values as the gateway is willing to emit them.
//!
//! Everything a filter writes into a header map goes through these types, so a
//! configuration can never smuggle a second header (CR/LF), truncate one in a C++
//! host (NUL), or set a pseudo-header such as `:status`.

use std::fmt;

use thiserror::Error;

/// A field name: an RFC 9110 `token`, stored lower-case (HTTP/2 and HTTP/3 require
/// lower-case names on the wire and Envoy stores them that way).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderName(String);

/// A field value that is safe to write verbatim: RFC 9110 `field-value` without
/// leading or trailing whitespace, never empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeaderValue(String);

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HeaderNameError {
    #[error("header name is empty")]
    Empty,
    #[error(
        "header name has a character not allowed in an RFC 9110 token at byte {index} ({byte:#04x}); \
         pseudo-headers such as `:status` cannot be configured"
    )]
    NotAToken { index: usize, byte: u8 },
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HeaderValueError {
    #[error("header value is empty")]
    Empty,
    #[error("header value has a control byte {byte:#04x} at byte {index} (CR, LF, NUL and other controls are never allowed)")]
    ControlByte { index: usize, byte: u8 },
    #[error("header value starts or ends with whitespace (it would be trimmed on the wire)")]
    SurroundingWhitespace,
}

// === impl HeaderName ===

impl HeaderName {
    /// Validates `name` as a token and lower-cases it; names are case-insensitive, so
    /// `X-Frame-Options` in a config means the same header as `x-frame-options`.
    pub fn parse(name: &str) -> Result<Self, HeaderNameError> {
        if name.is_empty() {
            return Err(HeaderNameError::Empty);
        }
        if let Some((index, byte)) = name.bytes().enumerate().find(|(_, b)| !is_tchar(*b)) {
            return Err(HeaderNameError::NotAToken { index, byte });
        }
        Ok(Self(name.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares against a name read from a header map, which may be in any case and
    /// is not trusted to be UTF-8.
    pub fn matches(&self, name: &[u8]) -> bool {
        self.0.as_bytes().eq_ignore_ascii_case(name)
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl HeaderValue ===

impl HeaderValue {
    pub fn parse(value: &str) -> Result<Self, HeaderValueError> {
        validate_header_value(value.as_bytes())?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 9110 §5.5 `field-value`: visible characters, obs-text, and SP/HTAB only between
/// them. Checked on bytes so it also applies to values computed at request time.
pub fn validate_header_value(value: &[u8]) -> Result<(), HeaderValueError> {
    let (Some(first), Some(last)) = (value.first(), value.last()) else {
        return Err(HeaderValueError::Empty);
    };
    if let Some((index, byte)) = value
        .iter()
        .copied()
        .enumerate()
        .find(|(_, b)| b.is_ascii_control() && *b != b'\t')
    {
        return Err(HeaderValueError::ControlByte { index, byte });
    }
    if is_whitespace(*first) || is_whitespace(*last) {
        return Err(HeaderValueError::SurroundingWhitespace);
    }
    Ok(())
}

fn is_whitespace(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names() {
        let cases: &[(&str, Result<&str, HeaderNameError>)] = &[
            ("x-frame-options", Ok("x-frame-options")),
            ("Strict-Transport-Security", Ok("strict-transport-security")),
            ("x_custom.v1~!#$%&'*+^`|", Ok("x_custom.v1~!#$%&'*+^`|")),
            ("", Err(HeaderNameError::Empty)),
            (
                ":status",
                Err(HeaderNameError::NotAToken {
                    index: 0,
                    byte: b':',
                }),
            ),
            (
                "x frame",
                Err(HeaderNameError::NotAToken {
                    index: 1,
                    byte: b' ',
                }),
            ),
            (
                "x-a\r\nx-b",
                Err(HeaderNameError::NotAToken {
                    index: 3,
                    byte: b'\r',
                }),
            ),
            (
                "x-\0",
                Err(HeaderNameError::NotAToken { index: 2, byte: 0 }),
            ),
            (
                "x-(comment)",
                Err(HeaderNameError::NotAToken {
                    index: 2,
                    byte: b'(',
                }),
            ),
            (
                "x-ü",
                Err(HeaderNameError::NotAToken {
                    index: 2,
                    byte: 0xc3,
                }),
            ),
            (
                "x-name:",
                Err(HeaderNameError::NotAToken {
                    index: 6,
                    byte: b':',
                }),
            ),
        ];
        for (input, expected) in cases {
            let parsed = HeaderName::parse(input);
            assert_eq!(
                parsed.as_ref().map(HeaderName::as_str),
                expected.as_ref().map(|s| *s),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn header_values() {
        use HeaderValueError::*;
        let cases: &[(&[u8], Result<(), HeaderValueError>)] = &[
            (b"max-age=31536000; includeSubDomains", Ok(())),
            (b"default-src 'none'; frame-ancestors 'none'", Ok(())),
            (b"a\tb", Ok(())),
            (b"x", Ok(())),
            ("caf\u{e9}".as_bytes(), Ok(())),
            (b"", Err(Empty)),
            (
                b"a\r\nset-cookie: x=1",
                Err(ControlByte {
                    index: 1,
                    byte: b'\r',
                }),
            ),
            (
                b"a\nb",
                Err(ControlByte {
                    index: 1,
                    byte: b'\n',
                }),
            ),
            (b"a\0b", Err(ControlByte { index: 1, byte: 0 })),
            (
                b"a\x7fb",
                Err(ControlByte {
                    index: 1,
                    byte: 0x7f,
                }),
            ),
            (
                b"a\x1bb",
                Err(ControlByte {
                    index: 1,
                    byte: 0x1b,
                }),
            ),
            (b" nosniff", Err(SurroundingWhitespace)),
            (b"nosniff\t", Err(SurroundingWhitespace)),
            (b" ", Err(SurroundingWhitespace)),
        ];
        for (input, expected) in cases {
            assert_eq!(&validate_header_value(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn name_matching_ignores_case_and_tolerates_non_utf8() {
        let name = HeaderName::parse("server").unwrap();
        assert!(name.matches(b"Server"));
        assert!(name.matches(b"SERVER"));
        assert!(!name.matches(b"server2"));
        assert!(!name.matches(b"serv\xffr"));
        assert!(!name.matches(b""));
    }
}
