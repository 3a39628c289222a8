//! The ratelimit-tagger suite: bare, the tagger alone, and the full global rate-limit path
//! two ways with the same limits: tagger + `local_ratelimit` backstop + `ratelimit` filter
//! (the README's Envoy side) against rls-peer, and Envoy's native `remote_address` /
//! `generic_key` / `request_headers` route actions (no wasm) + the same backstop and filter
//! against a second rls-peer.
//!
//! Both peers load the shipped `ratelimit-service.yaml` with every `requests_per_unit`
//! raised to 10^9 (nothing may trigger: the bench measures the path, not 429s); the native
//! one with `client_ip` renamed `remote_address` (the key Envoy's action writes). The peers
//! run in this process, on wrk's CPU (see `Layout`). Every
//! request carries `X-Forwarded-For: 203.0.113.7`: the tagger (one trusted hop, 127.0.0.0/8)
//! and Envoy (`use_remote_address: false`, no trusted hops: the right-most entry) both key
//! it as that address; the checks before the load confirm it from what the peers received.

use std::sync::Arc;

use envoy_harness::config::WasmFilter;
use envoy_harness::{paths, Error, Result};
use rls_peer::RlsPeer;
use serde_json::{json, Value};

use super::{Comparison, Layout, Load, Marker, Scenario, Suite};

const CLIENT_IP: &str = "203.0.113.7";
/// The class the bench request (`GET /api/v1/trade/orders`) falls into.
const CLASS: &str = "account_read";
const TAGGER_CLUSTER: &str = "rls_tagger";
const NATIVE_CLUSTER: &str = "rls_native";

/// The tagger's sample configuration (README), the loopback as its trusted proxy.
fn tagger_config() -> Value {
    json!({
        "clientIp": {
            "trustedHops": 1,
            "trustedCidrs": ["127.0.0.0/8"],
            "ipv4PrefixLength": 32,
            "ipv6PrefixLength": 64
        },
        "routeClasses": route_classes(),
        "defaultClass": { "class": "public", "weight": 1 },
        "onMissingIdentity": "sharedBucket",
        "descriptorHeaders": {
            "clientIp": "x-rl-client-ip",
            "user": "x-rl-user",
            "class": "x-rl-class",
            "weight": "x-rl-weight"
        },
        "verifiedSubjectProperty": "svcgw.verified_subject"
    })
}

fn route_classes() -> Value {
    json!([
        { "methods": ["POST"], "pathPrefix": "/api/v1/trade/orders", "class": "order", "weight": 1 },
        { "methods": ["DELETE"], "pathPrefix": "/api/v1/trade/orders", "class": "order_cancel", "weight": 1 },
        { "methods": ["POST"], "pathPrefix": "/api/v1/wallet/withdrawals", "class": "withdrawal", "weight": 10 },
        { "methods": ["GET", "HEAD"], "pathPrefix": "/api/v1/trade/", "class": "account_read", "weight": 1 },
        { "methods": ["GET", "HEAD"], "pathPrefix": "/api/v1/wallet/", "class": "account_read", "weight": 1 },
        { "methods": ["GET", "HEAD"], "pathPrefix": "/api/v1/risk/", "class": "account_read", "weight": 1 }
    ])
}

/// The README's backstop, its bucket raised so it never bites at bench rates.
fn backstop() -> Value {
    json!({
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "svcgw_backstop",
            "token_bucket": { "max_tokens": 1_000_000_000u32, "tokens_per_fill": 1_000_000_000u32, "fill_interval": "1s" },
            "filter_enabled": {
                "runtime_key": "svcgw_backstop_enabled",
                "default_value": { "numerator": 100, "denominator": "HUNDRED" }
            },
            "filter_enforced": {
                "runtime_key": "svcgw_backstop_enforced",
                "default_value": { "numerator": 100, "denominator": "HUNDRED" }
            },
            "response_headers_to_add": [{
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                "header": { "key": "retry-after", "value": "1" }
            }]
        }
    })
}

/// The README's `ratelimit` filter; `rate_limits` only for the tagger (the native scenario
/// puts its actions on the routes). The instruction counts raise its 50 ms timeouts
/// (`bench/instructions.rs`), matching them textually: keep them written as here.
fn ratelimit_filter(cluster: &str, rate_limits: Option<Value>) -> Value {
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": "svc-gateway",
        "timeout": "0.05s",
        "failure_mode_deny": false,
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        "disable_x_envoy_ratelimited_header": true,
        "rate_limited_as_resource_exhausted": false,
        "rate_limit_service": {
            "transport_api_version": "V3",
            "grpc_service": { "envoy_grpc": { "cluster_name": cluster }, "timeout": "0.05s" }
        }
    });
    if let (Some(rate_limits), Some(object)) = (rate_limits, config.as_object_mut()) {
        object.insert("rate_limits".to_owned(), rate_limits);
    }
    json!({ "name": "envoy.filters.http.ratelimit", "typed_config": config })
}

/// The README's descriptor actions over the tagger's headers.
fn tagger_rate_limits() -> Value {
    let addend = json!({ "format": "%REQ(x-rl-weight)%" });
    json!([
        { "actions": [
            { "request_headers": { "header_name": "x-rl-client-ip", "descriptor_key": "client_ip" } }
          ], "hits_addend": addend },
        { "actions": [
            { "request_headers": { "header_name": "x-rl-class", "descriptor_key": "class" } },
            { "request_headers": { "header_name": "x-rl-client-ip", "descriptor_key": "client_ip" } }
          ], "hits_addend": addend },
        { "actions": [
            { "request_headers": { "header_name": "x-rl-class", "descriptor_key": "class" } },
            { "request_headers": { "header_name": "x-rl-user", "descriptor_key": "user" } }
          ], "hits_addend": addend }
    ])
}

/// The same three descriptors without wasm: the address from Envoy's `remote_address`, the
/// class as a `generic_key` of the route (one route per class rule, the tagger's table
/// turned into route matches), the user from a header a `jwt_authn` `claim_to_headers`
/// would write (absent here, as for the tagger: the bench is anonymous). Route-level
/// `hits_addend` is not sent by Envoy 1.39.3 (tagger README), so no weights: every class
/// the bench touches weighs 1.
fn native_routes() -> Value {
    let route = |matcher: Value, class: &str| {
        json!({
            "match": matcher,
            "route": {
                "cluster": "backend",
                "rate_limits": [
                    { "actions": [{ "remote_address": {} }] },
                    { "actions": [
                        { "generic_key": { "descriptor_key": "class", "descriptor_value": class } },
                        { "remote_address": {} }
                    ] },
                    { "actions": [
                        { "generic_key": { "descriptor_key": "class", "descriptor_value": class } },
                        { "request_headers": { "header_name": "x-jwt-sub", "descriptor_key": "user" } }
                    ] }
                ]
            }
        })
    };
    let mut routes: Vec<Value> = route_classes()
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            let methods: Vec<&str> = rule["methods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let matcher = json!({
                "prefix": rule["pathPrefix"],
                "headers": [{
                    "name": ":method",
                    "string_match": { "safe_regex": { "regex": methods.join("|") } }
                }]
            });
            route(matcher, rule["class"].as_str().unwrap_or("public"))
        })
        .collect();
    routes.push(route(json!({ "prefix": "/" }), "public"));
    Value::Array(routes)
}

/// The shipped service config with every limit at 10^9, `client_ip` optionally renamed.
fn service_yaml(key: &str) -> Result<String> {
    let path = paths::repo_root().join("filters/ratelimit-tagger/envoy/ratelimit-service.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(|error| Error::new(format!("reading {}: {error}", path.display())))?;
    Ok(text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            if trimmed.starts_with("requests_per_unit:") {
                format!("{indent}requests_per_unit: 1000000000")
            } else if trimmed.starts_with('#') {
                String::new()
            } else {
                line.replace("key: client_ip", &format!("key: {key}"))
            }
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

fn peer(key: &str, layout: Layout) -> Result<Arc<RlsPeer>> {
    let config = rls_peer::parse_yaml(&service_yaml(key)?)
        .map_err(|error| Error::new(format!("rls-peer config: {error}")))?;
    // Where wrk runs: Envoy's CPU in the shared layout, the other one in the split layout.
    let peer = super::on_load_cpu(layout, || RlsPeer::start(config, 0))
        .map_err(|error| Error::new(format!("rls-peer: {error}")))?;
    Ok(Arc::new(peer))
}

/// A gRPC (HTTP/2) cluster to a peer, as the README's `ratelimit` cluster.
fn cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} }
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": { "socket_address": {
                "address": "127.0.0.1", "port_value": port } } } }] }]
        }
    })
}

fn rls_counters() -> Vec<(&'static str, String)> {
    vec![
        ("rls_ok", "cluster.backend.ratelimit.ok".to_owned()),
        ("rls_error", "cluster.backend.ratelimit.error".to_owned()),
        (
            "rls_over_limit",
            "cluster.backend.ratelimit.over_limit".to_owned(),
        ),
        (
            "rls_failure_mode_allowed",
            "cluster.backend.ratelimit.failure_mode_allowed".to_owned(),
        ),
    ]
}

pub fn suite(layout: Layout) -> Result<Suite> {
    let tagger_peer = peer("client_ip", layout)?;
    let native_peer = peer("remote_address", layout)?;
    let tagger = WasmFilter::from_dist("ratelimit-tagger", tagger_config().to_string())?
        .root_id("ratelimit-tagger")
        .to_value();
    let strip: Vec<(&'static str, Value)> = vec![(
        "request_headers_to_remove",
        json!(["x-rl-client-ip", "x-rl-user", "x-rl-class", "x-rl-weight"]),
    )];
    let xff = Load::Fixed(vec![("x-forwarded-for".to_owned(), CLIENT_IP.to_owned())]);
    let with = |scenario: Scenario| Scenario {
        load: xff.clone(),
        ..scenario
    };
    let scenarios = vec![
        with(Scenario {
            marker: Marker::Absent("ratelimit-policy"),
            ..Scenario::new("bare", Vec::new())
        }),
        with(Scenario {
            marker: Marker::StatIncreases("ratelimit_tagger_descriptors_emitted_total"),
            route_config: strip.clone(),
            ..Scenario::new("tagger", vec![tagger.clone()])
        }),
        with(Scenario {
            marker: Marker::Present("ratelimit-policy"),
            route_config: strip,
            counters: rls_counters(),
            ..Scenario::new(
                "tagger+ratelimit",
                vec![
                    tagger,
                    backstop(),
                    ratelimit_filter(TAGGER_CLUSTER, Some(tagger_rate_limits())),
                ],
            )
        }),
        with(Scenario {
            marker: Marker::Present("x-ratelimit-limit"),
            routes: Some(native_routes()),
            counters: rls_counters(),
            ..Scenario::new(
                "native+ratelimit",
                vec![backstop(), ratelimit_filter(NATIVE_CLUSTER, None)],
            )
        }),
    ];

    let check_peers = (Arc::clone(&tagger_peer), Arc::clone(&native_peer));
    let clear_peers = (Arc::clone(&tagger_peer), Arc::clone(&native_peer));
    Ok(Suite {
        scenarios,
        comparisons: vec![
            Comparison {
                scenario: "tagger",
                baseline: "bare",
                min_ratio: Some(0.93),
            },
            Comparison {
                scenario: "tagger+ratelimit",
                baseline: "native+ratelimit",
                min_ratio: None,
            },
            Comparison {
                scenario: "native+ratelimit",
                baseline: "bare",
                min_ratio: None,
            },
            Comparison {
                scenario: "tagger+ratelimit",
                baseline: "bare",
                min_ratio: None,
            },
        ],
        default_rounds: 6,
        clusters: vec![
            cluster(TAGGER_CLUSTER, tagger_peer.port()),
            cluster(NATIVE_CLUSTER, native_peer.port()),
        ],
        check: Some(Box::new(move || {
            let (tagger, native) = &check_peers;
            expect_descriptors(tagger, "client_ip")?;
            expect_descriptors(native, "remote_address")?;
            tagger.clear_received();
            native.clear_received();
            Ok(())
        })),
        between_runs: Some(Box::new(move || {
            clear_peers.0.clear_received();
            clear_peers.1.clear_received();
        })),
        ..Suite::new("ratelimit-tagger")
    })
}

/// The check request reached the peer with `[key]` and `[class, key]` for the bench client.
fn expect_descriptors(peer: &RlsPeer, key: &str) -> Result<()> {
    let received = peer.received();
    let expected = vec![
        vec![(key.to_owned(), CLIENT_IP.to_owned())],
        vec![
            ("class".to_owned(), CLASS.to_owned()),
            (key.to_owned(), CLIENT_IP.to_owned()),
        ],
    ];
    match received.last() {
        Some(call) if call.descriptors == expected => Ok(()),
        other => Err(Error::new(format!(
            "rls-peer ({key}) did not receive the expected descriptors {expected:?}: {other:?}"
        ))),
    }
}
