//! The MCP server: one rmcp handler over the engine, thin runners per transport. (Issue 4.)

use axum::Router;

use crate::http::AppState;

/// `/mcp` (Streamable HTTP) and `/mcp/ws` (JSON-RPC over WebSocket).
pub fn http_routes(_state: AppState) -> Router {
    Router::new()
}
