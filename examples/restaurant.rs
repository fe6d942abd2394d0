//! The `restaurant` scenario (examples/scenarios/restaurant.toml) played through the engine on the simulator:
//! `cargo run --example restaurant`.

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::run_scenario("restaurant").await
}
