//! End-to-end suite of the whole chain: TLS, routes, the three filters, Istio's jwt_authn and
//! rbac, rate limits, resilience. Against `GATEWAY_URL` (e.g. `https://127.0.0.1:8443`) with
//! `GATEWAY_CA` (the CA file) when set, otherwise against a local gateway this test process
//! starts itself on free ports. Against another gateway (the kind cluster,
//! test-harness/kind/run.sh):
//! - `GATEWAY_HTTP_URL` adds the redirect check;
//! - tokens are signed with the dev issuer key in `build/local-gateway/`, with
//!   `GATEWAY_TOKEN_ISSUER` as `iss` (default: the local dev issuer);
//! - `GATEWAY_MOCK_CONTROL=svc-trading-api=127.0.0.1:19080,svc-wallet=...` names the mocks'
//!   control APIs (see src/mock.rs), for the checks that set faults or count what an upstream
//!   received.
//!
//! Checks that need the gateway's insides (its Envoy stats, the mTLS fronts, taking a replica
//! down, connecting from many loopback addresses) run against the in-process gateway only and
//! say so when skipped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use envoy_harness::local_gateway::dev_issuer::{DevIssuer, TokenRequest};
use envoy_harness::local_gateway::{LocalGateway, Ports, STATE_DIR};
use envoy_harness::paths;
use serde_json::{json, Value};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The gateway's host: TLS server name (SNI) and `host` of every request, as at the real
/// gateway, whose Gateway and certificate are for this name only.
const GATEWAY_HOST: &str = "api.exchange.example.com";

// ------------------------------------------------------------------ target

struct Target {
    host: String,
    https_port: u16,
    http_port: Option<u16>,
    ca: PathBuf,
    issuer: DevIssuer,
    token_issuer: Option<String>,
    /// Service name → control API address of its mock.
    mock_control: Vec<(String, String)>,
    local: Option<&'static LocalGateway>,
}

static TARGET: OnceLock<Target> = OnceLock::new();
static LOCAL: OnceLock<LocalGateway> = OnceLock::new();
/// The tests share one gateway and one client address: rate-limit windows and upstream
/// counters would leak between tests running at once.
static SERIAL: Mutex<()> = Mutex::new(());

fn host_port(url: &str) -> (String, Option<u16>) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().ok()),
        None => (authority.to_owned(), None),
    }
}

fn target() -> &'static Target {
    TARGET.get_or_init(|| {
        if let Ok(url) = std::env::var("GATEWAY_URL") {
            let (host, port) = host_port(&url);
            let ca = std::env::var("GATEWAY_CA").expect("GATEWAY_URL needs GATEWAY_CA");
            let mock_control = std::env::var("GATEWAY_MOCK_CONTROL")
                .unwrap_or_default()
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(service, address)| (service.trim().to_owned(), address.trim().to_owned()))
                .collect();
            return Target {
                host,
                https_port: port.unwrap_or(443),
                http_port: std::env::var("GATEWAY_HTTP_URL")
                    .ok()
                    .map(|u| host_port(&u).1.unwrap_or(80)),
                ca: PathBuf::from(ca),
                issuer: DevIssuer::load_or_create(&paths::repo_root().join(STATE_DIR)).unwrap(),
                token_issuer: std::env::var("GATEWAY_TOKEN_ISSUER").ok(),
                mock_control,
                local: None,
            };
        }
        // Envoy dies with the thread that spawned it: start the gateway on a thread that
        // lives as long as the test process.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let state = tempfile::tempdir().unwrap().keep();
            match LocalGateway::start(Ports::pick(), &state) {
                Ok(gateway) => {
                    let _ = LOCAL.set(gateway);
                    sender.send(Ok(())).unwrap();
                    // Keeps Envoy's parent thread alive for the rest of the process.
                    loop {
                        std::thread::park();
                    }
                }
                Err(error) => sender.send(Err(error.to_string())).unwrap(),
            }
        });
        receiver
            .recv()
            .unwrap()
            .expect("starting the local gateway");
        let local = LOCAL.get().unwrap();
        let ports = Ports::pick();
        let mock_control = local
            .upstreams
            .iter()
            .map(|u| {
                let port = u.control_port().unwrap();
                (u.service().to_owned(), format!("127.0.0.1:{port}"))
            })
            .collect();
        Target {
            host: "127.0.0.1".into(),
            https_port: local.port(&ports, "https").unwrap(),
            http_port: Some(local.port(&ports, "http").unwrap()),
            ca: local.ca_path.clone(),
            issuer: DevIssuer::load_or_create(&local.state_dir).unwrap(),
            token_issuer: None,
            mock_control,
            local: Some(local),
        }
    })
}

/// Checks that need the in-process gateway's insides.
fn skipped_against_external_gateway(what: &str) {
    eprintln!("skipped against GATEWAY_URL: needs the in-process gateway ({what})");
}

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sign(mut request: TokenRequest) -> String {
    if let Some(issuer) = &target().token_issuer {
        request.issuer.clone_from(issuer);
    }
    target().issuer.sign(&request).unwrap()
}

fn token(subject: &str, scope: &str) -> String {
    sign(TokenRequest::new(subject, scope))
}

fn token_with(edit: impl FnOnce(&mut TokenRequest)) -> String {
    let mut request = TokenRequest::new("user-e2e", "trade:read");
    edit(&mut request);
    sign(request)
}

// ------------------------------------------------------------------ mock control API

/// A mock upstream's control API (src/mock.rs), in process or in the cluster alike.
struct MockControl {
    address: String,
}

/// The control API of `service`'s mock, `None` when the target does not expose it.
fn mock(service: &str) -> Option<MockControl> {
    let address = target()
        .mock_control
        .iter()
        .find(|(name, _)| name == service)?
        .1
        .clone();
    Some(MockControl { address })
}

fn skipped_without_mock_control(service: &str) {
    eprintln!("skipped: no control API for {service} (GATEWAY_MOCK_CONTROL)");
}

impl MockControl {
    fn try_call(&self, method: &str, path: &str, body: &str) -> std::io::Result<Response> {
        let mut stream = TcpStream::connect(self.address.as_str())?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: mock-control\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok(parse(&raw))
    }

    fn call(&self, method: &str, path: &str, body: &str) -> Response {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("mock control API {}: {e}", self.address))
    }

    /// Adds a fault rule; the guard clears every rule (releasing held answers) when the
    /// test ends, failed or not.
    fn fault(&self, method: &str, path: &str, times: u64, fault: Value) -> FaultGuard<'_> {
        let rule = json!({"method": method, "path": path, "times": times, "fault": fault});
        let response = self.call("POST", "/faults", &rule.to_string());
        assert_eq!(
            response.status,
            201,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        FaultGuard { mock: self }
    }

    /// Requests the service received for `method` and `path`, every replica.
    fn count(&self, method: &str, path: &str) -> u64 {
        let counts = self.call("GET", "/counts", "").json();
        counts["counts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["method"] == method && c["path"] == path)
            .map_or(0, |c| c["count"].as_u64().unwrap())
    }

    /// What arrived for `path`, in arrival order per replica.
    fn requests(&self, path: &str) -> Vec<Value> {
        let response = self.call("GET", &format!("/requests?path={path}"), "");
        response.json().as_array().unwrap().clone()
    }
}

struct FaultGuard<'a> {
    mock: &'a MockControl,
}

impl Drop for FaultGuard<'_> {
    fn drop(&mut self) {
        // No assertion here: this also runs while a failed test unwinds.
        let _ = self.mock.try_call("DELETE", "/faults", "");
    }
}

fn header_of<'a>(request: &'a Value, name: &str) -> Vec<&'a str> {
    request["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

/// A counter or gauge of the in-process gateway's Envoy (0 when it does not exist yet).
fn envoy_stat(local: &LocalGateway, name: &str) -> u64 {
    local.envoy.stat(name).unwrap().unwrap_or(0)
}

const WALLET_CLUSTER: &str = "outbound|8080||svc-wallet.wallet.svc.cluster.local";

// ------------------------------------------------------------------ HTTPS client

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every value of a header (a second WWW-Authenticate must show).
    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

fn tls_config(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn parse(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        while let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..at]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[at + 2..at + 2 + size]);
            rest = &rest[at + 4 + size..];
        }
        body = out;
    }
    Response {
        status,
        headers,
        body,
    }
}

fn send(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    send_to_host(GATEWAY_HOST, method, path, headers, body)
}

fn send_to_host(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let target = target();
    let stream = TcpStream::connect((target.host.as_str(), target.https_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let name = ServerName::try_from(GATEWAY_HOST).unwrap();
    let connection = ClientConnection::new(tls_config(&target.ca), name).unwrap();
    let mut tls = StreamOwned::new(connection, stream);
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    tls.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // Envoy closes without close_notify on some replies; what was read is the response.
    let _ = tls.read_to_end(&mut raw);
    parse(&raw)
}

fn get(path: &str, bearer: Option<&str>) -> Response {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    send("GET", path, &headers, "")
}

fn with_bearer<'a>(token: &'a str, buffer: &'a mut String) -> (&'static str, &'a str) {
    *buffer = format!("Bearer {token}");
    ("authorization", buffer.as_str())
}

/// The security headers every response must carry, and the leaks it must not.
fn assert_hardened(response: &Response) {
    let context = format!("{} {:?}", response.status, response.headers);
    assert!(
        response.header("strict-transport-security").is_some(),
        "no HSTS: {context}"
    );
    assert_eq!(
        response.header("x-content-type-options"),
        Some("nosniff"),
        "{context}"
    );
    assert!(
        response.header("server").is_none(),
        "server leaked: {context}"
    );
    assert!(
        response.header("x-powered-by").is_none(),
        "x-powered-by leaked: {context}"
    );
}

fn assert_error_body(response: &Response, error: &str) {
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    let body = response.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

// ------------------------------------------------------------------ routing

#[test]
fn the_three_prefixes_reach_their_own_upstream() {
    let _serial = serial();
    for (path, scope, upstream) in [
        ("/api/v1/trade/orders", "trade:read", "svc-trading-api"),
        ("/api/v1/wallet/balances", "wallet:read", "svc-wallet"),
        ("/api/v1/risk/limits", "risk:evaluate", "svc-risk-control"),
    ] {
        let response = get(path, Some(&token("user-route", scope)));
        assert_eq!(
            response.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.json()["upstream"], upstream);
        assert_eq!(response.json()["path"], path);
        assert_hardened(&response);
    }
}

#[test]
fn a_host_the_gateway_does_not_serve_is_a_json_404() {
    let _serial = serial();
    // Every path a request can reach the router with is routed (the AuthorizationPolicy only
    // lets routed prefixes through), so Envoy's own 404 is what another authority gets: the
    // Gateway serves api.exchange.example.com only. Token and path are fine.
    let token = token("user-404", "trade:read");
    let mut auth = String::new();
    let response = send_to_host(
        "other.example.com",
        "GET",
        "/api/v1/trade/orders",
        &[with_bearer(&token, &mut auth)],
        "",
    );
    assert_eq!(
        response.status,
        404,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_error_body(&response, "not_found");
    assert_hardened(&response);
}

#[test]
fn plain_http_redirects_to_https() {
    let _serial = serial();
    let target = target();
    let Some(port) = target.http_port else {
        eprintln!("GATEWAY_HTTP_URL not set: redirect not checked");
        return;
    };
    let mut stream = TcpStream::connect((target.host.as_str(), port)).unwrap();
    stream
        .write_all(
            format!("GET /api/v1/trade/orders?x=1 HTTP/1.1\r\nhost: {GATEWAY_HOST}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let response = parse(&raw);
    assert_eq!(response.status, 301);
    let location = response.header("location").unwrap();
    if target.local.is_some() {
        // The local HTTPS listener is not on 443, so the redirect names its port.
        assert_eq!(
            location,
            format!(
                "https://{GATEWAY_HOST}:{}/api/v1/trade/orders?x=1",
                target.https_port
            )
        );
    } else {
        assert_eq!(
            location,
            format!("https://{GATEWAY_HOST}/api/v1/trade/orders?x=1")
        );
    }
}

#[test]
fn the_upstream_only_accepts_the_gateways_client_certificate() {
    let _serial = serial();
    let Some(local) = target().local else {
        return skipped_against_external_gateway("the mTLS fronts");
    };
    // The mTLS front of an upstream refuses a client without a dev-CA certificate.
    let risk = local.upstream("svc-risk-control").unwrap();
    let upstream = risk;
    let stream = TcpStream::connect(("127.0.0.1", upstream.replicas[0].front.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let name = ServerName::try_from(upstream.host.clone()).unwrap();
    let connection = ClientConnection::new(tls_config(&local.ca_path), name).unwrap();
    let mut tls = StreamOwned::new(connection, stream);
    let written = tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut raw = Vec::new();
    let read = tls.read_to_end(&mut raw);
    assert!(
        written.is_err() || read.is_err() || raw.is_empty(),
        "{raw:?}"
    );
    // ... while the gateway gets through (it presents its certificate).
    let before = risk.request_count("GET", "/api/v1/risk/mtls-check");
    let response = get(
        "/api/v1/risk/mtls-check",
        Some(&token("user-mtls", "risk:evaluate")),
    );
    assert_eq!(response.status, 200);
    assert_eq!(
        risk.request_count("GET", "/api/v1/risk/mtls-check"),
        before + 1
    );
}

// ------------------------------------------------------------------ JWT

/// jwt-authz's realm (envoyfilter-jwt-authz.yaml): every challenge of the gateway names it.
const CHALLENGE_NO_TOKEN: &str = r#"Bearer realm="api.exchange.example.com""#;
const CHALLENGE_INVALID_TOKEN: &str =
    r#"Bearer realm="api.exchange.example.com", error="invalid_token""#;

/// An RFC 6750 answer exactly as jwt-authz gives it (gateway_core::jwt::decision): status,
/// one challenge, the JSON body byte for byte, hardened like every response.
fn assert_bearer_answer(response: &Response, status: u16, challenge: &str, body: &str) {
    assert_eq!(response.status, status, "{}", response.body_text());
    assert_eq!(
        response.headers_named("www-authenticate"),
        [challenge],
        "{:?}",
        response.headers
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.body_text(), body);
    assert_hardened(response);
}

#[test]
fn a_request_without_a_bearer_token_is_401_with_a_bare_challenge() {
    let _serial = serial();
    // require-jwt-on-api (DENY, no request principal on /api/*) makes rbac answer before
    // jwt-authz; the HCM's mapper turns that 403 into jwt-authz's MissingToken answer
    // (RFC 6750 §3.1: no error code). Another scheme is no bearer token either.
    for (what, headers) in [
        ("no Authorization", vec![]),
        (
            "Basic credentials",
            vec![("authorization", "Basic dXNlcjpwYXNz")],
        ),
    ] {
        let denied_before = target()
            .local
            .map(|local| envoy_stat(local, "http.gateway_https.rbac.denied"));
        let response = send("GET", "/api/v1/trade/no-token", &headers, "");
        assert_bearer_answer(
            &response,
            401,
            CHALLENGE_NO_TOKEN,
            r#"{"error":"unauthorized","message":"a bearer token is required"}"#,
        );
        if let Some(trading) = mock("svc-trading-api") {
            assert_eq!(trading.count("GET", "/api/v1/trade/no-token"), 0, "{what}");
        }
        // rbac answered (not jwt-authz, which never ran).
        match (target().local, denied_before) {
            (Some(local), Some(before)) => assert_eq!(
                envoy_stat(local, "http.gateway_https.rbac.denied"),
                before + 1,
                "{what}"
            ),
            _ => skipped_against_external_gateway("rbac stats"),
        }
    }
}

#[test]
fn tokens_jwt_authn_rejects_get_jwt_authzs_401() {
    let _serial = serial();
    // Istio's jwt_authn answers these before rbac and jwt-authz, in plain text with its own
    // realm (the request URL); the HCM's mappers give jwt-authz's answer for the same token.
    let invalid = r#"{"error":"invalid_token","message":"the access token is invalid"}"#;
    // Signed as the issuer the gateway does not know, whatever GATEWAY_TOKEN_ISSUER says.
    let mut foreign = TokenRequest::new("user-e2e", "trade:read");
    foreign.issuer = "https://evil.example".into();
    let foreign = target().issuer.sign(&foreign).unwrap();
    let cases = [
        (
            "expired an hour ago (beyond jwt_authn's 60 s skew)",
            token_with(|r| r.ttl_seconds = -3600),
            r#"{"error":"invalid_token","message":"the access token has expired"}"#,
        ),
        ("not a JWT", "abc.def.ghi".to_owned(), invalid),
        (
            "a key the JWKS does not have",
            token_with(|r| r.kid = Some("no-such-key".into())),
            invalid,
        ),
        ("an issuer the gateway does not know", foreign, invalid),
        (
            "not valid for another 10 minutes",
            token_with(|r| r.not_before_seconds = Some(600)),
            r#"{"error":"invalid_token","message":"the access token is not valid yet"}"#,
        ),
        (
            // jwt_authn's 403: no jwtRule lists this audience.
            "an audience no service has",
            token_with(|r| r.audience = "svc-unknown".into()),
            r#"{"error":"invalid_token","message":"the access token is not intended for this resource"}"#,
        ),
    ];
    let path = "/api/v1/trade/orders";
    let trading = mock("svc-trading-api");
    for (what, token, body) in cases {
        let denied_before = target()
            .local
            .map(|local| envoy_stat(local, "http.gateway_https.jwt_authn.denied"));
        let reached_before = trading.as_ref().map(|m| m.count("GET", path));
        let response = get(path, Some(&token));
        assert_eq!(response.status, 401, "{what}: {}", response.body_text());
        assert_bearer_answer(&response, 401, CHALLENGE_INVALID_TOKEN, body);
        if let (Some(trading), Some(before)) = (&trading, reached_before) {
            assert_eq!(trading.count("GET", path), before, "{what}");
        }
        match (target().local, denied_before) {
            (Some(local), Some(before)) => assert_eq!(
                envoy_stat(local, "http.gateway_https.jwt_authn.denied"),
                before + 1,
                "{what}: jwt_authn did not answer"
            ),
            _ => skipped_against_external_gateway("jwt_authn stats"),
        }
    }
}

#[test]
fn jwt_authzs_own_answers_are_unchanged() {
    let _serial = serial();
    // Expired 45 s ago: within jwt_authn's 60 s skew, beyond jwt-authz's 30 s
    // (clockSkewSeconds), so jwt-authz answers, with the same body the mapper gives.
    let denied_before = target()
        .local
        .map(|local| envoy_stat(local, "http.gateway_https.jwt_authn.denied"));
    let response = get(
        "/api/v1/trade/orders",
        Some(&token_with(|r| r.ttl_seconds = -45)),
    );
    assert_bearer_answer(
        &response,
        401,
        CHALLENGE_INVALID_TOKEN,
        r#"{"error":"invalid_token","message":"the access token has expired"}"#,
    );
    match (target().local, denied_before) {
        (Some(local), Some(before)) => assert_eq!(
            envoy_stat(local, "http.gateway_https.jwt_authn.denied"),
            before,
            "jwt_authn answered, not jwt-authz"
        ),
        _ => skipped_against_external_gateway("jwt_authn stats"),
    }
    // A valid token without the scope the route needs: 403 insufficient_scope.
    let token = token("user-scope-post", "trade:read");
    let mut auth = String::new();
    let response = send(
        "POST",
        "/api/v1/trade/orders",
        &[with_bearer(&token, &mut auth)],
        "{}",
    );
    assert_bearer_answer(
        &response,
        403,
        r#"Bearer realm="api.exchange.example.com", error="insufficient_scope", scope="trade:write""#,
        r#"{"error":"insufficient_scope","message":"the access token lacks a scope this resource requires"}"#,
    );
}

#[test]
fn a_token_for_another_service_is_denied_by_rbac() {
    let _serial = serial();
    // allow-api-by-audience: /api/v1/trade/* needs aud svc-trading-api. A valid token for
    // svc-wallet passes jwt_authn (its audiences are any-of the three); jwt-authz would
    // refuse it too, but with a Bearer challenge: an answer without one is rbac's.
    let token = token_with(|r| {
        r.subject = "user-aud".into();
        r.scope = "trade:read".into();
        r.audience = "svc-wallet".into();
    });
    let denied_before = target()
        .local
        .map(|local| envoy_stat(local, "http.gateway_https.rbac.denied"));
    let response = get("/api/v1/trade/orders-aud", Some(&token));
    assert_eq!(
        response.status,
        403,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(response.header("www-authenticate").is_none());
    assert_error_body(&response, "access_denied");
    assert_hardened(&response);
    if let Some(trading) = mock("svc-trading-api") {
        assert_eq!(trading.count("GET", "/api/v1/trade/orders-aud"), 0);
    }
    if let (Some(local), Some(before)) = (target().local, denied_before) {
        assert_eq!(
            envoy_stat(local, "http.gateway_https.rbac.denied"),
            before + 1
        );
    }
    // The same token with the right audience goes through.
    let token = token_with(|r| {
        r.subject = "user-aud".into();
        r.scope = "trade:read".into();
    });
    assert_eq!(get("/api/v1/trade/orders-aud", Some(&token)).status, 200);
}

#[test]
fn what_no_allow_rule_names_is_denied_by_default() {
    let _serial = serial();
    // A path outside every ALLOW rule, with a valid token: the ALLOW filter denies it.
    let response = get(
        "/api/v2/nothing",
        Some(&token("user-default-deny", "trade:read")),
    );
    assert_eq!(response.status, 403);
    assert!(response.header("www-authenticate").is_none());
    assert_error_body(&response, "access_denied");
    assert_hardened(&response);
    // allow-health: GET needs no token, any other method is not allowed.
    let response = get("/healthz", None);
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_hardened(&response);
    let response = send("POST", "/healthz", &[], "");
    assert_eq!(response.status, 403);
    assert_error_body(&response, "access_denied");
}

#[test]
fn a_token_without_the_routes_scope_is_403() {
    let _serial = serial();
    let response = get(
        "/api/v1/trade/orders",
        Some(&token_with(|r| {
            r.scope = "wallet:read".into();
            r.audience = "svc-trading-api".into();
        })),
    );
    assert_eq!(
        response.status,
        403,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(response
        .header("www-authenticate")
        .is_some_and(|v| v.contains("insufficient_scope")));
    assert_hardened(&response);
}

#[test]
fn upstreams_get_the_verified_identity_and_never_a_spoofed_one() {
    let _serial = serial();
    let Some(wallet) = mock("svc-wallet") else {
        return skipped_without_mock_control("svc-wallet");
    };
    let token = token("user-identity", "wallet:read");
    let mut auth = String::new();
    let response = send(
        "GET",
        "/api/v1/wallet/identity-check",
        &[
            with_bearer(&token, &mut auth),
            ("x-auth-subject", "admin"),
            ("x-auth-scopes", "wallet:withdraw"),
            ("x-auth-issuer", "https://evil.example"),
            ("x-auth-client-id", "spoofed"),
            ("x-rl-user", "someone-else"),
        ],
        "",
    );
    assert_eq!(response.status, 200);
    let received = wallet.requests("/api/v1/wallet/identity-check");
    let seen = received.last().unwrap();
    assert_eq!(header_of(seen, "x-auth-subject"), ["user-identity"]);
    assert_eq!(header_of(seen, "x-auth-scopes"), ["wallet:read"]);
    assert!(!header_of(seen, "x-auth-issuer").contains(&"https://evil.example"));
    assert!(!header_of(seen, "x-auth-client-id").contains(&"spoofed"));
    assert!(header_of(seen, "x-rl-user").is_empty(), "{seen}");
}

#[test]
fn orders_are_limited_per_user_with_retry_after_and_draft_09_fields() {
    let _serial = serial();
    // The `order` limit: 10 per second per user. A fresh second for a clean window.
    std::thread::sleep(Duration::from_millis(
        1000 - u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_millis(),
        ),
    ));
    let other = token("user-rl-other", "trade:write");
    let token = token("user-rl-order", "trade:write");
    let mut limited = None;
    for _ in 0..14 {
        let mut auth = String::new();
        let response = send(
            "POST",
            "/api/v1/trade/orders",
            &[
                with_bearer(&token, &mut auth),
                ("content-type", "application/json"),
            ],
            "{}",
        );
        if response.status == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert!(
            response.header("ratelimit-policy").is_some(),
            "{:?}",
            response.headers
        );
    }
    let limited = limited.expect("no 429 after 14 orders in one second");
    assert!(
        limited.header("retry-after").is_some(),
        "{:?}",
        limited.headers
    );
    assert!(
        limited.header("ratelimit").is_some(),
        "{:?}",
        limited.headers
    );
    assert!(
        limited.header("ratelimit-policy").is_some(),
        "{:?}",
        limited.headers
    );
    assert_error_body(&limited, "rate_limited");
    assert_hardened(&limited);
    // Another user is not affected.
    let mut auth = String::new();
    let response = send(
        "POST",
        "/api/v1/trade/orders",
        &[with_bearer(&other, &mut auth)],
        "{}",
    );
    assert_eq!(response.status, 200);
}

#[test]
fn public_class_traffic_is_limited_per_ip() {
    let _serial = serial();
    // `public` class: 20 per second per client address, whoever the user. A routed request
    // no route class covers (a POST that is not an order) is public; each one from another
    // user, so only the address counts. Tokens first, then 40 requests at once.
    let tokens: Vec<String> = (0..40)
        .map(|attempt| token(&format!("user-ip-{attempt}"), "trade:write"))
        .collect();
    let responses: Vec<Response> = std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                scope.spawn(move || {
                    let auth = format!("Bearer {token}");
                    send(
                        "POST",
                        "/api/v1/trade/quotes",
                        &[("authorization", &auth)],
                        "{}",
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let passed = responses.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&Response> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        passed + limited.len(),
        40,
        "{:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    // One window, or two when the burst straddles a second boundary.
    assert!(passed <= 20 * 2, "{passed} passed");
    let limited = limited
        .first()
        .expect("no 429 for 40 requests from one address");
    assert!(limited.header("retry-after").is_some());
    assert!(
        limited
            .header("ratelimit-policy")
            .is_some_and(|v| v.contains("public-ip")),
        "{:?}",
        limited.headers
    );
    assert_error_body(limited, "rate_limited");
    assert_hardened(limited);
    // Let the window pass for the next test.
    std::thread::sleep(Duration::from_millis(1100));
}

// ------------------------------------------------------------------ resilience

#[test]
fn a_get_failing_once_is_retried_and_the_client_gets_200() {
    let _serial = serial();
    let Some(trading) = mock("svc-trading-api") else {
        return skipped_without_mock_control("svc-trading-api");
    };
    let token = token("user-retry", "trade:read");
    let path = "/api/v1/trade/retry-once";
    let _faults = trading.fault("GET", path, 1, json!({"status": 503}));
    let response = get(path, Some(&token));
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()["upstream"], "svc-trading-api");
    assert_hardened(&response);
    // trade-read: retryOn 5xx; the failed attempt and the retry both reached the service.
    assert_eq!(trading.count("GET", path), 2);
}

#[test]
fn a_get_whose_connection_is_reset_is_retried() {
    let _serial = serial();
    let Some(trading) = mock("svc-trading-api") else {
        return skipped_without_mock_control("svc-trading-api");
    };
    let token = token("user-retry-reset", "trade:read");
    let path = "/api/v1/trade/retry-reset";
    let _faults = trading.fault("GET", path, 1, json!("reset"));
    let response = get(path, Some(&token));
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(trading.count("GET", path), 2);
}

#[test]
fn a_get_failing_every_attempt_is_tried_three_times() {
    let _serial = serial();
    let Some(trading) = mock("svc-trading-api") else {
        return skipped_without_mock_control("svc-trading-api");
    };
    let token = token("user-retry-all", "trade:read");
    let path = "/api/v1/trade/retry-all";
    let _faults = trading.fault("GET", path, 10, json!({"status": 503}));
    let response = get(path, Some(&token));
    // attempts: 2 → the first try and two retries; then the upstream's own 503.
    assert_eq!(response.status, 503);
    assert_hardened(&response);
    assert_eq!(trading.count("GET", path), 3);
}

#[test]
fn an_order_hit_by_a_failure_or_a_reset_is_delivered_exactly_once() {
    let _serial = serial();
    let Some(trading) = mock("svc-trading-api") else {
        return skipped_without_mock_control("svc-trading-api");
    };
    let path = "/api/v1/trade/orders";
    for (attempt, fault, status) in [
        ("failure", json!({"status": 503}), 503),
        ("reset", json!("reset"), 503),
    ] {
        // Its own user each time: orders are limited to 10/s per user.
        let token = token(&format!("user-order-{attempt}"), "trade:write");
        let before = trading.count("POST", path);
        let _faults = trading.fault("POST", path, 1, fault);
        let mut auth = String::new();
        let response = send(
            "POST",
            path,
            &[
                with_bearer(&token, &mut auth),
                ("content-type", "application/json"),
            ],
            r#"{"symbol":"BTC-USD","side":"buy","qty":"1"}"#,
        );
        assert_eq!(
            response.status,
            status,
            "{attempt}: {}",
            String::from_utf8_lossy(&response.body)
        );
        assert_hardened(&response);
        if attempt == "reset" && target().local.is_some() {
            // The gateway's own answer to the reset, in its error body. In a mesh the
            // upstream's sidecar sees the reset and answers 503 itself, which the gateway
            // passes on as the upstream's response.
            assert_error_body(&response, "service_unavailable");
        }
        // trade-write retries only connect-failure / refused-stream: never a second copy.
        assert_eq!(trading.count("POST", path), before + 1, "{attempt}");
    }
}

#[test]
fn a_withdrawal_hit_by_a_failure_or_a_reset_is_delivered_exactly_once() {
    let _serial = serial();
    let Some(wallet) = mock("svc-wallet") else {
        return skipped_without_mock_control("svc-wallet");
    };
    let path = "/api/v1/wallet/withdrawals";
    for (attempt, fault, status) in [
        ("failure", json!({"status": 502}), 502),
        ("reset", json!("reset"), 503),
    ] {
        let token = token_with(|r| {
            r.subject = format!("user-withdraw-{attempt}");
            r.scope = "wallet:withdraw".into();
            r.audience = "svc-wallet".into();
            r.auth_time_seconds = -10;
        });
        let before = wallet.count("POST", path);
        let _faults = wallet.fault("POST", path, 1, fault);
        let mut auth = String::new();
        let response = send(
            "POST",
            path,
            &[with_bearer(&token, &mut auth)],
            r#"{"asset":"BTC","amount":"0.1"}"#,
        );
        assert_eq!(
            response.status,
            status,
            "{attempt}: {}",
            String::from_utf8_lossy(&response.body)
        );
        assert_hardened(&response);
        assert_eq!(wallet.count("POST", path), before + 1, "{attempt}");
    }
}

#[test]
fn a_slow_upstream_gives_504_at_the_routes_timeout() {
    let _serial = serial();
    let Some(risk) = mock("svc-risk-control") else {
        return skipped_without_mock_control("svc-risk-control");
    };
    let path = "/api/v1/risk/slow";
    let _faults = risk.fault("GET", path, 5, json!({"delayMs": 2500}));
    let started = Instant::now();
    let response = get(path, Some(&token("user-slow", "risk:evaluate")));
    let elapsed = started.elapsed();
    assert_eq!(
        response.status,
        504,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_error_body(&response, "upstream_timeout");
    assert_hardened(&response);
    // risk-read: `timeout: 1s` in istio/routing/virtualservice-risk.yaml.
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_millis(2000),
        "{elapsed:?}"
    );
}

#[test]
fn a_failing_replica_is_ejected_and_traffic_moves_to_the_healthy_one() {
    let _serial = serial();
    let Some(local) = target().local else {
        return skipped_against_external_gateway("taking a replica down, Envoy stats");
    };
    let wallet = local.upstream("svc-wallet").unwrap();
    let (healthy, failing) = (&wallet.replicas[0], &wallet.replicas[1]);
    let stat = "cluster.outbound|8080||svc-wallet.wallet.svc.cluster.local.outlier_detection.ejections_enforced_total";
    let ejections_before = local.envoy.stat(stat).unwrap().unwrap_or(0);
    failing.front.set_down(true);
    let token = token("user-outlier", "wallet:read");
    // consecutiveLocalOriginFailures: 5. Reads are retried on connect-failure on another
    // host (previous_hosts), so the client never sees the failing pod.
    for attempt in 0..12 {
        let response = get(&format!("/api/v1/wallet/outlier-{attempt}"), Some(&token));
        assert_eq!(
            response.status,
            200,
            "attempt {attempt}: {}",
            String::from_utf8_lossy(&response.body)
        );
    }
    let ejections = local.envoy.stat(stat).unwrap().unwrap_or(0);
    failing.front.set_down(false);
    assert!(ejections > ejections_before, "no ejection ({ejections})");
    // While ejected (baseEjectionTime 30s), every request goes to the healthy pod, even
    // with the failing one back up.
    let before = healthy
        .mock
        .request_count("GET", "/api/v1/wallet/after-ejection");
    for _ in 0..4 {
        let response = get("/api/v1/wallet/after-ejection", Some(&token));
        assert_eq!(response.status, 200);
    }
    assert_eq!(
        healthy
            .mock
            .request_count("GET", "/api/v1/wallet/after-ejection"),
        before + 4
    );
    assert_eq!(
        failing
            .mock
            .request_count("GET", "/api/v1/wallet/after-ejection"),
        0
    );
}

// ------------------------------------------------------------------ circuit breaker

/// One HTTPS request from `source` (a loopback address of its own), as raw response bytes.
async fn send_from(
    source: Ipv4Addr,
    gateway: SocketAddr,
    config: Arc<ClientConfig>,
    request: Arc<Vec<u8>>,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(gateway).await?;
    let name = ServerName::try_from(GATEWAY_HOST).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await?;
    tls.write_all(&request).await?;
    let mut raw = Vec::new();
    // Envoy closes without close_notify on some replies; what was read is the response.
    let _ = tls.read_to_end(&mut raw).await;
    Ok(raw)
}

fn wait_for(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_connection_pool_gives_503_from_the_circuit_breaker() {
    let _serial = serial();
    let Some(local) = target().local else {
        return skipped_against_external_gateway("Envoy stats, many loopback client addresses");
    };
    let wallet = mock("svc-wallet").unwrap();
    // The real limits of istio/routing/destinationrules.yaml (svc-wallet): 256 connections
    // (HTTP/1.1 upstream: one request each) and 256 pending requests. The 513th request in
    // flight overflows. No test-only limits: 512 requests are held at the upstream instead.
    let max_connections = 256;
    let max_pending = 256;
    let path = "/api/v1/wallet/pool-hold";
    // Held for up to 9 s (wallet-write's timeout is 10 s), released when the guard clears.
    let faults = wallet.fault("POST", path, 10_000, json!({"delayMs": 9000}));
    let stat = |name: &str| envoy_stat(local, &format!("cluster.{WALLET_CLUSTER}.{name}"));
    let overflows_before = stat("upstream_rq_pending_overflow");

    let token = token_with(|r| {
        r.subject = "user-pool".into();
        r.scope = "wallet:write".into();
        r.audience = "svc-wallet".into();
    });
    let request = Arc::new(
        format!(
            "POST {path} HTTP/1.1\r\nhost: {GATEWAY_HOST}\r\nauthorization: Bearer {token}\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{{}}"
        )
        .into_bytes(),
    );
    let config = tls_config(&target().ca);
    let gateway = SocketAddr::from((Ipv4Addr::LOCALHOST, target().https_port));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A POST outside every route class is `public`: 20/s per client address. Spread over
    // 128 loopback addresses (4 requests each), the rate limits stay out of the way.
    let spawn = |index: usize| {
        let source = Ipv4Addr::new(127, 0, 1, u8::try_from(index % 128 + 1).unwrap());
        runtime.spawn(send_from(source, gateway, config.clone(), request.clone()))
    };
    let started = Instant::now();
    // Every connection busy: the first 256 reached the mock and are held there.
    let mut held: Vec<_> = (0..max_connections).map(spawn).collect();
    wait_for(
        "256 requests at the upstream",
        Duration::from_secs(8),
        || wallet.count("POST", path) == max_connections as u64,
    );
    // Then the pending queue full: 256 more wait in Envoy for a connection.
    held.extend((max_connections..max_connections + max_pending).map(spawn));
    wait_for("256 pending requests", Duration::from_secs(8), || {
        stat("upstream_rq_pending_active") == max_pending as u64
    });
    let ramp = started.elapsed();

    // One more: Envoy answers at once, without a try at the upstream.
    let overflow = parse(
        &runtime
            .block_on(spawn(max_connections + max_pending))
            .unwrap()
            .unwrap(),
    );
    assert_eq!(
        overflow.status,
        503,
        "{}",
        String::from_utf8_lossy(&overflow.body)
    );
    assert_error_body(&overflow, "service_unavailable");
    assert_hardened(&overflow);
    assert_eq!(stat("upstream_rq_pending_overflow"), overflows_before + 1);

    // Released, the 512 held requests all complete; the overflowed one never reached it.
    drop(faults);
    let statuses: Vec<u16> = held
        .into_iter()
        .map(|handle| parse(&runtime.block_on(handle).unwrap().unwrap()).status)
        .collect();
    assert!(
        statuses.iter().all(|status| *status == 200),
        "{:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    assert_eq!(
        wallet.count("POST", path),
        (max_connections + max_pending) as u64
    );
    assert_eq!(stat("upstream_rq_pending_overflow"), overflows_before + 1);
    eprintln!("connection pool full after {ramp:?}");
}
