//! Voice-activity detection: the per-frame speech/silence decision over appended audio,
//! `speech_started`/`speech_stopped`, and the turn it commits (the user item, its transcript,
//! and the scripted agent's reply).
//!
//! Positions are counted in audio bytes (8 per millisecond of mu-law), never in wall time, so
//! the events do not depend on the simulator's speed.

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Res, Session, Tx, ev};
use crate::sim::stats::{Dir, tag_of};
use crate::sim::voice::{self, FRAME_BYTES};

/// The detector's state for one session's input buffer.
#[derive(Default)]
pub(super) struct Vad {
    /// Audio bytes through the detector so far (the position of the next frame).
    pub(super) audio_ms_bytes: u64,
    /// Appended bytes short of a whole frame.
    pub(super) pending: Vec<u8>,
    pub(super) in_speech: bool,
    /// The current utterance's audio.
    pub(super) speech: Vec<u8>,
    pub(super) speech_start_ms: u64,
    pub(super) silence_ms: u64,
    /// The user item the current utterance becomes.
    pub(super) user_item: String,
}

impl Session {
    pub(super) async fn append(&mut self, tx: &mut Tx, v: &Value, raw: &str) -> Res {
        let Some(b64) = v.get("audio").and_then(Value::as_str) else {
            self.violation(
                "missing-audio",
                "input_audio_buffer.append without audio",
                raw,
            );
            return self
                .error(
                    tx,
                    "missing_required_parameter",
                    "Missing required parameter: 'audio'.",
                    Some("audio"),
                )
                .await;
        };
        let bytes = match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(b) if !b.is_empty() => b,
            _ => {
                self.violation(
                    "bad-audio",
                    "input_audio_buffer.append audio is empty or not base64",
                    &raw[..raw.len().min(200)],
                );
                return self
                    .error(
                        tx,
                        "invalid_value",
                        "Invalid 'audio'. Expected base64-encoded audio bytes.",
                        Some("audio"),
                    )
                    .await;
            }
        };
        if self
            .config
            .pointer("/audio/input/format/type")
            .and_then(Value::as_str)
            != Some("audio/pcmu")
        {
            self.violation(
                "audio-format",
                "audio appended while the session input format is not audio/pcmu",
                "",
            );
        }
        self.first_append.get_or_insert_with(Instant::now);
        self.with(|s| s.appended_bytes += bytes.len() as u64);
        self.vad.pending.extend_from_slice(&bytes);
        let silence_needed = self
            .config
            .pointer("/audio/input/turn_detection/silence_duration_ms")
            .and_then(Value::as_u64)
            .unwrap_or(200);
        let vad = !self
            .config
            .pointer("/audio/input/turn_detection")
            .is_none_or(Value::is_null);
        while self.vad.pending.len() >= FRAME_BYTES {
            let frame: Vec<u8> = self.vad.pending.drain(..FRAME_BYTES).collect();
            let pos_ms = self.vad.audio_ms_bytes / 8;
            self.vad.audio_ms_bytes += FRAME_BYTES as u64;
            let speech = voice::is_speech(&frame);
            if speech {
                let tag = self.scenario.as_ref().map_or(0, |s| tag_of(&s.name));
                self.st.stats.received_tagged(Dir::Uplink, &frame, tag);
            }
            if speech {
                if !self.vad.in_speech {
                    self.vad.in_speech = true;
                    self.vad.speech_start_ms = pos_ms;
                    self.vad.user_item = self.st.realtime.next_id("item");
                    self.vad.speech.clear();
                    if vad {
                        let start = pos_ms.saturating_sub(300);
                        self.send(
                            tx,
                            ev(
                                "input_audio_buffer.speech_started",
                                json!({"audio_start_ms": start, "item_id": self.vad.user_item}),
                            ),
                        )
                        .await?;
                        let interrupt = self
                            .config
                            .pointer("/audio/input/turn_detection/interrupt_response")
                            .and_then(Value::as_bool)
                            .unwrap_or(true);
                        if interrupt && let Some(r) = self.resp.take() {
                            self.finish_response(tx, r, "cancelled", Some("turn_detected"))
                                .await?;
                        }
                    }
                }
                self.vad.speech.extend_from_slice(&frame);
                self.vad.silence_ms = 0;
            } else if self.vad.in_speech {
                self.vad.silence_ms += 20;
                if vad && self.vad.silence_ms >= silence_needed {
                    let end_ms = pos_ms + 20 - self.vad.silence_ms;
                    self.send(
                        tx,
                        ev(
                            "input_audio_buffer.speech_stopped",
                            json!({"audio_end_ms": end_ms, "item_id": self.vad.user_item}),
                        ),
                    )
                    .await?;
                    self.end_of_speech(tx, true).await?;
                }
            }
        }
        Ok(())
    }

    /// Commits the current utterance: the user item, its transcription (a placeholder for
    /// audio no callee said, which is also a violation), what the agent makes of it, and, when
    /// the turn ended by voice activity and the session asks for it, the automatic response.
    pub(super) async fn end_of_speech(&mut self, tx: &mut Tx, by_vad: bool) -> Res {
        self.vad.in_speech = false;
        self.vad.silence_ms = 0;
        let item = std::mem::take(&mut self.vad.user_item);
        let item = if item.is_empty() {
            self.st.realtime.next_id("item")
        } else {
            item
        };
        let audio = std::mem::take(&mut self.vad.speech);
        self.send(
            tx,
            ev(
                "input_audio_buffer.committed",
                json!({"item_id": item, "previous_item_id": null}),
            ),
        )
        .await?;
        let user = json!({"id": item, "object": "realtime.item", "type": "message", "status": "completed", "role": "user",
                          "content": [{"type": "input_audio", "transcript": null}]});
        self.item_event(tx, "conversation.item.added", &user)
            .await?;
        self.item_event(tx, "conversation.item.done", &user).await?;
        let heard = self.st.voices.recognize(&audio);
        match &heard {
            Some(text) => self.with(|s| s.callee_heard.push(text.to_string())),
            None => self.violation("unrecognized-audio", &format!("{} ms of callee audio match no line the callee said (altered, dropped, reordered or mixed audio)", audio.len() / 8), ""),
        }
        if !self
            .config
            .pointer("/audio/input/transcription")
            .is_none_or(Value::is_null)
        {
            let transcript = heard.as_deref().unwrap_or(UNRECOGNISED);
            let usage = json!({"type": "tokens", "total_tokens": 24, "input_tokens": 16, "input_token_details": {"text_tokens": 0, "audio_tokens": 16}, "output_tokens": 8});
            self.send(
                tx,
                ev(
                    "conversation.item.input_audio_transcription.delta",
                    json!({"item_id": item, "content_index": 0, "delta": transcript}),
                ),
            )
            .await?;
            self.send(tx, ev("conversation.item.input_audio_transcription.completed", json!({"item_id": item, "content_index": 0, "transcript": transcript, "usage": usage}))).await?;
        }
        self.hear(heard.as_deref());
        let auto = by_vad
            && self
                .config
                .pointer("/audio/input/turn_detection/create_response")
                .and_then(Value::as_bool)
                .unwrap_or(true)
            && !self
                .config
                .pointer("/audio/input/turn_detection")
                .is_none_or(Value::is_null);
        if auto && self.resp.is_none() {
            self.respond(tx, Default::default()).await?;
        }
        Ok(())
    }
}

/// The transcript of a turn whose audio matches no line anyone said.
pub(crate) const UNRECOGNISED: &str = "[unrecognised audio]";
