//! Post-call webhooks from a durable outbox.
//!
//! The store writes one `outbox` row in the same transaction as a call's `ended` event, with the
//! final record frozen as the body. This task delivers each row to every configured URL and
//! records the result per URL in `outbox_deliveries`, so a crash or restart neither loses a
//! delivery nor invents a new one: a receiver sees the same `X-Switchboard-Event-Id` on every
//! attempt and must only dedupe by it (the one window for a repeat is a crash between the
//! receiver's 2xx and our commit of "delivered").
//!
//! Signature: `X-Switchboard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">`
//! keyed with `store.webhook_secret`; a receiver recomputes it with [`verify`] and rejects
//! timestamps outside its tolerance, which defeats replays of a captured request.

use std::time::Duration;

use chrono::Utc;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use sqlx::Row;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::SqliteStore;

pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";
pub const EVENT_ID_HEADER: &str = "x-switchboard-event-id";
pub const EVENT_TYPE_HEADER: &str = "x-switchboard-event";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("webhook outbox storage failed: {0}")]
    Store(String),
    #[error("webhook URL '{0}' is not an http:// or https:// URL (store.webhook_urls)")]
    BadUrl(String),
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// Every URL receives every ended call (store.webhook_urls).
    pub urls: Vec<String>,
    /// HMAC key (store.webhook_secret). Without it deliveries go out unsigned, with a warning.
    pub secret: Option<SecretString>,
    /// Delay before the first retry; doubles per failed attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts per URL before the delivery is abandoned (logged as an error).
    pub max_attempts: u32,
    /// How often the outbox table is checked for due work.
    pub poll_interval: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

impl OutboxConfig {
    pub fn new(urls: Vec<String>, secret: Option<SecretString>) -> Self {
        OutboxConfig {
            urls,
            secret,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(3600),
            max_attempts: 20,
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac {
    let mut m = Hmac::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

type Hmac = hmac::Hmac<Sha256>;

/// The `X-Switchboard-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex(&tag))
}

/// Checks a signature header the way a receiver should: constant-time MAC comparison and a
/// timestamp within `tolerance` of `now` (unix seconds).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance: Duration) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now - t).unsigned_abs() > tolerance.as_secs() {
        return false;
    }
    if v1.len() % 2 != 0 {
        return false;
    }
    let Some(sig) = (0..v1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(v1.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    mac(secret, t, body).verify_slice(&sig).is_ok()
}

/// The webhook body for outbox row `seq`: the frozen final record inside an envelope that
/// repeats the event id, built deterministically so every attempt sends the same bytes.
fn envelope(event_id: &str, record_json: &str) -> String {
    format!(
        "{{\"type\":\"call.ended\",\"id\":{},\"call\":{record_json}}}",
        serde_json::Value::String(event_id.to_owned())
    )
}

/// The idempotency key of outbox row `seq` for call `call_id`.
pub fn event_id(call_id: &str, seq: i64) -> String {
    format!("{call_id}-{seq}")
}

/// Starts delivering; returns `None` (and does nothing) when no URL is configured. Pending rows
/// stay in the outbox, so configuring a URL later delivers them.
pub fn spawn(
    store: SqliteStore,
    config: OutboxConfig,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>, OutboxError> {
    if config.urls.is_empty() {
        return Ok(None);
    }
    for u in &config.urls {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(OutboxError::BadUrl(u.clone()));
        }
    }
    if config.secret.is_none() {
        tracing::warn!(
            "store.webhook_secret is not set: post-call webhooks go out unsigned; receivers cannot authenticate them"
        );
    }
    crate::tls::install_provider();
    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| OutboxError::Client(e.to_string()))?;
    Ok(Some(tokio::spawn(async move {
        loop {
            if let Err(e) = deliver_due(&store, &config, &client, &shutdown).await {
                tracing::warn!(error = %e, "webhook outbox pass failed; will retry");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(config.poll_interval) => {}
            }
        }
    })))
}

fn store_err(e: sqlx::Error) -> OutboxError {
    OutboxError::Store(e.to_string())
}

/// One pass: attempts every delivery that is due. Returns how many succeeded.
async fn deliver_due(
    store: &SqliteStore,
    config: &OutboxConfig,
    client: &reqwest::Client,
    shutdown: &CancellationToken,
) -> Result<usize, OutboxError> {
    let pool = store.pool();
    let rows =
        sqlx::query("SELECT seq, call_id, body FROM outbox WHERE done = 0 ORDER BY seq LIMIT 100")
            .fetch_all(pool)
            .await
            .map_err(store_err)?;
    let mut delivered = 0;
    for row in rows {
        if shutdown.is_cancelled() {
            break;
        }
        let seq: i64 = row.try_get(0).map_err(store_err)?;
        let call_id: String = row.try_get(1).map_err(store_err)?;
        let record: String = row.try_get(2).map_err(store_err)?;
        let id = event_id(&call_id, seq);
        let body = envelope(&id, &record);
        let mut finished = 0;
        for url in &config.urls {
            let state = sqlx::query(
                "SELECT attempts, next_attempt_ms, delivered_at FROM outbox_deliveries \
                 WHERE seq = $1 AND url = $2",
            )
            .bind(seq)
            .bind(url)
            .fetch_optional(pool)
            .await
            .map_err(store_err)?;
            let (attempts, next_ms, done_at): (i64, i64, Option<String>) = match &state {
                Some(r) => (
                    r.try_get(0).map_err(store_err)?,
                    r.try_get(1).map_err(store_err)?,
                    r.try_get(2).map_err(store_err)?,
                ),
                None => (0, 0, None),
            };
            if done_at.is_some() || attempts >= i64::from(config.max_attempts) {
                finished += 1;
                continue;
            }
            if next_ms > Utc::now().timestamp_millis() {
                continue;
            }
            let result = post(client, config, url, &id, &body).await;
            let attempts = attempts + 1;
            match result {
                Ok(()) => {
                    sqlx::query(
                        "INSERT INTO outbox_deliveries (seq, url, attempts, next_attempt_ms, delivered_at) \
                         VALUES ($1, $2, $3, 0, $4) ON CONFLICT (seq, url) DO UPDATE SET \
                         attempts = excluded.attempts, delivered_at = excluded.delivered_at, last_error = NULL",
                    )
                    .bind(seq)
                    .bind(url)
                    .bind(attempts)
                    .bind(crate::store::fmt_time(Utc::now()))
                    .execute(pool)
                    .await
                    .map_err(store_err)?;
                    delivered += 1;
                    finished += 1;
                    tracing::info!(event_id = %id, url = %url, attempts, "post-call webhook delivered");
                }
                Err(problem) => {
                    let wait = config.backoff(attempts as u32);
                    let next = Utc::now().timestamp_millis() + wait.as_millis() as i64;
                    sqlx::query(
                        "INSERT INTO outbox_deliveries (seq, url, attempts, next_attempt_ms, last_error) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq, url) DO UPDATE SET \
                         attempts = excluded.attempts, next_attempt_ms = excluded.next_attempt_ms, \
                         last_error = excluded.last_error",
                    )
                    .bind(seq)
                    .bind(url)
                    .bind(attempts)
                    .bind(next)
                    .bind(problem.to_string())
                    .execute(pool)
                    .await
                    .map_err(store_err)?;
                    if attempts >= i64::from(config.max_attempts) {
                        tracing::error!(event_id = %id, url = %url, attempts, error = %problem,
                            "post-call webhook abandoned after the last attempt");
                        finished += 1;
                    } else {
                        tracing::warn!(event_id = %id, url = %url, attempts, error = %problem,
                            retry_in_ms = wait.as_millis() as u64, "post-call webhook failed; will retry");
                    }
                }
            }
        }
        if finished == config.urls.len() {
            sqlx::query("UPDATE outbox SET done = 1 WHERE seq = $1")
                .bind(seq)
                .execute(pool)
                .await
                .map_err(store_err)?;
        }
    }
    Ok(delivered)
}

/// Why one webhook delivery failed (stored as the delivery's `last_error`).
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("receiver answered {0}")]
    Status(reqwest::StatusCode),
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
}

async fn post(
    client: &reqwest::Client,
    config: &OutboxConfig,
    url: &str,
    id: &str,
    body: &str,
) -> Result<(), DeliveryError> {
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, id)
        .header(EVENT_TYPE_HEADER, "call.ended")
        .body(body.to_owned());
    if let Some(secret) = &config.secret {
        let sig = sign(
            secret.expose_secret().as_bytes(),
            Utc::now().timestamp(),
            body.as_bytes(),
        );
        req = req.header(SIGNATURE_HEADER, sig);
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(DeliveryError::Status(resp.status())),
        Err(e) => Err(DeliveryError::Request(e)),
    }
}

/// How a delivery stands, for tests and operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryState {
    pub event_id: String,
    pub url: String,
    pub attempts: u32,
    pub delivered: bool,
    pub last_error: Option<String>,
}

/// Every delivery record, oldest first.
pub async fn deliveries(store: &SqliteStore) -> Result<Vec<DeliveryState>, OutboxError> {
    let rows = sqlx::query(
        "SELECT o.call_id, d.seq, d.url, d.attempts, d.delivered_at, d.last_error \
         FROM outbox_deliveries d JOIN outbox o ON o.seq = d.seq ORDER BY d.seq, d.url",
    )
    .fetch_all(store.pool())
    .await
    .map_err(store_err)?;
    rows.iter()
        .map(|r| {
            let call_id: String = r.try_get(0).map_err(store_err)?;
            let seq: i64 = r.try_get(1).map_err(store_err)?;
            let attempts: i64 = r.try_get(3).map_err(store_err)?;
            let delivered_at: Option<String> = r.try_get(4).map_err(store_err)?;
            Ok(DeliveryState {
                event_id: event_id(&call_id, seq),
                url: r.try_get(2).map_err(store_err)?,
                attempts: attempts.max(0) as u32,
                delivered: delivered_at.is_some(),
                last_error: r.try_get(5).map_err(store_err)?,
            })
        })
        .collect()
}

/// Outbox rows not yet finished (delivered or abandoned for every URL).
pub async fn pending(store: &SqliteStore) -> Result<u64, OutboxError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE done = 0")
        .fetch_one(store.pool())
        .await
        .map_err(store_err)?;
    Ok(n.max(0) as u64)
}
