//! Faults inside the engine itself, seen from outside: a dead event writer, shutdown with a
//! hang-up in flight, a model endpoint that is slow to answer.

mod support;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::json;

use support::*;
use switchboard::mcp::TelephonyServer;
use switchboard_actors::EngineError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_event_writer_refuses_new_calls_everywhere_with_the_documented_error() {
    let s = builtin("restaurant");
    let stack = stack(vec![s.clone()]).await;
    assert!(stack.engine.health().is_ok());
    stack.engine.inject_event_writer_failure().await;
    assert!(matches!(
        stack.engine.health(),
        Err(EngineError::EventLogStopped)
    ));

    // The library.
    let err = stack.engine.place_call(request_for(&s)).await.unwrap_err();
    assert!(matches!(err, EngineError::EventLogStopped), "{err:?}");
    assert!(
        err.to_string().contains("event log writer has stopped"),
        "{err}"
    );

    // REST: 503 with the error shape.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/calls", stack.http_addr))
        .header("content-type", "application/json")
        .body(json!({"to": s.number, "goal": s.agent.goal}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unhealthy", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event log writer has stopped"),
        "{body}"
    );

    // MCP: a tool error the assistant can read.
    let (srv, cli) = tokio::io::duplex(64 * 1024);
    let server = TelephonyServer::new(stack.engine.clone());
    let served = tokio::spawn(async move {
        if let Ok(running) = server.serve(srv).await {
            let _ = running.waiting().await;
        }
    });
    let client = ().serve(cli).await.unwrap();
    let args = json!({"to": s.number, "goal": s.agent.goal});
    let res = client
        .call_tool(
            CallToolRequestParams::new("telephony_call")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(res.is_error, Some(true), "{res:?}");
    let text = format!("{:?}", res.content);
    assert!(text.contains("event log writer has stopped"), "{text}");
    client.cancel().await.unwrap();
    served.await.unwrap();

    // Nothing was dialed.
    assert!(stack.sim().state().twilio.calls().is_empty());
    stack.stop().await;
}
