//! The one JSON body every error the gateway itself produces carries.
//!
//! ```json
//! {"error":"insufficient_scope","message":"the token lacks a scope this route requires"}
//! ```
//!
//! `error` is a stable machine code clients may branch on; `message` is for humans
//! and may change. Neither ever carries internal detail (upstream names, token
//! contents, stack traces): the body is seen by anyone on the internet.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The `content-type` to send with [`ErrorBody::render`]'s output.
pub const CONTENT_TYPE: &str = "application/json";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// Machine code, `snake_case`. `&'static` so a code is always a literal from the
    /// filter's source, never text taken from a request.
    code: &'static str,
    message: Cow<'static, str>,
}

// === impl ErrorBody ===

impl ErrorBody {
    pub fn new(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Serialises without serde so rendering cannot fail and a local reply never
    /// depends on an allocation-heavy path.
    pub fn render(&self) -> String {
        let mut body = String::with_capacity(32 + self.code.len() + self.message.len());
        body.push_str("{\"error\":");
        push_json_string(&mut body, self.code);
        body.push_str(",\"message\":");
        push_json_string(&mut body, &self.message);
        body.push('}');
        body
    }
}

/// Shorthand for `ErrorBody::new(code, message).render()`.
pub fn render(code: &'static str, message: &str) -> String {
    ErrorBody::new(code, message.to_owned()).render()
}

/// RFC 8259 §7 string escaping. `<`, `>` and `&` are escaped too so a body echoed
/// into an HTML page by a careless client cannot become markup.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => push_unicode_escape(out, ch),
            c if c.is_control() => push_unicode_escape(out, c),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_unicode_escape(out: &mut String, ch: char) {
    // Writing to a String cannot fail; the Result only exists for other writers.
    let _ = write!(out, "\\u{:04x}", u32::from(ch));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_shared_schema() {
        let cases: &[(&'static str, &str, &str)] = &[
            (
                "invalid_token",
                "the access token expired",
                r#"{"error":"invalid_token","message":"the access token expired"}"#,
            ),
            (
                "rate_limited",
                "",
                r#"{"error":"rate_limited","message":""}"#,
            ),
            (
                "bad_request",
                "quote \" backslash \\ newline \n tab \t",
                r#"{"error":"bad_request","message":"quote \" backslash \\ newline \n tab \t"}"#,
            ),
            (
                "bad_request",
                "<script>&\u{0}\u{1f}\u{7f}\u{2028}",
                r#"{"error":"bad_request","message":"\u003cscript\u003e\u0026\u0000\u001f\u007f\u2028"}"#,
            ),
            (
                "not_found",
                "ünïcode ✓",
                r#"{"error":"not_found","message":"ünïcode ✓"}"#,
            ),
        ];
        for (code, message, expected) in cases {
            let rendered = render(code, message);
            assert_eq!(&rendered, expected);
            // Whatever the message, the output is JSON that reads back to the same text.
            let parsed: serde_json::Value = serde_json::from_str(&rendered).unwrap();
            assert_eq!(parsed["error"], *code);
            assert_eq!(parsed["message"], *message);
            assert_eq!(parsed.as_object().map(|o| o.len()), Some(2));
        }
    }

    #[test]
    fn accessors() {
        let body = ErrorBody::new("forbidden", "no");
        assert_eq!(body.code(), "forbidden");
        assert_eq!(body.message(), "no");
        assert_eq!(CONTENT_TYPE, "application/json");
    }
}
