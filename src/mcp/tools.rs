//! The telephony tools: place, follow, read and cancel calls. Argument mistakes come back as
//! tool errors (`isError`) the assistant can read and correct, naming what is accepted.

use std::time::Duration;

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::*;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};

use switchboard_actors::{
    CallFilter, CallId, CallRecord, CallRequest, CallState, EngineError, EventKind,
};

use super::handler::TelephonyServer;
use super::types::*;

/// Longest `telephony_wait`: clients give a tool call about 60 s before giving up.
pub const MAX_WAIT_SECS: u64 = 50;
pub(super) const DEFAULT_LIST_LIMIT: usize = 20;

pub(super) fn fail(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

fn parse_id(raw: &str) -> Result<CallId, CallToolResult> {
    raw.parse::<CallId>()
        .map_err(|e| fail(format!("callId: {e}")))
}

fn engine_err(e: EngineError) -> CallToolResult {
    match e {
        EngineError::NotFound(id) => fail(format!(
            "no call with id {id}; use telephony_list to see recent calls"
        )),
        // The engine's message starts with the request's field name; the tool calls
        // maxDurationSecs `timeoutSec`.
        EngineError::InvalidRequest(e) => {
            let msg = e.to_string();
            let msg = match msg.strip_prefix("maxDurationSecs: ") {
                Some(rest) => format!("timeoutSec: {rest}"),
                None => msg,
            };
            fail(format!("invalid telephony_call argument {msg}"))
        }
        other => fail(other.to_string()),
    }
}

pub(super) fn accepted_for(tool: &str) -> &'static str {
    match tool {
        "telephony_call" => {
            "accepted: {to: E.164 string (required), goal: string (required), from?: E.164 string, context?: string, instructions?: string, timeoutSec?: integer seconds, voice?: string, language?: string}"
        }
        "telephony_list" => {
            "accepted: {state?: one of dialing, connected, completed, failed, canceled; limit?: integer 1-500}"
        }
        "telephony_wait" => "accepted: {callId: string (required), timeoutSec?: integer 1-50}",
        _ => "accepted: {callId: string (required)}",
    }
}

impl TelephonyServer {
    async fn record(&self, raw_id: &str) -> Result<CallRecord, CallToolResult> {
        let id = parse_id(raw_id)?;
        self.engine.status(id).await.map_err(engine_err)
    }
}

#[tool_router(vis = "pub(super)")]
impl TelephonyServer {
    /// Place a phone call. A voice agent dials the number and holds the conversation to achieve
    /// `goal`, using only the facts in `context`; it can press keys in a phone menu, and leaves
    /// a message on voicemail. Returns at once with a callId while the call is dialing; then
    /// call telephony_wait (repeatedly, up to 50 s each) until it has ended, and read the
    /// result from its outcome and transcript.
    #[tool(
        title = "Place a phone call",
        annotations(
            title = "Place a phone call",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn telephony_call(
        &self,
        Parameters(a): Parameters<CallArgs>,
    ) -> Result<Json<CallPlaced>, CallToolResult> {
        // The engine validates (one path for every frontend); its refusal comes back as a
        // tool error naming the field.
        let request = CallRequest {
            to: a.to,
            from: a.from,
            goal: a.goal,
            context: a.context,
            instructions: a.instructions,
            max_duration_secs: a.timeout_sec,
            voice: a.voice,
            language: a.language,
        };
        let id = self.engine.place_call(request).await.map_err(engine_err)?;
        Ok(Json(CallPlaced {
            call_id: id.to_string(),
            state: CallState::Dialing.to_string(),
            message: format!(
                "Call {id} is dialing. Call telephony_wait with this callId to follow it until it ends."
            ),
        }))
    }

    /// Current state of a call: dialing/connected/completed/failed/canceled, finer detail,
    /// timestamps, duration, and once ended the outcome (success flag and summary) or the
    /// error in plain words.
    #[tool(
        title = "Call status",
        annotations(
            title = "Call status",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn telephony_status(
        &self,
        Parameters(a): Parameters<CallIdArgs>,
    ) -> Result<Json<CallStatus>, CallToolResult> {
        let rec = self.record(&a.call_id).await?;
        Ok(Json(CallStatus::from(&rec)))
    }

    /// Hang up a call (or stop it ringing). Canceling a call that already ended is harmless
    /// and says so.
    #[tool(
        title = "Cancel a call",
        annotations(
            title = "Cancel a call",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn telephony_cancel(
        &self,
        Parameters(a): Parameters<CallIdArgs>,
    ) -> Result<Json<CancelResult>, CallToolResult> {
        let id = parse_id(&a.call_id)?;
        let out = self.engine.cancel(id).await.map_err(engine_err)?;
        Ok(Json(CancelResult {
            success: out.canceled,
            state: out.state.to_string(),
            message: out.message,
        }))
    }

    /// The conversation so far (or in full once ended): each turn with speaker (agent or
    /// callee) and time, plus the call's state, duration and outcome.
    #[tool(
        title = "Call transcript",
        annotations(
            title = "Call transcript",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn telephony_transcript(
        &self,
        Parameters(a): Parameters<CallIdArgs>,
    ) -> Result<Json<Transcript>, CallToolResult> {
        let rec = self.record(&a.call_id).await?;
        let turns = self.engine.transcript(rec.id).await.map_err(engine_err)?;
        Ok(Json(Transcript {
            call_id: rec.id.to_string(),
            state: rec.state.to_string(),
            ended: rec.state.is_terminal(),
            duration_sec: rec.duration_secs,
            outcome: rec.outcome.as_ref().map(OutcomeView::from),
            turns: turns.iter().map(TurnView::from).collect(),
        }))
    }

    /// Recent and active calls, newest first, optionally only those in one state.
    #[tool(
        title = "List calls",
        annotations(
            title = "List calls",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn telephony_list(
        &self,
        Parameters(a): Parameters<ListArgs>,
    ) -> Result<Json<CallList>, CallToolResult> {
        let state = match a.state.as_deref() {
            None => None,
            Some(s) => Some(
                s.trim()
                    .parse::<CallState>()
                    .map_err(|e| fail(format!("state: {e}")))?,
            ),
        };
        let limit = a.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=CallFilter::MAX_LIMIT).contains(&limit) {
            return Err(fail(format!(
                "limit must be between 1 and {}, got {limit}",
                CallFilter::MAX_LIMIT
            )));
        }
        let filter = CallFilter {
            state,
            before: None,
            limit: Some(limit),
        };
        let calls = self.engine.list(filter).await.map_err(engine_err)?;
        Ok(Json(CallList {
            calls: calls.iter().map(CallStatus::from).collect(),
        }))
    }

    /// Wait for a call to end, up to timeoutSec (at most 50 s). Returns as soon as the call
    /// ends, or when the time is up with `ended: false` (then call it again). Sends progress
    /// notifications for each state change and each transcript turn meanwhile.
    #[tool(
        title = "Wait for a call",
        annotations(
            title = "Wait for a call",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn telephony_wait(
        &self,
        Parameters(a): Parameters<WaitArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<WaitResult>, CallToolResult> {
        let secs = a.timeout_sec.unwrap_or(MAX_WAIT_SECS);
        if !(1..=MAX_WAIT_SECS).contains(&secs) {
            return Err(fail(format!(
                "timeoutSec must be between 1 and {MAX_WAIT_SECS} seconds, got {secs}; call telephony_wait again to wait longer"
            )));
        }
        let id = parse_id(&a.call_id)?;
        // Subscribe before reading the record so nothing between the two is missed.
        let mut events = self.engine.subscribe(Some(id));
        let mut rec = self.engine.status(id).await.map_err(engine_err)?;
        let token = ctx.meta.get_progress_token();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut progress = 0u32;
        while !rec.state.is_terminal() {
            let ev = tokio::select! {
                ev = events.next() => ev,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = ctx.ct.cancelled() => break,
            };
            let Some(ev) = ev else { break };
            let message = match &ev.kind {
                EventKind::State { state, detail, .. } => Some(format!(
                    "{state}: {}",
                    serde_json::to_value(detail)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                )),
                EventKind::Transcript {
                    speaker,
                    text,
                    interrupted,
                    ..
                } => Some(format!(
                    "{}: {text}{}",
                    match speaker {
                        switchboard_actors::Speaker::Agent => "agent",
                        switchboard_actors::Speaker::Callee => "callee",
                    },
                    if *interrupted { " [interrupted]" } else { "" }
                )),
                EventKind::Ended { state, .. } => Some(format!("ended: {state}")),
                _ => None,
            };
            if let (Some(token), Some(message)) = (token.clone(), message) {
                progress += 1;
                let _ = ctx
                    .peer
                    .notify_progress(
                        ProgressNotificationParam::new(token, f64::from(progress))
                            .with_message(message),
                    )
                    .await;
            }
            if matches!(ev.kind, EventKind::Ended { .. }) {
                break;
            }
        }
        rec = self.engine.status(id).await.map_err(engine_err)?;
        let turns = self.engine.transcript(id).await.map_err(engine_err)?;
        Ok(Json(WaitResult {
            ended: rec.state.is_terminal(),
            status: CallStatus::from(&rec),
            turns: turns.iter().map(TurnView::from).collect(),
        }))
    }
}
