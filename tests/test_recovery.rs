//! Recovery at start: unfinished calls in a real SQLite store are reconciled with a carrier
//! that speaks the Twilio Calls REST API on 127.0.0.1.
//!
//! The carrier here is a minimal stand-in for Twilio's fetch/update endpoints (Twilio is not one
//! of our components); the end-to-end check against the simulator's Twilio half is
//! `recovery_against_the_simulator` once that half exists on main.

#[path = "support/store_tmp.rs"]
mod store_tmp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Form, Json};
use secrecy::SecretString;
use serde_json::json;
use store_tmp::TempDir;
use switchboard::engine::config::TwilioConfig;
use switchboard::engine::recovery::{self, TwilioCarrier};
use switchboard::engine::store::{SqliteStore, Store};
use switchboard::engine::{
    CallDetail, CallId, CallRequest, CallState, EventKind, NewEvent, Speaker, Usage,
};

const ACCOUNT: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "carrier-token";

#[derive(Default)]
struct Carrier {
    calls: HashMap<String, String>,
    /// Every update request: (sid, Status).
    updates: Vec<(String, String)>,
    bad_auth: u32,
}

type Shared = Arc<Mutex<Carrier>>;

fn authorized(headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{TOKEN}"))
    );
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == want)
}

fn not_found() -> axum::response::Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": 20404, "message": "The requested resource was not found", "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404})),
    )
        .into_response()
}

async fn fetch(
    State(c): State<Shared>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> axum::response::Response {
    let mut c = c.lock().unwrap();
    if !authorized(&headers) || account != ACCOUNT {
        c.bad_auth += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let sid = file.trim_end_matches(".json");
    match c.calls.get(sid) {
        Some(status) => {
            Json(json!({"sid": sid, "account_sid": ACCOUNT, "status": status})).into_response()
        }
        None => not_found(),
    }
}

async fn update(
    State(c): State<Shared>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> axum::response::Response {
    let mut c = c.lock().unwrap();
    if !authorized(&headers) || account != ACCOUNT {
        c.bad_auth += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let sid = file.trim_end_matches(".json").to_owned();
    let Some(want) = form.get("Status").cloned() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    c.updates.push((sid.clone(), want.clone()));
    let Some(status) = c.calls.get_mut(&sid) else {
        return not_found();
    };
    // Twilio: `canceled` only affects queued/ringing calls; `completed` ends any live call.
    match (want.as_str(), status.as_str()) {
        ("canceled", "queued" | "ringing") => *status = "canceled".into(),
        ("completed", "queued" | "ringing" | "in-progress") => *status = "completed".into(),
        _ => {}
    }
    let s = status.clone();
    Json(json!({"sid": sid, "status": s})).into_response()
}

async fn carrier(calls: &[(&str, &str)]) -> (TwilioConfig, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Carrier {
        calls: calls
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        ..Default::default()
    }));
    let app = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{file}",
            get(fetch).post(update),
        )
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let cfg = TwilioConfig {
        account_sid: ACCOUNT.into(),
        auth_token: SecretString::from(TOKEN),
        api_base: format!("http://{addr}"),
        ..Default::default()
    };
    (cfg, shared)
}

async fn live_call(store: &SqliteStore, sid: Option<&str>, connected: bool) -> CallId {
    let id = CallId::generate();
    let mut evs = vec![NewEvent::now(
        id,
        EventKind::Created {
            request: CallRequest::new("+14155550123", "ask about opening hours"),
        },
    )];
    if let Some(sid) = sid {
        evs.push(NewEvent::now(
            id,
            EventKind::Carrier {
                status: if connected { "in-progress" } else { "ringing" }.into(),
                call_sid: Some(sid.into()),
                answered_by: None,
            },
        ));
    }
    if connected {
        evs.push(NewEvent::now(
            id,
            EventKind::State {
                state: CallState::Connected,
                detail: CallDetail::InProgress,
                reason: None,
            },
        ));
        evs.push(NewEvent::now(
            id,
            EventKind::Transcript {
                speaker: Speaker::Agent,
                text: "Hi, what time do you open?".into(),
                offset_ms: 300,
            },
        ));
    }
    store.append(evs).await.unwrap();
    id
}

#[tokio::test]
async fn every_unfinished_call_is_hung_up_and_ended() {
    let dir = TempDir::new("recovery");
    let talking = "CA00000000000000000000000000000aa1";
    let ringing = "CA00000000000000000000000000000aa2";
    let gone = "CA00000000000000000000000000000aa3";
    let finished_elsewhere = "CA00000000000000000000000000000aa4";
    let (cfg, shared) = carrier(&[
        (talking, "in-progress"),
        (ringing, "ringing"),
        (finished_elsewhere, "completed"),
    ])
    .await;

    // The engine that "crashed": four live calls and one that ended normally.
    let (a, b, c, d, e) = {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let a = live_call(&store, Some(talking), true).await;
        let b = live_call(&store, Some(ringing), false).await;
        let c = live_call(&store, None, false).await;
        let d = live_call(&store, Some(gone), true).await;
        let e = live_call(&store, Some(finished_elsewhere), true).await;
        let done = live_call(&store, None, false).await;
        store
            .append(vec![NewEvent::now(
                done,
                EventKind::Ended {
                    state: CallState::Completed,
                    detail: CallDetail::AgentEnded,
                    reason: None,
                    outcome: None,
                    duration_secs: 0,
                    usage: Usage::default(),
                },
            )])
            .await
            .unwrap();
        (a, b, c, d, e)
    };

    let store = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(store.unfinished().await.unwrap().len(), 5);
    let carrier = TwilioCarrier::new(&cfg).unwrap();
    let report = recovery::reconcile(&store, &carrier).await.unwrap();
    assert_eq!(report.len(), 5);
    assert!(report.iter().all(|r| r.problem.is_none()), "{report:?}");

    {
        let c_state = shared.lock().unwrap();
        assert_eq!(c_state.bad_auth, 0);
        assert_eq!(c_state.calls[talking], "completed");
        assert_eq!(c_state.calls[ringing], "canceled");
        assert_eq!(c_state.calls[finished_elsewhere], "completed");
        assert!(
            !c_state
                .updates
                .iter()
                .any(|(sid, _)| sid == finished_elsewhere),
            "an ended carrier call is not touched"
        );
        assert!(
            c_state
                .updates
                .contains(&(ringing.to_string(), "canceled".to_string()))
        );
    }

    let by_id = |id| report.iter().find(|r| r.call_id == id).unwrap().clone();
    assert!(by_id(a).hung_up);
    assert_eq!(by_id(a).carrier_status.as_deref(), Some("in-progress"));
    assert!(by_id(b).hung_up);
    assert!(!by_id(c).hung_up);
    assert_eq!(by_id(d).carrier_status, None);
    assert!(!by_id(e).hung_up);

    assert!(store.unfinished().await.unwrap().is_empty());
    for id in [a, b, c, d, e] {
        let rec = store.call(id).await.unwrap().unwrap();
        assert_eq!(rec.state, CallState::Failed);
        assert_eq!(rec.detail, CallDetail::EngineRestarted);
        assert_eq!(rec.reason.as_deref(), Some(recovery::REASON));
        assert!(rec.ended_at.is_some());
    }
    assert_eq!(
        store
            .call(a)
            .await
            .unwrap()
            .unwrap()
            .carrier_status
            .as_deref(),
        Some("completed")
    );
    assert_eq!(store.transcript(a).await.unwrap().len(), 1, "turns survive");
    // Running it again finds nothing to do.
    assert!(
        recovery::reconcile(&store, &carrier)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_unreachable_carrier_is_reported_and_the_call_still_ends() {
    let dir = TempDir::new("recovery-down");
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let id = live_call(&store, Some("CA00000000000000000000000000000bb1"), true).await;
    // A port nobody listens on: bind, note, drop.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = TwilioConfig {
        account_sid: ACCOUNT.into(),
        auth_token: SecretString::from(TOKEN),
        api_base: format!("http://127.0.0.1:{port}"),
        ..Default::default()
    };
    let carrier = TwilioCarrier::new(&cfg).unwrap();
    let report = recovery::reconcile(&store, &carrier).await.unwrap();
    assert_eq!(report.len(), 1);
    assert!(report[0].problem.is_some());
    assert!(!report[0].hung_up);
    let rec = store.call(id).await.unwrap().unwrap();
    assert_eq!(rec.detail, CallDetail::EngineRestarted);
}
