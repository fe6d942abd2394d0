//! MCP as JSON-RPC over a WebSocket (`/mcp/ws`): one message per text frame, bridged into an
//! rmcp transport so the same handler serves it as every other transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt, future};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::{RoleServer, ServiceExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use switchboard_actors::Engine;

use super::TelephonyServer;

/// `/mcp/ws`: upgrades and serves one MCP session per socket, until the client leaves or
/// `shutdown` fires.
pub(super) async fn upgrade(
    State((engine, shutdown)): State<(Engine, CancellationToken)>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.protocols(["mcp", "jsonrpc"])
        .on_upgrade(move |socket| serve(engine, shutdown, socket))
}

/// Bridges one WebSocket (one JSON-RPC message per text frame) into an rmcp transport, so the
/// same handler serves it as every other transport. One writer task owns the socket's sink so
/// both rmcp's replies and our own answers to frames rmcp never sees (not JSON, not JSON-RPC)
/// reach the client in order.
async fn serve(engine: Engine, shutdown: CancellationToken, socket: WebSocket) {
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
    let started = Arc::new(AtomicBool::new(false));
    let stream = ws_rx
        .take_while(|m| future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_)))))
        .filter_map(move |m| {
            let errors = errors.clone();
            let started = started.clone();
            async move {
                let reply = match m {
                    Ok(Message::Text(t)) => match parse_frame(t.as_str()) {
                        Ok(msg) => match before_initialize(&started, &msg) {
                            Gate::Pass => return Some(msg),
                            Gate::Drop => return None,
                            Gate::Reply(reply) => reply,
                        },
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
    let server = TelephonyServer::new(engine);
    match server.serve((Box::pin(sink), Box::pin(stream))).await {
        Ok(running) => {
            let session = running.cancellation_token();
            let stop = shutdown;
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

enum Gate {
    Pass,
    Drop,
    Reply(Value),
}

/// Until the session has started, only `initialize`, `ping`, `server/discover` and stateless
/// (2026-07-28) requests carrying their protocol version in `_meta` may pass: rmcp would
/// answer any other request with a puzzling "_meta is missing" error, and end the session on
/// an early notification. A request gets an error saying to initialize first; a notification
/// (which gets no reply) is dropped.
fn before_initialize(started: &AtomicBool, msg: &RxJsonRpcMessage<RoleServer>) -> Gate {
    if started.load(Ordering::SeqCst) {
        return Gate::Pass;
    }
    let Ok(v) = serde_json::to_value(msg) else {
        return Gate::Pass;
    };
    let method = v["method"].as_str().unwrap_or_default();
    let is_request = v.get("id").is_some() && v.get("method").is_some();
    let stateless = v["params"]["_meta"]
        .get("io.modelcontextprotocol/protocolVersion")
        .is_some();
    if method == "initialize" || stateless {
        started.store(true, Ordering::SeqCst);
        return Gate::Pass;
    }
    if matches!(method, "ping" | "server/discover") {
        return Gate::Pass;
    }
    if !is_request {
        return Gate::Drop;
    }
    Gate::Reply(rpc_error(
        v["id"].clone(),
        NOT_INITIALIZED,
        &format!(
            "not initialized: send initialize first (then notifications/initialized), before {method}"
        ),
    ))
}

/// A request out of the lifecycle's order is an invalid request (JSON-RPC 2.0 §5.1).
const NOT_INITIALIZED: i64 = INVALID_REQUEST;
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
