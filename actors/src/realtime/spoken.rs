//! What the agent has said, per output item, so a line the callee talks over is kept.
//!
//! The model sends an item's full transcript (`response.output_audio_transcript.done`) only
//! when the item finishes. A barge-in cancels the response first, so that event never comes
//! and, without this, the agent's interrupted line would vanish from the transcript. Here the
//! transcript deltas are collected as they stream, and an unfinished line is written out with
//! the part the callee heard (cut in proportion to `audio_end_ms` of the truncate, at a word
//! boundary) or, failing a truncate, what was generated.

/// One agent line to write to the transcript.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    pub interrupted: bool,
}

#[derive(Default)]
pub struct Spoken {
    items: Vec<Item>,
}

struct Item {
    id: String,
    text: String,
    /// mu-law bytes received for the item (8 per ms).
    audio_bytes: u64,
    /// Its response ended (completed or cancelled).
    response_over: bool,
    /// Already written to the transcript.
    written: bool,
}

impl Spoken {
    fn item(&mut self, id: &str) -> &mut Item {
        if let Some(i) = self.items.iter().position(|i| i.id == id) {
            return &mut self.items[i];
        }
        self.items.push(Item {
            id: id.to_owned(),
            text: String::new(),
            audio_bytes: 0,
            response_over: false,
            written: false,
        });
        self.items.last_mut().expect("just pushed")
    }

    /// An audio delta of `b64_len` base64 characters (its size is known without decoding).
    pub fn audio(&mut self, item_id: &str, b64: &str) {
        let padding = b64.bytes().rev().take_while(|b| *b == b'=').count();
        let bytes = (b64.len() / 4 * 3).saturating_sub(padding) as u64;
        self.item(item_id).audio_bytes += bytes;
    }

    pub fn transcript_delta(&mut self, item_id: &str, delta: &str) {
        self.item(item_id).text.push_str(delta);
    }

    /// The item's full transcript, unless the item was already written (cut by a truncate).
    pub fn done(&mut self, item_id: &str, transcript: &str) -> Option<Line> {
        let item = self.item(item_id);
        if item.written {
            return None;
        }
        item.written = true;
        Some(Line {
            text: transcript.to_owned(),
            interrupted: false,
        })
    }

    /// The server confirmed a truncate: an unfinished line is written with the heard part.
    pub fn truncated(&mut self, item_id: &str, audio_end_ms: u64) -> Option<Line> {
        let i = self.items.iter().position(|i| i.id == item_id)?;
        let item = &mut self.items[i];
        if item.written {
            return None;
        }
        item.written = true;
        let total_ms = item.audio_bytes / 8;
        let text = if total_ms == 0 || audio_end_ms >= total_ms {
            item.text.trim().to_owned()
        } else {
            cut(&item.text, audio_end_ms as f64 / total_ms as f64)
        };
        Some(Line {
            text,
            interrupted: true,
        })
    }

    /// `response.done`: lines of that response that never finished will not now.
    pub fn response_done(&mut self) {
        for i in &mut self.items {
            i.response_over = true;
        }
    }

    /// Lines whose response ended without a `.done` or a truncate, as generated; called before
    /// anything that follows them in the conversation (the callee's next turn, a new
    /// response) and when the session ends. Forgets every finished item.
    pub fn flush(&mut self, session_over: bool) -> Vec<Line> {
        let mut out = Vec::new();
        self.items.retain_mut(|i| {
            if !i.written && (i.response_over || session_over) {
                i.written = true;
                let text = i.text.trim().to_owned();
                if !text.is_empty() {
                    out.push(Line {
                        text,
                        interrupted: true,
                    });
                }
            }
            let finished = i.written && i.response_over;
            !(session_over || finished)
        });
        out
    }
}

/// The first `fraction` of `text`, extended to the end of the word it falls in.
fn cut(text: &str, fraction: f64) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut end = ((chars.len() as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
    while end < chars.len() && !chars[end].is_whitespace() {
        end += 1;
    }
    chars[..end].iter().collect::<String>().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "Hello, this is an assistant calling about order four four seven one.";

    fn streamed(s: &mut Spoken, id: &str, text: &str, ms: usize) {
        // 100 ms of audio (800 bytes, 1068 base64 chars) per transcript chunk.
        let chunk = "A".repeat(1068);
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        for w in words.iter().take(ms / 100) {
            s.audio(id, &chunk);
            s.transcript_delta(id, w);
        }
    }

    #[test]
    fn a_finished_line_is_written_once_in_full() {
        let mut s = Spoken::default();
        streamed(&mut s, "item_1", LINE, 1200);
        assert_eq!(
            s.done("item_1", LINE),
            Some(Line {
                text: LINE.into(),
                interrupted: false
            })
        );
        assert_eq!(s.truncated("item_1", 500), None);
        s.response_done();
        assert!(s.flush(false).is_empty());
        assert!(s.items.is_empty(), "finished items are forgotten");
    }

    #[test]
    fn a_truncated_line_keeps_the_heard_part_at_a_word_boundary() {
        let mut s = Spoken::default();
        streamed(&mut s, "item_1", LINE, 1200); // 12 words, 1200 ms
        s.response_done();
        let line = s.truncated("item_1", 400).expect("written");
        assert!(line.interrupted);
        assert!(LINE.starts_with(&line.text), "{line:?}");
        assert!(
            line.text.len() < LINE.len() / 2 && !line.text.is_empty(),
            "{line:?}"
        );
        assert!(!line.text.ends_with(' '));
        assert!(s.flush(false).is_empty(), "written once");
        assert!(s.items.is_empty());
    }

    #[test]
    fn a_done_after_the_truncate_is_not_a_second_turn() {
        let mut s = Spoken::default();
        streamed(&mut s, "item_1", LINE, 1200);
        assert!(s.truncated("item_1", 400).is_some());
        assert_eq!(s.done("item_1", LINE), None);
        s.response_done();
        assert!(s.flush(false).is_empty());
    }

    #[test]
    fn a_cancelled_line_without_truncate_is_flushed_as_generated() {
        let mut s = Spoken::default();
        streamed(&mut s, "item_1", LINE, 300);
        assert!(s.flush(false).is_empty(), "its response is still running");
        s.response_done();
        let out = s.flush(false);
        assert_eq!(
            out,
            vec![Line {
                text: "Hello, this is".into(),
                interrupted: true
            }]
        );
        assert!(s.items.is_empty());
    }

    #[test]
    fn the_session_ending_flushes_everything_unwritten() {
        let mut s = Spoken::default();
        streamed(&mut s, "item_1", LINE, 200);
        let out = s.flush(true);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "Hello, this");
    }

    #[test]
    fn audio_size_is_read_from_base64_length() {
        let mut s = Spoken::default();
        s.audio("a", "AAAA");
        s.audio("a", "AAA=");
        s.audio("a", "AA==");
        assert_eq!(s.item("a").audio_bytes, 3 + 2 + 1);
    }
}
