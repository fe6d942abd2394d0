//! The event bus: the one path from a call's actors to every consumer.
//!
//! Emitters hand events to a single writer task and never wait. The writer drains whatever
//! has queued (batching under load, so the store never paces the media path), appends the
//! batch to the [`Store`], and only then publishes the sequenced events on a broadcast
//! channel. A consumer therefore never sees an event that a crash could lose.
//!
//! A slow broadcast receiver lags instead of slowing the writer; [`EventStream`] then
//! refills the gap from the log, so consumers see every event exactly once, in order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::data::{CallEvent, CallId, NewEvent};
use crate::store::{Store, StoreError};

/// How many events one append may carry.
const MAX_BATCH: usize = 512;
/// How many published events a broadcast receiver may fall behind before it reads the log.
const BROADCAST_CAPACITY: usize = 4096;

enum Cmd {
    Emit(NewEvent),
    /// Resolves once every event emitted before it is durable and published.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct EventBus {
    tx: mpsc::UnboundedSender<Cmd>,
    published: broadcast::Sender<Arc<CallEvent>>,
    store: Arc<dyn Store>,
    /// The last append error while the writer is retrying a batch it could not write; `None`
    /// once appends succeed again.
    failing: Arc<Mutex<Option<String>>>,
}

impl EventBus {
    /// Starts the writer task and hands back its handle: the owner keeps it to notice the
    /// writer dying (see [`EventBus::is_running`]). It ends when every clone is dropped.
    pub fn start(store: Arc<dyn Store>) -> (EventBus, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (published, _) = broadcast::channel(BROADCAST_CAPACITY);
        let failing = Arc::new(Mutex::new(None));
        let handle = tokio::spawn(writer(
            rx,
            store.clone(),
            published.clone(),
            failing.clone(),
        ));
        let bus = EventBus {
            tx,
            published,
            store,
            failing,
        };
        (bus, handle)
    }

    /// Whether the writer still takes events. Once it is gone nothing emitted is recorded,
    /// so the engine refuses new calls and reports itself unhealthy.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Why the log cannot be written right now, while the writer keeps retrying: the engine
    /// is unhealthy and refuses new calls until an append succeeds again.
    pub fn append_failure(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queues an event for the log. Never blocks; events from one emitter keep their order.
    pub fn emit(&self, event: NewEvent) {
        if self.tx.send(Cmd::Emit(event)).is_err() {
            tracing::error!("event writer is gone; an event was not recorded");
        }
    }

    /// Waits until everything emitted so far is durable and published.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// [`EventBus::flush`], for at most `limit`: `false` when the log did not take everything
    /// in time (the store is refusing writes; the writer still holds the events).
    pub async fn flush_within(&self, limit: std::time::Duration) -> bool {
        tokio::time::timeout(limit, self.flush()).await.is_ok()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Live events after `after` (0 = only new ones unless replay is asked for), for one call
    /// or all, replaying from the log first so nothing between `after` and now is missed.
    pub fn subscribe(&self, call: Option<CallId>, after: Option<u64>) -> EventStream {
        EventStream {
            rx: self.published.subscribe(),
            store: self.store.clone(),
            call,
            after,
            replaying: after.is_some(),
            backlog: VecDeque::new(),
        }
    }
}

/// Back-off before append retry `attempt` (1-based): 40, 80, 160, 320, 640 ms, then 640 ms
/// for as long as the store keeps failing.
fn retry_delay(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(20 << attempt.min(RETRIES_BEFORE_UNHEALTHY))
}

/// Failed appends of one batch after which the engine reports itself unhealthy. The batch is
/// never dropped: a consumer may only see durable events, and a call's record is its log, so
/// the writer holds the batch (and queues new events behind it) until the store takes it.
const RETRIES_BEFORE_UNHEALTHY: u32 = 5;

async fn writer(
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    store: Arc<dyn Store>,
    published: broadcast::Sender<Arc<CallEvent>>,
    failing: Arc<Mutex<Option<String>>>,
) {
    let set_failing = |e: Option<String>| *failing.lock().unwrap_or_else(|p| p.into_inner()) = e;
    let mut cmds = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut cmds, MAX_BATCH).await > 0 {
        let mut batch = Vec::with_capacity(cmds.len());
        let mut flushes = Vec::new();
        for cmd in cmds.drain(..) {
            match cmd {
                Cmd::Emit(ev) => batch.push(ev),
                Cmd::Flush(tx) => flushes.push(tx),
            }
        }
        if !batch.is_empty() {
            let mut attempt = 0u32;
            loop {
                match store.append(batch.clone()).await {
                    Ok(stored) => {
                        if attempt > RETRIES_BEFORE_UNHEALTHY {
                            tracing::info!(attempt, "event append succeeded again");
                            set_failing(None);
                        }
                        for ev in stored {
                            let _ = published.send(Arc::new(ev));
                        }
                        break;
                    }
                    Err(StoreError::UnknownCall(id)) => {
                        // One emitter's bug must not cost every other call its events: drop
                        // only the events the store cannot place, and write the rest.
                        let before = batch.len();
                        batch.retain(|e| e.call_id != id);
                        tracing::error!(call_id = %id, dropped = before - batch.len(),
                            "events for a call with no `created` event were refused");
                        if batch.is_empty() {
                            break;
                        }
                    }
                    Err(e) => {
                        attempt += 1;
                        if attempt <= RETRIES_BEFORE_UNHEALTHY {
                            tracing::warn!(error = %e, attempt, "event append failed; retrying");
                        } else {
                            if attempt == RETRIES_BEFORE_UNHEALTHY + 1 {
                                tracing::error!(error = %e, held = batch.len(),
                                    "event append keeps failing; holding the events and refusing new calls until the store takes them");
                            }
                            set_failing(Some(e.to_string()));
                        }
                        tokio::time::sleep(retry_delay(attempt)).await;
                    }
                }
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// A gap-free, duplicate-free stream of sequenced events.
pub struct EventStream {
    rx: broadcast::Receiver<Arc<CallEvent>>,
    store: Arc<dyn Store>,
    call: Option<CallId>,
    /// Highest seq delivered (or the replay starting point); `None` until the first event of a
    /// live-only stream.
    after: Option<u64>,
    /// Reading from the log until it has nothing newer, then back to the broadcast.
    replaying: bool,
    backlog: VecDeque<CallEvent>,
}

impl EventStream {
    /// The next event, or `None` when the engine has shut down.
    pub async fn next(&mut self) -> Option<Arc<CallEvent>> {
        loop {
            if let Some(ev) = self.backlog.pop_front() {
                self.after = Some(ev.seq);
                return Some(Arc::new(ev));
            }
            if self.replaying {
                let after = self.after.unwrap_or(0);
                match self.store.events_after(after, self.call, 1024).await {
                    Ok(evs) if !evs.is_empty() => {
                        self.backlog.extend(evs);
                        continue;
                    }
                    Ok(_) => self.replaying = false,
                    Err(e) => {
                        tracing::warn!(error = %e, "event replay read failed; continuing live");
                        self.replaying = false;
                    }
                }
            }
            match self.rx.recv().await {
                Ok(ev) => {
                    if self.call.is_some_and(|c| c != ev.call_id) {
                        continue;
                    }
                    if let Some(a) = self.after {
                        if ev.seq <= a {
                            continue; // already delivered from the log
                        }
                        if self.call.is_none() && ev.seq > a + 1 {
                            // The writer publishes in seq order, so a hole means we missed
                            // events: the log has them (and this one).
                            self.replaying = true;
                            continue;
                        }
                    }
                    self.after = Some(ev.seq);
                    return Some(ev);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind: the log has everything after our position.
                    self.replaying = self.after.is_some();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::data::{CallRequest, EventKind};
    use crate::store::RefusingStore;

    fn created(id: CallId) -> NewEvent {
        NewEvent::now(
            id,
            EventKind::Created {
                request: CallRequest::new("+14155550123", "book a table for two"),
            },
        )
    }

    /// Appends are retried on the documented back-off (40, 80, 160, 320, 640 ms, then every
    /// 640 ms); after five failures the bus says why it is unhealthy; nothing is dropped, and
    /// once the store takes writes the held events are published in order and health returns.
    #[tokio::test(start_paused = true)]
    async fn failed_appends_are_retried_on_the_back_off_and_never_dropped() {
        let store = Arc::new(RefusingStore::new());
        store.refuse_next(7);
        let (bus, _writer) = EventBus::start(store.clone());
        let mut live = bus.subscribe(None, None);
        let (a, b) = (CallId::generate(), CallId::generate());
        bus.emit(created(a));
        let start = tokio::time::Instant::now();
        let attempts = || store.attempts();

        // Attempt n+1 comes after the n-th delay, not before.
        let mut elapsed = Duration::ZERO;
        for (n, delay_ms) in [40u64, 80, 160, 320, 640, 640, 640].into_iter().enumerate() {
            tokio::time::sleep_until(start + elapsed + Duration::from_millis(1)).await;
            assert_eq!(attempts(), n as u32 + 1, "attempts at {elapsed:?}");
            assert_eq!(
                bus.append_failure().is_some(),
                n >= 5,
                "health after {} failures",
                n + 1
            );
            if n == 5 {
                // Events emitted while the store refuses queue behind the held batch.
                bus.emit(created(b));
            }
            tokio::time::sleep_until(start + elapsed + Duration::from_millis(delay_ms - 1)).await;
            assert_eq!(attempts(), n as u32 + 1, "retried early at {elapsed:?}");
            elapsed += Duration::from_millis(delay_ms);
        }

        // The eighth attempt succeeds: both calls' events are published, in order, once each.
        let first = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("published")
            .expect("event");
        let second = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("published")
            .expect("event");
        assert_eq!((first.call_id, second.call_id), (a, b));
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(attempts(), 9, "the held batch, then the queued one");
        assert_eq!(
            bus.append_failure(),
            None,
            "healthy again once appends succeed"
        );
    }
}
