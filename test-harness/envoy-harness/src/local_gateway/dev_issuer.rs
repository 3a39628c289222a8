//! The dev token issuer: an ES256 signing key persisted in the state directory (so
//! `make token` signs with the key `make run` publishes), the JWKS HTTP endpoint Envoy
//! fetches it from, and token minting.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use jwt_simple::prelude::{
    Audiences, Claims, Duration as JwtDuration, ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike,
    ES256KeyPair,
};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// The issuer of dev tokens. The manifests' issuer (`https://auth.exchange.example.com`) is
/// replaced by this one in the local gateway, so a production token is never accepted
/// locally and a dev token means nothing in a cluster.
pub const DEV_ISSUER: &str = "https://dev-issuer.svc-gateway.local";
/// Path of the JWKS, as the manifests' `remoteJwks.path` / `jwksUri` name it.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
const KEY_FILE: &str = "dev-issuer-es256.pem";
const KID_FILE: &str = "dev-issuer.kid";

fn jwt_error(error: impl std::fmt::Display) -> Error {
    Error::new(format!("dev issuer: {error}"))
}

/// The signing key of the dev issuer.
pub struct DevIssuer {
    key: ES256KeyPair,
    kid: String,
}

/// What goes into a dev token; times are seconds relative to now.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub subject: String,
    /// Space-separated, as the `scope` claim (RFC 8693).
    pub scope: String,
    pub audience: String,
    /// Lifetime; negative gives a token that expired that long ago.
    pub ttl_seconds: i64,
    pub issuer: String,
    /// `None`: the issuer's own kid. Another value gives a token no JWKS key matches.
    pub kid: Option<String>,
    /// `nbf` relative to now (positive: not valid yet).
    pub not_before_seconds: Option<i64>,
    /// `auth_time` relative to now (negative: the user authenticated that long ago).
    pub auth_time_seconds: i64,
    /// `acr` (withdrawals require `mfa`).
    pub acr: Option<String>,
}

impl TokenRequest {
    /// Audience from the scope's service (`trade:read` → `svc-trading-api`).
    pub fn audience_for_scope(scope: &str) -> &'static str {
        let first = scope.split_whitespace().next().unwrap_or_default();
        match first.split(':').next().unwrap_or_default() {
            "wallet" => "svc-wallet",
            "risk" => "svc-risk-control",
            _ => "svc-trading-api",
        }
    }

    pub fn new(subject: &str, scope: &str) -> Self {
        Self {
            subject: subject.to_owned(),
            scope: scope.to_owned(),
            audience: Self::audience_for_scope(scope).to_owned(),
            ttl_seconds: 600,
            issuer: DEV_ISSUER.to_owned(),
            kid: None,
            not_before_seconds: None,
            auth_time_seconds: 0,
            acr: Some("mfa".to_owned()),
        }
    }
}

impl DevIssuer {
    /// The key in `dir`, created (and persisted) when there is none yet.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let key_path = dir.join(KEY_FILE);
        let kid_path = dir.join(KID_FILE);
        if key_path.is_file() && kid_path.is_file() {
            let pem = std::fs::read_to_string(&key_path)?;
            let kid = std::fs::read_to_string(&kid_path)?.trim().to_owned();
            let key = ES256KeyPair::from_pem(&pem)
                .map_err(jwt_error)?
                .with_key_id(&kid);
            return Ok(Self { key, kid });
        }
        std::fs::create_dir_all(dir)?;
        let now = unix_now();
        let kid = format!("dev-{now}");
        let key = ES256KeyPair::generate().with_key_id(&kid);
        let pem = key.to_pem().map_err(jwt_error)?;
        write_private(&key_path, &pem)?;
        std::fs::write(&kid_path, &kid)?;
        Ok(Self { key, kid })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `{"keys": [...]}` with the public key.
    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().public_key().to_bytes_uncompressed();
        let (x, y) = match (point.get(1..33), point.get(33..65)) {
            (Some(x), Some(y)) => (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)),
            _ => (String::new(), String::new()),
        };
        json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": self.kid, "x": x, "y": y}]})
    }

    pub fn sign(&self, request: &TokenRequest) -> Result<String> {
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let at = |offset: i64| {
            JwtDuration::from_secs(u64::try_from(now.saturating_add(offset)).unwrap_or(0))
        };
        let mut custom = Map::new();
        custom.insert("scope".into(), json!(request.scope));
        custom.insert(
            "auth_time".into(),
            json!(now.saturating_add(request.auth_time_seconds)),
        );
        if let Some(acr) = &request.acr {
            custom.insert("acr".into(), json!(acr));
        }
        let mut claims = Claims::with_custom_claims(custom, JwtDuration::from_secs(0));
        claims.issued_at = Some(at(request.ttl_seconds.min(0)));
        claims.expires_at = Some(at(request.ttl_seconds));
        claims.invalid_before = request.not_before_seconds.map(at);
        claims.issuer = Some(request.issuer.clone());
        claims.subject = Some(request.subject.clone());
        claims.audiences = Some(Audiences::AsString(request.audience.clone()));
        match &request.kid {
            // The same key under another kid: a token whose kid no JWKS entry has.
            Some(kid) => ES256KeyPair::from_bytes(&self.key.to_bytes())
                .map_err(jwt_error)?
                .with_key_id(kid)
                .sign(claims)
                .map_err(jwt_error),
            None => self.key.sign(claims).map_err(jwt_error),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The private key readable by its owner only.
fn write_private(path: &PathBuf, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// The JWKS over plain HTTP on loopback, any path (the cluster Envoy fetches it through is
/// the manifests' `outbound|443||auth.exchange.example.com`, pointed here).
pub struct JwksServer {
    port: u16,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    pub fn start(jwks: &Value) -> Result<Self> {
        let body: Arc<[u8]> = Arc::from(jwks.to_string().into_bytes());
        let listener = StdTcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dev-issuer-jwks".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stop => return,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let body = Arc::clone(&body);
                                tokio::spawn(async move {
                                    let service = service_fn(move |_request| {
                                        let mut response = Response::new(Full::new(Bytes::copy_from_slice(&body)));
                                        response.headers_mut().insert(
                                            "content-type",
                                            hyper::header::HeaderValue::from_static("application/json"),
                                        );
                                        async move { Ok::<_, Infallible>(response) }
                                    });
                                    let _ = http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
            })?;
        Ok(Self {
            port,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
