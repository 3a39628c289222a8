//! `dist/security-headers.wasm` in real Envoy, checked on the wire as a client sees it.
//!
//! The filter sits first in the chain (DESIGN.md §3), so its response callback also runs
//! for the local replies of everything after it: the router's 404 (no route) and 503
//! (upstream down), the fault filter's abort and `local_ratelimit`'s 429.
//!
//! Every test starts its own Envoy on its own ports, so they run in parallel.

// A failed unwrap in a helper is a failed test, with the same message a test would print.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use envoy_harness::client::{self, Response};
use envoy_harness::config::{self, WasmFilter};
use envoy_harness::{wait_until, ClosedPort, EnvoyBuilder, EnvoyProcess, MockUpstream};
use sha2::{Digest, Sha256};

const FILTER: &str = "security-headers";
/// The filter is built from this workspace, whose crates share one version.
const FILTER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the `api` preset sets, as a client must see it: exactly one value each.
const API_PRESET: &[(&str, &str)] = &[
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
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-permitted-cross-domain-policies", "none"),
];
/// Headers that name software or reveal the proxy's internals.
const LEAKING: &[&str] = &["server", "x-powered-by", "x-envoy-upstream-service-time"];

/// The HTTP connection manager every test uses. Routes:
/// - `/api/...`: the mock upstream;
/// - `/down/...`: a cluster whose port refuses connections (Envoy's own 503);
/// - `/limited/...`: the mock, behind a `local_ratelimit` bucket of one token (429);
/// - anything else: no route (Envoy's own 404).
///
/// `server_header_transformation: PASS_THROUGH`: by default the connection manager writes
/// `server: envoy` into every response *after* the last filter ran, where no filter can
/// remove it (see `envoy_writes_its_own_server_header_after_every_filter`).
const EDGE_HCM: &str = r#"
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          server_header_transformation: {{var:SERVER_HEADER}}
          route_config:
            virtual_hosts:
            - name: edge
              domains: ["*"]
              routes:
              - match: {prefix: "/api/"}
                route: {cluster: upstream}
              - match: {prefix: "/down/"}
                route: {cluster: closed}
              - match: {prefix: "/limited/"}
                route: {cluster: upstream}
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit: {{var:DENY_ALL}}
          http_filters: {{var:FILTERS}}
"#;

const CLUSTERS: &str = r#"
  - {{var:UPSTREAM}}
  - name: closed
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: closed
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{var:CLOSED_PORT}}}}}
"#;

/// Templates share the connection manager and clusters: `@EDGE_HCM@` and `@CLUSTERS@`
/// are pasted in before the harness fills in the `{{...}}` placeholders.
fn template(skeleton: &str) -> String {
    skeleton
        .replace("@EDGE_HCM@", EDGE_HCM)
        .replace("@CLUSTERS@", CLUSTERS)
}

const STATIC_BOOTSTRAP: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: {{port:admin}}}}
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: {{port:edge}}}}
    filter_chains:
    - filters:@EDGE_HCM@
  clusters:@CLUSTERS@"#;

/// Bootstrap for the config-update test: the listener comes from `{{dir}}/lds.yaml`, which
/// Envoy re-reads whenever a new file is renamed into the watched directory.
const DYNAMIC_BOOTSTRAP: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: {{port:admin}}}}
node: {id: envoy-harness, cluster: envoy-harness}
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source:
      path: "{{dir}}/lds.yaml"
      watched_directory: {path: "{{dir}}"}
static_resources:
  clusters:@CLUSTERS@"#;

const LDS_FILE: &str = r#"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: edge
  address: {socket_address: {address: 127.0.0.1, port_value: {{port:edge}}}}
  filter_chains:
  - filters:@EDGE_HCM@"#;

/// The LDS file with the given filter chain.
fn lds_file(filters: &str) -> String {
    template(LDS_FILE).replace("{{var:FILTERS}}", filters)
}

/// security-headers first, then two filters that answer locally, then the router.
fn filter_chain(security_headers: &WasmFilter) -> String {
    chain_after(vec![security_headers.to_value()])
}

/// `first`, then two filters that answer locally, then the router.
fn chain_after(mut first: Vec<serde_json::Value>) -> String {
    first.extend([
        config::fault_abort_on_request_header(),
        config::local_ratelimit("backstop"),
        config::router(),
    ]);
    config::inline_list(&first)
}

fn security_headers(configuration_json: &str) -> WasmFilter {
    WasmFilter::from_dist(FILTER, configuration_json).unwrap()
}

/// What the edge routes to: the mock behind `/api/` and `/limited/`, the refusing port
/// behind `/down/`.
struct Upstreams {
    mock: MockUpstream,
    closed: ClosedPort,
}

impl Upstreams {
    fn start(name: &str) -> Self {
        Self {
            mock: MockUpstream::start(name).unwrap(),
            closed: ClosedPort::reserve().unwrap(),
        }
    }

    /// Envoy from `skeleton` (see [`template`]) with every var of the connection manager
    /// and the clusters filled in except `FILTERS`.
    fn envoy(&self, skeleton: &str) -> EnvoyBuilder {
        let upstream = config::loopback_cluster("upstream", self.mock.port());
        EnvoyProcess::builder(template(skeleton))
            .var("SERVER_HEADER", "PASS_THROUGH")
            .var("UPSTREAM", config::inline(&upstream))
            .var("CLOSED_PORT", self.closed.port())
            .var(
                "DENY_ALL",
                config::inline(&config::local_ratelimit_route_deny_all("backstop")),
            )
    }
}

struct Edge {
    // Field order is drop order: Envoy stops before its upstreams do.
    envoy: EnvoyProcess,
    upstreams: Upstreams,
}

impl Edge {
    fn start(configuration_json: &str) -> Self {
        Self::start_with(
            &filter_chain(&security_headers(configuration_json)),
            "PASS_THROUGH",
        )
    }

    fn start_with(filters: &str, server_header: &str) -> Self {
        let upstreams = Upstreams::start("svc-trading-api");
        let envoy = upstreams
            .envoy(STATIC_BOOTSTRAP)
            .var("FILTERS", filters)
            .var("SERVER_HEADER", server_header)
            .start()
            .unwrap();
        Self { envoy, upstreams }
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        client::get_with(self.envoy.port("edge").unwrap(), path, headers).unwrap()
    }
}

/// How the filter names a configuration in its log: `sha256:` and the first 16 hex digits
/// of `sha256sum` over the JSON exactly as Envoy hands it over.
fn config_hash(configuration: &str) -> String {
    let digest = Sha256::digest(configuration.as_bytes());
    let hex: String = digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Every preset header exactly once with its value, `cache-control` exactly once, and
/// nothing that leaks.
fn assert_hardened(response: &Response, what: &str, cache_control: &str) {
    for (name, value) in API_PRESET {
        let values: Vec<&str> = response.headers_named(name).collect();
        assert_eq!(
            values,
            [*value],
            "{what}: {name} in {:#?}",
            response.headers
        );
    }
    let permissions: Vec<&str> = response.headers_named("permissions-policy").collect();
    assert!(
        permissions.len() == 1 && permissions[0].contains("camera=()"),
        "{what}: permissions-policy in {:#?}",
        response.headers
    );
    let caching: Vec<&str> = response.headers_named("cache-control").collect();
    assert_eq!(
        caching,
        [cache_control],
        "{what}: cache-control in {:#?}",
        response.headers
    );
    for name in LEAKING {
        assert_eq!(
            response.header(name),
            None,
            "{what}: {name} leaked in {:#?}",
            response.headers
        );
    }
}

#[test]
fn upstream_responses_are_hardened_whatever_their_status() {
    let edge = Edge::start(r#"{"preset":"api"}"#);

    let ok = edge.get("/api/v1/trade/orders", &[]);
    assert_eq!(ok.status, 200);
    assert!(
        ok.body_text().contains("svc-trading-api"),
        "{}",
        ok.body_text()
    );
    assert_hardened(&ok, "upstream 200", "no-store");

    let failed = edge.get("/api/v1/trade/orders", &[("x-mock-status", "500")]);
    assert_eq!(failed.status, 500);
    assert_hardened(&failed, "upstream 500", "no-store");

    // The upstream knows which of its answers are cacheable: its own value is kept.
    let cacheable = edge.get(
        "/api/v1/trade/markets",
        &[("x-mock-cache-control", "max-age=60")],
    );
    assert_eq!(cacheable.status, 200);
    assert_hardened(&cacheable, "upstream 200 with cache-control", "max-age=60");

    assert_eq!(
        edge.upstreams
            .mock
            .request_count("GET", "/api/v1/trade/orders"),
        2
    );
}

/// A trap in the module would, with FAIL_CLOSED, turn this and every later response into
/// a 503; odd upstream answers must be hardened like any other.
/// The configuration layers as a client sees them: a top-level override and removal, a
/// route that overwrites an upstream value, and a longer route that omits, keeps and
/// replaces (routes do not stack; prefixes match whole segments).
#[test]
fn overrides_removals_and_routes_on_the_wire() {
    let edge = Edge::start(
        r#"{
  "preset": "api",
  "headers": [{"name": "strict-transport-security", "value": "max-age=63072000; includeSubDomains"}],
  "remove": ["x-extra-0"],
  "routes": [
    {"pathPrefix": "/api/v1/wallet",
     "headers": [{"name": "cache-control", "value": "no-store", "mode": "overwrite"}]},
    {"pathPrefix": "/api/v1/wallet/deposit-widget/", "omit": ["x-frame-options"],
     "keep": ["x-powered-by"],
     "headers": [{"name": "content-security-policy",
                  "value": "default-src 'none'; frame-ancestors https://app.example.com"}]}
  ]
}"#,
    );
    let upstream_sends = [
        ("x-mock-cache-control", "max-age=60"),
        ("x-mock-extra-headers", "2"),
    ];
    let get = |path: &str| {
        let response = edge.get(path, &upstream_sends);
        assert_eq!(response.status, 200, "{path}");
        response
    };
    let values = |response: &Response, name: &str| -> Vec<String> {
        response.headers_named(name).map(str::to_owned).collect()
    };
    for path in [
        "/api/v1/trade/orders",
        "/api/v1/wallet/balances",
        "/api/v1/wallet/deposit-widget/frame",
        "/api/v1/wallets/x",
    ] {
        let response = get(path);
        assert_eq!(
            values(&response, "strict-transport-security"),
            ["max-age=63072000; includeSubDomains"],
            "{path}"
        );
        assert_eq!(response.header("x-extra-0"), None, "{path}: removed");
        assert!(response.header("x-extra-1").is_some(), "{path}: untouched");
        assert_eq!(response.header("server"), None, "{path}");
    }
    // Top level: the upstream's own cache policy is kept (ifAbsent).
    let trade = get("/api/v1/trade/orders");
    assert_eq!(values(&trade, "cache-control"), ["max-age=60"]);
    assert_eq!(values(&trade, "x-frame-options"), ["DENY"]);
    assert_eq!(trade.header("x-powered-by"), None);
    // The wallet route overwrites it: one value, ours.
    let wallet = get("/api/v1/wallet/balances");
    assert_eq!(values(&wallet, "cache-control"), ["no-store"]);
    // The longer route wins alone: no wallet overwrite, its own CSP, no frame options, the
    // kept preset removal.
    let widget = get("/api/v1/wallet/deposit-widget/frame");
    assert_eq!(values(&widget, "cache-control"), ["max-age=60"]);
    assert_eq!(widget.header("x-frame-options"), None);
    assert_eq!(
        values(&widget, "content-security-policy"),
        ["default-src 'none'; frame-ancestors https://app.example.com"]
    );
    assert_eq!(widget.header("x-powered-by"), Some("PHP/8"));
    // `/api/v1/wallets` is not below `/api/v1/wallet`.
    let wallets = get("/api/v1/wallets/x");
    assert_eq!(values(&wallets, "cache-control"), ["max-age=60"]);
}

#[test]
fn odd_upstream_responses_do_not_trap_the_vm() {
    let edge = Edge::start(r#"{"preset":"api"}"#);

    let latin1 = edge.get("/api/v1/trade/orders", &[("x-mock-non-utf8", "1")]);
    assert_eq!(latin1.status, 200);
    assert_hardened(&latin1, "non-UTF-8 header value", "no-store");
    assert_eq!(
        latin1.header("x-latin1"),
        Some("caf\u{fffd}"),
        "passed through untouched"
    );

    // 80 x 500 bytes: within Envoy's default limits (100 headers, 60 KiB), far beyond a
    // normal response.
    let huge = edge.get("/api/v1/trade/orders", &[("x-mock-extra-headers", "80")]);
    assert_eq!(huge.status, 200);
    assert_hardened(&huge, "huge header map", "no-store");
    assert_eq!(huge.headers_named("x-extra-79").count(), 1);

    let after = edge.get("/api/v1/trade/orders", &[]);
    assert_eq!(after.status, 200, "the VM is still alive");
    assert_hardened(&after, "after odd responses", "no-store");
}

#[test]
fn envoys_own_404_and_503_are_hardened() {
    let edge = Edge::start(r#"{"preset":"api"}"#);

    let no_route = edge.get("/nowhere", &[]);
    assert_eq!(no_route.status, 404);
    assert_hardened(&no_route, "no-route 404", "no-store");

    let upstream_down = edge.get("/down/v1/orders", &[]);
    assert_eq!(upstream_down.status, 503, "{}", upstream_down.body_text());
    assert_hardened(&upstream_down, "upstream-down 503", "no-store");

    assert_eq!(edge.upstreams.mock.total_requests(), 0);
}

#[test]
fn local_replies_of_later_filters_are_hardened() {
    let edge = Edge::start(r#"{"preset":"api"}"#);

    let aborted = edge.get(
        "/api/v1/wallet/withdrawals",
        &[("x-envoy-fault-abort-request", "403")],
    );
    assert_eq!(aborted.status, 403, "fault filter abort");
    assert_hardened(&aborted, "fault-filter 403", "no-store");

    // The bucket holds one token: the first request passes, the second is Envoy's 429.
    let first = edge.get("/limited/orders", &[]);
    assert_eq!(first.status, 200);
    let limited = edge.get("/limited/orders", &[]);
    assert_eq!(limited.status, 429, "local_ratelimit");
    assert_hardened(&limited, "local_ratelimit 429", "no-store");

    // Neither local reply reached the upstream.
    assert_eq!(
        edge.upstreams
            .mock
            .request_count("GET", "/api/v1/wallet/withdrawals"),
        0
    );
    assert_eq!(
        edge.upstreams.mock.request_count("GET", "/limited/orders"),
        1
    );
}

#[test]
fn vm_start_is_logged_with_version_and_config_hash_and_the_info_metric_is_exported() {
    let configuration = r#"{"preset":"api"}"#;
    let edge = Edge::start(configuration);
    edge.get("/api/v1/risk/limits", &[]);

    let log = edge.envoy.log();
    let started = format!("{FILTER} {FILTER_VERSION}: vm started");
    let configured = format!(
        "{FILTER} {FILTER_VERSION}: configured, config {} (preset api,",
        config_hash(configuration)
    );
    assert!(log.contains(&started), "no {started:?} in the log");
    assert!(log.contains(&configured), "no {configured:?} in the log");

    let stats = edge
        .envoy
        .admin_get("/stats?filter=security_headers")
        .unwrap();
    assert_eq!(
        edge.envoy.stat("wasmcustom.security_headers_info").unwrap(),
        Some(1),
        "{stats}"
    );
    // Per-request counters reach Envoy from the filter's tick, within a second.
    wait_until(
        "the hardened-responses counter to count the request",
        Duration::from_secs(5),
        || {
            Ok(edge
                .envoy
                .stat("wasmcustom.security_headers_responses_hardened_total")?
                .is_some_and(|count| count >= 1))
        },
    )
    .unwrap_or_else(|error| panic!("{error}: {stats}"));
    // Prometheus scrapes the same numbers without the `wasmcustom.` namespace.
    let prometheus = edge.envoy.admin_get("/stats/prometheus").unwrap();
    let info = prometheus
        .lines()
        .find(|line| line.starts_with("security_headers_info"));
    assert!(
        info.is_some_and(|line| line.ends_with(" 1")),
        "{info:?} in {prometheus}"
    );
}

#[test]
fn a_bad_config_at_start_up_stops_envoy_from_starting() {
    let upstreams = Upstreams::start("svc-trading-api");
    let error = upstreams
        .envoy(STATIC_BOOTSTRAP)
        .var(
            "FILTERS",
            filter_chain(&security_headers(r#"{"preset":"api","hsts":true}"#)),
        )
        .start()
        .err()
        .expect("Envoy must not start with a configuration the filter rejects");
    let message = error.to_string();
    assert!(message.contains("configuration rejected"), "{message}");
    assert!(
        message.contains("hsts"),
        "the log line must name the field: {message}"
    );
}

/// Envoy keeps serving the last good configuration when the filter rejects a new one: a
/// file-based LDS pushes a valid update (applied), then three bad ones (each refused).
#[test]
fn a_bad_config_update_is_rejected_and_the_previous_config_keeps_serving() {
    const FIRST: &str = r#"{"preset":"api"}"#;
    const SECOND: &str =
        r#"{"preset":"api","headers":[{"name":"x-frame-options","value":"SAMEORIGIN"}]}"#;
    let bad: [(&str, &str, &str); 6] = [
        (
            "bad JSON",
            r#"{"preset":"api","headers":["#,
            "EOF while parsing",
        ),
        (
            "unknown key",
            r#"{"preset":"api","frameOptions":"DENY"}"#,
            "frameOptions",
        ),
        (
            "CR/LF in a value",
            r#"{"preset":"api","headers":[{"name":"x-frame-options","value":"DENY\r\nx-injected: 1"}]}"#,
            "headers[0].value",
        ),
        (
            "invalid header name",
            r#"{"preset":"api","headers":[{"name":"x frame","value":"DENY"}]}"#,
            "headers[0].name: header name has a character not allowed",
        ),
        (
            "NUL in a value",
            r#"{"preset":"api","headers":[{"name":"x-frame-options","value":"DE\u0000NY"}]}"#,
            "headers[0].value: header value has a control byte 0x00",
        ),
        (
            "non-ASCII value",
            r#"{"preset":"api","headers":[{"name":"x-frame-options","value":"D\u00c9NY"}]}"#,
            "headers[0].value: header value has a non-ASCII byte",
        ),
    ];

    let upstreams = Upstreams::start("svc-wallet");
    let envoy = upstreams
        .envoy(DYNAMIC_BOOTSTRAP)
        .file(
            "lds.yaml",
            lds_file(&filter_chain(&security_headers(FIRST))),
        )
        .start()
        .unwrap();
    let edge = envoy.port("edge").unwrap();
    let frame_options = || {
        let response = client::get(edge, "/api/v1/wallet/balances")?;
        Ok::<_, envoy_harness::Error>((
            response.status,
            response.header("x-frame-options").map(str::to_owned),
        ))
    };
    assert_eq!(frame_options().unwrap(), (200, Some("DENY".to_owned())));
    let push = |configuration: &str| {
        let lds = envoy
            .render(&lds_file(&filter_chain(&security_headers(configuration))))
            .unwrap();
        envoy.write_file("lds.yaml", &lds).unwrap();
    };
    let stat = |name: &str| envoy.stat(name).unwrap().unwrap_or(0);

    // A valid update is applied: the file watch and the in-place listener update work.
    let successes = stat("listener_manager.lds.update_success");
    push(SECOND);
    wait_until(
        "the second config to serve",
        Duration::from_secs(10),
        || Ok(frame_options()? == (200, Some("SAMEORIGIN".to_owned()))),
    )
    .unwrap();
    assert_eq!(stat("listener_manager.lds.update_success"), successes + 1);

    for (what, configuration, named_in_log) in bad {
        let rejected = stat("listener_manager.lds.update_rejected");
        push(configuration);
        wait_until(
            &format!("Envoy to reject the {what} update"),
            Duration::from_secs(10),
            || Ok(stat("listener_manager.lds.update_rejected") > rejected),
        )
        .unwrap();

        let rejection = format!(
            "{FILTER} {FILTER_VERSION}: configuration rejected, config {}",
            config_hash(configuration)
        );
        let log = envoy.log();
        let line = log.lines().find(|line| line.contains(&rejection));
        let line = line.unwrap_or_else(|| panic!("{what}: no {rejection:?} in the log"));
        assert!(
            line.contains(named_in_log),
            "{what}: {named_in_log:?} not in {line:?}"
        );
        assert_eq!(
            frame_options().unwrap(),
            (200, Some("SAMEORIGIN".to_owned())),
            "{what}: the previous config must keep serving"
        );
    }
    assert_eq!(stat("listener_manager.lds.update_success"), successes + 1);
    assert!(upstreams.mock.total_requests() >= 5);
}

/// Why the connection manager above says PASS_THROUGH: with Envoy's default (OVERWRITE)
/// it writes `server: envoy` after every filter has run, so no filter can remove it. The
/// gateway's manifests must set PASS_THROUGH for the same reason; this test fails if a
/// later Envoy changes that behaviour and the setting becomes unnecessary.
#[test]
fn envoy_writes_its_own_server_header_after_every_filter() {
    let edge = Edge::start_with(&filter_chain(&security_headers("{}")), "OVERWRITE");
    let response = edge.get("/api/v1/trade/orders", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers_named("server").collect::<Vec<_>>(),
        ["envoy"]
    );
    assert_eq!(
        response.header("x-powered-by"),
        None,
        "other removals still work"
    );
}

/// The control for every test above: the same edge without the filter leaks what the
/// tests prove absent and lacks what they prove present, so their assertions are not
/// vacuous.
#[test]
fn without_the_filter_the_same_edge_leaks() {
    let edge = Edge::start_with(&chain_after(Vec::new()), "PASS_THROUGH");
    let ok = edge.get("/api/v1/trade/orders", &[]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("server"), Some("nginx/1.25"));
    assert_eq!(ok.header("x-powered-by"), Some("PHP/8"));
    assert!(
        ok.header("x-envoy-upstream-service-time").is_some(),
        "{:#?}",
        ok.headers
    );
    for (name, _) in API_PRESET {
        assert_eq!(ok.header(name), None, "{name} without the filter");
    }
    for response in [edge.get("/nowhere", &[]), edge.get("/down/x", &[])] {
        assert!(response.status == 404 || response.status == 503);
        assert_eq!(response.header("x-content-type-options"), None);
    }
}
