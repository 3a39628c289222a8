//! Strict base64url without padding (RFC 7515 §2, RFC 4648 §5).
//!
//! JWS and JWK fields must use exactly this encoding. Padding, the `+`/`/` alphabet, whitespace
//! and non-zero trailing bits are all rejected, so each byte string has one accepted spelling and
//! two different tokens can never carry the same bytes.

use thiserror::Error;

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum Base64UrlError {
    #[error("character {0:#04x} is not in the base64url alphabet")]
    InvalidByte(u8),
    #[error("length is not a valid unpadded base64url length")]
    InvalidLength,
    #[error("unused trailing bits are not zero (non-canonical encoding)")]
    NonCanonical,
}

/// Decodes unpadded base64url, rejecting every non-canonical form.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64UrlError> {
    let input = text.as_bytes();
    if input.len() % 4 == 1 {
        return Err(Base64UrlError::InvalidLength);
    }
    let mut output = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut chunks = input.chunks_exact(4);
    for chunk in chunks.by_ref() {
        let mut accumulator: u32 = 0;
        for &byte in chunk {
            accumulator = accumulator << 6 | u32::from(sextet(byte)?);
        }
        output.extend(accumulator.to_be_bytes().iter().skip(1));
    }
    let remainder = chunks.remainder();
    if !remainder.is_empty() {
        let mut accumulator: u32 = 0;
        for &byte in remainder {
            accumulator = accumulator << 6 | u32::from(sextet(byte)?);
        }
        // 2 chars carry 12 bits = 1 byte + 4 spare bits; 3 chars carry 18 bits = 2 bytes + 2.
        let (spare_bits, byte_count) = if remainder.len() == 2 { (4, 1) } else { (2, 2) };
        if accumulator & ((1 << spare_bits) - 1) != 0 {
            return Err(Base64UrlError::NonCanonical);
        }
        let value = accumulator >> spare_bits;
        let bytes = value.to_be_bytes();
        output.extend(bytes.iter().skip(4 - byte_count));
    }
    Ok(output)
}

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut output = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        for (slot, byte) in group.iter_mut().zip(chunk) {
            *slot = *byte;
        }
        let [first, second, third] = group;
        let value = u32::from(first) << 16 | u32::from(second) << 8 | u32::from(third);
        let emitted = chunk.len() + 1;
        for position in 0..emitted {
            let shift = 18 - 6 * position;
            let index = (value >> shift) & 0x3f;
            if let Some(symbol) = usize::try_from(index).ok().and_then(|i| ALPHABET.get(i)) {
                output.push(char::from(*symbol));
            }
        }
    }
    output
}

fn sextet(byte: u8) -> Result<u8, Base64UrlError> {
    match byte {
        b'A'..=b'Z' => Ok(byte - b'A'),
        b'a'..=b'z' => Ok(byte - b'a' + 26),
        b'0'..=b'9' => Ok(byte - b'0' + 52),
        b'-' => Ok(62),
        b'_' => Ok(63),
        _ => Err(Base64UrlError::InvalidByte(byte)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        let data: Vec<u8> = (0u8..=255).collect();
        for len in 0..40 {
            let slice = &data[..len];
            assert_eq!(decode(&encode(slice)).as_deref(), Ok(slice), "len {len}");
        }
    }

    #[test]
    fn known_vectors() {
        let cases: &[(&str, &[u8])] = &[
            ("", b""),
            ("Zg", b"f"),
            ("Zm8", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg", b"foob"),
            ("-_8", &[0xfb, 0xff]),
        ];
        for (text, bytes) in cases {
            assert_eq!(decode(text).as_deref(), Ok(*bytes), "{text}");
            assert_eq!(encode(bytes), *text);
        }
    }

    #[test]
    fn rejects_non_canonical_forms() {
        let cases = [
            ("Zg==", Base64UrlError::InvalidByte(b'=')),
            ("Zm9v+/", Base64UrlError::InvalidByte(b'+')),
            ("Zm 9", Base64UrlError::InvalidByte(b' ')),
            ("Zm9v\n", Base64UrlError::InvalidLength),
            ("Z", Base64UrlError::InvalidLength),
            ("Zh", Base64UrlError::NonCanonical),
            ("Zm9", Base64UrlError::NonCanonical),
            ("Zm.v", Base64UrlError::InvalidByte(b'.')),
        ];
        for (text, expected) in cases {
            assert_eq!(decode(text), Err(expected), "{text:?}");
        }
    }
}
