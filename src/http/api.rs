//! REST `/v1`, SSE `/v1/events` and `/v1/openapi.json`.
//!
//! Every answer here comes from the engine's store-backed reads, so it also covers calls from
//! before a restart. Errors share one JSON shape, `{"error":{"code","message"}}`, with a plain
//! message that names what was wrong and what is accepted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::str::FromStr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use switchboard_actors::events::EventStream;
use switchboard_actors::{
    CallEvent, CallFilter, CallId, CallRecord, CallRequest, CallState, CancelOutcome, EngineError,
    EventKind, TranscriptTurn,
};

use super::auth::require_token;
use crate::state::AppState;

/// How often an idle SSE stream sends a comment, so proxies keep it open and clients notice a
/// dead connection.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/calls", post(create_call).get(list_calls))
        .route("/v1/calls/{id}", get(get_call))
        .route("/v1/calls/{id}/cancel", post(cancel_call))
        .route("/v1/calls/{id}/transcript", get(get_transcript))
        .route("/v1/events", get(events))
        .route("/v1/openapi.json", get(openapi))
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

    fn invalid(message: impl Into<String>) -> Self {
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
            EngineError::EventLogStopped => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
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

type ApiResult<T> = Result<T, ApiError>;

fn parse_id(raw: &str) -> ApiResult<CallId> {
    CallId::from_str(raw).map_err(|e| ApiError::invalid(format!("path parameter id: {e}")))
}

fn check_params(params: &HashMap<String, String>, accepted: &[&str]) -> ApiResult<()> {
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

// ---------------------------------------------------------------- SSE

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

async fn events(
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

// ---------------------------------------------------------------- OpenAPI

/// The OpenAPI 3.1 document: paths assembled here, every schema generated by schemars from
/// the same Rust types the handlers serialize.
pub fn openapi_document() -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let r = |s: schemars::Schema| s.to_value();
    let call_request = r(generator.subschema_for::<CallRequest>());
    let created = r(generator.subschema_for::<CreatedCall>());
    let list = r(generator.subschema_for::<CallList>());
    let record = r(generator.subschema_for::<CallRecord>());
    let cancel = r(generator.subschema_for::<CancelOutcome>());
    let transcript = r(generator.subschema_for::<Transcript>());
    let error = r(generator.subschema_for::<ErrorBody>());
    let event = r(generator.subschema_for::<CallEvent>());
    let state = r(generator.subschema_for::<CallState>());
    let call_id = r(generator.subschema_for::<CallId>());
    let schemas = generator.take_definitions(true);

    let json_content = |schema: &Value| json!({"application/json": {"schema": schema}});
    let err = |desc: &str| json!({"description": desc, "content": json_content(&error)});
    let id_param = json!({"name": "id", "in": "path", "required": true, "schema": call_id});
    let common = |mut responses: serde_json::Map<String, Value>| {
        responses.insert(
            "401".into(),
            err("Missing or wrong bearer token (Authorization: Bearer <server.api_token>)"),
        );
        responses.insert(
            "403".into(),
            err(
                "The Origin header names a site that is not loopback nor in server.allowed_origins",
            ),
        );
        responses.insert("500".into(), err("Storage or internal failure"));
        Value::Object(responses)
    };
    let obj = |v: Value| match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "switchboard",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Place and follow AI-driven phone calls. Every fact about a call is an event with a global sequence number; records, transcripts and the event stream are read from a durable log."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/calls": {
                "post": {
                    "operationId": "createCall",
                    "summary": "Place a call; answers as soon as it is admitted",
                    "requestBody": {"required": true, "content": json_content(&call_request)},
                    "responses": common(obj(json!({
                        "201": {"description": "Admitted", "content": json_content(&created)},
                        "400": err("The request is malformed or refused by policy; `field` names the field"),
                        "413": err("The body is larger than 1 MiB"),
                        "415": err("The body is not sent as Content-Type: application/json"),
                        "429": err("At capacity (calls.max_concurrent); retry later"),
                        "503": err("Shutting down"),
                    })))
                },
                "get": {
                    "operationId": "listCalls",
                    "summary": "List calls, newest first",
                    "parameters": [
                        {"name": "state", "in": "query", "schema": state},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": CallFilter::MAX_LIMIT, "default": CallFilter::DEFAULT_LIMIT}},
                        {"name": "before", "in": "query", "description": "Only calls created before this id (the previous page's nextBefore)", "schema": call_id},
                    ],
                    "responses": common(obj(json!({
                        "200": {"description": "A page of calls", "content": json_content(&list)},
                        "400": err("A query parameter is not accepted"),
                    })))
                }
            },
            "/v1/calls/{id}": {
                "get": {
                    "operationId": "getCall",
                    "parameters": [id_param],
                    "responses": common(obj(json!({
                        "200": {"description": "The call record", "content": json_content(&record)},
                        "400": err("The id is not a call id"),
                        "404": err("No such call"),
                    })))
                }
            },
            "/v1/calls/{id}/cancel": {
                "post": {
                    "operationId": "cancelCall",
                    "summary": "Cancel while dialing or hang up while connected; canceling an ended call is not an error",
                    "parameters": [id_param],
                    "responses": common(obj(json!({
                        "200": {"description": "What the cancel did", "content": json_content(&cancel)},
                        "400": err("The id is not a call id"),
                        "413": err("The body is larger than 1 MiB"),
                        "415": err("A body is sent, but not as Content-Type: application/json"),
                        "404": err("No such call"),
                    })))
                }
            },
            "/v1/calls/{id}/transcript": {
                "get": {
                    "operationId": "getTranscript",
                    "parameters": [id_param],
                    "responses": common(obj(json!({
                        "200": {
                            "description": "The transcript (JSON, or `[mm:ss.t] speaker: text` lines with Accept: text/plain)",
                            "content": {
                                "application/json": {"schema": transcript},
                                "text/plain": {"schema": {"type": "string"}}
                            }
                        },
                        "400": err("The id is not a call id"),
                        "404": err("No such call"),
                    })))
                }
            },
            "/v1/events": {
                "get": {
                    "operationId": "streamEvents",
                    "summary": "Server-sent events: `id:` is the event's sequence number; resume with Last-Event-ID or ?after=",
                    "description": "Event names: call-status (state changes), transcription (with speaker), call-ended (with durationSecs), error, and created, carrier, dtmf, tool_call. Each `data:` is one CallEvent as JSON.",
                    "parameters": [
                        {"name": "callId", "in": "query", "schema": call_id},
                        {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0}},
                    ],
                    "responses": common(obj(json!({
                        "200": {
                            "description": "An endless text/event-stream; each data line is a CallEvent",
                            "content": {"text/event-stream": {"schema": event}}
                        },
                        "400": err("A parameter is not accepted"),
                        "404": err("No such call"),
                    })))
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "responses": {"200": {"description": "This document", "content": {"application/json": {}}}}
                }
            }
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}
