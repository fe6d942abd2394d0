//! TwilioLeg: owns one Media Streams WebSocket (the engine is the server; Twilio connects).
//!
//! The reader forwards callee audio to the model leg as the payload inside the frame it came
//! in (no copy, no decode); the writer forwards agent audio as `media`, and marks it (see
//! [`super::playback`]) so mark echoes say how much of which item the callee has heard. The
//! model leg's barge-in travels in order with the audio, so a `clear` cuts exactly what was
//! queued before the callee spoke, never the first words of the next item. What is ready is
//! written together and flushed once.
//!
//! The call's agent audio (`mpsc::Receiver<ToTwilio>`) is owned by one stream at a time: it
//! moves into this leg (at spawn, or later with [`TwilioLegMsg::Audio`] when the previous
//! stream lets go of it) and moves back out when the writer ends, so agent audio queued
//! between two streams (keys pressed) waits for the next one and nothing is shared.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::playback::{Playback, Verdict};
use super::wire::{self, MarkName, Outbound, Payload};
use crate::call::messages::{CallMsg, MediaEvent, ToTwilio};
use crate::realtime::input::ModelInput;

/// Control messages queued for the writer; what does not fit is answered at once.
const CONTROL_QUEUE: usize = 16;
/// How long a media socket may take to present its token in `start`: one that never does
/// must not hold the call's place for its genuine stream.
const START_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// Mark echoes queued from the reader for the writer.
const MARK_QUEUE: usize = 256;
/// Agent audio messages written before one flush, at most.
const BATCH: usize = 32;

pub enum TwilioLegMsg {
    /// The call is ending: which item is playing and how many ms of it were heard, if any.
    Heard(RpcReplyPort<Option<(String, u64)>>),
    /// The call's agent audio, released by the stream this one replaces.
    Audio(mpsc::Receiver<ToTwilio>),
}

pub struct TwilioLegArgs {
    /// Which of the call's streams this is, so its events are told from a replaced one's.
    pub stream: u64,
    pub socket: WebSocket,
    pub token: String,
    pub call: ActorRef<CallMsg>,
    /// The model socket's input: callee audio is written to it from here, with no hop.
    pub to_model: ModelInput,
    /// The call's agent audio, when no earlier stream still holds it.
    pub from_model: Option<mpsc::Receiver<ToTwilio>>,
}

pub struct TwilioLeg;

pub struct TwilioLegState {
    stream: u64,
    call: ActorRef<CallMsg>,
    control: mpsc::Sender<Ctl>,
    /// Both tasks die with the leg even if it is killed (no `post_stop`), so a peer that
    /// stopped reading cannot keep them, or the socket, alive.
    reader: AbortOnDropHandle<()>,
    /// Ends with the agent audio it held, handed back to the call in `post_stop`.
    writer: Option<AbortOnDropHandle<Option<mpsc::Receiver<ToTwilio>>>>,
}

enum Ctl {
    Heard(RpcReplyPort<Option<(String, u64)>>),
    Audio(mpsc::Receiver<ToTwilio>),
    Close,
}

/// Why a `start` is refused: said in the log (never the token itself).
fn check_start(text: &str, token: &str) -> Result<String, &'static str> {
    let start = wire::parse_start(text).map_err(|_| "the start message is malformed")?;
    let body = &start.start;
    let given = body
        .custom_parameters
        .as_ref()
        .and_then(|p| p.token.as_deref())
        .unwrap_or("");
    if given.is_empty() {
        return Err("the start message carries no token parameter");
    }
    if token.is_empty() || !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return Err("the token is wrong or already used");
    }
    let sid = body
        .stream_sid
        .as_deref()
        .or(start.stream_sid.as_deref())
        .unwrap_or("");
    if sid.is_empty() {
        return Err("the start message names no streamSid");
    }
    Ok(sid.to_owned())
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// A text frame of what [`Outbound`] wrote (always UTF-8: JSON around base64 and ids).
fn text(b: Bytes) -> Message {
    Message::Text(Utf8Bytes::try_from(b).unwrap_or_else(|_| Utf8Bytes::from_static("")))
}

type Sink = SplitSink<WebSocket, Message>;

/// Closes a media socket no call will take, with 1008 and why (bounded: the peer may not
/// read), so Twilio sees a refusal rather than a reset.
pub async fn refuse(mut socket: WebSocket, why: &'static str) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let _ = socket.send(close(1008, why)).await;
        let _ = SinkExt::close(&mut socket).await;
    })
    .await;
}

impl Actor for TwilioLeg {
    type Msg = TwilioLegMsg;
    type State = TwilioLegState;
    type Arguments = TwilioLegArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        args: TwilioLegArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (sink, stream) = args.socket.split();
        let (control, control_rx) = mpsc::channel::<Ctl>(CONTROL_QUEUE);
        let (sid_tx, sid_rx) = oneshot::channel::<Started>();
        let (mark_tx, mark_rx) = mpsc::channel::<MarkName>(MARK_QUEUE);
        let reader = AbortOnDropHandle::new(tokio::spawn(read(
            stream,
            args.call.clone(),
            args.stream,
            args.token,
            args.to_model,
            sid_tx,
            mark_tx,
        )));
        let writer = AbortOnDropHandle::new(tokio::spawn(write(
            sink,
            control_rx,
            sid_rx,
            mark_rx,
            args.from_model,
        )));
        Ok(TwilioLegState {
            stream: args.stream,
            call: args.call,
            control,
            reader,
            writer: Some(writer),
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ctl = match msg {
            TwilioLegMsg::Heard(reply) => Ctl::Heard(reply),
            TwilioLegMsg::Audio(rx) => Ctl::Audio(rx),
        };
        // Never wait on a writer stuck behind a peer that stopped reading: this actor must
        // stay free to stop. What cannot be queued is answered at once.
        match state.control.try_send(ctl) {
            Ok(()) => {}
            Err(
                mpsc::error::TrySendError::Full(Ctl::Audio(rx))
                | mpsc::error::TrySendError::Closed(Ctl::Audio(rx)),
            ) => {
                let _ = state.call.cast(CallMsg::AudioReleased(state.stream, rx));
            }
            Err(
                mpsc::error::TrySendError::Full(Ctl::Heard(r))
                | mpsc::error::TrySendError::Closed(Ctl::Heard(r)),
            ) => {
                let _ = r.send(None);
            }
            Err(_) => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let control = state.control.clone();
        let released = crate::call::stop_socket(&state.reader, state.writer.take(), async move {
            let _ = control.send(Ctl::Close).await;
        })
        .await;
        match released {
            Some(Some(rx)) => {
                let _ = state.call.cast(CallMsg::AudioReleased(state.stream, rx));
            }
            Some(None) => {}
            None => tracing::error!(
                stream = state.stream,
                "the media socket stalled while closing; the agent audio it held is lost"
            ),
        }
        Ok(())
    }
}

/// What the reader tells the writer of `start`: the stream's sid, or that it was refused.
/// A reader that is gone without saying (the leg stopped) means a plain close.
type Started = Result<String, ()>;

/// Reads Twilio's events until `stop`, a close or an error, then tells the call how the
/// stream ended. It never writes: a refusal goes to the writer, which closes with 1008.
async fn read(
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    call: ActorRef<CallMsg>,
    stream_no: u64,
    token: String,
    to_model: ModelInput,
    sid_tx: oneshot::Sender<Started>,
    mark_tx: mpsc::Sender<MarkName>,
) {
    let mut sid_tx = Some(sid_tx);
    let start_by = Instant::now() + START_DEADLINE;
    let ev = loop {
        let next = if sid_tx.is_some() {
            match tokio::time::timeout_at(start_by, stream.next()).await {
                Ok(n) => n,
                Err(_) => {
                    tracing::warn!(
                        stream = stream_no,
                        "media socket refused: no start within {START_DEADLINE:?}"
                    );
                    break MediaEvent::Rejected;
                }
            }
        } else {
            stream.next().await
        };
        let Some(Ok(msg)) = next else {
            break MediaEvent::Dropped;
        };
        let frame = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break MediaEvent::Dropped,
            _ => continue,
        };
        let Ok(m) = wire::parse(frame.as_str()) else {
            continue;
        };
        let started = sid_tx.is_none();
        match m.event.as_ref() {
            "media" if started => {
                let Some(media) = &m.media else { continue };
                let bytes = Bytes::from(frame.clone());
                let payload = Payload::within(&bytes, frame.as_str(), &media.payload);
                to_model.audio(payload).await;
            }
            "start" if !started => {
                let stream_sid = match check_start(frame.as_str(), &token) {
                    Ok(sid) => sid,
                    Err(why) => {
                        tracing::warn!(stream = stream_no, "media socket refused: {why}");
                        break MediaEvent::Rejected;
                    }
                };
                if let Some(tx) = sid_tx.take() {
                    let _ = tx.send(Ok(stream_sid.clone()));
                }
                let _ = call.cast(CallMsg::Media(
                    stream_no,
                    MediaEvent::Started { stream_sid },
                ));
            }
            "mark" => {
                if let Some(name) = m.mark.as_ref().and_then(|k| MarkName::parse(&k.name))
                    && mark_tx.send(name).await.is_err()
                {
                    break MediaEvent::Dropped;
                }
            }
            "dtmf" => {
                if let Some(d) = &m.dtmf {
                    let digit = d.digit.clone().into_owned();
                    let _ = call.cast(CallMsg::Media(stream_no, MediaEvent::Dtmf(digit)));
                }
            }
            "stop" => break MediaEvent::Stopped,
            "connected" | "start" | "media" => {}
            other => tracing::debug!(event = other, "unknown media event ignored"),
        }
    };
    if let (MediaEvent::Rejected, Some(tx)) = (&ev, sid_tx.take()) {
        let _ = tx.send(Err(()));
    }
    let _ = call.cast(CallMsg::Media(stream_no, ev));
}

/// Writes to Twilio: nothing before `start` names the stream, then agent audio with marks,
/// clears on barge-in, and a close frame at the end (1000, or 1008 for a refused token).
/// Returns the agent audio it held, so the call's next stream can take it.
async fn write(
    mut sink: Sink,
    mut control_rx: mpsc::Receiver<Ctl>,
    mut sid_rx: oneshot::Receiver<Started>,
    mut mark_rx: mpsc::Receiver<MarkName>,
    mut from_model: Option<mpsc::Receiver<ToTwilio>>,
) -> Option<mpsc::Receiver<ToTwilio>> {
    let sid = loop {
        tokio::select! {
            // A refusal is always seen before the Close that follows it, so the peer gets
            // 1008, not 1000.
            biased;
            s = &mut sid_rx => match s {
                Ok(Ok(sid)) => break sid,
                Ok(Err(())) => {
                    let _ = sink.send(close(1008, "stream token refused")).await;
                    let _ = sink.close().await;
                    return from_model;
                }
                // The reader is gone without a word: the socket ended or the leg stopped.
                Err(_) => {
                    let _ = sink.send(close(1000, "call ended")).await;
                    let _ = sink.close().await;
                    return from_model;
                }
            },
            c = control_rx.recv() => match c {
                Some(Ctl::Audio(rx)) => from_model = Some(rx),
                Some(Ctl::Heard(r)) => { let _ = r.send(None); }
                Some(Ctl::Close) | None => {
                    let _ = sink.send(close(1000, "call ended")).await;
                    let _ = sink.close().await;
                    return from_model;
                }
            },
        }
    };
    let mut out = Agent {
        sid,
        playback: Playback::default(),
        wire: Outbound::default(),
    };
    // The model leg has ended (its sender is gone): keep serving control until Close.
    let mut model_gone = false;
    loop {
        tokio::select! {
            biased;
            c = control_rx.recv() => match c {
                Some(Ctl::Heard(reply)) => { let _ = reply.send(out.playback.heard(Instant::now())); }
                Some(Ctl::Audio(rx)) => { from_model = Some(rx); model_gone = false; }
                Some(Ctl::Close) | None => {
                    let _ = sink.send(close(1000, "call ended")).await;
                    let _ = sink.close().await;
                    break;
                }
            },
            Some(name) = mark_rx.recv() => out.playback.echo(name, Instant::now()),
            a = recv_audio(&mut from_model), if !model_gone && from_model.is_some() => match a {
                Some(first) => {
                    // Everything already waiting goes out in one flush.
                    let mut next = Some(first);
                    let mut n = 0;
                    let mut failed = false;
                    while let Some(m) = next.take() {
                        if out.feed(m, &mut sink).await.is_err() {
                            failed = true;
                            break;
                        }
                        n += 1;
                        if n < BATCH {
                            next = from_model.as_mut().and_then(|rx| rx.try_recv().ok());
                        }
                    }
                    if failed || sink.flush().await.is_err() { break; }
                }
                None => model_gone = true,
            },
        }
    }
    if model_gone { None } else { from_model }
}

/// The writer's side of agent audio on this stream.
struct Agent {
    sid: String,
    playback: Playback,
    wire: Outbound,
}

impl Agent {
    /// Queues what one message from the model leg asks for on the socket, unflushed.
    async fn feed(&mut self, m: ToTwilio, sink: &mut Sink) -> Result<(), axum::Error> {
        let now = Instant::now();
        match m {
            ToTwilio::Audio { item, payload } => {
                match self.playback.audio(&item, payload.decoded_len(), now) {
                    Verdict::Drop => {}
                    Verdict::Play(mark) => {
                        sink.feed(text(self.wire.media(&self.sid, payload.as_bytes())))
                            .await?;
                        if let Some(mark) = mark {
                            sink.feed(text(self.wire.mark(&self.sid, mark))).await?;
                        }
                    }
                }
            }
            ToTwilio::Drain(tx) => {
                if let Some(mark) = self.playback.drain(tx) {
                    sink.feed(text(self.wire.mark(&self.sid, mark))).await?;
                }
            }
            ToTwilio::BargeIn(reply) => {
                let cut = self.playback.clear(now);
                if cut.is_some() {
                    sink.feed(text(self.wire.clear(&self.sid))).await?;
                }
                let _ = reply.send(cut);
            }
        }
        Ok(())
    }
}

async fn recv_audio(rx: &mut Option<mpsc::Receiver<ToTwilio>>) -> Option<ToTwilio> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
