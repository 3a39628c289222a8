//! `dist/ratelimit-tagger.wasm` in real Envoy with the peer as its rate-limit service, the
//! Envoy configuration taken from the tagger's README (HTTP filters, virtual host, local
//! reply mapper, rate-limit service cluster) and the service config the manifests ship.
//!
//! Needs `make wasm envoy` (dist/ratelimit-tagger.wasm and build/bin/envoy).

// A failed unwrap in a helper is a failed test, with the same message a test would print.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use envoy_harness::client::{self, Response};
use envoy_harness::config;
use envoy_harness::{paths, wait_until, EnvoyProcess, MockUpstream};
use rls_peer::{Behaviour, ReceivedRequest, RlsPeer};

/// A Unix time at the start of an hour: the peer's windows cannot roll over mid-test.
const HOUR_START: u64 = 1_767_225_600;

fn readme() -> String {
    std::fs::read_to_string(paths::repo_root().join("filters/ratelimit-tagger/README.md")).unwrap()
}

/// The fenced blocks of the README with this info string, in order.
fn blocks(readme: &str, info: &str) -> Vec<String> {
    let fence = format!("```{info}\n");
    readme
        .split(&fence)
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_string())
        .collect()
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|line| {
            if line.trim().is_empty() {
                String::new()
            } else {
                format!("{}{line}", " ".repeat(by))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The README's Envoy side as a bootstrap template. Local changes only: the tagger trusts
/// the loopback client as its one proxy hop (the ALB's place), the `.wasm` comes from
/// `dist/`, the rate-limit service is the peer, and `edit` may shrink a number.
fn bootstrap(edit: &[(&str, &str)]) -> String {
    let readme = readme();
    let json = &blocks(&readme, "json")[0];
    let yaml = blocks(&readme, "yaml");
    let (filters, vhost, local_reply, rls_cluster) = (&yaml[0], &yaml[1], &yaml[2], &yaml[3]);
    let tagger_config = json.replace("10.0.0.0/8", "127.0.0.0/8");
    let wasm = paths::dist_wasm("ratelimit-tagger").unwrap();
    let mut filters = filters
        .replace(
            "/etc/istio/extensions/ratelimit-tagger.wasm",
            &wasm.display().to_string(),
        )
        .replace(
            "          { ... the JSON above ... }",
            &indent(&tagger_config, 10),
        );
    for (from, to) in edit {
        assert!(filters.contains(from), "test bug: `{from}`");
        filters = filters.replace(from, to);
    }
    let vhost = vhost.replace(
        "    routes: [ ... ]",
        "    routes:\n      - match: { prefix: / }\n        route: { cluster: upstream }",
    );
    let rls_cluster = rls_cluster.replace(
        "address: ratelimit.gateway.svc.cluster.local, port_value: 8081",
        "address: 127.0.0.1, port_value: {{var:RLS_PORT}}",
    );
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{port:admin}}}} }} }}
static_resources:
  listeners:
  - name: edge
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{port:edge}}}} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
{local_reply}
          route_config:
{vhost}
          http_filters:
{filters}
          - {router}
  clusters:
  - {{{{var:UPSTREAM}}}}
{rls_cluster}
"#,
        local_reply = indent(local_reply, 10),
        vhost = indent(&vhost, 12),
        filters = indent(&filters, 10),
        router = config::inline(&config::router()),
        rls_cluster = indent(&rls_cluster, 2),
    )
}

struct Gateway {
    // Field order is drop order: Envoy goes before its peers.
    envoy: EnvoyProcess,
    upstream: MockUpstream,
    peer: RlsPeer,
}

fn gateway(edit: &[(&str, &str)]) -> Gateway {
    gateway_with(edit, None)
}

/// `jwt_authz`: the JSON configuration of a jwt-authz filter to put in front of the tagger
/// (DESIGN.md §3 order), so the verified subject reaches it through filter state.
fn gateway_with(edit: &[(&str, &str)], jwt_authz: Option<&str>) -> Gateway {
    let peer = RlsPeer::from_yaml_file(
        paths::repo_root().join("filters/ratelimit-tagger/envoy/ratelimit-service.yaml"),
    )
    .unwrap();
    peer.set_now(Some(HOUR_START));
    let upstream = MockUpstream::start("svc").unwrap();
    let mut template = bootstrap(edit);
    if let Some(jwt_authz) = jwt_authz {
        let filter = config::WasmFilter::from_dist("jwt-authz", jwt_authz).unwrap();
        template = template.replacen(
            "          http_filters:\n",
            &format!(
                "          http_filters:\n          - {}\n",
                config::inline(&filter.to_value())
            ),
            1,
        );
    }
    let envoy = EnvoyProcess::builder(template)
        .var("RLS_PORT", peer.port())
        .var(
            "UPSTREAM",
            config::inline(&config::loopback_cluster("upstream", upstream.port())),
        )
        .start()
        .unwrap();
    Gateway {
        envoy,
        upstream,
        peer,
    }
}

impl Gateway {
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        client::request(self.envoy.port("edge").unwrap(), method, path, headers).unwrap()
    }
}

fn entries(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn json_error(response: &Response) -> (String, String) {
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    (
        body["error"].as_str().unwrap().to_string(),
        body["message"].as_str().unwrap().to_string(),
    )
}

#[test]
fn envoy_sends_the_descriptors_and_weight_the_tagger_decided() {
    let gw = gateway(&[]);
    // A spoofed left-most entry and client-sent descriptor headers change nothing.
    let response = gw.send(
        "GET",
        "/api/v1/market/ticker",
        &[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-rl-user", "admin"),
            ("x-rl-class", "withdrawal"),
            ("x-rl-weight", "0"),
        ],
    );
    assert_eq!(response.status, 200, "{}", response.body_text());
    let withdrawal = gw.send(
        "POST",
        "/api/v1/wallet/withdrawals",
        &[("x-forwarded-for", "2001:db8:1:2::99")],
    );
    assert_eq!(withdrawal.status, 200);

    assert_eq!(
        gw.peer.received(),
        vec![
            ReceivedRequest {
                domain: "svc-gateway".into(),
                descriptors: vec![
                    entries(&[("client_ip", "203.0.113.7")]),
                    entries(&[("class", "public"), ("client_ip", "203.0.113.7")]),
                ],
                hits_addend: 0,
                descriptor_hits_addends: vec![Some(1), Some(1)],
            },
            // Anonymous (no verified subject): no user descriptor; the weight is 10.
            ReceivedRequest {
                domain: "svc-gateway".into(),
                descriptors: vec![
                    entries(&[("client_ip", "2001:db8:1:2::/64")]),
                    entries(&[("class", "withdrawal"), ("client_ip", "2001:db8:1:2::/64")]),
                ],
                hits_addend: 0,
                descriptor_hits_addends: vec![Some(10), Some(10)],
            },
        ]
    );
    // Nothing internal reaches the upstream.
    for request in gw.upstream.received() {
        for name in ["x-rl-client-ip", "x-rl-user", "x-rl-class", "x-rl-weight"] {
            assert_eq!(request.header(name), None, "{name} on {}", request.path);
        }
    }
    // Successful responses of limited routes carry the draft-09 fields, not draft-03.
    assert_eq!(
        response.header("ratelimit-policy"),
        Some(r#""ip";q=1200;w=60, "public-ip";q=20;w=1"#)
    );
    assert_eq!(
        response.header("ratelimit"),
        Some(r#""public-ip";r=19;t=1"#)
    );
    assert_eq!(response.header("x-ratelimit-limit"), None);
    assert_eq!(
        flushed_stat(
            &gw.envoy,
            "ratelimit_tagger_spoofed_headers_stripped_total",
            3
        ),
        Some(3)
    );
}

/// A tagger counter once it reached `expected` (the filter hands its per-request counts to
/// Envoy from its tick, once a second), or what it is after five seconds.
fn flushed_stat(envoy: &EnvoyProcess, name: &str, expected: u64) -> Option<u64> {
    let stat = format!("wasmcustom.{name}");
    let _ = wait_until(&stat, Duration::from_secs(5), || {
        Ok(envoy.stat(&stat)? == Some(expected))
    });
    envoy.stat(&stat).unwrap()
}

#[test]
fn over_the_limit_answers_429_with_retry_after_draft_09_and_the_json_body() {
    let gw = gateway(&[]);
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    // public-ip: 20 per second per address.
    for n in 1..=20 {
        let response = gw.send("GET", "/api/v1/market/ticker", &from("203.0.113.7"));
        assert_eq!(response.status, 200, "request {n}");
    }
    let limited = gw.send("GET", "/api/v1/market/ticker", &from("203.0.113.7"));
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("content-type"), Some("application/json"));
    assert_eq!(json_error(&limited).0, "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some(r#""ip";q=1200;w=60, "public-ip";q=20;w=1"#)
    );
    assert_eq!(limited.header("ratelimit"), Some(r#""public-ip";r=0;t=1"#));
    for gone in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-envoy-ratelimited",
    ] {
        assert_eq!(limited.header(gone), None, "{gone}");
    }
    // Per address: another client is not affected.
    assert_eq!(
        gw.send("GET", "/api/v1/market/ticker", &from("203.0.113.8"))
            .status,
        200
    );
    // Weighted: 20 withdrawals of weight 10 fill an address's 200-per-hour bucket.
    for n in 1..=20 {
        let response = gw.send("POST", "/api/v1/wallet/withdrawals", &from("198.51.100.4"));
        assert_eq!(response.status, 200, "withdrawal {n}");
    }
    let limited = gw.send("POST", "/api/v1/wallet/withdrawals", &from("198.51.100.4"));
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("3600"));
    assert_eq!(
        flushed_stat(
            &gw.envoy,
            "ratelimit_tagger_rate_limited_responses_total",
            2
        ),
        Some(2)
    );
}

/// A local backstop of five tokens a minute, so a test can reach it.
const BACKSTOP_FIVE_A_MINUTE: (&str, &str) = (
    "token_bucket: { max_tokens: 2000, tokens_per_fill: 2000, fill_interval: 1s }",
    "token_bucket: { max_tokens: 5, tokens_per_fill: 5, fill_interval: 60s }",
);

/// A public-class read from one client address.
fn ticker(envoy: &EnvoyProcess) -> Response {
    client::request(
        envoy.port("edge").unwrap(),
        "GET",
        "/api/v1/market/ticker",
        &[("x-forwarded-for", "203.0.113.7")],
    )
    .unwrap()
}

#[test]
fn a_failing_or_slow_service_lets_traffic_through_and_the_backstop_holds() {
    let gw = gateway(&[BACKSTOP_FIVE_A_MINUTE]);
    gw.peer.set_behaviour(Behaviour::Unavailable);
    for _ in 0..2 {
        assert_eq!(ticker(&gw.envoy).status, 200);
    }
    // Slower than the filter's 50 ms timeout: answered without waiting for the service.
    gw.peer
        .set_behaviour(Behaviour::Delay(Duration::from_millis(800)));
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(ticker(&gw.envoy).status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "{:?}",
            started.elapsed()
        );
    }
    // The service was asked each time (and failed or was too late).
    assert_eq!(gw.peer.received().len(), 5);
    // The sixth request in the minute meets the backstop: 429, Retry-After, the JSON body.
    let limited = ticker(&gw.envoy);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(json_error(&limited).0, "rate_limited");
    assert_eq!(
        gw.envoy
            .stat("cluster.upstream.ratelimit.failure_mode_allowed")
            .unwrap(),
        Some(5)
    );
}

#[test]
fn a_stopped_service_lets_traffic_through_and_the_backstop_holds() {
    let Gateway {
        envoy,
        upstream: _upstream,
        peer,
    } = gateway(&[BACKSTOP_FIVE_A_MINUTE]);
    // Up: asked, and Envoy now holds a gRPC connection to it.
    assert_eq!(ticker(&envoy).status, 200);
    assert_eq!(peer.received().len(), 1);
    // The service process goes away: its connection closes and new ones are refused.
    drop(peer);
    for n in 0..4 {
        let started = Instant::now();
        let response = ticker(&envoy);
        assert_eq!(
            response.status,
            200,
            "request {n}: {}",
            response.body_text()
        );
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "request {n}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        envoy
            .stat("cluster.upstream.ratelimit.failure_mode_allowed")
            .unwrap(),
        Some(4)
    );
    // The local backstop (five a minute) still caps the client.
    let limited = ticker(&envoy);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(json_error(&limited).0, "rate_limited");
}

/// The service config file the manifests ship is the one the peer loads.
#[test]
fn the_shipped_service_config_is_the_peers() {
    let path: PathBuf =
        paths::repo_root().join("filters/ratelimit-tagger/envoy/ratelimit-service.yaml");
    let peer = RlsPeer::from_yaml_file(&path).unwrap();
    assert_eq!(peer.domain(), "svc-gateway");
}

/// The HMAC secret of the test issuer (base64url of 32 bytes 0x2a).
const SECRET: [u8; 32] = [0x2a; 32];
const ISSUER: &str = "https://auth.test.example";

fn jwt_authz_config() -> String {
    format!(
        r#"{{
  "issuers": [{{ "issuer": "{ISSUER}", "algorithms": ["HS256"], "sharedSecret": "{}" }}],
  "rules": [
    {{"name": "public", "pathPrefix": "/api/v1/market", "anonymous": true}},
    {{"name": "trade-write", "pathPrefix": "/api/v1/trade",
      "audiencesAnyOf": ["svc-trading-api"], "scopesAllOf": ["trade:write"]}}
  ]
}}"#,
        base64url(&SECRET)
    )
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// HMAC-SHA256 (RFC 2104) over the 64-byte SHA-256 block.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A token jwt-authz accepts for order placement, for `sub`.
fn token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": sub, "aud": "svc-trading-api", "scope": "trade:write",
        "iat": now, "exp": now + 600,
    });
    let payload = base64url(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let signature = base64url(&hmac_sha256(&SECRET, signing_input.as_bytes()));
    format!("Bearer {signing_input}.{signature}")
}

#[test]
fn per_user_limits_are_independent_of_ip_and_per_ip_limits_of_user() {
    let gw = gateway_with(&[], Some(&jwt_authz_config()));
    let order = |sub: &str, ip: &str| {
        let bearer = token(sub);
        gw.send(
            "POST",
            "/api/v1/trade/orders",
            &[("authorization", bearer.as_str()), ("x-forwarded-for", ip)],
        )
    };
    // The subject jwt-authz verified is the user; a claimed one is not.
    let first = order("alice", "198.51.100.1");
    assert_eq!(first.status, 200, "{}", first.body_text());
    let received = gw.peer.received();
    assert_eq!(
        received[0].descriptors,
        vec![
            entries(&[("client_ip", "198.51.100.1")]),
            entries(&[("class", "order"), ("client_ip", "198.51.100.1")]),
            entries(&[("class", "order"), ("user", "alice")]),
        ]
    );
    assert_eq!(received[0].descriptor_hits_addends, vec![Some(1); 3]);

    // order: 10 per second per user, from however many addresses.
    for n in 2..=10 {
        let ip = format!("198.51.100.{n}");
        assert_eq!(order("alice", &ip).status, 200, "order {n}");
    }
    let limited = order("alice", "198.51.100.11");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("ratelimit"), Some(r#""order";r=0;t=1"#));
    assert_eq!(json_error(&limited).0, "rate_limited");
    // Another user from an address alice used is not affected.
    assert_eq!(order("bob", "198.51.100.1").status, 200);

    // order-ip: 50 per second per address, however many users: fifty pass, the 51st not.
    for n in 0..50 {
        let user = format!("user-{n}");
        assert_eq!(order(&user, "203.0.113.50").status, 200, "user {n}");
    }
    let farm = order("erin", "203.0.113.50");
    assert_eq!(farm.status, 429);
    assert_eq!(farm.header("ratelimit"), Some(r#""order-ip";r=0;t=1"#));
}

/// A token jwt-authz has not verified never names the user: on an anonymous route it is not
/// looked at and the request is keyed by IP; on an authenticated route it is refused before
/// the rate-limit service is asked.
#[test]
fn an_unverified_token_is_keyed_by_ip_never_by_its_claimed_user() {
    let gw = gateway_with(&[], Some(&jwt_authz_config()));
    let genuine = token("mallory");
    // Same claims, signature from another secret.
    let (signing_input, _) = genuine
        .trim_start_matches("Bearer ")
        .rsplit_once('.')
        .unwrap();
    let forged = format!(
        "Bearer {signing_input}.{}",
        base64url(&hmac_sha256(&[0x13; 32], signing_input.as_bytes()))
    );
    let ticker = gw.send(
        "GET",
        "/api/v1/market/ticker",
        &[
            ("authorization", forged.as_str()),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    );
    assert_eq!(ticker.status, 200, "{}", ticker.body_text());
    let order = gw.send(
        "POST",
        "/api/v1/trade/orders",
        &[
            ("authorization", forged.as_str()),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    );
    assert_eq!(order.status, 401);
    assert_eq!(json_error(&order).0, "invalid_token");
    assert_eq!(
        gw.peer.received(),
        vec![ReceivedRequest {
            domain: "svc-gateway".into(),
            descriptors: vec![
                entries(&[("client_ip", "203.0.113.9")]),
                entries(&[("class", "public"), ("client_ip", "203.0.113.9")]),
            ],
            hits_addend: 0,
            descriptor_hits_addends: vec![Some(1), Some(1)],
        }]
    );
}
