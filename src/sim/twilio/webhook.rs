//! Signed webhooks to the application: the standard voice parameters, `X-Twilio-Signature`
//! (protocols/twilio.md §4), and status callbacks with their scripted faults (held back,
//! duplicated, delayed).

use std::sync::Arc;

use axum::http::header;
use chrono::Utc;

use super::rest::Create;
use super::{SimCall, sign};
use crate::sim::{Side, SimState};

/// Standard voice request parameters for webhooks about `call`.
pub(super) fn voice_params(st: &SimState, call: &SimCall, status: &str) -> Vec<(String, String)> {
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
pub(super) async fn signed_post(
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

/// Status-callback bookkeeping of one call: the next `SequenceNumber`, and callbacks held back
/// to be delivered out of order.
pub(super) struct Callbacks {
    pub(super) seq: u64,
    pub(super) held: Vec<Vec<(String, String)>>,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn callback(
    st: &Arc<SimState>,
    call: &Arc<SimCall>,
    req: &Create,
    faults: &crate::sim::scenario::Faults,
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

pub(super) async fn send_callback(
    st: &Arc<SimState>,
    call: &Arc<SimCall>,
    req: &Create,
    faults: &crate::sim::scenario::Faults,
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
                call.with(|c| c.callbacks_refused += 1);
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
