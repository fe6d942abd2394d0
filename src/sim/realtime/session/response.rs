//! The scripted agent's responses: which lines it says next, and each response's events
//! (output items, audio and transcript deltas, a function call, `response.done`) paced as a
//! generating model would send them.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::super::generic::Move;
use super::super::schema;
use super::super::validate::check_tool_choice;
use super::{Res, Session, Tx, ev, fastrand_u64};
use crate::sim::scenario::ToolCall;
use crate::sim::stats::{Dir, tag_of};

/// Audio sent per delta (100 ms of mu-law).
const CHUNK: usize = 800;
/// Generation runs this many times faster than real time.
const GENERATION_SPEEDUP: f64 = 4.0;

struct Line {
    item_id: String,
    text: Arc<str>,
    audio: Vec<u8>,
    sent: usize,
    started: bool,
}

pub(super) struct Resp {
    id: String,
    lines: Vec<Line>,
    cur: usize,
    tool: Option<ToolCall>,
    pub(super) next_at: Instant,
    output: Vec<Value>,
}

/// What a `response.create` asks beyond the session's configuration.
#[derive(Default)]
pub(super) struct ResponseOptions {
    tools: Option<Value>,
    tool_choice: Option<Value>,
}

/// `response.create.response` fields (protocols/openai-realtime.md §4).
const RESPONSE_FIELDS: &[&str] = &[
    "instructions",
    "output_modalities",
    "audio",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "conversation",
    "input",
    "metadata",
    "prompt",
    "reasoning",
    "parallel_tool_calls",
];

impl Session {
    /// The overrides of a `response.create`, or why they are refused.
    pub(super) fn response_options(
        &self,
        v: &Value,
        raw: &str,
    ) -> Result<ResponseOptions, (&'static str, String, String)> {
        let Some(r) = v.get("response").filter(|r| !r.is_null()) else {
            return Ok(ResponseOptions::default());
        };
        let Some(r) = r.as_object() else {
            self.violation(
                "bad-response",
                "response.create.response must be an object",
                raw,
            );
            return Err((
                "invalid_type",
                "response".into(),
                "Invalid type for 'response': expected an object.".into(),
            ));
        };
        if let Some(k) = r.keys().find(|k| !RESPONSE_FIELDS.contains(&k.as_str())) {
            self.violation(
                "unknown-parameter",
                &format!("'response.create' has unknown field 'response.{k}'"),
                raw,
            );
            return Err((
                "unknown_parameter",
                format!("response.{k}"),
                format!("Unknown parameter: 'response.{k}'."),
            ));
        }
        if let Some(tc) = r.get("tool_choice") {
            check_tool_choice(tc)
                .map_err(|m| ("invalid_value", "response.tool_choice".into(), m))?;
        }
        Ok(ResponseOptions {
            tools: r.get("tools").cloned(),
            tool_choice: r.get("tool_choice").cloned(),
        })
    }

    /// The agent's next lines from the script, or the plain agent's (see `generic`).
    pub(super) fn next_lines(&mut self) -> (Vec<String>, Option<ToolCall>) {
        let Some(sc) = &self.scenario else {
            let pending = self.pending.take();
            if !self.greeted {
                self.greeted = true;
                // A goodbye or a menu said before the greeting is answered as such;
                // anything else gets the greeting, which states why the agent calls.
                if !matches!(pending, Some(Move::Close { .. } | Move::Press { .. })) {
                    return (vec![self.brief.greeting()], None);
                }
            }
            return match pending {
                Some(Move::Say(line)) => (vec![line], None),
                Some(Move::Close {
                    line,
                    outcome,
                    summary,
                }) => (vec![line], self.end_call(outcome, &summary)),
                Some(Move::Press { line, digits }) => (
                    vec![line],
                    Some(ToolCall {
                        name: "send_dtmf".into(),
                        arguments: self.arguments_for("send_dtmf", &[("digits", json!(digits))]),
                    }),
                ),
                None => (Vec::new(), None),
            };
        };
        let mut lines = Vec::new();
        let mut tool = None;
        while let Some(step) = sc.script.get(self.pos) {
            if step.callee.is_some()
                || step.dtmf.is_some()
                || step.hangup
                || step.expect_digits.is_some()
                || step.silence_ms.is_some()
            {
                break;
            }
            if let Some(a) = &step.agent {
                lines.push(a.clone());
            }
            self.pos += 1;
            if step.tool.is_some() {
                tool = step.tool.clone();
                break;
            }
        }
        self.greeted = true;
        (lines, tool)
    }

    /// The plain agent's hang-up, when the session offers `end_call`.
    fn end_call(&self, outcome: &str, summary: &str) -> Option<ToolCall> {
        if !self.has_tool("end_call") {
            return None;
        }
        Some(ToolCall {
            name: "end_call".into(),
            arguments: self.arguments_for(
                "end_call",
                &[
                    ("outcome", json!(outcome)),
                    ("summary", json!(summary)),
                    ("reason", json!(summary)),
                ],
            ),
        })
    }

    /// Arguments for a session tool: a minimal instance of its parameters schema, with the
    /// given values wherever the schema has that property and accepts the value.
    fn arguments_for(&self, name: &str, values: &[(&str, Value)]) -> Value {
        let params = self.config["tools"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["name"] == name))
            .map(|t| t["parameters"].clone())
            .unwrap_or(Value::Null);
        let mut args = schema::instance(&params);
        if !args.is_object() {
            args = json!({});
        }
        for (k, v) in values {
            let Some(prop) = params.pointer(&format!("/properties/{k}")) else {
                continue;
            };
            let allowed = prop
                .get("enum")
                .and_then(Value::as_array)
                .is_none_or(|e| e.contains(v));
            if allowed {
                args[*k] = v.clone();
            }
        }
        args
    }

    /// Starts a response: what the script (or the plain agent) says next, or the function
    /// call `tool_choice` forces. Every `response.create` and every automatic turn gets one,
    /// empty when the agent has nothing to say (its script waits for the callee).
    pub(super) async fn respond(&mut self, tx: &mut Tx, opts: ResponseOptions) -> Res {
        let tools = opts.tools.unwrap_or_else(|| self.config["tools"].clone());
        let choice = opts
            .tool_choice
            .unwrap_or_else(|| self.config["tool_choice"].clone());
        let tool_params = |name: &str| {
            tools
                .as_array()
                .and_then(|a| a.iter().find(|t| t["name"] == name))
                .map(|t| t["parameters"].clone())
        };
        let forced = choice
            .get("type")
            .filter(|t| *t == "function")
            .and(choice.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (lines, tool) = if let Some(name) = forced {
            // The client wants this function called now: the call alone, with arguments
            // valid against its schema (the script's, when its next tool is this one).
            let Some(params) = tool_params(&name) else {
                self.violation(
                    "unknown-tool-choice",
                    &format!("tool_choice names '{name}', which is not among the session's tools"),
                    &choice.to_string(),
                );
                return self
                    .error(
                        tx,
                        "invalid_value",
                        &format!(
                            "Tool choice '{name}' is not one of the tools the session offers."
                        ),
                        Some("tool_choice"),
                    )
                    .await;
            };
            let scripted = self.scenario.as_ref().and_then(|sc| {
                sc.script[self.pos.min(sc.script.len())..]
                    .iter()
                    .take_while(|s| s.agent.is_some())
                    .find_map(|s| s.tool.clone())
                    .filter(|t| t.name == name && schema::fits(&params, &t.arguments))
            });
            let arguments = scripted
                .map(|t| t.arguments)
                .unwrap_or_else(|| schema::instance(&params));
            (Vec::new(), Some(ToolCall { name, arguments }))
        } else {
            let (lines, mut tool) = self.next_lines();
            if choice == "none" {
                tool = None;
            }
            if choice == "required"
                && tool.is_none()
                && let Some(first) = tools.as_array().and_then(|a| a.first())
            {
                tool = Some(ToolCall {
                    name: first["name"].as_str().unwrap_or("").to_owned(),
                    arguments: schema::instance(&first["parameters"]),
                });
            }
            (lines, tool)
        };
        let id = self.st.realtime.next_id("resp");
        self.with(|s| s.responses_created += 1);
        let first_byte = self
            .scenario
            .as_ref()
            .and_then(|s| s.faults.model_first_byte_ms)
            .map(|ms| self.st.config.scaled(ms))
            .unwrap_or(Duration::from_millis(1));
        let lines = lines
            .into_iter()
            .map(|t| Line {
                item_id: self.st.realtime.next_id("item"),
                audio: self.st.voices.register(&t),
                text: Arc::from(t.as_str()),
                sent: 0,
                started: false,
            })
            .collect();
        self.send(tx, ev("response.created", json!({"response": {"object": "realtime.response", "id": id, "status": "in_progress", "status_details": null, "output": [], "output_modalities": ["audio"]}}))).await?;
        self.resp = Some(Resp {
            id,
            lines,
            cur: 0,
            tool,
            next_at: Instant::now() + first_byte,
            output: Vec::new(),
        });
        Ok(())
    }

    /// Emits the next piece of the active response.
    pub(super) async fn step_response(&mut self, tx: &mut Tx) -> Res {
        let Some(mut r) = self.resp.take() else {
            return Ok(());
        };
        let pace = Duration::from_secs_f64(
            CHUNK as f64 / 8000.0 / GENERATION_SPEEDUP / self.st.config.speed.max(0.001),
        );
        if let Some(line) = r.lines.get_mut(r.cur) {
            let item = json!({"id": line.item_id, "object": "realtime.item", "type": "message", "status": "in_progress", "role": "assistant", "content": []});
            if !line.started {
                line.started = true;
                let out_index = r.output.len();
                self.output_item(tx, "response.output_item.added", &r.id, out_index, &item)
                    .await?;
                self.item_event(tx, "conversation.item.added", &item)
                    .await?;
                self.send(tx, ev("response.content_part.added", json!({"response_id": r.id, "item_id": line.item_id, "output_index": out_index, "content_index": 0, "part": {"type": "audio", "transcript": ""}}))).await?;
            }
            let out_index = r.output.len();
            let end = (line.sent + CHUNK).min(line.audio.len());
            let chunk = &line.audio[line.sent..end];
            let tag = self.scenario.as_ref().map_or(0, |s| tag_of(&s.name));
            self.st.stats.sent_tagged(Dir::Downlink, chunk, tag);
            let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
            self.send(tx, format!(r#"{{"type":"response.output_audio.delta","event_id":"event_{:016x}","response_id":"{}","item_id":"{}","output_index":{out_index},"content_index":0,"delta":"{b64}"}}"#, fastrand_u64(), r.id, line.item_id)).await?;
            // Transcript deltas in proportion to the audio sent.
            let chars: Vec<char> = line.text.chars().collect();
            let from = chars.len() * line.sent / line.audio.len();
            let to = chars.len() * end / line.audio.len();
            if to > from {
                let delta: String = chars[from..to].iter().collect();
                self.send(tx, ev("response.output_audio_transcript.delta", json!({"response_id": r.id, "item_id": line.item_id, "output_index": out_index, "content_index": 0, "delta": delta}))).await?;
            }
            line.sent = end;
            *self.item_audio.entry(line.item_id.clone()).or_default() = end;
            if line.sent == line.audio.len() {
                let done_item = json!({"id": line.item_id, "object": "realtime.item", "type": "message", "status": "completed", "role": "assistant",
                                        "content": [{"type": "output_audio", "transcript": &*line.text}]});
                self.send(tx, ev("response.output_audio.done", json!({"response_id": r.id, "item_id": line.item_id, "output_index": out_index, "content_index": 0}))).await?;
                self.send(tx, ev("response.output_audio_transcript.done", json!({"response_id": r.id, "item_id": line.item_id, "output_index": out_index, "content_index": 0, "transcript": &*line.text}))).await?;
                self.send(tx, ev("response.content_part.done", json!({"response_id": r.id, "item_id": line.item_id, "output_index": out_index, "content_index": 0, "part": {"type": "audio", "transcript": &*line.text}}))).await?;
                self.item_event(tx, "conversation.item.done", &done_item)
                    .await?;
                self.output_item(
                    tx,
                    "response.output_item.done",
                    &r.id,
                    out_index,
                    &done_item,
                )
                .await?;
                let t = line.text.to_string();
                self.with(|s| s.agent_said.push(t));
                r.output.push(done_item);
                r.cur += 1;
            }
            r.next_at = Instant::now() + pace;
            self.resp = Some(r);
            return Ok(());
        }
        if let Some(tool) = r.tool.take() {
            let out_index = r.output.len();
            let item_id = self.st.realtime.next_id("item");
            let call_id = self.st.realtime.next_id("call");
            let args = tool.arguments.to_string();
            let mut item = json!({"id": item_id, "object": "realtime.item", "type": "function_call", "status": "in_progress", "call_id": call_id, "name": tool.name, "arguments": ""});
            self.output_item(tx, "response.output_item.added", &r.id, out_index, &item)
                .await?;
            self.item_event(tx, "conversation.item.added", &item)
                .await?;
            self.send(tx, ev("response.function_call_arguments.delta", json!({"response_id": r.id, "item_id": item_id, "output_index": out_index, "call_id": call_id, "delta": args}))).await?;
            self.send(tx, ev("response.function_call_arguments.done", json!({"response_id": r.id, "item_id": item_id, "output_index": out_index, "call_id": call_id, "name": tool.name, "arguments": args}))).await?;
            item["status"] = json!("completed");
            item["arguments"] = json!(args);
            self.item_event(tx, "conversation.item.done", &item).await?;
            self.output_item(tx, "response.output_item.done", &r.id, out_index, &item)
                .await?;
            self.call_ids.push(call_id);
            self.with(|s| s.tool_calls.push(format!("{} {}", tool.name, args)));
            r.output.push(item);
        }
        self.finish_response(tx, r, "completed", None).await
    }

    pub(super) async fn finish_response(
        &mut self,
        tx: &mut Tx,
        r: Resp,
        status: &str,
        reason: Option<&str>,
    ) -> Res {
        if status == "cancelled" {
            self.with(|s| s.responses_cancelled += 1);
        }
        let audio_tokens: usize = r.lines.iter().map(|l| l.sent / 80).sum();
        let usage = json!({
            "total_tokens": 120 + audio_tokens, "input_tokens": 120, "output_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "image_tokens": 0, "cached_tokens": 0,
                                    "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
            "output_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens}
        });
        let details = reason
            .map(|r| json!({"type": "cancelled", "reason": r}))
            .unwrap_or(Value::Null);
        self.send(tx, ev("response.done", json!({"response": {"object": "realtime.response", "id": r.id, "status": status, "status_details": details, "output": r.output, "output_modalities": ["audio"], "usage": usage}}))).await?;
        self.send(tx, ev("rate_limits.updated", json!({"rate_limits": [{"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.01}, {"name": "tokens", "limit": 15_000_000, "remaining": 14_999_000, "reset_seconds": 0.01}]}))).await
    }
}
