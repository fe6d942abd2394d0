//! A simulated call's life as the customer's application sees it, driven by a scripted client
//! written from protocols/twilio.md (no engine in the loop): signed webhooks and status
//! callbacks, TwiML, endings, answering-machine detection, redirects, and scripted faults.

#[path = "support/sim_twilio.rs"]
mod harness;
#[path = "support/wire.rs"]
mod wire;

use std::time::Duration;

use base64::Engine as _;
use harness::*;
use serde_json::{Value, json};
use switchboard::sim::voice::FRAME_BYTES;
use switchboard::sim::{Scenario, SimConfig};
use tokio::time::Instant;
use wire::assert_shape;

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

// ------------------------------------------------------------------ redirects and DTMF

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
    m.until_closed().await;
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

// ------------------------------------------------------------------ faults

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
    // Each callback travels on its own request, so `completed` may land before a held-back
    // one: wait for all four.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.hooks("status", &ooo).len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            app.hooks("status", &ooo)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
