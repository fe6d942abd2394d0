//! The one MCP handler every transport serves. It is built per session (or per request on
//! stateless HTTP), so it holds only a clone of the engine handle plus this session's
//! legacy `resources/subscribe` set.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::*;
use rmcp::service::{NotificationContext, Peer, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, prompt, prompt_handler, prompt_router, tool};
use rmcp::{tool_handler, tool_router};

use switchboard_actors::{
    CallEvent, CallFilter, CallId, CallRecord, CallRequest, CallState, Engine, EngineError,
    EventKind,
};

use super::types::*;

/// Longest `telephony_wait`: clients give a tool call about 60 s before giving up.
pub const MAX_WAIT_SECS: u64 = 50;
const DEFAULT_LIST_LIMIT: usize = 20;

/// Names the seeds used (dots), served as aliases but never listed: Claude, Cursor and the
/// OpenAI API reject dotted tool names.
const ALIASES: &[(&str, &str)] = &[
    ("telephony.call", "telephony_call"),
    ("telephony.status", "telephony_status"),
    ("telephony.cancel", "telephony_cancel"),
    ("telephony.transcript", "telephony_transcript"),
    ("telephony.list", "telephony_list"),
    ("telephony.wait", "telephony_wait"),
];

#[derive(Clone)]
pub struct TelephonyServer {
    engine: Engine,
    /// URIs this session subscribed to with the legacy `resources/subscribe`.
    subscriptions: Arc<Mutex<HashSet<String>>>,
    watching: Arc<AtomicBool>,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

fn fail(message: impl Into<String>) -> CallToolResult {
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

fn accepted_for(tool: &str) -> &'static str {
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
    pub fn new(engine: Engine) -> Self {
        TelephonyServer {
            engine,
            subscriptions: Arc::default(),
            watching: Arc::default(),
            tool_router: Self::tool_router(),
            prompt_router: Self::prompt_router(),
        }
    }

    async fn record(&self, raw_id: &str) -> Result<CallRecord, CallToolResult> {
        let id = parse_id(raw_id)?;
        self.engine.status(id).await.map_err(engine_err)
    }

    /// Feeds this session's legacy subscriptions and list-changed notices from the engine's
    /// event stream, until the peer goes away. Started once per session.
    fn start_watching(&self, peer: Peer<RoleServer>) {
        if self.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut events = self.engine.subscribe(None);
        let subs = self.subscriptions.clone();
        tokio::spawn(async move {
            let mut check = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    ev = events.next() => {
                        let Some(ev) = ev else { break };
                        if ev_is_new_call(&ev) && peer.notify_resource_list_changed().await.is_err() {
                            break;
                        }
                        let wanted: Vec<String> = {
                            let subs = subs.lock().unwrap_or_else(|p| p.into_inner());
                            changed_uris(&ev).into_iter().filter(|u| subs.contains(u)).collect()
                        };
                        for uri in wanted {
                            if peer
                                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    _ = check.tick() => if peer.is_transport_closed() { break },
                }
            }
        });
    }
}

fn ev_is_new_call(ev: &CallEvent) -> bool {
    matches!(ev.kind, EventKind::Created { .. })
}

/// Which resources an event changes.
pub(crate) fn changed_uris(ev: &CallEvent) -> Vec<String> {
    let id = ev.call_id;
    let mut uris = vec![format!("call://{id}")];
    match &ev.kind {
        EventKind::Transcript { .. } => uris.push(format!("call://{id}/transcript")),
        EventKind::Ended { .. } => {
            uris.push(format!("call://{id}/transcript"));
            uris.push("calls://recent".into());
        }
        EventKind::Created { .. } | EventKind::State { .. } => uris.push("calls://recent".into()),
        _ => {}
    }
    uris
}

fn transcript_text(rec: &CallRecord, turns: &[switchboard_actors::TranscriptTurn]) -> String {
    let mut out = format!(
        "Call {} to {} — {} ({}s)\n",
        rec.id, rec.request.to, rec.state, rec.duration_secs
    );
    for t in turns {
        let who = match t.speaker {
            switchboard_actors::Speaker::Agent => "Agent",
            switchboard_actors::Speaker::Callee => "Callee",
        };
        out.push_str(&format!(
            "[{}] {who}: {}{}\n",
            t.at.format("%H:%M:%S"),
            t.text,
            if t.interrupted { " [interrupted]" } else { "" }
        ));
    }
    if let Some(o) = &rec.outcome {
        out.push_str(&format!(
            "Outcome: {} — {}\n",
            if o.success { "success" } else { "not achieved" },
            o.summary
        ));
    }
    out
}

#[tool_router]
impl TelephonyServer {
    /// Place a phone call. A voice agent dials the number and holds the conversation to achieve
    /// `goal`, using only the facts in `context`; it can press keys in a phone menu, and leaves
    /// a message on voicemail. Returns at once with a callId while the call is dialing; then
    /// call telephony_wait (repeatedly, up to 50 s each) until it has ended, and read the
    /// result from its outcome and transcript.
    #[tool(annotations(
        title = "Place a phone call",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = true
    ))]
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
    #[tool(annotations(
        title = "Call status",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn telephony_status(
        &self,
        Parameters(a): Parameters<CallIdArgs>,
    ) -> Result<Json<CallStatus>, CallToolResult> {
        let rec = self.record(&a.call_id).await?;
        Ok(Json(CallStatus::from(&rec)))
    }

    /// Hang up a call (or stop it ringing). Canceling a call that already ended is harmless
    /// and says so.
    #[tool(annotations(
        title = "Cancel a call",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = true
    ))]
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
    #[tool(annotations(
        title = "Call transcript",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
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
    #[tool(annotations(
        title = "List calls",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
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
    #[tool(annotations(
        title = "Wait for a call",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
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

#[prompt_router]
impl TelephonyServer {
    /// Book a table at a restaurant by phone.
    #[prompt(name = "make-restaurant-reservation")]
    async fn make_restaurant_reservation(
        &self,
        Parameters(a): Parameters<ReservationArgs>,
    ) -> Vec<PromptMessage> {
        let name = a
            .name
            .map(|n| format!(" under the name {n}"))
            .unwrap_or_default();
        vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Call the restaurant at {num} with the telephony_call tool and book a table for {people} people on {date} at {time}{name}. \
                 Put the party size, date, time and name in `context`; the goal is a confirmed reservation, accepting a time within 30 minutes if the requested one is full. \
                 Then call telephony_wait with the returned callId, again as long as it says ended: false, and tell me whether the booking was confirmed, \
                 for when, and anything the restaurant asked for, quoting the outcome summary.",
                num = a.restaurant_number,
                people = a.people_number,
                date = a.date,
                time = a.time,
            ),
        )]
    }

    /// Move an existing appointment to another time by phone.
    #[prompt(name = "reschedule-appointment")]
    async fn reschedule_appointment(
        &self,
        Parameters(a): Parameters<RescheduleArgs>,
    ) -> Vec<PromptMessage> {
        vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Call {num} with telephony_call to reschedule the appointment for {name} currently booked as: {cur}. \
                 Preferred new times: {pref}. Goal: agree a new slot within those preferences and get it confirmed; do not cancel without a new slot. \
                 Then follow it with telephony_wait until it has ended and tell me the new appointment time or why it could not be moved.",
                num = a.phone_number,
                name = a.name,
                cur = a.current_appointment,
                pref = a.preferred_times,
            ),
        )]
    }

    /// Phone someone to deliver a short message (e.g. "tell them I'm 15 minutes late").
    #[prompt(name = "deliver-message")]
    async fn deliver_message(&self, Parameters(a): Parameters<MessageArgs>) -> Vec<PromptMessage> {
        let from = a
            .from_name
            .map(|n| format!(" on behalf of {n}"))
            .unwrap_or_default();
        let to = a.recipient.map(|r| format!(" for {r}")).unwrap_or_default();
        vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Call {num} with telephony_call{from} and deliver this message{to}: \"{msg}\". \
                 The goal is that they acknowledge it; answer simple questions only from what the message says. \
                 Then use telephony_wait until the call has ended and tell me how they responded.",
                num = a.phone_number,
                msg = a.message,
            ),
        )]
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for TelephonyServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_resources_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("switchboard", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Place and follow real phone calls. telephony_call starts a call and returns a callId at once; \
             telephony_wait follows it (up to 50 s per call, repeat until ended: true); telephony_transcript and \
             telephony_status read it; telephony_cancel hangs up. Numbers are E.164 (+14155550123).",
        )
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == request.name) {
            request.name = (*to).into();
        }
        let name = request.name.to_string();
        let known = self.tool_router.has_route(&name);
        let tcc = ToolCallContext::new(self, request, context);
        match self.tool_router.call(tcc).await {
            // Argument errors go to the model as a tool error it can correct, not an opaque
            // JSON-RPC error.
            Err(e) if known && e.code == ErrorCode::INVALID_PARAMS => Ok(fail(format!(
                "invalid arguments for {name}: {}; {}",
                e.message,
                accepted_for(&name)
            ))
            .into()),
            // rmcp reports arguments that do not deserialize as a tool error already; add
            // what is accepted so the model can correct itself.
            Ok(CallToolResponse::Complete(r))
                if r.is_error == Some(true)
                    && r.content.iter().any(|c| {
                        c.as_text()
                            .is_some_and(|t| t.text.contains("deserialize parameters"))
                    }) =>
            {
                let why: Vec<String> = r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect();
                Ok(fail(format!(
                    "invalid arguments for {name}: {}; {}",
                    why.join(" ")
                        .replace("failed to deserialize parameters: ", ""),
                    accepted_for(&name)
                ))
                .into())
            }
            other => other,
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.start_watching(context.peer.clone());
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut resources = vec![
            Resource::new("calls://recent", "recent-calls")
                .with_description("The 20 most recent calls as JSON, newest first")
                .with_mime_type("application/json"),
        ];
        let recent = self
            .engine
            .list(CallFilter {
                limit: Some(DEFAULT_LIST_LIMIT),
                ..Default::default()
            })
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        for r in recent {
            resources.push(
                Resource::new(format!("call://{}", r.id), format!("call-{}", r.id))
                    .with_description(format!("Call to {} ({})", r.request.to, r.state))
                    .with_mime_type("application/json"),
            );
        }
        Ok(ListResourcesResult {
            resources,
            ..Default::default()
        })
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult {
            resource_templates: vec![
                ResourceTemplate::new("call://{callId}", "call")
                    .with_description(
                        "One call's record as JSON: state, detail, timestamps, outcome",
                    )
                    .with_mime_type("application/json"),
                ResourceTemplate::new("call://{callId}/transcript", "call-transcript")
                    .with_description("One call's transcript as text, one turn per line")
                    .with_mime_type("text/plain"),
            ],
            ..Default::default()
        })
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        let not_found = |why: String| ErrorData::resource_not_found(why, None);
        let text = if uri == "calls://recent" {
            let calls = self
                .engine
                .list(CallFilter {
                    limit: Some(DEFAULT_LIST_LIMIT),
                    ..Default::default()
                })
                .await
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
            let view: Vec<CallStatus> = calls.iter().map(CallStatus::from).collect();
            ResourceContents::text(serde_json::to_string_pretty(&view).unwrap_or_default(), uri)
                .with_mime_type("application/json")
        } else if let Some(rest) = uri.strip_prefix("call://") {
            let (raw, transcript) = match rest.strip_suffix("/transcript") {
                Some(raw) => (raw, true),
                None => (rest, false),
            };
            let id: CallId = raw
                .parse()
                .map_err(|e: switchboard_actors::model::CallIdError| not_found(e.to_string()))?;
            let rec = self
                .engine
                .status(id)
                .await
                .map_err(|e| not_found(e.to_string()))?;
            if transcript {
                let turns = self
                    .engine
                    .transcript(id)
                    .await
                    .map_err(|e| not_found(e.to_string()))?;
                ResourceContents::text(transcript_text(&rec, &turns), uri)
                    .with_mime_type("text/plain")
            } else {
                ResourceContents::text(serde_json::to_string_pretty(&rec).unwrap_or_default(), uri)
                    .with_mime_type("application/json")
            }
        } else {
            return Err(not_found(format!(
                "unknown resource '{uri}'; accepted: call://<callId>, call://<callId>/transcript, calls://recent"
            )));
        };
        Ok(ReadResourceResult::new(vec![text]).into())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.uri.clone());
        self.start_watching(context.peer.clone());
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request.uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, cx: SubscriptionContext) -> Result<(), ErrorData> {
        let mut events = self.engine.subscribe(None);
        loop {
            tokio::select! {
                _ = cx.cancelled() => return Ok(()),
                ev = events.next() => {
                    let Some(ev) = ev else { return Ok(()) };
                    // The sink drops what the client did not ask for.
                    if ev_is_new_call(&ev) {
                        let _ = cx.sink().notify_resource_list_changed().await;
                    }
                    for uri in changed_uris(&ev) {
                        let _ = cx.sink().notify_resource_updated(uri).await;
                    }
                }
            }
        }
    }
}
