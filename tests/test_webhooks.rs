//! Post-call webhooks from the durable outbox, against a real receiver on 127.0.0.1.

#[path = "support/store_stack.rs"]
mod store_stack;
#[path = "support/store_tmp.rs"]
mod store_tmp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use secrecy::SecretString;
use store_tmp::TempDir;
use switchboard::engine::outbox::{self, OutboxConfig};
use switchboard::engine::store::{SqliteStore, Store};
use switchboard::engine::{
    CallDetail, CallId, CallRequest, CallState, EventKind, NewEvent, Outcome, OutcomeStatus, Usage,
};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec-test-0123456789";

#[derive(Default)]
struct Seen {
    /// Every request, in arrival order: (event id, signature valid, body).
    attempts: Vec<(String, bool, serde_json::Value)>,
    /// Event ids answered 2xx, with how often.
    accepted: HashMap<String, u32>,
    /// How many requests to fail before answering 200.
    fail_first: u32,
}

type Shared = Arc<Mutex<Seen>>;

async fn receive(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers
        .get("x-switchboard-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let sig = headers
        .get("x-switchboard-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ok = outbox::verify(
        SECRET.as_bytes(),
        sig,
        &body,
        chrono::Utc::now().timestamp(),
        Duration::from_secs(300),
    );
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let mut s = seen.lock().unwrap();
    s.attempts.push((id.clone(), ok, json));
    if s.fail_first > 0 {
        s.fail_first -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if !ok {
        return StatusCode::UNAUTHORIZED;
    }
    *s.accepted.entry(id).or_default() += 1;
    StatusCode::OK
}

async fn receiver(fail_first: u32) -> (String, Shared, CancellationToken) {
    let seen: Shared = Arc::new(Mutex::new(Seen {
        fail_first,
        ..Default::default()
    }));
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(s.cancelled_owned())
            .await;
    });
    (format!("http://{addr}/hook"), seen, stop)
}

fn fast_config(url: String) -> OutboxConfig {
    let mut c = OutboxConfig::new(vec![url], Some(SecretString::from(SECRET)));
    c.initial_backoff = Duration::from_millis(50);
    c.max_backoff = Duration::from_millis(200);
    c.poll_interval = Duration::from_millis(20);
    c.request_timeout = Duration::from_secs(5);
    c
}

async fn end_a_call(store: &SqliteStore) -> CallId {
    let id = CallId::generate();
    store
        .append(vec![
            NewEvent::now(
                id,
                EventKind::Created {
                    request: CallRequest::new("+14155550123", "confirm the delivery"),
                },
            ),
            NewEvent::now(
                id,
                EventKind::Ended {
                    state: CallState::Completed,
                    detail: CallDetail::AgentEnded,
                    reason: None,
                    outcome: Some(Outcome::new(OutcomeStatus::Success, "confirmed")),
                    duration_secs: 12,
                    usage: Usage::default(),
                },
            ),
        ])
        .await
        .unwrap();
    id
}

/// Polls `cond` every 10 ms until it holds or `secs` pass.
async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn fails_twice_then_delivers_once_signed() {
    let dir = TempDir::new("webhook-retry");
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let (url, seen, stop_receiver) = receiver(2).await;
    let id = end_a_call(&store).await;
    let shutdown = CancellationToken::new();
    let task = outbox::spawn(store.clone(), fast_config(url.clone()), shutdown.clone())
        .unwrap()
        .expect("a URL is configured");
    wait_until(10, "the third attempt", || {
        seen.lock().unwrap().accepted.len() == 1
    })
    .await;
    // Give the worker time to (wrongly) send again; none may arrive.
    tokio::time::sleep(Duration::from_millis(400)).await;
    shutdown.cancel();
    task.await.unwrap();
    stop_receiver.cancel();

    {
        let s = seen.lock().unwrap();
        assert_eq!(s.attempts.len(), 3, "two failures then one success");
        let event_id = s.attempts[0].0.clone();
        assert!(event_id.starts_with(&id.to_string()));
        assert!(
            s.attempts
                .iter()
                .all(|(eid, ok, _)| *eid == event_id && *ok)
        );
        assert_eq!(s.accepted.get(&event_id), Some(&1));
        let body = &s.attempts[2].2;
        assert_eq!(body["type"], "call.ended");
        assert_eq!(body["id"], event_id.as_str());
        assert_eq!(body["call"]["id"], id.to_string());
        assert_eq!(body["call"]["state"], "completed");
        assert_eq!(body["call"]["durationSecs"], 12);
    }

    let states = outbox::deliveries(&store).await.unwrap();
    assert_eq!(states.len(), 1);
    assert!(states[0].delivered);
    assert_eq!(states[0].attempts, 3);
    assert_eq!(outbox::pending(&store).await.unwrap(), 0);
}

#[tokio::test]
async fn a_restart_between_attempts_still_delivers_exactly_once() {
    let dir = TempDir::new("webhook-restart");
    let (url, seen, stop_receiver) = receiver(2).await;
    let (a, b) = {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let a = end_a_call(&store).await;
        let b = end_a_call(&store).await;
        let shutdown = CancellationToken::new();
        let task = outbox::spawn(store.clone(), fast_config(url.clone()), shutdown.clone())
            .unwrap()
            .unwrap();
        wait_until(10, "the first failed attempt", || {
            !seen.lock().unwrap().attempts.is_empty()
        })
        .await;
        shutdown.cancel();
        task.await.unwrap();
        store.close().await;
        (a, b)
    };
    let attempts_before_restart = seen.lock().unwrap().attempts.len();
    assert!(seen.lock().unwrap().accepted.is_empty());

    let store = SqliteStore::open(dir.path()).await.unwrap();
    assert!(outbox::pending(&store).await.unwrap() >= 1);
    let shutdown = CancellationToken::new();
    let task = outbox::spawn(store.clone(), fast_config(url.clone()), shutdown.clone())
        .unwrap()
        .unwrap();
    wait_until(10, "both deliveries", || {
        seen.lock().unwrap().accepted.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    shutdown.cancel();
    task.await.unwrap();
    stop_receiver.cancel();

    assert_eq!(outbox::pending(&store).await.unwrap(), 0);
    let s = seen.lock().unwrap();
    assert!(attempts_before_restart >= 1);
    for id in [a, b] {
        let got: Vec<_> = s
            .accepted
            .iter()
            .filter(|(eid, _)| eid.starts_with(&id.to_string()))
            .collect();
        assert_eq!(got.len(), 1, "one event id per ended call");
        assert_eq!(*got[0].1, 1, "accepted exactly once");
    }
    assert_eq!(s.attempts.len(), 4, "two failures and one success per call");
}

#[tokio::test]
async fn no_urls_means_no_task_and_bad_urls_are_refused() {
    let dir = TempDir::new("webhook-config");
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let none = outbox::spawn(
        store.clone(),
        OutboxConfig::new(vec![], None),
        CancellationToken::new(),
    )
    .unwrap();
    assert!(none.is_none());
    let err = outbox::spawn(
        store,
        OutboxConfig::new(vec!["ftp://example".into()], None),
        CancellationToken::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("ftp://example"));
}

#[test]
fn signatures_verify_only_with_the_right_secret_body_and_time() {
    let body = br#"{"type":"call.ended"}"#;
    let now = 1_800_000_000;
    let header = outbox::sign(b"k1", now, body);
    assert!(header.starts_with(&format!("t={now},v1=")));
    let tol = Duration::from_secs(300);
    assert!(outbox::verify(b"k1", &header, body, now + 10, tol));
    assert!(!outbox::verify(b"k2", &header, body, now, tol));
    assert!(!outbox::verify(b"k1", &header, b"{}", now, tol));
    assert!(!outbox::verify(b"k1", &header, body, now + 301, tol));
    assert!(!outbox::verify(b"k1", "t=1,v1=zz", body, 1, tol));
    assert!(!outbox::verify(b"k1", "", body, now, tol));
}

#[tokio::test]
async fn a_real_call_ending_on_the_simulator_is_delivered() {
    let (url, seen, stop_receiver) = receiver(0).await;
    let s = store_stack::start("webhook-e2e", |c| {
        c.store.webhook_urls = vec![url.clone()];
        c.store.webhook_secret = Some(SecretString::from(SECRET));
    })
    .await;
    let shutdown = CancellationToken::new();
    let task = outbox::spawn((*s.store).clone(), fast_config(url), shutdown.clone())
        .unwrap()
        .unwrap();
    let id = s.place_restaurant_call().await;
    let rec = s
        .stack
        .engine
        .wait(id.parse().unwrap(), Duration::from_secs(120))
        .await
        .unwrap();
    assert!(rec.state.is_terminal(), "{rec:?}");
    wait_until(30, "the post-call webhook", || {
        seen.lock().unwrap().accepted.len() == 1
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();
    stop_receiver.cancel();
    {
        let seen = seen.lock().unwrap();
        let (_, ok, body) = seen.attempts.last().unwrap();
        assert!(*ok, "signed with store.webhook_secret");
        assert_eq!(body["call"]["id"], id.as_str());
        assert_eq!(body["call"]["state"], rec.state.as_str());
    }
    s.stop().await;
}
