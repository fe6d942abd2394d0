//! Conversation items the client creates or truncates: function-call outputs, user and system
//! messages, and the truncation of assistant audio the callee did not hear.

use serde_json::{Value, json};

use super::{Res, Session, Tx, ev};

impl Session {
    pub(super) async fn item_create(&mut self, tx: &mut Tx, v: &Value, raw: &str) -> Res {
        let Some(item) = v.get("item").and_then(Value::as_object) else {
            self.violation("missing-item", "conversation.item.create without item", raw);
            return self
                .error(
                    tx,
                    "missing_required_parameter",
                    "Missing required parameter: 'item'.",
                    Some("item"),
                )
                .await;
        };
        match item.get("type").and_then(Value::as_str) {
            Some("function_call_output") => {
                let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or("");
                if !self.call_ids.iter().any(|c| c == call_id) {
                    self.violation("unknown-call-id", &format!("function_call_output for call_id '{call_id}' that this session never made"), raw);
                    return self
                        .error(
                            tx,
                            "invalid_value",
                            "Tool call ID not found in conversation.",
                            Some("item.call_id"),
                        )
                        .await;
                }
                if item.get("output").and_then(Value::as_str).is_none() {
                    self.violation(
                        "bad-function-output",
                        "function_call_output.output must be a string",
                        raw,
                    );
                    return self
                        .error(
                            tx,
                            "invalid_type",
                            "Invalid type for 'item.output': expected a string.",
                            Some("item.output"),
                        )
                        .await;
                }
                let out = item["output"].as_str().unwrap_or("").to_owned();
                self.with(|s| s.function_outputs.push(out));
            }
            Some("message") => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("");
                if !["user", "system"].contains(&role) {
                    self.violation(
                        "bad-item",
                        "clients may create user or system messages only",
                        raw,
                    );
                    return self
                        .error(
                            tx,
                            "invalid_value",
                            "Invalid 'item.role'.",
                            Some("item.role"),
                        )
                        .await;
                }
            }
            other => {
                self.violation("bad-item", &format!("unsupported item type {other:?}"), raw);
                return self
                    .error(
                        tx,
                        "invalid_value",
                        "Invalid 'item.type'.",
                        Some("item.type"),
                    )
                    .await;
            }
        }
        let mut stored = Value::Object(item.clone());
        let id = self.st.realtime.next_id("item");
        stored["id"] = json!(id);
        stored["status"] = json!("completed");
        self.item_event(tx, "conversation.item.added", &stored)
            .await?;
        self.item_event(tx, "conversation.item.done", &stored).await
    }

    pub(super) async fn truncate(&mut self, tx: &mut Tx, v: &Value, raw: &str) -> Res {
        let item_id = v
            .get("item_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let end_ms = v.get("audio_end_ms").and_then(Value::as_u64);
        let content_index = v.get("content_index").and_then(Value::as_u64);
        let Some(sent) = self.item_audio.get(&item_id).copied() else {
            self.violation(
                "truncate-unknown-item",
                &format!("truncate of unknown item '{item_id}'"),
                raw,
            );
            return self
                .error(
                    tx,
                    "item_not_found",
                    &format!("Item with item_id '{item_id}' not found."),
                    Some("item_id"),
                )
                .await;
        };
        let (Some(end_ms), Some(0)) = (end_ms, content_index) else {
            self.violation(
                "bad-truncate",
                "truncate needs audio_end_ms and content_index 0",
                raw,
            );
            return self
                .error(
                    tx,
                    "invalid_value",
                    "Invalid truncate: audio_end_ms and content_index (0) are required.",
                    Some("audio_end_ms"),
                )
                .await;
        };
        if end_ms * 8 > sent as u64 {
            self.violation(
                "truncate-beyond-audio",
                &format!(
                    "audio_end_ms {end_ms} is beyond the {} ms of audio sent for the item",
                    sent / 8
                ),
                raw,
            );
            return self
                .error(
                    tx,
                    "invalid_value",
                    &format!(
                        "audio_end_ms ({end_ms}) is greater than the audio duration ({} ms).",
                        sent / 8
                    ),
                    Some("audio_end_ms"),
                )
                .await;
        }
        self.with(|s| s.truncations.push((item_id.clone(), end_ms)));
        self.send(
            tx,
            ev(
                "conversation.item.truncated",
                json!({"item_id": item_id, "content_index": 0, "audio_end_ms": end_ms}),
            ),
        )
        .await
    }
}
