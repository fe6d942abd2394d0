//! REST `/v1` over real sockets: every route, every error class, the bearer token, and the
//! OpenAPI document, with the engine on the simulator and a real SQLite store.

#[path = "support/store_stack.rs"]
mod store_stack;
#[path = "support/store_tmp.rs"]
mod store_tmp;

use std::time::Duration;

use serde_json::{Value, json};
use store_stack::{RESTAURANT, Stack, TOKEN, start};
use switchboard::engine::store::Store;
use switchboard::engine::{
    CallDetail, CallId, CallRequest, CallState, EventKind, NewEvent, Speaker, Usage,
};

async fn error_of(resp: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    let msg = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(!msg.is_empty());
    msg
}

/// Sends `req` and checks it is refused with `status` and `code`, and that the message says
/// `needle` (what was wrong or what is accepted).
async fn refused(req: reqwest::RequestBuilder, status: u16, code: &str, needle: &str) {
    let m = error_of(req.send().await.unwrap(), status, code).await;
    assert!(m.contains(needle), "{m}");
}

/// Writes `n` finished calls straight into the store (as a previous run would have).
async fn seed_ended_calls(s: &Stack, n: usize) -> Vec<CallId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = CallId::generate();
        ids.push(id);
        s.store
            .append(vec![
                NewEvent::now(
                    id,
                    EventKind::Created {
                        request: CallRequest::new("+14155550100", format!("seeded call {i}")),
                    },
                ),
                NewEvent::now(
                    id,
                    EventKind::Transcript {
                        speaker: Speaker::Callee,
                        text: format!("hello {i}"),
                        offset_ms: 61_500,
                        interrupted: false,
                    },
                ),
                NewEvent::now(
                    id,
                    EventKind::Ended {
                        state: if i % 2 == 0 {
                            CallState::Completed
                        } else {
                            CallState::Failed
                        },
                        detail: CallDetail::CalleeHungUp,
                        reason: None,
                        outcome: None,
                        duration_secs: 3,
                        usage: Usage::default(),
                    },
                ),
            ])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ids
}

#[tokio::test]
async fn auth_is_required_on_every_route() {
    let s = start("rest-auth", |_| {}).await;
    let id = CallId::generate();
    let routes = [
        ("GET", "/v1/calls".to_string()),
        ("POST", "/v1/calls".to_string()),
        ("GET", format!("/v1/calls/{id}")),
        ("POST", format!("/v1/calls/{id}/cancel")),
        ("GET", format!("/v1/calls/{id}/transcript")),
        ("GET", "/v1/events".to_string()),
        ("GET", "/v1/openapi.json".to_string()),
    ];
    for (method, path) in &routes {
        let url = format!("{}{path}", s.base);
        let req = if *method == "GET" {
            s.http.get(&url)
        } else {
            s.http.post(&url).json(&json!({}))
        };
        let msg = error_of(req.send().await.unwrap(), 401, "unauthorized").await;
        assert!(msg.contains("Bearer"), "{msg}");
        let req = if *method == "GET" {
            s.http.get(&url)
        } else {
            s.http.post(&url).json(&json!({}))
        };
        let resp = req.bearer_auth("wrong-token").send().await.unwrap();
        error_of(resp, 401, "unauthorized").await;
    }
    let ok = s.get("/v1/calls").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_ne!(TOKEN, "wrong-token");
    s.stop().await;
}

#[tokio::test]
async fn a_call_through_every_route() {
    let s = start("rest-flow", |_| {}).await;
    let resp = s
        .post("/v1/calls")
        .json(&json!({"to": RESTAURANT, "goal": "Book a table for two at 7:30 tonight",
                      "context": "The booking is for Alex Kim. Alex's callback number is +14155550123."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = resp.json().await.unwrap();
    let id = created["callId"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/calls/{id}"));
    assert!(created["state"].is_string());

    let rec: Value = s.get_json(&location).await;
    assert_eq!(rec["id"], id.as_str());
    assert_eq!(rec["request"]["to"], RESTAURANT);

    let call_id: CallId = id.parse().unwrap();
    let done = s
        .stack
        .engine
        .wait(call_id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(done.state, CallState::Completed, "{done:?}");

    let rec: Value = s.get_json(&location).await;
    assert_eq!(rec["state"], "completed");

    let t: Value = s.get_json(&format!("/v1/calls/{id}/transcript")).await;
    assert_eq!(t["callId"], id.as_str());
    let turns = t["turns"].as_array().unwrap();
    assert!(turns.len() >= 2, "{t}");
    let text = s
        .get(&format!("/v1/calls/{id}/transcript"))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert!(
        text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = text.text().await.unwrap();
    assert_eq!(text.lines().count(), turns.len());
    assert!(text.contains("agent: "), "{text}");

    let list: Value = s.get_json("/v1/calls?state=completed").await;
    assert!(
        list["calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id.as_str())
    );

    let cancel = s
        .post(&format!("/v1/calls/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let cancel: Value = cancel.json().await.unwrap();
    assert_eq!(
        cancel["canceled"], false,
        "an ended call is not canceled again"
    );
    assert_eq!(cancel["state"], "completed");
    let served: Value = s.get_json("/v1/openapi.json").await;
    assert_eq!(served, switchboard::http::openapi::openapi_document());
    assert!(s.sim().violations().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn cancel_while_dialing() {
    let s = start("rest-cancel", |_| {}).await;
    let id = s.place_restaurant_call().await;
    let resp = s
        .post(&format!("/v1/calls/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["canceled"], true, "{body}");
    let rec = s
        .stack
        .engine
        .wait(id.parse().unwrap(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(rec.state, CallState::Canceled);
    s.stop().await;
}

#[tokio::test]
async fn list_paginates_newest_first_with_filters() {
    let s = start("rest-list", |_| {}).await;
    let ids = seed_ended_calls(&s, 5).await;
    let mut seen = Vec::new();
    let mut path = "/v1/calls?limit=2".to_string();
    for _ in 0..5 {
        let page: Value = s.get_json(&path).await;
        let calls = page["calls"].as_array().unwrap();
        assert!(calls.len() <= 2);
        seen.extend(calls.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        match page["nextBefore"].as_str() {
            Some(b) => path = format!("/v1/calls?limit=2&before={b}"),
            None => break,
        }
    }
    let want: Vec<String> = ids.iter().rev().map(|i| i.to_string()).collect();
    assert_eq!(seen, want);
    let failed: Value = s.get_json("/v1/calls?state=failed").await;
    assert_eq!(failed["calls"].as_array().unwrap().len(), 2);
    // Calls from "before a restart" answer every read route.
    let t = s
        .get(&format!("/v1/calls/{}/transcript", ids[0]))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(t, "[01:01.5] callee: hello 0\n");
    s.stop().await;
}

#[tokio::test]
async fn every_client_error_is_json_and_names_the_problem() {
    let s = start("rest-errors", |_| {}).await;
    let unknown = CallId::generate();

    refused(
        s.post("/v1/calls").json(&json!({"goal": "x"})),
        400,
        "invalid_request",
        "to",
    )
    .await;
    refused(s.post("/v1/calls"), 400, "invalid_request", "empty").await;
    refused(
        s.post("/v1/calls")
            .header("content-type", "application/json")
            .body("{not json"),
        400,
        "invalid_request",
        "goal",
    )
    .await;
    let m = error_of(
        s.post("/v1/calls")
            .json(&json!({"to": "555-0100", "goal": "x"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert!(m.contains("555-0100") || m.contains("E.164"), "{m}");

    let m = error_of(
        s.get("/v1/calls/not-an-id").send().await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert!(m.contains("not-an-id") && m.contains("ULID"), "{m}");
    for path in [
        format!("/v1/calls/{unknown}"),
        format!("/v1/calls/{unknown}/transcript"),
        format!("/v1/events?callId={unknown}"),
    ] {
        refused(s.get(&path), 404, "not_found", &unknown.to_string()).await;
    }
    error_of(
        s.post(&format!("/v1/calls/{unknown}/cancel"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;

    refused(s.get("/v1/nope"), 404, "not_found", "/v1/nope").await;
    for (q, needle) in [
        ("state=ringing", "accepted: dialing"),
        ("limit=0", "1 to 500"),
        ("limit=many", "1 to 500"),
        ("before=yesterday", "ULID"),
        ("sort=asc", "accepted: state, limit, before"),
    ] {
        let m = error_of(
            s.get(&format!("/v1/calls?{q}")).send().await.unwrap(),
            400,
            "invalid_request",
        )
        .await;
        assert!(m.contains(needle), "{q}: {m}");
    }
    refused(
        s.get("/v1/events?after=-1"),
        400,
        "invalid_request",
        "after",
    )
    .await;
    refused(
        s.get("/v1/events").header("last-event-id", "abc"),
        400,
        "invalid_request",
        "Last-Event-ID",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn capacity_shutdown_and_storage_failures() {
    let s = start("rest-capacity", |c| c.engine.calls.max_concurrent = 1).await;
    let first = s.place_restaurant_call().await;
    let resp = s
        .post("/v1/calls")
        .json(&json!({"to": RESTAURANT, "goal": "a second call"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "5");
    let m = error_of(resp, 429, "at_capacity").await;
    assert!(m.contains("max_concurrent"), "{m}");

    s.stack.engine.shutdown().await;
    let resp = s
        .post("/v1/calls")
        .json(&json!({"to": RESTAURANT, "goal": "after shutdown"}))
        .send()
        .await
        .unwrap();
    error_of(resp, 503, "shutting_down").await;

    // A store that can no longer be read is a 500 with a plain message, not a panic.
    s.store.close().await;
    refused(
        s.get(&format!("/v1/calls/{first}")),
        500,
        "storage_error",
        "storage",
    )
    .await;
    s.stop().await;
}

#[test]
fn openapi_document_covers_every_route_and_resolves() {
    let doc = switchboard::http::openapi::openapi_document();
    assert_eq!(doc["openapi"], "3.1.0");
    for p in [
        "/v1/calls",
        "/v1/calls/{id}",
        "/v1/calls/{id}/cancel",
        "/v1/calls/{id}/transcript",
        "/v1/events",
        "/v1/openapi.json",
    ] {
        assert!(doc["paths"][p].is_object(), "missing {p}");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "CallRequest",
        "CallRecord",
        "CallState",
        "ErrorBody",
        "CallEvent",
    ] {
        assert!(schemas.contains_key(name), "missing schema {name}");
    }
    // Every $ref points at a schema that exists.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(schemas.contains_key(name), "dangling ref {r}");
    }
    let req = &schemas["CallRequest"];
    assert!(req["required"].as_array().unwrap().contains(&json!("to")));
    assert_eq!(req["additionalProperties"], false, "{req}");
    assert!(schemas["ErrorDetail"]["properties"]["field"].is_object());
    let create = &doc["paths"]["/v1/calls"]["post"]["responses"];
    for code in ["400", "401", "403", "413", "415"] {
        assert!(create[code].is_object(), "POST /v1/calls lacks {code}");
    }
    assert!(doc["paths"]["/v1/calls/{id}"]["get"]["responses"]["403"].is_object());
}

/// The error body's code, message and field, after checking the status.
async fn error_body(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"].clone()
}

#[tokio::test]
async fn refused_inputs_name_what_was_wrong_and_what_is_accepted() {
    let s = start("rest-strict", |_| {}).await;
    // A misspelled field is refused, not run with the default.
    let e = error_body(
        s.post("/v1/calls")
            .json(&json!({"to": RESTAURANT, "goal": "x", "max_duration_secs": 60}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(e["field"], "max_duration_secs", "{e}");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("max_duration_secs") && m.contains("maxDurationSecs"),
        "{m}"
    );
    // The engine's validation names the field.
    for (body, field, accepted) in [
        (json!({"to": "555", "goal": "x"}), "to", "E.164"),
        (
            json!({"to": RESTAURANT, "goal": "x", "maxDurationSecs": 1}),
            "maxDurationSecs",
            "from 10 to 3600",
        ),
        (
            json!({"to": RESTAURANT, "goal": "x", "voice": "robot"}),
            "voice",
            "marin",
        ),
        (
            json!({"to": RESTAURANT, "goal": "x", "language": "english"}),
            "language",
            "en-US",
        ),
    ] {
        let e = error_body(
            s.post("/v1/calls").json(&body).send().await.unwrap(),
            400,
            "invalid_request",
        )
        .await;
        assert_eq!(e["field"], field, "{e}");
        let m = e["message"].as_str().unwrap();
        assert!(m.starts_with(field) && m.contains(accepted), "{m}");
    }
    // A body that is JSON but not an object.
    for body in ["[]", "\"x\"", "3"] {
        let e = error_body(
            s.post("/v1/calls")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap(),
            400,
            "invalid_request",
        )
        .await;
        let m = e["message"].as_str().unwrap();
        assert!(
            m.contains("a JSON object is required") && m.contains("goal"),
            "{body}: {m}"
        );
    }
    // Only the canonical spelling of a call id reaches a call.
    let id = seed_ended_calls(&s, 1).await[0].to_string();
    assert_eq!(
        s.get(&format!("/v1/calls/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(id.starts_with('0'));
    for bad in [
        id.to_ascii_lowercase(),
        format!("O{}", &id[1..]),
        format!("8{}", &id[1..]),
        format!("%20{id}"),
    ] {
        for path in [
            format!("/v1/calls/{bad}"),
            format!("/v1/calls/{bad}/transcript"),
            format!("/v1/events?callId={bad}"),
        ] {
            let e = error_body(s.get(&path).send().await.unwrap(), 400, "invalid_request").await;
            let m = e["message"].as_str().unwrap();
            assert!(
                m.contains("is not accepted") && m.contains("accepted: a call id"),
                "{path}: {m}"
            );
        }
    }
    assert!(s.sim().state().twilio.calls().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_web_page_cannot_reach_the_api() {
    let s = start("rest-web", |_| {}).await;
    let call = json!({"to": RESTAURANT, "goal": "x"}).to_string();
    // A text/plain body (what a cross-site form or no-cors fetch sends) is refused.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let e = error_body(
            s.post("/v1/calls")
                .header("content-type", ct)
                .body(call.clone())
                .send()
                .await
                .unwrap(),
            415,
            "unsupported_media_type",
        )
        .await;
        let m = e["message"].as_str().unwrap();
        assert!(
            m.contains(ct) && m.contains("accepted: Content-Type: application/json"),
            "{m}"
        );
    }
    // A foreign Origin is refused on every route, before anything runs.
    for origin in [
        "https://evil.example",
        "null",
        "http://localhost.evil.example",
    ] {
        for req in [
            s.post("/v1/calls")
                .json(&json!({"to": RESTAURANT, "goal": "x"})),
            s.get("/v1/calls"),
            s.get("/v1/events"),
        ] {
            let resp = req.header("origin", origin).send().await.unwrap();
            assert!(resp.headers().get("access-control-allow-origin").is_none());
            let e = error_body(resp, 403, "forbidden").await;
            let m = e["message"].as_str().unwrap();
            assert!(
                m.contains(origin) && m.contains("server.allowed_origins"),
                "{m}"
            );
        }
    }
    assert!(s.sim().state().twilio.calls().is_empty());
    // Loopback pages pass, without CORS headers (none configured).
    let resp = s
        .get("/v1/calls")
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // charset is fine.
    let resp = s
        .post("/v1/calls")
        .header("content-type", "application/json; charset=utf-8")
        .body(call.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // The bearer scheme in any case; a 401 names the header and scheme.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let resp = s
            .http
            .get(format!("{}/v1/calls", s.base))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{scheme}");
    }
    for auth in [None, Some("Basic abc"), Some("bearer wrong")] {
        let mut req = s.http.get(format!("{}/v1/calls", s.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let e = error_body(req.send().await.unwrap(), 401, "unauthorized").await;
        let m = e["message"].as_str().unwrap();
        assert!(
            m.contains("Authorization: Bearer <server.api_token>"),
            "{auth:?}: {m}"
        );
    }
    // Framework errors have the documented shape too.
    let big = format!(
        "{{\"to\":\"{RESTAURANT}\",\"goal\":\"{}\"}}",
        "x".repeat(1_200_000)
    );
    let e = error_body(
        s.post("/v1/calls")
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("1048576"), "{e}");
    // Oversized headers: the JSON shape with the limit named, not hyper's empty 431; a request
    // just under the limit is served.
    let e = error_body(
        s.get("/v1/calls")
            .header("x-padding", "p".repeat(40 * 1024))
            .send()
            .await
            .unwrap(),
        431,
        "headers_too_large",
    )
    .await;
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("32768") && m.contains("accepted:"), "{m}");
    let resp = s
        .get("/v1/calls")
        .header("x-padding", "p".repeat(30 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e = error_body(s.get("/nowhere").send().await.unwrap(), 404, "not_found").await;
    assert!(e["message"].as_str().unwrap().contains("/nowhere"), "{e}");
    let e = error_body(
        s.http
            .delete(format!("{}/v1/calls", s.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("DELETE") && m.contains("accepted:"), "{m}");
    s.stop().await;
}

#[tokio::test]
async fn listed_origins_get_cors_and_others_do_not() {
    let s = start("rest-cors", |c| {
        c.server.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let pre = s
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/calls", s.base))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let methods = pre.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let resp = s
        .get("/v1/calls")
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let e = error_body(
        s.get("/v1/calls")
            .header("origin", "https://other.example")
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("https://app.example"),
        "{e}"
    );
    s.stop().await;
}

#[tokio::test]
async fn carrier_status_is_the_carriers_final_word_after_a_cancel() {
    let s = start("rest-carrier-final", |_| {}).await;
    let id = s.place_restaurant_call().await;
    let call_id: CallId = id.parse().unwrap();
    // Cancel while it rings, so the carrier's own `canceled` comes after our end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rec = s.stack.engine.status(call_id).await.unwrap();
        if rec.carrier_status.as_deref() == Some("ringing") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never rang: {rec:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = s
        .post(&format!("/v1/calls/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let rec = loop {
        let rec: Value = s.get_json(&format!("/v1/calls/{id}")).await;
        if rec["state"] == "canceled" && rec["carrierStatus"] != "ringing" {
            break rec;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "carrierStatus stayed: {rec}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rec["carrierStatus"], "canceled", "{rec}");
    s.stop().await;
}
