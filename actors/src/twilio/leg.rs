//! TwilioLeg: owns one Media Streams WebSocket (the engine is the server; Twilio connects).
//!
//! The reader forwards callee audio to the model as `input_audio_buffer.append` without
//! decoding it; the writer forwards agent audio as `media` and follows each chunk with a
//! `mark` named `{epoch}:{bytes}:{item}`, so mark echoes say exactly how much of which item
//! the callee has heard (8 bytes = 1 ms). A `clear` bumps the epoch, so echoes of marks it
//! flushed cannot be mistaken for playback.
//!
//! The call's agent audio (`mpsc::Receiver<ToTwilio>`) is owned by one stream at a time: it
//! moves into this leg (at spawn, or later with [`TwilioLegMsg::Audio`] when the previous
//! stream lets go of it) and moves back out when the writer ends, so agent audio queued
//! between two streams (keys pressed) waits for the next one and nothing is shared.

use std::borrow::Cow;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use crate::call::messages::{CallMsg, MediaEvent, ToTwilio};

/// Control messages queued for the writer; the leg actor waits when it is full.
const CONTROL_QUEUE: usize = 16;
/// How long a media socket may take to present its token in `start`: one that never does
/// must not hold the call's place for its genuine stream.
const START_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// Mark echoes queued from the reader for the writer.
const MARK_QUEUE: usize = 256;

pub enum TwilioLegMsg {
    /// The callee started talking: if agent audio is still queued at Twilio, clear it and
    /// answer with the item and how many ms of it were heard.
    BargeIn(RpcReplyPort<Option<(String, u64)>>),
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
    /// Callee audio, as `input_audio_buffer.append` JSON, towards the model leg.
    pub to_model: mpsc::Sender<String>,
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
    BargeIn(RpcReplyPort<Option<(String, u64)>>),
    Heard(RpcReplyPort<Option<(String, u64)>>),
    Audio(mpsc::Receiver<ToTwilio>),
    Close,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
}

#[derive(Deserialize)]
struct MediaMsg<'a> {
    #[serde(borrow)]
    media: MediaBody<'a>,
}

#[derive(Deserialize)]
struct MediaBody<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct StartMsg<'a> {
    #[serde(borrow, rename = "streamSid", default)]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    start: StartBody<'a>,
}

#[derive(Deserialize)]
struct StartBody<'a> {
    #[serde(borrow, rename = "streamSid", default)]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "customParameters", default)]
    custom_parameters: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct MarkMsg<'a> {
    #[serde(borrow)]
    mark: MarkBody<'a>,
}

#[derive(Deserialize)]
struct MarkBody<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct DtmfMsg<'a> {
    #[serde(borrow)]
    dtmf: DtmfBody<'a>,
}

#[derive(Deserialize)]
struct DtmfBody<'a> {
    #[serde(borrow)]
    digit: Cow<'a, str>,
}

/// Why a `start` is refused: said in the log (never the token itself).
fn check_start(start: &StartMsg<'_>, token: &str) -> Result<String, &'static str> {
    let given = start
        .start
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
    let sid = start
        .start
        .stream_sid
        .as_deref()
        .or(start.stream_sid.as_deref())
        .unwrap_or("");
    if sid.is_empty() {
        return Err("the start message names no streamSid");
    }
    Ok(sid.to_owned())
}

/// The item playing and how many ms of it were heard (played bytes, 8 per ms; never more
/// than was sent).
fn heard_so_far(item: &str, played: u64, sent: u64) -> (String, u64) {
    (item.to_owned(), played.min(sent) / 8)
}

/// Decoded length of standard base64 text, without decoding it.
fn b64_len(s: &str) -> u64 {
    let pad = s.bytes().rev().take_while(|b| *b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(pad) as u64
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
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
        let (mark_tx, mark_rx) = mpsc::channel::<String>(MARK_QUEUE);
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
            TwilioLegMsg::BargeIn(reply) => Ctl::BargeIn(reply),
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
                mpsc::error::TrySendError::Full(Ctl::BargeIn(r) | Ctl::Heard(r))
                | mpsc::error::TrySendError::Closed(Ctl::BargeIn(r) | Ctl::Heard(r)),
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
    to_model: mpsc::Sender<String>,
    sid_tx: oneshot::Sender<Started>,
    mark_tx: mpsc::Sender<String>,
) {
    let mut sid_tx = Some(sid_tx);
    let start_by = tokio::time::Instant::now() + START_DEADLINE;
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
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break MediaEvent::Dropped,
            _ => continue,
        };
        let Ok(head) = serde_json::from_str::<Head>(text.as_str()) else {
            continue;
        };
        let started = sid_tx.is_none();
        match head.event.as_ref() {
            "media" if started => {
                let Ok(m) = serde_json::from_str::<MediaMsg>(text.as_str()) else {
                    continue;
                };
                if to_model
                    .send(crate::realtime::input_audio_append(&m.media.payload))
                    .await
                    .is_err()
                {
                    break MediaEvent::Dropped;
                }
            }
            "start" if !started => {
                let checked = serde_json::from_str::<StartMsg>(text.as_str())
                    .map_err(|_| "the start message is malformed")
                    .and_then(|s| check_start(&s, &token));
                let stream_sid = match checked {
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
                if let Ok(m) = serde_json::from_str::<MarkMsg>(text.as_str())
                    && mark_tx.send(m.mark.name.into_owned()).await.is_err()
                {
                    break MediaEvent::Dropped;
                }
            }
            "dtmf" => {
                if let Ok(d) = serde_json::from_str::<DtmfMsg>(text.as_str()) {
                    let digit = d.dtmf.digit.into_owned();
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

/// Where agent audio stands on this stream.
#[derive(Default)]
struct Playback {
    epoch: u64,
    item: String,
    sent: u64,
    played: u64,
    /// Marks sent and not yet echoed.
    pending: usize,
    drains: Vec<oneshot::Sender<bool>>,
    /// The last barge-in's cut, until audio of another item comes: the cut item's late
    /// audio is dropped, and if the call ends before the model confirms the truncate, the
    /// cut is still known.
    cut: Option<(String, u64)>,
}

impl Playback {
    fn playing(&self) -> bool {
        self.pending > 0 && !self.item.is_empty()
    }

    fn heard(&self) -> Option<(String, u64)> {
        if self.playing() {
            Some(heard_so_far(&self.item, self.played, self.sent))
        } else {
            self.cut.clone()
        }
    }

    fn on_mark(&mut self, name: &str) {
        let mut parts = name.splitn(3, ':');
        let (Some(e), Some(bytes), Some(it)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        if e.parse::<u64>().ok() != Some(self.epoch) {
            return;
        }
        if it == self.item
            && let Ok(b) = bytes.parse::<u64>()
        {
            self.played = self.played.max(b);
        }
        self.pending = self.pending.saturating_sub(1);
        if self.pending == 0 {
            for d in self.drains.drain(..) {
                let _ = d.send(true);
            }
        }
    }

    /// A clear: what was queued will not play. Answers what was heard of the cut item.
    fn clear(&mut self) -> (String, u64) {
        let heard = heard_so_far(&self.item, self.played, self.sent);
        self.cut = Some(heard.clone());
        self.epoch += 1;
        self.pending = 0;
        self.item.clear();
        for d in self.drains.drain(..) {
            let _ = d.send(false);
        }
        heard
    }
}

/// Writes to Twilio: nothing before `start` names the stream, then agent audio with marks,
/// clears on barge-in, and a close frame at the end (1000, or 1008 for a refused token).
/// Returns the agent audio it held, so the call's next stream can take it.
async fn write(
    mut sink: Sink,
    mut control_rx: mpsc::Receiver<Ctl>,
    mut sid_rx: oneshot::Receiver<Started>,
    mut mark_rx: mpsc::Receiver<String>,
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
                Some(Ctl::BargeIn(r) | Ctl::Heard(r)) => { let _ = r.send(None); }
                Some(Ctl::Close) | None => {
                    let _ = sink.send(close(1000, "call ended")).await;
                    let _ = sink.close().await;
                    return from_model;
                }
            },
        }
    };
    let mut p = Playback::default();
    // The model leg has ended (its sender is gone): keep serving control until Close.
    let mut model_gone = false;
    loop {
        tokio::select! {
            biased;
            c = control_rx.recv() => match c {
                Some(Ctl::BargeIn(reply)) => {
                    if !p.playing() {
                        let _ = reply.send(None);
                        continue;
                    }
                    let msg = format!(r#"{{"event":"clear","streamSid":"{sid}"}}"#);
                    if sink.send(Message::Text(msg.into())).await.is_err() { break; }
                    let _ = reply.send(Some(p.clear()));
                }
                Some(Ctl::Heard(reply)) => { let _ = reply.send(p.heard()); }
                Some(Ctl::Audio(rx)) => { from_model = Some(rx); model_gone = false; }
                Some(Ctl::Close) | None => {
                    let _ = sink.send(close(1000, "call ended")).await;
                    let _ = sink.close().await;
                    break;
                }
            },
            Some(name) = mark_rx.recv() => p.on_mark(&name),
            a = recv_audio(&mut from_model), if !model_gone && from_model.is_some() => match a {
                Some(ToTwilio::Audio { item_id, payload }) => {
                    // The rest of a line the callee cut off must not play: the model
                    // sent it before it learnt of the barge-in.
                    if p.cut.as_ref().is_some_and(|(c, _)| *c == item_id) { continue; }
                    p.cut = None;
                    if item_id != p.item {
                        p.item = item_id;
                        p.sent = 0;
                        p.played = 0;
                    }
                    p.sent += b64_len(&payload);
                    let mut media = String::with_capacity(payload.len() + 96);
                    media.push_str(r#"{"event":"media","streamSid":""#);
                    media.push_str(&sid);
                    media.push_str(r#"","media":{"payload":""#);
                    media.push_str(&payload);
                    media.push_str(r#""}}"#);
                    let mark = format!(r#"{{"event":"mark","streamSid":"{sid}","mark":{{"name":"{}:{}:{}"}}}}"#, p.epoch, p.sent, p.item);
                    // Both go out in one flush.
                    if sink.feed(Message::Text(media.into())).await.is_err() { break; }
                    if sink.send(Message::Text(mark.into())).await.is_err() { break; }
                    p.pending += 1;
                }
                Some(ToTwilio::Drain(tx)) => if p.pending == 0 { let _ = tx.send(true); } else { p.drains.push(tx); },
                None => model_gone = true,
            },
        }
    }
    if model_gone { None } else { from_model }
}

async fn recv_audio(rx: &mut Option<mpsc::Receiver<ToTwilio>>) -> Option<ToTwilio> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_length_without_decoding() {
        use base64::Engine as _;
        for n in [0usize, 1, 2, 3, 159, 160, 800] {
            let s = base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
            assert_eq!(super::b64_len(&s), n as u64);
        }
    }
}
