//! Prepares `promtool check rules` / `promtool test rules`: the PrometheusRule objects of
//! the rendered tree become plain rule files (their `.spec`), the unit tests are copied
//! next to them, and every alert must have at least one test where it fires and one
//! where it stays silent (an `alert_rule_test` with empty `exp_alerts`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::kustomize;

pub fn prepare(dir: &Path, tests: &Path, out: &Path) -> Result<bool> {
    std::fs::create_dir_all(out)?;
    let mut alerts = BTreeSet::new();
    let mut files = 0;
    for o in kustomize::render(dir)? {
        if o.get("kind").and_then(Value::as_str) != Some("PrometheusRule") {
            continue;
        }
        let name = o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("PrometheusRule without a name"))?;
        let spec = o
            .get("spec")
            .ok_or_else(|| anyhow!("PrometheusRule {name} has no spec"))?;
        for g in spec
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for r in g
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(a) = r.get("alert").and_then(Value::as_str) {
                    alerts.insert(a.to_owned());
                }
            }
        }
        // JSON is YAML: promtool reads it as is, with no re-quoting surprises.
        std::fs::write(
            out.join(format!("{name}.rules.yaml")),
            serde_json::to_vec_pretty(spec)?,
        )?;
        files += 1;
    }
    // alert -> (fires somewhere, silent somewhere)
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for e in std::fs::read_dir(tests).with_context(|| tests.display().to_string())? {
        let p = e?.path();
        if !p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&p)?;
        let name = p.file_name().ok_or_else(|| anyhow!("bad test path"))?;
        std::fs::write(out.join(name), &text)?;
        let doc: Value = serde_yaml::from_str(&text).with_context(|| p.display().to_string())?;
        for t in doc
            .get("tests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for a in t
                .get("alert_rule_test")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(n) = a.get("alertname").and_then(Value::as_str) else {
                    continue;
                };
                let fires = a
                    .get("exp_alerts")
                    .and_then(Value::as_array)
                    .is_some_and(|v| !v.is_empty());
                let e = seen.entry(n.to_owned()).or_default();
                if fires {
                    e.0 = true;
                } else {
                    e.1 = true;
                }
            }
        }
    }
    let mut ok = files > 0;
    for a in &alerts {
        let (fires, silent) = seen.get(a).copied().unwrap_or_default();
        if !fires {
            println!("promtool-prep: alert {a} has no test where it fires");
            ok = false;
        }
        if !silent {
            println!("promtool-prep: alert {a} has no test where it stays silent");
            ok = false;
        }
    }
    for a in seen.keys().filter(|a| !alerts.contains(*a)) {
        println!("promtool-prep: tests reference unknown alert {a}");
        ok = false;
    }
    println!(
        "promtool-prep: {files} rule file(s), {} alerts, every alert tested both ways: {ok}",
        alerts.len()
    );
    Ok(ok)
}
