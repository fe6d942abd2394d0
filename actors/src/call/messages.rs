//! Messages of the CallActor and of the audio channels between its legs.

use std::sync::Arc;

use ractor::RpcReplyPort;
use tokio::sync::oneshot;

use crate::call::types::{CancelOutcome, CarrierUpdate};
use crate::data::Usage;
use crate::twilio::rest::{CallResource, TwilioError};
use crate::twilio::wire::Payload;

/// What the model leg sends the Twilio leg, in order, over a bounded channel.
pub enum ToTwilio {
    /// A `response.output_audio.delta`: base64 mu-law, forwarded as is from the frame it
    /// came in; the item id is shared by all of the item's chunks.
    Audio { item: Arc<str>, payload: Payload },
    /// Resolve once everything queued before it has played (`true`), or when a barge-in
    /// `clear` dropped what had not (`false`).
    Drain(oneshot::Sender<bool>),
    /// The callee started talking (`speech_started`). In order with the audio, so only what
    /// was queued before it is cut: answers the item cut and the ms of it heard, when agent
    /// audio was playing (Twilio was sent `clear`).
    BargeIn(oneshot::Sender<Option<(String, u64)>>),
}

/// Events from the model leg's reader.
pub enum ModelEvent {
    /// The session is open and configured: from now on it can answer for what was said.
    Connected,
    /// An agent line for the transcript; `interrupted` when the callee cut it short.
    AgentSaid {
        text: String,
        interrupted: bool,
    },
    CalleeSaid(String),
    FunctionCall {
        name: String,
        call_id: String,
        arguments: serde_json::Value,
        drained: Option<oneshot::Receiver<bool>>,
    },
    Usage(Usage),
    Error(String),
    Closed(String),
}

/// Events from the Twilio leg's reader.
pub enum MediaEvent {
    Started {
        stream_sid: String,
    },
    Dtmf(String),
    /// Twilio sent `stop`.
    Stopped,
    /// The socket closed without `stop`.
    Dropped,
    /// `start` carried a missing, wrong or reused token; the socket was closed.
    Rejected,
}

pub enum CallMsg {
    CarrierCreated(Result<CallResource, TwilioError>),
    Carrier(CarrierUpdate),
    Twiml(RpcReplyPort<String>),
    MediaSocket(Box<axum::extract::ws::WebSocket>),
    /// From the media stream with this number (the call's first is 1).
    Media(u64, MediaEvent),
    Model(ModelEvent),
    Drained,
    /// The redirect that presses keys is about to go out: from now on the current stream's
    /// end is expected. Sent (in mailbox order) before the carrier can stop the stream.
    Redirecting,
    /// The carrier answered the request to press keys (`send_dtmf`).
    KeysSent {
        call_id: String,
        digits: String,
        result: Result<(), TwilioError>,
    },
    /// The media stream with this number let go of the call's agent audio (it ended or was
    /// replaced); the next stream takes it.
    AudioReleased(u64, tokio::sync::mpsc::Receiver<ToTwilio>),
    /// The stream that follows the keys is late (for the swap with this number).
    RestreamTimeout(u64),
    Cancel(RpcReplyPort<CancelOutcome>),
    MaxDuration,
    Shutdown(RpcReplyPort<()>),
    /// Test hook: make this call's actor panic.
    Panic,
}
