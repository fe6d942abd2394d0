//! Twilio half of the simulator: the per-call state and the routes. Written from
//! protocols/twilio.md; nothing here knows the engine.
//!
//! By concern: the REST Calls API ([`rest`]), the call's life ([`call`]), signed webhooks and
//! status callbacks ([`webhook`]), the Media Streams client that plays the callee ([`media`]),
//! signatures ([`sign`]) and TwiML ([`twiml`]).

mod call;
pub mod echo;
mod media;
mod rest;
pub mod sign;
pub mod twiml;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxState;
use axum::routing::{get, post};
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::SimState;

/// Per-call state of the Twilio half.
pub struct State {
    calls: Mutex<HashMap<String, Arc<SimCall>>>,
    counter: AtomicU64,
    pub(crate) http: reqwest::Client,
}

impl Default for State {
    fn default() -> Self {
        // The simulator builds its own HTTP client and shares no code with the engine, so it
        // installs the process's crypto provider itself (idempotent: the first one wins).
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
    /// When the call was dialed and when it ended, as the call resource gives them (RFC 2822,
    /// Twilio's spelling).
    pub start_time: Option<String>,
    pub end_time: Option<String>,
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
    /// Callee `media` frames sent on the call's streams (20 ms each, silence included).
    #[serde(default)]
    pub media_sent: u64,
    pub clears: u64,
    /// Agent audio bytes dropped by `clear` before they were played.
    pub cleared_bytes: u64,
    pub params: BTreeMap<String, String>,
    pub callbacks_sent: u64,
    /// Status callbacks the application did not answer with 2xx (Twilio logs error 11200).
    pub callbacks_refused: u64,
    /// REST updates of this call (hang-up, cancel, redirect) carried out and answered.
    pub updates_answered: u64,
    /// Set-up timestamps (wall clock, µs), recorded for the load generator only.
    #[serde(default)]
    pub timing: crate::sim::stats::SetupTimes,
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
            if s == "initiated" {
                c.start_time.get_or_insert_with(|| twilio_date(Utc::now()));
            }
            c.status = s.to_owned();
            c.statuses.push(s.to_owned());
        });
    }
    /// The call's end: its final status, end time and duration in one step, so a fetch never
    /// sees an ended call without them.
    fn finish(&self, status: &str) -> u64 {
        self.with(|c| {
            let now = twilio_date(Utc::now());
            c.start_time.get_or_insert_with(|| now.clone());
            c.end_time = Some(now);
            let d = *c.duration_secs.get_or_insert(0);
            c.status = status.to_owned();
            c.statuses.push(status.to_owned());
            d
        })
    }
    fn status(&self) -> String {
        self.with(|c| c.status.clone())
    }
    fn resource(&self, account: &str) -> serde_json::Value {
        let c = self.summary();
        let fmt = twilio_date;
        json!({
            "sid": self.sid, "account_sid": account,
            "to": c.to, "to_formatted": c.to, "from": c.from, "from_formatted": c.from,
            "status": c.status, "direction": "outbound-api",
            "answered_by": c.answered_by, "api_version": "2010-04-01",
            "date_created": fmt(self.created), "date_updated": fmt(Utc::now()),
            "start_time": c.start_time, "end_time": c.end_time,
            // Empty until the call has ended (sheet §2.2).
            "duration": c.end_time.as_ref().and(c.duration_secs).map(|d| d.to_string()),
            "price": null, "price_unit": "USD",
            "parent_call_sid": null, "phone_number_sid": null, "forwarded_from": null,
            "caller_name": null, "group_sid": null, "trunk_sid": null, "queue_time": "0",
            "uri": format!("/2010-04-01/Accounts/{account}/Calls/{}.json", self.sid),
            "subresource_uris": {"streams": format!("/2010-04-01/Accounts/{account}/Calls/{}/Streams.json", self.sid)}
        })
    }
}

/// A date as Twilio writes it: `Tue, 09 Sep 2025 10:00:00 +0000` (RFC 2822, two-digit day).
fn twilio_date(d: chrono::DateTime<Utc>) -> String {
    d.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

pub fn routes(_state: Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls.json",
            post(rest::create),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{file}",
            get(rest::fetch).post(rest::update),
        )
        .route(
            "/sim/calls",
            get(|AxState(s): AxState<Arc<SimState>>| async move { axum::Json(s.twilio.calls()) }),
        )
}
