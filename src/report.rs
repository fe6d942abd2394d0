//! A call told on the console, as `demo`, `call` and the examples show it: its events as they
//! happen, the outcome, the simulator's violations, and whether it ended as the scenario
//! expected. One place, so every one of them judges a call the same way.

use std::time::Duration;

use tokio::time::Instant;

use switchboard_actors::{
    CallEvent, CallId, CallRecord, Engine, EngineError, EventKind, OutcomeStatus, Speaker,
};

use crate::sim::Violation;
use crate::sim::scenario::ExpectedOutcome;

/// The engine's status for what a scenario expects.
pub fn expected_status(e: ExpectedOutcome) -> OutcomeStatus {
    match e {
        ExpectedOutcome::Success => OutcomeStatus::Success,
        ExpectedOutcome::Failure => OutcomeStatus::Failure,
        ExpectedOutcome::Unknown => OutcomeStatus::Unknown,
    }
}

/// Prints the call's events (replayed from the start of the log, so nothing between
/// admission and now is missed) until it ends or `timeout` passes, then cancels it if it is
/// still going. Returns the final record.
pub async fn watch(
    engine: &Engine,
    id: CallId,
    timeout: Duration,
) -> Result<CallRecord, EngineError> {
    let started = Instant::now();
    let mut events = engine.subscribe_after(Some(id), 0);
    let deadline = started + timeout;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = tokio::time::sleep_until(deadline) => {
                println!("  gave up waiting after {}s; canceling", timeout.as_secs());
                let _ = engine.cancel(id).await;
                break;
            }
        };
        let Some(ev) = ev else { break };
        if let Some(line) = event_line(&ev, started.elapsed().as_secs_f64()) {
            println!("{line}");
        }
        if matches!(ev.kind, EventKind::Ended { .. }) {
            break;
        }
    }
    engine.status(id).await
}

/// One console line for an event, or none for those another line already says.
pub fn event_line(ev: &CallEvent, t: f64) -> Option<String> {
    Some(match &ev.kind {
        EventKind::State {
            state,
            detail,
            reason,
        } => {
            let detail = serde_json::to_value(detail)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            match reason {
                Some(r) => format!("  [{t:5.1}s] {state} ({detail}): {r}"),
                None => format!("  [{t:5.1}s] {state} ({detail})"),
            }
        }
        EventKind::Transcript {
            speaker,
            text,
            interrupted,
            ..
        } => {
            let who = match speaker {
                Speaker::Agent => "Agent: ",
                Speaker::Callee => "Callee:",
            };
            let cut = if *interrupted { " [interrupted]" } else { "" };
            format!("  {who} {text}{cut}")
        }
        EventKind::Dtmf { digits } => format!("  [{t:5.1}s] callee pressed: {digits}"),
        EventKind::ToolCall { name, arguments } if name == "send_dtmf" => format!(
            "  [{t:5.1}s] agent pressed: {}",
            arguments["digits"].as_str().unwrap_or("")
        ),
        EventKind::ToolCall { name, .. } => format!("  [{t:5.1}s] agent used {name}"),
        EventKind::Error { message } => format!("  [{t:5.1}s] error: {message}"),
        // The state lines already say queued / ringing / answered, and the end.
        EventKind::Carrier { .. } | EventKind::Created { .. } | EventKind::Ended { .. } => {
            return None;
        }
    })
}

pub fn print_outcome(r: &CallRecord) {
    println!(
        "Call {} ended: {} after {}s{}",
        r.id,
        r.state,
        r.duration_secs,
        r.reason
            .as_deref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default()
    );
    match &r.outcome {
        Some(o) => {
            let status = if o.success { "success" } else { "not achieved" };
            println!("Outcome: {status}: {}", o.summary);
            // The agent's own arguments repeat outcome and summary; show only what they add.
            if let Some(serde_json::Value::Object(m)) = &o.data {
                let extra: serde_json::Map<_, _> = m
                    .iter()
                    .filter(|(k, _)| *k != "outcome" && *k != "summary")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !extra.is_empty() {
                    println!("Result: {}", serde_json::Value::Object(extra));
                }
            }
        }
        None => println!("Outcome: none reported"),
    }
}

/// Prints the simulator's protocol violations; true when there were none.
pub fn print_violations(violations: &[Violation]) -> bool {
    if violations.is_empty() {
        return true;
    }
    println!(
        "The simulator recorded {} protocol violation(s):",
        violations.len()
    );
    for v in violations {
        println!(
            "  {}",
            serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
        );
    }
    false
}

/// Whether a scenario's call ended as expected (an outcome the agent never reported counts
/// as failure), saying so when it did not.
pub fn as_expected(record: &CallRecord, expected: ExpectedOutcome) -> bool {
    let expected = expected_status(expected);
    let got = record
        .outcome
        .as_ref()
        .map(|o| o.status)
        .unwrap_or(OutcomeStatus::Failure);
    if got != expected {
        println!("The scenario expected outcome {expected:?}, got {got:?}.");
    }
    got == expected
}
