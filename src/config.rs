//! Settings for the binary: defaults ← `config.toml` ← `SWITCHBOARD_*` env (`__` nests), plus
//! the usual `TWILIO_*`, `OPENAI_API_KEY`, `PUBLIC_URL` names.
//! (Loading is written by the CLI work; the shape is fixed here so every frontend can use it.)

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;
use switchboard_actors::EngineConfig;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
    pub engine: EngineConfig,
    pub server: ServerConfig,
    pub store: StoreConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address the HTTP frontend listens on.
    pub bind: String,
    /// Bearer token for every route except signed Twilio webhooks and the media socket.
    /// Required when `bind` is not loopback.
    pub api_token: Option<SecretString>,
    /// Host names allowed for MCP over HTTP (DNS-rebinding guard); loopback is always allowed.
    pub allowed_hosts: Vec<String>,
    /// Origins allowed for browser clients of MCP over HTTP.
    pub allowed_origins: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// Where the call database lives.
    pub data_dir: PathBuf,
    /// Keep ended calls this many days; 0 = forever.
    pub retention_days: u32,
    /// URLs that receive the final call record of every call.
    pub webhook_urls: Vec<String>,
    /// Secret for the `X-Switchboard-Signature` HMAC on post-call webhooks.
    pub webhook_secret: Option<SecretString>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            api_token: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("data"),
            retention_days: 0,
            webhook_urls: Vec::new(),
            webhook_secret: None,
        }
    }
}
