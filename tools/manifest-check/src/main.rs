//! manifest-check: render the kustomize tree, validate it strictly, run the Rego policies.
//!
//!   manifest-check render   <kustomize-dir>          rendered objects as a YAML stream
//!   manifest-check validate <kustomize-dir>...       schemas + policies; exit 1 on any finding
//!   manifest-check policy-test [policy-dir]          every `test_*` rule (like `conftest verify`)
//!   manifest-check schemas  <out-dir>                CRD schemas in kubeconform's layout
//!   manifest-check promtool-prep <dir> <tests> <out> PrometheusRule specs as promtool rule files,
//!                                                    the tests next to them, and a check that
//!                                                    every alert has a firing and a silent test
//!   manifest-check envoyfilter-check <dir>...        EnvoyFilters: order contract (Istio patch
//!                                                    simulation), module ConfigMaps (< 1 MiB,
//!                                                    sha256, mounts), `envoy --mode validate`,
//!                                                    rate-limit service config (copy, mount,
//!                                                    descriptor agreement), local reply
//!                                                    mappers (what each one rewrites)
//!   manifest-check pin-modules <dir>                 record dist/*.wasm.sha256 in the manifests

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use manifest_check::{catalog, envoyfilter, kustomize, policy, repo_root};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("manifest-check: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args
        .split_first()
        .ok_or_else(|| anyhow!("usage: manifest-check render|validate|policy-test|schemas ..."))?;
    match cmd.as_str() {
        "render" => {
            for dir in rest {
                for o in kustomize::render(Path::new(dir))? {
                    // JSON documents in a YAML stream: no YAML 1.1 surprises (`no`, `on`)
                    // for whatever reads it next (kubeconform, conftest, kubectl).
                    println!("---\n{}", serde_json::to_string(&o)?);
                }
            }
            Ok(true)
        }
        "validate" => validate(rest),
        "policy-test" => {
            let dir = rest
                .first()
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("policy"));
            let results = policy::run_tests(&dir)?;
            let failed: Vec<_> = results.iter().filter(|(_, ok)| !ok).collect();
            for (name, _) in &failed {
                println!("FAIL {name}");
            }
            println!(
                "rego tests: {} passed, {} failed",
                results.len() - failed.len(),
                failed.len()
            );
            Ok(failed.is_empty() && !results.is_empty())
        }
        "schemas" => {
            let out = rest.first().ok_or_else(|| anyhow!("schemas <out-dir>"))?;
            let n = catalog()?.write_crd_catalog(Path::new(out))?;
            println!("wrote {n} CRD schemas under {out}");
            Ok(true)
        }
        "promtool-prep" => {
            let [dir, tests, out] = rest else {
                return Err(anyhow!(
                    "promtool-prep <kustomize-dir> <tests-dir> <out-dir>"
                ));
            };
            manifest_check::promtool::prepare(Path::new(dir), Path::new(tests), Path::new(out))
        }
        "envoyfilter-check" => envoyfilter_check(rest),
        "pin-modules" => {
            let dir = rest.first().ok_or_else(|| anyhow!("pin-modules <dir>"))?;
            let changed = envoyfilter::pin_modules(Path::new(dir), &envoyfilter::dist_dir())?;
            for c in &changed {
                println!("pinned {c}");
            }
            println!("pin-modules: {} module record(s) updated", changed.len());
            Ok(true)
        }
        other => Err(anyhow!("unknown command {other}")),
    }
}

fn validate(dirs: &[String]) -> Result<bool> {
    let cat = catalog()?;
    let mut pol = policy::Policies::load(&repo_root().join("policy"))?;
    let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    let report = manifest_check::check(&cat, &mut pol, &dirs)?;
    for f in &report.findings {
        println!("{f}");
    }
    println!(
        "manifest-check: {} objects, {} findings",
        report.objects,
        report.findings.len()
    );
    Ok(report.findings.is_empty() && report.objects > 0)
}

/// The EnvoyFilter checks over the objects of `dirs` (envoyfilter-manifests/ and istio/,
/// whose Deployment mounts the modules).
fn envoyfilter_check(dirs: &[String]) -> Result<bool> {
    let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    let objs = envoyfilter::render_all(&dirs)?;
    let envoy = envoyfilter::envoy_bin();
    let dist = envoyfilter::dist_dir();
    let findings = envoyfilter::check_all(&objs, &envoy, &dist)?;
    for f in &findings {
        println!("{f}");
    }
    if findings.is_empty() {
        let (cfg, results) = envoyfilter::simulate(&objs, envoyfilter::Baseline::FULL)?;
        println!("chain: {}", cfg.http_filter_names().join(" -> "));
        println!(
            "envoyfilter-check: {} patches applied, order contract holds on {} baselines, \
             module ConfigMaps pinned and mounted, {} --mode validate accepts the patched \
             configuration ({} wasm filters configured), rate-limit service config shipped \
             byte for byte, mounted as envoyproxy/ratelimit reads it, descriptors agree, \
             {} local reply mappers each match only their replies",
            results.len(),
            envoyfilter::Baseline::ALL.len(),
            envoy.display(),
            envoyfilter::wasm_modules(&cfg).len(),
            manifest_check::local_reply::mappers(&objs)?.len(),
        );
    }
    Ok(findings.is_empty())
}
