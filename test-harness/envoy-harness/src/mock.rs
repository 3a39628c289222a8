//! A mock upstream: HTTP/1.1, its own small tokio runtime on its own thread, stopped and
//! joined when dropped. In process for the tests and the local gateway; as a program
//! (`mock-upstream`) in the kind cluster.
//!
//! What it answers is steered by the request, so one upstream serves every test case:
//! - `x-mock-status: 500` chooses the status (default 200);
//! - `x-mock-cache-control: <value>` makes it send `cache-control: <value>`, to check that
//!   a filter keeps an upstream's own cache policy;
//! - `x-mock-extra-headers: N` adds N headers `x-extra-<i>` of 500 bytes each (at most
//!   1000), for a filter facing a huge header map;
//! - `x-mock-non-utf8: 1` adds `x-latin1: caf\xe9`, a header value that is not UTF-8.
//!
//! Every answer carries the headers a real backend leaks (`server: nginx/1.25`,
//! `x-powered-by: PHP/8`), so tests can prove the gateway strips them, and a JSON body that
//! names the upstream, so tests can prove where a request was routed.
//!
//! # Fault controls and counters
//!
//! Header steering cannot say "fail the *next* request only" (a retry carries the same
//! headers) nor reset a connection, and a test against a cluster cannot read the mock's
//! memory. So the mock has a second, plain-HTTP **control port**, never routed by the
//! gateway (in kind it listens on the pod's loopback and is reached by port-forward):
//!
//! | request | effect |
//! |---|---|
//! | `POST /faults` `{"method":"GET","path":"/api/v1/x","times":1,"fault":{"status":503}}` | the next `times` matching requests are answered with that status |
//! | same with `"fault":"reset"` | the request is read in full, then the connection is reset (TCP RST), no response byte |
//! | same with `"fault":{"delayMs":2500}` | the answer is held back that long, or until the faults are cleared |
//! | `DELETE /faults` | drops every rule and releases every held answer at once |
//! | `GET /counts` | `{"total":N,"counts":[{"method":"GET","path":"/api/v1/x","count":2}]}` |
//! | `GET /requests?path=/api/v1/x` | what arrived for that path: `[{"method","path","headers":[[name,value]]}]` |
//! | `GET /healthz` | `ok` |
//!
//! `method` and `path` are optional exact matches (the path without its query; an absent one
//! matches everything); `times` defaults to 1. Rules are tried in the order they were added
//! and a request takes at most one. Requests a fault hits are counted like any other: the
//! upstream did receive them, which is what "delivered exactly once" is about.
//!
//! Replicas of one service share their rules and their counters through one
//! [`MockService`]: "fail the next request" means the next one the *service* receives,
//! whichever replica Envoy picks (a retry goes to the other one). Each replica also keeps
//! its own counts ([`MockUpstream::request_count`]) for tests that care which pod answered.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, watch};

use crate::error::{Context, Result};

/// Requests kept for [`MockUpstream::received`] and `GET /requests`; the counters keep
/// counting beyond it, so a long `make run` session does not grow without bound.
const MAX_RECORDED_REQUESTS: usize = 10_000;
const MAX_EXTRA_HEADERS: usize = 1000;

/// What the mock saw of one request.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query as received.
    pub path: String,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What a fault rule does to a request it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Fault {
    /// Answer with this status (the usual body, plus `x-mock-fault: status`).
    Status(u16),
    /// Read the request, then reset the connection without answering.
    Reset,
    /// Hold the answer back this many milliseconds (cut short by clearing the faults).
    DelayMs(u64),
}

/// One rule of the control API (`POST /faults`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Exact path, query excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default = "one")]
    pub times: u64,
    pub fault: Fault,
}

fn one() -> u64 {
    1
}

impl FaultRule {
    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path.as_deref().is_none_or(|p| p == path)
    }
}

#[derive(Default)]
struct Seen {
    /// (method, path without query) -> requests.
    counts: HashMap<(String, String), u64>,
    recorded: Vec<RecordedRequest>,
}

impl Seen {
    fn record(&mut self, request: &RecordedRequest, path: &str) {
        *self
            .counts
            .entry((request.method.clone(), path.to_owned()))
            .or_default() += 1;
        if self.recorded.len() < MAX_RECORDED_REQUESTS {
            self.recorded.push(request.clone());
        }
    }
}

struct ServiceState {
    faults: Mutex<VecDeque<FaultRule>>,
    seen: Mutex<Seen>,
    /// Bumped when the faults are cleared: every held answer waits on it.
    release: watch::Sender<u64>,
}

/// The state replicas of one service share: fault rules and service-wide counters.
#[derive(Clone)]
pub struct MockService {
    state: Arc<ServiceState>,
}

impl Default for MockService {
    fn default() -> Self {
        Self::new()
    }
}

impl MockService {
    pub fn new() -> Self {
        Self {
            state: Arc::new(ServiceState {
                faults: Mutex::new(VecDeque::new()),
                seen: Mutex::new(Seen::default()),
                release: watch::Sender::new(0),
            }),
        }
    }

    /// Adds a rule (what `POST /faults` does).
    pub fn add_fault(&self, rule: FaultRule) {
        lock(&self.state.faults).push_back(rule);
    }

    /// Drops every rule and releases every held answer (what `DELETE /faults` does);
    /// returns how many rules were still pending.
    pub fn clear_faults(&self) -> usize {
        let dropped = {
            let mut faults = lock(&self.state.faults);
            let dropped = faults.len();
            faults.clear();
            dropped
        };
        self.state
            .release
            .send_modify(|generation| *generation += 1);
        dropped
    }

    /// Requests the service received for `method` and `path` (query ignored), all replicas.
    pub fn request_count(&self, method: &str, path: &str) -> u64 {
        let key = (method.to_owned(), path.to_owned());
        lock(&self.state.seen)
            .counts
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// The first matching rule with requests left takes this request.
    fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        let mut faults = lock(&self.state.faults);
        let index = faults.iter().position(|r| r.matches(method, path))?;
        let rule = faults.get_mut(index)?;
        let fault = rule.fault;
        rule.times = rule.times.saturating_sub(1);
        if rule.times == 0 {
            faults.remove(index);
        }
        Some(fault)
    }
}

/// A poisoned lock only means another request handler panicked; the state is still
/// usable, and a test should see it rather than a second panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a mock listens.
#[derive(Clone, Copy, Debug)]
pub struct MockAddresses {
    pub listen: SocketAddr,
    pub control: SocketAddr,
}

impl Default for MockAddresses {
    /// Free ports on 127.0.0.1.
    fn default() -> Self {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Self {
            listen: any,
            control: any,
        }
    }
}

pub struct MockUpstream {
    name: String,
    port: u16,
    control_port: u16,
    seen: Arc<Mutex<Seen>>,
    service: MockService,
    shutdown: Option<oneshot::Sender<()>>,
    server_thread: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Starts a mock named `name` on free ports of 127.0.0.1, a service of its own.
    pub fn start(name: &str) -> Result<Self> {
        Self::start_replica(name, &MockService::new())
    }

    /// Starts one more replica of `service` on free ports of 127.0.0.1.
    pub fn start_replica(name: &str, service: &MockService) -> Result<Self> {
        Self::start_on(name, service, MockAddresses::default())
    }

    /// Starts a replica on the given addresses.
    pub fn start_on(name: &str, service: &MockService, addresses: MockAddresses) -> Result<Self> {
        Self::start_inner(name, service, addresses)
            .with_context(|| format!("starting mock upstream {name}"))
    }

    fn start_inner(name: &str, service: &MockService, addresses: MockAddresses) -> Result<Self> {
        // Bound here, on the caller's thread, so the ports are known (and taken) on return.
        let listener = StdTcpListener::bind(addresses.listen)?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let control = StdTcpListener::bind(addresses.control)?;
        control.set_nonblocking(true)?;
        let control_port = control.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (shutdown, shutdown_signal) = oneshot::channel();

        let server = Server {
            name: Arc::from(name),
            seen: Arc::clone(&seen),
            service: service.clone(),
        };
        let server_thread = std::thread::Builder::new()
            .name(format!("mock-{name}"))
            .spawn(move || {
                // Dropping the runtime at the end of this closure cancels every connection.
                runtime.block_on(server.serve(listener, control, shutdown_signal));
            })?;
        Ok(Self {
            name: name.to_owned(),
            port,
            control_port,
            seen,
            service: service.clone(),
            shutdown: Some(shutdown),
            server_thread: Some(server_thread),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The control API's port (see the module documentation).
    pub fn control_port(&self) -> u16 {
        self.control_port
    }

    /// The service this replica belongs to.
    pub fn service(&self) -> &MockService {
        &self.service
    }

    /// Requests this replica saw for `method` and `path` (query ignored).
    pub fn request_count(&self, method: &str, path: &str) -> u64 {
        let key = (method.to_owned(), path.to_owned());
        lock(&self.seen).counts.get(&key).copied().unwrap_or(0)
    }

    /// Requests this replica saw in total.
    pub fn total_requests(&self) -> u64 {
        lock(&self.seen).counts.values().sum()
    }

    /// The first requests this replica saw (up to 10 000), in arrival order.
    pub fn received(&self) -> Vec<RecordedRequest> {
        lock(&self.seen).recorded.clone()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may already be gone; then there is nothing to stop.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.server_thread.take() {
            let _ = thread.join();
        }
    }
}

/// The error a handler returns to have hyper drop the connection without a response.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by a fault rule")
    }
}

impl std::error::Error for ResetConnection {}

/// A connection that closes with RST instead of FIN when `reset` is set before it drops:
/// what a crashing upstream looks like to Envoy.
struct ResettableStream {
    inner: tokio::net::TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            // SO_LINGER 0: close() sends RST and discards unsent data.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Clone)]
struct Server {
    name: Arc<str>,
    seen: Arc<Mutex<Seen>>,
    service: MockService,
}

impl Server {
    async fn serve(
        self,
        listener: StdTcpListener,
        control: StdTcpListener,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        let (listener, control) = match (
            tokio::net::TcpListener::from_std(listener),
            tokio::net::TcpListener::from_std(control),
        ) {
            (Ok(listener), Ok(control)) => (listener, control),
            (Err(error), _) | (_, Err(error)) => {
                eprintln!("mock upstream {}: {error}", self.name);
                return;
            }
        };
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    tokio::spawn(self.clone().serve_upstream(stream));
                }
                accepted = control.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let service = self.service.clone();
                    tokio::spawn(async move {
                        let handler = service_fn(move |request| {
                            let service = service.clone();
                            async move { Ok::<_, Infallible>(control_answer(&service, request).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), handler)
                            .await;
                    });
                }
            }
        }
    }

    async fn serve_upstream(self, stream: tokio::net::TcpStream) {
        let reset = Arc::new(AtomicBool::new(false));
        let stream = ResettableStream {
            inner: stream,
            reset: Arc::clone(&reset),
        };
        let handler = service_fn(move |request| {
            let server = self.clone();
            let reset = Arc::clone(&reset);
            async move { server.answer(request, &reset).await }
        });
        // A connection Envoy resets mid-request, or one a fault resets, is not a mock failure.
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), handler)
            .await;
    }

    async fn answer(
        &self,
        request: Request<Incoming>,
        reset: &AtomicBool,
    ) -> std::result::Result<Response<Full<Bytes>>, ResetConnection> {
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or_else(|| path.clone(), |pq| pq.to_string());
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let recorded = RecordedRequest {
            method: method.clone(),
            path: path_and_query.clone(),
            headers,
        };
        lock(&self.seen).record(&recorded, &path);
        lock(&self.service.state.seen).record(&recorded, &path);

        // Subscribed before the rule is taken, so a clear that follows is never missed.
        let mut release = self.service.state.release.subscribe();
        let fault = self.service.take_fault(&method, &path);
        let (parts, body) = request.into_parts();
        match fault {
            Some(Fault::Reset) => {
                // The whole request first: the upstream got it, then died.
                let _ = body.collect().await;
                reset.store(true, Ordering::Relaxed);
                return Err(ResetConnection);
            }
            Some(Fault::DelayMs(millis)) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(millis)) => {}
                    _ = release.changed() => {}
                }
            }
            Some(Fault::Status(_)) | None => {}
        }
        drop(body);

        let fault_status = match fault {
            Some(Fault::Status(code)) => StatusCode::from_u16(code).ok(),
            _ => None,
        };
        let status = fault_status
            .or_else(|| {
                parts
                    .headers
                    .get("x-mock-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u16>().ok())
                    .and_then(|code| StatusCode::from_u16(code).ok())
            })
            .unwrap_or(StatusCode::OK);
        let body = json!({
            "upstream": &*self.name,
            "method": method,
            "path": path_and_query,
        })
        .to_string();

        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("server", HeaderValue::from_static("nginx/1.25"));
        headers.insert("x-powered-by", HeaderValue::from_static("PHP/8"));
        if fault_status.is_some() {
            headers.insert("x-mock-fault", HeaderValue::from_static("status"));
        }
        if let Some(cache_control) = parts.headers.get("x-mock-cache-control") {
            headers.insert("cache-control", cache_control.clone());
        }
        let extra_headers = parts
            .headers
            .get("x-mock-extra-headers")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_EXTRA_HEADERS);
        let filler = HeaderValue::from_str(&"v".repeat(500)).ok();
        for index in 0..extra_headers {
            let name = HeaderName::from_bytes(format!("x-extra-{index}").as_bytes()).ok();
            if let (Some(name), Some(value)) = (name, filler.clone()) {
                headers.insert(name, value);
            }
        }
        if parts.headers.contains_key("x-mock-non-utf8") {
            // obs-text: legal on the wire (RFC 9110 §5.5), not UTF-8.
            if let Ok(value) = HeaderValue::from_bytes(b"caf\xe9") {
                headers.insert("x-latin1", value);
            }
        }
        Ok(response)
    }
}

fn control_reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

/// The value of `name` in a query string (no percent-decoding: test paths are plain).
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

async fn control_answer(
    service: &MockService,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    match (method, path.as_str()) {
        (Method::POST, "/faults") => {
            let body = match request.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(error) => {
                    return control_reply(
                        StatusCode::BAD_REQUEST,
                        json!({"error": error.to_string()}),
                    )
                }
            };
            match serde_json::from_slice::<FaultRule>(&body) {
                Ok(rule) => {
                    let echo = json!(rule);
                    service.add_fault(rule);
                    control_reply(StatusCode::CREATED, echo)
                }
                Err(error) => {
                    control_reply(StatusCode::BAD_REQUEST, json!({"error": error.to_string()}))
                }
            }
        }
        (Method::DELETE, "/faults") => {
            let dropped = service.clear_faults();
            control_reply(StatusCode::OK, json!({"dropped": dropped}))
        }
        (Method::GET, "/counts") => {
            let seen = lock(&service.state.seen);
            let mut counts: Vec<_> = seen
                .counts
                .iter()
                .map(|((method, path), count)| json!({"method": method, "path": path, "count": count}))
                .collect();
            counts.sort_by_key(|entry| entry.to_string());
            let total: u64 = seen.counts.values().sum();
            control_reply(StatusCode::OK, json!({"total": total, "counts": counts}))
        }
        (Method::GET, "/requests") => {
            let Some(wanted) = query_value(&query, "path") else {
                return control_reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "GET /requests needs ?path=<path>"}),
                );
            };
            let seen = lock(&service.state.seen);
            let matching: Vec<&RecordedRequest> = seen
                .recorded
                .iter()
                .filter(|r| r.path.split('?').next() == Some(wanted))
                .collect();
            control_reply(StatusCode::OK, json!(matching))
        }
        (Method::GET, "/healthz") => control_reply(StatusCode::OK, json!("ok")),
        _ => control_reply(
            StatusCode::NOT_FOUND,
            json!({"error": "control API: POST|DELETE /faults, GET /counts, GET /requests?path=, GET /healthz"}),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn rule(json: &str) -> FaultRule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn rules_parse_from_the_documented_json_and_reject_unknown_fields() {
        assert_eq!(
            rule(r#"{"method":"GET","path":"/x","times":2,"fault":{"status":503}}"#),
            FaultRule {
                method: Some("GET".into()),
                path: Some("/x".into()),
                times: 2,
                fault: Fault::Status(503),
            }
        );
        assert_eq!(rule(r#"{"fault":"reset"}"#).times, 1);
        assert_eq!(
            rule(r#"{"fault":{"delayMs":10}}"#).fault,
            Fault::DelayMs(10)
        );
        assert!(serde_json::from_str::<FaultRule>(r#"{"fault":"reset","count":1}"#).is_err());
        assert!(serde_json::from_str::<FaultRule>(r#"{"fault":"explode"}"#).is_err());
    }

    #[test]
    fn a_rule_is_taken_times_times_by_matching_requests_only() {
        let service = MockService::new();
        service.add_fault(rule(
            r#"{"method":"GET","path":"/a","times":2,"fault":"reset"}"#,
        ));
        service.add_fault(rule(r#"{"fault":{"status":502}}"#));
        assert_eq!(service.take_fault("GET", "/a"), Some(Fault::Reset));
        // Not /a: the catch-all rule.
        assert_eq!(service.take_fault("POST", "/a"), Some(Fault::Status(502)));
        assert_eq!(service.take_fault("GET", "/a"), Some(Fault::Reset));
        assert_eq!(service.take_fault("GET", "/a"), None);
        service.add_fault(rule(r#"{"fault":"reset","times":5}"#));
        assert_eq!(service.clear_faults(), 1);
        assert_eq!(service.take_fault("GET", "/b"), None);
    }
}
