//! Tool argument and result shapes. Field doc comments become the schema descriptions the
//! model reads, so they say what to pass and what is accepted.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use switchboard_actors::{CallRecord, Outcome, TranscriptTurn};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallArgs {
    /// Number to call, E.164 format: '+' then country code and number, no spaces (e.g. +14155550123).
    pub to: String,
    /// Caller id to show, E.164. Leave out to use the configured number.
    #[serde(default)]
    pub from: Option<String>,
    /// What the voice agent must achieve on the call, in plain words (e.g. "Book a table for 4 at 7pm on Friday under the name Alex Kim").
    pub goal: String,
    /// Facts the agent may use: names, dates, reference numbers, preferences. The agent will not invent others.
    #[serde(default)]
    pub context: Option<String>,
    /// Extra instructions for how the agent should behave (tone, what to avoid, what to do if asked something unknown).
    #[serde(default)]
    pub instructions: Option<String>,
    /// Hard limit on the call's length in seconds, at least 10 (default: calls.default_max_duration_secs, 180 unless configured).
    #[serde(default)]
    pub timeout_sec: Option<u32>,
    /// Voice for the agent: alloy, ash, ballad, coral, echo, sage, shimmer, verse, marin or cedar. Leave out for the configured default.
    #[serde(default)]
    pub voice: Option<String>,
    /// Language to speak: an ISO 639-1 code, optionally with a region (e.g. "en", "fr", "es-419", "en-US"). Leave out for English.
    #[serde(default)]
    pub language: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallIdArgs {
    /// The call id returned by telephony_call (a 26-character ULID like 01JD3Z8Q5V6N0M8X9K2C4B7A1E).
    pub call_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListArgs {
    /// Only calls in this state: dialing, connected, completed, failed or canceled.
    #[serde(default)]
    pub state: Option<String>,
    /// How many calls to return, newest first (1-500, default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaitArgs {
    /// The call id returned by telephony_call.
    pub call_id: String,
    /// Longest time to wait in seconds, 1-50 (default 50). Call again if the call is still going.
    #[serde(default)]
    pub timeout_sec: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallPlaced {
    /// Use this id with telephony_wait, telephony_status, telephony_transcript and telephony_cancel.
    pub call_id: String,
    /// dialing right after placing.
    pub state: String,
    pub message: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeView {
    /// Whether the goal was achieved, as the agent judged it.
    pub success: bool,
    /// What happened on the call, in a sentence or two.
    pub summary: String,
    /// What the agent reported when it ended the call (its end_call arguments: outcome,
    /// summary and any details), as an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

impl From<&Outcome> for OutcomeView {
    fn from(o: &Outcome) -> Self {
        OutcomeView {
            success: o.success,
            summary: o.summary.clone(),
            data: o.data.as_ref().and_then(|d| d.as_object().cloned()),
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallStatus {
    pub call_id: String,
    pub to: String,
    pub goal: String,
    /// dialing, connected, completed, failed or canceled.
    pub state: String,
    /// Finer detail: ringing, in_progress, busy, no_answer, voicemail, agent_ended, ...
    pub detail: String,
    /// True once the call is over (completed, failed or canceled).
    pub ended: bool,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds connected so far (or in total once ended).
    pub duration_sec: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeView>,
    /// What went wrong, in plain words, when the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&CallRecord> for CallStatus {
    fn from(r: &CallRecord) -> Self {
        let detail = serde_json::to_value(r.detail)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let error = match r.state {
            switchboard_actors::CallState::Failed => Some(
                r.reason
                    .clone()
                    .unwrap_or_else(|| format!("the call failed ({})", detail.replace('_', " "))),
            ),
            _ => None,
        };
        CallStatus {
            call_id: r.id.to_string(),
            to: r.request.to.clone(),
            goal: r.request.goal.clone(),
            state: r.state.to_string(),
            detail,
            ended: r.state.is_terminal(),
            created_at: r.created_at,
            answered_at: r.answered_at,
            ended_at: r.ended_at,
            duration_sec: r.duration_secs,
            outcome: r.outcome.as_ref().map(OutcomeView::from),
            error,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnView {
    /// agent (our voice agent) or callee (the person called).
    pub speaker: String,
    pub text: String,
    pub at: DateTime<Utc>,
    /// Milliseconds since the conversation started.
    pub offset_ms: u64,
    /// The callee talked over this agent line; `text` is the part that played.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

impl From<&TranscriptTurn> for TurnView {
    fn from(t: &TranscriptTurn) -> Self {
        TurnView {
            speaker: match t.speaker {
                switchboard_actors::Speaker::Agent => "agent".into(),
                switchboard_actors::Speaker::Callee => "callee".into(),
            },
            text: t.text.clone(),
            at: t.at,
            offset_ms: t.offset_ms,
            interrupted: t.interrupted,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transcript {
    pub call_id: String,
    pub state: String,
    pub ended: bool,
    pub duration_sec: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeView>,
    pub turns: Vec<TurnView>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelResult {
    /// True when this request ended the call; false when it had already ended.
    pub success: bool,
    pub state: String,
    pub message: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallList {
    /// Newest first.
    pub calls: Vec<CallStatus>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitResult {
    /// True when the call is over; false when the wait timed out first (call telephony_wait again).
    pub ended: bool,
    pub status: CallStatus,
    /// The conversation so far.
    pub turns: Vec<TurnView>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationArgs {
    /// The restaurant's phone number, E.164 (e.g. +12125550134).
    pub restaurant_number: String,
    /// How many people the table is for.
    pub people_number: String,
    /// The date, e.g. "Friday 14 March" or "2026-03-14".
    pub date: String,
    /// The time, e.g. "7:30 pm".
    pub time: String,
    /// The name to book under.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RescheduleArgs {
    /// The office's phone number, E.164.
    pub phone_number: String,
    /// Whose appointment it is.
    pub name: String,
    /// The appointment as currently booked, e.g. "dentist, Tuesday 10am".
    pub current_appointment: String,
    /// When would suit instead, e.g. "any weekday afternoon next week".
    pub preferred_times: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageArgs {
    /// The number to call, E.164.
    pub phone_number: String,
    /// The message to deliver, e.g. "I'm running 15 minutes late".
    pub message: String,
    /// Who the message is from.
    #[serde(default)]
    pub from_name: Option<String>,
    /// Who should receive it, if a particular person.
    #[serde(default)]
    pub recipient: Option<String>,
}
