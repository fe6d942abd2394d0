//! Twilio webhooks (TwiML, status callbacks) and the media WebSocket. (Engine work, issue 3.)

use axum::Router;

use super::AppState;

pub fn routes(_state: AppState) -> Router {
    Router::new()
}
