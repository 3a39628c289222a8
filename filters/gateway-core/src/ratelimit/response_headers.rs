//! `RateLimit-Policy`, `RateLimit` (draft-ietf-httpapi-ratelimit-headers-09) and `Retry-After`.
//!
//! Both draft fields are RFC 8941 Lists of Items whose value is a String naming the policy:
//!
//! ```text
//! RateLimit-Policy: "order";q=10;w=1, "ip";q=1200;w=60
//! RateLimit: "order";r=3;t=1, "ip";r=1100;t=42
//! ```
//!
//! Inputs are what the rate-limit service answered, per descriptor (the RLS v3 response), or
//! Envoy's own draft-03 `x-ratelimit-*` headers when that is all a response carries. No partition
//! key (`pk`) is emitted: it would echo the client IP or user id back, and the draft asks servers
//! not to put sensitive information in it.

use std::time::Duration;

use thiserror::Error;

/// RFC 8941 §3.3.1: Integers have at most 15 decimal digits.
pub const MAX_SF_INTEGER: u64 = 999_999_999_999_999;

/// Header names, lower-case as Envoy stores them.
pub const RATELIMIT_POLICY_HEADER: &str = "ratelimit-policy";
pub const RATELIMIT_HEADER: &str = "ratelimit";
pub const RETRY_AFTER_HEADER: &str = "retry-after";

/// One quota policy: `"<name>";q=<quota>;w=<window>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaPolicy {
    pub name: String,
    pub quota: u64,
    /// Omitted for windows without a fixed length in seconds (months, years).
    pub window_seconds: Option<u64>,
}

/// The current state of one policy: `"<name>";r=<remaining>;t=<reset>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLimit {
    pub policy: String,
    pub remaining: u64,
    pub reset_seconds: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RenderError {
    #[error("a rate-limit field needs at least one policy")]
    NoPolicies,
    #[error("policy name `{0}` is empty or has a character outside printable ASCII")]
    PolicyName(String),
}

/// The verdict of the rate-limit service for one descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RlsCode {
    Ok,
    OverLimit,
    Unknown,
}

/// `RateLimitResponse.RateLimit.Unit` of the RLS v3 API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RlsUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
    Unknown,
}

/// `RateLimitResponse.RateLimit`: the limit that applied to a descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlsLimit {
    /// `name` from the service's config; empty names are treated as absent.
    pub name: Option<String>,
    pub requests_per_unit: u32,
    pub unit: RlsUnit,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlsDescriptorStatus {
    pub code: RlsCode,
    pub current_limit: Option<RlsLimit>,
    pub limit_remaining: u32,
    pub duration_until_reset: Option<Duration>,
}

/// Everything the response path needs to write: policies, current limits and `Retry-After`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitReport {
    pub policies: Vec<QuotaPolicy>,
    pub limits: Vec<ServiceLimit>,
    pub retry_after_seconds: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EnvoyHeaderError {
    #[error("x-ratelimit-limit is empty or not `<limit>, <quota>;w=<window>[;name=\"...\"], ...`")]
    Limit,
    #[error("x-ratelimit-remaining is not a non-negative integer")]
    Remaining,
    #[error("x-ratelimit-reset is not a non-negative integer")]
    Reset,
}

// === rendering ===

/// `RateLimit-Policy` field value.
pub fn render_ratelimit_policy(policies: &[QuotaPolicy]) -> Result<String, RenderError> {
    render_list(policies, |policy, out| {
        push_sf_string(out, &policy.name)?;
        push_integer_param(out, "q", policy.quota);
        if let Some(window) = policy.window_seconds.filter(|w| *w > 0) {
            push_integer_param(out, "w", window);
        }
        Ok(())
    })
}

/// `RateLimit` field value.
pub fn render_ratelimit(limits: &[ServiceLimit]) -> Result<String, RenderError> {
    render_list(limits, |limit, out| {
        push_sf_string(out, &limit.policy)?;
        push_integer_param(out, "r", limit.remaining);
        if let Some(reset) = limit.reset_seconds {
            push_integer_param(out, "t", reset);
        }
        Ok(())
    })
}

fn render_list<T>(
    items: &[T],
    mut render_item: impl FnMut(&T, &mut String) -> Result<(), RenderError>,
) -> Result<String, RenderError> {
    if items.is_empty() {
        return Err(RenderError::NoPolicies);
    }
    let mut out = String::new();
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        render_item(item, &mut out)?;
    }
    Ok(out)
}

/// RFC 8941 §4.1.6: printable ASCII only, `"` and `\` escaped.
fn push_sf_string(out: &mut String, value: &str) -> Result<(), RenderError> {
    if value.is_empty() || !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(RenderError::PolicyName(value.to_owned()));
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(())
}

/// Values above the structured-field maximum are clamped: the fields are hints, and a smaller
/// number errs on the restrictive side, which the draft allows.
fn push_integer_param(out: &mut String, key: &str, value: u64) {
    out.push(';');
    out.push_str(key);
    out.push('=');
    out.push_str(&value.min(MAX_SF_INTEGER).to_string());
}

// === impl RlsCode ===

impl RlsCode {
    /// `RateLimitResponse.Code` wire value (`UNKNOWN = 0, OK = 1, OVER_LIMIT = 2`).
    pub fn from_proto(value: i32) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::OverLimit,
            _ => Self::Unknown,
        }
    }
}

// === impl RlsUnit ===

impl RlsUnit {
    /// `RateLimitResponse.RateLimit.Unit` wire value (`UNKNOWN = 0` ... `YEAR = 6`). The v3
    /// proto has no week; values it does not define are `Unknown`.
    pub fn from_proto(value: i32) -> Self {
        match value {
            1 => Self::Second,
            2 => Self::Minute,
            3 => Self::Hour,
            4 => Self::Day,
            5 => Self::Month,
            6 => Self::Year,
            _ => Self::Unknown,
        }
    }

    /// Window length in seconds; `None` where the length varies (month, year) or is unknown.
    pub fn window_seconds(self) -> Option<u64> {
        match self {
            Self::Second => Some(1),
            Self::Minute => Some(60),
            Self::Hour => Some(3_600),
            Self::Day => Some(86_400),
            Self::Week => Some(604_800),
            Self::Month | Self::Year | Self::Unknown => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
            Self::Unknown => "window",
        }
    }
}

// === impl RateLimitReport ===

impl RateLimitReport {
    /// Builds the report from the service's per-descriptor answer. Descriptors without a
    /// current limit (unlimited, no match) contribute nothing. A policy is named by the
    /// limit's `name` in the service config, else `<requests>-per-<unit>`; each policy appears
    /// once, with the tightest state reported under its name.
    pub fn from_rls_statuses(statuses: &[RlsDescriptorStatus]) -> Self {
        let mut report = Self {
            retry_after_seconds: retry_after_seconds(statuses),
            ..Self::default()
        };
        for status in statuses {
            let Some(limit) = &status.current_limit else {
                continue;
            };
            let name = policy_name(limit);
            let mut reset_seconds = status.duration_until_reset.map(whole_seconds_ceil);
            if status.code == RlsCode::OverLimit {
                // `t` and `Retry-After` should name the same moment (draft-09 §6), and
                // `Retry-After` is never 0.
                reset_seconds = reset_seconds.map(|t| t.max(1));
            }
            let current = ServiceLimit {
                policy: name.clone(),
                remaining: u64::from(status.limit_remaining),
                reset_seconds,
            };
            if let Some(seen) = report.limits.iter_mut().find(|l| l.policy == name) {
                // Two descriptors under one policy name: report the tighter state.
                if current.remaining < seen.remaining {
                    *seen = current;
                }
                continue;
            }
            report.limits.push(current);
            report.policies.push(QuotaPolicy {
                name,
                quota: u64::from(limit.requests_per_unit),
                window_seconds: limit.unit.window_seconds(),
            });
        }
        report
    }

    /// Builds the report from Envoy's draft-03 headers (`enable_x_ratelimit_headers`), which
    /// list every policy but report `remaining`/`reset` only for the one closest to its limit.
    /// That policy is identified as the first listed policy whose quota equals the leading
    /// `<limit>`; when several share the quota the first is reported, which is exact for
    /// `Retry-After` (same reset) and at worst names a sibling policy in `RateLimit`.
    pub fn from_envoy_headers(
        limit: &str,
        remaining: &str,
        reset: &str,
    ) -> Result<Self, EnvoyHeaderError> {
        let remaining = parse_u64(remaining).ok_or(EnvoyHeaderError::Remaining)?;
        let reset = parse_u64(reset).ok_or(EnvoyHeaderError::Reset)?;
        let mut elements = limit.split(',').map(str::trim);
        let closest_quota = elements
            .next()
            .and_then(parse_u64)
            .ok_or(EnvoyHeaderError::Limit)?;
        let mut policies: Vec<QuotaPolicy> = Vec::new();
        for element in elements {
            let policy = parse_envoy_policy(element).ok_or(EnvoyHeaderError::Limit)?;
            if !policies.iter().any(|p| p.name == policy.name) {
                policies.push(policy);
            }
        }
        let closest = policies
            .iter()
            .find(|p| p.quota == closest_quota)
            .ok_or(EnvoyHeaderError::Limit)?;
        let exhausted = remaining == 0;
        // Same moment in `t` and `Retry-After` (draft-09 §6); `Retry-After` is never 0.
        let reset = if exhausted { reset.max(1) } else { reset };
        Ok(Self {
            limits: vec![ServiceLimit {
                policy: closest.name.clone(),
                remaining,
                reset_seconds: Some(reset),
            }],
            retry_after_seconds: exhausted.then_some(reset),
            policies,
        })
    }

    /// `RateLimit-Policy` value, if there is any policy to report.
    pub fn policy_header(&self) -> Option<String> {
        render_ratelimit_policy(&self.policies).ok()
    }

    /// `RateLimit` value, if there is any policy to report.
    pub fn ratelimit_header(&self) -> Option<String> {
        render_ratelimit(&self.limits).ok()
    }

    /// `Retry-After` value (delay-seconds), only when the request was over a limit.
    pub fn retry_after_header(&self) -> Option<String> {
        self.retry_after_seconds.map(|s| s.to_string())
    }
}

fn policy_name(limit: &RlsLimit) -> String {
    match limit.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => format!("{}-per-{}", limit.requests_per_unit, limit.unit.label()),
    }
}

/// `Retry-After` in seconds for an answer from the rate-limit service: `None` unless a
/// descriptor is over its limit; otherwise the longest wait among the over-limit descriptors,
/// because the request will not pass before every one of them has reset. Each wait is rounded
/// up (retrying before the reset is wasted) and is at least one second. An over-limit
/// descriptor without a reset time counts as its whole window, or one second if even that is
/// unknown.
pub fn retry_after_seconds(statuses: &[RlsDescriptorStatus]) -> Option<u64> {
    statuses
        .iter()
        .filter(|s| s.code == RlsCode::OverLimit)
        .map(|s| {
            let wait = match (s.duration_until_reset, &s.current_limit) {
                (Some(duration), _) => whole_seconds_ceil(duration),
                (None, Some(limit)) => limit.unit.window_seconds().unwrap_or(1),
                (None, None) => 1,
            };
            wait.max(1)
        })
        .max()
}

fn whole_seconds_ceil(duration: Duration) -> u64 {
    let extra = u64::from(duration.subsec_nanos() > 0);
    duration.as_secs().saturating_add(extra)
}

fn parse_u64(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `<quota>;w=<seconds>[;name="<name>"]` as Envoy writes it.
fn parse_envoy_policy(element: &str) -> Option<QuotaPolicy> {
    let mut parts = element.split(';').map(str::trim);
    let quota = parts.next().and_then(parse_u64)?;
    let mut window_seconds = None;
    let mut name = None;
    for param in parts {
        let (key, value) = param.split_once('=')?;
        match key.trim() {
            "w" => window_seconds = Some(parse_u64(value)?),
            "name" => {
                let unquoted = value.trim().strip_prefix('"')?.strip_suffix('"')?;
                name = Some(unquoted.to_owned());
            }
            // Unknown parameters are comments (draft-03 §3.1).
            _ => {}
        }
    }
    let name = match name {
        Some(name) if !name.is_empty() => name,
        _ => {
            let unit = match window_seconds {
                Some(1) => RlsUnit::Second,
                Some(60) => RlsUnit::Minute,
                Some(3_600) => RlsUnit::Hour,
                Some(86_400) => RlsUnit::Day,
                Some(604_800) => RlsUnit::Week,
                _ => RlsUnit::Unknown,
            };
            format!("{quota}-per-{}", unit.label())
        }
    };
    Some(QuotaPolicy {
        name,
        quota,
        window_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        code: RlsCode,
        name: Option<&str>,
        requests: u32,
        unit: RlsUnit,
        remaining: u32,
        reset: Option<Duration>,
    ) -> RlsDescriptorStatus {
        RlsDescriptorStatus {
            code,
            current_limit: Some(RlsLimit {
                name: name.map(str::to_owned),
                requests_per_unit: requests,
                unit,
            }),
            limit_remaining: remaining,
            duration_until_reset: reset,
        }
    }

    fn policy(name: &str, quota: u64, window: Option<u64>) -> QuotaPolicy {
        QuotaPolicy {
            name: name.into(),
            quota,
            window_seconds: window,
        }
    }

    fn limit(name: &str, remaining: u64, reset: Option<u64>) -> ServiceLimit {
        ServiceLimit {
            policy: name.into(),
            remaining,
            reset_seconds: reset,
        }
    }

    #[test]
    fn renders_policy_fields() {
        let cases: &[(&[QuotaPolicy], Result<&str, RenderError>)] = &[
            (&[policy("order", 10, Some(1))], Ok(r#""order";q=10;w=1"#)),
            (
                &[policy("order", 10, Some(1)), policy("ip", 1200, Some(60))],
                Ok(r#""order";q=10;w=1, "ip";q=1200;w=60"#),
            ),
            (
                &[policy("monthly", 100_000, None)],
                Ok(r#""monthly";q=100000"#),
            ),
            (
                &[policy("zero-window", 5, Some(0))],
                Ok(r#""zero-window";q=5"#),
            ),
            (
                &[policy("q\"uo\\te", 1, Some(1))],
                Ok(r#""q\"uo\\te";q=1;w=1"#),
            ),
            (
                &[policy("huge", u64::MAX, Some(1))],
                Ok(r#""huge";q=999999999999999;w=1"#),
            ),
            // failing cases
            (&[], Err(RenderError::NoPolicies)),
            (
                &[policy("", 1, None)],
                Err(RenderError::PolicyName(String::new())),
            ),
            (
                &[policy("tab\there", 1, None)],
                Err(RenderError::PolicyName("tab\there".into())),
            ),
            (
                &[policy("주문", 1, None)],
                Err(RenderError::PolicyName("주문".into())),
            ),
        ];
        for (policies, want) in cases {
            assert_eq!(
                render_ratelimit_policy(policies).as_deref(),
                want.as_ref().copied(),
                "{policies:?}"
            );
        }
    }

    #[test]
    fn renders_ratelimit_fields() {
        let cases: &[(&[ServiceLimit], Result<&str, RenderError>)] = &[
            (&[limit("order", 3, Some(1))], Ok(r#""order";r=3;t=1"#)),
            (
                &[limit("order", 0, Some(1)), limit("ip", 1100, Some(42))],
                Ok(r#""order";r=0;t=1, "ip";r=1100;t=42"#),
            ),
            (&[limit("trial", 999, None)], Ok(r#""trial";r=999"#)),
            (&[], Err(RenderError::NoPolicies)),
            (
                &[limit("new\nline", 1, None)],
                Err(RenderError::PolicyName("new\nline".into())),
            ),
        ];
        for (limits, want) in cases {
            assert_eq!(
                render_ratelimit(limits).as_deref(),
                want.as_ref().copied(),
                "{limits:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_the_longest_over_limit_wait_rounded_up() {
        let ms = Duration::from_millis;
        let cases: &[(&[RlsDescriptorStatus], Option<u64>)] = &[
            (&[], None),
            (
                &[status(
                    RlsCode::Ok,
                    None,
                    10,
                    RlsUnit::Second,
                    3,
                    Some(ms(400)),
                )],
                None,
            ),
            (
                &[status(
                    RlsCode::OverLimit,
                    None,
                    10,
                    RlsUnit::Second,
                    0,
                    Some(ms(400)),
                )],
                Some(1),
            ),
            (
                &[status(
                    RlsCode::OverLimit,
                    None,
                    10,
                    RlsUnit::Minute,
                    0,
                    Some(ms(41_001)),
                )],
                Some(42),
            ),
            (
                &[status(
                    RlsCode::OverLimit,
                    None,
                    10,
                    RlsUnit::Minute,
                    0,
                    Some(ms(0)),
                )],
                Some(1),
            ),
            (
                &[
                    status(
                        RlsCode::OverLimit,
                        None,
                        10,
                        RlsUnit::Second,
                        0,
                        Some(ms(300)),
                    ),
                    status(
                        RlsCode::Ok,
                        None,
                        100,
                        RlsUnit::Hour,
                        5,
                        Some(ms(3_000_000)),
                    ),
                    status(
                        RlsCode::OverLimit,
                        None,
                        5,
                        RlsUnit::Minute,
                        0,
                        Some(ms(12_000)),
                    ),
                ],
                Some(12),
            ),
            // No reset reported: the whole window, or one second when unknown.
            (
                &[status(
                    RlsCode::OverLimit,
                    None,
                    10,
                    RlsUnit::Minute,
                    0,
                    None,
                )],
                Some(60),
            ),
            (
                &[status(
                    RlsCode::OverLimit,
                    None,
                    10,
                    RlsUnit::Month,
                    0,
                    None,
                )],
                Some(1),
            ),
            (
                &[RlsDescriptorStatus {
                    code: RlsCode::OverLimit,
                    current_limit: None,
                    limit_remaining: 0,
                    duration_until_reset: None,
                }],
                Some(1),
            ),
            (
                &[status(RlsCode::Unknown, None, 10, RlsUnit::Second, 0, None)],
                None,
            ),
        ];
        for (statuses, want) in cases {
            assert_eq!(retry_after_seconds(statuses), *want, "{statuses:?}");
        }
    }

    #[test]
    fn reports_from_rls_answers() {
        let statuses = [
            status(
                RlsCode::OverLimit,
                Some("order"),
                10,
                RlsUnit::Second,
                0,
                Some(Duration::from_millis(250)),
            ),
            status(
                RlsCode::Ok,
                None,
                1200,
                RlsUnit::Minute,
                1100,
                Some(Duration::from_secs(42)),
            ),
            status(RlsCode::Ok, Some("order"), 10, RlsUnit::Second, 5, None),
            RlsDescriptorStatus {
                code: RlsCode::Ok,
                current_limit: None,
                limit_remaining: 0,
                duration_until_reset: None,
            },
        ];
        let report = RateLimitReport::from_rls_statuses(&statuses);
        assert_eq!(
            report.policy_header().as_deref(),
            Some(r#""order";q=10;w=1, "1200-per-minute";q=1200;w=60"#)
        );
        assert_eq!(
            report.ratelimit_header().as_deref(),
            Some(r#""order";r=0;t=1, "1200-per-minute";r=1100;t=42"#)
        );
        assert_eq!(report.retry_after_header().as_deref(), Some("1"));

        let empty = RateLimitReport::from_rls_statuses(&[]);
        assert_eq!(
            (
                empty.policy_header(),
                empty.ratelimit_header(),
                empty.retry_after_header()
            ),
            (None, None, None)
        );
    }

    #[test]
    fn maps_proto_enums() {
        let units = [
            (0, RlsUnit::Unknown),
            (1, RlsUnit::Second),
            (2, RlsUnit::Minute),
            (3, RlsUnit::Hour),
            (4, RlsUnit::Day),
            (5, RlsUnit::Month),
            (6, RlsUnit::Year),
            (7, RlsUnit::Unknown),
            (-1, RlsUnit::Unknown),
        ];
        for (value, want) in units {
            assert_eq!(RlsUnit::from_proto(value), want, "{value}");
        }
        let codes = [
            (0, RlsCode::Unknown),
            (1, RlsCode::Ok),
            (2, RlsCode::OverLimit),
            (3, RlsCode::Unknown),
        ];
        for (value, want) in codes {
            assert_eq!(RlsCode::from_proto(value), want, "{value}");
        }
    }

    #[test]
    fn over_limit_reset_matches_retry_after() {
        let statuses = [status(
            RlsCode::OverLimit,
            Some("order"),
            10,
            RlsUnit::Second,
            0,
            Some(Duration::ZERO),
        )];
        let report = RateLimitReport::from_rls_statuses(&statuses);
        assert_eq!(
            report.ratelimit_header().as_deref(),
            Some(r#""order";r=0;t=1"#)
        );
        assert_eq!(report.retry_after_header().as_deref(), Some("1"));
    }

    #[test]
    fn translates_envoy_draft03_headers() {
        let report =
            RateLimitReport::from_envoy_headers(r#"10, 10;w=1;name="order", 1200;w=60"#, "0", "1")
                .unwrap();
        assert_eq!(
            report.policy_header().as_deref(),
            Some(r#""order";q=10;w=1, "1200-per-minute";q=1200;w=60"#)
        );
        assert_eq!(
            report.ratelimit_header().as_deref(),
            Some(r#""order";r=0;t=1"#)
        );
        assert_eq!(report.retry_after_header().as_deref(), Some("1"));

        let report =
            RateLimitReport::from_envoy_headers("1200, 10;w=1, 1200;w=60", "1100", "42").unwrap();
        assert_eq!(
            report.ratelimit_header().as_deref(),
            Some(r#""1200-per-minute";r=1100;t=42"#)
        );
        assert_eq!(report.retry_after_header(), None);

        // Reset 0 while exhausted still asks the client to wait a second, in both fields.
        let report = RateLimitReport::from_envoy_headers("5, 5;w=1", "0", "0").unwrap();
        assert_eq!(report.retry_after_header().as_deref(), Some("1"));
        assert_eq!(
            report.ratelimit_header().as_deref(),
            Some(r#""5-per-second";r=0;t=1"#)
        );

        let bad: &[(&str, &str, &str, EnvoyHeaderError)] = &[
            ("", "0", "1", EnvoyHeaderError::Limit),
            ("10", "0", "1", EnvoyHeaderError::Limit),
            ("10, 20;w=1", "0", "1", EnvoyHeaderError::Limit),
            ("ten, 10;w=1", "0", "1", EnvoyHeaderError::Limit),
            ("10, 10;w=one", "0", "1", EnvoyHeaderError::Limit),
            ("10, 10;w=1;name=order", "0", "1", EnvoyHeaderError::Limit),
            ("10, 10;w=1", "-1", "1", EnvoyHeaderError::Remaining),
            ("10, 10;w=1", "", "1", EnvoyHeaderError::Remaining),
            ("10, 10;w=1", "0", "1.5", EnvoyHeaderError::Reset),
        ];
        for (limit, remaining, reset, want) in bad {
            assert_eq!(
                RateLimitReport::from_envoy_headers(limit, remaining, reset),
                Err(want.clone()),
                "{limit:?} {remaining:?} {reset:?}"
            );
        }
    }
}
