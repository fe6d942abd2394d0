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
/// What the fake carrier reports as the `duration` of a completed call.
const CARRIER_DURATION: &str = "42";

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
        // Twilio's `duration` is a string of seconds once the call has ended, else null.
        Some(status) => Json(json!({
            "sid": sid, "account_sid": ACCOUNT, "status": status,
            "duration": (status == "completed").then_some(CARRIER_DURATION),
        }))
        .into_response(),
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
                duration_secs: None,
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
                interrupted: false,
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
    let carrier = TwilioCarrier::new(&cfg);
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
    // The duration written is the carrier's, not the engine's downtime or its own guess.
    for id in [a, e] {
        let rec = store.call(id).await.unwrap().unwrap();
        assert_eq!(rec.duration_secs, 42, "{rec:?}");
    }
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
    let carrier = TwilioCarrier::new(&cfg);
    let report = recovery::reconcile(&store, &carrier).await.unwrap();
    assert_eq!(report.len(), 1);
    assert!(report[0].problem.is_some());
    assert!(!report[0].hung_up);
    let rec = store.call(id).await.unwrap().unwrap();
    assert_eq!(rec.detail, CallDetail::EngineRestarted);
}

/// The engine "crashes" mid-call: it runs on its own runtime, which is torn down without any
/// shutdown path (no actor `post_stop`, no final event), the in-process stand-in for `kill -9`.
/// The simulator (the carrier) lives on. Recovery over the reopened store must find the call,
/// make sure the simulator's call is over, and write the final state; every transcript turn
/// that was readable before the crash must still be there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_call_then_recovery_against_the_simulator() {
    use switchboard::config::Config;
    use switchboard::http::{self, AppState};
    use switchboard::sim::{SimConfig, Simulator};

    switchboard_actors::tls::install_provider();
    let dir = TempDir::new("recovery-crash");
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let mut config = Config::default();
    switchboard::stack::wire_to_endpoints(&mut config, &sim.endpoints());
    let carrier_cfg = config.engine.twilio.clone();

    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let data_dir = dir.path().to_owned();
    let (call, sid, turns_before) = doomed
        .spawn(async move {
            let store = Arc::new(SqliteStore::open(&data_dir).await.unwrap());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            config.engine.public_url = format!("http://{addr}");
            let engine = switchboard::engine::Engine::start(config.engine.clone(), store.clone())
                .await
                .unwrap();
            let state = AppState::new(engine.clone(), Arc::new(config));
            tokio::spawn(http::run(
                listener,
                state,
                tokio_util::sync::CancellationToken::new(),
            ));
            let mut req = CallRequest::new("+12125550134", "Book a table for two at 7:30 tonight");
            req.context =
                Some("The booking is for Alex Kim. Alex's callback number is +14155550123.".into());
            let id = engine.place_call(req).await.unwrap();
            // Crash once the call is connected and has said something.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let rec = store.call(id).await.unwrap();
                let turns = store.transcript(id).await.unwrap();
                if let Some(rec) = rec {
                    assert!(
                        !rec.state.is_terminal(),
                        "the call ended before the crash: {rec:?}"
                    );
                    if rec.state == CallState::Connected && !turns.is_empty() {
                        return (id, rec.carrier_call_sid.clone(), turns);
                    }
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the call never connected"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    doomed.shutdown_background();

    let sid = sid.expect("a connected call has a carrier sid");
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(
        unfinished.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![call]
    );
    let carrier = TwilioCarrier::new(&carrier_cfg);
    let report = recovery::reconcile(&store, &carrier).await.unwrap();
    assert_eq!(report.len(), 1);
    assert!(report[0].problem.is_none(), "{report:?}");
    use switchboard::engine::recovery::Carrier as _;
    let after = carrier.status(&sid).await.unwrap();
    assert!(
        after.as_deref().is_some_and(|s| !recovery::is_live(s)),
        "the simulator's call is over: {after:?}"
    );
    let rec = store.call(call).await.unwrap().unwrap();
    assert_eq!(rec.state, CallState::Failed);
    assert_eq!(rec.detail, CallDetail::EngineRestarted);
    assert_eq!(rec.reason.as_deref(), Some(recovery::REASON));
    let turns_after = store.transcript(call).await.unwrap();
    assert!(turns_after.len() >= turns_before.len());
    assert_eq!(turns_after[..turns_before.len()], turns_before[..]);
    assert!(store.unfinished().await.unwrap().is_empty());
    sim.shutdown().await;
}
