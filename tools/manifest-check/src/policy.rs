//! Rego policies evaluated with `regorus`: the same `policy/*.rego` files conftest runs in
//! CI (package `main`, `deny contains msg if`, OPA v1 syntax).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

fn rego_files(dir: &Path, tests: bool) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rego"))
        .filter(|p| tests || !p.to_string_lossy().ends_with("_test.rego"))
        .collect();
    files.sort();
    Ok(files)
}

fn engine(dir: &Path, tests: bool) -> Result<regorus::Engine> {
    let mut e = regorus::Engine::new();
    // An unknown or failing builtin must fail the check, not quietly make a rule undefined.
    e.set_strict_builtin_errors(true);
    for f in rego_files(dir, tests)? {
        e.add_policy_from_file(&f)
            .map_err(|err| anyhow!("{}: {err}", f.display()))?;
    }
    Ok(e)
}

/// `deny` messages for one object (conftest evaluates each document as `input`).
pub struct Policies {
    engine: regorus::Engine,
}

impl Policies {
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(Self {
            engine: engine(dir, false)?,
        })
    }

    pub fn deny(&mut self, obj: &Value) -> Result<Vec<String>> {
        let input = regorus::Value::from_json_str(&obj.to_string()).map_err(|e| anyhow!("{e}"))?;
        self.engine.set_input(input);
        let v = self
            .engine
            .eval_rule("data.main.deny".into())
            .map_err(|e| anyhow!("evaluating data.main.deny: {e}"))?;
        let json: Value = serde_json::from_str(&v.to_json_str().map_err(|e| anyhow!("{e}"))?)?;
        Ok(match json {
            Value::Array(a) => a
                .into_iter()
                .map(|m| m.as_str().map_or(m.to_string(), str::to_owned))
                .collect(),
            _ => Vec::new(),
        })
    }
}

impl Policies {
    /// The whole render at once, shaped like `conftest test --combine` input
    /// (`[{path, contents}]`), for rules that need to see every object (mTLS STRICT present).
    pub fn deny_combined(&mut self, objs: &[Value], path: &str) -> Result<Vec<String>> {
        let docs: Vec<Value> = objs
            .iter()
            .map(|o| serde_json::json!({ "path": path, "contents": o }))
            .collect();
        self.deny(&Value::Array(docs))
    }
}

/// Runs every `test_*` rule of every package, like `opa test` / `conftest verify`.
/// Returns (name, passed) per test.
pub fn run_tests(dir: &Path) -> Result<Vec<(String, bool)>> {
    let mut e = engine(dir, true)?;
    let mut results = Vec::new();
    for f in rego_files(dir, true)?
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("_test.rego"))
    {
        let text = std::fs::read_to_string(f)?;
        let pkg = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .map(str::trim)
            .ok_or_else(|| anyhow!("{}: no package", f.display()))?
            .to_owned();
        let mut names: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("test_"))
            .filter_map(|l| l.split(|c: char| !(c.is_alphanumeric() || c == '_')).next())
            .map(|n| format!("test_{n}"))
            .collect();
        names.dedup();
        for n in names {
            let q = format!("data.{pkg}.{n}");
            let ok = match e.eval_rule(q.clone()) {
                Ok(v) => v == regorus::Value::from(true),
                Err(_) => false,
            };
            results.push((
                format!(
                    "{}: {q}",
                    f.file_name()
                        .map(|s| s.to_string_lossy())
                        .unwrap_or_default()
                ),
                ok,
            ));
        }
    }
    Ok(results)
}
