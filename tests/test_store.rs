//! The SQLite store against real files: what goes in comes back, it projects exactly like
//! `MemoryStore`, and nothing is lost across a reopen.

#[path = "support/store_tmp.rs"]
mod store_tmp;

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use store_tmp::TempDir;
use switchboard::engine::events::EventBus;
use switchboard::engine::store::{MemoryStore, SqliteStore, Store, StoreError};
use switchboard::engine::{
    CallDetail, CallFilter, CallId, CallRequest, CallState, EventKind, NewEvent, Outcome,
    OutcomeStatus, Speaker, Usage,
};

fn ev(id: CallId, kind: EventKind) -> NewEvent {
    NewEvent::now(id, kind)
}

/// A whole call's life, ending in `end` (or left live when `None`).
fn call_events(id: CallId, end: Option<CallState>) -> Vec<NewEvent> {
    let mut v = vec![
        ev(
            id,
            EventKind::Created {
                request: CallRequest::new("+14155550123", "book a table for two"),
            },
        ),
        ev(
            id,
            EventKind::Carrier {
                status: "queued".into(),
                call_sid: Some(format!("CA{:032x}", id.0.random())),
                answered_by: None,
                duration_secs: None,
            },
        ),
        ev(
            id,
            EventKind::State {
                state: CallState::Connected,
                detail: CallDetail::InProgress,
                reason: None,
            },
        ),
        ev(
            id,
            EventKind::Transcript {
                speaker: Speaker::Agent,
                text: "Hello, I'd like to book a table.".into(),
                offset_ms: 120,
                interrupted: false,
            },
        ),
        ev(
            id,
            EventKind::Transcript {
                speaker: Speaker::Callee,
                text: "Sure, for when?".into(),
                offset_ms: 2400,
                interrupted: false,
            },
        ),
        ev(
            id,
            EventKind::Dtmf {
                digits: "1#".into(),
            },
        ),
        ev(
            id,
            EventKind::ToolCall {
                name: "end_call".into(),
                arguments: json!({"success": true}),
            },
        ),
        ev(
            id,
            EventKind::Error {
                message: "model hiccup".into(),
            },
        ),
    ];
    if let Some(state) = end {
        v.push(ev(
            id,
            EventKind::Ended {
                state,
                detail: CallDetail::AgentEnded,
                reason: Some("done".into()),
                outcome: Some(Outcome::new(OutcomeStatus::Success, "booked")),
                duration_secs: 42,
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 20,
                    total_tokens: 30,
                },
            },
        ));
    }
    v
}

async fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(dir.path()).await.expect("open store")
}

#[tokio::test]
async fn append_then_read_back() {
    let dir = TempDir::new("store-readback");
    let store = open(&dir).await;
    assert_eq!(store.last_seq().await.unwrap(), 0);
    let id = CallId::generate();
    let events = call_events(id, Some(CallState::Completed));
    let n = events.len() as u64;
    let stored = store.append(events.clone()).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    for (s, e) in stored.iter().zip(&events) {
        assert_eq!((s.call_id, s.at, &s.kind), (e.call_id, e.at, &e.kind));
    }
    assert_eq!(store.last_seq().await.unwrap(), n);
    assert_eq!(store.events_after(0, None, 1000).await.unwrap(), stored);
    assert_eq!(store.events_after(3, None, 2).await.unwrap(), stored[3..5]);

    let rec = store.call(id).await.unwrap().expect("record");
    assert_eq!(rec.state, CallState::Completed);
    assert_eq!(rec.duration_secs, 42);
    assert_eq!(rec.last_seq, n);
    assert!(rec.carrier_call_sid.is_some());
    let turns = store.transcript(id).await.unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0].speaker, Speaker::Agent);
    assert_eq!(turns[1].text, "Sure, for when?");
    assert_eq!(turns[1].offset_ms, 2400);
    assert!(store.call(CallId::generate()).await.unwrap().is_none());
    assert!(
        store
            .transcript(CallId::generate())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn projection_equals_memory_store() {
    let dir = TempDir::new("store-projection");
    let sqlite = open(&dir).await;
    let memory = MemoryStore::new();
    let ids: Vec<CallId> = (0..6).map(|_| CallId::generate()).collect();
    let ends = [
        Some(CallState::Completed),
        None,
        Some(CallState::Failed),
        Some(CallState::Canceled),
        None,
        Some(CallState::Completed),
    ];
    // Interleave the calls and cut the stream into uneven batches, as the bus would.
    let mut per_call: Vec<std::collections::VecDeque<NewEvent>> = ids
        .iter()
        .zip(ends)
        .map(|(id, end)| call_events(*id, end).into())
        .collect();
    let mut all = Vec::new();
    loop {
        let mut any = false;
        for q in per_call.iter_mut() {
            if let Some(e) = q.pop_front() {
                all.push(e);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    // An event after the terminal one must not change the record in either store.
    all.push(ev(
        ids[0],
        EventKind::State {
            state: CallState::Connected,
            detail: CallDetail::InProgress,
            reason: None,
        },
    ));
    let mut rest = all.as_slice();
    let mut size = 1;
    while !rest.is_empty() {
        let take = size.min(rest.len());
        let a = sqlite.append(rest[..take].to_vec()).await.unwrap();
        let b = memory.append(rest[..take].to_vec()).await.unwrap();
        assert_eq!(a, b);
        rest = &rest[take..];
        size = size % 7 + 1;
    }
    for id in &ids {
        assert_eq!(
            sqlite.call(*id).await.unwrap(),
            memory.call(*id).await.unwrap()
        );
        assert_eq!(
            sqlite.transcript(*id).await.unwrap(),
            memory.transcript(*id).await.unwrap()
        );
        assert_eq!(
            sqlite.events_after(0, Some(*id), 1000).await.unwrap(),
            memory.events_after(0, Some(*id), 1000).await.unwrap()
        );
    }
    let filters = [
        CallFilter::default(),
        CallFilter {
            state: Some(CallState::Completed),
            ..Default::default()
        },
        CallFilter {
            state: Some(CallState::Connected),
            ..Default::default()
        },
        CallFilter {
            limit: Some(2),
            ..Default::default()
        },
        CallFilter {
            before: Some(ids[3]),
            ..Default::default()
        },
    ];
    for f in &filters {
        assert_eq!(
            sqlite.calls(f).await.unwrap(),
            memory.calls(f).await.unwrap(),
            "filter {f:?}"
        );
    }
    let mut a = sqlite.unfinished().await.unwrap();
    let mut b = memory.unfinished().await.unwrap();
    a.sort_by_key(|r| r.id);
    b.sort_by_key(|r| r.id);
    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    assert_eq!(
        sqlite.last_seq().await.unwrap(),
        memory.last_seq().await.unwrap()
    );
    let first = sqlite.call(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        first.state,
        CallState::Completed,
        "terminal records never change"
    );
}

#[tokio::test]
async fn calls_filter_and_paginate_newest_first() {
    let dir = TempDir::new("store-paging");
    let store = open(&dir).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let id = CallId::generate();
        ids.push(id);
        let end = (i % 2 == 0).then_some(CallState::Completed);
        store.append(call_events(id, end)).await.unwrap();
        // Distinct milliseconds so the ULIDs sort by creation.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let mut page = CallFilter {
        limit: Some(3),
        ..Default::default()
    };
    let mut seen = Vec::new();
    for _ in 0..10 {
        let got = store.calls(&page).await.unwrap();
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 3);
        page.before = Some(got.last().unwrap().id);
        seen.extend(got.into_iter().map(|r| r.id));
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let completed = store
        .calls(&CallFilter {
            state: Some(CallState::Completed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(completed.len(), 4);
    assert!(completed.iter().all(|r| r.state == CallState::Completed));
    assert!(completed.windows(2).all(|w| w[0].id > w[1].id));
}

#[tokio::test]
async fn reopen_after_drop_keeps_everything() {
    let dir = TempDir::new("store-reopen");
    let a = CallId::generate();
    let b = CallId::generate();
    let (before_events, before_a, before_turns) = {
        let store = open(&dir).await;
        store
            .append(call_events(a, Some(CallState::Completed)))
            .await
            .unwrap();
        store.append(call_events(b, None)).await.unwrap();
        let r = (
            store.events_after(0, None, 1000).await.unwrap(),
            store.call(a).await.unwrap(),
            store.transcript(b).await.unwrap(),
        );
        drop(store); // no close(): as if the process went away
        r
    };
    let store = open(&dir).await;
    assert_eq!(
        store.events_after(0, None, 1000).await.unwrap(),
        before_events
    );
    assert_eq!(store.call(a).await.unwrap(), before_a);
    assert_eq!(store.transcript(b).await.unwrap(), before_turns);
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(unfinished.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b]);
    // Sequence numbers continue after a reopen.
    let last = store.last_seq().await.unwrap();
    let more = store
        .append(vec![ev(b, EventKind::Dtmf { digits: "9".into() })])
        .await
        .unwrap();
    assert_eq!(more[0].seq, last + 1);
    assert!(dir.path().join("switchboard.db").exists());
}

#[tokio::test]
async fn events_after_with_and_without_call_filter() {
    let dir = TempDir::new("store-after");
    let store = open(&dir).await;
    let a = CallId::generate();
    let b = CallId::generate();
    let mut batch = Vec::new();
    for (x, y) in call_events(a, None).into_iter().zip(call_events(b, None)) {
        batch.push(x);
        batch.push(y);
    }
    let stored = store.append(batch).await.unwrap();
    let only_a: Vec<_> = stored.iter().filter(|e| e.call_id == a).cloned().collect();
    assert_eq!(store.events_after(0, Some(a), 1000).await.unwrap(), only_a);
    let after = only_a[2].seq;
    assert_eq!(
        store.events_after(after, Some(a), 2).await.unwrap(),
        only_a[3..5]
    );
    assert_eq!(
        store.events_after(after, None, 1000).await.unwrap(),
        stored[after as usize..]
    );
    assert!(
        store
            .events_after(stored.len() as u64, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn unknown_call_rejects_the_whole_batch() {
    let dir = TempDir::new("store-unknown");
    let store = open(&dir).await;
    let a = CallId::generate();
    let stranger = CallId::generate();
    let mut batch = call_events(a, None);
    batch.push(ev(stranger, EventKind::Dtmf { digits: "1".into() }));
    match store.append(batch).await {
        Err(StoreError::UnknownCall(id)) => assert_eq!(id, stranger),
        other => panic!("expected UnknownCall, got {other:?}"),
    }
    assert_eq!(store.last_seq().await.unwrap(), 0);
    assert!(store.call(a).await.unwrap().is_none());
}

#[tokio::test]
async fn retention_purges_only_old_ended_calls() {
    let dir = TempDir::new("store-retention");
    let store = open(&dir).await;
    let old = CallId::generate();
    let live = CallId::generate();
    let mut evs = call_events(old, Some(CallState::Completed));
    for e in &mut evs {
        e.at = Utc::now() - Duration::days(40);
    }
    store.append(evs).await.unwrap();
    store.append(call_events(live, None)).await.unwrap();
    let recent = CallId::generate();
    store
        .append(call_events(recent, Some(CallState::Failed)))
        .await
        .unwrap();
    let last = store.last_seq().await.unwrap();
    let removed = store
        .purge_ended_before(Utc::now() - Duration::days(30))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(store.call(old).await.unwrap().is_none());
    assert!(store.transcript(old).await.unwrap().is_empty());
    assert!(
        store
            .events_after(0, Some(old), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.call(live).await.unwrap().is_some());
    assert!(store.call(recent).await.unwrap().is_some());
    assert_eq!(store.last_seq().await.unwrap(), last);
}

#[tokio::test]
async fn event_bus_over_sqlite_replays_then_goes_live() {
    let dir = TempDir::new("store-bus");
    let store = Arc::new(open(&dir).await);
    let (bus, _writer) = EventBus::start(store.clone());
    let id = CallId::generate();
    let events = call_events(id, None);
    let n = events.len() as u64;
    for e in events {
        bus.emit(e);
    }
    bus.flush().await;
    assert_eq!(store.last_seq().await.unwrap(), n);
    let mut stream = bus.subscribe(Some(id), Some(3));
    for want in 4..=n {
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("replayed event in time")
            .expect("stream open");
        assert_eq!(got.seq, want);
    }
    bus.emit(ev(id, EventKind::Dtmf { digits: "5".into() }));
    let live = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("live event in time")
        .expect("stream open");
    assert_eq!(live.seq, n + 1);
}

#[tokio::test]
async fn a_stray_event_does_not_cost_the_rest_of_its_batch() {
    let dir = TempDir::new("store-stray");
    let store = Arc::new(open(&dir).await);
    let (bus, _writer) = EventBus::start(store.clone());
    let good = CallId::generate();
    let stray = CallId::generate();
    // Emitted back to back, so the writer takes them as one batch.
    let mut evs = call_events(good, None);
    evs.insert(2, ev(stray, EventKind::Dtmf { digits: "7".into() }));
    let n_good = evs.len() as u64 - 1;
    for e in evs {
        bus.emit(e);
    }
    bus.flush().await;
    assert_eq!(store.last_seq().await.unwrap(), n_good);
    assert!(store.call(good).await.unwrap().is_some());
    assert!(
        store
            .events_after(0, Some(stray), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_event_before_its_created_in_one_batch_is_kept_like_memory_store() {
    let dir = TempDir::new("store-order");
    let sqlite = open(&dir).await;
    let memory = MemoryStore::new();
    let id = CallId::generate();
    let mut evs = call_events(id, None);
    evs.swap(0, 1); // carrier status first, then created
    assert_eq!(
        sqlite.append(evs.clone()).await.unwrap(),
        memory.append(evs).await.unwrap()
    );
    assert_eq!(
        sqlite.call(id).await.unwrap(),
        memory.call(id).await.unwrap()
    );
}

#[tokio::test]
async fn the_retention_task_purges_at_start_and_zero_keeps_forever() {
    let dir = TempDir::new("store-retention-task");
    let store = open(&dir).await;
    let old = CallId::generate();
    let mut evs = call_events(old, Some(CallState::Completed));
    for e in &mut evs {
        e.at = Utc::now() - Duration::days(10);
    }
    store.append(evs).await.unwrap();

    let forever = tokio_util::sync::CancellationToken::new();
    store.spawn_retention(0, forever.clone()).await.unwrap();
    assert!(
        store.call(old).await.unwrap().is_some(),
        "0 days keeps forever"
    );

    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = store.spawn_retention(7, shutdown.clone());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.call(old).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "not purged in time");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("the task stops on shutdown")
        .unwrap();
}
