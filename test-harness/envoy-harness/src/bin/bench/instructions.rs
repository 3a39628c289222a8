//! The deterministic half of `make bench`: user-space instructions per request through the
//! same Envoy and scenarios, counted by valgrind's callgrind.
//!
//! On these VMs the same bare request costs 56-99 us of Envoy CPU from one two-second run to
//! the next, so a 2 % change drowns in the requests/s suites' noise. An instruction count is
//! the same whatever the machine is doing: callgrind runs Envoy (V8's JIT code included)
//! with instrumentation off, and for each scenario turns it on around `requests` requests
//! sent one after another over one keep-alive connection, after a warm-up. It counts only
//! user space, so it leaves out the kernel's share of a request (sockets, epoll), which
//! every scenario pays alike; a ratio of instruction counts therefore weighs a filter a
//! little more heavily than Envoy's CPU time does. It is a way to see a filter's cost
//! change, not a budget: budgets are judged on the timed suites.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use envoy_harness::{EnvoyProcess, Error, Result};
use serde_json::{json, Value};

use super::{bench_config, start_checked, Load, Suite, REQUEST_PATH};

/// Each scenario is counted this many times; the smallest count is kept (instrumentation
/// can only add, e.g. a V8 tier-up or a GC landing in one window).
const ROUNDS: usize = 2;
const WARMUP_REQUESTS: usize = 30;
/// An instrumented Envoy compiles the modules and starts in tens of seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// The rate-limit suites' RPC timeout, and what it becomes under callgrind: instrumented,
/// Envoy runs some fifty times slower, and a timed-out RPC would count the fail-open path
/// instead of the one the scenario stands for. Arming a timer costs the same either way.
const RLS_TIMEOUT: &str = r#""timeout":"0.05s""#;
const INSTRUMENTED_RLS_TIMEOUT: &str = r#""timeout":"30s""#;
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// One scenario's count.
struct Count {
    name: String,
    per_request: f64,
    rounds: Vec<f64>,
}

/// Runs the suite's measured scenarios under callgrind; prints the table and writes
/// `<out>/<suite>-instructions.json`.
pub fn run_suite(suite: &Suite, out: &Path, requests: usize) -> Result<()> {
    for tool in ["valgrind", "callgrind_control"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(Error::new(format!(
                "{tool} not found: run `make tools` (apt-get install valgrind)"
            )));
        }
    }
    let dumps = tempfile::Builder::new()
        .prefix("svc-gateway-callgrind-")
        .tempdir()
        .map_err(|error| Error::new(format!("creating a temporary directory: {error}")))?;
    let out_file = dumps.path().join("callgrind.%p");
    let config = bench_config(suite).replace(RLS_TIMEOUT, INSTRUMENTED_RLS_TIMEOUT);
    let builder = EnvoyProcess::builder(config)
        .log_level("warning")
        .wrapper([
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            // Nothing is counted until a scenario turns it on (start-up is not measured).
            "--instr-atstart=no".to_owned(),
            // V8 writes the code it runs: have valgrind notice code written to memory.
            "--smc-check=all-non-file".to_owned(),
            "--dump-instr=no".to_owned(),
            format!("--callgrind-out-file={}", out_file.display()),
        ])
        .ready_timeout(READY_TIMEOUT);
    let (envoy, ports) = start_checked(suite, builder)?;
    let pid = envoy
        .pid()
        .ok_or_else(|| Error::new("instrumented Envoy has no pid"))?;
    println!(
        "suite {} (instructions): {} requests per scenario, {ROUNDS} rounds, valgrind's callgrind",
        suite.name, requests
    );
    let started = Instant::now();
    let mut counts = Vec::new();
    for (scenario, port) in suite.scenarios.iter().zip(&ports) {
        if !scenario.measured {
            continue;
        }
        let mut load = RequestSource::new(&scenario.load)?;
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            send(*port, &mut load, WARMUP_REQUESTS)?;
            callgrind_control(pid, &["-i", "on"])?;
            callgrind_control(pid, &["-z"])?;
            send(*port, &mut load, requests)?;
            callgrind_control(pid, &["-d"])?;
            callgrind_control(pid, &["-i", "off"])?;
            let total = take_dump(dumps.path())?;
            rounds.push(total as f64 / requests as f64);
        }
        let per_request = rounds.iter().copied().fold(f64::INFINITY, f64::min);
        counts.push(Count {
            name: scenario.name.clone(),
            per_request,
            rounds,
        });
    }
    drop(envoy);
    report(suite, &counts, out, requests, started.elapsed())
}

fn report(
    suite: &Suite,
    counts: &[Count],
    out: &Path,
    requests: usize,
    elapsed: Duration,
) -> Result<()> {
    let find = |name: &str| {
        counts
            .iter()
            .find(|count| count.name == name)
            .map(|count| count.per_request)
            .ok_or_else(|| Error::new(format!("no scenario {name}")))
    };
    let baseline = counts.first().map_or(f64::NAN, |count| count.per_request);
    println!(
        "{:<24} {:>14} {:>12} {:>10}",
        "scenario", "instr/request", "vs baseline", "ratio"
    );
    let mut scenarios = Vec::new();
    for count in counts {
        println!(
            "{:<24} {:>14.0} {:>+12.0} {:>10.3}",
            count.name,
            count.per_request,
            count.per_request - baseline,
            baseline / count.per_request
        );
        scenarios.push(json!({
            "name": count.name,
            "instructions_per_request": count.per_request.round(),
            "over_baseline": (count.per_request - baseline).round(),
            "ratio_vs_baseline": round3(baseline / count.per_request),
            "rounds": count.rounds.iter().map(|r| r.round()).collect::<Vec<_>>(),
        }));
    }
    let mut comparisons = Vec::new();
    for comparison in &suite.comparisons {
        let ratio = find(comparison.baseline)? / find(comparison.scenario)?;
        println!(
            "instructions: {} / {} -> {ratio:.3}",
            comparison.scenario, comparison.baseline
        );
        comparisons.push(json!({
            "scenario": comparison.scenario,
            "baseline": comparison.baseline,
            "ratio": round3(ratio),
        }));
    }
    let json: Value = json!({
        "suite": suite.name,
        "method": "user-space instructions per request under valgrind's callgrind (instrumentation on only around each scenario's requests, one keep-alive connection, after a warm-up); the smallest of the rounds",
        "requests_per_round": requests,
        "rounds": ROUNDS,
        "ratio": "baseline's instructions per request divided by the scenario's",
        "elapsed_s": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        "scenarios": scenarios,
        "comparisons": comparisons,
    });
    let path = out.join(format!("{}-instructions.json", suite.name));
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .map_err(|error| Error::new(format!("writing {}: {error}", path.display())))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn callgrind_control(pid: u32, arguments: &[&str]) -> Result<()> {
    let output = Command::new("callgrind_control")
        .args(arguments)
        .arg(pid.to_string())
        .output()
        .map_err(|error| Error::new(format!("running callgrind_control: {error}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "callgrind_control {arguments:?} {pid} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// The instruction total of the one dump in `dir` (removed after reading).
fn take_dump(dir: &Path) -> Result<u64> {
    let dumps: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|error| Error::new(format!("reading {}: {error}", dir.display())))?
        .flatten()
        .map(|entry| entry.path())
        // Dumps made on request are `callgrind.<pid>.<n>`; `callgrind.<pid>` itself is the
        // end-of-process dump.
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.split('.').count() == 3)
        })
        .collect();
    let [dump] = dumps.as_slice() else {
        return Err(Error::new(format!(
            "expected one callgrind dump in {}, found {:?}",
            dir.display(),
            dumps
        )));
    };
    let text = std::fs::read_to_string(dump)
        .map_err(|error| Error::new(format!("reading {}: {error}", dump.display())))?;
    std::fs::remove_file(dump)
        .map_err(|error| Error::new(format!("removing {}: {error}", dump.display())))?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|count| count.parse::<u64>().ok())
        })
        .ok_or_else(|| Error::new(format!("no summary line in {}", dump.display())))
}

/// The requests a scenario sends: its fixed headers, plus for a token rotation the next
/// token of its file each time.
struct RequestSource {
    headers: Vec<(String, String)>,
    tokens: Vec<String>,
    next: usize,
}

impl RequestSource {
    fn new(load: &Load) -> Result<Self> {
        let (headers, tokens) = match load {
            Load::Fixed(headers) => (headers.clone(), Vec::new()),
            Load::Tokens { file, headers } => {
                let text = std::fs::read_to_string(file)
                    .map_err(|error| Error::new(format!("reading {}: {error}", file.display())))?;
                (
                    headers.clone(),
                    text.lines().map(str::to_owned).collect::<Vec<_>>(),
                )
            }
        };
        Ok(Self {
            headers,
            tokens,
            next: 0,
        })
    }

    fn request(&mut self) -> String {
        let mut head = format!("GET {REQUEST_PATH} HTTP/1.1\r\nhost: localhost\r\n");
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.tokens.is_empty() {
            let token = self
                .tokens
                .get(self.next % self.tokens.len())
                .map_or("", String::as_str);
            self.next += 1;
            head.push_str(&format!("authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        head
    }
}

/// Sends `count` requests one after another over one keep-alive connection; every answer
/// must be a 200 (a scenario that starts failing would be counting something else).
fn send(port: u16, source: &mut RequestSource, count: usize) -> Result<()> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    for _ in 0..count {
        writer.write_all(source.request().as_bytes())?;
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status = status_line.split_whitespace().nth(1).unwrap_or_default();
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body)?;
        if status != "200" {
            return Err(Error::new(format!(
                "port {port} answered {} under callgrind: {}",
                status_line.trim_end(),
                String::from_utf8_lossy(&body)
            )));
        }
    }
    Ok(())
}
