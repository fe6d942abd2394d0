//! The `busy` scenario (examples/scenarios/busy.toml) played through the engine on the simulator:
//! `cargo run --example busy`.

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::run_scenario("busy").await
}
