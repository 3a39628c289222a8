//! Strict JSON schemas for every kind we ship, offline.
//!
//! * Kubernetes core kinds: the `v1.33.0-local-strict` catalog of the `kubernetes-validate`
//!   wheel (PyPI, pinned in the Makefile): draft 2020-12, `additionalProperties: false`
//!   everywhere, one file per kind plus `_definitions.json`.
//! * CRDs (Istio, Argo CD, prometheus-operator): generated here from the kopium bindings of
//!   the pinned `kcr_*` crates (crates.io). kopium turns each upstream CRD's
//!   openAPIV3Schema into Rust structs: one struct per object, `Option` for optional
//!   fields, unit enums for `enum:` values, `BTreeMap<String, Value>` where the CRD says
//!   `x-kubernetes-preserve-unknown-fields`. We turn them back into a JSON schema with
//!   `additionalProperties: false` on every struct — the same strictness as
//!   `openapi2jsonschema --strict` / `kubeconform -strict`.
//!
//! Every schema is made self-contained (the `_definitions.json` closure it needs is
//! copied into `$defs`), so the same files work for `kubeconform -schema-location`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

/// The CRD binding crates and the exact versions pinned in Cargo.toml.
pub const CRD_CRATES: &[(&str, &str)] = &[
    ("kcr_networking_istio_io", "3.20260614.62107"),
    ("kcr_security_istio_io", "3.20260529.133437"),
    ("kcr_telemetry_istio_io", "3.20260602.110645"),
    ("kcr_argoproj_io", "3.20260618.213614"),
    ("kcr_monitoring_coreos_com", "3.20260613.160609"),
];

const DEFS_URI: &str = "https://kubernetes.io/api/_definitions.json";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// `apiVersion` + `kind` → self-contained schema.
pub struct Catalog {
    pub schemas: BTreeMap<(String, String), Value>,
}

impl Catalog {
    pub fn load(k8s_dir: &Path, crd_sources: &[PathBuf]) -> Result<Self> {
        let defs_path = k8s_dir.join("_definitions.json");
        let defs: Value = read_json(&defs_path)?;
        let defs = defs
            .get("$defs")
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| anyhow!("{}: no $defs", defs_path.display()))?;
        let mut schemas = BTreeMap::new();
        for entry in std::fs::read_dir(k8s_dir).with_context(|| k8s_dir.display().to_string())? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !name.ends_with(".json") || name.starts_with('_') || name == "all.json" {
                continue;
            }
            let s = read_json(&path)?;
            let one = |field: &str| -> Option<String> {
                s.pointer(&format!("/properties/{field}/enum/0"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let (Some(api), Some(kind)) = (one("apiVersion"), one("kind")) else {
                continue; // sub-object schemas (e.g. affinity-v1.json) have no kind
            };
            schemas.insert((api, kind), self_contained(s, &defs));
        }
        if schemas.is_empty() {
            bail!("{}: no Kubernetes schemas found", k8s_dir.display());
        }
        for src in crd_sources {
            for (key, schema) in crd_schemas_from_crate(src)? {
                schemas.insert(key, self_contained(schema, &defs));
            }
        }
        Ok(Self { schemas })
    }

    pub fn get(&self, api_version: &str, kind: &str) -> Option<&Value> {
        self.schemas.get(&(api_version.to_owned(), kind.to_owned()))
    }

    /// Validates one object; `Err` lists every violation (path: message).
    pub fn validate(&self, obj: &Value) -> std::result::Result<(), Vec<String>> {
        let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let (api, kind) = (s("/apiVersion"), s("/kind"));
        let Some(schema) = self.get(api, kind) else {
            return Err(vec![format!(
                "no schema for {api} {kind} (unknown kinds are errors)"
            )]);
        };
        let validator = jsonschema::options()
            .build(schema)
            .map_err(|e| vec![format!("schema for {api} {kind} does not compile: {e}")])?;
        let errs: Vec<String> = validator
            .iter_errors(obj)
            .map(|e| {
                let mut m = e.to_string();
                if m.len() > 300 {
                    let cut = (0..=300)
                        .rev()
                        .find(|i| m.is_char_boundary(*i))
                        .unwrap_or(0);
                    m.truncate(cut);
                    m.push_str(" ...");
                }
                format!("{}: {m}", e.instance_path())
            })
            .collect();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// Writes the kubeconform layout `{group}/{kind}_{version}.json` (lower-case kind;
    /// core group written as `core`... kubeconform only needs the CRDs, core comes from
    /// its own catalog) for every CRD kind.
    pub fn write_crd_catalog(&self, out: &Path) -> Result<usize> {
        let mut n = 0;
        for ((api, kind), schema) in &self.schemas {
            let Some((group, version)) = api.split_once('/') else {
                continue;
            };
            if !group.contains('.') || group.ends_with(".k8s.io") {
                continue;
            }
            let dir = out.join(group);
            std::fs::create_dir_all(&dir)?;
            let file = dir.join(format!("{}_{version}.json", kind.to_lowercase()));
            std::fs::write(&file, serde_json::to_vec_pretty(schema)?)?;
            n += 1;
        }
        Ok(n)
    }
}

fn read_json(p: &Path) -> Result<Value> {
    let bytes = std::fs::read(p).with_context(|| p.display().to_string())?;
    serde_json::from_slice(&bytes).with_context(|| p.display().to_string())
}

/// Rewrites `$ref`s into `_definitions.json` to local `#/$defs/...` and copies the
/// transitive closure of the definitions they need.
fn self_contained(mut schema: Value, defs: &Map<String, Value>) -> Value {
    let mut needed = BTreeSet::new();
    rewrite_refs(&mut schema, &mut needed);
    let mut local = Map::new();
    let mut queue: Vec<String> = needed.into_iter().collect();
    while let Some(name) = queue.pop() {
        if local.contains_key(&name) {
            continue;
        }
        let Some(mut d) = defs.get(&name).cloned() else {
            continue;
        };
        let mut more = BTreeSet::new();
        rewrite_refs(&mut d, &mut more);
        local.insert(name, d);
        queue.extend(more.into_iter().filter(|m| !local.contains_key(m)));
    }
    if let Some(o) = schema.as_object_mut() {
        o.remove("$id");
        o.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        o.insert("$defs".into(), Value::Object(local));
    }
    schema
}

fn rewrite_refs(v: &mut Value, needed: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref") {
                if let Some((_, name)) = r.split_once("_definitions.json#/$defs/") {
                    needed.insert(name.to_owned());
                    *r = format!("#/$defs/{name}");
                } else if let Some(name) = r.strip_prefix("#/$defs/") {
                    // refs between definitions inside _definitions.json itself
                    needed.insert(name.to_owned());
                }
            }
            for (_, c) in o.iter_mut() {
                rewrite_refs(c, needed);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_refs(c, needed)),
        _ => {}
    }
}

/// Finds the pinned kcr crate sources in the cargo registry (`cargo fetch` puts them there;
/// they are target-gated so they are never compiled).
pub fn locate_crd_sources(workspace: &Path) -> Result<Vec<PathBuf>> {
    let find = || -> Vec<Option<PathBuf>> {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .unwrap_or_default();
        let src = home.join("registry").join("src");
        let regs: Vec<PathBuf> = std::fs::read_dir(&src)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        CRD_CRATES
            .iter()
            .map(|(name, ver)| {
                regs.iter()
                    .map(|r| r.join(format!("{name}-{ver}")))
                    .find(|p| p.join("src").is_dir())
            })
            .collect()
    };
    let mut found = find();
    if found.iter().any(Option::is_none) {
        // Download (not build) them: cargo fetch covers every target's dependencies.
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["fetch", "--manifest-path"])
            .arg(workspace.join("Cargo.toml"))
            .status()
            .context("running cargo fetch for the CRD binding crates")?;
        if !status.success() {
            bail!("cargo fetch failed");
        }
        found = find();
    }
    found
        .into_iter()
        .zip(CRD_CRATES)
        .map(|(p, (name, ver))| p.ok_or_else(|| anyhow!("{name}-{ver} not in the cargo registry")))
        .collect()
}

/// One JSON schema per CustomResource struct found in the crate's sources.
pub fn crd_schemas_from_crate(dir: &Path) -> Result<Vec<((String, String), Value)>> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    collect_rs(&dir.join("src"), &mut files)?;
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let ast = syn::parse_file(&text).with_context(|| f.display().to_string())?;
        let items: HashMap<String, &syn::Item> = ast
            .items
            .iter()
            .filter_map(|i| match i {
                syn::Item::Struct(s) => Some((s.ident.to_string(), i)),
                syn::Item::Enum(e) => Some((e.ident.to_string(), i)),
                _ => None,
            })
            .collect();
        for item in &ast.items {
            let syn::Item::Struct(s) = item else { continue };
            let Some((group, version, kind)) = kube_attrs(&s.attrs) else {
                continue;
            };
            let mut gen = Gen {
                items: &items,
                file: &f,
                depth: 0,
            };
            let spec = gen.strukt(s)?;
            let api = format!("{group}/{version}");
            let schema = json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["apiVersion", "kind", "metadata", "spec"],
                "properties": {
                    "apiVersion": { "type": "string", "enum": [api] },
                    "kind": { "type": "string", "enum": [kind] },
                    "metadata": { "$ref": format!("{DEFS_URI}#/$defs/{OBJECT_META}") },
                    "spec": spec,
                    // Written by the controllers, never by us; not validated.
                    "status": {}
                }
            });
            out.push(((api, kind), schema));
        }
    }
    if out.is_empty() {
        bail!("{}: no CustomResource found", dir.display());
    }
    Ok(out)
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect_rs(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// `#[kube(group = "...", version = "...", kind = "...")]`
fn kube_attrs(attrs: &[syn::Attribute]) -> Option<(String, String, String)> {
    let (mut g, mut v, mut k) = (None, None, None);
    for a in attrs.iter().filter(|a| a.path().is_ident("kube")) {
        let _ = a.parse_nested_meta(|m| {
            let lit = |m: &syn::meta::ParseNestedMeta| -> Option<String> {
                m.value()
                    .ok()?
                    .parse::<syn::LitStr>()
                    .ok()
                    .map(|l| l.value())
            };
            if m.path.is_ident("group") {
                g = lit(&m);
            } else if m.path.is_ident("version") {
                v = lit(&m);
            } else if m.path.is_ident("kind") {
                k = lit(&m);
            } else if m.input.peek(syn::Token![=]) {
                let _ = lit(&m);
            }
            Ok(())
        });
    }
    Some((g?, v?, k?))
}

/// `#[serde(rename = "...")]` on a field or variant.
fn serde_rename(attrs: &[syn::Attribute]) -> Option<String> {
    let mut out = None;
    for a in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = a.parse_nested_meta(|m| {
            if m.input.peek(syn::Token![=]) {
                let v: syn::LitStr = m.value()?.parse()?;
                if m.path.is_ident("rename") {
                    out = Some(v.value());
                }
            }
            Ok(())
        });
    }
    out
}

struct Gen<'a> {
    items: &'a HashMap<String, &'a syn::Item>,
    file: &'a Path,
    depth: usize,
}

impl Gen<'_> {
    fn strukt(&mut self, s: &syn::ItemStruct) -> Result<Value> {
        let mut props = Map::new();
        let mut required = Vec::new();
        for f in &s.fields {
            let ident = f.ident.as_ref().map(|i| i.to_string()).unwrap_or_default();
            let name =
                serde_rename(&f.attrs).unwrap_or_else(|| ident.trim_start_matches("r#").to_owned());
            let (schema, optional) = self.ty(&f.ty)?;
            if !optional {
                required.push(json!(name));
            }
            props.insert(name, schema);
        }
        let mut o = json!({ "type": "object", "additionalProperties": false, "properties": props });
        if !required.is_empty() {
            if let Some(m) = o.as_object_mut() {
                m.insert("required".into(), Value::Array(required));
            }
        }
        Ok(o)
    }

    /// Returns the schema and whether the field is optional (`Option<T>`).
    fn ty(&mut self, t: &syn::Type) -> Result<(Value, bool)> {
        let syn::Type::Path(p) = t else {
            bail!("{}: unsupported type {}", self.file.display(), quote_ty(t));
        };
        let seg = p
            .path
            .segments
            .last()
            .ok_or_else(|| anyhow!("{}: empty type path", self.file.display()))?;
        let args: Vec<&syn::Type> = match &seg.arguments {
            syn::PathArguments::AngleBracketed(a) => a
                .args
                .iter()
                .filter_map(|g| match g {
                    syn::GenericArgument::Type(t) => Some(t),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let name = seg.ident.to_string();
        let v = match (name.as_str(), args.as_slice()) {
            ("Option", [inner]) => {
                let (s, _) = self.ty(inner)?;
                // Kubernetes accepts an explicit null for an optional field. Widening the
                // type (not anyOf) keeps errors pointing at the deepest offending field.
                return Ok((nullable(s), true));
            }
            ("Vec", [inner]) => json!({ "type": "array", "items": self.ty(inner)?.0 }),
            ("BTreeMap" | "HashMap", [_, inner]) => {
                json!({ "type": "object", "additionalProperties": self.ty(inner)?.0 })
            }
            ("String", []) => json!({ "type": "string" }),
            ("bool", []) => json!({ "type": "boolean" }),
            ("i32" | "i64" | "u32" | "u64" | "i16" | "u16", []) => json!({ "type": "integer" }),
            ("f32" | "f64", []) => json!({ "type": "number" }),
            ("IntOrString", []) => json!({ "type": ["integer", "string"] }),
            // x-kubernetes-preserve-unknown-fields: anything goes, by the CRD's own choice.
            ("Value", []) => json!({}),
            ("Condition", []) => json!({ "type": "object" }),
            ("Time" | "Quantity", []) => json!({ "type": "string" }),
            (other, []) => self.named(other)?,
            _ => bail!("{}: unsupported type {}", self.file.display(), quote_ty(t)),
        };
        Ok((v, false))
    }

    fn named(&mut self, name: &str) -> Result<Value> {
        let item = *self
            .items
            .get(name)
            .ok_or_else(|| anyhow!("{}: type {name} not found", self.file.display()))?;
        self.depth += 1;
        if self.depth > 64 {
            bail!("{}: type {name} nests too deep", self.file.display());
        }
        let v = match item {
            syn::Item::Struct(s) => self.strukt(s)?,
            syn::Item::Enum(e) => {
                let mut vals = Vec::new();
                for var in &e.variants {
                    if !matches!(var.fields, syn::Fields::Unit) {
                        bail!("{}: enum {name} has data variants", self.file.display());
                    }
                    vals.push(json!(
                        serde_rename(&var.attrs).unwrap_or_else(|| var.ident.to_string())
                    ));
                }
                json!({ "enum": vals })
            }
            _ => bail!("{}: {name} is neither struct nor enum", self.file.display()),
        };
        self.depth -= 1;
        Ok(v)
    }
}

fn nullable(mut s: Value) -> Value {
    if let Some(o) = s.as_object_mut() {
        match o.get_mut("type") {
            Some(Value::String(t)) => {
                let t = std::mem::take(t);
                o.insert("type".into(), json!([t, "null"]));
            }
            Some(Value::Array(a)) => a.push(json!("null")),
            _ => {
                if let Some(Value::Array(e)) = o.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
        }
    }
    s
}

fn quote_ty(t: &syn::Type) -> String {
    match t {
        syn::Type::Path(p) => p
            .path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect::<Vec<_>>()
            .join("::"),
        _ => "<non-path type>".into(),
    }
}
