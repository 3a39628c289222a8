//! End-to-end decisions over the attack list (perf-security-anchors B5 / issue 3), natively.
//! The same cases must also run against `dist/jwt-authz.wasm` in the simulator, since the
//! wasm32 crypto backend differs from the native one.

use std::collections::HashSet;

use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

use super::authorizer::{Authorization, CacheUse, RequestView};
use super::base64url;
use super::cache::{CacheKey, TokenCache};
use super::config::tests::{base_config, parse};
use super::config::JwtAuthzConfig;
use super::decision::DenyReason;
use super::jwks::tests::{ed_jwk, test_keys};
use super::keyring::{KeyRing, UnknownKeyAction};
use super::token::tests::compact;
use super::verify::PureRustVerifier;

const NOW: u64 = 1_900_000_000;
const TRADE: &str = "/api/v1/trade/orders";

struct Gateway {
    config: JwtAuthzConfig,
    keys: KeyRing,
    cache: TokenCache,
}

impl Gateway {
    fn new() -> Self {
        Self::with_config(base_config())
    }

    fn with_config(config: Value) -> Self {
        let config = parse(&config).unwrap();
        let keys = KeyRing::new(&config);
        let cache = TokenCache::new(config.cache_size, CacheKey::from_bytes([42; 32]));
        Self {
            config,
            keys,
            cache,
        }
    }

    fn request(&mut self, method: &str, path: &str, authorization: &[&str]) -> Authorization {
        let request = RequestView {
            method,
            path,
            authorization,
        };
        self.config.authorize(
            &request,
            &self.keys,
            &mut self.cache,
            &PureRustVerifier,
            NOW,
        )
    }

    fn bearer(&mut self, path: &str, token: &str) -> Authorization {
        let header = format!("Bearer {token}");
        self.request("GET", path, &[&header])
    }
}

fn custom(extra: Value) -> Map<String, Value> {
    match extra {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn claims(extra: Value) -> JWTClaims<Map<String, Value>> {
    let mut claims = Claims::with_custom_claims(custom(extra), Duration::from_secs(600))
        .with_issuer("https://idp.example")
        .with_subject("user-42")
        .with_audience("trade");
    claims.issued_at = Some(UnixTimeStamp::from_secs(NOW - 10));
    claims.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
    claims.invalid_before = Some(UnixTimeStamp::from_secs(NOW - 10));
    claims
}

fn trade_claims() -> JWTClaims<Map<String, Value>> {
    claims(json!({"scope": "trade:read", "client_id": "bot-7"}))
}

fn es256(claims: JWTClaims<Map<String, Value>>) -> String {
    test_keys().es256.sign(claims).unwrap()
}

fn reason(outcome: &Authorization) -> Option<DenyReason> {
    match outcome {
        Authorization::Deny(denial) => Some(denial.reason),
        Authorization::UnknownKey { denial, .. } => Some(denial.reason),
        _ => None,
    }
}

fn status(outcome: &Authorization) -> u16 {
    match outcome {
        Authorization::Deny(denial) | Authorization::UnknownKey { denial, .. } => denial.status,
        _ => 200,
    }
}

#[test]
fn a_valid_token_is_allowed_with_identity_then_served_from_cache() {
    let mut gateway = Gateway::new();
    let token = es256(trade_claims());
    let first = gateway.bearer(TRADE, &token);
    let Authorization::Allow {
        rule,
        token: verified,
        cache,
    } = &first
    else {
        panic!("expected allow, got {first:?}");
    };
    assert_eq!(*rule, 2);
    assert_eq!(*cache, CacheUse::Miss);
    let headers: Vec<(String, String)> = verified
        .identity
        .headers(&gateway.config.identity_headers)
        .map(|(name, value)| (name.as_str().to_owned(), value.as_str().to_owned()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-auth-issuer".to_owned(), "https://idp.example".to_owned()),
            ("x-auth-subject".to_owned(), "user-42".to_owned()),
            ("x-auth-scopes".to_owned(), "trade:read".to_owned()),
            ("x-auth-client-id".to_owned(), "bot-7".to_owned()),
        ]
    );
    let second = gateway.bearer(TRADE, &token);
    assert!(
        matches!(
            second,
            Authorization::Allow {
                cache: CacheUse::Hit,
                ..
            }
        ),
        "{second:?}"
    );
}

#[test]
fn every_supported_issuer_key_type_verifies() {
    let mut gateway = Gateway::new();
    let rsa = test_keys().rsa.sign(trade_claims()).unwrap();
    assert!(matches!(
        gateway.bearer(TRADE, &rsa),
        Authorization::Allow { .. }
    ));
    let secret = [0x42u8; 32];
    let mut hmac_claims = trade_claims();
    hmac_claims.issuer = Some("https://hmac.example".to_owned());
    let hmac = HS256Key::from_bytes(&secret)
        .authenticate(hmac_claims)
        .unwrap();
    assert!(matches!(
        gateway.bearer(TRADE, &hmac),
        Authorization::Allow { .. }
    ));
}

#[test]
fn header_attacks_are_rejected_before_crypto() {
    let mut gateway = Gateway::new();
    let payload = serde_json::to_string(&trade_claims()).unwrap();
    let rsa_public_der = test_keys().rsa.public_key().to_der().unwrap();
    let mut hs_confusion_claims = trade_claims();
    hs_confusion_claims.issuer = Some("https://idp.example".to_owned());
    let hs_confusion = HS256Key::from_bytes(&rsa_public_der)
        .with_key_id("rsa-1")
        .authenticate(hs_confusion_claims)
        .unwrap();
    let ed_token = test_keys().ed25519.sign(trade_claims()).unwrap();
    let cases = [
        (
            compact(r#"{"alg":"none"}"#, &payload, b"x"),
            DenyReason::AlgorithmNone,
        ),
        (
            compact(r#"{"alg":"None"}"#, &payload, b"x"),
            DenyReason::AlgorithmNone,
        ),
        (
            compact(r#"{"alg":"NONE"}"#, &payload, b"x"),
            DenyReason::AlgorithmNone,
        ),
        (
            compact(r#"{"alg":"nOnE"}"#, &payload, b"x"),
            DenyReason::AlgorithmNone,
        ),
        (
            format!(
                "{}.",
                compact(r#"{"alg":"none"}"#, &payload, b"x")
                    .rsplit_once('.')
                    .unwrap()
                    .0
            ),
            DenyReason::MalformedToken,
        ),
        (hs_confusion, DenyReason::AlgorithmNotAllowed),
        (ed_token, DenyReason::AlgorithmNotAllowed),
        (
            compact(
                r#"{"alg":"ES256","kid":"ec-1","jwk":{"kty":"EC"}}"#,
                &payload,
                b"x",
            ),
            DenyReason::EmbeddedKey,
        ),
        (
            compact(
                r#"{"alg":"ES256","jku":"https://evil.example/jwks"}"#,
                &payload,
                b"x",
            ),
            DenyReason::EmbeddedKey,
        ),
        (
            compact(
                r#"{"alg":"ES256","x5u":"https://evil.example/c"}"#,
                &payload,
                b"x",
            ),
            DenyReason::EmbeddedKey,
        ),
        (
            compact(r#"{"alg":"ES256","x5c":["MIIB"]}"#, &payload, b"x"),
            DenyReason::EmbeddedKey,
        ),
        (
            compact(
                r#"{"alg":"ES256","kid":"ec-1","crit":["foo"],"foo":1}"#,
                &payload,
                b"x",
            ),
            DenyReason::CriticalHeader,
        ),
    ];
    for (token, expected) in cases {
        let outcome = gateway.bearer(TRADE, &token);
        assert_eq!(reason(&outcome), Some(expected), "{token}");
        assert_eq!(status(&outcome), 401);
    }
}

#[test]
fn malformed_tokens_are_rejected() {
    let mut gateway = Gateway::new();
    let valid = es256(trade_claims());
    let (signing_input, signature) = valid.rsplit_once('.').unwrap();
    let mut flipped = signature.as_bytes().to_vec();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{signing_input}.{}", String::from_utf8(flipped).unwrap());
    let zero_signature = format!("{signing_input}.{}", base64url::encode(&[0u8; 64]));
    let der_signature = format!("{signing_input}.{}", base64url::encode(&[0x30u8; 70]));
    let cases = [
        (signing_input.to_owned(), DenyReason::MalformedToken),
        (format!("{valid}.extra"), DenyReason::MalformedToken),
        (format!("{valid}.a.b"), DenyReason::Jwe),
        (
            format!("{signing_input}.{signature}="),
            DenyReason::MalformedToken,
        ),
        (
            format!("{}.e30.c2ln", base64url::encode(b"{not json")),
            DenyReason::MalformedToken,
        ),
        (flipped, DenyReason::BadSignature),
        (zero_signature, DenyReason::BadSignature),
        (der_signature, DenyReason::BadSignature),
    ];
    for (token, expected) in cases {
        assert_eq!(
            reason(&gateway.bearer(TRADE, &token)),
            Some(expected),
            "{token}"
        );
    }
}

#[test]
fn claim_checks_run_with_the_configured_skew() {
    let mut gateway = Gateway::new();
    let mut expired = trade_claims();
    expired.expires_at = Some(UnixTimeStamp::from_secs(NOW - 31));
    let mut within_skew = trade_claims();
    within_skew.expires_at = Some(UnixTimeStamp::from_secs(NOW - 30));
    let mut future = trade_claims();
    future.invalid_before = Some(UnixTimeStamp::from_secs(NOW + 31));
    let mut no_exp = trade_claims();
    no_exp.expires_at = None;
    let mut wrong_issuer = trade_claims();
    wrong_issuer.issuer = Some("https://idp.example/".to_owned());
    let mut no_issuer = trade_claims();
    no_issuer.issuer = None;
    let cases = [
        (es256(expired), Some(DenyReason::Expired)),
        (es256(within_skew), None),
        (es256(future), Some(DenyReason::NotYetValid)),
        (es256(no_exp), Some(DenyReason::MissingExpiry)),
        (es256(wrong_issuer), Some(DenyReason::UnknownIssuer)),
        (es256(no_issuer), Some(DenyReason::InvalidClaims)),
    ];
    for (token, expected) in cases {
        assert_eq!(reason(&gateway.bearer(TRADE, &token)), expected);
    }
}

#[test]
fn audience_and_scope_policy() {
    let mut gateway = Gateway::new();
    let with = |audiences: Option<Value>, extra: Value| {
        let mut claims = claims(extra);
        claims.audiences = None;
        if let Some(Value::String(audience)) = &audiences {
            claims = claims.with_audience(audience);
        }
        if let Some(Value::Array(list)) = &audiences {
            let set: HashSet<String> = list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            claims = claims.with_audiences(set);
        }
        es256(claims)
    };
    let cases = [
        (
            with(Some(json!("trade")), json!({"scope": "trade:write"})),
            None,
        ),
        (
            with(
                Some(json!(["other", "api"])),
                json!({"scp": ["trade:read"]}),
            ),
            None,
        ),
        (
            with(Some(json!("trade")), json!({"scp": "x trade:read"})),
            None,
        ),
        (
            with(Some(json!("wallet")), json!({"scope": "trade:read"})),
            Some(DenyReason::AudienceMismatch),
        ),
        (
            with(
                Some(json!(["wallet", "risk"])),
                json!({"scope": "trade:read"}),
            ),
            Some(DenyReason::AudienceMismatch),
        ),
        (
            with(Some(json!([])), json!({"scope": "trade:read"})),
            Some(DenyReason::AudienceMismatch),
        ),
        (
            with(None, json!({"scope": "trade:read"})),
            Some(DenyReason::AudienceMismatch),
        ),
        (
            with(Some(json!("trade")), json!({"scope": "wallet:read"})),
            Some(DenyReason::InsufficientScope),
        ),
        (
            with(Some(json!("trade")), json!({"scp": ["wallet:read"]})),
            Some(DenyReason::InsufficientScope),
        ),
        (
            with(Some(json!("trade")), json!({})),
            Some(DenyReason::InsufficientScope),
        ),
        (
            with(Some(json!("trade")), json!({"scope": "trade:readx"})),
            Some(DenyReason::InsufficientScope),
        ),
    ];
    for (token, expected) in cases {
        assert_eq!(reason(&gateway.bearer(TRADE, &token)), expected);
    }
    let denied = gateway.bearer(TRADE, &with(Some(json!("trade")), json!({})));
    let Authorization::Deny(denial) = denied else {
        panic!("expected a denial")
    };
    assert_eq!(denial.status, 403);
    assert_eq!(
        denial.www_authenticate.as_deref(),
        Some(
            r#"Bearer realm="exchange", error="insufficient_scope", scope="trade:read trade:write""#
        )
    );
    let audience = gateway.bearer(
        TRADE,
        &with(Some(json!("wallet")), json!({"scope": "trade:read"})),
    );
    assert_eq!(status(&audience), 401);
}

#[test]
fn sensitive_routes_check_auth_age_and_claims() {
    let mut gateway = Gateway::new();
    let withdraw = |extra: Value| {
        let mut claims = claims(extra);
        claims = claims.with_audience("wallet");
        let token = es256(claims);
        format!("Bearer {token}")
    };
    let path = "/api/v1/wallet/withdrawals";
    let cases = [
        (
            json!({"scope": "wallet:withdraw", "acr": "mfa", "auth_time": NOW - 60}),
            None,
        ),
        (
            json!({"scope": "wallet:withdraw", "acr": "mfa", "auth_time": NOW - 301}),
            Some(DenyReason::AuthenticationTooOld),
        ),
        (
            json!({"scope": "wallet:withdraw", "acr": "mfa"}),
            Some(DenyReason::AuthenticationTooOld),
        ),
        (
            json!({"scope": "wallet:withdraw", "acr": "pwd", "auth_time": NOW - 60}),
            Some(DenyReason::ClaimMismatch),
        ),
        (
            json!({"scope": "wallet:withdraw", "auth_time": NOW - 60}),
            Some(DenyReason::ClaimMismatch),
        ),
        (
            json!({"scope": "wallet:read", "acr": "mfa", "auth_time": NOW - 60}),
            Some(DenyReason::InsufficientScope),
        ),
    ];
    for (extra, expected) in cases {
        let header = withdraw(extra.clone());
        let outcome = gateway.request("POST", path, &[&header]);
        assert_eq!(reason(&outcome), expected, "{extra}");
    }
    let header =
        withdraw(json!({"scope": "wallet:withdraw", "acr": "mfa", "auth_time": NOW - 900}));
    let Authorization::Deny(denial) = gateway.request("POST", path, &[&header]) else {
        panic!("expected a denial")
    };
    assert_eq!(denial.status, 401);
    assert_eq!(
        denial.www_authenticate.as_deref(),
        Some(r#"Bearer realm="exchange", error="insufficient_user_authentication", max_age=300"#)
    );
}

#[test]
fn credential_delivery_rules() {
    let mut gateway = Gateway::new();
    let token = es256(trade_claims());
    let bearer = format!("Bearer {token}");
    let lower = format!("bearer {token}");
    let double_space = format!("Bearer  {token}");
    let tab = format!("Bearer\t{token}");
    let oversized = format!("Bearer {}", "a".repeat(8193));
    let query = format!("{TRADE}?access_token={token}");
    let cases: Vec<(&str, Vec<&str>, Option<DenyReason>, u16)> = vec![
        (TRADE, vec![&lower], None, 200),
        (TRADE, vec![], Some(DenyReason::MissingToken), 401),
        (
            TRADE,
            vec!["Basic dXNlcjpwYXNz"],
            Some(DenyReason::MissingToken),
            401,
        ),
        (
            TRADE,
            vec![&bearer, &bearer],
            Some(DenyReason::MultipleAuthorizationHeaders),
            400,
        ),
        (&query, vec![&bearer], Some(DenyReason::TokenInQuery), 400),
        (&query, vec![], Some(DenyReason::TokenInQuery), 400),
        (
            TRADE,
            vec![&double_space],
            Some(DenyReason::MalformedAuthorization),
            400,
        ),
        (
            TRADE,
            vec![&tab],
            Some(DenyReason::MalformedAuthorization),
            400,
        ),
        (
            TRADE,
            vec!["Bearer"],
            Some(DenyReason::MalformedAuthorization),
            400,
        ),
        (
            TRADE,
            vec![&oversized],
            Some(DenyReason::TokenTooLarge),
            401,
        ),
    ];
    for (path, headers, expected, expected_status) in cases {
        let outcome = gateway.request("GET", path, &headers);
        assert_eq!(reason(&outcome), expected, "{headers:?}");
        assert_eq!(status(&outcome), expected_status, "{headers:?}");
    }
    let missing = gateway.request("GET", TRADE, &[]);
    let Authorization::Deny(denial) = missing else {
        panic!("expected a denial")
    };
    assert_eq!(
        denial.www_authenticate.as_deref(),
        Some(r#"Bearer realm="exchange""#)
    );
}

#[test]
fn claims_with_control_bytes_never_become_headers() {
    let mut gateway = Gateway::new();
    for subject in ["user\r\nx-auth-scopes: admin", "user\0", "user\u{1b}[31m"] {
        let mut claims = trade_claims();
        claims.subject = Some(subject.to_owned());
        let outcome = gateway.bearer(TRADE, &es256(claims));
        assert_eq!(
            reason(&outcome),
            Some(DenyReason::UnsafeIdentityClaim),
            "{subject:?}"
        );
    }
}

#[test]
fn paths_are_matched_only_in_canonical_form() {
    let mut gateway = Gateway::new();
    let cases = [
        ("/healthz", None),
        ("/healthz?probe=1", None),
        ("/api/v1/trade%2Forders", Some(DenyReason::InvalidPath)),
        ("/api/v1/%74rade/orders", Some(DenyReason::InvalidPath)),
        (
            "/api/v1/wallet/../trade/orders",
            Some(DenyReason::InvalidPath),
        ),
        ("/api/v1/./trade", Some(DenyReason::InvalidPath)),
        ("/api/v1//trade", Some(DenyReason::InvalidPath)),
        ("/api/v1/trade%5Corders", Some(DenyReason::InvalidPath)),
        (
            "/healthz/..;/api/v1/wallet/withdrawals",
            Some(DenyReason::InvalidPath),
        ),
        ("/api/v1/unknown", Some(DenyReason::NoMatchingRule)),
        ("/API/V1/TRADE", Some(DenyReason::NoMatchingRule)),
    ];
    for (path, expected) in cases {
        let outcome = gateway.request("GET", path, &["Basic garbage"]);
        assert_eq!(reason(&outcome), expected, "{path}");
    }
    assert_eq!(status(&gateway.request("GET", "/api/v1//trade", &[])), 400);
    assert_eq!(status(&gateway.request("GET", "/nope", &[])), 403);
    // Anonymous routes ignore credentials entirely, even broken ones.
    assert!(matches!(
        gateway.request("GET", "/healthz", &["Bearer a", "Bearer b"]),
        Authorization::AllowAnonymous { rule: 0 }
    ));
}

#[test]
fn key_rotation_through_the_remote_jwks() {
    let mut gateway = Gateway::new();
    let rotated = test_keys().ed25519.clone();
    let mut config = base_config();
    config["issuers"][0]["algorithms"] = json!(["ES256", "RS256", "EdDSA"]);
    gateway.config = parse(&config).unwrap();
    gateway.keys = KeyRing::new(&gateway.config);
    let token = rotated.sign(trade_claims()).unwrap();

    // The new kid is unknown: the glue is told so it can refetch.
    let outcome = gateway.bearer(TRADE, &token);
    let Authorization::UnknownKey { issuer, denial } = &outcome else {
        panic!("expected unknown key, got {outcome:?}")
    };
    assert_eq!(
        (*issuer, denial.reason, denial.status),
        (0, DenyReason::KeysUnavailable, 401)
    );
    let remote = gateway.keys.remote_mut(0).unwrap();
    assert_eq!(remote.on_unknown_key(NOW), UnknownKeyAction::FetchNow);
    assert_eq!(remote.on_unknown_key(NOW), UnknownKeyAction::AwaitInFlight);
    let jwks = json!({"keys": [ed_jwk("ed-1")]}).to_string();
    remote.on_fetch_success(NOW, jwks.as_bytes()).unwrap();

    // After the fetch, the new key is accepted without a restart, then cached.
    assert!(matches!(
        gateway.bearer(TRADE, &token),
        Authorization::Allow {
            cache: CacheUse::Miss,
            ..
        }
    ));
    assert!(matches!(
        gateway.bearer(TRADE, &token),
        Authorization::Allow {
            cache: CacheUse::Hit,
            ..
        }
    ));

    // The IdP drops the key: the cached entry is not reused.
    let remote = gateway.keys.remote_mut(0).unwrap();
    let other = json!({"keys": [super::jwks::tests::ec384_jwk("other")]}).to_string();
    remote.on_fetch_success(NOW, other.as_bytes()).unwrap();
    let outcome = gateway.bearer(TRADE, &token);
    assert_eq!(reason(&outcome), Some(DenyReason::UnknownKey));
    assert!(matches!(outcome, Authorization::UnknownKey { .. }));
}

#[test]
fn unknown_kid_without_remote_jwks_is_a_plain_denial() {
    let mut config = base_config();
    config["issuers"][0]
        .as_object_mut()
        .unwrap()
        .remove("remoteJwks");
    let mut gateway = Gateway::with_config(config);
    let stranger = ES256KeyPair::generate()
        .with_key_id("ec-2")
        .sign(trade_claims())
        .unwrap();
    let outcome = gateway.bearer(TRADE, &stranger);
    assert!(matches!(outcome, Authorization::Deny(_)), "{outcome:?}");
    assert_eq!(reason(&outcome), Some(DenyReason::UnknownKey));
    // Same kid as a known key but signed by another key: a bad signature, not a lookup miss.
    let impostor = ES256KeyPair::generate()
        .with_key_id("ec-1")
        .sign(trade_claims())
        .unwrap();
    assert_eq!(
        reason(&gateway.bearer(TRADE, &impostor)),
        Some(DenyReason::BadSignature)
    );
}
