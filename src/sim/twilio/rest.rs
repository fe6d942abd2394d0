//! The REST Calls API: create, fetch and update (cancel, complete, redirect), with Twilio's
//! Basic auth, form parsing, URL checks and error shapes (protocols/twilio.md §1, §2).
//!
//! A request Twilio would refuse gets Twilio's status and code; a request it would accept but
//! that no correct client sends (an unknown or repeated parameter) is also recorded as a
//! violation.

// Handlers return `Result<_, Response>` so `?` can answer early; a response is built once per
// request, never in a loop, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::Utc;
use serde_json::json;
use tokio::sync::mpsc;

use super::call::run_call;
use super::{CallSummary, Control, SimCall, TwimlSource};
use crate::sim::{Side, SimState};

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
pub(super) struct Create {
    pub twiml: TwimlSourceSpec,
    pub status_callback: Option<(String, String)>,
    pub events: Vec<String>,
    pub timeout: u64,
    pub time_limit: u64,
    pub amd: Option<String>,
    pub async_amd: Option<String>,
}

#[derive(Clone, Debug)]
pub(super) enum TwimlSourceSpec {
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

pub(super) async fn create(
    AxState(st): AxState<Arc<SimState>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let created_us = crate::sim::stats::unix_us();
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

    let timing = crate::sim::stats::SetupTimes {
        key: to.clone(),
        rest_create_us: st.stats.enabled().then_some(created_us),
        ..Default::default()
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
            timing,
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

pub(super) async fn fetch(
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

pub(super) async fn update(
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
    tokio::time::sleep(st.config.update_delay).await;
    call.with(|c| c.updates_answered += 1);
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
