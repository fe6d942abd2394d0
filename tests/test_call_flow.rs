//! A whole call, end to end over real sockets: engine ↔ simulated Twilio ↔ simulated model.

mod support;

use std::time::Duration;

use support::*;
use switchboard_actors::{CallDetail, CallState, Speaker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restaurant_booking_happy_path() {
    let scenario = builtin("restaurant");
    let stack = stack(vec![scenario.clone()]).await;
    let id = stack
        .engine
        .place_call(request_for(&scenario))
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
    let outcome = rec.outcome.expect("an outcome");
    assert!(outcome.success, "{outcome:?}");
    assert!(outcome.summary.contains("Alex Kim"), "{outcome:?}");

    let turns = stack.engine.transcript(id).await.unwrap();
    let agent: Vec<&str> = turns
        .iter()
        .filter(|t| t.speaker == Speaker::Agent)
        .map(|t| t.text.as_str())
        .collect();
    let callee: Vec<&str> = turns
        .iter()
        .filter(|t| t.speaker == Speaker::Callee)
        .map(|t| t.text.as_str())
        .collect();
    let script_agent: Vec<&str> = scenario
        .script
        .iter()
        .filter_map(|s| s.agent.as_deref())
        .collect();
    let script_callee: Vec<&str> = scenario
        .script
        .iter()
        .filter_map(|s| s.callee.as_deref())
        .collect();
    assert_eq!(agent, script_agent);
    assert_eq!(callee, script_callee);
    // The agent spoke first.
    assert_eq!(turns[0].speaker, Speaker::Agent);

    // The simulator's view: the callee heard every agent line whole, the call was hung up by
    // the engine after the goodbye played.
    let sim = stack.sim.state().clone();
    assert!(
        eventually(Duration::from_secs(5), || sim
            .twilio
            .calls()
            .first()
            .is_some_and(|c| c.status == "completed"))
        .await,
        "{:?}",
        sim.twilio.calls()
    );
    let calls = sim.twilio.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].agent_heard, script_agent);
    // The engine hangs up over REST and closes the stream; whichever Twilio acts on first
    // (the REST update, or the <Hangup/> after <Connect>) ends the call.
    assert!(
        matches!(
            calls[0].ended_by.as_deref(),
            Some("api-completed" | "twiml-hangup")
        ),
        "{:?}",
        calls[0].ended_by
    );
    assert_no_violations(&stack);
    stack.stop().await;
}
