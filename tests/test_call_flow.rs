//! A whole call, end to end over real sockets: engine ↔ simulated Twilio ↔ simulated model.

mod support;

use std::time::Duration;

use support::*;
use switchboard::sim::Scenario;
use switchboard::sim::twilio::CallSummary;
use switchboard::stack::Stack;
use switchboard_actors::{CallDetail, CallId, CallState, EventKind, Speaker};

/// Places the scenario's call and waits for the agent to end it successfully.
async fn agent_completes(scenario: &Scenario) -> (Stack, CallId) {
    let stack = stack(vec![scenario.clone()]).await;
    let id = stack
        .engine
        .place_call(request_for(scenario))
        .await
        .unwrap();
    // place_call answers at once, while the call is still dialing.
    assert_eq!(
        stack.engine.status(id).await.unwrap().state,
        CallState::Dialing
    );
    let rec = finished(&stack, id, Duration::from_secs(60)).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Completed, CallDetail::AgentEnded),
        "{rec:?}"
    );
    assert!(rec.outcome.as_ref().is_some_and(|o| o.success), "{rec:?}");
    (stack, id)
}

/// The transcript's lines of one speaker, and the scenario's lines for the same speaker.
async fn lines(stack: &Stack, id: CallId, scenario: &Scenario, who: Speaker) -> [Vec<String>; 2] {
    let turns = stack.engine.transcript(id).await.unwrap();
    let got = turns
        .iter()
        .filter(|t| t.speaker == who)
        .map(|t| t.text.clone())
        .collect();
    let script = scenario
        .script
        .iter()
        .filter_map(|s| match who {
            Speaker::Agent => s.agent.clone(),
            Speaker::Callee => s.callee.clone(),
        })
        .collect();
    [got, script]
}

/// The simulator's record of the (single) carrier call, once Twilio has it completed.
async fn carrier_call(stack: &Stack) -> CallSummary {
    let call = sim_call_when(stack, Duration::from_secs(5), |c| c.status == "completed").await;
    assert_eq!(stack.sim().state().twilio.calls().len(), 1);
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restaurant_booking_happy_path() {
    let scenario = builtin("restaurant");
    let (stack, id) = agent_completes(&scenario).await;
    let rec = stack.engine.status(id).await.unwrap();
    assert!(rec.outcome.unwrap().summary.contains("Alex Kim"));
    let [agent, script_agent] = lines(&stack, id, &scenario, Speaker::Agent).await;
    let [callee, script_callee] = lines(&stack, id, &scenario, Speaker::Callee).await;
    assert_eq!(agent, script_agent);
    assert_eq!(callee, script_callee);
    // The agent spoke first.
    let turns = stack.engine.transcript(id).await.unwrap();
    assert_eq!(turns[0].speaker, Speaker::Agent);

    // The simulator's view: the callee heard every agent line whole, the call was hung up by
    // the engine after the goodbye played.
    let call = carrier_call(&stack).await;
    assert_eq!(call.agent_heard, script_agent);
    // The engine hangs up over REST and closes the stream; whichever Twilio acts on first
    // (the REST update, or the <Hangup/> after <Connect>) ends the call.
    assert!(
        matches!(
            call.ended_by.as_deref(),
            Some("api-completed" | "twiml-hangup")
        ),
        "{:?}",
        call.ended_by
    );
    assert_no_violations(&stack);
    stack.stop().await;
}

/// Every event of a finished call, from the log.
async fn logged_events(stack: &Stack, id: CallId) -> Vec<EventKind> {
    let mut events = stack.engine.subscribe_after(Some(id), 0);
    let mut out = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        let end = matches!(ev.kind, EventKind::Ended { .. });
        out.push(ev.kind.clone());
        if end {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivr_menu_the_agent_presses_a_key_and_the_call_goes_on_over_a_new_stream() {
    let scenario = builtin("ivr");
    let (stack, id) = agent_completes(&scenario).await;
    // Both sides of the conversation, before and after the keys, are in the transcript.
    let [agent, script_agent] = lines(&stack, id, &scenario, Speaker::Agent).await;
    let [callee, script_callee] = lines(&stack, id, &scenario, Speaker::Callee).await;
    assert_eq!(agent, script_agent);
    assert_eq!(callee, script_callee);
    let events = logged_events(&stack, id).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::ToolCall { name, arguments }
            if name == "send_dtmf" && arguments["digits"] == "1")),
        "{events:?}"
    );

    // Twilio's view: one call that played the key between two streams, each stream with the
    // call id and its own token, and the callee heard every agent line whole.
    let call = carrier_call(&stack).await;
    assert_eq!(call.digits_received, "1");
    assert_eq!(call.twiml_verbs[..3], ["Connect", "Play 1", "Connect"]);
    assert_eq!(call.stream_params.len(), 2, "{:?}", call.stream_params);
    let (a, b) = (&call.stream_params[0], &call.stream_params[1]);
    assert_eq!(a["callId"], id.to_string());
    assert_eq!(b["callId"], id.to_string());
    assert_ne!(a["token"], b["token"], "each stream needs a fresh token");
    assert_eq!(call.agent_heard, script_agent);
    // The model's view: one session for the whole call, told the keys were pressed.
    let sessions = stack.sim().state().realtime.sessions();
    assert_eq!(
        sessions.len(),
        1,
        "the model session survives the stream swap"
    );
    assert!(
        sessions[0]
            .function_outputs
            .iter()
            .any(|o| o.contains("\"pressed\":\"1\"")),
        "{:?}",
        sessions[0].function_outputs
    );
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_are_not_keys_are_refused_to_the_agent_and_never_reach_the_carrier() {
    let mut scenario = builtin("ivr");
    let press = scenario
        .script
        .iter_mut()
        .find_map(|s| s.tool.as_mut().filter(|t| t.name == "send_dtmf"))
        .expect("the ivr scenario presses a key");
    press.arguments = serde_json::json!({"digits": "1x"});
    let stack = stack(vec![scenario.clone()]).await;
    let id = stack
        .engine
        .place_call(request_for(&scenario))
        .await
        .unwrap();
    let sim = stack.sim().state().clone();
    assert!(
        eventually(Duration::from_secs(30), || sim
            .realtime
            .sessions()
            .first()
            .is_some_and(|s| !s.function_outputs.is_empty()))
        .await,
        "the agent got no answer to its tool call"
    );
    let out = sim.realtime.sessions()[0].function_outputs[0].clone();
    assert!(
        out.contains("'x' is not a key") && out.contains("0-9"),
        "the agent must learn what was wrong and what is accepted: {out}"
    );
    let call = &sim.twilio.calls()[0];
    assert!(call.digits_received.is_empty(), "{call:?}");
    assert_eq!(call.stream_params.len(), 1, "no redirect for refused keys");
    // The call is still up on its first stream.
    assert_eq!(
        stack.engine.status(id).await.unwrap().state,
        CallState::Connected
    );
    stack.engine.cancel(id).await.unwrap();
    finished(&stack, id, Duration::from_secs(10)).await;
    assert_no_violations(&stack);
    stack.stop().await;
}
