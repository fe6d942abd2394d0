//! Where agent audio stands on one media stream, without I/O: the writer feeds it what it
//! sends and the mark echoes it reads, and it answers when to send a mark, what the callee has
//! heard, and when a drain marker resolves.
//!
//! Marks are not sent per frame: one goes out once `MARK_EVERY` bytes of an item were sent
//! since the last, and one when a drain is asked for. Between echoes the heard position is
//! interpolated at the line's real-time rate (8 bytes per ms) and never past the next mark not
//! yet echoed, so a barge-in is cut at least as precisely as with a mark per frame.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::wire::MarkName;

/// At most one mark per this much audio of an item (100 ms of 8 kHz mu-law).
pub const MARK_EVERY: u64 = 800;
/// mu-law at 8 kHz.
const BYTES_PER_MS: u64 = 8;

/// What the writer does with a chunk of agent audio.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The rest of a line the callee cut off: the model sent it before it learnt of the
    /// barge-in, and it must not play.
    Drop,
    /// Send it, followed by this mark if one is due.
    Play(Option<MarkName>),
}

#[derive(Default)]
pub struct Playback {
    epoch: u64,
    item: Option<Arc<str>>,
    /// The item's number on this stream (marks carry it, not the id).
    item_no: u64,
    sent: u64,
    marked: u64,
    /// Marks sent in this epoch and not yet echoed, oldest first.
    in_flight: VecDeque<MarkName>,
    /// The current item's last known playing position, and since when.
    anchor: Option<(u64, Instant)>,
    drains: Vec<oneshot::Sender<bool>>,
    /// The last barge-in's cut, until audio of another item comes: the cut item's late
    /// audio is dropped, and if the call ends before the model confirms the truncate, the
    /// cut is still known.
    cut: Option<(Arc<str>, u64)>,
}

impl Playback {
    pub fn audio(&mut self, item: &Arc<str>, bytes: u64, now: Instant) -> Verdict {
        if self.cut.as_ref().is_some_and(|(c, _)| c == item) {
            return Verdict::Drop;
        }
        self.cut = None;
        if self.item.as_ref() != Some(item) {
            self.item = Some(item.clone());
            self.item_no += 1;
            self.sent = 0;
            self.marked = 0;
            self.anchor = None;
        }
        // Nothing queued at the carrier: this chunk starts playing now.
        if self.in_flight.is_empty() && self.sent == self.marked {
            self.anchor = Some((self.sent, now));
        }
        self.sent += bytes;
        if self.sent - self.marked >= MARK_EVERY {
            Verdict::Play(Some(self.mark()))
        } else {
            Verdict::Play(None)
        }
    }

    fn mark(&mut self) -> MarkName {
        let m = MarkName {
            epoch: self.epoch,
            bytes: self.sent,
            item: self.item_no,
        };
        self.marked = self.sent;
        self.in_flight.push_back(m);
        m
    }

    /// A drain marker: resolves once everything sent so far has played. Answers the mark to
    /// send for audio not yet covered by one.
    pub fn drain(&mut self, tx: oneshot::Sender<bool>) -> Option<MarkName> {
        let mark = (self.item.is_some() && self.sent > self.marked).then(|| self.mark());
        if self.in_flight.is_empty() {
            let _ = tx.send(true);
        } else {
            self.drains.push(tx);
        }
        mark
    }

    pub fn echo(&mut self, name: MarkName, now: Instant) {
        if name.epoch != self.epoch {
            // Flushed by a clear: Twilio echoes every pending mark when it clears.
            return;
        }
        while let Some(front) = self.in_flight.pop_front() {
            if front == name {
                break;
            }
        }
        if name.item == self.item_no {
            self.anchor = Some((name.bytes, now));
        }
        if self.in_flight.is_empty() {
            for d in self.drains.drain(..) {
                let _ = d.send(true);
            }
        }
    }

    /// Bytes of the current item the callee has heard by `now`.
    fn position(&self, now: Instant) -> u64 {
        let Some((at, since)) = self.anchor else {
            return 0;
        };
        let cap = self
            .in_flight
            .iter()
            .find(|m| m.item == self.item_no)
            .map_or(self.sent, |m| m.bytes);
        let elapsed = now.saturating_duration_since(since).as_millis() as u64;
        (at + elapsed * BYTES_PER_MS).min(cap).max(at)
    }

    fn playing(&self, now: Instant) -> bool {
        self.item.is_some() && (!self.in_flight.is_empty() || self.position(now) < self.sent)
    }

    /// The item playing and how many ms of it were heard, or the last cut.
    pub fn heard(&self, now: Instant) -> Option<(String, u64)> {
        if self.playing(now) {
            let item = self.item.as_deref().unwrap_or_default().to_owned();
            Some((item, self.position(now) / BYTES_PER_MS))
        } else {
            self.cut.as_ref().map(|(i, ms)| (i.to_string(), *ms))
        }
    }

    /// The callee started talking: if agent audio is still queued, it is cut here (the
    /// caller sends `clear`) and this answers what was heard of it.
    pub fn clear(&mut self, now: Instant) -> Option<(String, u64)> {
        if !self.playing(now) {
            return None;
        }
        let ms = self.position(now) / BYTES_PER_MS;
        let item = self.item.take().unwrap_or_default();
        self.cut = Some((item.clone(), ms));
        self.epoch += 1;
        self.in_flight.clear();
        self.anchor = None;
        self.sent = 0;
        self.marked = 0;
        for d in self.drains.drain(..) {
            let _ = d.send(false);
        }
        Some((item.to_string(), ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_mark_per_hundred_ms_of_audio_not_per_frame() {
        let (mut p, t, a) = (Playback::default(), Instant::now(), Arc::from("a"));
        let marks: Vec<_> = (0..10)
            .filter_map(|_| match p.audio(&a, 160, t) {
                Verdict::Play(m) => m,
                Verdict::Drop => panic!("dropped"),
            })
            .collect();
        assert_eq!(
            marks.iter().map(|m| m.bytes).collect::<Vec<_>>(),
            [800, 1600]
        );
    }

    #[test]
    fn heard_is_interpolated_between_echoes_and_never_past_the_next_mark() {
        let (mut p, t, a) = (Playback::default(), Instant::now(), Arc::from("a"));
        for _ in 0..20 {
            p.audio(&a, 160, t); // 400 ms sent at once, marks at 100, 200, 300, 400 ms
        }
        assert_eq!(p.heard(t + ms(30)), Some(("a".into(), 30)));
        // Playback is late: the 100 ms mark is not echoed by 150 ms, so heard stops there.
        assert_eq!(p.heard(t + ms(150)), Some(("a".into(), 100)));
        p.echo(
            MarkName {
                epoch: 0,
                bytes: 800,
                item: 1,
            },
            t + ms(160),
        );
        assert_eq!(p.heard(t + ms(200)), Some(("a".into(), 140)));
    }

    #[test]
    fn a_drain_marks_the_tail_and_resolves_when_it_plays() {
        let (mut p, t, a) = (Playback::default(), Instant::now(), Arc::from("a"));
        p.audio(&a, 160, t);
        let (tx, mut rx) = oneshot::channel();
        let tail = p.drain(tx).expect("the unmarked tail gets a mark");
        assert_eq!(tail.bytes, 160);
        assert!(rx.try_recv().is_err(), "not played yet");
        p.echo(tail, t + ms(20));
        assert_eq!(rx.try_recv(), Ok(true));
        // Nothing queued: a drain resolves at once.
        let (tx, mut rx) = oneshot::channel();
        assert_eq!(p.drain(tx), None);
        assert_eq!(rx.try_recv(), Ok(true));
    }

    #[test]
    fn a_clear_cuts_the_item_drops_its_late_audio_but_plays_the_next_item() {
        let (mut p, t) = (Playback::default(), Instant::now());
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        for _ in 0..10 {
            p.audio(&a, 160, t);
        }
        let (tx, mut drained) = oneshot::channel();
        p.drain(tx);
        assert_eq!(p.clear(t + ms(50)), Some(("a".into(), 50)));
        assert_eq!(drained.try_recv(), Ok(false));
        // Echoes of marks the clear flushed are not playback.
        p.echo(
            MarkName {
                epoch: 0,
                bytes: 800,
                item: 1,
            },
            t + ms(60),
        );
        assert_eq!(p.heard(t + ms(60)), Some(("a".into(), 50)), "the cut");
        assert_eq!(p.audio(&a, 160, t + ms(70)), Verdict::Drop);
        assert!(matches!(p.audio(&b, 160, t + ms(80)), Verdict::Play(_)));
        assert_eq!(p.heard(t + ms(90)), Some(("b".into(), 10)));
        // Nothing playing any more: nothing to clear.
        assert_eq!(p.clear(t + ms(500)), None);
    }
}
