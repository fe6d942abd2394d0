//! The MCP server: one rmcp handler over the engine, thin runners per transport. (Issue 4.)
//!
//! - stdio (`switchboard mcp`): [`serve_stdio`].
//! - Streamable HTTP at `/mcp` and JSON-RPC over WebSocket at `/mcp/ws`: [`http_routes`];
//!   the HTTP frontend puts them behind its Origin and bearer-token checks.
//!
//! The handler answers the protocol ([`handler`]); what it offers lives beside it: tools,
//! prompts, resources; [`ws`] bridges the WebSocket transport.

mod handler;
mod prompts;
mod resources;
pub mod schema;
mod tools;
pub mod types;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use switchboard_actors::Engine;

use crate::config::ServerConfig;

pub use handler::TelephonyServer;
pub use tools::MAX_WAIT_SECS;

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP session could not start: {0}")]
    Initialize(String),
    #[error("MCP session ended with an error: {0}")]
    Session(String),
}

/// MCP over stdin/stdout until the client closes stdin or `shutdown` fires. Stdout carries
/// protocol only; the caller must send logs to stderr.
pub async fn serve_stdio(engine: Engine, shutdown: CancellationToken) -> Result<(), McpError> {
    let running = TelephonyServer::new(engine)
        .serve_with_ct(rmcp::transport::stdio(), shutdown.child_token())
        .await
        .map_err(|e| McpError::Initialize(e.to_string()))?;
    running
        .waiting()
        .await
        .map(|_| ())
        .map_err(|e| McpError::Session(e.to_string()))
}

/// Hosts always accepted besides `server.allowed_hosts`: a local client reaches us by these.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// `/mcp` (Streamable HTTP) and `/mcp/ws` (JSON-RPC over WebSocket); sessions end when
/// `shutdown` fires.
pub fn http_routes(engine: Engine, server: &ServerConfig, shutdown: CancellationToken) -> Router {
    let hosts: Vec<String> = LOOPBACK_HOSTS
        .iter()
        .map(|h| h.to_string())
        .chain(server.allowed_hosts.iter().cloned())
        .collect();
    // Origins are checked once for every route by `http::guard::origin_guard`.
    let mut config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_allowed_hosts(hosts);
    config.cancellation_token = shutdown.child_token();
    let factory = engine.clone();
    let service = StreamableHttpService::new(
        move || Ok(TelephonyServer::new(factory.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .route("/mcp/ws", get(ws::upgrade))
        .with_state((engine, shutdown))
}
