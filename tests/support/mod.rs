//! Shared helpers for the integration tests: the whole system on loopback, and polling with
//! deadlines instead of sleeps.
#![allow(dead_code)]

use std::time::Duration;

use switchboard::config::Config;
use switchboard::sim::scenario::Scenario;
use switchboard::sim::{SimConfig, Simulator};
use switchboard::stack::{Stack, StackOptions, Storage};
use switchboard_actors::{CallId, CallRecord, CallRequest};

/// Simulated time runs this many times faster than real time in tests.
pub const SPEED: f64 = 4.0;

pub async fn stack(scenarios: Vec<Scenario>) -> Stack {
    stack_with(scenarios, |_, _| {}).await
}

pub async fn stack_with(
    scenarios: Vec<Scenario>,
    tweak: impl FnOnce(&mut SimConfig, &mut Config),
) -> Stack {
    stack_on(scenarios, Storage::Memory, tweak).await
}

/// [`stack_with`] on a store the test chose.
pub async fn stack_on(
    scenarios: Vec<Scenario>,
    storage: Storage,
    tweak: impl FnOnce(&mut SimConfig, &mut Config),
) -> Stack {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut sim = SimConfig {
        speed: SPEED,
        scenarios,
        ..SimConfig::default()
    };
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.engine.calls.ring_timeout_secs = 10;
    tweak(&mut sim, &mut config);
    let options = StackOptions {
        sim: Some(sim),
        storage,
    };
    Stack::start(config, options)
        .await
        .expect("the stack starts")
}

/// The simulator of a stack the tests started with one.
pub trait Simulated {
    fn sim(&self) -> &Simulator;
}

impl Simulated for Stack {
    fn sim(&self) -> &Simulator {
        self.sim
            .as_ref()
            .expect("the test stack runs the simulator")
    }
}

pub fn builtin(name: &str) -> Scenario {
    Scenario::builtin_named(name).unwrap_or_else(|| panic!("no built-in scenario {name}"))
}

pub fn request_for(s: &Scenario) -> CallRequest {
    let mut r = CallRequest::new(s.number.clone(), s.agent.goal.clone());
    r.context = s.agent.context.clone();
    r
}

/// Waits for the call to end (bounded), returning its final record.
pub async fn finished(stack: &Stack, id: CallId, within: Duration) -> CallRecord {
    let rec = stack
        .engine
        .wait(id, within)
        .await
        .expect("the call exists");
    assert!(
        rec.state.is_terminal(),
        "call {id} did not end within {within:?}: {rec:?}"
    );
    rec
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn eventually<F: FnMut() -> bool>(within: Duration, mut cond: F) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The simulator's record of the stack's first carrier call, once `done` holds for it
/// (polled, bounded by `within`).
pub async fn sim_call_when(
    stack: &Stack,
    within: Duration,
    done: impl Fn(&switchboard::sim::twilio::CallSummary) -> bool,
) -> switchboard::sim::twilio::CallSummary {
    let sim = stack.sim().state().clone();
    assert!(
        eventually(within, || sim.twilio.calls().first().is_some_and(&done)).await,
        "the simulated carrier call never got there: {:?}",
        sim.twilio.calls()
    );
    sim.twilio.calls().remove(0)
}

pub fn assert_no_violations(stack: &Stack) {
    let v = stack.sim().violations();
    assert!(
        v.is_empty(),
        "simulator recorded protocol violations: {v:#?}"
    );
}
