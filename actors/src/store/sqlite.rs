//! The durable store: one SQLite file (`switchboard.db`) under the data dir.
//!
//! Durability choice: WAL with `synchronous=FULL`. In WAL mode `NORMAL` survives a process
//! crash (`kill -9`) but may lose the last commits on power loss or an OS crash, and the
//! contract of [`Store::append`] is "durable before acknowledged" to every consumer, including a
//! post-call webhook that a receiver will act on. FULL costs one fsync per commit; the event
//! bus batches whatever queued during the previous commit into one transaction, so the fsync is
//! paid per batch, not per event (see the README's Storage section for the measured rate).
//!
//! SQL is written with `$N` placeholders and standard `ON CONFLICT` so the same text can serve
//! a Postgres backend later.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError, StoreResult};
use crate::data::{
    CallEvent, CallFilter, CallId, CallRecord, EventKind, NewEvent, Speaker, TranscriptTurn,
};

/// Rows per multi-row INSERT (6 columns x 150 stays far below SQLite's parameter limit).
const INSERT_CHUNK: usize = 150;

/// Appends `($1, $2, …), (…)` for `rows` rows of `cols` columns.
fn push_placeholders(sql: &mut String, rows: usize, cols: usize) {
    use std::fmt::Write as _;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            let _ = write!(
                sql,
                "{}${}",
                if c == 0 { "" } else { ", " },
                r * cols + c + 1
            );
        }
        sql.push(')');
    }
}

/// The database file's name inside the data dir.
pub const DB_FILE: &str = "switchboard.db";

/// Cheap to clone: a handle on a connection pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Fixed-width RFC 3339 in UTC, so text order is time order and timestamps round-trip exactly.
pub(crate) fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_time(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt("timestamp", e))
}

fn parse_record(json: &str) -> StoreResult<CallRecord> {
    serde_json::from_str(json).map_err(|e| corrupt("call record", e))
}

impl SqliteStore {
    /// Opens (creating if missing) `<data_dir>/switchboard.db` and brings its schema up to date.
    pub async fn open(data_dir: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let dir = data_dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create the data dir {} (store.data_dir): {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Backend(format!("cannot open the database {}: {e}", path.display()))
            })?;
        sqlx::sqlx_macros::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot migrate the database {}: {e}",
                    path.display()
                ))
            })?;
        Ok(SqliteStore { pool, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to return (checkpoints the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writers take the lock up front so a read-then-write transaction never fails with
    /// SQLITE_BUSY on upgrade (the busy timeout only covers waiting at BEGIN).
    pub(crate) async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)
    }

    async fn load_record(
        tx: &mut Transaction<'static, Sqlite>,
        id: CallId,
    ) -> StoreResult<Option<CallRecord>> {
        let row: Option<String> = sqlx::query_scalar("SELECT record FROM calls WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(backend)?;
        row.as_deref().map(parse_record).transpose()
    }

    async fn append_batch(&self, events: Vec<NewEvent>) -> StoreResult<Vec<CallEvent>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        // Records touched by this batch, in first-touch order, written once at the end.
        let mut records: HashMap<CallId, CallRecord> = HashMap::new();
        let mut order: Vec<CallId> = Vec::new();
        // Like MemoryStore: a call is known if the batch creates it anywhere; events logged
        // before their `created` are kept in the log but not projected.
        let created_in_batch: HashSet<CallId> = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Created { .. }))
            .map(|e| e.call_id)
            .collect();
        let mut checked: HashSet<CallId> = HashSet::new();
        for ev in &events {
            if !checked.insert(ev.call_id) {
                continue;
            }
            if let Some(rec) = Self::load_record(&mut tx, ev.call_id).await? {
                records.insert(ev.call_id, rec);
                order.push(ev.call_id);
            } else if !created_in_batch.contains(&ev.call_id) {
                // Dropping `tx` rolls the whole batch back.
                return Err(StoreError::UnknownCall(ev.call_id));
            }
        }

        // The log: multi-row inserts, because per-statement round trips to SQLite's worker
        // thread, not the disk, dominate the cost of a batch.
        let mut rows = Vec::with_capacity(events.len());
        for ev in &events {
            let payload = serde_json::to_string(&ev.kind).map_err(|e| corrupt("event", e))?;
            rows.push((
                ev.call_id.to_string(),
                fmt_time(ev.at),
                ev.kind.name(),
                payload,
            ));
        }
        let mut seqs: Vec<i64> = Vec::with_capacity(events.len());
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut sql = String::from("INSERT INTO events (call_id, at, kind, payload) VALUES ");
            push_placeholders(&mut sql, chunk.len(), 4);
            sql.push_str(" RETURNING seq");
            let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
            for (id, at, kind, payload) in chunk {
                q = q.bind(id).bind(at).bind(*kind).bind(payload);
            }
            let mut got = q.fetch_all(&mut *tx).await.map_err(backend)?;
            // One statement holding the write lock assigns consecutive numbers in row order;
            // RETURNING's row order is not promised, so sort.
            got.sort_unstable();
            seqs.extend(got);
        }
        if seqs.len() != events.len() {
            return Err(StoreError::Backend(format!(
                "the log returned {} sequence numbers for {} events",
                seqs.len(),
                events.len()
            )));
        }

        let mut ended: Vec<(u64, CallId)> = Vec::new();
        let mut turns = Vec::new();
        let mut out = Vec::with_capacity(events.len());
        for ((ev, seq), (_, at, _, _)) in events.into_iter().zip(seqs).zip(&rows) {
            let stored = CallEvent {
                seq: seq as u64,
                call_id: ev.call_id,
                at: ev.at,
                kind: ev.kind,
            };
            match records.get_mut(&stored.call_id) {
                // Like MemoryStore: a second `created` does not reset an existing record.
                Some(_) if matches!(stored.kind, EventKind::Created { .. }) => {}
                Some(rec) => {
                    let was_terminal = rec.state.is_terminal();
                    rec.apply(&stored);
                    if !was_terminal && matches!(stored.kind, EventKind::Ended { .. }) {
                        ended.push((stored.seq, stored.call_id));
                    }
                }
                None => {
                    if let Some(rec) = CallRecord::from_created(&stored) {
                        records.insert(stored.call_id, rec);
                        order.push(stored.call_id);
                    }
                }
            }
            if let EventKind::Transcript {
                speaker,
                text,
                offset_ms,
                interrupted,
            } = &stored.kind
            {
                let speaker = match speaker {
                    Speaker::Agent => "agent",
                    Speaker::Callee => "callee",
                };
                turns.push((
                    seq,
                    stored.call_id.to_string(),
                    speaker,
                    text.clone(),
                    at.clone(),
                    *offset_ms as i64,
                    *interrupted,
                ));
            }
            out.push(stored);
        }
        for chunk in turns.chunks(INSERT_CHUNK) {
            let mut sql = String::from(
                "INSERT INTO transcript_turns (seq, call_id, speaker, text, at, offset_ms, interrupted) VALUES ",
            );
            push_placeholders(&mut sql, chunk.len(), 7);
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, id, speaker, text, at, offset, interrupted) in chunk {
                q = q
                    .bind(*seq)
                    .bind(id)
                    .bind(*speaker)
                    .bind(text)
                    .bind(at)
                    .bind(*offset)
                    .bind(*interrupted);
            }
            q.execute(&mut *tx).await.map_err(backend)?;
        }

        let now = fmt_time(Utc::now());
        for id in &order {
            let rec = &records[id];
            let json = serde_json::to_string(rec).map_err(|e| corrupt("call record", e))?;
            sqlx::query(
                "INSERT INTO calls (id, state, detail, created_at, updated_at, ended_at, \
                 carrier_call_sid, last_seq, record) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, detail = excluded.detail, \
                 updated_at = excluded.updated_at, ended_at = excluded.ended_at, \
                 carrier_call_sid = excluded.carrier_call_sid, last_seq = excluded.last_seq, \
                 record = excluded.record",
            )
            .bind(id.to_string())
            .bind(rec.state.as_str())
            .bind(
                serde_json::to_value(rec.detail)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            )
            .bind(fmt_time(rec.created_at))
            .bind(&now)
            .bind(rec.ended_at.map(fmt_time))
            .bind(rec.carrier_call_sid.as_deref())
            .bind(rec.last_seq as i64)
            .bind(json)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        for (seq, id) in ended {
            let body =
                serde_json::to_string(&records[&id]).map_err(|e| corrupt("call record", e))?;
            sqlx::query(
                "INSERT INTO outbox (seq, call_id, created_at, body) VALUES ($1, $2, $3, $4)",
            )
            .bind(seq as i64)
            .bind(id.to_string())
            .bind(&now)
            .bind(body)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }

    fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<CallEvent> {
        let seq: i64 = row.try_get(0).map_err(backend)?;
        let call_id: String = row.try_get(1).map_err(backend)?;
        let at: String = row.try_get(2).map_err(backend)?;
        let payload: String = row.try_get(3).map_err(backend)?;
        Ok(CallEvent {
            seq: seq as u64,
            call_id: CallId::from_str(&call_id).map_err(|e| corrupt("event call id", e))?,
            at: parse_time(&at)?,
            kind: serde_json::from_str(&payload).map_err(|e| corrupt("event payload", e))?,
        })
    }

    /// Deletes every trace (events, record, transcript, outbox rows) of calls that ended before
    /// `cutoff`. Returns how many calls were removed.
    pub async fn purge_ended_before(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let cutoff = fmt_time(cutoff);
        let mut tx = self.begin_write().await?;
        const SEL: &str = "SELECT id FROM calls WHERE ended_at IS NOT NULL AND ended_at < $1 \
                           AND state IN ('completed', 'failed', 'canceled')";
        for table in ["events", "transcript_turns"] {
            let sql = format!("DELETE FROM {table} WHERE call_id IN ({SEL})");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&cutoff)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        sqlx::query(
            "DELETE FROM outbox_deliveries WHERE seq IN (SELECT seq FROM outbox WHERE call_id IN \
             (SELECT id FROM calls WHERE ended_at IS NOT NULL AND ended_at < $1 \
              AND state IN ('completed', 'failed', 'canceled')))",
        )
        .bind(&cutoff)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM outbox WHERE call_id IN ({SEL})"
        )))
        .bind(&cutoff)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let removed = sqlx::query(
            "DELETE FROM calls WHERE ended_at IS NOT NULL AND ended_at < $1 \
             AND state IN ('completed', 'failed', 'canceled')",
        )
        .bind(&cutoff)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(removed)
    }

    /// Purges calls that ended more than `retention_days` ago, now and then hourly, until
    /// `shutdown`. With 0 days (keep forever) it does nothing and returns at once.
    pub fn spawn_retention(
        &self,
        retention_days: u32,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            if retention_days == 0 {
                return;
            }
            let keep = chrono::Duration::days(i64::from(retention_days));
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match store.purge_ended_before(Utc::now() - keep).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(calls = n, retention_days, "purged old calls"),
                    Err(e) => tracing::warn!(error = %e, "retention purge failed; will retry"),
                }
            }
        })
    }
}

impl Store for SqliteStore {
    fn append<'a>(&'a self, events: Vec<NewEvent>) -> BoxFuture<'a, StoreResult<Vec<CallEvent>>> {
        Box::pin(self.append_batch(events))
    }

    fn call(&self, id: CallId) -> BoxFuture<'_, StoreResult<Option<CallRecord>>> {
        Box::pin(async move {
            let row: Option<String> = sqlx::query_scalar("SELECT record FROM calls WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            row.as_deref().map(parse_record).transpose()
        })
    }

    fn calls<'a>(&'a self, filter: &'a CallFilter) -> BoxFuture<'a, StoreResult<Vec<CallRecord>>> {
        Box::pin(async move {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT record FROM calls WHERE ($1 IS NULL OR state = $1) \
                 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            )
            .bind(filter.state.map(|s| s.as_str()))
            .bind(filter.before.map(|b| b.to_string()))
            .bind(filter.limit() as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            rows.iter().map(|r| parse_record(r)).collect()
        })
    }

    fn transcript(&self, id: CallId) -> BoxFuture<'_, StoreResult<Vec<TranscriptTurn>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT speaker, text, at, offset_ms, interrupted FROM transcript_turns \
                 WHERE call_id = $1 ORDER BY seq",
            )
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            rows.iter()
                .map(|row| {
                    let speaker: String = row.try_get(0).map_err(backend)?;
                    let at: String = row.try_get(2).map_err(backend)?;
                    let offset: i64 = row.try_get(3).map_err(backend)?;
                    Ok(TranscriptTurn {
                        speaker: serde_json::from_value(serde_json::Value::String(speaker))
                            .map_err(|e| corrupt("transcript speaker", e))?,
                        text: row.try_get(1).map_err(backend)?,
                        at: parse_time(&at)?,
                        offset_ms: offset.max(0) as u64,
                        interrupted: row.try_get(4).map_err(backend)?,
                    })
                })
                .collect()
        })
    }

    fn events_after(
        &self,
        after: u64,
        call: Option<CallId>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<CallEvent>>> {
        Box::pin(async move {
            let limit = limit.min(i64::MAX as usize) as i64;
            let after = after.min(i64::MAX as u64) as i64;
            let rows = match call {
                Some(id) => {
                    sqlx::query(
                        "SELECT seq, call_id, at, payload FROM events \
                         WHERE call_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    )
                    .bind(id.to_string())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                }
                None => {
                    sqlx::query(
                        "SELECT seq, call_id, at, payload FROM events \
                         WHERE seq > $1 ORDER BY seq LIMIT $2",
                    )
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                }
            }
            .map_err(backend)?;
            rows.iter().map(Self::event_from_row).collect()
        })
    }

    fn unfinished(&self) -> BoxFuture<'_, StoreResult<Vec<CallRecord>>> {
        Box::pin(async move {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT record FROM calls WHERE state IN ('dialing', 'connected') ORDER BY id",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            rows.iter().map(|r| parse_record(r)).collect()
        })
    }

    fn last_seq(&self) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
            Ok(seq.unwrap_or(0).max(0) as u64)
        })
    }
}
