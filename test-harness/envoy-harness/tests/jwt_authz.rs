//! `dist/jwt-authz.wasm` in real Envoy 1.39 with a JWKS server on loopback (inside this test,
//! so its key set can change and it can go down while Envoy runs): valid tokens per route,
//! every rejection class on the wire, key rotation without a restart, a JWKS outage, Envoy's
//! `verify_signature` foreign function, and that a failed VM denies instead of passing.
//!
//! Every test starts its own Envoy and JWKS server on their own ports; they run in parallel.

// A failed unwrap in a helper is a failed test, with the same message a test would print.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use envoy_harness::client::{self, Response};
use envoy_harness::config::{self, WasmFilter};
use envoy_harness::paths;
use envoy_harness::{wait_until, EnvoyProcess, MockUpstream};
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

const ISSUER: &str = "https://idp.exchange.test";
const TRADE: &str = "/api/v1/trade/orders";
const WALLET: &str = "/api/v1/wallet/balances";

const BOOTSTRAP: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: {{port:admin}}}}
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: {{port:edge}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          # What ratelimit-tagger will read: the filter-state object jwt-authz wrote.
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: "{{dir}}/access.log"
              log_format:
                text_format_source:
                  inline_string: "%REQ(:PATH)% subject=%FILTER_STATE(wasm.svcgw.verified_subject:PLAIN)%\n"
          route_config:
            virtual_hosts:
            - name: edge
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream}
          http_filters: {{var:FILTERS}}
  clusters:
  - {{var:UPSTREAM}}
  - {{var:JWKS}}
"#;

struct Keys {
    rsa: RS256KeyPair,
    ec: ES256KeyPair,
    ec_rotated: ES256KeyPair,
    ec_later: ES256KeyPair,
    ed: Ed25519KeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-1"),
        ec: ES256KeyPair::generate().with_key_id("ec-1"),
        ec_rotated: ES256KeyPair::generate().with_key_id("ec-2"),
        ec_later: ES256KeyPair::generate().with_key_id("ec-3"),
        ed: Ed25519KeyPair::generate().with_key_id("ed-1"),
    })
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn ec_jwk(key: &ES256KeyPair) -> Value {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
        "kid": key.key_id().clone().unwrap(), "x": b64(&point[1..33]), "y": b64(&point[33..])})
}

fn rsa_jwk(key: &RS256KeyPair) -> Value {
    let components = key.public_key().to_components();
    json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": key.key_id().clone().unwrap(),
        "n": b64(&components.n), "e": b64(&components.e)})
}

fn ed_jwk(key: &Ed25519KeyPair) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": key.key_id().clone().unwrap(),
        "x": b64(&key.public_key().to_bytes())})
}

fn jwks(keys: &[Value]) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

// ------------------------------------------------------------------ JWKS server

/// A JWKS endpoint on 127.0.0.1: HTTP/1.1, one response per connection. "Down" means every
/// connection is closed before a response (Envoy: reset before headers).
#[derive(Clone)]
struct JwksServer {
    port: u16,
    document: Arc<Mutex<Vec<u8>>>,
    up: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
}

impl JwksServer {
    fn start(document: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Self {
            port: listener.local_addr().unwrap().port(),
            document: Arc::new(Mutex::new(document)),
            up: Arc::new(AtomicBool::new(true)),
            served: Arc::new(AtomicUsize::new(0)),
        };
        let serving = server.clone();
        // The thread ends with the test process; it holds nothing but the listener.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serving.answer(stream);
            }
        });
        server
    }

    fn answer(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(StdDuration::from_secs(2)));
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        if !self.up.load(Ordering::SeqCst) {
            return; // dropped: the connection closes without a response
        }
        let body = self.document.lock().unwrap().clone();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
        self.served.fetch_add(1, Ordering::SeqCst);
    }

    fn publish(&self, document: Vec<u8>) {
        *self.document.lock().unwrap() = document;
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

// ------------------------------------------------------------------ the gateway

fn configuration() -> String {
    json!({
        "issuers": [{
            "issuer": ISSUER,
            "algorithms": ["RS256", "ES256", "EdDSA"],
            "remoteJwks": {
                "cluster": "jwks", "authority": "idp.exchange.test", "path": "/jwks.json",
                "refreshIntervalSeconds": 300, "timeoutMillis": 1000,
                "minRefetchIntervalSeconds": 1, "maxStalenessSeconds": 3600
            }
        }],
        "realm": "exchange",
        "rules": [
            {"name": "health", "pathPrefix": "/healthz", "anonymous": true},
            {"name": "trade", "pathPrefix": "/api/v1/trade", "audiencesAnyOf": ["trade"],
             "scopesAnyOf": ["trade:read", "trade:write"]},
            {"name": "wallet", "pathPrefix": "/api/v1/wallet", "audiencesAnyOf": ["wallet"],
             "scopesAllOf": ["wallet:read"]}
        ]
    })
    .to_string()
}

struct Gateway {
    // Field order is drop order: Envoy stops before its upstreams do.
    envoy: EnvoyProcess,
    upstream: MockUpstream,
    jwks: JwksServer,
}

impl Gateway {
    fn start() -> Self {
        let jwks = JwksServer::start(jwks(&[
            rsa_jwk(&keys().rsa),
            ec_jwk(&keys().ec),
            ed_jwk(&keys().ed),
        ]));
        Self::start_with(
            WasmFilter::from_dist("jwt-authz", configuration()).unwrap(),
            jwks,
        )
    }

    fn start_with(filter: WasmFilter, jwks: JwksServer) -> Self {
        Self::start_with_workers(filter, jwks, 1)
    }

    fn start_with_workers(filter: WasmFilter, jwks: JwksServer, workers: u32) -> Self {
        let upstream = MockUpstream::start("svc-trading-api").unwrap();
        let envoy = EnvoyProcess::builder(BOOTSTRAP)
            .concurrency(workers)
            .var(
                "FILTERS",
                config::inline_list(&[filter.to_value(), config::router()]),
            )
            .var(
                "UPSTREAM",
                config::inline(&config::loopback_cluster("upstream", upstream.port())),
            )
            .var(
                "JWKS",
                config::inline(&config::loopback_cluster("jwks", jwks.port)),
            )
            // Access-log lines reach the file within 100 ms instead of Envoy's 10 s.
            .arg("--file-flush-interval-msec")
            .arg("100")
            .start()
            .unwrap();
        let gateway = Self {
            envoy,
            upstream,
            jwks,
        };
        // The first fetch runs on the first tick after configuration.
        wait_until("the first JWKS fetch", StdDuration::from_secs(10), || {
            Ok(gateway.stat("jwt_authz_jwks_fetches_ok_total") >= 1)
        })
        .unwrap();
        gateway
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        client::request(self.envoy.port("edge").unwrap(), method, path, headers).unwrap()
    }

    fn get_with_token(&self, path: &str, token: &str) -> Response {
        let bearer = format!("Bearer {token}");
        self.request("GET", path, &[("authorization", &bearer)])
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy
            .stat(&format!("wasmcustom.{name}"))
            .unwrap()
            .unwrap_or(0)
    }

    /// A counter of allowed requests once it reached `expected`: the filter hands those
    /// counts to Envoy from its tick, once a second (denials are counted at once). What it
    /// is after five seconds otherwise.
    fn flushed_stat(&self, name: &str, expected: u64) -> u64 {
        let _ = wait_until(name, StdDuration::from_secs(5), || {
            Ok(self.stat(name) == expected)
        });
        self.stat(name)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(audience: &str, scope: &str) -> JWTClaims<Map<String, Value>> {
    let mut custom = Map::new();
    custom.insert("scope".to_owned(), json!(scope));
    let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(600));
    claims.issuer = Some(ISSUER.to_owned());
    claims.subject = Some("user-42".to_owned());
    claims.audiences = Some(Audiences::AsString(audience.to_owned()));
    claims
}

fn trade_token(key: &ES256KeyPair) -> String {
    key.sign(claims("trade", "trade:read")).unwrap()
}

/// A denial as the client sees it: status, challenge, and the shared JSON body.
fn assert_denied(response: &Response, status: u16, error: &str, challenge: Option<&str>) {
    assert_eq!(response.status, status, "{}", response.body_text());
    assert_eq!(response.header("www-authenticate"), challenge);
    assert!(response
        .header("content-type")
        .is_some_and(|value| value.starts_with("application/json")));
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["message"].is_string());
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}

const INVALID_TOKEN: &str = r#"Bearer realm="exchange", error="invalid_token""#;
const INVALID_REQUEST: &str = r#"Bearer realm="exchange", error="invalid_request""#;

// ------------------------------------------------------------------ tests

#[test]
fn valid_tokens_reach_the_upstream_with_the_verified_identity_only() {
    let gateway = Gateway::start();
    // Envoy 1.39 has `verify_signature`: RS256 is configured (it would be refused without).
    assert!(
        gateway
            .envoy
            .log()
            .contains("signatures: Envoy verify_signature"),
        "{}",
        gateway.envoy.log()
    );
    let wallet = keys()
        .ed
        .sign(claims("wallet", "wallet:read profile"))
        .unwrap();
    let cases = [
        (
            TRADE,
            keys().rsa.sign(claims("trade", "trade:write")).unwrap(),
        ),
        (TRADE, trade_token(&keys().ec)),
        (WALLET, wallet),
    ];
    for (path, token) in &cases {
        let bearer = format!("Bearer {token}");
        let response = gateway.request(
            "GET",
            path,
            &[("authorization", &bearer), ("x-auth-subject", "admin")],
        );
        assert_eq!(response.status, 200, "{path}: {}", response.body_text());
    }
    let received = gateway.upstream.received();
    assert_eq!(received.len(), 3);
    for request in &received {
        assert_eq!(request.header("x-auth-subject"), Some("user-42"));
        assert_eq!(request.header("x-auth-issuer"), Some(ISSUER));
    }
    assert_eq!(
        received[2].header("x-auth-scopes"),
        Some("wallet:read profile")
    );
    // Anonymous route: spoofed identity removed, no token needed.
    let response = gateway.request("GET", "/healthz", &[("x-auth-subject", "admin")]);
    assert_eq!(response.status, 200);
    let health = gateway.upstream.received().pop().unwrap();
    assert_eq!(health.header("x-auth-subject"), None);
    assert_eq!(gateway.flushed_stat("jwt_authz_allowed_total", 3), 3);
    assert_eq!(gateway.stat("jwt_authz_info"), 1);

    // The verified subject reached the stream's filter state (for ratelimit-tagger); the
    // anonymous request has none, whatever header the client sent.
    let access_log = gateway.envoy.dir().join("access.log");
    let mut lines = Vec::new();
    wait_until("four access-log lines", StdDuration::from_secs(5), || {
        lines = std::fs::read_to_string(&access_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        Ok(lines.len() >= 4)
    })
    .unwrap();
    assert_eq!(
        lines,
        [
            format!("{TRADE} subject=user-42"),
            format!("{TRADE} subject=user-42"),
            format!("{WALLET} subject=user-42"),
            "/healthz subject=-".to_owned(),
        ]
    );
}

#[test]
fn every_rejection_class_on_the_wire() {
    let gateway = Gateway::start();
    let good = trade_token(&keys().ec);
    // 401 without an error code when there are no credentials (RFC 6750 §3.1).
    let response = gateway.request("GET", TRADE, &[]);
    assert_denied(
        &response,
        401,
        "unauthorized",
        Some(r#"Bearer realm="exchange""#),
    );
    // 401 invalid_token: bad signature, expired, alg none, RS256 signed by another key.
    let mut tampered = good.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let mut expired_claims = claims("trade", "trade:read");
    expired_claims.expires_at = Some(UnixTimeStamp::from_secs(now() - 120));
    let expired = keys().ec.sign(expired_claims).unwrap();
    let payload = b64(serde_json::to_string(&claims("trade", "trade:read"))
        .unwrap()
        .as_bytes());
    let alg_none = format!("{}.{payload}.c2ln", b64(br#"{"alg":"none"}"#));
    let forged_rsa = RS256KeyPair::generate(2048)
        .unwrap()
        .with_key_id("rsa-1")
        .sign(claims("trade", "trade:read"))
        .unwrap();
    for token in [&tampered, &expired, &alg_none, &forged_rsa] {
        assert_denied(
            &gateway.get_with_token(TRADE, token),
            401,
            "invalid_token",
            Some(INVALID_TOKEN),
        );
    }
    // 403 insufficient_scope with the required scopes.
    let wallet_without_scope = keys().ec.sign(claims("wallet", "profile")).unwrap();
    assert_denied(
        &gateway.get_with_token(WALLET, &wallet_without_scope),
        403,
        "insufficient_scope",
        Some(r#"Bearer realm="exchange", error="insufficient_scope", scope="wallet:read""#),
    );
    // 400 invalid_request: token in the query.
    let response = gateway.request(
        "GET",
        &format!("{TRADE}?access_token={good}"),
        &[("authorization", &format!("Bearer {good}"))],
    );
    assert_denied(&response, 400, "invalid_request", Some(INVALID_REQUEST));
    // 400 for a non-canonical path, 403 for a path no rule covers.
    let bearer = format!("Bearer {good}");
    let response = gateway.request(
        "GET",
        "/api/v1/trade%2Forders",
        &[("authorization", &bearer)],
    );
    assert_denied(&response, 400, "invalid_request", None);
    let response = gateway.request("GET", "/admin/users", &[("authorization", &bearer)]);
    assert_denied(&response, 403, "access_denied", None);
    assert_eq!(
        gateway.upstream.total_requests(),
        0,
        "nothing reached the upstream"
    );
    assert_eq!(gateway.stat("jwt_authz_denied_bad_signature_total"), 2);
    assert_eq!(gateway.stat("jwt_authz_denied_expired_total"), 1);
    assert_eq!(gateway.stat("jwt_authz_denied_alg_none_total"), 1);
}

type TradeClaims = JWTClaims<Map<String, Value>>;

/// A trade token signed with the known EC key, its claims edited first.
fn signed(edit: impl FnOnce(&mut TradeClaims)) -> String {
    let mut claims = claims("trade", "trade:read");
    edit(&mut claims);
    keys().ec.sign(claims).unwrap()
}

/// The issue's attack list as a client sends it, through Envoy's HTTP/1 codec to the
/// shipped module: every token attack is a 401 invalid_token counted under its reason, and
/// nothing reaches the upstream.
#[test]
fn the_attack_list_on_the_wire() {
    let gateway = Gateway::start();
    let good = trade_token(&keys().ec);
    let payload = b64(serde_json::to_string(&claims("trade", "trade:read"))
        .unwrap()
        .as_bytes());
    let craft = |header: Value| {
        format!(
            "{}.{payload}.{}",
            b64(header.to_string().as_bytes()),
            b64(&[7u8; 64])
        )
    };
    let rsa_public_pem = keys().rsa.public_key().to_pem().unwrap();
    let attacker_jwk = ec_jwk(&ES256KeyPair::generate().with_key_id("evil"));
    let parts: Vec<&str> = good.split('.').collect();
    let tokens: Vec<(String, &str)> = vec![
        (craft(json!({"alg": "None", "typ": "JWT"})), "alg_none"),
        (craft(json!({"alg": "NONE"})), "alg_none"),
        (
            HS256Key::from_bytes(rsa_public_pem.as_bytes())
                .with_key_id("rsa-1")
                .authenticate(claims("trade", "trade:read"))
                .unwrap(),
            "alg_not_allowed",
        ),
        (
            ES384KeyPair::generate()
                .with_key_id("ec-1")
                .sign(claims("trade", "trade:read"))
                .unwrap(),
            "alg_not_allowed",
        ),
        (
            craft(json!({"alg": "ES256", "kid": "evil", "jwk": attacker_jwk})),
            "embedded_key",
        ),
        (
            craft(
                json!({"alg": "ES256", "kid": "evil", "jku": format!("http://127.0.0.1:{}/jwks.json", gateway.jwks.port)}),
            ),
            "embedded_key",
        ),
        (
            craft(json!({"alg": "RS256", "kid": "evil", "x5u": "https://attacker.example/c.pem"})),
            "embedded_key",
        ),
        (
            craft(json!({"alg": "RS256", "kid": "evil", "x5c": ["MIIBszCCAVmgAwIBAgIU"]})),
            "embedded_key",
        ),
        (
            craft(json!({"alg": "ES256", "kid": "ec-1", "crit": ["exp"]})),
            "critical_header",
        ),
        (
            signed(|c| c.invalid_before = Some(UnixTimeStamp::from_secs(now() + 600))),
            "not_yet_valid",
        ),
        (signed(|c| c.expires_at = None), "missing_exp"),
        (
            signed(|c| c.issuer = Some(format!("{ISSUER}/"))),
            "unknown_issuer",
        ),
        (
            signed(|c| c.audiences = Some(Audiences::AsString("wallet".to_owned()))),
            "audience_mismatch",
        ),
        (signed(|c| c.audiences = None), "audience_mismatch"),
        (
            signed(|c| {
                c.audiences = Some(Audiences::AsSet(
                    ["wallet".to_owned(), "risk".to_owned()].into(),
                ))
            }),
            "audience_mismatch",
        ),
        (format!("{}.{}", parts[0], parts[1]), "malformed_token"),
        (
            format!("{}.{}.{}", b64(b"{not json"), parts[1], parts[2]),
            "malformed_token",
        ),
        (
            format!("{}.a.b.c.d", b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#)),
            "jwe",
        ),
        (
            signed(|c| {
                c.custom
                    .insert("padding".to_owned(), json!("x".repeat(9000)));
            }),
            "token_too_large",
        ),
    ];
    for (token, reason) in &tokens {
        let before = gateway.stat(&format!("jwt_authz_denied_{reason}_total"));
        assert_denied(
            &gateway.get_with_token(TRADE, token),
            401,
            "invalid_token",
            Some(INVALID_TOKEN),
        );
        assert_eq!(
            gateway.stat(&format!("jwt_authz_denied_{reason}_total")),
            before + 1,
            "{reason}: {token}"
        );
    }
    // Embedded key locations are never fetched: the JWKS server saw only the start-up fetch.
    assert_eq!(gateway.jwks.served(), 1);

    // Two Authorization headers. Envoy joins repeated inline headers into one value
    // ("Bearer a,Bearer b"), which is no b64token: still 400 invalid_request.
    let bearer = format!("Bearer {good}");
    let response = gateway.request(
        "GET",
        TRADE,
        &[("authorization", &bearer), ("authorization", &bearer)],
    );
    assert_denied(&response, 400, "invalid_request", Some(INVALID_REQUEST));
    // Inner whitespace is refused; the scheme's letter case is not significant.
    for value in [format!("Bearer  {good}"), format!("Bearer\t{good}")] {
        let response = gateway.request("GET", TRADE, &[("authorization", &value)]);
        assert_denied(&response, 400, "invalid_request", Some(INVALID_REQUEST));
    }
    for value in [format!("bearer {good}"), format!("BEARER {good}")] {
        let response = gateway.request("GET", TRADE, &[("authorization", &value)]);
        assert_eq!(response.status, 200, "{value}: {}", response.body_text());
    }
    // Leading and trailing whitespace is not part of a field value (RFC 9110 §5.5): Envoy's
    // codec drops it before any filter runs, so the same token passes.
    let response = gateway.request(
        "GET",
        TRADE,
        &[("authorization", &format!("Bearer {good} \t"))],
    );
    assert_eq!(response.status, 200, "{}", response.body_text());
    // Path spellings that would read differently after normalization, including one that
    // climbs out of the anonymous prefix: refused, never matched.
    for path in [
        "/api/v1/trade%5Corders",
        "/api/v1/./trade/orders",
        "/api/v1/wallet/../trade/orders",
        "/api//v1/trade/orders",
        "/healthz/../api/v1/wallet/balances",
        "/healthz/%2E%2E/api/v1/wallet/balances",
    ] {
        let response = gateway.request("GET", path, &[("authorization", &bearer)]);
        assert_denied(&response, 400, "invalid_request", None);
    }
    assert_eq!(gateway.stat("jwt_authz_denied_invalid_path_total"), 6);
    // Only the three accepted requests reached the upstream, each with its verified identity.
    let received = gateway.upstream.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(
        |request| request.path == TRADE && request.header("x-auth-subject") == Some("user-42")
    ));
}

#[test]
fn a_rotated_key_is_accepted_at_once_without_a_restart() {
    let gateway = Gateway::start();
    // The IdP starts signing with ec-2 and publishes it: the first token with the new kid
    // makes the filter refetch (the request waits for it) and passes.
    gateway
        .jwks
        .publish(jwks(&[ec_jwk(&keys().ec), ec_jwk(&keys().ec_rotated)]));
    let fetched_before = gateway.jwks.served();
    thread::sleep(StdDuration::from_millis(1100)); // minRefetchIntervalSeconds = 1
    let response = gateway.get_with_token(TRADE, &trade_token(&keys().ec_rotated));
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(gateway.jwks.served(), fetched_before + 1);
    assert_eq!(gateway.stat("jwt_authz_unknown_kid_waits_total"), 1);
    // Decided from the root context when the fetch answered: identity and hand-off intact.
    let received = gateway.upstream.received();
    assert_eq!(received[0].header("x-auth-subject"), Some("user-42"));
    let access_log = gateway.envoy.dir().join("access.log");
    wait_until("the access-log line", StdDuration::from_secs(5), || {
        Ok(std::fs::read_to_string(&access_log)
            .unwrap_or_default()
            .contains(&format!("{TRADE} subject=user-42")))
    })
    .unwrap();
    // A flood of tokens with a kid that is nowhere: each is refused, and the IdP sees at
    // most one refetch per `minRefetchIntervalSeconds` (1 s, on whole seconds of the clock).
    let unknown = trade_token(&ES256KeyPair::generate().with_key_id("nope"));
    let flood_started = std::time::Instant::now();
    let served_before_flood = gateway.jwks.served();
    for _ in 0..30 {
        assert_denied(
            &gateway.get_with_token(TRADE, &unknown),
            401,
            "invalid_token",
            Some(INVALID_TOKEN),
        );
    }
    let seconds = usize::try_from(flood_started.elapsed().as_secs()).unwrap();
    let refetches = gateway.jwks.served() - served_before_flood;
    assert!(
        refetches <= seconds + 2,
        "{refetches} refetches in {seconds} s for 30 requests"
    );
    assert!(gateway.stat("jwt_authz_denied_unknown_kid_total") == 30);
}

#[test]
fn a_jwks_outage_keeps_known_keys_and_recovers() {
    let gateway = Gateway::start();
    gateway.jwks.set_up(false);
    thread::sleep(StdDuration::from_millis(1100));
    // Known keys still work; a new kid cannot be fetched and is refused.
    let known = gateway.get_with_token(TRADE, &trade_token(&keys().ec));
    assert_eq!(known.status, 200, "{}", known.body_text());
    gateway
        .jwks
        .publish(jwks(&[ec_jwk(&keys().ec), ec_jwk(&keys().ec_later)]));
    let new_kid = trade_token(&keys().ec_later);
    assert_denied(
        &gateway.get_with_token(TRADE, &new_kid),
        401,
        "invalid_token",
        Some(INVALID_TOKEN),
    );
    assert!(gateway.stat("jwt_authz_jwks_fetches_failed_total") >= 1);
    let known = gateway.get_with_token(TRADE, &trade_token(&keys().ec));
    assert_eq!(known.status, 200);
    // The IdP is back: after the rate-limit interval the new kid is fetched and accepted.
    gateway.jwks.set_up(true);
    wait_until(
        "the new kid to be accepted",
        StdDuration::from_secs(10),
        || {
            thread::sleep(StdDuration::from_millis(500));
            Ok(gateway.get_with_token(TRADE, &new_kid).status == 200)
        },
    )
    .unwrap();
}

#[test]
fn a_failed_vm_denies_instead_of_passing() {
    // jwt-authz has no input that traps it (that is the point of its glue), so the failure
    // comes from the test fixture that panics on request, deployed exactly like jwt-authz:
    // same Wasm filter block, FAIL_CLOSED, first in front of the router.
    let probe = paths::fixture_wasm("abi-probe");
    assert!(probe.exists(), "build the fixtures first (make wasm)");
    let jwks = JwksServer::start(jwks(&[ec_jwk(&keys().ec)]));
    let upstream = MockUpstream::start("svc-wallet").unwrap();
    let filter = WasmFilter::new("jwt-authz", probe, "{}");
    let envoy = EnvoyProcess::builder(BOOTSTRAP)
        .var(
            "FILTERS",
            config::inline_list(&[filter.to_value(), config::router()]),
        )
        .var(
            "UPSTREAM",
            config::inline(&config::loopback_cluster("upstream", upstream.port())),
        )
        .var(
            "JWKS",
            config::inline(&config::loopback_cluster("jwks", jwks.port)),
        )
        .start()
        .unwrap();
    let port = envoy.port("edge").unwrap();
    let before = client::get(port, WALLET).unwrap();
    assert_eq!(
        before.status, 200,
        "the probe passes requests while healthy"
    );
    let crash = client::get_with(port, WALLET, &[("x-probe-action", "panic")]).unwrap();
    assert_eq!(crash.status, 503);
    for _ in 0..3 {
        let after = client::get(port, WALLET).unwrap();
        assert_eq!(
            after.status, 503,
            "a failed VM must not let requests through"
        );
    }
    assert_eq!(
        upstream.total_requests(),
        1,
        "only the request before the crash"
    );
}

#[test]
fn worker_vms_share_one_jwks_fetch() {
    // Two workers plus the main thread: three VMs of vm_id `jwt-authz`, one key fetch.
    let jwks_server = JwksServer::start(jwks(&[ec_jwk(&keys().ec)]));
    let filter = WasmFilter::from_dist("jwt-authz", configuration()).unwrap();
    let gateway = Gateway::start_with_workers(filter, jwks_server, 2);
    // Let every worker tick a few times (1 s idle tick) and adopt the shared keys.
    thread::sleep(StdDuration::from_millis(2500));
    for _ in 0..6 {
        let response = gateway.get_with_token(TRADE, &trade_token(&keys().ec));
        assert_eq!(response.status, 200, "{}", response.body_text());
    }
    assert_eq!(gateway.jwks.served(), 1, "{}", gateway.envoy.log());
    assert_eq!(gateway.stat("jwt_authz_jwks_fetches_ok_total"), 1);
}
