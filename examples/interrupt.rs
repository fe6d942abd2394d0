//! The `interrupt` scenario (examples/scenarios/interrupt.toml) played through the engine on the simulator:
//! `cargo run --example interrupt`.

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::run_scenario("interrupt").await
}
