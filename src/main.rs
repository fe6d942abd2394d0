//! The `switchboard` binary: pick a runner, build its config, wire a listener and a shutdown
//! token into `http::run`. Everything reusable lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use switchboard::config::Config;
use switchboard::http::{self, AppState};
use switchboard::local::{self, LocalStack};
use switchboard::sim::{Scenario, SimConfig, Simulator};
use switchboard_actors::outbox::{self, OutboxConfig};
use switchboard_actors::store::{SqliteStore, Store};
use switchboard_actors::{
    CallId, CallRecord, CallRequest, CallState, Engine, EventKind, OutcomeStatus, Speaker,
};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Let an AI assistant place and manage phone calls (Twilio + OpenAI Realtime, MCP)"
)]
struct Cli {
    /// Config file (default ./config.toml when present; also SWITCHBOARD_CONFIG).
    #[arg(long, global = true, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole simulated call in-process (simulator + engine + HTTP); no config needed.
    Demo {
        /// Speed factor for the simulated call (1.0 = real time).
        #[arg(long, default_value_t = 2.0)]
        speed: f64,
        /// Built-in scenario to play (restaurant, busy, no_answer, voicemail, ivr, …).
        #[arg(long, default_value = "restaurant")]
        scenario: String,
    },
    /// Run the simulated phone network standalone and print the settings that point at it.
    Sim {
        /// Port on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 8090)]
        port: u16,
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Load scenarios from this folder (*.toml) instead of the built-in ones.
        #[arg(long)]
        scenarios: Option<PathBuf>,
        /// Load-test mode: this many generated calls, each with its own lines, and per-frame
        /// latency measurement (see `switchboard bench`).
        #[arg(long)]
        bench_calls: Option<usize>,
        /// Load-test mode: agent/callee exchanges per generated call.
        #[arg(long, default_value_t = 2)]
        bench_turns: usize,
        /// Print one JSON line with the endpoints instead of the human-readable settings.
        #[arg(long)]
        endpoints_json: bool,
    },
    /// Serve the HTTP frontend (Twilio webhooks, REST, MCP over HTTP) until Ctrl-C.
    Serve {
        /// Use the built-in simulator instead of Twilio and OpenAI (no accounts needed).
        #[arg(long)]
        sim: bool,
    },
    /// MCP over stdio, plus the HTTP frontend Twilio needs for webhooks.
    Mcp {
        #[arg(long)]
        sim: bool,
    },
    /// Place one call, show its progress and transcript, and print the outcome.
    Call {
        /// Destination, E.164 (e.g. +14155550123).
        #[arg(long)]
        to: String,
        /// What the agent must achieve.
        #[arg(long)]
        goal: String,
        /// Facts the agent may use.
        #[arg(long)]
        context: Option<String>,
        #[arg(long)]
        sim: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Load generator: N concurrent simulated calls with real-time audio through a real engine
    /// and HTTP frontend; the simulator runs as a child process so CPU and memory are the
    /// engine's alone.
    Bench {
        /// Concurrent calls.
        #[arg(long, default_value_t = 100)]
        calls: usize,
        /// Agent/callee exchanges per call (each about 5 s of audio each way).
        #[arg(long, default_value_t = 2)]
        turns: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Demo { .. } | Command::Call { .. });
    init_tracing(if quiet { "warn" } else { "info" });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let path = cli.config.as_deref();
    match cli.command {
        Command::Demo { speed, scenario } => demo(speed, &scenario).await,
        Command::Sim {
            port,
            speed,
            scenarios,
            bench_calls: Some(n),
            bench_turns,
            endpoints_json,
        } => {
            let _ = (speed, scenarios);
            bench_sim(port, n, bench_turns, endpoints_json).await
        }
        Command::Sim {
            port,
            speed,
            scenarios,
            ..
        } => sim(port, speed, scenarios).await,
        Command::Bench { calls, turns, json } => {
            let exe = std::env::current_exe().context("cannot find this program's path")?;
            let opts = switchboard::bench::BenchOptions {
                calls,
                turns,
                deadline: std::time::Duration::from_secs(600),
            };
            let report = switchboard::bench::run(&exe, &opts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(
                if report.not_completed == 0
                    && report.violations == 0
                    && report.frames.uplink.outstanding == 0
                    && report.frames.downlink.outstanding == 0
                    && report.frames.uplink.unmatched == 0
                    && report.frames.downlink.unmatched == 0
                {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
        Command::Serve { sim } => {
            let stack = Stack::start(Config::load(path)?, sim).await?;
            println!(
                "switchboard serving on http://{} (Ctrl-C to stop)",
                stack.addr
            );
            tracing::info!(addr = %stack.addr, sim, "serving");
            wait_for_signal().await;
            tracing::info!("shutting down: hanging up live calls");
            stack.stop().await;
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Mcp { sim } => {
            let mut config = Config::load(path)?;
            if sim {
                // Only the in-process simulator calls back, so any free loopback port will do
                // (and several assistants may each start their own copy).
                config.server.bind = "127.0.0.1:0".into();
            }
            let stack = Stack::start(config, sim).await?;
            tracing::info!(addr = %stack.addr, sim, "MCP on stdio; HTTP frontend up");
            let served =
                switchboard::mcp::serve_stdio(stack.state.clone(), stack.shutdown.clone()).await;
            stack.stop().await;
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call {
            to,
            goal,
            context,
            sim,
            timeout,
        } => {
            let mut config = Config::load(path)?;
            if sim {
                // Only the in-process simulator calls back, so any free loopback port will do.
                config.server.bind = "127.0.0.1:0".into();
            }
            let stack = Stack::start(config, sim).await?;
            if let Some(s) = &stack.sim {
                let numbers = &s.state().config.scenarios;
                if !numbers.iter().any(|sc| sc.number == to) {
                    let list: Vec<String> = numbers
                        .iter()
                        .map(|sc| format!("{} ({})", sc.number, sc.name))
                        .collect();
                    stack.stop().await;
                    return Err(anyhow!(
                        "--to {to} is not a simulated number; with --sim, call one of: {}",
                        list.join(", ")
                    ));
                }
            }
            let mut request = CallRequest::new(to, goal);
            request.context = context;
            let result =
                place_and_watch(&stack.engine, request, Duration::from_secs(timeout)).await;
            let violations = stack
                .sim
                .as_ref()
                .map(|s| s.violations())
                .unwrap_or_default();
            stack.stop().await;
            let record = result?;
            let ok = record.state == CallState::Completed
                && record.outcome.as_ref().is_some_and(|o| o.success);
            Ok(report_violations(&violations) && ok).map(|ok| {
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }
    }
}

/// The engine, its HTTP frontend and (with `--sim`) the simulator behind it.
struct Stack {
    engine: Engine,
    sim: Option<Simulator>,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Webhook delivery and retention purges; they stop with `shutdown`.
    background: Vec<tokio::task::JoinHandle<()>>,
    state: AppState,
}

impl Stack {
    async fn start(mut config: Config, with_sim: bool) -> Result<Stack> {
        config.validate_server()?;
        if !with_sim {
            config.validate()?;
        }
        let listener = TcpListener::bind(config.server.bind.trim())
            .await
            .with_context(|| format!("server.bind: cannot listen on {}", config.server.bind))?;
        let addr = listener.local_addr()?;
        let sim = if with_sim {
            let sim = Simulator::start(SimConfig::default()).await?;
            local::wire_to_sim(&mut config, &sim);
            let host = if addr.ip().is_unspecified() {
                std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
            } else {
                addr
            };
            config.engine.public_url = format!("http://{host}");
            config.validate()?;
            Some(sim)
        } else {
            None
        };
        // Simulated calls get their own database, so they never mix with real ones and
        // recovery never asks the simulator about real calls.
        let data_dir = if with_sim {
            config.store.data_dir.join("sim")
        } else {
            config.store.data_dir.clone()
        };
        let sqlite = SqliteStore::open(&data_dir)
            .await
            .with_context(|| format!("store.data_dir: cannot open {}", data_dir.display()))?;
        // Engine::start reconciles calls left unfinished by the last run.
        let shutdown = CancellationToken::new();
        let outbox = outbox::spawn(
            sqlite.clone(),
            OutboxConfig::new(
                config.store.webhook_urls.clone(),
                config.store.webhook_secret.clone(),
            ),
            shutdown.clone(),
        )?;
        let retention = sqlite.spawn_retention(config.store.retention_days, shutdown.clone());
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let engine = Engine::start(config.engine.clone(), store).await?;
        let state = AppState::new(engine.clone(), Arc::new(config));
        let http = tokio::spawn(http::run(listener, state.clone(), shutdown.clone()));
        Ok(Stack {
            engine,
            sim,
            addr,
            shutdown,
            http,
            background: outbox.into_iter().chain([retention]).collect(),
            state,
        })
    }

    /// Live calls are hung up and their final state written before HTTP stops (Twilio's last
    /// callbacks still need it).
    async fn stop(self) {
        self.engine.shutdown().await;
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
        for task in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn demo(speed: f64, name: &str) -> Result<ExitCode> {
    if !(speed.is_finite() && speed > 0.0) {
        return Err(anyhow!("--speed must be a positive number, got {speed}"));
    }
    let scenario = Scenario::builtin_named(name).ok_or_else(|| {
        let names: Vec<String> = Scenario::builtin().into_iter().map(|s| s.name).collect();
        anyhow!(
            "--scenario '{name}' is not built in (available: {})",
            names.join(", ")
        )
    })?;
    let sim_config = SimConfig {
        speed,
        ..SimConfig::default()
    };
    let stack = LocalStack::start(sim_config, Config::default(), None).await?;
    println!(
        "switchboard demo: scenario '{}' at {speed}x on a simulated phone network ({})",
        scenario.name,
        stack.sim.twilio_api_base()
    );
    if !scenario.description.is_empty() {
        println!("  {}", scenario.description);
    }
    let mut request = CallRequest::new(scenario.number.clone(), scenario.agent.goal.clone());
    request.context = scenario.agent.context.clone();
    let timeout = Duration::from_secs(120);
    let result = place_and_watch(&stack.engine, request, timeout).await;
    let violations = stack.sim.violations();
    stack.stop().await;
    let record = result?;
    let expected = match scenario.agent.expect_outcome.as_deref() {
        Some("failure") => OutcomeStatus::Failure,
        Some("unknown") => OutcomeStatus::Unknown,
        _ => OutcomeStatus::Success,
    };
    let got = record
        .outcome
        .as_ref()
        .map(|o| o.status)
        .unwrap_or(OutcomeStatus::Failure);
    let as_expected = got == expected;
    if !as_expected {
        println!("The scenario expected outcome {expected:?}, got {got:?}.");
    }
    Ok(if report_violations(&violations) && as_expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the simulator's protocol violations; true when there were none.
fn report_violations(violations: &[switchboard::sim::Violation]) -> bool {
    if violations.is_empty() {
        return true;
    }
    println!(
        "The simulator recorded {} protocol violation(s):",
        violations.len()
    );
    for v in violations {
        println!(
            "  {}",
            serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
        );
    }
    false
}

/// Places the call and prints its events as they happen until it ends (or `timeout`).
async fn place_and_watch(
    engine: &Engine,
    request: CallRequest,
    timeout: Duration,
) -> Result<CallRecord> {
    println!("Calling {}: {}", request.to, request.goal);
    let started = Instant::now();
    let id: CallId = engine.place_call(request).await?;
    println!("  call id {id}");
    // Replay from the start of the log, so nothing between admission and now is missed.
    let mut events = engine.subscribe_after(Some(id), 0);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = tokio::time::sleep_until(deadline) => {
                println!("  gave up waiting after {}s; canceling", timeout.as_secs());
                let _ = engine.cancel(id).await;
                break;
            }
        };
        let Some(ev) = ev else { break };
        let t = started.elapsed().as_secs_f64();
        match &ev.kind {
            EventKind::State {
                state,
                detail,
                reason,
            } => {
                let detail = serde_json::to_value(detail)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                match reason {
                    Some(r) => println!("  [{t:5.1}s] {state} ({detail}): {r}"),
                    None => println!("  [{t:5.1}s] {state} ({detail})"),
                }
            }
            // The state lines already say queued / ringing / answered.
            EventKind::Carrier { .. } => {}
            EventKind::Transcript {
                speaker,
                text,
                interrupted,
                ..
            } => {
                let who = match speaker {
                    Speaker::Agent => "Agent: ",
                    Speaker::Callee => "Callee:",
                };
                let cut = if *interrupted { " [interrupted]" } else { "" };
                println!("  {who} {text}{cut}");
            }
            EventKind::Dtmf { digits } => println!("  [{t:5.1}s] callee pressed: {digits}"),
            EventKind::ToolCall { name, arguments } if name == "send_dtmf" => {
                println!(
                    "  [{t:5.1}s] agent pressed: {}",
                    arguments["digits"].as_str().unwrap_or("")
                )
            }
            EventKind::ToolCall { name, .. } => println!("  [{t:5.1}s] agent used {name}"),
            EventKind::Error { message } => println!("  [{t:5.1}s] error: {message}"),
            EventKind::Created { .. } => {}
            EventKind::Ended { .. } => break,
        }
    }
    let record = engine.status(id).await?;
    print_outcome(&record);
    Ok(record)
}

fn print_outcome(r: &CallRecord) {
    println!(
        "Call {} ended: {} after {}s{}",
        r.id,
        r.state,
        r.duration_secs,
        r.reason
            .as_deref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default()
    );
    match &r.outcome {
        Some(o) => {
            let status = if o.success { "success" } else { "not achieved" };
            println!("Outcome: {status}: {}", o.summary);
            // The agent's own arguments repeat outcome and summary; show only what they add.
            if let Some(serde_json::Value::Object(m)) = &o.data {
                let extra: serde_json::Map<_, _> = m
                    .iter()
                    .filter(|(k, _)| *k != "outcome" && *k != "summary")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !extra.is_empty() {
                    println!("Result: {}", serde_json::Value::Object(extra));
                }
            }
        }
        None => println!("Outcome: none reported"),
    }
}

/// The simulator as the load generator's child: generated calls, frame clock on, one JSON line
/// of endpoints on stdout, then serve until killed.
async fn bench_sim(port: u16, calls: usize, turns: usize, json: bool) -> Result<ExitCode> {
    let config = SimConfig {
        speed: 1.0,
        scenarios: switchboard::sim::scenario::bench_scenarios(calls, turns),
        ..SimConfig::default()
    };
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("--port: cannot listen on 127.0.0.1:{port}"))?;
    let sim = Simulator::serve(config, listener).await?;
    sim.state().stats.enable();
    if json {
        println!("{}", serde_json::to_string(&sim.endpoints())?);
    } else {
        println!(
            "switchboard bench simulator on {} ({calls} generated calls)",
            sim.twilio_api_base()
        );
    }
    wait_for_signal().await;
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn sim(port: u16, speed: f64, dir: Option<PathBuf>) -> Result<ExitCode> {
    if !(speed.is_finite() && speed > 0.0) {
        return Err(anyhow!("--speed must be a positive number, got {speed}"));
    }
    let scenarios = match &dir {
        Some(d) => Scenario::load_dir(d)?,
        None => Scenario::builtin(),
    };
    let config = SimConfig {
        speed,
        scenarios,
        ..SimConfig::default()
    };
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("--port: cannot listen on 127.0.0.1:{port}"))?;
    let sim = Simulator::serve(config, listener).await?;
    let base = sim.twilio_api_base();
    println!("switchboard simulator listening on {base}");
    println!(
        "Twilio REST API: {base}/2010-04-01/Accounts/{}/Calls.json",
        sim.account_sid()
    );
    println!("OpenAI Realtime: {}", sim.realtime_url());
    println!("Violations:      {base}/sim/violations");
    println!();
    println!("Point switchboard at it (these replace the real accounts):");
    println!("export TWILIO_ACCOUNT_SID={}", sim.account_sid());
    println!("export TWILIO_AUTH_TOKEN={}", sim.auth_token());
    println!("export TWILIO_NUMBER={}", sim.number());
    println!("export OPENAI_API_KEY={}", sim.api_key());
    println!("export SWITCHBOARD_TWILIO__API_BASE={base}");
    println!(
        "export SWITCHBOARD_OPENAI__REALTIME_URL={}",
        sim.realtime_url()
    );
    println!("export PUBLIC_URL=http://127.0.0.1:8080");
    println!();
    println!("Numbers you can call:");
    for s in &sim.state().config.scenarios {
        println!("  {}  {:<12} {}", s.number, s.name, s.description);
    }
    println!("Ctrl-C to stop.");
    wait_for_signal().await;
    let violations = sim.violations();
    sim.shutdown().await;
    Ok(if report_violations(&violations) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
