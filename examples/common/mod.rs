//! Shared by the scripted-call examples: start the whole system on loopback, place the
//! scenario's call, print what happens, and judge the result against the scenario's
//! expectation and the simulator's protocol checks.
#![allow(dead_code)] // each example uses a different part

use std::process::ExitCode;
use std::time::Duration;

use switchboard::config::Config;
use switchboard::local::LocalStack;
use switchboard::sim::{Scenario, SimConfig};
use switchboard_actors::{CallRequest, EventKind, OutcomeStatus, Speaker};

/// How much faster than real time the examples run.
pub const SPEED: f64 = 4.0;

/// Runs the built-in scenario `name` and prints its transcript and outcome.
pub async fn run_scenario(name: &str) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(name).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(name: &str) -> anyhow::Result<bool> {
    let scenario = Scenario::builtin_named(name)
        .ok_or_else(|| anyhow::anyhow!("scenario '{name}' is not built into this simulator"))?;
    let stack = LocalStack::start(
        SimConfig {
            speed: SPEED,
            ..SimConfig::default()
        },
        Config::default(),
        None,
    )
    .await?;
    println!("{}: {}", scenario.name, scenario.description);
    let mut request = CallRequest::new(scenario.number.clone(), scenario.agent.goal.clone());
    request.context = scenario.agent.context.clone();
    let id = stack.engine.place_call(request).await?;
    let mut events = stack.engine.subscribe_after(Some(id), 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(ev) = ev else { break };
        match &ev.kind {
            EventKind::State { state, detail, .. } => println!("  [{state}] {detail:?}"),
            EventKind::Transcript {
                speaker,
                text,
                interrupted,
                ..
            } => match speaker {
                Speaker::Agent if *interrupted => println!("  Agent:  {text} [interrupted]"),
                Speaker::Agent => println!("  Agent:  {text}"),
                Speaker::Callee => println!("  Callee: {text}"),
            },
            EventKind::Dtmf { digits } => println!("  keys from the callee: {digits}"),
            EventKind::ToolCall { name, arguments } if name == "send_dtmf" => {
                println!(
                    "  keys pressed by the agent: {}",
                    arguments["digits"].as_str().unwrap_or("")
                )
            }
            EventKind::Ended { .. } => break,
            _ => {}
        }
    }
    let record = stack.engine.wait(id, Duration::from_secs(5)).await?;
    let violations = stack.sim.violations();
    stack.stop().await;
    println!(
        "ended: {} ({:?}) {}",
        record.state,
        record.detail,
        record.reason.as_deref().unwrap_or("")
    );
    let got = record.outcome.as_ref().map(|o| o.status);
    if let Some(o) = &record.outcome {
        println!("outcome: {:?}: {}", o.status, o.summary);
    }
    let expected = match scenario.agent.expect_outcome.as_deref() {
        Some("success") | None => OutcomeStatus::Success,
        Some("unknown") => OutcomeStatus::Unknown,
        Some(_) => OutcomeStatus::Failure,
    };
    for v in &violations {
        println!("violation: {} {}", v.rule, v.message);
    }
    let ok = got.unwrap_or(OutcomeStatus::Failure) == expected && violations.is_empty();
    println!("{}", if ok { "as expected" } else { "NOT as expected" });
    Ok(ok)
}
