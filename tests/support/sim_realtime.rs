//! The scripted Realtime client the model-side simulator tests drive, written from
//! protocols/openai-realtime.md and not from the simulator, so the simulator is checked on its
//! own and not against its twin. (Included with `#[path]`, next to `wire.rs`.)
#![allow(dead_code)]

use crate::wire;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use switchboard::sim::voice::{FRAME_BYTES, SILENCE};
use switchboard::sim::{Scenario, SimConfig, Simulator};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const STEP: Duration = Duration::from_secs(20);
/// Scripted time runs this much faster (pauses, ping interval, faults).
pub const SPEED: f64 = 4.0;

pub fn fixture(name: &str) -> Value {
    wire::fixture("realtime", name)
}

pub async fn sim_with(scenarios: Vec<Scenario>) -> Simulator {
    Simulator::start(SimConfig {
        speed: SPEED,
        scenarios,
        ..SimConfig::default()
    })
    .await
    .expect("simulator")
}

pub async fn sim() -> Simulator {
    sim_with(Scenario::builtin()).await
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The scripted client: one Realtime WebSocket and everything it received.
pub struct Client {
    pub ws: Ws,
    pub seen: Vec<Value>,
}

#[derive(Default)]
pub struct Connect<'a> {
    pub query: Option<&'a str>,
    pub key: Option<&'a str>,
    pub beta: bool,
}

pub async fn connect(sim: &Simulator, how: Connect<'_>) -> Client {
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

pub enum Got {
    Event(Value),
    Closed(Option<CloseFrame>),
}

impl Client {
    pub async fn send(&mut self, v: &Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next event or close, skipping pings; `None` when nothing came within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Got> {
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
    pub async fn until(&mut self, kind: &str) -> Value {
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
    pub async fn until_closed(&mut self) -> (Option<CloseFrame>, Vec<Value>) {
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
    pub async fn start(&mut self, instructions: &str) -> String {
        let created = self.until("session.created").await;
        let id = created["session"]["id"].as_str().expect("id").to_owned();
        let mut update = fixture("session_update_ga.json");
        update["session"]["instructions"] = json!(instructions);
        self.send(&update).await;
        let updated = self.until("session.updated").await;
        assert_eq!(updated["session"]["id"], id.as_str());
        id
    }

    pub async fn append(&mut self, audio: &[u8]) {
        for chunk in audio.chunks(FRAME_BYTES) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
            self.send(&json!({"type": "input_audio_buffer.append", "audio": b64}))
                .await;
        }
    }

    /// `ms` of mu-law silence, enough for server VAD to end a turn.
    pub async fn silence(&mut self, ms: usize) {
        self.append(&vec![SILENCE; ms * 8]).await;
    }
}

pub fn types(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|v| v["type"].as_str()).collect()
}

pub fn violations_of(sim: &Simulator, session: &str) -> Vec<(String, String, String)> {
    sim.violations()
        .into_iter()
        .filter(|v| v.call.as_deref() == Some(session))
        .map(|v| (v.rule, v.message, v.offending))
        .collect()
}

pub fn restaurant() -> Scenario {
    Scenario::builtin_named("restaurant").expect("builtin restaurant")
}

/// The agent's instructions as the engine would write them: they contain the goal, which is
/// how the model half knows which scripted agent to play.
pub fn instructions_for(s: &Scenario) -> String {
    format!(
        "You are calling on behalf of Alex Kim.\n\nGoal: {}\n",
        s.agent.goal
    )
}

// ------------------------------------------------------------------ reading responses

/// Collects one response: events until its `response.done`.
pub async fn response(c: &mut Client) -> Vec<Value> {
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

pub fn audio_of(events: &[Value]) -> Vec<u8> {
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

// ------------------------------------------------------------------ scenarios with faults

pub fn faulty(faults: &str) -> Scenario {
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
