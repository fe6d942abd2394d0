//! Protocol fixtures copied from the sheets, and the shape check the wire tests share.
//! (Included with `#[path]`.)
#![allow(dead_code)]

use serde_json::Value;

/// `tests/fixtures/{dir}/{name}`, as text.
pub fn fixture_text(dir: &str, name: &str) -> String {
    let path = format!("{}/tests/fixtures/{dir}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `tests/fixtures/{dir}/{name}`, as JSON.
pub fn fixture(dir: &str, name: &str) -> Value {
    serde_json::from_str(&fixture_text(dir, name)).unwrap_or_else(|e| panic!("{dir}/{name}: {e}"))
}

/// Every key of `expected` (a sheet's example) is in `actual` with a value of the same JSON
/// type, recursively through objects. A `null` in the example allows any value: the sheets
/// show nullable fields as null.
pub fn assert_shape(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Null, _) => {}
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let av = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} missing in {actual}"));
                assert_shape(ev, av, &format!("{path}.{k}"));
            }
        }
        (Value::String(_), Value::String(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Array(_), Value::Array(_)) => {}
        _ => panic!("{path}: expected a value like {expected}, got {actual}"),
    }
}
