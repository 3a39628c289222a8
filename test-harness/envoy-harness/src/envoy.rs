//! The real Envoy, one process per test.
//!
//! A config template names the ports it needs (`{{port:admin}}`, `{{port:listener}}`, ...);
//! the harness picks free loopback ports for them, fills in `{{var:NAME}}` values and
//! `{{dir}}` (the process's private temp directory, for files Envoy watches), writes the
//! config, starts `$ENVOY_BIN` and waits until the admin endpoint answers `/ready`.
//!
//! Lifetime: dropping an [`EnvoyProcess`] always stops Envoy (SIGTERM, then SIGKILL) and
//! reaps it; when the dropping thread is panicking (a failed test), the tail of Envoy's log
//! goes to stderr and the temp directory is kept for a post-mortem. If the test process
//! dies without unwinding, the kernel kills Envoy for us (`PR_SET_PDEATHSIG`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::client;
use crate::error::{Context, Error, Result};
use crate::paths;

/// Envoy with V8 needs 1-3 s to start here; parallel tests on two cores make it slower.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long Envoy gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Another process can take a port between our probe and Envoy's bind; start again then.
const START_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 80;
const CONFIG_FILE: &str = "envoy.yaml";
const LOG_FILE: &str = "envoy.log";

/// Starts Envoy from a template; see the module docs for the placeholders.
pub struct EnvoyBuilder {
    template: String,
    vars: BTreeMap<String, String>,
    files: Vec<(String, String)>,
    concurrency: u32,
    log_level: String,
    cpu: Option<usize>,
    extra_args: Vec<String>,
    /// A program Envoy runs under (e.g. valgrind), with its arguments.
    wrapper: Vec<String>,
    ready_timeout: Duration,
}

pub struct EnvoyProcess {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    ports: BTreeMap<String, u16>,
    vars: BTreeMap<String, String>,
    log_path: PathBuf,
    ready_timeout: Duration,
}

// === impl EnvoyBuilder ===

impl EnvoyBuilder {
    pub fn new(template: impl Into<String>) -> Self {
        Self {
            template: template.into(),
            vars: BTreeMap::new(),
            files: Vec::new(),
            concurrency: 1,
            log_level: "info".to_owned(),
            cpu: None,
            extra_args: Vec::new(),
            wrapper: Vec::new(),
            ready_timeout: READY_TIMEOUT,
        }
    }

    /// Runs Envoy under `program` (e.g. `["valgrind", "--tool=callgrind"]`): the command
    /// becomes the wrapper, then Envoy's path and arguments. The pid is the wrapper's, which
    /// for valgrind is the instrumented Envoy itself.
    pub fn wrapper<S: Into<String>>(mut self, program: impl IntoIterator<Item = S>) -> Self {
        self.wrapper = program.into_iter().map(Into::into).collect();
        self
    }

    /// How long start-up may take before it counts as failed (default 20 s; an
    /// instrumented Envoy needs minutes).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// A value for `{{var:NAME}}`.
    pub fn var(mut self, name: &str, value: impl ToString) -> Self {
        self.vars.insert(name.to_owned(), value.to_string());
        self
    }

    /// A file written into `{{dir}}` before Envoy starts, with the same placeholders
    /// filled in (for example the first LDS resource of a file-based dynamic config).
    pub fn file(mut self, name: &str, template: impl Into<String>) -> Self {
        self.files.push((name.to_owned(), template.into()));
        self
    }

    /// Worker threads (default 1).
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// Envoy's `--log-level` (default `info`, which shows the wasm modules' info lines).
    pub fn log_level(mut self, level: &str) -> Self {
        level.clone_into(&mut self.log_level);
        self
    }

    /// Pins Envoy to one CPU, so a benchmark's load generator can have the other.
    pub fn pin_to_cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// Any further Envoy command-line argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Starts Envoy and waits until it is ready.
    ///
    /// Spawn from the thread that will also drop the process: the kernel's parent-death
    /// signal fires when the *spawning thread* exits.
    pub fn start(self) -> Result<EnvoyProcess> {
        let envoy_bin = paths::envoy_bin()?;
        let mut attempt = 1;
        loop {
            match self.start_once(&envoy_bin) {
                Ok(envoy) => return Ok(envoy),
                Err(StartError::PortTaken(_)) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "envoy-harness: another process took a port between its choice and \
                         Envoy's bind; starting again with new ports"
                    );
                    attempt += 1;
                }
                Err(StartError::PortTaken(error) | StartError::Other(error)) => {
                    return Err(error.context("starting Envoy"))
                }
            }
        }
    }

    fn start_once(&self, envoy_bin: &Path) -> Result<EnvoyProcess, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("envoy-harness-")
            .tempdir()?;
        let dir_path = dir.path().to_path_buf();

        // Hold every probe socket until all ports are chosen, so two names never get the
        // same port; release them just before Envoy binds.
        let mut port_names = Vec::new();
        collect_port_names(&self.template, &mut port_names)?;
        for (_, file) in &self.files {
            collect_port_names(file, &mut port_names)?;
        }
        if !port_names.iter().any(|name| name == "admin") {
            return Err(Error::new("the config template has no {{port:admin}}").into());
        }
        let mut probes = Vec::new();
        let mut ports = BTreeMap::new();
        for name in port_names {
            let probe = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
            ports.insert(name, probe.local_addr()?.port());
            probes.push(probe);
        }

        let mut envoy = EnvoyProcess {
            child: None,
            log_path: dir_path.join(LOG_FILE),
            ready_timeout: self.ready_timeout,
            dir: Some(dir),
            dir_path,
            ports,
            vars: self.vars.clone(),
        };
        for (name, template) in &self.files {
            let contents = envoy.render(template)?;
            envoy.write_file(name, &contents)?;
        }
        let config = envoy.render(&self.template)?;
        let config_path = envoy.dir_path.join(CONFIG_FILE);
        std::fs::write(&config_path, config).context("writing the Envoy config")?;
        drop(probes);

        let log = File::create(&envoy.log_path)?;
        let mut command = match self.wrapper.split_first() {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(envoy_bin);
                command
            }
            None => Command::new(envoy_bin),
        };
        command
            .arg("--config-path")
            .arg(&config_path)
            .args(["--concurrency", &self.concurrency.to_string()])
            .args(["--log-level", &self.log_level])
            // Tests run in parallel: each Envoy gets its own base id, and hot restart (the
            // only user of the shared memory the base id names) is off, so a killed Envoy
            // leaves nothing behind that a later one could trip over.
            .args(["--base-id", &unique_base_id().to_string()])
            .arg("--disable-hot-restart")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        configure_child_process(&mut command, self.cpu)?;
        envoy.child = Some(command.spawn().with_context(|| {
            format!(
                "spawning {} (run `make envoy` if it is broken)",
                envoy_bin.display()
            )
        })?);

        match envoy.wait_ready() {
            Ok(()) => Ok(envoy),
            Err(error) => {
                // Stopped before reading, so the log is complete.
                envoy.stop();
                let log = envoy.log();
                let tail = tail(&log, LOG_TAIL_LINES);
                let error = Error::new(format!("{error}\n---- Envoy log tail ----\n{tail}\n----"));
                // Only worth a retry if the port is one the harness chose (not, say, a fixed
                // port from a var that something else holds).
                let ours = envoy.ports.values().any(|port| port_taken(&log, *port));
                if ours {
                    Err(StartError::PortTaken(error))
                } else {
                    Err(StartError::Other(error))
                }
            }
        }
    }
}

enum StartError {
    PortTaken(Error),
    Other(Error),
}

impl<E: Into<Error>> From<E> for StartError {
    fn from(error: E) -> Self {
        Self::Other(error.into())
    }
}

// === impl EnvoyProcess ===

impl EnvoyProcess {
    /// Starts Envoy from a template with no `{{var:...}}` placeholders.
    pub fn start(config_yaml_template: &str) -> Result<Self> {
        EnvoyBuilder::new(config_yaml_template).start()
    }

    pub fn builder(config_yaml_template: impl Into<String>) -> EnvoyBuilder {
        EnvoyBuilder::new(config_yaml_template)
    }

    /// The port chosen for `{{port:name}}`.
    pub fn port(&self, name: &str) -> Result<u16> {
        self.ports
            .get(name)
            .copied()
            .ok_or_else(|| Error::new(format!("the config has no {{{{port:{name}}}}}")))
    }

    pub fn admin_port(&self) -> u16 {
        // start() refuses templates without an admin port.
        self.ports.get("admin").copied().unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The private directory behind `{{dir}}`.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// `GET` on the admin endpoint, e.g. `admin_get("/stats?filter=wasm")`; the body, or an
    /// error for any status but 200.
    pub fn admin_get(&self, path_and_query: &str) -> Result<String> {
        let response = client::get(self.admin_port(), path_and_query)?;
        if response.status != 200 {
            return Err(Error::new(format!(
                "admin {path_and_query} answered {}: {}",
                response.status,
                response.body_text()
            )));
        }
        Ok(response.body_text())
    }

    /// The value of one counter or gauge, `None` if Envoy has no stat of that name.
    pub fn stat(&self, name: &str) -> Result<Option<u64>> {
        let filter = format!("^{}$", escape_regex(name));
        let body = self.admin_get(&format!("/stats?filter={}", percent_encode(&filter)))?;
        for line in body.lines() {
            if let Some((stat, value)) = line.split_once(": ") {
                if stat == name {
                    let value = value.trim().parse().map_err(|_| {
                        Error::new(format!("stat {name} has a non-numeric value {value:?}"))
                    })?;
                    return Ok(Some(value));
                }
            }
        }
        Ok(None)
    }

    /// `Some` once Envoy has exited (it then stays reaped), `None` while it runs.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Err(Error::new("Envoy was already stopped")),
        }
    }

    /// CPU time Envoy has used so far, all threads. A benchmark divides it by requests
    /// served: on a shared, noisy machine CPU per request is far steadier than requests
    /// per second.
    ///
    /// Read from each thread's `/proc/<pid>/task/<tid>/schedstat` (the scheduler's own
    /// nanosecond run time): `/proc/<pid>/stat` counts 10 ms ticks, which over a two-second
    /// run is a 1 % error on its own. A thread that exits during the run takes its time
    /// with it, which Envoy's long-lived threads do not; without schedstat (a kernel built
    /// without it) the tick counts are used.
    pub fn cpu_time(&self) -> Result<Duration> {
        let pid = self
            .pid()
            .ok_or_else(|| Error::new("Envoy was already stopped"))?;
        match schedstat_cpu_time(pid) {
            Some(time) => Ok(time),
            None => tick_cpu_time(pid),
        }
    }

    /// Where Envoy's stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Envoy's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Fills in the placeholders of `template` with this process's ports, vars and dir,
    /// e.g. for an LDS update. Unlike at start, unknown port names are an error.
    pub fn render(&self, template: &str) -> Result<String> {
        substitute(template, |placeholder| {
            if placeholder == "dir" {
                return Ok(self.dir_path.display().to_string());
            }
            if let Some(name) = placeholder.strip_prefix("port:") {
                return self.port(name).map(|port| port.to_string());
            }
            if let Some(name) = placeholder.strip_prefix("var:") {
                return self
                    .vars
                    .get(name)
                    .cloned()
                    .ok_or_else(|| Error::new(format!("no value given for {{{{var:{name}}}}}")));
            }
            Err(Error::new(format!(
                "unknown placeholder {{{{{placeholder}}}}}"
            )))
        })
    }

    /// Replaces `{{dir}}/<name>` atomically (write a sibling, then rename), the way
    /// Envoy's file-based xDS expects updates to arrive in a watched directory.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<()> {
        let target = self.dir_path.join(name);
        let staging = self.dir_path.join(format!(".{name}.staging"));
        std::fs::write(&staging, contents)
            .and_then(|()| std::fs::rename(&staging, &target))
            .with_context(|| format!("writing {}", target.display()))
    }

    /// Stops Envoy now (it is also stopped on drop).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own, not yet reaped child: the pid cannot have been
            // reused by another process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SIGKILL and reap; errors here mean it is already gone.
        let _ = child.kill();
        let _ = child.wait();
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(Error::new(format!(
                        "Envoy exited during start-up ({status})"
                    )));
                }
            }
            if let Ok(response) = client::get(self.admin_port(), "/ready") {
                if response.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "Envoy was not ready within {}s (admin port {})",
                    self.ready_timeout.as_secs(),
                    self.admin_port()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            // Keep the directory (config, full log) for a post-mortem.
            let kept = self.dir.take().map(tempfile::TempDir::keep);
            eprintln!(
                "---- Envoy log tail ({} lines; full log and config kept in {}) ----\n{}\n----",
                LOG_TAIL_LINES,
                kept.as_deref().unwrap_or(&self.dir_path).display(),
                tail(&log, LOG_TAIL_LINES)
            );
        }
    }
}

/// Polls `condition` every 50 ms until it is true; an error names `what` and the timeout.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match condition() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            let detail = last_error
                .map(|error| format!(" (last error: {error})"))
                .unwrap_or_default();
            return Err(Error::new(format!(
                "timed out after {timeout:?} waiting for {what}{detail}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Base ids must differ between Envoys running at the same time on this machine: the pid
/// separates test processes (pid_max is at most 2^22, so pid * 1000 fits in a u32), the
/// counter separates the Envoys of one process.
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
    std::process::id().wrapping_mul(1000).wrapping_add(sequence)
}

/// The sum of every thread's run time in `/proc/<pid>/task/*/schedstat` (first field,
/// nanoseconds); `None` when the kernel does not provide it.
fn schedstat_cpu_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total_ns: u64 = 0;
    for task in tasks.flatten() {
        // A thread may exit between the listing and the read: it is skipped.
        let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total_ns += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total_ns))
}

/// utime + stime of `/proc/<pid>/stat`, in clock ticks (all threads).
fn tick_cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces;
    // utime and stime are fields 14 and 15 of the whole line.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .ok_or_else(|| Error::new(format!("unexpected /proc/{pid}/stat: {stat}")))
    };
    let total_ticks = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_second = u64::try_from(ticks_per_second)
        .ok()
        .filter(|&tps| tps > 0)
        .ok_or_else(|| Error::new("sysconf(_SC_CLK_TCK) failed"))?;
    Ok(Duration::from_secs(total_ticks / ticks_per_second)
        + Duration::from_nanos((total_ticks % ticks_per_second) * 1_000_000_000 / ticks_per_second))
}

/// Runs in the child between fork and exec. Above all, Envoy must not outlive the test:
/// the kernel sends it SIGKILL when the thread that spawned it exits, however that
/// happens (panic=abort, SIGKILL of the test binary, ...). Optionally pins it to one CPU.
fn configure_child_process(command: &mut Command, cpu: Option<usize>) -> io::Result<()> {
    let parent = libc::pid_t::try_from(std::process::id())
        .map_err(|_| io::Error::other("pid does not fit pid_t"))?;
    // Built before fork: only async-signal-safe calls may run between fork and exec.
    let cpu_set = match cpu {
        Some(cpu) if cpu < usize::try_from(libc::CPU_SETSIZE).unwrap_or_default() => {
            // SAFETY: cpu_set_t is plain bit storage, all-zero is the empty set, and
            // CPU_SET's index is in range (checked above).
            let set = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                set
            };
            Some(set)
        }
        Some(cpu) => return Err(io::Error::other(format!("no such CPU {cpu}"))),
        None => None,
    };
    // SAFETY: the closure only makes raw system calls (prctl, getppid, setpgid,
    // sched_setaffinity), which are async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // Its own process group: a terminal's Ctrl-C reaches the harness, which stops
            // Envoy itself (and the parent-death signal covers a harness that dies first).
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(set) = cpu_set.as_ref() {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

fn collect_port_names(template: &str, names: &mut Vec<String>) -> Result<()> {
    substitute(template, |placeholder| {
        if let Some(name) = placeholder.strip_prefix("port:") {
            if !names.iter().any(|known| known == name) {
                names.push(name.to_owned());
            }
        }
        Ok(String::new())
    })
    .map(drop)
}

/// Replaces every `{{placeholder}}` by `resolve(placeholder)`.
fn substitute(template: &str, mut resolve: impl FnMut(&str) -> Result<String>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let (before, from_braces) = rest.split_at(start);
        out.push_str(before);
        let inner = from_braces.get(2..).unwrap_or_default();
        let end = inner
            .find("}}")
            .ok_or_else(|| Error::new("unterminated {{ in the config template"))?;
        let (placeholder, after) = inner.split_at(end);
        out.push_str(&resolve(placeholder.trim())?);
        rest = after.get(2..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether Envoy's log says it could not bind `127.0.0.1:<port>` because it was in use.
fn port_taken(log: &str, port: u16) -> bool {
    let address = format!("127.0.0.1:{port}'");
    log.lines()
        .any(|line| line.contains("Address already in use") && line.contains(&address))
}

/// The last `lines` lines of the log, without the indented inventory Envoy prints at start
/// (extensions, header maps: ~70 lines that would push the interesting ones out).
fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().filter(|line| !line.contains("]   ")).collect();
    all.get(all.len().saturating_sub(lines)..)
        .unwrap_or_default()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_placeholders_and_rejects_unterminated_ones() {
        let rendered = substitute("a {{ port:x }} b {{var:Y}}", |p| Ok(format!("<{p}>"))).unwrap();
        assert_eq!(rendered, "a <port:x> b <var:Y>");
        assert!(substitute("a {{port:x", |_| Ok(String::new())).is_err());
        // Single braces (JSON inside YAML) are left alone.
        assert_eq!(
            substitute("{\"a\":{}}", |_| Ok(String::new())).unwrap(),
            "{\"a\":{}}"
        );
    }

    #[test]
    fn collects_each_port_name_once() {
        let mut names = Vec::new();
        collect_port_names(
            "{{port:admin}} {{port:a}} {{port:admin}} {{dir}}",
            &mut names,
        )
        .unwrap();
        assert_eq!(names, ["admin", "a"]);
    }

    #[test]
    fn only_bind_failures_on_our_ports_count_as_taken() {
        let log = "[critical][main] error `cannot bind '127.0.0.1:18082': Address already in use`";
        assert!(port_taken(log, 18082));
        assert!(!port_taken(log, 1808));
        assert!(!port_taken(
            "cannot bind '127.0.0.1:18082': Permission denied",
            18082
        ));
    }

    #[test]
    fn stat_filters_are_anchored_and_escaped() {
        assert_eq!(escape_regex("listener_manager.lds.update_rejected"), {
            "listener_manager\\.lds\\.update_rejected"
        });
        assert_eq!(percent_encode("^a\\.b$"), "%5Ea%5C.b%24");
    }
}
