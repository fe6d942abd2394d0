//! The load generator: N concurrent simulated calls through a real engine and HTTP frontend,
//! with real-time 20 ms audio, measured from the outside.
//!
//! The simulator runs in a child process (the same binary, `switchboard sim --bench-calls N`)
//! so the CPU and memory figures are the engine's alone. Every call has its own script, so
//! the simulator can tell each frame apart and report per-frame latency, lost frames, and
//! frames duplicated or delivered to the wrong call (see `sim::stats`).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use switchboard_actors::store::MemoryStore;
use switchboard_actors::{CallId, CallRequest, CallState, Engine, EventKind};

use crate::config::Config;
use crate::http::{self, AppState};
use crate::sim::SimEndpoints;
use crate::sim::scenario::bench_scenarios;
use crate::sim::stats::StatsReport;
use crate::stack::wire_to_endpoints;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start the simulator process: {0}")]
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
    /// Give up waiting for calls to end after this long.
    pub deadline: Duration,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub calls: usize,
    pub completed: usize,
    pub not_completed: usize,
    pub wall_secs: f64,
    /// From `place_call` to the media stream being up (dialing → connected).
    pub setup: Summary,
    pub frames: StatsReport,
    /// Engine process CPU over the run, in percent of one core.
    pub engine_cpu_percent: f64,
    pub engine_rss_peak_mib: f64,
    /// The simulator child's CPU over the same span: the two share the machine's cores.
    pub simulator_cpu_percent: f64,
    pub violations: usize,
}

/// Runs the benchmark, spawning `exe sim --bench-calls N` as the simulator.
pub async fn run(exe: &std::path::Path, opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    switchboard_actors::tls::install_provider();
    let mut child = tokio::process::Command::new(exe)
        .args([
            "sim",
            "--port",
            "0",
            "--bench-calls",
            &opts.calls.to_string(),
        ])
        .args(["--bench-turns", &opts.turns.to_string(), "--endpoints-json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::Spawn(e.to_string()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Spawn("no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| BenchError::Spawn("the simulator printed no endpoints within 30 s".into()))?
        .map_err(|e| BenchError::Spawn(e.to_string()))?
        .ok_or_else(|| {
            BenchError::Spawn("the simulator exited before printing its endpoints".into())
        })?;
    let endpoints: SimEndpoints = serde_json::from_str(&line)
        .map_err(|e| BenchError::Spawn(format!("bad endpoints line '{line}': {e}")))?;
    let result = drive(&endpoints, opts, child.id()).await;
    // Stop the simulator by its own id, whatever happened.
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    result
}

async fn drive(
    sim: &SimEndpoints,
    opts: &BenchOptions,
    sim_pid: Option<u32>,
) -> Result<BenchReport, BenchError> {
    let sim_proc = sim_pid.map_or_else(|| "self".to_owned(), |p| p.to_string());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(BenchError::Bind)?;
    let addr = listener.local_addr().map_err(BenchError::Bind)?;
    let mut config = Config::default();
    config.engine.public_url = format!("http://{addr}");
    config.engine.calls.max_concurrent = opts.calls.max(1);
    wire_to_endpoints(&mut config, sim);
    let engine = Engine::start(config.engine.clone(), Arc::new(MemoryStore::new())).await?;
    let shutdown = CancellationToken::new();
    let state = AppState::new(engine.clone(), Arc::new(config));
    let server = tokio::spawn(http::run(listener, state, shutdown.clone()));

    let scenarios = bench_scenarios(opts.calls, opts.turns);
    let mut events = engine.subscribe(None);
    let cpu0 = cpu_ticks("self");
    let sim_cpu0 = cpu_ticks(&sim_proc);
    let t0 = Instant::now();
    let mut placed: HashMap<CallId, Instant> = HashMap::new();
    for s in &scenarios {
        let mut req = CallRequest::new(s.number.clone(), s.agent.goal.clone());
        req.max_duration_secs = Some(600);
        let id = engine.place_call(req).await?;
        placed.insert(id, Instant::now());
    }
    let mut setup_ms = Vec::with_capacity(placed.len());
    let mut ended: HashMap<CallId, CallState> = HashMap::new();
    let deadline = tokio::time::Instant::now() + opts.deadline;
    while ended.len() < placed.len() {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(ev) = ev else { break };
        match &ev.kind {
            EventKind::State {
                state: CallState::Connected,
                ..
            } => {
                if let Some(t) = placed.get(&ev.call_id) {
                    setup_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            EventKind::Ended { state, .. } => {
                ended.insert(ev.call_id, *state);
            }
            _ => {}
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu_secs = cpu_ticks("self").saturating_sub(cpu0) as f64 / 100.0;
    let sim_cpu_secs = cpu_ticks(&sim_proc).saturating_sub(sim_cpu0) as f64 / 100.0;
    let completed = ended
        .values()
        .filter(|s| **s == CallState::Completed)
        .count();

    let client = reqwest::Client::new();
    let frames: StatsReport = fetch(&client, &format!("{}/sim/stats", sim.twilio_api_base)).await?;
    let violations: Vec<serde_json::Value> =
        fetch(&client, &format!("{}/sim/violations", sim.twilio_api_base)).await?;

    engine.shutdown().await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;

    Ok(BenchReport {
        calls: placed.len(),
        completed,
        not_completed: placed.len() - completed,
        wall_secs: wall,
        setup: summarize(&mut setup_ms),
        frames,
        engine_cpu_percent: 100.0 * cpu_secs / wall.max(0.001),
        engine_rss_peak_mib: rss_peak_kib() as f64 / 1024.0,
        simulator_cpu_percent: if sim_pid.is_some() {
            100.0 * sim_cpu_secs / wall.max(0.001)
        } else {
            0.0
        },
        violations: violations.len(),
    })
}

async fn fetch<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, BenchError> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| BenchError::Stats(e.to_string()))?;
    resp.json()
        .await
        .map_err(|e| BenchError::Stats(e.to_string()))
}

fn summarize(v: &mut [f64]) -> Summary {
    if v.is_empty() {
        return Summary::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Summary {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: v[v.len() - 1],
    }
}

/// utime + stime of a process (`self` or a pid) in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(proc: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{proc}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn rss_peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

impl BenchReport {
    /// The table the README quotes.
    pub fn render(&self) -> String {
        let d = |name: &str, r: &crate::sim::stats::DirReport| {
            format!(
                "{name:<9} frames sent {:>8}  received {:>8}  lost {:>6}  dup/misrouted {:>4}  latency p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms\n",
                r.sent,
                r.received,
                r.outstanding,
                r.unmatched,
                r.p50_us as f64 / 1000.0,
                r.p99_us as f64 / 1000.0,
                r.max_us as f64 / 1000.0
            )
        };
        format!(
            "calls {} (completed {}, not completed {}) in {:.1} s\nsetup (place_call → connected): p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms\n{}{}engine CPU {:.0}% of one core, peak RSS {:.1} MiB; simulator CPU {:.0}% of one core; simulator violations {}\n",
            self.calls,
            self.completed,
            self.not_completed,
            self.wall_secs,
            self.setup.p50_ms,
            self.setup.p99_ms,
            self.setup.max_ms,
            d("uplink", &self.frames.uplink),
            d("downlink", &self.frames.downlink),
            self.engine_cpu_percent,
            self.engine_rss_peak_mib,
            self.simulator_cpu_percent,
            self.violations
        )
    }
}
