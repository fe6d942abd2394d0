//! OpenAI Realtime (GA) half of the simulator. (To be written: see issue 2.)

use std::sync::Arc;

use axum::Router;

use super::SimState;

/// Per-session state of the model half.
#[derive(Default)]
pub struct State {}

pub fn routes(_state: Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
}
