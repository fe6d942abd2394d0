//! Every way a call can end, each with its state, detail and outcome, against the simulator.

mod support;

use std::time::Duration;

use support::*;
use switchboard_actors::{CallDetail, CallId, CallRecord, CallRequest, CallState};

const WITHIN: Duration = Duration::from_secs(60);

/// A copy of the restaurant scenario on its own number, for fault injection.
/// Places the scenario's call and checks how it ended.
async fn ends_as(
    s: &switchboard::sim::Scenario,
    state: CallState,
    detail: CallDetail,
) -> (switchboard::stack::Stack, CallId, CallRecord) {
    let stack = stack(vec![s.clone()]).await;
    let id = stack.engine.place_call(request_for(s)).await.unwrap();
    let rec = finished(&stack, id, WITHIN).await;
    assert_eq!((rec.state, rec.detail), (state, detail), "{rec:?}");
    (stack, id, rec)
}

fn restaurant_on(number: &str) -> switchboard::sim::Scenario {
    let mut s = builtin("restaurant");
    s.name = format!("restaurant-{number}");
    s.number = number.into();
    s
}

async fn sim_call_ended(
    stack: &switchboard::stack::Stack,
) -> switchboard::sim::twilio::CallSummary {
    let done = ["completed", "busy", "no-answer", "failed", "canceled"];
    sim_call_when(stack, Duration::from_secs(10), |c| {
        done.contains(&c.status.as_str())
    })
    .await
}

/// The engine ended the carrier call: by its REST hang-up, or by closing the media socket
/// (the TwiML after `<Connect>` hangs up); both are valid and race.
async fn hung_up_by_the_engine(stack: &switchboard::stack::Stack) {
    let sim = sim_call_ended(stack).await;
    assert_eq!(sim.status, "completed");
    assert!(
        matches!(
            sim.ended_by.as_deref(),
            Some("api-completed" | "twiml-hangup")
        ),
        "{sim:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_line_fails_with_detail_busy() {
    let s = builtin("busy");
    let stack = stack(vec![s.clone()]).await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let rec = finished(&stack, id, WITHIN).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Failed, CallDetail::Busy)
    );
    assert!(!rec.outcome.unwrap().success);
    assert_eq!(sim_call_ended(&stack).await.status, "busy");
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_call_fails_with_detail_no_answer() {
    let s = builtin("no_answer");
    let stack = stack_with(vec![s.clone()], |_, c| c.engine.calls.ring_timeout_secs = 2).await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let rec = finished(&stack, id, WITHIN).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Failed, CallDetail::NoAnswer),
        "{rec:?}"
    );
    assert_eq!(sim_call_ended(&stack).await.status, "no-answer");
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trial_account_refusal_21219_fails_with_the_plain_reason() {
    let s = builtin("restaurant");
    let stack = stack_with(vec![s.clone()], |sim, _| {
        sim.trial = true;
        sim.verified = vec![];
    })
    .await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let rec = finished(&stack, id, WITHIN).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Failed, CallDetail::CarrierFailed)
    );
    let reason = rec.reason.unwrap();
    assert!(
        reason.contains("the destination is not verified on this trial account"),
        "{reason}"
    );
    assert!(
        stack.sim().state().twilio.calls().is_empty(),
        "no carrier call was created"
    );
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_ringing_cancels_the_carrier_call() {
    let mut s = restaurant_on("+12125550150");
    s.answer.ring_ms = 60_000;
    let stack = stack(vec![s.clone()]).await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let engine = stack.engine.clone();
    let mut ringing = false;
    for _ in 0..200 {
        if engine.status(id).await.unwrap().detail == CallDetail::Ringing {
            ringing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ringing, "the call never rang");
    let out = stack.engine.cancel(id).await.unwrap();
    assert!(out.canceled && out.state == CallState::Canceled, "{out:?}");
    let rec = finished(&stack, id, WITHIN).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Canceled, CallDetail::CanceledByUser)
    );
    assert_eq!(sim_call_ended(&stack).await.status, "canceled");
    // Canceling again says plainly that it had already ended.
    let again = stack.engine.cancel(id).await.unwrap();
    assert!(
        !again.canceled && again.message.contains("already ended"),
        "{again:?}"
    );
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_connected_hangs_up() {
    let s = restaurant_on("+12125550151");
    let stack = stack(vec![s.clone()]).await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let mut connected = false;
    for _ in 0..500 {
        if stack.engine.status(id).await.unwrap().state == CallState::Connected {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(connected, "the call never connected");
    let out = stack.engine.cancel(id).await.unwrap();
    assert!(out.canceled, "{out:?}");
    let rec = finished(&stack, id, WITHIN).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Canceled, CallDetail::CanceledByUser)
    );
    hung_up_by_the_engine(&stack).await;
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_hanging_up_completes_the_call() {
    let s = builtin("hangup");
    let (stack, id, _) = ends_as(&s, CallState::Completed, CallDetail::CalleeHungUp).await;
    let turns = stack.engine.transcript(id).await.unwrap();
    assert!(
        turns
            .iter()
            .any(|t| t.text == "Sorry, I can't talk right now."),
        "{turns:?}"
    );
    assert_eq!(
        sim_call_ended(&stack).await.ended_by.as_deref(),
        Some("callee")
    );
    assert_no_violations(&stack);
    stack.stop().await;
}

/// The callee hangs up while the agent is talking: the transcript keeps the part of the line
/// that played before the line went dead, marked interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_hanging_up_while_the_agent_speaks_keeps_the_heard_part() {
    let mut s = builtin("hangup");
    let line = builtin("interrupt").script[0].agent.clone().unwrap();
    let mut agent = s.script[0].clone();
    agent.agent = Some(line.clone());
    let mut hangup = s.script[3].clone();
    assert!(hangup.hangup);
    // The hang-up step starts as the line starts playing, then waits 1.5 s.
    hangup.barge_in_after_ms = Some(0);
    hangup.pause_ms = Some(1500);
    s.script = vec![agent, hangup];
    let (stack, id, _) = ends_as(&s, CallState::Completed, CallDetail::CalleeHungUp).await;
    let turns = stack.engine.transcript(id).await.unwrap();
    assert_eq!(turns.len(), 1, "{turns:?}");
    let heard = &turns[0];
    assert!(heard.interrupted, "{heard:?}");
    assert!(
        line.starts_with(&heard.text)
            && !heard.text.is_empty()
            && heard.text.len() < line.len() / 2,
        "{:?} is not the first part of the line",
        heard.text
    );
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_socket_dropped_mid_call_fails_and_hangs_up() {
    let mut s = restaurant_on("+12125550152");
    s.faults.model_drop_at_ms = Some(3000);
    let (stack, _, _) = ends_as(&s, CallState::Failed, CallDetail::ModelDisconnected).await;
    // The carrier call was ended and the Twilio socket closed (the stream ended, TwiML went on).
    hung_up_by_the_engine(&stack).await;
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_socket_dropped_fails_and_closes_the_model() {
    let mut s = restaurant_on("+12125550153");
    s.faults.media_drop_at_ms = Some(3000);
    let stack = stack(vec![s.clone()]).await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let rec = finished(&stack, id, WITHIN).await;
    // The dropped socket and the carrier's `completed` callback (Twilio runs out of TwiML
    // once the stream is gone) race to the engine; whichever comes first names the ending.
    assert!(
        matches!(
            (rec.state, rec.detail),
            (CallState::Failed, CallDetail::MediaDisconnected)
                | (CallState::Completed, CallDetail::CalleeHungUp)
        ),
        "{rec:?}"
    );
    let sim = stack.sim().state().clone();
    assert!(
        eventually(Duration::from_secs(5), || sim
            .realtime
            .sessions()
            .first()
            .is_some_and(|m| m.closed_by.as_deref() == Some("client")))
        .await,
        "the engine did not close the model session: {:?}",
        sim.realtime.sessions()
    );
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_hangs_up_on_time() {
    // No scenario claims this number: the callee answers and stays silent.
    let stack = stack(vec![]).await;
    let mut req = CallRequest::new("+12125550199", "Wait on the line");
    req.max_duration_secs = Some(10);
    let id = stack.engine.place_call(req).await.unwrap();
    let rec = finished(&stack, id, Duration::from_secs(40)).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Completed, CallDetail::MaxDuration),
        "{rec:?}"
    );
    assert!(
        (10..=12).contains(&rec.duration_secs),
        "ended after {} s",
        rec.duration_secs
    );
    let sim = sim_call_ended(&stack).await;
    assert_eq!(sim.status, "completed");
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voicemail_gets_a_message_after_the_beep() {
    let s = builtin("voicemail");
    let (stack, _, rec) = ends_as(&s, CallState::Completed, CallDetail::AgentEnded).await;
    assert!(rec.outcome.unwrap().success);
    let sim = sim_call_ended(&stack).await;
    assert!(
        sim.agent_heard
            .last()
            .is_some_and(|l| l.starts_with("Hi, this is a message")),
        "{sim:?}"
    );
    assert_no_violations(&stack);
    stack.stop().await;
}

/// Twilio's `completed` callback often arrives while the call's actor is stopping (its
/// stream already stopped): it is a late callback, not an error, and must get 2xx. Many
/// calls at once, so the window is hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_status_callbacks_of_ending_calls_all_get_2xx() {
    let s = builtin("hangup");
    let stack = stack(vec![s.clone()]).await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(stack.engine.place_call(request_for(&s)).await.unwrap());
    }
    for id in &ids {
        let rec = finished(&stack, *id, WITHIN).await;
        assert_eq!(rec.detail, CallDetail::CalleeHungUp, "{rec:?}");
    }
    let sim = stack.sim().state().clone();
    assert!(
        eventually(Duration::from_secs(20), || {
            let calls = sim.twilio.calls();
            calls.len() == 40 && calls.iter().all(|c| c.status == "completed")
        })
        .await
    );
    // Every callback has been answered once the engine's records carry the final word.
    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while stack
            .engine
            .status(*id)
            .await
            .unwrap()
            .carrier_status
            .as_deref()
            != Some("completed")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id}: no final carrier status"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let refused: Vec<_> = sim
        .twilio
        .calls()
        .into_iter()
        .filter(|c| c.callbacks_refused > 0)
        .map(|c| (c.sid, c.callbacks_refused))
        .collect();
    assert!(refused.is_empty(), "status callbacks refused: {refused:?}");
    assert_no_violations(&stack);
    stack.stop().await;
}
