//! Typed property values (`proxy_get_property`) and their Envoy serialization.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::header_map::serialize_pairs;

/// A property value as Envoy's CEL layer would produce it; serialized the way Envoy's
/// `serializeValue` does (strings raw, integers/timestamps/durations 8-byte little-endian,
/// bools 1 byte, maps and lists in the pairs format).
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    Str(String),
    Bytes(Vec<u8>),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Double(f64),
    Timestamp(SystemTime),
    Duration(Duration),
    /// Map (also `google.protobuf.Struct` metadata); values serialized by their own type.
    Map(Vec<(String, PropertyValue)>),
    /// List: serialized as pairs with the elements as keys and empty values.
    List(Vec<PropertyValue>),
    /// A protobuf message, already binary-encoded.
    Proto(Vec<u8>),
    /// Forces NOT_FOUND for this path even where Envoy would have a default.
    Absent,
}

impl PropertyValue {
    pub fn str(value: impl Into<String>) -> PropertyValue {
        PropertyValue::Str(value.into())
    }

    /// Envoy's bytes for this value. `None` for [`PropertyValue::Absent`].
    pub fn serialize(&self) -> Option<Vec<u8>> {
        Some(match self {
            PropertyValue::Str(s) => s.as_bytes().to_vec(),
            PropertyValue::Bytes(b) | PropertyValue::Proto(b) => b.clone(),
            PropertyValue::Int(i) => i.to_le_bytes().to_vec(),
            PropertyValue::UInt(u) => u.to_le_bytes().to_vec(),
            PropertyValue::Bool(b) => vec![u8::from(*b)],
            PropertyValue::Double(d) => d.to_le_bytes().to_vec(),
            PropertyValue::Timestamp(t) => nanos_since_epoch(*t).to_le_bytes().to_vec(),
            PropertyValue::Duration(d) => i64::try_from(d.as_nanos())
                .unwrap_or(i64::MAX)
                .to_le_bytes()
                .to_vec(),
            PropertyValue::Map(entries) => {
                let serialized: Vec<(Vec<u8>, Vec<u8>)> = entries
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_bytes().to_vec(), v.serialize()?)))
                    .collect();
                serialize_pairs(serialized.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            }
            PropertyValue::List(items) => {
                let serialized: Vec<Vec<u8>> =
                    items.iter().filter_map(PropertyValue::serialize).collect();
                serialize_pairs(serialized.iter().map(|k| (k.as_slice(), &[][..])))
            }
            PropertyValue::Absent => return None,
        })
    }

    /// Walks into maps (by key) and lists (by decimal index), like Envoy's CEL lookup of
    /// the remaining path segments.
    pub fn descend(&self, segments: &[String]) -> Option<&PropertyValue> {
        let Some((first, rest)) = segments.split_first() else {
            return Some(self);
        };
        let child = match self {
            PropertyValue::Map(entries) => entries.iter().find(|(k, _)| k == first).map(|(_, v)| v),
            PropertyValue::List(items) => first.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }?;
        child.descend(rest)
    }
}

impl From<&str> for PropertyValue {
    fn from(value: &str) -> Self {
        PropertyValue::Str(value.to_string())
    }
}

impl From<String> for PropertyValue {
    fn from(value: String) -> Self {
        PropertyValue::Str(value)
    }
}

impl From<i64> for PropertyValue {
    fn from(value: i64) -> Self {
        PropertyValue::Int(value)
    }
}

impl From<bool> for PropertyValue {
    fn from(value: bool) -> Self {
        PropertyValue::Bool(value)
    }
}

pub(crate) fn nanos_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Splits a serialized property path (segments joined by NUL, no trailing NUL).
pub(crate) fn parse_path(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Port part of an Envoy "ip:port" address (IPv6 in brackets works too).
pub(crate) fn port_of(address: &str) -> Option<i64> {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_encodings_match_envoy() {
        assert_eq!(
            PropertyValue::Int(45000).serialize().unwrap(),
            vec![0xc8, 0xaf, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(PropertyValue::Bool(true).serialize().unwrap(), vec![1]);
        assert_eq!(
            PropertyValue::str("").serialize().unwrap(),
            Vec::<u8>::new()
        );
        assert_eq!(PropertyValue::Absent.serialize(), None);
    }

    #[test]
    fn descend_through_maps_and_lists() {
        let value = PropertyValue::Map(vec![(
            "a".into(),
            PropertyValue::List(vec![PropertyValue::str("x"), PropertyValue::str("y")]),
        )]);
        assert_eq!(
            value.descend(&["a".into(), "1".into()]),
            Some(&PropertyValue::str("y"))
        );
        assert_eq!(value.descend(&["b".into()]), None);
        assert_eq!(parse_path(b"source\0address"), vec!["source", "address"]);
        assert_eq!(port_of("10.0.0.1:45000"), Some(45000));
    }
}
