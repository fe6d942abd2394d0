//! The simulator's Media Streams client, seen from the application's WebSocket server written
//! from protocols/twilio.md (no engine in the loop): the callee speaking on cue, the outbound
//! buffer's limit, each media-message mistake, and how the socket must end.

#[path = "support/sim_twilio.rs"]
mod harness;
#[path = "support/wire.rs"]
mod wire;

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use base64::Engine as _;
use harness::*;
use serde_json::{Value, json};
use switchboard::sim::voice::FRAME_BYTES;
use switchboard::sim::{Scenario, Simulator};
use tokio::time::Instant;

// ------------------------------------------------------------------ the stream (§6)

#[tokio::test]
async fn closing_the_stream_continues_the_twiml_and_the_callee_speaks_on_cue() {
    let sim = sim().await;
    let rest = Rest::new(&sim);
    let mut app = App::start().await;
    app.set_twiml(&format!(
        r#"<Response><Connect><Stream url="{}"/></Connect><Say>Goodbye.</Say><Play digits="1w2"/><Hangup/></Response>"#,
        app.ws_url()
    ));
    let from = sim.number().to_owned();
    let urls = [app.url("voice"), app.url("status")];
    let (_, call) = rest.create(&call_params(&urls, RESTAURANT, &from)).await;
    let sid = call["sid"].as_str().unwrap().to_owned();
    let (_, mut m) = app.next_socket().await;
    m.handshake(&sid, sim.account_sid()).await;

    // The restaurant's callee answers the agent's first line once it has played.
    let s = Scenario::builtin_named("restaurant").unwrap();
    let first = s.script[0].agent.clone().unwrap();
    let audio = sim.state().voices.register(&first);
    m.play(&audio, 160).await;
    m.mark("first").await;
    m.until_mark("first").await;
    // Collect inbound speech frames until the callee's line is complete.
    let reply = s.script[1].callee.clone().unwrap();
    let expected = switchboard::sim::voice::synthesize(&reply);
    let mut speech = Vec::new();
    let deadline = Instant::now() + STEP;
    while speech.len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "the callee never finished its line"
        );
        let f = m.until("media").await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(f["media"]["payload"].as_str().unwrap())
            .unwrap();
        if switchboard::sim::voice::is_speech(&bytes) {
            speech.extend_from_slice(&bytes);
        }
    }
    assert_eq!(speech, expected, "the callee's line, byte for byte");

    // The application closes the socket: Twilio runs the rest of the TwiML.
    let _ = m.ws.send(Message::Close(None)).await;
    let c = wait_sim_call(&sim, &sid, |c| c["status"] == "completed").await;
    assert_eq!(c["ended_by"], "twiml-hangup", "{c}");
    assert_eq!(
        c["twiml_verbs"],
        json!(["Connect", "Say Goodbye.", "Play 1w2", "Hangup"])
    );
    assert_eq!(c["digits_received"], "12");
    assert_eq!(c["callee_said"], json!([reply]));
    assert!(violations_of(&sim, Some(&sid)).is_empty());
    sim.shutdown().await;
}

// ------------------------------------------------------------------ violations, by class

/// Twilio buffers at most 10 minutes of outbound audio and warns once (31931) when more comes.
#[tokio::test]
async fn more_than_ten_minutes_of_queued_audio_is_a_violation_once() {
    let (sim, rest, mut app, from, urls) = harness().await;
    let (_, call) = rest.create(&call_params(&urls, RESTAURANT, &from)).await;
    let sid = call["sid"].as_str().unwrap().to_owned();
    let (_, mut m) = app.next_socket().await;
    m.handshake(&sid, sim.account_sid()).await;
    let overflow = |sim: &Simulator| {
        violations_of(sim, Some(&sid))
            .into_iter()
            .filter(|(rule, _, _)| rule == "buffer-overflow")
            .count()
    };
    // 10 minutes in one-minute messages fit; the eleventh minute does not.
    let minute = vec![0x11u8; 60 * 8000];
    for _ in 0..10 {
        m.play(&minute, minute.len()).await;
    }
    m.mark("ten-minutes").await;
    m.play(&[0x11; 800], 800).await;
    m.play(&minute, minute.len()).await;
    let deadline = Instant::now() + STEP;
    while overflow(&sim) == 0 {
        assert!(
            Instant::now() < deadline,
            "an eleventh minute recorded nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The ten minutes were taken whole: the first audio past them is what overflowed.
    let (_, message, offending) = violations_of(&sim, Some(&sid))
        .into_iter()
        .find(|(rule, _, _)| rule == "buffer-overflow")
        .unwrap();
    assert!(message.contains("31931"), "{message}");
    assert!(offending.len() < 2000, "{} chars", offending.len());
    // A clear empties the buffer (its marks come back), so there is room again; the warning
    // is not repeated.
    m.clear().await;
    m.until_mark("ten-minutes").await;
    m.play(&minute, minute.len()).await;
    m.mark("after-clear").await;
    m.clear().await;
    m.until_mark("after-clear").await;
    assert_eq!(overflow(&sim), 1);
    rest.update(&sid, &[("Status", "completed")]).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn each_media_stream_mistake_is_a_violation_with_the_call_and_message() {
    let (sim, rest, mut app, from, urls) = harness().await;
    let (_, call) = rest.create(&call_params(&urls, RESTAURANT, &from)).await;
    let sid = call["sid"].as_str().unwrap().to_owned();
    let (_, mut m) = app.next_socket().await;
    m.handshake(&sid, sim.account_sid()).await;
    let stream = m.stream_sid.clone();

    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "not-json"),
        ("[1, 2]".into(), "not-object"),
        (json!({"event": "close", "streamSid": stream}).to_string(), "unknown-event"),
        (
            json!({"event": "media", "streamSid": "MZ00000000000000000000000000000000", "media": {"payload": "/w=="}}).to_string(),
            "wrong-stream-sid",
        ),
        (json!({"event": "clear"}).to_string(), "missing-stream-sid"),
        (json!({"event": "mark", "streamSid": stream}).to_string(), "mark-without-name"),
        (json!({"event": "mark", "streamSid": stream, "mark": {"name": ""}}).to_string(), "mark-without-name"),
        (
            json!({"event": "media", "streamSid": stream, "media": {"payload": "not base64!"}}).to_string(),
            "bad-payload",
        ),
        (json!({"event": "media", "streamSid": stream, "media": {"payload": ""}}).to_string(), "empty-payload"),
        (
            // A WAV file's header, as a client that forwards files instead of raw audio sends.
            json!({"event": "media", "streamSid": stream, "media": {"payload": "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAA"}}).to_string(),
            "file-header",
        ),
        (
            json!({"event": "media", "streamSid": stream, "media": {"playload": "/w=="}}).to_string(),
            "extra-field",
        ),
        (
            json!({"event": "mark", "streamSid": stream, "mark": {"name": "x"}, "sequenceNumber": "3"}).to_string(),
            "extra-field",
        ),
    ];
    for (sent, rule) in &cases {
        let before = violations_of(&sim, Some(&sid)).len();
        m.send_text(sent.clone()).await;
        let deadline = Instant::now() + STEP;
        let v = loop {
            let v = violations_of(&sim, Some(&sid));
            if v.len() > before {
                break v;
            }
            assert!(Instant::now() < deadline, "{sent} recorded nothing");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let (r, message, offending) = &v[before];
        assert_eq!(r, rule, "{sent}: {message}");
        assert_eq!(offending, sent, "the offending message is kept whole");
    }
    m.ws.send(Message::Binary(vec![0xff; 160].into()))
        .await
        .unwrap();

    // Audio that matches no line the model said, and a line altered in its second frame.
    m.play(&[0x11; 800], 800).await;
    let line = "This line will arrive with one byte changed.";
    let mut audio = sim.state().voices.register(line);
    // Let playback go idle between the two so each is judged on its own.
    tokio::time::sleep(Duration::from_millis(400)).await;
    audio[FRAME_BYTES + 3] ^= 0x20;
    m.play(&audio, 160).await;
    m.mark("altered").await;
    m.until_mark("altered").await;

    // Still sending 1 s after `stop`.
    rest.update(&sid, &[("Status", "completed")]).await;
    m.until("stop").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut late = fixture("to_twilio_mark.json");
    late["streamSid"] = json!(stream);
    let _ = m.ws.send(Message::Text(late.to_string().into())).await;

    let deadline = Instant::now() + STEP;
    let expected = [
        "binary-frame",
        "unrecognized-audio",
        "altered-audio",
        "after-stop",
    ];
    loop {
        let v = violations_of(&sim, Some(&sid));
        if expected.iter().all(|r| has_rule(&v, r)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing some of {expected:?} in {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The same violations over HTTP, with side and call.
    let over_http: Vec<Value> = reqwest::get(format!("{}/sim/violations", sim.twilio_api_base()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        over_http.iter().any(|x| x["call"] == sid.as_str()
            && x["side"] == "media"
            && x["rule"] == "mark-without-name"),
        "{over_http:?}"
    );
    sim.shutdown().await;
}

// ------------------------------------------------------------------ how the socket ends

const DROPPED: &str = "media-socket-dropped-without-close";

/// Every socket the engine closes on purpose gets a close frame; one that just ends (an
/// aborted writer, a crash) is a violation, and so is one that leaves the simulator's own
/// close unanswered.
#[tokio::test]
async fn a_media_socket_the_engine_drops_without_a_close_frame_is_a_violation() {
    let (sim, rest, mut app, from, urls) = harness().await;

    // The engine's end goes away mid-stream: EOF, no close frame. The TwiML goes on and ends.
    let sid = rest.create(&call_params(&urls, RESTAURANT, &from)).await.1["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, mut m) = app.next_socket().await;
    m.handshake(&sid, sim.account_sid()).await;
    let stream = m.stream_sid.clone();
    drop(m);
    let c = wait_sim_call(&sim, &sid, |c| c["status"] == "completed").await;
    assert_eq!(c["ended_by"], "twiml-end");
    let v = violations_of(&sim, Some(&sid));
    assert_eq!(
        v.iter().map(|(r, _, _)| r.as_str()).collect::<Vec<_>>(),
        [DROPPED],
        "{v:?}"
    );
    assert!(v[0].1.contains(&stream), "names the stream: {v:?}");
    // tungstenite reports a bare EOF as a reset without the closing handshake.
    assert!(
        ["EOF", "without closing handshake"]
            .iter()
            .any(|w| v[0].1.contains(w)),
        "says what happened: {v:?}"
    );

    // The simulator ends the call (stop, then its close); the engine reads `stop` and then
    // never answers the close.
    let sid = rest.create(&call_params(&urls, RESTAURANT, &from)).await.1["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, mut m) = app.next_socket().await;
    m.handshake(&sid, sim.account_sid()).await;
    rest.update(&sid, &[("Status", "completed")]).await;
    m.until("stop").await;
    let stopped = Instant::now();
    let c = wait_sim_call(&sim, &sid, |c| c["status"] == "completed").await;
    assert_eq!(c["ended_by"], "api-completed");
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "the engine gets its 2 s to answer: {:?}",
        stopped.elapsed()
    );
    let v = violations_of(&sim, Some(&sid));
    assert_eq!(
        v.iter().map(|(r, _, _)| r.as_str()).collect::<Vec<_>>(),
        [DROPPED],
        "{v:?}"
    );
    assert!(v[0].1.contains("no reply close frame"), "{v:?}");
    drop(m);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_media_socket_the_engine_closes_with_1000_is_no_violation() {
    let (sim, rest, mut app, from, urls) = harness().await;
    let sid = rest.create(&call_params(&urls, RESTAURANT, &from)).await.1["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, mut m) = app.next_socket().await;
    m.handshake(&sid, sim.account_sid()).await;
    m.ws.send(Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    })))
    .await
    .unwrap();
    // The simulator answers with its own close frame, and sends no `stop` (the engine closed).
    m.until_closed().await;
    assert!(m.log.iter().all(|(_, v)| v["event"] != "stop"));
    let c = wait_sim_call(&sim, &sid, |c| c["status"] == "completed").await;
    assert_eq!(c["ended_by"], "twiml-end");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.shutdown().await;
}
