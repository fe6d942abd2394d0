//! The simulator's Twilio REST Calls API, driven directly by a scripted client written from
//! protocols/twilio.md (no engine in the loop): request signatures, create/fetch/update with
//! every error code, and each REST mistake recorded as a violation.

#[path = "support/sim_twilio.rs"]
mod harness;
#[path = "support/wire.rs"]
mod wire;

use std::time::Duration;

use harness::*;
use serde_json::{Value, json};
use switchboard::sim::{Scenario, SimConfig};
use wire::assert_shape;

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
    // Once ended, the call carries when it started and ended (RFC 2822 as Twilio writes it:
    // a two-digit day, +0000) and how long it lasted, in whole seconds as a string.
    let date = |k: &str| {
        let v = ended[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} missing: {ended}"));
        assert!(
            v.ends_with(" +0000") && v.as_bytes().get(3) == Some(&b',') && v.as_bytes()[7] == b' ',
            "{k} is not in Twilio's RFC 2822 spelling: {v}"
        );
        chrono::DateTime::parse_from_rfc2822(v).unwrap_or_else(|e| panic!("{k} {v}: {e}"))
    };
    let (start, end) = (date("start_time"), date("end_time"));
    let secs: i64 = ended["duration"]
        .as_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!(
        start <= end && secs >= 0 && secs <= (end - start).num_seconds() + 1,
        "{ended}"
    );
    assert!(
        call["end_time"].is_null() && call["duration"].is_null(),
        "{call}"
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
