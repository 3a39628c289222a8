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
//! per-round ratios (each scenario against the baseline run next to it in time). Envoy, wrk
//! and any in-process peer share CPU 0 (`--layout`, see [`Layout`] for why), and budgets are
//! judged on Envoy's capacity ratio: its CPU time per request (nanosecond scheduler
//! accounting), bare over filtered.
//!
//! A suite is a list of filter chains plus comparisons (budgets or plain ratios between two
//! of its scenarios); each gets a `<out>/<suite>.json` of its own. `--suite NAME` runs one,
//! the default runs all: security-headers (here), jwt-authz (`bench/jwt.rs`) and
//! ratelimit-tagger (`bench/ratelimit.rs`).
//!
//! The security-headers suite carries two references besides `bare`: `native-headers`
//! (the same headers set and removed by Envoy's route configuration, checked to match the
//! filter's response exactly: the price of the headers themselves) and `noop-wasm` (the
//! `test-harness/fixtures/noop-filter` module, when `make wasm` has built it: the price of
//! any wasm filter in V8, once with every callback the SDK exports and once trimmed to what
//! security-headers exports). A filter cannot be cheaper than the trimmed one.
//!
//! ```text
//! bench --out build/bench [--duration 2] [--connections 16] [--rounds 12] [--warmup 2]
//!       [--suite security-headers|jwt-authz|ratelimit-tagger] [--enforce-budget]
//!       [--layout shared|split|free] [--mode time|instructions|both]
//!       [--instruction-requests 200]
//! ```
//!
//! After the timed runs, each suite is run again with Envoy under valgrind's callgrind,
//! which counts the user-space instructions of every scenario's requests: a deterministic
//! second view, unaffected by the machine's noise (`bench/instructions.rs`).

#[path = "bench/instructions.rs"]
mod instructions;
#[path = "bench/jwt.rs"]
mod jwt;
#[path = "bench/ratelimit.rs"]
mod ratelimit;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use envoy_harness::config::{self, WasmFilter};
use envoy_harness::{client, paths, EnvoyBuilder, EnvoyProcess, Error, Result};
use gateway_core::security_headers::{HeaderMode, API_HEADERS, API_REMOVE};
use serde_json::{json, Value};

/// Builds a suite; the directory is its scratch space (token files), the layout places its
/// in-process peers.
type BuildSuite = fn(&Path, Layout) -> Result<Suite>;

/// A suite's extra phase (see [`Suite::phase`]).
type Phase = Box<dyn Fn(&PhaseContext<'_>) -> Result<PhaseOutcome>>;

/// A measured scenario, its samples and its counter totals.
/// A measured scenario, its samples, their adjacent baseline pairs and its counter totals.
type Measured<'a> = (&'a Scenario, &'a [Sample], &'a [Sample], &'a [Option<u64>]);

/// The suites, in the order `make bench` runs them; each is built (keys, tokens, peers)
/// only when it runs.
const SUITES: &[(&str, BuildSuite)] = &[
    ("security-headers", |_, _| security_headers_suite()),
    ("jwt-authz", jwt::suite),
    ("ratelimit-tagger", |_, layout| ratelimit::suite(layout)),
];

/// The request every scenario serves: a trading API path, as in production.
const REQUEST_PATH: &str = "/api/v1/trade/orders";

struct Options {
    out: PathBuf,
    duration: Duration,
    connections: u32,
    /// `None`: each suite's own default.
    rounds: Option<usize>,
    warmup: Duration,
    suite: Option<String>,
    enforce_budget: bool,
    /// `--extra-wasm NAME=PATH[=CONFIG]`: more scenarios, any module, for comparisons.
    extra_wasm: Vec<(String, PathBuf, String)>,
    layout: Layout,
    /// The timed suites, the instruction counts (callgrind), or both.
    mode: Mode,
    /// Requests per scenario and round in the instruction counts.
    instruction_requests: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Time,
    Instructions,
    Both,
}

impl Mode {
    fn parse(text: &str) -> Result<Self> {
        match text {
            "time" => Ok(Self::Time),
            "instructions" => Ok(Self::Instructions),
            "both" => Ok(Self::Both),
            other => Err(Error::new(format!(
                "--mode takes time, instructions or both, not {other:?}"
            ))),
        }
    }

    fn timed(self) -> bool {
        matches!(self, Self::Time | Self::Both)
    }

    fn counted(self) -> bool {
        matches!(self, Self::Instructions | Self::Both)
    }
}

/// Where Envoy, wrk and the suite's in-process peers run.
///
/// `Shared` is the default because of what these machines are: small VMs where waking a
/// process on the *other* CPU costs an inter-processor interrupt and a VM exit. With Envoy
/// on CPU 0 and wrk on CPU 1, every request pays those wake-ups on both sides, and the
/// same Envoy and configuration measured 12.7k, 4.3k and 3.5k requests/s in three runs
/// (41 to 94 us of Envoy CPU per request) -- the bench then measures the hypervisor, not
/// the filter. On one CPU nothing waits for an interrupt: the same runs gave 29-32k
/// requests/s at 22.7-25.3 us per request. wrk's own CPU is then part of the end-to-end
/// requests/s, which is why budgets are judged on Envoy's capacity ratio (its CPU per
/// request, bare over filtered), which wrk does not dilute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Envoy, wrk and peers on CPU 0.
    Shared,
    /// Envoy on CPU 0; wrk and peers on CPU 1 (machines with cheap cross-CPU wake-ups).
    Split,
    /// No pinning at all.
    Free,
}

impl Layout {
    fn parse(text: &str) -> Result<Self> {
        match text {
            "shared" => Ok(Self::Shared),
            "split" => Ok(Self::Split),
            "free" => Ok(Self::Free),
            other => Err(Error::new(format!(
                "--layout takes shared, split or free, not {other:?}"
            ))),
        }
    }

    /// `Split` needs two CPUs; with one, everything shares it anyway.
    fn effective(self) -> Self {
        let two_cpus = std::thread::available_parallelism().map_or(1, usize::from) >= 2;
        match self {
            Self::Split if !two_cpus => Self::Shared,
            layout => layout,
        }
    }

    fn envoy_cpu(self) -> Option<usize> {
        match self {
            Self::Shared | Self::Split => Some(0),
            Self::Free => None,
        }
    }

    /// The CPU of wrk and of the suite's in-process peers.
    fn load_cpu(self) -> Option<usize> {
        match self {
            Self::Shared => Some(0),
            Self::Split => Some(1),
            Self::Free => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Shared => "Envoy, wrk and peers on CPU 0",
            Self::Split => "Envoy on CPU 0, wrk and peers on CPU 1",
            Self::Free => "no CPU pinning",
        }
    }
}

/// Scenarios measured together; the first is the baseline the others are compared to.
struct Suite {
    name: &'static str,
    scenarios: Vec<Scenario>,
    /// Budgets (with `min_ratio`) and plain ratios between two scenarios.
    comparisons: Vec<Comparison>,
    /// Rounds when `--rounds` is not given (the suites together stay near five minutes).
    default_rounds: usize,
    /// More clusters for the bootstrap (rate-limit services).
    clusters: Vec<Value>,
    /// After the per-scenario checks, before any load.
    check: Option<Box<dyn Fn() -> Result<()>>>,
    /// After every wrk run.
    between_runs: Option<Box<dyn Fn()>>,
    /// Runs after the checks, before the rounds (the jwt-authz memory phase).
    phase: Option<Phase>,
}

impl Suite {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            scenarios: Vec::new(),
            comparisons: Vec::new(),
            default_rounds: 8,
            clusters: Vec::new(),
            check: None,
            between_runs: None,
            phase: None,
        }
    }
}

/// `scenario` over `baseline`, per round, median over rounds; a budget when `min_ratio`.
struct Comparison {
    scenario: &'static str,
    baseline: &'static str,
    min_ratio: Option<f64>,
}

struct Scenario {
    name: String,
    /// Filters before the router.
    http_filters: Vec<Value>,
    /// Extra fields of the listener's `route_config` (Envoy's own header manipulation).
    route_config: Vec<(&'static str, Value)>,
    /// The virtual host's routes, instead of one prefix route to the backend.
    routes: Option<Value>,
    /// A response header that proves the chain is the one we think (checked before load).
    marker: Marker,
    /// What wrk sends.
    load: Load,
    /// Loaded in the rounds; `false`: a listener for the suite's phase only.
    measured: bool,
    /// Counters (label, stat name; `{prefix}` = the listener's stat prefix) whose change
    /// over this scenario's measured runs is reported.
    counters: Vec<(&'static str, String)>,
}

impl Scenario {
    fn new(name: &str, http_filters: Vec<Value>) -> Self {
        Self {
            name: name.to_owned(),
            http_filters,
            route_config: Vec::new(),
            routes: None,
            marker: Marker::Unchecked,
            load: Load::Fixed(Vec::new()),
            measured: true,
            counters: Vec::new(),
        }
    }
}

/// The requests of a scenario.
#[derive(Clone, Debug)]
enum Load {
    /// The same request every time, with these headers.
    Fixed(Vec<(String, String)>),
    /// `authorization: Bearer <token>` with a different token per request, cycling through
    /// a file (one token per line), plus these headers.
    Tokens {
        file: PathBuf,
        headers: Vec<(String, String)>,
    },
}

enum Marker {
    Absent(&'static str),
    Present(&'static str),
    /// Exactly the response headers (names, values, order aside; `date` ignored) of the
    /// named scenario: the native reference must do what the filter does, no more, no less.
    SameHeadersAs(&'static str),
    /// 200 with the scenario's token, 401 without one.
    RequiresToken,
    /// The sum of the stats matching this admin filter grows with the check request (within
    /// a few seconds: the filters flush their counters on a one-second tick).
    StatIncreases(&'static str),
    /// Any module given on the command line: only the 200 is checked.
    Unchecked,
}

/// What a suite's phase gets: the running Envoy and a way to load its listeners.
struct PhaseContext<'a> {
    envoy: &'a EnvoyProcess,
    scenarios: &'a [Scenario],
    ports: &'a [u16],
    wrk: &'a Wrk,
    connections: u32,
    layout: Layout,
}

impl PhaseContext<'_> {
    fn port(&self, scenario: &str) -> Result<u16> {
        self.scenarios
            .iter()
            .zip(self.ports)
            .find(|(candidate, _)| candidate.name == scenario)
            .map(|(_, port)| *port)
            .ok_or_else(|| Error::new(format!("no scenario {scenario}")))
    }

    fn fixed_load(&self, scenario: &str) -> Result<Load> {
        self.scenarios
            .iter()
            .find(|candidate| candidate.name == scenario)
            .map(|candidate| candidate.load.clone())
            .ok_or_else(|| Error::new(format!("no scenario {scenario}")))
    }

    /// One wrk run of `duration` on `port` (see [`Wrk::run`] for `offset` and `limit`).
    fn load(
        &self,
        port: u16,
        load: &Load,
        duration: Duration,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<Sample> {
        self.wrk.run(
            port,
            self.connections,
            duration,
            self.layout,
            load,
            offset,
            limit,
        )
    }
}

/// A phase's result: printed lines, JSON merged into the suite's, and its own budget.
struct PhaseOutcome {
    lines: Vec<String>,
    json: Value,
    within_budget: bool,
}

/// Runs `start` on the layout's load CPU, so the threads it spawns (an in-process
/// rate-limit service) run where wrk runs; its own thread returns to every CPU afterwards.
fn on_load_cpu<T>(layout: Layout, start: impl FnOnce() -> T) -> T {
    let Some(cpu) = layout.load_cpu() else {
        return start();
    };
    // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity only read and write it.
    unsafe {
        let mut previous: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let saved = libc::sched_getaffinity(0, size, &mut previous) == 0;
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        libc::sched_setaffinity(0, size, &one);
        let value = start();
        if saved {
            libc::sched_setaffinity(0, size, &previous);
        }
        value
    }
}

/// Pins a child process to `cpu` before it executes (wrk: its one thread and the kernel
/// work it causes stay there).
fn pin_child(command: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // Built before fork: only async-signal-safe calls may run between fork and exec.
    // SAFETY: cpu_set_t is plain bit storage and all-zero is the empty set; `cpu` is a
    // CPU index of this machine (0 or 1), far below CPU_SETSIZE.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    // SAFETY: the closure makes one raw system call and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
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

impl Sample {
    /// The mean of two baseline runs, as the pair of the scenario run between them.
    fn mean(a: &Sample, b: &Sample) -> Sample {
        Sample {
            requests_per_second: (a.requests_per_second + b.requests_per_second) / 2.0,
            p50_ms: (a.p50_ms + b.p50_ms) / 2.0,
            p99_ms: (a.p99_ms + b.p99_ms) / 2.0,
            requests: (a.requests + b.requests) / 2,
            non_2xx: a.non_2xx + b.non_2xx,
            socket_errors: a.socket_errors + b.socket_errors,
            envoy_cpu_us_per_request: (a.envoy_cpu_us_per_request + b.envoy_cpu_us_per_request)
                / 2.0,
        }
    }
}

fn security_headers_suite() -> Result<Suite> {
    let bare = Scenario {
        marker: Marker::Absent("x-content-type-options"),
        ..Scenario::new("bare", Vec::new())
    };
    // The honest reference for security-headers: the same headers set and removed by
    // Envoy itself (route configuration, no wasm). What it costs over `bare` is the price
    // of bigger responses, which no filter can avoid; the rest is the filter's own.
    let native_headers = Scenario {
        route_config: native_security_headers(),
        marker: Marker::SameHeadersAs("security-headers"),
        ..Scenario::new("native-headers", Vec::new())
    };
    // The floor of any wasm filter: a module that does nothing (only when built), once
    // with every callback the SDK exports (what any SDK filter costs before `make wasm`
    // trims it) and once exporting only what security-headers exports.
    let noop = noop_filter("noop-filter").map(|path| Scenario {
        marker: Marker::Absent("x-content-type-options"),
        ..Scenario::new(
            "noop-wasm",
            vec![WasmFilter::new("noop-filter", path, "").to_value()],
        )
    });
    let noop_trimmed = noop_filter("noop-filter-trimmed").map(|path| Scenario {
        marker: Marker::Absent("x-content-type-options"),
        ..Scenario::new(
            "noop-wasm-trimmed",
            vec![WasmFilter::new("noop-filter-trimmed", path, "").to_value()],
        )
    });
    // What the manifests ship (route overrides, so `:path` is read on every request).
    let shipped = Scenario {
        marker: Marker::Present("x-content-type-options"),
        ..Scenario::new(
            "security-headers-shipped",
            vec![
                WasmFilter::from_dist("security-headers", &shipped_security_headers_config()?)?
                    .to_value(),
            ],
        )
    };
    let security_headers = Scenario {
        marker: Marker::Present("x-content-type-options"),
        ..Scenario::new(
            "security-headers",
            vec![WasmFilter::from_dist("security-headers", r#"{"preset":"api"}"#)?.to_value()],
        )
    };
    let scenarios = [
        Some(bare),
        Some(native_headers),
        noop,
        noop_trimmed,
        Some(security_headers),
        Some(shipped),
    ];
    let mut comparisons = vec![Comparison {
        scenario: "security-headers",
        baseline: "bare",
        min_ratio: Some(0.93),
    }];
    for reference in ["native-headers", "noop-wasm", "noop-wasm-trimmed"] {
        if scenarios.iter().flatten().any(|s| s.name == reference) {
            comparisons.push(Comparison {
                scenario: "security-headers",
                baseline: reference,
                min_ratio: None,
            });
        }
    }
    Ok(Suite {
        scenarios: scenarios.into_iter().flatten().collect(),
        comparisons,
        default_rounds: 6,
        ..Suite::new("security-headers")
    })
}

/// The `api` preset of security-headers (`filters/gateway-core/src/security_headers/
/// preset.rs`) as Envoy route configuration. `check_scenarios` proves, before any load,
/// that it yields exactly the headers the filter yields.
fn native_security_headers() -> Vec<(&'static str, Value)> {
    let add: Vec<Value> = API_HEADERS
        .iter()
        .map(|(key, value, mode)| {
            let action = match mode {
                HeaderMode::IfAbsent => "ADD_IF_ABSENT",
                HeaderMode::Overwrite => "OVERWRITE_IF_EXISTS_OR_ADD",
            };
            json!({ "header": { "key": key, "value": value }, "append_action": action })
        })
        .collect();
    vec![
        ("response_headers_to_add", Value::Array(add)),
        ("response_headers_to_remove", json!(API_REMOVE)),
    ]
}

/// The JSON `configuration` of security-headers in its EnvoyFilter (what production runs).
fn shipped_security_headers_config() -> Result<String> {
    let path = paths::repo_root().join("envoyfilter-manifests/envoyfilter-security-headers.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(|error| Error::new(format!("reading {}: {error}", path.display())))?;
    // The block scalar after `value: |`, up to the first line indented less than it.
    let mut lines = text.lines().skip_while(|line| line.trim() != "value: |");
    lines.next();
    let mut json = String::new();
    let mut indent = None;
    for line in lines {
        let this = line.len() - line.trim_start().len();
        if line.trim().is_empty() {
            continue;
        }
        if *indent.get_or_insert(this) > this {
            break;
        }
        json.push_str(line.trim());
    }
    serde_json::from_str::<Value>(&json)
        .map_err(|error| Error::new(format!("{}: configuration: {error}", path.display())))?;
    Ok(json)
}

/// A no-op fixture module, when `make wasm` has built it.
fn noop_filter(name: &str) -> Option<PathBuf> {
    let path = paths::fixture_wasm(name);
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
    if let Some(wanted) = options.suite.as_deref() {
        if !SUITES.iter().any(|(name, _)| *name == wanted) {
            let names: Vec<&str> = SUITES.iter().map(|(name, _)| *name).collect();
            return Err(Error::new(format!(
                "no suite {wanted:?} (suites: {})",
                names.join(", ")
            )));
        }
    }
    let wrk = find_wrk()?;
    std::fs::create_dir_all(&options.out)
        .map_err(|error| Error::new(format!("creating {}: {error}", options.out.display())))?;
    let mut all_within_budget = true;
    for (name, build) in SUITES {
        if options
            .suite
            .as_deref()
            .is_some_and(|wanted| wanted != *name)
        {
            continue;
        }
        // Token files and the like, for this suite only.
        let scratch = tempfile::Builder::new()
            .prefix("svc-gateway-bench-")
            .tempdir()
            .map_err(|error| Error::new(format!("creating a temporary directory: {error}")))?;
        let mut suite = build(scratch.path(), options.layout)?;
        for (name, path, configuration) in &options.extra_wasm {
            suite.scenarios.push(Scenario::new(
                name,
                vec![WasmFilter::new(name, path, configuration.as_str()).to_value()],
            ));
        }
        if options.mode.timed() {
            all_within_budget &= run_suite(&suite, &options, &wrk)?;
        }
        if options.mode.counted() {
            instructions::run_suite(&suite, &options.out, options.instruction_requests)?;
        }
    }
    Ok(all_within_budget || !options.enforce_budget)
}

fn run_suite(suite: &Suite, options: &Options, wrk: &Wrk) -> Result<bool> {
    let layout = options.layout;
    let rounds = options.rounds.unwrap_or(suite.default_rounds);
    let mut builder = EnvoyProcess::builder(bench_config(suite)).log_level("warning");
    if let Some(cpu) = layout.envoy_cpu() {
        builder = builder.pin_to_cpu(cpu);
    }
    let (envoy, ports) = start_checked(suite, builder)?;
    let measured: Vec<usize> = suite
        .scenarios
        .iter()
        .enumerate()
        .filter(|(_, scenario)| scenario.measured)
        .map(|(index, _)| index)
        .collect();

    // Per round: the baseline once, then each other scenario and the baseline again.
    let runs_per_round = (2 * measured.len()).saturating_sub(1);
    let planned = options.warmup.as_secs_f64() * measured.len() as f64
        + options.duration.as_secs_f64() * (runs_per_round * rounds) as f64;
    println!(
        "suite {}: {} scenarios x {} rounds x {}s, {} connections, {}; about {:.0}s{}",
        suite.name,
        measured.len(),
        rounds,
        options.duration.as_secs(),
        options.connections,
        layout.describe(),
        planned,
        if suite.phase.is_some() {
            " after its extra phase"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let phase = match &suite.phase {
        Some(phase) => {
            let outcome = phase(&PhaseContext {
                envoy: &envoy,
                scenarios: &suite.scenarios,
                ports: &ports,
                wrk,
                connections: options.connections,
                layout,
            })?;
            for line in &outcome.lines {
                println!("{line}");
            }
            Some(outcome)
        }
        None => None,
    };
    let between_runs = || {
        if let Some(between_runs) = &suite.between_runs {
            between_runs();
        }
    };
    // Where each scenario's token rotation continues: the requests it was sent so far (plus
    // the ones still in flight when wrk stopped), so no run starts on tokens a cache holds.
    let mut offsets = vec![0u64; suite.scenarios.len()];
    let advance = |offsets: &mut Vec<u64>, index: usize, sample: &Sample| {
        if let Some(offset) = offsets.get_mut(index) {
            *offset += sample.requests + u64::from(options.connections);
        }
    };
    for &index in &measured {
        let (Some(scenario), Some(port)) = (suite.scenarios.get(index), ports.get(index)) else {
            continue;
        };
        let offset = offsets.get(index).copied().unwrap_or_default();
        let sample = wrk.run(
            *port,
            options.connections,
            options.warmup,
            layout,
            &scenario.load,
            offset,
            None,
        )?;
        advance(&mut offsets, index, &sample);
        between_runs();
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); suite.scenarios.len()];
    let mut counters: Vec<Vec<Option<u64>>> = suite
        .scenarios
        .iter()
        .map(|scenario| vec![Some(0); scenario.counters.len()])
        .collect();
    // Each round runs the baseline, then every other scenario followed by the baseline
    // again (B X B Y B ...), the order of the others reversed every other round. Each
    // scenario run is compared with the mean of the baseline runs right before and right
    // after it: on these machines speed drifts over seconds, and a pair two seconds apart on
    // either side cancels the drift that a pair ten seconds apart does not.
    let baseline = measured.first().copied();
    let others: Vec<usize> = measured.iter().copied().skip(1).collect();
    let mut adjacent: Vec<Vec<Sample>> = vec![Vec::new(); suite.scenarios.len()];
    let run_one = |index: usize, offsets: &mut Vec<u64>| -> Result<Sample> {
        let (Some(scenario), Some(port)) = (suite.scenarios.get(index), ports.get(index)) else {
            return Err(Error::new(format!("no scenario {index}")));
        };
        let offset = offsets.get(index).copied().unwrap_or_default();
        let cpu_before = envoy.cpu_time()?;
        let mut sample = wrk.run(
            *port,
            options.connections,
            options.duration,
            layout,
            &scenario.load,
            offset,
            None,
        )?;
        let cpu = envoy.cpu_time()?.saturating_sub(cpu_before);
        sample.envoy_cpu_us_per_request = cpu.as_secs_f64() * 1e6 / (sample.requests.max(1) as f64);
        advance(offsets, index, &sample);
        between_runs();
        Ok(sample)
    };
    for round in 0..rounds {
        let Some(baseline) = baseline else { break };
        let mut order = others.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut before = run_one(baseline, &mut offsets)?;
        if let Some(baseline_samples) = samples.get_mut(baseline) {
            baseline_samples.push(before);
        }
        for index in order {
            let Some(scenario) = suite.scenarios.get(index) else {
                continue;
            };
            let counters_before = read_counters(&envoy, scenario, index)?;
            let sample = run_one(index, &mut offsets)?;
            let after = run_one(baseline, &mut offsets)?;
            // Read after the next baseline run: the filters flush their counters on a
            // one-second tick, and no other scenario of the suite ran in between.
            let counters_after = read_counters(&envoy, scenario, index)?;
            if let Some(totals) = counters.get_mut(index) {
                for ((total, before), after) in
                    totals.iter_mut().zip(counters_before).zip(counters_after)
                {
                    *total = match (*total, before, after) {
                        (Some(total), Some(before), Some(after)) => {
                            Some(total + after.saturating_sub(before))
                        }
                        _ => None,
                    };
                }
            }
            if let Some(scenario_samples) = samples.get_mut(index) {
                scenario_samples.push(sample);
            }
            if let Some(pairs) = adjacent.get_mut(index) {
                pairs.push(Sample::mean(&before, &after));
            }
            if let Some(baseline_samples) = samples.get_mut(baseline) {
                baseline_samples.push(after);
            }
            before = after;
        }
    }
    // The baseline against itself: each of its runs is its own pair.
    if let (Some(baseline), Some(pairs)) = (baseline, baseline.and_then(|b| samples.get(b))) {
        let own = pairs.clone();
        if let Some(slot) = adjacent.get_mut(baseline) {
            *slot = own;
        }
    }
    let elapsed = started.elapsed();
    drop(envoy);

    let report = Report::new(
        suite,
        options,
        rounds,
        &samples,
        &adjacent,
        &counters,
        phase.as_ref(),
        layout,
        elapsed,
    )?;
    report.print();
    let path = options.out.join(format!("{}.json", suite.name));
    let json = serde_json::to_string_pretty(&report.json)?;
    std::fs::write(&path, json + "\n")
        .map_err(|error| Error::new(format!("writing {}: {error}", path.display())))?;
    println!("wrote {}", path.display());
    Ok(report.within_budget)
}

/// Starts the suite's Envoy and proves, before any load, that every scenario is set up as
/// intended (see [`Marker`]) and the suite's own check passes. Returns each scenario's port.
fn start_checked(suite: &Suite, builder: EnvoyBuilder) -> Result<(EnvoyProcess, Vec<u16>)> {
    let envoy = builder.start()?;
    let ports = suite
        .scenarios
        .iter()
        .enumerate()
        .map(|(index, _)| envoy.port(&format!("scenario{index}")))
        .collect::<Result<Vec<u16>>>()?;
    check_scenarios(&suite.scenarios, &ports, &envoy)?;
    if let Some(check) = &suite.check {
        check()?;
    }
    Ok((envoy, ports))
}

/// The scenario's counters now (`None`: Envoy has no such stat).
fn read_counters(
    envoy: &EnvoyProcess,
    scenario: &Scenario,
    index: usize,
) -> Result<Vec<Option<u64>>> {
    let prefix = format!("scenario{index}");
    scenario
        .counters
        .iter()
        .map(|(_, stat)| envoy.stat(&stat.replace("{prefix}", &prefix)))
        .collect()
}

/// The sum of every stat the admin filter matches.
fn stat_sum(envoy: &EnvoyProcess, filter: &str) -> Result<u64> {
    let body = envoy.admin_get(&format!("/stats?filter={filter}"))?;
    Ok(body
        .lines()
        .filter_map(|line| line.split_once(": "))
        .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
        .sum())
}

/// The headers of a scenario's first request (for the token rotation: its first token).
fn first_request_headers(load: &Load) -> Result<Vec<(String, String)>> {
    match load {
        Load::Fixed(headers) => Ok(headers.clone()),
        Load::Tokens { file, headers } => {
            let text = std::fs::read_to_string(file)
                .map_err(|error| Error::new(format!("reading {}: {error}", file.display())))?;
            let token = text.lines().next().unwrap_or_default();
            let mut headers = headers.clone();
            headers.push(("authorization".to_owned(), format!("Bearer {token}")));
            Ok(headers)
        }
    }
}

/// One request per scenario before the load: the right chain answers, and answers 200.
fn check_scenarios(scenarios: &[Scenario], ports: &[u16], envoy: &EnvoyProcess) -> Result<()> {
    let mut responses = Vec::new();
    for (scenario, port) in scenarios.iter().zip(ports) {
        let headers = first_request_headers(&scenario.load)?;
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let stat_before = match scenario.marker {
            Marker::StatIncreases(filter) => stat_sum(envoy, filter)?,
            _ => 0,
        };
        let response = client::request(*port, "GET", REQUEST_PATH, &header_refs)?;
        let marker_ok = match scenario.marker {
            Marker::RequiresToken => {
                let without: Vec<(&str, &str)> = header_refs
                    .iter()
                    .filter(|(name, _)| !name.eq_ignore_ascii_case("authorization"))
                    .copied()
                    .collect();
                client::request(*port, "GET", REQUEST_PATH, &without)?.status == 401
            }
            // Our filters hand per-request counts to Envoy from their tick, once a second.
            Marker::StatIncreases(filter) => envoy_harness::wait_until(
                &format!("{filter} to count the check request"),
                Duration::from_secs(3),
                || Ok(stat_sum(envoy, filter)? > stat_before),
            )
            .is_ok(),
            _ => true,
        };
        responses.push((response, marker_ok));
    }
    for (scenario, (response, marker_ok)) in scenarios.iter().zip(&responses) {
        let ok = response.status == 200
            && *marker_ok
            && match scenario.marker {
                Marker::Absent(name) => response.header(name).is_none(),
                Marker::Present(name) => response.header(name).is_some(),
                Marker::SameHeadersAs(other) => scenarios
                    .iter()
                    .zip(&responses)
                    .find(|(candidate, _)| candidate.name == other)
                    .is_some_and(|(_, (expected, _))| {
                        comparable_headers(expected) == comparable_headers(response)
                    }),
                Marker::RequiresToken | Marker::StatIncreases(_) | Marker::Unchecked => true,
            };
        if !ok {
            return Err(Error::new(format!(
                "scenario {} is not set up as intended: {} {:?} {}",
                scenario.name,
                response.status,
                response.headers,
                response.body_text()
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

/// The Envoy config: the backend listener, one listener per scenario, the backend cluster
/// and the suite's own clusters.
fn bench_config(suite: &Suite) -> String {
    let mut listeners = String::new();
    for (index, scenario) in suite.scenarios.iter().enumerate() {
        let mut filters = scenario.http_filters.clone();
        filters.push(config::router());
        // One `key: <inline JSON>` line per field, at route_config's indentation.
        let route_config: String = scenario
            .route_config
            .iter()
            .map(|(key, value)| format!("            {key}: {}\n", config::inline(value)))
            .collect();
        let routes = scenario.routes.clone().unwrap_or_else(
            || json!([{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]),
        );
        listeners.push_str(
            &SCENARIO_LISTENER
                .replace("@INDEX@", &index.to_string())
                .replace("@FILTERS@", &config::inline_list(&filters))
                .replace("@ROUTES@", &config::inline(&routes))
                .replace("@ROUTE_CONFIG@\n", &route_config),
        );
    }
    let clusters: String = suite
        .clusters
        .iter()
        .map(|cluster| format!("  - {}\n", config::inline(cluster)))
        .collect();
    BENCH_BOOTSTRAP
        .replace("@SCENARIO_LISTENERS@", &listeners)
        .replace("@CLUSTERS@\n", &clusters)
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
@CLUSTERS@
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
              routes: @ROUTES@
          http_filters: @FILTERS@
"#;

// === wrk ===

struct Wrk {
    /// Holds the Lua scripts of the token rotation.
    scripts: tempfile::TempDir,
}

/// A different `authorization` per request: `wrk -s rotate.lua <url> -- <file> <offset>
/// <limit>` cycles through the tokens of `<file>` from line `<offset>` (mod its length);
/// with a `<limit>` > 0, the requests after the first `<limit>` repeat the last token.
const ROTATE_LUA: &str = r#"
local tokens, n, i, sent, limit = {}, 0, 0, 0, 0
function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    tokens[n] = "Bearer " .. line
  end
  i = tonumber(args[2]) % n
  limit = tonumber(args[3])
end
function request()
  sent = sent + 1
  if limit == 0 or sent <= limit then
    i = i % n + 1
  end
  wrk.headers["Authorization"] = tokens[i]
  return wrk.format()
end
"#;

fn find_wrk() -> Result<Wrk> {
    // Spawning is the test: it prints its version (and then exits non-zero).
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err(Error::new(
            "wrk not found: run `make tools` (apt-get install wrk)",
        ));
    }
    let scripts = tempfile::Builder::new()
        .prefix("svc-gateway-wrk-")
        .tempdir()
        .map_err(|error| Error::new(format!("creating a temporary directory: {error}")))?;
    let write = |name: &str, text: &str| {
        std::fs::write(scripts.path().join(name), text)
            .map_err(|error| Error::new(format!("writing {name}: {error}")))
    };
    write("rotate.lua", ROTATE_LUA)?;
    Ok(Wrk { scripts })
}

impl Wrk {
    /// `offset` / `limit`: where a token rotation starts, and after how many requests it
    /// repeats its last token (`None`: it cycles); ignored for fixed requests.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        port: u16,
        connections: u32,
        duration: Duration,
        layout: Layout,
        load: &Load,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<Sample> {
        let url = format!("http://127.0.0.1:{port}{REQUEST_PATH}");
        let mut command = Command::new("wrk");
        if let Some(cpu) = layout.load_cpu() {
            pin_child(&mut command, cpu);
        }
        command
            .args(["-t1", "--latency", "--timeout", "2s"])
            .arg(format!("-c{connections}"))
            .arg(format!("-d{}s", duration.as_secs().max(1)));
        let headers = match load {
            Load::Fixed(headers) => headers,
            Load::Tokens { headers, .. } => headers,
        };
        for (name, value) in headers {
            command.arg("-H").arg(format!("{name}: {value}"));
        }
        if let Load::Tokens { file, .. } = load {
            command
                .arg("-s")
                .arg(self.scripts.path().join("rotate.lua"))
                .arg(&url)
                .arg("--")
                .arg(file)
                .arg(offset.to_string())
                .arg(limit.unwrap_or(0).to_string());
        } else {
            command.arg(&url);
        }
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
    comparison_lines: Vec<String>,
    counter_lines: Vec<String>,
    phase_lines: Vec<String>,
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

/// Per run, `samples` over their adjacent baseline pairs: requests/s over the baseline's,
/// and the baseline's Envoy CPU per request over the run's (so it reads like the
/// throughput ratio: the capacity left at equal CPU).
fn paired_ratios(samples: &[Sample], pairs: &[Sample]) -> (Vec<f64>, Vec<f64>) {
    samples
        .iter()
        .zip(pairs)
        .map(|(sample, base)| {
            (
                sample.requests_per_second / base.requests_per_second,
                base.envoy_cpu_us_per_request / sample.envoy_cpu_us_per_request,
            )
        })
        .unzip()
}

/// `scenario` over `baseline` per round, each first normalised by its own adjacent
/// baseline runs (`(x / x's pair) / (y / y's pair)`); against the suite's baseline itself
/// this is just the scenario's paired ratio.
fn compared_ratios(
    scenario: (&[Sample], &[Sample]),
    baseline: (&[Sample], &[Sample]),
) -> (Vec<f64>, Vec<f64>) {
    let (x_rps, x_cpu) = paired_ratios(scenario.0, scenario.1);
    let (y_rps, y_cpu) = paired_ratios(baseline.0, baseline.1);
    let divide = |x: Vec<f64>, y: Vec<f64>| -> Vec<f64> {
        x.iter().zip(y.iter().cycle()).map(|(x, y)| x / y).collect()
    };
    (divide(x_rps, y_rps), divide(x_cpu, y_cpu))
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn new(
        suite: &Suite,
        options: &Options,
        rounds: usize,
        samples: &[Vec<Sample>],
        adjacent: &[Vec<Sample>],
        counters: &[Vec<Option<u64>>],
        phase: Option<&PhaseOutcome>,
        layout: Layout,
        elapsed: Duration,
    ) -> Result<Self> {
        let measured: Vec<Measured<'_>> = suite
            .scenarios
            .iter()
            .zip(samples)
            .zip(adjacent)
            .zip(counters)
            .filter(|(((scenario, _), _), _)| scenario.measured)
            .map(|(((scenario, samples), adjacent), counters)| {
                (
                    scenario,
                    samples.as_slice(),
                    adjacent.as_slice(),
                    counters.as_slice(),
                )
            })
            .collect();
        let baseline_samples = measured.first().map(|(_, s, _, _)| *s).unwrap_or_default();
        let baseline_name = measured
            .first()
            .map_or("baseline", |(scenario, _, _, _)| scenario.name.as_str());
        let baseline = median(baseline_samples.iter().map(|s| s.requests_per_second));
        let mut rows = Vec::new();
        let mut scenarios_json = Vec::new();
        let mut counter_lines = Vec::new();
        for (scenario, scenario_samples, pairs, scenario_counters) in &measured {
            let rps = median(scenario_samples.iter().map(|s| s.requests_per_second));
            // The headline ratios: per run, this scenario over the mean of the baseline runs
            // right before and after it, then the median over rounds. A burst of load from
            // another process spoils one pair, not the result; the ratio of the medians is
            // kept in the JSON as a second view.
            let (paired, cpu_paired) = paired_ratios(scenario_samples, pairs);
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
            let counters_json: serde_json::Map<String, Value> = scenario
                .counters
                .iter()
                .zip(scenario_counters.iter())
                .map(|((label, _), value)| ((*label).to_owned(), json!(value)))
                .collect();
            if !counters_json.is_empty() {
                let text: Vec<String> = counters_json
                    .iter()
                    .map(|(label, value)| format!("{label} {value}"))
                    .collect();
                counter_lines.push(format!("  {}: {}", row.name, text.join(", ")));
            }
            scenarios_json.push(json!({
                "name": row.name,
                "load": match &scenario.load {
                    Load::Fixed(_) => "the same request every time",
                    Load::Tokens { .. } => "a different token per request (rotation over a file)",
                },
                "requests_per_second": round2(row.requests_per_second),
                "p50_ms": round3(row.p50_ms),
                "p99_ms": round3(row.p99_ms),
                "ratio_vs_baseline": round3(row.ratio),
                "ratio_of_medians": round3(rps / baseline),
                "paired_ratios": paired.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
                "envoy_cpu_us_per_request": round2(row.cpu_us_per_request),
                "cpu_ratio_vs_baseline": round3(row.cpu_ratio),
                "failed_requests": row.failures,
                "counters": counters_json,
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
        let mut comparison_lines = Vec::new();
        let mut comparisons_json = Vec::new();
        let find = |name: &str| {
            measured
                .iter()
                .find(|(scenario, _, _, _)| scenario.name == name)
                .map(|(_, samples, pairs, _)| (*samples, *pairs))
                .ok_or_else(|| Error::new(format!("no scenario {name}")))
        };
        for comparison in &suite.comparisons {
            let (paired, cpu_paired) =
                compared_ratios(find(comparison.scenario)?, find(comparison.baseline)?);
            let ratio = median(paired.iter().copied());
            let cpu_ratio = median(cpu_paired.iter().copied());
            let (cpu_low, cpu_high) = quartiles(cpu_paired.iter().copied());
            let spread = format!(
                "middle half of {} pairs {cpu_low:.2}-{cpu_high:.2}",
                cpu_paired.len()
            );
            // Judged on Envoy's capacity (CPU per request), not on end-to-end requests/s:
            // wrk shares Envoy's CPU (see `Layout`) and would dilute the filter's cost.
            let within = comparison.min_ratio.map(|min_ratio| cpu_ratio >= min_ratio);
            if within == Some(false) {
                within_budget = false;
            }
            comparison_lines.push(match comparison.min_ratio {
                Some(min_ratio) => format!(
                    "budget: {} >= {min_ratio:.2} x {} -> Envoy capacity {cpu_ratio:.3} \
                     ({spread}; end-to-end req/s {ratio:.3}): {}",
                    comparison.scenario,
                    comparison.baseline,
                    if within == Some(true) {
                        "within budget"
                    } else {
                        "BELOW BUDGET"
                    }
                ),
                None => format!(
                    "ratio:  {} / {} -> Envoy capacity {cpu_ratio:.3} ({spread}; end-to-end \
                     req/s {ratio:.3})",
                    comparison.scenario, comparison.baseline
                ),
            });
            comparisons_json.push(json!({
                "scenario": comparison.scenario,
                "baseline": comparison.baseline,
                "min_ratio": comparison.min_ratio,
                "measured_ratio": round3(ratio),
                "paired_ratios": paired.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
                "cpu_ratio": round3(cpu_ratio),
                "cpu_ratio_quartiles": [round3(cpu_low), round3(cpu_high)],
                "cpu_paired_ratios": cpu_paired.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
                "within_budget": within,
            }));
        }
        if let Some(phase) = phase {
            within_budget &= phase.within_budget;
        }
        let failures: u64 = rows.iter().map(|row| row.failures).sum();
        if failures > 0 {
            within_budget = false;
        }
        let budgets: Vec<Value> = comparisons_json
            .iter()
            .filter(|comparison| !comparison["min_ratio"].is_null())
            .cloned()
            .collect();

        let json = json!({
            "suite": suite.name,
            "baseline": baseline_name,
            "envoy": envoy_version(),
            "wasm": wasm_artifacts(suite),
            "load": {
                "tool": "wrk",
                "threads": 1,
                "connections": options.connections,
                "duration_s": options.duration.as_secs(),
                "warmup_s": options.warmup.as_secs(),
                "rounds": rounds,
                "order": "per round: baseline, then each scenario followed by the baseline (B X B Y B ...), the scenarios' order reversed every other round",
                "ratio": "median over rounds of requests/s divided by the mean of the baseline runs right before and after",
                "cpu_ratio": "median over rounds of the baseline's Envoy CPU per request divided by this scenario's: Envoy's capacity ratio, on which budgets are judged",
                "envoy_concurrency": 1,
                "cpu_pinning": layout.describe(),
                "path": REQUEST_PATH,
                "upstream": "direct_response listener in the same Envoy, via a STATIC cluster",
            },
            "elapsed_s": round2(elapsed.as_secs_f64()),
            "scenarios": scenarios_json,
            // The first budget alone, as before there were several.
            "budget": budgets.first().cloned().unwrap_or(Value::Null),
            "budgets": budgets,
            "comparisons": comparisons_json,
            "phase": phase.map_or(Value::Null, |phase| phase.json.clone()),
            "within_budget": within_budget,
        });
        Ok(Self {
            rows,
            within_budget,
            comparison_lines,
            counter_lines,
            phase_lines: phase.map(|phase| phase.lines.clone()).unwrap_or_default(),
            json,
        })
    }

    fn print(&self) {
        let baseline = self
            .rows
            .first()
            .map_or("baseline", |row| row.name.as_str());
        println!(
            "{:<24} {:>8} {:>10} {:>10} {:>8} {:>12} {:>9} {:>7}",
            "scenario",
            "req/s",
            "p50",
            "p99",
            format!("vs {baseline}"),
            "Envoy CPU",
            "capacity",
            "failed"
        );
        for row in &self.rows {
            println!(
                "{:<24} {:>8.0} {:>8.3}ms {:>8.3}ms {:>8.3} {:>7.1}us/req {:>9.3} {:>7}",
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
        if !self.counter_lines.is_empty() {
            println!("counters over the measured runs:");
            for line in &self.counter_lines {
                println!("{line}");
            }
        }
        for line in self.comparison_lines.iter().chain(&self.phase_lines) {
            println!("{line}");
        }
    }
}

/// The first and third quartiles (medians of the lower and upper halves): the middle half
/// of the pairs, which shows how far one run's noise reaches on this machine.
fn quartiles(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let half = values.len() / 2;
    let lower = values.get(..half).unwrap_or_default();
    let upper = values.get(values.len() - half..).unwrap_or_default();
    (median(lower.iter().copied()), median(upper.iter().copied()))
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
        rounds: None,
        warmup: Duration::from_secs(2),
        suite: None,
        enforce_budget: false,
        extra_wasm: Vec::new(),
        layout: Layout::Shared,
        mode: Mode::Both,
        instruction_requests: 200,
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
                options.rounds = Some(
                    usize::try_from(positive(&value("--rounds")?)?)
                        .map_err(|_| Error::new("--rounds is too large"))?,
                );
            }
            "--warmup" => options.warmup = Duration::from_secs(positive(&value("--warmup")?)?),
            "--suite" => options.suite = Some(value("--suite")?),
            "--enforce-budget" => options.enforce_budget = true,
            "--layout" => options.layout = Layout::parse(&value("--layout")?)?.effective(),
            "--mode" => options.mode = Mode::parse(&value("--mode")?)?,
            "--instruction-requests" => {
                options.instruction_requests =
                    usize::try_from(positive(&value("--instruction-requests")?)?)
                        .map_err(|_| Error::new("--instruction-requests is too large"))?;
            }
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
                     [--warmup <s>] [--suite security-headers|jwt-authz|ratelimit-tagger] \
                     [--enforce-budget] [--extra-wasm NAME=PATH[=CONFIG]] \
                     [--layout shared|split|free] [--mode time|instructions|both] \
                     [--instruction-requests N]"
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
    fn quartiles_are_the_medians_of_the_halves() {
        let (low, high) = quartiles([8.0, 1.0, 4.0, 2.0, 6.0, 3.0, 7.0, 5.0].into_iter());
        assert_eq!((low, high), (2.5, 6.5));
        let (low, high) = quartiles([5.0, 1.0, 3.0].into_iter());
        assert_eq!((low, high), (1.0, 5.0));
        assert!(quartiles(std::iter::empty()).0.is_nan());
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }
}
