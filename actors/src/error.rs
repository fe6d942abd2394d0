//! What the engine answers when it cannot do what a frontend asked. Each variant's message is
//! written for the person (or model) who asked: what was wrong and what is accepted.

use crate::data::CallId;
use crate::store::StoreError;
use crate::validate::RequestError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed or refused by policy; the message says what is accepted.
    #[error("{0}")]
    InvalidRequest(RequestError),
    #[error("no call with id {0}")]
    NotFound(CallId),
    #[error(
        "{active} calls are already live, the configured limit (calls.max_concurrent); try again when one ends"
    )]
    AtCapacity { active: usize },
    #[error("the engine is shutting down and accepts no new calls")]
    ShuttingDown,
    /// The event writer has stopped, so nothing about a call could be recorded.
    #[error(
        "the engine's event log writer has stopped, so no call can be recorded; it accepts no new calls until restarted (see its log for why)"
    )]
    EventLogStopped,
    /// The store refuses appends; the writer holds the events and keeps retrying.
    #[error(
        "the engine's event log cannot be written ({0}); events are held and retried, and no new call is accepted until the store takes writes again"
    )]
    EventLogFailing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The innermost cause of an error chain: what actually went wrong (a refused connection, a
/// timeout), which is what a person reading the reason needs.
pub(crate) fn root_cause(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        msg = c.to_string();
        cur = c.source();
    }
    msg
}
