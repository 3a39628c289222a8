//! Offline validation of the `istio/` manifests: render the kustomize tree, validate every
//! object against the strict schema of its kind, and run the Rego policies. See the crate
//! README for where each schema comes from.

pub mod envoyfilter;
pub mod kustomize;
pub mod local_reply;
pub mod policy;
pub mod promtool;
pub mod ratelimit;
pub mod schemas;

use std::path::{Path, PathBuf};

/// The repository root: `SVC_GATEWAY_ROOT` (exported by the Makefile) or two levels up.
pub fn repo_root() -> PathBuf {
    std::env::var_os("SVC_GATEWAY_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The strict core schema catalog: `K8S_SCHEMA_DIR`, or the `kubernetes-validate` wheel in
/// the Makefile's virtualenv (`build/venv`).
pub fn k8s_schema_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("K8S_SCHEMA_DIR") {
        return Ok(PathBuf::from(d));
    }
    let lib = repo_root().join("build/venv/lib");
    for e in std::fs::read_dir(&lib)
        .map_err(|e| anyhow::anyhow!("{}: {e} (run `make manifest-deps`)", lib.display()))?
    {
        let d = e?
            .path()
            .join("site-packages/kubernetes_validate/kubernetes-json-schema")
            .join(format!("v{K8S_VERSION}-local-strict"));
        if d.is_dir() {
            return Ok(d);
        }
    }
    anyhow::bail!("kubernetes-validate schemas for {K8S_VERSION} not found under {} (run `make manifest-deps`)", lib.display())
}

/// The Kubernetes version we validate against (EKS 1.33).
pub const K8S_VERSION: &str = "1.33.0";

pub fn catalog() -> anyhow::Result<schemas::Catalog> {
    let crds = schemas::locate_crd_sources(&repo_root())?;
    schemas::Catalog::load(&k8s_schema_dir()?, &crds)
}

/// Every finding for a set of kustomize entry points: schema violations and policy denials
/// per object, then the policies over the whole render (like `conftest test --combine`).
pub struct Report {
    pub objects: usize,
    pub findings: Vec<String>,
}

pub fn check(
    cat: &schemas::Catalog,
    pol: &mut policy::Policies,
    dirs: &[PathBuf],
) -> anyhow::Result<Report> {
    let mut all = Vec::new();
    for dir in dirs {
        all.extend(kustomize::render(dir)?);
    }
    check_objects(cat, pol, &all)
}

pub fn check_objects(
    cat: &schemas::Catalog,
    pol: &mut policy::Policies,
    all: &[serde_json::Value],
) -> anyhow::Result<Report> {
    let mut findings = Vec::new();
    for o in all {
        let id = kustomize::id(o);
        if let Err(errs) = cat.validate(o) {
            findings.extend(errs.into_iter().map(|e| format!("SCHEMA {id}: {e}")));
        }
        findings.extend(
            pol.deny(o)?
                .into_iter()
                .map(|m| format!("POLICY {id}: {m}")),
        );
    }
    findings.extend(
        pol.deny_combined(all, "rendered")?
            .into_iter()
            .map(|m| format!("POLICY (combined): {m}")),
    );
    Ok(Report {
        objects: all.len(),
        findings,
    })
}
