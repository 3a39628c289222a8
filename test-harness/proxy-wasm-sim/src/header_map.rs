//! Envoy-like header map and the proxy-wasm pairs serialization (spec "Serialization").

/// Ordered multimap of lower-case header names to raw (possibly non-UTF-8) values.
/// Pseudo-headers stay in front of regular headers, as in Envoy's `HeaderMapImpl`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(String, Vec<u8>)>,
}

impl HeaderMap {
    pub fn new() -> HeaderMap {
        HeaderMap::default()
    }

    pub fn from_pairs<K: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (key, value) in pairs {
            map.add(key.as_ref(), value.as_ref());
        }
        map
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[(String, Vec<u8>)] {
        &self.entries
    }

    /// First value only, like Envoy's `getHeaderMapValue` (no comma joining).
    pub fn first(&self, key: &str) -> Option<&[u8]> {
        let key = key.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    pub fn all(&self, key: &str) -> Vec<&[u8]> {
        let key = key.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// Envoy `addCopy`: another value for the key (keys lower-cased).
    pub fn add(&mut self, key: &str, value: &[u8]) {
        let key = key.to_ascii_lowercase();
        if key.starts_with(':') {
            let position = self
                .entries
                .iter()
                .take_while(|(k, _)| k.starts_with(':'))
                .count();
            self.entries.insert(position, (key, value.to_vec()));
        } else {
            self.entries.push((key, value.to_vec()));
        }
    }

    /// Envoy `setCopy`: exactly one value afterwards; keeps the position of the first one.
    pub fn replace(&mut self, key: &str, value: &[u8]) {
        let key = key.to_ascii_lowercase();
        match self.entries.iter().position(|(k, _)| *k == key) {
            Some(first) => {
                let mut index = 0;
                self.entries.retain(|(k, _)| {
                    let keep = *k != key || index == first;
                    index += 1;
                    keep
                });
                if let Some(entry) = self.entries.get_mut(first) {
                    entry.1 = value.to_vec();
                }
            }
            None => self.add(&key, value),
        }
    }

    pub fn remove(&mut self, key: &str) {
        let key = key.to_ascii_lowercase();
        self.entries.retain(|(k, _)| *k != key);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Values as UTF-8 (lossy), for test inspection.
    pub fn to_string_pairs(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    /// Pairs serialization. An empty map serializes to zero bytes (what Envoy returns; a
    /// 1-byte "empty" buffer would make the Rust SDK's deserializer panic).
    pub fn serialize(&self) -> Vec<u8> {
        serialize_pairs(
            self.entries
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_slice())),
        )
    }
}

/// Serializes `(key, value)` pairs: `u32 N`, N × `(u32 key_len, u32 value_len)`, then every
/// key and value followed by a NUL byte. Empty input → empty output.
pub fn serialize_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let count = pairs.clone().count();
    if count == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (key, value) in pairs.clone() {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Envoy (`PairsUtil::toPairs`) limits: larger inputs are treated as malformed.
const MAX_PAIRS_BYTES: usize = 1 << 20;
const MAX_PAIRS: usize = 1024;

/// Parses the pairs format. Like cpp-host, malformed input (missing NULs, trailing bytes,
/// too large) yields `None`, which callers turn into an empty map.
pub fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() || bytes == [0] {
        return Some(Vec::new());
    }
    if bytes.len() > MAX_PAIRS_BYTES {
        return None;
    }
    let read_u32 = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(raw) as usize)
    };
    let count = read_u32(0)?;
    if count > MAX_PAIRS {
        return None;
    }
    let mut sizes = Vec::with_capacity(count);
    for index in 0..count {
        let base = 4 + index * 8;
        sizes.push((read_u32(base)?, read_u32(base + 4)?));
    }
    let mut cursor = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for (key_len, value_len) in sizes {
        let key = bytes.get(cursor..cursor.checked_add(key_len)?)?.to_vec();
        cursor += key_len;
        if bytes.get(cursor) != Some(&0) {
            return None;
        }
        cursor += 1;
        let value = bytes.get(cursor..cursor.checked_add(value_len)?)?.to_vec();
        cursor += value_len;
        if bytes.get(cursor) != Some(&0) {
            return None;
        }
        cursor += 1;
        pairs.push((key, value));
    }
    if cursor != bytes.len() {
        return None;
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_empty_is_zero_bytes() {
        let map = HeaderMap::from_pairs([(":method", "GET"), ("X-A", "1")]);
        let bytes = map.serialize();
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        let parsed = deserialize_pairs(&bytes).unwrap_or_default();
        assert_eq!(
            parsed,
            vec![
                (b":method".to_vec(), b"GET".to_vec()),
                (b"x-a".to_vec(), b"1".to_vec())
            ]
        );
        assert!(HeaderMap::new().serialize().is_empty());
        assert_eq!(deserialize_pairs(&[0, 0, 0, 0]), Some(vec![]));
    }

    #[test]
    fn malformed_pairs_are_rejected() {
        let mut bytes = HeaderMap::from_pairs([("a", "b")]).serialize();
        bytes.push(7);
        assert_eq!(deserialize_pairs(&bytes), None);
        assert_eq!(deserialize_pairs(&[1, 0, 0, 0, 5, 0, 0, 0]), None);
    }

    #[test]
    fn replace_keeps_first_position_and_pseudo_headers_lead() {
        let mut map = HeaderMap::from_pairs([("a", "1"), ("b", "2"), ("a", "3")]);
        map.replace("A", b"x");
        map.add(":status", b"200");
        assert_eq!(
            map.to_string_pairs(),
            vec![
                (":status".into(), "200".into()),
                ("a".into(), "x".into()),
                ("b".into(), "2".into())
            ]
        );
    }
}
