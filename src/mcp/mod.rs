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
use serde_json::Value;
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

/// `/mcp` (Streamable HTTP) and `/mcp/ws` (JSON-RPC over WebSocket).
pub fn http_routes(state: AppState) -> Router {
    let server = &state.config.server;
    let hosts: Vec<String> = LOOPBACK_HOSTS
        .iter()
        .map(|h| h.to_string())
        .chain(server.allowed_hosts.iter().cloned())
        .collect();
    // Origins are checked once for every route by `http::guard::origin_guard`.
    let mut config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_allowed_hosts(hosts);
    config.cancellation_token = state.shutdown.child_token();
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
/// same handler serves it as every other transport. One writer task owns the socket's sink so
/// both rmcp's replies and our own answers to frames rmcp never sees (not JSON, not JSON-RPC)
/// reach the client in order.
async fn serve_ws(state: AppState, socket: WebSocket) {
    let (mut ws_tx, ws_rx) = socket.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if ws_tx.send(msg).await.is_err() {
                break;
            }
        }
        let _ = ws_tx.close().await;
    });
    let sink = futures_util::sink::unfold(
        tx.clone(),
        |tx, msg: TxJsonRpcMessage<RoleServer>| async move {
            let text = serde_json::to_string(&msg).map_err(axum::Error::new)?;
            tx.send(Message::Text(text.into()))
                .await
                .map_err(axum::Error::new)?;
            Ok::<_, axum::Error>(tx)
        },
    );
    let errors = tx;
    let stream = ws_rx
        .take_while(|m| future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_)))))
        .filter_map(move |m| {
            let errors = errors.clone();
            async move {
                let reply = match m {
                    Ok(Message::Text(t)) => match parse_frame(t.as_str()) {
                        Ok(msg) => return Some(msg),
                        Err(reply) => reply,
                    },
                    Ok(Message::Binary(_)) => rpc_error(
                        Value::Null,
                        PARSE_ERROR,
                        "binary frames are not accepted: send each JSON-RPC message as one text frame",
                    ),
                    _ => return None,
                };
                let _ = errors.send(Message::Text(reply.to_string().into())).await;
                None
            }
        });
    let server = TelephonyServer::new(state.engine.clone());
    match server.serve((Box::pin(sink), Box::pin(stream))).await {
        Ok(running) => {
            let session = running.cancellation_token();
            let stop = state.shutdown.clone();
            let stopper = tokio::spawn(async move {
                stop.cancelled().await;
                session.cancel();
            });
            let _ = running.waiting().await;
            stopper.abort();
        }
        Err(e) => tracing::debug!(error = %e, "MCP WebSocket session did not initialize"),
    }
    let _ = writer.await;
}

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;

/// A text frame as a JSON-RPC message, or the JSON-RPC error reply the client is owed: -32700
/// when it is not JSON, -32600 when it is JSON but not a JSON-RPC message (echoing its `id`
/// when one can be read, as JSON-RPC 2.0 §5 asks).
fn parse_frame(text: &str) -> Result<RxJsonRpcMessage<RoleServer>, Value> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        rpc_error(
            Value::Null,
            PARSE_ERROR,
            &format!("parse error: the frame is not JSON ({e}); send one JSON-RPC 2.0 message per text frame"),
        )
    })?;
    let id = match value.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    };
    serde_json::from_value(value).map_err(|e| {
        rpc_error(
            id,
            INVALID_REQUEST,
            &format!("invalid request: not a JSON-RPC 2.0 request, notification or response ({e})"),
        )
    })
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}
