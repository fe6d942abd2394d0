//! `session.update` validation against the GA shape (protocols/openai-realtime.md §3.1), and
//! how an accepted update changes the session's effective configuration.
//!
//! A rejection names the first offending parameter, as the real service does, so that the
//! engine's mistake is reported where it is.

use serde_json::{Map, Value, json};

/// The configuration a session starts with, before any `session.update` (what the real
/// service reports in `session.created`).
pub(super) fn default_config(model: &str) -> Value {
    json!({
        "type": "realtime", "object": "realtime.session", "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are a helpful assistant.",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "noise_reduction": null, "transcription": null,
                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                    "silence_duration_ms": 200, "idle_timeout_ms": null, "create_response": true, "interrupt_response": true}
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0}
        },
        "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "truncation": "auto"
    })
}

/// Beta names that the GA interface rejects as unknown parameters.
pub(super) const BETA_FIELDS: &[&str] = &[
    "input_audio_format",
    "output_audio_format",
    "modalities",
    "voice",
    "turn_detection",
    "input_audio_transcription",
    "temperature",
    "max_response_output_tokens",
];

/// Why a `session.update` was rejected: (error code, param, message).
type Invalid = (&'static str, String, String);

fn check_keys(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), Invalid> {
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        let p = format!("{path}.{k}");
        return Err((
            "unknown_parameter",
            p.clone(),
            format!("Unknown parameter: '{p}'."),
        ));
    }
    Ok(())
}

/// `parent.key` as an object with only `allowed` keys, or `None` when absent or null (the GA
/// way to turn a feature off).
fn nullable_object<'a>(
    parent: &'a Map<String, Value>,
    path: &str,
    key: &str,
    allowed: &[&str],
) -> Result<Option<&'a Map<String, Value>>, Invalid> {
    let Some(v) = parent.get(key).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(obj) = v.as_object() else {
        bad(&format!("{path}.{key}"), "must be an object or null".into())?;
        return Ok(None);
    };
    check_keys(obj, &format!("{path}.{key}"), allowed)?;
    Ok(Some(obj))
}

fn bad(param: &str, msg: String) -> Result<(), Invalid> {
    Err(("invalid_value", param.to_owned(), msg))
}

/// Checks a `session.update` body against the GA shape (protocols/openai-realtime.md §3.1).
pub(super) fn validate_session(s: &Map<String, Value>) -> Result<(), Invalid> {
    check_keys(
        s,
        "session",
        &[
            "type",
            "model",
            "instructions",
            "output_modalities",
            "audio",
            "tools",
            "tool_choice",
            "max_output_tokens",
            "truncation",
            "include",
            "prompt",
            "tracing",
            "reasoning",
            "parallel_tool_calls",
        ],
    )?;
    match s.get("type").and_then(Value::as_str) {
        Some("realtime") | Some("transcription") => {}
        Some(other) => {
            return bad(
                "session.type",
                format!(
                    "Invalid value: '{other}'. Supported values are: 'realtime' and 'transcription'."
                ),
            );
        }
        None => {
            return Err((
                "missing_required_parameter",
                "session.type".into(),
                "Missing required parameter: 'session.type'.".into(),
            ));
        }
    }
    if let Some(i) = s.get("instructions")
        && !i.is_string()
    {
        return bad(
            "session.instructions",
            "Invalid type for 'session.instructions': expected a string.".into(),
        );
    }
    if let Some(m) = s.get("output_modalities") {
        let ok = m
            .as_array()
            .is_some_and(|a| a.len() == 1 && (a[0] == "audio" || a[0] == "text"));
        if !ok {
            return bad(
                "session.output_modalities",
                "output_modalities must be [\"audio\"] or [\"text\"].".into(),
            );
        }
    }
    if let Some(audio) = s.get("audio") {
        let Some(audio) = audio.as_object() else {
            return bad("session.audio", "session.audio must be an object".into());
        };
        check_keys(audio, "session.audio", &["input", "output"])?;
        for dir in ["input", "output"] {
            let Some(side) = audio.get(dir) else { continue };
            let Some(side) = side.as_object() else {
                return bad(&format!("session.audio.{dir}"), "must be an object".into());
            };
            let path = format!("session.audio.{dir}");
            if dir == "input" {
                check_keys(
                    side,
                    &path,
                    &[
                        "format",
                        "noise_reduction",
                        "transcription",
                        "turn_detection",
                    ],
                )?;
            } else {
                check_keys(side, &path, &["format", "voice", "speed"])?;
            }
            if let Some(f) = side.get("format") {
                let Some(f) = f.as_object() else {
                    return bad(
                        &format!("{path}.format"),
                        "format must be an object like {\"type\":\"audio/pcmu\"}".into(),
                    );
                };
                check_keys(f, &format!("{path}.format"), &["type", "rate"])?;
                match (
                    f.get("type").and_then(Value::as_str),
                    f.get("rate").and_then(Value::as_u64),
                ) {
                    (Some("audio/pcmu") | Some("audio/pcma"), None) => {}
                    (Some("audio/pcm"), None | Some(24000)) => {}
                    (Some("audio/pcm"), Some(r)) if r < 24000 => {
                        return Err((
                            "integer_below_min_value",
                            format!("{path}.format.rate"),
                            format!(
                                "Invalid '{path}.format.rate': integer below minimum value. Expected a value >= 24000, but got {r} instead."
                            ),
                        ));
                    }
                    (t, _) => {
                        return bad(
                            &format!("{path}.format.type"),
                            format!(
                                "Invalid audio format {t:?}: supported are audio/pcm (rate 24000), audio/pcmu, audio/pcma."
                            ),
                        );
                    }
                }
            }
            const TURN_DETECTION: &[&str] = &[
                "type",
                "threshold",
                "prefix_padding_ms",
                "silence_duration_ms",
                "idle_timeout_ms",
                "create_response",
                "interrupt_response",
                "eagerness",
            ];
            if let Some(td) = nullable_object(side, &path, "turn_detection", TURN_DETECTION)? {
                match td.get("type").and_then(Value::as_str) {
                    Some("server_vad") | Some("semantic_vad") => {}
                    t => {
                        return bad(
                            &format!("{path}.turn_detection.type"),
                            format!(
                                "Invalid turn_detection type {t:?}: server_vad or semantic_vad."
                            ),
                        );
                    }
                }
            }
            nullable_object(
                side,
                &path,
                "transcription",
                &["model", "language", "prompt"],
            )?;
            if let Some(v) = side.get("voice")
                && !v.is_string()
                && !v.is_object()
            {
                return bad(
                    &format!("{path}.voice"),
                    "voice must be a voice name".into(),
                );
            }
        }
    }
    if let Some(tc) = s.get("tool_choice") {
        check_tool_choice(tc)
            .map_err(|m| ("invalid_value", "session.tool_choice".to_owned(), m))?;
    }
    if let Some(tools) = s.get("tools") {
        let Some(tools) = tools.as_array() else {
            return bad("session.tools", "tools must be an array".into());
        };
        for (i, t) in tools.iter().enumerate() {
            let path = format!("session.tools[{i}]");
            let Some(t) = t.as_object() else {
                return bad(&path, "each tool must be an object".into());
            };
            check_keys(t, &path, &["type", "name", "description", "parameters"])?;
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return bad(
                    &format!("{path}.type"),
                    "tool type must be 'function'".into(),
                );
            }
            let name = t.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return bad(
                    &format!("{path}.name"),
                    format!("Invalid tool name '{name}': use ^[a-zA-Z0-9_-]{{1,64}}$."),
                );
            }
            if !t.get("parameters").is_none_or(Value::is_object) {
                return bad(
                    &format!("{path}.parameters"),
                    "parameters must be a JSON Schema object".into(),
                );
            }
        }
    }
    Ok(())
}

/// `tool_choice`: `auto`, `none`, `required`, `{type: function, name}` or `{type: mcp, …}`.
pub(super) fn check_tool_choice(tc: &Value) -> Result<(), String> {
    match tc {
        Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => Ok(()),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") if o.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) => {
                match o.keys().find(|k| *k != "type" && *k != "name") {
                    Some(k) => Err(format!("Unknown parameter in tool_choice: '{k}'.")),
                    None => Ok(()),
                }
            }
            Some("function") => Err("tool_choice of type 'function' needs a 'name'.".into()),
            Some("mcp") => Ok(()),
            _ => Err("tool_choice object must have type 'function' (with a name) or 'mcp'.".into()),
        },
        _ => Err("Invalid value for 'tool_choice': use 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": …}.".into()),
    }
}

/// Applies a partial session over the effective config (only present fields change).
/// An audio `format` is a tagged union and is replaced whole: `{type: audio/pcmu}` over the
/// default `{type: audio/pcm, rate: 24000}` must not keep the PCM rate.
pub(super) fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if k != "format" && v.is_object() && b.get(k).is_some_and(Value::is_object) {
                    merge(b.get_mut(k).expect("checked"), v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ga_session_update_from_the_sheet_is_valid() {
        let v: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/realtime/session_update_ga.json"
        ))
        .unwrap();
        validate_session(v["session"].as_object().unwrap()).unwrap();
    }

    #[test]
    fn beta_and_bad_fields_are_named() {
        let beta = json!({"type": "realtime", "input_audio_format": "g711_ulaw"});
        let e = validate_session(beta.as_object().unwrap()).unwrap_err();
        assert_eq!(
            (e.0, e.1.as_str()),
            ("unknown_parameter", "session.input_audio_format")
        );
        let rate = json!({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}});
        assert_eq!(
            validate_session(rate.as_object().unwrap()).unwrap_err().0,
            "integer_below_min_value"
        );
        let no_type = json!({"instructions": "x"});
        assert_eq!(
            validate_session(no_type.as_object().unwrap())
                .unwrap_err()
                .1,
            "session.type"
        );
    }
}
