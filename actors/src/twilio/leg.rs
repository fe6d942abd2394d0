//! TwilioLeg: owns one Media Streams WebSocket (the engine is the server; Twilio connects).
//!
//! The reader forwards callee audio to the model as `input_audio_buffer.append` without
//! decoding it; the writer forwards agent audio as `media` and follows each chunk with a
//! `mark` named `{epoch}:{item}:{bytes}`, so mark echoes say exactly how much of which item
//! the callee has heard (8 bytes = 1 ms). A `clear` bumps the epoch, so echoes of marks it
//! flushed cannot be mistaken for playback.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::call::messages::{CallMsg, MediaEvent, ToTwilio};

pub enum TwilioLegMsg {
    /// The callee started talking: if agent audio is still queued at Twilio, clear it and
    /// answer with the item and how many ms of it were heard.
    BargeIn(RpcReplyPort<Option<(String, u64)>>),
    /// The call is ending: which item is playing and how many ms of it were heard, if any.
    Heard(RpcReplyPort<Option<(String, u64)>>),
}

pub struct TwilioLegArgs {
    /// Which of the call's streams this is, so its events are told from a replaced one's.
    pub stream: u64,
    pub socket: WebSocket,
    pub token: String,
    pub call: ActorRef<CallMsg>,
    pub to_model: mpsc::Sender<String>,
    /// Shared with the call's next stream (after keys are pressed): each leg's writer holds
    /// it while it runs, so agent audio queued between two streams waits for the next.
    pub from_model: Arc<Mutex<mpsc::Receiver<ToTwilio>>>,
}

pub struct TwilioLeg;

pub struct TwilioLegState {
    control: mpsc::UnboundedSender<Ctl>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

enum Ctl {
    BargeIn(RpcReplyPort<Option<(String, u64)>>),
    Heard(RpcReplyPort<Option<(String, u64)>>),
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

impl Actor for TwilioLeg {
    type Msg = TwilioLegMsg;
    type State = TwilioLegState;
    type Arguments = TwilioLegArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        args: TwilioLegArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (mut sink, mut stream) = args.socket.split();
        let (control, mut control_rx) = mpsc::unbounded_channel::<Ctl>();
        let (sid_tx, sid_rx) = oneshot::channel::<String>();
        let (mark_tx, mut mark_rx) = mpsc::unbounded_channel::<String>();
        let call = args.call.clone();
        let stream_no = args.stream;
        let token = args.token;
        let to_model = args.to_model;
        let close_ctl = control.clone();

        let reader = tokio::spawn(async move {
            let mut sid_tx = Some(sid_tx);
            let mut started = false;
            let ev = loop {
                let Some(Ok(msg)) = stream.next().await else {
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
                match head.event.as_ref() {
                    "media" if started => {
                        let Ok(m) = serde_json::from_str::<MediaMsg>(text.as_str()) else {
                            continue;
                        };
                        let mut out = String::with_capacity(m.media.payload.len() + 48);
                        out.push_str(r#"{"type":"input_audio_buffer.append","audio":""#);
                        out.push_str(&m.media.payload);
                        out.push_str(r#""}"#);
                        if to_model.send(out).await.is_err() {
                            break MediaEvent::Dropped;
                        }
                    }
                    "start" if !started => {
                        let v: serde_json::Value =
                            serde_json::from_str(text.as_str()).unwrap_or_default();
                        let given = v["start"]["customParameters"]["token"]
                            .as_str()
                            .unwrap_or("");
                        let ok = !token.is_empty()
                            && bool::from(given.as_bytes().ct_eq(token.as_bytes()));
                        let stream_sid = v["start"]["streamSid"]
                            .as_str()
                            .or(v["streamSid"].as_str())
                            .unwrap_or("")
                            .to_owned();
                        if !ok || stream_sid.is_empty() {
                            let _ = close_ctl.send(Ctl::Close);
                            break MediaEvent::Rejected;
                        }
                        started = true;
                        if let Some(tx) = sid_tx.take() {
                            let _ = tx.send(stream_sid.clone());
                        }
                        let _ = call.cast(CallMsg::Media(
                            stream_no,
                            MediaEvent::Started { stream_sid },
                        ));
                    }
                    "mark" => {
                        let v: serde_json::Value =
                            serde_json::from_str(text.as_str()).unwrap_or_default();
                        if let Some(name) = v["mark"]["name"].as_str() {
                            let _ = mark_tx.send(name.to_owned());
                        }
                    }
                    "dtmf" => {
                        let v: serde_json::Value =
                            serde_json::from_str(text.as_str()).unwrap_or_default();
                        if let Some(d) = v["dtmf"]["digit"].as_str() {
                            let _ = call
                                .cast(CallMsg::Media(stream_no, MediaEvent::Dtmf(d.to_owned())));
                        }
                    }
                    "stop" => break MediaEvent::Stopped,
                    "connected" => {}
                    "start" | "media" => {}
                    other => tracing::debug!(event = other, "unknown media event ignored"),
                }
            };
            if matches!(ev, MediaEvent::Rejected) {
                tracing::warn!("media socket refused: missing, wrong or reused token");
            }
            let _ = call.cast(CallMsg::Media(stream_no, ev));
        });

        let from_model = args.from_model;
        let writer = tokio::spawn(async move {
            let close = |code: u16, reason: &'static str| {
                Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }))
            };
            // Nothing may be sent before `start` names the stream.
            let sid = tokio::select! {
                s = sid_rx => s.ok(),
                c = control_rx.recv() => { if let Some(Ctl::BargeIn(r) | Ctl::Heard(r)) = c { let _ = r.send(None); } None }
            };
            let Some(sid) = sid else {
                let _ = sink.send(close(1008, "stream token refused")).await;
                return;
            };
            // The previous stream's writer lets go when its leg stops.
            let mut from_model = from_model.lock_owned().await;
            let mut epoch: u64 = 0;
            let mut item = String::new();
            let mut sent: u64 = 0;
            let mut played: u64 = 0;
            let mut pending: usize = 0;
            let mut drains: Vec<oneshot::Sender<bool>> = Vec::new();
            // The last barge-in's cut, until audio of another item comes: the cut item's late
            // audio is dropped, and if the call ends before the model confirms the truncate,
            // the cut is still known.
            let mut cut: Option<(String, u64)> = None;
            loop {
                tokio::select! {
                    biased;
                    c = control_rx.recv() => match c {
                        Some(Ctl::BargeIn(reply)) => {
                            if pending == 0 || item.is_empty() {
                                let _ = reply.send(None);
                                continue;
                            }
                            let msg = format!(r#"{{"event":"clear","streamSid":"{sid}"}}"#);
                            if sink.send(Message::Text(msg.into())).await.is_err() { return; }
                            let heard = heard_so_far(&item, played, sent);
                            cut = Some(heard.clone());
                            let _ = reply.send(Some(heard));
                            epoch += 1;
                            pending = 0;
                            item.clear();
                            for d in drains.drain(..) { let _ = d.send(false); }
                        }
                        Some(Ctl::Heard(reply)) => {
                            let playing = pending > 0 && !item.is_empty();
                            let heard = if playing { Some(heard_so_far(&item, played, sent)) } else { cut.clone() };
                            let _ = reply.send(heard);
                        }
                        Some(Ctl::Close) | None => {
                            let _ = sink.send(close(1000, "call ended")).await;
                            let _ = sink.close().await;
                            return;
                        }
                    },
                    m = mark_rx.recv() => {
                        let Some(name) = m else { continue };
                        let mut parts = name.splitn(3, ':');
                        let (Some(e), Some(bytes), Some(it)) = (parts.next(), parts.next(), parts.next()) else { continue };
                        if e.parse::<u64>().ok() != Some(epoch) { continue; }
                        if it == item && let Ok(b) = bytes.parse::<u64>() { played = played.max(b); }
                        pending = pending.saturating_sub(1);
                        if pending == 0 { for d in drains.drain(..) { let _ = d.send(true); } }
                    }
                    a = from_model.recv() => match a {
                        Some(ToTwilio::Audio { item_id, payload }) => {
                            // The rest of a line the callee cut off must not play: the model
                            // sent it before it learnt of the barge-in.
                            if cut.as_ref().is_some_and(|(c, _)| *c == item_id) { continue; }
                            cut = None;
                            if item_id != item {
                                item = item_id;
                                sent = 0;
                                played = 0;
                            }
                            sent += b64_len(&payload);
                            let mut media = String::with_capacity(payload.len() + 96);
                            media.push_str(r#"{"event":"media","streamSid":""#);
                            media.push_str(&sid);
                            media.push_str(r#"","media":{"payload":""#);
                            media.push_str(&payload);
                            media.push_str(r#""}}"#);
                            let mark = format!(r#"{{"event":"mark","streamSid":"{sid}","mark":{{"name":"{epoch}:{sent}:{item}"}}}}"#);
                            if sink.send(Message::Text(media.into())).await.is_err() { return; }
                            if sink.send(Message::Text(mark.into())).await.is_err() { return; }
                            pending += 1;
                        }
                        Some(ToTwilio::Drain(tx)) => if pending == 0 { let _ = tx.send(true); } else { drains.push(tx); },
                        None => std::future::pending::<()>().await,
                    },
                }
            }
        });
        Ok(TwilioLegState {
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
        match msg {
            TwilioLegMsg::BargeIn(reply) => {
                let _ = state.control.send(Ctl::BargeIn(reply));
            }
            TwilioLegMsg::Heard(reply) => {
                let _ = state.control.send(Ctl::Heard(reply));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let control = &state.control;
        crate::call::stop_socket(&state.reader, state.writer.take(), || {
            let _ = control.send(Ctl::Close);
        })
        .await;
        Ok(())
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
