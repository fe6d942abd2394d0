//! TwilioLeg: owns one Media Streams WebSocket (the engine is the server; Twilio connects).
//!
//! One task per stream reads and writes the socket. Callee audio goes onto the model socket
//! as the payload inside the frame it came in (no copy, no decode, no task hop); agent audio
//! goes out as `media`, marked (see [`super::playback`]) so mark echoes say how much of which
//! item the callee has heard. The model leg's barge-in travels in order with the audio, so a
//! `clear` cuts exactly what was queued before the callee spoke, never the first words of the
//! next item. What is ready is written together and flushed once.
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
use tokio::sync::mpsc;
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
    /// Reads and writes the socket; ends with the agent audio it held, handed back to the
    /// call in `post_stop`. Dies with the leg even if the leg is killed (no `post_stop`), so
    /// a peer that stopped reading cannot keep it, or the socket, alive.
    task: Option<AbortOnDropHandle<Option<mpsc::Receiver<ToTwilio>>>>,
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
        let (control, control_rx) = mpsc::channel::<Ctl>(CONTROL_QUEUE);
        let stream = Stream {
            no: args.stream,
            call: args.call.clone(),
            token: args.token,
            to_model: args.to_model,
        };
        let task = AbortOnDropHandle::new(tokio::spawn(stream.run(
            args.socket,
            control_rx,
            args.from_model,
        )));
        Ok(TwilioLegState {
            stream: args.stream,
            call: args.call,
            control,
            task: Some(task),
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
        let Some(mut task) = state.task.take() else {
            return Ok(());
        };
        let control = state.control.clone();
        // A bounded moment for the close frame: a peer that stopped reading must not keep the
        // task (and the agent audio it holds) alive.
        let released = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let _ = control.send(Ctl::Close).await;
            (&mut task).await.ok()
        })
        .await
        .unwrap_or_else(|_| {
            tracing::warn!("the media socket did not close within 2 s; dropped");
            task.abort();
            None
        });
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

/// One media stream: reads Twilio's events and writes agent audio, in one task, so a frame
/// crosses no task on its way (callee audio goes straight onto the model socket; mark echoes
/// and barge-ins reach the playback state where they are read).
struct Stream {
    no: u64,
    call: ActorRef<CallMsg>,
    token: String,
    to_model: ModelInput,
}

/// How a stream's reading ended, before the call lets go of it.
enum Ended {
    /// Told the call; keep answering `Heard` (frozen at this instant) until `Close`.
    Told(Instant),
    /// The call let go (`Close`) first.
    Closed,
}

impl Stream {
    /// Nothing goes to Twilio before `start` names the stream; then agent audio with marks,
    /// clears on barge-in, and a close frame at the end (1000, or 1008 for a refused token).
    /// Returns the agent audio it held, so the call's next stream can take it.
    async fn run(
        self,
        socket: WebSocket,
        mut control_rx: mpsc::Receiver<Ctl>,
        mut from_model: Option<mpsc::Receiver<ToTwilio>>,
    ) -> Option<mpsc::Receiver<ToTwilio>> {
        let (mut sink, mut stream) = socket.split();
        let sid = match self
            .start(&mut stream, &mut control_rx, &mut from_model)
            .await
        {
            Ok(sid) => sid,
            Err(refused) => {
                let frame = if refused {
                    close(1008, "stream token refused")
                } else {
                    close(1000, "call ended")
                };
                let _ = sink.send(frame).await;
                let _ = sink.close().await;
                if refused {
                    self.tell(MediaEvent::Rejected);
                }
                return from_model;
            }
        };
        let mut out = Agent {
            sid,
            playback: Playback::default(),
            wire: Outbound::default(),
        };
        // The model leg has ended (its sender is gone): keep serving control until Close.
        let mut model_gone = false;
        let ended = loop {
            tokio::select! {
                biased;
                c = control_rx.recv() => match c {
                    Some(Ctl::Heard(reply)) => { let _ = reply.send(out.playback.heard(Instant::now())); }
                    Some(Ctl::Audio(rx)) => { from_model = Some(rx); model_gone = false; }
                    Some(Ctl::Close) | None => break Ended::Closed,
                },
                m = stream.next() => {
                    let frame = match m {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            self.tell(MediaEvent::Dropped);
                            break Ended::Told(Instant::now());
                        }
                        Some(Ok(_)) => continue,
                    };
                    if let Some(ev) = self.inbound(&frame, &mut out.playback).await {
                        self.tell(ev);
                        break Ended::Told(Instant::now());
                    }
                }
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
                        if failed || sink.flush().await.is_err() {
                            self.tell(MediaEvent::Dropped);
                            break Ended::Told(Instant::now());
                        }
                    }
                    None => model_gone = true,
                },
            }
        };
        // The stream is over (or the call let go): the agent audio stays in its channel for the
        // call's next stream, and only control is answered until the call lets go.
        if let Ended::Told(at) = ended {
            while let Some(c) = control_rx.recv().await {
                match c {
                    Ctl::Heard(reply) => {
                        let _ = reply.send(out.playback.heard(at));
                    }
                    Ctl::Audio(rx) => {
                        from_model = Some(rx);
                        model_gone = false;
                    }
                    Ctl::Close => break,
                }
            }
        }
        let _ = sink.send(close(1000, "call ended")).await;
        let _ = sink.close().await;
        if model_gone { None } else { from_model }
    }

    fn tell(&self, ev: MediaEvent) {
        let _ = self.call.cast(CallMsg::Media(self.no, ev));
    }

    /// Waits for `start` and checks its token: the stream's sid, or `Err(true)` when it is
    /// refused, `Err(false)` when the socket ended or the call let go first (told to the call
    /// here, except a refusal, which goes out after the 1008 close).
    async fn start(
        &self,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
        control_rx: &mut mpsc::Receiver<Ctl>,
        from_model: &mut Option<mpsc::Receiver<ToTwilio>>,
    ) -> Result<String, bool> {
        let deadline = tokio::time::sleep(START_DEADLINE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                c = control_rx.recv() => match c {
                    Some(Ctl::Audio(rx)) => *from_model = Some(rx),
                    Some(Ctl::Heard(r)) => { let _ = r.send(None); }
                    Some(Ctl::Close) | None => return Err(false),
                },
                _ = &mut deadline => {
                    tracing::warn!(stream = self.no, "media socket refused: no start within {START_DEADLINE:?}");
                    return Err(true);
                }
                m = stream.next() => {
                    let frame = match m {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            self.tell(MediaEvent::Dropped);
                            return Err(false);
                        }
                        Some(Ok(_)) => continue,
                    };
                    let Ok(m) = wire::parse(frame.as_str()) else { continue };
                    match m.event.as_ref() {
                        "start" => match check_start(frame.as_str(), &self.token) {
                            Ok(stream_sid) => {
                                self.tell(MediaEvent::Started { stream_sid: stream_sid.clone() });
                                return Ok(stream_sid);
                            }
                            Err(why) => {
                                tracing::warn!(stream = self.no, "media socket refused: {why}");
                                return Err(true);
                            }
                        },
                        "stop" => {
                            self.tell(MediaEvent::Stopped);
                            return Err(false);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// One event of a started stream; `Some` when it ends the stream.
    async fn inbound(&self, frame: &Utf8Bytes, playback: &mut Playback) -> Option<MediaEvent> {
        let Ok(m) = wire::parse(frame.as_str()) else {
            return None;
        };
        match m.event.as_ref() {
            "media" => {
                if let Some(media) = &m.media {
                    let bytes = Bytes::from(frame.clone());
                    let payload = Payload::within(&bytes, frame.as_str(), &media.payload);
                    self.to_model.audio(payload).await;
                }
            }
            "mark" => {
                if let Some(name) = m.mark.as_ref().and_then(|k| MarkName::parse(&k.name)) {
                    playback.echo(name, Instant::now());
                }
            }
            "dtmf" => {
                if let Some(d) = &m.dtmf {
                    self.tell(MediaEvent::Dtmf(d.digit.clone().into_owned()));
                }
            }
            "stop" => return Some(MediaEvent::Stopped),
            "connected" | "start" => {}
            other => tracing::debug!(event = other, "unknown media event ignored"),
        }
        None
    }
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
