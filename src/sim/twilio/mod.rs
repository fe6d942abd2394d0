//! Twilio half of the simulator: REST Calls API, signed webhooks, Media Streams client.
//! (To be written: see issue 2.)

use std::sync::Arc;

use axum::Router;

use super::SimState;

/// Per-call state of the Twilio half.
#[derive(Default)]
pub struct State {}

pub fn routes(_state: Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
}
