//! A store that refuses appends when told to, over a real in-memory store: what a full disk
//! or a locked database looks like to the engine. For tests of how the engine (or a program
//! embedding it) answers an event log that cannot be written: the engine's own tests use it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use futures_util::future::BoxFuture;

use super::{MemoryStore, Store, StoreError, StoreResult};
use crate::data::{CallEvent, CallFilter, CallId, CallRecord, NewEvent, TranscriptTurn};

#[derive(Default)]
pub struct RefusingStore {
    inner: MemoryStore,
    refuse_next: AtomicU32,
    refusing: AtomicBool,
    attempts: AtomicU32,
    refused: AtomicU32,
}

impl RefusingStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses the next `n` appends, then takes them again.
    pub fn refuse_next(&self, n: u32) {
        self.refuse_next.store(n, Ordering::SeqCst);
    }

    /// Refuses every append while `on`.
    pub fn refuse_writes(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// Appends asked for so far.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Appends refused so far.
    pub fn refused(&self) -> u32 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Store for RefusingStore {
    fn append<'a>(&'a self, events: Vec<NewEvent>) -> BoxFuture<'a, StoreResult<Vec<CallEvent>>> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let counted = self
            .refuse_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if counted || self.refusing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async { Err(StoreError::Backend("disk full".into())) });
        }
        self.inner.append(events)
    }
    fn call(&self, id: CallId) -> BoxFuture<'_, StoreResult<Option<CallRecord>>> {
        self.inner.call(id)
    }
    fn calls<'a>(&'a self, filter: &'a CallFilter) -> BoxFuture<'a, StoreResult<Vec<CallRecord>>> {
        self.inner.calls(filter)
    }
    fn transcript(&self, id: CallId) -> BoxFuture<'_, StoreResult<Vec<TranscriptTurn>>> {
        self.inner.transcript(id)
    }
    fn events_after(
        &self,
        after: u64,
        call: Option<CallId>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<CallEvent>>> {
        self.inner.events_after(after, call, limit)
    }
    fn unfinished(&self) -> BoxFuture<'_, StoreResult<Vec<CallRecord>>> {
        self.inner.unfinished()
    }
    fn last_seq(&self) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.last_seq()
    }
}
