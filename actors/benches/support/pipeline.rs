//! The per-frame work of the media path each way, as the legs do it (the same functions),
//! without the sockets: parse, re-wrap, and frame into the socket's write buffer. Shared by
//! the criterion benchmark and the allocation test. (Included with `#[path]`.)
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use switchboard_actors::realtime::wire::{self as model_wire, Appender};
use switchboard_actors::twilio::playback::{Playback, Verdict};
use switchboard_actors::twilio::wire::{self as twilio_wire, Outbound, Payload};

/// 20 ms of callee audio (160 bytes of mu-law, 216 base64 characters) as Twilio sends it.
pub fn callee_frame() -> Bytes {
    let payload = "f39/f39/".repeat(27);
    Bytes::from(format!(
        r#"{{"event":"media","sequenceNumber":"42","media":{{"track":"inbound","chunk":"41","timestamp":"820","payload":"{payload}"}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}}"#
    ))
}

/// 100 ms of agent audio (800 bytes of mu-law) as the Realtime GA server sends it.
pub fn agent_frame() -> Bytes {
    let payload = "/3//f/9//3//".repeat(89);
    Bytes::from(format!(
        r#"{{"type":"response.output_audio.delta","event_id":"event_B5","response_id":"resp_B3","item_id":"item_B4","output_index":0,"content_index":0,"delta":"{payload}"}}"#
    ))
}

/// Callee → model: what the Twilio leg's reader and the model input do with one frame.
#[derive(Default)]
pub struct Uplink {
    appender: Appender,
    socket: Vec<u8>,
}

impl Uplink {
    /// Returns the bytes framed for the model socket.
    pub fn frame(&mut self, frame: &Bytes) -> usize {
        // The socket checks the text frame is UTF-8 before handing it over.
        let text = std::str::from_utf8(frame).expect("text frame");
        let m = twilio_wire::parse(text).expect("media");
        let Some(media) = &m.media else {
            return 0;
        };
        let payload = Payload::within(frame, text, &media.payload);
        let event = self.appender.append(payload.as_bytes());
        self.socket.clear();
        let len = event.len();
        Frame::message(event, OpCode::Data(Data::Text), true)
            .format(&mut self.socket)
            .expect("framed");
        // The client side masks what it sends, in the socket's buffer (as tungstenite's own
        // write path does; its public `format` would copy the payload to mask it).
        let at = self.socket.len() - len;
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        for (i, b) in self.socket[at..].iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        self.socket.len()
    }
}

/// Model → callee: what the model leg's reader and the Twilio leg's writer do with one
/// audio delta, marks included.
pub struct Downlink {
    item: Option<Arc<str>>,
    playback: Playback,
    wire: Outbound,
    socket: Vec<u8>,
    sid: String,
    now: Instant,
}

impl Default for Downlink {
    fn default() -> Self {
        Downlink {
            item: None,
            playback: Playback::default(),
            wire: Outbound::default(),
            socket: Vec::with_capacity(4096),
            sid: "MZ18ad3ab5a668481ce02b83e7395059f0".into(),
            now: Instant::now(),
        }
    }
}

impl Downlink {
    /// Returns the bytes framed for the Twilio socket.
    pub fn frame(&mut self, frame: &Bytes) -> usize {
        let text = std::str::from_utf8(frame).expect("text frame");
        let ev = model_wire::parse(text).expect("event");
        let id = match &self.item {
            Some(i) if **i == *ev.item_id => i.clone(),
            _ => self.item.insert(Arc::from(ev.item_id.as_ref())).clone(),
        };
        let payload = Payload::within(frame, text, &ev.delta);
        self.socket.clear();
        if let Verdict::Play(mark) = self.playback.audio(&id, payload.decoded_len(), self.now) {
            let media = self.wire.media(&self.sid, payload.as_bytes());
            Frame::message(media, OpCode::Data(Data::Text), true)
                .format(&mut self.socket)
                .expect("framed");
            if let Some(mark) = mark {
                let m = self.wire.mark(&self.sid, mark);
                Frame::message(m, OpCode::Data(Data::Text), true)
                    .format(&mut self.socket)
                    .expect("framed");
                // Twilio echoes it once played; here at once, so marks never pile up.
                self.playback.echo(mark, self.now);
            }
        }
        self.socket.len()
    }
}
