//! Where every fact about a call is kept.
//!
//! The event log is the source of truth; call records and transcripts are projections of it
//! ([`CallRecord::apply`]). [`Store::append`] returns only once the events are durable, and it
//! is the only place sequence numbers are assigned, so every consumer (MCP, SSE, REST,
//! webhooks) sees one order.
//!
//! `Store` is a trait object so the engine does not care whether SQLite, Postgres or memory is
//! behind it. Futures are boxed because the trait must be object-safe.

use futures_util::future::BoxFuture;

use crate::data::{CallEvent, CallFilter, CallId, CallRecord, NewEvent, TranscriptTurn};

mod memory;
mod refusing;
mod sqlite;
pub use memory::MemoryStore;
pub use refusing::RefusingStore;
pub(crate) use sqlite::fmt_time;
pub use sqlite::{DB_FILE, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("event for call {0} arrived before its `created` event")]
    UnknownCall(CallId),
}

pub type StoreResult<T> = Result<T, StoreError>;

pub trait Store: Send + Sync + 'static {
    /// Writes `events` durably, in order, and updates the projections in the same transaction.
    /// Returns them with their sequence numbers.
    fn append<'a>(&'a self, events: Vec<NewEvent>) -> BoxFuture<'a, StoreResult<Vec<CallEvent>>>;

    fn call(&self, id: CallId) -> BoxFuture<'_, StoreResult<Option<CallRecord>>>;

    /// Newest first.
    fn calls<'a>(&'a self, filter: &'a CallFilter) -> BoxFuture<'a, StoreResult<Vec<CallRecord>>>;

    fn transcript(&self, id: CallId) -> BoxFuture<'_, StoreResult<Vec<TranscriptTurn>>>;

    /// Events with `seq > after`, oldest first, for one call or all.
    fn events_after(
        &self,
        after: u64,
        call: Option<CallId>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<CallEvent>>>;

    /// Calls whose log has no terminal event: what recovery must reconcile at start.
    fn unfinished(&self) -> BoxFuture<'_, StoreResult<Vec<CallRecord>>>;

    /// The highest sequence number written (0 when empty).
    fn last_seq(&self) -> BoxFuture<'_, StoreResult<u64>>;
}
