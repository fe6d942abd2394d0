//! SSE `/v1/events`: the event log as a stream, resumable with `Last-Event-ID` or `?after=`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::str::FromStr;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

use switchboard_actors::events::EventStream;
use switchboard_actors::{CallEvent, CallId, EventKind};

use super::api::{ApiError, ApiResult, check_params};
use crate::state::AppState;

/// How often an idle SSE stream sends a comment, so proxies keep it open and clients notice a
/// dead connection.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The SSE `event:` name: the seed names where one exists, else the engine's own.
pub fn sse_event_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::State { .. } => "call-status",
        EventKind::Transcript { .. } => "transcription",
        EventKind::Ended { .. } => "call-ended",
        EventKind::Error { .. } => "error",
        other => other.name(),
    }
}

fn sse_event(ev: &CallEvent) -> Event {
    let data = serde_json::to_string(ev).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(ev.seq.to_string())
        .event(sse_event_name(&ev.kind))
        .data(data)
}

fn sse_stream(stream: EventStream) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(stream, |mut s| async move {
        let ev = s.next().await?;
        Some((Ok(sse_event(&ev)), s))
    })
}

pub(super) async fn events(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_params(&params, &["callId", "after"])?;
    let call = params
        .get("callId")
        .filter(|s| !s.is_empty())
        .map(|c| CallId::from_str(c).map_err(|e| ApiError::invalid(format!("query callId: {e}"))))
        .transpose()?;
    // A reconnecting EventSource keeps its original URL and adds Last-Event-ID, so the header
    // is the newer position and wins over `?after=`.
    let header_after = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "header Last-Event-ID: not accepted (a non-negative integer event id)",
                    )
                })
        })
        .transpose()?;
    let query_after = params
        .get("after")
        .filter(|s| !s.is_empty())
        .map(|a| {
            a.trim().parse::<u64>().map_err(|_| {
                ApiError::invalid(format!(
                    "query after: '{a}' is not accepted (a non-negative integer event id)"
                ))
            })
        })
        .transpose()?;
    if let Some(id) = call {
        state.engine.status(id).await?;
    }
    let stream = match header_after.or(query_after) {
        Some(after) => state.engine.subscribe_after(call, after),
        None => state.engine.subscribe(call),
    };
    let mut resp =
        Sse::new(sse_stream(stream).take_until(state.shutdown.clone().cancelled_owned()))
            .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
            .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}
