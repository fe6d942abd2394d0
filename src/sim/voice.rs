//! Deterministic "speech": every line of text has one fixed mu-law rendering.
//!
//! The simulator's two halves never talk to each other about a call; the only path between
//! the callee (Twilio side) and the agent (model side) is the engine under test. So each half
//! recognises what the other said purely from the audio it receives: a line's audio is
//! generated from its text and registered by fingerprint. If the engine drops, reorders or
//! re-encodes a single byte, recognition fails and that is recorded as a violation.
//!
//! The audio is loud pseudo-random mu-law (energy like speech, not intelligible); silence is
//! 0xFF, which decodes to 0. That makes frame-level voice activity exact.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// 20 ms of 8 kHz mu-law.
pub const FRAME_BYTES: usize = 160;
/// mu-law silence (decodes to 0).
pub const SILENCE: u8 = 0xFF;
/// Speaking rate: about 14 characters a second (~150 words a minute).
const MS_PER_CHAR: usize = 70;
const MIN_MS: usize = 400;

/// How long `text` takes to say, in whole 20 ms frames.
pub fn frames_for(text: &str) -> usize {
    let ms = (text.chars().count() * MS_PER_CHAR).max(MIN_MS);
    ms.div_ceil(20)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The mu-law rendering of `text`: `frames_for(text) * FRAME_BYTES` loud bytes.
pub fn synthesize(text: &str) -> Vec<u8> {
    let n = frames_for(text) * FRAME_BYTES;
    let mut state = fnv1a(text.as_bytes()) | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // xorshift64*: cheap, deterministic, good enough to make lines distinct.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        for b in r.to_le_bytes() {
            if out.len() == n {
                break;
            }
            // Keep the sign bit, force a high exponent: |sample| >= ~2000 after decoding.
            out.push((b & 0x80) | (b & 0x1F));
        }
    }
    out
}

/// Decoded magnitude of one mu-law byte (0..=32124), for energy-based voice detection.
pub fn magnitude(byte: u8) -> u16 {
    let b = !byte;
    let exponent = (b >> 4) & 0x07;
    let mantissa = u16::from(b & 0x0F);
    (((mantissa << 3) + 0x84) << exponent) - 0x84
}

/// True when a frame carries speech: mean magnitude above a fixed threshold.
pub fn is_speech(frame: &[u8]) -> bool {
    if frame.is_empty() {
        return false;
    }
    let sum: u64 = frame.iter().map(|b| u64::from(magnitude(*b))).sum();
    sum / frame.len() as u64 > 500
}

/// Texts known by the fingerprint of their whole audio and of their first frame.
#[derive(Default, Clone)]
pub struct VoiceRegistry {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    whole: HashMap<u64, Arc<str>>,
    first_frame: HashMap<u64, Arc<str>>,
}

impl VoiceRegistry {
    /// Registers `text` and returns its audio.
    pub fn register(&self, text: &str) -> Vec<u8> {
        let audio = synthesize(text);
        let text: Arc<str> = Arc::from(text);
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        g.whole.insert(fnv1a(&audio), text.clone());
        g.first_frame.insert(fnv1a(&audio[..FRAME_BYTES]), text);
        audio
    }

    /// The text whose complete audio is exactly `audio`.
    pub fn recognize(&self, audio: &[u8]) -> Option<Arc<str>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .whole
            .get(&fnv1a(audio))
            .cloned()
    }

    /// The text whose audio starts with this frame (for speech cut short by a barge-in).
    pub fn recognize_start(&self, first_frame: &[u8]) -> Option<Arc<str>> {
        if first_frame.len() < FRAME_BYTES {
            return None;
        }
        let key = fnv1a(&first_frame[..FRAME_BYTES]);
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .first_frame
            .get(&key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesis_is_deterministic_loud_and_distinct() {
        let a = synthesize("Hello there");
        assert_eq!(a, synthesize("Hello there"));
        assert_ne!(a[..FRAME_BYTES], synthesize("Hello there!")[..FRAME_BYTES]);
        assert_eq!(a.len() % FRAME_BYTES, 0);
        assert!(a.chunks(FRAME_BYTES).all(is_speech));
        assert!(!is_speech(&[SILENCE; FRAME_BYTES]));
    }

    #[test]
    fn mulaw_magnitudes() {
        assert_eq!(magnitude(0xFF), 0);
        assert_eq!(magnitude(0x7F), 0);
        assert_eq!(magnitude(0x00), 32124);
        assert_eq!(magnitude(0x80), 32124);
    }

    #[test]
    fn registry_recognises_whole_and_start_but_not_altered() {
        let r = VoiceRegistry::default();
        let audio = r.register("Table for two at seven thirty");
        assert_eq!(
            r.recognize(&audio).as_deref(),
            Some("Table for two at seven thirty")
        );
        assert_eq!(
            r.recognize_start(&audio[..FRAME_BYTES]).as_deref(),
            Some("Table for two at seven thirty")
        );
        let mut altered = audio.clone();
        altered[500] ^= 1;
        assert!(r.recognize(&altered).is_none());
        assert!(r.recognize(&audio[..audio.len() - FRAME_BYTES]).is_none());
    }
}
