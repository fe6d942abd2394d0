//! What the agent has said, per output item, so the transcript holds what the callee heard.
//!
//! The model generates audio faster than it plays, so an item's full transcript
//! (`response.output_audio_transcript.done`) usually arrives while most of its audio is still
//! queued at Twilio, where a barge-in may yet cut it. A finished line is therefore held until
//! its audio has played (then written whole) or a truncate says how much was heard (then
//! written cut, in proportion to `audio_end_ms`, at a word boundary). A line whose response was
//! cancelled before it finished is written as generated. Lines always go out in the order
//! they were spoken, and before whatever follows them in the conversation.

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
    /// Transcript deltas so far.
    text: String,
    /// The full transcript, once `.done` gave it.
    done: Option<String>,
    /// mu-law bytes received for the item (8 per ms).
    audio_bytes: u64,
    /// Its response ended (completed or cancelled).
    response_over: bool,
    /// Already written to the transcript.
    written: bool,
}

impl Item {
    /// The line as it stands: whole if finished, else what was generated (cut short).
    fn line(&mut self) -> Option<Line> {
        self.written = true;
        let (text, interrupted) = match &self.done {
            Some(t) => (t.trim().to_owned(), false),
            None => (self.text.trim().to_owned(), true),
        };
        (!text.is_empty()).then_some(Line { text, interrupted })
    }

    /// The line cut in proportion to the `heard_ms` of its audio that played, at a word
    /// boundary; whole (and not interrupted, if finished) when all of it played.
    fn heard_line(&mut self, heard_ms: u64) -> Option<Line> {
        self.written = true;
        let full = self.done.as_deref().unwrap_or(&self.text);
        let total_ms = self.audio_bytes / 8;
        let heard_all = total_ms == 0 || heard_ms >= total_ms;
        let text = if heard_all {
            full.trim().to_owned()
        } else {
            cut(full, heard_ms as f64 / total_ms as f64)
        };
        let interrupted = !(heard_all && self.done.is_some());
        (!text.is_empty()).then_some(Line { text, interrupted })
    }
}

impl Spoken {
    fn item(&mut self, id: &str) -> &mut Item {
        if let Some(i) = self.position(id) {
            return &mut self.items[i];
        }
        self.items.push(Item {
            id: id.to_owned(),
            text: String::new(),
            done: None,
            audio_bytes: 0,
            response_over: false,
            written: false,
        });
        self.items.last_mut().expect("just pushed")
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.items.iter().position(|i| i.id == id)
    }

    /// An audio delta of `bytes` mu-law bytes.
    pub fn audio(&mut self, item_id: &str, bytes: u64) {
        self.item(item_id).audio_bytes += bytes;
    }

    pub fn transcript_delta(&mut self, item_id: &str, delta: &str) {
        self.item(item_id).text.push_str(delta);
    }

    /// The item's full transcript: held until it has played or been cut.
    pub fn done(&mut self, item_id: &str, transcript: &str) {
        let item = self.item(item_id);
        if !item.written {
            item.done = Some(transcript.to_owned());
        }
    }

    /// The item's audio has all played: it, and any line before it still held, go out whole.
    pub fn played(&mut self, item_id: &str) -> Vec<Line> {
        self.through(item_id, None)
    }

    /// The server confirmed a truncate: the item goes out with the heard part, after any line
    /// before it still held.
    pub fn truncated(&mut self, item_id: &str, audio_end_ms: u64) -> Vec<Line> {
        self.through(item_id, Some(audio_end_ms))
    }

    fn through(&mut self, item_id: &str, heard_ms: Option<u64>) -> Vec<Line> {
        match self.position(item_id) {
            Some(i) => self.write_through(i, heard_ms),
            None => Vec::new(),
        }
    }

    /// Writes the unwritten items up to `last`; `last` cut at `heard_ms` if given. Earlier
    /// lines were heard whole if finished; unfinished ones go out only if cancelled.
    fn write_through(&mut self, last: usize, heard_ms: Option<u64>) -> Vec<Line> {
        let mut out = Vec::new();
        for (i, item) in self.items[..=last].iter_mut().enumerate() {
            let line = match heard_ms {
                _ if item.written => continue,
                Some(ms) if i == last => item.heard_line(ms),
                _ if item.done.is_some() || item.response_over || i == last => item.line(),
                _ => continue,
            };
            out.extend(line);
        }
        out
    }

    /// The call is ending. With an item playing (and how much of it was heard): lines before
    /// it whole, it cut, and what is queued after it dropped (never heard). With nothing
    /// playing: every line that has played, whole. Forgets everything.
    pub fn last_lines(&mut self, playing: Option<(String, u64)>) -> Vec<Line> {
        let out = match playing.and_then(|(item, ms)| Some((self.position(&item)?, ms))) {
            Some((i, ms)) => self.write_through(i, Some(ms)),
            None => self.flush(true),
        };
        self.items.clear();
        out
    }

    /// `response.done`: lines of that response that never finished will not now.
    pub fn response_done(&mut self) {
        for i in &mut self.items {
            i.response_over = true;
        }
    }

    /// Before anything that follows them in the conversation (the callee's next turn, a new
    /// response, a tool call) and when the session ends: finished lines go out whole, lines
    /// whose response ended without finishing them go out as generated. Forgets every item
    /// that is over.
    pub fn flush(&mut self, session_over: bool) -> Vec<Line> {
        let mut out = Vec::new();
        self.items.retain_mut(|i| {
            if !i.written && (i.done.is_some() || i.response_over || session_over) {
                out.extend(i.line());
            }
            let over = i.written && i.response_over;
            !(session_over || over)
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
        // 100 ms of audio (800 bytes) per transcript chunk.
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        for w in words.iter().take(ms / 100) {
            s.audio(id, 800);
            s.transcript_delta(id, w);
        }
    }

    fn line(text: &str, interrupted: bool) -> Line {
        Line {
            text: text.into(),
            interrupted,
        }
    }

    #[test]
    fn a_finished_line_is_held_until_played_then_written_once_in_full() {
        let mut s = Spoken::default();
        streamed(&mut s, "item_1", LINE, 1200);
        s.done("item_1", LINE);
        s.response_done();
        assert_eq!(s.played("item_1"), vec![line(LINE, false)]);
        assert!(s.played("item_1").is_empty());
        assert!(s.truncated("item_1", 500).is_empty(), "written once");
        assert!(s.flush(false).is_empty());
        assert!(s.items.is_empty(), "finished items are forgotten");
    }

    #[test]
    fn a_finished_line_cut_before_it_played_keeps_only_the_heard_part() {
        // The real service's order: the whole transcript, then the callee cuts in.
        let mut s = Spoken::default();
        streamed(&mut s, "item_1", LINE, 1200);
        s.done("item_1", LINE);
        s.response_done();
        let out = s.truncated("item_1", 400);
        assert_eq!(out.len(), 1);
        assert!(
            out[0].interrupted && LINE.starts_with(&out[0].text),
            "{out:?}"
        );
        assert!(out[0].text.len() < LINE.len() / 2 && !out[0].text.is_empty());
        assert!(s.played("item_1").is_empty(), "written once");
        // Heard to the end: whole and not interrupted.
        let mut s = Spoken::default();
        streamed(&mut s, "item_2", LINE, 1200);
        s.done("item_2", LINE);
        assert_eq!(s.truncated("item_2", 1300), vec![line(LINE, false)]);
    }

    #[test]
    fn lines_go_out_in_spoken_order() {
        let mut s = Spoken::default();
        streamed(&mut s, "item_1", "One two three. ", 300);
        s.done("item_1", "One two three.");
        streamed(&mut s, "item_2", LINE, 1200);
        s.done("item_2", LINE);
        // The second line is cut while the first was never confirmed played.
        let out = s.truncated("item_2", 400);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], line("One two three.", false));
        assert!(out[1].interrupted);
        // A tool call or the callee's turn flushes what is held, whole.
        let mut s = Spoken::default();
        streamed(&mut s, "item_3", LINE, 1200);
        s.done("item_3", LINE);
        assert_eq!(s.flush(false), vec![line(LINE, false)]);
    }

    #[test]
    fn at_the_end_of_the_call_only_what_played_is_kept() {
        let mut s = Spoken::default();
        streamed(&mut s, "item_1", "One two three. ", 300);
        s.done("item_1", "One two three.");
        streamed(&mut s, "item_2", LINE, 1200);
        s.done("item_2", LINE);
        streamed(&mut s, "item_3", "Never heard. ", 200);
        let out = s.last_lines(Some(("item_2".into(), 400)));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], line("One two three.", false));
        assert!(out[1].interrupted && LINE.starts_with(&out[1].text));
        assert!(s.items.is_empty());
        // Nothing playing: what is held has played.
        let mut s = Spoken::default();
        streamed(&mut s, "item_4", LINE, 1200);
        s.done("item_4", LINE);
        assert_eq!(s.last_lines(None), vec![line(LINE, false)]);
    }

    #[test]
    fn a_truncated_line_keeps_the_heard_part_at_a_word_boundary() {
        let mut s = Spoken::default();
        streamed(&mut s, "item_1", LINE, 1200); // 12 words, 1200 ms
        s.response_done();
        let out = s.truncated("item_1", 400);
        let line = &out[0];
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
        assert_eq!(s.truncated("item_1", 400).len(), 1);
        s.done("item_1", LINE);
        assert!(s.played("item_1").is_empty());
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
}
