//! security-headers on the BUILT module (`dist/security-headers.wasm`, `make wasm`):
//! every response class gets the preset, leaking headers go, both modes, route
//! overrides, bad configs rejected with the field named, odd responses never trap.
//! Each test builds its own Host; they run in parallel.

// Test crate: the helpers fail the test on an unexpected error, like the `#[test]`
// functions themselves (where clippy already allows unwrap/expect).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proxy_wasm_sim::{artifact, Action, Host, LogLevel, StreamId};

// Stat names as the filter defines them (README "Metrics").
const RESPONSES_HARDENED: &str = "security_headers_responses_hardened_total";
const HEADERS_SET: &str = "security_headers_headers_set_total";
const HEADERS_REMOVED: &str = "security_headers_headers_removed_total";
const UPSTREAM_VALUES_KEPT: &str = "security_headers_upstream_values_kept_total";
const CONFIGS_REJECTED: &str = "security_headers_configs_rejected_total";
const INFO: &str = "security_headers_info";

/// The `api` preset as a client must see it.
const PRESET: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "permissions-policy",
        "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), \
         fullscreen=(), geolocation=(), gyroscope=(), hid=(), idle-detection=(), \
         magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), \
         publickey-credentials-get=(), screen-wake-lock=(), serial=(), sync-xhr=(), usb=(), \
         web-share=(), xr-spatial-tracking=()",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cache-control", "no-store"),
    ("x-permitted-cross-domain-policies", "none"),
];

/// What upstreams and Envoy leak and the preset strips.
const LEAKING: &[(&str, &str)] = &[
    ("server", "nginx/1.25.3"),
    ("x-powered-by", "Express"),
    ("x-aspnet-version", "4.0.30319"),
    ("x-aspnetmvc-version", "5.2"),
    ("x-envoy-upstream-service-time", "12"),
    ("x-envoy-attempt-count", "2"),
    ("x-envoy-external-address", "203.0.113.9"),
    ("x-envoy-internal", "true"),
    ("x-envoy-peer-metadata", "ChQKDkFQUF9DT05UQUlORVJT"),
    ("x-envoy-peer-metadata-id", "sidecar~10.0.0.1~svc-wallet"),
];

fn host(config: &str) -> Host {
    let host = Host::builder(artifact("security-headers"))
        .plugin_config(config)
        .build()
        .expect("security-headers starts");
    assert!(host.configured(), "config rejected: {:?}", host.logs());
    host
}

/// A counter as Envoy shows it once the filter's tick has flushed what it counted (the
/// filter counts per-request events in wasm memory and flushes them every second).
fn flushed(host: &mut Host, name: &str) -> Option<u64> {
    host.advance(Duration::from_secs(1)).unwrap();
    host.counter(name)
}

/// Runs one request/response through the filter; returns the stream to inspect.
fn exchange(host: &mut Host, path: &str, response: &[(&str, &str)]) -> StreamId {
    let stream = host.new_stream();
    let request = [
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example"),
    ];
    assert_eq!(
        host.request_headers(stream, &request, true).unwrap(),
        Action::Continue
    );
    assert_eq!(
        host.response_headers(stream, response, false).unwrap(),
        Action::Continue
    );
    assert_eq!(host.failed(), None);
    stream
}

fn assert_preset(host: &Host, stream: StreamId, context: &str) {
    for (name, value) in PRESET {
        assert_eq!(
            host.response_header_values(stream, name),
            vec![value.to_string()],
            "{context}: {name}"
        );
    }
}

fn assert_no_leaks(host: &Host, stream: StreamId, context: &str) {
    for (name, _) in LEAKING {
        assert_eq!(
            host.response_header(stream, name),
            None,
            "{context}: {name} leaked"
        );
    }
}

// ------------------------------------------------------------------- preset and removals

#[test]
fn every_preset_header_on_an_upstream_200() {
    let mut host = host("{}");
    let s = exchange(&mut host, "/api/v1/trade/orders", &[(":status", "200")]);
    assert_preset(&host, s, "200");
}

#[test]
fn empty_configuration_is_the_api_preset() {
    let mut host = host("");
    let s = exchange(&mut host, "/", &[(":status", "200")]);
    assert_preset(&host, s, "empty config");
}

#[test]
fn leaking_headers_are_removed_and_the_rest_is_untouched() {
    let mut host = host("{}");
    let mut response = vec![
        (":status", "200"),
        ("content-type", "application/json"),
        ("x-request-id", "4f1c"),
        ("set-cookie", "session=1; Secure; HttpOnly"),
    ];
    response.extend_from_slice(LEAKING);
    let s = exchange(&mut host, "/api/v1/wallet/balances", &response);
    assert_no_leaks(&host, s, "200");
    assert_eq!(host.response_header(s, ":status").as_deref(), Some("200"));
    assert_eq!(
        host.response_header(s, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        host.response_header(s, "x-request-id").as_deref(),
        Some("4f1c")
    );
    assert_eq!(
        host.response_header(s, "set-cookie").as_deref(),
        Some("session=1; Secure; HttpOnly")
    );
    assert_preset(&host, s, "200 with leaks");
    assert_eq!(
        flushed(&mut host, HEADERS_REMOVED),
        Some(LEAKING.len() as u64)
    );
}

#[test]
fn every_response_class_is_hardened() {
    // Upstream errors and Envoy's / later filters' local replies all pass through the
    // encoder chain, and security-headers is first in it, so it sees them all.
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "upstream 500",
            &[
                (":status", "500"),
                ("server", "gunicorn"),
                ("content-type", "text/html"),
            ],
        ),
        (
            "upstream 302",
            &[(":status", "302"), ("location", "/login")],
        ),
        (
            "jwt-authz 401",
            &[
                (":status", "401"),
                (
                    "www-authenticate",
                    "Bearer realm=\"api\", error=\"invalid_token\"",
                ),
                ("content-type", "application/json"),
            ],
        ),
        (
            "ratelimit 429",
            &[
                (":status", "429"),
                ("retry-after", "1"),
                ("x-envoy-ratelimited", "true"),
            ],
        ),
        (
            "envoy 404 no route",
            &[(":status", "404"), ("server", "istio-envoy")],
        ),
        (
            "envoy 503 upstream down",
            &[
                (":status", "503"),
                ("content-length", "19"),
                ("content-type", "text/plain"),
            ],
        ),
        (
            "envoy 504 timeout",
            &[
                (":status", "504"),
                ("x-envoy-upstream-service-time", "15000"),
            ],
        ),
    ];
    let mut host = host("{}");
    for (class, response) in cases {
        let s = exchange(&mut host, "/api/v1/risk/evaluate", response);
        assert_preset(&host, s, class);
        assert_no_leaks(&host, s, class);
        assert_eq!(
            host.response_header(s, "x-envoy-ratelimited"),
            None,
            "{class}"
        );
    }
    assert_eq!(
        flushed(&mut host, RESPONSES_HARDENED),
        Some(cases.len() as u64)
    );
}

#[test]
fn local_reply_for_a_request_the_filter_never_saw() {
    // Envoy can answer before this filter's request callback ran (e.g. a reply from the
    // HCM); the response still gets the top-level policy.
    let mut host = host(r#"{"routes":[{"pathPrefix":"/docs","omit":["x-frame-options"]}]}"#);
    let s = host.new_stream();
    host.response_headers(
        s,
        &[(":status", "400"), ("content-type", "text/plain")],
        true,
    )
    .unwrap();
    assert_eq!(host.failed(), None);
    assert_preset(&host, s, "400 without request");
}

#[test]
fn framing_headers_are_never_touched() {
    let mut host = host("{}");
    let s = exchange(
        &mut host,
        "/",
        &[
            (":status", "200"),
            ("content-length", "2"),
            ("content-encoding", "gzip"),
        ],
    );
    assert_eq!(
        host.response_header(s, "content-length").as_deref(),
        Some("2")
    );
    assert_eq!(
        host.response_header(s, "content-encoding").as_deref(),
        Some("gzip")
    );
}

// ------------------------------------------------------------------- modes

#[test]
fn if_absent_keeps_the_upstream_value_and_fills_the_gap() {
    let mut host = host("{}");
    let cached = exchange(
        &mut host,
        "/api/v1/public/markets",
        &[(":status", "200"), ("cache-control", "public, max-age=5")],
    );
    assert_eq!(
        host.response_header_values(cached, "cache-control"),
        vec!["public, max-age=5".to_string()]
    );
    let silent = exchange(&mut host, "/api/v1/wallet/balances", &[(":status", "200")]);
    assert_eq!(
        host.response_header(silent, "cache-control").as_deref(),
        Some("no-store")
    );
    assert_eq!(flushed(&mut host, UPSTREAM_VALUES_KEPT), Some(1));
}

#[test]
fn overwrite_replaces_every_upstream_value() {
    let mut host = host("{}");
    let s = exchange(
        &mut host,
        "/",
        &[
            (":status", "200"),
            ("x-frame-options", "ALLOWALL"),
            ("X-Frame-Options", "SAMEORIGIN"),
            ("content-security-policy", "default-src *"),
        ],
    );
    assert_eq!(
        host.response_header_values(s, "x-frame-options"),
        vec!["DENY".to_string()]
    );
    assert_eq!(
        host.response_header_values(s, "content-security-policy"),
        vec!["default-src 'none'; frame-ancestors 'none'".to_string()]
    );
}

#[test]
fn configured_modes_on_custom_headers() {
    let config = r#"{
        "preset": "none",
        "headers": [
            {"name": "x-a", "value": "ours", "mode": "ifAbsent"},
            {"name": "x-b", "value": "ours", "mode": "overwrite"},
            {"name": "x-c", "value": "ours"}
        ]
    }"#;
    let mut host = host(config);
    let s = exchange(
        &mut host,
        "/",
        &[
            (":status", "200"),
            ("x-a", "theirs"),
            ("x-b", "theirs"),
            ("server", "kept"),
        ],
    );
    assert_eq!(host.response_header(s, "x-a").as_deref(), Some("theirs"));
    assert_eq!(host.response_header(s, "x-b").as_deref(), Some("ours"));
    assert_eq!(host.response_header(s, "x-c").as_deref(), Some("ours"));
    // Preset `none` removes nothing and sets nothing of its own.
    assert_eq!(host.response_header(s, "server").as_deref(), Some("kept"));
    assert_eq!(host.response_header(s, "x-frame-options"), None);
    assert_eq!(flushed(&mut host, HEADERS_SET), Some(2));
    assert_eq!(flushed(&mut host, UPSTREAM_VALUES_KEPT), Some(1));
}

// ------------------------------------------------------------------- route overrides

const ROUTED: &str = r#"{
    "headers": [
        {"name": "strict-transport-security", "value": "max-age=63072000; includeSubDomains; preload"}
    ],
    "remove": ["x-internal-node"],
    "routes": [
        {
            "pathPrefix": "/api/v1/wallet",
            "headers": [{"name": "clear-site-data", "value": "\"cache\""}],
            "remove": ["x-wallet-shard"]
        },
        {
            "pathPrefix": "/api/v1/wallet/deposit-widget/",
            "omit": ["x-frame-options"],
            "headers": [
                {"name": "content-security-policy", "value": "default-src 'none'; frame-ancestors https://app.example"}
            ]
        },
        {"pathPrefix": "/debug", "keep": ["x-envoy-upstream-service-time"]}
    ]
}"#;

#[test]
fn top_level_overrides_apply_everywhere() {
    let mut host = host(ROUTED);
    let s = exchange(
        &mut host,
        "/api/v1/trade/orders",
        &[(":status", "200"), ("x-internal-node", "n1")],
    );
    assert_eq!(
        host.response_header(s, "strict-transport-security")
            .as_deref(),
        Some("max-age=63072000; includeSubDomains; preload")
    );
    assert_eq!(host.response_header(s, "x-internal-node"), None);
    assert_eq!(host.response_header(s, "clear-site-data"), None);
}

#[test]
fn the_longest_matching_prefix_wins() {
    let mut host = host(ROUTED);
    let upstream = [
        (":status", "200"),
        ("x-wallet-shard", "7"),
        ("x-internal-node", "n1"),
    ];

    let wallet = exchange(
        &mut host,
        "/api/v1/wallet/withdrawals?currency=BTC",
        &upstream,
    );
    assert_eq!(
        host.response_header(wallet, "clear-site-data").as_deref(),
        Some("\"cache\"")
    );
    assert_eq!(host.response_header(wallet, "x-wallet-shard"), None);
    assert_eq!(
        host.response_header(wallet, "x-internal-node"),
        None,
        "inherits top level"
    );
    assert_eq!(
        host.response_header(wallet, "x-frame-options").as_deref(),
        Some("DENY")
    );

    // The more specific route inherits the top level, not its shorter sibling.
    let widget = exchange(
        &mut host,
        "/api/v1/wallet/deposit-widget/frame.html",
        &upstream,
    );
    assert_eq!(host.response_header(widget, "x-frame-options"), None);
    assert_eq!(
        host.response_header(widget, "content-security-policy")
            .as_deref(),
        Some("default-src 'none'; frame-ancestors https://app.example")
    );
    assert_eq!(host.response_header(widget, "clear-site-data"), None);
    assert_eq!(
        host.response_header(widget, "x-wallet-shard").as_deref(),
        Some("7")
    );

    // Whole segments only, and the query never matches.
    for path in [
        "/api/v1/wallets",
        "/api/v1/trade?next=/api/v1/wallet",
        "/API/v1/wallet",
    ] {
        let s = exchange(&mut host, path, &upstream);
        assert_eq!(host.response_header(s, "clear-site-data"), None, "{path}");
        assert_eq!(
            host.response_header(s, "x-wallet-shard").as_deref(),
            Some("7"),
            "{path}"
        );
    }
}

#[test]
fn a_route_can_keep_a_removed_header() {
    let mut host = host(ROUTED);
    let upstream = [
        (":status", "200"),
        ("x-envoy-upstream-service-time", "3"),
        ("server", "envoy"),
    ];
    let debug = exchange(&mut host, "/debug/timing", &upstream);
    assert_eq!(
        host.response_header(debug, "x-envoy-upstream-service-time")
            .as_deref(),
        Some("3")
    );
    assert_eq!(host.response_header(debug, "server"), None);
    let other = exchange(&mut host, "/api/v1/risk", &upstream);
    assert_eq!(
        host.response_header(other, "x-envoy-upstream-service-time"),
        None
    );
}

// ------------------------------------------------------------------- odd traffic

#[test]
fn non_utf8_header_values_do_not_trap() {
    let mut host = host(ROUTED);
    let s = host.new_stream();
    host.request_headers_bytes(
        s,
        vec![
            (":method".into(), b"GET".to_vec()),
            (":path".into(), b"/api/v1/wallet/\xff\xfe?q=\x80".to_vec()),
            ("x-client".into(), b"\xc3\x28".to_vec()),
        ],
        true,
    )
    .unwrap();
    host.response_headers_bytes(
        s,
        vec![
            (":status".into(), b"200".to_vec()),
            ("server".into(), b"caf\xe9".to_vec()),
            ("x-upstream-note".into(), b"\xff\x00\xfe".to_vec()),
            ("cache-control".into(), b"\xa0no-cache".to_vec()),
        ],
        false,
    )
    .unwrap();
    assert_eq!(host.failed(), None);
    assert_eq!(host.response_header_bytes(s, "server"), None);
    assert_eq!(
        host.response_header_bytes(s, "x-upstream-note"),
        Some(b"\xff\x00\xfe".to_vec())
    );
    assert_eq!(
        host.response_header_bytes(s, "cache-control"),
        Some(b"\xa0no-cache".to_vec())
    );
    assert_eq!(
        host.response_header(s, "clear-site-data").as_deref(),
        Some("\"cache\"")
    );
}

#[test]
fn a_huge_header_map_does_not_trap() {
    let mut host = host("{}");
    let names: Vec<String> = (0..500).map(|i| format!("x-upstream-{i}")).collect();
    let value = "v".repeat(64);
    let mut response: Vec<(&str, &str)> = vec![(":status", "200"), ("server", "nginx")];
    response.extend(names.iter().map(|n| (n.as_str(), value.as_str())));
    let s = exchange(&mut host, "/", &response);
    assert_preset(&host, s, "500 headers");
    assert_eq!(host.response_header(s, "server"), None);
    assert_eq!(
        host.response_header(s, "x-upstream-499").as_deref(),
        Some(value.as_str())
    );
    assert_eq!(host.response_headers_of(s).len(), 1 + 500 + PRESET.len());
}

#[test]
fn a_response_without_any_header_does_not_trap() {
    let mut host = host("{}");
    let s = host.new_stream();
    host.request_headers(s, &[(":method", "GET"), (":path", "/")], true)
        .unwrap();
    host.response_headers(s, &[], true).unwrap();
    assert_eq!(host.failed(), None);
    assert_preset(&host, s, "empty response map");
}

#[test]
fn a_request_without_path_does_not_trap() {
    let mut host = host(ROUTED);
    let s = host.new_stream();
    host.request_headers(s, &[(":method", "CONNECT"), (":authority", "x:443")], true)
        .unwrap();
    host.response_headers(s, &[(":status", "200")], false)
        .unwrap();
    assert_eq!(host.failed(), None);
    assert_preset_except_hsts(&host, s);
}

fn assert_preset_except_hsts(host: &Host, stream: StreamId) {
    for (name, value) in PRESET
        .iter()
        .filter(|(n, _)| *n != "strict-transport-security")
    {
        assert_eq!(
            host.response_header(stream, name).as_deref(),
            Some(*value),
            "{name}"
        );
    }
}

// ------------------------------------------------------------------- observability

#[test]
fn start_and_configure_are_logged_with_version_and_config_hash() {
    let host = host("{}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(host.has_log(
        LogLevel::Info,
        &format!("security-headers {version}: vm started")
    ));
    // sha256("{}") = 44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
    assert!(
        host.has_log(
            LogLevel::Info,
            &format!(
                "security-headers {version}: configured, config sha256:44136fa355b3678a \
                 (preset api, 10 headers set, 21 headers removed, 0 route overrides)"
            )
        ),
        "{:?}",
        host.logs()
    );
    assert_eq!(host.gauge(INFO), Some(1));
    assert_eq!(host.counter(CONFIGS_REJECTED), Some(0));
}

#[test]
fn counters_follow_what_was_done() {
    let mut host = host("{}");
    exchange(
        &mut host,
        "/",
        &[(":status", "200"), ("server", "a"), ("x-powered-by", "b")],
    );
    exchange(
        &mut host,
        "/",
        &[(":status", "200"), ("cache-control", "no-cache")],
    );
    assert_eq!(flushed(&mut host, RESPONSES_HARDENED), Some(2));
    assert_eq!(flushed(&mut host, HEADERS_REMOVED), Some(2));
    assert_eq!(flushed(&mut host, HEADERS_SET), Some(10 + 9));
    assert_eq!(flushed(&mut host, UPSTREAM_VALUES_KEPT), Some(1));
}

/// Per-request counts stay in wasm memory until the root's tick (every second) hands them
/// to Envoy in one host call per counter: nothing shows before, everything after, and a
/// second tick adds nothing twice.
#[test]
fn counters_reach_envoy_on_the_tick_once() {
    let mut host = host("{}");
    exchange(&mut host, "/", &[(":status", "200"), ("server", "a")]);
    exchange(&mut host, "/", &[(":status", "200")]);
    assert_eq!(host.tick_period(), Some(Duration::from_secs(1)));
    assert_eq!(host.counter(RESPONSES_HARDENED), Some(0));
    host.advance(Duration::from_millis(999)).unwrap();
    assert_eq!(host.counter(RESPONSES_HARDENED), Some(0));
    host.advance(Duration::from_millis(1)).unwrap();
    assert_eq!(host.counter(RESPONSES_HARDENED), Some(2));
    assert_eq!(host.counter(HEADERS_REMOVED), Some(1));
    host.advance(Duration::from_secs(5)).unwrap();
    assert_eq!(host.counter(RESPONSES_HARDENED), Some(2));
    assert_eq!(host.counter(HEADERS_SET), Some(20));
}

/// A response costs two host calls, a read and a write of the whole map. If Envoy refuses
/// either (it cannot during response headers, but a filter must not trust that), the
/// response goes on exactly as the upstream sent it, the VM keeps running, a warning is
/// logged, and nothing is counted as hardened.
#[test]
fn a_refused_map_read_or_write_leaves_the_response_alone() {
    const BAD_ARGUMENT: u32 = 2;
    let upstream = [(":status", "200"), ("server", "nginx"), ("x-a", "1")];
    for call in ["proxy_get_header_map_pairs", "proxy_set_header_map_pairs"] {
        let mut host = host("{}");
        host.fail_host_call(call, BAD_ARGUMENT, 1);
        let s = exchange(&mut host, "/", &upstream);
        assert_eq!(
            host.response_header(s, "server").as_deref(),
            Some("nginx"),
            "{call}"
        );
        assert_eq!(
            host.response_header(s, "x-content-type-options"),
            None,
            "{call}"
        );
        assert!(host.has_log(LogLevel::Warn, "response headers"), "{call}");
        assert_eq!(flushed(&mut host, RESPONSES_HARDENED), Some(0), "{call}");
        // The next response is hardened as usual.
        let next = exchange(&mut host, "/", &upstream);
        assert_preset(&host, next, call);
        assert_eq!(flushed(&mut host, RESPONSES_HARDENED), Some(1), "{call}");
    }
}

// ------------------------------------------------------------------- bad configuration

#[test]
fn bad_configs_are_rejected_naming_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("bad JSON", r#"{"preset": "api""#, "invalid JSON"),
        (
            "bad JSON in a route",
            r#"{"routes": [{"pathPrefix": "/a",}]}"#,
            "routes[0]: invalid JSON",
        ),
        ("not an object", "[]", "(top level): expected an object"),
        (
            "unknown key",
            r#"{"preset": "api", "hsts": true}"#,
            "hsts: unknown field",
        ),
        (
            "unknown key in a header",
            r#"{"headers": [{"name": "x-a", "value": "1", "mdoe": "ifAbsent"}]}"#,
            "headers[0].mdoe: unknown field",
        ),
        (
            "duplicate key",
            r#"{"preset": "none", "preset": "api"}"#,
            "preset: field given twice",
        ),
        (
            "unknown preset",
            r#"{"preset": "strict"}"#,
            "preset: unknown value",
        ),
        (
            "invalid header name",
            r#"{"headers": [{"name": "x frame", "value": "DENY"}]}"#,
            "headers[0].name: header name has a character not allowed",
        ),
        (
            "pseudo-header",
            r#"{"headers": [{"name": ":status", "value": "200"}]}"#,
            "headers[0].name",
        ),
        (
            "CR/LF in a value",
            r#"{"routes": [{"pathPrefix": "/a", "headers": [{"name": "x-a", "value": "1\r\nset-cookie: x=1"}]}]}"#,
            "routes[0].headers[0].value: header value has a control byte 0x0d",
        ),
        (
            "NUL in a value",
            r#"{"headers": [{"name": "x-a", "value": "a\u0000b"}]}"#,
            "headers[0].value: header value has a control byte 0x00",
        ),
        (
            "non-ASCII value",
            r#"{"headers": [{"name": "x-a", "value": "caf\u00e9"}]}"#,
            "headers[0].value: header value has a non-ASCII byte",
        ),
        (
            "empty value",
            r#"{"headers": [{"name": "x-a", "value": ""}]}"#,
            "headers[0].value: header value is empty",
        ),
        (
            "duplicate names",
            r#"{"headers": [{"name": "x-a", "value": "1"}, {"name": "X-A", "value": "2"}]}"#,
            "headers[1].name: `x-a` is listed twice",
        ),
        (
            "relative prefix",
            r#"{"routes": [{"pathPrefix": "api/"}]}"#,
            "routes[0].pathPrefix: path prefix must start with '/'",
        ),
        (
            "framing header",
            r#"{"remove": ["content-length"]}"#,
            "remove[0]: `content-length` frames the message",
        ),
        (
            "omit typo",
            r#"{"omit": ["x-frame-option"]}"#,
            "omit[0]: `x-frame-option` is not set",
        ),
        (
            "wrong type",
            r#"{"remove": "server"}"#,
            "remove: expected an array, found a string",
        ),
    ];
    for (what, config, expected) in cases {
        let host = Host::builder(artifact("security-headers"))
            .plugin_config(*config)
            .build()
            .expect("the VM starts even when the config is bad");
        assert!(!host.configured(), "{what}: accepted");
        assert_eq!(host.failed(), None, "{what}");
        assert!(
            host.has_log(LogLevel::Error, "configuration rejected, config sha256:"),
            "{what}: {:?}",
            host.logs()
        );
        assert!(
            host.has_log(LogLevel::Error, expected),
            "{what}: {:?}",
            host.logs()
        );
        assert_eq!(host.counter(CONFIGS_REJECTED), Some(1), "{what}");
        assert_ne!(
            host.gauge(INFO),
            Some(1),
            "{what}: info gauge set by a rejected config"
        );
    }
}

#[test]
fn a_config_that_is_not_utf8_is_rejected() {
    let host = Host::builder(artifact("security-headers"))
        .plugin_config(b"{\"preset\": \"\xff\"}".to_vec())
        .build()
        .unwrap();
    assert!(!host.configured());
    assert_eq!(host.failed(), None);
    assert!(
        host.has_log(LogLevel::Error, "preset: invalid JSON"),
        "{:?}",
        host.logs()
    );
}

#[test]
fn a_rejected_update_keeps_the_previous_policy() {
    let mut host = host(r#"{"headers": [{"name": "x-policy", "value": "v1"}]}"#);
    let rejected = host
        .reconfigure(r#"{"headers": [{"name": "x-policy", "value": "v2\n"}]}"#)
        .unwrap();
    assert!(!rejected);
    assert!(host.has_log(LogLevel::Error, "headers[0].value"));
    let s = exchange(&mut host, "/", &[(":status", "200")]);
    assert_eq!(host.response_header(s, "x-policy").as_deref(), Some("v1"));
    assert_eq!(host.gauge(INFO), Some(1));

    assert!(host
        .reconfigure(r#"{"headers": [{"name": "x-policy", "value": "v3"}]}"#)
        .unwrap());
    let s = exchange(&mut host, "/", &[(":status", "200")]);
    assert_eq!(host.response_header(s, "x-policy").as_deref(), Some("v3"));
}

// ------------------------------------------------------------------- the README is true

fn readme() -> String {
    let path = proxy_wasm_sim::workspace_root().join("filters/security-headers/README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_readme_sample_config_is_accepted_and_does_what_it_says() {
    let readme = readme();
    let (_, after) = readme
        .split_once("```json\n")
        .expect("README has a json block");
    let (sample, _) = after.split_once("```").expect("json block ends");
    let mut host = host(sample);

    let trade = exchange(
        &mut host,
        "/api/v1/trade/orders",
        &[
            (":status", "200"),
            ("server", "nginx"),
            ("x-served-by", "node-3"),
        ],
    );
    assert_eq!(host.response_header(trade, "server"), None);
    assert_eq!(host.response_header(trade, "x-served-by"), None);
    assert_eq!(
        host.response_header(trade, "strict-transport-security")
            .as_deref(),
        Some("max-age=63072000; includeSubDomains")
    );

    let wallet = exchange(
        &mut host,
        "/api/v1/wallet/balances",
        &[(":status", "200"), ("cache-control", "max-age=60")],
    );
    assert_eq!(
        host.response_header(wallet, "cache-control").as_deref(),
        Some("no-store")
    );

    let widget = exchange(
        &mut host,
        "/api/v1/wallet/deposit-widget/index.html",
        &[(":status", "200")],
    );
    assert_eq!(host.response_header(widget, "x-frame-options"), None);
    assert_eq!(
        host.response_header(widget, "content-security-policy")
            .as_deref(),
        Some("default-src 'none'; frame-ancestors https://app.example.com")
    );
}

#[test]
fn the_readme_log_lines_are_the_real_ones() {
    let readme = readme();
    let version = env!("CARGO_PKG_VERSION");
    let good = host("{}");
    let bad = Host::builder(artifact("security-headers"))
        .plugin_config(
            r#"{"routes":[{"pathPrefix":"/a","headers":[{"name":"x-a","value":"1\r\n"}]}]}"#,
        )
        .build()
        .unwrap();
    let mut checked = 0;
    for host in [&good, &bad] {
        for entry in host.logs().iter().filter(|e| e.message.starts_with('#')) {
            let documented = entry.message.replace(version, "0.1.0");
            assert!(
                readme.contains(&documented),
                "README lacks log line {documented:?}"
            );
            checked += 1;
        }
    }
    // vm started twice, configured, rejected.
    assert_eq!(checked, 4, "{:?} {:?}", good.logs(), bad.logs());
    assert!(bad.has_log(LogLevel::Error, "configuration rejected"));
}
