//! The simulator's OpenAI Realtime session, driven directly by a scripted client written from
//! protocols/openai-realtime.md (no engine in the loop): the handshake, `session.update`,
//! the model's scripted faults, each class of client mistake, and how the socket must end.

#[path = "support/sim_realtime.rs"]
mod harness;
#[path = "support/wire.rs"]
mod wire;

use std::time::Duration;

use futures_util::SinkExt;
use harness::*;
use serde_json::{Value, json};
use switchboard::sim::Simulator;
use tokio::time::Instant;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wire::assert_shape;

// ------------------------------------------------------------------ handshake (sheet §0, §1)

#[tokio::test]
async fn handshake_errors_are_an_error_event_then_the_sheets_close_code() {
    let sim = sim().await;
    let cases: [(Connect, Option<&str>, u16, &str); 5] = [
        (
            Connect {
                key: Some("sk-wrong"),
                ..Connect::default()
            },
            Some("invalid_api_key"),
            3000,
            "invalid_request_error.invalid_api_key",
        ),
        (
            Connect {
                key: Some(""),
                ..Connect::default()
            },
            None,
            3000,
            "invalid_request_error",
        ),
        (
            Connect {
                query: Some(""),
                ..Connect::default()
            },
            Some("missing_model"),
            4000,
            "invalid_request_error.missing_model",
        ),
        (
            Connect {
                query: Some("?model=gpt-4-turbo"),
                ..Connect::default()
            },
            Some("invalid_model"),
            4000,
            "invalid_request_error.invalid_model",
        ),
        (
            Connect {
                beta: true,
                ..Connect::default()
            },
            Some("beta_api_shape_disabled"),
            4000,
            "invalid_request_error.beta_api_shape_disabled",
        ),
    ];
    for (how, code, close, reason) in cases {
        let mut c = connect(&sim, how).await;
        let (frame, events) = c.until_closed().await;
        assert_eq!(types(&events), ["error"], "{events:?}");
        let err = &events[0];
        let mut shape = fixture("error_beta_api_shape_disabled.json");
        if code.is_none() {
            shape["error"]["code"] = Value::Null;
        }
        assert_shape(&shape, err, "error");
        assert_eq!(err["error"]["code"].as_str(), code, "{err}");
        assert!(err["error"]["param"].is_null(), "{err}");
        let frame = frame.unwrap_or_else(|| panic!("no close frame after {err}"));
        assert_eq!(u16::from(frame.code), close, "{err}");
        assert_eq!(frame.reason.as_str(), reason);
    }
    // The beta refusal is word for word the sheet's.
    let mut c = connect(
        &sim,
        Connect {
            beta: true,
            ..Connect::default()
        },
    )
    .await;
    let (_, events) = c.until_closed().await;
    let expected = fixture("error_beta_api_shape_disabled.json");
    assert_eq!(events[0]["error"], expected["error"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_good_handshake_starts_with_session_created_in_ga_shape() {
    let sim = sim().await;
    let mut c = connect(
        &sim,
        Connect {
            query: Some("?model=gpt-realtime-mini"),
            ..Connect::default()
        },
    )
    .await;
    let Some(Got::Event(first)) = c.next(STEP).await else {
        panic!("no first event")
    };
    assert_eq!(first["type"], "session.created");
    let s = &first["session"];
    assert_eq!(s["type"], "realtime");
    assert_eq!(s["object"], "realtime.session");
    assert_eq!(s["model"], "gpt-realtime-mini");
    assert!(s["id"].as_str().is_some_and(|id| id.starts_with("sess_")));
    assert!(s["expires_at"].is_number());
    assert_eq!(s["output_modalities"], json!(["audio"]));
    // GA defaults from the live capture: PCM 24 kHz, server VAD.
    assert_eq!(s["audio"]["input"]["format"]["type"], "audio/pcm");
    assert_eq!(s["audio"]["input"]["turn_detection"]["type"], "server_vad");
    assert!(
        s.get("input_audio_format").is_none() && s.get("modalities").is_none(),
        "beta fields in a GA session: {s}"
    );
    sim.shutdown().await;
}

// ------------------------------------------------------------------ session.update (§3)

#[tokio::test]
async fn session_update_ga_is_applied_and_every_bad_param_is_named() {
    let sim = sim().await;
    let mut c = connect(&sim, Connect::default()).await;
    let created = c.until("session.created").await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();

    c.send(&fixture("session_update_ga.json")).await;
    let updated = c.until("session.updated").await;
    let s = &updated["session"];
    assert_eq!(s["audio"]["input"]["format"], json!({"type": "audio/pcmu"}));
    assert_eq!(
        s["audio"]["output"]["format"],
        json!({"type": "audio/pcmu"})
    );
    assert_eq!(s["audio"]["output"]["voice"], "marin");
    assert_eq!(s["tools"][0]["name"], "end_call");
    // The full effective config comes back, defaults included.
    assert_eq!(s["object"], "realtime.session");
    assert!(violations_of(&sim, &id).is_empty());

    // (session patch, error code, param) — each rejected whole, naming the param.
    let bad: Vec<(Value, &str, &str)> = vec![
        (
            json!({"type": "realtime", "bogus_field": 1}),
            "unknown_parameter",
            "session.bogus_field",
        ),
        (
            json!({"instructions": "no type"}),
            "missing_required_parameter",
            "session.type",
        ),
        (json!({"type": "chat"}), "invalid_value", "session.type"),
        (
            json!({"type": "realtime", "audio": {"input": {"format": {"type": "audio/wav"}}}}),
            "invalid_value",
            "session.audio.input.format.type",
        ),
        (
            json!({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}),
            "integer_below_min_value",
            "session.audio.input.format.rate",
        ),
        (
            json!({"type": "realtime", "audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}}),
            "invalid_value",
            "session.audio.input.turn_detection.type",
        ),
        (
            json!({"type": "realtime", "output_modalities": ["text", "audio"]}),
            "invalid_value",
            "session.output_modalities",
        ),
        (
            json!({"type": "realtime", "tools": [{"type": "function", "name": "telephony.call"}]}),
            "invalid_value",
            "session.tools[0].name",
        ),
        (
            json!({"type": "realtime", "temperature": 0.8}),
            "unknown_parameter",
            "session.temperature",
        ),
    ];
    for (patch, code, param) in &bad {
        c.send(&json!({"type": "session.update", "session": patch}))
            .await;
        let err = c.until("error").await;
        assert_shape(&fixture("error_unknown_parameter.json"), &err, "error");
        assert_eq!(err["error"]["code"], *code, "{patch} → {err}");
        assert_eq!(err["error"]["param"], *param, "{patch} → {err}");
    }
    // The sheet's own example, exactly.
    c.send(
        &json!({"type": "session.update", "session": {"type": "realtime", "bogus_field": true}}),
    )
    .await;
    let err = c.until("error").await;
    assert_eq!(
        err["error"],
        fixture("error_unknown_parameter.json")["error"]
    );

    // A rejected update changed nothing: the format is still pcmu.
    c.send(&json!({"type": "session.update", "session": {"type": "realtime"}}))
        .await;
    let again = c.until("session.updated").await;
    assert_eq!(
        again["session"]["audio"]["input"]["format"]["type"],
        "audio/pcmu"
    );

    // The retired beta shape is caught as such.
    c.send(&fixture("session_update_beta.json")).await;
    let err = c.until("error").await;
    assert_eq!(err["error"]["code"], "unknown_parameter", "{err}");
    let v = violations_of(&sim, &id);
    assert!(
        v.iter()
            .any(|(rule, _, off)| rule == "beta-session-field" && off.contains("g711_ulaw")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|(rule, _, _)| rule == "invalid-session-update"),
        "{v:?}"
    );
    sim.shutdown().await;
}

// ------------------------------------------------------------------ faults

#[tokio::test]
async fn model_faults_drop_error_and_slow_first_byte() {
    // Drop: the socket vanishes (no close frame) at the scripted time after the first audio.
    let s = faulty("model_drop_at_ms = 2000");
    let sim = sim_with(vec![s.clone()]).await;
    let mut c = connect(&sim, Connect::default()).await;
    c.start(&instructions_for(&s)).await;
    let t0 = Instant::now();
    c.silence(20).await;
    let (frame, _) = c.until_closed().await;
    let after = t0.elapsed();
    assert!(frame.is_none(), "a drop has no close frame: {frame:?}");
    let scripted = Duration::from_secs_f64(2.0 / SPEED);
    assert!(
        after >= scripted.mul_f64(0.9) && after < scripted * 5,
        "dropped after {after:?}, scripted {scripted:?}"
    );
    sim.shutdown().await;

    // Error: a server_error event, then close 1011.
    let s = faulty("model_error_at_ms = 1000");
    let sim = sim_with(vec![s.clone()]).await;
    let mut c = connect(&sim, Connect::default()).await;
    c.start(&instructions_for(&s)).await;
    c.silence(20).await;
    let (frame, events) = c.until_closed().await;
    let err = events.last().expect("an error before the close");
    assert_eq!(err["error"]["type"], "server_error", "{err}");
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1011));
    sim.shutdown().await;

    // Slow first byte: response.created at once, the first audio only after the delay.
    let s = faulty("model_first_byte_ms = 2000");
    let sim = sim_with(vec![s.clone()]).await;
    let mut c = connect(&sim, Connect::default()).await;
    c.start(&instructions_for(&s)).await;
    c.send(&json!({"type": "response.create"})).await;
    c.until("response.created").await;
    let t0 = Instant::now();
    c.until("response.output_audio.delta").await;
    let waited = t0.elapsed();
    let scripted = Duration::from_secs_f64(2.0 / SPEED);
    assert!(
        waited >= scripted.mul_f64(0.9),
        "first byte after {waited:?}, scripted {scripted:?}"
    );
    sim.shutdown().await;

    // Without faults the first byte is prompt: the delay above is the fault's.
    let s = faulty("");
    let sim = sim_with(vec![s.clone()]).await;
    let mut c = connect(&sim, Connect::default()).await;
    c.start(&instructions_for(&s)).await;
    c.send(&json!({"type": "response.create"})).await;
    c.until("response.created").await;
    let t0 = Instant::now();
    c.until("response.output_audio.delta").await;
    assert!(t0.elapsed() < scripted.mul_f64(0.5), "{:?}", t0.elapsed());
    sim.shutdown().await;
}

// ------------------------------------------------------------------ violations, by class

#[tokio::test]
async fn each_class_of_client_mistake_is_recorded_with_the_session_and_the_message() {
    let sim = sim().await;
    let mut c = connect(&sim, Connect::default()).await;
    let created = c.until("session.created").await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();

    // Audio while the input format is still the default PCM (the engine must set pcmu first).
    c.send(&json!({"type": "input_audio_buffer.append", "audio": "/////w=="}))
        .await;
    // response.create before any session.update.
    c.send(&json!({"type": "response.create"})).await;
    c.until("response.created").await;
    c.send(&json!({"type": "response.cancel"})).await;
    c.until("response.done").await;

    // (what the client sent, rule, error code the client gets)
    let cases: Vec<(String, &str, &str)> = vec![
        ("{not json".into(), "invalid-json", "invalid_json"),
        (
            json!({"type": "response.audio.delta", "delta": ""}).to_string(),
            "unknown-event",
            "invalid_value",
        ),
        (
            json!({"type": "transcription_session.update", "session": {}}).to_string(),
            "beta-or-webrtc-event",
            "invalid_value",
        ),
        (
            json!({"type": "output_audio_buffer.clear"}).to_string(),
            "beta-or-webrtc-event",
            "invalid_value",
        ),
        (
            json!({"type": "input_audio_buffer.append", "audio": "AAAA", "format": "g711_ulaw"})
                .to_string(),
            "unknown-parameter",
            "unknown_parameter",
        ),
        (
            json!({"type": "input_audio_buffer.append", "audio": "not base64!"}).to_string(),
            "bad-audio",
            "invalid_value",
        ),
        (
            json!({"type": "input_audio_buffer.append"}).to_string(),
            "missing-audio",
            "missing_required_parameter",
        ),
        (
            json!({"type": "session.update"}).to_string(),
            "missing-session",
            "missing_required_parameter",
        ),
        (
            json!({"type": "conversation.item.create", "item": {"type": "function_call_output",
                   "call_id": "call_never_made", "output": "{}"}})
            .to_string(),
            "unknown-call-id",
            "invalid_value",
        ),
        (
            json!({"type": "conversation.item.create", "item": {"type": "message", "role": "assistant",
                   "content": [{"type": "output_audio"}]}})
            .to_string(),
            "bad-item",
            "invalid_value",
        ),
        (
            json!({"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 5})
                .to_string(),
            "truncate-unknown-item",
            "item_not_found",
        ),
    ];
    for (sent, rule, code) in &cases {
        let before = violations_of(&sim, &id).len();
        c.send_text(sent.clone()).await;
        let err = c.until("error").await;
        assert_eq!(err["error"]["code"], *code, "{sent} → {err}");
        let v = violations_of(&sim, &id);
        assert_eq!(v.len(), before + 1, "{sent} recorded {:?}", &v[before..]);
        let (r, message, offending) = &v[before];
        assert_eq!(r, rule, "{sent}: {message}");
        assert!(!message.is_empty());
        assert!(
            offending.contains(&sent[..sent.len().min(20)]),
            "{sent}: offending {offending:?}"
        );
    }
    // Binary frames are refused (the sheet: text JSON only), the socket stays open.
    c.ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let err = c.until("error").await;
    assert_eq!(err["error"]["code"], "invalid_event");

    let v = violations_of(&sim, &id);
    for rule in [
        "audio-format",
        "response-before-session-update",
        "binary-frame",
    ] {
        assert!(v.iter().any(|(r, _, _)| r == rule), "{rule} not in {v:?}");
    }
    // Still open and usable after all of that.
    c.send(&fixture("session_update_ga.json")).await;
    c.until("session.updated").await;
    // Violations are served over HTTP as well, with the session id.
    let over_http: Vec<Value> = reqwest::get(format!("{}/sim/violations", sim.twilio_api_base()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        over_http.iter().any(|x| x["call"] == id.as_str()
            && x["side"] == "realtime"
            && x["rule"] == "invalid-json"),
        "{over_http:?}"
    );
    sim.shutdown().await;
}

// ------------------------------------------------------------------ how the socket ends

const DROPPED: &str = "model-socket-dropped-without-close";

/// Polls until the session's summary says who closed it.
async fn closed_by(sim: &Simulator, session: &str) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let s = sim.state().realtime.sessions();
        if let Some(by) = s
            .iter()
            .find(|s| s.id == session)
            .and_then(|s| s.closed_by.clone())
        {
            return by;
        }
        assert!(Instant::now() < deadline, "session {session} never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every socket the engine closes on purpose gets a close frame; one that just ends (EOF, or a
/// reset from an aborted connection) is a violation.
#[tokio::test]
async fn a_model_socket_the_engine_drops_without_a_close_frame_is_a_violation() {
    let sim = sim().await;
    for reset in [false, true] {
        let mut c = connect(&sim, Connect::default()).await;
        let id = c.start("You are a test of how sockets end.").await;
        if reset {
            // SO_LINGER 0: the kernel answers the close with RST instead of FIN.
            let MaybeTlsStream::Plain(tcp) = c.ws.get_ref() else {
                panic!("loopback is plain TCP")
            };
            tcp.set_zero_linger().unwrap();
        }
        drop(c);
        assert_eq!(closed_by(&sim, &id).await, "client");
        let v = violations_of(&sim, &id);
        assert_eq!(
            v.iter().map(|(r, _, _)| r.as_str()).collect::<Vec<_>>(),
            [DROPPED],
            "reset {reset}: {v:?}"
        );
        assert!(v[0].1.contains(&id), "names the session: {v:?}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_model_socket_the_engine_closes_with_1000_is_no_violation() {
    let sim = sim().await;
    let mut c = connect(&sim, Connect::default()).await;
    let id = c.start("You are a test of how sockets end.").await;
    c.ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    })))
    .await
    .unwrap();
    // The simulator answers the close, completing the handshake.
    let (frame, _) = c.until_closed().await;
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
    assert_eq!(closed_by(&sim, &id).await, "client");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.shutdown().await;
}
