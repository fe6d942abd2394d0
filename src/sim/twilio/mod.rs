//! Twilio half of the simulator: the REST Calls API, the call's life with signed status
//! callbacks and TwiML fetches, and a Media Streams client that plays the callee.
//! Written from protocols/twilio.md; nothing here knows the engine.

// Handlers return `Result<_, Response>` so `?` can answer early; a response is built once per
// request, never in a loop, so its size does not matter.
#![allow(clippy::result_large_err)]

mod media;
pub mod sign;
pub mod twiml;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::scenario::{AnswerKind, Scenario};
use super::{Side, SimState};
use twiml::Verb;

/// Per-call state of the Twilio half.
pub struct State {
    calls: Mutex<HashMap<String, Arc<SimCall>>>,
    counter: AtomicU64,
    pub(crate) http: reqwest::Client,
}

impl Default for State {
    fn default() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        State {
            calls: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(1),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }
}

impl State {
    pub fn calls(&self) -> Vec<CallSummary> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<CallSummary> = calls.values().map(|c| c.summary()).collect();
        v.sort_by(|a, b| a.sid.cmp(&b.sid));
        v
    }
    pub fn call(&self, sid: &str) -> Option<CallSummary> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sid)
            .map(|c| c.summary())
    }
    fn next_sid(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let salt = std::process::id() as u64;
        format!(
            "{prefix}{:016x}{:016x}",
            salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n.rotate_left(17),
            n
        )
    }
}

/// What the simulator saw of one call, for tests and `GET /sim/calls`.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct CallSummary {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub scenario: Option<String>,
    pub status: String,
    /// Every status the call went through, in order.
    pub statuses: Vec<String>,
    pub answered_by: Option<String>,
    /// Who or what ended it: callee, api-completed, api-canceled, time-limit, twiml-end,
    /// twiml-hangup, application-error, no-answer, busy, failed, media-dropped.
    pub ended_by: Option<String>,
    pub duration_secs: Option<u64>,
    /// TwiML verbs run, in order (`Connect`, `Say`, `Play digits=1` …).
    pub twiml_verbs: Vec<String>,
    /// `<Parameter>`s of each stream opened.
    pub stream_params: Vec<BTreeMap<String, String>>,
    pub digits_received: String,
    pub callee_said: Vec<String>,
    /// Agent lines heard through the media socket, in order (a line cut by `clear` included).
    pub agent_heard: Vec<String>,
    /// Agent lines cut short by a `clear`.
    pub agent_cut: Vec<String>,
    pub marks_echoed: u64,
    pub clears: u64,
    /// Agent audio bytes dropped by `clear` before they were played.
    pub cleared_bytes: u64,
    pub params: BTreeMap<String, String>,
    pub callbacks_sent: u64,
}

pub(crate) enum Control {
    Cancel,
    Complete,
    Redirect(TwimlSource),
}

pub(crate) enum TwimlSource {
    Inline(String),
    Url(String, String),
}

pub(crate) struct SimCall {
    sid: String,
    inner: Mutex<CallSummary>,
    ctl: mpsc::UnboundedSender<Control>,
    created: chrono::DateTime<Utc>,
}

impl SimCall {
    fn summary(&self) -> CallSummary {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut CallSummary) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn set_status(&self, s: &str) {
        self.with(|c| {
            c.status = s.to_owned();
            c.statuses.push(s.to_owned());
        });
    }
    fn status(&self) -> String {
        self.with(|c| c.status.clone())
    }
    fn resource(&self, account: &str) -> serde_json::Value {
        let c = self.summary();
        let fmt = |d: chrono::DateTime<Utc>| d.to_rfc2822();
        json!({
            "sid": self.sid, "account_sid": account,
            "to": c.to, "to_formatted": c.to, "from": c.from, "from_formatted": c.from,
            "status": c.status, "direction": "outbound-api",
            "answered_by": c.answered_by, "api_version": "2010-04-01",
            "date_created": fmt(self.created), "date_updated": fmt(Utc::now()),
            "start_time": null, "end_time": null,
            "duration": c.duration_secs.map(|d| d.to_string()),
            "price": null, "price_unit": "USD",
            "parent_call_sid": null, "phone_number_sid": null, "forwarded_from": null,
            "caller_name": null, "group_sid": null, "trunk_sid": null, "queue_time": "0",
            "uri": format!("/2010-04-01/Accounts/{account}/Calls/{}.json", self.sid),
            "subresource_uris": {"streams": format!("/2010-04-01/Accounts/{account}/Calls/{}/Streams.json", self.sid)}
        })
    }
}

pub fn routes(_state: Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/2010-04-01/Accounts/{account}/Calls.json", post(create))
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{file}",
            get(fetch).post(update),
        )
        .route(
            "/sim/calls",
            get(|AxState(s): AxState<Arc<SimState>>| async move { axum::Json(s.twilio.calls()) }),
        )
}

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({
            "code": code,
            "message": message.into(),
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"Twilio API\"".parse().expect("static"),
        );
    }
    resp
}

fn authorized(st: &SimState, headers: &HeaderMap, account: &str) -> Result<(), Response> {
    let expected = format!("{}:{}", st.config.account_sid, st.config.auth_token);
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    if given.as_deref() != Some(expected.as_bytes()) || account != st.config.account_sid {
        return Err(error(StatusCode::UNAUTHORIZED, 20003, "Authenticate"));
    }
    Ok(())
}

fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

const CREATE_PARAMS: &[&str] = &[
    "To",
    "From",
    "Url",
    "Twiml",
    "Method",
    "StatusCallback",
    "StatusCallbackEvent",
    "StatusCallbackMethod",
    "Timeout",
    "TimeLimit",
    "MachineDetection",
    "AsyncAmd",
    "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod",
    "Record",
    "FallbackUrl",
    "FallbackMethod",
    "MachineDetectionTimeout",
    "MachineDetectionSpeechThreshold",
    "MachineDetectionSpeechEndThreshold",
    "MachineDetectionSilenceTimeout",
    "SendDigits",
    "CallerId",
];
const UPDATE_PARAMS: &[&str] = &[
    "Url",
    "Method",
    "Status",
    "FallbackUrl",
    "FallbackMethod",
    "StatusCallback",
    "StatusCallbackMethod",
    "Twiml",
    "TimeLimit",
];

/// A validated create request.
#[derive(Clone, Debug)]
pub(crate) struct Create {
    pub twiml: TwimlSourceSpec,
    pub status_callback: Option<(String, String)>,
    pub events: Vec<String>,
    pub timeout: u64,
    pub time_limit: u64,
    pub amd: Option<String>,
    pub async_amd: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) enum TwimlSourceSpec {
    Inline(String),
    Url(String, String),
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn check_url(
    st: &SimState,
    call: Option<&str>,
    what: &str,
    url: &str,
    raw: &str,
) -> Result<(), Response> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| url.starts_with(p));
    if url.starts_with("https://") || loopback {
        return Ok(());
    }
    st.violations.record(
        Side::TwilioRest,
        call,
        "bad-url",
        format!("{what} must be an absolute https URL (http only on loopback), got '{url}'"),
        raw,
    );
    Err(error(
        StatusCode::BAD_REQUEST,
        21205,
        format!("{what} is not a valid URL: {url}"),
    ))
}

async fn create(
    AxState(st): AxState<Arc<SimState>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&st, &headers, &account) {
        return r;
    }
    let raw = String::from_utf8_lossy(&body).into_owned();
    let params = form(&body);
    let one = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    for (k, _) in &params {
        if !CREATE_PARAMS.contains(&k.as_str()) {
            st.violations.record(
                Side::TwilioRest,
                None,
                "unknown-param",
                format!("create call: unknown parameter '{k}'"),
                &raw,
            );
        }
    }
    for k in CREATE_PARAMS
        .iter()
        .filter(|k| **k != "StatusCallbackEvent")
    {
        if params.iter().filter(|(n, _)| n == k).count() > 1 {
            st.violations.record(
                Side::TwilioRest,
                None,
                "repeated-param",
                format!("create call: '{k}' given more than once"),
                &raw,
            );
        }
    }
    let to = one("To").unwrap_or_default();
    if !is_e164(&to) {
        return error(
            StatusCode::BAD_REQUEST,
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    let from = one("From").unwrap_or_default();
    if !is_e164(&from) {
        return error(
            StatusCode::BAD_REQUEST,
            21212,
            format!("The 'From' number {from} is not a valid phone number."),
        );
    }
    if !st.config.numbers.contains(&from) {
        return error(
            StatusCode::BAD_REQUEST,
            21210,
            format!(
                "The source phone number provided, {from}, is not yet verified for your account."
            ),
        );
    }
    if to == from {
        return error(
            StatusCode::BAD_REQUEST,
            21211,
            "The 'To' number cannot be the same as the 'From' number.",
        );
    }
    let scenario = st.config.scenarios.iter().find(|s| s.number == to).cloned();
    if let Some(code) = scenario.as_ref().and_then(|s| s.faults.create_error) {
        return match code {
            500 => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                20500,
                "An internal server error has occurred",
            ),
            20429 => error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests"),
            21219 => error(
                StatusCode::BAD_REQUEST,
                21219,
                format!(
                    "The number {to} is unverified. Trial accounts may only make calls to verified numbers."
                ),
            ),
            c => error(StatusCode::BAD_REQUEST, c, format!("Simulated error {c}")),
        };
    }
    if st.config.trial && !st.config.verified.contains(&to) {
        return error(
            StatusCode::BAD_REQUEST,
            21219,
            format!(
                "The number {to} is unverified. Trial accounts may only make calls to verified numbers."
            ),
        );
    }
    let method = one("Method").unwrap_or_else(|| "POST".into());
    if method != "POST" && method != "GET" {
        return error(
            StatusCode::BAD_REQUEST,
            21205,
            format!("Method must be GET or POST, got {method}"),
        );
    }
    let twiml = match (one("Url"), one("Twiml")) {
        (Some(u), None) => {
            if let Err(r) = check_url(&st, None, "Url", &u, &raw) {
                return r;
            }
            TwimlSourceSpec::Url(u, method)
        }
        (None, Some(t)) => {
            if t.len() > 4000 {
                return error(
                    StatusCode::BAD_REQUEST,
                    21205,
                    "Twiml must be at most 4000 characters",
                );
            }
            TwimlSourceSpec::Inline(t)
        }
        (Some(_), Some(_)) => {
            st.violations.record(
                Side::TwilioRest,
                None,
                "url-and-twiml",
                "create call: Url and Twiml are mutually exclusive",
                &raw,
            );
            return error(
                StatusCode::BAD_REQUEST,
                21205,
                "Provide either Url or Twiml, not both",
            );
        }
        (None, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                21205,
                "A 'Url' or 'Twiml' parameter is required to create a call",
            );
        }
    };
    let events: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "StatusCallbackEvent")
        .map(|(_, v)| v.clone())
        .collect();
    if let Some(bad) = events
        .iter()
        .find(|e| !["initiated", "ringing", "answered", "completed"].contains(&e.as_str()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            21626,
            format!(
                "Invalid StatusCallbackEvent value '{bad}' (accepted: initiated, ringing, answered, completed)"
            ),
        );
    }
    let status_callback = match one("StatusCallback") {
        Some(u) => {
            if let Err(r) = check_url(&st, None, "StatusCallback", &u, &raw) {
                return r;
            }
            Some((
                u,
                one("StatusCallbackMethod").unwrap_or_else(|| "POST".into()),
            ))
        }
        None => None,
    };
    let num = |k: &str, default: u64, max: u64| -> Result<u64, Response> {
        match one(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= 1 && *n <= max)
                .ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        21205,
                        format!("{k} must be a whole number of seconds from 1 to {max}, got '{v}'"),
                    )
                }),
        }
    };
    let timeout = match num("Timeout", 60, 600) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let time_limit = match num("TimeLimit", 14_400, 86_400) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let amd = one("MachineDetection");
    if let Some(a) = &amd
        && a != "Enable"
        && a != "DetectMessageEnd"
    {
        return error(
            StatusCode::BAD_REQUEST,
            21205,
            format!("MachineDetection must be Enable or DetectMessageEnd, got '{a}'"),
        );
    }
    let async_amd = if one("AsyncAmd").as_deref() == Some("true") {
        one("AsyncAmdStatusCallback")
    } else {
        None
    };
    let create = Create {
        twiml,
        status_callback,
        events,
        timeout,
        time_limit,
        amd,
        async_amd,
    };

    let sid = st.twilio.next_sid("CA");
    let (tx, rx) = mpsc::unbounded_channel();
    let call = Arc::new(SimCall {
        sid: sid.clone(),
        inner: Mutex::new(CallSummary {
            sid: sid.clone(),
            to,
            from,
            scenario: scenario.as_ref().map(|s| s.name.clone()),
            status: "queued".into(),
            statuses: vec!["queued".into()],
            params: params
                .iter()
                .filter(|(k, _)| k != "StatusCallbackEvent")
                .cloned()
                .collect(),
            ..CallSummary::default()
        }),
        ctl: tx,
        created: Utc::now(),
    });
    st.twilio
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(sid, call.clone());
    let resource = call.resource(&account);
    tokio::spawn(run_call(st.clone(), call, create, scenario, rx));
    (StatusCode::CREATED, axum::Json(resource)).into_response()
}

fn lookup(st: &SimState, file: &str) -> Result<Arc<SimCall>, Response> {
    let sid = file.strip_suffix(".json").unwrap_or(file);
    st.twilio
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(sid)
        .cloned()
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                20404,
                format!("The requested resource /Calls/{sid}.json was not found"),
            )
        })
}

async fn fetch(
    AxState(st): AxState<Arc<SimState>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&st, &headers, &account) {
        return r;
    }
    match lookup(&st, &file) {
        Ok(c) => axum::Json(c.resource(&account)).into_response(),
        Err(r) => r,
    }
}

const TERMINAL: &[&str] = &["completed", "busy", "no-answer", "failed", "canceled"];

async fn update(
    AxState(st): AxState<Arc<SimState>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&st, &headers, &account) {
        return r;
    }
    let call = match lookup(&st, &file) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let raw = String::from_utf8_lossy(&body).into_owned();
    let params = form(&body);
    let one = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    for (k, _) in &params {
        if !UPDATE_PARAMS.contains(&k.as_str()) {
            st.violations.record(
                Side::TwilioRest,
                Some(&call.sid),
                "unknown-param",
                format!("update call: unknown parameter '{k}'"),
                &raw,
            );
        }
    }
    let status = call.status();
    let ended = TERMINAL.contains(&status.as_str());
    match (one("Status"), one("Twiml"), one("Url")) {
        (Some(s), None, None) if s == "canceled" || s == "completed" => {
            if ended {
                return error(
                    StatusCode::BAD_REQUEST,
                    21220,
                    format!(
                        "Call is not in-progress. Cannot redirect or change status of a {status} call."
                    ),
                );
            }
            if s == "canceled" && status == "in-progress" {
                // Twilio: canceling an answered call has no effect.
                return axum::Json(call.resource(&account)).into_response();
            }
            let _ = call.ctl.send(if s == "canceled" {
                Control::Cancel
            } else {
                Control::Complete
            });
            // Answer with the status the call is about to have, as Twilio does.
            let mut r = call.resource(&account);
            r["status"] = json!(s);
            axum::Json(r).into_response()
        }
        (Some(s), _, _) if s != "canceled" && s != "completed" => error(
            StatusCode::BAD_REQUEST,
            21218,
            format!("Status must be canceled or completed, got '{s}'"),
        ),
        (None, Some(t), None) => {
            if ended || status != "in-progress" {
                return error(
                    StatusCode::BAD_REQUEST,
                    21220,
                    format!("Call is not in-progress. Cannot redirect a {status} call."),
                );
            }
            let _ = call.ctl.send(Control::Redirect(TwimlSource::Inline(t)));
            axum::Json(call.resource(&account)).into_response()
        }
        (None, None, Some(u)) => {
            if ended || status != "in-progress" {
                return error(
                    StatusCode::BAD_REQUEST,
                    21220,
                    format!("Call is not in-progress. Cannot redirect a {status} call."),
                );
            }
            if let Err(r) = check_url(&st, Some(&call.sid), "Url", &u, &raw) {
                return r;
            }
            let m = one("Method").unwrap_or_else(|| "POST".into());
            let _ = call.ctl.send(Control::Redirect(TwimlSource::Url(u, m)));
            axum::Json(call.resource(&account)).into_response()
        }
        _ => {
            st.violations.record(
                Side::TwilioRest,
                Some(&call.sid),
                "bad-update",
                "update call: give exactly one of Status, Twiml, Url",
                &raw,
            );
            error(
                StatusCode::BAD_REQUEST,
                21205,
                "Give exactly one of Status (canceled|completed), Twiml or Url",
            )
        }
    }
}

/// Standard voice request parameters for webhooks about `call`.
fn voice_params(st: &SimState, call: &SimCall, status: &str) -> Vec<(String, String)> {
    let c = call.summary();
    let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    vec![
        p("CallSid", &call.sid),
        p("AccountSid", &st.config.account_sid),
        p("From", &c.from),
        p("To", &c.to),
        p("Caller", &c.from),
        p("Called", &c.to),
        p("CallStatus", status),
        p("Direction", "outbound-api"),
        p("ApiVersion", "2010-04-01"),
    ]
}

/// POSTs a signed form webhook; returns the body on 2xx.
pub(crate) async fn signed_post(
    st: &SimState,
    url: &str,
    params: &[(String, String)],
) -> Result<String, String> {
    let sig = sign::signature(&st.config.auth_token, url, params);
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let resp = st
        .twilio
        .http
        .post(url)
        .header("X-Twilio-Signature", sig)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request to {url} failed: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!(
            "{url} answered HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        ))
    }
}

struct Callbacks {
    seq: u64,
    held: Vec<Vec<(String, String)>>,
}

async fn run_call(
    st: Arc<SimState>,
    call: Arc<SimCall>,
    req: Create,
    scenario: Option<Scenario>,
    mut ctl: mpsc::UnboundedReceiver<Control>,
) {
    let mut cbs = Callbacks {
        seq: 0,
        held: Vec::new(),
    };
    let answer = scenario
        .as_ref()
        .map(|s| s.answer.clone())
        .unwrap_or_default();
    let faults = scenario
        .as_ref()
        .map(|s| s.faults.clone())
        .unwrap_or_default();

    tokio::time::sleep(Duration::from_millis(5)).await;
    call.set_status("initiated");
    callback(
        &st,
        &call,
        &req,
        &faults,
        &mut cbs,
        "initiated",
        "initiated",
        &[],
    )
    .await;
    call.set_status("ringing");
    callback(
        &st,
        &call,
        &req,
        &faults,
        &mut cbs,
        "ringing",
        "ringing",
        &[],
    )
    .await;

    let ring = st.config.scaled(answer.ring_ms);
    let timeout = Duration::from_secs(req.timeout);
    let (outcome, wait) = match answer.kind {
        AnswerKind::NoAnswer => ("no-answer", timeout),
        _ if ring > timeout => ("no-answer", timeout),
        AnswerKind::Busy => ("busy", ring),
        AnswerKind::Failed => ("failed", ring),
        AnswerKind::Human | AnswerKind::Machine => ("answer", ring),
    };
    let ringing = tokio::time::sleep(wait);
    tokio::pin!(ringing);
    let early_end = loop {
        tokio::select! {
            _ = &mut ringing => break None,
            c = ctl.recv() => match c {
                Some(Control::Cancel) => break Some(("canceled", "api-canceled")),
                Some(Control::Complete) => break Some(("completed", "api-completed")),
                Some(Control::Redirect(_)) | None => continue,
            },
        }
    };
    let final_status = if let Some((status, by)) = early_end {
        call.with(|c| c.ended_by = Some(by.into()));
        status.to_owned()
    } else if outcome != "answer" {
        call.with(|c| c.ended_by = Some(outcome.into()));
        outcome.to_owned()
    } else {
        answered(
            &st,
            &call,
            &req,
            scenario.as_ref(),
            &faults,
            &mut cbs,
            &mut ctl,
        )
        .await
    };
    call.set_status(&final_status);
    let duration = call.with(|c| c.duration_secs.unwrap_or(0));
    call.with(|c| c.duration_secs = Some(duration));
    let d = duration.to_string();
    let billed = duration.div_ceil(60).max(1).to_string();
    let mut terminal = vec![("CallDuration", d.as_str()), ("Duration", billed.as_str())];
    // As captured on real terminal callbacks (sheet §3.2): 200 answered, 486 busy, 487 the
    // request was withdrawn (unanswered or canceled). Nothing is claimed for `failed`.
    let sip = match final_status.as_str() {
        "completed" => Some("200"),
        "busy" => Some("486"),
        "no-answer" | "canceled" => Some("487"),
        _ => None,
    };
    if let Some(code) = sip {
        terminal.push(("SipResponseCode", code));
    }
    callback(
        &st,
        &call,
        &req,
        &faults,
        &mut cbs,
        "completed",
        &final_status,
        &terminal,
    )
    .await;
    // Release anything held back for out-of-order delivery.
    for params in std::mem::take(&mut cbs.held) {
        send_callback(&st, &call, &req, &faults, params).await;
    }
}

/// Runs an answered call to its end; returns the final status.
async fn answered(
    st: &Arc<SimState>,
    call: &Arc<SimCall>,
    req: &Create,
    scenario: Option<&Scenario>,
    faults: &super::scenario::Faults,
    cbs: &mut Callbacks,
    ctl: &mut mpsc::UnboundedReceiver<Control>,
) -> String {
    let started = tokio::time::Instant::now();
    let machine = scenario.is_some_and(|s| s.answer.kind == AnswerKind::Machine);
    let answered_by = req.amd.as_ref().map(|mode| {
        scenario
            .and_then(|s| s.answer.answered_by.clone())
            .unwrap_or_else(|| {
                match (machine, mode.as_str()) {
                    (false, _) => "human",
                    (true, "DetectMessageEnd") => "machine_end_beep",
                    (true, _) => "machine_start",
                }
                .to_owned()
            })
    });
    call.set_status("in-progress");
    let sync_amd = answered_by.clone().filter(|_| req.async_amd.is_none());
    call.with(|c| c.answered_by = answered_by.clone());
    let amd_extra: Vec<(&str, &str)> = sync_amd
        .as_deref()
        .map(|a| vec![("AnsweredBy", a)])
        .unwrap_or_default();
    callback(
        st,
        call,
        req,
        faults,
        cbs,
        "answered",
        "in-progress",
        &amd_extra,
    )
    .await;
    if let (Some(url), Some(a)) = (req.async_amd.clone(), answered_by.clone()) {
        let (st2, call2) = (st.clone(), call.clone());
        tokio::spawn(async move {
            let mut p = voice_params(&st2, &call2, "in-progress");
            p.push(("AnsweredBy".into(), a));
            p.push(("MachineDetectionDuration".into(), "1200".into()));
            if let Err(e) = signed_post(&st2, &url, &p).await {
                tracing::debug!("async AMD callback failed: {e}");
            }
        });
    }
    let deadline = started + Duration::from_secs(req.time_limit);
    let mut callee = media::Callee::new(st, scenario);
    let mut source = match &req.twiml {
        TwimlSourceSpec::Inline(t) => TwimlSource::Inline(t.clone()),
        TwimlSourceSpec::Url(u, m) => TwimlSource::Url(u.clone(), m.clone()),
    };
    let ended_by = 'doc: loop {
        let xml = match &source {
            TwimlSource::Inline(t) => t.clone(),
            TwimlSource::Url(u, m) => {
                if m == "GET" {
                    st.violations.record(
                        Side::Twiml,
                        Some(&call.sid),
                        "twiml-get",
                        "TwiML fetch by GET is not simulated; use POST",
                        u,
                    );
                }
                let mut p = voice_params(st, call, "in-progress");
                if let Some(a) = &sync_amd {
                    p.push(("AnsweredBy".into(), a.clone()));
                }
                match signed_post(st, u, &p).await {
                    Ok(x) => x,
                    Err(e) => {
                        st.violations.record(
                            Side::Twiml,
                            Some(&call.sid),
                            "twiml-fetch-failed",
                            format!("fetching TwiML failed: {e}"),
                            u,
                        );
                        break 'doc "application-error";
                    }
                }
            }
        };
        let verbs = match twiml::parse(&xml) {
            Ok(v) => v,
            Err(e) => {
                st.violations.record(
                    Side::Twiml,
                    Some(&call.sid),
                    "bad-twiml",
                    format!("invalid TwiML: {e}"),
                    &xml,
                );
                break 'doc "application-error";
            }
        };
        for verb in verbs {
            let label = match &verb {
                Verb::Connect { .. } => "Connect".to_owned(),
                Verb::Say(t) => format!("Say {t}"),
                Verb::Pause(n) => format!("Pause {n}"),
                Verb::Hangup => "Hangup".into(),
                Verb::Play { digits, url } => format!(
                    "Play {}",
                    digits.clone().or(url.clone()).unwrap_or_default()
                ),
                Verb::Dial(n) => format!("Dial {n}"),
                Verb::Redirect(u) => format!("Redirect {u}"),
            };
            call.with(|c| c.twiml_verbs.push(label));
            match verb {
                Verb::Connect { stream, .. } => {
                    if stream.url.contains('?') {
                        st.violations.record(Side::Twiml, Some(&call.sid), "stream-url-query", "<Stream url> must not carry a query string (Twilio error 31920); use <Parameter>", &stream.url);
                        break 'doc "application-error";
                    }
                    call.with(|c| c.stream_params.push(stream.parameters.clone()));
                    match media::run_stream(st, call, &stream, &mut callee, ctl, deadline, faults)
                        .await
                    {
                        media::StreamEnd::ServerClosed => continue,
                        media::StreamEnd::Redirect(src) => {
                            source = src;
                            continue 'doc;
                        }
                        media::StreamEnd::Ended(by) => break 'doc by,
                    }
                }
                Verb::Say(_) | Verb::Dial(_) => {}
                Verb::Pause(n) => {
                    if let Some(end) = wait_or_control(ctl, Duration::from_secs(n), deadline).await
                    {
                        match end {
                            Ok(by) => break 'doc by,
                            Err(src) => {
                                source = src;
                                continue 'doc;
                            }
                        }
                    }
                }
                Verb::Hangup => break 'doc "twiml-hangup",
                Verb::Play { digits, .. } => {
                    if let Some(d) = digits {
                        let valid = d
                            .chars()
                            .all(|ch| ch.is_ascii_digit() || "wW*#ABCD".contains(ch));
                        if !valid {
                            st.violations.record(
                                Side::Twiml,
                                Some(&call.sid),
                                "bad-digits",
                                "<Play digits> takes 0-9 A-D * # w W",
                                &d,
                            );
                        }
                        call.with(|c| {
                            c.digits_received
                                .extend(d.chars().filter(|ch| !"wW".contains(*ch)))
                        });
                    }
                }
                Verb::Redirect(u) => {
                    source = TwimlSource::Url(u, "POST".into());
                    continue 'doc;
                }
            }
        }
        break "twiml-end";
    };
    let secs = started.elapsed().as_secs();
    call.with(|c| {
        c.ended_by.get_or_insert(ended_by.to_owned());
        c.duration_secs = Some(secs);
    });
    "completed".into()
}

/// Waits `d`, handling REST updates meanwhile. `Some(Ok(by))` = the call ended,
/// `Some(Err(src))` = redirected, `None` = the wait finished.
async fn wait_or_control(
    ctl: &mut mpsc::UnboundedReceiver<Control>,
    d: Duration,
    deadline: tokio::time::Instant,
) -> Option<Result<&'static str, TwimlSource>> {
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return None,
            _ = tokio::time::sleep_until(deadline) => return Some(Ok("time-limit")),
            c = ctl.recv() => match c {
                Some(Control::Complete) => return Some(Ok("api-completed")),
                Some(Control::Redirect(s)) => return Some(Err(s)),
                Some(Control::Cancel) | None => {}
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn callback(
    st: &Arc<SimState>,
    call: &Arc<SimCall>,
    req: &Create,
    faults: &super::scenario::Faults,
    cbs: &mut Callbacks,
    event: &str,
    status: &str,
    extra: &[(&str, &str)],
) {
    if req.status_callback.is_none()
        || (event != "completed" && !req.events.iter().any(|e| e == event))
    {
        return;
    }
    let mut p = voice_params(st, call, status);
    p.push(("CallbackSource".into(), "call-progress-events".into()));
    p.push(("SequenceNumber".into(), cbs.seq.to_string()));
    p.push(("Timestamp".into(), Utc::now().to_rfc2822()));
    if let Some(a) = call
        .with(|c| c.answered_by.clone())
        .filter(|_| req.async_amd.is_none() && !extra.iter().any(|(k, _)| *k == "AnsweredBy"))
    {
        p.push(("AnsweredBy".into(), a));
    }
    for (k, v) in extra {
        p.push(((*k).to_owned(), (*v).to_owned()));
    }
    cbs.seq += 1;
    if faults.callback_out_of_order && event != "completed" && cbs.held.is_empty() {
        // Hold the first callback back; it is sent after a later one.
        cbs.held.push(p);
        return;
    }
    send_callback(st, call, req, faults, p).await;
    for held in std::mem::take(&mut cbs.held) {
        send_callback(st, call, req, faults, held).await;
    }
}

async fn send_callback(
    st: &Arc<SimState>,
    call: &Arc<SimCall>,
    req: &Create,
    faults: &super::scenario::Faults,
    params: Vec<(String, String)>,
) {
    let Some((url, method)) = req.status_callback.clone() else {
        return;
    };
    if method != "POST" {
        st.violations.record(
            Side::TwilioRest,
            Some(&call.sid),
            "callback-get",
            "StatusCallbackMethod GET is not simulated; use POST",
            &method,
        );
    }
    let times = if faults.callback_duplicate { 2 } else { 1 };
    let delay = faults.callback_delay_ms.map(|ms| st.config.scaled(ms));
    let (st, call) = (st.clone(), call.clone());
    let send = async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        for _ in 0..times {
            call.with(|c| c.callbacks_sent += 1);
            if let Err(e) = signed_post(&st, &url, &params).await {
                tracing::debug!(call = %call.sid, "status callback failed: {e}");
            }
        }
    };
    if delay.is_some() {
        tokio::spawn(send);
    } else {
        send.await;
    }
}
