//! ModelLeg: owns one Realtime WebSocket. Its session task connects (off the CallActor's
//! mailbox, so a cancel while the model is slow to answer is handled at once), then reads
//! server events — audio for the Twilio leg over a bounded channel, control events for the
//! CallActor — and writes what the Twilio leg and the CallActor hand it. Audio crosses in the
//! frames it came in (no copy); what is ready is written together and flushed once.
//!
//! Barge-in is handled here, in order with the audio: on `speech_started` the reader puts a
//! barge-in marker behind the agent audio already queued for Twilio, and when the Twilio leg
//! answers what was heard of the cut item, the truncate goes to the model.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, SplitStream};
use futures_util::{SinkExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::ToModel;
use super::input::{ModelInput, Ws};
use super::wire;
use crate::call::messages::{CallMsg, ModelEvent, ToTwilio};
use crate::data::Usage;
use crate::error::root_cause;
use crate::realtime::spoken::{Line, Spoken};
use crate::twilio::wire::Payload;

/// How long the model endpoint may take to accept the WebSocket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Control messages queued for the writer; the leg actor waits when it is full.
const CONTROL_QUEUE: usize = 64;

pub enum ModelLegMsg {
    /// A client event for the model.
    Send(ToModel),
    /// The call is ending: the agent lines not yet written, given what is playing (item, ms
    /// heard) on the line. Lines never played are dropped: nobody heard them.
    LastLines(Option<(String, u64)>, RpcReplyPort<Vec<Line>>),
}

pub struct ModelLegArgs {
    pub url: String,
    pub api_key: SecretString,
    pub session_update: String,
    pub call: ActorRef<CallMsg>,
    /// Agent audio towards the Twilio leg.
    pub to_twilio: mpsc::Sender<ToTwilio>,
    /// The socket's write half, opened here once connected; the Twilio leg writes callee
    /// audio to it.
    pub input: ModelInput,
}

pub struct ModelLeg;

type LastLinesRequest = (Option<(String, u64)>, RpcReplyPort<Vec<Line>>);
/// An item's drain marker: resolves with the item once its audio played or was cleared.
type DrainWait = std::pin::Pin<
    Box<dyn std::future::Future<Output = (String, Result<bool, oneshot::error::RecvError>)> + Send>,
>;
/// A barge-in marker: resolves with the cut item and the ms of it heard, if one was playing.
type CutWait = oneshot::Receiver<Option<(String, u64)>>;

enum Ctl {
    Send(String),
    Close,
}

pub struct ModelLegState {
    control: mpsc::Sender<Ctl>,
    /// To the reader, which owns what the agent has said.
    last_lines: mpsc::Sender<LastLinesRequest>,
    /// Stops the reader (and a connect still under way) at its next event.
    stop_reading: CancellationToken,
    /// Connects, then reads and writes until the socket ends; it owns both halves, and dies
    /// with the leg even if the leg is killed.
    session: Option<AbortOnDropHandle<()>>,
}

impl Actor for ModelLeg {
    type Msg = ModelLegMsg;
    type State = ModelLegState;
    type Arguments = ModelLegArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        args: ModelLegArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut request = args.url.as_str().into_client_request()?;
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {}", args.api_key.expose_secret()).parse()?,
        );
        let (control, control_rx) = mpsc::channel::<Ctl>(CONTROL_QUEUE);
        let (last_lines, last_lines_rx) = mpsc::channel::<LastLinesRequest>(4);
        let stop_reading = CancellationToken::new();
        let stop = stop_reading.clone();
        let truncate = control.clone();
        let input = args.input;
        let session = AbortOnDropHandle::new(tokio::spawn(async move {
            let call = args.call.clone();
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(crate::call::SOCKET_BUFFER)
                .write_buffer_size(crate::call::SOCKET_BUFFER);
            // Nagle off: callee frames are small and 20 ms apart.
            let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
            let connected = tokio::select! {
                _ = stop.cancelled() => return,
                c = tokio::time::timeout(CONNECT_TIMEOUT, connect) => c,
            };
            let ws = match connected {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(e)) => {
                    let reason = format!("could not open the model session: {}", root_cause(&e));
                    input.close(Message::Close(None)).await;
                    let _ = call.cast(CallMsg::Model(ModelEvent::Closed(reason)));
                    return;
                }
                Err(_) => {
                    let reason = format!(
                        "could not open the model session: the model endpoint did not answer within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    );
                    input.close(Message::Close(None)).await;
                    let _ = call.cast(CallMsg::Model(ModelEvent::Closed(reason)));
                    return;
                }
            };
            let (mut sink, stream) = ws.split();
            let opened = match sink.send(Message::text(args.session_update)).await {
                Ok(()) => input.open(sink).await,
                Err(e) => {
                    input.close(Message::Close(None)).await;
                    Err(e)
                }
            };
            if let Err(e) = opened {
                let reason = format!("the model connection failed: {e}");
                let _ = call.cast(CallMsg::Model(ModelEvent::Closed(reason)));
                return;
            }
            let _ = call.cast(CallMsg::Model(ModelEvent::Connected));
            // One task, both directions: the writer keeps going after the reader ends, so
            // the close frame still goes out when the call lets go.
            tokio::join!(
                write(&input, control_rx),
                read(stream, call, args.to_twilio, last_lines_rx, stop, truncate),
            );
        }));
        Ok(ModelLegState {
            control,
            last_lines,
            stop_reading,
            session: Some(session),
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ModelLegMsg::Send(ev) => {
                // Bounded: a writer stuck behind a peer that stopped reading must not keep
                // this actor from stopping.
                let sent = state
                    .control
                    .send_timeout(Ctl::Send(ev.to_json()), Duration::from_secs(2))
                    .await;
                if sent.is_err() {
                    tracing::warn!("the model socket is not taking events; one was dropped");
                }
            }
            ModelLegMsg::LastLines(playing, reply) => {
                // Answered by the reader once connected; the caller's wait is bounded.
                let _ = state.last_lines.try_send((playing, reply));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_reading.cancel();
        let Some(mut session) = state.session.take() else {
            return Ok(());
        };
        let control = state.control.clone();
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = control.send(Ctl::Close).await;
            (&mut session).await
        })
        .await;
        if closed.is_err() {
            tracing::warn!("the model socket did not close within 2 s; dropped");
            session.abort();
        }
        Ok(())
    }
}

/// Sends control events until Close, then a normal close frame. Callee audio goes to the
/// socket without passing here (see [`ModelInput`]).
async fn write(input: &ModelInput, mut control_rx: mpsc::Receiver<Ctl>) {
    while let Some(Ctl::Send(t)) = control_rx.recv().await {
        if input.send(t).await.is_err() {
            return;
        }
    }
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "call ended".into(),
    };
    input.close(Message::Close(Some(frame))).await;
}

/// Reads server events until the socket ends or the leg stops, then says why to the call.
async fn read(
    mut stream: SplitStream<Ws>,
    call: ActorRef<CallMsg>,
    to_twilio: mpsc::Sender<ToTwilio>,
    mut last_lines_rx: mpsc::Receiver<LastLinesRequest>,
    stop: CancellationToken,
    truncate: mpsc::Sender<Ctl>,
) {
    let mut spoken = Spoken::default();
    // Drain markers behind each finished item's audio: they resolve when it has played
    // (`true`) or a barge-in cleared it (`false`, a truncate follows).
    let mut drains: FuturesUnordered<DrainWait> = FuturesUnordered::new();
    // Barge-in markers behind the agent audio queued when the callee started talking.
    let mut cuts: FuturesUnordered<CutWait> = FuturesUnordered::new();
    // The id of the item whose audio is streaming, shared by all its chunks.
    let mut item: Option<Arc<str>> = None;
    let said = |line: Line| {
        let _ = call.cast(CallMsg::Model(ModelEvent::AgentSaid {
            text: line.text,
            interrupted: line.interrupted,
        }));
    };
    let reason = loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = stream.next() => m,
            Some((item, played)) = drains.next(), if !drains.is_empty() => {
                if !matches!(played, Ok(false)) {
                    spoken.played(&item).into_iter().for_each(said);
                }
                continue;
            }
            Some(cut) = cuts.next(), if !cuts.is_empty() => {
                // Cut the agent at what the callee actually heard.
                if let Ok(Some((item_id, audio_end_ms))) = cut {
                    let ev = ToModel::Truncate { item_id, audio_end_ms };
                    if truncate.try_send(Ctl::Send(ev.to_json())).is_err() {
                        tracing::warn!("the model socket is not taking events; a truncate was dropped");
                    }
                }
                continue;
            }
            Some((playing, reply)) = last_lines_rx.recv() => {
                let _ = reply.send(spoken.last_lines(playing));
                continue;
            }
        };
        let Some(msg) = msg else {
            break "the model connection closed".to_owned();
        };
        let frame = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(frame)) => {
                break match frame {
                    Some(f) => format!(
                        "the model closed the session ({} {})",
                        u16::from(f.code),
                        f.reason
                    ),
                    None => "the model closed the session".to_owned(),
                };
            }
            Ok(_) => continue,
            Err(e) => break format!("the model connection failed: {e}"),
        };
        let Ok(ev) = wire::parse(frame.as_str()) else {
            tracing::warn!("unparseable model event ignored");
            continue;
        };
        match ev.kind.as_ref() {
            "response.output_audio.delta" => {
                let id = match &item {
                    Some(i) if **i == *ev.item_id => i.clone(),
                    _ => item.insert(Arc::from(ev.item_id.as_ref())).clone(),
                };
                let bytes = bytes::Bytes::from(frame.clone());
                let payload = Payload::within(&bytes, frame.as_str(), &ev.delta);
                spoken.audio(&id, payload.decoded_len());
                let out = ToTwilio::Audio { item: id, payload };
                if to_twilio.send(out).await.is_err() {
                    break "the media leg is gone".to_owned();
                }
            }
            "response.output_audio_transcript.delta" => {
                spoken.transcript_delta(&ev.item_id, &ev.delta)
            }
            "response.output_audio_transcript.done" => {
                spoken.done(&ev.item_id, &ev.transcript);
                let (tx, rx) = oneshot::channel();
                if to_twilio.send(ToTwilio::Drain(tx)).await.is_err() {
                    break "the media leg is gone".to_owned();
                }
                let item = ev.item_id.into_owned();
                drains.push(Box::pin(async move { (item, rx.await) }));
            }
            "conversation.item.truncated" => spoken
                .truncated(&ev.item_id, ev.audio_end_ms)
                .into_iter()
                .for_each(said),
            "input_audio_buffer.speech_started" => {
                let (tx, rx) = oneshot::channel();
                if to_twilio.send(ToTwilio::BargeIn(tx)).await.is_err() {
                    break "the media leg is gone".to_owned();
                }
                cuts.push(rx);
            }
            kind => {
                match kind {
                    // Held and unfinished lines go out before what follows them.
                    "response.created"
                    | "input_audio_buffer.committed"
                    | "response.function_call_arguments.done" => {
                        spoken.flush(false).into_iter().for_each(said);
                    }
                    "response.done" => spoken.response_done(),
                    _ => {}
                }
                if let Some(ev) = control_event(kind, frame.as_str(), &to_twilio).await {
                    let _ = call.cast(CallMsg::Model(ev));
                }
            }
        }
    };
    spoken.flush(true).into_iter().for_each(said);
    let _ = call.cast(CallMsg::Model(ModelEvent::Closed(reason)));
}

#[derive(Deserialize)]
struct TranscriptionDone<'a> {
    #[serde(borrow)]
    transcript: Cow<'a, str>,
}

#[derive(Deserialize)]
struct FunctionArgsDone<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    call_id: Cow<'a, str>,
    #[serde(borrow, default)]
    arguments: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ResponseDone {
    response: ResponseBody,
}

#[derive(Deserialize)]
struct ResponseBody {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// `response.done.usage` as the wire spells it (snake_case, unlike our public `Usage`).
#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

#[derive(Deserialize)]
struct ErrorEvent {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
}

/// Server events the CallActor cares about; everything else is logged and ignored.
async fn control_event(
    kind: &str,
    text: &str,
    to_twilio: &mpsc::Sender<ToTwilio>,
) -> Option<ModelEvent> {
    match kind {
        "conversation.item.input_audio_transcription.completed" => {
            let t: TranscriptionDone = serde_json::from_str(text).ok()?;
            Some(ModelEvent::CalleeSaid(t.transcript.into_owned()))
        }
        "response.function_call_arguments.done" => {
            let f: FunctionArgsDone = serde_json::from_str(text).ok()?;
            let arguments = serde_json::from_str(if f.arguments.is_empty() {
                "{}"
            } else {
                &f.arguments
            })
            .unwrap_or(serde_json::Value::Null);
            // The drain marker travels behind the audio already queued for Twilio, so it
            // resolves only once the agent's last words have played.
            let (tx, rx) = oneshot::channel();
            let drained = if to_twilio.send(ToTwilio::Drain(tx)).await.is_ok() {
                Some(rx)
            } else {
                None
            };
            Some(ModelEvent::FunctionCall {
                name: f.name.into_owned(),
                call_id: f.call_id.into_owned(),
                arguments,
                drained,
            })
        }
        "response.done" => {
            let d: ResponseDone = serde_json::from_str(text).ok()?;
            let u = d.response.usage?;
            Some(ModelEvent::Usage(Usage {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                total_tokens: u.total_tokens,
            }))
        }
        "error" => {
            let e: ErrorEvent = serde_json::from_str(text).ok()?;
            Some(ModelEvent::Error(
                e.error
                    .message
                    .unwrap_or_else(|| "unknown model error".into()),
            ))
        }
        _ => {
            tracing::trace!(event = kind, "model event");
            None
        }
    }
}
