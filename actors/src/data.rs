//! The public data model: what a caller asks for, what a call is, and what it produced.
//!
//! These types cross every boundary (MCP, REST, SSE, the store, embedding programs), so they
//! are plain serde data with stable snake_case names and no behaviour beyond projection.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// A call's identity: a ULID, so ids sort by creation time and are unguessable enough to
/// name an actor and a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub Ulid);

impl JsonSchema for CallId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CallId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A call id: a 26-character ULID",
            "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"
        })
    }
}

impl CallId {
    pub fn generate() -> Self {
        CallId(Ulid::generate())
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a call id looks like, for error messages.
pub const CALL_ID_ACCEPTED: &str = "a call id (a ULID in canonical form): 26 characters of upper-case Crockford base32 (0-9 and A-Z without I, L, O, U), the first 0 to 7, like 01JD3Z8Q5V6N0M8X9K2C4B7A1E";

/// A string that is not a canonical call id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{got}' is not accepted ({why}); accepted: {CALL_ID_ACCEPTED}")]
pub struct CallIdError {
    pub got: String,
    pub why: &'static str,
}

impl FromStr for CallId {
    type Err = CallIdError;
    /// Only the canonical spelling: no surrounding space, no lower case, no Crockford aliases
    /// (I, L, O), and no first character above 7 (that would overflow 128 bits).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| CallIdError {
            got: s.to_owned(),
            why,
        };
        if s.len() != 26 {
            return Err(err("a call id has exactly 26 characters"));
        }
        if let Some(c) = s
            .bytes()
            .find(|b| !matches!(b, b'0'..=b'9' | b'A'..=b'H' | b'J' | b'K' | b'M' | b'N' | b'P'..=b'T' | b'V'..=b'Z'))
        {
            return Err(err(if c.is_ascii_lowercase() {
                "lower case is not accepted"
            } else if matches!(c, b'I' | b'L' | b'O' | b'U') {
                "I, L, O and U are not in the alphabet"
            } else {
                "a character outside the alphabet"
            }));
        }
        if s.as_bytes()[0] > b'7' {
            return Err(err("the first character must be 0 to 7"));
        }
        Ulid::from_string(s)
            .map(CallId)
            .map_err(|_| err("not a ULID"))
    }
}

/// A string that is not one of the five call states.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a call state (accepted: dialing, connected, completed, failed, canceled)")]
pub struct CallStateError(pub String);

/// The public states. Finer facts live in [`CallDetail`] so that clients only ever branch on
/// five values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Dialing,
    Connected,
    Completed,
    Failed,
    Canceled,
}

impl CallState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CallState::Completed | CallState::Failed | CallState::Canceled
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Dialing => "dialing",
            CallState::Connected => "connected",
            CallState::Completed => "completed",
            CallState::Failed => "failed",
            CallState::Canceled => "canceled",
        }
    }
}

impl fmt::Display for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallState {
    type Err = CallStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dialing" => Ok(CallState::Dialing),
            "connected" => Ok(CallState::Connected),
            "completed" => Ok(CallState::Completed),
            "failed" => Ok(CallState::Failed),
            "canceled" => Ok(CallState::Canceled),
            other => Err(CallStateError(other.to_owned())),
        }
    }
}

/// Finer facts about where a call is or why it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallDetail {
    /// Admitted, carrier call not yet created.
    Admitted,
    /// The carrier accepted the call (`queued`/`initiated`).
    Queued,
    Ringing,
    /// Answered; waiting for the media stream.
    Answered,
    /// Media stream up, agent talking.
    InProgress,
    /// The agent called `end_call`.
    AgentEnded,
    CalleeHungUp,
    Busy,
    NoAnswer,
    /// Answered by voicemail / a machine.
    Voicemail,
    /// The carrier refused or failed the call (REST error or `failed` status).
    CarrierFailed,
    ModelError,
    ModelDisconnected,
    MediaDisconnected,
    MaxDuration,
    CanceledByUser,
    EngineShutdown,
    EngineRestarted,
    /// The call's actor crashed; the carrier call was hung up.
    InternalError,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallRequest {
    /// E.164 destination, e.g. `+14155550123` (checked by [`CallRequest::validate`]).
    #[schemars(pattern(r"^\+[1-9][0-9]{7,14}$"))]
    pub to: String,
    /// E.164 caller id; defaults to the configured Twilio number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// What the agent must achieve, in plain words.
    pub goal: String,
    /// Facts the agent may use (names, times, reference numbers). It must not invent others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Extra instructions for how to behave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Hard cap on the call's length once dialing starts (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

impl CallRequest {
    pub fn new(to: impl Into<String>, goal: impl Into<String>) -> Self {
        CallRequest {
            to: to.into(),
            from: None,
            goal: goal.into(),
            context: None,
            instructions: None,
            max_duration_secs: None,
            voice: None,
            language: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Success,
    Failure,
    Unknown,
}

/// What the call achieved, as the agent judged it in `end_call` (or the engine, when the call
/// ended some other way).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub status: OutcomeStatus,
    pub success: bool,
    pub summary: String,
    /// Structured result the agent reported, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Outcome {
    pub fn new(status: OutcomeStatus, summary: impl Into<String>) -> Self {
        Outcome {
            status,
            success: status == OutcomeStatus::Success,
            summary: summary.into(),
            data: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Agent,
    Callee,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptTurn {
    pub speaker: Speaker,
    pub text: String,
    pub at: DateTime<Utc>,
    /// Milliseconds since the media stream started.
    pub offset_ms: u64,
    /// The callee talked over this agent line; `text` is the part that played before the cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// Token usage reported by the model (`response.done.usage`), summed over the call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
}

/// One fact about one call. `seq` is global and strictly increasing; it is assigned when the
/// event is durably written, so every consumer sees the same order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallEvent {
    pub seq: u64,
    pub call_id: CallId,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// An event before the log has given it a sequence number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    pub call_id: CallId,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl NewEvent {
    pub fn now(call_id: CallId, kind: EventKind) -> Self {
        NewEvent {
            call_id,
            at: Utc::now(),
            kind,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum EventKind {
    /// Admitted by the supervisor.
    Created {
        request: CallRequest,
    },
    /// The carrier's own view (`queued`, `ringing`, `in-progress`, `busy` …) with its ids.
    Carrier {
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_sid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answered_by: Option<String>,
        /// The carrier's billed length of the call (`CallDuration`), in its final callback.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_secs: Option<u64>,
    },
    /// A public state change or a new detail within a state.
    State {
        state: CallState,
        detail: CallDetail,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Transcript {
        speaker: Speaker,
        text: String,
        offset_ms: u64,
        /// An agent line cut short by barge-in; `text` is what played before the cut.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        interrupted: bool,
    },
    Dtmf {
        digits: String,
    },
    ToolCall {
        name: String,
        arguments: serde_json::Value,
    },
    /// Something went wrong that the user should read about; the call may continue.
    Error {
        message: String,
    },
    /// The terminal event: written exactly once, and the last of the engine's own events for
    /// the call. Only the carrier's late word (a `carrier` event) may follow it.
    Ended {
        state: CallState,
        detail: CallDetail,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<Outcome>,
        duration_secs: u64,
        #[serde(default)]
        usage: Usage,
    },
}

impl EventKind {
    /// A short stable name, used as the SSE `event:` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Created { .. } => "created",
            EventKind::Carrier { .. } => "carrier",
            EventKind::State { .. } => "state",
            EventKind::Transcript { .. } => "transcript",
            EventKind::Dtmf { .. } => "dtmf",
            EventKind::ToolCall { .. } => "tool_call",
            EventKind::Error { .. } => "error",
            EventKind::Ended { .. } => "ended",
        }
    }
}

/// The projection of a call's events: what `status` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub id: CallId,
    pub request: CallRequest,
    pub state: CallState,
    pub detail: CallDetail,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds from answer to end (0 if never answered).
    #[serde(default)]
    pub duration_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_call_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Why the call failed or ended, in plain language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub usage: Usage,
    /// Sequence number of the last event folded into this record.
    pub last_seq: u64,
}

impl CallRecord {
    /// Starts a record from its `Created` event; `None` for any other event.
    pub fn from_created(ev: &CallEvent) -> Option<Self> {
        let EventKind::Created { request } = &ev.kind else {
            return None;
        };
        Some(CallRecord {
            id: ev.call_id,
            request: request.clone(),
            state: CallState::Dialing,
            detail: CallDetail::Admitted,
            created_at: ev.at,
            answered_at: None,
            ended_at: None,
            duration_secs: 0,
            carrier_call_sid: None,
            carrier_status: None,
            answered_by: None,
            outcome: None,
            reason: None,
            usage: Usage::default(),
            last_seq: ev.seq,
        })
    }

    /// Folds one event into the record. Pure, so every store projects identically.
    pub fn apply(&mut self, ev: &CallEvent) {
        debug_assert_eq!(ev.call_id, self.id);
        self.last_seq = self.last_seq.max(ev.seq);
        if self.state.is_terminal() {
            // The engine's view is final; the carrier's last word (a `canceled` or
            // `completed` callback that arrives after the end) still is recorded. A live
            // status arriving late (out of order) is not a last word.
            if let EventKind::Carrier {
                status,
                call_sid,
                duration_secs,
                ..
            } = &ev.kind
                && !matches!(
                    status.as_str(),
                    "queued" | "initiated" | "ringing" | "in-progress"
                )
            {
                self.carrier_status = Some(status.clone());
                if self.carrier_call_sid.is_none() {
                    self.carrier_call_sid = call_sid.clone();
                }
                // The carrier's count is the one the call is billed by.
                if let Some(d) = duration_secs {
                    self.duration_secs = *d;
                }
            }
            return;
        }
        match &ev.kind {
            EventKind::Created { .. } | EventKind::Transcript { .. } | EventKind::Dtmf { .. } => {}
            EventKind::ToolCall { .. } => {}
            EventKind::Carrier {
                status,
                call_sid,
                answered_by,
                ..
            } => {
                self.carrier_status = Some(status.clone());
                if call_sid.is_some() {
                    self.carrier_call_sid = call_sid.clone();
                }
                if answered_by.is_some() {
                    self.answered_by = answered_by.clone();
                }
            }
            EventKind::State {
                state,
                detail,
                reason,
            } => {
                if *state == CallState::Connected && self.answered_at.is_none() {
                    self.answered_at = Some(ev.at);
                }
                self.state = *state;
                self.detail = *detail;
                if reason.is_some() {
                    self.reason = reason.clone();
                }
            }
            EventKind::Error { message } => self.reason = Some(message.clone()),
            EventKind::Ended {
                state,
                detail,
                reason,
                outcome,
                duration_secs,
                usage,
            } => {
                self.state = *state;
                self.detail = *detail;
                if reason.is_some() {
                    self.reason = reason.clone();
                }
                self.outcome = outcome.clone();
                self.duration_secs = *duration_secs;
                self.usage = usage.clone();
                self.ended_at = Some(ev.at);
            }
        }
    }
}

/// Filter for listing calls, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallFilter {
    #[serde(default)]
    pub state: Option<CallState>,
    /// Only calls created before this id (for pagination; ULIDs sort by time).
    #[serde(default)]
    pub before: Option<CallId>,
    #[serde(default)]
    pub limit: Option<usize>,
}

impl CallFilter {
    pub const DEFAULT_LIMIT: usize = 50;
    pub const MAX_LIMIT: usize = 500;
    pub fn limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT)
    }
    pub fn matches(&self, r: &CallRecord) -> bool {
        self.state.is_none_or(|s| s == r.state) && self.before.is_none_or(|b| r.id < b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_call_ids_are_accepted() {
        let id = CallId::generate();
        let canonical = id.to_string();
        assert_eq!(canonical.parse::<CallId>().unwrap(), id);
        let aliased = format!("{}I", &canonical[..25]);
        let above_seven = format!("8{}", &canonical[1..]);
        for (bad, why) in [
            (canonical.to_ascii_lowercase(), "lower case"),
            (format!(" {canonical}"), "26 characters"),
            (aliased, "I, L, O"),
            (above_seven, "0 to 7"),
            ("7ZZZZZZZZZZZZZZZZZZZZZZZZZ".replace('Z', "O"), "I, L, O"),
        ] {
            let e = bad.parse::<CallId>().unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains("accepted: a call id"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_carriers_last_word_is_recorded_after_the_end() {
        let id = CallId::generate();
        let ev = |seq, kind| CallEvent {
            seq,
            call_id: id,
            at: Utc::now(),
            kind,
        };
        let mut rec = CallRecord::from_created(&ev(
            1,
            EventKind::Created {
                request: CallRequest::new("+14155550123", "x"),
            },
        ))
        .unwrap();
        let carrier = |status: &str| EventKind::Carrier {
            status: status.into(),
            call_sid: Some("CA1".into()),
            answered_by: None,
            duration_secs: (status == "completed").then_some(37),
        };
        rec.apply(&ev(2, carrier("ringing")));
        rec.apply(&ev(
            3,
            EventKind::Ended {
                state: CallState::Canceled,
                detail: CallDetail::CanceledByUser,
                reason: None,
                outcome: None,
                duration_secs: 0,
                usage: Usage::default(),
            },
        ));
        rec.apply(&ev(4, carrier("canceled")));
        rec.apply(&ev(5, carrier("ringing"))); // late and out of order
        rec.apply(&ev(
            6,
            EventKind::State {
                state: CallState::Connected,
                detail: CallDetail::InProgress,
                reason: None,
            },
        ));
        assert_eq!(rec.carrier_status.as_deref(), Some("canceled"));
        assert_eq!(rec.state, CallState::Canceled);
        assert_eq!(rec.last_seq, 6);
        assert_eq!(rec.duration_secs, 0);
        // A completed call's final callback carries the carrier's billed duration.
        rec.apply(&ev(7, carrier("completed")));
        assert_eq!(rec.carrier_status.as_deref(), Some("completed"));
        assert_eq!(rec.duration_secs, 37);
    }
}
