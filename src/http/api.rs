//! REST `/v1`: the routes (SSE in [`super::sse`], the document in [`super::openapi`]), their
//! wire types and the one error shape.
//!
//! Every answer here comes from the engine's store-backed reads, so it also covers calls from
//! before a restart. Errors share one JSON shape, `{"error":{"code","message"}}`, with a plain
//! message that names what was wrong and what is accepted.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use switchboard_actors::{
    CallFilter, CallId, CallRecord, CallRequest, CallState, CancelOutcome, EngineError,
    TranscriptTurn,
};

use super::auth::require_token;
use crate::state::AppState;

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/calls", post(create_call).get(list_calls))
        .route("/v1/calls/{id}", get(get_call))
        .route("/v1/calls/{id}/cancel", post(cancel_call))
        .route("/v1/calls/{id}/transcript", get(get_transcript))
        .route("/v1/events", get(super::sse::events))
        .route("/v1/openapi.json", get(super::openapi::serve))
        .route("/v1/{*rest}", any(unknown_route))
        .route_layer(middleware::from_fn(super::guard::require_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(super::guard::BODY_LIMIT))
        .with_state(state)
}

// ---------------------------------------------------------------- wire types

/// The one error shape of the API.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable machine code: invalid_request, not_found, unauthorized, forbidden,
    /// method_not_allowed, payload_too_large, unsupported_media_type, at_capacity,
    /// shutting_down, storage_error, internal.
    pub code: String,
    /// What went wrong and what is accepted, in plain words.
    pub message: String,
    /// The request field that was refused (`to`, `maxDurationSecs`, …), when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedCall {
    pub call_id: CallId,
    pub state: CallState,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallList {
    /// Newest first.
    pub calls: Vec<CallRecord>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<CallId>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transcript {
    pub call_id: CallId,
    pub turns: Vec<TranscriptTurn>,
}

/// An API failure: a status, a code and a plain message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, code) = match &e {
            EngineError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            EngineError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            EngineError::AtCapacity { .. } => (StatusCode::TOO_MANY_REQUESTS, "at_capacity"),
            EngineError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            EngineError::EventLogStopped | EngineError::EventLogFailing(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
            }
            EngineError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
            EngineError::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "configuration"),
            EngineError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "API request failed");
        }
        let field = match &e {
            EngineError::InvalidRequest(r) => Some(r.field().to_owned()),
            _ => None,
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        match self.status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        resp
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

fn parse_id(raw: &str) -> ApiResult<CallId> {
    CallId::from_str(raw).map_err(|e| ApiError::invalid(format!("path parameter id: {e}")))
}

pub(super) fn check_params(params: &HashMap<String, String>, accepted: &[&str]) -> ApiResult<()> {
    for k in params.keys() {
        if !accepted.contains(&k.as_str()) {
            return Err(ApiError::invalid(format!(
                "unknown query parameter '{k}' (accepted: {})",
                accepted.join(", ")
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- handlers

async fn create_call(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "the body is empty; send a JSON call request like {\"to\":\"+14155550123\",\"goal\":\"...\"}",
        ));
    }
    let request = parse_call_request(&body)?;
    let id = state.engine.place_call(request).await?;
    let current = admitted_state(&state, id).await;
    let mut resp = (
        StatusCode::CREATED,
        Json(CreatedCall {
            call_id: id,
            state: current,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/calls/{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// The call's state once its record is readable. A client that follows the 201 with a GET
/// must not get a 404, so wait (briefly, bounded) for the `created` event to be durable in case
/// the engine answered before its write landed.
async fn admitted_state(state: &AppState, id: CallId) -> CallState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match state.engine.status(id).await {
            Ok(rec) => return rec.state,
            Err(EngineError::NotFound(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_) => return CallState::Dialing,
        }
    }
}

/// What a call request may hold, for error messages.
const CALL_REQUEST_ACCEPTED: &str = "required: to (E.164 string), goal (string); optional: from, context, instructions, maxDurationSecs (integer), voice, language";

/// The body as a call request: a JSON object with only the known fields.
fn parse_call_request(body: &[u8]) -> ApiResult<CallRequest> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        let kind = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(_)) => "an array",
            Ok(Value::String(_)) => "a string",
            Ok(Value::Number(_)) => "a number",
            Ok(Value::Bool(_)) => "a boolean",
            Ok(Value::Null) => "null",
            _ => "not JSON",
        };
        return Err(ApiError::invalid(format!(
            "the body is {kind}; a JSON object is required, like {{\"to\":\"+14155550123\",\"goal\":\"...\"}} ({CALL_REQUEST_ACCEPTED})"
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        // serde names an unknown field as "unknown field `x`, expected one of `to`, …".
        let unknown = text
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(name, _)| name.to_owned());
        let missing = text
            .strip_prefix("missing field `")
            .and_then(|r| r.split_once('`'))
            .map(|(name, _)| name.to_owned());
        let err = ApiError::invalid(format!(
            "the body is not a valid call request: {e} ({CALL_REQUEST_ACCEPTED})"
        ));
        match unknown.or(missing) {
            Some(f) => err.with_field(f),
            None => err,
        }
    })
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        field: None,
        message: format!(
            "no route {} (see /v1/openapi.json: /v1/calls, /v1/calls/{{id}}, /v1/calls/{{id}}/cancel, \
             /v1/calls/{{id}}/transcript, /v1/events)",
            uri.path()
        ),
    }
}

async fn list_calls(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<CallList>> {
    check_params(&params, &["state", "limit", "before"])?;
    let mut filter = CallFilter::default();
    if let Some(s) = params.get("state").filter(|s| !s.is_empty()) {
        filter.state = Some(
            CallState::from_str(s).map_err(|e| ApiError::invalid(format!("query state: {e}")))?,
        );
    }
    if let Some(l) = params.get("limit").filter(|s| !s.is_empty()) {
        let n: usize = l
            .parse()
            .ok()
            .filter(|n| (1..=CallFilter::MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "query limit: '{l}' is not accepted (an integer from 1 to {}; default {})",
                    CallFilter::MAX_LIMIT,
                    CallFilter::DEFAULT_LIMIT
                ))
            })?;
        filter.limit = Some(n);
    }
    if let Some(b) = params.get("before").filter(|s| !s.is_empty()) {
        filter.before =
            Some(CallId::from_str(b).map_err(|e| ApiError::invalid(format!("query before: {e}")))?);
    }
    let calls = state.engine.list(filter.clone()).await?;
    let next_before = (calls.len() == filter.limit())
        .then(|| calls.last().map(|r| r.id))
        .flatten();
    Ok(Json(CallList { calls, next_before }))
}

async fn get_call(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<CallRecord>> {
    let id = parse_id(&id)?;
    Ok(Json(state.engine.status(id).await?))
}

async fn cancel_call(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<CancelOutcome>> {
    let id = parse_id(&id)?;
    Ok(Json(state.engine.cancel(id).await?))
}

fn wants_text(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // Plain text only when asked for it ahead of JSON.
    let text = accept.find("text/plain");
    let json = accept.find("application/json");
    match (text, json) {
        (Some(t), Some(j)) => t < j,
        (Some(_), None) => true,
        _ => false,
    }
}

/// `[mm:ss.t] speaker: text`, one turn per line.
pub fn transcript_text(turns: &[TranscriptTurn]) -> String {
    let mut out = String::new();
    for t in turns {
        let tenths = t.offset_ms / 100;
        let speaker = match t.speaker {
            switchboard_actors::Speaker::Agent => "agent",
            switchboard_actors::Speaker::Callee => "callee",
        };
        out.push_str(&format!(
            "[{:02}:{:02}.{}] {speaker}: {}{}\n",
            tenths / 600,
            (tenths / 10) % 60,
            tenths % 10,
            t.text,
            if t.interrupted { " [interrupted]" } else { "" }
        ));
    }
    out
}

async fn get_transcript(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let turns = state.engine.transcript(id).await?;
    if wants_text(&headers) {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            transcript_text(&turns),
        )
            .into_response());
    }
    Ok(Json(Transcript { call_id: id, turns }).into_response())
}
