//! Shared by the scripted-call examples: start the whole system on loopback, place the
//! scenario's call, print what happens, and judge the result against the scenario's
//! expectation and the simulator's protocol checks, exactly as `switchboard demo` does.
#![allow(dead_code)] // each example uses a different part

use std::process::ExitCode;
use std::time::Duration;

use switchboard::config::Config;
use switchboard::report;
use switchboard::sim::{Scenario, SimConfig};
use switchboard::stack::{Stack, StackOptions, Storage};
use switchboard_actors::CallRequest;

/// How much faster than real time the examples run.
pub const SPEED: f64 = 4.0;

/// Runs the built-in scenario `name` and prints its transcript and outcome.
pub async fn run_scenario(name: &str) -> ExitCode {
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
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    let options = StackOptions {
        sim: Some(SimConfig {
            speed: SPEED,
            ..SimConfig::default()
        }),
        storage: Storage::Memory,
    };
    let stack = Stack::start(config, options).await?;
    println!("{}: {}", scenario.name, scenario.description);
    let mut request = CallRequest::new(scenario.number.clone(), scenario.agent.goal.clone());
    request.context = scenario.agent.context.clone();
    let id = stack.engine.place_call(request).await?;
    let record = report::watch(&stack.engine, id, Duration::from_secs(120)).await;
    let violations = stack.violations();
    stack.stop().await;
    let record = record?;
    report::print_outcome(&record);
    let ok = report::as_expected(&record, scenario.agent.expect_outcome)
        & report::print_violations(&violations);
    println!("{}", if ok { "as expected" } else { "NOT as expected" });
    Ok(ok)
}
