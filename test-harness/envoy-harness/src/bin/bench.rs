//! `make bench`: requests/s and latency through real Envoy, bare versus with our filters,
//! measured side by side in one run.
//!
//! One Envoy (`--concurrency 1`) serves every scenario of a suite on its own listener, plus
//! a `backend` listener that answers with a direct response. Each scenario listener routes
//! through a real cluster to that backend, so the whole proxy path is measured (codec,
//! filter chain, router, connection pool, upstream codec), and the only difference between
//! scenarios is their filter chain. wrk (fixed concurrency) loads one scenario at a time,
//! in short interleaved rounds (A B, B A, A B, ...) because these machines are noisy;
//! requests/s and latencies are medians over rounds, and the ratio is the median of the
//! per-round ratios (each scenario against the baseline run next to it in time). With two
//! or more CPUs, Envoy is pinned to CPU 0 and wrk to CPU 1 so they do not fight over one
//! core.
//!
//! A suite is a list of filter chains; jwt-authz and ratelimit-tagger add theirs to
//! [`suites`] and get a `<out>/<suite>.json` of their own.
//!
//! The security-headers suite carries two references besides `bare`: `native-headers`
//! (the same headers set and removed by Envoy's route configuration, checked to match the
//! filter's response exactly: the price of the headers themselves) and `noop-wasm` (the
//! `test-harness/fixtures/noop-filter` module, when `make wasm` has built it: the price of
//! any wasm filter in V8). A filter cannot be cheaper than either.
//!
//! ```text
//! bench --out build/bench [--duration 2] [--connections 16] [--rounds 12] [--warmup 2]
//!       [--suite security-headers] [--enforce-budget]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use envoy_harness::config::{self, WasmFilter};
use envoy_harness::{client, paths, EnvoyProcess, Error, Result};
use serde_json::{json, Value};

/// The request every scenario serves: a trading API path, as in production.
const REQUEST_PATH: &str = "/api/v1/trade/orders";

struct Options {
    out: PathBuf,
    duration: Duration,
    connections: u32,
    rounds: usize,
    warmup: Duration,
    suite: Option<String>,
    enforce_budget: bool,
    /// `--extra-wasm NAME=PATH[=CONFIG]`: more scenarios, any module, for comparisons.
    extra_wasm: Vec<(String, PathBuf, String)>,
}

/// Scenarios measured together; the first is the baseline the others are compared to.
struct Suite {
    name: &'static str,
    scenarios: Vec<Scenario>,
    /// The issue's budget: `scenario` must reach `min_ratio` x the baseline's requests/s.
    budget: Option<Budget>,
}

struct Scenario {
    name: String,
    /// Filters before the router.
    http_filters: Vec<Value>,
    /// Extra fields of the listener's `route_config` (Envoy's own header manipulation).
    route_config: Vec<(&'static str, Value)>,
    /// A response header that proves the chain is the one we think (checked before load).
    marker: Marker,
}

enum Marker {
    Absent(&'static str),
    Present(&'static str),
    /// Exactly the response headers (names, values, order aside; `date` ignored) of the
    /// named scenario: the native reference must do what the filter does, no more, no less.
    SameHeadersAs(&'static str),
    /// Any module given on the command line: only the 200 is checked.
    Unchecked,
}

struct Budget {
    scenario: &'static str,
    min_ratio: f64,
}

/// One wrk run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    /// Envoy's CPU time (all threads) divided by the requests of this run.
    envoy_cpu_us_per_request: f64,
}

fn suites() -> Result<Vec<Suite>> {
    let bare = Scenario {
        name: "bare".to_owned(),
        http_filters: Vec::new(),
        route_config: Vec::new(),
        marker: Marker::Absent("x-content-type-options"),
    };
    // The honest reference for security-headers: the same headers set and removed by
    // Envoy itself (route configuration, no wasm). What it costs over `bare` is the price
    // of bigger responses, which no filter can avoid; the rest is the filter's own.
    let native_headers = Scenario {
        name: "native-headers".to_owned(),
        http_filters: Vec::new(),
        route_config: native_security_headers(),
        marker: Marker::SameHeadersAs("security-headers"),
    };
    // The floor of any wasm filter: a module that does nothing (only when built).
    let noop = noop_filter().map(|path| Scenario {
        name: "noop-wasm".to_owned(),
        http_filters: vec![WasmFilter::new("noop-filter", path, "").to_value()],
        route_config: Vec::new(),
        marker: Marker::Absent("x-content-type-options"),
    });
    let security_headers = Scenario {
        name: "security-headers".to_owned(),
        http_filters: vec![
            WasmFilter::from_dist("security-headers", r#"{"preset":"api"}"#)?.to_value(),
        ],
        route_config: Vec::new(),
        marker: Marker::Present("x-content-type-options"),
    };
    let scenarios = [
        Some(bare),
        Some(native_headers),
        noop,
        Some(security_headers),
    ];
    Ok(vec![Suite {
        name: "security-headers",
        scenarios: scenarios.into_iter().flatten().collect(),
        budget: Some(Budget {
            scenario: "security-headers",
            min_ratio: 0.93,
        }),
    }])
}

/// The `api` preset of security-headers (`filters/gateway-core/src/security_headers/
/// preset.rs`) as Envoy route configuration. `check_scenarios` proves, before any load,
/// that it yields exactly the headers the filter yields.
fn native_security_headers() -> Vec<(&'static str, Value)> {
    const SET: &[(&str, &str)] = &[
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        (
            "permissions-policy",
            "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), \
             fullscreen=(), geolocation=(), gyroscope=(), hid=(), idle-detection=(), \
             magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), \
             publickey-credentials-get=(), screen-wake-lock=(), serial=(), sync-xhr=(), usb=(), \
             web-share=(), xr-spatial-tracking=()",
        ),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("cache-control", "no-store"),
        ("x-permitted-cross-domain-policies", "none"),
    ];
    const IF_ABSENT: &[&str] = &["cache-control"];
    const REMOVE: &[&str] = &[
        "server",
        "x-powered-by",
        "x-aspnet-version",
        "x-aspnetmvc-version",
        "x-generator",
        "x-runtime",
        "x-version",
        "x-backend-server",
        "x-server",
        "x-sourcemap",
        "sourcemap",
        "x-envoy-upstream-service-time",
        "x-envoy-attempt-count",
        "x-envoy-external-address",
        "x-envoy-internal",
        "x-envoy-overloaded",
        "x-envoy-degraded",
        "x-envoy-decorator-operation",
        "x-envoy-ratelimited",
        "x-envoy-peer-metadata",
        "x-envoy-peer-metadata-id",
    ];
    let add: Vec<Value> = SET
        .iter()
        .map(|(key, value)| {
            let action = if IF_ABSENT.contains(key) {
                "ADD_IF_ABSENT"
            } else {
                "OVERWRITE_IF_EXISTS_OR_ADD"
            };
            json!({ "header": { "key": key, "value": value }, "append_action": action })
        })
        .collect();
    vec![
        ("response_headers_to_add", Value::Array(add)),
        ("response_headers_to_remove", json!(REMOVE)),
    ]
}

/// The no-op fixture module, when `make wasm` has built it.
fn noop_filter() -> Option<PathBuf> {
    let path = paths::fixture_wasm("noop-filter");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "bench: no {} (make wasm builds it): the noop-wasm scenario is skipped",
            path.display()
        );
        None
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(false)`: measured, but a budget was missed and `--enforce-budget` was given.
fn run() -> Result<bool> {
    let options = parse_args(std::env::args().skip(1))?;
    let wrk = find_wrk()?;
    std::fs::create_dir_all(&options.out)
        .map_err(|error| Error::new(format!("creating {}: {error}", options.out.display())))?;
    let mut all_within_budget = true;
    for mut suite in suites()? {
        if options
            .suite
            .as_deref()
            .is_some_and(|wanted| wanted != suite.name)
        {
            continue;
        }
        for (name, path, configuration) in &options.extra_wasm {
            suite.scenarios.push(Scenario {
                name: name.clone(),
                http_filters: vec![WasmFilter::new(name, path, configuration.as_str()).to_value()],
                route_config: Vec::new(),
                marker: Marker::Unchecked,
            });
        }
        all_within_budget &= run_suite(&suite, &options, &wrk)?;
    }
    Ok(all_within_budget || !options.enforce_budget)
}

fn run_suite(suite: &Suite, options: &Options, wrk: &Wrk) -> Result<bool> {
    let two_cpus = std::thread::available_parallelism().map_or(1, usize::from) >= 2;
    let pinned = two_cpus && wrk.taskset;
    let mut builder = EnvoyProcess::builder(bench_config(&suite.scenarios)).log_level("warning");
    if pinned {
        builder = builder.pin_to_cpu(0);
    }
    let envoy = builder.start()?;
    let ports = suite
        .scenarios
        .iter()
        .enumerate()
        .map(|(index, _)| envoy.port(&format!("scenario{index}")))
        .collect::<Result<Vec<u16>>>()?;
    check_scenarios(&suite.scenarios, &ports)?;

    let planned = options.warmup.as_secs_f64() * suite.scenarios.len() as f64
        + options.duration.as_secs_f64() * (suite.scenarios.len() * options.rounds) as f64;
    println!(
        "suite {}: {} scenarios x {} rounds x {}s, {} connections, wrk {}; about {:.0}s",
        suite.name,
        suite.scenarios.len(),
        options.rounds,
        options.duration.as_secs(),
        options.connections,
        if pinned {
            "on CPU 1, Envoy on CPU 0"
        } else {
            "and Envoy unpinned"
        },
        planned
    );
    let started = Instant::now();
    for port in &ports {
        wrk.run(*port, options.connections, options.warmup, pinned)?;
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); suite.scenarios.len()];
    for round in 0..options.rounds {
        // A B, B A, A B ...: drift in the machine's load hits every scenario alike.
        let mut order: Vec<usize> = (0..suite.scenarios.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let port = ports.get(index).copied().unwrap_or_default();
            let cpu_before = envoy.cpu_time()?;
            let mut sample = wrk.run(port, options.connections, options.duration, pinned)?;
            let cpu = envoy.cpu_time()?.saturating_sub(cpu_before);
            sample.envoy_cpu_us_per_request =
                cpu.as_secs_f64() * 1e6 / (sample.requests.max(1) as f64);
            if let Some(scenario_samples) = samples.get_mut(index) {
                scenario_samples.push(sample);
            }
        }
    }
    let elapsed = started.elapsed();
    drop(envoy);

    let report = Report::new(suite, options, &samples, pinned, elapsed)?;
    report.print();
    let path = options.out.join(format!("{}.json", suite.name));
    let json = serde_json::to_string_pretty(&report.json)?;
    std::fs::write(&path, json + "\n")
        .map_err(|error| Error::new(format!("writing {}: {error}", path.display())))?;
    println!("wrote {}", path.display());
    Ok(report.within_budget)
}

/// One request per scenario before the load: the right chain answers, and answers 200.
fn check_scenarios(scenarios: &[Scenario], ports: &[u16]) -> Result<()> {
    let responses = ports
        .iter()
        .map(|port| client::get(*port, REQUEST_PATH))
        .collect::<Result<Vec<_>>>()?;
    for (scenario, response) in scenarios.iter().zip(&responses) {
        let ok = response.status == 200
            && match scenario.marker {
                Marker::Absent(name) => response.header(name).is_none(),
                Marker::Present(name) => response.header(name).is_some(),
                Marker::SameHeadersAs(other) => scenarios
                    .iter()
                    .zip(&responses)
                    .find(|(candidate, _)| candidate.name == other)
                    .is_some_and(|(_, expected)| {
                        comparable_headers(expected) == comparable_headers(response)
                    }),
                Marker::Unchecked => true,
            };
        if !ok {
            return Err(Error::new(format!(
                "scenario {} is not set up as intended: {} {:?}",
                scenario.name, response.status, response.headers
            )));
        }
    }
    Ok(())
}

/// Response headers sorted, without `date` (it changes every second).
fn comparable_headers(response: &client::Response) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = response
        .headers
        .iter()
        .filter(|(name, _)| name != "date")
        .cloned()
        .collect();
    headers.sort();
    headers
}

/// The Envoy config: the backend listener, one listener per scenario, one cluster.
fn bench_config(scenarios: &[Scenario]) -> String {
    let mut listeners = String::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let mut filters = scenario.http_filters.clone();
        filters.push(config::router());
        // One `key: <inline JSON>` line per field, at route_config's indentation.
        let route_config: String = scenario
            .route_config
            .iter()
            .map(|(key, value)| format!("            {key}: {}\n", config::inline(value)))
            .collect();
        listeners.push_str(
            &SCENARIO_LISTENER
                .replace("@INDEX@", &index.to_string())
                .replace("@FILTERS@", &config::inline_list(&filters))
                .replace("@ROUTE_CONFIG@\n", &route_config),
        );
    }
    BENCH_BOOTSTRAP.replace("@SCENARIO_LISTENERS@", &listeners)
}

/// The backend answers like a typical API upstream: a small JSON body and the headers that
/// security-headers removes, so the filter does its real work on every response.
const BENCH_BOOTSTRAP: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: {{port:admin}}}}
static_resources:
  listeners:
  - name: backend
    address: {socket_address: {address: 127.0.0.1, port_value: {{port:backend}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: backend
          server_header_transformation: PASS_THROUGH
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response:
                  status: 200
                  body: {inline_string: '{"orders":[{"id":"7f3e","side":"buy","qty":"0.25","price":"64250.10"}]}'}
                response_headers_to_add:
                - header: {key: content-type, value: application/json}
                - header: {key: server, value: nginx/1.25}
                - header: {key: x-powered-by, value: PHP/8}
          http_filters: [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
@SCENARIO_LISTENERS@
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{port:backend}}}}}
"#;

const SCENARIO_LISTENER: &str = r#"
  - name: scenario@INDEX@
    address: {socket_address: {address: 127.0.0.1, port_value: {{port:scenario@INDEX@}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: scenario@INDEX@
          server_header_transformation: PASS_THROUGH
          route_config:
@ROUTE_CONFIG@
            virtual_hosts:
            - name: scenario@INDEX@
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters: @FILTERS@
"#;

// === wrk ===

struct Wrk {
    taskset: bool,
}

fn find_wrk() -> Result<Wrk> {
    // Spawning is the test: both print their version (wrk then exits non-zero).
    let found = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
    if !found("wrk") {
        return Err(Error::new(
            "wrk not found: run `make tools` (apt-get install wrk)",
        ));
    }
    Ok(Wrk {
        taskset: found("taskset"),
    })
}

impl Wrk {
    fn run(&self, port: u16, connections: u32, duration: Duration, pinned: bool) -> Result<Sample> {
        let url = format!("http://127.0.0.1:{port}{REQUEST_PATH}");
        let mut command = if pinned {
            let mut command = Command::new("taskset");
            command.args(["-c", "1", "wrk"]);
            command
        } else {
            Command::new("wrk")
        };
        command
            .args(["-t1", "--latency", "--timeout", "2s"])
            .arg(format!("-c{connections}"))
            .arg(format!("-d{}s", duration.as_secs().max(1)))
            .arg(&url);
        let output = command
            .output()
            .map_err(|error| Error::new(format!("running wrk: {error}")))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(Error::new(format!(
                "wrk {url} failed ({}): {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        parse_wrk(&stdout).map_err(|error| error.context(format!("wrk output:\n{stdout}")))
    }
}

fn parse_wrk(output: &str) -> Result<Sample> {
    let mut sample = Sample {
        requests_per_second: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
        non_2xx: 0,
        socket_errors: 0,
        envoy_cpu_us_per_request: f64::NAN,
    };
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => sample.requests_per_second = parse_number(value)?,
            ["50%", value] => sample.p50_ms = parse_latency_ms(value)?,
            ["99%", value] => sample.p99_ms = parse_latency_ms(value)?,
            [count, "requests", "in", ..] => sample.requests = parse_number(count)? as u64,
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                sample.non_2xx = parse_number(count)? as u64;
            }
            // "Socket errors: connect 0, read 0, write 0, timeout 0"
            ["Socket", "errors:", rest @ ..] => {
                sample.socket_errors = rest
                    .iter()
                    .filter_map(|word| word.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if sample.requests_per_second.is_nan() || sample.p50_ms.is_nan() || sample.p99_ms.is_nan() {
        return Err(Error::new(
            "no Requests/sec or latency distribution in wrk's output",
        ));
    }
    Ok(sample)
}

fn parse_number(text: &str) -> Result<f64> {
    text.parse()
        .map_err(|_| Error::new(format!("not a number: {text:?}")))
}

/// wrk prints latencies as `812.00us`, `1.23ms`, `1.02s` or `2.00m`.
fn parse_latency_ms(text: &str) -> Result<f64> {
    let units = [("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)];
    for (suffix, to_ms) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            if let Ok(value) = number.parse::<f64>() {
                return Ok(value * to_ms);
            }
        }
    }
    Err(Error::new(format!("not a latency: {text:?}")))
}

// === report ===

struct Report {
    rows: Vec<Row>,
    within_budget: bool,
    budget_line: Option<String>,
    json: Value,
}

struct Row {
    name: String,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    ratio: f64,
    cpu_us_per_request: f64,
    cpu_ratio: f64,
    failures: u64,
}

impl Report {
    fn new(
        suite: &Suite,
        options: &Options,
        samples: &[Vec<Sample>],
        pinned: bool,
        elapsed: Duration,
    ) -> Result<Self> {
        let baseline_samples = samples.first().map(Vec::as_slice).unwrap_or_default();
        let baseline = median(baseline_samples.iter().map(|s| s.requests_per_second));
        let mut rows = Vec::new();
        let mut scenarios_json = Vec::new();
        for (scenario, scenario_samples) in suite.scenarios.iter().zip(samples) {
            let rps = median(scenario_samples.iter().map(|s| s.requests_per_second));
            // The headline ratio: per round, this scenario over the baseline run right next
            // to it in time, then the median over rounds. A burst of load from another
            // process spoils one round's pair, not the result; the ratio of the medians is
            // kept in the JSON as a second view.
            let paired: Vec<f64> = scenario_samples
                .iter()
                .zip(baseline_samples)
                .map(|(sample, base)| sample.requests_per_second / base.requests_per_second)
                .collect();
            // The same pairing over Envoy's CPU per request, inverted so that it reads like
            // the throughput ratio: the capacity left at equal CPU. Other processes taking
            // the CPU barely move it, so it shows whether a bad throughput ratio is the
            // filter or the machine.
            let cpu_paired: Vec<f64> = scenario_samples
                .iter()
                .zip(baseline_samples)
                .map(|(sample, base)| {
                    base.envoy_cpu_us_per_request / sample.envoy_cpu_us_per_request
                })
                .collect();
            let row = Row {
                name: scenario.name.clone(),
                requests_per_second: rps,
                p50_ms: median(scenario_samples.iter().map(|s| s.p50_ms)),
                p99_ms: median(scenario_samples.iter().map(|s| s.p99_ms)),
                ratio: median(paired.iter().copied()),
                cpu_us_per_request: median(
                    scenario_samples.iter().map(|s| s.envoy_cpu_us_per_request),
                ),
                cpu_ratio: median(cpu_paired.iter().copied()),
                failures: scenario_samples
                    .iter()
                    .map(|s| s.non_2xx + s.socket_errors)
                    .sum(),
            };
            scenarios_json.push(json!({
                "name": row.name,
                "requests_per_second": round2(row.requests_per_second),
                "p50_ms": round3(row.p50_ms),
                "p99_ms": round3(row.p99_ms),
                "ratio_vs_baseline": round3(row.ratio),
                "ratio_of_medians": round3(rps / baseline),
                "paired_ratios": paired.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
                "envoy_cpu_us_per_request": round2(row.cpu_us_per_request),
                "cpu_ratio_vs_baseline": round3(row.cpu_ratio),
                "failed_requests": row.failures,
                "rounds": scenario_samples.iter().map(|s| json!({
                    "requests_per_second": round2(s.requests_per_second),
                    "p50_ms": round3(s.p50_ms),
                    "p99_ms": round3(s.p99_ms),
                    "requests": s.requests,
                    "non_2xx": s.non_2xx,
                    "socket_errors": s.socket_errors,
                    "envoy_cpu_us_per_request": round2(s.envoy_cpu_us_per_request),
                })).collect::<Vec<_>>(),
            }));
            rows.push(row);
        }

        let mut within_budget = true;
        let mut budget_line = None;
        let mut budget_json = Value::Null;
        if let Some(budget) = &suite.budget {
            let measured = rows
                .iter()
                .find(|row| row.name == budget.scenario)
                .map(|row| row.ratio)
                .ok_or_else(|| Error::new(format!("no scenario {}", budget.scenario)))?;
            within_budget = measured >= budget.min_ratio;
            budget_line = Some(format!(
                "budget: {} >= {:.2} x {} -> measured {:.3}: {}",
                budget.scenario,
                budget.min_ratio,
                rows.first().map_or("baseline", |row| &row.name),
                measured,
                if within_budget {
                    "within budget"
                } else {
                    "BELOW BUDGET"
                }
            ));
            budget_json = json!({
                "scenario": budget.scenario,
                "min_ratio": budget.min_ratio,
                "measured_ratio": round3(measured),
                "within_budget": within_budget,
            });
        }
        let failures: u64 = rows.iter().map(|row| row.failures).sum();
        if failures > 0 {
            within_budget = false;
        }

        let json = json!({
            "suite": suite.name,
            "baseline": rows.first().map(|row| row.name.clone()),
            "envoy": envoy_version(),
            "wasm": wasm_artifacts(suite),
            "load": {
                "tool": "wrk",
                "threads": 1,
                "connections": options.connections,
                "duration_s": options.duration.as_secs(),
                "warmup_s": options.warmup.as_secs(),
                "rounds": options.rounds,
                "order": "interleaved, alternating direction per round",
                "ratio": "median over rounds of requests/s divided by the baseline's in the same round",
                "cpu_ratio": "median over rounds of the baseline's Envoy CPU per request divided by this scenario's",
                "envoy_concurrency": 1,
                "cpu_pinning": if pinned { "envoy on CPU 0, wrk on CPU 1" } else { "none" },
                "path": REQUEST_PATH,
                "upstream": "direct_response listener in the same Envoy, via a STATIC cluster",
            },
            "elapsed_s": round2(elapsed.as_secs_f64()),
            "scenarios": scenarios_json,
            "budget": budget_json,
        });
        Ok(Self {
            rows,
            within_budget,
            budget_line,
            json,
        })
    }

    fn print(&self) {
        println!(
            "{:<20} {:>10} {:>10} {:>10} {:>8} {:>12} {:>10} {:>7}",
            "scenario", "req/s", "p50", "p99", "vs bare", "Envoy CPU", "CPU ratio", "failed"
        );
        for row in &self.rows {
            println!(
                "{:<20} {:>10.0} {:>8.3}ms {:>8.3}ms {:>8.3} {:>9.1}us/r {:>10.3} {:>7}",
                row.name,
                row.requests_per_second,
                row.p50_ms,
                row.p99_ms,
                row.ratio,
                row.cpu_us_per_request,
                row.cpu_ratio,
                row.failures
            );
        }
        if let Some(line) = &self.budget_line {
            println!("{line}");
        }
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match (values.get(middle), values.len() % 2) {
        (Some(value), 1) => *value,
        (Some(upper), _) => (values.get(middle.wrapping_sub(1)).unwrap_or(upper) + upper) / 2.0,
        (None, _) => f64::NAN,
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn envoy_version() -> Value {
    let Ok(bin) = paths::envoy_bin() else {
        return Value::Null;
    };
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|out| {
            // "<path>  version: <sha>/1.39.3/Clean/RELEASE/BoringSSL": the part after "version: ".
            let text = String::from_utf8_lossy(&out.stdout);
            let version = text
                .split_once("version: ")
                .map_or(text.as_ref(), |(_, v)| v);
            version.trim().to_owned()
        })
        .map_or(Value::Null, Value::String)
}

/// Size and sha256 of each module the suite loads (from `make wasm`'s `.sha256` file).
fn wasm_artifacts(suite: &Suite) -> Value {
    let mut artifacts = Vec::new();
    for filter in suite.scenarios.iter().flat_map(|s| &s.http_filters) {
        let path = filter.pointer("/typed_config/config/vm_config/code/local/filename");
        let Some(path) = path.and_then(Value::as_str).map(Path::new) else {
            continue;
        };
        let bytes = std::fs::metadata(path).map(|meta| meta.len()).ok();
        let sha256 = std::fs::read_to_string(path.with_extension("wasm.sha256"))
            .ok()
            .and_then(|line| line.split_whitespace().next().map(str::to_owned));
        artifacts
            .push(json!({ "path": path.display().to_string(), "bytes": bytes, "sha256": sha256 }));
    }
    Value::Array(artifacts)
}

// === arguments ===

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options> {
    let mut options = Options {
        out: paths::repo_root().join("build/bench"),
        // Short runs, many rounds: pairs close in time matter more than long runs here.
        duration: Duration::from_secs(2),
        connections: 16,
        rounds: 12,
        warmup: Duration::from_secs(2),
        suite: None,
        enforce_budget: false,
        extra_wasm: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| Error::new(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--out" => options.out = PathBuf::from(value("--out")?),
            "--duration" => {
                options.duration = Duration::from_secs(positive(&value("--duration")?)?)
            }
            "--connections" => {
                options.connections = u32::try_from(positive(&value("--connections")?)?)
                    .map_err(|_| Error::new("--connections is too large"))?;
            }
            "--rounds" => {
                options.rounds = usize::try_from(positive(&value("--rounds")?)?)
                    .map_err(|_| Error::new("--rounds is too large"))?;
            }
            "--warmup" => options.warmup = Duration::from_secs(positive(&value("--warmup")?)?),
            "--suite" => options.suite = Some(value("--suite")?),
            "--enforce-budget" => options.enforce_budget = true,
            "--extra-wasm" => {
                let spec = value("--extra-wasm")?;
                let mut parts = spec.splitn(3, '=');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(name), Some(path), configuration) if !name.is_empty() => {
                        let configuration = configuration.unwrap_or_default().to_owned();
                        options.extra_wasm.push((
                            name.to_owned(),
                            PathBuf::from(path),
                            configuration,
                        ));
                    }
                    _ => return Err(Error::new("--extra-wasm takes NAME=PATH[=CONFIG]")),
                }
            }
            "-h" | "--help" => {
                println!(
                    "bench --out <dir> [--duration <s>] [--connections <n>] [--rounds <n>] \
                     [--warmup <s>] [--suite <name>] [--enforce-budget]"
                );
                std::process::exit(0);
            }
            other => {
                return Err(Error::new(format!(
                    "unknown argument {other:?} (see --help)"
                )))
            }
        }
    }
    Ok(options)
}

fn positive(text: &str) -> Result<u64> {
    match text.parse::<u64>() {
        Ok(value) if value > 0 => Ok(value),
        _ => Err(Error::new(format!(
            "expected a positive integer, got {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 5s test @ http://127.0.0.1:1/api/v1/trade/orders
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  300.00us   9.00ms   90.00%
    Req/Sec    14.50k     1.00k   16.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    1.50ms
     99%    2.50ms
  72000 requests in 5.00s, 10.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  14400.50
Transfer/sec:      2.00MB
";

    #[test]
    fn parses_wrk_output() {
        let sample = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(sample.requests_per_second, 14400.5);
        assert!((sample.p50_ms - 0.812).abs() < 1e-9);
        assert_eq!(sample.p99_ms, 2.5);
        assert_eq!(
            (sample.requests, sample.non_2xx, sample.socket_errors),
            (72000, 4, 3)
        );
        assert!(parse_wrk("garbage").is_err());
        assert_eq!(parse_latency_ms("1.02s").unwrap(), 1020.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }
}
