//! An in-process mock upstream: HTTP/1.1 on 127.0.0.1, its own small tokio runtime on its
//! own thread, stopped and joined when dropped.
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

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use crate::error::{Context, Result};

/// Requests kept for [`MockUpstream::received`]; the counters keep counting beyond it, so a
/// long `make run` session does not grow without bound.
const MAX_RECORDED_REQUESTS: usize = 10_000;
const MAX_EXTRA_HEADERS: usize = 1000;

/// What the mock saw of one request.
#[derive(Clone, Debug)]
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

#[derive(Default)]
struct Seen {
    /// (method, path without query) -> requests.
    counts: HashMap<(String, String), u64>,
    recorded: Vec<RecordedRequest>,
}

pub struct MockUpstream {
    name: String,
    port: u16,
    seen: Arc<Mutex<Seen>>,
    shutdown: Option<oneshot::Sender<()>>,
    server_thread: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Starts a mock named `name` on a free port of 127.0.0.1.
    pub fn start(name: &str) -> Result<Self> {
        Self::start_inner(name).with_context(|| format!("starting mock upstream {name}"))
    }

    fn start_inner(name: &str) -> Result<Self> {
        // Bound here, on the caller's thread, so the port is known (and taken) on return.
        let listener = StdTcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (shutdown, shutdown_signal) = oneshot::channel();

        let server = Server {
            name: Arc::from(name),
            seen: Arc::clone(&seen),
        };
        let server_thread = std::thread::Builder::new()
            .name(format!("mock-{name}"))
            .spawn(move || {
                // Dropping the runtime at the end of this closure cancels every connection.
                runtime.block_on(server.serve(listener, shutdown_signal));
            })?;
        Ok(Self {
            name: name.to_owned(),
            port,
            seen,
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

    /// Requests seen for `method` and `path` (query ignored).
    pub fn request_count(&self, method: &str, path: &str) -> u64 {
        let key = (method.to_owned(), path.to_owned());
        lock(&self.seen).counts.get(&key).copied().unwrap_or(0)
    }

    /// Requests seen in total.
    pub fn total_requests(&self) -> u64 {
        lock(&self.seen).counts.values().sum()
    }

    /// The first requests seen (up to 10 000), in arrival order.
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

/// A poisoned lock only means another request handler panicked; the counts are still
/// usable, and a test should see them rather than a second panic.
fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Clone)]
struct Server {
    name: Arc<str>,
    seen: Arc<Mutex<Seen>>,
}

impl Server {
    async fn serve(self, listener: StdTcpListener, mut shutdown: oneshot::Receiver<()>) {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("mock upstream {}: {error}", self.name);
                return;
            }
        };
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let server = self.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            let server = server.clone();
                            async move { Ok::<_, Infallible>(server.answer(request)) }
                        });
                        // A connection Envoy resets mid-request is not a mock failure.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
    }

    fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
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
        {
            let mut seen = lock(&self.seen);
            *seen.counts.entry((method.clone(), path)).or_default() += 1;
            if seen.recorded.len() < MAX_RECORDED_REQUESTS {
                seen.recorded.push(RecordedRequest {
                    method: method.clone(),
                    path: path_and_query.clone(),
                    headers,
                });
            }
        }

        let status = request
            .headers()
            .get("x-mock-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::OK);
        let body = serde_json::json!({
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
        if let Some(cache_control) = request.headers().get("x-mock-cache-control") {
            headers.insert("cache-control", cache_control.clone());
        }
        let extra_headers = request
            .headers()
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
        if request.headers().contains_key("x-mock-non-utf8") {
            // obs-text: legal on the wire (RFC 9110 §5.5), not UTF-8.
            if let Ok(value) = HeaderValue::from_bytes(b"caf\xe9") {
                headers.insert("x-latin1", value);
            }
        }
        response
    }
}
