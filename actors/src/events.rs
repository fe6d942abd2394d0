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
use std::sync::Arc;

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
}

impl EventBus {
    /// Starts the writer task and hands back its handle: the owner keeps it to notice the
    /// writer dying (see [`EventBus::is_running`]). It ends when every clone is dropped.
    pub fn start(store: Arc<dyn Store>) -> (EventBus, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (published, _) = broadcast::channel(BROADCAST_CAPACITY);
        let handle = tokio::spawn(writer(rx, store.clone(), published.clone()));
        let bus = EventBus {
            tx,
            published,
            store,
        };
        (bus, handle)
    }

    /// Whether the writer still takes events. Once it is gone nothing emitted is recorded,
    /// so the engine refuses new calls and reports itself unhealthy.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
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

/// Back-off before append retry `attempt` (1-based): 40, 80, 160, 320, 640 ms.
fn retry_delay(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(20 << attempt)
}

async fn writer(
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    store: Arc<dyn Store>,
    published: broadcast::Sender<Arc<CallEvent>>,
) {
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
                    Err(e) if attempt < 5 => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "event append failed; retrying");
                        tokio::time::sleep(retry_delay(attempt)).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, lost = batch.len(), "event append failed for good");
                        break;
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
