//! A header map in the proxy-wasm serialization, read in place and written in one piece.
//!
//! Every header callback of our filters starts by reading the whole map and most end by
//! writing it back, because on Envoy a host call is the expensive part: each one crosses
//! V8's wasm/C++ boundary and allocates on both sides, so one `proxy_get_header_map_pairs`
//! and one `proxy_set_header_map_pairs` cost far less than a read or write per header.
//! This module keeps the guest side of those two calls cheap as well: the host's buffer is
//! walked where it lies (no `String` or `Vec` per header) and the new map is serialized
//! straight into one buffer of the exact size.
//!
//! Layout (proxy-wasm ABI 0.2.1, little-endian `u32`s): the number of entries `N`, then
//! `N` pairs (name length, value length), then each name and each value followed by a NUL.
//! Names and values are bytes: an upstream's non-UTF-8 value passes through untouched.

use thiserror::Error;

const WORD: usize = 4;

/// A header map as the host serialized it, validated once by [`HeaderPairs::parse`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderPairs {
    bytes: Vec<u8>,
    count: usize,
}

/// Why a buffer is not a serialized header map. The host wrote it, so this means a host
/// bug or a misuse of the ABI; callers treat it like a failed host call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum PairsError {
    #[error("serialized header map is truncated")]
    Truncated,
    #[error("serialized header map entry {index} is not NUL-terminated")]
    MissingNul { index: usize },
    #[error("serialized header map has {extra} trailing bytes")]
    TrailingBytes { extra: usize },
}

/// One entry: name and value bytes, in the host's order.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

// === impl HeaderPairs ===

impl HeaderPairs {
    /// Validates `bytes` as a serialized map and keeps it. An empty buffer is an empty map
    /// (Envoy returns no data at all for one).
    pub fn parse(bytes: Vec<u8>) -> Result<Self, PairsError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let count = read_word(&bytes, 0).ok_or(PairsError::Truncated)?;
        // Each entry takes at least 2 size words and 2 NULs: a count the buffer cannot
        // hold is rejected before anything is sized by it.
        let max_entries = bytes.len() / (2 * WORD + 2);
        if count > max_entries {
            return Err(PairsError::Truncated);
        }
        let mut data = WORD + count * 2 * WORD;
        for index in 0..count {
            let size_at = WORD + index * 2 * WORD;
            let name_len = read_word(&bytes, size_at).ok_or(PairsError::Truncated)?;
            let value_len = read_word(&bytes, size_at + WORD).ok_or(PairsError::Truncated)?;
            for len in [name_len, value_len] {
                let nul = data.checked_add(len).ok_or(PairsError::Truncated)?;
                match bytes.get(nul) {
                    Some(0) => data = nul + 1,
                    Some(_) => return Err(PairsError::MissingNul { index }),
                    None => return Err(PairsError::Truncated),
                }
            }
        }
        if data != bytes.len() {
            return Err(PairsError::TrailingBytes {
                extra: bytes.len().saturating_sub(data),
            });
        }
        Ok(Self { bytes, count })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries in order, repeated names included (`set-cookie`, `x-forwarded-for`).
    pub fn iter(&self) -> PairsIter<'_> {
        PairsIter {
            bytes: &self.bytes,
            next_size: WORD,
            next_data: WORD + self.count * 2 * WORD,
            left: self.count,
        }
    }

    /// The first value of `name` (names compared case-insensitively).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }
}

impl<'a> IntoIterator for &'a HeaderPairs {
    type Item = Pair<'a>;
    type IntoIter = PairsIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over a validated [`HeaderPairs`].
#[derive(Clone, Debug)]
pub struct PairsIter<'a> {
    bytes: &'a [u8],
    next_size: usize,
    next_data: usize,
    left: usize,
}

impl<'a> Iterator for PairsIter<'a> {
    type Item = Pair<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // `parse` checked every offset; `?` only keeps this panic-free.
        let name_len = read_word(self.bytes, self.next_size)?;
        let value_len = read_word(self.bytes, self.next_size + WORD)?;
        let name = self.bytes.get(self.next_data..self.next_data + name_len)?;
        let value_at = self.next_data + name_len + 1;
        let value = self.bytes.get(value_at..value_at + value_len)?;
        self.next_size += 2 * WORD;
        self.next_data = value_at + value_len + 1;
        self.left -= 1;
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// Serializes `pairs` for `proxy_set_header_map_pairs` (or an HTTP call's headers), in one
/// allocation of the exact size.
pub fn serialize(pairs: &[Pair<'_>]) -> Vec<u8> {
    let data: usize = pairs
        .iter()
        .map(|(name, value)| name.len() + value.len() + 2)
        .sum();
    let mut out = Vec::with_capacity(WORD + pairs.len() * 2 * WORD + data);
    push_word(&mut out, pairs.len());
    for (name, value) in pairs {
        push_word(&mut out, name.len());
        push_word(&mut out, value.len());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// `map` without the entries whose name `drop` selects, then `add`, serialized: the new map
/// for one `proxy_set_header_map_pairs` when a filter replaces some fields.
pub fn replace<'a>(
    map: &'a HeaderPairs,
    drop: impl Fn(&[u8]) -> bool,
    add: impl IntoIterator<Item = Pair<'a>>,
) -> Vec<u8> {
    let mut pairs: Vec<Pair<'a>> = map.iter().filter(|(name, _)| !drop(name)).collect();
    pairs.extend(add);
    serialize(&pairs)
}

fn read_word(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; WORD] = bytes.get(at..at.checked_add(WORD)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

fn push_word(out: &mut Vec<u8>, value: usize) {
    // Header maps are far below 4 GiB (Envoy caps them at 96 KiB by default); saturating
    // keeps this total, and the host rejects a size that does not match.
    let word = u32::try_from(value).unwrap_or(u32::MAX);
    out.extend_from_slice(&word.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(pairs: &[Pair<'_>]) -> Vec<(Vec<u8>, Vec<u8>)> {
        HeaderPairs::parse(serialize(pairs))
            .unwrap()
            .iter()
            .map(|(name, value)| (name.to_vec(), value.to_vec()))
            .collect()
    }

    #[test]
    fn serializes_in_the_abi_layout() {
        let bytes = serialize(&[(b":status", b"200"), (b"a", b"")]);
        let mut expected = Vec::new();
        for word in [2u32, 7, 3, 1, 0] {
            expected.extend_from_slice(&word.to_le_bytes());
        }
        expected.extend_from_slice(b":status\x00200\x00a\x00\x00");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn round_trips_repeated_empty_and_non_utf8_entries() {
        let pairs: &[Pair<'_>] = &[
            (b":status", b"200"),
            (b"set-cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
            (b"x-empty", b""),
            (b"x-latin1", b"caf\xe9"),
        ];
        let expected: Vec<(Vec<u8>, Vec<u8>)> = pairs
            .iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(round_trip(pairs), expected);
    }

    #[test]
    fn lookups_ignore_case_and_keep_every_value() {
        let map = HeaderPairs::parse(serialize(&[
            (b"X-Forwarded-For", b"1.1.1.1"),
            (b"x-forwarded-for", b"2.2.2.2"),
        ]))
        .unwrap();
        assert_eq!(map.get(b"x-forwarded-for"), Some(&b"1.1.1.1"[..]));
        let all: Vec<&[u8]> = map.get_all(b"X-FORWARDED-FOR").collect();
        assert_eq!(all, [&b"1.1.1.1"[..], &b"2.2.2.2"[..]]);
        assert_eq!(map.get(b"absent"), None);
    }

    #[test]
    fn replace_drops_the_selected_entries_and_appends() {
        let map = HeaderPairs::parse(serialize(&[
            (b":status", b"200"),
            (b"x-old", b"1"),
            (b"X-Old", b"2"),
            (b"keep", b"3"),
        ]))
        .unwrap();
        let added: &[Pair<'_>] = &[(b"x-new", b"4")];
        let replaced = replace(
            &map,
            |name| name.eq_ignore_ascii_case(b"x-old"),
            added.iter().copied(),
        );
        assert_eq!(
            round_trip(
                &HeaderPairs::parse(replaced)
                    .unwrap()
                    .iter()
                    .collect::<Vec<_>>()
            ),
            vec![
                (b":status".to_vec(), b"200".to_vec()),
                (b"keep".to_vec(), b"3".to_vec()),
                (b"x-new".to_vec(), b"4".to_vec()),
            ]
        );
    }

    #[test]
    fn an_empty_buffer_is_an_empty_map() {
        let map = HeaderPairs::parse(Vec::new()).unwrap();
        assert!(map.is_empty());
        assert_eq!(map.iter().count(), 0);
        assert_eq!(round_trip(&[]), Vec::new());
    }

    #[test]
    fn malformed_buffers_are_errors_not_panics() {
        let good = serialize(&[(b"name", b"value"), (b"n2", b"v2")]);
        // Every truncation of a valid buffer, and every single corrupted byte.
        for end in 1..good.len() {
            let truncated = good.get(..end).unwrap().to_vec();
            assert!(HeaderPairs::parse(truncated).is_err(), "truncated at {end}");
        }
        for at in 0..good.len() {
            let mut corrupted = good.clone();
            corrupted[at] ^= 0xff;
            // Either rejected, or (a flipped name/value byte) still a valid map.
            if let Ok(map) = HeaderPairs::parse(corrupted) {
                assert_eq!(map.iter().count(), 2);
            }
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            HeaderPairs::parse(trailing),
            Err(PairsError::TrailingBytes { extra: 1 })
        );
        let mut no_nul = good;
        let nul = no_nul.iter().rposition(|b| *b == 0).unwrap();
        no_nul[nul] = b'x';
        assert!(matches!(
            HeaderPairs::parse(no_nul),
            Err(PairsError::MissingNul { .. })
        ));
        // A count no buffer of this size can hold.
        assert_eq!(
            HeaderPairs::parse(u32::MAX.to_le_bytes().to_vec()),
            Err(PairsError::Truncated)
        );
    }
}
