//! A store that forgets on restart: for tests, examples and embedding without a disk.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::{Store, StoreError, StoreResult};
use crate::data::{CallEvent, CallFilter, CallId, CallRecord, EventKind, NewEvent, TranscriptTurn};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    log: Vec<CallEvent>,
    calls: BTreeMap<CallId, CallRecord>,
    transcripts: BTreeMap<CallId, Vec<TranscriptTurn>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-append; the data is still
        // consistent at event granularity, so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn append<'a>(&'a self, events: Vec<NewEvent>) -> BoxFuture<'a, StoreResult<Vec<CallEvent>>> {
        Box::pin(async move {
            let mut g = self.lock();
            // Validate the whole batch first so a bad event cannot leave half a batch written.
            for ev in &events {
                let known = g.calls.contains_key(&ev.call_id)
                    || events.iter().any(|e| {
                        e.call_id == ev.call_id && matches!(e.kind, EventKind::Created { .. })
                    });
                if !known {
                    return Err(StoreError::UnknownCall(ev.call_id));
                }
            }
            let mut out = Vec::with_capacity(events.len());
            for ev in events {
                let seq = g.log.len() as u64 + 1;
                let stored = CallEvent {
                    seq,
                    call_id: ev.call_id,
                    at: ev.at,
                    kind: ev.kind,
                };
                if let Some(rec) = CallRecord::from_created(&stored) {
                    g.calls.entry(stored.call_id).or_insert(rec);
                } else if let Some(rec) = g.calls.get_mut(&stored.call_id) {
                    rec.apply(&stored);
                }
                if let EventKind::Transcript {
                    speaker,
                    text,
                    offset_ms,
                    interrupted,
                } = &stored.kind
                {
                    g.transcripts
                        .entry(stored.call_id)
                        .or_default()
                        .push(TranscriptTurn {
                            speaker: *speaker,
                            text: text.clone(),
                            at: stored.at,
                            offset_ms: *offset_ms,
                            interrupted: *interrupted,
                        });
                }
                g.log.push(stored.clone());
                out.push(stored);
            }
            Ok(out)
        })
    }

    fn call(&self, id: CallId) -> BoxFuture<'_, StoreResult<Option<CallRecord>>> {
        Box::pin(async move { Ok(self.lock().calls.get(&id).cloned()) })
    }

    fn calls<'a>(&'a self, filter: &'a CallFilter) -> BoxFuture<'a, StoreResult<Vec<CallRecord>>> {
        Box::pin(async move {
            let g = self.lock();
            Ok(g.calls
                .values()
                .rev()
                .filter(|r| filter.matches(r))
                .take(filter.limit())
                .cloned()
                .collect())
        })
    }

    fn transcript(&self, id: CallId) -> BoxFuture<'_, StoreResult<Vec<TranscriptTurn>>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .transcripts
                .get(&id)
                .cloned()
                .unwrap_or_default())
        })
    }

    fn events_after(
        &self,
        after: u64,
        call: Option<CallId>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<CallEvent>>> {
        Box::pin(async move {
            let g = self.lock();
            // seq == index + 1, so skip straight to the first candidate.
            let start = (after as usize).min(g.log.len());
            Ok(g.log[start..]
                .iter()
                .filter(|e| call.is_none_or(|c| c == e.call_id))
                .take(limit)
                .cloned()
                .collect())
        })
    }

    fn unfinished(&self) -> BoxFuture<'_, StoreResult<Vec<CallRecord>>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .calls
                .values()
                .filter(|r| !r.state.is_terminal())
                .cloned()
                .collect())
        })
    }

    fn last_seq(&self) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move { Ok(self.lock().log.len() as u64) })
    }
}
