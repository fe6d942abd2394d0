//! The model half of the simulator: an OpenAI Realtime server speaking the GA interface only
//! (protocols/openai-realtime.md), playing the agent's side of each scenario.
//!
//! It recognises what the callee said purely from the audio the engine appends (see
//! `voice`), so it needs nothing from the engine but the wire protocol. Which scenario's agent
//! it plays it learns the same way: from the goal in the instructions when the request used
//! the scenario's own words, otherwise from the first callee line that only one scenario has;
//! until then, and for lines no one script knows, a plain agent ([`generic`]) answers from
//! the `Goal:` and `Context:` lines. Any GA client gets what the real service sends: a
//! transcription per committed turn, a response per turn and per `response.create`, forced
//! function calls with arguments valid against the tool's schema ([`schema`]).

mod generic;
mod schema;
mod session;
mod validate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State as AxState};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use super::SimState;

/// Model ids the simulated endpoint accepts (protocols/openai-realtime.md §1).
pub const MODELS: &[&str] = &[
    "gpt-realtime",
    "gpt-realtime-2025-08-28",
    "gpt-realtime-mini",
    "gpt-realtime-mini-2025-10-06",
    "gpt-realtime-mini-2025-12-15",
    "gpt-realtime-1.5",
    "gpt-realtime-2",
    "gpt-realtime-2.1",
    "gpt-realtime-2.1-mini",
];

/// Per-session state of the model half.
#[derive(Default)]
pub struct State {
    sessions: Mutex<HashMap<String, Arc<Mutex<SessionSummary>>>>,
    counter: AtomicU64,
}

impl State {
    pub fn sessions(&self) -> Vec<SessionSummary> {
        let g = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<SessionSummary> = g
            .values()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
    pub(crate) fn next_id(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_{:08x}{n:012}", std::process::id())
    }
    fn register(&self, s: SessionSummary) -> Arc<Mutex<SessionSummary>> {
        let id = s.id.clone();
        let a = Arc::new(Mutex::new(s));
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, a.clone());
        a
    }
}

/// What the model half saw of one session, for tests and `GET /sim/sessions`.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct SessionSummary {
    pub id: String,
    pub model: String,
    pub instructions: String,
    pub scenario: Option<String>,
    pub session_updates: u64,
    pub tools: Vec<String>,
    pub input_format: String,
    pub output_format: String,
    /// Callee lines recognised, in order.
    pub callee_heard: Vec<String>,
    /// Agent lines spoken (audio fully sent), in order.
    pub agent_said: Vec<String>,
    pub responses_created: u64,
    pub responses_cancelled: u64,
    /// (item_id, audio_end_ms) of each accepted truncate.
    pub truncations: Vec<(String, u64)>,
    pub tool_calls: Vec<String>,
    pub function_outputs: Vec<String>,
    pub appended_bytes: u64,
    /// `client` (the engine ended it; without a close frame that is also a violation),
    /// `dropped` (fault), `error` (fault), `server`.
    pub closed_by: Option<String>,
}

#[derive(serde::Deserialize)]
struct ConnectQuery {
    model: Option<String>,
}

pub fn routes(_state: Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new().route("/v1/realtime", get(upgrade)).route(
        "/sim/sessions",
        get(|AxState(s): AxState<Arc<SimState>>| async move { axum::Json(s.realtime.sessions()) }),
    )
}

async fn upgrade(
    AxState(st): AxState<Arc<SimState>>,
    Query(q): Query<ConnectQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let beta = headers.get("openai-beta").is_some();
    tokio::time::sleep(st.config.handshake_delay).await;
    ws.on_upgrade(move |socket| async move {
        // The real service completes the upgrade, then reports handshake errors in-band.
        let expected = format!("Bearer {}", st.config.api_key);
        let failure = if beta {
            Some((
                "beta_api_shape_disabled",
                "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
                4000,
                "invalid_request_error.beta_api_shape_disabled",
            ))
        } else if auth.is_none() {
            Some(("", "Missing bearer or basic authentication in header", 3000, "invalid_request_error"))
        } else if auth.as_deref() != Some(expected.as_str()) {
            Some(("invalid_api_key", "Incorrect API key provided.", 3000, "invalid_request_error.invalid_api_key"))
        } else {
            match q.model.as_deref() {
                None | Some("") => Some(("missing_model", "Missing required parameter: 'model'.", 4000, "invalid_request_error.missing_model")),
                Some(m) if !MODELS.contains(&m) => {
                    Some(("invalid_model", "Model not found or not supported for realtime.", 4000, "invalid_request_error.invalid_model"))
                }
                _ => None,
            }
        };
        if let Some((code, message, close, reason)) = failure {
            reject(socket, code, message, close, reason).await;
            return;
        }
        let model = q.model.unwrap_or_default();
        session::run(st, socket, model).await;
    })
}

async fn reject(mut socket: WebSocket, code: &str, message: &str, close: u16, reason: &str) {
    let ev = json!({
        "type": "error", "event_id": "event_handshake",
        "error": {"type": "invalid_request_error", "code": if code.is_empty() { serde_json::Value::Null } else { json!(code) },
                  "message": message, "param": null, "event_id": null}
    });
    let _ = socket.send(Message::Text(ev.to_string().into())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: close,
            reason: reason.into(),
        })))
        .await;
}
