//! The `Engine` facade: the one handle frontends and embedding programs hold.
//!
//! It is a cheap `Clone` (an actor ref, the event bus and the config), so an rmcp handler or an
//! axum state can carry it per request. Reads (status, transcript, list) come from the store's
//! projection, so they also answer for calls from before a restart.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio_util::task::TaskTracker;

use crate::call::messages::CallMsg;
use crate::call::types::{CancelOutcome, CarrierUpdate};
use crate::config::EngineConfig;
use crate::data::{CallFilter, CallId, CallRecord, CallRequest, TranscriptTurn};
use crate::error::EngineError;
use crate::events::{EventBus, EventStream};
use crate::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use crate::twilio::rest::TwilioRest;
use secrecy::ExposeSecret;

use crate::store::Store;

#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) bus: EventBus,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    /// Every task the engine's actors spawn (REST requests, playback waits); shutdown
    /// waits for them, bounded.
    pub(crate) tasks: TaskTracker,
    /// The event writer's handle: whether it runs is told by its channel (`EventBus::
    /// is_running`); the handle is kept so a test can stop it as a crash would.
    pub(crate) writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How long shutdown waits for in-flight carrier requests (a hang-up) to finish.
const SHUTDOWN_TASKS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for its events to be durable before it answers anyway.
const REQUEST_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a frontend waits for the supervisor or a call to answer.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

fn rpc<T>(r: Result<CallResult<T>, ractor::MessagingErr<impl Sized>>) -> Result<T, EngineError> {
    match r {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(EngineError::Internal(
            "the engine did not answer in time".into(),
        )),
        Ok(CallResult::SenderError) | Err(_) => Err(EngineError::ShuttingDown),
    }
}

impl Engine {
    /// Starts the supervisor and the event writer over `store`, and reconciles calls the store
    /// says were live when the engine last stopped.
    pub async fn start(config: EngineConfig, store: Arc<dyn Store>) -> Result<Engine, EngineError> {
        config
            .validate()
            .map_err(|e| EngineError::Config(e.to_string()))?;
        let config = Arc::new(config);
        let rest = TwilioRest::new(&config.twilio);
        // Calls the log says were live when the engine last stopped have nobody running
        // them: end them at the carrier and write their final state before taking new ones.
        let recovered = crate::recovery::reconcile(store.as_ref(), &rest)
            .await
            .map_err(|crate::recovery::RecoveryError::Store(s)| EngineError::Store(s))?;
        if !recovered.is_empty() {
            tracing::warn!(
                calls = recovered.len(),
                "reconciled calls left unfinished by the last run"
            );
        }
        let (bus, writer) = EventBus::start(store);
        let tasks = TaskTracker::new();
        let args = SupervisorArgs {
            config: config.clone(),
            bus: bus.clone(),
            rest,
            tasks: tasks.clone(),
        };
        let (supervisor, _) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| EngineError::Internal(format!("the supervisor did not start: {e}")))?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                config,
                bus,
                supervisor,
                tasks,
                writer: std::sync::Mutex::new(Some(writer)),
            }),
        })
    }

    async fn lookup(&self, id: CallId) -> Result<Option<ActorRef<CallMsg>>, EngineError> {
        rpc(self
            .inner
            .supervisor
            .call(|r| SupervisorMsg::Lookup(id, r), Some(RPC_TIMEOUT))
            .await)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Whether the engine can take calls: `Err` says why not (the event writer stopped, or the
    /// store refuses appends).
    pub fn health(&self) -> Result<(), EngineError> {
        if !self.inner.bus.is_running() {
            return Err(EngineError::EventLogStopped);
        }
        match self.inner.bus.append_failure() {
            Some(why) => Err(EngineError::EventLogFailing(why)),
            None => Ok(()),
        }
    }

    /// Validates and admits a call; returns as soon as it is admitted (never waits for ringing).
    pub async fn place_call(&self, request: CallRequest) -> Result<CallId, EngineError> {
        let id = rpc(self
            .inner
            .supervisor
            .call(|r| SupervisorMsg::Place(request, r), Some(RPC_TIMEOUT))
            .await)??;
        // The record is readable as soon as place_call returns, unless the store is refusing
        // writes: then the call (already dialing) is not held up; its events are held by the
        // writer and its record appears when the store takes them.
        self.flush_bounded().await;
        Ok(id)
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
        if let Some(call) = self.lookup(id).await?
            && let Ok(CallResult::Success(out)) =
                call.call(CallMsg::Cancel, Some(RPC_TIMEOUT)).await
        {
            self.flush_bounded().await;
            return Ok(out);
        }
        let rec = self.status(id).await?;
        Ok(CancelOutcome {
            canceled: false,
            state: rec.state,
            message: format!(
                "the call had already ended ({}); nothing to cancel",
                rec.state
            ),
        })
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
        let live = rpc(self
            .inner
            .supervisor
            .call(SupervisorMsg::Drain, Some(RPC_TIMEOUT))
            .await)
        .unwrap_or_default();
        for call in live {
            let _ = call
                .call(CallMsg::Shutdown, Some(Duration::from_secs(5)))
                .await;
        }
        self.flush_for_shutdown().await;
        // Calls still closing their sockets get to finish (a parent that stops kills its
        // children, skipping their post_stop): stop them first, and wait.
        self.inner
            .supervisor
            .stop_children_and_wait(
                Some("engine shutdown".into()),
                Some(Duration::from_secs(10)),
            )
            .await;
        let _ = self
            .inner
            .supervisor
            .stop_and_wait(
                Some("engine shutdown".into()),
                Some(Duration::from_secs(10)),
            )
            .await;
        // Hang-ups the calls just asked for are still on their way to the carrier.
        self.inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_TASKS_TIMEOUT, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                left = self.inner.tasks.len(),
                "carrier requests still running after {} s; shutting down without them",
                SHUTDOWN_TASKS_TIMEOUT.as_secs()
            );
        }
        self.flush_for_shutdown().await;
    }

    /// Waits (bounded) for what a request just emitted to be durable, so the caller reads it.
    async fn flush_bounded(&self) {
        if !self.inner.bus.flush_within(REQUEST_FLUSH_TIMEOUT).await {
            tracing::warn!(
                why = self.inner.bus.append_failure().unwrap_or_default(),
                "the event log is not taking writes; answering before the events are durable"
            );
        }
    }

    /// Waits for the log to take what was emitted, but not forever: a store that keeps
    /// refusing writes (the writer holds and retries them) must not keep the process from
    /// exiting. What is still held then is lost, and said so.
    async fn flush_for_shutdown(&self) {
        if !self.inner.bus.flush_within(SHUTDOWN_TASKS_TIMEOUT).await {
            tracing::error!(
                why = self.inner.bus.append_failure().unwrap_or_default(),
                "the event log still refuses writes after {} s; exiting without the events it holds",
                SHUTDOWN_TASKS_TIMEOUT.as_secs()
            );
        }
    }

    /// Test hook: stops the event writer, as a crash of it would.
    #[doc(hidden)]
    pub async fn inject_event_writer_failure(&self) {
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = writer {
            w.abort();
            let _ = w.await;
        }
    }

    /// Test hook: makes the call's actor panic, to prove a crash stays inside one call.
    #[doc(hidden)]
    pub async fn inject_panic(&self, id: CallId) -> Result<(), EngineError> {
        let call = self.lookup(id).await?.ok_or(EngineError::NotFound(id))?;
        call.cast(CallMsg::Panic)
            .map_err(|_| EngineError::NotFound(id))
    }

    // ---- carrier-facing entry points, called by the webhook frontend ----

    /// Checks `X-Twilio-Signature` for a request Twilio made to `path_and_query` (relative to
    /// `public_url`, never the Host header) with form `params`.
    pub fn verify_twilio_signature(
        &self,
        path_and_query: &str,
        params: &[(String, String)],
        signature: &str,
    ) -> bool {
        let cfg = &self.inner.config;
        let url = crate::twilio::urls::signed_url(&cfg.public_url, path_and_query);
        crate::twilio::signature::verify(
            cfg.twilio.auth_token.expose_secret(),
            &url,
            params,
            signature,
        )
    }

    /// The same for the media socket, whose signed URL is the `ws(s)://` form with no params.
    pub fn verify_media_signature(&self, path: &str, signature: &str) -> bool {
        let cfg = &self.inner.config;
        let url = crate::twilio::urls::signed_media_url(&cfg.public_url, path);
        crate::twilio::signature::verify(
            cfg.twilio.auth_token.expose_secret(),
            &url,
            &[],
            signature,
        )
    }

    /// The TwiML Twilio should run when `id` is answered.
    pub async fn twiml(
        &self,
        id: CallId,
        answered_by: Option<String>,
    ) -> Result<String, EngineError> {
        let _ = answered_by; // AMD results also arrive in status callbacks, which record them.
        match self.lookup(id).await? {
            Some(call) => rpc(call.call(CallMsg::Twiml, Some(RPC_TIMEOUT)).await),
            None => {
                self.status(id).await?;
                Ok(crate::twilio::twiml::hangup())
            }
        }
    }

    pub async fn carrier_update(
        &self,
        id: CallId,
        update: CarrierUpdate,
    ) -> Result<(), EngineError> {
        let update = match self.lookup(id).await? {
            Some(call) => match call.cast(CallMsg::Carrier(update)) {
                Ok(()) => return Ok(()),
                // The actor stopped between the lookup and now: the call has ended.
                Err(ractor::MessagingErr::SendErr(CallMsg::Carrier(update))) => update,
                Err(_) => return Ok(()),
            },
            None => update,
        };
        // A late callback for an ended call is not an error, and changes nothing but the
        // carrier's own word (`canceled`/`completed` after a cancel): record it, so
        // `carrierStatus` is final.
        let rec = self.status(id).await?;
        let same_call = rec
            .carrier_call_sid
            .as_deref()
            .is_none_or(|sid| sid == update.call_sid);
        if same_call
            && !update.status.is_empty()
            && !crate::recovery::is_live(&update.status)
            && rec.carrier_status.as_deref() != Some(update.status.as_str())
        {
            self.inner.bus.emit(crate::data::NewEvent::now(
                id,
                crate::data::EventKind::Carrier {
                    status: update.status,
                    call_sid: Some(update.call_sid),
                    answered_by: update.answered_by,
                    duration_secs: update.duration_secs,
                },
            ));
            self.flush_bounded().await;
        }
        Ok(())
    }

    /// Hands an upgraded Twilio media socket to the call's actor. The socket is checked
    /// (token in `start.customParameters`) by the call, which closes it if it is not its own.
    pub async fn media_connected(
        &self,
        id: CallId,
        socket: axum::extract::ws::WebSocket,
    ) -> Result<(), EngineError> {
        let Ok(Some(call)) = self.lookup(id).await else {
            crate::twilio::leg::refuse(socket, "no live call with this id").await;
            return Err(EngineError::NotFound(id));
        };
        if let Err(ractor::MessagingErr::SendErr(CallMsg::MediaSocket(socket))) =
            call.cast(CallMsg::MediaSocket(Box::new(socket)))
        {
            crate::twilio::leg::refuse(*socket, "the call is over").await;
            return Err(EngineError::NotFound(id));
        }
        Ok(())
    }

    /// Whether the call still has a live actor.
    pub async fn is_live(&self, id: CallId) -> bool {
        matches!(self.lookup(id).await, Ok(Some(_)))
    }
}
