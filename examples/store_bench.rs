//! Measures the store's write path: events appended through the `EventBus` into a
//! `SqliteStore` (WAL, synchronous=FULL) on this machine's disk.
//!
//! ```text
//! cargo run --release --example store_bench -- [events] [calls]
//! ```
//! Defaults: 50000 events spread over 50 concurrent calls. Prints sustained events/second with
//! the bus's batching, and, for comparison, the rate when every event is its own transaction.

use std::sync::Arc;
use tokio::time::Instant;

use switchboard::engine::events::EventBus;
use switchboard::engine::store::{SqliteStore, Store};
use switchboard::engine::{CallId, CallRequest, EventKind, NewEvent, Speaker};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50_000);
    let calls: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50)
        .max(1);
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(SqliteStore::open(&dir).await?);

    // Batched, through the bus, as the engine writes.
    let (bus, _writer) = EventBus::start(store.clone());
    let ids: Vec<CallId> = (0..calls).map(|_| CallId::generate()).collect();
    for id in &ids {
        bus.emit(NewEvent::now(
            *id,
            EventKind::Created {
                request: CallRequest::new("+14155550123", "benchmark"),
            },
        ));
    }
    bus.flush().await;
    let text = "I'd like to confirm the reservation for two at seven thirty tonight.";
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let bus = bus.clone();
        let id = *id;
        let n = total / calls + usize::from(i < total % calls);
        tasks.push(tokio::spawn(async move {
            for k in 0..n {
                bus.emit(NewEvent::now(
                    id,
                    EventKind::Transcript {
                        speaker: if k % 2 == 0 {
                            Speaker::Agent
                        } else {
                            Speaker::Callee
                        },
                        text: text.into(),
                        offset_ms: k as u64 * 20,
                        interrupted: false,
                    },
                ));
                if k % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    bus.flush().await;
    let batched = start.elapsed();
    let written = store.last_seq().await? as usize - calls;
    assert_eq!(written, total, "every emitted event is in the log");

    // One transaction (and one fsync) per event, for comparison.
    let single = 500.min(total);
    let start = Instant::now();
    for k in 0..single {
        store
            .append(vec![NewEvent::now(
                ids[0],
                EventKind::Dtmf {
                    digits: (k % 10).to_string(),
                },
            )])
            .await?;
    }
    let unbatched = start.elapsed();

    println!(
        "batched via EventBus: {total} events over {calls} calls in {:.2} s = {:.0} events/s",
        batched.as_secs_f64(),
        total as f64 / batched.as_secs_f64()
    );
    println!(
        "one transaction per event: {single} events in {:.2} s = {:.0} events/s",
        unbatched.as_secs_f64(),
        single as f64 / unbatched.as_secs_f64()
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
