//! One simulated Realtime session: validation, VAD, recognition and scripted responses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use base64::Engine as _;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::SessionSummary;
use crate::sim::scenario::{Scenario, ToolCall};
use crate::sim::stats::Dir;
use crate::sim::voice::{self, FRAME_BYTES};
use crate::sim::{Side, SimState};

type Tx = SplitSink<WebSocket, Message>;

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

struct Resp {
    id: String,
    lines: Vec<Line>,
    cur: usize,
    tool: Option<ToolCall>,
    next_at: Instant,
    output: Vec<Value>,
}

struct Session {
    st: Arc<SimState>,
    id: String,
    summary: Arc<Mutex<SessionSummary>>,
    config: Value,
    updated: bool,
    scenario: Option<Scenario>,
    /// Next script index the agent may speak from.
    pos: usize,
    greeted: bool,
    // VAD
    audio_ms_bytes: u64,
    pending: Vec<u8>,
    in_speech: bool,
    speech: Vec<u8>,
    speech_start_ms: u64,
    silence_ms: u64,
    user_item: String,
    // Responses
    resp: Option<Resp>,
    /// Audio bytes sent per assistant item, for truncate validation.
    item_audio: HashMap<String, usize>,
    call_ids: Vec<String>,
    first_append: Option<Instant>,
}

fn ev(kind: &str, mut body: Value) -> String {
    let o = body.as_object_mut().expect("events are objects");
    o.insert("type".into(), json!(kind));
    o.insert(
        "event_id".into(),
        json!(format!("event_{:016x}", fastrand_u64())),
    );
    body.to_string()
}

fn fastrand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0x9e37_79b9);
    N.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .rotate_left(23)
}

fn default_config(model: &str) -> Value {
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

pub(super) async fn run(st: Arc<SimState>, socket: WebSocket, model: String) {
    let id = st.realtime.next_id("sess");
    let summary = st.realtime.register(SessionSummary {
        id: id.clone(),
        model: model.clone(),
        ..SessionSummary::default()
    });
    let (mut tx, mut rx) = socket.split();
    let mut s = Session {
        st: st.clone(),
        id: id.clone(),
        summary,
        config: default_config(&model),
        updated: false,
        scenario: None,
        pos: 0,
        greeted: false,
        audio_ms_bytes: 0,
        pending: Vec::new(),
        in_speech: false,
        speech: Vec::new(),
        speech_start_ms: 0,
        silence_ms: 0,
        user_item: String::new(),
        resp: None,
        item_audio: HashMap::new(),
        call_ids: Vec::new(),
        first_append: None,
    };
    let mut created = s.config.clone();
    created["id"] = json!(id);
    created["expires_at"] = json!(chrono::Utc::now().timestamp() + 3600);
    if tx
        .send(Message::Text(
            ev("session.created", json!({"session": created})).into(),
        ))
        .await
        .is_err()
    {
        return;
    }
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut ping = tokio::time::interval(st.config.scaled(20_300));
    ping.tick().await;
    let closed_by = loop {
        let resp_at = s.resp.as_ref().map(|r| r.next_at).unwrap_or(far);
        let faults = s
            .scenario
            .as_ref()
            .map(|sc| sc.faults.clone())
            .unwrap_or_default();
        let drop_at = s
            .first_append
            .zip(faults.model_drop_at_ms)
            .map(|(t, ms)| t + st.config.scaled(ms))
            .unwrap_or(far);
        let error_at = s
            .first_append
            .zip(faults.model_error_at_ms)
            .map(|(t, ms)| t + st.config.scaled(ms))
            .unwrap_or(far);
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => { if s.on_client(&mut tx, t.as_str()).await.is_err() { break "client"; } }
                Some(Ok(Message::Binary(_))) => {
                    s.violation("binary-frame", "binary frames are not supported", "<binary>");
                    let _ = s.error(&mut tx, "invalid_event", "binary frames are not supported", None).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break "client",
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(resp_at) => { if s.step_response(&mut tx).await.is_err() { break "client"; } }
            _ = ping.tick() => { let _ = tx.send(Message::Ping(vec![0, 0, 0, 1].into())).await; }
            _ = tokio::time::sleep_until(drop_at) => {
                drop(tx);
                drop(rx);
                s.summary.lock().unwrap_or_else(|e| e.into_inner()).closed_by = Some("dropped".into());
                return;
            }
            _ = tokio::time::sleep_until(error_at) => {
                let _ = s.error_typed(&mut tx, "server_error", "server_error", "The server had an error while processing your request.", None).await;
                let _ = tx.send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1011, reason: "server_error".into() }))).await;
                break "error";
            }
        }
    };
    s.summary
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .closed_by = Some(closed_by.into());
}

type Res = Result<(), ()>;

impl Session {
    fn violation(&self, rule: &str, message: &str, offending: &str) {
        self.st
            .violations
            .record(Side::Realtime, Some(&self.id), rule, message, offending);
    }

    async fn send(&self, tx: &mut Tx, text: String) -> Res {
        tx.send(Message::Text(text.into())).await.map_err(|_| ())
    }

    /// `conversation.item.added` / `.done`.
    async fn item_event(&self, tx: &mut Tx, kind: &str, item: &Value) -> Res {
        self.send(
            tx,
            ev(kind, json!({"item": item, "previous_item_id": null})),
        )
        .await
    }

    /// `response.output_item.added` / `.done`.
    async fn output_item(
        &self,
        tx: &mut Tx,
        kind: &str,
        response_id: &str,
        out_index: usize,
        item: &Value,
    ) -> Res {
        let body = json!({"response_id": response_id, "output_index": out_index, "item": item});
        self.send(tx, ev(kind, body)).await
    }

    async fn error(&self, tx: &mut Tx, code: &str, message: &str, param: Option<&str>) -> Res {
        self.error_typed(tx, "invalid_request_error", code, message, param)
            .await
    }

    async fn error_typed(
        &self,
        tx: &mut Tx,
        kind: &str,
        code: &str,
        message: &str,
        param: Option<&str>,
    ) -> Res {
        let e = ev(
            "error",
            json!({"error": {"type": kind, "code": code, "message": message, "param": param, "event_id": null}}),
        );
        self.send(tx, e).await
    }

    fn with<R>(&self, f: impl FnOnce(&mut SessionSummary) -> R) -> R {
        f(&mut self.summary.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn on_client(&mut self, tx: &mut Tx, text: &str) -> Res {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                self.violation("invalid-json", "client event is not JSON", text);
                return self
                    .error(tx, "invalid_json", "The event is not valid JSON.", None)
                    .await;
            }
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let allowed: &[&str] = match kind.as_str() {
            "session.update" => &["type", "event_id", "session"],
            "input_audio_buffer.append" => &["type", "event_id", "audio"],
            "input_audio_buffer.commit" | "input_audio_buffer.clear" => &["type", "event_id"],
            "conversation.item.create" => &["type", "event_id", "item", "previous_item_id"],
            "conversation.item.truncate" => &[
                "type",
                "event_id",
                "item_id",
                "content_index",
                "audio_end_ms",
            ],
            "conversation.item.delete" | "conversation.item.retrieve" => {
                &["type", "event_id", "item_id"]
            }
            "response.create" => &["type", "event_id", "response"],
            "response.cancel" => &["type", "event_id", "response_id"],
            other => {
                let beta = other.starts_with("transcription_session.")
                    || other == "output_audio_buffer.clear";
                let rule = if beta {
                    "beta-or-webrtc-event"
                } else {
                    "unknown-event"
                };
                self.violation(rule, &format!("unknown client event type '{other}'"), text);
                return self.error(tx, "invalid_value", &format!("Invalid value: '{other}'. Supported values are: 'session.update', 'input_audio_buffer.append', 'input_audio_buffer.commit', 'input_audio_buffer.clear', 'conversation.item.create', 'conversation.item.truncate', 'conversation.item.delete', 'conversation.item.retrieve', 'response.create', and 'response.cancel'."), Some("type")).await;
            }
        };
        if let Some(k) = v
            .as_object()
            .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())))
        {
            self.violation(
                "unknown-parameter",
                &format!("'{kind}' has unknown field '{k}'"),
                text,
            );
            return self
                .error(
                    tx,
                    "unknown_parameter",
                    &format!("Unknown parameter: '{k}'."),
                    Some(k),
                )
                .await;
        }
        match kind.as_str() {
            "session.update" => self.session_update(tx, &v, text).await,
            "input_audio_buffer.append" => self.append(tx, &v, text).await,
            "input_audio_buffer.commit" => {
                if self.speech.is_empty() {
                    return self
                        .error(
                            tx,
                            "input_audio_buffer_commit_empty",
                            "Error committing input audio buffer: buffer is empty.",
                            None,
                        )
                        .await;
                }
                self.end_of_speech(tx).await
            }
            "input_audio_buffer.clear" => {
                self.speech.clear();
                self.in_speech = false;
                self.send(tx, ev("input_audio_buffer.cleared", json!({})))
                    .await
            }
            "conversation.item.create" => self.item_create(tx, &v, text).await,
            "conversation.item.truncate" => self.truncate(tx, &v, text).await,
            "conversation.item.delete" => {
                let id = v.get("item_id").cloned().unwrap_or(Value::Null);
                self.send(tx, ev("conversation.item.deleted", json!({"item_id": id})))
                    .await
            }
            "conversation.item.retrieve" => {
                self.error(
                    tx,
                    "item_not_found",
                    "The simulator does not retrieve items.",
                    Some("item_id"),
                )
                .await
            }
            "response.create" => {
                if !self.updated {
                    self.violation(
                        "response-before-session-update",
                        "response.create before any session.update",
                        text,
                    );
                }
                if self.resp.is_some() {
                    return self
                        .error(
                            tx,
                            "conversation_already_has_active_response",
                            "Conversation already has an active response in progress.",
                            None,
                        )
                        .await;
                }
                self.respond(tx, true).await
            }
            "response.cancel" => match self.resp.take() {
                Some(r) => {
                    self.finish_response(tx, r, "cancelled", Some("client_cancelled"))
                        .await
                }
                None => {
                    self.error(
                        tx,
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found.",
                        None,
                    )
                    .await
                }
            },
            _ => Ok(()),
        }
    }

    async fn session_update(&mut self, tx: &mut Tx, v: &Value, raw: &str) -> Res {
        let Some(sess) = v.get("session").and_then(Value::as_object) else {
            self.violation(
                "missing-session",
                "session.update without a session object",
                raw,
            );
            return self
                .error(
                    tx,
                    "missing_required_parameter",
                    "Missing required parameter: 'session'.",
                    Some("session"),
                )
                .await;
        };
        if let Err((code, param, msg)) = validate_session(sess) {
            let rule = if BETA_FIELDS.iter().any(|b| param.ends_with(b)) {
                "beta-session-field"
            } else {
                "invalid-session-update"
            };
            self.violation(rule, &msg, raw);
            return self.error(tx, code, &msg, Some(&param)).await;
        }
        merge(&mut self.config, &Value::Object(sess.clone()));
        self.updated = true;
        let instructions = self.config["instructions"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if self.scenario.is_none() {
            self.scenario = self
                .st
                .config
                .scenarios
                .iter()
                .filter(|s| instructions.contains(&s.agent.goal))
                .max_by_key(|s| s.agent.goal.len())
                .cloned();
        }
        let tools: Vec<String> = self.config["tools"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let fmt = |p: &str| {
            self.config
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (inf, outf) = (
            fmt("/audio/input/format/type"),
            fmt("/audio/output/format/type"),
        );
        let scen = self.scenario.as_ref().map(|s| s.name.clone());
        self.with(|s| {
            s.session_updates += 1;
            s.instructions = instructions;
            s.tools = tools;
            s.input_format = inf;
            s.output_format = outf;
            s.scenario = scen;
        });
        let mut full = self.config.clone();
        full["id"] = json!(self.id);
        self.send(tx, ev("session.updated", json!({"session": full})))
            .await
    }

    async fn append(&mut self, tx: &mut Tx, v: &Value, raw: &str) -> Res {
        let Some(b64) = v.get("audio").and_then(Value::as_str) else {
            self.violation(
                "missing-audio",
                "input_audio_buffer.append without audio",
                raw,
            );
            return self
                .error(
                    tx,
                    "missing_required_parameter",
                    "Missing required parameter: 'audio'.",
                    Some("audio"),
                )
                .await;
        };
        let bytes = match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(b) if !b.is_empty() => b,
            _ => {
                self.violation(
                    "bad-audio",
                    "input_audio_buffer.append audio is empty or not base64",
                    &raw[..raw.len().min(200)],
                );
                return self
                    .error(
                        tx,
                        "invalid_value",
                        "Invalid 'audio'. Expected base64-encoded audio bytes.",
                        Some("audio"),
                    )
                    .await;
            }
        };
        if self
            .config
            .pointer("/audio/input/format/type")
            .and_then(Value::as_str)
            != Some("audio/pcmu")
        {
            self.violation(
                "audio-format",
                "audio appended while the session input format is not audio/pcmu",
                "",
            );
        }
        self.first_append.get_or_insert_with(Instant::now);
        self.with(|s| s.appended_bytes += bytes.len() as u64);
        self.pending.extend_from_slice(&bytes);
        let silence_needed = self
            .config
            .pointer("/audio/input/turn_detection/silence_duration_ms")
            .and_then(Value::as_u64)
            .unwrap_or(200);
        let vad = !self
            .config
            .pointer("/audio/input/turn_detection")
            .is_none_or(Value::is_null);
        while self.pending.len() >= FRAME_BYTES {
            let frame: Vec<u8> = self.pending.drain(..FRAME_BYTES).collect();
            let pos_ms = self.audio_ms_bytes / 8;
            self.audio_ms_bytes += FRAME_BYTES as u64;
            let speech = voice::is_speech(&frame);
            if speech {
                self.st.stats.received(Dir::Uplink, &frame);
            }
            if speech {
                if !self.in_speech {
                    self.in_speech = true;
                    self.speech_start_ms = pos_ms;
                    self.user_item = self.st.realtime.next_id("item");
                    self.speech.clear();
                    if vad {
                        let start = pos_ms.saturating_sub(300);
                        self.send(
                            tx,
                            ev(
                                "input_audio_buffer.speech_started",
                                json!({"audio_start_ms": start, "item_id": self.user_item}),
                            ),
                        )
                        .await?;
                        let interrupt = self
                            .config
                            .pointer("/audio/input/turn_detection/interrupt_response")
                            .and_then(Value::as_bool)
                            .unwrap_or(true);
                        if interrupt && let Some(r) = self.resp.take() {
                            self.finish_response(tx, r, "cancelled", Some("turn_detected"))
                                .await?;
                        }
                    }
                }
                self.speech.extend_from_slice(&frame);
                self.silence_ms = 0;
            } else if self.in_speech {
                self.silence_ms += 20;
                if vad && self.silence_ms >= silence_needed {
                    let end_ms = pos_ms + 20 - self.silence_ms;
                    self.send(
                        tx,
                        ev(
                            "input_audio_buffer.speech_stopped",
                            json!({"audio_end_ms": end_ms, "item_id": self.user_item}),
                        ),
                    )
                    .await?;
                    self.end_of_speech(tx).await?;
                }
            }
        }
        Ok(())
    }

    /// Commits the current utterance: items, transcription, and the scripted reply.
    async fn end_of_speech(&mut self, tx: &mut Tx) -> Res {
        self.in_speech = false;
        self.silence_ms = 0;
        let item = std::mem::take(&mut self.user_item);
        let item = if item.is_empty() {
            self.st.realtime.next_id("item")
        } else {
            item
        };
        let audio = std::mem::take(&mut self.speech);
        self.send(
            tx,
            ev(
                "input_audio_buffer.committed",
                json!({"item_id": item, "previous_item_id": null}),
            ),
        )
        .await?;
        let user = json!({"id": item, "object": "realtime.item", "type": "message", "status": "completed", "role": "user",
                          "content": [{"type": "input_audio", "transcript": null}]});
        self.item_event(tx, "conversation.item.added", &user)
            .await?;
        self.item_event(tx, "conversation.item.done", &user).await?;
        let heard = self.st.voices.recognize(&audio);
        let Some(text) = heard else {
            self.violation("unrecognized-audio", &format!("{} ms of callee audio match no line the callee said (altered, dropped, reordered or mixed audio)", audio.len() / 8), "");
            return Ok(());
        };
        self.with(|s| s.callee_heard.push(text.to_string()));
        if !self
            .config
            .pointer("/audio/input/transcription")
            .is_none_or(Value::is_null)
        {
            let usage = json!({"type": "tokens", "total_tokens": 24, "input_tokens": 16, "input_token_details": {"text_tokens": 0, "audio_tokens": 16}, "output_tokens": 8});
            self.send(
                tx,
                ev(
                    "conversation.item.input_audio_transcription.delta",
                    json!({"item_id": item, "content_index": 0, "delta": &*text}),
                ),
            )
            .await?;
            self.send(tx, ev("conversation.item.input_audio_transcription.completed", json!({"item_id": item, "content_index": 0, "transcript": &*text, "usage": usage}))).await?;
        }
        // Advance the agent past the callee line it just heard.
        if let Some(sc) = &self.scenario
            && let Some(i) = sc
                .script
                .iter()
                .enumerate()
                .skip(self.pos)
                .find(|(_, s)| s.callee.as_deref() == Some(&*text))
                .map(|(i, _)| i)
        {
            self.pos = i + 1;
        }
        let auto = self
            .config
            .pointer("/audio/input/turn_detection/create_response")
            .and_then(Value::as_bool)
            .unwrap_or(true)
            && !self
                .config
                .pointer("/audio/input/turn_detection")
                .is_none_or(Value::is_null);
        if auto && self.resp.is_none() {
            self.respond(tx, false).await?;
        }
        Ok(())
    }

    /// The agent's next lines from the script (or the generic persona).
    fn next_lines(&mut self) -> (Vec<String>, Option<ToolCall>) {
        let Some(sc) = &self.scenario else {
            if !self.greeted {
                self.greeted = true;
                let instr = self.config["instructions"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                let first = instr
                    .split(['.', '\n'])
                    .next()
                    .unwrap_or("Hello")
                    .trim()
                    .to_owned();
                return (vec![format!("Hello. {first}.")], None);
            }
            let tool = ToolCall {
                name: "end_call".into(),
                arguments: json!({"outcome": "unknown", "summary": "The simulator's generic agent ended the call."}),
            };
            return (vec!["Thank you, goodbye.".into()], Some(tool));
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

    async fn respond(&mut self, tx: &mut Tx, explicit: bool) -> Res {
        let (lines, tool) = self.next_lines();
        if lines.is_empty() && tool.is_none() && !explicit {
            return Ok(()); // the scripted agent has nothing to say to this
        }
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
    async fn step_response(&mut self, tx: &mut Tx) -> Res {
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
            self.st.stats.sent(Dir::Downlink, chunk);
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

    async fn finish_response(
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

    async fn item_create(&mut self, tx: &mut Tx, v: &Value, raw: &str) -> Res {
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

    async fn truncate(&mut self, tx: &mut Tx, v: &Value, raw: &str) -> Res {
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

/// Beta names that the GA interface rejects as unknown parameters.
const BETA_FIELDS: &[&str] = &[
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
fn validate_session(s: &Map<String, Value>) -> Result<(), Invalid> {
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

/// Applies a partial session over the effective config (only present fields change).
/// An audio `format` is a tagged union and is replaced whole: `{type: audio/pcmu}` over the
/// default `{type: audio/pcm, rate: 24000}` must not keep the PCM rate.
fn merge(base: &mut Value, patch: &Value) {
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
