//! CallActor: one per call. Owns the state machine and the two legs, turns carrier, media
//! and model events into machine inputs, and carries out the machine's effects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::messages::{CallMsg, MediaEvent, ModelEvent, ToTwilio};
use super::state::{Effect, Input, Machine};
use crate::call::types::CancelOutcome;
use crate::config::EngineConfig;
use crate::data::{
    CallId, CallRequest, EventKind, NewEvent, Outcome, OutcomeStatus, Speaker, Usage,
};
use crate::error::root_cause;
use crate::events::EventBus;
use crate::realtime::input::ModelInput;
use crate::realtime::{
    self, ToModel,
    leg::{ModelLeg, ModelLegArgs, ModelLegMsg},
};
use crate::twilio::leg::{TwilioLeg, TwilioLegArgs, TwilioLegMsg};
use crate::twilio::rest::{CreateCall, TwilioRest};
use crate::twilio::{twiml, urls};

/// Audio frames that may queue between the legs before the sender waits (~10 s of 20 ms frames).
const AUDIO_QUEUE: usize = 512;

/// How long the carrier may take to play keys and open the next stream: 32 half-second `w`
/// pauses are 16 s, the rest is room for the tones and the new connection.
const RESTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Facts the supervisor needs if this actor dies without finishing: shared, not messaged,
/// because a panicked actor cannot answer.
#[derive(Default)]
pub struct CallShared {
    pub carrier_sid: Mutex<Option<String>>,
    pub ended: AtomicBool,
}

pub struct CallArgs {
    pub id: CallId,
    pub request: CallRequest,
    pub config: Arc<EngineConfig>,
    pub bus: EventBus,
    pub rest: TwilioRest,
    pub shared: Arc<CallShared>,
    /// Where the call's own spawned work (REST requests, playback waits) runs, so the
    /// engine's shutdown waits for it instead of dropping a hang-up half-way.
    pub tasks: TaskTracker,
}

pub struct CallActor;

type Timer = JoinHandle<Result<(), ractor::MessagingErr<CallMsg>>>;

/// What the CallActor holds while its call runs.
pub struct CallActorState {
    id: CallId,
    request: CallRequest,
    config: Arc<EngineConfig>,
    bus: EventBus,
    rest: TwilioRest,
    shared: Arc<CallShared>,
    tasks: TaskTracker,
    machine: Machine,
    /// The single-use token the next media stream must present; cleared once a stream
    /// started with it, or when no stream will come for it.
    token: String,
    token_issued: bool,
    model: Option<ActorRef<ModelLegMsg>>,
    /// The model session is open, so it can say which agent lines are still held.
    model_ready: bool,
    twilio: Option<ActorRef<TwilioLegMsg>>,
    /// The model socket's input, which each media stream writes callee audio to.
    model_input: ModelInput,
    /// The call's agent audio while no media stream holds it (before the first, and
    /// between two when keys are pressed). It moves into a stream's leg and back out.
    from_model: Option<mpsc::Receiver<ToTwilio>>,
    /// Waits for the model leg to hand over its half of the channels.
    model_args: Option<mpsc::Sender<ToTwilio>>,
    stream_started: Option<Instant>,
    /// The max-duration and restream timers; aborted when the call stops.
    timers: Vec<Timer>,
    /// The current media stream has presented its token (`start`); until then it is only a
    /// candidate, and one that goes away leaves the call waiting for the genuine stream.
    stream_live: bool,
    /// Keys are on their way (waiting for the words before them to play, or the redirect):
    /// the agent cannot press more until they are.
    keys_pending: bool,
    /// Cancelled when the actor stops, so work it spawned (a redirect for keys) is not sent
    /// for a call that is over.
    stopping: tokio_util::sync::CancellationToken,
    last_carrier_seq: Option<u64>,
    usage: Usage,
    /// Key presses that swapped the stream, so a late timer for an earlier swap is ignored.
    restreams: u64,
    /// Media streams taken so far; the newest is the current one.
    streams: u64,
    pending_function: Option<(String, Option<tokio::sync::oneshot::Receiver<bool>>)>,
    span: tracing::Span,
}

fn new_token() -> String {
    // Two ULIDs' worth of randomness (160 bits): unguessable, URL- and XML-safe.
    format!("{}{}", ulid::Ulid::generate(), ulid::Ulid::generate()).to_lowercase()
}

impl CallActorState {
    fn emit(&self, kind: EventKind) {
        self.bus.emit(NewEvent::now(self.id, kind));
    }

    fn agent_said(&self, text: String, interrupted: bool) {
        self.emit(EventKind::Transcript {
            speaker: Speaker::Agent,
            text,
            offset_ms: self.offset_ms(),
            interrupted,
        });
    }

    /// Lets the current media stream go (keys were pressed and a new stream replaces it, or
    /// it was refused). Drained, not stopped: the agent audio handed to it may still sit in
    /// its mailbox, and a stop would drop it with the mailbox.
    fn let_stream_go(&mut self) {
        if let Some(leg) = self.twilio.take() {
            let _ = leg.drain();
        }
        self.stream_live = false;
    }

    fn offset_ms(&self) -> u64 {
        self.stream_started
            .map(|t| t.elapsed().as_millis() as u64)
            .unwrap_or(0)
    }

    /// Answers the agent's tool call. After an error the agent is asked to go on (and can
    /// correct itself); after success it waits, as the tool's description tells it.
    fn tool_reply(&self, call_id: &str, out: &serde_json::Value) {
        if let Some(m) = &self.model {
            let _ = m.cast(ModelLegMsg::Send(ToModel::FunctionOutput {
                call_id: call_id.to_owned(),
                output: out.clone(),
            }));
            if out.get("error").is_some() {
                let _ = m.cast(ModelLegMsg::Send(ToModel::ResponseCreate));
            }
        }
    }

    fn max_secs(&self) -> u64 {
        u64::from(
            self.request
                .max_duration_secs
                .unwrap_or(self.config.calls.default_max_duration_secs),
        )
    }
}

impl Actor for CallActor {
    type Msg = CallMsg;
    type State = CallActorState;
    type Arguments = CallArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<CallMsg>,
        a: CallArgs,
    ) -> Result<CallActorState, ActorProcessingErr> {
        let (to_twilio_tx, from_model_rx) = mpsc::channel(AUDIO_QUEUE);
        let span = tracing::info_span!("call", id = %a.id);
        Ok(CallActorState {
            id: a.id,
            request: a.request,
            config: a.config,
            bus: a.bus,
            rest: a.rest,
            shared: a.shared,
            tasks: a.tasks,
            machine: Machine::default(),
            token: new_token(),
            token_issued: false,
            model: None,
            model_ready: false,
            twilio: None,
            model_input: ModelInput::default(),
            from_model: Some(from_model_rx),
            model_args: Some(to_twilio_tx),
            stream_started: None,
            timers: Vec::new(),
            stream_live: false,
            keys_pending: false,
            stopping: tokio_util::sync::CancellationToken::new(),
            last_carrier_seq: None,
            usage: Usage::default(),
            restreams: 0,
            streams: 0,
            pending_function: None,
            span,
        })
    }

    async fn post_start(
        &self,
        me: ActorRef<CallMsg>,
        s: &mut CallActorState,
    ) -> Result<(), ActorProcessingErr> {
        // Open the model session while the phone rings, so the agent can greet at once. The
        // leg connects in its own task: this mailbox stays free for a cancel meanwhile.
        let to_twilio = s.model_args.take().expect("set in pre_start");
        let args = ModelLegArgs {
            url: format!(
                "{}?model={}",
                s.config.openai.realtime_url, s.config.openai.model
            ),
            api_key: s.config.openai.api_key.clone(),
            session_update: realtime::session_update(&s.config, &s.request),
            call: me.clone(),
            to_twilio,
            input: s.model_input.clone(),
        };
        let span = s.span.clone();
        match Actor::spawn_linked(None, ModelLeg, args, me.get_cell())
            .instrument(span.clone())
            .await
        {
            Ok((leg, _)) => s.model = Some(leg),
            Err(e) => {
                let reason = format!("could not start the model session: {}", root_cause(&e));
                self.apply(&me, s, Input::ModelFailed { reason }).await;
                return Ok(());
            }
        }
        let base = s.config.public_url.trim_end_matches('/').to_owned();
        let id = s.id.to_string();
        let rest = s.rest.clone();
        let to = s.request.to.clone();
        let from = s
            .request
            .from
            .clone()
            .unwrap_or_else(|| s.config.twilio.from_number.clone());
        let timeout = s.config.calls.ring_timeout_secs;
        let limit = s.max_secs() as u32 + s.config.calls.time_limit_margin_secs;
        let amd = s.config.twilio.machine_detection;
        let me2 = me.clone();
        s.tasks.spawn(
            async move {
                let req = CreateCall {
                    to: &to,
                    from: &from,
                    url: &urls::voice_url(&base, &id),
                    status_callback: &urls::status_url(&base, &id),
                    timeout_secs: timeout,
                    time_limit_secs: limit,
                    machine_detection: amd,
                };
                let r = rest.create(&req).await;
                let _ = me2.cast(CallMsg::CarrierCreated(r));
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<CallMsg>,
        msg: CallMsg,
        s: &mut CallActorState,
    ) -> Result<(), ActorProcessingErr> {
        let span = s.span.clone();
        self.on_msg(me, msg, s).instrument(span).await
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<CallMsg>,
        ev: SupervisionEvent,
        s: &mut CallActorState,
    ) -> Result<(), ActorProcessingErr> {
        // A leg that dies ends the call cleanly; its socket reader has usually reported why.
        if let SupervisionEvent::ActorFailed(cell, err) = ev {
            let reason = format!("a call leg failed: {err}");
            let model = s
                .model
                .as_ref()
                .is_some_and(|m| m.get_id() == cell.get_id());
            let media = s
                .twilio
                .as_ref()
                .is_some_and(|t| t.get_id() == cell.get_id());
            let input = if model {
                Input::ModelFailed { reason }
            } else if media {
                Input::StreamDropped
            } else {
                return Ok(()); // a stream already replaced
            };
            self.apply(&me, s, input).await;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        me: ActorRef<CallMsg>,
        s: &mut CallActorState,
    ) -> Result<(), ActorProcessingErr> {
        s.stopping.cancel();
        for t in s.timers.drain(..) {
            t.abort();
        }
        if !s.machine.ended {
            // Stopped from outside (supervisor shutdown) without finishing: finish now.
            self.apply(&me, s, Input::Shutdown).await;
        }
        // Legs close their sockets with proper close frames in their own post_stop.
        me.stop_children_and_wait(Some("call ended".into()), Some(Duration::from_secs(3)))
            .await;
        Ok(())
    }
}

impl CallActor {
    async fn on_msg(
        &self,
        me: ActorRef<CallMsg>,
        msg: CallMsg,
        s: &mut CallActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CallMsg::CarrierCreated(Ok(res)) => {
                *s.shared
                    .carrier_sid
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(res.sid.clone());
                s.emit(EventKind::Carrier {
                    status: res.status.clone(),
                    call_sid: Some(res.sid.clone()),
                    answered_by: None,
                    duration_secs: None,
                });
                self.apply(&me, s, Input::CarrierCreated { sid: res.sid })
                    .await;
            }
            CallMsg::CarrierCreated(Err(e)) => {
                let reason = e.to_string();
                self.apply(&me, s, Input::CarrierRejected { reason }).await;
            }
            CallMsg::Carrier(u) => {
                if let (Some(seq), Some(last)) = (u.sequence, s.last_carrier_seq)
                    && seq <= last
                {
                    return Ok(()); // late or duplicate callback
                }
                if u.sequence.is_some() {
                    s.last_carrier_seq = u.sequence;
                }
                s.emit(EventKind::Carrier {
                    status: u.status.clone(),
                    call_sid: Some(u.call_sid.clone()),
                    answered_by: u.answered_by.clone(),
                    duration_secs: u.duration_secs,
                });
                self.apply(&me, s, Input::CarrierStatus { status: u.status })
                    .await;
            }
            CallMsg::Twiml(reply) => {
                // The token is handed out once; a second fetch (a retry, or a forger who got
                // past the signature check) gets a TwiML that hangs up.
                let xml = if s.machine.ended || s.token_issued {
                    twiml::hangup()
                } else {
                    s.token_issued = true;
                    let id = s.id.to_string();
                    twiml::connect_stream(
                        &urls::media_url(&s.config.public_url, &id),
                        &id,
                        &s.token,
                    )
                };
                let _ = reply.send(xml);
            }
            CallMsg::MediaSocket(socket) => {
                if s.machine.restreaming && !s.token.is_empty() {
                    // The carrier was redirected, and its new stream may beat the old one's
                    // `stop` to us: the old one is done.
                    s.let_stream_go();
                }
                let refusal = if s.machine.ended {
                    Some("the call is over")
                } else if s.twilio.is_some() {
                    Some("the call already has a media stream")
                } else if s.token.is_empty() {
                    Some("no stream is expected for this call")
                } else {
                    None
                };
                if let Some(why) = refusal {
                    tracing::warn!("media socket refused: {why}");
                    s.tasks.spawn(crate::twilio::leg::refuse(*socket, why));
                    return Ok(());
                }
                s.streams += 1;
                let args = TwilioLegArgs {
                    stream: s.streams,
                    socket: *socket,
                    token: s.token.clone(),
                    call: me.clone(),
                    to_model: s.model_input.clone(),
                    from_model: s.from_model.take(),
                };
                match Actor::spawn_linked(None, TwilioLeg, args, me.get_cell()).await {
                    Ok((leg, _)) => {
                        s.twilio = Some(leg);
                        s.stream_live = false;
                    }
                    Err(e) => tracing::error!("media leg failed to start: {}", root_cause(&e)),
                }
            }
            CallMsg::AudioReleased(stream, rx) => match &s.twilio {
                // The stream now current is a later one, waiting for the audio.
                Some(leg) if stream != s.streams => {
                    if let Err(ractor::MessagingErr::SendErr(TwilioLegMsg::Audio(rx))) =
                        leg.cast(TwilioLegMsg::Audio(rx))
                    {
                        s.from_model = Some(rx);
                    }
                }
                _ => s.from_model = Some(rx),
            },
            // What a replaced stream says on its way out changes nothing.
            CallMsg::Media(stream, _) if stream != s.streams => {}
            CallMsg::Media(_, MediaEvent::Started { .. }) => {
                s.token.clear(); // spent
                s.stream_live = true;
                if s.stream_started.is_none() {
                    // The call's clock and time limit start with its first stream only.
                    s.stream_started = Some(Instant::now());
                    let secs = s.max_secs();
                    let timer = me.send_after(Duration::from_secs(secs), || CallMsg::MaxDuration);
                    s.timers.push(timer);
                }
                self.apply(&me, s, Input::StreamStarted).await;
            }
            CallMsg::Media(_, MediaEvent::Dtmf(d)) => s.emit(EventKind::Dtmf { digits: d }),
            CallMsg::Media(_, MediaEvent::Stopped | MediaEvent::Dropped)
                if s.machine.restreaming =>
            {
                s.let_stream_go()
            }
            // A socket that went away before presenting the token was never the call's
            // stream: the genuine one may still come.
            CallMsg::Media(_, MediaEvent::Stopped | MediaEvent::Dropped) if !s.stream_live => {
                tracing::warn!(
                    "a media socket ended before its start; still waiting for the stream"
                );
                s.let_stream_go();
            }
            CallMsg::Media(_, MediaEvent::Stopped) => {
                self.apply(&me, s, Input::StreamStopped).await
            }
            CallMsg::Media(_, MediaEvent::Dropped) => {
                self.apply(&me, s, Input::StreamDropped).await
            }
            CallMsg::Media(_, MediaEvent::Rejected) => {
                // Its writer closes it with 1008; the genuine stream may still come.
                s.let_stream_go();
                s.emit(EventKind::Error {
                    message: "a media stream with a missing or wrong token was refused".into(),
                });
            }
            CallMsg::Model(ev) => self.on_model(&me, s, ev).await,
            CallMsg::Drained => self.apply(&me, s, Input::PlaybackDrained).await,
            CallMsg::Redirecting => {
                // Before the redirect leaves: the current stream's end is expected from now on.
                self.apply(&me, s, Input::Restream).await
            }
            CallMsg::KeysSent {
                call_id,
                digits,
                result,
            } => {
                s.keys_pending = false;
                let out = match result {
                    Ok(()) => {
                        let generation = s.restreams;
                        let timer = me.send_after(RESTREAM_TIMEOUT, move || {
                            CallMsg::RestreamTimeout(generation)
                        });
                        s.timers.push(timer);
                        serde_json::json!({
                        "ok": true,
                        "pressed": digits,
                        "next": "The keys were played. Wait in silence for what the other side says next."
                        })
                    }
                    Err(e) => {
                        s.token.clear(); // no stream will come for it
                        self.apply(&me, s, Input::RestreamFailed).await;
                        s.emit(EventKind::Error {
                            message: format!("could not press keys {digits}: {e}"),
                        });
                        serde_json::json!({"error": format!("the keys could not be pressed: {e}")})
                    }
                };
                s.tool_reply(&call_id, &out);
            }
            CallMsg::RestreamTimeout(generation) if generation == s.restreams => {
                self.apply(&me, s, Input::RestreamTimedOut).await
            }
            CallMsg::RestreamTimeout(_) => {} // for an earlier swap
            CallMsg::Cancel(reply) => {
                let was = s.machine.state;
                self.apply(&me, s, Input::Cancel).await;
                let _ = reply.send(CancelOutcome {
                    canceled: true,
                    state: s.machine.state,
                    message: format!("the call was canceled while {was}"),
                });
            }
            CallMsg::MaxDuration => {
                let secs = s.max_secs();
                self.apply(&me, s, Input::MaxDuration { secs }).await;
            }
            CallMsg::Shutdown(reply) => {
                self.apply(&me, s, Input::Shutdown).await;
                let _ = reply.send(());
            }
            CallMsg::Panic => panic!("injected panic (test hook)"),
        }
        Ok(())
    }
}

impl CallActor {
    async fn on_model(&self, me: &ActorRef<CallMsg>, s: &mut CallActorState, ev: ModelEvent) {
        match ev {
            ModelEvent::Connected => s.model_ready = true,
            ModelEvent::AgentSaid { text, interrupted } => s.agent_said(text, interrupted),
            ModelEvent::CalleeSaid(text) => {
                let offset_ms = s.offset_ms();
                s.emit(EventKind::Transcript {
                    speaker: Speaker::Callee,
                    text,
                    offset_ms,
                    interrupted: false,
                });
            }
            ModelEvent::FunctionCall {
                name,
                call_id,
                arguments,
                drained,
            } => {
                s.emit(EventKind::ToolCall {
                    name: name.clone(),
                    arguments: arguments.clone(),
                });
                if name == "end_call" {
                    let status = match arguments["outcome"].as_str() {
                        Some("success") => OutcomeStatus::Success,
                        Some("failure") => OutcomeStatus::Failure,
                        _ => OutcomeStatus::Unknown,
                    };
                    let summary = arguments["summary"].as_str().unwrap_or("").to_owned();
                    let mut outcome = Outcome::new(status, summary);
                    outcome.data = Some(arguments);
                    if let Some(m) = &s.model {
                        let _ = m.cast(ModelLegMsg::Send(ToModel::FunctionOutput {
                            call_id: call_id.clone(),
                            output: serde_json::json!({"ok": true}),
                        }));
                    }
                    s.pending_function = Some((call_id, drained));
                    self.apply(me, s, Input::AgentEnded { outcome }).await;
                } else if name == "send_dtmf" {
                    self.send_dtmf(me, s, call_id, &arguments, drained).await;
                } else {
                    s.tool_reply(
                        &call_id,
                        &serde_json::json!({"error": format!("unknown tool '{name}'")}),
                    );
                }
            }
            ModelEvent::Usage(u) => {
                s.usage.input_tokens += u.input_tokens;
                s.usage.output_tokens += u.output_tokens;
                s.usage.total_tokens += u.total_tokens;
            }
            ModelEvent::Error(message) => {
                tracing::warn!("model error: {message}");
                s.emit(EventKind::Error {
                    message: format!("model: {message}"),
                });
            }
            ModelEvent::Closed(reason) => self.apply(me, s, Input::ModelFailed { reason }).await,
        }
    }

    /// Presses keys for a phone menu: once the agent's words before it have played, the
    /// carrier is redirected to `<Play digits>` and a new `<Connect><Stream>` with a fresh
    /// token. The model session stays up across the two streams.
    async fn send_dtmf(
        &self,
        me: &ActorRef<CallMsg>,
        s: &mut CallActorState,
        call_id: String,
        arguments: &serde_json::Value,
        drained: Option<tokio::sync::oneshot::Receiver<bool>>,
    ) {
        let digits = arguments["digits"].as_str().unwrap_or("").to_owned();
        // Why the keys cannot be pressed, if they cannot: told to the agent, never dialed.
        let refusal = twiml::check_digits(&digits)
            .err()
            .map(|e| e.to_string())
            .or_else(|| s.machine.restream_refusal().map(str::to_owned))
            .or_else(|| {
                s.keys_pending
                    .then(|| "keys are already being pressed; wait for them to finish".to_owned())
            });
        let sid = match (refusal, s.machine.carrier_sid.clone()) {
            (None, Some(sid)) => sid,
            (why, _) => {
                let why = why.unwrap_or_else(|| "the carrier has not named the call yet".into());
                return s.tool_reply(&call_id, &serde_json::json!({ "error": why }));
            }
        };
        s.keys_pending = true;
        s.restreams += 1;
        s.token = new_token();
        let id = s.id.to_string();
        let xml = twiml::play_digits_then_connect(
            &digits,
            &urls::media_url(&s.config.public_url, &id),
            &id,
            &s.token,
        );
        let rest = s.rest.clone();
        let me = me.clone();
        let stopping = s.stopping.clone();
        s.tasks.spawn(
            async move {
                if let Some(rx) = drained {
                    // Bounded, as for end_call: a stalled socket must not hold the keys.
                    let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
                }
                // The call may have ended while the words before the keys played.
                if stopping.is_cancelled() || me.cast(CallMsg::Redirecting).is_err() {
                    return;
                }
                let result = rest.redirect(&sid, &xml).await.map(|_| ());
                let _ = me.cast(CallMsg::KeysSent {
                    call_id,
                    digits,
                    result,
                });
            }
            .instrument(s.span.clone()),
        );
    }

    /// Before the call's end is written: agent lines still held (their audio was playing when
    /// the call ended) go into the transcript with what was heard of them. Bounded, as a leg
    /// may already be gone.
    async fn last_lines(&self, s: &mut CallActorState) {
        const ASK: Option<Duration> = Some(Duration::from_millis(500));
        let Some(model) = s.model.clone().filter(|_| s.model_ready) else {
            return; // a session that never opened said nothing
        };
        let playing = match &s.twilio {
            Some(t) => match t.call(TwilioLegMsg::Heard, ASK).await {
                Ok(ractor::rpc::CallResult::Success(p)) => p,
                _ => None,
            },
            None => None,
        };
        let lines = match model
            .call(|r| ModelLegMsg::LastLines(playing, r), ASK)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(lines)) => lines,
            _ => return,
        };
        for line in lines {
            s.agent_said(line.text, line.interrupted);
        }
    }

    /// Feeds the machine and carries out what it says.
    async fn apply(&self, me: &ActorRef<CallMsg>, s: &mut CallActorState, input: Input) {
        for effect in s.machine.step(input) {
            match effect {
                Effect::Publish {
                    state,
                    detail,
                    reason,
                } => s.emit(EventKind::State {
                    state,
                    detail,
                    reason,
                }),
                Effect::Greet => {
                    if let Some(m) = &s.model {
                        let _ = m.cast(ModelLegMsg::Send(ToModel::ResponseCreate));
                    }
                }
                Effect::AwaitPlayback => {
                    let rx = s.pending_function.as_mut().and_then(|(_, rx)| rx.take());
                    let me = me.clone();
                    s.tasks.spawn(async move {
                        if let Some(rx) = rx {
                            // Bounded: a stalled socket must not keep the call open forever.
                            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
                        }
                        let _ = me.cast(CallMsg::Drained);
                    });
                }
                Effect::HangUp { cancel } => {
                    let sid = s.machine.carrier_sid.clone();
                    let rest = s.rest.clone();
                    if let Some(sid) = sid {
                        s.tasks.spawn(
                            async move {
                                let r = if cancel {
                                    // `canceled` does nothing to an answered call: follow up.
                                    match rest.set_status(&sid, "canceled").await {
                                        Ok(c) if c.status == "canceled" => Ok(()),
                                        _ => rest.hang_up(&sid).await,
                                    }
                                } else {
                                    rest.hang_up(&sid).await
                                };
                                if let Err(e) = r {
                                    tracing::error!("could not hang up the carrier call: {e}");
                                }
                            }
                            .instrument(s.span.clone()),
                        );
                    }
                }
                Effect::Finish {
                    state,
                    detail,
                    reason,
                    outcome,
                } => {
                    s.shared.ended.store(true, Ordering::SeqCst);
                    self.last_lines(s).await;
                    let duration_secs =
                        s.stream_started.map(|t| t.elapsed().as_secs()).unwrap_or(0);
                    tracing::info!(state = %state, ?detail, "call ended: {reason}");
                    s.emit(EventKind::Ended {
                        state,
                        detail,
                        reason: Some(reason),
                        outcome: Some(outcome),
                        duration_secs,
                        usage: s.usage.clone(),
                    });
                    me.stop(Some("call finished".into()));
                }
            }
        }
    }
}
