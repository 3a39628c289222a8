//! Route classes: which bucket family a request belongs to and what it costs.
//!
//! An ordered table of `methods + pathPrefix → class, weight`; the first matching rule wins and
//! unmatched requests get the default class. Exchanges charge endpoints differently (an order
//! placement is not a ticker read), so the weight travels to Envoy as `hits_addend`.
//!
//! Prefixes match whole path segments: `/api/v1/trade/orders` matches `/api/v1/trade/orders`
//! and `/api/v1/trade/orders/42` but not `/api/v1/trade/ordersX`, which is a different resource
//! and must not inherit its class by accident. A prefix ending in `/` matches everything below
//! it. The query string is ignored.
//!
//! The tagger is not the place that decides what a path means: jwt-authz, earlier in the
//! chain, rejects non-canonical paths (dot segments, `//`, encoded slashes) and Envoy's own
//! path normalisation runs before any filter. A non-canonical path that still arrives here is
//! not guessed at: it gets the default class and is reported, so it shows up in metrics.

use thiserror::Error;

/// Largest per-request weight. Exchange weights are single or low double digits; a bigger
/// number is a typo that would make one request exhaust a bucket.
pub const MAX_WEIGHT: u32 = 1_000;

/// Longest class name: it becomes a descriptor value, a Redis key part and a policy name in
/// `RateLimit-Policy`.
pub const MAX_CLASS_NAME_LEN: usize = 64;

/// A rate-limit class: its name (descriptor value and policy name) and the request weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteClass {
    name: String,
    weight: u32,
}

/// Which requests a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    /// `None` matches every method.
    methods: Option<Vec<String>>,
    path_prefix: String,
    class: RouteClass,
}

/// The validated, ordered table plus the class of requests no rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTable {
    rules: Vec<RouteRule>,
    default_class: RouteClass,
}

/// The outcome of matching one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification<'t> {
    pub class: &'t RouteClass,
    /// Index of the matching rule; `None` for the default class.
    pub rule_index: Option<usize>,
    /// `false` when the path was not in canonical form and matching was skipped.
    pub canonical_path: bool,
}

/// Why a class name, method or prefix is unacceptable; `config` adds the field path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RouteSyntaxError {
    #[error("class name is empty")]
    ClassNameEmpty,
    #[error("class name is longer than {MAX_CLASS_NAME_LEN} bytes")]
    ClassNameTooLong,
    #[error("class name may only contain lower-case ASCII letters, digits, `_` and `-`")]
    ClassNameCharacters,
    #[error("weight must be an integer from 1 to {MAX_WEIGHT}")]
    WeightOutOfRange,
    #[error("methods are upper-case ASCII letters (methods are case-sensitive: `get` never matches GET)")]
    MethodNotUppercaseToken,
    #[error("path prefix must start with `/`")]
    PrefixNotAbsolute,
    #[error("path prefix must not contain `?` or `#`")]
    PrefixHasQueryOrFragment,
    #[error(
        "path prefix must be canonical: no `//`, no `.` or `..` segments, no percent-encoding"
    )]
    PrefixNotCanonical,
    #[error("path prefix may only contain visible ASCII characters")]
    PrefixCharacters,
}

// === impl RouteClass ===

impl RouteClass {
    /// Names are lower-case ASCII letters, digits, `_` and `-`: safe as a descriptor value, a
    /// metric label and a structured-field string without escaping.
    pub fn new(name: &str, weight: u64) -> Result<Self, RouteSyntaxError> {
        if name.is_empty() {
            return Err(RouteSyntaxError::ClassNameEmpty);
        }
        if name.len() > MAX_CLASS_NAME_LEN {
            return Err(RouteSyntaxError::ClassNameTooLong);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(RouteSyntaxError::ClassNameCharacters);
        }
        let weight = u32::try_from(weight)
            .ok()
            .filter(|w| (1..=MAX_WEIGHT).contains(w))
            .ok_or(RouteSyntaxError::WeightOutOfRange)?;
        Ok(Self {
            name: name.to_owned(),
            weight,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }
}

// === impl RouteRule ===

impl RouteRule {
    pub fn new(
        methods: Option<Vec<String>>,
        path_prefix: &str,
        class: RouteClass,
    ) -> Result<Self, RouteSyntaxError> {
        if let Some(methods) = &methods {
            // Methods are case-sensitive (RFC 9110 §9.1): `get` would never match a GET, so
            // it is a config mistake, not a different method.
            if methods.iter().any(|m| !is_uppercase_method(m)) {
                return Err(RouteSyntaxError::MethodNotUppercaseToken);
            }
        }
        validate_path_prefix(path_prefix)?;
        Ok(Self {
            methods,
            path_prefix: path_prefix.to_owned(),
            class,
        })
    }

    pub fn methods(&self) -> Option<&[String]> {
        self.methods.as_deref()
    }

    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    pub fn class(&self) -> &RouteClass {
        &self.class
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_matches = self
            .methods
            .as_ref()
            .is_none_or(|methods| methods.iter().any(|m| m == method));
        method_matches && prefix_matches(&self.path_prefix, path)
    }

    /// True if every request this rule matches is already matched by `earlier`, which makes
    /// this rule dead code in a first-match table.
    pub(crate) fn is_shadowed_by(&self, earlier: &RouteRule) -> bool {
        let methods_covered = match (&earlier.methods, &self.methods) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(theirs), Some(ours)) => ours.iter().all(|m| theirs.contains(m)),
        };
        methods_covered && prefix_matches(&earlier.path_prefix, &self.path_prefix)
    }
}

// === impl RouteTable ===

impl RouteTable {
    pub(crate) fn new(rules: Vec<RouteRule>, default_class: RouteClass) -> Self {
        Self {
            rules,
            default_class,
        }
    }

    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }

    pub fn default_class(&self) -> &RouteClass {
        &self.default_class
    }

    /// Classifies a request by method and `:path` (query and fragment ignored).
    pub fn classify(&self, method: &str, path: &str) -> Classification<'_> {
        let path = path_without_query(path);
        if !is_canonical_path(path) {
            return Classification {
                class: &self.default_class,
                rule_index: None,
                canonical_path: false,
            };
        }
        let matched = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matches(method, path));
        match matched {
            Some((index, rule)) => Classification {
                class: &rule.class,
                rule_index: Some(index),
                canonical_path: true,
            },
            None => Classification {
                class: &self.default_class,
                rule_index: None,
                canonical_path: true,
            },
        }
    }

    /// Every class name the table can produce, in table order, without duplicates.
    pub fn class_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        let all = self
            .rules
            .iter()
            .map(|r| r.class.name())
            .chain(std::iter::once(self.default_class.name()));
        for name in all {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

// === matching helpers ===

fn path_without_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// Segment-aware prefix match (see the module documentation).
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn is_uppercase_method(method: &str) -> bool {
    !method.is_empty() && method.len() <= 32 && method.bytes().all(|b| b.is_ascii_uppercase())
}

fn validate_path_prefix(prefix: &str) -> Result<(), RouteSyntaxError> {
    if !prefix.starts_with('/') {
        return Err(RouteSyntaxError::PrefixNotAbsolute);
    }
    if prefix.contains(['?', '#']) {
        return Err(RouteSyntaxError::PrefixHasQueryOrFragment);
    }
    if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RouteSyntaxError::PrefixCharacters);
    }
    // A configured prefix is stricter than a request path: no percent-encoding at all, so
    // there is exactly one spelling of every prefix.
    if prefix.contains('%') || !is_canonical_path(prefix) {
        return Err(RouteSyntaxError::PrefixNotCanonical);
    }
    Ok(())
}

/// A path whose segments mean what they say: absolute, no empty segment (`//`), no `.`/`..`
/// segment, no backslash, and none of the encodings (`%2F`, `%5C`, `%2E`) that other hops may
/// decode into those. Other percent-encodings (ids with spaces...) are fine.
fn is_canonical_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if path.contains('\\') || path.bytes().any(|b| b.is_ascii_control()) {
        return false;
    }
    if has_structural_percent_encoding(path) {
        return false;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len().saturating_sub(1);
    segments.iter().enumerate().all(|(index, segment)| {
        // A trailing slash yields one empty last segment, which is canonical.
        let empty_allowed = index == last;
        (empty_allowed || !segment.is_empty()) && *segment != "." && *segment != ".."
    })
}

fn has_structural_percent_encoding(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        matches!(
            w,
            [b'%', b'2', b'f' | b'F' | b'e' | b'E'] | [b'%', b'5', b'c' | b'C']
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, weight: u64) -> RouteClass {
        RouteClass::new(name, weight).unwrap()
    }

    fn rule(methods: Option<&[&str]>, prefix: &str, name: &str, weight: u64) -> RouteRule {
        let methods = methods.map(|m| m.iter().map(|s| s.to_string()).collect());
        RouteRule::new(methods, prefix, class(name, weight)).unwrap()
    }

    fn exchange_table() -> RouteTable {
        RouteTable::new(
            vec![
                rule(Some(&["POST"]), "/api/v1/trade/orders", "order", 1),
                rule(Some(&["DELETE"]), "/api/v1/trade/orders", "order_cancel", 1),
                rule(
                    Some(&["POST"]),
                    "/api/v1/wallet/withdrawals",
                    "withdrawal",
                    10,
                ),
                rule(Some(&["GET", "HEAD"]), "/api/v1/wallet/", "account_read", 2),
                rule(Some(&["GET", "HEAD"]), "/api/v1/trade/", "account_read", 1),
                rule(None, "/api/v1/risk", "risk", 5),
            ],
            class("public", 1),
        )
    }

    #[test]
    fn first_matching_rule_wins() {
        let table = exchange_table();
        let cases: &[(&str, &str, &str, u32, Option<usize>)] = &[
            ("POST", "/api/v1/trade/orders", "order", 1, Some(0)),
            ("POST", "/api/v1/trade/orders/", "order", 1, Some(0)),
            (
                "POST",
                "/api/v1/trade/orders?symbol=BTC-KRW",
                "order",
                1,
                Some(0),
            ),
            (
                "DELETE",
                "/api/v1/trade/orders/8812",
                "order_cancel",
                1,
                Some(1),
            ),
            (
                "POST",
                "/api/v1/wallet/withdrawals",
                "withdrawal",
                10,
                Some(2),
            ),
            ("GET", "/api/v1/wallet/balances", "account_read", 2, Some(3)),
            (
                "HEAD",
                "/api/v1/trade/orders/8812",
                "account_read",
                1,
                Some(4),
            ),
            ("PUT", "/api/v1/risk/evaluate", "risk", 5, Some(5)),
            ("GET", "/api/v1/risk", "risk", 5, Some(5)),
            // not matched: default class
            ("POST", "/api/v1/trade/ordersX", "public", 1, None),
            ("POST", "/api/v1/trade/order", "public", 1, None),
            ("post", "/api/v1/trade/orders", "public", 1, None),
            ("GET", "/api/v1/wallet", "public", 1, None),
            ("GET", "/api/v1/riskier", "public", 1, None),
            ("GET", "/", "public", 1, None),
            ("GET", "", "public", 1, None),
        ];
        for (method, path, name, weight, index) in cases {
            let got = table.classify(method, path);
            assert_eq!(got.class.name(), *name, "{method} {path}");
            assert_eq!(got.class.weight(), *weight, "{method} {path}");
            assert_eq!(got.rule_index, *index, "{method} {path}");
        }
    }

    #[test]
    fn non_canonical_paths_get_the_default_class_and_are_flagged() {
        let table = exchange_table();
        for path in [
            "//api/v1/trade/orders",
            "/api/v1//trade/orders",
            "/api/v1/trade/./orders",
            "/api/v1/x/../trade/orders",
            "/api/v1/trade%2Forders",
            "/api/v1/trade%2forders",
            "/api/v1/trade/%2E%2E/orders",
            "/api/v1/trade\\orders",
            "api/v1/trade/orders",
            "/api/v1/trade/orders/..",
        ] {
            let got = table.classify("POST", path);
            assert_eq!(got.class.name(), "public", "{path}");
            assert!(!got.canonical_path, "{path}");
        }
        // Ordinary percent-encoding is not structural.
        let got = table.classify("DELETE", "/api/v1/trade/orders/client%20id");
        assert_eq!(
            (got.class.name(), got.canonical_path),
            ("order_cancel", true)
        );
        // The query is not part of the path.
        let got = table.classify("POST", "/api/v1/trade/orders?next=/../x");
        assert_eq!((got.class.name(), got.canonical_path), ("order", true));
    }

    #[test]
    fn validates_class_names_and_weights() {
        let cases: &[(&str, u64, Result<(), RouteSyntaxError>)] = &[
            ("order", 1, Ok(())),
            ("account_read-2", 1000, Ok(())),
            ("", 1, Err(RouteSyntaxError::ClassNameEmpty)),
            ("Order", 1, Err(RouteSyntaxError::ClassNameCharacters)),
            ("or der", 1, Err(RouteSyntaxError::ClassNameCharacters)),
            ("or\"der", 1, Err(RouteSyntaxError::ClassNameCharacters)),
            ("o", 0, Err(RouteSyntaxError::WeightOutOfRange)),
            ("o", 1001, Err(RouteSyntaxError::WeightOutOfRange)),
            ("o", u64::MAX, Err(RouteSyntaxError::WeightOutOfRange)),
        ];
        for (name, weight, want) in cases {
            assert_eq!(
                RouteClass::new(name, *weight).map(|_| ()),
                *want,
                "{name} {weight}"
            );
        }
        let long = "a".repeat(MAX_CLASS_NAME_LEN + 1);
        assert_eq!(
            RouteClass::new(&long, 1),
            Err(RouteSyntaxError::ClassNameTooLong)
        );
    }

    /// methods, path prefix, expected outcome.
    type RuleCase<'a> = (Option<&'a [&'a str]>, &'a str, Result<(), RouteSyntaxError>);

    #[test]
    fn validates_rules() {
        let cases: &[RuleCase<'_>] = &[
            (Some(&["POST"]), "/api/v1/trade/orders", Ok(())),
            (None, "/", Ok(())),
            (None, "/api/v1/", Ok(())),
            (
                Some(&["get"]),
                "/x",
                Err(RouteSyntaxError::MethodNotUppercaseToken),
            ),
            (
                Some(&[""]),
                "/x",
                Err(RouteSyntaxError::MethodNotUppercaseToken),
            ),
            (
                Some(&["GET "]),
                "/x",
                Err(RouteSyntaxError::MethodNotUppercaseToken),
            ),
            (None, "api", Err(RouteSyntaxError::PrefixNotAbsolute)),
            (None, "", Err(RouteSyntaxError::PrefixNotAbsolute)),
            (
                None,
                "/a?b",
                Err(RouteSyntaxError::PrefixHasQueryOrFragment),
            ),
            (
                None,
                "/a#b",
                Err(RouteSyntaxError::PrefixHasQueryOrFragment),
            ),
            (None, "/a b", Err(RouteSyntaxError::PrefixCharacters)),
            (None, "/a//b", Err(RouteSyntaxError::PrefixNotCanonical)),
            (None, "/a/./b", Err(RouteSyntaxError::PrefixNotCanonical)),
            (None, "/a/..", Err(RouteSyntaxError::PrefixNotCanonical)),
            (None, "/a%20b", Err(RouteSyntaxError::PrefixNotCanonical)),
        ];
        for (methods, prefix, want) in cases {
            let methods = methods.map(|m| m.iter().map(|s| s.to_string()).collect());
            let got = RouteRule::new(methods, prefix, class("c", 1)).map(|_| ());
            assert_eq!(got, *want, "{prefix}");
        }
    }

    #[test]
    fn detects_shadowed_rules() {
        let cases: &[(RouteRule, RouteRule, bool)] = &[
            (
                rule(None, "/api/", "a", 1),
                rule(Some(&["GET"]), "/api/v1", "b", 1),
                true,
            ),
            (
                rule(Some(&["GET"]), "/api", "a", 1),
                rule(Some(&["GET"]), "/api/x", "b", 1),
                true,
            ),
            (
                rule(Some(&["GET", "POST"]), "/api", "a", 1),
                rule(Some(&["POST"]), "/api/", "b", 1),
                true,
            ),
            (
                rule(Some(&["GET"]), "/api", "a", 1),
                rule(None, "/api/x", "b", 1),
                false,
            ),
            (
                rule(Some(&["GET"]), "/api", "a", 1),
                rule(Some(&["POST"]), "/api", "b", 1),
                false,
            ),
            (
                rule(None, "/api/v1/trade/orders", "a", 1),
                rule(None, "/api/v1/trade/ordersX", "b", 1),
                false,
            ),
            (
                rule(None, "/api/v1/x", "a", 1),
                rule(None, "/api/", "b", 1),
                false,
            ),
        ];
        for (earlier, later, want) in cases {
            assert_eq!(
                later.is_shadowed_by(earlier),
                *want,
                "{later:?} after {earlier:?}"
            );
        }
    }

    #[test]
    fn lists_class_names_once() {
        assert_eq!(
            exchange_table().class_names(),
            [
                "order",
                "order_cancel",
                "withdrawal",
                "account_read",
                "risk",
                "public"
            ]
        );
    }
}
