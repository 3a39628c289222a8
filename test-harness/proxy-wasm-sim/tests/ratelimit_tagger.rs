//! ratelimit-tagger on the BUILT module (`dist/ratelimit-tagger.wasm`, `make wasm`), with the
//! sample configuration from its README: the descriptor headers for every kind of request,
//! spoofed and garbage `X-Forwarded-For`, client-sent descriptor headers stripped, the user
//! only from filter state, weights by class, the 400 of the reject policy, the draft-09
//! response headers, bad configurations refused with the field named.
//! Each test builds its own Host; they run in parallel.

// Test crate: the helpers fail the test on an unexpected error, like the `#[test]`
// functions themselves (where clippy already allows unwrap/expect).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proxy_wasm_sim::{artifact, workspace_root, Action, Host, LogLevel, PropertyValue, StreamId};

// Stat names as the filter defines them (README "Metrics").
const INFO: &str = "ratelimit_tagger_info";
const CONFIGS_REJECTED: &str = "ratelimit_tagger_configs_rejected_total";
const SPOOFED_HEADERS_STRIPPED: &str = "ratelimit_tagger_spoofed_headers_stripped_total";
const REQUESTS_REJECTED: &str = "ratelimit_tagger_requests_rejected_total";
const RATE_LIMITED_RESPONSES: &str = "ratelimit_tagger_rate_limited_responses_total";
const UNTRANSLATED_RESPONSES: &str = "ratelimit_tagger_untranslated_responses_total";

/// A counter as Envoy shows it once the filter's tick has flushed what it counted (the
/// filter counts per-request events in wasm memory and flushes them every second).
fn flushed(host: &mut Host, name: &str) -> Option<u64> {
    host.advance(Duration::from_secs(1)).unwrap();
    host.counter(name)
}

fn descriptors_emitted(class: &str) -> String {
    format!("ratelimit_tagger_descriptors_emitted_total.class.{class}")
}

fn fallbacks(reason: &str) -> String {
    format!("ratelimit_tagger_identity_fallbacks_total.reason.{reason}")
}

/// Where jwt-authz leaves the verified subject: `set_property(["svcgw.verified_subject"])`
/// is the filter-state object `wasm.svcgw.verified_subject`.
const SUBJECT_PATH: &[&str] = &["filter_state", "wasm.svcgw.verified_subject"];

/// The ALB in front of the gateway: inside the trusted range, one trusted hop.
const ALB: &str = "10.0.1.5:40000";

const DESCRIPTOR_HEADERS: [&str; 4] = ["x-rl-client-ip", "x-rl-user", "x-rl-class", "x-rl-weight"];

fn readme() -> String {
    let path = workspace_root().join("filters/ratelimit-tagger/README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of the first fenced block with this info string in the README.
fn readme_block(info: &str) -> String {
    let readme = readme();
    let fence = format!("```{info}\n");
    let start = readme.find(&fence).expect("block in README") + fence.len();
    let len = readme[start..].find("```").expect("closing fence");
    readme[start..start + len].to_string()
}

/// The README's sample configuration, optionally edited (`from` must occur in it).
fn config_with(from: &str, to: &str) -> String {
    let sample = readme_block("json");
    assert!(
        sample.contains(from),
        "test bug: `{from}` not in the sample"
    );
    sample.replacen(from, to, 1)
}

fn host_with(config: &str) -> Host {
    let host = Host::builder(artifact("ratelimit-tagger"))
        .plugin_config(config)
        .build()
        .expect("ratelimit-tagger starts");
    assert!(host.configured(), "config rejected: {:?}", host.logs());
    host
}

fn host() -> Host {
    host_with(&readme_block("json"))
}

/// A request as Envoy would hand it to the filter. `subject` is what jwt-authz left in
/// filter state (`None`: anonymous, or jwt-authz did not run).
struct Request<'a> {
    peer: &'a str,
    method: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, &'a [u8])>,
    subject: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            peer: ALB,
            method,
            path,
            headers: Vec::new(),
            subject: None,
        }
    }

    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value.as_bytes()));
        self
    }

    fn header_bytes(mut self, name: &'a str, value: &'a [u8]) -> Self {
        self.headers.push((name, value));
        self
    }

    fn xff(self, value: &'a str) -> Self {
        self.header("x-forwarded-for", value)
    }

    fn subject(mut self, subject: &'a [u8]) -> Self {
        self.subject = Some(subject);
        self
    }

    fn via_peer(mut self, peer: &'a str) -> Self {
        self.peer = peer;
        self
    }
}

/// Runs the request headers through the filter; returns the stream and the action.
fn send(host: &mut Host, request: &Request<'_>) -> (StreamId, Action) {
    let stream = host.new_stream_from(request.peer);
    if let Some(subject) = request.subject {
        host.set_stream_property(stream, SUBJECT_PATH, PropertyValue::Bytes(subject.to_vec()))
            .unwrap();
    }
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), request.method.as_bytes().to_vec()),
        (":path".into(), request.path.as_bytes().to_vec()),
        (":authority".into(), b"api.example".to_vec()),
    ];
    headers.extend(
        request
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_vec())),
    );
    let action = host.request_headers_bytes(stream, headers, true).unwrap();
    (stream, action)
}

/// The descriptor headers the ratelimit filter would read, in layout order; every value of
/// each (so a surviving client copy shows up).
fn descriptors(host: &Host, stream: StreamId) -> Vec<(String, String)> {
    DESCRIPTOR_HEADERS
        .iter()
        .flat_map(|name| {
            host.request_header_values(stream, name)
                .into_iter()
                .map(move |value| (name.to_string(), value))
        })
        .collect()
}

fn layout(ip: &str, user: Option<&str>, class: &str, weight: &str) -> Vec<(String, String)> {
    let mut want = vec![("x-rl-client-ip".to_string(), ip.to_string())];
    if let Some(user) = user {
        want.push(("x-rl-user".into(), user.into()));
    }
    want.push(("x-rl-class".into(), class.into()));
    want.push(("x-rl-weight".into(), weight.into()));
    want
}

fn tag(host: &mut Host, request: &Request<'_>) -> Vec<(String, String)> {
    let (stream, action) = send(host, request);
    assert_eq!(action, Action::Continue, "{:?}", host.local_reply(stream));
    descriptors(host, stream)
}

#[test]
fn starts_with_the_readme_config_and_says_so() {
    let host = host();
    assert_eq!(host.gauge(INFO), Some(1));
    assert!(host.has_log(LogLevel::Info, "ratelimit-tagger 0.1.0: vm started"));
    let configured = host
        .logs()
        .into_iter()
        .find(|l| {
            l.message
                .contains("ratelimit-tagger 0.1.0: configured, config sha256:")
        })
        .expect("configured line");
    let hash = configured
        .message
        .split("config sha256:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    assert_eq!(hash.len(), 16, "{}", configured.message);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(configured.message.contains(
        "classes order/order_cancel/withdrawal/account_read/public, on missing identity SharedBucket"
    ));
    // Per-class counters exist from the start, at zero.
    assert_eq!(host.counter(&descriptors_emitted("withdrawal")), Some(0));
}

#[test]
fn emits_the_descriptor_layout() {
    let mut host = host();
    let cases: Vec<(Request<'_>, Vec<(String, String)>)> = vec![
        (
            Request::new("POST", "/api/v1/trade/orders")
                .xff("203.0.113.7")
                .subject(b"user-42"),
            layout("203.0.113.7", Some("user-42"), "order", "1"),
        ),
        (
            Request::new("DELETE", "/api/v1/trade/orders/9")
                .xff("203.0.113.7")
                .subject(b"user-42"),
            layout("203.0.113.7", Some("user-42"), "order_cancel", "1"),
        ),
        (
            Request::new("POST", "/api/v1/wallet/withdrawals?idempotency=1")
                .xff("2001:db8:1:2::99")
                .subject(b"user-42"),
            layout("2001:db8:1:2::/64", Some("user-42"), "withdrawal", "10"),
        ),
        (
            Request::new("GET", "/api/v1/wallet/balances")
                .xff("203.0.113.7")
                .subject(b"user-42"),
            layout("203.0.113.7", Some("user-42"), "account_read", "1"),
        ),
        // Anonymous: no user header at all, keyed by address.
        (
            Request::new("GET", "/api/v1/market/ticker").xff("203.0.113.7"),
            layout("203.0.113.7", None, "public", "1"),
        ),
        // A method no rule lists falls through to the default class.
        (
            Request::new("PATCH", "/api/v1/trade/orders").xff("203.0.113.7"),
            layout("203.0.113.7", None, "public", "1"),
        ),
    ];
    for (request, want) in &cases {
        let got = tag(&mut host, request);
        assert_eq!(got, *want, "{} {}", request.method, request.path);
    }
    // A subject that is not short printable ASCII becomes a fixed-size hash (the hash itself
    // is the core's business; here: shape and stability), never a header-breaking value.
    let alice = Request::new("GET", "/api/v1/risk/limits")
        .xff("203.0.113.7")
        .subject("Ålice Example".as_bytes());
    let first = tag(&mut host, &alice);
    let user = &first[1];
    assert_eq!(user.0, "x-rl-user");
    assert!(
        user.1.starts_with("sha256:") && user.1.len() == 71,
        "{first:?}"
    );
    assert_eq!(tag(&mut host, &alice), first);
    assert_eq!(flushed(&mut host, &descriptors_emitted("order")), Some(1));
    assert_eq!(
        flushed(&mut host, &descriptors_emitted("withdrawal")),
        Some(1)
    );
    assert_eq!(flushed(&mut host, &descriptors_emitted("public")), Some(2));
}

/// The descriptor headers and the removal of a client's copies are one map write. When
/// Envoy refuses it, the copies are removed one by one and the request goes on untagged
/// (the local backstop still limits it); when even that fails the request is refused,
/// since a surviving copy could key it to someone else's bucket.
#[test]
fn a_failed_header_write_never_lets_a_client_copy_through() {
    const BAD_ARGUMENT: u32 = 2;
    let spoofing = Request::new("GET", "/api/v1/trade/orders")
        .xff("203.0.113.7")
        .header("x-rl-user", "victim")
        .header("x-rl-weight", "1000");

    let mut stripped = host();
    stripped.fail_host_call("proxy_set_header_map_pairs", BAD_ARGUMENT, 1);
    let (stream, action) = send(&mut stripped, &spoofing);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        descriptors(&stripped, stream),
        Vec::<(String, String)>::new()
    );
    assert!(stripped.local_reply(stream).is_none());
    assert!(stripped.has_log(LogLevel::Warn, "cannot write the descriptor headers"));

    let mut refused = host();
    refused.fail_host_call("proxy_set_header_map_pairs", BAD_ARGUMENT, 1);
    refused.fail_host_call("proxy_remove_header_map_value", BAD_ARGUMENT, 1);
    let (stream, action) = send(&mut refused, &spoofing);
    assert_eq!(action, Action::Pause);
    let reply = refused.local_reply(stream).unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        r#"{"error":"service_unavailable","message":"the request could not be processed; retry later"}"#
    );
    assert!(refused.has_log(LogLevel::Error, "refusing the request"));

    // A request map that cannot even be read: same fallback.
    let mut unread = host();
    unread.fail_host_call("proxy_get_header_map_pairs", BAD_ARGUMENT, 1);
    let (stream, action) = send(&mut unread, &spoofing);
    assert_eq!(action, Action::Continue);
    assert_eq!(descriptors(&unread, stream), Vec::<(String, String)>::new());
}

#[test]
fn client_sent_descriptor_headers_are_stripped_and_counted() {
    let mut host = host();
    let request = Request::new("GET", "/api/v1/market/ticker")
        .xff("203.0.113.7")
        .header("x-rl-user", "admin")
        .header("x-rl-user", "root")
        .header("X-RL-Class", "free")
        .header("x-rl-weight", "0")
        .header("x-rl-client-ip", "1.1.1.1");
    assert_eq!(
        tag(&mut host, &request),
        layout("203.0.113.7", None, "public", "1")
    );
    assert_eq!(flushed(&mut host, SPOOFED_HEADERS_STRIPPED), Some(5));

    // Stripped even when the request is then refused.
    let mut strict = host_with(&config_with(
        r#""onMissingIdentity": "sharedBucket""#,
        r#""onMissingIdentity": "reject""#,
    ));
    let (stream, action) = send(
        &mut strict,
        &Request::new("GET", "/").header("x-rl-user", "admin"),
    );
    assert_eq!(action, Action::Pause);
    assert!(strict.request_header(stream, "x-rl-user").is_none());
    assert_eq!(flushed(&mut strict, SPOOFED_HEADERS_STRIPPED), Some(1));
}

#[test]
fn the_user_comes_from_filter_state_never_from_a_header() {
    let mut host = host();
    // A client claiming a user gets keyed as anonymous.
    assert_eq!(
        tag(
            &mut host,
            &Request::new("POST", "/api/v1/trade/orders")
                .xff("203.0.113.7")
                .header("x-rl-user", "victim")
        ),
        layout("203.0.113.7", None, "order", "1")
    );
    // The verified subject wins over whatever the client sent.
    assert_eq!(
        tag(
            &mut host,
            &Request::new("POST", "/api/v1/trade/orders")
                .xff("203.0.113.7")
                .header("x-rl-user", "victim")
                .subject(b"user-42")
        ),
        layout("203.0.113.7", Some("user-42"), "order", "1")
    );
    // A subject that cannot be used is not guessed at: anonymous, and counted.
    for (subject, reason) in [
        (&b""[..], "subject_empty"),
        (
            &b"user\r\nx-rl-class: free"[..],
            "subject_control_character",
        ),
        (&b"\xff\xfe"[..], "subject_not_utf8"),
    ] {
        assert_eq!(
            tag(
                &mut host,
                &Request::new("GET", "/api/v1/wallet/balances")
                    .xff("203.0.113.7")
                    .subject(subject)
            ),
            layout("203.0.113.7", None, "account_read", "1"),
            "{subject:?}"
        );
        // Envoy returns an empty value as "not found": then there is nothing to count.
        if !subject.is_empty() {
            assert_eq!(flushed(&mut host, &fallbacks(reason)), Some(1), "{reason}");
        }
    }
}

#[test]
fn spoofed_forwarded_for_does_not_move_the_bucket() {
    let mut host = host();
    let honest = layout("203.0.113.7", None, "public", "1");
    for xff in [
        "203.0.113.7",
        "6.6.6.6, 203.0.113.7",
        "10.0.0.1, 203.0.113.7",
        "garbage, 203.0.113.7",
        " 6.6.6.6 ,\t203.0.113.7 ",
        "203.0.113.7:51234",
    ] {
        assert_eq!(
            tag(&mut host, &Request::new("GET", "/").xff(xff)),
            honest,
            "{xff}"
        );
    }
    // Several lines form one list; the last line holds the ALB's entry.
    assert_eq!(
        tag(
            &mut host,
            &Request::new("GET", "/").xff("6.6.6.6").xff("203.0.113.7")
        ),
        honest
    );
    // A client talking to the gateway directly (not through the ALB) is keyed by its own
    // address, whatever it writes into X-Forwarded-For.
    assert_eq!(
        tag(
            &mut host,
            &Request::new("GET", "/")
                .via_peer("198.51.100.23:5555")
                .xff("203.0.113.7")
        ),
        layout("198.51.100.23", None, "public", "1")
    );
    // IPv6, bracketed or not, is keyed by its /64; IPv4-mapped IPv6 is IPv4.
    for (xff, key) in [
        ("2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"),
        ("[2001:db8:aa:bb::9]:443", "2001:db8:aa:bb::/64"),
        ("::ffff:203.0.113.8", "203.0.113.8"),
    ] {
        assert_eq!(
            tag(&mut host, &Request::new("GET", "/").xff(xff)),
            layout(key, None, "public", "1"),
            "{xff}"
        );
    }
}

#[test]
fn unusable_forwarded_for_lands_in_the_shared_bucket() {
    let mut host = host();
    let overlong = format!("{}203.0.113.7", "1".repeat(10_000));
    let cases: Vec<(Request<'_>, &str)> = vec![
        (Request::new("GET", "/"), "client_ip_too_few_hops"),
        (Request::new("GET", "/").xff(""), "client_ip_too_few_hops"),
        (
            Request::new("GET", "/").xff("not-an-ip"),
            "client_ip_malformed_entry",
        ),
        (
            Request::new("GET", "/").xff("203.0.113.7, ???"),
            "client_ip_malformed_entry",
        ),
        (
            Request::new("GET", "/").xff(&overlong),
            "client_ip_malformed_entry",
        ),
        (
            Request::new("GET", "/").header_bytes("x-forwarded-for", b"\xff\xfe203.0.113.7"),
            "client_ip_malformed_entry",
        ),
    ];
    for (request, reason) in &cases {
        let before = flushed(&mut host, &fallbacks(reason)).unwrap_or(0);
        assert_eq!(
            tag(&mut host, request),
            layout("unknown", None, "public", "1"),
            "{reason}"
        );
        assert_eq!(
            flushed(&mut host, &fallbacks(reason)),
            Some(before + 1),
            "{reason}"
        );
    }
}

#[test]
fn non_canonical_paths_get_the_default_class() {
    let mut host = host();
    for path in [
        "/api/v1//trade/orders",
        "/api/v1/./trade/orders",
        "/api/v1/trade%2Forders",
    ] {
        assert_eq!(
            tag(
                &mut host,
                &Request::new("POST", path).xff("203.0.113.7").subject(b"u1")
            ),
            layout("203.0.113.7", Some("u1"), "public", "1"),
            "{path}"
        );
    }
    assert_eq!(
        flushed(&mut host, &fallbacks("non_canonical_path")),
        Some(3)
    );
}

#[test]
fn reject_policy_answers_400_with_the_shared_body() {
    let mut host = host_with(&config_with(
        r#""onMissingIdentity": "sharedBucket""#,
        r#""onMissingIdentity": "reject""#,
    ));
    let (stream, action) = send(
        &mut host,
        &Request::new("POST", "/api/v1/trade/orders").xff("junk"),
    );
    assert_eq!(action, Action::Pause);
    let reply = host.local_reply(stream).expect("a local reply");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8(reply.body).unwrap(),
        r#"{"error":"client_address_unknown","message":"the client address could not be determined"}"#
    );
    assert_eq!(flushed(&mut host, REQUESTS_REJECTED), Some(1));
    assert_eq!(
        flushed(&mut host, &fallbacks("client_ip_malformed_entry")),
        Some(1)
    );

    // A derivable address passes as usual under the same policy.
    assert_eq!(
        tag(&mut host, &Request::new("GET", "/").xff("203.0.113.7")),
        layout("203.0.113.7", None, "public", "1")
    );
}

/// Runs a response through a tagged stream; returns the stream.
fn respond(host: &mut Host, status: &str, extra: &[(&str, &str)]) -> StreamId {
    let (stream, _) = send(host, &Request::new("GET", "/").xff("203.0.113.7"));
    let mut headers = vec![(":status", status), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    assert_eq!(
        host.response_headers(stream, &headers, false).unwrap(),
        Action::Continue
    );
    stream
}

const ENVOY_LIMIT: &str = r#"10, 10;w=1;name="order", 1200;w=60;name="ip""#;

#[test]
fn translates_envoys_draft_03_headers_into_draft_09() {
    let mut host = host();
    let stream = respond(
        &mut host,
        "200",
        &[
            ("x-ratelimit-limit", ENVOY_LIMIT),
            ("x-ratelimit-remaining", "7"),
            ("x-ratelimit-reset", "1"),
        ],
    );
    assert_eq!(
        host.response_header(stream, "ratelimit-policy").as_deref(),
        Some(r#""order";q=10;w=1, "ip";q=1200;w=60"#)
    );
    assert_eq!(
        host.response_header(stream, "ratelimit").as_deref(),
        Some(r#""order";r=7;t=1"#)
    );
    assert_eq!(host.response_header(stream, "retry-after"), None);
    for gone in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert_eq!(host.response_header(stream, gone), None, "{gone}");
    }
    assert_eq!(flushed(&mut host, RATE_LIMITED_RESPONSES), Some(0));
}

#[test]
fn a_429_gets_retry_after_matching_the_reset() {
    let mut host = host();
    let stream = respond(
        &mut host,
        "429",
        &[
            ("x-ratelimit-limit", ENVOY_LIMIT),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "0"),
        ],
    );
    // `Retry-After` is never 0, and `t` names the same moment.
    assert_eq!(
        host.response_header(stream, "retry-after").as_deref(),
        Some("1")
    );
    assert_eq!(
        host.response_header(stream, "ratelimit").as_deref(),
        Some(r#""order";r=0;t=1"#)
    );
    assert_eq!(flushed(&mut host, RATE_LIMITED_RESPONSES), Some(1));

    let stream = respond(
        &mut host,
        "429",
        &[
            ("x-ratelimit-limit", "1200, 1200;w=60;name=\"ip\""),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "42"),
        ],
    );
    assert_eq!(
        host.response_header(stream, "retry-after").as_deref(),
        Some("42")
    );

    // The backstop's 429 carries no x-ratelimit-* headers: counted, left as it is (its
    // Retry-After comes from the local_ratelimit config).
    let stream = respond(&mut host, "429", &[("retry-after", "1")]);
    assert_eq!(
        host.response_header(stream, "retry-after").as_deref(),
        Some("1")
    );
    assert_eq!(host.response_header(stream, "ratelimit-policy"), None);
    assert_eq!(flushed(&mut host, RATE_LIMITED_RESPONSES), Some(3));
}

#[test]
fn untranslatable_headers_are_removed_and_counted() {
    let mut host = host();
    for headers in [
        vec![
            ("x-ratelimit-limit", "ten"),
            ("x-ratelimit-remaining", "1"),
            ("x-ratelimit-reset", "1"),
        ],
        vec![
            ("x-ratelimit-limit", ENVOY_LIMIT),
            ("x-ratelimit-remaining", "-1"),
            ("x-ratelimit-reset", "1"),
        ],
        vec![("x-ratelimit-remaining", "3")],
    ] {
        let stream = respond(&mut host, "200", &headers);
        assert_eq!(
            host.response_header(stream, "ratelimit-policy"),
            None,
            "{headers:?}"
        );
        assert_eq!(
            host.response_header(stream, "ratelimit"),
            None,
            "{headers:?}"
        );
        for (name, _) in &headers {
            assert_eq!(host.response_header(stream, name), None, "{name}");
        }
    }
    assert_eq!(flushed(&mut host, UNTRANSLATED_RESPONSES), Some(3));

    // Responses of routes without limits are not touched at all.
    let stream = respond(
        &mut host,
        "200",
        &[("ratelimit-policy", "\"upstream\";q=5")],
    );
    assert_eq!(
        host.response_header(stream, "ratelimit-policy").as_deref(),
        Some("\"upstream\";q=5")
    );
}

#[test]
fn bad_configs_are_rejected_naming_the_field() {
    let cases: Vec<(String, &str)> = vec![
        ("{".to_string(), "not valid JSON"),
        ("".to_string(), "not valid JSON"),
        (config_with(r#""defaultClass""#, r#""surprise": 1, "defaultClass""#), "unknown field `surprise`"),
        (config_with(r#""trustedHops": 1"#, r#""trustedHops": 17"#), "clientIp.trustedHops: 17"),
        (config_with(r#""10.0.0.0/8""#, r#""10.0.0.1/8""#), "clientIp.trustedCidrs[0]"),
        (config_with(r#""ipv6PrefixLength": 64"#, r#""ipv6PrefixLength": 8"#), "clientIp.ipv6PrefixLength"),
        (
            config_with(r#""methods": ["DELETE"]"#, r#""methods": ["POST"]"#),
            "routeClasses[1]: unreachable, every request it matches is already matched by routeClasses[0]",
        ),
        (config_with(r#""weight": 10"#, r#""weight": 0"#), "routeClasses[2].weight"),
        (config_with(r#""x-rl-user""#, r#""authorization""#), "descriptorHeaders.user"),
        (config_with(r#""onMissingIdentity": "sharedBucket""#, r#""onMissingIdentity": "allow""#), "unknown variant `allow`"),
        (config_with(r#""svcgw.verified_subject""#, r#""request""#), "verifiedSubjectProperty"),
    ];
    for (config, want) in &cases {
        let host = Host::builder(artifact("ratelimit-tagger"))
            .plugin_config(config.as_str())
            .build()
            .unwrap();
        assert!(!host.configured(), "accepted: {config}");
        let rejected = host
            .logs()
            .into_iter()
            .find(|l| l.level == LogLevel::Error && l.message.contains("configuration rejected"))
            .unwrap_or_else(|| panic!("no error log for {want}: {:?}", host.logs()));
        assert!(
            rejected.message.contains(want),
            "{want}: {}",
            rejected.message
        );
        assert_eq!(host.counter(CONFIGS_REJECTED), Some(1));
        assert_ne!(host.gauge(INFO), Some(1), "{want}");
    }
}

#[test]
fn a_rejected_update_keeps_the_running_config() {
    let mut host = host();
    assert!(!host.reconfigure(r#"{"clientIp": {}}"#).unwrap());
    assert_eq!(
        tag(
            &mut host,
            &Request::new("POST", "/api/v1/trade/orders").xff("203.0.113.7")
        ),
        layout("203.0.113.7", None, "order", "1")
    );
}

#[test]
fn the_readme_429_body_is_the_shared_error_body() {
    let envoy_side = readme();
    let line = envoy_side
        .lines()
        .find(|l| l.trim_start().starts_with("inline_string:"))
        .expect("local reply mapper in README");
    let body = line
        .trim_start()
        .trim_start_matches("inline_string:")
        .trim()
        .trim_matches('\'');
    // gateway_core::error_body renders `{"error":<code>,"message":<text>}` with JSON string
    // escaping, in that key order and without spaces; re-render what the README says the
    // same way and require the exact bytes.
    let parsed: serde_json::Value = serde_json::from_str(body).expect("README body is JSON");
    let object = parsed.as_object().unwrap();
    assert_eq!(object.len(), 2, "{body}");
    assert_eq!(parsed["error"], "rate_limited");
    let message = parsed["message"].as_str().unwrap();
    let rendered = format!(
        r#"{{"error":"rate_limited","message":{}}}"#,
        serde_json::to_string(message).unwrap()
    );
    assert_eq!(body, rendered);
    assert!(
        !message.contains(['<', '>', '&']),
        "the renderer would escape these"
    );
}
