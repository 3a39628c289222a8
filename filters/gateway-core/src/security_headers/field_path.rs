//! Field paths such as `routes[2].headers[0].value`, so every config error names the
//! field an operator has to fix, and a small scanner over the raw JSON text for what
//! a parsed `serde_json::Value` no longer shows: where a syntax error sits, and keys
//! given twice (serde_json keeps the last one silently).

use std::fmt;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(String);

/// What one pass of [`scan`] found.
pub(super) struct Scan {
    /// The path of the value being read where the scan stopped.
    pub(super) path: FieldPath,
    /// The first key repeated within one object, if any.
    pub(super) duplicate_key: Option<FieldPath>,
}

/// One open container: which key or index the scan is inside.
enum Frame {
    Object {
        key: Option<String>,
        expecting_key: bool,
        keys: Vec<String>,
    },
    Array {
        index: usize,
    },
}

// === impl FieldPath ===

impl FieldPath {
    pub fn root() -> Self {
        Self::default()
    }

    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(top level)")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// Scans `json` up to `stop` (1-based line and byte column, as `serde_json::Error`
/// reports them) or to the first duplicate key, whichever comes first. Best effort on
/// malformed text: the path names the innermost container reached, which is still
/// where the operator should look.
pub(super) fn scan(json: &[u8], stop: Option<(usize, usize)>) -> Scan {
    let mut stack: Vec<Frame> = Vec::new();
    let (mut line, mut column) = (1, 0);
    let mut in_string = false;
    let mut escaped = false;
    let mut string_is_key = false;
    let mut string = Vec::new();
    let mut duplicate_key = false;

    for &byte in json {
        if byte == b'\n' {
            line += 1;
            column = 0;
        } else {
            column += 1;
        }
        if stop.is_some_and(|(l, c)| line > l || (line == l && column > c)) {
            break;
        }
        if in_string {
            if escaped {
                escaped = false;
                string.push(byte);
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
                if let (true, Some(Frame::Object { key, keys, .. })) =
                    (string_is_key, stack.last_mut())
                {
                    let name = String::from_utf8_lossy(&string).into_owned();
                    duplicate_key = keys.contains(&name);
                    keys.push(name.clone());
                    *key = Some(name);
                    if duplicate_key {
                        break;
                    }
                }
            } else {
                string.push(byte);
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                string.clear();
                string_is_key = matches!(
                    stack.last(),
                    Some(Frame::Object {
                        expecting_key: true,
                        ..
                    })
                );
            }
            b'{' => stack.push(Frame::Object {
                key: None,
                expecting_key: true,
                keys: Vec::new(),
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { expecting_key, .. }) = stack.last_mut() {
                    *expecting_key = false;
                }
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object {
                    key, expecting_key, ..
                }) => {
                    *key = None;
                    *expecting_key = true;
                }
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            _ => {}
        }
    }

    let path = stack
        .iter()
        .fold(FieldPath::root(), |path, frame| match frame {
            Frame::Object { key: Some(key), .. } => path.field(key),
            Frame::Object { key: None, .. } => path,
            Frame::Array { index } => path.index(*index),
        });
    Scan {
        duplicate_key: duplicate_key.then(|| path.clone()),
        path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_paths() {
        let path = FieldPath::root()
            .field("routes")
            .index(2)
            .field("headers")
            .index(0);
        assert_eq!(path.field("value").as_str(), "routes[2].headers[0].value");
        assert_eq!(FieldPath::root().to_string(), "(top level)");
        assert_eq!(FieldPath::root().index(1).to_string(), "[1]");
    }

    /// Positions are marked with `§` in the text (removed before scanning).
    #[test]
    fn locates_positions() {
        let cases: &[(&str, &str)] = &[
            (r#"{"preset": "api"§}"#, "preset"),
            (r#"{"preset"§: 1}"#, "preset"),
            (r#"{"a": 1, "b"§: 2}"#, "b"),
            (r#"{"a": 1,§ "b": 2}"#, ""),
            (
                r#"{"routes": [{"pathPrefix": "/"}, {"headers": [{"name": "x", "value": 5§}]}]}"#,
                "routes[1].headers[0].value",
            ),
            (
                r#"{"routes": [{}, {"headers": [{"name": "x"}§]}]}"#,
                "routes[1].headers[0]",
            ),
            (r#"{"routes": [1, 2, 3§]}"#, "routes[2]"),
            (r#"{"k\"ey": {"in\\": [true§]}}"#, "k\"ey.in\\[0]"),
            (r#"{"a": "x:,{[\"y"§}"#, "a"),
            (
                "{\n  \"headers\": [\n    {\"vaule\"§: 1}\n  ]\n}",
                "headers[0].vaule",
            ),
            (r#"[§]"#, "[0]"),
            (r#"§"#, ""),
        ];
        for (marked, expected) in cases {
            let (before, after) = marked.split_once('§').unwrap();
            let json = format!("{before}{after}");
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap().len();
            let scan = scan(json.as_bytes(), Some((line, column)));
            assert_eq!(scan.path.as_str(), *expected, "in {marked}");
        }
    }

    #[test]
    fn finds_duplicate_keys() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"preset":"api","headers":[]}"#, None),
            (r#"{"preset":"none","preset":"api"}"#, Some("preset")),
            (
                r#"{"routes":[{"pathPrefix":"/a"},{"pathPrefix":"/b","pathPrefix":"/c"}]}"#,
                Some("routes[1].pathPrefix"),
            ),
            (r#"{"a":{"x":1},"b":{"x":1}}"#, None),
            (r#"{"a":"\"a\"","b":"a"}"#, None),
            (r#"[{"x":1},{"x":1}]"#, None),
        ];
        for (json, expected) in cases {
            let found = scan(json.as_bytes(), None).duplicate_key;
            assert_eq!(found.as_ref().map(FieldPath::as_str), *expected, "{json}");
        }
    }
}
