//! A minimal instance of a tool's `parameters` JSON Schema, for a function call that
//! `tool_choice` forces when no script says what to pass: the required properties only, the
//! first value of an enum, the smallest number within bounds, and strings that match simple
//! patterns (character classes, groups with alternatives, quantifiers), like
//! `^[0-9*#wW]{1,32}$`.
//!
//! It covers the keywords function schemas use in practice; a schema it cannot satisfy gets
//! its best effort, never a panic.

use serde_json::{Map, Value, json};

/// Deep enough for any real tool schema; a self-referencing one stops here.
const MAX_DEPTH: usize = 16;

/// A value valid against `schema` (as far as the keywords above go).
pub(crate) fn instance(schema: &Value) -> Value {
    build(schema, 0)
}

/// Whether an object `value` keeps to an object schema's top level: its required properties
/// are there, it has no property the schema shuts out, and enum properties hold one of their
/// values. Enough to tell a script's arguments written for another tool's schema.
pub(crate) fn fits(schema: &Value, value: &Value) -> bool {
    let (Some(s), Some(v)) = (schema.as_object(), value.as_object()) else {
        return schema.is_null();
    };
    let empty = Map::new();
    let props = s
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let required = s.get("required").and_then(Value::as_array).is_none_or(|r| {
        r.iter()
            .filter_map(Value::as_str)
            .all(|k| v.contains_key(k))
    });
    let closed = s.get("additionalProperties") == Some(&Value::Bool(false));
    let known = !closed || v.keys().all(|k| props.contains_key(k));
    let enums = v.iter().all(|(k, x)| {
        props
            .get(k)
            .and_then(|p| p.get("enum"))
            .and_then(Value::as_array)
            .is_none_or(|e| e.contains(x))
    });
    required && known && enums
}

fn build(schema: &Value, depth: usize) -> Value {
    let Some(s) = schema.as_object() else {
        // `true` or a non-schema: anything goes.
        return Value::Null;
    };
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(first) = s
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(first) = s.get(key).and_then(Value::as_array).and_then(|a| {
            // Prefer a branch that is not plain null: a caller gets a real value.
            a.iter()
                .find(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                .or(a.first())
        }) {
            return build(first, depth + 1);
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for part in all {
            if let Value::Object(o) = build(part, depth + 1) {
                merged.extend(o);
            }
        }
        return Value::Object(merged);
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .or_else(|| ts.first().and_then(Value::as_str))
            .unwrap_or("null"),
        _ if s.contains_key("properties") || s.contains_key("required") => "object",
        _ if s.contains_key("items") => "array",
        _ if s.contains_key("pattern") || s.contains_key("minLength") => "string",
        _ => "null",
    };
    match ty {
        "object" => object(s, depth),
        "array" => {
            let n = s.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
            let item = s
                .get("items")
                .map(|i| build(i, depth + 1))
                .unwrap_or(json!(""));
            Value::Array(vec![item; n])
        }
        "string" => Value::String(string(s)),
        "integer" => json!(integer(s)),
        "number" => number(s),
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    }
}

fn object(s: &Map<String, Value>, depth: usize) -> Value {
    let empty = Map::new();
    let props = s
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut out = Map::new();
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for name in required {
        let v = props
            .get(name)
            .map(|p| build(p, depth + 1))
            .unwrap_or(json!(""));
        out.insert(name.to_owned(), v);
    }
    let min = s.get("minProperties").and_then(Value::as_u64).unwrap_or(0) as usize;
    for (name, p) in props {
        if out.len() >= min {
            break;
        }
        if !out.contains_key(name) {
            out.insert(name.clone(), build(p, depth + 1));
        }
    }
    Value::Object(out)
}

fn integer(s: &Map<String, Value>) -> i64 {
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    let mut lo = num("minimum").map(|m| m.ceil() as i64);
    if let Some(x) = num("exclusiveMinimum") {
        let x = x.floor() as i64 + 1;
        lo = Some(lo.map_or(x, |l| l.max(x)));
    }
    let mut hi = num("maximum").map(|m| m.floor() as i64);
    if let Some(x) = num("exclusiveMaximum") {
        let x = x.ceil() as i64 - 1;
        hi = Some(hi.map_or(x, |h| h.min(x)));
    }
    let mut v = lo.unwrap_or(0);
    if lo.is_none()
        && let Some(h) = hi
    {
        v = v.min(h);
    }
    if let Some(m) = s
        .get("multipleOf")
        .and_then(Value::as_i64)
        .filter(|m| *m > 0)
    {
        // The first multiple at or above the lower bound.
        v = v.div_euclid(m) * m + if v.rem_euclid(m) == 0 { 0 } else { m };
    }
    v
}

fn number(s: &Map<String, Value>) -> Value {
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    let v = match (
        num("minimum"),
        num("exclusiveMinimum"),
        num("maximum"),
        num("exclusiveMaximum"),
    ) {
        (Some(m), _, _, _) => m,
        (None, Some(x), hi, xhi) => {
            // Halfway to the upper bound when there is one, else just above.
            match hi.or(xhi) {
                Some(h) => (x + h) / 2.0,
                None => x + 1.0,
            }
        }
        (None, None, Some(h), _) => h.min(0.0),
        (None, None, None, Some(xh)) => {
            if xh > 0.0 {
                0.0
            } else {
                xh - 1.0
            }
        }
        _ => 0.0,
    };
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(json!(0))
}

fn string(s: &Map<String, Value>) -> String {
    let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = s
        .get("maxLength")
        .and_then(Value::as_u64)
        .map(|m| m as usize);
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        return from_pattern(p, min);
    }
    let base = match s.get("format").and_then(Value::as_str) {
        Some("date-time") => "2026-01-01T00:00:00Z".to_owned(),
        Some("date") => "2026-01-01".to_owned(),
        Some("time") => "00:00:00Z".to_owned(),
        Some("email") => "alex@example.com".to_owned(),
        Some("uri") | Some("url") => "https://example.com/".to_owned(),
        Some("uuid") => "00000000-0000-4000-8000-000000000000".to_owned(),
        _ => "a".repeat(min.max(1)),
    };
    let mut out = base;
    while out.chars().count() < min {
        out.push('a');
    }
    if let Some(m) = max {
        out = out.chars().take(m).collect();
    }
    out
}

// ------------------------------------------------------------------ patterns

/// One piece of a pattern and how often it repeats.
enum Atom {
    /// The first character the piece accepts.
    Char(char),
    /// A group: its first alternative.
    Group(Vec<(Atom, usize, Option<usize>)>),
}

/// The shortest string the pattern accepts, stretched to `min_len` when it has an open
/// repetition. Anchors are ignored (the whole string is the match).
fn from_pattern(p: &str, min_len: usize) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let seq = sequence(&chars, &mut i);
    let mut out = String::new();
    render(&seq, &mut out);
    if out.chars().count() < min_len {
        // Repeat the first repeatable piece until the string is long enough.
        stretch(&seq, min_len - out.chars().count(), &mut out);
    }
    out
}

fn render(seq: &[(Atom, usize, Option<usize>)], out: &mut String) {
    for (atom, lo, _) in seq {
        for _ in 0..*lo {
            match atom {
                Atom::Char(c) => out.push(*c),
                Atom::Group(g) => render(g, out),
            }
        }
    }
}

fn stretch(seq: &[(Atom, usize, Option<usize>)], missing: usize, out: &mut String) {
    // Only single characters are stretched, in place of the rendered prefix; rebuild.
    let mut rebuilt = String::new();
    let mut left = missing;
    for (atom, lo, hi) in seq {
        let room = hi.map_or(usize::MAX, |h| h.saturating_sub(*lo));
        let extra = if matches!(atom, Atom::Char(_)) {
            left.min(room)
        } else {
            0
        };
        left -= extra;
        for _ in 0..lo + extra {
            match atom {
                Atom::Char(c) => rebuilt.push(*c),
                Atom::Group(g) => render(g, &mut rebuilt),
            }
        }
    }
    *out = rebuilt;
}

/// Parses until `)` or the end; of alternatives (`|`) keeps the first.
fn sequence(c: &[char], i: &mut usize) -> Vec<(Atom, usize, Option<usize>)> {
    let mut first: Option<Vec<(Atom, usize, Option<usize>)>> = None;
    let mut cur = Vec::new();
    while *i < c.len() {
        let ch = c[*i];
        let atom = match ch {
            ')' => break,
            '|' => {
                *i += 1;
                first.get_or_insert(std::mem::take(&mut cur));
                cur.clear();
                continue;
            }
            '^' | '$' => {
                *i += 1;
                continue;
            }
            '(' => {
                *i += 1;
                // Non-capturing and named groups: skip the `?:` / `?<name>` prefix.
                if c.get(*i) == Some(&'?') {
                    while *i < c.len() && c[*i] != ':' && c[*i] != '>' {
                        *i += 1;
                    }
                    *i += 1;
                }
                let g = sequence(c, i);
                *i += 1; // ')'
                Atom::Group(g)
            }
            '[' => {
                *i += 1;
                Atom::Char(class(c, i))
            }
            '\\' => {
                *i += 1;
                let e = c.get(*i).copied().unwrap_or('\\');
                *i += 1;
                Atom::Char(escape(e))
            }
            '.' => {
                *i += 1;
                Atom::Char('a')
            }
            other => {
                *i += 1;
                Atom::Char(other)
            }
        };
        let (lo, hi) = quantifier(c, i);
        cur.push((atom, lo, hi));
    }
    first.unwrap_or(cur)
}

fn escape(e: char) -> char {
    match e {
        'd' => '0',
        'w' => 'a',
        's' => ' ',
        'D' | 'W' | 'S' => 'x',
        other => other,
    }
}

/// A character class `[...]` (the `[` consumed): its first accepted character.
fn class(c: &[char], i: &mut usize) -> char {
    let negated = c.get(*i) == Some(&'^');
    if negated {
        *i += 1;
    }
    let mut members: Vec<char> = Vec::new();
    let mut first = true;
    while *i < c.len() && (c[*i] != ']' || first) {
        first = false;
        let mut ch = c[*i];
        *i += 1;
        if ch == '\\' {
            ch = escape(c.get(*i).copied().unwrap_or('\\'));
            *i += 1;
        }
        members.push(ch);
    }
    *i += 1; // ']'
    if negated {
        return ['a', 'x', '0', 'Z', '_']
            .into_iter()
            .find(|x| !members.contains(x))
            .unwrap_or('~');
    }
    members.first().copied().unwrap_or('a')
}

/// `*`, `+`, `?`, `{n}`, `{n,}`, `{n,m}` after an atom (lazy `?` suffix ignored).
fn quantifier(c: &[char], i: &mut usize) -> (usize, Option<usize>) {
    let q = match c.get(*i) {
        Some('*') => (0, None),
        Some('+') => (1, None),
        Some('?') => (0, Some(1)),
        Some('{') => {
            let close = c[*i..].iter().position(|x| *x == '}').map(|p| *i + p);
            let Some(close) = close else {
                return (1, Some(1));
            };
            let body: String = c[*i + 1..close].iter().collect();
            *i = close;
            let mut parts = body.splitn(2, ',');
            let lo = parts
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            let hi = match parts.next() {
                None => Some(lo),
                Some(h) if h.trim().is_empty() => None,
                Some(h) => h.trim().parse().ok(),
            };
            (lo, hi)
        }
        _ => return (1, Some(1)),
    };
    *i += 1;
    if c.get(*i) == Some(&'?') {
        *i += 1;
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_enums_patterns_and_bounds() {
        let end_call = json!({"type": "object",
            "properties": {"outcome": {"type": "string", "enum": ["success", "failure"]},
                           "summary": {"type": "string"}, "extra": {"type": "integer"}},
            "required": ["outcome", "summary"], "additionalProperties": false});
        let v = instance(&end_call);
        assert_eq!(v["outcome"], "success");
        assert!(v["summary"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(v.get("extra").is_none());

        let digits = json!({"type": "object", "properties": {"digits": {"type": "string", "pattern": "^[0-9*#wW]{1,32}$"}}, "required": ["digits"]});
        assert_eq!(instance(&digits)["digits"], "0");
        assert_eq!(from_pattern("^\\+[1-9][0-9]{7,14}$", 0), "+10000000");
        assert_eq!(from_pattern("^(yes|no)-[a-z]+$", 0), "yes-a");
        assert_eq!(from_pattern("^[A-Z]{2}\\d{3}$", 0), "AA000");
        assert_eq!(from_pattern("^[a-z]+$", 4), "aaaa");

        let n = json!({"type": "object", "properties": {
            "count": {"type": "integer", "minimum": 3, "maximum": 9},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "neg": {"type": "integer", "maximum": -5},
            "step": {"type": "integer", "minimum": 7, "multipleOf": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "when": {"type": ["string", "null"], "format": "date"}},
            "required": ["count", "ratio", "neg", "step", "tags", "when"]});
        let v = instance(&n);
        assert_eq!(v["count"], 3);
        assert!(
            v["ratio"].as_f64().is_some_and(|r| r > 0.0 && r <= 1.0),
            "{v}"
        );
        assert_eq!(v["neg"], -5);
        assert_eq!(v["step"], 10);
        assert_eq!(v["tags"], json!(["a", "a"]));
        assert_eq!(v["when"], "2026-01-01");
    }

    #[test]
    fn fits_tells_arguments_made_for_another_schema() {
        let reason = json!({"type": "object", "properties": {"reason": {"type": "string"}},
                            "required": ["reason"], "additionalProperties": false});
        assert!(fits(&reason, &json!({"reason": "done"})));
        assert!(!fits(
            &reason,
            &json!({"outcome": "success", "summary": "x"})
        ));
        assert!(fits(&reason, &instance(&reason)));
    }
}
