//! Recovery at start: no call is left running unattended after a crash.
//!
//! A call whose log has no terminal event was live when the engine last stopped, and no actor
//! runs it now. For each one: ask the carrier for the call's status; if it is still live, hang it
//! up (`canceled` while queued/ringing, `completed` once answered, re-checked so a call answered
//! in between is not missed); then write its final state (`failed`, detail `engine_restarted`,
//! reason "engine restarted").
//!
//! The carrier is behind the small [`Carrier`] trait so this module does not depend on the
//! engine's REST client; the engine's own [`crate::twilio::rest::TwilioRest`] implements it.

use futures_util::future::BoxFuture;

use crate::data::{
    CallDetail, CallId, CallRecord, CallState, EventKind, NewEvent, Outcome, OutcomeStatus,
};
use crate::store::{Store, StoreError};

/// The reason written on every call recovery ends.
pub const REASON: &str = "engine restarted";

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A carrier request recovery made failed; the message is the carrier client's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CarrierError(pub String);

/// The carrier's view of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CarrierCall {
    /// `queued`, `ringing`, `in-progress`, `completed` …
    pub status: String,
    /// The carrier's own `duration` (seconds answered), once it has one.
    pub duration_secs: Option<u64>,
}

/// What recovery needs from a carrier.
pub trait Carrier: Send + Sync {
    /// The carrier's view of `call_sid`, or `None` when the carrier does not know the call.
    fn fetch<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> BoxFuture<'a, Result<Option<CarrierCall>, CarrierError>>;

    /// The carrier's status word for `call_sid`, or `None` when the carrier does not know it.
    fn status<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, CarrierError>> {
        Box::pin(async move { Ok(self.fetch(call_sid).await?.map(|c| c.status)) })
    }

    /// Asks the carrier to end the call: `status` is `canceled` or `completed`.
    fn hang_up<'a>(
        &'a self,
        call_sid: &'a str,
        status: &'a str,
    ) -> BoxFuture<'a, Result<(), CarrierError>>;
}

/// Carrier statuses in which a call may still be running.
pub fn is_live(status: &str) -> bool {
    matches!(status, "queued" | "initiated" | "ringing" | "in-progress")
}

/// What recovery did to one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciled {
    pub call_id: CallId,
    pub call_sid: Option<String>,
    /// The carrier's status when asked (`None`: no carrier call, or the carrier did not know it).
    pub carrier_status: Option<String>,
    /// True when recovery asked the carrier to end the call and it accepted.
    pub hung_up: bool,
    /// A carrier failure, if any (the call is still marked ended; Twilio's `TimeLimit` bounds it).
    pub problem: Option<String>,
}

/// Reconciles every unfinished call in `store`. Call it once at start, before the engine
/// admits new calls; it writes straight to the store (nobody is subscribed yet).
pub async fn reconcile(
    store: &dyn Store,
    carrier: &dyn Carrier,
) -> Result<Vec<Reconciled>, RecoveryError> {
    let mut out = Vec::new();
    for rec in store.unfinished().await? {
        out.push(reconcile_one(store, carrier, &rec).await?);
    }
    Ok(out)
}

async fn reconcile_one(
    store: &dyn Store,
    carrier: &dyn Carrier,
    rec: &CallRecord,
) -> Result<Reconciled, RecoveryError> {
    let mut result = Reconciled {
        call_id: rec.id,
        call_sid: rec.carrier_call_sid.clone(),
        carrier_status: None,
        hung_up: false,
        problem: None,
    };
    let mut final_status = None;
    let mut carrier_duration = None;
    if let Some(sid) = rec.carrier_call_sid.as_deref() {
        match carrier.fetch(sid).await {
            Ok(call) => {
                let status = call.as_ref().map(|c| c.status.clone());
                carrier_duration = call.and_then(|c| c.duration_secs);
                result.carrier_status = status.clone();
                final_status = status.clone();
                if let Some(s) = status.filter(|s| is_live(s)) {
                    match hang_up(carrier, sid, &s).await {
                        Ok(after) => {
                            result.hung_up = true;
                            if let Some(after) = &after {
                                carrier_duration = after.duration_secs.or(carrier_duration);
                            }
                            final_status = after.map(|c| c.status).or(final_status);
                        }
                        Err(e) => result.problem = Some(e.to_string()),
                    }
                }
            }
            Err(e) => {
                // Unknown state: end it blindly, `completed` works in every live state.
                match carrier.hang_up(sid, "completed").await {
                    Ok(()) => {
                        result.hung_up = true;
                        result.problem = Some(format!("status unknown ({e}); hung up anyway"));
                    }
                    Err(e2) => {
                        result.problem = Some(format!("status: {e}; hang-up: {e2}"));
                    }
                }
            }
        }
    }
    if let Some(p) = &result.problem {
        tracing::error!(call_id = %rec.id, problem = %p,
            "recovery could not confirm the carrier call ended; its TimeLimit bounds it");
    } else {
        tracing::info!(call_id = %rec.id, carrier_status = ?result.carrier_status,
            hung_up = result.hung_up, "recovered an unfinished call");
    }
    let mut events = Vec::new();
    if let (Some(sid), Some(status)) = (&rec.carrier_call_sid, &final_status) {
        events.push(NewEvent::now(
            rec.id,
            EventKind::Carrier {
                status: status.clone(),
                call_sid: Some(sid.clone()),
                answered_by: None,
                duration_secs: None,
            },
        ));
    }
    // The carrier's own duration; without it, what the log knew when the engine stopped
    // (never the engine's downtime).
    let duration_secs = carrier_duration.unwrap_or(rec.duration_secs);
    events.push(NewEvent::now(
        rec.id,
        EventKind::Ended {
            state: CallState::Failed,
            detail: CallDetail::EngineRestarted,
            reason: Some(REASON.into()),
            outcome: Some(Outcome::new(
                OutcomeStatus::Unknown,
                "The engine restarted while this call was live; it was ended without a result.",
            )),
            duration_secs,
            usage: rec.usage.clone(),
        },
    ));
    store.append(events).await?;
    Ok(result)
}

/// Cancels (queued/ringing) or completes (answered) the call, then re-checks once so a call
/// answered between the fetch and the cancel is still ended. Returns the last view seen.
async fn hang_up(
    carrier: &dyn Carrier,
    sid: &str,
    status: &str,
) -> Result<Option<CarrierCall>, CarrierError> {
    let first = if status == "in-progress" {
        "completed"
    } else {
        "canceled"
    };
    carrier.hang_up(sid, first).await?;
    let after = carrier.fetch(sid).await?;
    if first == "canceled" && after.as_ref().is_some_and(|c| is_live(&c.status)) {
        carrier.hang_up(sid, "completed").await?;
        return carrier.fetch(sid).await;
    }
    Ok(after)
}

/// Recovery talks to Twilio through the engine's own REST client.
pub type TwilioCarrier = crate::twilio::rest::TwilioRest;

impl Carrier for crate::twilio::rest::TwilioRest {
    fn fetch<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> BoxFuture<'a, Result<Option<CarrierCall>, CarrierError>> {
        Box::pin(async move {
            match crate::twilio::rest::TwilioRest::fetch(self, call_sid).await {
                Ok(c) => Ok(Some(CarrierCall {
                    duration_secs: c.duration_secs(),
                    status: c.status,
                })),
                Err(crate::twilio::rest::TwilioError::Api { code: 20404, .. }) => Ok(None),
                Err(e) => Err(CarrierError(e.to_string())),
            }
        })
    }

    fn hang_up<'a>(
        &'a self,
        call_sid: &'a str,
        status: &'a str,
    ) -> BoxFuture<'a, Result<(), CarrierError>> {
        Box::pin(async move {
            match self.set_status(call_sid, status).await {
                Ok(_) => Ok(()),
                Err(e) if e.already_ended() => Ok(()),
                Err(e) => Err(CarrierError(e.to_string())),
            }
        })
    }
}
