//! The `hangup` scenario (examples/scenarios/hangup.toml) played through the engine on the simulator:
//! `cargo run --example hangup`.

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::run_scenario("hangup").await
}
