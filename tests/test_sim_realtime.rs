//! The simulator's OpenAI Realtime half, driven directly by a small scripted client written
//! from protocols/openai-realtime.md: no engine in the loop, so the simulator is checked on its
//! own and not against its twin. Messages the client sends and the shapes it expects come from
//! the sheet's examples in `tests/fixtures/realtime/`.

#[path = "support/wire.rs"]
mod wire;

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::sim::voice::{FRAME_BYTES, SILENCE};
use switchboard::sim::{Scenario, SimConfig, Simulator};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wire::assert_shape;

const STEP: Duration = Duration::from_secs(20);
/// Scripted time runs this much faster (pauses, ping interval, faults).
const SPEED: f64 = 4.0;

fn fixture(name: &str) -> Value {
    wire::fixture("realtime", name)
}

async fn sim_with(scenarios: Vec<Scenario>) -> Simulator {
    Simulator::start(SimConfig {
        speed: SPEED,
        scenarios,
        ..SimConfig::default()
    })
    .await
    .expect("simulator")
}

async fn sim() -> Simulator {
    sim_with(Scenario::builtin()).await
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The scripted client: one Realtime WebSocket and everything it received.
struct Client {
    ws: Ws,
    seen: Vec<Value>,
}

#[derive(Default)]
struct Connect<'a> {
    query: Option<&'a str>,
    key: Option<&'a str>,
    beta: bool,
}

async fn connect(sim: &Simulator, how: Connect<'_>) -> Client {
    let query = how.query.unwrap_or("?model=gpt-realtime");
    let mut req = format!("{}{query}", sim.realtime_url())
        .into_client_request()
        .unwrap();
    let key = how.key.unwrap_or(sim.api_key()).to_owned();
    if !key.is_empty() {
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    if how.beta {
        req.headers_mut()
            .insert("openai-beta", "realtime=v1".parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the upgrade completes even when the session is refused");
    assert_eq!(resp.status().as_u16(), 101);
    Client {
        ws,
        seen: Vec::new(),
    }
}

enum Got {
    Event(Value),
    Closed(Option<CloseFrame>),
}

impl Client {
    async fn send(&mut self, v: &Value) {
        self.send_text(v.to_string()).await;
    }

    async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next event or close, skipping pings; `None` when nothing came within `within`.
    async fn next(&mut self, within: Duration) -> Option<Got> {
        let deadline = Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent non-JSON {t}: {e}"));
                    assert!(v["type"].is_string(), "event without type: {v}");
                    assert!(
                        v["event_id"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("event_")),
                        "event without event_id: {v}"
                    );
                    self.seen.push(v.clone());
                    return Some(Got::Event(v));
                }
                Some(Ok(Message::Close(f))) => return Some(Got::Closed(f)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Got::Closed(None)),
            }
        }
    }

    /// Reads until an event of type `kind`; panics on close or timeout.
    async fn until(&mut self, kind: &str) -> Value {
        loop {
            match self.next(STEP).await {
                Some(Got::Event(v)) if v["type"] == kind => return v,
                Some(Got::Event(_)) => continue,
                Some(Got::Closed(f)) => panic!("closed ({f:?}) while waiting for {kind}"),
                None => panic!(
                    "no {kind} within {STEP:?}; saw {:?}",
                    self.seen.iter().map(|v| &v["type"]).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Reads until the server closes; returns the close frame and the events before it.
    async fn until_closed(&mut self) -> (Option<CloseFrame>, Vec<Value>) {
        let mut events = Vec::new();
        loop {
            match self.next(STEP).await {
                Some(Got::Event(v)) => events.push(v),
                Some(Got::Closed(f)) => return (f, events),
                None => panic!("the server did not close; events: {events:?}"),
            }
        }
    }

    /// Opens a session: `session.created`, then the sheet's GA `session.update` with the given
    /// instructions, then `session.updated`. Returns the session id.
    async fn start(&mut self, instructions: &str) -> String {
        let created = self.until("session.created").await;
        let id = created["session"]["id"].as_str().expect("id").to_owned();
        let mut update = fixture("session_update_ga.json");
        update["session"]["instructions"] = json!(instructions);
        self.send(&update).await;
        let updated = self.until("session.updated").await;
        assert_eq!(updated["session"]["id"], id.as_str());
        id
    }

    async fn append(&mut self, audio: &[u8]) {
        for chunk in audio.chunks(FRAME_BYTES) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
            self.send(&json!({"type": "input_audio_buffer.append", "audio": b64}))
                .await;
        }
    }

    /// `ms` of mu-law silence, enough for server VAD to end a turn.
    async fn silence(&mut self, ms: usize) {
        self.append(&vec![SILENCE; ms * 8]).await;
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|v| v["type"].as_str()).collect()
}

fn violations_of(sim: &Simulator, session: &str) -> Vec<(String, String, String)> {
    sim.violations()
        .into_iter()
        .filter(|v| v.call.as_deref() == Some(session))
        .map(|v| (v.rule, v.message, v.offending))
        .collect()
}

fn restaurant() -> Scenario {
    Scenario::builtin_named("restaurant").expect("builtin restaurant")
}

/// The agent's instructions as the engine would write them: they contain the goal, which is
/// how the model half knows which scripted agent to play.
fn instructions_for(s: &Scenario) -> String {
    format!(
        "You are calling on behalf of Alex Kim.\n\nGoal: {}\n",
        s.agent.goal
    )
}

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

// ------------------------------------------------------------------ speech in (§5.2, §5.3)

#[tokio::test]
async fn the_callees_audio_is_heard_turned_and_transcribed() {
    let sim = sim().await;
    let s = restaurant();
    let line = s.script[1].callee.clone().expect("callee line");
    // The Twilio half registers what the callee says; here the test stands in for it.
    let audio = sim.state().voices.register(&line);
    let mut c = connect(&sim, Connect::default()).await;
    let id = c.start(&instructions_for(&s)).await;
    // Without the agent speaking first, a greeting turn would interleave; turn it off.
    c.send(
        &json!({"type": "session.update", "session": {"type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": false}}}}}),
    )
    .await;
    c.until("session.updated").await;

    c.silence(200).await;
    c.append(&audio).await;
    c.silence(700).await;
    let started = c.until("input_audio_buffer.speech_started").await;
    let item = started["item_id"].as_str().unwrap().to_owned();
    // 200 ms of silence came first; the start includes 300 ms of prefix padding.
    assert_eq!(started["audio_start_ms"], 0);
    let stopped = c.until("input_audio_buffer.speech_stopped").await;
    let line_ms = (audio.len() / 8) as u64;
    assert_eq!(stopped["audio_end_ms"], 200 + line_ms);
    assert_eq!(stopped["item_id"], item.as_str());
    let committed = c.until("input_audio_buffer.committed").await;
    assert_eq!(committed["item_id"], item.as_str());
    let added = c.until("conversation.item.added").await;
    assert_eq!(added["item"]["role"], "user");
    assert_eq!(added["item"]["content"][0]["type"], "input_audio");
    c.until("conversation.item.done").await;
    let done = c
        .until("conversation.item.input_audio_transcription.completed")
        .await;
    assert_eq!(done["transcript"], line.as_str());
    assert_eq!(done["item_id"], item.as_str());
    assert_shape(
        &fixture("transcription_completed_usage.json"),
        &done["usage"],
        "usage",
    );
    let order = types(&c.seen);
    let pos = |t: &str| order.iter().position(|x| *x == t).unwrap();
    assert!(
        pos("input_audio_buffer.speech_started") < pos("input_audio_buffer.speech_stopped")
            && pos("input_audio_buffer.speech_stopped") < pos("input_audio_buffer.committed")
            && pos("input_audio_buffer.committed") < pos("conversation.item.added")
            && pos("conversation.item.done")
                < pos("conversation.item.input_audio_transcription.completed"),
        "{order:?}"
    );
    assert!(violations_of(&sim, &id).is_empty());

    // The same line with one byte changed is not the callee's line: a violation, and no
    // transcript.
    let mut altered = audio.clone();
    altered[audio.len() / 2] ^= 0x01;
    c.append(&altered).await;
    c.silence(700).await;
    c.until("input_audio_buffer.committed").await;
    c.until("conversation.item.done").await;
    let v = violations_of(&sim, &id);
    assert!(
        v.iter().any(|(rule, _, _)| rule == "unrecognized-audio"),
        "{v:?}"
    );
    let transcripts = c
        .seen
        .iter()
        .filter(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
        .count();
    assert_eq!(transcripts, 1, "altered audio was transcribed");
    let summary = sim
        .state()
        .realtime
        .sessions()
        .into_iter()
        .find(|x| x.id == id)
        .unwrap();
    assert_eq!(summary.callee_heard, vec![line]);
    sim.shutdown().await;
}

// ------------------------------------------------------------------ responses (§5.2, §5.3)

/// Collects one response: events until its `response.done`.
async fn response(c: &mut Client) -> Vec<Value> {
    let created = c.until("response.created").await;
    assert_eq!(created["response"]["status"], "in_progress");
    let mut events = vec![created];
    loop {
        let Some(Got::Event(v)) = c.next(STEP).await else {
            panic!("no response.done; got {:?}", types(&events))
        };
        let done = v["type"] == "response.done";
        events.push(v);
        if done {
            return events;
        }
    }
}

fn audio_of(events: &[Value]) -> Vec<u8> {
    events
        .iter()
        .filter(|e| e["type"] == "response.output_audio.delta")
        .flat_map(|e| {
            base64::engine::general_purpose::STANDARD
                .decode(e["delta"].as_str().unwrap())
                .expect("base64 delta")
        })
        .collect()
}

#[tokio::test]
async fn a_scripted_conversation_with_a_tool_call_end_to_end() {
    let sim = sim().await;
    let s = restaurant();
    let mut c = connect(&sim, Connect::default()).await;
    let id = c.start(&instructions_for(&s)).await;

    // The agent speaks first on response.create (§7).
    c.send(&json!({"type": "response.create"})).await;
    let first = response(&mut c).await;
    let kinds = types(&first);
    assert_eq!(
        kinds[..3],
        [
            "response.created",
            "response.output_item.added",
            "conversation.item.added"
        ]
    );
    for t in [
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
    ] {
        assert!(kinds.contains(&t), "{t} missing from {kinds:?}");
    }
    let delta = first
        .iter()
        .find(|e| e["type"] == "response.output_audio.delta")
        .unwrap();
    assert_shape(&fixture("output_audio_delta.json"), delta, "delta");
    // No beta names, ever.
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("response.audio") || *k == "conversation.item.created"),
        "{kinds:?}"
    );
    // Audio of realistic length for the words: exactly the line's rendering.
    let said = s.script[0].agent.clone().unwrap();
    let audio = audio_of(&first);
    assert_eq!(
        audio.len(),
        switchboard::sim::voice::frames_for(&said) * FRAME_BYTES
    );
    assert_eq!(audio, switchboard::sim::voice::synthesize(&said));
    let transcript: String = first
        .iter()
        .filter(|e| e["type"] == "response.output_audio_transcript.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(transcript, said);
    let done = first.last().unwrap();
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["object"], "realtime.response");
    assert_shape(
        &fixture("response_done_usage.json"),
        &done["response"]["usage"],
        "usage",
    );
    assert!(done["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // The callee answers; server VAD ends the turn and the agent answers on its own.
    for step in [1usize, 3] {
        let line = s.script[step].callee.clone().unwrap();
        let audio = sim.state().voices.register(&line);
        c.append(&audio).await;
        c.silence(700).await;
        let heard = c
            .until("conversation.item.input_audio_transcription.completed")
            .await;
        assert_eq!(heard["transcript"], line.as_str());
        let reply = response(&mut c).await;
        let text: String = reply
            .iter()
            .filter(|e| e["type"] == "response.output_audio_transcript.done")
            .map(|e| e["transcript"].as_str().unwrap())
            .collect();
        assert_eq!(text, s.script[step + 1].agent.clone().unwrap());
        if step == 3 {
            // The last turn ends with the scripted tool call (GA: with its name).
            let call = reply
                .iter()
                .find(|e| e["type"] == "response.function_call_arguments.done")
                .unwrap_or_else(|| panic!("no tool call in {:?}", types(&reply)));
            assert_shape(
                &fixture("function_call_arguments_done.json"),
                call,
                "function_call_arguments.done",
            );
            assert_eq!(call["name"], "end_call");
            let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(args, s.script[4].tool.clone().unwrap().arguments);
            let output_item = &reply.last().unwrap()["response"]["output"];
            assert!(
                output_item
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["type"] == "function_call" && i["call_id"] == call["call_id"]),
                "{output_item}"
            );

            // The client answers the call (§4 shape) and it is accepted.
            let mut out = fixture("item_create_function_call_output.json");
            out["item"]["call_id"] = call["call_id"].clone();
            c.send(&out).await;
            let added = c.until("conversation.item.added").await;
            assert_eq!(added["item"]["type"], "function_call_output");
            assert_eq!(added["item"]["call_id"], call["call_id"]);
            c.until("conversation.item.done").await;
        }
    }
    // A user text item is accepted too.
    c.send(&fixture("item_create_user_text.json")).await;
    let added = c.until("conversation.item.added").await;
    assert_eq!(added["item"]["role"], "user");

    assert!(
        violations_of(&sim, &id).is_empty(),
        "{:?}",
        violations_of(&sim, &id)
    );
    let summary = sim
        .state()
        .realtime
        .sessions()
        .into_iter()
        .find(|x| x.id == id)
        .unwrap();
    assert_eq!(summary.agent_said.len(), 3, "{summary:?}");
    assert_eq!(summary.function_outputs, vec!["{\"ok\":true}".to_owned()]);
    assert_eq!(summary.input_format, "audio/pcmu");
    sim.shutdown().await;
}

#[tokio::test]
async fn cancel_truncate_and_barge_in() {
    let sim = sim().await;
    let s = Scenario::builtin_named("interrupt").unwrap();
    let long = s.script[0].agent.clone().unwrap();
    let mut c = connect(&sim, Connect::default()).await;
    let id = c.start(&instructions_for(&s)).await;

    // response.cancel mid-response: deltas stop, response.done says cancelled by the client.
    c.send(&json!({"type": "response.create"})).await;
    c.until("response.created").await;
    let first = c.until("response.output_audio.delta").await;
    let item = first["item_id"].as_str().unwrap().to_owned();
    // A second response while one is active is refused.
    c.send(&json!({"type": "response.create"})).await;
    let err = c.until("error").await;
    assert_eq!(
        err["error"]["code"],
        "conversation_already_has_active_response"
    );
    c.send(&json!({"type": "response.cancel"})).await;
    let done = c.until("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    assert_eq!(
        done["response"]["status_details"]["reason"],
        "client_cancelled"
    );
    let sent = audio_of(&c.seen).len();
    assert!(
        sent < switchboard::sim::voice::frames_for(&long) * FRAME_BYTES,
        "the whole line was sent before the cancel"
    );
    // Nothing more of that response arrives.
    while let Some(Got::Event(v)) = c.next(Duration::from_millis(300)).await {
        assert_ne!(v["type"], "response.output_audio.delta", "{v}");
    }
    // Nothing to cancel now.
    c.send(&json!({"type": "response.cancel"})).await;
    let err = c.until("error").await;
    assert_eq!(err["error"]["code"], "response_cancel_not_active");

    // truncate (§4, §6): inside the audio sent → truncated; beyond it or unknown → errors.
    let heard_ms = (sent / 8 / 2) as u64;
    let mut t = fixture("truncate.json");
    t["item_id"] = json!(item);
    t["audio_end_ms"] = json!(heard_ms);
    c.send(&t).await;
    let ok = c.until("conversation.item.truncated").await;
    assert_eq!(ok["item_id"], item.as_str());
    assert_eq!(ok["audio_end_ms"], heard_ms);
    t["audio_end_ms"] = json!(sent as u64 / 8 + 1000);
    c.send(&t).await;
    let err = c.until("error").await;
    assert_eq!(err["error"]["param"], "audio_end_ms", "{err}");
    t["item_id"] = json!("item_nope");
    t["audio_end_ms"] = json!(0);
    c.send(&t).await;
    let err = c.until("error").await;
    assert_eq!(err["error"]["code"], "item_not_found", "{err}");
    let v = violations_of(&sim, &id);
    for rule in ["truncate-beyond-audio", "truncate-unknown-item"] {
        assert!(v.iter().any(|(r, _, _)| r == rule), "{rule} not in {v:?}");
    }

    assert!(
        c.seen
            .iter()
            .all(|e| e["type"] != "input_audio_buffer.speech_started")
    );

    // Barge-in (a new session, the agent's first line again): speech during a response
    // cancels it with reason turn_detected.
    let mut c = connect(&sim, Connect::default()).await;
    c.start(&instructions_for(&s)).await;
    c.send(&json!({"type": "response.create"})).await;
    c.until("response.output_audio.delta").await;
    let interruption = s.script[1].callee.clone().unwrap();
    let audio = sim.state().voices.register(&interruption);
    c.append(&audio[..FRAME_BYTES * 5]).await;
    c.until("input_audio_buffer.speech_started").await;
    let done = c.until("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    assert_eq!(
        done["response"]["status_details"]["reason"],
        "turn_detected"
    );
    sim.shutdown().await;
}

// ------------------------------------------------------------------ faults

fn faulty(faults: &str) -> Scenario {
    let toml = format!(
        r#"
name = "faulty"
number = "+12125550190"
[answer]
kind = "human"
[agent]
goal = "Check the simulator's model faults"
[[script]]
agent = "Hello, this is a test of the model's faults."
[faults]
{faults}
"#
    );
    Scenario::from_toml("faulty.toml", &toml).expect("scenario")
}

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
