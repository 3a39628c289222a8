//! The JSON configuration and its validation into a [`SecurityHeadersPolicy`].
//!
//! Three layers, each editing the one before: the preset, the top level, and one
//! route. Every layer has the same four edits: `headers` (set or replace),
//! `omit` (stop setting an inherited header), `remove` (strip from responses) and
//! `keep` (stop stripping an inherited name). An edit that does nothing (omitting a
//! header nobody sets, keeping one nobody removes) is rejected: it is almost always a
//! typo, and a typo in a security policy should fail the rollout, not pass silently.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use thiserror::Error;

use super::field_path::{self, FieldPath};
use super::policy::{HeaderMode, HeaderRule, PathPrefix, Route, Scope, SecurityHeadersPolicy};
use super::preset::{self, Preset};
use crate::http::{HeaderName, HeaderNameError, HeaderValue, HeaderValueError};

/// Bounds that keep one response's work small and catch generated configs gone wrong.
pub const MAX_LIST_LEN: usize = 64;
pub const MAX_ROUTES: usize = 256;
pub const MAX_VALUE_LEN: usize = 8192;

const CONFIG_FIELDS: &[&str] = &["preset", "headers", "omit", "remove", "keep", "routes"];
const ROUTE_FIELDS: &[&str] = &["pathPrefix", "headers", "omit", "remove", "keep"];
const HEADER_FIELDS: &[&str] = &["name", "value", "mode"];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// Not JSON at all.
    #[error("{path}: invalid JSON: {message} (line {line}, column {column})")]
    Syntax {
        path: FieldPath,
        message: String,
        line: usize,
        column: usize,
    },
    /// JSON that does not fit the schema, or a value that is not acceptable.
    #[error("{path}: {problem}")]
    Invalid {
        path: FieldPath,
        problem: ConfigProblem,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigProblem {
    #[error("unknown field, expected one of: {}", .expected.join(", "))]
    UnknownField { expected: &'static [&'static str] },
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field given twice")]
    DuplicateField,
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("unknown value {found:?}, expected one of: {}", .expected.join(", "))]
    UnknownValue {
        found: String,
        expected: &'static [&'static str],
    },
    #[error(transparent)]
    HeaderName(#[from] HeaderNameError),
    #[error(transparent)]
    HeaderValue(#[from] HeaderValueError),
    #[error("header value has a non-ASCII byte at byte {index}: browsers read header values as Latin-1, so it would arrive garbled")]
    NonAsciiValue { index: usize },
    #[error("header value is longer than {MAX_VALUE_LEN} bytes")]
    ValueTooLong,
    #[error("`{name}` frames the message or manages the connection; Envoy owns it and this filter never sets or removes it")]
    Reserved { name: HeaderName },
    #[error("`{name}` is listed twice (first at {first})")]
    Duplicate { name: HeaderName, first: FieldPath },
    #[error("`{name}` is not set by {inherited_from}, so there is nothing to omit")]
    NothingToOmit {
        name: HeaderName,
        inherited_from: &'static str,
    },
    #[error("`{name}` is not removed by {inherited_from}, so there is nothing to keep")]
    NothingToKeep {
        name: HeaderName,
        inherited_from: &'static str,
    },
    #[error("`{name}` is also listed in `{other}` of the same scope")]
    Contradiction {
        name: HeaderName,
        other: &'static str,
    },
    #[error("`{name}` would be both set and removed; list it in `keep` to stop removing it")]
    SetAndRemoved { name: HeaderName },
    #[error("path prefix {0}")]
    PathPrefix(&'static str),
    #[error("path prefix is already used by {first}")]
    DuplicatePrefix { first: FieldPath },
    #[error("has more than {max} entries")]
    TooMany { max: usize },
}

/// The configuration as written, before validation. Read from a `serde_json::Value`
/// by hand rather than with serde's derive: the walk knows the exact field path of
/// every value, and it keeps serde's typed-error machinery (float formatting and all)
/// out of a module that must stay under 250 KB.
#[derive(Default)]
struct RawConfig<'v> {
    preset: Preset,
    edits: Edits<'v>,
    routes: Vec<RawRoute<'v>>,
}

struct RawRoute<'v> {
    path: FieldPath,
    path_prefix: &'v str,
    edits: Edits<'v>,
}

struct RawHeader<'v> {
    name: &'v str,
    value: &'v str,
    mode: HeaderMode,
}

/// The four edits a layer applies to the scope it inherits.
#[derive(Default)]
struct Edits<'v> {
    headers: Vec<RawHeader<'v>>,
    omit: Vec<&'v str>,
    remove: Vec<&'v str>,
    keep: Vec<&'v str>,
}

// === impl SecurityHeadersPolicy (construction) ===

impl SecurityHeadersPolicy {
    /// Parses and validates the plugin configuration. Empty (or whitespace-only)
    /// configuration means `{}`: the `api` preset, so attaching the filter without
    /// a config still hardens every response.
    pub fn from_json(config: &[u8]) -> Result<Self, ConfigError> {
        if config.iter().all(u8::is_ascii_whitespace) {
            return build(&RawConfig::default());
        }
        let value: Value = serde_json::from_slice(config).map_err(|error| {
            let (line, column) = (error.line(), error.column());
            let full = error.to_string();
            let message = full
                .strip_suffix(&format!(" at line {line} column {column}"))
                .unwrap_or(&full)
                .to_owned();
            let path = field_path::scan(config, Some((line, column))).path;
            ConfigError::Syntax {
                path,
                message,
                line,
                column,
            }
        })?;
        let raw = RawConfig::read(&value)?;
        // After the schema walk, which has rejected unknown keys: objects now hold a
        // handful of known keys, so the key-by-key duplicate check stays cheap.
        if let Some(path) = field_path::scan(config, None).duplicate_key {
            return Err(invalid(path, ConfigProblem::DuplicateField));
        }
        build(&raw)
    }
}

// === reading the JSON ===

impl<'v> RawConfig<'v> {
    fn read(value: &'v Value) -> Result<Self, ConfigError> {
        let root = FieldPath::root();
        let fields = object(value, &root, CONFIG_FIELDS)?;
        let preset = match fields.get("preset") {
            None => Preset::default(),
            Some(value) => {
                let path = root.field("preset");
                match string(value, &path)? {
                    "api" => Preset::Api,
                    "none" => Preset::None,
                    other => return Err(unknown_value(path, other, &["api", "none"])),
                }
            }
        };
        let routes_path = root.field("routes");
        let routes = array(fields.get("routes"), &routes_path, MAX_ROUTES)?
            .iter()
            .enumerate()
            .map(|(index, value)| RawRoute::read(value, routes_path.index(index)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            preset,
            edits: Edits::read(fields, &root)?,
            routes,
        })
    }
}

impl<'v> RawRoute<'v> {
    fn read(value: &'v Value, path: FieldPath) -> Result<Self, ConfigError> {
        let fields = object(value, &path, ROUTE_FIELDS)?;
        let Some(prefix) = fields.get("pathPrefix") else {
            return Err(invalid(path, ConfigProblem::MissingField("pathPrefix")));
        };
        let path_prefix = string(prefix, &path.field("pathPrefix"))?;
        Ok(Self {
            path_prefix,
            edits: Edits::read(fields, &path)?,
            path,
        })
    }
}

impl<'v> Edits<'v> {
    fn read(fields: &'v Map<String, Value>, path: &FieldPath) -> Result<Self, ConfigError> {
        let headers_path = path.field("headers");
        let headers = array(fields.get("headers"), &headers_path, MAX_LIST_LEN)?
            .iter()
            .enumerate()
            .map(|(index, value)| RawHeader::read(value, &headers_path.index(index)))
            .collect::<Result<_, _>>()?;
        let names = |key: &str| -> Result<Vec<&'v str>, ConfigError> {
            let list_path = path.field(key);
            array(fields.get(key), &list_path, MAX_LIST_LEN)?
                .iter()
                .enumerate()
                .map(|(index, value)| string(value, &list_path.index(index)))
                .collect()
        };
        Ok(Self {
            headers,
            omit: names("omit")?,
            remove: names("remove")?,
            keep: names("keep")?,
        })
    }
}

impl<'v> RawHeader<'v> {
    fn read(value: &'v Value, path: &FieldPath) -> Result<Self, ConfigError> {
        let fields = object(value, path, HEADER_FIELDS)?;
        let required = |key: &'static str| match fields.get(key) {
            Some(value) => string(value, &path.field(key)),
            None => Err(invalid(path.clone(), ConfigProblem::MissingField(key))),
        };
        let mode = match fields.get("mode") {
            None => HeaderMode::default(),
            Some(value) => {
                let mode_path = path.field("mode");
                match string(value, &mode_path)? {
                    "overwrite" => HeaderMode::Overwrite,
                    "ifAbsent" => HeaderMode::IfAbsent,
                    other => {
                        return Err(unknown_value(mode_path, other, &["overwrite", "ifAbsent"]))
                    }
                }
            }
        };
        Ok(Self {
            name: required("name")?,
            value: required("value")?,
            mode,
        })
    }
}

/// An object whose keys are all in `allowed` (serde's `deny_unknown_fields`).
fn object<'v>(
    value: &'v Value,
    path: &FieldPath,
    allowed: &'static [&'static str],
) -> Result<&'v Map<String, Value>, ConfigError> {
    let Value::Object(fields) = value else {
        return Err(wrong_type(path, "an object", value));
    };
    if let Some(unknown) = fields.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(invalid(
            path.field(unknown),
            ConfigProblem::UnknownField { expected: allowed },
        ));
    }
    Ok(fields)
}

/// An optional array (absent means empty; `null` is a type error like any other).
fn array<'v>(
    value: Option<&'v Value>,
    path: &FieldPath,
    max: usize,
) -> Result<&'v [Value], ConfigError> {
    match value {
        None => Ok(&[]),
        Some(Value::Array(items)) if items.len() > max => {
            Err(invalid(path.clone(), ConfigProblem::TooMany { max }))
        }
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(wrong_type(path, "an array", other)),
    }
}

fn string<'v>(value: &'v Value, path: &FieldPath) -> Result<&'v str, ConfigError> {
    value
        .as_str()
        .ok_or_else(|| wrong_type(path, "a string", value))
}

fn wrong_type(path: &FieldPath, expected: &'static str, found: &Value) -> ConfigError {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    invalid(path.clone(), ConfigProblem::WrongType { expected, found })
}

fn unknown_value(path: FieldPath, found: &str, expected: &'static [&'static str]) -> ConfigError {
    invalid(
        path,
        ConfigProblem::UnknownValue {
            found: found.to_owned(),
            expected,
        },
    )
}

fn invalid(path: FieldPath, problem: ConfigProblem) -> ConfigError {
    ConfigError::Invalid { path, problem }
}

// === validation ===

fn build(raw: &RawConfig<'_>) -> Result<SecurityHeadersPolicy, ConfigError> {
    let root = FieldPath::root();
    let preset_scope =
        preset::scope(raw.preset).map_err(|problem| invalid(root.field("preset"), problem))?;
    let preset_label = match raw.preset {
        Preset::Api => "the `api` preset",
        Preset::None => "the `none` preset",
    };
    let default_scope = apply_edits(&preset_scope, preset_label, &raw.edits, &root)?;

    let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
    let mut prefixes_seen: BTreeMap<&str, FieldPath> = BTreeMap::new();
    for raw_route in &raw.routes {
        let prefix_path = raw_route.path.field("pathPrefix");
        let prefix = PathPrefix::parse(raw_route.path_prefix)
            .map_err(|reason| invalid(prefix_path.clone(), ConfigProblem::PathPrefix(reason)))?;
        if let Some(first) = prefixes_seen.insert(raw_route.path_prefix, prefix_path.clone()) {
            return Err(invalid(
                prefix_path,
                ConfigProblem::DuplicatePrefix { first },
            ));
        }
        let scope = apply_edits(
            &default_scope,
            "the top level",
            &raw_route.edits,
            &raw_route.path,
        )?;
        // Longest first, so the first match is the most specific prefix whatever the
        // order in the config (two different prefixes of one length never both match).
        // Inserting in place avoids pulling a sort implementation into the module.
        let position = routes
            .iter()
            .position(|route| route.prefix.len() < prefix.len());
        routes.insert(position.unwrap_or(routes.len()), Route { prefix, scope });
    }

    Ok(SecurityHeadersPolicy {
        preset: raw.preset,
        default_scope,
        routes,
    })
}

/// Applies one layer's edits to the scope it inherits, validating every entry.
fn apply_edits(
    inherited: &Scope,
    inherited_from: &'static str,
    edits: &Edits<'_>,
    path: &FieldPath,
) -> Result<Scope, ConfigError> {
    let headers_path = path.field("headers");
    let mut own_rules: Vec<(FieldPath, HeaderRule)> = Vec::with_capacity(edits.headers.len());
    for (index, raw) in edits.headers.iter().enumerate() {
        let entry_path = headers_path.index(index);
        let name_path = entry_path.field("name");
        let name = settable_name(raw.name).map_err(|p| invalid(name_path.clone(), p))?;
        let value = config_value(raw.value).map_err(|p| invalid(entry_path.field("value"), p))?;
        if let Some(first) = find_path(&own_rules, |rule| rule.name == name) {
            return Err(invalid(name_path, ConfigProblem::Duplicate { name, first }));
        }
        own_rules.push((
            name_path,
            HeaderRule {
                name,
                value,
                mode: raw.mode,
            },
        ));
    }
    let own_rule = |name: &HeaderName| {
        own_rules
            .iter()
            .map(|(_, rule)| rule)
            .find(|rule| &rule.name == name)
    };

    let omitted = name_list(&edits.omit, &path.field("omit"), |name| {
        if own_rule(name).is_some() {
            Err(ConfigProblem::Contradiction {
                name: name.clone(),
                other: "headers",
            })
        } else if !inherited.set().iter().any(|rule| &rule.name == name) {
            Err(ConfigProblem::NothingToOmit {
                name: name.clone(),
                inherited_from,
            })
        } else {
            Ok(())
        }
    })?;

    let removed_here = name_list(&edits.remove, &path.field("remove"), |name| {
        if preset::is_reserved(name) {
            Err(ConfigProblem::Reserved { name: name.clone() })
        } else {
            Ok(())
        }
    })?;

    let kept = name_list(&edits.keep, &path.field("keep"), |name| {
        if removed_here.iter().any(|(removed, _)| removed == name) {
            Err(ConfigProblem::Contradiction {
                name: name.clone(),
                other: "remove",
            })
        } else if !inherited.remove().contains(name) {
            Err(ConfigProblem::NothingToKeep {
                name: name.clone(),
                inherited_from,
            })
        } else {
            Ok(())
        }
    })?;

    // Compose: inherited entries keep their order (overrides replace them in place),
    // then this layer's additions in config order.
    let mut set: Vec<HeaderRule> = inherited
        .set()
        .iter()
        .filter(|rule| !omitted.iter().any(|(name, _)| name == &rule.name))
        .map(|rule| own_rule(&rule.name).unwrap_or(rule).clone())
        .collect();
    for (_, rule) in &own_rules {
        if !set.iter().any(|existing| existing.name == rule.name) {
            set.push(rule.clone());
        }
    }
    let mut remove: Vec<HeaderName> = inherited
        .remove()
        .iter()
        .filter(|name| !kept.iter().any(|(kept, _)| kept == *name))
        .cloned()
        .collect();
    for (name, _) in &removed_here {
        if !remove.contains(name) {
            remove.push(name.clone());
        }
    }

    if let Some(conflict) = set.iter().find(|rule| remove.contains(&rule.name)) {
        let name = conflict.name.clone();
        let at = find_path(&own_rules, |rule| rule.name == name)
            .or_else(|| {
                removed_here
                    .iter()
                    .find(|(removed, _)| removed == &name)
                    .map(|(_, p)| p.clone())
            })
            .unwrap_or_else(|| path.clone());
        return Err(invalid(at, ConfigProblem::SetAndRemoved { name }));
    }
    if set.len() > MAX_LIST_LEN {
        return Err(invalid(
            headers_path,
            ConfigProblem::TooMany { max: MAX_LIST_LEN },
        ));
    }
    if remove.len() > MAX_LIST_LEN {
        return Err(invalid(
            path.field("remove"),
            ConfigProblem::TooMany { max: MAX_LIST_LEN },
        ));
    }
    Ok(Scope::new(set, remove))
}

/// Parses a list of header names in config order, rejecting duplicates and whatever
/// `check` refuses; returns each name with the path of its entry.
fn name_list(
    raw: &[&str],
    path: &FieldPath,
    check: impl Fn(&HeaderName) -> Result<(), ConfigProblem>,
) -> Result<Vec<(HeaderName, FieldPath)>, ConfigError> {
    let mut names: Vec<(HeaderName, FieldPath)> = Vec::with_capacity(raw.len());
    for (index, raw_name) in raw.iter().enumerate() {
        let entry_path = path.index(index);
        let invalid = |problem| invalid(entry_path.clone(), problem);
        let name = HeaderName::parse(raw_name).map_err(|e| invalid(e.into()))?;
        if let Some((_, first)) = names.iter().find(|(seen, _)| seen == &name) {
            let first = first.clone();
            return Err(invalid(ConfigProblem::Duplicate { name, first }));
        }
        check(&name).map_err(invalid)?;
        names.push((name, entry_path));
    }
    Ok(names)
}

fn find_path(
    rules: &[(FieldPath, HeaderRule)],
    predicate: impl Fn(&HeaderRule) -> bool,
) -> Option<FieldPath> {
    rules
        .iter()
        .find(|(_, rule)| predicate(rule))
        .map(|(path, _)| path.clone())
}

fn settable_name(raw: &str) -> Result<HeaderName, ConfigProblem> {
    let name = HeaderName::parse(raw)?;
    if preset::is_reserved(&name) {
        return Err(ConfigProblem::Reserved { name });
    }
    Ok(name)
}

/// A configured value is stricter than what HTTP allows: ASCII only (every security
/// header grammar is ASCII) and bounded.
fn config_value(raw: &str) -> Result<HeaderValue, ConfigProblem> {
    let value = HeaderValue::parse(raw)?;
    if let Some(index) = raw.bytes().position(|b| !b.is_ascii()) {
        return Err(ConfigProblem::NonAsciiValue { index });
    }
    if raw.len() > MAX_VALUE_LEN {
        return Err(ConfigProblem::ValueTooLong);
    }
    Ok(value)
}

// === impl ConfigError ===

impl ConfigError {
    /// The field the operator has to fix.
    pub fn path(&self) -> &FieldPath {
        match self {
            Self::Syntax { path, .. } | Self::Invalid { path, .. } => path,
        }
    }
}
