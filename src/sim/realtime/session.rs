//! One simulated Realtime session: the socket's life (handshake event, pings, fault
//! injections, who closed it) and the dispatch of each client event to its handler. An engine
//! socket that ends without a close frame is a `model-socket-dropped-without-close` violation.
//!
//! The handlers live by concern in the child modules: voice-activity detection and turns
//! ([`vad`]), the scripted agent's responses ([`response`]) and client-made conversation items
//! ([`conversation`]); `session.update` validation is in `super::validate`.

mod conversation;
mod response;
mod vad;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::SessionSummary;
use super::generic::{Brief, Move};
use super::validate::{BETA_FIELDS, default_config, merge, validate_session};
use crate::sim::scenario::Scenario;
use crate::sim::{Side, SimState};
use response::Resp;
use vad::Vad;

type Tx = SplitSink<WebSocket, Message>;
type Rx = SplitStream<WebSocket>;

/// How long a failing socket has to deliver the engine's close frame before it counts as
/// dropped without one.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

struct Session {
    st: Arc<SimState>,
    id: String,
    summary: Arc<Mutex<SessionSummary>>,
    config: Value,
    updated: bool,
    /// The script this session's agent follows, once it knows it: from the goal in the
    /// instructions, or from a callee line only one scenario has (see `conversation::hear`).
    scenario: Option<Scenario>,
    /// Next script index the agent may speak from.
    pos: usize,
    greeted: bool,
    /// What the instructions ask, for the plain agent that plays while no script applies.
    brief: Brief,
    /// The plain agent's answer to the last callee turn, said by the next response.
    pending: Option<Move>,
    /// Callee lines the plain agent heard, for the outcome when the callee closes.
    callee_lines: Vec<String>,
    /// The `event_id` of the client event being handled, echoed in an `error` about it.
    client_event_id: Option<String>,
    vad: Vad,
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
        brief: Brief::default(),
        pending: None,
        callee_lines: Vec::new(),
        client_event_id: None,
        vad: Vad::default(),
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
        s.expect_close(&mut tx, &mut rx).await;
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
                Some(Ok(Message::Text(t))) => {
                    if s.on_client(&mut tx, t.as_str()).await.is_err() {
                        s.expect_close(&mut tx, &mut rx).await;
                        break "client";
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    s.violation("binary-frame", "binary frames are not supported", "<binary>");
                    let _ = s.error(&mut tx, "invalid_event", "binary frames are not supported", None).await;
                }
                Some(Ok(Message::Close(_))) => {
                    // Sends the reply close frame tungstenite queued, completing the handshake.
                    let _ = tx.flush().await;
                    break "client";
                }
                None => {
                    s.dropped("the connection ended (EOF)");
                    break "client";
                }
                Some(Err(e)) => {
                    s.dropped(&format!("reading failed: {e}"));
                    break "client";
                }
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(resp_at) => {
                if s.step_response(&mut tx).await.is_err() {
                    s.expect_close(&mut tx, &mut rx).await;
                    break "client";
                }
            }
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

    /// The engine's socket ended without the close frame that every deliberate close sends
    /// (1000 normal): a reset or EOF means the engine dropped or aborted its writer.
    fn dropped(&self, what: &str) {
        self.violation(
            "model-socket-dropped-without-close",
            &format!(
                "the engine's Realtime socket for session {} ended without a close frame: {what}",
                self.id
            ),
            what,
        );
    }

    /// A send failed, so the socket is going: a close frame from the engine may still be
    /// waiting to be read. Reads (bounded) until it comes; anything else is a drop.
    async fn expect_close(&self, tx: &mut Tx, rx: &mut Rx) {
        if let Err(what) = crate::sim::socket_end::expect_close(
            tx,
            rx,
            |m| matches!(m, Message::Close(_)),
            CLOSE_WAIT,
        )
        .await
        {
            self.dropped(&what);
        }
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
            json!({"error": {"type": kind, "code": code, "message": message, "param": param, "event_id": self.client_event_id}}),
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
        // Errors about this event name it, as the real service does.
        self.client_event_id = v.get("event_id").and_then(Value::as_str).map(str::to_owned);
        let r = self.on_event(tx, &v, text).await;
        self.client_event_id = None;
        r
    }

    async fn on_event(&mut self, tx: &mut Tx, v: &Value, text: &str) -> Res {
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
            "session.update" => self.session_update(tx, v, text).await,
            "input_audio_buffer.append" => self.append(tx, v, text).await,
            "input_audio_buffer.commit" => {
                if self.vad.speech.is_empty() {
                    return self
                        .error(
                            tx,
                            "input_audio_buffer_commit_empty",
                            "Error committing input audio buffer: buffer is empty.",
                            None,
                        )
                        .await;
                }
                // A manual commit makes a user item; it never starts a response.
                self.end_of_speech(tx, false).await
            }
            "input_audio_buffer.clear" => {
                self.vad.speech.clear();
                self.vad.in_speech = false;
                self.send(tx, ev("input_audio_buffer.cleared", json!({})))
                    .await
            }
            "conversation.item.create" => self.item_create(tx, v, text).await,
            "conversation.item.truncate" => self.truncate(tx, v, text).await,
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
                let opts = match self.response_options(v, text) {
                    Ok(o) => o,
                    Err((code, param, message)) => {
                        return self.error(tx, code, &message, Some(&param)).await;
                    }
                };
                self.respond(tx, opts).await
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
        self.brief = Brief::from_instructions(&instructions);
        // The scenario's own goal words name its script; any other wording leaves the choice
        // to the callee's first line (`conversation::hear`).
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
}
