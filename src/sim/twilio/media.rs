//! The Media Streams client: Twilio's side of `<Connect><Stream>`, playing the callee.
//!
//! One task per stream. Every tick (20 ms of audio, divided by the speed factor) it plays
//! 20 ms of what the engine queued (echoing marks once the audio before them has played),
//! advances the callee's script, and sends one 160-byte inbound frame (speech or silence).
//!
//! The socket ends with a close frame from whichever side ends it, answered by the other: an
//! engine socket that just ends (EOF, reset), or leaves the simulator's close unanswered, is a
//! `media-socket-dropped-without-close` violation.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Control, SimCall, TwimlSource, sign, twiml};
use crate::sim::scenario::{Faults, Scenario, Step};
use crate::sim::stats::{Dir, tag_of, unix_us};
use crate::sim::voice::{self, FRAME_BYTES, SILENCE};
use crate::sim::{Side, SimState};

pub(super) enum StreamEnd {
    /// The engine closed the socket: TwiML goes on.
    ServerClosed,
    Redirect(TwimlSource),
    /// The call is over; who ended it.
    Ended(&'static str),
}

/// Playback position bookkeeping for agent audio.
struct Heard {
    /// Line being heard: text, its expected audio, bytes played so far.
    current: Option<(Arc<str>, Vec<u8>, usize)>,
    /// Bytes of a line whose first frame has not fully played yet.
    start: Vec<u8>,
    /// Complete (or cut) lines heard so far.
    count: usize,
    /// After an unrecognisable start, ignore audio until playback goes idle.
    garbage: bool,
}

/// The callee's script position; survives a redirect that opens a new stream.
pub(super) struct Callee {
    steps: Vec<Step>,
    idx: usize,
    heard_consumed: usize,
    /// Agent lines heard on earlier streams of this call, so a redirect (keys pressed, then a
    /// new stream) does not make the callee wait to hear lines again.
    lines_heard: usize,
    wait_ticks: u64,
    step_started: bool,
    speaking: Option<(Arc<str>, Vec<String>, usize)>,
    /// Ticks since the callee's own last line ended.
    since_spoke: u64,
}

impl Callee {
    pub(super) fn new(st: &SimState, scenario: Option<&Scenario>) -> Callee {
        // Machine answers script their greeting and beep as callee lines, like any callee.
        let _ = st;
        let steps = scenario.map(|s| s.script.clone()).unwrap_or_default();
        Callee {
            steps,
            idx: 0,
            heard_consumed: 0,
            lines_heard: 0,
            wait_ticks: 0,
            step_started: false,
            speaking: None,
            since_spoke: u64::MAX / 2,
        }
    }
}

enum Action {
    Dtmf(String),
    Hangup,
}

impl Callee {
    /// One tick of the script. Returns the payload of the frame to send (speech) if any.
    fn tick(
        &mut self,
        st: &SimState,
        call: &SimCall,
        heard: &Heard,
        idle_ticks: u64,
        actions: &mut Vec<Action>,
    ) -> Option<String> {
        self.since_spoke = self.since_spoke.saturating_add(1);
        if let Some((text, frames, pos)) = self.speaking.as_mut() {
            let f = frames[*pos].clone();
            *pos += 1;
            if *pos == frames.len() {
                let t = text.clone();
                call.with(|c| c.callee_said.push(t.to_string()));
                self.speaking = None;
                self.since_spoke = 0;
                self.advance();
            }
            return Some(f);
        }
        for _ in 0..8 {
            let step = self.steps.get(self.idx).cloned()?;
            if !self.step_started {
                self.step_started = true;
                self.wait_ticks =
                    step.pause_ms.unwrap_or(0) / 20 + step.silence_ms.unwrap_or(0) / 20;
            }
            if step.agent.is_none() {
                // Only an agent line the callee is waiting for answers a step: one that plays
                // while the callee has its own step to do (a greeting before a phone menu
                // speaks, the rest of a line after a barge-in) is heard and let go, so it
                // cannot stand in for a later reply.
                self.heard_consumed = self.heard_consumed.max(heard.count);
            }
            if self.wait_ticks > 0 {
                self.wait_ticks -= 1;
                return None;
            }
            if step.agent.is_some() {
                let next_barges = self
                    .steps
                    .get(self.idx + 1)
                    .is_some_and(|n| n.barge_in_after_ms.is_some());
                if next_barges && heard.current.is_some() && heard.count == self.heard_consumed {
                    // The line we will interrupt is playing now.
                    self.advance();
                    continue;
                }
                if heard.count > self.heard_consumed {
                    self.heard_consumed += 1;
                    self.advance();
                    continue;
                }
                return None;
            }
            if let Some(text) = &step.callee {
                let ready = match step.barge_in_after_ms {
                    Some(ms) => {
                        heard
                            .current
                            .as_ref()
                            .is_some_and(|(_, _, played)| *played as u64 >= ms * 8)
                            || (heard.current.is_none() && idle_ticks >= 15)
                    }
                    // A person pauses between their own sentences for longer than the model's
                    // VAD silence window (so two lines are two turns), and waits for the
                    // agent to finish.
                    None => idle_ticks >= 15 && self.since_spoke >= 40,
                };
                if !ready {
                    return None;
                }
                if heard.current.is_some() && step.barge_in_after_ms.is_some() {
                    // The line being interrupted counts as heard.
                    self.heard_consumed = heard.count + 1;
                }
                let audio = st.voices.register(text);
                let frames = audio
                    .chunks(FRAME_BYTES)
                    .map(|f| base64::engine::general_purpose::STANDARD.encode(f))
                    .collect();
                self.speaking = Some((Arc::from(text.as_str()), frames, 0));
                return self.tick(st, call, heard, idle_ticks, actions);
            }
            if let Some(d) = &step.dtmf {
                actions.push(Action::Dtmf(d.clone()));
                self.advance();
                continue;
            }
            if let Some(d) = &step.expect_digits {
                if call.with(|c| c.digits_received.contains(d.as_str())) {
                    self.advance();
                    continue;
                }
                return None;
            }
            if step.hangup {
                actions.push(Action::Hangup);
                self.advance();
                return None;
            }
            // silence_ms: already waited.
            self.advance();
        }
        None
    }

    fn advance(&mut self) {
        self.idx += 1;
        self.step_started = false;
    }
}

enum Queued {
    Audio(Vec<u8>),
    Mark(String),
}

/// Twilio buffers at most 10 minutes of outbound audio (8 000 mu-law bytes a second); beyond
/// that it discards what comes and raises warning 31931 once (sheet §6.2).
const MAX_BUFFERED_BYTES: usize = 10 * 60 * 8000;

/// Agent audio queued and not yet played.
#[derive(Default)]
struct Buffered {
    bytes: usize,
    overflow_reported: bool,
    /// The call's tag for the load generator's frame matching (0 when off).
    tag: u64,
    /// Some agent audio has arrived on this stream (for the set-up timestamps).
    got_audio: bool,
}

/// Twilio's `stop`, then its close frame: how a stream ends from the carrier's side.
pub(super) async fn stop_and_close<S>(
    tx: &mut S,
    seq: u64,
    account: &str,
    call_sid: &str,
    stream_sid: &str,
) where
    S: futures_util::Sink<Message> + Unpin,
{
    let stop = json!({"event": "stop", "sequenceNumber": seq.to_string(), "stop": {"accountSid": account, "callSid": call_sid}, "streamSid": stream_sid});
    let _ = tx.send(Message::text(stop.to_string())).await;
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
}

pub(super) fn media_json(seq: u64, chunk: u64, ts: u64, payload: &str, sid: &str) -> String {
    format!(
        r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{ts}","payload":"{payload}"}},"streamSid":"{sid}"}}"#
    )
}

pub(super) async fn run_stream(
    st: &Arc<SimState>,
    call: &Arc<SimCall>,
    stream: &twiml::Stream,
    callee: &mut Callee,
    ctl: &mut mpsc::UnboundedReceiver<Control>,
    deadline: tokio::time::Instant,
    faults: &Faults,
) -> StreamEnd {
    let url = &stream.url;
    let loopback = ["ws://127.0.0.1", "ws://localhost", "ws://[::1]"]
        .iter()
        .any(|p| url.starts_with(p));
    if !url.starts_with("wss://") && !loopback {
        st.violations.record(
            Side::Twiml,
            Some(&call.sid),
            "stream-url-scheme",
            "<Stream url> must be wss:// (ws:// only on loopback) — Twilio error 31922",
            url,
        );
        return StreamEnd::Ended("application-error");
    }
    let mut request = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => {
            st.violations.record(
                Side::Twiml,
                Some(&call.sid),
                "stream-url-invalid",
                format!("<Stream url> is not a valid URL: {e}"),
                url,
            );
            return StreamEnd::Ended("application-error");
        }
    };
    let sig = sign::signature(&st.config.auth_token, url, &[]);
    request.headers_mut().insert(
        "X-Twilio-Signature",
        sig.parse().expect("base64 is a valid header value"),
    );
    let ws = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(request, None, st.config.tcp_nodelay),
    )
    .await
    {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            st.violations.record(
                Side::Media,
                Some(&call.sid),
                "stream-connect-failed",
                format!("could not open the media WebSocket: {e}"),
                url,
            );
            return StreamEnd::Ended("application-error");
        }
        Err(_) => return StreamEnd::Ended("application-error"),
    };
    let (mut tx, mut rx) = ws.split();
    let stream_sid = st.twilio.next_sid("MZ");
    let account = st.config.account_sid.clone();
    let custom: BTreeMap<String, String> = stream.parameters.clone();
    let start = json!({
        "event": "start", "sequenceNumber": "1",
        "start": {
            "accountSid": account, "streamSid": stream_sid, "callSid": call.sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": custom,
        },
        "streamSid": stream_sid,
    });
    let hello = json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
    if tx.send(Message::text(hello.to_string())).await.is_err()
        || tx.send(Message::text(start.to_string())).await.is_err()
    {
        expect_close(st, &call.sid, &stream_sid, &mut tx, &mut rx).await;
        return StreamEnd::ServerClosed;
    }
    let bench = st.stats.enabled();
    if bench {
        let now = unix_us();
        call.with(|c| {
            c.timing.media_start_us.get_or_insert(now);
        });
    }
    // Which call this stream's frames belong to, for the load generator's misrouting count.
    let tag = if bench {
        call.with(|c| c.scenario.as_deref().map(tag_of))
            .unwrap_or(0)
    } else {
        0
    };
    let silence_b64 = base64::engine::general_purpose::STANDARD.encode([SILENCE; FRAME_BYTES]);
    let mut seq: u64 = 2;
    let mut chunk: u64 = 1;
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut buffered = Buffered {
        tag,
        ..Buffered::default()
    };
    let mut heard = Heard {
        current: None,
        start: Vec::new(),
        count: callee.lines_heard,
        garbage: false,
    };
    let mut idle_ticks: u64 = 0;
    let period = Duration::from_secs_f64(0.020 / st.config.speed.max(0.001));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let t0 = tokio::time::Instant::now();
    let drop_at = faults.media_drop_at_ms.map(|ms| t0 + st.config.scaled(ms));
    let far_future = t0 + Duration::from_secs(86_400 * 365);
    let mut actions = Vec::new();
    let sid = call.sid.clone();

    let end = loop {
        tokio::select! {
            msg = rx.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    None => {
                        dropped(st, &sid, &stream_sid, "the connection ended (EOF)");
                        break StreamEnd::ServerClosed;
                    }
                    Some(Err(e)) => {
                        dropped(st, &sid, &stream_sid, &format!("reading failed: {e}"));
                        break StreamEnd::ServerClosed;
                    }
                };
                match msg {
                    Message::Text(t) => {
                        if let Some(end) = on_engine_message(st, call, &stream_sid, t.as_str(), &mut queue, &mut buffered, &mut heard, &mut tx, &mut seq).await {
                            break end;
                        }
                    }
                    Message::Binary(_) => st.violations.record(Side::Media, Some(&sid), "binary-frame", "Media Streams accept text frames only (Twilio warning 31950)", "<binary>"),
                    Message::Close(_) => {
                        // Sends the reply close frame tungstenite queued, completing the handshake.
                        let _ = tx.flush().await;
                        break StreamEnd::ServerClosed;
                    }
                    _ => {}
                }
            }
            due = ticker.tick() => {
                st.stats.tick(due.elapsed());
                // Play 20 ms of queued agent audio; echo marks whose audio has played.
                let mut budget = FRAME_BYTES;
                let mut played_any = false;
                while let Some(front) = queue.front_mut() {
                    match front {
                        Queued::Mark(_) => {
                            let Some(Queued::Mark(name)) = queue.pop_front() else { unreachable!() };
                            let m = json!({"event": "mark", "sequenceNumber": seq.to_string(), "streamSid": stream_sid, "mark": {"name": name}});
                            seq += 1;
                            call.with(|c| c.marks_echoed += 1);
                            if tx.send(Message::text(m.to_string())).await.is_err() { break; }
                        }
                        Queued::Audio(bytes) if budget > 0 => {
                            let n = budget.min(bytes.len());
                            let played: Vec<u8> = bytes.drain(..n).collect();
                            buffered.bytes -= n;
                            budget -= n;
                            played_any = true;
                            hear(st, call, &mut heard, &played);
                            if bytes.is_empty() { queue.pop_front(); }
                        }
                        Queued::Audio(_) => break,
                    }
                }
                if played_any { idle_ticks = 0 } else {
                    idle_ticks += 1;
                    if idle_ticks == 1 { line_paused(st, call, &mut heard); }
                }
                actions.clear();
                let speech = callee.tick(st, call, &heard, idle_ticks, &mut actions);
                let ts = (chunk - 1) * 20;
                let text = match &speech {
                    Some(p) => {
                        if st.stats.enabled() && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(p) {
                            st.stats.sent_tagged(Dir::Uplink, &raw, tag);
                        }
                        media_json(seq, chunk, ts, p, &stream_sid)
                    }
                    None => media_json(seq, chunk, ts, &silence_b64, &stream_sid),
                };
                seq += 1;
                chunk += 1;
                if tx.send(Message::text(text)).await.is_err() {
                    expect_close(st, &sid, &stream_sid, &mut tx, &mut rx).await;
                    break StreamEnd::ServerClosed;
                }
                call.with(|c| c.media_sent += 1);
                let mut hang = false;
                for a in actions.drain(..) {
                    match a {
                        Action::Dtmf(digits) => for d in digits.chars() {
                            let m = json!({"event": "dtmf", "streamSid": stream_sid, "sequenceNumber": seq.to_string(), "dtmf": {"track": "inbound_track", "digit": d.to_string()}});
                            seq += 1;
                            let _ = tx.send(Message::text(m.to_string())).await;
                        },
                        Action::Hangup => hang = true,
                    }
                }
                if hang { break StreamEnd::Ended("callee"); }
            }
            c = ctl.recv() => match c {
                Some(Control::Complete) => break StreamEnd::Ended("api-completed"),
                Some(Control::Redirect(src)) => break StreamEnd::Redirect(src),
                Some(Control::Cancel) | None => {}
            },
            _ = tokio::time::sleep_until(deadline) => break StreamEnd::Ended("time-limit"),
            _ = tokio::time::sleep_until(drop_at.unwrap_or(far_future)) => {
                // Fault: the connection vanishes without a close frame.
                drop(tx);
                drop(rx);
                return StreamEnd::Ended("media-dropped");
            }
        }
    };
    callee.lines_heard = heard.count;
    if !matches!(end, StreamEnd::ServerClosed) {
        stop_and_close(&mut tx, seq, &account, &sid, &stream_sid).await;
        // Messages already in flight when `stop` left are unavoidable; an engine still sending
        // half a second later has ignored `stop`. Read until the engine's reply close frame to
        // catch that; a socket that ends without one, or no reply in time, is a drop.
        let stopped = tokio::time::Instant::now();
        let reply = crate::sim::clock::within(CLOSE_WAIT, async {
            loop {
                match rx.next().await {
                    Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(Message::Text(t))) => {
                        if stopped.elapsed() > Duration::from_millis(500) {
                            st.violations.record(
                                Side::Media,
                                Some(&sid),
                                "after-stop",
                                "message sent more than 500 ms after the stream was stopped",
                                t.as_str(),
                            );
                        }
                    }
                    Some(Ok(_)) => {}
                    None => return Err("the connection ended (EOF)".to_owned()),
                    Some(Err(e)) => return Err(format!("reading failed: {e}")),
                }
            }
        })
        .await;
        match reply {
            Some(Ok(())) => {}
            Some(Err(what)) => dropped(
                st,
                &sid,
                &stream_sid,
                &format!("after the simulator's stop and close, {what} with no reply close frame"),
            ),
            None => dropped(
                st,
                &sid,
                &stream_sid,
                &format!(
                    "no reply close frame within {CLOSE_WAIT:?} of the simulator's stop and close"
                ),
            ),
        }
    }
    end
}

/// How long the engine has to send its close frame once the socket is going (a reply to the
/// simulator's, or one already on its way when a send failed).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The engine's media socket ended without the close frame every deliberate close sends
/// (1000 normal): a reset or EOF means the engine dropped or aborted its writer.
fn dropped(st: &SimState, call_sid: &str, stream_sid: &str, what: &str) {
    st.violations.record(
        Side::Media,
        Some(call_sid),
        "media-socket-dropped-without-close",
        format!(
            "the engine's media socket for stream {stream_sid} ended without a close frame: {what}"
        ),
        what,
    );
}

/// A send failed, so the socket is going: a close frame from the engine may still be waiting
/// to be read. Reads (bounded) until it comes; anything else is a drop.
async fn expect_close<T, R>(st: &SimState, call_sid: &str, stream_sid: &str, tx: &mut T, rx: &mut R)
where
    T: futures_util::Sink<Message> + Unpin,
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    if let Err(what) =
        crate::sim::socket_end::expect_close(tx, rx, |m| matches!(m, Message::Close(_)), CLOSE_WAIT)
            .await
    {
        dropped(st, call_sid, stream_sid, &what);
    }
}

/// Feeds played agent audio to the recogniser, checking every byte against the line's audio.
fn hear(st: &SimState, call: &SimCall, h: &mut Heard, bytes: &[u8]) {
    if h.garbage {
        return;
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        if let Some((text, expected, played)) = h.current.as_mut() {
            let n = rest.len().min(expected.len() - *played);
            if rest[..n] != expected[*played..*played + n] {
                st.violations.record(
                    Side::Media,
                    Some(&call.sid),
                    "altered-audio",
                    format!(
                        "agent audio for '{text}' differs from what the model sent at byte {}",
                        *played
                    ),
                    "",
                );
                h.garbage = true;
                h.current = None;
                return;
            }
            *played += n;
            rest = &rest[n..];
            if *played == expected.len() {
                let t = text.to_string();
                call.with(|c| c.agent_heard.push(t));
                h.count += 1;
                h.current = None;
            }
        } else {
            let need = FRAME_BYTES - h.start.len();
            let n = need.min(rest.len());
            h.start.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if h.start.len() == FRAME_BYTES {
                match st.voices.recognize_start(&h.start) {
                    Some(text) => {
                        let expected = voice::synthesize(&text);
                        if expected[..FRAME_BYTES] != h.start[..] {
                            h.garbage = true;
                            return;
                        }
                        h.current = Some((text, expected, FRAME_BYTES));
                        h.start.clear();
                        // A line shorter than one frame cannot exist (min 400 ms).
                    }
                    None => {
                        st.violations.record(
                            Side::Media,
                            Some(&call.sid),
                            "unrecognized-audio",
                            "agent audio that matches no line the model said",
                            "",
                        );
                        h.garbage = true;
                        h.start.clear();
                        return;
                    }
                }
            }
        }
    }
}

/// Playback went idle: a partly heard line stays current (more may come); garbage resets.
fn line_paused(_st: &SimState, _call: &SimCall, h: &mut Heard) {
    h.garbage = false;
    h.start.clear();
}

#[allow(clippy::too_many_arguments)]
async fn on_engine_message<S>(
    st: &SimState,
    call: &SimCall,
    stream_sid: &str,
    text: &str,
    queue: &mut VecDeque<Queued>,
    buffered: &mut Buffered,
    heard: &mut Heard,
    tx: &mut S,
    seq: &mut u64,
) -> Option<StreamEnd>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let sid = &call.sid;
    let bad = |rule: &str, msg: &str| {
        st.violations
            .record(Side::Media, Some(sid), rule, msg, text)
    };
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            bad("not-json", "message is not JSON (Twilio error 31951)");
            return None;
        }
    };
    let Some(obj) = v.as_object() else {
        bad("not-object", "message is not a JSON object (31951)");
        return None;
    };
    let event = obj.get("event").and_then(Value::as_str).unwrap_or("");
    let allowed: &[&str] = match event {
        "media" => &["event", "streamSid", "media"],
        "mark" => &["event", "streamSid", "mark"],
        "clear" => &["event", "streamSid"],
        other => {
            bad(
                "unknown-event",
                &format!("unknown event '{other}': only media, mark and clear may be sent (31951)"),
            );
            return None;
        }
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        bad(
            "extra-field",
            &format!("'{event}' message has unknown field '{k}' (31951)"),
        );
    }
    match obj.get("streamSid").and_then(Value::as_str) {
        Some(s) if s == stream_sid => {}
        Some(_) => {
            bad(
                "wrong-stream-sid",
                "streamSid does not match this stream (31951)",
            );
            return None;
        }
        None => {
            bad("missing-stream-sid", "streamSid is missing (31951)");
            return None;
        }
    }
    match event {
        "media" => {
            let media = obj.get("media").and_then(Value::as_object);
            let payload = media.and_then(|m| m.get("payload")).and_then(Value::as_str);
            if let Some(m) = media
                && let Some(k) = m.keys().find(|k| *k != "payload")
            {
                bad(
                    "extra-field",
                    &format!("media has unknown field '{k}' (31951)"),
                );
            }
            let Some(p) = payload else {
                bad("missing-payload", "media.payload is missing (31951)");
                return None;
            };
            match base64::engine::general_purpose::STANDARD.decode(p) {
                Ok(bytes) if bytes.starts_with(b"RIFF") => bad(
                    "file-header",
                    "media.payload starts with a RIFF/WAV header: send raw mu-law, no header (31924)",
                ),
                Ok(mut bytes) if !bytes.is_empty() => {
                    if st.stats.enabled() {
                        st.stats
                            .received_tagged(Dir::Downlink, &bytes, buffered.tag);
                        if !buffered.got_audio {
                            buffered.got_audio = true;
                            let now = unix_us();
                            call.with(|c| {
                                c.timing.first_audio_us.get_or_insert(now);
                            });
                        }
                    }
                    let room = MAX_BUFFERED_BYTES - buffered.bytes;
                    if bytes.len() > room {
                        if !buffered.overflow_reported {
                            buffered.overflow_reported = true;
                            bad(
                                "buffer-overflow",
                                "more than 10 minutes of audio queued: the excess is discarded (warning 31931)",
                            );
                        }
                        bytes.truncate(room);
                        if bytes.is_empty() {
                            return None;
                        }
                    }
                    buffered.bytes += bytes.len();
                    if let Some(Queued::Audio(last)) = queue.back_mut() {
                        last.extend_from_slice(&bytes);
                    } else {
                        queue.push_back(Queued::Audio(bytes));
                    }
                }
                Ok(_) => bad("empty-payload", "media.payload is empty"),
                Err(_) => bad("bad-payload", "media.payload is not standard base64"),
            }
        }
        "mark" => match obj
            .get("mark")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
        {
            Some(name) if !name.is_empty() => queue.push_back(Queued::Mark(name.to_owned())),
            _ => bad("mark-without-name", "mark.name is required"),
        },
        "clear" => {
            call.with(|c| c.clears += 1);
            let mut dropped = 0u64;
            let mut marks = Vec::new();
            for q in queue.drain(..) {
                match q {
                    Queued::Audio(b) => dropped += b.len() as u64,
                    Queued::Mark(n) => marks.push(n),
                }
            }
            call.with(|c| c.cleared_bytes += dropped);
            buffered.bytes = 0;
            if let Some((text, _, _)) = heard.current.take() {
                let t = text.to_string();
                call.with(|c| {
                    c.agent_heard.push(t.clone());
                    c.agent_cut.push(t);
                });
                heard.count += 1;
            }
            heard.start.clear();
            for name in marks {
                let m = json!({"event": "mark", "sequenceNumber": seq.to_string(), "streamSid": stream_sid, "mark": {"name": name}});
                *seq += 1;
                call.with(|c| c.marks_echoed += 1);
                let _ = tx.send(Message::text(m.to_string())).await;
            }
        }
        _ => {}
    }
    None
}
