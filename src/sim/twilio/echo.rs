//! Echo mode, for the load generator's floor: the callee's side of N media streams dialed
//! straight at a bare echo server (no REST create, no TwiML, no engine, no model).
//!
//! Each stream sends the same real-time 20 ms `media` frames the Twilio half sends in a call,
//! every frame unique (the stream's index and the frame's number lead the payload), and
//! matches each echoed frame like the Twilio half matches agent audio: per-frame round-trip
//! latency, lost, duplicated and misrouted frames (all under [`Dir::Uplink`]), the send
//! ticks' lateness, and the set-up timestamps (stream opened → media start → first audio
//! back). A stream lasts as long as its scenario's lines take to say, then waits (bounded) for
//! its last frames to come back and closes.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::media::media_json;
use crate::sim::SimState;
use crate::sim::scenario::Scenario;
use crate::sim::stats::{Dir, SetupTimes, tag_of, unix_us};
use crate::sim::voice::{FRAME_BYTES, frames_for};

/// How long a stream waits for its last frames to come back after sending its last one.
const DRAIN: Duration = Duration::from_secs(2);
/// Streams opening their socket at the same time.
const CONCURRENT_HANDSHAKES: usize = 8;

/// Frames of audio a scenario's lines take (agent and callee), at least one second's worth.
pub fn stream_frames(s: &Scenario) -> u64 {
    let n: usize = s
        .script
        .iter()
        .flat_map(|st| [&st.agent, &st.callee])
        .flatten()
        .map(|line| frames_for(line))
        .sum();
    n.max(50) as u64
}

/// Opens one stream per scenario to `url` at once and runs them all to their end; each one
/// reports itself done in `st.stats` (see `FrameStats::echo_stream_done`).
pub async fn drive(st: Arc<SimState>, url: String, scenarios: Vec<Scenario>) {
    let mut tasks = tokio::task::JoinSet::new();
    // A few handshakes at a time, as the engine's calls arrive one `place_call` after another:
    // hundreds of connects in the same instant overflow the echo's accept queue, and a dropped
    // SYN costs a one-second retransmit that is the generator's doing, not the floor's.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_HANDSHAKES));
    for (i, s) in scenarios.into_iter().enumerate() {
        let (st, url, handshakes) = (st.clone(), url.clone(), handshakes.clone());
        tasks.spawn(async move {
            let times = stream(&st, &url, i, &s, &handshakes).await;
            st.stats.echo_stream_done(times);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// A unique, speech-like frame: the stream index and frame number, then bytes from them.
fn frame(i: usize, n: u64) -> [u8; FRAME_BYTES] {
    let mut f = [0u8; FRAME_BYTES];
    f[..4].copy_from_slice(&(i as u32).to_le_bytes());
    f[4..8].copy_from_slice(&(n as u32).to_le_bytes());
    let mut state = ((i as u64) << 32 | n) | 1;
    for b in &mut f[8..] {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = (state as u8 & 0x80) | (state as u8 & 0x1F);
    }
    f
}

async fn stream(
    st: &SimState,
    url: &str,
    i: usize,
    s: &Scenario,
    handshakes: &tokio::sync::Semaphore,
) -> SetupTimes {
    let permit = handshakes.acquire().await;
    let mut times = SetupTimes {
        key: format!("echo-{i}"),
        request_us: Some(unix_us()),
        ..SetupTimes::default()
    };
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(url, None, st.config.tcp_nodelay),
    )
    .await;
    drop(permit);
    let ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            tracing::warn!(stream = i, "echo: cannot connect to {url}: {e}");
            return times;
        }
        Err(_) => {
            tracing::warn!(stream = i, "echo: no connection to {url} within 10 s");
            return times;
        }
    };
    let (mut tx, mut rx) = ws.split();
    let tag = tag_of(&s.name);
    let stream_sid = format!("MZecho{i:026}");
    let call_sid = format!("CAecho{i:026}");
    let hello = json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
    let start = json!({
        "event": "start", "sequenceNumber": "1",
        "start": {
            "accountSid": st.config.account_sid, "streamSid": stream_sid, "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {},
        },
        "streamSid": stream_sid,
    });
    if tx.send(Message::text(hello.to_string())).await.is_err()
        || tx.send(Message::text(start.to_string())).await.is_err()
    {
        return times;
    }
    times.media_start_us = Some(unix_us());
    let frames = stream_frames(s);
    let (mut seq, mut sent, mut received) = (2u64, 0u64, 0u64);
    let period = Duration::from_secs_f64(0.020 / st.config.speed.max(0.001));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Bounded: the frames' own time, then the drain, then a margin.
    let give_up = tokio::time::Instant::now() + period * frames as u32 + DRAIN * 2;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let b64 = base64::engine::general_purpose::STANDARD;
    loop {
        tokio::select! {
            due = ticker.tick(), if sent < frames => {
                st.stats.tick(due.elapsed());
                let raw = frame(i, sent);
                st.stats.sent_tagged(Dir::Uplink, &raw, tag);
                let text = media_json(seq, sent + 1, sent * 20, &b64.encode(raw), &stream_sid);
                seq += 1;
                sent += 1;
                if tx.send(Message::text(text)).await.is_err() {
                    break;
                }
                if sent == frames {
                    drain_until = Some(tokio::time::Instant::now() + DRAIN);
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                    if v.get("event").and_then(Value::as_str) != Some("media") {
                        continue;
                    }
                    let payload = v.pointer("/media/payload").and_then(Value::as_str);
                    if let Some(raw) = payload.and_then(|p| b64.decode(p).ok()) {
                        st.stats.received_tagged(Dir::Uplink, &raw, tag);
                        times.first_audio_us.get_or_insert_with(unix_us);
                        received += 1;
                    }
                    if sent == frames && received >= sent {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(drain_until.unwrap_or(give_up)) => break,
            _ = tokio::time::sleep_until(give_up) => break,
        }
    }
    super::media::stop_and_close(&mut tx, seq, &st.config.account_sid, &call_sid, &stream_sid)
        .await;
    let _ = crate::sim::clock::within(DRAIN, async {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    times
}
