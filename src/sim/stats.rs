//! Per-frame latency through the engine, measured from the outside.
//!
//! The load generator gives every simulated call its own script, so every speech frame the
//! simulator sends is unique. The sending half records each frame's fingerprint and send
//! time; the receiving half looks it up: the difference is the latency the engine (and the
//! loopback sockets) added. A fingerprint seen twice or never sent is a duplicated or foreign
//! frame; one sent and never received is lost. Each end also names the call it is on (a hash
//! of the scenario's name), so a frame that arrives on another call counts as misrouted.
//!
//! Also kept here for the load generator: how late the callee's 20 ms send ticks fire (the
//! generator itself falling behind), and, in echo mode (the floor), each stream's set-up
//! timestamps. Off unless enabled, so tests pay nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Direction of travel through the engine.
#[derive(Clone, Copy, Debug)]
pub enum Dir {
    /// Callee audio: Twilio half → engine → model half. In echo mode (the load generator's
    /// floor), the callee's frames to the echo and back.
    Uplink,
    /// Agent audio: model half → engine → Twilio half.
    Downlink,
}

const SHARDS: usize = 16;

/// Which call a frame belongs to, as both halves of the simulator can name it: a hash of the
/// scenario's name (never 0; 0 means "not known", and is never compared).
pub fn tag_of(scenario_name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scenario_name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

/// Wall-clock time in microseconds since the Unix epoch: comparable across the processes of
/// one machine (the load generator, the simulator, the echo), unlike a monotonic clock.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Set-up timestamps of one call or echo stream, wall clock in µs (see [`unix_us`]). The
/// request time is the load generator's own (absent here for engine calls).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetupTimes {
    /// The number dialed (engine calls) or `echo-<i>` (echo streams).
    pub key: String,
    /// Echo streams: when the simulator began opening the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_us: Option<u64>,
    /// The REST create reached the simulated carrier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_create_us: Option<u64>,
    /// The first TwiML document was fetched from the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twiml_us: Option<u64>,
    /// The first media socket was open and its `start` message sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_start_us: Option<u64>,
    /// The first frame of audio arrived back on the media socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_audio_us: Option<u64>,
}

fn histogram() -> Mutex<Histogram<u64>> {
    // 1 µs .. 60 s at 3 significant digits.
    Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid"))
}

pub struct FrameStats {
    enabled: AtomicBool,
    pending: [Mutex<HashMap<u64, (Instant, u64)>>; SHARDS],
    hist: [Mutex<Histogram<u64>>; 2],
    sent: [AtomicU64; 2],
    received: [AtomicU64; 2],
    unmatched: [AtomicU64; 2],
    misrouted: [AtomicU64; 2],
    /// How late the callee's 20 ms send ticks fired, in µs: the generator falling behind.
    tick_late: Mutex<Histogram<u64>>,
    ticks: AtomicU64,
    /// Echo mode: streams finished, and their set-up timestamps.
    streams_done: AtomicU64,
    echo_setup: Mutex<Vec<SetupTimes>>,
}

impl Default for FrameStats {
    fn default() -> Self {
        FrameStats {
            enabled: AtomicBool::new(false),
            pending: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hist: std::array::from_fn(|_| histogram()),
            sent: Default::default(),
            received: Default::default(),
            unmatched: Default::default(),
            misrouted: Default::default(),
            tick_late: histogram(),
            ticks: AtomicU64::new(0),
            streams_done: AtomicU64::new(0),
            echo_setup: Mutex::new(Vec::new()),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DirReport {
    pub sent: u64,
    pub received: u64,
    /// Received but never sent, or received twice: duplicated or delivered to the wrong place.
    pub unmatched: u64,
    /// Received by a call other than the one that sent it (both ends named their call).
    #[serde(default)]
    pub misrouted: u64,
    /// Sent and not (yet) received.
    pub outstanding: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// The generator's own timeliness: how late its 20 ms send ticks fired.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TickReport {
    pub ticks: u64,
    pub late_p50_us: u64,
    pub late_p99_us: u64,
    pub late_max_us: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatsReport {
    pub uplink: DirReport,
    pub downlink: DirReport,
    #[serde(default)]
    pub send_ticks: TickReport,
    /// Echo mode: streams that have finished (sent all their frames and closed).
    #[serde(default)]
    pub streams_done: u64,
}

fn key(dir: Dir, frame: &[u8]) -> (usize, u64) {
    // FNV-1a: frames are random bytes already, a cheap mix is enough.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ dir as u64;
    for b in frame {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((h as usize) % SHARDS, h ^ ((dir as u64) << 63))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FrameStats {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// A frame left the simulator towards the engine.
    pub fn sent(&self, dir: Dir, frame: &[u8]) {
        self.sent_tagged(dir, frame, 0);
    }

    /// A frame left the simulator for the call `tag` (see [`tag_of`]; 0 = unknown).
    pub fn sent_tagged(&self, dir: Dir, frame: &[u8], tag: u64) {
        if !self.enabled() {
            return;
        }
        let (shard, k) = key(dir, frame);
        lock(&self.pending[shard]).insert(k, (Instant::now(), tag));
        self.sent[dir as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A frame arrived from the engine.
    pub fn received(&self, dir: Dir, frame: &[u8]) {
        self.received_tagged(dir, frame, 0);
    }

    /// A frame arrived from the engine on the call `tag` (0 = unknown).
    pub fn received_tagged(&self, dir: Dir, frame: &[u8], tag: u64) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let (shard, k) = key(dir, frame);
        let sent_at = lock(&self.pending[shard]).remove(&k);
        self.received[dir as usize].fetch_add(1, Ordering::Relaxed);
        match sent_at {
            Some((t, from)) => {
                if from != 0 && tag != 0 && from != tag {
                    self.misrouted[dir as usize].fetch_add(1, Ordering::Relaxed);
                }
                let us = now.duration_since(t).as_micros().clamp(1, 60_000_000) as u64;
                let _ = lock(&self.hist[dir as usize]).record(us);
            }
            None => {
                self.unmatched[dir as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A 20 ms send tick fired `late` after it was due.
    pub fn tick(&self, late: Duration) {
        if !self.enabled() {
            return;
        }
        let us = late.as_micros().clamp(1, 60_000_000) as u64;
        let _ = lock(&self.tick_late).record(us);
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }

    /// Echo mode: one stream's set-up timestamps, once it has ended.
    pub fn echo_stream_done(&self, times: SetupTimes) {
        lock(&self.echo_setup).push(times);
        self.streams_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Echo mode: the set-up timestamps of the streams that have ended.
    pub fn echo_setup(&self) -> Vec<SetupTimes> {
        lock(&self.echo_setup).clone()
    }

    pub fn report(&self) -> StatsReport {
        let dir = |d: usize| {
            let h = lock(&self.hist[d]);
            let sent = self.sent[d].load(Ordering::Relaxed);
            let received = self.received[d].load(Ordering::Relaxed);
            let unmatched = self.unmatched[d].load(Ordering::Relaxed);
            DirReport {
                sent,
                received,
                unmatched,
                misrouted: self.misrouted[d].load(Ordering::Relaxed),
                outstanding: sent.saturating_sub(received - unmatched),
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            }
        };
        let t = lock(&self.tick_late);
        StatsReport {
            uplink: dir(0),
            downlink: dir(1),
            send_ticks: TickReport {
                ticks: self.ticks.load(Ordering::Relaxed),
                late_p50_us: t.value_at_quantile(0.5),
                late_p99_us: t.value_at_quantile(0.99),
                late_max_us: t.max(),
            },
            streams_done: self.streams_done.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_lost_and_foreign_frames() {
        let s = FrameStats::default();
        s.sent(Dir::Uplink, b"frame-a");
        assert_eq!(s.report().uplink.sent, 0, "disabled by default");
        s.enable();
        s.sent(Dir::Uplink, b"frame-a");
        s.sent(Dir::Uplink, b"frame-b");
        s.sent(Dir::Downlink, b"frame-a");
        s.received(Dir::Uplink, b"frame-a");
        s.received(Dir::Uplink, b"frame-a"); // duplicate
        s.received(Dir::Uplink, b"frame-x"); // never sent
        let r = s.report();
        assert_eq!(
            (r.uplink.sent, r.uplink.received, r.uplink.unmatched),
            (2, 3, 2)
        );
        assert_eq!(r.uplink.outstanding, 1, "frame-b never arrived");
        assert_eq!(r.downlink.outstanding, 1);
        assert!(r.uplink.max_us >= 1);
        assert_eq!(r.uplink.misrouted, 0, "untagged frames are never misrouted");
    }

    #[test]
    fn a_frame_received_by_another_call_is_misrouted() {
        let s = FrameStats::default();
        s.enable();
        let (a, b) = (tag_of("bench-1"), tag_of("bench-2"));
        assert_ne!(a, b);
        s.sent_tagged(Dir::Downlink, b"frame-1", a);
        s.sent_tagged(Dir::Downlink, b"frame-2", a);
        s.received_tagged(Dir::Downlink, b"frame-1", a);
        s.received_tagged(Dir::Downlink, b"frame-2", b);
        let r = s.report().downlink;
        assert_eq!(
            (r.received, r.unmatched, r.misrouted, r.outstanding),
            (2, 0, 1, 0)
        );
    }
}
