//! The validated, immutable policy and the per-response decision.

use std::fmt;

use super::preset::Preset;
use crate::http::{HeaderName, HeaderValue};

/// What the filter does to every response, built once by
/// [`SecurityHeadersPolicy::from_json`](super::SecurityHeadersPolicy::from_json) and
/// shared read-only by every stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityHeadersPolicy {
    pub(super) preset: Preset,
    pub(super) default_scope: Scope,
    /// Longest prefix first, so the first match is the most specific one.
    pub(super) routes: Vec<Route>,
}

/// The headers set and removed on the responses of one scope (the whole gateway or
/// one path prefix), with everything inherited already folded in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    set: Vec<HeaderRule>,
    remove: Vec<HeaderName>,
    /// Every configured name with what to do about it, for [`Scope::rewrite`].
    names: NameTable,
}

/// The names a scope acts on, bucketed by length so that a response header is compared
/// with the one or two configured names of its length, not with all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NameTable {
    /// `by_len[n]`: the configured names of `n` bytes.
    by_len: Vec<Vec<(HeaderName, NameAction)>>,
}

/// What a scope does to a response header of a given name. The configuration never
/// names a header both to set and to remove, so one action per name is enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameAction {
    /// `remove[i]`.
    Remove(usize),
    /// `set[i]`.
    Set(usize),
}

/// A response's complete new header list (see [`Scope::rewrite`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite<'a> {
    /// The response's own entries that stay, in their order, then the ones this scope
    /// sets.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub headers_set: usize,
    pub headers_removed: usize,
    /// `ifAbsent` headers left alone because the upstream already set them.
    pub upstream_values_kept: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderRule {
    pub name: HeaderName,
    pub value: HeaderValue,
    pub mode: HeaderMode,
}

/// `"mode"` of a configured header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderMode {
    /// Replace whatever the upstream sent (all of its values).
    #[default]
    Overwrite,
    /// Set only when the response has no such header; the upstream's value wins.
    IfAbsent,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Route {
    pub(super) prefix: PathPrefix,
    pub(super) scope: Scope,
}

/// A `pathPrefix` that matches whole path segments: `/api/v1/wallet` matches
/// `/api/v1/wallet` and `/api/v1/wallet/...` but not `/api/v1/wallets`. A prefix
/// ending in `/` matches everything below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPrefix(String);

/// One change to the response header map, for the glue to apply in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderOperation<'p> {
    /// Remove every value of this header.
    Remove(&'p HeaderName),
    /// Replace every value of this header with one value (adds it when absent).
    Set(&'p HeaderName, &'p HeaderValue),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseDecision<'p> {
    /// Removals first, then sets.
    pub operations: Vec<HeaderOperation<'p>>,
    /// `ifAbsent` headers left alone because the upstream already set them.
    pub upstream_values_kept: usize,
}

// === impl SecurityHeadersPolicy ===

impl SecurityHeadersPolicy {
    /// The glue only needs to read `:path` when some route could match it.
    pub fn needs_request_path(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The scope for a request; `request_path` is the raw `:path` (query allowed) or
    /// `None` when the request never reached the filter (the response is then a local
    /// reply Envoy produced before the filter chain) or carried no path.
    pub fn scope_for(&self, request_path: Option<&[u8]>) -> &Scope {
        let Some(path) = request_path.map(path_without_query) else {
            return &self.default_scope;
        };
        self.routes
            .iter()
            .find(|route| route.prefix.matches(path))
            .map_or(&self.default_scope, |route| &route.scope)
    }

    /// Decides what to change in a response, given the names of the headers it has
    /// (any case, any bytes, any number, possibly none).
    pub fn decide_response<'p, N>(
        &'p self,
        request_path: Option<&[u8]>,
        response_header_names: impl IntoIterator<Item = N>,
    ) -> ResponseDecision<'p>
    where
        N: AsRef<[u8]>,
    {
        self.scope_for(request_path).decide(response_header_names)
    }

    pub fn summary(&self) -> PolicySummary<'_> {
        PolicySummary(self)
    }
}

/// One line describing a policy, for the "configured" log line.
pub struct PolicySummary<'p>(&'p SecurityHeadersPolicy);

impl fmt::Display for PolicySummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = self.0;
        let preset = match policy.preset {
            Preset::Api => "api",
            Preset::None => "none",
        };
        write!(
            f,
            "preset {preset}, {} headers set, {} headers removed, {} route overrides",
            policy.default_scope.set().len(),
            policy.default_scope.remove().len(),
            policy.routes.len()
        )
    }
}

// === impl Scope ===

impl Scope {
    /// `set` and `remove` share no name (the configuration rejects that) and each has at
    /// most [`MAX_LIST_LEN`](super::MAX_LIST_LEN) entries.
    pub(super) fn new(set: Vec<HeaderRule>, remove: Vec<HeaderName>) -> Self {
        let names = NameTable::new(&set, &remove);
        Self { set, remove, names }
    }

    pub fn set(&self) -> &[HeaderRule] {
        &self.set
    }

    pub fn remove(&self) -> &[HeaderName] {
        &self.remove
    }

    /// The response's new header list, computed in one pass: what [`Scope::decide`] would
    /// have the glue do header by header, as one list the host can take in one call. The
    /// response's entries keep their order (repeated names too) unless removed or
    /// overwritten; the headers this scope sets follow. Names match case-insensitively.
    pub fn rewrite<'a>(
        &'a self,
        response: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
    ) -> Rewrite<'a> {
        // Both lists hold at most 64 entries (MAX_LIST_LEN), so one bit each.
        let mut removed: u64 = 0;
        let mut present: u64 = 0;
        let mut kept = 0;
        for (name, _) in response.clone() {
            kept += 1;
            match self.names.lookup(name) {
                Some(NameAction::Remove(index)) => removed |= bit(index),
                Some(NameAction::Set(index)) => present |= bit(index),
                None => {}
            }
        }
        let mut headers = Vec::with_capacity(kept + self.set.len());
        for (name, value) in response {
            let dropped = match self.names.lookup(name) {
                Some(NameAction::Remove(_)) => true,
                Some(NameAction::Set(index)) => self
                    .set
                    .get(index)
                    .is_some_and(|rule| rule.mode == HeaderMode::Overwrite),
                None => false,
            };
            if !dropped {
                headers.push((name, value));
            }
        }
        let mut upstream_values_kept = 0;
        for (index, rule) in self.set.iter().enumerate() {
            if rule.mode == HeaderMode::IfAbsent && present & bit(index) != 0 {
                upstream_values_kept += 1;
            } else {
                headers.push((
                    rule.name.as_str().as_bytes(),
                    rule.value.as_str().as_bytes(),
                ));
            }
        }
        Rewrite {
            headers_set: self.set.len() - upstream_values_kept,
            headers_removed: removed.count_ones() as usize,
            upstream_values_kept,
            headers,
        }
    }

    fn decide<N: AsRef<[u8]>>(
        &self,
        response_header_names: impl IntoIterator<Item = N>,
    ) -> ResponseDecision<'_> {
        // One pass over the response, however large: flag which of our (few) names it
        // has. Name matching ignores case because not every codec lower-cases.
        let mut removable_present = vec![false; self.remove.len()];
        let mut set_present = vec![false; self.set.len()];
        for name in response_header_names {
            let name = name.as_ref();
            for (present, removable) in removable_present.iter_mut().zip(&self.remove) {
                *present |= removable.matches(name);
            }
            for (present, rule) in set_present.iter_mut().zip(&self.set) {
                *present |= rule.mode == HeaderMode::IfAbsent && rule.name.matches(name);
            }
        }

        let mut decision = ResponseDecision {
            operations: Vec::with_capacity(self.set.len() + self.remove.len()),
            upstream_values_kept: 0,
        };
        for (present, name) in removable_present.into_iter().zip(&self.remove) {
            if present {
                decision.operations.push(HeaderOperation::Remove(name));
            }
        }
        for (present, rule) in set_present.into_iter().zip(&self.set) {
            if present {
                decision.upstream_values_kept += 1;
            } else {
                decision
                    .operations
                    .push(HeaderOperation::Set(&rule.name, &rule.value));
            }
        }
        decision
    }
}

fn bit(index: usize) -> u64 {
    u32::try_from(index)
        .ok()
        .and_then(|index| 1u64.checked_shl(index))
        .unwrap_or(0)
}

// === impl NameTable ===

impl NameTable {
    fn new(set: &[HeaderRule], remove: &[HeaderName]) -> Self {
        let entries = set
            .iter()
            .enumerate()
            .map(|(index, rule)| (&rule.name, NameAction::Set(index)))
            .chain(
                remove
                    .iter()
                    .enumerate()
                    .map(|(index, name)| (name, NameAction::Remove(index))),
            );
        let mut by_len: Vec<Vec<(HeaderName, NameAction)>> = Vec::new();
        for (name, action) in entries {
            let len = name.as_str().len();
            if by_len.len() <= len {
                by_len.resize_with(len + 1, Vec::new);
            }
            if let Some(bucket) = by_len.get_mut(len) {
                bucket.push((name.clone(), action));
            }
        }
        Self { by_len }
    }

    fn lookup(&self, name: &[u8]) -> Option<NameAction> {
        self.by_len
            .get(name.len())?
            .iter()
            .find(|(candidate, _)| candidate.matches(name))
            .map(|(_, action)| *action)
    }
}

// === impl ResponseDecision ===

impl ResponseDecision<'_> {
    pub fn headers_set(&self) -> usize {
        self.operations
            .iter()
            .filter(|op| matches!(op, HeaderOperation::Set(..)))
            .count()
    }

    pub fn headers_removed(&self) -> usize {
        self.operations
            .iter()
            .filter(|op| matches!(op, HeaderOperation::Remove(..)))
            .count()
    }
}

// === impl PathPrefix ===

impl PathPrefix {
    pub(super) const MAX_LEN: usize = 1024;

    /// Returns why `prefix` is not usable, so the caller can attach the field path.
    pub(super) fn parse(prefix: &str) -> Result<Self, &'static str> {
        if !prefix.starts_with('/') {
            return Err("must start with '/'");
        }
        if prefix.len() > Self::MAX_LEN {
            return Err("is longer than 1024 bytes");
        }
        if prefix.contains(['?', '#']) {
            return Err("must not contain '?' or '#': it matches the path without the query");
        }
        if prefix
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || !b.is_ascii())
        {
            return Err("must be printable ASCII without spaces (percent-encode other bytes)");
        }
        Ok(Self(prefix.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    fn matches(&self, path: &[u8]) -> bool {
        let prefix = self.0.as_bytes();
        match path.strip_prefix(prefix) {
            None => false,
            Some(rest) => prefix.ends_with(b"/") || rest.is_empty() || rest.starts_with(b"/"),
        }
    }
}

/// `:path` without `?query` (and a `#fragment`, which clients should never send):
/// the part route prefixes are matched against.
pub fn path_without_query(path: &[u8]) -> &[u8] {
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefixes_match_whole_segments() {
        let cases: &[(&str, &[u8], bool)] = &[
            ("/", b"/", true),
            ("/", b"/anything/at/all", true),
            ("/api/v1/wallet", b"/api/v1/wallet", true),
            ("/api/v1/wallet", b"/api/v1/wallet/", true),
            ("/api/v1/wallet", b"/api/v1/wallet/withdrawals", true),
            ("/api/v1/wallet", b"/api/v1/wallets", false),
            ("/api/v1/wallet", b"/api/v1/walle", false),
            ("/api/v1/wallet", b"/API/v1/wallet", false),
            ("/api/v1/wallet/", b"/api/v1/wallet/x", true),
            ("/api/v1/wallet/", b"/api/v1/wallet", false),
            ("/api/v1/wallet", b"", false),
            ("/api/v1/wallet", b"/api/v1/wallet\xff", false),
            ("/api/v1/wallet", b"/api/v1/wallet/\xff\xfe", true),
        ];
        for (prefix, path, expected) in cases {
            let prefix = PathPrefix::parse(prefix).unwrap();
            assert_eq!(prefix.matches(path), *expected, "{prefix:?} vs {path:?}");
        }
    }

    #[test]
    fn path_prefix_validation() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("/", Ok(())),
            ("/api/v1/%77allet/", Ok(())),
            ("", Err("must start with '/'")),
            ("api/", Err("must start with '/'")),
            ("*", Err("must start with '/'")),
            (
                "/a?b=1",
                Err("must not contain '?' or '#': it matches the path without the query"),
            ),
            (
                "/a#x",
                Err("must not contain '?' or '#': it matches the path without the query"),
            ),
            (
                "/a b",
                Err("must be printable ASCII without spaces (percent-encode other bytes)"),
            ),
            (
                "/a\r\n",
                Err("must be printable ASCII without spaces (percent-encode other bytes)"),
            ),
            (
                "/ü",
                Err("must be printable ASCII without spaces (percent-encode other bytes)"),
            ),
        ];
        for (prefix, expected) in cases {
            assert_eq!(
                PathPrefix::parse(prefix).map(|_| ()),
                *expected,
                "{prefix:?}"
            );
        }
        assert!(PathPrefix::parse(&format!("/{}", "a".repeat(1023))).is_ok());
        assert!(PathPrefix::parse(&format!("/{}", "a".repeat(1024))).is_err());
    }

    #[test]
    fn strips_query_and_fragment() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"/a/b?x=1", b"/a/b"),
            (b"/a/b?", b"/a/b"),
            (b"/a#f?x", b"/a"),
            (b"/a/b", b"/a/b"),
            (b"?x", b""),
            (b"", b""),
        ];
        for (path, expected) in cases {
            assert_eq!(path_without_query(path), *expected);
        }
    }
}
