//! A store whose writes can be switched off and on, as a full disk or a lost database would:
//! the engine's answer to a store that refuses appends, seen from outside. (Included with
//! `#[path]`.)
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use futures_util::future::BoxFuture;
use switchboard_actors::store::{MemoryStore, Store, StoreError, StoreResult};
use switchboard_actors::{CallEvent, CallFilter, CallId, CallRecord, NewEvent, TranscriptTurn};

#[derive(Default)]
pub struct RefusingStore {
    inner: MemoryStore,
    refusing: AtomicBool,
    refused: AtomicU32,
}

impl RefusingStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn refuse_writes(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// How many appends were refused so far.
    pub fn refused(&self) -> u32 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Store for RefusingStore {
    fn append<'a>(&'a self, events: Vec<NewEvent>) -> BoxFuture<'a, StoreResult<Vec<CallEvent>>> {
        if self.refusing.load(Ordering::SeqCst) {
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
