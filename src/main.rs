//! The `switchboard` binary: pick a runner, build its config, wire a listener and a shutdown
//! token into `http::run`. Everything reusable lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use switchboard::config::Config;
use switchboard::report;
use switchboard::sim::{Scenario, SimConfig, Simulator};
use switchboard::stack::{Stack, StackOptions, Storage};
use switchboard_actors::{CallRecord, CallRequest, CallState, Engine};

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
        /// Load-test mode, the floor: instead of answering calls, open one media stream per
        /// generated call straight to this bare echo (`ws://127.0.0.1:…`, see `switchboard
        /// bench`) with the same real-time 20 ms frames, and measure them the same way.
        #[arg(long, requires = "bench_calls")]
        bench_echo_url: Option<String>,
        /// Print one JSON line with the endpoints instead of the human-readable settings.
        #[arg(long)]
        endpoints_json: bool,
    },
    /// The load generator's floor: a bare echo of the Twilio media WebSocket on 127.0.0.1
    /// (prints its ws:// URL, serves until killed). Started by `switchboard bench`.
    #[command(hide = true)]
    BenchEcho {
        /// Port on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Serve the HTTP frontend (Twilio webhooks, REST, MCP over HTTP) until Ctrl-C.
    Serve {
        /// Use the built-in simulator instead of Twilio and OpenAI (no accounts needed): the
        /// simulated numbers answer as restaurants, voicemail, phone menus, …
        #[arg(long)]
        sim: bool,
    },
    /// MCP over stdio, plus the HTTP frontend Twilio needs for webhooks.
    Mcp {
        /// Use the built-in simulator instead of Twilio and OpenAI (no accounts needed): the
        /// simulated numbers answer as restaurants, voicemail, phone menus, …
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
        /// Call one of the built-in simulator's numbers instead of a real phone (no accounts
        /// needed).
        #[arg(long)]
        sim: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Load generator: N concurrent simulated calls with real-time audio through a real engine
    /// and HTTP frontend, against a floor (the same media streams answered by a bare echo)
    /// measured in the same run; the simulator and the echo run as child processes so CPU and
    /// memory are the engine's (or the echo's) alone.
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
    switchboard_actors::tls::install_provider();
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
            bench_echo_url,
            endpoints_json,
        } => {
            let _ = (speed, scenarios);
            bench_sim(port, n, bench_turns, bench_echo_url, endpoints_json).await
        }
        Command::BenchEcho { port } => bench_echo(port).await,
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
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Serve { sim } => {
            let stack = Stack::start(Config::load(path)?, options(sim)).await?;
            println!(
                "switchboard serving on http://{} (Ctrl-C to stop)",
                stack.http_addr
            );
            tracing::info!(addr = %stack.http_addr, sim, "serving");
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
            let stack = Stack::start(config, options(sim)).await?;
            tracing::info!(addr = %stack.http_addr, sim, "MCP on stdio; HTTP frontend up");
            let served =
                switchboard::mcp::serve_stdio(stack.engine.clone(), stack.shutdown.clone()).await;
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
            let stack = Stack::start(config, options(sim)).await?;
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
            let violations = stack.violations();
            stack.stop().await;
            let record = result?;
            let ok = record.state == CallState::Completed
                && record.outcome.as_ref().is_some_and(|o| o.success);
            Ok(report::print_violations(&violations) && ok).map(|ok| {
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }
    }
}

/// The stack's options for `--sim` (the built-in network, its own SQLite folder) or real
/// accounts.
fn options(sim: bool) -> StackOptions {
    StackOptions {
        sim: sim.then(SimConfig::default),
        storage: Storage::Sqlite,
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
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    let options = StackOptions {
        sim: Some(sim_config),
        storage: Storage::Memory,
    };
    let stack = Stack::start(config, options).await?;
    let sim = stack.sim.as_ref().expect("started with the simulator");
    println!(
        "switchboard demo: scenario '{}' at {speed}x on a simulated phone network ({})",
        scenario.name,
        sim.twilio_api_base()
    );
    if !scenario.description.is_empty() {
        println!("  {}", scenario.description);
    }
    let mut request = CallRequest::new(scenario.number.clone(), scenario.agent.goal.clone());
    request.context = scenario.agent.context.clone();
    let result = place_and_watch(&stack.engine, request, Duration::from_secs(120)).await;
    let violations = sim.violations();
    stack.stop().await;
    let record = result?;
    let as_expected = report::as_expected(&record, scenario.agent.expect_outcome);
    Ok(if report::print_violations(&violations) && as_expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Places the call and prints its events as they happen until it ends (or `timeout`).
async fn place_and_watch(
    engine: &Engine,
    request: CallRequest,
    timeout: Duration,
) -> Result<CallRecord> {
    println!("Calling {}: {}", request.to, request.goal);
    let id = engine.place_call(request).await?;
    println!("  call id {id}");
    let record = report::watch(engine, id, timeout).await?;
    report::print_outcome(&record);
    Ok(record)
}

/// The simulator as the load generator's child: generated calls, frame clock on, one JSON line
/// of endpoints on stdout, then serve until killed.
async fn bench_sim(
    port: u16,
    calls: usize,
    turns: usize,
    echo_url: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    if let Some(url) = &echo_url
        && !url.starts_with("ws://127.0.0.1:")
    {
        return Err(anyhow!(
            "--bench-echo-url must be ws://127.0.0.1:PORT/…, got '{url}'"
        ));
    }
    let config = SimConfig {
        speed: 1.0,
        scenarios: switchboard::sim::scenario::bench_scenarios(calls, turns),
        // The generator adds no Nagle delay of its own to the figures.
        tcp_nodelay: true,
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
    // Echo mode: the streams start now; the load generator polls /sim/stats for their end.
    let streams = echo_url.map(|url| {
        let st = sim.state().clone();
        let scenarios = st.config.scenarios.clone();
        tokio::spawn(switchboard::sim::twilio::echo::drive(st, url, scenarios))
    });
    wait_for_signal().await;
    if let Some(s) = streams {
        s.abort();
    }
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The floor's bare echo: prints its URL, serves until killed.
async fn bench_echo(port: u16) -> Result<ExitCode> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("--port: cannot listen on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    println!("ws://{addr}/media");
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(switchboard::bench::echo::serve(listener, stop.clone()));
    wait_for_signal().await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
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
    Ok(if report::print_violations(&violations) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
