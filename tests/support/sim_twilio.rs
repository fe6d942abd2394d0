//! The scripted customer application the Twilio-side simulator tests drive: a REST client, a
//! webhook server and the Media Streams WebSocket server, written from protocols/twilio.md
//! and not from the simulator, so the simulator is checked on its own and not against its
//! twin. (Included with `#[path]`, next to `wire.rs`.)
#![allow(dead_code)]

use crate::wire::{self, assert_shape};
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard::sim::{Scenario, SimConfig, Simulator};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Scripted time (ringing, pauses, the media clock) runs this much faster.
pub const SPEED: f64 = 4.0;
pub const STEP: Duration = Duration::from_secs(20);
pub const RESTAURANT: &str = "+12125550134";
pub const BUSY: &str = "+12125550135";
pub const NO_ANSWER: &str = "+12125550136";
pub const VOICEMAIL: &str = "+12125550137";

/// Form parameters of a REST request, repeated names allowed.
pub type Params<'a> = Vec<(&'a str, &'a str)>;

// ------------------------------------------------------------------ fixtures and shapes

pub fn fixture(name: &str) -> Value {
    wire::fixture("twilio", name)
}

pub fn fixture_text(name: &str) -> String {
    wire::fixture_text("twilio", name)
}

pub fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `X-Twilio-Signature` written here from the sheet (§4), independently of the simulator.
pub fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut s = url.to_owned();
    for (k, v) in sorted {
        s.push_str(k);
        s.push_str(v);
    }
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(s.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

// ------------------------------------------------------------------ the customer's app

/// One webhook request the simulator made to the app.
#[derive(Clone, Debug)]
pub struct Hook {
    pub path: String,
    pub signature: Option<String>,
    pub params: Vec<(String, String)>,
    pub at: Instant,
}

impl Hook {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
pub struct AppState {
    pub hooks: Arc<Mutex<Vec<Hook>>>,
    pub twiml: Arc<Mutex<String>>,
    pub sockets: mpsc::UnboundedSender<(Option<String>, WebSocket)>,
}

/// The customer's webhook server on 127.0.0.1: records every webhook, answers `/voice` with
/// the TwiML set, and hands each Media Streams socket to the test.
pub struct App {
    pub base: String,
    pub state: AppState,
    pub sockets: mpsc::UnboundedReceiver<(Option<String>, WebSocket)>,
    pub task: tokio::task::JoinHandle<()>,
}

pub async fn hook(
    State(s): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    s.hooks.lock().unwrap().push(Hook {
        path: path.clone(),
        signature: headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        params,
        at: Instant::now(),
    });
    if path == "voice" {
        let xml = s.twiml.lock().unwrap().clone();
        return ([("content-type", "text/xml")], xml).into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

pub async fn media(
    State(s): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let sig = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    ws.on_upgrade(move |socket| async move {
        let _ = s.sockets.send((sig, socket));
    })
}

impl App {
    pub async fn start() -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let state = AppState {
            hooks: Arc::default(),
            twiml: Arc::new(Mutex::new(String::new())),
            sockets: tx,
        };
        let router = Router::new()
            .route("/media", get(media))
            .route("/hooks/{path}", post(hook))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let app = App {
            base: format!("http://{addr}"),
            state,
            sockets: rx,
            task,
        };
        app.set_twiml(&app.connect_twiml());
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/hooks/{path}", self.base)
    }

    pub fn ws_url(&self) -> String {
        format!("{}/media", self.base.replace("http://", "ws://"))
    }

    pub fn connect_twiml(&self) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{}"><Parameter name="callId" value="c_42"/><Parameter name="token" value="one-time-secret"/></Stream></Connect></Response>"#,
            self.ws_url()
        )
    }

    pub fn set_twiml(&self, xml: &str) {
        *self.state.twiml.lock().unwrap() = xml.to_owned();
    }

    pub fn hooks(&self, path: &str, call_sid: &str) -> Vec<Hook> {
        self.state
            .hooks
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path && h.get("CallSid") == Some(call_sid))
            .cloned()
            .collect()
    }

    /// Waits until `path` has received a webhook for the call that satisfies `pred`.
    pub async fn wait_hook(
        &self,
        path: &str,
        call_sid: &str,
        pred: impl Fn(&Hook) -> bool,
    ) -> Hook {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(h) = self.hooks(path, call_sid).into_iter().find(|h| pred(h)) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "no matching /{path} webhook for {call_sid}; got {:#?}",
                self.hooks(path, call_sid)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn next_socket(&mut self) -> (Option<String>, Media) {
        let (sig, ws) = tokio::time::timeout(STEP, self.sockets.recv())
            .await
            .expect("the simulator opened the media stream in time")
            .expect("socket");
        (
            sig,
            Media {
                ws,
                stream_sid: String::new(),
                log: Vec::new(),
            },
        )
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------ Media Streams, server side

/// The application's end of one Media Streams socket.
pub struct Media {
    pub ws: WebSocket,
    pub stream_sid: String,
    /// Every message received, with its arrival time.
    pub log: Vec<(Instant, Value)>,
}

impl Media {
    /// The next JSON message; `None` on close or after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("Twilio sent non-JSON {t}: {e}"));
                    self.log.push((Instant::now(), v.clone()));
                    return Some(v);
                }
                Ok(Message::Close(_)) => {
                    // Answer the close as an application must: axum queues the reply close
                    // frame, and it goes out on the next read, write or flush.
                    let _ = self.ws.flush().await;
                    return None;
                }
                Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Reads (anything in flight) until the simulator closes the socket, and answers its close.
    pub async fn until_closed(&mut self) {
        let deadline = Instant::now() + STEP;
        while self.next(STEP).await.is_some() {
            assert!(Instant::now() < deadline, "the stream never closed");
        }
    }

    pub async fn until(&mut self, event: &str) -> Value {
        loop {
            match self.next(STEP).await {
                Some(v) if v["event"] == event => return v,
                Some(_) => continue,
                None => panic!("stream ended before a '{event}' message"),
            }
        }
    }

    pub async fn until_mark(&mut self, name: &str) -> Instant {
        loop {
            match self.next(STEP).await {
                Some(v) if v["event"] == "mark" && v["mark"]["name"] == name => {
                    return self.log.last().unwrap().0;
                }
                Some(_) => continue,
                None => panic!("stream ended before mark '{name}' came back"),
            }
        }
    }

    pub async fn send(&mut self, v: &Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_text(&mut self, t: String) {
        self.ws.send(Message::Text(t.into())).await.expect("send");
    }

    /// Agent audio in the sheet's §6.2 shape, `chunk` bytes per message.
    pub async fn play(&mut self, audio: &[u8], chunk: usize) {
        for c in audio.chunks(chunk) {
            let mut m = fixture("to_twilio_media.json");
            m["streamSid"] = json!(self.stream_sid);
            m["media"]["payload"] = json!(base64::engine::general_purpose::STANDARD.encode(c));
            self.send(&m).await;
        }
    }

    pub async fn mark(&mut self, name: &str) {
        let mut m = fixture("to_twilio_mark.json");
        m["streamSid"] = json!(self.stream_sid);
        m["mark"]["name"] = json!(name);
        self.send(&m).await;
    }

    pub async fn clear(&mut self) {
        let mut m = fixture("to_twilio_clear.json");
        m["streamSid"] = json!(self.stream_sid);
        self.send(&m).await;
    }

    /// `connected` then `start`, checked against the sheet; remembers the streamSid.
    pub async fn handshake(&mut self, call_sid: &str, account_sid: &str) -> Value {
        let connected = self.next(STEP).await.expect("connected");
        assert_eq!(connected, fixture("media_connected.json"));
        let start = self.next(STEP).await.expect("start");
        let mut shape = fixture("media_start.json");
        shape["start"]["customParameters"] = json!({});
        assert_shape(&shape, &start, "start");
        assert!(start["start"]["customParameters"].is_object(), "{start}");
        assert_eq!(start["event"], "start");
        assert_eq!(start["sequenceNumber"], "1");
        let s = &start["start"];
        assert_eq!(s["callSid"], call_sid);
        assert_eq!(s["accountSid"], account_sid);
        assert_eq!(s["tracks"], json!(["inbound"]));
        assert_eq!(
            s["mediaFormat"],
            fixture("media_start.json")["start"]["mediaFormat"]
        );
        let sid = start["streamSid"].as_str().unwrap();
        assert!(is_sid(sid, "MZ"), "{sid}");
        assert_eq!(s["streamSid"], sid);
        self.stream_sid = sid.to_owned();
        start
    }
}

// ------------------------------------------------------------------ REST client

pub struct Rest {
    pub http: reqwest::Client,
    pub base: String,
    pub account: String,
    pub token: String,
}

impl Rest {
    pub fn new(sim: &Simulator) -> Rest {
        Rest {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base: format!(
                "{}/2010-04-01/Accounts/{}",
                sim.twilio_api_base(),
                sim.account_sid()
            ),
            account: sim.account_sid().to_owned(),
            token: sim.auth_token().to_owned(),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value, HeaderMap) {
        let resp = req
            .basic_auth(&self.account, Some(&self.token))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    pub async fn create(&self, params: &[(&str, &str)]) -> (u16, Value) {
        let (s, b, _) = self
            .send(
                self.http
                    .post(format!("{}/Calls.json", self.base))
                    .form(params),
            )
            .await;
        (s, b)
    }

    pub async fn fetch(&self, sid: &str) -> (u16, Value) {
        let (s, b, _) = self
            .send(self.http.get(format!("{}/Calls/{sid}.json", self.base)))
            .await;
        (s, b)
    }

    pub async fn update(&self, sid: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let (s, b, _) = self
            .send(
                self.http
                    .post(format!("{}/Calls/{sid}.json", self.base))
                    .form(params),
            )
            .await;
        (s, b)
    }

    /// Polls the call resource until its status is `status`.
    pub async fn wait_status(&self, sid: &str, status: &str) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let (_, call) = self.fetch(sid).await;
            if call["status"] == status {
                return call;
            }
            assert!(
                Instant::now() < deadline,
                "call {sid} never reached {status}: {call}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub async fn sim_with(config: SimConfig) -> Simulator {
    Simulator::start(SimConfig {
        speed: SPEED,
        ..config
    })
    .await
    .expect("simulator")
}

pub async fn sim() -> Simulator {
    sim_with(SimConfig::default()).await
}

/// A REST client and a webhook app for `sim`: (sim, rest, app, a number of the account,
/// [voice URL, status URL]).
pub async fn harness_on(sim: Simulator) -> (Simulator, Rest, App, String, [String; 2]) {
    let rest = Rest::new(&sim);
    let app = App::start().await;
    let from = sim.number().to_owned();
    let urls = [app.url("voice"), app.url("status")];
    (sim, rest, app, from, urls)
}

pub async fn harness() -> (Simulator, Rest, App, String, [String; 2]) {
    harness_on(sim().await).await
}

/// The simulator's own record of a call (`GET /sim/calls`).
pub async fn sim_call(sim: &Simulator, sid: &str) -> Value {
    let calls: Vec<Value> = reqwest::get(format!("{}/sim/calls", sim.twilio_api_base()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    calls
        .into_iter()
        .find(|c| c["sid"] == sid)
        .unwrap_or_else(|| panic!("{sid} not in /sim/calls"))
}

pub async fn wait_sim_call(sim: &Simulator, sid: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let c = sim_call(sim, sid).await;
        if pred(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "condition never held: {c}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn violations_of(sim: &Simulator, call: Option<&str>) -> Vec<(String, String, String)> {
    sim.violations()
        .into_iter()
        .filter(|v| v.call.as_deref() == call)
        .map(|v| (v.rule, v.message, v.offending))
        .collect()
}

pub fn has_rule(v: &[(String, String, String)], rule: &str) -> bool {
    v.iter().any(|(r, _, _)| r == rule)
}

/// A call whose TwiML is fetched from the app, with every status callback requested.
pub fn call_params<'a>(
    app_urls: &'a [String; 2],
    to: &'a str,
    from: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("To", to),
        ("From", from),
        ("Url", app_urls[0].as_str()),
        ("Method", "POST"),
        ("StatusCallback", app_urls[1].as_str()),
        ("StatusCallbackEvent", "initiated"),
        ("StatusCallbackEvent", "ringing"),
        ("StatusCallbackEvent", "answered"),
        ("StatusCallbackEvent", "completed"),
        ("StatusCallbackMethod", "POST"),
    ]
}

// ------------------------------------------------------------------ scenarios with faults

pub fn faulty(name: &str, number: &str, faults: &str) -> Scenario {
    let toml = format!(
        "name = \"{name}\"\nnumber = \"{number}\"\n[answer]\nkind = \"human\"\nring_ms = 400\n[agent]\ngoal = \"faults\"\n[faults]\n{faults}\n"
    );
    Scenario::from_toml("inline.toml", &toml).expect("scenario")
}
