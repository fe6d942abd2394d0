//! The `voicemail` scenario (examples/scenarios/voicemail.toml) played through the engine on the simulator:
//! `cargo run --example voicemail`.

mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::run_scenario("voicemail").await
}
