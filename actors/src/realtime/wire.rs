//! Realtime GA messages on the per-frame path (protocols/openai-realtime.md), without a JSON
//! tree: a server event is read in one typed pass that borrows from the frame, and callee
//! audio is wrapped in `input_audio_buffer.append` inside one reused buffer.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

/// The fields of a server event the model leg reads on every event; the rare control events
/// (`response.done`, `error`, a function call) are read again for their own fields.
#[derive(Deserialize)]
pub struct ServerEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub item_id: Cow<'a, str>,
    /// Base64 audio for `response.output_audio.delta`, text for transcript deltas.
    #[serde(default, borrow)]
    pub delta: Cow<'a, str>,
    #[serde(default, borrow)]
    pub transcript: Cow<'a, str>,
    #[serde(default)]
    pub audio_end_ms: u64,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// Reads a server event; one whose shared fields have another type (a `null` transcript) is
/// still told by its `type`.
pub fn parse(text: &str) -> Result<ServerEvent<'_>, serde_json::Error> {
    serde_json::from_str::<ServerEvent>(text).or_else(|_| {
        serde_json::from_str::<Head>(text).map(|h| ServerEvent {
            kind: h.kind,
            item_id: Cow::Borrowed(""),
            delta: Cow::Borrowed(""),
            transcript: Cow::Borrowed(""),
            audio_end_ms: 0,
        })
    })
}

/// Writes `input_audio_buffer.append` events around callee payloads exactly as the carrier
/// sent them, into one buffer reused once the socket has taken the previous event.
#[derive(Default)]
pub struct Appender {
    buf: BytesMut,
}

impl Appender {
    pub fn append(&mut self, payload: &[u8]) -> Bytes {
        const HEAD: &[u8] = br#"{"type":"input_audio_buffer.append","audio":""#;
        const TAIL: &[u8] = br#""}"#;
        self.buf.reserve(HEAD.len() + payload.len() + TAIL.len());
        self.buf.put_slice(HEAD);
        self.buf.put_slice(payload);
        self.buf.put_slice(TAIL);
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audio_delta_is_read_in_one_pass_borrowing_its_payload() {
        // The sheet's GA event (protocols/openai-realtime.md).
        let text = r#"{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"/3//fw=="}"#;
        let ev = parse(text).unwrap();
        assert_eq!(ev.kind, "response.output_audio.delta");
        assert_eq!(ev.item_id, "item_1");
        assert!(matches!(ev.delta, Cow::Borrowed("/3//fw==")));
    }

    #[test]
    fn an_event_with_odd_shared_fields_is_still_told_by_its_type() {
        let ev = parse(r#"{"type":"conversation.item.done","transcript":null,"item":{}}"#).unwrap();
        assert_eq!(ev.kind, "conversation.item.done");
    }

    #[test]
    fn append_is_the_ga_client_event() {
        let mut a = Appender::default();
        for _ in 0..3 {
            let v: serde_json::Value = serde_json::from_slice(&a.append(b"/3//fw==")).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"type":"input_audio_buffer.append","audio":"/3//fw=="})
            );
        }
    }
}
