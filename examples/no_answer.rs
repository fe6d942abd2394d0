//! The `no_answer` scenario (examples/scenarios/no_answer.toml) played through the engine on the simulator:
//! `cargo run --example no_answer`.

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::run_scenario("no_answer").await
}
