//! What the agent makes of the conversation: the callee's turns (which script they belong
//! to, or the plain agent's answer), the items the client creates (function-call outputs,
//! user and system messages) and the truncation of assistant audio the callee did not hear.

use serde_json::{Value, json};

use super::{Res, Session, Tx, ev};

impl Session {
    /// One callee turn, as the agent understood it (`None`: audio it could not make out).
    ///
    /// The agent learns which scenario it is in only from what reaches it: a line of the
    /// script it follows moves it along that script; a line that only one scenario has
    /// makes it join that scenario's script right after the line (so the number dialed
    /// decides, however the request was worded); anything else gets the plain agent's answer.
    pub(super) fn hear(&mut self, text: Option<&str>) {
        let Some(text) = text else {
            if self.scenario.is_none() {
                self.pending = Some(self.brief.reply(None, &self.callee_lines, false));
            }
            return;
        };
        if let Some(sc) = &self.scenario
            && sc.script.iter().any(|s| s.callee.as_deref() == Some(text))
        {
            if let Some(i) = sc
                .script
                .iter()
                .enumerate()
                .skip(self.pos)
                .find(|(_, s)| s.callee.as_deref() == Some(text))
                .map(|(i, _)| i)
            {
                self.pos = i + 1;
            }
            return;
        }
        let owners: Vec<_> = self
            .st
            .config
            .scenarios
            .iter()
            .filter(|s| {
                s.script.iter().any(|st| st.callee.as_deref() == Some(text))
                    || s.answer.greeting.as_deref() == Some(text)
            })
            .collect();
        if let [only] = owners[..] {
            let pos = only
                .script
                .iter()
                .position(|st| st.callee.as_deref() == Some(text))
                .map_or(0, |i| i + 1);
            let name = only.name.clone();
            self.scenario = Some(only.clone());
            self.pos = pos;
            self.greeted = true;
            self.pending = None;
            self.with(|s| s.scenario = Some(name));
            return;
        }
        // No one script: the plain agent answers for the goal it was given.
        self.scenario = None;
        let can_press = self.has_tool("send_dtmf");
        self.pending = Some(self.brief.reply(Some(text), &self.callee_lines, can_press));
        self.callee_lines.push(text.to_owned());
    }

    pub(super) fn has_tool(&self, name: &str) -> bool {
        self.config["tools"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t["name"] == name))
    }

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
                // A user's typed words are a turn like spoken ones: the plain agent answers
                // them on the next response.create.
                let typed: Vec<&str> = item
                    .get("content")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .filter(|p| p["type"] == "input_text")
                            .filter_map(|p| p["text"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                if role == "user" && !typed.is_empty() && self.scenario.is_none() {
                    let text = typed.join(" ");
                    let can_press = self.has_tool("send_dtmf");
                    self.pending =
                        Some(self.brief.reply(Some(&text), &self.callee_lines, can_press));
                    self.callee_lines.push(text);
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
