//! Protocol violations the simulator caught in what a client sent it.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Which interface the offending message arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// Twilio REST API requests.
    TwilioRest,
    /// TwiML the client returned from a webhook.
    Twiml,
    /// Messages the client sent on a Media Streams socket.
    Media,
    /// Messages the client sent on a Realtime socket.
    Realtime,
}

#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub side: Side,
    /// CallSid (Twilio side) or session id (model side), when known.
    pub call: Option<String>,
    /// A short stable name for the rule broken, e.g. `mark-without-name`.
    pub rule: String,
    /// What was wrong, in words.
    pub message: String,
    /// The offending message (truncated).
    pub offending: String,
}

#[derive(Clone, Default)]
pub struct Violations {
    inner: Arc<Mutex<Vec<Violation>>>,
}

impl Violations {
    pub fn record(
        &self,
        side: Side,
        call: Option<&str>,
        rule: &str,
        message: impl Into<String>,
        offending: &str,
    ) {
        let offending: String = offending.chars().take(600).collect();
        let v = Violation {
            side,
            call: call.map(str::to_owned),
            rule: rule.to_owned(),
            message: message.into(),
            offending,
        };
        tracing::warn!(side = ?v.side, call = ?v.call, rule = %v.rule, "simulator: protocol violation: {}", v.message);
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    }

    pub fn all(&self) -> Vec<Violation> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
