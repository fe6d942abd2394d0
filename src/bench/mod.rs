//! The load generator: N concurrent simulated calls through a real engine and HTTP frontend,
//! with real-time 20 ms audio, measured from the outside, against a floor measured the same
//! way in the same run.
//!
//! The floor: the same N calls' media streams, dialed by the simulator straight at a bare echo
//! (`switchboard bench-echo`, its own process; see [`echo`]) that sends each media frame back:
//! two message operations per frame, no engine, no model socket. Then the engine: the
//! simulator runs in a child process (`switchboard sim --bench-calls N`) and the engine in
//! this one, so the CPU and memory figures are the engine's alone. Each side runs first with
//! one call (the memory base), then with N. Every call has its own script, so the simulator can
//! tell each frame apart and report per-frame latency, lost frames, and frames duplicated or
//! delivered to the wrong call (see `sim::stats`).

pub mod echo;
pub mod proc;
pub mod report;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout};
use tokio_util::sync::CancellationToken;

use switchboard_actors::store::MemoryStore;
use switchboard_actors::{CallId, CallRequest, CallState, Engine, EventKind};

use crate::config::Config;
use crate::http::{self, AppState};
use crate::sim::SimEndpoints;
use crate::sim::scenario::bench_scenarios;
use crate::sim::stats::{SetupTimes, StatsReport, unix_us};
use crate::stack::wire_to_endpoints;
use proc::{MachineMeter, Meter, Proc};
pub use report::{BenchReport, Run, SetupLegs, Summary};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start {0}")]
    Spawn(String),
    #[error("cannot listen on loopback: {0}")]
    Bind(std::io::Error),
    #[error("engine: {0}")]
    Engine(#[from] switchboard_actors::EngineError),
    #[error("cannot read the simulator's figures: {0}")]
    Stats(String),
}

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub calls: usize,
    /// Agent/callee exchanges per call (each about 5 s of audio each way).
    pub turns: usize,
    /// Give up waiting for one run's calls to end after this long.
    pub deadline: Duration,
}

/// A child process of this binary that prints one line (its address) and serves until
/// killed. Killed by its own id when stopped or dropped.
struct Helper {
    child: Child,
    /// Kept open so the child never writes into a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
    line: String,
}

impl Helper {
    async fn start(exe: &Path, args: &[&str], what: &str) -> Result<Helper, BenchError> {
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Spawn(format!("{what}: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Spawn(format!("{what}: no stdout")))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                return Err(BenchError::Spawn(format!(
                    "{what}: it exited before printing its address"
                )));
            }
            Ok(Err(e)) => return Err(BenchError::Spawn(format!("{what}: {e}"))),
            Err(_) => {
                return Err(BenchError::Spawn(format!(
                    "{what}: it printed nothing within 30 s"
                )));
            }
        };
        Ok(Helper {
            child,
            _stdout: lines,
            line,
        })
    }

    fn proc(&self) -> Option<Proc> {
        self.child.id().map(Proc::pid)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

async fn start_sim(
    exe: &Path,
    calls: usize,
    turns: usize,
    echo_url: Option<&str>,
) -> Result<(Helper, SimEndpoints), BenchError> {
    let (n, t) = (calls.to_string(), turns.to_string());
    let mut args = vec![
        "sim",
        "--port",
        "0",
        "--bench-calls",
        &n,
        "--bench-turns",
        &t,
    ];
    if let Some(url) = echo_url {
        args.extend(["--bench-echo-url", url]);
    }
    args.push("--endpoints-json");
    let sim = Helper::start(exe, &args, "the simulator process").await?;
    let endpoints: SimEndpoints = match serde_json::from_str(&sim.line) {
        Ok(e) => e,
        Err(e) => {
            let msg = format!("the simulator: bad endpoints line '{}': {e}", sim.line);
            sim.stop().await;
            return Err(BenchError::Spawn(msg));
        }
    };
    Ok((sim, endpoints))
}

/// Runs the floor (one call, then N) and the engine (one call, then N); spawns `exe
/// bench-echo` and `exe sim --bench-calls …` as helpers and stops each by its own id.
pub async fn run(exe: &Path, opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    switchboard_actors::tls::install_provider();
    let n = opts.calls.max(1);
    let echo = Helper::start(exe, &["bench-echo", "--port", "0"], "the echo process").await?;
    let floor = async {
        let base = if n > 1 {
            Some(floor_run(exe, &echo, 1, opts).await?)
        } else {
            None
        };
        Ok::<_, BenchError>((base, floor_run(exe, &echo, n, opts).await?))
    }
    .await;
    echo.stop().await;
    let (floor_base, floor) = floor?;
    let engine_base = if n > 1 {
        Some(engine_run(exe, 1, opts).await?)
    } else {
        None
    };
    let engine = engine_run(exe, n, opts).await?;
    Ok(BenchReport::new(
        opts.turns,
        floor_base,
        floor,
        engine_base,
        engine,
    ))
}

/// `calls` echo streams from a fresh simulator to the echo process.
async fn floor_run(
    exe: &Path,
    echo: &Helper,
    calls: usize,
    opts: &BenchOptions,
) -> Result<Run, BenchError> {
    let echo_proc = echo
        .proc()
        .ok_or_else(|| BenchError::Spawn("the echo process has no id (it exited)".into()))?;
    let (sim, endpoints) = start_sim(exe, calls, opts.turns, Some(&echo.line)).await?;
    let result = floor_measure(&endpoints, echo_proc, sim.proc(), calls, opts).await;
    sim.stop().await;
    result
}

async fn floor_measure(
    sim: &SimEndpoints,
    echo_proc: Proc,
    sim_proc: Option<Proc>,
    calls: usize,
    opts: &BenchOptions,
) -> Result<Run, BenchError> {
    let client = reqwest::Client::new();
    let base = &sim.twilio_api_base;
    let machine = MachineMeter::start();
    let meter = Meter::start(echo_proc);
    let sim_meter = sim_proc.map(Meter::start);
    let bench_meter = Meter::start(Proc::this());
    // The simulator opened its streams as it printed its endpoints; poll until all ended.
    let deadline = tokio::time::Instant::now() + opts.deadline;
    let mut frames: StatsReport;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        frames = fetch(&client, &format!("{base}/sim/stats")).await?;
        if frames.streams_done >= calls as u64 || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    let machine_cpu = machine.cpu_percent();
    let measured = meter.finish().await;
    let sim_cpu = match sim_meter {
        Some(m) => m.finish().await.cpu_percent,
        None => 0.0,
    };
    let bench_cpu = bench_meter.finish().await.cpu_percent;
    let times: Vec<SetupTimes> = fetch(&client, &format!("{base}/sim/stats/setup")).await?;
    let violations: Vec<serde_json::Value> =
        fetch(&client, &format!("{base}/sim/violations")).await?;
    let completed = times
        .iter()
        .filter(|t| t.first_audio_us.is_some())
        .count()
        .min(calls);
    Ok(Run {
        what: "floor",
        calls,
        completed,
        not_completed: calls - completed,
        wall_secs: measured.wall_secs,
        cpu_percent: measured.cpu_percent,
        cpu_per_call_percent: measured.cpu_percent / calls as f64,
        rss_peak_kib: measured.rss_peak_kib,
        frames,
        setup: SetupLegs::from_times(&times, |t| t.request_us),
        simulator_cpu_percent: sim_cpu,
        other_cpu_percent: (machine_cpu - measured.cpu_percent - sim_cpu - bench_cpu).max(0.0),
        violations: violations.len(),
    })
}

/// `calls` calls through an engine in this process, answered by a fresh simulator.
async fn engine_run(exe: &Path, calls: usize, opts: &BenchOptions) -> Result<Run, BenchError> {
    let (sim, endpoints) = start_sim(exe, calls, opts.turns, None).await?;
    let result = drive(&endpoints, sim.proc(), calls, opts).await;
    sim.stop().await;
    result
}

async fn drive(
    sim: &SimEndpoints,
    sim_proc: Option<Proc>,
    calls: usize,
    opts: &BenchOptions,
) -> Result<Run, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(BenchError::Bind)?;
    let addr = listener.local_addr().map_err(BenchError::Bind)?;
    let mut config = Config::default();
    config.engine.public_url = format!("http://{addr}");
    config.engine.calls.max_concurrent = calls.max(1);
    wire_to_endpoints(&mut config, sim);
    let engine = Engine::start(config.engine.clone(), Arc::new(MemoryStore::new())).await?;
    let shutdown = CancellationToken::new();
    let state = AppState::new(engine.clone(), Arc::new(config));
    let server = tokio::spawn(http::run(listener, state, shutdown.clone()));
    let result = place_and_wait(&engine, sim, sim_proc, calls, opts).await;
    engine.shutdown().await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    result
}

async fn place_and_wait(
    engine: &Engine,
    sim: &SimEndpoints,
    sim_proc: Option<Proc>,
    calls: usize,
    opts: &BenchOptions,
) -> Result<Run, BenchError> {
    let scenarios = bench_scenarios(calls, opts.turns);
    let mut events = engine.subscribe(None);
    let machine = MachineMeter::start();
    let meter = Meter::start(Proc::this());
    let sim_meter = sim_proc.map(Meter::start);
    let mut placed: HashSet<CallId> = HashSet::new();
    let mut requested: HashMap<String, u64> = HashMap::new();
    for s in &scenarios {
        let mut req = CallRequest::new(s.number.clone(), s.agent.goal.clone());
        req.max_duration_secs = Some(600);
        requested.insert(s.number.clone(), unix_us());
        let id = engine.place_call(req).await?;
        placed.insert(id);
    }
    let mut ended: HashMap<CallId, CallState> = HashMap::new();
    let deadline = tokio::time::Instant::now() + opts.deadline;
    while ended.len() < placed.len() {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(ev) = ev else { break };
        if let EventKind::Ended { state, .. } = &ev.kind
            && placed.contains(&ev.call_id)
        {
            ended.insert(ev.call_id, *state);
        }
    }
    let machine_cpu = machine.cpu_percent();
    let measured = meter.finish().await;
    let sim_cpu = match sim_meter {
        Some(m) => m.finish().await.cpu_percent,
        None => 0.0,
    };
    let completed = ended
        .values()
        .filter(|s| **s == CallState::Completed)
        .count();

    let client = reqwest::Client::new();
    let base = &sim.twilio_api_base;
    let frames: StatsReport = fetch(&client, &format!("{base}/sim/stats")).await?;
    let times: Vec<SetupTimes> = fetch(&client, &format!("{base}/sim/stats/setup")).await?;
    let violations: Vec<serde_json::Value> =
        fetch(&client, &format!("{base}/sim/violations")).await?;
    Ok(Run {
        what: "engine",
        calls: placed.len(),
        completed,
        not_completed: placed.len() - completed,
        wall_secs: measured.wall_secs,
        cpu_percent: measured.cpu_percent,
        cpu_per_call_percent: measured.cpu_percent / placed.len().max(1) as f64,
        rss_peak_kib: measured.rss_peak_kib,
        frames,
        setup: SetupLegs::from_times(&times, |t| requested.get(&t.key).copied()),
        simulator_cpu_percent: sim_cpu,
        other_cpu_percent: (machine_cpu - measured.cpu_percent - sim_cpu).max(0.0),
        violations: violations.len(),
    })
}

async fn fetch<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, BenchError> {
    let resp = tokio::time::timeout(Duration::from_secs(30), client.get(url).send())
        .await
        .map_err(|_| BenchError::Stats(format!("{url}: no answer within 30 s")))?
        .map_err(|e| BenchError::Stats(e.to_string()))?;
    resp.json()
        .await
        .map_err(|e| BenchError::Stats(e.to_string()))
}
