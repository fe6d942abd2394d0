//! The MCP handler in process over a duplex pipe, with rmcp's own client, in front of the
//! whole system on loopback (simulator + engine + HTTP).

#[path = "support/mcp_client.rs"]
mod mcp_client;
mod support;

use std::time::Duration;

use rmcp::model::*;
use serde_json::{Value, json};

use mcp_client::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_tools_prompts_resources_with_schemas_and_annotations() {
    let stack = stack(vec![builtin("restaurant")]).await;
    let (client, _rx) = connect(&stack).await;

    let info = client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().unwrap().name, "switchboard");

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for want in [
        "telephony_call",
        "telephony_status",
        "telephony_cancel",
        "telephony_transcript",
        "telephony_list",
        "telephony_wait",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for t in &tools {
        assert!(
            t.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "bad tool name {}",
            t.name
        );
        assert!(t.description.as_ref().is_some_and(|d| d.len() > 20));
        assert!(t.output_schema.is_some(), "{} has no outputSchema", t.name);
        let a = t.annotations.as_ref().expect("annotations");
        match t.name.as_ref() {
            "telephony_call" => {
                assert_eq!(a.read_only_hint, Some(false));
                assert_eq!(a.open_world_hint, Some(true));
                assert_eq!(a.idempotent_hint, Some(false));
            }
            "telephony_status" | "telephony_transcript" | "telephony_list" | "telephony_wait" => {
                assert_eq!(a.read_only_hint, Some(true), "{}", t.name)
            }
            _ => {}
        }
    }
    let call = tools.iter().find(|t| t.name == "telephony_call").unwrap();
    let schema = serde_json::to_value(&call.input_schema).unwrap();
    assert!(
        schema["properties"]["to"]["description"]
            .as_str()
            .unwrap()
            .contains("E.164")
    );
    assert_eq!(
        schema["required"].clone().take_sorted(),
        json!(["goal", "to"])
    );

    let prompts = client.list_all_prompts().await.unwrap();
    let pnames: Vec<&str> = prompts.iter().map(|p| p.name.as_ref()).collect();
    for want in [
        "make-restaurant-reservation",
        "reschedule-appointment",
        "deliver-message",
    ] {
        assert!(pnames.contains(&want), "{want} missing from {pnames:?}");
    }
    let mut args = serde_json::Map::new();
    for (k, v) in [
        ("restaurantNumber", "+12125550134"),
        ("peopleNumber", "4"),
        ("date", "Friday"),
        ("time", "7pm"),
    ] {
        args.insert(k.into(), v.into());
    }
    let got = client
        .get_prompt(GetPromptRequestParams::new("make-restaurant-reservation").with_arguments(args))
        .await
        .unwrap();
    let body = serde_json::to_string(&got.messages).unwrap();
    assert!(body.contains("telephony_call") && body.contains("telephony_wait"));
    assert!(body.contains("+12125550134"));

    let templates = client.list_all_resource_templates().await.unwrap();
    let uris: Vec<&str> = templates.iter().map(|t| t.uri_template.as_str()).collect();
    assert!(uris.contains(&"call://{callId}") && uris.contains(&"call://{callId}/transcript"));
    let resources = client.list_all_resources().await.unwrap();
    assert!(resources.iter().any(|r| r.uri == "calls://recent"));

    client.cancel().await.ok();
    stack.stop().await;
}

trait Sorted {
    fn take_sorted(self) -> Value;
}
impl Sorted for Value {
    fn take_sorted(self) -> Value {
        let mut v: Vec<String> = self
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        v.sort();
        json!(v)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_get_clear_tool_errors() {
    let stack = stack(vec![builtin("restaurant")]).await;
    let (client, _rx) = connect(&stack).await;

    let r = call(
        &client,
        "telephony_call",
        json!({"to": "555-1234", "goal": "x"}),
    )
    .await;
    assert_tool_error(&r, "argument to: '555-1234' is not accepted");
    assert_tool_error(&r, "like +14155550123");
    let r = call(&client, "telephony_call", json!({"goal": "x"})).await;
    assert_tool_error(&r, "to");
    assert_tool_error(&r, "accepted:");
    let r = call(
        &client,
        "telephony_call",
        json!({"to": "+12125550134", "goal": "  "}),
    )
    .await;
    assert_tool_error(&r, "argument goal: empty; accepted:");
    let r = call(
        &client,
        "telephony_call",
        json!({"to": "+12125550134", "goal": "x", "timeoutSec": 0}),
    )
    .await;
    assert_tool_error(&r, "argument timeoutSec");
    assert_tool_error(&r, "an integer from 10 to 3600 seconds");
    let r = call(
        &client,
        "telephony_call",
        json!({"to": "+12125550134", "goal": "x", "from": "abc"}),
    )
    .await;
    assert_tool_error(&r, "argument from: 'abc' is not accepted");
    assert_tool_error(&r, "E.164");
    let r = call(&client, "telephony_status", json!({"callId": "nope"})).await;
    assert_tool_error(&r, "'nope' is not accepted");
    assert_tool_error(&r, "accepted: a call id");
    let r = call(
        &client,
        "telephony_status",
        json!({"callId": "01JD3Z8Q5V6N0M8X9K2C4B7A1E"}),
    )
    .await;
    assert_tool_error(&r, "no call with id 01JD3Z8Q5V6N0M8X9K2C4B7A1E");
    let r = call(
        &client,
        "telephony_transcript",
        json!({"callId": "01JD3Z8Q5V6N0M8X9K2C4B7A1E"}),
    )
    .await;
    assert_tool_error(&r, "no call with id");
    let r = call(
        &client,
        "telephony_cancel",
        json!({"callId": "01JD3Z8Q5V6N0M8X9K2C4B7A1E"}),
    )
    .await;
    assert_tool_error(&r, "no call with id");
    let r = call(&client, "telephony_list", json!({"state": "ringing"})).await;
    assert_tool_error(
        &r,
        "accepted: dialing, connected, completed, failed, canceled",
    );
    let r = call(&client, "telephony_list", json!({"limit": 0})).await;
    assert_tool_error(&r, "limit must be between 1 and 500");
    let r = call(
        &client,
        "telephony_wait",
        json!({"callId": "01JD3Z8Q5V6N0M8X9K2C4B7A1E", "timeoutSec": 51}),
    )
    .await;
    assert_tool_error(&r, "timeoutSec must be between 1 and 50");
    let r = call(&client, "telephony_status", json!({"callId": 5})).await;
    assert_tool_error(&r, "invalid arguments for telephony_status");

    // An unknown tool is protocol misuse: a JSON-RPC error, not a tool result.
    let err = client
        .call_tool(CallToolRequestParams::new("telephony_fly"))
        .await
        .expect_err("unknown tool");
    assert!(format!("{err}").contains("telephony_fly") || format!("{err:?}").contains("-32602"));

    // Unknown resource: resource-not-found.
    let err = client
        .read_resource(ReadResourceRequestParams::new("call://nope"))
        .await
        .expect_err("unknown resource");
    assert!(
        format!("{err:?}").contains("accepted: a call id"),
        "{err:?}"
    );

    client.cancel().await.ok();
    stack.stop().await;
}

/// The MCP tool is checked by the engine's one validation path: what the Supervisor refuses
/// (a 1 s cap, an unknown voice) is a tool error naming the argument and what is accepted,
/// and an argument the tool does not know is refused with the list of accepted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telephony_call_is_refused_with_the_engines_message() {
    let stack = stack(vec![builtin("restaurant")]).await;
    let (client, _rx) = connect(&stack).await;
    let r = call(
        &client,
        "telephony_call",
        json!({"to": "+12125550134", "goal": "x", "timeoutSec": 1}),
    )
    .await;
    assert_tool_error(&r, "argument timeoutSec");
    assert_tool_error(
        &r,
        "1 is not accepted; accepted: an integer from 10 to 3600 seconds",
    );
    let r = call(
        &client,
        "telephony_call",
        json!({"to": "+12125550134", "goal": "x", "voice": "robot"}),
    )
    .await;
    assert_tool_error(
        &r,
        "argument voice: 'robot' is not a voice the model accepts",
    );
    assert_tool_error(&r, "accepted: alloy, ash, ballad");
    let r = call(
        &client,
        "telephony_call",
        json!({"to": "+12125550134", "goal": "x", "language": "klingon"}),
    )
    .await;
    assert_tool_error(&r, "argument language: 'klingon' is not accepted");
    assert_tool_error(&r, "like en or en-US");
    let r = call(
        &client,
        "telephony_call",
        json!({"to": "+12125550134", "goal": "x", "max_duration_secs": 60}),
    )
    .await;
    assert_tool_error(&r, "unknown field `max_duration_secs`");
    assert_tool_error(&r, "timeoutSec");
    assert_tool_error(&r, "accepted:");
    // Nothing reached the carrier.
    assert!(stack.sim().state().twilio.calls().is_empty());
    client.cancel().await.ok();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)]
async fn a_simulated_call_end_to_end_with_notifications() {
    let scenario = builtin("restaurant");
    let stack = stack(vec![scenario.clone()]).await;
    let (client, mut rx) = connect(&stack).await;

    let placed = call(
        &client,
        "telephony_call",
        json!({
            "to": scenario.number,
            "goal": scenario.agent.goal,
            "context": scenario.agent.context,
        }),
    )
    .await;
    assert_ne!(placed.is_error, Some(true), "{}", text(&placed));
    let sc = placed
        .structured_content
        .clone()
        .expect("structuredContent");
    let id = sc["callId"].as_str().unwrap().to_owned();
    assert_eq!(sc["state"], "dialing");

    // A new call changes the resource list.
    assert!(
        next_matching(&mut rx, Duration::from_secs(5), |p| matches!(
            p,
            Pushed::ListChanged
        ))
        .await
        .is_some()
    );
    client
        .subscribe(SubscribeRequestParams::new(format!(
            "call://{id}/transcript"
        )))
        .await
        .unwrap();

    // Follow it with progress, the way an assistant does: wait, wait again until ended.
    let mut ended = false;
    let mut progress = Vec::new();
    for _ in 0..4 {
        let mut params = CallToolRequestParams::new("telephony_wait").with_arguments(
            json!({"callId": id, "timeoutSec": 30})
                .as_object()
                .unwrap()
                .clone(),
        );
        params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(
            NumberOrString::Number(7),
        )));
        let r = client.call_tool(params).await.unwrap();
        assert_ne!(r.is_error, Some(true), "{}", text(&r));
        let sc = r.structured_content.unwrap();
        if sc["ended"] == true {
            assert_eq!(sc["status"]["state"], "completed", "{sc}");
            assert_eq!(sc["status"]["outcome"]["success"], true, "{sc}");
            assert!(!sc["turns"].as_array().unwrap().is_empty());
            ended = true;
            break;
        }
    }
    assert!(ended, "the call did not end within four waits");
    while let Ok(p) = rx.try_recv() {
        progress.push(p);
    }
    assert!(
        progress
            .iter()
            .any(|p| matches!(p, Pushed::Progress(m) if m.starts_with("agent:"))),
        "no transcript progress in {progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|p| matches!(p, Pushed::Progress(m) if m.starts_with("connected"))),
        "no state progress in {progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|p| matches!(p, Pushed::Updated(u) if *u == format!("call://{id}/transcript"))),
        "no resource update in {progress:?}"
    );

    let status = call(&client, "telephony_status", json!({"callId": id})).await;
    let sc = status.structured_content.unwrap();
    assert_eq!(sc["state"], "completed");
    assert!(
        sc["outcome"]["summary"]
            .as_str()
            .unwrap()
            .contains("Alex Kim")
    );

    // The dotted alias of the seeds still works.
    let tr = call(&client, "telephony.transcript", json!({"callId": id})).await;
    let sc = tr.structured_content.unwrap();
    assert_eq!(sc["turns"][0]["speaker"], "agent");

    let res = client
        .read_resource(ReadResourceRequestParams::new(format!(
            "call://{id}/transcript"
        )))
        .await
        .unwrap();
    let body = serde_json::to_string(&res.contents).unwrap();
    assert!(
        body.contains("Agent:") && body.contains("Callee:"),
        "{body}"
    );

    let again = call(&client, "telephony_cancel", json!({"callId": id})).await;
    let sc = again.structured_content.unwrap();
    assert_eq!(sc["success"], false);
    assert!(sc["message"].as_str().unwrap().contains("already ended"));

    // A second call, canceled while live.
    let placed = call(
        &client,
        "telephony_call",
        json!({"to": scenario.number, "goal": "Ask about opening hours"}),
    )
    .await;
    let id2 = placed.structured_content.unwrap()["callId"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = call(&client, "telephony.cancel", json!({"callId": id2})).await;
    let sc = c.structured_content.unwrap();
    assert_eq!(sc["success"], true, "{sc}");
    let w = call(
        &client,
        "telephony_wait",
        json!({"callId": id2, "timeoutSec": 20}),
    )
    .await;
    let sc = w.structured_content.unwrap();
    assert_eq!(sc["status"]["state"], "canceled", "{sc}");

    let list = call(&client, "telephony_list", json!({"limit": 5})).await;
    assert_eq!(
        list.structured_content.unwrap()["calls"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    client.cancel().await.ok();
    stack.stop().await;
}
