//! The one composition root: settings in, a running system out. The store, the engine, the
//! webhook outbox and retention, (optionally) the simulator the engine is pointed at, and the
//! HTTP frontend on a listener bound here. `serve`, `mcp`, `call` and `demo`, the examples
//! and the integration tests all start exactly this, so what they exercise is what users run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use switchboard_actors::outbox::{self, OutboxConfig};
use switchboard_actors::store::{MemoryStore, SqliteStore, Store};
use switchboard_actors::{Engine, EngineError};

use crate::config::{Config, ConfigError};
use crate::http::{self, AppState};
use crate::sim::{SimConfig, SimEndpoints, SimError, Simulator};

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("server.bind: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("store.data_dir: cannot open {path}: {message}")]
    Store { path: PathBuf, message: String },
    #[error("store.webhook_urls: {0}")]
    Outbox(String),
}

/// Where the call log lives.
pub enum Storage {
    /// SQLite under `store.data_dir` (its `sim/` folder for simulated calls, so they never
    /// mix with real ones), with the webhook outbox and retention running on it.
    Sqlite,
    /// In memory, gone at stop: the demo and the examples.
    Memory,
    /// A store the caller opened (tests that restart the engine on the same database).
    Given(Arc<dyn Store>),
}

pub struct StackOptions {
    /// Run the built-in phone network and point the engine at it instead of real accounts.
    pub sim: Option<SimConfig>,
    pub storage: Storage,
}

/// Everything running, and what stops it.
pub struct Stack {
    pub engine: Engine,
    pub sim: Option<Simulator>,
    pub config: Arc<Config>,
    /// Where the HTTP frontend listens (with the simulator also the engine's `public_url`).
    pub http_addr: SocketAddr,
    pub state: AppState,
    /// Ends HTTP and the background tasks; [`Stack::stop`] fires it after the calls ended.
    pub shutdown: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    /// Webhook delivery and retention purges; they stop with `shutdown`.
    background: Vec<JoinHandle<()>>,
}

/// Points `config`'s Twilio and OpenAI settings at a simulator reached by its endpoints
/// (possibly in another process), keeping everything else.
pub fn wire_to_endpoints(config: &mut Config, sim: &SimEndpoints) {
    let e = &mut config.engine;
    e.twilio.api_base = sim.twilio_api_base.clone();
    e.twilio.account_sid = sim.account_sid.clone();
    e.twilio.auth_token = SecretString::from(sim.auth_token.clone());
    e.twilio.from_number = sim.number.clone();
    e.openai.realtime_url = sim.realtime_url.clone();
    e.openai.api_key = SecretString::from(sim.api_key.clone());
}

impl Stack {
    /// Binds `server.bind`, starts the simulator (if asked) and points the engine at it,
    /// checks the settings, opens the store, starts the engine (which reconciles calls left
    /// unfinished by the last run), then serves HTTP.
    pub async fn start(mut config: Config, opts: StackOptions) -> Result<Stack, StackError> {
        config.validate_server()?;
        let bind = config.server.bind.trim().to_owned();
        let listener = TcpListener::bind(&bind)
            .await
            .map_err(|source| StackError::Bind {
                addr: bind.clone(),
                source,
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| StackError::Bind { addr: bind, source })?;
        let sim = match opts.sim {
            Some(sim_config) => {
                let sim = Simulator::start(sim_config).await?;
                wire_to_endpoints(&mut config, &sim.endpoints());
                // Only the simulator calls back, over loopback.
                let host = if http_addr.ip().is_unspecified() {
                    SocketAddr::from(([127, 0, 0, 1], http_addr.port()))
                } else {
                    http_addr
                };
                config.engine.public_url = format!("http://{host}");
                Some(sim)
            }
            None => None,
        };
        config.validate()?;
        let shutdown = CancellationToken::new();
        let mut background = Vec::new();
        let store: Arc<dyn Store> = match opts.storage {
            Storage::Memory => Arc::new(MemoryStore::new()),
            Storage::Given(store) => store,
            Storage::Sqlite => {
                let dir = if sim.is_some() {
                    config.store.data_dir.join("sim")
                } else {
                    config.store.data_dir.clone()
                };
                // Created on first use (SqliteStore::open makes the folders); said where, so
                // a user can find the call log of an assistant-started server.
                tracing::info!(data_dir = %dir.display(), "call database folder");
                let sqlite = SqliteStore::open(&dir)
                    .await
                    .map_err(|e| StackError::Store {
                        path: dir.clone(),
                        message: e.to_string(),
                    })?;
                let webhooks = OutboxConfig::new(
                    config.store.webhook_urls.clone(),
                    config.store.webhook_secret.clone(),
                );
                background.extend(
                    outbox::spawn(sqlite.clone(), webhooks, shutdown.clone())
                        .map_err(|e| StackError::Outbox(e.to_string()))?,
                );
                background
                    .push(sqlite.spawn_retention(config.store.retention_days, shutdown.clone()));
                Arc::new(sqlite)
            }
        };
        let engine = Engine::start(config.engine.clone(), store).await?;
        let config = Arc::new(config);
        let state = AppState::new(engine.clone(), config.clone());
        let http = tokio::spawn(http::run(listener, state.clone(), shutdown.clone()));
        Ok(Stack {
            engine,
            sim,
            config,
            http_addr,
            state,
            shutdown,
            http,
            background,
        })
    }

    /// The simulator's protocol violations so far (none without a simulator).
    pub fn violations(&self) -> Vec<crate::sim::Violation> {
        self.sim
            .as_ref()
            .map(|s| s.violations())
            .unwrap_or_default()
    }

    /// Live calls are hung up and their final state written before HTTP stops (the
    /// carrier's last callbacks still need it), then the background tasks and the simulator.
    pub async fn stop(self) {
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
