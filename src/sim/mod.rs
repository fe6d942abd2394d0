//! The built-in phone network: a Twilio (REST, webhooks, Media Streams) and an OpenAI
//! Realtime (GA) server on one loopback port, driven by [`scenario`] files.
//!
//! It is written from `shared/protocols/`, not from the engine: nothing here imports
//! `switchboard_actors` or the engine's wire types, so a mistake in the engine cannot hide
//! behind the same mistake in the simulator. Everything a client sends is checked and any
//! deviation is recorded as a [`Violation`]; tests assert there are none.
//!
//! Time: scripted durations (ringing, pauses) and the 20 ms media clock are divided by
//! `speed`, so tests run a three-minute conversation in seconds. Audio positions (marks,
//! truncation) are counted in audio bytes, so they do not depend on the speed.

pub mod clock;
pub mod realtime;
pub mod scenario;
pub mod socket_end;
pub mod stats;
pub mod twilio;
pub mod violations;
pub mod voice;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use scenario::Scenario;
pub use violations::{Side, Violation, Violations};
pub use voice::VoiceRegistry;

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// 1.0 = real time; 10.0 = scripted time and the media clock run ten times faster.
    pub speed: f64,
    pub account_sid: String,
    pub auth_token: String,
    /// The Realtime API key the model half accepts.
    pub api_key: String,
    /// Numbers the account owns (a `From` must be one of them).
    pub numbers: Vec<String>,
    /// A trial account may only call `verified` numbers (error 21219 otherwise).
    pub trial: bool,
    pub verified: Vec<String>,
    pub scenarios: Vec<Scenario>,
    /// How long the Realtime endpoint takes to answer a WebSocket upgrade: an overloaded
    /// model service, for what the engine does meanwhile. Not scaled by `speed`.
    pub handshake_delay: Duration,
    /// How long a REST update of a call (hang-up, cancel, redirect) takes to be answered and
    /// carried out: a slow carrier API, so a request still in flight can be caught. Not
    /// scaled by `speed`.
    pub update_delay: Duration,
    /// Set TCP_NODELAY on the simulator's own sockets (its server, its media clients), so the
    /// load generator adds no Nagle delay of its own to what it measures (the engine's
    /// sockets stay as the engine sets them). Off by default, as before.
    pub tcp_nodelay: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            speed: 1.0,
            account_sid: "AC00000000000000000000000000000001".into(),
            auth_token: "sim_auth_token_0123456789abcdef".into(),
            api_key: "sk-sim-0123456789".into(),
            numbers: vec!["+15005550006".into()],
            trial: false,
            verified: Vec::new(),
            scenarios: Scenario::builtin(),
            handshake_delay: Duration::ZERO,
            update_delay: Duration::ZERO,
            tcp_nodelay: false,
        }
    }
}

impl SimConfig {
    /// A scripted duration in wall-clock time.
    pub fn scaled(&self, scripted_ms: u64) -> Duration {
        Duration::from_secs_f64(scripted_ms as f64 / 1000.0 / self.speed.max(0.001))
    }
}

/// What both halves share. Each half keeps its own per-call state in its own module.
pub struct SimState {
    pub config: SimConfig,
    /// `http://127.0.0.1:port`, for building URLs the simulator hands out.
    pub base_url: String,
    pub voices: VoiceRegistry,
    pub violations: Violations,
    /// Per-frame latency through the engine (enabled by the load generator only).
    pub stats: stats::FrameStats,
    pub twilio: twilio::State,
    pub realtime: realtime::State,
    pub shutdown: CancellationToken,
}

/// How to reach a simulator, in-process or in another process.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SimEndpoints {
    pub twilio_api_base: String,
    pub realtime_url: String,
    pub account_sid: String,
    pub auth_token: String,
    pub api_key: String,
    pub number: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("scenario '{0}' and '{1}' claim the same number")]
    DuplicateNumber(String, String),
}

/// A running simulator. Dropping it does not stop it; call [`Simulator::shutdown`].
pub struct Simulator {
    state: Arc<SimState>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Simulator {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(config: SimConfig) -> Result<Simulator, SimError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| SimError::Bind {
                addr: "127.0.0.1:0".into(),
                source,
            })?;
        Self::serve(config, listener).await
    }

    /// Serves on a listener the caller bound (for `switchboard sim --port`).
    pub async fn serve(config: SimConfig, listener: TcpListener) -> Result<Simulator, SimError> {
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: "listener".into(),
            source,
        })?;
        for (i, a) in config.scenarios.iter().enumerate() {
            if let Some(b) = config.scenarios[..i].iter().find(|b| b.number == a.number) {
                return Err(SimError::DuplicateNumber(b.name.clone(), a.name.clone()));
            }
        }
        let voices = VoiceRegistry::default();
        for s in &config.scenarios {
            for st in &s.script {
                for line in [&st.agent, &st.callee].into_iter().flatten() {
                    voices.register(line);
                }
            }
            if let Some(g) = &s.answer.greeting {
                voices.register(g);
            }
        }
        let state = Arc::new(SimState {
            base_url: format!("http://{addr}"),
            twilio: twilio::State::default(),
            realtime: realtime::State::default(),
            voices,
            violations: Violations::default(),
            stats: stats::FrameStats::default(),
            shutdown: CancellationToken::new(),
            config,
        });
        let app = router(state.clone());
        let token = state.shutdown.clone();
        let nodelay = state.config.tcp_nodelay;
        let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp| {
            if nodelay {
                let _ = tcp.set_nodelay(true);
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Ok(Simulator { state, addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Base URL of the Twilio REST API (`{base}/2010-04-01/Accounts/...`).
    pub fn twilio_api_base(&self) -> String {
        self.state.base_url.clone()
    }
    /// Realtime WebSocket URL, without `?model=`.
    pub fn realtime_url(&self) -> String {
        format!("ws://{}/v1/realtime", self.addr)
    }
    pub fn account_sid(&self) -> &str {
        &self.state.config.account_sid
    }
    pub fn auth_token(&self) -> &str {
        &self.state.config.auth_token
    }
    pub fn api_key(&self) -> &str {
        &self.state.config.api_key
    }
    /// The account's first number, to use as `From`.
    pub fn number(&self) -> &str {
        &self.state.config.numbers[0]
    }
    /// Everything a client needs to use this simulator (printed by `switchboard sim`).
    pub fn endpoints(&self) -> SimEndpoints {
        SimEndpoints {
            twilio_api_base: self.twilio_api_base(),
            realtime_url: self.realtime_url(),
            account_sid: self.account_sid().to_owned(),
            auth_token: self.auth_token().to_owned(),
            api_key: self.api_key().to_owned(),
            number: self.number().to_owned(),
        }
    }
    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }
    pub fn violations(&self) -> Vec<Violation> {
        self.state.violations.all()
    }

    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .merge(twilio::routes(state.clone()))
        .merge(realtime::routes(state.clone()))
        .route(
            "/sim/stats",
            axum::routing::get(
                |axum::extract::State(s): axum::extract::State<Arc<SimState>>| async move {
                    axum::Json(s.stats.report())
                },
            ),
        )
        .route(
            "/sim/stats/setup",
            axum::routing::get(
                |axum::extract::State(s): axum::extract::State<Arc<SimState>>| async move {
                    let mut all: Vec<stats::SetupTimes> =
                        s.twilio.calls().into_iter().map(|c| c.timing).collect();
                    all.extend(s.stats.echo_setup());
                    axum::Json(all)
                },
            ),
        )
        .route(
            "/sim/violations",
            axum::routing::get(
                |axum::extract::State(s): axum::extract::State<Arc<SimState>>| async move {
                    axum::Json(s.violations.all())
                },
            ),
        )
        .with_state(state)
}
