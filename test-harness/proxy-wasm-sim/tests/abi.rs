//! Simulator tests against the abi-probe fixture, a real Rust-SDK module
//! (`cargo build --release --target wasm32-wasip1 -p abi-probe`, or `make wasm`).
//! Each test builds its own Host; they run in parallel.

// Test crate: the shared helpers below fail the test on an unexpected error, like the
// `#[test]` functions themselves (where clippy already allows unwrap/expect).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm_sim::{
    fixture, Action, Host, HostBuilder, LogLevel, MetricKind, PropertyValue, SharedData, SimError,
    Status, StreamId,
};

fn builder(config: &str) -> HostBuilder {
    Host::builder(fixture("abi-probe")).plugin_config(config)
}

fn probe(config: &str) -> Host {
    builder(config).build().expect("abi-probe starts")
}

fn request(action: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "GET"),
        (":path", "/x?y=1"),
        (":authority", "svc"),
        ("x-probe-action", action),
    ]
}

/// A stream whose request headers (with `action`) already ran.
fn stream_with(host: &mut Host, action: &str, end_of_stream: bool) -> (StreamId, Action) {
    let stream = host.new_stream();
    let action = host
        .request_headers(stream, &request(action), end_of_stream)
        .expect("request headers");
    (stream, action)
}

// ------------------------------------------------------------------- plugin lifecycle

#[test]
fn plugin_starts_and_a_plain_request_passes_through() {
    let mut host = probe("{}");
    assert!(host.configured());
    assert_eq!(
        host.root_context_id(),
        1,
        "Envoy numbers the first root context 1"
    );
    let (s, action) = stream_with(&mut host, "none", true);
    assert_eq!(
        s,
        StreamId(2),
        "stream contexts follow the root on the same counter"
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(
        host.response_headers(s, &[(":status", "200")], true)
            .unwrap(),
        Action::Continue
    );
    assert_eq!(
        host.response_header(s, "x-probe-response").as_deref(),
        Some("seen")
    );
    assert!(host.local_reply(s).is_none());
    host.complete(s).unwrap();
    // Access-log phase: request and response headers readable (single-value form).
    assert!(
        host.has_log(LogLevel::Info, "access log: path=/x?y=1 status=200"),
        "{:?}",
        host.logs()
    );
}

#[test]
fn vm_configuration_is_readable_at_vm_start() {
    let host = builder("{}").vm_config("vm-cfg").build().unwrap();
    assert!(
        host.has_log(LogLevel::Info, "vm start: 6 bytes: vm-cfg"),
        "{:?}",
        host.logs()
    );
}

#[test]
fn rejected_configuration_does_not_fail_build_and_reconfigure_reruns_on_configure() {
    let mut host = probe(r#"{"reject": true}"#);
    assert!(!host.configured());
    assert!(host.has_log(LogLevel::Warn, "config rejected"));
    assert!(host.reconfigure("{not json").map(|ok| !ok).unwrap());
    assert!(host.has_log(LogLevel::Error, "invalid config"));
    assert!(host.reconfigure("{}").unwrap());
    assert!(host.configured());
}

// ------------------------------------------------------------------- traps

#[test]
fn panic_in_on_configure_is_a_build_error_with_the_panic_message() {
    let error = builder(r#"{"panic_in_configure": true}"#)
        .build()
        .unwrap_err();
    match error {
        SimError::Trap { callback, message } => {
            assert_eq!(callback, "proxy_on_configure");
            assert!(message.contains("configure panic requested"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn panic_fails_the_vm_and_streams_get_fail_closed_503() {
    let mut host = probe("{}");
    let s = host.new_stream();
    let error = host
        .request_headers(s, &request("panic"), true)
        .unwrap_err();
    match &error {
        SimError::Trap { callback, message } => {
            assert_eq!(callback, "proxy_on_request_headers");
            assert!(message.contains("probe panic requested"), "{message}");
            assert!(
                message.contains("src/lib.rs"),
                "panic location kept: {message}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(host.failed().unwrap().contains("probe panic requested"));
    let reply = host.local_reply(s).expect("current stream answered");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.details, "wasm_fail_stream");
    assert_eq!(reply.grpc_status, Some(14));

    // Every later stream on the failed VM: FAIL_CLOSED.
    let next = host.new_stream();
    let error = host
        .request_headers(next, &request("none"), true)
        .unwrap_err();
    assert!(
        matches!(error, SimError::VmFailed(ref m) if m.contains("probe panic requested")),
        "{error}"
    );
    assert_eq!(host.local_reply(next).map(|r| r.status), Some(503));
    assert!(matches!(
        host.advance(Duration::from_secs(1)),
        Err(SimError::VmFailed(_))
    ));
}

#[test]
fn runaway_loop_is_stopped_by_the_fuel_budget() {
    let mut host = builder("{}").fuel(20_000_000).build().unwrap();
    let s = host.new_stream();
    let error = host.request_headers(s, &request("loop"), true).unwrap_err();
    assert!(
        matches!(&error, SimError::Trap { message, .. } if message.contains("fuel")),
        "{error}"
    );
    assert!(host.failed().is_some());
}

// ------------------------------------------------------------------- headers

#[test]
fn header_mutations_follow_envoy_semantics() {
    let mut host = probe("{}");
    let s = host.new_stream();
    let mut headers = request("mutate");
    headers.extend([
        ("X-Replaced", "old1"),
        ("x-replaced", "old2"),
        ("X-Remove-Me", "bye"),
    ]);
    assert_eq!(
        host.request_headers(s, &headers, true).unwrap(),
        Action::Continue
    );
    assert_eq!(host.request_header_values(s, "x-added"), vec!["1", "2"]);
    assert_eq!(host.request_header_values(s, "x-replaced"), vec!["new"]);
    assert_eq!(host.request_header(s, "x-remove-me"), None);
    let names: Vec<String> = host
        .request_headers_of(s)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(names.first().map(String::as_str), Some(":method"));
    assert!(
        names.iter().all(|n| n == &n.to_ascii_lowercase()),
        "{names:?}"
    );
}

#[test]
fn request_headers_are_gone_after_they_continued() {
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "read-request-late", true);
    host.response_headers(s, &[(":status", "200")], true)
        .unwrap();
    // Pairs form in the response phase: an empty map, not an error.
    assert_eq!(
        host.response_header(s, "x-late-request-headers").as_deref(),
        Some("0")
    );

    // Single-value form: BAD_ARGUMENT, which the SDK turns into a panic (as under Envoy).
    let (s, _) = stream_with(&mut host, "read-request-late-single", true);
    let error = host
        .response_headers(s, &[(":status", "200")], true)
        .unwrap_err();
    assert!(
        matches!(&error, SimError::Trap { message, .. } if message.contains("unexpected status: 2")),
        "{error}"
    );
}

#[test]
fn non_utf8_values_travel_through_the_bytes_getters() {
    let mut host = probe("{}");
    let s = host.new_stream();
    let mut headers: Vec<(String, Vec<u8>)> = request("bytes")
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    headers.push(("x-binary".into(), vec![0xff, 0xfe, 0x41]));
    host.request_headers_bytes(s, headers, true).unwrap();
    assert_eq!(
        host.request_header(s, "x-binary-hex").as_deref(),
        Some("fffe41")
    );
    assert_eq!(
        host.request_header_bytes(s, "x-binary-out"),
        Some(vec![0xff, 0x00, 0x80])
    );
}

#[test]
fn empty_values_come_back_as_null_pointer_without_allocation() {
    let mut host = builder("{}")
        .property(&["probe", "empty"], PropertyValue::str(""))
        .build()
        .unwrap();
    let s = host.new_stream();
    let mut headers = request("empty-values");
    headers.push(("x-empty", ""));
    host.request_headers(s, &headers, false).unwrap();
    // Header: OK + (0, 0) → SDK `Some("")`.
    assert_eq!(
        host.request_header(s, "x-empty-header").as_deref(),
        Some("some-empty")
    );
    // Property: OK + (0, 0) → SDK `None`, like Envoy for an empty string.
    assert_eq!(
        host.request_header(s, "x-empty-property").as_deref(),
        Some("none")
    );
    // Shared data: empty value with a CAS → `(None, Some(cas))`.
    assert_eq!(
        host.request_header(s, "x-empty-shared").as_deref(),
        Some("none-with-cas")
    );
    // Body outside a body callback: NOT_FOUND → `None`.
    assert_eq!(
        host.request_header(s, "x-empty-body").as_deref(),
        Some("none")
    );
}

// ------------------------------------------------------------------- bodies

#[test]
fn body_is_buffered_while_paused_and_replaced_at_end_of_stream() {
    let mut host = probe("{}");
    let (s, action) = stream_with(&mut host, "body-upper", false);
    assert_eq!(action, Action::Continue);
    assert_eq!(host.request_body(s, b"abc", false).unwrap(), Action::Pause);
    assert_eq!(host.forwarded_request_body(s), b"");
    assert_eq!(
        host.request_body(s, b"def", true).unwrap(),
        Action::Continue
    );
    assert_eq!(host.forwarded_request_body(s), b"ABCDEF");
}

#[test]
fn body_append_and_mid_buffer_replace() {
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "body-append", false);
    host.request_body(s, b"abc", true).unwrap();
    assert_eq!(host.forwarded_request_body(s), b"abc+tail");

    // Envoy rejects a replace that starts inside the buffer (BAD_ARGUMENT → SDK panic).
    let (s, _) = stream_with(&mut host, "body-mid-replace", false);
    let error = host.request_body(s, b"abc", true).unwrap_err();
    assert!(
        matches!(&error, SimError::Trap { message, .. } if message.contains("unexpected status: 2")),
        "{error}"
    );
}

#[test]
fn response_body_rewrite() {
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "response-body-upper", true);
    host.response_headers(s, &[(":status", "200")], false)
        .unwrap();
    assert_eq!(
        host.response_body(s, b"hello ", false).unwrap(),
        Action::Pause
    );
    assert_eq!(
        host.response_body(s, b"world", true).unwrap(),
        Action::Continue
    );
    assert_eq!(host.forwarded_response_body(s), b"HELLO WORLD");
}

#[test]
fn misuse_is_reported_not_silently_accepted() {
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "none", true);
    assert!(
        matches!(host.request_body(s, b"x", true), Err(SimError::Misuse(_))),
        "body after eos"
    );
    host.complete(s).unwrap();
    assert!(
        matches!(host.complete(s), Err(SimError::Misuse(_))),
        "complete twice"
    );
    assert!(matches!(
        host.respond_http_call(404, &[], b""),
        Err(SimError::Misuse(_))
    ));
}

// ------------------------------------------------------------------- local replies

#[test]
fn local_reply_forces_stop_and_runs_the_plugins_response_callbacks() {
    let mut host = probe("{}");
    let (s, action) = stream_with(&mut host, "local-reply", false);
    assert_eq!(
        action,
        Action::Pause,
        "plugin returned Continue, Envoy forces Stop"
    );
    let reply = host.local_reply(s).expect("local reply");
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body, b"no entry");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        reply.header("x-probe"),
        Some("local"),
        "plugin header names are lower-cased"
    );
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("content-length"), Some("8"));
    assert_eq!(
        reply.header("x-probe-response"),
        Some("seen"),
        "own on_response_headers ran"
    );
    assert_eq!(reply.grpc_status, None);
    // The request is over: later data is dropped, no upstream response follows.
    assert_eq!(host.request_body(s, b"late", true).unwrap(), Action::Pause);
    assert!(matches!(
        host.response_headers(s, &[(":status", "200")], true),
        Err(SimError::Misuse(_))
    ));
    host.complete(s).unwrap();
}

#[test]
fn grpc_requests_get_a_trailers_only_local_reply() {
    let mut host = probe("{}");
    let s = host.new_stream();
    let mut headers = request("grpc-reply");
    headers.push(("content-type", "application/grpc"));
    host.request_headers(s, &headers, true).unwrap();
    let reply = host.local_reply(s).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("grpc-status"), Some("7"));
    assert_eq!(reply.header("grpc-message"), Some("nope"));
    assert!(reply.body.is_empty());
}

#[test]
fn local_reply_from_the_response_phase_replaces_the_response_directly() {
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "response-local-reply", true);
    let action = host
        .response_headers(s, &[(":status", "200"), ("x-upstream", "1")], true)
        .unwrap();
    assert_eq!(action, Action::Pause);
    let reply = host.local_reply(s).unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(reply.body, b"replaced");
    assert_eq!(reply.header("x-replaced-by"), Some("probe"));
    assert_eq!(reply.header("x-upstream"), None);
    assert_eq!(host.response_header(s, ":status").as_deref(), Some("502"));
}

#[test]
fn close_stream_is_visible() {
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "reset", true);
    assert!(host.stream_closed(s));
}

// ------------------------------------------------------------------- HTTP callouts

fn callout_host() -> Host {
    builder(r#"{"cluster": "authz"}"#)
        .clusters(&["authz", "jwks"])
        .build()
        .unwrap()
}

#[test]
fn callout_pauses_and_resumes_on_success() {
    let mut host = callout_host();
    let (s, action) = stream_with(&mut host, "callout", true);
    assert_eq!(action, Action::Pause);
    assert!(host.request_paused(s));
    let calls = host.http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.token, 4, "Envoy's first callout token");
    assert_eq!(call.upstream, "authz");
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header(":path"), Some("/check"));
    assert_eq!(call.header(":authority"), Some("authz"));
    assert_eq!(call.header("content-length"), Some("5"));
    assert_eq!(call.body, b"probe");
    assert_eq!(call.timeout, Duration::from_secs(5));

    host.respond_http_call(4, &[(":status", "200")], b"allowed")
        .unwrap();
    assert!(host.http_calls().is_empty());
    assert!(host.stream_resumed(s));
    assert!(!host.request_paused(s));
    // The callback modified the paused request's headers through the effective context.
    assert_eq!(
        host.request_header(s, "x-callout-status").as_deref(),
        Some("200")
    );
    assert_eq!(
        host.request_header(s, "x-callout-body").as_deref(),
        Some("allowed")
    );
    assert!(host.local_reply(s).is_none());
}

#[test]
fn callout_denial_sends_local_reply_from_the_callout_callback() {
    let mut host = callout_host();
    let (s, _) = stream_with(&mut host, "callout", true);
    host.respond_http_call(4, &[(":status", "403")], b"")
        .unwrap();
    let reply = host.local_reply(s).unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, b"denied by callout");
    assert_eq!(reply.header("x-callout-status"), Some("403"));
    assert!(!host.stream_resumed(s));
}

#[test]
fn callout_to_undeclared_cluster_is_bad_argument() {
    let mut host = callout_host();
    let s = host.new_stream();
    let mut headers = request("callout");
    headers.push(("x-probe-cluster", "nope"));
    host.request_headers(s, &headers, true).unwrap();
    assert!(host.http_calls().is_empty());
    let reply = host.local_reply(s).unwrap();
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("x-dispatch-error"), Some("BadArgument"));
}

#[test]
fn callout_failure_is_delivered_as_reset_with_status() {
    let mut host = callout_host();
    let (s, _) = stream_with(&mut host, "callout", true);
    host.fail_http_call(4).unwrap();
    let reply = host.local_reply(s).unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("x-callout-error"), Some("11 reset"));
}

#[test]
fn callout_tokens_are_distinct_and_timeouts_fire_on_the_virtual_clock() {
    let mut host = builder(r#"{"cluster": "authz", "callout_timeout_ms": 1000}"#)
        .build()
        .unwrap();
    let (first, _) = stream_with(&mut host, "callout", true);
    let (second, _) = stream_with(&mut host, "callout", true);
    let tokens: Vec<u32> = host.http_calls().iter().map(|c| c.token).collect();
    assert_eq!(tokens, vec![4, 8]);
    host.respond_http_call(8, &[(":status", "200")], b"ok")
        .unwrap();
    assert!(host.stream_resumed(second));

    host.advance(Duration::from_millis(999)).unwrap();
    assert_eq!(host.http_calls().len(), 1);
    host.advance(Duration::from_millis(1)).unwrap();
    assert!(host.http_calls().is_empty());
    let reply = host.local_reply(first).unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("x-callout-status"), Some("504"));
}

#[test]
fn body_arriving_while_paused_is_held_until_resume() {
    let mut host = callout_host();
    let s = host.new_stream();
    let mut headers = request("callout");
    headers.push(("x-probe-action", "read-request-in-body"));
    assert_eq!(
        host.request_headers(s, &headers, false).unwrap(),
        Action::Pause
    );
    assert_eq!(host.request_body(s, b"data", true).unwrap(), Action::Pause);
    assert!(
        !host.has_log(LogLevel::Info, "visible in body"),
        "plugin must not see held data"
    );
    host.respond_http_call(4, &[(":status", "200")], b"")
        .unwrap();
    assert_eq!(host.forwarded_request_body(s), b"data");
    assert!(
        host.has_log(LogLevel::Info, "request headers visible in body: 0"),
        "{:?}",
        host.logs()
    );
}

#[test]
fn trailers_reach_the_plugin_directly_or_after_resume() {
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "none", false);
    host.request_body(s, b"x", false).unwrap();
    assert_eq!(
        host.request_trailers(s, &[("grpc-status", "0")]).unwrap(),
        Action::Continue
    );
    assert!(host
        .request_trailers_of(s)
        .contains(&("x-probe-trailer".into(), "seen".into())));

    let mut host = callout_host();
    let (s, _) = stream_with(&mut host, "callout", false);
    host.request_body(s, b"part", false).unwrap();
    assert_eq!(
        host.request_trailers(s, &[("t", "1")]).unwrap(),
        Action::Pause
    );
    assert!(
        !host.has_log(LogLevel::Info, "request trailers"),
        "held while paused"
    );
    host.respond_http_call(4, &[(":status", "200")], b"")
        .unwrap();
    assert_eq!(host.forwarded_request_body(s), b"part");
    assert!(
        host.has_log(LogLevel::Info, "request trailers: 1"),
        "{:?}",
        host.logs()
    );
    assert!(
        matches!(
            host.request_body(s, b"more", true),
            Err(SimError::Misuse(_))
        ),
        "trailers ended the request"
    );
    assert_eq!(
        host.request_trailers_of(s),
        vec![
            ("t".to_string(), "1".to_string()),
            ("x-probe-trailer".into(), "seen".into())
        ]
    );
}

// ------------------------------------------------------------------- timers

#[test]
fn ticks_fire_deterministically_on_the_virtual_clock() {
    let mut host = probe(r#"{"tick_ms": 100}"#);
    assert_eq!(host.tick_period(), Some(Duration::from_millis(100)));
    host.advance(Duration::from_millis(99)).unwrap();
    assert_eq!(host.counter("probe_ticks"), Some(0));
    host.advance(Duration::from_millis(151)).unwrap();
    assert_eq!(host.counter("probe_ticks"), Some(2));
    assert_eq!(host.shared_data_get("probe_ticks"), Some(b"2".to_vec()));
    host.advance(Duration::from_millis(50)).unwrap();
    assert_eq!(host.counter("probe_ticks"), Some(3));
}

#[test]
fn root_context_callouts_from_ticks() {
    let mut host = builder(r#"{"tick_ms": 1000, "tick_callout": true, "cluster": "jwks"}"#)
        .clusters(&["jwks"])
        .build()
        .unwrap();
    host.advance(Duration::from_secs(1)).unwrap();
    let calls = host.http_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].header(":path"), Some("/refresh"));
    host.respond_http_call(calls[0].token, &[(":status", "200")], b"{\"keys\":[]}")
        .unwrap();
    assert_eq!(
        host.shared_data_get("refreshed"),
        Some(b"{\"keys\":[]}".to_vec())
    );
    host.advance(Duration::from_secs(1)).unwrap();
    let token = host.http_calls()[0].token;
    host.fail_http_call(token).unwrap();
    assert!(host.has_log(LogLevel::Warn, "refresh failed: 11 reset"));
}

#[test]
fn host_time_and_wasi_clock_read_the_virtual_clock() {
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut host = builder("{}").time(start).build().unwrap();
    let (s, _) = stream_with(&mut host, "time", true);
    let expected = 1_700_000_000_000_000_000u128.to_string();
    assert_eq!(
        host.request_header(s, "x-time-host"),
        Some(expected.clone())
    );
    assert_eq!(host.request_header(s, "x-time-wasi"), Some(expected));
    host.advance(Duration::from_millis(1500)).unwrap();
    assert_eq!(host.now(), start + Duration::from_millis(1500));
    let (s, _) = stream_with(&mut host, "time", true);
    assert_eq!(
        host.request_header(s, "x-time-host"),
        Some("1700000001500000000".into())
    );
    assert!(host.now() > SystemTime::UNIX_EPOCH);
}

// ------------------------------------------------------------------- metrics

#[test]
fn metrics_by_name_with_envoy_semantics() {
    let mut host = probe("{}");
    let (a, _) = stream_with(&mut host, "none", true);
    let (b, _) = stream_with(&mut host, "none", true);
    assert_eq!(host.counter("probe_requests"), Some(2));
    assert_eq!(host.gauge("probe_active"), Some(2));
    assert_eq!(host.histogram("probe_header_counts"), Some(vec![4, 4]));
    host.complete(a).unwrap();
    host.complete(b).unwrap();
    assert_eq!(
        host.gauge("probe_active"),
        Some(0),
        "decremented when the context is deleted"
    );
    let metrics = host.metrics();
    assert!(
        metrics.contains(&("probe_requests".into(), MetricKind::Counter, 2)),
        "{metrics:?}"
    );
    assert!(metrics.contains(&("probe_header_counts".into(), MetricKind::Histogram, 2)));
    assert_eq!(
        host.counter("probe_active"),
        None,
        "lookup is by name and kind"
    );
}

// ------------------------------------------------------------------- shared data & queues

#[test]
fn two_hosts_share_one_store_with_cas() {
    let shared = SharedData::new();
    let mut worker_a = builder("{}").shared_data(shared.clone()).build().unwrap();
    let mut worker_b = builder("{}").shared_data(shared.clone()).build().unwrap();
    let (s1, _) = stream_with(&mut worker_a, "shared-cas", true);
    let (s2, _) = stream_with(&mut worker_b, "shared-cas", true);
    let (s3, _) = stream_with(&mut worker_a, "shared-cas", true);
    assert_eq!(
        worker_a.request_header(s1, "x-shared-counter").as_deref(),
        Some("1")
    );
    assert_eq!(
        worker_b.request_header(s2, "x-shared-counter").as_deref(),
        Some("2")
    );
    assert_eq!(
        worker_a.request_header(s3, "x-shared-counter").as_deref(),
        Some("3")
    );
    assert_eq!(shared.get("counter"), Some(b"3".to_vec()));
    assert_eq!(worker_b.shared_data_get("counter"), Some(b"3".to_vec()));

    // A test-side write bumps the CAS, so a guest holding an old CAS would mismatch.
    shared.set("counter", b"10");
    let (s4, _) = stream_with(&mut worker_b, "shared-cas", true);
    assert_eq!(
        worker_b.request_header(s4, "x-shared-counter").as_deref(),
        Some("11")
    );
}

#[test]
fn separate_hosts_do_not_share_by_default() {
    let mut a = probe("{}");
    let b = probe("{}");
    stream_with(&mut a, "shared-cas", true);
    assert_eq!(a.shared_data_get("counter"), Some(b"1".to_vec()));
    assert_eq!(b.shared_data_get("counter"), None);
}

#[test]
fn shared_queue_notifies_the_owning_root_context() {
    let mut host = probe("{}");
    stream_with(&mut host, "queue", true);
    assert!(
        host.has_log(LogLevel::Info, "dequeued: queued item"),
        "{:?}",
        host.logs()
    );
}

// ------------------------------------------------------------------- properties

#[test]
fn properties_have_envoy_defaults_and_follow_header_availability() {
    let mut host = builder("{}")
        .plugin_name("probe-plugin")
        .property(&["probe", "custom"], PropertyValue::str("hello"))
        .build()
        .unwrap();
    let s = host.new_stream_from("10.1.2.3:5555");
    host.request_headers(s, &request("properties"), true)
        .unwrap();
    assert_eq!(
        host.request_header(s, "x-plugin-name").as_deref(),
        Some("probe-plugin")
    );
    assert_eq!(
        host.request_header(s, "x-source-port").as_deref(),
        Some("5555")
    );
    assert_eq!(
        host.request_header(s, "x-custom-property").as_deref(),
        Some("hello")
    );
    host.response_headers(s, &[(":status", "201")], true)
        .unwrap();
    assert_eq!(
        host.response_header(s, "x-probe-source").as_deref(),
        Some("10.1.2.3:5555")
    );
    assert_eq!(
        host.response_header(s, "x-probe-path").as_deref(),
        Some("/x?y=1")
    );
    // request.path is derived from the request headers, gone once they continued.
    assert_eq!(
        host.response_header(s, "x-probe-path-late").as_deref(),
        Some("none")
    );
    assert_eq!(
        host.response_header(s, "x-probe-response-code").as_deref(),
        Some("201")
    );
}

#[test]
fn default_source_address_and_per_stream_override() {
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "properties", true);
    host.response_headers(s, &[(":status", "200")], true)
        .unwrap();
    assert_eq!(
        host.response_header(s, "x-probe-source").as_deref(),
        Some("127.0.0.1:45000")
    );
    assert_eq!(
        host.request_header(s, "x-plugin-name").as_deref(),
        Some("abi_probe")
    );

    let s = host.new_stream();
    host.set_stream_property(s, &["probe", "custom"], PropertyValue::str("per-stream"))
        .unwrap();
    host.request_headers(s, &request("properties"), true)
        .unwrap();
    assert_eq!(
        host.request_header(s, "x-custom-property").as_deref(),
        Some("per-stream")
    );
}

#[test]
fn set_property_is_readable_back_on_the_stream() {
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "set-property", true);
    assert_eq!(
        host.request_header(s, "x-probe-mark").as_deref(),
        Some("marked")
    );
}

// ------------------------------------------------------------------- foreign functions

#[test]
fn foreign_functions_default_to_not_found_and_can_be_registered() {
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "foreign", true);
    assert_eq!(
        host.request_header(s, "x-foreign-error").as_deref(),
        Some("NotFound")
    );

    let mut host = builder("{}")
        .foreign_function("probe_fn", |args: &[u8]| {
            Ok(args.iter().rev().copied().collect())
        })
        .build()
        .unwrap();
    let (s, _) = stream_with(&mut host, "foreign", true);
    assert_eq!(host.request_header(s, "x-foreign").as_deref(), Some("sgra"));

    let mut host = builder("{}")
        .foreign_function("probe_fn", |_: &[u8]| Err(Status::BadArgument))
        .build()
        .unwrap();
    let (s, _) = stream_with(&mut host, "foreign", true);
    assert_eq!(
        host.request_header(s, "x-foreign-error").as_deref(),
        Some("BadArgument")
    );
}

// ------------------------------------------------------------------- logs & WASI

#[test]
fn logs_capture_every_level_and_stdout_stderr() {
    let mut host = probe("{}");
    stream_with(&mut host, "log-levels,print", true);
    for (level, text) in [
        (LogLevel::Trace, "level trace"),
        (LogLevel::Debug, "level debug"),
        (LogLevel::Info, "level info"),
        (LogLevel::Warn, "level warn"),
        (LogLevel::Error, "level error"),
    ] {
        assert!(
            host.logs()
                .iter()
                .any(|e| e.level == level && e.message == text),
            "{level:?} {text}"
        );
    }
    assert!(host
        .logs()
        .iter()
        .any(|e| e.level == LogLevel::Info && e.message == "stdout from probe"));
    assert!(host
        .logs()
        .iter()
        .any(|e| e.level == LogLevel::Error && e.message == "stderr from probe"));
    assert!(
        !host.has_log(LogLevel::Error, "level warn"),
        "has_log filters by minimum level"
    );
}

#[test]
fn random_get_is_deterministic_per_seed() {
    let random = |seed: u64| {
        let mut host = builder("{}").seed(seed).build().unwrap();
        let (s, _) = stream_with(&mut host, "random", true);
        host.request_header(s, "x-random").expect("x-random set")
    };
    assert_eq!(random(1), random(1));
    assert_ne!(random(1), random(2));
}

#[test]
fn environment_variables_come_from_the_builder() {
    let mut host = builder("{}").env("PROBE_ENV", "on").build().unwrap();
    let (s, _) = stream_with(&mut host, "env", true);
    assert_eq!(host.request_header(s, "x-env").as_deref(), Some("on"));
    let mut host = probe("{}");
    let (s, _) = stream_with(&mut host, "env", true);
    assert_eq!(host.request_header(s, "x-env").as_deref(), Some("unset"));
}

#[test]
fn missing_module_is_an_instantiate_error() {
    let error = Host::builder("/nonexistent/filter.wasm")
        .build()
        .unwrap_err();
    assert!(matches!(error, SimError::Instantiate(_)), "{error}");
}

// ------------------------------------------------------------------- hand-written modules
//
// ABI edge cases the Rust SDK never produces: checked with tiny WAT modules whose
// allocator counts its calls.

#[derive(Default)]
struct Wat {
    imports: &'static str,
    initialize: &'static str,
    allocate: Option<&'static str>,
    on_request_headers: &'static str,
    no_abi_marker: bool,
}

const BUMP_ALLOCATOR: &str = "
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (global.set $allocs (i32.add (global.get $allocs) (i32.const 1)))
    (local.get $p)";

impl Wat {
    /// Compiles the module to a file (the Host loads modules by path).
    fn build(self, name: &str) -> std::path::PathBuf {
        let abi_marker = if self.no_abi_marker {
            ""
        } else {
            r#"(func (export "proxy_abi_version_0_2_1"))"#
        };
        let text = format!(
            r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  {imports}
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 4096))
  (global $allocs (mut i32) (i32.const 0))
  (data (i32.const 16) "x-empty")
  (data (i32.const 32) "x-value")
  (data (i32.const 48) "empty-ok")
  (data (i32.const 64) "value-ok")
  (data (i32.const 80) "source\00address")
  {abi_marker}
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32) {allocate})
  (func (export "_initialize") {initialize})
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    {on_request_headers}
    (i32.const 0))
)"#,
            imports = self.imports,
            initialize = self.initialize,
            allocate = self.allocate.unwrap_or(BUMP_ALLOCATOR),
            on_request_headers = self.on_request_headers,
        );
        let bytes = wat::parse_str(&text).expect("valid WAT");
        let path =
            std::env::temp_dir().join(format!("proxy-wasm-sim-{}-{name}.wasm", std::process::id()));
        std::fs::write(&path, bytes).expect("write module");
        path
    }
}

fn trap_message(result: Result<Action, SimError>) -> String {
    match result {
        Err(SimError::Trap { message, .. }) => message,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn empty_value_is_null_and_size_zero_without_allocating() {
    let wasm = Wat {
        on_request_headers: r#"
    ;; poison the return slots so the host must write them
    (i32.store (i32.const 100) (i32.const 7))
    (i32.store (i32.const 104) (i32.const 7))
    (drop (call $get_value (i32.const 0) (i32.const 16) (i32.const 7) (i32.const 100) (i32.const 104)))
    (if (i32.and (i32.and (i32.eqz (i32.load (i32.const 100))) (i32.eqz (i32.load (i32.const 104))))
                 (i32.eqz (global.get $allocs)))
      (then (drop (call $log (i32.const 2) (i32.const 48) (i32.const 8)))))
    (drop (call $get_value (i32.const 0) (i32.const 32) (i32.const 7) (i32.const 100) (i32.const 104)))
    (if (i32.and (i32.and (i32.eq (i32.load (i32.const 104)) (i32.const 3))
                          (i32.eq (global.get $allocs) (i32.const 1)))
                 (i32.eq (i32.load8_u (i32.load (i32.const 100))) (i32.const 97)))
      (then (drop (call $log (i32.const 2) (i32.const 64) (i32.const 8)))))"#,
        ..Wat::default()
    }
    .build("empty-value");
    let mut host = Host::builder(&wasm).build().unwrap();
    let s = host.new_stream();
    host.request_headers(
        s,
        &[(":path", "/"), ("x-empty", ""), ("x-value", "abc")],
        true,
    )
    .unwrap();
    assert!(
        host.has_log(LogLevel::Info, "empty-ok"),
        "empty value: (0, 0), no allocation"
    );
    assert!(
        host.has_log(LogLevel::Info, "value-ok"),
        "value: one allocation of exactly its size"
    );
}

#[test]
fn out_of_bounds_guest_pointer_is_a_trap_with_a_message() {
    let wasm = Wat {
        on_request_headers: "(drop (call $get_value (i32.const 0) (i32.const -16) (i32.const 64) (i32.const 100) (i32.const 104)))",
        ..Wat::default()
    }
    .build("out-of-bounds");
    let mut host = Host::builder(&wasm).build().unwrap();
    let s = host.new_stream();
    let message = trap_message(host.request_headers(s, &[(":path", "/")], true));
    assert!(
        message.contains("proxy_get_header_map_value") && message.contains("outside guest memory"),
        "{message}"
    );
    assert!(host.failed().is_some());
}

#[test]
fn bad_return_pointer_is_a_trap() {
    let wasm = Wat {
        on_request_headers: "(drop (call $get_value (i32.const 0) (i32.const 32) (i32.const 7) (i32.const 65534) (i32.const 104)))",
        ..Wat::default()
    }
    .build("bad-return-pointer");
    let mut host = Host::builder(&wasm).build().unwrap();
    let s = host.new_stream();
    let message = trap_message(host.request_headers(s, &[("x-value", "abc")], true));
    assert!(message.contains("return pointer"), "{message}");
}

#[test]
fn hostcalls_during_initialize_are_restricted_like_envoy() {
    let wasm = Wat {
        initialize: "(drop (call $get_property (i32.const 80) (i32.const 14) (i32.const 100) (i32.const 104)))",
        ..Wat::default()
    }
    .build("restricted-initialize");
    match Host::builder(&wasm).build() {
        Err(SimError::Trap { callback, message }) => {
            assert_eq!(callback, "_initialize");
            assert!(message.contains("restricted_callback"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn hostcalls_from_the_allocator_are_restricted() {
    let wasm = Wat {
        allocate: Some(
            "(drop (call $get_property (i32.const 80) (i32.const 14) (i32.const 200) (i32.const 204))) (i32.const 4096)",
        ),
        on_request_headers: "(drop (call $get_value (i32.const 0) (i32.const 32) (i32.const 7) (i32.const 100) (i32.const 104)))",
        ..Wat::default()
    }
    .build("restricted-allocator");
    let mut host = Host::builder(&wasm).build().unwrap();
    let s = host.new_stream();
    let message = trap_message(host.request_headers(s, &[("x-value", "abc")], true));
    assert!(
        message.contains("restricted_callback") && message.contains("proxy_on_memory_allocate"),
        "{message}"
    );
}

#[test]
fn allocator_failure_is_a_trap() {
    let wasm = Wat {
        allocate: Some("(i32.const 0)"),
        on_request_headers: "(drop (call $get_value (i32.const 0) (i32.const 32) (i32.const 7) (i32.const 100) (i32.const 104)))",
        ..Wat::default()
    }
    .build("allocator-failure");
    let mut host = Host::builder(&wasm).build().unwrap();
    let s = host.new_stream();
    let message = trap_message(host.request_headers(s, &[("x-value", "abc")], true));
    assert!(message.contains("returned 0"), "{message}");
}

#[test]
fn unknown_imports_link_but_trap_when_called() {
    let wasm = Wat {
        imports: r#"(import "env" "proxy_future_call" (func $future (result i32)))"#,
        on_request_headers: "(drop (call $future))",
        ..Wat::default()
    }
    .build("unknown-import");
    let mut host = Host::builder(&wasm)
        .build()
        .expect("instantiates despite the unknown import");
    let s = host.new_stream();
    let message = trap_message(host.request_headers(s, &[(":path", "/")], true));
    assert!(
        message.contains("env::proxy_future_call"),
        "trap names the import: {message}"
    );
}

#[test]
fn module_without_abi_marker_is_refused() {
    let wasm = Wat {
        no_abi_marker: true,
        ..Wat::default()
    }
    .build("no-abi-marker");
    match Host::builder(&wasm).build() {
        Err(SimError::Instantiate(message)) => {
            assert!(message.contains("ABI version"), "{message}")
        }
        other => panic!("expected Instantiate, got {other:?}"),
    }
}

#[test]
fn hosts_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Host>();
    assert_send::<SharedData>();
    let shared = SharedData::new();
    let worker = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let mut host = builder("{}").shared_data(shared).build().unwrap();
            stream_with(&mut host, "shared-cas", true);
        })
    };
    worker.join().unwrap();
    assert_eq!(shared.get("counter"), Some(b"1".to_vec()));
}

/// Envoy (proxy-wasm-cpp-host) calls a callback only if the module exports it, and goes on
/// as if it returned Continue (or true) otherwise; `make wasm` relies on that to drop the
/// callbacks a filter does not implement. The trimmed no-op module exports only context
/// create/delete and response headers: a whole exchange runs without a missing-export
/// error, and the module is entered only for those.
#[test]
fn callbacks_a_module_does_not_export_are_skipped_like_envoy() {
    let mut trimmed = Host::builder(proxy_wasm_sim::fixture("noop-filter-trimmed"))
        .build()
        .unwrap();
    let mut full = Host::builder(proxy_wasm_sim::fixture("noop-filter"))
        .build()
        .unwrap();
    let exchange = |host: &mut Host| {
        let s = host.new_stream();
        let request = [(":method", "POST"), (":path", "/"), (":authority", "a")];
        assert_eq!(
            host.request_headers(s, &request, false).unwrap(),
            Action::Continue
        );
        assert_eq!(
            host.request_body(s, b"body", false).unwrap(),
            Action::Continue
        );
        assert_eq!(
            host.request_trailers(s, &[("t", "1")]).unwrap(),
            Action::Continue
        );
        assert_eq!(
            host.response_headers(s, &[(":status", "200")], false)
                .unwrap(),
            Action::Continue
        );
        assert_eq!(
            host.response_body(s, b"ok", true).unwrap(),
            Action::Continue
        );
        host.complete(s).unwrap();
        assert_eq!(host.forwarded_request_body(s), b"body");
        assert_eq!(host.forwarded_response_body(s), b"ok");
    };
    let before = (trimmed.vm_calls(), full.vm_calls());
    exchange(&mut trimmed);
    exchange(&mut full);
    assert!(trimmed.failed().is_none() && full.failed().is_none());
    // Context create, response headers, delete; against create, request headers, body and
    // trailers, response headers and body, log, done, delete for the SDK's full set.
    assert_eq!(trimmed.vm_calls() - before.0, 3);
    assert_eq!(full.vm_calls() - before.1, 9);
}
