//! The HTTP frontend: one axum `Router` for Twilio's webhooks and media socket, the REST API
//! and SSE under `/v1`, MCP over HTTP, and `/healthz`.
//!
//! `app()` builds the router and `run()` serves it on a listener the caller bound, until the
//! shutdown token fires; `main` only wires the two together (the axum / mini-redis shape), so
//! tests run the exact same router on `127.0.0.1:0`.

pub mod api;
pub mod auth;
pub mod guard;
pub mod openapi;
pub mod sse;
pub mod twilio;

use axum::Router;
use axum::middleware;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::state::AppState;

pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(twilio::routes(state.clone()))
        .merge(api::routes(state.clone()))
        .merge(
            crate::mcp::http_routes(
                state.engine.clone(),
                &state.config.server,
                state.shutdown.clone(),
            )
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_token,
            )),
        )
        .route("/healthz", get(healthz).with_state(state.clone()))
        // Innermost first: every error becomes JSON, then foreign origins are refused before
        // any route (or its token check) runs.
        .layer(middleware::from_fn(guard::json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::origin_guard,
        ))
        .layer(middleware::from_fn(guard::header_limit))
}

/// `ok` while the engine can take calls; 503 with the reason (in the API's error shape) once
/// it cannot, e.g. when its event writer has stopped.
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.engine.health() {
        Ok(()) => "ok".into_response(),
        Err(e) => api::ApiError::from(e).into_response(),
    }
}

/// Serves `app(state)` on `listener` until `shutdown` is cancelled; open event streams and
/// sockets are ended then too, so the server actually stops.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = AppState {
        shutdown: shutdown.child_token(),
        ..state
    };
    // Media frames are small and 20 ms apart: Nagle's algorithm would hold each behind the
    // previous one's ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
