//! The simulator's Twilio half, driven directly by a small scripted client written from
//! protocols/twilio.md: the test is the customer's application (a REST client, a webhook
//! server and the Media Streams WebSocket server), with no engine in the loop, so the
//! simulator is checked on its own and not against its twin. Shapes come from the sheet's
//! examples in `tests/fixtures/twilio/`.

#[path = "support/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures_util::StreamExt;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use switchboard::sim::voice::FRAME_BYTES;
use switchboard::sim::{Scenario, SimConfig, Simulator};
use tokio::sync::mpsc;
use tokio::time::Instant;
use wire::assert_shape;

/// Scripted time (ringing, pauses, the media clock) runs this much faster.
const SPEED: f64 = 4.0;
const STEP: Duration = Duration::from_secs(20);
const RESTAURANT: &str = "+12125550134";
const BUSY: &str = "+12125550135";
const NO_ANSWER: &str = "+12125550136";
const VOICEMAIL: &str = "+12125550137";

/// Form parameters of a REST request, repeated names allowed.
type Params<'a> = Vec<(&'a str, &'a str)>;

// ------------------------------------------------------------------ fixtures and shapes

fn fixture(name: &str) -> Value {
    wire::fixture("twilio", name)
}

fn fixture_text(name: &str) -> String {
    wire::fixture_text("twilio", name)
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `X-Twilio-Signature` written here from the sheet (§4), independently of the simulator.
fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
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
struct Hook {
    path: String,
    signature: Option<String>,
    params: Vec<(String, String)>,
    at: Instant,
}

impl Hook {
    fn get(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct AppState {
    hooks: Arc<Mutex<Vec<Hook>>>,
    twiml: Arc<Mutex<String>>,
    sockets: mpsc::UnboundedSender<(Option<String>, WebSocket)>,
}

/// The customer's webhook server on 127.0.0.1: records every webhook, answers `/voice` with
/// the TwiML set, and hands each Media Streams socket to the test.
struct App {
    base: String,
    state: AppState,
    sockets: mpsc::UnboundedReceiver<(Option<String>, WebSocket)>,
    task: tokio::task::JoinHandle<()>,
}

async fn hook(
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

async fn media(State(s): State<AppState>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let sig = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    ws.on_upgrade(move |socket| async move {
        let _ = s.sockets.send((sig, socket));
    })
}

impl App {
    async fn start() -> App {
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

    fn url(&self, path: &str) -> String {
        format!("{}/hooks/{path}", self.base)
    }

    fn ws_url(&self) -> String {
        format!("{}/media", self.base.replace("http://", "ws://"))
    }

    fn connect_twiml(&self) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{}"><Parameter name="callId" value="c_42"/><Parameter name="token" value="one-time-secret"/></Stream></Connect></Response>"#,
            self.ws_url()
        )
    }

    fn set_twiml(&self, xml: &str) {
        *self.state.twiml.lock().unwrap() = xml.to_owned();
    }

    fn hooks(&self, path: &str, call_sid: &str) -> Vec<Hook> {
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
    async fn wait_hook(&self, path: &str, call_sid: &str, pred: impl Fn(&Hook) -> bool) -> Hook {
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

    async fn next_socket(&mut self) -> (Option<String>, Media) {
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
struct Media {
    ws: WebSocket,
    stream_sid: String,
    /// Every message received, with its arrival time.
    log: Vec<(Instant, Value)>,
}

impl Media {
    /// The next JSON message; `None` on close or after `within`.
    async fn next(&mut self, within: Duration) -> Option<Value> {
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
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    async fn until(&mut self, event: &str) -> Value {
        loop {
            match self.next(STEP).await {
                Some(v) if v["event"] == event => return v,
                Some(_) => continue,
                None => panic!("stream ended before a '{event}' message"),
            }
        }
    }

    async fn until_mark(&mut self, name: &str) -> Instant {
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

    async fn send(&mut self, v: &Value) {
        self.send_text(v.to_string()).await;
    }

    async fn send_text(&mut self, t: String) {
        self.ws.send(Message::Text(t.into())).await.expect("send");
    }

    /// Agent audio in the sheet's §6.2 shape, `chunk` bytes per message.
    async fn play(&mut self, audio: &[u8], chunk: usize) {
        for c in audio.chunks(chunk) {
            let mut m = fixture("to_twilio_media.json");
            m["streamSid"] = json!(self.stream_sid);
            m["media"]["payload"] = json!(base64::engine::general_purpose::STANDARD.encode(c));
            self.send(&m).await;
        }
    }

    async fn mark(&mut self, name: &str) {
        let mut m = fixture("to_twilio_mark.json");
        m["streamSid"] = json!(self.stream_sid);
        m["mark"]["name"] = json!(name);
        self.send(&m).await;
    }

    async fn clear(&mut self) {
        let mut m = fixture("to_twilio_clear.json");
        m["streamSid"] = json!(self.stream_sid);
        self.send(&m).await;
    }

    /// `connected` then `start`, checked against the sheet; remembers the streamSid.
    async fn handshake(&mut self, call_sid: &str, account_sid: &str) -> Value {
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

struct Rest {
    http: reqwest::Client,
    base: String,
    account: String,
    token: String,
}

impl Rest {
    fn new(sim: &Simulator) -> Rest {
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

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value, HeaderMap) {
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

    async fn create(&self, params: &[(&str, &str)]) -> (u16, Value) {
        let (s, b, _) = self
            .send(
                self.http
                    .post(format!("{}/Calls.json", self.base))
                    .form(params),
            )
            .await;
        (s, b)
    }

    async fn fetch(&self, sid: &str) -> (u16, Value) {
        let (s, b, _) = self
            .send(self.http.get(format!("{}/Calls/{sid}.json", self.base)))
            .await;
        (s, b)
    }

    async fn update(&self, sid: &str, params: &[(&str, &str)]) -> (u16, Value) {
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
    async fn wait_status(&self, sid: &str, status: &str) -> Value {
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

async fn sim_with(config: SimConfig) -> Simulator {
    Simulator::start(SimConfig {
        speed: SPEED,
        ..config
    })
    .await
    .expect("simulator")
}

async fn sim() -> Simulator {
    sim_with(SimConfig::default()).await
}

/// A REST client and a webhook app for `sim`: (sim, rest, app, a number of the account,
/// [voice URL, status URL]).
async fn harness_on(sim: Simulator) -> (Simulator, Rest, App, String, [String; 2]) {
    let rest = Rest::new(&sim);
    let app = App::start().await;
    let from = sim.number().to_owned();
    let urls = [app.url("voice"), app.url("status")];
    (sim, rest, app, from, urls)
}

async fn harness() -> (Simulator, Rest, App, String, [String; 2]) {
    harness_on(sim().await).await
}

/// The simulator's own record of a call (`GET /sim/calls`).
async fn sim_call(sim: &Simulator, sid: &str) -> Value {
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

async fn wait_sim_call(sim: &Simulator, sid: &str, pred: impl Fn(&Value) -> bool) -> Value {
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

fn violations_of(sim: &Simulator, call: Option<&str>) -> Vec<(String, String, String)> {
    sim.violations()
        .into_iter()
        .filter(|v| v.call.as_deref() == call)
        .map(|v| (v.rule, v.message, v.offending))
        .collect()
}

fn has_rule(v: &[(String, String, String)], rule: &str) -> bool {
    v.iter().any(|(r, _, _)| r == rule)
}

/// A call whose TwiML is fetched from the app, with every status callback requested.
fn call_params<'a>(
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

// ------------------------------------------------------------------ signatures (§4)

#[test]
fn signatures_reproduce_twilios_published_vectors() {
    let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let params = vec![
        p("CallSid", "CA1234567890ABCDE"),
        p("Caller", "+14158675309"),
        p("Digits", "1234"),
        p("From", "+14158675309"),
        p("To", "+18005551212"),
    ];
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
    for sign in [
        twilio_signature as fn(&str, &str, &[(String, String)]) -> String,
        switchboard::sim::twilio::sign::signature,
    ] {
        assert_eq!(sign("12345", url, &params), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(
            sign("12345", with_port, &params),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
    }
}

// ------------------------------------------------------------------ REST (§1, §2)

#[tokio::test]
async fn rest_create_fetch_update_and_every_error_code() {
    let sim = sim().await;
    let rest = Rest::new(&sim);
    let from = sim.number().to_owned();
    let pause = "<Response><Pause length=\"60\"/></Response>";

    // Create → 201 with the call resource (§2.2), queued.
    let (status, call) = rest
        .create(&[("To", RESTAURANT), ("From", &from), ("Twiml", pause)])
        .await;
    assert_eq!(status, 201, "{call}");
    assert_shape(&fixture("call_resource.json"), &call, "call");
    let sid = call["sid"].as_str().unwrap().to_owned();
    assert!(is_sid(&sid, "CA"), "{sid}");
    assert_eq!(call["status"], "queued");
    assert_eq!(call["account_sid"], sim.account_sid());
    assert_eq!(call["direction"], "outbound-api");
    assert_eq!(call["api_version"], "2010-04-01");
    assert_eq!(call["to"], RESTAURANT);
    assert!(
        chrono::DateTime::parse_from_rfc2822(call["date_created"].as_str().unwrap()).is_ok(),
        "date_created is RFC 2822: {call}"
    );
    assert_eq!(
        call["uri"],
        format!(
            "/2010-04-01/Accounts/{}/Calls/{sid}.json",
            sim.account_sid()
        )
    );

    // Fetch → 200, the same call; it gets answered.
    let (status, fetched) = rest.fetch(&sid).await;
    assert_eq!(status, 200);
    assert_eq!(fetched["sid"], sid.as_str());
    rest.wait_status(&sid, "in-progress").await;

    // Status=canceled does not affect an answered call; Status=completed hangs it up.
    let (status, _) = rest.update(&sid, &[("Status", "canceled")]).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rest.fetch(&sid).await.1["status"], "in-progress");
    let (status, body) = rest.update(&sid, &[("Status", "completed")]).await;
    assert_eq!((status, &body["status"]), (200, &json!("completed")));
    let ended = rest.wait_status(&sid, "completed").await;
    assert!(
        ended["duration"].is_string(),
        "duration is a string: {ended}"
    );
    assert_eq!(sim_call(&sim, &sid).await["ended_by"], "api-completed");
    // An ended call cannot be updated (21220).
    let (status, err) = rest.update(&sid, &[("Status", "completed")]).await;
    assert_eq!((status, &err["code"]), (400, &json!(21220)), "{err}");

    // Status=canceled while ringing → canceled. (Nobody answers this number.)
    let (_, ringing) = rest
        .create(&[
            ("To", NO_ANSWER),
            ("From", &from),
            ("Twiml", pause),
            ("Timeout", "30"),
        ])
        .await;
    let rsid = ringing["sid"].as_str().unwrap().to_owned();
    rest.wait_status(&rsid, "ringing").await;
    let (status, _) = rest.update(&rsid, &[("Status", "canceled")]).await;
    assert_eq!(status, 200);
    rest.wait_status(&rsid, "canceled").await;
    assert_eq!(sim_call(&sim, &rsid).await["ended_by"], "api-canceled");

    // Errors: the sheet's JSON shape (§1.1) and codes (§1.2).
    let resp = reqwest::Client::new()
        .post(format!("{}/Calls.json", rest.base))
        .basic_auth(&rest.account, Some("wrong-token"))
        .form(&[
            ("To", RESTAURANT),
            ("From", from.as_str()),
            ("Twiml", pause),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"Twilio API\""
    );
    let err: Value = resp.json().await.unwrap();
    assert_shape(&fixture("error.json"), &err, "error");
    assert_eq!(
        (err["code"].clone(), err["status"].clone()),
        (json!(20003), json!(401))
    );

    // (create params, HTTP status, Twilio code)
    let cases: Vec<(Params, u16, u32)> = vec![
        (
            vec![("To", "555-1234"), ("From", &from), ("Twiml", pause)],
            400,
            21211,
        ),
        (
            vec![("To", &from), ("From", &from), ("Twiml", pause)],
            400,
            21211,
        ),
        (
            vec![("To", RESTAURANT), ("From", "12"), ("Twiml", pause)],
            400,
            21212,
        ),
        (
            vec![
                ("To", RESTAURANT),
                ("From", "+14155550100"),
                ("Twiml", pause),
            ],
            400,
            21210,
        ),
        (
            vec![
                ("To", RESTAURANT),
                ("From", &from),
                ("Twiml", pause),
                ("StatusCallback", "http://127.0.0.1:9/status"),
                ("StatusCallbackEvent", "picked-up"),
            ],
            400,
            21626,
        ),
    ];
    for (params, http, code) in &cases {
        let (status, err) = rest.create(params).await;
        assert_eq!(
            (status, err["code"].as_u64()),
            (*http, Some(u64::from(*code))),
            "{params:?} → {err}"
        );
        assert_shape(&fixture("error.json"), &err, "error");
        assert_eq!(
            err["more_info"],
            format!("https://www.twilio.com/docs/errors/{code}")
        );
        assert_eq!(err["status"], *http);
    }
    let (status, err) = rest.fetch("CA00000000000000000000000000000000").await;
    assert_eq!((status, &err["code"]), (404, &json!(20404)));
    sim.shutdown().await;

    // A trial account may only call verified numbers (21219).
    let sim = sim_with(SimConfig {
        trial: true,
        verified: vec![BUSY.to_owned()],
        ..SimConfig::default()
    })
    .await;
    let rest = Rest::new(&sim);
    let (status, err) = rest
        .create(&[("To", RESTAURANT), ("From", &from), ("Twiml", pause)])
        .await;
    assert_eq!((status, &err["code"]), (400, &json!(21219)), "{err}");
    let (status, _) = rest
        .create(&[("To", BUSY), ("From", &from), ("Twiml", pause)])
        .await;
    assert_eq!(status, 201, "a verified number may be called");
    sim.shutdown().await;

    // Rate limiting (20429) and injected 500s, per scenario.
    let mut scenarios = Scenario::builtin();
    for (number, code) in [("+12125550191", 20429), ("+12125550192", 500)] {
        let toml = format!(
            "name = \"err{code}\"\nnumber = \"{number}\"\n[answer]\nkind = \"human\"\n[agent]\ngoal = \"x\"\n[faults]\ncreate_error = {code}\n"
        );
        scenarios.push(Scenario::from_toml("inline.toml", &toml).unwrap());
    }
    let sim = sim_with(SimConfig {
        scenarios,
        ..SimConfig::default()
    })
    .await;
    let rest = Rest::new(&sim);
    let (status, err) = rest
        .create(&[("To", "+12125550191"), ("From", &from), ("Twiml", pause)])
        .await;
    assert_eq!((status, &err["code"]), (429, &json!(20429)), "{err}");
    let (status, err) = rest
        .create(&[("To", "+12125550192"), ("From", &from), ("Twiml", pause)])
        .await;
    assert_eq!(status, 500, "{err}");
    assert_shape(&fixture("error.json"), &err, "error");
    assert!(violations_of(&sim, None).is_empty());
    sim.shutdown().await;
}

// ------------------------------------------------------------------ a whole call (§3, §5, §6)

#[tokio::test]
async fn a_call_lives_as_twilio_lives_it_with_signed_webhooks_and_a_media_stream() {
    let (sim, rest, mut app, from, urls) = harness().await;
    let (status, call) = rest.create(&call_params(&urls, RESTAURANT, &from)).await;
    assert_eq!(status, 201, "{call}");
    let sid = call["sid"].as_str().unwrap().to_owned();

    // The TwiML fetch: signed POST with the standard voice parameters, on answer.
    let voice = app.wait_hook("voice", &sid, |_| true).await;
    assert_eq!(voice.get("CallStatus"), Some("in-progress"));
    assert_eq!(voice.get("Direction"), Some("outbound-api"));
    assert_eq!(voice.get("AccountSid"), Some(sim.account_sid()));
    assert_eq!(voice.get("To"), Some(RESTAURANT));
    assert_eq!(voice.get("Called"), Some(RESTAURANT));
    assert_eq!(voice.get("From"), Some(from.as_str()));
    assert_eq!(voice.get("AnsweredBy"), None, "no AMD was asked for");
    assert_eq!(
        voice.signature.as_deref(),
        Some(twilio_signature(sim.auth_token(), &urls[0], &voice.params).as_str()),
        "TwiML fetch signature"
    );

    // The stream: upgrade signed over the wss/ws URL with no params; connected, start.
    let (upgrade_sig, mut m) = app.next_socket().await;
    assert_eq!(
        upgrade_sig.as_deref(),
        Some(twilio_signature(sim.auth_token(), &app.ws_url(), &[]).as_str())
    );
    let start = m.handshake(&sid, sim.account_sid()).await;
    assert_eq!(
        start["start"]["customParameters"],
        json!({"callId": "c_42", "token": "one-time-secret"})
    );

    // Inbound media: 20 ms, 160-byte frames, counters as strings, one sequence for all events.
    let mut last: Option<(u64, u64, u64)> = None;
    for _ in 0..10 {
        let f = m.until("media").await;
        assert_shape(&fixture("media_media.json"), &f, "media");
        assert_eq!(f["streamSid"], m.stream_sid.as_str());
        assert_eq!(f["media"]["track"], "inbound");
        let n = |k: &str| -> u64 {
            let v = if k == "sequenceNumber" {
                &f[k]
            } else {
                &f["media"][k]
            };
            v.as_str()
                .unwrap_or_else(|| panic!("{k} is a string: {f}"))
                .parse()
                .unwrap()
        };
        let (seq, chunk, ts) = (n("sequenceNumber"), n("chunk"), n("timestamp"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(f["media"]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes.len(), FRAME_BYTES);
        match last {
            None => assert_eq!((seq, chunk, ts), (2, 1, 0), "{f}"),
            Some((s0, c0, t0)) => assert_eq!((seq, chunk, ts), (s0 + 1, c0 + 1, t0 + 20), "{f}"),
        }
        last = Some((seq, chunk, ts));
    }

    // Playback at real-time rate: a mark comes back only once the audio before it has played.
    let line = "Hello, this is an assistant calling to book a table.";
    let audio = sim.state().voices.register(line);
    let play = Duration::from_secs_f64(audio.len() as f64 / 8000.0 / SPEED);
    let sent = Instant::now();
    m.play(&audio, 800).await;
    m.mark("resp_1:item_1:end").await;
    let echoed = m.until_mark("resp_1:item_1:end").await;
    let took = echoed - sent;
    assert!(
        took >= play.mul_f64(0.9) && took < play * 3 + Duration::from_millis(500),
        "mark after {took:?} for {play:?} of audio"
    );
    let echo = m.log.last().unwrap().1.clone();
    assert_shape(&fixture("media_mark.json"), &echo, "mark");
    wait_sim_call(&sim, &sid, |c| c["agent_heard"] == json!([line])).await;

    // clear drops what has not played and echoes pending marks at once.
    let long = "I would also like to ask about parking, the menu, the wine list and whether the terrace is open tonight.";
    let audio = sim.state().voices.register(long);
    let play = Duration::from_secs_f64(audio.len() as f64 / 8000.0 / SPEED);
    m.play(&audio, 1600).await;
    m.mark("resp_2:item_2:end").await;
    tokio::time::sleep(play / 8).await;
    let cleared_at = Instant::now();
    m.clear().await;
    let echoed = m.until_mark("resp_2:item_2:end").await;
    assert!(
        echoed - cleared_at < play / 4,
        "pending mark echoed {:?} after clear ({play:?} of audio)",
        echoed - cleared_at
    );
    let c = wait_sim_call(&sim, &sid, |c| c["clears"] == 1).await;
    assert!(c["cleared_bytes"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["agent_cut"], json!([long]));

    // Hang up over REST: stop (sheet shape), then a normal close.
    rest.update(&sid, &[("Status", "completed")]).await;
    let stop = m.until("stop").await;
    assert_shape(&fixture("media_stop.json"), &stop, "stop");
    assert_eq!(stop["stop"]["callSid"], sid.as_str());
    // Then the socket closes (anything between is in-flight inbound audio).
    let deadline = Instant::now() + STEP;
    while m.next(STEP).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the stream never closed after stop"
        );
    }

    // Status callbacks: the requested events in order, numbered from 0, signed.
    let done = app
        .wait_hook("status", &sid, |h| h.get("CallStatus") == Some("completed"))
        .await;
    let hooks = app.hooks("status", &sid);
    let statuses: Vec<&str> = hooks.iter().filter_map(|h| h.get("CallStatus")).collect();
    assert_eq!(
        statuses,
        ["initiated", "ringing", "in-progress", "completed"]
    );
    let seqs: Vec<&str> = hooks
        .iter()
        .filter_map(|h| h.get("SequenceNumber"))
        .collect();
    assert_eq!(seqs, ["0", "1", "2", "3"]);
    let sheet: Vec<(String, String)> = form_urlencoded::parse(
        fixture_text("status_callback_completed.form")
            .replace('\n', "")
            .as_bytes(),
    )
    .into_owned()
    .collect();
    for (k, _) in &sheet {
        assert!(
            done.get(k).is_some(),
            "terminal callback lacks {k}: {:?}",
            done.params
        );
    }
    assert_eq!(done.get("CallbackSource"), Some("call-progress-events"));
    assert_eq!(done.get("SipResponseCode"), Some("200"));
    assert!(chrono::DateTime::parse_from_rfc2822(done.get("Timestamp").unwrap()).is_ok());
    assert!(done.get("CallDuration").unwrap().parse::<u64>().is_ok());
    for h in &hooks {
        assert_eq!(
            h.signature.as_deref(),
            Some(twilio_signature(sim.auth_token(), &urls[1], &h.params).as_str()),
            "status callback signature: {h:?}"
        );
        assert!(h.at >= voice.at || h.get("CallStatus") != Some("completed"));
    }
    let c = sim_call(&sim, &sid).await;
    assert_eq!(c["ended_by"], "api-completed");
    assert_eq!(c["twiml_verbs"], json!(["Connect"]));
    assert_eq!(
        c["stream_params"],
        json!([{"callId": "c_42", "token": "one-time-secret"}])
    );
    assert!(
        violations_of(&sim, Some(&sid)).is_empty(),
        "{:?}",
        violations_of(&sim, Some(&sid))
    );
    sim.shutdown().await;
}

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

#[tokio::test]
async fn busy_no_answer_and_time_limit_end_as_twilio_ends_them() {
    let (sim, rest, app, from, urls) = harness().await;

    let (_, busy) = rest.create(&call_params(&urls, BUSY, &from)).await;
    let bsid = busy["sid"].as_str().unwrap().to_owned();
    let done = app
        .wait_hook("status", &bsid, |h| h.get("SequenceNumber") == Some("2"))
        .await;
    assert_eq!(done.get("CallStatus"), Some("busy"));
    assert_eq!(done.get("SipResponseCode"), Some("486"));
    rest.wait_status(&bsid, "busy").await;
    assert!(
        app.hooks("voice", &bsid).is_empty(),
        "a busy call fetches no TwiML"
    );

    let mut p = call_params(&urls, NO_ANSWER, &from);
    p.push(("Timeout", "1"));
    let t0 = Instant::now();
    let (_, na) = rest.create(&p).await;
    let nsid = na["sid"].as_str().unwrap().to_owned();
    rest.wait_status(&nsid, "no-answer").await;
    // Timeout is real seconds (it is Twilio's, not the script's).
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    let statuses: Vec<String> = app
        .hooks("status", &nsid)
        .iter()
        .filter_map(|h| h.get("CallStatus").map(str::to_owned))
        .collect();
    assert_eq!(statuses, ["initiated", "ringing", "no-answer"]);
    let last = app.hooks("status", &nsid).pop().unwrap();
    assert_eq!(last.get("SipResponseCode"), Some("487"));

    let (_, tl) = rest
        .create(&[
            ("To", RESTAURANT),
            ("From", &from),
            ("Twiml", "<Response><Pause length=\"60\"/></Response>"),
            ("TimeLimit", "1"),
        ])
        .await;
    let tsid = tl["sid"].as_str().unwrap().to_owned();
    rest.wait_status(&tsid, "in-progress").await;
    let answered = Instant::now();
    rest.wait_status(&tsid, "completed").await;
    assert!(
        answered.elapsed() < Duration::from_secs(5),
        "TimeLimit=1 took {:?}",
        answered.elapsed()
    );
    assert_eq!(sim_call(&sim, &tsid).await["ended_by"], "time-limit");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.shutdown().await;
}

// ------------------------------------------------------------------ AMD (§7)

#[tokio::test]
async fn answering_machine_detection_sync_and_async() {
    let sim = sim().await;
    let (sim, rest, app, from, urls) = harness_on(sim).await;
    app.set_twiml("<Response><Pause length=\"1\"/></Response>");

    // Synchronous: AnsweredBy arrives with the TwiML fetch and the answered callback.
    for (to, mode, expected) in [
        (VOICEMAIL, "DetectMessageEnd", "machine_end_beep"),
        (RESTAURANT, "Enable", "human"),
    ] {
        let mut p = call_params(&urls, to, &from);
        p.push(("MachineDetection", mode));
        let (status, call) = rest.create(&p).await;
        assert_eq!(status, 201, "{call}");
        let sid = call["sid"].as_str().unwrap().to_owned();
        let voice = app.wait_hook("voice", &sid, |_| true).await;
        assert_eq!(voice.get("AnsweredBy"), Some(expected), "{mode}");
        let answered = app
            .wait_hook("status", &sid, |h| {
                h.get("CallStatus") == Some("in-progress")
            })
            .await;
        assert_eq!(answered.get("AnsweredBy"), Some(expected));
        let done = rest.wait_status(&sid, "completed").await;
        assert_eq!(done["answered_by"], expected);
    }

    // Asynchronous: the call connects at once; the result comes to AsyncAmdStatusCallback.
    let amd = app.url("amd");
    let mut p = call_params(&urls, VOICEMAIL, &from);
    p.extend([
        ("MachineDetection", "DetectMessageEnd"),
        ("AsyncAmd", "true"),
        ("AsyncAmdStatusCallback", amd.as_str()),
        ("AsyncAmdStatusCallbackMethod", "POST"),
    ]);
    let (_, call) = rest.create(&p).await;
    let sid = call["sid"].as_str().unwrap().to_owned();
    let voice = app.wait_hook("voice", &sid, |_| true).await;
    assert_eq!(
        voice.get("AnsweredBy"),
        None,
        "async AMD does not block the fetch"
    );
    let result = app.wait_hook("amd", &sid, |_| true).await;
    assert_eq!(result.get("AnsweredBy"), Some("machine_end_beep"));
    assert!(result.get("MachineDetectionDuration").is_some());
    assert_eq!(
        result.signature.as_deref(),
        Some(twilio_signature(sim.auth_token(), &amd, &result.params).as_str())
    );
    let cbs = app.hooks("status", &sid);
    assert!(
        cbs.iter().all(|h| h.get("AnsweredBy").is_none()),
        "async AMD results are not in status callbacks: {cbs:?}"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.shutdown().await;
}

// ------------------------------------------------------------------ violations, by class

#[tokio::test]
async fn malformed_twiml_ends_the_call_as_an_application_error() {
    let (sim, rest, app, from, urls) = harness().await;
    for (twiml, rule) in [
        ("<Response><Say>unclosed</Response>", "bad-twiml"),
        (
            "<Response><Connect><Stream url=\"wss://example.com/media?token=secret\"/></Connect></Response>",
            "stream-url-query",
        ),
        (
            "<Response><Connect><Stream url=\"http://example.com/media\"/></Connect></Response>",
            "stream-url-scheme",
        ),
    ] {
        app.set_twiml(twiml);
        let (_, call) = rest.create(&call_params(&urls, RESTAURANT, &from)).await;
        let sid = call["sid"].as_str().unwrap().to_owned();
        let done = app
            .wait_hook("status", &sid, |h| h.get("CallStatus") == Some("completed"))
            .await;
        assert!(done.get("CallDuration").is_some());
        let c = sim_call(&sim, &sid).await;
        assert_eq!(c["ended_by"], "application-error", "{twiml}: {c}");
        let v = sim
            .violations()
            .into_iter()
            .find(|v| v.call.as_deref() == Some(sid.as_str()))
            .unwrap_or_else(|| panic!("{twiml}: no violation"));
        assert_eq!(v.rule, rule, "{twiml}");
        assert_eq!(v.side, switchboard::sim::Side::Twiml);
        assert!(v.offending.contains(if rule == "bad-twiml" {
            "unclosed"
        } else {
            "example.com"
        }));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn each_rest_mistake_is_a_violation() {
    let sim = sim().await;
    let rest = Rest::new(&sim);
    let from = sim.number().to_owned();
    let twiml = "<Response><Hangup/></Response>";
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("To", RESTAURANT),
                ("From", &from),
                ("Twiml", twiml),
                ("Record", "true"),
                ("Foo", "1"),
            ],
            "unknown-param",
        ),
        (
            vec![
                ("To", RESTAURANT),
                ("From", &from),
                ("Twiml", twiml),
                ("Timeout", "30"),
                ("Timeout", "40"),
            ],
            "repeated-param",
        ),
        (
            vec![
                ("To", RESTAURANT),
                ("From", &from),
                ("Twiml", twiml),
                ("Url", "http://127.0.0.1:9/x"),
            ],
            "url-and-twiml",
        ),
        (
            vec![
                ("To", RESTAURANT),
                ("From", &from),
                ("Url", "http://example.com/twiml"),
            ],
            "bad-url",
        ),
    ];
    for (params, rule) in &cases {
        let before = violations_of(&sim, None).len();
        rest.create(params).await;
        let v = violations_of(&sim, None);
        assert!(v.len() > before, "{params:?} recorded nothing");
        let (r, message, offending) = &v[before];
        assert_eq!(r, rule, "{params:?}: {message}");
        assert!(offending.contains("To=%2B12125550134"), "{offending}");
    }
    // An update with nothing to do.
    let (_, call) = rest
        .create(&[
            ("To", RESTAURANT),
            ("From", &from),
            ("Twiml", "<Response><Pause length=\"60\"/></Response>"),
        ])
        .await;
    let sid = call["sid"].as_str().unwrap().to_owned();
    let (status, _) = rest.update(&sid, &[("Bogus", "1")]).await;
    assert_eq!(status, 400);
    let v = violations_of(&sim, Some(&sid));
    assert!(
        has_rule(&v, "unknown-param") && has_rule(&v, "bad-update"),
        "{v:?}"
    );
    rest.update(&sid, &[("Status", "completed")]).await;
    sim.shutdown().await;
}

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

// ------------------------------------------------------------------ faults

fn faulty(name: &str, number: &str, faults: &str) -> Scenario {
    let toml = format!(
        "name = \"{name}\"\nnumber = \"{number}\"\n[answer]\nkind = \"human\"\nring_ms = 400\n[agent]\ngoal = \"faults\"\n[faults]\n{faults}\n"
    );
    Scenario::from_toml("inline.toml", &toml).expect("scenario")
}

#[tokio::test]
async fn callback_and_media_faults_behave_as_scripted() {
    let scenarios = vec![
        faulty("dup", "+12125550181", "callback_duplicate = true"),
        faulty("ooo", "+12125550182", "callback_out_of_order = true"),
        faulty("late", "+12125550183", "callback_delay_ms = 2000"),
        faulty("drop", "+12125550184", "media_drop_at_ms = 1000"),
    ];
    let sim = sim_with(SimConfig {
        scenarios,
        ..SimConfig::default()
    })
    .await;
    let (sim, rest, mut app, from, urls) = harness_on(sim).await;
    app.set_twiml("<Response><Pause length=\"1\"/></Response>");
    let sid_of = |call: Value| call["sid"].as_str().unwrap().to_owned();

    // Duplicated: every callback twice, same SequenceNumber.
    let dup = sid_of(
        rest.create(&call_params(&urls, "+12125550181", &from))
            .await
            .1,
    );
    app.wait_hook("status", &dup, |h| h.get("CallStatus") == Some("completed"))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seqs: Vec<String> = app
        .hooks("status", &dup)
        .iter()
        .filter_map(|h| h.get("SequenceNumber").map(str::to_owned))
        .collect();
    assert_eq!(seqs, ["0", "0", "1", "1", "2", "2", "3", "3"]);

    // Out of order: `initiated` arrives after a later callback; SequenceNumber tells the truth.
    let ooo = sid_of(
        rest.create(&call_params(&urls, "+12125550182", &from))
            .await
            .1,
    );
    app.wait_hook("status", &ooo, |h| h.get("CallStatus") == Some("completed"))
        .await;
    let order: Vec<(String, String)> = app
        .hooks("status", &ooo)
        .iter()
        .map(|h| {
            (
                h.get("SequenceNumber").unwrap().to_owned(),
                h.get("CallStatus").unwrap().to_owned(),
            )
        })
        .collect();
    assert_ne!(order[0].0, "0", "{order:?}");
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        sorted.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["initiated", "ringing", "in-progress", "completed"]
    );

    // Delayed: the callback arrives the scripted delay after the event.
    let late = sid_of(
        rest.create(&call_params(&urls, "+12125550183", &from))
            .await
            .1,
    );
    rest.wait_status(&late, "ringing").await;
    let rang = Instant::now();
    let ringing = app
        .wait_hook("status", &late, |h| h.get("CallStatus") == Some("ringing"))
        .await;
    let delay = Duration::from_secs_f64(2.0 / SPEED);
    assert!(
        ringing.at - rang >= delay.mul_f64(0.8),
        "ringing callback after {:?}, scripted delay {delay:?}",
        ringing.at - rang
    );

    // Media drop: the stream vanishes (no stop, no close frame) and the call ends.
    app.set_twiml(&app.connect_twiml());
    let drop = sid_of(
        rest.create(&call_params(&urls, "+12125550184", &from))
            .await
            .1,
    );
    let (_, mut m) = app.next_socket().await;
    m.handshake(&drop, sim.account_sid()).await;
    let opened = Instant::now();
    while m.next(STEP).await.is_some() {
        assert!(opened.elapsed() < STEP, "the stream was never dropped");
    }
    assert!(
        m.log.iter().all(|(_, v)| v["event"] != "stop"),
        "a dropped stream sends no stop"
    );
    let scripted = Duration::from_secs_f64(1.0 / SPEED);
    assert!(
        opened.elapsed() >= scripted.mul_f64(0.8),
        "{:?}",
        opened.elapsed()
    );
    let c = wait_sim_call(&sim, &drop, |c| c["status"] == "completed").await;
    assert_eq!(c["ended_by"], "media-dropped");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.shutdown().await;
}

// ------------------------------------------------------------------ redirects, DTMF, AMD values

#[tokio::test]
async fn a_redirect_replaces_the_running_twiml_and_the_callee_presses_keys() {
    let toml = r#"
name = "keys"
number = "+12125550185"
[answer]
kind = "human"
ring_ms = 200
[agent]
goal = "keys"
[[script]]
dtmf = "1#"
"#;
    let sim = sim_with(SimConfig {
        scenarios: vec![Scenario::from_toml("keys.toml", toml).unwrap()],
        ..SimConfig::default()
    })
    .await;
    let (sim, rest, mut app, from, urls) = harness_on(sim).await;
    let sid = rest
        .create(&call_params(&urls, "+12125550185", &from))
        .await
        .1["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, mut m) = app.next_socket().await;
    m.handshake(&sid, sim.account_sid()).await;

    // The callee's key presses arrive as `dtmf` events (§6.1), in the one sequence.
    let mut digits = String::new();
    while digits.len() < 2 {
        let d = m.until("dtmf").await;
        assert_shape(&fixture("media_dtmf.json"), &d, "dtmf");
        assert_eq!(d["dtmf"]["track"], "inbound_track");
        assert_eq!(d["streamSid"], m.stream_sid.as_str());
        digits.push_str(d["dtmf"]["digit"].as_str().unwrap());
    }
    assert_eq!(digits, "1#");

    // Redirect with new TwiML while the stream runs (§2.3): the stream stops, the new
    // document runs: keys to the callee, a transfer, then the end.
    let (status, _) = rest
        .update(
            &sid,
            &[(
                "Twiml",
                "<Response><Play digits=\"w9\"/><Dial>+14155550123</Dial><Hangup/></Response>",
            )],
        )
        .await;
    assert_eq!(status, 200);
    m.until("stop").await;
    let c = wait_sim_call(&sim, &sid, |c| c["status"] == "completed").await;
    assert_eq!(
        c["twiml_verbs"],
        json!(["Connect", "Play w9", "Dial +14155550123", "Hangup"])
    );
    assert_eq!(c["digits_received"], "9");
    assert_eq!(c["ended_by"], "twiml-hangup");
    // A redirect of an ended call is refused.
    let (status, err) = rest
        .update(&sid, &[("Url", "http://127.0.0.1:9/twiml")])
        .await;
    assert_eq!((status, &err["code"]), (400, &json!(21220)));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.shutdown().await;
}

#[tokio::test]
async fn each_scenario_answered_by_value_is_reported() {
    let values = [
        "human",
        "machine_start",
        "machine_end_beep",
        "fax",
        "unknown",
    ];
    let scenarios: Vec<Scenario> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let kind = if *v == "human" { "human" } else { "machine" };
            let toml = format!(
                "name = \"amd{i}\"\nnumber = \"+1212555017{i}\"\n[answer]\nkind = \"{kind}\"\nring_ms = 200\nanswered_by = \"{v}\"\n[agent]\ngoal = \"amd\"\n"
            );
            Scenario::from_toml("amd.toml", &toml).unwrap()
        })
        .collect();
    let sim = sim_with(SimConfig {
        scenarios,
        ..SimConfig::default()
    })
    .await;
    let (sim, rest, app, from, urls) = harness_on(sim).await;
    app.set_twiml("<Response><Hangup/></Response>");
    for (i, v) in values.iter().enumerate() {
        let to = format!("+1212555017{i}");
        let mut p = call_params(&urls, &to, &from);
        p.push(("MachineDetection", "Enable"));
        let sid = rest.create(&p).await.1["sid"].as_str().unwrap().to_owned();
        let voice = app.wait_hook("voice", &sid, |_| true).await;
        assert_eq!(voice.get("AnsweredBy"), Some(*v));
    }
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.shutdown().await;
}
