//! The rate-limit service of the local gateway:
//! `rls-peer --config <yaml> [--port <port>] [--log]`.
//! Production runs envoyproxy/ratelimit with Redis; this stand-in applies the same YAML.
//! `--log` prints every call it receives (domain, descriptors, addends), one line each.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("rls-peer: {message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut config: Option<PathBuf> = None;
    let mut port: u16 = 0;
    let mut log_calls = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--port" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = value
                    .parse()
                    .map_err(|_| format!("--port: `{value}` is not a port number"))?;
            }
            "--log" => log_calls = true,
            "-h" | "--help" => {
                println!(
                    "usage: rls-peer --config <ratelimit-service.yaml> [--port <port>] [--log]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    let config = config.ok_or("--config <ratelimit-service.yaml> is required")?;
    let rls_config = rls_peer::load_yaml_file(&config).map_err(|e| e.to_string())?;
    let peer = rls_peer::RlsPeer::start(rls_config, port).map_err(|e| e.to_string())?;
    // One line a supervisor (the Makefile, the envoy harness) can wait for and parse.
    println!(
        "rls-peer listening on {} (domain {}, config {})",
        peer.addr(),
        peer.domain(),
        config.display()
    );
    // Serves until the process is signalled; the peer's own thread does the work.
    let mut logged = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        if !log_calls {
            continue;
        }
        let received = peer.received();
        for call in received.iter().skip(logged) {
            println!(
                "rls-peer: domain={} hits_addend={} descriptors={:?} descriptor_hits_addends={:?}",
                call.domain, call.hits_addend, call.descriptors, call.descriptor_hits_addends
            );
        }
        logged = received.len();
    }
}
