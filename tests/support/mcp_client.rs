//! rmcp's own client in process over a duplex pipe, in front of a stack's engine, recording
//! what the server pushes (progress, log messages, resource changes) for the assertions.
//! (Included with `#[path]` by the MCP tests that run in process.)
#![allow(dead_code)]
#![allow(deprecated)] // logging/setLevel: deprecated by SEP-2577, still what 2025-11-25 clients use

use std::time::Duration;

use rmcp::model::*;
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::mpsc;

use switchboard::mcp::TelephonyServer;

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Pushed>,
}

#[derive(Debug)]
pub enum Pushed {
    Progress(String),
    Log(LoggingLevel, Value),
    Updated(String),
    ListChanged,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let _ = self
            .tx
            .send(Pushed::Progress(params.message.unwrap_or_default()));
    }
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let _ = self.tx.send(Pushed::Log(params.level, params.data));
    }
    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let _ = self.tx.send(Pushed::Updated(params.uri));
    }
    async fn on_resource_list_changed(&self, _: NotificationContext<RoleClient>) {
        let _ = self.tx.send(Pushed::ListChanged);
    }
}

pub type Client = RunningService<RoleClient, Recorder>;

/// A fresh MCP session (initialized) with the stack's engine, and what it gets pushed.
pub async fn connect(
    stack: &switchboard::stack::Stack,
) -> (Client, mpsc::UnboundedReceiver<Pushed>) {
    let (s, c) = tokio::io::duplex(64 * 1024);
    let server = TelephonyServer::new(stack.engine.clone());
    tokio::spawn(async move {
        if let Ok(running) = server.serve(s).await {
            let _ = running.waiting().await;
        }
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Recorder { tx }.serve(c).await.expect("initialize");
    (client, rx)
}

/// Calls a tool; a protocol-level failure fails the test (tool errors come back as results).
pub async fn call(client: &Client, name: &str, args: Value) -> CallToolResult {
    client
        .call_tool(
            CallToolRequestParams::new(name.to_owned())
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} failed at the protocol level: {e}"))
}

/// The result's text content, joined.
pub fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn assert_tool_error(r: &CallToolResult, needle: &str) {
    assert_eq!(r.is_error, Some(true), "expected isError, got {r:?}");
    assert!(text(r).contains(needle), "{needle:?} not in {:?}", text(r));
}

/// The first push matching `pred` within `within`, skipping others.
pub async fn next_matching(
    rx: &mut mpsc::UnboundedReceiver<Pushed>,
    within: Duration,
    mut pred: impl FnMut(&Pushed) -> bool,
) -> Option<Pushed> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(p)) if pred(&p) => return Some(p),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

/// Everything pushed until nothing came for half a second.
pub async fn drain(rx: &mut mpsc::UnboundedReceiver<Pushed>) -> Vec<Pushed> {
    let mut out = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        out.push(p);
    }
    out
}
