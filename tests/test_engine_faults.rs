//! Faults inside the engine itself, seen from outside: a dead event writer, shutdown with a
//! hang-up in flight, a model endpoint that is slow to answer.

mod support;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::json;

use support::*;
use switchboard::mcp::TelephonyServer;
use switchboard::stack::Storage;
use switchboard_actors::EngineError;
use switchboard_actors::store::{RefusingStore, Store};

/// `POST /v1/calls` for the scenario's number and goal.
async fn post_call(
    stack: &switchboard::stack::Stack,
    s: &switchboard::sim::Scenario,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/v1/calls", stack.http_addr))
        .header("content-type", "application/json")
        .body(json!({"to": s.number, "goal": s.agent.goal}).to_string())
        .send()
        .await
        .unwrap()
}

/// A 503 `unhealthy` in the documented error shape, saying why.
async fn assert_unhealthy(resp: reqwest::Response, why: &str) {
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unhealthy", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_event_writer_refuses_new_calls_everywhere_with_the_documented_error() {
    let s = builtin("restaurant");
    let stack = stack(vec![s.clone()]).await;
    assert!(stack.engine.health().is_ok());
    let healthy = reqwest::get(format!("http://{}/healthz", stack.http_addr))
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);
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
    assert_unhealthy(post_call(&stack, &s).await, "event log writer has stopped").await;

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

    // The engine says it is unhealthy, and why.
    let health = reqwest::get(format!("http://{}/healthz", stack.http_addr))
        .await
        .unwrap();
    assert_unhealthy(health, "event log writer has stopped").await;

    // Nothing was dialed.
    assert!(stack.sim().state().twilio.calls().is_empty());
    stack.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_while_the_model_is_slow_to_answer_is_handled_at_once() {
    // The model endpoint takes 8 s to accept the socket; the cancel must not wait for it.
    let mut s = builtin("restaurant");
    s.answer.ring_ms = 60_000;
    let stack = stack_with(vec![s.clone()], |sim, _| {
        sim.handshake_delay = std::time::Duration::from_secs(8)
    })
    .await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let asked = tokio::time::Instant::now();
    let out = stack.engine.cancel(id).await.unwrap();
    let took = asked.elapsed();
    assert!(
        took < std::time::Duration::from_secs(1),
        "the cancel took {took:?} (paused clock)"
    );
    assert!(out.canceled, "{out:?}");
    assert_eq!(out.state, switchboard_actors::CallState::Canceled);
    let rec = finished(&stack, id, std::time::Duration::from_secs(30)).await;
    assert_eq!(rec.detail, switchboard_actors::CallDetail::CanceledByUser);
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_hang_up_it_started() {
    // The carrier takes 1.5 s to carry out a hang-up; shutdown must not return before.
    let s = builtin("restaurant");
    let stack = stack_with(vec![s.clone()], |sim, _| {
        sim.update_delay = std::time::Duration::from_millis(1500)
    })
    .await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let engine = stack.engine.clone();
    sim_call_when(&stack, std::time::Duration::from_secs(30), |c| {
        c.status == "in-progress"
    })
    .await;
    engine.shutdown().await;
    let call = stack.sim().state().twilio.calls().remove(0);
    assert!(
        call.updates_answered >= 1,
        "shutdown returned before the carrier answered its hang-up: {call:?}"
    );
    assert_eq!(call.status, "completed", "{call:?}");
    let rec = engine.status(id).await.unwrap();
    assert_eq!(
        rec.detail,
        switchboard_actors::CallDetail::EngineShutdown,
        "{rec:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_writes_holds_no_request_and_loses_no_event() {
    let s = builtin("restaurant");
    let store = std::sync::Arc::new(RefusingStore::new());
    let stack = stack_on(vec![s.clone()], Storage::Given(store.clone()), |_, _| {}).await;
    store.refuse_writes(true);

    // The call is placed (it is already dialing); the answer does not wait for the store.
    let asked = tokio::time::Instant::now();
    let id = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stack.engine.place_call(request_for(&s)),
    )
    .await
    .expect("place_call hangs on a store that refuses writes")
    .unwrap();
    let took = asked.elapsed();
    assert!(
        took < std::time::Duration::from_secs(8),
        "place_call waited {took:?} on a store that refuses writes"
    );
    assert!(store.refused() > 0, "the store was never asked");

    // After a few refusals the engine says it is unhealthy, and why, and takes no new call.
    assert!(
        eventually(std::time::Duration::from_secs(15), || matches!(
            stack.engine.health(),
            Err(EngineError::EventLogFailing(_))
        ))
        .await,
        "{:?}",
        stack.engine.health()
    );
    let health = reqwest::get(format!("http://{}/healthz", stack.http_addr))
        .await
        .unwrap();
    assert_unhealthy(health, "disk full").await;
    let err = stack.engine.place_call(request_for(&s)).await.unwrap_err();
    assert!(matches!(err, EngineError::EventLogFailing(_)), "{err:?}");
    assert_eq!(post_call(&stack, &s).await.status(), 503);
    assert_eq!(
        stack.sim().state().twilio.calls().len(),
        1,
        "a refused call was dialed"
    );

    // The store recovers: the held events land, in order, and the call ends as it would have.
    store.refuse_writes(false);
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while stack.engine.status(id).await.is_err() {
        assert!(
            tokio::time::Instant::now() < until,
            "the held events never reached the store"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let rec = finished(&stack, id, std::time::Duration::from_secs(60)).await;
    assert_eq!(
        rec.state,
        switchboard_actors::CallState::Completed,
        "{rec:?}"
    );
    assert!(stack.engine.health().is_ok(), "{:?}", stack.engine.health());
    let events = store.events_after(0, Some(id), 10_000).await.unwrap();
    assert!(
        matches!(
            events[0].kind,
            switchboard_actors::EventKind::Created { .. }
        ),
        "{:?}",
        events[0].kind
    );
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "the events are out of order"
    );
    assert_no_violations(&stack);
    stack.stop().await;
}

/// The model endpoint takes 2 s to accept the socket while the callee's stream is already up:
/// the callee audio of those 2 s is held and reaches the model once it is connected, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_audio_sent_while_the_model_connects_reaches_it() {
    let mut s = builtin("restaurant");
    s.answer.ring_ms = 0;
    let stack = stack_with(vec![s.clone()], |sim, _| {
        sim.handshake_delay = std::time::Duration::from_secs(2)
    })
    .await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let rec = finished(&stack, id, std::time::Duration::from_secs(60)).await;
    assert_eq!(
        rec.detail,
        switchboard_actors::CallDetail::AgentEnded,
        "{rec:?}"
    );
    let sim = stack.sim().state().clone();
    let sent = sim.twilio.calls().remove(0).media_sent * 160;
    let appended = sim.realtime.sessions().remove(0).appended_bytes;
    // 2 s of frames at the sim's 4x pace is 400 frames (64 000 bytes); what may be missing is
    // only what was in flight when the call ended.
    assert!(
        sent > 64_000 && appended + 8_000 >= sent,
        "the callee sent {sent} bytes of audio, the model got {appended}"
    );
    assert_no_violations(&stack);
    stack.stop().await;
}
