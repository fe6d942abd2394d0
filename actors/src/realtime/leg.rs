//! ModelLeg: owns one Realtime WebSocket. A reader task turns server events into audio for
//! the Twilio leg (bounded channel) and control events for the CallActor; a writer task sends
//! what the Twilio leg and the CallActor hand it.

use std::borrow::Cow;

use futures_util::{SinkExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::call::messages::{CallMsg, ModelEvent, ToTwilio};
use crate::model::Usage;
use crate::realtime::spoken::{Line, Spoken};

pub enum ModelLegMsg {
    /// A control event (already JSON) for the model.
    Send(String),
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
    /// Callee audio (`input_audio_buffer.append` JSON) from the Twilio leg.
    pub from_twilio: mpsc::Receiver<String>,
}

pub struct ModelLeg;

type LastLinesRequest = (Option<(String, u64)>, RpcReplyPort<Vec<Line>>);

pub struct ModelLegState {
    control: mpsc::UnboundedSender<Option<String>>,
    /// To the reader, which owns what the agent has said.
    last_lines: mpsc::UnboundedSender<LastLinesRequest>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ItemText<'a> {
    #[serde(borrow)]
    item_id: Cow<'a, str>,
    #[serde(default, borrow)]
    delta: Cow<'a, str>,
    #[serde(default, borrow)]
    transcript: Cow<'a, str>,
    #[serde(default)]
    audio_end_ms: u64,
}

#[derive(Deserialize)]
struct AudioDelta<'a> {
    #[serde(borrow)]
    item_id: Cow<'a, str>,
    #[serde(borrow)]
    delta: Cow<'a, str>,
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
        let (ws, _) = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio_tungstenite::connect_async(request),
        )
        .await
        .map_err(|_| "the model endpoint did not answer within 10 s")??;
        let (mut sink, mut stream) = ws.split();
        sink.send(Message::text(args.session_update)).await?;
        let (control, mut control_rx) = mpsc::unbounded_channel::<Option<String>>();
        let mut from_twilio = args.from_twilio;
        let writer = tokio::spawn(async move {
            loop {
                let text = tokio::select! {
                    biased;
                    c = control_rx.recv() => match c {
                        Some(Some(t)) => t,
                        // Close: a normal close frame, then done.
                        Some(None) | None => {
                            let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "call ended".into() }))).await;
                            let _ = sink.close().await;
                            return;
                        }
                    },
                    a = from_twilio.recv() => match a { Some(t) => t, None => std::future::pending().await },
                };
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        });
        let call = args.call.clone();
        let to_twilio = args.to_twilio;
        let (last_lines, last_lines_rx) = mpsc::unbounded_channel::<LastLinesRequest>();
        let reader = tokio::spawn(async move {
            let mut spoken = Spoken::default();
            // Items whose audio has played to the end, reported by their drain markers.
            let (played_tx, mut played_rx) = mpsc::unbounded_channel::<String>();
            let mut last_lines_rx = last_lines_rx;
            let said = |line: Line| {
                let _ = call.cast(CallMsg::Model(ModelEvent::AgentSaid {
                    text: line.text,
                    interrupted: line.interrupted,
                }));
            };
            let reason = loop {
                let msg = tokio::select! {
                    m = stream.next() => m,
                    Some(item) = played_rx.recv() => {
                        spoken.played(&item).into_iter().for_each(said);
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
                let text = match msg {
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
                let Ok(head) = serde_json::from_str::<Head>(text.as_str()) else {
                    tracing::warn!("unparseable model event ignored");
                    continue;
                };
                match head.kind.as_ref() {
                    "response.output_audio.delta" => {
                        let Ok(d) = serde_json::from_str::<AudioDelta>(text.as_str()) else {
                            continue;
                        };
                        spoken.audio(&d.item_id, &d.delta);
                        let out = ToTwilio::Audio {
                            item_id: d.item_id.into_owned(),
                            payload: d.delta.into_owned(),
                        };
                        if to_twilio.send(out).await.is_err() {
                            break "the media leg is gone".to_owned();
                        }
                    }
                    kind @ ("response.output_audio_transcript.delta"
                    | "response.output_audio_transcript.done"
                    | "conversation.item.truncated") => {
                        let Ok(t) = serde_json::from_str::<ItemText>(text.as_str()) else {
                            continue;
                        };
                        match kind {
                            "response.output_audio_transcript.delta" => {
                                spoken.transcript_delta(&t.item_id, &t.delta)
                            }
                            "response.output_audio_transcript.done" => {
                                spoken.done(&t.item_id, &t.transcript);
                                // Behind the item's audio: resolves when it has played, or
                                // `false` when a barge-in cleared it (a truncate follows).
                                let (tx, rx) = oneshot::channel();
                                if to_twilio.send(ToTwilio::Drain(tx)).await.is_err() {
                                    break "the media leg is gone".to_owned();
                                }
                                let played = played_tx.clone();
                                let item = t.item_id.into_owned();
                                tokio::spawn(async move {
                                    if !matches!(rx.await, Ok(false)) {
                                        let _ = played.send(item);
                                    }
                                });
                            }
                            _ => spoken
                                .truncated(&t.item_id, t.audio_end_ms)
                                .into_iter()
                                .for_each(said),
                        }
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
                        if let Some(ev) = control_event(kind, text.as_str(), &to_twilio).await {
                            let _ = call.cast(CallMsg::Model(ev));
                        }
                    }
                }
            };
            spoken.flush(true).into_iter().for_each(said);
            let _ = call.cast(CallMsg::Model(ModelEvent::Closed(reason)));
        });
        Ok(ModelLegState {
            control,
            last_lines,
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
            ModelLegMsg::Send(text) => {
                let _ = state.control.send(Some(text));
            }
            ModelLegMsg::LastLines(playing, reply) => {
                let _ = state.last_lines.send((playing, reply));
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
            let _ = control.send(None);
        })
        .await;
        Ok(())
    }
}

/// Server events the CallActor cares about; everything else is logged and ignored.
async fn control_event(
    kind: &str,
    text: &str,
    to_twilio: &mpsc::Sender<ToTwilio>,
) -> Option<ModelEvent> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    match kind {
        "input_audio_buffer.speech_started" => Some(ModelEvent::SpeechStarted),
        "conversation.item.input_audio_transcription.completed" => {
            Some(ModelEvent::CalleeSaid(v["transcript"].as_str()?.to_owned()))
        }
        "response.function_call_arguments.done" => {
            let name = v["name"].as_str()?.to_owned();
            let call_id = v["call_id"].as_str()?.to_owned();
            let arguments = serde_json::from_str(v["arguments"].as_str().unwrap_or("{}"))
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
                name,
                call_id,
                arguments,
                drained,
            })
        }
        "response.done" => {
            let u = &v["response"]["usage"];
            Some(ModelEvent::Usage(Usage {
                input_tokens: u["input_tokens"].as_u64().unwrap_or(0),
                output_tokens: u["output_tokens"].as_u64().unwrap_or(0),
                total_tokens: u["total_tokens"].as_u64().unwrap_or(0),
            }))
        }
        "error" => Some(ModelEvent::Error(
            v["error"]["message"]
                .as_str()
                .unwrap_or("unknown model error")
                .to_owned(),
        )),
        _ => {
            tracing::trace!(event = kind, "model event");
            None
        }
    }
}
