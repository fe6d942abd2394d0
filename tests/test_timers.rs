//! The time-driven paths (maximum duration, ring timeout, the stream that should follow
//! pressed keys) on paused tokio time: the whole system runs in one runtime whose clock jumps
//! ahead whenever every task waits, so minutes of call time pass in moments and the timing
//! is exact rather than "about right on a quiet machine".

mod support;

use std::time::Duration;

use support::*;
use switchboard_actors::{CallDetail, CallRequest, CallState};

#[tokio::test(start_paused = true)]
async fn max_duration_hangs_up_at_the_limit_on_paused_time() {
    // No scenario claims this number: the callee answers and stays silent.
    let stack = stack(vec![]).await;
    let mut req = CallRequest::new("+12125550199", "Wait on the line");
    req.max_duration_secs = Some(120);
    let started = tokio::time::Instant::now();
    let id = stack.engine.place_call(req).await.unwrap();
    let rec = finished(&stack, id, Duration::from_secs(600)).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Completed, CallDetail::MaxDuration),
        "{rec:?}"
    );
    assert_eq!(rec.duration_secs, 120, "{rec:?}");
    // The carrier's final callback brings its own count, and the record keeps that one.
    let billed = sim_call_when(&stack, Duration::from_secs(30), |c| c.status == "completed")
        .await
        .duration_secs
        .expect("a completed call has a duration");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rec = loop {
        let rec = stack.engine.status(id).await.unwrap();
        if rec.carrier_status.as_deref() == Some("completed") {
            break rec;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rec:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rec.duration_secs, billed, "{rec:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(120) && elapsed < Duration::from_secs(125),
        "ended {elapsed:?} after it was placed"
    );
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_call_fails_when_the_ring_timeout_runs_out() {
    let s = builtin("no_answer");
    let stack = stack_with(vec![s.clone()], |_, c| {
        c.engine.calls.ring_timeout_secs = 45
    })
    .await;
    let started = tokio::time::Instant::now();
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    // Still ringing just before the timeout …
    tokio::time::sleep(Duration::from_secs(44)).await;
    let rec = stack.engine.status(id).await.unwrap();
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Dialing, CallDetail::Ringing),
        "{rec:?}"
    );
    // … and failed as no-answer right after it.
    let rec = finished(&stack, id, Duration::from_secs(60)).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Failed, CallDetail::NoAnswer),
        "{rec:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(45) && elapsed < Duration::from_secs(47),
        "failed {elapsed:?} after it was placed"
    );
    assert_eq!(rec.carrier_status.as_deref(), Some("no-answer"));
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_does_not_come_back_after_keys_fails_the_call_after_30_s() {
    let mut s = builtin("ivr");
    // The carrier plays the keys, then takes far longer than the engine waits to reconnect.
    s.faults.restream_delay_ms = Some(400_000);
    let stack = stack(vec![s.clone()]).await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let mut events = stack.engine.subscribe_after(Some(id), 0);
    let pressed_at = loop {
        let ev = tokio::time::timeout(Duration::from_secs(120), events.next())
            .await
            .expect("the agent pressed keys in time")
            .expect("the event stream is open");
        match &ev.kind {
            switchboard_actors::EventKind::ToolCall { name, .. } if name == "send_dtmf" => {
                break tokio::time::Instant::now();
            }
            switchboard_actors::EventKind::Ended { .. } => panic!("ended before keys: {ev:?}"),
            _ => {}
        }
    };
    let rec = finished(&stack, id, Duration::from_secs(120)).await;
    let waited = pressed_at.elapsed();
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Failed, CallDetail::MediaDisconnected),
        "{rec:?}"
    );
    assert!(
        rec.reason
            .as_deref()
            .is_some_and(|r| r.contains("did not come back")),
        "{rec:?}"
    );
    // The timeout counts from the carrier accepting the keys (just after the tool call).
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(33),
        "failed {waited:?} after the keys"
    );
    assert_no_violations(&stack);
    stack.stop().await;
}
