//! The number dialed decides the simulated call, however the request is worded: each shipped
//! scenario, placed through MCP `telephony_call` with wordings that are not the scenario's
//! own, ends as the scenario says (outcome, ending detail), and the simulated agent never
//! reads its instructions aloud.

mod support;

use std::time::Duration;

use rmcp::model::*;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use support::*;
use switchboard::sim::Scenario;
use switchboard::stack::Stack;
use switchboard_actors::{CallDetail, CallId, CallRecord, CallState, Speaker, TranscriptTurn};

type Client = RunningService<RoleClient, ()>;

async fn connect(stack: &Stack) -> Client {
    let (s, c) = tokio::io::duplex(64 * 1024);
    let server = switchboard::mcp::TelephonyServer::new(stack.engine.clone());
    tokio::spawn(async move {
        if let Ok(running) = server.serve(s).await {
            let _ = running.waiting().await;
        }
    });
    ().serve(c).await.expect("initialize")
}

/// One way a user might ask for the call.
struct Wording {
    goal: &'static str,
    context: Option<&'static str>,
}

const fn say(goal: &'static str, context: Option<&'static str>) -> Wording {
    Wording { goal, context }
}

/// What one call ended as, with what the simulator saw of it.
struct Ended {
    wording: &'static str,
    rec: CallRecord,
    turns: Vec<TranscriptTurn>,
    sim: switchboard::sim::twilio::CallSummary,
    instructions: String,
}

/// Places each wording's call to `scenario`'s number through MCP, all at once, and waits for
/// every one to end.
async fn place_all(scenario: &str, wordings: &[Wording]) -> (Stack, Vec<Ended>) {
    let s = builtin(scenario);
    let stack = stack(Scenario::builtin()).await;
    let client = connect(&stack).await;
    let mut ids = Vec::new();
    for w in wordings {
        assert!(
            !w.goal.contains(&s.agent.goal),
            "a wording must not be the scenario's own"
        );
        let mut args = json!({"to": s.number, "goal": w.goal});
        if let Some(c) = w.context {
            args["context"] = json!(c);
        }
        let r = client
            .call_tool(
                CallToolRequestParams::new("telephony_call")
                    .with_arguments(args.as_object().unwrap().clone()),
            )
            .await
            .expect("telephony_call answers");
        assert_ne!(r.is_error, Some(true), "{r:?}");
        let placed: Value = r.structured_content.clone().expect("structured result");
        let id: CallId = placed["callId"]
            .as_str()
            .expect("callId")
            .parse()
            .expect("a call id");
        ids.push((w.goal, id));
    }
    let mut out = Vec::new();
    let waits = ids
        .iter()
        .map(|(_, id)| finished(&stack, *id, Duration::from_secs(50)));
    let recs = futures_util::future::join_all(waits).await;
    let sessions = stack.sim().state().realtime.sessions();
    for ((goal, id), rec) in ids.into_iter().zip(recs) {
        let turns = stack.engine.transcript(id).await.expect("transcript");
        let sid = rec
            .carrier_call_sid
            .clone()
            .expect("the carrier named the call");
        // The engine may learn of the end (the stream stopping) before the carrier's call
        // record says it ended.
        let twilio = &stack.sim().state().twilio;
        let ended = eventually(Duration::from_secs(10), || {
            twilio.call(&sid).is_some_and(|c| c.end_time.is_some())
        })
        .await;
        let sim = twilio.call(&sid).expect("the simulator saw the call");
        assert!(ended, "the simulated call did not end: {sim:?}");
        let instructions = sessions
            .iter()
            .find(|x| x.instructions.contains(goal))
            .map(|x| x.instructions.clone())
            .unwrap_or_default();
        out.push(Ended {
            wording: goal,
            rec,
            turns,
            sim,
            instructions,
        });
    }
    client.cancel().await.ok();
    (stack, out)
}

/// Every call ended as `(state, detail, success)`, and no agent line repeats the
/// instructions: not their markers, not one of the engine's sentences around the goal.
fn assert_ended(calls: &[Ended], state: CallState, detail: CallDetail, success: bool) {
    for c in calls {
        let agent: Vec<&str> = c
            .turns
            .iter()
            .filter(|t| t.speaker == Speaker::Agent)
            .map(|t| t.text.as_str())
            .collect();
        let why = format!(
            "asked {:?}: {:?} {:?} {:?}\nturns: {:#?}\nsim: {:?}",
            c.wording, c.rec.state, c.rec.detail, c.rec.outcome, c.turns, c.sim
        );
        assert_eq!((c.rec.state, c.rec.detail), (state, detail), "{why}");
        assert_eq!(
            c.rec.outcome.as_ref().map(|o| o.success),
            Some(success),
            "{why}"
        );
        let framing = c
            .instructions
            .split("Goal:")
            .next()
            .unwrap_or("")
            .split(['.', '\n'])
            .map(str::trim)
            .filter(|s| s.split_whitespace().count() >= 4)
            .collect::<Vec<_>>();
        for line in &agent {
            for marker in [
                "You are a voice assistant",
                "Goal:",
                "Context:",
                "You are the caller",
            ] {
                assert!(
                    !line.contains(marker),
                    "{line:?} reads the instructions; {why}"
                );
            }
            for sentence in &framing {
                assert!(
                    !line.contains(sentence),
                    "{line:?} repeats {sentence:?} of the instructions; {why}"
                );
            }
        }
    }
}

async fn done(stack: Stack) {
    assert_no_violations(&stack);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restaurant_books_whatever_the_wording() {
    let (stack, calls) = place_all(
        "restaurant",
        &[
            say(
                "Could you reserve dinner for 2 people around 7:30pm tonight? Name is Alex Kim.",
                None,
            ),
            say(
                "Get us a table for two tonight at half past seven",
                Some("Reservation name: Alex Kim. Phone +14155550123."),
            ),
        ],
    )
    .await;
    assert_ended(&calls, CallState::Completed, CallDetail::AgentEnded, true);
    for c in &calls {
        assert!(
            c.sim
                .callee_said
                .last()
                .is_some_and(|l| l.starts_with("Got it.")),
            "{:?}",
            c.sim
        );
    }
    done(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_no_answer_fail_whatever_the_wording() {
    let (stack, busy) = place_all(
        "busy",
        &[
            say("Check if my prescription is ready to pick up", None),
            say(
                "Ask the pharmacy about Alex's refill",
                Some("Patient: Alex Kim."),
            ),
        ],
    )
    .await;
    assert_ended(&busy, CallState::Failed, CallDetail::Busy, false);
    done(stack).await;
    let (stack, unanswered) = place_all(
        "no_answer",
        &[
            say("Make sure the plumber is still coming Thursday", None),
            say("Call the plumber to confirm Thursday's appointment", None),
        ],
    )
    .await;
    assert_ended(&unanswered, CallState::Failed, CallDetail::NoAnswer, false);
    done(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voicemail_gets_a_message_after_the_beep_whatever_the_wording() {
    let (stack, calls) = place_all(
        "voicemail",
        &[
            say(
                "Let Doctor Smith's office know Alex needs a call back",
                Some("Callback number +14155550123."),
            ),
            say(
                "Please ask the doctor's office to ring Alex about the Tuesday visit",
                None,
            ),
        ],
    )
    .await;
    assert_ended(&calls, CallState::Completed, CallDetail::AgentEnded, true);
    for c in &calls {
        assert_eq!(
            c.sim.callee_said.last().map(String::as_str),
            Some("BEEP"),
            "{:?}",
            c.sim
        );
        assert!(
            c.sim
                .agent_heard
                .last()
                .is_some_and(|l| l.starts_with("Hi, this is a message")),
            "no message after the beep: {:?}",
            c.sim
        );
    }
    done(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivr_presses_one_and_reaches_the_desk_whatever_the_wording() {
    let (stack, calls) = place_all(
        "ivr",
        &[
            say(
                "Find out if the Grand Hotel has a room free on Friday night",
                None,
            ),
            say(
                "Ask the hotel about availability this Friday",
                Some("One guest, one night."),
            ),
            // Another scenario's own words: the number still decides.
            say(
                "Ask Doctor Smith's office to call Alex Kim back about Tuesday's appointment",
                None,
            ),
        ],
    )
    .await;
    assert_ended(&calls, CallState::Completed, CallDetail::AgentEnded, true);
    for c in &calls {
        assert_eq!(c.sim.digits_received, "1", "{:?}", c.sim);
        assert!(
            c.sim.callee_said.iter().any(|l| l.contains("double room")),
            "{:?}",
            c.sim
        );
    }
    done(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_is_barged_into_and_moves_the_delivery_whatever_the_wording() {
    let (stack, calls) = place_all(
        "interrupt",
        &[
            say(
                "Get the furniture delivery for order 4471 moved to tomorrow morning",
                None,
            ),
            say(
                "Can the delivery come tomorrow before noon instead?",
                Some("Order 4471 for Alex Kim."),
            ),
        ],
    )
    .await;
    assert_ended(&calls, CallState::Completed, CallDetail::AgentEnded, true);
    for c in &calls {
        assert!(
            c.turns
                .iter()
                .any(|t| t.speaker == Speaker::Agent && t.interrupted),
            "the callee's barge-in cut no agent line: {:#?}",
            c.turns
        );
        assert!(c.sim.clears >= 1, "{:?}", c.sim);
    }
    done(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_is_the_callee_hanging_up_whatever_the_wording() {
    let (stack, calls) = place_all(
        "hangup",
        &[
            say(
                "Ask the bakery if they do birthday cakes for Saturday",
                None,
            ),
            say(
                "Order a birthday cake for Saturday",
                Some("Chocolate, for twelve people."),
            ),
            // Another scenario's own words: the number still decides.
            say("Book a table for two at 7:30 tonight", None),
        ],
    )
    .await;
    assert_ended(
        &calls,
        CallState::Completed,
        CallDetail::CalleeHungUp,
        false,
    );
    for c in &calls {
        assert_eq!(c.sim.ended_by.as_deref(), Some("callee"), "{:?}", c.sim);
    }
    done(stack).await;
}
