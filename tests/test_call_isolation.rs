//! Many calls at once stay apart, a crash stays inside its call, and barge-in cuts the agent
//! at what the callee heard.

mod support;

use std::time::Duration;

use support::*;
use switchboard::sim::scenario::bench_scenarios;
use switchboard_actors::{CallDetail, CallState, Speaker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_keep_their_own_transcripts() {
    let scenarios = bench_scenarios(50, 1);
    let stack = stack_with(scenarios.clone(), |sim, c| {
        sim.speed = 2.0; // 50 real-time audio streams both ways on 2 cores, in a debug build
        c.engine.calls.max_concurrent = 50;
    })
    .await;
    let mut ids = Vec::new();
    for s in &scenarios {
        ids.push((
            stack.engine.place_call(request_for(s)).await.unwrap(),
            s.clone(),
        ));
    }
    // One over the cap is refused with a clear error.
    let over = stack
        .engine
        .place_call(request_for(&scenarios[0]))
        .await
        .unwrap_err();
    assert!(over.to_string().contains("calls.max_concurrent"), "{over}");
    for (id, s) in &ids {
        let rec = finished(&stack, *id, Duration::from_secs(180)).await;
        assert_eq!(
            (rec.state, rec.detail),
            (CallState::Completed, CallDetail::AgentEnded),
            "{}: {rec:?}",
            s.name
        );
        let turns = stack.engine.transcript(*id).await.unwrap();
        let want: Vec<&str> = s
            .script
            .iter()
            .filter_map(|st| st.agent.as_deref().or(st.callee.as_deref()))
            .collect();
        let got: Vec<&str> = turns.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            got, want,
            "{} holds another call's lines or lost its own",
            s.name
        );
    }
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_call_fails_alone_and_its_carrier_call_is_hung_up() {
    let scenarios = bench_scenarios(3, 2);
    let stack = stack(scenarios.clone()).await;
    let mut ids = Vec::new();
    for s in &scenarios {
        ids.push(stack.engine.place_call(request_for(s)).await.unwrap());
    }
    // Let the victim get on the line, then crash its actor.
    let victim = ids[1];
    let mut connected = false;
    for _ in 0..500 {
        if stack.engine.status(victim).await.unwrap().state == CallState::Connected {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(connected);
    stack.engine.inject_panic(victim).await.unwrap();
    let rec = finished(&stack, victim, Duration::from_secs(30)).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Failed, CallDetail::InternalError),
        "{rec:?}"
    );
    for id in [ids[0], ids[2]] {
        let rec = finished(&stack, id, Duration::from_secs(90)).await;
        assert_eq!(
            (rec.state, rec.detail),
            (CallState::Completed, CallDetail::AgentEnded),
            "{rec:?}"
        );
    }
    let sid = rec.carrier_call_sid.unwrap();
    let sim = stack.sim().state().clone();
    assert!(
        eventually(Duration::from_secs(10), || sim
            .twilio
            .call(&sid)
            .is_some_and(|c| c.status == "completed"))
        .await,
        "the crashed call's carrier call is still up: {:?}",
        sim.twilio.call(&sid)
    );
    // New calls are still admitted: the supervisor survived.
    let again = stack.engine.place_call(request_for(&scenarios[0])).await;
    assert!(again.is_ok(), "{again:?}");
    stack.engine.cancel(again.unwrap()).await.unwrap();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_truncates_at_what_was_heard_and_clears_twilio() {
    // 1.5 s into the line: the model is still generating it.
    barge_in_case(builtin("interrupt"), true).await;
}

/// The real service generates audio faster than it plays, so the line's transcript is usually
/// complete (`.done`) well before the callee cuts in. The transcript must still hold only what
/// was heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_after_the_model_finished_the_line_still_keeps_only_what_was_heard() {
    let mut s = builtin("interrupt");
    let line_ms =
        (switchboard::sim::voice::frames_for(s.script[0].agent.as_deref().unwrap()) * 20) as u64;
    // The sim generates 4x faster than real time: at 2/3 of the line it finished long ago.
    s.script[1].barge_in_after_ms = Some(line_ms * 2 / 3 / 100 * 100);
    barge_in_case(s, false).await;
}

async fn barge_in_case(s: switchboard::sim::Scenario, still_generating: bool) {
    let stack = stack(vec![s.clone()]).await;
    let id = stack.engine.place_call(request_for(&s)).await.unwrap();
    let rec = finished(&stack, id, Duration::from_secs(60)).await;
    assert_eq!(
        (rec.state, rec.detail),
        (CallState::Completed, CallDetail::AgentEnded),
        "{rec:?}"
    );

    let sim = stack.sim().state().clone();
    let session = sim.realtime.sessions().remove(0);
    assert_eq!(session.truncations.len(), 1, "{session:?}");
    let heard_ms = session.truncations[0].1;
    let line_ms =
        (switchboard::sim::voice::frames_for(s.script[0].agent.as_deref().unwrap()) * 20) as u64;
    // The callee barged in after this much of the line had played; marks follow every 100 ms
    // chunk.
    let barge = s.script[1].barge_in_after_ms.unwrap();
    assert!(
        (barge..line_ms).contains(&heard_ms),
        "truncated at {heard_ms} ms of a {line_ms} ms line"
    );
    // A response still running is cancelled; a finished one has nothing to cancel.
    assert_eq!(
        session.responses_cancelled >= 1,
        still_generating,
        "{session:?}"
    );
    let call = sim.twilio.calls().remove(0);
    assert!(call.clears >= 1 && call.cleared_bytes > 0, "{call:?}");
    assert_eq!(call.agent_cut, vec![s.script[0].agent.clone().unwrap()]);
    let turns = stack.engine.transcript(id).await.unwrap();
    assert!(
        turns
            .iter()
            .any(|t| t.speaker == Speaker::Callee && t.text.starts_with("Sorry to interrupt")),
        "{turns:?}"
    );
    // The agent's cut line stays in the transcript, marked, with about the part that played,
    // before the callee's interruption.
    let first = s.script[0].agent.as_deref().unwrap();
    let cut = turns
        .iter()
        .position(|t| t.speaker == Speaker::Agent && t.interrupted)
        .unwrap_or_else(|| panic!("no interrupted agent turn in {turns:?}"));
    let heard = &turns[cut].text;
    assert!(
        first.starts_with(heard.as_str()) && heard.len() < first.len() && !heard.is_empty(),
        "{heard:?} is not a prefix of the cut line"
    );
    let played = heard.chars().count() as f64 / first.chars().count() as f64;
    let expected = heard_ms as f64 / line_ms as f64;
    assert!(
        (played - expected).abs() < 0.15,
        "kept {played:.2} of the text for {expected:.2} of the audio: {heard:?}"
    );
    let interruption = turns
        .iter()
        .position(|t| t.text.starts_with("Sorry to interrupt"))
        .unwrap();
    assert!(cut < interruption, "{turns:?}");
    assert_eq!(
        turns.iter().filter(|t| t.interrupted).count(),
        1,
        "only the cut line is marked: {turns:?}"
    );
    assert_no_violations(&stack);
    stack.stop().await;
}
