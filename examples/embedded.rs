//! Using the engine from Rust: the `Engine` handle places a call, streams its events, waits
//! for the end, and reads the transcript. Here the engine talks to the built-in simulator
//! (`Stack`); with real accounts, build an `EngineConfig` and call `Engine::start`
//! yourself, and serve `switchboard::http::app` where Twilio can reach it.
//!
//! `cargo run --example embedded`

use std::time::Duration;

use switchboard::config::Config;
use switchboard::sim::{Scenario, SimConfig};
use switchboard::stack::{Stack, StackOptions, Storage};
use switchboard_actors::{CallRequest, Engine, EventKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    let options = StackOptions {
        sim: Some(SimConfig {
            speed: 4.0,
            ..SimConfig::default()
        }),
        storage: Storage::Memory,
    };
    let stack = Stack::start(config, options).await?;
    let engine: Engine = stack.engine.clone();

    let scenario = Scenario::builtin_named("restaurant")
        .ok_or_else(|| anyhow::anyhow!("the restaurant scenario is built in"))?;
    let mut request = CallRequest::new(scenario.number, "Book a table for two at 7:30 tonight");
    request.context =
        Some("The booking is for Alex Kim. Alex's callback number is +14155550123.".into());

    let id = engine.place_call(request).await?;
    println!("placed call {id}");

    // Events stream while the call runs; `subscribe_after(.., 0)` replays what already happened.
    let mut events = engine.subscribe_after(Some(id), 0);
    let watcher = tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            println!("event #{}: {}", ev.seq, ev.kind.name());
            if matches!(ev.kind, EventKind::Ended { .. }) {
                break;
            }
        }
    });

    let record = engine.wait(id, Duration::from_secs(120)).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), watcher).await;
    for turn in engine.transcript(id).await? {
        println!("{:?}: {}", turn.speaker, turn.text);
    }
    println!("state: {}, outcome: {:?}", record.state, record.outcome);
    stack.stop().await;
    Ok(())
}
