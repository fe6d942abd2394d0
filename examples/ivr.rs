//! The `ivr` scenario (examples/scenarios/ivr.toml) played through the engine on the simulator:
//! `cargo run --example ivr`.

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::run_scenario("ivr").await
}
