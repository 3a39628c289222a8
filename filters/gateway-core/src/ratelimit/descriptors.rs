//! What the tagger does to one request: strip the descriptor headers a client sent, then set
//! ours for Envoy's `ratelimit` filter.
//!
//! Layout (default names):
//!
//! | header           | value                                         | always |
//! |------------------|-----------------------------------------------|--------|
//! | `x-rl-client-ip` | masked client address, or `unknown`          | yes    |
//! | `x-rl-user`      | verified user key                              | only for verified users |
//! | `x-rl-class`     | route class name                               | yes    |
//! | `x-rl-weight`    | request weight, for `hits_addend`              | yes    |
//!
//! `x-rl-user` is absent, not empty, for anonymous requests: Envoy's `request_headers` action
//! then produces no descriptor, so per-user limits apply to verified users only and anonymous
//! traffic is limited by IP alone.
//!
//! These headers are read by the `ratelimit` filter right after the tagger and must not reach
//! an upstream: the route configuration removes them (`request_headers_to_remove`, applied by
//! the router after all decoder filters). The tagger itself removes every client-sent copy
//! before setting its own, so what the `ratelimit` filter reads was written by the tagger.

use super::client_ip::{ClientKey, MissingClientIp};
use super::config::{OnMissingIdentity, TaggerConfig};
use super::identity::{SubjectError, UserKey};
use super::route_class::Classification;

/// Client key used when no address could be derived and `onMissingIdentity` is
/// `sharedBucket`. It cannot collide with an address key.
pub const UNKNOWN_CLIENT_KEY: &str = "unknown";

/// Status of the answer when `onMissingIdentity` is `reject`.
pub const MISSING_IDENTITY_STATUS: u16 = 400;

/// Names of the headers that carry descriptor inputs from the tagger to the `ratelimit`
/// filter. Validated at configuration: lower-case, distinct, not a header anything else uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorHeaderNames {
    client_ip: String,
    user: String,
    class: String,
    weight: String,
}

/// The request as the tagger sees it. Everything here comes from Envoy, not from JSON parsing
/// in the filter: `forwarded_for` is every `x-forwarded-for` line in order, `peer_address` is
/// `source.address`, `verified_subject` is the filter-state value jwt-authz wrote (absent when
/// the request is anonymous or jwt-authz did not run).
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub forwarded_for: &'a [&'a str],
    pub peer_address: Option<&'a str>,
    pub verified_subject: Option<&'a [u8]>,
}

/// The per-IP bucket of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientBucket {
    Address(ClientKey),
    /// No address could be derived; keyed by [`UNKNOWN_CLIENT_KEY`].
    Unknown(MissingClientIp),
}

/// Everything decided about a request that is let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTags<'c> {
    pub client: ClientBucket,
    pub user: Option<UserKey>,
    /// Set when a subject was handed over but could not be used; the request is then keyed as
    /// anonymous.
    pub subject_error: Option<SubjectError>,
    pub classification: Classification<'c>,
}

/// The tagger's decision for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagDecision<'c> {
    Tag(RequestTags<'c>),
    /// `onMissingIdentity: reject` and no client address: answer
    /// [`MISSING_IDENTITY_STATUS`] instead of forwarding.
    Reject(MissingClientIp),
}

// === impl DescriptorHeaderNames ===

impl DescriptorHeaderNames {
    pub const DEFAULT_CLIENT_IP: &'static str = "x-rl-client-ip";
    pub const DEFAULT_USER: &'static str = "x-rl-user";
    pub const DEFAULT_CLASS: &'static str = "x-rl-class";
    pub const DEFAULT_WEIGHT: &'static str = "x-rl-weight";

    pub(crate) fn new(client_ip: String, user: String, class: String, weight: String) -> Self {
        Self {
            client_ip,
            user,
            class,
            weight,
        }
    }

    pub fn client_ip(&self) -> &str {
        &self.client_ip
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn class(&self) -> &str {
        &self.class
    }

    pub fn weight(&self) -> &str {
        &self.weight
    }

    /// Every header to remove from the request before the tagger sets its own, whatever the
    /// decision: a client copy of any of them is a spoof attempt.
    pub fn to_strip(&self) -> [&str; 4] {
        [&self.client_ip, &self.user, &self.class, &self.weight]
    }

    /// True if `name` (as read from a header map, any case) is one of ours; the glue counts
    /// these as spoof attempts.
    pub fn is_descriptor_header(&self, name: &str) -> bool {
        self.to_strip()
            .iter()
            .any(|ours| ours.eq_ignore_ascii_case(name))
    }
}

// === impl RequestTags ===

impl RequestTags<'_> {
    pub fn client_key(&self) -> &str {
        match &self.client {
            ClientBucket::Address(key) => key.as_str(),
            ClientBucket::Unknown(_) => UNKNOWN_CLIENT_KEY,
        }
    }

    /// The headers to set, in a fixed order. The user header is left out for anonymous
    /// requests (see the module documentation).
    pub fn headers_to_set<'n>(&self, names: &'n DescriptorHeaderNames) -> Vec<(&'n str, String)> {
        let class = self.classification.class;
        let mut headers = Vec::with_capacity(4);
        headers.push((names.client_ip(), self.client_key().to_owned()));
        if let Some(user) = &self.user {
            headers.push((names.user(), user.as_str().to_owned()));
        }
        headers.push((names.class(), class.name().to_owned()));
        headers.push((names.weight(), class.weight().to_string()));
        headers
    }

    /// Metric labels of every fallback taken for this request (none on the normal path).
    pub fn fallback_labels(&self) -> Vec<&'static str> {
        let mut labels = Vec::new();
        if let ClientBucket::Unknown(reason) = &self.client {
            labels.push(reason.metric_label());
        }
        if let Some(error) = &self.subject_error {
            labels.push(error.metric_label());
        }
        if !self.classification.canonical_path {
            labels.push("non_canonical_path");
        }
        labels
    }
}

/// Decides the descriptors of one request. Pure: the glue gathers [`RequestFacts`], strips
/// [`DescriptorHeaderNames::to_strip`], then applies the decision.
pub fn tag_request<'c>(config: &'c TaggerConfig, facts: &RequestFacts<'_>) -> TagDecision<'c> {
    let policy = config.client_ip();
    let client = match policy.derive_client_ip(facts.forwarded_for, facts.peer_address) {
        Ok(addr) => ClientBucket::Address(policy.key_for(addr)),
        Err(reason) => match config.on_missing_identity() {
            OnMissingIdentity::SharedBucket => ClientBucket::Unknown(reason),
            OnMissingIdentity::Reject => return TagDecision::Reject(reason),
        },
    };
    let (user, subject_error) = match facts.verified_subject.map(UserKey::from_verified_subject) {
        None => (None, None),
        Some(Ok(user)) => (Some(user), None),
        Some(Err(error)) => (None, Some(error)),
    };
    TagDecision::Tag(RequestTags {
        client,
        user,
        subject_error,
        classification: config.routes().classify(facts.method, facts.path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "clientIp": { "trustedHops": 1 },
        "routeClasses": [
            { "methods": ["POST"], "pathPrefix": "/api/v1/trade/orders", "class": "order", "weight": 1 },
            { "methods": ["POST"], "pathPrefix": "/api/v1/wallet/withdrawals", "class": "withdrawal", "weight": 10 },
            { "methods": ["GET"], "pathPrefix": "/api/v1/", "class": "account_read", "weight": 2 }
        ],
        "defaultClass": { "class": "public" }
    }"#;

    fn config(on_missing: &str) -> TaggerConfig {
        let json = CONFIG.replace(
            r#""defaultClass""#,
            &format!(r#""onMissingIdentity": "{on_missing}", "defaultClass""#),
        );
        TaggerConfig::from_json(json.as_bytes()).unwrap()
    }

    fn facts<'a>(
        method: &'a str,
        path: &'a str,
        xff: &'a [&'a str],
        subject: Option<&'a [u8]>,
    ) -> RequestFacts<'a> {
        RequestFacts {
            method,
            path,
            forwarded_for: xff,
            peer_address: Some("10.0.1.5:40000"),
            verified_subject: subject,
        }
    }

    fn headers(decision: &TagDecision<'_>, names: &DescriptorHeaderNames) -> Vec<(String, String)> {
        match decision {
            TagDecision::Tag(tags) => tags
                .headers_to_set(names)
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect(),
            TagDecision::Reject(reason) => panic!("rejected: {reason}"),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn emits_the_descriptor_layout() {
        let config = config("sharedBucket");
        let names = config.descriptor_headers();
        let cases: &[(RequestFacts<'_>, &[(&str, &str)])] = &[
            (
                facts(
                    "POST",
                    "/api/v1/trade/orders",
                    &["1.1.1.1, 203.0.113.7"],
                    Some(b"user-42"),
                ),
                &[
                    ("x-rl-client-ip", "203.0.113.7"),
                    ("x-rl-user", "user-42"),
                    ("x-rl-class", "order"),
                    ("x-rl-weight", "1"),
                ],
            ),
            (
                facts(
                    "POST",
                    "/api/v1/wallet/withdrawals",
                    &["2001:db8:1:2::99"],
                    Some(b"user-42"),
                ),
                &[
                    ("x-rl-client-ip", "2001:db8:1:2::/64"),
                    ("x-rl-user", "user-42"),
                    ("x-rl-class", "withdrawal"),
                    ("x-rl-weight", "10"),
                ],
            ),
            // Anonymous: no user header at all, keyed by IP.
            (
                facts("GET", "/api/v1/market/ticker", &["203.0.113.7"], None),
                &[
                    ("x-rl-client-ip", "203.0.113.7"),
                    ("x-rl-class", "account_read"),
                    ("x-rl-weight", "2"),
                ],
            ),
            // No usable client address: the shared bucket.
            (
                facts("GET", "/health", &[], None),
                &[
                    ("x-rl-client-ip", "unknown"),
                    ("x-rl-class", "public"),
                    ("x-rl-weight", "1"),
                ],
            ),
            // A subject that cannot be used is not guessed at: keyed as anonymous.
            (
                facts(
                    "POST",
                    "/api/v1/trade/orders",
                    &["203.0.113.7"],
                    Some(b"bad\nsubject"),
                ),
                &[
                    ("x-rl-client-ip", "203.0.113.7"),
                    ("x-rl-class", "order"),
                    ("x-rl-weight", "1"),
                ],
            ),
        ];
        for (request, want) in cases {
            assert_eq!(
                headers(&tag_request(&config, request), names),
                pairs(want),
                "{request:?}"
            );
        }
    }

    #[test]
    fn reports_fallbacks_for_metrics() {
        let config = config("sharedBucket");
        let cases: &[(RequestFacts<'_>, &[&str])] = &[
            (facts("GET", "/api/v1/x", &["203.0.113.7"], Some(b"u")), &[]),
            (
                facts("GET", "/api/v1/x", &[], None),
                &["client_ip_too_few_hops"],
            ),
            (
                facts("GET", "/api/v1/x", &["junk"], None),
                &["client_ip_malformed_entry"],
            ),
            (
                facts("GET", "/api//x", &["203.0.113.7"], Some(b"")),
                &["subject_empty", "non_canonical_path"],
            ),
        ];
        for (request, want) in cases {
            let TagDecision::Tag(tags) = tag_request(&config, request) else {
                panic!("rejected {request:?}");
            };
            assert_eq!(tags.fallback_labels(), *want, "{request:?}");
        }
    }

    #[test]
    fn reject_policy_refuses_requests_without_a_client_address() {
        let config = config("reject");
        let cases: &[(RequestFacts<'_>, Option<MissingClientIp>)] = &[
            (facts("GET", "/api/v1/x", &["203.0.113.7"], None), None),
            (
                facts("GET", "/api/v1/x", &[], None),
                Some(MissingClientIp::TooFewHops),
            ),
            (
                facts("GET", "/api/v1/x", &["1.1.1.1, ???"], Some(b"user-1")),
                Some(MissingClientIp::MalformedEntry),
            ),
            (
                RequestFacts {
                    peer_address: None,
                    ..facts("GET", "/", &["203.0.113.7"], None)
                },
                Some(MissingClientIp::NoPeerAddress),
            ),
        ];
        for (request, want) in cases {
            let got = match tag_request(&config, request) {
                TagDecision::Reject(reason) => Some(reason),
                TagDecision::Tag(_) => None,
            };
            assert_eq!(got, *want, "{request:?}");
        }
    }

    #[test]
    fn client_supplied_values_never_reach_the_descriptors() {
        // Whatever a client claims (descriptor headers are stripped by the glue before the
        // decision; forwarded-for is read from the right), the descriptors are the same.
        let config = config("sharedBucket");
        let names = config.descriptor_headers();
        let honest = headers(
            &tag_request(
                &config,
                &facts("POST", "/api/v1/trade/orders", &["203.0.113.7"], None),
            ),
            names,
        );
        for spoofed_xff in [
            &["6.6.6.6, 203.0.113.7"][..],
            &["6.6.6.6", "203.0.113.7"][..],
            &["x-rl-user: admin, 203.0.113.7"][..],
        ] {
            let got = tag_request(
                &config,
                &facts("POST", "/api/v1/trade/orders", spoofed_xff, None),
            );
            assert_eq!(headers(&got, names), honest, "{spoofed_xff:?}");
        }
    }

    #[test]
    fn strips_every_descriptor_header_in_any_case() {
        let config = config("sharedBucket");
        let names = config.descriptor_headers();
        assert_eq!(
            names.to_strip(),
            ["x-rl-client-ip", "x-rl-user", "x-rl-class", "x-rl-weight"]
        );
        for (name, want) in [
            ("x-rl-user", true),
            ("X-RL-User", true),
            ("X-Rl-Weight", true),
            ("x-rl-users", false),
            ("x-user", false),
        ] {
            assert_eq!(names.is_descriptor_header(name), want, "{name}");
        }
    }
}
