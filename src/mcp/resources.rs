//! Resources: the recent calls, one call's record and its transcript, and the push that
//! tells subscribers when one of them changed (legacy `resources/subscribe` per session).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::*;
use rmcp::service::{Peer, RequestContext};
use rmcp::{ErrorData, RoleServer};

use switchboard_actors::events::EventStream;
use switchboard_actors::{CallEvent, CallFilter, CallId, CallRecord, EventKind};

use super::handler::TelephonyServer;
use super::tools::DEFAULT_LIST_LIMIT;
use super::types::*;

impl TelephonyServer {
    /// The calls `calls://recent` lists, newest first.
    async fn recent_calls(&self) -> Result<Vec<CallRecord>, ErrorData> {
        self.engine
            .list(CallFilter {
                limit: Some(DEFAULT_LIST_LIMIT),
                ..Default::default()
            })
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    /// Feeds this session's legacy subscriptions, list-changed notices and (once the client
    /// set a level) call progress as log messages from the engine's event stream, until the
    /// peer goes away. Started once per session.
    ///
    /// Events that arrive together (a call's end is a carrier status, a state change and the
    /// end itself) are one change to a resource: each URI is notified once per burst.
    pub(super) fn start_watching(&self, peer: Peer<RoleServer>) {
        if self.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut events = self.engine.subscribe(None);
        let subs = self.subscriptions.clone();
        let level = self.log_level.clone();
        tokio::spawn(async move {
            let mut check = tokio::time::interval(Duration::from_secs(2));
            loop {
                let first = tokio::select! {
                    ev = events.next() => ev,
                    _ = check.tick() => if peer.is_transport_closed() { break } else { continue },
                };
                let Some(first) = first else { break };
                let (burst, closed) = burst(first, &mut events).await;
                if push(&peer, &subs, &level, &burst).await.is_err() || closed {
                    break;
                }
            }
        });
    }

    pub(super) async fn resource_list(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut resources = vec![
            Resource::new("calls://recent", "recent-calls")
                .with_description("The 20 most recent calls as JSON, newest first")
                .with_mime_type("application/json"),
        ];
        let recent = self.recent_calls().await?;
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

    pub(super) async fn resource_templates(
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

    pub(super) async fn resource_read(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        let not_found = |why: String| ErrorData::resource_not_found(why, None);
        let text = if uri == "calls://recent" {
            let calls = self.recent_calls().await?;
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
                .map_err(|e: switchboard_actors::data::CallIdError| not_found(e.to_string()))?;
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
}

/// How long the watcher waits for more events of the same change before notifying.
const BURST_WINDOW: Duration = Duration::from_millis(25);
const BURST_MAX: usize = 64;

/// `first` and the events that follow it within [`BURST_WINDOW`] of each other (one change:
/// a call's end is a carrier status, a state change and the end), and whether the stream ended.
pub(super) async fn burst(
    first: Arc<CallEvent>,
    events: &mut EventStream,
) -> (Vec<Arc<CallEvent>>, bool) {
    let mut burst = vec![first];
    while burst.len() < BURST_MAX {
        match tokio::time::timeout(BURST_WINDOW, events.next()).await {
            Ok(Some(ev)) => burst.push(ev),
            Ok(None) => return (burst, true),
            Err(_) => break,
        }
    }
    (burst, false)
}

/// Each URI the events change, once, in order.
pub(super) fn changed_uris_of(burst: &[Arc<CallEvent>]) -> Vec<String> {
    let mut uris: Vec<String> = Vec::new();
    for uri in burst.iter().flat_map(|ev| changed_uris(ev)) {
        if !uris.contains(&uri) {
            uris.push(uri);
        }
    }
    uris
}

/// One burst of events to this session: list-changed once if a call was created, each
/// subscribed URI once, and each event as a log message when the session asked for its level.
#[allow(deprecated)]
async fn push(
    peer: &Peer<RoleServer>,
    subs: &Mutex<HashSet<String>>,
    level: &Mutex<Option<u8>>,
    burst: &[Arc<CallEvent>],
) -> Result<(), rmcp::service::ServiceError> {
    if burst.iter().any(|ev| ev_is_new_call(ev)) {
        peer.notify_resource_list_changed().await?;
    }
    let wanted: Vec<String> = {
        let subs = subs.lock().unwrap_or_else(|p| p.into_inner());
        changed_uris_of(burst)
            .into_iter()
            .filter(|u| subs.contains(u))
            .collect()
    };
    for uri in wanted {
        peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
            .await?;
    }
    let min = *level.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(min) = min {
        for ev in burst {
            if let Some((lvl, data)) = log_line(ev)
                && rank(lvl) >= min
            {
                let mut msg = LoggingMessageNotificationParam::new(lvl, data);
                msg.logger = Some("switchboard.call".into());
                peer.notify_logging_message(msg).await?;
            }
        }
    }
    Ok(())
}

/// A unit enum as the word it serializes to (`in_progress`, `agent`).
fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// RFC 5424 order, lowest first.
#[allow(deprecated)]
pub(super) fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// A call event as a log message: progress (placed, state changes, the end) at info or above,
/// transcript lines and the rest at debug.
#[allow(deprecated)]
fn log_line(ev: &CallEvent) -> Option<(LoggingLevel, serde_json::Value)> {
    let call_id = ev.call_id.to_string();
    let (level, message) = match &ev.kind {
        EventKind::Created { request } => (
            LoggingLevel::Info,
            format!("call {call_id} to {} placed", request.to),
        ),
        EventKind::State { state, detail, .. } => (
            LoggingLevel::Info,
            format!("call {call_id}: {state} ({})", word(detail)),
        ),
        EventKind::Transcript { speaker, text, .. } => (
            LoggingLevel::Debug,
            format!("call {call_id} {}: {text}", word(speaker)),
        ),
        EventKind::Error { message } => {
            (LoggingLevel::Warning, format!("call {call_id}: {message}"))
        }
        EventKind::Ended { state, .. } => (
            if *state == switchboard_actors::CallState::Failed {
                LoggingLevel::Warning
            } else {
                LoggingLevel::Notice
            },
            format!("call {call_id} ended: {state}"),
        ),
        _ => (
            LoggingLevel::Debug,
            format!("call {call_id}: {}", ev.kind.name()),
        ),
    };
    Some((
        level,
        serde_json::json!({"callId": call_id, "event": ev.kind.name(), "message": message}),
    ))
}

pub(super) fn ev_is_new_call(ev: &CallEvent) -> bool {
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
