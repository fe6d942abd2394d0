//! What every MCP client needs from the server (issue 13): portable tool schemas, titles and
//! descriptions, a clear error for an unknown tool, log messages for call progress at the
//! level the client set, and one `resources/updated` per change. In process over a duplex
//! pipe with rmcp's own client, in front of the simulator.
#![allow(deprecated)] // logging/setLevel: deprecated by SEP-2577, still what 2025-11-25 clients use

#[path = "support/mcp_client.rs"]
mod mcp_client;
mod support;

use std::time::Duration;

use rmcp::model::*;
use serde_json::{Value, json};

use mcp_client::*;
use support::*;
use switchboard::mcp::schema::STANDARD_FORMATS;

/// Every problem in one schema: a bare `true` where a schema is expected, a `format` JSON
/// Schema does not define, a `type` array with "null", and an `anyOf`/`oneOf` null branch.
fn problems(v: &Value, path: &str, keyword: &str, out: &mut Vec<String>) {
    match v {
        // `additionalProperties: false/true` is a boolean-valued keyword, not a subschema slot
        // the Inspector objects to; everywhere else a bare boolean is refused.
        Value::Bool(b) if !matches!(keyword, "additionalProperties" | "unevaluatedProperties") => {
            out.push(format!("{path}: bare {b}"))
        }
        Value::Object(m) => {
            if let Some(f) = m.get("format").and_then(Value::as_str)
                && !STANDARD_FORMATS.contains(&f)
            {
                out.push(format!("{path}: format {f}"));
            }
            if let Some(Value::Array(types)) = m.get("type")
                && types.iter().any(|t| t == "null")
            {
                out.push(format!("{path}: type {types:?}"));
            }
            for (k, sub) in m {
                match (k.as_str(), sub) {
                    (
                        "properties" | "$defs" | "definitions" | "patternProperties",
                        Value::Object(map),
                    ) => {
                        for (name, s) in map {
                            problems(s, &format!("{path}.{k}.{name}"), k, out);
                        }
                    }
                    ("anyOf" | "oneOf" | "allOf" | "prefixItems", Value::Array(list)) => {
                        for (i, s) in list.iter().enumerate() {
                            if s.get("type").is_some_and(|t| t == "null") {
                                out.push(format!("{path}.{k}[{i}]: a null branch"));
                            }
                            problems(s, &format!("{path}.{k}[{i}]"), k, out);
                        }
                    }
                    (
                        "items"
                        | "additionalProperties"
                        | "unevaluatedProperties"
                        | "not"
                        | "if"
                        | "then"
                        | "else"
                        | "contains"
                        | "propertyNames",
                        s,
                    ) => problems(s, &format!("{path}.{k}"), k, out),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_schemas_are_portable_and_everything_is_titled_and_described() {
    let stack = stack(vec![builtin("restaurant")]).await;
    let (client, _rx) = connect(&stack).await;

    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.len() >= 6);
    let mut found = Vec::new();
    for t in &tools {
        assert!(
            t.title.as_deref().is_some_and(|s| !s.is_empty()),
            "{} has no title",
            t.name
        );
        let input = Value::Object(t.input_schema.as_ref().clone());
        problems(&input, &format!("{}.inputSchema", t.name), "", &mut found);
        let output = Value::Object(
            t.output_schema
                .as_ref()
                .expect("outputSchema")
                .as_ref()
                .clone(),
        );
        problems(&output, &format!("{}.outputSchema", t.name), "", &mut found);
    }
    assert!(found.is_empty(), "unportable schemas: {found:#?}");

    // The schemas still describe what the tools send: an ended call's outcome data is an
    // object, not a bare value.
    let status = tools.iter().find(|t| t.name == "telephony_status").unwrap();
    let out = Value::Object(status.output_schema.as_ref().unwrap().as_ref().clone());
    assert_eq!(
        out["$defs"]["OutcomeView"]["properties"]["data"]["type"], "object",
        "{out}"
    );

    let prompts = client.list_all_prompts().await.unwrap();
    assert!(prompts.len() >= 3);
    for p in &prompts {
        assert!(
            p.description.as_deref().is_some_and(|d| !d.is_empty()),
            "prompt {} has no description",
            p.name
        );
        for a in p.arguments.as_deref().unwrap_or_default() {
            assert!(
                a.description.as_deref().is_some_and(|d| !d.is_empty()),
                "argument {} of prompt {} has no description",
                a.name,
                p.name
            );
        }
    }
    client.cancel().await.ok();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tool_is_named_and_the_tools_are_listed() {
    let stack = stack(vec![builtin("restaurant")]).await;
    let (client, _rx) = connect(&stack).await;
    let err = client
        .call_tool(CallToolRequestParams::new("telephony_dial"))
        .await
        .expect_err("no such tool");
    let msg = err.to_string();
    assert!(msg.contains("telephony_dial"), "{msg}");
    for t in ["telephony_call", "telephony_wait", "telephony_status"] {
        assert!(msg.contains(t), "{t} not listed in {msg}");
    }
    client.cancel().await.ok();
    stack.stop().await;
}

/// Places the restaurant call and waits (with the engine) until it ended.
async fn run_call(stack: &switchboard::stack::Stack, client: &Client) -> String {
    let scenario = builtin("restaurant");
    let placed = client
        .call_tool(
            CallToolRequestParams::new("telephony_call").with_arguments(
                json!({"to": scenario.number, "goal": scenario.agent.goal,
                       "context": scenario.agent.context})
                .as_object()
                .unwrap()
                .clone(),
            ),
        )
        .await
        .unwrap();
    let id = placed.structured_content.unwrap()["callId"]
        .as_str()
        .unwrap()
        .to_owned();
    let rec = stack
        .engine
        .wait(id.parse().unwrap(), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(rec.state.is_terminal(), "{rec:?}");
    id
}

/// Everything pushed until nothing more came for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_progress_is_logged_to_sessions_that_set_a_level_and_at_that_level() {
    let stack = stack(vec![builtin("restaurant")]).await;
    let (info, mut info_rx) = connect(&stack).await;
    let (quiet, mut quiet_rx) = connect(&stack).await;
    let (warn, mut warn_rx) = connect(&stack).await;
    let caps = info.peer_info().unwrap().capabilities.clone();
    assert!(caps.logging.is_some(), "no logging capability: {caps:?}");
    info.set_level(SetLevelRequestParams::new(LoggingLevel::Info))
        .await
        .unwrap();
    warn.set_level(SetLevelRequestParams::new(LoggingLevel::Warning))
        .await
        .unwrap();

    let id = run_call(&stack, &info).await;

    let logs: Vec<(LoggingLevel, Value)> = drain(&mut info_rx)
        .await
        .into_iter()
        .filter_map(|p| match p {
            Pushed::Log(l, d) => Some((l, d)),
            _ => None,
        })
        .collect();
    let messages: Vec<String> = logs
        .iter()
        .map(|(_, d)| d["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        logs.iter().all(|(_, d)| d["callId"] == id.as_str()),
        "{logs:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("connected")),
        "no state progress in {messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("ended: completed")),
        "no end in {messages:?}"
    );
    // Transcript lines are debug: below the level this session asked for.
    assert!(
        logs.iter().all(|(l, _)| *l != LoggingLevel::Debug),
        "debug messages at level info: {logs:?}"
    );

    let unasked = drain(&mut quiet_rx).await;
    assert!(
        !unasked.iter().any(|p| matches!(p, Pushed::Log(..))),
        "a session that set no level got log messages: {unasked:?}"
    );
    let above = drain(&mut warn_rx).await;
    assert!(
        !above.iter().any(|p| matches!(p, Pushed::Log(..))),
        "a session at warning got the info progress of a call that went well: {above:?}"
    );
    for c in [info, quiet, warn] {
        c.cancel().await.ok();
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_is_one_resources_updated() {
    let stack = stack(vec![builtin("restaurant")]).await;
    let (client, mut rx) = connect(&stack).await;
    client
        .subscribe(SubscribeRequestParams::new("calls://recent"))
        .await
        .unwrap();
    // Every created, state and ended event changes the list; count them as they happen.
    let mut events = stack.engine.subscribe(None);
    let counter = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(ev) = events.next().await {
            use switchboard_actors::EventKind;
            match ev.kind {
                EventKind::Created { .. } | EventKind::State { .. } => n += 1,
                EventKind::Ended { .. } => return n + 1,
                _ => {}
            }
        }
        n
    });
    run_call(&stack, &client).await;
    let changes = tokio::time::timeout(Duration::from_secs(10), counter)
        .await
        .unwrap()
        .unwrap();
    let pushed = drain(&mut rx).await;
    let updates = pushed
        .iter()
        .filter(|p| matches!(p, Pushed::Updated(u) if u == "calls://recent"))
        .count();
    assert!(updates >= 1, "no update for calls://recent: {pushed:?}");
    // The call's end is a state change and the end event, sent together: one notification.
    assert!(
        updates < changes,
        "{updates} notifications for {changes} events that arrived in bursts: {pushed:?}"
    );
    client.cancel().await.ok();
    stack.stop().await;
}
