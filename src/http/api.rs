//! REST `/v1`, SSE `/v1/events`, OpenAPI. (Durable-history work, issue 5.)

use axum::Router;

use super::AppState;

pub fn routes(_state: AppState) -> Router {
    Router::new()
}
