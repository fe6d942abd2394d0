//! Bearer-token check for every route that is not a signed Twilio webhook.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::state::AppState;

/// Rejects with 401 (JSON body naming the problem) unless `Authorization: Bearer <api_token>`
/// matches. With no token configured (allowed only on loopback binds), every request passes.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.config.server.api_token.as_ref() else {
        return next.run(req).await;
    };
    let header_value = req.headers().get(header::AUTHORIZATION);
    // RFC 9110 §11.1: the scheme is case-insensitive.
    let given = header_value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        Some(t) if bool::from(t.as_bytes().ct_eq(expected.expose_secret().as_bytes())) => {
            next.run(req).await
        }
        Some(_) => unauthorized(
            "the bearer token is not valid; accepted: Authorization: Bearer <server.api_token>",
        ),
        None if header_value.is_some() => unauthorized(
            "the Authorization header is not a bearer token; accepted: Authorization: Bearer <server.api_token>",
        ),
        None => unauthorized(
            "missing Authorization header; accepted: Authorization: Bearer <server.api_token>",
        ),
    }
}

/// No OAuth is offered: the challenge is a plain `Bearer` with no `resource_metadata`, so an
/// MCP client does not start OAuth discovery, and the body says how to configure the token.
fn unauthorized(message: &str) -> Response {
    let message = format!(
        "{message}. This server needs a bearer token and offers no OAuth: configure the client \
         to send the header Authorization: Bearer <token>, with the token set on the server as \
         server.api_token or SWITCHBOARD_SERVER__API_TOKEN"
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({"error": {"code": "unauthorized", "message": message}})),
    )
        .into_response()
}
