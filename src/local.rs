//! The whole system on loopback: the simulator, an engine pointed at it, and the HTTP
//! frontend the simulator's Twilio calls back into. `demo`, `--sim`, the examples and the
//! integration tests all start exactly this, so what they show is what users run.

use std::sync::Arc;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use switchboard_actors::store::{MemoryStore, Store};
use switchboard_actors::{Engine, EngineError};

use crate::config::Config;
use crate::http::{self, AppState};
use crate::sim::{SimConfig, SimEndpoints, SimError, Simulator};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Points `config`'s Twilio and OpenAI settings at `sim`, keeping everything else.
pub fn wire_to_sim(config: &mut Config, sim: &Simulator) {
    wire_to_endpoints(config, &sim.endpoints());
}

/// Points `config` at a simulator reached by its endpoints (possibly in another process).
pub fn wire_to_endpoints(config: &mut Config, sim: &SimEndpoints) {
    let e = &mut config.engine;
    e.twilio.api_base = sim.twilio_api_base.clone();
    e.twilio.account_sid = sim.account_sid.clone();
    e.twilio.auth_token = SecretString::from(sim.auth_token.clone());
    e.twilio.from_number = sim.number.clone();
    e.openai.realtime_url = sim.realtime_url.clone();
    e.openai.api_key = SecretString::from(sim.api_key.clone());
}

pub struct LocalStack {
    pub sim: Simulator,
    pub engine: Engine,
    pub config: Arc<Config>,
    /// Where the HTTP frontend listens (also the engine's `public_url`).
    pub http_addr: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl LocalStack {
    /// Starts the simulator, then the HTTP listener (so its address can be the public URL),
    /// then the engine with `store` (memory when `None`), then serves HTTP.
    pub async fn start(
        sim_config: SimConfig,
        mut config: Config,
        store: Option<Arc<dyn Store>>,
    ) -> Result<LocalStack, LocalError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = Simulator::start(sim_config).await?;
        let bind = if config.server.bind.starts_with("127.") {
            config.server.bind.clone()
        } else {
            "127.0.0.1:0".into()
        };
        let listener = TcpListener::bind(&bind)
            .await
            .map_err(|source| LocalError::Bind {
                addr: bind.clone(),
                source,
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| LocalError::Bind { addr: bind, source })?;
        config.engine.public_url = format!("http://{http_addr}");
        wire_to_sim(&mut config, &sim);
        let store = store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let engine = Engine::start(config.engine.clone(), store).await?;
        let config = Arc::new(config);
        let shutdown = CancellationToken::new();
        let state = AppState::new(engine.clone(), config.clone());
        let http_task = tokio::spawn(http::run(listener, state, shutdown.clone()));
        Ok(LocalStack {
            sim,
            engine,
            config,
            http_addr,
            shutdown,
            http_task,
        })
    }

    /// Hangs up live calls, stops HTTP, then the simulator.
    pub async fn stop(self) {
        self.engine.shutdown().await;
        self.shutdown.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.http_task).await;
        self.sim.shutdown().await;
    }
}
