//! Media Streams messages on the per-frame path (protocols/twilio.md §6), without a JSON tree:
//! what Twilio sends is read in one typed pass that borrows from the frame, and what the
//! engine sends is written into one reused buffer, so a frame costs no allocation of ours.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

/// One message from Twilio. Only the fields the engine reads on the per-frame path are
/// kept; the rest (`streamSid`, `sequenceNumber`, `media.track`, …) are skipped unparsed, and
/// `start`, once per stream, is read again as a [`Start`].
#[derive(Deserialize)]
pub struct Inbound<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(borrow, default)]
    pub media: Option<MediaBody<'a>>,
    #[serde(borrow, default)]
    pub mark: Option<MarkBody<'a>>,
    #[serde(borrow, default)]
    pub dtmf: Option<DtmfBody<'a>>,
}

/// The `start` message: the stream's sid and the parameters the TwiML gave it.
#[derive(Deserialize)]
pub struct Start<'a> {
    #[serde(borrow, rename = "streamSid", default)]
    pub stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub start: StartBody<'a>,
}

#[derive(Deserialize)]
pub struct MediaBody<'a> {
    /// Base64 mu-law, passed on as it came. Borrowed unless the sender escaped a `/`.
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
}

#[derive(Deserialize)]
pub struct MarkBody<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

#[derive(Deserialize)]
pub struct DtmfBody<'a> {
    #[serde(borrow)]
    pub digit: Cow<'a, str>,
}

#[derive(Deserialize)]
pub struct StartBody<'a> {
    #[serde(borrow, rename = "streamSid", default)]
    pub stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "customParameters", default)]
    pub custom_parameters: Option<Params<'a>>,
}

#[derive(Deserialize)]
pub struct Params<'a> {
    #[serde(borrow, default)]
    pub token: Option<Cow<'a, str>>,
}

pub fn parse(text: &str) -> Result<Inbound<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

pub fn parse_start(text: &str) -> Result<Start<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

/// A mark the engine names `{epoch}:{bytes}:{item}`: the clear epoch it belongs to, how many
/// bytes of the item had been sent before it, and the item's number on this stream. Numbers
/// only, so an echo is read without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkName {
    pub epoch: u64,
    pub bytes: u64,
    pub item: u64,
}

impl MarkName {
    pub fn parse(name: &str) -> Option<MarkName> {
        let mut parts = name.splitn(3, ':');
        Some(MarkName {
            epoch: parts.next()?.parse().ok()?,
            bytes: parts.next()?.parse().ok()?,
            item: parts.next()?.parse().ok()?,
        })
    }
}

/// A base64 payload inside a frame that was received, handed on without a copy: the frame's
/// bytes and where the payload sits in them.
#[derive(Clone, Debug)]
pub struct Payload {
    frame: Bytes,
    start: usize,
    end: usize,
}

impl Payload {
    /// `part` must borrow from `text`, and `text` be the UTF-8 of `frame`; otherwise (an
    /// escaped payload the parser had to copy) the payload is copied once.
    pub fn within(frame: &Bytes, text: &str, part: &str) -> Payload {
        let base = text.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        if frame.len() == text.len()
            && frame.as_ptr() as usize == base
            && at >= base
            && at + part.len() <= base + text.len()
        {
            let start = at - base;
            return Payload {
                frame: frame.clone(),
                start,
                end: start + part.len(),
            };
        }
        Payload::copied(part)
    }

    pub fn copied(part: &str) -> Payload {
        Payload {
            frame: Bytes::copy_from_slice(part.as_bytes()),
            start: 0,
            end: part.len(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.frame[self.start..self.end]
    }

    /// The decoded length, without decoding (8 bytes of mu-law are 1 ms).
    pub fn decoded_len(&self) -> u64 {
        b64_len(self.as_bytes())
    }
}

/// Decoded length of standard base64 text, without decoding it.
pub fn b64_len(s: &[u8]) -> u64 {
    let pad = s.iter().rev().take_while(|b| **b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(pad) as u64
}

/// Writes the engine's messages into one buffer that is reused once the socket has taken
/// the previous message (the socket copies a message into its own write buffer and drops it).
#[derive(Default)]
pub struct Outbound {
    buf: BytesMut,
}

impl Outbound {
    pub fn media(&mut self, sid: &str, payload: &[u8]) -> Bytes {
        const HEAD: &[u8] = br#"{"event":"media","streamSid":""#;
        const MID: &[u8] = br#"","media":{"payload":""#;
        const TAIL: &[u8] = br#""}}"#;
        self.buf
            .reserve(HEAD.len() + sid.len() + MID.len() + payload.len() + TAIL.len());
        self.buf.put_slice(HEAD);
        self.buf.put_slice(sid.as_bytes());
        self.buf.put_slice(MID);
        self.buf.put_slice(payload);
        self.buf.put_slice(TAIL);
        self.buf.split().freeze()
    }

    pub fn mark(&mut self, sid: &str, name: MarkName) -> Bytes {
        use std::fmt::Write as _;
        const HEAD: &[u8] = br#"{"event":"mark","streamSid":""#;
        const MID: &[u8] = br#"","mark":{"name":""#;
        const TAIL: &[u8] = br#""}}"#;
        self.buf
            .reserve(HEAD.len() + sid.len() + MID.len() + 60 + TAIL.len());
        self.buf.put_slice(HEAD);
        self.buf.put_slice(sid.as_bytes());
        self.buf.put_slice(MID);
        let _ = write!(
            Utf8Writer(&mut self.buf),
            "{}:{}:{}",
            name.epoch,
            name.bytes,
            name.item
        );
        self.buf.put_slice(TAIL);
        self.buf.split().freeze()
    }

    pub fn clear(&mut self, sid: &str) -> Bytes {
        const HEAD: &[u8] = br#"{"event":"clear","streamSid":""#;
        const TAIL: &[u8] = br#""}"#;
        self.buf.reserve(HEAD.len() + sid.len() + TAIL.len());
        self.buf.put_slice(HEAD);
        self.buf.put_slice(sid.as_bytes());
        self.buf.put_slice(TAIL);
        self.buf.split().freeze()
    }
}

struct Utf8Writer<'a>(&'a mut BytesMut);

impl std::fmt::Write for Utf8Writer<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sheet's media message (protocols/twilio.md §6.1), as Twilio sends it.
    const MEDIA: &str = r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"/3//fw=="},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;

    #[test]
    fn a_media_payload_is_borrowed_from_the_frame() {
        let frame = Bytes::from_static(MEDIA.as_bytes());
        let text = std::str::from_utf8(&frame).unwrap();
        let m = parse(text).unwrap();
        assert_eq!(m.event, "media");
        let payload = m.media.unwrap().payload;
        assert!(matches!(payload, Cow::Borrowed(_)));
        let p = Payload::within(&frame, text, &payload);
        assert_eq!(p.as_bytes(), b"/3//fw==");
        assert_eq!(p.frame.as_ptr(), frame.as_ptr(), "no copy");
        assert_eq!(p.decoded_len(), 4);
    }

    #[test]
    fn an_escaped_payload_is_copied_once_and_unescaped() {
        let text = r#"{"event":"media","media":{"payload":"\/3\/\/fw=="}}"#;
        let frame = Bytes::from_static(text.as_bytes());
        let m = parse(text).unwrap();
        let payload = m.media.unwrap().payload;
        let p = Payload::within(&frame, text, &payload);
        assert_eq!(p.as_bytes(), b"/3//fw==");
    }

    #[test]
    fn what_the_engine_writes_is_the_sheets_json() {
        let mut out = Outbound::default();
        let sid = "MZ18ad3ab5a668481ce02b83e7395059f0";
        let media: serde_json::Value =
            serde_json::from_slice(&out.media(sid, b"/3//fw==")).unwrap();
        assert_eq!(
            media,
            serde_json::json!({"event":"media","streamSid":sid,"media":{"payload":"/3//fw=="}})
        );
        let name = MarkName {
            epoch: 2,
            bytes: 1600,
            item: 7,
        };
        let mark: serde_json::Value = serde_json::from_slice(&out.mark(sid, name)).unwrap();
        assert_eq!(
            mark,
            serde_json::json!({"event":"mark","streamSid":sid,"mark":{"name":"2:1600:7"}})
        );
        assert_eq!(
            MarkName::parse(mark["mark"]["name"].as_str().unwrap()),
            Some(name)
        );
        let clear: serde_json::Value = serde_json::from_slice(&out.clear(sid)).unwrap();
        assert_eq!(clear, serde_json::json!({"event":"clear","streamSid":sid}));
    }

    #[test]
    fn base64_length_without_decoding() {
        use base64::Engine as _;
        for n in [0usize, 1, 2, 3, 159, 160, 800] {
            let s = base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
            assert_eq!(b64_len(s.as_bytes()), n as u64);
        }
    }
}
