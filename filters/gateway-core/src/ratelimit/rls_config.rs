//! The rate-limit service configuration in the envoyproxy/ratelimit format, and its semantics:
//! what the test peer (and the local gateway's stand-in service) needs to answer exactly as
//! production's envoyproxy/ratelimit with Redis would.
//!
//! ```yaml
//! domain: svc-gateway
//! descriptors:
//!   - key: client_ip              # no value: one bucket per distinct value
//!     rate_limit: { unit: minute, requests_per_unit: 1200 }
//!   - key: class
//!     value: order
//!     descriptors:
//!       - key: user
//!         rate_limit: { unit: second, requests_per_unit: 10, name: order }
//!   - key: class
//!     value: public
//!     rate_limit: { unlimited: true }
//! ```
//!
//! The types are plain serde, so the peer reads the file with the YAML crate of its choice
//! (this crate ships in the wasm and stays free of a YAML parser) and hands the result to
//! [`RlsConfig::new`]; tests here use JSON, which is YAML.
//!
//! Semantics, as envoyproxy/ratelimit implements them:
//! * Each level maps `key_value` (an entry with a value) or `key` (no value: matches any value,
//!   each distinct value counting separately) to a node. Lookup tries `key_value` first, then
//!   `key`. A request descriptor's entries walk down the tree one level per entry.
//! * A limit applies only if the node matched by the *last* entry of the descriptor has one; a
//!   limit on a shallower node does not apply to a longer descriptor.
//! * `unlimited: true` answers OK without counting; `shadow_mode: true` counts and reports the
//!   true remaining quota but never answers OVER_LIMIT.
//! * Counting is a fixed window aligned to the epoch (`now / window`), incremented by
//!   `hits_addend` (0 counts as 1) even when already over the limit; a descriptor is over the
//!   limit when its count after the increment exceeds `requests_per_unit`.
//! * `duration_until_reset` is the time to the end of the current window.
//!
//! Not supported, rejected at load rather than silently diverging: wildcard values (`foo*`),
//! and the request-level limit override.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use super::response_headers::{RlsCode, RlsDescriptorStatus, RlsLimit, RlsUnit};

/// The configuration file as written (one domain per file).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlsConfigFile {
    pub domain: String,
    #[serde(default)]
    pub descriptors: Vec<RlsDescriptorConfig>,
}

/// One descriptor node as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlsDescriptorConfig {
    pub key: String,
    #[serde(default)]
    pub value: Option<ScalarText>,
    #[serde(default)]
    pub rate_limit: Option<RlsRateLimitConfig>,
    #[serde(default)]
    pub descriptors: Vec<RlsDescriptorConfig>,
    #[serde(default)]
    pub shadow_mode: bool,
    /// Metrics-only in envoyproxy/ratelimit; accepted and ignored.
    #[serde(default)]
    pub detailed_metric: bool,
}

/// `rate_limit` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlsRateLimitConfig {
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub requests_per_unit: u32,
    #[serde(default)]
    pub unlimited: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub replaces: Vec<RlsReplaces>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlsReplaces {
    pub name: String,
}

/// A YAML scalar read as text: `value: 42` and `value: "42"` mean the same in the Go service.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ScalarText {
    Text(String),
    Integer(i64),
    Bool(bool),
}

/// A validated configuration: one domain's descriptor tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlsConfig {
    domain: String,
    root: Node,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Node {
    /// Keyed by `key` or `key_value`, like the service does.
    children: BTreeMap<String, Node>,
    limit: Option<Limit>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Limit {
    quota: Option<RlsLimit>, // `None` when unlimited
    shadow_mode: bool,
}

/// One entry of a request descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorEntry {
    pub key: String,
    pub value: String,
}

/// The fixed-window counters (the service keeps them in Redis).
#[derive(Clone, Debug, Default)]
pub struct WindowCounters {
    counts: HashMap<String, u64>,
}

/// The answer to one `ShouldRateLimit` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlsAnswer {
    pub overall: RlsCode,
    pub statuses: Vec<RlsDescriptorStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RlsConfigError {
    #[error("domain is empty")]
    EmptyDomain,
    #[error("{path}: descriptor has an empty key")]
    EmptyKey { path: String },
    #[error("{path}: duplicate descriptor `{key}`")]
    Duplicate { path: String, key: String },
    #[error("{path}: wildcard values are not supported by the test peer")]
    Wildcard { path: String },
    #[error("{path}: invalid rate limit unit `{unit}`")]
    Unit { path: String, unit: String },
    #[error("{path}: an unlimited rate limit must not name a unit")]
    UnlimitedWithUnit { path: String },
    #[error("{path}: replaces entries must be non-empty and not name the limit itself")]
    Replaces { path: String },
}

// === impl RlsConfig ===

impl RlsConfig {
    pub fn new(file: RlsConfigFile) -> Result<Self, RlsConfigError> {
        if file.domain.is_empty() {
            return Err(RlsConfigError::EmptyDomain);
        }
        let root = Node {
            children: load_level(&file.domain, &file.descriptors)?,
            limit: None,
        };
        Ok(Self {
            domain: file.domain,
            root,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Decides one request: every descriptor is looked up and counted; the request is over the
    /// limit if any descriptor is. `now` is the Unix time in whole seconds (a test clock).
    pub fn should_rate_limit(
        &self,
        counters: &mut WindowCounters,
        domain: &str,
        descriptors: &[Vec<DescriptorEntry>],
        hits_addend: u32,
        now: u64,
    ) -> RlsAnswer {
        let hits = u64::from(hits_addend.max(1));
        let statuses: Vec<RlsDescriptorStatus> = descriptors
            .iter()
            .map(|entries| {
                let limit = if domain == self.domain {
                    self.lookup(entries)
                } else {
                    None
                };
                counters.apply(domain, entries, limit, hits, now)
            })
            .collect();
        let overall = if statuses.iter().any(|s| s.code == RlsCode::OverLimit) {
            RlsCode::OverLimit
        } else {
            RlsCode::Ok
        };
        RlsAnswer { overall, statuses }
    }

    fn lookup(&self, entries: &[DescriptorEntry]) -> Option<&Limit> {
        let mut level = &self.root;
        let last = entries.len().checked_sub(1)?;
        for (index, entry) in entries.iter().enumerate() {
            let with_value = format!("{}_{}", entry.key, entry.value);
            let node = level
                .children
                .get(&with_value)
                .or_else(|| level.children.get(&entry.key))?;
            if index == last {
                return node.limit.as_ref();
            }
            level = node;
        }
        None
    }
}

fn load_level(
    parent: &str,
    descriptors: &[RlsDescriptorConfig],
) -> Result<BTreeMap<String, Node>, RlsConfigError> {
    let mut level = BTreeMap::new();
    for config in descriptors {
        if config.key.is_empty() {
            return Err(RlsConfigError::EmptyKey {
                path: parent.to_owned(),
            });
        }
        let value = config.value.as_ref().map(ScalarText::to_text);
        let map_key = match value.as_deref() {
            Some(value) if !value.is_empty() => format!("{}_{value}", config.key),
            _ => config.key.clone(),
        };
        let path = format!("{parent}.{map_key}");
        if map_key.ends_with('*') {
            return Err(RlsConfigError::Wildcard { path });
        }
        if level.contains_key(&map_key) {
            return Err(RlsConfigError::Duplicate {
                path: parent.to_owned(),
                key: map_key,
            });
        }
        let limit = config
            .rate_limit
            .as_ref()
            .map(|rate_limit| load_limit(&path, rate_limit, config.shadow_mode))
            .transpose()?;
        let node = Node {
            children: load_level(&path, &config.descriptors)?,
            limit,
        };
        level.insert(map_key, node);
    }
    Ok(level)
}

fn load_limit(
    path: &str,
    config: &RlsRateLimitConfig,
    shadow_mode: bool,
) -> Result<Limit, RlsConfigError> {
    let unit = config.unit.as_deref().map(parse_unit);
    let name = config.name.clone().filter(|n| !n.is_empty());
    if config
        .replaces
        .iter()
        .any(|r| r.name.is_empty() || Some(&r.name) == name.as_ref())
    {
        return Err(RlsConfigError::Replaces {
            path: path.to_owned(),
        });
    }
    if config.unlimited {
        if unit.flatten().is_some() {
            return Err(RlsConfigError::UnlimitedWithUnit {
                path: path.to_owned(),
            });
        }
        return Ok(Limit {
            quota: None,
            shadow_mode,
        });
    }
    let unit = unit.flatten().ok_or_else(|| RlsConfigError::Unit {
        path: path.to_owned(),
        unit: config.unit.clone().unwrap_or_default(),
    })?;
    Ok(Limit {
        quota: Some(RlsLimit {
            name,
            requests_per_unit: config.requests_per_unit,
            unit,
        }),
        shadow_mode,
    })
}

/// Units are case-insensitive, as in the service.
fn parse_unit(text: &str) -> Option<RlsUnit> {
    match text.to_ascii_lowercase().as_str() {
        "second" => Some(RlsUnit::Second),
        "minute" => Some(RlsUnit::Minute),
        "hour" => Some(RlsUnit::Hour),
        "day" => Some(RlsUnit::Day),
        "week" => Some(RlsUnit::Week),
        "month" => Some(RlsUnit::Month),
        "year" => Some(RlsUnit::Year),
        _ => None,
    }
}

/// Counter window of a unit. Months and years are fixed 30 and 365 days, as the service
/// divides time.
fn window_seconds(unit: RlsUnit) -> u64 {
    match unit {
        RlsUnit::Month => 30 * 86_400,
        RlsUnit::Year => 365 * 86_400,
        other => other.window_seconds().unwrap_or(1),
    }
}

// === impl ScalarText ===

impl ScalarText {
    fn to_text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Integer(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

// === impl WindowCounters ===

impl WindowCounters {
    fn apply(
        &mut self,
        domain: &str,
        entries: &[DescriptorEntry],
        limit: Option<&Limit>,
        hits: u64,
        now: u64,
    ) -> RlsDescriptorStatus {
        let Some(quota) = limit.and_then(|l| l.quota.as_ref()) else {
            // No limit, or unlimited: OK and not counted.
            return RlsDescriptorStatus {
                code: RlsCode::Ok,
                current_limit: None,
                limit_remaining: if limit.is_some() { u32::MAX } else { 0 },
                duration_until_reset: None,
            };
        };
        let window = window_seconds(quota.unit).max(1);
        let window_start = now - now % window;
        let window_end = window_start.saturating_add(window);
        let key = counter_key(domain, entries, window_start);
        let count = self.counts.entry(key).or_insert(0);
        *count = count.saturating_add(hits);
        let allowed = u64::from(quota.requests_per_unit);
        let over = *count > allowed;
        let shadow = limit.is_some_and(|l| l.shadow_mode);
        RlsDescriptorStatus {
            code: if over && !shadow {
                RlsCode::OverLimit
            } else {
                RlsCode::Ok
            },
            current_limit: Some(quota.clone()),
            limit_remaining: u32::try_from(allowed.saturating_sub(*count)).unwrap_or(u32::MAX),
            duration_until_reset: Some(Duration::from_secs(window_end.saturating_sub(now))),
        }
    }

    /// Total hits counted for `entries` in the window containing `now`; for test assertions.
    pub fn count(&self, domain: &str, entries: &[DescriptorEntry], unit: RlsUnit, now: u64) -> u64 {
        let window = window_seconds(unit).max(1);
        let key = counter_key(domain, entries, now - now % window);
        self.counts.get(&key).copied().unwrap_or(0)
    }
}

fn counter_key(domain: &str, entries: &[DescriptorEntry], window_start: u64) -> String {
    let mut key = format!("{domain}_");
    for entry in entries {
        key.push_str(&entry.key);
        key.push('_');
        key.push_str(&entry.value);
        key.push('_');
    }
    key.push_str(&window_start.to_string());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "domain": "svc-gateway",
        "descriptors": [
            { "key": "client_ip", "rate_limit": { "unit": "minute", "requests_per_unit": 5 } },
            { "key": "client_ip", "value": "unknown",
              "rate_limit": { "unit": "second", "requests_per_unit": 2, "name": "unknown-clients" } },
            { "key": "class", "value": "order",
              "descriptors": [
                { "key": "user", "rate_limit": { "unit": "second", "requests_per_unit": 3, "name": "order" } }
              ] },
            { "key": "class", "value": "withdrawal",
              "rate_limit": { "unit": "Hour", "requests_per_unit": 1 },
              "descriptors": [
                { "key": "user", "shadow_mode": true,
                  "rate_limit": { "unit": "day", "requests_per_unit": 1, "name": "withdrawal" } }
              ] },
            { "key": "class", "value": "public", "rate_limit": { "unlimited": true } },
            { "key": "tier", "value": 1, "rate_limit": { "unit": "second", "requests_per_unit": 1 } }
        ]
    }"#;

    fn config() -> RlsConfig {
        RlsConfig::new(serde_json::from_str(CONFIG).unwrap()).unwrap()
    }

    fn d(pairs: &[(&str, &str)]) -> Vec<DescriptorEntry> {
        pairs
            .iter()
            .map(|(k, v)| DescriptorEntry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    /// The limit name (or unit) that applies to a descriptor, for readable assertions.
    fn applied(config: &RlsConfig, entries: &[DescriptorEntry]) -> Option<String> {
        config.lookup(entries).map(|l| match &l.quota {
            None => "unlimited".to_owned(),
            Some(q) => q
                .name
                .clone()
                .unwrap_or_else(|| format!("{}/{:?}", q.requests_per_unit, q.unit)),
        })
    }

    /// Descriptor entries and the limit expected to apply.
    type LookupCase<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

    #[test]
    fn matches_descriptors_like_the_service() {
        let config = config();
        let cases: &[LookupCase<'_>] = &[
            (&[("client_ip", "203.0.113.7")], Some("5/Minute")),
            (&[("client_ip", "unknown")], Some("unknown-clients")),
            (&[("class", "order"), ("user", "u-1")], Some("order")),
            (&[("class", "withdrawal")], Some("1/Hour")),
            (
                &[("class", "withdrawal"), ("user", "u-1")],
                Some("withdrawal"),
            ),
            (&[("class", "public")], Some("unlimited")),
            (&[("tier", "1")], Some("1/Second")),
            // A limit on a shallower node does not apply to a longer descriptor.
            (&[("client_ip", "203.0.113.7"), ("user", "u-1")], None),
            // No limit on the intermediate node itself.
            (&[("class", "order")], None),
            (&[("class", "account_read")], None),
            (&[("user", "u-1")], None),
            (&[], None),
        ];
        for (entries, want) in cases {
            assert_eq!(
                applied(&config, &d(entries)).as_deref(),
                *want,
                "{entries:?}"
            );
        }
    }

    #[test]
    fn counts_fixed_windows_with_hits_addend() {
        let config = config();
        let mut counters = WindowCounters::default();
        let order = [d(&[("class", "order"), ("user", "u-1")])];
        let t0 = 1_800_000_000; // window-aligned for seconds
        let codes: Vec<(RlsCode, u32)> = (0..4)
            .map(|_| {
                let answer = config.should_rate_limit(&mut counters, "svc-gateway", &order, 1, t0);
                let status = answer.statuses.first().cloned().unwrap();
                assert_eq!(answer.overall, status.code);
                (status.code, status.limit_remaining)
            })
            .collect();
        assert_eq!(
            codes,
            [
                (RlsCode::Ok, 2),
                (RlsCode::Ok, 1),
                (RlsCode::Ok, 0),
                (RlsCode::OverLimit, 0)
            ]
        );
        // Over-limit requests are still counted; the next window starts fresh.
        assert_eq!(
            counters.count("svc-gateway", &order[0], RlsUnit::Second, t0),
            4
        );
        let next = config.should_rate_limit(&mut counters, "svc-gateway", &order, 1, t0 + 1);
        assert_eq!(next.overall, RlsCode::Ok);

        // hits_addend 3 uses the whole per-second quota at once; 0 counts as 1.
        let other = [d(&[("class", "order"), ("user", "u-2")])];
        let answer = config.should_rate_limit(&mut counters, "svc-gateway", &other, 3, t0);
        assert_eq!(answer.overall, RlsCode::Ok);
        let answer = config.should_rate_limit(&mut counters, "svc-gateway", &other, 0, t0);
        assert_eq!(answer.overall, RlsCode::OverLimit);
    }

    #[test]
    fn reports_reset_unlimited_shadow_and_unknown_domains() {
        let config = config();
        let mut counters = WindowCounters::default();
        let now = 1_800_000_042; // 42 s into a minute window
        let ip = [d(&[("client_ip", "203.0.113.7")])];
        let answer = config.should_rate_limit(&mut counters, "svc-gateway", &ip, 1, now);
        let status = answer.statuses.first().cloned().unwrap();
        assert_eq!(status.duration_until_reset, Some(Duration::from_secs(18)));
        assert_eq!(status.limit_remaining, 4);

        // Several descriptors: over if any is over.
        let two = [
            d(&[("client_ip", "203.0.113.9")]),
            d(&[("class", "withdrawal")]),
        ];
        let first = config.should_rate_limit(&mut counters, "svc-gateway", &two, 1, now);
        let second = config.should_rate_limit(&mut counters, "svc-gateway", &two, 1, now);
        assert_eq!(
            (first.overall, second.overall),
            (RlsCode::Ok, RlsCode::OverLimit)
        );
        let codes: Vec<RlsCode> = second.statuses.iter().map(|s| s.code).collect();
        assert_eq!(codes, [RlsCode::Ok, RlsCode::OverLimit]);

        // Shadow mode counts but never answers OVER_LIMIT.
        let shadow = [d(&[("class", "withdrawal"), ("user", "u-1")])];
        for _ in 0..3 {
            let answer = config.should_rate_limit(&mut counters, "svc-gateway", &shadow, 1, now);
            assert_eq!(answer.overall, RlsCode::Ok);
        }
        assert_eq!(
            counters.count("svc-gateway", &shadow[0], RlsUnit::Day, now),
            3
        );

        // Unlimited and unmatched descriptors are OK and not counted.
        for entries in [d(&[("class", "public")]), d(&[("class", "nothing")])] {
            for _ in 0..10 {
                let answer = config.should_rate_limit(
                    &mut counters,
                    "svc-gateway",
                    std::slice::from_ref(&entries),
                    1,
                    now,
                );
                assert_eq!(answer.overall, RlsCode::Ok);
                assert_eq!(answer.statuses.first().unwrap().current_limit, None);
            }
        }

        // Another domain has no limits here.
        let answer = config.should_rate_limit(&mut counters, "other", &ip, 100, now);
        assert_eq!(answer.overall, RlsCode::Ok);
    }

    #[test]
    fn rejects_invalid_files() {
        let cases: &[(&str, &str)] = &[
            (r#"{"domain": "", "descriptors": []}"#, "domain is empty"),
            (
                r#"{"domain": "d", "descriptors": [{"key": ""}]}"#,
                "d: descriptor has an empty key",
            ),
            (
                r#"{"domain": "d", "descriptors": [{"key": "a", "value": "x"}, {"key": "a", "value": "x"}]}"#,
                "d: duplicate descriptor `a_x`",
            ),
            (
                r#"{"domain": "d", "descriptors": [{"key": "a", "value": "x*"}]}"#,
                "d.a_x*: wildcard values are not supported",
            ),
            (
                r#"{"domain": "d", "descriptors": [{"key": "a", "rate_limit": {"unit": "fortnight", "requests_per_unit": 1}}]}"#,
                "d.a: invalid rate limit unit `fortnight`",
            ),
            (
                r#"{"domain": "d", "descriptors": [{"key": "a", "rate_limit": {"requests_per_unit": 1}}]}"#,
                "d.a: invalid rate limit unit ``",
            ),
            (
                r#"{"domain": "d", "descriptors": [{"key": "a", "rate_limit": {"unlimited": true, "unit": "second"}}]}"#,
                "d.a: an unlimited rate limit must not name a unit",
            ),
            (
                r#"{"domain": "d", "descriptors": [{"key": "a", "descriptors": [{"key": "b", "rate_limit": {"unit": "second", "name": "n", "replaces": [{"name": "n"}]}}]}]}"#,
                "d.a.b: replaces entries",
            ),
        ];
        for (json, want) in cases {
            let file: RlsConfigFile = serde_json::from_str(json).unwrap();
            let message = RlsConfig::new(file).unwrap_err().to_string();
            assert!(message.contains(want), "{json}: {message}");
        }
        // Unknown keys are refused by the format itself, as the service does.
        let unknown = r#"{"domain": "d", "descriptors": [{"key": "a", "rate_limt": {}}]}"#;
        assert!(serde_json::from_str::<RlsConfigFile>(unknown).is_err());
    }
}
