//! `proxy_get_property` / `proxy_set_property`: test overrides first, then values written
//! with `proxy_set_property` (Envoy filter state `wasm.<name>`), then Envoy-like defaults
//! derived from the stream (headers, addresses, clock). Header-derived values follow the
//! same "current map" rule as the header hostcalls (NOT_FOUND once the headers continued).

use wasmtime::{Caller, Result};

use super::memory::{read_bytes, return_bytes};
use super::{injected_failure, restrict};
use crate::error::Status;
use crate::header_map::HeaderMap;
use crate::properties::{parse_path, port_of, PropertyValue};
use crate::state::{Callback, HostState, StreamState};

fn longest_override<'a>(
    overrides: &'a [(Vec<String>, PropertyValue)],
    path: &[String],
) -> Option<(usize, &'a PropertyValue)> {
    overrides
        .iter()
        .filter(|(prefix, _)| path.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(prefix, value)| (prefix.len(), value))
}

/// Header map as a CEL map: lower-case names, repeated headers comma-joined.
fn headers_value(headers: &HeaderMap) -> PropertyValue {
    let mut entries: Vec<(String, String)> = Vec::new();
    for (key, value) in headers.entries() {
        let value = String::from_utf8_lossy(value);
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            None => entries.push((key.clone(), value.into_owned())),
        }
    }
    PropertyValue::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k, PropertyValue::Str(v)))
            .collect(),
    )
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<PropertyValue> {
    headers
        .first(name)
        .map(|v| PropertyValue::Str(String::from_utf8_lossy(v).into_owned()))
}

fn address_value(address: &str) -> PropertyValue {
    let mut entries = vec![("address".to_string(), PropertyValue::str(address))];
    if let Some(port) = port_of(address) {
        entries.push(("port".to_string(), PropertyValue::Int(port)));
    }
    PropertyValue::Map(entries)
}

fn request_value(state: &HostState, stream: &StreamState) -> PropertyValue {
    let mut entries: Vec<(String, PropertyValue)> = vec![
        (
            "protocol".into(),
            PropertyValue::str(state.request_protocol.clone()),
        ),
        ("time".into(), PropertyValue::Timestamp(stream.started_at)),
    ];
    let readable = stream.request.headers_current || state.callback == Callback::Log;
    if readable && stream.request.headers_seen {
        let headers = &stream.request.headers;
        if let Some(path) = headers.first(":path") {
            let path = String::from_utf8_lossy(path).into_owned();
            let (url_path, query) = path.split_once('?').unwrap_or((&path, ""));
            entries.push(("url_path".into(), PropertyValue::str(url_path)));
            entries.push(("query".into(), PropertyValue::str(query)));
            entries.push(("path".into(), PropertyValue::Str(path.clone())));
        }
        for (name, header) in [
            ("method", ":method"),
            ("host", ":authority"),
            ("scheme", ":scheme"),
            ("referer", "referer"),
            ("useragent", "user-agent"),
            ("id", "x-request-id"),
        ] {
            if let Some(value) = header_str(headers, header) {
                entries.push((name.into(), value));
            }
        }
        entries.push(("headers".into(), headers_value(headers)));
    }
    PropertyValue::Map(entries)
}

fn response_value(state: &HostState, stream: &StreamState) -> PropertyValue {
    let mut entries = Vec::new();
    if stream.response.headers_seen {
        if let Some(code) = stream
            .response
            .headers
            .first(":status")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok())
        {
            entries.push(("code".into(), PropertyValue::Int(code)));
        }
        if stream.response.headers_current || state.callback == Callback::Log {
            entries.push(("headers".into(), headers_value(&stream.response.headers)));
        }
    }
    PropertyValue::Map(entries)
}

/// Envoy's value for the first path segment, before descending into the rest.
fn envoy_default(state: &HostState, first: &str) -> Option<PropertyValue> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| PropertyValue::str(s));
    match first {
        "plugin_name" => return non_empty(&state.plugin_name),
        "plugin_root_id" => return non_empty(&state.plugin_root_id),
        "plugin_vm_id" => return non_empty(&state.vm_id),
        _ => {}
    }
    // Everything else describes a stream: NOT_FOUND from a root context.
    let (id, stream) = state.target_stream()?;
    Some(match first {
        "request" => request_value(state, stream),
        "response" => response_value(state, stream),
        "source" => address_value(
            stream
                .source_address
                .as_deref()
                .unwrap_or(&state.source_address),
        ),
        "destination" => address_value(&state.destination_address),
        "connection" => PropertyValue::Map(vec![
            ("id".into(), PropertyValue::UInt(u64::from(id))),
            ("mtls".into(), PropertyValue::Bool(false)),
        ]),
        "connection_id" => PropertyValue::UInt(u64::from(id)),
        "filter_state" => PropertyValue::Map(
            stream
                .filter_state
                .iter()
                .map(|(path, value)| {
                    (
                        format!("wasm.{}", path.join("\0")),
                        PropertyValue::Bytes(value.clone()),
                    )
                })
                .collect(),
        ),
        _ => return None,
    })
}

pub(crate) fn resolve(state: &HostState, path: &[String]) -> Option<PropertyValue> {
    let stream = state.target_stream().map(|(_, s)| s);
    let stream_override = stream.and_then(|s| longest_override(&s.property_overrides, path));
    let plugin_override = longest_override(&state.properties, path);
    let chosen = match (stream_override, plugin_override) {
        (Some(s), Some(p)) => Some(if p.0 > s.0 { p } else { s }),
        (s, p) => s.or(p),
    };
    if let Some((prefix_len, value)) = chosen {
        return value
            .descend(path.get(prefix_len..).unwrap_or_default())
            .cloned();
    }
    if let Some(value) = stream.and_then(|s| s.filter_state.get(path)) {
        return Some(PropertyValue::Bytes(value.clone()));
    }
    let (first, rest) = path.split_first()?;
    envoy_default(state, first)?.descend(rest).cloned()
}

pub(crate) fn proxy_get_property(
    mut caller: Caller<'_, HostState>,
    path_ptr: i32,
    path_len: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_get_property";
    restrict(&caller, CALL)?;
    if let Some(status) = injected_failure(&mut caller, CALL) {
        return Ok(status);
    }
    let path = parse_path(&read_bytes(&caller, CALL, path_ptr, path_len)?);
    let Some(bytes) = resolve(caller.data(), &path).and_then(|v| v.serialize()) else {
        return Ok(Status::NotFound.code());
    };
    // An empty value goes back as ptr 0 / size 0, which the SDK reports as None (like Envoy).
    return_bytes(&mut caller, CALL, &bytes, ret_ptr, ret_size)?;
    Ok(Status::Ok.code())
}

pub(crate) fn proxy_set_property(
    mut caller: Caller<'_, HostState>,
    path_ptr: i32,
    path_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> Result<i32> {
    const CALL: &str = "proxy_set_property";
    restrict(&caller, CALL)?;
    if let Some(status) = injected_failure(&mut caller, CALL) {
        return Ok(status);
    }
    let path = parse_path(&read_bytes(&caller, CALL, path_ptr, path_len)?);
    let value = read_bytes(&caller, CALL, value_ptr, value_len)?;
    // Envoy stores filter state on the stream; from a root context there is none.
    match caller.data_mut().target_stream_mut() {
        Some((_, stream)) => {
            stream.filter_state.insert(path, value);
            Ok(Status::Ok.code())
        }
        None => Ok(Status::NotFound.code()),
    }
}
