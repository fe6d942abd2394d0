//! The MCP server: one rmcp handler over the engine, thin runners per transport. (Issue 4.)
//!
//! - stdio (`switchboard mcp`): [`serve_stdio`].
//! - Streamable HTTP at `/mcp` and JSON-RPC over WebSocket at `/mcp/ws`: [`http_routes`],
//!   both behind the bearer-token check.

mod handler;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt, future};
use rmcp::RoleServer;
use rmcp::ServiceExt;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::http::AppState;
use crate::http::auth::require_token;

pub use handler::{MAX_WAIT_SECS, TelephonyServer};

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP session could not start: {0}")]
    Initialize(String),
    #[error("MCP session ended with an error: {0}")]
    Session(String),
}

/// MCP over stdin/stdout until the client closes stdin or `shutdown` fires. Stdout carries
/// protocol only; the caller must send logs to stderr.
pub async fn serve_stdio(state: AppState, shutdown: CancellationToken) -> Result<(), McpError> {
    let running = TelephonyServer::new(state.engine.clone())
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
const LOOPBACK_ORIGINS: [&str; 3] = ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

/// `/mcp` (Streamable HTTP) and `/mcp/ws` (JSON-RPC over WebSocket).
pub fn http_routes(state: AppState) -> Router {
    let server = &state.config.server;
    let hosts: Vec<String> = LOOPBACK_HOSTS
        .iter()
        .map(|h| h.to_string())
        .chain(server.allowed_hosts.iter().cloned())
        .collect();
    let mut config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_allowed_hosts(hosts);
    if !server.allowed_origins.is_empty() {
        config = config.with_allowed_origins(
            LOOPBACK_ORIGINS
                .iter()
                .map(|o| o.to_string())
                .chain(server.allowed_origins.iter().cloned()),
        );
    }
    let engine = state.engine.clone();
    let service = StreamableHttpService::new(
        move || Ok(TelephonyServer::new(engine.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .route("/mcp/ws", get(ws_upgrade))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn ws_upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.protocols(["mcp", "jsonrpc"])
        .on_upgrade(move |socket| serve_ws(state, socket))
}

/// Bridges one WebSocket (one JSON-RPC message per text frame) into an rmcp transport, so the
/// same handler serves it as every other transport.
async fn serve_ws(state: AppState, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let sink = sink.with(|msg: TxJsonRpcMessage<RoleServer>| {
        future::ready(
            serde_json::to_string(&msg)
                .map(|s| Message::Text(s.into()))
                .map_err(axum::Error::new),
        )
    });
    let stream = stream
        .take_while(|m| future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_)))))
        .filter_map(|m| {
            future::ready(match m {
                Ok(Message::Text(t)) => {
                    match serde_json::from_str::<RxJsonRpcMessage<RoleServer>>(t.as_str()) {
                        Ok(msg) => Some(msg),
                        Err(e) => {
                            tracing::warn!(error = %e, "MCP WebSocket: dropped a frame that is not a JSON-RPC message");
                            None
                        }
                    }
                }
                _ => None,
            })
        });
    let server = TelephonyServer::new(state.engine.clone());
    match server.serve((Box::pin(sink), Box::pin(stream))).await {
        Ok(running) => {
            let _ = running.waiting().await;
        }
        Err(e) => tracing::debug!(error = %e, "MCP WebSocket session did not initialize"),
    }
}
