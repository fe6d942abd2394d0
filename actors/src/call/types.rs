//! What frontends hand a call and get back from it, beyond the public data model.

use crate::data::CallState;

/// What `cancel` did.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelOutcome {
    /// True when this request ended the call; false when it had already ended.
    pub canceled: bool,
    pub state: CallState,
    pub message: String,
}

/// A status callback as the webhook frontend parsed it (already signature-checked).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CarrierUpdate {
    pub call_sid: String,
    /// Twilio's `CallStatus`: queued, initiated, ringing, in-progress, completed, busy,
    /// no-answer, failed, canceled.
    pub status: String,
    pub answered_by: Option<String>,
    pub duration_secs: Option<u64>,
    /// Twilio's `SequenceNumber`, to drop late and duplicate callbacks.
    pub sequence: Option<u64>,
    pub error_code: Option<String>,
}
