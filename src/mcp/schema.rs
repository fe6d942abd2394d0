//! Tool schemas every client accepts. schemars writes JSON Schema 2020-12 that is legal but not
//! portable: `format: "uint64"` (the TypeScript SDK's validator warns "unknown format" for
//! each), `type: ["string", "null"]` for an `Option` (a union single-type dialects such as
//! Gemini's reject), `anyOf: [{$ref}, {type: null}]`, and a bare `true` for a
//! `serde_json::Value` (the MCP Inspector's `--strict` check refuses it). Every schema the
//! server lists goes through [`portable`].
//!
//! Dropping `null` is sound here because every optional field is either not required (input:
//! `#[serde(default)]`) or never written as `null` (output: `skip_serializing_if`).

use serde_json::{Map, Value};

/// The `format` values JSON Schema 2020-12 defines (§7.3 of the validation vocabulary).
pub const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Keywords whose value is one subschema.
const ONE: &[&str] = &[
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
];
/// Keywords whose value is a map of subschemas.
const MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
/// Keywords whose value is a list of subschemas.
const LISTS: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems"];

/// Rewrites `schema` (a tool's input or output schema) in place into the portable subset.
pub fn portable(schema: &mut Map<String, Value>) {
    node(schema);
}

fn sub(value: &mut Value, keyword: &str) {
    match value {
        // `true` accepts anything: `{}` says the same as an object. (`false` stays: it forbids.)
        Value::Bool(true)
            if !matches!(keyword, "additionalProperties" | "unevaluatedProperties") =>
        {
            *value = Value::Object(Map::new());
        }
        Value::Object(map) => node(map),
        _ => {}
    }
}

fn node(map: &mut Map<String, Value>) {
    // `anyOf: [S, {type: null}]` → S (keeping this node's own description and the like).
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = map.get_mut(key) else {
            continue;
        };
        branches.retain(|b| b.get("type").is_none_or(|t| t != "null"));
        if branches.len() == 1
            && let Some(Value::Object(only)) = branches.pop()
        {
            map.remove(key);
            for (k, v) in only {
                map.entry(k).or_insert(v);
            }
        }
    }
    // `type: [X, "null"]` → `type: X`.
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            map.insert("type".into(), only);
        }
    }
    // `null` is no longer a value an enum of a now single type can take.
    if let Some(Value::Array(values)) = map.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    if map
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !STANDARD_FORMATS.contains(&f))
    {
        map.remove("format");
    }
    for key in ONE {
        if let Some(v) = map.get_mut(*key) {
            sub(v, key);
        }
    }
    for key in MAPS {
        if let Some(Value::Object(m)) = map.get_mut(*key) {
            for v in m.values_mut() {
                sub(v, key);
            }
        }
    }
    for key in LISTS {
        if let Some(Value::Array(list)) = map.get_mut(*key) {
            for v in list.iter_mut() {
                sub(v, key);
            }
        }
    }
}
