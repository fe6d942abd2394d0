//! SSE `/v1/events`: resume with Last-Event-ID mid-call with no gap and no duplicate, several
//! clients at once, and a stalled client that slows nobody. Real sockets, real SQLite.

#[path = "support/store_stack.rs"]
mod store_stack;
#[path = "support/store_tmp.rs"]
mod store_tmp;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use store_stack::{SseReader, Stack, TOKEN, start};
use store_tmp::TempDir;
use switchboard::engine::events::EventBus;
use switchboard::engine::store::{SqliteStore, Store};
use switchboard::engine::{
    CallDetail, CallEvent, CallId, CallRequest, CallState, EventKind, NewEvent, Usage,
};

const STEP: Duration = Duration::from_secs(60);

async fn open_stream(s: &Stack, query: &str, last_event_id: Option<u64>) -> SseReader {
    let mut req = s.get(&format!("/v1/events{query}"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    SseReader::new(resp)
}

fn expected_name(ev: &CallEvent) -> &'static str {
    switchboard::http::sse::sse_event_name(&ev.kind)
}

/// Reads one call's events from `reader` until its `call-ended`; returns (seq, name) pairs.
async fn read_until_ended(reader: &mut SseReader, id: &str) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    for _ in 0..100_000 {
        let ev = reader
            .next(STEP)
            .await
            .expect("an event before the call ends");
        let json = ev.json();
        assert_eq!(
            json["seq"].as_u64(),
            Some(ev.seq()),
            "id: is the sequence number"
        );
        if json["callId"] != id {
            continue;
        }
        got.push((ev.seq(), ev.event.clone()));
        if ev.event == "call-ended" {
            assert!(json["durationSecs"].is_u64());
            return got;
        }
    }
    panic!("no call-ended");
}

#[tokio::test]
async fn reconnect_with_last_event_id_gets_exactly_the_missed_events_then_live() {
    let s = start("sse-resume", |_| {}).await;
    let id = s.place_restaurant_call().await;
    let call: CallId = id.parse().unwrap();

    let mut first = open_stream(&s, &format!("?callId={id}&after=0"), None).await;
    let mut before = Vec::new();
    for _ in 0..2 {
        let ev = first.next(STEP).await.expect("first events");
        before.push(ev.seq());
    }
    let last = *before.last().unwrap();
    drop(first); // disconnect mid-call

    // Let the call move on while nobody listens, then resume while it is still live.
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let missed = s.store.events_after(last, Some(call), 100).await.unwrap();
        if missed.len() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut second = open_stream(&s, &format!("?callId={id}&after=0"), Some(last)).await;
    let got = read_until_ended(&mut second, &id).await;

    let log = s
        .store
        .events_after(last, Some(call), 10_000)
        .await
        .unwrap();
    // The stream is read up to call-ended; the carrier's own last word (its `completed`
    // callback) may be logged after it, and is not part of this comparison.
    let end = log
        .iter()
        .position(|e| e.kind.name() == "ended")
        .expect("the log has the end");
    let want: Vec<(u64, String)> = log[..=end]
        .iter()
        .map(|e| (e.seq, expected_name(e).to_owned()))
        .collect();
    assert_eq!(
        got, want,
        "exactly the missed events, in order, then live ones"
    );
    assert!(got.iter().all(|(seq, _)| *seq > last));
    let all_before: Vec<u64> = s
        .store
        .events_after(0, Some(call), 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .take(2)
        .collect();
    assert_eq!(before, all_before);
    assert!(got.iter().any(|(_, n)| n == "call-status"));
    assert!(got.iter().any(|(_, n)| n == "transcription"));
    s.stop().await;
}

#[tokio::test]
async fn several_clients_see_the_same_stream_and_a_stalled_one_slows_nobody() {
    let dir = TempDir::new("sse-many");
    // A backlog far bigger than any socket buffer, so a client that replays it and never reads
    // is truly stuck on a full TCP window for the whole test.
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let filler = CallId::generate();
        let mut evs = vec![NewEvent::now(
            filler,
            EventKind::Created {
                request: CallRequest::new("+14155550100", "filler"),
            },
        )];
        let text = "x".repeat(400);
        for i in 0..20_000u32 {
            evs.push(NewEvent::now(
                filler,
                EventKind::Error {
                    message: format!("{i} {text}"),
                },
            ));
        }
        evs.push(NewEvent::now(
            filler,
            EventKind::Ended {
                state: CallState::Failed,
                detail: CallDetail::InternalError,
                reason: None,
                outcome: None,
                duration_secs: 0,
                usage: Usage::default(),
            },
        ));
        store.append(evs).await.unwrap();
        store.close().await;
    }
    let s = store_stack::start_in(dir, |_| {}).await;

    // The stalled client: asks for everything from seq 0, then never reads.
    let addr = s.stack.http_addr;
    let mut stalled = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stalled,
        "GET /v1/events?after=0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();

    let start_seq = s.store.last_seq().await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(open_stream(&s, "", None).await);
    }
    let begun = tokio::time::Instant::now();
    let id = s.place_restaurant_call().await;
    let mut seen = Vec::new();
    for c in clients.iter_mut() {
        seen.push(read_until_ended(c, &id).await);
    }
    let elapsed = begun.elapsed();
    assert!(seen[0].len() >= 4);
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    let log: Vec<(u64, String)> = s
        .store
        .events_after(start_seq, Some(id.parse().unwrap()), 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.seq, expected_name(e).to_owned()))
        .collect();
    // The clients read up to the end; only the carrier's final word may follow it.
    let end = log.iter().position(|(_, n)| n == "call-ended").unwrap() + 1;
    assert!(log[end..].iter().all(|(_, n)| n == "carrier"), "{log:?}");
    assert_eq!(seen[0], log[..end]);
    let rec = s.stack.engine.status(id.parse().unwrap()).await.unwrap();
    assert_eq!(rec.state, CallState::Completed);
    // Not a speed assertion: the call ran to its end while the stalled socket stayed open.
    eprintln!("call with a stalled SSE client took {elapsed:?}");
    drop(stalled);
    s.stop().await;
}

#[tokio::test]
async fn a_lagging_subscriber_refills_from_the_log_without_gaps() {
    let dir = TempDir::new("sse-lag");
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let (bus, _writer) = EventBus::start(store.clone());
    let id = CallId::generate();
    bus.emit(NewEvent::now(
        id,
        EventKind::Created {
            request: CallRequest::new("+14155550100", "lag"),
        },
    ));
    bus.flush().await;
    let mut all = bus.subscribe(None, Some(0));
    let mut one = bus.subscribe(Some(id), Some(0));
    let mut live = bus.subscribe(None, None);
    // Far more than the broadcast buffer (4096) while nobody reads.
    let n = 10_000u64;
    for i in 0..n {
        bus.emit(NewEvent::now(
            id,
            EventKind::Dtmf {
                digits: (i % 10).to_string(),
            },
        ));
    }
    bus.flush().await;
    for stream in [&mut all, &mut one] {
        for want in 1..=n + 1 {
            let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("in time")
                .expect("open");
            assert_eq!(ev.seq, want);
        }
    }
    // A live-only stream that lagged still delivers contiguous events once it has a position.
    let firstlive = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .unwrap()
        .unwrap()
        .seq;
    let mut prev = firstlive;
    for _ in 0..(n + 1 - firstlive) {
        let ev = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.seq, prev + 1);
        prev = ev.seq;
    }
    assert_eq!(prev, n + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_while_events_keep_coming_has_no_gap_and_no_duplicate() {
    let dir = TempDir::new("sse-handoff");
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let (bus, _writer) = EventBus::start(store.clone());
    let id = CallId::generate();
    bus.emit(NewEvent::now(
        id,
        EventKind::Created {
            request: CallRequest::new("+14155550100", "handoff"),
        },
    ));
    bus.flush().await;
    let total = 6_000u64;
    let emitter = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for i in 0..total {
                bus.emit(NewEvent::now(
                    id,
                    EventKind::Dtmf {
                        digits: (i % 10).to_string(),
                    },
                ));
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            bus.flush().await;
        })
    };
    // Subscribers join at different points of the stream, each resuming from a past position.
    let mut readers = Vec::new();
    for k in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let now = store.last_seq().await.unwrap();
        let after = now.saturating_sub(k * 37);
        let call = (k % 2 == 0).then_some(id);
        let mut stream = bus.subscribe(call, Some(after));
        readers.push(tokio::spawn(async move {
            let mut expect = after + 1;
            while expect <= total + 1 {
                let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
                    .await
                    .expect("in time")
                    .expect("open");
                assert_eq!(ev.seq, expect, "resumed after {after}");
                expect += 1;
            }
        }));
    }
    emitter.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
}
