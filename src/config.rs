//! Settings for the binary: defaults ← `config.toml` ← `SWITCHBOARD_*` env (`__` nests), plus
//! the usual `TWILIO_*`, `OPENAI_API_KEY`, `PUBLIC_URL` names.
//!
//! Environment values are read as strings and converted leniently, so a token or a phone
//! number made of digits stays text; list settings take comma-separated values.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::{ExposeSecret, SecretString};
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
    /// Web origins allowed on every route (CORS is answered for them); any other `Origin`
    /// is refused with 403. Loopback origins are always allowed.
    pub allowed_origins: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// Where the call database lives. Default: the platform's per-user data directory (see
    /// [`default_data_dir`]); a relative path in a config file is taken from that file's
    /// folder, anywhere else from the working directory.
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
            data_dir: default_data_dir(),
            retention_days: 0,
            webhook_urls: Vec::new(),
            webhook_secret: None,
        }
    }
}

/// The platform's per-user data directory for switchboard (`~/.local/share/switchboard` or
/// `$XDG_DATA_HOME/switchboard` on Linux, `~/Library/Application Support/switchboard` on
/// macOS, `%APPDATA%\switchboard\data` on Windows). Assistants start MCP servers in any
/// working directory (Claude Desktop on macOS uses `/`), so the default must not be relative.
/// Falls back to `data` under the working directory only when no home directory is known.
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "switchboard")
        .map(|d| d.data_dir().to_owned())
        .unwrap_or_else(|| PathBuf::from("data"))
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Settings whose value is a list; in an environment variable they are comma-separated
/// (`SWITCHBOARD_CALLS__ALLOWED_PREFIXES=+1,+44`).
const LIST_KEYS: &[&str] = &[
    "calls.allowed_prefixes",
    "calls.denied_prefixes",
    "server.allowed_hosts",
    "server.allowed_origins",
    "store.webhook_urls",
];

/// The config file's sections, to catch `SWITCHBOARD_TWILIO_AUTH_TOKEN` (one underscore).
const SECTIONS: &[&str] = &["twilio", "openai", "calls", "agent", "server", "store"];

/// Every setting there is (`section.key`, or a top-level key). A key in the file or a
/// `SWITCHBOARD_*` variable that is not one of these is refused, naming the nearest.
/// `config.toml.example` documents exactly these (checked by a test).
pub const SETTINGS: &[&str] = &[
    "public_url",
    "twilio.account_sid",
    "twilio.auth_token",
    "twilio.from_number",
    "twilio.api_base",
    "twilio.machine_detection",
    "openai.api_key",
    "openai.realtime_url",
    "openai.model",
    "openai.voice",
    "openai.transcription_model",
    "calls.max_concurrent",
    "calls.default_max_duration_secs",
    "calls.max_duration_limit_secs",
    "calls.time_limit_margin_secs",
    "calls.ring_timeout_secs",
    "calls.allowed_prefixes",
    "calls.denied_prefixes",
    "agent.on_behalf_of",
    "server.bind",
    "server.api_token",
    "server.allowed_hosts",
    "server.allowed_origins",
    "store.data_dir",
    "store.retention_days",
    "store.webhook_urls",
    "store.webhook_secret",
];

/// The `SWITCHBOARD_*` variable that sets `setting`.
pub fn env_name(setting: &str) -> String {
    format!(
        "SWITCHBOARD_{}",
        setting.replace('.', "__").to_ascii_uppercase()
    )
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The conventional variable names other tools use, and the setting each one fills.
const USUAL_NAMES: &[(&str, &str)] = &[
    ("TWILIO_ACCOUNT_SID", "twilio.account_sid"),
    ("TWILIO_AUTH_TOKEN", "twilio.auth_token"),
    ("TWILIO_NUMBER", "twilio.from_number"),
    ("OPENAI_API_KEY", "openai.api_key"),
    ("PUBLIC_URL", "public_url"),
];

/// Loading or checking the settings failed. Every message is one line that names the setting
/// and says how to set it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Transparent: with `{0}` and a source, an error chain printer (anyhow's `{:#}` in
    // main) printed the same message twice.
    #[error(transparent)]
    Engine(#[from] switchboard_actors::config::ConfigError),
    #[error("{setting}: not a setting{origin}; {hint}")]
    Unknown {
        setting: String,
        origin: String,
        hint: String,
    },
    #[error("{setting}: {problem} (set {how})")]
    Server {
        setting: &'static str,
        problem: String,
        how: &'static str,
    },
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("{setting}: {message}{origin}")]
    Invalid {
        setting: String,
        message: String,
        origin: String,
    },
}

/// Environment variables as figment values. Values stay strings (numbers and booleans are
/// read leniently at extraction), so a token or a phone number made of digits is never
/// turned into a number.
struct EnvSource {
    name: &'static str,
    entries: Vec<(String, String, String)>, // (setting key, variable name, value)
}

impl EnvSource {
    fn switchboard() -> EnvSource {
        let entries = std::env::vars()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix("SWITCHBOARD_")?;
                if rest == "CONFIG" || rest.is_empty() {
                    return None;
                }
                let key = rest.to_ascii_lowercase().replace("__", ".");
                Some((key, name, value))
            })
            .collect();
        EnvSource {
            name: "SWITCHBOARD_* environment",
            entries,
        }
    }

    fn usual() -> EnvSource {
        let entries = USUAL_NAMES
            .iter()
            .filter_map(|(var, key)| {
                let value = std::env::var(var).ok()?;
                Some(((*key).to_owned(), (*var).to_owned(), value))
            })
            .collect();
        EnvSource {
            name: "environment",
            entries,
        }
    }
}

impl Provider for EnvSource {
    fn metadata(&self) -> Metadata {
        let names: Vec<(String, String)> = self
            .entries
            .iter()
            .map(|(k, n, _)| (k.clone(), n.clone()))
            .collect();
        Metadata::named(self.name).interpolater(move |_profile, keys| {
            let key = keys.join(".");
            names
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, n)| n.clone())
                .unwrap_or(key)
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, _, value) in &self.entries {
            let v = if LIST_KEYS.contains(&key.as_str()) {
                let items: Vec<Value> = value
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(|s| s.trim().trim_matches('"').to_owned())
                    .filter(|s| !s.is_empty())
                    .map(Value::from)
                    .collect();
                Value::from(items)
            } else {
                Value::from(value.clone())
            };
            let nested = figment::util::nest(key, v)
                .into_dict()
                .expect("a non-empty key nests into a dict");
            dict = merge_dicts(dict, nested);
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn merge_dicts(mut a: Dict, b: Dict) -> Dict {
    for (k, v) in b {
        match (a.remove(&k), v) {
            (Some(Value::Dict(t, old)), Value::Dict(_, new)) => {
                a.insert(k, Value::Dict(t, merge_dicts(old, new)));
            }
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
    a
}

impl Config {
    /// Where the config file is looked for: `explicit` (from `--config`), else
    /// `SWITCHBOARD_CONFIG`, else `./config.toml`. The second value says whether it must exist.
    pub fn file_path(explicit: Option<&Path>) -> (PathBuf, bool) {
        if let Some(p) = explicit {
            return (p.to_owned(), true);
        }
        if let Some(p) = std::env::var_os("SWITCHBOARD_CONFIG") {
            return (PathBuf::from(p), true);
        }
        (PathBuf::from("config.toml"), false)
    }

    /// The layered sources: defaults ← config file ← usual env names ← `SWITCHBOARD_*` env.
    pub fn figment(explicit: Option<&Path>) -> Result<Figment, ConfigError> {
        let (path, required) = Self::file_path(explicit);
        let mut figment = Figment::new();
        if path.exists() {
            figment = figment.merge(Toml::file_exact(&path));
        } else if required {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                message: "does not exist (give an existing file with --config or SWITCHBOARD_CONFIG, or none to use ./config.toml when present)".into(),
            });
        }
        let prefixed = EnvSource::switchboard();
        for (key, name, _) in &prefixed.entries {
            if let Some((section, rest)) = key.split_once('_')
                && !key.contains('.')
                && SECTIONS.contains(&section)
            {
                return Err(ConfigError::Invalid {
                    setting: format!("{section}.{rest}"),
                    message: format!("{name} is not a setting; nesting takes a double underscore"),
                    origin: format!(
                        " (set SWITCHBOARD_{}__{})",
                        section.to_ascii_uppercase(),
                        rest.to_ascii_uppercase()
                    ),
                });
            }
        }
        Ok(figment.merge(EnvSource::usual()).merge(prefixed))
    }

    /// Loads the settings without checking that the accounts are configured (see
    /// [`Config::validate`]); fails only on values that cannot be read.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        Self::from_figment(&Self::figment(explicit)?)
    }

    pub fn from_figment(figment: &Figment) -> Result<Config, ConfigError> {
        check_known(figment)?;
        let engine = figment
            .extract_lossy::<EngineConfig>()
            .map_err(|e| invalid(e, ""))?;
        let server = figment
            .focus("server")
            .extract_lossy::<ServerConfig>()
            .map_err(|e| invalid(e, "server"))?;
        let mut store = figment
            .focus("store")
            .extract_lossy::<StoreConfig>()
            .map_err(|e| invalid(e, "store"))?;
        // A relative data_dir written in a config file means "next to this file", whatever the
        // working directory the server was started in.
        if store.data_dir.is_relative()
            && let Some(md) = figment.find_metadata("store.data_dir")
            && let Some(figment::Source::File(file)) = &md.source
            && let Some(folder) = file.parent()
        {
            let folder = std::path::absolute(folder).unwrap_or_else(|_| folder.to_owned());
            store.data_dir = folder.join(&store.data_dir);
        }
        Ok(Config {
            engine,
            server,
            store,
        })
    }

    /// Everything needed to place real calls: the engine's accounts plus the server checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.engine.validate()?;
        Ok(())
    }

    /// The HTTP frontend's own checks: a parseable bind address, and a token when the bind
    /// is reachable from other machines.
    pub fn validate_server(&self) -> Result<(), ConfigError> {
        let bind = self.server.bind.trim();
        let host = bind
            .rsplit_once(':')
            .map(|(h, _)| h)
            .ok_or_else(|| ConfigError::Server {
                setting: "server.bind",
                problem: format!("must be host:port like 127.0.0.1:8080, got '{bind}'"),
                how: "SWITCHBOARD_SERVER__BIND or [server] bind in config.toml",
            })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let has_token = self
            .server
            .api_token
            .as_ref()
            .is_some_and(|t| !t.expose_secret().trim().is_empty());
        if self.server.api_token.is_some() && !has_token {
            return Err(ConfigError::Server {
                setting: "server.api_token",
                problem: "is set but empty; a blank token would let nobody (or anybody) in".into(),
                how: "SWITCHBOARD_SERVER__API_TOKEN to a long random string, or leave it unset on a loopback bind",
            });
        }
        if !loopback && !has_token {
            return Err(ConfigError::Server {
                setting: "server.api_token",
                problem: format!(
                    "is required because server.bind '{bind}' is not a loopback address"
                ),
                how: "SWITCHBOARD_SERVER__API_TOKEN, or bind to 127.0.0.1",
            });
        }
        Ok(())
    }
}

/// Where a key's value came from: ` (in config.toml)` or ` (from SWITCHBOARD_X)`.
fn origin_of(figment: &Figment, key: &str) -> String {
    let Some(md) = figment.find_metadata(key) else {
        return String::new();
    };
    match &md.source {
        Some(figment::Source::File(p)) => format!(" (in {})", p.display()),
        _ => {
            let keys: Vec<&str> = key.split('.').collect();
            format!(" (from {})", md.interpolate(&Profile::Default, &keys))
        }
    }
}

/// Refuses any key that is not a setting, naming the nearest valid one (and its variable).
fn check_known(figment: &Figment) -> Result<(), ConfigError> {
    // A file that does not parse is reported by the extraction, which names the file.
    let Ok(mut data) = figment.data() else {
        return Ok(());
    };
    let data = data.remove(&Profile::Default).unwrap_or_default();
    let top: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| !s.contains('.'))
        .copied()
        .collect();
    for (key, value) in &data {
        if top.contains(&key.as_str()) {
            continue;
        }
        if SECTIONS.contains(&key.as_str()) {
            let Value::Dict(_, inner) = value else {
                return Err(ConfigError::Unknown {
                    setting: key.clone(),
                    origin: origin_of(figment, key),
                    hint: format!("[{key}] is a section of settings, not a value"),
                });
            };
            let prefix = format!("{key}.");
            let known: Vec<&str> = SETTINGS
                .iter()
                .filter_map(|s| s.strip_prefix(prefix.as_str()))
                .collect();
            for sub in inner.keys() {
                if known.contains(&sub.as_str()) {
                    continue;
                }
                let setting = format!("{key}.{sub}");
                let hint = match nearest(sub, known.iter().copied()) {
                    Some(n) => format!(
                        "did you mean {key}.{n} ({})? accepted in [{key}]: {}",
                        env_name(&format!("{key}.{n}")),
                        known.join(", ")
                    ),
                    None => format!("accepted in [{key}]: {}", known.join(", ")),
                };
                return Err(ConfigError::Unknown {
                    origin: origin_of(figment, &setting),
                    setting,
                    hint,
                });
            }
            continue;
        }
        // Neither a top-level setting nor a section: a misspelled section, or a misspelled
        // top-level key (SWITCHBOARD_PUBLIC_ULR).
        let hint = if let Value::Dict(_, inner) = value {
            let full = inner
                .keys()
                .next()
                .and_then(|k| nearest(&format!("{key}.{k}"), SETTINGS.iter().copied()));
            match (nearest(key, SECTIONS.iter().copied()), full) {
                (Some(n), Some(f)) if f.starts_with(&format!("{n}.")) => format!(
                    "did you mean the section [{n}] ({f}, {})? accepted sections: {}",
                    env_name(f),
                    SECTIONS.join(", ")
                ),
                (Some(n), _) => format!(
                    "did you mean the section [{n}]? accepted sections: {}",
                    SECTIONS.join(", ")
                ),
                (None, _) => format!("accepted sections: {}", SECTIONS.join(", ")),
            }
        } else {
            let words = key.replace('_', " ");
            let best = nearest(key, SETTINGS.iter().copied()).or_else(|| {
                nearest(
                    &words,
                    SETTINGS.iter().copied().filter(|s| !s.contains('.')),
                )
            });
            match best {
                Some(n) => format!(
                    "did you mean {n} ({})? accepted: {}, and the sections {}",
                    env_name(n),
                    top.join(", "),
                    SECTIONS.join(", ")
                ),
                None => format!(
                    "accepted: {}, and the sections {}",
                    top.join(", "),
                    SECTIONS.join(", ")
                ),
            }
        };
        let setting = match value {
            Value::Dict(_, inner) => match inner.keys().next() {
                Some(k) => format!("{key}.{k}"),
                None => key.clone(),
            },
            _ => key.clone(),
        };
        return Err(ConfigError::Unknown {
            origin: origin_of(figment, &setting),
            setting: if matches!(value, Value::Dict(..)) {
                format!("[{key}]")
            } else {
                setting
            },
            hint,
        });
    }
    Ok(())
}

/// One line naming the setting, what was wrong and where the value came from.
fn invalid(e: figment::Error, section: &str) -> ConfigError {
    let mut path: Vec<String> = Vec::new();
    if !section.is_empty() {
        path.push(section.to_owned());
    }
    path.extend(e.path.iter().cloned());
    if path.is_empty() {
        // Not about one setting: the file itself could not be read or parsed.
        let file = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            Some(figment::Source::File(p)) => p.display().to_string(),
            _ => "settings".to_owned(),
        };
        return ConfigError::File {
            path: file,
            message: e
                .kind
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        };
    }
    let setting = path.join(".");
    let origin = match &e.metadata {
        Some(md) => {
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            match &md.source {
                Some(figment::Source::File(p)) => format!(" (in {})", p.display()),
                _ if !keys.is_empty() => {
                    format!(" (from {})", md.interpolate(&Profile::Default, &keys))
                }
                _ => format!(" (from {})", md.name),
            }
        }
        None => String::new(),
    };
    let message = e
        .kind
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    ConfigError::Invalid {
        setting,
        message,
        origin,
    }
}
