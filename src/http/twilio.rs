//! Twilio's webhooks (TwiML on answer, status callbacks) and the media WebSocket.
//!
//! Every request must carry a valid `X-Twilio-Signature`, computed over the configured public
//! URL (never the Host header, which a proxy rewrites); a bad or missing one is refused with
//! 403 before anything changes.

// Handlers return `Result<_, Response>` so `?` can answer early; a response is built once per
// request, never in a loop, so its size does not matter.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use switchboard_actors::twilio::urls;
use switchboard_actors::{CallId, CarrierUpdate, EngineError};

use crate::state::AppState;

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(urls::VOICE_ROUTE, post(voice))
        .route(urls::STATUS_ROUTE, post(status))
        .route(urls::MEDIA_ROUTE, get(media))
        .with_state(state)
}

/// A refusal in the API's one error shape, `{"error":{"code","message"}}`.
fn refused(status: StatusCode, why: &str) -> Response {
    let code = match status {
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        _ => "internal",
    };
    super::api::ApiError::new(status, code, why).into_response()
}

/// Parses and checks a signed form webhook.
fn signed_form(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Vec<(String, String)>, Response> {
    let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let sig = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(uri.path());
    if sig.is_empty() || !state.engine.verify_twilio_signature(path, &params, sig) {
        tracing::warn!(path, "webhook refused: bad or missing X-Twilio-Signature");
        return Err(refused(
            StatusCode::FORBIDDEN,
            "invalid X-Twilio-Signature; accepted: requests Twilio signed with this account's auth token over the configured public_url",
        ));
    }
    Ok(params)
}

/// Both webhooks start the same way: a valid signature over the form, then a known call id.
fn signed_call(
    state: &AppState,
    id: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(CallId, Vec<(String, String)>), Response> {
    let params = signed_form(state, uri, headers, body)?;
    Ok((call_id(id)?, params))
}

fn call_id(id: &str) -> Result<CallId, Response> {
    id.parse()
        .map_err(|e: switchboard_actors::data::CallIdError| {
            refused(StatusCode::NOT_FOUND, &e.to_string())
        })
}

fn engine_error(e: EngineError) -> Response {
    match e {
        EngineError::NotFound(_) => refused(StatusCode::NOT_FOUND, &e.to_string()),
        other => refused(StatusCode::INTERNAL_SERVER_ERROR, &other.to_string()),
    }
}

async fn voice(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (id, params) = match signed_call(&state, &id, &uri, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let answered_by = params
        .iter()
        .find(|(k, _)| k == "AnsweredBy")
        .map(|(_, v)| v.clone());
    match state.engine.twiml(id, answered_by).await {
        Ok(xml) => ([(header::CONTENT_TYPE, "text/xml")], xml).into_response(),
        Err(e) => engine_error(e),
    }
}

async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (id, params) = match signed_call(&state, &id, &uri, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let update = CarrierUpdate {
        call_sid: get("CallSid").unwrap_or_default(),
        status: get("CallStatus").unwrap_or_default(),
        answered_by: get("AnsweredBy"),
        duration_secs: get("CallDuration").and_then(|d| d.parse().ok()),
        sequence: get("SequenceNumber").and_then(|d| d.parse().ok()),
        error_code: get("ErrorCode"),
    };
    match state.engine.carrier_update(id, update).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => engine_error(e),
    }
}

async fn media(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Twilio signs the upgrade (over the ws(s):// URL); when the header is present it must
    // be right. The call's single-use token in `start` is checked either way.
    if let Some(sig) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        && !state.engine.verify_media_signature(uri.path(), sig)
    {
        tracing::warn!("media socket refused: bad X-Twilio-Signature");
        return refused(
            StatusCode::FORBIDDEN,
            "invalid X-Twilio-Signature; accepted: requests Twilio signed with this account's auth token over the configured public_url",
        );
    }
    let id = match call_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if !state.engine.is_live(id).await {
        return refused(StatusCode::NOT_FOUND, "no live call with this id");
    }
    // Buffers for 160-byte frames and small control messages, not the library's 128 KiB.
    let buffer = switchboard_actors::call::SOCKET_BUFFER;
    ws.read_buffer_size(buffer)
        .write_buffer_size(buffer)
        .on_upgrade(move |socket| async move {
            if let Err(e) = state.engine.media_connected(id, socket).await {
                tracing::warn!("media socket for {id} dropped: {e}");
            }
        })
}
