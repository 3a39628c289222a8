//! The subset of kustomize the `istio/` tree uses, rendered without `kubectl`.
//!
//! `kubectl kustomize` is not installed on a fresh machine and no registry we can use ships
//! a pinned kustomize binary, so the checker renders the tree itself. The subset is small
//! and closed: any kustomization key outside it is an error (never silently ignored), and
//! when `kubectl` is present a test compares both renderings object by object.
//!
//! Supported: `resources` (files and directories with their own kustomization),
//! `namespace`, `labels` (`pairs`, `includeSelectors: false`, `includeTemplates`),
//! `commonAnnotations`, `configMapGenerator` (`files` — non-UTF-8 files become
//! `binaryData`, and files outside the kustomization are allowed as with
//! `--load-restrictor LoadRestrictionsNone` —, `literals`, `options.labels`,
//! `options.annotations`, `options.disableNameSuffixHash: true`) and
//! `generatorOptions.disableNameSuffixHash: true`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

const KNOWN_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "commonAnnotations",
    "configMapGenerator",
    "generatorOptions",
];

/// Kinds that are cluster-scoped: `namespace:` must not touch them.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
];

/// Renders the kustomization in `dir` into a list of objects, in kustomize's output order
/// (resources in listed order, then generated ConfigMaps).
pub fn render(dir: &Path) -> Result<Vec<Value>> {
    let kfile = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{}: no kustomization.yaml", dir.display()))?;
    let text = std::fs::read_to_string(&kfile).with_context(|| kfile.display().to_string())?;
    let k: Value = serde_yaml::from_str(&text).with_context(|| kfile.display().to_string())?;
    let k = k
        .as_object()
        .ok_or_else(|| anyhow!("{}: not a mapping", kfile.display()))?;
    for key in k.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            bail!(
                "{}: kustomization key `{key}` is not supported by manifest-check",
                kfile.display()
            );
        }
    }

    let mut out = Vec::new();
    for r in str_list(k.get("resources"), &kfile, "resources")? {
        let path = dir.join(&r);
        if path.is_dir() {
            out.extend(render(&path)?);
        } else {
            out.extend(load_yaml_stream(&path)?);
        }
    }
    out.extend(config_maps(dir, k, &kfile)?);

    if let Some(ns) = k.get("namespace").and_then(Value::as_str) {
        for o in &mut out {
            let kind = o
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if !CLUSTER_SCOPED.contains(&kind.as_str()) {
                meta_mut(o)?.insert("namespace".into(), json!(ns));
            }
            // Like kustomize: ServiceAccount subjects of a binding follow the namespace.
            if kind == "RoleBinding" || kind == "ClusterRoleBinding" {
                if let Some(subjects) = o.get_mut("subjects").and_then(Value::as_array_mut) {
                    for s in subjects {
                        let is_sa = s.get("kind").and_then(Value::as_str) == Some("ServiceAccount");
                        if let (true, Some(m)) = (is_sa, s.as_object_mut()) {
                            m.entry("namespace").or_insert_with(|| json!(ns));
                        }
                    }
                }
            }
        }
    }
    if let Some(labels) = k.get("labels") {
        apply_labels(&mut out, labels, &kfile)?;
    }
    if let Some(ann) = k.get("commonAnnotations").and_then(Value::as_object) {
        for o in &mut out {
            let m = meta_mut(o)?;
            let mut mv = Value::Object(std::mem::take(m));
            merge_into(&mut mv, "annotations", ann);
            if let Value::Object(mv) = mv {
                *m = mv;
            }
            // kustomize also annotates pod templates.
            if let Some(t) = o.pointer_mut("/spec/template") {
                merge_into(t, "metadata", &Map::new());
                if let Some(tmeta) = t.get_mut("metadata") {
                    merge_into(tmeta, "annotations", ann);
                }
            }
        }
    }
    Ok(out)
}

/// Reads a multi-document YAML file; empty documents are dropped.
pub fn load_yaml_stream(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    parse_yaml_stream(&text).with_context(|| path.display().to_string())
}

pub fn parse_yaml_stream(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn str_list(v: Option<&Value>, kfile: &Path, field: &str) -> Result<Vec<String>> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_owned).ok_or_else(|| {
                    anyhow!("{}: `{field}` entries must be strings", kfile.display())
                })
            })
            .collect(),
        Some(_) => bail!("{}: `{field}` must be a list", kfile.display()),
    }
}

fn meta_mut(o: &mut Value) -> Result<&mut Map<String, Value>> {
    let obj = o
        .as_object_mut()
        .ok_or_else(|| anyhow!("object is not a mapping"))?;
    obj.entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| anyhow!("metadata is not a mapping"))
}

fn merge_into(target: &mut Value, key: &str, pairs: &Map<String, Value>) {
    if let Some(t) = target.as_object_mut() {
        let e = t.entry(key).or_insert_with(|| json!({}));
        if let Some(e) = e.as_object_mut() {
            for (k, v) in pairs {
                e.insert(k.clone(), v.clone());
            }
        }
    }
}

fn apply_labels(out: &mut [Value], labels: &Value, kfile: &Path) -> Result<()> {
    let entries = labels
        .as_array()
        .ok_or_else(|| anyhow!("{}: `labels` must be a list", kfile.display()))?;
    for e in entries {
        for key in e
            .as_object()
            .map(|m| m.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !["pairs", "includeSelectors", "includeTemplates"].contains(&key.as_str()) {
                bail!("{}: labels.{key} is not supported", kfile.display());
            }
        }
        if e.get("includeSelectors").and_then(Value::as_bool) == Some(true) {
            // Selectors are immutable on Deployments; we never let kustomize touch them.
            bail!(
                "{}: labels.includeSelectors: true is not supported",
                kfile.display()
            );
        }
        let templates = e.get("includeTemplates").and_then(Value::as_bool) == Some(true);
        let pairs = e
            .get("pairs")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("{}: labels[].pairs must be a mapping", kfile.display()))?;
        for o in out.iter_mut() {
            let meta = meta_mut(o)?;
            let mut m = Value::Object(std::mem::take(meta));
            merge_into(&mut m, "labels", pairs);
            if let Value::Object(m) = m {
                *meta = m;
            }
            if templates {
                if let Some(tmeta) = o.pointer_mut("/spec/template/metadata") {
                    merge_into(tmeta, "labels", pairs);
                } else if let Some(t) = o.pointer_mut("/spec/template") {
                    merge_into(t, "metadata", &Map::new());
                    if let Some(tmeta) = t.get_mut("metadata") {
                        merge_into(tmeta, "labels", pairs);
                    }
                }
            }
        }
    }
    Ok(())
}

fn config_maps(dir: &Path, k: &Map<String, Value>, kfile: &Path) -> Result<Vec<Value>> {
    let Some(gens) = k.get("configMapGenerator") else {
        return Ok(Vec::new());
    };
    let global_nohash = k
        .get("generatorOptions")
        .and_then(|g| g.get("disableNameSuffixHash"))
        .and_then(Value::as_bool)
        == Some(true);
    let mut out = Vec::new();
    for g in gens.as_array().into_iter().flatten() {
        let go = g
            .as_object()
            .ok_or_else(|| anyhow!("{}: bad generator", kfile.display()))?;
        for key in go.keys() {
            if !["name", "files", "literals", "options", "namespace"].contains(&key.as_str()) {
                bail!(
                    "{}: configMapGenerator.{key} is not supported",
                    kfile.display()
                );
            }
        }
        let name = go
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{}: configMapGenerator needs a name", kfile.display()))?;
        let opts = go.get("options").cloned().unwrap_or_else(|| json!({}));
        let nohash = opts.get("disableNameSuffixHash").and_then(Value::as_bool) == Some(true);
        if !(nohash || global_nohash) {
            // A hashed name would need kustomize's name-reference rewriting; we keep
            // names stable and roll pods with a checksum annotation instead.
            bail!(
                "{}: configMapGenerator `{name}` must set disableNameSuffixHash",
                kfile.display()
            );
        }
        let mut data = Map::new();
        let mut binary = Map::new();
        for f in str_list(go.get("files"), kfile, "files")? {
            let (key, rel) = match f.split_once('=') {
                Some((k, p)) => (k.to_owned(), p.to_owned()),
                None => (file_name(&f), f.clone()),
            };
            // Like kubectl's `--load-restrictor LoadRestrictionsNone`: a file may live
            // outside the kustomization (envoyfilter-manifests/ reads ../dist/*.wasm).
            let p: PathBuf = dir.join(rel);
            let bytes = std::fs::read(&p).with_context(|| p.display().to_string())?;
            // kustomize: UTF-8 content goes to `data`, anything else to `binaryData`.
            match String::from_utf8(bytes) {
                Ok(text) => {
                    data.insert(key, json!(text));
                }
                Err(e) => {
                    binary.insert(key, json!(kustomize_base64(e.as_bytes())));
                }
            }
        }
        for l in str_list(go.get("literals"), kfile, "literals")? {
            let (key, v) = l
                .split_once('=')
                .ok_or_else(|| anyhow!("{}: literal `{l}` needs key=value", kfile.display()))?;
            data.insert(key.to_owned(), json!(v));
        }
        let mut meta = json!({ "name": name });
        if let (Some(ns), Some(m)) = (go.get("namespace"), meta.as_object_mut()) {
            m.insert("namespace".into(), ns.clone());
        }
        for field in ["labels", "annotations"] {
            if let Some(m) = opts.get(field).and_then(Value::as_object) {
                merge_into(&mut meta, field, m);
            }
        }
        let mut cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta });
        if let Some(m) = cm.as_object_mut() {
            // kustomize omits an empty `data` when the generator only has binary files.
            if !data.is_empty() || binary.is_empty() {
                m.insert("data".into(), Value::Object(data));
            }
            if !binary.is_empty() {
                m.insert("binaryData".into(), Value::Object(binary));
            }
        }
        out.push(cm);
    }
    Ok(out)
}

/// Standard base64 in lines of 70 characters, each ending in `\n`, exactly as kustomize
/// writes `binaryData` (the API server's decoder ignores the line breaks).
pub fn kustomize_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let enc = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(enc.len() + enc.len() / 70 + 1);
    for chunk in enc.as_bytes().chunks(70) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out
}

/// Decodes a `binaryData` value (line breaks allowed).
pub fn decode_binary(value: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| anyhow!("binaryData is not base64: {e}"))
}

fn file_name(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_owned())
}

/// `apiVersion/kind namespace/name`, for messages.
pub fn id(o: &Value) -> String {
    let s = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    format!(
        "{}/{} {}/{}",
        s("/apiVersion"),
        s("/kind"),
        o.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("-"),
        s("/metadata/name")
    )
}
