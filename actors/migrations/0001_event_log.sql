-- The event log is the source of truth; every other table is derived from it in the same
-- transaction that appends to it. Plain SQL shared by SQLite and (later) Postgres, except the
-- AUTOINCREMENT spelling, which keeps a purged sequence number from ever being handed out again
-- (SSE clients resume by it).

CREATE TABLE events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id  TEXT    NOT NULL,
    at       TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    payload  TEXT    NOT NULL
);
CREATE INDEX events_by_call ON events (call_id, seq);

-- The projection: CallRecord::apply folded over the call's events. The columns exist for
-- filtering and retention; `record` is the whole record as JSON.
CREATE TABLE calls (
    id                TEXT    PRIMARY KEY,
    state             TEXT    NOT NULL,
    detail            TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    ended_at          TEXT,
    carrier_call_sid  TEXT,
    last_seq          INTEGER NOT NULL,
    record            TEXT    NOT NULL
);
CREATE INDEX calls_by_state ON calls (state, id);
CREATE INDEX calls_by_ended ON calls (ended_at);

CREATE TABLE transcript_turns (
    seq        INTEGER PRIMARY KEY,
    call_id    TEXT    NOT NULL,
    speaker    TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    at         TEXT    NOT NULL,
    offset_ms  INTEGER NOT NULL
);
CREATE INDEX transcript_by_call ON transcript_turns (call_id, seq);

-- Post-call webhooks: one row per Ended event, written with it, so a delivery can be neither
-- lost by a crash nor invented twice. `body` is frozen at write time so retries send the same
-- bytes under the same event id.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY,
    call_id     TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    done        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox (done, seq);

-- Per receiver: how far each delivery of an outbox row has got.
CREATE TABLE outbox_deliveries (
    seq              INTEGER NOT NULL,
    url              TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms  INTEGER NOT NULL DEFAULT 0,
    delivered_at     TEXT,
    last_error       TEXT,
    PRIMARY KEY (seq, url)
);
