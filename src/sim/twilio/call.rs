//! The life of one call after the REST create: initiated, ringing, answered (or busy,
//! no-answer, failed, canceled), the TwiML it runs with its Media Streams, and how it ends.
//!
//! REST updates arrive on the call's control channel and act wherever the call is: while it
//! rings, during a `<Pause>`, or inside a stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::rest::{Create, TwimlSourceSpec};
use super::twiml::{self, Verb};
use super::webhook::{Callbacks, callback, send_callback, signed_post, voice_params};
use super::{Control, SimCall, TwimlSource, media};
use crate::sim::scenario::{AnswerKind, Scenario};
use crate::sim::{Side, SimState};

pub(super) async fn run_call(
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
    // The progress events before an answer: each is the call's status, as Twilio names it.
    for status in ["initiated", "ringing"] {
        call.set_status(status);
        callback(&st, &call, &req, &faults, &mut cbs, status, status, &[]).await;
    }

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
    let duration = call.finish(&final_status);
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
    faults: &crate::sim::scenario::Faults,
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
                    Ok(x) => {
                        if st.stats.enabled() {
                            let now = crate::sim::stats::unix_us();
                            call.with(|c| {
                                c.timing.twiml_us.get_or_insert(now);
                            });
                        }
                        x
                    }
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
                    let later = call.with(|c| {
                        c.stream_params.push(stream.parameters.clone());
                        c.stream_params.len() > 1
                    });
                    if let Some(ms) = faults.restream_delay_ms.filter(|_| later)
                        && let Some(end) =
                            wait_or_control(ctl, st.config.scaled(ms), deadline).await
                    {
                        match end {
                            Ok(by) => break 'doc by,
                            Err(src) => {
                                source = src;
                                continue 'doc;
                            }
                        }
                    }
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
