//! The `Engine` facade: the one handle frontends and embedding programs hold.
//!
//! It is a cheap `Clone` (an actor ref, the event bus and the config), so an rmcp handler or an
//! axum state can carry it per request. Reads (status, transcript, list) come from the store's
//! projection, so they also answer for calls from before a restart.

use std::sync::Arc;
use std::time::Duration;

use crate::config::EngineConfig;
use crate::events::{EventBus, EventStream};
use crate::model::{CallFilter, CallId, CallRecord, CallRequest, CallState, TranscriptTurn};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed or refused by policy; the message says what is accepted.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no call with id {0}")]
    NotFound(CallId),
    #[error(
        "{active} calls are already live, the configured limit (calls.max_concurrent); try again when one ends"
    )]
    AtCapacity { active: usize },
    #[error("the engine is shutting down and accepts no new calls")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What `cancel` did.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelOutcome {
    /// True when this request ended the call; false when it had already ended.
    pub canceled: bool,
    pub state: CallState,
    pub message: String,
}

/// A status callback as the webhook frontend parsed it (already signature-checked).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CarrierUpdate {
    pub call_sid: String,
    /// Twilio's `CallStatus`: queued, initiated, ringing, in-progress, completed, busy,
    /// no-answer, failed, canceled.
    pub status: String,
    pub answered_by: Option<String>,
    pub duration_secs: Option<u64>,
    /// Twilio's `SequenceNumber`, to drop late and duplicate callbacks.
    pub sequence: Option<u64>,
    pub error_code: Option<String>,
}

#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) bus: EventBus,
}

impl Engine {
    /// Starts the supervisor and the event writer over `store`, and reconciles calls the store
    /// says were live when the engine last stopped.
    pub async fn start(config: EngineConfig, store: Arc<dyn Store>) -> Result<Engine, EngineError> {
        let _ = (config, store);
        unimplemented!("engine helper")
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Validates and admits a call; returns as soon as it is admitted (never waits for ringing).
    pub async fn place_call(&self, request: CallRequest) -> Result<CallId, EngineError> {
        let _ = request;
        unimplemented!("engine helper")
    }

    pub async fn status(&self, id: CallId) -> Result<CallRecord, EngineError> {
        self.inner
            .bus
            .store()
            .call(id)
            .await?
            .ok_or(EngineError::NotFound(id))
    }

    pub async fn transcript(&self, id: CallId) -> Result<Vec<TranscriptTurn>, EngineError> {
        self.status(id).await?;
        Ok(self.inner.bus.store().transcript(id).await?)
    }

    pub async fn list(&self, filter: CallFilter) -> Result<Vec<CallRecord>, EngineError> {
        Ok(self.inner.bus.store().calls(&filter).await?)
    }

    /// Cancels while dialing (carrier `canceled`) or hangs up while connected. Canceling an
    /// ended call is not an error: the answer says it had already ended.
    pub async fn cancel(&self, id: CallId) -> Result<CancelOutcome, EngineError> {
        let _ = id;
        unimplemented!("engine helper")
    }

    /// Live events for one call or all, starting now.
    pub fn subscribe(&self, call: Option<CallId>) -> EventStream {
        self.inner.bus.subscribe(call, None)
    }

    /// Events after sequence number `after` from the log, then live, without gap or duplicate.
    pub fn subscribe_after(&self, call: Option<CallId>, after: u64) -> EventStream {
        self.inner.bus.subscribe(call, Some(after))
    }

    /// Returns when the call has ended or `timeout` passed, with the record as it then is.
    pub async fn wait(&self, id: CallId, timeout: Duration) -> Result<CallRecord, EngineError> {
        let mut events = self.subscribe(Some(id));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let rec = self.status(id).await?;
            if rec.state.is_terminal() {
                return Ok(rec);
            }
            tokio::select! {
                ev = events.next() => if ev.is_none() { return self.status(id).await },
                _ = tokio::time::sleep_until(deadline) => return self.status(id).await,
            }
        }
    }

    /// Hangs up every live call, writes their final state, and stops the supervisor.
    pub async fn shutdown(&self) {
        unimplemented!("engine helper")
    }

    // ---- carrier-facing entry points, called by the webhook frontend ----

    /// Checks `X-Twilio-Signature` for a request Twilio made to `path_and_query` (relative to
    /// `public_url`) with form `params`.
    pub fn verify_twilio_signature(
        &self,
        path_and_query: &str,
        params: &[(String, String)],
        signature: &str,
    ) -> bool {
        let _ = (path_and_query, params, signature);
        unimplemented!("engine helper")
    }

    /// The TwiML Twilio should run when `id` is answered.
    pub async fn twiml(
        &self,
        id: CallId,
        answered_by: Option<String>,
    ) -> Result<String, EngineError> {
        let _ = (id, answered_by);
        unimplemented!("engine helper")
    }

    pub async fn carrier_update(
        &self,
        id: CallId,
        update: CarrierUpdate,
    ) -> Result<(), EngineError> {
        let _ = (id, update);
        unimplemented!("engine helper")
    }

    /// Hands an upgraded Twilio media socket to the call's actor. The socket is checked
    /// (token in `start.customParameters`) by the call, which closes it if it is not its own.
    pub async fn media_connected(
        &self,
        id: CallId,
        socket: axum::extract::ws::WebSocket,
    ) -> Result<(), EngineError> {
        let _ = (id, socket);
        unimplemented!("engine helper")
    }
}
