//! Per-frame latency through the engine, measured from the outside.
//!
//! The load generator gives every simulated call its own script, so every speech frame the
//! simulator sends is unique. The sending half records each frame's fingerprint and send
//! time; the receiving half looks it up: the difference is the latency the engine (and the
//! loopback sockets) added. A fingerprint seen twice or never sent is a duplicated or foreign
//! frame; one sent and never received is lost. Off unless enabled, so tests pay nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Direction of travel through the engine.
#[derive(Clone, Copy, Debug)]
pub enum Dir {
    /// Callee audio: Twilio half → engine → model half.
    Uplink,
    /// Agent audio: model half → engine → Twilio half.
    Downlink,
}

const SHARDS: usize = 16;

pub struct FrameStats {
    enabled: AtomicBool,
    pending: [Mutex<HashMap<u64, Instant>>; SHARDS],
    hist: [Mutex<Histogram<u64>>; 2],
    sent: [AtomicU64; 2],
    received: [AtomicU64; 2],
    unmatched: [AtomicU64; 2],
}

impl Default for FrameStats {
    fn default() -> Self {
        FrameStats {
            enabled: AtomicBool::new(false),
            pending: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            // 1 µs .. 60 s at 3 significant digits.
            hist: std::array::from_fn(|_| {
                Mutex::new(
                    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid"),
                )
            }),
            sent: Default::default(),
            received: Default::default(),
            unmatched: Default::default(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DirReport {
    pub sent: u64,
    pub received: u64,
    /// Received but never sent, or received twice: duplicated or delivered to the wrong place.
    pub unmatched: u64,
    /// Sent and not (yet) received.
    pub outstanding: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatsReport {
    pub uplink: DirReport,
    pub downlink: DirReport,
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

impl FrameStats {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// A frame left the simulator towards the engine.
    pub fn sent(&self, dir: Dir, frame: &[u8]) {
        if !self.enabled() {
            return;
        }
        let (shard, k) = key(dir, frame);
        self.pending[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k, Instant::now());
        self.sent[dir as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A frame arrived from the engine.
    pub fn received(&self, dir: Dir, frame: &[u8]) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let (shard, k) = key(dir, frame);
        let sent_at = self.pending[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&k);
        self.received[dir as usize].fetch_add(1, Ordering::Relaxed);
        match sent_at {
            Some(t) => {
                let us = now.duration_since(t).as_micros().clamp(1, 60_000_000) as u64;
                let _ = self.hist[dir as usize]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(us);
            }
            None => {
                self.unmatched[dir as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn report(&self) -> StatsReport {
        let dir = |d: usize| {
            let h = self.hist[d].lock().unwrap_or_else(|e| e.into_inner());
            let sent = self.sent[d].load(Ordering::Relaxed);
            let received = self.received[d].load(Ordering::Relaxed);
            let unmatched = self.unmatched[d].load(Ordering::Relaxed);
            DirReport {
                sent,
                received,
                unmatched,
                outstanding: sent.saturating_sub(received - unmatched),
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            }
        };
        StatsReport {
            uplink: dir(0),
            downlink: dir(1),
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
    }
}
