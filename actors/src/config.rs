//! Engine settings. The binary fills these from figment (file + env); an embedding program
//! builds them directly. Every field has a serde default so partial files work; `validate`
//! says which required setting is missing and how to set it.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// The base URL at which Twilio reaches this engine's webhooks and media socket, e.g.
    /// `https://calls.example.com`. Signatures are checked against it, never the Host header.
    pub public_url: String,
    pub twilio: TwilioConfig,
    pub openai: OpenAiConfig,
    pub calls: CallPolicy,
    pub agent: AgentConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: SecretString,
    /// E.164 number calls are placed from.
    pub from_number: String,
    /// Base URL of the REST API (the simulator plugs in here).
    pub api_base: String,
    /// Ask Twilio for answering-machine detection (`MachineDetection=DetectMessageEnd`).
    pub machine_detection: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct OpenAiConfig {
    pub api_key: SecretString,
    /// WebSocket URL of the Realtime endpoint, without `?model=`.
    pub realtime_url: String,
    pub model: String,
    pub voice: String,
    /// Model that transcribes the callee (`audio.input.transcription.model`).
    pub transcription_model: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct CallPolicy {
    /// Calls that may be live at once; more are refused with a clear error.
    pub max_concurrent: usize,
    /// Length cap when the request names none (seconds).
    pub default_max_duration_secs: u32,
    /// The largest cap a request may ask for (seconds).
    pub max_duration_limit_secs: u32,
    /// Added to the cap for Twilio's `TimeLimit`, so Twilio ends a call the engine lost.
    pub time_limit_margin_secs: u32,
    /// How long the phone may ring (Twilio `Timeout`).
    pub ring_timeout_secs: u32,
    /// Destination prefixes allowed (E.164, e.g. `+1`); empty = all.
    pub allowed_prefixes: Vec<String>,
    /// Destination prefixes refused even if allowed (premium rate …).
    pub denied_prefixes: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct AgentConfig {
    /// Who the agent says it calls for when the request gives no name.
    pub on_behalf_of: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            public_url: "http://127.0.0.1:8080".into(),
            twilio: TwilioConfig::default(),
            openai: OpenAiConfig::default(),
            calls: CallPolicy::default(),
            agent: AgentConfig::default(),
        }
    }
}

impl Default for TwilioConfig {
    fn default() -> Self {
        TwilioConfig {
            account_sid: String::new(),
            auth_token: SecretString::from(String::new()),
            from_number: String::new(),
            api_base: "https://api.twilio.com".into(),
            machine_detection: false,
        }
    }
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            api_key: SecretString::from(String::new()),
            realtime_url: "wss://api.openai.com/v1/realtime".into(),
            model: "gpt-realtime".into(),
            voice: "marin".into(),
            transcription_model: "gpt-4o-mini-transcribe".into(),
        }
    }
}

impl Default for CallPolicy {
    fn default() -> Self {
        CallPolicy {
            max_concurrent: 100,
            default_max_duration_secs: 180,
            max_duration_limit_secs: 3600,
            time_limit_margin_secs: 30,
            ring_timeout_secs: 30,
            allowed_prefixes: Vec::new(),
            // Premium-rate and satellite ranges that an assistant should never dial.
            denied_prefixes: vec!["+1900".into(), "+1976".into(), "+881".into(), "+882".into()],
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            on_behalf_of: "my client".into(),
        }
    }
}

/// A required setting is missing or malformed. The message names the setting and how to set it.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem} (set {how})")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
    pub how: &'static str,
}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let need = |ok: bool, setting, problem: &str, how| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError {
                    setting,
                    problem: problem.into(),
                    how,
                })
            }
        };
        need(
            self.public_url.starts_with("http://") || self.public_url.starts_with("https://"),
            "public_url",
            "must be an http(s) URL Twilio can reach",
            "PUBLIC_URL or SWITCHBOARD_PUBLIC_URL",
        )?;
        need(
            self.twilio.account_sid.starts_with("AC") && self.twilio.account_sid.len() == 34,
            "twilio.account_sid",
            "must be a 34-character Account SID starting with AC",
            "TWILIO_ACCOUNT_SID or SWITCHBOARD_TWILIO__ACCOUNT_SID",
        )?;
        need(
            !self.twilio.auth_token.expose_secret().is_empty(),
            "twilio.auth_token",
            "is missing",
            "TWILIO_AUTH_TOKEN or SWITCHBOARD_TWILIO__AUTH_TOKEN",
        )?;
        need(
            self.twilio
                .from_number
                .parse::<crate::validate::PhoneNumber>()
                .is_ok(),
            "twilio.from_number",
            "must be an E.164 number like +14155550123",
            "TWILIO_NUMBER or SWITCHBOARD_TWILIO__FROM_NUMBER",
        )?;
        need(
            !self.openai.api_key.expose_secret().is_empty(),
            "openai.api_key",
            "is missing",
            "OPENAI_API_KEY or SWITCHBOARD_OPENAI__API_KEY",
        )?;
        need(
            self.openai.realtime_url.starts_with("ws://")
                || self.openai.realtime_url.starts_with("wss://"),
            "openai.realtime_url",
            "must be a ws:// or wss:// URL",
            "SWITCHBOARD_OPENAI__REALTIME_URL",
        )?;
        need(
            self.calls.max_concurrent > 0,
            "calls.max_concurrent",
            "must be at least 1",
            "SWITCHBOARD_CALLS__MAX_CONCURRENT",
        )?;
        Ok(())
    }
}
