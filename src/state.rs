//! What every frontend route needs, shared by the HTTP and MCP frontends.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use switchboard_actors::Engine;

use crate::config::Config;

/// What every route needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub config: Arc<Config>,
    /// Ends the long-lived responses (SSE, WebSockets, MCP sessions): graceful shutdown waits
    /// for every open connection, and these would otherwise never finish. [`run`] ties it to
    /// its own shutdown token.
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn new(engine: Engine, config: Arc<Config>) -> AppState {
        AppState {
            engine,
            config,
            shutdown: CancellationToken::new(),
        }
    }
}
