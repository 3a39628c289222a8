//! jwt-authz on the BUILT module (`dist/jwt-authz.wasm`, `make wasm`): the attack list of
//! issue 3, the RFC 6750 answers, identity hand-off, and the JWKS lifecycle (refresh on
//! tick, unknown-`kid` refetch, last-known-good, staleness, sharing between worker VMs) on
//! the simulator's virtual clock. Keys and tokens are generated here, natively; the
//! verification that runs is the module's own (ES256, EdDSA, HS256 in Wasm) or, for RS256,
//! a native stand-in for Envoy's `verify_signature` foreign function fed with exactly the
//! bytes the module sends. Each test builds its own Host; they run in parallel.

// Test crate: the helpers fail the test on an unexpected error, like the `#[test]`
// functions themselves (where clippy already allows unwrap/expect).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration as StdDuration, UNIX_EPOCH};

use jwt_simple::prelude::*;
use proxy_wasm_sim::{artifact, Action, Host, LogLevel, SharedData, Status, StreamId};
use rsa::pkcs8::DecodePublicKey;
use rsa::sha2::{Digest, Sha256};
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use serde_json::{json, Map, Value};

const ISSUER: &str = "https://idp.exchange.test";
const HS_ISSUER: &str = "https://partners.exchange.test";
const HS_SECRET: [u8; 32] = [0x5a; 32];
const JWKS_CLUSTER: &str = "outbound|443||idp.exchange.test";
const JWKS_PATH: &str = "/.well-known/jwks.json";
const TRADE: &str = "/api/v1/trade/orders";

struct Keys {
    rsa: RS256KeyPair,
    ec: ES256KeyPair,
    ec_rotated: ES256KeyPair,
    ed: Ed25519KeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-1"),
        ec: ES256KeyPair::generate().with_key_id("ec-1"),
        ec_rotated: ES256KeyPair::generate().with_key_id("ec-2"),
        ed: Ed25519KeyPair::generate().with_key_id("ed-1"),
    })
}

// ------------------------------------------------------------------ encoding helpers

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

/// A compact token with any header and payload (the signature is whatever is given).
fn craft(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        b64(signature)
    )
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

fn initial_jwks() -> Vec<u8> {
    jwks(&[rsa_jwk(&keys().rsa), ec_jwk(&keys().ec)])
}

// ------------------------------------------------------------------ the host side

/// Envoy's `verify_signature` (RSASSA-PKCS1-v1_5 over a DER SubjectPublicKeyInfo, like
/// BoringSSL's `EVP_DigestVerify` with default padding), for RSA keys; EC keys answer
/// BAD_ARGUMENT so the module's own ES256 code is what the tests exercise.
fn native_verify_signature(calls: Arc<AtomicUsize>) -> impl Fn(&[u8]) -> Result<Vec<u8>, Status> {
    move |arguments| {
        let fields = protobuf_fields(arguments).ok_or(Status::BadArgument)?;
        let field = |number| {
            fields
                .iter()
                .find(|(n, _)| *n == number)
                .map(|(_, v)| v.as_slice())
        };
        let (Some(b"sha256"), Some(key), Some(signature), Some(text)) =
            (field(1), field(2), field(3), field(4))
        else {
            return Err(Status::BadArgument);
        };
        let key = RsaPublicKey::from_public_key_der(key).map_err(|_| Status::BadArgument)?;
        calls.fetch_add(1, Ordering::SeqCst);
        let digest = Sha256::digest(text);
        let valid = key
            .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, signature)
            .is_ok();
        // VerifySignatureResult { result = 1 (bool), error = 2 (string) }
        Ok(if valid {
            vec![0x08, 0x01]
        } else {
            let mut answer = vec![0x12, 18];
            answer.extend_from_slice(b"signature mismatch");
            answer
        })
    }
}

fn protobuf_fields(mut bytes: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = bytes.split_first()?;
            *bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        if key & 7 != 2 {
            return None;
        }
        let length = usize::try_from(varint(&mut bytes)?).ok()?;
        let value = bytes.get(..length)?.to_vec();
        bytes = &bytes[length..];
        fields.push((key >> 3, value));
    }
    Some(fields)
}

fn config() -> Value {
    json!({
        "issuers": [
            {
                "issuer": ISSUER,
                "algorithms": ["RS256", "ES256", "EdDSA"],
                "jwks": {"keys": [ed_jwk(&keys().ed)]},
                "remoteJwks": {
                    "cluster": JWKS_CLUSTER, "authority": "idp.exchange.test",
                    "path": JWKS_PATH, "refreshIntervalSeconds": 300, "timeoutMillis": 2000,
                    "minRefetchIntervalSeconds": 30, "maxStalenessSeconds": 3600
                }
            },
            {"issuer": HS_ISSUER, "algorithms": ["HS256"], "sharedSecret": b64(&HS_SECRET)}
        ],
        "clockSkewSeconds": 30,
        "maxTokenBytes": 2048,
        "realm": "exchange",
        "rules": [
            {"name": "health", "pathPrefix": "/healthz", "anonymous": true},
            {"name": "withdraw", "methods": ["POST"], "exactPath": "/api/v1/wallet/withdrawals",
             "audiencesAnyOf": ["wallet"], "scopesAllOf": ["wallet:withdraw"],
             "maxAuthAgeSeconds": 300},
            {"name": "trade", "pathPrefix": "/api/v1/trade", "audiencesAnyOf": ["trade"],
             "scopesAnyOf": ["trade:read", "trade:write"]},
            {"name": "partners", "pathPrefix": "/api/v1/risk", "audiencesAnyOf": ["risk"]}
        ]
    })
}

struct Gateway {
    host: Host,
    host_verifications: Arc<AtomicUsize>,
}

fn builder_with(
    config: &Value,
    shared: Option<SharedData>,
) -> (proxy_wasm_sim::HostBuilder, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut builder = Host::builder(artifact("jwt-authz"))
        .plugin_config(config.to_string())
        .clusters(&[JWKS_CLUSTER])
        .vm_id("jwt-authz")
        .foreign_function(
            "verify_signature",
            native_verify_signature(Arc::clone(&calls)),
        );
    if let Some(shared) = shared {
        builder = builder.shared_data(shared);
    }
    (builder, calls)
}

/// A configured gateway whose first JWKS fetch has been answered with `initial_jwks`.
fn gateway() -> Gateway {
    gateway_sharing(None)
}

fn gateway_sharing(shared: Option<SharedData>) -> Gateway {
    let (builder, host_verifications) = builder_with(&config(), shared);
    let mut host = builder.build().unwrap();
    assert!(host.configured(), "{:?}", host.logs());
    host.advance(StdDuration::from_millis(5)).unwrap();
    let calls = host.http_calls();
    if let [call] = calls.as_slice() {
        host.respond_http_call(call.token, &[(":status", "200")], &initial_jwks())
            .unwrap();
    }
    Gateway {
        host,
        host_verifications,
    }
}

fn now(host: &Host) -> u64 {
    host.now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims valid at the host's clock for the trade route.
fn claims(host: &Host, extra: Value) -> JWTClaims<Map<String, Value>> {
    let t = now(host);
    let custom = extra.as_object().cloned().unwrap_or_default();
    let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(600));
    claims.issued_at = Some(UnixTimeStamp::from_secs(t));
    claims.expires_at = Some(UnixTimeStamp::from_secs(t + 600));
    claims.invalid_before = None;
    claims.issuer = Some(ISSUER.to_owned());
    claims.subject = Some("user-42".to_owned());
    claims.audiences = Some(Audiences::AsString("trade".to_owned()));
    claims
}

fn trade_claims(host: &Host) -> JWTClaims<Map<String, Value>> {
    claims(host, json!({"scope": "trade:read profile"}))
}

struct Answer {
    action: Action,
    stream: StreamId,
}

fn send(host: &mut Host, method: &str, path: &str, extra: &[(&str, &str)]) -> Answer {
    let stream = host.new_stream();
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", "api.exchange.test"),
        (":scheme", "https"),
    ];
    headers.extend_from_slice(extra);
    let action = host.request_headers(stream, &headers, true).unwrap();
    Answer { action, stream }
}

fn get_with_token(host: &mut Host, path: &str, token: &str) -> Answer {
    let authorization = format!("Bearer {token}");
    send(host, "GET", path, &[("authorization", &authorization)])
}

/// A counter of allowed requests as Envoy shows it once the filter's tick has flushed what
/// it counted (every second; denials are counted at once).
fn flushed(host: &mut Host, name: &str) -> Option<u64> {
    host.advance(StdDuration::from_secs(1)).unwrap();
    host.counter(name)
}

fn denied_total(host: &Host, reason: &str) -> u64 {
    host.counter(&format!("jwt_authz_denied_{reason}_total"))
        .unwrap_or_else(|| panic!("no counter for {reason}"))
}

/// Asserts a local reply with this status, error code and (optional) challenge.
fn assert_denied(host: &Host, answer: &Answer, status: u32, error: &str, challenge: Option<&str>) {
    assert_eq!(answer.action, Action::Pause);
    let reply = host
        .local_reply(answer.stream)
        .unwrap_or_else(|| panic!("no local reply; logs: {:?}", host.logs()));
    assert_eq!(
        reply.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 2, "one schema: {body}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("www-authenticate"), challenge);
    assert!(
        host.request_header(answer.stream, "x-auth-subject")
            .is_none(),
        "no identity on a denial"
    );
}

const INVALID_TOKEN: &str = r#"Bearer realm="exchange", error="invalid_token""#;
const TRADE_INSUFFICIENT_SCOPE: &str =
    r#"Bearer realm="exchange", error="insufficient_scope", scope="trade:read trade:write""#;
const INVALID_REQUEST: &str = r#"Bearer realm="exchange", error="invalid_request""#;

/// 400 for credentials that are not one well-formed `Authorization: Bearer <b64token>`.
fn assert_invalid_request(host: &Host, answer: &Answer) {
    assert_denied(host, answer, 400, "invalid_request", Some(INVALID_REQUEST));
}

fn assert_invalid_token(host: &Host, answer: &Answer, reason: &str) {
    assert_denied(host, answer, 401, "invalid_token", Some(INVALID_TOKEN));
    assert!(denied_total(host, reason) >= 1, "reason {reason}");
}

// ------------------------------------------------------------------ configuration

#[test]
fn configures_with_version_hash_and_info_metric() {
    let Gateway { host, .. } = gateway();
    assert!(host.has_log(LogLevel::Info, "jwt-authz 0.1.0: vm started"));
    assert!(host.has_log(
        LogLevel::Info,
        "jwt-authz 0.1.0: configured, config sha256:"
    ));
    assert!(host.has_log(LogLevel::Info, "signatures: Envoy verify_signature"));
    assert_eq!(host.gauge("jwt_authz_info"), Some(1));
    assert_eq!(host.counter("jwt_authz_jwks_fetches_ok_total"), Some(1));
    // Every denial reason exports a zero before its first use.
    assert_eq!(host.counter("jwt_authz_denied_alg_none_total"), Some(0));
    // Nothing secret in the logs.
    assert!(!host
        .logs()
        .iter()
        .any(|l| l.message.contains(&b64(&HS_SECRET))));
}

#[test]
fn bad_configurations_are_refused_naming_the_field() {
    let mut unknown = config();
    unknown["rules"][2]["scopes"] = json!(["trade:read"]);
    let mut none = config();
    none["issuers"][0]["algorithms"] = json!(["ES256", "none"]);
    let mut skew = config();
    skew["clockSkewSeconds"] = json!(900);
    let cases = [
        (unknown, "scopes"),
        (none, "issuers[0].algorithms[1]"),
        (skew, "clockSkewSeconds"),
    ];
    for (bad, field) in cases {
        let (builder, _) = builder_with(&bad, None);
        let host = builder.build().unwrap();
        assert!(!host.configured(), "{field}");
        assert!(
            host.has_log(LogLevel::Error, "configuration rejected"),
            "{field}: {:?}",
            host.logs()
        );
        assert!(
            host.has_log(LogLevel::Error, field),
            "{field}: {:?}",
            host.logs()
        );
        assert_eq!(host.counter("jwt_authz_configs_rejected_total"), Some(1));
    }
}

#[test]
fn rs256_needs_envoys_verify_signature_and_is_refused_loudly_without_it() {
    let host = Host::builder(artifact("jwt-authz"))
        .plugin_config(config().to_string())
        .clusters(&[JWKS_CLUSTER])
        .build()
        .unwrap();
    assert!(!host.configured());
    assert!(host.has_log(LogLevel::Error, "issuers[0].algorithms[0]: RS256"));

    // Without RS256 the same host runs ES256 and EdDSA in the module.
    let mut in_module = config();
    in_module["issuers"][0]["algorithms"] = json!(["ES256", "EdDSA"]);
    let mut host = Host::builder(artifact("jwt-authz"))
        .plugin_config(in_module.to_string())
        .clusters(&[JWKS_CLUSTER])
        .build()
        .unwrap();
    assert!(host.configured(), "{:?}", host.logs());
    assert!(host.has_log(LogLevel::Info, "signatures: in-module only"));
    host.advance(StdDuration::from_millis(5)).unwrap();
    let token = host.http_calls()[0].token;
    host.respond_http_call(token, &[(":status", "200")], &initial_jwks())
        .unwrap();
    for signed in [
        keys().ec.sign(trade_claims(&host)).unwrap(),
        keys().ed.sign(trade_claims(&host)).unwrap(),
    ] {
        let answer = get_with_token(&mut host, TRADE, &signed);
        assert_eq!(answer.action, Action::Continue, "{:?}", host.logs());
    }
}

// ------------------------------------------------------------------ valid tokens

#[test]
fn valid_tokens_pass_with_exactly_the_verified_identity() {
    let Gateway {
        mut host,
        host_verifications,
    } = gateway();
    let mut hs_claims = trade_claims(&host);
    hs_claims.issuer = Some(HS_ISSUER.to_owned());
    hs_claims.audiences = Some(Audiences::AsString("risk".to_owned()));
    let cases = [
        (keys().rsa.sign(trade_claims(&host)).unwrap(), TRADE, ISSUER),
        (keys().ec.sign(trade_claims(&host)).unwrap(), TRADE, ISSUER),
        (keys().ed.sign(trade_claims(&host)).unwrap(), TRADE, ISSUER),
        (
            HS256Key::from_bytes(&HS_SECRET)
                .authenticate(hs_claims)
                .unwrap(),
            "/api/v1/risk/limits",
            HS_ISSUER,
        ),
    ];
    for (token, path, issuer) in &cases {
        let authorization = format!("Bearer {token}");
        let answer = send(
            &mut host,
            "GET",
            path,
            &[
                ("authorization", &authorization),
                // Spoofed identity: must be replaced, never merged.
                ("x-auth-subject", "admin"),
                ("X-Auth-Scopes", "wallet:withdraw"),
                ("x-auth-client-id", "spoofed"),
            ],
        );
        assert_eq!(answer.action, Action::Continue, "{path}: {:?}", host.logs());
        assert!(host.local_reply(answer.stream).is_none());
        assert_eq!(
            host.request_header_values(answer.stream, "x-auth-subject"),
            vec!["user-42"]
        );
        assert_eq!(
            host.request_header_values(answer.stream, "x-auth-scopes"),
            vec!["trade:read profile"]
        );
        assert_eq!(
            host.request_header(answer.stream, "x-auth-issuer")
                .as_deref(),
            Some(*issuer)
        );
        assert!(host
            .request_header(answer.stream, "x-auth-client-id")
            .is_none());
        // The token itself still goes upstream untouched.
        assert_eq!(
            host.request_header(answer.stream, "authorization"),
            Some(authorization)
        );
    }
    assert_eq!(flushed(&mut host, "jwt_authz_allowed_total"), Some(4));
    assert_eq!(flushed(&mut host, "jwt_authz_cache_misses_total"), Some(4));
    assert_eq!(
        host_verifications.load(Ordering::SeqCst),
        1,
        "RS256 went through verify_signature"
    );
}

#[test]
fn a_repeated_token_is_served_from_the_cache_until_it_expires() {
    let Gateway { mut host, .. } = gateway();
    let token = keys().ec.sign(trade_claims(&host)).unwrap();
    for _ in 0..3 {
        let answer = get_with_token(&mut host, TRADE, &token);
        assert_eq!(answer.action, Action::Continue);
    }
    // One second for the tick that hands the counts to Envoy...
    assert_eq!(flushed(&mut host, "jwt_authz_cache_misses_total"), Some(1));
    assert_eq!(host.counter("jwt_authz_cache_hits_total"), Some(2));

    // ...so +629 more is +630: exp = now + 600, skew 30: valid at +630 s, expired after
    // (the cache entry dies at exp, the fresh verification then applies the skew).
    host.advance(StdDuration::from_secs(629)).unwrap();
    answer_ok(&mut host, &token);
    host.advance(StdDuration::from_secs(1)).unwrap();
    let answer = get_with_token(&mut host, TRADE, &token);
    assert_denied(&host, &answer, 401, "invalid_token", Some(INVALID_TOKEN));
    assert_eq!(denied_total(&host, "expired"), 1);
}

fn answer_ok(host: &mut Host, token: &str) {
    // Keys refresh on the way (every 300 s); answer any pending fetch first.
    for call in host.http_calls() {
        host.respond_http_call(call.token, &[(":status", "200")], &initial_jwks())
            .unwrap();
    }
    let answer = get_with_token(host, TRADE, token);
    assert_eq!(answer.action, Action::Continue, "{:?}", host.logs());
}

// ------------------------------------------------------------------ the attack list

#[test]
fn alg_none_in_any_case_is_rejected() {
    let Gateway { mut host, .. } = gateway();
    let payload = serde_json::to_value(trade_claims(&host)).unwrap();
    for alg in ["none", "None", "NONE", "nOnE"] {
        // The classic form, with an empty signature: refused as malformed before the header
        // is even looked at (a compact JWS always has a signature).
        let unsigned = craft(&json!({"alg": alg, "typ": "JWT"}), &payload, b"");
        let answer = get_with_token(&mut host, TRADE, &unsigned);
        assert_denied(&host, &answer, 401, "invalid_token", Some(INVALID_TOKEN));
        let with_signature = craft(&json!({"alg": alg, "typ": "JWT"}), &payload, b"sig");
        let answer = get_with_token(&mut host, TRADE, &with_signature);
        assert_invalid_token(&host, &answer, "alg_none");
    }
    assert_eq!(denied_total(&host, "alg_none"), 4);
    assert_eq!(denied_total(&host, "malformed_token"), 4);
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let Gateway {
        mut host,
        host_verifications,
    } = gateway();
    let public_pem = keys().rsa.public_key().to_pem().unwrap();
    let public_der = keys().rsa.public_key().to_der().unwrap();
    for secret in [public_pem.as_bytes(), public_der.as_slice()] {
        let forged = HS256Key::from_bytes(secret)
            .with_key_id("rsa-1")
            .authenticate(trade_claims(&host))
            .unwrap();
        let answer = get_with_token(&mut host, TRADE, &forged);
        assert_invalid_token(&host, &answer, "alg_not_allowed");
    }
    assert_eq!(host_verifications.load(Ordering::SeqCst), 0);
}

#[test]
fn algorithms_off_the_issuer_list_are_rejected() {
    let Gateway { mut host, .. } = gateway();
    let payload = serde_json::to_value(trade_claims(&host)).unwrap();
    // Real algorithms this issuer does not allow, and names that are no algorithm at all.
    let es384 = ES384KeyPair::generate()
        .with_key_id("ec-1")
        .sign(trade_claims(&host))
        .unwrap();
    let answer = get_with_token(&mut host, TRADE, &es384);
    assert_invalid_token(&host, &answer, "alg_not_allowed");
    for alg in ["PS256", "HS512", "RS1", "rs256", "ES256K"] {
        let token = craft(&json!({"alg": alg, "kid": "ec-1"}), &payload, b"signature");
        let answer = get_with_token(&mut host, TRADE, &token);
        assert_invalid_token(&host, &answer, "alg_not_allowed");
    }
    // An HS256 token for the RSA/EC issuer, even with a plausible secret.
    let hs = HS256Key::from_bytes(&HS_SECRET)
        .authenticate(trade_claims(&host))
        .unwrap();
    let answer = get_with_token(&mut host, TRADE, &hs);
    assert_invalid_token(&host, &answer, "alg_not_allowed");
}

#[test]
fn embedded_keys_are_never_used_or_fetched() {
    let Gateway { mut host, .. } = gateway();
    let payload = serde_json::to_value(trade_claims(&host)).unwrap();
    let calls_before = host.http_calls().len();
    let attacker_jwk = ec_jwk(&ES256KeyPair::generate().with_key_id("evil"));
    let headers = [
        json!({"alg": "ES256", "kid": "evil", "jwk": attacker_jwk}),
        json!({"alg": "ES256", "kid": "evil", "jku": "https://attacker.example/jwks.json"}),
        json!({"alg": "RS256", "kid": "evil", "x5u": "https://attacker.example/cert.pem"}),
        json!({"alg": "RS256", "kid": "evil", "x5c": ["MIIBszCCAVmgAwIBAgIU"]}),
    ];
    for header in headers {
        let token = craft(&header, &payload, &[7u8; 64]);
        let answer = get_with_token(&mut host, TRADE, &token);
        assert_invalid_token(&host, &answer, "embedded_key");
    }
    assert_eq!(denied_total(&host, "embedded_key"), 4);
    assert_eq!(host.http_calls().len(), calls_before, "nothing fetched");
    host.advance(StdDuration::from_millis(100)).unwrap();
    assert_eq!(
        host.http_calls().len(),
        calls_before,
        "nothing fetched later"
    );
}

#[test]
fn unknown_crit_is_rejected() {
    let Gateway { mut host, .. } = gateway();
    let payload = serde_json::to_value(trade_claims(&host)).unwrap();
    for crit in [
        json!(["exp"]),
        json!(["b64"]),
        json!(["urn:example:unknown"]),
    ] {
        let token = craft(
            &json!({"alg": "ES256", "kid": "ec-1", "crit": crit}),
            &payload,
            &[1u8; 64],
        );
        let answer = get_with_token(&mut host, TRADE, &token);
        assert_invalid_token(&host, &answer, "critical_header");
    }
}

#[test]
fn time_claims_are_enforced_with_a_tight_skew() {
    let Gateway { mut host, .. } = gateway();
    let t = now(&host);
    let mut expired = trade_claims(&host);
    expired.expires_at = Some(UnixTimeStamp::from_secs(t - 31));
    let mut within_skew = trade_claims(&host);
    within_skew.expires_at = Some(UnixTimeStamp::from_secs(t - 29));
    let mut not_yet = trade_claims(&host);
    not_yet.invalid_before = Some(UnixTimeStamp::from_secs(t + 31));
    let mut no_exp = trade_claims(&host);
    no_exp.expires_at = None;
    let cases = [
        (expired, Some("expired")),
        (not_yet, Some("not_yet_valid")),
        (no_exp, Some("missing_exp")),
        (within_skew, None),
    ];
    for (claims, reason) in cases {
        let token = keys().ec.sign(claims).unwrap();
        let answer = get_with_token(&mut host, TRADE, &token);
        match reason {
            Some(reason) => assert_invalid_token(&host, &answer, reason),
            None => assert_eq!(answer.action, Action::Continue),
        }
    }
}

#[test]
fn issuer_and_audience_must_match_exactly() {
    let Gateway { mut host, .. } = gateway();
    let mut wrong_issuer = trade_claims(&host);
    wrong_issuer.issuer = Some(format!("{ISSUER}/"));
    let token = keys().ec.sign(wrong_issuer).unwrap();
    let answer = get_with_token(&mut host, TRADE, &token);
    assert_invalid_token(&host, &answer, "unknown_issuer");

    let audiences = [
        (None, false),
        (Some(Audiences::AsString("wallet".to_owned())), false),
        (Some(Audiences::AsString("Trade".to_owned())), false),
        (
            Some(Audiences::AsSet(
                ["wallet".to_owned(), "risk".to_owned()].into(),
            )),
            false,
        ),
        (
            Some(Audiences::AsSet(
                ["wallet".to_owned(), "trade".to_owned()].into(),
            )),
            true,
        ),
        (Some(Audiences::AsString("trade".to_owned())), true),
    ];
    for (audience, passes) in audiences {
        let mut claims = trade_claims(&host);
        claims.audiences = audience.clone();
        let token = keys().ec.sign(claims).unwrap();
        let answer = get_with_token(&mut host, TRADE, &token);
        if passes {
            assert_eq!(answer.action, Action::Continue, "{audience:?}");
        } else {
            assert_invalid_token(&host, &answer, "audience_mismatch");
            let reply = host.local_reply(answer.stream).unwrap();
            assert!(String::from_utf8_lossy(&reply.body).contains("not intended for this resource"));
        }
    }
}

#[test]
fn missing_scopes_get_403_insufficient_scope_in_both_claim_forms() {
    let Gateway { mut host, .. } = gateway();
    let scopes = [
        (json!({"scope": "profile trade:readx"}), false),
        (json!({"scp": ["profile", "wallet:withdraw"]}), false),
        (json!({}), false),
        (json!({"scope": "profile trade:write"}), true),
        (json!({"scp": ["trade:read"]}), true),
        (json!({"scp": "profile trade:read"}), true),
    ];
    for (extra, passes) in scopes {
        let token = keys().ec.sign(claims(&host, extra.clone())).unwrap();
        let answer = get_with_token(&mut host, TRADE, &token);
        if passes {
            assert_eq!(answer.action, Action::Continue, "{extra}");
        } else {
            assert_denied(
                &host,
                &answer,
                403,
                "insufficient_scope",
                Some(TRADE_INSUFFICIENT_SCOPE),
            );
        }
    }
    assert_eq!(denied_total(&host, "insufficient_scope"), 3);

    // The withdrawal route: all-of scope plus a recent authentication (RFC 9470 step-up).
    let t = now(&host);
    let withdraw = |host: &Host, auth_time: u64| {
        let mut claims = claims(
            host,
            json!({"scope": "wallet:withdraw", "auth_time": auth_time}),
        );
        claims.audiences = Some(Audiences::AsString("wallet".to_owned()));
        keys().ec.sign(claims).unwrap()
    };
    let fresh = format!("Bearer {}", withdraw(&host, t - 60));
    let stale = format!("Bearer {}", withdraw(&host, t - 301));
    let answer = send(
        &mut host,
        "POST",
        "/api/v1/wallet/withdrawals",
        &[("authorization", &fresh)],
    );
    assert_eq!(answer.action, Action::Continue);
    let answer = send(
        &mut host,
        "POST",
        "/api/v1/wallet/withdrawals",
        &[("authorization", &stale)],
    );
    assert_denied(
        &host,
        &answer,
        401,
        "insufficient_user_authentication",
        Some(r#"Bearer realm="exchange", error="insufficient_user_authentication", max_age=300"#),
    );
    // GET on the withdrawal path matches no rule: default deny.
    let answer = send(
        &mut host,
        "GET",
        "/api/v1/wallet/withdrawals",
        &[("authorization", &fresh)],
    );
    assert_denied(&host, &answer, 403, "access_denied", None);
}

#[test]
fn malformed_tokens_are_invalid_tokens() {
    let Gateway { mut host, .. } = gateway();
    let good = keys().ec.sign(trade_claims(&host)).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    // Each a well-formed `Authorization: Bearer <b64token>`, so the token itself is judged:
    // 401 invalid_token, each counted under its own reason.
    let invalid_tokens = [
        (format!("{header}.{payload}"), "malformed_token"),
        (format!("{good}.extra"), "malformed_token"),
        (format!("{header}.{payload}."), "malformed_token"),
        // Standard-alphabet base64 (`+`, `/`) and an impossible length are not base64url.
        (
            format!("{}+/.{payload}.{signature}", &header[..header.len() - 2]),
            "malformed_token",
        ),
        (
            format!("{header}A.{payload}.{signature}"),
            "malformed_token",
        ),
        (
            format!("{header}.{payload}A.{signature}"),
            "malformed_token",
        ),
        // Bad JSON, or JSON that is not an object, in the header and in the payload.
        (
            format!("{}.{payload}.{signature}", b64(b"{\"alg\":\"ES256\"")),
            "malformed_token",
        ),
        (
            format!("{}.{payload}.{signature}", b64(b"[\"ES256\"]")),
            "malformed_token",
        ),
        (
            format!("{header}.{}.{signature}", b64(b"{not json")),
            "malformed_token",
        ),
        (
            format!("{header}.{}.{signature}", b64(b"[1,2]")),
            "malformed_token",
        ),
        // JWE compact serialization: five segments.
        (
            format!("{}.a.b.c.d", b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#)),
            "jwe",
        ),
    ];
    for (token, reason) in &invalid_tokens {
        let before = host
            .counter(&format!("jwt_authz_denied_{reason}_total"))
            .unwrap_or(0);
        let answer = get_with_token(&mut host, TRADE, token);
        assert_denied(&host, &answer, 401, "invalid_token", Some(INVALID_TOKEN));
        assert_eq!(denied_total(&host, reason), before + 1, "{token}: {reason}");
    }
    // Bytes no `b64token` may hold (`=` inside, `*`): the credentials themselves are
    // malformed, 400 invalid_request (RFC 6750 §3.1).
    for token in [
        format!("{header}.e30=.{signature}"),
        format!("{header}.e30*.{signature}"),
    ] {
        let answer = get_with_token(&mut host, TRADE, &token);
        assert_invalid_request(&host, &answer);
    }
    assert_eq!(denied_total(&host, "malformed_authorization"), 2);
    assert_eq!(
        denied_total(&host, "bad_signature"),
        0,
        "no case reached crypto"
    );
}

#[test]
fn an_oversize_token_is_rejected_before_any_crypto() {
    let Gateway {
        mut host,
        host_verifications,
    } = gateway();
    let padding = "x".repeat(2100);
    let token = keys()
        .rsa
        .sign(claims(
            &host,
            json!({"scope": "trade:read", "padding": padding}),
        ))
        .unwrap();
    let answer = get_with_token(&mut host, TRADE, &token);
    assert_invalid_token(&host, &answer, "token_too_large");
    assert_eq!(host_verifications.load(Ordering::SeqCst), 0);
}

#[test]
fn credentials_must_come_once_and_only_in_the_authorization_header() {
    let Gateway { mut host, .. } = gateway();
    let token = keys().ec.sign(trade_claims(&host)).unwrap();
    let bearer = format!("Bearer {token}");
    let answer = send(
        &mut host,
        "GET",
        TRADE,
        &[("authorization", &bearer), ("authorization", &bearer)],
    );
    assert_invalid_request(&host, &answer);
    assert_eq!(denied_total(&host, "multiple_authorization_headers"), 1);

    for path in [
        format!("{TRADE}?access_token={token}"),
        format!("{TRADE}?a=1&ACCESS_TOKEN=x"),
        format!("{TRADE}?access%5Ftoken=x"),
    ] {
        let answer = send(&mut host, "GET", &path, &[("authorization", &bearer)]);
        assert_invalid_request(&host, &answer);
    }
    let answer = send(
        &mut host,
        "GET",
        &format!("{TRADE}?access_token={token}"),
        &[],
    );
    assert_invalid_request(&host, &answer);
    assert_eq!(denied_total(&host, "token_in_query"), 4);

    let answer = send(&mut host, "GET", TRADE, &[]);
    assert_denied(
        &host,
        &answer,
        401,
        "unauthorized",
        Some(r#"Bearer realm="exchange""#),
    );
}

#[test]
fn bearer_scheme_is_case_insensitive_but_whitespace_is_strict() {
    let Gateway { mut host, .. } = gateway();
    let token = keys().ec.sign(trade_claims(&host)).unwrap();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {token}");
        let answer = send(&mut host, "GET", TRADE, &[("authorization", &value)]);
        assert_eq!(answer.action, Action::Continue, "{scheme}");
    }
    for value in [
        format!("Bearer  {token}"),
        format!("Bearer\t{token}"),
        format!("Bearer {token} "),
        format!("Bearer {token} x"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
    ] {
        let answer = send(&mut host, "GET", TRADE, &[("authorization", &value)]);
        assert_invalid_request(&host, &answer);
    }
    for value in [
        format!("Basic {token}"),
        format!("Token {token}"),
        token.clone(),
    ] {
        let answer = send(&mut host, "GET", TRADE, &[("authorization", &value)]);
        assert_denied(
            &host,
            &answer,
            401,
            "unauthorized",
            Some(r#"Bearer realm="exchange""#),
        );
    }
}

#[test]
fn claim_values_with_control_bytes_never_reach_a_header() {
    let Gateway { mut host, .. } = gateway();
    for subject in [
        "alice\r\nx-auth-scopes: wallet:withdraw",
        "alice\n",
        "alice\u{0}",
        "al\u{7f}ice",
        "\u{e9}lise",
    ] {
        let mut claims = trade_claims(&host);
        claims.subject = Some(subject.to_owned());
        let token = keys().ec.sign(claims).unwrap();
        let answer = get_with_token(&mut host, TRADE, &token);
        assert_invalid_token(&host, &answer, "unsafe_identity_claim");
        for (name, value) in host.request_headers_of(answer.stream) {
            assert!(
                !value.contains('\n') && !value.contains('\r'),
                "{name}: {value:?}"
            );
        }
    }
    let mut client = trade_claims(&host);
    client
        .custom
        .insert("client_id".to_owned(), json!("bot\r\n7"));
    let token = keys().ec.sign(client).unwrap();
    let answer = get_with_token(&mut host, TRADE, &token);
    assert_invalid_token(&host, &answer, "unsafe_identity_claim");

    // Scope tokens with control bytes, in both claim forms, are not RFC 6749 scope tokens:
    // they are left out of `x-auth-scopes` (and can satisfy no rule); the rest pass exactly.
    for extra in [
        json!({"scope": "trade:read evil\r\nx-auth-subject:admin"}),
        json!({"scp": ["trade:read", "evil\nx-auth-subject: admin", "nul\u{0}"]}),
    ] {
        let token = keys().ec.sign(claims(&host, extra.clone())).unwrap();
        let answer = get_with_token(&mut host, TRADE, &token);
        assert_eq!(answer.action, Action::Continue, "{extra}");
        assert_eq!(
            host.request_header(answer.stream, "x-auth-scopes")
                .as_deref(),
            Some("trade:read"),
            "{extra}"
        );
        assert_eq!(
            host.request_header(answer.stream, "x-auth-subject")
                .as_deref(),
            Some("user-42")
        );
        for (name, value) in host.request_headers_of(answer.stream) {
            assert!(
                !value.contains('\n') && !value.contains('\r') && !value.contains('\0'),
                "{name}: {value:?}"
            );
        }
    }
    // A control byte inside the only required scope: nothing to match, 403, nothing written.
    let token = keys()
        .ec
        .sign(claims(&host, json!({"scope": "trade:read\r\n"})))
        .unwrap();
    let answer = get_with_token(&mut host, TRADE, &token);
    assert_denied(
        &host,
        &answer,
        403,
        "insufficient_scope",
        Some(TRADE_INSUFFICIENT_SCOPE),
    );

    // Non-UTF-8 bytes in request headers are denied, never a trap.
    let stream = host.new_stream();
    let action = host
        .request_headers_bytes(
            stream,
            vec![
                (":method".into(), b"GET".to_vec()),
                (":path".into(), b"/api/v1/trade/\xff".to_vec()),
                (":authority".into(), b"api".to_vec()),
                ("authorization".into(), b"Bearer \xfe\xff".to_vec()),
            ],
            true,
        )
        .unwrap();
    assert_eq!(action, Action::Pause);
    assert_eq!(host.local_reply(stream).unwrap().status, 400);
    assert!(host.failed().is_none());
}

#[test]
fn non_canonical_paths_never_match_a_rule() {
    let Gateway { mut host, .. } = gateway();
    // A valid token for `trade` and an anonymous `/healthz`: none of these spellings may
    // reach either rule.
    let token = keys().ec.sign(trade_claims(&host)).unwrap();
    let bearer = format!("Bearer {token}");
    for path in [
        "/api/v1/trade%2Forders",
        "/api/v1/trade%2forders",
        "/api/v1/trade%5Corders",
        "/api/v1/./trade/orders",
        "/api/v1/wallet/../trade/orders",
        "/api//v1/trade/orders",
        "/healthz/../api/v1/wallet/withdrawals",
        "/healthz%2F..%2Fapi",
        "/api/v1/%74rade/orders",
        "api/v1/trade/orders",
    ] {
        let answer = send(&mut host, "GET", path, &[("authorization", &bearer)]);
        assert_denied(&host, &answer, 400, "invalid_request", None);
    }
    assert_eq!(denied_total(&host, "invalid_path"), 10);
    // Case and prefix boundaries: no rule, default deny.
    for path in ["/API/v1/trade/orders", "/api/v1/trades"] {
        let answer = send(&mut host, "GET", path, &[("authorization", &bearer)]);
        assert_denied(&host, &answer, 403, "access_denied", None);
    }
}

#[test]
fn spoofed_identity_headers_are_stripped_on_anonymous_routes() {
    let Gateway { mut host, .. } = gateway();
    let answer = send(
        &mut host,
        "GET",
        "/healthz",
        &[
            ("x-auth-subject", "admin"),
            ("x-auth-scopes", "wallet:withdraw"),
            ("x-auth-issuer", ISSUER),
            ("x-auth-client-id", "ops"),
            ("authorization", "Bearer garbage"),
        ],
    );
    assert_eq!(answer.action, Action::Continue);
    for name in [
        "x-auth-subject",
        "x-auth-scopes",
        "x-auth-issuer",
        "x-auth-client-id",
    ] {
        assert!(host.request_header(answer.stream, name).is_none(), "{name}");
    }
    assert_eq!(
        flushed(&mut host, "jwt_authz_allowed_anonymous_total"),
        Some(1)
    );
}

/// The filter cannot do its part (read the request, remove a client's identity header, write
/// the verified identity): the request is denied, never forwarded half-checked.
#[test]
fn a_failed_host_call_denies_instead_of_passing() {
    const BAD_ARGUMENT: u32 = 2;
    let unavailable = r#"Bearer realm="svc-gateway", error="invalid_token""#;
    // Each request carries a valid token and a spoofed identity header; the failing call is
    // the map read, the removal of the spoofed header (on an anonymous route too), or the
    // write of the verified identity.
    for (call, path) in [
        ("proxy_get_header_map_pairs", TRADE),
        ("proxy_remove_header_map_value", "/healthz"),
        ("proxy_add_header_map_value", TRADE),
    ] {
        let Gateway { mut host, .. } = gateway();
        let bearer = format!("Bearer {}", keys().ec.sign(trade_claims(&host)).unwrap());
        host.fail_host_call(call, BAD_ARGUMENT, 1);
        let answer = send(
            &mut host,
            "GET",
            path,
            &[("authorization", &bearer), ("x-auth-subject", "admin")],
        );
        // The request stops here with a local reply: the upstream never sees the map.
        assert_eq!(answer.action, Action::Pause, "{call}");
        let reply = host.local_reply(answer.stream).unwrap();
        assert_eq!(reply.status, 401, "{call}");
        assert_eq!(reply.header("www-authenticate"), Some(unavailable));
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"], "invalid_token", "{call}");
        assert_eq!(denied_total(&host, "verifier_unavailable"), 1, "{call}");
        assert!(host.failed().is_none(), "{call}");
    }
}

// ------------------------------------------------------------------ keys

#[test]
fn the_jwks_fetch_goes_to_the_configured_cluster() {
    let (builder, _) = builder_with(&config(), None);
    let mut host = builder.build().unwrap();
    // Before the first fetch answers, a request waits for it instead of failing.
    host.advance(StdDuration::from_millis(5)).unwrap();
    let calls = host.http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.upstream, JWKS_CLUSTER);
    assert_eq!(call.timeout, StdDuration::from_millis(2000));
    let header = |name: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":method"), Some("GET"));
    assert_eq!(header(":path"), Some(JWKS_PATH));
    assert_eq!(header(":authority"), Some("idp.exchange.test"));
    let token = keys().ec.sign(trade_claims(&host)).unwrap();
    let answer = get_with_token(&mut host, TRADE, &token);
    assert_eq!(answer.action, Action::Pause);
    assert!(
        host.local_reply(answer.stream).is_none(),
        "waits for the keys"
    );
    host.respond_http_call(call.token, &[(":status", "200")], &initial_jwks())
        .unwrap();
    assert!(host.request_resumed(answer.stream), "{:?}", host.logs());
    assert_eq!(
        host.request_header(answer.stream, "x-auth-subject")
            .as_deref(),
        Some("user-42")
    );
}

#[test]
fn a_rotated_key_is_accepted_at_once_with_one_rate_limited_fetch() {
    let Gateway { mut host, .. } = gateway();
    host.advance(StdDuration::from_secs(31)).unwrap();
    assert!(host.http_calls().is_empty());
    let rotated = keys().ec_rotated.sign(trade_claims(&host)).unwrap();
    let first = get_with_token(&mut host, TRADE, &rotated);
    assert_eq!(first.action, Action::Pause);
    assert!(host.local_reply(first.stream).is_none());
    // Concurrent requests with the new kid and with a bogus one wait for the same fetch.
    let second = get_with_token(&mut host, TRADE, &rotated);
    let bogus_token = ES256KeyPair::generate()
        .with_key_id("random-kid")
        .sign(trade_claims(&host))
        .unwrap();
    let bogus = get_with_token(&mut host, TRADE, &bogus_token);
    host.advance(StdDuration::from_millis(2)).unwrap();
    let calls = host.http_calls();
    assert_eq!(calls.len(), 1, "one fetch for all of them");
    assert_eq!(host.counter("jwt_authz_unknown_kid_waits_total"), Some(3));
    let rotated_jwks = jwks(&[
        rsa_jwk(&keys().rsa),
        ec_jwk(&keys().ec),
        ec_jwk(&keys().ec_rotated),
    ]);
    host.respond_http_call(calls[0].token, &[(":status", "200")], &rotated_jwks)
        .unwrap();
    for answer in [&first, &second] {
        assert!(host.request_resumed(answer.stream), "{:?}", host.logs());
        assert!(host.local_reply(answer.stream).is_none());
        assert_eq!(
            host.request_header(answer.stream, "x-auth-subject")
                .as_deref(),
            Some("user-42")
        );
    }
    assert_invalid_token(&host, &bogus, "unknown_kid");

    // Another unknown kid right after: no new fetch (rate limit), denied at once.
    let again = ES256KeyPair::generate()
        .with_key_id("random-2")
        .sign(trade_claims(&host))
        .unwrap();
    let answer = get_with_token(&mut host, TRADE, &again);
    assert_invalid_token(&host, &answer, "unknown_kid");
    host.advance(StdDuration::from_millis(50)).unwrap();
    assert!(host.http_calls().is_empty());
    assert_eq!(host.counter("jwt_authz_jwks_fetches_ok_total"), Some(2));
}

#[test]
fn a_waiting_request_is_denied_when_the_fetch_fails() {
    let Gateway { mut host, .. } = gateway();
    host.advance(StdDuration::from_secs(31)).unwrap();
    let rotated = keys().ec_rotated.sign(trade_claims(&host)).unwrap();
    let answer = get_with_token(&mut host, TRADE, &rotated);
    host.advance(StdDuration::from_millis(2)).unwrap();
    let call = host.http_calls()[0].clone();
    // The IdP is slow: Envoy's timeout answers 504 after 2 s, the request is then denied.
    host.advance(StdDuration::from_millis(2100)).unwrap();
    assert!(host.http_calls().iter().all(|c| c.token != call.token));
    assert_invalid_token(&host, &answer, "unknown_kid");
    assert_eq!(host.counter("jwt_authz_jwks_fetches_failed_total"), Some(1));
    // Known keys still work.
    let token = keys().rsa.sign(trade_claims(&host)).unwrap();
    assert_eq!(
        get_with_token(&mut host, TRADE, &token).action,
        Action::Continue
    );
}

#[test]
fn keys_refresh_on_the_tick_and_removed_keys_stop_working() {
    let Gateway { mut host, .. } = gateway();
    let old = keys().rsa.sign(trade_claims(&host)).unwrap();
    assert_eq!(
        get_with_token(&mut host, TRADE, &old).action,
        Action::Continue
    );
    host.advance(StdDuration::from_secs(299)).unwrap();
    assert!(host.http_calls().is_empty());
    host.advance(StdDuration::from_secs(2)).unwrap();
    let calls = host.http_calls();
    assert_eq!(calls.len(), 1, "periodic refresh");
    // The IdP rotated: RSA key withdrawn, new EC key published.
    let rotated = jwks(&[ec_jwk(&keys().ec_rotated)]);
    host.respond_http_call(calls[0].token, &[(":status", "200")], &rotated)
        .unwrap();
    assert!(host.has_log(LogLevel::Info, "updated: 1 usable keys"));
    // The cached verification of the old token dies with its key.
    // (The refetch it would trigger is rate-limited: the JWKS was fetched a moment ago.)
    let answer = get_with_token(&mut host, TRADE, &old);
    assert!(host.http_calls().is_empty());
    assert_invalid_token(&host, &answer, "unknown_kid");
    let new = keys().ec_rotated.sign(trade_claims(&host)).unwrap();
    assert_eq!(
        get_with_token(&mut host, TRADE, &new).action,
        Action::Continue
    );
}

#[test]
fn last_known_good_keys_survive_failures_and_garbage_then_go_stale() {
    let Gateway { mut host, .. } = gateway();
    let started = now(&host);
    let token_at = |host: &Host| keys().ec.sign(trade_claims(host)).unwrap();
    let bad_answers: [(&str, &[u8]); 5] = [
        ("500", b"oops"),
        ("200", b"<html>maintenance</html>"),
        ("200", br#"{"keys": []}"#),
        ("200", br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#),
        ("404", b""),
    ];
    let mut failures = 0;
    for (status, body) in bad_answers {
        // Wait until the next fetch is issued (refresh or backoff), then answer it badly.
        let mut waited = 0;
        while host.http_calls().is_empty() && waited < 400 {
            host.advance(StdDuration::from_secs(1)).unwrap();
            waited += 1;
        }
        let call = host.http_calls()[0].clone();
        host.respond_http_call(call.token, &[(":status", status)], body)
            .unwrap();
        failures += 1;
        assert_eq!(
            host.counter("jwt_authz_jwks_fetches_failed_total"),
            Some(failures)
        );
        let token = token_at(&host);
        let answer = get_with_token(&mut host, TRADE, &token);
        assert_eq!(
            answer.action,
            Action::Continue,
            "after {status}: {:?}",
            host.logs()
        );
    }
    assert!(host.has_log(LogLevel::Warn, "keeping the last known good keys"));
    assert!(host.gauge("jwt_authz_jwks_age_seconds").unwrap() > 300);

    // maxStalenessSeconds = 3600: past it the keys are no longer trusted (fail closed).
    let mut guard = 0;
    while now(&host) < started + 3_600 + 5 && guard < 100 {
        host.advance(StdDuration::from_secs(60)).unwrap();
        for call in host.http_calls() {
            host.fail_http_call(call.token).unwrap();
        }
        guard += 1;
    }
    let token = token_at(&host);
    let answer = get_with_token(&mut host, TRADE, &token);
    host.advance(StdDuration::from_millis(5)).unwrap();
    for call in host.http_calls() {
        host.fail_http_call(call.token).unwrap();
    }
    host.advance(StdDuration::from_secs(5)).unwrap();
    assert_eq!(answer.action, Action::Pause);
    assert_denied(&host, &answer, 401, "invalid_token", Some(INVALID_TOKEN));
    assert!(denied_total(&host, "keys_unavailable") >= 1);
    // Inline keys are configuration and never go stale.
    let ed = keys().ed.sign(trade_claims(&host)).unwrap();
    assert_eq!(
        get_with_token(&mut host, TRADE, &ed).action,
        Action::Continue
    );
}

#[test]
fn worker_vms_share_keys_and_fetch_once() {
    let shared = SharedData::new();
    let Gateway {
        host: mut first, ..
    } = gateway_sharing(Some(shared.clone()));
    assert_eq!(first.counter("jwt_authz_jwks_fetches_ok_total"), Some(1));
    // A second worker VM starts later: it takes the keys from shared data.
    let (builder, _) = builder_with(&config(), Some(shared.clone()));
    let mut second = builder.build().unwrap();
    assert!(second.configured());
    second.advance(StdDuration::from_millis(5)).unwrap();
    assert!(second.http_calls().is_empty(), "no second fetch");
    let token = keys().rsa.sign(trade_claims(&second)).unwrap();
    assert_eq!(
        get_with_token(&mut second, TRADE, &token).action,
        Action::Continue
    );

    // Periodic refresh: both are due at the same time, only one fetches (the lease). The
    // two VMs run side by side, one second at a time, like two Envoy workers.
    for _ in 0..301 {
        first.advance(StdDuration::from_secs(1)).unwrap();
        second.advance(StdDuration::from_secs(1)).unwrap();
    }
    let fetching = first.http_calls().len() + second.http_calls().len();
    assert_eq!(fetching, 1, "one fetch for both VMs");
    let rotated = jwks(&[rsa_jwk(&keys().rsa), ec_jwk(&keys().ec_rotated)]);
    for host in [&mut first, &mut second] {
        for call in host.http_calls() {
            host.respond_http_call(call.token, &[(":status", "200")], &rotated)
                .unwrap();
        }
    }
    // The other VM adopts the new snapshot on its next tick.
    first.advance(StdDuration::from_secs(1)).unwrap();
    second.advance(StdDuration::from_secs(1)).unwrap();
    for host in [&mut first, &mut second] {
        let token = keys().ec_rotated.sign(trade_claims(host)).unwrap();
        let answer = get_with_token(host, TRADE, &token);
        assert_eq!(answer.action, Action::Continue, "{:?}", host.logs());
        assert!(host.http_calls().is_empty());
    }
}

/// Worker VMs run on different threads. Worker B's tick reads the shared snapshot (none new
/// yet); worker A's fetch then completes, publishes and releases the lease; B then finds the
/// lease free and its keys due. B must take A's snapshot, not fetch the same JWKS again.
#[test]
fn a_worker_that_finds_the_lease_free_takes_a_snapshot_published_meanwhile() {
    let shared = SharedData::new();
    let Gateway {
        host: mut first, ..
    } = gateway_sharing(Some(shared.clone()));
    let (builder, _) = builder_with(&config(), Some(shared.clone()));
    let mut second = builder.build().unwrap();
    second.advance(StdDuration::from_millis(5)).unwrap();
    assert!(second.http_calls().is_empty());

    // Both ticks once a second at the same phase; both become due for the periodic refresh
    // at +300 s. A's tick there fetches, and the answer comes 1 ms later (A's clock), which
    // releases the lease from then on.
    for _ in 0..299 {
        first.advance(StdDuration::from_secs(1)).unwrap();
        second.advance(StdDuration::from_secs(1)).unwrap();
    }
    first.advance(StdDuration::from_millis(997)).unwrap();
    let calls = first.http_calls();
    assert_eq!(calls.len(), 1, "A fetches the due refresh");
    let rotated = jwks(&[rsa_jwk(&keys().rsa), ec_jwk(&keys().ec_rotated)]);
    first
        .respond_http_call(calls[0].token, &[(":status", "200")], &rotated)
        .unwrap();

    // B's next two ticks read the snapshot before A's write becomes visible to them. At the
    // first, A still holds the lease; at the second the lease is free and B's keys are due:
    // the moment the race opens.
    second.hide_shared_data("jwt-authz/jwks/", 2);
    second.advance(StdDuration::from_secs(2)).unwrap();
    assert!(
        second.http_calls().is_empty(),
        "B fetched the JWKS A had just published"
    );
    let token = keys().ec_rotated.sign(trade_claims(&second)).unwrap();
    assert_eq!(
        get_with_token(&mut second, TRADE, &token).action,
        Action::Continue,
        "B took A's keys"
    );
}

#[test]
fn reconfiguration_clears_the_cache_and_keeps_shared_keys() {
    let Gateway { mut host, .. } = gateway();
    let token = keys().rsa.sign(trade_claims(&host)).unwrap();
    assert_eq!(
        get_with_token(&mut host, TRADE, &token).action,
        Action::Continue
    );
    let mut narrower = config();
    narrower["rules"][2]["scopesAllOf"] = json!(["trade:write"]);
    narrower["rules"][2]
        .as_object_mut()
        .unwrap()
        .remove("scopesAnyOf");
    assert!(host.reconfigure(narrower.to_string()).unwrap());
    let answer = get_with_token(&mut host, TRADE, &token);
    assert_denied(
        &host,
        &answer,
        403,
        "insufficient_scope",
        Some(r#"Bearer realm="exchange", error="insufficient_scope", scope="trade:write""#),
    );
    // A bad update is refused; the running configuration stays.
    assert!(!host.reconfigure(b"{\"issuers\": []}".to_vec()).unwrap());
    let answer = get_with_token(&mut host, TRADE, &token);
    assert_eq!(host.local_reply(answer.stream).unwrap().status, 403);
}

#[test]
fn the_hosts_verdict_on_a_forged_rs256_signature_is_final() {
    let Gateway {
        mut host,
        host_verifications,
    } = gateway();
    let forged = RS256KeyPair::generate(2048)
        .unwrap()
        .with_key_id("rsa-1")
        .sign(trade_claims(&host))
        .unwrap();
    let answer = get_with_token(&mut host, TRADE, &forged);
    assert_invalid_token(&host, &answer, "bad_signature");
    assert_eq!(host_verifications.load(Ordering::SeqCst), 1);
}

#[test]
fn an_order_waiting_for_a_key_refetch_keeps_its_body_until_decided() {
    let Gateway { mut host, .. } = gateway();
    host.advance(StdDuration::from_secs(31)).unwrap();
    let token = keys()
        .ec_rotated
        .sign(claims(&host, json!({"scope": "trade:write"})))
        .unwrap();
    let bearer = format!("Bearer {token}");
    let stream = host.new_stream();
    let action = host
        .request_headers(
            stream,
            &[
                (":method", "POST"),
                (":path", TRADE),
                (":authority", "api.exchange.test"),
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(action, Action::Pause);
    let order = br#"{"side":"buy","qty":"1.5","symbol":"BTC-KRW"}"#;
    host.request_body(stream, order, true).unwrap();
    assert!(
        host.forwarded_request_body(stream).is_empty(),
        "held back while undecided"
    );
    host.advance(StdDuration::from_millis(2)).unwrap();
    let call = host.http_calls()[0].clone();
    let rotated = jwks(&[ec_jwk(&keys().ec), ec_jwk(&keys().ec_rotated)]);
    host.respond_http_call(call.token, &[(":status", "200")], &rotated)
        .unwrap();
    assert!(host.request_resumed(stream));
    assert_eq!(host.forwarded_request_body(stream), order.to_vec());
    assert_eq!(
        host.request_header(stream, "x-auth-subject").as_deref(),
        Some("user-42")
    );
}
