//! rls-peer: a rate-limit service speaking Envoy's RLS v3 gRPC API
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), for tests and for the
//! local gateway.
//!
//! Production runs envoyproxy/ratelimit with Redis; it is a Go program that cannot be installed
//! on these machines. This peer loads the same YAML file and applies the same semantics
//! (`gateway_core::ratelimit::rls_config`: units, nested descriptors, `hits_addend`, fixed
//! windows, `unlimited`, `shadow_mode`), and records every request it receives so a test can
//! assert the exact descriptors Envoy sent. It can be told to fail (`UNAVAILABLE`) or to answer
//! late, to exercise `failure_mode_deny: false` and the filter timeout.
//!
//! ```no_run
//! let peer = rls_peer::RlsPeer::from_yaml_file("filters/ratelimit-tagger/envoy/ratelimit-service.yaml")
//!     .unwrap();
//! println!("rate-limit service on {}", peer.addr());
//! // ... drive Envoy at it ...
//! for request in peer.received() {
//!     println!("{} {:?}", request.domain, request.descriptors);
//! }
//! // stops when dropped
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_core::ratelimit::rls_config::{
    DescriptorEntry, RlsConfig, RlsConfigError, RlsConfigFile, WindowCounters,
};
use gateway_core::ratelimit::{RlsCode, RlsDescriptorStatus, RlsUnit};
use thiserror::Error;
use tokio::sync::oneshot;

pub mod proto;

use proto::{code, unit};

/// One `ShouldRateLimit` call as the peer received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub domain: String,
    /// Each descriptor's entries, `(key, value)`, in the order Envoy sent them.
    pub descriptors: Vec<Vec<(String, String)>>,
    /// The request-wide addend (0 when Envoy did not set one).
    pub hits_addend: u32,
    /// Per-descriptor addends (a route's `hits_addend`), parallel to `descriptors`.
    pub descriptor_hits_addends: Vec<Option<u64>>,
}

/// How the peer answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// Decide by the configuration.
    #[default]
    Serve,
    /// Answer every call with gRPC `UNAVAILABLE` (the call is still recorded).
    Unavailable,
    /// Decide by the configuration, but only after this long (the call is recorded on
    /// arrival).
    Delay(Duration),
}

#[derive(Debug, Error)]
pub enum PeerError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rate-limit service YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("rate-limit service config: {0}")]
    Config(#[from] RlsConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the peer's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A running peer on `127.0.0.1`. Stops (and frees its port) when dropped.
pub struct RlsPeer {
    addr: SocketAddr,
    state: Arc<PeerState>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// Everything the gRPC handler and the test share.
struct PeerState {
    config: RlsConfig,
    inner: Mutex<MutableState>,
}

#[derive(Default)]
struct MutableState {
    counters: WindowCounters,
    received: Vec<ReceivedRequest>,
    behaviour: Behaviour,
    /// A fixed Unix time in seconds; `None` follows the system clock.
    frozen_now: Option<u64>,
}

/// The tonic service: one unary method, routed by path.
#[derive(Clone)]
struct RateLimitService {
    state: Arc<PeerState>,
}

/// The unary handler tonic drives for `ShouldRateLimit`.
struct ShouldRateLimit {
    state: Arc<PeerState>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

// === impl RlsPeer ===

impl RlsPeer {
    /// Loads an envoyproxy/ratelimit YAML file and listens on an ephemeral port.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self, PeerError> {
        Self::start(load_yaml_file(path.as_ref())?, 0)
    }

    /// Same, from YAML text.
    pub fn from_yaml_str(yaml: &str) -> Result<Self, PeerError> {
        Self::start(parse_yaml(yaml)?, 0)
    }

    /// Serves `config` on `127.0.0.1:port` (`0`: an ephemeral port).
    pub fn start(config: RlsConfig, port: u16) -> Result<Self, PeerError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listener =
            TcpListener::bind(addr).map_err(|source| PeerError::Listen { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| PeerError::Listen { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| PeerError::Listen { addr, source })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PeerError::Runtime)?;
        let state = Arc::new(PeerState {
            config,
            inner: Mutex::new(MutableState::default()),
        });
        let service = RateLimitService {
            state: Arc::clone(&state),
        };
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = std::thread::Builder::new()
            .name(format!("rls-peer-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, service, stop)))
            .map_err(PeerError::Runtime)?;
        Ok(Self {
            addr,
            state,
            shutdown: Some(shutdown),
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn domain(&self) -> &str {
        self.state.config.domain()
    }

    /// Every call received so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.state.lock().received.clone()
    }

    /// Forgets the recorded calls (the counters stay).
    pub fn clear_received(&self) {
        self.state.lock().received.clear();
    }

    /// Forgets every count, as if Redis had been flushed.
    pub fn reset_counters(&self) {
        self.state.lock().counters = WindowCounters::default();
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.state.lock().behaviour = behaviour;
    }

    /// Pins the peer's clock to `unix_seconds` (windows are aligned to the epoch, so a test
    /// that pins the clock cannot straddle a window boundary); `None` returns to the system
    /// clock.
    pub fn set_now(&self, unix_seconds: Option<u64>) {
        self.state.lock().frozen_now = unix_seconds;
    }
}

impl Drop for RlsPeer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// Reads and validates an envoyproxy/ratelimit YAML file.
pub fn load_yaml_file(path: &Path) -> Result<RlsConfig, PeerError> {
    let text = std::fs::read_to_string(path).map_err(|source| PeerError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_yaml(&text)
}

/// Parses and validates envoyproxy/ratelimit YAML text.
pub fn parse_yaml(yaml: &str) -> Result<RlsConfig, PeerError> {
    let file: RlsConfigFile = serde_yaml::from_str(yaml)?;
    Ok(RlsConfig::new(file)?)
}

async fn serve(listener: TcpListener, service: RateLimitService, stop: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("rls-peer: cannot adopt the listener: {error}");
            return;
        }
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(incoming);
    // Not a graceful shutdown: that waits for clients to close their connections, and a
    // test's client may live on a runtime that is blocked in our `Drop`. Returning here
    // drops the runtime, which closes the listener and every connection at once.
    tokio::select! {
        result = server => {
            if let Err(error) = result {
                eprintln!("rls-peer: server stopped: {error}");
            }
        }
        _ = stop => {}
    }
}

// === impl PeerState ===

impl PeerState {
    /// A poisoned lock only means a test thread panicked while holding it; the data is
    /// still consistent (every update is a single assignment or push).
    fn lock(&self) -> MutexGuard<'_, MutableState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, request: &proto::RateLimitRequest) -> Behaviour {
        let mut inner = self.lock();
        inner.received.push(ReceivedRequest {
            domain: request.domain.clone(),
            descriptors: request
                .descriptors
                .iter()
                .map(|d| {
                    d.entries
                        .iter()
                        .map(|e| (e.key.clone(), e.value.clone()))
                        .collect()
                })
                .collect(),
            hits_addend: request.hits_addend,
            descriptor_hits_addends: request
                .descriptors
                .iter()
                .map(|d| d.hits_addend.map(|h| h.value))
                .collect(),
        });
        inner.behaviour
    }

    /// Decides one call. Each descriptor counts with its own addend when Envoy sent one
    /// (a route's `hits_addend`), else the request-wide one, as envoyproxy/ratelimit does.
    fn decide(&self, request: &proto::RateLimitRequest) -> proto::RateLimitResponse {
        let mut inner = self.lock();
        let now = inner.frozen_now.unwrap_or_else(system_now);
        let statuses: Vec<RlsDescriptorStatus> = request
            .descriptors
            .iter()
            .filter_map(|descriptor| {
                let entries: Vec<DescriptorEntry> = descriptor
                    .entries
                    .iter()
                    .map(|e| DescriptorEntry {
                        key: e.key.clone(),
                        value: e.value.clone(),
                    })
                    .collect();
                let hits = descriptor.hits_addend.map_or(request.hits_addend, |h| {
                    u32::try_from(h.value).unwrap_or(u32::MAX)
                });
                self.config
                    .should_rate_limit(
                        &mut inner.counters,
                        &request.domain,
                        std::slice::from_ref(&entries),
                        hits,
                        now,
                    )
                    .statuses
                    .into_iter()
                    .next()
            })
            .collect();
        let over = statuses.iter().any(|s| s.code == RlsCode::OverLimit);
        proto::RateLimitResponse {
            overall_code: if over { code::OVER_LIMIT } else { code::OK },
            statuses: statuses.iter().map(to_proto_status).collect(),
        }
    }
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn to_proto_status(status: &RlsDescriptorStatus) -> proto::DescriptorStatus {
    proto::DescriptorStatus {
        code: match status.code {
            RlsCode::Ok => code::OK,
            RlsCode::OverLimit => code::OVER_LIMIT,
            RlsCode::Unknown => code::UNKNOWN,
        },
        current_limit: status.current_limit.as_ref().map(|limit| proto::RateLimit {
            requests_per_unit: limit.requests_per_unit,
            unit: match limit.unit {
                RlsUnit::Second => unit::SECOND,
                RlsUnit::Minute => unit::MINUTE,
                RlsUnit::Hour => unit::HOUR,
                RlsUnit::Day => unit::DAY,
                RlsUnit::Week => unit::WEEK,
                RlsUnit::Month => unit::MONTH,
                RlsUnit::Year => unit::YEAR,
                RlsUnit::Unknown => unit::UNKNOWN,
            },
            name: limit.name.clone().unwrap_or_default(),
        }),
        limit_remaining: status.limit_remaining,
        duration_until_reset: status.duration_until_reset.map(|d| proto::ProtoDuration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        }),
    }
}

// === impl RateLimitService ===

impl tonic::server::NamedService for RateLimitService {
    const NAME: &'static str = proto::SERVICE_NAME;
}

impl tower_service::Service<http::Request<tonic::body::Body>> for RateLimitService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let state = Arc::clone(&self.state);
        if request.uri().path() != proto::SHOULD_RATE_LIMIT_PATH {
            return Box::pin(async move {
                Ok(tonic::Status::unimplemented("only ShouldRateLimit is served").into_http())
            });
        }
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(ShouldRateLimit { state }, request).await)
        })
    }
}

impl tonic::server::UnaryService<proto::RateLimitRequest> for ShouldRateLimit {
    type Response = proto::RateLimitResponse;
    type Future = BoxFuture<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<proto::RateLimitRequest>) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let request = request.into_inner();
            let behaviour = state.record(&request);
            match behaviour {
                Behaviour::Unavailable => {
                    return Err(tonic::Status::unavailable("rls-peer told to fail"));
                }
                Behaviour::Delay(delay) => tokio::time::sleep(delay).await,
                Behaviour::Serve => {}
            }
            if request.descriptors.is_empty() {
                // envoyproxy/ratelimit refuses an empty descriptor list the same way.
                return Err(tonic::Status::invalid_argument(
                    "rate limit descriptor list must not be empty",
                ));
            }
            Ok(tonic::Response::new(state.decide(&request)))
        })
    }
}

/// A minimal client for tests: one `ShouldRateLimit` call.
pub async fn should_rate_limit(
    addr: SocketAddr,
    request: proto::RateLimitRequest,
) -> Result<proto::RateLimitResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(proto::SHOULD_RATE_LIMIT_PATH);
    client
        .unary(
            tonic::Request::new(request),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map(tonic::Response::into_inner)
}
