//! The jwt-authz suite: bare Envoy, Envoy's native `jwt_authn` (same issuer, same keys,
//! inline JWKS) and jwt-authz (inline JWKS), for RS256 and ES256, with one repeated token
//! (cache hit) and a different token per request (cold verify), plus the memory phase: Envoy's
//! RSS before and after 100k unique tokens, and after another 100k.
//!
//! Tokens are minted at bench start (jwt-simple, pure Rust). A cold scenario's wrk sends a
//! different token per request by cycling through a file of `COLD_TOKENS` tokens, more than
//! `jwt_authn`'s LRU cache holds (4096), so it misses every time (its hit counter, reported
//! with the results, says so). jwt-authz's CLOCK cache keeps a share of a cycled pool alive
//! (about a third of 10k tokens hit when its cache was on), and a pool big enough to never
//! repeat would take minutes to mint for RS256; so its cold scenarios run with `cacheSize: 0`:
//! every request verifies, only the hashing and insertion of a miss are not paid.
//! The memory phase: the shipped configuration (cache 4096) and 2 x 100k ES256 tokens, never
//! repeated (ES256 mints at ~20 us a token), through Envoy's `verify_signature`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use envoy_harness::config::WasmFilter;
use envoy_harness::{Error, Result};
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

use super::{Comparison, Layout, Load, Marker, PhaseContext, PhaseOutcome, Scenario, Suite};

const ISSUER: &str = "https://auth.exchange.example";
const AUDIENCE: &str = "svc-trading-api";
/// Unique tokens per algorithm for the cold scenarios: above `jwt_authn`'s cache (4096).
const COLD_TOKENS: usize = 6_000;
/// Unique tokens of each half of the memory phase.
const MEMORY_TOKENS: usize = 100_000;
/// Name of the (unmeasured) listener the memory phase loads.
pub const MEMORY_SCENARIO: &str = "jwt-authz-es256-memory";
/// The memory phase passes when the second 100k grow RSS by at most this much.
const FLAT_MAX_GROWTH_MIB: f64 = 2.0;

/// jwt-authz's cache counters, and its allowed counter (all VMs share the names; the
/// runner snapshots them around each run, when only one scenario is loaded).
fn authz_counters() -> Vec<(&'static str, String)> {
    vec![
        ("allowed", "wasmcustom.jwt_authz_allowed_total".to_owned()),
        (
            "cache_hits",
            "wasmcustom.jwt_authz_cache_hits_total".to_owned(),
        ),
        (
            "cache_misses",
            "wasmcustom.jwt_authz_cache_misses_total".to_owned(),
        ),
    ]
}

/// `jwt_authn`'s counters; `{prefix}` is the listener's stat prefix.
fn authn_counters() -> Vec<(&'static str, String)> {
    vec![
        ("allowed", "http.{prefix}.jwt_authn.allowed".to_owned()),
        (
            "cache_hits",
            "http.{prefix}.jwt_authn.jwt_cache_hit".to_owned(),
        ),
        (
            "cache_misses",
            "http.{prefix}.jwt_authn.jwt_cache_miss".to_owned(),
        ),
    ]
}

pub fn suite(token_dir: &Path, _layout: Layout) -> Result<Suite> {
    let started = Instant::now();
    let rsa = RS256KeyPair::generate(2048)
        .map_err(|error| Error::new(format!("RSA key: {error}")))?
        .with_key_id("bench-rsa-1");
    let ec = ES256KeyPair::generate().with_key_id("bench-ec-1");

    let rsa_tokens = mint(COLD_TOKENS, |i| rsa.sign(claims(ISSUER, i)))?;
    let rsa_seconds = started.elapsed().as_secs_f64();
    let ec_tokens = mint(COLD_TOKENS, |i| ec.sign(claims(ISSUER, i)))?;
    let ec_seconds = started.elapsed().as_secs_f64() - rsa_seconds;
    // Indexes after the cold pool's: no memory-phase token was ever seen before.
    let memory_tokens = mint(2 * MEMORY_TOKENS, |i| {
        ec.sign(claims(ISSUER, COLD_TOKENS + i))
    })?;
    let rsa_file = write_tokens(token_dir, "rs256.txt", &rsa_tokens)?;
    let ec_file = write_tokens(token_dir, "es256.txt", &ec_tokens)?;
    let memory_file = write_tokens(token_dir, "es256-memory.txt", &memory_tokens)?;
    // The cached scenarios repeat one token that is not in the cold files.
    let rsa_repeated = rsa
        .sign(claims(ISSUER, usize::MAX))
        .map_err(|error| Error::new(format!("signing: {error}")))?;
    let ec_repeated = ec
        .sign(claims(ISSUER, usize::MAX))
        .map_err(|error| Error::new(format!("signing: {error}")))?;
    println!(
        "suite jwt-authz: minted {} RS256 ({rsa_seconds:.1}s with the key), {} ES256 \
         ({ec_seconds:.1}s) and {} ES256 for the memory phase ({:.1}s in all)",
        COLD_TOKENS + 1,
        COLD_TOKENS + 1,
        2 * MEMORY_TOKENS,
        started.elapsed().as_secs_f64()
    );

    let jwks = json!({ "keys": [rsa_jwk(&rsa)?, ec_jwk(&ec)?] });
    let authz =
        WasmFilter::from_dist("jwt-authz", authz_config(&jwks, 4096).to_string())?.to_value();
    let authz_uncached =
        WasmFilter::from_dist("jwt-authz", authz_config(&jwks, 0).to_string())?.to_value();
    let authn = authn_filter(&jwks);

    let fixed = |token: &str| Load::Fixed(vec![("authorization".to_owned(), bearer(token))]);
    let cold = |file: &PathBuf| Load::Tokens {
        file: file.clone(),
        headers: Vec::new(),
    };
    let scenario = |name: &str, filter: Option<&Value>, load: Load, counters| Scenario {
        marker: if filter.is_some() {
            Marker::RequiresToken
        } else {
            Marker::Absent("www-authenticate")
        },
        counters,
        load,
        ..Scenario::new(name, filter.into_iter().cloned().collect())
    };
    // Budget pairs next to each other, so the interleaved order keeps them close in time.
    let scenarios = vec![
        scenario("bare", None, fixed(&rsa_repeated), Vec::new()),
        scenario(
            "jwt-authz-rs256-cached",
            Some(&authz),
            fixed(&rsa_repeated),
            authz_counters(),
        ),
        scenario(
            "jwt_authn-rs256-cached",
            Some(&authn),
            fixed(&rsa_repeated),
            authn_counters(),
        ),
        scenario(
            "jwt_authn-rs256-cold",
            Some(&authn),
            cold(&rsa_file),
            authn_counters(),
        ),
        scenario(
            "jwt-authz-rs256-cold",
            Some(&authz_uncached),
            cold(&rsa_file),
            authz_counters(),
        ),
        scenario(
            "jwt-authz-es256-cold",
            Some(&authz_uncached),
            cold(&ec_file),
            authz_counters(),
        ),
        scenario(
            "jwt_authn-es256-cold",
            Some(&authn),
            cold(&ec_file),
            authn_counters(),
        ),
        scenario(
            "jwt_authn-es256-cached",
            Some(&authn),
            fixed(&ec_repeated),
            authn_counters(),
        ),
        scenario(
            "jwt-authz-es256-cached",
            Some(&authz),
            fixed(&ec_repeated),
            authz_counters(),
        ),
        Scenario {
            measured: false,
            ..scenario(
                MEMORY_SCENARIO,
                Some(&authz),
                fixed(&ec_repeated),
                authz_counters(),
            )
        },
    ];
    let budget = |scenario, baseline, min_ratio| Comparison {
        scenario,
        baseline,
        min_ratio: Some(min_ratio),
    };
    let info = |scenario, baseline| Comparison {
        scenario,
        baseline,
        min_ratio: None,
    };
    Ok(Suite {
        name: "jwt-authz",
        scenarios,
        comparisons: vec![
            budget("jwt-authz-rs256-cached", "bare", 0.90),
            budget("jwt-authz-es256-cached", "bare", 0.90),
            budget("jwt-authz-rs256-cold", "jwt_authn-rs256-cold", 0.5),
            budget("jwt-authz-es256-cold", "jwt_authn-es256-cold", 0.5),
            info("jwt-authz-rs256-cached", "jwt_authn-rs256-cached"),
            info("jwt-authz-es256-cached", "jwt_authn-es256-cached"),
        ],
        default_rounds: 5,
        phase: Some(Box::new(move |context: &PhaseContext<'_>| {
            memory_phase(context, &memory_file)
        })),
        ..Suite::new("jwt-authz")
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn claims(issuer: &str, index: usize) -> JWTClaims<Map<String, Value>> {
    let mut custom = Map::new();
    custom.insert("scope".to_owned(), json!("trade:read"));
    custom.insert("client_id".to_owned(), json!("bench-client"));
    Claims::with_custom_claims(custom, jwt_simple::prelude::Duration::from_hours(1))
        .with_issuer(issuer)
        .with_subject(format!("user-{}", index % 1000))
        .with_audience(AUDIENCE)
        .with_jwt_id(format!("bench-{index}"))
}

/// `count` tokens from `sign(index)`, on two threads.
fn mint<F>(count: usize, sign: F) -> Result<Vec<String>>
where
    F: Fn(usize) -> std::result::Result<String, jwt_simple::Error> + Sync,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4);
    let chunk = count.div_ceil(threads);
    let parts: Vec<Result<Vec<String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|part| {
                let sign = &sign;
                scope.spawn(move || {
                    (part * chunk..((part + 1) * chunk).min(count))
                        .map(|i| sign(i).map_err(|error| Error::new(format!("signing: {error}"))))
                        .collect::<Result<Vec<String>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(Error::new("a minting thread panicked")))
            })
            .collect()
    });
    let mut tokens = Vec::with_capacity(count);
    for part in parts {
        tokens.extend(part?);
    }
    Ok(tokens)
}

fn write_tokens(dir: &Path, name: &str, tokens: &[String]) -> Result<PathBuf> {
    let path = dir.join(name);
    let mut text = tokens.join("\n");
    text.push('\n');
    std::fs::write(&path, text)
        .map_err(|error| Error::new(format!("writing {}: {error}", path.display())))?;
    Ok(path)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let index = ((n >> (18 - 6 * i)) & 63) as usize;
            out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'A')));
        }
    }
    out
}

fn ec_jwk(key: &ES256KeyPair) -> Result<Value> {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    let (x, y) = match (point.get(1..33), point.get(33..65)) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(Error::new("unexpected P-256 point encoding")),
    };
    Ok(
        json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
        "kid": key.key_id().clone().unwrap_or_default(), "x": base64url(x), "y": base64url(y)}),
    )
}

fn rsa_jwk(key: &RS256KeyPair) -> Result<Value> {
    let components = key.public_key().to_components();
    Ok(json!({"kty": "RSA", "alg": "RS256", "use": "sig",
        "kid": key.key_id().clone().unwrap_or_default(),
        "n": base64url(&components.n), "e": base64url(&components.e)}))
}

/// The rules of the shipped sample configuration (filters/jwt-authz/README.md): the bench
/// path is matched by `trade-read`, the fifth rule.
fn rules() -> Value {
    json!([
        {"name": "health", "pathPrefix": "/healthz", "anonymous": true},
        {"name": "withdrawals", "methods": ["POST"], "exactPath": "/api/v1/wallet/withdrawals",
         "audiencesAnyOf": ["svc-wallet"], "scopesAllOf": ["wallet:withdraw"],
         "maxAuthAgeSeconds": 300, "claimsEqual": {"acr": "mfa"}},
        {"name": "wallet-read", "methods": ["GET"], "pathPrefix": "/api/v1/wallet",
         "audiencesAnyOf": ["svc-wallet"], "scopesAllOf": ["wallet:read"]},
        {"name": "wallet-write", "pathPrefix": "/api/v1/wallet",
         "audiencesAnyOf": ["svc-wallet"], "scopesAllOf": ["wallet:write"]},
        {"name": "trade-read", "methods": ["GET"], "pathPrefix": "/api/v1/trade",
         "audiencesAnyOf": ["svc-trading-api"], "scopesAnyOf": ["trade:read", "trade:write"]},
        {"name": "trade-write", "pathPrefix": "/api/v1/trade",
         "audiencesAnyOf": ["svc-trading-api"], "scopesAllOf": ["trade:write"]},
        {"name": "risk", "pathPrefix": "/api/v1/risk",
         "audiencesAnyOf": ["svc-risk-control"], "scopesAllOf": ["risk:evaluate"]}
    ])
}

/// The sample configuration with the keys inline (no JWKS fetch); 4096 is the default cache.
fn authz_config(jwks: &Value, cache_size: u32) -> Value {
    json!({
        "issuers": [{"issuer": ISSUER, "algorithms": ["RS256", "ES256"], "jwks": jwks}],
        "clockSkewSeconds": 30,
        "realm": "api.exchange.example",
        "rules": rules(),
        "cacheSize": cache_size
    })
}

/// Envoy's own `jwt_authn` for the same issuer, audience and keys; its JWT cache on, as big
/// as jwt-authz's; the token forwarded as jwt-authz does.
fn authn_filter(jwks: &Value) -> Value {
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "idp": {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "local_jwks": {"inline_string": jwks.to_string()},
                    "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                    "forward": true,
                    "clock_skew_seconds": 30,
                    "jwt_cache_config": {"jwt_cache_size": 4096}
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
        }
    })
}

/// Envoy's RSS (`/proc/<pid>/status` VmRSS) and tcmalloc's allocated bytes (admin
/// `/memory`), in MiB.
fn memory(context: &PhaseContext<'_>) -> Result<(f64, f64)> {
    let pid = context
        .envoy
        .pid()
        .ok_or_else(|| Error::new("Envoy was already stopped"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| Error::new(format!("reading /proc/{pid}/status: {error}")))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .ok_or_else(|| Error::new("no VmRSS in /proc/<pid>/status"))?;
    let admin: Value = serde_json::from_str(&context.envoy.admin_get("/memory")?)?;
    let allocated = admin
        .get("allocated")
        .and_then(|value| value.as_str().and_then(|s| s.parse::<f64>().ok()))
        .unwrap_or(f64::NAN);
    Ok((rss_kib / 1024.0, allocated / 1_048_576.0))
}

/// `count` unique tokens from line `start` of `tokens` to `port`, in as many wrk runs as it
/// takes (wrk stops on time, not on a count): each run sends the tokens still missing, then
/// repeats its last one; jwt-authz's miss counter says how many new tokens it verified.
/// Returns (requests, failed requests, median requests/s).
fn unique_tokens(
    context: &PhaseContext<'_>,
    port: u16,
    tokens: &Path,
    start: u64,
    count: u64,
    mut rate: f64,
) -> Result<(u64, u64, f64)> {
    let misses = "wasmcustom.jwt_authz_cache_misses_total";
    let load = Load::Tokens {
        file: tokens.to_path_buf(),
        headers: Vec::new(),
    };
    let (mut sent, mut requests, mut failed, mut rates) = (0u64, 0u64, 0u64, Vec::new());
    // Within a connection's worth: the last requests of a run may still be in flight.
    while count.saturating_sub(sent) > u64::from(context.connections) {
        let remaining = count - sent;
        let seconds = (remaining as f64 / rate.max(500.0) * 1.1)
            .ceil()
            .clamp(1.0, 60.0);
        let before = context.envoy.stat(misses)?.unwrap_or(0);
        let sample = context.load(
            port,
            &load,
            std::time::Duration::from_secs(seconds as u64),
            start + sent,
            Some(remaining),
        )?;
        let verified = context
            .envoy
            .stat(misses)?
            .unwrap_or(0)
            .saturating_sub(before);
        if verified == 0 {
            return Err(Error::new(format!(
                "memory phase: no token verified in a {seconds}s run ({} requests, {} non-2xx); \
                 {}",
                sample.requests,
                sample.non_2xx,
                context.envoy.admin_get("/stats?filter=jwt_authz")?
            )));
        }
        sent += verified.min(remaining);
        requests += sample.requests;
        failed += sample.non_2xx + sample.socket_errors;
        rate = sample.requests_per_second;
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN);
    Ok((requests, failed, median))
}

/// 100k unique tokens, then another 100k, through jwt-authz (ES256, cache on), with Envoy's
/// memory before, between and after.
fn memory_phase(context: &PhaseContext<'_>, tokens: &Path) -> Result<PhaseOutcome> {
    let started = Instant::now();
    let port = context.port(MEMORY_SCENARIO)?;
    // Warm: the listener, the VM, the first allocations.
    let warm = context.load(
        port,
        &context.fixed_load(MEMORY_SCENARIO)?,
        std::time::Duration::from_secs(1),
        0,
        None,
    )?;
    let before = memory(context)?;
    let count = MEMORY_TOKENS as u64;
    // Cold verification is slower than the cached warm-up.
    let guess = warm.requests_per_second * 0.8;
    let first = unique_tokens(context, port, tokens, 0, count, guess)?;
    let after_first = memory(context)?;
    let second = unique_tokens(context, port, tokens, count, count, first.2)?;
    let after_second = memory(context)?;
    let failed = first.1 + second.1;

    let growth_first = after_first.0 - before.0;
    let growth_second = after_second.0 - after_first.0;
    let flat = growth_second <= FLAT_MAX_GROWTH_MIB && failed == 0;
    let lines = vec![
        format!(
            "memory, jwt-authz ES256 (cache 4096), 2 x {MEMORY_TOKENS} unique tokens ({} + {} requests at \
             ~{:.0} req/s, {failed} failed, {:.0}s): VmRSS {:.1} MiB -> {:.1} (+{:.1}) -> {:.1} \
             (+{:.1}); tcmalloc allocated {:.1} -> {:.1} -> {:.1} MiB",
            first.0,
            second.0,
            first.2,
            started.elapsed().as_secs_f64(),
            before.0,
            after_first.0,
            growth_first,
            after_second.0,
            growth_second,
            before.1,
            after_first.1,
            after_second.1,
        ),
        format!(
            "budget: memory flat (second 100k grow VmRSS <= {FLAT_MAX_GROWTH_MIB:.1} MiB) -> \
             +{growth_second:.1} MiB: {}",
            if flat { "within budget" } else { "BELOW BUDGET" }
        ),
    ];
    let round1 = |value: f64| (value * 10.0).round() / 10.0;
    Ok(PhaseOutcome {
        lines,
        within_budget: flat,
        json: json!({
            "memory": {
                "scenario": MEMORY_SCENARIO,
                "unique_tokens_per_step": MEMORY_TOKENS,
                "requests": [first.0, second.0],
                "requests_per_second": [round1(first.2), round1(second.2)],
                "failed_requests": failed,
                "vm_rss_mib": [round1(before.0), round1(after_first.0), round1(after_second.0)],
                "tcmalloc_allocated_mib": [round1(before.1), round1(after_first.1), round1(after_second.1)],
                "growth_first_mib": round1(growth_first),
                "growth_second_mib": round1(growth_second),
                "budget": {"max_growth_second_mib": FLAT_MAX_GROWTH_MIB, "within_budget": flat},
            }
        }),
    })
}
